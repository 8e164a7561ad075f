"""Static performance model of the fused neuron kernels, from their compiled SASS (no GPU needed).

The launches a neuron op makes are recorded from its own launcher (:mod:`perf.launches`), each
distinct specialisation is compiled ahead of time for sm_90 (and sm_80) on the CPU (:mod:`perf.aot`)
and disassembled with the ``nvdisasm`` that ships with triton.

**Counts.** From the SASS control-flow graph (:mod:`perf.sass`): registers, spills, shared memory,
resident programs per SM; the steady state of the time loop (the outermost natural loop: SASS
instructions per element-step of one long-T iteration, a Philox block counting once per the steps
it serves, the steady-state budgets' measure); and, at the launch's own T and N, the *issued*
instructions: the path one warp runs, got by executing the kernel's integer, predicate and branch
instructions with the launch's arguments (:func:`perf.sass.run`). The prologue, the ⌈T/8⌉
iterations of an 8-step loop with the guarded steps the last one skips (``if t0 + j < T``), a fully
unrolled T <= 8 kernel, the epilogue: whatever the compiler emitted for that T is what is counted.
Why execution rather than a per-step attribution of blocks or a compile with T known:
:mod:`perf.sass`'s docstring. DRAM bytes are the path's global accesses whose address differs per
thread, less those every program repeats and those of the per-channel tables (L2 hits).

**Time of a launch** (:func:`predict_kernel`), on a device of :mod:`perf.devices`, with ``P``
programs of ``W`` warps, ``R`` resident per SM, ``S`` SMs, per program ``B`` DRAM bytes, ``I``
instructions per thread, ``I_k`` of them on pipe k, ``L`` global-load round trips:

* memory   ``P·B / copy bandwidth``
* issue    ``P·W·I / (S · 4 · clock · e)``, e the sustained issue efficiency (free parameter)
* pipe k   ``P·W·I_k / (S · rate_k/32 · clock)``: xu (MUFU and conversions, 16 lanes/clk), fmaheavy
  (integer multiply-add, 64), fma (all FP32 and multiply-add, 128), alu (64), lsu (32), tensor
* latency  Little's law: a program waits ``L`` round trips of the DRAM latency λ (free parameter)
  whatever the bandwidth, and ``R`` programs per SM overlap theirs: ``max(1, P / (S·R)) · L · λ``
  (bytes in flight per SM = R·W·(bytes per warp per round trip), against bandwidth × λ)
* waves    the same terms per wave of ``S·R`` programs, the last (partial) wave counted on its own:
  its programs still wait their ``L·λ`` however few they are (T = 250 on few programs)

(with fewer programs than SMs each SM runs one: the terms per SM are never below one program's).
The launch takes the largest (``waves`` when the wave quantisation adds more than 5 % to the largest
whole-launch term) plus the GPU-side gap between kernels (``launch`` when that gap exceeds the
kernel). An op (a LIF forward; a batch norm + LIF backward = neuron, finalize and apply kernels) is
the sum of its launches; its % of copy bandwidth is its bytes at copy bandwidth over that sum.

    python perf/static_model.py                                  # every launch at T = 4, N = 2^24
    python perf/static_model.py --kernels lif --dtypes bf16 --T 2,4,8 --json perf/out/static_t.json
    python perf/static_model.py --recipes --json perf/out/recipes.json --markdown perf/out/recipes.md
    python perf/static_model.py --calibrate perf/out/<run>/neuron.jsonl
    python perf/static_model.py --write-baseline                 # rewrite perf/static_baseline.json

``--json`` rows: the compile's fields (``kernel``, ``arch``, ``dtype``, the constexprs, ``regs``,
``spills``, ``loop_instructions_per_element_step`` (steady state), ``bytes_per_element_step``,
``mufu_per_element_step``, ...) and, at ``T`` and ``N``: ``issued_instructions_per_element_step``,
``dram_bytes_per_element_step``, ``round_trips``, ``pipes``, ``bound`` (H200), ``bound_h100``,
``predicted_us_h100`` / ``_h200``, ``predicted_pct_of_copy_bw_h100`` / ``_h200`` (issue efficiency
0.8 unless ``--issue-efficiency``). ``--recipes`` rows (:mod:`perf.recipes`): ``recipe``, ``launch``,
``T``, ``N``, ``bound``, ``predicted_ms_h100`` / ``_h200``, ``predicted_pct_of_copy_bw_h100`` /
``_h200``. The calibration's rows: :mod:`perf.recipes`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from perf.aot import ARCHS, DTYPES, CompileResult, KernelSpec, compile_kernels, lif_bwd_spec, lif_fwd_spec
from perf.devices import (
    DEVICES, FREE_PARAMETERS, ISSUE_LANES_PER_SM_CLOCK, LAUNCH_GAP_US, PIPE_LANES_PER_SM_CLOCK, SM_LIMITS,
    copy_bandwidth,
)
from perf.launches import (
    KernelLaunch, kernel_params, lif_op, pointer_offsets, table_launches, table_offsets,
)
from perf.sass import SassError, access_bytes, natural_loops, parse_sass, run  # parse_sass: the tests'

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "perf" / "static_baseline.json"
PHILOX_CONSTANTS = ("0xd2511f53", "-0x2daee0ad", "0xcd9e8d57", "-0x326172a9")
# the launch the per-specialisation table predicts: T = 4, N = 2^24 (a ResNet-18 batch-256 layer)
TABLE_T, TABLE_N = 4, 2**24
# a launch is "waves" bound when the last partial wave adds more than this to its largest term
WAVES_MARGIN = 1.05


# ---------------------------------------------------------------------------------------------
# Compiles (cached for the process)
# ---------------------------------------------------------------------------------------------

_COMPILED: dict[str, CompileResult] = {}


def _key(spec: KernelSpec) -> str:
    return json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)


def compile_specs(specs: list[KernelSpec], jobs: int = 2) -> list[CompileResult]:
    """The compiles of ``specs`` (sass), the missing ones in one batch of ``jobs`` processes."""
    missing = list({_key(s): s for s in specs if _key(s) not in _COMPILED}.values())
    if missing:
        for r in compile_kernels(missing, outputs=("sass",), jobs=jobs):
            _COMPILED[_key(r.spec)] = r
    return [_COMPILED[_key(s)] for s in specs]


def _compiled(spec: KernelSpec) -> CompileResult:
    [r] = compile_specs([spec])
    if r.error:
        raise RuntimeError(f"{spec.label}: {r.error[:500]}")
    return r


# ---------------------------------------------------------------------------------------------
# Steady state of the time loop (the budgets' count)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LoopCost:
    instructions: float  # per element-step
    mufu: float
    bytes: float
    prologue_epilogue: int  # instructions per thread outside the time loop
    total_instructions: int
    shared_memory_ops: int  # LDS/STS/BAR instructions in the time loop, outside nested loops


def loop_cost(sass: str, spec: KernelSpec) -> LoopCost:
    """Amortised SASS cost per element-step of one iteration of the time loop in the steady state:
    one iteration covers ``steps_per_iteration`` steps of ``elements_per_thread`` neurons per
    thread; a block of the Philox draw counts ``min(1, steps_per_iteration / STEPS_PER_DRAW)`` (a
    call serves ``STEPS_PER_DRAW`` steps); a loop nested in the time loop (the recurrent product)
    counts ``inner_trips``."""
    from asgl.kernels.common import STEPS_PER_DRAW

    blocks = parse_sass(sass)
    total = sum(len(b.instructions) for b in blocks)
    is_ldst = re.compile(r"\b(LDG|STG)\b")
    if spec.steps_per_iteration < 0:
        # no time loop: -steps_per_iteration steps unrolled (the recomputing BN+LIF backward), so the
        # whole kernel is one iteration and nothing is prologue or epilogue
        texts = [t for b in blocks for t in b.instructions]
        nbytes = sum(access_bytes(t) for t in texts if is_ldst.search(t))
        smem = sum(bool(re.search(r"\b(LDS|STS|BAR)\b", t)) for t in texts)
        per = -spec.steps_per_iteration * spec.elements_per_thread
        return LoopCost(total / per, sum("MUFU" in t for t in texts) / per, nbytes / per, 0, total, smem)
    loops = natural_loops(blocks)
    if not loops:
        raise ValueError(f"{spec.label}: no loop in the SASS")
    header, body = max(loops, key=lambda hb: len(hb[1]))
    inner = set().union(*(b for h, b in loops if b < body and b != body)) if len(loops) > 1 else set()
    # a loop of one step per iteration draws in one iteration of STEPS_PER_DRAW; an unrolled one
    # draws in every iteration (its draws are blocks of their own steps)
    draw_weight = min(1.0, spec.steps_per_iteration / int(STEPS_PER_DRAW))
    instr = mufu = nbytes = 0.0
    smem_ops = 0
    for b in body:
        texts = blocks[b].instructions
        weight = float(spec.inner_trips) if b in inner else 1.0
        if any(c in t for t in texts for c in PHILOX_CONSTANTS):
            weight *= draw_weight
        instr += weight * len(texts)
        mufu += weight * sum("MUFU" in t for t in texts)
        if b not in inner:
            nbytes += weight * sum(access_bytes(t) for t in texts if is_ldst.search(t))
            smem_ops += sum(bool(re.search(r"\b(LDS|STS|BAR)\b", t)) for t in texts)
    per = spec.steps_per_iteration * spec.elements_per_thread
    in_loop = sum(len(blocks[b].instructions) for b in body)
    return LoopCost(instr / per, mufu / per, nbytes / per, total - in_loop, total, smem_ops)


def occupancy(registers: int, shared: int, num_warps: int, arch: int) -> tuple[int, int]:
    """``(resident blocks, resident warps)`` per SM from registers (allocated per warp in units of
    256), shared memory and the warp/block limits."""
    lim = SM_LIMITS[arch]
    per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256
    blocks = min(lim["blocks"], lim["warps"] // num_warps, lim["regs"] // (per_warp * num_warps))
    if shared > 0:
        blocks = min(blocks, lim["smem"] // shared)
    return blocks, blocks * num_warps


# ---------------------------------------------------------------------------------------------
# One launch at its T and N: the path a warp issues, and its time
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class KernelCost:
    """Per program of one launch (from :func:`perf.sass.run` on program 0)."""

    label: str
    kind: str  # "elementwise" or "reduce"
    programs: int
    warps: int
    resident: int  # programs per SM
    instructions: int  # per thread: the issued path
    pipes: dict  # pipe -> instructions per thread
    read_bytes: int  # DRAM bytes per program
    write_bytes: int
    round_trips: int  # global-load round trips per thread
    per_element_step: float  # issued per element-step (per thread / its element-steps; NaN: no time loop)
    assumed: int = 0  # data-dependent branches taken as not taken
    divergent: int = 0  # thread-dependent branches (fall-through counted)


_COSTS: dict = {}


def kernel_cost(launch: KernelLaunch) -> KernelCost:
    """The :class:`KernelCost` of a launch (compiled and executed once per process)."""
    key = (_key(launch.spec), launch.grid, launch.args)
    if key not in _COSTS:
        s = launch.spec
        r = _compiled(s)
        const = kernel_params(launch)
        trace = run(r.sass, const)
        # not DRAM traffic: an access at the same address in the next program, or one whose address is
        # computed from a table argument alone (perf.launches.TABLE_POINTERS): both re-read L2
        tables, pointers = table_offsets(s), pointer_offsets(s)
        shared = {i for i, src in trace.sources.items() if src & pointers and src & pointers <= tables}
        if launch.grid[0] > 1:
            other = run(r.sass, const, program=1).addresses
            shared |= {i for i, a in trace.addresses.items() if a is not None and other.get(i) == a}
        rd, wr = trace.global_bytes(32 * s.num_warps, shared=shared)
        blocks, _ = occupancy(r.registers, r.shared_bytes, s.num_warps, s.arch)
        T = dict(launch.args).get("T", 1)
        # element-steps of one thread: kernels that walk the time steps (LIF, BN+LIF, recurrent); the
        # statistics, apply and reduction kernels get no per-element-step figure of their own
        steps = T * s.elements_per_thread if launch.kind == "elementwise" and s.steps_per_iteration else 0
        _COSTS[key] = KernelCost(s.label, launch.kind, launch.programs, s.num_warps, max(blocks, 1), trace.issued,
                                 trace.pipes(), rd, wr, trace.round_trips,
                                 trace.issued / steps if steps else float("nan"), len(trace.assumed),
                                 len(trace.divergent))
    return _COSTS[key]


def params_with(**overrides) -> dict:
    """The free parameters (:data:`perf.devices.FREE_PARAMETERS`) with ``overrides``."""
    unknown = set(overrides) - set(FREE_PARAMETERS)
    if unknown:
        raise ValueError(f"unknown model parameters {sorted(unknown)}; known: {sorted(FREE_PARAMETERS)}")
    return {**FREE_PARAMETERS, **{k: v for k, v in overrides.items() if v is not None}}


def _terms(cost: KernelCost, device: str, params: dict, programs_per_sm: float, active_sms: int) -> dict:
    """Seconds of each bound for ``programs_per_sm`` programs on each of ``active_sms`` SMs."""
    d = DEVICES[device]
    clock = d["clock_ghz"] * 1e9
    warp_instr = programs_per_sm * cost.warps
    terms = {
        "memory": active_sms * programs_per_sm * (cost.read_bytes + cost.write_bytes) / copy_bandwidth(device),
        "issue": warp_instr * cost.instructions / (ISSUE_LANES_PER_SM_CLOCK / 32 * clock * params["issue_efficiency"]),
        "latency": cost.round_trips * params["dram_latency_us"] * 1e-6 if programs_per_sm > 0 else 0.0,
    }
    for pipe, lanes in PIPE_LANES_PER_SM_CLOCK.items():
        if cost.pipes.get(pipe):
            terms[f"pipe:{pipe}"] = warp_instr * cost.pipes[pipe] / (lanes / 32 * clock)
    return terms


def predict_kernel(cost: KernelCost, device: str, params: dict | None = None) -> dict:
    """``{"seconds", "device_seconds", "bound", "terms", "waves"}`` of one launch (module docstring)."""
    params = params or FREE_PARAMETERS
    S = DEVICES[device]["sms"]
    P, R = cost.programs, cost.resident
    per_wave = S * R
    # the whole launch as if evenly spread: each SM runs P/S programs (at least one: a program is not
    # split), R at a time
    whole = _terms(cost, device, params, max(P / S, 1.0), min(P, S))
    whole["latency"] *= max(1.0, P / per_wave)
    full, tail = divmod(P, per_wave)
    t_waves = full * max(_terms(cost, device, params, R, S).values())
    if tail:
        t_waves += max(_terms(cost, device, params, math.ceil(tail / S), min(tail, S)).values())
    bound = max(whole, key=whole.get)
    t = max(whole[bound], t_waves)
    if t_waves > WAVES_MARGIN * whole[bound]:
        bound = "waves"
    gap = LAUNCH_GAP_US * 1e-6
    if gap > t:
        bound = "launch"
    return dict(seconds=t + gap, device_seconds=t, bound=bound, terms=whole, waves=P / per_wave)


def predict_op(costs: list[KernelCost], device: str, params: dict | None = None) -> dict:
    """``{"ms", "bound", "pct_of_copy_bw", "bytes"}`` of launches run one after another: the bound
    of the one that takes longest (``launch`` when the gaps between them take longer still)."""
    preds = [predict_kernel(c, device, params) for c in costs]
    seconds = sum(p["seconds"] for p in preds)
    nbytes = sum(c.programs * (c.read_bytes + c.write_bytes) for c in costs)
    gaps = sum(p["seconds"] - p["device_seconds"] for p in preds)
    slowest = max(preds, key=lambda p: p["device_seconds"])
    bound = "launch" if gaps > slowest["device_seconds"] else slowest["bound"]
    return dict(ms=1e3 * seconds, bound=bound, pct_of_copy_bw=100.0 * nbytes / copy_bandwidth(device) / seconds,
                bytes=nbytes)


# ---------------------------------------------------------------------------------------------
# The benchmark's rows (perf/bench_neuron.py): the fused LIF at a (T, N)
# ---------------------------------------------------------------------------------------------


def _noise_mode(p: float) -> int:
    return 0 if p == 0 else (1 if p == 1 else 2)


def _neuron_launches(dtype: str, p: float, passes: str, T: int, N: int) -> list[KernelLaunch]:
    return [k for pas in passes.split("+") for k in lif_op(pas, (T, N), dtype=dtype, p=p)]


def prepare_neuron_predictions(dtypes, ps, jobs: int = 8, shapes=((TABLE_T, TABLE_N),)) -> None:
    """Compile, in one batch of ``jobs`` processes, what :func:`neuron_prediction` needs."""
    specs = [k.spec for d, p, (T, N) in itertools.product(dtypes, ps, shapes)
             for k in _neuron_launches(d, p, "fwd+bwd", T, N)]
    for r in compile_specs(specs, jobs=jobs):
        if r.error:
            raise RuntimeError(f"{r.spec.label}: {r.error[:500]}")


def neuron_prediction(dtype: str, p: float, passes: str, device: str, T: int = TABLE_T, N: int = TABLE_N,
                      params: dict | None = None) -> dict:
    """The model's prediction for a fused row of ``perf/bench_neuron.py`` (sigmoid, hard reset, layer
    width, the training forward storing u) at ``T`` steps of ``N`` neurons: ``passes`` is ``fwd``,
    ``bwd`` (backward and finalize) or ``fwd+bwd``. ``{"ms", "bound", "pct_of_copy_bw", "bytes"}``."""
    return predict_op([kernel_cost(k) for k in _neuron_launches(dtype, p, passes, T, N)], device, params)


# ---------------------------------------------------------------------------------------------
# The per-specialisation table
# ---------------------------------------------------------------------------------------------


def kernel_name(spec: KernelSpec) -> str:
    return spec.kernel.split(":")[1]


def analyse(result: CompileResult) -> dict:
    """The compile's row for one specialisation: registers, occupancy, the steady state."""
    s = result.spec
    row = dict(kernel=kernel_name(s), label=s.label, arch=s.arch, dtype=s.dtype, num_warps=s.num_warps,
               **{k: (int(v) if isinstance(v, bool) else v) for k, v in s.constexprs.items()})
    if result.error:
        return dict(row, error=result.error[:2000])
    blocks, warps = occupancy(result.registers, result.shared_bytes, s.num_warps, s.arch)
    row.update(regs=result.registers, spills=result.spill_bytes, shared_bytes=result.shared_bytes,
               blocks_per_sm=blocks, warps_per_sm=warps)
    if s.steps_per_iteration and "finalize" not in s.kernel:  # 0: no time loop (finalize, BN statistics)
        cost = loop_cost(result.sass, s)
        row.update(loop_instructions_per_element_step=round(cost.instructions, 2),
                   mufu_per_element_step=round(cost.mufu, 3), bytes_per_element_step=round(cost.bytes, 3),
                   prologue_epilogue_instructions=cost.prologue_epilogue, sass_instructions=cost.total_instructions,
                   loop_shared_memory_ops=cost.shared_memory_ops)
    return row


