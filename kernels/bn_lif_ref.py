"""Plain-PyTorch reference of the fused time-folded batch norm + ASGL LIF (``asgl.kernels.bn_lif``).

The one reference of the op: the ``torch`` backend of :class:`asgl.BatchNormLIF`, the tests of the
fused kernels and the benchmarks call it. Batch norm over ``T·B·...`` per channel (tdBN,
``docs/ASGL.md`` §4) on the time-folded tensor, the shortcut added, then
:func:`asgl.kernels.lif_ref.lif_ref`::

    in = γ_c·s·(x - μ_c)/sqrt(σ²_c + ε) + β_c (+ residual);     y = LIF(in)

with the batch's statistics (biased variance) or the running estimates, the running buffers
updated in place as ``F.batch_norm`` does, ``s = threshold_scale`` (1 when None).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .lif_ref import lif_ref


def check_bn_args(x_seq, residual, weight, bias, running_mean, running_var, *, use_batch_stats, momentum, eps,
                  threshold_scale):
    if x_seq.dim() not in (3, 4, 5):
        raise ValueError(f"x_seq must be [T, B, C], [T, B, C, L] or [T, B, C, H, W] (3-5 dims), "
                         f"got shape {tuple(x_seq.shape)}")
    C = x_seq.shape[2]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if t is not None and (not isinstance(t, Tensor) or tuple(t.shape) != (C,) or not t.is_floating_point()):
            raise ValueError(f"{name} must be None or a float tensor of shape [{C}] (the channels of x_seq, "
                             f"dim 2), got {tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    if not use_batch_stats and running_mean is None:
        raise ValueError("normalising with running statistics (eval mode) needs running_mean and running_var; "
                         "got None (a batch norm built with track_running_stats=False uses batch statistics)")
    if residual is not None:
        if not isinstance(residual, Tensor) or residual.shape != x_seq.shape:
            got = tuple(residual.shape) if isinstance(residual, Tensor) else type(residual).__name__
            raise ValueError(f"residual (the shortcut) must have x_seq's shape {tuple(x_seq.shape)}, got {got}")
        if residual.dtype != x_seq.dtype or residual.device != x_seq.device:
            raise ValueError(f"residual must have x_seq's dtype {x_seq.dtype} and device {x_seq.device}, "
                             f"got {residual.dtype} on {residual.device}")
    if use_batch_stats and x_seq.numel() // max(C, 1) <= 1:
        raise ValueError(f"batch statistics need more than 1 value per channel, got x_seq of shape "
                         f"{tuple(x_seq.shape)}")
    if momentum is not None and not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"momentum must be None or in [0, 1], got {momentum!r}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be a number > 0, got {eps!r}")
    if threshold_scale is not None and not (isinstance(threshold_scale, (int, float)) and threshold_scale > 0):
        raise ValueError(f"threshold_scale must be None or a number > 0, got {threshold_scale!r}")


def bn_lif_ref(
    x_seq: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
    running_var: Tensor | None, decay_logit: Tensor, width_param: Tensor, thresh: Tensor | float, *,
    residual: Tensor | None = None, use_batch_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5,
    threshold_scale: float | None = None, **lif_kwargs,
) -> Tensor:
    """Reference: time-folded batch norm of ``x_seq [T, B, C, ...]`` (+ ``residual``), then
    :func:`asgl.kernels.lif_ref.lif_ref` (``lif_kwargs``: reset, v_reset, surrogate, p, training, mask,
    generator). Updates the running statistics in place as ``F.batch_norm`` does."""
    check_bn_args(x_seq, residual, weight, bias, running_mean, running_var, use_batch_stats=use_batch_stats,
                  momentum=momentum, eps=eps, threshold_scale=threshold_scale)
    if threshold_scale is not None:
        if weight is None:  # in the running buffers' dtype: batch_norm wants them alike
            weight = x_seq.new_ones(x_seq.shape[2], dtype=(running_mean if running_mean is not None else x_seq).dtype)
        weight = weight * threshold_scale
    folded = torch.nn.functional.batch_norm(
        x_seq.flatten(0, 1), running_mean, running_var, weight, bias, use_batch_stats,
        0.0 if momentum is None else momentum, eps,
    ).view(x_seq.shape)
    if residual is not None:
        folded = folded + residual
    return lif_ref(folded, decay_logit, width_param, thresh, **lif_kwargs)
