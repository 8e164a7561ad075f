"""The ASGL neuron: the reference (``asgl.kernels.lif_ref``) and ``asgl.LIF`` on its torch backend.

Values are checked against hand computations and against a scalar re-derivation of the contract
(``docs/ASGL.md`` §1–2) written here in plain Python floats. Gradients are checked in float64
against central finite differences of the *frozen-offset* form of the neuron: with the mask and the
straight-through offsets ``m·(S - H)`` held at their values at the base point, the hybrid output is
``o = H(z) + offset``, a smooth function whose true derivative is the ASGL gradient.
"""

import itertools
import math

import pytest
import torch

import asgl
from asgl.kernels.lif_ref import lif_ref, spike_mask_ref, width_param_from_width


# --------------------------------------------------------------------------- scalar re-derivation
def _sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))


def scalar_lif(xs, *, decay, thresh, width, surrogate, reset, v_reset=0.0, modes=None):
    """One neuron, plain floats. ``modes[t]`` True = spike mode; None = pure spikes."""
    k = 1.0 / width
    v, ys = 0.0, []
    for t, x in enumerate(xs):
        u = decay * v + x
        z = u - thresh
        s = 1.0 if z >= 0 else 0.0
        h = _sigmoid(k * z) if surrogate == "sigmoid" else min(max(k * z + 0.5, 0.0), 1.0)
        o = s if (modes is None or modes[t]) else h
        v = u * (1 - o) + v_reset * o if reset == "hard" else u - thresh * o
        ys.append(thresh * o)
    return ys


def _params(decay=0.5, width=1.0, surrogate="sigmoid", channels=None, dtype=torch.float64):
    decay_logit = torch.tensor(math.log(decay / (1 - decay)), dtype=dtype)
    wp = width_param_from_width(width, surrogate)
    width_param = torch.full((channels,) if channels else (), wp, dtype=dtype)
    return decay_logit, width_param


# --------------------------------------------------------------------------- hand-computed cases
XS = [1.2, 0.3, 0.9]


@pytest.mark.parametrize(
    "reset, expected",
    [("hard", [1.0, 0.0, 1.0]), ("soft", [1.0, 0.0, 1.0])],
)
def test_three_steps_pure_spikes_by_hand(reset, expected):
    # hard: u = 1.2 (fire, v=0), 0.3 (v=0.3), 0.15+0.9=1.05 (fire)
    # soft: u = 1.2 (fire, v=0.2), 0.1+0.3=0.4, 0.2+0.9=1.1 (fire)
    x = torch.tensor(XS, dtype=torch.float64).reshape(3, 1, 1)
    dl, wp = _params()
    y = lif_ref(x, dl, wp, 1.0, reset=reset, p=0.0)
    assert y.flatten().tolist() == expected
    y_eval = lif_ref(x, dl, wp, 1.0, reset=reset, training=False)
    assert y_eval.flatten().tolist() == expected


def test_three_steps_soft_reset_threshold_scales_output():
    # θ = 0.5, soft: u0 = 1.2 → y=0.5, v=0.7; u1 = 0.35+0.3=0.65 → y=0.5, v=0.15; u2 = 0.075+0.9 → y=0.5
    x = torch.tensor(XS, dtype=torch.float64).reshape(3, 1, 1)
    dl, wp = _params()
    y = lif_ref(x, dl, wp, 0.5, reset="soft", p=0.0)
    assert y.flatten().tolist() == [0.5, 0.5, 0.5]


def test_three_steps_analog_sigmoid_by_hand():
    # p = 1, sigmoid, k = 1, hard reset, λ = 0.5, θ = 1
    h0 = _sigmoid(0.2)                      # u0 = 1.2
    v0 = 1.2 * (1 - h0)
    u1 = 0.5 * v0 + 0.3
    h1 = _sigmoid(u1 - 1)
    v1 = u1 * (1 - h1)
    u2 = 0.5 * v1 + 0.9
    h2 = _sigmoid(u2 - 1)
    x = torch.tensor(XS, dtype=torch.float64).reshape(3, 1, 1)
    dl, wp = _params()
    y = lif_ref(x, dl, wp, 1.0, reset="hard", p=1.0).flatten().tolist()
    assert y == pytest.approx([h0, h1, h2], abs=1e-12)
    assert h0 == pytest.approx(0.549833997312478, abs=1e-12)


