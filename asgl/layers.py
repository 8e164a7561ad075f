"""Layers that carry a time axis, and the losses on per-step logits.

Spiking networks here pass sequences in the time-first layout ``[T, B, ...]``. Stateless layers
(convolution, linear, pooling, batch norm) have no memory across steps, so they run once on the
sequence with time folded into the batch, ``[T, B, ...] -> [T·B, ...]``: one big kernel launch
instead of T small ones, and the same result. Only the neurons (:class:`asgl.LIF`) see the time
axis.

Batch norm on the folded tensor normalises over ``T·B·H·W`` elements per channel: the "tdBN" of
the reference ASGL code (ASGL.md §4). The threshold-scaled variant of the tdBN paper is an option
(:class:`TimeBatchNorm2d` with ``threshold_scale``).

Losses take per-step logits ``o [T, B, K]`` (the non-spiking readout at every step):
:func:`mean_ce_loss` is cross-entropy on the T-mean, :func:`tet_loss` the TET loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = [
    "BN_STATISTICS",
    "SeqToANN",
    "TimeBatchNorm",
    "TimeBatchNorm1d",
    "TimeBatchNorm2d",
    "conv_bn",
    "fold_time",
    "image_sequence",
    "mean_ce_loss",
    "mean_over_time",
    "set_bn_statistics_",
    "tet_loss",
    "unfold_time",
]


def fold_time(x_seq: torch.Tensor) -> torch.Tensor:
    """Merge time into batch: ``[T, B, ...] -> [T·B, ...]`` (row ``t·B + b`` is step t, sample b).

    A view when ``x_seq`` is contiguous.
    """
    if x_seq.dim() < 2:
        raise ValueError(f"x_seq must be [T, B, ...] with at least 2 dims, got shape {tuple(x_seq.shape)}")
    return rearrange(x_seq, "t b ... -> (t b) ...")


def unfold_time(x: torch.Tensor, T: int) -> torch.Tensor:
    """Inverse of :func:`fold_time`: ``[T·B, ...] -> [T, B, ...]``."""
    if not (isinstance(T, int) and not isinstance(T, bool) and T > 0):
        raise ValueError(f"T (the number of time steps) must be a positive int, got {T!r}")
    if x.dim() < 1 or x.shape[0] % T != 0:
        raise ValueError(
            f"x must be [T·B, ...] with a leading dim divisible by T={T}, got shape {tuple(x.shape)}"
        )
    return rearrange(x, "(t b) ... -> t b ...", t=T)


class SeqToANN(nn.Module):
    """Run stateless modules on a sequence: ``[T, B, ...] -> fold -> modules -> unfold -> [T, B, ...]``.

    For layers with no state across steps (conv, linear, pooling, batch norm, flatten) this equals
    applying them at each step separately, except batch norm, whose training-mode statistics then
    cover all ``T·B`` samples (tdBN, see :class:`TimeBatchNorm2d`).
    """

    def __init__(self, *modules: nn.Module):
        super().__init__()
        if not modules:
            raise ValueError("SeqToANN needs at least one module")
        self.module = modules[0] if len(modules) == 1 else nn.Sequential(*modules)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        x = fold_time(x_seq)
        return unfold_time(self.module(x), x_seq.shape[0])


# Batch statistics of a time-folded BN: over T·B merged (tdBN) or per time step (the authors' TemporalBN)
BN_STATISTICS = ("folded", "per_step")


def set_bn_statistics_(model: nn.Module, statistics: str) -> nn.Module:
    """Set the batch statistics (``"folded"`` or ``"per_step"``) of every time-folded batch norm in
    ``model`` (those of :class:`asgl.BatchNormLIF` included); parameters and buffers are unchanged."""
    if statistics not in BN_STATISTICS:
        raise ValueError(f"statistics must be one of {BN_STATISTICS}, got {statistics!r}")
    for m in model.modules():
        if isinstance(m, _TimeBatchNorm):
            m.statistics = statistics
    return model


class _TimeBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over ``T·B`` merged, optionally scaled by ``α·V_th`` (threshold-scaled tdBN).

    ``forward(x_seq [T, B, C, ...]) -> [T, B, C, ...]``. Per channel c, with mean μ_c and biased
    variance σ²_c over all T·B (and spatial) elements in training, running estimates in eval:

        y = γ_c · s · (x - μ_c) / sqrt(σ²_c + ε) + β_c,     s = threshold_scale (1 when None)

    ``threshold_scale=None`` is ordinary BN on the folded tensor, the default of every network
    here (ASGL.md §4). ``statistics="per_step"`` normalises each time step with its own batch
    statistics instead (γ, β and the running buffers shared, the running estimates updated once per
    step in order t = 0 … T-1): one ``nn.BatchNorm2d`` applied at every step, the authors'
    ``TemporalBN`` of their DVS runs. Evaluation is the same either way (running statistics).

    A number ``s = α·V_th`` gives the threshold-dependent BN of the tdBN paper
    (Zheng et al., AAAI 2021): pre-activations are normalised to N(0, (α·V_th)²) so that their
    spread is matched to the threshold V_th of the neurons they feed; that paper uses α = 1, and
    α = 1/√2 for the two branches that are summed in a residual block. The scale multiplies the
    normalised value before the affine γ, β, so the running statistics are the same either way.
    """

    _seq_dims: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 threshold_scale: float | None = None, statistics: str = "folded"):
        if not (isinstance(num_features, int) and num_features > 0):
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        if statistics not in BN_STATISTICS:
            raise ValueError(f"statistics must be one of {BN_STATISTICS}, got {statistics!r}")
        if threshold_scale is not None and not (
            isinstance(threshold_scale, (int, float)) and math.isfinite(threshold_scale) and threshold_scale > 0
        ):
            raise ValueError(f"threshold_scale (α·V_th) must be None or a finite number > 0, got {threshold_scale!r}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.threshold_scale = None if threshold_scale is None else float(threshold_scale)
        self.statistics = statistics

    def _check_input_dim(self, x: torch.Tensor) -> None:
        # Called by the parent on the folded tensor [T·B, C, ...]; forward checked the sequence.
        if x.dim() + 1 not in self._seq_dims:
            raise ValueError(f"{type(self).__name__} got a folded tensor of shape {tuple(x.shape)}")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() not in self._seq_dims or x_seq.shape[2] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) expects x_seq [T, B, {self.num_features}, ...] "
                f"with {' or '.join(map(str, self._seq_dims))} dims, got shape {tuple(x_seq.shape)}"
            )
        if self.statistics == "per_step" and self.training:
            return torch.stack([self._normalise(x) for x in x_seq.unbind(0)])
        return unfold_time(self._normalise(fold_time(x_seq)), x_seq.shape[0])

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Batch norm of ``x [N, C, ...]`` (statistics over N and the spatial dims)."""
        return super().forward(x) if self.threshold_scale is None else self._scaled_forward(x)

    def _scaled_forward(self, x: torch.Tensor) -> torch.Tensor:
        # γ·(s·x̂) + β = (γ·s)·x̂ + β: fold the scale into the BN weight, one fused batch_norm call.
        scale = self.threshold_scale
        weight = self.weight * scale if self.affine else x.new_full((self.num_features,), scale)
        use_batch_stats = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(
            x, self.running_mean if self.track_running_stats else None,
            self.running_var if self.track_running_stats else None,
            weight, self.bias, use_batch_stats, momentum, self.eps,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", threshold_scale={self.threshold_scale}, statistics={self.statistics}"


class TimeBatchNorm1d(_TimeBatchNorm):
    """BN over ``T·B`` for features ``[T, B, C]`` or ``[T, B, C, L]``; see :class:`_TimeBatchNorm`."""

    _seq_dims = (3, 4)


class TimeBatchNorm2d(_TimeBatchNorm):
    """BN over ``T·B`` for maps ``[T, B, C, H, W]``; see :class:`_TimeBatchNorm`."""

    _seq_dims = (5,)


class TimeBatchNorm(_TimeBatchNorm):
    """BN over ``T·B`` for any of ``[T, B, C]``, ``[T, B, C, L]``, ``[T, B, C, H, W]`` (the batch norm
    of :class:`asgl.BatchNormLIF`); same parameters and buffers as :class:`TimeBatchNorm1d`/``2d``."""

    _seq_dims = (3, 4, 5)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> SeqToANN:
    """``[T, B, C_in, H, W] -> [T, B, C_out, H', W']``: conv (no bias, "same" padding) then BN over T·B.

    The conv has no bias because the BN that follows removes any per-channel offset.
    """
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    return SeqToANN(conv, nn.BatchNorm2d(out_channels))


def image_sequence(x: torch.Tensor, T: int, in_channels: int) -> torch.Tensor:
    """Network input as a time-first sequence ``[T, B, C, H, W]``.

    A static image batch ``[B, C, H, W]`` is repeated T times (direct encoding: the first conv
    sees the same image at every step); an event tensor ``[B, T, C, H, W]`` (the layout of the
    data loaders) is moved to time-first and must have exactly ``T`` steps.
    """
    if x.dim() == 4:
        if x.shape[1] != in_channels:
            raise ValueError(f"expected images [B, {in_channels}, H, W], got shape {tuple(x.shape)}")
        return x.unsqueeze(0).expand(T, *x.shape)
    if x.dim() == 5:
        if x.shape[1] != T or x.shape[2] != in_channels:
            raise ValueError(
                f"expected an event tensor [B, T={T}, {in_channels}, H, W], got shape {tuple(x.shape)}"
            )
        return x.transpose(0, 1)
    raise ValueError(
        f"expected images [B, {in_channels}, H, W] or events [B, {T}, {in_channels}, H, W] "
        f"(rank 4 or 5), got rank {x.dim()} with shape {tuple(x.shape)}"
    )


def mean_over_time(y_seq: torch.Tensor) -> torch.Tensor:
    """``[T, B, ...] -> [B, ...]``: the T-mean, the network's prediction for the whole sample."""
    if y_seq.dim() < 2:
        raise ValueError(f"y_seq must be [T, B, ...] with at least 2 dims, got shape {tuple(y_seq.shape)}")
    return y_seq.mean(dim=0)


