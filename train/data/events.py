"""Event-camera data sets: CIFAR10-DVS (AEDAT 2.0) and DVS128 Gesture (AEDAT 3.1), as frames.

Each sample's events (t, x, y, p) are integrated into ``frames`` frames ``[T, 2, 128, 128]`` by
**event count**: with ``E`` events in file (= time) order, frame ``i`` holds events ``floor(i·E/T) ..
floor((i+1)·E/T) - 1`` (so frame sizes differ by at most one event); pixel value = number of events
of that polarity (channel 0: p = 0 "off", channel 1: p = 1 "on"). Frames are then resized to
``resolution`` with bilinear interpolation (``F.interpolate``, no antialiasing, as the common
CIFAR10-DVS 48×48 recipe does) and cached in ``cache_dir`` as float16 ``[N, T, 2, R, R]``.

CIFAR10-DVS (``<root>/<class>/*.aedat``, 10 folders named after the CIFAR-10 classes, 1,000 files
each): AEDAT 2.0 = ``#`` header lines, then big-endian (uint32 address, uint32 timestamp µs)
pairs. Address bits: polarity = bit 0, x_raw = bits 1..7, y_raw = bits 8..14; the sensor is
mounted so that the image is ``x = 127 - y_raw``, ``y = 127 - x_raw``, ``p = 1 - p_raw`` (the
orientation SpikingJelly uses, which matches the original MATLAB reader). There is no official
split: each class's files (sorted by name) are permuted with a generator seeded by
``split_seed`` and the first 10% (at least one file) are the test set (900 / 100 per class).

DVS128 Gesture (``<root>/userXX_<lighting>.aedat`` + ``..._labels.csv`` +
``trials_to_train.txt`` / ``trials_to_test.txt``): AEDAT 3.1 = ``#`` header lines up to
``#!END-HEADER``, then packets: a 28-byte little-endian header (int16 type, int16 source, int32
event size, int32 ts offset, int32 ts overflow, int32 capacity, int32 number, int32 valid) followed
by ``capacity · size`` bytes. Polarity packets (type 1, 8-byte events): uint32 data (bit 0 valid,
bit 1 polarity, bits 2..16 y, bits 17..31 x), int32 timestamp µs (plus overflow << 31). Events
with the valid bit cleared are skipped. Each row ``class,start_us,end_us`` of a trial's CSV is one
sample: its events with ``start <= t < end``; classes 1..11 → labels 0..10. Split: the official
one, by subject (users 1–23 train, 24–29 test, listed in the ``trials_to_*.txt`` files). Cutting
every labelled CSV row gives 1,176 / 288 samples (1,464 in all, the counts SpikingJelly and
snnTorch report too); the original paper speaks of 1,342 gesture instances, and "1,208 / 134" is
a 9:1 random split of those 1,342, not the data set's subject split, so it is not used here.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .loader import DataFormatError, DataNotFoundError

SENSOR = 128  # both data sets come from a 128×128 DVS
CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
GESTURE_CLASSES = 11
# The label of class k + 1 of the data set's README (labels 0..10 here).
GESTURE_CLASS_NAMES = ("hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
                       "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise", "arm_roll",
                       "air_drums", "air_guitar", "other_gestures")

# ---------------------------------------------------------------------------------- AEDAT readers


def _skip_header(data: bytes, end_marker: bytes | None = None) -> int:
    """Offset of the first byte after the ``#`` comment lines (or after ``end_marker``'s line)."""
    pos = 0
    while pos < len(data) and data[pos : pos + 1] == b"#":
        nl = data.find(b"\n", pos)
        line_end = len(data) if nl < 0 else nl + 1
        line = data[pos:line_end]
        pos = line_end
        if end_marker is not None and line.startswith(end_marker):
            break
    return pos


