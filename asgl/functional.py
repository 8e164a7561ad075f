"""Functional form of the ASGL neurons, with backend dispatch.

``backend="torch"`` runs the plain-PyTorch reference (:mod:`asgl.kernels.lif_ref`); ``"triton"`` the
fused kernel (:mod:`asgl.kernels.lif`); ``"auto"`` picks the fused kernel for CUDA tensors and the
reference otherwise. The Triton backend also runs CPU tensors when ``TRITON_INTERPRET=1`` was set
before ``triton`` was imported (the test suite does this).
"""

from __future__ import annotations

import difflib
import importlib.util
import os

import torch

from asgl.kernels.lif_ref import RESETS, SURROGATES, lif_ref
from asgl.kernels.rlif_ref import recurrent_lif_ref

BACKENDS = ("auto", "torch", "triton")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, x: torch.Tensor, fused_module: str = "asgl.kernels.lif") -> str:
    """``"auto"`` -> ``"triton"`` on CUDA tensors when triton is installed and the fused kernel exists,
    else ``"torch"`` (triton is an optional dependency: a platform without it runs the reference)."""
    check_choice("backend", backend, BACKENDS)
    if backend == "auto":
        fused = importlib.util.find_spec("triton") is not None and importlib.util.find_spec(fused_module) is not None
        return "triton" if x.is_cuda and fused else "torch"
    if backend == "triton" and not x.is_cuda and not _interpreting():
        raise ValueError(
            "backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before triton is imported, "
            f"for testing on the CPU); got a tensor on {x.device}. Use backend='torch' or 'auto'."
        )
    return backend


