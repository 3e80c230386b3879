# cct-ledger: two commands. `make demo` runs the main job on an embedded PostgreSQL; `make test` runs lint,
# types and every test. Both create .venv and install what they need (Python 3.11+ and make are enough).

PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; \
	then echo $$p; break; fi; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOUSEHOLDS ?= 20000

.PHONY: demo test install lint types unit bench clean help

help:
	@echo "make demo   - the main job: two bimonthly payment runs on an embedded PostgreSQL and a simulated bank"
	@echo "make test   - lint (ruff), types (mypy --strict) and the whole test suite on a real PostgreSQL"
	@echo "make bench  - the benchmarks of docs/performance.md (long)"

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "cct-ledger needs Python 3.11 or newer (python3.11, python3.12 or python3.13 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cct-ledger demo --households $(HOUSEHOLDS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

test: lint types unit

bench: $(STAMP)
	$(BIN)/python bench/ledger_online.py
	$(BIN)/python bench/ledger_bulk.py
	$(BIN)/python bench/ledger_verify.py
	$(BIN)/python bench/bank_sim_settle.py
	$(BIN)/python bench/registry_import.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
