"""The networks behind the registry: shapes, gradients, parameter counts, neuron arguments (plain CPU).

Inputs are tiny (T=2, batch 2, the smallest spatial size each network accepts) and every neuron
runs the PyTorch reference (``backend="torch"``).
"""

import pytest
import torch
from torch import nn

import asgl
from asgl.models import NEURON_KWARGS, create_model, list_models

T, B, K = 2, 2, 5

# name -> (input shape, number of LIF layers). Images are [B, C, H, W], events [B, T, C, H, W],
# SHD [B, T, 700].
CASES = {
    "resnet18": ((B, 3, 8, 8), 1 + 8 * 2),
    "resnet19": ((B, 3, 8, 8), 1 + 8 * 2 + 1),
    "resnet34": ((B, 3, 8, 8), 1 + 16 * 2),
    "vgg11": ((B, 3, 16, 16), 8),
    "vgg13": ((B, 3, 16, 16), 10),
    "vgg16": ((B, 3, 32, 32), 13 + 2),
    "vggsnn": ((B, T, 2, 48, 48), 8),
    "shd_rnn": ((B, T, 700), 1),
    "digits_cnn": ((B, 1, 8, 8), 3),
    "digits_cnn8": ((B, 1, 8, 8), 8),
}


def test_registry_has_every_network():
    # other modules may register more (the registry is open), never fewer
    assert set(CASES) <= set(list_models())


def _input(name, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = CASES[name][0]
    if name == "shd_rnn":  # binned spike counts
        return (torch.rand(shape, generator=g) < 0.1).float()
    return torch.randn(shape, generator=g)


def _first_conv_or_linear(model):
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            return m.weight
        if isinstance(m, asgl.RecurrentLIF):
            return m.input_weight
    raise AssertionError("no weight layer")


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=K, T=T, backend="torch")
    assert model.T == T and model.num_classes == K
    out = model(_input(name))
    assert out.shape == (T, B, K)
    assert torch.isfinite(out).all()
    asgl.tet_loss(out, torch.arange(B) % K).backward()
    first = _first_conv_or_linear(model)
    assert first.grad is not None and first.grad.abs().sum() > 0
    lifs = asgl.neurons(model)
    assert len(lifs) == CASES[name][1]
    for lif in lifs:
        for p in (lif.decay_logit, lif.width_param):
            assert p.grad is not None and torch.isfinite(p.grad).all()
        # The sigmoid relaxation has no flat region: every width gets a gradient.
        assert lif.width_param.grad.abs().sum() > 0
    for p in model.parameters():
        assert p.grad is not None, "a parameter outside the graph"


@pytest.mark.parametrize("name", sorted(CASES))
def test_neuron_kwargs_reach_every_lif(name):
    kwargs = dict(
        decay=0.25, thresh=0.5, reset="soft", surrogate="rectangle", width=2.0, learn_width=True,
        width_granularity="channel", learn_decay=False, learn_thresh=True, p=0.1, backend="torch",
    )
    model = create_model(name, num_classes=K, T=T, **kwargs)
    lifs = asgl.neurons(model)
    assert len(lifs) == CASES[name][1]
    for lif in lifs:
        assert (lif.surrogate, lif.reset, lif.p, lif.backend) == ("rectangle", "soft", 0.1, "torch")
        assert isinstance(lif.thresh, nn.Parameter) and lif.thresh.item() == 0.5
        assert "decay_logit" in dict(lif.named_buffers())  # learn_decay=False -> a buffer
        torch.testing.assert_close(lif.decay, torch.tensor(0.25))
        assert lif.width_param.shape == (lif.channels,)
        torch.testing.assert_close(lif.width, torch.full((lif.channels,), 2.0))
    model.eval()
    with torch.no_grad():
        # Each LIF checks that dim 2 of its input has `channels` entries: a wrong per-layer
        # channel count fails here.
        assert model(_input(name)).shape == (T, B, K)


