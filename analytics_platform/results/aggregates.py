"""Window aggregates of a range of hours: read the readings of every bucket the hours touch,
aggregate in Polars, replace those buckets in one transaction."""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
# Connections reading a range's hours at once: the read is the server's work (scan, group, build the
# arrays), and PostgreSQL runs a statement on one core.
READERS = 2
# timestamptz on the wire: microseconds since 2000-01-01 UTC
POSTGRES_EPOCH_US = 946_684_800_000_000
HOUR_S = 3600


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


def epoch_hours(start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """[start, end) cut at whole hours of the epoch: a bucket of a window dividing an hour is in one piece."""
    cut = floor_to(start, HOUR_S)
    while cut < end:
        yield max(cut, start), min(cut + timedelta(hours=1), end)
        cut += timedelta(hours=1)


def read_hour(conns: queue.SimpleQueue, start: datetime, end: datetime) -> pl.DataFrame:
    """The readings of [start, end) on a connection taken from `conns` (and given back).

    Parallel plans are off for the read: on the 2-core machine they were slower than one process
    per connection (PostgreSQL merging partial array_agg states), and the connections are the
    parallelism here. SET LOCAL in a block rolled back leaves a caller's transaction as it was."""
    conn = conns.get()
    try:
        with conn.transaction(force_rollback=True), conn.cursor(binary=True) as cur:
            cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            rows = cur.execute(READINGS_QUERY, (start, end)).fetchall()
    finally:
        conns.put(conn)
    if not rows:
        return pl.DataFrame(schema=READ_SCHEMA)
    keys = pl.DataFrame([row[:-2] for row in rows], schema=list(SERIES_KEY), orient="row")
    times = [binary_array(row[-2], ">i8") for row in rows]
    values = np.concatenate([binary_array(row[-1], ">f8") for row in rows])
    index = pl.Series(np.repeat(np.arange(len(rows), dtype=np.uint32), [len(t) for t in times]))
    frame = keys.select(pl.col(name).cast(pl.Categorical()).gather(index) for name in SERIES_KEY)
    return frame.with_columns(
        time=pl.Series(np.concatenate(times) + POSTGRES_EPOCH_US).cast(READ_SCHEMA["time"]), value=pl.Series(values)
    ).select(READ_SCHEMA.keys())


def iter_readings(
    conn: psycopg.Connection, start: datetime, end: datetime, readers: int = READERS
) -> Iterator[pl.DataFrame]:
    """The readings of [start, end) in READ_SCHEMA, an epoch hour (`epoch_hours`) at a time, in order.

    Hours are read ahead on up to `readers` connections (`conn` and siblings of it) in threads, at
    most one hour ahead of each: psycopg waits for the server without the GIL, so the caller's
    Polars work on one hour overlaps the server's on the next ones, and memory holds a few hours,
    not the range. A `conn` inside a transaction reads alone, so that it sees what it wrote."""
    hours = list(epoch_hours(start, end))
    alone = conn.info.transaction_status != TransactionStatus.IDLE
    count = 1 if alone else max(1, min(readers, len(hours)))
    with ExitStack() as stack:
        conns: queue.SimpleQueue = queue.SimpleQueue()
        conns.put(conn)
        for _ in range(count - 1):
            conns.put(stack.enter_context(sibling(conn)))
        pool = stack.enter_context(ThreadPoolExecutor(count))
        ahead: deque[Future[pl.DataFrame]] = deque()
        for hour_start, hour_end in hours:
            ahead.append(pool.submit(read_hour, conns, hour_start, hour_end))
            if len(ahead) > count:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def read_readings(conn: psycopg.Connection, start: datetime, end: datetime, readers: int = READERS) -> pl.DataFrame:
    """All readings of [start, end) as one READ_SCHEMA frame (see `iter_readings`)."""
    return pl.concat([pl.DataFrame(schema=READ_SCHEMA), *iter_readings(conn, start, end, readers)])


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
    conn: psycopg.Connection,
    windows: Sequence[int],
    start: datetime,
    end: datetime,
    before_write: Callable[[], object] | None = None,
) -> AggregateRun:
    """Recompute the aggregates of the hours [start, end) from raw readings (one transaction).

    `before_write` is called once the buckets are computed, just before they are written: the write
    is PostgreSQL's work on one core, so a caller's own CPU work started then (the asset's checks
    importing Great Expectations) runs beside it instead of after it or against the transform."""
    run = AggregateRun(start, end)
    read_start, read_end = covering_range(start, end, windows)
    # Every reading committed before this moment is in the buckets written below (each read's
    # snapshot is taken after it): the stored buckets are final for anything ending by then.
    as_of = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    # A bucket of a window dividing an hour is all in one epoch hour: those windows are computed an
    # hour at a time, as the hours arrive (the same numbers: a bucket's terms are in canonical_order
    # whatever else the frame holds). Longer windows need the whole range in memory, as one frame.
    hourly = sorted({w for w in windows if HOUR_S % w == 0})
    longer = sorted({w for w in windows if HOUR_S % w != 0})
    parts, kept = [], []
    run.seconds = {"read": 0.0, "transform": 0.0}
    waited = time.perf_counter()
    for hour in iter_readings(conn, read_start, read_end):
        began = time.perf_counter()
        run.seconds["read"] += began - waited
        readings = canonical_order(hour)
        run.readings += readings.height
        if hourly:
            parts.append(window_aggregates(readings.lazy(), hourly, start=start, end=end).collect())
        if longer:
            kept.append(readings)
        waited = time.perf_counter()
        run.seconds["transform"] += waited - began
    if longer:
        readings = canonical_order(pl.concat([pl.DataFrame(schema=READ_SCHEMA), *kept]))
        parts.append(window_aggregates(readings.lazy(), longer, start=start, end=end).collect())
        del kept, readings
        run.seconds["transform"] += time.perf_counter() - waited
    empty = window_aggregates(pl.LazyFrame(schema=READ_SCHEMA), windows).collect()
    aggregates = pl.concat([empty, *parts])
    if before_write is not None:
        before_write()
    began = time.perf_counter()
    run.deleted = replace_aggregates(conn, aggregates, windows, start, end, as_of)
    run.seconds["write"] = time.perf_counter() - began
    run.rows = aggregates.height
    run.by_window = dict(aggregates.group_by("window_s").len().sort("window_s").iter_rows())
    return run