def launch_row(launch: KernelLaunch, T: int, N: int, params: dict | None = None) -> dict:
    """:func:`analyse`'s row for the launch's specialisation, with the launch at ``T`` steps of ``N``
    elements (:func:`perf.launches.table_launches`): the issued instructions per element-step and,
    per device, the bound, the time and the % of copy bandwidth."""
    result = _compiled_or_error(launch.spec)
    row = analyse(result)
    if result.error:
        return row
    try:
        cost = kernel_cost(launch)
    except SassError as e:  # a path the executor cannot decide: reported in the row, the table goes on
        return dict(row, error=f"SASS path at T = {T}: {e}")
    reads, writes = cost.read_bytes, cost.write_bytes
    steps = T * launch.spec.elements_per_thread * 32 * launch.spec.num_warps
    row.update(T=T, N=N, programs=launch.programs, grid=list(launch.grid), issued_instructions=cost.instructions,
               issued_instructions_per_element_step=None if math.isnan(cost.per_element_step)
               else round(cost.per_element_step, 2), round_trips=cost.round_trips,
               dram_bytes_per_element_step=round((reads + writes) / steps, 3) if launch.kind == "elementwise"
               else None, pipes={k: v for k, v in sorted(cost.pipes.items())}, assumed_branches=cost.assumed)
    for dev in DEVICES:
        pred = predict_op([cost], dev, params)
        tag = dev.lower()
        row[f"bound_{tag}"] = pred["bound"]
        row[f"predicted_us_{tag}"] = round(1e3 * pred["ms"], 2)
        row[f"predicted_pct_of_copy_bw_{tag}"] = round(pred["pct_of_copy_bw"], 1) if launch.kind == "elementwise" \
            else None
    row["bound"] = row["bound_h200"]
    return row


