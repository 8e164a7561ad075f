"""Profile one training step: a ``torch.profiler`` chrome trace and a per-kernel time table.

    python perf/profile.py --model resnet18 --T 4 --batch 128 --precision bf16 --out-dir perf/out/prof
        writes OUT_DIR/trace.json (open in chrome://tracing or https://ui.perfetto.dev) and prints the
        kernels (GPU) or operators (CPU) by self time.

    python perf/profile.py --ncu-repro [--out-dir DIR] [--T 4 --N 16777216 --dtype bf16]
        writes DIR/repro.py: one fused LIF forward+backward and nothing else, for Nsight Compute:
        ``ncu --set full -o lif python DIR/repro.py`` (prints that command; needs no GPU to write).

The step is the one of ``perf/bench_train.py`` (synthetic tensors, SGD); warm-up steps run first so
the trace shows steady state, not compilation or cuDNN autotuning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import torch

from perf.bench_train import COMPILES, MODELS, Config, build, make_step
from perf.common import ROOT, cpu_threads, cuda_available, print_header, print_table, run_stamp

REPRO = '''"""One fused LIF forward+backward for Nsight Compute (written by perf/profile.py --ncu-repro).

    ncu --set full -o lif python {path}

A warm-up call first compiles the kernels, so the profiled launches are the second pair
(``--launch-skip 2 --launch-count 2`` in ncu, or profile all four).
"""

import sys

sys.path.insert(0, {root!r})  # the clone that wrote this file: its asgl, installed or not

import torch

from asgl.kernels.lif import lif_fused

T, N, DTYPE = {T}, {N}, torch.{dtype}
x = (torch.randn(T, N, device="cuda") * 0.8 + 0.4).to(DTYPE).requires_grad_(True)
decay_logit = torch.tensor(0.0, device="cuda", requires_grad=True)
width_param = torch.tensor(4.0, device="cuda", requires_grad=True)
dy = torch.randn(T, N, device="cuda", dtype=DTYPE)
for _ in range(2):  # warm-up (compiles), then the profiled pair
    y = lif_fused(x, decay_logit, width_param, 1.0, reset="hard", v_reset=0.0, surrogate="sigmoid",
                  p={p}, training=True, seed=1234)
    y.backward(dy)
torch.cuda.synchronize()
print("fused LIF forward+backward done: T =", T, "N =", N, DTYPE)
'''

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18", choices=tuple(MODELS))
    ap.add_argument("--T", type=int, default=None, help="time steps (default: the model's first; repro: 4)")
    ap.add_argument("--batch", type=int, default=None, help="batch (default: GPU 128 (shd 256), CPU 2)")
    ap.add_argument("--backend", default=None, choices=("triton", "torch"),
                    help="neuron backend (default: triton on GPU, torch on CPU)")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--compile", default="none", choices=COMPILES)
    ap.add_argument("--p", type=float, default=0.2)
    ap.add_argument("--warmup", type=int, default=3, help="untraced steps first")
    ap.add_argument("--steps", type=int, default=1, help="traced steps")
    ap.add_argument("--top", type=int, default=25, help="rows of the kernel table")
    ap.add_argument("--out-dir", default=None, help="where trace.json / repro.py go (default perf/out/profile)")
    ap.add_argument("--ncu-repro", action="store_true", help="write the Nsight Compute repro script and exit")
    ap.add_argument("--N", type=int, default=2**24, help="repro: elements per time step")
    ap.add_argument("--dtype", default="bf16", choices=tuple(DTYPES), help="repro: dtype")
    ap.add_argument("--threads", type=int, default=1, help="CPU only: intra-op threads (default 1)")
    return ap.parse_args(argv)


def write_repro(args, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "repro.py"
    path.write_text(REPRO.format(path=path, root=str(ROOT), T=args.T or 4, N=args.N, dtype=DTYPES[args.dtype],
                                 p=args.p))
    return path


def kernel_rows(prof, on_gpu: bool, top: int):
    """``(name, calls, self ms, % of total)`` by self device time (GPU) or self CPU time."""
    events = prof.key_averages()

    def self_us(e):
        if on_gpu:
            return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)
        return e.self_cpu_time_total

    timed = [e for e in events if self_us(e) > 0]
    total = sum(self_us(e) for e in timed) or 1.0
    timed.sort(key=self_us, reverse=True)
    return [(e.key[:70], e.count, self_us(e) / 1e3, 100.0 * self_us(e) / total) for e in timed[:top]], total / 1e3


def main(argv=None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else ROOT / "perf" / "out" / "profile"
    if args.ncu_repro:
        path = write_repro(args, out_dir)
        print(f"wrote {path}")
        print(f"run on a GPU:  ncu --set full -o lif python {path}")
        return 0
    on_gpu = cuda_available()
    device = "cuda" if on_gpu else "cpu"
    if not on_gpu:
        cpu_threads(args.threads)
    else:
        torch.backends.cudnn.benchmark = True  # as in bench_train: algorithms picked in the warm-up
    T = args.T or MODELS[args.model][1][0]
    batch = args.batch or ((256 if args.model == "shd_rnn" else 128) if on_gpu else 2)
    backend = args.backend or ("triton" if on_gpu else "torch")
    precision = args.precision if on_gpu else "fp32"
    if not on_gpu and (backend == "triton" or args.compile != "none"):
        print("NO CUDA: profiling the reference backend, fp32, uncompiled, on the CPU")
        backend = "torch"
    cfg = Config(args.model, T, batch, backend, precision, args.compile if on_gpu else "none",
                 MODELS[args.model][4] and on_gpu)
    stamp = run_stamp(device)
    print_header(stamp)
    print(f"profiling {cfg}")
    torch.manual_seed(0)
    model, x, target, opt = build(cfg, device, args.p)
    step = make_step(model, x, target, opt, cfg, device)
    for _ in range(args.warmup):
        step()
    if on_gpu:
        torch.cuda.synchronize()

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities, record_shapes=False) as prof:
        for _ in range(args.steps):
            step()
        if on_gpu:
            torch.cuda.synchronize()
    out_dir.mkdir(parents=True, exist_ok=True)
    trace = out_dir / "trace.json"
    prof.export_chrome_trace(str(trace))
    rows, total_ms = kernel_rows(prof, on_gpu, args.top)
    what = "GPU kernels by self device time" if on_gpu else "CPU operators by self CPU time (CPU RUN)"
    print_table(
        f"{what}: {cfg.model} T={cfg.T} batch {cfg.batch} {cfg.backend} {cfg.precision} {cfg.compile}, "
        f"{args.steps} step(s)",
        ("kernel / op", "calls", "self ms", "%"),
        rows,
        caption=f"total self time {total_ms:.2f} ms; commit {stamp['commit']}; trace: {trace}",
    )
    print(f"wrote {trace}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
