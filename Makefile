# Chartkeeper: `make run` to serve the workbench, `make test` to run the whole suite.

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEFINITIONS := src/chartkeeper/fhir/definitions/r4-core.json.gz
HTMX := src/chartkeeper/web/static/vendor/htmx.min.js
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# pytest-xdist workers (one per core); PYTEST_WORKERS=0 runs the suite in one process.
PYTEST_WORKERS ?= auto

.DEFAULT_GOAL := help
.PHONY: help venv install run test test-deps lint clean

help:
	@echo "make run        install into $(VENV), create ./var/ with demo data if empty, serve http://$(HOST):$(PORT)"
	@echo "make test       install test needs (Debian postgresql, chromium when absent) and run pytest"
	@echo "make lint       ruff check on src/ and tests/, mypy --strict on src/"
	@echo "make clean      remove caches and build output (keeps $(VENV) and var/)"

venv install: $(STAMP) $(DEFINITIONS) $(HTMX)

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The compiled FHIR R4 definitions come from npm at install time (see fhir/package.py).
$(DEFINITIONS): src/chartkeeper/fhir/package.py | $(STAMP)
	command -v npm >/dev/null 2>&1 || scripts/apt_install.sh npm
	$(VENV_PY) -m chartkeeper.fhir.package --if-missing

# The workbench's htmx, also from npm at install time (see web/assets.py).
$(HTMX): src/chartkeeper/web/assets.py | $(STAMP)
	command -v npm >/dev/null 2>&1 || scripts/apt_install.sh npm
	$(VENV_PY) -m chartkeeper.web.assets

run: install
	$(VENV)/bin/chartkeeper init-demo
	$(VENV)/bin/chartkeeper serve --host $(HOST) --port $(PORT)

test-deps:
	@scripts/install_test_deps.sh

# Any non-zero pytest status fails the target, including 5 (no tests collected).
test: install test-deps
	$(VENV_PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy --strict src

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
