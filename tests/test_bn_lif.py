"""The fused batch norm + LIF (``asgl.kernels.bn_lif``) against its reference, and ``asgl.BatchNormLIF``.

Runs under ``TRITON_INTERPRET=1`` on the CPU (tiny shapes). The fused op hands back the mask it drew
and the reference replays it. Tolerance rules are those of ``tests/test_lif_kernel.py`` (read its
docstring): float32 tight; float16/bfloat16 ``max|fused - ref32| <= 2·max|torch_lowp - ref32| +
atol`` for y, dx and the shortcut's gradient, and one storage ulp (y) or float32 rounding (the
parameter gradients) of ``reference_rounded``, the float32 reference with the kernel's two roundings
(the membrane after each update, and ``g = dL/d in`` before batch norm's backward). Neurons whose
reference membrane comes near a decision edge are left out (loss weight 0), their share bounded.

The options are too many for a full product under the interpreter (dtype × noise mode × layout ×
shortcut × reset × surrogate × width granularity × statistics × T: 10,368 cases), so
``test_matches_reference`` runs a covering array: every pair of (dtype, mode, layout) values, every
other factor's values each at least three times, tiles shrunk in half the cases so that the
reductions span several programs.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import nan_poison
from test_lif_kernel import (
    AMBIGUOUS, MAX_AMBIGUOUS_PER_EDGE_STEP, MAX_DIVERGED_PER_STEP, ROUNDED_RTOL, ULP, ambiguous_neurons,
    check_rule, diverged_neurons, make_params, reference_membrane, reference_rounded,
)

import asgl.kernels.bn_lif as bn_mod
from asgl.kernels.bn_lif import bn_lif_fused
from asgl.kernels.bn_lif_ref import bn_lif_ref

MODES = {"sg": (0.0, True), "mixed": (0.3, True), "analog": (1.0, True), "eval": (0.3, False)}
SHAPES = {  # [B, C, ...] per step; ragged everywhere
    "5d": (2, 3, 5, 7),
    "channels_last": (2, 6, 5, 3),
    "3d": (37, 5),
    "4d": (2, 5, 19),
    # rows of 4-aligned Philox groups (H·W or, channels-last, C a multiple of 4): a call per group of 4
    # (or per row of 2) in one thread, the path the recipes' shapes take
    "5d_x4": (2, 3, 4, 5),
    "channels_last_x4": (3, 8, 3, 2),
}
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
# dtype, mode, layout, residual, reset, surrogate, granularity, statistics, T, small tiles
CASES = [
    (F32, "sg", "5d", False, "hard", "sigmoid", "layer", "batch", 4, False),
    (F32, "mixed", "channels_last", True, "soft", "rectangle", "channel", "running", 6, True),
    (F32, "analog", "3d", True, "hard", "rectangle", "channel", "scaled", 11, False),
    (F32, "eval", "4d", True, "soft", "sigmoid", "layer", "batch", 1, True),
    (F16, "sg", "channels_last", True, "hard", "rectangle", "layer", "scaled", 4, False),
    (F16, "mixed", "3d", False, "hard", "sigmoid", "channel", "batch", 6, True),
    (F16, "analog", "5d", False, "soft", "sigmoid", "layer", "running", 11, True),
    (F16, "eval", "5d", False, "soft", "rectangle", "channel", "batch", 3, False),
    (BF16, "sg", "3d", True, "soft", "sigmoid", "channel", "running", 3, False),
    (BF16, "mixed", "5d", True, "hard", "rectangle", "layer", "batch", 9, False),
    (BF16, "analog", "channels_last", False, "hard", "sigmoid", "channel", "batch", 4, True),
    (BF16, "eval", "channels_last", False, "hard", "rectangle", "layer", "scaled", 6, True),
    (F32, "mixed", "4d", False, "hard", "sigmoid", "channel", "running", 17, False),
    (F16, "sg", "4d", True, "soft", "rectangle", "channel", "scaled", 5, True),
    (BF16, "mixed", "4d", False, "soft", "sigmoid", "layer", "batch", 2, True),
    (F32, "sg", "channels_last", True, "soft", "sigmoid", "layer", "batch", 8, False),
    (BF16, "mixed", "5d_x4", True, "hard", "sigmoid", "layer", "batch", 3, False),
    (F32, "mixed", "channels_last_x4", False, "soft", "rectangle", "channel", "running", 6, False),
    (F16, "mixed", "5d_x4", False, "hard", "rectangle", "channel", "scaled", 10, False),
]


@pytest.fixture(autouse=True)
def nan_poisoned_outputs(monkeypatch):
    """Outputs the op allocates start as NaN, so an element the kernels never write fails a test."""
    nan_poison(monkeypatch, bn_mod, "alloc_like")


def small_tiles(monkeypatch):
    """Tiles of 32-64 elements and at most 4 channels: several programs per reduction, ragged edges;
    the per-tile sums summed in groups first (see ``DIRECT_MAX_TILES``), 2 channels and 2 rows at a time."""
    monkeypatch.setattr(bn_mod, "BLOCK", 64)
    monkeypatch.setattr(bn_mod, "BWD_BLOCK", {4: 32, 8: 16})
    monkeypatch.setattr(bn_mod, "MAX_BLOCK_C", 4)
    monkeypatch.setattr(bn_mod, "DIRECT_MAX_TILES", 1)
    monkeypatch.setattr(bn_mod, "COEF_BLOCK_T", 2)
    monkeypatch.setattr(bn_mod, "COEF_BLOCK_C", 2)


def make_conv_output(T, shape, dtype, layout, device, seed=0):
    """A conv output ``[T, B, C, ...]`` with per-channel offsets and spreads (BN has work to do)."""
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    x = torch.randn((T,) + shape, generator=g)
    spread = 0.5 + 2.0 * torch.rand(C, generator=g)
    offset = 3.0 * torch.randn(C, generator=g)
    view = (1, 1, C) + (1,) * (len(shape) - 2)
    x = (x * spread.view(view) + offset.view(view)).to(dtype).to(device)
    if layout.startswith("channels_last"):
        x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return x


def make_bn(x, statistics, device, seed=1):
    """weight, bias, running_mean, running_var, threshold_scale for a statistics mode.

    γ, β are chosen so that the neuron input is about 0.35 ± 0.6 (firing rates of 5-50% at θ = 1);
    "running" buffers sit near the batch's own statistics; "scaled" is threshold-scaled tdBN without
    the affine parameters (the normalised input times 0.6, plus a shortcut or not)."""
    g = torch.Generator().manual_seed(seed)
    C = x.shape[2]
    weight = (0.6 * (0.8 + 0.4 * torch.rand(C, generator=g))).to(device).requires_grad_()
    bias = (0.35 + 0.05 * torch.randn(C, generator=g)).to(device).requires_grad_()
    dims = [d for d in range(x.dim()) if d != 2]
    var, mean = torch.var_mean(x.detach().float(), dim=dims, correction=0)
    running_mean = mean + 0.1 * var.sqrt() * torch.randn(C, generator=g).to(device)
    running_var = var * (0.8 + 0.4 * torch.rand(C, generator=g).to(device))
    if statistics == "scaled":
        return None, None, running_mean, running_var, 0.6
    return weight, bias, running_mean, running_var, None


class RoundGrad(torch.autograd.Function):
    """Identity whose backward rounds the gradient to ``dtype`` (the kernel stores ``g`` so)."""

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = dtype
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(ctx.dtype).float(), None


def bn_input(x, residual, weight, bias, running_mean, running_var, *, use_batch_stats, threshold_scale,
             round_grad_to=None):
    """The neuron input of the reference, ``BN(x) + residual`` (float32 when x is), leaving the
    running buffers untouched."""
    rm, rv = running_mean.clone(), running_var.clone()
    if threshold_scale is not None:
        weight = torch.full((x.shape[2],), threshold_scale, dtype=rm.dtype, device=x.device)
    z = torch.nn.functional.batch_norm(x.flatten(0, 1), rm, rv, weight, bias, use_batch_stats, 0.1, 1e-5).view(x.shape)
    if residual is not None:
        z = z + residual
    return RoundGrad.apply(z, round_grad_to) if round_grad_to is not None else z


def run_case(x, residual, bn, params, *, reset, surrogate, p, training, use_batch_stats, seed=1234):
    dtype = x.dtype
    weight, bias, running_mean, running_var, threshold_scale = bn
    v_reset = 0.2 if reset == "hard" else 0.0
    kw = dict(reset=reset, v_reset=v_reset, surrogate=surrogate, p=p, training=training)
    x = x.detach().requires_grad_()
    r = residual.detach().requires_grad_() if residual is not None else None
    rm_f, rv_f = running_mean.clone(), running_var.clone()
    y, mask = bn_lif_fused(x, weight, bias, rm_f, rv_f, *params, residual=r, use_batch_stats=use_batch_stats,
                           threshold_scale=threshold_scale, seed=seed, return_mask=True, **kw)
    assert y.shape == x.shape and y.dtype == dtype and y.stride() == x.stride()

    # the reference's membrane (float32 copies), its ambiguous neurons and firing rate
    bn_kw = dict(use_batch_stats=use_batch_stats, threshold_scale=threshold_scale)
    x32 = x.detach().float().requires_grad_()
    r32 = r.detach().float().requires_grad_() if r is not None else None
    with torch.no_grad():
        in32 = bn_input(x32, r32, weight, bias, running_mean, running_var, **bn_kw)
    u32, slope = reference_membrane(in32, *params, reset=reset, v_reset=v_reset, surrogate=surrogate,
                                    training=training, mask=mask)
    theta = float(params[2].detach())
    firing = (u32 >= theta).float().mean().item()
    assert 0.05 <= firing <= 0.5, f"input scaling gives a firing rate of {firing:.3f}"
    amb = ambiguous_neurons(u32, slope, theta, surrogate, AMBIGUOUS[dtype])
    edges = 3 if surrogate == "rectangle" else 1
    f = 1 - (1 - MAX_AMBIGUOUS_PER_EDGE_STEP[dtype]) ** (edges * x.shape[0])
    bound = f + 3 * math.sqrt(f * (1 - f) / amb.numel()) + 3 / amb.numel()
    assert amb.float().mean().item() <= bound, f"{amb.float().mean():.3f} of the neurons ambiguous (max {bound:.3f})"
    if dtype != F32:
        _, u_rounded = reference_rounded(in32, *params, reset=reset, v_reset=v_reset, surrogate=surrogate,
                                         training=training, mask=mask, dtype=dtype, return_membrane=True)
        u_fused = fused_membrane(x, r, bn, params, use_batch_stats=use_batch_stats, seed=seed, **kw)
        amb = amb | diverged_neurons(u_fused, u_rounded, MAX_DIVERGED_PER_STEP, x.shape[0])
    keep = (~amb).expand_as(x)
    weight_loss = (torch.randn(x.shape, generator=torch.Generator().manual_seed(7)).to(dtype).float().to(x.device)
                   * keep)

    bn_params = [t for t in (weight, bias) if t is not None]
    lif_params = [t for t in params if t.requires_grad]
    runs = {}
    leaves = [x] + ([r] if r is not None else []) + bn_params + lif_params
    runs["fused"] = (y, leaves)
    rm_r, rv_r = running_mean.clone(), running_var.clone()
    y32 = bn_lif_ref(x32, weight, bias, rm_r, rv_r, *params, residual=r32, mask=mask, eps=1e-5, **bn_kw, **kw)
    runs["ref32"] = (y32, [x32] + ([r32] if r is not None else []) + bn_params + lif_params)
    if dtype != F32:
        xl = x.detach().clone().requires_grad_()
        rl = r.detach().clone().requires_grad_() if r is not None else None
        yl = bn_lif_ref(xl, weight, bias, running_mean.clone(), running_var.clone(), *params, residual=rl, mask=mask,
                        **bn_kw, **kw)
        runs["lowp"] = (yl, [xl] + ([rl] if rl is not None else []) + bn_params + lif_params)
        xr = x.detach().float().requires_grad_()
        rr = r.detach().float().requires_grad_() if r is not None else None
        in_r = bn_input(xr, rr, weight, bias, running_mean, running_var, round_grad_to=dtype, **bn_kw)
        yr = reference_rounded(in_r, *params, reset=reset, v_reset=v_reset, surrogate=surrogate, training=training,
                               mask=mask, dtype=dtype)
        runs["rounded"] = (yr, [xr] + ([rr] if rr is not None else []) + bn_params + lif_params)
    grads = {name: torch.autograd.grad((out.float() * weight_loss).sum(), wrt) for name, (out, wrt) in runs.items()}

    # running statistics: the same update as F.batch_norm's
    torch.testing.assert_close(rm_f, rm_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rv_f, rv_r, rtol=1e-5, atol=1e-6)
    # forward: exact spikes on unambiguous spike-mode elements, the rule everywhere unambiguous
    spike_mode = mask & keep if training else keep
    assert torch.equal(y.float()[spike_mode], y32.float()[spike_mode].to(dtype).float()), "spikes differ"
    lowp_y = runs["lowp"][0] if "lowp" in runs else None
    check_rule(y[keep], y32[keep], lowp_y[keep] if lowp_y is not None else None, dtype, "y")
    if dtype != F32:
        ulp = ULP[dtype]
        torch.testing.assert_close(y.float()[keep], runs["rounded"][0].detach().to(dtype).float()[keep], rtol=ulp,
                                   atol=ulp)
    n_big = 1 + (r is not None)
    names = ["dx", "d_residual"][:n_big] + [n for n, t in (("d_weight", weight), ("d_bias", bias)) if t is not None]
    names += [n for n, t in zip(("d_decay_logit", "d_width_param", "d_thresh"), params) if t.requires_grad]
    for i, name in enumerate(names):
        fused_g = grads["fused"][i]
        assert fused_g.shape == leaves[i].shape, name
        if i < n_big:
            check_rule(fused_g, grads["ref32"][i], grads["lowp"][i] if "lowp" in grads else None, dtype, name)
            if dtype != F32:
                ulp = ULP[dtype]
                torch.testing.assert_close(fused_g.float(), grads["rounded"][i].to(dtype).float(), rtol=2 * ulp,
                                           atol=2 * ulp, msg=lambda m: f"{name} vs rounded: {m}")
        elif dtype == F32:
            check_rule(fused_g, grads["ref32"][i], None, dtype, name, rtol=1e-4, atol=1e-4)
        else:
            # sums over all neurons and steps: against the float32 reference with the kernel's roundings
            torch.testing.assert_close(fused_g, grads["rounded"][i], rtol=ROUNDED_RTOL[dtype],
                                       atol=ROUNDED_RTOL[dtype], msg=lambda m: f"{name}: {m}")
    return y, mask


def fused_membrane(x, r, bn, params, *, reset, v_reset, surrogate, p, training, use_batch_stats, seed):
    """The membrane ``u`` of the fused forward (store_u), with the same statistics and mask."""
    weight, bias, running_mean, running_var, threshold_scale = bn
    scale = 1.0 if threshold_scale is None else threshold_scale
    noise = 0 if not training or p == 0.0 else (1 if p == 1.0 else 2)
    detached = [t.detach() if t is not None else None for t in (weight, bias)]
    # running buffers copied: the statistics op must not update the test's buffers a second time
    running = [t.clone() if t is not None else None for t in (running_mean, running_var)]
    coef = bn_mod._bn_stats_op(x.detach(), *detached, *running, scale, 1e-5, 0.0, use_batch_stats)
    _, u, _ = bn_mod._bn_lif_fwd_op(
        x.detach(), r.detach() if r is not None else None, coef, *detached, *running,
        *[t.detach() for t in params], scale, 1e-5, use_batch_stats, False, reset == "hard", float(v_reset),
        surrogate == "sigmoid", noise, float(p), torch.full((1,), seed, dtype=torch.int64, device=x.device), True,
        False,
    )
    return u


@pytest.mark.interpret
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v).replace("torch.", "") for v in c))
def test_matches_reference(case, device, monkeypatch):
    dtype, mode, layout, residual, reset, surrogate, granularity, statistics, T, tiny_tiles = case
    if tiny_tiles:
        small_tiles(monkeypatch)
    p, training = MODES[mode]
    shape = SHAPES[layout]
    x = make_conv_output(T, shape, dtype, layout, device)
    bn = make_bn(x, statistics, device)
    r = None
    if residual:
        r = (0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))).to(dtype).to(device)
        if layout.startswith("channels_last"):
            r = r.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    C = shape[1]
    params = make_params(C if granularity == "channel" else None, surrogate, device)
    run_case(x, r, bn, params, reset=reset, surrogate=surrogate, p=p, training=training,
             use_batch_stats=statistics != "running")


def make_unit_inputs(device, dtype=F32, T=4, shape=(2, 3, 5, 7), seed=0):
    x = make_conv_output(T, shape, dtype, "5d", device, seed=seed)
    bn = make_bn(x, "batch", device)
    params = make_params(shape[1], "sigmoid", device)
    return x, bn, params


@pytest.mark.interpret
@pytest.mark.parametrize("p", [0.3, 1.0])
def test_recompute_and_stored_membrane_agree(p, device, monkeypatch):
    """T = 6 through the recomputing backward and through the stored-u backward: bit-identical
    output and gradients (the same spike decisions and the same arithmetic)."""
    x, bn, params = make_unit_inputs(device, dtype=BF16, T=6)
    r = (0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).to(BF16)
    results = []
    for max_t in (8, 0):
        monkeypatch.setattr(bn_mod, "RECOMPUTE_MAX_T", max_t)
        leaves = [x.detach().clone().requires_grad_(), r.clone().requires_grad_()]
        y = bn_lif_fused(leaves[0], *bn[:4], *params, residual=leaves[1], p=p, seed=9)
        grads = torch.autograd.grad((y.float() * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum(),
                                    leaves + [bn[0], bn[1]] + params)
        results.append((y, grads))
    (y8, g8), (y0, g0) = results
    assert torch.equal(y8, y0)
    for a, b in zip(g8, g0):
        assert torch.equal(a, b)


@pytest.mark.interpret
@pytest.mark.parametrize("layout,T", [("3d", 3), ("5d", 3), ("channels_last", 10)])
def test_per_tile_sums_in_groups_agree_with_one_pass(layout, T, device, monkeypatch):
    """Many tiles: the statistics' and the backward's per-tile sums (per channel and the neuron's
    scalars) summed in groups first, then the groups, give what one pass over the tiles gives (to
    float32 rounding), and the group stage runs for all three tables."""
    small_tiles(monkeypatch)
    x = make_conv_output(T, SHAPES[layout], F32, layout, device)
    bn = make_bn(x, "batch", device)
    params = make_params(SHAPES[layout][1], "sigmoid", device)
    grouped = []
    group_tiles = bn_mod._group_tiles

    def spy(table, direct_max):
        out = group_tiles(table, direct_max)
        grouped.append(out.shape[1] < table.shape[1])
        return out

    monkeypatch.setattr(bn_mod, "_group_tiles", spy)
    results = []
    for direct_max in (1, 10**9):
        monkeypatch.setattr(bn_mod, "DIRECT_MAX_TILES", direct_max)
        leaf = x.detach().clone().requires_grad_()
        running = [t.clone() for t in bn[2:4]]
        y = bn_lif_fused(leaf, *bn[:2], *running, *params, seed=5)
        grads = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum(),
                                    [leaf, bn[0], bn[1]] + params)
        results.append((y, running, grads))
    assert grouped == [True, True, True, False, False, False]
    (y_g, run_g, g_g), (y_d, run_d, g_d) = results
    torch.testing.assert_close(y_g, y_d, rtol=1e-5, atol=1e-6)
    for a, b in zip(run_g + list(g_g), run_d + list(g_d)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.interpret
@pytest.mark.parametrize("layout,T", [("5d", 5), ("5d_x4", 3), ("5d_x4", 6), ("channels_last_x4", 4),
                                      ("channels_last", 10), ("5d_x4", 11)])
def test_mask_is_that_of_lif_fused(layout, T, device):
    """Same seed, same memory layout: the fused op draws the spike-mode mask ``lif_fused`` draws,
    whether its tiles share a Philox call per group of 4 (or per row of 2) or draw it per element, T
    unrolled or in the loop (T > 8)."""
    from asgl.kernels.lif import lif_fused

    x = make_conv_output(T, SHAPES[layout], F32, layout, device)
    bn = make_bn(x, "batch", device)
    params = make_params(SHAPES[layout][1], "sigmoid", device)
    _, mask = bn_lif_fused(x, *bn[:4], *params, p=0.3, seed=21, return_mask=True)
    _, mask_lif = lif_fused(x, *params, p=0.3, seed=21, return_mask=True)
    assert torch.equal(mask, mask_lif)
    analog = (~mask).float().mean().item()
    assert abs(analog - 0.3) < 3 * math.sqrt(0.3 * 0.7 / mask.numel())


def module_pair(device, **kw):
    """The same BatchNormLIF on the triton and the torch backend (identical state)."""
    import asgl

    torch.manual_seed(3)
    fused = asgl.BatchNormLIF(6, backend="triton", **kw).to(device)
    ref = asgl.BatchNormLIF(6, backend="torch", **kw).to(device)
    with torch.no_grad():
        for t in fused.parameters():
            t.add_(0.1 * torch.randn_like(t))
        if fused.bn.affine:
            fused.bn.bias.add_(0.35)
            fused.bn.weight.mul_(0.6)
    ref.load_state_dict(fused.state_dict())
    return fused, ref


@pytest.mark.interpret
@pytest.mark.parametrize("kw", [
    pytest.param(dict(p=0.0, width_granularity="channel", learn_thresh=True), marks=pytest.mark.smoke),
    dict(p=1.0, reset="soft", surrogate="rectangle", momentum=None),
    dict(p=0.0, affine=False, track_running_stats=False, threshold_scale=0.7),
    dict(p=0.0, statistics="per_step"),
], ids=["sg-channel", "analog-cumulative", "no-affine-no-buffers", "per-step-statistics"])
def test_module_matches_torch_backend(kw, device):
    """asgl.BatchNormLIF: triton vs torch backend (= TimeBatchNorm then LIF) for two training steps
    (output, every parameter's gradient, running statistics) and then in eval; state dicts map onto
    the separate modules."""
    import asgl

    fused, ref = module_pair(device, **kw)
    bn_keys = ("momentum", "affine", "track_running_stats", "threshold_scale", "statistics")
    sep_bn = asgl.layers.TimeBatchNorm(6, **{k: kw[k] for k in bn_keys if k in kw})
    lif_kw = {k: v for k, v in kw.items() if k not in bn_keys}
    if lif_kw.get("width_granularity") == "channel":
        lif_kw["channels"] = 6
    sep_bn.load_state_dict(fused.bn.state_dict())
    asgl.LIF(**lif_kw).load_state_dict(fused.lif.state_dict())
    for step in range(2):
        x = make_conv_output(3, (2, 6, 4, 5), F32, "5d", device, seed=step)
        r = 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(step))
        y = fused(x, residual=r)
        y_ref = ref(x, residual=r)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        w = torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + step))
        fused.zero_grad()
        ref.zero_grad()
        (y * w).sum().backward()
        (y_ref * w).sum().backward()
        for (name, a), b in zip(fused.named_parameters(), ref.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")
        for (name, a), b in zip(fused.named_buffers(), ref.buffers()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    fused.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.interpret
def test_eval_writes_only_y_and_saves_nothing(device):
    import asgl

    fused, _ = module_pair(device)
    fused.eval()
    x = make_conv_output(3, (2, 6, 4, 5), BF16, "channels_last", device)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with torch.no_grad():
            y = fused(x)
    assert saved == [] and y.stride() == x.stride()
    assert isinstance(fused, asgl.BatchNormLIF)


def test_bad_input(device):
    import asgl

    m = asgl.BatchNormLIF(4, backend="torch")
    x = torch.randn(3, 2, 4, 5, device=device)
    with pytest.raises(ValueError, match="BatchNormLIF\\(4\\) expects x_seq"):
        m(torch.randn(3, 2, 5, 5, device=device))
    with pytest.raises(ValueError, match="3, 4 or 5 dims"):
        m(torch.randn(3, 2, 4, 5, 5, 5, device=device))
    with pytest.raises(ValueError, match="residual"):
        m(x, residual=torch.randn(3, 2, 4, 1, device=device))
    with pytest.raises(ValueError, match="x_seq"):
        bn_lif_fused(torch.randn(2, 4, device=device), None, None, None, None, *make_params(None, "sigmoid", device))
    params = make_params(4, "sigmoid", device)
    with pytest.raises(ValueError, match="weight"):
        bn_lif_fused(x, torch.ones(5), None, None, None, *params)
    with pytest.raises(ValueError, match="running statistics"):
        bn_lif_fused(x, None, None, None, None, *params, use_batch_stats=False)
    with pytest.raises(ValueError, match="residual must have x_seq's dtype"):
        bn_lif_fused(x, None, None, None, None, *params, residual=x.double())
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn_lif_fused(torch.randn(1, 1, 4, device=device), None, None, None, None, *params)
    with pytest.raises(ValueError, match="width_param"):
        bn_lif_fused(x, None, None, None, None, *make_params(3, "sigmoid", device))
    with pytest.raises(ValueError, match="p "):
        bn_lif_fused(x, None, None, None, None, *params, p=2.0)


class TrafficCounter:
    """Bytes each Triton launch moves, counted from the kernels under the interpreter.

    Every masked load and store of a launch is recorded by address; a launch's traffic is the
    number of distinct bytes it reads plus those it writes (each byte crosses DRAM once: the ideal
    cache), split into the ``[T, N]`` streams (addresses inside ``streams``, the tensors shaped like
    the input) and everything else (statistics, parameters, partial sums)."""

    def __init__(self, monkeypatch, streams):
        import numpy as np
        from triton.runtime import interpreter

        self.np = np
        self.streams = streams
        self.launches = []
        builder = interpreter.interpreter_builder
        set_grid_dim, load, store = builder.set_grid_dim, builder.create_masked_load, builder.create_masked_store

        def new_launch(*grid):
            self.launches.append({"load": [], "store": []})
            return set_grid_dim(*grid)

        def record(kind, ptrs, mask):
            size = ptrs.get_element_ty().primitive_bitwidth // 8
            addrs = np.asarray(ptrs.data).astype(np.uint64)[np.broadcast_to(np.asarray(mask.data, bool),
                                                                             np.shape(ptrs.data))]
            self.launches[-1][kind].append((addrs.ravel(), size))

        def counted_load(ptrs, mask, other, *args):
            record("load", ptrs, mask)
            return load(ptrs, mask, other, *args)

        def counted_store(ptrs, value, mask, *args):
            record("store", ptrs, mask)
            return store(ptrs, value, mask, *args)

        monkeypatch.setattr(builder, "set_grid_dim", new_launch)
        monkeypatch.setattr(builder, "create_masked_load", counted_load)
        monkeypatch.setattr(builder, "create_masked_store", counted_store)

    def _unique_bytes(self, records):
        np = self.np
        stream, other = 0, 0
        for size in {s for _, s in records}:
            addrs = np.unique(np.concatenate([a for a, s in records if s == size]))
            inside = np.zeros(addrs.shape, bool)
            for t in self.streams:
                lo = t.untyped_storage().data_ptr()
                inside |= (addrs >= lo) & (addrs < lo + t.untyped_storage().nbytes())
            stream += int(inside.sum()) * size
            other += int((~inside).sum()) * size
        return stream, other

    def totals(self):
        """``(stream bytes, other bytes)`` over all launches so far."""
        stream = other = 0
        for launch in self.launches:
            for kind in ("load", "store"):
                s, o = self._unique_bytes(launch[kind])
                stream += s
                other += o
        return stream, other


# PyTorch's native batch norm (today's path): forward = statistics (read x) + normalise (read x,
# write y); backward = reduce (read x, dy) + apply (read x, dy, write dx). Bytes per element in units
# of the storage size.
TORCH_BN_UNITS = 1 + 2 + 2 + 3


@pytest.mark.interpret
def test_bytes_per_element_step(device, monkeypatch):
    """A bf16 training step (T = 4, p = 0.3, every parameter learnable), counted from the kernels:
    fused BN+LIF <= 18 B per element-step and saves <= 2 B; today's path (PyTorch batch norm, then the
    fused LIF, whose kernels are counted the same way) is printed beside it (run with -s)."""
    from asgl.kernels.lif import lif_fused

    T, shape = 4, (2, 8, 16, 16)
    x = make_conv_output(T, shape, BF16, "5d", device).requires_grad_()
    weight, bias, running_mean, running_var, _ = make_bn(x, "batch", device)
    params = make_params(None, "sigmoid", device)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(4)).to(BF16)
    streams = [x, dy]
    alloc = bn_mod.alloc_like

    def recorded_alloc(like, dtype=None):
        out = alloc(like, dtype)
        streams.append(out)
        return out

    monkeypatch.setattr(bn_mod, "alloc_like", recorded_alloc)
    counter = TrafficCounter(monkeypatch, streams)
    saved = {}

    def pack(t):
        if t.numel() >= x.numel() // T:  # the [T, N] tensors (parameters, statistics, the seed aside)
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = bn_lif_fused(x, weight, bias, running_mean, running_var, *params, p=0.3, seed=3)
    y.backward(dy)
    streams.append(y)
    stream, other = counter.totals()
    elem_steps = x.numel()
    fused_bytes = stream / elem_steps
    fused_saved = sum(saved.values()) / elem_steps

    # today: PyTorch batch norm (modelled above), then lif_fused (counted)
    import asgl.kernels.lif as lif_mod

    counter_lif = TrafficCounter(monkeypatch, [])
    lif_alloc = lif_mod.alloc_like

    def recorded_lif_alloc(like, dtype=None):
        out = lif_alloc(like, dtype)
        counter_lif.streams.append(out)
        return out

    monkeypatch.setattr(lif_mod, "alloc_like", recorded_lif_alloc)
    z = torch.nn.functional.batch_norm(x.detach().flatten(0, 1), None, None, weight.detach(), bias.detach(),
                                       True).view(x.shape).requires_grad_()
    counter_lif.streams += [z, dy]
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y_lif = lif_fused(z, *params, p=0.3, seed=3)
    y_lif.backward(dy)
    counter_lif.streams.append(y_lif)
    lif_stream, _ = counter_lif.totals()
    today_bytes = lif_stream / elem_steps + TORCH_BN_UNITS * x.element_size()
    today_saved = sum(saved.values()) / elem_steps + x.element_size()  # + batch norm's saved input
    print(f"\nbf16 training step, bytes per element-step: fused BN+LIF {fused_bytes:.2f} "
          f"(+{other / elem_steps:.3f} statistics, parameters, partial sums), today {today_bytes:.2f}; "
          f"saved for backward: fused {fused_saved:.2f}, today {today_saved:.2f}")
    assert fused_bytes <= 18.0
    assert other / elem_steps < 0.05 * fused_bytes
    assert fused_saved <= 2.0 and fused_saved > 0
    assert today_bytes >= 1.5 * fused_bytes


@pytest.mark.interpret
def test_torch_compile_fullgraph(device):
    """A conv -> BatchNormLIF unit with a shortcut compiles with fullgraph=True; the same output,
    gradients and running statistics as eager for the same torch seed."""

    torch.manual_seed(0)
    from asgl.models.units import ConvBNLIF

    neuron_kwargs = dict(p=0.3, width_granularity="channel", backend="triton")
    unit = ConvBNLIF(3, 4, neuron_kwargs, 3, 1).to(device)
    twin = ConvBNLIF(3, 4, neuron_kwargs, 3, 1).to(device)
    twin.load_state_dict(unit.state_dict())
    x = torch.randn(3, 2, 3, 5, 5, device=device)
    r = torch.randn(3, 2, 4, 5, 5, device=device)
    compiled = torch.compile(twin, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
    torch.manual_seed(9)
    y = unit(x, residual=r)
    g = torch.autograd.grad(y.sum(), list(unit.parameters()))
    torch.manual_seed(9)
    y_c = compiled(x, residual=r)
    g_c = torch.autograd.grad(y_c.sum(), list(twin.parameters()))
    assert torch.equal(y, y_c)
    for a, b in zip(g, g_c):
        torch.testing.assert_close(a, b)
    for a, b in zip(unit.buffers(), twin.buffers()):
        torch.testing.assert_close(a, b)


def check_against_float64(fused, torch32, ref64, what, atol=1e-6):
    """The tolerance rule at network depth: ``max|fused - ref64| <= 2·max|torch32 - ref64| + atol``,
    ref64 being the torch backend in float64 (fp32 summation orders differ through 20 layers)."""
    err = (fused.double() - ref64).abs().max().item()
    err_torch = (torch32.double() - ref64).abs().max().item()
    assert err <= 2 * err_torch + atol, f"{what}: max error {err:.3g} > 2 x {err_torch:.3g} (torch fp32) + {atol}"


@pytest.mark.interpret
def test_resnet18_triton_matches_torch(device):
    """ResNet-18, T = 4, on the triton backend (interpreter: every BN -> LIF tail fused) against the
    same network on the torch backend (batch norm, then the reference neuron): logits, every
    parameter gradient and the running statistics after one training step, and the logits in eval,
    by the rule of :func:`check_against_float64`. p = 0 and p = 1 in alternate layers, so one pass
    runs both modes (the two backends draw different masks for 0 < p < 1)."""
    import copy

    import asgl

    torch.manual_seed(0)
    # channels-last memory: the layout a fast training run uses, and the one whose tiles span
    # 64 channels (far fewer programs to interpret than one channel per program)
    model = asgl.create_model("resnet18", T=4, num_classes=10, backend="torch",
                              width_granularity="channel").to(device, memory_format=torch.channels_last)
    for i, lif in enumerate(asgl.neurons(model)):  # spikes (p = 0) and the relaxation (p = 1), alternately
        lif.p = float(i % 2)
    assert {lif.p for lif in asgl.neurons(model)} == {0.0, 1.0}
    with torch.no_grad():  # β = 0.3: every layer fires (5-50%) at this small input
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.bias.fill_(0.3)
    fused = copy.deepcopy(model)
    for m in asgl.neurons(fused):
        m.backend = "triton"
    n_fused = sum(isinstance(m, asgl.BatchNormLIF) for m in fused.modules())
    assert n_fused == 17, n_fused  # stem + 2 per block: every BN feeds its neuron directly
    model64 = copy.deepcopy(model).double()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(device,
                                                                          memory_format=torch.channels_last)
    target = torch.tensor([3, 7], device=device)
    nets = (fused, model, model64)
    logits = [net(x.to(next(net.parameters()).dtype)) for net in nets]
    check_against_float64(*logits, "logits")
    for net, out in zip(nets, logits):
        asgl.mean_ce_loss(out, target).backward()
    named = [dict(net.named_parameters()) for net in nets]
    assert named[0].keys() == named[1].keys() == named[2].keys()
    for name in named[1]:
        check_against_float64(named[0][name].grad, named[1][name].grad, named[2][name].grad, f"{name} grad")
    buffers = [dict(net.named_buffers()) for net in nets]
    for name in buffers[1]:
        check_against_float64(buffers[0][name], buffers[1][name], buffers[2][name], name)
    with torch.no_grad():
        logits = [net.eval()(x.to(next(net.parameters()).dtype)) for net in nets]
    check_against_float64(*logits, "eval logits")


@pytest.mark.interpret
def test_module_casts_a_shortcut_of_another_dtype(device):
    """Under autocast a shortcut can arrive in another dtype: the module adds it in x's dtype."""
    fused, ref = module_pair(device)
    x = make_conv_output(3, (2, 6, 4, 5), F32, "5d", device)
    r = (0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).to(BF16)
    y = fused(x, residual=r)
    assert y.dtype == F32
    torch.testing.assert_close(y, ref(x, residual=r.float()), rtol=1e-5, atol=1e-5)


def test_bench_script_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("the CPU message only")
    from perf.bench_bn_lif import main

    assert main(["--quick"]) == 0
    assert "NO CUDA" in capsys.readouterr().out