def read_aedat2_cifar10dvs(path: str | Path) -> dict[str, np.ndarray]:
    """Events of one CIFAR10-DVS file: ``{"t", "x", "y", "p"}`` int64 arrays (t in µs)."""
    data = Path(path).read_bytes()
    body = data[_skip_header(data) :]
    if len(body) % 8:
        raise DataFormatError(f"{path}: AEDAT 2.0 body of {len(body)} bytes is not a whole number of 8-byte events")
    words = np.frombuffer(body, dtype=">u4").reshape(-1, 2)
    addr, t = words[:, 0].astype(np.int64), words[:, 1].astype(np.int64)
    p_raw = addr & 0x1
    x_raw = (addr & 0xFE) >> 1
    y_raw = (addr & 0x7F00) >> 8
    return {"t": t, "x": 127 - y_raw, "y": 127 - x_raw, "p": 1 - p_raw}


_PACKET_HEADER = struct.Struct("<hhiiiiii")
_POLARITY_EVENT = 1


def read_aedat3(path: str | Path) -> dict[str, np.ndarray]:
    """Polarity events of one AEDAT 3.1 file: ``{"t", "x", "y", "p"}`` int64 arrays (t in µs)."""
    data = Path(path).read_bytes()
    pos = _skip_header(data, b"#!END-HEADER")
    ts, addrs = [], []
    while pos + _PACKET_HEADER.size <= len(data):
        etype, _src, esize, _tsoff, overflow, capacity, _number, _valid = _PACKET_HEADER.unpack_from(data, pos)
        pos += _PACKET_HEADER.size
        n_bytes = capacity * esize
        if pos + n_bytes > len(data) or esize <= 0:
            raise DataFormatError(f"{path}: truncated AEDAT 3.1 packet at byte {pos - _PACKET_HEADER.size}")
        if etype == _POLARITY_EVENT:
            if esize != 8:
                raise DataFormatError(f"{path}: polarity events of {esize} bytes, expected 8")
            ev = np.frombuffer(data, dtype="<u4", count=2 * capacity, offset=pos).reshape(-1, 2).astype(np.int64)
            addrs.append(ev[:, 0])
            ts.append(ev[:, 1] | (int(overflow) << 31))
        pos += n_bytes
    addr = np.concatenate(addrs) if addrs else np.zeros(0, np.int64)
    t = np.concatenate(ts) if ts else np.zeros(0, np.int64)
    keep = (addr & 0x1) == 1
    addr, t = addr[keep], t[keep]
    return {"t": t, "x": (addr >> 17) & 0x7FFF, "y": (addr >> 2) & 0x7FFF, "p": (addr >> 1) & 0x1}


# ---------------------------------------------------------------------------------- integration


def events_to_frames(ev: dict[str, np.ndarray], frames: int, size: int = SENSOR) -> torch.Tensor:
    """Integrate events into float32 ``[frames, 2, size, size]`` counts, split by event count."""
    out = torch.zeros(frames * 2 * size * size, dtype=torch.float32)
    n = len(ev["t"])
    if n == 0:
        return out.view(frames, 2, size, size)
    # File order: AEDAT writers emit events in time order, and sorting by timestamp would scramble
    # a recording that crosses a 32-bit microsecond wrap (CIFAR10-DVS stores no overflow count).
    x, y, p = (torch.from_numpy(np.ascontiguousarray(ev[k], dtype=np.int64)) for k in ("x", "y", "p"))
    if int(x.max()) >= size or int(y.max()) >= size or int(x.min()) < 0 or int(y.min()) < 0:
        raise DataFormatError(f"event coordinates outside the {size}x{size} sensor")
    # Event i falls in frame floor(i·T / n): frames are contiguous runs of floor/ceil(n/T) events.
    frame = torch.arange(n, dtype=torch.int64) * frames // n
    flat = ((frame * 2 + p) * size + y) * size + x
    out.index_add_(0, flat, torch.ones(n, dtype=torch.float32))
    return out.view(frames, 2, size, size)


