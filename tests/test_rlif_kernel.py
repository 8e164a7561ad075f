"""The fused recurrent LIF kernels (``asgl.kernels.rlif``) against ``asgl.kernels.rlif_ref.recurrent_lif_ref``.

Runs compiled on a CUDA device, or under ``TRITON_INTERPRET=1`` on CPU tensors (set by conftest),
at tiny ragged shapes: H = 23 (not a power of two, two K-chunks, the second partial), odd T, one
batch row, and B = 17 (two programs, the second with one row); on a GPU also at the SHD size
(T = 250, H = 240) in float32.

Comparison rule. Values and gradients: ``|fused - ref32| <= 2·|ref_lowp - ref32| + atol`` with the
noise mask the kernel drew replayed through both references (for float32 inputs ref_lowp is
ref32, so this is ``atol``, a few fp32 ulps of the quantity's scale). Spikes are a step function and
the recurrence spreads a flipped spike to the whole batch row from then on (rows never interact),
so: the first spike that differs in a row must sit where the float32 reference has
``|u - θ| < ε``; such rows (and rows where ref_lowp itself flips) are left out of the comparison by
zeroing their upstream gradient, and at most half the rows may be left out.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import nan_poison

import asgl
import asgl.kernels.rlif as rlif_mod
import asgl.kernels.rlif_ref as rlif_ref_module
from asgl.kernels.lif_ref import lif_step_ref, width_param_from_width
from asgl.kernels.rlif import recurrent_lif_fused
from asgl.kernels.rlif_ref import recurrent_lif_ref


@pytest.fixture(autouse=True)
def nan_poisoned_outputs(monkeypatch):
    """Outputs the op allocates start as NaN, so an element the kernel never writes fails a test."""
    nan_poison(monkeypatch, rlif_mod, "_empty")


ATOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}  # × the quantity's scale
EPS_U = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}  # |u - θ| where spikes may flip


def make_inputs(T, B, H, *, dtype=torch.float32, device="cpu", surrogate="sigmoid", channel=False,
                reset="hard", seed=0):
    """Inputs scaled for firing rates of 5-50%: ``wx ~ N(0.45, 0.6²)``, ``R ~ N(0, 0.5²/H)``."""
    g = torch.Generator().manual_seed(seed)
    wx = (torch.randn(T, B, H, generator=g) * 0.6 + 0.45).to(dtype)
    rec = torch.randn(H, H, generator=g) * (0.5 / math.sqrt(H))
    decay_logit = torch.tensor(0.4)
    base = width_param_from_width(0.7, surrogate)
    width = base + 0.2 * torch.rand(H if channel else (), generator=g) if channel else torch.tensor(base)
    if reset == "soft":
        wx = (wx.float() * 0.8).to(dtype)
    to = dict(device=device)
    return wx.to(**to), rec.to(**to), decay_logit.to(**to), width.to(**to).float()


class RecordU:
    """Wraps the reference's ``lif_step_ref`` to record every step's membrane ``u`` (float32)."""

    def __init__(self):
        self.us = []

    def __call__(self, u, *args):
        self.us.append(u.detach().float())
        return lif_step_ref(u, *args)


def run(fn, wx, rec, decay_logit, width, thresh, gy, *, learn, **kwargs):
    """``y`` and the gradients of ``Σ y·gy`` w.r.t. wx, R and the learnable neuron parameters."""
    wx = wx.detach().clone().requires_grad_()
    rec = rec.detach().clone().requires_grad_()
    decay_logit = decay_logit.detach().clone().requires_grad_("decay" in learn)
    width = width.detach().clone().requires_grad_("width" in learn)
    if isinstance(thresh, torch.Tensor):
        thresh = thresh.detach().clone().requires_grad_("thresh" in learn)
    out = fn(wx, rec, decay_logit, width, thresh, **kwargs)
    y = out[0] if isinstance(out, tuple) else out
    leaves = [wx, rec] + [t for t in (decay_logit, width, thresh) if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad((y.float() * gy).sum(), leaves)
    return out, [g.float() for g in grads]


def spike_mode_fires(y, mask):
    """Per element: spike mode and fired (``y = θ``), spike mode and silent, or analog (-1)."""
    fired = (y != 0).to(torch.int8)
    return torch.where(mask, fired, torch.full_like(fired, -1))


def check_against_reference(T, B, H, *, dtype=torch.float32, device="cpu", reset="hard", v_reset=0.0,
                            surrogate="sigmoid", channel=False, learn=("decay", "width"), thresh=1.0,
                            p=0.0, training=True, seed=0, monkeypatch):
    wx, rec, decay_logit, width = make_inputs(T, B, H, dtype=dtype, device=device, surrogate=surrogate,
                                              channel=channel, reset=reset, seed=seed)
    theta = torch.tensor(thresh, device=device) if "thresh" in learn else thresh
    opts = dict(reset=reset, v_reset=v_reset, surrogate=surrogate, p=p, training=training)
    gy = torch.randn(T, B, H, generator=torch.Generator().manual_seed(seed + 1)).to(device)

    (y_f, mask), _ = run(recurrent_lif_fused, wx, rec, decay_logit, width, theta, gy, learn=learn,
                         **opts, seed=1234 + seed, return_mask=True)
    if not training:
        mask = torch.ones_like(mask)
    ref_opts = dict(opts, mask=mask)
    rec_u = RecordU()
    with monkeypatch.context() as patch:
        patch.setattr(rlif_ref_module, "lif_step_ref", rec_u)
        y_32, _ = run(recurrent_lif_ref, wx.float(), rec, decay_logit, width, theta, gy, learn=learn, **ref_opts)
    u_32 = torch.stack(rec_u.us)
    y_lp, _ = run(recurrent_lif_ref, wx, rec, decay_logit, width, theta, gy, learn=learn, **ref_opts)

    # firing rate of the test input: the fraction of u >= θ in the float32 reference
    rate = (u_32 >= thresh).float().mean().item()
    assert 0.05 <= rate <= 0.5, f"firing rate {rate:.3f} of the test input is outside [5%, 50%]"
    fires = spike_mode_fires(y_32, mask)

    # spike decisions: the first difference per row must be at a near-threshold element
    near = (u_32 - thresh).abs() < EPS_U[dtype]
    assert near.float().mean().item() <= 0.1, "too many near-threshold elements for a meaningful test"
    diff_f = spike_mode_fires(y_f.float(), mask) != fires
    diff_lp = spike_mode_fires(y_lp.float(), mask) != fires
    excluded = torch.zeros(B, dtype=torch.bool, device=device)
    for b in range(B):
        steps = diff_f[:, b].any(dim=1).nonzero()
        if len(steps):
            t0 = steps[0].item()
            assert near[t0, b][diff_f[t0, b]].all(), (
                f"row {b}: spike flipped at t={t0} where the reference is not within {EPS_U[dtype]} of θ")
            excluded[b] = True
        excluded[b] |= diff_lp[:, b].any()
    assert excluded.float().mean().item() <= 0.5, f"{excluded.sum().item()} of {B} rows diverged"
    keep = ~excluded

    gy_kept = gy * keep[None, :, None]
    (_, _), g_f = run(recurrent_lif_fused, wx, rec, decay_logit, width, theta, gy_kept, learn=learn,
                      **opts, seed=1234 + seed, return_mask=True)
    _, g_32 = run(recurrent_lif_ref, wx.float(), rec, decay_logit, width, theta, gy_kept, learn=learn, **ref_opts)
    _, g_lp = run(recurrent_lif_ref, wx, rec, decay_logit, width, theta, gy_kept, learn=learn, **ref_opts)

    names = ["y", "d wx", "d R"] + [n for n in ("decay", "width", "thresh") if n in learn]
    fused = [y_f.float()[:, keep]] + g_f
    ref32 = [y_32[:, keep]] + g_32
    reflp = [y_lp.float()[:, keep]] + g_lp
    assert len(fused) == len(names) == len(ref32)
    for name, a, r32, rlp in zip(names, fused, ref32, reflp):
        scale = max(1.0, r32.abs().max().item())
        bound = 2 * (rlp - r32).abs() + ATOL[dtype] * scale
        err = (a - r32).abs()
        assert bool((err <= bound).all()), (
            f"{name}: max excess {(err - bound).max().item():.3g} (max err {err.max().item():.3g}, "
            f"scale {scale:.3g}) {dtype}")
    return mask


OPTION_CASES = [
    # reset, v_reset, surrogate, channel, learn, p, training
    ("hard", 0.0, "sigmoid", False, ("decay", "width"), 0.0, True),
    ("hard", 0.2, "rectangle", True, ("decay", "width", "thresh"), 0.3, True),
    ("soft", 0.0, "sigmoid", True, ("width", "thresh"), 0.5, True),
    ("soft", 0.0, "rectangle", False, ("decay", "thresh"), 1.0, True),
    ("hard", -0.1, "sigmoid", True, ("decay", "width", "thresh"), 0.3, False),
    ("soft", 0.0, "rectangle", False, (), 0.0, False),
]


@pytest.mark.interpret
@pytest.mark.parametrize("reset,v_reset,surrogate,channel,learn,p,training", OPTION_CASES)
def test_matches_reference_every_option(device, monkeypatch, reset, v_reset, surrogate, channel, learn, p, training):
    check_against_reference(7, 5, 23, device=device, reset=reset, v_reset=v_reset, surrogate=surrogate,
                            channel=channel, learn=learn, p=p, training=training, monkeypatch=monkeypatch)


# Low precision with the sigmoid only: the rectangle's derivative is a second step function (k inside
# the window, 0 outside), and at bf16 rounding (|Δu| ~ 1e-2 after a few steps) window-edge flips
# would leave out most rows. Its arithmetic runs in fp32 registers for every storage dtype, so the
# float32 cases above cover it; what changes with the dtype (storage rounding of u, wx, y, du, o
# and the fp16 operands of the forward product) is the same for both surrogates.
LOWP_CASES = [
    ("hard", 0.2, "sigmoid", True, ("decay", "width", "thresh"), 0.3, True),
    ("soft", 0.0, "sigmoid", False, ("decay", "width", "thresh"), 0.5, True),
]


@pytest.mark.interpret
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", [0, 1])
def test_matches_reference_low_precision(device, monkeypatch, dtype, case):
    reset, v_reset, surrogate, channel, learn, p, training = LOWP_CASES[case]
    check_against_reference(7, 8, 23, dtype=dtype, device=device, reset=reset, v_reset=v_reset,
                            surrogate=surrogate, channel=channel, learn=learn, p=p, training=training,
                            seed=case, monkeypatch=monkeypatch)


@pytest.mark.interpret
@pytest.mark.parametrize("T,B,H", [(1, 1, 23), (8, 1, 16), (5, 17, 23), (4, 2, 40)])
def test_ragged_shapes(device, monkeypatch, T, B, H):
    check_against_reference(T, B, H, device=device, surrogate="rectangle", channel=True,
                            learn=("decay", "width", "thresh"), p=0.3, monkeypatch=monkeypatch)


@pytest.mark.interpret
def test_mask_keying_matches_feed_forward_kernel(device):
    """Same (seed, t, b·H + h) keying as asgl.kernels.lif: equal masks for equal shapes and seeds."""
    from asgl.kernels.lif import lif_fused

    wx, rec, decay_logit, width = make_inputs(6, 3, 23, device=device)
    with torch.no_grad():
        _, m_rec = recurrent_lif_fused(wx, rec, decay_logit, width, 1.0, p=0.3, seed=77, return_mask=True)
        _, m_ff = lif_fused(wx, decay_logit, width, 1.0, p=0.3, seed=77, return_mask=True)
        _, m_other = recurrent_lif_fused(wx, rec, decay_logit, width, 1.0, p=0.3, seed=78, return_mask=True)
        seed = torch.full((1,), 77, dtype=torch.int64, device=device)  # what asgl.functional.draw_seed gives
        _, m_tensor_seed = recurrent_lif_fused(wx, rec, decay_logit, width, 1.0, p=0.3, seed=seed, return_mask=True)
    assert torch.equal(m_rec, m_ff) and torch.equal(m_rec, m_tensor_seed)
    assert not torch.equal(m_rec, m_other)
    frac = m_rec.float().mean().item()  # 414 draws of Bernoulli(0.7): ±4.5 sd is ±0.10
    assert 0.6 <= frac <= 0.8


@pytest.mark.interpret
def test_deterministic_and_eval_needs_no_state(device):
    wx, rec, decay_logit, width = make_inputs(5, 17, 23, device=device, channel=True)
    gy = torch.randn(5, 17, 23).to(device)
    opts = dict(reset="soft", surrogate="sigmoid", p=0.4, training=True, seed=3)
    theta = torch.tensor(1.0, device=device)
    learn = ("decay", "width", "thresh")
    y1, g1 = run(recurrent_lif_fused, wx, rec, decay_logit, width, theta, gy, learn=learn, **opts)
    y2, g2 = run(recurrent_lif_fused, wx, rec, decay_logit, width, theta, gy, learn=learn, **opts)
    assert torch.equal(y1, y2) and all(torch.equal(a, b) for a, b in zip(g1, g2))
    with torch.no_grad():
        y_eval = recurrent_lif_fused(wx, rec, decay_logit, width, 1.0, training=False, reset="soft")
    torch.testing.assert_close(
        y_eval, recurrent_lif_ref(wx, rec, decay_logit, width, 1.0, training=False, reset="soft"),
        rtol=0, atol=1e-5)


@pytest.mark.smoke
@pytest.mark.interpret
def test_recurrent_module_triton_backend_matches_torch_backend(device):
    torch.manual_seed(0)
    kwargs = dict(width_granularity="channel", learn_thresh=True, reset="hard", surrogate="sigmoid", p=0.0)
    m_torch = asgl.RecurrentLIF(11, 23, backend="torch", **kwargs).to(device)
    m_triton = asgl.RecurrentLIF(11, 23, backend="triton", **kwargs).to(device)
    m_triton.load_state_dict(m_torch.state_dict())
    with torch.no_grad():
        m_torch.input_weight.mul_(2.0)
        m_triton.input_weight.copy_(m_torch.input_weight)
    x = (torch.rand(6, 4, 11) < 0.3).float().to(device)
    gy = torch.randn(6, 4, 23).to(device)
    outs = []
    for m in (m_torch, m_triton):
        y = m(x)
        (y * gy).sum().backward()
        outs.append((y.detach(), {n: q.grad for n, q in m.named_parameters()}))
    (y_t, g_t), (y_k, g_k) = outs
    rate = (y_t != 0).float().mean().item()
    assert 0.05 <= rate <= 0.5, f"firing rate {rate:.3f}"
    torch.testing.assert_close(y_k, y_t, rtol=0, atol=1e-5)
    assert set(g_t) == set(g_k) == {"decay_logit", "width_param", "thresh", "input_weight", "recurrent_weight"}
    for name in g_t:
        torch.testing.assert_close(g_k[name], g_t[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.interpret
def test_bad_arguments_raise_value_errors(device):
    wx, rec, decay_logit, width = make_inputs(3, 2, 5, device=device)
    with pytest.raises(ValueError, match="recurrent_weight"):
        recurrent_lif_fused(wx, rec[:4, :4], decay_logit, width, 1.0)
    with pytest.raises(ValueError, match="wx_seq"):
        recurrent_lif_fused(wx[0], rec, decay_logit, width, 1.0)
    with pytest.raises(ValueError, match="wx_seq"):
        recurrent_lif_fused(wx.double(), rec, decay_logit, width, 1.0)
    with pytest.raises(ValueError, match="width_param"):
        recurrent_lif_fused(wx, rec, decay_logit, torch.ones(4, device=device), 1.0)
    with pytest.raises(ValueError, match="thresh"):
        recurrent_lif_fused(wx, rec, decay_logit, width, "1.0")
    with pytest.raises(ValueError, match="seed"):
        recurrent_lif_fused(wx, rec, decay_logit, width, 1.0, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        recurrent_lif_fused(wx, rec, decay_logit, width, 1.0, seed=torch.tensor([3], dtype=torch.int32))
    with pytest.raises(ValueError, match="H = 600"):
        recurrent_lif_fused(torch.zeros(1, 1, 600, device=device), torch.zeros(600, 600, device=device),
                            decay_logit, width, 1.0)


@pytest.mark.interpret
def test_custom_ops_pass_opcheck(device):
    """Schema, fake-tensor (torch.compile) and autograd registration of both custom ops."""
    from asgl.kernels.rlif import _rlif_bwd_op, _rlif_fwd_op

    wx, rec, decay_logit, width = make_inputs(3, 2, 5, device=device, channel=True)
    theta = torch.tensor(1.0, device=device)
    seed = torch.full((1,), 5, dtype=torch.int64, device=device)
    settings = (True, 0.0, True, 2, 0.3)  # hard reset, v_reset, sigmoid, NOISE_DRAW, p
    leaves = [t.clone().requires_grad_() for t in (wx, rec, decay_logit, width, theta)]
    torch.library.opcheck(_rlif_fwd_op, (*leaves, *settings, seed, True, False))
    with torch.no_grad():
        _, u, _ = _rlif_fwd_op(wx, rec, decay_logit, width, theta, *settings, seed, True, False)
    torch.library.opcheck(_rlif_bwd_op, (torch.randn_like(wx), u, rec, decay_logit, width, theta, seed, *settings),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.gpu
@pytest.mark.parametrize("surrogate,reset", [("sigmoid", "hard"), ("rectangle", "soft")])
def test_matches_reference_at_shd_size(device, monkeypatch, surrogate, reset):
    """H = 240 (BLOCK_H = 256, 15 K-chunks), T = 250, B = 40 (two programs, the second partial)."""
    check_against_reference(250, 40, 240, device=device, reset=reset, surrogate=surrogate, channel=True,
                            learn=("decay", "width", "thresh"), p=0.2, monkeypatch=monkeypatch)
