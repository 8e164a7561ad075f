"""Width robustness (ASGL.md §5): SG collapses as the relaxation width α grows, ASGL does not.

    python -m asgl.train.studies.width_robustness [--quick] [--seeds 3] [--part sweep|paper_lr|diagnose|length|depth|all]

For every initial width α in ``ALPHAS`` and every seed, two runs of the 8-conv digits net
(``digits_cnn8``, T = 2 as in the paper's width table) that differ ONLY in the ASGL-specific knobs:

    SG    model.learn_width=false  model.p=0                 (fixed H_α, plain surrogate gradient)
    ASGL  model.learn_width=true   model.p=P_ASGL            (learnable α, noisy hybrid training)

Everything else — epochs, batch, weight optimizer and LR schedule, weight decay, T, the network,
and ``optim.neuron_lr`` (the Adam LR of the neuron parameters: for SG it only moves the leak,
since its width is frozen) — is shared. ``neuron_lr`` is scaled to the run length: the paper's
3e-4 over ~39k optimizer steps (100 CIFAR epochs) lets the width parameter k = 1/α move by
O(10); over the ~130 steps of a digits run (6 epochs × 22) it moves by < 0.04, i.e. not at all (see
``--part diagnose``), so the sweep uses ``NEURON_LR`` instead (the same for both methods).

Parts (``--part``, default ``all``), each with its own JSON in OUT:

    sweep      the α table above, ``--seeds`` seeds            width_robustness.json / .png
    paper_lr   the same with the paper's neuron_lr = 3e-4      width_robustness_paper_lr.json / .png
    diagnose   single-seed variants at α = 10 that separate the ingredients (width lr, noise with and
               without a learnable width, noise annealing, run length)           diagnostics.json
    length     SG / ASGL / ASGL with lr 3e-4 at α = 10 over 6, 12, 24 epochs    length.json
    depth      SG vs ASGL on the 3-conv ``digits_cnn`` and the 8-conv net         depth.json

(``length`` and ``depth`` use at most 2 seeds.) Settings where ASGL does not win are reported too.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from asgl.train.studies import common

ALPHAS = (0.5, 1.0, 2.5, 5.0, 10.0)
P_ASGL = 0.2
NEURON_LR = 3e-2
SHARED = {  # identical for SG and ASGL
    "model.name": "digits_cnn8",
    "model.T": 2,
    "optim.epochs": 6,
    "data.batch_size": 64,
    "optim.lr": 0.1,
    "optim.neuron_lr": NEURON_LR,
    "train.log_every": 1000,
}
METHODS = {  # the ASGL-specific knobs only
    "SG": {"model.learn_width": False, "model.p": 0.0},
    "ASGL": {"model.learn_width": True, "model.p": P_ASGL},
}
QUICK_SHARED = {**SHARED, "model.name": "digits_cnn", "optim.epochs": 1, "data.batch_size": 512}
QUICK_ALPHAS = (1.0, 10.0)


def alpha_tag(alpha: float) -> str:
    return f"{alpha:g}".replace(".", "p")


def sweep(shared: dict, alphas, seeds: int, runs_dir: Path, on_record=None) -> list[dict]:
    """All (seed, α, method) runs, seed-major so that an interrupted sweep has whole seeds;
    ``on_record(records)`` is called after every run (to save partial results)."""
    records = []
    for seed in range(seeds):
        for alpha in alphas:
            for method, knobs in METHODS.items():
                overrides = {**shared, **knobs, "model.width": alpha, "train.seed": seed}
                records.append(common.run_training(f"{method.lower()}_a{alpha_tag(alpha)}_s{seed}", overrides,
                                                   runs_dir=runs_dir, method=method, alpha=alpha))
                if on_record is not None:
                    on_record(records)
    return records


def diagnostics(shared: dict, runs_dir: Path, quick: bool, on_record=None) -> list[dict]:
    """Single-seed variants at α = 10 (see the module docstring); each names what it changes."""
    alpha = 10.0
    base = {**shared, "model.width": alpha, "train.seed": 0}
    paper_lr = {"optim.neuron_lr": 3e-4}
    long = {"optim.epochs": 2 if quick else 2 * shared["optim.epochs"]}
    variants = [
        ("sg", "SG (fixed α, p=0)", METHODS["SG"]),
        ("asgl", "ASGL, p=0.2, width lr scaled", METHODS["ASGL"]),
        ("asgl_lr3e-4", "ASGL, p=0.2, paper width lr 3e-4", {**METHODS["ASGL"], **paper_lr}),
        ("sg_lr3e-4", "SG, leak lr 3e-4", {**METHODS["SG"], **paper_lr}),
        ("lw_p0", "learnable α only (p=0)", {"model.learn_width": True, "model.p": 0.0}),
        ("fixed_p0.2", "noise only (fixed α, p=0.2)", {"model.learn_width": False, "model.p": 0.2}),
        ("asgl_anneal", "ASGL, p=0.2 annealed (γ=0.5)", {**METHODS["ASGL"], "noise.gamma": 0.5}),
        ("sg_long", "SG, 2× epochs", {**METHODS["SG"], **long}),
        ("asgl_long_lr3e-4", "ASGL, 2× epochs, width lr 3e-4", {**METHODS["ASGL"], **long, **paper_lr}),
    ]
    if quick:  # the smoke test: one variant
        variants = variants[2:3]
    records = []
    for tag, label, knobs in variants:
        overrides = {**base, **knobs}
        records.append(common.run_training(f"diag_{tag}", overrides, runs_dir=runs_dir, variant=tag, label=label,
                                           alpha=alpha))
        if on_record is not None:
            on_record(records)
    return records


LENGTHS = (6, 12, 24)
QUICK_LENGTHS = (1,)
DEPTH_MODELS = ("digits_cnn", "digits_cnn8")


def length_study(shared: dict, lengths, seeds: int, runs_dir: Path, on_record=None) -> list[dict]:
    """SG, ASGL (scaled width lr) and ASGL (paper width lr 3e-4) at α = 10 for several run lengths:
    does SG recover with more steps, and when does the paper's width lr start to move the width?"""
    variants = {"SG": METHODS["SG"], "ASGL": METHODS["ASGL"],
                "ASGL lr3e-4": {**METHODS["ASGL"], "optim.neuron_lr": 3e-4}}
    records = []
    for seed in range(seeds):
        for epochs in lengths:
            for method, knobs in variants.items():
                overrides = {**shared, **knobs, "optim.epochs": epochs, "model.width": 10.0, "train.seed": seed}
                tag = method.lower().replace(" ", "_")
                records.append(common.run_training(f"len_{tag}_e{epochs}_s{seed}", overrides, runs_dir=runs_dir,
                                                   method=method, epochs_set=epochs, alpha=10.0))
                if on_record is not None:
                    on_record(records)
    return records


