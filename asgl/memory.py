"""Activation memory of a training step: spike outputs recomputed in the backward, block checkpointing.

**Rematerialised spikes** (``remat_spikes``). Every spiking output ``y = θ·o`` of a fused unit
(:class:`asgl.BatchNormLIF` on the triton backend, or a fused :class:`asgl.LIF` /
:class:`asgl.RecurrentLIF`) is a pure function of what the unit's own backward keeps anyway: its
input x, shortcut, batch-norm coefficients, parameters and Philox seed (the plain neurons: their
membrane u). Yet the ops that consume y — the next convolution, linear layer, pooling, the next
unit's shortcut add, the readout — each keep it for their own backward. Inside :class:`RematScope`
(which every network of :mod:`asgl.models` enters around its training forward) a
``saved_tensors_hooks`` pair replaces each such saved tensor, or a view of it, by a handle; the
consumer's backward gets y back from :func:`_Output.get`, which runs the unit's forward op once more
on the tensors its autograd node saved (``output_from_saved`` in :mod:`asgl.kernels.bn_lif`,
:mod:`~asgl.kernels.lif`, :mod:`~asgl.kernels.rlif`): the same kernel on the same inputs, so the
same bits. A shortcut's batch-norm output, which only the next unit keeps, is handled the same way
(rebuilt by the same batch-norm call on the input that batch norm keeps). Recomputed once per unit
per step, shared by all its consumers, freed with the last of their saved handles.

Cost: no convolution FLOPs, but one more elementwise pass per unit in the backward: read x (and the
shortcut), write y, 4 B per element-step in bf16 (6 with a shortcut). Storing y is not cheaper to
*replace*: the forward writes y for the next layer and the consumer's backward reads it either way,
so the recompute's read of x and write of y are extra traffic (``perf/step_budget.py`` counts
them). What it buys: ResNet-18 T=4 keeps 4.7 MiB per sample instead of 9.3 (``perf/RESULTS.md``).

**Block checkpointing** (``checkpoint="blocks"``): :func:`checkpoint` runs a block under
non-reentrant ``torch.utils.checkpoint``; only its input is kept and its forward runs again in the
backward. The neurons' Philox seeds are drawn from the device generator inside the block, whose state
checkpoint restores for the recompute, so the recompute draws the same seeds; the block's batch-norm
running statistics and batch counts are put back after the recompute, so each batch updates them once.

Saved-tensor hooks hide in-place changes from autograd's version check; the scope checks them itself
(the same error as autograd's).
"""

from __future__ import annotations

import contextlib
import threading
import weakref

import torch

__all__ = ["REMAT_CHOICES", "RematScope", "active", "checkpoint", "register_batch_norm_output", "register_spikes",
           "remat_scope", "unfused"]

# ``remat_spikes``: "auto" = on wherever the fused units run; True = on, an error where a unit runs
# the torch reference; False = off.
REMAT_CHOICES = ("auto", True, False)


class _State(threading.local):
    """Per thread: the backward runs on the autograd engine's device thread, where a checkpointed
    block's recompute happens."""

    def __init__(self):
        self.scope: RematScope | None = None
        self.in_block = 0  # inside a checkpointed block's forward: its tensors are checkpoint's


_state = _State()


class _Output:
    """One registered output: how to rebuild it, its layout, and the rebuilt value once a backward
    asked for it (kept while any consumer still holds a handle: one rebuild per unit per step)."""

    __slots__ = ("rebuild", "layout", "value", "__weakref__")

    def __init__(self, rebuild, y: torch.Tensor):
        self.rebuild = rebuild
        self.layout = (y.shape, y.stride(), y.storage_offset(), y.dtype)
        self.value = None

    def get(self) -> torch.Tensor:
        if self.value is None:
            with torch.no_grad():
                value = self.rebuild()
            # the handles are views by storage geometry: the rebuilt tensor must lie as y did
            if (value.shape, value.stride(), value.storage_offset(), value.dtype) != self.layout:
                raise RuntimeError(f"asgl.memory: a rebuilt output {tuple(value.shape)} {value.stride()} "
                                   f"{value.dtype} is not laid out as the forward's {self.layout}")
            self.value, self.rebuild = value, None  # drops the unit's autograd node
        return self.value


