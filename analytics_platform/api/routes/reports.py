"""GET /v1/reports/energy-performance: the ISO 50001 energy performance report of a factory and its
machines over a week, a month, a year (the tenant's calendar) or a custom range.

Per machine and for the factory: energy use, the energy performance indicators (EnPIs) of the KPI
catalogue combined over the period from the stored hours (kpi_catalog.combine, the same code as
GET /v1/kpi), the active baseline's expected energy for the hours it can judge, the deviation
(kWh and %), and its cumulative sum (CUSUM) step by step, with the baseline's version, R² and
drivers, and the Dagster assets the numbers came from. Expected energy is predicted here from the
stored hours with the machine's *active* model, so the report always answers for the model in
force (stored deviations keep the model active when they were computed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

import polars as pl
import psycopg
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from analytics_platform.api.auth import Caller, tenant_scope
from analytics_platform.api.models import ERRORS, OTHER_TENANT
from analytics_platform.api.params import End, Identifier, OptionalIdentifier, Start, TenantParam, time_range
from analytics_platform.api.respond import CSV_RESPONSE, json_response, page_response, wants_csv
from analytics_platform.api.routes.kpi import Hours, read_hours, tenant_timezone
from analytics_platform.transforms import energy_baseline as eb
from analytics_platform.transforms import kpi_catalog as K
from analytics_platform.transforms import kpi_periods as kp

router = APIRouter(prefix="/v1", tags=["reports"])

# The energy performance indicators the report shows, in this order (all from the KPI catalogue).
ENPIS = (
    K.ENERGY_KWH,
    K.SEC_KWH_PER_UNIT,
    K.PRODUCTION_COUNT,
    K.ENERGY_COST,
    K.CARBON_KG,
    K.AVG_DEMAND_KW,
    K.PEAK_DEMAND_KW,
    K.LOAD_FACTOR,
)
# what the baseline leaves out: hours with fault or maintenance time (as it was trained)
EXCLUSION_KPIS = (K.FAULT_TIME_S, K.PLANNED_DOWNTIME_S)
HOURLY_ASSET, BASELINE_ASSET = "hourly_machine_kpis", "energy_baseline_models"
NO_BASELINE = "no active energy baseline for the machine (GET /v1/baselines)"


class Indicator(BaseModel):
    kpi: str
    label: str
    value: float | None
    unit: str
    null_reason: str | None


class BaselineRef(BaseModel):
    machine_id: str
    baseline_id: int
    version: int
    r2: float | None
    adj_r2: float | None
    drivers: list[str]
    coefficients: dict[str, float | None]
    accepted: bool
    warning: str | None
    trained_from: datetime
    trained_to: datetime


class CusumStep(BaseModel):
    start: datetime
    end: datetime
    label: str
    actual_kwh: float
    expected_kwh: float
    deviation_kwh: float
    deviation_pct: float | None
    cusum_kwh: float
    hours: int


class ReportEntry(BaseModel):
    period_start: datetime
    period_end: datetime
    label: str
    scope: Literal["machine", "factory"]
    machine_id: str | None
    machines: int
    energy_kwh: float | None
    indicators: list[Indicator]
    baselines: list[BaselineRef]
    expected_kwh: float | None = Field(description="Σ of the active baselines' predictions over the hours compared")
    actual_kwh_compared: float | None = Field(description="Σ of the actual energy over the same hours")
    deviation_kwh: float | None = Field(description="actual - expected over the hours compared (positive: above)")
    deviation_pct: float | None
    cusum_kwh: float | None = Field(description="The CUSUM at the end of the period (= deviation_kwh)")
    hours_stored: int
    hours_compared: int
    null_reason: str | None
    steps: list[CusumStep]


class Lineage(BaseModel):
    asset: str
    partitions: list[str]
    url: str


class EnergyPerformanceReport(BaseModel):
    tenant_id: str
    factory_id: str
    period: Literal["week", "month", "year", "custom"]
    timezone: str
    items: list[ReportEntry]
    lineage: list[Lineage]


CSV_COLUMNS = (
    "period_start",
    "period_end",
    "label",
    "scope",
    "machine_id",
    "baseline_versions",
    "r2",
    "drivers",
    "energy_kwh",
    "sec_kwh_per_unit",
    "expected_kwh",
    "deviation_kwh",
    "deviation_pct",
    "step_start",
    "step_end",
    "step_label",
    "step_actual_kwh",
    "step_expected_kwh",
    "step_deviation_kwh",
    "step_deviation_pct",
    "cusum_kwh",
    "step_hours",
)


def _baselines(conn: psycopg.Connection, tenant: str, factory_id: str, machine_id: str | None) -> dict[str, dict]:
    """The active baseline of each machine of the factory (of this tenant only), by machine."""
    query = (
        "SELECT baseline_id, machine_id, version, target, drivers, coefficients, p_values, std_errors, r2, adj_r2, "
        "rmse, mae, n, excluded, warning, accepted, trained_from, trained_to FROM analytics.analytics_baseline "
        "WHERE active AND tenant_id = %s AND factory_id = %s" + (" AND machine_id = %s" if machine_id else "")
    )
    params = (tenant, factory_id, machine_id) if machine_id else (tenant, factory_id)
    return {row["machine_id"]: row for row in conn.execute(query, params).fetchall()}


def _ref(row: dict) -> dict:
    return {
        "machine_id": row["machine_id"],
        "baseline_id": row["baseline_id"],
        "version": row["version"],
        "r2": row["r2"],
        "adj_r2": row["adj_r2"],
        "drivers": list(row["drivers"]),
        "coefficients": row["coefficients"],
        "accepted": row["accepted"],
        "warning": row["warning"],
        "trained_from": row["trained_from"],
        "trained_to": row["trained_to"],
    }


def excluded(hour: dict[str, K.Part]) -> bool:
    """An hour the baseline does not judge (`energy_baseline.ABNORMAL_TIME`, the rule it was trained by)."""
    return eb.abnormal_hour({kpi: (part.value, part.details) for kpi, part in hour.items()})


def hour_energy(hours: list[tuple[datetime, dict[str, K.Part]]], baseline: dict | None) -> list[kp.HourEnergy]:
    """Each stored hour's actual kWh and the active baseline's expected kWh (None where the hour is
    excluded, or a driver or the energy is missing)."""
    if baseline is None or not hours:
        return []
    fit = eb.BaselineFit.from_dict(dict(baseline))
    sources = eb.source_kpis(fit.drivers)  # a degree-hour driver is computed from its temperature KPI
    drivers = eb.with_degree_drivers(
        pl.DataFrame(
            {d: [(h.get(d).value if h.get(d) is not None else None) for _, h in hours] for d in sources},
            schema={d: pl.Float64 for d in sources},
        ),
        fit.drivers,
    )
    expected = eb.predict(fit, drivers).to_list() if fit.drivers else [fit.coefficients[eb.INTERCEPT]] * len(hours)
    out = []
    for (start, hour), predicted in zip(hours, expected, strict=True):
        energy = hour.get(fit.target)
        actual = energy.value if energy is not None else None
        usable = not excluded(hour) and actual is not None and predicted is not None
        out.append(kp.HourEnergy(start, actual if usable else None, predicted if usable else None))
    return out


def _entry(
    span: kp.CalendarPeriod,
    steps: list[kp.CalendarPeriod],
    machine: str | None,
    members: dict[str, list[tuple[datetime, dict[str, K.Part]]]],
    baselines: dict[str, dict],
) -> dict:
    periods = [p for hours in members.values() for _, p in hours]
    combined = K.combine(ENPIS, periods, machines=len(members))
    energy: list[kp.HourEnergy] = []
    refs = []
    for name, hours in sorted(members.items()):
        if name in baselines:
            refs.append(_ref(baselines[name]))
            energy += hour_energy(hours, baselines[name])
    comparable = [h for h in energy if h.expected is not None]
    series = kp.cusum(energy, steps) if refs else []
    expected = sum(s.expected_kwh for s in series) if comparable else None
    actual = sum(s.actual_kwh for s in series) if comparable else None
    deviation = actual - expected if comparable else None
    reason = None
    if not refs:
        reason = NO_BASELINE if machine else "no machine of the factory has an active energy baseline"
    elif not comparable:
        reason = "no stored hour of the period can be compared (energy or a driver missing, or fault/maintenance)"
    return {
        "period_start": span.start,
        "period_end": span.end,
        "label": span.label,
        "scope": "machine" if machine else "factory",
        "machine_id": machine,
        "machines": len(members),
        "energy_kwh": combined[K.ENERGY_KWH.name].value,
        "indicators": [
            {
                "kpi": kpi.name,
                "label": kpi.label,
                "value": combined[kpi.name].value,
                "unit": kpi.unit,
                "null_reason": combined[kpi.name].null_reason,
            }
            for kpi in ENPIS
        ],
        "baselines": refs,
        "expected_kwh": expected,
        "actual_kwh_compared": actual,
        "deviation_kwh": deviation,
        "deviation_pct": kp.percent(deviation, expected) if deviation is not None else None,
        "cusum_kwh": series[-1].cusum_kwh if comparable else None,
        "hours_stored": sum(len(h) for h in members.values()),
        "hours_compared": len(comparable),
        "null_reason": reason,
        "steps": [s.__dict__ for s in series] if comparable else [],
    }


def _steps(period: str, span: kp.CalendarPeriod, zone: str) -> list[kp.CalendarPeriod]:
    """The CUSUM's steps: local days, or the months of a year."""
    if period == "year":
        return kp.calendar_periods("month", span.start, span.end, zone)
    return kp.local_days(span.start, span.end, zone)


