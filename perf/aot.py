"""Ahead-of-time compilation of the Triton kernels for NVIDIA targets, without a GPU.

``triton.compile`` refuses to run in a process where ``TRITON_INTERPRET=1`` is set (as the test
suite sets it on CPU-only machines), so :func:`compile_kernels` runs the compiles in fresh
subprocesses with that variable removed (``jobs`` of them in parallel), and returns, per spec, what
was asked for: the PTX, the cubin, its SASS (``nvdisasm`` from triton's own bundle), and what
``ptxas -v`` says (registers, spill bytes, stack frame, shared memory). Used by the AOT tests
(``tests/test_kernel_aot.py``, ``tests/test_rlif_aot.py``) and by the static performance model
(``perf/static_model.py``)::

    spec = lif_fwd_spec("bf16", 90, NOISE=2, SIGMOID=1, HARD_RESET=1, CHANNEL_WIDTH=0, STORE_U=1)
    [result] = compile_kernels([spec], outputs=("sass",))
    result.registers, result.spill_bytes, result.sass

``signature`` maps every argument name to its Triton type string (``"*bf16"``, ``"i32"``,
``"fp32"``; constexprs as ``"constexpr"``), the spelling of ``triton.compiler.ASTSource`` since
triton 3.2 (names as keys, constexpr values in a separate dict). ``divisible`` lists the arguments
the JIT would specialise as multiples of 16 (16-byte-aligned pointers, sizes divisible by 16).
Compiles use the launchers' options (``asgl.kernels.lif.COMPILE_OPTIONS``), so they are the kernels a
launch would run.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    kernel: str  # "module:attribute" of the @triton.jit function
    signature: dict
    constexprs: dict
    divisible: tuple = ()
    arch: int = 90
    num_warps: int = 4
    label: str = ""
    # for the static model: what one iteration of the kernel's time loop covers
    dtype: str = ""
    steps_per_iteration: int = 1
    elements_per_thread: float = 1.0
    inner_trips: int = 1  # iterations of a loop nested in the time loop (the recurrent product)


@dataclasses.dataclass
class CompileResult:
    spec: KernelSpec
    ptx: str = ""
    sass: str = ""
    cubin: bytes = b""
    registers: int = -1
    spill_bytes: int = -1  # spill stores + spill loads reported by ptxas
    local_bytes: int = -1  # stack frame bytes reported by ptxas
    shared_bytes: int = -1  # static + dynamic shared memory of the launch
    error: str = ""

    def vector_widths(self, op: str) -> set[int]:
        """Vector widths of ``op`` (e.g. ``"ld.global"``, ``"st.global"``) in the PTX: 1 = scalar."""
        widths = set()
        for m in re.finditer(rf"\b{re.escape(op)}(?:\.[a-z0-9_]+)*", self.ptx):
            v = re.search(r"\.v(\d)", m.group(0))
            widths.add(int(v.group(1)) if v else 1)
        return widths

    @property
    def uses_local_memory(self) -> bool:
        return bool(re.search(r"\b(ld|st)\.local\b", self.ptx))


def _nvidia_bin(name: str, arch: int) -> str:
    """A tool (``ptxas``, ``nvdisasm``) from triton's bundle; newer tritons pick ptxas per arch."""
    import triton

    if name == "ptxas":
        try:
            from triton.backends.nvidia.compiler import get_ptxas

            return get_ptxas(arch).path
        except (ImportError, TypeError):
            return triton.knobs.nvidia.ptxas.path
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _compile_one(spec: dict, outputs: list) -> dict:
    """Runs in the subprocess (no TRITON_INTERPRET)."""
    import importlib
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from asgl.kernels.lif import COMPILE_OPTIONS

    module, attr = spec["kernel"].split(":")
    fn = getattr(importlib.import_module(module), attr)
    names = list(spec["signature"])
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in spec["divisible"]}
    src = ASTSource(fn=fn, signature=spec["signature"], constexprs=spec["constexprs"], attrs=attrs)
    out = {"registers": -1, "spill_bytes": -1, "local_bytes": -1, "shared_bytes": -1, "error": ""}
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", spec["arch"], 32),
                                  options={"num_warps": spec["num_warps"], **COMPILE_OPTIONS})
    except Exception as e:  # reported back as the spec's error
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    ptx = compiled.asm["ptx"]
    out["shared_bytes"] = int(compiled.metadata.shared)
    if "ptx" in outputs:
        out["ptx"] = ptx
    ptxas = _nvidia_bin("ptxas", spec["arch"])
    target = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "k.ptx"
        path.write_text(ptx)
        res = subprocess.run([ptxas, "-v", f"--gpu-name={target}", str(path), "-o", str(Path(d) / "k.o")],
                             capture_output=True, text=True)
        log = res.stdout + res.stderr
        if res.returncode != 0:
            out["error"] = "ptxas: " + log
            return out
        if "sass" in outputs or "cubin" in outputs:
            cubin = Path(d) / "k.cubin"
            cubin.write_bytes(compiled.asm["cubin"])
            if "cubin" in outputs:
                out["cubin"] = base64.b64encode(compiled.asm["cubin"]).decode()
            if "sass" in outputs:
                dis = subprocess.run([_nvidia_bin("nvdisasm", spec["arch"]), "-c", str(cubin)],
                                     capture_output=True, text=True)
                if dis.returncode != 0:
                    out["error"] = "nvdisasm: " + dis.stderr
                    return out
                out["sass"] = dis.stdout
    m = re.search(r"Used (\d+) registers", log)
    out["registers"] = int(m.group(1)) if m else -1
    stores = re.search(r"(\d+) bytes spill stores", log)
    loads = re.search(r"(\d+) bytes spill loads", log)
    out["spill_bytes"] = (int(stores.group(1)) if stores else 0) + (int(loads.group(1)) if loads else 0)
    frame = re.search(r"(\d+) bytes stack frame", log)
    out["local_bytes"] = int(frame.group(1)) if frame else 0
    return out


