"""The step budgets, counted on the CPU by perf/step_budget.py (launches and host syncs per phase).

The CIFAR ResNet-18 T = 4 recipe step is counted once (batch 2: counts do not depend on the batch,
which a quickstart-sized count checks) and shared by the budget tests.
"""

from __future__ import annotations

import pytest
import torch

from perf import step_budget as sb
from asgl.train.config import build_config

pytestmark = pytest.mark.e2e

RECIPE = "configs/cifar10_resnet18_t4.yaml"


@pytest.fixture(scope="module")
def recipe_step():
    cfg = build_config(RECIPE, {})
    return cfg, sb.count_step(cfg, batch=2)


def _rows(counter):
    return {r["phase"]: r for r in counter.rows()}


def test_no_host_sync_inside_a_step_only_at_the_log_point(recipe_step):
    _, counter = recipe_step
    rows = _rows(counter)
    for phase in sb.STEP_PHASES:
        assert rows[phase]["syncs"] == 0, (phase, rows[phase]["sync_sites"])
    assert [s.split(" @ ")[0] for s in rows["log"]["sync_sites"]] == ["Tensor.tolist"]


def test_augmentation_launches_at_most_40_per_batch(recipe_step):
    # crop + flip + AutoAugment + Cutout: the draws (11 launches) and one fused kernel; the
    # eager reference launches ~480 (every op of every sub-policy for the whole batch)
    _, counter = recipe_step
    rows = _rows(counter)
    assert rows["augment"]["launches"] <= 40
    assert counter.ops["augment"]["asgl.augment_images"] == 1


def test_every_phase_launches_something(recipe_step):
    _, counter = recipe_step
    rows = _rows(counter)
    for phase in ("data", "augment", "forward", "backward", "optimizer", "metrics"):
        assert rows[phase]["launches"] > 0, phase


def test_neuron_share_is_the_fused_ops_launch_counts(recipe_step):
    """Every LIF of the ResNet-18 sits behind a batch norm: the 17 run as fused BN+LIF ops."""
    cfg, counter = recipe_step
    import asgl
    from asgl.train.run import build_model

    model = build_model(cfg, 10, 3)
    lifs = sum(isinstance(m, asgl.LIF) for m in model.modules())
    units = sum(isinstance(m, asgl.BatchNormLIF) for m in model.modules())
    assert lifs == units == 17
    assert counter.ops["forward"]["asgl.bn_stats"] == units
    assert counter.ops["forward"]["asgl.bn_lif_fwd"] == units
    assert counter.ops["backward"]["asgl.bn_lif_bwd"] == units
    assert counter.ops["forward"].get("asgl.lif_fwd", 0) == 0
    for phase, op in (("forward", "bn_stats"), ("forward", "bn_lif_fwd"), ("backward", "bn_lif_bwd")):
        assert counter.launches[phase][f"asgl.{op}"] == units * sb.FUSED_OP_LAUNCHES[f"asgl::{op}"]


def test_fused_launches_per_call():
    layer, channel = torch.zeros(()), torch.zeros(8)
    args = lambda width: (None, None, None, width)  # noqa: E731  (dy, u, decay_logit, width_param)
    assert sb.fused_launches("asgl::lif_bwd", args(layer)) == sb.FUSED_OP_LAUNCHES["asgl::lif_bwd"]
    assert sb.fused_launches("asgl::lif_bwd", args(channel)) == sb.FUSED_OP_LAUNCHES["asgl::lif_bwd"] + 1
    with pytest.raises(KeyError, match="asgl::rlif_bwd: no launch count"):
        sb.fused_launches("asgl::rlif_bwd", ())


def test_optimizer_step_uses_multi_tensor_kernels(recipe_step):
    # SGD over 62 weight tensors and Adam over the 17 neurons' widths: a per-parameter loop would
    # launch hundreds of kernels; the foreach kernels a GPU run picks launch a few dozen
    _, counter = recipe_step
    assert _rows(counter)["optimizer"]["launches"] <= 40


def test_counts_do_not_depend_on_the_batch_size():
    cfg = build_config("configs/quickstart.yaml", {"data.crop_pad": 1, "data.flip": True, "data.cutout": 2})
    small = _rows(sb.count_step(cfg, batch=3))
    cfg = build_config("configs/quickstart.yaml", {"data.crop_pad": 1, "data.flip": True, "data.cutout": 2})
    large = _rows(sb.count_step(cfg, batch=16))
    assert {p: r["launches"] for p, r in small.items()} == {p: r["launches"] for p, r in large.items()}
    assert small["augment"]["launches"] > 0


def test_counter_reports_a_sync_and_its_line():
    x = torch.arange(6.0)
    counter = sb.StepCounter()
    with counter, sb._count_host_reads(counter):
        with counter.counting("forward"):
            y = x * 2
            n = int(y.sum())  # a sync
            m = x[x > 2]  # data-dependent shape
            host = y.tolist()
        z = y + 1  # outside any phase: not counted
    assert n == 30 and len(m) == 3 and len(host) == 6 and z.shape == x.shape
    sites = counter.syncs["forward"]
    assert len(sites) == 3 and all("test_step_budget.py:" in s for s in sites)
    assert counter.launches["forward"]["aten.mul"] == 1 and sum(counter.launches["backward"].values()) == 0


def test_cli_table_and_json(capsys):
    assert sb.main(["--config", "configs/quickstart.yaml", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    import json

    assert [json.loads(line)["phase"] for line in out] == list(sb.PHASES)


@pytest.mark.parametrize("args, message", [
    (["--config", "configs/shd_rnn_t250.yaml"], "image data set"),
    (["--config", "configs/quickstart.yaml", "--batch", "0"], "batch must be"),
    (["--config", "configs/nope.yaml"], "nope.yaml"),
])
def test_cli_bad_input(args, message, capsys):
    assert sb.main(args) == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------ bench_train: the trainer's data path


def test_bench_train_trainer_data_path_cpu(tmp_path):
    from test_perf_scripts import read_jsonl, run_script

    out = tmp_path / "train.jsonl"
    stdout = run_script("perf/bench_train.py", "--models", "resnet18", "--T", "2", "--data", "tensor,trainer",
                        "--warmup", "0", "--iters", "2", "--out", str(out), timeout=300)
    assert "data=trainer" in stdout
    rows = read_jsonl(out)
    assert [(r["model"], r["data"], r["status"]) for r in rows] == [("resnet18", "tensor", "ok"),
                                                                    ("resnet18", "trainer", "ok")]
    assert all(r["samples_s"] > 0 for r in rows)


def test_bench_train_trainer_data_path_needs_an_image_model():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "perf/bench_train.py", "--models", "shd_rnn", "--data", "trainer"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--data trainer" in proc.stderr and "shd_rnn" in proc.stderr


def test_device_check_measures_the_trainer_step_beside_the_model():
    from perf.bench_train import device_check_configs

    resnet = [(c.data, c.compile) for c in device_check_configs() if c.model == "resnet18" and c.backend == "triton"]
    assert resnet[:2] == [("tensor", "none"), ("trainer", "none")]
    assert {("trainer", comp) for comp in ("none", "default", "reduce-overhead")} <= set(resnet)
