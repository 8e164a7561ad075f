"""The paper's networks behind a registry: ``create_model(name, ...)``, ``list_models()``.

Every network's ``forward`` returns per-step logits ``[T, B, num_classes]``.
"""

from . import authors, resnet, shd, small, units, vgg  # noqa: F401  (importing registers the networks)
from .registry import NEURON_KWARGS, SpikingNet, create_model, list_models, register_model

__all__ = ["NEURON_KWARGS", "SpikingNet", "create_model", "list_models", "register_model"]
