# Two entry points: `make run` (the product) and `make test` (everything CI runs).
# Both create .venv and install the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench

$(BIN)/parcours: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/parcours
	$(BIN)/parcours up

lint: $(BIN)/parcours
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/parcours lint scenarios

test: lint
	$(BIN)/python -m pytest

bench: $(BIN)/parcours
	$(BIN)/python bench/steps.py
