"""The image augmentation of :func:`asgl.train.data.augment.augment_images` in one Triton launch.

One program per image runs the whole pipeline on the draws the caller made: random crop (padded
with zeros) -> horizontal flip -> the two AutoAugment steps -> Cutout. The image stays in
registers as int32 (one ``[BLOCK]`` vector per channel, ``BLOCK = next_pow2(H W)``); a geometric
op or Sharpness, which read other pixels, goes through a per-image scratch row, and Equalize
through a per-image 256-entry table. Every op computes for the whole image and the drawn one is
selected, so the program has no data-dependent control flow.

Why: the eager reference launches one kernel per op per batch (≈ 960 with AutoAugment at any
batch size, see ``perf/step_budget.py``), ≈ 4 ms of launch overhead per step on a GPU; this is one
launch plus the 11 launches of the draws. The arithmetic is the reference's, operation for operation, in fp32
with FMA contraction off (``enable_fp_fusion=False``), so the output equals
:func:`asgl.train.data.augment.apply_augment_ref` bit for bit (tested in the interpreter); rotation
cosines and sines come from the same torch calls the reference makes.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# jit helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def _round_half_even(v):
    r = tl.floor(v)
    d = v - r
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where((d > 0.5) | ((d == 0.5) & odd), r + 1.0, r)


@triton.jit
def _blend(v, other, f):
    """``trunc(clamp(f v + (1 - f) other, 0, 255))``; ``v`` int32, ``other`` fp32 or int32."""
    s = f * v.to(tl.float32) + (1.0 - f) * other.to(tl.float32)
    return tl.minimum(tl.maximum(s, 0.0), 255.0).to(tl.int32)


@triton.jit
def _gray(v0, v1, v2):
    """ITU-R 601 luma truncated to an integer, as the reference's ``_grayscale``."""
    return (0.2989 * v0.to(tl.float32) + 0.587 * v1.to(tl.float32) + 0.114 * v2.to(tl.float32)).to(tl.int32)


@triton.jit
def _gather(buf, ii, jj, H, W, live, BLOCK: tl.constexpr):
    ok = live & (ii >= 0) & (ii < H) & (jj >= 0) & (jj < W)
    return tl.load(buf + ii * W + jj, mask=ok, other=0)


@triton.jit
def _sharpen(buf, v, i, j, H, W, live, f, BLOCK: tl.constexpr):
    """Blend with the 3x3 ``[[1,1,1],[1,5,1],[1,1,1]] / 13`` smoothing (rounded), border kept."""
    inner = live & (i >= 1) & (i <= H - 2) & (j >= 1) & (j <= W - 2)
    window = tl.zeros([BLOCK], dtype=tl.float32)
    for dy in tl.static_range(3):
        for dx in tl.static_range(3):
            window += tl.load(buf + (i + dy - 1) * W + (j + dx - 1), mask=inner, other=0).to(tl.float32)
    # (S + 4c) / 13 is never within 1/26 of a rounding tie: floor(q + 1/2) is round-half-even here
    smooth = tl.floor((window + 4.0 * v.to(tl.float32)) / 13.0 + 0.5).to(tl.int32)
    # images of side <= 2 have no interior: the identity (a blend with itself could round down)
    return tl.where((H > 2) & (W > 2), _blend(v, tl.where(inner, smooth, v), f), v)


@triton.jit
def _autocontrast(v, live):
    lo = tl.min(tl.where(live, v, 255), axis=0)
    hi = tl.max(tl.where(live, v, 0), axis=0)
    stretched = ((v - lo) * 255) // tl.maximum(hi - lo, 1)
    return tl.where(hi == lo, v, stretched)


