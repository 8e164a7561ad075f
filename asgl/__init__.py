"""ASGL: Adaptive Smoothing Gradient Learning for spiking neural networks."""

from . import functional
from .neuron import LIF, RecurrentLIF, clamp_thresholds_, neurons
from .schedule import NoiseSchedule

__all__ = ["LIF", "NoiseSchedule", "RecurrentLIF", "clamp_thresholds_", "functional", "neurons"]
