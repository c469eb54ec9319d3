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

.PHONY: help venv run stack loadtest bench test test-containers lint fmt clean

help:
	@echo "make run    serve the chat on http://127.0.0.1:$(PORT)/chat/ (SQLite, in-memory layer)"
	@echo "make stack  nginx + gunicorn + WS_REPLICAS daphne + Redis + PostgreSQL on http://127.0.0.1:8080"
	@echo "           REDIS_MODE=sentinel: master, replica, 3 Sentinels; REDIS_MODE=shards REDIS_SHARDS=2"
	@echo "make test   lint and the test suites against real Redis and PostgreSQL"
	@echo "make test-containers   build the images, run the compose stack, check k8s/ (Docker)"
	@echo "make loadtest SCENARIO=fanout USERS=50 DURATION=60s   Locust against make stack (or HOST=)"
	@echo "make bench  the fan-out benchmark of docs/benchmarks.md (BENCH_QUICK=1: a short one)"

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON) --quiet
	touch $@

venv: $(VENV)/.synced

run: venv
	PORT=$(PORT) $(PY) app/entrypoint.py run

# The production topology from system binaries (docs/operations.md); WS_REPLICAS,
# STACK_PORT and STACK_BASE_PORT override its defaults (3, 8080, 8100); REDIS_MODE
# (single, sentinel, shards) and REDIS_SHARDS (2) choose the Redis behind it.
stack: venv
	$(PY) tools/localstack $(if $(WS_REPLICAS),--replicas $(WS_REPLICAS)) \
		$(if $(STACK_PORT),--port $(STACK_PORT)) $(if $(STACK_BASE_PORT),--base-port $(STACK_BASE_PORT)) \
		$(if $(REDIS_MODE),--redis-mode $(REDIS_MODE)) $(if $(REDIS_SHARDS),--redis-shards $(REDIS_SHARDS))

# Locust, headless, against `make stack` or HOST=…; reports in .results/loadtest/ and the exit
# status says whether the criteria held (loadtests/README.md). LOADTEST_ARGS adds options.
SCENARIO ?= fanout
USERS ?= 50
DURATION ?= 60s

loadtest: venv
	$(PY) loadtests/run.py --scenario $(SCENARIO) --users $(USERS) --duration $(DURATION) \
		$(if $(HOST),--host $(HOST)) $(LOADTEST_ARGS)

# Project vs the `websockets` ceiling and the tutorial floor (docs/benchmarks.md); BENCH_*
# variables are its knobs, BENCH_ARGS=--write-doc puts the tables into the doc.
bench: venv
	$(PY) loadtests/bench/run.py $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Test suites are the folders of tests/; they run as parallel pytest processes.
SUITES ?= core stack browser load
TEST_JOBS ?= 2

test: lint
	$(PY) tests/suites.py --jobs $(TEST_JOBS) $(SUITES)

test-%: venv
	$(PY) tests/suites.py $*

# Containers, compose and Kubernetes, built and run for real (tests/containers/, docs/deploy.md).
# Needs Docker, docker-compose and, as root, debootstrap; not part of `make test`. Its tools
# live in venvs under build/containers/ (git-ignored), never in uv.lock.
CT := build/containers

$(CT)/%/.installed: tests/containers/requirements-%.txt | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(CT)/$*
	$(UV) pip install --quiet --python $(CT)/$*/bin/python -r $<
	touch $@

test-containers: venv $(CT)/tools/.installed $(CT)/checkov/.installed
	$(PY) -m pytest tests/containers -p no:cacheprovider -p no:django --timeout 2400 -v -ra \
		--durations 12

clean:
	rm -rf $(VENV) .tools .data .stack .results .pytest_cache .ruff_cache
