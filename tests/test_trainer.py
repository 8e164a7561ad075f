"""The trainer end to end, in subprocesses (exit codes, messages and files as a user sees them).

Most runs use a slice of the bundled digits (``tiny_digits``: 96 train / 40 test images) so an epoch
takes well under a second; the quickstart test uses the real config on the full data set.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(REPO / "train" / "run.py")]

needs_datasets = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import datasets"], capture_output=True).returncode != 0,
    reason="reading the digits parquet files needs the datasets package",
)


def write_tiny_digits(root: Path, n_train: int = 96, n_test: int = 40) -> Path:
    """The first ``n_train`` / ``n_test`` rows of the bundled digits, in the same hub parquet layout."""
    import pyarrow.parquet as pq

    for split, n in (("train", n_train), ("test", n_test)):
        src = REPO / "data" / "digits" / "plain_text" / f"{split}-00000-of-00001.parquet"
        out = root / "plain_text" / f"{split}-00000-of-00001.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pq.read_table(src).slice(0, n), out)
    return root


def run(args: list[str], cwd: Path, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    e.pop("TRITON_INTERPRET", None)  # the trainer runs the CPU reference neurons, as a user's would
    return subprocess.run(["nice", *RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e)


def tiny_args(tmp: Path, name: str, *extra: str) -> list[str]:
    """Overrides for a fast run on the tiny digits (digits_cnn, T=2, 12 steps/epoch)."""
    return ["--config", str(REPO / "configs" / "quickstart.yaml"), f"--data.root={tmp / 'digits'}",
            f"--data.cache_dir={tmp / 'cache'}", "--data.batch_size=8", "--data.eval_batch_size=40",
            "--model.T=2", "--optim.epochs=2", f"--train.out_dir={tmp / 'runs'}", f"--train.run_name={name}",
            "--train.log_every=4", *extra]


def params(run_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / f"{which}.pt", map_location="cpu", weights_only=True)["model"]


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    t = tmp_path_factory.mktemp("trainer")
    write_tiny_digits(t / "digits")
    return t


@pytest.fixture(scope="module")
def straight(tmp):
    """An uninterrupted 2-epoch run on the tiny digits: the reference for the resume tests."""
    r = run(tiny_args(tmp, "straight"), tmp)
    assert r.returncode == 0, r.stderr
    return tmp / "runs" / "straight", r


# ---------------------------------------------------------------------------------------- runs


@pytest.mark.e2e
@needs_datasets
def test_quickstart_config_end_to_end(tmp_path):
    """The shipped quickstart on the full digits, shortened to 2 epochs: learns, logs, saves, plots.
    Run from the repository root, as ``make quickstart`` runs it: data.root's default ./data/digits
    is the bundled copy."""
    r = run(["--config", str(REPO / "configs" / "quickstart.yaml"), "--optim.epochs=2",
             f"--data.cache_dir={tmp_path / 'cache'}", f"--train.out_dir={tmp_path / 'runs'}"], REPO)
    assert r.returncode == 0, r.stderr
    run_dir = tmp_path / "runs" / "quickstart"
    lines = [line for line in r.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(" | ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    for key in ("train_loss", "test_acc", "p 0.200", "lr", "samples/s"):
        assert key in lines[-1]
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt"} <= {p.name for p in run_dir.iterdir()}
    m = rows(run_dir)
    assert [row["epoch"] for row in m] == [1, 2]
    assert m[-1]["test_acc"] > 80  # 10 classes: chance is 10 %
    assert set(m[-1]["width"]) == set(m[-1]["firing_rate"]) and len(m[-1]["width"]) == 3
    assert all(0 < f < 1 for f in m[-1]["firing_rate"].values())
    assert m[-1]["peak_mem_mb"] > 0 and m[-1]["samples_per_s"] > 0
    ck = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert (ck["epoch"], ck["step_in_epoch"], ck["world_size"]) == (2, 0, 1)
    assert ck["config"]["optim"]["epochs"] == 2 and ck["noise"]["p"] == pytest.approx(0.2)
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    assert best["best_metric"] == pytest.approx(max(row["test_acc"] for row in m))
    # the saved config reproduces the run's settings
    from asgl.train.config import build_config

    assert build_config(run_dir / "config.yaml").optim.epochs == 2
    pytest.importorskip("matplotlib")
    p = subprocess.run([sys.executable, "-m", "asgl.train.plot", str(run_dir)], cwd=REPO, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    assert {f.name for f in (run_dir / "plots").iterdir()} == {"loss.png", "accuracy.png", "width.png",
                                                                "firing_rate.png"}


@pytest.mark.e2e
@needs_datasets
def test_resume_at_epoch_boundary_is_bit_identical(tmp, straight):
    run_dir, _ = straight
    r1 = run(tiny_args(tmp, "split", "--train.stop_after_epochs=1"), tmp)
    assert r1.returncode == 0, r1.stderr
    split = tmp / "runs" / "split"
    assert f"stopped after epoch 1 (step 12) as asked; resume with --resume {split}" in r1.stdout
    r2 = run(["--resume", str(split)], tmp)
    assert r2.returncode == 0, r2.stderr
    a, b = params(run_dir), params(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra, rb = rows(run_dir), rows(split)
    assert [r["epoch"] for r in rb] == [1, 2]
    for x, y in zip(ra, rb):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "p", "width", "firing_rate"):
            assert x[key] == y[key], key


@pytest.mark.e2e
@needs_datasets
def test_resume_mid_epoch_is_bit_identical(tmp, straight):
    run_dir, _ = straight
    r1 = run(tiny_args(tmp, "mid", "--train.max_steps=17"), tmp)  # 12 steps/epoch: stops at batch 5 of epoch 2
    assert r1.returncode == 0, r1.stderr
    mid = tmp / "runs" / "mid"
    assert f"stopped in epoch 2 after batch 5/12 (step 17) as asked; resume with --resume {mid}" in r1.stdout
    ck = torch.load(mid / "last.pt", map_location="cpu", weights_only=True)
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (1, 5, 17)
    r2 = run(["--resume", str(mid)], tmp)
    assert r2.returncode == 0, r2.stderr
    assert "resumed at epoch 2 batch 5" in r2.stdout
    a, b = params(run_dir), params(mid)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra, rb = rows(run_dir), rows(mid)
    assert [r["epoch"] for r in rb] == [1, 2]
    for key in ("train_loss", "test_acc", "lr"):  # lr: the mean over the whole epoch, wherever it was cut
        assert ra[1][key] == rb[1][key], key


@pytest.mark.e2e
@needs_datasets
def test_sigint_mid_epoch_saves_last_and_resume_finishes(tmp):
    """SIGINT mid-epoch: finish the step, write last.pt with the position, exit 130; resume completes.

    The signal goes out as the first step's progress line arrives, with 287 steps (3 epochs of 96,
    each about a second on an idle machine) left to run: the stop lands inside an epoch however late
    a loaded machine delivers it, and the checks hold for whichever epoch that is."""
    epochs, steps = 3, 96
    args = tiny_args(tmp, "sigint", "--data.batch_size=1", f"--optim.epochs={epochs}", "--train.log_every=1")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.Popen([*RUN, *args], cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:  # signal handlers are installed before the first step
            if line.startswith("step "):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "SIGINT" in err and "Traceback" not in err
    run_dir = tmp / "runs" / "sigint"
    ck = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    epoch, at = ck["epoch"], ck["step_in_epoch"]
    assert epoch < epochs and 0 < at < steps, (epoch, at)
    assert ck["global_step"] == epoch * steps + at
    cut = rows(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    assert [row["epoch"] for row in cut] == list(range(1, epoch + 1))  # no row for the cut epoch
    r = run(["--resume", str(run_dir)], tmp)
    assert r.returncode == 0, r.stderr
    assert f"resumed at epoch {epoch + 1} batch {at}" in r.stdout
    assert [row["epoch"] for row in rows(run_dir)] == list(range(1, epochs + 1))
    assert torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["global_step"] == epochs * steps


@pytest.mark.e2e
@needs_datasets
def test_logged_lr_is_the_epochs_mean_and_a_summary_line_ends_the_run(straight):
    """``lr`` is the mean LR the epoch's 12 steps trained with (cosine over 24 steps from 0.1), not the
    LR after its last step; the run ends with one ``done:`` line naming the best epoch."""
    run_dir, r = straight
    m = rows(run_dir)
    for e, row in enumerate(m):
        want = sum(0.1 * 0.5 * (1 + math.cos(math.pi * s / 24)) for s in range(12 * e, 12 * e + 12)) / 12
        assert row["lr"] == pytest.approx(want, rel=1e-12), e
    best = max(m, key=lambda row: row["test_acc"])
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith(f"done: best test_acc {best['test_acc']:.2f} (epoch {best['epoch']}) | "
                           f"run folder {run_dir} | "), last
    assert float(last.rsplit("| ", 1)[1].removesuffix(" s")) > 0


@pytest.mark.e2e
@needs_datasets
def test_debug_ranks_output_leaves_the_run_unchanged(tmp, straight):
    """The per-rank records (indices, eval counts, the forked-RNG noise probe) do not perturb training."""
    run_dir, _ = straight
    r = run(tiny_args(tmp, "debug", "--train.debug_ranks=true"), tmp)
    assert r.returncode == 0, r.stderr
    a, b = params(run_dir), params(tmp / "runs" / "debug")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = [json.loads(line) for line in (tmp / "runs" / "debug" / "ranks" / "rank0.jsonl").read_text().splitlines()]
    assert [e["evaluated"] for e in log if "eval_epoch" in e] == [40, 40]
    probes = [e["noise_probe_sha256"] for e in log if "epoch_done" in e]
    assert len(probes) == 2 and all(probes) and probes[0] != probes[1]  # the stream moves on between epochs


@pytest.mark.e2e
@needs_datasets
def test_bf16_autocast_run_on_cpu(tmp):
    r = run(tiny_args(tmp, "bf16", "--train.mixed_precision=bf16", "--optim.epochs=1"), tmp)
    assert r.returncode == 0, r.stderr
    (row,) = rows(tmp / "runs" / "bf16")
    for key in ("train_loss", "test_loss", "train_acc", "test_acc", "lr"):
        assert math.isfinite(row[key]), key
    assert 0 <= row["test_acc"] <= 100 and row["train_loss"] > 0
    assert all(torch.isfinite(v).all() for v in params(tmp / "runs" / "bf16").values() if v.is_floating_point())


def test_fp16_step_updates_the_shared_scaler_once_for_both_optimizers():
    """Weights and neuron parameters share one loss scale S: an overflow in the weights skips their
    step and halves S once, after the neuron gradients were unscaled with the S they were scaled by;
    clean steps advance the growth counter once per step."""
    from asgl.train.run import optimizer_step

    class Wrapped:  # Accelerate's wrapper: its own step() would update the scaler again
        def __init__(self, opt):
            self.optimizer = opt

        def step(self):
            raise AssertionError("the wrapper's step must be bypassed")

        def zero_grad(self, set_to_none=True):
            self.optimizer.zero_grad(set_to_none=set_to_none)

    w, n = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    opts = [Wrapped(torch.optim.SGD([w], lr=1.0)), Wrapped(torch.optim.SGD([n], lr=1.0))]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)

    def backward(grad_w, grad_n):  # a loss whose gradients are grad_w, grad_n, scaled as in training
        scaler.scale((w * torch.tensor(grad_w)).sum() + (n * torch.tensor(grad_n)).sum()).backward()

    S = scaler.get_scale()
    backward([float("inf"), 0.0, 0.0], [1.0, 2.0])
    assert torch.equal(n.grad, S * torch.tensor([1.0, 2.0]))
    optimizer_step(opts, scaler)
    assert scaler.get_scale() == S / 2
    assert torch.equal(w.detach(), torch.zeros(3))  # skipped
    assert torch.equal(n.detach(), torch.tensor([-1.0, -2.0]))  # unscaled by S, not by S / 2
    assert w.grad is None and n.grad is None
    S = scaler.get_scale()
    for k in range(2):  # growth_interval=2: S doubles after the second clean step, not the first
        backward([1.0, 1.0, 1.0], [1.0, 1.0])
        optimizer_step(opts, scaler)
        assert scaler.get_scale() == (S if k == 0 else 2 * S), k
    assert torch.equal(w.detach(), torch.full((3,), -2.0)) and torch.equal(n.detach(), torch.tensor([-3.0, -4.0]))

    plain = torch.optim.SGD([w], lr=1.0)  # no scaler (fp32, bf16): plain steps
    w.grad = torch.ones(3)
    before = w.detach().clone()
    optimizer_step([plain], None)
    assert torch.equal(w.detach(), before - 1) and w.grad is None


# ---------------------------------------------------------------------------------- bad input


def main_in_process(args: list[str], capsys) -> tuple[int, str]:
    """``train/run.py``'s ``main`` in this process, for what it refuses before it starts anything
    (no Accelerator, nothing written): ``(exit code, stderr)``. An exception fails the test."""
    from asgl.train.run import main

    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("--model.widht=2", "unknown config key 'model.widht' (did you mean 'model.width'?)"),
    ("--optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
    ("--optim.lr=-0.1", "optim.lr must be > 0"),
    ("--model.p=1.5", "model.p (the analog-mode probability) must be in [0, 1]"),
    ("--model.name=resnet81", "model.name must be one of"),
    ("--train.mixed_precision=fp8", "train.mixed_precision must be one of no, bf16, fp16"),
    ("--model.surrogate=sigmod", "did you mean 'sigmoid'?"),
    ("--train.seed=-1", "train.seed must be in [0, 2**31)"),
    ("--train.seed=5000000000", "train.seed must be in [0, 2**31)"),
    ("--model.width=200", "model.width α = 200.0 is wider than min_slope = 0.01 allows"),
    ("--data.name=shd --data.frames=3", "data.frames (3) must equal model.T (2)"),  # model.T=2
])
def test_bad_config_exits_2_with_one_clear_message(tmp_path, capsys, override, message):
    code, err = main_in_process(tiny_args(tmp_path, "bad", *override.split()), capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("override, message", [  # refused once the Accelerator knows the device
    pytest.param("--train.mixed_precision=fp16", "train.mixed_precision=fp16",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused only on a CPU")),
    pytest.param("--model.backend=triton", "model.backend=triton needs a CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="refused only without CUDA")),
])
def test_bad_setting_for_the_device_exits_2_with_one_clear_message(tmp_path, override, message):
    r = run(tiny_args(tmp_path, "bad", override), tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_unusable_out_dir_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for out_dir in (tmp_path / "afile", tmp_path / "afile" / "deeper"):
        code, err = main_in_process(tiny_args(tmp_path, "x", f"--train.out_dir={out_dir}"), capsys)
        assert code == 2 and "is not a folder" in err, err
    assert (tmp_path / "afile").read_text() == "x"


def test_run_folder_records_what_is_written_and_clears_only_that(tmp_path):
    from asgl.train import run_folder as rf

    run_dir = tmp_path / "runs" / "r"
    rf.check(run_dir, overwrite=False)  # not there yet: fine
    rf.prepare(run_dir, fresh=True)
    rf.write(run_dir / "config.yaml", b"a")
    (run_dir / "plots").mkdir()
    (run_dir / "plots" / "x.png").write_bytes(b"p")
    rf.record(run_dir / "plots" / "x.png")
    rf.record(run_dir / "plots" / "y.png")  # a folder is listed once, by its top-level name
    (run_dir / "mine.txt").write_text("m")
    assert rf.recorded(run_dir) == ["config.yaml", "plots"]
    rf.write(tmp_path / "elsewhere.json", b"{}")  # outside any run folder: written, recorded nowhere
    assert (tmp_path / "elsewhere.json").read_bytes() == b"{}" and not (tmp_path / rf.MANIFEST).exists()
    with pytest.raises(rf.UsageError, match="exists and is not empty"):
        rf.check(run_dir, overwrite=False)
    rf.check(run_dir, overwrite=True)
    rf.prepare(run_dir, fresh=True)
    assert sorted(p.name for p in run_dir.iterdir()) == [rf.MANIFEST, "mine.txt"] and rf.recorded(run_dir) == []
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "f").write_text("f")
    with pytest.raises(rf.UsageError, match="holds no .artifacts record"):
        rf.check(tmp_path / "plain", overwrite=True)


def test_written_files_get_the_usual_permissions(tmp_path):
    from asgl.train.checkpoint import write_atomic

    umask = os.umask(0)
    os.umask(umask)
    write_atomic(b"data", tmp_path / "f.bin")
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.e2e
def test_missing_data_is_a_clear_error_and_writes_nothing(tmp_path):
    r = run(tiny_args(tmp_path, "nodata"), tmp_path)  # tmp_path/digits does not exist
    assert r.returncode == 2
    assert "data set 'digits'" in r.stderr and str(tmp_path / "digits") in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e
@needs_datasets
def test_neither_local_files_nor_hub_is_a_clear_error_and_writes_nothing(tmp_path):
    r = run(tiny_args(tmp_path, "hubless", "--data.name=cifar10", "--model.name=resnet18"), tmp_path,
            env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"no local files under {tmp_path / 'digits'} and the hub copy 'uoft-cs/cifar10' could not" in r.stderr
    assert f"python -m asgl.train.data.prepare cifar10 --root {tmp_path / 'digits'}" in r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e
@needs_datasets
def test_existing_run_folder_is_not_overwritten(tmp, straight):
    run_dir, _ = straight
    before = snapshot(run_dir)
    r = run(tiny_args(tmp, "straight"), tmp)
    assert r.returncode == 2 and "exists and is not empty" in r.stderr and "--resume" in r.stderr
    assert snapshot(run_dir) == before


@pytest.mark.e2e
@needs_datasets
def test_resume_of_a_finished_run_says_so_and_changes_nothing(tmp, straight):
    run_dir, _ = straight
    done = tmp / "runs" / "done"
    done.mkdir()
    for name, data in snapshot(run_dir).items():
        (done / name).write_bytes(data)
    before = snapshot(done)
    r = run(["--resume", str(done)], tmp)
    assert r.returncode == 0, r.stderr
    best = max(rows(run_dir), key=lambda row: row["test_acc"])
    assert r.stdout == (f"{done} is complete: 2 of 2 epochs done, best test_acc {best['test_acc']:.2f} (epoch "
                        f"{best['epoch']}); nothing changed (to train on, resume with a larger --optim.epochs)\n")
    assert snapshot(done) == before and sorted(p.name for p in done.iterdir()) == sorted(before)


@pytest.mark.e2e
@needs_datasets
def test_overwrite_removes_what_a_run_and_its_eval_and_plots_wrote_and_nothing_else(tmp):
    """train.overwrite=true clears exactly what the manifest lists: the old run's files, its
    eval_best.json and plots/ (and logs/, ranks/), not a file of the user's."""
    pytest.importorskip("matplotlib")
    first = run(tiny_args(tmp, "ow", "--optim.epochs=1", "--train.debug_ranks=true"), tmp)
    assert first.returncode == 0, first.stderr
    run_dir = tmp / "runs" / "ow"
    r = run_eval([str(run_dir), f"--data.root={tmp / 'digits'}", f"--data.cache_dir={tmp / 'cache'}"], tmp)
    assert r.returncode == 0, r.stderr
    from asgl.train.plot import main as plot

    assert plot([str(run_dir)]) == 0
    (run_dir / "notes.txt").write_text("mine")
    assert set((run_dir / ".artifacts").read_text().split()) == {
        "config.yaml", "last.pt", "best.pt", "metrics.jsonl", "ranks", "eval_best.json", "plots"}
    second = run(tiny_args(tmp, "ow", "--optim.epochs=1", "--train.overwrite=true", "--train.seed=1"), tmp)
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [".artifacts", "best.pt", "config.yaml", "last.pt",
                                                          "metrics.jsonl", "notes.txt"]
    assert (run_dir / "notes.txt").read_text() == "mine" and [row["epoch"] for row in rows(run_dir)] == [1]
    # a folder with no record of what a run wrote there is not cleared
    (tmp / "runs" / "other").mkdir()
    (tmp / "runs" / "other" / "data.bin").write_bytes(b"x")
    r = run(tiny_args(tmp, "other", "--train.overwrite=true"), tmp)
    assert r.returncode == 2 and "holds no .artifacts record" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in (tmp / "runs" / "other").iterdir()) == ["data.bin"]


