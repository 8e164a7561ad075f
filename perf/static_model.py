"""Static performance model of the fused neuron kernels, from their compiled SASS (no GPU needed).

Every specialisation that training and evaluation launch is compiled ahead of time for sm_90 (and
sm_80) on the CPU (:mod:`perf.aot`), disassembled with the ``nvdisasm`` that ships with triton, and
read:

* registers, spills, shared memory (ptxas), and from them resident blocks and warps per SM;
* the time loop (the outermost natural loop of the SASS control-flow graph) and, per element-step,
  the SASS instructions it issues, amortised: one iteration covers ``steps_per_iteration`` steps of
  ``elements_per_thread`` neurons per thread (the feed-forward kernels unroll 8 steps per iteration,
  the recurrent ones run 1); a block of the Philox draw counts ``steps_per_iteration / 8`` (it runs
  once every 8 steps); a loop nested in the time loop (the recurrent product over K-chunks) counts
  its trip count; the one-off prologue and epilogue are reported apart, per thread;
* MUFU instructions per element-step (the special-function pipe issues at 1/8 of the FP32 rate);
* global bytes per element-step: the ``LDG``/``STG`` of the time loop by width (outside nested
  loops: for the recurrent kernels the product's operands come from L2 and are left out, the
  per-step scratch row that feeds the next step's product is counted);

and turned into a predicted time per pass on H100 and H200: per element-step
``max(bytes / copy bandwidth, instructions / issue rate, MUFU / MUFU rate)``, stated as a predicted
% of copy bandwidth (100 % = memory bound). The model assumes perfect issue and latency hiding; a
GPU run confirms or corrects it (``perf/device_check.sh`` prints both side by side).

    python perf/static_model.py                      # the table (sm_90, every specialisation)
    python perf/static_model.py --arch 80,90 --json perf/out/static.json --dump perf/out/sass
    python perf/static_model.py --write-baseline     # rewrite perf/static_baseline.json

``--json`` writes one object per specialisation (``kernel``, ``arch``, ``dtype``, the constexprs by
name, ``regs``, ``spills``, ``loop_instructions_per_element_step``, ``bytes_per_element_step``,
``predicted_pct_of_copy_bw_h200`` and more); ``--dump DIR`` keeps each cubin and its SASS.
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

from perf.aot import (
    ARCHS, DTYPES, CompileResult, KernelSpec, all_specs, bn_lif_apply_spec, bn_lif_bwd_finalize_spec, bn_lif_bwd_spec,
    bn_lif_coef_spec, bn_lif_fwd_spec, bn_lif_stats_spec, compile_kernels, lif_bwd_spec, lif_finalize_spec,
    lif_fwd_spec, rlif_bwd_spec, rlif_fwd_spec,
)

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "perf" / "static_baseline.json"

# Device constants. Sources: SM counts, boost clocks and HBM bandwidth from NVIDIA's H100 and H200
# SXM datasheets; 4 schedulers x 32 lanes issuing one warp instruction per clock per SM sub-
# partition, and 16 MUFU results per clock per SM, from the CUDA C++ Programming Guide (throughput
# of native arithmetic instructions, compute capability 9.0). Copy bandwidth: 90 % of the HBM peak
# until a GPU run measures it (perf/bench_neuron.py reports the measured one beside each figure).
DEVICES = {
    "H100": dict(sms=132, clock_ghz=1.98, hbm_tbps=3.35, copy_fraction=0.90),
    "H200": dict(sms=132, clock_ghz=1.98, hbm_tbps=4.80, copy_fraction=0.90),
}
LANES_PER_SM_CLOCK = 4 * 32
MUFU_PER_SM_CLOCK = 16
# per SM: registers, warps, blocks, shared memory (bytes) -- CUDA C++ Programming Guide, tables of
# technical specifications per compute capability (sm_90: 228 KB shared per SM; sm_80: 164 KB)
SM_LIMITS = {90: dict(regs=65536, warps=64, blocks=32, smem=233472),
             80: dict(regs=65536, warps=64, blocks=32, smem=167936)}
# element-steps of the pass whose time is printed (T = 4, N = 2^24: a ResNet-18 batch-256 layer order)
PASS_ELEMENT_STEPS = 4 * 2**24

PHILOX_CONSTANTS = ("0xd2511f53", "-0x2daee0ad", "0xcd9e8d57", "-0x326172a9")
_INSTR = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_BRANCH = re.compile(r"\bBRA(?:\.\w+)*\s+`?\(?(\.L_x_\d+)")


@dataclasses.dataclass
class Block:
    start: int
    instructions: list  # SASS text of each instruction
    succ: list = dataclasses.field(default_factory=list)


def parse_sass(sass: str) -> list[Block]:
    """Basic blocks of one kernel's SASS, in address order, with successor indices."""
    instrs, labels = [], {}
    for line in sass.splitlines():
        m = _INSTR.match(line)
        if m:
            instrs.append(m.group(2))
            continue
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = len(instrs)
    leaders = {0} | set(labels.values())
    for i, text in enumerate(instrs):
        if _BRANCH.search(text) or re.search(r"\bEXIT\b", text):
            leaders.add(i + 1)
    leaders = sorted(x for x in leaders if x < len(instrs))
    starts = {s: b for b, s in enumerate(leaders)}
    blocks = []
    for b, s in enumerate(leaders):
        end = leaders[b + 1] if b + 1 < len(leaders) else len(instrs)
        blocks.append(Block(s, instrs[s:end]))
    for b, block in enumerate(blocks):
        last = block.instructions[-1]
        predicated = last.startswith("@")
        m = _BRANCH.search(last)
        if m:
            block.succ.append(starts[labels[m.group(1)]])
            if predicated and b + 1 < len(blocks):
                block.succ.append(b + 1)
        elif re.search(r"\bEXIT\b", last):
            if predicated and b + 1 < len(blocks):
                block.succ.append(b + 1)
        elif b + 1 < len(blocks):
            block.succ.append(b + 1)
    return blocks


