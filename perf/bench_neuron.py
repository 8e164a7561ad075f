"""Benchmark of the multi-step LIF neuron: fused Triton kernel vs its baselines.

Paths, all on the same ``x_seq [T, N]`` (one layer-wide width, learnable decay and width, so the
backward also reduces dλ and dk):

* ``fused``         ``asgl.kernels.lif.lif_fused`` (GPU only);
* ``eager``         ``asgl.kernels.lif_ref.lif_ref``, the reference loop over T;
* ``compile``       ``torch.compile(lif_ref)`` (the T loop unrolls: one graph per shape, so T above
                    ``--compile-max-t`` is skipped for its compile time);
* ``spikingjelly``  SpikingJelly's multi-step ``LIFNode`` on its Triton (else CuPy) backend, only
                    where it computes the same function: p = 0, fixed width, hard reset to 0,
                    ``decay_input=False``, θ = 1, ``tau = 2`` (λ = 1 - 1/τ = 0.5 = sigmoid(0)),
                    ``Sigmoid(alpha=k)`` surrogate, reset not detached. Skipped (and said so) when
                    the package is missing, without CUDA, or for ``p > 0``.

Passes: ``fwd`` (training forward, autograd recording), ``bwd`` (``backward`` of a retained graph)
and ``fwd+bwd``. Times are medians of ``triton.testing.do_bench`` (L2 flushed before each call).

Bytes model (per element and time step, s = bytes of the dtype): the traffic of the fused kernel,
``fwd = 2s + saved``  (read x, write y, write the saved ``[T, N]`` tensors that are not x) and
``bwd = 2s + saved``  (read dy, write dx, read the saved tensors); the saved bytes are measured on
the fused path with ``saved_tensors_hooks`` (the design saves u: 3s + 3s). Every path's GB/s is
that byte count over its own time — an effective bandwidth for the same useful work, so GB/s
ratios are speed ratios — and ``%copy`` divides it by the bandwidth of
``torch.empty_like(x).copy_(x)`` measured in the same run on ``T·N`` elements of the same dtype.

Without CUDA only ``eager`` and ``compile`` run, at small sizes on the CPU (the fused kernel needs
a GPU; under ``TRITON_INTERPRET=1`` it would time the interpreter, which means nothing).

    python perf/bench_neuron.py                      # full sweep
    python perf/bench_neuron.py --quick --dtypes bf16 --out perf/out/neuron.jsonl
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import torch

from asgl.kernels.lif_ref import lif_ref
from perf.common import (
    append_jsonl,
    bench,
    copy_bandwidth,
    cpu_threads,
    cuda_available,
    flush,
    gbps,
    print_header,
    print_table,
    run_stamp,
    short_error,
    timer_name,
)

PATHS = ("fused", "eager", "compile", "spikingjelly")
PASSES = ("fwd", "bwd", "fwd+bwd")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# SpikingJelly's published benchmark shape: T = 32 steps of 64·64·32·32 elements.
SJ_SHAPE = (32, 64 * 64 * 32 * 32)
GPU_T = (2, 4, 8, 32, 250)
GPU_N = (2**16, 2**20, 2**22, 2**24)
# T·N cap: 2**28 elements is 1 GiB per fp32 [T, N] tensor; the eager reference keeps about ten of
# them alive for its backward.
GPU_MAX_ELEMS = 2**28
# --quick (and the device check): one shape per regime — short T at large N, SpikingJelly's shape,
# the audio-length T.
GPU_QUICK = ((4, 2**24), SJ_SHAPE, (250, 2**20))
CPU_T = (2, 4, 8)
CPU_N = (2**12, 2**16)
CPU_QUICK = ((2, 2**12),)

# The neuron every path computes: λ = sigmoid(0) = 0.5, slope k = 4 (SpikingJelly's default
# Sigmoid alpha), θ = 1, hard reset to 0.
DECAY_LOGIT = 0.0
SLOPE = 4.0
THRESH = 1.0
# Fused design bytes per element-step in units of the dtype size (x, y, u forward; u, dy, dx
# backward), used when the fused path cannot run here to measure them.
DESIGN_UNITS = {"fwd": 3, "bwd": 3}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced sweep (GPU: 3 shapes; CPU: one tiny shape)")
    ap.add_argument("--dtypes", default="bf16,fp32", help="comma list of fp32, bf16, fp16 (default bf16,fp32)")
    ap.add_argument("--T", type=str, default=None, help="comma list of T (overrides the sweep's T)")
    ap.add_argument("--N", type=str, default=None, help="comma list of elements per step (overrides N)")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"comma list of {PATHS}")
    ap.add_argument("--passes", default=",".join(PASSES), help=f"comma list of {PASSES}")
    ap.add_argument("--p", type=str, default="0",
                    help="comma list of analog-mode probabilities (default 0: plain SG; the recipes train "
                         "with 0.1-0.2, e.g. --p 0,0.2)")
    ap.add_argument("--compile-max-t", type=int, default=32,
                    help="skip torch.compile above this T (compile time grows with the unrolled loop)")
    ap.add_argument("--max-elems", type=int, default=GPU_MAX_ELEMS, help="skip shapes with T·N above this")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds; configurations not started by then are skipped (and listed)")
    ap.add_argument("--interpret-smoke", action="store_true",
                    help="CPU only: also run the fused path under TRITON_INTERPRET=1 (exercises the "
                         "script; its times are the interpreter's and mean nothing)")
    ap.add_argument("--threads", type=int, default=1, help="CPU only: intra-op threads (default 1)")
    ap.add_argument("--out", default=None, help="append one JSON line per measurement to this file")
    args = ap.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in args.dtypes:
        if d not in DTYPES:
            ap.error(f"--dtypes: unknown dtype {d!r}; choose from {sorted(DTYPES)}")
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    for p in args.paths:
        if p not in PATHS:
            ap.error(f"--paths: unknown path {p!r}; choose from {PATHS}")
    args.passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    for p in args.passes:
        if p not in PASSES:
            ap.error(f"--passes: unknown pass {p!r}; choose from {PASSES}")
    try:
        args.ps = [float(p) for p in args.p.split(",") if p.strip()]
    except ValueError:
        ap.error(f"--p takes a comma list of numbers in [0, 1], got {args.p!r}")
    for p in args.ps:
        if not 0.0 <= p <= 1.0:
            ap.error(f"--p must be in [0, 1], got {p}")
    if not args.ps:
        ap.error("--p: no probability given")
    return args


def sweep(args, on_gpu: bool) -> list[tuple[int, int]]:
    """The ``(T, N)`` shapes to measure, in order."""
    Ts = [int(t) for t in args.T.split(",")] if args.T else None
    Ns = [int(n) for n in args.N.split(",")] if args.N else None
    if Ts is None and Ns is None:
        if args.quick:
            return list(GPU_QUICK if on_gpu else CPU_QUICK)
        Ts, Ns = (GPU_T, GPU_N) if on_gpu else (CPU_T, CPU_N)
    Ts = Ts or (GPU_T if on_gpu else CPU_T)
    Ns = Ns or (GPU_N if on_gpu else CPU_N)
    return [(T, N) for T in Ts for N in Ns if T * N <= args.max_elems]


# ---------------------------------------------------------------------------------------------
# The paths: each returns fn(x) -> y_seq, or (None, reason)
# ---------------------------------------------------------------------------------------------


def make_params(device: str):
    decay_logit = torch.tensor(DECAY_LOGIT, device=device, requires_grad=True)
    width_param = torch.tensor(SLOPE, device=device, requires_grad=True)  # sigmoid stores k itself
    return decay_logit, width_param


def make_path(path: str, *, device: str, p: float, T: int, compile_max_t: int, params, interpret: bool = False):
    """``(fn, None)`` with ``fn(x_seq) -> y_seq`` for ``path``, or ``(None, why it is skipped)``.

    ``interpret``: let the fused path run on CPU tensors (``TRITON_INTERPRET=1`` set before
    ``asgl.kernels.lif`` is imported): exercises this script without a GPU, times mean nothing.
    """
    decay_logit, width_param = params
    kwargs = dict(reset="hard", v_reset=0.0, surrogate="sigmoid", p=p, training=True)
    if path == "eager":
        return (lambda x: lif_ref(x, decay_logit, width_param, THRESH, **kwargs)), None
    if path == "compile":
        if T > compile_max_t:
            return None, f"skipped: T={T} > --compile-max-t={compile_max_t} (the unrolled loop compiles slowly)"
        compiled = torch.compile(lif_ref, dynamic=False)
        return (lambda x: compiled(x, decay_logit, width_param, THRESH, **kwargs)), None
    if path == "fused":
        if not device.startswith("cuda") and not interpret:
            return None, "skipped: the fused Triton kernel needs a CUDA GPU"
        from asgl.kernels.lif import lif_fused

        seed = 12345
        return (lambda x: lif_fused(x, decay_logit, width_param, THRESH, seed=seed, **kwargs)), None
    if path == "spikingjelly":
        return make_spikingjelly(device, p)
    raise ValueError(f"path must be one of {PATHS}, got {path!r}")


def make_spikingjelly(device: str, p: float):
    if p != 0.0:
        return None, f"skipped: SpikingJelly has no noisy hybrid (p={p} > 0)"
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError:
        return None, "skipped: spikingjelly is not installed"
    if not device.startswith("cuda"):
        return None, "skipped: SpikingJelly's fused backends need CUDA"
    node = neuron.LIFNode(
        tau=1.0 / (1.0 - 0.5), decay_input=False, v_threshold=THRESH, v_reset=0.0,
        surrogate_function=surrogate.Sigmoid(alpha=SLOPE), detach_reset=False, step_mode="m",
    )
    supported = tuple(getattr(node, "supported_backends", ()))
    backend = next((b for b in ("triton", "cupy") if b in supported), None)
    if backend is None:
        return None, f"skipped: this SpikingJelly offers no triton/cupy backend (has {supported})"
    node.backend = backend
    node.to(device)

    def run(x):
        node.reset()
        return node(x)

    run.backend = backend
    return run, None


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


def make_input(T: int, N: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    # mean 0.4, std 0.8: with λ = 0.5, θ = 1 about a quarter of the elements fire at each step
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(T, N, device=device, generator=g) * 0.8 + 0.4
    return x.to(dtype).requires_grad_(True)


def saved_bytes(fn, x: torch.Tensor) -> tuple[int, int]:
    """``(bytes saved for backward in [T, N] tensors, of which not aliasing x)`` for one forward."""
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    big = [t for t in saved if t.numel() == x.numel()]
    total = sum(t.numel() * t.element_size() for t in big)
    extra = sum(t.numel() * t.element_size() for t in big if t.data_ptr() != x.data_ptr())
    return total, extra


def bytes_model(units: dict[str, float], T: int, N: int, itemsize: int) -> dict[str, float]:
    fwd, bwd = units["fwd"] * itemsize * T * N, units["bwd"] * itemsize * T * N
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def time_pass(fn, x, dy, params, pas: str, device: str) -> float:
    grads = [x, *params]
    if pas == "fwd":
        return bench(lambda: fn(x), device=device, grad_to_none=grads)
    if pas == "bwd":
        y = fn(x)
        return bench(lambda: y.backward(dy, retain_graph=True), device=device, grad_to_none=grads)
    return bench(lambda: fn(x).backward(dy), device=device, grad_to_none=grads)


def check_same_function(fn, ref_fn, x) -> float:
    """Fraction of outputs where ``fn`` and the reference differ (spikes: 0 or θ)."""
    with torch.no_grad():
        y, y_ref = fn(x), ref_fn(x)
    return (y.float() != y_ref.float()).float().mean().item()


def main(argv=None) -> int:
    args = parse_args(argv)
    on_gpu = cuda_available()
    device = "cuda" if on_gpu else "cpu"
    if not on_gpu:
        cpu_threads(args.threads)
        if args.interpret_smoke:
            # before asgl.kernels.lif (and its @triton.jit) is imported
            os.environ["TRITON_INTERPRET"] = "1"
    args.interpret_smoke = args.interpret_smoke and not on_gpu
    try:  # one compiled graph per (T, N, dtype): lift dynamo's per-function recompile limit
        torch._dynamo.config.cache_size_limit = 256
    except AttributeError:
        pass
    stamp = run_stamp(device)
    print_header(stamp)
    threads = "" if on_gpu else f"; {torch.get_num_threads()} CPU thread(s)"
    print(f"timer: {timer_name(device)}{threads}; p in {args.ps}; layer-wide width k = {SLOPE}, λ = 0.5, "
          f"θ = {THRESH}, hard reset")
    if not on_gpu:
        print("NO CUDA: only the eager reference and torch.compile of it run, at small CPU sizes. "
              "The fused Triton kernel (and SpikingJelly's backends) need a GPU.")
        if args.interpret_smoke:
            print("--interpret-smoke: the fused rows run under the Triton INTERPRETER; their times "
                  "are meaningless (script check only)")
    shapes = sweep(args, on_gpu)
    if on_gpu and "fused" in args.paths:
        try:  # the static model's kernels for every (dtype, p), compiled at once on the CPU
            from perf.static_model import prepare_neuron_predictions

            prepare_neuron_predictions(args.dtypes, args.ps, jobs=max(1, min(8, (os.cpu_count() or 2) - 1)),
                                       shapes=shapes)
        except Exception as e:
            print(f"static model unavailable: {short_error(e)}")
    start = time.perf_counter()
    rows, skipped, notes = [], [], set()
    units_measured = None
    for (T, N), p, dname in itertools.product(shapes, args.ps, args.dtypes):
        if args.time_budget is not None and time.perf_counter() - start > args.time_budget:
            skipped.append(f"T={T} N={N} p={p:g} {dname}")
            continue
        dtype = DTYPES[dname]
        try:
            new_rows, units = measure_config(args, T, N, dname, dtype, device, stamp, notes, p)
        except Exception as e:  # out of memory, a baseline that breaks: report, go on
            notes.add(f"T={T} N={N} {dname}: {short_error(e)}")
            new_rows, units = [], None
        units_measured = units or units_measured
        rows += new_rows
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
    units = units_measured or DESIGN_UNITS
    source = "measured on the fused path" if units_measured else "the fused design, not measured here: no GPU"
    caption = (
        f"bytes per element-step, s = dtype size: fwd {units['fwd']:g}s, bwd {units['bwd']:g}s ({source}); "
        "every path's GB/s = those bytes / its time. %copy: of empty_like(x).copy_(x) GB/s on T·N elements, "
        "same run. model: perf/static_model.py's prediction for the fused kernels at this T and N on this GPU "
        "(H100/H200 only; ms and % of copy bandwidth, its bound in the JSON rows). ×eager = eager ms / path ms; "
        "fused× = path ms / fused ms."
    )
    print_table(
        f"LIF neuron, {stamp['device']}, commit {stamp['commit']}",
        ("T", "N", "p", "dtype", "pass", "path", "ms", "model ms", "GB/s", "%copy", "model %copy", "×eager",
         "fused×"),
        [(r["T"], r["N"], r["p"], r["dtype"], r["pass"], r["path"] + (" (interp.)" if r.get("interpreted") else ""),
          r["ms"], r.get("model_ms"), r["gbps"], r["pct_copy"], r.get("model_pct_copy"), r["ratio_vs_eager"],
          r["fused_speedup"])
         for r in rows],
        caption=caption,
    )
    for note in sorted(notes):
        print("note:", note)
    if skipped:
        print(f"time budget of {args.time_budget:g} s reached; not measured: {', '.join(skipped)}")
    flush()
    return 0


def model_prediction(dname: str, p: float, pas: str, device: str, notes: set, T: int = 4,
                     N: int = 2**24) -> dict | None:
    """The static model's prediction for a fused row at ``T`` steps of ``N`` neurons on an H100 or
    H200: ``{"ms", "bound", "pct_of_copy_bw", "bytes"}`` (``perf.static_model.neuron_prediction``)."""
    name = torch.cuda.get_device_name() if device == "cuda" else ""
    model_device = next((d for d in ("H200", "H100") if d in name), None)
    if model_device is None:
        return None
    try:
        from perf.static_model import neuron_prediction

        return neuron_prediction(dname, p, pas, model_device, T=T, N=N)
    except Exception as e:  # the model compiles the kernels on the CPU: report, go on
        notes.add(f"static model: {short_error(e)}")
        return None


def model_pct_copy(dname: str, p: float, pas: str, device: str, notes: set, T: int = 4,
                   N: int = 2**24) -> float | None:
    """The static model's predicted % of copy bandwidth for a fused row (:func:`model_prediction`)."""
    pred = model_prediction(dname, p, pas, device, notes, T, N)
    return None if pred is None else pred["pct_of_copy_bw"]


