"""The run configuration: nested dataclasses, YAML defaults, ``--a.b=value`` overrides, validation.

A run is described by one :class:`RunConfig`. Values come, in increasing priority, from the
dataclass defaults below, a YAML file (``--config X.yaml``) and command-line overrides
(``--model.T=4`` or ``--model.T 4``). Every value is coerced to the declared type of its field
(bool, int, float, str, ``X | None``, tuples/lists) and then checked for sense; any problem raises
:class:`ConfigError` with one message that names the key, before any work starts.

YAML includes: a file may start with ``base: other.yaml`` (a path relative to that file, or a list
of paths applied in order); the base is loaded first and the file's own keys are merged over it,
section by section. This is the only indirection; config text is never executed.

``noise``: ``p`` of every neuron starts at ``model.p`` and follows :class:`asgl.NoiseSchedule`
(``gamma`` applied after the epochs ``int(f · optim.epochs)`` for the fractions ``milestones``).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from asgl.functional import check_choice
from asgl.layers import BN_STATISTICS
from asgl.models import list_models
from asgl.neuron import check_lif_args
from asgl.train.data import IMAGE_DATASETS, DataConfig

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "cyclic_cosine", "none")
LOSSES = ("ce", "tet")
MIXED_PRECISION = ("no", "bf16", "fp16")
COMPILE_MODES = ("none", "default", "reduce-overhead")
CHECKPOINTS = ("none", "blocks")
# The names Accelerate's ``log_with`` accepts (train/run.py maps each to the package it needs).
TRACKERS = ("tensorboard", "wandb", "aim", "mlflow", "comet_ml", "clearml", "dvclive", "swanlab", "trackio")


class ConfigError(ValueError):
    """A bad configuration: unknown key, wrong type or impossible value. The message names the key."""


def take_flags(argv: list[str], flags: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """``({flag: value}, rest)``: each of ``flags`` given as ``--flag value`` or ``--flag=value`` taken
    out of ``argv`` (the last one wins), everything else left in order."""
    values, rest = {}, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag = next((f for f in flags if arg == f or arg.startswith(f + "=")), None)
        if flag is None:
            rest.append(arg)
        elif "=" in arg:
            values[flag] = arg.split("=", 1)[1]
        elif i + 1 < len(argv):
            i += 1
            values[flag] = argv[i]
        else:
            raise ConfigError(f"{flag} needs a value")
        i += 1
    return values, rest


@dataclass
class ModelConfig:
    """The network and its neurons (``asgl.LIF`` keyword arguments, ASGL.md §1–2)."""

    name: str = "digits_cnn"        # network from asgl.create_model (see asgl.list_models())
    T: int = 4                      # time steps
    surrogate: str = "sigmoid"      # relaxation H_α: sigmoid | rectangle
    width: float = 1.0              # initial relaxation width α (larger = smoother)
    learn_width: bool = True        # ASGL: learnable α; SG baseline: false
    width_granularity: str = "layer"  # layer | channel
    decay: float = 0.5              # initial leak λ in (0, 1)
    learn_decay: bool = True        # learnable leak λ (stored as a logit)
    thresh: float = 1.0             # threshold θ
    learn_thresh: bool = False      # learnable threshold θ (kept > 0 after each step)
    reset: str = "hard"             # hard | soft
    p: float = 0.2                  # initial analog-mode probability p0 (0 = plain SG)
    min_slope: float | None = 0.01  # floor of a learnable sigmoid slope k = 1/α; null = unbounded (authors')
    bn_statistics: str = "folded"   # BN batch statistics: folded (over T·B, tdBN) | per_step (authors' DVS BN)
    backend: str = "auto"           # auto | torch | triton
    remat_spikes: str | bool = "auto"  # auto | true | false: spikes recomputed in the backward (auto: fused units)


@dataclass
class OptimConfig:
    """Weights: SGD or Adam with an LR schedule; neuron parameters: their own Adam (ASGL.md §2)."""

    name: str = "sgd"               # sgd | adam
    lr: float = 0.1                 # base LR of the weights (the schedule scales it)
    momentum: float = 0.9           # SGD only
    weight_decay: float = 5e-4      # conv/linear weights only
    neuron_lr: float = 3e-4         # Adam on decay/width/threshold, no decay, no schedule
    epochs: int = 100               # epochs the schedules span
    schedule: str = "cosine"        # cosine | cyclic_cosine | none, stepped every optimizer step
    cycle_epochs: int = 0           # cyclic_cosine: length of one cosine cycle in epochs
    warmup_epochs: float = 0.0      # linear warmup from 0 (fractions of an epoch allowed)
    clip_grad_norm: float | None = None  # clip the global gradient norm (all parameters) to this; null: off


@dataclass
class NoiseConfig:
    """The noise schedule of ASGL.md §3 (``p`` starts at ``model.p``)."""

    gamma: float = 1.0              # < 1 anneals toward the SNN, > 1 raises the noise
    milestones: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 0.95)  # fractions of optim.epochs


@dataclass
class LossConfig:
    """The training loss on the per-step logits ``[T, B, K]`` (ASGL.md §4)."""

    name: str = "ce"                # ce (on the T-mean) | tet
    tet_lambda: float = 1e-3        # tet: weight λ of the pull of every logit toward 1
    label_smoothing: float = 0.0    # ε in [0, 1): target 1-ε+ε/K on the label, ε/K elsewhere (ce and tet)


@dataclass
class TrainConfig:
    """The run: precision, logging, checkpoints, stopping."""

    seed: int = 0                   # initial weights, data order, augmentation and noise streams
    mixed_precision: str = "no"     # no | bf16 | fp16 (fp16 on a GPU only)
    grad_accum: int = 1             # micro-batches per optimizer step
    compile: str | bool = "none"    # none | default (torch.compile) | reduce-overhead (+ CUDA graphs); true = default
    log_every: int = 50             # optimizer steps between log points: progress, tracker scalars (host syncs)
    eval_every: int = 1             # epochs between evaluations (the last epoch always evaluates)
    out_dir: str = "runs"           # parent folder of the run folder
    run_name: str = ""              # default: the config file's name
    overwrite: bool = False         # allow writing into an existing non-empty run folder
    trackers: tuple[str, ...] = ()  # Accelerate trackers, e.g. [tensorboard, wandb]; local ones log in RUN_DIR/logs
    channels_last: bool | None = None  # NHWC memory for image networks; null: on with CUDA, off on a CPU
    max_steps: int | None = None    # stop after this many optimizer steps in all (saves `last`)
    stop_after_epochs: int | None = None  # stop once this many epochs are done; schedules still span optim.epochs
    debug_ranks: bool = False       # write RUN_DIR/ranks/rank{r}.jsonl: sample indices, eval counts, hashes
    deterministic: bool = False     # GPU: deterministic cuDNN/cuBLAS algorithms (bit-reproducible, slower)
    checkpoint: str = "none"        # none | blocks: residual blocks (VGG: units between pools) rerun in the backward


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ------------------------------------------------------------------------------------ coercion

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str) -> Any:
    """``value`` (from YAML, or a string from the command line) as an instance of type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("[") and text.endswith("]") or text.startswith("(") and text.endswith(")"):
                text = text[1:-1]
            items = [s.strip() for s in text.split(",") if s.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_tp = args[0] if args else str
        out = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(items)]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" as a string; accept any float literal here.
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _fields(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def all_keys(cls=RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the config, e.g. ``model.T``."""
    keys = []
    for name, tp in _fields(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def describe(cls=RunConfig, prefix: str = "") -> dict[str, str]:
    """``{dotted key: one-line description}``, read from the comment after each field in the source
    (the one place a key is explained), for ``--help``. A comment naming a tuple of names defined
    beside the class (``one of DATASETS``) shows its members."""
    out = {}
    for name, tp in _fields(cls).items():
        if dataclasses.is_dataclass(tp):
            out.update(describe(tp, f"{prefix}{name}."))
    module = vars(inspect.getmodule(cls))

    def expand(match: re.Match) -> str:
        value = module.get(match.group(0))
        is_names = isinstance(value, tuple) and value and all(isinstance(v, str) for v in value)
        return " | ".join(value) if is_names else match.group(0)

    comments = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
        if match:
            comments[match.group(1)] = re.sub(r"\b[A-Z][A-Z_]+\b", expand, match.group(2).strip())
    for name, tp in _fields(cls).items():
        if not dataclasses.is_dataclass(tp):
            out[f"{prefix}{name}"] = comments.get(name, "")
    return {key: out[key] for key in all_keys(cls, prefix)}


def _unknown(key: str) -> ConfigError:
    keys = all_keys()
    section, _, last = key.rpartition(".")
    siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == section]
    if siblings:  # a known section: compare within it, else list it
        close = difflib.get_close_matches(last, siblings, n=1, cutoff=0.6)
        if close:
            return ConfigError(f"unknown config key {key!r} (did you mean '{section}.{close[0]}'?)")
        return ConfigError(f"unknown config key {key!r}; {section} has: {', '.join(siblings)}")
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _set(cfg, key: str, value: Any) -> None:
    """Set the dotted ``key`` of ``cfg`` to ``value`` coerced to the field's type."""
    parts = key.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        fields = _fields(type(obj)) if dataclasses.is_dataclass(obj) else {}
        if part not in fields:
            raise _unknown(key)
        tp = fields[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                raise ConfigError(f"{key} is a section; set its keys, e.g. {key}.{next(iter(_fields(tp)))}")
            setattr(obj, part, _coerce(value, tp, key))
        else:
            if not dataclasses.is_dataclass(tp):
                raise _unknown(key)
            obj = getattr(obj, part)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"T": 4}}`` -> ``{"model.T": 4}``; list values stay whole."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'}: expected a mapping of keys, got {tree!r}")
    flat = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The flat ``{dotted key: value}`` of a YAML config, with its ``base:`` files merged under it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"config include cycle: {' -> '.join(map(str, _seen + (path,)))}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    bases = tree.pop("base", None)
    flat: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else (bases or []):
        flat.update(load_yaml(path.parent / base, _seen + (path.resolve(),)))
    flat.update(flatten(tree))
    return flat