@pytest.mark.e2e
@needs_datasets
def test_corrupt_checkpoint_is_refused_and_nothing_overwritten(tmp, straight):
    run_dir, _ = straight
    bad = tmp / "runs" / "corrupt"
    bad.mkdir()
    for name, data in snapshot(run_dir).items():
        (bad / name).write_bytes(data)
    (bad / "last.pt").write_bytes((run_dir / "last.pt").read_bytes()[:5000])  # truncated
    before = snapshot(bad)
    r = run(["--resume", str(bad), "--optim.epochs=3"], tmp)
    assert r.returncode == 2
    assert "corrupt" in r.stderr and "last.pt" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(bad) == before
    # a readable checkpoint of another network: refused before anything is written
    (bad / "last.pt").write_bytes((run_dir / "last.pt").read_bytes())
    before = snapshot(bad)
    # a stop that lies behind the checkpoint: refused, nothing written
    r = run(["--resume", str(bad), "--train.stop_after_epochs=1"], tmp)
    assert r.returncode == 2 and "has already finished epoch 2" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(bad) == before
    r = run(["--resume", str(bad), "--optim.epochs=3", "--model.name=digits_cnn8"], tmp)
    assert r.returncode == 2 and "does not fit this run" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(bad) == before


@pytest.mark.e2e
@needs_datasets
def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp):
    """Epoch 1 trains normally; resumed with an absurd LR the loss blows up: exit 1, last.pt untouched."""
    r1 = run(tiny_args(tmp, "nan", "--optim.epochs=3", "--train.stop_after_epochs=1"), tmp)
    assert r1.returncode == 0, r1.stderr
    run_dir = tmp / "runs" / "nan"
    good = (run_dir / "last.pt").read_bytes()
    r2 = run(["--resume", str(run_dir), "--optim.lr=1e38", "--optim.schedule=none"], tmp)
    assert r2.returncode == 1, r2.stderr
    assert "non-finite training loss in epoch 2" in r2.stderr and "Traceback" not in r2.stderr
    assert f"The last good checkpoint is kept: {run_dir / 'last.pt'}" in r2.stderr
    assert (run_dir / "last.pt").read_bytes() == good
    assert [row["epoch"] for row in rows(run_dir)] == [1]
    assert all(torch.isfinite(v).all() for v in params(run_dir).values() if v.is_floating_point())
    # config.yaml now holds the failed overrides; a plain resume goes on with the checkpoint's config
    r3 = run(["--resume", str(run_dir), "--train.stop_after_epochs=2"], tmp)
    assert r3.returncode == 0, r3.stderr
    assert [row["epoch"] for row in rows(run_dir)] == [1, 2]
    assert "lr: 0.1" in (run_dir / "config.yaml").read_text()


