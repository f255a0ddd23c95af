"""How the window-aggregates asset reads raw readings (analytics_platform.results.aggregates): a row per
series and hour with the times and values as binary arrays (frames.binary_array), on two connections.
The numbers must come back bit for bit, on either side of PostgreSQL's 2000-01-01 epoch, whichever
connection read an hour; a connection inside a transaction must see what it wrote."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest

from analytics_platform.results.aggregates import READ_SCHEMA, iter_readings, read_readings, recompute_aggregates
from analytics_platform.results.frames import binary_array
from analytics_platform.transforms.window_aggregates import SERIES_KEY
from analytics_platform_tests.support.api import insert
from analytics_platform_tests.support.api_data import reading
from analytics_platform_tests.support.stack import DatabaseHandle

FLOATS = [1.5, -0.0, 5e-324, 1.7976931348623157e308, float("inf"), float("-inf"), 0.1 + 0.2]
# the hour before and the hour after PostgreSQL's epoch: negative and positive microseconds on the wire
START = datetime(1999, 12, 31, 23, tzinfo=UTC)
ROWS = [
    (START + timedelta(minutes=59, seconds=59, microseconds=999_999), "s1", 1.25, 1),
    (START + timedelta(minutes=10), "s1", -3.5, 2),
    (START + timedelta(minutes=30), "s2", 0.1 + 0.2, 3),
    (datetime(2000, 1, 1, tzinfo=UTC), "s1", 7.0, 4),
    (datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC), "s2", 2.0**-1074, 5),
    (datetime(2000, 1, 1, 0, 59, tzinfo=UTC), "s2", 1e308, 6),
]
END = START + timedelta(hours=2)


def bits(values: list[float]) -> list[int]:
    return [struct.unpack("<q", struct.pack("<d", v))[0] for v in values]


def expected(rows: list[tuple]) -> pl.DataFrame:
    frame = pl.DataFrame(
        [(t, "t1", "f1", "m1", s, "temp", v) for t, s, v, _ in rows],
        schema=list(READ_SCHEMA),
        orient="row",
    )
    return frame.cast(READ_SCHEMA).sort("time")


def same_rows(got: pl.DataFrame, want: pl.DataFrame) -> None:
    got = got.sort("time")
    assert got.schema == want.schema
    assert got.select(SERIES_KEY).cast(pl.String).rows() == want.select(SERIES_KEY).cast(pl.String).rows()
    assert got["time"].to_list() == want["time"].to_list()
    assert bits(got["value"].to_list()) == bits(want["value"].to_list())


def test_binary_arrays_are_read_bit_for_bit(database: DatabaseHandle) -> None:
    with psycopg.connect(database.admin_url, autocommit=True) as conn, conn.cursor(binary=True) as cur:
        floats, times, empty = cur.execute(
            "SELECT array_send(%s::float8[]), array_send(ARRAY[-1, 0, 86400000000]::int8[]), "
            "array_send('{}'::float8[])",
            (FLOATS,),
        ).fetchone()
        with_null = cur.execute("SELECT array_send(ARRAY[1.0, NULL]::float8[])").fetchone()[0]
    assert bits(binary_array(floats, ">f8").tolist()) == bits(FLOATS)
    assert binary_array(times, ">i8").tolist() == [-1, 0, 86_400_000_000]
    assert binary_array(empty, ">f8").tolist() == []
    with pytest.raises(ValueError, match="without NULLs"):
        binary_array(with_null, ">f8")


def test_readings_come_back_exactly_on_one_or_two_connections_an_epoch_hour_at_a_time(
    database: DatabaseHandle,
) -> None:
    insert(database, "raw_sensor_readings", [reading(t, s, v, o) for t, s, v, o in ROWS])
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        for readers in (1, 2):
            same_rows(read_readings(conn, START, END, readers), expected(ROWS))
        hours = list(iter_readings(conn, START + timedelta(minutes=30), END))
        # [23:30, 00:00) and [00:00, 01:00): cut at the epoch's hours, in order
        assert [h.height for h in hours] == [2, 3]
        same_rows(hours[0], expected([ROWS[0], ROWS[2]]))
        assert read_readings(conn, END, END + timedelta(hours=3)).schema == pl.Schema(READ_SCHEMA)
        assert read_readings(conn, END, END + timedelta(hours=3)).height == 0
        # the read's SET LOCAL is rolled back with its block: the session keeps its own setting
        assert conn.execute("SHOW max_parallel_workers_per_gather").fetchone()[0] != "0"


def test_a_connection_inside_a_transaction_reads_what_it_wrote(database: DatabaseHandle) -> None:
    insert(database, "raw_sensor_readings", [reading(t, s, v, o) for t, s, v, o in ROWS[:3]])
    with psycopg.connect(database.admin_url) as conn:  # not autocommit: a transaction is open
        row = reading(*ROWS[3][:2], ROWS[3][2], ROWS[3][3])
        conn.execute(
            "INSERT INTO analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric,"
            " value, schema_version, dedup_key, topic, kafka_partition, kafka_offset)"
            " VALUES (%(time)s, %(tenant_id)s, %(factory_id)s, %(machine_id)s, %(sensor_id)s, %(metric)s, %(value)s,"
            " %(schema_version)s, %(dedup_key)s, %(topic)s, %(kafka_partition)s, %(kafka_offset)s)",
            row,
        )
        same_rows(read_readings(conn, START, END), expected(ROWS[:4]))
        assert conn.execute("SHOW max_parallel_workers_per_gather").fetchone()[0] != "0"
        conn.rollback()
        same_rows(read_readings(conn, START, END), expected(ROWS[:3]))


def test_before_write_runs_once_after_the_transform_and_before_the_buckets_are_written(
    database: DatabaseHandle,
) -> None:
    """The asset starts its checks' Great Expectations import there, beside the write: once per
    recompute, when the old buckets are still what readers see."""
    # not the 1e308 reading: the day rollup of the 3600 s buckets would overflow squaring it
    insert(database, "raw_sensor_readings", [reading(t, s, v, o) for t, s, v, o in ROWS[:4]])
    seen: list[int] = []
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:

        def before_write() -> None:
            seen.append(database.scalar("SELECT count(*) FROM analytics.analytics_agg"))

        run = recompute_aggregates(conn, [60, 3600], START, END, before_write=before_write)
    assert seen == [0]
    # minutes 23:10, 23:30, 23:59 and 00:00; hours 23:00 of both series and 00:00 of s1
    assert run.rows == database.scalar("SELECT count(*) FROM analytics.analytics_agg") == 7