def parse_overrides(args: list[str]) -> dict[str, str]:
    """``["--model.T=4", "--optim.lr", "0.05"]`` -> ``{"model.T": "4", "optim.lr": "0.05"}``."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected argument {arg!r}: overrides look like --section.key=value")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            i += 1
            value = args[i]
        else:
            raise ConfigError(f"--{key} needs a value: --{key}=VALUE or --{key} VALUE")
        out[key.replace("-", "_")] = value  # a key given twice: the last one counts, as in argparse
        i += 1
    return out


def build_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                 base: dict[str, Any] | None = None) -> RunConfig:
    """Defaults ← ``base`` (a flat or nested dict, e.g. a saved config) ← YAML ``path`` ← ``overrides``; validated."""
    cfg = RunConfig()
    values: dict[str, Any] = {}
    if base is not None:
        values.update(flatten(base))
    if path is not None:
        values.update(load_yaml(path))
    values.update(overrides or {})
    for key, value in values.items():
        _set(cfg, key, value)
    validate(cfg)
    return cfg


# ---------------------------------------------------------------------------------- validation

def _check(ok: bool, key: str, msg: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} {msg}, got {value!r}")


def _choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    try:
        check_choice(key, value, choices)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def validate(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` on the first impossible value."""
    m, o, n, lo, t = cfg.model, cfg.optim, cfg.noise, cfg.loss, cfg.train
    _choice(m.name, "model.name", tuple(list_models()))
    _check(m.T >= 1, "model.T", "must be >= 1", m.T)
    try:  # the neuron's own rules (asgl.LIF's arguments have the names of these keys)
        check_lif_args(decay=m.decay, thresh=m.thresh, reset=m.reset, surrogate=m.surrogate, width=m.width,
                       learn_width=m.learn_width, width_granularity=m.width_granularity, p=m.p,
                       min_slope=m.min_slope, backend=m.backend)
    except ValueError as e:
        raise ConfigError(f"model.{e}") from None
    _choice(m.bn_statistics, "model.bn_statistics", BN_STATISTICS)

    _choice(o.name, "optim.name", OPTIMIZERS)
    _check(_finite(o.lr) and o.lr > 0, "optim.lr", "must be > 0", o.lr)
    _check(_finite(o.momentum) and 0 <= o.momentum < 1, "optim.momentum", "must be in [0, 1)", o.momentum)
    _check(_finite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", "must be >= 0", o.weight_decay)
    _check(_finite(o.neuron_lr) and o.neuron_lr > 0, "optim.neuron_lr", "must be > 0", o.neuron_lr)
    _check(o.epochs >= 1, "optim.epochs", "must be >= 1", o.epochs)
    _choice(o.schedule, "optim.schedule", SCHEDULES)
    if o.schedule == "cyclic_cosine":
        _check(1 <= o.cycle_epochs <= o.epochs, "optim.cycle_epochs",
               "must be in [1, optim.epochs] for schedule=cyclic_cosine", o.cycle_epochs)
    _check(_finite(o.warmup_epochs) and 0 <= o.warmup_epochs < o.epochs, "optim.warmup_epochs",
           "must be in [0, optim.epochs)", o.warmup_epochs)
    if o.clip_grad_norm is not None:
        _check(_finite(o.clip_grad_norm) and o.clip_grad_norm > 0, "optim.clip_grad_norm", "must be > 0 (or null)",
               o.clip_grad_norm)

    _check(_finite(n.gamma) and n.gamma >= 0, "noise.gamma", "must be >= 0", n.gamma)
    for f in n.milestones:
        _check(0 <= f <= 1, "noise.milestones", "must be fractions of the run in [0, 1]", n.milestones)

    _choice(lo.name, "loss.name", LOSSES)
    _check(0 <= lo.tet_lambda <= 1, "loss.tet_lambda", "must be in [0, 1]", lo.tet_lambda)
    _check(_finite(lo.label_smoothing) and 0 <= lo.label_smoothing < 1, "loss.label_smoothing", "must be in [0, 1)",
           lo.label_smoothing)

    _check(0 <= t.seed < 2**31, "train.seed", "must be in [0, 2**31)", t.seed)
    _choice(t.mixed_precision, "train.mixed_precision", MIXED_PRECISION)
    if isinstance(t.compile, str) and t.compile.strip().lower() in _TRUE + _FALSE:
        t.compile = t.compile.strip().lower() in _TRUE
    if isinstance(t.compile, bool):  # the former on/off switch (configs and checkpoints written before)
        t.compile = "default" if t.compile else "none"
    _choice(t.compile, "train.compile", COMPILE_MODES)
    _choice(t.checkpoint, "train.checkpoint", CHECKPOINTS)
    if isinstance(m.remat_spikes, str) and m.remat_spikes.strip().lower() in _TRUE + _FALSE:
        m.remat_spikes = m.remat_spikes.strip().lower() in _TRUE
    if not isinstance(m.remat_spikes, bool):
        _choice(m.remat_spikes, "model.remat_spikes", ("auto", "true", "false"))
    if m.remat_spikes is True and m.backend == "torch":
        raise ConfigError("model.remat_spikes=true needs the fused units, but model.backend=torch runs the reference "
                          "neurons, which keep their own tensors: use model.remat_spikes=auto or false, or "
                          "model.backend=auto or triton")
    if m.remat_spikes is True and t.compile != "none":
        raise ConfigError(f"model.remat_spikes=true cannot be compiled (train.compile={t.compile}): it swaps saved "
                          "tensors for handles with eager autograd's saved-tensor hooks, and the compiled backward "
                          "keeps what its own partitioner picks; use model.remat_spikes=auto (off when compiled) or "
                          "train.compile=none")
    _check(t.grad_accum >= 1, "train.grad_accum", "must be >= 1", t.grad_accum)
    _check(t.log_every >= 1, "train.log_every", "must be >= 1", t.log_every)
    for name in t.trackers:
        _choice(name, "train.trackers", TRACKERS)
    _check(len(set(t.trackers)) == len(t.trackers), "train.trackers", "must not repeat a tracker", list(t.trackers))
    _check(t.eval_every >= 1, "train.eval_every", "must be >= 1", t.eval_every)
    _check(bool(t.out_dir), "train.out_dir", "must not be empty", t.out_dir)
    _check("/" not in t.run_name and t.run_name not in (".", ".."), "train.run_name",
           "must be a plain folder name", t.run_name)
    if t.max_steps is not None:
        _check(t.max_steps >= 1, "train.max_steps", "must be >= 1 (or none)", t.max_steps)
    if t.stop_after_epochs is not None:
        _check(t.stop_after_epochs >= 1, "train.stop_after_epochs", "must be >= 1 (or none)", t.stop_after_epochs)

    # The data section's rules live with it (DataConfig.__post_init__, ValueError naming the key).
    try:
        cfg.data.__post_init__()
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    # Event and sequence inputs carry their own time axis [B, frames, ...], which the network reads
    # step by step: it must be model.T long (images are repeated over T, so frames does not apply).
    d = cfg.data
    if d.name not in IMAGE_DATASETS and d.frames is not None and d.frames != m.T:
        raise ConfigError(f"data.frames ({d.frames}) must equal model.T ({m.T}) for {d.name} "
                          "(or be null to follow model.T)")


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """A nested plain dict (tuples as lists), for YAML and checkpoints."""

    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
