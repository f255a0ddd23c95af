"""Energy forecasts: read the hourly KPIs a forecast learns from, forecast, replace one issue's rows.

An issue is identified by its origin (`issued_at`, a UTC midnight): re-materialising the daily
partition that ends there recomputes and replaces exactly that issue, every tenant's rows of it,
in one transaction, so /v1/forecasts never serves half an issue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import polars as pl
import psycopg

from analytics_platform.ingest.store import copy_rows
from analytics_platform.results.frames import lock_results, read_frame
from analytics_platform.results.plant import read_plant
from analytics_platform.transforms import forecast as fc
from analytics_platform.transforms.machine_kpis import resolve_tenants

FORECAST_COLUMNS = list(fc.FORECAST_SCHEMA)


@dataclass(frozen=True)
class ForecastRun:
    series: int  # series forecast (machine or factory x kpi)
    skipped: list[fc.Skipped]
    rows: int
    deleted: int
    fit_s: float  # wall seconds spent fitting and forecasting (not reading or writing)


def read_hours(conn: psycopg.Connection, start: datetime, end: datetime) -> pl.DataFrame:
    """The stored hourly energy, peak demand and outdoor temperature of every machine with a value,
    hours starting in [start, end) (HOURS_SCHEMA)."""
    return read_frame(
        conn,
        "SELECT period_start, tenant_id, factory_id, machine_id, kpi, value FROM analytics.analytics_kpi "
        "WHERE period = 'hour' AND period_start >= %s AND period_start < %s AND kpi = ANY(%s) "
        "AND value IS NOT NULL",
        (start, end, [*fc.TARGETS, fc.TEMP]),
        fc.HOURS_SCHEMA,
    )


def tenant_timezones(conn: psycopg.Connection, tenants: list[str]) -> dict[str, str]:
    """Each tenant's IANA timezone from the plant metadata (its own row, else '*'; UTC without either)."""
    resolved, _, _ = resolve_tenants(read_plant(conn), tenants)
    return {t: z or "UTC" for t, z in resolved.select("tenant_id", "timezone").iter_rows()}


def replace_forecasts(conn: psycopg.Connection, rows: pl.DataFrame, issued_at: datetime) -> int:
    """Delete the issue `issued_at` (every tenant) and write `rows`, in one transaction."""
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, "analytics_forecast")
        cur.execute("DELETE FROM analytics.analytics_forecast WHERE issued_at = %s", (issued_at,))
        deleted = cur.rowcount
        copy_rows(cur, "analytics_forecast", rows, FORECAST_COLUMNS)
    return deleted


def recompute_forecasts(conn: psycopg.Connection, issued_at: datetime, options: fc.ForecastOptions) -> ForecastRun:
    """Forecast every machine and factory from the `history_days` of hourly KPIs before
    `issued_at` and replace that issue."""
    hours = read_hours(conn, issued_at - fc.DAY * options.history_days, issued_at)
    zones = tenant_timezones(conn, hours["tenant_id"].unique().to_list())
    began = time.perf_counter()
    rows, skipped = fc.forecast_all(hours, issued_at, zones, options)
    fit_s = time.perf_counter() - began
    deleted = replace_forecasts(conn, rows, issued_at)
    series = rows.filter(pl.col("period") == "day").select("tenant_id", "factory_id", "machine_id", "kpi").n_unique()
    return ForecastRun(series, skipped, rows.height, deleted, fit_s)
