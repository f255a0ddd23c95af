"""GET /v1/agg: window aggregates of one machine and metric, from the stored window asked for, or
rolled up from the coarsest stored window that divides it (on TimescaleDB, whole days come from the
`analytics_agg_daily` continuous aggregate).

Live buckets: a stored window's bucket that the hourly asset has not made final yet (the open
bucket, and closed ones whose hour has not been materialised since the bucket ended) is computed on
read from raw readings by the asset's own transform (`window_aggregates`, in `canonical_order`) and
marked `provisional`, but only within AGG_PROVISIONAL_HOURS of now: older buckets are served as
stored, whatever their state. Rollups are never computed from raw readings; theirs are marked
provisional while they hold an hour of that horizon that is not final. On plain PostgreSQL whole days
come from `analytics.agg_daily`, kept by the pipeline with the hours (sql/14).

Caching (api/caching.py): an answer whose buckets are all final carries an ETag keyed by the
materialisation of the hours it reads, checked before the buckets are read; one holding a
provisional bucket is `no-store`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import polars as pl
import psycopg
from fastapi import APIRouter, Query, Request, Response

from analytics_platform.api import caching, stages
from analytics_platform.api.auth import Caller, tenant_scope
from analytics_platform.api.errors import invalid
from analytics_platform.api.keys import Principal
from analytics_platform.api.metric_catalog import known_metric
from analytics_platform.api.models import ERRORS, NOT_MODIFIED, OTHER_TENANT, AggPage
from analytics_platform.api.params import (
    Cursor,
    End,
    Identifier,
    Limit,
    OptionalIdentifier,
    Start,
    TenantParam,
    ceil_to,
    floor_to,
    page_limit,
    time_range,
)
from analytics_platform.api.respond import CSV_RESPONSE, keyset, page_response
from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.transforms.window_aggregates import (
    COMBINED_M2,
    DAY_OF_HOURS,
    GROUP_MEAN,
    READING_SCHEMA,
    canonical_order,
    ordered_sum,
    window_aggregates,
)

router = APIRouter(prefix="/v1", tags=["aggregates"])

DAY_S = 86400
MAX_WINDOW_S = 366 * DAY_S
MAX_RANGE_DAYS = 3660  # ten years; API_MAX_BUCKETS bounds the fine windows far sooner
COLUMNS = (
    "bucket_start",
    "bucket_end",
    "window_s",
    "tenant_id",
    "factory_id",
    "machine_id",
    "sensor_id",
    "metric",
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "stddev",
    "first",
    "last",
    "p50",
    "p95",
    "provisional",
)
HOUR = timedelta(hours=1)
# Always in an item, whatever `fields` asks: the bucket and series (the cursor's key) and whether it is final.
KEY_FIELDS = ("bucket_start", "sensor_id", "provisional")
FieldsParam = Annotated[
    str | None,
    Query(
        max_length=500,
        description="Comma-separated columns of each item, e.g. `avg,min,max` (JSON and CSV); bucket_start, "
        "sensor_id and provisional are always there. All columns when omitted.",
    ),
]
_SERIES = """tenant_id = %(tenant_id)s AND factory_id = %(factory_id)s AND machine_id = %(machine_id)s
  AND metric = %(metric)s AND (%(sensor_id)s::text IS NULL OR sensor_id = %(sensor_id)s)"""
_AFTER = "(%(after_time)s::timestamptz IS NULL OR (bucket_start, sensor_id) > (%(after_time)s, %(after_key)s))"

_STORED = f"""
SELECT bucket_start, bucket_end, window_s, tenant_id, factory_id, machine_id, sensor_id, metric,
       count_n AS count, sum_v AS sum, avg_v AS avg, min_v AS min, max_v AS max, stddev_v AS stddev,
       first_v AS first, last_v AS last, p50_v AS p50, p95_v AS p95, false AS provisional
FROM analytics.analytics_agg
WHERE {_SERIES} AND window_s = %(window_s)s
  AND bucket_start >= %(start)s AND bucket_start < %(end)s AND {_AFTER}
  AND NOT (bucket_start = ANY(%(provisional)s::timestamptz[]))
