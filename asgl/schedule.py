"""The ASGL noise schedule (``docs/ASGL.md`` §3): ``p`` of every neuron, changed at epoch milestones."""

from __future__ import annotations

from torch import nn

from .neuron import neurons

DEFAULT_MILESTONES = (0.0, 0.2, 0.4, 0.6, 0.8, 0.95)


class NoiseSchedule:
    """Sets ``p`` on every ASGL neuron of ``model``.

    ``p`` starts at ``p0``. After epoch ``e`` (0-based) ends, call :meth:`step`; if ``e`` is one of
    ``int(f · epochs)`` for the milestone fractions ``f``, ``p ← clamp(p · gamma, 0, 1)``.
    ``gamma < 1`` anneals toward the pure SNN, ``gamma > 1`` raises the noise, ``gamma = 1`` keeps ``p``.
    A fraction listed twice (or two fractions landing on one epoch) still applies ``gamma`` once per
    epoch. ``state_dict`` / ``load_state_dict`` carry ``p`` and the epoch count for resuming.
    """

    def __init__(self, model: nn.Module, p0: float, epochs: int, gamma: float = 1.0,
                 milestones=DEFAULT_MILESTONES):
        if not 0.0 <= float(p0) <= 1.0:
            raise ValueError(f"p0 must be in [0, 1], got {p0!r}")
        if not (isinstance(epochs, int) and epochs > 0):
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if not float(gamma) >= 0.0:
            raise ValueError(f"gamma must be >= 0, got {gamma!r}")
        bad = [f for f in milestones if not 0.0 <= float(f) <= 1.0]
        if bad:
            raise ValueError(f"milestone fractions must be in [0, 1], got {bad}")
        self.model = model
        self.epochs = epochs
        self.gamma = float(gamma)
        self.milestone_epochs = sorted({int(float(f) * epochs) for f in milestones})
        self.p = float(p0)
        self.epochs_done = 0
        self._apply()

    def _apply(self) -> None:
        for m in neurons(self.model):
            m.p = self.p

    def step(self) -> float:
        """Call once after each epoch; returns the ``p`` for the next epoch."""
        if self.epochs_done in self.milestone_epochs:
            self.p = min(max(self.p * self.gamma, 0.0), 1.0)
        self.epochs_done += 1
        self._apply()
        return self.p

    def state_dict(self) -> dict:
        return {"p": self.p, "epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict) -> None:
        self.p = float(state["p"])
        self.epochs_done = int(state["epochs_done"])
        self._apply()
