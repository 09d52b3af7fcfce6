# mlscale: `make demo` runs the whole loop locally; `make test` runs the test suite,
# `make test-fast` its pure tests (no processes, Locust, containers or training).
# Each creates .venv and installs mlscale into it on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint format bench bench-loadgen audit images engine clean

# Seldon MLServer (the V2 protocol's reference) in a venv of its own, beside .venv whose
# packages it reads: its pins conflict with mlscale's (tests/support/mlserver_env.py).
# Exit status 2: the package index is unreachable, and the differential tests skip.
MLSERVER_STAMP := .venv-mlserver/.installed

install: $(STAMP)

# Re-install when the declared dependencies or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mlscale demo

$(MLSERVER_STAMP): $(STAMP) tests/support/mlserver_env.py
	$(BIN)/python tests/support/mlserver_env.py || test $$? -eq 2

test: $(STAMP) $(MLSERVER_STAMP)
	$(BIN)/python -m pytest

# The tests not marked slow (tests/conftest.py says which are): under 2 minutes.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m 'not slow'

# ruff (lint and format) over the package, the tests and the benchmarks; mypy over the
# package (strict on model, protocol, capacity, simulate, schemas); import-linter for the
# layers. All configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check mlscale tests benchmarks
	$(BIN)/ruff format --check mlscale tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix mlscale tests benchmarks
	$(BIN)/ruff format mlscale tests benchmarks

bench: $(STAMP) $(MLSERVER_STAMP)
	$(BIN)/python benchmarks/serve_bench.py

# The load generator against the truth, wrk and plain Locust; users per core; the simulator.
bench-loadgen: $(STAMP)
	$(BIN)/python benchmarks/loadgen_bench.py

# The server, Locust, tracking and Postgres images (docker/), with docker or podman;
# reused where their content is unchanged. `make engine` installs podman first
# where no engine runs (Debian/Ubuntu, as root).
images: $(STAMP)
	$(BIN)/mlscale images build

engine:
	bash docker/install-podman.sh

# Known vulnerabilities with a fixed release fail; skipped when the service is unreachable.
audit: $(STAMP)
	bash .ci/audit

clean:
	rm -rf $(VENV) .venv-mlserver demo-output .pytest_cache
