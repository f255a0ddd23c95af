"""How a check reads back the window aggregates a partition wrote (data_quality.written): grouped by
series with every other column as binary arrays, it must give the frame the COPY read gives, bit
for bit: NULLs (a one-reading bucket's stddev), NaN, -0.0, the extremes of a float, timestamps on
either side of PostgreSQL's 2000-01-01 epoch, other series and windows left out by the range, and a
table that drifted from its contract (read the COPY way, so the schema check can name the drift)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg

from analytics_platform.data_quality import result_contracts
from analytics_platform.data_quality.written import read_written, read_written_grouped
from analytics_platform_tests.support.api import insert
from analytics_platform_tests.support.stack import DatabaseHandle

WHERE = "bucket_start < %s AND bucket_end > %s"
START = datetime(1999, 12, 31, 23, 58, tzinfo=UTC)
END = datetime(2000, 1, 1, 0, 2, tzinfo=UTC)
EXTREMES = [1.5, -0.0, 5e-324, 1.7976931348623157e308, float("nan"), float("-inf"), 0.1 + 0.2]


def bucket(minute: int, sensor: str, window_s: int = 60, **values: float | None) -> dict:
    start = START + timedelta(minutes=minute)
    row = {
        "bucket_start": start,
        "bucket_end": start + timedelta(seconds=window_s),
        "window_s": window_s,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "sensor_id": sensor,
        "metric": "temp",
        "count_n": 2,
        **{f"{s}_v": 1.0 for s in ("sum", "avg", "min", "max", "stddev", "first", "last", "p50", "p95")},
    }
    return {**row, **values}


ROWS = [
    bucket(0, "s1", sum_v=EXTREMES[0], avg_v=EXTREMES[1], min_v=EXTREMES[2], max_v=EXTREMES[3]),
    bucket(1, "s1", stddev_v=None, count_n=1, first_v=EXTREMES[4], last_v=EXTREMES[5], p50_v=EXTREMES[6]),
    bucket(2, "s1", p95_v=None),  # the epoch's own minute, then one after it
    bucket(3, "s1"),
    bucket(0, "s2", window_s=300, stddev_v=None),
    bucket(1, "s2"),
    bucket(-5, "s2"),  # ends before the range: not read
    bucket(4, "s3"),  # starts at its end: not read
]


def bits(frame: pl.DataFrame) -> list[tuple]:
    """The rows with every float as its 64 bits (NaN, -0.0 and NULL told apart)."""
    floats = [name for name, dtype in frame.schema.items() if dtype == pl.Float64]
    as_bits = [
        pl.col(c).map_elements(lambda v: struct.unpack("<q", struct.pack("<d", v))[0], return_dtype=pl.Int64)
        for c in floats
    ]
    return frame.with_columns(as_bits).rows()


def test_grouped_read_gives_the_copy_reads_frame_bit_for_bit(database: DatabaseHandle) -> None:
    insert(database, "analytics_agg", ROWS)
    key = list(result_contracts.AGG.key)
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        copied, copied_columns = read_written(conn, result_contracts.AGG, WHERE, (END, START))
        grouped, grouped_columns = read_written_grouped(
            conn, result_contracts.AGG, result_contracts.SERIES, WHERE, (END, START)
        )
        empty, _ = read_written_grouped(conn, result_contracts.AGG, result_contracts.SERIES, WHERE, (START, START))
    assert grouped.height == copied.height == 6
    assert grouped.schema == copied.schema == pl.Schema(result_contracts.AGG.schema)
    assert bits(grouped) == bits(copied.sort(key))  # and the grouped rows come in key order
    assert grouped["stddev_v"].null_count() == 2
    assert grouped_columns.equals(copied_columns)
    assert empty.schema == grouped.schema
    assert empty.height == 0


def test_a_drifted_table_is_read_the_copy_way_with_the_drifted_column_null(database: DatabaseHandle) -> None:
    insert(database, "analytics_agg", ROWS[:3])
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute("DROP VIEW analytics.v_agg_latest")  # it pins the column's type
        conn.execute("ALTER TABLE analytics.analytics_agg ALTER COLUMN p95_v TYPE real")
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        copied, _ = read_written(conn, result_contracts.AGG, WHERE, (END, START))
        grouped, columns = read_written_grouped(
            conn, result_contracts.AGG, result_contracts.SERIES, WHERE, (END, START)
        )
    assert dict(columns.iter_rows())["p95_v"] == "real"
    assert grouped["p95_v"].null_count() == grouped.height == 3
    assert bits(grouped) == bits(copied)
