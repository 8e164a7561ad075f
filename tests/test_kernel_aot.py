"""Ahead-of-time compiles of the fused LIF kernels for sm_80 and sm_90 (no GPU needed).

Each compile must succeed, must not spill to local memory, and must keep the per-step global loads
and stores of the [T, N] tensors 16 bytes wide (``.v4.b32``: 4 fp32 or 8 fp16/bf16 per thread) when
N is a multiple of 16, which is the case the JIT specialises; the one configuration with 4 neurons
per thread (BLOCK_N = 128) keeps them 8 bytes wide in 16-bit dtypes. The default run compiles a
covering subset (every dtype, every value of every constexpr, both kernels, both archs), every
launch configuration :func:`asgl.kernels.lif._launch_config` can choose, the kernels unrolled over
a compile-time T (``STATIC_T`` = 1..8, each several times), and the finalize kernel; a
second test (``slow``: ``make test-all``) compiles every specialisation ``asgl.kernels.lif`` can
launch at the default configuration (5-8 minutes on 2 cores since the time loops are unrolled by 8;
the covering subset keeps every pair of flag values in the normal run).
"""

from __future__ import annotations

import itertools

import pytest

from aot_util import (
    all_specs, compile_kernels, compile_problems, config_specs, covering_specs, register_table, static_t_specs,
)
from perf.aot import lif_bwd_spec, lif_finalize_spec, lif_fwd_spec


def check(results):
    problems = []
    for r in results:
        problems += compile_problems(r)
        if r.error:
            continue
        s = r.spec
        # the [T, N] streams: fwd x -> y (+u), bwd u, dy -> dx; 16-byte vectors (8 bytes at 4
        # neurons per thread in 16-bit dtypes)
        width = 4 if s.elements_per_thread * {"fp32": 4, "fp16": 2, "bf16": 2}[s.dtype] >= 16 else 2
        if width not in r.vector_widths("ld.global"):
            problems.append(f"{s.label}: no {4 * width}-byte global loads {r.vector_widths('ld.global')}")
        if width not in r.vector_widths("st.global"):
            problems.append(f"{s.label}: no {4 * width}-byte global stores {r.vector_widths('st.global')}")
    assert not problems, "\n".join(problems)


def test_aot_covering_specialisations_and_configurations():
    specs = covering_specs(lif_fwd_spec, lif_bwd_spec) + config_specs() + static_t_specs()
    results = compile_kernels(specs, jobs=2)
    check(results)
    register_table(results)


def test_aot_finalize():
    specs = [lif_finalize_spec(arch, SIGMOID=s, CHANNEL_WIDTH=c) for arch, s, c in
             itertools.product((80, 90), (0, 1), (0, 1))]
    results = compile_kernels(specs, jobs=2)
    problems = [p for r in results for p in compile_problems(r)]
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_aot_every_specialisation():
    results = compile_kernels(all_specs(lif_fwd_spec, lif_bwd_spec), jobs=2)
    check(results)
    register_table(results)


@pytest.mark.parametrize("N", [2**16, 2**18, 2**20, 2**24, 1000])
def test_launch_configuration_two_programs_per_sm(N):
    import torch
    import triton

    from asgl.kernels.lif import CONFIGS, DEFAULT_SMS, _launch_config

    block_n, num_warps = _launch_config(N, torch.device("cpu"))
    assert (block_n, num_warps) in CONFIGS
    programs = triton.cdiv(N, block_n)
    if N >= 2**16:  # two waves of one program per SM down to N = 2^16
        assert programs >= 2 * DEFAULT_SMS, (N, block_n, programs)
    if block_n != CONFIGS[0][0]:  # never smaller than needed
        bigger = CONFIGS[[c[0] for c in CONFIGS].index(block_n) - 1][0]
        assert triton.cdiv(N, bigger) < 2 * DEFAULT_SMS
