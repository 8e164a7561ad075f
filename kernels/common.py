"""``@triton.jit`` helpers shared by the fused LIF kernels (``asgl.kernels.lif``, ``asgl.kernels.rlif``).

Everything here runs on float32 registers. The equations are those of :mod:`asgl.kernels.lif_ref`
(``docs/ASGL.md`` §1–2); the helpers exist so that the forward kernel and the recomputation in
the backward kernel execute the *same* instructions in the same order, which is what makes the
recomputed spike decisions bit-identical to the forward ones.

Noise modes (constexpr ``NOISE``):

* ``NOISE_NONE`` (0): ``o = S`` (eval, or training with p = 0): nothing is drawn.
* ``NOISE_ALL`` (1): ``o = H`` (training with p = 1): nothing is drawn.
* ``NOISE_DRAW`` (2): ``o = m·S + (1-m)·H`` with ``m = 1[r >= p]``, ``r ~ U[0, 1)`` from Philox.

RNG keying. ``tl.rand4x(key, offsets)`` runs one Philox-4x32 block per offset and returns four
uniforms, so one call serves four consecutive time steps of an element. The 64-bit key is
``seed + ((t // 4) << 32)`` (Philox keys are the pair ``(lo, hi) = (seed, t // 4)``), the 32-bit
counter is the element index ``n`` within one step (``0 <= n < N < 2**31``) and the lane is
``t % 4``. Distinct ``(t, n)`` therefore map to distinct ``(key, counter, lane)`` triples for any
``T·N`` (no int32 overflow of ``t·N + n``), and a seed below ``2**31`` never carries into the high
word. The backward kernel regenerates the same blocks in reverse order.
"""

import triton
import triton.language as tl

NOISE_NONE = 0
NOISE_ALL = 1
NOISE_DRAW = 2


@triton.jit
def round_to(x, DTYPE: tl.constexpr):
    """``x`` (float32) rounded to nearest-even in ``DTYPE``, returned in ``DTYPE``.

    For bfloat16 the rounding is done on the bits: on a GPU this is what ``cvt.rn.bf16.f32`` gives,
    and it keeps the interpreter (whose float32 -> bfloat16 cast truncates) bit-faithful, since the
    final cast of an already representable value is exact either way. Finite values only.
    """
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        y = ((bits >> 16) << 16).to(tl.float32, bitcast=True).to(tl.bfloat16)
    else:
        y = x.to(DTYPE)
    return y


@triton.jit
def sigmoid_f32(x):
    """``1 / (1 + exp(-x))`` in float32."""
    return 1.0 / (1.0 + tl.exp(-x))


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
def rand_block(seed, t, offs_n):
    """Four ``U[0, 1)`` blocks for steps ``4·(t // 4) + 0..3`` of elements ``offs_n`` (int32)."""
    key = tl.cast(seed, tl.int64) + (tl.cast(t // 4, tl.int64) << 32)
    return tl.rand4x(key, offs_n)


@triton.jit
def rand_lane(t, r0, r1, r2, r3):
    """The uniform of step ``t`` out of the block drawn by :func:`rand_block`."""
    lane = t % 4
    return tl.where(lane == 0, r0, tl.where(lane == 1, r1, tl.where(lane == 2, r2, r3)))


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
def lif_step(u, theta, k, v_reset, r, p, NOISE: tl.constexpr, SIGMOID: tl.constexpr,
             HARD_RESET: tl.constexpr):
    """One neuron step after the membrane update: ``u -> (o, v, h, z)``.

    ``z = u - θ``; ``S = 1[z >= 0]``; ``h = H(z)``; ``o`` per ``NOISE`` (``r``/``p`` are read only
    for ``NOISE_DRAW``: spike mode where ``r >= p``); hard: ``v = u(1-o) + v_r·o``, soft:
    ``v = u - θ·o``.
    """
    z = u - theta
    s = tl.where(z >= 0.0, 1.0, 0.0)
    h = relaxation(z, k, SIGMOID)
    if NOISE == 0:
        o = s
    elif NOISE == 1:
        o = h
    else:
        o = tl.where(r >= p, s, h)
    if HARD_RESET:
        v = u * (1.0 - o) + v_reset * o
    else:
        v = u - theta * o
    return o, v, h, z
