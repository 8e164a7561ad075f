"""Noise probability: test accuracy of the SNN against the analog-mode probability p at a large α.

    python -m asgl.train.studies.noise_probability [--quick] [--seeds 3]

Same network and shared settings as the width study (:data:`width_robustness.SHARED`), initial
width α = ``ALPHA`` (learnable), p ∈ ``PS`` kept constant (γ = 1). p = 0 is learnable-width SG
without noise; p = 1 trains the smooth "prototype" network (every neuron emits H_α(z)) and is,
like every run, *evaluated as the SNN* (spikes only), so it measures how well a network trained
fully smooth transfers to spikes.

Writes ``OUT/noise_probability.json`` and ``OUT/noise_probability.png``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from asgl.train.studies import common
from asgl.train.studies.width_robustness import QUICK_SHARED, SHARED

ALPHA = 10.0
PS = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
QUICK_PS = (0.0, 1.0)


def sweep(shared: dict, ps, seeds: int, runs_dir: Path, on_record=None) -> list[dict]:
    records = []
    for seed in range(seeds):
        for p in ps:
            overrides = {**shared, "model.width": ALPHA, "model.learn_width": True, "model.p": p,
                         "train.seed": seed}
            records.append(common.run_training(f"p{p:g}_s{seed}".replace(".", "p"), overrides, runs_dir=runs_dir,
                                               p=p, alpha=ALPHA))
            if on_record is not None:
                on_record(records)
    return records


def plot(summary: list[dict], records: list[dict], path: Path, model: str) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    rows = sorted((r for r in summary if r["mean"] is not None), key=lambda r: r["p"])
    ax.errorbar([r["p"] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] for r in rows], marker="o",
                capsize=3, label="SNN test accuracy (mean ± std)")
    ax.scatter([r["p"] for r in records if r["final_test_acc"] is not None],
               [r["final_test_acc"] for r in records if r["final_test_acc"] is not None],
               color="gray", s=12, alpha=0.7, label="single runs")
    ax.set_xlabel("noise probability p (fraction of neurons in analog mode)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(f"{model}, initial α = {ALPHA:g} (learnable)")
    ax.legend()
    common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = common.parser("noise_probability", __doc__.split("\n")[0], default_seeds=3).parse_args(argv)
    seeds = common.check_seeds(args.seeds)
    shared = QUICK_SHARED if args.quick else SHARED
    ps = QUICK_PS if args.quick else PS
    t0 = time.perf_counter()
    settings = {"shared": shared, "alpha": ALPHA, "learn_width": True, "ps": list(ps), "seeds": seeds,
                "gamma": 1.0, "quick": args.quick}

    def save(records: list[dict], complete: bool = False) -> None:
        summary = common.summarize(records, ("p",))
        common.save_study(args.out / "noise_probability.json", "noise_probability", settings, records, summary,
                          time.perf_counter() - t0, complete=complete)
        plot(summary, records, args.out / "noise_probability.png", shared["model.name"])

    save(sweep(shared, ps, seeds, args.runs_dir, on_record=save), complete=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
