"""GET /v1/anomalies (recent, open or resolved, by machine, by severity), GET /v1/anomalies/{id}
and POST /v1/anomalies/{id}/resolve: the API's one write, run as the analytics_resolver role,
which may set the four resolution columns and nothing else.

Anomaly events (issue 20): a real fault is many rows (one per anomalous sample and method), so
GET /v1/anomaly-events lists consecutive rows of one series as one event, GET
/v1/anomaly-events/{id} shows one with its rows and POST /v1/anomaly-events/{id}/resolve resolves
all its rows with one note. Events are computed on read by analytics.anomaly_events
(sql/11_anomaly_events.sql) over a time range; GET /v1/anomaly-profiles lists what each series is
judged against, and which series are still learning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from psycopg.rows import dict_row

from analytics_platform.api.auth import Caller, require_scope, tenant_scope
from analytics_platform.api.db import DatabaseDown
from analytics_platform.api.models import (
    BAD_JSON,
    ERRORS,
    FORBIDDEN,
    NOT_FOUND,
    OTHER_TENANT,
    Anomaly,
    AnomalyEvent,
    AnomalyEventDetail,
    AnomalyEventPage,
    AnomalyPage,
    AnomalyProfile,
    AnomalyProfilePage,
    ErrorBody,
    Resolution,
)
from analytics_platform.api.params import (
    Cursor,
    Limit,
    OptionalIdentifier,
    TenantParam,
    page_limit,
    time_range,
    utc,
)
from analytics_platform.api.query import Select, fetch_page
from analytics_platform.api.respond import CSV_RESPONSE, json_response, keyset

router = APIRouter(prefix="/v1", tags=["anomalies"])

COLUMNS = tuple(Anomaly.model_fields)
KEY = ("time", "anomaly_id")
RECENT = timedelta(days=7)
AnomalyId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The anomaly's id")]

EVENT_COLUMNS = tuple(AnomalyEvent.model_fields)
EVENT_KEY = ("start_time", "event_id")
EVENT_LOOKBACK = timedelta(days=30)
EventId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The event's id (the anomaly_id of its first row)")]
EventStart = Annotated[
    datetime | None, Query(description="Where the event is looked for, inclusive; default end - 30 days")
]
EventEnd = Annotated[datetime | None, Query(description="Exclusive; default now")]
PROFILE_COLUMNS = tuple(AnomalyProfile.model_fields)
PROFILE_KEY = ("tenant_id", "factory_id", "machine_id", "sensor_id", "metric")


@router.get(
    "/anomalies",
    response_model=AnomalyPage,
    summary="Anomalies, newest first",
    description=(
        "Anomalies detected in [start, end) (default: the last 7 days), newest first. `status=open` lists the "
        "active ones; `min_severity` keeps severity ≥ N (1-5). `Accept: text/csv` returns CSV."
    ),
    responses={**ERRORS, **OTHER_TENANT, 200: CSV_RESPONSE},
)
def anomalies(
    request: Request,
    caller: Caller,
    tenant_id: TenantParam = None,
    factory_id: OptionalIdentifier = None,
    machine_id: OptionalIdentifier = None,
    status: Annotated[
        Literal["open", "resolved", "not_confirmed", "all"],
        Query(description="open = active; not_confirmed = flagged live, not found by the hourly record"),
    ] = "all",
    min_severity: Annotated[int, Query(ge=1, le=5)] = 1,
    anomaly_type: OptionalIdentifier = None,
    start: Annotated[datetime | None, Query(description="Inclusive; default end - 7 days")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive; default now")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    tenant = tenant_scope(caller, tenant_id, required=False)
    page_limit(limit, request.app.state.settings.api_page_limit_max)
    start, end = _range(request, start, end, RECENT)
    select = (
        Select(", ".join(COLUMNS), "analytics.analytics_anomaly")
        .eq("tenant_id", tenant)
        .eq("factory_id", factory_id)
        .eq("machine_id", machine_id)
        .eq("status", None if status == "all" else status)
        .eq("anomaly_type", anomaly_type)
        .cmp("severity", ">=", min_severity if min_severity > 1 else None)
        .cmp("time", ">=", start)
        .cmp("time", "<", end)
        .after(KEY, keyset(cursor, (datetime, int)), descending=True)
    )
    return fetch_page(request, select, key=KEY, limit=limit, columns=COLUMNS, descending=True)


def _one(conn: psycopg.Connection, anomaly_id: int, tenant: str | None) -> dict:
    select = (
        Select(", ".join(COLUMNS), "analytics.analytics_anomaly").eq("anomaly_id", anomaly_id).eq("tenant_id", tenant)
    )
    query, params = select.sql(("anomaly_id",), 1)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, params).fetchone()
    if row is None:
        raise HTTPException(404, f"anomaly {anomaly_id} not found")
    return row


@router.get(
    "/anomalies/{anomaly_id}",
    response_model=Anomaly,
    summary="One anomaly",
    responses={**ERRORS, **NOT_FOUND},
)
def anomaly(request: Request, caller: Caller, anomaly_id: AnomalyId) -> Response:
    with request.app.state.db.connection() as conn:
        return json_response(_one(conn, anomaly_id, caller.tenant_id))


@router.post(
    "/anomalies/{anomaly_id}/resolve",
    response_model=Anomaly,
    summary="Resolve an anomaly with a note",
    description=(
        "Marks the anomaly resolved with a note saying what was found or done. Resolving again replaces the note "
        "and keeps the first resolution time. Needs a key with the `resolve` scope."
    ),
    responses={**ERRORS, **BAD_JSON, **FORBIDDEN, **NOT_FOUND},
)
def resolve(request: Request, caller: Caller, anomaly_id: AnomalyId, body: Resolution) -> Response:
    require_scope(caller, "resolve")
    writer = request.app.state.writer
    if writer is None:
        raise DatabaseDown("resolving is not configured on this API (set API_WRITE_DATABASE_URL)")
    tenant = tenant_scope(caller, None, required=False)
    by = body.resolved_by or f"{caller.name} (key {caller.key_id})"
    try:
        with writer.connection() as conn, conn.transaction():
            # the row is locked while its tenant is checked and it is resolved: one decision
            owner = conn.execute(
                "SELECT tenant_id FROM analytics.analytics_anomaly WHERE anomaly_id = %s FOR UPDATE", (anomaly_id,)
            ).fetchone()
            if owner is None or (tenant is not None and owner["tenant_id"] != tenant):
                raise HTTPException(404, f"anomaly {anomaly_id} not found")
            conn.execute("SELECT analytics.resolve_anomaly(%s, %s, %s)", (anomaly_id, body.note.strip(), by))
            row = _one(conn, anomaly_id, tenant)
    except psycopg.errors.InsufficientPrivilege as exc:
        first = (str(exc).strip().splitlines() or ["permission denied"])[0]
        raise DatabaseDown(f"the resolve role lacks a privilege ({first}); grant it analytics_resolver") from None
    return json_response(row)


# ------------------------------------------------------------------------------------------------
# anomaly events: consecutive rows of one series, computed on read (sql/11_anomaly_events.sql)
# ------------------------------------------------------------------------------------------------
def _range(
    request: Request, start: datetime | None, end: datetime | None, default: timedelta
) -> tuple[datetime, datetime]:
    """[start, end) with the anomaly listing's rules: end defaults to now, start to end - `default`."""
    end = utc("end", end) if end is not None else datetime.now(UTC)
    start = utc("start", start) if start is not None else end - default
    return time_range(start, end, request.app.state.settings.api_max_result_range_days)