def test_channel_widths_match_layer_sizes():
    model = create_model("resnet18", width_granularity="channel", backend="torch")
    sizes = [lif.width_param.numel() for lif in asgl.neurons(model)]
    # stem, then two LIFs per block: 2 blocks each of 64, 128, 256, 512 channels
    assert sizes == [64] + [64] * 4 + [128] * 4 + [256] * 4 + [512] * 4
    vgg = create_model("vgg11", width_granularity="channel", backend="torch")
    assert [lif.channels for lif in asgl.neurons(vgg)] == [64, 128, 256, 512, 512, 512, 512, 512]
    vgg16 = create_model("vgg16", width_granularity="channel", backend="torch")
    assert [lif.channels for lif in asgl.neurons(vgg16)][-3:] == [512, 4096, 4096]
    shd = create_model("shd_rnn", width_granularity="channel", backend="torch")
    assert [lif.width_param.shape for lif in asgl.neurons(shd)] == [(240,)]


# ---- parameter counts ---------------------------------------------------------------------------
# Computed from the architecture descriptions (ASGL.md §4 and the authors' model/resnet.py,
# model/vgg.py) with the formulas below, not from the modules: conv k×k without bias = c_in·c_out·k²,
# BN = 2·c (γ, β), linear = in·out (+ out bias).

def conv(c_in, c_out, k):
    return c_in * c_out * k * k


def bn(c):
    return 2 * c


def linear(n_in, n_out, bias=True):
    return n_in * n_out + (n_out if bias else 0)


