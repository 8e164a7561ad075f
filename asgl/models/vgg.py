"""Spiking VGGs (ASGL.md §4) as the authors' ``model/vgg.py`` defines them: VGG-11/13/16 and VGGSNN.

Each network is ``features`` (conv3x3-BN-LIF units, :class:`~asgl.models.units.ConvBNLIF`, no conv
bias; ``"A"`` = AvgPool2d(2) on the spikes, ``"G"`` = global average pool) then ``classifier``
(Linear layers without bias, a LIF between two of them, the last one not spiking), with the
authors' initialisation: every conv and linear weight ~ N(0, 0.5²), BN weight 1, bias 0. The layer
lists are theirs (``feature_cfg`` / ``clasifier_cfg``, run with ``--bias`` off, the default of both
of their configs), which differ from the ImageNet VGGs:

| network | features | classifier | input |
|---|---|---|---|
| VGG-11 | 64 A 128 256 A 512 512 A 512 A 512 512 G | 512 → classes | ≥ 16×16 |
| VGG-13 | 64 64 A 128 128 A 256 256 A 512 512 512 A 512 G | 512 → classes | ≥ 16×16 |
| VGG-16 | 64 64 A 128 128 A 256 256 256 A 512 512 512 A 512 512 512 | 2048 → 4096 → 4096 → classes | 32×32 |
| VGGSNN | 64 128 A 256 256 A 512 512 A 512 512 A | 4608 → classes | 48×48 |

(VGG-16 has no pool after its last stage: 32×32 leaves 2×2×512 = 2048 features.) Pooling comes
after the neuron, i.e. it averages spikes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers import SeqToANN, image_sequence
from .registry import SpikingNet, make_lif, register_model
from .units import ConvBNLIF, Segments, init_normal_

__all__ = ["CLASSIFIERS", "CONFIGS", "INIT_STD", "SpikingVGG", "make_features", "vgg11", "vgg13", "vgg16", "vggsnn"]

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "A", 128, 256, "A", 512, 512, "A", 512, "A", 512, 512, "G"],
    "vgg13": [64, 64, "A", 128, 128, "A", 256, 256, "A", 512, 512, 512, "A", 512, "G"],
    "vgg16": [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512],
    "vggsnn": [64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"],
}
# Hidden widths of the classifier (the input width follows from the features and the input size).
CLASSIFIERS: dict[str, list[int]] = {"vgg11": [], "vgg13": [], "vgg16": [4096, 4096], "vggsnn": []}
# Input side each network's flattened features were laid out for (None: global pool, any size).
INPUT_SIDE: dict[str, int | None] = {"vgg11": None, "vgg13": None, "vgg16": 32, "vggsnn": 48}
INIT_STD = 0.5  # the authors' VGG._initialize_weights: N(0, 0.5) on conv and linear weights


def make_features(config: Sequence[int | str], in_channels: int, neuron_kwargs: dict) -> tuple[Segments, int]:
    """The conv-BN-LIF / pool stack of ``config`` (``"A"`` AvgPool2d(2), ``"G"`` global average pool);
    returns it and its output channels. Its blocks (for checkpointing) are the units up to and with
    each pool, and the units after the last one."""
    layers: list[nn.Module] = []
    ends: list[int] = []
    channels = in_channels
    for item in config:
        if item == "A":
            layers.append(SeqToANN(nn.AvgPool2d(2)))
        elif item == "G":
            layers.append(SeqToANN(nn.AdaptiveAvgPool2d(1)))
        else:
            layers.append(ConvBNLIF(channels, item, neuron_kwargs, 3, 1))
            channels = item
        if item in ("A", "G"):
            ends.append(len(layers))
    if not ends or ends[-1] != len(layers):
        ends.append(len(layers))
    return Segments(*layers, ends=ends), channels


def make_classifier(widths: Sequence[int], neuron_kwargs: dict) -> nn.Sequential:
    """Flatten, then Linear(widths[i] → widths[i+1], no bias) with a LIF between two of them."""
    layers: list[nn.Module] = [SeqToANN(nn.Flatten())]
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(SeqToANN(nn.Linear(n_in, n_out, bias=False)))
        if i < len(widths) - 2:
            layers.append(make_lif(n_out, neuron_kwargs))
    return nn.Sequential(*layers)


class SpikingVGG(SpikingNet):
    """A VGG of :data:`CONFIGS`: ``features`` then ``classifier`` (see the module docstring).

    ``forward(x)`` takes images ``[B, C, H, W]`` (repeated T times) or events ``[B, T, C, H, W]``
    and returns **per-step logits** ``[T, B, num_classes]``; the prediction is their T-mean, taken
    by the loss (the TET loss uses every step).
    """

    def __init__(self, name: str, *, num_classes: int = 10, T: int = 4, in_channels: int = 3, **neuron_kwargs):
        super().__init__(num_classes=num_classes, T=T, in_channels=in_channels, neuron_kwargs=neuron_kwargs)
        if name not in CONFIGS:
            raise ValueError(f"name must be one of {sorted(CONFIGS)}, got {name!r}")
        config = CONFIGS[name]
        self.arch = name
        self.pools = sum(item == "A" for item in config)
        self.input_side = INPUT_SIDE[name]
        self.features, channels = make_features(config, in_channels, neuron_kwargs)
        side = 1 if self.input_side is None else self.input_side // 2**self.pools
        self.classifier = make_classifier([channels * side * side, *CLASSIFIERS[name], num_classes], neuron_kwargs)
        init_normal_(self, INIT_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` or ``[B, T, C, H, W]`` -> per-step logits ``[T, B, num_classes]``."""
        x_seq = image_sequence(x, self.T, self.in_channels)
        size = tuple(x_seq.shape[-2:])
        if self.input_side is not None and size != (self.input_side, self.input_side):
            raise ValueError(f"{self.arch} needs {self.input_side}×{self.input_side} inputs (its classifier is laid "
                             f"out for them), got spatial size {size}")
        if min(size) < 2**self.pools:
            raise ValueError(f"{self.arch}: H and W must be at least {2**self.pools} ({self.pools} pools), "
                             f"got spatial size {size}")
        with self.remat_scope(x):
            return self.classifier(self.features(x_seq))

    def extra_repr(self) -> str:
        return f"arch={self.arch}, " + super().extra_repr()


