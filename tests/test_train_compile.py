"""``train.compile``: none | default | reduce-overhead in the trainer.

On the CPU: ``default`` trains through ``torch.compile`` (gradient accumulation, both optimizers:
the widths are learnt) to the eager run's loss, without noise so that only rounding differs (with
noise the compiled graph draws its masks from inductor's generator: the same law, other draws);
``reduce-overhead`` is refused with a clear message (CUDA graphs). On a GPU (``gpu``):
``reduce-overhead`` trains with the fused neurons (noise on) and the fused augmentation.
One compiled run costs about a minute of inductor compiles on 2 idle cores.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_trainer import needs_datasets, rows, run, tiny_args, write_tiny_digits

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    t = tmp_path_factory.mktemp("compile")
    write_tiny_digits(t / "digits")
    return t


def _train(tmp, name, *extra, timeout=900):
    r = run(tiny_args(tmp, name, "--optim.epochs=1", "--train.grad_accum=2", *extra), tmp, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return rows(tmp / "runs" / name)


@needs_datasets
def test_compile_default_trains_like_eager(tmp):
    # without noise (p = 0) only the compiled kernels' rounding differs from eager
    eager = _train(tmp, "eager", "--model.p=0")
    compiled = _train(tmp, "compiled", "--model.p=0", "--train.compile=default")
    assert len(compiled) == len(eager) == 1
    a, b = eager[0]["train_loss"], compiled[0]["train_loss"]
    assert abs(a - b) <= 1e-3 * abs(a), (a, b)


@needs_datasets
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the run is fine")
def test_reduce_overhead_needs_a_gpu(tmp):
    r = run(tiny_args(tmp, "graphs", "--train.compile=reduce-overhead"), tmp)
    assert r.returncode == 2
    assert "train.compile=reduce-overhead captures CUDA graphs and needs a GPU" in r.stderr


@needs_datasets
def test_bad_compile_mode(tmp):
    r = run(tiny_args(tmp, "bad", "--train.compile=max-autotune"), tmp)
    assert r.returncode == 2
    assert "train.compile must be one of none, default, reduce-overhead" in r.stderr


@pytest.mark.gpu
@needs_datasets
def test_reduce_overhead_trains_with_fused_neurons_and_augmentation(tmp):
    out = _train(tmp, "graphs_gpu", "--train.compile=reduce-overhead", "--model.backend=triton",
                 "--data.crop_pad=1", "--data.flip=true", "--data.cutout=2", "--train.mixed_precision=bf16")
    assert math.isfinite(out[0]["train_loss"])