def _compiled_or_error(spec: KernelSpec) -> CompileResult:
    [r] = compile_specs([spec])
    return r


# The budget specialisations (sm_90, bf16, sigmoid, hard reset, layer width, storing u) and the
# variants listed beside them; tests/test_static_model.py holds the budgets and the baseline.
BUDGETS = {  # (kernel, NOISE) -> max SASS instructions per element-step of the time loop, steady state
    ("fwd", 0): 20, ("fwd", 2): 32, ("bwd", 0): 36, ("bwd", 2): 44,
}
# issued instructions per element-step at the recipes' T, prologue and epilogue amortised
T_BUDGETS = {  # T -> (kernel, NOISE) -> budget
    2: {("fwd", 0): 20, ("fwd", 2): 34, ("bwd", 0): 36, ("bwd", 2): 44},
    4: {("fwd", 0): 16, ("fwd", 2): 30, ("bwd", 0): 34, ("bwd", 2): 40},
    8: {("fwd", 0): 16, ("fwd", 2): 30, ("bwd", 0): 34, ("bwd", 2): 40},
}


def budget_spec(kind: str, noise: int, *, dtype="bf16", SIGMOID=1, HARD_RESET=1, CHANNEL_WIDTH=0) -> KernelSpec:
    flags = dict(NOISE=noise, SIGMOID=SIGMOID, HARD_RESET=HARD_RESET, CHANNEL_WIDTH=CHANNEL_WIDTH)
    if kind == "fwd":
        return lif_fwd_spec(dtype, 90, **flags, STORE_U=True)
    return lif_bwd_spec(dtype, 90, **flags)


