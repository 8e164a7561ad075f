"""Train an ASGL spiking network.

    accelerate launch train/run.py --config configs/quickstart.yaml [--section.key=value ...]
    python train/run.py --config configs/quickstart.yaml --optim.epochs=5
    python train/run.py --resume runs/quickstart [--train.stop_after_epochs=...]
    python train/run.py --help            (every key, its default and what it means)

Reads top to bottom: ``parse_command_line`` → ``make_accelerator`` → seeds → ``load_data`` →
``build`` (model, optimizers, LR and noise schedules, Accelerate's prepare, torch.compile) →
``restore`` (on --resume) → epochs of ``train_epoch`` / ``evaluate`` / log / ``save_checkpoint``.
``python -m asgl.train.eval`` scores a checkpoint with the same ``evaluate``.

Run folder ``RUN_DIR = train.out_dir / train.run_name`` (run_name defaults to the config's name):

    config.yaml        the resolved config (rewritten, with the overrides, on --resume)
    metrics.jsonl      one JSON row per epoch (appended; on --resume rows past the checkpoint are dropped)
    last.pt, best.pt   checkpoints (see train/checkpoint.py), written atomically
    logs/              the local trackers' files (train.trackers, e.g. [tensorboard]; wandb, mlflow, ...
                       follow their own settings)
    ranks/rankR.jsonl  per rank (train.debug_ranks=true; for checking sharding, DDP synchronisation
                       and per-rank noise): the sample indices of each epoch, the number of test
                       samples it evaluated, and after each epoch a hash of the parameters and a
                       hash of the first LIF's train-mode output on a fixed input (its noise masks)

stdout gets one line per epoch: ``epoch 3/10 | step 135 | train_loss ... | test_acc ... | p ... |
lr ... | samples/s ...`` (accuracies in percent) and, at the end, ``done: best test_acc 98.61
(epoch 6) | run folder runs/quickstart | 23.5 s``. ``lr`` is the mean LR of the epoch's optimizer
steps (the schedule moves every step); ``peak_mem_mb`` is the epoch's peak allocated CUDA memory,
or on a CPU the process's peak resident set size so far. The rich progress bar goes to stderr on
the main process when stderr is a terminal; otherwise (SLURM, nohup, a pipe) stdout gets one line
per log point: ``step 50/4500 | epoch 1/10 batch 50/450 | loss ... | acc ... | lr ... | samples/s
... | eta 41m05s`` (the ETA at this invocation's pace, evaluations included).

Trackers (``train.trackers``: any of Accelerate's ``log_with`` names): the resolved config goes to
``init_trackers``; at every log point the running ``train/loss``, ``train/acc``, ``lr``, ``p`` and
each LIF layer's ``width/<layer>``; at each epoch's end the epoch row (test accuracy, top-5, per-layer
width and firing rate, samples/s, ...). The step axis is the optimizer step. A tracker whose package
is missing stops the run before any work.

Resuming: ``--resume RUN_DIR`` takes the config ``RUN_DIR/last.pt`` was trained with (the one
config.yaml shows, unless a resume with other overrides failed before saving), applies the
overrides given, restores model, both optimizers, LR and noise schedules, the RNG states of every
rank and the data position (epoch and batch), and continues in the same folder: the continuation is bit-identical to an
uninterrupted run (same world size, device type and thread count; on another world size the
global batches and schedules carry on, with fresh data shards and noise streams, and the trainer
says so). Overrides given with --resume replace the saved values (a new ``optim.lr`` applies
from the current schedule position on); ``train.max_steps``, ``train.stop_after_epochs`` and
``train.overwrite`` belong to one invocation and are not carried over.
``train.stop_after_epochs=N`` ends a run after N epochs with the schedules still spanning
``optim.epochs`` (for time-limited jobs); ``train.max_steps`` stops after that many optimizer
steps, mid-epoch if need be.

Accelerate: mixed precision comes from the config (``train.mixed_precision``), not the launcher
(a launcher's ``--mixed_precision`` that disagrees gets a warning, then the config's is used);
fp16 needs a GPU (on a CPU it is refused: Accelerate would silently run fp32), and its one loss
scaler serves both optimizers with one ``update()`` per step (see ``optimizer_step``); DDP/FSDP
and the process count come from ``accelerate launch``. Gradient accumulation is done here
(``no_sync`` on the micro-batches, the loss divided by the group size, the last group of an epoch
may be shorter) so its position is part of the resumable state. Host syncs happen only at log
points (every ``train.log_every`` optimizer steps and at epoch end); a non-finite loss is
detected there. With ``train.compile=default`` the training forward and backward are compiled
(``torch.compile``; the fused neurons are custom ops it traces), with ``reduce-overhead`` also
captured as CUDA graphs (on a GPU); eval runs eager.
``train.channels_last`` (on by default for image networks on CUDA) keeps the weights and the input
batches in NHWC memory; ``optim.clip_grad_norm`` clips the global gradient norm of all parameters
(after the fp16 unscale); ``loss.label_smoothing`` smooths the targets of either loss (test_loss is
reported without it).

FSDP (``accelerate launch --use_fsdp [--fsdp_version 2]``): the weights are sharded; the neurons'
learnable decays, widths and thresholds (per layer, often 0-dim) stay whole on every rank (FSDP1:
the whole neuron modules, a recurrent layer's weights included), and their gradients are averaged
here before each optimizer step, as DDP would (see ``keep_neurons_whole``). Mixed precision is autocast, as
under DDP: FSDP keeps, gathers and reduces fp32. FSDP1 and FSDP2 train the same parameters as DDP,
bit for bit on 2 CPU ranks (fp32 and bf16). Before evaluating, rank 0's buffers (BN running
statistics) are broadcast, as DDP does, so every rank scores the model the checkpoint holds.
Checkpoints hold full (gathered) model and optimizer states whatever the wrapper, so a ``last.pt``
written under FSDP resumes under DDP or on one process and vice versa (bit-identical on the same
world size). Accelerate enables FSDP on accelerators only: on a CPU it falls back to DDP, and the
trainer says so.

Stopping: the first SIGINT/SIGTERM finishes the current optimizer step (with several ranks: up to
the next log point, where the ranks agree), writes ``last.pt`` with the position in the epoch, and
exits. A second signal aborts at once.

Exit codes: 0 done (or stopped by train.max_steps / train.stop_after_epochs, ``last.pt`` written);
1 non-finite loss (the last good checkpoint is kept); 2 bad command line, config, data, checkpoint or
run folder (nothing written); 130 / 143 stopped by SIGINT / SIGTERM after writing ``last.pt``.
These are the trainer's own (``python train/run.py``); ``accelerate launch`` reports any failure
of its processes as exit code 1, with a traceback of its own after the trainer's ``error:`` line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import resource
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from asgl.train import checkpoint as ckpt_io
from asgl.train.config import (
    ConfigError, RunConfig, build_config, describe, flatten, load_yaml, parse_overrides, take_flags, to_dict,
    to_yaml,
)
from asgl.train.data import DataNotFoundError

EXIT_OK, EXIT_NONFINITE, EXIT_USAGE = 0, 1, 2
ARTIFACTS = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "logs", "ranks", "plots")
INVOCATION_KEYS = ("train.max_steps", "train.stop_after_epochs", "train.overwrite")


class UsageError(RuntimeError):
    """A problem with what the user asked for (run folder, resume target); exit code 2."""


def _is_main_launch_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _fail(msg: str, code: int) -> int:
    if _is_main_launch_process():
        print(f"error: {msg}", file=sys.stderr, flush=True)
    return code


def _help() -> str:
    lines = [__doc__.strip(), "", "Config keys (--section.key=value; default, then what it means):"]
    cfg = RunConfig()
    for key, text in describe().items():
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        lines.append(f"  --{key}={obj!r}" + (f"\n      {text}" if text else ""))
    return "\n".join(lines)


def split_argv(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    """``(config_path, resume_dir, override_args)`` from the command line."""
    values, rest = take_flags(argv, ("--config", "--resume"))
    return values.get("--config"), values.get("--resume"), rest


def check_run_dir(run_dir: Path) -> None:
    """Raise :class:`UsageError` unless ``run_dir`` is a folder, or can be made as one, that we
    may write into (checked on every rank before anything is written)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"run folder {run_dir} exists and is not a folder (train.out_dir / train.run_name)")
    base = run_dir
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise UsageError(f"run folder {run_dir}: {base} is not a folder (train.out_dir)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"run folder {run_dir}: {base} is not writable (train.out_dir)")


def lr_lambda(cfg: RunConfig, steps_per_epoch: int):
    """Factor on the base LR after ``step`` optimizer steps: linear warmup, then (cyclic) cosine to 0."""
    total = cfg.optim.epochs * steps_per_epoch
    warm = round(cfg.optim.warmup_epochs * steps_per_epoch)
    cycle = max(1, cfg.optim.cycle_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.optim.schedule == "none":
            return 1.0
        if cfg.optim.schedule == "cosine":
            progress = min(1.0, (step - warm) / max(1, total - warm))
        else:
            progress = ((step - warm) % cycle) / cycle
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_model(cfg: RunConfig, num_classes: int, in_channels: int) -> torch.nn.Module:
    """``asgl.create_model`` with the config's network and neuron settings."""
    import asgl  # noqa: PLC0415

    m = cfg.model
    neuron_kwargs = dict(surrogate=m.surrogate, width=m.width, learn_width=m.learn_width,
                         width_granularity=m.width_granularity, decay=m.decay, learn_decay=m.learn_decay,
                         thresh=m.thresh, learn_thresh=m.learn_thresh, reset=m.reset, p=m.p, min_slope=m.min_slope,
                         backend=m.backend)
    model = asgl.create_model(m.name, num_classes=num_classes, T=m.T, in_channels=in_channels, **neuron_kwargs)
    return asgl.layers.set_bn_statistics_(model, m.bn_statistics)


def optimizer_step(optimizers: list, scaler) -> None:
    """One step of every optimizer (the weights', then the neurons'), then clear their gradients.

    Without a loss scaler (fp32, bf16) each optimizer simply steps. With fp16 the gradients hold
    ``S · ∂L/∂w`` for the scaler's scale ``S``; then, following the multi-optimizer recipe of
    ``torch.amp.GradScaler``, every optimizer is unscaled with the same ``S``, checked for inf/NaN
    and stepped (or skipped) on its own by ``scaler.step``, and ``scaler.update()`` runs once for the
    whole step: ``S`` is halved once on an overflow in any of them and grows once per
    ``growth_interval`` clean steps. Stepping Accelerate's wrapped optimizers instead would call
    ``update()`` after each one, so the neuron optimizer would unscale with ``S/2`` after an
    overflow in the weights (doubling its gradients) and the growth counter would run twice as fast.

    ``optimizers``: Accelerate ``AcceleratedOptimizer``s (their ``.optimizer`` is stepped, bypassing
    the wrapper's own scaler handling) or plain ``torch.optim.Optimizer``s.
    """
    if scaler is None:
        for opt in optimizers:
            opt.step()
    else:
        for opt in optimizers:
            scaler.step(getattr(opt, "optimizer", opt))
        scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)


def all_reduce_mean_(params: list[torch.nn.Parameter], world: int) -> None:
    """Average the gradients of ``params`` over all ranks, in place, with one all-reduce (what DDP
    does for every parameter; FSDP leaves the parameters it does not shard to us). A parameter
    without a gradient on some rank counts as zero there, so every rank joins the same collective."""
    if world == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(p).clone()
        offset += g.numel()


def keep_neurons_whole(accelerator, model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Set up Accelerate's FSDP plugin (before ``prepare``) so the neurons stay out of sharding, and
    return the parameters every rank will hold whole (their gradients: see ``all_reduce_mean_``).

    The neurons' learnable decays, widths and thresholds are tiny and often 0-dim, which torch's
    FSDP cannot shard. FSDP2 ignores exactly those parameters: everything else, the recurrent
    layer's weights included, is sharded, so each optimizer holds only sharded (DTensor) or only
    whole tensors, as the multi-tensor optimizers and the fp16 scaler need. FSDP1 ignores the
    neuron modules whole.

    Mixed precision under FSDP is autocast, as under DDP (see ``autocast_fsdp2``): FSDP keeps and
    gathers fp32 parameters and reduces fp32 gradients. FSDP's own 16-bit parameter policy would
    also put BatchNorm's weights in 16 bits next to fp32 running statistics (FSDP2; an error on a
    CPU) or its running statistics in 16 bits (Accelerate's FSDP1 policy).
    """
    import asgl  # noqa: PLC0415

    plugin = accelerator.state.fsdp_plugin
    if accelerator.is_fsdp2:
        kept = asgl.neuron_parameters(model)
        # Accelerate takes modules and ignores their parameters: a container of just these.
        plugin.ignored_modules = [torch.nn.ParameterList(kept)] if kept else None
    else:
        neurons = asgl.neurons(model)
        plugin.ignored_modules = neurons or None
        kept = [p for mod in neurons for p in mod.parameters() if p.requires_grad]
    plugin.mixed_precision_policy = None
    # Every rank built the same initial weights from the seed: nothing to load on rank 0 and
    # broadcast. (That path, on by default in `accelerate launch`, also re-creates the parameters on
    # the meta device, which would lose track of the ignored ones.)
    plugin.cpu_ram_efficient_loading = False
    return kept


def autocast_fsdp2(accelerator, model: torch.nn.Module, mixed_precision: str) -> None:
    """Accelerate's ``prepare`` runs a DDP or FSDP1 model's forward under autocast with fp32
    outputs, but not an FSDP2 model's: do the same for it (its hooks stay around the forward)."""
    from accelerate.utils import convert_outputs_to_fp32  # noqa: PLC0415

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    if low is not None:
        model.forward = convert_outputs_to_fp32(torch.autocast(accelerator.device.type, dtype=low)(model.forward))


def mean_epoch_lr(scheduler: torch.optim.lr_scheduler.LambdaLR, first_step: int, steps: int) -> float:
    """Mean LR of the optimizer steps ``first_step … first_step + steps - 1`` (step ``s`` trains with
    ``base_lr · λ(s)``): what the ``lr`` column of an epoch reports, independent of where a resume cut it."""
    base, factor = scheduler.base_lrs[0], scheduler.lr_lambdas[0]
    return base * sum(factor(s) for s in range(first_step, first_step + steps)) / max(1, steps)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: max allocated on ``device`` since the last ``torch.cuda.reset_peak_memory_stats`` (the
    trainer resets it at every epoch start, so this is the epoch's peak); CPU: peak resident set size
    of this process over its whole life (the OS offers no reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


TRACKER_PACKAGES = {  # Accelerate's log_with names -> the import names that provide them
    "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "aim": ("aim",), "mlflow": ("mlflow",),
    "comet_ml": ("comet_ml",), "clearml": ("clearml",), "dvclive": ("dvclive",), "swanlab": ("swanlab",),
    "trackio": ("trackio",),
}


def check_trackers(trackers: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` for a tracker whose package is not installed (before any work)."""
    import importlib.util  # noqa: PLC0415

    for name in trackers:
        modules = TRACKER_PACKAGES[name]
        if not any(importlib.util.find_spec(mod) is not None for mod in modules):
            raise ConfigError(f"train.trackers: {name} needs the {modules[0]} package (pip install {modules[0]}"
                              + (f", or {modules[1]}" if len(modules) > 1 else "") + ")")


def parse_command_line(argv: list[str]) -> tuple[RunConfig, Path, dict | None]:
    """``(config, run folder, checkpoint to resume or None)``; raises ConfigError / UsageError /
    CheckpointError before anything is written."""
    config_path, resume_dir, rest = split_argv(argv)
    overrides = parse_overrides(rest)
    if resume_dir is not None:
        if config_path is not None:
            raise ConfigError("--resume takes the config from RUN_DIR/config.yaml; drop --config "
                              "(use --section.key=value overrides instead)")
        run_dir = Path(resume_dir)
        if not (run_dir / "config.yaml").is_file():
            raise UsageError(f"--resume {run_dir}: no config.yaml there (not a run folder?)")
        resume = ckpt_io.load(run_dir / "last.pt")
        # The config the checkpoint was trained with (config.yaml may hold the overrides of a
        # resume that failed before saving). Stop conditions and overwrite belong to one
        # invocation, not to the run.
        saved = {k: v for k, v in saved_config(resume.get("config") or load_yaml(run_dir / "config.yaml")).items()
                 if k not in INVOCATION_KEYS}
        cfg = build_config(None, overrides, base=saved)
        done_epochs = int(resume["epoch"])
        if cfg.train.stop_after_epochs is not None and cfg.train.stop_after_epochs <= done_epochs:
            raise UsageError(f"train.stop_after_epochs={cfg.train.stop_after_epochs}: {run_dir} has already "
                             f"finished epoch {done_epochs}")
        if resume["world_size"] != int(os.environ.get("WORLD_SIZE", "1")) and _is_main_launch_process():
            print(f"warning: {run_dir}/last.pt was written by {resume['world_size']} ranks; continuing with "
                  f"{os.environ.get('WORLD_SIZE', '1')}: not bit-identical to an uninterrupted run",
                  file=sys.stderr)
    else:
        if config_path is None and not overrides:
            raise ConfigError("give --config X.yaml (and/or --section.key=value overrides), or --resume RUN_DIR")
        cfg = build_config(config_path, overrides)
        cfg.train.run_name = cfg.train.run_name or (Path(config_path).stem if config_path else "run")
        run_dir = Path(cfg.train.out_dir) / cfg.train.run_name
        check_run_dir(run_dir)
        existing = [p.name for p in run_dir.iterdir()] if run_dir.is_dir() else []
        if existing and not cfg.train.overwrite:
            raise UsageError(f"run folder {run_dir} exists and is not empty; resume it with --resume {run_dir}, "
                             "pick another --train.run_name, or pass --train.overwrite=true")
        resume = None
    check_trackers(cfg.train.trackers)
    return cfg, run_dir, resume


def saved_config(tree: dict) -> dict:
    """The flat config of a checkpoint or config.yaml, with keys of older versions translated
    (``train.tensorboard: true`` is ``train.trackers: [tensorboard]``)."""
    flat = flatten(tree)
    if flat.pop("train.tensorboard", False):
        flat["train.trackers"] = ["tensorboard"]
    return flat


def make_accelerator(cfg: RunConfig, run_dir: Path | None = None):
    """The ``Accelerator`` for ``cfg`` (its mixed precision, its trackers logging under
    ``RUN_DIR/logs``); :class:`UsageError` for a setting this machine cannot run."""
    from accelerate import Accelerator  # noqa: PLC0415  (heavy; after the cheap checks)
    from accelerate.utils import DistributedType, ProjectConfiguration  # noqa: PLC0415

    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher is not None and launcher != cfg.train.mixed_precision and _is_main_launch_process():
        # accelerate launch exports its --mixed_precision (or its config file's) here; the
        # config's value wins, as it is saved with the run and restored on --resume.
        print(f"warning: the launcher asks for mixed precision {launcher!r} (accelerate launch --mixed_precision or "
              f"its config file) but train.mixed_precision={cfg.train.mixed_precision!r}; using the config's "
              f"(pass --train.mixed_precision={launcher} to follow the launcher)", file=sys.stderr, flush=True)
    project = (ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs"))
               if run_dir is not None else None)
    try:
        accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision,
                                  log_with=list(cfg.train.trackers) or None, project_config=project)
    except ValueError as e:  # a mixed precision this device does not support
        raise UsageError(f"train.mixed_precision={cfg.train.mixed_precision}: {e}") from None
    except RuntimeError as e:
        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() not in ("1", "true"):
            raise
        # Accelerate's FSDP plugin wants a GPU (or another accelerator) to sync module states on.
        raise UsageError(f"FSDP (accelerate launch --use_fsdp): {str(e).splitlines()[0]} FSDP needs a GPU; "
                         "on a CPU use --multi_gpu (DDP)") from None
    if cfg.train.mixed_precision == "fp16" and accelerator.scaler is None:
        # On a CPU Accelerate would silently train in fp32 (no fp16 autocast, no loss scaler).
        raise UsageError(f"train.mixed_precision=fp16 needs a GPU (this run is on {accelerator.device}); "
                         "use bf16 or no")
    if cfg.train.compile == "reduce-overhead" and accelerator.device.type != "cuda":
        raise UsageError(f"train.compile=reduce-overhead captures CUDA graphs and needs a GPU (this run is on "
                         f"{accelerator.device}); use default or none")
    if (os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
            and accelerator.distributed_type != DistributedType.FSDP and accelerator.is_main_process):
        # Accelerate's FSDP needs an accelerator (CUDA, XPU, ...); without one it quietly falls back.
        print(f"warning: FSDP was asked for (--use_fsdp) but Accelerate runs {accelerator.distributed_type.value} "
              f"on {accelerator.device}: the model is replicated on every rank, not sharded", file=sys.stderr,
              flush=True)
    import asgl  # noqa: PLC0415

    try:  # the neurons' own backend check, before anything is written (config has checked the name)
        asgl.functional.resolve_backend(cfg.model.backend, torch.empty(0, device=accelerator.device))
    except ValueError:
        raise UsageError(f"model.backend=triton needs a CUDA device (this run is on {accelerator.device}); "
                         "use auto or torch") from None
    return accelerator


def load_data(cfg: RunConfig, accelerator):
    """This rank's :class:`asgl.train.data.DataBundle`; :class:`UsageError` for missing or unusable data."""
    from asgl.train.data import build_data  # noqa: PLC0415

    try:
        data = build_data(cfg.data, T=cfg.model.T, seed=cfg.train.seed, rank=accelerator.process_index,
                          world_size=accelerator.num_processes, device=accelerator.device)
    except DataNotFoundError as e:
        raise UsageError(str(e)) from None
    except (ValueError, ImportError) as e:  # bad data options, files in the wrong format, a missing package
        raise UsageError(f"data: {e}") from None
    return data


def use_channels_last(cfg: RunConfig, data, device: torch.device) -> bool:
    """``train.channels_last``, or when null: on for image inputs on CUDA (cuDNN's NHWC convolutions)."""
    if cfg.train.channels_last is not None:
        return cfg.train.channels_last and data.input_kind == "image"
    return data.input_kind == "image" and device.type == "cuda"


def make_criterion(cfg: RunConfig, num_classes: int, label_smoothing: float | None = None):
    """``(logits_seq [T, B, K], labels [B]) -> loss``: CE on the T-mean or TET, with label smoothing
    ``ε`` (default ``loss.label_smoothing``): the target puts ``1 - ε + ε/K`` on the label and ``ε/K``
    on every other class, as ``torch.nn.CrossEntropyLoss(label_smoothing=ε)`` does."""
    import asgl  # noqa: PLC0415

    eps = cfg.loss.label_smoothing if label_smoothing is None else label_smoothing

    def target(y: torch.Tensor) -> torch.Tensor:
        if eps == 0:
            return y
        return torch.nn.functional.one_hot(y, num_classes).float() * (1.0 - eps) + eps / num_classes

    if cfg.loss.name == "ce":
        return lambda logits, y: asgl.mean_ce_loss(logits, target(y))
    return lambda logits, y: asgl.tet_loss(logits, target(y), lam=cfg.loss.tet_lambda)


class FiringRates:
    """Counts every LIF's nonzero outputs on eval-mode forwards, on the device (no host sync)."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        import asgl  # noqa: PLC0415

        # Names and modules taken before any wrapper (DDP, FSDP) renames the modules.
        self.lifs = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, asgl.LIF)]
        self.names = [name for name, _ in self.lifs]
        self.counts = torch.zeros(len(self.names), device=device, dtype=torch.float64)
        self.totals = [0] * len(self.names)
        for i, (_, mod) in enumerate(self.lifs):
            asgl.bn_lif.neuron_output_module(model, mod).register_forward_hook(self._hook(i))

    def _hook(self, index: int):
        def hook(module, inputs, output):
            if not module.training:
                self.counts[index] += (output != 0).sum()
                self.totals[index] += output.numel()
        return hook

    def reset(self) -> None:
        self.counts.zero_()
        self.totals[:] = [0] * len(self.names)

    def rates(self, accelerator) -> dict[str, float]:
        """Per-layer fraction of nonzero outputs, over all ranks (collective)."""
        totals = torch.tensor(self.totals, device=self.counts.device, dtype=torch.float64)
        rates = (accelerator.reduce(self.counts, reduction="sum")
                 / accelerator.reduce(totals, reduction="sum").clamp(min=1)).tolist()
        return dict(zip(self.names, rates))


def evaluate(model: torch.nn.Module, loader, criterion, accelerator, fire: FiringRates | None = None, *,
             channels_last: bool = False, sync_buffers_of: torch.nn.Module | None = None) -> dict:
    """Score the pure SNN (eval mode: no noise) on ``loader``, summed over all ranks (collective).

    Returns ``loss`` (mean), ``top1``, ``top5`` (percent; top-k over the T-mean logits, k capped at
    the number of classes), ``top1_per_step`` (each step's logits alone), ``top1_upto_step`` (the
    mean of steps ``0..t``: what stopping inference after ``t + 1`` steps would score),
    ``firing_rate`` (per LIF layer), ``samples`` (all ranks) and ``samples_rank`` (this rank's).

    ``sync_buffers_of``: under FSDP, the model whose buffers (BN running statistics) every rank
    takes from rank 0 first, as DDP does, so that every rank scores what the checkpoint holds.
    """
    model.eval()
    device = accelerator.device
    if sync_buffers_of is not None and accelerator.num_processes > 1:
        for buffer in sync_buffers_of.buffers():
            torch.distributed.broadcast(buffer, src=0)
    if fire is not None:
        fire.reset()
    sums = steps = None
    with torch.no_grad():
        for x, y in loader:
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x).float()  # [T, B, K]
            T, B, K = logits.shape
            if sums is None:
                sums = torch.zeros(4, device=device, dtype=torch.float64)  # Σ loss·B, top1, top5, B
                steps = torch.zeros(2, T, device=device, dtype=torch.float64)
            mean = logits.mean(0)
            top = mean.topk(min(5, K), dim=-1).indices
            upto = logits.cumsum(0) / torch.arange(1, T + 1, device=device).view(T, 1, 1)
            sums += torch.stack([criterion(logits, y).double() * B, (mean.argmax(-1) == y).sum().double(),
                                 (top == y[:, None]).any(-1).sum().double(),
                                 torch.tensor(float(B), device=device, dtype=torch.float64)])
            steps += torch.stack([(logits.argmax(-1) == y).sum(1), (upto.argmax(-1) == y).sum(1)]).double()
    if sums is None:  # no test batch on this rank (every rank has the same number: none at all)
        raise UsageError("the test split holds no samples")
    local = int(sums[3].item())
    loss_sum, top1, top5, n = accelerator.reduce(sums, reduction="sum").tolist()
    per_step, upto_step = (100.0 * accelerator.reduce(steps, reduction="sum") / n).tolist()
    return {"loss": loss_sum / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n,
            "top1_per_step": per_step, "top1_upto_step": upto_step,
            "firing_rate": fire.rates(accelerator) if fire is not None else {},
            "samples": int(n), "samples_rank": local}


@dataclasses.dataclass
class Trainer:
    """Everything one training run holds, built by :func:`build`."""

    cfg: RunConfig
    accelerator: Any
    data: Any
    model: torch.nn.Module            # the training forward (``torch.compile`` of ``eval_model`` if asked)
    eval_model: torch.nn.Module       # Accelerate's prepared model (DDP/FSDP wrapper or the model)
    core: torch.nn.Module             # the unwrapped model
    optimizer: Any
    neuron_optimizer: Any
    scheduler: torch.optim.lr_scheduler.LambdaLR
    noise: Any
    criterion: Any
    fire: FiringRates
    replicated: list                  # FSDP: parameters kept whole on every rank
    channels_last: bool
    eval_criterion: Any               # the loss without label smoothing (test_loss)
    steps_per_epoch: int
    num_params: int
    run_dir: Path | None = None
    global_step: int = 0

    @property
    def optimizers(self) -> list:
        return [opt for opt in (self.optimizer, self.neuron_optimizer) if opt is not None]

    @property
    def lifs(self) -> list:
        """``[(name, asgl.LIF)]`` in model order, named as in the unwrapped model."""
        return self.fire.lifs

    def widths(self) -> dict[str, float]:
        """Mean relaxation width α per LIF layer (a host sync; collective under FSDP2)."""
        return {name: _full(lif.width.detach()).mean().item() for name, lif in self.lifs}


def prepare(accelerator, cfg: RunConfig, model: torch.nn.Module, optimizer=None, neuron_optimizer=None):
    """``accelerator.prepare`` of the model (and its optimizers, where given), with the neurons kept
    whole under FSDP. Returns ``(model, optimizer, neuron_optimizer, replicated parameters)``."""
    from accelerate.utils import DistributedType  # noqa: PLC0415

    fsdp = accelerator.distributed_type == DistributedType.FSDP
    replicated = keep_neurons_whole(accelerator, model) if fsdp else []
    objects = [obj for obj in (model, optimizer, neuron_optimizer) if obj is not None]
    prepared = iter(accelerator.prepare(*objects) if len(objects) > 1 else [accelerator.prepare(*objects)])
    model = next(prepared)
    optimizer = next(prepared) if optimizer is not None else None
    neuron_optimizer = next(prepared) if neuron_optimizer is not None else None
    if fsdp and accelerator.is_fsdp2:
        autocast_fsdp2(accelerator, model, cfg.train.mixed_precision)
    return model, optimizer, neuron_optimizer, replicated


def build(cfg: RunConfig, accelerator, data) -> Trainer:
    """Model, optimizers, LR and noise schedules, prepared by Accelerate (seeded: identical initial
    weights on every rank, then each rank's own noise stream)."""
    import asgl  # noqa: PLC0415

    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    seed = cfg.train.seed
    torch.manual_seed(seed)  # identical initial weights on every rank
    try:
        model = build_model(cfg, data.num_classes, data.in_channels)
    except ValueError as e:
        raise UsageError(f"model: {e}") from None
    channels_last = use_channels_last(cfg, data, device)
    # On its device before the optimizers see it (under FSDP nothing else moves the parameters it
    # does not shard: the neurons').
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    fire = FiringRates(model, device)
    # Each rank draws its own noise masks (seed + rank); the run stays reproducible.
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)

    o = cfg.optim
    optimizer, neuron_optimizer = asgl.build_optimizers(model, name=o.name, lr=o.lr, momentum=o.momentum,
                                                        weight_decay=o.weight_decay, neuron_lr=o.neuron_lr)
    steps_per_epoch = math.ceil(len(data.train) / cfg.train.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))
    noise = asgl.NoiseSchedule(model, p0=cfg.model.p, epochs=o.epochs, gamma=cfg.noise.gamma,
                               milestones=cfg.noise.milestones)
    num_params = sum(p.numel() for p in model.parameters())  # before sharding
    prepared, optimizer, neuron_optimizer, replicated = prepare(accelerator, cfg, model, optimizer, neuron_optimizer)
    # With train.compile the training forward is compiled; eval runs eager (no recompile for eval mode).
    train_model = prepared
    if cfg.train.compile != "none":
        train_model = torch.compile(prepared, mode=None if cfg.train.compile == "default" else cfg.train.compile)
    return Trainer(cfg, accelerator, data, train_model, prepared, accelerator.unwrap_model(prepared), optimizer,
                   neuron_optimizer, scheduler, noise, make_criterion(cfg, data.num_classes), fire, replicated,
                   channels_last, make_criterion(cfg, data.num_classes, label_smoothing=0.0), steps_per_epoch,
                   num_params)


def restore(t: Trainer, resume: dict) -> tuple[int, int, float, int | None, list | None]:
    """Load a checkpoint into ``t`` (full tensors in; each rank keeps its shard under FSDP).
    Returns ``(epoch, batch, best, best_epoch, partial sums)`` to continue from; ``ValueError`` (and
    torch's errors) when it does not fit."""
    cfg, o = t.cfg, t.cfg.optim
    ckpt_io.load_model_state(t.eval_model, resume["model"])
    ckpt_io.load_optimizer_state(t.eval_model, t.optimizer, resume["optimizer"])
    if (t.neuron_optimizer is None) != (resume["neuron_optimizer"] is None):
        raise ValueError("the config and the checkpoint disagree on learnable neuron parameters")
    if t.neuron_optimizer is not None:
        ckpt_io.load_optimizer_state(t.eval_model, t.neuron_optimizer, resume["neuron_optimizer"])
    scheduler = t.scheduler
    scheduler.load_state_dict(resume["lr_scheduler"])
    # A new optim.lr given on --resume takes effect from here on (same schedule position).
    scheduler.base_lrs = [o.lr] * len(t.optimizer.param_groups)
    for group, base in zip(t.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * scheduler.lr_lambdas[0](scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in t.optimizer.param_groups]
    t.noise.load_state_dict(resume["noise"])
    if t.accelerator.scaler is not None and resume.get("scaler"):
        t.accelerator.scaler.load_state_dict(resume["scaler"])
    start_epoch, start_batch = int(resume["epoch"]), int(resume["step_in_epoch"])
    t.global_step = int(resume["global_step"])
    batches = len(t.data.train)
    if not 0 <= start_batch <= batches:
        raise ValueError(f"step_in_epoch {start_batch} is outside this run's {batches} batches per epoch")
    rank = t.accelerator.process_index
    if resume["world_size"] == t.accelerator.num_processes:
        ckpt_io.set_rng_state(resume["rng"][rank])
    else:  # a new world size cannot replay the old streams; derive fresh ones
        torch.manual_seed(cfg.train.seed + rank + 1_000_003 * t.global_step)
    return start_epoch, start_batch, float(resume["best_metric"]), resume.get("best_epoch"), resume.get("partial")


def save_checkpoint(t: Trainer, run_dir: Path, names: list[str], *, epoch: int, step_in_epoch: int, sums,
                    best: float, best_epoch: int | None) -> None:
    """Write the checkpoints ``names`` (e.g. ["last", "best"]); collective: every rank must call it."""
    from accelerate.utils import gather_object  # noqa: PLC0415

    rngs = gather_object([ckpt_io.rng_state()])
    scaler = t.accelerator.scaler
    state = {
        # Gathered into full tensors (collectives under FSDP: every rank takes part; rank 0 writes).
        "model": ckpt_io.model_state(t.eval_model),
        "optimizer": ckpt_io.optimizer_state(t.eval_model, t.optimizer),
        "neuron_optimizer": (ckpt_io.optimizer_state(t.eval_model, t.neuron_optimizer)
                             if t.neuron_optimizer is not None else None),
        "lr_scheduler": t.scheduler.state_dict(), "noise": t.noise.state_dict(), "rng": rngs,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": t.global_step, "partial": sums,
        "best_metric": best, "best_epoch": best_epoch, "world_size": t.accelerator.num_processes,
        "config": to_dict(t.cfg),
    }
    if t.accelerator.is_main_process:
        blob = ckpt_io.serialize(state)
        for name in names:
            ckpt_io.write_atomic(blob, run_dir / f"{name}.pt")
    t.accelerator.wait_for_everyone()


@dataclasses.dataclass
class EpochResult:
    sums: list | None = None          # [Σ loss·B, Σ correct, samples] over all ranks (None: not finished)
    stopped_at: int | None = None     # the batch a stop request ended the epoch after
    nonfinite: bool = False
    first_step: int = 0               # the epoch's first optimizer step
    samples_run: int = 0              # samples this rank trained on in this invocation
    time_s: float = 0.0
    p: float = 0.0


def train_epoch(t: Trainer, epoch: int, start_batch: int, partial, stop: dict, progress=None,
                on_log=None) -> EpochResult:
    """Train epoch ``epoch`` from batch ``start_batch``: gradient accumulation over ``grad_accum``
    micro-batches, one optimizer step per group, host syncs only at log points (every
    ``train.log_every`` steps and at the end), where ``on_log(step_stats)`` is called.

    ``partial``: the train sums of the interrupted part of this epoch (from a checkpoint) or None.
    ``stop["signal"]``: set by a signal handler; the epoch ends after the current step (with several
    ranks: at the next log point, where the ranks agree)."""
    import asgl  # noqa: PLC0415

    cfg, acc, data = t.cfg, t.accelerator, t.data
    device, rank, world = acc.device, acc.process_index, acc.num_processes
    accum, batches = cfg.train.grad_accum, len(data.train)
    t.eval_model.train()
    data.train.set_epoch(epoch, start_batch)
    if cfg.train.debug_ranks and hasattr(data.train, "batch_indices"):
        with open(Path(t.run_dir) / "ranks" / f"rank{rank}.jsonl", "a") as f:
            idx = [b.tolist() for b in data.train.batch_indices()[start_batch:]]
            f.write(json.dumps({"epoch": epoch, "start_batch": start_batch, "rank": rank, "world": world,
                                "indices": idx}) + "\n")
    # Train sums live on the device; they are read (synced) only at log points and epoch end.
    sums = torch.zeros(2, device=device, dtype=torch.float64)  # Σ loss·B, Σ correct
    seen = 0  # samples this rank trained on this epoch (known on the host)
    if partial is not None and rank == 0:  # the interrupted part of this epoch, summed over ranks
        sums += torch.tensor(partial[:2], dtype=torch.float64, device=device)
        seen = int(partial[2])
    # The epoch's optimizer steps are global steps first_step … first_step + steps_per_epoch - 1.
    out = EpochResult(first_step=t.global_step - math.ceil(start_batch / accum), p=t.noise.p)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # peak_mem_mb is this epoch's
    task = progress.add_task("", total=batches, completed=start_batch, epoch=f"{epoch + 1}/{cfg.optim.epochs}",
                             stats="") if progress else None
    clip = cfg.optim.clip_grad_norm
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(data.train, start=start_batch):
        if t.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        sync = (i + 1) % accum == 0 or i + 1 == batches
        group = min(accum, batches - (i // accum) * accum)
        with contextlib.nullcontext() if sync else acc.no_sync(t.model):
            if cfg.train.compile == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are consumed
            logits = t.model(x)
            loss = t.criterion(logits, y)
            acc.backward(loss / group)
        if sync:
            all_reduce_mean_(t.replicated, world)
            if clip is not None:  # unscales fp16 gradients first; the step then skips unscaling
                acc.clip_grad_norm_(t.eval_model.parameters(), clip)
            optimizer_step(t.optimizers, acc.scaler)
            t.scheduler.step()
            if cfg.model.learn_thresh:
                asgl.clamp_thresholds_(t.core)
            t.global_step += 1
        with torch.no_grad():
            sums += torch.stack([loss.detach().double() * y.shape[0],
                                 (logits.detach().mean(0).argmax(-1) == y).sum().double()])
        seen += y.shape[0]
        out.samples_run += y.shape[0]
        if progress:
            progress.advance(task)
        log_point = sync and (t.global_step % cfg.train.log_every == 0 or i + 1 == batches)
        step_cap = cfg.train.max_steps is not None and t.global_step >= cfg.train.max_steps and sync
        if log_point or (sync and world == 1 and stop["signal"]) or step_cap:
            host = torch.tensor([float(seen), float(stop["signal"])], device=device, dtype=torch.float64)
            totals = acc.reduce(torch.cat([sums, host]), reduction="sum").tolist()
            if not math.isfinite(totals[0]):
                out.nonfinite = True
                break
            if log_point and on_log is not None:
                on_log({"epoch": epoch, "batch": i + 1, "batches": batches, "loss": totals[0] / totals[2],
                        "acc": 100.0 * totals[1] / totals[2], "lr": t.scheduler.get_last_lr()[0], "p": out.p,
                        "samples_run": out.samples_run, "elapsed_s": time.perf_counter() - t0})
            if progress:
                progress.update(task, stats=f"loss {totals[0] / totals[2]:.4f} acc {100 * totals[1] / totals[2]:.2f}"
                                            f" p {out.p:.3f} lr {t.scheduler.get_last_lr()[0]:.3g}")
            if totals[3] or step_cap:
                stop["signal"] = stop["signal"] or -1
                out.stopped_at = i + 1
                out.sums = totals[:3]
                break
    if progress:
        progress.remove_task(task)
    out.time_s = time.perf_counter() - t0
    if out.nonfinite or (out.stopped_at is not None and out.stopped_at < batches):
        return out
    host = torch.tensor([float(seen)], device=device, dtype=torch.float64)
    out.sums = acc.reduce(torch.cat([sums, host]), reduction="sum").tolist()
    out.nonfinite = not math.isfinite(out.sums[0])
    out.stopped_at = None
    return out


def _duration(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(_help())
        return EXIT_OK

    # ---------------------------------------------------------------- config (validated up front)
    try:
        cfg, run_dir, resume = parse_command_line(argv)
    except (ConfigError, UsageError, ckpt_io.CheckpointError) as e:
        return _fail(str(e), EXIT_USAGE)
    resuming = resume is not None

    # ---------------------------------------------------------------- Accelerator, seeds, data, model
    try:
        accelerator = make_accelerator(cfg, run_dir)
    except UsageError as e:
        return _fail(str(e), EXIT_USAGE)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    main_proc = accelerator.is_main_process
    if cfg.train.deterministic:
        # cuDNN/cuBLAS pick nondeterministic algorithms by default (the fused neurons are
        # deterministic either way). Ops with no deterministic kernel warn instead of failing.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    seed = cfg.train.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        data = load_data(cfg, accelerator)
        if len(data.train) == 0:
            raise UsageError(f"data: {data.num_train} training samples give no full batch of data.batch_size on "
                             f"{world} rank(s)")
        t = build(cfg, accelerator, data)
    except UsageError as e:
        return _fail(str(e), EXIT_USAGE)
    t.run_dir = run_dir
    o, m = cfg.optim, cfg.model
    batches = len(data.train)
    start_epoch, start_batch, best, best_epoch, partial = 0, 0, -1.0, None, None
    if resuming:
        try:
            start_epoch, start_batch, best, best_epoch, partial = restore(t, resume)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
            return _fail(f"checkpoint {run_dir / 'last.pt'} does not fit this run: "
                         f"{detail[:400]}{' ...' if len(detail) > 400 else ''}", EXIT_USAGE)
        del resume  # free the CPU copy of the weights
    from accelerate.utils import DistributedType  # noqa: PLC0415

    sync_buffers_of = t.core if accelerator.distributed_type == DistributedType.FSDP else None

    # train.debug_ranks: the input shape of the first LIF, for the per-rank noise probe below.
    lifs = t.lifs
    probe_shape: list[torch.Size] = []
    if cfg.train.debug_ranks and lifs:
        def remember_shape(module, args):
            if not probe_shape:
                probe_shape.append(args[0].shape)

        lifs[0][1].register_forward_pre_hook(remember_shape)

    def noise_probe_sha256() -> str | None:
        """Hash of the first LIF's train-mode output on a fixed input, drawn from this rank's RNG
        streams (forked, so the run is unchanged): with p > 0 it differs between ranks exactly when
        their noise masks do."""
        from torch.distributed.fsdp import FSDPModule  # noqa: PLC0415

        if not probe_shape:
            return None
        shape = (probe_shape[0][0], 1, *probe_shape[0][2:])  # [T, 1, ...]: one sample is enough
        lif, was_training = lifs[0][1], lifs[0][1].training
        fork = [device] if device.type == "cuda" else []
        sharded = isinstance(t.eval_model, FSDPModule)  # a recurrent layer's weights are sharded there
        with torch.random.fork_rng(devices=fork), torch.no_grad():
            x_seq = torch.linspace(0.0, 2.0 * float(m.thresh), math.prod(shape), device=device).reshape(shape)
            lif.train()
            if sharded:
                t.eval_model.unshard()  # collective: every rank probes
            y_seq = lif(x_seq)
            if sharded:
                t.eval_model.reshard()
        lif.train(was_training)
        return hashlib.sha256(y_seq.float().cpu().numpy().tobytes()).hexdigest()

    # ---------------------------------------------------------------- run folder, trackers, signals
    stop = {"signal": 0}

    def on_signal(signum, frame):
        if stop["signal"]:  # second signal: give up at once
            raise KeyboardInterrupt
        stop["signal"] = signum
        print(f"\n{signal.Signals(signum).name}: finishing the current step, then saving last.pt "
              "(send again to abort)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    if main_proc and not resuming:  # created only now: a run that fails to start leaves nothing
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in ARTIFACTS:  # train.overwrite=true: clear only what a run writes
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    accelerator.wait_for_everyone()
    if main_proc:
        ckpt_io.write_atomic(to_yaml(cfg).encode(), run_dir / "config.yaml")
        metrics_path = run_dir / "metrics.jsonl"
        if metrics_path.exists():  # keep only rows the checkpoint has seen (a crash may have left more)
            rows = [line for line in metrics_path.read_text().splitlines() if line.strip()]
            rows = [r for r in rows if json.loads(r)["epoch"] <= start_epoch]
            ckpt_io.write_atomic("".join(r + "\n" for r in rows).encode(), metrics_path)
        print(f"run {run_dir} | {m.name} T={m.T} | {data.num_train} train / {data.num_test} test samples "
              f"({data.origin}) | {world} rank(s) on {device} | {batches} batches/epoch/rank | "
              f"{t.num_params:,} parameters"
              + (" | channels_last" if t.channels_last else "")
              + (f" | resumed at epoch {start_epoch + 1} batch {start_batch}" if start_batch or start_epoch else ""),
              flush=True)
    if cfg.train.trackers:
        flat = {k.replace(".", "/"): v for k, v in _flat_scalars(to_dict(cfg)).items()}
        accelerator.init_trackers(cfg.train.run_name, config=flat)
    if cfg.train.debug_ranks:
        (run_dir / "ranks").mkdir(exist_ok=True)

    def kept_checkpoint() -> str:
        last = run_dir / "last.pt"
        return (f"The last good checkpoint is kept: {last}" if last.is_file()
                else "No checkpoint was written yet (none before the first epoch ends).")

    progress = None
    if main_proc and sys.stderr.isatty():
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

        progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                            console=Console(stderr=True), transient=True)
        progress.start()
    total_steps = o.epochs * t.steps_per_epoch
    steps_at_start = t.global_step

    def on_log(s: dict) -> None:
        """A log point: tracker scalars (every rank computes the widths: collective under FSDP2),
        and without a terminal one progress line on stdout."""
        widths = t.widths() if cfg.train.trackers else {}
        if cfg.train.trackers:
            accelerator.log({"train/loss": s["loss"], "train/acc": s["acc"], "lr": s["lr"], "p": s["p"],
                             **{f"width/{k}": v for k, v in widths.items()}}, step=t.global_step)
        if main_proc and progress is None:
            rate = s["samples_run"] * world / max(s["elapsed_s"], 1e-9)
            steps_done = t.global_step - steps_at_start
            # ETA to the end of optim.epochs at this invocation's pace so far (evaluations included).
            eta = (time.perf_counter() - t_loop) / max(steps_done, 1) * (total_steps - t.global_step)
            print(f"step {t.global_step}/{total_steps} | epoch {s['epoch'] + 1}/{o.epochs} "
                  f"batch {s['batch']}/{s['batches']} | loss {s['loss']:.4f} | acc {s['acc']:.2f} | "
                  f"lr {s['lr']:.4g} | samples/s {rate:.0f} | eta {_duration(eta)}", flush=True)

    # ---------------------------------------------------------------- epochs
    exit_code = EXIT_OK
    epoch = start_epoch
    last_epoch = o.epochs if cfg.train.stop_after_epochs is None else min(o.epochs, cfg.train.stop_after_epochs)
    t_loop = time.perf_counter()
    while epoch < last_epoch:
        result = train_epoch(t, epoch, start_batch, partial, stop, progress, on_log)
        partial = None
        if result.nonfinite:
            exit_code = EXIT_NONFINITE
            if main_proc:
                print(f"error: non-finite training loss in epoch {epoch + 1} (by step {t.global_step}); stopping. "
                      f"{kept_checkpoint()}", file=sys.stderr, flush=True)
            break
        if result.stopped_at is not None:  # interrupted mid-epoch: save the position
            save_checkpoint(t, run_dir, ["last"], epoch=epoch, step_in_epoch=result.stopped_at, sums=result.sums,
                            best=best, best_epoch=best_epoch)
            break
        loss_sum, correct, seen = result.sums

        # ------------------------------------------------------------ eval: the pure SNN
        evaluate_now = (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == o.epochs
        row_test = {"test_loss": None, "test_acc": None, "test_top5": None}
        fire = {}
        if evaluate_now:
            ev = evaluate(t.eval_model, data.test, t.eval_criterion, accelerator, t.fire,
                          channels_last=t.channels_last, sync_buffers_of=sync_buffers_of)
            fire = ev["firing_rate"]
            row_test = {"test_loss": ev["loss"], "test_acc": ev["top1"], "test_top5": ev["top5"]}
            if cfg.train.debug_ranks:  # the ranks' eval shards must cover the test set once
                with open(run_dir / "ranks" / f"rank{rank}.jsonl", "a") as f:
                    f.write(json.dumps({"eval_epoch": epoch + 1, "rank": rank,
                                        "evaluated": ev["samples_rank"]}) + "\n")
        improved = evaluate_now and row_test["test_acc"] > best
        if improved:
            best, best_epoch = row_test["test_acc"], epoch + 1

        # ------------------------------------------------------------ log, schedule, checkpoint
        widths = t.widths()
        row = {
            "epoch": epoch + 1, "step": t.global_step, "train_loss": loss_sum / seen,
            "train_acc": 100.0 * correct / seen, **row_test, "best_test_acc": best if best >= 0 else None,
            "lr": mean_epoch_lr(t.scheduler, result.first_step, t.steps_per_epoch), "p": result.p,
            "width": widths, "firing_rate": fire, "samples_per_s": result.samples_run * world / result.time_s,
            "epoch_time_s": result.time_s, "peak_mem_mb": peak_memory_mb(device),
        }
        t.noise.step()
        epoch += 1
        if cfg.train.debug_ranks:  # after DDP's all-reduce every rank must hold the same parameters
            digest = params_sha256(t.eval_model, t.core)
            with open(run_dir / "ranks" / f"rank{rank}.jsonl", "a") as f:
                f.write(json.dumps({"epoch_done": epoch, "rank": rank, "params_sha256": digest,
                                    "noise_probe_sha256": noise_probe_sha256()}) + "\n")
        save_checkpoint(t, run_dir, ["last", "best"] if improved else ["last"], epoch=epoch, step_in_epoch=0,
                        sums=None, best=best, best_epoch=best_epoch)
        if main_proc:
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            test = (f"test_loss {row['test_loss']:.4f} | test_acc {row['test_acc']:.2f} | best {best:.2f}"
                    if evaluate_now else "test -")
            mean_w = sum(widths.values()) / max(1, len(widths))
            mean_f = f"{sum(fire.values()) / len(fire):.3f}" if fire else "-"
            print(f"epoch {epoch}/{o.epochs} | step {t.global_step} | train_loss {row['train_loss']:.4f} | "
                  f"train_acc {row['train_acc']:.2f} | {test} | p {result.p:.3f} | lr {row['lr']:.4g} | "
                  f"width {mean_w:.3f} | fire {mean_f} | samples/s {row['samples_per_s']:.0f} | "
                  f"time {result.time_s:.1f}s | mem {row['peak_mem_mb']:.0f}MB", flush=True)
        if cfg.train.trackers:
            scalars = {("epoch/" + k if k in ("train_loss", "train_acc", "lr") else k): v
                       for k, v in _flat_scalars(row).items() if v is not None}
            accelerator.log(scalars, step=t.global_step)
        start_batch = 0
        if stop["signal"]:
            break

    if progress:
        progress.stop()
    accelerator.end_training()
    if exit_code == EXIT_NONFINITE:
        return EXIT_NONFINITE
    if stop["signal"] > 0:
        if main_proc:
            print(f"stopped by {signal.Signals(stop['signal']).name}; resume with --resume {run_dir}",
                  file=sys.stderr, flush=True)
        return 128 + stop["signal"]
    if main_proc and epoch < o.epochs:
        print(f"stopped after epoch {epoch} (step {t.global_step}) as asked; resume with --resume {run_dir}",
              flush=True)
    if main_proc:
        best_text = ("no evaluation yet" if best < 0 else f"best test_acc {best:.2f}"
                     + (f" (epoch {best_epoch})" if best_epoch is not None else ""))
        print(f"done: {best_text} | run folder {run_dir} | {time.perf_counter() - t_start:.1f} s", flush=True)
    return EXIT_OK


def params_sha256(prepared: torch.nn.Module, core: torch.nn.Module) -> str:
    """sha256 over the names and full values of every parameter of ``core``, the model inside
    ``prepared`` (Accelerate's wrapper; collective under FSDP: every rank must call it)."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel  # noqa: PLC0415

    if isinstance(prepared, FSDPModule):  # back to the sharded parameters (an eval pass leaves the
        prepared.reshard()                # root's unsharded ones registered)
    gather = (FullyShardedDataParallel.summon_full_params(prepared, writeback=False)
              if isinstance(prepared, FullyShardedDataParallel) else contextlib.nullcontext())
    digest = hashlib.sha256()
    with gather:
        for name, param in core.named_parameters():
            # A copy: numpy() pins a CPU tensor's storage, and FSDP must free its unsharded params.
            digest.update(name.encode() + _full(param.detach()).to("cpu", copy=True).numpy().tobytes())
    return digest.hexdigest()


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind an FSDP2 shard (a ``DTensor``: collective, every rank must call it),
    or ``t`` itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _flat_scalars(tree: dict, prefix: str = "") -> dict:
    """Nested dict -> ``{"a/b": number-or-str}`` (TensorBoard wants flat scalars)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat_scalars(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[f"{prefix}{k}"] = v
        elif isinstance(v, (list, tuple)):
            out[f"{prefix}{k}"] = str(v)
    return out


if __name__ == "__main__":
    sys.exit(main())
