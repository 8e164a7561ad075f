"""Benchmark of the conv -> BN -> LIF tail: fused batch norm + LIF vs batch norm then the fused LIF.

Paths, all on the same conv output ``x_seq [T, B, C, H, W]`` (batch statistics, affine, a layer-wide
learnable width and decay, as in the networks' training step):

* ``fused``    ``asgl.kernels.bn_lif.bn_lif_fused`` (GPU only);
* ``bn+lif``   today's path: ``F.batch_norm`` on the folded tensor, then ``asgl.kernels.lif.lif_fused``
               (GPU only);
* ``eager``    ``asgl.kernels.bn_lif_ref.bn_lif_ref`` (batch norm, then the reference LIF loop).

Bytes per element-step in units of the dtype size s (the design, held by
``tests/test_bn_lif.py::test_bytes_per_element_step``, which counts them from the kernels): fused
forward 3s (statistics read x, then read x, write y), backward 6s (read x, dy, write g; read g, x,
write dx); today's forward 6s (BN statistics 1, normalise 2, LIF 3), backward 8s (LIF 3, BN reduce 2,
BN apply 3). Every path's GB/s is the *fused* byte count over its own time, so GB/s ratios are speed
ratios, and ``%copy`` divides by ``empty_like(x).copy_(x)`` measured in the same run.

``--saved-resnet18`` measures, on any device (CPU: the kernels run under ``TRITON_INTERPRET=1``),
the bytes saved for backward by one ResNet-18 training forward (T = 4, CIFAR input) with
``saved_tensors_hooks``: today's network (BN, then the fused LIF) against the same network with every
BN -> LIF tail fused (every network's units) or not (``BatchNormLIF.fused = False``).

    python perf/bench_bn_lif.py --out perf/out/bn_lif.jsonl           # GPU timing sweep
    python perf/bench_bn_lif.py --saved-resnet18 --batch 2             # CPU or GPU
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import torch
from torch import nn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PASSES = ("fwd", "bwd", "fwd+bwd")
# ResNet-18's BN -> LIF tails on CIFAR at batch 128, T = 4: one shape per stage
GPU_SHAPES = ((4, 128, 64, 32, 32), (4, 128, 128, 16, 16), (4, 128, 256, 8, 8), (4, 128, 512, 4, 4),
              (10, 32, 128, 24, 24))
QUICK_SHAPES = ((4, 128, 64, 32, 32), (4, 128, 512, 4, 4))
UNITS = {"fused": {"fwd": 3, "bwd": 6}, "bn+lif": {"fwd": 6, "bwd": 8}}


# ---------------------------------------------------------------------------------------------
# Saved-for-backward bytes of a ResNet-18 training forward
# ---------------------------------------------------------------------------------------------


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for backward after one training forward."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(storages.values())


def saved_resnet18(args) -> None:
    import asgl

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    # channels-last memory (what a fast run uses; under the interpreter, far fewer programs)
    fused = asgl.create_model("resnet18", T=4, num_classes=10, p=0.2, backend="triton").to(
        device, memory_format=torch.channels_last)
    model = copy.deepcopy(fused)
    for m in model.modules():
        if isinstance(m, asgl.BatchNormLIF):
            m.fused = False  # batch norm, then the fused LIF
    x = torch.randn(args.batch, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    rows = []
    for dname in args.dtypes:
        dtype = DTYPES[dname]
        for name, net in (("BN, then fused LIF", model), ("fused BN+LIF", fused)):
            net = copy.deepcopy(net).to(dtype).train()
            nbytes = saved_bytes(net, x.to(dtype))
            rows.append((name, dname, nbytes))
    print(f"ResNet-18, T = 4, batch {args.batch}, 3x32x32 input (channels-last), {device}: bytes saved for "
          f"backward by one training forward")
    for name, dname, nbytes in rows:
        print(f"  {name:20s} {dname:5s} {nbytes / 2**20:9.2f} MiB")


# ---------------------------------------------------------------------------------------------
# GPU timing
# ---------------------------------------------------------------------------------------------


def make_paths(C: int, device: str, p: float):
    """``{path: fn(x) -> y}`` over shared parameters, and the leaves that receive gradients."""
    from asgl.kernels.bn_lif import bn_lif_fused
    from asgl.kernels.bn_lif_ref import bn_lif_ref
    from asgl.kernels.lif import lif_fused

    weight = torch.ones(C, device=device, requires_grad=True)
    bias = torch.full((C,), 0.3, device=device, requires_grad=True)
    rm, rv = torch.zeros(C, device=device), torch.ones(C, device=device)
    decay_logit = torch.tensor(0.0, device=device, requires_grad=True)
    width_param = torch.tensor(4.0, device=device, requires_grad=True)
    seed = torch.zeros(1, dtype=torch.int64, device=device)
    lif_args = (decay_logit, width_param, 1.0)

    def today(x):
        z = nn.functional.batch_norm(x.flatten(0, 1), rm, rv, weight, bias, True).view(x.shape)
        return lif_fused(z, *lif_args, p=p, seed=seed)

    paths = {
        "fused": lambda x: bn_lif_fused(x, weight, bias, rm, rv, *lif_args, p=p, seed=seed),
        "bn+lif": today,
        "eager": lambda x: bn_lif_ref(x, weight, bias, rm, rv, *lif_args, p=p),
    }
    return paths, [weight, bias, decay_logit, width_param]


def time_all(args) -> None:
    import triton

    from perf.common import append_jsonl, bench, copy_bandwidth, gbps, print_header, print_table, run_stamp

    device = "cuda"
    stamp = run_stamp(device)
    print_header(stamp)
    rows, notes = [], set()
    for shape in (QUICK_SHAPES if args.quick else GPU_SHAPES):
        T, B, C, H, W = shape
        n = T * B * C * H * W
        for dname in args.dtypes:
            dtype = DTYPES[dname]
            x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last_3d) \
                if args.channels_last else torch.randn(shape, device=device, dtype=dtype)
            x.requires_grad_()
            dy = torch.randn_like(x)
            _, copy_gbps = copy_bandwidth(n, dtype, device)
            paths, leaves = make_paths(C, device, args.p)
            ms = {}
            for path, fn in paths.items():
                if path == "eager" and T * B * C * H * W > 2**27:
                    continue
                for pas in PASSES:
                    grads = [x, *leaves]
                    if pas == "fwd":
                        ms[path, pas] = bench(lambda: fn(x), device=device, grad_to_none=grads)
                    elif pas == "bwd":
                        y = fn(x)
                        ms[path, pas] = bench(lambda: y.backward(dy, retain_graph=True), device=device,
                                              grad_to_none=grads)
                    else:
                        ms[path, pas] = bench(lambda: fn(x).backward(dy), device=device, grad_to_none=grads)
            for (path, pas), t in ms.items():
                units = UNITS["fused"]
                nbytes = (units["fwd"] * (pas != "bwd") + units["bwd"] * (pas != "fwd")) * x.element_size() * n
                bw = gbps(nbytes, t)
                row = {**stamp, "bench": "bn_lif", "shape": list(shape), "dtype": dname, "pass": pas,
                       "path": path, "p": args.p, "ms": t, "gbps": bw, "pct_copy": 100 * bw / copy_gbps,
                       "fused_speedup": t / ms["fused", pas], "triton": triton.__version__,
                       "channels_last": args.channels_last}
                if path == "fused":
                    pred = model_prediction(row, notes)
                    row.update(model_ms=pred and pred["ms"], model_bound=pred and pred["bound"],
                               model_pct_copy=pred and pred["pct_of_copy_bw"])
                rows.append(row)
    print_table(
        f"BN + LIF, {stamp['device']}, commit {stamp['commit']}",
        ("shape", "dtype", "pass", "path", "ms", "model ms", "GB/s", "%copy", "model %copy", "fused×"),
        [("x".join(map(str, r["shape"])), r["dtype"], r["pass"], r["path"], r["ms"], r.get("model_ms"), r["gbps"],
          r["pct_copy"], r.get("model_pct_copy"), r["fused_speedup"]) for r in rows],
        caption="GB/s = the fused design's bytes (fwd 3s, bwd 6s per element-step) / the path's time; "
                "fused× = path ms / fused ms; model: perf/static_model.py's prediction for the fused launches "
                "(H100/H200 only; `perf/static_model.py --calibrate` reads these rows)",
    )
    for note in sorted(notes):
        print("note:", note)
    append_jsonl(args.out, rows)


def model_prediction(row: dict, notes: set) -> dict | None:
    """The static model's prediction for a fused row on an H100 or H200 (``perf.recipes.row_launches``)."""
    name = torch.cuda.get_device_name()
    device = next((d for d in ("H200", "H100") if d in name), None)
    if device is None:
        return None
    try:
        from perf.recipes import row_launches
        from perf.static_model import compile_specs, kernel_cost, predict_op

        launches = row_launches(row)
        compile_specs([k.spec for k in launches], jobs=max(1, min(8, (os.cpu_count() or 2) - 1)))
        return predict_op([kernel_cost(k) for k in launches], device)
    except Exception as e:  # the model compiles on the CPU: report, go on
        notes.add(f"static model: {type(e).__name__}: {str(e)[:160]}")
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--saved-resnet18", action="store_true", help="bytes saved for backward by a ResNet-18 step")
    ap.add_argument("--batch", type=int, default=2, help="--saved-resnet18: batch size (default 2)")
    ap.add_argument("--dtypes", default="bf16,fp32", help="comma list of fp32, bf16, fp16")
    ap.add_argument("--quick", action="store_true", help="two shapes only")
    ap.add_argument("--channels-last", action="store_true", help="time the channels-last memory layout")
    ap.add_argument("--p", type=float, default=0.2, help="analog-mode probability (default 0.2, the CIFAR recipe)")
    ap.add_argument("--out", default=None, help="append one JSON line per measurement to this file")
    args = ap.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in args.dtypes:
        if d not in DTYPES:
            ap.error(f"--dtypes: unknown dtype {d!r}; choose from {sorted(DTYPES)}")
    if args.saved_resnet18:
        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        saved_resnet18(args)
        return 0
    if not torch.cuda.is_available():
        print("NO CUDA: the timing sweep needs a GPU (the fused kernels under the interpreter would time "
              "the interpreter). --saved-resnet18 runs on the CPU.")
        return 0
    time_all(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
