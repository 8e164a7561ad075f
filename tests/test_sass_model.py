"""The static model's parts that need no compile: the SASS executor (``perf/sass.py``) on hand-written
SASS, the time of a launch from hand-made costs (``perf.static_model.predict_kernel``), and the
calibration's fit on rows generated from known parameters (``perf/recipes.py``)."""

from __future__ import annotations

import math

import pytest

from perf.devices import DEVICES, FREE_PARAMETERS, ISSUE_LANES_PER_SM_CLOCK, LAUNCH_GAP_US, copy_bandwidth
from perf.recipes import fit
from perf.sass import SassError, pipe_of, run
from perf.static_model import KernelCost, predict_kernel, predict_op

T_OFFSET = 0x210  # the first kernel argument in the constant bank (sm_90)

# for (t0 = 0; t0 < T; t0 += 2) { step t0; if (t0 + 1 < T) step t0 + 1 }: a 2-step unrolled loop
# whose second step is guarded, a load used in each step, a predicated store, then EXIT
LOOP = """
        /*0000*/                   LDC R0, c[0x0][0x210] ;
        /*0010*/                   MOV R2, RZ ;
        /*0020*/                   ISETP.GE.AND P0, PT, R0, 0x1, PT ;
        /*0030*/              @!P0 EXIT ;
.L_x_0:
        /*0040*/                   LDG.E R4, desc[UR4][R6.64] ;
        /*0050*/                   FADD R5, R4, 1 ;
        /*0060*/                   IADD3 R3, R2, 0x1, RZ ;
        /*0070*/                   ISETP.GE.AND P1, PT, R3, R0, PT ;
        /*0080*/               @P1 BRA `(.L_x_1) ;
        /*0090*/                   LDG.E R4, desc[UR4][R6.64+0x4] ;
        /*00a0*/                   FMUL R5, R4, R5 ;
        /*00b0*/                   MUFU.EX2 R5, R5 ;
.L_x_1:
        /*00c0*/                   IADD3 R2, R2, 0x2, RZ ;
        /*00d0*/                   ISETP.GE.AND P2, PT, R2, R0, PT ;
        /*00e0*/              @!P2 BRA `(.L_x_0) ;
        /*00f0*/                   STG.E desc[UR4][R6.64], R5 ;
        /*0100*/                   EXIT ;
.L_x_2:
        /*0110*/                   BRA `(.L_x_2);
"""


@pytest.mark.parametrize("T", [1, 2, 3, 7, 40])
def test_the_path_follows_the_guards_and_the_back_edge(T):
    trace = run(LOOP, {T_OFFSET: T})
    iterations, partial = math.ceil(T / 2), T % 2
    # prologue 4, each iteration 5 + 3 (the guarded step) + 3, the partial one without its 3, epilogue 2
    assert trace.issued == 4 + iterations * 11 - 3 * partial + 2
    assert trace.round_trips == T  # each step's load is used at once
    assert trace.counts.get(11, 0) == T // 2  # MUFU.EX2 of the guarded second step
    assert not trace.assumed and not trace.divergent
    assert trace.pipes().get("xu", 0) == T // 2


def test_a_long_loop_is_fast_forwarded_exactly():
    fast, plain = run(LOOP, {T_OFFSET: 5001}), run(LOOP, {T_OFFSET: 5001}, fast_forward_loops=False)
    assert fast.skipped_iterations > 2000
    assert fast.counts == plain.counts and fast.round_trips == plain.round_trips


@pytest.mark.parametrize("T,group,expected", [(10, 4, 4), (3, 4, 3), (-5, 4, -5)])
def test_a_loop_bounded_by_an_add_and_min_runs_its_trips(T, group, expected):
    """``VIADDMNMX`` (sm_90: ``min(a + b, c)`` under PT, ``max`` under !PT) as a loop bound: the
    trip count ``min(T + 0, group)`` of a 2-step loop whose second step is guarded."""
    sass = LOOP.replace("LDC R0, c[0x0][0x210] ;", "VIADDMNMX R0, RZ, c[0x0][0x210], c[0x0][0x214], PT ;")
    trace = run(sass, {T_OFFSET: T, T_OFFSET + 4: group})
    trips = max(expected, 0)
    assert trace.counts.get(4, 0) == math.ceil(trips / 2)  # the loop's first load, once per iteration
    assert trace.round_trips == trips
    with_max = run(sass.replace(", PT ;", ", !PT ;", 1), {T_OFFSET: T, T_OFFSET + 4: group})
    assert with_max.round_trips == max(T, group)
    # a negated constant operand: min(0 - T, group) steps
    negated = run(sass.replace("RZ, c[0x0][0x210]", "RZ, -c[0x0][0x210]"), {T_OFFSET: -T, T_OFFSET + 4: group})
    assert negated.round_trips == max(expected, 0)


def test_a_loop_on_a_loaded_value_is_refused():
    sass = LOOP.replace("ISETP.GE.AND P2, PT, R2, R0, PT", "ISETP.GE.AND P2, PT, R2, R4, PT")
    with pytest.raises(SassError, match="depends on a loaded"):
        run(sass, {T_OFFSET: 4})


def test_a_data_dependent_forward_branch_is_listed():
    sass = LOOP.replace("ISETP.GE.AND P1, PT, R3, R0, PT", "FSETP.GT.AND P1, PT, R4, R5, PT")
    trace = run(sass, {T_OFFSET: 3})
    assert trace.assumed == [8] * 2  # taken as not taken, once per iteration


