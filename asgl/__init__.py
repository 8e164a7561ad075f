"""ASGL: Adaptive Smoothing Gradient Learning for spiking neural networks."""

import os as _os

# The Triton kernels and the trainer are the subpackages asgl.kernels and asgl.train, so that no
# top-level name but `asgl` is taken (a top-level `kernels` would shadow Hugging Face's package of
# that name). An installed wheel holds them inside asgl/; a clone (and an editable install) keeps
# them beside it, in kernels/ and train/, found through this package's search path.
_beside = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if (not _os.path.isdir(_os.path.join(__path__[0], "kernels"))
        and _os.path.isfile(_os.path.join(_beside, "kernels", "lif_ref.py"))):
    __path__.append(_beside)

from . import bn_lif, functional, layers, models, optim
from .bn_lif import BatchNormLIF
from .export import load_pretrained
from .layers import (
    SeqToANN, TimeBatchNorm, TimeBatchNorm1d, TimeBatchNorm2d, fold_time, mean_ce_loss, mean_over_time, tet_loss,
    unfold_time,
)
from .models import create_model, list_models, register_model
from .neuron import LIF, RecurrentLIF, clamp_neuron_params_, clamp_thresholds_, neurons
from .nir import to_nir
from .preprocess import Preprocess
from .optim import build_optimizers, neuron_parameters, weight_param_groups
from .schedule import NoiseSchedule

__all__ = [
    "BatchNormLIF", "LIF", "NoiseSchedule", "Preprocess", "RecurrentLIF", "SeqToANN", "TimeBatchNorm",
    "TimeBatchNorm1d", "TimeBatchNorm2d", "bn_lif", "build_optimizers", "clamp_neuron_params_", "clamp_thresholds_",
    "create_model", "fold_time", "functional", "layers", "list_models", "load_pretrained", "mean_ce_loss",
    "mean_over_time", "models", "neuron_parameters", "neurons", "optim", "register_model", "tet_loss", "to_nir",
    "unfold_time", "weight_param_groups",
]
