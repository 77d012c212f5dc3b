# The two commands of the README: `make serve` (install + run the main job) and `make test`
# (install + every quality gate + all tests). Both work on a fresh clone with only python3 >= 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHECKED := src tests benchmarks examples deploy

.PHONY: install node-deps serve cluster example test lint bench diagram clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# What the tests need beyond Python: Node.js for the official CometD JavaScript client, openssl
# for the SMTP TLS tests' certificates, PostgreSQL's server (the tests start a throwaway
# cluster of their own, tests/pgcluster.py), HAProxy (tests/cluster, make cluster) and
# Chromium with its driver (the desktop's browser tests, tests/desktop); installed with
# apt-get when missing.
node-deps:
	@command -v node >/dev/null && command -v npm >/dev/null && command -v openssl >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq nodejs npm openssl >/dev/null)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)
	@test -d tests/cometd/js/node_modules/cometd-nodejs-client || \
		(cd tests/cometd/js && npm ci --no-audit --no-fund --loglevel=error)

serve: install
	$(BIN)/interactions serve

# Two `interactions serve` processes on a throwaway PostgreSQL behind HAProxy, in the
# foreground (deploy/cluster.py; Ctrl-C stops it all). `deploy/cluster.py --check` runs the
# README walkthrough through HAProxy and stops.
cluster: install node-deps
	$(BIN)/python deploy/cluster.py

example: install
	$(BIN)/python examples/quickstart.py

lint: install
	$(BIN)/ruff check $(CHECKED)
	$(BIN)/ruff format --check $(CHECKED)
	$(BIN)/mypy --strict src

test: lint node-deps
	$(BIN)/python -m pytest

diagram: install
	$(BIN)/python -m interactions_core.diagram docs/lifecycle.md

# Benchmarks are not part of `make test`; each prints its figures and same-run baseline.
bench: install
	$(BIN)/python benchmarks/core/bench_lifecycle.py
	$(BIN)/python benchmarks/core/bench_routing.py
	$(BIN)/python benchmarks/core/bench_ingest.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