def draw_seed(device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
    """A seed for the in-kernel RNG: one int64 in ``[0, 2**31 - 1)`` on ``device``.

    Drawn on the device from ``generator`` (default: the device's default generator), so
    ``torch.manual_seed`` (per rank) makes the fused kernel's noise masks reproducible. It stays a
    tensor that the kernel reads: no host sync, no graph break under ``torch.compile``, and a fresh
    draw on every replay of a captured CUDA graph.
    """
    return torch.randint(0, 2**31 - 1, (1,), device=device, generator=generator, dtype=torch.int64)


def check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    """``ValueError`` naming ``name`` (and the closest choice) unless ``value`` is one of ``choices``."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}{hint}")


def check_p(p: float) -> None:
    """The analog-mode probability: a number in [0, 1]."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(p, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"p (the analog-mode probability) must be in [0, 1], got {p!r}")


def check_neuron_args(*, reset: str, surrogate: str, p: float) -> None:
    """The arguments every neuron function takes, checked where a caller's values enter (the
    functions below, ``asgl.LIF`` at construction)."""
    check_choice("reset", reset, RESETS)
    check_choice("surrogate", surrogate, SURROGATES)
    check_p(p)


def check_lif_input(x_seq: torch.Tensor, width_param: torch.Tensor) -> None:
    """``x_seq`` is ``[T, B, ...]``, with dim 2 the channels of a channel-wise ``width_param``."""
    if x_seq.dim() < 2:
        raise ValueError(f"x_seq must be [T, B, ...] with at least 2 dims, got shape {tuple(x_seq.shape)}")
    if width_param.dim() == 1 and (x_seq.dim() < 3 or x_seq.shape[2] != width_param.shape[0]):
        raise ValueError(
            f"channel-wise width has {width_param.shape[0]} channels but x_seq of shape "
            f"{tuple(x_seq.shape)} has {x_seq.shape[2] if x_seq.dim() >= 3 else 'no'} channels at dim 2"
        )


def lif(
    x_seq: torch.Tensor,
    decay_logit: torch.Tensor,
    width_param: torch.Tensor,
    thresh: torch.Tensor | float,
    *,
    reset: str = "hard",
    v_reset: float = 0.0,
    surrogate: str = "sigmoid",
    p: float = 0.0,
    training: bool = True,
    backend: str = "auto",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Multi-step ASGL LIF neuron, ``x_seq [T, B, ...] -> y_seq = θ·o`` (same shape and dtype).

    See :func:`asgl.kernels.lif_ref.lif_ref` for the equations. ``generator`` seeds the noise mask:
    the reference draws the mask from it, the fused kernel draws one seed from it.
    """
    check_neuron_args(reset=reset, surrogate=surrogate, p=p)
    check_lif_input(x_seq, width_param)
    return run_lif(x_seq, decay_logit, width_param, thresh, reset=reset, v_reset=v_reset, surrogate=surrogate, p=p,
                   training=training, backend=backend, generator=generator)


def run_lif(x_seq: torch.Tensor, decay_logit: torch.Tensor, width_param: torch.Tensor, thresh: torch.Tensor | float,
            *, reset: str, v_reset: float, surrogate: str, p: float, training: bool, backend: str,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`lif` for arguments already checked where they entered (``asgl.LIF`` checks its own at
    construction and its input in ``forward``): the backend dispatch alone."""
    if resolve_backend(backend, x_seq) == "torch":
        return lif_ref(
            x_seq, decay_logit, width_param, thresh, reset=reset, v_reset=v_reset,
            surrogate=surrogate, p=p, training=training, generator=generator,
        )
    from asgl.kernels.lif import lif_fused

    return lif_fused(
        x_seq, decay_logit, width_param, thresh, reset=reset, v_reset=v_reset,
        surrogate=surrogate, p=p, training=training, seed=draw_seed(x_seq.device, generator),
    )


def recurrent_lif(
    wx_seq: torch.Tensor,
    recurrent_weight: torch.Tensor,
    decay_logit: torch.Tensor,
    width_param: torch.Tensor,
    thresh: torch.Tensor | float,
    *,
    reset: str = "hard",
    v_reset: float = 0.0,
    surrogate: str = "sigmoid",
    p: float = 0.0,
    training: bool = True,
    backend: str = "auto",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Recurrent multi-step ASGL LIF, ``wx_seq [T, B, H] -> y_seq [T, B, H]``.

    See :func:`asgl.kernels.rlif_ref.recurrent_lif_ref` for the equations.
    """
    check_neuron_args(reset=reset, surrogate=surrogate, p=p)
    if wx_seq.dim() != 3:
        raise ValueError(f"wx_seq must be [T, B, H], got shape {tuple(wx_seq.shape)}")
    H = wx_seq.shape[2]
    if tuple(recurrent_weight.shape) != (H, H):
        raise ValueError(f"recurrent_weight must be [{H}, {H}], got {tuple(recurrent_weight.shape)}")
    return run_recurrent_lif(wx_seq, recurrent_weight, decay_logit, width_param, thresh, reset=reset,
                             v_reset=v_reset, surrogate=surrogate, p=p, training=training, backend=backend,
                             generator=generator)


def run_recurrent_lif(wx_seq: torch.Tensor, recurrent_weight: torch.Tensor, decay_logit: torch.Tensor,
                      width_param: torch.Tensor, thresh: torch.Tensor | float, *, reset: str, v_reset: float,
                      surrogate: str, p: float, training: bool, backend: str,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`recurrent_lif` for arguments already checked where they entered (``asgl.RecurrentLIF``):
    the backend dispatch alone."""
    if resolve_backend(backend, wx_seq, fused_module="asgl.kernels.rlif") == "torch":
        return recurrent_lif_ref(
            wx_seq, recurrent_weight, decay_logit, width_param, thresh, reset=reset,
            v_reset=v_reset, surrogate=surrogate, p=p, training=training, generator=generator,
        )
    from asgl.kernels.rlif import recurrent_lif_fused

    return recurrent_lif_fused(
        wx_seq, recurrent_weight, decay_logit, width_param, thresh, reset=reset,
        v_reset=v_reset, surrogate=surrogate, p=p, training=training, seed=draw_seed(wx_seq.device, generator),
    )
