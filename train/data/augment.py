"""Batched, device-side data augmentation: crop, flip, Cutout, AutoAugment (CIFAR-10), event roll.

Everything runs on the device of the input, on the whole batch at once: per-sample random
parameters are drawn as tensors (from an optional ``torch.Generator``, so runs are reproducible)
and applied with gathers, ``torch.where`` and masks, never with a Python loop over images. No
host synchronisation happens inside: an op that a sample did not draw is still computed for the
whole batch and discarded by ``torch.where``, which for 32x32 images is cheaper than a
``mask.any()`` sync per op.

:func:`augment_images` draws all of a batch's parameters first (:func:`draw_augment`, 11
launches) and then applies them either eagerly (:func:`apply_augment_ref`, the reference: 481
launches per batch for crop + flip + AutoAugment + Cutout) or in one Triton launch
(:func:`apply_augment_fused`, ``train/data/augment_triton.py``; the default on CUDA), with the same
result bit for bit.

Image layout ``[B, C, H, W]`` (uint8 for :func:`augment_images`); event layout
``[B, T, C, H, W]`` (float, for :func:`augment_events`).

Coordinates. Geometric ops are written as an *inverse* map: each output pixel centre
``(x, y)`` (measured from the image centre, ``x = j + 0.5 - W/2``, ``y = i + 0.5 - H/2``) reads the
input at ``M @ (x, y, 1)`` with ``M`` a per-sample ``[2, 3]`` matrix, rounded to the nearest pixel
(half to even, like ``grid_sample(mode="nearest")``); reads outside the image give ``fill``.

AutoAugment follows the CIFAR-10 policy of Cubuk et al. (2019) with the magnitude bins of
torchvision's ``AutoAugmentPolicy.CIFAR10`` (10 bins, random sign for the signed ops) and its
tensor-op semantics (blends truncate to uint8, sharpness rounds its blurred image, equalize uses
torchvision's step rule); see :data:`CIFAR10_POLICY` and :func:`magnitude`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

__all__ = [
    "CIFAR10_POLICY",
    "OPS",
    "AugmentDraws",
    "apply_augment_fused",
    "apply_augment_ref",
    "draw_augment",
    "adjust_brightness",
    "adjust_color",
    "adjust_contrast",
    "adjust_sharpness",
    "affine_nearest",
    "apply_autoaugment",
    "augment_events",
    "augment_images",
    "auto_augment",
    "autocontrast",
    "cutout_",
    "draw_autoaugment_params",
    "equalize",
    "invert",
    "magnitude",
    "posterize",
    "random_crop",
    "random_flip",
    "rotate",
    "shear_x",
    "shear_y",
    "solarize",
    "translate",
]

# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _check_nonneg_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _check_tensor(name: str, x, ndim: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got {tuple(x.shape)}")


def _check_uint8_images(name: str, x) -> None:
    _check_tensor(name, x, 4, "[B, C, H, W]")
    if x.dtype != torch.uint8:
        raise ValueError(f"{name} must be uint8 [B, C, H, W], got dtype {x.dtype}")


def _check_generator(generator, x: torch.Tensor) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device}, but the tensor is on {x.device}: they must match"
        )


def _per_sample(value, B: int, device, dtype=torch.float32) -> torch.Tensor:
    """A scalar or a ``[B]`` tensor -> a ``[B]`` tensor on ``device``."""
    v = torch.as_tensor(value, dtype=dtype, device=device)
    if v.dim() == 0:
        return v.expand(B)
    if v.shape != (B,):
        raise ValueError(f"per-sample parameter must be a scalar or have shape [{B}], got {tuple(v.shape)}")
    return v


# --------------------------------------------------------------------------------------------
# Pixel gathers (shared by crop, the affine ops and roll)
# --------------------------------------------------------------------------------------------


def _gather_pixels(
    x: torch.Tensor, src_y: torch.Tensor, src_x: torch.Tensor, fill: float = 0
) -> torch.Tensor:
    """``out[b, c, i, j] = x[b, c, src_y[b, i, j], src_x[b, i, j]]``, or ``fill`` out of bounds.

    ``x``: ``[B, C, H, W]`` any dtype; ``src_y``, ``src_x``: int64, broadcastable to ``[B, H, W]``.
    """
    B, C, H, W = x.shape
    src_y, src_x = torch.broadcast_tensors(src_y, src_x)
    src_y = src_y.expand(B, H, W)
    src_x = src_x.expand(B, H, W)
    valid = (src_y >= 0) & (src_y < H) & (src_x >= 0) & (src_x < W)
    flat = (src_y.clamp(0, H - 1) * W + src_x.clamp(0, W - 1)).reshape(B, 1, H * W).expand(B, C, H * W)
    out = x.reshape(B, C, H * W).gather(2, flat).view(B, C, H, W)
    return out.masked_fill(~valid.unsqueeze(1), fill)


def affine_nearest(x: torch.Tensor, matrix: torch.Tensor, fill: float = 0) -> torch.Tensor:
    """Per-sample affine warp with nearest-pixel reads.

    ``x``: ``[B, C, H, W]``; ``matrix``: ``[B, 2, 3]`` inverse map in centred pixel coordinates,

        (x_src, y_src) = M @ (x_out, y_out, 1),  x = j + 0.5 - W/2,  y = i + 0.5 - H/2,

    read at ``j_src = round(x_src + W/2 - 0.5)``, ``i_src = round(y_src + H/2 - 0.5)`` (half to
    even); out-of-image reads give ``fill``. Returns ``[B, C, H, W]`` in the dtype of ``x``.
    """
    B, C, H, W = x.shape
    m = matrix.to(device=x.device, dtype=torch.float32)
    xs = torch.arange(W, device=x.device, dtype=torch.float32) + (0.5 - W / 2)
    ys = torch.arange(H, device=x.device, dtype=torch.float32) + (0.5 - H / 2)
    xs = xs.view(1, 1, W)
    ys = ys.view(1, H, 1)
    m = m.view(B, 6, 1, 1)
    x_src = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]
    y_src = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    j = torch.round(x_src + (W / 2 - 0.5)).long()
    i = torch.round(y_src + (H / 2 - 0.5)).long()
    return _gather_pixels(x, i, j, fill)


def _identity_matrix(B: int, device) -> torch.Tensor:
    # torch.eye builds it on the device: no host-to-device copy in the per-batch path
    return torch.eye(2, 3, device=device).expand(B, 2, 3)


def _shear_x_matrix(m: torch.Tensor, H: int) -> torch.Tensor:
    # Shear about the top-left corner (torchvision's centre=[0, 0]): x_src = x + m * (y + H/2).
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return torch.stack([one, m, m * (H / 2), zero, one, zero], 1).view(-1, 2, 3)


def _shear_y_matrix(m: torch.Tensor, W: int) -> torch.Tensor:
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return torch.stack([one, zero, zero, m, one, m * (W / 2)], 1).view(-1, 2, 3)


def _translate_matrix(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    # Content moves by (+tx, +ty): the output reads the input at (x - tx, y - ty).
    one, zero = torch.ones_like(tx), torch.zeros_like(tx)
    return torch.stack([one, zero, -tx, zero, one, -ty], 1).view(-1, 2, 3)


def _rotation_matrix(degrees: torch.Tensor) -> torch.Tensor:
    # Counter-clockwise on screen (y points down) about the image centre: the output reads the
    # input at R(theta) (x, y) with R = [[cos, -sin], [sin, cos]], so +90 equals torch.rot90(k=1).
    t = torch.deg2rad(degrees)
    c, s, zero = torch.cos(t), torch.sin(t), torch.zeros_like(t)
    return torch.stack([c, -s, zero, s, c, zero], 1).view(-1, 2, 3)


def shear_x(x: torch.Tensor, m, fill: float = 0) -> torch.Tensor:
    """ShearX: ``out[i, j] = x[i, round(j + m (i + 1/2))]`` per sample (``m``: scalar or ``[B]``)."""
    return affine_nearest(x, _shear_x_matrix(_per_sample(m, x.shape[0], x.device), x.shape[2]), fill)


def shear_y(x: torch.Tensor, m, fill: float = 0) -> torch.Tensor:
    """ShearY: ``out[i, j] = x[round(i + m (j + 1/2)), j]`` per sample (``m``: scalar or ``[B]``)."""
    return affine_nearest(x, _shear_y_matrix(_per_sample(m, x.shape[0], x.device), x.shape[3]), fill)


def translate(x: torch.Tensor, tx, ty, fill: float = 0) -> torch.Tensor:
    """Translate: ``out[i, j] = x[i - ty, j - tx]`` (integer ``tx``, ``ty``: scalars or ``[B]``)."""
    B = x.shape[0]
    matrix = _translate_matrix(_per_sample(tx, B, x.device), _per_sample(ty, B, x.device))
    return affine_nearest(x, matrix, fill)


def rotate(x: torch.Tensor, degrees, fill: float = 0) -> torch.Tensor:
    """Rotate counter-clockwise by ``degrees`` (scalar or ``[B]``) about the centre, same size."""
    return affine_nearest(x, _rotation_matrix(_per_sample(degrees, x.shape[0], x.device)), fill)


# --------------------------------------------------------------------------------------------
# Colour / histogram ops on uint8 [B, C, H, W] (C = 1 or 3)
# --------------------------------------------------------------------------------------------


def _blend(img: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``trunc(clamp(f * img + (1 - f) * other, 0, 255))`` as uint8; ``f``: ``[B]``."""
    f = factor.view(-1, 1, 1, 1)
    return (f * img.float() + (1.0 - f) * other.float()).clamp_(0, 255).to(torch.uint8)


