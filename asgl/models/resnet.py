"""Spiking ResNets for CIFAR-sized images (ASGL.md §4): ResNet-18, ResNet-19, ResNet-34.

Layer for layer the networks of the authors' ``model/resnet.py`` (``ResNet`` for 18 / 34,
``ResNet19``): the same convolutions (no bias), BNs, neurons, shortcut (conv1x1-BN when the shape
changes), pooling and readout, with PyTorch's default initialisation as theirs. Layout
``[T, B, C, H, W]`` throughout; conv and BN run with time folded into batch (BN statistics over
T·B·H·W per channel), the neurons see the time axis.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import memory
from ..layers import SeqToANN, conv_bn, fold_time, image_sequence, unfold_time
from .registry import SpikingNet, make_lif, register_model
from .units import ConvBNLIF, Segments

__all__ = ["BasicBlock", "SpikingResNet", "resnet18", "resnet19", "resnet34"]


class BasicBlock(nn.Module):
    """``LIF(BN(conv3x3(LIF(BN(conv3x3(x))))) + shortcut(x))``, ``[T, B, C_in, H, W] -> [T, B, C, H/s, W/s]``.

    The shortcut is the identity, or conv1x1(stride s)-BN when the shape changes. The sum enters
    the second neuron, so the block's output is spikes (scaled by θ).
    """

    def __init__(self, in_channels: int, channels: int, stride: int, neuron_kwargs: dict):
        super().__init__()
        self.conv1 = ConvBNLIF(in_channels, channels, neuron_kwargs, 3, stride)
        self.conv2 = ConvBNLIF(channels, channels, neuron_kwargs, 3, 1)
        if stride != 1 or in_channels != channels:
            self.shortcut = conv_bn(in_channels, channels, 1, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x_seq), residual=self._shortcut(x_seq))

    def _shortcut(self, x_seq: torch.Tensor) -> torch.Tensor:
        if isinstance(self.shortcut, nn.Identity):
            return x_seq
        conv, bn = self.shortcut.module
        h = conv(fold_time(x_seq))
        out = bn(h)
        # only conv2's unit keeps the projection's output (to rerun its membrane in the backward):
        # with remat_spikes it is rebuilt from h, which batch norm keeps anyway (0.44 MiB per sample
        # less at ResNet-18 T=4)
        memory.register_batch_norm_output(out, bn, h)
        return unfold_time(out, x_seq.shape[0])


class SpikingResNet(SpikingNet):
    """CIFAR-style spiking ResNet.

    stem conv3x3(in→``stem``, stride 1)-BN-LIF; stages of :class:`BasicBlock` (``(width, blocks)``
    each, stride 1 in the first stage and 2 after); global average pool; either
    Linear(→num_classes, bias) (``hidden=None``: ResNet-18/34), or Linear(→``hidden``, no bias)-LIF
    then Linear(→num_classes, no bias) (ResNet-19); the last Linear is not spiking.

    ``forward(x)`` takes images ``[B, C, H, W]`` (repeated T times: direct encoding) or events
    ``[B, T, C, H, W]`` and returns **per-step logits** ``[T, B, num_classes]``; the prediction
    is their T-mean (:func:`asgl.layers.mean_over_time`), taken by the loss.
    """

    def __init__(
        self,
        stages: Sequence[tuple[int, int]],
        *,
        stem: int,
        hidden: int | None = None,
        num_classes: int = 10,
        T: int = 4,
        in_channels: int = 3,
        **neuron_kwargs,
    ):
        super().__init__(num_classes=num_classes, T=T, in_channels=in_channels, neuron_kwargs=neuron_kwargs)
        self.stem = ConvBNLIF(in_channels, stem, neuron_kwargs, 3, 1)
        blocks, channels = [], stem
        for i, (width, n_blocks) in enumerate(stages):
            for j in range(n_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(channels, width, stride, neuron_kwargs))
                channels = width
        self.blocks = Segments(*blocks)  # each residual block one block of checkpointing
        self.pool = SeqToANN(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        if hidden is None:
            self.head = SeqToANN(nn.Linear(channels, num_classes))
        else:  # the authors' ResNet19 classifier: no biases
            self.head = nn.Sequential(SeqToANN(nn.Linear(channels, hidden, bias=False)),
                                      make_lif(hidden, neuron_kwargs),
                                      SeqToANN(nn.Linear(hidden, num_classes, bias=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` or ``[B, T, C, H, W]`` -> per-step logits ``[T, B, num_classes]``."""
        x_seq = image_sequence(x, self.T, self.in_channels)
        with self.remat_scope(x):
            return self.head(self.pool(self.blocks(self.stem(x_seq))))


@register_model("resnet18")
def resnet18(num_classes: int = 10, T: int = 4, in_channels: int = 3, **neuron_kwargs) -> SpikingResNet:
    """ResNet-18: stem 64; stages 64, 128, 256, 512 × 2 blocks; Linear(512→classes)."""
    return SpikingResNet(
        [(64, 2), (128, 2), (256, 2), (512, 2)], stem=64,
        num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs,
    )


@register_model("resnet19")
def resnet19(num_classes: int = 10, T: int = 4, in_channels: int = 3, **neuron_kwargs) -> SpikingResNet:
    """ResNet-19: stem 128; stages 128×3, 256×3, 512×2; Linear(512→256, no bias)-LIF;
    Linear(256→classes, no bias)."""
    return SpikingResNet(
        [(128, 3), (256, 3), (512, 2)], stem=128, hidden=256,
        num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs,
    )


@register_model("resnet34")
def resnet34(num_classes: int = 10, T: int = 4, in_channels: int = 3, **neuron_kwargs) -> SpikingResNet:
    """ResNet-34: as ResNet-18 with 3, 4, 6, 3 blocks per stage."""
    return SpikingResNet(
        [(64, 3), (128, 4), (256, 6), (512, 3)], stem=64,
        num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs,
    )
