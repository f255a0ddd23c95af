"""Window aggregates of a range of hours: read the readings of every bucket the hours touch,
aggregate in Polars, replace those buckets in one transaction."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import psycopg
from psycopg.pq import TransactionStatus

from analytics_platform.ingest.store import copy_rows
from analytics_platform.results.frames import binary_array, lock_results, sibling
from analytics_platform.transforms.window_aggregates import (
    AGG_COLUMNS,
    READING_SCHEMA,
    SERIES_KEY,
    canonical_order,
    ceil_to,
    covering_range,
    floor_to,
    window_aggregates,
)

# One row per series and hour: the series' times and values as binary arrays (`binary_array`). A day
# of 10M readings in 100 series comes back as 2,400 rows instead of 10M COPY rows, each of which cost
# psycopg ~1 us of Python and Polars a CSV parse, and each key string crosses the wire once per series
# and hour instead of once per reading. Read order does not matter: callers sort (canonical_order).
READINGS_QUERY = """
    SELECT tenant_id, factory_id, machine_id, sensor_id, metric,
           array_send(array_agg(time)), array_send(array_agg(value))
    FROM analytics.raw_sensor_readings WHERE time >= %s AND time < %s
    GROUP BY tenant_id, factory_id, machine_id, sensor_id, metric"""
# Connections reading a range's hours at once. The read is the server's work (scan, group, arrays),
# and a statement runs on one core: two connections took a day of 10M readings from 5.3 s to ...
READERS = 2
# timestamptz on the wire: microseconds since 2000-01-01 UTC
POSTGRES_EPOCH_US = 946_684_800_000_000


@dataclass
class AggregateRun:
    start: datetime
    end: datetime
    readings: int = 0
    rows: int = 0
    deleted: int = 0
    by_window: dict[int, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


# Series keys as Categorical: a day of readings repeats a few hundred key strings millions of
# times; categories keep the frame (and the group-by) small.
READ_SCHEMA = {name: (pl.Categorical() if name in SERIES_KEY else dtype) for name, dtype in READING_SCHEMA.items()}
Series = tuple[tuple[str, ...], np.ndarray, np.ndarray]


def read_hours(conn: psycopg.Connection, hours: queue.SimpleQueue) -> list[Series]:
    """Take hours off `hours` until none is left; each series of each as (key, times, values).

    Parallel plans are off for the read: the 2-core machine measured them slower than one process
    per connection (PostgreSQL merging partial array_agg states), and the connections are the
    parallelism here. SET LOCAL in a block rolled back leaves a caller's transaction as it was."""
    series: list[Series] = []
    with conn.transaction(force_rollback=True), conn.cursor(binary=True) as cur:
        cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        while True:
            try:
                start, end = hours.get_nowait()
            except queue.Empty:
                return series
            for *key, times, values in cur.execute(READINGS_QUERY, (start, end)):
                series.append((tuple(key), binary_array(times, ">i8"), binary_array(values, ">f8")))


def read_readings(conn: psycopg.Connection, start: datetime, end: datetime, readers: int = READERS) -> pl.DataFrame:
    """Readings of [start, end) in READ_SCHEMA, read an hour at a time on up to `readers` connections
    (`conn` and siblings of it) in threads: psycopg waits for the server without the GIL.

    A `conn` inside a transaction reads alone, so that it sees what the transaction wrote."""
    hours: queue.SimpleQueue = queue.SimpleQueue()
    for hour in chunks(start, end, 1):
        hours.put(hour)
    if readers < 2 or hours.qsize() < 2 or conn.info.transaction_status != TransactionStatus.IDLE:
        return readings_frame(read_hours(conn, hours))
    with ExitStack() as stack:
        conns = [conn, *(stack.enter_context(sibling(conn)) for _ in range(min(readers, hours.qsize()) - 1))]
        with ThreadPoolExecutor(len(conns)) as pool:
            parts = list(pool.map(read_hours, conns, [hours] * len(conns)))
    return readings_frame([series for part in parts for series in part])


def readings_frame(series: Sequence[Series]) -> pl.DataFrame:
    """One READ_SCHEMA frame of `series`: the keys repeated by index, not parsed per reading."""
    if not series:
        return pl.DataFrame(schema=READ_SCHEMA)
    keys = pl.DataFrame([key for key, _, _ in series], schema=list(SERIES_KEY), orient="row")
    index = pl.Series(np.repeat(np.arange(len(series), dtype=np.uint32), [len(times) for _, times, _ in series]))
    times = np.concatenate([times for _, times, _ in series]) + POSTGRES_EPOCH_US
    values = np.concatenate([values for _, _, values in series])
    frame = keys.select(pl.col(name).cast(pl.Categorical()).gather(index) for name in SERIES_KEY)
    return frame.with_columns(time=pl.Series(times).cast(READ_SCHEMA["time"]), value=pl.Series(values)).select(
        READ_SCHEMA.keys()
    )


MARK_MATERIALISED = """
    INSERT INTO analytics.agg_materialised_hours (hour_start, as_of, materialised_at)
    SELECT hour, %(as_of)s, now()
    FROM generate_series(%(first)s::timestamptz, %(last)s::timestamptz, interval '1 hour') AS hour
    ON CONFLICT (hour_start) DO UPDATE
    SET as_of = excluded.as_of, materialised_at = excluded.materialised_at,
        version = nextval('analytics.agg_materialised_version')"""


