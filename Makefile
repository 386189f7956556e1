# Two entry points: `make run` (the product) and `make test` (everything CI runs).
# Both create .venv and install the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

CHROMIUM ?= /usr/bin/chromium

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

# The designer's browser tests drive Debian's Chromium (Playwright cannot download browsers).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "browser tests need Chromium: sudo apt-get install -y chromium" >&2; fi

test: lint $(CHROMIUM)
	$(BIN)/python -m pytest -n auto --dist loadscope

bench: $(BIN)/parcours
	$(BIN)/python bench/steps.py
