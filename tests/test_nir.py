"""NIR export (asgl.to_nir): graphs written with nir.write, read back with nir.read and run by
snnTorch (its NIR importer, or its neurons wired by nirtorch for the recurrent network) and by a
small reference simulator of NIR's own equations written here; each must reproduce model.eval()
spike for spike.

Everything runs in float64, so a membrane lands within rounding of its threshold essentially
never and spikes are compared exactly (ASGL's ``u ≥ θ`` and NIR's ``v > θ`` differ only at
equality). Inputs and batch-norm statistics are set so every layer fires 5–50 % of the time.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

nir = pytest.importorskip("nir", reason="the deploy extra: pip install 'asgl-snn[deploy]'")
nirtorch = pytest.importorskip("nirtorch", reason="the deploy extra: pip install 'asgl-snn[deploy]'")
snntorch = pytest.importorskip("snntorch", reason="the deploy extra: pip install 'asgl-snn[deploy]'")

from snntorch.import_nir import _nir_to_snntorch_module, import_from_nir  # noqa: E402  (after the skips)

import asgl  # noqa: E402
from asgl.bn_lif import BatchNormLIF  # noqa: E402
from asgl.nir import NIRExportError, to_nir  # noqa: E402

DT = 1e-4


def _make(name: str, T: int, x: torch.Tensor | None = None, seed: int = 0, **neuron_kwargs) -> nn.Module:
    """A random network in float64, in eval mode, with random decays and batch norms whose running
    statistics are those of ``x`` (so the scale of every layer's input is known) and whose affine
    parameters are random: each pre-activation is roughly N(β, γ²) with β, γ drawn below."""
    torch.manual_seed(seed)
    model = asgl.create_model(name, T=T, p=0.0, backend="torch", **neuron_kwargs).double()
    gen = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, asgl.LIF):
                m.decay_logit.copy_(torch.empty(()).uniform_(-1.0, 2.0, generator=gen))  # λ in 0.27..0.88
        for m in bns:
            m.weight.copy_(torch.empty(m.num_features).uniform_(0.6, 1.2, generator=gen))
            m.bias.copy_(torch.empty(m.num_features).uniform_(-0.1, 0.4, generator=gen))
        if x is not None and bns:
            for m in bns:  # one batch with a cumulative average: the running statistics are x's
                m.reset_running_stats()
                m.momentum = None
            model.train()(x)
            for m in bns:
                m.momentum = 0.1
    return model.eval()


def _run_model(model: nn.Module, x: torch.Tensor):
    """Per-step logits [T, B, K] and, per neuron module, spike counts per sample [B] and firing rate."""
    counts, rates = {}, {}

    def hook(module, args, y, name):
        spikes = (y != 0).flatten(2)
        counts[name] = spikes.sum(dim=(0, 2))
        rates[name] = spikes.double().mean().item()

    handles = [m.register_forward_hook(lambda m, a, y, n=n: hook(m, a, y, n))
               for n, m in model.named_modules() if isinstance(m, asgl.LIF)]
    with torch.no_grad():
        out = model(x)
    for h in handles:
        h.remove()
    return out, counts, rates


def _steps(x: torch.Tensor, T: int, kind: str) -> list[torch.Tensor]:
    """The per-step graph inputs: an image repeated T times, or step t of a sequence."""
    return [x] * T if kind == "image" else [x[:, t] for t in range(T)]


def _node_name(module_name: str, recurrent: bool) -> str:
    return module_name + ".lif" if recurrent else module_name


# ----------------------------------------------------------------------------- the two simulators


def _run_snntorch(graph, steps: list[torch.Tensor], via_nirtorch: bool = False):
    """snnTorch's importer, one sample at a time (NIR's shapes are per sample: its Flatten dims
    count from the first per-sample dim), float64 throughout.

    ``via_nirtorch``: snnTorch's node mappings (LIF -> Leaky, Linear, Affine) wired by NIR's own
    PyTorch interpreter, ``nirtorch.nir_to_torch``, without the importer's rewrite of recurrent
    cycles into subgraphs (which routes the input through the recurrent weights)."""
    if via_nirtorch:
        to_module = lambda node: _nir_to_snntorch_module(node, init_hidden=True)  # noqa: E731
        net = nirtorch.nir_to_torch(graph, {nir.LIF: to_module, nir.Linear: to_module, nir.Affine: to_module})
    else:
        with contextlib.redirect_stdout(io.StringIO()):  # the importer prints progress
            net = import_from_nir(graph)
    net = net.double()
    leaky = {n.rsplit(".", 1)[-1]: m for n, m in net.named_modules() if isinstance(m, snntorch.Leaky)}
    for m in leaky.values():
        # snnTorch's Heaviside returns float32 spikes; keep the float64 of the rest of the run.
        m.spike_grad = lambda z: (z > 0).to(z.dtype)
    outs, counts = [], {k: [] for k in leaky}
    for b in range(steps[0].shape[0]):
        for m in leaky.values():
            m.reset_mem()
        c = dict.fromkeys(leaky, 0)
        handles = [m.register_forward_hook(lambda m, a, y, k=k: c.__setitem__(k, c[k] + int((y != 0).sum())))
                   for k, m in leaky.items()]
        state, seq = None, []
        with torch.no_grad():
            for x_t in steps:
                y, state = net(x_t[b], state)
                seq.append(y)
        for h in handles:
            h.remove()
        outs.append(torch.stack(seq))
        for k in c:
            counts[k].append(c[k])
    return torch.stack(outs, dim=1), {k: torch.tensor(v) for k, v in counts.items()}


def _simulate(graph, steps: list[torch.Tensor], dt: float = DT):
    """NIR's equations, batched, forward Euler with step dt. An edge that closes a cycle delivers
    the previous step's value (zero at t = 0)."""
    nodes, edges = graph.nodes, graph.edges

    # Depth-first from the input: an edge into a node still on the stack closes a cycle.
    delayed, order, state = set(), [], {}

    def visit(n: str) -> None:
        state[n] = "open"
        for s, d in edges:
            if s == n:
                if state.get(d) == "open":
                    delayed.add((s, d))
                elif d not in state:
                    visit(d)
        state[n] = "done"
        order.append(n)

    visit("input")
    order.reverse()  # reverse postorder: every node after the sources of its non-delayed edges
    t64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    v = {n: None for n, node in nodes.items() if isinstance(node, nir.LIF)}
    prev: dict[str, torch.Tensor] = {}
    outs, counts = [], {n: 0 for n in v}
    for x_t in steps:
        now: dict[str, torch.Tensor] = {}
        for n in order:
            node = nodes[n]
            if isinstance(node, nir.Input):
                now[n] = x_t
                continue
            terms = [now[s] if (s, n) not in delayed else prev.get(s) for s, d in edges if d == n]
            terms = [t for t in terms if t is not None]
            x = sum(terms[1:], terms[0])
            if isinstance(node, nir.Output):
                now[n] = x
            elif isinstance(node, nir.Affine):
                now[n] = x @ t64(node.weight).T + t64(node.bias)
            elif isinstance(node, nir.Linear):
                now[n] = x @ t64(node.weight).T
            elif isinstance(node, nir.Scale):
                now[n] = x * t64(node.scale)
            elif isinstance(node, nir.Conv2d):
                now[n] = F.conv2d(x, t64(node.weight), t64(node.bias), tuple(node.stride), tuple(node.padding),
                                  tuple(node.dilation), node.groups)
            elif isinstance(node, nir.AvgPool2d):
                now[n] = F.avg_pool2d(x, tuple(node.kernel_size), tuple(node.stride), tuple(node.padding))
            elif isinstance(node, nir.Flatten):
                end = node.end_dim + 1 if node.end_dim >= 0 else node.end_dim
                now[n] = x.flatten(node.start_dim + 1, end)
            elif isinstance(node, nir.LIF):
                tau, r, leak = t64(node.tau), t64(node.r), t64(node.v_leak)
                mem = torch.zeros_like(x) if v[n] is None else v[n]
                mem = mem + dt / tau * (leak - mem + r * x)
                spikes = (mem > t64(node.v_threshold)).double()
                v[n] = torch.where(spikes.bool(), t64(node.v_reset).expand_as(mem), mem)
                counts[n] = counts[n] + spikes.flatten(1).sum(1)
                now[n] = spikes
            else:
                raise AssertionError(f"the reference simulator has no rule for {type(node).__name__}")
        prev = now
        outs.append(now["output"])
    return torch.stack(outs), counts


