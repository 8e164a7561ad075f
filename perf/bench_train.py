"""Training-step throughput of the paper's networks on synthetic data (no data set needed).

One step = ``zero_grad`` → forward (per-step logits ``[T, B, K]``) → ``mean_ce_loss`` → backward →
SGD (momentum 0.9, weight decay 5e-4) step. Reported per configuration: median step time,
samples/s (``batch / step time``), peak memory (``torch.cuda.max_memory_allocated`` over the timed
steps: weights, gradients, optimizer state and activations) and model FLOPs utilisation.

MFU = (FLOPs of one forward+backward counted once per model/T/batch with
``torch.utils.flop_counter.FlopCounterMode``, which counts convolutions and matmuls; the neuron's
elementwise work is not counted) / step time / the datasheet peak of the GPU (``perf.common.
PEAK_FLOPS``: bf16 tensor cores for bf16 autocast; for fp32 the TF32 peak when cuDNN/cuBLAS may
use TF32 for that network's layers — PyTorch's default for convolutions — else plain fp32).

Inputs (``--data``): ``tensor`` times the model alone on one synthetic batch; ``trainer`` draws every
step's batch through the trainer's own data path (``asgl.train.data``: cached uint8 images of CIFAR
shape on the device, the recipe's crop + flip + AutoAugment + Cutout, normalisation), so its
samples/s is that of the step a user trains. ``--device-check`` reports both for ResNet-18 T = 4.

Configurations (GPU): models × T, the neuron backend (``triton`` = fused kernel, ``torch`` = the
reference loop), precision (``bf16`` autocast or ``fp32``), compilation (``none``,
``default`` = ``torch.compile(model)``, ``reduce-overhead`` = ``torch.compile`` with CUDA graphs,
``graph`` = the whole step captured by hand with ``torch.cuda.graph``: small T makes launch
overhead dominant). Convolutional nets run channels-last unless ``--no-channels-last``, with
``torch.backends.cudnn.benchmark`` on (fixed shapes; algorithms are picked in the warm-up steps).

Without CUDA: a tiny batch, the reference backend, fp32, no compilation, labelled as a CPU run.

    python perf/bench_train.py --models resnet18 --T 4 --batch 256 --backends triton,torch
    python perf/bench_train.py --device-check --out perf/out/train.jsonl
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import torch

import asgl.models as models
from asgl.layers import mean_ce_loss
from perf.common import (
    append_jsonl,
    cpu_threads,
    cuda_available,
    flush,
    peak_flops,
    print_header,
    print_table,
    run_stamp,
    short_error,
)

# name -> (input shape per sample given T, default T values, default GPU batch, classes, is a convnet)
MODELS = {
    "resnet18": (lambda T: (3, 32, 32), (2, 4), 256, 10, True),
    "resnet19": (lambda T: (3, 32, 32), (2, 4), 128, 10, True),
    "vggsnn": (lambda T: (T, 2, 48, 48), (10,), 32, 10, True),
    "shd_rnn": (lambda T: (T, 700), (250,), 256, 20, False),
}
BACKENDS = ("triton", "torch")
PRECISIONS = ("bf16", "fp32")
COMPILES = ("none", "default", "reduce-overhead", "graph")
DATA_PATHS = ("tensor", "trainer")
CPU_BATCH = 2
# The trainer's data path for the CIFAR networks: the recipe's augmentation over this many cached
# synthetic uint8 images on the device (configs/cifar10_resnet18_t4.yaml: crop 4, flip, AutoAugment,
# Cutout 16)
TRAINER_DATA = {"resnet18": "cifar10", "resnet19": "cifar10"}
TRAINER_IMAGES = 8192


@dataclass(frozen=True)
class Config:
    model: str
    T: int
    batch: int
    backend: str
    precision: str
    compile: str
    channels_last: bool
    data: str = "tensor"  # tensor: one synthetic batch; trainer: the trainer's data path every step


def device_check_configs() -> list[Config]:
    """The reduced set of ``perf/device_check.sh``: the ResNet-18 target pair with the model-only and
    the trainer's data path, VGGSNN, SHD, then (as the time budget allows) the ResNet-18 step
    compiled with CUDA graphs and with ``torch.compile``, on both inputs."""
    out = [Config("resnet18", 4, 256, "triton", "bf16", "none", True),
           Config("resnet18", 4, 256, "triton", "bf16", "none", True, "trainer")]
    for model, T, batch in (("resnet18", 4, 256), ("vggsnn", 10, 32), ("shd_rnn", 250, 256)):
        cl = MODELS[model][4]
        if model != "resnet18":
            out.append(Config(model, T, batch, "triton", "bf16", "none", cl))
        out.append(Config(model, T, batch, "torch", "fp32", "none", cl))
    for comp in ("reduce-overhead", "default"):
        out += [Config("resnet18", 4, 256, "triton", "bf16", comp, True, data) for data in ("trainer", "tensor")]
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of {tuple(MODELS)}")
    ap.add_argument("--T", type=str, default=None, help="comma list of T (default: each model's)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: per model; CPU: 2)")
    ap.add_argument("--backends", default=",".join(BACKENDS), help=f"comma list of {BACKENDS}")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help=f"comma list of {PRECISIONS}")
    ap.add_argument("--compile", default="none,reduce-overhead", help=f"comma list of {COMPILES}")
    ap.add_argument("--no-channels-last", action="store_true", help="keep convnets in NCHW")
    ap.add_argument("--data", default="tensor",
                    help=f"comma list of {DATA_PATHS}: tensor = one synthetic batch (the model alone); "
                         f"trainer = every step draws a batch through the trainer's data path (cached "
                         f"uint8 images on the device, the recipe's augmentation; {', '.join(TRAINER_DATA)})")
    ap.add_argument("--p", type=float, default=0.2, help="analog-mode probability of every neuron (default 0.2)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (after compiling)")
    ap.add_argument("--iters", type=int, default=10, help="timed steps (median reported)")
    ap.add_argument("--quick", action="store_true", help="CPU smoke size: resnet18 T=2 and shd_rnn T=25, 2 steps")
    ap.add_argument("--device-check", action="store_true",
                    help="the reduced GPU set of perf/device_check.sh (without CUDA: as --quick)")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds; later configurations are skipped")
    ap.add_argument("--threads", type=int, default=1, help="CPU only: intra-op threads (default 1)")
    ap.add_argument("--out", default=None, help="append one JSON line per configuration to this file")
    args = ap.parse_args(argv)

    def split(value, allowed, flag):
        items = [v.strip() for v in value.split(",") if v.strip()]
        for v in items:
            if v not in allowed:
                ap.error(f"{flag}: unknown value {v!r}; choose from {tuple(allowed)}")
        return items

    args.models = split(args.models, MODELS, "--models")
    args.backends = split(args.backends, BACKENDS, "--backends")
    args.precisions = split(args.precisions, PRECISIONS, "--precisions")
    args.compile = split(args.compile, COMPILES, "--compile")
    args.data = split(args.data, DATA_PATHS, "--data")
    if "trainer" in args.data:
        other = [m for m in args.models if m not in TRAINER_DATA]
        if other:
            ap.error(f"--data trainer: the trainer's image data path serves {tuple(TRAINER_DATA)}, not {other}")
    args.T = [int(t) for t in args.T.split(",")] if args.T else None
    if args.batch is not None and args.batch <= 0:
        ap.error(f"--batch must be positive, got {args.batch}")
    if args.iters <= 0 or args.warmup < 0:
        ap.error("--iters must be positive and --warmup non-negative")
    return args


def configs(args, on_gpu: bool) -> list[Config]:
    if args.device_check and on_gpu:
        return device_check_configs()
    if not on_gpu:
        if args.quick or args.device_check:
            batch = args.batch or CPU_BATCH
            return [Config("resnet18", 2, batch, "torch", "fp32", "none", False),
                    Config("shd_rnn", 25, batch, "torch", "fp32", "none", False)]
        return [Config(m, T, args.batch or CPU_BATCH, "torch", "fp32", "none", False, data)
                for m in args.models for T in (args.T or MODELS[m][1][:1]) for data in args.data]
    out = []
    for m in args.models:
        for T in args.T or MODELS[m][1]:
            for backend in args.backends:
                for precision in args.precisions:
                    for comp in args.compile:
                        for data in args.data:
                            out.append(Config(m, T, args.batch or MODELS[m][2], backend, precision, comp,
                                              MODELS[m][4] and not args.no_channels_last, data))
    return out


# ---------------------------------------------------------------------------------------------
# One configuration
# ---------------------------------------------------------------------------------------------


def build(cfg: Config, device: str, p: float):
    shape_fn, _, _, classes, convnet = MODELS[cfg.model]
    model = models.create_model(cfg.model, num_classes=classes, T=cfg.T, backend=cfg.backend, p=p).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand((cfg.batch, *shape_fn(cfg.T)), device=device, generator=g)
    if cfg.model == "shd_rnn" or cfg.model == "vggsnn":
        x = (x < 0.1).float()  # binned events: sparse 0/1 counts
    target = torch.randint(0, classes, (cfg.batch,), device=device, generator=g)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    return model, x, target, opt


def trainer_batches(cfg: Config, device: str):
    """Endless ``(x, y)`` batches from the trainer's own data path (``asgl.train.data``): cached uint8
    images on the device, the CIFAR recipe's augmentation, normalisation; a new epoch (shuffle and
    draws) whenever one runs out."""
    from asgl.train.data import DataConfig
    from asgl.train.data.images import synthetic_train_loader

    data = DataConfig(name=TRAINER_DATA[cfg.model], batch_size=cfg.batch, crop_pad=4, flip=True,
                      autoaugment=True, cutout=16)
    loader = synthetic_train_loader(data, max(TRAINER_IMAGES, cfg.batch), seed=0, device=device)
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for x, y in loader:
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
        epoch += 1


def make_step(model, x, target, opt, cfg: Config, device: str):
    """The training step as a zero-argument callable, compiled or captured per ``cfg.compile``;
    with ``cfg.data == "trainer"`` each step first takes a batch from :func:`trainer_batches`."""
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                              enabled=cfg.precision == "bf16")
    net = model
    if cfg.compile in ("default", "reduce-overhead"):
        net = torch.compile(model, mode=None if cfg.compile == "default" else "reduce-overhead")
    batches = trainer_batches(cfg, device) if cfg.data == "trainer" else None

    def step():
        inputs, labels = next(batches) if batches is not None else (x, target)
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = mean_ce_loss(net(inputs), labels)
        loss.backward()
        opt.step()

    if cfg.compile != "graph":
        return step
    # Whole-step capture: warm up on a side stream (creates momentum buffers, picks cuDNN
    # algorithms), then record one step; replay reruns it on the same static x/target.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        with autocast:
            loss = mean_ce_loss(net(x), target)
        loss.backward()
        opt.step()
    return graph.replay


def count_flops(model, x, target, cfg: Config, device: str) -> int:
    """FLOPs of one forward+backward (convolutions and matmuls), counted on the eager model."""
    from torch.utils.flop_counter import FlopCounterMode

    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                              enabled=cfg.precision == "bf16")
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast:
            loss = mean_ce_loss(model(x), target)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def time_steps(step, device: str, warmup: int, iters: int) -> list[float]:
    """Milliseconds of each of ``iters`` steps after ``warmup`` untimed ones (CUDA events on GPU)."""
    for _ in range(warmup):
        step()
    times = []
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) for s, e in events]
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def peak_precision(cfg: Config) -> str:
    if cfg.precision == "bf16":
        return "bf16"
    tf32 = torch.backends.cudnn.allow_tf32 if MODELS[cfg.model][4] else torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "fp32"


def measure(cfg: Config, args, device: str, flops_cache: dict) -> dict:
    if cfg.compile == "graph" and args.p not in (0.0, 1.0):
        return {"status": f"skipped: a captured graph replays one noise seed (use --p 0 or 1, got {args.p})"}
    if cfg.compile == "graph" and cfg.data == "trainer":
        return {"status": "skipped: the data path (a fresh batch every step) is not captured; use reduce-overhead"}
    if cfg.compile != "none" and not device.startswith("cuda"):
        return {"status": "skipped: compiled/graph variants are measured on the GPU only"}
    torch.manual_seed(0)
    model, x, target, opt = build(cfg, device, args.p)
    key = (cfg.model, cfg.T, cfg.batch)
    if key not in flops_cache:
        flops_cache[key] = count_flops(model, x, target, cfg, device)
    flops = flops_cache[key]
    t0 = time.perf_counter()
    step = make_step(model, x, target, opt, cfg, device)
    step()  # compiles (if any) here, so the warm-up below is steady state
    compile_s = time.perf_counter() - t0
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = time_steps(step, device, args.warmup, args.iters)
    ms = statistics.median(times)
    peak_mem = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    peak = peak_flops(device, peak_precision(cfg))
    return {
        "status": "ok", "ms": ms, "ms_min": min(times), "samples_s": cfg.batch / (ms * 1e-3),
        "peak_mem_gib": peak_mem, "flops_per_step": flops, "tflops": flops / (ms * 1e-3) / 1e12,
        "mfu": flops / (ms * 1e-3) / peak if peak else None, "peak_precision": peak_precision(cfg),
        "first_step_s": compile_s,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    on_gpu = cuda_available()
    device = "cuda" if on_gpu else "cpu"
    if not on_gpu:
        cpu_threads(args.threads)
        if args.quick or args.device_check:
            args.warmup, args.iters = 1, 2
    else:
        # fixed shapes: let cuDNN pick the fastest convolution algorithms once, in the warm-up steps
        torch.backends.cudnn.benchmark = True
    stamp = run_stamp(device)
    print_header(stamp)
    if not on_gpu:
        print(f"CPU RUN: batch {args.batch or CPU_BATCH}, reference (torch) backend, fp32, no compilation, "
              f"{torch.get_num_threads()} thread(s) — not comparable to GPU figures.")
    print(f"p = {args.p}; {args.warmup} warm-up + {args.iters} timed steps per configuration")
    flush()
    rows, skipped, flops_cache = [], [], {}
    start = time.perf_counter()
    for cfg in configs(args, on_gpu):
        if args.time_budget is not None and time.perf_counter() - start > args.time_budget:
            skipped.append(f"{cfg.model} T={cfg.T} {cfg.backend} {cfg.precision} {cfg.compile} data={cfg.data}")
            continue
        try:
            result = measure(cfg, args, device, flops_cache)
        except Exception as e:  # one failing configuration is reported, the others still run
            result = {"status": f"error: {short_error(e, 200)}"}
        row = {**stamp, "bench": "train", **cfg.__dict__, "p": args.p, "warmup": args.warmup,
               "iters": args.iters, **result}
        rows.append(row)
        append_jsonl(args.out, [row])
        print(f"  {cfg.model} T={cfg.T} B={cfg.batch} {cfg.backend} {cfg.precision} {cfg.compile} data={cfg.data}: "
              f"{row['status']}" + (f", {row['ms']:.2f} ms" if "ms" in row else ""), flush=True)
        gc.collect()
        if on_gpu:
            torch._dynamo.reset()
            torch.cuda.empty_cache()
    title = f"training step, {stamp['device']}, commit {stamp['commit']}" + ("" if on_gpu else " (CPU RUN)")
    print_table(
        title,
        ("model", "T", "batch", "backend", "prec", "compile", "data", "ch-last", "ms", "samples/s", "peak GiB",
         "TFLOP/s", "MFU %", "status"),
        [(r["model"], r["T"], r["batch"], r["backend"], r["precision"], r["compile"], r["data"],
          "yes" if r["channels_last"] else "no", r.get("ms"), r.get("samples_s"), r.get("peak_mem_gib"),
          r.get("tflops"), 100 * r["mfu"] if r.get("mfu") is not None else None, r["status"]) for r in rows],
        caption="MFU: counted conv/matmul FLOPs per step / step time / datasheet peak (bf16; fp32 runs "
                "against TF32 where cuDNN/cuBLAS may use it). Peak GiB: max_memory_allocated over the timed steps.",
    )
    if skipped:
        print(f"time budget of {args.time_budget:g} s reached; not measured: {', '.join(skipped)}")
    flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
