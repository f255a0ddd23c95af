"""GET /v1/readings: raw sensor readings of one machine and metric over a time range (at most
API_MAX_RANGE_DAYS; longer ranges belong to /v1/agg)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from analytics_platform.api.auth import Caller, tenant_scope
from analytics_platform.api.metric_catalog import known_metric
from analytics_platform.api.models import ERRORS, OTHER_TENANT, Page
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
from analytics_platform.api.query import Select, fetch_page
from analytics_platform.api.respond import CSV_RESPONSE, keyset

router = APIRouter(prefix="/v1", tags=["readings"])


class Reading(BaseModel):
    time: datetime = Field(description="Reading time, ISO-8601 UTC")
    tenant_id: str
    factory_id: str
    machine_id: str
    sensor_id: str
    metric: str
    value: float | None
    unit: str | None = None
    payload: dict[str, Any] | list[Any] | str | float | bool | None = None
    event_id: str | None = None


class ReadingsPage(Page):
    items: list[Reading]


COLUMNS = tuple(Reading.model_fields)
KEY = ("time", "dedup_key")


@router.get(
    "/readings",
    response_model=ReadingsPage,
    summary="Raw readings of one machine and metric",
    description="Readings in [start, end), by time. `Accept: text/csv` returns CSV (payload as JSON text).",
    responses={**ERRORS, **OTHER_TENANT, 200: CSV_RESPONSE},
)
def readings(
    request: Request,
    caller: Caller,
    factory_id: Identifier,
    machine_id: Identifier,
    metric: Identifier,
    start: Start,
    end: End,
    tenant_id: TenantParam = None,
    sensor_id: OptionalIdentifier = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Response:
    state = request.app.state
    tenant = tenant_scope(caller, tenant_id, required=True)
    page_limit(limit, state.settings.api_page_limit_max)
    start, end = time_range(start, end, state.settings.api_max_range_days)
    known_metric(state.metric_catalog, state.db, tenant, metric)
    select = (
        Select(", ".join((*COLUMNS, "dedup_key")), "analytics.raw_sensor_readings")
        .eq("tenant_id", tenant)
        .eq("factory_id", factory_id)
        .eq("machine_id", machine_id)
        .eq("metric", metric)
        .eq("sensor_id", sensor_id)
        .cmp("time", ">=", start)
        .cmp("time", "<", end)
        .after(KEY, keyset(cursor, (datetime, str)))
    )
    return fetch_page(request, select, key=KEY, limit=limit, columns=COLUMNS)
