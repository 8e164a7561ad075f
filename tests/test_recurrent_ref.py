"""The recurrent ASGL LIF reference (``asgl.kernels.rlif_ref``) and ``asgl.RecurrentLIF`` (torch backend)."""

import math

import pytest
import torch

import asgl
from asgl.kernels.lif_ref import lif_ref, spike_mask_ref, width_param_from_width
from asgl.kernels.rlif_ref import recurrent_lif_ref


def _params(surrogate="sigmoid", width=1.0):
    return (
        torch.tensor(0.0, dtype=torch.float64),  # λ = 0.5
        torch.tensor(width_param_from_width(width, surrogate), dtype=torch.float64),
    )


def test_zero_recurrence_equals_feed_forward_neuron():
    g = torch.Generator().manual_seed(0)
    wx = torch.randn(6, 3, 5, generator=g, dtype=torch.float64) + 0.6
    dl, wp = _params()
    mask = spike_mask_ref(wx.shape, 0.4, generator=g)
    rec = torch.zeros(5, 5, dtype=torch.float64)
    for reset in ("hard", "soft"):
        torch.testing.assert_close(
            recurrent_lif_ref(wx, rec, dl, wp, 0.9, reset=reset, p=0.4, mask=mask),
            lif_ref(wx, dl, wp, 0.9, reset=reset, p=0.4, mask=mask),
            rtol=0, atol=0,
        )


def test_two_units_by_hand():
    # unit 0 fires at t=0 and excites unit 1 by R[1,0] = 0.8 at t=1; pure spikes, hard reset
    # t0: u = (1.5, 0.1) → o = (1, 0); v = (0, 0.1)
    # t1: u = (0 + 0, 0.05 + 0.3 + 0.8·1) = (0, 1.15) → o = (0, 1)
    # t2: u = (0 + 0, 0 + 0 + 0) → o = (0, 0)   (R[0,1] = 0)
    wx = torch.tensor([[1.5, 0.1], [0.0, 0.3], [0.0, 0.0]], dtype=torch.float64).reshape(3, 1, 2)
    rec = torch.tensor([[0.0, 0.0], [0.8, 0.0]], dtype=torch.float64)
    dl, wp = _params()
    y = recurrent_lif_ref(wx, rec, dl, wp, 1.0, p=0.0)
    assert y.reshape(3, 2).tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]


def test_recurrent_gradients_float64_analog_mode():
    # p = 1: the function is smooth (sigmoid), so autograd must match finite differences exactly
    torch.autograd.gradcheck(
        lambda wx, rec, dl, wp, th: recurrent_lif_ref(wx, rec, dl, wp, th, p=1.0, reset="soft"),
        (
            (torch.randn(4, 2, 3, dtype=torch.float64) + 0.5).requires_grad_(),
            (torch.randn(3, 3, dtype=torch.float64) * 0.3).requires_grad_(),
            torch.tensor(0.2, dtype=torch.float64, requires_grad=True),
            torch.tensor(math.log(2.0), dtype=torch.float64).exp().requires_grad_(),
            torch.tensor(0.8, dtype=torch.float64, requires_grad=True),
        ),
    )


def test_recurrent_module_shapes_parameters_and_errors():
    m = asgl.RecurrentLIF(7, 4, p=0.2, width_granularity="channel", backend="torch")
    assert m.input_weight.shape == (4, 7) and m.recurrent_weight.shape == (4, 4)
    assert m.width_param.shape == (4,)
    x = torch.randn(5, 2, 7, requires_grad=True)
    y = m(x)
    assert y.shape == (5, 2, 4)
    y.sum().backward()
    assert m.recurrent_weight.grad is not None and m.input_weight.grad is not None
    with pytest.raises(ValueError, match=r"\[T, B, 7\]"):
        m(torch.randn(5, 2, 6))
    with pytest.raises(ValueError, match="recurrent_weight"):
        asgl.functional.recurrent_lif(
            torch.randn(2, 1, 3), torch.zeros(2, 2), torch.tensor(0.0), torch.tensor(1.0), 1.0
        )
