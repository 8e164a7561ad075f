"""Operation counts and the energy estimate of a spiking network's inference: the synaptic
operations (SOPs) its measured spikes drive, against the multiply-accumulates (MACs) of the same
network run as an ANN, as SNN papers report them beside accuracy.

    counter = OpCounter(model, sample_input, static_input=True)   # hooks on the spiking layers
    ... eval-mode forwards over a test set ...
    report = counter.report(samples=n)                             # per layer and in total, per sample

The counting rule (every figure per sample, summed over the T steps):

- A synaptic layer is a convolution, a linear layer, or the input or recurrent weights of an
  ``asgl.RecurrentLIF``. Its dense count is ``m`` MACs per step: output elements × (input channels /
  groups × kernel area) for a convolution (taps on the zero padding included, as ANN MAC counts
  have them), output elements × input features for a linear map. Biases, batch norm (folded into
  the weights for inference), pooling and residual sums are left out, as in ANN MAC counts.
- ANN MACs: ``m`` per layer, once for a static image (the image networks repeat their input over
  the T steps; the ANN sees it once), T times for event frames and sequences, which have T steps
  of their own (``static_input``).
- A layer that reads the network's input does MACs at every step the network runs it: ``T·m``.
  The input is counted as real-valued whatever it holds (images; also event frames and SHD's bins,
  which hold counts: an upper bound there). An image network recomputes its first convolution at
  each step; a deployment that computed it once would spend ``m``.
- A layer fed by spiking neurons does accumulates (SOPs): each spike adds one weight into one
  output per synapse it has, so its SOPs are, over its input neurons, spikes × fan-out, the
  fan-out of a neuron being the number of (weight, output) pairs its value enters. Spikes are
  counted per neuron (summed over steps and samples) and the fan-out is each neuron's own, the
  gradient of the layer run with all-ones weights on one step of one sample:

  - a convolution with zero padding and stride: a neuron at a border reaches fewer outputs than
    one inside (a 3×3 kernel, padding 1: 4 taps at a corner, 6 on an edge, 9 inside, each times
    the output channels); with stride 2 rows and columns alternate between 1 and 2 taps;
  - pooling or flattening between the neurons and the layer (the VGGs' 2×2 average pools, the
    global pool before a classifier) is folded into the layer: an average pool then a linear map
    is one linear map, the 1/k² goes into its weights, so a spike still drives accumulates only,
    one per weight of the folded layer it meets: the fan-out of the window it falls in (of each
    window, were pools to overlap). After a global pool every spike reaches every output of the
    classifier. So a layer behind a k×k pool can take up to k² times its ANN MACs a step: the ANN
    averages each window once, the folded layer meets every spike in it;
  - a sum of two spiking inputs feeding a layer passes each spike on as it is;
  - θ-scaled outputs ``y = θ·s``: θ folds into the next layer's weights, as in the NIR export; a
    spike is one event whatever θ;
  - an identity shortcut adds spikes into the next neuron's input without a weight: not counted,
    like the residual additions of the ANN (at most one accumulate per spike); a 1×1 convolution
    shortcut is a synaptic layer like any other;
  - ASGL's noisy training emits analog values, which are not spikes: spikes are counted on
    evaluation-mode forwards only, where every output is 0 or θ.

- Energy: ``E_SNN = pj_per_ac · SOPs + pj_per_mac · MACs`` and ``E_ANN = pj_per_mac · ANN MACs``, with
  0.9 pJ per accumulate and 4.6 pJ per multiply-accumulate by default: a 32-bit floating-point
  add (0.9 pJ) and multiply (3.7 pJ) in 45 nm CMOS (M. Horowitz, ISSCC 2014), the figures the SNN
  literature uses. They are assumptions, reported with the numbers: they leave out memory
  traffic, which dominates on real hardware, and any cost of the neurons' own updates.
- Firing rate: a spiking layer's nonzero outputs over its output elements (steps × samples ×
  neurons), as the trainer reports it; a synaptic layer shows that of the neurons feeding it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .bn_lif import neuron_output_module
from .graph import GraphError, Node, consumers, step_shape, trace_steps

__all__ = ["PJ_PER_AC", "PJ_PER_MAC", "OpCounter", "fanout_map"]

PJ_PER_AC = 0.9  # pJ, 32-bit float add, 45 nm (Horowitz, ISSCC 2014)
PJ_PER_MAC = 4.6  # pJ, 32-bit float multiply (3.7) + add (0.9), 45 nm
ASSUMPTIONS = ("energy per operation of 32-bit floating point in 45 nm CMOS (M. Horowitz, ISSCC 2014): an "
               "accumulate is an add, a MAC a multiply and an add; memory traffic and neuron updates not counted")
_SPIKING = ("lif", "rnn")
_SYNAPTIC = ("conv", "linear", "rnn")
_PASS = ("pool", "flatten", "add")  # linear maps that keep a spike one event: folded into the next layer


@dataclass
class _Synapses:
    name: str  # the layer's module name ("<name>.in" / "<name>.rec": a recurrent layer's two weight matrices)
    order: tuple[int, int]  # (node index, 0 input weights / 1 recurrent weights): the order layers run in
    macs: int  # dense multiply-accumulates of one sample at one step
    # what feeds it: (node index, fan-out) with node 0 the network's input (fan-out None: dense MACs)
    # or a spiking node (fan-out float64 [*its step shape]); several where a sum feeds the layer
    inputs: list[tuple[int, torch.Tensor | None]]


def _window_areas(size: int, out: int) -> torch.Tensor:
    """The window lengths of ``adaptive_avg_pool`` along one axis (PyTorch's floor/ceil windows)."""
    return torch.tensor([math.ceil((i + 1) * size / out) - (i * size) // out for i in range(out)], dtype=torch.float64)


def _sum_pool(m: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """The pooling ``m`` without its division: each output the sum of its window."""
    if isinstance(m, nn.AdaptiveAvgPool2d):
        H, W = x.shape[-2:]
        oh, ow = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
        oh, ow = oh or H, ow or W
        return F.adaptive_avg_pool2d(x, (oh, ow)) * (_window_areas(H, oh)[:, None] * _window_areas(W, ow)[None, :])
    if m.divisor_override is not None or not m.count_include_pad:
        raise GraphError(f"pool {name!r} divides by something other than its window (divisor_override or "
                         "count_include_pad=False): the operation count knows plain average pools only")
    kh, kw = (m.kernel_size, m.kernel_size) if isinstance(m.kernel_size, int) else m.kernel_size
    return F.avg_pool2d(x, m.kernel_size, m.stride, m.padding, m.ceil_mode, True) * (kh * kw)


def _ones_layer(node: Node, x: torch.Tensor, recurrent: bool = False) -> torch.Tensor:
    """Synaptic layer ``node`` with every weight 1 and no bias, on ``x``: each output counts the
    (input, weight) pairs that reach it."""
    m = node.module
    if node.kind == "conv":
        if m.padding_mode != "zeros":
            raise GraphError(f"convolution {node.name!r} pads with {m.padding_mode!r}; the operation count "
                             "knows zero padding only")
        return F.conv2d(x, torch.ones(m.weight.shape, dtype=torch.float64), None, m.stride, m.padding, m.dilation,
                        m.groups)
    weight = m.weight if node.kind == "linear" else m.recurrent_weight if recurrent else m.input_weight
    return F.linear(x, torch.ones(weight.shape, dtype=torch.float64))


def fanout_map(nodes: list[Node], route: list[int], target: int, in_step: tuple[int, ...],
               recurrent: bool = False) -> torch.Tensor:
    """How many (weight, output) pairs of synaptic node ``target`` each element of a ``[*in_step]``
    value reaches through the nodes of ``route`` (pools, flattens, sums), as float64 ``[*in_step]``:
    the gradient of the all-ones layer's total (see the module docstring)."""
    x = torch.zeros(1, *in_step, dtype=torch.float64, requires_grad=True)
    y = x
    for i in route:
        node = nodes[i]
        if node.kind == "pool":
            y = _sum_pool(node.module, y, node.name)
        elif node.kind == "flatten":
            y = node.module(y)
        # "add": a sum passes each of its inputs on unchanged
    y = _ones_layer(nodes[target], y, recurrent)
    y.sum().backward()
    return x.grad[0]


class OpCounter:
    """Spike counts of every spiking layer of ``model`` on evaluation-mode forwards, turned into the
    operations and energy of the module docstring.

    ``sample_input``: one batch the model accepts (only its shape matters; the graph is traced
    once, on the torch reference neurons). ``static_input``: the input is one image that the network
    repeats over its T steps (the ANN then runs once), rather than T steps of events or sequence.
    Counting happens in forward hooks on the spiking layers, on the device, without host syncs;
    :meth:`report` reads the counts (``reduce`` sums them over ranks first) and :meth:`reset` clears
    them. ``remove()`` takes the hooks off.
    """

    def __init__(self, model: nn.Module, sample_input: torch.Tensor, *, static_input: bool):
        was_training = model.training
        try:
            nodes, out_index, T, B = trace_steps(model.eval(), sample_input)
        except GraphError as e:
            raise GraphError(f"operation count: {e}") from None
        finally:
            model.train(was_training)
        self.T, self.static_input = T, bool(static_input)
        taken = consumers(nodes, out_index)
        self.sources = [i for i, node in enumerate(nodes) if node.kind in _SPIKING]
        self.names = {0: "input", **{i: nodes[i].name for i in self.sources}}
        self.steps = {i: step_shape(nodes[i].out_shape, T, B, nodes[i].name) for i in self.sources}
        layers: dict[str, _Synapses] = {}
        for src in [0, *self.sources]:
            in_step = self.steps.get(src)  # the network's input needs none: it drives dense MACs
            if src and nodes[src].kind == "rnn":  # its recurrent weights act on its own spikes
                node = nodes[src]
                layers[f"{node.name}.rec"] = _Synapses(f"{node.name}.rec", (src, 1), node.module.hidden ** 2, [
                    (src, fanout_map(nodes, [], src, in_step, recurrent=True))])
            for target, route in self._synapses_from(src, nodes, taken):
                node = nodes[target]
                out_step = step_shape(node.out_shape, T, B, node.name)
                if node.kind == "conv":
                    m = node.module
                    macs = math.prod(out_step) * (m.in_channels // m.groups) * math.prod(m.kernel_size)
                elif node.kind == "linear":
                    macs = math.prod(out_step) * node.module.in_features
                else:
                    macs = node.module.hidden * node.module.input_weight.shape[1]
                name = f"{node.name}.in" if node.kind == "rnn" else node.name
                layer = layers.setdefault(name, _Synapses(name, (target, 0), macs, []))
                layer.inputs.append((src, None if src == 0 else fanout_map(nodes, route, target, in_step)))
        self.layers = sorted(layers.values(), key=lambda layer: layer.order)
        # Spike counts per neuron and output elements per spiking layer, float64 on the device the
        # model runs on (moved there with the first counted output: the counter may be built before
        # the model is moved).
        self.counts = {i: torch.zeros(self.steps[i], dtype=torch.float64) for i in self.sources}
        self.elements = torch.zeros(len(self.sources), dtype=torch.float64)
        # a neuron inside a fused unit (BatchNormLIF) is computed by the unit, not called: hook the unit
        self._handles = [neuron_output_module(model, nodes[i].module).register_forward_hook(self._hook(k, i))
                         for k, i in enumerate(self.sources)]

    @staticmethod
    def _synapses_from(src: int, nodes: list[Node], taken: dict[int, list[int]]):
        """``(synaptic node, route)`` for every synaptic layer that takes node ``src``'s value, through
        pools, flattens and sums only; other paths (into a neuron, out of the network) drive none."""
        stack = [(src, [])]
        while stack:
            i, route = stack.pop()
            for j in taken[i]:
                if j < 0:
                    continue
                kind = nodes[j].kind
                if kind in _SYNAPTIC:
                    yield j, route
                elif kind in _PASS:
                    stack.append((j, [*route, j]))
                elif kind == "bn" and src != 0:
                    raise GraphError(f"operation count: batch norm {nodes[j].name!r} acts on the spikes of "
                                     f"{nodes[src].name!r} (a scale and an offset per channel): they would reach "
                                     "the next layer as real values, which the count does not model")

    def _hook(self, k: int, i: int):
        shape = self.steps[i]

        def hook(module, args, output):
            if module.training:
                return
            flat = output.detach().reshape(-1, *shape)
            if self.elements.device != flat.device:
                self.counts = {j: c.to(flat.device) for j, c in self.counts.items()}
                self.elements = self.elements.to(flat.device)
            self.counts[i] += (flat != 0).sum(0, dtype=torch.float64)
            self.elements[k] += flat.numel()

        return hook

    def reset(self) -> None:
        for c in self.counts.values():
            c.zero_()
        self.elements.zero_()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def report(self, samples: int, *, pj_per_ac: float = PJ_PER_AC, pj_per_mac: float = PJ_PER_MAC,
               reduce=None) -> dict:
        """Per layer and in total, per sample of the ``samples`` counted (all ranks): ``{"assumptions",
        "layers": {name: {"input", "firing_rate", "sops", "macs", "ann_macs", "energy_pj",
        "ann_energy_pj"}}, "total": {"firing_rate", "sops", "macs", "ann_macs", "energy_pj",
        "ann_energy_pj"}}``. ``reduce``: sums a tensor over ranks (e.g. ``accelerator.reduce``) — a
        collective, so every rank calls this."""
        for what, v in (("samples", samples), ("pj_per_ac", pj_per_ac), ("pj_per_mac", pj_per_mac)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{what} must be a number > 0, got {v!r}")
        reduce = reduce or (lambda t: t)
        counts = {i: reduce(c).cpu() for i, c in self.counts.items()}
        elements = reduce(self.elements).cpu()
        index = {i: k for k, i in enumerate(self.sources)}
        ann_steps = 1 if self.static_input else self.T
        layers, total = {}, dict.fromkeys(("sops", "macs", "ann_macs", "energy_pj", "ann_energy_pj"), 0.0)
        for s in self.layers:
            spiking = [(i, fanout) for i, fanout in s.inputs if i != 0]
            sops = sum(float((counts[i] * fanout).sum()) for i, fanout in spiking) / samples
            macs = float(self.T * s.macs) if len(spiking) < len(s.inputs) else 0.0
            ann = float(ann_steps * s.macs)
            fired = sum(float(counts[i].sum()) for i, _ in spiking)
            seen = sum(float(elements[index[i]]) for i, _ in spiking)
            row = {"input": " + ".join(self.names[i] for i, _ in s.inputs),
                   "firing_rate": (fired / seen if seen else 0.0) if spiking else None,
                   "sops": sops, "macs": macs, "ann_macs": ann, "energy_pj": pj_per_ac * sops + pj_per_mac * macs,
                   "ann_energy_pj": pj_per_mac * ann}
            layers[s.name] = row
            for key in total:
                total[key] += row[key]
        spikes = sum(float(c.sum()) for c in counts.values())
        all_elements = float(elements.sum())
        return {"assumptions": {"pj_per_ac": pj_per_ac, "pj_per_mac": pj_per_mac, "basis": ASSUMPTIONS,
                                "per": "sample", "T": self.T, "static_input": self.static_input},
                "layers": layers,
                "total": {"firing_rate": spikes / all_elements if all_elements else 0.0, **total}}
