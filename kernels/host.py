"""Host-side helpers the fused ops share (``asgl.kernels.lif``, ``asgl.kernels.bn_lif``,
``asgl.kernels.rlif``): argument checks, the kernel order of a tensor's memory, output allocation
and the compile options every launch passes. No kernels here; nothing touches a GPU at import."""

from __future__ import annotations

import torch
from torch import Tensor

from .common import NOISE_ALL, NOISE_DRAW, NOISE_NONE
from .lif_ref import RESETS, SURROGATES

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Floating-point contraction pinned (triton 3.6-3.9 fuse a·b + c into FMA by default, 3.10 will not):
# one rounding fewer per update, and every supported triton compiles the same arithmetic.
COMPILE_OPTIONS = {"enable_fp_fusion": True}


def kernel_order(x: Tensor):
    """Permutation ``perm`` with ``x.permute(perm)`` contiguous and time first, or None.

    Contiguous ``[T, B, C, *rest]`` gives the identity (channel = ``(n // INNER) % C`` with
    ``INNER = prod(rest)``); channels-last memory ``[T, B, *rest, C]`` gives the permutation that
    moves C last (``INNER = 1``), so it runs without a copy. Anything else is copied.
    """
    if x.is_contiguous():
        return tuple(range(x.dim()))
    if x.dim() >= 4:
        perm = (0, 1) + tuple(range(3, x.dim())) + (2,)
        if x.permute(perm).is_contiguous():
            return perm
    return None


def alloc_like(x: Tensor, dtype=None) -> Tensor:
    """An output with ``x``'s shape whose kernel-order view is contiguous (shared with the fakes)."""
    if kernel_order(x) is not None:
        return torch.empty_like(x, dtype=dtype)
    return torch.empty(x.shape, dtype=dtype or x.dtype, device=x.device)


def check_input(x_seq, name: str) -> None:
    if not isinstance(x_seq, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x_seq).__name__}")
    if x_seq.dtype not in DTYPES:
        raise ValueError(f"{name} must have dtype in {DTYPES}, got {x_seq.dtype}")


def check_param(name: str, t, x_seq: Tensor, shapes) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if tuple(t.shape) not in shapes:
        raise ValueError(f"{name} must have shape in {sorted(shapes)}, got {tuple(t.shape)}")
    if t.device != x_seq.device:
        raise ValueError(f"{name} is on {t.device} but x_seq is on {x_seq.device}")


def seed_tensor(seed, x_seq: Tensor) -> Tensor:
    """``seed`` (int or one-element int64 tensor) as a ``[1]`` int64 tensor on ``x_seq``'s device."""
    if isinstance(seed, Tensor):
        if seed.dtype != torch.int64 or seed.numel() != 1 or seed.device != x_seq.device:
            raise ValueError(
                f"a tensor seed must be one int64 element on {x_seq.device}, got dtype {seed.dtype}, "
                f"{seed.numel()} elements on {seed.device}"
            )
        return seed.reshape(1)
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**31:
        return torch.full((1,), seed, dtype=torch.int64, device=x_seq.device)
    raise ValueError(f"seed must be an int in [0, 2**31) or a one-element int64 tensor, got {seed!r}")


def neuron_args(x_seq: Tensor, decay_logit, width_param, width_shapes, thresh, *, reset, surrogate, p, training,
                seed):
    """Check the arguments the fused neurons share; returns ``(thresh, seed, p, noise)`` with θ and
    the seed as device tensors and ``noise`` the kernels' NOISE mode. ``x_seq``'s type, dtype and
    rank are checked by the caller (see :func:`check_input`)."""
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p (the analog-mode probability) must be in [0, 1], got {p!r}")
    seed = seed_tensor(seed, x_seq)
    check_param("decay_logit", decay_logit, x_seq, {()})
    check_param("width_param", width_param, x_seq, width_shapes)
    if isinstance(thresh, Tensor):
        check_param("thresh", thresh, x_seq, {()})
    elif isinstance(thresh, (int, float)) and not isinstance(thresh, bool):
        thresh = torch.full((), float(thresh), dtype=torch.float32, device=x_seq.device)
    else:
        raise ValueError(f"thresh must be a float or a 0-dim tensor, got {type(thresh).__name__}")
    if not training or p == 0.0:
        noise = NOISE_NONE
    elif p == 1.0:
        noise = NOISE_ALL
    else:
        noise = NOISE_DRAW
    return thresh, seed, p, noise
