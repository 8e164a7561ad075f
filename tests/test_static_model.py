"""Performance budgets read from the compiled code (CPU, no GPU): ``perf/static_model.py``.

The fused LIF kernels are compiled for sm_90 and their time loops counted in SASS instructions
per element-step (amortised as the model documents). Budgets, for bf16, sigmoid, hard reset,
layer width, storing u — the path every recipe trains on — at p = 0 and 0 < p < 1:

    forward  p = 0 <= 20,  0 < p < 1 <= 32;    backward  p = 0 <= 36,  0 < p < 1 <= 44

An H200 issues about 33.5 T lane-instructions/s and moves 6 B per element-step per pass at about
4.3 TB/s, so a pass stays memory bound below about 46 instructions per element-step; the budgets
keep a margin. The rectangle, soft-reset, channel-width, fp32 and fp16 variants have no budget of
their own but may not regress by more than 15 % against ``perf/static_baseline.json`` (rewritten
by ``python perf/static_model.py --write-baseline`` when a change is meant). None may spill, read
or write more than 6 B (bf16) per element-step and pass, or cross layouts through shared memory
inside the time loop.
"""

from __future__ import annotations

import json

import pytest

from perf.aot import KernelSpec
from perf.static_model import BASELINE, BUDGETS, loop_cost, natural_loops, parse_sass, variant_table

pytestmark = pytest.mark.aot

REGRESSION = 1.15


@pytest.fixture(scope="module")
def table():
    rows = variant_table(jobs=2)
    print("\nvariant: SASS instructions / MUFU / bytes per element-step, registers")
    for name, r in rows.items():
        print(f"  {name:24s} {r.get('loop_instructions_per_element_step'):7} {r.get('mufu_per_element_step'):6} "
              f"{r.get('bytes_per_element_step'):6} {r.get('regs'):4}")
    return rows


def _name(kind, noise):
    return f"{kind} p{'0' if noise == 0 else '.2'} bf16"


@pytest.mark.parametrize("kind,noise", sorted(BUDGETS))
def test_instruction_budget(table, kind, noise):
    row = table[_name(kind, noise)]
    assert "error" not in row, row.get("error")
    got, budget = row["loop_instructions_per_element_step"], BUDGETS[(kind, noise)]
    assert got <= budget, f"{_name(kind, noise)}: {got} SASS instructions per element-step > budget {budget}"


def test_every_variant_bytes_spills_and_shared_memory(table):
    problems = []
    for name, row in table.items():
        if "error" in row:
            problems.append(f"{name}: {row['error'][:300]}")
            continue
        s = 4 if row["dtype"] == "fp32" else 2
        if row["bytes_per_element_step"] > 3 * s:  # fwd: x, y, u; bwd: u, dy, dx
            problems.append(f"{name}: {row['bytes_per_element_step']} B per element-step > {3 * s}")
        if row["spills"]:
            problems.append(f"{name}: {row['spills']} B of spills")
        if row["loop_shared_memory_ops"]:
            problems.append(f"{name}: {row['loop_shared_memory_ops']} shared-memory ops in the time loop")
    assert not problems, "\n".join(problems)


def test_variants_against_the_baseline(table):
    baseline = json.loads(BASELINE.read_text())
    assert set(baseline) == set(table), (
        f"variants changed ({sorted(set(baseline) ^ set(table))}): rewrite the baseline with "
        "`python perf/static_model.py --write-baseline`")
    worse = []
    for name, old in baseline.items():
        new = table[name]
        for field in ("loop_instructions_per_element_step", "bytes_per_element_step"):
            if new[field] > REGRESSION * old[field]:
                worse.append(f"{name}: {field} {old[field]} -> {new[field]}")
    assert not worse, "regressed by more than 15 %:\n" + "\n".join(worse)


SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   MOV R2, RZ ;
.L_x_0:
        /*0020*/                   ISETP.NE.AND P0, PT, R2, 0x7, PT ;
        /*0030*/               @P0 BRA `(.L_x_1) ;
        /*0040*/                   IMAD.HI.U32 R3, R4, -0x2daee0ad, RZ ;
        /*0050*/                   LOP3.LUT R3, R3, R5, R6, 0x96, !PT ;
.L_x_1:
        /*0060*/                   LDG.E.128 R8, desc[UR4][R6.64] ;
        /*0070*/                   MUFU.EX2 R9, R9 ;
.L_x_2:
        /*0080*/                   FFMA R10, R8, R9, R10 ;
        /*0090*/               @P1 BRA `(.L_x_2) ;
        /*00a0*/                   STG.E.64 desc[UR4][R6.64], R10 ;
        /*00b0*/               @P2 BRA `(.L_x_0) ;
        /*00c0*/                   EXIT ;
.L_x_3:
        /*00d0*/                   BRA `(.L_x_3);
"""


def test_loop_reading_on_a_known_sass():
    blocks = parse_sass(SASS)
    loops = natural_loops(blocks)
    assert sorted(len(body) for _, body in loops) == [1, 5]  # inner product loop, time loop
    spec = KernelSpec("m:k", {}, {}, steps_per_iteration=1, elements_per_thread=2.0, inner_trips=3)
    cost = loop_cost(SASS, spec)
    # time loop: 2 + 2 (Philox block, once every STEPS_PER_DRAW steps) + 2 + 2·3 (inner loop) + 2
    from asgl.kernels.common import STEPS_PER_DRAW

    assert cost.instructions == pytest.approx((2 + 2 / int(STEPS_PER_DRAW) + 2 + 6 + 2) / 2)
    assert cost.mufu == pytest.approx(1 / 2)
    assert cost.bytes == pytest.approx((16 + 8) / 2)
    assert cost.prologue_epilogue == 4  # two MOVs, EXIT and the trap after it (which is no loop)
    assert cost.total_instructions == 14
