"""``@triton.jit`` helpers shared by the fused LIF kernels (``asgl.kernels.lif``, ``asgl.kernels.rlif``).

Everything here runs on float32 registers. The equations are those of :mod:`asgl.kernels.lif_ref`
(``docs/ASGL.md`` §1–2); the helpers exist so that the forward kernel and the recomputation in
the backward kernel execute the *same* instructions in the same order, which is what makes the
recomputed spike decisions bit-identical to the forward ones.

Noise modes (constexpr ``NOISE``):

* ``NOISE_NONE`` (0): ``o = S`` (eval, or training with p = 0): nothing is drawn.
* ``NOISE_ALL`` (1): ``o = H`` (training with p = 1): nothing is drawn.
* ``NOISE_DRAW`` (2): ``o = m·S + (1-m)·H`` with the spike-mode bit ``m = 1[r >= p16]``, ``r`` a
  16-bit uniform from Philox.

RNG keying and resolution. One Philox-4x32 call (``tl.randint4x``) gives 128 bits per element: eight
16-bit uniforms ``r ∈ {0, …, 65535}``, one for each of 8 consecutive time steps, so the draw runs
once every ``STEPS_PER_DRAW = 8`` steps (every 4 with float uniforms, as before). The 64-bit key is
``seed + ((t // 8) << 32)`` (the pair ``(lo, hi) = (seed, t // 8)``), the counter the element index
``n`` within one step (``0 <= n < N < 2**31``): distinct ``(t, n)`` map to distinct ``(key, counter,
field)`` for any ``T·N``, and a seed below ``2**31`` never carries into the high word. Step
``t = 8·b + j`` reads field ``j``: bits ``16·(j % 2) .. 16·(j % 2) + 15`` of word ``j // 2``. The
analog-mode probability is quantised to ``p16 / 65536`` with ``p16 = round(p·65536)`` clamped to
``[1, 65535]`` for ``0 < p < 1`` (:func:`p_threshold`): a resolution of 1.5e-5, far below what any
schedule sets (the annealed p of the recipes stays above 1e-3). The backward kernels redraw the
same blocks.

Interpreter and GPU. ``INTERPRET`` (set when ``TRITON_INTERPRET=1`` at import) picks exact but
slower code where the interpreter would not be faithful or cannot run GPU code: the bfloat16
rounding by bit arithmetic (the interpreter's float32 -> bfloat16 cast truncates; on a GPU the
native ``cvt.rn`` rounds to nearest even, 2 values per instruction) and the sigmoid from
``exp``/division (on a GPU ``ex2.approx.ftz`` and ``rcp.approx.ftz``: 2 MUFU instructions and 2
FP32 ones instead of 11, within 2 ulp like ``div.full``).
"""

import os

import triton
import triton.language as tl

INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")
STEPS_PER_DRAW = tl.constexpr(8)
LOG2E = tl.constexpr(1.4426950408889634)

NOISE_NONE = 0
NOISE_ALL = 1
NOISE_DRAW = 2


def p_threshold(p: float) -> int:
    """``p16``: the 16-bit threshold of the spike-mode draw ``m = 1[r >= p16]`` for ``0 < p < 1``,
    so that P(analog mode) = p16 / 65536 (both modes stay possible)."""
    return min(max(round(p * 65536), 1), 65535)


@triton.jit
def round_to(x, DTYPE: tl.constexpr):
    """``x`` (float32) rounded to nearest-even in ``DTYPE``, returned in ``DTYPE``.

    On a GPU this is the native conversion (``cvt.rn``). Under the interpreter, whose float32 ->
    bfloat16 cast truncates, bfloat16 is rounded on the bits, which gives the same value (the final
    cast of an already representable value is exact either way). Finite values only.
    """
    if INTERPRET:
        if DTYPE == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = bits + 0x7FFF + ((bits >> 16) & 1)
            y = ((bits >> 16) << 16).to(tl.float32, bitcast=True).to(tl.bfloat16)
        else:
            y = x.to(DTYPE)
    else:
        y = x.to(DTYPE)
    return y


