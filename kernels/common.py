"""``@triton.jit`` helpers shared by the fused neuron kernels (``asgl.kernels.lif``, ``.bn_lif``, ``.rlif``).

Everything here runs on float32 registers. The equations are those of :mod:`asgl.kernels.lif_ref`
(``docs/ASGL.md`` §1–2); the helpers exist so that the forward kernel and the recomputation in
the backward kernel execute the *same* instructions in the same order, which is what makes the
recomputed spike decisions bit-identical to the forward ones.

Noise modes (constexpr ``NOISE``):

* ``NOISE_NONE`` (0): ``o = S`` (eval, or training with p = 0): nothing is drawn.
* ``NOISE_ALL`` (1): ``o = H`` (training with p = 1): nothing is drawn.
* ``NOISE_DRAW`` (2): ``o = m·S + (1-m)·H`` with the spike-mode bit ``m = 1[r >= p16]``, ``r`` a
  16-bit uniform from Philox.

RNG keying and resolution. One Philox-4x32 call (``tl.randint4x``) gives 128 bits: eight 16-bit
uniforms ``r ∈ {0, …, 65535}``, which serve ``ELEMENTS_PER_DRAW = 4`` consecutive elements over
``STEPS_PER_DRAW = 2`` consecutive steps. Element ``n`` (its flat index within one step, ``0 <= n <
N < 2**31``) at step ``t`` reads word ``n % 4`` of the call keyed by ``seed + ((t // 2) << 32)`` (the
pair ``(lo, hi) = (seed, t // 2)``) with counter ``n // 4``, and within that word its 16 bits
``16·(t % 2) .. 16·(t % 2) + 15`` (the low half at even t). So the draw is a pure function of
``(seed, t, n)``: distinct ``(t, n)`` map to distinct ``(key, counter, word, half)`` for any ``T·N``
(a seed below ``2**31`` never carries into the high word), every kernel draws the same mask for the
same seed and kernel-order layout whatever its tiling or T, and a backward redraws its forward's
mask. One call costs about 55 SASS instructions; shared by 4 elements × 2 steps it is 1/8 of a call
per element-step at every even T, T = 2 included (a call per element serving 8 steps, the previous
keying, paid a whole call for 2 or 4 steps at the recipes' T = 2 and 4). A kernel shares a call
between the 4 elements of a group when one thread holds them (:func:`chunk_words`); otherwise each
element draws the call of its group itself (:func:`element_words`, 4 times the work, same words).
The analog-mode probability is quantised to ``p16 / 65536`` with ``p16 = round(p·65536)`` clamped
to ``[1, 65535]`` for ``0 < p < 1`` (:func:`p_threshold`): a resolution of 1.5e-5, far below what
any schedule sets (the annealed p of the recipes stays above 1e-3).

Interpreter and GPU. ``INTERPRET`` (set when ``TRITON_INTERPRET=1`` at import) picks exact but
slower code where the interpreter would not be faithful or cannot run GPU code: the bfloat16
rounding by bit arithmetic (the interpreter's float32 -> bfloat16 cast truncates; on a GPU the
native ``cvt.rn.bf16x2.f32`` rounds two values to nearest even in one instruction) and the sigmoid
from ``exp2``/division (on a GPU ``ex2.approx.ftz`` and ``rcp.approx.ftz``: 2 MUFU instructions and
2 FP32 ones instead of 11, within 2 ulp like ``div.full``).
"""

import os

import triton
import triton.language as tl

INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")
STEPS_PER_DRAW = tl.constexpr(2)
ELEMENTS_PER_DRAW = tl.constexpr(4)
LOG2E = tl.constexpr(1.4426950408889634)

NOISE_NONE = 0
NOISE_ALL = 1
NOISE_DRAW = 2


