#!/usr/bin/env bash
# The GPU check in one command, for an H200 (or any CUDA) box; finishes in under 8 minutes.
#
#   bash perf/device_check.sh [OUT_DIR]          (default perf/out/<UTC date-time>)
#   ASGL_COMMIT=$(git rev-parse --short HEAD) bash perf/device_check.sh OUT   # tree copied without .git
#
# Stages, each under `timeout` so a hang cannot eat the budget; a failing stage is reported and the
# next one still runs:
#   1. env      versions and nvidia-smi                                    (into summary.txt)
#   2. kernels  every `interpret`-marked kernel test, compiled on CUDA: the fused-vs-reference
#               matrix, the recurrent sweeps, launch counts, saved bytes, torch.compile   kernels.log
#               (with -s: the diverged-neuron rates of the low-precision tests are collected)
#   3. pytest   python -m pytest -q -m gpu tests   (the GPU tier)          pytest.log
#   4. neuron   perf/bench_neuron.py, bf16 + fp32, p = 0 and 0.2, T in {4, 32, 250}, with the
#               static model's predicted ms and % of copy bandwidth beside each fused row (the rows
#               `perf/static_model.py --calibrate` fits the model's free parameters to)   neuron.log/.jsonl
#   5. train    perf/bench_train.py --device-check: ResNet-18 T=4 batch 256
#               (fused bf16 vs reference fp32), VGGSNN T=10, SHD T=250     train.log, train.jsonl
#   6. shd      perf/bench_shd.py, if that file exists                     shd.log, shd.jsonl
#   7. memory   tests/test_remat.py's fused checks on CUDA (rebuilt spikes bit-identical, a step with
#               remat_spikes bitwise the step without, blocks within tolerance), then
#               perf/bench_memory.py --gpu: ResNet-18 T=4 batch 256 bf16, held and peak memory and
#               step time for none, remat_spikes, remat_spikes+blocks        memory.log, memory.jsonl
# then prints a short summary table (also in summary.txt). At most 10 files, none in subfolders.
# Stage limits add up to 575 s (+ the summary): the whole check fits in 10 minutes with cold compiles.
#
# Needs only what the GPU box has (torch, triton, rich, numpy); the repository is not installed
# there, so everything runs with PYTHONPATH set to the repository root. Never pip-installs.
# PYTHON=... picks the interpreter (default: python, else python3).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-perf/out/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [ -z "${ASGL_COMMIT:-}" ]; then
    ASGL_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ "$ASGL_COMMIT" != unknown ] && [ -n "$(git --no-optional-locks status --porcelain 2>/dev/null)" ]; then
        ASGL_COMMIT="$ASGL_COMMIT+dirty"
    fi
fi
export ASGL_COMMIT
PY=${PYTHON:-$(command -v python || command -v python3)}
SUMMARY="$OUT/summary.txt"
START=$(date +%s)
STATUS=()

# stage NAME LIMIT_S LOG COMMAND...: run under timeout, log stdout+stderr, record rc and duration
stage() {
    local name=$1 limit=$2 log=$3
    shift 3
    local t0 rc
    t0=$(date +%s)
    echo "== $name (limit ${limit}s) -> $log"
    timeout -k 5 "$limit" "$@" >"$log" 2>&1
    rc=$?
    local dt=$(( $(date +%s) - t0 ))
    local what=ok
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then what="TIMEOUT after ${limit}s"; elif [ $rc -ne 0 ]; then what="FAILED rc=$rc"; fi
    STATUS+=("$(printf '%-8s %-22s %4ss  %s' "$name" "$what" "$dt" "$(basename "$log")")")
    tail -n 5 "$log" | sed 's/^/   | /'
}

{
    echo "ASGL device check — $(date -u +%Y-%m-%dT%H:%M:%SZ) — commit $ASGL_COMMIT — out $OUT"
    timeout 20 "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__, '| triton', triton.__version__, '| cuda', torch.version.cuda, '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')" 2>&1
    timeout 10 nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,power.limit,driver_version --format=csv 2>&1 || echo "nvidia-smi: not available"
} | tee "$SUMMARY"

stage kernels 150 "$OUT/kernels.log" \
    "$PY" -m pytest -q -s -m interpret -p no:cacheprovider -rf tests/test_lif_kernel.py tests/test_rlif_kernel.py \
    tests/test_perf_regression.py tests/test_saved_bytes.py tests/test_shd_end_to_end.py
stage pytest 75 "$OUT/pytest.log" \
    "$PY" -m pytest -q -s -m gpu --continue-on-collection-errors -p no:cacheprovider tests
stage neuron 100 "$OUT/neuron.log" \
    "$PY" perf/bench_neuron.py --quick --dtypes bf16,fp32 --p 0,0.2 --compile-max-t 4 --time-budget 70 \
    --out "$OUT/neuron.jsonl"
