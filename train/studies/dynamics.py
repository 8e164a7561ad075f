"""Network dynamics: the learned width α and the firing rate of every layer over training.

    python -m asgl.train.studies.dynamics [--quick] [--seeds 1] [--alpha 10] [--epochs 12] [--from-run RUN_DIR]

Trains ASGL runs (the width study's shared settings, learnable α from ``--alpha``, p = 0.2) — or
reads an existing run folder with ``--from-run`` — and extracts from ``metrics.jsonl`` per epoch:
``width[layer]`` (α = 1/k, mean over channels for per-channel widths) and ``firing_rate[layer]``
(spikes per neuron per time step of the pure SNN on the test set), plus the test accuracy.

Writes ``OUT/dynamics.json`` and ``OUT/dynamics.png`` (widths, firing rates, accuracy vs epoch).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from asgl.train.studies import common
from asgl.train.studies.width_robustness import METHODS, QUICK_SHARED, SHARED


def series(rows: list[dict]) -> dict:
    """Per-epoch series from metrics rows: ``{"epoch": [...], "test_acc": [...], "p": [...],
    "width": {layer: [...]}, "firing_rate": {layer: [...]}}`` (layers in network order)."""
    if not rows:
        raise ValueError("rows must hold at least one metrics row (is metrics.jsonl empty?)")
    layers = list(rows[-1].get("width", {}))
    return {
        "epoch": [r["epoch"] for r in rows],
        "test_acc": [r.get("test_acc") for r in rows],
        "p": [r.get("p") for r in rows],
        "width": {name: [r.get("width", {}).get(name) for r in rows] for name in layers},
        "firing_rate": {name: [r.get("firing_rate", {}).get(name) for r in rows] for name in layers},
    }


def plot(traces: list[dict], path: Path) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    trace = traces[0]["series"]
    cmap = plt.get_cmap("viridis")
    layers = list(trace["width"])
    for i, name in enumerate(layers):
        color = cmap(i / max(1, len(layers) - 1))
        axes[0].plot(trace["epoch"], trace["width"][name], marker=".", color=color, label=name)
        axes[1].plot(trace["epoch"], trace["firing_rate"][name], marker=".", color=color, label=name)
    for t in traces:
        axes[2].plot(t["series"]["epoch"], t["series"]["test_acc"], marker=".", label=f"seed {t['seed']}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("width α (log)")
    axes[0].set_title(f"learned width per layer (initial α = {traces[0]['alpha']:g})")
    axes[1].set_ylabel("firing rate (spikes / neuron / step)")
    axes[1].set_title("firing rate per layer (test set, SNN)")
    axes[2].set_ylabel("test accuracy (%)")
    axes[2].set_title("test accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = common.parser("dynamics", __doc__.split("\n")[0], default_seeds=1)
    p.add_argument("--alpha", type=float, default=10.0, help="initial width α (default 10)")
    p.add_argument("--epochs", type=int, default=12, help="epochs of the trained runs (default 12)")
    p.add_argument("--from-run", type=Path, default=None, help="read this run folder instead of training")
    args = p.parse_args(argv)
    seeds = common.check_seeds(args.seeds)
    if not args.alpha > 0:
        raise ValueError(f"--alpha must be > 0, got {args.alpha!r}")
    if isinstance(args.epochs, bool) or args.epochs < 1:
        raise ValueError(f"--epochs must be a positive integer, got {args.epochs!r}")
    shared = {**QUICK_SHARED, "optim.epochs": 2} if args.quick else {**SHARED, "optim.epochs": args.epochs}
    t0 = time.perf_counter()
    if args.from_run is not None:
        rows = common.read_metrics(args.from_run)
        records = [{"name": args.from_run.name, "run_dir": str(args.from_run), "seed": None, "overrides": None,
                    "alpha": args.alpha, "final_test_acc": rows[-1].get("test_acc") if rows else None}]
    else:
        records = []
        for seed in range(seeds):
            overrides = {**shared, **METHODS["ASGL"], "model.width": args.alpha, "train.seed": seed}
            records.append(common.run_training(f"asgl_a{args.alpha:g}_s{seed}".replace(".", "p"), overrides,
                                               runs_dir=args.runs_dir, method="ASGL", alpha=args.alpha))
    traces = [{"name": r["name"], "seed": r["seed"], "alpha": args.alpha,
               "series": series(common.read_metrics(Path(r["run_dir"])))} for r in records]
    settings = {"shared": shared, "alpha": args.alpha, "p": METHODS["ASGL"]["model.p"], "seeds": seeds,
                "from_run": str(args.from_run) if args.from_run else None, "quick": args.quick}
    common.save_study(args.out / "dynamics.json", "dynamics", settings, records, [], time.perf_counter() - t0,
                      traces=traces)
    plot(traces, args.out / "dynamics.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
