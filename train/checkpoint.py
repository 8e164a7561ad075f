"""Checkpoints: atomic writes, RNG state capture, and loading with clear errors.

A checkpoint is one ``torch.save`` file (``RUN_DIR/last.pt``, ``RUN_DIR/best.pt``) holding a dict:

======================  ==============================================================
``format``              ``"asgl-checkpoint-v1"``
``model``               ``state_dict`` of the unwrapped model (BN running stats included)
``optimizer``           weight optimizer ``state_dict``
``neuron_optimizer``    neuron-parameter Adam ``state_dict`` or ``None``
``lr_scheduler``        LR scheduler ``state_dict``
``noise``               :class:`asgl.NoiseSchedule` ``state_dict`` (``p``, epochs done)
``rng``                 one entry per rank: python / numpy / torch CPU / CUDA generator states
``epoch``               the epoch to run next (0-based)
``step_in_epoch``       micro-batches of that epoch already consumed (0 at an epoch boundary)
``global_step``         optimizer steps taken so far
``partial``             train sums of the interrupted epoch (loss_sum, correct, seen) or ``None``
``best_metric``         best test accuracy so far (``-1`` before the first evaluation)
``best_epoch``          the (1-based) epoch that reached it, or ``None``
``scaler``              fp16 loss-scaler ``state_dict`` (scale, growth tracker) or ``None``
``world_size``          number of ranks that wrote it
``config``              the resolved config as a nested dict
======================  ==============================================================

Everything is tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: no pickled code runs when a checkpoint is read.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "asgl-checkpoint-v1"
REQUIRED = ("model", "optimizer", "neuron_optimizer", "lr_scheduler", "noise", "rng", "epoch",
            "step_in_epoch", "global_step", "best_metric", "world_size", "config")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit the run."""


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, and every CUDA device if initialised)."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": [version, list(mt), gauss],
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    npst = state["numpy"]
    np.random.set_state({"bit_generator": npst["bit_generator"],
                         "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
                         "has_gauss": npst["has_gauss"], "gauss": npst["gauss"]})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(data: bytes, path: str | Path) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the whole new one.

    Temp file in the same folder (same file system, so the rename is atomic) → fsync → ``os.replace``
    → fsync of the folder (so the rename itself survives a crash).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def serialize(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    return buf.getvalue()


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (on the CPU); raise :class:`CheckpointError` with the reason if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong magic, foreign pickle: all mean "unreadable"
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an {FORMAT} file")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return ckpt