def compile_kernels(specs: list[KernelSpec], outputs=("ptx",), jobs: int = 1,
                    timeout: float = 1800.0) -> list[CompileResult]:
    """Compile every spec without ``TRITON_INTERPRET`` in ``jobs`` parallel subprocesses; results in
    spec order. ``outputs``: any of ``"ptx"``, ``"sass"``, ``"cubin"`` (registers, spills and
    shared memory always)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    jobs = max(1, min(jobs, len(specs)))
    chunks = [list(range(i, len(specs), jobs)) for i in range(jobs)]
    procs = []
    for chunk in chunks:
        payload = json.dumps({"outputs": list(outputs), "specs": [dataclasses.asdict(specs[i]) for i in chunk]})
        p = subprocess.Popen([sys.executable, "-m", "perf.aot"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, text=True, cwd=str(ROOT))
        procs.append((p, payload))
    results: list = [None] * len(specs)
    for (p, payload), chunk in zip(procs, chunks):
        stdout, stderr = p.communicate(payload, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"AOT compile subprocess failed:\n{stderr[-4000:]}")
        for i, o in zip(chunk, json.loads(stdout.splitlines()[-1])):
            cubin = base64.b64decode(o.pop("cubin")) if "cubin" in o else b""
            results[i] = CompileResult(spec=specs[i], cubin=cubin, **o)
    return results


# ---------------------------------------------------------------------------------------------
# The specialisations the fused neurons launch
# ---------------------------------------------------------------------------------------------

DTYPES = ("fp32", "fp16", "bf16")
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
ARCHS = (80, 90)
BINARY_L4 = ((0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0))  # strength-2 covering of 3 binary flags

_PARAMS = {"decay_logit_ptr": "*fp32", "width_ptr": "*fp32", "theta_ptr": "*fp32", "seed_ptr": "*i64"}
_LIF_SIZES = {"T": "i32", "N": "i32", "INNER": "i32", "C": "i32", "v_reset": "fp32", "p16": "i32"}
# the JIT's view of ordinary launches: torch allocations are 16-byte aligned, N % 16 == 0
_LIF_DIVISIBLE_FWD = ("x_ptr", "y_ptr", "u_ptr", "mask_ptr", *_PARAMS, "N")
_LIF_DIVISIBLE_BWD = ("dy_ptr", "u_ptr", "dx_ptr", "dk_ptr", "partial_ptr", *_PARAMS, "N")


def _label(kind, arch, dtype, constexprs):
    flags = " ".join(f"{k}={int(v)}" for k, v in constexprs.items() if not k.startswith("BLOCK") and k != "VEC")
    return f"{kind} sm_{arch} {dtype} {flags}".rstrip()


def lif_config(block_n: int | None = None) -> tuple[int, int]:
    """``(BLOCK_N, num_warps)`` of :data:`asgl.kernels.lif.CONFIGS` (default: the largest)."""
    from asgl.kernels.lif import CONFIGS

    return next(c for c in CONFIGS if block_n in (None, c[0]))


def _lif_vec(block_n, num_warps, itemsize):
    from asgl.kernels.lif import _vec

    return _vec(block_n, num_warps, itemsize)


def lif_steps_per_iteration(STATIC_T, backward=False):
    """The static model's ``steps_per_iteration`` of a feed-forward neuron kernel: its loop's unrolled
    steps, or ``-T`` for a kernel unrolled over all its ``T = STATIC_T`` steps (no loop)."""
    from asgl.kernels.lif import BWD_STEPS_PER_ITERATION, STEPS_PER_ITERATION

    return -STATIC_T if STATIC_T else int(BWD_STEPS_PER_ITERATION if backward else STEPS_PER_ITERATION)


def lif_fwd_spec(dtype, arch, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH, STORE_U, STORE_MASK=False,
                 BLOCK_N=None, STATIC_T=0) -> KernelSpec:
    block_n, num_warps = lif_config(BLOCK_N)
    signature = {"x_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "u_ptr": f"*{dtype}", "mask_ptr": "*i8",
                 **_PARAMS, **_LIF_SIZES}
    constexprs = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET),
                      CHANNEL_WIDTH=bool(CHANNEL_WIDTH), STORE_U=bool(STORE_U), STORE_MASK=bool(STORE_MASK),
                      STATIC_T=STATIC_T, BLOCK_N=block_n, VEC=_lif_vec(block_n, num_warps, DTYPE_BYTES[dtype]))
    signature.update({k: "constexpr" for k in constexprs})
    label = _label("fwd", arch, dtype, constexprs) + ("" if BLOCK_N is None else f" BLOCK_N={block_n}")
    return KernelSpec("asgl.kernels.lif:_lif_fwd_kernel", signature, constexprs, _LIF_DIVISIBLE_FWD, arch, num_warps,
                      label, dtype, lif_steps_per_iteration(STATIC_T), block_n / (32 * num_warps))


def lif_bwd_spec(dtype, arch, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH, BLOCK_N=None, STATIC_T=0) -> KernelSpec:
    block_n, num_warps = lif_config(BLOCK_N)
    signature = {"dy_ptr": f"*{dtype}", "u_ptr": f"*{dtype}", "dx_ptr": f"*{dtype}", "dk_ptr": "*fp32",
                 "partial_ptr": "*fp32", **_PARAMS, **_LIF_SIZES}
    constexprs = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET),
                      CHANNEL_WIDTH=bool(CHANNEL_WIDTH), STATIC_T=STATIC_T, BLOCK_N=block_n,
                      VEC=_lif_vec(block_n, num_warps, DTYPE_BYTES[dtype]))
    signature.update({k: "constexpr" for k in constexprs})
    label = _label("bwd", arch, dtype, constexprs) + ("" if BLOCK_N is None else f" BLOCK_N={block_n}")
    return KernelSpec("asgl.kernels.lif:_lif_bwd_kernel", signature, constexprs, _LIF_DIVISIBLE_BWD, arch, num_warps,
                      label, dtype, lif_steps_per_iteration(STATIC_T, backward=True), block_n / (32 * num_warps))


def lif_finalize_spec(arch, *, SIGMOID, CHANNEL_WIDTH) -> KernelSpec:
    from asgl.kernels.lif import FINALIZE_BLOCK

    signature = {"partial_ptr": "*fp32", "dk_ptr": "*fp32", "decay_logit_ptr": "*fp32", "width_ptr": "*fp32",
                 "d_decay_ptr": "*fp32", "d_width_ptr": "*fp32", "d_theta_ptr": "*fp32", "NPROG": "i32",
                 "C": "i32"}
    constexprs = dict(SIGMOID=bool(SIGMOID), CHANNEL_WIDTH=bool(CHANNEL_WIDTH), BLOCK=FINALIZE_BLOCK)
    signature.update({k: "constexpr" for k in constexprs})
    return KernelSpec("asgl.kernels.lif:_finalize_kernel", signature, constexprs, tuple(k for k in signature if
                      k.endswith("_ptr")), arch, 4, _label("finalize", arch, "fp32", constexprs), "fp32")


RLIF_H = 240  # SHD
_RLIF_SIZES = {"T": "i32", "B": "i32", "H": "i32", "v_reset": "fp32", "p16": "i32"}
# the JIT's view of an SHD launch: 16-byte aligned torch allocations, B = 32 and H = 240 multiples of 16
_RLIF_DIVISIBLE_FWD = ("wx_ptr", "rt_ptr", "y_ptr", "u_ptr", "mask_ptr", "scratch_ptr", *_PARAMS, "B", "H")
_RLIF_DIVISIBLE_BWD = ("dy_ptr", "u_ptr", "r_ptr", "dwx_ptr", "o_ptr", "scratch_ptr", "partial_ptr", *_PARAMS,
                       "B", "H")


def rlif_blocks(H: int = RLIF_H) -> dict:
    from asgl.kernels.rlif import BLOCK_B, _blocks

    block_h, block_k, num_warps = _blocks(H)
    return dict(BLOCK_B=BLOCK_B, BLOCK_H=block_h, BLOCK_K=block_k), num_warps


def _rlif_geometry(blocks, num_warps, H):
    # elements of useful work per thread and step (padded units do not count), and the K-chunks
    # of the recurrent product per step
    return blocks["BLOCK_B"] * H / (32 * num_warps), -(-H // blocks["BLOCK_K"])


def rlif_fwd_spec(dtype, arch, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH, STORE_U, STORE_MASK=False,
                  H=RLIF_H) -> KernelSpec:
    # 16-bit storage feeds the forward product in fp16 (asgl.kernels.rlif._fwd_dot_dtype)
    dot = "fp32" if dtype == "fp32" else "fp16"
    blocks, num_warps = rlif_blocks(H)
    signature = {"wx_ptr": f"*{dtype}", "rt_ptr": f"*{dot}", "y_ptr": f"*{dtype}", "u_ptr": f"*{dtype}",
                 "mask_ptr": "*i8", "scratch_ptr": f"*{dot}", **_PARAMS, **_RLIF_SIZES}
    constexprs = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET),
                      CHANNEL_WIDTH=bool(CHANNEL_WIDTH), STORE_U=bool(STORE_U), STORE_MASK=bool(STORE_MASK),
                      **blocks)
    signature.update({k: "constexpr" for k in constexprs})
    per_thread, trips = _rlif_geometry(blocks, num_warps, H)
    return KernelSpec("asgl.kernels.rlif:_rlif_fwd_kernel", signature, constexprs, _RLIF_DIVISIBLE_FWD, arch, num_warps,
                      _label("rfwd", arch, dtype, constexprs), dtype, 1, per_thread, trips)


def rlif_bwd_spec(dtype, arch, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH, H=RLIF_H) -> KernelSpec:
    blocks, num_warps = rlif_blocks(H)
    signature = {"dy_ptr": f"*{dtype}", "u_ptr": f"*{dtype}", "r_ptr": "*fp32", "dwx_ptr": f"*{dtype}",
                 "o_ptr": f"*{dtype}", "scratch_ptr": "*fp32", "partial_ptr": "*fp32", **_PARAMS, **_RLIF_SIZES}
    constexprs = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET),
                      CHANNEL_WIDTH=bool(CHANNEL_WIDTH), **blocks)
    signature.update({k: "constexpr" for k in constexprs})
    per_thread, trips = _rlif_geometry(blocks, num_warps, H)
    return KernelSpec("asgl.kernels.rlif:_rlif_bwd_kernel", signature, constexprs, _RLIF_DIVISIBLE_BWD, arch, num_warps,
                      _label("rbwd", arch, dtype, constexprs), dtype, 1, per_thread, trips)


# the fused batch norm + LIF (asgl.kernels.bn_lif): (BLOCK_O, BLOCK_C, BLOCK_I) per tile orientation
# (BLOCK_O, BLOCK_C, BLOCK_I) for 1024- and 512-element tiles, per orientation
BN_LIF_TILES = {(layout, block): (block // 64, 64, 1) if layout == "channels_last" else (block // 64, 1, 64)
         for layout in ("contiguous", "channels_last") for block in (1024, 512, 256)}


def _bn_lif_sizes(layout):
    sig = {"T": "i32", "OUTER": "i32", "C": "i32", "INNER": "i32"}
    const = {}
    if layout == "channels_last":
        sig["INNER"] = "constexpr"  # the JIT specialises an int argument equal to 1
        const["INNER"] = 1
    return sig, const


def _bn_lif_spec(kernel, label, signature, constexprs, divisible, arch, num_warps, dtype, steps, per_thread):
    signature = {**signature, **{k: "constexpr" for k in constexprs if k not in signature}}
    return KernelSpec(f"asgl.kernels.bn_lif:{kernel}", signature, constexprs, divisible, arch, num_warps, label, dtype,
                      steps, per_thread)


def bn_lif_fwd_spec(dtype, arch, layout, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH, HAS_RESIDUAL, STORE_U,
                    FOLD=False, STATIC_T=0, ALIGNED=True):
    """The forward; ``FOLD``: the inference launch folding γ, β and fp32 running buffers in-kernel;
    ``STATIC_T``: T <= 8 unrolled (0: the loop); ``ALIGNED``: rows of 4-aligned Philox groups."""
    sizes, const = _bn_lif_sizes(layout)
    bo, bc, bi = BN_LIF_TILES[layout, 1024]
    sig = {"x_ptr": f"*{dtype}", "r_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "u_ptr": f"*{dtype}", "mask_ptr": "*i8",
           "coef_ptr": "*fp32", "weight_ptr": "*fp32", "bias_ptr": "*fp32", "mean_ptr": "*fp32", "var_ptr": "*fp32",
           **_PARAMS, **sizes, "v_reset": "fp32", "p16": "i32", "eps": "fp32", "scale": "fp32"}
    flags = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET), CHANNEL_WIDTH=bool(CHANNEL_WIDTH),
                 HAS_RESIDUAL=bool(HAS_RESIDUAL), STORE_U=bool(STORE_U), STORE_MASK=False, FOLD=bool(FOLD))
    const = {**const, **flags, "HAS_WEIGHT": bool(FOLD), "HAS_BIAS": bool(FOLD), "STATIC_T": STATIC_T,
             "ALIGNED": bool(ALIGNED), "BLOCK_O": bo, "BLOCK_C": bc, "BLOCK_I": bi}
    label = (f"fwd sm_{arch} {dtype} {layout} " + " ".join(f"{k}={int(v)}" for k, v in flags.items())
             + f" STATIC_T={STATIC_T}" + ("" if ALIGNED else " ALIGNED=0"))
    divisible = ("x_ptr", "r_ptr", "y_ptr", "u_ptr", "mask_ptr", "coef_ptr", "weight_ptr", "bias_ptr", "mean_ptr",
                 "var_ptr", *_PARAMS, "C" if layout == "channels_last" else "INNER")
    # the loop runs 2 steps per iteration; STATIC_T steps unrolled are the whole kernel (-T)
    return _bn_lif_spec("_bn_lif_fwd_kernel", label, sig, const, divisible, arch, 4, dtype,
                        -STATIC_T if STATIC_T else 2, 1024 / 128)


def bn_lif_bwd_spec(dtype, arch, layout, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH, HAS_RESIDUAL, RECOMPUTE_T,
                    ALIGNED=True):
    sizes, const = _bn_lif_sizes(layout)
    from asgl.kernels.bn_lif import BLOCK, BWD_BLOCK

    block = BWD_BLOCK[4 if RECOMPUTE_T <= 4 else 8] if RECOMPUTE_T else BLOCK
    bo, bc, bi = BN_LIF_TILES[layout, block]
    sig = {"dy_ptr": f"*{dtype}", "x_ptr": f"*{dtype}", "r_ptr": f"*{dtype}", "u_ptr": f"*{dtype}",
           "g_ptr": f"*{dtype}", "partial_ptr": "*fp32", "chan_ptr": "*fp32", "coef_ptr": "*fp32", **_PARAMS,
           **sizes, "v_reset": "fp32", "p16": "i32"}
    flags = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET), CHANNEL_WIDTH=bool(CHANNEL_WIDTH),
                 HAS_RESIDUAL=bool(HAS_RESIDUAL), RECOMPUTE_T=RECOMPUTE_T)
    const = {**const, **flags, "ALIGNED": bool(ALIGNED), "BLOCK_O": bo, "BLOCK_C": bc, "BLOCK_I": bi}
    label = (f"bwd sm_{arch} {dtype} {layout} " + " ".join(f"{k}={int(v)}" for k, v in flags.items())
             + ("" if ALIGNED else " ALIGNED=0"))
    divisible = ("dy_ptr", "x_ptr", "r_ptr", "u_ptr", "g_ptr", "partial_ptr", "chan_ptr", "coef_ptr", *_PARAMS,
                 "C" if layout == "channels_last" else "INNER")
    # the recomputing backward has no time loop: its RECOMPUTE_T steps are unrolled (steps = 0 tells
    # the static model to read the whole kernel as one iteration of RECOMPUTE_T steps)
    return _bn_lif_spec("_bn_lif_bwd_kernel", label, sig, const, divisible, arch, 4, dtype,
                        -RECOMPUTE_T if RECOMPUTE_T else 1, block / 128)


def bn_lif_stats_spec(dtype, arch, layout):
    sizes, const = _bn_lif_sizes(layout)
    bo, bc, bi = BN_LIF_TILES[layout, 1024]
    sig = {"x_ptr": f"*{dtype}", "partial_ptr": "*fp32", **sizes}
    const = {**const, "BLOCK_O": bo, "BLOCK_C": bc, "BLOCK_I": bi}
    divisible = ("x_ptr", "partial_ptr", "C" if layout == "channels_last" else "INNER")
    return _bn_lif_spec("_bn_stats_kernel", f"stats sm_{arch} {dtype} {layout}", sig, const, divisible, arch, 4,
                        dtype, 0, 1024 / 128)


def bn_lif_apply_spec(dtype, arch):
    sig = {"g_ptr": f"*{dtype}", "x_ptr": f"*{dtype}", "dx_ptr": f"*{dtype}", "coef_ptr": "*fp32", "k_ptr": "*fp32",
           "TN": "i64", "C": "i32", "INNER": "i32"}
    divisible = ("g_ptr", "x_ptr", "dx_ptr", "coef_ptr", "k_ptr", "TN")
    return _bn_lif_spec("_bn_grad_apply_kernel", f"apply sm_{arch} {dtype}", sig, {"BLOCK": 1024}, divisible, arch, 4,
                        dtype, 0, 1024 / 128)


def _coef_blocks():
    from asgl.kernels.bn_lif import COEF_BLOCK_C, COEF_BLOCK_T

    return {"BLOCK_T": COEF_BLOCK_T, "BLOCK_C": COEF_BLOCK_C}


def bn_lif_coef_spec(arch, *, BATCH_STATS=True, UPDATE_RUNNING=True):
    """The per-channel coefficient kernel (fp32 buffers and affine parameters); no per-element work."""
    sig = {"partial_ptr": "*fp32", "shift_ptr": "*fp32", "weight_ptr": "*fp32", "bias_ptr": "*fp32",
           "run_mean_ptr": "*fp32",
           "run_var_ptr": "*fp32", "coef_ptr": "*fp32", "TILES": "i32", "C": "i32", "inv_n": "fp32",
           "unbias": "fp32", "momentum": "fp32", "eps": "fp32", "scale": "fp32"}
    const = {"BATCH_STATS": BATCH_STATS, "UPDATE_RUNNING": UPDATE_RUNNING, "HAS_WEIGHT": True, "HAS_BIAS": True,
             **_coef_blocks()}
    label = f"coef sm_{arch} BATCH_STATS={int(BATCH_STATS)} UPDATE_RUNNING={int(UPDATE_RUNNING)}"
    return _bn_lif_spec("_bn_coef_kernel", label, sig, const, ("partial_ptr", "coef_ptr"), arch, 4, "fp32", 0, 1)


def bn_lif_tile_groups_spec(arch, *, scalars=False):
    """The first of the two stages that sum many per-tile sums (float32 tables; ``scalars``: the
    backward's scalar table, one channel); no per-element work."""
    sig = {"src_ptr": "*fp32", "dst_ptr": "*fp32", "TILES": "i32", "C": "i32", "GROUP": "i32"}
    const = {**_coef_blocks(), **({"BLOCK_C": 1} if scalars else {})}
    return _bn_lif_spec("_sum_tile_groups_kernel", f"tile_groups sm_{arch} BLOCK_C={const['BLOCK_C']}", sig, const,
                        ("src_ptr", "dst_ptr"), arch, 4, "fp32", 0, 1)


def bn_lif_bwd_finalize_spec(arch, *, SIGMOID=True, CHANNEL_WIDTH=False, BATCH_STATS=True):
    """The backward's finalize kernel (fp32 parameters); no per-element work."""
    sig = {"chan_ptr": "*fp32", "partial_ptr": "*fp32", "coef_ptr": "*fp32", "k_ptr": "*fp32",
           "d_weight_ptr": "*fp32", "d_bias_ptr": "*fp32", **{k: "*fp32" for k in ("decay_logit_ptr", "width_ptr",
                                                                                  "d_decay_ptr", "d_width_ptr",
                                                                                  "d_theta_ptr")},
           "TILES": "i32", "SLOTS": "i32", "C": "i32", "inv_n": "fp32", "scale": "fp32"}
    const = {"BATCH_STATS": BATCH_STATS, "HAS_WEIGHT": True, "HAS_BIAS": True, "SIGMOID": SIGMOID,
             "CHANNEL_WIDTH": CHANNEL_WIDTH, **_coef_blocks()}
    label = (f"bwd_finalize sm_{arch} SIGMOID={int(SIGMOID)} CHANNEL_WIDTH={int(CHANNEL_WIDTH)} "
             f"BATCH_STATS={int(BATCH_STATS)}")
    return _bn_lif_spec("_bn_bwd_finalize_kernel", label, sig, const, ("chan_ptr", "partial_ptr", "coef_ptr", "k_ptr"),
                        arch, 4, "fp32", 0, 1)


def covering_specs(fwd_spec, bwd_spec, archs=ARCHS) -> list[KernelSpec]:
    """Every dtype × NOISE value, the three binary flags rotated through an L4 covering array, plus
    eval (no u) and the test-only mask output; each arch. ``fwd_spec``/``bwd_spec`` build one
    :class:`KernelSpec` from ``(dtype, arch, NOISE=, SIGMOID=, HARD_RESET=, CHANNEL_WIDTH=[, STORE_U=,
    STORE_MASK=])``."""
    specs = []
    for arch in archs:
        for i, dtype in enumerate(DTYPES):
            for noise in (0, 1, 2):
                sig, hard, chan = BINARY_L4[(noise + i) % 4]
                flags = dict(NOISE=noise, SIGMOID=sig, HARD_RESET=hard, CHANNEL_WIDTH=chan)
                specs.append(fwd_spec(dtype, arch, **flags, STORE_U=True))
                specs.append(bwd_spec(dtype, arch, **flags))
            specs.append(fwd_spec(dtype, arch, NOISE=0, SIGMOID=i % 2, HARD_RESET=1, CHANNEL_WIDTH=i % 2,
                                  STORE_U=False))
            specs.append(fwd_spec(dtype, arch, NOISE=2, SIGMOID=1, HARD_RESET=i % 2, CHANNEL_WIDTH=0, STORE_U=True,
                                  STORE_MASK=True))
    return specs


def all_specs(fwd_spec, bwd_spec, archs=ARCHS) -> list[KernelSpec]:
    """Every specialisation a fused neuron launches (the mask output only with default flags)."""
    specs = []
    for arch, dtype, noise, sig, hard, chan in itertools.product(archs, DTYPES, (0, 1, 2), (0, 1), (0, 1), (0, 1)):
        flags = dict(NOISE=noise, SIGMOID=sig, HARD_RESET=hard, CHANNEL_WIDTH=chan)
        specs += [fwd_spec(dtype, arch, **flags, STORE_U=s) for s in (True, False)]
        specs.append(bwd_spec(dtype, arch, **flags))
    for arch, dtype, noise in itertools.product(archs, DTYPES, (0, 1, 2)):
        specs.append(fwd_spec(dtype, arch, NOISE=noise, SIGMOID=1, HARD_RESET=1, CHANNEL_WIDTH=0, STORE_U=True,
                              STORE_MASK=True))
    return specs


def static_t_specs(archs=ARCHS) -> list[KernelSpec]:
    """The feed-forward neuron unrolled over a compile-time T (``STATIC_T`` = T <= 8): every T value
    several times across dtype × NOISE mode × archs, forward and backward, the binary flags rotated
    through the L4 covering array (the launches of the recipes' T = 2, 4, 8 and the odd T's last
    steps without a draw partner)."""
    specs = []
    for arch, (i, dtype), noise in itertools.product(archs, enumerate(DTYPES), (0, 1, 2)):
        sig, hard, chan = BINARY_L4[(noise + i + arch // 10) % 4]
        flags = dict(NOISE=noise, SIGMOID=sig, HARD_RESET=hard, CHANNEL_WIDTH=chan)
        j = noise + 3 * i + arch // 10
        specs.append(lif_fwd_spec(dtype, arch, **flags, STORE_U=True, STATIC_T=1 + j % 8))
        specs.append(lif_bwd_spec(dtype, arch, **flags, STATIC_T=1 + (j + 3) % 8))
    return specs


def config_specs(archs=ARCHS) -> list[KernelSpec]:
    """Every launch configuration of :data:`asgl.kernels.lif.CONFIGS` but the default one, for each dtype
    (the default BLOCK_N is what :func:`covering_specs` and :func:`all_specs` compile), with the
    NOISE modes and flags rotated through the configurations."""
    from asgl.kernels.lif import CONFIGS

    specs = []
    for arch, (i, dtype) in itertools.product(archs, enumerate(DTYPES)):
        for j, (block_n, _) in enumerate(CONFIGS[1:]):
            noise = (i + j) % 3
            sig, hard, chan = BINARY_L4[(i + j) % 4]
            flags = dict(NOISE=noise, SIGMOID=sig, HARD_RESET=hard, CHANNEL_WIDTH=chan, BLOCK_N=block_n)
            specs.append(lif_fwd_spec(dtype, arch, **flags, STORE_U=True))
            specs.append(lif_bwd_spec(dtype, arch, **flags))
    return specs


def compile_problems(result: CompileResult) -> list[str]:
    """A failed compile, or any spill / stack frame / local-memory access."""
    s = result.spec
    if result.error:
        return [f"{s.label}: {result.error[:500]}"]
    if result.spill_bytes != 0 or result.local_bytes != 0 or result.uses_local_memory:
        return [f"{s.label}: {result.registers} registers, spills {result.spill_bytes} B, stack {result.local_bytes} B"]
    return []


def register_table(results: list[CompileResult]) -> None:
    """Print the register range per kernel, arch and dtype (visible with ``pytest -s``)."""
    regs = {}
    for r in results:
        regs.setdefault(" ".join(r.spec.label.split(" ")[:3]), []).append(r.registers)
    for k, v in sorted(regs.items()):
        print(f"{k}: registers {min(v)}..{max(v)} over {len(v)} specialisations")


if __name__ == "__main__":
    request = json.loads(sys.stdin.read())
    results = [_compile_one(s, request["outputs"]) for s in request["specs"]]
    sys.stdout.write("\n" + json.dumps(results) + "\n")
