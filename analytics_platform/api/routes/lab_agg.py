"""GET /v1/lab/agg: lab analytes as time series. The window aggregates of one analyte's lab results
per station (the `lab_window_aggregates` asset, analytics.analytics_lab_agg), each bucket beside the
spec limit in force at its start, so a chart draws Moisture per hour against its limits from one
answer.

A sibling of /v1/agg rather than a domain parameter on it: a lab series is a station's analyte, not
a machine's sensor and metric, and /v1/agg's provisional buckets, rollups and ETags are built on the
sensor tables. Buckets are served as the asset stored them (the windows of WINDOWS); a window that
is not stored is a 422 naming the stored ones."""

from __future__ import annotations

from datetime import datetime
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
    page_limit,
    time_range,
)
from analytics_platform.api.respond import CSV_RESPONSE, keyset, page_response

router = APIRouter(prefix="/v1", tags=["aggregates"])

MAX_RANGE_DAYS = 3660
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
# The limit of a bucket is the one a result at its start would be judged by (transforms/spec_quality.py):
# the factory's own before the tenant-wide '*' row, then the latest valid_from at or before that time.
_BUCKETS = """
SELECT a.bucket_start, a.bucket_end, a.window_s, a.tenant_id, a.factory_id, a.station_id, a.analyte,
       a.count_n AS count, a.sum_v AS sum, a.avg_v AS avg, a.min_v AS min, a.max_v AS max, a.stddev_v AS stddev,
       a.first_v AS first, a.last_v AS last, a.p50_v AS p50, a.p95_v AS p95,
       l.lower_limit, l.upper_limit, l.target, l.unit
FROM analytics.analytics_lab_agg AS a
LEFT JOIN LATERAL (
    SELECT s.lower_limit, s.upper_limit, s.target, s.unit FROM analytics.analytics_spec_limits AS s
    WHERE s.tenant_id = a.tenant_id AND s.factory_id IN (a.factory_id, '*') AND s.scope = 'analyte'
      AND s.name = a.analyte AND s.valid_from <= a.bucket_start
    ORDER BY s.factory_id = '*', s.valid_from DESC
    LIMIT 1
) AS l ON true
WHERE a.tenant_id = %(tenant_id)s AND a.factory_id = %(factory_id)s AND a.analyte = %(analyte)s
  AND (%(station_id)s::text IS NULL OR a.station_id = %(station_id)s)
  AND a.window_s = %(window_s)s AND a.bucket_start >= %(start)s AND a.bucket_start < %(end)s
  AND (%(after_time)s::timestamptz IS NULL OR (a.bucket_start, a.station_id) > (%(after_time)s, %(after_key)s))
ORDER BY a.bucket_start, a.station_id
LIMIT %(limit)s
"""


@router.get(
    "/lab/agg",
    response_model=LabAggPage,
    summary="Window aggregates of one lab analyte per station, beside its spec limits",
    description=(
        "Buckets whose start lies in [start, end), ordered by bucket start and station: count, sum, avg, min, max, "
        "stddev, first, last, p50, p95 of the analyte's lab results, with the spec limit in force at each bucket's "
        "start. window_s is a stored window (WINDOWS, default 60, 300, 3600). `Accept: text/csv` returns CSV."
    ),
    responses={**ERRORS, **OTHER_TENANT, 200: CSV_RESPONSE},
)
def lab_aggregates(
    request: Request,
    caller: Caller,
    factory_id: Identifier,
    analyte: Identifier,
    window_s: Annotated[int, Query(ge=1, description="Bucket width in seconds: a stored window")],
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
    stored = sorted(set(settings.windows))
    if window_s not in stored:
        known = ", ".join(str(w) for w in stored)
        raise invalid("window_s", f"window_s must be a stored window ({known})", value=window_s)
    after = keyset(cursor, (datetime, str)) or [None, None]
    params = {
        "tenant_id": tenant,
        "factory_id": factory_id,
        "analyte": analyte,
        "station_id": station_id,
        "window_s": window_s,
        "start": start,
        "end": end,
        "after_time": after[0],
        "after_key": after[1],
        "limit": limit + 1,
    }
    with state.db.connection() as conn:
        rows = conn.execute(_BUCKETS, params, binary=True).fetchall()
    key = ("bucket_start", "station_id")
    return page_response(request, rows, limit=limit, key=key, columns=COLUMNS, extra={"window_s": window_s})
