"""Checkpoints: atomic writes, RNG state capture, and loading with clear errors.

A checkpoint is one ``torch.save`` file (``RUN_DIR/last.pt``, ``RUN_DIR/best.pt``) holding a dict:

======================  ==============================================================
``format``              ``"asgl-checkpoint-v1"``
``model``               full ``state_dict`` of the unwrapped model (BN running stats included)
``optimizer``           weight optimizer ``state_dict`` (full, torch's positional parameter ids)
``neuron_optimizer``    neuron-parameter Adam ``state_dict`` (same form) or ``None``
``lr_scheduler``        LR scheduler ``state_dict``
``noise``               :class:`asgl.NoiseSchedule` ``state_dict`` (``p``, epochs done)
``rng``                 one entry per rank: python / numpy / torch CPU / CUDA generator states
``epoch``               the epoch to run next (0-based)
``step_in_epoch``       micro-batches of that epoch already consumed (0 at an epoch boundary)
``global_step``         optimizer steps taken so far
``partial``             train sums of the interrupted epoch (loss_sum, correct, seen) or ``None``
``best_metric``         best test accuracy so far (``-1`` before the first evaluation)
``best_epoch``          the (1-based) epoch that reached it, or ``None``
``scaler``              fp16 loss-scaler ``state_dict`` (scale, growth tracker) or ``None``
``world_size``          number of ranks that wrote it
``config``              the resolved config as a nested dict
======================  ==============================================================

Everything is tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: no pickled code runs when a checkpoint is read.

Model and optimizer states go through ``torch.distributed.checkpoint.state_dict`` (see
:func:`model_state`, :func:`optimizer_state` and their inverses), one code path for a single
process, DDP, FSDP1 and FSDP2: under FSDP the sharded parameters and optimizer states are gathered
into full tensors on rank 0, so the file is the same as a single-process run's (the model's keys
are the unwrapped model's ``state_dict`` keys, the optimizers' are ``Optimizer.state_dict()``) and
it loads on any world size, each rank taking its own shard.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "asgl-checkpoint-v1"
REQUIRED = ("model", "optimizer", "neuron_optimizer", "lr_scheduler", "noise", "rng", "epoch",
            "step_in_epoch", "global_step", "best_metric", "world_size", "config")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit the run."""


def _dcp():
    """``torch.distributed.checkpoint.state_dict``, imported on first use (it pulls in FSDP: about
    half a second, which a config error or ``--help`` should not wait for)."""
    from torch.distributed.checkpoint import state_dict

    return state_dict


def _save_options(model: torch.nn.Module):
    """Full (unsharded) tensors. On an accelerator they are copied to the host and, under FSDP,
    only rank 0 keeps them (the others get empty dicts): all the writer needs, and it spares the
    other ranks a host copy of the model. On a CPU every rank gathers them where they are: there is
    nothing to offload, and FSDP1's offload path frees the very CPU storage it would return."""
    on_accelerator = any(p.device.type not in ("cpu", "meta") for p in model.parameters())
    return _dcp().StateDictOptions(full_state_dict=True, cpu_offload=on_accelerator)


def _load_options(model: torch.nn.Module, optimizer=None):
    """Every rank reads the whole file; a sharded (FSDP) model cuts its own shard out of the full
    tensors (no broadcast), an unsharded one loads them as they are (full == local). With
    ``optimizer``, "sharded" is about its parameters: under FSDP2 an optimizer over parameters kept
    out of sharding (the neurons') loads locally too (torch's full-state path also trips over an
    optimizer holding only 0-dim parameters, like the neuron optimizer with per-layer α).
    strict: a key missing on either side is an error."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    params = (model.parameters() if optimizer is None
              else (p for group in _raw(optimizer).param_groups for p in group["params"]))
    sharded = (any(isinstance(m, FullyShardedDataParallel) for m in model.modules())
               or any(isinstance(p, DTensor) for p in params))
    return _dcp().StateDictOptions(full_state_dict=sharded, strict=True)


def _raw(optimizer):
    """The ``torch.optim.Optimizer`` inside an Accelerate ``AcceleratedOptimizer`` (or itself)."""
    return getattr(optimizer, "optimizer", optimizer)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind an FSDP2 shard (a ``DTensor``: collective, every rank must call it),
    or ``t`` itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full model ``state_dict`` on the CPU, keys without wrapper prefixes (``module.``, FSDP's).

    ``model``: the prepared model (plain, DDP, FSDP1 or FSDP2; not a ``torch.compile`` wrapper).
    Collective under FSDP: every rank must call it; the result is complete on rank 0 (on every rank
    without FSDP or on a CPU). Without FSDP on a CPU the tensors may share memory with the live
    parameters: serialize them before the next optimizer step.
    """
    return _dcp().get_model_state_dict(model, options=_save_options(model))


