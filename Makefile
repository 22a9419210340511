# Two commands do everything: `make run` and `make test`. Both bootstrap .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test lint format bench clean postgres

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

test: $(VENV)/.installed-dev lint postgres
	$(BIN)/python -m pytest $(ARGS)

# The PostgreSQL tests start their own throwaway server; they need its binaries. Installed here when missing
# and possible (root with apt-get); otherwise those tests are skipped with a loud message.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing the PostgreSQL server binaries for the tests (apt-get install postgresql) ..."; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			postgresql >/dev/null) || echo "WARNING: could not install PostgreSQL; its tests will be skipped"; \
	else echo "WARNING: PostgreSQL server binaries not found (apt-get install postgresql); its tests will be skipped"; fi

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix syntropism tests bench
	$(BIN)/ruff format syntropism tests bench

bench: $(VENV)/.installed-dev
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) state .pytest_cache .ruff_cache
