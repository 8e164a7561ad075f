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

from aot_util import all_specs, compile_kernels, compile_problems, covering_specs, register_table
from perf.aot import RLIF_H as H
from perf.aot import rlif_blocks
from perf.aot import rlif_bwd_spec as bwd_spec
from perf.aot import rlif_fwd_spec as fwd_spec

pytestmark = pytest.mark.aot

BLOCK_H, BLOCK_K, NUM_WARPS = 256, 16, 8  # what asgl.kernels.rlif._blocks(240) picks


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
        if tensor_cores != (s.label.startswith("rfwd") and " fp32 " not in s.label):
            problems.append(f"{s.label}: tensor-core instructions {'present' if tensor_cores else 'missing'}")
    assert not problems, "\n".join(problems)


def test_specs_use_the_launch_configuration():
    from asgl.kernels.rlif import BLOCK_B, _blocks

    blocks, num_warps = rlif_blocks(H)
    assert _blocks(H) == (BLOCK_H, BLOCK_K, NUM_WARPS) == (blocks["BLOCK_H"], blocks["BLOCK_K"], num_warps)
    assert blocks["BLOCK_B"] == BLOCK_B


def test_rlif_aot_covering_specialisations():
    results = compile_kernels(covering_specs(fwd_spec, bwd_spec), jobs=2)
    check(results)
    register_table(results)


@pytest.mark.slow
def test_rlif_aot_every_specialisation():
    results = compile_kernels(all_specs(fwd_spec, bwd_spec), jobs=2)
    check(results)
    register_table(results)
