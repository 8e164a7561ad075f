"""Write the bundled quickstart data set ``data/digits/`` (run once; the output is kept in the repo).

Source: the UCI "Optical Recognition of Handwritten Digits" test set as shipped inside scikit-learn
(``sklearn.datasets.load_digits``: 1,797 images of 8×8 pixels, values 0..16, classes 0..9).
E. Alpaydin and C. Kaynak, UCI Machine Learning Repository, https://doi.org/10.24432/C50P49,
licensed under Creative Commons Attribution 4.0 (CC BY 4.0).

Output: the same hub parquet layout as ``uoft-cs/cifar10``, so the quickstart goes through the same
loading code as CIFAR::

    data/digits/plain_text/train-00000-of-00001.parquet   1,437 rows
    data/digits/plain_text/test-00000-of-00001.parquet      360 rows

columns ``image`` (``datasets.Image``: struct of PNG ``bytes`` / ``path``, 8×8 grayscale) and
``label`` (``ClassLabel`` 0..9). Pixels are rescaled ``round(v · 255 / 16)`` to uint8. The split
is stratified by class and seeded (``random_state=0``), so rerunning reproduces it byte for byte.

Usage: ``python scripts/make_digits.py [--out data/digits]``.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

NUM_TEST = 360
SPLIT_SEED = 0


def to_png(pixels_0_16: np.ndarray) -> bytes:
    """One 8×8 image with values 0..16 → PNG bytes of a uint8 grayscale image (0..255)."""
    img = np.rint(pixels_0_16.astype(np.float64) * (255.0 / 16.0)).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(img, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / "digits"))
    out = Path(parser.parse_args().out)

    digits = load_digits()
    images, labels = digits.images, digits.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=NUM_TEST, stratify=labels, random_state=SPLIT_SEED
    )
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    for split, idx in (("train", np.sort(idx_train)), ("test", np.sort(idx_test))):
        ds = Dataset.from_dict(
            {
                "image": [{"bytes": to_png(images[i]), "path": None} for i in idx],
                "label": [int(labels[i]) for i in idx],
            },
            features=features,
        )
        path = out / "plain_text" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(path))
        print(f"{path}: {len(ds)} rows, per class {np.bincount(labels[idx], minlength=10).tolist()}")


if __name__ == "__main__":
    main()
