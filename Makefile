# The commands the README names. Everything installs into .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast mosquitto lint format bench stop clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python 3.11+ is required, found " + sys.version.split()[0] + " (run: make PYTHON=python3.11 ...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "error: cannot create a virtualenv; install it with: apt-get install python3-venv"; exit 1; }
	@echo "installing the platform into $(VENV) (first time: a few minutes)..."
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Bring up the whole platform (database, broker, simulator, Dagster, API); Ctrl-C stops it all.
demo: $(STAMP)
	@$(VENV)/bin/analytics-devstack demo

## The whole test suite against a real PostgreSQL and a real Kafka-protocol broker it starts itself.
test: $(STAMP) mosquitto
	@$(VENV)/bin/pytest

## Everything but the end-to-end demo test.
test-fast: $(STAMP) mosquitto
	@$(VENV)/bin/pytest -m "not slow"

## The edge-agent tests run a Mosquitto broker of their own (Debian package; installed when root).
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto (apt-get)..."; \
	    apt-get install -y -qq mosquitto >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }; \
	  else echo "error: the MQTT tests need Mosquitto: sudo apt-get install mosquitto"; exit 1; fi; }

lint: $(STAMP)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

format: $(STAMP)
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

bench: $(STAMP) mosquitto
	@$(PY) bench/ingest.py
	@$(PY) bench/aggregates.py
	@$(PY) bench/freshness.py
	@$(PY) bench/kpi_ml.py
	@$(PY) bench/checks.py
	@$(PY) bench/api.py
	@$(PY) bench/edge.py

## Stop a database left running by a demo that was killed hard (kill -9).
stop: $(STAMP)
	@$(VENV)/bin/analytics-devstack stop

clean:
	rm -rf .run