def test_three_steps_analog_rectangle_by_hand():
    # p = 1, rectangle, α = 2 (k = 0.5), soft reset, v_reset ignored, θ = 1
    # u0 = 1.2: H = 0.5·0.2+0.5 = 0.6, v0 = 1.2-0.6 = 0.6
    # u1 = 0.3+0.3 = 0.6: H = 0.5·(-0.4)+0.5 = 0.3, v1 = 0.3
    # u2 = 0.15+0.9 = 1.05: H = 0.525
    x = torch.tensor(XS, dtype=torch.float64).reshape(3, 1, 1)
    dl, wp = _params(width=2.0, surrogate="rectangle")
    y = lif_ref(x, dl, wp, 1.0, reset="soft", surrogate="rectangle", p=1.0).flatten().tolist()
    assert y == pytest.approx([0.6, 0.3, 0.525], abs=1e-12)


def test_hard_reset_to_nonzero_v_reset_by_hand():
    # v_reset = 0.25: u0 = 1.2 fire → v = 0.25; u1 = 0.125+0.3 = 0.425; u2 = 0.2125+0.9 = 1.1125 fire
    x = torch.tensor(XS, dtype=torch.float64).reshape(3, 1, 1)
    dl, wp = _params()
    y = lif_ref(x, dl, wp, 1.0, reset="hard", v_reset=0.25, p=0.0)
    assert y.flatten().tolist() == [1.0, 0.0, 1.0]
    # the threshold is inclusive: u exactly θ fires
    x_eq = torch.tensor([1.0], dtype=torch.float64).reshape(1, 1, 1)
    assert lif_ref(x_eq, dl, wp, 1.0, p=0.0).item() == 1.0


# --------------------------------------------------------------------------- against the scalar form
OPTIONS = list(itertools.product(("hard", "soft"), ("sigmoid", "rectangle"), (0.0, 0.3, 1.0)))


@pytest.mark.parametrize("reset, surrogate, p", OPTIONS)
def test_reference_matches_scalar_rederivation(reset, surrogate, p):
    g = torch.Generator().manual_seed(0)
    T, B, C = 5, 3, 4
    x = torch.randn(T, B, C, generator=g, dtype=torch.float64) * 0.8 + 0.5
    decay, width, thresh, v_reset = 0.7, 1.7, 0.8, 0.1
    dl, _ = _params(decay=decay)
    wp = torch.tensor(width_param_from_width(width, surrogate), dtype=torch.float64)
    mask = spike_mask_ref(x.shape, p, generator=g)
    y = lif_ref(x, dl, wp, thresh, reset=reset, v_reset=v_reset, surrogate=surrogate, p=p, mask=mask)
    for b in range(B):
        for c in range(C):
            exp = scalar_lif(
                x[:, b, c].tolist(), decay=decay, thresh=thresh, width=width, surrogate=surrogate,
                reset=reset, v_reset=v_reset, modes=mask[:, b, c].tolist(),
            )
            assert y[:, b, c].tolist() == pytest.approx(exp, abs=1e-12)


