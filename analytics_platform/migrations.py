"""Apply the numbered SQL files in `sql/`, create the registered domains' raw tables, and record
what was applied.

Every file is idempotent, so the runner's bookkeeping is about knowing, not about safety: it
applies files it has not seen, re-applies a file whose content changed (logged, since the files
are written to be re-runnable), and skips the rest. One advisory lock serialises concurrent
runners (two pods starting at once), and each file runs in its own transaction.

Raw tables are not in the files: each registered contract declares its own
(`analytics_platform.contracts.storage`), and the runner makes the table what the declaration
says right after the first file (schema, roles and `analytics.make_timeseries`), so every later
file can rely on the raw tables. A declaration is recorded with its checksum in
`analytics.raw_tables` and re-applied when it changes: the table is created when missing, gains
the columns and indexes it lacks, and becomes a hypertable on TimescaleDB. Columns are never
dropped or retyped (a domain that needs that writes a numbered file).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from analytics_platform.contracts.base import Contract
from analytics_platform.contracts.registry import registry
from analytics_platform.contracts.storage import SCHEMA, create_statements
from analytics_platform.ingest.catalog import seed_packaged
from analytics_platform.settings import REPO_ROOT, get_settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(os.environ.get("MIGRATIONS_DIR", REPO_ROOT / "sql"))
_LOCK_KEY = 0x616E616C79746963  # "analytic"
_TIMESCALE_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path
    checksum: str


@dataclass(frozen=True)
class MigrationResult:
    version: str
    action: str  # applied | reapplied | skipped


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in order: `NN_name.sql`, sorted by their number."""
    found = []
    for path in directory.glob("*.sql"):
        prefix = path.name.split("_", 1)[0]
        if not prefix.isdigit():
            raise ValueError(f"migration {path.name} must start with a number, e.g. 03_name.sql")
        found.append(Migration(path.stem, path, hashlib.sha256(path.read_bytes()).hexdigest()))
    return sorted(found, key=lambda m: (int(m.version.split("_", 1)[0]), m.version))


def apply_migrations(
    url: str,
    directory: Path = MIGRATIONS_DIR,
    *,
    timescale: str = "auto",
    echo: Callable[[str], None] = log.info,
    metrics_catalog: Path | None = None,
    domain_modules: Sequence[str] | None = None,
) -> list[MigrationResult]:
    """Apply pending migrations to the database at `url`; return what happened to each file.

    After the first file, the raw table of every registered contract (the package's, the entry
    points' and `domain_modules`, default DOMAIN_MODULES) is created or evolved (`raw_tables`).
    Then seed the metrics catalogue's platform defaults from `metrics_catalog` (METRICS_CATALOG,
    the packaged contracts/metrics.yaml): entries the table lacks are added, edited ones are kept.
    """
    if timescale not in _TIMESCALE_MODES:
        raise ValueError(f"timescale must be one of {_TIMESCALE_MODES}, not {timescale!r}")
    modules = get_settings().domain_modules if domain_modules is None else domain_modules
    contracts = list(registry(modules).contracts.values())
    results = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS analytics")
            conn.execute(
                """CREATE TABLE IF NOT EXISTS analytics.schema_migrations (
                       version    text PRIMARY KEY,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            conn.execute(
                """CREATE TABLE IF NOT EXISTS analytics.raw_tables (
                       raw_table  text PRIMARY KEY,
                       domain     text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            applied = dict(conn.execute("SELECT version, checksum FROM analytics.schema_migrations").fetchall())
            for position, migration in enumerate(discover(directory)):
                if position == 1:
                    raw_tables(conn, contracts, timescale=timescale, echo=echo)
                known = applied.get(migration.version)
                if known == migration.checksum:
                    results.append(MigrationResult(migration.version, "skipped"))
                    continue
                action = "applied" if known is None else "reapplied"
                _apply_one(conn, migration, timescale)
                echo(f"migration {migration.version}: {action}")
                results.append(MigrationResult(migration.version, action))
            if len(results) == 1:  # only the first file: the raw tables still follow it
                raw_tables(conn, contracts, timescale=timescale, echo=echo)
            if any(m.version.startswith("08_") for m in discover(directory)):
                added = seed_packaged(conn, metrics_catalog or get_settings().metrics_catalog)
                if added:
                    echo(f"metrics catalogue: {added} packaged default(s) added")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return results


# a catalog row another backend changed under this transaction: on TimescaleDB a policy job (e.g.
# compressing a chunk) updates the chunk's pg_class row while a GRANT ... ON ALL TABLES walks it
_CONCURRENT_CATALOG = "tuple concurrently"  # updated, or deleted
_ATTEMPTS = 5


def _apply_one(conn: psycopg.Connection, migration: Migration, timescale: str) -> None:
    """One migration file and its record, in one transaction; retried (it is idempotent, and the
    failed attempt rolled back) when a concurrent catalog update, not the file, made it fail."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('analytics.timescale', %s, true)", (timescale,))
                conn.execute(migration.path.read_text())
                conn.execute(
                    """INSERT INTO analytics.schema_migrations (version, checksum) VALUES (%s, %s)
                       ON CONFLICT (version) DO UPDATE
                       SET checksum = excluded.checksum, applied_at = now()""",
                    (migration.version, migration.checksum),
                )
            return
        except (psycopg.errors.InternalError_, psycopg.errors.DeadlockDetected) as exc:
            concurrent = isinstance(exc, psycopg.errors.DeadlockDetected) or _CONCURRENT_CATALOG in str(exc)
            if not concurrent or attempt == _ATTEMPTS:
                raise
            log.warning("migration %s: %s (a background job; retry %d)", migration.version, exc, attempt)
            time.sleep(0.2 * attempt)  # let the background job's transaction finish


def raw_tables(
    conn: psycopg.Connection,
    contracts: Sequence[Contract],
    *,
    timescale: str = "auto",
    echo: Callable[[str], None] = log.info,
) -> list[MigrationResult]:
    """Make each contract's raw table what its declaration says (`storage.create_statements`), one
    transaction per table; a declaration already applied (same checksum, table present) is skipped."""
    applied = dict(conn.execute("SELECT raw_table, checksum FROM analytics.raw_tables").fetchall())
    results = []
    for contract in contracts:
        table = contract.raw_table
        checksum = hashlib.sha256("\n".join(create_statements(contract)).encode()).hexdigest()
        present = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.{table}",)).fetchone()
        if present and present[0] and applied.get(table) == checksum:
            results.append(MigrationResult(table, "skipped"))
            continue
        columns = frozenset(
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                (SCHEMA, table),
            )
        )
        with conn.transaction():
            conn.execute("SELECT set_config('analytics.timescale', %s, true)", (timescale,))
            for statement in create_statements(contract, columns):
                conn.execute(statement)  # type: ignore[arg-type]  # composed from the contract's declared names
            conn.execute(
                """INSERT INTO analytics.raw_tables (raw_table, domain, checksum) VALUES (%s, %s, %s)
                   ON CONFLICT (raw_table) DO UPDATE
                   SET domain = excluded.domain, checksum = excluded.checksum, applied_at = now()""",
                (table, contract.domain, checksum),
            )
        action = "applied" if not columns else "reapplied"
        echo(f"raw table {table} ({contract.domain}): {action}")
        results.append(MigrationResult(table, action))
    return results


def timescale_enabled(url: str) -> bool:
    """Whether the database at `url` runs TimescaleDB (after migrations, if it was available)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname='timescaledb')").fetchone()
    return bool(row and row[0])