@register_model("vgg11")
def vgg11(num_classes: int = 10, T: int = 4, in_channels: int = 3, **neuron_kwargs) -> SpikingVGG:
    """The authors' VGG11: 8 spiking convs, 4 AvgPool2d(2), global pool, Linear(512→classes)."""
    return SpikingVGG("vgg11", num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs)


@register_model("vgg13")
def vgg13(num_classes: int = 10, T: int = 4, in_channels: int = 3, **neuron_kwargs) -> SpikingVGG:
    """The authors' VGG13: 10 spiking convs, 4 AvgPool2d(2), global pool, Linear(512→classes)."""
    return SpikingVGG("vgg13", num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs)


@register_model("vgg16")
def vgg16(num_classes: int = 10, T: int = 4, in_channels: int = 3, **neuron_kwargs) -> SpikingVGG:
    """The authors' VGG16 for 32×32: 13 spiking convs, 4 AvgPool2d(2), Linear(2048→4096)-LIF,
    Linear(4096→4096)-LIF, Linear(4096→classes)."""
    return SpikingVGG("vgg16", num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs)


@register_model("vggsnn")
def vggsnn(num_classes: int = 10, T: int = 10, in_channels: int = 2, **neuron_kwargs) -> SpikingVGG:
    """The authors' VGGSNN2 for 48×48 event frames (CIFAR10-DVS, DVS128 Gesture): 8 spiking convs,
    4 AvgPool2d(2), Linear(4608→classes)."""
    return SpikingVGG("vggsnn", num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs)
