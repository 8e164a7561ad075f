# The two commands a newcomer runs:  `make quickstart` (train)  and  `make test`.
# Both create .venv on first use. On a machine without an NVIDIA driver torch is pinned to the
# CPU build 2.13.0 first, so the resolver never pulls a multi-GB CUDA build.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH_CPU ?= torch==2.13.0

.PHONY: install lint test-fast test test-all test-triton-min quickstart device-check clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q "$(TORCH_CPU)"; fi
	$(BIN)/pip install -q -e ".[test]"
	@touch $@

install: $(VENV)/.installed

# ruff, configured in pyproject.toml ([tool.ruff]); CI runs it before the tests
lint: install
	$(BIN)/ruff check .

# Three tiers, chosen by the markers that say what a test needs (pyproject.toml, CONTRIBUTING.md):
#   test-fast  the plain CPU tests and one small interpreter case per kernel family (`smoke`):
#              after every edit, about a minute on 2 cores;
#   test       everything but `slow`: Triton kernels under the interpreter, ahead-of-time compiles of
#              covering sets of the kernel specialisations, trainer runs, multi-rank launches
#              (what CI runs; the GPU tests skip themselves without CUDA);
#   test-all   also the exhaustive AOT sweeps and the long runs (`slow`).
# Two worker processes (pytest-xdist; tests handed out one at a time and stolen back when a worker
# runs dry).
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal
FAST := smoke or not (aot or interpret or multiproc or e2e or slow or gpu)

test-fast: install
	$(PYTEST) -m "$(FAST)" tests

test: install
	$(PYTEST) -m "not slow" tests

test-all: install
	$(PYTEST) tests

# The lowest supported triton, 3.6 (the GPU image's), in a venv of its own with the numpy its
# interpreter needs (< 2.3): the Triton kernel tests under the interpreter, the ahead-of-time
# compiles and the static model's budgets. Not part of `make test` (a second venv and the kernel
# tests again: about 10 more minutes on 2 cores).
VENV_MIN ?= .venv-triton36
KERNEL_TESTS := tests/test_lif_kernel.py tests/test_rlif_kernel.py tests/test_bn_lif.py tests/test_perf_regression.py \
	tests/test_saved_bytes.py tests/test_kernel_aot.py tests/test_rlif_aot.py tests/test_bn_lif_aot.py \
	tests/test_static_model.py tests/test_sass_model.py

$(VENV_MIN)/.installed:
	$(PY) -m venv $(VENV_MIN)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(VENV_MIN)/bin/pip install -q "$(TORCH_CPU)"; fi
	$(VENV_MIN)/bin/pip install -q "triton==3.6.0" "numpy<2.3" "pytest>=8" rich pyyaml einops
	@touch $@

test-triton-min: $(VENV_MIN)/.installed
	PYTHONPATH=$(CURDIR) $(VENV_MIN)/bin/python -m pytest -q -m "not slow" $(KERNEL_TESTS)

quickstart: install
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		train/run.py --config configs/quickstart.yaml --train.overwrite=true

device-check:
	bash perf/device_check.sh

clean:
	rm -rf $(VENV) $(VENV_MIN) build *.egg-info .pytest_cache
