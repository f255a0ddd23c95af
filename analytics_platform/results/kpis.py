"""Machine KPIs: read a range's inputs, compute every period of it, replace those periods' rows.

The hourly asset calls `recompute_kpis` with the hour; the daily one with the day and its
shifts, so a day is computed from the same readings (and the same code) as its hours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import psycopg

from analytics_platform.ingest.store import copy_rows
from analytics_platform.results.frames import lock_results, read_frame
from analytics_platform.results.plant import read_plant
from analytics_platform.transforms import machine_kpis as mk

log = logging.getLogger(__name__)
KPI_COLUMNS = list(mk.OUTPUT_SCHEMA)


@dataclass(frozen=True)
class KpiRun:
    machines: int
    readings: int
    rows: int
    deleted: int


def read_inputs(
    conn: psycopg.Connection, start: datetime, end: datetime, *, drivers: list[str], gap_s: int, lookback: timedelta
) -> mk.KpiInputs:
    """The readings, run states and boundary context of [start, end).

    `prior` looks back `lookback` (a counter silent for longer restarts from its next reading);
    `next_seen` only needs to look `gap_s` ahead: a reading further away cannot shorten a silence
    ending at the range's end.
    """
    metrics = [*mk.KPI_METRICS, *drivers]
    readings = read_frame(
        conn,
        "SELECT time, tenant_id, factory_id, machine_id, metric, value FROM analytics.raw_sensor_readings "
        "WHERE time >= %s AND time < %s AND metric = ANY(%s)",
        (start, end, metrics),
        mk.READING_SCHEMA,
    )
    prior = read_frame(
        conn,
        "SELECT DISTINCT ON (tenant_id, factory_id, machine_id, metric) time, tenant_id, factory_id, machine_id, "
        "metric, value FROM analytics.raw_sensor_readings WHERE time < %s AND time >= %s AND metric = ANY(%s) "
        "ORDER BY tenant_id, factory_id, machine_id, metric, time DESC",
        (start, start - lookback, list(mk.KPI_METRICS)),
        mk.READING_SCHEMA,
    )
    states, prior_states = read_run_states(conn, start, end, lookback)
    next_seen = read_frame(
        conn,
        "SELECT tenant_id, factory_id, machine_id, min(time) FROM analytics.raw_sensor_readings "
        "WHERE time >= %s AND time <= %s AND metric = ANY(%s) GROUP BY 1, 2, 3",
        (end, end + timedelta(seconds=gap_s), metrics),
        mk.SEEN_SCHEMA,
    )
    return mk.KpiInputs(start, end, readings, prior, states, prior_states, next_seen)


def read_run_states(
    conn: psycopg.Connection, start: datetime, end: datetime, lookback: timedelta
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Run-state messages in [start, end), and each machine's last one before `start` (looked for
    back to `lookback`): a state holds until the next one, so the range starts in it."""
    states = read_frame(
        conn,
        "SELECT time, tenant_id, factory_id, machine_id, run_state FROM analytics.raw_device_health "
        "WHERE run_state IS NOT NULL AND time >= %s AND time < %s",
        (start, end),
        mk.STATE_SCHEMA,
    )
    prior = read_frame(
        conn,
        "SELECT DISTINCT ON (tenant_id, factory_id, machine_id) time, tenant_id, factory_id, machine_id, run_state "
        "FROM analytics.raw_device_health WHERE run_state IS NOT NULL AND time < %s AND time >= %s "
        "ORDER BY tenant_id, factory_id, machine_id, time DESC, run_state",
        (start, start - lookback),
        mk.STATE_SCHEMA,
    )
    return states, prior


def replace_kpis(conn: psycopg.Connection, rows: pl.DataFrame, periods: pl.DataFrame) -> int:
    """Delete the KPI rows of `periods` (by kind and start) and write `rows`, in one transaction."""
    deleted = 0
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, "analytics_kpi")
        for kind, starts in periods.group_by("period").agg(pl.col("period_start")).iter_rows():
            cur.execute(
                "DELETE FROM analytics.analytics_kpi WHERE period = %s AND period_start = ANY(%s)", (kind, starts)
            )
            deleted += cur.rowcount
        copy_rows(cur, "analytics_kpi", rows, KPI_COLUMNS)
    return deleted


def recompute_kpis(
    conn: psycopg.Connection,
    periods: pl.DataFrame,
    options: mk.KpiOptions,
    *,
    lookback: timedelta,
) -> KpiRun:
    """Recompute `periods` (PERIOD_SCHEMA) from the readings of the range they span."""
    if periods.is_empty():
        return KpiRun(0, 0, 0, 0)
    start, end = periods["period_start"].min(), periods["period_end"].max()
    inputs = read_inputs(conn, start, end, drivers=list(options.drivers), gap_s=options.gap_s, lookback=lookback)
    rows = mk.machine_kpis(inputs, periods, read_plant(conn), options)
    deleted = replace_kpis(conn, rows, periods)
    machines = rows.select(mk.MACHINE).n_unique() if not rows.is_empty() else 0
    return KpiRun(machines, inputs.readings.height, rows.height, deleted)


def day_periods(conn: psycopg.Connection, day_start: datetime, day_end: datetime) -> pl.DataFrame:
    """The day itself and the shifts of every tenant seen in it (those ending within the day)."""
    tenants = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT tenant_id FROM analytics.analytics_kpi WHERE period = 'hour' "
            "AND period_start >= %s AND period_start < %s",
            (day_start, day_end),
        ).fetchall()
    ]
    resolved, _, shifts = mk.resolve_tenants(read_plant(conn), tenants)
    return pl.concat(
        [
            mk.fixed_periods("day", day_start, day_end, day_end - day_start),
            mk.shift_periods(resolved, shifts, day_start, day_end),
        ]
    )