@pytest.mark.e2e
@needs_datasets
def test_nonfinite_loss_before_any_checkpoint_says_so(tmp):
    r = run(tiny_args(tmp, "nan0", "--optim.lr=1e38", "--optim.schedule=none"), tmp)
    assert r.returncode == 1, r.stderr
    assert "non-finite training loss in epoch 1" in r.stderr
    assert "No checkpoint was written yet" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp / "runs" / "nan0" / "last.pt").exists()


def test_unknown_tracker_is_a_config_error_and_writes_nothing(tmp_path, capsys):
    code, err = main_in_process(tiny_args(tmp_path, "tr", "--train.trackers=[tensorbord]"), capsys)
    assert code == 2
    assert "train.trackers must be one of tensorboard, wandb" in err and "did you mean 'tensorboard'?" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("tracker", ["wandb", "aim", "mlflow", "comet_ml"])
def test_missing_tracker_package_is_a_config_error_and_writes_nothing(tmp_path, capsys, tracker):
    import importlib.util

    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed")
    code, err = main_in_process(tiny_args(tmp_path, "tr", f"--train.trackers=[tensorboard,{tracker}]"), capsys)
    assert code == 2
    assert f"train.trackers: {tracker} needs the {tracker} package (pip install {tracker})" in err
    assert not (tmp_path / "runs").exists()