def test_channel_width_broadcasts_over_dim_2():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 4, 5, generator=g, dtype=torch.float64) + 0.8
    dl, _ = _params()
    widths = [0.5, 1.0, 2.0, 4.0]
    wp = torch.tensor([width_param_from_width(w, "sigmoid") for w in widths], dtype=torch.float64)
    y = lif_ref(x, dl, wp, 1.0, p=1.0)
    for c, w in enumerate(widths):
        wp_c = torch.tensor(width_param_from_width(w, "sigmoid"), dtype=torch.float64)
        torch.testing.assert_close(y[:, :, c], lif_ref(x[:, :, c], dl, wp_c, 1.0, p=1.0), rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- p = 0, p = 1, eval, noise
def test_p0_is_pure_spikes_and_p1_is_smooth():
    x = torch.randn(4, 8, 16) + 0.7
    m = asgl.LIF(p=0.0, backend="torch")
    y0 = m(x)
    assert set(y0.unique().tolist()) <= {0.0, 1.0}
    m.p = 1.0
    y1 = m(x)
    assert ((y1 > 0) & (y1 < 1)).float().mean() > 0.99  # sigmoid never reaches 0 or 1 exactly here
    m.eval()
    torch.testing.assert_close(m(x), y0)  # eval = pure spikes, whatever p is


def test_eval_gives_pure_spikes_for_every_option():
    x = torch.randn(3, 4, 6) * 2
    for reset, surrogate in itertools.product(("hard", "soft"), ("sigmoid", "rectangle")):
        m = asgl.LIF(reset=reset, surrogate=surrogate, p=0.7, thresh=0.5, backend="torch").eval()
        assert set(m(x).unique().tolist()) <= {0.0, 0.5}


def test_analog_fraction_is_p_within_3_sigma_and_redrawn_each_step():
    p, shape = 0.3, (6, 50_000)
    g = torch.Generator().manual_seed(123)
    mask = spike_mask_ref(shape, p, generator=g)
    n = mask[0].numel()
    sigma = math.sqrt(p * (1 - p) / n)
    for t in range(shape[0]):
        assert abs((~mask[t]).float().mean().item() - p) < 3 * sigma
    # independent across steps: agreement between consecutive steps ≈ p² + (1-p)², not 1
    agree = (mask[1:] == mask[:-1]).float().mean().item()
    expected = p * p + (1 - p) * (1 - p)
    assert abs(agree - expected) < 3 * math.sqrt(expected * (1 - expected) / (n * (shape[0] - 1)))


def test_module_analog_fraction_in_training():
    # with θ huge nothing fires; analog elements emit H ∈ (0, 1), spike-mode elements emit exactly 0
    torch.manual_seed(0)
    p = 0.25
    m = asgl.LIF(p=p, thresh=3.0, backend="torch")
    x = torch.full((4, 20_000), 0.1)
    y = m(x)
    frac = (y != 0).float().mean().item()
    assert abs(frac - p) < 3 * math.sqrt(p * (1 - p) / y.numel())


# --------------------------------------------------------------------------- gradients, float64
def frozen_lif(x, decay_logit, width_param, thresh, offsets, *, reset, v_reset, surrogate):
    """The neuron with ``o = H(z) + offsets[t]``: smooth, with the ASGL gradient as its derivative."""
    lam = torch.sigmoid(decay_logit)
    k = width_param if surrogate == "sigmoid" else torch.exp(width_param)
    if k.dim() == 1:
        k = k.reshape(1, -1, *([1] * (x.dim() - 3)))
    v, ys = torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        u = lam * v + x[t]
        z = u - thresh
        h = torch.sigmoid(k * z) if surrogate == "sigmoid" else torch.clamp(k * z + 0.5, 0, 1)
        o = h + offsets[t]
        v = u * (1 - o) + v_reset * o if reset == "hard" else u - thresh * o
        ys.append(thresh * o)
    return torch.stack(ys)


def _offsets(x, decay_logit, width_param, thresh, mask, *, reset, v_reset, surrogate, training):
    """m·(S - H) at the base point, by running the frozen form step by step."""
    lam = torch.sigmoid(decay_logit)
    k = width_param if surrogate == "sigmoid" else torch.exp(width_param)
    if k.dim() == 1:
        k = k.reshape(1, -1, *([1] * (x.dim() - 3)))
    v, offs = torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        u = lam * v + x[t]
        z = u - thresh
        h = torch.sigmoid(k * z) if surrogate == "sigmoid" else torch.clamp(k * z + 0.5, 0, 1)
        m = mask[t].to(x.dtype) if training else torch.ones_like(h)
        off = m * ((z >= 0).to(x.dtype) - h)
        o = h + off
        v = u * (1 - o) + v_reset * o if reset == "hard" else u - thresh * o
        offs.append(off)
    return torch.stack(offs)


GRAD_OPTIONS = list(
    itertools.product(("hard", "soft"), ("sigmoid", "rectangle"), ("layer", "channel"), (0.0, 0.5, 1.0), (True, False))
)


@pytest.mark.parametrize("reset, surrogate, granularity, p, training", GRAD_OPTIONS)
def test_gradients_float64_against_finite_differences(reset, surrogate, granularity, p, training):
    g = torch.Generator().manual_seed(7)
    T, B, C, L = 4, 2, 3, 5
    x0 = (torch.randn(T, B, C, L, generator=g, dtype=torch.float64) * 0.6 + 0.6)
    dl0 = torch.tensor(0.3, dtype=torch.float64)
    width = 1.5 if surrogate == "sigmoid" else 3.0  # wide rectangle: most z inside the linear part
    wp0 = torch.full((C,) if granularity == "channel" else (), width_param_from_width(width, surrogate),
                     dtype=torch.float64)
    if granularity == "channel":
        wp0 = wp0 + torch.linspace(-0.1, 0.1, C, dtype=torch.float64)
    th0 = torch.tensor(0.9, dtype=torch.float64)
    v_reset = 0.1 if reset == "hard" else 0.0
    mask = spike_mask_ref(x0.shape, p, generator=g)
    kw = dict(reset=reset, v_reset=v_reset, surrogate=surrogate)

    inputs = [t.clone().requires_grad_(True) for t in (x0, dl0, wp0, th0)]
    y = lif_ref(*inputs, p=p, training=training, mask=mask if training else None, **kw)
    w = torch.randn(y.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((y * w).sum(), inputs)

    offsets = _offsets(x0, dl0, wp0, th0, mask, training=training, **kw)
    # the frozen form reproduces the value exactly
    torch.testing.assert_close(frozen_lif(x0, dl0, wp0, th0, offsets, **kw), y.detach(), rtol=0, atol=1e-14)

    eps = 1e-6
    for i, (base, grad) in enumerate(zip((x0, dl0, wp0, th0), grads)):
        direction = torch.randn(base.shape, generator=g, dtype=torch.float64)
        args_p = [x0, dl0, wp0, th0]
        args_m = [x0, dl0, wp0, th0]
        args_p[i] = base + eps * direction
        args_m[i] = base - eps * direction
        fd = ((frozen_lif(*args_p, offsets, **kw) - frozen_lif(*args_m, offsets, **kw)) * w).sum() / (2 * eps)
        analytic = (grad * direction).sum()
        assert analytic.item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-8), f"input {i}"


def test_gradient_flows_through_reset_and_into_every_parameter():
    torch.manual_seed(3)
    m = asgl.LIF(learn_thresh=True, p=0.5, backend="torch")
    x = (torch.randn(4, 3, 5) + 0.8).requires_grad_(True)
    m(x).sum().backward()
    for name in ("decay_logit", "width_param", "thresh"):
        grad = getattr(m, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


# --------------------------------------------------------------------------- module API
def test_module_parameters_exist_after_init_and_fixed_ones_are_buffers():
    m = asgl.LIF(width_granularity="channel", channels=6, learn_decay=False, learn_thresh=True, surrogate="rectangle",
                 width=2.0)
    params = dict(m.named_parameters())
    buffers = dict(m.named_buffers())
    assert set(params) == {"width_param", "thresh"}
    assert set(buffers) == {"decay_logit"}
    assert m.width_param.shape == (6,)
    torch.testing.assert_close(m.width, torch.full((6,), 2.0))
    torch.testing.assert_close(m.width_param, torch.full((6,), -math.log(2.0)))
    assert m.decay.item() == pytest.approx(0.5)
    m2 = asgl.LIF(width=4.0, learn_width=False)
    assert "width_param" in dict(m2.named_buffers()) and m2.width_param.shape == ()
    assert m2.width_param.item() == pytest.approx(0.25)  # sigmoid stores the slope k = 1/α
    assert isinstance(m2.thresh, float)
    with pytest.raises(AttributeError):
        m2.width = 3.0


def test_learnable_threshold_is_clamped_non_negative():
    m = asgl.LIF(learn_thresh=True)
    with torch.no_grad():
        m.thresh.fill_(-0.3)
    asgl.clamp_thresholds_(torch.nn.Sequential(m))
    assert m.thresh.item() == 0.0


def test_state_dict_round_trip():
    a = asgl.LIF(width_granularity="channel", channels=3, learn_thresh=True)
    with torch.no_grad():
        a.width_param.mul_(1.5)
        a.decay_logit.add_(0.2)
    b = asgl.LIF(width_granularity="channel", channels=3, learn_thresh=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 2, 3) + 0.5
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(reset="zero"), "reset"),
        (dict(surrogate="tanh"), "surrogate"),
        (dict(width_granularity="neuron"), "width_granularity"),
        (dict(width=0.0), "width"),
        (dict(width=-1.0), "width"),
        (dict(p=1.5), "p"),
        (dict(p=-0.1), "p"),
        (dict(decay=1.0), "decay"),
        (dict(decay=0.0), "decay"),
        (dict(thresh=0.0), "thresh"),
        (dict(width_granularity="channel"), "channels"),
        (dict(backend="cuda"), "backend"),
        (dict(min_slope=0.0), "min_slope"),
        (dict(min_slope=float("nan")), "min_slope"),
        (dict(width=200.0), "min_slope"),  # α = 200 is k = 0.005 < the default floor 0.01
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        asgl.LIF(**kwargs)


def test_bad_input_raises_value_error():
    m = asgl.LIF(width_granularity="channel", channels=4)
    with pytest.raises(ValueError, match="channels=4"):
        m(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="at least 2 dims"):
        asgl.LIF()(torch.randn(5))
    with pytest.raises(ValueError, match=r"p \(the analog-mode probability\)"):
        asgl.LIF().p = 2.0


def test_triton_backend_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        asgl.LIF(backend="triton")(torch.randn(2, 3))


def test_auto_backend_uses_reference_on_cpu():
    from asgl.functional import resolve_backend

    assert resolve_backend("auto", torch.zeros(1)) == "torch"


def test_auto_backend_on_cuda_without_triton_uses_the_reference(monkeypatch):
    """triton is optional (installed only where it runs): "auto" on a CUDA tensor picks the fused
    kernel only when triton can be imported."""
    import importlib.util
    from types import SimpleNamespace

    from asgl.functional import resolve_backend

    cuda_like = SimpleNamespace(is_cuda=True)  # only .is_cuda is read
    assert resolve_backend("auto", cuda_like) == "triton"
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else find_spec(name, *a))
    assert resolve_backend("auto", cuda_like) == "torch"


