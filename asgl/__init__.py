"""ASGL: Adaptive Smoothing Gradient Learning for spiking neural networks."""

from . import bn_lif, functional, layers, models, optim
from .bn_lif import BatchNormLIF, ConvBNLIF, conv_bn_lif
from .layers import (
    SeqToANN, TimeBatchNorm, TimeBatchNorm1d, TimeBatchNorm2d, fold_time, mean_ce_loss, mean_over_time, tet_loss,
    unfold_time,
)
from .models import create_model, list_models, register_model
from .neuron import LIF, RecurrentLIF, clamp_thresholds_, neurons
from .optim import build_optimizers, neuron_parameters, weight_param_groups
from .schedule import NoiseSchedule

__all__ = [
    "BatchNormLIF", "ConvBNLIF", "LIF", "NoiseSchedule", "RecurrentLIF", "SeqToANN", "TimeBatchNorm",
    "TimeBatchNorm1d", "TimeBatchNorm2d", "build_optimizers", "clamp_thresholds_", "conv_bn_lif", "create_model",
    "fold_time", "functional", "layers", "list_models", "mean_ce_loss", "mean_over_time", "models",
    "neuron_parameters", "neurons", "optim", "register_model", "tet_loss", "unfold_time", "weight_param_groups",
]
