"""Operation counts and energy (asgl.energy): a tiny network whose spikes are known, counted by
hand; fan-out maps of strided and pooled layers against hand tables; every network of the registry
traced and its fan-out maps checked against its dense MAC count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import asgl
from asgl.energy import PJ_PER_AC, PJ_PER_MAC, OpCounter
from asgl.graph import GraphError
from asgl.layers import SeqToANN, image_sequence


class _Tiny(nn.Module):
    """Image [B, 1, 4, 4] repeated over T = 2 steps -> conv1 (1->1, 3x3, pad 1) -> LIF -> conv2 (1->2,
    3x3, pad 1) -> LIF -> AvgPool2d(2) -> Flatten -> Linear(8 -> 3). conv1 passes the image through
    (one centre tap), conv2's first channel sums the 3x3 neighbourhood, its second is zero: with
    θ = 1 and a hard reset, a neuron whose input is >= 1 fires at every step, one whose input is 0
    never does."""

    def __init__(self, thresh: float = 1.0):
        super().__init__()
        self.conv1 = SeqToANN(nn.Conv2d(1, 1, 3, padding=1, bias=False))
        self.lif1 = asgl.LIF(decay=0.5, thresh=thresh, backend="torch")
        self.conv2 = SeqToANN(nn.Conv2d(1, 2, 3, padding=1, bias=False))
        self.lif2 = asgl.LIF(decay=0.5, thresh=thresh, backend="torch")
        self.head = SeqToANN(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3))
        with torch.no_grad():
            self.conv1.module.weight.zero_()
            self.conv1.module.weight[0, 0, 1, 1] = 1.0
            self.conv2.module.weight.zero_()
            self.conv2.module.weight[0] = 1.0

    def forward(self, x):
        return self.head(self.lif2(self.conv2(self.lif1(self.conv1(image_sequence(x, 2, 1))))))


def _image(*on):
    x = torch.zeros(1, 1, 4, 4)
    for y, x_ in on:
        x[0, 0, y, x_] = 1.5
    return x


def test_counts_of_a_tiny_network_by_hand():
    """Sample A fires layer 1 at a corner (0,0), inside (1,1) and on an edge (0,2); sample B only at
    (3,3). Per step:

    conv2's fan-out (3x3, pad 1, 2 output channels): corner 4·2 = 8, edge 6·2 = 12, inside 9·2 = 18.
      A: 8 + 18 + 12 = 38, B: 8.                                   SOPs over T = 2: A 76, B 16
    layer 2 fires (channel 0) where the 3x3 neighbourhood holds a spike:
      A: rows 0-1 (8 cells) and (2,0), (2,1), (2,2): 11; B: (2,2), (2,3), (3,2), (3,3): 4.
    the classifier through the 2x2 pool and flatten: 3 outputs per spike.
                                                                   SOPs over T = 2: A 66, B 24
    conv1 reads the image: 16 outputs · 9 taps = 144 MACs a step, 288 over T = 2.
    The ANN (the image once): 144 + conv2 2·16·9 = 288 + linear 8·3 = 24: 456 MACs.
    Per sample (the mean of A and B): SOPs (76 + 66 + 16 + 24) / 2 = 91, MACs 288.
    Firing rates: layer 1 (3 + 1)·2 / (2 samples · 2 steps · 16) = 0.125,
                  layer 2 (11 + 4)·2 / (2 · 2 · 32) = 0.234375."""
    model = _Tiny().eval()
    counter = OpCounter(model, torch.zeros(2, 1, 4, 4), static_input=True)
    x = torch.cat([_image((0, 0), (1, 1), (0, 2)), _image((3, 3))])
    with torch.no_grad():
        model(x)
        model.train()(x)  # training-mode forwards are not counted (ASGL's analog outputs are no spikes)
    report = counter.report(samples=2)
    layers, total = report["layers"], report["total"]
    assert list(layers) == ["conv1.module", "conv2.module", "head.module.2"]
    assert layers["conv1.module"] == {"input": "input", "firing_rate": None, "sops": 0.0, "macs": 288.0,
                                      "ann_macs": 144.0, "energy_pj": 4.6 * 288, "ann_energy_pj": 4.6 * 144}
    assert layers["conv2.module"] == {"input": "lif1", "firing_rate": 0.125, "sops": (76 + 16) / 2, "macs": 0.0,
                                      "ann_macs": 288.0, "energy_pj": 0.9 * 46, "ann_energy_pj": 4.6 * 288}
    assert layers["head.module.2"] == {"input": "lif2", "firing_rate": 0.234375, "sops": (66 + 24) / 2,
                                       "macs": 0.0, "ann_macs": 24.0, "energy_pj": pytest.approx(0.9 * 45),
                                       "ann_energy_pj": pytest.approx(4.6 * 24)}
    assert total["sops"] == 91.0 and total["macs"] == 288.0 and total["ann_macs"] == 456.0
    assert total["energy_pj"] == pytest.approx(0.9 * 91 + 4.6 * 288)
    assert total["ann_energy_pj"] == pytest.approx(4.6 * 456)
    assert total["firing_rate"] == pytest.approx((8 + 30) / (64 + 128))
    assert report["assumptions"]["pj_per_ac"] == PJ_PER_AC == 0.9 and PJ_PER_MAC == 4.6
    assert (report["assumptions"]["T"], report["assumptions"]["static_input"]) == (2, True)

    # θ scales the output, not the count: θ = 2 with the same inputs doubled fires the same neurons
    theta = _Tiny(thresh=2.0).eval()
    counter2 = OpCounter(theta, torch.zeros(2, 1, 4, 4), static_input=True)
    with torch.no_grad():
        theta(2 * x)
    assert counter2.report(samples=2)["total"] == pytest.approx(total)

    # the constants are assumptions a caller sets; a temporal input makes the ANN run T steps
    other = counter.report(samples=2, pj_per_ac=0.1, pj_per_mac=1.0)["total"]
    assert other["energy_pj"] == pytest.approx(0.1 * 91 + 288) and other["ann_energy_pj"] == pytest.approx(456)
    temporal = OpCounter(_Tiny().eval(), torch.zeros(2, 1, 4, 4), static_input=False)
    assert temporal.report(samples=1)["total"]["ann_macs"] == 2 * 456
    counter.reset()
    assert counter.report(samples=2)["total"]["sops"] == 0.0
    with pytest.raises(ValueError, match="pj_per_ac must be a number > 0"):
        counter.report(samples=2, pj_per_ac=0)


def test_fanout_of_a_strided_conv_and_through_pools_by_hand():
    """A 3x3 conv, pad 1, stride 2 on 4x4 (2x2 outputs): output row o reads input rows 2o-1..2o+1, so
    input rows 0..3 enter 1, 2, 1, 1 output rows; fan-out = rows · cols · 5 output channels. Through a
    2x2 average pool first, a spike reaches what its pooled cell reaches (corner 4, edge 6, inside 9
    taps of the 4x4 pooled map, times 5); through a global pool, every output of a linear map."""
    net = nn.Sequential(SeqToANN(nn.Conv2d(1, 1, 1, bias=False)), asgl.LIF(backend="torch"),
                        SeqToANN(nn.Conv2d(1, 5, 3, stride=2, padding=1, bias=False)))
    counter = OpCounter(_Seq(net), torch.zeros(2, 1, 4, 4), static_input=True)
    reach = torch.tensor([1.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    ((_, fan),) = counter.layers[1].inputs
    torch.testing.assert_close(fan, (5 * reach[:, None] * reach[None, :])[None], rtol=0, atol=0)

    pooled = nn.Sequential(SeqToANN(nn.Conv2d(1, 1, 1, bias=False)), asgl.LIF(backend="torch"),
                           SeqToANN(nn.AvgPool2d(2), nn.Conv2d(1, 5, 3, padding=1, bias=False)))
    ((_, fan),) = OpCounter(_Seq(pooled), torch.zeros(2, 1, 8, 8), static_input=True).layers[1].inputs
    taps = torch.tensor([2.0, 3.0, 3.0, 2.0], dtype=torch.float64)  # rows of the pooled 4x4 map
    cell = 5 * taps[:, None] * taps[None, :]
    torch.testing.assert_close(fan[0], cell.repeat_interleave(2, 0).repeat_interleave(2, 1), rtol=0, atol=0)

    glob = nn.Sequential(SeqToANN(nn.Conv2d(1, 3, 1, bias=False)), asgl.LIF(backend="torch"),
                         SeqToANN(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 7)))
    ((_, fan),) = OpCounter(_Seq(glob), torch.zeros(2, 1, 4, 4), static_input=True).layers[1].inputs
    assert fan.shape == (3, 4, 4) and bool((fan == 7).all())


class _Seq(nn.Module):
    """``body`` on an image repeated over T = 2 steps."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(image_sequence(x, 2, 1))


