"""Spiking VGGs (ASGL.md §4): VGG-11/13/16 for CIFAR and Tiny-ImageNet, and VGGSNN for DVS data.

Every conv is a conv3x3(no bias)-BN-LIF unit (conv and BN with time folded into batch). ``"A"``
in a configuration is ``AvgPool2d(2)``. Pooling comes after the neuron, i.e. it averages spikes;
average rather than max pooling, as in VGGSNN, because the max of binary spikes is an OR that
passes no information about how many neurons fired and routes the gradient to one arbitrary
winner among equal spikes, while the average keeps the count and spreads the gradient evenly.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers import SeqToANN, conv_bn, image_sequence
from .registry import SpikingNet, make_lif, register_model

__all__ = ["CONFIGS", "SpikingVGG", "VGGSNN", "vgg11", "vgg13", "vgg16", "vggsnn"]

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "A", 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"],
    "vgg13": [64, 64, "A", 128, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"],
    "vgg16": [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512, "A"],
    "vggsnn": [64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"],
}


def make_features(config: Sequence[int | str], in_channels: int, neuron_kwargs: dict) -> tuple[nn.Sequential, int]:
    """The conv-BN-LIF / AvgPool2d(2) stack of ``config``; returns it and its output channels."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if item == "A":
            layers.append(SeqToANN(nn.AvgPool2d(2)))
        else:
            layers += [conv_bn(channels, item, 3, 1), make_lif(item, neuron_kwargs)]
            channels = item
    return nn.Sequential(*layers), channels


def _check_size(x_seq: torch.Tensor, allowed: str, ok: bool) -> None:
    if not ok:
        raise ValueError(f"input spatial size {tuple(x_seq.shape[-2:])} not supported: {allowed}")


class SpikingVGG(SpikingNet):
    """VGG-11/13/16: five conv-BN-LIF stages, each closed by AvgPool2d(2), then
    AdaptiveAvgPool2d(1) and Linear(512→num_classes, bias), not spiking.

    The head: CIFAR's 32×32 leaves 1×1×512 after the five pools and Tiny-ImageNet's 64×64 leaves
    2×2×512; a global average pool maps both to 512 features, so one Linear(512→classes) fits
    both sizes (on 32×32 it is exactly the usual flatten+linear) instead of the ImageNet VGG's
    4096-wide fully connected layers, which the small inputs do not need.

    ``forward(x)`` takes images ``[B, C, H, W]`` (repeated T times) or events ``[B, T, C, H, W]``,
    H and W at least 32, and returns **per-step logits** ``[T, B, num_classes]``; the prediction
    is their T-mean, taken by the loss.
    """

    def __init__(self, config: Sequence[int | str], *, num_classes: int = 10, T: int = 4,
                 in_channels: int = 3, **neuron_kwargs):
        super().__init__(num_classes=num_classes, T=T, in_channels=in_channels, neuron_kwargs=neuron_kwargs)
        self.features, channels = make_features(config, in_channels, neuron_kwargs)
        self.min_size = 2 ** sum(item == "A" for item in config)
        self.head = SeqToANN(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` or ``[B, T, C, H, W]`` -> per-step logits ``[T, B, num_classes]``."""
        x_seq = image_sequence(x, self.T, self.in_channels)
        _check_size(x_seq, f"H and W must be at least {self.min_size}", min(x_seq.shape[-2:]) >= self.min_size)
        return self.head(self.features(x_seq))


class VGGSNN(SpikingNet):
    """VGGSNN for 48×48 DVS frames: 64, 128, A, 256, 256, A, 512, 512, A, 512, 512, A, then
    flatten (512·3·3 = 4608) and Linear(4608→num_classes, bias), not spiking.

    ``forward(x)`` takes events ``[B, T, C, 48, 48]`` (or a static ``[B, C, 48, 48]``, repeated
    T times) and returns **per-step logits** ``[T, B, num_classes]``: the TET loss uses every
    step, the prediction is their T-mean.
    """

    size = 48

    def __init__(self, *, num_classes: int = 10, T: int = 10, in_channels: int = 2, **neuron_kwargs):
        super().__init__(num_classes=num_classes, T=T, in_channels=in_channels, neuron_kwargs=neuron_kwargs)
        self.features, channels = make_features(CONFIGS["vggsnn"], in_channels, neuron_kwargs)
        side = self.size // 16
        self.head = SeqToANN(nn.Flatten(), nn.Linear(channels * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, 48, 48]`` or ``[B, C, 48, 48]`` -> per-step logits ``[T, B, num_classes]``."""
        x_seq = image_sequence(x, self.T, self.in_channels)
        _check_size(x_seq, f"VGGSNN needs {self.size}×{self.size} frames",
                    tuple(x_seq.shape[-2:]) == (self.size, self.size))
        return self.head(self.features(x_seq))


@register_model("vgg11")
def vgg11(num_classes: int = 10, T: int = 4, in_channels: int = 3, **neuron_kwargs) -> SpikingVGG:
    """VGG-11 (configuration A), AvgPool2d(2), global-pool + Linear(512→classes) head."""
    return SpikingVGG(CONFIGS["vgg11"], num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs)


@register_model("vgg13")
def vgg13(num_classes: int = 10, T: int = 4, in_channels: int = 3, **neuron_kwargs) -> SpikingVGG:
    """VGG-13 (configuration B), AvgPool2d(2), global-pool + Linear(512→classes) head."""
    return SpikingVGG(CONFIGS["vgg13"], num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs)


@register_model("vgg16")
def vgg16(num_classes: int = 10, T: int = 4, in_channels: int = 3, **neuron_kwargs) -> SpikingVGG:
    """VGG-16 (configuration D), AvgPool2d(2), global-pool + Linear(512→classes) head."""
    return SpikingVGG(CONFIGS["vgg16"], num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs)


@register_model("vggsnn")
def vggsnn(num_classes: int = 10, T: int = 10, in_channels: int = 2, **neuron_kwargs) -> VGGSNN:
    """VGGSNN for CIFAR10-DVS / DVS128 Gesture at 48×48 (T = 10 in the paper's recipe)."""
    return VGGSNN(num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs)
