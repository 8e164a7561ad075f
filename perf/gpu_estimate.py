"""The GPU-time estimate of the paper's full-scale experiments: the ``gpu_estimate`` table of
``docs/REPRODUCTION.md`` §5 (nothing in it is measured).

    python perf/gpu_estimate.py [--doc docs/REPRODUCTION.md] [--check]

Per experiment: the conv/linear FLOPs of one sample and step (torch's FLOP counter, on the CPU), the
LIF outputs it writes, and from them a per-epoch time at an assumed tensor-core throughput plus the
fused batch norm + LIF traffic at the static model's H200 copy bandwidth (:data:`perf.static_model.DEVICES`).
The table is written between the ``<!-- table:gpu_estimate -->`` markers of the page, the rest of
which ``python -m asgl.train.studies.report`` generates; ``--check`` changes nothing and exits 1
when the table is out of date.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from asgl.train.studies.report import MARKER, markdown_table, update_document

ROOT = Path(__file__).resolve().parents[1]
TABLE = "gpu_estimate"

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
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import asgl

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
    from perf.static_model import DEVICES

    d = DEVICES["H200"]
    return d["hbm_tbps"] * d["copy_fraction"] * 1e12


def table_gpu_estimate() -> str:
    """Per-epoch and per-run GPU time ESTIMATES for the full-scale runs (nothing here is measured)."""
    from asgl.train.config import build_config  # imports the model registry

    lo, hi = ASSUMED_TFLOPS
    bandwidth = h200_copy_bytes_per_s()
    rows = []
    for name, config, model, classes, shape, T, n_train, n_test in FULL_SCALE:
        f, neurons = per_sample_step_cost(model, classes, shape)
        tflop = (3 * f * T * n_train + f * T * n_test) / 1e3  # backward ≈ 2× forward
        elementwise_s = neurons * T * (BN_LIF_TRAIN_BYTES * n_train + BN_LIF_EVAL_BYTES * n_test) / bandwidth
        epochs = build_config(ROOT / config).optim.epochs
        fast, slow = tflop / hi + elementwise_s, tflop / lo + elementwise_s
        time_cell = f"{fast:.0f}–{slow:.0f} s (estimate)"
        hours_cell = f"{epochs} epochs: {fast * epochs / 3600:.2g}–{slow * epochs / 3600:.2g} h (estimate)"
        if model == "shd_rnn":
            time_cell = "not estimated: 250 sequential steps make it latency-bound, not FLOP-bound"
            hours_cell = f"{epochs} epochs; not estimated"
        rows.append([name, f"`accelerate launch train/run.py --config {config}`", expected_accuracy(ROOT / config),
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
    return markdown_table(["experiment", "command", "paper accuracy", "GFLOP / sample / step", "TFLOP / epoch",
                           "neurons / sample / step", "BN + LIF time / epoch (H200)", "GPU time / epoch",
                           "GPU hours per run"], rows) + note


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python perf/gpu_estimate.py", description=__doc__.split("\n")[0])
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "REPRODUCTION.md")
    p.add_argument("--check", action="store_true", help="exit 1 if the table is out of date; write nothing")
    args = p.parse_args(argv)
    text = args.doc.read_text()
    others = set(re.findall(MARKER, text)) - {TABLE}
    new = update_document(text, {TABLE: table_gpu_estimate()}, leave=others)
    if args.check:
        if new != text:
            print(f"{args.doc}: the {TABLE} table is out of date; run python perf/gpu_estimate.py", file=sys.stderr)
            return 1
        return 0
    args.doc.write_text(new)
    print(f"updated the {TABLE} table of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
