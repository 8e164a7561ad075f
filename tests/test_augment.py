"""Tests for train/data/augment.py: batched ops against slow per-image references, on the CPU.

Images are drawn with values in [1, 255] wherever a test needs zeros to mean "filled", so a zero
in the output can only come from padding, Cutout or an out-of-image read.
"""

import math

import pytest
import torch

from asgl.train.data import augment as A


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _images(B, C=3, H=12, W=10, lo=1, hi=256, seed=0):
    return torch.randint(lo, hi, (B, C, H, W), dtype=torch.uint8, generator=_gen(seed))


# --------------------------------------------------------------------------------------------
# Slow per-image references (one image [C, H, W] at a time, Python loops over channels/pixels)
# --------------------------------------------------------------------------------------------


def _blend_ref(img, other, factor):
    f = torch.tensor(factor, dtype=torch.float32)
    return (f * img.float() + (1 - f) * other.float()).clamp(0, 255).to(torch.uint8)


def _gray_ref(img):
    r, g, b = img.float()
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(torch.uint8)


def invert_ref(img):
    return torch.tensor([[[255 - int(v) for v in row] for row in ch] for ch in img], dtype=torch.uint8)


def solarize_ref(img, thr):
    rows = [[[255 - int(v) if v >= thr else int(v) for v in row] for row in ch] for ch in img]
    return torch.tensor(rows, dtype=torch.uint8)


def posterize_ref(img, bits):
    shift = 8 - bits
    rows = [[[(int(v) >> shift) << shift for v in row] for row in ch] for ch in img]
    return torch.tensor(rows, dtype=torch.uint8)


