"""Kernel launches and host syncs of one training step, counted per phase on the CPU.

    python perf/step_budget.py --config configs/cifar10_resnet18_t4.yaml
    python perf/step_budget.py --config configs/cifar10_resnet18_t4.yaml --batch 8 --json
    python perf/step_budget.py --config configs/quickstart.yaml --backend torch --data.autoaugment=true

At a 15 ms step every launch from Python (≈ 4-6 µs) counts, and a host sync stalls the launch
queue. Both can be counted exactly without a GPU: a ``TorchDispatchMode`` sees every aten op the
step dispatches. The step is the trainer's (``train/run.py``, one process, ``train.compile=none``):
a batch from the trainer's own data path over synthetic images of the data set's shape
(``asgl.train.data.images.synthetic_train_loader``: the real gather, augmentation and normalisation),
the forward under the recipe's autocast, the loss, the backward, ``optimizer_step`` and the LR
schedule, and the per-step metric sums. A log point (every ``train.log_every`` steps) is counted on
its own. One warm-up step runs first (the optimizers create their state lazily).

Phases: ``data`` (index gather, normalisation; ``augment`` is the augmentation inside it, counted
apart), ``forward`` (model and loss), ``backward``, ``optimizer``, ``metrics`` (the on-device sums
every step adds to), ``log`` (one log point). ``launches`` counts the ops that run a kernel on a
GPU; views, ``empty`` allocations and host reads launch nothing and are left out (``ops`` counts
every dispatched op). The count does not depend on the batch size (no per-sample Python loops), so
the CPU run uses a small batch (``--batch``, default 8).

Backends (``--backend fused``, the default): the neurons and the augmentation run the Python path
of their fused custom ops (``backend=triton``, as on a GPU) and each ``asgl::*`` custom op counts
the launches its implementation issues on a GPU, from :data:`FUSED_OP_LAUNCHES` (the one place to
update when the kernels change); on the CPU the counter computes their values with the references
(the neuron's backward gives zeros), which changes no count. ``--backend torch`` counts the eager
references' ops instead.

Bytes: every launch's traffic, its tensor arguments read once and its outputs written once
(``elementwise``: everything but the convolutions and matrix products, counted apart as ``matmul``);
a fused custom op by the same rule plus what its kernels stream a second time
(:func:`fused_extra_bytes`). The figure of merit of the memory-bound part of a step: with
``model.remat_spikes`` the backward reruns each unit's forward kernel (read x, write y), and the
``--json`` rows' ``fused_order`` lists the fused ops of each phase in the order they ran.

Host syncs: ``_local_scalar_dense`` (``.item()``, ``int()``, ``float()``, ``bool()`` of a tensor),
ops whose output shape depends on the data (``nonzero``, boolean-mask indexing, ``masked_select``,
``unique``, ``bincount``, ``repeat_interleave`` without ``output_size``), and ``.tolist()``,
``.numpy()``, ``.cpu()`` (on the CPU a host read of any tensor is counted, since device and host
tensors cannot be told apart here; the trainer's step reads none, so a zero is exact). Each sync is
reported with the line that caused it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

PHASES = ("data", "augment", "forward", "backward", "optimizer", "metrics", "log")
STEP_PHASES = ("data", "augment", "forward", "backward", "optimizer", "metrics")

# Launches per call of each fused custom op on a GPU, read off its implementation; update here when
# a launcher changes (an op missing here stops the count with its name; tests/test_perf_regression.py
# counts the neuron's launches by running it). augment_images (train/data/augment_triton.py): the
# kernel (its scratch rows are torch.empty). lif_fwd (kernels/lif.py): the kernel. lif_bwd: the
# backward kernel and the finalize kernel (partial sums, chain rule, the outputs in the
# parameters' dtypes) = 2, and with per-channel widths the dk reduction (+1, see fused_launches).
FUSED_OP_LAUNCHES = {
    "asgl::augment_images": 1,
    "asgl::lif_fwd": 1,
    "asgl::lif_bwd": 2,  # the backward kernel and the finalize kernel (asgl.kernels.lif._launch_bwd)
    # the fused batch norm + LIF (asgl.kernels.bn_lif; tests/test_perf_regression.py counts them by
    # running the ops): statistics = the stats kernel and the coefficient kernel (which also updates
    # the running buffers; with running statistics the coefficient kernel alone, see fused_launches);
    # forward = the kernel; backward = the kernel, the finalize kernel and the apply kernel; on
    # layers of many tiles the group sums before the coefficient and finalize kernels (+1 and up to
    # +2, asgl.kernels.bn_lif.group_sum_launches, see fused_launches)
    "asgl::bn_stats": 2,
    "asgl::bn_lif_fwd": 1,
    "asgl::bn_lif_bwd": 3,
}


def fused_launches(key: str, args) -> int:
    """Launches of one call of the fused custom op ``key`` with arguments ``args``."""
    if key not in FUSED_OP_LAUNCHES:
        raise KeyError(f"{key}: no launch count in FUSED_OP_LAUNCHES (perf/step_budget.py)")
    channel_width = key == "asgl::lif_bwd" and args[3].dim() == 1  # width_param [C]
    running_stats = key == "asgl::bn_stats" and not args[8]  # batch_stats flag: no stats kernel
    groups = 0
    if key in ("asgl::bn_stats", "asgl::bn_lif_bwd") and not running_stats:
        from asgl.kernels.bn_lif import group_sum_launches

        backward = key == "asgl::bn_lif_bwd"
        groups = group_sum_launches(args[1] if backward else args[0], backward=backward)
    return FUSED_OP_LAUNCHES[key] + channel_width - running_stats + groups


def fused_extra_bytes(key: str, args) -> int:
    """Bytes one call of the fused custom op ``key`` moves beyond reading each tensor argument once and
    writing each output once: ``bn_lif_bwd`` writes g = dL/d(in) (into dx's buffer without a shortcut,
    as the shortcut's gradient with one), then its apply kernel reads g and x again
    (asgl.kernels.bn_lif._launch_bwd)."""
    if key == "asgl::bn_lif_bwd":
        x, residual = args[1], args[2]
        return (2 if residual is not None else 3) * x.numel() * x.element_size()
    return 0


# Convolutions and matrix products: compute-bound, their bytes counted apart from the elementwise ones
_MATMUL = {"aten.convolution", "aten.convolution_backward", "aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm",
           "aten.linear", "aten._convolution", "aten.mkldnn_convolution", "aten.cudnn_convolution",
           "aten.mkldnn_linear"}


def _bytes(args, out) -> int:
    """Each distinct tensor argument read once, each output written once (a view reads only its extent)."""
    seen, total = set(), 0
    for t in (*pytree.tree_leaves(args), *pytree.tree_leaves(out)):
        if isinstance(t, torch.Tensor) and t.numel() and (id(t) not in seen):
            seen.add(id(t))
            total += min(t.numel() * t.element_size(), t.untyped_storage().nbytes())
    return total


# Ops that launch no kernel: allocation, metadata, and host reads (counted as syncs instead).
_NO_LAUNCH = {
    "aten.empty", "aten.empty_like", "aten.empty_strided", "aten.new_empty", "aten.new_empty_strided",
    "aten.lift_fresh", "aten._local_scalar_dense", "aten.set_", "aten.resize_", "aten.is_same_size",
    "aten.sym_size", "aten.sym_stride", "aten.sym_numel", "aten.sym_storage_offset", "aten.dim",
    "profiler._record_function_enter_new", "profiler._record_function_exit",  # profiler labels
}
_SYNC_OPS = {
    "aten._local_scalar_dense", "aten.nonzero", "aten.nonzero_static", "aten.masked_select", "aten._unique",
    "aten._unique2", "aten.unique_dim", "aten.unique_consecutive", "aten.bincount", "aten.item",
}


_COUNTER_FRAMES = ("_site", "host_read", "read", "__torch_dispatch__")


def _site() -> str:
    """The first caller frame outside torch and the counter itself, as ``file:line``."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if "torch" in path.parts or "site-packages" in path.parts:
            continue
        if path.name == Path(__file__).name and frame.name in _COUNTER_FRAMES:
            continue
        return f"{path.name}:{frame.lineno}"
    return "?"


class StepCounter(TorchDispatchMode):
    """Counts dispatched aten ops, launches and host syncs per phase (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.phase: str | None = None
        self.ops = {p: Counter() for p in PHASES}  # phase -> op name -> dispatches
        self.launches = {p: Counter() for p in PHASES}  # phase -> op name -> launches
        self.syncs = {p: [] for p in PHASES}  # phase -> ["op @ file:line"]
        self.host_ops = {p: Counter() for p in PHASES}  # ops on host_tensors only
        self.bytes = {p: Counter() for p in PHASES}  # phase -> "elementwise" | "matmul" -> bytes
        self.fused_order = {p: [] for p in PHASES}  # phase -> the fused custom ops in the order they ran
        self.host_tensors: set[int] = set()  # ids of tensors that live on the CPU on a GPU run

    @contextlib.contextmanager
    def counting(self, phase: str):
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        outer, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = outer

    def host_read(self, what: str) -> None:
        if self.phase is not None:
            self.syncs[self.phase].append(f"{what} @ {_site()}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = f"{func.namespace}.{func._opname}"
        if func.namespace == "asgl":
            launches = fused_launches(f"asgl::{func._opname}", args)
            out = _stand_in(func._opname, args)
            if self.phase is not None:
                self.ops[self.phase][name] += 1
                self.launches[self.phase][name] += launches
                self.bytes[self.phase]["elementwise"] += _bytes(args, out) + fused_extra_bytes(f"asgl::{func._opname}",
                                                                                               args)
                self.fused_order[self.phase].append(func._opname)
            return out
        if self.phase is None:
            return func(*args, **kwargs)
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if tensors and all(id(t) in self.host_tensors for t in tensors):
            self.host_ops[self.phase][name] += 1  # a CPU op on a GPU run too: no launch, no sync
            return func(*args, **kwargs)
        self.ops[self.phase][name] += 1
        if name in _SYNC_OPS or (name == "aten.index" and _has_bool_index(args)) or (
                name == "aten.repeat_interleave" and kwargs.get("output_size") is None):
            self.syncs[self.phase].append(f"{name} @ {_site()}")
        out = func(*args, **kwargs)
        if not (func.is_view or name in _NO_LAUNCH):
            self.launches[self.phase][name] += 1
            self.bytes[self.phase]["matmul" if name in _MATMUL else "elementwise"] += _bytes((args, kwargs), out)
        return out

    def rows(self) -> list[dict]:
        return [{"phase": p, "ops": sum(self.ops[p].values()), "launches": sum(self.launches[p].values()),
                 "syncs": len(self.syncs[p]), "sync_sites": self.syncs[p],
                 "elementwise_bytes": self.bytes[p]["elementwise"], "matmul_bytes": self.bytes[p]["matmul"],
                 "fused_order": self.fused_order[p], "top": self.launches[p].most_common(5)} for p in PHASES]


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices or ())


def _stand_in(opname: str, args):
    """CPU values for a fused custom op (its launches are counted, not run): the reference for the
    forward, zeros for the backward's gradients. Called with the counter off."""
    from asgl.kernels.common import NOISE_NONE
    from asgl.kernels.lif_ref import lif_ref

    if opname == "lif_fwd":
        x, decay_logit, width, thresh, hard_reset, v_reset, sigmoid, noise, p, _seed, store_u, store_mask = args
        with torch.no_grad():
            y = lif_ref(x, decay_logit, width, thresh, reset="hard" if hard_reset else "soft", v_reset=v_reset,
                        surrogate="sigmoid" if sigmoid else "rectangle", p=p, training=noise != NOISE_NONE)
        u = x.clone() if store_u else x.new_empty(0)
        return y, u, torch.zeros(x.shape if store_mask else (0,), dtype=torch.bool)
    if opname == "augment_images":
        from asgl.train.data.augment import AugmentDraws, apply_augment_ref

        x, shift, flip, policy, u, sign, cut_y, cut_x, _table, cutout = args
        return apply_augment_ref(x, AugmentDraws(shift, flip, policy, u, sign, cut_y, cut_x, cutout))
    if opname == "lif_bwd":
        dy, u, decay_logit, width, thresh = args[:5]
        return (torch.zeros_like(u), torch.zeros_like(decay_logit), torch.zeros_like(width),
                torch.zeros_like(thresh))
    if opname == "bn_lif_fwd" and args[13]:  # fold: inference on the running statistics
        x, weight, bias, running_mean, running_var = args[0], *args[3:7]
        coef = _stand_in("bn_stats", (x, weight, bias, running_mean, running_var, args[10], args[11], 0.0, False))
        return _stand_in("bn_lif_fwd", (*args[:2], coef, *args[3:13], False, *args[14:]))
    if opname == "bn_stats":
        x, weight, bias, running_mean, running_var, scale, eps, _momentum, batch_stats = args
        if batch_stats:
            dims = [d for d in range(x.dim()) if d != 2]
            mean, var = x.float().mean(dims), x.float().var(dims, unbiased=False)
        else:
            mean, var = running_mean.float(), running_var.float()
        rstd = torch.rsqrt(var + eps)
        a = rstd * scale * (weight.float() if weight is not None else 1.0)
        b = -mean * a + (bias.float() if bias is not None else 0.0)
        return torch.stack([a, b, mean, rstd])
    if opname == "bn_lif_fwd":
        x, residual, coef = args[:3]
        decay_logit, width, thresh = args[7:10]
        hard_reset, v_reset, sigmoid, noise, p, _seed, store_u, store_mask = args[14:]
        shape = (1, 1, -1) + (1,) * (x.dim() - 3)
        z = x.float() * coef[0].view(shape) + coef[1].view(shape)
        if residual is not None:
            z = z + residual.float()
        with torch.no_grad():
            y = lif_ref(z, decay_logit, width, thresh, reset="hard" if hard_reset else "soft", v_reset=v_reset,
                        surrogate="sigmoid" if sigmoid else "rectangle", p=p, training=noise != NOISE_NONE)
        u = x.clone() if store_u else x.new_empty(0)
        return y.to(x.dtype), u, torch.zeros(x.shape if store_mask else (0,), dtype=torch.bool)
    if opname == "bn_lif_bwd":
        x, residual = args[1], args[2]
        weight, bias, decay_logit, width, thresh = args[5:10]
        empty = x.new_empty(0)
        return (torch.zeros_like(x), torch.zeros_like(x) if residual is not None else empty,
                torch.zeros_like(weight) if weight is not None else empty,
                torch.zeros_like(bias) if bias is not None else empty, torch.zeros_like(decay_logit),
                torch.zeros_like(width), torch.zeros_like(thresh))
    raise NotImplementedError(f"asgl::{opname}: the step counter has no CPU stand-in (image recipes use lif and "
                              "bn_lif only)")


@contextlib.contextmanager
def _count_host_reads(counter: StepCounter):
    """Report ``.tolist()``, ``.numpy()``, ``.cpu()`` calls to ``counter`` (they dispatch no op on a CPU)."""
    saved = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy", "cpu")}

    def wrap(name, fn):
        def read(self, *args, **kwargs):
            counter.host_read(f"Tensor.{name}")
            return fn(self, *args, **kwargs)
        return read

    for name, fn in saved.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


@contextlib.contextmanager
def _fused_backends():
    """The neurons and the augmentation take their fused paths (``backend=triton``) on CPU
    tensors; the counter stands in for the custom ops themselves."""
    import asgl.functional as F

    saved = F.resolve_backend
    F.resolve_backend = lambda backend, x, fused_module="asgl.kernels.lif": "triton"  # lif and bn_lif
    try:
        yield
    finally:
        F.resolve_backend = saved


def count_step(cfg, *, batch: int = 8, backend: str = "fused", seed: int = 0) -> StepCounter:
    """Run one warm-up and one counted training step of ``cfg`` (a ``RunConfig``) on the CPU."""
    import asgl
    from asgl.train.data import augment as augment_mod
    from asgl.train.data.images import IMAGE_SPECS, synthetic_train_loader
    from asgl.train.run import build_model, optimizer_step

    if backend not in ("fused", "torch"):
        raise ValueError(f"backend must be 'fused' or 'torch', got {backend!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    if cfg.train.mixed_precision == "fp16":
        raise ValueError("train.mixed_precision=fp16 runs on a GPU only; count with bf16 (the same ops but the "
                         "loss scaler's)")
    cfg.data.batch_size = batch
    if cfg.data.name not in IMAGE_SPECS:
        raise ValueError(f"data.name must be an image data set ({', '.join(IMAGE_SPECS)}), got {cfg.data.name!r}")
    spec = IMAGE_SPECS[cfg.data.name]
    counter = StepCounter()
    real_augment = augment_mod.augment_images

    def augment(*args, **kwargs):
        if counter.phase is None:  # the warm-up step
            return real_augment(*args, **kwargs)
        with counter.counting("augment"):
            return real_augment(*args, **kwargs)

    # the loader's transform binds augment_images when it is built
    augment_mod.augment_images = augment
    try:
        loader = synthetic_train_loader(cfg.data, 3 * batch, seed=seed)
    finally:
        augment_mod.augment_images = real_augment
    torch.manual_seed(seed)
    model = build_model(cfg, spec.num_classes, spec.channels)
    o = cfg.optim
    optimizer, neuron_optimizer = asgl.build_optimizers(model, name=o.name, lr=o.lr, momentum=o.momentum,
                                                        weight_decay=o.weight_decay, neuron_lr=o.neuron_lr)
    optimizers = [opt for opt in (optimizer, neuron_optimizer) if opt is not None]
    for opt in optimizers:  # what torch picks for CUDA parameters: the multi-tensor (foreach) kernels
        for group in opt.param_groups:
            if group.get("foreach") is None and not group.get("fused"):
                group["foreach"] = True
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    criterion = (asgl.mean_ce_loss if cfg.loss.name == "ce"
                 else lambda logits, y: asgl.tet_loss(logits, y, lam=cfg.loss.tet_lambda))
    low = {"bf16": torch.bfloat16}.get(cfg.train.mixed_precision)
    autocast = (lambda: torch.autocast("cpu", dtype=low)) if low is not None else contextlib.nullcontext
    sums = torch.zeros(2, dtype=torch.float64)
    model.train()
    loader.set_epoch(0)
    batches = iter(loader)

    def step(count: bool):
        nonlocal sums
        phase = counter.counting if count else (lambda name: contextlib.nullcontext())
        with phase("data"):
            x, y = next(batches)
        with phase("forward"), autocast():
            logits = model(x)
        with phase("forward"):
            logits = logits.float()  # Accelerate's convert_outputs_to_fp32
            loss = criterion(logits, y)
        with phase("backward"):
            loss.backward()
        with phase("optimizer"):
            optimizer_step(optimizers, None)
            scheduler.step()
            if cfg.model.learn_thresh:
                asgl.clamp_thresholds_(model)
        with phase("metrics"), torch.no_grad():
            sums += torch.stack([loss.detach().double() * y.shape[0],
                                 (logits.detach().mean(0).argmax(-1) == y).sum().double()])
        with phase("log"):
            host = torch.tensor([float(batch), 0.0], dtype=torch.float64)
            torch.cat([sums, host]).tolist()

    backends = _fused_backends() if backend == "fused" else contextlib.nullcontext()
    with backends, counter, _count_host_reads(counter):
        step(count=False)
        # Adam's step counts stay on the CPU on a GPU run (unless capturable or fused)
        counter.host_tensors = {id(state["step"]) for opt in optimizers for group in opt.param_groups
                                if not (group.get("capturable") or group.get("fused"))
                                for p in group["params"] for state in [opt.state.get(p, {})] if "step" in state}
        step(count=True)
    return counter


def _runs(names: list[str]) -> str:
    """``a a b a`` -> ``a×2 b a``."""
    out: list[list] = []
    for n in names:
        if out and out[-1][0] == n:
            out[-1][1] += 1
        else:
            out.append([n, 1])
    return " ".join(n if k == 1 else f"{n}×{k}" for n, k in out)


def main(argv: list[str] | None = None) -> int:
    from asgl.train.config import ConfigError, build_config, parse_overrides

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="a trainer config (an image recipe)")
    ap.add_argument("--batch", type=int, default=8, help="batch size of the counted step (counts do not depend on it)")
    ap.add_argument("--backend", choices=("fused", "torch"), default="fused",
                    help="fused: neurons and augmentation as a GPU run takes them (their custom ops' launch "
                         "counts); torch: the eager references' ops")
    ap.add_argument("--json", action="store_true", help="print one JSON row per phase instead of the table")
    args, rest = ap.parse_known_args(argv)
    try:
        cfg = build_config(args.config, parse_overrides(rest))
        counter = count_step(cfg, batch=args.batch, backend=args.backend)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = counter.rows()
    if args.json:
        for row in rows:
            print(json.dumps({"config": args.config, "backend": args.backend, **row}))
        return 0
    step = [r for r in rows if r["phase"] in STEP_PHASES]
    print(f"{args.config}: one training step, backend {args.backend}, {cfg.train.mixed_precision} "
          f"(launches = ops a GPU runs a kernel for)")
    print(f"{'phase':<10} {'ops':>6} {'launches':>9} {'syncs':>6} {'elem. MB':>9} {'matmul MB':>9}  top launches")
    for r in rows:
        top = ", ".join(f"{n.split('.', 1)[1]} {c}" for n, c in r["top"])
        label = "  augment" if r["phase"] == "augment" else r["phase"]
        print(f"{label:<10} {r['ops']:>6} {r['launches']:>9} {r['syncs']:>6} {r['elementwise_bytes'] / 1e6:>9.2f} "
              f"{r['matmul_bytes'] / 1e6:>9.2f}  {top}")
    elem, mat = sum(r["elementwise_bytes"] for r in step), sum(r["matmul_bytes"] for r in step)
    print(f"{'step':<10} {sum(r['ops'] for r in step):>6} {sum(r['launches'] for r in step):>9} "
          f"{sum(r['syncs'] for r in step):>6} {elem / 1e6:>9.2f} {mat / 1e6:>9.2f}  (all but the log point, "
          f"which comes every {cfg.train.log_every} steps; batch {args.batch})")
    for r in rows:
        if r["fused_order"]:
            print(f"fused ops in {r['phase']}: {_runs(r['fused_order'])}")
    for r in rows:
        for site in r["sync_sites"]:
            print(f"sync in {r['phase']}: {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