def test_a_thread_dependent_branch_counts_its_fall_through():
    sass = """
        /*0000*/                   S2R R0, SR_TID.X ;
        /*0010*/                   ISETP.NE.AND P0, PT, R0, RZ, PT ;
        /*0020*/               @!P0 BRA `(.L_x_0) ;
        /*0030*/                   MOV R1, 0x1 ;
        /*0040*/                   MOV R1, 0x2 ;
.L_x_0:
        /*0050*/                   EXIT ;
"""
    trace = run(sass, {})  # thread 0 would branch; the warp's other lanes run the fall-through
    assert trace.issued == 6 and trace.divergent == [2]


def test_pipes_of_the_opcodes():
    assert [pipe_of(op) for op in ("MUFU.EX2", "F2F.BF16.F32", "IMAD.HI.U32", "FFMA", "LOP3.LUT", "LDG.E.128",
                                   "UIADD3", "BRA")] == ["xu", "xu", "fmaheavy", "fma", "alu", "lsu", "uniform",
                                                         "other"]


# ---------------------------------------------------------------------------------------------
# The time of a launch, by hand
# ---------------------------------------------------------------------------------------------


def _cost(**kw) -> KernelCost:
    base = dict(label="k", kind="elementwise", programs=132 * 8 * 10, warps=4, resident=8, instructions=100,
                pipes={}, read_bytes=4096, write_bytes=4096, round_trips=1, per_element_step=1.0)
    return KernelCost(**{**base, **kw})


def test_a_streaming_launch_is_memory_bound():
    c = _cost()
    p = predict_kernel(c, "H200")
    memory = c.programs * 8192 / copy_bandwidth("H200")
    assert p["bound"] == "memory"
    assert p["seconds"] == pytest.approx(memory + LAUNCH_GAP_US * 1e-6)


def test_an_instruction_heavy_launch_is_issue_bound():
    c = _cost(instructions=20000)
    d = DEVICES["H100"]
    issue = c.programs * c.warps * c.instructions / (
        d["sms"] * ISSUE_LANES_PER_SM_CLOCK / 32 * d["clock_ghz"] * 1e9 * FREE_PARAMETERS["issue_efficiency"])
    p = predict_kernel(c, "H100")
    assert p["bound"] == "issue" and p["device_seconds"] == pytest.approx(issue)


def test_a_conversion_heavy_launch_is_bound_by_its_pipe():
    c = _cost(instructions=20000, pipes={"xu": 15000})
    assert predict_kernel(c, "H200")["bound"] == "pipe:xu"


def test_few_programs_waiting_on_loads_are_latency_bound():
    c = _cost(programs=132, round_trips=250)
    p = predict_kernel(c, "H200")
    assert p["bound"] == "latency"
    assert p["device_seconds"] == pytest.approx(250 * FREE_PARAMETERS["dram_latency_us"] * 1e-6)


def test_a_last_partial_wave_is_counted():
    # 1.1 waves of programs that each wait 50 round trips: the last 0.1 wave costs a whole wave
    c = _cost(programs=int(132 * 8 * 1.1), round_trips=50, read_bytes=64, write_bytes=64)
    p = predict_kernel(c, "H200")
    assert p["bound"] == "waves"
    assert p["device_seconds"] == pytest.approx(2 * 50 * FREE_PARAMETERS["dram_latency_us"] * 1e-6)


def test_a_tiny_launch_is_launch_bound():
    assert predict_kernel(_cost(programs=1, round_trips=0, instructions=10), "H200")["bound"] == "launch"


def test_an_op_adds_its_launches():
    a, b = _cost(), _cost(kind="reduce", programs=1, read_bytes=64, write_bytes=64, round_trips=3)
    op = predict_op([a, b], "H200")
    seconds = predict_kernel(a, "H200")["seconds"] + predict_kernel(b, "H200")["seconds"]
    assert op["ms"] == pytest.approx(1e3 * seconds)
    assert op["pct_of_copy_bw"] == pytest.approx(100 * op["bytes"] / copy_bandwidth("H200") / (op["ms"] / 1e3))


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------


def _samples(params):
    """Rows measured on a GPU whose issue efficiency and DRAM latency are ``params``: issue-bound,
    latency-bound and memory-bound launches on both devices, each 'measured' as the model predicts."""
    costs = [
        [_cost(instructions=12000)], [_cost(instructions=30000, pipes={"xu": 2000})],
        [_cost(programs=264, round_trips=400)], [_cost(programs=132 * 16, round_trips=120, read_bytes=256)],
        [_cost()], [_cost(programs=132 * 8 * 40)], [_cost(instructions=12000), _cost(programs=8, round_trips=900)],
    ]
    return {dev: [(c, dev, predict_op(c, dev, params)["ms"]) for c in costs] for dev in DEVICES}


@pytest.mark.parametrize("truth", [dict(issue_efficiency=0.62, dram_latency_us=0.95),
                                   dict(issue_efficiency=0.9, dram_latency_us=0.35)])
def test_the_fit_recovers_known_parameters(truth):
    for dev, samples in _samples(truth).items():
        result = fit(samples)
        assert result["params"]["issue_efficiency"] == pytest.approx(truth["issue_efficiency"], abs=0.006)
        assert result["params"]["dram_latency_us"] == pytest.approx(truth["dram_latency_us"], rel=0.02)
        assert result["rms_log_error"] < 0.01 and all(result["constrained"].values())


def test_memory_bound_rows_leave_the_parameters_unconstrained():
    samples = [([_cost()], "H200", predict_op([_cost()], "H200")["ms"])]
    result = fit(samples)
    assert result["constrained"] == {"issue_efficiency": False, "dram_latency_us": False}
