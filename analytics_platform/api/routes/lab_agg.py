"""GET /v1/lab/agg: lab analytes as time series. The window aggregates of one analyte's lab results
per station (the `lab_window_aggregates` asset, analytics.analytics_lab_agg), each bucket beside the
spec limit in force at its start, so a chart draws Moisture per hour against its limits from one
answer.

A sibling of /v1/agg rather than a domain parameter on it: a lab series is a station's analyte, not
a machine's sensor and metric, and /v1/agg's provisional buckets and ETags are built on the sensor
tables. Windows are served as /v1/agg serves them: a stored window (WINDOWS) as stored, a multiple of
one (e.g. 86400) rolled up from the coarsest stored window dividing it, exactly for count, sum,
mean, min, max, first and last, pooled for stddev, with p50/p95 null (percentiles do not combine)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from analytics_platform.api.auth import Caller, tenant_scope
from analytics_platform.api.errors import invalid
from analytics_platform.api.models import ERRORS, OTHER_TENANT, LabAggPage
from analytics_platform.api.params import (
    Cursor,
    End,
    Identifier,
    Limit,
    OptionalIdentifier,
    Start,
    TenantParam,
    ceil_to,
    page_limit,
    time_range,
)
from analytics_platform.api.respond import CSV_RESPONSE, keyset, page_response
from analytics_platform.transforms.window_aggregates import COMBINED_M2, GROUP_MEAN, ordered_sum

router = APIRouter(prefix="/v1", tags=["aggregates"])

MAX_RANGE_DAYS = 3660
MAX_WINDOW_S = 366 * 86400
COLUMNS = (
    "bucket_start",
    "bucket_end",
    "window_s",
    "tenant_id",
    "factory_id",
    "station_id",
    "analyte",
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
    "lower_limit",
    "upper_limit",
    "target",
    "unit",
)
_SERIES = """a.tenant_id = %(tenant_id)s AND a.factory_id = %(factory_id)s AND a.analyte = %(analyte)s
  AND (%(station_id)s::text IS NULL OR a.station_id = %(station_id)s)"""
_AFTER = "(%(after_time)s::timestamptz IS NULL OR (b.bucket_start, b.station_id) > (%(after_time)s, %(after_key)s))"
# The limit of a bucket is the one a result at its start would be judged by (transforms/spec_quality.py):
# the factory's own before the tenant-wide '*' row, then the latest valid_from at or before that time.
_WITH_LIMITS = f"""
SELECT b.*, l.lower_limit, l.upper_limit, l.target, l.unit
FROM ({{buckets}}) AS b
LEFT JOIN LATERAL (
    SELECT s.lower_limit, s.upper_limit, s.target, s.unit FROM analytics.analytics_spec_limits AS s
    WHERE s.tenant_id = b.tenant_id AND s.factory_id IN (b.factory_id, '*') AND s.scope = 'analyte'
      AND s.name = b.analyte AND s.valid_from <= b.bucket_start
    ORDER BY s.factory_id = '*', s.valid_from DESC
    LIMIT 1
) AS l ON true
WHERE {_AFTER}
ORDER BY b.bucket_start, b.station_id
LIMIT %(limit)s
"""
_STORED = f"""
SELECT a.bucket_start, a.bucket_end, a.window_s, a.tenant_id, a.factory_id, a.station_id, a.analyte,
       a.count_n AS count, a.sum_v AS sum, a.avg_v AS avg, a.min_v AS min, a.max_v AS max, a.stddev_v AS stddev,
       a.first_v AS first, a.last_v AS last, a.p50_v AS p50, a.p95_v AS p95