def p_threshold(p: float) -> int:
    """``p16``: the 16-bit threshold of the spike-mode draw ``m = 1[r >= p16]`` for ``0 < p < 1``,
    so that P(analog mode) = p16 / 65536 (both modes stay possible)."""
    return min(max(round(p * 65536), 1), 65535)


@triton.jit
def round_to(x, DTYPE: tl.constexpr, PAIRED: tl.constexpr = True):
    """``x`` (float32) rounded to nearest-even in ``DTYPE``, returned in ``DTYPE``.

    On a GPU a 16-bit dtype is rounded two values per instruction with ``PAIRED``
    (``cvt.rn.bf16x2.f32`` / ``cvt.rn.f16x2.f32``: one ``F2FP`` where single conversions cost two
    ``F2F`` and a ``PRMT`` to pack them; the feed-forward kernels' rows hold consecutive pairs). The
    recurrent kernel's tiles are laid out for its product, where pairing cost registers (sm_90
    forward at p = 0: 118 against 80): it converts one value at a time. Under the interpreter, whose
    float32 -> bfloat16 cast truncates, bfloat16 is rounded on the bits, which gives the same value
    (the final cast of an already representable value is exact either way). Finite values only.
    """
    if INTERPRET:
        if DTYPE == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = bits + 0x7FFF + ((bits >> 16) & 1)
            y = ((bits >> 16) << 16).to(tl.float32, bitcast=True).to(tl.bfloat16)
        else:
            y = x.to(DTYPE)
    elif PAIRED and DTYPE == tl.bfloat16:
        y = tl.inline_asm_elementwise("cvt.rn.bf16x2.f32 $0, $2, $1;", "=r,r,r", [x], dtype=tl.bfloat16,
                                      is_pure=True, pack=2)
    elif PAIRED and DTYPE == tl.float16:
        y = tl.inline_asm_elementwise("cvt.rn.f16x2.f32 $0, $2, $1;", "=r,r,r", [x], dtype=tl.float16,
                                      is_pure=True, pack=2)
    else:
        y = x.to(DTYPE)
    return y


@triton.jit
def sigmoid_exp2(x2):
    """``1 / (1 + 2^x2)``, i.e. ``sigmoid(-x2·ln 2)``, in float32 (``ex2.approx.ftz``,
    ``rcp.approx.ftz`` on a GPU)."""
    if INTERPRET:
        y = 1.0 / (1.0 + tl.exp2(x2))
    else:
        e = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x2], dtype=tl.float32,
                                      is_pure=True, pack=1)
        y = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [1.0 + e], dtype=tl.float32,
                                      is_pure=True, pack=1)
    return y


@triton.jit
def sigmoid_f32(x):
    """``1 / (1 + exp(-x))`` in float32 (see :func:`sigmoid_exp2`)."""
    return sigmoid_exp2(x * -LOG2E)


