"""Writers of small data files in the real on-disk formats of the data sets ``asgl.train.data`` reads.

Each writer takes known contents (pixels, spike times, events, samples) so a test can check that
the loader reads back exactly those; reusable by any test that needs a tiny data set on disk.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import wave
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------- images


def png_bytes(img: np.ndarray) -> bytes:
    """uint8 ``[H, W]`` (grayscale) or ``[H, W, 3]`` (RGB) → PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img, mode="L" if img.ndim == 2 else "RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_hub_parquet(path: str | Path, images: list[np.ndarray], columns: dict[str, list],
                      image_column: str = "img") -> Path:
    """One parquet file as the hub stores it: an Image column (struct bytes/path with PNG bytes) plus
    int label columns, with the ``huggingface`` schema metadata that ``datasets`` reads features from."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    arrays = {image_column: pa.array([{"bytes": png_bytes(im), "path": None} for im in images], type=image_type)}
    features = {image_column: {"_type": "Image"}}
    for name, values in columns.items():  # int columns (str values make a string column, for bad-input tests)
        dtype = "string" if isinstance(values[0], str) else "int64"
        arrays[name] = pa.array(values, type=pa.string() if dtype == "string" else pa.int64())
        features[name] = {"dtype": dtype, "_type": "Value"}
    table = pa.table(arrays).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def id_images(n: int, size: int, channels: int, start: int = 0, seed: int = 0) -> list[np.ndarray]:
    """Random images whose first two pixels encode their index ``start + i`` (to identify samples)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        im = rng.integers(0, 256, size=(size, size, channels) if channels == 3 else (size, size), dtype=np.uint8)
        flat = im.reshape(-1)
        flat[0], flat[channels] = i % 256, i // 256  # pixel (0,0) and (0,1), first channel
        out.append(im)
    return out


def image_id(x_uint8_chw) -> int:
    """Inverse of the index encoding of :func:`id_images` on a ``[C, H, W]`` image."""
    return int(x_uint8_chw[0, 0, 0]) + 256 * int(x_uint8_chw[0, 0, 1])


# ---------------------------------------------------------------------------------- SHD


def write_shd_h5(path: str | Path, times: list[np.ndarray], units: list[np.ndarray], labels: list[int]) -> Path:
    """An SHD file: ``spikes/times`` vlen float16 (s), ``spikes/units`` vlen uint16, ``labels`` uint16."""
    import h5py

    with h5py.File(path, "w") as f:
        n = len(labels)
        t = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.dtype("float16")))
        u = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.dtype("uint16")))
        for i in range(n):
            t[i] = np.asarray(times[i], dtype=np.float16)
            u[i] = np.asarray(units[i], dtype=np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
        f.create_dataset("extra/speaker", data=np.zeros(n, dtype=np.uint16))
    return Path(path)


# ---------------------------------------------------------------------------------- AEDAT


def write_aedat2_cifar10dvs(path: str | Path, t, x, y, p) -> Path:
    """A CIFAR10-DVS AEDAT 2.0 file holding events at image coordinates ``(x, y)``, polarity ``p``.

    Inverts the sensor mapping ``x = 127 - y_raw, y = 127 - x_raw, p = 1 - p_raw``; address bits
    ``p_raw`` = bit 0, ``x_raw`` = bits 1..7, ``y_raw`` = bits 8..14; big-endian (address, time).
    """
    x, y, p = (np.asarray(v, dtype=np.uint32) for v in (x, y, p))
    addr = ((127 - x) << 8) | ((127 - y) << 1) | (1 - p)
    body = np.stack([addr, np.asarray(t, dtype=np.uint32)], axis=1).astype(">u4").tobytes()
    header = (
        b"#!AER-DAT2.0\r\n# This is a raw AE data file created by saveaerdat.m\r\n"
        b"# Data format is int32 address, int32 timestamp (8 bytes total)\r\n"
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(header + body)
    return Path(path)


def _aedat3_packet(etype: int, t, data_words, overflow: int = 0) -> bytes:
    n = len(t)
    header = struct.pack("<hhiiiiii", etype, 1, 8, 4, overflow, n, n, n)
    body = np.stack([np.asarray(data_words, dtype=np.uint32), np.asarray(t, dtype=np.uint32)], axis=1)
    return header + body.astype("<u4").tobytes()


def aedat3_polarity_words(x, y, p, valid=None):
    x, y, p = (np.asarray(v, dtype=np.uint32) for v in (x, y, p))
    v = np.ones_like(x) if valid is None else np.asarray(valid, dtype=np.uint32)
    return (x << 17) | (y << 2) | (p << 1) | v


def write_aedat3(path: str | Path, packets: list[tuple[int, np.ndarray, np.ndarray]]) -> Path:
    """An AEDAT 3.1 file of ``packets``: ``(event type, timestamps, data words)`` each (8-byte events)."""
    header = (
        b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n"
        b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n"
    )
    body = b"".join(_aedat3_packet(et, t, w) for et, t, w in packets)
    Path(path).write_bytes(header + body)
    return Path(path)


def write_gesture_labels(path: str | Path, rows: list[tuple[int, int, int]]) -> Path:
    lines = ["class,startTime_usec,endTime_usec"] + [f"{c},{s},{e}" for c, s, e in rows]
    Path(path).write_text("\r\n".join(lines) + "\r\n")
    return Path(path)


# ---------------------------------------------------------------------------------- WAV


def write_wav_float32(path: str | Path, samples: np.ndarray, rate: int = 22050) -> Path:
    """Mono IEEE-float32 WAV (format code 3), as Medley-solos-DB ships."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    return Path(path)


def write_wav_pcm16(path: str | Path, samples: np.ndarray, rate: int = 22050, channels: int = 1) -> Path:
    """PCM 16-bit WAV through the stdlib ``wave`` module; ``samples`` float in [-1, 1], ``[L]`` or ``[L, C]``."""
    pcm = np.clip(np.rint(np.asarray(samples) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return Path(path)


def write_medley(root: str | Path, clips: list[tuple[str, int, np.ndarray]], rate: int = 22050) -> list[Path]:
    """Medley-solos-DB layout: metadata CSV + ``Medley-solos-DB_<subset>-<id>_<uuid>.wav`` (float32)."""
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    paths = []
    with open(root / "Medley-solos-DB_metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subset", "instrument", "instrument_id", "song_id", "uuid4"])
        for i, (subset, label, samples) in enumerate(clips):
            uuid = f"{i:08x}-0000-4000-8000-{label:012x}"
            w.writerow([subset, f"instrument{label}", label, 100 + i, uuid])
            wav = root / "audio" / f"Medley-solos-DB_{subset}-{label}_{uuid}.wav"
            paths.append(write_wav_float32(wav, samples, rate))
    return paths