def _param_fqns(model: torch.nn.Module, optimizer) -> list[str]:
    """FQNs of the optimizer's parameters in its positional order (groups, then params)."""
    # A sharded (no gather, no copy) optimizer state dict names the parameters by FQN, in the same
    # order as the groups hold them; that order defines torch's positional ids.
    sharded = _dcp().StateDictOptions(full_state_dict=False)
    groups = _dcp().get_optimizer_state_dict(model, _raw(optimizer), options=sharded)["param_groups"]
    return [fqn for group in groups for fqn in group["params"]]


def optimizer_state(model: torch.nn.Module, optimizer) -> dict[str, Any]:
    """Full ``optimizer.state_dict()`` as for the unwrapped model: ``{"state": {id: {...}},
    "param_groups": [{..., "params": [id, ...]}]}`` with ids ``0, 1, …`` in parameter order.

    Under FSDP the sharded states (momentum buffers, Adam moments) are gathered into full tensors
    (on an accelerator rank 0 only, the other ranks get empty ``state``). Collective: every rank
    must call it. Like :func:`model_state`, may share memory with the live state on a CPU.
    """
    full = _dcp().get_optimizer_state_dict(model, _raw(optimizer), options=_save_options(model))
    index: dict[str, int] = {}
    groups = []
    for group in full.get("param_groups", []):
        groups.append({**group, "params": [index.setdefault(fqn, len(index)) for fqn in group["params"]]})
    return {"state": {index[fqn]: s for fqn, s in full.get("state", {}).items()}, "param_groups": groups}


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`model_state`: every rank passes the full state and keeps its own shard."""
    _dcp().set_model_state_dict(model, state, options=_load_options(model))


def load_optimizer_state(model: torch.nn.Module, optimizer, state: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_state` (every rank passes the full state; under FSDP each keeps
    its shard). Raises ``ValueError`` when the state's parameters do not match the optimizer's."""
    fqns = _param_fqns(model, optimizer)
    saved = [len(group["params"]) for group in state["param_groups"]]
    have = [len(group["params"]) for group in _raw(optimizer).param_groups]
    if saved != have:
        raise ValueError(f"optimizer parameter groups hold {saved} parameters in the checkpoint, {have} here")
    ids = [i for group in state["param_groups"] for i in group["params"]]
    name = dict(zip(ids, fqns))
    by_fqn = {"state": {name[i]: s for i, s in state["state"].items()},
              "param_groups": [{**group, "params": [name[i] for i in group["params"]]}
                               for group in state["param_groups"]]}
    _dcp().set_optimizer_state_dict(model, _raw(optimizer), by_fqn, options=_load_options(model, optimizer))


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, and every CUDA device if initialised)."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": [version, list(mt), gauss],
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    npst = state["numpy"]
    np.random.set_state({"bit_generator": npst["bit_generator"],
                         "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
                         "has_gauss": npst["has_gauss"], "gauss": npst["gauss"]})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(data: bytes, path: str | Path) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the whole new one.

    Temp file in the same folder (same file system, so the rename is atomic) → fsync → ``os.replace``
    → fsync of the folder (so the rename itself survives a crash).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # as open() would create it (mkstemp makes it private)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def serialize(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    return buf.getvalue()


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (on the CPU); raise :class:`CheckpointError` with the reason if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong magic, foreign pickle: all mean "unreadable"
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an {FORMAT} file")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return ckpt