def read_tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from the TensorBoard event files under ``folder`` (TFRecord
    framing: u64 length, u32 crc, the Event proto, u32 crc)."""
    import struct

    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


@pytest.mark.e2e
@needs_datasets
def test_tensorboard_tracker_logs_log_points_and_epochs(tmp):
    """train.trackers=[tensorboard]: the running loss every train.log_every steps, the epoch rows
    (per-layer width and firing rate included) at each epoch's last step; the run is unchanged."""
    pytest.importorskip("tensorboardX")
    r = run(tiny_args(tmp, "tb", "--train.trackers=[tensorboard]"), tmp)
    assert r.returncode == 0, r.stderr
    scalars = read_tensorboard_scalars(tmp / "runs" / "tb" / "logs")
    assert [step for step, _ in scalars["train/loss"]] == [4, 8, 12, 16, 20, 24]  # log_every=4, 12 steps/epoch
    m = rows(tmp / "runs" / "tb")
    assert [v for _, v in scalars["test_acc"]] == pytest.approx([row["test_acc"] for row in m])
    assert [step for step, _ in scalars["test_acc"]] == [12, 24]
    for name in m[-1]["width"]:
        assert scalars[f"width/{name}"][-1][1] == pytest.approx(m[-1]["width"][name])
        assert scalars[f"firing_rate/{name}"][-1][1] == pytest.approx(m[-1]["firing_rate"][name])


