"""The run folder ``RUN_DIR = train.out_dir / train.run_name``: checks, preparation, and the record of
what was written into it.

Whatever writes into a run folder (the trainer, ``python -m asgl.train.eval``, ``.plot``, ...) goes
through :func:`write` or calls :func:`record` where it writes, which adds the file's or folder's
name to the folder's manifest ``.artifacts`` (one name per line). ``train.overwrite=true`` removes
exactly the names listed there, so a new run starts from an empty folder except for what the user
put there, and no list of names is kept beside the code that writes them.

Only the main process creates, clears or writes the folder (the other ranks wait for it), so no
launcher mistake can have two processes writing one folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from asgl.train.checkpoint import write_atomic

MANIFEST = ".artifacts"


class UsageError(RuntimeError):
    """A problem with what the user asked for (run folder, resume target, data, launch); exit code 2."""


def _manifest_of(path: Path) -> Path | None:
    """The manifest of the run folder that holds ``path`` (the nearest folder above it that has
    one), or None when ``path`` lies in no run folder."""
    for folder in Path(path).absolute().parents:
        if (folder / MANIFEST).is_file():
            return folder / MANIFEST
    return None


def recorded(run_dir: Path) -> list[str]:
    """The names the manifest of ``run_dir`` lists (empty without one)."""
    manifest = Path(run_dir) / MANIFEST
    return [line for line in manifest.read_text().splitlines() if line] if manifest.is_file() else []


def record(path: str | Path) -> None:
    """Note in its run folder's manifest that ``path`` (a file or folder inside a run folder, at any
    depth) was written; the top-level name under the run folder is what is recorded. Nothing
    happens for a path outside any run folder (``eval --out /tmp/x.json``)."""
    manifest = _manifest_of(Path(path))
    if manifest is None:
        return
    name = Path(path).absolute().relative_to(manifest.parent).parts[0]
    if name not in recorded(manifest.parent):
        with open(manifest, "a") as f:
            f.write(name + "\n")


def write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and record it in its run folder's manifest."""
    write_atomic(data, path)
    record(path)


def check(run_dir: Path, *, overwrite: bool) -> None:
    """Raise :class:`UsageError` unless a new run may use ``run_dir``: a folder, or one that can be
    made, that is writable, and empty or (``overwrite``) a run folder whose manifest says what to
    clear. Reads only; every rank may call it."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"run folder {run_dir} exists and is not a folder (train.out_dir / train.run_name)")
    base = run_dir
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise UsageError(f"run folder {run_dir}: {base} is not a folder (train.out_dir)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"run folder {run_dir}: {base} is not writable (train.out_dir)")
    existing = [p.name for p in run_dir.iterdir()] if run_dir.is_dir() else []
    if not existing:
        return
    if not overwrite:
        raise UsageError(f"run folder {run_dir} exists and is not empty; resume it with --resume {run_dir}, "
                         "pick another --train.run_name, or pass --train.overwrite=true")
    if MANIFEST not in existing:
        raise UsageError(f"run folder {run_dir} holds no {MANIFEST} record of what a run wrote there (not a run "
                         "folder, or one from an older version), so train.overwrite=true cannot tell what to "
                         "remove: delete it yourself or pick another --train.run_name")


def prepare(run_dir: Path, *, fresh: bool) -> None:
    """Create ``run_dir`` with its manifest; ``fresh`` (a new run, ``train.overwrite``): first remove
    everything the manifest lists, and nothing else. The main process only."""
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = run_dir / MANIFEST
    if fresh:
        for name in recorded(run_dir):
            path = run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        write_atomic(b"", manifest)
    elif not manifest.is_file():  # a run folder written before manifests: its files are the run's
        write_atomic(b"", manifest)
