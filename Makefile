# failback-operator — the two commands of the README are `make demo` and `make test`.
# Everything else here is a step of those two.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TESTBED := PYTHONPATH=hack $(PY) -m testbed

.PHONY: help demo test venv testbed lint types layers unit pytest down clean bench-dataplane bench-controlplane soak-dataplane soak-journal

help:
	@echo "make demo     bring up the embedded test bed and fail the sample plan back on it"
	@echo "make test     install everything, build the test bed, run lint, types and all tests"
	@echo "make down     stop the test bed started by make demo"
	@echo "make lint | types | layers | pytest   one step of make test"

## The virtual environment, reinstalled when pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

## The test bed's binaries (kube-apiserver, etcd, kubectl, vcsim, helm): built once, cached.
testbed: $(STAMP)
	@command -v go >/dev/null || { echo "The Go toolchain (>= 1.25) is required to build the test bed: https://go.dev/dl"; exit 1; }
	$(TESTBED) build

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: $(STAMP)
	$(VENV)/bin/mypy

layers: $(STAMP)
	$(VENV)/bin/lint-imports

pytest: $(STAMP) testbed
	$(VENV)/bin/pytest

test: lint types layers pytest

## Benchmarks (docs/performance.md): not part of make test.
bench-dataplane: $(STAMP) testbed
	PYTHONPATH=hack $(PY) hack/bench/dataplane.py

bench-controlplane: $(STAMP) testbed
	PYTHONPATH=hack $(PY) hack/bench/controlplane.py

## Soaks: hundreds of SIGKILLs; long, not part of make test.
soak-dataplane: $(STAMP) testbed
	PYTHONPATH=hack $(PY) hack/soak/dataplane.py --kills 200

soak-journal: $(STAMP)
	PYTHONPATH=hack $(PY) hack/soak/journal_crash.py --kills 200

## The test bed up, the sample plan failed back on it, live; it stays up (make down).
demo: testbed
	$(TESTBED) down >/dev/null
	$(TESTBED) demo

down: $(STAMP)
	$(TESTBED) down

clean: down
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
