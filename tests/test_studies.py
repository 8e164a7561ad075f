"""The studies of train/studies: each ``--quick`` mode end to end, and the report's table generation."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("datasets")  # the trainer's data loaders (the digits are in the hub parquet layout)

from asgl.train.studies import common, dynamics, noise_probability, report, temporal_task, width_robustness

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load(path):
    assert path.is_file(), path
    return json.loads(path.read_text())


def _check_png(path):
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC


def _check_record(rec):
    assert rec["exit_code"] == 0
    assert 0.0 <= rec["final_test_acc"] <= 100.0
    assert rec["best_test_acc"] >= rec["final_test_acc"]
    assert rec["wall_s"] > 0
    assert rec["epochs"] >= 1
    assert rec["final_widths"] and all(w > 0 for w in rec["final_widths"].values())
    assert rec["command"].startswith("python train/run.py --config configs/quickstart.yaml")


@pytest.mark.slow  # every part of the study, about 20 trainer runs: 2-3 minutes on 2 cores
@pytest.mark.e2e
def test_width_robustness_quick(tmp_path):
    out = tmp_path / "out"
    assert width_robustness.main(["--quick", "--seeds", "1", "--out", str(out), "--runs-dir",
                                  str(tmp_path / "runs")]) == 0
    doc = _load(out / "width_robustness.json")
    assert doc["meta"]["commit"] and doc["complete"] is True
    runs = doc["runs"]
    assert {(r["method"], r["alpha"]) for r in runs} == {(m, a) for m in ("SG", "ASGL")
                                                         for a in width_robustness.QUICK_ALPHAS}
    for rec in runs:
        _check_record(rec)
        widths = list(rec["final_widths"].values())
        assert len(widths) == 3  # digits_cnn: three spiking convs
        if rec["method"] == "SG":  # fixed width: exactly the initial α
            assert widths == pytest.approx([rec["alpha"]] * 3, rel=1e-5)
            assert rec["overrides"]["model.p"] == 0.0 and rec["overrides"]["model.learn_width"] is False
        else:  # learnable width with the scaled width LR: moved away from α
            assert all(abs(w - rec["alpha"]) > 1e-3 * rec["alpha"] for w in widths)
    # the only differences between the methods are the ASGL-specific knobs
    sg = next(r for r in runs if r["method"] == "SG" and r["alpha"] == 10.0)["overrides"]
    asgl = next(r for r in runs if r["method"] == "ASGL" and r["alpha"] == 10.0)["overrides"]
    assert {k for k in sg.keys() | asgl.keys() if sg.get(k) != asgl.get(k)} == {"model.p", "model.learn_width"}
    assert len(doc["summary"]) == 4 and all(row["n"] == 1 and row["std"] == 0.0 for row in doc["summary"])
    _check_png(out / "width_robustness.png")
    diag = _load(out / "diagnostics.json")
    assert len(diag["runs"]) == 1 and diag["runs"][0]["overrides"]["optim.neuron_lr"] == 3e-4
    _check_record(diag["runs"][0])
    paper = _load(out / "width_robustness_paper_lr.json")
    assert len(paper["runs"]) == 4 and all(r["overrides"]["optim.neuron_lr"] == 3e-4 for r in paper["runs"])
    _check_png(out / "width_robustness_paper_lr.png")
    length = _load(out / "length.json")
    assert {r["method"] for r in length["runs"]} == {"SG", "ASGL", "ASGL lr3e-4"}
    assert all(r["epochs"] == r["epochs_set"] for r in length["runs"])
    unbounded = _load(out / "width_robustness_unbounded.json")
    assert {r["method"] for r in unbounded["runs"]} == {"ASGL"}
    assert all(r["overrides"]["model.min_slope"] is None for r in unbounded["runs"])
    tuning = _load(out / "tuning.json")
    assert {(r["method"], r["knob"]) for r in tuning["runs"]} == {("ASGL", "optim.neuron_lr"), ("SG", "optim.lr")}
    assert all(r["overrides"][r["knob"]] == r["value"] for r in tuning["runs"])
    _check_png(out / "tuning.png")
    depth = _load(out / "depth.json")
    assert {(r["model"], r["method"]) for r in depth["runs"]} == {("digits_cnn", "SG"), ("digits_cnn", "ASGL")}
    for rec in paper["runs"] + length["runs"] + depth["runs"] + unbounded["runs"] + tuning["runs"]:
        _check_record(rec)


@pytest.mark.e2e
def test_noise_probability_quick(tmp_path):
    out = tmp_path / "out"
    assert noise_probability.main(["--quick", "--seeds", "1", "--out", str(out), "--runs-dir",
                                   str(tmp_path / "runs")]) == 0
    doc = _load(out / "noise_probability.json")
    assert sorted((r["p"], str(r["min_slope"])) for r in doc["runs"]) == sorted(
        (p, str(m)) for p in noise_probability.QUICK_PS for m in noise_probability.MIN_SLOPES)
    assert {r["overrides"]["model.min_slope"] for r in doc["runs"]} == {0.01, None}
    for rec in doc["runs"]:
        _check_record(rec)
        assert rec["final_p"] == rec["p"]  # γ = 1 keeps p
    _check_png(out / "noise_probability.png")


@pytest.mark.e2e
def test_dynamics_quick(tmp_path):
    out = tmp_path / "out"
    assert dynamics.main(["--quick", "--out", str(out), "--runs-dir", str(tmp_path / "runs")]) == 0
    doc = _load(out / "dynamics.json")
    trace = doc["traces"][0]["series"]
    assert trace["epoch"] == [1, 2]
    assert len(trace["width"]) == 3 and len(trace["firing_rate"]) == 3
    for name in trace["width"]:
        assert all(w > 0 for w in trace["width"][name])
        assert all(0.0 <= f <= 1.0 for f in trace["firing_rate"][name])
    _check_png(out / "dynamics.png")


@pytest.mark.e2e
def test_temporal_task_quick(tmp_path):
    out = tmp_path / "out"
    assert temporal_task.main(["--quick", "--seeds", "1", "--out", str(out), "--runs-dir",
                               str(tmp_path / "runs")]) == 0
    doc = _load(out / "temporal_task.json")
    assert {r["method"] for r in doc["runs"]} == {"SG", "ASGL"}
    for rec in doc["runs"]:
        _check_record(rec)
        assert len(rec["final_widths"]) == 2  # two recurrent LIF layers
    _check_png(out / "temporal_task.png")


def test_temporal_model_is_registered():
    from asgl.models import create_model

    net = create_model(temporal_task.MODEL_NAME, num_classes=10, T=8, p=0.0)
    assert isinstance(net, temporal_task.DigitsRowsRSNN)


def test_temporal_model_shapes():
    import torch

    net = temporal_task.DigitsRowsRSNN(hidden=16, width=2.0, p=0.0)
    y = net(torch.randn(3, 1, 8, 8))
    assert y.shape == (8, 3, 10)
    with pytest.raises(ValueError, match="x must be"):
        net(torch.randn(3, 1, 8, 7))
    with pytest.raises(ValueError, match="T must be"):
        temporal_task.DigitsRowsRSNN(T=4)


def test_mean_std_and_summarize():
    assert common.mean_std([96.0, 98.0]) == pytest.approx((97.0, math.sqrt(2.0)))
    assert common.mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError, match="values"):
        common.mean_std([])
    recs = [{"m": "a", "final_test_acc": 90.0, "best_test_acc": 91.0},
            {"m": "a", "final_test_acc": None, "best_test_acc": None},
            {"m": "b", "final_test_acc": 50.0, "best_test_acc": 60.0}]
    rows = common.summarize(recs, ("m",))
    assert rows[0] == {"m": "a", "n": 1, "mean": 90.0, "std": 0.0, "values": [90.0], "mean_best": 91.0,
                       "failed": 1}
    assert rows[1]["mean"] == 50.0 and rows[1]["failed"] == 0
    assert common.override_args({"model.learn_width": False, "model.width": 2.5}) == [
        "--model.learn_width=false", "--model.width=2.5"]


def _fixture(results):
    """A small hand-made width-study JSON (two seeds, two α) in the layout the studies write."""
    def run(method, alpha, seed, acc, width):
        return {"name": f"{method}{alpha}{seed}", "method": method, "alpha": alpha, "seed": seed,
                "final_test_acc": acc, "best_test_acc": acc, "final_widths": {"l1": width, "l2": width},
                "overrides": {}, "wall_s": 1.0}

    runs = [run("SG", 1.0, 0, 96.0, 1.0), run("SG", 1.0, 1, 98.0, 1.0), run("SG", 10.0, 0, 40.0, 10.0),
            run("SG", 10.0, 1, 60.0, 10.0), run("ASGL", 1.0, 0, 97.0, 0.5), run("ASGL", 1.0, 1, 97.0, 0.5),
            run("ASGL", 10.0, 0, 95.0, 0.25), run("ASGL", 10.0, 1, 93.0, 0.75)]
    doc = {"study": "width_robustness", "meta": {"commit": "abc1234", "wall_s": 120.0,
                                                 "uncommitted_study_files": [], "date_utc": "2026-01-01 00:00"},
           "settings": {"alphas": [1.0, 10.0], "methods": {"SG": {}, "ASGL": {}}, "seeds": 2},
           "runs": runs, "summary": common.summarize(runs, ("method", "alpha"))}
    path = results / "width_robustness" / "width_robustness.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))


def test_report_regenerates_tables_from_json(tmp_path):
    results = tmp_path / "results"
    _fixture(results)
    doc = tmp_path / "REPRODUCTION.md"
    doc.write_text("# R\n<!-- table:width -->\nstale 12.3\n<!-- /table:width -->\ntext\n"
                   "<!-- table:noise -->\n<!-- /table:noise -->\n<!-- table:walltime -->\n<!-- /table:walltime -->\n")
    args = ["--results", str(results), "--doc", str(doc)]
    assert report.main([*args, "--check"]) == 1  # stale
    assert report.main(args) == 0
    text = doc.read_text()
    assert "stale" not in text and text.endswith("text\n" + text.split("text\n", 1)[1])
    width = text.split("<!-- table:width -->\n")[1].split("<!-- /table:width -->")[0]
    lines = width.splitlines()
    assert lines[0] == "|  | α = 1 | α = 10 |"
    assert lines[2] == "| SG test acc (%) | 97.0 ± 1.4 | 50.0 ± 14.1 |"
    assert lines[3] == "| ASGL test acc (%) | 97.0 ± 0.0 | 94.0 ± 1.4 |"
    assert lines[5] == "| ASGL final α (layer mean) | 0.5 | 0.5 |"
    assert "2.0 min" in width
    assert "*Not run: `noise_probability/noise_probability.json` is missing.*" in text
    assert "| width | 8 | 2.0 | abc1234 | none |" in text
    assert report.main([*args, "--check"]) == 0  # up to date; idempotent


def test_report_marker_errors():
    tables = {"width": "T"}
    with pytest.raises(ValueError, match="no closing"):
        report.update_document("<!-- table:width -->\nx\n", tables)
    with pytest.raises(ValueError, match="names no known table"):
        report.update_document("<!-- table:bogus -->\n<!-- /table:bogus -->\n", tables)
    assert report.update_document("no markers\n", tables) == "no markers\n"
    # a table another script writes (perf/gpu_estimate.py) is left as it is
    text = ("<!-- table:gpu_estimate -->\nkept\n<!-- /table:gpu_estimate -->\n"
            "<!-- table:width -->\n<!-- /table:width -->\n")
    assert report.update_document(text, tables, leave=report.WRITTEN_ELSEWHERE) == text.replace(
        "<!-- table:width -->\n", "<!-- table:width -->\nT\n")


# ---- the large test set and the intervals ---------------------------------------------------------

def test_intervals_by_hand():
    from asgl.train.studies.digits_jitter import difference_interval, wilson_interval

    lo, hi = wilson_interval(50.0, 100)  # textbook: [40.38, 59.62]
    assert (lo, hi) == (pytest.approx(40.383, abs=1e-3), pytest.approx(59.617, abs=1e-3))
    lo, hi = wilson_interval(100.0, 10_000)  # never above 100, never a zero-width interval
    assert hi == pytest.approx(100.0) and 99.95 < lo < 100.0
    # pooled variance (2 + 2) / 4 = 1, se = sqrt(2/3), t(4 df) = 2.776
    diff, lo, hi = difference_interval([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert diff == pytest.approx(-3.0)
    assert (hi - lo) / 2 == pytest.approx(2.776 * math.sqrt(2 / 3), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        difference_interval([1.0], [2.0, 3.0])
    with pytest.raises(ValueError, match="n must"):
        wilson_interval(90.0, 0)


def test_jittered_test_set_is_deterministic_and_held_out(tmp_path):
    import torch

    from asgl.train.studies import digits_jitter

    root = digits_jitter.ensure(tmp_path / "dj")
    images, labels = digits_jitter._read_images(root / digits_jitter.TEST_FILE)
    assert images.shape == (digits_jitter.N_TEST, 8, 8) and images.dtype == torch.uint8
    counts = labels.bincount(minlength=10)
    assert counts.min() > 0.08 * digits_jitter.N_TEST  # every class drawn, ≈ 10 % each
    again = digits_jitter.ensure(tmp_path / "dj2")
    assert (again / digits_jitter.TEST_FILE).read_bytes() == (root / digits_jitter.TEST_FILE).read_bytes()
    train = (root / digits_jitter.TRAIN_FILE).read_bytes()
    assert train == (digits_jitter.SOURCE / "train-00000-of-00001.parquet").read_bytes()
    # the jitter moves pixels but keeps the ink: mean intensity within 5 % of the source's
    source, _ = digits_jitter._read_images(digits_jitter.SOURCE / "test-00000-of-00001.parquet")
    assert images.float().mean().item() == pytest.approx(source.float().mean().item(), rel=0.05)
    # a copy of one held-out image differs from it (jittered) but stays close
    g = torch.Generator().manual_seed(0)
    one = digits_jitter.jitter(source[:1].repeat(4, 1, 1), g)
    assert not torch.equal(one[0], one[1])
    assert (one.float() - source[:1].float()).abs().mean() < 40


def _run(method, value, seed, acc, knob="optim.neuron_lr", min_slope=0.01, p=None, widths=(0.5, 0.5)):
    rec = {"name": f"{method}{value}{seed}", "method": method, "seed": seed, "final_test_acc": acc,
           "best_test_acc": acc, "final_widths": {"l1": widths[0], "l2": widths[1]}, "overrides": {}, "wall_s": 1.0,
           "knob": knob, "value": value, "alpha": 10.0, "min_slope": min_slope}
    if p is not None:
        rec["p"] = p
    return rec


def _doc(runs, settings, wall_s=60.0):
    return {"meta": {"commit": "abc1234", "wall_s": wall_s, "uncommitted_study_files": [], "date_utc": "x"},
            "settings": settings, "runs": runs, "summary": [], "complete": True}


def test_report_tuning_floor_and_noise_tables():
    tuning = _doc([_run("ASGL", 0.03, s, a) for s, a in enumerate((96.0, 97.0, 98.0))]
                  + [_run("ASGL", 3e-4, s, 30.0) for s in range(3)]
                  + [_run("SG", 0.1, s, a, knob="optim.lr") for s, a in enumerate((50.0, 52.0, 54.0))],
                  {"neuron_lrs": [3e-4, 0.03], "weight_lrs": [0.1, 0.3], "matched_neuron_lr": 0.0889, "seeds": 3,
                   "paper": {"neuron_lr": 3e-4, "steps": 39100}, "run_steps": 132, "num_test": 10_000})
    text = report.table_tuning(tuning)
    assert "| ASGL | `optim.neuron_lr` | 0.0003: 30.0 ± 0.0 (n=3) | 0.03: 97.0 ± 1.0 (n=3) |" in text
    assert "| SG | `optim.lr` | 0.1: 52.0 ± 2.0 (n=3) | 0.3: — (n=0) |" in text
    # 97 − 52 = 45, pooled sd 1.58, se 1.29, t(4) = 2.776: ± 3.6
    assert "ASGL − SG = +45.0 [+41.4, +48.6]" in text
    unbounded = _doc([_run("ASGL", 0.03, s, a, min_slope=None, widths=(-2.0, 0.5))
                      for s, a in enumerate((90.0, 95.0, 100.0))],
                     {"shared": {"optim.neuron_lr": 0.03}, "num_test": 10_000})
    floor = report.table_floor(unbounded, tuning)
    assert "| k ≥ 0.01 (default) | 97.0 ± 1.0 | 3 | 0/3 | 0.5 | 0.5 |" in floor  # none on the floor (α = 100)
    assert "| unbounded k (authors') | 95.0 ± 5.0 | 3 | 3/3 | -2 | 0.5 |" in floor
    noise = _doc([_run("ASGL", 0.03, s, 90.0 + s, p=0.8) for s in range(2)]
                 + [_run("ASGL", 0.03, s, 10.0 + s, p=0.8, min_slope=None, widths=(-1.0, 1.0)) for s in range(2)],
                 {"alpha": 10.0, "seeds": 2, "min_slopes": [0.01, None], "num_test": 10_000})
    noise["runs"][0]["final_widths"]["l2"] = 100.0  # one floored run ended with a layer on the floor
    table = report.table_noise(noise)
    assert "| 0.8 | 90.5 ± 0.7 (n=2) | 1/2 | 10.5 ± 0.7 (n=2) | 2/2 | +80.0 [" in table