def variant_specs() -> dict[str, KernelSpec]:
    """The budget paths and their variants (rectangle, soft reset, channel width, fp32, fp16), by name."""
    out = {}
    for kind, noise in itertools.product(("fwd", "bwd"), (0, 2)):
        base = f"{kind} p{'0' if noise == 0 else '.2'}"
        out[f"{base} bf16"] = budget_spec(kind, noise)
        out[f"{base} bf16 rectangle"] = budget_spec(kind, noise, SIGMOID=0)
        out[f"{base} bf16 soft"] = budget_spec(kind, noise, HARD_RESET=0)
        out[f"{base} bf16 channel"] = budget_spec(kind, noise, CHANNEL_WIDTH=1)
        out[f"{base} fp32"] = budget_spec(kind, noise, dtype="fp32")
        out[f"{base} fp16"] = budget_spec(kind, noise, dtype="fp16")
    return out


def variant_table(jobs: int = 2) -> dict[str, dict]:
    specs = variant_specs()
    results = compile_specs(list(specs.values()), jobs=jobs)
    return {name: analyse(r) for name, r in zip(specs, results)}


def _print(rows: list[dict], title: str) -> None:
    from perf.common import print_table

    cols = ("kernel", "arch", "dtype", "flags", "regs", "spills", "blk/SM", "T", "instr/es (loop)", "issued/es",
            "B/es", "H100 %copy", "H200 %copy", "H200 bound")
    out = []
    for r in rows:
        flags = " ".join(f"{k[:4]}={r[k]}" for k in ("NOISE", "SIGMOID", "HARD_RESET", "CHANNEL_WIDTH", "STORE_U",
                                                     "HAS_RESIDUAL", "RECOMPUTE_T", "INNER") if k in r)
        if "error" in r:
            out.append((r["kernel"], r["arch"], r["dtype"], flags, "ERROR") + ("",) * 9)
            continue
        out.append((r["kernel"], r["arch"], r["dtype"], flags, r["regs"], r["spills"], r["blocks_per_sm"], r.get("T"),
                    r.get("loop_instructions_per_element_step"), r.get("issued_instructions_per_element_step"),
                    r.get("bytes_per_element_step"), r.get("predicted_pct_of_copy_bw_h100"),
                    r.get("predicted_pct_of_copy_bw_h200"), r.get("bound_h200")))
    print_table(title, cols, out)


