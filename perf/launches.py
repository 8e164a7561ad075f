"""The kernels a neuron op launches at a given shape, and the neuron ops of one training step of each recipe.

A neuron op (a LIF, a fused batch norm + LIF, a recurrent LIF; forward or backward) is the list of
:class:`KernelLaunch` its launcher issues: the specialisation, the grid and the scalar arguments.
They are *recorded* from the op's own launcher (``asgl.kernels.lif._launch_fwd`` and its siblings)
run on meta tensors while every ``@triton.jit`` kernel of ``asgl.kernels`` records its launch instead
of running (:func:`record`): the launch configuration, tiles and constexprs are whatever the launcher
picks, with no second copy of its rules here, and the specialisation is the JIT's view of the
arguments (:func:`spec_from_call`). :func:`recipe_ops` builds a recipe's network (``asgl.create_model``
through the trainer's ``build_model``), runs one training forward at batch 1 on the CPU (reference
backend) with a hook on every neuron module, and turns each call into its forward and backward ops
at the recipe's batch: the shapes come from the network, not from a list.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import struct
from pathlib import Path

from perf.aot import KernelSpec, lif_steps_per_iteration

ROOT = Path(__file__).resolve().parents[1]
# first kernel parameter in the constant bank (cuobjdump of any sm_90 / sm_80 kernel: c[0x0][0x210])
PARAM_BASE = {90: 0x210, 80: 0x160}
# the recipes of the shape table: every config but the CPU quickstart, and ResNet-19 (the paper's
# other CIFAR network; no config of its own) on the CIFAR-10 recipe
RECIPES = tuple((p.name, {}) for p in sorted((ROOT / "configs").glob("*.yaml")) if p.name != "quickstart.yaml") + (
    ("cifar10_resnet18_t4.yaml", {"model.name": "resnet19"}),)
# kernels without per-element work (the [C] and scalar reductions): no % of copy bandwidth
REDUCE_KERNELS = ("_finalize_kernel", "_bn_coef_kernel", "_bn_bwd_finalize_kernel", "_sum_tile_groups_kernel")
# pointer arguments that address a per-channel or scalar table (at most a few KB: the neuron's
# parameters, batch norm's coefficients): every program re-reads them from L2, not from DRAM
TABLE_POINTERS = frozenset(("decay_logit_ptr", "width_ptr", "theta_ptr", "seed_ptr", "coef_ptr", "k_ptr",
                            "weight_ptr", "bias_ptr", "mean_ptr", "var_ptr", "run_mean_ptr", "run_var_ptr"))
# the per-specialisation table's geometry at N elements per step: 64 channels of 32x32 maps, the
# SHD layer for the recurrent kernels
TABLE_CHANNELS, TABLE_SIDE, TABLE_RLIF_BATCH, TABLE_RLIF_H = 64, 32, 256, 240
_TORCH_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "i8", "int32": "i32",
                 "int64": "i64", "bool": "i1", "uint8": "u8"}


@dataclasses.dataclass(frozen=True)
class KernelLaunch:
    spec: KernelSpec
    grid: tuple  # programs along each grid axis (2 or 3)
    args: tuple  # (name, value) of the scalar arguments
    kind: str  # "elementwise" (a [T, N] pass) or "reduce" (the [C] or scalar kernels)

    @property
    def programs(self) -> int:
        return math.prod(self.grid)


# ---------------------------------------------------------------------------------------------
# Recording the launchers
# ---------------------------------------------------------------------------------------------


def _jit_kernels() -> list:
    """Every ``@triton.jit`` function of the kernel modules (compiled or, under ``TRITON_INTERPRET=1``,
    interpreted: both launch through ``run``)."""
    import importlib

    from triton.runtime.jit import KernelInterface

    found = {}
    for name in ("asgl.kernels.lif", "asgl.kernels.bn_lif", "asgl.kernels.rlif", "asgl.kernels.common"):
        for obj in vars(importlib.import_module(name)).values():
            if isinstance(obj, KernelInterface):
                found[id(obj)] = obj
    return list(found.values())


def _params(fn) -> list[tuple[str, bool, bool]]:
    """``(name, is constexpr, do_not_specialize)`` of each argument of a ``@triton.jit`` function."""
    import inspect

    frozen = getattr(fn, "do_not_specialize", None)
    if frozen is None:  # an interpreted function keeps the decorator's arguments
        frozen = getattr(fn, "kwargs", {}).get("do_not_specialize") or []
    out = []
    for i, p in enumerate(inspect.signature(fn.fn).parameters.values()):
        constexpr = "constexpr" in str(p.annotation)
        out.append((p.name, constexpr, p.name in frozen or i in frozen))
    return out


def record(call, arch: int = 90) -> list[KernelLaunch]:
    """The launches ``call()`` makes, in order, without running any: each kernel's ``run`` (what
    ``kernel[grid](...)`` calls) is replaced by a recorder for the duration of the call."""
    calls = []
    kernels = _jit_kernels()

    def recorder(fn):
        def run(*args, grid, warmup=False, **kwargs):
            if args:
                raise TypeError(f"{fn.__name__}: launched with positional arguments (the launchers pass keywords)")
            calls.append((fn, grid(kwargs) if callable(grid) else grid, kwargs))
        return run

    for fn in kernels:
        fn.run = recorder(fn)
    try:
        call()
    finally:
        for fn in kernels:
            del fn.run
    return [launch_from_call(fn, grid, kwargs, arch) for fn, grid, kwargs in calls]


def _loop_shape(name: str, c: dict, threads: int) -> tuple:
    """``(steps_per_iteration, elements_per_thread, inner_trips)`` of a kernel's time loop for the
    steady-state count (:func:`perf.static_model.loop_cost`; 0 steps: no time loop, -T: T steps
    unrolled without a loop), as the kernels are written."""
    static = c.get("STATIC_T", 0)
    if name in ("_lif_fwd_kernel", "_lif_bwd_kernel"):
        return lif_steps_per_iteration(static, backward=name == "_lif_bwd_kernel"), c["BLOCK_N"] / threads, 1
    if name in ("_rlif_fwd_kernel", "_rlif_bwd_kernel"):
        return 1, c["BLOCK_B"] * TABLE_RLIF_H / threads, -(-TABLE_RLIF_H // c["BLOCK_K"])
    if name in ("_bn_lif_fwd_kernel", "_bn_lif_bwd_kernel"):
        unrolled = static or c.get("RECOMPUTE_T", 0)
        # the forward's loop (T > 8) runs 2 steps per iteration since it has an unrolled STATIC_T
        # path (asgl.kernels.bn_lif), one before; the backward reading u runs one
        looped = 2 if name == "_bn_lif_fwd_kernel" and "STATIC_T" in c else 1
        return (-unrolled if unrolled else looped), c["BLOCK_O"] * c["BLOCK_C"] * c["BLOCK_I"] / threads, 1
    return 0, 1.0, 1


def spec_from_call(fn, kwargs: dict, arch: int = 90) -> KernelSpec:
    """The :class:`KernelSpec` the JIT compiles for this launch: constexprs by value; a tensor as a
    pointer to its dtype, 16-byte aligned when its offset is (torch allocations are); an integer
    equal to 1 as a constant and one divisible by 16 marked so, unless the kernel lists it in
    ``do_not_specialize``; a float as fp32. ``num_warps`` from the launch."""
    import torch

    signature, constexprs, divisible = {}, {}, []
    dtype = ""
    for name, is_constexpr, frozen in _params(fn):
        if name not in kwargs:
            raise TypeError(f"{fn.__name__}: argument {name} missing from the launch")
        v = kwargs[name]
        if is_constexpr or isinstance(v, bool) or v is None:
            signature[name], constexprs[name] = "constexpr", v
        elif isinstance(v, torch.Tensor):
            ty = _TORCH_DTYPES[str(v.dtype).replace("torch.", "")]
            signature[name] = f"*{ty}"
            if not dtype and ty in ("fp32", "fp16", "bf16") and name not in TABLE_POINTERS and "partial" not in name:
                dtype = ty
            if (v.storage_offset() * v.element_size()) % 16 == 0:
                divisible.append(name)
        elif isinstance(v, int):
            if v == 1 and not frozen:
                signature[name], constexprs[name] = "constexpr", 1
            else:
                signature[name] = "i32" if -2**31 <= v < 2**31 else "i64"
                if v % 16 == 0 and not frozen:
                    divisible.append(name)
        else:
            signature[name] = "fp32"
    num_warps = int(kwargs.get("num_warps", 4))
    flags = " ".join(f"{k}={int(v)}" for k, v in constexprs.items()
                     if not k.startswith("BLOCK") and k != "VEC" and isinstance(v, (bool, int)))
    name = fn.__name__
    steps, per_thread, trips = _loop_shape(name, constexprs, 32 * num_warps)
    label = f"{name.strip('_').replace('_kernel', '')} sm_{arch} {dtype or 'fp32'} {flags}".rstrip()
    return KernelSpec(f"{fn.fn.__module__}:{name}", signature, constexprs, tuple(divisible), arch, num_warps, label,
                      dtype or "fp32", steps, per_thread, trips)


def launch_from_call(fn, grid, kwargs: dict, arch: int = 90) -> KernelLaunch:
    import torch

    spec = spec_from_call(fn, kwargs, arch)
    grid = tuple(int(g) for g in grid) + (1,) * (2 - len(grid))
    args = tuple((k, v) for k, v in kwargs.items()
                 if spec.signature.get(k) in ("i32", "i64", "fp32") and not isinstance(v, torch.Tensor))
    kind = "reduce" if fn.__name__ in REDUCE_KERNELS else "elementwise"
    return KernelLaunch(spec, grid[:2], args, kind)


# ---------------------------------------------------------------------------------------------
# The constant bank of a launch
# ---------------------------------------------------------------------------------------------


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
    0xc, then the kernel's parameters (:func:`param_offsets`). Pointers get distinct 4 GB-apart fake
    addresses; they only feed address arithmetic."""
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


