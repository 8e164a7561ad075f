"""Ahead-of-time compiles of the fused batch norm + LIF kernels for sm_80 and sm_90 (no GPU needed).

Every compile must succeed without spills or local memory, and the per-step streams must move in
16-byte vectors (``.v4.b32``) in the launches the JIT specialises for ordinary shapes (except the
recomputing backward, which holds 2-4 elements per thread to stay free of spills): contiguous
memory with ``H·W`` a multiple of 16 (tiles run along H·W) and channels-last memory with C a
multiple of 16 (``INNER == 1``, tiles run along C). The covering set takes every dtype, every NOISE
mode, the three binary neuron flags rotated through an L4 covering array, the shortcut on and off,
both tile orientations, the forward's loop and its unrolled T (``STATIC_T`` = 1..8), the Philox
groups shared per thread or drawn per element (``ALIGNED``) and the backward's three membrane sources
(recomputed for T = 4 and T = 8, read from memory), on both architectures. Registers per kernel are
printed with ``pytest -s``.
"""

from __future__ import annotations

import pytest
from aot_util import BINARY_L4, DTYPES, compile_kernels, compile_problems, register_table

from perf.aot import bn_lif_apply_spec as apply_spec
from perf.aot import bn_lif_bwd_finalize_spec as finalize_spec
from perf.aot import bn_lif_bwd_spec as bwd_spec
from perf.aot import bn_lif_coef_spec as coef_spec
from perf.aot import bn_lif_tile_groups_spec as tile_groups_spec
from perf.aot import bn_lif_fwd_spec as fwd_spec
from perf.aot import bn_lif_stats_spec as stats_spec

pytestmark = pytest.mark.aot


def covering_specs():
    specs = []
    for arch in (80, 90):
        specs += [coef_spec(arch, BATCH_STATS=b, UPDATE_RUNNING=b) for b in (True, False)]
        specs += [tile_groups_spec(arch, scalars=s) for s in (False, True)]
        specs += [finalize_spec(arch, SIGMOID=(arch == 90) == chan, CHANNEL_WIDTH=chan, BATCH_STATS=not chan)
                  for chan in (False, True)]
        for i, dtype in enumerate(DTYPES):
            for layout in ("contiguous", "channels_last"):
                specs.append(stats_spec(dtype, arch, layout))
            specs.append(apply_spec(dtype, arch))
            for noise in (0, 1, 2):
                sig, hard, chan = BINARY_L4[(noise + i) % 4]
                layout = ("contiguous", "channels_last")[(noise + i + arch // 10) % 2]
                flags = dict(NOISE=noise, SIGMOID=sig, HARD_RESET=hard, CHANNEL_WIDTH=chan,
                             HAS_RESIDUAL=(noise + i) % 2)
                # the Philox groups shared in a thread or drawn per element (ALIGNED, NOISE = 2 only)
                aligned = (noise + i + arch // 10) % 2 == 0
                specs.append(fwd_spec(dtype, arch, layout, **flags, STORE_U=noise == 1, ALIGNED=aligned))
                specs.append(fwd_spec(dtype, arch, layout, **flags, STORE_U=False, ALIGNED=not aligned,
                                      STATIC_T=1 + (noise + 3 * i + arch // 10) % 8))
                if noise == 0:
                    specs.append(fwd_spec(dtype, arch, layout, **flags, STORE_U=False, FOLD=True))
                for recompute_t in (4, 8, 0):
                    specs.append(bwd_spec(dtype, arch, layout, **flags, RECOMPUTE_T=recompute_t, ALIGNED=aligned))
    return specs


def check(results):
    problems = []
    for r in results:
        problems += compile_problems(r)
        if r.error:
            continue
        if r.spec.label.startswith(("coef", "bwd_finalize", "tile_groups")):
            continue  # [C] vectors, tables of per-tile sums and scalars: no per-element streams
        if "RECOMPUTE_T=4" in r.spec.label or "RECOMPUTE_T=8" in r.spec.label:
            continue  # 2-4 elements per thread by design (asgl.kernels.bn_lif.BWD_BLOCK): narrower vectors
        if 4 not in r.vector_widths("ld.global"):
            problems.append(f"{r.spec.label}: no 16-byte global loads {r.vector_widths('ld.global')}")
        if not r.spec.label.startswith("stats") and 4 not in r.vector_widths("st.global"):
            problems.append(f"{r.spec.label}: no 16-byte global stores {r.vector_widths('st.global')}")
    assert not problems, "\n".join(problems)


def test_aot_covering_specialisations():
    results = compile_kernels(covering_specs(), jobs=2)
    register_table(results)
    check(results)
