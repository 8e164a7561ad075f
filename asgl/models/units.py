"""The spiking units the networks are built from: the one place where a batch norm feeds a neuron.

Every conv → BN → LIF of every network is a :class:`ConvBNLIF`, and every "BN, add the shortcut,
fire" of a residual block is its ``residual`` argument; both end in :class:`BNLIF`. A fused
BN + LIF module replaces :class:`BNLIF` here and every network uses it.

Layout ``[T, B, C, H, W]``; conv and BN run with time folded into batch (BN statistics over
T·B·H·W per channel, the "tdBN" of the reference code), the neuron sees the time axis.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import fold_time, unfold_time
from .registry import make_lif

__all__ = ["BNLIF", "ConvBNLIF", "init_normal_"]


class BNLIF(nn.Module):
    """``LIF(BN(x) [+ residual])``: ``[T, B, C, H, W] -> [T, B, C, H, W]`` spikes (scaled by θ).

    ``bn`` is a plain ``nn.BatchNorm2d`` on the time-folded tensor; ``residual`` (the shortcut of
    a residual block, same shape) is added after the BN and before the neuron.
    """

    def __init__(self, channels: int, neuron_kwargs: dict):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.lif = make_lif(channels, neuron_kwargs)

    def forward(self, x_seq: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y_seq = unfold_time(self.bn(fold_time(x_seq)), x_seq.shape[0])
        if residual is not None:
            y_seq = y_seq + residual
        return self.lif(y_seq)


class ConvBNLIF(nn.Module):
    """conv (k×k, stride, "same" padding) → BN over T·B → [+ residual] → LIF.

    ``[T, B, C_in, H, W] -> [T, B, C_out, H/stride, W/stride]``. The conv has no bias by default:
    the BN that follows removes any per-channel offset (the authors' networks run with ``--bias``
    off); ``bias=True`` is there for layouts that keep one.
    """

    def __init__(self, in_channels: int, out_channels: int, neuron_kwargs: dict, kernel_size: int = 3,
                 stride: int = 1, bias: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                              bias=bias)
        self.bn_lif = BNLIF(out_channels, neuron_kwargs)

    def forward(self, x_seq: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y_seq = unfold_time(self.conv(fold_time(x_seq)), x_seq.shape[0])
        return self.bn_lif(y_seq, residual)


@torch.no_grad()
def init_normal_(model: nn.Module, std: float) -> None:
    """The VGG initialisation of the authors' code: every conv and linear weight ~ N(0, std²), their
    biases 0; every BN weight 1 and bias 0. Neurons are left as built."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.normal_(0.0, std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