@triton.jit
def _equalize(v, live, lut, N, BLOCK: tl.constexpr):
    """PIL/torchvision rule: ``step = (N - h[v_max]) // 255``; ``lut[v] = (Σ_{u<v} h[u] + step//2) // step``."""
    bins = tl.arange(0, 256)
    hist = tl.histogram(tl.where(live, v, 0), 256)
    hist = hist - tl.where(bins == 0, BLOCK - N, 0)  # the padding lanes counted as zeros
    top = tl.max(tl.where(live, v, 0), axis=0)
    step = (N - tl.sum(tl.where(bins == top, hist, 0), axis=0)) // 255
    below = tl.cumsum(hist, 0) - hist
    table = tl.minimum((below + step // 2) // tl.maximum(step, 1), 255)
    tl.store(lut + bins, table)
    tl.debug_barrier()
    out = tl.load(lut + v, mask=live, other=0)
    tl.debug_barrier()  # the next channel reuses the table
    return tl.where(step == 0, v, out)


@triton.jit
def _pixel_op(sel, m, v, gray, mean, buf, lut, i, j, H, W, live, IS_RGB: tl.constexpr, BLOCK: tl.constexpr):
    """The drawn non-geometric op of one channel ``v`` (``gray``: the pixel's luma, ``mean``: the
    image's mean luma); ``sel`` outside 5..13 keeps ``v``. Color is the identity on one channel."""
    f = 1.0 + m
    bits = tl.minimum(tl.maximum(m.to(tl.int32), 0), 8)
    out = v
    out = tl.where(sel == 5, _blend(v, tl.zeros_like(v), f), out)  # Brightness
    if IS_RGB:
        out = tl.where(sel == 6, _blend(v, gray, f), out)  # Color
    out = tl.where(sel == 7, _blend(v, mean, f), out)  # Contrast
    out = tl.where(sel == 8, _sharpen(buf, v, i, j, H, W, live, f, BLOCK), out)  # Sharpness
    out = tl.where(sel == 9, v & ((255 << (8 - bits)) & 255), out)  # Posterize
    out = tl.where(sel == 10, tl.where(v.to(tl.float32) >= m, 255 - v, v), out)  # Solarize
    out = tl.where(sel == 11, _autocontrast(v, live), out)  # AutoContrast
    out = tl.where(sel == 12, _equalize(v, live, lut, H * W, BLOCK), out)  # Equalize
    out = tl.where(sel == 13, 255 - v, out)  # Invert
    return out


@triton.jit
def _autoaugment_step(v0, v1, v2, b, s, policy_ptr, u_ptr, sign_ptr, table_ptr, scratch, lut, i, j, H, W, live,
                      C: tl.constexpr, BLOCK: tl.constexpr):
    """One step ``s`` of the image's drawn sub-policy (see ``CIFAR10_POLICY``)."""
    HW = H * W
    offs = tl.arange(0, BLOCK)
    tl.store(scratch + offs, v0, mask=live)
    if C == 3:
        tl.store(scratch + BLOCK + offs, v1, mask=live)
        tl.store(scratch + 2 * BLOCK + offs, v2, mask=live)
    tl.debug_barrier()
    row = table_ptr + (tl.load(policy_ptr + b) * 2 + s) * 5  # (op, p, magnitude, cos, sin)
    op = tl.load(row).to(tl.int32)
    mag = tl.load(row + 2)
    sign = tl.load(sign_ptr + b * 2 + s)
    m = mag * tl.where(op <= 8, sign, 1.0)  # ShearX .. Sharpness take a random sign
    sel = tl.where(tl.load(u_ptr + b * 2 + s) < tl.load(row + 1), op, -1)

    # geometric: the inverse map (x_src, y_src) = M (x, y, 1) in centred pixel coordinates
    one = tl.full([], 1.0, tl.float32)
    zero = tl.full([], 0.0, tl.float32)
    shift = m.to(tl.int32).to(tl.float32)  # translations move whole pixels: trunc(m)
    rot_c = tl.load(row + 3)
    rot_s = tl.load(row + 4) * sign
    m0 = tl.where(sel == 4, rot_c, one)
    m1 = tl.where(sel == 0, m, tl.where(sel == 4, -rot_s, zero))
    m2 = tl.where(sel == 0, m * (H * 0.5), tl.where(sel == 2, -shift, zero))
    m3 = tl.where(sel == 1, m, tl.where(sel == 4, rot_s, zero))
    m4 = tl.where(sel == 4, rot_c, one)
    m5 = tl.where(sel == 1, m * (W * 0.5), tl.where(sel == 3, -shift, zero))
    xs = j.to(tl.float32) + (0.5 - W * 0.5)
    ys = i.to(tl.float32) + (0.5 - H * 0.5)
    jj = _round_half_even(m0 * xs + m1 * ys + m2 + (W * 0.5 - 0.5)).to(tl.int32)
    ii = _round_half_even(m3 * xs + m4 * ys + m5 + (H * 0.5 - 0.5)).to(tl.int32)
    is_geo = (sel >= 0) & (sel <= 4)

    if C == 3:
        gray = _gray(v0, v1, v2)
    else:
        gray = v0
    # an exact integer sum, divided correctly rounded (plain fp32 `/` is approximate on the GPU)
    mean = tl.math.div_rn(tl.sum(tl.where(live, gray, 0).to(tl.float32), axis=0), HW.to(tl.float32))
    out0 = tl.where(is_geo, _gather(scratch, ii, jj, H, W, live, BLOCK),
                    _pixel_op(sel, m, v0, gray, mean, scratch, lut, i, j, H, W, live, C == 3, BLOCK))
    out1 = out0
    out2 = out0
    if C == 3:
        out1 = tl.where(is_geo, _gather(scratch + BLOCK, ii, jj, H, W, live, BLOCK),
                        _pixel_op(sel, m, v1, gray, mean, scratch + BLOCK, lut + 256, i, j, H, W, live, C == 3,
                                  BLOCK))
        out2 = tl.where(is_geo, _gather(scratch + 2 * BLOCK, ii, jj, H, W, live, BLOCK),
                        _pixel_op(sel, m, v2, gray, mean, scratch + 2 * BLOCK, lut + 512, i, j, H, W, live,
                                  C == 3, BLOCK))
    tl.debug_barrier()  # every read of the scratch row is done before the next step writes it
    return out0, out1, out2


# ---------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------


@triton.jit
def _augment_kernel(x_ptr, out_ptr, scratch_ptr, lut_ptr, shift_ptr, flip_ptr, policy_ptr, u_ptr, sign_ptr,
                    cut_y_ptr, cut_x_ptr, table_ptr, B, H, W, CUTOUT: tl.constexpr, C: tl.constexpr,
                    BLOCK: tl.constexpr, HAS_CROP: tl.constexpr, HAS_FLIP: tl.constexpr,
                    HAS_AUTOAUGMENT: tl.constexpr, HAS_CUTOUT: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    HW = H * W
    offs = tl.arange(0, BLOCK)
    live = offs < HW
    i = offs // W
    j = offs % W

    # crop (zero padding) then flip: out[i, j] = x[i + dy, (W - 1 - j if flipped else j) + dx]
    si = i
    sj = j
    if HAS_FLIP:
        sj = tl.where(tl.load(flip_ptr + b) != 0, W - 1 - j, j)
    if HAS_CROP:
        si = si + tl.load(shift_ptr + b).to(tl.int32)
        sj = sj + tl.load(shift_ptr + B + b).to(tl.int32)
    image = x_ptr + b * C * HW
    v0 = _gather(image, si, sj, H, W, live, BLOCK).to(tl.int32)
    v1 = v0
    v2 = v0
    if C == 3:
        v1 = _gather(image + HW, si, sj, H, W, live, BLOCK).to(tl.int32)
        v2 = _gather(image + 2 * HW, si, sj, H, W, live, BLOCK).to(tl.int32)

    if HAS_AUTOAUGMENT:
        scratch = scratch_ptr + b * C * BLOCK
        lut = lut_ptr + b * C * 256
        for s in tl.static_range(2):
            v0, v1, v2 = _autoaugment_step(v0, v1, v2, b, s, policy_ptr, u_ptr, sign_ptr, table_ptr, scratch, lut,
                                           i, j, H, W, live, C, BLOCK)

    if HAS_CUTOUT:
        y0 = tl.load(cut_y_ptr + b).to(tl.int32) - CUTOUT // 2
        x0 = tl.load(cut_x_ptr + b).to(tl.int32) - CUTOUT // 2
        hole = (i >= y0) & (i < y0 + CUTOUT) & (j >= x0) & (j < x0 + CUTOUT)
        v0 = tl.where(hole, 0, v0)
        v1 = tl.where(hole, 0, v1)
        v2 = tl.where(hole, 0, v2)

    dst = out_ptr + b * C * HW + offs
    tl.store(dst, v0.to(tl.uint8), mask=live)
    if C == 3:
        tl.store(dst + HW, v1.to(tl.uint8), mask=live)
        tl.store(dst + 2 * HW, v2.to(tl.uint8), mask=live)


# ---------------------------------------------------------------------------------------------
# Launcher and custom op
# ---------------------------------------------------------------------------------------------


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def num_warps(BLOCK: int) -> int:
    # 4 pixels per thread and image vector: the CIFAR variant (32x32, AutoAugment) then fits the
    # register file (sm_80/sm_90 AOT: 8 warps 255 registers, no spills; 4 warps spill 1.1-3.2 KB)
    return max(1, min(16, BLOCK // 128))


def _launch(x, shift, flip, policy, u, sign, cut_y, cut_x, table, cutout):
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    if B == 0:
        return out
    BLOCK = triton.next_power_of_2(H * W)
    has_aa = policy is not None
    scratch = torch.empty((B, C, BLOCK) if has_aa else (0,), dtype=torch.int32, device=x.device)
    lut = torch.empty((B, C, 256) if has_aa else (0,), dtype=torch.int32, device=x.device)
    extra = {} if _interpreting() else {"enable_fp_fusion": False}  # bit-equal to the eager fp32 ops
    _augment_kernel[(B,)](
        x_ptr=x, out_ptr=out, scratch_ptr=scratch, lut_ptr=lut,
        shift_ptr=shift if shift is not None else x, flip_ptr=flip if flip is not None else x,
        policy_ptr=policy if has_aa else x, u_ptr=u if has_aa else x, sign_ptr=sign if has_aa else x,
        cut_y_ptr=cut_y if cut_y is not None else x, cut_x_ptr=cut_x if cut_x is not None else x,
        table_ptr=table if has_aa else x, B=B, H=H, W=W, CUTOUT=cutout, C=C, BLOCK=BLOCK,
        HAS_CROP=shift is not None, HAS_FLIP=flip is not None, HAS_AUTOAUGMENT=has_aa,
        HAS_CUTOUT=cut_y is not None, num_warps=num_warps(BLOCK), **extra,
    )
    return out


@torch.library.custom_op("asgl::augment_images", mutates_args=())
def augment_images_op(
    x: Tensor, shift: Tensor | None, flip: Tensor | None, policy: Tensor | None, u: Tensor | None,
    sign: Tensor | None, cut_y: Tensor | None, cut_x: Tensor | None, table: Tensor | None, cutout: int,
) -> Tensor:
    """uint8 ``x [B, C, H, W]`` augmented with the given draws (see ``augment.AugmentDraws``);
    ``table``: ``[25, 2, 5]`` float32 per sub-policy step ``(op id, p, magnitude, cos, sin)``."""
    return _launch(x.contiguous(), shift, flip, policy, u, sign, cut_y, cut_x, table, cutout)


@augment_images_op.register_fake
def _(x, shift, flip, policy, u, sign, cut_y, cut_x, table, cutout):
    return x.new_empty(x.shape)  # contiguous, as the kernel writes it
