"""Fixtures: a real PostgreSQL and a real Kafka-protocol broker, started by the project's devstack.

Unless TEST_DATABASE_URL (an admin URL of a running PostgreSQL/TimescaleDB that may create
databases) or KAFKA_BROKERS is set, the session starts its own: an embedded PostgreSQL in
`/dev/shm/analytics-platform-tests/test-pg-<pid>/` (in memory; `.run/test-pg-<pid>/` where /dev/shm is
small) on a free port and the Tansu broker on a free port; a cluster a killed session left there (its
pytest process gone) is stopped and removed first, and so is such a session's broker. Each test gets a fresh
database and its own topic prefix, so tests never see each other's data; the database is a copy of one
the session migrated from scratch (`migrated_template`), not migrated again per test.
A module whose tests share one expensive dataset (the dashboard plant) takes the `module_*`
equivalents instead: the same creation code, kept for the whole module.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from analytics_platform.defs import build_definitions
from analytics_platform.devstack.broker import start_tansu
from analytics_platform.devstack.postgres import ROLES_LOCK, EmbeddedPostgres, ensure_login
from analytics_platform.devstack.processes import free_port
from analytics_platform.settings import REPO_ROOT, PlatformSettings
from analytics_platform_tests.support.stack import (
    DatabaseHandle,
    SessionTempDir,
    dagster_instance,
    dagster_instance_template,
    delete_settings_topics,
    kept_producer,
    migrated_template,
    new_database,
    new_settings,
    role_password,
    scratch_root,
    sweep_dead_brokers,
    sweep_dead_sessions,
)

TEST_PASSWORD = "test-" + secrets.token_hex(8)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def pytest_configure(config: pytest.Config) -> None:
    """`timeout`, CI cancellation and `kill` send SIGTERM, which would end pytest without running
    session teardown and leave the embedded PostgreSQL and broker running: make it an interrupt,
    which pytest answers by tearing the session down. Temporary files (every `tmp_path`, the Dagster
    instances' SQLite files, the edge agents' queues, the subprocesses') go to `SessionTempDir`, in
    memory where there is room, unless the run names its own `--basetemp`."""
    signal.signal(signal.SIGTERM, _interrupt)
    if config.option.basetemp is None:
        config.add_cleanup(SessionTempDir().close)


# The modules that take longest (wall seconds in a whole `make test`, most of them waiting on a scripted outage, a
# pip install, a whole devstack or a broker), longest first. `make test` hands whole modules to its workers in
# collection order (--dist loadfile --no-loadscope-reorder), so these go first: a long module started last would
# keep one worker busy while the others sit idle. The thirty longest of a whole run (2026-12-06, four workers),
# unit modules among them: with only the eighteen longest listed, unit/test_simulator.py (24 s) came last, after
# the integration modules, and its worker ended 16 s after the other three. A module missing from this list only
# runs later, never differently.
LONG_MODULES = (
    "integration/test_image_constraints.py",
    "integration/test_api_contract.py",
    "integration/test_dashboard_browser.py",
    "integration/test_edge_outage.py",
    "integration/test_analytics.py",
    "integration/test_ingest_model.py",
    "integration/test_api_jobs.py",
    "integration/test_helm_drain_service.py",
    "integration/test_api_catalog.py",
    "integration/test_api.py",
    "integration/test_edge_opcua_modbus.py",
    "integration/test_demo.py",
    "integration/test_offset_resets.py",
    "integration/test_broker_replacement_e2e.py",
    "integration/test_api_kpi_periods.py",
    "integration/test_edge_broker_replacement.py",
    "unit/test_simulator.py",
    "integration/test_energy.py",
    "integration/test_finalise_aggregates.py",
    "integration/test_forecasts.py",
    "integration/test_edge_http.py",
    "integration/test_edge_sparkplug.py",
    "integration/test_dashboard_data.py",
    "integration/test_drain_service.py",
    "integration/test_drain_follow.py",
    "integration/test_drain_shards.py",
    "unit/test_helm_chart.py",
    "integration/test_dagster_ingest.py",
    "integration/test_api_anomalies.py",
    "integration/test_edge_mqtt.py",
)


def _long_first(item: pytest.Item) -> int:
    tests = Path(__file__).parent
    path = item.path.relative_to(tests).as_posix() if item.path.is_relative_to(tests) else ""
    return LONG_MODULES.index(path) if path in LONG_MODULES else len(LONG_MODULES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Schemathesis 4.32 on pytest 9.2 gives its per-operation items one node id for all
    (`test_api_contract` 28 times; their names do carry the operation). pytest-xdist schedules by
    node id and would run only one of them: each such item gets the id pytest itself derives from
    its name (`Node.__init__` without a nodeid), which keeps every other item's id as it is.
    Then the LONG_MODULES go first, so xdist hands them out first."""
    for item in items:
        if item.parent is None:
            continue
        derived = item.parent.id.child(item.name)
        if item.nodeid != str(derived):
            item._id = derived  # where pytest 9 keeps a node's id; nothing public sets it
    items.sort(key=_long_first)  # stable: every module's own order stays as it is


def cheap_password_checks(admin_url: str, password: str) -> None:
    """Make every later login to the session's own cluster cost one SCRAM iteration instead of 4,096.

    The suite opens many thousands of connections (each `DatabaseHandle.query`, every `wait_for` poll of
    one, the drains', the API pools'), and with PostgreSQL's default 4,096 PBKDF2 iterations the
    client's side of the password exchange was most of a login's cost: 2.45 ms of the client's CPU per
    login against 0.62 ms at one iteration (the server's 1.73 ms is the same either way: it checks a
    stored key), 7.3 -> 5.4 ms of wall (300 logins each, on this 2-core VM). Passwords are
    still checked (a wrong one is refused the same way); only the stored verifiers are cheaper. The
    iteration count is part of each verifier, so the admin's password is set again, and the test logins
    (`login_roles`, and any role a test makes) get it from the cluster-wide default. Only this throwaway
    cluster: a TEST_DATABASE_URL server is left as it is."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET scram_iterations = 1")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("SET scram_iterations = 1")
        conn.execute(sql.SQL("ALTER ROLE CURRENT_USER PASSWORD {}").format(sql.Literal(password)))


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """Admin URL (database `postgres`) of the server the tests use."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    root = scratch_root(REPO_ROOT / ".run")
    if root.is_dir():
        sweep_dead_sessions(root, "test-pg")  # clusters of sessions killed before their teardown
    run_dir = root / f"test-pg-{os.getpid()}"
    server = EmbeddedPostgres(
        data_dir=run_dir / "data",
        port=free_port(),
        password=TEST_PASSWORD,
        log=run_dir / "postgres.log",
        durable=False,
    )
    server.init()
    server.start()
    try:
        cheap_password_checks(server.admin_url, TEST_PASSWORD)
        yield server.admin_url
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_brokers() -> Iterator[str]:
    external = os.environ.get("KAFKA_BROKERS")
    if external:
        with kept_producer(external):
            yield external
        return
    logs = REPO_ROOT / ".run" / "logs"
    sweep_dead_brokers(logs)  # brokers of sessions killed before their teardown
    port = free_port()
    broker = start_tansu(port, logs / f"test-kafka-{os.getpid()}.log")
    try:
        with kept_producer(f"127.0.0.1:{port}"):
            yield f"127.0.0.1:{port}"
    finally:
        # in memory, nothing to keep: a graceful stop waited up to 5 s on a client's lingering connection
        broker.process.kill()
        broker.process.wait(10)


@pytest.fixture(scope="session")
def login_roles(pg_admin_url: str) -> dict[str, str]:
    """Login users of the group roles (roles are cluster-wide; groups come from migrations). Two
    sessions on one server (xdist workers on TEST_DATABASE_URL) both found a group missing and one
    failed "role already exists": they take turns on ensure_login's lock (ROLES_LOCK)."""
    with psycopg.connect(pg_admin_url, autocommit=True) as conn, conn.transaction():
        conn.execute(ROLES_LOCK)
        for group in ("analytics_rw", "analytics_ro", "analytics_resolver"):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (group,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
    password = role_password(pg_admin_url)
    ensure_login(pg_admin_url, "test_pipeline", password, "analytics_rw")
    ensure_login(pg_admin_url, "test_api", password, "analytics_ro")
    ensure_login(pg_admin_url, "test_api_writer", password, "analytics_resolver")
    return {"pipeline": "test_pipeline", "api": "test_api", "writer": "test_api_writer"}


@pytest.fixture(scope="session")
def template_database(pg_admin_url: str, login_roles: dict[str, str]) -> Iterator[str]:
    """The name of the database this session migrated once and every test's database copies."""
    with migrated_template(pg_admin_url) as name:
        yield name


@pytest.fixture
def database(pg_admin_url: str, login_roles: dict[str, str], template_database: str) -> Iterator[DatabaseHandle]:
    """A new, fully migrated database for this test (a copy of the session's template)."""
    with new_database(pg_admin_url, login_roles, template_database) as handle:
        yield handle


@pytest.fixture(scope="module")
def module_database(pg_admin_url: str, login_roles: dict[str, str], template_database: str) -> Iterator[DatabaseHandle]:
    """A new, fully migrated database shared by every test of one module (a dataset built once)."""
    with new_database(pg_admin_url, login_roles, template_database) as handle:
        yield handle


@pytest.fixture
def settings(database: DatabaseHandle, kafka_brokers: str) -> Iterator[PlatformSettings]:
    """Settings pointing at this test's database and topics (unique prefix), topics created (and
    deleted after the test: see `delete_settings_topics`)."""
    result = new_settings(database, kafka_brokers)
    yield result
    delete_settings_topics(result)


@pytest.fixture(scope="module")
def module_settings(module_database: DatabaseHandle, kafka_brokers: str) -> Iterator[PlatformSettings]:
    """Settings pointing at the module's database and topics (unique prefix), topics created (and
    deleted after the module)."""
    result = new_settings(module_database, kafka_brokers)
    yield result
    delete_settings_topics(result)


@pytest.fixture
def defs(settings: PlatformSettings) -> dg.Definitions:
    """The platform's definitions for this test's database and topics."""
    return build_definitions(settings, secrets_from_env=False)


@pytest.fixture(scope="session")
def instance_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new Dagster instance's storage, made once per session; `instance` copies it."""
    return dagster_instance_template(tmp_path_factory.mktemp("dagster-template"))


@pytest.fixture
def instance(instance_template: Path) -> Iterator[dg.DagsterInstance]:
    """A throwaway Dagster instance (runs, events, cursors) for one test."""
    with dagster_instance(instance_template) as instance:
        yield instance


@pytest.fixture(scope="module")
def module_instance(instance_template: Path) -> Iterator[dg.DagsterInstance]:
    """A throwaway Dagster instance (runs, events, cursors) shared by one module's tests."""
    with dagster_instance(instance_template) as instance:
        yield instance


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
