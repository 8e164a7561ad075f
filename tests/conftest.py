"""Test-suite set-up.

Without CUDA, Triton kernels run under the interpreter on CPU tensors: ``TRITON_INTERPRET=1`` must
be set before ``triton`` is first imported, so it is set here, at collection start. With CUDA the
same kernel tests run compiled on the GPU. Ahead-of-time compiles (which fail under the
interpreter) run in their own subprocess.
"""

import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"


@pytest.fixture
def device():
    return DEVICE


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


def nan_poison(monkeypatch, module, name: str) -> None:
    """Make the allocator ``module.name(like, dtype=None)`` return NaN-filled floating tensors, so an
    element a kernel never writes fails the test that reads it."""
    alloc = getattr(module, name)

    def poisoned(like, dtype=None):
        out = alloc(like, dtype)
        if out.is_floating_point():
            out.fill_(float("nan"))
        return out

    monkeypatch.setattr(module, name, poisoned)
