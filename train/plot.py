"""Plot a run's curves from its ``metrics.jsonl``.

    python -m asgl.train.plot RUN_DIR [--out DIR]

Writes into ``RUN_DIR/plots`` (or ``--out``): ``loss.png`` (train/test loss), ``accuracy.png``
(train/test accuracy, %), ``width.png`` (mean relaxation width α per LIF layer) and
``firing_rate.png`` (fraction of nonzero outputs per LIF layer on the eval pass), all against the
epoch. matplotlib is imported only here; without it the command says which extra brings it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asgl.train import run_folder


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of ``RUN_DIR/metrics.jsonl`` in order; raises ``FileNotFoundError`` / ``ValueError``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir} (not a run folder, or no epoch has finished yet)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON row ({e})") from None
    if not rows:
        raise ValueError(f"{path} has no rows yet (no epoch finished)")
    return rows


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the four PNGs; return their paths."""
    from asgl.extras import need

    need("matplotlib", "python -m asgl.train.plot").use("Agg")
    plt = need("matplotlib.pyplot", "python -m asgl.train.plot")
    rows = read_metrics(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    epochs = [r["epoch"] for r in rows]

    def series(key):
        pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        return [e for e, _ in pts], [v for _, v in pts]

    def per_layer(key):
        layers = list(dict.fromkeys(name for r in rows for name in (r.get(key) or {})))
        return {name: ([r["epoch"] for r in rows if name in (r.get(key) or {})],
                       [r[key][name] for r in rows if name in (r.get(key) or {})]) for name in layers}

    written = []

    def figure(name, title, ylabel, lines):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for label, (xs, ys) in lines.items():
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if lines:
            ax.legend(fontsize=7 if len(lines) > 6 else 9, ncol=2 if len(lines) > 10 else 1)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        run_folder.record(path)  # inside a run folder: its manifest lists plots/
        written.append(path)

    figure("loss", "loss", "loss", {"train": series("train_loss"), "test": series("test_loss")})
    figure("accuracy", "accuracy", "accuracy (%)", {"train": series("train_acc"), "test": series("test_acc")})
    figure("width", "relaxation width α per LIF layer", "mean α", per_layer("width"))
    figure("firing_rate", "firing rate per LIF layer (eval)", "fraction of nonzero outputs", per_layer("firing_rate"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgl.train.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder holding metrics.jsonl")
    parser.add_argument("--out", default=None, help="where to write the PNGs (default RUN_DIR/plots)")
    args = parser.parse_args(argv)
    try:
        paths = plot_run(args.run_dir, args.out)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