stage train 95 "$OUT/train.log" \
    "$PY" perf/bench_train.py --device-check --warmup 2 --iters 5 --time-budget 65 --out "$OUT/train.jsonl"
if [ -f perf/bench_shd.py ]; then
    stage shd 35 "$OUT/shd.log" "$PY" perf/bench_shd.py --out "$OUT/shd.jsonl"
else
    STATUS+=("$(printf '%-8s %-22s' shd 'skipped: no perf/bench_shd.py')")
fi
# both halves run; the stage fails if either does
stage memory 120 "$OUT/memory.log" bash -c '"$0" -m pytest -q -m "interpret and not slow" -p no:cacheprovider -rf \
    tests/test_remat.py -k "rebuilt or bitwise or blocks or compiled"; a=$?
    "$0" perf/bench_memory.py --gpu --models resnet18 --batch 256 --warmup 2 --iters 5 --json "$1"; b=$?
    exit $(( a || b ))' "$PY" "$OUT/memory.jsonl"

{
    echo
    echo "stages (total $(( $(date +%s) - START ))s):"
    printf '  %s\n' "${STATUS[@]}"
    [ -f "$OUT/kernels.log" ] && echo "  kernels: $(tail -n 1 "$OUT/kernels.log")"
    [ -f "$OUT/pytest.log" ] && echo "  pytest: $(tail -n 1 "$OUT/pytest.log")"
    if [ -f "$OUT/kernels.log" ]; then
        grep -h "^diverged neurons:" "$OUT/kernels.log" | awk '{if (n == 0 || $3 + 0 > max) {max = $3 + 0; line = $0}; n++}
            END {if (n) print "  low-precision tests: " n " diverged-neuron checks, highest: " line; else print "  low-precision tests: no diverged-neuron lines"}'
    fi
    grep -h "predicted by perf/static_model.py" "$OUT/pytest.log" 2>/dev/null | sed 's/^/  /'
    timeout 30 "$PY" - "$OUT" <<'EOF' 2>&1
import json, sys
from pathlib import Path
from perf.common import print_table

out = Path(sys.argv[1])


def load(name):
    path = out / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


neuron = [r for r in load("neuron.jsonl") if r["pass"] == "fwd+bwd" and r["path"] == "fused"]
if neuron:
    print_table("fused LIF, forward+backward: measured beside the static model's prediction",
                ("T", "N", "p", "dtype", "ms", "model ms", "model bound", "GB/s", "%copy", "model %copy", "×eager",
                 "×compile", "×SJ"),
                [(r["T"], r["N"], r.get("p"), r["dtype"], r["ms"], r.get("model_ms"), r.get("model_bound"), r["gbps"],
                  r["pct_copy"], r.get("model_pct_copy"), r.get("ratio_vs_eager"), r.get("ratio_vs_compile"),
                  r.get("ratio_vs_spikingjelly")) for r in neuron])
    print(f"fit the model's free parameters to these rows: python perf/static_model.py --calibrate {out / 'neuron.jsonl'}")
else:
    print("no fused neuron rows (see neuron.log)")
train = load("train.jsonl")
if train:
    print_table("training step", ("model", "T", "batch", "backend", "prec", "samples/s", "peak GiB", "MFU %", "status"),
                [(r["model"], r["T"], r["batch"], r["backend"], r["precision"], r.get("samples_s"),
                  r.get("peak_mem_gib"), 100 * r["mfu"] if r.get("mfu") is not None else None, r["status"])
                 for r in train])
    by = {(r["model"], r["backend"], r["precision"]): r for r in train if r.get("status") == "ok"}
    fused, ref = by.get(("resnet18", "triton", "bf16")), by.get(("resnet18", "torch", "fp32"))
    if fused and ref:
        print(f"ResNet-18 T=4 batch 256: fused bf16 / reference fp32 = {fused['samples_s'] / ref['samples_s']:.2f}x "
              f"throughput (target >= 3x), {fused['peak_mem_gib'] / ref['peak_mem_gib']:.2f}x memory (target <= 0.5x), "
              f"{fused['samples_s']:,.0f} samples/s (target >= 17,000)")
else:
    print("no training rows (see train.log)")
memory = load("memory.jsonl")
if memory:
    print_table("activation memory, ResNet-18 T=4 bf16", ("choice", "batch", "held GiB", "peak GiB", "step ms", "status"),
                [(r["choice"], r["batch"], r.get("held_gib"), r.get("peak_gib"), r.get("step_ms"), r["status"])
                 for r in memory])
else:
    print("no activation-memory rows (see memory.log)")
shd = load("shd.jsonl")
if shd:
    print(f"shd.jsonl: {len(shd)} rows (see shd.log)")
EOF
} | tee -a "$SUMMARY"
