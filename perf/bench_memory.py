"""Activation memory of a training step: what stays alive for the backward, per sample and fixed, for
each activation-memory choice of :mod:`asgl.memory`.

    python perf/bench_memory.py --json perf/out/memory.jsonl                  # the four networks (CPU)
    python perf/bench_memory.py --models resnet18 --kernels stand-in          # seconds instead of minutes
    python perf/bench_memory.py --gpu --models resnet18 --batch 256 --json F  # CUDA: peak memory, step time

Choices: ``none`` (``remat_spikes=False``), ``remat_spikes`` (True) and ``remat_spikes+blocks`` (and
``checkpoint="blocks"``). Setting (the recipes' training step): triton backend, bf16 autocast,
channels-last, p = 0.2, training mode.

**CPU** (the figures in ``perf/RESULTS.md``): one training forward under a ``TorchDispatchMode`` that
takes a weak reference to the storage of every tensor an op makes; after the forward, with only the
loss held, autocast left (its weight-cast cache freed) and garbage collected, the storages still
alive — parameters, buffers and the input batch aside — are what autograd keeps for the backward,
whatever keeps them (saved tensors, the rematerialisation's records, checkpoint's block inputs).
Per sample and fixed part from two batch sizes (``--batches``): ``per_sample = (M₂ − M₁)/(b₂ − b₁)``,
``fixed = M₁ − b₁·per_sample``. ``by_owner``: the per-sample bytes by the kind of op that made them
(the units' inputs x are the convolution outputs, their outputs the spikes, ...). For ``none`` the
issue's method (``saved_tensors_hooks``, distinct storages counted once) is run too
(``saved_mib_per_sample_hooks``): the same figure when nothing but autograd's saved tensors is kept.

``--kernels interpret`` (default) runs the fused units' Triton kernels under ``TRITON_INTERPRET=1``
(ResNet-18 T=4: about a minute per choice); ``stand-in`` computes their outputs with the PyTorch
references instead (``perf/step_budget.py``'s stand-ins): the same custom ops, autograd nodes and
saved tensors, hence the same bytes (``tests/test_remat.py`` checks both agree).

``extra_forward_flops_pct``: the convolution and linear FLOPs a choice computes a second time (those
inside checkpointed blocks; the rematerialised spikes cost elementwise passes, no FLOPs), from the
layers' shapes, over those of one forward. ``max_batch_80gb``: ``(80e9 B − fixed − model state) /
per_sample``, model state = fp32 weights, gradients and SGD momentum (12 B per parameter); an upper
bound: the backward's transient buffers and the allocator's slack are not in it.

**GPU** (``--gpu``): at ``--batch`` on CUDA, ``held_gib`` = memory allocated after the training forward
less before it, ``peak_gib`` = ``torch.cuda.max_memory_allocated`` over forward and backward (weights,
gradients included; no optimizer), and the median step time (forward + backward) of ``--iters``
steps after ``--warmup``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # run as a script: import from the repository root, not from perf/ (perf/profile.py would
    # shadow the standard library's profile module)
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import torch

if not torch.cuda.is_available():  # before triton is imported: the fused units run in its interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.utils._pytree as pytree
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

import asgl
from perf.common import append_jsonl, print_header, print_table, run_stamp

MIB = 2**20
# (network, T, input channels, image side, classes): the recipes' shapes (CIFAR, Tiny-ImageNet, CIFAR10-DVS)
NETWORKS = {
    "resnet18": (4, 3, 32, 10),
    "resnet19": (4, 3, 32, 10),
    "vggsnn": (10, 2, 48, 10),
    "vgg13": (4, 3, 64, 200),
}
# choice -> (remat_spikes, checkpoint)
CHOICES = {"none": (False, "none"), "remat_spikes": (True, "none"), "remat_spikes+blocks": (True, "blocks")}
GPU_BYTES = 80e9
MODEL_STATE_BYTES_PER_PARAM = 12  # fp32 weight, gradient, SGD momentum


def build(name: str, choice: str, device: str = "cpu") -> torch.nn.Module:
    T, channels, _, classes = NETWORKS[name]
    remat, checkpoint = CHOICES[choice]
    torch.manual_seed(0)
    model = asgl.create_model(name, num_classes=classes, T=T, in_channels=channels, p=0.2, backend="triton",
                              remat_spikes=remat, checkpoint=checkpoint)
    return model.to(device, memory_format=torch.channels_last).train()


def batch_of(name: str, batch: int, device: str = "cpu") -> torch.Tensor:
    T, channels, side, _ = NETWORKS[name]
    g = torch.Generator().manual_seed(batch)
    shape = (batch, channels, side, side) if name != "vggsnn" else (batch, T, channels, side, side)
    x = torch.rand(shape, generator=g)
    x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
    return x.to(device)


# ----------------------------------------------------------------------------------- liveness (CPU)


def _owner(func, index: int, path: str, kind: str) -> str:
    """The kind of tensor an op output is, by the op and the module that made it (its path, class)."""
    name = func.name()
    shortcut = ".shortcut" in f".{path}"
    if func.namespace == "asgl":
        return {0: "spikes (unit outputs)", 1: "membranes u"}.get(index, "masks")
    if "convolution" in name:
        return "shortcut conv outputs" if shortcut else "conv outputs (units' x)"
    if "batch_norm" in name:
        return "shortcut BN outputs" if shortcut else "BN outputs"
    if name in ("aten::addmm", "aten::mm", "aten::linear", "aten::bmm"):
        return "linear outputs"
    if name == "aten::_to_copy":
        return "casts (the image)"
    if "pool" in name or "Pool" in kind:
        return "pool outputs"
    if kind == "Flatten":
        return "flattened features"
    if not path:
        return "the loss"
    return f"{name} ({path})"


class _Made(TorchDispatchMode):
    """Weak references to the storage of every op output, with the kind of tensor it is; with
    ``stand_in`` the fused custom ops compute with the references instead of their kernels."""

    def __init__(self, stand_in: bool):
        super().__init__()
        self.stand_in = stand_in
        self.path, self.kind = "", ""  # the innermost module running, its class (set by module hooks)
        self.made: dict[int, tuple[StorageWeakRef, int, str]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.stand_in and func.namespace == "asgl":
            out = _stand_in(func, args)
        else:
            out = func(*args, **kwargs)
        for i, t in enumerate(pytree.tree_leaves(out)):
            if isinstance(t, torch.Tensor) and t.numel():
                s = t.untyped_storage()
                old = self.made.get(s.data_ptr())
                if old is None or old[0].expired():
                    self.made[s.data_ptr()] = (StorageWeakRef(s), s.nbytes(), _owner(func, i, self.path, self.kind))
        return out

    def alive(self, exclude: set[int]) -> dict[str, int]:
        by: dict[str, int] = {}
        for key, (ref, nbytes, owner) in self.made.items():
            if key not in exclude and not ref.expired():
                by[owner] = by.get(owner, 0) + nbytes
        return by


def _stand_in(func, args):
    """The step counter's CPU value of a fused op, in the layout the op's own allocation has."""
    from asgl.kernels.host import alloc_like
    from perf.step_budget import _stand_in as values

    out = values(func._opname, args)
    if func._opname in ("bn_lif_fwd", "lif_fwd", "rlif_fwd"):
        y = alloc_like(args[0])
        y.copy_(out[0])
        out = (y, *out[1:])
    return out


@contextlib.contextmanager
def _module_paths(model: torch.nn.Module, mode: _Made, flops: dict):
    """Track the innermost running module in ``mode.path``; count each convolution's and linear
    layer's forward FLOPs in ``flops[path]``."""
    names = {m: n for n, m in model.named_modules()}
    stack: list[str] = []

    def pre(module, args):
        stack.append((mode.path, mode.kind))
        mode.path, mode.kind = names.get(module, mode.path), type(module).__name__

    def post(module, args, out):
        if isinstance(module, torch.nn.Conv2d):
            k = module.in_channels // module.groups * math.prod(module.kernel_size)
            flops[names[module]] = flops.get(names[module], 0) + 2 * out.numel() * k
        elif isinstance(module, torch.nn.Linear):
            flops[names[module]] = flops.get(names[module], 0) + 2 * out.numel() * module.in_features
        mode.path, mode.kind = stack.pop()

    handles = [m.register_forward_pre_hook(pre) for m in names] + [m.register_forward_hook(post) for m in names]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _training_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        logits = model(x)
    return logits.float().mean(0).logsumexp(-1).mean()


