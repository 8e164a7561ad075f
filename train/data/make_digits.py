"""Write the quickstart data set ``digits`` (the repository keeps the output in ``data/digits/``).

Source: the UCI "Optical Recognition of Handwritten Digits" test set as shipped inside scikit-learn
(``sklearn.datasets.load_digits``: 1,797 images of 8×8 pixels, values 0..16, classes 0..9).
E. Alpaydin and C. Kaynak, UCI Machine Learning Repository, https://doi.org/10.24432/C50P49,
licensed under Creative Commons Attribution 4.0 (CC BY 4.0).

Output: the same hub parquet layout as ``uoft-cs/cifar10``, so the quickstart goes through the same
loading code as CIFAR::

    OUT/plain_text/train-00000-of-00001.parquet   1,437 rows
    OUT/plain_text/test-00000-of-00001.parquet      360 rows

columns ``image`` (``datasets.Image``: struct of PNG ``bytes`` / ``path``, 8×8 grayscale) and
``label`` (``ClassLabel`` 0..9). Pixels are rescaled ``round(v · 255 / 16)`` to uint8. The split
is stratified by class and seeded (``random_state=0``), so rerunning reproduces it byte for byte.

Usage: ``python -m asgl.train.data.make_digits [--out data/digits]`` (``OUT`` relative to where it
runs); ``python -m asgl.train.data.prepare digits`` runs it when ``data/digits`` is missing. Needs
``pip install 'asgl-snn[train,digits]'`` (datasets, pillow, scikit-learn).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from asgl.extras import MissingExtra, need

NUM_TEST = 360
SPLIT_SEED = 0
WHAT = "writing the digits data set (python -m asgl.train.data.make_digits)"


def to_png(pixels_0_16) -> bytes:
    """One 8×8 image with values 0..16 → PNG bytes of a uint8 grayscale image (0..255)."""
    np = need("numpy", WHAT)
    pil = need("PIL.Image", WHAT)
    img = np.rint(pixels_0_16.astype(np.float64) * (255.0 / 16.0)).astype(np.uint8)
    buf = io.BytesIO()
    pil.fromarray(img, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_digits(out: str | Path) -> list[str]:
    """Write both splits under ``out``; one line per file written."""
    np = need("numpy", WHAT)
    datasets = need("datasets", WHAT)
    sk_data = need("sklearn.datasets", WHAT)
    sk_split = need("sklearn.model_selection", WHAT)
    out = Path(out)
    digits = sk_data.load_digits()
    images, labels = digits.images, digits.target.astype(np.int64)
    idx_train, idx_test = sk_split.train_test_split(
        np.arange(len(labels)), test_size=NUM_TEST, stratify=labels, random_state=SPLIT_SEED
    )
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[str(d) for d in range(10)])})
    lines = []
    for split, idx in (("train", np.sort(idx_train)), ("test", np.sort(idx_test))):
        ds = datasets.Dataset.from_dict(
            {
                "image": [{"bytes": to_png(images[i]), "path": None} for i in idx],
                "label": [int(labels[i]) for i in idx],
            },
            features=features,
        )
        path = out / "plain_text" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(path))
        lines.append(f"{path}: {len(ds)} rows, per class {np.bincount(labels[idx], minlength=10).tolist()}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgl.train.data.make_digits",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path("data") / "digits"), help="output folder (default data/digits)")
    args = parser.parse_args(argv)
    try:
        lines = write_digits(args.out)
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
