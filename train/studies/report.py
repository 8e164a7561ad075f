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
    seeds = doc["settings"]["seeds"]
    note = (f"\n\n{seeds} seed(s) per cell, final-epoch test accuracy of the SNN, mean ± sample std; "
            f"sweep wall time {doc['meta']['wall_s'] / 60:.1f} min.") + _incomplete(doc)
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
    note = (f"\n\n{doc['settings']['seeds']} seed(s), final test accuracy (%); "
            f"wall time {doc['meta']['wall_s'] / 60:.1f} min.") + _incomplete(doc)
    return _table(["network", "method", *[f"α = {a:g}" for a in alphas]], rows) + note


def table_noise(doc: dict) -> str:
    rows = []
    for r in sorted(doc["summary"], key=lambda r: r["p"]):
        ws = [_mean_width(x["final_widths"]) for x in doc["runs"] if x["p"] == r["p"]]
        ws = [w for w in ws if w is not None]
        rows.append([f"{r['p']:g}", _acc(r["mean"], r["std"], r["n"]) + _failed(r), _acc(r["mean_best"]),
                     _fmt(sum(ws) / len(ws)) if ws else "—", str(r["n"])])
    note = (f"\n\ninitial α = {doc['settings']['alpha']:g} (learnable), {doc['settings']['seeds']} seed(s); "
            f"every run is evaluated as the pure SNN; wall time {doc['meta']['wall_s'] / 60:.1f} min."
            + _incomplete(doc))
    return _table(["p", "final test acc (%)", "best test acc (%)", "final α (mean)", "seeds"], rows) + note


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
    note = (f"\n\n{doc['settings']['seeds']} seed(s) per cell, final-epoch test accuracy (%); "
            f"wall time {doc['meta']['wall_s'] / 60:.1f} min.") + _incomplete(doc)
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


def expected_accuracy(config: Path) -> str:
    """The "Expected test accuracy: ..." line of a config's header comment (the paper's number)."""
    match = re.search(r"^# Expected test accuracy: (.*)$", Path(config).read_text(), re.M)
    if match is None:
        return "not stated"
    return match.group(1).split("(")[0].strip().rstrip(".") or "not stated"


def forward_gflop(model: str, classes: int, shape: tuple) -> float:
    """Conv/linear GFLOP of one forward pass of ONE sample for ONE time step (torch's FLOP counter;
    elementwise LIF, BN and pooling work are not counted)."""
    import torch  # noqa: PLC0415
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    import asgl  # noqa: PLC0415

    net = asgl.create_model(model, num_classes=classes, T=1, in_channels=shape[0], p=0.0).eval()
    # sequence and event models take [B, T, ...]; image models take a static [B, C, H, W]
    x = torch.zeros(1, 1, *shape) if model in ("shd_rnn", "vggsnn") else torch.zeros(1, *shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return counter.get_total_flops() / 1e9


def table_gpu_estimate() -> str:
    """Per-epoch GPU time ESTIMATES for the full-scale runs (nothing here is measured)."""
    lo, hi = ASSUMED_TFLOPS
    rows = []
    for name, config, model, classes, shape, T, n_train, n_test in FULL_SCALE:
        f = forward_gflop(model, classes, shape)
        tflop = (3 * f * T * n_train + f * T * n_test) / 1e3  # backward ≈ 2× forward
        time_cell = f"{tflop / hi:.0f}–{tflop / lo:.0f} s (estimate)"
        if model == "shd_rnn":
            time_cell = "not estimated: 250 sequential steps make it latency-bound, not FLOP-bound"
        rows.append([name, f"`accelerate launch train/run.py --config {config}`", expected_accuracy(REPO_ROOT / config),
                     f"{f:.3g}", f"{tflop:.3g}", time_cell])
    note = (f"\n\nGFLOP: conv/linear FLOPs of one sample, one time step, forward (counted by "
            f"`torch.utils.flop_counter` on the CPU). Epoch TFLOP = (3 · train + 1 · test samples) · T · GFLOP. "
            f"GPU time per epoch: NOT MEASURED (no GPU was available); the range assumes an effective "
            f"{lo:g}–{hi:g} TFLOP/s on one A100/H100-class GPU in bf16 and ignores data loading and the "
            f"memory-bound LIF/BN work, so real epochs are likely slower.")
    return _table(["experiment", "command", "paper accuracy", "GFLOP / sample / step", "TFLOP / epoch",
                   "GPU time / epoch"], rows) + note


# table name -> (JSON file relative to the results folder, renderer)
TABLES: dict[str, tuple[str, Callable[[dict], str]]] = {
    "width": ("width_robustness/width_robustness.json", table_width),
    "width_paper_lr": ("width_robustness/width_robustness_paper_lr.json", table_width),
    "diagnostics": ("width_robustness/diagnostics.json", table_diagnostics),
    "length": ("width_robustness/length.json", table_length),
    "depth": ("width_robustness/depth.json", table_depth),
    "noise": ("noise_probability/noise_probability.json", table_noise),
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