class _Sum(nn.Module):
    """Two neurons on the same 4x4 image (1x1 convs of weight 1 and 1/4) summed into a 1x1 conv to 3
    channels: each spike of either reaches 3 weights."""

    def __init__(self):
        super().__init__()
        self.a_conv, self.b_conv = (SeqToANN(nn.Conv2d(1, 1, 1, bias=False)) for _ in range(2))
        self.a, self.b = asgl.LIF(decay=0.5, backend="torch"), asgl.LIF(decay=0.5, backend="torch")
        self.out = SeqToANN(nn.Conv2d(1, 3, 1, bias=False))
        with torch.no_grad():
            self.a_conv.module.weight.fill_(1.0)
            self.b_conv.module.weight.fill_(0.25)

    def forward(self, x):
        x_seq = image_sequence(x, 2, 1)
        return self.out(self.a(self.a_conv(x_seq)) + self.b(self.b_conv(x_seq)))


def test_a_sum_of_spiking_inputs_passes_every_spike_on():
    """Pixels 1.5 and 4.0: a fires at both at each of the 2 steps (4 spikes), b (input 0.375 and 1.0)
    only at the second (2 spikes; 0.375 leaks to 0.5625 < 1 at step 2): (4 + 2) · 3 = 18 SOPs."""
    model = _Sum().eval()
    counter = OpCounter(model, torch.zeros(2, 1, 4, 4), static_input=True)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 1], x[0, 0, 2, 3] = 1.5, 4.0
    with torch.no_grad():
        model(x)
    row = counter.report(samples=1)["layers"]["out.module"]
    assert (row["input"], row["sops"], row["firing_rate"], row["ann_macs"]) == ("a + b", 18.0, 6 / 64, 48.0)


