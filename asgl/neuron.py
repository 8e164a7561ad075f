"""ASGL spiking neurons as ``nn.Module``s: :class:`LIF` and :class:`RecurrentLIF`.

Every parameter exists after ``__init__`` (an optimizer built right away sees them all); a fixed
one is a buffer, so it moves with the module and is saved in its state dict.
"""

from __future__ import annotations

import importlib
import math

import torch
from torch import nn

from asgl.kernels.lif_ref import slope_from_width_param, width_param_from_width

from . import functional as F
from . import memory

GRANULARITIES = ("layer", "channel")
# Default floor of a learnable sigmoid slope k = 1/α (see LIF.clamp_): k ≥ 0.01 is α ≤ 100, ten times
# the widest α of the paper's tables (α = 10, k = 0.1), so no recipe of the paper is bounded by it.
MIN_SIGMOID_SLOPE = 1e-2


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def check_lif_args(*, decay: float = 0.5, thresh: float = 1.0, reset: str = "hard", surrogate: str = "sigmoid",
                   width: float = 1.0, learn_width: bool = True, width_granularity: str = "layer", p: float = 0.0,
                   min_slope: float | None = MIN_SIGMOID_SLOPE, backend: str = "auto") -> None:
    """``ValueError``, its message starting with the argument's name, for a value :class:`LIF` cannot
    take. The one place these rules live: :class:`LIF` checks its arguments with it, and the
    trainer's config its ``model`` section (``model.<argument>`` in the message)."""
    F.check_neuron_args(reset=reset, surrogate=surrogate, p=p)
    F.check_choice("width_granularity", width_granularity, GRANULARITIES)
    F.check_choice("backend", backend, F.BACKENDS)
    if not _finite_positive(width):
        raise ValueError(f"width (the relaxation width α) must be > 0 and finite, got {width!r}")
    if not (isinstance(decay, (int, float)) and 0.0 < decay < 1.0):
        raise ValueError(f"decay (the leak λ) must be in (0, 1), got {decay!r}")
    if not _finite_positive(thresh):
        raise ValueError(f"thresh (the threshold θ) must be > 0 and finite, got {thresh!r}")
    if min_slope is not None:
        if not _finite_positive(min_slope):
            raise ValueError(f"min_slope (the floor k_min of the sigmoid slope) must be > 0 and finite, or none "
                             f"for an unbounded slope, got {min_slope!r}")
        if surrogate == "sigmoid" and learn_width and 1.0 / width < min_slope:
            raise ValueError(f"width α = {width!r} is wider than min_slope = {min_slope!r} allows (α ≤ 1/min_slope "
                             f"= {1.0 / min_slope:g}); lower width or min_slope, or give no min_slope for an "
                             "unbounded slope")