def autocontrast_ref(img):
    out = img.clone()
    for c in range(img.shape[0]):
        lo, hi = int(img[c].min()), int(img[c].max())
        if hi > lo:
            out[c] = torch.tensor([[(int(v) - lo) * 255 // (hi - lo) for v in row] for row in img[c]])
    return out


def equalize_ref(img):
    """PIL/torchvision rule, written per channel with the non-zero-bin formulation."""
    out = img.clone()
    for c in range(img.shape[0]):
        ch = img[c].reshape(-1).long()
        hist = torch.bincount(ch, minlength=256)
        nonzero = hist[hist != 0]
        step = int(nonzero[:-1].sum()) // 255
        if step == 0:
            continue
        lut, acc = [], 0
        for v in range(256):
            lut.append(min(255, (acc + step // 2) // step))
            acc += int(hist[v])
        out[c] = torch.tensor(lut)[ch].view(img.shape[1:]).to(torch.uint8)
    return out


def brightness_ref(img, f):
    return _blend_ref(img, torch.zeros_like(img), f)


def color_ref(img, f):
    return _blend_ref(img, _gray_ref(img).expand_as(img), f)


def contrast_ref(img, f):
    mean = _gray_ref(img).float().mean()
    return _blend_ref(img, mean.expand(img.shape), f)


def sharpness_ref(img, f):
    C, H, W = img.shape
    deg = img.clone()
    for c in range(C):
        for i in range(1, H - 1):
            for j in range(1, W - 1):
                s = sum(int(img[c, i + a, j + b]) for a in (-1, 0, 1) for b in (-1, 0, 1))
                s += 4 * int(img[c, i, j])
                deg[c, i, j] = round(s / 13)
    return _blend_ref(img, deg, f)


def shear_x_ref(img, m):
    C, H, W = img.shape
    out = torch.zeros_like(img)
    for i in range(H):
        for j in range(W):
            js = round(j + m * (i + 0.5))
            if 0 <= js < W:
                out[:, i, j] = img[:, i, js]
    return out


def shear_y_ref(img, m):
    C, H, W = img.shape
    out = torch.zeros_like(img)
    for i in range(H):
        for j in range(W):
            i_s = round(i + m * (j + 0.5))
            if 0 <= i_s < H:
                out[:, i, j] = img[:, i_s, j]
    return out


def translate_ref(img, tx, ty):
    """Content moves right by tx and down by ty; zeros come in."""
    C, H, W = img.shape
    out = torch.zeros_like(img)
    ys, yd = (slice(0, H - ty), slice(ty, H)) if ty >= 0 else (slice(-ty, H), slice(0, H + ty))
    xs, xd = (slice(0, W - tx), slice(tx, W)) if tx >= 0 else (slice(-tx, W), slice(0, W + tx))
    out[:, yd, xd] = img[:, ys, xs]
    return out


# --------------------------------------------------------------------------------------------
# Single AutoAugment ops, batched vs per-image reference
# --------------------------------------------------------------------------------------------


def test_invert_solarize_posterize_exact():
    x = _images(4, lo=0, H=6, W=5)
    thr = torch.tensor([0.0, 100.5, 198.33, 255.0])
    bits = torch.tensor([8, 6, 5, 1])
    inv, sol, post = A.invert(x), A.solarize(x, thr), A.posterize(x, bits)
    for b in range(4):
        assert torch.equal(inv[b], invert_ref(x[b]))
        assert torch.equal(sol[b], solarize_ref(x[b], float(thr[b])))
        assert torch.equal(post[b], posterize_ref(x[b], int(bits[b])))
    assert torch.equal(sol[0], inv[0])  # threshold 0 inverts everything


def test_autocontrast_exact():
    x = _images(3, lo=60, hi=90, H=7, W=9)
    x[1, 2] = 42  # a constant channel stays as it is
    out = A.autocontrast(x)
    for b in range(3):
        assert torch.equal(out[b], autocontrast_ref(x[b]))
    assert torch.equal(out[1, 2], x[1, 2])
    for b, c in ((0, 0), (0, 1), (1, 0), (2, 1)):
        assert int(out[b, c].min()) == 0 and int(out[b, c].max()) == 255


def test_equalize_exact():
    # 24 x 24 = 576 pixels so that step = (N - h[max]) // 255 is mostly > 0.
    x = _images(4, lo=90, hi=130, H=24, W=24, seed=3)
    x[1, 0] = 7                                              # constant channel: step 0
    x[2, 1, :20] = 250                                       # dominant top value: step 0
    x[3] = torch.randint(0, 256, x[3].shape, dtype=torch.uint8, generator=_gen(4))
    out = A.equalize(x)
    changed = 0
    for b in range(4):
        ref = equalize_ref(x[b])
        assert torch.equal(out[b], ref)
        changed += int((ref != x[b]).any())
    assert changed >= 2
    assert torch.equal(out[1, 0], x[1, 0]) and torch.equal(out[2, 1], x[2, 1])


@pytest.mark.parametrize(
    "op, ref",
    [
        (A.adjust_brightness, brightness_ref),
        (A.adjust_color, color_ref),
        (A.adjust_contrast, contrast_ref),
        (A.adjust_sharpness, sharpness_ref),
    ],
)
def test_blend_ops_exact(op, ref):
    x = _images(4, lo=0, H=7, W=6, seed=5)
    factors = torch.tensor([0.1, 0.73, 1.0, 1.9])
    out = op(x, factors)
    for b in range(4):
        assert torch.equal(out[b], ref(x[b], float(factors[b])))
    assert torch.equal(out[2], x[2])  # factor 1 is the identity
    assert not torch.equal(out[3], x[3])


def test_translate_exact():
    x = _images(4, H=9, W=11)
    tx = torch.tensor([3, -4, 0, 11])
    ty = torch.tensor([0, 2, -5, 1])
    out = A.translate(x, tx, ty)
    for b in range(4):
        assert torch.equal(out[b], translate_ref(x[b], int(tx[b]), int(ty[b])))
    assert int(out[3].count_nonzero()) == 0  # shifted by the full width: nothing left


@pytest.mark.parametrize("H, W", [(8, 8), (9, 9)])
def test_rotate_right_angles_match_rot90(H, W):
    x = _images(4, H=H, W=W)
    out = A.rotate(x, torch.tensor([90.0, 180.0, -90.0, 0.0]))
    for b, k in enumerate([1, 2, -1, 0]):
        assert torch.equal(out[b], torch.rot90(x[b], k, dims=(-2, -1)))


def test_rotate_small_angle_keeps_centre_and_fills_corners():
    x = _images(1, H=32, W=32)
    out = A.rotate(x, 30.0)
    assert torch.equal(out[0, :, 15:17, 15:17], x[0, :, 15:17, 15:17])
    assert int(out[0, :, 0, 0].count_nonzero()) == 0 and int(out[0, :, -1, -1].count_nonzero()) == 0


def test_shear_exact():
    x = _images(2, H=8, W=9)
    m = torch.tensor([0.25, -0.3])
    sx, sy = A.shear_x(x, m), A.shear_y(x, m)
    for b in range(2):
        assert torch.equal(sx[b], shear_x_ref(x[b], float(m[b])))
        assert torch.equal(sy[b], shear_y_ref(x[b], float(m[b])))


# --------------------------------------------------------------------------------------------
# AutoAugment policy
# --------------------------------------------------------------------------------------------


def test_policy_table_and_magnitudes():
    assert len(A.CIFAR10_POLICY) == 25
    assert all(len(sub) == 2 and all(op in A.OPS for op, _, _ in sub) for sub in A.CIFAR10_POLICY)
    bins = torch.arange(10, dtype=torch.float64)
    for k in range(10):
        assert A.magnitude("ShearX", k, 32, 32) == pytest.approx(0.3 * k / 9)
        assert A.magnitude("Rotate", k, 32, 32) == pytest.approx(30.0 * k / 9)
        assert A.magnitude("Solarize", k, 32, 32) == pytest.approx(255.0 - 255.0 * k / 9)
        assert A.magnitude("Color", k, 32, 32) == pytest.approx(0.9 * k / 9)
        assert A.magnitude("Posterize", k, 32, 32) == 8 - int(torch.round(bins[k] / 2.25))
    assert A.magnitude("TranslateX", 9, 32, 48) == pytest.approx(150 / 331 * 48)
    assert A.magnitude("TranslateY", 9, 32, 48) == pytest.approx(150 / 331 * 32)
    assert math.trunc(A.magnitude("TranslateX", 9, 32, 32)) == 14
    assert A.magnitude("Equalize", None, 32, 32) == 0.0


def _autoaugment_loop_ref(x, policy, u, sign):
    """One image at a time, one op at a time, with the single-op functions on B = 1."""
    outs = []
    H, W = x.shape[-2:]
    for b in range(x.shape[0]):
        img = x[b : b + 1]
        for s, (op, p, k) in enumerate(A.CIFAR10_POLICY[int(policy[b])]):
            if not float(u[b, s]) < p:
                continue
            m = A.magnitude(op, k, H, W) * (float(sign[b, s]) if op in A._SIGNED else 1.0)
            m32 = float(torch.tensor(m, dtype=torch.float32))
            img = {
                "ShearX": lambda: A.shear_x(img, m32),
                "ShearY": lambda: A.shear_y(img, m32),
                "TranslateX": lambda: A.translate(img, math.trunc(m32), 0),
                "TranslateY": lambda: A.translate(img, 0, math.trunc(m32)),
                "Rotate": lambda: A.rotate(img, m32),
                "Brightness": lambda: A.adjust_brightness(img, 1.0 + m32),
                "Color": lambda: A.adjust_color(img, 1.0 + m32),
                "Contrast": lambda: A.adjust_contrast(img, 1.0 + m32),
                "Sharpness": lambda: A.adjust_sharpness(img, 1.0 + m32),
                "Posterize": lambda: A.posterize(img, int(m32)),
                "Solarize": lambda: A.solarize(img, m32),
                "AutoContrast": lambda: A.autocontrast(img),
                "Equalize": lambda: A.equalize(img),
                "Invert": lambda: A.invert(img),
            }[op]()
        outs.append(img)
    return torch.cat(outs)


@pytest.mark.parametrize("always", [True, False])
def test_autoaugment_batched_matches_per_image_loop(always):
    B = 50  # every sub-policy twice, so every op runs
    x = _images(B, lo=0, H=24, W=24, seed=7)
    g = _gen(11)
    policy = torch.arange(B) % 25
    u = torch.zeros(B, 2) if always else torch.rand(B, 2, generator=g)
    sign = torch.randint(2, (B, 2), generator=g).float() * 2 - 1
    out = A.apply_autoaugment(x, policy, u, sign)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, _autoaugment_loop_ref(x, policy, u, sign))
    if always:
        # with every step applied (u = 0) only the sub-policy with Invert at p = 0 may keep x
        changed = (out != x).flatten(1).any(1)
        assert int(changed.sum()) >= B - 4


def test_autoaugment_draws_cover_policies():
    policy, u, sign = A.draw_autoaugment_params(2000, "cpu", _gen(0))
    assert set(policy.tolist()) == set(range(25))
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert set(sign.unique().tolist()) == {-1.0, 1.0}


# --------------------------------------------------------------------------------------------
# Crop, flip, Cutout, reproducibility
# --------------------------------------------------------------------------------------------


def _shift_ref(img, dy, dx):
    """out[i, j] = img[i + dy, j + dx], zero outside."""
    return translate_ref(img, -dx, -dy)


def test_crop_shifts_by_at_most_pad_and_fills_zeros():
    B, p = 64, 3
    x = _images(B, H=9, W=8)
    out = A.augment_images(x, crop_pad=p, generator=_gen(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    shifts = set()
    for b in range(B):
        found = [
            (dy, dx)
            for dy in range(-p, p + 1)
            for dx in range(-p, p + 1)
            if torch.equal(out[b], _shift_ref(x[b], dy, dx))
        ]
        assert len(found) == 1, f"sample {b}: {found}"
        shifts.add(found[0])
    assert len(shifts) > 10  # offsets actually vary


def test_flip_flips_exactly_the_chosen_samples():
    B = 400
    x = _images(B, H=4, W=5)
    out = A.augment_images(x, flip=True, generator=_gen(2))
    flipped = []
    for b in range(B):
        is_same, is_flip = torch.equal(out[b], x[b]), torch.equal(out[b], x[b].flip(-1))
        assert is_same != is_flip
        flipped.append(is_flip)
    assert 150 < sum(flipped) < 250  # p = 1/2: 200 +- 5 sd


def _check_one_square(zero, L):
    """zero: [H, W] bool. A single rectangle of side L, clipped only where it meets a border."""
    H, W = zero.shape
    rows = zero.any(1).nonzero().flatten()
    cols = zero.any(0).nonzero().flatten()
    assert len(rows) > 0
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    box = torch.zeros_like(zero)
    box[r0:r1, c0:c1] = True
    assert torch.equal(zero, box)
    for lo, hi, n in ((r0, r1, H), (c0, c1, W)):
        size = hi - lo
        if lo > 0 and hi < n:
            assert size == L
        else:  # clipped: the centre is inside the image, so at least L - L // 2 pixels remain
            assert min(L, n) >= size >= min(n, L - L // 2)


@pytest.mark.parametrize("H, W, L", [(12, 10, 4), (32, 32, 16), (9, 9, 5)])
def test_cutout_zeroes_one_square(H, W, L):
    B = 60
    x = _images(B, H=H, W=W)
    out = A.augment_images(x, cutout=L, generator=_gen(3))
    assert torch.equal(x, _images(B, H=H, W=W))  # input untouched
    interior = 0
    for b in range(B):
        zero = out[b] == 0
        assert torch.equal(zero, zero[:1].expand_as(zero))  # same square on all channels
        _check_one_square(zero[0], L)
        assert torch.equal(out[b][~zero], x[b][~zero])
        interior += int(zero[0].sum()) == L * L
    assert interior > 0


def test_cutout_in_place_on_float():
    x = torch.rand(20, 3, 10, 10, generator=_gen(4)) + 0.5
    ref = x.clone()
    y = A.cutout_(x, 4, generator=_gen(5))
    assert y is x
    for b in range(20):
        zero = x[b] == 0
        _check_one_square(zero[0], 4)
        assert torch.equal(x[b][~zero], ref[b][~zero])


def test_same_seed_same_output_other_seed_differs():
    x = _images(16, H=32, W=32, lo=0)
    kw = dict(crop_pad=4, flip=True, cutout=8, autoaugment=True)
    a = A.augment_images(x, generator=_gen(0), **kw)
    b = A.augment_images(x, generator=_gen(0), **kw)
    c = A.augment_images(x, generator=_gen(1), **kw)
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    e = torch.rand(4, 3, 2, 8, 8, generator=_gen(0))
    ea = A.augment_events(e, flip=True, roll=2, generator=_gen(0))
    assert torch.equal(ea, A.augment_events(e, flip=True, roll=2, generator=_gen(0)))
    assert not torch.equal(ea, A.augment_events(e, flip=True, roll=2, generator=_gen(9)))


def test_order_is_crop_flip_autoaugment_cutout():
    """The authors' CIFAR order, replayed from the same draws: crop (pad 4) -> flip ->
    AutoAugment -> Cutout. AutoAugment sees the crop's zero border, and Cutout's square stays
    zero whatever AutoAugment did (Invert would turn an earlier square white)."""
    B, pad, L = 100, 4, 8
    x = _images(B, H=16, W=16, lo=0, seed=21)
    out = A.augment_images(x, crop_pad=pad, flip=True, autoaugment=True, cutout=L, generator=_gen(22))
    g = _gen(22)  # the draws, in the order augment_images makes them
    d = torch.randint(-pad, pad + 1, (2, B), generator=g)
    flip = torch.rand(B, generator=g) < 0.5
    policy, u, sign = A.draw_autoaugment_params(B, "cpu", g)
    cy, cx = torch.randint(16, (B,), generator=g), torch.randint(16, (B,), generator=g)

    def crop_flip(img):
        img = torch.stack([_shift_ref(img[b], int(d[0, b]), int(d[1, b])) for b in range(B)])
        return torch.where(flip.view(B, 1, 1, 1), img.flip(-1), img)

    def cutout(img):
        img = img.clone()
        for b in range(B):
            y0, x0 = max(int(cy[b]) - L // 2, 0), max(int(cx[b]) - L // 2, 0)
            img[b, :, y0:max(int(cy[b]) - L // 2 + L, 0), x0:max(int(cx[b]) - L // 2 + L, 0)] = 0
        return img

    assert torch.equal(out, cutout(A.apply_autoaugment(crop_flip(x), policy, u, sign)))
    # the order matters for these draws: AutoAugment first, or Cutout before it, gives another batch
    assert not torch.equal(out, cutout(crop_flip(A.apply_autoaugment(x, policy, u, sign))))
    assert not torch.equal(out, A.apply_autoaugment(cutout(crop_flip(x)), policy, u, sign))


# --------------------------------------------------------------------------------------------
# The fused augmentation (one Triton launch): equal to the reference bit for bit
# (CPU: TRITON_INTERPRET=1 from conftest; with CUDA on the GPU)
# --------------------------------------------------------------------------------------------


@pytest.mark.interpret
@pytest.mark.parametrize("C, H, W", [(3, 8, 6), (1, 7, 5)])
def test_fused_equals_reference_for_every_sub_policy(C, H, W, device):
    B = 25  # every sub-policy once, both steps applied (u = 0), so every op runs
    x = _images(B, C=C, H=H, W=W, lo=0, seed=31).to(device)
    g = _gen(32)
    d = A.AugmentDraws(
        shift=torch.randint(-2, 3, (2, B), generator=g).to(device), flip=(torch.rand(B, generator=g) < 0.5).to(device),
        policy=torch.arange(B, device=device), u=torch.zeros(B, 2, device=device),
        sign=(torch.randint(2, (B, 2), generator=g).float() * 2 - 1).to(device),
        cut_y=torch.randint(H, (B,), generator=g).to(device), cut_x=torch.randint(W, (B,), generator=g).to(device),
        cutout=3,
    )
    ref = A.apply_augment_ref(x, d)
    out = A.apply_augment_fused(x, d)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    bad = (out != ref).flatten(1).any(1).nonzero().flatten().tolist()
    assert not bad, f"sub-policies {bad} differ from the reference"
    assert torch.equal(x, _images(B, C=C, H=H, W=W, lo=0, seed=31).to(device))  # input untouched


@pytest.mark.smoke
@pytest.mark.interpret
def test_fused_backend_equals_torch_backend_from_one_generator(device):
    x = _images(20, H=6, W=6, lo=0, seed=33).to(device)
    kw = dict(crop_pad=2, flip=True, autoaugment=True, cutout=3)
    gen = torch.Generator(device=device)
    ref = A.augment_images(x, generator=gen.manual_seed(5), backend="torch", **kw)
    out = A.augment_images(x, generator=gen.manual_seed(5), backend="triton", **kw)
    assert torch.equal(out, ref)
    only_crop = A.augment_images(x, crop_pad=1, generator=gen.manual_seed(6), backend="triton")
    assert torch.equal(only_crop, A.augment_images(x, crop_pad=1, generator=gen.manual_seed(6), backend="torch"))


def test_backend_must_be_known():
    with pytest.raises(ValueError, match="backend must be one of"):
        A.augment_images(_images(2), flip=True, backend="cuda")


@pytest.mark.gpu
def test_fused_equals_reference_on_cifar_batches():
    x = _images(256, H=32, W=32, lo=0, seed=34).cuda()
    kw = dict(crop_pad=4, flip=True, autoaugment=True, cutout=16)
    for seed in range(4):
        g = torch.Generator(device="cuda")
        ref = A.augment_images(x, generator=g.manual_seed(seed), backend="torch", **kw)
        assert torch.equal(A.augment_images(x, generator=g.manual_seed(seed), **kw), ref)  # auto = triton


def test_no_augmentation_is_identity():
    x = _images(3)
    assert torch.equal(A.augment_images(x), x)
    e = torch.rand(2, 3, 2, 5, 5)
    assert torch.equal(A.augment_events(e), e)


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


def test_events_one_flip_and_roll_per_sample_across_time():
    B, T, C, H, W, r = 48, 5, 2, 7, 6, 2
    x = torch.rand(B, T, C, H, W, generator=_gen(6))
    out = A.augment_events(x, flip=True, roll=r, generator=_gen(7))
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = set()
    for b in range(B):
        found = [
            (f, dy, dx)
            for f in (False, True)
            for dy in range(-r, r + 1)
            for dx in range(-r, r + 1)
            if torch.equal(out[b], torch.roll(x[b].flip(-1) if f else x[b], (dy, dx), dims=(-2, -1)))
        ]
        assert len(found) == 1, f"sample {b}: {found}"  # the whole [T, C, H, W] block, one transform
        seen.add(found[0])
    assert len(seen) > 10 and {f for f, _, _ in seen} == {False, True}


def test_events_float64_and_roll_only():
    x = torch.rand(6, 3, 1, 5, 5, dtype=torch.float64, generator=_gen(8))
    out = A.augment_events(x, roll=1, generator=_gen(9))
    assert out.dtype == torch.float64
    for b in range(6):
        shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        assert any(torch.equal(out[b], torch.roll(x[b], s, dims=(-2, -1))) for s in shifts)


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(crop_pad=-1), "crop_pad"),
        (dict(cutout=-2), "cutout"),
        (dict(crop_pad=1.5), "crop_pad"),
        (dict(flip=1), "flip"),
        (dict(autoaugment="yes"), "autoaugment"),
    ],
)
def test_augment_images_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        A.augment_images(_images(2), **kwargs)


def test_rejects_bad_tensors():
    with pytest.raises(ValueError, match="x"):
        A.augment_images(_images(2).float())
    with pytest.raises(ValueError, match="x"):
        A.augment_images(_images(2)[0])
    with pytest.raises(ValueError, match="C=4"):
        A.augment_images(_images(2, C=4), autoaugment=True)
    with pytest.raises(ValueError, match="roll"):
        A.augment_events(torch.rand(2, 3, 1, 4, 4), roll=-1)
    with pytest.raises(ValueError, match="x"):
        A.augment_events(torch.rand(2, 1, 4, 4), roll=1)
    with pytest.raises(ValueError, match="x"):
        A.augment_events(torch.zeros(2, 3, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="size"):
        A.cutout_(torch.rand(2, 1, 4, 4), -3)
    with pytest.raises(ValueError, match="generator"):
        A.augment_images(_images(2), flip=True, generator=object())


# --------------------------------------------------------------------------------------------
# GPU: the batched ops give the same bytes on CUDA as on the CPU for the same draws
# --------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_matches_cpu_for_the_same_draws():
    B = 256
    x = _images(B, lo=0, H=32, W=32, seed=12)
    policy, u, sign = A.draw_autoaugment_params(B, "cpu", _gen(13))
    cpu = A.apply_autoaugment(x, policy, u, sign)
    gpu = A.apply_autoaugment(x.cuda(), policy.cuda(), u.cuda(), sign.cuda())
    assert torch.equal(gpu.cpu(), cpu)
    g = torch.Generator(device="cuda").manual_seed(0)
    out = A.augment_images(x.cuda(), crop_pad=4, flip=True, cutout=16, autoaugment=True, generator=g)
    assert out.device.type == "cuda" and out.dtype == torch.uint8 and out.shape == x.shape
