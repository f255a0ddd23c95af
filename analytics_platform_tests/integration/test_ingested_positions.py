"""Readers of "the raw rows ingested since a position" (the live judges, the aggregates' finaliser) never
move past a row still to be committed, whoever writes it and whenever its transaction began
(`ingest.store.OLDEST_WRITER`): a row is stamped with the start of the statement that writes it, after
its transaction took an id, and the position stops at the oldest transaction holding one.

The defect these pin: rows were stamped with their transaction's start, and a transaction gets an id
only at its first write, so a drain between BEGIN and its first row was invisible to a judge's pass
that began then; the pass moved past the drain's stamp and its rows, committed a moment later, were
never judged live (the hourly asset judged them: an alert an hour late). Each step is called once,
in order, on a real PostgreSQL (no clock, no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import psycopg

from analytics_platform.contracts.registry import registry
from analytics_platform.contracts.sensor import CONTRACT
from analytics_platform.devstack.postgres import ensure_login
from analytics_platform.ingest.store import encode_rows, write_raw
from analytics_platform.migrations import raw_tables
from analytics_platform.results.aggregates import SETTLED
from analytics_platform.results.anomalies import AnomalyOptions
from analytics_platform.results.live_detection import judge_committed
from analytics_platform_tests.support.stack import DatabaseHandle, role_password

OPTIONS = AnomalyOptions()


def reading(machine: str, value: float, offset: int) -> pl.DataFrame:
    """One raw sensor row as the drain writes it, read now (the live judge looks back 10 minutes)."""
    row = {
        "time": datetime.now(UTC), "tenant_id": "t1", "factory_id": "f1", "machine_id": machine,
        "sensor_id": "s-001", "metric": "temp", "value": value, "unit": None, "payload": None,
        "uncatalogued": False, "event_id": f"e{offset}", "schema_version": 1, "dedup_key": f"t1|e{offset}",
        "topic": "sensors", "kafka_partition": 0, "kafka_offset": offset,
    }  # fmt: skip
    return pl.DataFrame([row])


def write(conn: psycopg.Connection, frame: pl.DataFrame) -> None:
    with conn.cursor() as cur:
        write_raw(cur, CONTRACT, encode_rows(frame, CONTRACT.raw_columns))


def judged(database: DatabaseHandle) -> tuple[int, int]:
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        done = judge_committed(conn, OPTIONS)
    return done.judged, done.flagged


def flagged_machines(database: DatabaseHandle) -> list[tuple]:
    return database.query("SELECT machine_id, method FROM analytics.analytics_anomaly ORDER BY machine_id, method")


def test_a_drain_begun_before_a_pass_and_writing_after_it_is_judged_by_the_next_pass(
    database: DatabaseHandle,
) -> None:
    assert judged(database) == (0, 0)  # the first pass places the judge's cursor at now()
    with psycopg.connect(database.pipeline_url) as drain:
        drain.execute("SELECT 1")  # BEGIN and a read: the drain's transaction has started, no id yet
        assert judged(database) == (0, 0)  # this pass ends after the drain's BEGIN
        write(drain, reading("mc-late", 1000.0, 1))  # above the catalogue's 400 degC
        drain.commit()
    assert judged(database) == (1, 1)
    assert flagged_machines(database) == [("mc-late", "range")]


def test_a_pass_during_an_uncommitted_write_stops_before_it_and_the_next_takes_it(database: DatabaseHandle) -> None:
    assert judged(database) == (0, 0)
    with psycopg.connect(database.pipeline_url) as drain:
        drain.execute("SELECT 1")  # the drain's batch transaction, as it writes: open until its commit
        write(drain, reading("mc-open", 1000.0, 2))
        began = drain.execute("SELECT now()").fetchone()[0]
        with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
            done = judge_committed(conn, OPTIONS)
        assert (done.judged, done.until <= began) == (0, True)
        drain.commit()
    assert judged(database) == (1, 1)
    assert flagged_machines(database) == [("mc-open", "range")]


def test_a_reader_holds_no_position_back(database: DatabaseHandle) -> None:
    with psycopg.connect(database.pipeline_url) as reader:
        reader.execute("SELECT count(*) FROM analytics.raw_sensor_readings")  # open, no transaction id
        began = reader.execute("SELECT now()").fetchone()[0]
        with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
            position = conn.execute(SETTLED).fetchone()[1]
        assert position > began


def test_a_writer_under_another_pipeline_login_holds_the_position_back(
    database: DatabaseHandle, pg_admin_url: str
) -> None:
    """pg_stat_activity shows a transaction's start only to its own login and to pg_read_all_stats,
    which sql/26 grants analytics_rw: a second drain service under its own login is seen."""
    ensure_login(pg_admin_url, "test_pipeline_b", role_password(pg_admin_url), "analytics_rw")
    other = psycopg.conninfo.make_conninfo(database.pipeline_url, user="test_pipeline_b")
    assert judged(database) == (0, 0)
    with psycopg.connect(other) as drain:
        drain.execute("SELECT 1")
        write(drain, reading("mc-other", 1000.0, 3))
        began = drain.execute("SELECT now()").fetchone()[0]
        with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
            assert conn.execute(SETTLED).fetchone()[1] <= began
            done = judge_committed(conn, OPTIONS)
        assert (done.judged, done.until <= began) == (0, True)
        drain.commit()
    assert judged(database) == (1, 1)


def test_every_raw_table_stamps_rows_at_their_statement_also_one_made_by_an_older_declaration(
    database: DatabaseHandle,
) -> None:
    defaults = """SELECT table_name, column_default FROM information_schema.columns
                  WHERE table_schema = 'analytics' AND column_name = 'ingested_at' ORDER BY table_name"""
    contracts = list(registry().contracts.values())
    tables = sorted(contract.raw_table for contract in contracts)
    assert database.query(defaults) == [(t, "statement_timestamp()") for t in tables]
    with database.connect() as conn:  # the sensor table as an older declaration left it
        conn.execute("ALTER TABLE analytics.raw_sensor_readings ALTER COLUMN ingested_at SET DEFAULT now()")
        conn.execute("UPDATE analytics.raw_tables SET checksum = 'older' WHERE raw_table = 'raw_sensor_readings'")
        done = {r.version: r.action for r in raw_tables(conn, contracts)}
    assert done["raw_sensor_readings"] != "skipped"
    assert database.query(defaults) == [(t, "statement_timestamp()") for t in tables]
    with psycopg.connect(database.pipeline_url) as drain:
        began = drain.execute("SELECT now()").fetchone()[0]
        write(drain, reading("mc-stamp", 64.0, 4))
        stamp = drain.execute(
            "SELECT ingested_at FROM analytics.raw_sensor_readings WHERE machine_id = 'mc-stamp'"
        ).fetchone()[0]
        drain.commit()
    assert stamp > began
