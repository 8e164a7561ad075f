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


def test_wheel_holds_only_the_package(wheel):
    """One top-level name, ``asgl``; inside it Python modules only (no tests, benchmarks, configs or
    data), the run-time pieces among them; the licence in the metadata."""
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"asgl"}  # no top-level `kernels` (Hugging Face's package) or `train`
    package = [n for n in names if n.startswith("asgl/")]
    assert all(n.endswith(".py") for n in package), [n for n in package if not n.endswith(".py")]
    assert not [n for n in package if "/tests/" in n or "/perf/" in n or "/studies/results" in n]
    for module in ("asgl/kernels/lif.py", "asgl/kernels/lif_ref.py", "asgl/models/resnet.py", "asgl/train/run.py",
                   "asgl/train/data/loader.py", "asgl/train/eval.py", "asgl/train/data/make_digits.py",
                   "asgl/extras.py", "asgl/energy.py", "asgl/preprocess.py"):
        assert module in names, module
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
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


def test_extras_table_matches_pyproject():
    """asgl.extras.PACKAGES names, for each optional import, the extra of pyproject.toml that installs it."""
    import tomllib

    from asgl.extras import PACKAGES

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {extra: {req.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                     for req in reqs} for extra, reqs in extras.items()}
    through = {"pyarrow": "datasets"}  # installed by a package the extra lists
    for module, (dist, extra) in PACKAGES.items():
        assert extra in names, (module, extra)
        assert (through.get(dist) or dist).lower() in names[extra], (module, dist, extra)


BLOCK = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
sys.argv = [{module!r}, *{args!r}]
runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("module,blocked,args,extra", [
    ("asgl.train.eval", ["yaml"], ["runs/x"], "train"),
    ("asgl.train.export", ["yaml"], ["runs/x", "out"], "train"),
    ("asgl.train.export", ["safetensors"], ["runs/x", "out"], "deploy"),
    ("asgl.train.export", ["nir"], ["runs/x", "out.nir", "--format", "nir"], "deploy"),
    ("asgl.train.plot", ["matplotlib"], ["."], "plot"),
    ("asgl.train.data.prepare", ["sklearn"], ["digits", "--root", "{tmp}/digits"], "digits"),
    ("asgl.train.data.prepare", ["pyarrow"], ["cifar10", "--root", "{tmp}/c10"], "train"),
])
def test_a_missing_extra_is_one_line_naming_it(tmp_path, module, blocked, args, extra):
    """A command whose optional package is missing says so in one line naming the asgl-snn extra
    (not a ModuleNotFoundError traceback)."""
    args = [a.format(tmp=tmp_path) for a in args]
    (tmp_path / "c10" / "plain_text").mkdir(parents=True)
    for split in ("train", "test"):
        (tmp_path / "c10" / "plain_text" / f"{split}-00000-of-00001.parquet").write_bytes(b"")
    code = BLOCK.format(blocked=set(blocked), module=module, args=args)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode in (1, 2), (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: ") and f"pip install 'asgl-snn[{extra}]'" in r.stderr, r.stderr


OPTIONAL = ["numpy", "yaml", "accelerate", "datasets", "huggingface_hub", "rich", "PIL", "pyarrow", "h5py",
            "sklearn", "matplotlib", "nir", "safetensors", "nirtorch", "snntorch"]

# What `pip install asgl-snn` (no extras) must run: every network built, the small ones run, the
# neuron forward and backward on the CPU, and the optional paths failing in one line.
CORE_CHECK = """
import torch, asgl
for name in asgl.list_models():
    asgl.create_model(name, **({"in_channels": 2} if name == "vggsnn" else {}))
model = asgl.create_model("resnet18", num_classes=10, T=2)
model(torch.rand(2, 3, 16, 16)).mean().backward()
model = asgl.create_model("digits_cnn", num_classes=10, T=2, in_channels=1, backend="torch")
model(torch.randn(2, 1, 8, 8)).mean().backward()
lif = asgl.LIF(backend="auto", p=0.2)
x = torch.randn(4, 3, 5, requires_grad=True)
y = lif(x)
y.sum().backward()
assert y.shape == x.shape and x.grad is not None and torch.isfinite(x.grad).all()
try:
    asgl.load_pretrained("nowhere")
except ImportError as e:
    assert str(e).endswith("pip install 'asgl-snn[deploy]'"), e
else:
    raise AssertionError("load_pretrained without safetensors")
print("ok")
"""


def test_the_core_runs_without_any_optional_package():
    """The check a wheel install gets (below, slow), here in this environment with every optional
    package hidden from the import system: ``import asgl`` needs none of them."""
    code = BLOCK.format(blocked=set(OPTIONAL), module="__check__", args=[]).replace(
        "runpy.run_module('__check__', run_name=\"__main__\", alter_sys=True)", CORE_CHECK).replace(
        "sys.argv = ['__check__', *[]]", "")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def _install_torch(pip: list[str]) -> subprocess.CompletedProcess:
    """torch 2.13.0 as the Makefile installs it on a GPU-less machine: the CPU build, from a local
    wheel (pip's find-links) first, else from the PyTorch CPU index; never PyPI's CUDA build."""
    r = subprocess.run([*pip, "--no-index", "torch==2.13.0"], capture_output=True, text=True)
    if r.returncode != 0:
        r = subprocess.run([*pip, "--index-url", "https://download.pytorch.org/whl/cpu", "--retries", "1",
                            "--timeout", "20", "torch==2.13.0"], capture_output=True, text=True)
    return r


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_runs_the_core(tmp_path, wheel):
    """A venv without this environment's packages: the CPU build of torch, then the wheel (which
    brings einops and triton); the core runs, the trainer's packages are not pulled, and a command
    that needs an extra names it in one line."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q"]
    r = _install_torch(pip)
    if r.returncode != 0:
        pytest.skip(f"no CPU build of torch 2.13.0 reachable here: {r.stderr.strip()[-300:]}")
    r = subprocess.run([*pip, str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    installed = {line.split("==")[0].lower() for line in listed.split()}
    assert not installed & {"accelerate", "datasets", "pyyaml", "numpy", "nir", "safetensors"}, sorted(installed)
    assert "+cpu" in subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                                    text=True).stdout
    check = CORE_CHECK + (
        "import importlib.util\n"
        "assert importlib.util.find_spec('kernels') is None and importlib.util.find_spec('train') is None\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    r = subprocess.run([python, "-c", check], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = subprocess.run([python, "-m", "asgl.train.eval", "runs/quickstart"], cwd=tmp_path, capture_output=True,
                       text=True, env=env)
    assert r.returncode == 2, r.stderr
    # torch itself warns, in two lines, when it is imported without numpy; then the command's one line
    lines = [line for line in r.stderr.splitlines() if "Failed to initialize NumPy" not in line
             and "_conversion_method_template" not in line]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("error: python -m asgl.train.eval needs the `")
    assert lines[0].endswith("package: pip install 'asgl-snn[train]'"), lines
