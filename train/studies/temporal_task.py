"""SG vs ASGL on a temporal task: the digits read row by row by a recurrent spiking network.

    python -m asgl.train.studies.temporal_task [--quick] [--seeds 3]

Task ("sequential digits"): each 8×8 digit is presented as a sequence of its T = 8 rows, one row
(8 pixel values) per time step, so the class can only be decided by integrating over time. The
network ``digits_rows_rsnn`` (built from :class:`asgl.RecurrentLIF`; registered with the trainer's
model registry when this module is imported) is

    x[t] = image[:, 0, t, :]                         [B, 8]            t = 0..7
    h1[t] = RecurrentLIF(8 → H)(x)[t]                spikes            [B, H]
    h2[t] = RecurrentLIF(H → H)(h1)[t]               spikes            [B, H]
    o[t]  = W_out h2[t] + b                          per-step logits   [B, 10]

and the loss is cross-entropy on the T-mean of ``o`` (the trainer's convention). Gradients cross
the relaxation H_α both across layers and through time (recurrence and reset), where a mismatched
width should hurt most.

SG and ASGL share every setting (Adam, epochs, batch, network, ``neuron_lr``) and differ only in
``model.learn_width`` and ``model.p`` (the rule of :mod:`asgl.train.studies.width_robustness`). Runs at
a large width α = 10 and, as a reference, at α = 1.

Writes ``OUT/temporal_task.json`` and ``OUT/temporal_task.png``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

from asgl import RecurrentLIF
from asgl.models import SpikingNet, register_model
from asgl.train.studies import common, digits_jitter
from asgl.train.studies.width_robustness import METHODS

MODEL_NAME = "digits_rows_rsnn"
ROWS = 8
ALPHAS = (1.0, 10.0)
SHARED = {
    "model.name": MODEL_NAME,
    "model.T": ROWS,
    "optim.name": "adam",
    "optim.lr": 1e-2,
    "optim.weight_decay": 0.0,
    "optim.neuron_lr": 3e-2,
    "optim.epochs": 20,
    "data.batch_size": 64,
    "data.root": str(digits_jitter.ROOT),  # tested on the 10,000 jittered held-out digits
    "data.eval_batch_size": 1000,
    "train.log_every": 1000,
    "train.eval_every": 20,  # the final epoch only
}
QUICK_SHARED = {**SHARED, "optim.epochs": 1, "data.batch_size": 512, "train.eval_every": 1}
QUICK_ALPHAS = (10.0,)


class DigitsRowsRSNN(SpikingNet):
    """Two recurrent LIF layers over the image rows and a linear readout (see the module docstring).

    ``forward(x [B, 1, 8, 8])`` -> per-step logits ``[T = 8, B, num_classes]``.
    """

    def __init__(self, *, num_classes: int = 10, T: int = ROWS, in_channels: int = 1, hidden: int = 128,
                 **neuron_kwargs):
        super().__init__(num_classes=num_classes, T=T, in_channels=in_channels, neuron_kwargs=neuron_kwargs)
        if T != ROWS or in_channels != 1:
            raise ValueError(f"T must be {ROWS} (one row per step) and in_channels 1, got T={T!r}, "
                             f"in_channels={in_channels!r}")
        self.layer1 = RecurrentLIF(ROWS, hidden, channels=hidden, **neuron_kwargs)
        self.layer2 = RecurrentLIF(hidden, hidden, channels=hidden, **neuron_kwargs)
        self.readout = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, ROWS, ROWS):
            raise ValueError(f"x must be digits [B, 1, {ROWS}, {ROWS}], got shape {tuple(x.shape)}")
        rows = x[:, 0].transpose(0, 1)  # [T = 8 rows, B, 8 pixels]
        return self.readout(self.layer2(self.layer1(rows)))


@register_model(MODEL_NAME)
def digits_rows_rsnn(num_classes: int = 10, T: int = ROWS, in_channels: int = 1, **neuron_kwargs) -> DigitsRowsRSNN:
    """Row-by-row digits: 8 → 128 (recurrent LIF) → 128 (recurrent LIF) → 10."""
    return DigitsRowsRSNN(num_classes=num_classes, T=T, in_channels=in_channels, **neuron_kwargs)


def sweep(shared: dict, alphas, seeds: int, runs_dir: Path) -> list[dict]:
    records = []
    for seed in range(seeds):
        for alpha in alphas:
            for method, knobs in METHODS.items():
                overrides = {**shared, **knobs, "model.width": alpha, "train.seed": seed}
                name = f"rows_{method.lower()}_a{alpha:g}_s{seed}".replace(".", "p")
                records.append(common.run_training(name, overrides, runs_dir=runs_dir, method=method, alpha=alpha))
    return records


def plot(summary: list[dict], path: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    alphas = sorted({r["alpha"] for r in summary})
    width = 0.38
    for j, (method, color) in enumerate((("SG", "tab:red"), ("ASGL", "tab:blue"))):
        rows = {r["alpha"]: r for r in summary if r["method"] == method and r["mean"] is not None}
        xs = [i + (j - 0.5) * width for i, a in enumerate(alphas) if a in rows]
        ax.bar(xs, [rows[a]["mean"] for a in alphas if a in rows], width,
               yerr=[rows[a]["std"] for a in alphas if a in rows], capsize=3, color=color, label=method)
    ax.set_xticks(range(len(alphas)), [f"α = {a:g}" for a in alphas])
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("row-by-row digits, 2-layer recurrent SNN, T = 8")
    ax.legend()
    common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = common.parser("temporal_task", __doc__.split("\n")[0], default_seeds=3).parse_args(argv)
    seeds = common.check_seeds(args.seeds)
    shared = QUICK_SHARED if args.quick else SHARED
    alphas = QUICK_ALPHAS if args.quick else ALPHAS
    digits_jitter.ensure()
    t0 = time.perf_counter()
    records = sweep(shared, alphas, seeds, args.runs_dir)
    summary = common.summarize(records, ("method", "alpha"))
    settings = {"shared": shared, "methods": METHODS, "alphas": list(alphas), "seeds": seeds, "quick": args.quick,
                "num_test": digits_jitter.N_TEST,
                "task": "digits rows as a sequence, T = 8, one row of 8 pixels per step"}
    common.save_study(args.out / "temporal_task.json", "temporal_task", settings, records, summary,
                      time.perf_counter() - t0)
    plot(summary, args.out / "temporal_task.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
