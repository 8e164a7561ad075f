"""Ahead-of-time compiles of the fused batch norm + LIF kernels for sm_80 and sm_90 (no GPU needed).

Every compile must succeed without spills or local memory, and the per-step streams must move in
16-byte vectors (``.v4.b32``) in the launches the JIT specialises for ordinary shapes (except the
recomputing backward, which holds 2-4 elements per thread to stay free of spills): contiguous
memory with ``H·W`` a multiple of 16 (tiles run along H·W) and channels-last memory with C a
multiple of 16 (``INNER == 1``, tiles run along C). The covering set takes every dtype, every NOISE
mode, the three binary neuron flags rotated through an L4 covering array, the shortcut on and off,
both tile orientations and the backward's three membrane sources (recomputed for T = 4 and T = 8,
read from memory), on both architectures. Registers per kernel are printed with ``pytest -s``.
"""

from __future__ import annotations

from aot_util import BINARY_L4, DTYPES, KernelSpec, compile_kernels, compile_problems, register_table

PARAMS = {"decay_logit_ptr": "*fp32", "width_ptr": "*fp32", "theta_ptr": "*fp32", "seed_ptr": "*i64"}
# (BLOCK_O, BLOCK_C, BLOCK_I) for 1024- and 512-element tiles, per orientation
TILES = {(layout, block): (block // 64, 64, 1) if layout == "channels_last" else (block // 64, 1, 64)
         for layout in ("contiguous", "channels_last") for block in (1024, 512, 256)}


def _sizes(layout):
    sig = {"T": "i32", "OUTER": "i32", "C": "i32", "INNER": "i32"}
    const = {}
    if layout == "channels_last":
        sig["INNER"] = "constexpr"  # the JIT specialises an int argument equal to 1
        const["INNER"] = 1
    return sig, const


def _spec(kernel, label, signature, constexprs, divisible, arch, num_warps):
    signature = {**signature, **{k: "constexpr" for k in constexprs if k not in signature}}
    return KernelSpec(f"kernels.bn_lif:{kernel}", signature, constexprs, divisible, arch, num_warps, label)


def fwd_spec(dtype, arch, layout, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH, HAS_RESIDUAL, STORE_U):
    sizes, const = _sizes(layout)
    bo, bc, bi = TILES[layout, 1024]
    sig = {"x_ptr": f"*{dtype}", "r_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "u_ptr": f"*{dtype}", "mask_ptr": "*i8",
           "scale_ptr": "*fp32", "shift_ptr": "*fp32", **PARAMS, **sizes, "v_reset": "fp32", "p": "fp32"}
    flags = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET), CHANNEL_WIDTH=bool(CHANNEL_WIDTH),
                 HAS_RESIDUAL=bool(HAS_RESIDUAL), STORE_U=bool(STORE_U), STORE_MASK=False)
    const = {**const, **flags, "BLOCK_O": bo, "BLOCK_C": bc, "BLOCK_I": bi}
    label = f"fwd sm_{arch} {dtype} {layout} " + " ".join(f"{k}={int(v)}" for k, v in flags.items())
    divisible = ("x_ptr", "r_ptr", "y_ptr", "u_ptr", "mask_ptr", "scale_ptr", "shift_ptr", *PARAMS,
                 "C" if layout == "channels_last" else "INNER")
    return _spec("_bn_lif_fwd_kernel", label, sig, const, divisible, arch, 4)