class _Handle:
    """What a consumer keeps instead of a registered output (or a view of it): the view's geometry."""

    __slots__ = ("output", "size", "stride", "offset")

    def __init__(self, output: _Output, t: torch.Tensor):
        self.output, self.size, self.stride, self.offset = output, t.size(), t.stride(), t.storage_offset()


class _Kept:
    """A saved tensor kept as it is, with its version: the hooks turn off autograd's own check."""

    __slots__ = ("tensor", "version")

    def __init__(self, t: torch.Tensor):
        self.tensor, self.version = t, t._version


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr() if t.numel() else None
    except (RuntimeError, NotImplementedError, TypeError):  # tensor subclasses without a storage
        return None


def _unpack(packed) -> torch.Tensor:
    if type(packed) is _Handle:
        return packed.output.get().as_strided(packed.size, packed.stride, packed.offset)
    t = packed.tensor
    if t._version != packed.version:
        raise RuntimeError(
            f"one of the variables needed for gradient computation has been modified by an inplace operation: "
            f"[{t.type()} {list(t.shape)}] is at version {t._version}; expected version {packed.version} instead "
            "(saved while asgl.memory's spike rematerialisation was on)")
    return t


class RematScope:
    """Saved-tensor hooks that keep a handle instead of any registered output (see the module
    docstring). ``required``: a unit that runs the torch reference inside the scope is an error
    (``remat_spikes=True``) instead of simply keeping its tensors (``"auto"``)."""

    def __init__(self, required: bool = False):
        self.required = required
        # storage of a registered output -> (the output tensor, weakly; its version; its _Output)
        self._outputs: dict[int, tuple[weakref.ref, int, _Output]] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
        self._outer: RematScope | None = None

    def __enter__(self) -> RematScope:
        self._outer, _state.scope = _state.scope, self
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        _state.scope = self._outer
        self._outputs.clear()

    def add(self, y: torch.Tensor, rebuild) -> None:
        key = _storage_key(y)
        if key is not None:
            # weakly: the scope must not keep y alive (the whole point), and a dead entry's storage
            # address may be reused by another tensor
            self._outputs[key] = (weakref.ref(y), y._version, _Output(rebuild, y))

    def _pack(self, t: torch.Tensor):
        entry = self._outputs.get(_storage_key(t))
        if entry is not None:
            ref, version, output = entry
            y = ref()
            # a view of y (same storage, dtype and device), unchanged since y was made
            if y is not None and t.dtype == y.dtype and t.device == y.device and t._version == version:
                return _Handle(output, t)
        return _Kept(t)


def _active_scope() -> RematScope | None:
    if torch.compiler.is_compiling():  # no scope is entered when compiled; traced without a graph break
        return None
    scope = _state.scope
    return scope if scope is not None and not _state.in_block and torch.is_grad_enabled() else None


def active() -> bool:
    """Whether outputs registered now would be rematerialised (a scope is on, outside checkpointed
    blocks, gradients recorded)."""
    return _active_scope() is not None


def register_batch_norm_output(out: torch.Tensor, bn: torch.nn.Module, x: torch.Tensor) -> None:
    """Inside a :class:`RematScope`, for ``out = bn(x)`` in training mode (a projection shortcut's batch
    norm, whose output only the next unit keeps, for its membrane): consumers that save ``out`` keep a
    handle, and their backward gets it rebuilt by the same ``F.batch_norm`` call on the ``x`` that batch
    norm's own backward keeps, under the forward's autocast, with momentum 0 on copies of the running
    buffers (the same kernel as the forward, nothing updated): the same bits."""
    scope = _active_scope()
    if scope is None or not bn.training or not out.requires_grad:
        return
    device = x.device.type
    autocast = torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
    weight, bias, eps, stats = bn.weight, bn.bias, bn.eps, (bn.running_mean, bn.running_var)

    def rebuild() -> torch.Tensor:
        running = [None if s is None else s.clone() for s in stats]
        with torch.autocast(device, dtype=autocast[1], enabled=autocast[0]):
            return torch.nn.functional.batch_norm(x, *running, weight, bias, True, 0.0, eps)

    scope.add(out, rebuild)


