"""Data for the trainer: ``build_data(DataConfig, T=..., seed=...) -> DataBundle``.

Every data set is decoded once into tensors (cached under ``cache_dir``, keyed by a fingerprint
of the source files and the decoding settings), kept on the training device and served by a
:class:`Loader` that shards each epoch between ranks (see ``loader.py`` for the exact order):

| name | files | input | classes |
|---|---|---|---|
| digits | ``data/digits`` (bundled in the repository, hub parquet layout) | image ``[B, 1, 8, 8]`` | 10 |
| cifar10 / cifar100 | ``uoft-cs/cifar10`` / ``uoft-cs/cifar100`` parquet | image ``[B, 3, 32, 32]`` | 10 / 100 |
| tiny_imagenet | ``zh-plus/tiny-imagenet`` parquet (valid = test) | image ``[B, 3, 64, 64]`` | 200 |
| shd | ``shd_train.h5`` / ``shd_test.h5`` | sequence ``[B, T, 700]`` | 20 |
| cifar10_dvs | AEDAT 2.0, one folder per class | event ``[B, T, 2, R, R]`` | 10 |
| dvs128_gesture | AEDAT 3.1 + label CSVs + trial lists | event ``[B, T, 2, R, R]`` | 11 |
| medley_solos | WAV clips + metadata CSV | sequence ``[B, T, 2·n_mels]`` | 8 |

Images come out normalised (``(x/255 - mean)/std``, per data set); the model repeats them over T.
Augmentation (``crop_pad``/``flip``/``cutout``/``autoaugment`` for images, ``flip``/``roll`` for
events) applies to the training split only; the test split is only normalised.
Missing files raise :class:`DataNotFoundError` (a ``FileNotFoundError``) whose message says where
the files are expected and how to get them; malformed files raise :class:`DataFormatError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from .loader import (
    DataFormatError,
    DataNotFoundError,
    Loader,
    SparseSequences,
    StreamLoader,
    TensorLoader,
    cached,
    derive_seed,
    fingerprint_files,
)

__all__ = ["DATASETS", "DataBundle", "DataConfig", "DataFormatError", "DataNotFoundError", "Loader", "build_data"]

IMAGE_DATASETS = ("digits", "cifar10", "cifar100", "tiny_imagenet")
EVENT_DATASETS = ("cifar10_dvs", "dvs128_gesture")
SEQUENCE_DATASETS = ("shd", "medley_solos")
DATASETS = IMAGE_DATASETS + EVENT_DATASETS + SEQUENCE_DATASETS
SOURCES = ("auto", "local", "hub")


@dataclass
class DataConfig:
    """What to load and how; every value is checked in ``__post_init__`` (``ValueError`` naming the key)."""

    name: str = "digits"  # one of DATASETS
    source: str = "auto"  # auto: local files if data.root holds them, else the hub (image sets) | local | hub
    root: str | None = None  # local folder with the files; null: ./data/<name>, where the command runs
    hub_id: str | None = None  # image sets: the hub id to load (null: the data set's own, e.g. uoft-cs/cifar10)
    streaming: bool = False  # images: read and decode during epoch 0 instead of materialising first
    workers: int | None = None  # streaming: image-decoding processes; null: min(8, CPUs); 0: in the loop
    cache_dir: str = ".cache/asgl"  # decoded tensors are cached here
    batch_size: int = 128  # global batch; each of world_size ranks gets batch_size // world_size
    eval_batch_size: int = 256  # global test batch
    # images (applied on the device by asgl.train.data.augment)
    crop_pad: int = 0  # images: random crop after zero-padding this many pixels (0: off)
    flip: bool = False  # random horizontal flip (images and events)
    cutout: int = 0  # images: side of the random square cut out (0: off)
    autoaugment: bool = False  # images: AutoAugment's CIFAR-10 policy
    # events
    roll: int = 0  # ± pixels random roll
    frames: int | None = None  # events / audio / shd: time steps (null -> the model's T)
    resolution: int | None = None  # events: resize frames to this (null -> the sensor's 128)
    # added keys
    label_column: str | None = None  # images: override the label column (e.g. "coarse_label" for CIFAR-100)
    shuffle_buffer: int = 10_000  # streaming: size of the shuffle buffer
    stream_cache_gb: float | None = 8.0  # streaming: keep a rank's decoded samples in memory if they fit (0: off)
    split_seed: int = 0  # cifar10_dvs: seed of the fixed per-class 9:1 train/test split
    shd_max_time: float = 1.4  # shd: seconds binned into T steps; later spikes are dropped
    n_mels: int = 64  # medley_solos: mel bands (features = 2·n_mels)
    delta_threshold: float = 0.3  # medley_solos: level-crossing step in per-clip standard deviations

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ValueError(f"data.{key} must be {what}, got {getattr(self, key)!r}")

        need(self.name in DATASETS, "name", f"one of {', '.join(DATASETS)}")
        need(self.source in SOURCES, "source", f"one of {', '.join(SOURCES)}")
        need(self.source != "hub" or self.name in IMAGE_DATASETS, "source",
             f"auto or local for {self.name} (only the image sets load from the hub; "
             f"python -m asgl.train.data.prepare {self.name} fetches or explains the others)")
        need(self.workers is None or _is_int(self.workers) and self.workers >= 0, "workers", "null or an integer >= 0")
        need(self.root is None or isinstance(self.root, str) and bool(self.root), "root", "a folder path or null")
        need(self.hub_id is None or isinstance(self.hub_id, str) and "/" in self.hub_id, "hub_id",
             "null or a hub id like 'uoft-cs/cifar10'")
        need(self.hub_id is None or self.name in IMAGE_DATASETS, "hub_id", "null for non-image data sets")
        need(not self.streaming or self.name in IMAGE_DATASETS, "streaming", "false for non-image data sets")
        need(isinstance(self.cache_dir, str) and bool(self.cache_dir), "cache_dir", "a folder path")
        for key in ("batch_size", "eval_batch_size", "shuffle_buffer", "n_mels"):
            need(_is_int(getattr(self, key)) and getattr(self, key) > 0, key, "an integer > 0")
        for key in ("crop_pad", "cutout", "roll", "split_seed"):
            need(_is_int(getattr(self, key)) and getattr(self, key) >= 0, key, "an integer >= 0")
        for key in ("flip", "autoaugment", "streaming"):
            need(isinstance(getattr(self, key), bool), key, "true or false")
        need(self.frames is None or _is_int(self.frames) and 0 < self.frames <= 32767, "frames",
             "null or an integer in 1..32767")
        need(self.resolution is None or _is_int(self.resolution) and self.resolution > 0, "resolution",
             "null or an integer > 0")
        need(self.label_column is None or isinstance(self.label_column, str), "label_column", "null or a column name")
        need(self.stream_cache_gb is None or isinstance(self.stream_cache_gb, (int, float)) and
             not isinstance(self.stream_cache_gb, bool) and self.stream_cache_gb >= 0, "stream_cache_gb",
             "null or a number of GB >= 0")
        need(isinstance(self.shd_max_time, (int, float)) and self.shd_max_time > 0, "shd_max_time", "> 0 seconds")
        need(isinstance(self.delta_threshold, (int, float)) and self.delta_threshold > 0, "delta_threshold", "> 0")
        image_aug = self.crop_pad or self.cutout or self.autoaugment
        need(not image_aug or self.name in IMAGE_DATASETS, "name",
             "an image data set when crop_pad/cutout/autoaugment are set")
        need(not self.roll or self.name in EVENT_DATASETS, "roll", "0 for non-event data sets")
        need(not self.flip or self.name not in SEQUENCE_DATASETS, "flip", f"false for {self.name}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class DataBundle:
    train: Loader
    test: Loader
    num_classes: int
    in_channels: int  # image/event: channels; sequence: features F
    input_kind: str  # "image" [B, C, H, W] | "event" [B, T, C, H, W] | "sequence" [B, T, F]
    num_train: int
    num_test: int
    origin: str = ""  # where the samples came from, for the run's header line


def build_data(cfg: DataConfig, *, T: int, seed: int, rank: int = 0, world_size: int = 1,
               device: torch.device | str = "cpu") -> DataBundle:
    """Load ``cfg.name`` and return this rank's train/test loaders on ``device``.

    ``T`` is the model's number of time steps (used when ``cfg.frames`` is None); ``seed`` fixes
    the epoch permutations and augmentations; ``rank``/``world_size`` select this process's shard.
    """
    cfg.__post_init__()
    if not _is_int(T) or T <= 0:
        raise ValueError(f"T must be an integer > 0, got {T!r}")
    if not _is_int(world_size) or world_size <= 0 or not _is_int(rank) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size) and world_size > 0, "
                         f"got rank={rank!r}, world_size={world_size!r}")
    for key in ("batch_size", "eval_batch_size"):
        if getattr(cfg, key) % world_size:
            raise ValueError(f"data.{key} must be a multiple of the number of processes ({world_size}), "
                             f"got {getattr(cfg, key)}")
    device = torch.device(device)
    common = dict(seed=seed, rank=rank, world_size=world_size, device=device)
    b_train, b_test = cfg.batch_size // world_size, cfg.eval_batch_size // world_size
    if cfg.name in IMAGE_DATASETS:
        return _build_images(cfg, b_train, b_test, common)
    steps = cfg.frames if cfg.frames is not None else T
    try:
        if cfg.name in EVENT_DATASETS:
            bundle = _build_events(cfg, steps, b_train, b_test, common)
        else:
            bundle = _build_sequences(cfg, steps, b_train, b_test, common)
    except DataNotFoundError as e:
        raise DataNotFoundError(f"{e}\nOr: {prepare_command(cfg.name, _root(cfg))}") from None
    bundle.origin = f"local files under {_root(cfg)}"
    return bundle


def describe_input(cfg: DataConfig, T: int) -> tuple[int, int, dict]:
    """``(num_classes, in_channels, input description)`` of ``cfg.name`` from the data modules'
    constants (no files are read). The description is what ``asgl.preprocess`` documents: what one
    raw sample looks like and what the network takes (an exported network carries it)."""
    from asgl.preprocess import LAYOUTS

    frames = cfg.frames if cfg.frames is not None else T
    mean = std = names = None
    if cfg.name in IMAGE_DATASETS:
        from .images import CIFAR100_COARSE_CLASSES, IMAGE_SPECS

        spec = IMAGE_SPECS[cfg.name]
        kind, classes, channels, shape = "image", _num_classes(cfg, spec), spec.channels, [spec.channels, spec.size,
                                                                                          spec.size]
        mean, std = list(spec.mean), list(spec.std)
        if cfg.label_column in (None, spec.label_column):
            names = spec.class_names
        elif cfg.name == "cifar100" and cfg.label_column == "coarse_label":
            names = CIFAR100_COARSE_CLASSES
        encoding = None
    elif cfg.name in EVENT_DATASETS:
        from . import events

        side = cfg.resolution or events.SENSOR
        kind, channels, shape = "event", 2, [frames, 2, side, side]
        names = events.CIFAR10_DVS_CLASSES if cfg.name == "cifar10_dvs" else events.GESTURE_CLASS_NAMES
        classes = len(names)
        encoding = (f"per-pixel event counts of each polarity: a recording's events split in order into {frames} "
                    f"frames of equal event count, {events.SENSOR}x{events.SENSOR} resized to {side}x{side} "
                    "(asgl.train.data.events)")
    elif cfg.name == "shd":
        from . import shd

        kind, classes, channels, shape = "sequence", shd.NUM_CLASSES, shd.UNITS, [frames, shd.UNITS]
        encoding = (f"spike counts of the {shd.UNITS} input channels in {frames} equal bins of the first "
                    f"{cfg.shd_max_time:g} s (asgl.train.data.shd)")
    else:
        from . import audio

        names = audio.INSTRUMENTS
        kind, classes, channels, shape = "sequence", audio.NUM_CLASSES, 2 * cfg.n_mels, [frames, 2 * cfg.n_mels]
        encoding = (f"level-crossing spike counts (step {cfg.delta_threshold:g} standard deviations) of {cfg.n_mels} "
                    f"log-mel bands, up then down, over {frames} steps (asgl.train.data.audio)")
    description = {"kind": kind, "layout": LAYOUTS[kind], "shape": shape,
                   "dtype": "uint8" if kind == "image" else "float32",
                   "value_range": [0, 255] if kind == "image" else [0, None], "mean": mean, "std": std,
                   "class_names": list(names) if names is not None else None}
    if encoding is not None:
        description["encoding"] = encoding
    return classes, channels, description


def prepare_command(name: str, root: Path) -> str:
    """The command that fetches (or explains how to get) ``name`` into ``root``."""
    default = _root(DataConfig(name=name))
    return f"python -m asgl.train.data.prepare {name}" + ("" if Path(root) == default else f" --root {root}")


def default_root(name: str) -> Path:
    """``./data/<name>`` of the working directory (absolute, for messages): where ``data.root: null``
    looks, as from the repository root ``make quickstart`` finds the bundled ``data/digits``."""
    return Path.cwd() / "data" / name


def _root(cfg: DataConfig) -> Path:
    return Path(cfg.root) if cfg.root is not None else default_root(cfg.name)


def _check_train_size(n: int, b_train: int, world_size: int) -> None:
    if n < b_train * world_size:
        raise ValueError(f"data.batch_size must be <= the {n} training samples, got {b_train * world_size}")


def _image_transform(cfg: DataConfig, normalise, *, train: bool):
    """The batch transform of one split: augment (training only, if any option is set), then normalise."""
    if not train or not (cfg.crop_pad or cfg.flip or cfg.cutout or cfg.autoaugment):
        return lambda x, gen: normalise(x)
    try:
        from .augment import augment_images
    except ImportError as e:
        raise ImportError("data augmentation (crop_pad/flip/cutout/autoaugment) needs asgl.train.data.augment") from e

    def transform(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = augment_images(x, crop_pad=cfg.crop_pad, flip=cfg.flip, cutout=cfg.cutout,
                           autoaugment=cfg.autoaugment, generator=gen)
        return normalise(x)

    return transform


def _image_source(cfg: DataConfig):
    """``(images.ImageSource, description)`` following ``data.source``; DataNotFoundError when the
    local files are missing and the hub is not to be (or cannot be) tried."""
    from . import images

    spec = images.IMAGE_SPECS[cfg.name]
    hub_id = cfg.hub_id or spec.hub_id
    folder = _root(cfg)
    if cfg.source != "hub":
        try:
            return images.resolve_source(cfg.name, str(folder), None, cfg.label_column), f"local files under {folder}"
        except DataNotFoundError:
            if cfg.source == "local" or hub_id is None:
                raise DataNotFoundError(_images_missing(cfg, folder, None)) from None
    elif hub_id is None:
        raise DataNotFoundError(f"data.source=hub: data set {cfg.name!r} has no hub id; set data.hub_id")
    return images.resolve_source(cfg.name, None, hub_id, cfg.label_column), f"hub {hub_id}"


def _images_missing(cfg: DataConfig, folder: Path, hub_error: BaseException | None) -> str:
    from . import images

    spec = images.IMAGE_SPECS[cfg.name]
    hub_id = cfg.hub_id or spec.hub_id
    layout = "\n".join(f"    {folder / p}" for p in spec.patterns.values())
    if hub_error is not None:
        why = f"the hub copy {hub_id!r} could not be loaded ({str(hub_error).splitlines()[0][:300]})"
        head = (f"data set {cfg.name!r}: " + (f"no local files under {folder} and " if cfg.source == "auto" else "")
                + why + ".")
    else:
        head = f"data set {cfg.name!r}: no files under {folder} in the hub parquet layout:\n{layout}"
    get = (f"python -m asgl.train.data.prepare {cfg.name}" + ("" if cfg.root is None else f" --root {folder}")
           if hub_id is not None or cfg.name == "digits" else "")
    tail = ["Get it with:", f"    {get}"] if get else []
    if hub_id is not None and hub_error is not None:
        tail.append("(needs the network; a copy of the hub's in the cache (data.cache_dir) loads without it)")
    tail.append("or set data.root to the folder that holds the files"
                + (", or data.source=hub on a machine that reaches the Hugging Face hub." if hub_id and
                   cfg.source == "local" else "."))
    return "\n".join([head, *tail])


def _decode_batch(channels: int, size: int, rows: list) -> tuple:
    """Raw ``(Image cell, label)`` rows -> ``(uint8 [B, C, H, W] array, labels)`` (runs in the
    streaming loader's worker processes: a module-level function, so it pickles)."""
    import numpy as np

    from .images import decode_image

    return np.stack([decode_image(cell, channels, size).numpy() for cell, _ in rows]), [label for _, label in rows]


def _raw_stream(source, split: str, *, cache_dir: str, epoch: int, shuffle_seed: int | None, buffer_size: int,
                rank: int, world_size: int):
    """This rank's stream of undecoded ``(Image cell, label)`` rows for one epoch (decoded by the
    loader's workers).

    Rank ``r`` of ``W`` takes rows ``r, r+W, r+2W, ...`` of the epoch's stream (the same on every
    rank: the shuffle is seeded), the split :class:`~asgl.train.data.loader.StreamLoader` counts on.
    ``datasets.distributed.split_dataset_by_node`` would instead hand out whole shards when their
    number is a multiple of ``W``, and shards of unequal size would give the ranks different step
    counts. Every rank reads every row, as ``split_dataset_by_node`` does for single-file sets.
    """
    import inspect
    import itertools

    from . import images

    ds = images._open(source, split, streaming=True, cache_dir=cache_dir)
    if shuffle_seed is not None:
        kwargs = {}
        if "max_buffer_input_shards" in inspect.signature(ds.shuffle).parameters:
            # datasets >= 4 interleaves several parquet shards through threads and then sleeps 5 s
            # at the end of every pass (an Arrow shutdown workaround); one shard at a time avoids
            # it and changes nothing for the single-file data sets here.
            kwargs["max_buffer_input_shards"] = 1
        ds = ds.shuffle(seed=shuffle_seed % (2**32), buffer_size=buffer_size, **kwargs)
    ds.set_epoch(epoch)
    image, label = source.spec.image_column, source.label_column
    # Column batches, then rows: the same rows in the same order as iterating the rows, with a
    # fifth of the Python objects (0.03 s instead of 0.16 s per 5,000 CIFAR rows on one core).
    rows = (pair for batch in ds.iter(batch_size=512) for pair in zip(batch[image], batch[label]))
    for cell, value in itertools.islice(rows, rank, None, world_size):
        yield cell, images._label(value, source, split)


def _build_images(cfg: DataConfig, b_train: int, b_test: int, common: dict) -> DataBundle:
    source, origin = _image_source(cfg)
    try:
        bundle = _load_images(cfg, source, b_train, b_test, common)
    except DataNotFoundError as e:
        if source.files is not None:
            raise
        raise DataNotFoundError(_images_missing(cfg, _root(cfg), e.__cause__ or e)) from None
    if cfg.streaming:
        kept = [loader.cache_nbytes for loader in (bundle.train, bundle.test) if loader.caches]
        origin += ", streaming" + (f" (decoded once: {sum(kept) / 2**20:.0f} MiB kept in memory per rank after "
                                   f"epoch 0, data.stream_cache_gb)" if kept else ", decoded every epoch")
    bundle.origin = origin
    return bundle


def _load_images(cfg: DataConfig, source, b_train: int, b_test: int, common: dict) -> DataBundle:
    from . import images

    spec = source.spec
    normalise = images.normaliser(spec, common["device"])
    workers = cfg.workers if cfg.workers is not None else min(8, len(os.sched_getaffinity(0)))
    loaders, sizes = {}, {}
    for split, train, bsz in (("train", True, b_train), ("test", False, b_test)):
        transform = _image_transform(cfg, normalise, train=train)
        if cfg.streaming:
            n = images.num_rows(source, split, cfg.cache_dir)

            def open_stream(epoch, split=split, train=train):
                return _raw_stream(
                    source, split, cache_dir=cfg.cache_dir, epoch=epoch,
                    shuffle_seed=derive_seed(common["seed"], 0x53485546) if train else None,
                    buffer_size=cfg.shuffle_buffer, rank=common["rank"], world_size=common["world_size"],
                )

            if train:
                _check_train_size(n, bsz, common["world_size"])
            loaders[split] = StreamLoader(open_stream, n, batch_size=bsz, train=train, transform=transform,
                                          decode=partial(_decode_batch, spec.channels, spec.size), workers=workers,
                                          sample_bytes=spec.channels * spec.size * spec.size,
                                          cache_bytes=int((cfg.stream_cache_gb or 0) * 2**30), **common)
        else:
            path = Path(cfg.cache_dir) / f"{cfg.name}-{split}-{source.fingerprint(split)}.pt"
            data = cached(path, lambda split=split: images.materialise(source, split, cfg.cache_dir),
                          rank=common["rank"])
            x = data["x"].to(common["device"])
            n = int(x.shape[0])
            if train:
                _check_train_size(n, bsz, common["world_size"])
            _check_labels(data["y"], _num_classes(cfg, spec), f"{cfg.name} {split}")
            loaders[split] = TensorLoader(lambda idx, _, x=x: x[idx], data["y"], batch_size=bsz, train=train,
                                          transform=transform, **common)
        sizes[split] = n
    return DataBundle(loaders["train"], loaders["test"], _num_classes(cfg, spec), spec.channels, "image",
                      sizes["train"], sizes["test"])


def _num_classes(cfg: DataConfig, spec) -> int:
    # CIFAR-100's coarse labels have 20 classes.
    return 20 if cfg.name == "cifar100" and cfg.label_column == "coarse_label" else spec.num_classes


def _check_labels(y: torch.Tensor, num_classes: int, what: str) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataFormatError(f"{what}: labels span {int(y.min())}..{int(y.max())}, expected 0..{num_classes - 1}")


def _augment_events(augment_events, flip: bool, roll: int, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return augment_events(x.float(), flip=flip, roll=roll, generator=gen)


def _build_events(cfg: DataConfig, frames: int, b_train: int, b_test: int, common: dict) -> DataBundle:
    from . import events

    root = _root(cfg)
    if cfg.name == "cifar10_dvs":
        items, read, num_classes = events.cifar10_dvs_files(root, cfg.split_seed), events.read_aedat2_cifar10dvs, 10
    else:
        items, read, num_classes = events.gesture_samples(root), events.read_aedat3, events.GESTURE_CLASSES
    transform = None
    if cfg.flip or cfg.roll:
        from .augment import augment_events

        transform = partial(_augment_events, augment_events, cfg.flip, cfg.roll)
    loaders, sizes = {}, {}
    for split, train, bsz in (("train", True, b_train), ("test", False, b_test)):
        files = sorted({str(item[0]) for item in items[split]})
        fp = fingerprint_files(files, [tuple(str(v) for v in it) for it in items[split]], frames, cfg.resolution, 1)
        path = Path(cfg.cache_dir) / f"{cfg.name}-{split}-{fp}.pt"
        data = cached(path, lambda split=split: events.build_frames(items[split], read, frames, cfg.resolution),
                      rank=common["rank"])
        x = data["x"].to(common["device"])
        if train:
            _check_train_size(x.shape[0], bsz, common["world_size"])
        loaders[split] = TensorLoader(lambda idx, _, x=x: x[idx].float(), data["y"], batch_size=bsz, train=train,
                                      transform=transform if train else None, **common)
        sizes[split] = int(x.shape[0])
    return DataBundle(loaders["train"], loaders["test"], num_classes, 2, "event", sizes["train"], sizes["test"])


def _build_sequences(cfg: DataConfig, steps: int, b_train: int, b_test: int, common: dict) -> DataBundle:
    root = _root(cfg)
    if cfg.name == "shd":
        from . import shd

        files = shd.shd_files(root)

        def build(split):
            return shd.load_shd(files[split], steps, cfg.shd_max_time)

        def key(split):
            return fingerprint_files([files[split]], steps, cfg.shd_max_time, 1)

        num_classes, features = shd.NUM_CLASSES, shd.UNITS
    else:
        from . import audio

        items = audio.medley_files(root)

        def build(split):
            return audio.load_medley(items[split], steps, cfg.n_mels, cfg.delta_threshold)

        def key(split):
            return fingerprint_files([p for p, _ in items[split]], steps, cfg.n_mels, cfg.delta_threshold, 1)

        num_classes, features = audio.NUM_CLASSES, 2 * cfg.n_mels
    loaders, sizes = {}, {}
    for split, train, bsz in (("train", True, b_train), ("test", False, b_test)):
        path = Path(cfg.cache_dir) / f"{cfg.name}-{split}-{key(split)}.pt"
        data = cached(path, lambda split=split: build(split), rank=common["rank"])
        seq = SparseSequences.from_state(data["seq"]).to(common["device"])
        if train:
            _check_train_size(len(seq), bsz, common["world_size"])
        _check_labels(data["y"], num_classes, f"{cfg.name} {split}")
        loaders[split] = TensorLoader(seq.gather, data["y"], batch_size=bsz, train=train, **common)
        sizes[split] = len(seq)
    return DataBundle(loaders["train"], loaders["test"], num_classes, features, "sequence",
                      sizes["train"], sizes["test"])