# --------------------------------------------------------------------------- noise schedule
def test_noise_schedule_milestones_and_resume():
    model = torch.nn.Sequential(asgl.LIF(), asgl.LIF())
    sched = asgl.NoiseSchedule(model, p0=0.8, epochs=10, gamma=0.5)
    # milestones int(f·10) for f in (0, .2, .4, .6, .8, .95) = {0, 2, 4, 6, 8, 9}
    ps = [sched.step() for _ in range(10)]
    assert ps == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05, 0.025, 0.0125])
    assert all(m.p == pytest.approx(0.0125) for m in asgl.neurons(model))

    fresh = asgl.NoiseSchedule(model, p0=0.8, epochs=10, gamma=0.5)
    for _ in range(3):
        fresh.step()
    state = fresh.state_dict()
    resumed = asgl.NoiseSchedule(torch.nn.Sequential(asgl.LIF()), p0=0.8, epochs=10, gamma=0.5)
    resumed.load_state_dict(state)
    assert [resumed.step() for _ in range(7)] == pytest.approx(ps[3:])


def test_noise_schedule_raising_p_is_clamped_to_one():
    sched = asgl.NoiseSchedule(asgl.LIF(), p0=0.6, epochs=100, gamma=1.5, milestones=(0.3, 0.7, 0.9, 0.95))
    for _ in range(100):
        sched.step()
    assert sched.p == 1.0
    with pytest.raises(ValueError, match="p0"):
        asgl.NoiseSchedule(asgl.LIF(), p0=1.2, epochs=3)


