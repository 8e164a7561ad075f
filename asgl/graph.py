"""The dataflow graph of a network, found by running it once: which layer feeds which.

``trace(model, x)`` runs ``model(x)`` with forward hooks on every module of a known type and a
``TorchFunctionMode`` that sees the tensor operations between modules, and returns the nodes in
execution order. A node is a layer (``conv``, ``linear``, ``bn``, ``pool``, ``flatten``, ``lif``,
``rnn``: an ``asgl.RecurrentLIF``), a sum of two activations (``add``) or the ``input``; identities
and changes of the time/batch layout (time folding, ``expand`` of an image over T) are no nodes.
The units the networks are built from (``ConvBNLIF``, ``BatchNormLIF``) are traced through like
any container (a fused unit as its unfused composition: its bn and lif children). Anything else
on the path from input to output (another layer type, a ReLU, a max pool, adding a constant)
raises :class:`GraphError` naming it.

Users: :func:`asgl.to_nir` (NIR export) and :mod:`asgl.energy` (operation counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .bn_lif import BatchNormLIF
from .layers import TimeBatchNorm2d
from .neuron import LIF, RecurrentLIF

__all__ = ["GraphError", "Node", "consumers", "kind_of", "step_shape", "trace", "trace_steps"]


class GraphError(ValueError):
    """The network holds something the graph tracer does not map exactly; the message says what."""


BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)
IDENTITIES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
# Operations that move data between the time, batch and feature axes without changing any value;
# after the trace each one's per-step shape is checked to be unchanged (only time/batch moved).
LAYOUT_OPS = {
    torch.Tensor.reshape, torch.reshape, torch.Tensor.view, torch.Tensor.permute, torch.permute,
    torch.Tensor.transpose, torch.transpose, torch.Tensor.expand, torch.Tensor.unsqueeze, torch.unsqueeze,
    torch.Tensor.squeeze, torch.squeeze, torch.Tensor.contiguous, torch.Tensor.clone, torch.Tensor.detach,
    torch.Tensor.to, torch.Tensor.float, torch.Tensor.flatten, torch.flatten, torch.Tensor.unflatten,
    torch.Tensor.view_as, torch.Tensor.reshape_as, torch.Tensor.movedim, torch.movedim, torch.Tensor.repeat,
}
ADD_OPS = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__iadd__,
            torch.Tensor.add_}


@dataclass
class Node:
    kind: str  # input | conv | linear | bn | pool | flatten | lif | rnn | add
    name: str
    inputs: list[int]
    module: nn.Module | None = None
    in_shape: tuple[int, ...] = ()  # the whole tensor's shape, time and batch dims included
    out_shape: tuple[int, ...] = ()
    layout_checks: list[tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)


KINDS = (
    (RecurrentLIF, "rnn"), (LIF, "lif"), (nn.Conv2d, "conv"), (nn.Linear, "linear"), (BATCH_NORMS, "bn"),
    ((nn.AvgPool2d, nn.AdaptiveAvgPool2d), "pool"), (nn.Flatten, "flatten"), (IDENTITIES, "identity"),
)
# The forwards whose computation the mapping above describes (TimeBatchNorm*'s included).
KNOWN_FORWARDS = {c.forward for c in (RecurrentLIF, LIF, nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm,
                                       TimeBatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, *IDENTITIES)}


def kind_of(module: nn.Module) -> str | None:
    """The node kind of a module, ``"identity"`` for pass-through ones, None for containers.

    A subclass or an instance that replaces the forward of a supported type (another neuron model
    derived from LIF, say) is ``"unsupported"``: its operations are not traced, so nothing would
    show that it computes something else."""
    for types, kind in KINDS:
        if isinstance(module, types):
            known = type(module).forward in KNOWN_FORWARDS and "forward" not in vars(module)
            return kind if known else "unsupported"
    if next(module.children(), None) is None:
        return "unsupported"
    return None


def _tensors(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _op_name(func) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


class Tracer(TorchFunctionMode):
    """Records which module consumed which module's output, and the sums in between."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.nodes: list[Node] = []
        self.producer: dict[int, int] = {}  # id(tensor) -> node index
        self.keep: list[torch.Tensor] = []  # keeps traced tensors alive so their ids stay unique
        self.depth = 0  # > 0 inside a module that becomes one node: its own operations are not traced
        self.names = {m: n for n, m in model.named_modules()}

    def mark(self, tensor: torch.Tensor, index: int) -> None:
        self.producer[id(tensor)] = index
        self.keep.append(tensor)

    def source(self, args, where: str) -> int:
        traced = [t for t in _tensors(args) if id(t) in self.producer]
        if len(traced) != 1:
            raise GraphError(f"{where} takes {len(traced)} activations of the network; the graph tracer handles "
                             "modules with exactly one")
        return self.producer[id(traced[0])]

    def pre_hook(self, module: nn.Module, args) -> None:
        self.depth += 1
        if self.depth > 1:  # a module inside one that is already a node
            return
        kind, name = kind_of(module), self.names[module] or type(module).__name__
        if kind == "unsupported":
            raise GraphError(
                f"layer {name!r} ({type(module).__name__}) is not a layer the graph tracer knows; supported: Conv2d, "
                "Linear, batch norm after a conv/linear layer, AvgPool2d, AdaptiveAvgPool2d, Flatten, asgl.LIF, "
                "asgl.RecurrentLIF, Identity, Dropout")
        src = self.source(args, f"layer {name!r} ({type(module).__name__})")
        self.pending = (kind, name, src, tuple(next(_tensors(args)).shape))

    def post_hook(self, module: nn.Module, args, output) -> None:
        self.depth -= 1
        if self.depth:
            return
        kind, name, src, shape = self.pending
        out = list(_tensors(output))
        if len(out) != 1:
            raise GraphError(f"layer {name!r} returned {len(out)} tensors; the graph tracer handles one")
        if kind == "identity":
            self.mark(out[0], src)
            return
        self.nodes.append(Node(kind, name, [src], module, shape, tuple(out[0].shape)))
        self.mark(out[0], len(self.nodes) - 1)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth:
            return out
        traced = [t for t in _tensors((args, kwargs)) if id(t) in self.producer]
        outs = list(_tensors(out))
        if not traced or not outs:  # constants, parameters, or a query such as .shape / .dim()
            return out
        if func in ADD_OPS:
            operands = [a for a in _tensors(args)]
            alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
            if len(traced) != 2 or len(operands) != 2 or alpha != 1:
                raise GraphError(
                    f"{_op_name(func)}: of additions, only the sum of two activations is a graph node; adding a "
                    "constant or a scaled term is not supported")
            self.nodes.append(Node("add", f"add{len(self.nodes)}", [self.producer[id(t)] for t in traced],
                                    in_shape=tuple(traced[0].shape), out_shape=tuple(outs[0].shape)))
            self.mark(outs[0], len(self.nodes) - 1)
        elif func in LAYOUT_OPS and len(traced) == 1 and len(outs) == 1:
            src = self.producer[id(traced[0])]
            self.nodes[src].layout_checks.append((tuple(traced[0].shape), tuple(outs[0].shape)))
            self.mark(outs[0], src)
        else:
            raise GraphError(
                f"operation {_op_name(func)} on the network's activations is not supported (between layers the graph "
                "tracer follows sums of two activations and changes of the time/batch layout)")
        return out