def depth_study(shared: dict, models, alphas, seeds: int, runs_dir: Path, on_record=None) -> list[dict]:
    """SG vs ASGL on the 3-conv and the 8-conv digits nets at a small and a large α."""
    records = []
    for seed in range(seeds):
        for model in models:
            for alpha in alphas:
                for method, knobs in METHODS.items():
                    overrides = {**shared, **knobs, "model.name": model, "model.width": alpha, "train.seed": seed}
                    records.append(common.run_training(f"depth_{model}_{method.lower()}_a{alpha_tag(alpha)}_s{seed}",
                                                       overrides, runs_dir=runs_dir, method=method, model=model,
                                                       alpha=alpha))
                    if on_record is not None:
                        on_record(records)
    return records


def plot(summary: list[dict], records: list[dict], path: Path, title: str) -> None:
    plt = common.pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    for method, color in (("SG", "tab:red"), ("ASGL", "tab:blue")):
        rows = sorted((r for r in summary if r["method"] == method and r["mean"] is not None),
                      key=lambda r: r["alpha"])
        ax.errorbar([r["alpha"] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] for r in rows],
                    marker="o", capsize=3, color=color, label=method)
        recs = [r for r in records if r["method"] == method and r["final_widths"]]
        bx.scatter([r["alpha"] for r in recs],
                   [sum(r["final_widths"].values()) / len(r["final_widths"]) for r in recs],
                   color=color, label=method, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("initial width α")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(title)
    ax.legend()
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("initial width α")
    bx.set_ylabel("final width α (mean over layers)")
    bx.set_title("learned width at the end of training")
    bx.legend()
    common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = common.parser("width_robustness", __doc__.split("\n")[0], default_seeds=3)
    p.add_argument("--part", choices=("sweep", "paper_lr", "diagnose", "length", "depth", "all"), default="all",
                   help="which part to run (see the module docstring); all: every part")
    args = p.parse_args(argv)
    seeds = common.check_seeds(args.seeds)
    shared = QUICK_SHARED if args.quick else SHARED
    alphas = QUICK_ALPHAS if args.quick else ALPHAS
    sweeps = {"sweep": ("width_robustness", shared), "paper_lr": ("width_robustness_paper_lr",
                                                                  {**shared, "optim.neuron_lr": 3e-4})}
    for part, (stem, sweep_shared) in sweeps.items():
        if args.part not in (part, "all"):
            continue
        t0 = time.perf_counter()
        settings = {"shared": sweep_shared, "methods": METHODS, "alphas": list(alphas), "seeds": seeds,
                    "quick": args.quick,
                    "rule": "SG and ASGL share every setting (epochs, batch, weight optimizer, LR schedule, "
                            "T, network, neuron_lr); they differ only in learn_width and p."}

        def save(records: list[dict], complete: bool = False) -> None:
            summary = common.summarize(records, ("method", "alpha"))
            common.save_study(args.out / f"{stem}.json", stem, settings, records, summary,
                              time.perf_counter() - t0, complete=complete)
            plot(summary, records, args.out / f"{stem}.png",
                 f"{sweep_shared['model.name']}, T = {sweep_shared['model.T']}, {sweep_shared['optim.epochs']} "
                 f"epochs, neuron_lr {sweep_shared['optim.neuron_lr']:g}")

        runs_dir = args.runs_dir if part == "sweep" else args.runs_dir / part
        save(sweep(sweep_shared, alphas, seeds, runs_dir, on_record=save), complete=True)
    if args.part in ("diagnose", "all"):
        t0 = time.perf_counter()

        def save_diag(records: list[dict], complete: bool = False) -> None:
            common.save_study(args.out / "diagnostics.json", "width_diagnostics",
                              {"shared": shared, "alpha": 10.0, "quick": args.quick}, records,
                              common.summarize(records, ("variant",)), time.perf_counter() - t0, complete=complete)

        save_diag(diagnostics(shared, args.runs_dir, args.quick, on_record=save_diag), complete=True)
    if args.part in ("length", "all"):
        t0 = time.perf_counter()
        lengths = QUICK_LENGTHS if args.quick else LENGTHS
        n_seeds = min(seeds, 2)

        def save_len(records: list[dict], complete: bool = False) -> None:
            common.save_study(args.out / "length.json", "width_length",
                              {"shared": shared, "alpha": 10.0, "lengths": list(lengths), "seeds": n_seeds,
                               "quick": args.quick}, records,
                              common.summarize(records, ("method", "epochs_set")), time.perf_counter() - t0,
                              complete=complete)

        save_len(length_study(shared, lengths, n_seeds, args.runs_dir, on_record=save_len), complete=True)
    if args.part in ("depth", "all"):
        t0 = time.perf_counter()
        depth_alphas = (10.0,) if args.quick else (1.0, 10.0)
        n_seeds = min(seeds, 2)

        def save_depth(records: list[dict], complete: bool = False) -> None:
            common.save_study(args.out / "depth.json", "width_depth",
                              {"shared": shared, "models": list(DEPTH_MODELS), "alphas": list(depth_alphas),
                               "seeds": n_seeds, "quick": args.quick}, records,
                              common.summarize(records, ("model", "method", "alpha")), time.perf_counter() - t0,
                              complete=complete)

        models = DEPTH_MODELS[:1] if args.quick else DEPTH_MODELS
        save_depth(depth_study(shared, models, depth_alphas, n_seeds, args.runs_dir, on_record=save_depth),
                   complete=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