def natural_loops(blocks: list[Block]) -> list[tuple[int, set]]:
    """``(header, body)`` of every natural loop (a back edge latch -> header with header <= latch);
    an infinite self-loop after EXIT (the kernel's padding trap) is not a loop of the program."""
    preds = {b: [] for b in range(len(blocks))}
    for b, block in enumerate(blocks):
        for s in block.succ:
            preds[s].append(b)
    loops = []
    for latch, block in enumerate(blocks):
        for header in block.succ:
            if header > latch or (header == latch and len(block.instructions) == 1):
                continue
            body, stack = {header, latch}, ([latch] if latch != header else [])
            while stack:
                for p in preds[stack.pop()]:
                    if p not in body:
                        body.add(p)
                        stack.append(p)
            loops.append((header, body))
    return loops


def _access_bytes(text: str) -> int:
    m = re.search(r"\b(?:LDG|STG)\.E(\S*)", text)
    suffix = m.group(1) if m else ""
    for tag, nbytes in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if tag in suffix:
            return nbytes
    return 4


@dataclasses.dataclass
class LoopCost:
    instructions: float  # per element-step
    mufu: float
    bytes: float
    prologue_epilogue: int  # instructions per thread outside the time loop
    total_instructions: int
    shared_memory_ops: int  # LDS/STS/BAR instructions in the time loop, outside nested loops


def loop_cost(sass: str, spec: KernelSpec) -> LoopCost:
    """Amortised SASS cost per element-step of the time loop (see the module docstring)."""
    from asgl.kernels.common import STEPS_PER_DRAW

    blocks = parse_sass(sass)
    total = sum(len(b.instructions) for b in blocks)
    if spec.steps_per_iteration < 0:
        # no time loop: -steps_per_iteration steps unrolled (the recomputing BN+LIF backward), so the
        # whole kernel is one iteration and nothing is prologue or epilogue
        texts = [t for b in blocks for t in b.instructions]
        nbytes = sum(_access_bytes(t) for t in texts if re.search(r"\b(LDG|STG)\b", t))
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
            nbytes += weight * sum(_access_bytes(t) for t in texts if re.search(r"\b(LDG|STG)\b", t))
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