def trace(model: nn.Module, x: torch.Tensor) -> tuple[list[Node], int, torch.Tensor]:
    """``(nodes, index of the node whose value is the output, the output)`` of ``model(x)`` run once
    (no grad, every neuron on the torch reference); node 0 is the input."""
    tracer = Tracer(model)
    tracer.nodes.append(Node("input", "input", [], in_shape=tuple(x.shape), out_shape=tuple(x.shape)))
    handles = []
    for module in model.modules():
        if kind_of(module) is not None:
            handles.append(module.register_forward_pre_hook(tracer.pre_hook))
            handles.append(module.register_forward_hook(tracer.post_hook))
    # The trace runs every neuron on the torch reference, and a fused unit (BatchNormLIF) as its
    # unfused composition, so that it goes through its bn and lif children, whose operations the
    # trace sees; the fused kernels and the unit's reference compute that composition.
    neurons = [m for m in model.modules() if isinstance(m, LIF)]
    backends = [m.backend for m in neurons]
    units = [m for m in model.modules() if isinstance(m, BatchNormLIF)]
    fused = [m.fused for m in units]
    try:
        for m in neurons:
            m.backend = "torch"
        for m in units:
            m.fused = False
        with torch.no_grad(), tracer:
            tracer.mark(x, 0)
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        for m, backend in zip(neurons, backends):
            m.backend = backend
        for m, was_fused in zip(units, fused):
            m.fused = was_fused
    if not isinstance(out, torch.Tensor) or id(out) not in tracer.producer:
        raise GraphError("the model's output is not computed from its input by supported layers")
    return tracer.nodes, tracer.producer[id(out)], out


