"""Window aggregates of a range of hours: read the readings of every bucket the hours touch,
aggregate in Polars, replace those buckets in one transaction (`recompute_aggregates`); or, for the
drain service's finaliser, only the buckets of an hour that closed or got readings since its last
run (`finalise_hour`), so a final bucket costs its own readings, not the hour's so far."""

from __future__ import annotations

import math
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

from analytics_platform.ingest.store import OLDEST_WRITER, copy_rows
from analytics_platform.results.frames import binary_array, lock_results, sibling
from analytics_platform.transforms.window_aggregates import (
    AGG_COLUMNS,
    COMBINED_M2,
    DAY_OF_HOURS,
    GROUP_MEAN,
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
    # `finalise_hour`'s: per window, the buckets that closed since the last run (every series') and
    # the late ones (a series' bucket each), and the position it moved to
    incremental: bool = False
    buckets: dict[int, int] = field(default_factory=dict)
    late: dict[int, int] = field(default_factory=dict)
    position: datetime | None = None
    # the smallest window's part of a `finalise_hour` run, written (and final) before the rest
    ahead: AggregateRun | None = None


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
    return decode_series(rows)


def decode_series(rows: Sequence[tuple]) -> pl.DataFrame:
    """READ_SCHEMA readings from rows of a series key and its times and values (`binary_array`s)."""
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
    SET as_of = excluded.as_of, materialised_at = excluded.materialised_at, window_as_of = '{}'::jsonb,
        version = nextval('analytics.agg_materialised_version')"""


# (as_of, position): every reading committed before as_of is in a read begun after this statement,
# and every reading ingested before position is committed (ingest/store.py OLDEST_WRITER: position
# is the start of the oldest transaction that may still write raw rows, at most this statement's
# transaction start). The live judges find new rows the same way (results/live_detection.py), with a
# cap on the wait; a finaliser waits for a long writer, never skips it.
SETTLED = f"SELECT clock_timestamp(), least(now(), {OLDEST_WRITER})"
# Written with the hours' marks (sql/24): the readings the hours' stored buckets hold.
MARK_POSITION = """
    INSERT INTO analytics.agg_finalise_positions (hour_start, position, closed_until, windows, version, updated_at)
    SELECT hour_start, %(position)s, %(closed)s, %(windows)s, version, now()
    FROM analytics.agg_materialised_hours WHERE hour_start >= %(first)s AND hour_start <= %(last)s
    ON CONFLICT (hour_start) DO UPDATE
    SET position = excluded.position, closed_until = excluded.closed_until, windows = excluded.windows,
        version = excluded.version, updated_at = excluded.updated_at"""


DAY_S = 86400
# The days [lo, hi) of agg_daily (sql/14) rebuilt from the hourly buckets stored, and marked rolled up.
REFRESH_DAYS = (
    "DELETE FROM analytics.agg_daily WHERE bucket_start >= %(lo)s AND bucket_start < %(hi)s",
    f"""INSERT INTO analytics.agg_daily (bucket_start, tenant_id, factory_id, machine_id, sensor_id, metric,
                                    count_n, sum_v, min_v, max_v, sumsq_v, m2_v, first_v, last_v)
    SELECT {DAY_OF_HOURS.format(series="tenant_id, factory_id, machine_id, sensor_id, metric")},
           sum((count_n - 1) * analytics.sq(coalesce(stddev_v, 0)) + count_n * analytics.sq(avg_v)),
           {COMBINED_M2},
           (array_agg(first_v ORDER BY bucket_start))[1], (array_agg(last_v ORDER BY bucket_start DESC))[1]
    FROM (SELECT a.*, (count_n - 1) * analytics.sq(coalesce(stddev_v, 0)) AS m2_v,
                 {GROUP_MEAN.format(bin="day", series="tenant_id, factory_id, machine_id, sensor_id, metric")}
          FROM (SELECT *, date_bin(INTERVAL '1 day', bucket_start, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS day
                FROM analytics.analytics_agg
                WHERE window_s = 3600 AND bucket_start >= %(lo)s AND bucket_start < %(hi)s) AS a) AS hours
    GROUP BY day, tenant_id, factory_id, machine_id, sensor_id, metric""",
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
    position: datetime | None = None,
) -> int:
    """Delete every bucket of `windows` overlapping [start, end) and COPY `aggregates` in its place,
    in one transaction; returns the rows deleted.

    With `as_of` (when the read of the readings began), the whole hours of [start, end) are recorded
    in `analytics.agg_materialised_hours` in the same transaction, so `/v1/agg` never sees the new
    buckets without knowing they are final, nor the reverse; the days they touch are rebuilt in
    `analytics.agg_daily` in it too. With `position` too (`SETTLED` before the read), the hours'
    finaliser positions (sql/24) say so, so the finaliser's next run of an hour starts from here."""
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
            if position is not None:
                marks = {"position": position, "closed": as_of, "windows": sorted(set(windows))}
                cur.execute(MARK_POSITION, {**marks, "first": first, "last": last})
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
    # snapshot is taken after it): the stored buckets are final for anything ending by then. So is
    # every reading ingested before `position`: the finaliser's next run starts there.
    as_of, position = conn.execute(SETTLED).fetchone()
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
    run.deleted = replace_aggregates(conn, aggregates, windows, start, end, as_of, position)
    run.seconds["write"] = time.perf_counter() - began
    run.rows = aggregates.height
    run.by_window = dict(aggregates.group_by("window_s").len().sort("window_s").iter_rows())
    return run


# An hour's finaliser state (sql/24) and what makes it unusable: another run wrote the hour since
# (its version moved), or raw readings the buckets may hold were re-derived (deleted and written
# again: a reading deleted leaves no `ingested_at` behind) since the position.
_POSITION = """
    SELECT p.position, p.closed_until, p.windows, p.version, m.version,
           EXISTS (SELECT 1 FROM analytics.raw_rederivations r
                   WHERE r.raw_table = %(raw_table)s AND r.hour >= %(lo)s AND r.hour < %(hi)s
                     AND r.done_at >= p.position)
    FROM analytics.agg_finalise_positions p
    LEFT JOIN analytics.agg_materialised_hours m USING (hour_start)
    WHERE p.hour_start = %(hour)s"""
# The series and times (floored to `step`, a divisor of every window) of the readings ingested in
# [since, until) that a bucket of any window overlapping the hour may hold: what new readings touched.
_TOUCHED = """
    SELECT DISTINCT tenant_id, factory_id, machine_id, sensor_id, metric,
           date_bin(make_interval(secs => %(step)s), time, TIMESTAMPTZ '1970-01-01 00:00:00+00')
    FROM analytics.raw_sensor_readings
    WHERE ingested_at >= %(since)s AND ingested_at < %(until)s AND time >= %(lo)s AND time < %(hi)s"""
_SERIES_ARRAYS = "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]"
_SERIES_MATCH = " AND ".join(f"r.{k} = d.{k}" for k in SERIES_KEY)
# The readings of given series in given ranges, one row per series as READINGS_QUERY's (the ranges
# of a series are disjoint: no reading comes twice).
_SERIES_READINGS = f"""
    SELECT r.tenant_id, r.factory_id, r.machine_id, r.sensor_id, r.metric,
           array_send(array_agg(r.time)), array_send(array_agg(r.value))
    FROM unnest({_SERIES_ARRAYS}, %s::timestamptz[], %s::timestamptz[]) AS d({", ".join(SERIES_KEY)}, lo, hi)
    JOIN analytics.raw_sensor_readings r ON {_SERIES_MATCH} AND r.time >= d.lo AND r.time < d.hi
    GROUP BY 1, 2, 3, 4, 5"""
_DELETE_SERIES_BUCKETS = f"""
    DELETE FROM analytics.analytics_agg r
    USING unnest({_SERIES_ARRAYS}, %s::integer[], %s::timestamptz[])
          AS d({", ".join(SERIES_KEY)}, window_s, bucket_start)
    WHERE {_SERIES_MATCH} AND r.window_s = d.window_s AND r.bucket_start = d.bucket_start"""
_ADVANCE = """
    UPDATE analytics.agg_materialised_hours
    SET as_of = greatest(as_of, %(as_of)s), materialised_at = now(),
        version = nextval('analytics.agg_materialised_version')
    WHERE hour_start = %(hour)s AND version = %(version)s
    RETURNING version"""
# The smallest window's buckets written ahead of the rest (sql/27): that window's own mark moves, the
# hour's `as_of` and the position do not (the rest of the run still owes the other windows' buckets).
_ADVANCE_WINDOW = """
    UPDATE analytics.agg_materialised_hours
    SET window_as_of = window_as_of || jsonb_build_object(
            %(window)s::text, greatest((window_as_of ->> %(window)s::text)::timestamptz, %(as_of)s)),
        materialised_at = now(), version = nextval('analytics.agg_materialised_version')
    WHERE hour_start = %(hour)s AND version = %(version)s
    RETURNING version"""
_KEEP_VERSION = """
    UPDATE analytics.agg_finalise_positions SET version = %(version)s, updated_at = now()
    WHERE hour_start = %(hour)s"""
_MOVE = """
    UPDATE analytics.agg_finalise_positions
    SET position = %(position)s, closed_until = greatest(closed_until, %(closed)s), version = %(version)s,
        updated_at = now()
    WHERE hour_start = %(hour)s"""

Series = tuple[str, str, str, str, str]
Span = tuple[datetime, datetime]


@dataclass
class Finalisation:
    """What a finaliser run rewrites: every series' buckets that closed since the last run (`closed`,
    window -> starts), and the buckets of single series that closed earlier and got readings since
    (`late`, series -> window -> starts; none of them in `closed`)."""

    closed: dict[int, list[datetime]]
    late: dict[Series, dict[int, list[datetime]]]

    def split(self, window_s: int) -> tuple[Finalisation, Finalisation]:
        """The buckets of `window_s`, and those of every other window."""
        first = Finalisation(
            {w: s for w, s in self.closed.items() if w == window_s},
            {k: {window_s: b[window_s]} for k, b in self.late.items() if window_s in b},
        )
        rest = Finalisation(
            {w: s for w, s in self.closed.items() if w != window_s},
            {k: o for k, b in self.late.items() if (o := {w: s for w, s in b.items() if w != window_s})},
        )
        return first, rest

    def late_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for buckets in self.late.values():
            for window_s, starts in buckets.items():
                counts[window_s] = counts.get(window_s, 0) + len(starts)
        return counts


def buckets_to_finalise(
    windows: Sequence[int],
    hour: datetime,
    closed_until: datetime,
    closed_by: datetime,
    touched: Sequence[tuple[Series, datetime]],
) -> Finalisation:
    """The buckets overlapping `hour` that a finaliser run at `closed_by` rewrites: those that closed
    since the last run (ends in (closed_until, closed_by]), for every series, and for each series
    with readings ingested since (`touched`: its series and a time), those of its buckets that closed
    by either moment and hold one (late, duplicated or re-sent readings land here). A bucket still
    open is left to /v1/agg's provisional answer.

    Why every series for the newly closed: the previous run left an open bucket as an earlier run
    stored it, so it is stale once it closes whether or not a reading arrived since. Why one series
    for a late reading: an edge agent's buffered hour touches every minute of one machine's series,
    and re-reading every series of those minutes would cost the hour."""
    hour_end = hour + timedelta(hours=1)
    limit = max(closed_until, closed_by)
    closed: dict[int, list[datetime]] = {}
    late: dict[Series, dict[int, list[datetime]]] = {}
    for window_s in sorted(set(windows)):
        step = timedelta(seconds=window_s)
        starts = []
        bucket = floor_to(hour, window_s)
        while bucket < hour_end:
            if closed_until < bucket + step <= closed_by:
                starts.append(bucket)
            bucket += step
        closed[window_s] = starts
        done = set(starts)
        for series, moment in touched:
            start = floor_to(moment, window_s)
            if start in done or not (start < hour_end and start + step > hour and start + step <= limit):
                continue
            late.setdefault(series, {}).setdefault(window_s, [])
            if start not in late[series][window_s]:
                late[series][window_s].append(start)
    for buckets in late.values():
        for starts in buckets.values():
            starts.sort()
    return Finalisation(closed, late)


def spans(buckets: dict[int, list[datetime]]) -> list[Span]:
    """The buckets' time ranges merged: what to read so that each bucket has all its readings."""
    ranges = sorted((s, s + timedelta(seconds=w)) for w, starts in buckets.items() for s in starts)
    merged: list[Span] = []
    for lo, hi in ranges:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def without(ranges: list[Span], taken: list[Span]) -> list[Span]:
    """`ranges` less the parts inside `taken` (both merged and sorted): a series' late buckets are
    read where the newly closed buckets (read for every series) are not, so no reading comes twice."""
    left = []
    for lo, hi in ranges:
        for cut_lo, cut_hi in taken:
            if cut_hi <= lo or cut_lo >= hi:
                continue
            if cut_lo > lo:
                left.append((lo, cut_lo))
            lo = max(lo, cut_hi)
            if lo >= hi:
                break
        if lo < hi:
            left.append((lo, hi))
    return left


def read_finalisation(conn: psycopg.Connection, plan: Finalisation) -> pl.DataFrame:
    """Every reading of every bucket `plan` rewrites, in canonical_order."""
    taken = spans(plan.closed)
    frames = [pl.DataFrame(schema=READ_SCHEMA)]
    for lo, hi in taken:
        frames.extend(iter_readings(conn, lo, hi))
    ranges = [(series, lo, hi) for series, buckets in plan.late.items() for lo, hi in without(spans(buckets), taken)]
    if ranges:
        columns = [list(column) for column in zip(*((*series, lo, hi) for series, lo, hi in ranges), strict=True)]
        with conn.cursor(binary=True) as cur:
            frames.append(decode_series(cur.execute(_SERIES_READINGS, columns).fetchall()))
    return canonical_order(pl.concat(frames))


def finalise_hour(
    conn: psycopg.Connection,
    windows: Sequence[int],
    hour: datetime,
    closed_by: datetime,
    before_write: Callable[[], object] | None = None,
    on_ahead: Callable[[AggregateRun], object] | None = None,
) -> AggregateRun | str:
    """Make the buckets of `hour` that closed by `closed_by` final by rewriting only what changed
    since the hour's last run (`buckets_to_finalise`), each from all of its readings, with the same
    transform as `recompute_aggregates`: the stored rows end up as one full run would write them.
    Returns the run, or why the whole hour must be recomputed instead (the caller does it).

    New readings are those ingested between the hour's position and `SETTLED`; the position moves
    in the transaction that writes the buckets, so a crash re-does a run and never skips readings.
    The hour is marked final up to min(`closed_by`, SETTLED) (/v1/agg's `as_of`): every bucket
    ending by then holds every reading committed before it. Whenever the state cannot be trusted
    (no position, other windows, another run wrote the hour since, a re-derivation, a position
    older than the hour) or the hour's last bucket closed (its 3600 s bucket reads the hour anyway,
    and a full run settles every window), the answer is a reason for a full run.

    When a larger window's bucket closes with the smallest window's (10:05 ends a 60 s and a 300 s
    bucket) or the hour's last bucket closed, the smallest window's buckets are written ahead, in a
    transaction of their own with that window's own mark (sql/27; `on_ahead` gets that part once it
    committed): otherwise the minute's bucket waited for five minutes of readings (or the whole
    hour's) to be read before it was final. The rest of the run uses the same position and
    readings ingested since, so the two parts together are exactly the one run they replace; a
    crash between them leaves the position where it was, and the next run redoes both."""
    windows = sorted(set(windows))
    hour_end = hour + timedelta(hours=1)
    run = AggregateRun(hour, hour_end, incremental=True)
    lo, hi = covering_range(hour, hour_end, windows)
    settled = conn.execute(SETTLED).fetchone()[1]
    state = conn.execute(
        _POSITION, {"hour": hour, "raw_table": "raw_sensor_readings", "lo": floor_to(lo, HOUR_S), "hi": hi}
    ).fetchone()
    if state is None:
        return "no finaliser position for the hour"
    position, closed_until, stored_windows, version, current_version, rederived = state
    if sorted(stored_windows) != windows:
        return f"the stored buckets are of windows {sorted(stored_windows)}"
    if current_version != version:
        return "another run wrote the hour since"
    if rederived:
        return "raw readings of the hour were re-derived"
    if position < hour:
        return "the position is older than the hour"
    params = {"step": math.gcd(*windows), "since": position, "until": settled, "lo": lo, "hi": hi}
    touched = [(row[:5], row[5]) for row in conn.execute(_TOUCHED, params).fetchall()]
    plan = buckets_to_finalise(windows, hour, closed_until, closed_by, touched)
    last = closed_by >= hour_end
    ahead, rest = plan.split(windows[0])
    try:
        if last or any(rest.closed.values()):
            part = AggregateRun(hour, hour_end, incremental=True)
            version = _finalise_part(conn, part, ahead, windows[:1], hour, closed_by, settled, version, windows[0])
            part.buckets = {w: len(starts) for w, starts in ahead.closed.items()}
            part.late = ahead.late_counts()
            run.ahead = part
            if on_ahead is not None:
                on_ahead(part)
            if last:
                return "the hour's last bucket closed"
            plan, windows = rest, windows[1:]
        _finalise_part(conn, run, plan, windows, hour, closed_by, settled, version, before_write=before_write)
    except _Superseded:
        return "another run wrote the hour while this one read"
    run.buckets = {w: len(s) for w, s in sorted({**rest.closed, **ahead.closed}.items())}
    run.late = {w: n for w, n in sorted({**rest.late_counts(), **ahead.late_counts()}.items())}
    run.position = settled
    return run


def _finalise_part(
    conn: psycopg.Connection,
    run: AggregateRun,
    plan: Finalisation,
    windows: Sequence[int],
    hour: datetime,
    closed_by: datetime,
    settled: datetime,
    version: int,
    ahead: int | None = None,
    before_write: Callable[[], object] | None = None,
) -> int:
    """Read, transform and write the buckets of `plan` (of `windows`), adding to `run`'s figures;
    the hour's new version. `ahead`: the window written ahead of the rest (`_write_finalised`)."""
    began = time.perf_counter()
    readings = read_finalisation(conn, plan)
    run.readings += readings.height
    waited = time.perf_counter()
    aggregates = wanted(window_aggregates(readings.lazy(), windows).collect(), plan)
    done = time.perf_counter()
    if before_write is not None:
        before_write()
    written = time.perf_counter()
    deleted, version = _write_finalised(conn, aggregates, plan, hour, closed_by, settled, version, ahead)
    for name, seconds in (
        ("read", waited - began),
        ("transform", done - waited),
        ("write", time.perf_counter() - written),
    ):
        run.seconds[name] = run.seconds.get(name, 0.0) + seconds
    run.deleted += deleted
    run.rows += aggregates.height
    for window_s, rows in aggregates.group_by("window_s").len().sort("window_s").iter_rows():
        run.by_window[window_s] = run.by_window.get(window_s, 0) + rows
    return version


def wanted(aggregates: pl.DataFrame, plan: Finalisation) -> pl.DataFrame:
    """The rows of the buckets `plan` rewrites (the transform also made partial buckets of the
    ranges' edges and of other windows: those are not written)."""
    key_types = {k: pl.String() for k in SERIES_KEY}
    frame = aggregates.with_columns(pl.col(k).cast(pl.String) for k in SERIES_KEY)
    moment = READING_SCHEMA["time"]
    closed = pl.DataFrame(
        [(w, s) for w, starts in plan.closed.items() for s in starts],
        schema={"window_s": pl.Int32(), "bucket_start": moment},
        orient="row",
    )
    late = pl.DataFrame(
        [(*series, w, s) for series, buckets in plan.late.items() for w, starts in buckets.items() for s in starts],
        schema={**key_types, "window_s": pl.Int32(), "bucket_start": moment},
        orient="row",
    )
    return pl.concat(
        [
            frame.join(closed, on=["window_s", "bucket_start"], how="semi"),
            frame.join(late, on=[*SERIES_KEY, "window_s", "bucket_start"], how="semi"),
        ]
    )


class _Superseded(Exception):
    """The hour's version moved between a finaliser run's read of its state and its write."""


def _write_finalised(
    conn: psycopg.Connection,
    aggregates: pl.DataFrame,
    plan: Finalisation,
    hour: datetime,
    closed_by: datetime,
    settled: datetime,
    version: int,
    ahead: int | None = None,
) -> tuple[int, int]:
    """`finalise_hour`'s write, one transaction under the writers' lock: the buckets, the hour's
    mark and the position together, or nothing if another run wrote the hour meanwhile (its buckets
    may hold readings this run's read did not, so this one must not overwrite them). With `ahead`
    (a window whose buckets are written before the rest), that window's mark only, and the position
    stays. Returns the rows deleted and the hour's new version."""
    deleted = 0
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, "analytics_agg")
        marks = {"hour": hour, "version": version, "as_of": min(closed_by, settled), "window": ahead}
        advanced = cur.execute(_ADVANCE if ahead is None else _ADVANCE_WINDOW, marks).fetchone()
        if advanced is None:
            raise _Superseded
        for window_s, starts in plan.closed.items():
            if starts:
                cur.execute(
                    "DELETE FROM analytics.analytics_agg WHERE window_s = %s AND bucket_start = ANY(%s)",
                    (window_s, starts),
                )
                deleted += cur.rowcount
        late = [
            (*series, w, s) for series, buckets in plan.late.items() for w, starts in buckets.items() for s in starts
        ]
        if late:
            cur.execute(_DELETE_SERIES_BUCKETS, [list(column) for column in zip(*late, strict=True)])
            deleted += cur.rowcount
        copy_rows(cur, "analytics_agg", aggregates.sort(*SERIES_KEY, "window_s", "bucket_start"), AGG_COLUMNS)
        if ahead is None:
            cur.execute(_MOVE, {"hour": hour, "position": settled, "closed": closed_by, "version": advanced[0]})
        else:
            cur.execute(_KEEP_VERSION, {"hour": hour, "version": advanced[0]})
        days = list(plan.closed.get(HOUR_S, []))
        days += [s for buckets in plan.late.values() for s in buckets.get(HOUR_S, [])]
        if days:
            refresh_days(cur, min(days), max(days) + timedelta(hours=1))
    return deleted, advanced[0]
