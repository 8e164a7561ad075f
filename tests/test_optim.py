"""Parameter groups and optimizers of the ASGL recipe (plain CPU)."""

import pytest
import torch
from torch import nn

import asgl
from asgl.optim import build_optimizers, neuron_parameters, split_parameters, weight_param_groups


def _ids(params):
    return {id(p) for p in params}


def _names(model, params):
    ids = _ids(params)
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("name", ["resnet19", "vggsnn", "shd_rnn", "digits_cnn8"])
def test_groups_partition_the_parameters(name):
    model = asgl.create_model(name, learn_thresh=True, backend="torch")
    decayed, undecayed, neuron = split_parameters(model)
    groups = [_ids(decayed), _ids(undecayed), _ids(neuron)]
    assert sum(len(g) for g in groups) == len(decayed) + len(undecayed) + len(neuron)  # no duplicates
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert groups[0] | groups[1] | groups[2] == _ids(model.parameters())


def test_which_group_each_kind_lands_in():
    model = asgl.create_model("resnet19", learn_thresh=True, backend="torch")
    decayed, undecayed, neuron = split_parameters(model)
    for module_name, module in model.named_modules():
        prefix = module_name + "." if module_name else ""
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert prefix + "weight" in _names(model, decayed)
            if module.bias is not None:
                assert prefix + "bias" in _names(model, undecayed)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert {prefix + "weight", prefix + "bias"} <= _names(model, undecayed)
        elif isinstance(module, asgl.LIF):
            assert {prefix + "decay_logit", prefix + "width_param", prefix + "thresh"} <= _names(model, neuron)
    n_lif = len(asgl.neurons(model))
    assert len(neuron) == 3 * n_lif


def test_recurrent_weights_are_decayed_and_neuron_params_separate():
    model = asgl.create_model("shd_rnn", backend="torch")
    decayed, undecayed, neuron = split_parameters(model)
    assert _names(model, decayed) == {"rnn.input_weight", "rnn.recurrent_weight", "readout.weight"}
    assert undecayed == []
    assert _names(model, neuron) == {"rnn.decay_logit", "rnn.width_param"}
    assert sum(p.numel() for p in decayed) == 230_400


def test_fixed_neuron_params_are_buffers_and_not_grouped():
    model = asgl.create_model("digits_cnn", learn_width=False, learn_decay=False, backend="torch")
    assert neuron_parameters(model) == []
    weight_opt, neuron_opt = build_optimizers(model)
    assert neuron_opt is None
    assert _ids(p for g in weight_opt.param_groups for p in g["params"]) == _ids(model.parameters())


def test_weight_param_groups_decay_settings():
    model = asgl.create_model("digits_cnn", backend="torch")
    groups = weight_param_groups(model, 5e-4)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    assert all(p.dim() >= 2 for p in groups[0]["params"])
    assert all(p.dim() == 1 for p in groups[1]["params"])
    with pytest.raises(ValueError, match="weight_decay"):
        weight_param_groups(model, -1.0)


class _Custom(nn.Module):
    """Shared weights, a 1-D parameter outside a norm layer, and a LayerNorm."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.scale = nn.Parameter(torch.ones(4))
        self.norm = nn.LayerNorm(4)
        self.lif = asgl.LIF(backend="torch")


def test_shared_and_unusual_parameters():
    model = _Custom()
    decayed, undecayed, neuron = split_parameters(model)
    assert _names(model, decayed) == {"a.weight"}
    assert _names(model, undecayed) == {"a.bias", "b.bias", "scale", "norm.weight", "norm.bias"}
    assert len(decayed) == 1
    assert _names(model, neuron) == {"lif.decay_logit", "lif.width_param"}


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_build_optimizers(name):
    torch.manual_seed(0)
    model = asgl.create_model("digits_cnn", T=2, backend="torch")
    weight_opt, neuron_opt = build_optimizers(model, name, lr=0.05, momentum=0.8, weight_decay=1e-3)
    assert isinstance(weight_opt, torch.optim.SGD if name == "sgd" else torch.optim.Adam)
    assert [g["weight_decay"] for g in weight_opt.param_groups] == [1e-3, 0.0]
    assert all(g["lr"] == 0.05 for g in weight_opt.param_groups)
    if name == "sgd":
        assert all(g["momentum"] == 0.8 for g in weight_opt.param_groups)
    assert isinstance(neuron_opt, torch.optim.Adam)
    (group,) = neuron_opt.param_groups
    assert group["lr"] == 3e-4 and group["weight_decay"] == 0.0
    weight_ids = _ids(p for g in weight_opt.param_groups for p in g["params"])
    assert weight_ids.isdisjoint(_ids(group["params"]))
    assert weight_ids | _ids(group["params"]) == _ids(model.parameters())

    # One step of each moves its own parameters.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(torch.randn(4, 1, 8, 8))
    asgl.mean_ce_loss(out, torch.tensor([0, 1, 2, 3])).backward()
    weight_opt.step()
    neuron_opt.step()
    for n, p in model.named_parameters():
        assert not torch.equal(p, before[n]), n


def test_build_optimizers_errors():
    model = asgl.create_model("digits_cnn", backend="torch")
    with pytest.raises(ValueError, match="name"):
        build_optimizers(model, "rmsprop")
    with pytest.raises(ValueError, match="neuron_lr"):
        build_optimizers(model, neuron_lr=0.0)
    with pytest.raises(ValueError, match="momentum"):
        build_optimizers(model, momentum=1.5)
    with pytest.raises(ValueError, match="no weights"):
        build_optimizers(asgl.LIF(backend="torch"))
