"""The kernels a neuron op launches at a given shape, and the neuron ops of one training step of each recipe.

A neuron op (a LIF, a fused batch norm + LIF, a recurrent LIF; forward or backward) is a short list
of :class:`KernelLaunch`: the specialisation (``perf/aot.py``), its grid and its scalar arguments,
computed the way the op's launcher computes them (``asgl.kernels.lif._launch_config``,
``asgl.kernels.bn_lif._tiles``, ...), so the static model (``perf/static_model.py``) runs each
kernel's SASS with the arguments a real launch passes. :func:`recipe_ops` builds a recipe's network
(``asgl.create_model`` through the trainer's ``build_model``), runs one training forward at batch 1
on the CPU (reference backend) with a hook on every neuron module, and turns each call into its
forward and backward ops at the recipe's batch: the shapes come from the network, not from a list.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from pathlib import Path

from perf.aot import (
    RLIF_H, KernelSpec, bn_lif_apply_spec, bn_lif_bwd_finalize_spec, bn_lif_bwd_spec, bn_lif_coef_spec, bn_lif_fwd_spec,
    bn_lif_stats_spec, lif_bwd_spec, lif_config, lif_finalize_spec, lif_fwd_spec, rlif_bwd_spec, rlif_fwd_spec,
)

ROOT = Path(__file__).resolve().parents[1]
# first kernel parameter in the constant bank (cuobjdump of any sm_90 / sm_80 kernel: c[0x0][0x210])
PARAM_BASE = {90: 0x210, 80: 0x160}
# the recipes of the shape table: every config but the CPU quickstart, and ResNet-19 (the paper's
# other CIFAR network; no config of its own) on the CIFAR-10 recipe
RECIPES = tuple((p.name, {}) for p in sorted((ROOT / "configs").glob("*.yaml")) if p.name != "quickstart.yaml") + (
    ("cifar10_resnet18_t4.yaml", {"model.name": "resnet19"}),)


@dataclasses.dataclass(frozen=True)
class KernelLaunch:
    spec: KernelSpec
    grid: tuple  # programs along axis 0 and 1
    args: tuple  # (name, value) of the scalar arguments
    kind: str  # "elementwise" (a [T, N] pass) or "reduce" (the [C] or scalar kernels)

    @property
    def programs(self) -> int:
        return math.prod(self.grid)


def _launch(spec: KernelSpec, grid: tuple, args: tuple, kind: str) -> KernelLaunch:
    return KernelLaunch(jit_view(spec, dict(args)), grid, args, kind)


def jit_view(spec: KernelSpec, args: dict) -> KernelSpec:
    """``spec`` as Triton's JIT specialises it for these argument values: an integer argument equal
    to 1 becomes a constexpr (it leaves the parameter list), one divisible by 16 is marked so (others
    are not), except the arguments the kernel lists in ``do_not_specialize``."""
    import importlib

    module, attr = spec.kernel.split(":")
    fn = getattr(importlib.import_module(module), attr)
    frozen = {p.name for p in fn.params if p.do_not_specialize}
    signature, constexprs, divisible = dict(spec.signature), dict(spec.constexprs), set(spec.divisible)
    extra = []
    for name, ty in spec.signature.items():
        if ty not in ("i32", "i64") or name not in args:
            continue
        value = int(args[name])
        if name in frozen:
            divisible.discard(name)
        elif value == 1:
            signature[name], constexprs[name] = "constexpr", 1
            divisible.discard(name)
            extra.append(f"{name}=1")
        elif value % 16 == 0:
            divisible.add(name)
        elif name in divisible:
            divisible.discard(name)
            extra.append(f"{name}%16!=0")
    if (signature, constexprs, divisible) == (spec.signature, spec.constexprs, set(spec.divisible)):
        return spec
    order = [k for k in spec.signature if k in divisible]
    label = spec.label + "".join(f" {e}" for e in extra)
    return dataclasses.replace(spec, signature=signature, constexprs=constexprs, divisible=tuple(order), label=label)


# pointer arguments that address a per-channel or scalar table (at most a few KB: the neuron's
# parameters, batch norm's coefficients): every program re-reads them from L2, not from DRAM
TABLE_POINTERS = frozenset(("decay_logit_ptr", "width_ptr", "theta_ptr", "seed_ptr", "coef_ptr", "k_ptr",
                            "weight_ptr", "bias_ptr", "mean_ptr", "var_ptr", "run_mean_ptr", "run_var_ptr"))


def param_offsets(spec: KernelSpec) -> dict:
    """Kernel parameter name -> ``(byte offset in the constant bank, size)``: the parameters in
    signature order (constexprs are not parameters), pointers 8 bytes, 32-bit scalars 4, 64-bit 8,
    each at its natural alignment, from ``PARAM_BASE``."""
    out, off = {}, PARAM_BASE[spec.arch]
    for name, ty in spec.signature.items():
        if ty == "constexpr":
            continue
        size = 8 if ty.startswith("*") or ty in ("i64", "u64", "fp64") else 4
        off = -(-off // size) * size
        out[name] = (off, size)
        off += size
    return out


def table_offsets(spec: KernelSpec) -> frozenset:
    """Constant-bank offsets of the :data:`TABLE_POINTERS` arguments of ``spec``."""
    return frozenset(off for name, (off, _) in param_offsets(spec).items() if name in TABLE_POINTERS)


def pointer_offsets(spec: KernelSpec) -> frozenset:
    return frozenset(off for name, (off, _) in param_offsets(spec).items() if spec.signature[name].startswith("*"))


def kernel_params(launch: KernelLaunch) -> dict:
    """The constant bank a launch sees: byte offset -> 32-bit word. Block and grid sizes at 0x0 and
    0xc, then the kernel's parameters in signature order (constexprs are not parameters), pointers 8
    bytes, 32-bit scalars 4, each at its natural alignment. Pointers get distinct 256-byte-aligned
    fake addresses; they only feed address arithmetic."""
    s = launch.spec
    const = {0x0: 32 * s.num_warps, 0x4: 1, 0x8: 1, 0xC: launch.grid[0], 0x10: launch.grid[1], 0x14: 1}
    args = dict(launch.args)
    k = 0
    for name, (off, size) in param_offsets(s).items():
        ty = s.signature[name]
        if ty.startswith("*"):
            value = 0x7F00_0000_0000 + (k << 32)
            k += 1
        elif ty.startswith("fp"):
            value = struct.unpack("<I", struct.pack("<f", float(args.get(name, 0.0))))[0]
        else:
            value = int(args.get(name, 0))
        const[off] = value & 0xFFFFFFFF
        if size == 8:
            const[off + 4] = value >> 32 & 0xFFFFFFFF
    return const


def _noise(p: float) -> int:
    return 0 if p == 0 else (1 if p == 1 else 2)


def _p16(p: float) -> int:
    from asgl.kernels.common import p_threshold

    return p_threshold(p) if 0 < p < 1 else 0


def lif_op(pas: str, T: int, N: int, *, dtype="bf16", p=0.2, sigmoid=True, hard=True, channel=False, C=1, INNER=1,
           arch=90) -> list[KernelLaunch]:
    """The fused LIF (``asgl.kernels.lif``): forward = the kernel (storing u: training); backward =
    the kernel and the finalize (a channel width's torch reduction in between is not a Triton launch)."""
    from asgl.kernels.lif import _launch_config

    import torch

    block_n, _ = _launch_config(N, torch.device("cpu"))  # 132 SMs where no GPU is queried (H100/H200)
    flags = dict(NOISE=_noise(p), SIGMOID=sigmoid, HARD_RESET=hard, CHANNEL_WIDTH=channel)
    block = None if block_n == lif_config()[0] else block_n
    grid = (-(-N // block_n), 1)
    args = (("T", T), ("N", N), ("INNER", INNER), ("C", C), ("v_reset", 0.0), ("p16", _p16(p)))
    if pas == "fwd":
        return [_launch(lif_fwd_spec(dtype, arch, **flags, STORE_U=True, BLOCK_N=block), grid, args,
                             "elementwise")]
    return [_launch(lif_bwd_spec(dtype, arch, **flags, BLOCK_N=block), grid, args, "elementwise"),
            _launch(lif_finalize_spec(arch, SIGMOID=sigmoid, CHANNEL_WIDTH=channel), (1, 1),
                         (("NPROG", grid[0]), ("C", C)), "reduce")]


def bn_lif_op(pas: str, shape: tuple, *, dtype="bf16", p=0.2, sigmoid=True, hard=True, channel=False,
              residual=False, channels_last=True, arch=90) -> list[KernelLaunch]:
    """The fused batch norm + LIF (``asgl.kernels.bn_lif``) in training (batch statistics, running
    buffers updated) on ``x [T, B, C, ...]`` of ``shape``: forward = statistics, coefficients,
    neuron; backward = neuron backward, finalize, apply."""
    from asgl.kernels.bn_lif import BLOCK, RECOMPUTE_MAX_T, _coef_block, _tiles

    T, B, C, rest = shape[0], shape[1], shape[2], math.prod(shape[3:])
    if channels_last and len(shape) >= 4 or rest == 1:
        OUTER, INNER = B * rest, 1
    else:
        OUTER, INNER = B, rest
    layout = "channels_last" if INNER == 1 else "contiguous"
    flags = dict(NOISE=_noise(p), SIGMOID=sigmoid, HARD_RESET=hard, CHANNEL_WIDTH=channel, HAS_RESIDUAL=residual)
    geo = (("T", T), ("OUTER", OUTER), ("C", C), ("INNER", INNER))
    n = OUTER * C * INNER * T // C  # values per channel
    block_c = _coef_block(C)
    reduce_grid = (-(-C // block_c), 1)
    neuron = (("v_reset", 0.0), ("p16", _p16(p)))
    if pas == "fwd":
        tile, grid = _tiles(OUTER, C, INNER, BLOCK)
        return [
            _launch(bn_lif_stats_spec(dtype, arch, layout, tile=tile), grid, geo, "elementwise"),
            _launch(bn_lif_coef_spec(arch, BLOCK_C=block_c), reduce_grid,
                         (("TILES", grid[0]), ("C", C), ("inv_n", 1 / n), ("unbias", n / (n - 1)),
                          ("momentum", 0.1), ("eps", 1e-5), ("scale", 1.0)), "reduce"),
            _launch(bn_lif_fwd_spec(dtype, arch, layout, **flags, STORE_U=T > RECOMPUTE_MAX_T, tile=tile), grid,
                         geo + neuron + (("eps", 1e-5), ("scale", 1.0)), "elementwise"),
        ]
    recompute = T if T <= RECOMPUTE_MAX_T else 0
    spec = bn_lif_bwd_spec(dtype, arch, layout, **flags, RECOMPUTE_T=recompute)
    tile, grid = _tiles(OUTER, C, INNER, int(spec.elements_per_thread * 32 * spec.num_warps))
    spec = bn_lif_bwd_spec(dtype, arch, layout, **flags, RECOMPUTE_T=recompute, tile=tile)
    return [
        _launch(spec, grid, geo + neuron, "elementwise"),
        _launch(bn_lif_bwd_finalize_spec(arch, SIGMOID=sigmoid, CHANNEL_WIDTH=channel, BLOCK_C=block_c),
                     reduce_grid, (("TILES", grid[0]), ("SLOTS", grid[0] * grid[1]), ("C", C), ("inv_n", 1 / n),
                                   ("scale", 1.0)), "reduce"),
        _launch(bn_lif_apply_spec(dtype, arch), (-(-T * OUTER * C * INNER // BLOCK), 1),
                     (("TN", T * OUTER * C * INNER), ("C", C), ("INNER", INNER)), "elementwise"),
    ]


def rlif_op(pas: str, T: int, B: int, H: int, *, dtype="bf16", p=0.2, sigmoid=True, hard=True, channel=True,
            arch=90) -> list[KernelLaunch]:
    """The recurrent LIF (``asgl.kernels.rlif``): one kernel each way (the backward's recurrent-weight
    gradient and partial sums are torch ops, not modelled)."""
    from asgl.kernels.rlif import BLOCK_B

    flags = dict(NOISE=_noise(p), SIGMOID=sigmoid, HARD_RESET=hard, CHANNEL_WIDTH=channel)
    grid = (-(-B // BLOCK_B), 1)
    args = (("T", T), ("B", B), ("H", H), ("v_reset", 0.0), ("p16", _p16(p)))
    spec = rlif_fwd_spec(dtype, arch, **flags, STORE_U=True, H=H) if pas == "fwd" else \
        rlif_bwd_spec(dtype, arch, **flags, H=H)
    return [_launch(spec, grid, args, "elementwise")]


@dataclasses.dataclass
class Op:
    """One neuron op of a training step: ``launch`` names the module and the op."""

    recipe: str
    launch: str
    T: int
    N: int  # elements per time step
    kernels: list

    @property
    def pas(self) -> str:
        return self.launch.rsplit(".", 1)[-1]


def _input(cfg, batch: int):
    """``(example input at batch 1, num_classes, in_channels, channels_last)`` of a recipe's data set."""
    import torch

    from asgl.train.data import EVENT_DATASETS, IMAGE_DATASETS

    name, T = cfg.data.name, cfg.model.T
    if name in IMAGE_DATASETS:
        from asgl.train.data.images import IMAGE_SPECS

        spec = IMAGE_SPECS[name]
        cl = True if cfg.train.channels_last is None else bool(cfg.train.channels_last)  # on with CUDA
        return torch.zeros(1, spec.channels, spec.size, spec.size), spec.num_classes, spec.channels, cl
    if name in EVENT_DATASETS:
        from asgl.train.data.events import GESTURE_CLASSES

        res = cfg.data.resolution or 128
        classes = 10 if name == "cifar10_dvs" else GESTURE_CLASSES
        return torch.zeros(1, T, 2, res, res), classes, 2, False
    if name == "shd":
        from asgl.train.data.shd import NUM_CLASSES, UNITS

        return torch.zeros(1, T, UNITS), NUM_CLASSES, UNITS, False
    from asgl.train.data.audio import NUM_CLASSES

    return torch.zeros(1, T, 2 * cfg.data.n_mels), NUM_CLASSES, 2 * cfg.data.n_mels, False


def recipe_ops(config: str, overrides: dict | None = None, batch: int | None = None, arch: int = 90) -> list[Op]:
    """The forward and backward ops of every neuron of one training step of ``configs/<config>``
    (``overrides``: ``{"section.key": value}``) at ``batch`` (default: the config's)."""
    import torch

    import asgl
    from asgl.train.config import build_config
    from asgl.train.run import build_model

    cfg = build_config(ROOT / "configs" / config, dict(overrides or {}, **{"model.backend": "torch"}))
    B = batch or cfg.data.batch_size
    x, classes, in_channels, channels_last = _input(cfg, B)
    torch.manual_seed(0)
    model = build_model(cfg, classes, in_channels).train()
    dtype = {"bf16": "bf16", "fp16": "fp16"}.get(cfg.train.mixed_precision, "fp32")
    recipe = config + "".join(f" {k}={v}" for k, v in (overrides or {}).items())
    names = {m: n for n, m in model.named_modules()}
    fused = {m.lif for m in model.modules() if isinstance(m, asgl.BatchNormLIF) and m.fused
             and m.bn.statistics == "folded"}
    ops: list[Op] = []

    def neuron_args(lif):
        return dict(dtype=dtype, p=lif.p, sigmoid=lif.surrogate == "sigmoid", hard=lif.reset == "hard",
                    channel=lif.width_granularity == "channel", arch=arch)

    def record(module, inputs, kwargs):
        x_seq = inputs[0] if inputs else kwargs["x_seq"]
        shape = (x_seq.shape[0], B) + tuple(x_seq.shape[2:])
        name = names[module]
        N = math.prod(shape[1:])
        if isinstance(module, asgl.BatchNormLIF):
            if module.lif not in fused:
                return
            residual = (inputs[1] if len(inputs) > 1 else kwargs.get("residual")) is not None
            for pas in ("fwd", "bwd"):
                ops.append(Op(recipe, f"{name} bn_lif.{pas}", shape[0], N, bn_lif_op(
                    pas, shape, residual=residual, channels_last=channels_last, **neuron_args(module.lif))))
        elif isinstance(module, asgl.RecurrentLIF):
            for pas in ("fwd", "bwd"):
                ops.append(Op(recipe, f"{name} rlif.{pas}", shape[0], B * module.hidden, rlif_op(
                    pas, shape[0], B, module.hidden, **neuron_args(module))))
        elif isinstance(module, asgl.LIF) and module not in fused:
            C = shape[2] if len(shape) > 2 else 1
            INNER = math.prod(shape[3:]) if module.width_granularity == "channel" else 1
            for pas in ("fwd", "bwd"):
                ops.append(Op(recipe, f"{name} lif.{pas}", shape[0], N, lif_op(
                    pas, shape[0], N, C=C, INNER=INNER, **neuron_args(module))))

    hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in model.modules()
             if isinstance(m, (asgl.BatchNormLIF, asgl.LIF))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    # the step runs the backward ops in reverse
    return [o for o in ops if o.pas == "fwd"] + [o for o in reversed(ops) if o.pas == "bwd"]


# the geometry of a bare specialisation's launch at (T, N), for the per-specialisation table: a
# layer of 64 channels (channels-last: N/64 rows; contiguous: 32x32 maps), the SHD batch for the
# recurrent kernels
TABLE_CHANNELS = 64
TABLE_INNER = 1024
TABLE_RLIF_BATCH = 256


def spec_launch(spec: KernelSpec, T: int, N: int) -> KernelLaunch:
    """One launch of ``spec`` at ``T`` steps of ``N`` elements, with the geometry above."""
    name = spec.kernel.split(":")[1]
    c = spec.constexprs
    p16 = _p16(0.2) if c.get("NOISE") == 2 else 0
    if name in ("_lif_fwd_kernel", "_lif_bwd_kernel"):
        return _launch(spec, (-(-N // c["BLOCK_N"]), 1), (("T", T), ("N", N), ("INNER", 1), ("C", 1),
                                                               ("v_reset", 0.0), ("p16", p16)), "elementwise")
    if name == "_finalize_kernel":
        return _launch(spec, (1, 1), (("NPROG", -(-N // lif_config()[0])), ("C", 1)), "reduce")
    if name in ("_rlif_fwd_kernel", "_rlif_bwd_kernel"):
        from asgl.kernels.rlif import BLOCK_B

        B = TABLE_RLIF_BATCH
        return _launch(spec, (-(-B // BLOCK_B), 1), (("T", T), ("B", B), ("H", RLIF_H),
                                                          ("v_reset", 0.0), ("p16", p16)), "elementwise")
    C = TABLE_CHANNELS
    INNER = 1 if c.get("INNER") == 1 or spec.signature.get("INNER") == "constexpr" else TABLE_INNER
    OUTER = max(1, N // (C * INNER))
    if name == "_bn_grad_apply_kernel":
        TN = T * OUTER * C * INNER
        return _launch(spec, (-(-TN // c["BLOCK"]), 1), (("TN", TN), ("C", C), ("INNER", INNER)),
                            "elementwise")
    tiles = -(-OUTER * INNER // 1024)  # the statistics' 1024-element tiles
    if name in ("_bn_coef_kernel", "_bn_bwd_finalize_kernel"):
        n = T * OUTER * INNER
        return _launch(spec, (-(-C // c["BLOCK_C"]), 1), (
            ("TILES", tiles), ("SLOTS", tiles), ("C", C), ("inv_n", 1 / n), ("unbias", n / (n - 1)),
            ("momentum", 0.1), ("eps", 1e-5), ("scale", 1.0)), "reduce")
    bo, bc, bi = c["BLOCK_O"], c["BLOCK_C"], c["BLOCK_I"]
    grid = (-(-OUTER // bo) * -(-INNER // bi), -(-C // bc))
    return _launch(spec, grid, (("T", T), ("OUTER", OUTER), ("C", C), ("INNER", INNER), ("v_reset", 0.0),
                                     ("p16", p16), ("eps", 1e-5), ("scale", 1.0)), "elementwise")


def spec_runs_at(spec: KernelSpec, T: int) -> bool:
    """Whether training or evaluation launches ``spec`` at ``T`` steps: the recomputing batch norm +
    LIF backward only at its own T (the launcher passes ``RECOMPUTE_T = T`` for T <= 8), the one
    reading u only above."""
    r = spec.constexprs.get("RECOMPUTE_T")
    if r is None:
        return True
    from asgl.kernels.bn_lif import RECOMPUTE_MAX_T

    return r == T if r else T > RECOMPUTE_MAX_T
