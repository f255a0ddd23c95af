"""Raw tables come from the contracts: a database built from the declarations has exactly the raw
tables the hand-written SQL made (columns, types, defaults, constraints, indexes, privileges, and on
TimescaleDB the hypertable, compression and retention) plus the indexes declared since
(DECLARED_ADDITIONS) and the defaults changed since (DECLARED_DEFAULTS), and a database migrated by
the old files keeps its rows and gains what a declaration adds, compressed chunks included."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from analytics_platform.contracts.registry import registry
from analytics_platform.migrations import apply_migrations
from analytics_platform_tests.support.stack import DatabaseHandle

RAW_TABLES = ("raw_sensor_readings", "raw_device_health", "raw_sweep_readings", "raw_lab_results")
TIMESCALE = os.environ.get("ANALYTICS_TIMESCALE", "auto")
# What a declaration adds on purpose beyond the hand-written DDL (raw_tables_before_contracts.sql is
# the snapshot of the old files and stays as they were): table -> (index name, its exact definition).
# ingested_idx: the live judge reads the sensor rows committed since its cursor by ingested_at (issue 22).
DECLARED_ADDITIONS: dict[str, list[tuple[str, str]]] = {
    "raw_sensor_readings": [
        (
            "raw_sensor_readings_ingested_idx",
            "CREATE INDEX raw_sensor_readings_ingested_idx ON analytics.raw_sensor_readings USING btree (ingested_at)",
        )
    ]
}
# Column defaults a declaration changed since: ingested_at is the writing statement's start, not its
# transaction's (ingest/store.py OLDEST_WRITER: a reader of "rows ingested since" misses none).
DECLARED_DEFAULTS = {"ingested_at": "statement_timestamp()"}


def legacy_sql(repo_root, part: str) -> str:
    """A part of the raw DDL the old files ran: 'create' (01), '04' or '08'."""
    text = (repo_root / "analytics_platform_tests" / "integration" / "raw_tables_before_contracts.sql").read_text()
    create, rest = text.split("-- @@ 04_analytics_energy.sql")
    energy, catalog = rest.split("-- @@ 08_metric_catalog.sql")
    return {"create": create, "04": energy, "08": catalog}[part]


@contextmanager
def scratch_database(pg_admin_url: str) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}_old"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def old_database(url: str, repo_root, parts: tuple[str, ...]) -> None:
    """What the old files made: 01 (whose primitives this file still holds) with the raw tables
    written by hand, then the raw columns of 04 and 08."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT set_config('analytics.timescale', %s, true)", (TIMESCALE,))
        conn.execute((repo_root / "sql" / "01_analytics_core.sql").read_text())
        for part in parts:
            conn.execute(legacy_sql(repo_root, part))
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO analytics_ro")
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics TO analytics_rw")


def catalog(url: str, table: str) -> dict[str, object]:
    """Everything the catalog says about one table that a query, a write or an operator can see."""
    with psycopg.connect(url, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, udt_name, is_nullable, column_default, ordinal_position "
            "FROM information_schema.columns WHERE table_schema = 'analytics' AND table_name = %s "
            "ORDER BY column_name",
            (table,),
        ).fetchall()
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass ORDER BY conname",
            (f"analytics.{table}",),
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'analytics' AND tablename = %s "
            "ORDER BY indexname",
            (table,),
        ).fetchall()
        grants = conn.execute(
            "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
            "WHERE table_schema = 'analytics' AND table_name = %s AND grantee LIKE 'analytics_%%' ORDER BY 1, 2",
            (table,),
        ).fetchall()
        found: dict[str, object] = {
            # ordinal positions apart: a column the old files added later (04: run_state) is last there
            "columns": [c[:5] for c in columns],
            "order": [c[0] for c in sorted(columns, key=lambda c: c[5]) if c[0] != "run_state"],
            "constraints": constraints,
            "indexes": indexes,
            "grants": grants,
        }
        if conn.execute("SELECT analytics.timescale_enabled()").fetchone()[0]:
            found["hypertable"] = conn.execute(
                "SELECT d.column_name, d.time_interval::text FROM timescaledb_information.dimensions d "
                "WHERE d.hypertable_schema = 'analytics' AND d.hypertable_name = %s",
                (table,),
            ).fetchall()
            found["compression"] = conn.execute(
                "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc "
                "FROM timescaledb_information.compression_settings "
                "WHERE hypertable_schema = 'analytics' AND hypertable_name = %s ORDER BY attname",
                (table,),
            ).fetchall()
            found["jobs"] = conn.execute(
                "SELECT proc_name, config - 'hypertable_id' FROM timescaledb_information.jobs "
                "WHERE hypertable_schema = 'analytics' AND hypertable_name = %s ORDER BY proc_name",
                (table,),
            ).fetchall()
    return found


