# agentgov — developer entry points. `make demo` and `make test` work on a fresh machine
# with Python 3.11+; they create .venv and install what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test venv crds check-crds clean help bench bench-sidecar

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/agentgov: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

venv: $(BIN)/agentgov  ## create .venv with agentgov and the test tools

demo: venv  ## the sidecar in front of an example agent, on this machine: what it allows, refuses, caches, routes
	$(BIN)/agentgov demo

test: venv  ## run the whole test suite (parallel, with a per-test timeout)
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

crds: venv  ## regenerate crds/ from the models
	$(BIN)/agentgov crds generate

check-crds: venv  ## fail if crds/ is out of date
	$(BIN)/agentgov crds generate --check

BENCH_ARGS ?= --sizes 10,100,1000
BENCH_SIDECAR_ARGS ?=

bench: venv  ## run both benchmarks: operator scale, sidecar latency (benchmarks/results/)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/operator_scale.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/sidecar_latency.py $(BENCH_SIDECAR_ARGS)

bench-sidecar: venv  ## the sidecar's added latency and throughput (benchmarks/results/sidecar_latency.*)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/sidecar_latency.py $(BENCH_SIDECAR_ARGS)

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
