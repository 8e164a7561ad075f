"""Train an ASGL spiking network.

    python train/run.py --config configs/quickstart.yaml [--section.key=value ...]
    accelerate launch train/run.py --config configs/cifar10_resnet18_t4.yaml    (one GPU or many)
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 train/run.py --config ...   (CPU ranks)
    python train/run.py --resume runs/quickstart [--section.key=value ...]
    python -m asgl.train.eval runs/quickstart                                     (score best.pt)

A value comes from the defaults listed below, then the YAML file, then the --section.key=value
overrides (--model.T=4 or --model.T 4); a bad key, type or value stops the run before any work,
with a message naming the key.

The run folder RUN_DIR = train.out_dir/train.run_name (run_name: the config file's name by default):

    config.yaml        the resolved config
    metrics.jsonl      one JSON row per epoch: losses, accuracies (percent), lr (the epoch's mean), p,
                       width and firing rate per LIF layer, samples/s, peak memory
    last.pt, best.pt   checkpoints, written atomically
    logs/              the local trackers' files (train.trackers)
    ranks/             per-rank records (train.debug_ranks)
    .artifacts         what was written here: train.overwrite=true removes exactly that, nothing else

stdout: one line per epoch (without a terminal also one per log point, every train.log_every
optimizer steps), and a last line "done: best test_acc ... | run folder ... | ... s".

Resuming: --resume RUN_DIR continues from its last.pt with the config it was trained with, bit-identical
to an uninterrupted run on the same number of processes (on another number the trainer says what
changes). Overrides given with --resume apply from there on; train.max_steps, train.stop_after_epochs
and train.overwrite belong to one invocation. A finished run is reported complete and left unchanged
(pass a larger --optim.epochs to train on).

Stopping: Ctrl-C or SIGTERM finishes the current step, writes last.pt and exits (a second signal aborts
at once); train.stop_after_epochs=N and train.max_steps=N stop early with last.pt written.

Exit codes: 0 done; 1 non-finite loss (the last good checkpoint is kept); 2 bad command line, config,
data, checkpoint, run folder or launch (nothing written); 130 / 143 stopped by SIGINT / SIGTERM after
writing last.pt. Under accelerate launch, a failing process makes the launcher exit with 1.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import numpy as np
import torch
import yaml

import asgl
from asgl.train import checkpoint as ckpt_io
from asgl.train import run_folder
from asgl.train.config import (
    ConfigError, RunConfig, build_config, describe, flatten, load_yaml, parse_overrides, take_flags, to_dict, to_yaml,
)
from asgl.train.data import DataNotFoundError
from asgl.train.epoch_log import EpochLogger, flat_scalars, peak_memory_mb
from asgl.train.rank_debug import RankDebug
from asgl.train.run_folder import UsageError

EXIT_OK, EXIT_NONFINITE, EXIT_USAGE = 0, 1, 2
INVOCATION_KEYS = ("train.max_steps", "train.stop_after_epochs", "train.overwrite")


class RunComplete(Exception):
    """``--resume`` of a run that has finished all of ``optim.epochs``: nothing to do (exit code 0)."""


def _is_main_launch_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def fail(msg: str, code: int) -> int:
    """Print ``error: msg`` on stderr and return ``code``. Every process that fails says so: under a
    launcher the first rank to exit has the others stopped, maybe before the main one could print.
    One write per line: launchers run Python unbuffered (``-u``), where ``print`` writes the text and
    its newline apart, and the ranks' lines would interleave on a shared stderr."""
    sys.stderr.write(f"error: {msg}\n")
    sys.stderr.flush()
    return code


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``: how the trainer's and eval's command lines end.

    A rank of a multi-process launch (the launcher set ``WORLD_SIZE`` > 1) goes through Python's
    exit up to where the interpreter would start finalizing (non-daemon threads joined, ``atexit``
    handlers run, stdout and stderr flushed) and leaves with ``os._exit(code)``, as a forked
    ``multiprocessing`` child does; a single process exits as usual.

    Why: gloo's worker threads (pt_gloo_runloop) outlive ``destroy_process_group()`` (torch frees a
    group with its last reference; DDP and FSDP keep references they never release, 10 after one
    DDP wrap in torch 2.13), and such a thread drops each collective after completing it (a barrier
    also frees the collectives it waited on). Dropping the tensors takes the GIL: torch checks
    ``Py_IsInitialized()``, then waits for the GIL. If the main thread starts finalizing in between
    (the worker lost the CPU: under load), CPython < 3.14 ends the worker with ``pthread_exit`` as
    it gets the GIL, and unwinding through the work's noexcept destructor calls ``std::terminate``:
    the rank aborts after its work is done ("terminate called without an active exception",
    SIGABRT). Every core dump of it shows runLoop -> ~AsyncBarrierWork or ~AsyncAllreduceWork ->
    decref -> take_gil -> pthread_exit -> terminate (pytorch/pytorch#190489, open; CPython 3.14
    parks such threads instead, gh-87135). Without the finalizing stage there is no such window,
    and nothing of the run is left for it: the files are closed, the trackers finished and the
    group ended by ``accelerator.end_training()``. tests/test_rank_exit.py opens the window."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        sys.exit(code)
    threading._shutdown()  # what the interpreter's exit does first (it also stops executors' workers)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _yaml_value(value) -> str:
    """``value`` as the YAML of a config file spells it (``null``, ``true``, ``[]``, ``0.0005``)."""
    text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True, width=10**6)
    return text.removesuffix("...\n").strip()


