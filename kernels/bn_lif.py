"""Fused time-folded batch norm + ASGL LIF: the conv -> BN (+ shortcut) -> LIF block in one pass each way.

The input ``x_seq [T, B, C, ...]`` is a convolution's (or linear layer's) output. The op computes
``LIF(γ·s·(x - μ)/sqrt(σ² + ε) + β + residual)`` with per-channel statistics over ``T·B·...``
(tdBN, ``docs/ASGL.md`` §4), the reference being :func:`asgl.kernels.bn_lif_ref.bn_lif_ref` (batch norm
on the folded tensor, then :func:`asgl.kernels.lif_ref.lif_ref`).

Kernels (the per-element ones walk the same tiles, see ``_tile``); a training step is 3 launches
each way, inference 1, plus the group sums below on layers of many tiles:

* ``_bn_stats_kernel``: per-channel shifted sums over one tile and all T (reads x once), stage 1
  of a deterministic two-stage reduction.
* ``_sum_tile_groups_kernel``: above ``DIRECT_MAX_TILES`` tiles, the per-tile sums of the statistics
  (and of the backward: per channel, and the neuron's scalars) are first summed over groups of about
  sqrt(tiles) tiles, one program per group, so that the ``[C]`` kernels after it read a few rows
  instead of walking every tile's in one program (a fixed order either way: deterministic).
* ``_bn_coef_kernel`` (per channel block): stage 2 in a fixed order, the running-statistic update,
  and the per-channel ``coef[4, C] = (A, β, μ, rstd)`` with ``A = γ·s·rstd``, which both passes
  read. With running statistics and a backward to come it reads the running buffers instead (the
  only launch before the forward kernel).
* ``_bn_lif_fwd_kernel``: ``in = (x - μ_c)·A_c + β_c (+ residual)``, then the LIF over all T, writing
  y (and u only for T > ``RECOMPUTE_MAX_T``). In inference (running statistics, no gradient) it
  computes A and β from γ, β and the running buffers itself: one launch.
* ``_bn_lif_bwd_kernel``: the LIF backward, reverse in t. For T <= ``RECOMPUTE_MAX_T`` it first
  recomputes the forward recurrence from x (and the residual) into registers, so nothing but x is
  saved; above, it reads the stored u. It writes ``g = dL/d in`` (which is the shortcut's gradient)
  and, per tile, the sums ``Σ g`` and ``Σ g·x̂`` that batch norm's backward needs and the LIF
  parameter gradients.
* ``_bn_bwd_finalize_kernel`` (per channel block): the per-tile sums in a fixed order, dγ, dβ, the
  neuron's parameter gradients with their chain rule, and batch norm's input-gradient coefficients.
* ``_bn_grad_apply_kernel``: ``dx = A_c·g + k2_c·(x - μ_c) + k3_c`` (the batch-norm backward with
  the per-channel sums folded into coefficients), written over g when there is no shortcut.

Memory traffic per element-step, bf16, training step without a shortcut (T <= 8): forward stats 2 +
read x 2 + write y 2 = 6 B; backward read x 2, dy 2, write g 2, then read g 2, x 2, write dx 2 =
12 B; 18 B in all, against 28 B for BN then the fused LIF. Saved for backward: x only (2 B); the
shortcut, when there is one, is saved too (2 B, and usually already kept by autograd: an identity
shortcut is the block's input, which the first convolution saves). For T > 8 u is stored as well
(+2 B forward, and the backward reads u instead of recomputing).

Noise: spike-mode decisions ``m = 1[r >= p]`` come from the Philox draws of :mod:`asgl.kernels.common`
through one function, :func:`_words`: one call per 4 elements of a thread's row (2 per row of 2 in
the recomputing backward above T = 4) when the rows start at multiples of 4 (``ALIGNED``: H·W, or C
for channels-last memory, a multiple of 4, as in every recipe), else one per element. The keying
(seed, step, kernel-order element index) is that of :mod:`asgl.kernels.lif`, so for the same seed and
memory layout the mask is the one ``lif_fused`` draws; the recompute keeps each draw's words.

Time: T <= 8 runs unrolled (the forward's ``STATIC_T``, the backward's ``RECOMPUTE_T``: no loop, the
next step's loads issued before this step's stores), above a loop (2 steps per iteration forward).
The sm_90 SASS (bf16, sigmoid, hard reset, shortcut; ``perf/static_model.py``) issues per
element-step, prologue and epilogue included, at T = 4: forward 20.0 (p = 0) and 32.9 (0 < p < 1),
backward 56.1 and 65.9 (the folded kernels before: about 21, 40, 61.5 and 80).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import (
    ELEMENTS_PER_DRAW, NOISE_DRAW, chunk_words, element_words, finalize_neuron_scalars, layout_anchor, lif_step,
    lif_step_grads, load_neuron_params, p_threshold, relaxation_slope, round_to, row_anchor, spike_mode,
    store_spike_mode,
)
from .host import COMPILE_OPTIONS, alloc_like, check_input, kernel_order, neuron_args
from .bn_lif_ref import check_bn_args

# The backward recomputes the forward membrane in registers for T up to this (two 16-bit values per
# element and step live: u and x); above, the forward stores u (+2 B/element-step each way).
RECOMPUTE_MAX_T = 8
# elements per tile and warps: 8 per thread (one 16-byte load per step in bf16)
BLOCK = 1024
NUM_WARPS = 4
# the forward runs T up to this fully unrolled (STATIC_T = T), above a loop of 2 steps per iteration
MAX_STATIC_T = 8
THREADS = 32 * NUM_WARPS  # every per-element kernel runs NUM_WARPS warps (see _vec)
# The recomputing backward keeps u and x of every step live per element: with 8 elements per
# thread it spills at T = 4 and T = 8 (ptxas -v, sm_80/sm_90: 255 registers + 0.1-13 KB of spills).
# 4 per thread for T <= 4 (128 registers, no spills, 8-byte bf16 loads; a Philox call serves the 4)
# and 2 per thread for T <= 8 (4 per thread: 250-255 registers; 2: about 128, a Philox call per
# row of 2): narrower vectors, fewer bytes saved for backward. Not yet timed on a GPU.
BWD_BLOCK = {4: 512, 8: 256}
BWD_NUM_WARPS = NUM_WARPS
# channel-fastest tiles (channels-last memory, [T, B, C]): at most this many channels per tile
MAX_BLOCK_C = 64
# the [C] kernels (coefficients, backward finalize): channels per program, and tile rows summed at a
# time (the fixed summation order of the per-tile partial sums)
COEF_BLOCK_C = 64
COEF_BLOCK_T = 16
# Above this many tiles the per-tile sums are first summed in groups of about sqrt(tiles) rows by
# _sum_tile_groups_kernel, one program per group, then the [C] kernels sum the groups: about
# 2·sqrt(tiles) / BLOCK_T dependent loads instead of tiles / BLOCK_T in one program per 64 channels
# (a ResNet-18 layer-1 unit at batch 256, T = 4: 16 instead of 1,024).
DIRECT_MAX_TILES = 4 * COEF_BLOCK_T


# ---------------------------------------------------------------------------------------------
# jit helpers
# ---------------------------------------------------------------------------------------------


@triton.constexpr_function
def _vec(block_o, block_c, block_i, bits):
    """Elements per row of a tile (:func:`_tile`): one thread's 16-byte vector along the contiguous
    dim (8 for 16-bit dtypes, 4 for float32), at most its share of the tile and the dim's extent."""
    return max(1, min(block_c * block_i, 128 // bits, block_o * block_c * block_i // THREADS))


@triton.jit
def _tile(OUTER, C, INNER, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
          VEC: tl.constexpr):
    """This program's tile of one time step viewed as ``[OUTER, C, INNER]``.

    One of ``BLOCK_C``, ``BLOCK_I`` is 1, the other (``BLOCK_F = BLOCK_C·BLOCK_I``) runs along
    contiguous memory (C for channels-last memory, INNER otherwise) and is split into rows of
    ``VEC`` consecutive elements, one thread's vector: the tile is ``[BLOCK_O, BLOCK_F // VEC, VEC]``.
    Program axis 0 walks (outer, inner) blocks, axis 1 channel blocks. Returns the int64 offsets
    within a step, the in-range mask, the channel index (broadcastable), the offset of each row's
    first element ``[BLOCK_O, BLOCK_F // VEC, 1]`` and the lane ``[1, 1, VEC]`` (the Philox groups
    of :func:`asgl.kernels.common.chunk_words`).
    """
    BLOCK_F: tl.constexpr = BLOCK_C * BLOCK_I
    pid = tl.program_id(0).to(tl.int64)
    n_i = tl.cdiv(INNER, BLOCK_I)
    pid_o = pid // n_i
    pid_i = pid % n_i
    pid_c = tl.program_id(1).to(tl.int64)
    o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)[:, None, None]
    f0 = tl.arange(0, BLOCK_F // VEC)[None, :, None] * VEC
    lane = tl.arange(0, VEC)[None, None, :]
    if BLOCK_C == 1:
        c = pid_c + tl.zeros([1, 1, 1], dtype=tl.int64)
        i0 = pid_i * BLOCK_I + f0
        i = i0 + lane
        row0 = (o * C + c) * INNER + i0
    else:
        c0 = pid_c * BLOCK_C + f0
        c = c0 + lane
        i = pid_i + tl.zeros([1, 1, 1], dtype=tl.int64)
        row0 = (o * C + c0) * INNER + i
    offs = row0 + lane
    in_range = (o < OUTER) & (c < C) & (i < INNER)
    return offs, in_range, c, row0, lane


@triton.jit
def _tile_sum(v, in_range):
    """The tile's in-range sum, each ``[BLOCK_O, BLOCK_F]`` row first (registers, then the threads of
    a warp), then across rows (across warps: one pass through shared memory). Rows are summed as
    flat ``BLOCK_F`` vectors, so the order does not depend on ``VEC``: the recomputing and the
    stored-u backward (other tiles) sum the same values alike under the interpreter."""
    rows = tl.reshape(tl.where(in_range, v, 0.0), [v.shape[0], v.shape[1] * v.shape[2]])
    return tl.sum(tl.sum(rows, axis=1), axis=0)


@triton.jit
def _channel_sum(v, in_range, BLOCK_C: tl.constexpr):
    """``[BLOCK_O, BLOCK_F // VEC, VEC] -> [BLOCK_C]``: the tile's in-range sum per channel (one
    channel per tile when ``BLOCK_C`` is 1, else one per element of a row)."""
    if BLOCK_C == 1:
        total = tl.zeros([1], dtype=tl.float32) + _tile_sum(v, in_range)
    else:
        total = tl.reshape(tl.sum(tl.where(in_range, v, 0.0), axis=0), [BLOCK_C])
    return total


@triton.jit
def _words(seed, t, x, offs, row0, lane, VEC: tl.constexpr, ALIGNED: tl.constexpr):
    """Each element's Philox word of step ``t``'s draw (:mod:`asgl.kernels.common`): a call per 4
    elements (``VEC`` >= 4) or per row of 2 when every row starts at a multiple of ``min(VEC, 4)``
    (``ALIGNED``: see :func:`_aligned`), else one per element; ``x`` a value loaded this step, which
    keeps the draw in the tile's layout (:func:`asgl.kernels.common.layout_anchor`)."""
    if ALIGNED:
        w = chunk_words(seed, t, row0, lane, row_anchor(x), VEC)
    else:
        w = element_words(seed, t, offs, layout_anchor(x))
    return w


@triton.jit
def _bn_in(x, r, mean, a, beta, HAS_RESIDUAL: tl.constexpr):
    """The neuron input ``(x - μ)·A + β (+ residual)`` in float32 from the loaded x (and residual).

    Normalised about the mean, as PyTorch does, rather than as the fold ``x·A + (β - μ·A)``: for x
    far from μ the fold rounds ``x·A`` at the magnitude of x and then cancels, about twice the error
    (a VGGSNN neuron 1 ulp below θ fired on the folded path only); one subtraction more per
    element-step. The forward and the recomputing backward both run this.
    """
    inp = (x.to(tl.float32) - mean) * a + beta
    if HAS_RESIDUAL:
        inp += r.to(tl.float32)
    return inp


@triton.jit
def _load_step(x_ptr, r_ptr, offs, in_range, HAS_RESIDUAL: tl.constexpr):
    """One step's x and residual (the residual is x again when there is none, unread)."""
    x = tl.load(x_ptr + offs, mask=in_range, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(r_ptr + offs, mask=in_range, other=0.0)
    else:
        r = x
    return x, r


@triton.jit
def _fwd_step(t, x, r, y_ptr, u_ptr, mask_ptr, v, m, N, offs, in_range, mean, a, beta, lam, theta, k_h, v_reset,
              NOISE: tl.constexpr, SIGMOID: tl.constexpr, HARD_RESET: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
              STORE_U: tl.constexpr, STORE_MASK: tl.constexpr, FIRST: tl.constexpr):
    """Step ``t`` of the forward from its loaded x (and residual): normalise, update, store y (u,
    the mask); returns v. ``FIRST``: t = 0 known at compile time, u = in (v[-1] = 0). u is rounded
    to the storage dtype each step: the backward (recomputing, or reading u) repeats exactly these
    decisions."""
    offs_t = tl.cast(t, tl.int64) * N + offs
    inp = _bn_in(x, r, mean, a, beta, HAS_RESIDUAL)
    if FIRST:
        u_stored = round_to(inp, y_ptr.dtype.element_ty)
    else:
        u_stored = round_to(lam * v + inp, y_ptr.dtype.element_ty)
    o, v, h, z = lif_step(u_stored.to(tl.float32), theta, k_h, v_reset, m, NOISE, SIGMOID, HARD_RESET)
    tl.store(y_ptr + offs_t, round_to(theta * o, y_ptr.dtype.element_ty), mask=in_range)
    if STORE_U:
        tl.store(u_ptr + offs_t, u_stored, mask=in_range)
    if STORE_MASK:
        store_spike_mode(mask_ptr, offs_t, in_range, m, NOISE)
    return v


@triton.jit
def _bwd_step(t, u, o, h, z, v_prev, x, dy, g_ptr, dv, acc_g, acc_gx, acc_lam, acc_theta, acc_k, N, offs, in_range,
              mean, lam, theta, k, k_h, v_reset, NOISE: tl.constexpr, SIGMOID: tl.constexpr,
              HARD_RESET: tl.constexpr, HAS_DV: tl.constexpr, HAS_PREV: tl.constexpr):
    """Step ``t`` of the backward from its recomputed ``(u, o, h, z)``, ``v[t-1]``, x and dy:
    ``g = dL/d in`` rounded and stored; returns ``dL/dv[t-1]`` and the accumulators (``HAS_DV``:
    ``dv = dL/dv[t]`` is read, not at t = T - 1; ``HAS_PREV``: t > 0, whose dλ term needs v[t-1])."""
    dy = dy.to(tl.float32)
    du, d_theta, d_k = lif_step_grads(dy, theta * dy, u, o, z, h, dv, theta, k, k_h, v_reset, NOISE, SIGMOID,
                                      HARD_RESET, HAS_DV)
    g_stored = round_to(du, g_ptr.dtype.element_ty)
    tl.store(g_ptr + tl.cast(t, tl.int64) * N + offs, g_stored, mask=in_range)
    g = g_stored.to(tl.float32)
    acc_g += g
    # Σ g·(x - μ): x̂ = (x - μ)·rstd, rstd applied once to the sum
    acc_gx += g * (x.to(tl.float32) - mean)
    if HAS_PREV:
        acc_lam += du * v_prev
    return lam * du, acc_g, acc_gx, acc_lam, acc_theta + d_theta, acc_k + d_k


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["T"])
def _bn_stats_kernel(
    x_ptr, partial_ptr, T, OUTER, C, INNER,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    # partial [2·tiles + 1, C]: row tile = Σ (x - shift_c), row tiles + tile = Σ (x - shift_c)², row
    # 2·tiles = shift_c; the shift (the channel's first element, t = 0, outer = 0, inner = 0) keeps
    # the float32 sums from cancelling when |μ| >> σ
    VEC: tl.constexpr = _vec(BLOCK_O, BLOCK_C, BLOCK_I, x_ptr.dtype.element_ty.primitive_bitwidth)
    offs, in_range, c, _, _ = _tile(OUTER, C, INNER, BLOCK_O, BLOCK_C, BLOCK_I, VEC)
    c_ok = c < C
    shift = tl.load(x_ptr + c * INNER, mask=c_ok, other=0.0).to(tl.float32)
    N = OUTER * C * INNER
    s1 = tl.zeros(offs.shape, dtype=tl.float32)
    s2 = tl.zeros(offs.shape, dtype=tl.float32)
    for t in range(0, T):
        x = tl.load(x_ptr + tl.cast(t, tl.int64) * N + offs, mask=in_range, other=0.0).to(tl.float32)
        d = tl.where(in_range, x - shift, 0.0)
        s1 += d
        s2 += d * d
    tiles = tl.num_programs(0)
    cc = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    row = tl.program_id(0).to(tl.int64) * C + cc
    tl.store(partial_ptr + row, _channel_sum(s1, in_range, BLOCK_C), mask=cc < C)
    tl.store(partial_ptr + tiles * C + row, _channel_sum(s2, in_range, BLOCK_C), mask=cc < C)
    if tl.program_id(0) == 0:  # the shifts, for the coefficient kernel (row 2·tiles)
        shift_c = tl.load(x_ptr + cc * INNER, mask=cc < C, other=0.0).to(tl.float32)
        tl.store(partial_ptr + 2 * tiles * C + cc, shift_c, mask=cc < C)


@triton.jit
def _fold(weight_ptr, bias_ptr, c, c_ok, var, eps, scale, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """``(A, β, rstd)`` per channel, ``in = (x - μ)·A + β`` with ``A = γ·s·rstd``,
    ``rstd = 1/sqrt(σ² + ε)`` (correctly rounded sqrt and division), β = 0 without a bias."""
    rstd = tl.div_rn(1.0, tl.sqrt_rn(var + eps))
    gs = scale
    if HAS_WEIGHT:
        gs = tl.load(weight_ptr + c, mask=c_ok, other=0.0).to(tl.float32) * scale
    a = gs * rstd
    if HAS_BIAS:
        beta = tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    else:
        beta = tl.zeros_like(a)
    return a, beta, rstd


@triton.jit
def _sum_over_tiles(ptr, TILES, C, c, c_ok, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """``Σ_tile ptr[tile, c]`` over the rows of ``ptr [TILES, C]`` (float32) for the channels ``c``,
    in a fixed order: ``BLOCK_T`` rows at a time, then a tree sum (deterministic)."""
    rows = tl.arange(0, BLOCK_T)[:, None]
    acc = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    for t0 in range(0, TILES, BLOCK_T):
        live = (t0 + rows < TILES) & c_ok[None, :]
        acc += tl.load(ptr + (t0 + rows).to(tl.int64) * C + c[None, :], mask=live, other=0.0)
    return tl.sum(acc, axis=0)


@triton.jit
def _sum_tile_groups_kernel(src_ptr, dst_ptr, TILES, C, GROUP, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """``dst[j, g, c] = Σ src[j, tile, c]`` over the tiles ``g·GROUP <= tile < (g + 1)·GROUP`` of each
    table ``j`` of ``src [J, TILES, C]`` (float32), in :func:`_sum_over_tiles`'s fixed order; program
    axis 0 walks the groups g, axis 1 channel blocks, axis 2 the tables j. The first of the two stages
    that sum per-tile sums when there are many tiles (see ``DIRECT_MAX_TILES``)."""
    g = tl.program_id(0)
    j = tl.program_id(2)
    groups = tl.num_programs(0)
    first = g * GROUP
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    src = src_ptr + (j.to(tl.int64) * TILES + first) * C
    total = _sum_over_tiles(src, tl.minimum(GROUP, TILES - first), C, c, c_ok, BLOCK_T, BLOCK_C)
    tl.store(dst_ptr + (j.to(tl.int64) * groups + g) * C + c, total, mask=c_ok)


@triton.jit
def _bn_coef_kernel(
    partial_ptr, shift_ptr, weight_ptr, bias_ptr, run_mean_ptr, run_var_ptr, coef_ptr, TILES, C,
    inv_n, unbias, momentum, eps, scale,
    BATCH_STATS: tl.constexpr, UPDATE_RUNNING: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """The per-channel coefficients ``coef[4, C] = (A, β, μ, rstd)`` both passes read.

    ``BATCH_STATS``: stage 2 of the statistics (``partial [2, TILES, C]``: the stats kernel's per-tile
    sums or their group sums, summed in a fixed order: ``BLOCK_T`` rows at a time, then a tree sum;
    ``shift [C]``: the stats kernel's shifts), and with ``UPDATE_RUNNING`` the running
    buffers updated in place as ``nn.BatchNorm2d`` does: ``μ_run <- (1-m)·μ_run + m·μ``,
    ``σ²_run <- (1-m)·σ²_run + m·σ²·n/(n-1)``. Otherwise μ and σ² are the running buffers.
    """
    c = tl.program_id(0).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    if BATCH_STATS:
        d1 = _sum_over_tiles(partial_ptr, TILES, C, c, c_ok, BLOCK_T, BLOCK_C) * inv_n
        d2 = _sum_over_tiles(partial_ptr + TILES * C, TILES, C, c, c_ok, BLOCK_T, BLOCK_C) * inv_n
        mean = tl.load(shift_ptr + c, mask=c_ok, other=0.0) + d1
        var = tl.maximum(d2 - d1 * d1, 0.0)
        if UPDATE_RUNNING:
            rm = tl.load(run_mean_ptr + c, mask=c_ok, other=0.0)
            rv = tl.load(run_var_ptr + c, mask=c_ok, other=0.0)
            new_rm = (1.0 - momentum) * rm.to(tl.float32) + momentum * mean
            new_rv = (1.0 - momentum) * rv.to(tl.float32) + momentum * (var * unbias)
            tl.store(run_mean_ptr + c, new_rm.to(rm.dtype), mask=c_ok)
            tl.store(run_var_ptr + c, new_rv.to(rv.dtype), mask=c_ok)
    else:
        mean = tl.load(run_mean_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        var = tl.load(run_var_ptr + c, mask=c_ok, other=1.0).to(tl.float32)
    a, beta, rstd = _fold(weight_ptr, bias_ptr, c, c_ok, var, eps, scale, HAS_WEIGHT, HAS_BIAS)
    tl.store(coef_ptr + c, a, mask=c_ok)
    tl.store(coef_ptr + C + c, beta, mask=c_ok)
    tl.store(coef_ptr + 2 * C + c, mean, mask=c_ok)
    tl.store(coef_ptr + 3 * C + c, rstd, mask=c_ok)


@triton.jit(do_not_specialize=["T", "p16"])
def _bn_lif_fwd_kernel(
    x_ptr, r_ptr, y_ptr, u_ptr, mask_ptr, coef_ptr, weight_ptr, bias_ptr, mean_ptr, var_ptr, decay_logit_ptr,
    width_ptr, theta_ptr, seed_ptr, T, OUTER, C, INNER, v_reset, p16, eps, scale,
    NOISE: tl.constexpr, SIGMOID: tl.constexpr, HARD_RESET: tl.constexpr, CHANNEL_WIDTH: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, STORE_U: tl.constexpr, STORE_MASK: tl.constexpr,
    FOLD: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, STATIC_T: tl.constexpr,
    ALIGNED: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    # FOLD (inference: running statistics, no backward): A, β from γ, β and the running buffers
    # here, no other launch; otherwise read from coef (rows A, β, μ), which the backward reads too.
    # STATIC_T = T <= 8: every step unrolled, no loop; 0: a loop of 2 steps per iteration.
    VEC: tl.constexpr = _vec(BLOCK_O, BLOCK_C, BLOCK_I, x_ptr.dtype.element_ty.primitive_bitwidth)
    offs, in_range, c, row0, lane = _tile(OUTER, C, INNER, BLOCK_O, BLOCK_C, BLOCK_I, VEC)
    N = OUTER * C * INNER
    lam, theta, k = load_neuron_params(decay_logit_ptr, width_ptr, theta_ptr, offs, in_range, INNER, C,
                                       SIGMOID, CHANNEL_WIDTH)
    k_h = relaxation_slope(k, SIGMOID)
    c_ok = c < C
    if FOLD:
        mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        var = tl.load(var_ptr + c, mask=c_ok, other=1.0).to(tl.float32)
        a, beta, unused_rstd = _fold(weight_ptr, bias_ptr, c, c_ok, var, eps, scale, HAS_WEIGHT, HAS_BIAS)
    else:
        a = tl.load(coef_ptr + c, mask=c_ok, other=0.0)
        beta = tl.load(coef_ptr + C + c, mask=c_ok, other=0.0)
        mean = tl.load(coef_ptr + 2 * C + c, mask=c_ok, other=0.0)
    seed = tl.load(seed_ptr)
    p_hi = p16.to(tl.uint32) << 16

    v = tl.zeros(offs.shape, dtype=tl.float32)
    w = tl.zeros(offs.shape, dtype=tl.uint32)
    m = in_range  # the spike-mode bit, read only when NOISE == 2
    # each step's x (and residual) loaded one step ahead, before this step's stores
    x, r = _load_step(x_ptr, r_ptr, offs, in_range, HAS_RESIDUAL)
    if STATIC_T > 0:
        for t in tl.static_range(STATIC_T):
            if t + 1 < STATIC_T:
                x_next, r_next = _load_step(x_ptr, r_ptr, tl.cast(t + 1, tl.int64) * N + offs, in_range,
                                            HAS_RESIDUAL)
            if NOISE == 2:
                if t % 2 == 0:
                    w = _words(seed, t, x, offs, row0, lane, VEC, ALIGNED)
                m = spike_mode(w, t, p_hi)
            v = _fwd_step(t, x, r, y_ptr, u_ptr, mask_ptr, v, m, N, offs, in_range, mean, a, beta, lam, theta, k_h,
                          v_reset, NOISE, SIGMOID, HARD_RESET, HAS_RESIDUAL, STORE_U, STORE_MASK, t == 0)
            if t + 1 < STATIC_T:
                x, r = x_next, r_next
    else:
        for t0 in range(0, T, 2):
            # the scalar tests as [1, 1, 1] tensors: the interpreter cannot mask with a Python bool
            x_next, r_next = _load_step(x_ptr, r_ptr, tl.cast(t0 + 1, tl.int64) * N + offs,
                                        in_range & (tl.full([1, 1, 1], t0 + 1, tl.int32) < T), HAS_RESIDUAL)
            if NOISE == 2:
                w = _words(seed, t0, x, offs, row0, lane, VEC, ALIGNED)
                m = spike_mode(w, 0, p_hi)
            v = _fwd_step(t0, x, r, y_ptr, u_ptr, mask_ptr, v, m, N, offs, in_range, mean, a, beta, lam, theta, k_h,
                          v_reset, NOISE, SIGMOID, HARD_RESET, HAS_RESIDUAL, STORE_U, STORE_MASK, False)
            if t0 + 1 < T:
                x, r = _load_step(x_ptr, r_ptr, tl.cast(t0 + 2, tl.int64) * N + offs,
                                  in_range & (tl.full([1, 1, 1], t0 + 2, tl.int32) < T), HAS_RESIDUAL)
                if NOISE == 2:
                    m = spike_mode(w, 1, p_hi)
                v = _fwd_step(t0 + 1, x_next, r_next, y_ptr, u_ptr, mask_ptr, v, m, N, offs, in_range, mean, a, beta,
                              lam, theta, k_h, v_reset, NOISE, SIGMOID, HARD_RESET, HAS_RESIDUAL, STORE_U,
                              STORE_MASK, False)


@triton.jit(do_not_specialize=["T", "p16"])
def _bn_lif_bwd_kernel(
    dy_ptr, x_ptr, r_ptr, u_ptr, g_ptr, partial_ptr, chan_ptr, coef_ptr, decay_logit_ptr, width_ptr, theta_ptr,
    seed_ptr,
    T, OUTER, C, INNER, v_reset, p16,
    NOISE: tl.constexpr, SIGMOID: tl.constexpr, HARD_RESET: tl.constexpr, CHANNEL_WIDTH: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, RECOMPUTE_T: tl.constexpr, ALIGNED: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    # RECOMPUTE_T > 0: T == RECOMPUTE_T <= 8, the forward recurrence is rerun from x into registers,
    # every step unrolled; RECOMPUTE_T == 0: u is read from u_ptr. g = dL/d(in) is written to g_ptr
    # (storage dtype).
    VEC: tl.constexpr = _vec(BLOCK_O, BLOCK_C, BLOCK_I, x_ptr.dtype.element_ty.primitive_bitwidth)
    offs, in_range, c, row0, lane = _tile(OUTER, C, INNER, BLOCK_O, BLOCK_C, BLOCK_I, VEC)
    N = OUTER * C * INNER
    lam, theta, k = load_neuron_params(decay_logit_ptr, width_ptr, theta_ptr, offs, in_range, INNER, C,
                                       SIGMOID, CHANNEL_WIDTH)
    k_h = relaxation_slope(k, SIGMOID)
    c_ok = c < C
    mean = tl.load(coef_ptr + 2 * C + c, mask=c_ok, other=0.0)
    rstd = tl.load(coef_ptr + 3 * C + c, mask=c_ok, other=0.0)
    seed = tl.load(seed_ptr)
    p_hi = p16.to(tl.uint32) << 16
    DT = g_ptr.dtype.element_ty
    zero = tl.zeros(offs.shape, dtype=tl.float32)

    dv = zero
    # -0.0, the identity of float addition: the first accumulation folds away
    acc_g = tl.full(offs.shape, -0.0, dtype=tl.float32)
    acc_gx = acc_g
    acc_lam = acc_g
    acc_theta = acc_g
    acc_k = acc_g
    m = in_range  # the spike-mode bit, read only when NOISE == 2
    if RECOMPUTE_T > 0:
        a = tl.load(coef_ptr + c, mask=c_ok, other=0.0)
        beta = tl.load(coef_ptr + C + c, mask=c_ok, other=0.0)
        # every step's u and x, and each draw's words, stay in registers for the reverse pass:
        # tuples grown per unrolled step
        us = ()
        xs = ()
        ws = ()
        v = zero
        x, r = _load_step(x_ptr, r_ptr, offs, in_range, HAS_RESIDUAL)
        # forward recurrence, the same arithmetic as _bn_lif_fwd_kernel
        for t in tl.static_range(RECOMPUTE_T):
            if t + 1 < RECOMPUTE_T:
                x_next, r_next = _load_step(x_ptr, r_ptr, tl.cast(t + 1, tl.int64) * N + offs, in_range,
                                            HAS_RESIDUAL)
            if NOISE == 2:
                if t % 2 == 0:
                    ws = ws + (_words(seed, t, x, offs, row0, lane, VEC, ALIGNED),)
                m = spike_mode(ws[t // 2], t, p_hi)
            inp = _bn_in(x, r, mean, a, beta, HAS_RESIDUAL)
            if t == 0:
                u = round_to(inp, DT)
            else:
                u = round_to(lam * v + inp, DT)
            _, v, _, _ = lif_step(u.to(tl.float32), theta, k_h, v_reset, m, NOISE, SIGMOID, HARD_RESET)
            us = us + (u,)
            xs = xs + (x,)
            if t + 1 < RECOMPUTE_T:
                x, r = x_next, r_next
        # reverse: step t is carried down from the previous iteration (v[t-1] recomputed once); dy
        # loaded one step ahead
        if NOISE == 2:
            m = spike_mode(ws[(RECOMPUTE_T - 1) // 2], RECOMPUTE_T - 1, p_hi)
        u = us[RECOMPUTE_T - 1].to(tl.float32)
        o, _, h, z = lif_step(u, theta, k_h, v_reset, m, NOISE, SIGMOID, HARD_RESET)
        dy = tl.load(dy_ptr + tl.cast(RECOMPUTE_T - 1, tl.int64) * N + offs, mask=in_range, other=0.0)
        for t in tl.static_range(RECOMPUTE_T - 1, -1, -1):
            if t > 0:
                dy_next = tl.load(dy_ptr + tl.cast(t - 1, tl.int64) * N + offs, mask=in_range, other=0.0)
                u_prev = us[t - 1].to(tl.float32)
                if NOISE == 2:
                    m = spike_mode(ws[(t - 1) // 2], t - 1, p_hi)
                o_prev, v_prev, h_prev, z_prev = lif_step(u_prev, theta, k_h, v_reset, m, NOISE, SIGMOID,
                                                          HARD_RESET)
            else:
                u_prev, o_prev, v_prev, h_prev, z_prev = zero, zero, zero, zero, zero
            dv, acc_g, acc_gx, acc_lam, acc_theta, acc_k = _bwd_step(
                t, u, o, h, z, v_prev, xs[t], dy, g_ptr, dv, acc_g, acc_gx, acc_lam, acc_theta, acc_k, N, offs,
                in_range, mean, lam, theta, k, k_h, v_reset, NOISE, SIGMOID, HARD_RESET, t < RECOMPUTE_T - 1, t > 0)
            u, o, h, z = u_prev, o_prev, h_prev, z_prev
            if t > 0:
                dy = dy_next
    else:
        t_last = T - 1
        u = tl.load(u_ptr + tl.cast(t_last, tl.int64) * N + offs, mask=in_range, other=0.0).to(tl.float32)
        w = tl.zeros(offs.shape, dtype=tl.uint32)
        if NOISE == 2:
            w = _words(seed, t_last, u, offs, row0, lane, VEC, ALIGNED)
            m = spike_mode(w, t_last, p_hi)
        o, v, h, z = lif_step(u, theta, k_h, v_reset, m, NOISE, SIGMOID, HARD_RESET)
        for i in range(0, T):
            t = t_last - i
            offs_t = tl.cast(t, tl.int64) * N + offs
            # the scalar test as a tensor: the interpreter cannot mask with a Python bool
            has_prev = tl.full([1, 1, 1], t, tl.int32) > 0
            u_prev = tl.load(u_ptr + (offs_t - N), mask=in_range & has_prev, other=0.0).to(tl.float32)
            if NOISE == 2:
                if (t > 0) & ((t - 1) % 2 == 1):
                    w = _words(seed, t - 1, u_prev, offs, row0, lane, VEC, ALIGNED)
                m = spike_mode(w, t + 1, p_hi)  # the parity of t - 1, never negative
            o_prev, v_prev, h_prev, z_prev = lif_step(u_prev, theta, k_h, v_reset, m, NOISE, SIGMOID, HARD_RESET)
            v_prev = tl.where(has_prev, v_prev, 0.0)
            dy = tl.load(dy_ptr + offs_t, mask=in_range, other=0.0)
            x = tl.load(x_ptr + offs_t, mask=in_range, other=0.0)
            dv, acc_g, acc_gx, acc_lam, acc_theta, acc_k = _bwd_step(
                t, u, o, h, z, v_prev, x, dy, g_ptr, dv, acc_g, acc_gx, acc_lam, acc_theta, acc_k, N, offs,
                in_range, mean, lam, theta, k, k_h, v_reset, NOISE, SIGMOID, HARD_RESET, True, True)
            u, o, h, z = u_prev, o_prev, h_prev, z_prev

    # stage 1 of the deterministic reductions: per tile, chan[j, tile, c] for j = Σg, Σg·x̂ (and
    # the channel width's dk), scalars partial[j, tile] for dλ, dθ (and the layer width's dk)
    tile = tl.program_id(0).to(tl.int64)
    tiles = tl.num_programs(0)
    cc = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    row = tile * C + cc
    tl.store(chan_ptr + row, _channel_sum(acc_g, in_range, BLOCK_C), mask=cc < C)
    tl.store(chan_ptr + tiles * C + row, _channel_sum(acc_gx * rstd, in_range, BLOCK_C), mask=cc < C)
    col = tile * tl.num_programs(1) + tl.program_id(1)
    slots = tiles * tl.num_programs(1)
    tl.store(partial_ptr + col, _tile_sum(acc_lam, in_range))
    tl.store(partial_ptr + slots + col, _tile_sum(acc_theta, in_range))
    if CHANNEL_WIDTH:
        tl.store(chan_ptr + 2 * tiles * C + row, _channel_sum(acc_k, in_range, BLOCK_C), mask=cc < C)
    else:
        tl.store(partial_ptr + 2 * slots + col, _tile_sum(acc_k, in_range))


@triton.jit
def _bn_bwd_finalize_kernel(
    chan_ptr, partial_ptr, coef_ptr, k_ptr, d_weight_ptr, d_bias_ptr, decay_logit_ptr, width_ptr, d_decay_ptr,
    d_width_ptr, d_theta_ptr, TILES, SLOTS, C, inv_n, scale,
    BATCH_STATS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, SIGMOID: tl.constexpr,
    CHANNEL_WIDTH: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Stage 2 of the backward's reductions and every chain rule on ``[C]`` and scalars, in one launch.

    Per channel block: ``Σg``, ``Σg·x̂`` (and a channel width's ``dk``) summed over the tiles in a
    fixed order; ``dβ = Σg``, ``dγ = s·Σg·x̂``, and batch norm's input gradient folded into
    ``dx = A·g + k2·(x - μ) + k3`` with ``k2 = -A·rstd·Σ(g·x̂)/n``, ``k3 = -A·Σg/n`` (zero with
    running statistics), written to ``k[2, C]``. Program 0 also sums the neuron's scalar partials:
    ``d decay_logit = dλ·λ(1-λ)``, ``dθ``, a layer width's ``dk`` (times k for the rectangle, which
    stores log k). Every output in its parameter's dtype.
    """
    pid = tl.program_id(0)
    c = pid.to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    sum_g = _sum_over_tiles(chan_ptr, TILES, C, c, c_ok, BLOCK_T, BLOCK_C)
    sum_gx = _sum_over_tiles(chan_ptr + TILES * C, TILES, C, c, c_ok, BLOCK_T, BLOCK_C)
    if BATCH_STATS:
        a = tl.load(coef_ptr + c, mask=c_ok, other=0.0)
        rstd = tl.load(coef_ptr + 3 * C + c, mask=c_ok, other=0.0)
        k2 = -a * rstd * sum_gx * inv_n
        k3 = -a * sum_g * inv_n
    else:
        k2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        k3 = tl.zeros([BLOCK_C], dtype=tl.float32)
    tl.store(k_ptr + c, k2, mask=c_ok)
    tl.store(k_ptr + C + c, k3, mask=c_ok)
    if HAS_WEIGHT:
        tl.store(d_weight_ptr + c, (sum_gx * scale).to(d_weight_ptr.dtype.element_ty), mask=c_ok)
    if HAS_BIAS:
        tl.store(d_bias_ptr + c, sum_g.to(d_bias_ptr.dtype.element_ty), mask=c_ok)
    if CHANNEL_WIDTH:
        dk = _sum_over_tiles(chan_ptr + 2 * TILES * C, TILES, C, c, c_ok, BLOCK_T, BLOCK_C)
        if not SIGMOID:
            dk = dk * tl.exp(tl.load(width_ptr + c, mask=c_ok, other=0.0).to(tl.float32))
        tl.store(d_width_ptr + c, dk.to(d_width_ptr.dtype.element_ty), mask=c_ok)
    if pid == 0:
        finalize_neuron_scalars(partial_ptr, SLOTS, decay_logit_ptr, width_ptr, d_decay_ptr, d_width_ptr, d_theta_ptr,
                                SIGMOID, CHANNEL_WIDTH, BLOCK_T * BLOCK_C)


@triton.jit
def _bn_grad_apply_kernel(g_ptr, x_ptr, dx_ptr, coef_ptr, k_ptr, TN, C, INNER, BLOCK: tl.constexpr):
    # dx = A_c·g + k2_c·(x - μ_c) + k3_c over the flat [T, OUTER, C, INNER] view
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offs < TN
    c = (offs // INNER) % C
    g = tl.load(g_ptr + offs, mask=in_range, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=in_range, other=0.0).to(tl.float32)
    k1 = tl.load(coef_ptr + c, mask=in_range, other=0.0)
    mean = tl.load(coef_ptr + 2 * C + c, mask=in_range, other=0.0)
    k2 = tl.load(k_ptr + c, mask=in_range, other=0.0)
    k3 = tl.load(k_ptr + C + c, mask=in_range, other=0.0)
    dx = k1 * g + k2 * (x - mean) + k3
    tl.store(dx_ptr + offs, round_to(dx, dx_ptr.dtype.element_ty), mask=in_range)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _geometry(x: Tensor):
    """``(perm, OUTER, C, INNER)``: the kernel order of ``x [T, B, C, *rest]`` as ``[T, OUTER, C, INNER]``.

    Contiguous memory: ``OUTER = B``, ``INNER = prod(rest)``; channels-last memory ``[T, B, *rest,
    C]``: ``OUTER = B·prod(rest)``, ``INNER = 1`` (no copy either way). Other layouts are copied.
    """
    perm = kernel_order(x) or tuple(range(x.dim()))
    B, C, rest = x.shape[1], x.shape[2], math.prod(x.shape[3:])
    if perm[-1] == 2 and x.dim() >= 4:
        return perm, B * rest, C, 1
    return perm, B, C, rest


def _kview(t: Tensor, perm) -> Tensor:
    """The flat kernel-order view of ``t`` (a copy only when its memory is in another order)."""
    return t.permute(perm).contiguous().view(-1)


def _tiles(OUTER: int, C: int, INNER: int, block: int):
    """Tile shape ``(BLOCK_O, BLOCK_C, BLOCK_I)`` of ``block`` elements and the 2-D grid."""
    if INNER == 1:
        block_c = min(triton.next_power_of_2(C), MAX_BLOCK_C)
        block_i = 1
    else:
        block_c = 1
        block_i = min(triton.next_power_of_2(INNER), block)
    block_o = block // (block_c * block_i)
    grid = (triton.cdiv(OUTER, block_o) * triton.cdiv(INNER, block_i), triton.cdiv(C, block_c))
    return (block_o, block_c, block_i), grid


def _aligned(C: int, INNER: int, tile, x: Tensor) -> bool:
    """The kernels' ``ALIGNED``: every row of VEC consecutive elements of a tile starts at a multiple
    of ``a = min(VEC, 4)`` (INNER, or C when INNER = 1, a multiple of a; VEC a multiple of a, 2 at
    least), so its Philox groups lie in one thread (:func:`asgl.kernels.common.chunk_words`)."""
    vec = _vec(*tile, 8 * x.element_size())
    a = min(vec, int(ELEMENTS_PER_DRAW))
    return vec >= 2 and vec % a == 0 and (INNER if INNER > 1 else C) % a == 0


def _coef_block(C: int) -> int:
    """Channels per program of the ``[C]`` kernels (coefficients, backward finalize)."""
    return min(triton.next_power_of_2(max(C, 1)), COEF_BLOCK_C)


def _bwd_tiling(x: Tensor):
    """``(tile, grid)`` of the backward kernel for ``x`` (its tile size depends on T)."""
    T = x.shape[0]
    _, OUTER, C, INNER = _geometry(x)
    block = BWD_BLOCK[4 if T <= 4 else 8] if T <= RECOMPUTE_MAX_T else BLOCK
    return _tiles(OUTER, C, INNER, block)


def group_sum_launches(x: Tensor, *, backward: bool) -> int:
    """Launches of :func:`_sum_tile_groups_kernel` in one call on ``x [T, B, C, ...]``: the statistics
    (``backward=False``: batch statistics; none with running statistics) or the backward (its
    per-channel table and its scalar table, each grouped above its threshold). What
    ``perf/step_budget.py`` counts; the launchers below decide by the same rules."""
    C = x.shape[2]
    if x.numel() == 0 or C == 0:
        return 0
    if not backward:
        _, grid = _tiles(*_geometry(x)[1:], BLOCK)
        return int(grid[0] > DIRECT_MAX_TILES)
    _, grid = _bwd_tiling(x)
    return int(grid[0] > DIRECT_MAX_TILES) + int(grid[0] * grid[1] > _scalar_direct_max(C))


def _scalar_direct_max(C: int) -> int:
    """The backward's scalar partials are grouped above this many (the finalize kernel sums
    ``COEF_BLOCK_T·_coef_block(C)`` of them at a time)."""
    return DIRECT_MAX_TILES * _coef_block(C)


def _group_tiles(table: Tensor, direct_max: int) -> Tensor:
    """``table [J, tiles, C]`` of per-tile sums (float32), or above ``direct_max`` tiles its sums over
    groups of about sqrt(tiles) consecutive tiles, ``[J, groups, C]`` (one launch of
    :func:`_sum_tile_groups_kernel`): what the ``[C]`` kernels then sum."""
    J, tiles, C = table.shape
    if tiles <= direct_max or C == 0:
        return table
    group = COEF_BLOCK_T * triton.cdiv(math.isqrt(tiles - 1) + 1, COEF_BLOCK_T)
    groups = triton.cdiv(tiles, group)
    out = torch.empty((J, groups, C), dtype=torch.float32, device=table.device)
    block_c = _coef_block(C)
    _sum_tile_groups_kernel[(groups, triton.cdiv(C, block_c), J)](
        src_ptr=table, dst_ptr=out, TILES=tiles, C=C, GROUP=group, BLOCK_T=COEF_BLOCK_T, BLOCK_C=block_c,
        num_warps=4, **COMPILE_OPTIONS,
    )
    return out


def _launch_coef(x, weight, bias, running_mean, running_var, *, scale, eps, momentum, batch_stats):
    """``coef[4, C] = (A, β, μ, rstd)`` (float32) from this batch's statistics (``batch_stats``: the
    stats kernel, on many tiles the group sums, and the coefficient kernel, which also updates the
    running buffers when given) or from the running buffers (the coefficient kernel alone)."""
    T, C = x.shape[0], x.shape[2]
    coef = torch.empty((4, C), dtype=torch.float32, device=x.device)
    tiles = 1
    partial = shift = coef  # unread without batch statistics
    if batch_stats:
        perm, OUTER, C, INNER = _geometry(x)
        x_k = _kview(x, perm)
        (bo, bc, bi), grid = _tiles(OUTER, C, INNER, BLOCK)
        tiles = grid[0]
        partial = torch.empty((2 * tiles + 1, C), dtype=torch.float32, device=x.device)
        _bn_stats_kernel[grid](x_ptr=x_k, partial_ptr=partial, T=T, OUTER=OUTER, C=C, INNER=INNER,
                               BLOCK_O=bo, BLOCK_C=bc, BLOCK_I=bi, num_warps=NUM_WARPS, **COMPILE_OPTIONS)
        shift = partial[2 * tiles]
        partial = _group_tiles(partial[: 2 * tiles].view(2, tiles, C), DIRECT_MAX_TILES)
        tiles = partial.shape[1]
    if C == 0:
        return coef
    n = x.numel() // C
    update = batch_stats and running_mean is not None
    block_c = _coef_block(C)
    _bn_coef_kernel[(triton.cdiv(C, block_c),)](
        partial_ptr=partial, shift_ptr=shift, weight_ptr=weight if weight is not None else coef,
        bias_ptr=bias if bias is not None else coef,
        run_mean_ptr=running_mean if running_mean is not None else coef,
        run_var_ptr=running_var if running_var is not None else coef, coef_ptr=coef, TILES=tiles, C=C,
        inv_n=1.0 / n if n else 0.0, unbias=n / (n - 1) if n > 1 else 1.0, momentum=momentum, eps=eps, scale=scale,
        BATCH_STATS=batch_stats, UPDATE_RUNNING=update, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        BLOCK_T=COEF_BLOCK_T, BLOCK_C=block_c, num_warps=4, **COMPILE_OPTIONS,
    )
    return coef


def _launch_fwd(x, residual, coef, weight, bias, running_mean, running_var, decay_logit, width_param, thresh, *,
                scale, eps, fold, hard_reset, v_reset, sigmoid, noise, p, seed, store_u, store_mask):
    y = alloc_like(x)
    u = alloc_like(x) if store_u else x.new_empty(0)
    mask = alloc_like(x, torch.bool) if store_mask else x.new_empty(0, dtype=torch.bool)
    if x.numel() == 0:
        return y, u, mask
    T = x.shape[0]
    perm, OUTER, C, INNER = _geometry(x)
    x_k = _kview(x, perm)
    y_k = y.permute(perm).view(-1)
    (bo, bc, bi), grid = _tiles(OUTER, C, INNER, BLOCK)
    stats = coef if not fold else None
    _bn_lif_fwd_kernel[grid](
        x_ptr=x_k, r_ptr=_kview(residual, perm) if residual is not None else x_k, y_ptr=y_k,
        u_ptr=u.permute(perm).view(-1) if store_u else y_k,
        mask_ptr=mask.view(torch.int8).permute(perm).view(-1) if store_mask else y_k,
        coef_ptr=coef if stats is not None else x_k,
        weight_ptr=weight if fold and weight is not None else x_k,
        bias_ptr=bias if fold and bias is not None else x_k,
        mean_ptr=running_mean if fold else x_k, var_ptr=running_var if fold else x_k,
        decay_logit_ptr=decay_logit, width_ptr=width_param.contiguous(), theta_ptr=thresh, seed_ptr=seed,
        T=T, OUTER=OUTER, C=C, INNER=INNER, v_reset=v_reset, p16=p_threshold(p) if noise == NOISE_DRAW else 0,
        eps=eps, scale=scale, NOISE=noise, SIGMOID=sigmoid, HARD_RESET=hard_reset,
        CHANNEL_WIDTH=width_param.dim() == 1, HAS_RESIDUAL=residual is not None, STORE_U=store_u,
        STORE_MASK=store_mask, FOLD=fold, HAS_WEIGHT=fold and weight is not None, HAS_BIAS=fold and bias is not None,
        STATIC_T=T if T <= MAX_STATIC_T else 0, ALIGNED=_aligned(C, INNER, (bo, bc, bi), x), BLOCK_O=bo,
        BLOCK_C=bc, BLOCK_I=bi, num_warps=NUM_WARPS, **COMPILE_OPTIONS,
    )
    return y, u, mask


def _launch_bwd(dy, x, residual, u, coef, weight, bias, decay_logit, width_param, thresh, *, scale, batch_stats,
                hard_reset, v_reset, sigmoid, noise, p, seed):
    """``(dx, d_residual, dγ, dβ, d decay_logit, d width_param, dθ)`` in three launches: the LIF
    backward (g and the per-tile sums), the finalize (every ``[C]`` and scalar gradient, batch
    norm's coefficients) and the apply (dx); on many tiles one or two group-sum launches before the
    finalize (:func:`group_sum_launches`). dγ, dβ are empty without weight, bias."""
    T, C = x.shape[0], x.shape[2]
    channel_width = width_param.dim() == 1
    g = alloc_like(x)
    dx = alloc_like(x) if residual is not None else g  # without a shortcut dx overwrites g
    d_weight = torch.empty_like(weight) if weight is not None else x.new_empty(0)
    d_bias = torch.empty_like(bias) if bias is not None else x.new_empty(0)
    d_decay = torch.empty_like(decay_logit)
    d_width = torch.empty_like(width_param, memory_format=torch.contiguous_format)
    d_theta = torch.empty_like(thresh)
    if x.numel() == 0:
        for t in (d_weight, d_bias, d_decay, d_width, d_theta):
            t.zero_()
        return dx, g, d_weight, d_bias, d_decay, d_width, d_theta
    perm, OUTER, C, INNER = _geometry(x)
    x_k = _kview(x, perm)
    g_k = g.permute(perm).view(-1)
    recompute = T <= RECOMPUTE_MAX_T
    warps = BWD_NUM_WARPS if recompute else NUM_WARPS
    (bo, bc, bi), grid = _bwd_tiling(x)
    f32 = dict(dtype=torch.float32, device=x.device)
    chan = torch.empty((3 if channel_width else 2, grid[0], C), **f32)
    slots = grid[0] * grid[1]
    partial = torch.empty((2 if channel_width else 3, slots), **f32)
    width = width_param.contiguous()
    _bn_lif_bwd_kernel[grid](
        dy_ptr=_kview(dy.to(x.dtype), perm), x_ptr=x_k,
        r_ptr=_kview(residual, perm) if residual is not None else x_k,
        u_ptr=x_k if recompute else u.permute(perm).reshape(-1), g_ptr=g_k, partial_ptr=partial, chan_ptr=chan,
        coef_ptr=coef, decay_logit_ptr=decay_logit, width_ptr=width, theta_ptr=thresh, seed_ptr=seed, T=T,
        OUTER=OUTER, C=C, INNER=INNER, v_reset=v_reset, p16=p_threshold(p) if noise == NOISE_DRAW else 0,
        NOISE=noise, SIGMOID=sigmoid, HARD_RESET=hard_reset, CHANNEL_WIDTH=channel_width,
        HAS_RESIDUAL=residual is not None, RECOMPUTE_T=T if recompute else 0,
        ALIGNED=_aligned(C, INNER, (bo, bc, bi), x), BLOCK_O=bo, BLOCK_C=bc, BLOCK_I=bi,
        num_warps=warps, **COMPILE_OPTIONS,
    )
    chan = _group_tiles(chan, DIRECT_MAX_TILES)
    # the scalar partials as a table of one channel
    partial = _group_tiles(partial.view(partial.shape[0], slots, 1), _scalar_direct_max(C))
    slots = partial.shape[1]
    k = torch.empty((2, C), **f32)
    block_c = _coef_block(C)
    _bn_bwd_finalize_kernel[(triton.cdiv(C, block_c),)](
        chan_ptr=chan, partial_ptr=partial, coef_ptr=coef, k_ptr=k,
        d_weight_ptr=d_weight if weight is not None else k, d_bias_ptr=d_bias if bias is not None else k,
        decay_logit_ptr=decay_logit, width_ptr=width, d_decay_ptr=d_decay, d_width_ptr=d_width,
        d_theta_ptr=d_theta, TILES=chan.shape[1], SLOTS=slots, C=C, inv_n=C / x.numel(), scale=scale,
        BATCH_STATS=batch_stats, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, SIGMOID=sigmoid,
        CHANNEL_WIDTH=channel_width, BLOCK_T=COEF_BLOCK_T, BLOCK_C=block_c, num_warps=4, **COMPILE_OPTIONS,
    )
    _bn_grad_apply_kernel[(triton.cdiv(x.numel(), BLOCK),)](
        g_ptr=g_k, x_ptr=x_k, dx_ptr=dx.permute(perm).view(-1), coef_ptr=coef, k_ptr=k, TN=x.numel(), C=C,
        INNER=INNER, BLOCK=BLOCK, num_warps=NUM_WARPS, **COMPILE_OPTIONS,
    )
    return dx, g, d_weight, d_bias, d_decay, d_width, d_theta


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.compile traces them without graph breaks) and their autograd
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("asgl::bn_stats", mutates_args=("running_mean", "running_var"))
def _bn_stats_op(
    x_seq: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
    running_var: Tensor | None, scale: float, eps: float, momentum: float, batch_stats: bool,
) -> Tensor:
    """``coef[4, C] = (A, β, μ, rstd)``; with ``batch_stats`` and running buffers, updates them."""
    return _launch_coef(x_seq, weight, bias, running_mean, running_var, scale=scale, eps=eps, momentum=momentum,
                        batch_stats=batch_stats)


@_bn_stats_op.register_fake
def _(x_seq, weight, bias, running_mean, running_var, scale, eps, momentum, batch_stats):
    return x_seq.new_empty((4, x_seq.shape[2]), dtype=torch.float32)


@torch.library.custom_op("asgl::bn_lif_fwd", mutates_args=())
def _bn_lif_fwd_op(
    x_seq: Tensor, residual: Tensor | None, coef: Tensor, weight: Tensor | None, bias: Tensor | None,
    running_mean: Tensor | None, running_var: Tensor | None, decay_logit: Tensor, width_param: Tensor,
    thresh: Tensor, scale: float, eps: float, batch_stats: bool, fold: bool, hard_reset: bool, v_reset: float,
    sigmoid: bool, noise: int, p: float, seed: Tensor, store_u: bool, store_mask: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, u, mask)``. ``fold``: inference, ``coef`` unused and the kernel folds γ, β and the running
    buffers itself (one launch); otherwise the coefficients come from :func:`_bn_stats_op`."""
    return _launch_fwd(
        x_seq, residual, coef, weight, bias, running_mean, running_var, decay_logit, width_param, thresh,
        scale=scale, eps=eps, fold=fold, hard_reset=hard_reset, v_reset=v_reset, sigmoid=sigmoid, noise=noise, p=p,
        seed=seed, store_u=store_u, store_mask=store_mask,
    )


@_bn_lif_fwd_op.register_fake
def _(x_seq, residual, coef, weight, bias, running_mean, running_var, decay_logit, width_param, thresh, scale, eps,
      batch_stats, fold, hard_reset, v_reset, sigmoid, noise, p, seed, store_u, store_mask):
    u = alloc_like(x_seq) if store_u else x_seq.new_empty(0)
    mask = alloc_like(x_seq, torch.bool) if store_mask else x_seq.new_empty(0, dtype=torch.bool)
    return alloc_like(x_seq), u, mask


@torch.library.custom_op("asgl::bn_lif_bwd", mutates_args=())
def _bn_lif_bwd_op(
    dy_seq: Tensor, x_seq: Tensor, residual: Tensor | None, u_seq: Tensor, coef: Tensor, weight: Tensor | None,
    bias: Tensor | None, decay_logit: Tensor, width_param: Tensor, thresh: Tensor, scale: float, batch_stats: bool,
    hard_reset: bool, v_reset: float, sigmoid: bool, noise: int, p: float, seed: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(dx, d_residual, d_weight, d_bias, d_decay_logit, d_width_param, d_thresh)``; the gradient of
    an absent residual / weight / bias is an empty tensor."""
    dx, g, d_weight, d_bias, d_decay, d_width, d_theta = _launch_bwd(
        dy_seq, x_seq, residual, u_seq, coef, weight, bias, decay_logit, width_param, thresh, scale=scale,
        batch_stats=batch_stats, hard_reset=hard_reset, v_reset=v_reset, sigmoid=sigmoid, noise=noise, p=p,
        seed=seed,
    )
    return dx, g if residual is not None else x_seq.new_empty(0), d_weight, d_bias, d_decay, d_width, d_theta


@_bn_lif_bwd_op.register_fake
def _(dy_seq, x_seq, residual, u_seq, coef, weight, bias, decay_logit, width_param, thresh, scale, batch_stats,
      hard_reset, v_reset, sigmoid, noise, p, seed):
    return (
        alloc_like(x_seq), alloc_like(x_seq) if residual is not None else x_seq.new_empty(0),
        torch.empty_like(weight) if weight is not None else x_seq.new_empty(0),
        torch.empty_like(bias) if bias is not None else x_seq.new_empty(0),
        torch.empty_like(decay_logit), torch.empty_like(width_param, memory_format=torch.contiguous_format),
        torch.empty_like(thresh),
    )


_SETTINGS = ("scale", "batch_stats", "hard_reset", "v_reset", "sigmoid", "noise", "p")


def _setup_context(ctx, inputs, output):
    (x_seq, residual, coef, weight, bias, _rm, _rv, decay_logit, width_param, thresh, scale, _eps, batch_stats, _fold,
     hard_reset, v_reset, sigmoid, noise, p, seed, _store_u, _store_mask) = inputs
    # saved: x (and the shortcut), u only when it was stored (T > RECOMPUTE_MAX_T), and [C] vectors
    ctx.save_for_backward(x_seq, residual, output[1], coef, weight, bias, decay_logit, width_param, thresh, seed)
    ctx.settings = dict(zip(_SETTINGS, (scale, batch_stats, hard_reset, v_reset, sigmoid, noise, p)))
    # u and the mask carry no gradient: no zero-filled [T, N] gradient for them in every backward
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.set_materialize_grads(False)


def _backward(ctx, dy_seq, du_unused, dmask_unused):
    x_seq, residual, u_seq, coef, weight, bias, decay_logit, width_param, thresh, seed = ctx.saved_tensors
    if dy_seq is None:
        return (None,) * len(ctx.needs_input_grad)
    dx, d_res, d_weight, d_bias, d_decay, d_width, d_thresh = _bn_lif_bwd_op(
        dy_seq, x_seq, residual, u_seq, coef, weight, bias, decay_logit, width_param, thresh, seed=seed,
        **ctx.settings,
    )
    need = ctx.needs_input_grad
    grads = (dx, d_res, None, d_weight, d_bias, None, None, d_decay, d_width, d_thresh)
    return tuple(gr if n else None for gr, n in zip(grads, need)) + (None,) * 12


_bn_lif_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def output_from_saved(ctx) -> Tensor:
    """The forward's ``y_seq`` once more, from what its backward keeps (``ctx``: the op's autograd node,
    see :func:`_setup_context`): the same forward op on the same x, shortcut, coefficients, parameters
    and seed, so the same kernel draws the same mask and writes the same bits. What
    :mod:`asgl.memory` calls to give a consumer of ``y`` its saved input back without keeping it."""
    x_seq, residual, _u, coef, weight, bias, decay_logit, width_param, thresh, seed = ctx.saved_tensors
    s = ctx.settings
    # fold=False: A, B come from coef (eps and the running buffers are only read when folding)
    y_seq, _, _ = _bn_lif_fwd_op(
        x_seq, residual, coef, weight, bias, None, None, decay_logit, width_param, thresh, s["scale"], 0.0,
        s["batch_stats"], False, s["hard_reset"], s["v_reset"], s["sigmoid"], s["noise"], s["p"], seed, False, False,
    )
    return y_seq


# ---------------------------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------------------------


def bn_lif_fused(
    x_seq: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    decay_logit: Tensor,
    width_param: Tensor,
    thresh: Tensor | float,
    *,
    residual: Tensor | None = None,
    use_batch_stats: bool = True,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    threshold_scale: float | None = None,
    reset: str = "hard",
    v_reset: float = 0.0,
    surrogate: str = "sigmoid",
    p: float = 0.0,
    training: bool = True,
    seed: Tensor | int = 0,
    return_mask: bool = False,
):
    """Fused tdBN + multi-step ASGL LIF, ``x_seq [T, B, C, ...] -> y_seq`` (same shape and dtype).

    Per channel c, over all ``T·B·...`` elements (``use_batch_stats``) or from the running
    estimates, with ``s = threshold_scale`` (1 when None)::

        x̂ = (x - μ_c)·rstd_c,  rstd_c = 1/sqrt(σ²_c + ε)       σ² biased
        in = γ_c·s·x̂ + β_c (+ residual) = (x - μ_c)·A_c + β_c (+ residual)
        y = LIF(in)                       (asgl.kernels.lif.lif_fused: every option, same mask keying)

    With batch statistics and running buffers the buffers are updated in place, as
    ``nn.BatchNorm2d`` does: ``μ_run <- (1-m)·μ_run + m·μ``, ``σ²_run <- (1-m)·σ²_run + m·σ²·n/(n-1)``
    (``momentum=None``: the caller passes the cumulative-average factor as momentum).

    Backward, with ``g = dL/d in`` from the LIF backward (``d residual = g``)::

        dβ = Σ g;  dγ = s·Σ g·x̂
        dx = γ·s·rstd·(g - Σg/n - x̂·Σ(g·x̂)/n)     batch statistics;   γ·s·rstd·g   running

    Args:
        x_seq: ``[T, B, C]``, ``[T, B, C, L]`` or ``[T, B, C, H, W]``; fp32/fp16/bf16; contiguous or
            channels-last memory (no copy).
        weight, bias: γ, β ``[C]`` or None (``affine=False``).
        running_mean, running_var: ``[C]`` buffers or None (``track_running_stats=False``).
        decay_logit, width_param, thresh, reset, v_reset, surrogate, p, training, seed,
            return_mask: as in :func:`asgl.kernels.lif.lif_fused` (``training`` only switches the noise).
        residual: the shortcut added after the batch norm, x_seq's shape, dtype and device.
        use_batch_stats: normalise with this batch's statistics (training, or no running buffers).

    Returns:
        ``y_seq``, or ``(y_seq, mask)`` with ``return_mask=True``.
    """
    check_input(x_seq, "x_seq")
    check_bn_args(x_seq, residual, weight, bias, running_mean, running_var, use_batch_stats=use_batch_stats,
                  momentum=momentum, eps=eps, threshold_scale=threshold_scale)
    C = x_seq.shape[2]
    thresh, seed, p, noise = neuron_args(
        x_seq, decay_logit, width_param, {(), (C,)}, thresh, reset=reset, surrogate=surrogate, p=p,
        training=training, seed=seed,
    )
    T = x_seq.shape[0]
    if T and x_seq.numel() // T >= 2**31:
        raise ValueError(f"x_seq has {x_seq.numel() // T} elements per time step; at most 2**31 - 1 are supported")

    needs_grad = torch.is_grad_enabled() and any(
        isinstance(t, Tensor) and t.requires_grad
        for t in (x_seq, residual, weight, bias, decay_logit, width_param, thresh)
    )
    scale = 1.0 if threshold_scale is None else float(threshold_scale)
    # inference with running statistics: the forward kernel folds them itself (one launch)
    fold = not use_batch_stats and not needs_grad
    detach = lambda t: t.detach() if t is not None else None  # noqa: E731
    coef = x_seq.new_empty(0, dtype=torch.float32) if fold else _bn_stats_op(
        x_seq.detach(), detach(weight), detach(bias), running_mean if use_batch_stats else detach(running_mean),
        running_var if use_batch_stats else detach(running_var), scale, float(eps),
        0.0 if momentum is None else float(momentum), use_batch_stats,
    )
    store_u = needs_grad and T > RECOMPUTE_MAX_T
    y_seq, _, mask = _bn_lif_fwd_op(
        x_seq, residual, coef, weight, bias, running_mean, running_var, decay_logit, width_param, thresh, scale,
        float(eps), use_batch_stats, fold, reset == "hard", float(v_reset), surrogate == "sigmoid", noise, p, seed,
        store_u, return_mask,
    )
    return (y_seq, mask) if return_mask else y_seq
