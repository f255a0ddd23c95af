# The commands the README names. Everything installs into .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# the index constraints.txt is resolved against: PyPI, where the image build installs from
PYPI_INDEX ?= https://pypi.org/simple
# the dashboard's chart library (uPlot), fetched from the npm registry (NPM_REGISTRY) and sha512-checked
UPLOT  := analytics_platform/ui/static/vendor/uPlot.iife.min.js

.PHONY: install ui-assets demo test test-fast test-edge sparkplug-proto soak chaos dashboard-screenshots mosquitto chromium promtool compose lint format bench constraints stop clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python 3.11+ is required, found " + sys.version.split()[0] + " (run: make PYTHON=python3.11 ...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "error: cannot create a virtualenv; install it with: apt-get install python3-venv"; exit 1; }
	@echo "installing the platform into $(VENV) (first time: a few minutes)..."
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## The dashboard's chart library, uPlot (not in git): fetched once from the npm registry (NPM_REGISTRY
## for a mirror) into analytics_platform/ui/static/vendor/, sha512-checked. Touched afterwards, since
## the module leaves current files alone and make would otherwise ask again.
$(UPLOT): $(STAMP) analytics_platform/ui/vendor.py
	@$(PY) -m analytics_platform.ui.vendor
	@touch $@

ui-assets: $(UPLOT)

## Bring up the whole platform (database, broker, simulator, Dagster, API); Ctrl-C stops it all.
demo: $(STAMP) ui-assets
	@$(VENV)/bin/analytics-devstack demo

## The whole test suite against a real PostgreSQL and a real Kafka-protocol broker it starts itself, in
## TEST_WORKERS processes (pytest-xdist; each worker starts its own PostgreSQL and broker). A module's
## tests stay on one worker (--dist loadfile), so a dataset a module builds once is still built once; modules
## are handed out in collection order, which puts the longest first (LONG_MODULES in the tests' conftest.py),
## not xdist's default of most tests first (that left the few-but-long modules, a pip install, a scripted
## outage, the demo, for the end, one worker busy and the other idle).
## TEST_WORKERS=0 runs it in one process. Four by default, on the 2-core machine too: most of a test's wall
## time is waiting (on its database, a broker, an agent, a scripted timeline), which more workers overlap
## (docs/benchmarks.md "Test suite", fourth pass, same machine: `make test` 654 s on two workers, 492-494 s on
## three, 397 and 404 s on four, both green). It was
## two while a drain test read nothing in a pass once with three brokers and three PostgreSQL servers on the 2
## cores: the tests that count a pass's messages now wait for the watermarks, not a fixed 5 s of empty fetches.
## The broker-replacement end-to-end test runs in the same run (it ran afterwards, alone, for the same reason).
## PYTHONDONTWRITEBYTECODE (set in some containers, this one's too) is cleared for the tests: without cached
## bytecode each of the run's pytest processes compiled the test modules and rewrote their asserts again (6.5 s
## of CPU of a 17 s collection); the caches land in the git-ignored __pycache__ directories.
TEST_WORKERS ?= 4
TEST_ENV := PYTHONDONTWRITEBYTECODE=
PYTEST_PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)
test: $(STAMP) ui-assets mosquitto chromium promtool compose
	@$(TEST_ENV) $(VENV)/bin/pytest $(PYTEST_PARALLEL)

## Everything but the end-to-end demo test.
test-fast: $(STAMP) ui-assets mosquitto chromium promtool compose
	@$(TEST_ENV) $(VENV)/bin/pytest $(PYTEST_PARALLEL) -m "not slow"

## The edge agent on its own, as a plant gateway installs it (docs/edge.md, "Installing"): a fresh virtualenv
## with only its two small distributions (analytics_platform/contracts, edge_agents) and pytest, then the edge
## agent's unit tests there (configured by edge_agents/pyproject.toml). The in-place build trees are removed
## first, so a module deleted from the sources cannot linger in the wheels. test_simulator.py (the simulated
## plant's behaviour, 25 s of CPU) stays in `make test` only: the simulator's imports are checked here by
## test_edge_distribution.py and its output against the contracts by test_edge_core.py.
EDGE_VENV  := .venv-edge
EDGE_TESTS := $(addprefix analytics_platform_tests/unit/,test_edge_distribution.py test_edge_core.py \
              test_edge_config.py test_edge_modbus_decode.py test_edge_sparkplug.py)