@pytest.mark.e2e
@needs_datasets
def test_progress_lines_without_a_terminal(straight):
    """stdout is not a terminal here: one line per log point (every 4 steps) with samples/s and ETA."""
    _, r = straight
    lines = [line for line in r.stdout.splitlines() if line.startswith("step ")]
    assert [line.split(" | ")[0] for line in lines] == [f"step {s}/24" for s in (4, 8, 12, 16, 20, 24)]
    assert all("samples/s" in line and " | eta " in line for line in lines)
    assert lines[-1].endswith("eta 0m00s")


# ------------------------------------------------------------------------------------- knobs


def test_label_smoothing_matches_torch_cross_entropy():
    from asgl.train.config import build_config
    from asgl.train.run import make_criterion

    torch.manual_seed(0)
    logits, y = torch.randn(3, 5, 7), torch.randint(0, 7, (5,))
    for eps in (0.0, 0.1, 0.5):
        cfg = build_config(None, {"loss.label_smoothing": eps})
        want = torch.nn.functional.cross_entropy(logits.mean(0), y, label_smoothing=eps)
        torch.testing.assert_close(make_criterion(cfg, 7)(logits, y), want)
    tet = build_config(None, {"loss.name": "tet", "loss.tet_lambda": 0.0, "loss.label_smoothing": 0.2})
    want = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(3), label_smoothing=0.2)
    torch.testing.assert_close(make_criterion(tet, 7)(logits, y), want)


