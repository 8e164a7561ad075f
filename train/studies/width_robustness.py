"""Width robustness (ASGL.md §5): SG collapses as the relaxation width α grows, ASGL does not.

    python -m asgl.train.studies.width_robustness [--quick] [--seeds 3] [--alphas 0.5 1 ...]
        [--part sweep|unbounded|tuning|paper_lr|diagnose|length|depth|all]

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

Evaluation: the final epoch only, on the 10,000-image jittered test set of
:mod:`asgl.train.studies.digits_jitter` (one image = 0.01 %), so that one run's accuracy has a 95 %
interval of about ± 0.3–1 point instead of the 360-image set's ± 1.5–5.

Parts (``--part``, default ``all``), each with its own JSON in OUT:

    sweep      the α table above, ``--seeds`` seeds, slope floor on (the default
               ``model.min_slope`` = 0.01)                   width_robustness.json / .png
    unbounded  the ASGL row of ``sweep`` with the authors' unbounded slope (``model.min_slope=null``);
               SG's width is fixed, so the floor cannot change it   width_robustness_unbounded.json
    tuning     the same tuning budget for both methods at α = 10, ``--seeds`` seeds: ASGL over the
               neuron LR ``NEURON_LRS`` (the last matches the paper's lr × steps), SG over the weight
               LR ``WEIGHT_LRS`` (as many values)            tuning.json / .png
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

from asgl.train.data.loader import train_batches
from asgl.train.studies import common, digits_jitter

ALPHAS = (0.5, 1.0, 2.5, 5.0, 10.0)
P_ASGL = 0.2
NEURON_LR = 3e-2
EPOCHS = 6
BATCH = 64
SHARED = {  # identical for SG and ASGL
    "model.name": "digits_cnn8",
    "model.T": 2,
    "optim.epochs": EPOCHS,
    "data.batch_size": BATCH,
    "data.root": str(digits_jitter.ROOT),
    "data.eval_batch_size": 1000,
    "optim.lr": 0.1,
    "optim.neuron_lr": NEURON_LR,
    "train.log_every": 1000,
    "train.eval_every": EPOCHS,
}
# The paper's neuron Adam: lr 3e-4 over 100 CIFAR epochs of ceil(50,000 / 128) = 391 steps. A digits
# run has EPOCHS · 22 = 132 steps (1,437 images, batch 64, the partial batch dropped), so the same
# lr × steps product — the distance Adam can move the slope — needs 3e-4 · 39,100 / 132 ≈ 0.089.
PAPER_NEURON_LR, PAPER_STEPS = 3e-4, 100 * 391
RUN_STEPS = EPOCHS * train_batches(1437, BATCH, 1)
MATCHED_NEURON_LR = round(PAPER_NEURON_LR * PAPER_STEPS / RUN_STEPS, 4)
NEURON_LRS = (3e-4, 3e-3, 1e-2, 3e-2, MATCHED_NEURON_LR)  # ASGL's knob at α = 10
WEIGHT_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)  # SG's knob at α = 10: as many values, log-spaced around 0.1
METHODS = {  # the ASGL-specific knobs only
    "SG": {"model.learn_width": False, "model.p": 0.0},
    "ASGL": {"model.learn_width": True, "model.p": P_ASGL},
}
QUICK_SHARED = {**SHARED, "model.name": "digits_cnn", "optim.epochs": 1, "data.batch_size": 512,
                "train.eval_every": 1}
QUICK_ALPHAS = (1.0, 10.0)


def alpha_tag(alpha: float) -> str:
    return f"{alpha:g}".replace(".", "p")


def sweep(shared: dict, alphas, seeds: int, runs_dir: Path, on_record=None, methods=None) -> list[dict]:
    """All (seed, α, method) runs, seed-major so that an interrupted sweep has whole seeds;
    ``on_record(records)`` is called after every run (to save partial results). ``methods``:
    name -> knobs (default :data:`METHODS`)."""
    records = []
    for seed in range(seeds):
        for alpha in alphas:
            for method, knobs in (methods or METHODS).items():
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


def tuning(shared: dict, seeds: int, runs_dir: Path, quick: bool, on_record=None, neuron_lrs=NEURON_LRS,
           weight_lrs=WEIGHT_LRS) -> list[dict]:
    """At α = 10: ASGL over the neuron LR and SG over the weight LR, the same number of values each
    (one tuning budget), seed-major. Each record names its ``knob`` and ``value``."""
    grids = {"ASGL": ("optim.neuron_lr", neuron_lrs), "SG": ("optim.lr", weight_lrs)}
    grids = {method: grid for method, grid in grids.items() if grid[1]}
    if quick:
        grids = {method: (knob, values[-2:]) for method, (knob, values) in grids.items()}
    records = []
    for seed in range(seeds):
        for method, (knob, values) in grids.items():
            for value in values:
                overrides = {**shared, **METHODS[method], "model.width": 10.0, knob: value, "train.seed": seed}
                tag = f"tune_{method.lower()}_{knob.split('.')[-1]}{value:g}_s{seed}"
                records.append(common.run_training(tag, overrides, runs_dir=runs_dir, method=method, knob=knob,
                                                   value=value, alpha=10.0))
                if on_record is not None:
                    on_record(records)
    return records


def plot_tuning(summary: list[dict], records: list[dict], path: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, color, label in (("ASGL", "tab:blue", "ASGL: neuron lr"), ("SG", "tab:red", "SG: weight lr")):
        rows = sorted((r for r in summary if r["method"] == method and r["mean"] is not None), key=lambda r: r["value"])
        ax.errorbar([r["value"] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] for r in rows],
                    marker="o", capsize=3, color=color, label=label)
        recs = [r for r in records if r["method"] == method and r["final_test_acc"] is not None]
        ax.scatter([r["value"] for r in recs], [r["final_test_acc"] for r in recs], color=color, s=10, alpha=0.5)
    ax.axvline(MATCHED_NEURON_LR, color="tab:blue", ls=":", lw=1, label="neuron lr matching the paper's lr × steps")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate of the tuned knob")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("α = 10: one tuning budget each (5 values × seeds)")
    ax.legend(fontsize=8)
    common.save_figure(fig, path)


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


def parse_args(argv: list[str] | None):
    p = common.parser("width_robustness", __doc__.split("\n")[0], default_seeds=3)
    p.add_argument("--part", choices=("sweep", "unbounded", "tuning", "paper_lr", "diagnose", "length", "depth",
                                      "all"), default="all",
                   help="which part to run (see the module docstring); all: every part")
    p.add_argument("--alphas", type=float, nargs="+", default=None,
                   help=f"initial widths of the sweep parts (default {ALPHAS})")
    p.add_argument("--neuron-lrs", type=float, nargs="*", default=None,
                   help=f"tuning: ASGL's neuron LRs (default {NEURON_LRS}; none: no ASGL runs)")
    p.add_argument("--weight-lrs", type=float, nargs="*", default=None,
                   help=f"tuning: SG's weight LRs (default {WEIGHT_LRS}; none: no SG runs)")
    p.add_argument("--tuning-name", default="tuning", help="tuning: stem of the JSON / PNG (default tuning)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = common.check_seeds(args.seeds)
    shared = QUICK_SHARED if args.quick else SHARED
    alphas = tuple(args.alphas) if args.alphas else QUICK_ALPHAS if args.quick else ALPHAS
    if not all(a > 0 for a in alphas):
        raise ValueError(f"--alphas must be widths > 0, got {list(alphas)}")
    digits_jitter.ensure()
    sweeps = {"sweep": ("width_robustness", shared, METHODS),
              "unbounded": ("width_robustness_unbounded", {**shared, "model.min_slope": None},
                            {"ASGL": METHODS["ASGL"]}),
              "paper_lr": ("width_robustness_paper_lr", {**shared, "optim.neuron_lr": 3e-4}, METHODS)}
    for part, (stem, sweep_shared, methods) in sweeps.items():
        if args.part not in (part, "all"):
            continue
        t0 = time.perf_counter()
        settings = {"shared": sweep_shared, "methods": methods, "alphas": list(alphas), "seeds": seeds,
                    "quick": args.quick, "num_test": digits_jitter.N_TEST,
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
        save(sweep(sweep_shared, alphas, seeds, runs_dir, on_record=save, methods=methods), complete=True)
    if args.part in ("tuning", "all"):
        t0 = time.perf_counter()
        neuron_lrs = NEURON_LRS if args.neuron_lrs is None else tuple(args.neuron_lrs)
        weight_lrs = WEIGHT_LRS if args.weight_lrs is None else tuple(args.weight_lrs)
        if not all(v > 0 for v in neuron_lrs + weight_lrs) or not (neuron_lrs or weight_lrs):
            raise ValueError(f"--neuron-lrs / --weight-lrs must be > 0 and not both empty, got "
                             f"{list(neuron_lrs)} / {list(weight_lrs)}")
        stem = args.tuning_name
        tune_settings = {"shared": shared, "alpha": 10.0, "seeds": seeds, "quick": args.quick,
                         "num_test": digits_jitter.N_TEST, "neuron_lrs": list(neuron_lrs),
                         "weight_lrs": list(weight_lrs), "matched_neuron_lr": MATCHED_NEURON_LR,
                         "paper": {"neuron_lr": PAPER_NEURON_LR, "steps": PAPER_STEPS}, "run_steps": RUN_STEPS}

        def save_tune(records: list[dict], complete: bool = False) -> None:
            summary = common.summarize(records, ("method", "knob", "value"))
            common.save_study(args.out / f"{stem}.json", "width_tuning", tune_settings, records, summary,
                              time.perf_counter() - t0, complete=complete)
            plot_tuning(summary, records, args.out / f"{stem}.png")

        save_tune(tuning(shared, seeds, args.runs_dir / stem, args.quick, on_record=save_tune, neuron_lrs=neuron_lrs,
                         weight_lrs=weight_lrs), complete=True)
    if args.part in ("diagnose", "all"):
        t0 = time.perf_counter()

        def save_diag(records: list[dict], complete: bool = False) -> None:
            common.save_study(args.out / "diagnostics.json", "width_diagnostics",
                              {"shared": shared, "alpha": 10.0, "quick": args.quick, "num_test": digits_jitter.N_TEST},
                              records,
                              common.summarize(records, ("variant",)), time.perf_counter() - t0, complete=complete)

        save_diag(diagnostics(shared, args.runs_dir, args.quick, on_record=save_diag), complete=True)
    if args.part in ("length", "all"):
        t0 = time.perf_counter()
        lengths = QUICK_LENGTHS if args.quick else LENGTHS
        n_seeds = min(seeds, 2)

        def save_len(records: list[dict], complete: bool = False) -> None:
            common.save_study(args.out / "length.json", "width_length",
                              {"shared": shared, "alpha": 10.0, "lengths": list(lengths), "seeds": n_seeds,
                               "quick": args.quick, "num_test": digits_jitter.N_TEST}, records,
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
                               "seeds": n_seeds, "quick": args.quick, "num_test": digits_jitter.N_TEST}, records,
                              common.summarize(records, ("model", "method", "alpha")), time.perf_counter() - t0,
                              complete=complete)

        models = DEPTH_MODELS[:1] if args.quick else DEPTH_MODELS
        save_depth(depth_study(shared, models, depth_alphas, n_seeds, args.runs_dir, on_record=save_depth),
                   complete=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