# ---------------------------------------------------------------------------------------------
# The ops: each launcher run on meta tensors
# ---------------------------------------------------------------------------------------------

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _meta(shape, dtype: str, channels_last: bool = False):
    """A meta tensor of ``shape`` ``[T, B, C, ...]``; ``channels_last``: C fastest in memory."""
    import torch

    dt = getattr(torch, _DTYPES[dtype])
    if channels_last and len(shape) >= 4:
        T, B, C, *rest = shape
        return torch.empty((T, B, *rest, C), dtype=dt, device="meta").permute(0, 1, len(shape) - 1,
                                                                                *range(2, len(shape) - 1))
    return torch.empty(shape, dtype=dt, device="meta")


def _neuron(C: int, channel: bool):
    import torch

    f32 = dict(dtype=torch.float32, device="meta")
    return (torch.empty((), **f32), torch.empty((C,) if channel else (), **f32), torch.empty((), **f32),
            torch.empty(1, dtype=torch.int64, device="meta"))


def _flags(p, sigmoid, hard):
    from asgl.kernels.common import NOISE_ALL, NOISE_DRAW, NOISE_NONE

    noise = NOISE_NONE if p == 0 else (NOISE_ALL if p == 1 else NOISE_DRAW)
    return dict(hard_reset=hard, v_reset=0.0, sigmoid=sigmoid, noise=noise, p=p)


