"""SHD training-step benchmark: the recurrent LIF layer fused in Triton vs the reference loop.

The network is the SHD model of ``docs/ASGL.md`` §4 (:class:`asgl.models.shd.SHDRNN`: 700 inputs
→ 240 recurrent LIF units → 20 linear readout, no biases) at T = 250. One training step is
``loss = CE(mean_t logits, label); loss.backward()`` on a batch of Bernoulli(0.05) input spikes
(the binned SHD spike counts are that sparse). Paths:

* ``fused``      ``backend="triton"``: ``asgl.kernels.rlif.recurrent_lif_fused``, one forward and one
                 backward launch for all T (GPU only);
* ``reference``  ``backend="torch"``: ``asgl.kernels.rlif_ref.recurrent_lif_ref``, a PyTorch loop over T.

Passes: ``fwd`` (training forward, autograd recording) and ``fwd+bwd`` (the step). Times are medians
of ``triton.testing.do_bench`` on a GPU and of a ``perf_counter`` loop on the CPU. Precisions:
``fp32`` and ``bf16`` (``torch.autocast``: the projections run in bf16, the neuron stores bf16).

Without CUDA only the reference runs, at a reduced batch (``--cpu-batch``): the fused kernel
needs a GPU (under ``TRITON_INTERPRET=1`` it would time the interpreter, which means nothing).

    python perf/bench_shd.py                                 # GPU: batch 32, fp32 + bf16
    python perf/bench_shd.py --batch 128 --dtypes bf16 --out perf/out/shd.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import torch
import torch.nn.functional as F

from asgl.models.shd import SHDRNN
from perf.common import (
    append_jsonl,
    bench,
    cpu_threads,
    cuda_available,
    flush,
    print_header,
    print_table,
    run_stamp,
    timer_name,
)

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=250)
    ap.add_argument("--batch", type=int, default=32, help="batch on a GPU")
    ap.add_argument("--cpu-batch", type=int, default=4, help="batch on the CPU (reference only)")
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16 (the CPU runs fp32)")
    ap.add_argument("--p", type=float, default=0.2, help="analog-mode probability of the noisy hybrid")
    ap.add_argument("--cpu-threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append one JSON line per measurement to this file")
    args = ap.parse_args(argv)
    for name in args.dtypes.split(","):
        if name not in DTYPES:
            ap.error(f"--dtypes: unknown dtype {name!r}; choose from {sorted(DTYPES)}")
    if args.T < 1 or args.batch < 1 or args.cpu_batch < 1:
        ap.error("--T, --batch and --cpu-batch must be positive")
    if not 0.0 <= args.p <= 1.0:
        ap.error(f"--p must be in [0, 1], got {args.p}")
    return args


def make_step(backend: str, *, T: int, batch: int, dtype, p: float, device: str):
    """``(fwd, step, params)``: the training forward alone and forward + backward of one batch."""
    torch.manual_seed(0)
    model = SHDRNN(T=T, backend=backend, p=p, width_granularity="channel").to(device).train()
    x = (torch.rand(batch, T, 700, device=device) < 0.05).float()
    label = torch.randint(0, 20, (batch,), device=device)
    params = [q for q in model.parameters() if q.requires_grad]

    def autocast():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device, dtype=dtype)

    def fwd():
        with autocast():
            return F.cross_entropy(model(x).float().mean(0), label)

    def step():
        fwd().backward()

    return fwd, step, params


def main(argv=None) -> None:
    args = parse_args(argv)
    device = "cuda" if cuda_available() else "cpu"
    stamp = run_stamp(device)
    print_header(stamp)
    if device == "cpu":
        cpu_threads(args.cpu_threads)
        batch, dtype_names, paths = args.cpu_batch, ["fp32"], ["reference"]
        print(f"no CUDA device: the fused Triton path needs a GPU and is skipped; timing the reference "
              f"loop (backend='torch') on the CPU at batch {batch} ({args.cpu_threads} thread(s))")
    else:
        batch, dtype_names, paths = args.batch, args.dtypes.split(","), ["fused", "reference"]
    flush()

    rows = []
    for dname in dtype_names:
        times = {}
        for path in paths:
            backend = "triton" if path == "fused" else "torch"
            fwd, step, params = make_step(backend, T=args.T, batch=batch, dtype=DTYPES[dname], p=args.p,
                                          device=device)
            for pas, fn in (("fwd", fwd), ("fwd+bwd", step)):
                ms = bench(fn, device=device, grad_to_none=params)
                times[(path, pas)] = ms
                rec = dict(stamp, bench="shd", model="shd_rnn", T=args.T, batch=batch, dtype=dname, p=args.p,
                           path=path, **{"pass": pas}, ms=ms, samples_s=batch / (ms * 1e-3),
                           timer=timer_name(device))
                if path == "reference" and ("fused", pas) in times:
                    rec["fused_speedup"] = ms / times[("fused", pas)]
                append_jsonl(args.out, [rec])
                rows.append(rec)
                print(f"{dname} {path:9s} {pas:7s} {ms:10.3f} ms", flush=True)
    print_table(
        f"SHD step (700-240r-20, T={args.T}, batch {batch}) on {stamp['device']}",
        ["dtype", "path", "pass", "ms", "samples/s", "fused speedup"],
        [(r["dtype"], r["path"], r["pass"], r["ms"], r["samples_s"], r.get("fused_speedup")) for r in rows],
        caption=f"{timer_name(device)}; fused speedup = reference ms / fused ms"
        + ("" if device == "cuda" else "; CPU run: reference only (the fused kernel needs a GPU)"),
    )


if __name__ == "__main__":
    main()
