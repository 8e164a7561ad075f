"""Regenerate the tables of ``docs/REPRODUCTION.md`` from the study JSON files.

    python -m asgl.train.studies.report [--results docs/results] [--doc docs/REPRODUCTION.md] [--check]

Every table lives between two marker comments in the document::

    <!-- table:width -->
    ...generated, do not edit...
    <!-- /table:width -->

and is rebuilt from ``RESULTS/<study>/<file>.json`` (see :data:`TABLES`); a table whose JSON file
is missing becomes a one-line "not run" note, so no number is ever typed by hand. ``--check``
changes nothing and exits 1 when the document is out of date.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

from asgl.train.studies import common, digits_jitter

REPO_ROOT = Path(__file__).resolve().parents[2]


def _acc(mean, std=None, n=None) -> str:
    if mean is None:
        return "—"
    text = f"{mean:.1f}"
    if std is not None and n is not None and n > 1:
        text += f" ± {std:.1f}"
    return text


def _mean_width(widths: dict) -> float | None:
    vals = [v for v in (widths or {}).values() if v is not None]
    return sum(vals) / len(vals) if vals else None


def _fmt(x, spec: str = ".3g") -> str:
    return "—" if x is None else format(x, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _incomplete(doc: dict) -> str:
    """A warning for a study JSON saved mid-sweep (``complete`` false)."""
    return "" if doc.get("complete", True) else " **Incomplete: the sweep had not finished when this was generated.**"


def _failed(row: dict) -> str:
    return f" ({row['failed']} failed)" if row.get("failed") else ""


def table_width(doc: dict) -> str:
    """Methods × α: final test accuracy mean ± std over seeds, and ASGL's mean final width."""
    alphas = doc["settings"]["alphas"]
    rows = []
    for method in doc["settings"]["methods"]:
        cells = []
        for alpha in alphas:
            row = next((r for r in doc["summary"] if r["method"] == method and r["alpha"] == alpha), None)
            cells.append(_acc(row["mean"], row["std"], row["n"]) + _failed(row) if row else "—")
        rows.append([f"{method} test acc (%)", *cells])
    for method in doc["settings"]["methods"]:
        cells = []
        for alpha in alphas:
            ws = [_mean_width(r["final_widths"]) for r in doc["runs"] if r["method"] == method and r["alpha"] == alpha]
            ws = [w for w in ws if w is not None]
            cells.append(_fmt(sum(ws) / len(ws)) if ws else "—")
        rows.append([f"{method} final α (layer mean)", *cells])
    if {"SG", "ASGL"} <= set(doc["settings"]["methods"]):
        rows.append(["ASGL − SG (95 % CI)", *[_diff_cell(_accs(doc["runs"], method="ASGL", alpha=a),
                                                         _accs(doc["runs"], method="SG", alpha=a)) for a in alphas]])
    seeds = doc["settings"]["seeds"]
    note = (f"\n\n{seeds} seed(s) per cell, final-epoch test accuracy of the SNN, mean ± sample std; difference: "
            f"Student-t interval over seeds; sweep wall time {doc['meta']['wall_s'] / 60:.1f} min."
            + _binomial_note(doc) + _incomplete(doc))
    return _table(["", *[f"α = {a:g}" for a in alphas]], rows) + note


def table_diagnostics(doc: dict) -> str:
    """One row per targeted variant at α = 10 (single seed)."""
    rows = []
    for r in doc["runs"]:
        o = r["overrides"]
        rows.append([r["label"], str(o.get("optim.epochs")), _fmt(o.get("optim.neuron_lr"), "g"),
                     _fmt(o.get("model.p"), "g"), str(o.get("noise.gamma", 1.0)),
                     "yes" if o.get("model.learn_width") else "no", _acc(r["final_test_acc"]),
                     _acc(r["best_test_acc"]), _fmt(_mean_width(r["final_widths"])), f"{r['wall_s']:.0f}"])
    header = ["variant (α₀ = 10, seed 0)", "epochs", "neuron_lr", "p₀", "γ", "learn α", "final acc", "best acc",
              "final α (mean)", "wall s"]
    return _table(header, rows) + f"\n\nwall time {doc['meta']['wall_s'] / 60:.1f} min." + _incomplete(doc)