def register_spikes(y_seq: torch.Tensor, kernel_module) -> None:
    """Inside a :class:`RematScope` (and not inside a checkpointed block, whose tensors checkpoint
    handles): consumers that save the output ``y_seq`` of a fused neuron op (or a view of it) keep a
    handle, and their backward gets it from ``kernel_module.output_from_saved`` on the op's autograd
    node (what its own backward keeps), once."""
    scope = _active_scope()
    if scope is not None and y_seq.grad_fn is not None:
        node, rebuild = y_seq.grad_fn, kernel_module.output_from_saved
        scope.add(y_seq, lambda: rebuild(node))


def unfused(unit: str, backend: str) -> None:
    """A unit took the torch reference: an error inside a scope that requires rematerialisation."""
    scope = _active_scope()
    if scope is not None and scope.required:
        raise ValueError(f"remat_spikes=True, but a {unit} runs the torch reference here (backend {backend!r}), "
                         "which has no fused output to recompute: use remat_spikes='auto' or False, or the triton "
                         "backend")


def remat_scope(choice) -> contextlib.AbstractContextManager:
    """The scope a network's forward runs in for ``remat_spikes=choice`` (see :data:`REMAT_CHOICES`).

    Nothing to do without gradients. Under ``torch.compile`` "auto" is off: the traced backward has
    neither saved-tensor hooks nor the units' autograd nodes (its partitioner picks what to save), and
    the trainer refuses ``True`` with ``train.compile`` (see ``train/config.py``).
    """
    if choice not in REMAT_CHOICES:
        raise ValueError(f"remat_spikes must be one of 'auto', True, False, got {choice!r}")
    if choice is False or not torch.is_grad_enabled():
        return contextlib.nullcontext()
    if torch.compiler.is_compiling():
        if choice is True:
            raise ValueError("remat_spikes=True cannot be compiled: torch.compile's traced backward keeps what its "
                             "partitioner picks, without saved-tensor hooks; use remat_spikes='auto' or False")
        return contextlib.nullcontext()
    return RematScope(required=choice is True)


# ------------------------------------------------------------------------------------- checkpoint


@contextlib.contextmanager
def _in_block():
    _state.in_block += 1
    try:
        yield
    finally:
        _state.in_block -= 1


@contextlib.contextmanager
def _statistics_kept(modules):
    """Batch-norm running statistics and batch counts of ``modules`` as they are on entry, again on
    exit: a block's recompute runs its batch norms (the fused units' in ``asgl::bn_stats``, the torch
    ones in ``F.batch_norm``) in training mode, which would update them a second time."""
    buffers = [b for root in modules for m in root.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    # copies in one multi-tensor launch per dtype (·1 keeps every value, -0 and NaN included)
    kept = torch._foreach_mul(buffers, 1) if buffers else []
    try:
        yield
    finally:
        if buffers:
            with torch.no_grad():
                torch._foreach_copy_(buffers, kept)


def checkpoint(fn, *args, modules=()):
    """``fn(*args)`` under non-reentrant ``torch.utils.checkpoint``: only ``args`` are kept and ``fn``
    runs again in the backward, with the CPU and device RNG states of the forward (the neurons' seeds
    are drawn again, the same) and the running statistics of the batch norms in ``modules`` (the
    block's) restored after it, so they count each batch once. Under ``torch.compile`` the recompute is
    the partitioner's, which never repeats the running-statistic updates: plain checkpoint, traced."""
    if torch.compiler.is_compiling():
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
    return torch.utils.checkpoint.checkpoint(
        fn, *args, use_reentrant=False, context_fn=lambda: (_in_block(), _statistics_kept(modules)),
    )
