# Two commands on a fresh machine with Python 3.11 and make: `make run`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.9.30
UV := .tools/bin/uv
PY := $(VENV)/bin/python
PORT ?= 8000
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help venv run test lint fmt clean

help:
	@echo "make run    serve the chat on http://127.0.0.1:$(PORT)/chat/ (SQLite, in-memory layer)"
	@echo "make test   lint and the test suites against real Redis and PostgreSQL"

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON) --quiet
	touch $@

venv: $(VENV)/.synced

run: venv
	PORT=$(PORT) $(PY) app/entrypoint.py run

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Test suites are the folders of tests/; they run as parallel pytest processes.
SUITES ?= core
TEST_JOBS ?= 2

test: lint
	$(PY) tests/suites.py --jobs $(TEST_JOBS) $(SUITES)

test-%: venv
	$(PY) tests/suites.py $*

clean:
	rm -rf $(VENV) .tools .data .stack .results .pytest_cache .ruff_cache