def table_length(doc: dict) -> str:
    """Run length × variant at α = 10: final accuracy and the mean final width."""
    lengths = doc["settings"]["lengths"]
    methods = list(dict.fromkeys(r["method"] for r in doc["runs"]))
    rows = []
    for method in methods:
        cells = []
        for epochs in lengths:
            row = next((r for r in doc["summary"] if r["method"] == method and r["epochs_set"] == epochs), None)
            ws = [_mean_width(r["final_widths"]) for r in doc["runs"]
                  if r["method"] == method and r["epochs_set"] == epochs]
            ws = [w for w in ws if w is not None]
            acc = _acc(row["mean"], row["std"], row["n"]) + _failed(row) if row else "—"
            cells.append(f"{acc} (α {_fmt(sum(ws) / len(ws))})" if ws else acc)
        rows.append([method, *cells])
    note = (f"\n\nα₀ = 10; cell: final test accuracy (%) mean ± std over {doc['settings']['seeds']} seed(s), "
            f"(final α, layer mean); wall time {doc['meta']['wall_s'] / 60:.1f} min.") + _incomplete(doc)
    return _table(["method", *[f"{e} epochs ({e * 22} steps)" for e in lengths]], rows) + note


def table_depth(doc: dict) -> str:
    """Network × method × α: final accuracy."""
    alphas = doc["settings"]["alphas"]
    rows = []
    for model in doc["settings"]["models"]:
        for method in ("SG", "ASGL"):
            cells = []
            for alpha in alphas:
                row = next((r for r in doc["summary"]
                            if r["model"] == model and r["method"] == method and r["alpha"] == alpha), None)
                cells.append(_acc(row["mean"], row["std"], row["n"]) + _failed(row) if row else "—")
            rows.append([f"`{model}`", method, *cells])
        rows.append([f"`{model}`", "ASGL − SG (95 % CI)",
                     *[_diff_cell(_accs(doc["runs"], model=model, method="ASGL", alpha=a),
                                  _accs(doc["runs"], model=model, method="SG", alpha=a)) for a in alphas]])
    note = (f"\n\n{doc['settings']['seeds']} seed(s), final test accuracy (%); difference: Student-t interval "
            f"over seeds; wall time {doc['meta']['wall_s'] / 60:.1f} min." + _binomial_note(doc) + _incomplete(doc))
    return _table(["network", "method", *[f"α = {a:g}" for a in alphas]], rows) + note


def _ci(lo: float, hi: float) -> str:
    return f"[{lo:+.1f}, {hi:+.1f}]"


def _diff_cell(a: list[float], b: list[float]) -> str:
    """``mean(a) − mean(b)`` with its 95 % interval over seeds, or the reason there is none."""
    if len(a) < 2 or len(b) < 2:
        return "— (needs ≥ 2 seeds each)"
    diff, lo, hi = digits_jitter.difference_interval(a, b)
    return f"{diff:+.1f} {_ci(lo, hi)}"


def _accs(runs: list[dict], **where) -> list[float]:
    """Final accuracies of the finished runs whose keys equal ``where``."""
    return [r["final_test_acc"] for r in runs
            if all(r.get(k) == v for k, v in where.items()) and r["final_test_acc"] is not None]


def _negative_slopes(runs: list[dict]) -> int:
    """Runs that ended with a negative width α = 1/k in some layer (the slope crossed zero)."""
    return sum(any(w < 0 for w in (r["final_widths"] or {}).values()) for r in runs)


def _at_floor(runs: list[dict], min_slope: float) -> int:
    """Runs that ended with some layer's slope on the floor (α = 1/min_slope, to 0.1 %)."""
    return sum(any(w >= 0.999 / min_slope for w in (r["final_widths"] or {}).values()) for r in runs)


