"""Small spiking conv nets for the 8×8 single-channel UCI digits (scikit-learn's ``load_digits``).

They make the CPU quickstart and small-scale width-robustness studies possible: the same
conv-BN-LIF units as the large networks, on inputs small enough to train in seconds.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers import SeqToANN, image_sequence
from .registry import SpikingNet, register_model
from .vgg import make_features

__all__ = ["DigitsCNN", "digits_cnn", "digits_cnn8"]


class DigitsCNN(SpikingNet):
    """conv3x3-BN-LIF units and AvgPool2d(2) per ``config`` (``"A"`` = pool), then flatten and
    Linear(→num_classes, bias), not spiking.

    ``forward(x)`` takes images ``[B, C, size, size]`` (repeated T times) or ``[B, T, C, size,
    size]`` and returns **per-step logits** ``[T, B, num_classes]``; the prediction is their
    T-mean, taken by the loss.
    """

    def __init__(self, config: Sequence[int | str], *, num_classes: int = 10, T: int = 4, in_channels: int = 1,
                 size: int = 8, **neuron_kwargs):
        super().__init__(num_classes=num_classes, T=T, in_channels=in_channels, neuron_kwargs=neuron_kwargs)
        pools = sum(item == "A" for item in config)
        if size % 2**pools != 0:
            raise ValueError(f"size must be divisible by 2**{pools} (the number of pools), got {size!r}")
        self.size = size
        self.features, channels = make_features(config, in_channels, neuron_kwargs)
        side = size // 2**pools
        self.head = SeqToANN(nn.Flatten(), nn.Linear(channels * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, 8, 8]`` or ``[B, T, C, 8, 8]`` -> per-step logits ``[T, B, num_classes]``."""
        x_seq = image_sequence(x, self.T, self.in_channels)
        if tuple(x_seq.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"{type(self).__name__} needs {self.size}×{self.size} inputs, got {tuple(x.shape)}")
        with self.remat_scope(x):
            return self.head(self.features(x_seq))


@register_model("digits_cnn")
def digits_cnn(num_classes: int = 10, T: int = 4, in_channels: int = 1, **neuron_kwargs) -> DigitsCNN:
    """3 spiking convs: 32, 64 @8×8, pool, 64 @4×4, pool, Linear(64·2·2→classes)."""
    return DigitsCNN([32, 64, "A", 64, "A"], num_classes=num_classes, T=T, in_channels=in_channels,
                     **neuron_kwargs)


@register_model("digits_cnn8")
def digits_cnn8(num_classes: int = 10, T: int = 4, in_channels: int = 1, **neuron_kwargs) -> DigitsCNN:
    """8 spiking convs: 32×3 @8×8, pool, 64×3 @4×4, pool, 64×2 @2×2, Linear(64·2·2→classes).

    Deep enough that the gradient crosses eight surrogate-gradient nonlinearities, where a badly
    chosen width α shows (the width-robustness study of ASGL.md §5).
    """
    return DigitsCNN([32, 32, 32, "A", 64, 64, 64, "A", 64, 64], num_classes=num_classes, T=T,
                     in_channels=in_channels, **neuron_kwargs)