# ------------------------------------------------------------------------------------------ cases

# name, T, input, input kind, neuron settings, simulators. snnTorch 1.0's importer rewrites a
# recurrent cycle into a subgraph that computes LIF(R·(W·x + s[t-1])) (its input edge enters the
# recurrent weights), not the LIF(W·x + R·s[t-1]) that the graph states, so the SHD network runs
# on snnTorch's neurons wired by nirtorch ("nirtorch") instead. v_reset ≠ 0 runs on the reference
# simulator only: snnTorch's neurons always reset to 0.
CASES = [
    ("digits_cnn", 4, lambda g: torch.randn(3, 1, 8, 8, generator=g) * 2.0, "image",
     dict(thresh=0.7), ("snntorch", "reference")),
    ("shd_rnn", 8, lambda g: (torch.rand(3, 8, 700, generator=g) < 0.15).double(), "sequence",
     dict(thresh=0.8), ("nirtorch", "reference")),
    ("shd_rnn", 8, lambda g: (torch.rand(3, 8, 700, generator=g) < 0.15).double(), "sequence",
     dict(thresh=0.8, v_reset=-0.2), ("reference",)),
]


def _check(model, x, T, kind, simulators, graph):
    logits, counts, rates = _run_model(model, x)
    for layer, rate in rates.items():
        assert 0.05 <= rate <= 0.5, f"{layer} fires {rate:.1%} of the time; the check needs 5-50 %"
    recurrent = {n: isinstance(m, asgl.RecurrentLIF) for n, m in model.named_modules() if isinstance(m, asgl.LIF)}
    for simulator in simulators:
        if simulator == "reference":
            out, their_counts = _simulate(graph, _steps(x, T, kind))
        else:
            out, their_counts = _run_snntorch(graph, _steps(x, T, kind), via_nirtorch=simulator == "nirtorch")
        for layer, n in counts.items():
            key = _node_name(layer, recurrent[layer])
            key = key if simulator == "reference" else key.replace(".", "_")
            assert their_counts[key].tolist() == n.tolist(), f"{simulator}: spike counts of {layer} differ"
        # snnTorch's importer builds its layers with torch.Tensor(weight): float32 weights, so its
        # logits carry float32 rounding (~1e-7 relative); the reference simulator stays in float64.
        tol = 1e-9 if simulator == "reference" else 1e-5
        err = (out - logits).abs().max().item()
        assert err <= tol * (1 + logits.abs().max().item()), f"{simulator}: logits differ by {err:.3g}"