def _slope_cell(runs: list[dict], min_slope: float | None) -> str:
    """Unbounded: runs ending with k < 0 in some layer; floored: runs ending on the floor."""
    count = _negative_slopes(runs) if min_slope is None else _at_floor(runs, min_slope)
    return f"{count}/{len(runs)}"


def _binomial_note(doc: dict) -> str:
    """Which test set, and one run's 95 % Wilson half-width on it at 95 % accuracy."""
    n = doc["settings"].get("num_test")
    name = f"{n:,} jittered held-out digits" if n else "the bundled 360 held-out digits"
    n = n or 360
    lo, hi = digits_jitter.wilson_interval(95.0, n)
    return (f" Test set: {name} (one image = {100 / n:.2g} %); one run's 95 % Wilson interval at 95 % accuracy "
            f"is ± {(hi - lo) / 2:.2f} points.")


def table_noise(doc: dict) -> str:
    """p × slope floor: final accuracy, the floor's effect with its interval, runs whose slope ended < 0."""
    floors = doc["settings"].get("min_slopes", [None])
    runs = doc["runs"]

    def group(p, floor):
        return [r for r in runs if r["p"] == p and r.get("min_slope") == floor]

    def label(floor):
        return f"k ≥ {floor:g}" if floor is not None else "unbounded k"

    rows = []
    for p in sorted({r["p"] for r in runs}):
        cells = [f"{p:g}"]
        accs = {}
        for floor in floors:
            recs = group(p, floor)
            accs[floor] = [r["final_test_acc"] for r in recs if r["final_test_acc"] is not None]
            mean, std = common.mean_std(accs[floor]) if accs[floor] else (None, None)
            failed = len(recs) - len(accs[floor])
            cells.append(_acc(mean, std, len(accs[floor])) + (f" ({failed} failed)" if failed else "")
                         + f" (n={len(recs)})")
            cells.append(_slope_cell(recs, floor))
        if len(floors) == 2:
            cells.append(_diff_cell(accs[floors[0]], accs[floors[1]]))
        rows.append(cells)
    header = ["p"]
    for floor in floors:
        ends = "runs ending with k < 0" if floor is None else "runs ending on the floor"
        header += [f"{label(floor)}: final test acc (%)", f"{label(floor)}: {ends}"]
    if len(floors) == 2:
        header.append(f"{label(floors[0])} − {label(floors[1])} (95 % CI)")
    note = (f"\n\ninitial α = {doc['settings']['alpha']:g} (learnable), {doc['settings']['seeds']} seed(s) planned, "
            f"n = runs done; every run is evaluated as the pure SNN; difference: mean over seeds with a Student-t "
            f"interval (seeds as the unit); wall time {doc['meta']['wall_s'] / 60:.1f} min."
            + _binomial_note(doc) + _incomplete(doc))
    return _table(header, rows) + note