DAY_S = 86400
# The days [lo, hi) of agg_daily (sql/14) rebuilt from the hourly buckets stored, and marked rolled up.
REFRESH_DAYS = (
    "DELETE FROM analytics.agg_daily WHERE bucket_start >= %(lo)s AND bucket_start < %(hi)s",
    """INSERT INTO analytics.agg_daily (bucket_start, tenant_id, factory_id, machine_id, sensor_id, metric,
                                    count_n, sum_v, min_v, max_v, sumsq_v, first_v, last_v)
    SELECT date_bin(INTERVAL '1 day', bucket_start, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
           tenant_id, factory_id, machine_id, sensor_id, metric,
           sum(count_n)::bigint, sum(sum_v), min(min_v), max(max_v),
           sum((count_n - 1) * analytics.sq(coalesce(stddev_v, 0)) + count_n * analytics.sq(avg_v)),
           (array_agg(first_v ORDER BY bucket_start))[1], (array_agg(last_v ORDER BY bucket_start DESC))[1]
    FROM analytics.analytics_agg
    WHERE window_s = 3600 AND bucket_start >= %(lo)s AND bucket_start < %(hi)s
    GROUP BY 1, 2, 3, 4, 5, 6""",
    """INSERT INTO analytics.agg_daily_days (day_start, rolled_at)
    SELECT day, now()
    FROM generate_series(%(lo)s::timestamptz, %(hi)s::timestamptz - interval '1 day', interval '1 day') AS day
    ON CONFLICT (day_start) DO UPDATE SET rolled_at = excluded.rolled_at""",
)


def refresh_days(cur: psycopg.Cursor, start: datetime, end: datetime) -> None:
    """Rebuild the daily rows of every day [start, end) touches from the hours stored (sql/14), so
    a year at 86400 s reads 365 rows a series instead of rolling up 8760. Called in the transaction
    that rewrote the hours: a day is never out of step with them."""
    days = {"lo": floor_to(start, DAY_S), "hi": ceil_to(end, DAY_S)}
    for statement in REFRESH_DAYS:
        cur.execute(statement, days)


def replace_aggregates(
    conn: psycopg.Connection,
    aggregates: pl.DataFrame,
    windows: Sequence[int],
    start: datetime,
    end: datetime,
    as_of: datetime | None = None,
) -> int:
    """Delete every bucket of `windows` overlapping [start, end) and COPY `aggregates` in its place,
    in one transaction; returns the rows deleted.

    With `as_of` (when the read of the readings began), the whole hours of [start, end) are recorded
    in `analytics.agg_materialised_hours` in the same transaction, so `/v1/agg` never sees the new
    buckets without knowing they are final, nor the reverse; the days they touch are rebuilt in
    `analytics.agg_daily` in it too."""
    deleted = 0
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, "analytics_agg")
        for window_s in windows:
            cur.execute(
                "DELETE FROM analytics.analytics_agg WHERE window_s = %s AND bucket_start >= %s AND bucket_start < %s",
                (window_s, floor_to(start, window_s), ceil_to(end, window_s)),
            )
            deleted += cur.rowcount
        # in primary-key order: the three indexes take sorted keys ~2x faster than the group-by's order
        copy_rows(cur, "analytics_agg", aggregates.sort(*SERIES_KEY, "window_s", "bucket_start"), AGG_COLUMNS)
        first, last = ceil_to(start, 3600), floor_to(end, 3600) - timedelta(hours=1)
        if as_of is not None and first <= last:
            cur.execute(MARK_MATERIALISED, {"as_of": as_of, "first": first, "last": last})
        if 3600 in windows:
            refresh_days(cur, start, end)
    return deleted


def chunks(start: datetime, end: datetime, hours: int) -> Iterator[tuple[datetime, datetime]]:
    """[start, end) in pieces of at most `hours` hours."""
    step = timedelta(hours=hours)
    while start < end:
        yield start, min(start + step, end)
        start += step


def recompute_aggregates(
    conn: psycopg.Connection, windows: Sequence[int], start: datetime, end: datetime
) -> AggregateRun:
    """Recompute the aggregates of the hours [start, end) from raw readings (one transaction)."""
    run = AggregateRun(start, end)
    began = time.perf_counter()
    read_start, read_end = covering_range(start, end, windows)
    # Every reading committed before this moment is in the buckets written below (each COPY's
    # snapshot is taken after it): the stored buckets are final for anything ending by then.
    as_of = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    readings = canonical_order(read_readings(conn, read_start, read_end))
    run.seconds["read"] = time.perf_counter() - began
    began = time.perf_counter()
    aggregates = window_aggregates(readings.lazy(), windows, start=start, end=end).collect()
    run.seconds["transform"] = time.perf_counter() - began
    began = time.perf_counter()
    run.deleted = replace_aggregates(conn, aggregates, windows, start, end, as_of)
    run.seconds["write"] = time.perf_counter() - began
    run.readings = readings.height
    run.rows = aggregates.height
    run.by_window = dict(aggregates.group_by("window_s").len().sort("window_s").iter_rows())
    return run