def measure_config(args, T, N, dname, dtype, device, stamp, notes, p):
    """All paths and passes for one ``(T, N, dtype)``; appends its JSON lines at once."""
    params = make_params(device)
    x = make_input(T, N, dtype, device)
    dy = torch.randn(T, N, device=device, dtype=dtype)
    copy_ms, copy_gbps = copy_bandwidth(T * N, dtype, device)
    fns, backend_note = {}, {}
    for path in args.paths:
        fn, reason = make_path(path, device=device, p=p, T=T, compile_max_t=args.compile_max_t, params=params,
                               interpret=args.interpret_smoke)
        if fn is None:
            notes.add(f"{path}: {reason}")
            continue
        fns[path] = fn
        if path == "spikingjelly":
            backend_note[path] = fn.backend
    units = None
    if "fused" in fns:
        total, extra = saved_bytes(fns["fused"], x)
        if total:
            units = {"fwd": 2 + extra / (T * N * x.element_size()), "bwd": 2 + total / (T * N * x.element_size())}
        else:
            notes.add("fused: no [T, N] tensor seen by saved_tensors_hooks; GB/s use the design bytes")
    nbytes = bytes_model(units or DESIGN_UNITS, T, N, x.element_size())
    # the same function? (outputs are 0 or θ; a membrane within rounding of θ may flip a spike)
    reference = make_path("eager", device=device, p=0.0, T=T, compile_max_t=0, params=params)[0]
    for path in ("fused", "spikingjelly"):
        if path not in fns or (path == "fused" and p > 0):  # p > 0: the masks differ by design
            continue
        label = f"{path} ({backend_note[path]} backend)" if path in backend_note else path
        try:
            diff = check_same_function(fns[path], reference, x)
            notes.add(f"{label}: outputs differ from the eager reference on {diff:.2e} of elements "
                      f"at T={T} N={N} {dname}")
        except Exception as e:
            notes.add(f"{label} T={T} N={N} {dname}: {short_error(e)}")
    ms: dict[tuple[str, str], float] = {}
    for path, fn in fns.items():
        for pas in args.passes:
            try:
                ms[path, pas] = time_pass(fn, x, dy, params, pas, device)
            except Exception as e:  # a baseline that cannot run this dtype/shape is reported, not fatal
                if isinstance(e, torch.cuda.OutOfMemoryError):
                    torch.cuda.empty_cache()
                notes.add(f"{path} {pas} T={T} N={N} {dname}: {short_error(e)}")
        print(f"  measured T={T} N={N} {dname} {path}", flush=True)
    rows = []
    for (path, pas), t in ms.items():
        bw = gbps(nbytes[pas], t)
        eager = ms.get(("eager", pas))
        fused = ms.get(("fused", pas))
        row = {
            **stamp, "bench": "neuron", "T": T, "N": N, "dtype": dname, "pass": pas, "path": path,
            "p": p, "ms": t, "gbps": bw, "pct_copy": 100.0 * bw / copy_gbps, "copy_gbps": copy_gbps,
            "copy_ms": copy_ms, "bytes": nbytes[pas], "bytes_per_elem_step": nbytes[pas] / (T * N),
            "timer": timer_name(device),
            "ratio_vs_eager": eager / t if eager else None,
            "fused_speedup": t / fused if fused else None,
        }
        if path == "fused":
            pred = None if args.interpret_smoke else model_prediction(dname, p, pas, device, notes, T, N)
            row.update(model_pct_copy=pred and pred["pct_of_copy_bw"], model_ms=pred and pred["ms"],
                       model_bound=pred and pred["bound"])
            for base in ("eager", "compile", "spikingjelly"):
                b = ms.get((base, pas))
                row[f"ratio_vs_{base}"] = b / t if b else None
        if path == "spikingjelly":
            row["sj_backend"] = backend_note[path]
        if path == "fused" and args.interpret_smoke:
            row["timer"] += " (TRITON INTERPRETER: meaningless)"
            row["interpreted"] = True
        rows.append(row)
    append_jsonl(args.out, rows)
    return rows, units


if __name__ == "__main__":
    raise SystemExit(main())
