"""Noise probability: test accuracy of the SNN against the analog-mode probability p at a large α.

    python -m asgl.train.studies.noise_probability [--quick] [--seeds 3] [--ps 0.2 0.8 1]

Same network and shared settings as the width study (:data:`width_robustness.SHARED`), initial
width α = ``ALPHA`` (learnable), p ∈ ``PS`` kept constant (γ = 1). p = 0 is learnable-width SG
without noise; p = 1 trains the smooth "prototype" network (every neuron emits H_α(z)) and is,
like every run, *evaluated as the SNN* (spikes only), so it measures how well a network trained
fully smooth transfers to spikes.

Every p runs twice: with the default slope floor (``model.min_slope`` = 0.01) and with the authors'
unbounded slope (``model.min_slope=null``), to measure what the floor changes where the unbounded
slope crossed zero before (p ≥ 0.8). Evaluated on the 10,000-image jittered test set
(:mod:`asgl.train.studies.digits_jitter`).

Writes ``OUT/noise_probability.json`` and ``OUT/noise_probability.png``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from asgl.train.studies import common, digits_jitter
from asgl.train.studies.width_robustness import QUICK_SHARED, SHARED

ALPHA = 10.0
PS = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
QUICK_PS = (0.0, 1.0)
MIN_SLOPES = (0.01, None)  # the default floor, and the authors' unbounded slope


def sweep(shared: dict, ps, seeds: int, runs_dir: Path, on_record=None, min_slopes=MIN_SLOPES) -> list[dict]:
    """All (seed, floor, p) runs, seed-major; each record has ``p`` and ``min_slope``."""
    records = []
    for seed in range(seeds):
        for min_slope in min_slopes:
            for p in ps:
                overrides = {**shared, "model.width": ALPHA, "model.learn_width": True, "model.p": p,
                             "model.min_slope": min_slope, "train.seed": seed}
                tag = f"p{p:g}{'' if min_slope is not None else '_unbounded'}_s{seed}".replace(".", "p")
                records.append(common.run_training(tag, overrides, runs_dir=runs_dir, p=p, alpha=ALPHA,
                                                   min_slope=min_slope))
                if on_record is not None:
                    on_record(records)
    return records


def plot(summary: list[dict], records: list[dict], path: Path, model: str) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for min_slope, color in zip(MIN_SLOPES, ("tab:blue", "tab:orange")):
        label = f"slope floor k ≥ {min_slope:g}" if min_slope is not None else "unbounded slope (authors')"
        rows = sorted((r for r in summary if r["mean"] is not None and r["min_slope"] == min_slope),
                      key=lambda r: r["p"])
        ax.errorbar([r["p"] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] for r in rows], marker="o",
                    capsize=3, color=color, label=f"{label}: mean ± std")
        done = [r for r in records if r["final_test_acc"] is not None and r["min_slope"] == min_slope]
        ax.scatter([r["p"] for r in done], [r["final_test_acc"] for r in done], color=color, s=10, alpha=0.5)
    ax.set_xlabel("noise probability p (fraction of neurons in analog mode)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(f"{model}, initial α = {ALPHA:g} (learnable)")
    ax.legend()
    common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = common.parser("noise_probability", __doc__.split("\n")[0], default_seeds=3)
    p.add_argument("--ps", type=float, nargs="+", default=None, help=f"noise probabilities (default {PS})")
    args = p.parse_args(argv)
    seeds = common.check_seeds(args.seeds)
    shared = QUICK_SHARED if args.quick else SHARED
    ps = tuple(args.ps) if args.ps else QUICK_PS if args.quick else PS
    if not all(0.0 <= x <= 1.0 for x in ps):
        raise ValueError(f"--ps must be probabilities in [0, 1], got {list(ps)}")
    t0 = time.perf_counter()
    digits_jitter.ensure()
    settings = {"shared": shared, "alpha": ALPHA, "learn_width": True, "ps": list(ps), "seeds": seeds,
                "min_slopes": list(MIN_SLOPES), "gamma": 1.0, "quick": args.quick, "num_test": digits_jitter.N_TEST}

    def save(records: list[dict], complete: bool = False) -> None:
        summary = common.summarize(records, ("min_slope", "p"))
        common.save_study(args.out / "noise_probability.json", "noise_probability", settings, records, summary,
                          time.perf_counter() - t0, complete=complete)
        plot(summary, records, args.out / "noise_probability.png", shared["model.name"])

    save(sweep(shared, ps, seeds, args.runs_dir, on_record=save), complete=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
