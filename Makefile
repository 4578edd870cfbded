# fastreco: two commands on a fresh machine.
#   make demo   installs (idempotent .venv), then runs the main job end to end
#   make test   installs, then lint + the test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=
TORCH_VERSION ?= 2.13.0
# NVIDIA Triton Inference Server in its own environment: nvidia-pytriton bundles a tritonserver
# binary that runs on the CPU, but pins numpy<2 and an older protobuf than .venv's. Only the binary
# and its Python backend are used, with this environment's onnxruntime (fastreco.deploy.triton).
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed-stamp
TRITON_PACKAGES ?= nvidia-pytriton==0.7.0 onnxruntime>=1.17

.PHONY: install triton-env demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the CPU build of PyTorch first (a bare `torch` requirement could pull a multi-GB CUDA build)
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[test,serve,fpga]"
	touch $(STAMP)

install: $(STAMP)

# idempotent: reinstalls only when TRITON_PACKAGES changed (the stamp holds them)
triton-env:
	@if [ "$$(cat $(TRITON_STAMP) 2>/dev/null)" != "$(TRITON_PACKAGES)" ]; then \
		set -e; \
		test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV); \
		$(TRITON_VENV)/bin/python -m pip install --quiet --upgrade pip; \
		$(TRITON_VENV)/bin/python -m pip install --quiet $(foreach p,$(TRITON_PACKAGES),"$(p)"); \
		echo "$(TRITON_PACKAGES)" > $(TRITON_STAMP); \
	fi

demo: install
	$(VENV)/bin/fastreco demo --output $(DEMO_OUT)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: lint triton-env
	$(PY) -m pytest -m "not slow" -n 2 $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

bench: install triton-env
	$(PY) benchmarks/run_all.py --json benchmarks/results/latest.json

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