ORDER BY bucket_start, sensor_id
LIMIT %(limit)s
"""

# Source rows: one per stored bucket with n, Σx, min, max, first, last and m2_v = Σ (x - its mean)² (from
# the bucket's sample stddev). The rollup groups them into the requested window and combines their m2 pairwise
# (window_aggregates.COMBINED_M2).
_HOUR_M2 = "(count_n - 1) * analytics.sq(coalesce(stddev_v, 0))"
_DAY_M2 = "coalesce(m2_v, greatest(sumsq_v - analytics.sq(sum_v) / count_n, 0))"  # m2_v: sql/31
# the continuous aggregate's day (sql/33): each hour about its own mean, plus the hours' means about the day's,
# the latter from numeric sums of the means (exact: nothing cancels)
_CAGG_M2 = "m2_within_v + greatest(((count_n * mean_sq_n - mean_sum_n * mean_sum_n) / nullif(count_n, 0))::float8, 0)"
_FROM_STORED = f"""
SELECT bucket_start, sensor_id, count_n, sum_v, min_v, max_v, first_v, last_v, {_HOUR_M2} AS m2_v
FROM analytics.analytics_agg
WHERE {_SERIES} AND window_s = %(source_window_s)s AND bucket_start >= %(lo)s AND bucket_start < %(hi)s
"""
_FROM_DAILY = f"""
SELECT bucket_start, sensor_id, count_n, sum_v, min_v, max_v, first_v, last_v,
       {_CAGG_M2} AS m2_v
FROM analytics.analytics_agg_daily
WHERE {_SERIES} AND bucket_start >= %(lo)s AND bucket_start < %(hi)s
"""
# Daily buckets when every day of the range is in agg_daily: its rows are the answer's buckets, so _ROLLUP's
# sort and grouping of one row per bucket (half of a year's database time) is skipped; the columns are
# _ROLLUP's expressions on a group of one row (whose mean is its group's: m2 + 0), so the answer is the same
# to the bit.
_DAYS_AS_STORED = f"""
SELECT bucket_start, bucket_start + make_interval(secs => %(window_s)s) AS bucket_end,
       %(window_s)s::integer AS window_s, tenant_id, factory_id, machine_id, sensor_id, metric,
       count_n AS count, sum_v AS sum, sum_v / nullif(count_n, 0) AS avg, min_v AS min, max_v AS max,
       CASE WHEN count_n > 1 THEN sqrt(greatest({_DAY_M2}, 0) / (count_n - 1)) END AS stddev,
       first_v AS first, last_v AS last, NULL::float8 AS p50, NULL::float8 AS p95,
       bucket_start + make_interval(secs => %(window_s)s) > %(final_until)s AS provisional
FROM analytics.agg_daily
WHERE {_SERIES} AND bucket_start >= %(lo)s AND bucket_start < %(hi)s AND {_AFTER}
ORDER BY bucket_start, sensor_id
LIMIT %(limit)s
"""
# Whole days on plain PostgreSQL: the days the pipeline rolled up into agg_daily (sql/14) as they are,
# the hours of the others (written by anything but the asset) as _FROM_STORED reads them. Which days are
# rolled up is read in the same statement (one snapshot): the asset rolls a day up in the transaction that
# writes agg_daily, and a day rolled up between two statements was read from both and counted twice.
_FROM_DAYS = f"""
SELECT bucket_start, sensor_id, count_n, sum_v, min_v, max_v, first_v, last_v, {_DAY_M2} AS m2_v
FROM analytics.agg_daily
WHERE {_SERIES} AND bucket_start >= %(lo)s AND bucket_start < %(hi)s
UNION ALL
SELECT {DAY_OF_HOURS.format(series="sensor_id")},
       (array_agg(first_v ORDER BY bucket_start))[1], (array_agg(last_v ORDER BY bucket_start DESC))[1], {COMBINED_M2}
FROM (SELECT a.bucket_start, a.sensor_id, a.count_n, a.sum_v, a.min_v, a.max_v, a.first_v, a.last_v,
             d.day_start AS day, (a.count_n - 1) * analytics.sq(coalesce(a.stddev_v, 0)) AS m2_v,
             {GROUP_MEAN.format(bin="d.day_start", series="a.sensor_id")}
      FROM generate_series(%(lo)s::timestamptz, %(hi)s::timestamptz - INTERVAL '1 day', INTERVAL '1 day')
           AS d(day_start)
      JOIN analytics.analytics_agg AS a
        ON a.bucket_start >= d.day_start AND a.bucket_start < d.day_start + INTERVAL '1 day'
      WHERE {_SERIES} AND a.window_s = 3600
        AND NOT EXISTS (SELECT 1 FROM analytics.agg_daily_days AS r WHERE r.day_start = d.day_start)) AS hours
