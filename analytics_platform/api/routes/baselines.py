"""Energy baselines: GET /v1/baselines, GET /v1/baselines/{id}, GET /v1/baseline-deviation and
POST /v1/baseline/predict (what-if: the expected energy of a machine for given driver values)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal

import polars as pl
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from analytics_platform.api.auth import Caller, tenant_scope
from analytics_platform.api.errors import invalid
from analytics_platform.api.models import (
    BAD_JSON,
    ERRORS,
    NOT_FOUND,
    OTHER_TENANT,
    Baseline,
    BaselinePage,
    Deviation,
    DeviationPage,
    Prediction,
    PredictRequest,
)
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
from analytics_platform.api.respond import CSV_RESPONSE, json_response, keyset
from analytics_platform.transforms import energy_baseline as eb

router = APIRouter(prefix="/v1", tags=["energy baselines"])

BASELINE_COLUMNS = tuple(Baseline.model_fields)
DEVIATION_COLUMNS = tuple(Deviation.model_fields)
DEVIATION_KEY = ("period_start", "machine_id")


@router.get(
    "/baselines",
    response_model=BaselinePage,
    summary="Energy baseline models (ISO 50001 EnB)",
    description="Fitted baseline versions, by id. Only the active one per machine unless `include_inactive`.",
    responses={**ERRORS, **OTHER_TENANT},
)
def baselines(
    request: Request,
    caller: Caller,
    tenant_id: TenantParam = None,
    factory_id: OptionalIdentifier = None,
    machine_id: OptionalIdentifier = None,
    include_inactive: bool = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    state = request.app.state
    tenant = tenant_scope(caller, tenant_id, required=False)
    page_limit(limit, state.settings.api_page_limit_max)
    select = (
        Select(", ".join(BASELINE_COLUMNS), "analytics.analytics_baseline")
        .eq("tenant_id", tenant)
        .eq("factory_id", factory_id)
        .eq("machine_id", machine_id)
        .eq("active", None if include_inactive else True)
        .after(("baseline_id",), keyset(cursor, (int,)))
    )
    return fetch_page(request, select, key=("baseline_id",), limit=limit, columns=BASELINE_COLUMNS, csv_allowed=False)


@router.get(
    "/baselines/{baseline_id}",
    response_model=Baseline,
    summary="One energy baseline model",
    responses={**ERRORS, **NOT_FOUND},
)
def baseline(request: Request, caller: Caller, baseline_id: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> Response:
    select = Select(", ".join(BASELINE_COLUMNS), "analytics.analytics_baseline").eq("baseline_id", baseline_id)
    query, params = select.eq("tenant_id", caller.tenant_id).sql(("baseline_id",), 1)
    with request.app.state.db.connection() as conn:
        row = conn.execute(query, params).fetchone()
    if row is None:
        raise HTTPException(404, f"baseline {baseline_id} not found")
    return json_response(row)


@router.get(
    "/baseline-deviation",
    response_model=DeviationPage,
    summary="Actual vs. baseline-predicted energy per hour or day",
    description="Periods whose start lies in [start, end), by period start and machine. CSV on `Accept: text/csv`.",
    responses={**ERRORS, **OTHER_TENANT, 200: CSV_RESPONSE},
)
def deviation(
    request: Request,
    caller: Caller,
    factory_id: Identifier,
    start: Start,
    end: End,
    period: Annotated[Literal["hour", "day"], Query()] = "hour",
    tenant_id: TenantParam = None,
    machine_id: OptionalIdentifier = None,
    severity: Annotated[Literal["normal", "warning", "critical"] | None, Query()] = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Response:
    state = request.app.state
    tenant = tenant_scope(caller, tenant_id, required=True)
    page_limit(limit, state.settings.api_page_limit_max)
    start, end = time_range(start, end, state.settings.api_max_result_range_days)
    select = (
        Select(", ".join(DEVIATION_COLUMNS), "analytics.analytics_baseline_deviation")
        .eq("tenant_id", tenant)
        .eq("factory_id", factory_id)
        .eq("machine_id", machine_id)
        .eq("period", period)
        .eq("severity", severity)
        .cmp("period_start", ">=", start)
        .cmp("period_start", "<", end)
        .after(DEVIATION_KEY, keyset(cursor, (datetime, str)))
    )
    return fetch_page(request, select, key=DEVIATION_KEY, limit=limit, columns=DEVIATION_COLUMNS)


@router.post(
    "/baseline/predict",
    response_model=Prediction,
    summary="What-if: expected energy from the machine's active baseline",
    description="Give a value for every driver of the active model (see GET /v1/baselines); unknown drivers are a 422.",
    responses={**ERRORS, **BAD_JSON, **NOT_FOUND},
)
def predict(request: Request, caller: Caller, body: PredictRequest) -> Response:
    tenant = tenant_scope(caller, body.tenant_id, required=True, location="body")
    columns = "baseline_id, version, target, drivers, coefficients, p_values, std_errors, r2, adj_r2, rmse, mae, n, "
    columns += "excluded, warning"
    select = (
        Select(columns, "analytics.analytics_baseline")
        .eq("tenant_id", tenant)
        .eq("factory_id", body.factory_id)
        .eq("machine_id", body.machine_id)
        .eq("active", True)
    )
    query, params = select.sql(("baseline_id",), 1)
    with request.app.state.db.connection() as conn:
        row = conn.execute(query, params).fetchone()
    if row is None:
        raise HTTPException(
            404, f"no active energy baseline for {tenant}/{body.factory_id}/{body.machine_id}: train one first"
        )
    drivers = list(row["drivers"])
    for name, value in body.drivers.items():
        if name not in drivers:
            raise invalid(
                ("drivers", name),
                f"{name!r} is not a driver of this baseline; its drivers: {', '.join(drivers)}",
                location="body",
            )
        if not math.isfinite(value):
            raise invalid(("drivers", name), "driver values must be finite numbers", location="body")
    missing = [d for d in drivers if d not in body.drivers]
    if missing:
        raise invalid("drivers", f"missing driver value(s): {', '.join(missing)}", location="body")
    fit = eb.BaselineFit.from_dict({k: row[k] for k in row if k not in ("baseline_id", "version")})
    predicted = float(eb.predict(fit, pl.DataFrame({d: [float(body.drivers[d])] for d in drivers}))[0])
    return json_response(
        {
            "baseline_id": row["baseline_id"],
            "version": row["version"],
            "tenant_id": tenant,
            "factory_id": body.factory_id,
            "machine_id": body.machine_id,
            "target": fit.target,
            "unit": "kWh",
            "drivers": {d: float(body.drivers[d]) for d in drivers},
            "predicted": predicted if math.isfinite(predicted) else None,
        }
    )
