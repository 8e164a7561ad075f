"""Shared machinery of the studies: run one training in-process, collect its record, aggregate, save.

A *record* is what a study keeps of one training run (all accuracies in percent)::

    {"name": str, "seed": int, "overrides": {"model.width": 10.0, ...}, "exit_code": int,
     "final_test_acc": float | None, "best_test_acc": float | None, "wall_s": float,
     "epochs": int, "final_widths": {layer: α}, "final_firing_rates": {layer: rate},
     "run_dir": str, ...study-specific keys}

The study JSON is ``{"study", "meta", "settings", "runs": [record, ...], "summary": [row, ...]}``
where ``meta`` names the commit, the machine and the command, and ``summary`` holds mean ± std
over seeds (sample standard deviation, ``ddof = 1``; 0 for a single seed).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = REPO_ROOT / "configs" / "quickstart.yaml"
DEFAULT_RUNS_DIR = Path("/tmp/asgl_studies")


def format_value(value: Any) -> str:
    """A config value as the command line spells it (``true``/``false`` for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def override_args(overrides: dict[str, Any]) -> list[str]:
    """``{"model.width": 10.0}`` -> ``["--model.width=10.0"]`` (keys in the given order)."""
    return [f"--{key}={format_value(value)}" for key, value in overrides.items()]


def command_line(overrides: dict[str, Any], config: Path = QUICKSTART) -> str:
    """The shell command that repeats one run of a study outside it."""
    cfg = os.path.relpath(config, REPO_ROOT) if Path(config).is_absolute() else str(config)
    return " ".join(["python train/run.py --config", cfg, *override_args(overrides)])


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` (one per epoch); ``[]`` when there is none."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_training(name: str, overrides: dict[str, Any], *, runs_dir: Path, config: Path = QUICKSTART,
                 **extra: Any) -> dict:
    """Train one run through :func:`asgl.train.run.main` in this process and return its record.

    ``overrides`` are ``section.key -> value`` applied over ``config``; the run folder is
    ``runs_dir/name`` (overwritten). ``extra`` keys are copied into the record (e.g. ``method``).
    A run that ends with a non-zero exit code (e.g. 1 = non-finite loss) is kept with that code and
    the accuracy of its last evaluated epoch (``None`` if it never evaluated); one that raises is
    kept with ``exit_code = -1`` and the exception in ``error``, so a sweep goes on. A run stopped by
    SIGINT/SIGTERM (which :func:`asgl.train.run.main` turns into exit 130/143 after saving) stops the
    sweep with ``KeyboardInterrupt``.
    """
    from asgl.train.run import main  # heavy import; only when training

    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a non-empty file name, got {name!r}")
    runs_dir = Path(runs_dir)
    argv = ["--config", str(config), *override_args(overrides), f"--train.out_dir={runs_dir}",
            f"--train.run_name={name}", "--train.overwrite=true"]
    t0 = time.perf_counter()
    error = None
    try:
        code = main(argv)
    except Exception as e:  # one crashed run must not lose the rest of a sweep
        code, error = -1, f"{type(e).__name__}: {e}"
        print(f"[study] {name}: crashed: {error}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    if code in (130, 143):  # the run was stopped by SIGINT / SIGTERM: stop the sweep too
        raise KeyboardInterrupt(f"run {name} stopped by a signal (exit {code}); the sweep stops")
    rows = read_metrics(runs_dir / name)
    evaluated = [r for r in rows if r.get("test_acc") is not None]
    last = rows[-1] if rows else {}
    record = {
        "name": name,
        "seed": int(overrides.get("train.seed", 0)),
        "overrides": dict(overrides),
        "command": command_line(overrides, config),
        "exit_code": int(code),
        "final_test_acc": evaluated[-1]["test_acc"] if evaluated else None,
        "best_test_acc": max(r["test_acc"] for r in evaluated) if evaluated else None,
        "final_train_acc": last.get("train_acc"),
        "wall_s": round(wall, 2),
        "epochs": len(rows),
        "final_widths": last.get("width", {}),
        "final_firing_rates": last.get("firing_rate", {}),
        "final_p": last.get("p"),
        "run_dir": str(runs_dir / name),
        "error": error,
    }
    record.update(extra)
    print(f"[study] {name}: exit {code}, final {record['final_test_acc']}, best {record['best_test_acc']}, "
          f"{wall:.1f}s", flush=True)
    return record


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof = 1``; 0 for one value) of ``values``."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("values must not be empty")
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var)


def summarize(records: Iterable[dict], keys: Sequence[str], metric: str = "final_test_acc") -> list[dict]:
    """Group ``records`` by the values of ``keys`` and give mean ± std of ``metric`` per group.

    Returns rows ``{**{key: value}, "n", "mean", "std", "values", "mean_best", "failed"}`` in the
    order the groups first appear; runs whose ``metric`` is ``None`` are counted in ``failed`` and
    left out of the mean (a group with no finished run has ``mean = std = None``).
    """
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault(tuple(rec[k] for k in keys), []).append(rec)
    rows = []
    for group_key, recs in groups.items():
        vals = [r[metric] for r in recs if r[metric] is not None]
        bests = [r["best_test_acc"] for r in recs if r.get("best_test_acc") is not None]
        mean, std = mean_std(vals) if vals else (None, None)
        rows.append({**dict(zip(keys, group_key)), "n": len(vals), "mean": mean, "std": std,
                     "values": vals, "mean_best": mean_std(bests)[0] if bests else None,
                     "failed": len(recs) - len(vals)})
    return rows


@functools.lru_cache(maxsize=1)
def git_commit() -> dict:
    """The short commit of the checkout and whether the code the studies run differs from it
    (read-only git). Read once per process, at the start of a study (:func:`parser`): the code a
    running study imported, not what the checkout holds when it saves."""
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout if out.returncode == 0 else ""

    # porcelain lines are "XY path": the status columns may start with a space, so no strip()
    status = git("status", "--porcelain", "--", "train/studies", "asgl", "kernels", "tests/test_studies.py")
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or "unknown",
            "uncommitted_study_files": sorted(line[3:] for line in status.splitlines() if line.strip())}


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "loadavg_at_start": list(os.getloadavg())}


def save_study(path: Path, study: str, settings: dict, runs: list[dict], summary: list[dict],
               wall_s: float, **extra: Any) -> Path:
    """Write the study JSON (see the module docstring) to ``path`` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**git_commit(), "machine": machine(), "argv": sys.argv, "wall_s": round(wall_s, 1),
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    doc = {"study": study, "meta": meta, "settings": settings, "runs": runs, "summary": summary, **extra}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"[study] wrote {path} ({wall_s:.0f}s)", flush=True)
    return path


def parser(study: str, description: str, default_seeds: int) -> argparse.ArgumentParser:
    """The command line every study shares: ``--quick``, ``--seeds``, ``--out``, ``--runs-dir``."""
    git_commit()  # the checkout's state now, as the study starts
    p = argparse.ArgumentParser(prog=f"python -m asgl.train.studies.{study}", description=description)
    p.add_argument("--quick", action="store_true", help="a ~1-minute smoke version (tiny net, one short epoch)")
    p.add_argument("--seeds", type=int, default=default_seeds, help=f"seeds per setting (default {default_seeds})")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "results" / study,
                   help="folder for the JSON and PNG results")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR / study,
                   help="folder for the training runs (checkpoints, metrics.jsonl)")
    return p


def check_seeds(seeds: int) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds must be a positive integer, got {seeds!r}")
    return seeds


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Lay out, write ``path`` (folders created) and close ``fig``."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
