"""Ahead-of-time compiles of the fused recurrent LIF kernels at H = 240 (SHD) for sm_80 and sm_90.

No GPU needed: :mod:`aot_util` compiles in a subprocess without ``TRITON_INTERPRET`` and reads
``ptxas -v``. Each compile must succeed and must not spill (the [16, 256] float32 state tiles and
the streamed Rᵀ chunks have to fit in registers at 8 warps). The default test compiles a covering
subset (every dtype, every value of every constexpr, both kernels, both archs); the ``slow`` test
compiles every specialisation ``asgl.kernels.rlif`` can launch. Register counts are printed (``-s``).
"""

from __future__ import annotations

import re

import pytest

from aot_util import (
    KernelSpec, all_specs, compile_kernels, compile_problems, covering_specs, register_table,
)

H = 240
BLOCK_H, BLOCK_K, NUM_WARPS = 256, 16, 8  # what asgl.kernels.rlif._blocks(240) picks
PARAMS = {"decay_logit_ptr": "*fp32", "width_ptr": "*fp32", "theta_ptr": "*fp32", "seed_ptr": "*i64"}
SIZES = {"T": "i32", "B": "i32", "H": "i32", "v_reset": "fp32", "p": "fp32"}
# the JIT's view of an SHD launch: 16-byte aligned torch allocations, B = 32 and H = 240 multiples of 16
DIVISIBLE_FWD = ("wx_ptr", "rt_ptr", "y_ptr", "u_ptr", "mask_ptr", "scratch_ptr", *PARAMS, "B", "H")
DIVISIBLE_BWD = ("dy_ptr", "u_ptr", "r_ptr", "dwx_ptr", "o_ptr", "scratch_ptr", "partial_ptr", *PARAMS, "B", "H")


def _blocks_spec():
    return dict(BLOCK_B=16, BLOCK_H=BLOCK_H, BLOCK_K=BLOCK_K)


def fwd_spec(dtype, arch, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH, STORE_U, STORE_MASK=False):
    # 16-bit storage feeds the forward product in fp16 (asgl.kernels.rlif._fwd_dot_dtype)
    dot = "fp32" if dtype == "fp32" else "fp16"
    signature = {"wx_ptr": f"*{dtype}", "rt_ptr": f"*{dot}", "y_ptr": f"*{dtype}", "u_ptr": f"*{dtype}",
                 "mask_ptr": "*i8", "scratch_ptr": f"*{dot}", **PARAMS, **SIZES}
    constexprs = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET),
                      CHANNEL_WIDTH=bool(CHANNEL_WIDTH), STORE_U=bool(STORE_U), STORE_MASK=bool(STORE_MASK),
                      **_blocks_spec())
    signature.update({k: "constexpr" for k in constexprs})
    label = f"fwd sm_{arch} {dtype} " + " ".join(
        f"{k}={int(v)}" for k, v in constexprs.items() if not k.startswith("BLOCK"))
    return KernelSpec("asgl.kernels.rlif:_rlif_fwd_kernel", signature, constexprs, DIVISIBLE_FWD, arch, NUM_WARPS, label)


def bwd_spec(dtype, arch, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH):
    signature = {"dy_ptr": f"*{dtype}", "u_ptr": f"*{dtype}", "r_ptr": "*fp32", "dwx_ptr": f"*{dtype}",
                 "o_ptr": f"*{dtype}", "scratch_ptr": "*fp32", "partial_ptr": "*fp32", **PARAMS, **SIZES}
    constexprs = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET),
                      CHANNEL_WIDTH=bool(CHANNEL_WIDTH), **_blocks_spec())
    signature.update({k: "constexpr" for k in constexprs})
    label = f"bwd sm_{arch} {dtype} " + " ".join(
        f"{k}={int(v)}" for k, v in constexprs.items() if not k.startswith("BLOCK"))
    return KernelSpec("asgl.kernels.rlif:_rlif_bwd_kernel", signature, constexprs, DIVISIBLE_BWD, arch, NUM_WARPS, label)


def check(results):
    problems = []
    for r in results:
        problems += compile_problems(r)
        if r.error:
            continue
        s = r.spec
        # the per-step barrier that orders the o/du double buffer must be there; the 16-bit forward
        # product must run on tensor cores (mma/wgmma), the fp32 ones on fp32 FMAs
        if "bar.sync" not in r.ptx and "barrier.sync" not in r.ptx:
            problems.append(f"{s.label}: no barrier in the PTX")
        tensor_cores = re.search(r"\b(mma|wgmma)\.", r.ptx) is not None
        if tensor_cores != (s.label.startswith("fwd") and " fp32 " not in s.label):
            problems.append(f"{s.label}: tensor-core instructions {'present' if tensor_cores else 'missing'}")
    assert not problems, "\n".join(problems)


def test_specs_use_the_launch_configuration():
    from asgl.kernels.rlif import BLOCK_B, _blocks

    assert _blocks(H) == (BLOCK_H, BLOCK_K, NUM_WARPS) and _blocks_spec()["BLOCK_B"] == BLOCK_B


def test_rlif_aot_covering_specialisations():
    results = compile_kernels(covering_specs(fwd_spec, bwd_spec))
    check(results)
    register_table(results)


@pytest.mark.slow
def test_rlif_aot_every_specialisation():
    results = compile_kernels(all_specs(fwd_spec, bwd_spec))
    check(results)
    register_table(results)