@pytest.mark.parametrize("name,T,make_x,kind,neuron_kwargs,simulators", CASES,
                         ids=[f"{c[0]}-{'-'.join(f'{k}{v}' for k, v in c[4].items())}" for c in CASES])
def test_exported_graph_reproduces_the_model(tmp_path, name, T, make_x, kind, neuron_kwargs, simulators):
    x = make_x(torch.Generator().manual_seed(3)).double()
    model = _make(name, T, x, **neuron_kwargs)
    if name == "shd_rnn":
        with torch.no_grad():  # enough input drive for 5–50 % firing from 15 % input spikes
            model.rnn.input_weight.mul_(6.0)
    path = tmp_path / f"{name}.nir"
    nir.write(path, to_nir(model, x, dt=DT))
    _check(model, x, T, kind, simulators, nir.read(path))


@pytest.fixture(scope="module")
def resnet():
    """ResNet-18, its input and its exported graph (shared: one export takes seconds on 2 cores)."""
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)).double()
    model = _make("resnet18", 2, x)
    return model, x, to_nir(model, x, dt=DT)


@pytest.mark.e2e
def test_resnet18_through_a_file_and_snntorch(tmp_path, resnet):
    model, x, graph = resnet
    path = tmp_path / "resnet18.nir"
    # Uncompressed: gzip of 11 M float64 weights takes ~10 s on 2 cores (the small networks above
    # go through nir.write's default gzip).
    nir.write(path, graph, compression=None)
    _check(model, x, 2, "image", ("snntorch", "reference"), nir.read(path))


@pytest.mark.e2e
def test_resnet18_threshold_needs_scale_nodes(resnet):
    """θ ≠ 1: the identity shortcuts carry θ·s, the branch convs have it folded: Scale nodes."""
    model, x, _ = resnet
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, asgl.LIF):
            m.thresh = 0.9
    graph = to_nir(model, x, dt=DT)
    assert sum(isinstance(n, nir.Scale) for n in graph.nodes.values()) == 5  # identity shortcuts: blocks 0, 1, 3, 5, 7
    _check(model, x, 2, "image", ("reference",), graph)


