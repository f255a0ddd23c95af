"""GET /v1/kpi and GET /v1/event-rollup: stored KPIs per machine and period, and event rollups per
window. Both are pages ordered by time, with CSV on request; /v1/kpi's ETag is keyed by what the KPI
assets wrote (api/caching.py), the event rollups' by the body. GET /v1/kpi/catalog: what each KPI
is, straight from the KPI catalogue (transforms/kpi_catalog.py), so a client labels, formats and
combines KPIs without copying the catalogue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from analytics_platform.api import caching
from analytics_platform.api.auth import Caller, tenant_scope
from analytics_platform.api.errors import invalid
from analytics_platform.api.models import ERRORS, NOT_MODIFIED, OTHER_TENANT, EventRollupPage, KpiCatalogPage, KpiPage
from analytics_platform.api.params import (
    Cursor,
    End,
    Identifier,
    Limit,
    OptionalIdentifier,
    Start,
    TenantParam,
    known,
    page_limit,
    time_range,
)
from analytics_platform.api.query import Select, fetch_page
from analytics_platform.api.respond import CSV_RESPONSE, json_response, keyset, page_response, wants_csv
from analytics_platform.transforms.event_rollups import DAY_S, rollup_windows
from analytics_platform.transforms.kpi_catalog import Kpi

router = APIRouter(prefix="/v1", tags=["kpis and events"])

KPI_COLUMNS = (
    "period_start",
    "period_end",
    "period",
    "tenant_id",
    "factory_id",
    "machine_id",
    "kpi",
    "value",
    "unit",
    "null_reason",
    "details",
)
KPI_KEY = ("period_start", "machine_id", "kpi")
_VERSION = """
SELECT count(*) AS periods, coalesce(max(version), 0) AS version
FROM analytics.kpi_materialised_periods WHERE period = %s AND period_start >= %s AND period_start < %s
"""


@router.get(
    "/kpi",
    response_model=KpiPage,
    summary="KPIs of a machine (or a factory's machines) per hour, shift or day",
    description=(
        "Periods whose start lies in [start, end), ordered by period start, machine and KPI. Omit `kpi` for "
        "all of them. A null value carries its `null_reason`. `Accept: text/csv` returns CSV."
    ),
    responses={**ERRORS, **OTHER_TENANT, **NOT_MODIFIED, 200: CSV_RESPONSE},
)
def kpis(
    request: Request,
    caller: Caller,
    factory_id: Identifier,
    period: Annotated[Literal["hour", "shift", "day"], Query(description="Period kind")],
    start: Start,
    end: End,
    tenant_id: TenantParam = None,
    machine_id: OptionalIdentifier = None,
    kpi: Annotated[str | None, Query(min_length=1, max_length=100, description="One KPI; all when omitted")] = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Response:
    state = request.app.state
    tenant = tenant_scope(caller, tenant_id, required=True)
    page_limit(limit, state.settings.api_page_limit_max)
    start, end = time_range(start, end, state.settings.api_max_result_range_days)
    if kpi is not None:
        known("kpi", kpi, state.kpi_names)
    select = (
        Select(", ".join(KPI_COLUMNS), "analytics.analytics_kpi")
        .eq("tenant_id", tenant)
        .eq("factory_id", factory_id)
        .eq("machine_id", machine_id)
        .eq("period", period)
        .eq("kpi", kpi)
        .cmp("period_start", ">=", start)
        .cmp("period_start", "<", end)
        .after(KPI_KEY, keyset(cursor, (datetime, str, str)))
    )
    query, params = select.sql(KPI_KEY, limit + 1)
    with state.db.connection() as conn:
        # keyed by what the KPI assets wrote (sql/14), read before the rows: a write in between can only
        # make the body newer than its tag, never older
        version = conn.execute(_VERSION, (period, start, end)).fetchone()
        representation = "csv" if wants_csv(request) else "json"
        tag = caching.tag_of(caching.request_key(request, tenant, representation), list(version.values()))
        if caching.matches(request, tag):
            return caching.not_modified(tag)
        rows = conn.execute(query, params, binary=True).fetchall()
    return caching.tagged(page_response(request, rows, limit=limit, key=KPI_KEY, columns=KPI_COLUMNS), tag)


def _definition(kpi: Kpi) -> dict:
    low, high = kpi.valid_range
    combine = kpi.combine
    return {
        "name": kpi.name,
        "unit": kpi.unit,
        "label": kpi.label,
        "description": kpi.description,
        "valid_min": low,
        "valid_max": high,
        "combine": {
            "kind": combine.kind,
            "numerator": list(combine.numerator),
            "denominator": list(combine.denominator),
            "scale": combine.scale,
            "weight": combine.weight,
            "at": combine.at,
        },
        "format": kpi.format,
        "digits": kpi.digits,
    }


@router.get(
    "/kpi/catalog",
    response_model=KpiCatalogPage,
    summary="Every KPI /v1/kpi serves: unit, meaning, valid range, how it combines, display label and format",
    description=(
        "One page, in display order: the platform's KPIs, then one `avg_<metric>` per configured KPI driver. "
        "`valid_min`/`valid_max` is the range the result checks judge a KPI by (a deployment's checks.yaml may "
        "override it; `avg_<metric>` is judged by the metric's range in the tenant's metrics catalogue)."
    ),
    responses={**ERRORS},
)
def kpi_catalog(request: Request, caller: Caller) -> Response:
    items = [_definition(kpi) for kpi in request.app.state.kpis]
    return json_response({"items": items, "count": len(items), "next_cursor": None})


EVENT_COLUMNS = (
    "bucket_start",
    "bucket_end",
    "window_s",
    "tenant_id",
    "factory_id",
    "machine_id",
    "event_type",
    "subject",
    "count",
    "pass_count",
    "fail_count",
    "pass_rate",
    "fail_rate",
    "uptime_pct",
    "details",
)
EVENT_KEY = ("bucket_start", "machine_id", "event_type", "subject")
_EVENT_SELECT = (
    "bucket_start, bucket_end, window_s, tenant_id, factory_id, machine_id, event_type, subject, count_n AS count, "
    "pass_n AS pass_count, fail_n AS fail_count, pass_rate, fail_rate, uptime_pct, details"
)


@router.get(
    "/event-rollup",
    response_model=EventRollupPage,
    summary="Event rollups (counts, pass/fail rates, uptime) per window",
    description=(
        "Rollups of device health, status changes, sweep batches and lab results per machine (or lab station), "
        "event type and subject (analyte or sweep metric). Windows are those stored: the configured windows "
        "that tile an hour, the hour, and the day (86400). `Accept: text/csv` returns CSV."
    ),
    responses={**ERRORS, **OTHER_TENANT, **NOT_MODIFIED, 200: CSV_RESPONSE},
)
def event_rollup(
    request: Request,
    caller: Caller,
    factory_id: Identifier,
    window_s: Annotated[int, Query(ge=1, le=DAY_S, description="A stored rollup window, e.g. 3600 or 86400")],
    start: Start,
    end: End,
    tenant_id: TenantParam = None,
    machine_id: OptionalIdentifier = None,
    event_type: OptionalIdentifier = None,
    subject: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Response:
    state = request.app.state
    tenant = tenant_scope(caller, tenant_id, required=True)
    page_limit(limit, state.settings.api_page_limit_max)
    start, end = time_range(start, end, state.settings.api_max_result_range_days)
    windows = [*rollup_windows(state.settings.windows), DAY_S]
    if window_s not in windows:
        raise invalid(
            "window_s", f"window_s must be a stored rollup window: {', '.join(map(str, windows))}", value=window_s
        )
    select = (
        Select(_EVENT_SELECT, "analytics.analytics_event_rollup")
        .eq("tenant_id", tenant)
        .eq("factory_id", factory_id)
        .eq("machine_id", machine_id)
        .eq("window_s", window_s)
        .eq("event_type", event_type)
        .eq("subject", subject)
        .cmp("bucket_start", ">=", start)
        .cmp("bucket_start", "<", end)
        .after(EVENT_KEY, keyset(cursor, (datetime, str, str, str)))
    )
    return fetch_page(request, select, key=EVENT_KEY, limit=limit, columns=EVENT_COLUMNS)
