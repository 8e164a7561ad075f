"""Model registry: ``create_model(name, ...)`` builds any network of the paper by name.

Every network is an :class:`SpikingNet`: it knows its number of time steps ``T``, its classes and
its input channels, and its ``forward`` returns per-step logits ``[T, B, num_classes]`` from a
non-spiking readout. The T-mean (the prediction) is taken by the loss or by
:func:`asgl.layers.mean_over_time`, so per-step losses such as TET need no second model.
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from ..neuron import LIF

__all__ = ["NEURON_KWARGS", "SpikingNet", "create_model", "list_models", "make_lif", "register_model"]

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
    neuron arguments that every :class:`asgl.LIF` of the network is built with."""

    def __init__(self, *, num_classes: int, T: int, in_channels: int, neuron_kwargs: dict):
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.T = check_positive_int("T", T)
        self.in_channels = check_positive_int("in_channels", in_channels)
        check_neuron_kwargs(neuron_kwargs)
        self.neuron_kwargs = dict(neuron_kwargs)

    def extra_repr(self) -> str:
        return f"T={self.T}, num_classes={self.num_classes}, in_channels={self.in_channels}"


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
    **neuron_kwargs,
) -> nn.Module:
    """Build the network ``name``; ``None`` keeps that network's default.

    ``neuron_kwargs`` (decay, thresh, reset, v_reset, surrogate, width, learn_width,
    width_granularity, learn_decay, learn_thresh, p, backend) reach every :class:`asgl.LIF` of the
    network. The model's ``forward`` returns per-step logits ``[T, B, num_classes]``.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    check_neuron_kwargs(neuron_kwargs)
    args = {}
    for arg, value in (("num_classes", num_classes), ("T", T), ("in_channels", in_channels)):
        if value is not None:
            args[arg] = check_positive_int(arg, value)
    return _MODELS[name](**args, **neuron_kwargs)
