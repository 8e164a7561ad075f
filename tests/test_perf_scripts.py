"""The ``perf/`` scripts run end to end on the CPU in their reduced modes and print their tables.

Each runs in a subprocess with CUDA hidden (so on a GPU box too this is the CPU smoke run, not a
benchmark), at tiny sizes: the whole module takes well under a minute. The benchmarks' numbers are
not checked here (see ``tests/test_perf_regression.py`` for ratios); their output is: the table,
the CPU labelling, and the JSON lines with the columns the results file promises.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
STAMP_KEYS = {"device", "commit", "torch", "triton", "date"}


def run_script(*args: str, timeout: float = 120.0) -> str:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", COLUMNS="200")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_bench_neuron_cpu(tmp_path):
    out = tmp_path / "neuron.jsonl"
    # --interpret-smoke also runs the fused rows (under the Triton interpreter) through the same code
    stdout = run_script("perf/bench_neuron.py", "--quick", "--dtypes", "fp32", "--interpret-smoke", "--out", str(out))
    assert "LIF neuron" in stdout
    assert "fused Triton kernel" in stdout and "need a GPU" in stdout
    for word in ("eager", "compile", "fused (interp.)", "fwd+bwd", "%copy", "measured on the fused path"):
        assert word in stdout
    rows = read_jsonl(out)
    assert {(r["path"], r["pass"]) for r in rows} == {
        (path, pas) for path in ("fused", "eager", "compile") for pas in ("fwd", "bwd", "fwd+bwd")
    }
    ms = {(r["path"], r["pass"]): r["ms"] for r in rows}
    for r in rows:
        assert STAMP_KEYS <= set(r) and r["dtype"] == "fp32" and (r["T"], r["N"]) == (2, 4096)
        assert r["ms"] > 0 and r["gbps"] > 0 and r["copy_gbps"] > 0
        assert r["gbps"] == pytest.approx(r["bytes"] / (r["ms"] * 1e-3) / 1e9)
        assert r["pct_copy"] == pytest.approx(100 * r["gbps"] / r["copy_gbps"])
        assert r["ratio_vs_eager"] == pytest.approx(ms["eager", r["pass"]] / r["ms"])
        assert r["fused_speedup"] == pytest.approx(r["ms"] / ms["fused", r["pass"]])
        assert r.get("interpreted", False) == (r["path"] == "fused")
    by = {(r["path"], r["pass"]): r for r in rows}
    for pas in ("fwd", "bwd", "fwd+bwd"):
        fused = by["fused", pas]
        assert fused["ratio_vs_compile"] == pytest.approx(ms["compile", pas] / fused["ms"])
        assert fused["ratio_vs_spikingjelly"] is None  # p = 0 but no SpikingJelly on a CPU
        # every path is charged the same bytes, so GB/s ratios are speed ratios
        assert by["eager", pas]["bytes"] == by["compile", pas]["bytes"] == fused["bytes"]
    assert by["fused", "fwd+bwd"]["bytes"] == pytest.approx(by["fused", "fwd"]["bytes"] + by["fused", "bwd"]["bytes"])


def test_bench_train_cpu(tmp_path):
    out = tmp_path / "train.jsonl"
    stdout = run_script("perf/bench_train.py", "--quick", "--out", str(out))
    assert "training step" in stdout and "CPU RUN" in stdout
    rows = read_jsonl(out)
    assert [(r["model"], r["backend"], r["precision"]) for r in rows] == [
        ("resnet18", "torch", "fp32"), ("shd_rnn", "torch", "fp32")
    ]
    for r in rows:
        assert r["status"] == "ok", r["status"]
        assert STAMP_KEYS <= set(r)
        assert r["samples_s"] == pytest.approx(r["batch"] / (r["ms"] * 1e-3))
        assert r["flops_per_step"] > 0 and r["mfu"] is None  # no datasheet peak for a CPU


def test_profile_cpu(tmp_path):
    stdout = run_script("perf/profile.py", "--model", "resnet18", "--T", "2", "--warmup", "1",
                        "--out-dir", str(tmp_path))
    assert "self time" in stdout and "aten::" in stdout
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert trace["traceEvents"]


def test_profile_ncu_repro(tmp_path):
    stdout = run_script("perf/profile.py", "--ncu-repro", "--T", "8", "--N", "4096", "--dtype", "fp32",
                        "--out-dir", str(tmp_path))
    repro = tmp_path / "repro.py"
    assert "ncu --set full" in stdout and str(repro) in stdout
    source = repro.read_text()
    ast.parse(source)
    assert "lif_fused" in source and "backward" in source and "T, N, DTYPE = 8, 4096, torch.float32" in source


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_device_check_script_parses():
    proc = subprocess.run(["bash", "-n", str(ROOT / "perf" / "device_check.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_gpu_estimate_table_of_reproduction_md_is_current():
    """The §5 table of docs/REPRODUCTION.md is what perf/gpu_estimate.py computes now; the report of
    train/studies leaves that table to it and finds its own tables current too."""
    run_script("perf/gpu_estimate.py", "--check")
    run_script("-m", "asgl.train.studies.report", "--check")
