"""Medley-solos-DB: 3-second solo instrument clips → log-mel spike trains ``[B, T, 2·n_mels]``.

Files (https://zenodo.org/records/3464194, CC BY 4.0)::

    <root>/Medley-solos-DB_metadata.csv      subset,instrument,instrument_id,song_id,uuid4
    <root>/**/Medley-solos-DB_<subset>-<instrument_id>_<uuid4>.wav     22,050 Hz mono, 65,536 samples

``subset`` is training / validation / test; 8 classes (``instrument_id`` 0..7: clarinet,
distorted electric guitar, female singer, flute, piano, tenor saxophone, trumpet, violin). The
train set is ``training`` (5,841 clips), the test set ``test`` (12,236); ``validation`` is unused.

Encoding (computed once per clip, cached):

1. WAV → float32 mono in [-1, 1] (PCM 8/16/24/32-bit or IEEE float32/64, read by a small RIFF
   parser; channels averaged).
2. Power spectrogram: Hann window ``n_fft = 1024``, hop ``L // T`` (L samples, T = 500 steps),
   centred frames, the first T kept. Mel filterbank: ``n_mels`` triangles (HTK mel scale,
   20 Hz .. sr/2, areas not normalised). ``m[t, f] = log(mel power + 1e-6)``.
3. Per-clip standardisation: ``z = (m - mean(m)) / std(m)`` (over all t, f of the clip).
4. Level-crossing (delta) coding with step ``δ`` (``delta_threshold``, 0.3 by default): with
   ``q[t] = floor(z[t] / δ)`` and ``q[-1] = 0``, the "up" channel f counts
   ``max(q[t] - q[t-1], 0)`` spikes at step t and the "down" channel ``n_mels + f`` counts
   ``max(q[t-1] - q[t], 0)``: a spike each time the band's level crosses a multiple of δ, like a
   send-on-delta sensor. Input ``[B, T, 2·n_mels]`` float (spike counts).
"""

from __future__ import annotations

import csv
import math
import struct
from pathlib import Path

import numpy as np
import torch

from .loader import DataFormatError, DataNotFoundError, SparseSequences

METADATA = "Medley-solos-DB_metadata.csv"
NUM_CLASSES = 8
INSTRUMENTS = ("clarinet", "distorted electric guitar", "female singer", "flute", "piano", "tenor saxophone",
               "trumpet", "violin")  # instrument_id 0..7
