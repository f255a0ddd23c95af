"""Energy forecasts: GET /v1/forecasts, the stored rows of one issue of the daily forecast asset.

Served exactly as stored (analytics.analytics_forecast): no re-computation, so the dashboard, an
alert rule and a CSV export read the same numbers. Without `issued_at` the latest issue of the
factory is served (one query: the newest `issued_at` of the tenant's factory, then its rows).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from analytics_platform.api.auth import Caller, tenant_scope
from analytics_platform.api.models import ERRORS, OTHER_TENANT, Page
from analytics_platform.api.params import (
    Cursor,
    Identifier,
    Limit,
    OptionalIdentifier,
    TenantParam,
    page_limit,
    time_range,
    utc,
)
from analytics_platform.api.query import Select, fetch_page
from analytics_platform.api.respond import CSV_RESPONSE, keyset

router = APIRouter(prefix="/v1", tags=["forecasts"])


class Forecast(BaseModel):
    """One forecast hour or day of a machine, or of a factory (machine_id '*')."""

    issued_at: datetime = Field(description="The origin: the UTC midnight the forecast starts from")
    period: Literal["hour", "day"]
    target_start: datetime
    target_end: datetime
    horizon_day: int = Field(description="1 = the day starting at issued_at")
    tenant_id: str
    factory_id: str
    machine_id: str = Field(description="'*' = the factory: energy summed, peak = the sum of its machines' peaks")
    kpi: Literal["energy_kwh", "peak_demand_kw"]
    value: float
    lower: float
    upper: float
    level: float = Field(description="Nominal coverage of [lower, upper]")
    unit: str
    model: str


class ForecastPage(Page):
    items: list[Forecast]


COLUMNS = tuple(Forecast.model_fields)
KEY = ("target_start", "machine_id", "kpi")
TABLE = "analytics.analytics_forecast"


@router.get(
    "/forecasts",
    response_model=ForecastPage,
    summary="Energy and peak-demand forecasts with prediction intervals (per hour or day)",
    description="One issue of the daily `energy_forecasts` asset for a factory: its machines' rows and the factory's "
    "(machine_id `*`), as stored. Without `issued_at`, the factory's latest issue. `start`/`end` narrow the targets "
    "(target_start in [start, end)). Ordered by target start, machine and KPI. CSV on `Accept: text/csv`.",
    responses={**ERRORS, **OTHER_TENANT, 200: CSV_RESPONSE},
)
def forecasts(
    request: Request,
    caller: Caller,
    factory_id: Identifier,
    tenant_id: TenantParam = None,
    machine_id: OptionalIdentifier = None,  # '*' = the factory's rows
    kpi: Annotated[Literal["energy_kwh", "peak_demand_kw"] | None, Query()] = None,
    period: Annotated[Literal["hour", "day"], Query()] = "hour",
    issued_at: Annotated[datetime | None, Query(description="The issue (its origin); default: the latest")] = None,
    start: Annotated[datetime | None, Query(description="Inclusive bound on target_start")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive bound on target_start")] = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Response:
    state = request.app.state
    tenant = tenant_scope(caller, tenant_id, required=True)
    page_limit(limit, state.settings.api_page_limit_max)
    if start is not None and end is not None:
        start, end = time_range(start, end, state.settings.api_max_result_range_days)
    else:
        start = utc("start", start) if start is not None else None
        end = utc("end", end) if end is not None else None
    select = Select(", ".join(COLUMNS), TABLE).eq("tenant_id", tenant).eq("factory_id", factory_id)
    if issued_at is not None:
        select.eq("issued_at", utc("issued_at", issued_at))
    else:  # the latest issue of this tenant's factory (index: tenant, kpi, period, ...; a factory has few issues)
        select.cond(
            f"issued_at = (SELECT max(issued_at) FROM {TABLE} WHERE tenant_id = {{}} AND factory_id = {{}})",
            tenant,
            factory_id,
        )
    select = (
        select.eq("machine_id", machine_id)
        .eq("kpi", kpi)
        .eq("period", period)
        .cmp("target_start", ">=", start)
        .cmp("target_start", "<", end)
        .after(KEY, keyset(cursor, (datetime, str, str)))
    )
    return fetch_page(request, select, key=KEY, limit=limit, columns=COLUMNS)