def step_time(cost: LoopCost, device: str) -> tuple[float, str]:
    """Seconds per element-step of one pass on ``device`` and what bounds it."""
    d = DEVICES[device]
    clock = d["clock_ghz"] * 1e9
    bounds = {
        "memory": cost.bytes / (d["hbm_tbps"] * 1e12 * d["copy_fraction"]),
        "issue": cost.instructions / (d["sms"] * LANES_PER_SM_CLOCK * clock),
        "MUFU": cost.mufu / (d["sms"] * MUFU_PER_SM_CLOCK * clock),
    }
    bound = max(bounds, key=bounds.get)
    return bounds[bound], bound


def predict(cost: LoopCost, device: str) -> dict:
    """The predicted % of copy bandwidth of one pass on ``device``, its bound and its time (µs) for
    :data:`PASS_ELEMENT_STEPS` element-steps."""
    return predict_passes([cost], device)


def predict_passes(costs: list[LoopCost], device: str) -> dict:
    """:func:`predict` for passes run one after another (forward then backward): total bytes at
    copy bandwidth over the summed times."""
    d = DEVICES[device]
    times = [step_time(c, device) for c in costs]
    step = sum(t for t, _ in times)
    memory = sum(c.bytes for c in costs) / (d["hbm_tbps"] * 1e12 * d["copy_fraction"])
    bound = "/".join(dict.fromkeys(b for _, b in times))
    return dict(pct_of_copy_bw=100.0 * memory / step if step > 0 else 0.0, bound=bound,
                pass_us=1e6 * step * PASS_ELEMENT_STEPS)


_NEURON_COSTS: dict = {}  # (dtype, noise) -> (forward cost, backward cost)


def _noise_mode(p: float) -> int:
    return 0 if p == 0 else (1 if p == 1 else 2)


def prepare_neuron_predictions(dtypes, ps, jobs: int = 8) -> None:
    """Compile, in one batch of ``jobs`` processes, what :func:`neuron_prediction` needs."""
    keys = sorted({(d, _noise_mode(p)) for d in dtypes for p in ps} - set(_NEURON_COSTS))
    specs = [budget_spec(kind, noise, dtype=d) for d, noise in keys for kind in ("fwd", "bwd")]
    results = compile_kernels(specs, outputs=("sass",), jobs=jobs) if specs else []
    for r in results:
        if r.error:
            raise RuntimeError(f"{r.spec.label}: {r.error[:500]}")
    for i, key in enumerate(keys):
        fwd, bwd = results[2 * i], results[2 * i + 1]
        _NEURON_COSTS[key] = (loop_cost(fwd.sass, fwd.spec), loop_cost(bwd.sass, bwd.spec))


def neuron_prediction(dtype: str, p: float, passes: str, device: str) -> dict:
    """The model's prediction for a benchmark row of ``perf/bench_neuron.py`` (sigmoid, hard reset,
    layer width, training forward storing u): ``passes`` is ``fwd``, ``bwd`` or ``fwd+bwd``."""
    prepare_neuron_predictions([dtype], [p], jobs=2)
    fwd, bwd = _NEURON_COSTS[(dtype, _noise_mode(p))]
    return predict_passes({"fwd": [fwd], "bwd": [bwd], "fwd+bwd": [fwd, bwd]}[passes], device)


def kernel_name(spec: KernelSpec) -> str:
    return spec.kernel.split(":")[1]