class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron trained with ASGL.

    ``forward(x_seq [T, B, ...]) -> y_seq = θ·o`` of the same shape. In ``train()`` mode a fraction
    ``p`` of the elements emits the relaxation ``H_α(z)`` instead of the spike (the noisy hybrid);
    in ``eval()`` mode the output is pure spikes. Gradients always flow through ``H_α``.

    Args:
        decay: initial leak λ in (0, 1); stored as ``decay_logit = log(λ/(1-λ))``.
        thresh: firing threshold θ > 0.
        reset: ``"hard"`` (membrane set to ``v_reset`` on a spike) or ``"soft"`` (θ·o subtracted).
        surrogate: relaxation ``H_α``: ``"sigmoid"`` or ``"rectangle"``.
        width: initial relaxation width α > 0 (larger = smoother).
        learn_width / learn_decay / learn_thresh: make the width / decay / threshold trainable.
        width_granularity: ``"layer"`` (one width) or ``"channel"`` (one per channel, dim 2 of the
            input; needs ``channels``).
        p: analog-mode probability in [0, 1] (0 = plain surrogate gradient, 1 = smooth network).
        min_slope: floor ``k_min`` of a learnable sigmoid slope k = 1/α, applied by :meth:`clamp_`
            after each optimizer step (``asgl.build_optimizers`` does it); ``None`` leaves k
            unbounded, as in the authors' code, where it can cross zero. The rectangle stores
            ``log k`` and is positive by construction; the floor does not touch it.
        backend: ``"auto"``, ``"torch"`` (reference loop) or ``"triton"`` (fused kernel).
    """

    def __init__(
        self,
        decay: float = 0.5,
        thresh: float = 1.0,
        reset: str = "hard",
        v_reset: float = 0.0,
        surrogate: str = "sigmoid",
        width: float = 1.0,
        learn_width: bool = True,
        width_granularity: str = "layer",
        channels: int | None = None,
        learn_decay: bool = True,
        learn_thresh: bool = False,
        p: float = 0.0,
        min_slope: float | None = MIN_SIGMOID_SLOPE,
        backend: str = "auto",
    ):
        super().__init__()
        check_lif_args(decay=decay, thresh=thresh, reset=reset, surrogate=surrogate, width=width,
                       learn_width=learn_width, width_granularity=width_granularity, p=p, min_slope=min_slope,
                       backend=backend)
        if width_granularity == "channel":
            if not (isinstance(channels, int) and channels > 0):
                raise ValueError(
                    f"channels must be a positive int when width_granularity='channel', got {channels!r}"
                )
        elif channels is not None and not (isinstance(channels, int) and channels > 0):
            raise ValueError(f"channels must be None or a positive int, got {channels!r}")

        self.reset = reset
        self.v_reset = float(v_reset)
        self.surrogate = surrogate
        self.width_granularity = width_granularity
        self.channels = channels
        self.backend = backend
        self.p = p
        self.min_slope = None if min_slope is None else float(min_slope)

        decay_logit = torch.tensor(math.log(decay / (1.0 - decay)))
        shape = (channels,) if width_granularity == "channel" else ()
        width_param = torch.full(shape, width_param_from_width(float(width), surrogate))
        self._register("decay_logit", decay_logit, learn_decay)
        self._register("width_param", width_param, learn_width)
        if learn_thresh:
            self.thresh = nn.Parameter(torch.tensor(float(thresh)))
        else:
            self.thresh = float(thresh)

    def _register(self, name: str, value: torch.Tensor, learnable: bool) -> None:
        if learnable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    @property
    def p(self) -> float:
        """Probability that an element emits the analog relaxation during training."""
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        F.check_p(value)
        self._p = float(value)

    @property
    def width(self) -> torch.Tensor:
        """The relaxation width α = 1/k (read-only, detached)."""
        return 1.0 / slope_from_width_param(self.width_param.detach(), self.surrogate)

    @property
    def decay(self) -> torch.Tensor:
        """The leak λ = sigmoid(decay_logit) (read-only, detached)."""
        return torch.sigmoid(self.decay_logit.detach())

    @property
    def needs_clamp(self) -> bool:
        """Whether :meth:`clamp_` can change anything: a learnable θ, or a learnable sigmoid slope
        with a floor."""
        slope = self.surrogate == "sigmoid" and self.min_slope is not None
        return isinstance(self.thresh, nn.Parameter) or (slope and isinstance(self.width_param, nn.Parameter))

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep a learnable threshold θ ≥ 0 and a learnable sigmoid slope k ≥ ``min_slope``; call
        after each optimizer step (the neuron optimizer of ``asgl.build_optimizers`` does).

        Why the slope: the sigmoid stores the raw k = 1/α, which Adam moves by about its learning
        rate per step. Once k < 0 the relaxation's derivative k·σ'(k·z) is negative while the
        forward spike is unchanged, so every spike-mode element sends a sign-flipped gradient.
        Applied here, between steps, the floor leaves the forward and backward of one step
        untouched: the fused kernels and the reference see the same ``width_param``.
        """
        clamp_neurons_([self])

    def check_input(self, x_seq: torch.Tensor) -> None:
        if x_seq.dim() < 2:
            raise ValueError(
                f"{type(self).__name__} expects x_seq of shape [T, B, ...] (at least 2 dims), "
                f"got shape {tuple(x_seq.shape)}"
            )
        if self.width_granularity == "channel" and (x_seq.dim() < 3 or x_seq.shape[2] != self.channels):
            got = x_seq.shape[2] if x_seq.dim() >= 3 else "none"
            raise ValueError(
                f"{type(self).__name__} was built with channels={self.channels} (channel-wise width) "
                f"but the input of shape {tuple(x_seq.shape)} has {got} channels at dim 2"
            )

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        self.check_input(x_seq)  # the arguments were checked at construction
        y_seq = F.run_lif(
            x_seq, self.decay_logit, self.width_param, self.thresh, reset=self.reset,
            v_reset=self.v_reset, surrogate=self.surrogate, p=self.p, training=self.training,
            backend=self.backend,
        )
        _remat(self, y_seq, x_seq, "asgl.kernels.lif")
        return y_seq

    def extra_repr(self) -> str:
        thresh = float(self.thresh)
        learn = [n for n in ("decay_logit", "width_param", "thresh") if isinstance(getattr(self, n), nn.Parameter)]
        return (
            f"surrogate={self.surrogate}, reset={self.reset}, thresh={thresh:g}, p={self.p:g}, "
            f"width_granularity={self.width_granularity}, learn={learn}, min_slope={self.min_slope}, "
            f"backend={self.backend}"
        )


