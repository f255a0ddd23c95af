"""The embedded stack: a database, a broker, the schema and the roles, as one object.

`make demo` and the integration tests both build on this, so the tests run against the same kind
of stack a newcomer sees. Everything owned lives under the run folder (`.run/` by default):
data directory, logs, generated passwords (`.run/secrets.json`, mode 0600), Dagster home.

Use what exists when told to: DATABASE_URL (a running PostgreSQL/TimescaleDB; migrations then run
with MIGRATIONS_DATABASE_URL or DATABASE_URL) and KAFKA_BROKERS (a running Kafka cluster).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

from analytics_platform.alerts.config import seed_alert_rules
from analytics_platform.api.keys import create_key, find_principal
from analytics_platform.devstack.broker import check_broker, ensure_topics, start_tansu
from analytics_platform.devstack.postgres import EmbeddedPostgres, ensure_login
from analytics_platform.devstack.processes import Service, StackError
from analytics_platform.ingest.rederive import rederive_queued
from analytics_platform.migrations import apply_migrations
from analytics_platform.results.plant import load_plant_config
from analytics_platform.results.spec_limits import DEFAULT_FILE, load_spec_limits
from analytics_platform.settings import REPO_ROOT, PlatformSettings

log = logging.getLogger(__name__)

PIPELINE_USER = "analytics_pipeline"
API_USER = "analytics_api"
API_WRITER_USER = "analytics_api_writer"  # the API's one write: resolving anomalies
DEMO_TENANT = "t1"


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise StackError(f"{name}={value!r} is not a port number") from None


@dataclass
class StackConfig:
    run_dir: Path = field(default_factory=lambda: Path(os.environ.get("DEVSTACK_RUN_DIR", REPO_ROOT / ".run")))
    pg_port: int = field(default_factory=lambda: _int_env("DEVSTACK_PG_PORT", 55432))
    kafka_port: int = field(default_factory=lambda: _int_env("DEVSTACK_KAFKA_PORT", 9092))
    database: str = "analytics"
    topic_partitions: int = field(default_factory=lambda: _int_env("KAFKA_TOPIC_PARTITIONS", 3))
    timescale: str = field(default_factory=lambda: os.environ.get("ANALYTICS_TIMESCALE", "auto"))

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"


def with_credentials(url: str, user: str, password: str, database: str | None = None) -> str:
    """`url` with its user, password (and optionally database) replaced."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    path = f"/{database}" if database else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def psycopg2_url(url: str) -> str:
    """dagster-postgres needs the psycopg2 driver spelled out (see dagster.yaml)."""
    scheme, _, rest = url.partition("://")
    if "+" in scheme:
        return url
    return f"postgresql+psycopg2://{rest}"


def redact(url: str) -> str:
    """A URL safe to print: the password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Secrets:
    """Generated passwords of the owned database, kept in the run folder (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, name: str) -> str:
        if name not in self.values:
            self.values[name] = secrets.token_urlsafe(24)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.values, indent=2))
            self.path.chmod(0o600)
        return self.values[name]