def analyse(result: CompileResult) -> dict:
    """One row of the model for one compiled specialisation."""
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
        for dev in DEVICES:
            p = predict(cost, dev)
            row[f"predicted_pct_of_copy_bw_{dev.lower()}"] = round(p["pct_of_copy_bw"], 1)
            row[f"predicted_pass_us_{dev.lower()}"] = round(p["pass_us"], 1)
            row[f"bound_{dev.lower()}"] = p["bound"]
    return row


def training_specs(archs=(90,), kernels=("lif", "rlif", "bn_lif")) -> list[KernelSpec]:
    """Every specialisation that training and evaluation launch: the feed-forward forward (with and
    without u) and backward for every dtype and flag, the finalize kernel, the recurrent kernels,
    and the fused batch norm + LIF (every dtype, noise mode and layout, with a shortcut, sigmoid,
    hard reset, layer width; the forward without and with u, the backward recomputing for T <= 4
    and T <= 8 and reading u above, the inference forward folding the running statistics; its
    statistics, coefficient, finalize and gradient-apply kernels)."""
    specs = []
    if "lif" in kernels:
        specs += [s for s in all_specs(lif_fwd_spec, lif_bwd_spec, archs) if not s.constexprs.get("STORE_MASK")]
        specs += [lif_finalize_spec(a, SIGMOID=sg, CHANNEL_WIDTH=c) for a, sg, c in
                  itertools.product(archs, (0, 1), (0, 1))]
    if "rlif" in kernels:
        specs += [s for s in all_specs(rlif_fwd_spec, rlif_bwd_spec, archs) if not s.constexprs.get("STORE_MASK")]
    if "bn_lif" in kernels:
        for arch, dtype in itertools.product(archs, DTYPES):
            specs += [bn_lif_stats_spec(dtype, arch, layout) for layout in ("contiguous", "channels_last")]
            specs.append(bn_lif_apply_spec(dtype, arch))
            for noise, layout in itertools.product((0, 1, 2), ("contiguous", "channels_last")):
                flags = dict(NOISE=noise, SIGMOID=1, HARD_RESET=1, CHANNEL_WIDTH=0, HAS_RESIDUAL=1)
                specs += [bn_lif_fwd_spec(dtype, arch, layout, **flags, STORE_U=u) for u in (0, 1)]
                specs += [bn_lif_bwd_spec(dtype, arch, layout, **flags, RECOMPUTE_T=r) for r in (4, 8, 0)]
                if noise == 0:  # inference: running statistics folded in the forward
                    specs.append(bn_lif_fwd_spec(dtype, arch, layout, **flags, STORE_U=0, FOLD=1))
        for arch in archs:
            specs += [bn_lif_coef_spec(arch, BATCH_STATS=b, UPDATE_RUNNING=b) for b in (True, False)]
            specs += [bn_lif_bwd_finalize_spec(arch, SIGMOID=sg, CHANNEL_WIDTH=c) for sg, c in
                      itertools.product((0, 1), (0, 1))]
    return specs