def held(model: torch.nn.Module, x: torch.Tensor, *, stand_in: bool = False) -> tuple[dict[str, int], dict]:
    """``(bytes alive after a training forward by owner, forward FLOPs per layer path)``."""
    exclude = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers(), x)}
    mode, flops = _Made(stand_in), {}
    with _module_paths(model, mode, flops), mode:
        loss = _training_forward(model, x)
    gc.collect()
    by = mode.alive(exclude)
    del loss
    return by, flops


def saved_by_hooks(model: torch.nn.Module, x: torch.Tensor, *, stand_in: bool = False) -> int:
    """The issue's count: distinct storages packed by ``saved_tensors_hooks`` in one training forward,
    parameters aside. Only meaningful where the model installs no hooks of its own (choice ``none``)."""
    params = {t.untyped_storage().data_ptr() for t in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen.setdefault(s.data_ptr(), s.nbytes())
        return t

    mode = _Made(stand_in) if stand_in else contextlib.nullcontext()
    with mode, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = _training_forward(model, x)
    del loss
    return sum(seen.values())


def extra_flops_pct(model: torch.nn.Module, flops: dict) -> float:
    """Forward FLOPs of the layers inside checkpointed blocks, % of one forward's."""
    from asgl.models.units import Segments

    inside = set()
    for path, seg in model.named_modules():
        if isinstance(seg, Segments) and seg.checkpoint:
            inside |= {f"{path}.{n}" if path else n for n, _ in seg.named_modules() if n}
    total = sum(flops.values())
    return 100.0 * sum(f for p, f in flops.items() if p in inside) / total if total else 0.0


def measure_cpu(name: str, choice: str, batches: tuple[int, int], stand_in: bool) -> dict:
    b1, b2 = batches
    model = build(name, choice)
    t0 = time.perf_counter()
    (by1, flops), (by2, _) = (held(model, batch_of(name, b, "cpu"), stand_in=stand_in) for b in batches)
    m1, m2 = sum(by1.values()), sum(by2.values())
    per_sample = (m2 - m1) / (b2 - b1)
    fixed = m1 - b1 * per_sample
    params = sum(p.numel() for p in model.parameters())
    room = GPU_BYTES - fixed - MODEL_STATE_BYTES_PER_PARAM * params
    row = {
        "model": name, "T": NETWORKS[name][0], "choice": choice,
        "saved_mib_per_sample": round(per_sample / MIB, 3), "fixed_mib": round(fixed / MIB, 2),
        "extra_forward_flops_pct": round(extra_flops_pct(model, flops), 1),
        "max_batch_80gb": int(room // per_sample) if per_sample > 0 else None,
        "by_owner_mib_per_sample": {k: v for k in sorted(set(by1) | set(by2), key=lambda k: -by2.get(k, 0))
                                    if (v := round((by2.get(k, 0) - by1.get(k, 0)) / (b2 - b1) / MIB, 3))},
        "forward_gflops_per_sample": round(sum(flops.values()) / b2 / 1e9, 3),
        "params": params, "batches": list(batches), "kernels": "stand-in" if stand_in else "interpret",
        "precision": "bf16", "channels_last": True, "p": 0.2,
    }
    if choice == "none":
        h1, h2 = (saved_by_hooks(model, batch_of(name, b, "cpu"), stand_in=stand_in) for b in batches)
        row["saved_mib_per_sample_hooks"] = round((h2 - h1) / (b2 - b1) / MIB, 3)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


# ------------------------------------------------------------------------------------------- GPU


def measure_gpu(name: str, choice: str, batch: int, warmup: int, iters: int) -> dict:
    device = "cuda"
    torch.backends.cudnn.benchmark = True
    gc.collect()
    torch.cuda.empty_cache()  # the previous choice's blocks
    model = build(name, choice, device)
    x = batch_of(name, batch, device)
    row = {"model": name, "T": NETWORKS[name][0], "choice": choice, "batch": batch, "precision": "bf16",
           "channels_last": True, "p": 0.2}
    try:
        times = []
        for i in range(warmup + iters):
            model.zero_grad(set_to_none=False)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            start = time.perf_counter()
            loss = _training_forward(model, x)
            after = torch.cuda.memory_allocated()
            loss.backward()
            torch.cuda.synchronize()
            if i >= warmup:
                times.append(1e3 * (time.perf_counter() - start))
            row["held_gib"] = round((after - before) / 2**30, 3)
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            del loss
        row["step_ms"] = round(statistics.median(times), 2)
        row["status"] = "ok"
    except torch.OutOfMemoryError:
        row["status"] = "out of memory"
    return row


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(NETWORKS), help=f"comma-separated, of {', '.join(NETWORKS)}")
    ap.add_argument("--choices", default=",".join(CHOICES), help=f"comma-separated, of {', '.join(CHOICES)}")
    ap.add_argument("--batches", default="1,2", help="CPU: the two batch sizes of the per-sample figure")
    ap.add_argument("--kernels", choices=("interpret", "stand-in"), default="interpret",
                    help="CPU: the fused ops' Triton kernels under the interpreter, or their PyTorch references")
    ap.add_argument("--gpu", action="store_true", help="measure on CUDA: held and peak memory, step time")
    ap.add_argument("--batch", type=int, default=256, help="--gpu: batch size")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", default=None, help="append one JSON row per network and choice to this file")
    args = ap.parse_args(argv)
    names, choices = args.models.split(","), args.choices.split(",")
    for n in names:
        if n not in NETWORKS:
            ap.error(f"--models: unknown {n!r}; one of {', '.join(NETWORKS)}")
    for c in choices:
        if c not in CHOICES:
            ap.error(f"--choices: unknown {c!r}; one of {', '.join(CHOICES)}")
    if args.gpu and not torch.cuda.is_available():
        ap.error("--gpu needs CUDA")
    batches = tuple(int(b) for b in args.batches.split(","))
    if len(batches) != 2 or not 0 < batches[0] < batches[1]:
        ap.error(f"--batches: two increasing sizes, got {args.batches!r}")
    device = "cuda" if args.gpu else "cpu"
    stamp = run_stamp(device)
    print_header(stamp)
    rows = []
    for name in names:
        for choice in choices:
            row = (measure_gpu(name, choice, args.batch, args.warmup, args.iters) if args.gpu
                   else measure_cpu(name, choice, batches, args.kernels == "stand-in"))
            row = {**row, **stamp}
            rows.append(row)
            append_jsonl(args.json, [row])
            print(row, flush=True)
    if args.gpu:
        print_table("training step memory (GPU)", ("model", "T", "choice", "batch", "held GiB", "peak GiB", "step ms",
                                                   "status"),
                    [(r["model"], r["T"], r["choice"], r["batch"], r.get("held_gib"), r.get("peak_gib"),
                      r.get("step_ms"), r["status"]) for r in rows])
    else:
        print_table("kept for the backward (CPU count)", ("model", "T", "choice", "MiB/sample", "fixed MiB",
                                                          "extra fwd FLOPs %", "max batch 80 GB"),
                    [(r["model"], r["T"], r["choice"], r["saved_mib_per_sample"], r["fixed_mib"],
                      r["extra_forward_flops_pct"], r["max_batch_80gb"]) for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