def lif_op(pas: str, shape: tuple, *, dtype="bf16", p=0.2, sigmoid=True, hard=True, channel=False, store_u=True,
           arch=90) -> list[KernelLaunch]:
    """The fused LIF (``asgl.kernels.lif``) on ``x [T, ...]`` of ``shape`` (contiguous): forward
    (``store_u``: training) or backward."""
    from asgl.kernels import lif

    x = _meta(shape, dtype)
    decay, width, thresh, seed = _neuron(shape[2] if len(shape) > 2 else 1, channel)
    flags = _flags(p, sigmoid, hard)
    if pas == "fwd":
        return record(lambda: lif._launch_fwd(x, decay, width, thresh, **flags, seed=seed, store_u=store_u,
                                              store_mask=False), arch)
    return record(lambda: lif._launch_bwd(x, x, decay, width, thresh, **flags, seed=seed), arch)


def bn_lif_op(pas: str, shape: tuple, *, dtype="bf16", p=0.2, sigmoid=True, hard=True, channel=False,
              residual=False, channels_last=True, training=True, arch=90) -> list[KernelLaunch]:
    """The fused batch norm + LIF (``asgl.kernels.bn_lif``) on ``x [T, B, C, ...]`` of ``shape``:
    in training (batch statistics, running buffers updated) the forward is statistics,
    coefficients and neuron, the backward the neuron backward, finalize and apply, with the group
    sums before the coefficients and the finalize on layers of many tiles; ``training=False``:
    the inference forward folding the running statistics (one launch)."""
    import torch

    from asgl.kernels import bn_lif

    T, C = shape[0], shape[2]
    x = _meta(shape, dtype, channels_last)
    r = _meta(shape, dtype, channels_last) if residual else None
    decay, width, thresh, seed = _neuron(C, channel)
    f32 = dict(dtype=torch.float32, device="meta")
    weight, bias, rm, rv = (torch.empty(C, **f32) for _ in range(4))
    coef = torch.empty((4, C), **f32)
    flags = _flags(p, sigmoid, hard)
    store_u = training and T > getattr(bn_lif, "RECOMPUTE_MAX_T", 8)
    if pas == "fwd":
        def forward():
            c = bn_lif._launch_coef(x, weight, bias, rm, rv, scale=1.0, eps=1e-5, momentum=0.1,
                                    batch_stats=True) if training else x.new_empty(0, dtype=torch.float32)
            bn_lif._launch_fwd(x, r, c, weight, bias, rm, rv, decay, width, thresh, scale=1.0, eps=1e-5,
                               fold=not training, **flags, seed=seed, store_u=store_u, store_mask=False)
        return record(forward, arch)
    u = _meta(shape, dtype, channels_last) if store_u else x.new_empty(0)
    return record(lambda: bn_lif._launch_bwd(x, x, r, u, coef, weight, bias, decay, width, thresh, scale=1.0,
                                             batch_stats=True, **flags, seed=seed), arch)


