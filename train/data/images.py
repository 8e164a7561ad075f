"""Image data sets in the Hugging Face hub parquet layout: digits, CIFAR-10/100, Tiny-ImageNet.

Sources, in order of precedence: an explicit ``root`` folder; else ``hub_id`` through
``datasets.load_dataset(hub_id)`` (needs the network or a warm HF cache); else the default folder
``./data/<name>`` (of the working directory). A local folder has the hub's own layout, e.g. for CIFAR-10::

    <root>/plain_text/train-00000-of-00001.parquet     columns  img (Image: struct bytes/path), label
    <root>/plain_text/test-00000-of-00001.parquet

Materialised mode decodes every image once into a uint8 tensor ``[N, C, H, W]``, caches it in
``cache_dir`` under a fingerprint of the source files, keeps it on the training device and
augments there. Streaming mode reads the parquet rows through a ``datasets.IterableDataset``
(buffer-shuffled per epoch, split round-robin between ranks) and decodes them on the fly with the
same decoder, so both modes produce the same samples. ``datasets`` is imported only here, inside
functions: ``import asgl.train.data`` works without it.
"""

from __future__ import annotations

import glob
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .loader import DataFormatError, DataNotFoundError, fingerprint_files


@dataclass(frozen=True)
class ImageSpec:
    hub_id: str | None
    patterns: dict[str, str]  # split -> glob relative to root ("train" / "test")
    hub_splits: dict[str, str]  # our split -> the hub's split name
    image_column: str
    label_column: str
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None = None  # of label_column's labels 0..K-1 (the hub's ClassLabel names)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)
CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)

IMAGE_SPECS: dict[str, ImageSpec] = {
    # mean/std of the 1,437 training images of the bundled split (pixels / 255).
    "digits": ImageSpec(
        None,
        {"train": "plain_text/train-*.parquet", "test": "plain_text/test-*.parquet"},
        {"train": "train", "test": "test"},
        "image", "label", 10, 1, 8, (0.3054,), (0.3760,), tuple(str(d) for d in range(10)),
    ),
    "cifar10": ImageSpec(
        "uoft-cs/cifar10",
        {"train": "plain_text/train-*.parquet", "test": "plain_text/test-*.parquet"},
        {"train": "train", "test": "test"},
        # The ASGL authors' normalisation (the common CIFAR-10 "std" 0.2023..., which is not the
        # pixel std 0.2470, 0.2435, 0.2616): inputs come out ~1.2x wider than unit variance, as in
        # the paper's runs.
        "img", "label", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), CIFAR10_CLASSES,
    ),
    # CIFAR-100: the pixel mean/std of its training set (what CIFAR-100 recipes normalise with).
    "cifar100": ImageSpec(
        "uoft-cs/cifar100",
        {"train": "cifar100/train-*.parquet", "test": "cifar100/test-*.parquet"},
        {"train": "train", "test": "test"},
        "img", "fine_label", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), CIFAR100_CLASSES,
    ),
    # Tiny-ImageNet's labelled held-out split is "valid" (10,000 images); it serves as the test set.
    # Its labels index WordNet ids the hub copy's card lists; none are kept here (class_names None).
    "tiny_imagenet": ImageSpec(
        "zh-plus/tiny-imagenet",
        {"train": "data/train-*.parquet", "test": "data/valid-*.parquet"},
        {"train": "train", "test": "valid"},
        "image", "label", 200, 3, 64, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821),
    ),
}

# Bump when decoding changes, so stale caches are not reused.
_DECODE_VERSION = 1


def _missing_message(name: str, spec: ImageSpec, root: Path, missing: list[str]) -> str:
    layout = "\n".join(f"    {root / p}" for p in spec.patterns.values())
    get = f"python -m asgl.train.data.prepare {name} --root {root}"
    return (
        f"data set {name!r}: no files match {', '.join(missing)} under {root}.\n"
        f"Expected the hub parquet layout:\n{layout}\n"
        f"with columns {spec.image_column!r} (Image) and {spec.label_column!r}. Get them with:\n    {get}\n"
        f"or set data.root to the folder that holds them"
        + (f", or data.hub_id={spec.hub_id} on a machine that can reach the Hugging Face hub." if spec.hub_id else ".")
    )


@dataclass
class ImageSource:
    """Where one image data set's splits come from: local parquet files or a hub id."""

    name: str
    spec: ImageSpec
    files: dict[str, list[str]] | None  # split -> parquet files (local)
    hub_id: str | None
    label_column: str

    def fingerprint(self, split: str) -> str:
        extra = (self.name, split, self.spec.image_column, self.label_column, self.spec.channels, _DECODE_VERSION)
        if self.files is not None:
            return fingerprint_files(self.files[split], *extra)
        return fingerprint_files([], self.hub_id, *extra)


