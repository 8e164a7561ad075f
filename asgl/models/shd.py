"""The recurrent network for the Spiking Heidelberg Digits (ASGL.md §4): 700 → 240 (recurrent) → 20."""

from __future__ import annotations

import torch
from torch import nn

from ..neuron import RecurrentLIF
from .registry import SpikingNet, check_positive_int, register_model

__all__ = ["SHDRNN", "shd_rnn"]


class SHDRNN(SpikingNet):
    """One recurrent LIF layer and a linear readout, no biases anywhere.

        h[t] = RecurrentLIF(x[t])          input 700×240, recurrent 240×240 weights
        o[t] = W_out · h[t]                W_out 240×20, not spiking

    230,400 weights (168,000 + 57,600 + 4,800) plus the neuron's decay and width.

    ``forward(x [B, T, in_channels])`` (the data loader's layout: binned spike counts per input
    channel) returns **per-step logits** ``[T, B, num_classes]``; the prediction is their T-mean,
    taken by the loss.
    """

    def __init__(self, *, num_classes: int = 20, T: int = 250, in_channels: int = 700, hidden: int = 240,
                 **neuron_kwargs):
        super().__init__(num_classes=num_classes, T=T, in_channels=in_channels, neuron_kwargs=neuron_kwargs)
        self.hidden = check_positive_int("hidden", hidden)
        self.rnn = RecurrentLIF(in_channels, hidden, channels=hidden, **neuron_kwargs)
        self.readout = nn.Linear(hidden, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, in_channels]`` -> per-step logits ``[T, B, num_classes]``."""
        if x.dim() != 3 or x.shape[1] != self.T or x.shape[2] != self.in_channels:
            raise ValueError(
                f"SHDRNN expects x of shape [B, T={self.T}, {self.in_channels}], "
                f"got rank {x.dim()} with shape {tuple(x.shape)}"
            )
        with self.remat_scope(x):
            return self.readout(self.rnn(x.transpose(0, 1)))


@register_model("shd_rnn")
def shd_rnn(num_classes: int = 20, T: int = 250, in_channels: int = 700, **neuron_kwargs) -> SHDRNN:
    """700 → 240 recurrent LIF → 20 linear readout (T = 250 in the paper's recipe)."""
    return SHDRNN(num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs)
