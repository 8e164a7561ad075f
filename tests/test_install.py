"""The installed package: its distribution name, the one top-level import name it takes (`asgl`),
its dependencies, and `pip install .` into a fresh environment running the neuron."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # A copy of the tracked files: the build leaves nothing in the checkout.
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src, dst = REPO / name, build / name
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(out), str(build)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (path,) = out.glob("*.whl")
    return path


def test_wheel_takes_only_the_asgl_import_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"asgl"}  # no top-level `kernels` (Hugging Face's package) or `train`
    for module in ("asgl/kernels/lif.py", "asgl/kernels/lif_ref.py", "asgl/models/resnet.py", "asgl/train/run.py",
                   "asgl/train/data/loader.py", "asgl/train/eval.py"):
        assert module in names, module
    assert wheel.name.startswith("asgl_snn-")


def test_wheel_dependencies_core_and_train_extra(wheel):
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Requires-Dist: ")]
    core = [r for r in requires if "extra ==" not in r]
    assert {r.split(";")[0].split(">")[0].strip() for r in core} == {"torch", "triton", "einops"}
    (triton,) = [r for r in core if r.startswith("triton")]
    assert "sys_platform" in triton and "platform_machine" in triton  # only where its wheels exist
    train = {r.split(";")[0].split(">")[0].strip() for r in requires if "extra == \"train\"" in r}
    assert {"accelerate", "datasets", "rich", "pyyaml"} <= train
    assert "Name: asgl-snn" in meta


def test_clone_imports_take_no_other_top_level_name():
    code = textwrap.dedent("""
        import sys
        import asgl, asgl.kernels, asgl.train.run, asgl.train.data
        assert asgl.kernels.__file__.endswith("kernels/__init__.py"), asgl.kernels.__file__
        assert not {"kernels", "train"} & set(sys.modules), sorted(m for m in sys.modules if m in ("kernels", "train"))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_runs_the_neuron(tmp_path, wheel):
    """A venv without this environment's packages: torch (the CPU build, from the pip cache or
    index), then the wheel; the neuron alone pulls neither the trainer's packages nor the CUDA stack."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    r = subprocess.run([*pip, "torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu",
                        "--extra-index-url", "https://pypi.org/simple"], capture_output=True, text=True)
    if r.returncode != 0:
        r = subprocess.run([*pip, "torch==2.13.0"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"torch cannot be installed here: {r.stderr.strip()[-300:]}")
    r = subprocess.run([*pip, str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    code = textwrap.dedent("""
        import sys, torch, asgl
        lif = asgl.LIF(backend="torch", p=0.2)
        x = torch.randn(4, 3, 5, requires_grad=True)
        y = lif(x)
        y.sum().backward()
        assert y.shape == x.shape and x.grad is not None and torch.isfinite(x.grad).all()
        model = asgl.create_model("digits_cnn", num_classes=10, T=2, in_channels=1, backend="torch")
        model(torch.randn(2, 1, 8, 8)).mean().backward()
        assert "accelerate" not in sys.modules and "datasets" not in sys.modules
        import importlib.util
        assert importlib.util.find_spec("kernels") is None and importlib.util.find_spec("train") is None
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, not the checkout
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