GROUP BY day, sensor_id
"""
_BIN = "date_bin(make_interval(secs => %(window_s)s), bucket_start, TIMESTAMPTZ '1970-01-01 00:00:00+00')"
_ROLLUP = f"""
WITH src AS ({{source}}),
binned AS (
    SELECT src.*, {_BIN} AS bin, {GROUP_MEAN.format(bin=_BIN, series="sensor_id")}
    FROM src
),
grouped AS (
    SELECT bin AS bucket_start,
           sensor_id,
           sum(count_n)::bigint AS count, {ordered_sum("sum_v")} AS sum, min(min_v) AS min, max(max_v) AS max,
           {COMBINED_M2} AS m2,
           (array_agg(first_v ORDER BY bucket_start))[1] AS first,
           (array_agg(last_v ORDER BY bucket_start DESC))[1] AS last
    FROM binned
    GROUP BY 1, 2
)
SELECT bucket_start, bucket_start + make_interval(secs => %(window_s)s) AS bucket_end,
       %(window_s)s::integer AS window_s, %(tenant_id)s AS tenant_id, %(factory_id)s AS factory_id,
       %(machine_id)s AS machine_id, sensor_id, %(metric)s AS metric, count, sum,
       sum / nullif(count, 0) AS avg, min, max,
       CASE WHEN count > 1 THEN sqrt(greatest(m2, 0) / (count - 1)) END AS stddev,
       first, last, NULL::float8 AS p50, NULL::float8 AS p95,
       bucket_start + make_interval(secs => %(window_s)s) > %(final_until)s AS provisional
FROM grouped
WHERE {{after}}
ORDER BY bucket_start, sensor_id
LIMIT %(limit)s
"""

_READINGS = f"""
SELECT time, tenant_id, factory_id, machine_id, sensor_id, metric, value
FROM analytics.{SensorContract.raw_table}
WHERE {_SERIES} AND time >= %(lo)s AND time < %(hi)s
"""
# Everything an answer's state depends on, in one statement, the request's first (it checks the pooled
# connection too: Database.checked_by): the `as_of` of the hours of the provisional horizon the answer
# reaches (which of its buckets are final; the later of the hour's and the source window's own, sql/27:
# the finaliser writes the smallest window's buckets ahead of the rest), and what a final range's
# answer depends on besides the request: the hours it reads (their count, and the highest version:
# sql/14 draws a new one, in commit order, each time the asset rewrites an hour) and the oldest
# bucket kept of the source window (TimescaleDB's retention drops old chunks without touching those
# hours). An empty range reads no row.
# The whole days of the range are read from their per-day sums (sql/28, kept by triggers with the hours:
# a year's tag reads 365 rows, not 8,760), the hours before the first and after the last whole day as
# they are (tag_days). For whole days on plain PostgreSQL it also counts the days agg_daily holds of the
# range (all of them rolled up: their rows as they are, _DAYS_AS_STORED; a day once rolled up stays so).
_STATE = """
SELECT v.hours, v.version,
       (SELECT min(bucket_start) FROM analytics.analytics_agg WHERE window_s = %(window_s)s) AS oldest,
       (SELECT count(*) FROM analytics.agg_daily_days
        WHERE day_start >= %(rolled_lo)s AND day_start < %(rolled_hi)s) AS rolled,
       m.hour_starts, m.as_ofs
FROM (SELECT coalesce(sum(n), 0) AS hours, coalesce(max(version), 0) AS version
      FROM (SELECT hours AS n, version FROM analytics.agg_materialised_days
            WHERE day_start >= %(day_lo)s AND day_start < %(day_hi)s
            UNION ALL
            SELECT 1, version FROM analytics.agg_materialised_hours
            WHERE hour_start >= %(lo)s AND hour_start < %(day_lo)s
            UNION ALL
            SELECT 1, version FROM analytics.agg_materialised_hours
            WHERE hour_start >= %(day_hi)s AND hour_start < %(hi)s
           ) AS parts) AS v,
     (SELECT array_agg(hour_start) AS hour_starts,
             array_agg(greatest(as_of, (window_as_of ->> %(window_s)s::text)::timestamptz)) AS as_ofs
      FROM analytics.agg_materialised_hours WHERE hour_start >= %(as_of_lo)s AND hour_start < %(as_of_hi)s) AS m
