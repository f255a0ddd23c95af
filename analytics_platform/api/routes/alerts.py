"""GET /v1/alerts (the notification log: what was sent, to which channel, and whether it arrived)
and GET /v1/rejects (messages that broke their contract, per topic and reason). Both answer the
question an engineer asks when numbers look wrong: did anything tell us, and did data go missing?"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from psycopg.rows import tuple_row

from analytics_platform.api.auth import Caller, tenant_scope
from analytics_platform.api.models import ERRORS, FORBIDDEN, OTHER_TENANT, AlertLogEntry, AlertLogPage, Rejects
from analytics_platform.api.params import Cursor, Limit, OptionalIdentifier, TenantParam, page_limit, time_range, utc
from analytics_platform.api.query import Select, fetch_page
from analytics_platform.api.respond import json_response, keyset

router = APIRouter(prefix="/v1", tags=["alerts and rejects"])

RECENT = timedelta(days=7)
LOG_COLUMNS = tuple(AlertLogEntry.model_fields)
LOG_KEY = ("created_at", "log_id")
OptionalStart = Annotated[datetime | None, Query(description="Inclusive; default end - 7 days")]
OptionalEnd = Annotated[datetime | None, Query(description="Exclusive; default now")]
# The newest rejection first. rejected_at is the drain transaction's now(), shared by every message
# a batch set aside, so within it the later Kafka coordinate is the newer message (as in the CLI).
NEWEST = "rejected_at DESC, kafka_offset DESC, kafka_partition DESC, kafka_ts DESC"


def _recent(request: Request, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = utc("end", end) if end is not None else datetime.now(UTC)
    start = utc("start", start) if start is not None else end - RECENT
    return time_range(start, end, request.app.state.settings.api_max_result_range_days)


@router.get(
    "/alerts",
    response_model=AlertLogPage,
    summary="The alert log: every notification, newest first",
    description=(
        "One row per notification and channel, written when a condition opened, re-opened or resolved, in "
        "[start, end) (default: the last 7 days). `status` says whether it was sent, failed, muted or had no "
        "configured channel. A tenant key sees its tenant's rows; platform-wide ones (asset checks, runs) "
        "carry no tenant and only an admin key sees them."
    ),
    responses={**ERRORS, **OTHER_TENANT},
)
def alert_log(
    request: Request,
    caller: Caller,
    tenant_id: TenantParam = None,
    rule_name: OptionalIdentifier = None,
    status: Annotated[
        Literal["pending", "sent", "failed", "muted", "unconfigured", "gave_up"] | None,
        Query(description="Only notifications in this delivery state"),
    ] = None,
    start: OptionalStart = None,
    end: OptionalEnd = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    tenant = tenant_scope(caller, tenant_id, required=False)
    page_limit(limit, request.app.state.settings.api_page_limit_max)
    start, end = _recent(request, start, end)
    select = (
        Select(", ".join(LOG_COLUMNS), "analytics.alert_log")
        .eq("tenant_id", tenant)
        .eq("rule_name", rule_name)
        .eq("status", status)
        .cmp("created_at", ">=", start)
        .cmp("created_at", "<", end)
        .after(LOG_KEY, keyset(cursor, (datetime, int)), descending=True)
    )
    return fetch_page(
        request, select, key=LOG_KEY, limit=limit, columns=LOG_COLUMNS, csv_allowed=False, descending=True
    )


@router.get(
    "/rejects",
    response_model=Rejects,
    summary="Rejected messages per topic and reason",
    description=(
        "Messages that broke their contract and were set aside (never dropped) in [start, end) of their "
        "rejection (default: the last 7 days), per topic and reason, most rejected first, with the newest one's "
        "detail and Kafka coordinates. A rejected message may not even name its tenant, so only an admin key "
        "may read them (403 for a tenant key)."
    ),
    responses={**ERRORS, **FORBIDDEN},
)
def rejects(
    request: Request,
    caller: Caller,
    topic: Annotated[str | None, Query(min_length=1, max_length=249, pattern=r"^[^\x00]+$")] = None,
    start: OptionalStart = None,
    end: OptionalEnd = None,
) -> Response:
    if caller.tenant_id is not None:
        raise HTTPException(403, "rejected messages are not attributable to a tenant: they need an admin API key")
    start, end = _recent(request, start, end)
    select = Select(
        "topic, reason, count(*)::bigint, min(rejected_at), max(rejected_at), "
        f"(array_agg(detail ORDER BY {NEWEST}))[1], "
        f"(array_agg(kafka_partition ORDER BY {NEWEST}))[1], "
        f"(array_agg(kafka_offset ORDER BY {NEWEST}))[1]",
        "analytics.rejected_message",
    )
    select.eq("topic", topic).cmp("rejected_at", ">=", start).cmp("rejected_at", "<", end)
    where = " AND ".join(select.conditions) or "true"
    with request.app.state.db.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            f"SELECT {select.columns} FROM {select.table} WHERE {where} GROUP BY topic, reason "
            "ORDER BY count(*) DESC, topic, reason",
            select.params,
        ).fetchall()
    names = ("topic", "reason", "count", "first_at", "last_at", "last_detail", "last_partition", "last_offset")
    items = [dict(zip(names, row, strict=True)) for row in rows]
    return json_response({"start": start, "end": end, "total": sum(i["count"] for i in items), "items": items})