def table_tuning(doc: dict) -> str:
    """At α = 10: ASGL over the neuron LR, SG over the weight LR; each method's best value and the
    difference of the two bests with its interval."""
    st = doc["settings"]
    best = {}
    rows = []
    for method, knob, values in (("ASGL", "optim.neuron_lr", st["neuron_lrs"]), ("SG", "optim.lr", st["weight_lrs"])):
        cells = []
        for value in values:
            accs = [r["final_test_acc"] for r in doc["runs"] if r["method"] == method and r["value"] == value
                    and r["final_test_acc"] is not None]
            n_runs = sum(r["method"] == method and r["value"] == value for r in doc["runs"])
            mean, std = common.mean_std(accs) if accs else (None, None)
            cells.append(f"{value:g}: {_acc(mean, std, len(accs))} (n={n_runs})")
            if mean is not None and (method not in best or mean > best[method][1]):
                best[method] = (value, mean, accs)
        rows.append([method, f"`{knob}`", *cells])
    width = max(len(st["neuron_lrs"]), len(st["weight_lrs"]))
    rows = [row + [""] * (2 + width - len(row)) for row in rows if len(row) > 2]
    header = ["method", "tuned knob", *[f"value {i + 1}" for i in range(width)]]
    lines = [_table(header, rows), ""]
    if "ASGL" in best and "SG" in best:
        (va, ma, aa), (vs, ms, as_) = best["ASGL"], best["SG"]
        lines.append(f"Best of each: ASGL {_acc(ma)} % at neuron lr {va:g}, SG {_acc(ms)} % at weight lr {vs:g}; "
                     f"ASGL − SG = {_diff_cell(aa, as_)} (95 % CI over seeds; the best value was picked on these "
                     f"same runs, so both bests are optimistic alike).")
    lines.append(f"\nα₀ = 10, {st['seeds']} seed(s) planned, n = runs done; neuron lr {st['matched_neuron_lr']:g} "
                 f"matches the paper's lr × steps ({st['paper']['neuron_lr']:g} × {st['paper']['steps']:,} = "
                 f"{st['matched_neuron_lr']:g} × {st['run_steps']}); wall time {doc['meta']['wall_s'] / 60:.1f} min."
                 + _binomial_note(doc) + _incomplete(doc))
    return "\n".join(lines)


def table_floor(unbounded: dict, tuning: dict) -> str:
    """ASGL at α = 10 (neuron lr 3e-2, p = 0.2): the default slope floor (the tuning study's runs at
    that lr) against the unbounded slope, same seeds and test set."""
    lr = unbounded["settings"]["shared"]["optim.neuron_lr"]
    floor = [r for r in tuning["runs"] if r["method"] == "ASGL" and r["value"] == lr]
    free = [r for r in unbounded["runs"] if r["alpha"] == 10.0]
    rows = []
    for label, recs, min_slope in (("k ≥ 0.01 (default)", floor, 0.01), ("unbounded k (authors')", free, None)):
        accs = [r["final_test_acc"] for r in recs if r["final_test_acc"] is not None]
        mean, std = common.mean_std(accs) if accs else (None, None)
        widths = [w for r in recs for w in (r["final_widths"] or {}).values()]
        rows.append([label, _acc(mean, std, len(accs)), str(len(recs)), _slope_cell(recs, min_slope),
                     _fmt(min(widths)) if widths else "—", _fmt(max(widths)) if widths else "—"])
    a = [r["final_test_acc"] for r in floor if r["final_test_acc"] is not None]
    b = [r["final_test_acc"] for r in free if r["final_test_acc"] is not None]
    note = (f"\n\nASGL, α₀ = 10, p = 0.2, neuron lr {lr:g}, seeds 0–{max(len(floor), len(free)) - 1}; floor − "
            f"unbounded = {_diff_cell(a, b)} (95 % CI over seeds)." + _binomial_note(unbounded)
            + (_incomplete(unbounded) or _incomplete(tuning)))
    return _table(["slope", "final test acc (%)", "runs", "runs ending with k < 0 / on the floor", "min final α",
                   "max final α"],
                  rows) + note


def table_dynamics(doc: dict) -> str:
    trace = doc["traces"][0]["series"]
    rows = []
    for name in trace["width"]:
        w, f = trace["width"][name], trace["firing_rate"][name]
        rows.append([name, _fmt(w[0]), _fmt(w[-1]), _fmt(f[0], ".3f"), _fmt(f[-1], ".3f")])
    epochs = trace["epoch"]
    note = (f"\n\nrun `{doc['traces'][0]['name']}`, initial α = {doc['traces'][0]['alpha']:g}; values after "
            f"epoch {epochs[0]} and epoch {epochs[-1]}; final test accuracy {_acc(trace['test_acc'][-1])} %.")
    return _table(["layer", f"α after epoch {epochs[0]}", "α final", f"firing rate epoch {epochs[0]}",
                   "firing rate final"], rows) + note