test-edge:
	@rm -rf $(EDGE_VENV) analytics_platform/contracts/build edge_agents/build
	@$(PYTHON) -m venv $(EDGE_VENV)
	@$(EDGE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
	  ./analytics_platform/contracts ./edge_agents 'pytest>=8'
	@$(EDGE_VENV)/bin/pytest -c edge_agents/pyproject.toml --rootdir . $(EDGE_TESTS)

## Regenerates edge_agents/sources/sparkplug_b_pb2.py from sparkplug_b.proto (committed, so nobody else needs
## protoc). grpcio-tools 1.78 carries protoc 31.1, whose code runs on protobuf 6.31.1 and later (the edge agent's
## lower bound); a newer protoc would raise that bound. In a throwaway virtualenv: grpcio-tools is not a dependency.
sparkplug-proto:
	@rm -rf .venv-protoc && $(PYTHON) -m venv .venv-protoc
	@.venv-protoc/bin/python -m pip install --quiet --disable-pip-version-check 'grpcio-tools==1.78.2' 'protobuf==6.33.6'
	@cd edge_agents/sources && ../../.venv-protoc/bin/python -m grpc_tools.protoc -I. --python_out=. sparkplug_b.proto
	@rm -rf .venv-protoc

## The ingest model's long run (docs/benchmarks.md, "Soak"): SOAK_EXAMPLES generated streams, longer than the
## `make test` ones and on new random seeds each run, through the real broker, drain, database, re-derivation and
## window aggregates. A failure prints the shrunk stream and the line to reproduce it (@reproduce_failure).
SOAK_EXAMPLES ?= 200
soak: $(STAMP)
	@INGEST_MODEL_PROFILE=soak INGEST_MODEL_EXAMPLES=$(SOAK_EXAMPLES) INGEST_MODEL_TIMEOUT_S=0 $(VENV)/bin/pytest -q \
	  analytics_platform_tests/integration/test_ingest_model.py -k test_ingest_stores_what_the_model_says

## The fault campaign (docs/benchmarks.md, "Chaos"): 200,000 readings through an edge agent, its own broker, drain and
## PostgreSQL while 24 faults (kill -9 of the drain, PostgreSQL, the agent; broker restarts) hit at seeded moments;
## prints accepted / in raw / lost (by cause) / doubled / wrong, fails on anything but documented losses.
## CHAOS_ARGS="--seed 7" (or --readings, --rate, --faults, --workdir, --timeout) changes the run.
CHAOS_ARGS ?=
chaos: $(STAMP)
	@$(PY) bench/chaos.py $(CHAOS_ARGS)

## The edge-agent tests run a Mosquitto broker of their own (Debian package; installed when root).
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto (apt-get)..."; \
	    apt-get install -y -qq mosquitto >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }; \
	  else echo "error: the MQTT tests need Mosquitto: sudo apt-get install mosquitto"; exit 1; fi; }

## The dashboard's browser tests drive Debian's Chromium headless through Playwright (installed when root).
chromium:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get; a few minutes)..."; \
	    apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; \
	  else echo "error: the dashboard browser tests need Chromium: sudo apt-get install chromium"; exit 1; fi; }

## The Prometheus tests run promtool (Debian's prometheus package: check metrics, check and test the rules in
## deploy/prometheus/); installed when root. Only the promtool binary is used: no Prometheus server is started.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing promtool (apt-get prometheus)..."; \
	    apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; \
	  else echo "error: the Prometheus tests need promtool: sudo apt-get install prometheus"; exit 1; fi; }

## compose.yaml's test runs `docker compose config` (the v2 plugin, when the docker CLI has it) or Debian's
## docker-compose; neither needs a Docker engine for `config`. Installed when root.
compose:
	@{ command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; } || command -v docker-compose >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing docker-compose (apt-get)..."; \
	    apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }; \
	  else echo "error: the compose.yaml test needs a compose client: sudo apt-get install docker-compose"; exit 1; fi; }

## Re-take the dashboard screenshots kept in docs/dashboard/ (the browser tests, saving there).
dashboard-screenshots: $(STAMP) ui-assets chromium
	@DASHBOARD_SHOTS_DIR=docs/dashboard $(VENV)/bin/pytest -q analytics_platform_tests/integration/test_dashboard_browser.py

lint: $(STAMP)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

format: $(STAMP)
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

bench: $(STAMP) ui-assets mosquitto
	@$(PY) bench/ingest.py
	@$(PY) bench/aggregates.py
	@$(PY) bench/freshness.py
	@$(PY) bench/kpi_ml.py
	@$(PY) bench/checks.py
	@$(PY) bench/trends.py
	@$(PY) bench/api.py
	@$(PY) bench/edge.py
	@$(PY) bench/detection.py
	@$(PY) bench/detection_nab.py

## Re-pin the image's runtime dependencies (constraints.txt, CPython 3.11 on Linux) after a change to
## [project.dependencies]; existing pins are kept where they still fit. UPGRADE=1 moves every pin to
## the newest allowed release, UPGRADE_PACKAGE="fastapi starlette" only those.
constraints: $(STAMP)
	@test -x $(VENV)/bin/uv || $(PY) -m pip install --quiet --disable-pip-version-check uv
	@$(VENV)/bin/uv pip compile pyproject.toml --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --default-index $(PYPI_INDEX) --custom-compile-command 'make constraints' $(if $(UPGRADE),--upgrade) \
	  $(foreach p,$(UPGRADE_PACKAGE),--upgrade-package $(p)) -o constraints.txt
	@echo "constraints.txt: $$(grep -c '==' constraints.txt) pins"

## Stop a database left running by a demo that was killed hard (kill -9).
stop: $(STAMP)
	@$(VENV)/bin/analytics-devstack stop

clean:
	rm -rf .run