class RecurrentLIF(LIF):
    """Recurrent ASGL LIF layer: ``u[t] = λ·v[t-1] + W·x[t] + R·o[t-1]``.

    ``forward(x_seq [T, B, in_features]) -> y_seq [T, B, hidden]``. The input projection ``W``
    (no bias) runs for all steps as one matmul; the recurrence with ``R`` runs in the neuron
    (reference loop, or the fused kernel on the Triton backend). Channel-wise width means one
    width per hidden unit. Other arguments as in :class:`LIF`.
    """

    def __init__(self, in_features: int, hidden: int, **neuron_kwargs):
        if not (isinstance(in_features, int) and in_features > 0 and isinstance(hidden, int) and hidden > 0):
            raise ValueError(f"in_features and hidden must be positive ints, got {in_features!r}, {hidden!r}")
        if neuron_kwargs.get("width_granularity") == "channel":
            neuron_kwargs.setdefault("channels", hidden)
        super().__init__(**neuron_kwargs)
        self.in_features = in_features
        self.hidden = hidden
        self.input_weight = nn.Parameter(torch.empty(hidden, in_features))
        self.recurrent_weight = nn.Parameter(torch.empty(hidden, hidden))
        nn.init.kaiming_uniform_(self.input_weight, a=math.sqrt(5))
        nn.init.orthogonal_(self.recurrent_weight)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() != 3 or x_seq.shape[2] != self.in_features:
            raise ValueError(
                f"RecurrentLIF expects x_seq of shape [T, B, {self.in_features}], got {tuple(x_seq.shape)}"
            )
        wx_seq = torch.nn.functional.linear(x_seq, self.input_weight)
        y_seq = F.run_recurrent_lif(
            wx_seq, self.recurrent_weight, self.decay_logit, self.width_param, self.thresh,
            reset=self.reset, v_reset=self.v_reset, surrogate=self.surrogate, p=self.p,
            training=self.training, backend=self.backend,
        )
        _remat(self, y_seq, wx_seq, "asgl.kernels.rlif")
        return y_seq

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, hidden={self.hidden}, " + super().extra_repr()


def _remat(neuron: LIF, y_seq: torch.Tensor, x_seq: torch.Tensor, kernel: str) -> None:
    """Inside a network's remat scope (:mod:`asgl.memory`): the fused neuron's output is rebuilt from the
    membrane its backward keeps; the torch reference's is kept (an error with ``remat_spikes=True``)."""
    if not memory.active() or y_seq.grad_fn is None:
        return
    if F.resolve_backend(neuron.backend, x_seq, fused_module=kernel) == "torch":
        memory.unfused(type(neuron).__name__, neuron.backend)
    else:
        memory.register_spikes(y_seq, importlib.import_module(kernel))


def neurons(model: nn.Module):
    """All ASGL neurons of ``model``."""
    return [m for m in model.modules() if isinstance(m, LIF)]


def clamp_neuron_params_(model: nn.Module) -> None:
    """:meth:`LIF.clamp_` on every neuron of ``model`` (θ ≥ 0, sigmoid slope k ≥ ``min_slope``); call
    after each optimizer step when the optimizer is not built by ``asgl.build_optimizers``."""
    clamp_neurons_([m for m in neurons(model) if m.needs_clamp])


@torch.no_grad()
def clamp_neurons_(lifs) -> None:
    """:meth:`LIF.clamp_` on each of ``lifs``, as one multi-tensor clamp per floor (one launch for
    every threshold, one for every slope with the same ``min_slope``) instead of one per parameter."""
    floors: dict[float, list[torch.Tensor]] = {}
    for m in lifs:
        if isinstance(m.thresh, nn.Parameter):
            floors.setdefault(0.0, []).append(m.thresh)
        if m.surrogate == "sigmoid" and m.min_slope is not None and isinstance(m.width_param, nn.Parameter):
            floors.setdefault(float(m.min_slope), []).append(m.width_param)
    for floor, params in floors.items():
        torch._foreach_clamp_min_(params, floor)


# The trainer's name for it (it clamps θ, and since the slope floor also k).
clamp_thresholds_ = clamp_neuron_params_
