"""Export an evaluation-mode ASGL network to NIR, the Neuromorphic Intermediate Representation.

``to_nir(model, sample_input)`` returns a ``nir.NIRGraph`` (``nir.write(path, graph)`` saves it)
that snnTorch, Norse, SpikingJelly, Sinabs, Rockpool, Lava-dl and the neuromorphic hardware stacks
read. The ``nir`` package is imported on first use: ``pip install asgl[deploy]``.

How the graph is found. The network runs once on ``sample_input``; every module of a supported
type becomes a node, and the tensor operations between modules (time folding, residual sums) are
recorded with a ``TorchFunctionMode``. So the exporter depends on module types, not on how a
network arranges them. The units the networks are built from (``ConvBNLIF``, ``BNLIF``,
``BatchNormLIF``: conv, BN, the residual sum and the LIF in one module) are traced through like any
container: their conv, batch norm and neuron become nodes, and a residual added inside the unit
becomes a sum. The trace runs every neuron on the torch reference and a fused unit
(``BatchNormLIF``) as its unfused composition, so it is traced through its ``bn`` and ``lif`` children.
The mapping:

================================  ============================================================
module or operation               NIR
================================  ============================================================
``nn.Conv2d``                     ``Conv2d`` (zero padding; a bias of zeros when it has none)
``nn.Linear``                     ``Affine`` (with bias) or ``Linear``
batch norm (any ``_BatchNorm``,   folded into the convolution or linear layer before it, from the
``asgl.TimeBatchNorm*``)          running statistics: ``W' = W·γs/σ``, ``b' = (b − μ)·γs/σ + β``,
                                  ``σ = sqrt(var + ε)``, ``s`` the threshold scale (1 by default)
``nn.AvgPool2d``,                 ``AvgPool2d`` (an adaptive pool when its output divides the input)
``nn.AdaptiveAvgPool2d``
``nn.Flatten``                    ``Flatten`` over the per-step dims
``asgl.LIF``                      ``LIF``
``asgl.RecurrentLIF``             ``Linear`` (input weights) → ``LIF`` ⇄ ``Linear`` (recurrent
                                  weights): a cycle, read with a one-step delay
``a + b`` of two activations      two edges into the next node (NIR sums a node's inputs)
time folding, ``expand``, …       nothing: NIR graphs are per sample and per time step
``nn.Identity``, ``nn.Dropout``   nothing (identities in evaluation)
================================  ============================================================

Anything else on the path from input to output (another layer type, a ReLU, a max pool, adding
a constant) is refused with :class:`NIRExportError` naming it, as are a model in training mode,
non-finite parameters, soft reset, and batch norm that cannot be folded; nothing is approximated.

The neuron. The project's LIF (ASGL.md §1) is discrete: per time step

    u[t] = λ·v[t−1] + x[t],   s[t] = 1[u[t] ≥ θ],   v[t] = v_reset if s[t] else u[t],   y[t] = θ·s[t]

NIR's LIF is continuous, ``τ·dv/dt = (v_leak − v) + R·I``, spiking when ``v`` crosses
``v_threshold`` and then set to ``v_reset``. Its forward-Euler step of length ``dt`` is
``v[t] = (1 − dt/τ)·v[t−1] + (dt/τ)·R·I[t]``, which is the update above with

    τ = dt / (1 − λ),   R = τ / dt = 1 / (1 − λ),   v_leak = 0,   v_threshold = θ,   v_reset = v_reset

(R chosen so the input enters unscaled, as here). ``dt`` defaults to 1e-4 s, the step that
snnTorch's NIR importer assumes. NIR spikes on ``v > v_threshold``, this project on ``u ≥ θ``:
they differ only when the membrane lands exactly on the threshold. The NIR neuron emits the
spike ``s``; the factor θ of ``y = θ·s`` is folded into the weights of the next convolution or
linear layer (through any pooling or flattening in between; recurrent weights act on ``s``
already). Where θ cannot be folded (an identity shortcut of a residual block summed with a
branch that does not carry it, or a neuron feeding the output) a NIR ``Scale`` node carries it;
with θ = 1, the default, there is none. Soft reset (``v[t] = u[t] − θ·s[t]``) has no NIR
counterpart and is refused.

What each network of the registry becomes: ``digits_cnn``, ``digits_cnn8``, ``vgg11/13/16`` and
``vggsnn`` export as Conv2d/LIF/AvgPool2d/Flatten/Affine chains; ``resnet18/19/34`` as the same
with residual sums as edges (plus ``Scale`` nodes on the identity shortcuts when θ ≠ 1);
``shd_rnn`` as Linear → LIF with a recurrent Linear, and a Linear readout. Any of them with
``reset="soft"`` is refused.

Checked (``tests/test_nir.py``, float64, spike for spike and logits): snnTorch 1.0's
``import_from_nir`` runs the digits network and ResNet-18 (θ = 1). Its importer rewrites a
recurrent cycle into a subgraph that feeds the input through the recurrent weights, so the SHD
network runs on snnTorch's neurons wired by NIR's own interpreter (``nirtorch.nir_to_torch``).
snnTorch resets to 0 whatever ``v_reset`` says and maps no ``Scale``: v_reset ≠ 0 and θ ≠ 1 on
ResNet shortcuts are checked against a reference simulator of NIR's equations (all cases run on
it too). Norse 1.1's importer was read, not run: it ignores ``R`` (assumes R = 1) and maps no
``AvgPool2d``.

Inputs and outputs of the graph are per time step and per sample: an image network's input is one
image ``[C, H, W]`` given at every step (the network repeats it over T), an event network's is
frame t, the SHD network's is the 700 input channels at step t; the output is the readout's
logits at step t (the network's prediction is their mean over the T steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .bn_lif import BatchNormLIF
from .export import check_exportable
from .layers import TimeBatchNorm2d
from .neuron import LIF, RecurrentLIF

__all__ = ["DEFAULT_DT", "NIRExportError", "to_nir"]

DEFAULT_DT = 1e-4  # seconds; the step snnTorch's importer assumes when it turns τ back into a decay

_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)
_IDENTITIES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
# Operations that move data between the time, batch and feature axes without changing any value;
# after the trace each one's per-step shape is checked to be unchanged (only time/batch moved).
_LAYOUT_OPS = {
    torch.Tensor.reshape, torch.reshape, torch.Tensor.view, torch.Tensor.permute, torch.permute,
    torch.Tensor.transpose, torch.transpose, torch.Tensor.expand, torch.Tensor.unsqueeze, torch.unsqueeze,
    torch.Tensor.squeeze, torch.squeeze, torch.Tensor.contiguous, torch.Tensor.clone, torch.Tensor.detach,
    torch.Tensor.to, torch.Tensor.float, torch.Tensor.flatten, torch.flatten, torch.Tensor.unflatten,
    torch.Tensor.view_as, torch.Tensor.reshape_as, torch.Tensor.movedim, torch.movedim, torch.Tensor.repeat,
}
_ADD_OPS = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__iadd__,
            torch.Tensor.add_}


class NIRExportError(ValueError):
    """The network (or something in it) cannot be written to NIR exactly; the message says what."""


def _nir():
    try:
        import nir  # noqa: PLC0415
    except ImportError:
        raise ImportError("exporting to NIR needs the `nir` package: pip install 'asgl[deploy]' "
                          "(or pip install nir)") from None
    return nir


# --------------------------------------------------------------------------------------------- trace


@dataclass
class _Node:
    kind: str  # input | conv | linear | bn | pool | flatten | lif | rnn | add
    name: str
    inputs: list[int]
    module: nn.Module | None = None
    in_shape: tuple[int, ...] = ()  # the whole tensor's shape, time and batch dims included
    out_shape: tuple[int, ...] = ()
    layout_checks: list[tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)


_KINDS = (
    (RecurrentLIF, "rnn"), (LIF, "lif"), (nn.Conv2d, "conv"), (nn.Linear, "linear"), (_BATCH_NORMS, "bn"),
    ((nn.AvgPool2d, nn.AdaptiveAvgPool2d), "pool"), (nn.Flatten, "flatten"), (_IDENTITIES, "identity"),
)
# The forwards whose computation the mapping above describes (TimeBatchNorm*'s included).
_KNOWN_FORWARDS = {c.forward for c in (RecurrentLIF, LIF, nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm,
                                       TimeBatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, *_IDENTITIES)}


def _kind(module: nn.Module) -> str | None:
    """The node kind of a module, ``"identity"`` for pass-through ones, None for containers.

    A subclass or an instance that replaces the forward of a supported type (another neuron model
    derived from LIF, say) is ``"unsupported"``: its operations are not traced, so nothing would
    show that it computes something else."""
    for types, kind in _KINDS:
        if isinstance(module, types):
            known = type(module).forward in _KNOWN_FORWARDS and "forward" not in vars(module)
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


class _Tracer(TorchFunctionMode):
    """Records which module consumed which module's output, and the sums in between."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.nodes: list[_Node] = []
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
            raise NIRExportError(f"{where} takes {len(traced)} activations of the network; the exporter handles "
                                 "modules with exactly one")
        return self.producer[id(traced[0])]

    def pre_hook(self, module: nn.Module, args) -> None:
        self.depth += 1
        if self.depth > 1:  # a module inside one that is already a node
            return
        kind, name = _kind(module), self.names[module] or type(module).__name__
        if kind == "unsupported":
            raise NIRExportError(
                f"layer {name!r} ({type(module).__name__}) has no exact NIR counterpart; supported: Conv2d, Linear, "
                "batch norm after a conv/linear layer, AvgPool2d, AdaptiveAvgPool2d, Flatten, asgl.LIF, "
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
            raise NIRExportError(f"layer {name!r} returned {len(out)} tensors; the exporter handles one")
        if kind == "identity":
            self.mark(out[0], src)
            return
        self.nodes.append(_Node(kind, name, [src], module, shape, tuple(out[0].shape)))
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
        if func in _ADD_OPS:
            operands = [a for a in _tensors(args)]
            alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
            if len(traced) != 2 or len(operands) != 2 or alpha != 1:
                raise NIRExportError(
                    f"{_op_name(func)}: only the sum of two activations maps to NIR (as two edges into one node); "
                    "adding a constant or a scaled term does not")
            self.nodes.append(_Node("add", f"add{len(self.nodes)}", [self.producer[id(t)] for t in traced],
                                    in_shape=tuple(traced[0].shape), out_shape=tuple(outs[0].shape)))
            self.mark(outs[0], len(self.nodes) - 1)
        elif func in _LAYOUT_OPS and len(traced) == 1 and len(outs) == 1:
            src = self.producer[id(traced[0])]
            self.nodes[src].layout_checks.append((tuple(traced[0].shape), tuple(outs[0].shape)))
            self.mark(outs[0], src)
        else:
            raise NIRExportError(
                f"operation {_op_name(func)} on the network's activations has no exact NIR counterpart "
                "(supported between layers: sums of two activations and changes of the time/batch layout)")
        return out


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[list[_Node], int, torch.Tensor]:
    tracer = _Tracer(model)
    tracer.nodes.append(_Node("input", "input", [], in_shape=tuple(x.shape), out_shape=tuple(x.shape)))
    handles = []
    for module in model.modules():
        if _kind(module) is not None:
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
        raise NIRExportError("the model's output is not computed from its input by supported layers")
    return tracer.nodes, tracer.producer[id(out)], out


# ------------------------------------------------------------------------------------ check, convert


def _check_model(model: nn.Module) -> None:
    try:
        check_exportable(model)
    except ValueError as e:
        raise NIRExportError(str(e)) from None
    for name, m in model.named_modules():
        if isinstance(m, LIF):
            if m.reset != "hard":
                raise NIRExportError(f"neuron {name!r} uses reset={m.reset!r}: NIR's LIF sets the membrane to "
                                     "v_reset after a spike, and subtracting θ has no NIR counterpart")
            if not math.isfinite(float(m.thresh)) or float(m.thresh) <= 0:
                raise NIRExportError(f"neuron {name!r} has threshold {float(m.thresh)!r}; NIR needs one > 0")


def _step_shape(shape: tuple[int, ...], T: int, B: int, what: str) -> tuple[int, ...]:
    """Drop the leading ``[T, B]`` or ``[T·B]`` dims: the per-sample, per-step shape NIR uses."""
    if len(shape) >= 2 and shape[:2] == (T, B):
        return shape[2:]
    if len(shape) >= 1 and shape[0] == T * B:
        return shape[1:]
    raise NIRExportError(f"{what} sees a tensor of shape {shape}, neither [T, B, ...] nor [T·B, ...] "
                         f"with T={T}, B={B}")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _pair(v) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v), dtype=np.int64)


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module, name: str):
    """``BN(W·x + b) = W'·x + b'`` in eval mode: the exact affine map batch norm applies."""
    if bn.running_mean is None or bn.running_var is None:
        raise NIRExportError(f"batch norm {name!r} keeps no running statistics (track_running_stats=False), so "
                             "it normalises each batch by itself in evaluation: no fixed map to fold")
    dtype = weight.dtype
    std = torch.sqrt(bn.running_var.to(dtype) + bn.eps)
    gamma = bn.weight.to(dtype) if bn.affine else torch.ones_like(std)
    beta = bn.bias.to(dtype) if bn.affine else torch.zeros_like(std)
    scale = gamma / std * float(getattr(bn, "threshold_scale", None) or 1.0)
    if weight.shape[0] != scale.shape[0]:
        raise NIRExportError(f"batch norm {name!r} has {scale.shape[0]} channels, "
                             f"the layer before it {weight.shape[0]}")
    b = bias.to(dtype) if bias is not None else torch.zeros_like(std)
    w = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return w, (b - bn.running_mean.to(dtype)) * scale + beta