def _grayscale(img: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma ``0.2989 R + 0.587 G + 0.114 B`` truncated to uint8: ``[B, 1, H, W]``."""
    r, g, b = img.float().unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(torch.uint8).unsqueeze(1)


def invert(x: torch.Tensor) -> torch.Tensor:
    """``255 - x``."""
    return 255 - x


def solarize(x: torch.Tensor, threshold) -> torch.Tensor:
    """``255 - x`` where ``x >= threshold`` (scalar or ``[B]``), else ``x``."""
    t = _per_sample(threshold, x.shape[0], x.device).view(-1, 1, 1, 1)
    return torch.where(x.float() >= t, 255 - x, x)


def posterize(x: torch.Tensor, bits) -> torch.Tensor:
    """Keep the top ``bits`` (1..8, scalar or ``[B]``) bits of each value: ``x & (255 << (8 - bits))``."""
    b = _per_sample(bits, x.shape[0], x.device, torch.int64)
    mask = ((255 << (8 - b)) & 255).to(torch.uint8).view(-1, 1, 1, 1)
    return x & mask


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel, stretch ``[lo, hi]`` (its min and max) to ``[0, 255]``:

        out = floor((x - lo) * 255 / (hi - lo)),   unchanged where hi == lo.

    Computed in integers, so ``lo -> 0`` and ``hi -> 255`` exactly on every device (the fp32
    ``x * (255 / (hi - lo))`` form can land a hair under an integer and truncate one level low).
    """
    xi = x.to(torch.int32)
    lo = xi.amin(dim=(-2, -1), keepdim=True)
    hi = xi.amax(dim=(-2, -1), keepdim=True)
    stretched = torch.div((xi - lo) * 255, (hi - lo).clamp_min(1), rounding_mode="floor")
    return torch.where(hi == lo, xi, stretched).to(torch.uint8)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel histogram equalisation (PIL / torchvision rule), batched.

    With ``h`` the 256-bin histogram of one channel of ``N = H W`` pixels and ``v_max`` its largest
    value, ``step = (N - h[v_max]) // 255``; if ``step == 0`` the channel is unchanged, else

        lut[0] = 0,  lut[v] = min(255, (sum_{u < v} h[u] + step // 2) // step),   out = lut[x].

    All ``B C`` histograms come from one ``scatter_add_`` on indices offset by ``256 * row``
    (``bincount`` would read its output size back from a CUDA device: a host sync per call).
    """
    B, C, H, W = x.shape
    N = H * W
    rows = B * C
    flat = x.reshape(rows, N).long()
    offset = torch.arange(rows, device=x.device).unsqueeze(1) * 256
    index = (flat + offset).view(-1)
    hist = torch.zeros(rows * 256, dtype=torch.int64, device=x.device)
    hist = hist.scatter_add_(0, index, torch.ones_like(index)).view(rows, 256)
    top = flat.amax(dim=1, keepdim=True)
    step = (N - hist.gather(1, top)) // 255  # [rows, 1]
    cum = hist.cumsum(1)
    lut = (cum + step // 2) // step.clamp_min(1)
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut[:, :-1]], 1).clamp_(0, 255)
    out = torch.where(step == 0, flat, lut.gather(1, flat))
    return out.to(torch.uint8).view(B, C, H, W)


def adjust_brightness(x: torch.Tensor, factor) -> torch.Tensor:
    """Blend with black: ``trunc(clamp(f x, 0, 255))`` (``f``: scalar or ``[B]``)."""
    f = _per_sample(factor, x.shape[0], x.device)
    return _blend(x, torch.zeros_like(x), f)


def adjust_color(x: torch.Tensor, factor) -> torch.Tensor:
    """Saturation: blend with the grayscale image, ``f x + (1 - f) gray(x)``; identity for C = 1."""
    if x.shape[1] == 1:
        return x
    f = _per_sample(factor, x.shape[0], x.device)
    return _blend(x, _grayscale(x), f)


def adjust_contrast(x: torch.Tensor, factor) -> torch.Tensor:
    """Blend with the image's mean gray level: ``f x + (1 - f) mean(gray(x))`` per image."""
    f = _per_sample(factor, x.shape[0], x.device)
    gray = _grayscale(x) if x.shape[1] == 3 else x
    mean = gray.float().mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, f)


def adjust_sharpness(x: torch.Tensor, factor) -> torch.Tensor:
    """Blend with a smoothed image: ``f x + (1 - f) blur(x)``, where ``blur`` is the 3x3 kernel
    ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`` rounded to uint8 on the interior and ``x`` on the
    one-pixel border. Identity for images of side <= 2."""
    B, C, H, W = x.shape
    if H <= 2 or W <= 2:
        return x
    f = _per_sample(factor, B, x.device)
    # The 3x3 window sum is formed from nine shifted slices rather than conv2d: integer sums are
    # exact in fp32, so the result cannot depend on TF32 convolutions or the device, and
    # S / 13 never lies within 1/26 of a rounding tie.
    xf = x.float()
    window = sum(xf[..., dy : H - 2 + dy, dx : W - 2 + dx] for dy in range(3) for dx in range(3))
    smooth = ((window + 4.0 * xf[..., 1:-1, 1:-1]) / 13.0).round_().to(torch.uint8)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(x, degenerate, f)


# --------------------------------------------------------------------------------------------
# AutoAugment, CIFAR-10 policy
# --------------------------------------------------------------------------------------------

OPS = (
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
    "Invert",
)
_OP_ID = {name: k for k, name in enumerate(OPS)}
_SIGNED = frozenset(
    {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}
)
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
NUM_BINS = 10

# The 25 CIFAR-10 sub-policies (Cubuk et al. 2019, table in the appendix): each is two
# (op, probability, magnitude bin 0..9 or None) steps, applied in order.
CIFAR10_POLICY = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)


def magnitude(op: str, bin_: int | None, H: int, W: int) -> float:
    """Unsigned magnitude of ``op`` at bin ``bin_`` (0..9) for an ``H x W`` image.

    With ``k = bin_ / 9``: ShearX/Y ``0.3 k`` (shear factor), TranslateX ``(150/331) W k`` px,
    TranslateY ``(150/331) H k`` px, Rotate ``30 k`` degrees, Brightness/Color/Contrast/Sharpness
    ``0.9 k`` (factor ``1 ± m``), Posterize ``8 - round(4 k)`` bits, Solarize threshold
    ``255 (1 - k)``; AutoContrast, Equalize and Invert take none (0).
    """
    if op not in _OP_ID:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if bin_ is None:
        return 0.0
    k = bin_ / (NUM_BINS - 1)
    if op in ("ShearX", "ShearY"):
        return 0.3 * k
    if op == "TranslateX":
        return 150.0 / 331.0 * W * k
    if op == "TranslateY":
        return 150.0 / 331.0 * H * k
    if op == "Rotate":
        return 30.0 * k
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 0.9 * k
    if op == "Posterize":
        return float(8 - round(4 * k))
    if op == "Solarize":
        return 255.0 * (1.0 - k)
    return 0.0


@lru_cache(maxsize=16)
def _policy_tables(H: int, W: int, device: str):
    """``(op_id [P, 2] int64, prob [P, 2] f32, magnitude [P, 2] f32, signed [len(OPS)] bool)``."""
    op_id = [[_OP_ID[op] for op, _, _ in sub] for sub in CIFAR10_POLICY]
    prob = [[p for _, p, _ in sub] for sub in CIFAR10_POLICY]
    mag = [[magnitude(op, b, H, W) for op, _, b in sub] for sub in CIFAR10_POLICY]
    signed = [op in _SIGNED for op in OPS]
    return (
        torch.tensor(op_id, dtype=torch.int64, device=device),
        torch.tensor(prob, dtype=torch.float32, device=device),
        torch.tensor(mag, dtype=torch.float32, device=device),
        torch.tensor(signed, dtype=torch.bool, device=device),
    )


def draw_autoaugment_params(B: int, device, generator: torch.Generator | None = None):
    """Per-sample AutoAugment draws: ``(policy [B] int64, u [B, 2] f32 in [0, 1), sign [B, 2] ±1)``.

    Sample ``b`` uses sub-policy ``policy[b]``; its step ``s`` runs when ``u[b, s] < p`` and a
    signed magnitude gets the sign ``sign[b, s]``.
    """
    policy = torch.randint(len(CIFAR10_POLICY), (B,), device=device, generator=generator)
    u = torch.rand(B, 2, device=device, generator=generator)
    sign = torch.randint(2, (B, 2), device=device, generator=generator).float() * 2 - 1
    return policy, u, sign


_PIXEL_OPS = tuple(op for op in OPS if op not in _GEOMETRIC)


def _pixel_op(name: str, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The non-geometric op ``name`` on the whole batch with signed magnitudes ``m [B]``."""
    if name == "Brightness":
        return adjust_brightness(x, 1.0 + m)
    if name == "Color":
        return adjust_color(x, 1.0 + m)
    if name == "Contrast":
        return adjust_contrast(x, 1.0 + m)
    if name == "Sharpness":
        return adjust_sharpness(x, 1.0 + m)
    if name == "Posterize":
        # m holds other ops' magnitudes for samples that did not draw Posterize: keep shifts valid
        return posterize(x, m.long().clamp(0, 8))
    if name == "Solarize":
        return solarize(x, m)
    if name == "AutoContrast":
        return autocontrast(x)
    if name == "Equalize":
        return equalize(x)
    if name == "Invert":
        return invert(x)
    raise ValueError(f"not a pixel op: {name!r}")


def apply_autoaugment(
    x: torch.Tensor, policy: torch.Tensor, u: torch.Tensor, sign: torch.Tensor, fill: float = 0
) -> torch.Tensor:
    """Apply the drawn sub-policies (see :func:`draw_autoaugment_params`) to uint8 ``x [B, C, H, W]``.

    Per step, the geometric ops of all samples are merged into one per-sample matrix and one
    gather; each other op is computed on the batch and kept where the sample selected it.
    Translations are truncated to whole pixels (``trunc(±m)``), posterize bits are integers.
    """
    _check_uint8_images("x", x)
    B, C, H, W = x.shape
    if C not in (1, 3):
        raise ValueError(f"x must have 1 or 3 channels for AutoAugment, got C={C}")
    op_tab, prob_tab, mag_tab, signed_tab = _policy_tables(H, W, str(x.device))
    policy = policy.to(x.device)
    for s in range(2):
        op = op_tab[policy, s]
        active = u[:, s].to(x.device) < prob_tab[policy, s]
        m = mag_tab[policy, s] * torch.where(signed_tab[op], sign[:, s].to(x.device), 1.0)
        sel = torch.where(active, op, -1)

        matrix = _identity_matrix(B, x.device)
        candidates = {
            "ShearX": _shear_x_matrix(m, H),
            "ShearY": _shear_y_matrix(m, W),
            "TranslateX": _translate_matrix(torch.trunc(m), torch.zeros_like(m)),
            "TranslateY": _translate_matrix(torch.zeros_like(m), torch.trunc(m)),
            "Rotate": _rotation_matrix(m),
        }
        for name in _GEOMETRIC:
            matrix = torch.where((sel == _OP_ID[name]).view(B, 1, 1), candidates[name], matrix)
        is_geo = (sel >= 0) & (sel <= max(_OP_ID[n] for n in _GEOMETRIC))
        x = torch.where(is_geo.view(B, 1, 1, 1), affine_nearest(x, matrix, fill), x)

        for name in _PIXEL_OPS:
            x = torch.where((sel == _OP_ID[name]).view(B, 1, 1, 1), _pixel_op(name, x, m), x)
    return x


def auto_augment(
    x: torch.Tensor, *, generator: torch.Generator | None = None, fill: float = 0
) -> torch.Tensor:
    """AutoAugment (CIFAR-10 policy), one random sub-policy per image: uint8 ``[B, C, H, W]`` -> same."""
    _check_uint8_images("x", x)
    _check_generator(generator, x)
    policy, u, sign = draw_autoaugment_params(x.shape[0], x.device, generator)
    return apply_autoaugment(x, policy, u, sign, fill)


# --------------------------------------------------------------------------------------------
# Crop, flip, Cutout
# --------------------------------------------------------------------------------------------


def _crop_with(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``out[b, :, i, j] = x[b, :, i + shift[0, b], j + shift[1, b]]``, 0 outside the image."""
    B, C, H, W = x.shape
    src_y = torch.arange(H, device=x.device).view(1, H, 1) + shift[0].view(B, 1, 1)
    src_x = torch.arange(W, device=x.device).view(1, 1, W) + shift[1].view(B, 1, 1)
    return _gather_pixels(x, src_y, src_x, 0)


def _flip_with(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def _cutout_with_(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int, fill: float = 0) -> torch.Tensor:
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    y0 = (cy - size // 2).view(B, 1, 1)
    x0 = (cx - size // 2).view(B, 1, 1)
    rows = torch.arange(H, device=x.device).view(1, H, 1)
    cols = torch.arange(W, device=x.device).view(1, 1, W)
    mask = (rows >= y0) & (rows < y0 + size) & (cols >= x0) & (cols < x0 + size)  # [B, H, W]
    return x.masked_fill_(mask.view(B, *([1] * (x.dim() - 3)), H, W), fill)


def random_crop(x: torch.Tensor, pad: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop of the zero-padded image, same size: ``out[i, j] = x[i + dy, j + dx]`` (0 outside),
    with ``dy, dx`` uniform integers in ``[-pad, pad]`` per sample. ``x``: ``[B, C, H, W]`` any dtype."""
    _check_tensor("x", x, 4, "[B, C, H, W]")
    _check_nonneg_int("pad", pad)
    _check_generator(generator, x)
    if pad == 0:
        return x
    shift = torch.randint(-pad, pad + 1, (2, x.shape[0]), device=x.device, generator=generator)
    return _crop_with(x, shift)


def random_flip(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip the last axis (W) of each sample with probability 1/2. ``x``: ``[B, ..., W]``."""
    _check_generator(generator, x)
    return _flip_with(x, torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5)


def cutout_(
    x: torch.Tensor, size: int, *, generator: torch.Generator | None = None, fill: float = 0
) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017), in place: per sample, set a ``size x size`` square to ``fill``.

    The centre ``(cy, cx)`` is uniform over the pixels; the square covers rows
    ``[cy - size//2, cy - size//2 + size)`` and the same columns, clipped at the borders (so it may
    be smaller near an edge), on all channels. Works for any dtype (uint8 before, float after
    normalisation, where ``fill=0`` is the mean). ``x``: ``[B, ..., H, W]``; returns ``x``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a torch.Tensor [B, ..., H, W] with at least 3 dims, got {got}")
    _check_nonneg_int("size", size)
    _check_generator(generator, x)
    if size == 0:
        return x
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    cy = torch.randint(H, (B,), device=x.device, generator=generator)
    cx = torch.randint(W, (B,), device=x.device, generator=generator)
    return _cutout_with_(x, cy, cx, size, fill)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentDraws:
    """The random draws of one batch's :func:`augment_images`, ``None`` for a disabled step.

    ``shift [2, B]`` int64 crop offsets ``(dy, dx)``; ``flip [B]`` bool; ``policy [B]``, ``u [B, 2]``,
    ``sign [B, 2]`` as :func:`draw_autoaugment_params`; ``cut_y``, ``cut_x [B]`` int64 Cutout centres
    of squares of side ``cutout``.
    """

    shift: torch.Tensor | None
    flip: torch.Tensor | None
    policy: torch.Tensor | None
    u: torch.Tensor | None
    sign: torch.Tensor | None
    cut_y: torch.Tensor | None
    cut_x: torch.Tensor | None
    cutout: int


def draw_augment(
    B: int, H: int, W: int, *, crop_pad: int = 0, flip: bool = False, autoaugment: bool = False, cutout: int = 0,
    device: torch.device | str = "cpu", generator: torch.Generator | None = None,
) -> AugmentDraws:
    """Draw every random parameter of a batch, in pipeline order (crop, flip, AutoAugment, Cutout):
    the same draws :func:`random_crop`, :func:`random_flip`, :func:`auto_augment` and
    :func:`cutout_` make one after the other from ``generator``."""
    shift = torch.randint(-crop_pad, crop_pad + 1, (2, B), device=device, generator=generator) if crop_pad else None
    flips = torch.rand(B, device=device, generator=generator) < 0.5 if flip else None
    policy = u = sign = None
    if autoaugment:
        policy, u, sign = draw_autoaugment_params(B, device, generator)
    cut_y = cut_x = None
    if cutout:
        cut_y = torch.randint(H, (B,), device=device, generator=generator)
        cut_x = torch.randint(W, (B,), device=device, generator=generator)
    return AugmentDraws(shift, flips, policy, u, sign, cut_y, cut_x, cutout)


def apply_augment_ref(x: torch.Tensor, d: AugmentDraws) -> torch.Tensor:
    """The reference (eager, one kernel per op): crop -> flip -> AutoAugment -> Cutout with the
    draws ``d`` on uint8 ``x [B, C, H, W]``; ``x`` is not modified."""
    out = x
    if d.shift is not None:
        out = _crop_with(out, d.shift)
    if d.flip is not None:
        out = _flip_with(out, d.flip)
    if d.policy is not None:
        out = apply_autoaugment(out, d.policy, d.u, d.sign)
    if d.cut_y is not None:
        out = _cutout_with_(out.clone() if out is x else out, d.cut_y, d.cut_x, d.cutout)
    return out


@lru_cache(maxsize=16)
def _fused_policy_table(H: int, W: int, device: str) -> torch.Tensor:
    """``[P, 2, 5]`` float32 per sub-policy step: ``(op id, p, magnitude, cos, sin)``; the rotation's
    cosine and sine come from the torch calls :func:`_rotation_matrix` makes, on the same device."""
    op_tab, prob_tab, mag_tab, _ = _policy_tables(H, W, device)
    t = torch.deg2rad(mag_tab)
    return torch.stack([op_tab.float(), prob_tab, mag_tab, torch.cos(t), torch.sin(t)], -1).contiguous()


def apply_augment_fused(x: torch.Tensor, d: AugmentDraws) -> torch.Tensor:
    """:func:`apply_augment_ref` in one Triton launch (``train/data/augment_triton.py``); equal bit for bit."""
    from .augment_triton import augment_images_op

    H, W = x.shape[-2:]
    table = _fused_policy_table(H, W, str(x.device)) if d.policy is not None else None
    return augment_images_op(x, d.shift, d.flip, d.policy, d.u, d.sign, d.cut_y, d.cut_x, table, d.cutout)


def augment_images(
    x: torch.Tensor,
    *,
    crop_pad: int = 0,
    flip: bool = False,
    cutout: int = 0,
    autoaugment: bool = False,
    generator: torch.Generator | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Training augmentation for a batch of uint8 images ``[B, C, H, W]`` -> uint8 ``[B, C, H, W]``.

    Order (the ASGL authors' CIFAR pipeline): random crop of the image padded with ``crop_pad``
    zeros -> horizontal flip with p = 1/2 (if ``flip``) -> AutoAugment (CIFAR-10 policy, if
    ``autoaugment``) -> Cutout of side ``cutout`` (if > 0). AutoAugment therefore also sees the
    crop's zero border (Invert turns it white, Equalize counts it). The input is never modified
    (with nothing enabled it is returned as is). All randomness comes from ``generator`` (on the
    device of ``x``; None = torch's default generator for that device), drawn by
    :func:`draw_augment`. ``backend``: ``"torch"`` (:func:`apply_augment_ref`), ``"triton"``
    (:func:`apply_augment_fused`, one launch; CUDA, or the interpreter) or ``"auto"`` (triton on
    CUDA tensors); both give the same images.
    """
    from asgl import functional as F

    _check_uint8_images("x", x)
    _check_nonneg_int("crop_pad", crop_pad)
    _check_nonneg_int("cutout", cutout)
    if not isinstance(flip, bool):
        raise ValueError(f"flip must be a bool, got {flip!r}")
    if not isinstance(autoaugment, bool):
        raise ValueError(f"autoaugment must be a bool, got {autoaugment!r}")
    _check_generator(generator, x)
    B, C, H, W = x.shape
    if autoaugment and C not in (1, 3):
        raise ValueError(f"x must have 1 or 3 channels for AutoAugment, got C={C}")
    use = F.resolve_backend(backend, x, fused_module="asgl.train.data.augment_triton")
    if not (crop_pad or flip or autoaugment or cutout):
        return x
    d = draw_augment(B, H, W, crop_pad=crop_pad, flip=flip, autoaugment=autoaugment, cutout=cutout,
                     device=x.device, generator=generator)
    return apply_augment_fused(x, d) if use == "triton" else apply_augment_ref(x, d)


def augment_events(
    x: torch.Tensor, *, flip: bool = False, roll: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Augmentation for event frames ``[B, T, C, H, W]`` (float) -> same shape and dtype.

    Per sample (the same for all T frames): horizontal flip with p = 1/2 (if ``flip``), then a
    cyclic shift ``torch.roll(x, (dy, dx), dims=(H, W))`` with ``dy, dx`` uniform integers in
    ``[-roll, roll]``, i.e. ``out[..., i, j] = x[..., (i - dy) mod H, (j - dx) mod W]``.
    """
    _check_tensor("x", x, 5, "[B, T, C, H, W]")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor [B, T, C, H, W], got dtype {x.dtype}")
    if not isinstance(flip, bool):
        raise ValueError(f"flip must be a bool, got {flip!r}")
    _check_nonneg_int("roll", roll)
    _check_generator(generator, x)
    out = x
    if flip:
        out = random_flip(out, generator=generator)
    if roll > 0:
        B, T, C, H, W = x.shape
        d = torch.randint(-roll, roll + 1, (2, B), device=x.device, generator=generator)
        src_y = torch.remainder(torch.arange(H, device=x.device).view(1, H, 1) - d[0].view(B, 1, 1), H)
        src_x = torch.remainder(torch.arange(W, device=x.device).view(1, 1, W) - d[1].view(B, 1, 1), W)
        out = _gather_pixels(out.reshape(B, T * C, H, W), src_y, src_x).view(B, T, C, H, W)
    return out
