# The two set-up commands are `make run` and `make test`; everything they need is installed
# from here (Debian packages by infra/stack.py, Maven artifacts by the infra modules,
# Python packages into .venv/).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STACK  := $(BIN)/python infra/stack.py
PYTEST_ARGS ?=

.PHONY: help install run test test-unit test-fast lint format up down status env migrate token tenant clean bench soak

help:
	@echo "make run     start the whole platform (API :8000, Dagster UI :3000, local servers)"
	@echo "make test    lint, then the whole test suite against the real local servers"
	@echo "make token TENANT=<uuid> ROLE=<admin|writer|reader|auditor|user>   print a dev JWT"
	@echo "make tenant NAME=<name>   create a tenant (prints its id)"
	@echo "make up | down | status | env    the local servers alone"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# Declares psycopg2-binary, which we do not use: SQLAlchemy 2.1 maps postgresql:// to psycopg 3.
	$(BIN)/pip install -q --no-deps dagster-postgres==0.29.27
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python infra/run.py

# Starts the servers this run needs (and stops again only those it started), then lint
# and the whole suite. CI runs exactly this.
test: install
	$(BIN)/python infra/stack.py up --started-file .dev/run/test-started
	$(MAKE) lint
	eval "$$($(STACK) env)"; status=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	$(BIN)/python infra/stack.py down --started-file .dev/run/test-started; exit $$status

# Every benchmark in bench/ (bench/all.py), then BENCHMARKS.md: starts the servers it needs
# like `test` (and stops again only those it started); writes bench/results/<name>.md.
# Options: make bench BENCH_ARGS='--quick' or BENCH_ARGS='--only ingest,drain'.
bench: install
	$(BIN)/python infra/stack.py up --started-file .dev/run/bench-started
	status=0; $(BIN)/python -m bench.all $(BENCH_ARGS) || status=$$?; \
	$(BIN)/python infra/stack.py down --started-file .dev/run/bench-started; exit $$status

# The reliability suite (tests/reliability/) with SOAK_FACTOR (default 10) times the data
# and time budgets, then bench/soak.py (10 minutes of mixed load at 500 requests/s; the RSS
# of the API and of the drain must stay flat): long runs, not for CI. Starts and stops
# servers like `test`. Options: make soak SOAK_FACTOR=50 PYTEST_ARGS='-k worker'
# SOAK_ARGS=--quick
SOAK_FACTOR ?= 10
soak: install
	$(BIN)/python infra/stack.py up --started-file .dev/run/soak-started
	eval "$$($(STACK) env)"; status=0; SOAK=1 SOAK_FACTOR=$(SOAK_FACTOR) \
	$(BIN)/python -m pytest tests/reliability -o timeout=0 $(PYTEST_ARGS) || status=$$?; \
	$(BIN)/python -m bench.soak $(SOAK_ARGS) || status=$$?; \
	$(BIN)/python -m bench.summary >/dev/null || status=$$?; \
	$(BIN)/python infra/stack.py down --started-file .dev/run/soak-started; exit $$status

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# The suite against servers that are already up (`make up`), without lint or stack changes.
test-fast: install
	eval "$$($(STACK) env)"; $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

up: install
	$(STACK) up

down:
	@[ -x $(BIN)/python ] && $(STACK) down || true

status: install
	@$(STACK) status

env: install
	@$(STACK) env

migrate: install
	eval "$$($(STACK) env)"; $(BIN)/auditlog migrate

token: install
	@eval "$$($(STACK) env)"; $(BIN)/auditlog token $(if $(TENANT),--tenant $(TENANT)) --role $(or $(ROLE),user)

tenant: install
	@eval "$$($(STACK) env)"; $(BIN)/auditlog create-tenant $(or $(NAME),demo)

clean: down
	@# PostgreSQL's data may live outside the checkout (see infra/stack.py); remove it too.
	[ -L .dev/postgres ] && rm -rf "$$(readlink -f .dev/postgres)" || true
	rm -rf .dev $(VENV) infra/opensearch/target infra/elasticmq/target