def to_nir(model: nn.Module, sample_input: torch.Tensor, *, dt: float = DEFAULT_DT):
    """The evaluation-mode ``model`` as a ``nir.NIRGraph`` (see the module docstring for the mapping).

    Args:
        model: an ASGL network in ``eval()`` mode whose ``forward`` takes a batch-first input and
            returns per-step outputs ``[T, B, ...]`` (every network of :func:`asgl.create_model`).
        sample_input: one batch the model accepts (``[B, C, H, W]`` images, ``[B, T, ...]`` events
            or sequences); it only fixes the shapes.
        dt: the time step in seconds that turns each decay λ into NIR's τ = dt/(1 − λ).

    Node names are the module names (``stem.conv``, ``blocks.3.conv2.bn_lif.lif``); a recurrent layer
    ``rnn`` gives ``rnn.in`` (input weights), ``rnn.lif`` and ``rnn.rec`` (recurrent weights).
    Parameters keep the model's dtype. Raises :class:`NIRExportError` for anything NIR cannot
    express exactly.
    """
    nir = _nir()
    _check_model(model)
    if not (isinstance(dt, (int, float)) and not isinstance(dt, bool) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt (the time step in seconds) must be a finite number > 0, got {dt!r}")
    if not isinstance(sample_input, torch.Tensor) or sample_input.dim() < 1 or sample_input.shape[0] < 1:
        raise ValueError("sample_input must be a batch-first tensor the model accepts, got "
                         f"{type(sample_input).__name__} {tuple(getattr(sample_input, 'shape', ()))}")
    # Two samples at least, so that the batch dim B can never be confused with the time dim T.
    x = sample_input[:1].expand(2, *sample_input.shape[1:]).contiguous() if sample_input.shape[0] == 1 else sample_input
    first = next(model.parameters(), None)
    if first is not None:
        x = x.to(first.device)
    nodes, out_index, out = _trace(model, x)
    B = x.shape[0]
    if out.dim() < 3 or out.shape[1] != B:
        raise NIRExportError(f"the model returned shape {tuple(out.shape)}; the exporter needs per-step outputs "
                             f"[T, B={B}, ...]")
    T = out.shape[0]
    return _build(nir, nodes, out_index, T, B, float(dt))


def _build(nir, nodes: list[_Node], out_index: int, T: int, B: int, dt: float):
    consumers: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for i, node in enumerate(nodes):
        for j in node.inputs:
            consumers[j].append(i)
    consumers[out_index].append(-1)
    for i, node in enumerate(nodes):
        if node.kind == "input":
            continue
        for before, after in node.layout_checks:
            if _step_shape(before, T, B, node.name) != _step_shape(after, T, B, node.name):
                raise NIRExportError(f"the output of {node.name!r} is reshaped from {before} to {after}, which changes "
                                     "more than the time/batch layout; use an nn.Flatten layer")

    graph_nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    # Each traced value is NIR's sum of the outputs of `srcs`, times `scale` (θ not yet folded).
    value: dict[int, tuple[list[str], float]] = {}
    input_shape: tuple[int, ...] | None = None

    def add_node(name: str, node, srcs: list[str]) -> None:
        if name in graph_nodes:
            raise NIRExportError(f"two NIR nodes would be named {name!r}")
        graph_nodes[name] = node
        edges.extend((s, name) for s in srcs)

    def unscaled(srcs: list[str], scale: float, name: str, shape: tuple[int, ...]) -> list[str]:
        """``srcs`` with ``scale`` applied by a Scale node when it is not 1."""
        if scale == 1.0:
            return srcs
        add_node(name, nir.Scale(scale=np.full(shape, scale, dtype=np.float64)), srcs)
        return [name]

    for i, node in enumerate(nodes):
        if node.kind == "input":
            value[i] = (["input"], 1.0)
            continue
        if node.kind == "bn":
            (j,) = node.inputs
            if nodes[j].kind not in ("conv", "linear") or consumers[j] != [i]:
                raise NIRExportError(f"batch norm {node.name!r} does not directly follow a convolution or linear layer "
                                     "whose only consumer it is, so it cannot be folded; NIR has no batch norm node")
            value[i] = value[j]
            continue
        in_step = _step_shape(node.in_shape, T, B, node.name)
        if node.inputs == [0] and input_shape is None:
            input_shape = in_step
        srcs, scale = value[node.inputs[0]]
        name = node.name
        if node.kind in ("conv", "linear"):
            m = node.module
            weight, bias = m.weight.detach() * scale, (m.bias.detach() if m.bias is not None else None)
            (after,) = consumers[i] if len(consumers[i]) == 1 else (None,)
            if after is not None and after >= 0 and nodes[after].kind == "bn":
                weight, bias = _fold_bn(weight, bias, nodes[after].module, nodes[after].name)
            if node.kind == "conv":
                if m.padding_mode != "zeros":
                    raise NIRExportError(f"convolution {name!r} pads with {m.padding_mode!r}; NIR pads with zeros")
                padding = m.padding if isinstance(m.padding, str) else _pair(m.padding)
                bias = bias if bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
                nir_node = nir.Conv2d(input_shape=tuple(int(v) for v in in_step[1:]), weight=_np(weight),
                                      stride=_pair(m.stride), padding=padding, dilation=_pair(m.dilation),
                                      groups=m.groups, bias=_np(bias))
            else:
                nir_node = nir.Affine(_np(weight), _np(bias)) if bias is not None else nir.Linear(_np(weight))
            add_node(name, nir_node, srcs)
            value[i] = ([name], 1.0)
        elif node.kind == "pool":
            add_node(name, _pool(nir, node.module, in_step, name), srcs)
            value[i] = ([name], scale)
        elif node.kind == "flatten":
            m, lead = node.module, len(node.in_shape) - len(in_step)
            ndim = len(node.in_shape)
            start, end = m.start_dim % ndim, m.end_dim % ndim
            if start < lead:
                raise NIRExportError(f"flatten {name!r} merges the time or batch dim into the features")
            add_node(name, nir.Flatten(input_type={"input": np.array(in_step)}, start_dim=start - lead,
                                       end_dim=end - lead), srcs)
            value[i] = ([name], scale)
        elif node.kind == "lif":
            srcs = unscaled(srcs, scale, f"{name}.scale", in_step)
            add_node(name, _lif(nir, node.module, in_step, dt, name), srcs)
            value[i] = ([name], float(node.module.thresh))
        elif node.kind == "rnn":
            m = node.module
            hidden = (m.hidden,)
            add_node(f"{name}.in", nir.Linear(_np(m.input_weight.detach() * scale)), srcs)
            add_node(f"{name}.lif", _lif(nir, m, hidden, dt, name), [f"{name}.in"])
            # The recurrence acts on the spike o[t-1] (kernels/rlif_ref.py), NIR's LIF output.
            add_node(f"{name}.rec", nir.Linear(_np(m.recurrent_weight.detach())), [f"{name}.lif"])
            edges.append((f"{name}.rec", f"{name}.lif"))
            value[i] = ([f"{name}.lif"], float(m.thresh))
        elif node.kind == "add":
            a, b = (value[j] for j in node.inputs)
            if set(a[0]) & set(b[0]):
                raise NIRExportError(f"a sum adds an activation to itself ({sorted(set(a[0]) & set(b[0]))}); "
                                     "NIR edges cannot repeat")
            if a[1] == b[1]:
                value[i] = (a[0] + b[0], a[1])
            else:
                step = _step_shape(node.in_shape, T, B, "a residual sum")
                value[i] = (unscaled(a[0], a[1], f"{node.name}.a.scale", step)
                            + unscaled(b[0], b[1], f"{node.name}.b.scale", step), 1.0)
    if input_shape is None:
        raise NIRExportError("no supported layer reads the model's input")
    srcs, scale = value[out_index]
    out_step = _step_shape(nodes[out_index].out_shape, T, B, "the output")
    srcs = unscaled(srcs, scale, "output.scale", out_step)
    edges.extend((s, "output") for s in srcs)
    # Input first, output last: importers that walk the nodes in order (nirtorch) expect it.
    graph_nodes = {"input": nir.Input(input_type=np.array(input_shape)), **graph_nodes,
                   "output": nir.Output(output_type=np.array(out_step))}
    return nir.NIRGraph(nodes=graph_nodes, edges=edges, metadata={"source": "asgl", "dt": dt, "T": T},
                        type_check=False)


def _pool(nir, m: nn.Module, in_step: tuple[int, ...], name: str):
    if len(in_step) != 3:
        raise NIRExportError(f"pool {name!r} sees per-step shape {in_step}; NIR's AvgPool2d takes [C, H, W]")
    H, W = in_step[1:]
    if isinstance(m, nn.AdaptiveAvgPool2d):
        oh, ow = _pair(m.output_size)
        oh, ow = (H if oh is None else oh), (W if ow is None else ow)
        if H % oh or W % ow:
            raise NIRExportError(f"adaptive pool {name!r} maps {H}×{W} to {oh}×{ow}, not a whole kernel; NIR's "
                                 "AvgPool2d needs equal windows")
        kernel = np.array([H // oh, W // ow])
        return nir.AvgPool2d(kernel_size=kernel, stride=kernel, padding=np.array([0, 0]))
    if m.ceil_mode or m.divisor_override is not None or (not m.count_include_pad and np.any(_pair(m.padding))):
        raise NIRExportError(f"pool {name!r} uses ceil_mode, divisor_override or count_include_pad=False with "
                             "padding; NIR's AvgPool2d is the plain average")
    stride = m.stride if m.stride is not None else m.kernel_size
    return nir.AvgPool2d(kernel_size=_pair(m.kernel_size), stride=_pair(stride), padding=_pair(m.padding))


def _lif(nir, m: LIF, step: tuple[int, ...], dt: float, name: str):
    """NIR's LIF for ``m`` (see the module docstring): τ = dt/(1 − λ), R = 1/(1 − λ), float64."""
    lam = torch.sigmoid(m.decay_logit.detach().double()).cpu().numpy()
    if lam.ndim == 1 and len(step) > 1:  # one decay per channel: broadcast over the spatial dims
        lam = lam.reshape(-1, *([1] * (len(step) - 1)))
    lam = np.broadcast_to(lam, step).astype(np.float64)
    if np.any(lam >= 1.0):
        raise NIRExportError(f"neuron {name!r} has decay λ = 1 (no leak): no finite NIR time constant")
    tau = dt / (1.0 - lam)
    return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(step), v_threshold=np.full(step, float(m.thresh)),
                   v_reset=np.full(step, float(m.v_reset)))

