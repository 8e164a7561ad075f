"""Spiking Heidelberg Digits (SHD): spike times of 700 cochlea channels → binned spike counts.

Files (the official release, https://zenkelab.org/datasets/, CC BY 4.0)::

    <root>/shd_train.h5   <root>/shd_test.h5
        spikes/times   vlen float16, seconds, one array per sample
        spikes/units   vlen uint16, channel 0..699 of each spike
        labels         uint16 [N], 0..19 (10 English + 10 German digits)

Binning into ``T`` steps (250 by default, the model's T) over a fixed window ``[0, max_time)``,
``max_time = 1.4 s`` by default (SHD utterances last at most ~1.4 s; the window is fixed, not per
sample, so a step always spans the same duration: 1.4 s / 250 = 5.6 ms)::

    step = floor(t / max_time · T)          t cast to float32 before the arithmetic
    x[b, step, unit] += 1                  input [B, T, 700] float (spike counts)

Spikes with ``t >= max_time`` are **dropped**, not clamped into the last step: clamping would pile
every late spike into one step and give that step a different meaning from the others.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .loader import DataFormatError, DataNotFoundError, SparseSequences

UNITS = 700
NUM_CLASSES = 20


def shd_files(root: Path) -> dict[str, Path]:
    files = {"train": root / "shd_train.h5", "test": root / "shd_test.h5"}
    missing = [p.name for p in files.values() if not p.exists()]
    if missing:
        raise DataNotFoundError(
            f"data set 'shd': {', '.join(missing)} not found under {root}.\n"
            f"Expected {root}/shd_train.h5 and {root}/shd_test.h5 (HDF5: spikes/times, spikes/units, labels).\n"
            f"Get them with:\n"
            f"    wget https://zenkelab.org/datasets/shd_train.h5.gz https://zenkelab.org/datasets/shd_test.h5.gz "
            f"&& gunzip shd_*.h5.gz\nin {root}, or set data.root to the folder that holds them."
        )
    return files


def bin_spikes(times: np.ndarray, units: np.ndarray, T: int, max_time: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's spikes → ``(steps, units)`` int64 of the spikes kept (those with t < max_time)."""
    t = torch.from_numpy(np.asarray(times, dtype=np.float32))  # float16 in the file: cast first
    u = torch.from_numpy(np.asarray(units, dtype=np.int64))
    step = torch.floor(t * (T / max_time)).long()
    keep = (step >= 0) & (step < T) & (t < max_time)
    return step[keep], u[keep]


def load_shd(path: Path, T: int, max_time: float) -> dict:
    """``{"seq": SparseSequences.state(), "y": int64 [N]}`` of one file (uncached)."""
    import h5py

    with h5py.File(path, "r") as f:
        for key in ("spikes/times", "spikes/units", "labels"):
            if key not in f:
                raise DataFormatError(f"{path}: missing dataset {key!r}; found {list(f.keys())}")
        times, units, labels = f["spikes/times"], f["spikes/units"], np.asarray(f["labels"], dtype=np.int64)
        if not len(times) == len(units) == len(labels):
            raise DataFormatError(f"{path}: {len(times)} times, {len(units)} units, {len(labels)} labels")
        offsets, steps, chans = [0], [], []
        for i in range(len(labels)):
            if len(times[i]) != len(units[i]):
                raise DataFormatError(f"{path}: sample {i} has {len(times[i])} times but {len(units[i])} units")
            s, u = bin_spikes(times[i], units[i], T, max_time)
            if u.numel() and (int(u.max()) >= UNITS or int(u.min()) < 0):
                raise DataFormatError(f"{path}: sample {i} has a unit outside 0..{UNITS - 1}")
            steps.append(s)
            chans.append(u)
            offsets.append(offsets[-1] + s.numel())
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataFormatError(f"{path}: labels outside 0..{NUM_CLASSES - 1}")
    seq = SparseSequences(
        torch.tensor(offsets, dtype=torch.int64),
        torch.cat(steps).to(torch.int16) if steps else torch.zeros(0, dtype=torch.int16),
        torch.cat(chans).to(torch.int16) if chans else torch.zeros(0, dtype=torch.int16),
        T,
        UNITS,
    )
    return {"seq": seq.state(), "y": torch.from_numpy(labels)}