def _lineage(base_url: str, spans: list[kp.CalendarPeriod]) -> list[dict]:
    base = base_url.rstrip("/")
    first, last = spans[0].start, spans[-1].end
    hours = [f"{first:%Y-%m-%d-%H:00}", f"{last:%Y-%m-%d-%H:00}"]
    return [
        {"asset": HOURLY_ASSET, "partitions": hours, "url": f"{base}/assets/{quote(HOURLY_ASSET)}?view=partitions"},
        {"asset": BASELINE_ASSET, "partitions": [], "url": f"{base}/assets/{quote(BASELINE_ASSET)}"},
    ]


def _csv_rows(items: list[dict]) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        sec = next(i["value"] for i in item["indicators"] if i["kpi"] == K.SEC_KWH_PER_UNIT.name)
        head = {
            "period_start": item["period_start"],
            "period_end": item["period_end"],
            "label": item["label"],
            "scope": item["scope"],
            "machine_id": item["machine_id"],
            "baseline_versions": " ".join(f"{b['machine_id']}:v{b['version']}" for b in item["baselines"]),
            "r2": " ".join(f"{b['machine_id']}:{b['r2']}" for b in item["baselines"]),
            "drivers": " ".join(f"{b['machine_id']}:{'+'.join(b['drivers'])}" for b in item["baselines"]),
            "energy_kwh": item["energy_kwh"],
            "sec_kwh_per_unit": sec,
            "expected_kwh": item["expected_kwh"],
            "deviation_kwh": item["deviation_kwh"],
            "deviation_pct": item["deviation_pct"],
        }
        for step in item["steps"] or [None]:
            rows.append(
                {
                    **head,
                    **(
                        {
                            "step_start": step["start"],
                            "step_end": step["end"],
                            "step_label": step["label"],
                            "step_actual_kwh": step["actual_kwh"],
                            "step_expected_kwh": step["expected_kwh"],
                            "step_deviation_kwh": step["deviation_kwh"],
                            "step_deviation_pct": step["deviation_pct"],
                            "cusum_kwh": step["cusum_kwh"],
                            "step_hours": step["hours"],
                        }
                        if step
                        else {}
                    ),
                }
            )
    return rows


