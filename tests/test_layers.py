"""Time-folding layers, batch norm over T×B, and the losses on per-step logits (plain CPU)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asgl.layers import (
    SeqToANN,
    TimeBatchNorm1d,
    TimeBatchNorm2d,
    conv_bn,
    fold_time,
    image_sequence,
    mean_ce_loss,
    mean_over_time,
    tet_loss,
    unfold_time,
)


def test_fold_unfold_round_trip_and_order():
    x_seq = torch.randn(3, 5, 2, 4, 4)
    x = fold_time(x_seq)
    assert x.shape == (15, 2, 4, 4)
    # Row t·B + b holds step t of sample b.
    for t in range(3):
        for b in range(5):
            assert torch.equal(x[t * 5 + b], x_seq[t, b])
    assert torch.equal(unfold_time(x, 3), x_seq)
    assert x.data_ptr() == x_seq.data_ptr()  # a view, no copy


def test_fold_unfold_errors():
    with pytest.raises(ValueError, match="x_seq"):
        fold_time(torch.randn(4))
    with pytest.raises(ValueError, match="divisible by T=4"):
        unfold_time(torch.randn(6, 3), 4)
    with pytest.raises(ValueError, match="T"):
        unfold_time(torch.randn(6, 3), 0)


def test_seq_to_ann_equals_per_step_application():
    torch.manual_seed(0)
    layer = SeqToANN(nn.Conv2d(2, 3, 3, padding=1), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(12, 5))
    x_seq = torch.randn(4, 2, 2, 4, 4)
    y_seq = layer(x_seq)
    assert y_seq.shape == (4, 2, 5)
    per_step = torch.stack([layer.module(x_seq[t]) for t in range(4)])
    torch.testing.assert_close(y_seq, per_step)
    with pytest.raises(ValueError, match="at least one module"):
        SeqToANN()


def _manual_bn(x_seq, weight, bias, eps, scale=1.0):
    """BN with statistics over every dim except the channel dim 2, written out by hand."""
    dims = [d for d in range(x_seq.dim()) if d != 2]
    mean = x_seq.mean(dim=dims, keepdim=True)
    var = x_seq.var(dim=dims, keepdim=True, unbiased=False)
    shape = [1, 1, -1] + [1] * (x_seq.dim() - 3)
    return weight.view(shape) * scale * (x_seq - mean) / torch.sqrt(var + eps) + bias.view(shape)


def test_time_batch_norm_2d_is_bn_over_t_times_b():
    torch.manual_seed(1)
    x_seq = torch.randn(3, 4, 5, 6, 6) * 2 + 1
    bn = TimeBatchNorm2d(5)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    ref = nn.BatchNorm2d(5)
    ref.load_state_dict({k: v for k, v in bn.state_dict().items()})
    y_seq = bn(x_seq)
    torch.testing.assert_close(y_seq, unfold_time(ref(fold_time(x_seq)), 3))
    torch.testing.assert_close(y_seq, _manual_bn(x_seq, bn.weight, bn.bias, bn.eps))
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    # Statistics over T·B differ from per-step statistics when the steps differ.
    x_seq[1] += 3.0
    per_step = torch.stack([F.batch_norm(x_seq[t], None, None, bn.weight, bn.bias, True) for t in range(3)])
    assert not torch.allclose(bn(x_seq), per_step, atol=1e-2)


def test_time_batch_norm_1d_both_layouts():
    torch.manual_seed(2)
    bn = TimeBatchNorm1d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
    for shape in [(3, 5, 4), (3, 5, 4, 7)]:
        x_seq = torch.randn(shape) * 3 - 1
        torch.testing.assert_close(bn(x_seq), _manual_bn(x_seq, bn.weight, bn.bias, bn.eps))
    with pytest.raises(ValueError, match=r"TimeBatchNorm1d\(4\)"):
        bn(torch.randn(3, 5, 3))
    with pytest.raises(ValueError, match="TimeBatchNorm2d"):
        TimeBatchNorm2d(4)(torch.randn(3, 5, 4, 2))


def test_threshold_scaled_batch_norm():
    torch.manual_seed(3)
    x_seq = torch.randn(2, 3, 4, 5, 5) * 2 + 0.5
    scale = 0.5 / math.sqrt(2)  # α = 1/√2, V_th = 0.5
    bn = TimeBatchNorm2d(4, threshold_scale=scale)
    plain = TimeBatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    plain.load_state_dict(bn.state_dict())
    y_seq = bn(x_seq)
    torch.testing.assert_close(y_seq, _manual_bn(x_seq, bn.weight, bn.bias, bn.eps, scale))
    plain(x_seq)
    # The scale acts after normalisation: running statistics are the same as without it.
    torch.testing.assert_close(bn.running_mean, plain.running_mean)
    torch.testing.assert_close(bn.running_var, plain.running_var)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    plain.eval()
    shape = (1, 1, -1, 1, 1)
    expected = (plain(x_seq) - bn.bias.view(shape)) * scale + bn.bias.view(shape)
    torch.testing.assert_close(bn(x_seq), expected)
    # Gradients reach the affine parameters through the folded-in scale.
    bn.train()
    bn(x_seq).pow(2).sum().backward()
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    no_affine = TimeBatchNorm2d(4, affine=False, threshold_scale=2.0)
    torch.testing.assert_close(no_affine(x_seq), 2.0 * _manual_bn(x_seq, torch.ones(4), torch.zeros(4), 1e-5))
    with pytest.raises(ValueError, match="threshold_scale"):
        TimeBatchNorm2d(4, threshold_scale=0.0)


@pytest.mark.parametrize("threshold_scale", [None, 0.7])
def test_per_step_batch_norm_is_one_batch_norm_applied_at_every_step(threshold_scale):
    """``statistics="per_step"``: each step normalised with its own batch statistics, γ, β shared,
    running estimates updated once per step in order (the authors' TemporalBN: one BatchNorm2d
    called at each step); eval uses the running estimates, as folded BN does."""
    from asgl.layers import set_bn_statistics_

    torch.manual_seed(5)
    x_seq = torch.randn(3, 4, 2, 5, 5) * torch.tensor([1.0, 3.0, 0.5]).view(3, 1, 1, 1, 1) + 0.4
    bn = TimeBatchNorm2d(2, threshold_scale=threshold_scale, statistics="per_step")
    ref = nn.BatchNorm2d(2)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.8, 1.3]))
        bn.bias.copy_(torch.tensor([0.1, -0.2]))
        ref.weight.copy_(bn.weight * (threshold_scale or 1.0))
        ref.bias.copy_(bn.bias)
    y = bn(x_seq)
    torch.testing.assert_close(y, torch.stack([ref(x) for x in x_seq]))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(ref, name))
    folded = TimeBatchNorm2d(2, threshold_scale=threshold_scale)
    folded.load_state_dict(bn.state_dict())
    assert not torch.allclose(folded(x_seq), y)  # the steps' statistics differ from the folded ones
    folded.load_state_dict(bn.state_dict())
    bn.eval()
    folded.eval()
    torch.testing.assert_close(bn(x_seq), folded(x_seq))
    model = nn.Sequential(TimeBatchNorm2d(2), nn.Sequential(TimeBatchNorm1d(2)))
    assert [m.statistics for m in set_bn_statistics_(model, "per_step").modules() if hasattr(m, "statistics")] \
        == ["per_step", "per_step"]
    with pytest.raises(ValueError, match="statistics must be one of"):
        TimeBatchNorm2d(2, statistics="step")
    with pytest.raises(ValueError, match="statistics must be one of"):
        set_bn_statistics_(model, "steps")


def test_conv_bn_shapes_and_no_bias():
    layer = conv_bn(3, 8, 3, 2)
    conv = layer.module[0]
    assert conv.bias is None and conv.stride == (2, 2) and conv.padding == (1, 1)
    assert layer(torch.randn(2, 2, 3, 8, 8)).shape == (2, 2, 8, 4, 4)


def test_image_sequence():
    images = torch.randn(2, 3, 4, 4)
    x_seq = image_sequence(images, 3, 3)
    assert x_seq.shape == (3, 2, 3, 4, 4)
    for t in range(3):
        assert torch.equal(x_seq[t], images)
    events = torch.randn(2, 3, 2, 4, 4)  # [B, T, C, H, W]
    e_seq = image_sequence(events, 3, 2)
    assert torch.equal(e_seq[1, 0], events[0, 1])
    with pytest.raises(ValueError, match="rank 3"):
        image_sequence(torch.randn(3, 4, 4), 3, 3)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        image_sequence(torch.randn(2, 1, 4, 4), 3, 3)
    with pytest.raises(ValueError, match="T=4"):
        image_sequence(events, 4, 2)


def test_mean_over_time():
    y_seq = torch.randn(3, 2, 5)
    torch.testing.assert_close(mean_over_time(y_seq), (y_seq[0] + y_seq[1] + y_seq[2]) / 3)
    with pytest.raises(ValueError, match="y_seq"):
        mean_over_time(torch.randn(5))


def _ce(logits, label):
    """-log softmax(logits)[label] for a list of floats."""
    m = max(logits)
    return -(logits[label] - m - math.log(sum(math.exp(v - m) for v in logits)))


def test_tet_loss_against_hand_computation():
    o = [  # [T=2][B=2][K=3]
        [[1.0, -0.5, 2.0], [0.3, 0.3, -1.0]],
        [[0.0, 1.5, 0.5], [-2.0, 1.0, 0.25]],
    ]
    y = [2, 1]
    lam = 0.2
    ce = sum(_ce(o[t][b], y[b]) for t in range(2) for b in range(2)) / 4  # mean over t of batch means
    mse = sum((v - 1.0) ** 2 for step in o for row in step for v in row) / 12  # over all T·B·K entries
    expected = (1 - lam) * ce + lam * mse
    got = tet_loss(torch.tensor(o, dtype=torch.float64), torch.tensor(y), lam=lam)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # λ = 0 is the per-step cross-entropy alone; φ moves the target of the squared error.
    assert tet_loss(torch.tensor(o, dtype=torch.float64), torch.tensor(y), lam=0.0).item() == pytest.approx(ce)
    mse_phi = sum((v - 0.5) ** 2 for step in o for row in step for v in row) / 12
    got_phi = tet_loss(torch.tensor(o, dtype=torch.float64), torch.tensor(y), lam=lam, phi=0.5)
    assert got_phi.item() == pytest.approx((1 - lam) * ce + lam * mse_phi, rel=1e-12)


def test_tet_loss_default_lambda_and_soft_targets():
    torch.manual_seed(4)
    o = torch.randn(3, 4, 5, dtype=torch.float64)
    y = torch.tensor([0, 4, 2, 2])
    per_step = torch.stack([F.cross_entropy(o[t], y) for t in range(3)]).mean()
    expected = (1 - 1e-3) * per_step + 1e-3 * F.mse_loss(o, torch.ones_like(o))
    torch.testing.assert_close(tet_loss(o, y), expected)
    soft = F.one_hot(y, 5).to(torch.float64)
    torch.testing.assert_close(tet_loss(o, soft), expected)


def test_mean_ce_loss():
    o = [[[1.0, -0.5, 2.0], [0.3, 0.3, -1.0]], [[0.0, 1.5, 0.5], [-2.0, 1.0, 0.25]]]
    y = [2, 1]
    mean_logits = [[(o[0][b][k] + o[1][b][k]) / 2 for k in range(3)] for b in range(2)]
    expected = sum(_ce(mean_logits[b], y[b]) for b in range(2)) / 2
    got = mean_ce_loss(torch.tensor(o, dtype=torch.float64), torch.tensor(y))
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss", [tet_loss, mean_ce_loss])
def test_loss_shape_errors(loss):
    o = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"logits_seq must be \[T, B, K\]"):
        loss(torch.randn(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="B=3"):
        loss(o, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        loss(o, torch.zeros(3))
    with pytest.raises(ValueError, match=r"\[B, K\] = \[3, 4\]"):
        loss(o, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="target"):
        loss(o, torch.zeros(3, 4, 1))


def test_tet_loss_lambda_error():
    with pytest.raises(ValueError, match="lam"):
        tet_loss(torch.randn(2, 3, 4), torch.zeros(3, dtype=torch.long), lam=1.5)
