"""Fixtures: a real PostgreSQL and a real Kafka-protocol broker, started by the project's devstack.

Unless TEST_DATABASE_URL (an admin URL of a running PostgreSQL/TimescaleDB that may create
databases) or KAFKA_BROKERS is set, the session starts its own: an embedded PostgreSQL in
`.run/test-pg-<pid>/` on a free port and the Tansu broker on a free port. Each test gets a fresh
database (migrated from scratch) and its own topic prefix, so tests never see each other's data.
A module whose tests share one expensive dataset (the dashboard plant) takes the `module_*`
equivalents instead: the same creation code, kept for the whole module.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from confluent_kafka import Producer
from psycopg import sql

from analytics_platform.contracts.registry import bind_domains, contract_config
from analytics_platform.defs import build_definitions
from analytics_platform.devstack.broker import ensure_topics, start_tansu
from analytics_platform.devstack.postgres import EmbeddedPostgres, ensure_login
from analytics_platform.devstack.processes import free_port
from analytics_platform.devstack.stack import with_credentials
from analytics_platform.ingest.drain import Drain
from analytics_platform.migrations import apply_migrations
from analytics_platform.settings import REPO_ROOT, PlatformSettings

TEST_PASSWORD = "test-" + secrets.token_hex(8)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def pytest_configure(config: pytest.Config) -> None:
    """`timeout`, CI cancellation and `kill` send SIGTERM, which would end pytest without running
    session teardown and leave the embedded PostgreSQL and broker running: make it an interrupt,
    which pytest answers by tearing the session down."""
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """Admin URL (database `postgres`) of the server the tests use."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    run_dir = REPO_ROOT / ".run" / f"test-pg-{os.getpid()}"
    server = EmbeddedPostgres(
        data_dir=run_dir / "data",
        port=free_port(),
        password=TEST_PASSWORD,
        log=run_dir / "postgres.log",
    )
    server.init()
    server.start()
    try:
        yield server.admin_url
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_brokers() -> Iterator[str]:
    external = os.environ.get("KAFKA_BROKERS")
    if external:
        yield external
        return
    port = free_port()
    broker = start_tansu(port, REPO_ROOT / ".run" / "logs" / f"test-kafka-{os.getpid()}.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        broker.stop(timeout=10)


@dataclass(frozen=True)
class DatabaseHandle:
    name: str
    admin_url: str  # owner of the schema (runs migrations)
    pipeline_url: str  # analytics_rw login
    api_url: str  # analytics_ro login
    writer_url: str  # analytics_resolver login (the API's one write)

    def connect(self, url: str | None = None) -> psycopg.Connection:
        return psycopg.connect(url or self.admin_url, autocommit=True)

    def query(self, statement: str, params: tuple | dict | None = None) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(statement, params).fetchall()

    def scalar(self, statement: str, params: tuple | dict | None = None):
        return self.query(statement, params)[0][0]


@pytest.fixture(scope="session")
def login_roles(pg_admin_url: str) -> dict[str, str]:
    """Login users of the group roles (roles are cluster-wide; groups come from migrations)."""
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for group in ("analytics_rw", "analytics_ro", "analytics_resolver"):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (group,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
    password = role_password(pg_admin_url)
    ensure_login(pg_admin_url, "test_pipeline", password, "analytics_rw")
    ensure_login(pg_admin_url, "test_api", password, "analytics_ro")
    ensure_login(pg_admin_url, "test_api_writer", password, "analytics_resolver")
    return {"pipeline": "test_pipeline", "api": "test_api", "writer": "test_api_writer"}


def role_password(pg_admin_url: str) -> str:
    """The test logins' password: derived from the admin URL, so test sessions sharing one server
    (TEST_DATABASE_URL) agree on it instead of resetting each other's, and nobody without the
    admin URL can work it out."""
    return "test-" + hashlib.sha256(f"test-roles:{pg_admin_url}".encode()).hexdigest()[:24]


@contextmanager
def new_database(pg_admin_url: str, login_roles: dict[str, str]) -> Iterator[DatabaseHandle]:
    """A new, fully migrated database, dropped on exit: the one way the test fixtures (per test or
    per module) make a database, so both always see the same schema and roles."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        admin = _with_database(pg_admin_url, name)
        apply_migrations(admin, timescale=os.environ.get("ANALYTICS_TIMESCALE", "auto"))
        password = role_password(pg_admin_url)
        yield DatabaseHandle(
            name=name,
            admin_url=admin,
            pipeline_url=with_credentials(admin, login_roles["pipeline"], password),
            api_url=with_credentials(admin, login_roles["api"], password),
            writer_url=with_credentials(admin, login_roles["writer"], password),
        )
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database(pg_admin_url: str, login_roles: dict[str, str]) -> Iterator[DatabaseHandle]:
    """A new, fully migrated database for this test."""
    with new_database(pg_admin_url, login_roles) as handle:
        yield handle


@pytest.fixture(scope="module")
def module_database(pg_admin_url: str, login_roles: dict[str, str]) -> Iterator[DatabaseHandle]:
    """A new, fully migrated database shared by every test of one module (a dataset built once)."""
    with new_database(pg_admin_url, login_roles) as handle:
        yield handle


def _with_database(url: str, database: str) -> str:
    head, _, tail = url.rpartition("/")
    query = ""
    if "?" in tail:
        query = "?" + tail.split("?", 1)[1]
    return f"{head}/{database}{query}"


def new_settings(database: DatabaseHandle, kafka_brokers: str) -> PlatformSettings:
    """Settings pointing at `database` and at topics of their own (a unique prefix), the topics
    created: the one way the test fixtures (per test or per module) make settings."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    result = PlatformSettings(
        database_url=database.pipeline_url,
        api_database_url=database.api_url,
        api_write_database_url=database.writer_url,
        kafka_brokers=kafka_brokers,
        kafka_topic_prefix=prefix,
        drain_consumer="test-drain",
        drain_poll_timeout_s=1.0,
    )
    topics = [t for b in bind_domains(result) for t in b.topics]
    ensure_topics(result.kafka_client_config(), topics, partitions=3)
    return result


@pytest.fixture
def settings(database: DatabaseHandle, kafka_brokers: str) -> PlatformSettings:
    """Settings pointing at this test's database and topics (unique prefix), topics created."""
    return new_settings(database, kafka_brokers)


@pytest.fixture(scope="module")
def module_settings(module_database: DatabaseHandle, kafka_brokers: str) -> PlatformSettings:
    """Settings pointing at the module's database and topics (unique prefix), topics created."""
    return new_settings(module_database, kafka_brokers)


@pytest.fixture
def defs(settings: PlatformSettings) -> dg.Definitions:
    """The platform's definitions for this test's database and topics."""
    return build_definitions(settings, secrets_from_env=False)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A throwaway Dagster instance (runs, events, cursors) for one test."""
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture(scope="module")
def module_instance() -> Iterator[dg.DagsterInstance]:
    """A throwaway Dagster instance (runs, events, cursors) shared by one module's tests."""
    with dg.instance_for_test() as instance:
        yield instance


def domain_drain(settings: PlatformSettings, domain: str = "sensor", cls: type[Drain] = Drain, **kwargs) -> Drain:
    """The drain of one domain as the sensor builds it, for these settings' database, broker and
    topics (`cls`: a subclass standing for another kind of broker)."""
    binding = next(b for b in bind_domains(settings) if b.domain == domain)
    return cls(
        binding,
        contract_config(settings),
        database_url=settings.database_url.get_secret_value(),
        kafka_config=settings.kafka_client_config(),
        consumer_name=settings.drain_consumer,
        poll_timeout_s=settings.drain_poll_timeout_s,
        **kwargs,
    )


def domain_topic(settings: PlatformSettings, domain: str = "sensor") -> str:
    return next(b for b in bind_domains(settings) if b.domain == domain).topics[0]


def produce(brokers: str, topic: str, messages: list[tuple[str | None, bytes]], partition: int | None = None) -> None:
    """Produce (key, value) pairs and wait until the broker acknowledged every one."""
    producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "linger.ms": 5})
    failures: list[str] = []

    def _ack(err, _msg) -> None:
        if err is not None:
            failures.append(str(err))

    for key, value in messages:
        kwargs = {"partition": partition} if partition is not None else {}
        producer.produce(topic, key=key.encode() if key else None, value=value, on_delivery=_ack, **kwargs)
    remaining = producer.flush(30)
    assert remaining == 0 and not failures, f"produce failed: {remaining} unacknowledged, {failures}"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
