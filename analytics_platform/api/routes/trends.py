"""Trend judgements: GET /v1/trends (analytics.analytics_trend, written hourly by the series_trends
asset). Read-only, tenant-scoped like every listing: a tenant key reads only its own tenant's rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from analytics_platform.api.auth import Caller, tenant_scope
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

router = APIRouter(prefix="/v1", tags=["trends"])


class Trend(BaseModel):
    """One series' trend over the window [window_start, window_end)."""

    window_end: datetime = Field(description="Exclusive end of the window (an hour boundary)")
    window_start: datetime
    window_hours: int
    tenant_id: str
    factory_id: str
    machine_id: str
    source: Literal["metric", "kpi"] = Field(description="metric: a sensor's hourly mean; kpi: an hourly KPI")
    sensor_id: str = Field(description="The sensor of a metric series; empty for a KPI")
    name: str = Field(description="The metric or the KPI", examples=["temp", "oee"])
    unit: str | None
    n: int = Field(description="Hourly points in the window")
    slope_per_hour: float | None = Field(description="Theil–Sen slope (median of pairwise slopes), unit per hour")
    intercept: float | None = Field(description="Theil–Sen intercept at window_start: median(y) − slope·median(x)")
    mk_s: int = Field(description="Mann–Kendall S")
    mk_var_s: float = Field(description="Var(S) with the tie correction")
    mk_z: float = Field(description="Z with the continuity correction")
    p_value: float = Field(description="Two-sided p-value of the Mann–Kendall test")
    confidence: float = Field(description="1 − p_value")
    direction: Literal["increasing", "decreasing", "stable"]
    first_time: datetime
    last_time: datetime


class TrendPage(Page):
    items: list[Trend]


TREND_COLUMNS = tuple(Trend.model_fields)
TREND_KEY = ("window_end", "machine_id", "source", "sensor_id", "name", "window_hours")


@router.get(
    "/trends",
    response_model=TrendPage,
    summary="Trend judgements per series and per hourly KPI",
    description="Windows whose end lies in [start, end), by window end, machine and series. Theil–Sen slope and "
    "Mann–Kendall test (docs/api.md#trends). CSV on `Accept: text/csv`.",
    responses={**ERRORS, **OTHER_TENANT, 200: CSV_RESPONSE},
)
def trends(
    request: Request,
    caller: Caller,
    factory_id: Identifier,
    start: Start,
    end: End,
    tenant_id: TenantParam = None,
    machine_id: OptionalIdentifier = None,
    source: Annotated[Literal["metric", "kpi"] | None, Query()] = None,
    name: OptionalIdentifier = None,
    sensor_id: OptionalIdentifier = None,
    window_hours: Annotated[int | None, Query(ge=1, le=8760)] = None,
    direction: Annotated[Literal["increasing", "decreasing", "stable"] | None, Query()] = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Response:
    state = request.app.state
    tenant = tenant_scope(caller, tenant_id, required=True)
    page_limit(limit, state.settings.api_page_limit_max)
    start, end = time_range(start, end, state.settings.api_max_result_range_days)
    select = (
        Select(", ".join(TREND_COLUMNS), "analytics.analytics_trend")
        .eq("tenant_id", tenant)
        .eq("factory_id", factory_id)
        .eq("machine_id", machine_id)
        .eq("source", source)
        .eq("name", name)
        .eq("sensor_id", sensor_id)
        .eq("window_hours", window_hours)
        .eq("direction", direction)
        .cmp("window_end", ">=", start)
        .cmp("window_end", "<", end)
        .after(TREND_KEY, keyset(cursor, (datetime, str, str, str, str, int)))
    )
    return fetch_page(request, select, key=TREND_KEY, limit=limit, columns=TREND_COLUMNS)