FROM analytics.analytics_lab_agg AS a
WHERE {_SERIES} AND a.window_s = %(window_s)s AND a.bucket_start >= %(start)s AND a.bucket_start < %(end)s
"""
# A stored bucket as n, sum, min, max, first, last and m2 = Σ (x - its mean)² (from its sample stddev),
# grouped into the requested window with the m2 combined pairwise: the rollup /v1/agg makes of sensor buckets.
_BIN = "date_bin(make_interval(secs => %(window_s)s), bucket_start, TIMESTAMPTZ '1970-01-01 00:00:00+00')"
_ROLLUP = f"""
WITH src AS (
    SELECT a.bucket_start, a.station_id, a.count_n, a.sum_v, a.min_v, a.max_v, a.first_v, a.last_v,
           (a.count_n - 1) * analytics.sq(coalesce(a.stddev_v, 0)) AS m2_v
    FROM analytics.analytics_lab_agg AS a
    WHERE {_SERIES} AND a.window_s = %(source_window_s)s AND a.bucket_start >= %(lo)s AND a.bucket_start < %(hi)s
),
binned AS (
    SELECT src.*, {_BIN} AS bin, {GROUP_MEAN.format(bin=_BIN, series="station_id")}
    FROM src
),
grouped AS (
    SELECT bin AS bucket_start,
           station_id,
           sum(count_n)::bigint AS count, {ordered_sum("sum_v")} AS sum, min(min_v) AS min, max(max_v) AS max,
           {COMBINED_M2} AS m2,
           (array_agg(first_v ORDER BY bucket_start))[1] AS first,
           (array_agg(last_v ORDER BY bucket_start DESC))[1] AS last
    FROM binned
    GROUP BY 1, 2
)
SELECT bucket_start, bucket_start + make_interval(secs => %(window_s)s) AS bucket_end,
       %(window_s)s::integer AS window_s, %(tenant_id)s::text AS tenant_id, %(factory_id)s::text AS factory_id,
       station_id, %(analyte)s::text AS analyte, count, sum, sum / nullif(count, 0) AS avg, min, max,
       CASE WHEN count > 1 THEN sqrt(greatest(m2, 0) / (count - 1)) END AS stddev,
       first, last, NULL::float8 AS p50, NULL::float8 AS p95
FROM grouped
"""


def plan_source(window_s: int, stored: list[int]) -> tuple[str, int]:
    """("stored", w) for a stored window, else ("rollup", the coarsest stored window dividing it)."""
    if window_s in stored:
        return "stored", window_s
    divisors = [w for w in stored if window_s % w == 0]
    if not divisors:
        known = ", ".join(str(w) for w in sorted(stored))
        raise invalid(
            "window_s", f"window_s must be a stored window ({known}) or a multiple of one, e.g. 86400", value=window_s
        )
    return "rollup", max(divisors)


@router.get(
    "/lab/agg",
    response_model=LabAggPage,
    summary="Window aggregates of one lab analyte per station, beside its spec limits",
    description=(
        "Buckets whose start lies in [start, end), ordered by bucket start and station: count, sum, avg, min, max, "
        "stddev, first, last, p50, p95 of the analyte's lab results, with the spec limit in force at each bucket's "
        "start. A stored window (WINDOWS, default 60, 300, 3600) is read as stored; a multiple of one (e.g. 86400) "
        "is rolled up from the coarsest stored window dividing it, with p50/p95 null. `Accept: text/csv` returns CSV."
    ),
    responses={**ERRORS, **OTHER_TENANT, 200: CSV_RESPONSE},
)
def lab_aggregates(
    request: Request,
    caller: Caller,
    factory_id: Identifier,
    analyte: Identifier,
    window_s: Annotated[
        int, Query(ge=1, le=MAX_WINDOW_S, description="Bucket width in seconds: a stored window or a multiple of one")
    ],
    start: Start,
    end: End,
    tenant_id: TenantParam = None,
    station_id: OptionalIdentifier = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Response:
    state = request.app.state
    settings = state.settings
    tenant = tenant_scope(caller, tenant_id, required=True)
    page_limit(limit, settings.api_page_limit_max)
    start, end = time_range(start, end, max_days=MAX_RANGE_DAYS)
    source, source_window = plan_source(window_s, sorted(set(settings.windows)))
    if (end - start) / timedelta(seconds=window_s) > settings.api_max_buckets:
        raise invalid(
            "end",
            f"range holds more than {settings.api_max_buckets} buckets of {window_s} s (API_MAX_BUCKETS); "
            "use a coarser window_s or a shorter range",
            value=end.isoformat(),
        )
    after = keyset(cursor, (datetime, str)) or [None, None]
    params = {
        "tenant_id": tenant,
        "factory_id": factory_id,
        "analyte": analyte,
        "station_id": station_id,
        "window_s": window_s,
        "source_window_s": source_window,
        "start": start,
        "end": end,
        # a rolled-up bucket is in the answer when its start is in [start, end); it covers its whole window
        "lo": max(ceil_to(start, window_s), after[0] or start),
        "hi": ceil_to(end, window_s),
        "after_time": after[0],
        "after_key": after[1],
        "limit": limit + 1,
    }
    if source == "rollup" and (params["hi"] - params["lo"]) / timedelta(seconds=source_window) > (
        settings.api_max_buckets * 24
    ):
        raise invalid("end", "range is too long to roll up; use a coarser window_s or a shorter range")
    buckets = _STORED if source == "stored" else _ROLLUP
    with state.db.connection() as conn:
        rows = conn.execute(_WITH_LIMITS.format(buckets=buckets), params, binary=True).fetchall()
    key = ("bucket_start", "station_id")
    extra = {"window_s": window_s, "source_window_s": source_window, "source": source}
    return page_response(request, rows, limit=limit, key=key, columns=COLUMNS, extra=extra)