@router.get(
    "/reports/energy-performance",
    response_model=EnergyPerformanceReport,
    summary="ISO 50001 energy performance report: EnPIs, baseline expected energy, deviation and CUSUM",
    description=(
        "Per machine of the factory (or the one `machine_id`) and for the factory: energy use and the energy "
        "performance indicators over each period, combined from the stored hours by the KPI catalogue's rules; "
        "the active baseline's expected energy over the hours it can judge (no fault or maintenance, every "
        "driver known), the deviation (actual - expected, kWh and %) and its cumulative sum (CUSUM) per local "
        "day (per month for a year), with the baseline's version, R² and drivers. Periods as GET /v1/kpi: "
        "week, month and year in the tenant's calendar, or `custom` = [start, end). `Accept: text/csv`: one "
        "row per CUSUM step."
    ),
    responses={**ERRORS, **OTHER_TENANT, 200: CSV_RESPONSE},
)
def energy_performance(
    request: Request,
    caller: Caller,
    factory_id: Identifier,
    start: Start,
    end: End,
    period: Annotated[Literal["week", "month", "year", "custom"], Query(description="Period kind")] = "month",
    tenant_id: TenantParam = None,
    machine_id: OptionalIdentifier = None,
) -> Response:
    state = request.app.state
    tenant = tenant_scope(caller, tenant_id, required=True)
    start, end = time_range(start, end, state.settings.api_max_result_range_days)
    with state.db.connection() as conn:
        zone = tenant_timezone(conn, tenant)
        spans = (
            [kp.CalendarPeriod(start, end, "custom")]
            if period == "custom"
            else kp.calendar_periods(period, start, end, zone)
        )
        baselines = _baselines(conn, tenant, factory_id, machine_id)
        drivers = {d for row in baselines.values() for d in (*eb.source_kpis(row["drivers"]), row["target"])}
        by_name = {kpi.name: kpi for kpi in state.kpis}
        wanted = {k.name: k for k in (*ENPIS, *EXCLUSION_KPIS)}
        wanted |= {d: by_name[d] for d in drivers if d in by_name}
        wanted |= {
            n: by_name[n]
            for k in list(wanted.values())
            for n in (*k.combine.numerator, *k.combine.denominator)
            if n in by_name
        }
        hours = read_hours(conn, tenant, factory_id, machine_id, wanted.values(), spans) if spans else []
    items = []
    for span, machines in zip(spans, hours, strict=True):
        members = _timed(machines)
        steps = _steps(period, span, zone)
        for name in sorted(members):
            items.append(_entry(span, steps, name, {name: members[name]}, baselines))
        if machine_id is None and members:
            items.append(_entry(span, steps, None, members, baselines))
    if wants_csv(request):
        return page_response(request, _csv_rows(items), limit=10**9, key=(), columns=CSV_COLUMNS)
    return json_response(
        {
            "tenant_id": tenant,
            "factory_id": factory_id,
            "period": period,
            "timezone": zone,
            "items": items,
            "lineage": _lineage(state.settings.dagster_ui_url, spans) if spans else [],
        }
    )


def _timed(machines: Hours) -> dict[str, list[tuple[datetime, dict[str, K.Part]]]]:
    """Per machine id (the factory is given), its stored hours in time order."""
    return {machine: periods for (_, machine), periods in machines.items()}