def table_temporal(doc: dict) -> str:
    alphas = doc["settings"]["alphas"]
    rows = []
    for method in doc["settings"]["methods"]:
        cells = []
        for alpha in alphas:
            row = next((r for r in doc["summary"] if r["method"] == method and r["alpha"] == alpha), None)
            cells.append(_acc(row["mean"], row["std"], row["n"]) + _failed(row) if row else "—")
        rows.append([method, *cells])
    rows.append(["ASGL − SG (95 % CI)", *[_diff_cell(_accs(doc["runs"], method="ASGL", alpha=a),
                                                     _accs(doc["runs"], method="SG", alpha=a)) for a in alphas]])
    note = (f"\n\n{doc['settings']['seeds']} seed(s) per cell, final-epoch test accuracy (%); difference: "
            f"Student-t interval over seeds; wall time {doc['meta']['wall_s'] / 60:.1f} min."
            + _binomial_note(doc) + _incomplete(doc))
    return _table(["method", *[f"α = {a:g}" for a in alphas]], rows) + note


def table_walltime(docs: dict[str, dict]) -> str:
    rows = []
    for name, doc in docs.items():
        meta = doc["meta"]
        dirty = ", ".join(meta.get("uncommitted_study_files", [])) or "none"
        rows.append([name, str(len(doc["runs"])), f"{meta['wall_s'] / 60:.1f}", meta["commit"], dirty,
                     meta.get("date_utc", "—")])
    return _table(["study", "runs", "wall time (min)", "commit", "uncommitted study files", "date (UTC)"], rows)


# Full-scale experiments: (name, config, model, classes, input [C, H, W] or [F], T, train / test samples).
FULL_SCALE = (
    ("CIFAR-10, ResNet-18, T=4", "configs/cifar10_resnet18_t4.yaml", "resnet18", 10, (3, 32, 32), 4, 50_000, 10_000),
    ("CIFAR-10 width sweep (10 runs), ResNet-18, T=2", "configs/width_sweep/asgl_alpha5.yaml", "resnet18", 10,
     (3, 32, 32), 2, 50_000, 10_000),
    ("CIFAR-100, ResNet-18, T=2", "configs/cifar100_resnet18_t2.yaml", "resnet18", 100, (3, 32, 32), 2, 50_000,
     10_000),
    ("CIFAR-100, ResNet-18, T=4", "configs/cifar100_resnet18_t4.yaml", "resnet18", 100, (3, 32, 32), 4, 50_000,
     10_000),
    ("Tiny-ImageNet, VGG-13, T=4", "configs/tinyimagenet_vgg13_t4.yaml", "vgg13", 200, (3, 64, 64), 4, 100_000,
     10_000),
    ("Tiny-ImageNet, VGG-13, T=8", "configs/tinyimagenet_vgg13_t8.yaml", "vgg13", 200, (3, 64, 64), 8, 100_000,
     10_000),
    ("CIFAR10-DVS, VGGSNN, T=10", "configs/cifar10dvs_vggsnn_t10.yaml", "vggsnn", 10, (2, 48, 48), 10, 9_000, 1_000),
    ("SHD, 700-240-20 recurrent, T=250", "configs/shd_rnn_t250.yaml", "shd_rnn", 20, (700,), 250, 8_156, 2_264),
    ("DVS128 Gesture, VGGSNN, T=16", "configs/dvs128_gesture.yaml", "vggsnn", 11, (2, 48, 48), 16, 1_208, 134),
)
ASSUMED_TFLOPS = (25.0, 100.0)  # effective training throughput range of one A100/H100-class GPU (an assumption)
# Bytes the fused batch norm + LIF moves per neuron element-step in bf16: training (statistics,
# forward, backward; counted from the kernels by tests/test_bn_lif.py::test_bytes_per_element_step)
# and evaluation (read x, write y: the inference launch folds the running statistics).
BN_LIF_TRAIN_BYTES, BN_LIF_EVAL_BYTES = 18, 4


def expected_accuracy(config: Path) -> str:
    """The "Expected test accuracy: ..." line of a config's header comment (the paper's number)."""
    match = re.search(r"^# Expected test accuracy: (.*)$", Path(config).read_text(), re.M)
    if match is None:
        return "not stated"
    return match.group(1).split("(")[0].strip().rstrip(".") or "not stated"