def rlif_op(pas: str, T: int, B: int, H: int, *, dtype="bf16", p=0.2, sigmoid=True, hard=True, channel=True,
            arch=90) -> list[KernelLaunch]:
    """The recurrent LIF (``asgl.kernels.rlif``) on ``[T, B, H]``: one kernel each way (the backward's
    recurrent-weight gradient and sums are torch ops, not modelled)."""
    import torch

    from asgl.kernels import rlif

    x = _meta((T, B, H), dtype)
    rec = torch.empty((H, H), dtype=torch.float32, device="meta")
    decay, width, thresh, seed = _neuron(H, channel)
    flags = _flags(p, sigmoid, hard)
    if pas == "fwd":
        return record(lambda: rlif._launch_fwd(x, rec, decay, width, thresh, **flags, seed=seed, store_u=True,
                                               store_mask=False), arch)
    return record(lambda: rlif._launch_bwd(x, x, rec, decay, width, thresh, **flags, seed=seed), arch)


def table_launches(kernels=("lif", "rlif", "bn_lif"), dtypes=("bf16",), T: int = 4, N: int = 2**24,
                   arch: int = 90) -> list[KernelLaunch]:
    """Every launch training and evaluation make at ``T`` steps of ``N`` elements (the geometry of
    :data:`TABLE_CHANNELS`), each distinct one once: the LIF forward with and without u and its
    backward for every dtype, noise mode and flag; the batch norm + LIF training forward and
    backward (with a shortcut, sigmoid, hard reset, layer width; both layouts) and its inference
    forward; the recurrent kernels on the SHD layer."""
    launches = {}
    noises = (0.0, 1.0, 0.2)
    for dtype, p in itertools.product(dtypes, noises):
        if "lif" in kernels:
            for sig, hard, chan in itertools.product((True, False), repeat=3):
                shape = (T, N // TABLE_CHANNELS, TABLE_CHANNELS) if chan else (T, N)
                args = dict(dtype=dtype, p=p, sigmoid=sig, hard=hard, channel=chan, arch=arch)
                for k in (lif_op("fwd", shape, store_u=True, **args) + lif_op("fwd", shape, store_u=False, **args)
                          + lif_op("bwd", shape, **args)):
                    launches.setdefault((k.spec.label, k.grid, k.args), k)
        if "bn_lif" in kernels:
            shape = (T, max(1, N // (TABLE_CHANNELS * TABLE_SIDE ** 2)), TABLE_CHANNELS, TABLE_SIDE, TABLE_SIDE)
            for cl in (False, True):
                args = dict(dtype=dtype, p=p, residual=True, channels_last=cl, arch=arch)
                ops = bn_lif_op("fwd", shape, **args) + bn_lif_op("bwd", shape, **args)
                if p == 0:
                    ops += bn_lif_op("fwd", shape, training=False, **args)
                for k in ops:
                    launches.setdefault((k.spec.label, k.grid, k.args), k)
        if "rlif" in kernels:
            for sig, hard, chan in itertools.product((True, False), repeat=3):
                args = dict(dtype=dtype, p=p, sigmoid=sig, hard=hard, channel=chan, arch=arch)
                for pas in ("fwd", "bwd"):
                    for k in rlif_op(pas, T, TABLE_RLIF_BATCH, TABLE_RLIF_H, **args):
                        launches.setdefault((k.spec.label, k.grid, k.args), k)
    return list(launches.values())


# ---------------------------------------------------------------------------------------------
# The recipes
# ---------------------------------------------------------------------------------------------


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


def _input(cfg):
    """``(example input at batch 1, num_classes, in_channels, channels_last)`` of a recipe's data set."""
    import torch

    from asgl.train.data import EVENT_DATASETS, IMAGE_DATASETS

    name, T = cfg.data.name, cfg.model.T
    if name in IMAGE_DATASETS:
        from asgl.train.data.images import IMAGE_SPECS

        spec = IMAGE_SPECS[name]
        cl = True if cfg.train.channels_last is None else bool(cfg.train.channels_last)  # null: on with CUDA
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
    (``overrides``: ``{"section.key": value}``) at ``batch`` (default: the config's), in the order
    the step runs them."""
    import torch

    import asgl
    from asgl.train.config import build_config
    from asgl.train.run import build_model

    cfg = build_config(ROOT / "configs" / config, dict(overrides or {}, **{"model.backend": "torch"}))
    B = batch or cfg.data.batch_size
    x, classes, in_channels, channels_last = _input(cfg)
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

    def hook(module, inputs, kwargs):
        x_seq = inputs[0] if inputs else kwargs["x_seq"]
        shape = (x_seq.shape[0], B) + tuple(x_seq.shape[2:])
        name, N = names[module], math.prod(shape[1:])
        if isinstance(module, asgl.BatchNormLIF):
            if module.lif in fused:
                residual = (inputs[1] if len(inputs) > 1 else kwargs.get("residual")) is not None
                for pas in ("fwd", "bwd"):
                    ops.append(Op(recipe, f"{name} bn_lif.{pas}", shape[0], N, bn_lif_op(
                        pas, shape, residual=residual, channels_last=channels_last and len(shape) > 3,
                        **neuron_args(module.lif))))
        elif isinstance(module, asgl.RecurrentLIF):
            for pas in ("fwd", "bwd"):
                ops.append(Op(recipe, f"{name} rlif.{pas}", shape[0], B * module.hidden,
                              rlif_op(pas, shape[0], B, module.hidden, **neuron_args(module))))
        elif isinstance(module, asgl.LIF) and module not in fused:
            for pas in ("fwd", "bwd"):
                ops.append(Op(recipe, f"{name} lif.{pas}", shape[0], N, lif_op(pas, shape, **neuron_args(module))))

    hooks = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in model.modules()
             if isinstance(m, (asgl.BatchNormLIF, asgl.LIF))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    # the backward runs the ops in reverse
    return [o for o in ops if o.pas == "fwd"] + [o for o in reversed(ops) if o.pas == "bwd"]
