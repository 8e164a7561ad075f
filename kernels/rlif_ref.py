"""Plain-PyTorch reference of the recurrent ASGL LIF layer (the SHD network's hidden layer).

For t = 0..T-1, with v[-1] = 0 and o[-1] = 0::

    u[t] = λ·v[t-1] + wx[t] + o[t-1] @ Rᵀ
    o[t], v[t] = the LIF step of :func:`asgl.kernels.lif_ref.lif_step_ref` (hybrid output, reset)
    y[t] = θ·o[t]

``wx_seq = x_seq @ Wᵀ`` is the input projection for all steps, computed by the caller as one
matmul. The recurrence feeds back ``o`` (not ``y = θ·o``), as in ``docs/ASGL.md`` and the
recurrent-layer issue.
"""

from __future__ import annotations

import torch

from .lif_ref import RESETS, lif_step_ref, slope_from_width_param, spike_mask_ref


def recurrent_lif_ref(
    wx_seq: torch.Tensor,
    recurrent_weight: torch.Tensor,
    decay_logit: torch.Tensor,
    width_param: torch.Tensor,
    thresh: torch.Tensor | float,
    *,
    reset: str = "hard",
    v_reset: float = 0.0,
    surrogate: str = "sigmoid",
    p: float = 0.0,
    training: bool = True,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Recurrent multi-step ASGL LIF: ``wx_seq [T, B, H]``, ``recurrent_weight [H, H]`` -> ``y [T, B, H]``.

    Other arguments as in :func:`asgl.kernels.lif_ref.lif_ref`; a ``[H]`` ``width_param`` is one
    width per hidden unit.
    """
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
    if wx_seq.dim() != 3:
        raise ValueError(f"wx_seq must be [T, B, H], got shape {tuple(wx_seq.shape)}")
    dtype = wx_seq.dtype
    lam = torch.sigmoid(decay_logit.to(torch.promote_types(decay_logit.dtype, torch.float32))).to(dtype)
    slope = slope_from_width_param(width_param, surrogate).to(dtype)
    theta = thresh.to(dtype) if isinstance(thresh, torch.Tensor) else thresh
    rec = recurrent_weight.to(dtype)
    if training and mask is None:
        mask = spike_mask_ref(wx_seq.shape, p, device=wx_seq.device, generator=generator)

    v = torch.zeros_like(wx_seq[0])
    o = torch.zeros_like(wx_seq[0])
    ys = []
    for t in range(wx_seq.shape[0]):
        u = lam * v + wx_seq[t] + o @ rec.t()
        o, v = lif_step_ref(u, theta, slope, surrogate, reset, v_reset, mask[t] if training else None)
        ys.append(theta * o)
    return torch.stack(ys)