def per_sample_step_cost(model: str, classes: int, shape: tuple) -> tuple[float, int]:
    """``(GFLOP, neurons)`` of ONE sample for ONE time step, forward: the conv/linear GFLOP (torch's
    FLOP counter; elementwise LIF, BN and pooling work are not counted) and the elements every LIF
    writes."""
    import torch  # noqa: PLC0415
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    import asgl  # noqa: PLC0415

    net = asgl.create_model(model, num_classes=classes, T=1, in_channels=shape[0], p=0.0).eval()
    neurons = [0]
    for m in asgl.neurons(net):
        asgl.bn_lif.neuron_output_module(net, m).register_forward_hook(
            lambda _m, _i, out: neurons.__setitem__(0, neurons[0] + out.numel()))
    # sequence and event models take [B, T, ...]; image models take a static [B, C, H, W]
    x = torch.zeros(1, 1, *shape) if model in ("shd_rnn", "vggsnn") else torch.zeros(1, *shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return counter.get_total_flops() / 1e9, neurons[0]


def h200_copy_bytes_per_s() -> float:
    """The copy bandwidth the static performance model assumes for an H200 (perf/static_model.py)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from perf.static_model import DEVICES  # noqa: PLC0415

    d = DEVICES["H200"]
    return d["hbm_tbps"] * d["copy_fraction"] * 1e12


def table_gpu_estimate() -> str:
    """Per-epoch and per-run GPU time ESTIMATES for the full-scale runs (nothing here is measured)."""
    from asgl.train.config import build_config  # noqa: PLC0415  (imports the model registry)

    lo, hi = ASSUMED_TFLOPS
    bandwidth = h200_copy_bytes_per_s()
    rows = []
    for name, config, model, classes, shape, T, n_train, n_test in FULL_SCALE:
        f, neurons = per_sample_step_cost(model, classes, shape)
        tflop = (3 * f * T * n_train + f * T * n_test) / 1e3  # backward ≈ 2× forward
        elementwise_s = neurons * T * (BN_LIF_TRAIN_BYTES * n_train + BN_LIF_EVAL_BYTES * n_test) / bandwidth
        epochs = build_config(REPO_ROOT / config).optim.epochs
        fast, slow = tflop / hi + elementwise_s, tflop / lo + elementwise_s
        time_cell = f"{fast:.0f}–{slow:.0f} s (estimate)"
        hours_cell = f"{epochs} epochs: {fast * epochs / 3600:.2g}–{slow * epochs / 3600:.2g} h (estimate)"
        if model == "shd_rnn":
            time_cell = "not estimated: 250 sequential steps make it latency-bound, not FLOP-bound"
            hours_cell = f"{epochs} epochs; not estimated"
        rows.append([name, f"`accelerate launch train/run.py --config {config}`", expected_accuracy(REPO_ROOT / config),
                     f"{f:.3g}", f"{tflop:.3g}", f"{neurons:,}", f"{elementwise_s:.2g} s", time_cell,
                     hours_cell])
    note = (f"\n\nGFLOP: conv/linear FLOPs of one sample, one time step, forward (counted by "
            f"`torch.utils.flop_counter` on the CPU). Epoch TFLOP = (3 · train + 1 · test samples) · T · GFLOP, "
            f"at an assumed effective {lo:g}–{hi:g} TFLOP/s on one A100/H100-class GPU in bf16. Neurons: the "
            f"LIF outputs of one sample and step; their batch norm + LIF work moves {BN_LIF_TRAIN_BYTES} B per "
            f"element-step in training and {BN_LIF_EVAL_BYTES} B in evaluation (bf16, counted from the fused "
            f"kernels), at the static performance model's H200 copy bandwidth ({bandwidth / 1e12:.2f} TB/s; "
            f"`perf/static_model.py` predicts those kernels memory bound). GPU time per epoch = the two added: "
            f"NOT MEASURED (no GPU was available); data loading, pooling and the convolutions' own activation "
            f"traffic are not counted, so real epochs are likely slower.")
    return _table(["experiment", "command", "paper accuracy", "GFLOP / sample / step", "TFLOP / epoch",
                   "neurons / sample / step", "BN + LIF time / epoch (H200)", "GPU time / epoch",
                   "GPU hours per run"], rows) + note


# table name -> (JSON file relative to the results folder, renderer)
TABLES: dict[str, tuple[str, Callable[[dict], str]]] = {
    "width": ("width_robustness/width_robustness.json", table_width),
    "width_paper_lr": ("width_robustness/width_robustness_paper_lr.json", table_width),
    "diagnostics": ("width_robustness/diagnostics.json", table_diagnostics),
    "length": ("width_robustness/length.json", table_length),
    "depth": ("width_robustness/depth.json", table_depth),
    "noise": ("noise_probability/noise_probability.json", table_noise),
    "tuning": ("width_robustness/tuning.json", table_tuning),
    "tuning_sg_wider": ("width_robustness/tuning_sg_wider.json", table_tuning),
    "dynamics": ("dynamics/dynamics.json", table_dynamics),
    "temporal": ("temporal_task/temporal_task.json", table_temporal),
}


def render_tables(results: Path, names: set[str] | None = None) -> dict[str, str]:
    """Markdown for the tables in :data:`TABLES` (and ``walltime``, ``gpu_estimate``) from the JSON
    under ``results``; ``names`` limits the (costly) ``gpu_estimate`` to documents that use it."""
    results = Path(results)
    out, docs = {}, {}
    if names is None or "gpu_estimate" in names:
        out["gpu_estimate"] = table_gpu_estimate()
    for name, (rel, render) in TABLES.items():
        path = results / rel
        if path.is_file():
            docs[name] = json.loads(path.read_text())
            out[name] = render(docs[name])
        else:
            out[name] = f"*Not run: `{rel}` is missing.*"
    unbounded = results / "width_robustness" / "width_robustness_unbounded.json"
    if unbounded.is_file() and "tuning" in docs:
        docs["width_unbounded"] = json.loads(unbounded.read_text())
        out["floor"] = table_floor(docs["width_unbounded"], docs["tuning"])
    else:
        out["floor"] = "*Not run: `width_robustness/width_robustness_unbounded.json` or `tuning.json` is missing.*"
    out["walltime"] = table_walltime(docs) if docs else "*No study has been run.*"
    return out


def update_document(text: str, tables: dict[str, str]) -> str:
    """``text`` with the body between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` replaced by
    ``tables[NAME]`` for every marker pair present. Raises ``ValueError`` for an opening marker
    without its closing one or for a marker naming an unknown table."""
    for name in re.findall(r"<!-- table:([\w-]+) -->", text):
        if name not in tables:
            raise ValueError(f"text: marker <!-- table:{name} --> names no known table; known: {sorted(tables)}")
        pattern = re.compile(rf"(<!-- table:{name} -->\n).*?(<!-- /table:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"text: <!-- table:{name} --> has no closing <!-- /table:{name} -->")
        text = pattern.sub(lambda m: m.group(1) + tables[name].rstrip("\n") + "\n" + m.group(2), text, count=1)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asgl.train.studies.report", description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=REPO_ROOT / "docs" / "results")
    p.add_argument("--doc", type=Path, default=REPO_ROOT / "docs" / "REPRODUCTION.md")
    p.add_argument("--check", action="store_true", help="exit 1 if the document is out of date; write nothing")
    args = p.parse_args(argv)
    text = args.doc.read_text()
    names = set(re.findall(r"<!-- table:([\w-]+) -->", text))
    new = update_document(text, render_tables(args.results, names))
    if args.check:
        if new != text:
            print(f"{args.doc} is out of date; run python -m asgl.train.studies.report", file=sys.stderr)
            return 1
        return 0
    args.doc.write_text(new)
    print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