@dataclass
class Stack:
    """Database + broker + schema; `up()` returns the environment every service needs."""

    config: StackConfig = field(default_factory=StackConfig)
    postgres: EmbeddedPostgres | None = None
    broker: Service | None = None
    env: dict[str, str] = field(default_factory=dict)

    def up(self, *, echo=print) -> dict[str, str]:
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        self.env = {}
        self._database(echo)
        self._kafka(echo)
        return self.env

    def _database(self, echo) -> None:
        external = os.environ.get("DATABASE_URL")
        if external:
            admin = os.environ.get("MIGRATIONS_DATABASE_URL", external)
            self._migrate(admin, echo)
            self.env["DATABASE_URL"] = external
            self.env["API_DATABASE_URL"] = os.environ.get("API_DATABASE_URL", external)
            if os.environ.get("API_WRITE_DATABASE_URL"):
                self.env["API_WRITE_DATABASE_URL"] = os.environ["API_WRITE_DATABASE_URL"]
            self._demo_key(admin, echo)
            self.env["DAGSTER_PG_URL"] = os.environ.get("DAGSTER_PG_URL", psycopg2_url(external))
            echo(f"database: using DATABASE_URL {redact(external)}")
            return
        store = Secrets(self.config.run_dir / "secrets.json")
        self.postgres = EmbeddedPostgres(
            data_dir=self.config.run_dir / "pgdata",
            port=self.config.pg_port,
            password=store.get("postgres"),
            log=self.config.logs / "postgres.log",
        )
        created = self.postgres.init()
        self.postgres.start()
        echo(
            f"database: PostgreSQL on 127.0.0.1:{self.config.pg_port} "
            f"({'new' if created else 'existing'} data in {self.config.run_dir / 'pgdata'})"
        )
        self.postgres.ensure_database(self.config.database)
        admin = with_credentials(self.postgres.admin_url, "postgres", store.get("postgres"), self.config.database)
        self._migrate(admin, echo)
        pipeline_pw, api_pw = store.get(PIPELINE_USER), store.get(API_USER)
        ensure_login(admin, PIPELINE_USER, pipeline_pw, "analytics_rw")
        ensure_login(admin, API_USER, api_pw, "analytics_ro")
        writer_pw = store.get(API_WRITER_USER)
        ensure_login(admin, API_WRITER_USER, writer_pw, "analytics_resolver")
        self.env["API_WRITE_DATABASE_URL"] = with_credentials(admin, API_WRITER_USER, writer_pw)
        self._demo_key(admin, echo)
        self.postgres.ensure_database("dagster", owner=PIPELINE_USER)
        self.env["DATABASE_URL"] = with_credentials(admin, PIPELINE_USER, pipeline_pw)
        self.env["API_DATABASE_URL"] = with_credentials(admin, API_USER, api_pw)
        self.env["DAGSTER_PG_URL"] = psycopg2_url(with_credentials(admin, PIPELINE_USER, pipeline_pw, "dagster"))
        self.env["MIGRATIONS_DATABASE_URL"] = admin

    def _migrate(self, url: str, echo) -> None:
        try:
            results = apply_migrations(url, timescale=self.config.timescale, echo=lambda _m: None)
        except psycopg.OperationalError as exc:
            first = (str(exc).strip().splitlines() or ["connection failed"])[0]
            raise StackError(f"database {redact(url)} is unreachable ({first}): start it or fix DATABASE_URL") from None
        applied = [r.version for r in results if r.action != "skipped"]
        echo(f"migrations: {len(applied)} applied, {len(results) - len(applied)} already in place")
        with psycopg.connect(url, autocommit=True) as conn:
            # raw hours a migration queued (07: rows lost to id collisions come back from landing)
            rederived = rederive_queued(conn, PlatformSettings(), echo=echo)
            if rederived:
                echo(f"raw data: {len(rederived)} hour(s) re-derived from kafka_landing")
            added = load_spec_limits(conn, overwrite=False)  # seed once; edits in the table are kept
            plant = load_plant_config(conn, overwrite=False)
            alerts = seed_alert_rules(conn)
        echo(f"spec limits: {added} seeded from {DEFAULT_FILE.name}; plant metadata: {plant} row(s) seeded")
        echo(f"alert rules: {alerts} seeded from alerts.yaml" if alerts else "alert rules: kept as they are")

    @property
    def api_key_file(self) -> Path:
        return self.config.run_dir / "api-key"

    def _demo_key(self, admin_url: str, echo) -> None:
        """An API key for the demo tenant (read + resolve), kept in .run/api-key (0600) and made
        again when the database no longer knows it (a new data folder)."""
        path = self.api_key_file
        with psycopg.connect(admin_url, autocommit=True) as conn:
            if path.exists() and find_principal(conn, path.read_text().strip()) is not None:
                echo(f"API key: kept in {path}")
                return
            _key_id, key = create_key(conn, "devstack demo", DEMO_TENANT, scopes=("read", "resolve"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key + "\n")
        path.chmod(0o600)
        echo(f"API key: a new key of tenant {DEMO_TENANT} in {path}")

    def _kafka(self, echo) -> None:
        brokers = os.environ.get("KAFKA_BROKERS")
        if not brokers:
            brokers = f"127.0.0.1:{self.config.kafka_port}"
            self.broker = start_tansu(self.config.kafka_port, self.config.logs / "kafka.log")
            echo(f"broker: Tansu (Kafka protocol, in memory) on {brokers}")
        else:
            echo(f"broker: using KAFKA_BROKERS {brokers}")
        self.env["KAFKA_BROKERS"] = brokers
        settings = PlatformSettings(kafka_brokers=brokers)
        check_broker(settings.kafka_client_config())

    def create_topics(self, topics: list[str]) -> list[str]:
        settings = PlatformSettings(kafka_brokers=self.env["KAFKA_BROKERS"])
        return ensure_topics(settings.kafka_client_config(), topics, self.config.topic_partitions)

    def down(self) -> None:
        """Stop what this stack started (never an external database or broker)."""
        if self.broker is not None:
            self.broker.stop(timeout=10)
            self.broker = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
