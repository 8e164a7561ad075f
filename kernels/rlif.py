"""Fused Triton kernels of the recurrent ASGL LIF layer (the SHD network's hidden layer).

The recurrence couples every hidden unit of a batch row to every other one through
``o[t-1] @ Rᵀ``, so one program owns ``BLOCK_B`` whole batch rows (all ``H`` units, padded to the
power of two ``BLOCK_H``) and runs all T steps in one launch with ``v`` in float32 registers; the
backward program walks the same rows from ``t = T-1`` down to 0 carrying ``dL/dv`` and
``du[t+1]``. The per-step neuron update, the Philox keying ``(seed, t, b·H + h)`` and the
relaxation gradients are the helpers of :mod:`asgl.kernels.common`, i.e. the same instructions as the
feed-forward kernel (:mod:`asgl.kernels.lif`), so a mask drawn here can be replayed through either
reference.

Where R lives. ``tl.dot`` needs both operands whole, and Rᵀ at H = 240 (BLOCK_H = 256) is 256 KiB in
float32 / 128 KiB in fp16: held in registers for the whole loop it would take 256 (fp16) to 512
(fp32) registers per thread at 8 warps, more than the 255 a thread can address, so it would spill.
Rᵀ is therefore streamed every step in ``[BLOCK_K, BLOCK_H]`` chunks from L2 (230 KB for SHD, read
T times per program from a cache that holds it after the first step), and the previous step's
``o`` goes through a per-program double buffer in global memory (``2·BLOCK_B·BLOCK_H`` elements,
L1/L2 resident) so that its K-chunks can be loaded; one ``tl.debug_barrier`` per step orders the
writes of step t before the reads of step t+1. Measured in the AOT PTX at H = 240, 8 warps,
BLOCK_K = 16 (triton 3.9, ptxas for sm_80/sm_90, all 450 specialisations): forward 78-252 and
backward 170-255 registers per thread, no spills (the peak is the Philox draw, hence drawn first
in each step). BLOCK_K = 32 spilled the fp32 forward (616 B on sm_80); 16 warps (a 128-register
cap) spilled both kernels (40-160 B); a tf32 backward product spilled 464 B (its mma operand
shuffles), so the backward runs plain fp32 FMAs.

Saved state: only ``u`` in the input dtype, ``T·B·H·s`` bytes (s = 4/2/2 for fp32/fp16/bf16;
SHD at T = 250, B = 32, H = 240 in bf16: 3.84 MB). ``u`` is rounded to that dtype every step and the
forward continues from the rounded value, so the backward's recomputed decisions are bit-identical.
The backward writes ``du`` (= d wx, an output anyway) and the recomputed ``o`` (one more
``T·B·H·s`` transient), and ``dR = Σ_t du[t]ᵀ·o[t-1]`` is then one float32 GEMM over the ``T·B``
rows (``2·T·B·H²`` = 0.9 GFLOP for SHD at B = 32): deterministic, and it keeps an ``[H, H]``
accumulator (256 KiB per program, i.e. per 16 batch rows) out of the kernel.

Dot precision. The forward product runs on fp32 FMAs (``input_precision="ieee"``) for float32
storage, so the kernel equals the float32 reference to rounding; for 16-bit storage (fp16 or bf16)
its operands ``o`` (0/1 spikes, exact, or ``H(z)`` in [0, 1]) and R go to the tensor cores in fp16
(3 more mantissa bits than bf16 on these ranges) with fp32 accumulation. The backward product
``du[t+1] @ R`` always runs on fp32 FMAs: gradients keep the fp32 range (fp16 would flush small
ones) and, as measured above, its registers fit where a tf32 mma's do not.

The equations are in :func:`recurrent_lif_fused`; the reference is
:func:`asgl.kernels.rlif_ref.recurrent_lif_ref`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import (
    NOISE_DRAW,
    element_words,
    lif_step,
    lif_step_grads,
    load_neuron_params,
    p_threshold,
    round_to,
    spike_mode,
    store_spike_mode,
)
from .host import COMPILE_OPTIONS, check_input, check_param, neuron_args

# tl.dot needs at least 16 rows; one program per 16 batch rows keeps B = 32 on 2 SMs (the
# recurrence is serial in T, so batch tiles are the only parallelism that needs no grid-wide sync).
BLOCK_B = 16
BLOCK_K = 16
MAX_BLOCK_H = 512


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _recurrent_matmul(a_ptr, w_ptr, H, offs_bl, offs_h, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
                      BLOCK_K: tl.constexpr):
    """``A @ W`` for ``A [BLOCK_B, BLOCK_H]`` in a dense scratch buffer and ``W [H, H]`` row-major.

    Accumulates over K in ``BLOCK_K`` chunks in fp32 (fp32 operands: exact fp32 FMAs, no tf32);
    rows/columns of ``W`` beyond ``H`` load as 0.
    """
    acc = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    in_n = offs_h[None, :] < H
    for k0 in range(0, H, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_ptr + offs_bl[:, None] * BLOCK_H + offs_k[None, :])
        w = tl.load(w_ptr + offs_k[:, None] * H + offs_h[None, :], mask=(offs_k[:, None] < H) & in_n, other=0.0)
        acc = tl.dot(a, w, acc, input_precision="ieee")
    return acc


@triton.jit(do_not_specialize=["T", "p16"])
def _rlif_fwd_kernel(
    wx_ptr, rt_ptr, y_ptr, u_ptr, mask_ptr, scratch_ptr, decay_logit_ptr, width_ptr, theta_ptr, seed_ptr,
    T, B, H, v_reset, p16,
    NOISE: tl.constexpr, SIGMOID: tl.constexpr, HARD_RESET: tl.constexpr,
    CHANNEL_WIDTH: tl.constexpr, STORE_U: tl.constexpr, STORE_MASK: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs_bl = tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, BLOCK_H)
    in_h = offs_h < H
    in_range = ((pid * BLOCK_B + offs_bl)[:, None] < B) & in_h[None, :]
    # element b·H + h of one step = row0 + offs_l; int32 in registers, the int64 part is a scalar
    row0 = pid * BLOCK_B * H
    offs_l = offs_bl[:, None] * H + offs_h[None, :]
    lam, theta, k, k_h = load_neuron_params(decay_logit_ptr, width_ptr, theta_ptr, offs_h, in_h, 1, H,
                                            SIGMOID, CHANNEL_WIDTH)
    seed = tl.load(seed_ptr)
    p_hi = p16.to(tl.uint32) << 16
    if CHANNEL_WIDTH:
        k = k[None, :]
        k_h = k_h[None, :]
    # o[t-1] lives in buffer (t+1) % 2 (buffer 1 holds o[-1] = 0, zeroed by the launcher)
    scratch = scratch_ptr + pid * (2 * BLOCK_B * BLOCK_H)
    offs_s = offs_bl[:, None] * BLOCK_H + offs_h[None, :]

    v = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    m = in_range  # not read unless NOISE == 2
    w = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.uint32)
    for t in range(0, T):
        # Philox first, while the fewest tiles are live (its temporaries are the register peak);
        # the rows of a group of 4 need not sit in one thread here, so each element draws its group
        if NOISE == 2:
            if t % 2 == 0:
                w = element_words(seed, t, row0 + offs_l, 0)
            m = spike_mode(w, t, p_hi)
        rec = _recurrent_matmul(scratch + ((t + 1) % 2) * (BLOCK_B * BLOCK_H), rt_ptr, H, offs_bl, offs_h,
                                BLOCK_B, BLOCK_H, BLOCK_K)
        base = tl.cast(t, tl.int64) * B * H + row0
        wx = tl.load(wx_ptr + base + offs_l, mask=in_range, other=0.0).to(tl.float32)
        # the reference's order, (λ·v + wx) + o@Rᵀ; then round u to the storage dtype and go on from
        # the rounded value, so the backward (which only sees the stored u) recomputes these decisions
        u_stored = round_to(lam * v + wx + rec, u_ptr.dtype.element_ty, False)
        u = u_stored.to(tl.float32)
        o, v, h, z = lif_step(u, theta, k_h, v_reset, m, NOISE, SIGMOID, HARD_RESET)
        tl.store(y_ptr + base + offs_l, round_to(theta * o, y_ptr.dtype.element_ty, False), mask=in_range)
        if STORE_U:
            tl.store(u_ptr + base + offs_l, u_stored, mask=in_range)
        if STORE_MASK:
            store_spike_mode(mask_ptr + base, offs_l, in_range, m, NOISE)
        # padded rows/units feed 0 into the next step's dot
        o_next = round_to(tl.where(in_range, o, 0.0), scratch_ptr.dtype.element_ty, False)
        tl.store(scratch + (t % 2) * (BLOCK_B * BLOCK_H) + offs_s, o_next)
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "p16"])
def _rlif_bwd_kernel(
    dy_ptr, u_ptr, r_ptr, dwx_ptr, o_ptr, scratch_ptr, partial_ptr, decay_logit_ptr, width_ptr, theta_ptr,
    seed_ptr, T, B, H, v_reset, p16,
    NOISE: tl.constexpr, SIGMOID: tl.constexpr, HARD_RESET: tl.constexpr,
    CHANNEL_WIDTH: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs_bl = tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, BLOCK_H)
    in_h = offs_h < H
    in_range = ((pid * BLOCK_B + offs_bl)[:, None] < B) & in_h[None, :]
    row0 = pid * BLOCK_B * H
    offs_l = offs_bl[:, None] * H + offs_h[None, :]
    lam, theta, k, k_h = load_neuron_params(decay_logit_ptr, width_ptr, theta_ptr, offs_h, in_h, 1, H,
                                            SIGMOID, CHANNEL_WIDTH)
    seed = tl.load(seed_ptr)
    p_hi = p16.to(tl.uint32) << 16
    if CHANNEL_WIDTH:
        k = k[None, :]
        k_h = k_h[None, :]
    # du[t+1] lives in buffer (t+1) % 2 (buffer T % 2 holds du[T] = 0, zeroed by the launcher)
    scratch = scratch_ptr + pid * (2 * BLOCK_B * BLOCK_H)
    offs_s = offs_bl[:, None] * BLOCK_H + offs_h[None, :]

    m = in_range  # not read unless NOISE == 2
    w = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.uint32)
    du_next = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)  # du[t+1]; du[T] = 0
    # parameter-gradient accumulators, summed over the batch rows every step: [BLOCK_H] vectors
    # cost ~1 register each where [BLOCK_B, BLOCK_H] tiles cost 16 (at 8 warps), and the column
    # sums are a few shuffles next to the step's BLOCK_B·H·H-FMA product
    acc_lam = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc_theta = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc_k = tl.zeros([BLOCK_H], dtype=tl.float32)
    for i in range(0, T):
        t = T - 1 - i
        base = tl.cast(t, tl.int64) * B * H + row0
        # recompute step t from the stored u[t] (each Philox block redrawn once, in reverse; drawn
        # first, while the fewest tiles are live)
        if NOISE == 2:
            if (t == T - 1) | (t % 2 == 1):
                w = element_words(seed, t, row0 + offs_l, 0)
            m = spike_mode(w, t, p_hi)
        # dL/do[t] through u[t+1] = ... + o[t] @ Rᵀ
        do_rec = _recurrent_matmul(scratch + ((t + 1) % 2) * (BLOCK_B * BLOCK_H), r_ptr, H, offs_bl, offs_h,
                                   BLOCK_B, BLOCK_H, BLOCK_K)
        u = tl.load(u_ptr + base + offs_l, mask=in_range, other=0.0).to(tl.float32)
        o, v, h, z = lif_step(u, theta, k_h, v_reset, m, NOISE, SIGMOID, HARD_RESET)
        # u[t+1] = λ·v[t] + ...: the dλ term of step t+1 and g = dL/dv[t]; carrying du[t+1] instead
        # of recomputing v[t-1] spares a second lif_step per step (and its registers)
        acc_lam += tl.sum(du_next * v, axis=0)
        dv = lam * du_next

        dy = tl.load(dy_ptr + base + offs_l, mask=in_range, other=0.0).to(tl.float32)
        du, d_theta, d_k = lif_step_grads(dy, theta * dy + do_rec, u, o, z, h, dv, theta, k, k_h, v_reset, NOISE,
                                          SIGMOID, HARD_RESET, True)
        acc_theta += tl.sum(d_theta, axis=0)
        du = tl.where(in_range, du, 0.0)
        tl.store(dwx_ptr + base + offs_l, round_to(du, dwx_ptr.dtype.element_ty, False), mask=in_range)
        tl.store(o_ptr + base + offs_l, round_to(o, o_ptr.dtype.element_ty, False), mask=in_range)
        acc_k += tl.sum(tl.where(in_range, d_k, 0.0), axis=0)
        du_next = du
        tl.store(scratch + (t % 2) * (BLOCK_B * BLOCK_H) + offs_s, du)
        tl.debug_barrier()

    # parameter gradients, stage 1 of 2: per-program column sums [3, programs, BLOCK_H]; stage 2 is
    # a torch .sum in the launcher (deterministic, no atomics)
    nprog = tl.num_programs(0)
    base = partial_ptr + pid * BLOCK_H + offs_h
    tl.store(base, acc_lam)
    tl.store(base + nprog * BLOCK_H, acc_theta)
    tl.store(base + 2 * nprog * BLOCK_H, acc_k)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _blocks(H: int):
    """``(BLOCK_H, BLOCK_K, num_warps)`` for ``H`` hidden units."""
    block_h = max(16, triton.next_power_of_2(H))
    # 8 warps from BLOCK_H = 128: each [16, BLOCK_H] fp32 tile (v, u, o, du[t+1], the product's
    # accumulator, ...) is then 16 registers per thread at BLOCK_H = 256 (see the module docstring)
    return block_h, min(BLOCK_K, block_h), (8 if block_h >= 128 else 4)


def _fwd_dot_dtype(dtype: torch.dtype) -> torch.dtype:
    """Operand dtype of the forward product (o, Rᵀ) for a storage dtype: fp32, or fp16 for 16 bit."""
    return torch.float32 if dtype == torch.float32 else torch.float16


def _empty(like: Tensor, dtype=None) -> Tensor:
    """Every ``[T, B, H]`` output of the launchers (one place, so tests can NaN-poison them)."""
    return torch.empty(like.shape, dtype=dtype or like.dtype, device=like.device)


def _launch_fwd(wx, rec, decay_logit, width_param, thresh, *, hard_reset, v_reset, sigmoid, noise, p, seed,
                store_u, store_mask):
    T, B, H = wx.shape
    y = _empty(wx)
    u = _empty(wx) if store_u else wx.new_empty(0)
    mask = _empty(wx, torch.int8) if store_mask else wx.new_empty(0, dtype=torch.int8)
    if wx.numel() == 0:
        return y, u, mask.bool()
    block_h, block_k, num_warps = _blocks(H)
    dot_dtype = _fwd_dot_dtype(wx.dtype)
    grid = (triton.cdiv(B, BLOCK_B),)
    scratch = torch.zeros((grid[0], 2, BLOCK_B, block_h), dtype=dot_dtype, device=wx.device)
    _rlif_fwd_kernel[grid](
        wx_ptr=wx.contiguous(), rt_ptr=rec.t().to(dot_dtype).contiguous(), y_ptr=y,
        u_ptr=u if store_u else y, mask_ptr=mask if store_mask else y, scratch_ptr=scratch,
        decay_logit_ptr=decay_logit, width_ptr=width_param.contiguous(), theta_ptr=thresh, seed_ptr=seed,
        T=T, B=B, H=H, v_reset=v_reset, p16=p_threshold(p) if noise == NOISE_DRAW else 0, NOISE=noise,
        SIGMOID=sigmoid, HARD_RESET=hard_reset, CHANNEL_WIDTH=width_param.dim() == 1, STORE_U=store_u,
        STORE_MASK=store_mask, BLOCK_B=BLOCK_B, BLOCK_H=block_h, BLOCK_K=block_k,
        num_warps=num_warps, **COMPILE_OPTIONS,
    )
    return y, u, mask.bool()


def _launch_bwd(dy, u, rec, decay_logit, width_param, thresh, *, hard_reset, v_reset, sigmoid, noise, p, seed):
    """``(dwx, dR, dλ, dθ, dk)``: dwx like u; dR float32 [H, H]; dλ, dθ scalars, dk [] or [H] float32."""
    T, B, H = u.shape
    dwx = _empty(u)
    channel_width = width_param.dim() == 1
    f32 = dict(dtype=torch.float32, device=u.device)
    if u.numel() == 0:
        return dwx, torch.zeros((H, H), **f32), torch.zeros((), **f32), torch.zeros((), **f32), \
            torch.zeros(width_param.shape, **f32)
    block_h, block_k, num_warps = _blocks(H)
    grid = (triton.cdiv(B, BLOCK_B),)
    scratch = torch.zeros((grid[0], 2, BLOCK_B, block_h), **f32)
    partial = torch.empty((3, grid[0], block_h), **f32)
    o_seq = _empty(u)
    _rlif_bwd_kernel[grid](
        dy_ptr=dy.to(u.dtype).contiguous(), u_ptr=u, r_ptr=rec.to(torch.float32).contiguous(), dwx_ptr=dwx,
        o_ptr=o_seq, scratch_ptr=scratch, partial_ptr=partial, decay_logit_ptr=decay_logit,
        width_ptr=width_param.contiguous(), theta_ptr=thresh, seed_ptr=seed, T=T, B=B, H=H, v_reset=v_reset,
        p16=p_threshold(p) if noise == NOISE_DRAW else 0,
        NOISE=noise, SIGMOID=sigmoid, HARD_RESET=hard_reset, CHANNEL_WIDTH=channel_width,
        BLOCK_B=BLOCK_B, BLOCK_H=block_h, BLOCK_K=block_k, num_warps=num_warps, **COMPILE_OPTIONS,
    )
    # dR = Σ_t du[t]ᵀ·o[t-1]: one fp32 GEMM over the T-1 shifted steps (o[-1] = 0)
    d_rec = dwx[1:].reshape(-1, H).to(torch.float32).t() @ o_seq[:-1].reshape(-1, H).to(torch.float32)
    sums = partial[:, :, :H].sum(dim=1)
    d_k = sums[2] if channel_width else sums[2].sum()
    return dwx, d_rec, sums[0].sum(), sums[1].sum(), d_k


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.compile traces them without graph breaks) and their autograd
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("asgl::rlif_fwd", mutates_args=())
def _rlif_fwd_op(
    wx_seq: Tensor, recurrent_weight: Tensor, decay_logit: Tensor, width_param: Tensor, thresh: Tensor,
    hard_reset: bool, v_reset: float, sigmoid: bool, noise: int, p: float, seed: Tensor, store_u: bool,
    store_mask: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    return _launch_fwd(
        wx_seq, recurrent_weight, decay_logit, width_param, thresh, hard_reset=hard_reset, v_reset=v_reset,
        sigmoid=sigmoid, noise=noise, p=p, seed=seed, store_u=store_u, store_mask=store_mask,
    )


@_rlif_fwd_op.register_fake
def _(wx_seq, recurrent_weight, decay_logit, width_param, thresh, hard_reset, v_reset, sigmoid, noise, p,
      seed, store_u, store_mask):
    u = torch.empty_like(wx_seq) if store_u else wx_seq.new_empty(0)
    mask = torch.empty_like(wx_seq, dtype=torch.bool) if store_mask else wx_seq.new_empty(0, dtype=torch.bool)
    return torch.empty_like(wx_seq), u, mask


@torch.library.custom_op("asgl::rlif_bwd", mutates_args=())
def _rlif_bwd_op(
    dy_seq: Tensor, u_seq: Tensor, recurrent_weight: Tensor, decay_logit: Tensor, width_param: Tensor,
    thresh: Tensor, seed: Tensor, hard_reset: bool, v_reset: float, sigmoid: bool, noise: int, p: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    dwx, d_rec, d_lam, d_theta, d_k = _launch_bwd(
        dy_seq, u_seq, recurrent_weight, decay_logit, width_param, thresh, hard_reset=hard_reset,
        v_reset=v_reset, sigmoid=sigmoid, noise=noise, p=p, seed=seed,
    )
    lam = torch.sigmoid(decay_logit.to(torch.float32))
    d_decay_logit = d_lam * lam * (1.0 - lam)
    # rectangle stores log k: d(log k) = dk·k
    d_width = d_k if sigmoid else d_k * torch.exp(width_param.to(torch.float32))
    return (
        dwx,
        d_rec.to(recurrent_weight.dtype),
        d_decay_logit.to(decay_logit.dtype),
        d_width.to(width_param.dtype, copy=True).reshape(width_param.shape),
        d_theta.to(thresh.dtype, copy=True),
    )


@_rlif_bwd_op.register_fake
def _(dy_seq, u_seq, recurrent_weight, decay_logit, width_param, thresh, seed, hard_reset, v_reset, sigmoid,
      noise, p):
    return (
        torch.empty_like(u_seq), torch.empty_like(recurrent_weight), torch.empty_like(decay_logit),
        torch.empty_like(width_param), torch.empty_like(thresh),
    )


_SETTINGS = ("hard_reset", "v_reset", "sigmoid", "noise", "p")


def _setup_context(ctx, inputs, output):
    wx_seq, rec, decay_logit, width_param, thresh, hard_reset, v_reset, sigmoid, noise, p, seed, _, _ = inputs
    ctx.save_for_backward(output[1], rec, decay_logit, width_param, thresh, seed)
    ctx.settings = dict(zip(_SETTINGS, (hard_reset, v_reset, sigmoid, noise, p)))
    # u and the mask carry no gradient: no zero-filled [T, N] gradient for them in every backward
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.set_materialize_grads(False)


def _backward(ctx, dy_seq, du_unused, dmask_unused):
    u_seq, rec, decay_logit, width_param, thresh, seed = ctx.saved_tensors
    if dy_seq is None:
        return (None,) * 13
    if u_seq.numel() == 0 and dy_seq.numel() != 0:
        raise RuntimeError("recurrent_lif_fused: backward through a forward that stored no membrane (store_u=False)")
    grads = _rlif_bwd_op(dy_seq, u_seq, rec, decay_logit, width_param, thresh, seed, **ctx.settings)
    return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad)) + (None,) * 8


_rlif_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------------------------


def recurrent_lif_fused(
    wx_seq: Tensor,
    recurrent_weight: Tensor,
    decay_logit: Tensor,
    width_param: Tensor,
    thresh: Tensor | float,
    *,
    reset: str = "hard",
    v_reset: float = 0.0,
    surrogate: str = "sigmoid",
    p: float = 0.0,
    training: bool = True,
    seed: Tensor | int = 0,
    return_mask: bool = False,
):
    """Fused recurrent ASGL LIF, ``wx_seq [T, B, H]``, ``recurrent_weight [H, H]`` -> ``y_seq [T, B, H]``.

    Computes :func:`asgl.kernels.rlif_ref.recurrent_lif_ref` in two kernels (forward over all T, backward
    over all T in reverse). For t = 0..T-1, v[-1] = 0, o[-1] = 0, λ = sigmoid(decay_logit), k the
    slope::

        u[t] = round_dtype(λ·v[t-1] + wx[t] + o[t-1] @ Rᵀ)     stored for backward (only saved tensor)
        z = u - θ;  S = 1[z >= 0];  H = sigmoid(k·z) | clamp(k·z + 1/2, 0, 1)
        o = m·S + (1-m)·H,  m = 1[rand(seed, t, b·H + h) >= p]      (eval: o = S)
        v[t] = u(1-o) + v_r·o  (hard)  |  u - θ·o  (soft);           y[t] = θ·o

    Backward (reverse in t, g = dL/dv[t] = λ·du[t+1] carried, H' = ∂H/∂z)::

        do = θ·dy + du[t+1] @ R + g·(v_r - u | -θ);   dz = do·H';   du = dz + g·(1 - o | 1)
        d wx[t] = du;  dR = Σ_t du[t]ᵀ·o[t-1];  dλ = Σ du[t]·v[t-1];  dθ = Σ dy·o - dz (- g·o soft)
        dk = Σ do·∂H/∂k;  d decay_logit = dλ·λ(1-λ);  d width_param = dk (sigmoid) | dk·k (rectangle)

    Args:
        wx_seq: ``[T, B, H]`` float32/float16/bfloat16, the input projection ``x @ Wᵀ`` of all steps.
        recurrent_weight: ``[H, H]`` floating tensor R (any float dtype; used in the storage dtype).
        decay_logit: 0-dim tensor.
        width_param: 0-dim (one width per layer) or ``[H]`` (one per hidden unit).
        thresh: θ, a Python float or a 0-dim tensor (which may require grad).
        reset, v_reset, surrogate, p, training: as in :func:`asgl.kernels.rlif_ref.recurrent_lif_ref`.
        seed: ``0 <= seed < 2**31``, an int or a one-element int64 tensor on ``wx_seq``'s device
            (what :func:`asgl.functional.draw_seed` gives; the kernels read it, so there is no host
            sync); with ``0 < p < 1`` it keys the in-kernel Philox draws.
        return_mask: also return the bool spike-mode mask ``[T, B, H]`` (``True`` = spike mode) for
            replay through ``recurrent_lif_ref(..., mask=mask)``.

    Returns:
        ``y_seq``, or ``(y_seq, mask)`` with ``return_mask=True``.
    """
    check_input(wx_seq, "wx_seq")
    if wx_seq.dim() != 3:
        raise ValueError(f"wx_seq must be [T, B, H], got shape {tuple(wx_seq.shape)}")
    T, B, H = wx_seq.shape
    check_param("recurrent_weight", recurrent_weight, wx_seq, {(H, H)})
    if triton.next_power_of_2(H) > MAX_BLOCK_H:
        raise ValueError(f"wx_seq has H = {H} hidden units; the fused kernel supports at most {MAX_BLOCK_H} "
                         "(use backend='torch')")
    if B * H >= 2**31:
        raise ValueError(f"wx_seq has {B * H} elements per time step; at most 2**31 - 1 are supported")
    thresh, seed, p, noise = neuron_args(
        wx_seq, decay_logit, width_param, {(), (H,)}, thresh,
        reset=reset, surrogate=surrogate, p=p, training=training, seed=seed,
    )

    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (wx_seq, recurrent_weight, decay_logit, width_param, thresh)
    )
    y_seq, _, mask = _rlif_fwd_op(
        wx_seq.contiguous(), recurrent_weight, decay_logit, width_param, thresh, reset == "hard",
        float(v_reset), surrogate == "sigmoid", noise, p, seed, needs_grad, return_mask,
    )
    return (y_seq, mask) if return_mask else y_seq