def _check_logits_target(logits_seq: torch.Tensor, target: torch.Tensor) -> None:
    if logits_seq.dim() != 3:
        raise ValueError(f"logits_seq must be [T, B, K], got shape {tuple(logits_seq.shape)}")
    T, B, K = logits_seq.shape
    if target.dim() == 1:
        if target.shape[0] != B:
            raise ValueError(f"target must have B={B} entries, got shape {tuple(target.shape)}")
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise ValueError(f"target class indices must be an integer tensor, got dtype {target.dtype}")
    elif target.dim() == 2:
        if tuple(target.shape) != (B, K) or not target.dtype.is_floating_point:
            raise ValueError(
                f"soft target must be a float tensor of shape [B, K] = [{B}, {K}], "
                f"got {target.dtype} of shape {tuple(target.shape)}"
            )
    else:
        raise ValueError(f"target must be class indices [B] or probabilities [B, K], got shape {tuple(target.shape)}")


def mean_ce_loss(logits_seq: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the T-mean logits: ``CE(mean_t o_t, y)``, averaged over the batch.

    ``logits_seq [T, B, K]``; ``target`` class indices ``[B]`` or probabilities ``[B, K]``.
    """
    _check_logits_target(logits_seq, target)
    return F.cross_entropy(logits_seq.mean(dim=0), target)


def tet_loss(logits_seq: torch.Tensor, target: torch.Tensor, lam: float = 1e-3, phi: float = 1.0) -> torch.Tensor:
    """TET loss (Deng et al., ICLR 2022): cross-entropy at every step plus a pull toward ``φ``.

        L = (1 - λ) · (1/T) Σ_t CE(o_t, y)  +  λ · (1/(T·B·K)) Σ_{t,b,k} (o_{t,b,k} - φ)²

    ``logits_seq o [T, B, K]``; ``target`` class indices ``[B]`` or probabilities ``[B, K]``; each
    ``CE(o_t, y)`` is averaged over the batch. "MSE(o, 1)" of ASGL.md §4 is the mean squared error
    of every per-step logit against the constant ``φ = 1`` (the paper's regulariser
    ``(1/T) Σ_t MSE(O(t), φ)`` with φ = V_th = 1, MSE averaged over batch and classes), the same
    as ``MSELoss`` over the whole ``[T, B, K]`` tensor in the TET reference code.
    """
    _check_logits_target(logits_seq, target)
    if not (isinstance(lam, (int, float)) and 0.0 <= lam <= 1.0):
        raise ValueError(f"lam (the TET weight λ) must be in [0, 1], got {lam!r}")
    T, B, K = logits_seq.shape
    # All steps share the batch size, so the mean over the T·B rows is the mean over t of the
    # per-step batch means.
    targets = target.repeat(T) if target.dim() == 1 else target.repeat(T, 1)
    ce = F.cross_entropy(fold_time(logits_seq), targets)
    if lam == 0:
        return ce
    mse = (logits_seq - phi).pow(2).mean()
    return (1.0 - lam) * ce + lam * mse