# The budget specialisations (sm_90, bf16, sigmoid, hard reset, layer width, storing u) and the
# variants listed beside them; tests/test_static_model.py holds the budgets and the baseline.
BUDGETS = {  # (kernel, NOISE) -> max SASS instructions per element-step of the time loop
    ("fwd", 0): 20, ("fwd", 2): 32, ("bwd", 0): 36, ("bwd", 2): 44,
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
    results = compile_kernels(list(specs.values()), outputs=("sass",), jobs=jobs)
    return {name: analyse(r) for name, r in zip(specs, results)}


def _print(rows: list[dict]) -> None:
    from perf.common import print_table

    cols = ("kernel", "arch", "dtype", "flags", "regs", "spills", "smem", "blk/SM", "warps/SM", "instr/es",
            "MUFU/es", "B/es", "pro+epi", "H100 %copy", "H200 %copy", "H200 bound", "H200 µs")
    out = []
    for r in rows:
        flags = " ".join(f"{k[:4]}={r[k]}" for k in ("NOISE", "SIGMOID", "HARD_RESET", "CHANNEL_WIDTH", "STORE_U",
                                                     "HAS_RESIDUAL", "RECOMPUTE_T", "INNER") if k in r)
        if "error" in r:
            out.append((r["kernel"], r["arch"], r["dtype"], flags, "ERROR") + ("",) * 12)
            continue
        out.append((r["kernel"], r["arch"], r["dtype"], flags, r["regs"], r["spills"], r["shared_bytes"],
                    r["blocks_per_sm"], r["warps_per_sm"], r.get("loop_instructions_per_element_step"),
                    r.get("mufu_per_element_step"), r.get("bytes_per_element_step"),
                    r.get("prologue_epilogue_instructions"), r.get("predicted_pct_of_copy_bw_h100"),
                    r.get("predicted_pct_of_copy_bw_h200"), r.get("bound_h200"), r.get("predicted_pass_us_h200")))
    print_table(f"static model ({len(rows)} specialisations; es = element-step; µs per pass of "
                f"{PASS_ELEMENT_STEPS:,} element-steps)", cols, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="90", help="comma-separated: 90, 80 (default 90)")
    ap.add_argument("--kernels", default="lif,rlif,bn_lif", help="comma-separated: lif, rlif, bn_lif")
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated subset of fp32,fp16,bf16")
    ap.add_argument("--json", type=Path, help="write the rows as a JSON list")
    ap.add_argument("--dump", type=Path, help="keep each cubin and its SASS in this folder")
    ap.add_argument("--jobs", type=int, default=2, help="parallel compile processes (default 2)")
    ap.add_argument("--write-baseline", action="store_true",
                    help=f"rewrite {BASELINE.relative_to(ROOT)} from the budget paths and their variants")
    args = ap.parse_args(argv)
    try:
        archs = tuple(int(a) for a in args.arch.split(","))
    except ValueError:
        ap.error(f"--arch takes comma-separated integers, got {args.arch!r}")
    if not set(archs) <= set(ARCHS):
        ap.error(f"--arch must be among {ARCHS}, got {args.arch}")
    kernels = tuple(args.kernels.split(","))
    if not set(kernels) <= {"lif", "rlif", "bn_lif"}:
        ap.error(f"--kernels must be among lif, rlif, bn_lif, got {args.kernels}")
    dtypes = tuple(args.dtypes.split(","))
    if not set(dtypes) <= set(DTYPES):
        ap.error(f"--dtypes must be among {DTYPES}, got {args.dtypes}")

    if args.write_baseline:
        table = variant_table(args.jobs)
        keep = ("loop_instructions_per_element_step", "bytes_per_element_step", "regs")
        BASELINE.write_text(json.dumps({k: {f: v.get(f) for f in keep} for k, v in table.items()}, indent=1) + "\n")
        print(f"wrote {BASELINE.relative_to(ROOT)} ({len(table)} variants)")
        return 0

    specs = [s for s in training_specs(archs, kernels) if s.dtype in dtypes or "finalize" in s.kernel]
    t0 = time.perf_counter()
    print(f"compiling {len(specs)} specialisations for sm_{'/sm_'.join(map(str, archs))} "
          f"({args.jobs} processes; triton caches the compiles, so reruns are fast) ...", flush=True)
    results = compile_kernels(specs, outputs=("sass", "cubin") if args.dump else ("sass",), jobs=args.jobs)
    rows = [analyse(r) for r in results]
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        for r in results:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", r.spec.label)
            if r.cubin:
                (args.dump / f"{name}.cubin").write_bytes(r.cubin)
            (args.dump / f"{name}.sass").write_text(r.sass)
    _print(rows)
    print(f"{len(rows)} specialisations in {time.perf_counter() - t0:.0f} s; "
          f"{sum('error' in r for r in rows)} failed, {sum(r.get('spills', 0) > 0 for r in rows)} spill")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
