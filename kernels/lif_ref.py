"""Plain-PyTorch reference of the multi-step ASGL LIF neuron.

This is the one reference of the op: the ``torch`` backend of :class:`asgl.LIF`, the tests of the
fused Triton kernel and the benchmarks all call it. It is a loop over time steps, written to read
like the equations (``docs/ASGL.md`` §1–2), not to be fast.

For t = 0..T-1, with v[-1] = 0::

    λ     = sigmoid(decay_logit)
    u[t]  = λ·v[t-1] + x[t]
    z[t]  = u[t] - θ
    S[t]  = 1[z[t] >= 0]
    H[t]  = H_α(z[t])                       sigmoid: sigmoid(k·z);  rectangle: clamp(k·z + 1/2, 0, 1)
    o[t]  = m[t]·S[t] + (1 - m[t])·H[t]     value; m[t] = 1 is spike mode (eval: o = S)
    ∂o/∂z = H_α'(z)                         for every element (straight-through onto H_α)
    v[t]  = u[t]·(1 - o[t]) + v_reset·o[t]  hard reset;  soft: v[t] = u[t] - θ·o[t]
    y[t]  = θ·o[t]

The slope ``k = 1/α`` comes from ``width_param``: sigmoid stores ``k`` itself, rectangle stores
``log k``. ``width_param`` is a scalar (one width per layer) or has one entry per channel, the
channel being dim 2 of ``x_seq`` (``[T, B, C, ...]`` or ``[T, B, F]``).

The rectangle's derivative is ``k`` on the closed interval ``0 <= k·z + 1/2 <= 1`` (PyTorch's
``clamp`` backward); the fused kernel uses the same convention.
"""

from __future__ import annotations

import torch

RESETS = ("hard", "soft")
SURROGATES = ("sigmoid", "rectangle")


def slope_from_width_param(width_param: torch.Tensor, surrogate: str) -> torch.Tensor:
    """The slope ``k = 1/α`` that ``width_param`` stores (sigmoid: ``k``; rectangle: ``log k``)."""
    if surrogate == "sigmoid":
        return width_param
    if surrogate == "rectangle":
        return torch.exp(width_param)
    raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")


def width_param_from_width(width: float, surrogate: str) -> float:
    """Inverse of :func:`slope_from_width_param` for a width ``α > 0``."""
    import math

    if surrogate == "sigmoid":
        return 1.0 / width
    if surrogate == "rectangle":
        return -math.log(width)
    raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")


def relaxation_ref(z: torch.Tensor, slope: torch.Tensor, surrogate: str) -> torch.Tensor:
    """``H_α(z)`` with slope ``k = 1/α`` (already broadcast against ``z``)."""
    if surrogate == "sigmoid":
        return torch.sigmoid(slope * z)
    if surrogate == "rectangle":
        return torch.clamp(slope * z + 0.5, 0.0, 1.0)
    raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")


def spike_mask_ref(shape, p: float, *, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli(1 - p) mask, ``True`` = spike mode, drawn i.i.d. per element and time step."""
    if p <= 0.0:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if p >= 1.0:
        return torch.zeros(shape, dtype=torch.bool, device=device)
    return torch.rand(shape, device=device, generator=generator) >= p


def _broadcast_width(slope: torch.Tensor, x_step: torch.Tensor) -> torch.Tensor:
    """Shape ``slope`` (``[]`` or ``[C]``) to broadcast over one step ``[B, C, ...]``."""
    if slope.dim() == 0:
        return slope
    return slope.reshape((1, slope.shape[0]) + (1,) * (x_step.dim() - 2))


def lif_ref(
    x_seq: torch.Tensor,
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
    """Multi-step ASGL LIF, ``x_seq [T, B, ...] -> y_seq`` of the same shape and dtype.

    Args:
        x_seq: input current, time first. Channel-wise widths need ``x_seq.dim() >= 3``.
        decay_logit: scalar tensor; the leak is ``sigmoid(decay_logit)``.
        width_param: scalar or ``[C]`` tensor (see module docstring for its meaning).
        thresh: threshold θ, float or scalar tensor.
        reset: ``"hard"`` (to ``v_reset``) or ``"soft"`` (subtract θ·o).
        p: probability that an element emits the analog ``H_α(z)`` instead of the spike (training).
        training: ``False`` gives pure spikes (``o = S``) and ignores ``p`` and ``mask``.
        mask: optional bool tensor shaped like ``x_seq``, ``True`` = spike mode; replays a mask
            (for instance the one a fused kernel drew). Drawn from ``generator`` when omitted.

    All arithmetic runs in ``x_seq.dtype`` (parameters are cast to it), so calling it on a float32
    copy of a low-precision input gives the float32 reference.
    """
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
    if x_seq.dim() < 2:
        raise ValueError(f"x_seq must be [T, B, ...] with at least 2 dims, got shape {tuple(x_seq.shape)}")
    dtype = x_seq.dtype
    lam = torch.sigmoid(decay_logit.to(torch.promote_types(decay_logit.dtype, torch.float32))).to(dtype)
    slope = _broadcast_width(slope_from_width_param(width_param, surrogate).to(dtype), x_seq[0])
    theta = thresh.to(dtype) if isinstance(thresh, torch.Tensor) else thresh
    if training and mask is None:
        mask = spike_mask_ref(x_seq.shape, p, device=x_seq.device, generator=generator)

    v = torch.zeros_like(x_seq[0])
    ys = []
    for t in range(x_seq.shape[0]):
        u = lam * v + x_seq[t]
        o, v = lif_step_ref(u, theta, slope, surrogate, reset, v_reset, mask[t] if training else None)
        ys.append(theta * o)
    return torch.stack(ys)


def lif_step_ref(u, theta, slope, surrogate: str, reset: str, v_reset: float, mask_t):
    """One step after the membrane update: ``u[t] -> (o[t], v[t])``.

    ``mask_t`` is the bool spike-mode mask of this step, or ``None`` for pure spikes (eval).
    Shared by the feed-forward and the recurrent references.
    """
    z = u - theta
    spike = (z >= 0).to(u.dtype)
    h = relaxation_ref(z, slope, surrogate)
    if mask_t is None:
        o = h + (spike - h).detach()
    else:
        # value m·S + (1-m)·H, gradient through H for every element
        o = h + (mask_t.to(u.dtype) * (spike - h)).detach()
    if reset == "hard":
        v = u * (1.0 - o) + v_reset * o
    else:
        v = u - theta * o
    return o, v
