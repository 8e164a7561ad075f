"""A large test set for the digits studies: 10,000 i.i.d. jittered draws of the 360 held-out digits.

The bundled split (``data/digits``) tests on 360 images, where one image is 0.28 % and a 95 %
binomial interval at 95 % accuracy is ± 2.3 points: half-point differences are noise. This module
writes a data set in the same hub parquet layout, for ``--data.root``:

    train  the 1,437 bundled training images, unchanged (the file is copied)
    test   ``N_TEST`` = 10,000 images; image i is a held-out digit drawn uniformly (with
           replacement) from the 360 bundled test images, under its own random affine jitter:
           rotation U(−8°, 8°), scale U(0.95, 1.05), shift U(−0.5, 0.5) px on each axis,
           bilinear resampling, background (0) outside — all from ``torch.Generator`` seeded
           with ``SEED``, so the file is the same on every machine.

So the test images are independent, identically distributed draws from one fixed distribution
(held-out writers' digits under small jitter), one image is 0.01 % of the set, and a Wilson
interval per run is valid. The jitter makes the test set slightly harder than the clean 360 and
is not seen in training; the studies compare methods on the same set, so this shifts every
method alike. Nothing of the test prototypes is in the training split.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = REPO_ROOT / "data" / "digits" / "plain_text"
ROOT = REPO_ROOT / ".cache" / "asgl" / "digits_jitter"
N_TEST = 10_000
SEED = 2026
MAX_ROTATION_DEG = 8.0
SCALE = (0.95, 1.05)
MAX_SHIFT_PX = 0.5
TEST_FILE = "plain_text/test-00000-of-00001.parquet"
TRAIN_FILE = "plain_text/train-00000-of-00001.parquet"


def jitter(images, generator):
    """``images`` uint8 ``[N, H, W]`` -> uint8 ``[N, H, W]``, each under its own random affine map."""
    import torch
    import torch.nn.functional as F

    n, h, w = images.shape
    rot = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(MAX_ROTATION_DEG)
    scale = SCALE[0] + torch.rand(n, generator=generator, dtype=torch.float64) * (SCALE[1] - SCALE[0])
    shift = (torch.rand(n, 2, generator=generator, dtype=torch.float64) * 2 - 1) * MAX_SHIFT_PX
    cos, sin = torch.cos(rot) / scale, torch.sin(rot) / scale
    # affine_grid maps output to input coordinates in [-1, 1]: one pixel is 2 / size there.
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0] * 2 / w], 1),
                         torch.stack([sin, cos, shift[:, 1] * 2 / h], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, h, w), align_corners=False)
    out = F.grid_sample(images.double().unsqueeze(1), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.squeeze(1).round().clamp(0, 255).to(torch.uint8)


def _read_images(path: Path):
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    table = pq.read_table(path).to_pydict()
    images = np.stack([np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("L")) for cell in table["image"]])
    return torch.from_numpy(images), torch.tensor(table["label"], dtype=torch.int64)


def _write(path: Path, images, labels) -> None:
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    def png(img) -> bytes:
        buf = io.BytesIO()
        PILImage.fromarray(img.numpy(), mode="L").save(buf, format="PNG")
        return buf.getvalue()

    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    ds = Dataset.from_dict({"image": [{"bytes": png(img), "path": None} for img in images],
                            "label": [int(v) for v in labels]}, features=features)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))


def ensure(root: Path = ROOT) -> Path:
    """Write the data set under ``root`` unless it is there; return ``root`` (for ``--data.root``)."""
    import torch

    root = Path(root)
    if (root / TEST_FILE).is_file() and (root / TRAIN_FILE).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    # Written in a temporary folder and renamed, so two studies started together never read half a file.
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    tmp.chmod(0o755)
    images, labels = _read_images(SOURCE / "test-00000-of-00001.parquet")
    g = torch.Generator().manual_seed(SEED)
    pick = torch.randint(len(labels), (N_TEST,), generator=g)
    _write(tmp / TEST_FILE, jitter(images[pick], g), labels[pick])
    shutil.copyfile(SOURCE / "train-00000-of-00001.parquet", tmp / TRAIN_FILE)
    try:
        os.rename(tmp, root)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return root


# Two-sided 95 % quantiles of Student's t for 1..20 degrees of freedom.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086)


def wilson_interval(acc_pct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval (percent) of an accuracy ``acc_pct`` measured on ``n`` test samples."""
    if not (isinstance(n, int) and n > 0):
        raise ValueError(f"n must be a positive int, got {n!r}")
    p = acc_pct / 100.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return 100 * (centre - half), 100 * (centre + half)


def difference_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """``mean(a) − mean(b)`` and its 95 % Student-t interval (pooled variance, ``len(a)+len(b)−2``
    degrees of freedom; seeds are the unit). Needs ≥ 2 values on each side. Returns (diff, lo, hi)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 values on each side, got {len(a)} and {len(b)}")
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    ssa = sum((x - ma) ** 2 for x in a)
    ssb = sum((x - mb) ** 2 for x in b)
    df = len(a) + len(b) - 2
    pooled = (ssa + ssb) / df
    se = math.sqrt(pooled * (1 / len(a) + 1 / len(b)))
    t = _T95[min(df, len(_T95)) - 1]  # beyond 20 degrees of freedom: 2.086, a slightly wider interval
    return ma - mb, ma - mb - t * se, ma - mb + t * se
