"""The fused LIF kernels at GPU sizes (skipped without CUDA); nothing here depends on timing.

Same checks as ``test_lif_kernel.py`` (fused vs reference with the mask replayed, every
gradient) at the sizes the networks use, plus a ``T·N > 2**31`` case for the int64 addressing.
"""

from __future__ import annotations

import pytest
import torch

from asgl.kernels.lif import lif_fused
from test_lif_kernel import (
    MAX_DIVERGED_PER_STEP,
    diverged_neurons,
    fused_membrane,
    make_input,
    make_params,
    reference_rounded,
    run_case,
)

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_large_n(dtype):
    """T = 4, N = 2**22 + 3 (ragged), channel widths (a [T, B, C, L] conv-like layout)."""
    x = make_input((4, 16, 64, 4096 + 3), dtype, "cuda")
    params = make_params(64, "sigmoid", "cuda")
    run_case(x, params, reset="hard", v_reset=0.0, surrogate="sigmoid", p=0.2, training=True)


def test_long_sequence():
    """T = 250 (the SHD recipe), [T, B, F] with a per-feature rectangle width, float32."""
    x = make_input((250, 64, 241), torch.float32, "cuda")
    params = make_params(241, "rectangle", "cuda")
    run_case(x, params, reset="soft", v_reset=0.0, surrogate="rectangle", p=0.1, training=True)


@pytest.mark.parametrize("T", [250, 1000])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_long_sequence_low_precision(dtype, T):
    """T = 250 and 1000 in a low dtype. Against float32 every neuron drifts across a decision edge
    at some point over hundreds of steps, so the check is against the reference steps with the
    kernel's membrane rounding (``reference_rounded``): neurons whose stored membrane equals the
    emulation's at every step (all but a bounded few) must match it, y and dx to one storage ulp,
    the parameter gradients over them to 1e-4."""
    B, F = 64, 241
    x = make_input((T, B, F), dtype, "cuda").requires_grad_()
    params = make_params(F, "rectangle", "cuda")
    kw = dict(reset="soft", v_reset=0.0, surrogate="rectangle", training=True)
    y, mask = lif_fused(x, *params, p=0.1, seed=3, return_mask=True, **kw)
    xr = x.detach().float().requires_grad_()
    yr, u_rounded = reference_rounded(xr, *params, dtype=dtype, mask=mask, return_membrane=True, **kw)
    u_fused = fused_membrane(x, params, p=0.1, seed=3, **kw)
    keep = ~diverged_neurons(u_fused, u_rounded, MAX_DIVERGED_PER_STEP, T)
    w = torch.randn(x.shape, device="cuda").to(dtype).float() * keep
    g = torch.autograd.grad((y.float() * w).sum(), [x, *params])
    gr = torch.autograd.grad((yr * w).sum(), [xr, *params])
    ulp = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
    k = keep.expand_as(y)
    torch.testing.assert_close(y.float()[k], yr.detach().to(dtype).float()[k], rtol=ulp, atol=ulp)
    torch.testing.assert_close(g[0].float(), gr[0].to(dtype).float(), rtol=ulp, atol=ulp)
    for a, b in zip(g[1:], gr[1:]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_channels_last_large():
    T, B, C, H, W = 4, 32, 64, 32, 32
    x = make_input((T, B, H, W, C), torch.bfloat16, "cuda").permute(0, 1, 4, 2, 3)
    params = make_params(C, "sigmoid", "cuda")
    y, _ = run_case(x, params, reset="hard", v_reset=0.0, surrogate="sigmoid", p=0.2, training=True)
    assert y.stride() == x.stride()


def test_int64_addressing():
    """T·N = 3·(2**30 + 3) > 2**31 (bf16: 6.4 GB per [T, N] tensor, about 60 GB at the peak).

    Neurons are independent with a layer-wide width, so the forward, the mask and dx at a few
    slices far apart (beyond 2**31 in t·N + n) are checked against the reference steps (with the
    kernel's membrane rounding) on those slices, to one bf16 ulp.
    """
    T, N = 3, 2**30 + 3
    free, _ = torch.cuda.mem_get_info()
    if free < 64 * 2**30:
        pytest.skip(f"needs ~64 GiB of free GPU memory, {free / 2**30:.0f} GiB free")
    x = torch.empty((T, N), dtype=torch.bfloat16, device="cuda")
    x.normal_(0.35, 0.6, generator=torch.Generator(device="cuda").manual_seed(0))
    x.requires_grad_()
    params = make_params(None, "sigmoid", "cuda")
    y, mask = lif_fused(x, *params, p=0.3, seed=77, return_mask=True)
    slices = [slice(0, 4096), slice(N // 2, N // 2 + 4096), slice(N - 4099, N)]
    w = torch.zeros((T, N), dtype=torch.bfloat16, device="cuda")
    for s in slices:
        w[:, s] = 1.0
    (dx,) = torch.autograd.grad((y * w).sum(), [x])
    u_fused = fused_membrane(x, params, reset="hard", v_reset=0.0, surrogate="sigmoid", p=0.3, training=True,
                             seed=77)
    ulp = 2.0**-7
    for s in slices:
        analog = (~mask[:, s]).float().mean().item()
        assert abs(analog - 0.3) < 0.02
        xs = x.detach()[:, s].float().requires_grad_()
        ys, u_rounded = reference_rounded(xs, *params, reset="hard", v_reset=0.0, surrogate="sigmoid",
                                          training=True, mask=mask[:, s], dtype=torch.bfloat16, return_membrane=True)
        keep = ~diverged_neurons(u_fused[:, s], u_rounded, MAX_DIVERGED_PER_STEP, T)
        (dxs,) = torch.autograd.grad(ys.sum(), [xs])
        y_ref = ys.detach().bfloat16().float()
        torch.testing.assert_close(y[:, s].float()[:, keep], y_ref[:, keep], rtol=ulp, atol=ulp)
        torch.testing.assert_close(dx[:, s].float()[:, keep], dxs.bfloat16().float()[:, keep], rtol=ulp, atol=ulp)
