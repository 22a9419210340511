# Two commands do everything: `make run` and `make test`. Both bootstrap .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test lint format bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Syntropism needs Python >= 3.11; set PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/syntropism run $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check syntropism tests bench
	$(BIN)/ruff format --check syntropism tests bench

test: $(VENV)/.installed-dev lint
	$(BIN)/python -m pytest $(ARGS)

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix syntropism tests bench
	$(BIN)/ruff format syntropism tests bench

bench: $(VENV)/.installed-dev
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) state .pytest_cache .ruff_cache
