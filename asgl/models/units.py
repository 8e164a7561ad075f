"""The spiking units the networks are built from: the one place where a batch norm feeds a neuron.

Every conv → BN → LIF of every network is a :class:`ConvBNLIF`, and every "BN, add the shortcut,
fire" of a residual block is its ``residual`` argument; both end in :class:`BNLIF`, the fused
batch norm + neuron (:class:`asgl.BatchNormLIF`), so every network runs it.

Layout ``[T, B, C, H, W]``; conv and BN run with time folded into batch (BN statistics over
T·B·H·W per channel, the "tdBN" of the reference code), the neuron sees the time axis.

:class:`Segments` is the container of a network's blocks (a ResNet's residual blocks, a VGG's units
between pools), which block checkpointing runs one at a time under ``torch.utils.checkpoint``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import memory
from ..bn_lif import BatchNormLIF
from ..layers import fold_time, unfold_time

__all__ = ["BNLIF", "ConvBNLIF", "Segments", "init_normal_"]


class BNLIF(BatchNormLIF):
    """``LIF(BN(x) [+ residual])``: ``[T, B, C, H, W] -> [T, B, C, H, W]`` spikes (scaled by θ).

    :class:`asgl.BatchNormLIF` built from the network's neuron arguments: the batch norm over the
    time-folded tensor, the shortcut of a residual block (same shape) added after it, then the
    neuron; one fused kernel each way on the triton backend, the plain composition on the torch one.
    """

    def __init__(self, channels: int, neuron_kwargs: dict):
        super().__init__(channels, **neuron_kwargs)


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


def _run(modules: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for m in modules:
        x = m(x)
    return x


class Segments(nn.Sequential):
    """``nn.Sequential`` whose modules run as blocks: ``ends`` are the indices where each block ends
    (default: every module its own block). With ``checkpoint`` on, each block of a forward that
    records gradients runs under :func:`asgl.memory.checkpoint` (only its input kept; its forward
    run again in the backward). State-dict keys are those of the plain ``nn.Sequential``."""

    def __init__(self, *modules: nn.Module, ends: Sequence[int] | None = None):
        super().__init__(*modules)
        ends = tuple(range(1, len(modules) + 1)) if ends is None else tuple(ends)
        if not ends or list(ends) != sorted(set(ends)) or ends[0] < 1 or ends[-1] != len(modules):
            raise ValueError(f"ends must increase from >= 1 to the number of modules ({len(modules)}), got {ends}")
        self.ends = ends
        self.checkpoint = False

    def blocks(self) -> list[list[nn.Module]]:
        modules = list(self._modules.values())
        return [modules[a:b] for a, b in zip((0,) + self.ends[:-1], self.ends)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks():
            if self.checkpoint and torch.is_grad_enabled():
                x = memory.checkpoint(lambda h, block=block: _run(block, h), x, modules=block)
            else:
                x = _run(block, x)
        return x

    def extra_repr(self) -> str:
        return f"ends={self.ends}, checkpoint={self.checkpoint}"