def _events(start: datetime, end: datetime, tenant: str | None) -> Select:
    """The events overlapping [start, end), of one tenant or (None) every tenant."""
    select = Select(
        ", ".join(EVENT_COLUMNS),
        "analytics.anomaly_events(%(range_start)s::timestamptz, %(range_end)s::timestamptz, %(range_tenant)s::text)",
    )
    select.params.update(range_start=start, range_end=end, range_tenant=tenant)
    return select


def _event_or_none(
    conn: psycopg.Connection,
    event_id: int,
    start: datetime,
    end: datetime,
    tenant: str | None,
    status: str | None = None,
) -> dict | None:
    query, params = _events(start, end, tenant).eq("event_id", event_id).eq("status", status).sql(EVENT_KEY, 1)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchone()


def _event(conn: psycopg.Connection, event_id: int, start: datetime, end: datetime, tenant: str | None) -> dict:
    row = _event_or_none(conn, event_id, start, end, tenant)
    if row is None:
        raise HTTPException(404, f"anomaly event {event_id} not found")
    return row


def _event_rows(conn: psycopg.Connection, event: dict, limit: int) -> list[dict]:
    """The event's rows, by time: those of its series inside [start_time, end_time], which are the
    rows analytics.resolve_anomaly_event resolves. (A row's time is never before its window start,
    so `time >= start_time` only lets the series index bound the scan.)"""
    select = (
        Select(", ".join(COLUMNS), "analytics.analytics_anomaly")
        .eq("tenant_id", event["tenant_id"])
        .eq("factory_id", event["factory_id"])
        .eq("machine_id", event["machine_id"])
        .cond("sensor_id IS NOT DISTINCT FROM {}", event["sensor_id"])
        .cond("metric IS NOT DISTINCT FROM {}", event["metric"])
        .cond("coalesce(window_start, time) >= {}", event["start_time"])
        .cmp("time", ">=", event["start_time"])
        .cmp("time", "<=", event["end_time"])
    )
    query, params = select.sql(KEY, limit)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