@triton.jit
def load_neuron_params(decay_logit_ptr, width_ptr, theta_ptr, offs_n, in_range, INNER, C,
                       SIGMOID: tl.constexpr, CHANNEL_WIDTH: tl.constexpr):
    """λ = sigmoid(decay_logit), θ and the slope k (sigmoid: width_param; rectangle: exp of it).

    A channel-wise width is gathered per element: channel ``(n // INNER) % C`` of flat index n.
    """
    lam = sigmoid_f32(tl.load(decay_logit_ptr).to(tl.float32))
    theta = tl.load(theta_ptr).to(tl.float32)
    if CHANNEL_WIDTH:
        channel = (offs_n // INNER) % C
        wp = tl.load(width_ptr + channel, mask=in_range, other=0.0).to(tl.float32)
    else:
        wp = tl.load(width_ptr).to(tl.float32)
    if SIGMOID:
        k = wp
    else:
        k = tl.exp(wp)
    return lam, theta, k


@triton.jit
def relaxation_slope(k, SIGMOID: tl.constexpr):
    """``k_h``, the slope as :func:`relaxation` takes it: sigmoid ``-k·log2(e)``, so that
    ``H(z) = 1 / (1 + 2^(k_h·z))`` costs one multiplication; rectangle k."""
    if SIGMOID:
        k_h = k * -LOG2E
    else:
        k_h = k
    return k_h


@triton.jit
def finalize_neuron_scalars(partial_ptr, NPROG, decay_logit_ptr, width_ptr, d_decay_ptr, d_width_ptr, d_theta_ptr,
                            SIGMOID: tl.constexpr, CHANNEL_WIDTH: tl.constexpr, BLOCK: tl.constexpr):
    """The neuron's scalar gradients from a backward's per-program partials ``partial [rows, NPROG]``
    (rows dλ, dθ and, for a layer width, dk), summed in a fixed order (``BLOCK``-wide chunks, then a
    tree sum), with their chain rule, in the parameters' dtypes: ``d decay_logit = dλ·λ(1-λ)``,
    ``dθ``, and for a layer width ``d width_param = dk`` (sigmoid) or ``dk·k`` (rectangle, which
    stores log k). A channel width's ``[C]`` gradient is the caller's."""
    offs = tl.arange(0, BLOCK)
    acc_lam = tl.zeros([BLOCK], dtype=tl.float32)
    acc_theta = tl.zeros([BLOCK], dtype=tl.float32)
    acc_k = tl.zeros([BLOCK], dtype=tl.float32)
    for i0 in range(0, NPROG, BLOCK):
        live = i0 + offs < NPROG
        acc_lam += tl.load(partial_ptr + i0 + offs, mask=live, other=0.0)
        acc_theta += tl.load(partial_ptr + NPROG + i0 + offs, mask=live, other=0.0)
        if not CHANNEL_WIDTH:
            acc_k += tl.load(partial_ptr + 2 * NPROG + i0 + offs, mask=live, other=0.0)
    lam = sigmoid_f32(tl.load(decay_logit_ptr).to(tl.float32))
    tl.store(d_decay_ptr, (tl.sum(acc_lam, axis=0) * (lam * (1.0 - lam))).to(d_decay_ptr.dtype.element_ty))
    tl.store(d_theta_ptr, tl.sum(acc_theta, axis=0).to(d_theta_ptr.dtype.element_ty))
    if not CHANNEL_WIDTH:
        dk = tl.sum(acc_k, axis=0)
        if not SIGMOID:
            dk = dk * tl.exp(tl.load(width_ptr).to(tl.float32))
        tl.store(d_width_ptr, dk.to(d_width_ptr.dtype.element_ty))


@triton.jit
def philox4x32(c0, k0, k1, WIDE: tl.constexpr):
    """Philox-4x32-10 of the counter ``(c0, 0, 0, 0)`` (uint32 tensor) under the key ``(k0, k1)``
    (uint32 scalars): the function ``tl.randint4x`` computes. ``WIDE`` writes each product as one
    32x32->64-bit multiplication (``mul.wide.u32``: one ``IMAD.WIDE.U32`` for both halves, where
    ``umulhi`` and a low product compile to ``IMAD.HI`` and ``IMAD``; about 40 SASS instructions a
    call instead of 55), at the price of a register pair per product: for the draws on a
    ``[..., 1]`` row tensor (a few calls per thread). Where every element draws (the recurrent
    kernel, unaligned BN+LIF tiles: 16 calls per thread in flight) the products stay 32-bit."""
    c1 = tl.zeros_like(c0)
    c2 = tl.zeros_like(c0)
    c3 = tl.zeros_like(c0)
    for _ in tl.static_range(10):
        if WIDE:
            p0 = c0.to(tl.uint64) * 0xD2511F53
            p2 = c2.to(tl.uint64) * 0xCD9E8D57
            hi0, lo0 = (p0 >> 32).to(tl.uint32), p0.to(tl.uint32)
            hi2, lo2 = (p2 >> 32).to(tl.uint32), p2.to(tl.uint32)
        else:
            hi0, lo0 = tl.umulhi(c0, 0xD2511F53), c0 * 0xD2511F53
            hi2, lo2 = tl.umulhi(c2, 0xCD9E8D57), c2 * 0xCD9E8D57
        c0 = hi2 ^ c1 ^ k0
        c2 = hi0 ^ c3 ^ k1
        c1 = lo2
        c3 = lo0
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    return c0, c1, c2, c3


@triton.jit
def layout_anchor(x):
    """An int32 zero that depends on ``x``, to add to the Philox counters of a draw.

    Triton lays out the values that derive from a load like the load (a row of ``VEC`` neurons per
    thread) but may give a chain that starts from ``tl.arange`` alone, like a draw's counters, its
    default layout (triton 3.6 does: the draw then runs 8 times per thread, its spike-mode bits
    cross to the load's layout through shared memory, and the noisy forward at T = 4 issued 73.7
    instructions per element-step instead of 26); deriving the counters from a loaded value puts the
    draw in the load's layout. On a GPU the zero is an opaque ``mov`` (ptxas folds the add and drops
    the dependency: no instruction left); the interpreter has no layouts.
    """
    if INTERPRET:
        zero = 0
    else:
        zero = tl.inline_asm_elementwise("mov.b32 $0, 0;", "=r,r", [x.to(tl.float32).to(tl.int32, bitcast=True)],
                                         dtype=tl.int32, is_pure=True, pack=1)
    return zero


@triton.jit
def _first(a, b):
    return a


@triton.jit
def row_anchor(x):
    """:func:`layout_anchor` of each row of ``x`` (its last dim, in one thread), shaped like ``x`` with
    a last dim of 1: the row's first element, which the reduction picks in registers at no cost.
    Under the interpreter (no layouts) a plain 0: there a reduction with a combine function of ours
    runs element by element in Python (it made the interpreted kernels up to 10 times slower)."""
    if INTERPRET:
        anchor = 0
    else:
        anchor = layout_anchor(tl.reduce(x, len(x.shape) - 1, _first, keep_dims=True))
    return anchor


@triton.jit
def draw_words(seed, t, counter, WIDE: tl.constexpr):
    """The four Philox words of the call ``(seed, t // 2, counter)`` (``counter`` int32): word e serves
    element ``4·counter + e`` at steps ``2·(t // 2)`` and ``2·(t // 2) + 1``. The key
    ``seed + ((t // 2) << 32)`` of ``tl.randint4x`` is the pair ``(seed, t // 2)`` (seed < 2**31).
    ``WIDE``: see :func:`philox4x32`."""
    k0 = tl.cast(seed, tl.uint32)
    k1 = tl.cast(t // STEPS_PER_DRAW, tl.uint32)
    return philox4x32(counter.to(tl.uint32, bitcast=True), k0, k1, WIDE)


@triton.jit
def _word_of(w0, w1, w2, w3, e):
    """Word ``e`` (0..3, per element) of a call."""
    return tl.where(e == 0, w0, tl.where(e == 1, w1, tl.where(e == 2, w2, w3)))


@triton.jit
def chunk_words(seed, t, row0, lane, anchor, VEC: tl.constexpr):
    """Each element's word of step ``t``'s draw, for a tile whose last dim holds ``VEC`` consecutive
    elements of one thread (a row) that start at the flat index ``row0`` (int64, shaped like the tile
    with a last dim of 1), a multiple of ``min(VEC, 4)``; ``lane`` is the position in the row (a last
    dim of ``VEC``; ``anchor`` the :func:`row_anchor` of a value loaded in the tile's layout). The
    Philox calls run on the ``[..., 1]`` tensor and their words broadcast along the row: one call per
    4 elements when ``VEC`` is a multiple of 4 (``lane`` is a compile-time constant per register, so
    the selects fold), one per row of 2 when ``VEC`` is 2 (both rows of a group draw it)."""
    if VEC >= ELEMENTS_PER_DRAW:
        group0 = (row0 // ELEMENTS_PER_DRAW).to(tl.int32) + anchor
        for g in tl.static_range(VEC // ELEMENTS_PER_DRAW):
            w0, w1, w2, w3 = draw_words(seed, t, group0 + g, True)
            wg = _word_of(w0, w1, w2, w3, lane % ELEMENTS_PER_DRAW)
            if g == 0:
                w = wg
            else:
                w = tl.where(lane // ELEMENTS_PER_DRAW == g, wg, w)
    else:
        w0, w1, w2, w3 = draw_words(seed, t, (row0 // ELEMENTS_PER_DRAW).to(tl.int32) + anchor, True)
        w = _word_of(w0, w1, w2, w3, row0 % ELEMENTS_PER_DRAW + lane)
    return w


@triton.jit
def element_words(seed, t, n, anchor):
    """Each element's word of step ``t``'s draw for any flat indices ``n`` (int64): every element
    computes its group's call (4 times the work of :func:`chunk_words`, the same words); ``anchor``
    the :func:`layout_anchor` of a value loaded in the tile's layout (0 where layouts do not matter)."""
    n32 = n.to(tl.int32)  # n < 2**31: 32-bit arithmetic
    w0, w1, w2, w3 = draw_words(seed, t, n32 // ELEMENTS_PER_DRAW + anchor, False)
    return _word_of(w0, w1, w2, w3, n32 % ELEMENTS_PER_DRAW)


@triton.jit
def spike_mode(w, t, p_hi):
    """Spike-mode bit ``1[r >= p16]`` of step ``t`` from its element's word ``w``: r is the high half
    at odd t, the low half at even t.

    ``p_hi = p16 << 16`` (uint32): the high half compares as the word itself and the low one as the
    word shifted up by 16 bits, one instruction each with no extraction (the low bits of a
    high-half compare cannot turn ``r < p16`` into ``>=``: ``r·2^16 + low < p16·2^16`` when
    ``r < p16``). ``t`` may be a compile-time or a run-time step.
    """
    return (w << (16 - 16 * (t % 2))) >= p_hi


@triton.jit
def relaxation(z, k_h, SIGMOID: tl.constexpr):
    """``H(z)``: ``sigmoid(k·z) = 1 / (1 + 2^(k_h·z))`` with ``k_h = -k·log2(e)``, or
    ``clamp(k·z + 1/2, 0, 1)`` with ``k_h = k`` (see :func:`load_neuron_params`)."""
    if SIGMOID:
        h = sigmoid_exp2(k_h * z)
    else:
        h = tl.minimum(tl.maximum(k_h * z + 0.5, 0.0), 1.0)
    return h


@triton.jit
def relaxation_grads(do, z, k, h, SIGMOID: tl.constexpr):
    """``(do·∂H/∂z, do·∂H/∂k)`` at ``z`` given ``h = H(z)`` and the incoming ``do``.

    sigmoid: ``∂H/∂z = k·h(1-h)``, ``∂H/∂k = z·h(1-h)``, as ``q = do·(h - h·h)`` then ``k·q``, ``z·q``
    (4 instructions with the caller's accumulation, against 6 for the two derivatives and their
    products); rectangle: ``(k, z)`` on the closed interval ``0 <= k·z + 1/2 <= 1`` (PyTorch's clamp
    backward), else ``(0, 0)``.
    """
    if SIGMOID:
        q = do * (h - h * h)
        dz = k * q
        dk = z * q
    else:
        w = k * z + 0.5
        inside = (w >= 0.0) & (w <= 1.0)
        dz = tl.where(inside, do * k, 0.0)
        dk = tl.where(inside, do * z, 0.0)
    return dz, dk


@triton.jit
def lif_step(u, theta, k_h, v_reset, m, NOISE: tl.constexpr, SIGMOID: tl.constexpr, HARD_RESET: tl.constexpr):
    """One neuron step after the membrane update: ``u -> (o, v, h, z)``.

    ``z = u - θ``; ``S = 1[z >= 0]``; ``h = H(z)`` (not computed for ``NOISE_NONE``, whose output
    does not need it: 0 is returned); ``o`` per ``NOISE`` (``m``, the spike-mode bit, is read only
    for ``NOISE_DRAW``); hard: ``v = u(1-o) + v_r·o``, soft: ``v = u - θ·o``. With ``o = S`` the hard
    reset is the select ``S ? v_r : u`` (the same value: ``u·0 + v_r·1``, ``u·1 + v_r·0``, up to
    the sign of a zero).
    """
    z = u - theta
    spike = z >= 0.0
    s = tl.where(spike, 1.0, 0.0)
    if NOISE == 0:
        h = tl.zeros_like(z)
        o = s
    else:
        h = relaxation(z, k_h, SIGMOID)
        if NOISE == 1:
            o = h
        else:
            o = tl.where(m, s, h)
    if HARD_RESET:
        if NOISE == 0:
            v = tl.where(spike, v_reset, u)
        else:
            v = u * (1.0 - o) + v_reset * o
    else:
        v = u - theta * o
    return o, v, h, z


@triton.jit
def lif_step_grads(dy, do_out, u, o, z, h, dv, theta, k, k_h, v_reset, NOISE: tl.constexpr, SIGMOID: tl.constexpr,
                   HARD_RESET: tl.constexpr, HAS_DV: tl.constexpr):
    """The reverse of :func:`lif_step` at one step: ``(du, dθ term, dk term)``.

    ``dy = dL/dy[t]``; ``do_out = dL/do[t]`` from outside the neuron's own reset (``θ·dy``, plus the
    recurrent product's term in the recurrent layer); ``dv = dL/dv[t]`` (λ·du[t+1], carried; read
    only with ``HAS_DV``: the last step, t = T - 1, has none, and skips its terms); ``u, o, z, h``
    the recomputed step (``h`` computed here when ``lif_step`` skipped it)::

        do = do_out + dv·(v_r - u)  (hard)  |  do_out - dv·θ  (soft);    dz = do·∂H/∂z
        du = dz + dv·(1 - o)        (hard)  |  dz + dv           (soft)
        dθ term = dy·o - dz  (- dv·o, soft);    dk term = do·∂H/∂k
    """
    if NOISE == 0:
        h = relaxation(z, k_h, SIGMOID)
    if not HAS_DV:
        dz, d_k = relaxation_grads(do_out, z, k, h, SIGMOID)
        du = dz
        d_theta = dy * o - dz
    elif HARD_RESET:
        do = do_out + dv * (v_reset - u)
        dz, d_k = relaxation_grads(do, z, k, h, SIGMOID)
        if NOISE == 0:
            du = dz + tl.where(z >= 0.0, 0.0, dv)  # o = S: dv·(1 - o) is dv or ±0
        else:
            du = dz + dv * (1.0 - o)
        d_theta = dy * o - dz
    else:
        do = do_out - dv * theta
        dz, d_k = relaxation_grads(do, z, k, h, SIGMOID)
        du = dz + dv
        d_theta = dy * o - dz - dv * o
    return du, d_theta, d_k


@triton.jit
def store_spike_mode(mask_ptr, offs, in_range, m, NOISE: tl.constexpr):
    """Store one step's spike-mode decisions as int8 (1 = spike mode): all 1 for ``NOISE_NONE``,
    all 0 for ``NOISE_ALL``, ``m`` for ``NOISE_DRAW`` (the test-only mask output)."""
    if NOISE == 0:
        mode = tl.full(offs.shape, 1, tl.int8)
    elif NOISE == 1:
        mode = tl.full(offs.shape, 0, tl.int8)
    else:
        mode = m.to(tl.int8)
    tl.store(mask_ptr + offs, mode, mask=in_range)