# --------------------------------------------------------------------------- import hygiene
@pytest.mark.e2e
def test_packages_import_without_datasets_and_without_touching_cuda():
    """``import asgl, kernels`` (and the fused kernel modules) must work where ``datasets`` is absent
    (the GPU image has none) and must not initialise CUDA at import time."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; sys.modules['datasets'] = None\n"
        "import torch\n"
        "calls = []\n"
        "torch.cuda.is_available = lambda: calls.append('is_available') or False\n"
        "torch.cuda.device_count = lambda: calls.append('device_count') or 0\n"
        "import asgl, kernels, asgl.kernels.lif, asgl.kernels.rlif\n"
        "m = asgl.create_model('digits_cnn')\n"
        "assert 'datasets' not in [k for k, v in sys.modules.items() if v is not None]\n"
        "assert not calls, calls\n"
        "assert not torch.cuda.is_initialized()\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1], env=env)


# --------------------------------------------------------------------------- the slope floor
def test_sigmoid_slope_floor_clamps_only_what_it_should():
    from asgl.neuron import MIN_SIGMOID_SLOPE

    m = asgl.LIF(surrogate="sigmoid", width_granularity="channel", channels=3)
    assert m.min_slope == MIN_SIGMOID_SLOPE and m.needs_clamp
    with torch.no_grad():
        m.width_param.copy_(torch.tensor([-0.5, 0.0, 2.0]))
    asgl.clamp_neuron_params_(m)
    assert m.width_param.tolist() == pytest.approx([MIN_SIGMOID_SLOPE, MIN_SIGMOID_SLOPE, 2.0])
    unbounded = asgl.LIF(surrogate="sigmoid", min_slope=None)  # the authors' behaviour
    with torch.no_grad():
        unbounded.width_param.fill_(-0.5)
    assert not unbounded.needs_clamp
    asgl.clamp_neuron_params_(unbounded)
    assert unbounded.width_param.item() == -0.5
    rect = asgl.LIF(surrogate="rectangle")  # stores log k: any value is a positive slope
    with torch.no_grad():
        rect.width_param.fill_(-5.0)
    asgl.clamp_neuron_params_(rect)
    assert not rect.needs_clamp and rect.width_param.item() == -5.0
    assert not asgl.LIF(learn_width=False).needs_clamp
    assert asgl.LIF(width=200.0, min_slope=None).min_slope is None  # an unbounded slope may start wider
    assert asgl.LIF(width=200.0, learn_width=False).width.item() == pytest.approx(200.0)  # fixed: no floor


def test_clamping_many_neurons_at_once_equals_clamping_each():
    """The optimizer hook clamps every neuron with one multi-tensor op per floor: the same values as
    :meth:`LIF.clamp_` on each (mixed floors, thresholds, fixed widths, the rectangle, no floor)."""
    from asgl.neuron import clamp_neurons_

    def make():
        torch.manual_seed(3)
        lifs = [asgl.LIF(learn_thresh=True), asgl.LIF(min_slope=0.05, width_granularity="channel", channels=4),
                asgl.LIF(min_slope=None), asgl.LIF(surrogate="rectangle", learn_thresh=True),
                asgl.LIF(learn_width=False), asgl.LIF(min_slope=0.05)]
        with torch.no_grad():
            for m in lifs:
                for t in m.parameters():
                    t.copy_(torch.randn(t.shape))
            lifs[2].width_param.fill_(-0.5)  # no floor: stays negative
        return lifs

    each, together = make(), make()
    for m in each:
        m.clamp_()
    clamp_neurons_(together)
    for a, b in zip(each, together):
        for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
            assert torch.equal(x, y), name
    assert (together[1].width_param >= 0.05).all() and together[2].width_param.item() == -0.5


def _train_slope(backend: str, min_slope, steps: int = 4):
    """A few neuron-optimizer steps of one LIF from a fixed start, with a learning rate (1.0) and a
    loss sign chosen so that Adam's first step (≈ lr · sign(grad)) drives k = 0.5 below zero."""
    torch.manual_seed(0)
    m = asgl.LIF(surrogate="sigmoid", width=2.0, width_granularity="channel", channels=3, p=0.0,
                 min_slope=min_slope, backend=backend)
    head = torch.nn.Linear(3, 2)
    _, neuron_opt = asgl.build_optimizers(torch.nn.Sequential(m, head), neuron_lr=1.0)
    x = torch.randn(5, 7, 3) * 0.8 + 1.0
    sign, trace = None, []
    for _ in range(steps):
        y = m(x)
        if sign is None:  # the sign that makes dL/dk > 0 for every channel at the start
            grad = torch.autograd.grad(y.sum(), m.width_param, retain_graph=True)[0]
            sign = torch.where(grad > 0, 1.0, -1.0)
        loss = (y.sum(dim=(0, 1)) * sign).sum()
        neuron_opt.zero_grad()
        loss.backward()
        neuron_opt.step()
        trace.append(m.width_param.detach().clone())
        # firing rate in a sane range, so the gradient is not all zero
        assert 0.05 < (y > 0).float().mean().item() < 0.95
    return torch.stack(trace)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_slope_floor_is_applied_after_each_neuron_optimizer_step(backend):
    floored = _train_slope(backend, min_slope=0.01)
    free = _train_slope(backend, min_slope=None)
    assert (free[0] < 0).all(), "the setup must drive an unbounded slope below zero"
    assert (floored >= 0.01).all()
    assert (floored[0] == 0.01).all()


