# The two commands a newcomer runs:  `make quickstart` (train)  and  `make test`.
# Both create .venv on first use. On a machine without an NVIDIA driver torch is pinned to the
# CPU build 2.13.0 first, so the resolver never pulls a multi-GB CUDA build.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH_CPU ?= torch==2.13.0

.PHONY: install test test-all quickstart device-check clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q "$(TORCH_CPU)"; fi
	$(BIN)/pip install -q -e ".[test]"
	@touch $@

install: $(VENV)/.installed

# The suite: plain CPU tests, Triton kernels under the interpreter, ahead-of-time GPU compiles of
# every feed-forward kernel specialisation; the GPU tier skips itself without CUDA. `slow` marks
# only the exhaustive AOT sweep of the recurrent kernel (5-9 minutes on 2 cores; its covering set
# runs here): `make test-all` includes it.
test: install
	$(BIN)/python -m pytest -q -m "not slow" tests

test-all: install
	$(BIN)/python -m pytest -q tests

quickstart: install
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		train/run.py --config configs/quickstart.yaml --train.overwrite=true

device-check:
	bash perf/device_check.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