def help_text() -> str:
    """``--help``: the usage above, then every config key with its default and meaning."""
    lines = [__doc__.strip(), "", "Config keys (--section.key=value; the default, then what it means):"]
    cfg = RunConfig()
    for key, text in describe().items():
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        lines.append(f"  --{key}={_yaml_value(obj)}" + (f"\n      {text}" if text else ""))
    return "\n".join(lines)


def split_argv(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    """``(config_path, resume_dir, override_args)`` from the command line."""
    values, rest = take_flags(argv, ("--config", "--resume"))
    return values.get("--config"), values.get("--resume"), rest


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
    m = cfg.model
    neuron_kwargs = dict(surrogate=m.surrogate, width=m.width, learn_width=m.learn_width,
                         width_granularity=m.width_granularity, decay=m.decay, learn_decay=m.learn_decay,
                         thresh=m.thresh, learn_thresh=m.learn_thresh, reset=m.reset, p=m.p, min_slope=m.min_slope,
                         backend=m.backend)
    model = asgl.create_model(m.name, num_classes=num_classes, T=m.T, in_channels=in_channels,
                              remat_spikes=m.remat_spikes, checkpoint=cfg.train.checkpoint, **neuron_kwargs)
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
    from accelerate.utils import convert_outputs_to_fp32

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    if low is not None:
        model.forward = convert_outputs_to_fp32(torch.autocast(accelerator.device.type, dtype=low)(model.forward))


def mean_epoch_lr(scheduler: torch.optim.lr_scheduler.LambdaLR, first_step: int, steps: int) -> float:
    """Mean LR of the optimizer steps ``first_step … first_step + steps - 1`` (step ``s`` trains with
    ``base_lr · λ(s)``): what the ``lr`` column of an epoch reports, independent of where a resume cut it."""
    base, factor = scheduler.base_lrs[0], scheduler.lr_lambdas[0]
    return base * sum(factor(s) for s in range(first_step, first_step + steps)) / max(1, steps)


TRACKER_PACKAGES = {  # Accelerate's log_with names -> the import names that provide them
    "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "aim": ("aim",), "mlflow": ("mlflow",),
    "comet_ml": ("comet_ml",), "clearml": ("clearml",), "dvclive": ("dvclive",), "swanlab": ("swanlab",),
    "trackio": ("trackio",),
}


def check_trackers(trackers: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` for a tracker whose package is not installed (before any work)."""
    import importlib.util

    for name in trackers:
        modules = TRACKER_PACKAGES[name]
        if not any(importlib.util.find_spec(mod) is not None for mod in modules):
            raise ConfigError(f"train.trackers: {name} needs the {modules[0]} package (pip install {modules[0]}"
                              + (f", or {modules[1]}" if len(modules) > 1 else "") + ")")


def parse_command_line(argv: list[str]) -> tuple[RunConfig, Path, dict | None]:
    """``(config, run folder, checkpoint to resume or None)``; raises ConfigError / UsageError /
    CheckpointError before anything is written, and :class:`RunComplete` for a finished run."""
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
        if done_epochs >= cfg.optim.epochs and int(resume["step_in_epoch"]) == 0:
            best, best_epoch = float(resume["best_metric"]), resume.get("best_epoch")
            best_text = (f", best test_acc {best:.2f}" + (f" (epoch {best_epoch})" if best_epoch else "")
                         if best >= 0 else "")
            raise RunComplete(f"{run_dir} is complete: {done_epochs} of {cfg.optim.epochs} epochs done{best_text}; "
                              "nothing changed (to train on, resume with a larger --optim.epochs)")
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
        run_folder.check(run_dir, overwrite=cfg.train.overwrite)
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
    ``RUN_DIR/logs``); :class:`UsageError` for a setting this machine cannot run, or a launch that
    would make each process train alone.

    Mixed precision comes from the config, which is saved with the run and restored on --resume: a
    launcher's ``--mixed_precision`` that disagrees gets a warning. fp16 needs a GPU (on a CPU
    Accelerate would silently train in fp32). DDP/FSDP and the process count come from
    ``accelerate launch``; Accelerate enables FSDP on accelerators only (on a CPU it falls back to
    DDP, and the trainer says so).
    """
    from accelerate import Accelerator  # heavy; after the cheap checks
    from accelerate.utils import DistributedType, ProjectConfiguration

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
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes == 1:
        # `accelerate launch --multi_gpu` without GPUs: every process would run as a 1-rank run of
        # its own, all of them training the same model into the same run folder.
        raise UsageError(f"the launcher started {launched} processes but Accelerate runs this one alone on "
                         f"{accelerator.device} (no GPU for it): on a CPU, launch with ACCELERATE_USE_CPU=1 "
                         f"accelerate launch --multi_gpu --num_processes {launched} ...")
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
    try:  # the neurons' own backend check, before anything is written (config has checked the name)
        asgl.functional.resolve_backend(cfg.model.backend, torch.empty(0, device=accelerator.device))
    except ValueError:
        raise UsageError(f"model.backend=triton needs a CUDA device (this run is on {accelerator.device}); "
                         "use auto or torch") from None
    return accelerator


def load_data(cfg: RunConfig, accelerator):
    """This rank's :class:`asgl.train.data.DataBundle`; :class:`UsageError` for missing or unusable data."""
    from asgl.train.data import build_data

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


@dataclasses.dataclass(kw_only=True)
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
    eval_criterion: Any               # the loss without label smoothing (test_loss)
    fire: FiringRates
    replicated: list                  # FSDP: parameters kept whole on every rank
    channels_last: bool
    steps_per_epoch: int
    num_params: int
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
        return {name: ckpt_io.full_tensor(lif.width.detach()).mean().item() for name, lif in self.lifs}


def prepare(accelerator, cfg: RunConfig, model: torch.nn.Module, optimizer=None, neuron_optimizer=None):
    """``accelerator.prepare`` of the model (and its optimizers, where given), with the neurons kept
    whole under FSDP. Returns ``(model, optimizer, neuron_optimizer, replicated parameters)``."""
    from accelerate.utils import DistributedType

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
    rank, device = accelerator.process_index, accelerator.device
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
    return Trainer(cfg=cfg, accelerator=accelerator, data=data, model=train_model, eval_model=prepared,
                   core=accelerator.unwrap_model(prepared), optimizer=optimizer, neuron_optimizer=neuron_optimizer,
                   scheduler=scheduler, noise=noise, criterion=make_criterion(cfg, data.num_classes),
                   eval_criterion=make_criterion(cfg, data.num_classes, label_smoothing=0.0), fire=fire,
                   replicated=replicated, channels_last=channels_last, steps_per_epoch=steps_per_epoch,
                   num_params=num_params)


@dataclasses.dataclass
class Position:
    """Where a run continues: the epoch (0-based, = epochs done) and batch, the best test accuracy so
    far and its epoch, and the train sums of an interrupted epoch's first part."""

    epoch: int = 0
    batch: int = 0
    best: float = -1.0
    best_epoch: int | None = None
    partial: list | None = None


def restore(t: Trainer, resume: dict) -> Position:
    """Load a checkpoint into ``t`` (full tensors in; each rank keeps its shard under FSDP) and return
    the position to continue from; ``ValueError`` (and torch's errors) when it does not fit."""
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
    return Position(start_epoch, start_batch, float(resume["best_metric"]), resume.get("best_epoch"),
                    resume.get("partial"))


def save_checkpoint(t: Trainer, run_dir: Path, names: list[str], *, epoch: int, step_in_epoch: int, sums,
                    best: float, best_epoch: int | None) -> None:
    """Write the checkpoints ``names`` (e.g. ["last", "best"]); collective: every rank must call it."""
    from accelerate.utils import gather_object

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
            run_folder.write(run_dir / f"{name}.pt", blob)
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
                on_log=None, debug: RankDebug | None = None) -> EpochResult:
    """Train epoch ``epoch`` (0-based) from batch ``start_batch``: gradient accumulation over
    ``grad_accum`` micro-batches (``no_sync`` on all but the last, the loss divided by the group size,
    an epoch's last group may be shorter: its position is part of the resumable state), one optimizer
    step per group, host syncs only at log points (every ``train.log_every`` steps and at the end),
    where ``on_log(step_stats)`` is called. ``debug``: the ``train.debug_ranks`` records.

    ``partial``: the train sums of the interrupted part of this epoch (from a checkpoint) or None.
    ``stop["signal"]``: set by a signal handler; the epoch ends after the current step (with several
    ranks: at the next log point, where the ranks agree)."""
    cfg, acc, data = t.cfg, t.accelerator, t.data
    device, rank, world = acc.device, acc.process_index, acc.num_processes
    accum, batches = cfg.train.grad_accum, len(data.train)
    t.eval_model.train()
    data.train.set_epoch(epoch, start_batch)
    if debug is not None:
        debug.epoch_start(epoch, start_batch, data.train)
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


def seed_everything(cfg: RunConfig) -> None:
    """Seed Python, numpy and torch with ``train.seed``; ``train.deterministic``: deterministic
    cuDNN/cuBLAS algorithms (the fused neurons are deterministic either way)."""
    if cfg.train.deterministic:
        # Ops with no deterministic kernel warn instead of failing.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)


def load_and_build(cfg: RunConfig, accelerator, run_dir: Path, resume: dict | None) -> tuple[Trainer, Position]:
    """This rank's data, the :class:`Trainer`, and the position to start from (the checkpoint's on
    --resume); :class:`UsageError` for data, a model or a checkpoint that cannot be used."""
    data = load_data(cfg, accelerator)
    if len(data.train) == 0:
        raise UsageError(f"data: {data.num_train} training samples give no full batch of data.batch_size on "
                         f"{accelerator.num_processes} rank(s)")
    t = build(cfg, accelerator, data)
    if resume is None:
        return t, Position()
    try:
        return t, restore(t, resume)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise UsageError(f"checkpoint {run_dir / 'last.pt'} does not fit this run: "
                         f"{detail[:400]}{' ...' if len(detail) > 400 else ''}") from None


def on_stop_signals() -> dict:
    """The first SIGINT/SIGTERM sets ``stop["signal"]``: the current optimizer step finishes (with
    several ranks: up to the next log point, where the ranks agree), ``last.pt`` is written and the
    run exits; a second signal aborts at once."""
    stop = {"signal": 0}

    def on_signal(signum, frame):
        if stop["signal"]:  # second signal: give up at once
            raise KeyboardInterrupt
        stop["signal"] = signum
        print(f"\n{signal.Signals(signum).name}: finishing the current step, then saving last.pt "
              "(send again to abort)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


def open_run_folder(t: Trainer, run_dir: Path, pos: Position, *, fresh: bool) -> None:
    """Created only now (a run that fails to start leaves nothing) by the main process, which clears
    it for a fresh run (``train.overwrite``: what the manifest lists), writes ``config.yaml`` and on
    --resume keeps only the ``metrics.jsonl`` rows the checkpoint has seen; the other ranks wait."""
    main_proc = t.accelerator.is_main_process
    if main_proc:
        run_folder.prepare(run_dir, fresh=fresh)
    t.accelerator.wait_for_everyone()
    if main_proc:
        run_folder.write(run_dir / "config.yaml", to_yaml(t.cfg).encode())
        metrics_path = run_dir / "metrics.jsonl"
        if metrics_path.exists():  # keep only rows the checkpoint has seen (a crash may have left more)
            rows = [line for line in metrics_path.read_text().splitlines() if line.strip()]
            rows = [r for r in rows if json.loads(r)["epoch"] <= pos.epoch]
            run_folder.write(metrics_path, "".join(r + "\n" for r in rows).encode())


def epoch_row(t: Trainer, epoch: int, result: EpochResult, test: dict | None, best: float) -> dict:
    """The ``metrics.jsonl`` row of epoch ``epoch`` (1-based); ``test``: the evaluation, if one ran."""
    loss_sum, correct, seen = result.sums
    widths = t.widths()
    return {
        "epoch": epoch, "step": t.global_step, "train_loss": loss_sum / seen, "train_acc": 100.0 * correct / seen,
        "test_loss": test["loss"] if test else None, "test_acc": test["top1"] if test else None,
        "test_top5": test["top5"] if test else None, "best_test_acc": best if best >= 0 else None,
        "lr": mean_epoch_lr(t.scheduler, result.first_step, t.steps_per_epoch), "p": result.p, "width": widths,
        "firing_rate": test["firing_rate"] if test else {},
        "samples_per_s": result.samples_run * t.accelerator.num_processes / result.time_s,
        "epoch_time_s": result.time_s, "peak_mem_mb": peak_memory_mb(t.accelerator.device),
    }


def fit(t: Trainer, run_dir: Path, pos: Position, stop: dict, log: EpochLogger,
        debug: RankDebug | None) -> tuple[int, Position]:
    """Epochs from ``pos`` until ``optim.epochs`` (or ``train.stop_after_epochs``, ``train.max_steps``,
    a signal): train, evaluate the pure SNN, log, checkpoint. Returns the exit code (``EXIT_OK`` or
    ``EXIT_NONFINITE``) and the position reached (``batch`` > 0: stopped inside an epoch)."""
    from accelerate.utils import DistributedType

    cfg, o = t.cfg, t.cfg.optim
    sync_buffers_of = t.core if t.accelerator.distributed_type == DistributedType.FSDP else None
    last_epoch = o.epochs if cfg.train.stop_after_epochs is None else min(o.epochs, cfg.train.stop_after_epochs)
    epoch, batch, best, best_epoch, partial = pos.epoch, pos.batch, pos.best, pos.best_epoch, pos.partial
    while epoch < last_epoch:
        result = train_epoch(t, epoch, batch, partial, stop, log.progress, log.on_log, debug)
        partial = None
        if result.nonfinite:
            last = run_dir / "last.pt"
            kept = (f"The last good checkpoint is kept: {last}" if last.is_file()
                    else "No checkpoint was written yet (none before the first epoch ends).")
            code = fail(f"non-finite training loss in epoch {epoch + 1} (by step {t.global_step}); stopping. {kept}",
                        EXIT_NONFINITE)  # every rank found it at the same log point: each says so
            return code, Position(epoch, batch, best, best_epoch)
        if result.stopped_at is not None:  # interrupted mid-epoch: save the position
            save_checkpoint(t, run_dir, ["last"], epoch=epoch, step_in_epoch=result.stopped_at, sums=result.sums,
                            best=best, best_epoch=best_epoch)
            return EXIT_OK, Position(epoch, result.stopped_at, best, best_epoch)
        test = None
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == o.epochs:  # the last epoch always evaluates
            test = evaluate(t.eval_model, t.data.test, t.eval_criterion, t.accelerator, t.fire,
                            channels_last=t.channels_last, sync_buffers_of=sync_buffers_of)
            if debug is not None:  # the ranks' eval shards must cover the test set once
                debug.evaluated(epoch + 1, test["samples_rank"])
        improved = test is not None and test["top1"] > best
        if improved:
            best, best_epoch = test["top1"], epoch + 1
        row = epoch_row(t, epoch + 1, result, test, best)
        t.noise.step()
        epoch, batch = epoch + 1, 0
        if debug is not None:
            debug.epoch_done(epoch)
        save_checkpoint(t, run_dir, ["last", "best"] if improved else ["last"], epoch=epoch, step_in_epoch=0,
                        sums=None, best=best, best_epoch=best_epoch)
        log.epoch(row)
        if stop["signal"]:
            break
    return EXIT_OK, Position(epoch, 0, best, best_epoch)


def main(argv: list[str] | None = None) -> int:
    """The trainer's command line (see the module docstring); returns the exit code."""
    t_start = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(help_text())
        return EXIT_OK
    try:  # the config, the run folder and the launch are checked before anything is written
        cfg, run_dir, resume = parse_command_line(argv)
        accelerator = make_accelerator(cfg, run_dir)
    except RunComplete as e:
        if _is_main_launch_process():
            print(e, flush=True)
        return EXIT_OK
    except (ConfigError, UsageError, ckpt_io.CheckpointError) as e:
        return fail(str(e), EXIT_USAGE)
    seed_everything(cfg)
    try:
        t, pos = load_and_build(cfg, accelerator, run_dir, resume)
    except UsageError as e:
        return fail(str(e), EXIT_USAGE)
    fresh = resume is None
    del resume  # free the CPU copy of the weights
    stop = on_stop_signals()
    open_run_folder(t, run_dir, pos, fresh=fresh)
    log = EpochLogger(t, run_dir, {k.replace(".", "/"): v for k, v in flat_scalars(to_dict(cfg)).items()})
    log.header(pos)
    debug = RankDebug(t, run_dir) if cfg.train.debug_ranks else None
    exit_code, pos = fit(t, run_dir, pos, stop, log, debug)
    log.close()
    accelerator.end_training()
    if exit_code != EXIT_OK:
        return exit_code
    if stop["signal"] > 0:
        if accelerator.is_main_process:
            print(f"stopped by {signal.Signals(stop['signal']).name}; resume with --resume {run_dir}",
                  file=sys.stderr, flush=True)
        return 128 + stop["signal"]
    if accelerator.is_main_process and (pos.batch or pos.epoch < cfg.optim.epochs):
        where = (f"in epoch {pos.epoch + 1} after batch {pos.batch}/{len(t.data.train)}" if pos.batch
                 else f"after epoch {pos.epoch}")
        print(f"stopped {where} (step {t.global_step}) as asked; resume with --resume {run_dir}", flush=True)
    log.done(pos.best, pos.best_epoch, t_start)
    return EXIT_OK


if __name__ == "__main__":
    exit_process(main())