@triton.jit
def sigmoid_f32(x):
    """``1 / (1 + exp(-x))`` in float32 (``ex2.approx.ftz``, ``rcp.approx.ftz`` on a GPU)."""
    if INTERPRET:
        y = 1.0 / (1.0 + tl.exp(-x))
    else:
        e = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x * -LOG2E], dtype=tl.float32,
                                      is_pure=True, pack=1)
        y = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [1.0 + e], dtype=tl.float32,
                                      is_pure=True, pack=1)
    return y


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
def layout_anchor(x):
    """An int32 zero that depends on ``x``, to add to the Philox counters of a block.

    Triton lays out the values that derive from a load like the load (8 neurons per thread) but
    gives a chain that starts from ``tl.arange`` alone, like the Philox draw, its default layout (a
    stride across threads); the spike-mode bits then cross between the two through shared memory
    with a barrier at every step (8 LDS + 2 STS + 2 BAR per thread and step in the sm_90 SASS), and
    Triton declines to recompute the draw in the other layout because its 4 words serve 8 steps.
    Deriving the counters from a loaded value puts the whole draw in the load's layout. On a GPU the
    zero is an opaque ``mov`` (ptxas folds the add and drops the dependency: no instruction left);
    the interpreter has no layouts.
    """
    if INTERPRET:
        zero = 0
    else:
        zero = tl.inline_asm_elementwise("mov.b32 $0, 0;", "=r,r", [x.to(tl.float32).to(tl.int32, bitcast=True)],
                                         dtype=tl.int32, is_pure=True, pack=1)
    return zero


