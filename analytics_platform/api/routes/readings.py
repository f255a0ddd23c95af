"""GET /v1/readings: raw sensor readings of one machine and metric over a time range."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from analytics_platform.api.errors import invalid
from analytics_platform.api.params import decode_cursor, encode_cursor, text, time_range

router = APIRouter(prefix="/v1", tags=["readings"])

Identifier = Annotated[str, Query(min_length=1, max_length=200)]


class Reading(BaseModel):
    time: datetime = Field(description="Reading time, ISO-8601 UTC")
    tenant_id: str
    factory_id: str
    machine_id: str
    sensor_id: str
    metric: str
    value: float
    unit: str | None = None
    payload: dict[str, Any] | list[Any] | str | float | bool | None = None
    event_id: str | None = None


class ReadingsPage(BaseModel):
    items: list[Reading]
    count: int = Field(description="Items in this page")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


_QUERY = """
SELECT time, tenant_id, factory_id, machine_id, sensor_id, metric, value, unit, payload, event_id, dedup_key
FROM analytics.raw_sensor_readings
WHERE tenant_id = %(tenant_id)s AND factory_id = %(factory_id)s AND machine_id = %(machine_id)s
  AND metric = %(metric)s AND time >= %(start)s AND time < %(end)s
  AND (%(sensor_id)s::text IS NULL OR sensor_id = %(sensor_id)s)
  AND (%(after_time)s::timestamptz IS NULL OR (time, dedup_key) > (%(after_time)s, %(after_key)s))
ORDER BY time, dedup_key
LIMIT %(limit)s
"""


@router.get(
    "/readings",
    response_model=ReadingsPage,
    summary="Raw readings of one machine and metric",
    responses={422: {"description": "A parameter is invalid"}, 503: {"description": "Database unavailable"}},
)
def readings(
    request: Request,
    tenant_id: Identifier,
    factory_id: Identifier,
    machine_id: Identifier,
    metric: Identifier,
    start: Annotated[datetime, Query(description="Inclusive, ISO-8601 UTC, e.g. 2025-08-20T00:00:00Z")],
    end: Annotated[datetime, Query(description="Exclusive, ISO-8601 UTC")],
    sensor_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="Page size")] = 1000,
    cursor: Annotated[str | None, Query(max_length=2000, description="From the previous page")] = None,
) -> ReadingsPage:
    state = request.app.state
    for name, value in (
        ("tenant_id", tenant_id),
        ("factory_id", factory_id),
        ("machine_id", machine_id),
        ("metric", metric),
        ("sensor_id", sensor_id),
    ):
        text(name, value)
    if limit > state.settings.api_page_limit_max:
        raise invalid("limit", f"limit must be at most {state.settings.api_page_limit_max} (API_PAGE_LIMIT_MAX)")
    start, end = time_range(start, end, state.settings.api_max_range_days)
    if metric not in state.known_metrics:
        raise invalid("metric", f"unknown metric {metric!r}; known: {', '.join(sorted(state.known_metrics))}")
    after_time, after_key = None, None
    if cursor:
        raw_time, after_key = decode_cursor(cursor, 2)
        try:
            after_time = datetime.fromisoformat(raw_time)
        except (TypeError, ValueError):
            raise invalid("cursor", "cursor is not one this API returned", value=cursor) from None
        if not isinstance(after_key, str):
            raise invalid("cursor", "cursor is not one this API returned", value=cursor)
    params = {
        "tenant_id": tenant_id,
        "factory_id": factory_id,
        "machine_id": machine_id,
        "metric": metric,
        "sensor_id": sensor_id,
        "start": start,
        "end": end,
        "after_time": after_time,
        "after_key": after_key,
        "limit": limit + 1,
    }
    with state.db.connection() as conn:
        rows = conn.execute(_QUERY, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["time"], rows[-1]["dedup_key"]) if more else None
    items = [Reading(**{k: v for k, v in row.items() if k != "dedup_key"}) for row in rows]
    return ReadingsPage(items=items, count=len(items), next_cursor=next_cursor)