def resolve_source(name: str, root: str | None, hub_id: str | None, label_column: str | None) -> ImageSource:
    """Find the data set's files; raise :class:`DataNotFoundError` with instructions if absent."""
    spec = IMAGE_SPECS[name]
    label_column = label_column or spec.label_column
    if root is None and hub_id is not None:
        return ImageSource(name, spec, None, hub_id, label_column)
    from . import default_root

    folder = Path(root) if root is not None else default_root(name)
    files = {s: sorted(glob.glob(str(folder / p))) for s, p in spec.patterns.items()}
    missing = [spec.patterns[s] for s, f in files.items() if not f]
    if missing:
        raise DataNotFoundError(_missing_message(name, spec, folder, missing))
    return ImageSource(name, spec, files, None, label_column)


def _import_datasets():
    from asgl.extras import need  # the GPU image may not ship datasets

    return need("datasets", "image data sets")


# Where the hub answers, its HEAD takes well under a second; where it does not, huggingface_hub
# retries for ~25 s (1 + 2 + 4 + 8 + 8 s, a line each) before giving up.
HUB_PROBE_S = 3.0
_TRUE = ("1", "ON", "YES", "TRUE")


def hub_reachable(endpoint: str, timeout: float = HUB_PROBE_S) -> bool:
    """Whether ``endpoint`` (the hub's URL) answers an HTTP HEAD within ``timeout`` seconds (through
    the environment's proxies; any HTTP status or a certificate complaint counts as an answer)."""
    import ssl
    import threading
    import urllib.error
    import urllib.request

    answered = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLError):
                answered.append(True)
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=probe, daemon=True)  # a name lookup ignores the socket timeout
    thread.start()
    thread.join(timeout)
    return bool(answered)


