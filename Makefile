# longtls developer entry points. `make test` installs everything it needs
# (venv, Python deps, interop peers) and then runs lint, typecheck and pytest.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Re-install only when the dependency list changes.
STAMP  := $(VENV)/.longtls-installed
PYTEST_ARGS ?=
# Parallel by default (pytest-xdist): `make pytest PYTEST_JOBS=0` runs in one
# process, e.g. to read a failure's output without interleaving.
PYTEST_JOBS ?= auto

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

.PHONY: venv peers lint typecheck test pytest demo bench bench-quick bench-scale clean distclean

venv: $(STAMP)

$(BIN)/python:
	bash scripts/install-peers.sh --python-venv $(PYTHON)
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

peers:
	bash scripts/install-peers.sh
	bash scripts/install-tshark44.sh  # tshark 4.4 for DTLS 1.3 (docs/interop-tshark.md)

lint: venv
	$(BIN)/ruff check src tests

typecheck: venv
	$(BIN)/mypy --strict src

# pytest's own summary line is the last thing printed; above it, the 25
# slowest tests (where the suite's time goes).
pytest: venv
	$(BIN)/python -m pytest -q -n $(PYTEST_JOBS) --dist worksteal --durations=25 $(PYTEST_ARGS)

# The benchmark's --quick mode only proves it still runs (no timing is judged);
# it goes before pytest so pytest's summary stays the last line.
test: venv peers
	$(MAKE) --no-print-directory lint typecheck bench-quick
	$(MAKE) --no-print-directory pytest

bench-quick: venv
	$(BIN)/python bench/run.py --quick > /dev/null

demo: venv
	$(BIN)/longtls demo

bench: venv
	$(BIN)/python bench/run.py

# Issue 16's scale target: 10,000 idle connections on one longtls.aio server,
# one EKU each within 60 s (a few minutes; bench/scale.py --quick for a smoke run).
bench-scale: venv
	$(BIN)/python bench/scale.py

# Leaves .venv alone (other work may be using it); `make distclean` removes it too.
clean:
	rm -rf build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find src tests bench -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true

distclean: clean
	rm -rf $(VENV)