SAMPLE_RATE = 22050
N_FFT = 1024
F_MIN = 20.0
_WAVE_FORMAT_PCM, _WAVE_FORMAT_FLOAT, _WAVE_FORMAT_EXTENSIBLE = 1, 3, 0xFFFE


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """``(float32 mono samples in [-1, 1], sample rate)`` of a RIFF/WAVE file (PCM or IEEE float)."""
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataFormatError(f"{path}: not a RIFF/WAVE file")
    pos, fmt, body = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        chunk = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", chunk)
            if fmt[0] == _WAVE_FORMAT_EXTENSIBLE and len(chunk) >= 26:
                # The sub-format GUID starts with the actual format code.
                fmt = (struct.unpack_from("<H", chunk, 24)[0], *fmt[1:])
        elif cid == b"data":
            body = chunk
        pos += 8 + size + (size & 1)  # chunks are padded to even sizes
    if fmt is None or body is None:
        raise DataFormatError(f"{path}: WAVE file without fmt or data chunk")
    code, channels, rate, _, _, bits = fmt
    if code == _WAVE_FORMAT_FLOAT and bits in (32, 64):
        x = np.frombuffer(body, dtype="<f4" if bits == 32 else "<f8", count=len(body) // (bits // 8)).astype(np.float32)
    elif code == _WAVE_FORMAT_PCM and bits == 8:
        x = (np.frombuffer(body, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif code == _WAVE_FORMAT_PCM and bits in (16, 32):
        x = np.frombuffer(body, dtype=f"<i{bits // 8}", count=len(body) // (bits // 8)).astype(np.float32)
        x = x / 2 ** (bits - 1)
    elif code == _WAVE_FORMAT_PCM and bits == 24:
        b = np.frombuffer(body, dtype=np.uint8, count=len(body) // 3 * 3).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / 2**23
    else:
        raise DataFormatError(f"{path}: unsupported WAVE format code {code} with {bits} bits")
    x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1)
    return x, rate


def mel_filterbank(n_mels: int, sample_rate: int, n_fft: int = N_FFT, f_min: float = F_MIN) -> torch.Tensor:
    """Triangular filters ``[n_fft // 2 + 1, n_mels]`` on the HTK mel scale ``2595·log10(1 + f/700)``."""
    def mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    m = torch.linspace(mel(f_min), mel(sample_rate / 2), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)[:, None]
    lo, centre, hi = hz[:-2][None], hz[1:-1][None], hz[2:][None]
    up = (freqs - lo) / (centre - lo)
    down = (hi - freqs) / (hi - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0).to(torch.float32)


def log_mel(wave: torch.Tensor, T: int, fbank: torch.Tensor) -> torch.Tensor:
    """float32 ``[L]`` → log-mel ``[T, n_mels]`` (hop ``L // T``, first T centred frames)."""
    hop = max(1, wave.numel() // T)
    spec = torch.stft(wave, N_FFT, hop_length=hop, window=torch.hann_window(N_FFT), center=True,
                      pad_mode="constant", return_complex=True)
    power = spec.abs().square().T  # [frames, n_fft//2+1]
    if power.shape[0] < T:
        power = torch.cat([power, power.new_zeros(T - power.shape[0], power.shape[1])])
    return torch.log(power[:T] @ fbank + 1e-6)


def delta_encode(m: torch.Tensor, delta: float) -> torch.Tensor:
    """Log-mel ``[T, M]`` → spike counts ``[T, 2M]`` (level-crossing coding, module docstring)."""
    z = (m - m.mean()) / m.std().clamp_min(1e-6)
    q = torch.floor(z / delta)
    dq = torch.diff(q, dim=0, prepend=torch.zeros_like(q[:1]))
    return torch.cat([dq.clamp(min=0), (-dq).clamp(min=0)], dim=1).to(torch.int64)


def medley_files(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """``{"train": [(wav, label)], "test": [...]}`` from the metadata CSV."""
    meta = root / METADATA
    if not meta.exists():
        raise DataNotFoundError(
            f"data set 'medley_solos': {METADATA} not found under {root}.\n"
            f"Expected {root}/{METADATA} and the clips "
            f"{root}/**/Medley-solos-DB_<subset>-<instrument_id>_<uuid4>.wav.\n"
            f"Get them from https://zenodo.org/records/3464194 (Medley-solos-DB.tar.gz and the metadata CSV), "
            f"extract into {root}, or set data.root to that folder."
        )
    wavs = {p.name: p for p in root.rglob("*.wav")}
    out: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    subsets = {"training": "train", "test": "test"}
    with open(meta, newline="") as f:
        reader = csv.DictReader(f)
        need = {"subset", "instrument_id", "uuid4"}
        if not need <= set(reader.fieldnames or []):
            raise DataFormatError(f"{meta}: columns {reader.fieldnames}, expected at least {sorted(need)}")
        for row in reader:
            split = subsets.get(row["subset"])
            if split is None:
                continue
            label = int(row["instrument_id"])
            if not 0 <= label < NUM_CLASSES:
                raise DataFormatError(f"{meta}: instrument_id {label} outside 0..{NUM_CLASSES - 1}")
            name = f"Medley-solos-DB_{row['subset']}-{label}_{row['uuid4']}.wav"
            if name not in wavs:
                raise DataNotFoundError(
                    f"data set 'medley_solos': {name} (listed in {METADATA}) not found under {root}"
                )
            out[split].append((wavs[name], label))
    for split, items in out.items():
        if not items:
            raise DataFormatError(f"{meta}: no clips of subset {split!r}")
    return out


def load_medley(items: list[tuple[Path, int]], T: int, n_mels: int, delta: float) -> dict:
    """``{"seq": SparseSequences.state(), "y": int64 [N]}`` of the clips (uncached)."""
    fbanks: dict[int, torch.Tensor] = {}
    counts = []
    for path, _ in items:
        wave, rate = read_wav(path)
        if rate not in fbanks:
            fbanks[rate] = mel_filterbank(n_mels, rate)
        counts.append(delta_encode(log_mel(torch.from_numpy(wave), T, fbanks[rate]), delta))
    seq = SparseSequences.from_dense(counts, T, 2 * n_mels)
    return {"seq": seq.state(), "y": torch.tensor([label for _, label in items], dtype=torch.int64)}
