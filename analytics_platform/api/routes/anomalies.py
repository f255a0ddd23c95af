"""GET /v1/anomalies (recent, open or resolved, by machine, by severity), GET /v1/anomalies/{id}
and POST /v1/anomalies/{id}/resolve: the API's one write, run as the analytics_resolver role,
which may set the four resolution columns and nothing else."""

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
    AnomalyPage,
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
    status: Annotated[Literal["open", "resolved", "all"], Query(description="open = active")] = "all",
    min_severity: Annotated[int, Query(ge=1, le=5)] = 1,
    anomaly_type: OptionalIdentifier = None,
    start: Annotated[datetime | None, Query(description="Inclusive; default end - 7 days")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive; default now")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    state = request.app.state
    tenant = tenant_scope(caller, tenant_id, required=False)
    page_limit(limit, state.settings.api_page_limit_max)
    end = utc("end", end) if end is not None else datetime.now(UTC)
    start = utc("start", start) if start is not None else end - RECENT
    start, end = time_range(start, end, state.settings.api_max_result_range_days)
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
