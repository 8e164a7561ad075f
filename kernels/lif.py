"""Fused Triton kernels of the multi-step ASGL LIF neuron: forward and backward across all T.

One program owns ``BLOCK_N`` neurons of the flattened ``[T, N]`` view, as rows of ``VEC``
consecutive neurons (one thread's 16-byte vector), and walks time with the state in float32
registers; the backward program walks the same neurons from ``t = T-1`` down to 0 carrying
``dL/du[t+1]``. The mask of the noisy hybrid never exists in memory: it is drawn in-kernel from
Philox, one call per 4 neurons of a row and 2 steps (keying in :mod:`asgl.kernels.common`), and
redrawn bit-identically in the backward. T up to 8 (the recipes' 2, 4 and 8) runs fully unrolled
(``STATIC_T``: one compiled kernel per T, no loop, no guards, the first and last steps without their
zero terms); above, a loop of unrolled steps (8 per iteration forward, 4 backward). Each step's
loads are issued before the previous step's stores (a load may not move across a store), so one
step of loads is always in flight behind the math.

Memory traffic per element and time step (bf16): forward reads x and writes y and u (6 B),
backward reads u and dy and writes dx (6 B): 12 B per element-step for a training step, against
2 B read + 2 B written for eval (u is neither allocated nor stored). Saving u rather than x costs
nothing extra and spares the backward the forward recurrence. After the backward, one finalize
launch sums the per-program parameter-gradient partials and applies the chain rule.

Issue, not memory, is what a fused neuron has to watch: an H200 pass stops being memory bound at
about 46 SASS instructions per element-step. Issued per element-step, prologue and epilogue
included (sm_90 SASS, ``perf/static_model.py``; bf16, sigmoid, hard reset, layer width), forward
p = 0 / 0 < p < 1, backward p = 0 / 0 < p < 1: at T = 2 12.4 / 26.9 / 29.8 / 39.9, at T = 4
12.8 / 26.1 / 28.3 / 38.0, at T = 8 12.5 / 26.1 / 27.3 / 36.6 (16.0 / 38.6 / 36.4 / 54.6 at T = 4
with a draw per neuron serving 8 steps and one loop for every T, the previous design); the loop's
steady state 14.6 / 26.4 / 28.8 / 38.8. Registers (sm_90, BLOCK_N = 1024, 4 warps): forward 27-76,
backward 40-142 (the unrolled noisy backward at 5 <= T <= 8 holds the most), no spills in any
specialisation (``tests/test_kernel_aot.py``); 16-byte loads/stores of the [T, N] streams when
N % 16 == 0. Launch configuration by N (:func:`_launch_config`); the GPU run is still to confirm it.

The equations are in :func:`lif_fused`; the reference is :func:`asgl.kernels.lif_ref.lif_ref`.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import (
    NOISE_DRAW,
    chunk_words,
    finalize_neuron_scalars,
    lif_step,
    lif_step_grads,
    load_neuron_params,
    p_threshold,
    relaxation_slope,
    round_to,
    row_anchor,
    spike_mode,
    store_spike_mode,
)
from .host import COMPILE_OPTIONS, alloc_like, check_input, kernel_order, neuron_args

# Launch configurations ``(BLOCK_N, num_warps)``, largest first: 8 neurons per thread (one 16-byte
# access per step in bf16, two in fp32) down to BLOCK_N = 256; 128 runs 4 per thread on one warp.
# :func:`_launch_config` takes the largest that still gives two programs per SM.
CONFIGS = ((1024, 4), (512, 2), (256, 1), (128, 1))
# the default SM count where no CUDA device is queried (H100/H200 SXM: 132)
DEFAULT_SMS = 132
FINALIZE_BLOCK = 1024
# T up to this runs fully unrolled (STATIC_T = T, one compiled kernel per T); above, a loop of
# unrolled steps with a guard per step: 8 per iteration forward, 4 backward (at 8 ptxas held some
# backward specialisations at 80 or 96 registers with 8-16 B of spills; at 4 none spill, +0.8
# instructions per element-step)
MAX_STATIC_T = 8
STEPS_PER_ITERATION = tl.constexpr(8)
BWD_STEPS_PER_ITERATION = tl.constexpr(4)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _tile(N, BLOCK_N: tl.constexpr, VEC: tl.constexpr):
    """This program's ``BLOCK_N`` neurons as ``[BLOCK_N // VEC, VEC]``: rows of ``VEC`` consecutive
    flat indices, one thread's vector (one 16-byte access per step in bf16). Returns the int64
    indices, the in-range mask, each row's first index ``[R, 1]`` and the lane ``[1, VEC]`` (the
    Philox groups of :func:`asgl.kernels.common.chunk_words`)."""
    pid = tl.program_id(0).to(tl.int64)
    row0 = pid * BLOCK_N + tl.arange(0, BLOCK_N // VEC)[:, None] * VEC
    lane = tl.arange(0, VEC)[None, :]
    offs_n = row0 + lane
    return offs_n, offs_n < N, row0, lane


@triton.jit
def _tile_sum(acc, in_range):
    """The in-range sum of a ``[R, VEC]`` tile (fixed order)."""
    return tl.sum(tl.sum(tl.where(in_range, acc, 0.0), axis=1), axis=0)


@triton.jit
def _fwd_step(t, x, y_ptr, u_ptr, mask_ptr, v, m, N, offs_n, in_range, lam, theta, k_h, v_reset,
              NOISE: tl.constexpr, SIGMOID: tl.constexpr, HARD_RESET: tl.constexpr,
              STORE_U: tl.constexpr, STORE_MASK: tl.constexpr, FIRST: tl.constexpr):
    """Step ``t`` of the forward from its loaded ``x[t]``: update, store y[t] (and u[t], the mask);
    returns v[t]. ``FIRST``: t = 0 known at compile time, u = x (v[-1] = 0)."""
    offs = tl.cast(t, tl.int64) * N + offs_n
    # round u to the storage dtype and continue from the rounded value, so that the backward,
    # which only sees the stored u, recomputes exactly these decisions
    if FIRST:
        u_stored = round_to(x.to(tl.float32), u_ptr.dtype.element_ty)
    else:
        u_stored = round_to(lam * v + x.to(tl.float32), u_ptr.dtype.element_ty)
    u = u_stored.to(tl.float32)
    o, v, h, z = lif_step(u, theta, k_h, v_reset, m, NOISE, SIGMOID, HARD_RESET)
    tl.store(y_ptr + offs, round_to(theta * o, y_ptr.dtype.element_ty), mask=in_range)
    if STORE_U:
        tl.store(u_ptr + offs, u_stored, mask=in_range)
    if STORE_MASK:
        store_spike_mode(mask_ptr, offs, in_range, m, NOISE)
    return v


@triton.jit(do_not_specialize=["T", "INNER", "C", "p16"])
def _lif_fwd_kernel(
    x_ptr, y_ptr, u_ptr, mask_ptr, decay_logit_ptr, width_ptr, theta_ptr, seed_ptr,
    T, N, INNER, C, v_reset, p16,
    NOISE: tl.constexpr, SIGMOID: tl.constexpr, HARD_RESET: tl.constexpr,
    CHANNEL_WIDTH: tl.constexpr, STORE_U: tl.constexpr, STORE_MASK: tl.constexpr,
    STATIC_T: tl.constexpr, BLOCK_N: tl.constexpr, VEC: tl.constexpr,
):
    offs_n, in_range, row0, lane = _tile(N, BLOCK_N, VEC)
    lam, theta, k = load_neuron_params(decay_logit_ptr, width_ptr, theta_ptr, offs_n, in_range, INNER, C,
                                       SIGMOID, CHANNEL_WIDTH)
    k_h = relaxation_slope(k, SIGMOID)
    seed = tl.load(seed_ptr)
    p_hi = p16.to(tl.uint32) << 16
    v = tl.zeros([BLOCK_N // VEC, VEC], dtype=tl.float32)
    w = tl.zeros([BLOCK_N // VEC, VEC], dtype=tl.uint32)
    m = in_range  # the spike-mode bit, read only when NOISE == 2
    # Each step's x is loaded one step ahead, before this step's stores (which the compiler may not
    # move a load across), so that a load is always in flight behind the step's work.
    x = tl.load(x_ptr + offs_n, mask=in_range, other=0.0)
    if STATIC_T > 0:
        # T == STATIC_T <= 8: every step unrolled, no loop
        for t in tl.static_range(STATIC_T):
            if t + 1 < STATIC_T:
                x_next = tl.load(x_ptr + tl.cast(t + 1, tl.int64) * N + offs_n, mask=in_range, other=0.0)
            if NOISE == 2:
                if t % 2 == 0:  # one draw per 2 steps (asgl.kernels.common)
                    w = chunk_words(seed, t, row0, lane, row_anchor(x), VEC)
                m = spike_mode(w, t, p_hi)
            v = _fwd_step(t, x, y_ptr, u_ptr, mask_ptr, v, m, N, offs_n, in_range, lam, theta, k_h, v_reset,
                          NOISE, SIGMOID, HARD_RESET, STORE_U, STORE_MASK, t == 0)
            if t + 1 < STATIC_T:
                x = x_next
    else:
        # T > 8: 8 steps per iteration, unrolled, so each step reads its 16-bit field with a
        # compile-time shift
        for t0 in range(0, T, STEPS_PER_ITERATION):
            for j in tl.static_range(STEPS_PER_ITERATION):
                if t0 + j < T:
                    t = t0 + j
                    # the scalar test as a [1, 1] tensor: the interpreter cannot mask with a Python bool
                    has_next = in_range & (tl.full([1, 1], t + 1, tl.int32) < T)
                    x_next = tl.load(x_ptr + tl.cast(t + 1, tl.int64) * N + offs_n, mask=has_next, other=0.0)
                    if NOISE == 2:
                        if j % 2 == 0:
                            w = chunk_words(seed, t, row0, lane, row_anchor(x), VEC)
                        m = spike_mode(w, j, p_hi)
                    v = _fwd_step(t, x, y_ptr, u_ptr, mask_ptr, v, m, N, offs_n, in_range, lam, theta, k_h,
                                  v_reset, NOISE, SIGMOID, HARD_RESET, STORE_U, STORE_MASK, False)
                    x = x_next


@triton.jit
def _bwd_step(t, u, dy, dx_ptr, du_next, acc_lam, acc_theta, acc_k, m, N, offs_n, in_range, lam, theta, k, k_h,
              v_reset, NOISE: tl.constexpr, SIGMOID: tl.constexpr, HARD_RESET: tl.constexpr, LAST: tl.constexpr):
    """Step ``t`` of the backward from its loaded ``u[t]``, ``dy[t]`` and the carried ``du[t+1]``:
    recompute, store dx[t]; returns ``du[t]`` and the accumulators. The dλ term of step t+1,
    ``du[t+1]·v[t]``, uses this step's v, so no step is recomputed twice. ``LAST``: t = T - 1 known
    at compile time, whose du[T] = 0 terms are skipped."""
    u = u.to(tl.float32)
    dy = dy.to(tl.float32)
    o, v, h, z = lif_step(u, theta, k_h, v_reset, m, NOISE, SIGMOID, HARD_RESET)
    if LAST:
        dv = du_next  # not read
    else:
        acc_lam += du_next * v
        dv = lam * du_next  # dL/dv[t]
    du, d_theta, d_k = lif_step_grads(dy, theta * dy, u, o, z, h, dv, theta, k, k_h, v_reset, NOISE, SIGMOID,
                                      HARD_RESET, not LAST)
    tl.store(dx_ptr + tl.cast(t, tl.int64) * N + offs_n, round_to(du, dx_ptr.dtype.element_ty), mask=in_range)
    return du, acc_lam, acc_theta + d_theta, acc_k + d_k


@triton.jit(do_not_specialize=["T", "INNER", "C", "p16"])
def _lif_bwd_kernel(
    dy_ptr, u_ptr, dx_ptr, dk_ptr, partial_ptr, decay_logit_ptr, width_ptr, theta_ptr, seed_ptr,
    T, N, INNER, C, v_reset, p16,
    NOISE: tl.constexpr, SIGMOID: tl.constexpr, HARD_RESET: tl.constexpr,
    CHANNEL_WIDTH: tl.constexpr, STATIC_T: tl.constexpr, BLOCK_N: tl.constexpr, VEC: tl.constexpr,
):
    offs_n, in_range, row0, lane = _tile(N, BLOCK_N, VEC)
    lam, theta, k = load_neuron_params(decay_logit_ptr, width_ptr, theta_ptr, offs_n, in_range, INNER, C,
                                       SIGMOID, CHANNEL_WIDTH)
    k_h = relaxation_slope(k, SIGMOID)
    seed = tl.load(seed_ptr)
    p_hi = p16.to(tl.uint32) << 16

    # Reverse in t, each step recomputed from its stored u alone, du[t+1] carried (du[T] = 0). A
    # draw serves steps 2b+1 and 2b, so it runs at the odd one, or at t = T - 1 when T is odd.
    du_next = tl.zeros([BLOCK_N // VEC, VEC], dtype=tl.float32)
    # -0.0, the identity of float addition: the first accumulation folds away
    acc_lam = tl.full([BLOCK_N // VEC, VEC], -0.0, dtype=tl.float32)
    acc_theta = tl.full([BLOCK_N // VEC, VEC], -0.0, dtype=tl.float32)
    acc_k = tl.full([BLOCK_N // VEC, VEC], -0.0, dtype=tl.float32)
    w = tl.zeros([BLOCK_N // VEC, VEC], dtype=tl.uint32)
    m = in_range  # the spike-mode bit, read only when NOISE == 2
    if STATIC_T > 0:
        # T == STATIC_T <= 8: every step unrolled, no loop; the step before's u and dy loaded one
        # step ahead, before this step's store
        offs_last = tl.cast(STATIC_T - 1, tl.int64) * N + offs_n
        u = tl.load(u_ptr + offs_last, mask=in_range, other=0.0)
        dy = tl.load(dy_ptr + offs_last, mask=in_range, other=0.0)
        for t in tl.static_range(STATIC_T - 1, -1, -1):
            if t > 0:
                offs_prev = tl.cast(t - 1, tl.int64) * N + offs_n
                u_prev = tl.load(u_ptr + offs_prev, mask=in_range, other=0.0)
                dy_prev = tl.load(dy_ptr + offs_prev, mask=in_range, other=0.0)
            if NOISE == 2:
                if (t % 2 == 1) | (t == STATIC_T - 1):
                    w = chunk_words(seed, t, row0, lane, row_anchor(u), VEC)
                m = spike_mode(w, t, p_hi)
            du_next, acc_lam, acc_theta, acc_k = _bwd_step(
                t, u, dy, dx_ptr, du_next, acc_lam, acc_theta, acc_k, m, N, offs_n, in_range, lam, theta, k, k_h,
                v_reset, NOISE, SIGMOID, HARD_RESET, t == STATIC_T - 1)
            if t > 0:
                u, dy = u_prev, dy_prev
    else:
        # T > 8: 4 steps per iteration, unrolled, in reverse; each step loads its own u and dy (one
        # step ahead, the loop's registers reached 96 and spilled 8-16 B in some specialisations)
        if NOISE == 2:
            if T % 2 == 1:
                u_last = tl.load(u_ptr + tl.cast(T - 1, tl.int64) * N + offs_n, mask=in_range, other=0.0)
                w = chunk_words(seed, T - 1, row0, lane, row_anchor(u_last), VEC)
        n_iter = tl.cdiv(T, BWD_STEPS_PER_ITERATION)
        for ib in range(0, n_iter):
            t0 = (n_iter - 1 - ib) * BWD_STEPS_PER_ITERATION
            for j in tl.static_range(BWD_STEPS_PER_ITERATION - 1, -1, -1):
                if t0 + j < T:
                    t = t0 + j
                    offs_t = tl.cast(t, tl.int64) * N + offs_n
                    u = tl.load(u_ptr + offs_t, mask=in_range, other=0.0)
                    dy = tl.load(dy_ptr + offs_t, mask=in_range, other=0.0)
                    if NOISE == 2:
                        if j % 2 == 1:
                            w = chunk_words(seed, t, row0, lane, row_anchor(u), VEC)
                        m = spike_mode(w, j, p_hi)
                    du_next, acc_lam, acc_theta, acc_k = _bwd_step(
                        t, u, dy, dx_ptr, du_next, acc_lam, acc_theta, acc_k, m, N, offs_n, in_range, lam, theta, k,
                        k_h, v_reset, NOISE, SIGMOID, HARD_RESET, False)

    # Parameter gradients, stage 1 of 2: one partial sum per program (and, for channel widths, one
    # per neuron, summed over T here); stage 2 is :func:`_finalize_kernel`. Deterministic (no
    # atomics, fixed summation order); the price is 3 floats per program, plus, for channel widths,
    # 8 B per neuron (written here, read by the finalize) against 12·T B per neuron in the main
    # loops (bf16): +17% at T = 4, +3% at T = 25. Atomics would save that but make dk run-to-run noisy.
    nprog = tl.num_programs(0)
    pid = tl.program_id(0)
    tl.store(partial_ptr + pid, _tile_sum(acc_lam, in_range))
    tl.store(partial_ptr + nprog + pid, _tile_sum(acc_theta, in_range))
    if CHANNEL_WIDTH:
        tl.store(dk_ptr + offs_n, acc_k, mask=in_range)
    else:
        tl.store(partial_ptr + 2 * nprog + pid, _tile_sum(acc_k, in_range))


@triton.jit
def _finalize_kernel(
    partial_ptr, dk_ptr, decay_logit_ptr, width_ptr, d_decay_ptr, d_width_ptr, d_theta_ptr, NPROG, C,
    SIGMOID: tl.constexpr, CHANNEL_WIDTH: tl.constexpr, BLOCK: tl.constexpr,
):
    """Stage 2 of the parameter gradients and their chain rule, in one program.

    Sums the backward's per-program partials in a fixed order (``BLOCK``-wide chunks, then a tree
    sum) and writes ``d decay_logit = dλ·λ(1-λ)``, ``dθ`` and ``d width_param = dk`` (sigmoid) or
    ``dk·k`` (rectangle, which stores log k), in the parameters' dtypes. For a channel width ``dk``
    is the ``[C]`` per-channel sum (``dk_ptr``); for a layer width it is the third row of partials.
    """
    finalize_neuron_scalars(partial_ptr, NPROG, decay_logit_ptr, width_ptr, d_decay_ptr, d_width_ptr, d_theta_ptr,
                            SIGMOID, CHANNEL_WIDTH, BLOCK)
    if CHANNEL_WIDTH:
        offs = tl.arange(0, BLOCK)
        for c0 in range(0, C, BLOCK):
            live_c = c0 + offs < C
            dk = tl.load(dk_ptr + c0 + offs, mask=live_c, other=0.0)
            if not SIGMOID:
                dk = dk * tl.exp(tl.load(width_ptr + c0 + offs, mask=live_c, other=0.0).to(tl.float32))
            tl.store(d_width_ptr + c0 + offs, dk.to(d_width_ptr.dtype.element_ty), mask=live_c)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _flat(t: Tensor, perm) -> Tensor:
    """The ``[T, N]`` kernel view of ``t`` in the permuted order ``perm`` (no copy when dense)."""
    return t.permute(perm).contiguous().view(t.shape[0], -1)


def _channel_geometry(x: Tensor, perm, channel_width: bool):
    if not channel_width:
        return 1, 1
    C = x.shape[2]
    if perm[-1] == 2 and x.dim() >= 4:
        return 1, C
    return math.prod(x.shape[3:]), C


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return DEFAULT_SMS


def _launch_config(N: int, device: torch.device) -> tuple[int, int]:
    """``(BLOCK_N, num_warps)``: the largest of :data:`CONFIGS` whose grid still has two programs per
    SM (the T loop is serial, so neurons in flight are the only latency hiding), else the smallest.
    On a 132-SM H200: N >= 2^18 takes 1024, N = 2^16 takes 128 (512 programs)."""
    want = 2 * _sm_count(device)
    for block_n, num_warps in CONFIGS:
        if triton.cdiv(N, block_n) >= want:
            return block_n, num_warps
    return CONFIGS[-1]


def _vec(block_n: int, num_warps: int, itemsize: int) -> int:
    """The kernels' ``VEC``: neurons per row of a tile, one thread's 16-byte vector (8 in 16-bit
    dtypes, 4 in float32; a row wider than that would span two threads, which would then both draw
    its Philox groups), at most the thread's share of ``BLOCK_N``."""
    return min(block_n // (32 * num_warps), 16 // itemsize)


def _static_t(T: int) -> int:
    """The kernels' ``STATIC_T``: T itself up to :data:`MAX_STATIC_T` (unrolled), else 0 (a loop)."""
    return T if T <= MAX_STATIC_T else 0


def _launch_fwd(x, decay_logit, width_param, thresh, *, hard_reset, v_reset, sigmoid, noise, p, seed,
                store_u, store_mask):
    y = alloc_like(x)
    u = alloc_like(x) if store_u else x.new_empty(0)
    # bool in memory, written by the kernel as int8 through a view (no cast kernel afterwards)
    mask = alloc_like(x, torch.bool) if store_mask else x.new_empty(0, dtype=torch.bool)
    T = x.shape[0]
    N = x.numel() // T if T else 0
    if x.numel() == 0:
        return y, u, mask
    perm = kernel_order(x) or tuple(range(x.dim()))
    channel_width = width_param.dim() == 1
    INNER, C = _channel_geometry(x, perm, channel_width)
    x_k = _flat(x, perm)
    y_k = y.permute(perm).view(T, N)
    u_k = u.permute(perm).view(T, N) if store_u else y_k
    m_k = mask.view(torch.int8).permute(perm).view(T, N) if store_mask else y_k
    block_n, num_warps = _launch_config(N, x.device)
    _lif_fwd_kernel[(triton.cdiv(N, block_n),)](
        x_ptr=x_k, y_ptr=y_k, u_ptr=u_k, mask_ptr=m_k, decay_logit_ptr=decay_logit,
        width_ptr=width_param.contiguous(), theta_ptr=thresh, seed_ptr=seed, T=T, N=N, INNER=INNER, C=C,
        v_reset=v_reset, p16=p_threshold(p) if noise == NOISE_DRAW else 0, NOISE=noise, SIGMOID=sigmoid,
        HARD_RESET=hard_reset, CHANNEL_WIDTH=channel_width, STORE_U=store_u, STORE_MASK=store_mask,
        STATIC_T=_static_t(T), BLOCK_N=block_n, VEC=_vec(block_n, num_warps, x.element_size()),
        num_warps=num_warps, **COMPILE_OPTIONS,
    )
    return y, u, mask


def _launch_bwd(dy, u, decay_logit, width_param, thresh, *, hard_reset, v_reset, sigmoid, noise, p, seed):
    """``(dx, d decay_logit, d width_param, dθ)``: dx like u, the others like their parameters.

    Two launches whatever the options (three for a channel-wise width, whose per-neuron ``dk`` is
    summed per channel by one torch reduction in between): the backward kernel and
    :func:`_finalize_kernel`.
    """
    dx = alloc_like(u)
    d_decay = torch.empty_like(decay_logit)
    d_width = torch.empty_like(width_param, memory_format=torch.contiguous_format)
    d_theta = torch.empty_like(thresh)
    T = u.shape[0]
    N = u.numel() // T if T else 0
    channel_width = width_param.dim() == 1
    if u.numel() == 0:
        return dx, d_decay.zero_(), d_width.zero_(), d_theta.zero_()
    perm = kernel_order(u) or tuple(range(u.dim()))
    INNER, C = _channel_geometry(u, perm, channel_width)
    u_k = u.permute(perm).view(T, N)
    dy_k = _flat(dy.to(u.dtype), perm)
    dx_k = dx.permute(perm).view(T, N)
    block_n, num_warps = _launch_config(N, u.device)
    nprog = triton.cdiv(N, block_n)
    # rows: dλ, dθ and (layer width) dk partial sums, one column per program
    partial = torch.empty((2 if channel_width else 3, nprog), dtype=torch.float32, device=u.device)
    dk_elem = torch.empty(N if channel_width else 0, dtype=torch.float32, device=u.device)
    width = width_param.contiguous()
    _lif_bwd_kernel[(nprog,)](
        dy_ptr=dy_k, u_ptr=u_k, dx_ptr=dx_k, dk_ptr=dk_elem if channel_width else partial,
        partial_ptr=partial, decay_logit_ptr=decay_logit, width_ptr=width, theta_ptr=thresh, seed_ptr=seed,
        T=T, N=N, INNER=INNER, C=C, v_reset=v_reset, p16=p_threshold(p) if noise == NOISE_DRAW else 0,
        NOISE=noise, SIGMOID=sigmoid, HARD_RESET=hard_reset, CHANNEL_WIDTH=channel_width, STATIC_T=_static_t(T),
        BLOCK_N=block_n, VEC=_vec(block_n, num_warps, u.element_size()), num_warps=num_warps, **COMPILE_OPTIONS,
    )
    dk_channel = dk_elem.view(-1, C, INNER).sum(dim=(0, 2)) if channel_width else partial
    _finalize_kernel[(1,)](
        partial_ptr=partial, dk_ptr=dk_channel, decay_logit_ptr=decay_logit, width_ptr=width,
        d_decay_ptr=d_decay, d_width_ptr=d_width, d_theta_ptr=d_theta, NPROG=nprog, C=C, SIGMOID=sigmoid,
        CHANNEL_WIDTH=channel_width, BLOCK=FINALIZE_BLOCK, num_warps=4, **COMPILE_OPTIONS,
    )
    return dx, d_decay, d_width, d_theta


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.compile traces them without graph breaks) and their autograd
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("asgl::lif_fwd", mutates_args=())
def _lif_fwd_op(
    x_seq: Tensor, decay_logit: Tensor, width_param: Tensor, thresh: Tensor, hard_reset: bool,
    v_reset: float, sigmoid: bool, noise: int, p: float, seed: Tensor, store_u: bool, store_mask: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    return _launch_fwd(
        x_seq, decay_logit, width_param, thresh, hard_reset=hard_reset, v_reset=v_reset,
        sigmoid=sigmoid, noise=noise, p=p, seed=seed, store_u=store_u, store_mask=store_mask,
    )


@_lif_fwd_op.register_fake
def _(x_seq, decay_logit, width_param, thresh, hard_reset, v_reset, sigmoid, noise, p, seed, store_u,
      store_mask):
    u = alloc_like(x_seq) if store_u else x_seq.new_empty(0)
    mask = alloc_like(x_seq, torch.bool) if store_mask else x_seq.new_empty(0, dtype=torch.bool)
    return alloc_like(x_seq), u, mask


@torch.library.custom_op("asgl::lif_bwd", mutates_args=())
def _lif_bwd_op(
    dy_seq: Tensor, u_seq: Tensor, decay_logit: Tensor, width_param: Tensor, thresh: Tensor,
    hard_reset: bool, v_reset: float, sigmoid: bool, noise: int, p: float, seed: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _launch_bwd(
        dy_seq, u_seq, decay_logit, width_param, thresh, hard_reset=hard_reset, v_reset=v_reset,
        sigmoid=sigmoid, noise=noise, p=p, seed=seed,
    )


@_lif_bwd_op.register_fake
def _(dy_seq, u_seq, decay_logit, width_param, thresh, hard_reset, v_reset, sigmoid, noise, p, seed):
    return (
        alloc_like(u_seq), torch.empty_like(decay_logit),
        torch.empty_like(width_param, memory_format=torch.contiguous_format), torch.empty_like(thresh),
    )


_SETTINGS = ("hard_reset", "v_reset", "sigmoid", "noise", "p")


def _setup_context(ctx, inputs, output):
    x_seq, decay_logit, width_param, thresh, hard_reset, v_reset, sigmoid, noise, p, seed, _, _ = inputs
    ctx.save_for_backward(output[1], decay_logit, width_param, thresh, seed)
    ctx.settings = dict(zip(_SETTINGS, (hard_reset, v_reset, sigmoid, noise, p)))
    # u and the mask carry no gradient: no zero-filled [T, N] gradient for them in every backward
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.set_materialize_grads(False)


def _backward(ctx, dy_seq, du_unused, dmask_unused):
    u_seq, decay_logit, width_param, thresh, seed = ctx.saved_tensors
    if dy_seq is None:
        return (None,) * 12
    if u_seq.numel() == 0 and dy_seq.numel() != 0:
        raise RuntimeError("lif_fused: backward through a forward that stored no membrane (store_u=False)")
    dx, d_decay_logit, d_width, d_thresh = _lif_bwd_op(
        dy_seq, u_seq, decay_logit, width_param, thresh, seed=seed, **ctx.settings
    )
    need = ctx.needs_input_grad
    return (
        dx if need[0] else None,
        d_decay_logit if need[1] else None,
        d_width if need[2] else None,
        d_thresh if need[3] else None,
    ) + (None,) * 8


_lif_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def output_from_saved(ctx) -> Tensor:
    """The forward's ``y_seq`` once more, from the membrane ``u`` its backward keeps (``ctx``: the op's
    autograd node, see :func:`_setup_context`), by the forward kernel itself: with the leak λ = 0
    (``decay_logit = -inf``) and ``u`` as input, the kernel's ``u[t] = round(λ·v + x[t])`` is the stored
    u exactly, and the threshold, relaxation, mask draw (same seed, step and element) and output
    rounding are the forward's, so ``y`` comes out bit-identical. What :mod:`asgl.memory` calls to
    give a consumer of ``y`` its saved input back without keeping it."""
    u_seq, decay_logit, width_param, thresh, seed = ctx.saved_tensors
    s = ctx.settings
    no_leak = torch.full_like(decay_logit, -math.inf)
    y_seq, _, _ = _lif_fwd_op(u_seq, no_leak, width_param, thresh, s["hard_reset"], s["v_reset"], s["sigmoid"],
                              s["noise"], s["p"], seed, False, False)
    return y_seq


# ---------------------------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------------------------


def lif_fused(
    x_seq: Tensor,
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
    """Fused multi-step ASGL LIF, ``x_seq [T, B, ...] -> y_seq`` (same shape and dtype).

    Computes :func:`asgl.kernels.lif_ref.lif_ref` in two kernels (forward over all T, backward over all
    T in reverse). For t = 0..T-1, v[-1] = 0, λ = sigmoid(decay_logit), k the slope::

        u[t] = round_dtype(λ·v[t-1] + x[t])         stored for backward (the only saved tensor)
        z = u - θ;  S = 1[z >= 0];  H = sigmoid(k·z) | clamp(k·z + 1/2, 0, 1)
        o = m·S + (1-m)·H,  m = 1[r16(seed, t, n) >= p16]     (eval: o = S)
        v[t] = u(1-o) + v_r·o  (hard)  |  u - θ·o  (soft);     y[t] = θ·o

    Backward (reverse in t, g = dL/dv[t] carried, H' = ∂H/∂z)::

        do = θ·dy + g·(v_r - u | -θ);   dz = do·H';   du = dz + g·(1 - o | 1)
        dx[t] = du;  g <- λ·du;  dλ += du·v[t-1];  dθ += dy·o - dz (- g·o for soft);
        dk += do·∂H/∂k   (sigmoid: H(1-H)·z; rectangle: z where 0 <= k·z + 1/2 <= 1)
        d decay_logit = dλ·λ(1-λ);  d width_param = dk (sigmoid) | dk·k (rectangle, stores log k)

    ``u`` is rounded to the input dtype every step and the recurrence continues from the rounded
    value, so the backward (which only sees the stored u) recomputes the forward's spike decisions
    exactly; for float32 the rounding is a no-op. ``r16`` is a 16-bit Philox uniform and
    ``p16 = round(p·65536)`` (clamped to [1, 65535] for 0 < p < 1): the analog-mode probability
    has a resolution of 1.5e-5 (:mod:`asgl.kernels.common`).

    Args:
        x_seq: ``[T, B, ...]`` float32/float16/bfloat16 (channels-last memory runs without a copy).
        decay_logit: 0-dim tensor.
        width_param: 0-dim (one width per layer) or ``[C]`` with ``C = x_seq.shape[2]``.
        thresh: θ, a Python float or a 0-dim tensor (which may require grad).
        reset, v_reset, surrogate, p, training: as in :func:`asgl.kernels.lif_ref.lif_ref`.
        seed: ``0 <= seed < 2**31``, an int or a one-element int64 tensor on ``x_seq``'s device;
            with ``0 < p < 1`` it keys the in-kernel Philox draws. A tensor seed (what
            :func:`asgl.functional.draw_seed` gives) is read by the kernel, so neither eager mode
            nor ``torch.compile`` syncs with the host or breaks the graph, and a captured CUDA graph
            draws a fresh seed on every replay.
        return_mask: also return the bool spike-mode mask (``True`` = spike mode), shaped like
            ``x_seq``; for tests that replay it through ``lif_ref(..., mask=mask)``.

    Returns:
        ``y_seq``, or ``(y_seq, mask)`` with ``return_mask=True``.
    """
    check_input(x_seq, "x_seq")
    if x_seq.dim() < 2:
        raise ValueError(f"x_seq must be [T, B, ...] with at least 2 dims, got shape {tuple(x_seq.shape)}")
    channels = x_seq.shape[2] if x_seq.dim() >= 3 else None
    if isinstance(width_param, Tensor) and width_param.dim() == 1 and channels is None:
        raise ValueError(f"a channel-wise width_param needs x_seq with a channel dim 2, got {tuple(x_seq.shape)}")
    thresh, seed, p, noise = neuron_args(
        x_seq, decay_logit, width_param, {()} | ({(channels,)} if channels else set()), thresh,
        reset=reset, surrogate=surrogate, p=p, training=training, seed=seed,
    )
    T = x_seq.shape[0]
    if T and x_seq.numel() // T >= 2**31:
        raise ValueError(f"x_seq has {x_seq.numel() // T} elements per time step; at most 2**31 - 1 are supported")

    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (x_seq, decay_logit, width_param, thresh)
    )
    y_seq, _, mask = _lif_fwd_op(
        x_seq, decay_logit, width_param, thresh, reset == "hard", float(v_reset),
        surrogate == "sigmoid", noise, p, seed, needs_grad, return_mask,
    )
    return (y_seq, mask) if return_mask else y_seq
