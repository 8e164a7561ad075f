"""Ahead-of-time compiles of the fused LIF kernels for sm_80 and sm_90 (no GPU needed).

Each compile must succeed, must not spill to local memory, and must keep the per-step global loads
and stores of the [T, N] tensors 16 bytes wide (``.v4.b32``: 4 fp32 or 8 fp16/bf16 per thread) when
N is a multiple of 16, which is the case the JIT specialises. The default run compiles a covering
subset (every dtype, every value of every constexpr, both kernels, both archs), and a second test
compiles every specialisation ``kernels.lif`` can launch (about 2-3 minutes cold on 2 cores; part
of the normal run). Compiles are cached by triton, so reruns
only pay for ``ptxas -v``.
"""

from __future__ import annotations

import itertools

import pytest

from aot_util import KernelSpec, compile_kernels

DTYPES = ("fp32", "fp16", "bf16")
PARAMS = {"decay_logit_ptr": "*fp32", "width_ptr": "*fp32", "theta_ptr": "*fp32", "seed_ptr": "*i64"}
SIZES = {"T": "i32", "N": "i32", "INNER": "i32", "C": "i32", "v_reset": "fp32", "p": "fp32"}
# the JIT's view of ordinary launches: torch allocations are 16-byte aligned, N % 16 == 0
DIVISIBLE_FWD = ("x_ptr", "y_ptr", "u_ptr", "mask_ptr", *PARAMS, "N")
DIVISIBLE_BWD = ("dy_ptr", "u_ptr", "dx_ptr", "dk_ptr", "partial_ptr", *PARAMS, "N")
BINARY_L4 = ((0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0))  # strength-2 covering of 3 binary flags


def fwd_spec(dtype, arch, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH, STORE_U, STORE_MASK=False):
    signature = {"x_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "u_ptr": f"*{dtype}", "mask_ptr": "*i8",
                 **PARAMS, **SIZES}
    constexprs = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET),
                      CHANNEL_WIDTH=bool(CHANNEL_WIDTH), STORE_U=bool(STORE_U), STORE_MASK=bool(STORE_MASK),
                      BLOCK_N=1024)
    signature.update({k: "constexpr" for k in constexprs})
    label = f"fwd sm_{arch} {dtype} " + " ".join(f"{k}={int(v)}" for k, v in constexprs.items() if k != "BLOCK_N")
    return KernelSpec("kernels.lif:_lif_fwd_kernel", signature, constexprs, DIVISIBLE_FWD, arch, 4, label)


def bwd_spec(dtype, arch, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH):
    signature = {"dy_ptr": f"*{dtype}", "u_ptr": f"*{dtype}", "dx_ptr": f"*{dtype}", "dk_ptr": "*fp32",
                 "partial_ptr": "*fp32", **PARAMS, **SIZES}
    constexprs = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET),
                      CHANNEL_WIDTH=bool(CHANNEL_WIDTH), BLOCK_N=1024)
    signature.update({k: "constexpr" for k in constexprs})
    label = f"bwd sm_{arch} {dtype} " + " ".join(f"{k}={int(v)}" for k, v in constexprs.items() if k != "BLOCK_N")
    return KernelSpec("kernels.lif:_lif_bwd_kernel", signature, constexprs, DIVISIBLE_BWD, arch, 4, label)


def covering_specs():
    """Every dtype × NOISE value, the three binary flags rotated through an L4 covering array."""
    specs = []
    for arch in (80, 90):
        for i, dtype in enumerate(DTYPES):
            for noise in (0, 1, 2):
                sig, hard, chan = BINARY_L4[(noise + i) % 4]
                flags = dict(NOISE=noise, SIGMOID=sig, HARD_RESET=hard, CHANNEL_WIDTH=chan)
                specs.append(fwd_spec(dtype, arch, **flags, STORE_U=True))
                specs.append(bwd_spec(dtype, arch, **flags))
            # eval (no u) and the test-only mask output
            specs.append(fwd_spec(dtype, arch, NOISE=0, SIGMOID=i % 2, HARD_RESET=1, CHANNEL_WIDTH=i % 2,
                                  STORE_U=False))
            specs.append(fwd_spec(dtype, arch, NOISE=2, SIGMOID=1, HARD_RESET=i % 2, CHANNEL_WIDTH=0, STORE_U=True,
                                  STORE_MASK=True))
    return specs


def all_specs():
    """Every specialisation kernels.lif launches (the mask output only with default flags)."""
    specs = []
    for arch, dtype, noise, sig, hard, chan in itertools.product((80, 90), DTYPES, (0, 1, 2), (0, 1), (0, 1), (0, 1)):
        flags = dict(NOISE=noise, SIGMOID=sig, HARD_RESET=hard, CHANNEL_WIDTH=chan)
        specs += [fwd_spec(dtype, arch, **flags, STORE_U=s) for s in (True, False)]
        specs.append(bwd_spec(dtype, arch, **flags))
    for arch, dtype, noise in itertools.product((80, 90), DTYPES, (0, 1, 2)):
        specs.append(fwd_spec(dtype, arch, NOISE=noise, SIGMOID=1, HARD_RESET=1, CHANNEL_WIDTH=0, STORE_U=True,
                              STORE_MASK=True))
    return specs


def check(results):
    problems = []
    for r in results:
        s = r.spec
        if r.error:
            problems.append(f"{s.label}: {r.error[:500]}")
            continue
        if r.spill_bytes != 0 or r.local_bytes != 0 or r.uses_local_memory:
            problems.append(f"{s.label}: spills {r.spill_bytes} B, stack {r.local_bytes} B")
        # the [T, N] streams: fwd x -> y (+u), bwd u, dy -> dx; all 16-byte vectors
        if 4 not in r.vector_widths("ld.global"):
            problems.append(f"{s.label}: no 16-byte global loads {r.vector_widths('ld.global')}")
        if 4 not in r.vector_widths("st.global"):
            problems.append(f"{s.label}: no 16-byte global stores {r.vector_widths('st.global')}")
    assert not problems, "\n".join(problems)


def test_aot_covering_specialisations():
    results = compile_kernels(covering_specs())
    check(results)
    for r in results:
        print(f"{r.spec.label}: {r.registers} registers, spills {r.spill_bytes} B")


def test_aot_every_specialisation():
    results = compile_kernels(all_specs())
    check(results)
    regs = {}
    for r in results:
        regs.setdefault(r.spec.label.split(" ")[0] + " sm_" + str(r.spec.arch), []).append(r.registers)
    for k, v in sorted(regs.items()):
        print(f"{k}: registers {min(v)}..{max(v)} over {len(v)} specialisations")