"""


def horizon(now: datetime, hours: int, max_future_s: int) -> tuple[datetime, datetime]:
    """The hours whose buckets may be provisional: the last `hours` whole hours, the current one, and
    those readings may reach ahead of now (CONTRACT_MAX_FUTURE_S)."""
    current = floor_hour(now)
    return current - hours * HOUR, max(current + HOUR, ceil_to(now + timedelta(seconds=max_future_s), 3600))


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def is_final(bucket_start: datetime, bucket_end: datetime, as_of: dict[datetime, datetime]) -> bool:
    """A stored bucket is final when every hour it overlaps was materialised from readings read at
    or after its end (the asset recomputes every bucket overlapping the hours it runs)."""
    hour = floor_hour(bucket_start)
    while hour < bucket_end:
        stamp = as_of.get(hour)
        if stamp is None or stamp < bucket_end:
            return False
        hour += HOUR
    return True


def horizon_buckets(
    window_s: int, first: datetime, end: datetime, lo: datetime, hi: datetime
) -> tuple[datetime, datetime]:
    """The buckets of `window_s` starting in [first, end) that overlap the horizon [lo, hi): they start
    in [the first returned, the second); empty when the second is not after the first."""
    step = timedelta(seconds=window_s)
    return max(ceil_to(first, window_s), ceil_to(lo, window_s) - step), min(end, hi)


def as_of_hours(window_s: int, buckets: tuple[datetime, datetime]) -> tuple[datetime, datetime]:
    """The hours whose `as_of` decides whether those buckets are final (empty for no bucket)."""
    bucket, last = buckets
    if bucket >= last:
        return bucket, bucket
    return floor_hour(bucket), ceil_to(last + timedelta(seconds=window_s), 3600)


def provisional_buckets(
    as_of: dict[datetime, datetime], window_s: int, buckets: tuple[datetime, datetime]
) -> list[datetime]:
    """Starts of the buckets (horizon_buckets) that are not final by the hours' `as_of` (as_of_hours)."""
    step = timedelta(seconds=window_s)
    bucket, last = buckets
    starts = []
    while bucket < last:
        if not is_final(bucket, bucket + step, as_of):
            starts.append(bucket)
        bucket += step
    return starts


def live_buckets(conn: psycopg.Connection, params: dict[str, Any], starts: Sequence[datetime]) -> list[dict]:
    """The buckets starting at `starts` computed from the raw readings, exactly as the asset will."""
    window_s = params["window_s"]
    lo, hi = starts[0], starts[-1] + timedelta(seconds=window_s)
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        rows = cur.execute(_READINGS, {**params, "lo": lo, "hi": hi}).fetchall()
    if not rows:
        return []
    readings = canonical_order(pl.DataFrame(rows, schema=READING_SCHEMA, orient="row"))
    wanted = pl.Series(starts, dtype=READING_SCHEMA["time"])
    after_time, after_key = params["after_time"], params["after_key"]
    frame = (
        window_aggregates(readings.lazy(), [window_s]).filter(pl.col("bucket_start").is_in(wanted.implode())).collect()
    )
    items = []
    for row in frame.iter_rows(named=True):
        if after_time is not None and (row["bucket_start"], row["sensor_id"]) <= (after_time, after_key):
            continue
        items.append(
            {
                "bucket_start": row["bucket_start"],
                "bucket_end": row["bucket_end"],
                "window_s": window_s,
                **{k: row[k] for k in ("tenant_id", "factory_id", "machine_id", "sensor_id", "metric")},
                "count": row["count_n"],
                **{k: row[f"{k}_v"] for k in ("sum", "avg", "min", "max", "stddev", "first", "last", "p50", "p95")},
                "provisional": True,
            }
        )
    return items


def final_until(as_of: dict[datetime, datetime], start: datetime, end: datetime, lo: datetime) -> datetime:
    """For rollups: buckets ending after this moment hold an hour of the horizon that is not final
    (each source bucket is final when its hour was materialised after the source bucket ended), by
    the `as_of` of the hours [lo, end)."""
    hour = max(lo, floor_hour(start))
    while hour < end:
        stamp = as_of.get(hour)
        if stamp is None or stamp < hour + HOUR:
            return hour
        hour += HOUR
    return datetime.max.replace(tzinfo=UTC)


