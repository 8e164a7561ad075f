"""Model registry: ``create_model(name, ...)`` builds any network of the paper by name.

Every network is an :class:`SpikingNet`: it knows its number of time steps ``T``, its classes and
its input channels, and its ``forward`` returns per-step logits ``[T, B, num_classes]`` from a
non-spiking readout. The T-mean (the prediction) is taken by the loss or by
:func:`asgl.layers.mean_over_time`, so per-step losses such as TET need no second model.

Activation memory (:mod:`asgl.memory`): ``remat_spikes`` ("auto", True, False) and
:meth:`SpikingNet.set_checkpoint` ("none", "blocks"), both also arguments of :func:`create_model`.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Callable

import torch
from torch import nn

from .. import functional as F
from .. import memory
from ..neuron import LIF, neurons
from .units import Segments

__all__ = ["CHECKPOINT_CHOICES", "NEURON_KWARGS", "SpikingNet", "create_model", "list_models", "make_lif",
           "register_model"]

# ``checkpoint``: "none", or "blocks" (the network's blocks, :class:`~asgl.models.units.Segments`,
# each under torch.utils.checkpoint)
CHECKPOINT_CHOICES = ("none", "blocks")

# Everything LIF takes except `channels`, which each network sets per layer.
NEURON_KWARGS = tuple(n for n in inspect.signature(LIF.__init__).parameters if n not in ("self", "channels"))

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_neuron_kwargs(neuron_kwargs: dict) -> None:
    unknown = sorted(set(neuron_kwargs) - set(NEURON_KWARGS))
    if unknown:
        hint = " (channels is set per layer by the network)" if "channels" in unknown else ""
        raise ValueError(f"unknown neuron arguments {unknown}{hint}; allowed: {list(NEURON_KWARGS)}")


def make_lif(channels: int, neuron_kwargs: dict) -> LIF:
    """An :class:`asgl.LIF` for a layer with ``channels`` channels (dim 2 of ``[T, B, C, ...]``)."""
    return LIF(channels=channels, **neuron_kwargs)


class SpikingNet(nn.Module):
    """Base of the networks: validates and keeps ``T``, ``num_classes``, ``in_channels`` and the
    neuron arguments that every :class:`asgl.LIF` of the network is built with, and the activation
    memory choices (:mod:`asgl.memory`):

    * ``remat_spikes``: "auto" (default: on wherever the fused units run), True or False. On, no op
      keeps a fused unit's spiking output for its backward: the consumers' backward gets it recomputed
      by the unit's forward kernel (bit-identical). Each network's ``forward`` runs in
      :meth:`remat_scope`.
    * :meth:`set_checkpoint`: "blocks" runs each of the network's blocks under
      ``torch.utils.checkpoint``; "none" (default) does not.
    """

    def __init__(self, *, num_classes: int, T: int, in_channels: int, neuron_kwargs: dict):
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.T = check_positive_int("T", T)
        self.in_channels = check_positive_int("in_channels", in_channels)
        check_neuron_kwargs(neuron_kwargs)
        self.neuron_kwargs = dict(neuron_kwargs)
        self._remat_spikes = "auto"
        self._checkpoint = "none"

    @property
    def remat_spikes(self):
        """Spike outputs recomputed in the backward instead of kept: "auto", True or False."""
        return self._remat_spikes

    @remat_spikes.setter
    def remat_spikes(self, choice) -> None:
        if not (isinstance(choice, bool) or choice == "auto"):
            raise ValueError(f"remat_spikes must be 'auto', True or False, got {choice!r}")
        if choice is True and all(m.backend == "torch" for m in neurons(self)):
            raise ValueError("remat_spikes=True needs the fused units (backend 'triton', or 'auto' on CUDA): on the "
                             "torch backend the reference neurons keep their own tensors and there is no fused output "
                             "to recompute")
        self._remat_spikes = choice

    def remat_scope(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        """What each network's ``forward`` on input ``x`` runs in (:func:`asgl.memory.remat_scope`);
        nothing for "auto" where every neuron takes the torch reference (no hooks on its many small
        saved tensors)."""
        choice = self._remat_spikes
        if choice == "auto" and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            choice = "auto" if any(_fused(m.backend, x) for m in neurons(self)) else False
        return memory.remat_scope(choice)

    @property
    def checkpoint(self) -> str:
        """Block checkpointing: "none" or "blocks" (set with :meth:`set_checkpoint`)."""
        return self._checkpoint

    def set_checkpoint(self, mode: str) -> SpikingNet:
        """``"blocks"``: run each block of the network (a ResNet's residual blocks, a VGG's units between
        two pools) under non-reentrant ``torch.utils.checkpoint`` (:func:`asgl.memory.checkpoint`): its
        activations are not kept but computed again in the backward, the same noise drawn and the
        batch-norm running statistics updated once. ``"none"``: keep them. Returns the network."""
        if mode not in CHECKPOINT_CHOICES:
            raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINT_CHOICES)}, got {mode!r}")
        segments = [m for m in self.modules() if isinstance(m, Segments)]
        if mode == "blocks" and not segments:
            raise ValueError(f"checkpoint='blocks': {type(self).__name__} has no blocks to checkpoint (block "
                             "checkpointing is for the ResNets and VGGs); use 'none'")
        for m in segments:
            m.checkpoint = mode == "blocks"
        self._checkpoint = mode
        return self

    def extra_repr(self) -> str:
        extra = "" if self._remat_spikes == "auto" else f", remat_spikes={self._remat_spikes}"
        extra += "" if self._checkpoint == "none" else f", checkpoint={self._checkpoint}"
        return f"T={self.T}, num_classes={self.num_classes}, in_channels={self.in_channels}" + extra


def _fused(backend: str, x: torch.Tensor) -> bool:
    try:
        return F.resolve_backend(backend, x) != "torch"
    except ValueError:  # triton on a CPU without the interpreter: the neuron says so itself
        return True


def register_model(name: str):
    """Decorator: register ``fn(num_classes=..., T=..., in_channels=..., **neuron_kwargs)`` as ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    T: int | None = None,
    in_channels: int | None = None,
    remat_spikes="auto",
    checkpoint: str = "none",
    **neuron_kwargs,
) -> nn.Module:
    """Build the network ``name``; ``None`` keeps that network's default.

    ``neuron_kwargs`` (decay, thresh, reset, v_reset, surrogate, width, learn_width,
    width_granularity, learn_decay, learn_thresh, p, backend) reach every :class:`asgl.LIF` of the
    network. The model's ``forward`` returns per-step logits ``[T, B, num_classes]``.

    Activation memory (:class:`SpikingNet`, :mod:`asgl.memory`): ``remat_spikes`` "auto" (on wherever
    the fused units run), True or False; ``checkpoint`` "none" or "blocks" (the same as
    ``model.set_checkpoint(...)`` afterwards).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    check_neuron_kwargs(neuron_kwargs)
    args = {}
    for arg, value in (("num_classes", num_classes), ("T", T), ("in_channels", in_channels)):
        if value is not None:
            args[arg] = check_positive_int(arg, value)
    model = _MODELS[name](**args, **neuron_kwargs)
    if isinstance(model, SpikingNet):
        model.remat_spikes = remat_spikes
        model.set_checkpoint(checkpoint)
    elif remat_spikes != "auto" or checkpoint != "none":
        raise ValueError(f"{name!r} is not an asgl.models.SpikingNet: remat_spikes and checkpoint do not apply")
    return model
