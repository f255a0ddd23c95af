"""GET /v1/kpi and GET /v1/event-rollup: stored KPIs per machine and period, and event rollups per
window. Both are pages ordered by time, with CSV on request; /v1/kpi's ETag is keyed by what the KPI
assets wrote (api/caching.py), the event rollups' by the body. GET /v1/kpi/catalog: what each KPI
is, straight from the KPI catalogue (transforms/kpi_catalog.py), so a client labels, formats and
combines KPIs without copying the catalogue."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Query, Request, Response

from analytics_platform.api import caching, stages
from analytics_platform.api.auth import Caller, tenant_scope
from analytics_platform.api.errors import invalid
from analytics_platform.api.keys import Principal
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
from analytics_platform.api.respond import CSV_RESPONSE, json_response, keyset, page_response
from analytics_platform.transforms import kpi_catalog as K
from analytics_platform.transforms import kpi_periods as kp
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


STORED_PERIODS = ("hour", "shift", "day")
PeriodKind = Literal["hour", "shift", "day", "local_day", "week", "month", "year", "custom"]
Scope = Literal["machine", "factory", "tenant"]
COMBINED_KEY = ("period_start", "_factory", "_machine", "kpi")
_HOUR_COLUMNS = "period_start, period_end, factory_id, machine_id, kpi, value, null_reason, details"


def kpi_stages(
    request: Request,
    caller: Principal,
    start: datetime,
    end: datetime,
    period: str = "custom",
    factory_id: str | None = None,
    scope: str = "machine",
    tenant_id: str | None = None,
    machine_id: str | None = None,
    kpi: str | None = None,
    limit: int = 1000,
    cursor: str | None = None,
) -> stages.Steps:
    """The route in stages (api/stages.py): its checks, the state (stored periods of machines), the
    decision, the rows, the answer."""
    state = request.app.state
    tenant = tenant_scope(caller, tenant_id, required=True)
    page_limit(limit, state.settings.api_page_limit_max)
    start, end = time_range(start, end, state.settings.api_max_result_range_days)
    if factory_id is None and scope != "tenant":
        raise invalid("factory_id", "factory_id is required unless scope=tenant")
    if kpi is not None:
        known("kpi", kpi, state.kpi_names)
    if period in STORED_PERIODS and scope == "machine":
        return (yield from _stored(request, tenant, factory_id, machine_id, period, kpi, start, end, limit, cursor))
    wanted = _wanted(state.kpis, kpi)

    def read(conn: psycopg.Connection) -> tuple[str, list[tuple[kp.CalendarPeriod, Hours]]]:
        zone = tenant_timezone(conn, tenant)
        if period in STORED_PERIODS:
            return zone, _stored_groups(conn, tenant, factory_id, machine_id, period, wanted, start, end)
        spans = (
            [kp.CalendarPeriod(start, end, "custom")]
            if period == "custom"
            else kp.calendar_periods(period, start, end, zone)
        )
        hours = read_hours(conn, tenant, factory_id, machine_id, wanted, spans)
        return zone, [(span, period_hours) for span, period_hours in zip(spans, hours, strict=True)]

    zone, groups = yield stages.RowsRead(read)
    rows = combined_rows(groups, period, scope, tenant, wanted, kpi, zone)
    after = keyset(cursor, (datetime, str, str, str))
    if after is not None:
        rows = [row for row in rows if tuple(row[k] for k in COMBINED_KEY) > tuple(after)]
    return page_response(request, rows[: limit + 1], limit=limit, key=COMBINED_KEY, columns=KPI_COLUMNS)


@router.get(
    "/kpi",
    response_model=KpiPage,
    summary="KPIs of a machine, a factory or a tenant per hour, shift, day, ISO week, month, year or custom range",
    description=(
        "`hour`, `shift` and `day` are the stored periods whose start lies in [start, end) (days are UTC days). "
        "`local_day` (the plant's day, local midnight to local midnight: 23 or 25 hours when its clocks change), "
        "`week` (ISO, Monday), `month` and `year` are whole periods of the tenant's local calendar whose first "
        "local day lies in [start, end) read as local dates; `custom` is [start, end) itself. Those are combined "
        "from the stored hours by each KPI's catalogue rule (GET /v1/kpi/catalog): sums add, ratios divide summed "
        "components, peaks keep their time. `scope=factory` (or `tenant`) totals the machines: KPIs that do not add "
        "up across machines are null with the reason. Ordered by period start, factory, machine and KPI. Omit "
        "`kpi` for all of them. A null value carries its `null_reason`. `Accept: text/csv` returns CSV."
    ),
    responses={**ERRORS, **OTHER_TENANT, **NOT_MODIFIED, 200: CSV_RESPONSE},
)
@stages.answered_by(kpi_stages)
def kpis(
    request: Request,
    caller: Caller,
    start: Start,
    end: End,
    period: Annotated[PeriodKind, Query(description="Period kind; custom: the range [start, end) itself")] = "custom",
    factory_id: OptionalIdentifier = None,
    scope: Annotated[Scope, Query(description="One row per machine, or the factory's or tenant's total")] = "machine",
    tenant_id: TenantParam = None,
    machine_id: OptionalIdentifier = None,
    kpi: Annotated[str | None, Query(min_length=1, max_length=100, description="One KPI; all when omitted")] = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Response:
    return stages.run(
        request.app.state.db,
        kpi_stages(request, caller, start, end, period, factory_id, scope, tenant_id, machine_id, kpi, limit, cursor),
    )


def _stored(
    request: Request,
    tenant: str,
    factory_id: str | None,
    machine_id: str | None,
    period: str,
    kpi: str | None,
    start: datetime,
    end: datetime,
    limit: int,
    cursor: str | None,
) -> stages.Steps:
    """The stored rows of one machine (or each of a factory's machines), as they were written."""
    state = request.app.state
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
    # keyed by what the KPI assets wrote (sql/14), read before the rows: a write in between can only make
    # the body newer than its tag, never older; the request's first statement, it checks the connection too
    version = yield stages.StateRead(_VERSION, (period, start, end))
    material, tag, known = caching.known_answer(request, tenant, list(version.values()), state.response_cache)
    if known is not None:
        return known
    rows = yield stages.RowsRead(lambda conn: conn.execute(query, params, binary=True).fetchall())
    response = caching.tagged(page_response(request, rows, limit=limit, key=KPI_KEY, columns=KPI_COLUMNS), tag)
    return state.response_cache.keep(request, material, response)


def _wanted(catalogue: tuple[Kpi, ...], kpi: str | None) -> list[Kpi]:
    """The KPIs to serve, and (for one KPI) the stored KPIs its combine rule reads: its terms that
    are KPIs themselves, and a component's own terms (OEE needs availability, whose terms need
    run_time_s...)."""
    by_name = {k.name: k for k in catalogue}
    if kpi is None:
        return list(catalogue)
    needed, todo = [], [kpi]
    while todo:
        name = todo.pop()
        if name in needed or name not in by_name:
            continue
        needed.append(name)
        todo += [*by_name[name].combine.numerator, *by_name[name].combine.denominator]
    return [k for k in catalogue if k.name in needed]


def tenant_timezone(conn: psycopg.Connection, tenant: str) -> str:
    """The tenant's IANA timezone: its own plant_tenants row, else the '*' default, else UTC (the
    same resolution the KPI assets use for shifts and tariffs)."""
    row = conn.execute(
        "SELECT timezone FROM analytics.plant_tenants WHERE tenant_id IN (%s, '*') ORDER BY tenant_id = '*' LIMIT 1",
        (tenant,),
    ).fetchone()
    return (row["timezone"] if row else None) or "UTC"


Machine = tuple[str, str]  # factory_id, machine_id
Hours = dict[Machine, list[tuple[datetime, dict[str, K.Part]]]]  # per machine, (period start, its KPIs)


def _group(rows: Iterable[dict], spans: list[kp.CalendarPeriod]) -> list[Hours]:
    """Stored rows into, per span, per machine, its periods (KPI name -> Part), in time order."""
    out: list[dict[Machine, dict[datetime, dict[str, K.Part]]]] = [{} for _ in spans]
    starts = [span.start for span in spans]
    for row in rows:
        at = bisect.bisect_right(starts, row["period_start"]) - 1
        if at < 0 or row["period_start"] >= spans[at].end:
            continue
        seconds = (row["period_end"] - row["period_start"]).total_seconds()
        part = K.Part(row["value"], row["details"] or {}, seconds, row["null_reason"])
        machine = (row["factory_id"], row["machine_id"])
        out[at].setdefault(machine, {}).setdefault(row["period_start"], {})[row["kpi"]] = part
    return [{m: sorted(periods.items()) for m, periods in by_machine.items()} for by_machine in out]


def read_hours(
    conn: psycopg.Connection,
    tenant: str,
    factory_id: str | None,
    machine_id: str | None,
    wanted: Iterable[Kpi],
    spans: list[kp.CalendarPeriod],
) -> list[Hours]:
    """Per span, the stored hours (of the tenant only) whose start lies in it, per machine."""
    if not spans:
        return []
    select = (
        Select(_HOUR_COLUMNS, "analytics.analytics_kpi")
        .eq("tenant_id", tenant)
        .eq("factory_id", factory_id)
        .eq("machine_id", machine_id)
        .eq("period", "hour")
        .cond("kpi = ANY({})", [k.name for k in wanted])
        .cmp("period_start", ">=", spans[0].start)
        .cmp("period_start", "<", spans[-1].end)
    )
    query, params = select.sql(("period_start",), 2**62)
    return _group(conn.execute(query, params, binary=True).fetchall(), spans)


def _stored_groups(
    conn: psycopg.Connection,
    tenant: str,
    factory_id: str | None,
    machine_id: str | None,
    period: str,
    wanted: Iterable[Kpi],
    start: datetime,
    end: datetime,
) -> list[tuple[kp.CalendarPeriod, Hours]]:
    """Stored hours, shifts or days of several machines, one group per stored period (a factory's
    total of each hour)."""
    select = (
        Select(_HOUR_COLUMNS + ", details->>'shift' AS shift", "analytics.analytics_kpi")
        .eq("tenant_id", tenant)
        .eq("factory_id", factory_id)
        .eq("machine_id", machine_id)
        .eq("period", period)
        .cond("kpi = ANY({})", [k.name for k in wanted])
        .cmp("period_start", ">=", start)
        .cmp("period_start", "<", end)
    )
    query, params = select.sql(("period_start",), 2**62)
    by_period: dict[tuple, list[dict]] = {}
    for row in conn.execute(query, params, binary=True).fetchall():
        by_period.setdefault((row["period_start"], row["period_end"], row["shift"]), []).append(row)
    out = []
    for (s, e, shift), rows in sorted(by_period.items(), key=lambda item: item[0][:2]):
        span = kp.CalendarPeriod(s, e, shift or period)
        out.append((span, _group(rows, [span])[0]))
    return out


def combined_rows(
    groups: Iterable[tuple[kp.CalendarPeriod, Hours]],
    period: str,
    scope: str,
    tenant: str,
    wanted: list[Kpi],
    kpi: str | None,
    zone: str,
) -> list[dict]:
    """The KPI rows (KPI_COLUMNS, plus the sort keys) of every span: one per machine, or the
    factory's or tenant's total of its machines."""
    out = []
    for span, hours in groups:
        if scope == "machine":
            units = [((f, m), [parts]) for (f, m), parts in hours.items()]
        elif scope == "factory":
            factories: dict[str, list] = {}
            for (f, _), parts in hours.items():
                factories.setdefault(f, []).append(parts)
            units = [((f, None), members) for f, members in factories.items()]
        else:
            units = [((None, None), list(hours.values()))] if hours else []
        for (factory, machine), members in units:
            periods = [p for parts in members for _, p in parts]
            results = K.combine(wanted, periods, machines=len(members))
            for item in wanted:
                if kpi is not None and item.name != kpi:
                    continue
                combined = results[item.name]
                details = {
                    **combined.details,
                    "label": span.label,
                    "stored_periods": len(periods),
                    "machines": len(members),
                    "timezone": zone,
                }
                out.append(
                    {
                        "period_start": span.start,
                        "period_end": span.end,
                        "period": period,
                        "tenant_id": tenant,
                        "factory_id": factory,
                        "machine_id": machine,
                        "kpi": item.name,
                        "value": combined.value,
                        "unit": item.unit,
                        "null_reason": combined.null_reason,
                        "details": details,
                        "_factory": factory or "",
                        "_machine": machine or "",
                    }
                )
    return sorted(out, key=lambda row: tuple(row[k] for k in COMBINED_KEY))


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