def hand_written(url: str, table: str) -> dict[str, object]:
    """The catalog of a table the old files made, plus the indexes declared since
    (DECLARED_ADDITIONS) and the defaults changed since (DECLARED_DEFAULTS): what a database built or
    migrated from the declarations must equal."""
    found = catalog(url, table)
    found["indexes"] = sorted([*found["indexes"], *DECLARED_ADDITIONS.get(table, [])])  # type: ignore[misc]
    found["columns"] = [  # type: ignore[assignment]
        (*c[:4], DECLARED_DEFAULTS.get(c[0], c[4]), *c[5:])
        for c in found["columns"]  # type: ignore[attr-defined]
    ]
    return found


def test_contract_tables_equal_the_hand_written_ones(database: DatabaseHandle, pg_admin_url: str, repo_root) -> None:
    with scratch_database(pg_admin_url) as url:
        old_database(url, repo_root, ("create", "04", "08"))
        for table in RAW_TABLES:
            assert catalog(database.admin_url, table) == hand_written(url, table), table
        assert database.query("SELECT raw_table, domain FROM analytics.raw_tables ORDER BY 1") == [
            ("raw_device_health", "device"),
            ("raw_lab_results", "lab"),
            ("raw_sensor_readings", "sensor"),
            ("raw_sweep_readings", "sweep"),
        ]


def test_a_database_of_the_old_files_keeps_its_rows_and_gains_the_declared_columns(
    pg_admin_url: str, repo_root
) -> None:
    """Tables made before 04 and 08 (no run_state, no uncatalogued), one row each in a compressed
    chunk on TimescaleDB: the runner adds the columns and indexes, rows and writes keep working.
    The rows are two days old: older than the 90-day retention, TimescaleDB's job would drop them."""
    insert = (
        "INSERT INTO analytics.{table} (time, tenant_id, factory_id, machine_id, {cols}, schema_version, "
        "dedup_key, topic, kafka_partition, kafka_offset) VALUES (date_trunc('hour', now()) - INTERVAL '2 days', "
        "'t1', 'f1', 'mc-01', "
        "{vals}, 1, %s, 'x', 0, %s)"
    )
    rows = {
        "raw_sensor_readings": ("sensor_id, metric, value", "'s1', 'temp', 21.5"),
        "raw_device_health": ("status", "'online'"),
        "raw_sweep_readings": ("metric, n, reading_values", "'temp', 1, '{1.5}'"),
    }
    with scratch_database(pg_admin_url) as url:
        old_database(url, repo_root, ("create",))
        with psycopg.connect(url, autocommit=True) as conn:
            for table, (cols, vals) in rows.items():
                conn.execute(insert.format(table=table, cols=cols, vals=vals), ("old", 1))  # type: ignore[arg-type]
            timescale = conn.execute("SELECT analytics.timescale_enabled()").fetchone()[0]
            if timescale:
                for table in rows:
                    conn.execute(f"SELECT compress_chunk(c) FROM show_chunks('analytics.{table}') c")  # type: ignore[arg-type]
        echoed: list[str] = []
        apply_migrations(url, timescale=TIMESCALE, echo=echoed.append, domain_modules=[])
        assert [m for m in echoed if m.startswith("raw table")] == [
            f"raw table {c.raw_table} ({c.domain}): reapplied" for c in registry().contracts.values()
        ]
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT status, run_state FROM analytics.raw_device_health").fetchall() == [
                ("online", None)
            ]
            for table in ("raw_sensor_readings", "raw_sweep_readings"):
                assert conn.execute(f"SELECT uncatalogued FROM analytics.{table}").fetchall() == [(False,)]  # type: ignore[arg-type]
            conn.execute(
                insert.format(table="raw_device_health", cols="run_state", vals="'running'"),  # type: ignore[arg-type]
                ("new", 2),
            )
            assert conn.execute(
                "SELECT count(*) FROM analytics.raw_device_health WHERE run_state IS NOT NULL"
            ).fetchone() == (1,)
        # a second run finds every declaration applied
        echoed.clear()
        apply_migrations(url, timescale=TIMESCALE, echo=echoed.append, domain_modules=[])
        assert [m for m in echoed if m.startswith("raw table")] == []
        with scratch_database(pg_admin_url) as reference:
            old_database(reference, repo_root, ("create", "04", "08"))
            for table in RAW_TABLES:
                assert catalog(url, table) == hand_written(reference, table), table
