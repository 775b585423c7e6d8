# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ./data
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck pytest bench bench-scale install clean

# Two distributions from this repository: cqrskit (the framework; its extras) and
# cqrskit-social (the reference service, in services/social).
$(STAMP): pyproject.toml services/social/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -e services/social
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/social serve --host $(HOST) --port $(PORT) --data-dir $(DATA)

lint: $(STAMP)
	$(BIN)/ruff check src services tests benchmarks examples
	$(BIN)/ruff format --check src services tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

# Long runs live here, never in `make test`. QUICK=1 uses smaller counts.
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(if $(QUICK),--quick,)
	$(BIN)/python -m benchmarks.pg_appends $(if $(QUICK),--quick,)
	$(BIN)/python -m benchmarks.personal $(if $(QUICK),--quick,)

# Cost as the log grows: 100k, 1M and 10M events (SQLite), 100k and 1M (PostgreSQL), then
# the plot in docs/images/bench-scale.png. About 10 minutes here; QUICK=1 (100k and 1M): ~80 s.
bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.scale $(if $(QUICK),--quick,)
	$(BIN)/python -m benchmarks.scale_plot

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
