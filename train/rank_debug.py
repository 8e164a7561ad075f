"""``train.debug_ranks=true``: per-rank records for checking sharding, DDP/FSDP synchronisation and
per-rank noise, in ``RUN_DIR/ranks/rank{r}.jsonl`` (one JSON line per record; epochs 1-based):

* ``{"epoch", "start_batch", "rank", "world", "indices"}`` when an epoch starts: the sample indices
  of each of this rank's batches;
* ``{"eval_epoch", "rank", "evaluated"}`` after an evaluation: how many test samples the rank scored;
* ``{"epoch_done", "rank", "params_sha256", "noise_probe_sha256"}`` after an epoch: a hash of the
  full parameters, and a hash of the first LIF's train-mode output on a fixed input drawn from the
  rank's RNG streams (forked, so the run is unchanged): with p > 0 it differs between ranks exactly
  when their noise masks do.

Every rank computes its record (the hashes are collective under FSDP); the main process gathers
them and writes every rank's file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path

import torch

from asgl.bn_lif import neuron_output_module
from asgl.train import run_folder
from asgl.train.checkpoint import full_tensor


def params_sha256(prepared: torch.nn.Module, core: torch.nn.Module) -> str:
    """sha256 over the names and full values of every parameter of ``core``, the model inside
    ``prepared`` (Accelerate's wrapper; collective under FSDP: every rank must call it)."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    if isinstance(prepared, FSDPModule):  # back to the sharded parameters (an eval pass leaves the
        prepared.reshard()                # root's unsharded ones registered)
    gather = (FullyShardedDataParallel.summon_full_params(prepared, writeback=False)
              if isinstance(prepared, FullyShardedDataParallel) else contextlib.nullcontext())
    digest = hashlib.sha256()
    with gather:
        for name, param in core.named_parameters():
            # A copy: numpy() pins a CPU tensor's storage, and FSDP must free its unsharded params.
            digest.update(name.encode() + full_tensor(param.detach()).to("cpu", copy=True).numpy().tobytes())
    return digest.hexdigest()


class RankDebug:
    """The records of the module docstring for the run of ``trainer`` (an ``asgl.train.run.Trainer``)."""

    def __init__(self, trainer, run_dir: Path) -> None:
        self.t, self.folder = trainer, run_dir / "ranks"
        acc = trainer.accelerator
        self.rank, self.world = acc.process_index, acc.num_processes
        if acc.is_main_process:
            self.folder.mkdir(exist_ok=True)
            run_folder.record(self.folder)
        self.probe_shape: list[torch.Size] = []
        lifs = trainer.lifs
        if lifs:  # the input shape of the first LIF (its fused unit's, which is the same), for the noise probe
            neuron_output_module(trainer.core, lifs[0][1]).register_forward_pre_hook(self._remember_shape)

    def _remember_shape(self, module, args) -> None:
        if not self.probe_shape:
            self.probe_shape.append(args[0].shape)

    def _write(self, record: dict) -> None:
        """Gather every rank's ``record`` (collective) and append each to its rank's file (main)."""
        from accelerate.utils import gather_object

        records = gather_object([record])
        if self.t.accelerator.is_main_process:
            for r, rec in enumerate(records):
                with open(self.folder / f"rank{r}.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")

    def epoch_start(self, epoch: int, start_batch: int, loader) -> None:
        """``epoch`` 0-based (written 1-based)."""
        if hasattr(loader, "batch_indices"):
            indices = [b.tolist() for b in loader.batch_indices()[start_batch:]]
            self._write({"epoch": epoch + 1, "start_batch": start_batch, "rank": self.rank, "world": self.world,
                         "indices": indices})

    def evaluated(self, epoch: int, samples: int) -> None:
        """``epoch`` 1-based; ``samples``: the test samples this rank scored."""
        self._write({"eval_epoch": epoch, "rank": self.rank, "evaluated": samples})

    def epoch_done(self, epoch: int) -> None:
        """``epoch`` 1-based: after DDP's all-reduce every rank must hold the same parameters."""
        self._write({"epoch_done": epoch, "rank": self.rank, "params_sha256": params_sha256(self.t.eval_model,
                                                                                             self.t.core),
                     "noise_probe_sha256": self.noise_probe_sha256()})

    def noise_probe_sha256(self) -> str | None:
        """Hash of the first LIF's train-mode output on a fixed input, drawn from this rank's RNG
        streams (forked, so the run is unchanged)."""
        from torch.distributed.fsdp import FSDPModule

        if not self.probe_shape:
            return None
        t = self.t
        device = t.accelerator.device
        shape = (self.probe_shape[0][0], 1, *self.probe_shape[0][2:])  # [T, 1, ...]: one sample is enough
        lif = t.lifs[0][1]
        was_training = lif.training
        fork = [device] if device.type == "cuda" else []
        sharded = isinstance(t.eval_model, FSDPModule)  # a recurrent layer's weights are sharded there
        with torch.random.fork_rng(devices=fork), torch.no_grad():
            x_seq = torch.linspace(0.0, 2.0 * float(t.cfg.model.thresh), math.prod(shape),
                                   device=device).reshape(shape)
            lif.train()
            if sharded:
                t.eval_model.unshard()  # collective: every rank probes
            y_seq = lif(x_seq)
            if sharded:
                t.eval_model.reshard()
        lif.train(was_training)
        return hashlib.sha256(y_seq.float().cpu().numpy().tobytes()).hexdigest()