def step_shape(shape: tuple[int, ...], T: int, B: int, what: str) -> tuple[int, ...]:
    """Drop the leading ``[T, B]`` or ``[T·B]`` dims: the shape of one sample at one step."""
    if len(shape) >= 2 and shape[:2] == (T, B):
        return shape[2:]
    if len(shape) >= 1 and shape[0] == T * B:
        return shape[1:]
    raise GraphError(f"{what} sees a tensor of shape {shape}, neither [T, B, ...] nor [T·B, ...] "
                     f"with T={T}, B={B}")


def trace_steps(model: nn.Module, sample_input: torch.Tensor) -> tuple[list[Node], int, int, int]:
    """:func:`trace` of a network with per-step outputs ``[T, B, ...]`` (every network of
    ``asgl.create_model``) on one batch it accepts, checked: ``(nodes, out_index, T, B)``. Each node's
    shapes, less their leading ``[T, B]`` or ``[T·B]`` (:func:`step_shape`), are those of one sample
    at one step; every layout change is checked to leave those unchanged."""
    if not isinstance(sample_input, torch.Tensor) or sample_input.dim() < 1 or sample_input.shape[0] < 1:
        raise ValueError("sample_input must be a batch-first tensor the model accepts, got "
                         f"{type(sample_input).__name__} {tuple(getattr(sample_input, 'shape', ()))}")
    # Two samples at least, so that the batch dim B can never be confused with the time dim T.
    x = sample_input[:1].expand(2, *sample_input.shape[1:]).contiguous() if sample_input.shape[0] == 1 else sample_input
    first = next(model.parameters(), None)
    if first is not None:
        x = x.to(first.device)
    nodes, out_index, out = trace(model, x)
    B = x.shape[0]
    if out.dim() < 3 or out.shape[1] != B:
        raise GraphError(f"the model returned shape {tuple(out.shape)}; per-step outputs [T, B={B}, ...] are needed")
    T = out.shape[0]
    for node in nodes[1:]:
        for before, after in node.layout_checks:
            if step_shape(before, T, B, node.name) != step_shape(after, T, B, node.name):
                raise GraphError(f"the output of {node.name!r} is reshaped from {before} to {after}, which changes "
                                 "more than the time/batch layout; use an nn.Flatten layer")
    return nodes, out_index, T, B


def consumers(nodes: list[Node], out_index: int) -> dict[int, list[int]]:
    """For every node, the nodes that take its output (``-1``: the model's output)."""
    taken: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for i, node in enumerate(nodes):
        for j in node.inputs:
            taken[j].append(i)
    taken[out_index].append(-1)
    return taken