def test_unbounded_slope_is_exactly_plain_adam():
    """min_slope=None reproduces the authors' unbounded behaviour bit for bit: the same steps as an
    Adam with no hook at all."""
    torch.manual_seed(0)
    a = asgl.LIF(width=2.0, width_granularity="channel", channels=3, p=0.0, min_slope=None, backend="torch")
    b = asgl.LIF(width=2.0, width_granularity="channel", channels=3, p=0.0, min_slope=None, backend="torch")
    _, opt_a = asgl.build_optimizers(torch.nn.Sequential(a, torch.nn.Linear(3, 2)), neuron_lr=1.0)
    opt_b = torch.optim.Adam([b.decay_logit, b.width_param], lr=1.0)
    x = torch.randn(5, 7, 3) + 1.0
    for _ in range(4):
        for m, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            (-m(x).sum()).backward()
            opt.step()
    assert torch.equal(a.width_param, b.width_param) and torch.equal(a.decay_logit, b.decay_logit)


@pytest.mark.interpret
def test_slope_floor_same_trajectory_on_both_backends():
    for min_slope in (0.01, None):
        ref = _train_slope("torch", min_slope)
        fused = _train_slope("triton", min_slope)
        torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)


def test_min_slope_config_key_reaches_every_neuron():
    from asgl.train.config import ConfigError, build_config
    from asgl.train.run import build_model

    default = build_model(build_config(None, {"model.name": "digits_cnn"}), 10, 1)
    assert {m.min_slope for m in asgl.neurons(default)} == {0.01}
    free = build_model(build_config(None, {"model.name": "digits_cnn", "model.min_slope": "null"}), 10, 1)
    assert {m.min_slope for m in asgl.neurons(free)} == {None}
    with pytest.raises(ConfigError, match="model.min_slope"):
        build_config(None, {"model.min_slope": "0"})
    with pytest.raises(ConfigError, match="model.width"):  # α = 200 needs k = 0.005 < 0.01
        build_config(None, {"model.width": "200"})
    assert build_config(None, {"model.width": "200", "model.learn_width": "false"}).model.width == 200.0
