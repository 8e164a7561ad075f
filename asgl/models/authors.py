"""Key mapping from the authors' checkpoints (``model/resnet.py``, ``model/vgg.py``) to these networks.

The networks here have the same tensors as the authors' (shapes, biases, BN buffers); only the
module names differ. :func:`authors_key` gives, for a key of one of our state dicts, the key the
same tensor has in the authors' ``state_dict()``, so that one of their checkpoints loads with::

    mapping = {authors_key(name, k): k for k in model.state_dict() if not is_neuron_key(k)}
    model.load_state_dict({mapping[k]: v for k, v in theirs.items() if k in mapping}, strict=False)

Neuron parameters (leak, width, threshold) are not mapped: theirs live inside the spike function
object of each ``LIFLayer`` and, when not trained, are plain attributes outside the state dict;
ours are ``decay_logit`` / ``width_param`` of each :class:`asgl.LIF`, in the same layer order.
The authors' VGG BN is named by ``--bn_type``: ``"tdbn"`` (``tdLayer(BatchNorm2d)``: key
``layer``, the CIFAR default) or ``""`` (``TemporalBN``: key ``bns``, the DVS default).
"""

from __future__ import annotations

import re

__all__ = ["NEURON_KEYS", "authors_key", "is_neuron_key"]

NEURON_KEYS = ("decay_logit", "width_param", "thresh")
_RESNET_STAGES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet19": (3, 3, 2)}


def is_neuron_key(key: str) -> bool:
    """Whether ``key`` is a neuron parameter or buffer (not mapped, see the module docstring)."""
    return key.rsplit(".", 1)[-1] in NEURON_KEYS


def _block_name(name: str, index: int) -> str:
    """Our flat block index -> the authors' ``layer{stage}.{j}``."""
    for stage, blocks in enumerate(_RESNET_STAGES[name], start=1):
        if index < blocks:
            return f"layer{stage}.{index}"
        index -= blocks
    raise ValueError(f"block index out of range for {name}")


def _resnet_key(name: str, key: str) -> str:
    if m := re.fullmatch(r"stem\.conv\.weight", key):
        return "conv0.0.layer.weight"
    if m := re.fullmatch(r"stem\.bn_lif\.bn\.(\w+)", key):
        return f"conv0.1.layer.{m[1]}"
    if m := re.fullmatch(r"blocks\.(\d+)\.conv([12])\.conv\.weight", key):
        return f"{_block_name(name, int(m[1]))}.conv{m[2]}.layer.weight"
    if m := re.fullmatch(r"blocks\.(\d+)\.conv([12])\.bn_lif\.bn\.(\w+)", key):
        return f"{_block_name(name, int(m[1]))}.bn{m[2]}.layer.{m[3]}"
    if m := re.fullmatch(r"blocks\.(\d+)\.shortcut\.module\.([01])\.(\w+)", key):
        return f"{_block_name(name, int(m[1]))}.shortcut.{m[2]}.layer.{m[3]}"
    if m := re.fullmatch(r"head\.module\.(weight|bias)", key):  # ResNet-18/34: one Linear
        return f"classifier.0.layer.{m[1]}"
    if m := re.fullmatch(r"head\.([02])\.module\.weight", key):  # ResNet-19: Linear, LIF, Linear
        return f"classifier.{m[1]}.layer.weight"
    raise KeyError(key)


def _vgg_key(name: str, key: str, bn_type: str) -> str:
    from .vgg import CONFIGS  # vgg imports this package's registry

    # The authors' feature list: a conv item is tdLayer(conv), BN, LIFLayer (3 modules); a pool 1.
    theirs, position = {}, 0
    for ours, item in enumerate(CONFIGS[name]):
        theirs[ours] = position
        position += 1 if item in ("A", "G") else 3
    bn_name = {"tdbn": "layer", "": "bns"}[bn_type]
    if m := re.fullmatch(r"features\.(\d+)\.conv\.weight", key):
        return f"feature.{theirs[int(m[1])]}.layer.weight"
    if m := re.fullmatch(r"features\.(\d+)\.bn_lif\.bn\.(\w+)", key):
        return f"feature.{theirs[int(m[1])] + 1}.{bn_name}.{m[2]}"
    if m := re.fullmatch(r"classifier\.(\d+)\.module\.weight", key):  # ours: Flatten, then Linear/LIF pairs
        return f"classifier.{int(m[1]) - 1}.layer.weight"
    raise KeyError(key)


def authors_key(name: str, key: str, bn_type: str = "tdbn") -> str:
    """The authors' state-dict key of our ``key`` in network ``name`` (a registered ResNet or VGG).

    Raises ``KeyError`` for a key with no counterpart (e.g. a neuron parameter) and ``ValueError``
    for a network or ``bn_type`` the authors' code does not have.
    """
    if bn_type not in ("tdbn", ""):
        raise ValueError(f"bn_type must be 'tdbn' or '' (the authors' --bn_type), got {bn_type!r}")
    if name in _RESNET_STAGES:
        return _resnet_key(name, key)
    if name in ("vgg11", "vgg13", "vgg16", "vggsnn"):
        return _vgg_key(name, key, bn_type)
    raise ValueError(f"the authors' code has no network {name!r}; mapped: "
                     f"{sorted(_RESNET_STAGES) + ['vgg11', 'vgg13', 'vgg16', 'vggsnn']}")