def offline_unless_hub_answers(hub_id: str) -> str | None:
    """Before the first hub access of a process: when ``HF_HUB_OFFLINE`` is unset and the hub does not
    answer within :data:`HUB_PROBE_S`, set ``HF_HUB_OFFLINE=1`` for this process, so that a warm cache
    still loads and a cold one fails at once instead of after the hub client's retries; returns why
    it did (None when it did not). ``huggingface_hub`` and ``datasets`` read that variable when
    imported: if either already is, an unanswered probe raises ``ConnectionError`` instead."""
    if os.path.isdir(hub_id) or any(os.environ.get(k, "").upper() in _TRUE
                                    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return None
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if hub_reachable(endpoint):
        return None
    why = f"the Hugging Face hub ({endpoint}) is unreachable (no answer within {HUB_PROBE_S:g} s)"
    if {"datasets", "huggingface_hub"} & set(sys.modules):
        raise ConnectionError(why)
    os.environ["HF_HUB_OFFLINE"] = "1"
    return why


def _open(source: ImageSource, split: str, *, streaming: bool, cache_dir: str):
    """The split as a ``datasets`` (Iterable)Dataset with the image column left undecoded."""
    offline = None
    if source.files is None:
        try:
            offline = offline_unless_hub_answers(source.hub_id)
        except ConnectionError as e:
            raise DataNotFoundError(f"data set {source.name!r}: could not load {source.hub_id!r} ({e})") from e
    datasets = _import_datasets()
    try:
        if source.files is not None:
            ds = datasets.load_dataset(
                "parquet", data_files={split: source.files[split]}, split=split,
                streaming=streaming, cache_dir=os.path.join(cache_dir, "hf"),
            )
        else:
            ds = datasets.load_dataset(
                source.hub_id, split=source.spec.hub_splits[split], streaming=streaming,
                cache_dir=os.path.join(cache_dir, "hf"),
            )
    except (ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError) as e:
        if source.files is not None:
            raise
        from . import default_root

        cause = ConnectionError(f"{offline}, and the cache holds no copy") if offline else e
        raise DataNotFoundError(
            f"data set {source.name!r}: could not load {source.hub_id!r} from the Hugging Face hub ({cause}).\n"
            + _missing_message(source.name, source.spec, default_root(source.name), list(source.spec.patterns.values()))
        ) from cause
    columns = list(ds.features) if ds.features is not None else list(ds.column_names or [])
    wanted = [source.spec.image_column, source.label_column]
    absent = [c for c in wanted if c not in columns]
    if absent:
        raise DataFormatError(
            f"data set {source.name!r} ({_where(source, split)}): missing column(s) {absent}; found {columns}. "
            f"Expected {source.spec.image_column!r} (Image) and {source.label_column!r} (int label)."
        )
    ds = ds.select_columns(wanted)
    return ds.cast_column(source.spec.image_column, datasets.Image(decode=False))


def _where(source: ImageSource, split: str) -> str:
    """The files (or hub id) a split is read from, for messages."""
    return ", ".join(map(str, source.files[split])) if source.files is not None else source.hub_id


def _label(value, source: ImageSource, split: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataFormatError(f"data set {source.name!r} ({_where(source, split)}): column {source.label_column!r} "
                              f"holds {value!r}; expected int labels") from None


def decode_image(obj: dict, channels: int, size: int) -> torch.Tensor:
    """One Image-feature cell (``{"bytes": PNG/JPEG, "path": ...}``) → uint8 ``[C, H, W]``.

    Grayscale images in RGB data sets (Tiny-ImageNet has some) are converted to RGB by replication.
    """
    from PIL import Image

    data = obj.get("bytes") if isinstance(obj, dict) else None
    src = io.BytesIO(data) if data is not None else obj.get("path")
    with Image.open(src) as img:
        arr = np.asarray(img.convert("RGB" if channels == 3 else "L"))
    if arr.shape[:2] != (size, size):
        raise DataFormatError(f"expected {size}x{size} images, got {arr.shape[1]}x{arr.shape[0]}")
    if channels == 1:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(np.array(arr, order="C"))  # a writable copy


def materialise(source: ImageSource, split: str, cache_dir: str) -> dict:
    """Decode the whole split: ``{"x": uint8 [N, C, H, W], "y": int64 [N]}`` (uncached)."""
    ds = _open(source, split, streaming=False, cache_dir=cache_dir)
    spec = source.spec
    n = len(ds)
    x = torch.empty(n, spec.channels, spec.size, spec.size, dtype=torch.uint8)
    y = torch.empty(n, dtype=torch.int64)
    i = 0
    for batch in ds.iter(batch_size=1024):  # column batches: far fewer Python objects than rows
        for cell, label in zip(batch[spec.image_column], batch[source.label_column]):
            x[i] = decode_image(cell, spec.channels, spec.size)
            y[i] = _label(label, source, split)
            i += 1
    if i != n:
        raise DataFormatError(f"data set {source.name!r} {split}: read {i} rows, expected {n}")
    return {"x": x, "y": y}


def num_rows(source: ImageSource, split: str, cache_dir: str) -> int:
    """Row count of a split without reading it (parquet footers, or the hub's split info)."""
    if source.files is not None:
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in source.files[split])
    ds = _open(source, split, streaming=True, cache_dir=cache_dir)
    info = ds.info.splits.get(source.spec.hub_splits[split]) if ds.info.splits else None
    if info is None or not info.num_examples:
        raise DataFormatError(
            f"{source.hub_id}: the hub does not report the size of split {split!r}; use data.streaming=false"
        )
    return int(info.num_examples)


def normaliser(spec: ImageSpec, device: torch.device | str):
    """uint8 ``[B, C, H, W]`` → float32 ``(x/255 - mean) / std``: the arithmetic of ``asgl.Preprocess``,
    which an exported network applies to raw images (:func:`asgl.preprocess.image_normaliser`)."""
    from asgl.preprocess import image_normaliser

    return image_normaliser(spec.mean, spec.std, device)


def synthetic_train_loader(cfg, num_samples: int, *, seed: int = 0, device: torch.device | str = "cpu"):
    """A training :class:`~asgl.train.data.loader.TensorLoader` over ``num_samples`` random uint8 images
    of ``cfg.name``'s shape, served exactly as the trainer serves the real set (materialised on
    ``device``, ``cfg``'s augmentation, the data set's normalisation): for benchmarks and the step
    counter, which need the trainer's data path without the files. ``cfg``: a ``DataConfig``."""
    from . import _image_transform
    from .loader import TensorLoader

    if cfg.name not in IMAGE_SPECS:
        raise ValueError(f"data.name must be an image data set ({', '.join(IMAGE_SPECS)}) for synthetic "
                         f"images, got {cfg.name!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < cfg.batch_size:
        raise ValueError(f"num_samples must be an int >= data.batch_size ({cfg.batch_size}), got {num_samples!r}")
    spec = IMAGE_SPECS[cfg.name]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (num_samples, spec.channels, spec.size, spec.size), dtype=torch.uint8,
                      generator=gen).to(device)
    y = torch.randint(0, spec.num_classes, (num_samples,), generator=gen)
    transform = _image_transform(cfg, normaliser(spec, device), train=True)
    return TensorLoader(lambda idx, _, x=x: x[idx], y, batch_size=cfg.batch_size, train=True,
                        transform=transform, seed=seed, rank=0, world_size=1, device=device)