@router.get(
    "/anomaly-events",
    response_model=AnomalyEventPage,
    summary="Anomaly events, newest first",
    description=(
        "Anomaly events overlapping [start, end) (default: the last 7 days), newest first (by start). An event is "
        "the consecutive anomaly rows of one series: rows at most 3 samples apart. Its severity is its rows' "
        "highest; `status` is open while any row is open. Rows from up to 1 day before `start` are read, so an "
        "event that began then is whole; rows at or after `end` are not. `Accept: text/csv` returns CSV."
    ),
    responses={**ERRORS, **OTHER_TENANT, 200: CSV_RESPONSE},
)
def anomaly_events(
    request: Request,
    caller: Caller,
    tenant_id: TenantParam = None,
    factory_id: OptionalIdentifier = None,
    machine_id: OptionalIdentifier = None,
    sensor_id: OptionalIdentifier = None,
    metric: OptionalIdentifier = None,
    anomaly_type: OptionalIdentifier = None,
    status: Annotated[
        Literal["open", "resolved", "not_confirmed", "all"],
        Query(description="open = any row open; not_confirmed = every row flagged live, not found by its hour"),
    ] = "all",
    min_severity: Annotated[int, Query(ge=1, le=5, description="Events whose highest severity is ≥ N")] = 1,
    start: Annotated[datetime | None, Query(description="Inclusive; default end - 7 days")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive; default now")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    tenant = tenant_scope(caller, tenant_id, required=False)
    page_limit(limit, request.app.state.settings.api_page_limit_max)
    start, end = _range(request, start, end, RECENT)
    select = (
        _events(start, end, tenant)
        .eq("factory_id", factory_id)
        .eq("machine_id", machine_id)
        .eq("sensor_id", sensor_id)
        .eq("metric", metric)
        .eq("anomaly_type", anomaly_type)
        .eq("status", None if status == "all" else status)
        .cmp("severity", ">=", min_severity if min_severity > 1 else None)
        .after(EVENT_KEY, keyset(cursor, (datetime, int)), descending=True)
    )
    return fetch_page(request, select, key=EVENT_KEY, limit=limit, columns=EVENT_COLUMNS, descending=True)


@router.get(
    "/anomaly-events/{event_id}",
    response_model=AnomalyEventDetail,
    summary="One anomaly event with its rows",
    description=(
        "The event, looked for in [start, end) (default: the last 30 days), and its rows by time: the anomalies of "
        "its series inside [start_time, end_time], at most `limit` of them (`anomalies` says how many there are)."
    ),
    responses={**ERRORS, **NOT_FOUND},
)
def anomaly_event(
    request: Request,
    caller: Caller,
    event_id: EventId,
    start: EventStart = None,
    end: EventEnd = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="Rows at most")] = 1000,
) -> Response:
    page_limit(limit, request.app.state.settings.api_page_limit_max)
    start, end = _range(request, start, end, EVENT_LOOKBACK)
    with request.app.state.db.connection() as conn:
        event = _event(conn, event_id, start, end, caller.tenant_id)
        rows = _event_rows(conn, event, limit)
    return json_response({**event, "rows": rows})


