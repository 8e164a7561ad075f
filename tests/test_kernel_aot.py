"""Ahead-of-time compiles of the fused LIF kernels for sm_80 and sm_90 (no GPU needed).

Each compile must succeed, must not spill to local memory, and must keep the per-step global loads
and stores of the [T, N] tensors 16 bytes wide (``.v4.b32``: 4 fp32 or 8 fp16/bf16 per thread) when
N is a multiple of 16, which is the case the JIT specialises. The default run compiles a covering
subset (every dtype, every value of every constexpr, both kernels, both archs), and a second test
compiles every specialisation ``asgl.kernels.lif`` can launch (about 2-3 minutes cold on 2 cores; part
of the normal run). Compiles are cached by triton, so reruns only pay for ``ptxas -v``.
"""

from __future__ import annotations

from aot_util import (
    KernelSpec, all_specs, compile_kernels, compile_problems, covering_specs, register_table,
)

PARAMS = {"decay_logit_ptr": "*fp32", "width_ptr": "*fp32", "theta_ptr": "*fp32", "seed_ptr": "*i64"}
SIZES = {"T": "i32", "N": "i32", "INNER": "i32", "C": "i32", "v_reset": "fp32", "p": "fp32"}
# the JIT's view of ordinary launches: torch allocations are 16-byte aligned, N % 16 == 0
DIVISIBLE_FWD = ("x_ptr", "y_ptr", "u_ptr", "mask_ptr", *PARAMS, "N")
DIVISIBLE_BWD = ("dy_ptr", "u_ptr", "dx_ptr", "dk_ptr", "partial_ptr", *PARAMS, "N")


def fwd_spec(dtype, arch, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH, STORE_U, STORE_MASK=False):
    signature = {"x_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "u_ptr": f"*{dtype}", "mask_ptr": "*i8",
                 **PARAMS, **SIZES}
    constexprs = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET),
                      CHANNEL_WIDTH=bool(CHANNEL_WIDTH), STORE_U=bool(STORE_U), STORE_MASK=bool(STORE_MASK),
                      BLOCK_N=1024)
    signature.update({k: "constexpr" for k in constexprs})
    label = f"fwd sm_{arch} {dtype} " + " ".join(f"{k}={int(v)}" for k, v in constexprs.items() if k != "BLOCK_N")
    return KernelSpec("asgl.kernels.lif:_lif_fwd_kernel", signature, constexprs, DIVISIBLE_FWD, arch, 4, label)


def bwd_spec(dtype, arch, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH):
    signature = {"dy_ptr": f"*{dtype}", "u_ptr": f"*{dtype}", "dx_ptr": f"*{dtype}", "dk_ptr": "*fp32",
                 "partial_ptr": "*fp32", **PARAMS, **SIZES}
    constexprs = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET),
                      CHANNEL_WIDTH=bool(CHANNEL_WIDTH), BLOCK_N=1024)
    signature.update({k: "constexpr" for k in constexprs})
    label = f"bwd sm_{arch} {dtype} " + " ".join(f"{k}={int(v)}" for k, v in constexprs.items() if k != "BLOCK_N")
    return KernelSpec("asgl.kernels.lif:_lif_bwd_kernel", signature, constexprs, DIVISIBLE_BWD, arch, 4, label)


def check(results):
    problems = []
    for r in results:
        problems += compile_problems(r)
        if r.error:
            continue
        # the [T, N] streams: fwd x -> y (+u), bwd u, dy -> dx; all 16-byte vectors
        if 4 not in r.vector_widths("ld.global"):
            problems.append(f"{r.spec.label}: no 16-byte global loads {r.vector_widths('ld.global')}")
        if 4 not in r.vector_widths("st.global"):
            problems.append(f"{r.spec.label}: no 16-byte global stores {r.vector_widths('st.global')}")
    assert not problems, "\n".join(problems)


def test_aot_covering_specialisations():
    results = compile_kernels(covering_specs(fwd_spec, bwd_spec))
    check(results)
    register_table(results)


def test_aot_every_specialisation():
    results = compile_kernels(all_specs(fwd_spec, bwd_spec))
    check(results)
    register_table(results)
