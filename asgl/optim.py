"""Parameter groups and optimizers for the ASGL recipe (ASGL.md §2, §5).

Three disjoint sets cover every parameter of a model:

- **decayed weights**: conv and linear weights, and the input / recurrent weights of
  :class:`asgl.RecurrentLIF` — main optimizer, with weight decay;
- **undecayed**: BN (and other norm) weights and biases, and every bias — main optimizer,
  weight decay 0 (decaying a BN scale or a bias only shrinks the function, it does not
  regularise the weights' directions);
- **neuron parameters**: ``decay_logit``, ``width_param`` and a learnable ``thresh`` of every
  :class:`asgl.LIF` / :class:`asgl.RecurrentLIF` — their own Adam (lr 3e-4, no weight decay, no
  LR schedule), so the main optimizer's schedule and decay never touch them. After each of its
  steps it applies :meth:`asgl.LIF.clamp_` (θ ≥ 0, sigmoid slope k ≥ ``min_slope``), so any loop
  that steps it keeps the neurons in range without a call of its own.
"""

from __future__ import annotations

import torch
from torch import nn

from .neuron import LIF, clamp_neurons_, neurons

__all__ = ["NEURON_PARAMS", "OPTIMIZERS", "build_optimizers", "neuron_parameters", "split_parameters",
           "weight_param_groups"]

NEURON_PARAMS = ("decay_logit", "width_param", "thresh")
OPTIMIZERS = ("sgd", "adam")
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """``(decayed, undecayed, neuron)``: every parameter of ``model`` in exactly one list.

    Rules, per module and parameter name: a neuron's ``decay_logit`` / ``width_param`` /
    ``thresh`` -> neuron; anything in a norm layer, any ``bias``, and any other parameter with
    fewer than 2 dims -> undecayed; the rest (conv / linear / recurrent weight matrices) -> decayed.
    A parameter shared between modules is counted once.
    """
    decayed, undecayed, neuron = [], [], []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, LIF) and name in NEURON_PARAMS:
                neuron.append(param)
            elif isinstance(module, _NORMS) or name == "bias" or param.dim() < 2:
                undecayed.append(param)
            else:
                decayed.append(param)
    all_ids = {id(p) for p in model.parameters()}
    grouped = [id(p) for p in decayed + undecayed + neuron]
    if len(grouped) != len(set(grouped)) or set(grouped) != all_ids:
        raise AssertionError("parameter groups must hold every parameter of the model exactly once")
    return decayed, undecayed, neuron


def weight_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Groups for the main optimizer: ``[{decayed weights, weight_decay}, {undecayed, 0.0}]``.

    Empty groups are left out; the neuron parameters are not in any group (see
    :func:`neuron_parameters`).
    """
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    decayed, undecayed, _ = split_parameters(model)
    groups = [{"params": decayed, "weight_decay": float(weight_decay)}, {"params": undecayed, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def neuron_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learnable decays, widths and thresholds of every ASGL neuron of ``model``."""
    return split_parameters(model)[2]


def build_optimizers(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    neuron_lr: float = 3e-4,
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """``(weight_optimizer, neuron_optimizer)`` for the ASGL recipe.

    ``name="sgd"``: SGD(lr, momentum) on the weight groups; ``"adam"``: Adam(lr) on them (weight
    decay as Adam's L2 term, as in ``torch.optim.Adam``). The neuron optimizer is Adam(neuron_lr,
    no weight decay) over :func:`neuron_parameters`, or ``None`` when nothing in the neurons is
    learnable; a step hook on it applies :meth:`asgl.LIF.clamp_` to every neuron that needs it
    after each of its steps (a step skipped by a loss scaler runs no hook, and needs none). An LR
    schedule belongs on the weight optimizer only.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"name must be one of {OPTIMIZERS}, got {name!r}")
    for arg, value in (("lr", lr), ("neuron_lr", neuron_lr)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{arg} must be a number > 0, got {value!r}")
    if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    groups = weight_param_groups(model, weight_decay)
    if not groups:
        raise ValueError("model has no weights outside the neurons to optimize")
    if name == "sgd":
        weight_optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    else:
        weight_optimizer = torch.optim.Adam(groups, lr=lr)
    neuron = neuron_parameters(model)
    neuron_optimizer = torch.optim.Adam(neuron, lr=neuron_lr, weight_decay=0.0) if neuron else None
    bounded = [m for m in neurons(model) if m.needs_clamp]
    if neuron_optimizer is not None and bounded:
        neuron_optimizer.register_step_post_hook(ClampNeurons(bounded))
    return weight_optimizer, neuron_optimizer


class ClampNeurons:
    """Optimizer step hook: :meth:`asgl.LIF.clamp_` on the given neurons (a class, not a closure,
    so the optimizer stays picklable)."""

    def __init__(self, lifs: list[LIF]):
        self.lifs = lifs

    def __call__(self, optimizer, args, kwargs) -> None:
        clamp_neurons_(self.lifs)