@pytest.mark.e2e
@needs_datasets
def test_clip_grad_norm_off_by_a_huge_bound_and_on_by_a_small_one(tmp, straight):
    run_dir, _ = straight
    r = run(tiny_args(tmp, "clip_big", "--optim.clip_grad_norm=1e9"), tmp)
    assert r.returncode == 0, r.stderr
    a, b = params(run_dir), params(tmp / "runs" / "clip_big")
    assert all(torch.equal(a[k], b[k]) for k in a)  # never reached: the same run bit for bit
    r = run(tiny_args(tmp, "clip_small", "--optim.clip_grad_norm=0.01"), tmp)
    assert r.returncode == 0, r.stderr
    c = params(tmp / "runs" / "clip_small")
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert all(torch.isfinite(v).all() for v in c.values() if v.is_floating_point())


@pytest.mark.e2e
@needs_datasets
def test_channels_last_on_a_cpu_and_the_launchers_mixed_precision_warning(tmp):
    r = run(tiny_args(tmp, "nhwc", "--train.channels_last=true", "--optim.epochs=1"), tmp,
            env={"ACCELERATE_MIXED_PRECISION": "bf16"})
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("run ") and "| channels_last" in line for line in r.stdout.splitlines())
    assert ("the launcher asks for mixed precision 'bf16'" in r.stderr
            and "train.mixed_precision='no'; using the config's" in r.stderr)
    convs = [w for w in params(tmp / "runs" / "nhwc").values() if w.dim() == 4 and w.shape[1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    (row,) = rows(tmp / "runs" / "nhwc")
    assert math.isfinite(row["train_loss"]) and row["test_acc"] >= 0


@pytest.mark.e2e
def test_help_describes_every_key():
    """--help is for users: how to run, the run folder, every key with its default spelt as in a
    YAML config (null, true, []), the data set names listed; no walk through the code."""
    r = subprocess.run([*RUN, "--help"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0
    assert r.stdout.startswith("Train an ASGL spiking network.\n")
    assert "--optim.clip_grad_norm=null\n      clip the global gradient norm" in r.stdout
    assert "--data.source=auto\n      auto: local files" in r.stdout
    assert "--model.learn_width=true\n" in r.stdout and "--train.trackers=[]\n" in r.stdout
    from asgl.train.data import DATASETS

    assert "--data.name=digits\n      one of " + " | ".join(DATASETS) + "\n" in r.stdout
    import yaml

    from asgl.train.config import RunConfig, flatten, to_dict

    want = flatten(to_dict(RunConfig()))
    shown = dict(line[4:].split("=", 1) for line in r.stdout.splitlines() if line.startswith("  --"))
    assert shown.keys() == want.keys()
    for key, text in shown.items():  # what a YAML config file would say
        assert yaml.safe_load(text) == want[key], (key, text)
    assert not {"None", "True", "False", "()"} & set(shown.values()) and "None ->" not in r.stdout
    assert "parse_command_line" not in r.stdout and "Reads top to bottom" not in r.stdout


# ------------------------------------------------------------------------------------ evaluation


def run_eval(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONWARNINGS": "ignore"}
    e.pop("TRITON_INTERPRET", None)
    return subprocess.run(["nice", sys.executable, "-m", "asgl.train.eval", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=240, env={**e, "PYTHONPATH": str(REPO)})


@pytest.mark.e2e
@needs_datasets
def test_eval_of_a_run_folder_scores_what_training_logged(tmp, straight):
    run_dir, _ = straight
    r = run_eval([str(run_dir), f"--data.root={tmp / 'digits'}", f"--data.cache_dir={tmp / 'cache'}"], tmp)
    assert r.returncode == 0, r.stderr
    report = json.loads((run_dir / "eval_best.json").read_text())
    m = rows(run_dir)
    best = max(m, key=lambda row: row["test_acc"])
    # the evaluation code the trainer logs with, on best.pt: the same numbers, bit for bit
    assert report["top1"] == best["test_acc"] and report["loss"] == best["test_loss"]
    assert report["top5"] == best["test_top5"] and report["firing_rate"] == best["firing_rate"]
    assert report["epoch"] == best["epoch"] and report["samples"] == 40 and report["T"] == 2
    assert len(report["top1_per_step"]) == len(report["top1_upto_step"]) == 2
    assert report["top1_upto_step"][-1] == report["top1"]
    assert 0 <= min(report["top1_per_step"]) and max(report["top1_per_step"]) <= 100
    assert report["top5"] >= report["top1"]
    (line,) = r.stdout.splitlines()
    assert line.startswith(f"eval {run_dir / 'best.pt'} | top1 {best['test_acc']:.2f} | top5 ")
    out = tmp / "last_eval.json"
    r = run_eval([str(run_dir / "last.pt"), f"--out={out}", f"--data.root={tmp / 'digits'}",
                  f"--data.cache_dir={tmp / 'cache'}", "--data.eval_batch_size=7"], tmp)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["top1"] == pytest.approx(m[-1]["test_acc"])


@pytest.mark.e2e
@needs_datasets
def test_eval_refuses_a_checkpoint_of_another_model_and_bad_targets(tmp, straight):
    run_dir, _ = straight
    before = snapshot(run_dir)
    common = [f"--data.root={tmp / 'digits'}", f"--data.cache_dir={tmp / 'cache'}"]
    r = run_eval([str(run_dir / "last.pt"), "--model.name=digits_cnn8", "--out", str(tmp / "x.json"), *common], tmp)
    assert r.returncode == 2 and "does not fit the model digits_cnn8" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp / "x.json").exists() and snapshot(run_dir) == before
    for target, message in ((tmp / "nowhere", "no such run folder or checkpoint"),
                            (tmp / "digits", "no best.pt or last.pt")):
        r = run_eval([str(target), *common], tmp)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_plot_without_metrics_is_a_clear_error(tmp_path, capsys):
    from asgl.train.plot import main

    assert main([str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_checkpoint_rng_round_trip_and_errors(tmp_path):
    import random

    import numpy as np

    from asgl.train import checkpoint as ck

    random.random(), np.random.normal()  # a cached Gaussian in numpy's state
    state = ck.rng_state()
    first = (random.random(), np.random.normal(), torch.rand(3))
    required = {k: 0 for k in ck.REQUIRED}
    ck.write_atomic(ck.serialize({**required, "rng": [state]}), tmp_path / "c.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind
    loaded = ck.load(tmp_path / "c.pt")  # weights_only: plain tensors, numbers, lists
    ck.set_rng_state(loaded["rng"][0])
    again = (random.random(), np.random.normal(), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ck.CheckpointError, match="corrupt or not a checkpoint"):
        ck.load(tmp_path / "junk.pt")
    torch.save({"format": ck.FORMAT, "model": {}}, tmp_path / "partial.pt")
    with pytest.raises(ck.CheckpointError, match="lacks optimizer"):
        ck.load(tmp_path / "partial.pt")
    with pytest.raises(ck.CheckpointError, match="no checkpoint at"):
        ck.load(tmp_path / "missing.pt")


@pytest.mark.e2e
@pytest.mark.multiproc
@needs_datasets
def test_eval_on_two_ranks_covers_the_test_set_once(tmp, straight):
    """``accelerate launch`` with 2 CPU ranks: each scores its share, the sums are reduced; the result
    is the single-process one."""
    import shutil
    import socket

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate CLI not found")
    run_dir, _ = straight
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    out = tmp / "eval_2ranks.json"
    r = subprocess.run(["nice", accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
                        str(REPO / "train" / "eval.py"), str(run_dir), f"--out={out}", f"--data.root={tmp / 'digits'}",
                        f"--data.cache_dir={tmp / 'cache'}", "--data.eval_batch_size=6"],
                       cwd=tmp, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sum(line.startswith("eval ") for line in r.stdout.splitlines()) == 1  # the main process reports
    report = json.loads(out.read_text())
    best = max(rows(run_dir), key=lambda row: row["test_acc"])
    assert report["world_size"] == 2 and report["samples"] == 40
    assert report["top1"] == pytest.approx(best["test_acc"])