def plan_source(window_s: int, stored: list[int], daily_view: bool) -> tuple[str, int]:
    """How a window is served: ("stored", w) when it is stored; ("continuous_aggregate", 86400)
    for whole days when the daily view exists; else ("rollup", the coarsest stored divisor)."""
    if window_s in stored:
        return "stored", window_s
    if daily_view and window_s % DAY_S == 0 and 3600 in stored:
        return "continuous_aggregate", DAY_S
    divisors = [w for w in stored if window_s % w == 0]
    if not divisors:
        known = ", ".join(str(w) for w in sorted(stored))
        raise invalid(
            "window_s",
            f"window_s must be a stored window ({known}) or a multiple of one, e.g. 86400",
            value=window_s,
        )
    return "rollup", max(divisors)


def daily_view_exists(request: Request) -> bool:
    state = request.app.state
    if getattr(state, "agg_daily_view", None) is None:
        with state.db.connection() as conn:
            row = conn.execute("SELECT to_regclass('analytics.analytics_agg_daily') IS NOT NULL AS ok").fetchone()
        state.agg_daily_view = bool(row["ok"])
    return state.agg_daily_view


def aggregate_stages(
    request: Request,
    caller: Principal,
    factory_id: str,
    machine_id: str,
    metric: str,
    window_s: int,
    start: datetime,
    end: datetime,
    tenant_id: str | None = None,
    sensor_id: str | None = None,
    limit: int = 1000,
    cursor: str | None = None,
    fields: str | None = None,
) -> stages.Steps:
    """The route in stages (api/stages.py): its checks, the state, the decision, the rows, the answer."""
    state = request.app.state
    settings = state.settings
    tenant = tenant_scope(caller, tenant_id, required=True)
    columns = chosen_columns(fields)
    page_limit(limit, settings.api_page_limit_max)
    start, end = time_range(start, end, max_days=MAX_RANGE_DAYS)
    known_metric(state.metric_catalog, state.db, tenant, metric)
    buckets = (end - start) / timedelta(seconds=window_s)
    if buckets > settings.api_max_buckets:
        raise invalid(
            "end",
            f"range holds {int(buckets)} buckets of {window_s} s, more than {settings.api_max_buckets} "
            "(API_MAX_BUCKETS); use a coarser window_s or a shorter range",
            value=end.isoformat(),
        )
    daily = window_s % DAY_S == 0 and daily_view_exists(request)
    source, source_window = plan_source(window_s, list(settings.windows), daily)
    after = keyset(cursor, (datetime, str)) or [None, None]
    params = {
        "tenant_id": tenant,
        "factory_id": factory_id,
        "machine_id": machine_id,
        "metric": metric,
        "sensor_id": sensor_id,
        "window_s": window_s,
        "source_window_s": source_window,
        "start": start,
        "end": end,
        "after_time": after[0],
        "after_key": after[1],
        "limit": limit + 1,
    }
    lo, hi = horizon(state.clock(), settings.agg_provisional_hours, settings.contract_max_future_s)
    if source == "stored":
        near = horizon_buckets(window_s, max(start, after[0] or start), end, lo, hi)
        as_of_lo, as_of_hi = as_of_hours(window_s, near)
    else:
        # a bucket is in the answer when its start is in [start, end); it covers its whole window
        params["lo"] = max(ceil_to(start, window_s), after[0] or start)
        params["hi"] = ceil_to(end, window_s)
        if (params["hi"] - params["lo"]) / timedelta(seconds=source_window) > settings.api_max_buckets * 24:
            raise invalid("end", "range is too long to roll up; use a coarser window_s or a shorter range")
        as_of_lo, as_of_hi = lo, max(lo, params["hi"])
    # The continuous aggregate catches up with a re-materialised hour only at its next refresh, so its
    # answers are tagged by their body; stored windows and rollups of them by what was materialised.
    # The tag is read before the rows: a write in between can only make the body newer than its tag
    # (the next revalidation then gets a 200 with the new tag), never older.
    by_version = source != "continuous_aggregate"
    read_lo, read_hi = floor_hour(start), ceil_to(end + timedelta(seconds=window_s), 3600)
    known = {
        "window_s": source_window,
        "lo": read_lo if by_version else read_hi,
        "hi": read_hi,
        "as_of_lo": as_of_lo,
        "as_of_hi": as_of_hi,
    }
    known["day_lo"], known["day_hi"] = tag_days(known["lo"], known["hi"])
    from_days = source == "rollup" and source_window == 3600 and window_s % DAY_S == 0
    known["rolled_lo"], known["rolled_hi"] = (params["lo"], params["hi"]) if from_days else (read_hi, read_hi)
    now_known = yield stages.StateRead(_STATE, known)
    as_of = dict(zip(now_known["hour_starts"] or (), now_known["as_ofs"] or (), strict=True))
    if source == "stored":
        live = provisional_buckets(as_of, window_s, near)
        final = not live
    else:
        params["final_until"] = final_until(as_of, params["lo"], params["hi"], lo)
        final = params["final_until"] >= params["hi"]
    tag = None
    if final and by_version:
        version = [now_known["hours"], now_known["version"], now_known["oldest"]]
        material, tag, known = caching.known_answer(request, tenant, version, state.response_cache)
        if known is not None:
            return known

    def read(conn: psycopg.Connection) -> list[dict]:
        if source == "stored":
            rows = conn.execute(_STORED, {**params, "provisional": live}, binary=True).fetchall()
            return merge(rows, live_buckets(conn, params, live), limit + 1) if live else rows
        rows_from = _FROM_DAYS if from_days else _FROM_STORED if source == "rollup" else _FROM_DAILY
        # every day of the range rolled up when the state was read (a day once rolled up stays so)
        all_rolled = now_known["rolled"] == (params["hi"] - params["lo"]) // timedelta(days=1)
        if from_days and window_s == DAY_S and all_rolled:
            query = _DAYS_AS_STORED
        else:
            query = _ROLLUP.format(source=rows_from, after=_AFTER)
        return conn.execute(query, params, binary=True).fetchall()

    rows = yield stages.RowsRead(read)
    extra = {"window_s": window_s, "source_window_s": source_window, "source": source}
    key = ("bucket_start", "sensor_id")
    response = page_response(request, rows, limit=limit, key=key, columns=columns, extra=extra)
    if not final:
        return caching.unstored(response)
    if tag:
        return state.response_cache.keep(request, material, caching.tagged(response, tag))
    return caching.by_body(request, response)


