"""Two ranks on the CPU: ``accelerate launch --multi_gpu --num_processes 2`` with ``ACCELERATE_USE_CPU=1``
(gloo backend). Checks disjoint data shards, identical parameters on both ranks after every epoch
(DDP synchronisation), different noise masks per rank, eval covering the test set exactly once
across the ranks, and a bit-identical continuation after ``--resume`` (per-rank RNG states).
The README's CPU command runs as written; without ``ACCELERATE_USE_CPU=1`` the launch stops before
touching the run folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_trainer import REPO, needs_datasets, write_tiny_digits

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
pytestmark = [pytest.mark.multiproc, needs_datasets,
              pytest.mark.skipif(ACCELERATE is None, reason="accelerate CLI not found")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], cwd: Path, use_cpu: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    env.pop("ACCELERATE_USE_CPU", None)
    if use_cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    cmd = ["nice", ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(REPO / "train" / "run.py"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def two_rank_args(tmp: Path, name: str, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "quickstart.yaml"), f"--data.root={tmp / 'digits'}",
            f"--data.cache_dir={tmp / 'cache'}", "--data.batch_size=8", "--data.eval_batch_size=40",
            "--model.T=2", "--optim.epochs=2", f"--train.out_dir={tmp / 'runs'}", f"--train.run_name={name}",
            "--train.log_every=3", "--train.debug_ranks=true", *extra]


def rank_log(run_dir: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "ranks" / f"rank{rank}.jsonl").read_text().splitlines()]


def test_two_ranks_shard_sync_and_resume(tmp_path):
    write_tiny_digits(tmp_path / "digits")
    r = launch(two_rank_args(tmp_path, "ddp"), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = tmp_path / "runs" / "ddp"
    assert "2 rank(s)" in r.stdout
    assert sum(line.startswith("epoch 2/2") for line in r.stdout.splitlines()) == 1  # main process logs only
    logs = [rank_log(run_dir, k) for k in (0, 1)]
    for epoch in (1, 2):  # 1-based, as everywhere a user reads
        shards = [next(e for e in log if e.get("epoch") == epoch) for log in logs]
        assert all(s["world"] == 2 and len(s["indices"]) == 12 for s in shards)  # 96 samples / (2 · 4)
        seen = [{i for batch in s["indices"] for i in batch} for s in shards]
        assert all(len(s) == 48 for s in seen)  # no sample twice within a rank
        assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(96))  # disjoint, and all covered
    for epoch_done in (1, 2):
        done = [next(e for e in log if e.get("epoch_done") == epoch_done) for log in logs]
        assert done[0]["params_sha256"] == done[1]["params_sha256"]
        # Same input, same parameters, each rank's own RNG stream (seed + rank): the first LIF's
        # train-mode outputs (p = 0.2) differ, i.e. the ranks draw different noise masks.
        assert done[0]["noise_probe_sha256"] and done[1]["noise_probe_sha256"]
        assert done[0]["noise_probe_sha256"] != done[1]["noise_probe_sha256"]
        # eval is sharded: the ranks' evaluated counts add up to exactly the 40 test samples
        # (nothing dropped by the batching, nothing padded or evaluated twice across the ranks)
        counts = [next(e for e in log if e.get("eval_epoch") == epoch_done)["evaluated"] for log in logs]
        assert sum(counts) == 40 and all(c > 0 for c in counts), counts
    ck = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2
    assert not torch.equal(ck["rng"][0]["torch"], ck["rng"][1]["torch"])  # seed + rank: different noise masks

    r1 = launch(two_rank_args(tmp_path, "split", "--train.stop_after_epochs=1"), tmp_path)
    assert r1.returncode == 0, r1.stdout + r1.stderr
    r2 = launch(["--resume", str(tmp_path / "runs" / "split")], tmp_path)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    a = ck["model"]
    b = torch.load(tmp_path / "runs" / "split" / "last.pt", map_location="cpu", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="with two GPUs that launch is a real two-rank run")
def test_two_process_launch_without_the_cpu_setting_stops_and_leaves_the_run_folder_as_it_was(tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2`` on a machine without GPUs and without
    ACCELERATE_USE_CPU=1: Accelerate makes each process a 1-rank run of its own. Both stop before
    touching the run folder, each with one line saying why and what to do; overwrite=true included."""
    write_tiny_digits(tmp_path / "digits")
    run_dir = tmp_path / "runs" / "kept"
    run_dir.mkdir(parents=True)
    (run_dir / ".artifacts").write_text("config.yaml\nmetrics.jsonl\n")
    (run_dir / "config.yaml").write_text("model:\n  T: 2\n")
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = checksums(run_dir)
    r = launch(two_rank_args(tmp_path, "kept", "--train.overwrite=true"), tmp_path, use_cpu=False)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors and all(line == errors[0] for line in errors), r.stderr
    assert errors[0] == ("error: the launcher started 2 processes but Accelerate runs this one alone on cpu (no GPU "
                         "for it): on a CPU, launch with ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu "
                         "--num_processes 2 ...")
    assert "Traceback" not in r.stderr.split("error:")[0]
    assert checksums(run_dir) == before


def test_the_readmes_cpu_multiprocess_command_runs(tmp_path):
    """The README's two-rank CPU command as written, run from the repository root, with a test port
    and the tiny-run overrides appended (data, sizes, and an output folder out of the repository)."""
    readme = (REPO / "README.md").read_text()
    (command,) = re.findall(r"^(ACCELERATE_USE_CPU=1 accelerate launch .*?)(?:  +#.*)?$", readme, re.M)
    words = command.split()
    assert words[:3] == ["ACCELERATE_USE_CPU=1", "accelerate", "launch"] and "train/run.py" in words
    write_tiny_digits(tmp_path / "digits")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    args = two_rank_args(tmp_path, "readme")[2:]  # the README gives the config
    cmd = [ACCELERATE, "launch", "--main_process_port", str(free_port()), *words[3:], *args]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 rank(s) on cpu" in r.stdout
    assert [row["epoch"] for row in map(json.loads, (tmp_path / "runs" / "readme" / "metrics.jsonl").open())] == [1, 2]
