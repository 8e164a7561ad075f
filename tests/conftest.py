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


def _interpreter_problem() -> str | None:
    """Why the installed triton's interpreter cannot run the kernel tests here, or None.

    triton 3.6's interpreter calls ``int()`` on one-element numpy arrays, which numpy >= 2.3 refuses,
    so every kernel fails inside the interpreter (triton 3.9 works; 3.7 is untested and treated as
    3.6). The supported pairs: triton 3.6 with numpy < 2.3 (``make test-triton-min``), or a newer
    triton with any numpy; compiled on a GPU, any numpy."""
    if HAS_CUDA:
        return None
    import numpy
    import triton

    version = lambda v: tuple(int(x) for x in v.split("+")[0].split(".")[:2])  # noqa: E731
    if version(triton.__version__) < (3, 8) and version(numpy.__version__) >= (2, 3):
        return (f"triton {triton.__version__}'s interpreter fails with numpy {numpy.__version__} (>= 2.3): "
                "install numpy<2.3 (as `make test-triton-min` does) or triton >= 3.8")
    return None


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    problem = _interpreter_problem()
    skip_interpret = pytest.mark.skip(reason=problem) if problem else None
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if skip_interpret is not None and "interpret" in item.keywords:
            item.add_marker(skip_interpret)


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