@router.get(
    "/agg",
    response_model=AggPage,
    summary="Window aggregates of one machine and metric",
    description=(
        "Buckets whose start lies in [start, end), ordered by bucket start and sensor. A stored window "
        "(WINDOWS, default 60, 300, 3600) is read as stored; a multiple of one (e.g. 86400) is rolled up "
        "from the coarsest stored window dividing it, with p50/p95 null. `Accept: text/csv` returns CSV."
    ),
    responses={**ERRORS, **OTHER_TENANT, **NOT_MODIFIED, 200: CSV_RESPONSE},
)
@stages.answered_by(aggregate_stages)
def aggregates(
    request: Request,
    caller: Caller,
    factory_id: Identifier,
    machine_id: Identifier,
    metric: Identifier,
    window_s: Annotated[int, Query(ge=1, le=MAX_WINDOW_S, description="Bucket width in seconds")],
    start: Start,
    end: End,
    tenant_id: TenantParam = None,
    sensor_id: OptionalIdentifier = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
    fields: FieldsParam = None,
) -> Response:
    return stages.run(
        request.app.state.db,
        aggregate_stages(
            request,
            caller,
            factory_id,
            machine_id,
            metric,
            window_s,
            start,
            end,
            tenant_id,
            sensor_id,
            limit,
            cursor,
            fields,
        ),
    )


def tag_days(lo: datetime, hi: datetime) -> tuple[datetime, datetime]:
    """The whole UTC days [first, last) inside the hours [lo, hi), whose hours the tag reads from their
    per-day sums (sql/28); both `hi` when none is whole, so every hour is read as it is."""
    first, last = ceil_to(lo, DAY_S), floor_to(hi, DAY_S)
    return (first, last) if first < last else (hi, hi)


def chosen_columns(fields: str | None) -> tuple[str, ...]:
    """The columns `fields` names, in the answer's usual order, with the key fields; all without it."""
    if fields is None:
        return COLUMNS
    names = {name.strip() for name in fields.split(",")} - {""}
    unknown = sorted(names - set(COLUMNS))
    if unknown or not names:
        problem = f"unknown field {', '.join(map(repr, unknown))}" if unknown else "fields names no column"
        raise invalid("fields", f"{problem}; known: {', '.join(COLUMNS)}", value=fields)
    return tuple(c for c in COLUMNS if c in names or c in KEY_FIELDS)


def merge(stored: list[dict], live: list[dict], count: int) -> list[dict]:
    """The first `count` rows of both, in the page's order (bucket start, sensor)."""
    return sorted(stored + live, key=lambda row: (row["bucket_start"], row["sensor_id"]))[:count]
