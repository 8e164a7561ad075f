"""Batch norm fused into the ASGL neuron: :class:`BatchNormLIF`.

In every network of the paper a convolution (or linear layer) feeds a time-folded batch norm that
feeds a LIF neuron, and at the end of a residual block ``BN(conv) + shortcut`` feeds the neuron.
:class:`BatchNormLIF` is that ``BN (+ shortcut) -> LIF`` tail as one module: on the ``torch``
backend it runs the op's reference :func:`asgl.kernels.bn_lif_ref.bn_lif_ref` (``F.batch_norm`` on the
time-folded tensor, then the LIF reference: ``LIF(TimeBatchNorm(x) + shortcut)``); on the ``triton``
backend :func:`asgl.kernels.bn_lif.bn_lif_fused` (statistics, normalisation, shortcut and the neuron
in one pass each way, and only x saved for backward for T <= 8).

Every network uses it: its conv -> BN -> LIF units (:class:`asgl.models.units.ConvBNLIF`) end in
one, and a residual block's second unit takes the shortcut::

    y = unit(x_seq)                                   # LIF(BN(conv(x)))
    y = tail(h_seq, residual=shortcut(x_seq))         # LIF(BN(conv(h)) + shortcut)

State dicts: ``bn`` holds BN's ``weight``, ``bias``, ``running_mean``, ``running_var``,
``num_batches_tracked`` and ``lif`` the neuron's parameters and buffers, under the same names as in
the separate modules. ``fused = False`` runs the batch norm and then the neuron on its own backend
(the unfused composition: for comparisons and debugging).
"""

from __future__ import annotations

import torch
from torch import nn

from asgl.kernels.bn_lif_ref import bn_lif_ref

from . import functional as F
from .layers import TimeBatchNorm
from .neuron import LIF

__all__ = ["BatchNormLIF", "neuron_output_module"]


class BatchNormLIF(nn.Module):
    """``forward(x_seq, residual=None) = LIF(TimeBatchNorm(x_seq) + residual)``, fused on the triton backend.

    ``x_seq`` is ``[T, B, C]``, ``[T, B, C, L]`` or ``[T, B, C, H, W]`` (per-step inputs ``[B, C]``
    or ``[B, C, ...]``); ``residual`` (the shortcut) has its shape. Batch statistics per channel over
    ``T·B·...`` in training (biased variance to normalise, running mean and unbiased running variance
    updated with ``momentum``), running statistics in eval, as ``nn.BatchNorm2d`` does.

    Args:
        channels: C, dim 2 of the input.
        eps, momentum, affine, track_running_stats, threshold_scale, statistics: of the batch norm
            (:class:`asgl.layers.TimeBatchNorm`; ``threshold_scale`` = α·V_th of threshold-scaled tdBN;
            ``statistics="per_step"``, the authors' per-step BN, trains unfused: BN, then the neuron).
        **lif_kwargs: of :class:`asgl.LIF` (``channels`` is set for a channel-wise width). Its
            ``backend`` picks the path for the whole module.
    """

    def __init__(self, channels: int, *, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, threshold_scale: float | None = None,
                 statistics: str = "folded", **lif_kwargs):
        super().__init__()
        self.bn = TimeBatchNorm(channels, eps=eps, momentum=momentum, affine=affine,
                                track_running_stats=track_running_stats, threshold_scale=threshold_scale,
                                statistics=statistics)
        if lif_kwargs.get("width_granularity") == "channel":
            lif_kwargs.setdefault("channels", channels)
        self.lif = LIF(**lif_kwargs)
        self.channels = channels
        self.fused = True

    def _check(self, x_seq: torch.Tensor, residual: torch.Tensor | None) -> None:
        if not isinstance(x_seq, torch.Tensor) or x_seq.dim() not in (3, 4, 5) or x_seq.shape[2] != self.channels:
            got = tuple(x_seq.shape) if isinstance(x_seq, torch.Tensor) else type(x_seq).__name__
            raise ValueError(f"BatchNormLIF({self.channels}) expects x_seq [T, B, {self.channels}, ...] with 3, 4 "
                             f"or 5 dims, got {got}")
        if residual is not None and (not isinstance(residual, torch.Tensor) or residual.shape != x_seq.shape):
            got = tuple(residual.shape) if isinstance(residual, torch.Tensor) else type(residual).__name__
            raise ValueError(f"residual (the shortcut) must have x_seq's shape {tuple(x_seq.shape)}, got {got}")
        self.lif.check_input(x_seq)

    def forward(self, x_seq: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x_seq, residual)
        lif, bn = self.lif, self.bn
        # per-step batch statistics (the authors' TemporalBN) have no fused op: BN, then the neuron
        if not self.fused or (bn.statistics == "per_step" and bn.training):
            z = bn(x_seq)
            return lif(z if residual is None else z + residual)
        if residual is not None and residual.dtype != x_seq.dtype:
            # under autocast the shortcut may come out of another op in another dtype: the kernel
            # adds it in float32 registers either way, and stores in x's dtype
            residual = residual.to(x_seq.dtype)
        momentum = 0.0 if bn.momentum is None else bn.momentum
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:
                momentum = 1.0 / float(bn.num_batches_tracked)
        args = (x_seq, bn.weight, bn.bias, bn.running_mean, bn.running_var, lif.decay_logit, lif.width_param,
                lif.thresh)
        kwargs = dict(residual=residual, use_batch_stats=bn.training or not bn.track_running_stats,
                      momentum=momentum, eps=bn.eps, threshold_scale=bn.threshold_scale, reset=lif.reset,
                      v_reset=lif.v_reset, surrogate=lif.surrogate, p=lif.p, training=lif.training)
        if F.resolve_backend(lif.backend, x_seq, fused_module="asgl.kernels.bn_lif") == "torch":
            return bn_lif_ref(*args, **kwargs)
        from asgl.kernels.bn_lif import bn_lif_fused

        return bn_lif_fused(*args, **kwargs, seed=F.draw_seed(x_seq.device))

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def neuron_output_module(model: nn.Module, lif: LIF) -> nn.Module:
    """The module of ``model`` whose forward returns ``lif``'s output, for forward hooks that read
    neuron outputs: the :class:`BatchNormLIF` that owns ``lif`` (its fused op and its reference
    compute the neuron without calling the child), else ``lif`` itself."""
    return next((m for m in model.modules() if isinstance(m, BatchNormLIF) and m.lif is lif), lif)