def bwd_spec(dtype, arch, layout, *, NOISE, SIGMOID, HARD_RESET, CHANNEL_WIDTH, HAS_RESIDUAL, RECOMPUTE_T):
    sizes, const = _sizes(layout)
    block = {0: 1024, 4: 512, 8: 256}[RECOMPUTE_T]  # kernels.bn_lif.BWD_BLOCK
    bo, bc, bi = TILES[layout, block]
    sig = {"dy_ptr": f"*{dtype}", "x_ptr": f"*{dtype}", "r_ptr": f"*{dtype}", "u_ptr": f"*{dtype}",
           "g_ptr": f"*{dtype}", "partial_ptr": "*fp32", "chan_ptr": "*fp32", "scale_ptr": "*fp32",
           "shift_ptr": "*fp32", "mean_ptr": "*fp32", "rstd_ptr": "*fp32", **PARAMS, **sizes, "v_reset": "fp32",
           "p": "fp32"}
    flags = dict(NOISE=NOISE, SIGMOID=bool(SIGMOID), HARD_RESET=bool(HARD_RESET), CHANNEL_WIDTH=bool(CHANNEL_WIDTH),
                 HAS_RESIDUAL=bool(HAS_RESIDUAL), RECOMPUTE_T=RECOMPUTE_T)
    const = {**const, **flags, "BLOCK_O": bo, "BLOCK_C": bc, "BLOCK_I": bi}
    label = f"bwd sm_{arch} {dtype} {layout} " + " ".join(f"{k}={int(v)}" for k, v in flags.items())
    divisible = ("dy_ptr", "x_ptr", "r_ptr", "u_ptr", "g_ptr", "partial_ptr", "chan_ptr", "scale_ptr", "shift_ptr",
                 "mean_ptr", "rstd_ptr", *PARAMS, "C" if layout == "channels_last" else "INNER")
    return _spec("_bn_lif_bwd_kernel", label, sig, const, divisible, arch, 4)


def stats_spec(dtype, arch, layout):
    sizes, const = _sizes(layout)
    bo, bc, bi = TILES[layout, 1024]
    sig = {"x_ptr": f"*{dtype}", "shift_ptr": "*fp32", "partial_ptr": "*fp32", **sizes}
    const = {**const, "BLOCK_O": bo, "BLOCK_C": bc, "BLOCK_I": bi}
    divisible = ("x_ptr", "shift_ptr", "partial_ptr", "C" if layout == "channels_last" else "INNER")
    return _spec("_bn_stats_kernel", f"stats sm_{arch} {dtype} {layout}", sig, const, divisible, arch, 4)


def apply_spec(dtype, arch):
    sig = {"g_ptr": f"*{dtype}", "x_ptr": f"*{dtype}", "dx_ptr": f"*{dtype}", "k1_ptr": "*fp32", "k2_ptr": "*fp32",
           "k3_ptr": "*fp32", "mean_ptr": "*fp32", "TN": "i64", "C": "i32", "INNER": "i32"}
    divisible = ("g_ptr", "x_ptr", "dx_ptr", "k1_ptr", "k2_ptr", "k3_ptr", "mean_ptr", "TN")
    return _spec("_bn_grad_apply_kernel", f"apply sm_{arch} {dtype}", sig, {"BLOCK": 1024}, divisible, arch, 4)


def covering_specs():
    specs = []
    for arch in (80, 90):
        for i, dtype in enumerate(DTYPES):
            for layout in ("contiguous", "channels_last"):
                specs.append(stats_spec(dtype, arch, layout))
            specs.append(apply_spec(dtype, arch))
            for noise in (0, 1, 2):
                sig, hard, chan = BINARY_L4[(noise + i) % 4]
                layout = ("contiguous", "channels_last")[(noise + i + arch // 10) % 2]
                flags = dict(NOISE=noise, SIGMOID=sig, HARD_RESET=hard, CHANNEL_WIDTH=chan,
                             HAS_RESIDUAL=(noise + i) % 2)
                specs.append(fwd_spec(dtype, arch, layout, **flags, STORE_U=noise == 1))
                for recompute_t in (4, 8, 0):
                    specs.append(bwd_spec(dtype, arch, layout, **flags, RECOMPUTE_T=recompute_t))
    return specs


def check(results):
    problems = []
    for r in results:
        problems += compile_problems(r)
        if r.error:
            continue
        if "RECOMPUTE_T=4" in r.spec.label or "RECOMPUTE_T=8" in r.spec.label:
            continue  # 2-4 elements per thread by design (kernels.bn_lif.BWD_BLOCK): narrower vectors
        if 4 not in r.vector_widths("ld.global"):
            problems.append(f"{r.spec.label}: no 16-byte global loads {r.vector_widths('ld.global')}")
        if not r.spec.label.startswith("stats") and 4 not in r.vector_widths("st.global"):
            problems.append(f"{r.spec.label}: no 16-byte global stores {r.vector_widths('st.global')}")
    assert not problems, "\n".join(problems)


def test_aot_covering_specialisations():
    results = compile_kernels(covering_specs())
    register_table(results)
    check(results)