@triton.jit
def draw_words(seed, t, offs_key):
    """The four Philox words (eight 16-bit uniforms) of steps ``8·(t // 8) + 0..7``, elements
    ``offs_key`` (int32)."""
    key = tl.cast(seed, tl.int64) + (tl.cast(t // STEPS_PER_DRAW, tl.int64) << 32)
    return tl.randint4x(key, offs_key)


@triton.jit
def spike_mode(w0, w1, w2, w3, J: tl.constexpr, p_hi):
    """Spike-mode bit ``1[r_J >= p16]`` of step ``8·b + J`` (``J`` static) from the words of block b.

    ``p_hi = p16 << 16`` (uint32): the high half-word compares as the word itself and the low one as
    the word shifted up by 16 bits, one instruction each with no extraction (the low bits of a
    high-half compare cannot turn ``r < p16`` into ``>=``: ``r·2^16 + low < p16·2^16`` when ``r < p16``).
    """
    if J // 2 == 0:
        w = w0
    elif J // 2 == 1:
        w = w1
    elif J // 2 == 2:
        w = w2
    else:
        w = w3
    if J % 2 == 1:
        m = w >= p_hi
    else:
        m = (w << 16) >= p_hi
    return m


@triton.jit
def spike_mode_bits(seed, t, offs_key, p_hi):
    """The 8 spike-mode bits of block ``t // 8`` packed into bits 0..7 of an int32 (bit j: step
    ``8·(t // 8) + j``), for kernels whose time loop is not unrolled by 8: one register carried
    instead of four words."""
    w0, w1, w2, w3 = draw_words(seed, t, offs_key)
    bits = spike_mode(w0, w1, w2, w3, 0, p_hi).to(tl.int32)
    bits |= spike_mode(w0, w1, w2, w3, 1, p_hi).to(tl.int32) << 1
    bits |= spike_mode(w0, w1, w2, w3, 2, p_hi).to(tl.int32) << 2
    bits |= spike_mode(w0, w1, w2, w3, 3, p_hi).to(tl.int32) << 3
    bits |= spike_mode(w0, w1, w2, w3, 4, p_hi).to(tl.int32) << 4
    bits |= spike_mode(w0, w1, w2, w3, 5, p_hi).to(tl.int32) << 5
    bits |= spike_mode(w0, w1, w2, w3, 6, p_hi).to(tl.int32) << 6
    bits |= spike_mode(w0, w1, w2, w3, 7, p_hi).to(tl.int32) << 7
    return bits


@triton.jit
def step_in_block(t):
    """``t % 8``, the step's field in its Philox block (spelt with ``//``: under the interpreter ``t``
    is a Python int, and ``int % constexpr`` has no reflected operator)."""
    return t - (t // STEPS_PER_DRAW) * STEPS_PER_DRAW


@triton.jit
def spike_mode_of_step(bits, t):
    """Step ``t``'s bit out of :func:`spike_mode_bits` as a boolean."""
    return ((bits >> step_in_block(t)) & 1) != 0


@triton.jit
def relaxation(z, k, SIGMOID: tl.constexpr):
    """``H(z)``: ``sigmoid(k·z)`` or ``clamp(k·z + 1/2, 0, 1)``."""
    if SIGMOID:
        h = sigmoid_f32(k * z)
    else:
        h = tl.minimum(tl.maximum(k * z + 0.5, 0.0), 1.0)
    return h


@triton.jit
def relaxation_grads(z, k, h, SIGMOID: tl.constexpr):
    """``(∂H/∂z, ∂H/∂k)`` at ``z`` given ``h = H(z)``.

    sigmoid: ``(k·h(1-h), z·h(1-h))``; rectangle: ``(k, z)`` on the closed interval
    ``0 <= k·z + 1/2 <= 1`` (PyTorch's clamp backward), else ``(0, 0)``.
    """
    if SIGMOID:
        hh = h * (1.0 - h)
        dh_dz = k * hh
        dh_dk = z * hh
    else:
        w = k * z + 0.5
        inside = (w >= 0.0) & (w <= 1.0)
        dh_dz = tl.where(inside, k, 0.0)
        dh_dk = tl.where(inside, z, 0.0)
    return dh_dz, dh_dk


@triton.jit
def lif_step(u, theta, k, v_reset, m, NOISE: tl.constexpr, SIGMOID: tl.constexpr, HARD_RESET: tl.constexpr):
    """One neuron step after the membrane update: ``u -> (o, v, h, z)``.

    ``z = u - θ``; ``S = 1[z >= 0]``; ``h = H(z)``; ``o`` per ``NOISE`` (``m``, the spike-mode bit,
    is read only for ``NOISE_DRAW``); hard: ``v = u(1-o) + v_r·o``, soft: ``v = u - θ·o``.
    """
    z = u - theta
    s = tl.where(z >= 0.0, 1.0, 0.0)
    h = relaxation(z, k, SIGMOID)
    if NOISE == 0:
        o = s
    elif NOISE == 1:
        o = h
    else:
        o = tl.where(m, s, h)
    if HARD_RESET:
        v = u * (1.0 - o) + v_reset * o
    else:
        v = u - theta * o
    return o, v, h, z


@triton.jit
def lif_step_grads(dy, do_out, u, o, h, z, dv, theta, k, v_reset, SIGMOID: tl.constexpr, HARD_RESET: tl.constexpr):
    """The reverse of :func:`lif_step` at one step: ``(du, dθ term, dk term)``.

    ``dy = dL/dy[t]``; ``do_out = dL/do[t]`` from outside the neuron's own reset (``θ·dy``, plus the
    recurrent product's term in the recurrent layer); ``dv = dL/dv[t]`` (λ·du[t+1], carried);
    ``u, o, h, z`` the recomputed step::

        do = do_out + dv·(v_r - u)  (hard)  |  do_out - dv·θ  (soft);    dz = do·∂H/∂z
        du = dz + dv·(1 - o)        (hard)  |  dz + dv           (soft)
        dθ term = dy·o - dz  (- dv·o, soft);    dk term = do·∂H/∂k
    """
    dh_dz, dh_dk = relaxation_grads(z, k, h, SIGMOID)
    if HARD_RESET:
        do = do_out + dv * (v_reset - u)
        dz = do * dh_dz
        du = dz + dv * (1.0 - o)
        d_theta = dy * o - dz
    else:
        do = do_out - dv * theta
        dz = do * dh_dz
        du = dz + dv
        d_theta = dy * o - dz - dv * o
    return du, d_theta, do * dh_dk


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