@router.post(
    "/anomaly-events/{event_id}/resolve",
    response_model=AnomalyEvent,
    summary="Resolve every row of an anomaly event with one note",
    description=(
        "Marks every row of the event (looked for in [start, end), default the last 30 days) resolved with a note "
        "saying what was found or done, and answers the event. Needs a key with the `resolve` scope."
    ),
    responses={
        **ERRORS,
        **BAD_JSON,
        **FORBIDDEN,
        **NOT_FOUND,
        409: {"model": ErrorBody, "description": "The event is not_confirmed: nothing open to resolve"},
    },
)
def resolve_event(
    request: Request,
    caller: Caller,
    event_id: EventId,
    body: Resolution,
    start: EventStart = None,
    end: EventEnd = None,
) -> Response:
    require_scope(caller, "resolve")
    writer = request.app.state.writer
    if writer is None:
        raise DatabaseDown("resolving is not configured on this API (set API_WRITE_DATABASE_URL)")
    tenant = tenant_scope(caller, None, required=False)
    start, end = _range(request, start, end, EVENT_LOOKBACK)
    by = body.resolved_by or f"{caller.name} (key {caller.key_id})"
    try:
        with writer.connection() as conn, conn.transaction():
            # the event's first row is locked while its tenant is checked and the event resolved
            owner = conn.execute(
                "SELECT tenant_id FROM analytics.analytics_anomaly WHERE anomaly_id = %s FOR UPDATE", (event_id,)
            ).fetchone()
            if owner is None or (tenant is not None and owner["tenant_id"] != tenant):
                raise HTTPException(404, f"anomaly event {event_id} not found")
            resolved = conn.execute(
                "SELECT analytics.resolve_anomaly_event(%s, %s, %s, %s, %s) AS n",
                (event_id, start, end, body.note.strip(), by),
            ).fetchone()["n"]
            if not resolved:
                if _event_or_none(conn, event_id, start, end, tenant, "not_confirmed"):
                    raise HTTPException(
                        409,
                        f"anomaly event {event_id} is not_confirmed: flagged live, then not found when its hour was "
                        "judged, so nothing is open to resolve",
                    )
                raise HTTPException(404, f"anomaly event {event_id} not found")
            event = _event(conn, event_id, start, end, tenant)
    except psycopg.errors.InsufficientPrivilege as exc:
        first = (str(exc).strip().splitlines() or ["permission denied"])[0]
        raise DatabaseDown(f"the resolve role lacks a privilege ({first}); grant it analytics_resolver") from None
    return json_response(event)


@router.get(
    "/anomaly-profiles",
    response_model=AnomalyProfilePage,
    summary="What each series' anomalies are judged against; which series are still learning",
    description=(
        "The newest seasonal profile of each series, by tenant, factory, machine, sensor and metric. `stage` "
        "`learning` means the series has too little history and is not judged yet (it has no anomalies); `flat` "
        "(less than a day) is judged against its median, `daily` and `weekly` against the hour of day (and week)."
    ),
    responses={**ERRORS, **OTHER_TENANT},
)
def anomaly_profiles(
    request: Request,
    caller: Caller,
    tenant_id: TenantParam = None,
    factory_id: OptionalIdentifier = None,
    machine_id: OptionalIdentifier = None,
    sensor_id: OptionalIdentifier = None,
    metric: OptionalIdentifier = None,
    stage: Annotated[Literal["learning", "flat", "daily", "weekly"] | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    tenant = tenant_scope(caller, tenant_id, required=False)
    page_limit(limit, request.app.state.settings.api_page_limit_max)
    select = (
        Select(", ".join(PROFILE_COLUMNS), "analytics.v_anomaly_profile")
        .eq("tenant_id", tenant)
        .eq("factory_id", factory_id)
        .eq("machine_id", machine_id)
        .eq("sensor_id", sensor_id)
        .eq("metric", metric)
        .eq("stage", stage)
        .after(PROFILE_KEY, keyset(cursor, (str,) * len(PROFILE_KEY)))
    )
    return fetch_page(request, select, key=PROFILE_KEY, limit=limit, columns=PROFILE_COLUMNS, csv_allowed=False)