def main(argv=None) -> int:
    from perf.recipes import calibrate_main, recipes_main

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="90", help="comma-separated: 90, 80 (default 90)")
    ap.add_argument("--kernels", default="lif,rlif,bn_lif", help="comma-separated: lif, rlif, bn_lif")
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated subset of fp32,fp16,bf16")
    ap.add_argument("--T", default=str(TABLE_T), help=f"comma-separated time steps of the launch (default {TABLE_T})")
    ap.add_argument("--N", type=int, default=TABLE_N, help=f"elements per time step of the launch (default {TABLE_N})")
    ap.add_argument("--issue-efficiency", type=float, help=f"default {FREE_PARAMETERS['issue_efficiency']}")
    ap.add_argument("--dram-latency-us", type=float, help=f"default {FREE_PARAMETERS['dram_latency_us']}")
    ap.add_argument("--json", type=Path, help="write the rows as a JSON list")
    ap.add_argument("--dump", type=Path, help="keep each cubin and its SASS in this folder")
    ap.add_argument("--jobs", type=int, default=2, help="parallel compile processes (default 2)")
    ap.add_argument("--recipes", action="store_true", help="the shape table: every neuron op of each recipe's step")
    ap.add_argument("--batch", type=int, help="--recipes: this batch for every recipe (default: each config's)")
    ap.add_argument("--markdown", type=Path, help="--recipes: also write the table as markdown (perf/RESULTS.md)")
    ap.add_argument("--calibrate", type=Path, metavar="RESULTS.jsonl",
                    help="fit the free parameters to measured rows (perf/calibrate.py documents them)")
    ap.add_argument("--write-baseline", action="store_true",
                    help=f"rewrite {BASELINE.relative_to(ROOT)} from the budget paths and their variants")
    args = ap.parse_args(argv)
    try:
        archs = tuple(int(a) for a in args.arch.split(","))
        Ts = tuple(int(t) for t in args.T.split(","))
    except ValueError:
        ap.error(f"--arch and --T take comma-separated integers, got {args.arch!r}, {args.T!r}")
    if not set(archs) <= set(ARCHS):
        ap.error(f"--arch must be among {ARCHS}, got {args.arch}")
    if min(Ts) < 1 or args.N < 1 or (args.batch is not None and args.batch < 1):
        ap.error("--T, --N and --batch must be positive")
    kernels = tuple(args.kernels.split(","))
    if not set(kernels) <= {"lif", "rlif", "bn_lif"}:
        ap.error(f"--kernels must be among lif, rlif, bn_lif, got {args.kernels}")
    dtypes = tuple(args.dtypes.split(","))
    if not set(dtypes) <= set(DTYPES):
        ap.error(f"--dtypes must be among {DTYPES}, got {args.dtypes}")
    for name in ("issue_efficiency", "dram_latency_us"):
        v = getattr(args, name)
        if v is not None and not (v > 0 and (name != "issue_efficiency" or v <= 1)):
            ap.error(f"--{name.replace('_', '-')} must be > 0 (and <= 1 for the efficiency), got {v}")
    params = params_with(issue_efficiency=args.issue_efficiency, dram_latency_us=args.dram_latency_us)

    if args.write_baseline:
        table = variant_table(args.jobs)
        keep = ("loop_instructions_per_element_step", "bytes_per_element_step", "regs")
        BASELINE.write_text(json.dumps({k: {f: v.get(f) for f in keep} for k, v in table.items()}, indent=1) + "\n")
        print(f"wrote {BASELINE.relative_to(ROOT)} ({len(table)} variants)")
        return 0
    if args.calibrate:
        return calibrate_main(args.calibrate, args.jobs)
    if args.recipes:
        return recipes_main(args.json, args.batch, params, args.jobs, args.markdown)

    t0 = time.perf_counter()
    launches = [(T, k) for arch in archs for T in Ts for k in table_launches(kernels, dtypes, T, args.N, arch)]
    specs = list({_key(k.spec): k.spec for _, k in launches}.values())
    print(f"compiling {len(specs)} specialisations for sm_{'/sm_'.join(map(str, archs))} "
          f"({args.jobs} processes; triton caches the compiles, so reruns are fast) ...", flush=True)
    results = compile_specs(specs, jobs=args.jobs)
    rows = [launch_row(k, T, args.N, params) for T, k in launches]
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        for r in compile_kernels(specs, outputs=("sass", "cubin"), jobs=args.jobs):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", r.spec.label)
            if r.cubin:
                (args.dump / f"{name}.cubin").write_bytes(r.cubin)
            (args.dump / f"{name}.sass").write_text(r.sass)
    _print(rows, f"static model ({len(rows)} launches; es = element-step; T steps x N = {args.N:,}; issue "
                 f"efficiency {params['issue_efficiency']:g}, DRAM latency {params['dram_latency_us']:g} µs)")
    print(f"{len(results)} specialisations in {time.perf_counter() - t0:.0f} s; "
          f"{sum('error' in r for r in rows)} failed, {sum(r.get('spills', 0) > 0 for r in rows)} spill")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
