"""The shipped SHD config (recurrent 700-240-20 net, T = 250) trains end to end on generated data in
the official SHD HDF5 format, through the trainer: on the reference backend, and on the fused
recurrent kernel (under the Triton interpreter on the CPU, or compiled on a GPU)."""

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("h5py")
pytest.importorskip("datasets")

from data_fixtures import write_shd_h5
from asgl.train.run import main

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_shd(root, n_train, n_test, seed=0):
    """Spike trains whose class sets the active unit range and timing, so the task is learnable."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        times, units, labels = [], [], []
        for i in range(n):
            label = i % 20
            k = rng.integers(150, 300)
            units.append(rng.integers(label * 35, label * 35 + 35, size=k))
            times.append(np.sort(rng.uniform(0.05 * (label % 5), 1.2, size=k)))
            labels.append(label)
        write_shd_h5(root / f"shd_{split}.h5", times, units, labels)


def _run(tmp_path, backend, *, batch, epochs, n_train, n_test):
    data = tmp_path / "shd"
    _write_shd(data, n_train, n_test)
    out = tmp_path / "runs"
    code = main([
        "--config", os.path.join(REPO, "configs", "shd_rnn_t250.yaml"),
        f"--data.root={data}", f"--data.cache_dir={tmp_path / 'cache'}",
        f"--data.batch_size={batch}", f"--data.eval_batch_size={batch}",
        f"--optim.epochs={epochs}", f"--model.backend={backend}",
        f"--train.out_dir={out}", "--train.run_name=shd", "--train.log_every=1",
    ])
    assert code == 0
    rows = [json.loads(line) for line in (out / "shd" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == epochs
    for row in rows:
        assert np.isfinite(row["train_loss"]) and np.isfinite(row["test_loss"])
    assert (out / "shd" / "last.pt").exists() and (out / "shd" / "best.pt").exists()
    return rows


def test_shd_config_trains_end_to_end_reference_backend(tmp_path):
    rows = _run(tmp_path, "torch", batch=20, epochs=3, n_train=60, n_test=20)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


@pytest.mark.interpret
def test_shd_config_trains_end_to_end_fused_recurrent_kernel(tmp_path):
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the fused kernel needs CUDA or TRITON_INTERPRET=1")
    _run(tmp_path, "triton", batch=8, epochs=1, n_train=8, n_test=8)  # one tile of 16 rows