@pytest.mark.e2e
def test_graph_structure(resnet):
    """BN folded away, residual sums as edges, the recurrence as a cycle, θ = 1 needs no Scale."""
    model, _, graph = resnet
    types = {type(n).__name__ for n in graph.nodes.values()}
    assert types == {"Input", "Output", "Conv2d", "LIF", "AvgPool2d", "Flatten", "Affine"}
    incoming = {}
    for s, d in graph.edges:
        incoming.setdefault(d, []).append(s)
    # Block 0 (identity shortcut): its second neuron sums the branch conv and the stem's spikes;
    # block 2 (stride 2): the branch conv and the 1×1 shortcut conv.
    assert sorted(incoming["blocks.0.conv2.bn_lif.lif"]) == ["blocks.0.conv2.conv", "stem.bn_lif.lif"]
    assert sorted(incoming["blocks.2.conv2.bn_lif.lif"]) == ["blocks.2.conv2.conv", "blocks.2.shortcut.module.0"]
    lif = graph.nodes["stem.bn_lif.lif"]
    lam = torch.sigmoid(model.stem.bn_lif.lif.decay_logit).item()
    np.testing.assert_allclose(lif.tau, DT / (1 - lam))
    np.testing.assert_allclose(lif.r * DT / lif.tau, 1.0)  # the input enters unscaled
    assert lif.tau.shape == (64, 16, 16)

    shd = to_nir(_make("shd_rnn", 4), torch.rand(2, 4, 700).double())
    assert ("rnn.rec", "rnn.lif") in shd.edges and ("rnn.lif", "rnn.rec") in shd.edges
    assert shd.nodes["rnn.rec"].weight.shape == (240, 240)
    assert shd.nodes["input"].input_type["input"].tolist() == [700]


def test_threshold_folded_into_the_next_weights():
    model = _make("digits_cnn", 2, thresh=0.5)
    graph = to_nir(model, torch.randn(2, 1, 8, 8).double())
    conv = model.features[1].conv  # the second unit: it reads the first unit's spikes θ·s
    bn = model.features[1].bn_lif.bn
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    expected = 0.5 * conv.weight.detach() * scale.reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(graph.nodes["features.1.conv"].weight, expected.numpy(), rtol=1e-12)
    assert not any(isinstance(n, nir.Scale) for n in graph.nodes.values())


@pytest.mark.e2e
def test_fused_units_export_through_their_children(resnet):
    """Each BN -> (+ residual) -> LIF is one BatchNormLIF; on the triton backend it runs one fused
    kernel the trace cannot see into. The export traces the torch reference through its bn and lif
    children instead: the same graph, and every neuron keeps its backend."""
    model, x, graph = resnet
    assert sum(isinstance(m, BatchNormLIF) for m in model.modules()) == 17  # stem + 2 per block
    on_triton = copy.deepcopy(model)
    for m in asgl.neurons(on_triton):
        m.backend = "triton"
    triton_graph = to_nir(on_triton, x, dt=DT)
    assert {m.backend for m in asgl.neurons(on_triton)} == {"triton"}
    assert sorted(triton_graph.edges) == sorted(graph.edges)
    assert list(triton_graph.nodes) == list(graph.nodes)
    for name, node in graph.nodes.items():
        for key in ("weight", "bias", "tau", "r", "v_threshold", "v_reset"):
            if hasattr(node, key):
                np.testing.assert_array_equal(getattr(triton_graph.nodes[name], key), getattr(node, key), err_msg=name)


# ------------------------------------------------------------------------------------------ errors