def resize_frames(x: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """``[T, 2, H, W]`` → ``[T, 2, R, R]`` (bilinear); unchanged when ``resolution`` is None or H."""
    if resolution is None or resolution == x.shape[-1]:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------- data sets


def cifar10_dvs_files(root: Path, split_seed: int) -> dict[str, list[tuple[Path, int]]]:
    """``{"train": [(file, label)], "test": [...]}``: seeded per-class 9:1 split."""
    missing = [c for c in CIFAR10_DVS_CLASSES if not sorted((root / c).glob("*.aedat"))]
    if missing:
        raise DataNotFoundError(
            f"data set 'cifar10_dvs': no .aedat files for class(es) {missing} under {root}.\n"
            f"Expected one folder per class: {root}/<class>/cifar10_<class>_<i>.aedat, classes "
            f"{', '.join(CIFAR10_DVS_CLASSES)} (AEDAT 2.0, 1,000 files each).\n"
            f"Get them from https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671 (one zip per class), "
            f"unzip each into {root}/<class>/, or set data.root to that folder."
        )
    out: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for label, cls in enumerate(CIFAR10_DVS_CLASSES):
        files = sorted((root / cls).glob("*.aedat"))
        gen = torch.Generator().manual_seed(split_seed * 1009 + label)
        perm = torch.randperm(len(files), generator=gen).tolist()
        n_test = max(1, len(files) // 10) if len(files) > 1 else 0
        out["test"] += [(files[i], label) for i in sorted(perm[:n_test])]
        out["train"] += [(files[i], label) for i in sorted(perm[n_test:])]
    return out


def _gesture_missing(root: Path, what: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"data set 'dvs128_gesture': {what} under {root}.\n"
        f"Expected the extracted DvsGesture.tar.gz: {root}/trials_to_train.txt, {root}/trials_to_test.txt, "
        f"{root}/userXX_<lighting>.aedat and {root}/userXX_<lighting>_labels.csv (AEDAT 3.1).\n"
        f"Get it from https://research.ibm.com/dvsgesture/ (DvsGesture.tar.gz, CC BY 4.0), "
        f"extract it and set data.root to the DvsGesture folder."
    )


def gesture_samples(root: Path) -> dict[str, list[tuple[Path, int, int, int]]]:
    """``{"train": [(aedat, label, start_us, end_us)], "test": [...]}`` from the official trial lists."""
    out: dict[str, list[tuple[Path, int, int, int]]] = {}
    for split in ("train", "test"):
        listing = root / f"trials_to_{split}.txt"
        if not listing.exists():
            raise _gesture_missing(root, f"{listing.name} not found")
        samples = []
        for name in listing.read_text().split():
            aedat = root / name
            csv = root / f"{aedat.stem}_labels.csv"
            if not aedat.exists() or not csv.exists():
                raise _gesture_missing(root, f"{aedat.name} or {csv.name} (listed in {listing.name}) not found")
            for line in csv.read_text().splitlines()[1:]:
                if not line.strip():
                    continue
                cls, start, end = (int(v) for v in line.split(","))
                if not 1 <= cls <= GESTURE_CLASSES:
                    raise DataFormatError(f"{csv}: class {cls} outside 1..{GESTURE_CLASSES}")
                samples.append((aedat, cls - 1, start, end))
        out[split] = samples
    return out


def build_frames(items, read, frames: int, resolution: int | None) -> dict:
    """Frames of all ``items`` (``(path, label, *window)``) into one float16 tensor (uncached)."""
    xs, ys = [], []
    last_path, events = None, None
    for item in items:
        path, label = item[0], item[1]
        if path != last_path:  # gesture: many samples per file, listed consecutively
            events, last_path = read(path), path
        ev = events
        if len(item) == 4:
            keep = (events["t"] >= item[2]) & (events["t"] < item[3])
            ev = {k: v[keep] for k, v in events.items()}
        xs.append(resize_frames(events_to_frames(ev, frames), resolution).to(torch.float16))
        ys.append(label)
    return {"x": torch.stack(xs), "y": torch.tensor(ys, dtype=torch.int64)}