@pytest.mark.parametrize("name,shape,static", [
    ("digits_cnn", (2, 1, 8, 8), True), ("resnet18", (2, 3, 16, 16), True), ("resnet19", (2, 3, 8, 8), True),
    ("vgg11", (2, 3, 16, 16), True), ("shd_rnn", (2, 3, 700), False),
])
def test_every_kind_of_network_is_counted(name, shape, static):
    """Each synaptic layer of the registry's networks gets a fan-out map whose sum is its dense MAC
    count less the taps on padding (a conv fed straight by neurons), or k² times it behind a k x k
    pool; every spiking layer feeds at least one counted layer; residual identities add none."""
    T = shape[1] if name == "shd_rnn" else 2
    model = asgl.create_model(name, T=T).eval()
    counter = OpCounter(model, torch.zeros(shape), static_input=static)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {s.name for s in counter.layers} >= set(convs) - {"rnn.in", "rnn.rec"}
    assert {counter.names[i] for s in counter.layers for i, _ in s.inputs if i} == {
        n for n, m in model.named_modules() if isinstance(m, asgl.LIF)}
    for s in counter.layers:
        ((source, fanout),) = s.inputs  # one input each: no sum feeds a layer in these networks
        if fanout is None:
            continue
        total = float(fanout.sum())
        assert total > 0 and total == int(total), s.name
        m = convs.get(s.name)
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
            assert total == s.macs, s.name  # a 1x1 (shortcut) convolution has no padding taps
    x = torch.rand(shape) * 2
    with torch.no_grad():
        model(x)
    report = counter.report(samples=shape[0])
    assert 0 < report["total"]["firing_rate"] < 1 and report["total"]["sops"] > 0
    assert report["total"]["ann_macs"] == sum(row["ann_macs"] for row in report["layers"].values())


@pytest.mark.interpret
def test_neurons_inside_fused_units_are_counted():
    """On the triton backend a conv -> BN -> LIF unit computes its neuron in one fused op without
    calling the LIF child: the counter reads the unit's output, every spike of it."""
    model = asgl.create_model("digits_cnn", T=2, backend="triton").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.bias.fill_(0.7)  # firing rates of some 10-50 %
    counter = OpCounter(model, torch.zeros(2, 1, 8, 8), static_input=True)
    seen = {}
    units = {n: m for n, m in model.named_modules() if isinstance(m, asgl.BatchNormLIF)}
    for name, unit in units.items():
        unit.register_forward_hook(lambda m, a, y, name=name: seen.__setitem__(name, y.detach().clone()))
    with torch.no_grad():
        model(torch.rand(3, 1, 8, 8))
    report = counter.report(samples=3)
    for name, y in seen.items():
        rate = float((y != 0).double().mean())
        assert 0.02 < rate < 0.9, (name, rate)
        consumers = [row for row in report["layers"].values() if row["input"] == f"{name}.lif"]
        assert consumers and all(row["firing_rate"] == rate for row in consumers), name


def test_what_the_count_does_not_model_is_refused():
    relu = nn.Sequential(SeqToANN(nn.Conv2d(1, 1, 1)), asgl.LIF(backend="torch"), SeqToANN(nn.ReLU()))
    with pytest.raises(GraphError, match="operation count: layer .*ReLU"):
        OpCounter(_Seq(relu), torch.zeros(2, 1, 4, 4), static_input=True)
    bn = nn.Sequential(SeqToANN(nn.Conv2d(1, 1, 1)), asgl.LIF(backend="torch"), SeqToANN(nn.BatchNorm2d(1)),
                       SeqToANN(nn.Conv2d(1, 1, 1)))
    with pytest.raises(GraphError, match="batch norm .* acts on the spikes"):
        OpCounter(_Seq(bn), torch.zeros(2, 1, 4, 4), static_input=True)