def resnet_count(stem, stages, hidden, classes, c_in=3):
    n = conv(c_in, stem, 3) + bn(stem)
    c = stem
    for i, (width, blocks) in enumerate(stages):
        for j in range(blocks):
            stride = 2 if i > 0 and j == 0 else 1
            n += conv(c, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
            if stride != 1 or c != width:
                n += conv(c, width, 1) + bn(width)
            c = width
    if hidden:  # the authors' ResNet19 head: no biases
        return n + linear(c, hidden, bias=False) + linear(hidden, classes, bias=False)
    return n + linear(c, classes)


def conv_stack_count(config, c_in):
    n, c = 0, c_in
    for item in config:
        if item != "A":
            n += conv(c, item, 3) + bn(item)
            c = item
    return n


# The CIFAR ResNet-18 / ResNet-34 totals (conv+BN+linear, 10 classes) are also the widely
# quoted parameter counts of the non-spiking CIFAR ResNets (11,173,962 and 21,282,122), which
# pins the formula above.
EXPECTED = {
    "resnet18": resnet_count(64, [(64, 2), (128, 2), (256, 2), (512, 2)], None, 10),
    "resnet34": resnet_count(64, [(64, 3), (128, 4), (256, 6), (512, 3)], None, 10),
    "resnet19": resnet_count(128, [(128, 3), (256, 3), (512, 2)], 256, 10),
    "vgg11": conv_stack_count([64, 128, 256, 512, 512, 512, 512, 512], 3) + linear(512, 10, bias=False),
    "vgg13": conv_stack_count([64, 64, 128, 128, 256, 256, 512, 512, 512, 512], 3) + linear(512, 10, bias=False),
    "vgg16": conv_stack_count([64, 64, 128, 128, 256, 256, 256] + [512] * 6, 3)
    + linear(2048, 4096, bias=False) + linear(4096, 4096, bias=False) + linear(4096, 10, bias=False),
    "vggsnn": conv_stack_count([64, 128, 256, 256, 512, 512, 512, 512], 2) + linear(512 * 3 * 3, 10, bias=False),
    "shd_rnn": 700 * 240 + 240 * 240 + linear(240, 20, bias=False),
    "digits_cnn": conv_stack_count([32, 64, 64], 1) + linear(64 * 2 * 2, 10),
    "digits_cnn8": conv_stack_count([32, 32, 32, 64, 64, 64, 64, 64], 1) + linear(64 * 2 * 2, 10),
}


def test_expected_counts_pin_known_numbers():
    assert EXPECTED["resnet18"] == 11_173_962
    assert EXPECTED["resnet34"] == 21_282_122
    assert EXPECTED["resnet19"] == 12_697_994 - 256 - 10  # the biased head would have 12,697,994
    assert EXPECTED["vggsnn"] == 9_268_746 - 10
    assert EXPECTED["shd_rnn"] == 230_400


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts(name):
    model = create_model(name, backend="torch")
    neuron_ids = {id(p) for p in asgl.neuron_parameters(model)}
    weights = sum(p.numel() for p in model.parameters() if id(p) not in neuron_ids)
    assert weights == EXPECTED[name]
    # Plus one decay and one width per LIF layer (layer granularity, both learnable by default).
    assert sum(p.numel() for p in model.parameters()) == weights + 2 * CASES[name][1]


def test_conv_layers_have_no_bias():
    for name in ("resnet18", "vgg11", "vggsnn", "digits_cnn"):
        model = create_model(name, backend="torch")
        assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


# ---- the authors' layout and initialisation ------------------------------------------------------
# Written from the definitions in the authors' model/resnet.py (ResNet, ResNet19, BasicBlock,
# warpBN 'tdbn') and model/vgg.py (VGG with feature_cfg / clasifier_cfg, use_bias False): every
# conv / BN / linear tensor their state_dict() holds, with its shape. LIF layers hold no tensor
# there except trained neuron parameters, which are mapped by layer order (asgl.models.authors).

def _authors_bn(sd, prefix, c):
    for t in ("weight", "bias", "running_mean", "running_var"):
        sd[f"{prefix}.{t}"] = (c,)
    sd[f"{prefix}.num_batches_tracked"] = ()


def authors_resnet(stem, stages, classes, hidden=None, c_in=3):
    sd = {"conv0.0.layer.weight": (stem, c_in, 3, 3)}
    _authors_bn(sd, "conv0.1.layer", stem)
    in_planes = stem
    for s, (planes, blocks) in enumerate(stages, start=1):
        for j in range(blocks):
            stride = 2 if s > 1 and j == 0 else 1
            p = f"layer{s}.{j}"
            sd[f"{p}.conv1.layer.weight"] = (planes, in_planes, 3, 3)
            _authors_bn(sd, f"{p}.bn1.layer", planes)
            sd[f"{p}.conv2.layer.weight"] = (planes, planes, 3, 3)
            _authors_bn(sd, f"{p}.bn2.layer", planes)
            if stride != 1 or in_planes != planes:
                sd[f"{p}.shortcut.0.layer.weight"] = (planes, in_planes, 1, 1)
                _authors_bn(sd, f"{p}.shortcut.1.layer", planes)
            in_planes = planes
    if hidden is None:  # tdLayer(Linear(512, classes)) with its default bias, then Readout
        sd["classifier.0.layer.weight"], sd["classifier.0.layer.bias"] = (classes, in_planes), (classes,)
    else:  # Linear(512, 256, bias=False), LIFLayer, Linear(256, classes, bias=False), Readout
        sd["classifier.0.layer.weight"], sd["classifier.2.layer.weight"] = (hidden, in_planes), (classes, hidden)
    return sd


AUTHORS_FEATURES = {  # their feature_cfg strings ('AA' = adaptive average pool to 1×1)
    "vgg11": [64, "A", 128, 256, "A", 512, 512, "A", 512, "A", 512, 512, "AA"],
    "vgg13": [64, 64, "A", 128, 128, "A", 256, 256, "A", 512, 512, 512, "A", 512, "AA"],
    "vgg16": [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512],
    "vggsnn": [64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"],
}
AUTHORS_CLASSIFIER = {"vgg11": [512], "vgg13": [512], "vgg16": [2048, 4096, 4096], "vggsnn": [4608]}


def authors_vgg(name, classes, c_in, bn_key="layer"):
    sd, pos, c = {}, 0, c_in
    for item in AUTHORS_FEATURES[name]:
        if isinstance(item, str):
            pos += 1
            continue
        sd[f"feature.{pos}.layer.weight"] = (item, c, 3, 3)  # bias=use_bias=False
        _authors_bn(sd, f"feature.{pos + 1}.{bn_key}", item)
        pos, c = pos + 3, item  # conv, BN, LIFLayer
    widths = AUTHORS_CLASSIFIER[name] + [classes]
    for i in range(len(widths) - 1):  # Linear at even positions, a LIFLayer between, the last popped
        sd[f"classifier.{2 * i}.layer.weight"] = (widths[i + 1], widths[i])
    return sd


AUTHORS = {
    "resnet18": lambda: authors_resnet(64, [(64, 2), (128, 2), (256, 2), (512, 2)], 10),
    "resnet34": lambda: authors_resnet(64, [(64, 3), (128, 4), (256, 6), (512, 3)], 10),
    "resnet19": lambda: authors_resnet(128, [(128, 3), (256, 3), (512, 2)], 10, hidden=256),
    "vgg11": lambda: authors_vgg("vgg11", 10, 3),
    "vgg13": lambda: authors_vgg("vgg13", 10, 3),
    "vgg16": lambda: authors_vgg("vgg16", 10, 3),
    "vggsnn": lambda: authors_vgg("vggsnn", 10, 2),
}


@pytest.mark.parametrize("name", sorted(AUTHORS))
def test_state_dict_maps_one_to_one_onto_the_authors(name):
    from asgl.models.authors import authors_key, is_neuron_key

    model = create_model(name, backend="torch")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not is_neuron_key(k)}
    mapped = {authors_key(name, k): shape for k, shape in ours.items()}
    assert len(mapped) == len(ours), "two of our tensors map to one key"
    assert mapped == AUTHORS[name]()


def test_authors_key_dvs_bn_and_errors():
    from asgl.models.authors import authors_key

    model = create_model("vggsnn", backend="torch")
    keys = {authors_key("vggsnn", k, bn_type="") for k in model.state_dict() if ".bn." in k}
    assert keys == set(k for k in authors_vgg("vggsnn", 10, 2, bn_key="bns") if ".bns." in k)
    with pytest.raises(ValueError, match="bn_type"):
        authors_key("vggsnn", "features.0.conv.weight", bn_type="bntt")
    with pytest.raises(ValueError, match="no network 'digits_cnn'"):
        authors_key("digits_cnn", "features.0.conv.weight")
    with pytest.raises(KeyError):
        authors_key("resnet18", "stem.bn_lif.lif.width_param")


def _weights(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg16", "vggsnn"])
def test_vgg_init_is_the_authors_normal_0_5(name):
    torch.manual_seed(0)
    model = create_model(name, backend="torch")
    layers = _weights(model)
    assert all(m.bias is None for m in layers)
    for m in layers:
        w = m.weight.detach().double()
        # N(0, 0.5²): the sample std of n draws is within 5 standard errors (0.5/sqrt(2n)) of 0.5
        assert abs(w.std().item() - 0.5) < 5 * 0.5 / (2 * w.numel()) ** 0.5 + 1e-12, m
        assert abs(w.mean().item()) < 5 * 0.5 / w.numel() ** 0.5, m
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(torch.equal(b.weight, torch.ones_like(b.weight)) for b in bns)
    assert all(torch.equal(b.bias, torch.zeros_like(b.bias)) for b in bns)


@pytest.mark.parametrize("name", ["resnet18", "resnet19"])
def test_resnet_init_is_pytorch_default(name):
    """The authors' ResNets keep PyTorch's default init: kaiming_uniform(a=√5), i.e. U(±1/√fan_in),
    std 1/√(3·fan_in) — far from the VGG's N(0, 0.5)."""
    torch.manual_seed(0)
    model = create_model(name, backend="torch")
    for m in _weights(model):
        w = m.weight.detach().double()
        if w.numel() < 10_000:
            continue
        fan_in = w[0].numel()
        assert w.abs().max().item() <= 1 / fan_in**0.5 + 1e-12
        assert w.std().item() == pytest.approx(1 / (3 * fan_in) ** 0.5, rel=0.05)


def test_resnet19_head_has_no_bias_and_resnet18_head_has_one():
    r19 = create_model("resnet19", backend="torch")
    assert [type(m).__name__ for m in r19.head] == ["SeqToANN", "LIF", "SeqToANN"]
    assert all(m.bias is None for m in _weights(r19.head))
    assert create_model("resnet18", backend="torch").head.module.bias is not None


def test_shd_rnn_has_no_bias_and_non_spiking_readout():
    torch.manual_seed(0)
    model = create_model("shd_rnn", T=4, backend="torch").eval()
    assert [n for n, _ in model.named_parameters() if "bias" in n] == []
    hidden = []
    model.rnn.register_forward_hook(lambda module, args, out: hidden.append(out))
    x = 20.0 * torch.rand(B, 4, 700)  # strong enough input that the hidden layer fires
    with torch.no_grad():
        out = model(x)
    (h,) = hidden
    assert h.shape == (4, B, 240) and 0.0 < (h > 0).float().mean() < 1.0
    assert torch.isin(h, torch.tensor([0.0, 1.0])).all()  # hidden: spikes θ·S with θ = 1
    # The readout is a plain linear map of the spikes at every step, real-valued logits out.
    torch.testing.assert_close(out, h @ model.readout.weight.T)
    assert not torch.isin(out, torch.tensor([0.0, 1.0])).all()


# ---- inputs ---------------------------------------------------------------------------------

def test_static_image_equals_repeated_events():
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_classes=K, T=3, backend="torch").eval()
    x = torch.randn(B, 1, 8, 8)
    events = x.unsqueeze(1).expand(B, 3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(events))


@pytest.mark.parametrize(
    "name, bad, match",
    [
        ("resnet18", torch.randn(B, 3, 8), "rank 3"),
        ("resnet18", torch.randn(B, 1, 8, 8), r"\[B, 3, H, W\]"),
        ("resnet18", torch.randn(B, T + 1, 3, 8, 8), f"T={T}"),
        ("vgg11", torch.randn(B, 3, 8, 8), "at least 16"),
        ("vgg16", torch.randn(B, 3, 64, 64), "32×32"),
        ("vggsnn", torch.randn(B, T, 2, 32, 32), "48"),
        ("vggsnn", torch.randn(B, T, 3, 48, 48), r"\[B, T=2, 2, H, W\]"),
        ("shd_rnn", torch.randn(B, T, 699), r"\[B, T=2, 700\]"),
        ("shd_rnn", torch.randn(T, 700), "rank 2"),
        ("digits_cnn", torch.randn(B, 1, 16, 16), "8×8"),
    ],
)
def test_bad_input_raises(name, bad, match):
    model = create_model(name, T=T, backend="torch")
    with pytest.raises(ValueError, match=match):
        model(bad)


# ---- registry -----------------------------------------------------------------------------

def test_unknown_model_lists_names():
    with pytest.raises(ValueError, match="unknown model 'resnet50'.*digits_cnn.*vggsnn"):
        create_model("resnet50")


@pytest.mark.parametrize("arg", ["num_classes", "T", "in_channels"])
@pytest.mark.parametrize("value", [0, -3, 2.0, True])
def test_bad_model_args(arg, value):
    with pytest.raises(ValueError, match=arg):
        create_model("digits_cnn", **{arg: value})


def test_bad_neuron_kwargs():
    with pytest.raises(ValueError, match="unknown neuron arguments.*thresold"):
        create_model("digits_cnn", thresold=1.0)
    with pytest.raises(ValueError, match="channels is set per layer"):
        create_model("digits_cnn", channels=3)
    # Bad values are caught by the neuron itself, naming the argument.
    with pytest.raises(ValueError, match="width"):
        create_model("digits_cnn", width=-1.0)
    assert set(NEURON_KWARGS) == {
        "decay", "thresh", "reset", "v_reset", "surrogate", "width", "learn_width", "width_granularity",
        "learn_decay", "learn_thresh", "p", "min_slope", "backend",
    }


def test_defaults_and_overrides():
    assert (create_model("vggsnn").T, create_model("vggsnn").in_channels) == (10, 2)
    shd = create_model("shd_rnn")
    assert (shd.T, shd.num_classes, shd.in_channels) == (250, 20, 700)
    m = create_model("resnet18", num_classes=100, T=6, in_channels=1)
    assert (m.T, m.num_classes, m.in_channels) == (6, 100, 1)
    assert m.head.module.out_features == 100
    assert m.stem.conv.in_channels == 1


def test_register_model_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        asgl.register_model("resnet18")(lambda **kw: None)