class _Tiny(nn.Module):
    def __init__(self, middle: nn.Module | None = None, add_constant: bool = False):
        super().__init__()
        self.conv = asgl.layers.SeqToANN(nn.Conv2d(1, 4, 3, padding=1))
        self.middle = middle or nn.Identity()
        self.lif = asgl.LIF()
        self.head = asgl.layers.SeqToANN(nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
        self.add_constant = add_constant

    def forward(self, x):
        h = self.conv(x.unsqueeze(0).expand(2, *x.shape))
        if self.add_constant:
            h = h + 1.0
        return self.head(self.lif(self.middle(h)))


class _FlattenFolding(nn.Module):
    """Time folded with flatten/unflatten instead of SeqToANN, and a pool between neuron and conv."""

    def __init__(self):
        super().__init__()
        self.conv, self.lif, self.pool = nn.Conv2d(1, 4, 3, padding=1, bias=True), asgl.LIF(thresh=0.5), nn.AvgPool2d(2)
        self.flat, self.fc, self.T = nn.Flatten(), nn.Linear(4 * 4 * 4, 3), 3
        self.tensor_flatten = False

    def forward(self, x):
        x_seq = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        h = self.lif(self.conv(x_seq.flatten(0, 1)).unflatten(0, (self.T, -1)))
        h = self.pool(h.flatten(0, 1))
        h = h.flatten(1) if self.tensor_flatten else self.flat(h)
        return self.fc(h).unflatten(0, (self.T, -1))


def test_other_ways_to_fold_time():
    model = _FlattenFolding().double().eval()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64) * 3
    graph = to_nir(model, x)
    with torch.no_grad():
        expected = model(x)
    out, _ = _simulate(graph, _steps(x, 3, "image"))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    # θ = 0.5 is folded through the pool and the flatten into the linear layer's weights.
    np.testing.assert_allclose(graph.nodes["fc"].weight, 0.5 * model.fc.weight.detach().numpy())
    # Flattening features with a tensor method instead of nn.Flatten is refused, not guessed at.
    model.tensor_flatten = True
    with pytest.raises(NIRExportError, match="use an nn.Flatten layer"):
        to_nir(model, x)


def test_a_small_custom_network_exports():
    graph = to_nir(_Tiny().eval(), torch.randn(3, 1, 8, 8))
    assert [type(graph.nodes[n]).__name__ for n in ("conv.module", "lif", "head.module.0", "head.module.1")] == [
        "Conv2d", "LIF", "Flatten", "Affine"]
    assert graph.nodes["head.module.0"].output_type["output"].tolist() == [256]


class _Conv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x).relu()


@pytest.mark.parametrize("model,match", [
    (_Tiny(), "training mode"),
    (_Tiny(middle=asgl.layers.SeqToANN(_Conv(4, 4, 1))).eval(), "_Conv"),  # a layer type with its own forward
    (_Tiny(middle=asgl.layers.SeqToANN(nn.ReLU())).eval(), "ReLU"),
    (_Tiny(middle=asgl.layers.SeqToANN(nn.MaxPool2d(1))).eval(), "MaxPool2d"),
    (_Tiny(add_constant=True).eval(), "adding a constant"),
    (_Tiny(middle=nn.Sequential(asgl.LIF(), asgl.TimeBatchNorm2d(4))).eval(), "batch norm"),  # after a neuron
])
def test_refuses_what_nir_cannot_express(model, match):
    with pytest.raises(NIRExportError, match=match):
        to_nir(model, torch.randn(2, 1, 8, 8))


def test_refuses_soft_reset_and_non_finite_parameters():
    with pytest.raises(NIRExportError, match="reset='soft'"):
        to_nir(asgl.create_model("digits_cnn", T=2, reset="soft").eval(), torch.randn(2, 1, 8, 8))
    model = asgl.create_model("digits_cnn", T=2).eval()
    with torch.no_grad():
        model.head.module[1].weight[0, 0] = float("nan")
    with pytest.raises(NIRExportError, match=r"'head.module.1.weight' holds non-finite"):
        to_nir(model, torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="dt"):
        to_nir(asgl.create_model("digits_cnn", T=2).eval(), torch.randn(2, 1, 8, 8), dt=0)


@pytest.mark.parametrize("name,shape", [("digits_cnn8", (2, 1, 8, 8)), ("vgg11", (2, 3, 32, 32)),
                                        ("resnet19", (2, 3, 8, 8))])
def test_every_kind_of_network_exports(name, shape):
    """More of the registry (VGGSNN is VGG-11's kind at 48×48): one NIR LIF per neuron, and
    nothing but the supported node types."""
    model = asgl.create_model(name, T=2).eval()
    graph = to_nir(model, torch.rand(shape))
    lifs = [n for n, node in graph.nodes.items() if isinstance(node, nir.LIF)]
    assert sorted(lifs) == sorted(n for n, m in model.named_modules() if isinstance(m, asgl.LIF))
    assert {type(n).__name__ for n in graph.nodes.values()} <= {
        "Input", "Output", "Conv2d", "LIF", "AvgPool2d", "Flatten", "Affine", "Linear"}
