# Two commands do everything: `make run` and `make test`. Both bootstrap .venv on first use.
# While working: `make test-fast` (the unit tests, seconds) and `make lint` (ruff, mypy, the layer contracts).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test test-fast lint format bench clean system-packages

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Syntropism needs Python >= 3.11; set PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# editable_mode=compat: a plain path in a .pth. The default editable finder imports pathlib and re at every
# interpreter start (~16 ms), and every agent is an interpreter start.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e '.[dev]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/syntropism run $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check syntropism tests bench agents
	$(BIN)/ruff format --check syntropism tests bench agents
	$(BIN)/mypy syntropism
	$(BIN)/lint-imports --no-cache

test: $(VENV)/.installed-dev lint system-packages
	$(BIN)/python -m pytest $(ARGS)

# The pure rules and the layer check only: no lint, no system packages, no database server, no NATS.
test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/unit -q $(ARGS)

# What the tests need from the host: PostgreSQL's server binaries (the tests start their own throwaway server)
# and bubblewrap (the sandbox's isolation layers). Installed here when missing and possible (root with apt-get);
# otherwise the tests that need them are skipped with a loud message naming what is missing.
system-packages:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing for the tests (apt-get install$$missing) ..."; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$$missing >/dev/null) || echo "WARNING: could not install$$missing; the tests that need it will be skipped"; \
	else echo "WARNING:$$missing not installed (apt-get install$$missing); the tests that need it will be skipped"; fi

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix syntropism tests bench agents
	$(BIN)/ruff format syntropism tests bench agents

bench: $(VENV)/.installed-dev
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) state .pytest_cache .ruff_cache
