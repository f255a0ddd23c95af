"""Energy baselines (ISO 50001 EnB) in the database: training samples from the hourly KPIs,
fitted versions (a new one deactivates the previous), deviations per hour and day, and what-if
predictions from the active model.

A sample is one machine-hour: energy_kwh against the configured driver KPIs (production_count,
avg_outdoor_temp, ...). Hours with any fault or maintenance time are excluded from training and
from deviations: the model describes normal operation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl
import psycopg
from psycopg import sql

from analytics_platform.ingest.store import copy_rows
from analytics_platform.results.frames import lock_results, read_frame
from analytics_platform.transforms import energy_baseline as eb
from analytics_platform.transforms.kpi_catalog import ENERGY_KWH
from analytics_platform.transforms.window_aggregates import TIME

log = logging.getLogger(__name__)
MACHINE = ("tenant_id", "factory_id", "machine_id")
TARGET = ENERGY_KWH.name  # the KPI a baseline predicts
DEVIATION_COLUMNS = [
    "period_start",
    "period_end",
    "period",
    "tenant_id",
    "factory_id",
    "machine_id",
    "baseline_version",
    "actual_kwh",
    "predicted_kwh",
    "deviation_kwh",
    "deviation_pct",
    "z",
    "severity",
]


def hourly_samples(
    conn: psycopg.Connection,
    start: datetime,
    end: datetime,
    drivers: Sequence[str],
    *,
    machine: Sequence[str] | None = None,
    exclusions: Sequence[tuple[datetime, datetime]] = (),
) -> pl.DataFrame:
    """One row per machine-hour in [start, end): energy_kwh, each driver (a degree-hour driver from its
    temperature KPI: energy_baseline.with_degree_drivers), `excluded` (fault or
    maintenance time in the hour, or an hour overlapping one of `exclusions`: periods the caller
    knows were not normal operation, e.g. a trial week). `machine` (tenant, factory, machine) reads
    that machine alone: an on-demand training must not read, nor refit, anyone else's."""
    sources = [name for name in eb.source_kpis(drivers) if name != TARGET]
    columns = [
        sql.SQL("max(value) FILTER (WHERE kpi = {}) AS {}").format(sql.Literal(name), sql.Identifier(name))
        for name in (TARGET, *sources)
    ]
    params: list = [start, end]
    query = sql.SQL(
        "SELECT period_start, period_end, tenant_id, factory_id, machine_id, {columns}, "
        "({abnormal})::int AS excluded FROM analytics.analytics_kpi "
        "WHERE period = 'hour' AND period_start >= %s AND period_start < %s{machine}"
        " GROUP BY 1, 2, 3, 4, 5"
    ).format(
        columns=sql.SQL(", ").join(columns),
        abnormal=_abnormal_sql(),
        machine=sql.SQL(" AND tenant_id = %s AND factory_id = %s AND machine_id = %s" if machine else ""),
    )
    if machine:
        params.extend(machine)
    schema = {
        "period_start": TIME,
        "period_end": TIME,
        **{c: pl.String() for c in MACHINE},
        **{name: pl.Float64() for name in (TARGET, *sources)},
        "excluded": pl.Int8(),  # CSV booleans are t/f
    }
    samples = read_frame(conn, query, params, schema).with_columns(pl.col("excluded").cast(pl.Boolean))
    samples = eb.with_degree_drivers(samples, drivers)  # heating / cooling degree hours of a temperature KPI
    for since, until in exclusions:
        overlaps = (pl.col("period_start") < until) & (pl.col("period_end") > since)
        samples = samples.with_columns(excluded=pl.col("excluded") | overlaps)
    return samples


def _abnormal_sql() -> sql.Composable:
    """`eb.ABNORMAL_TIME` over one machine-hour's KPI rows: an amount above 0 in any of them."""
    terms = []
    for kpi, key in eb.ABNORMAL_TIME:
        amount = sql.SQL("value") if key is None else sql.SQL("(details->>{})::float8").format(sql.Literal(key))
        terms.append(sql.SQL("coalesce(max({}) FILTER (WHERE kpi = {}), 0) > 0").format(amount, sql.Literal(kpi)))
    return sql.SQL(" OR ").join(terms)


@dataclass(frozen=True)
class BaselineOutcome:
    machine: tuple[str, str, str]
    version: int | None  # None: refused
    message: str  # the warning or the refusal, or "accepted"
    r2: float | None = None  # of the stored model; None when refused


def store_baseline(
    conn: psycopg.Connection,
    machine: Sequence[str],
    fit: eb.BaselineFit,
    trained_from: datetime,
    trained_to: datetime,
    r2_min: float,
) -> int:
    """Insert `fit` as the machine's next version and make it the only active one."""
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, "analytics_baseline")
        cur.execute(
            "UPDATE analytics.analytics_baseline SET active = false, deactivated_at = now() "
            "WHERE tenant_id = %s AND factory_id = %s AND machine_id = %s AND active",
            tuple(machine),
        )
        cur.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM analytics.analytics_baseline "
            "WHERE tenant_id = %s AND factory_id = %s AND machine_id = %s",
            tuple(machine),
        )
        version = cur.fetchone()[0]
        record = fit.to_dict()
        cur.execute(
            "INSERT INTO analytics.analytics_baseline (tenant_id, factory_id, machine_id, version, target, drivers, "
            "coefficients, p_values, std_errors, r2, adj_r2, rmse, mae, n, excluded, trained_from, trained_to, "
            "accepted, warning, cv_rmse_pct) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                *machine,
                version,
                fit.target,
                list(fit.drivers),
                json.dumps(record["coefficients"]),
                json.dumps(record["p_values"]),
                json.dumps(record["std_errors"]),
                fit.r2,
                fit.adj_r2,
                fit.rmse,
                fit.mae,
                fit.n,
                fit.excluded,
                trained_from,
                trained_to,
                fit.r2 >= r2_min,
                fit.warning,
                record["cv_rmse_pct"],
            ),
        )
    return version


def train_baselines(
    conn: psycopg.Connection,
    start: datetime,
    end: datetime,
    drivers: Sequence[str],
    *,
    min_samples: int,
    r2_min: float,
    machine: Sequence[str] | None = None,
    exclusions: Sequence[tuple[datetime, datetime]] = (),
) -> list[BaselineOutcome]:
    """Fit one baseline per machine on its hours in [start, end) (of `machine` alone when given,
    leaving out the hours overlapping `exclusions`); a machine with too few usable hours is refused
    (its previous model stays active) with the reason."""
    samples = hourly_samples(conn, start, end, drivers, machine=machine, exclusions=exclusions)
    if machine and samples.is_empty():
        return [BaselineOutcome(tuple(machine), None, "refused: no hourly KPIs of the machine in the training range")]
    outcomes = []
    for key, rows in sorted(samples.group_by(MACHINE), key=lambda item: item[0]):
        trained = tuple(str(k) for k in key)
        try:
            fit = eb.fit_baseline(rows, TARGET, drivers, min_samples=min_samples, r2_threshold=r2_min)
        except eb.BaselineRefused as exc:
            outcomes.append(BaselineOutcome(trained, None, f"refused: {exc}"))
            continue
        version = store_baseline(conn, trained, fit, start, end, r2_min)
        outcomes.append(BaselineOutcome(trained, version, fit.warning or "accepted", fit.r2))
    return outcomes


def usable_hours(
    conn: psycopg.Connection,
    machine: Sequence[str],
    start: datetime,
    end: datetime,
    drivers: Sequence[str],
    exclusions: Sequence[tuple[datetime, datetime]] = (),
) -> int:
    """The hours of `machine` in [start, end) a training with `drivers` and `exclusions` would fit
    on, counted by the same rules as the training itself, so a request the run would refuse for too
    few samples is turned down before a run is queued for it."""
    samples = hourly_samples(conn, start, end, drivers, machine=machine, exclusions=exclusions)
    return eb.usable_rows(samples, TARGET, drivers)


def active_baselines(conn: psycopg.Connection) -> dict[tuple[str, str, str], tuple[int, eb.BaselineFit]]:
    """Each machine's active model."""
    out = {}
    for row in conn.execute(
        "SELECT tenant_id, factory_id, machine_id, version, target, drivers, coefficients, p_values, std_errors, "
        "r2, adj_r2, rmse, mae, n, excluded, warning, cv_rmse_pct FROM analytics.analytics_baseline WHERE active"
    ).fetchall():
        fit = eb.BaselineFit.from_dict(
            dict(
                zip(
                    (
                        "target",
                        "drivers",
                        "coefficients",
                        "p_values",
                        "std_errors",
                        "r2",
                        "adj_r2",
                        "rmse",
                        "mae",
                        "n",
                        "excluded",
                        "warning",
                        "cv_rmse_pct",
                    ),
                    row[4:],
                    strict=True,
                )
            )
        )
        out[tuple(row[:3])] = (row[3], fit)
    return out


def predict_what_if(conn: psycopg.Connection, machine: Sequence[str], drivers: Mapping[str, float]) -> float:
    """Expected energy (kWh per hour) of `machine` for the given driver values, from its active
    baseline; a missing driver or model raises with what is missing."""
    model = active_baselines(conn).get(tuple(machine))
    if model is None:
        raise LookupError(f"no active energy baseline for {'/'.join(machine)}: train one first")
    frame = pl.DataFrame({name: [float(drivers[name])] for name in drivers})
    return float(eb.predict(model[1], frame)[0])


def compute_deviations(conn: psycopg.Connection, start: datetime, end: datetime, *, period: str) -> pl.DataFrame:
    """Deviation rows (DEVIATION_COLUMNS) of [start, end): one per machine-hour (`period` hour), or
    one per machine for the whole range (`period` day: the sums of its usable hours, judged with
    RMSE·√hours)."""
    models = active_baselines(conn)
    frames = []
    drivers = sorted({d for _, fit in models.values() for d in fit.drivers})
    everyone = hourly_samples(conn, start, end, drivers) if models else pl.DataFrame()
    by_machine = everyone.partition_by(MACHINE, as_dict=True) if not everyone.is_empty() else {}
    for machine, (version, fit) in models.items():
        samples = by_machine.get(machine)
        if samples is None:
            continue
        samples = samples.filter(~pl.col("excluded") & pl.col(TARGET).is_not_null())
        if samples.is_empty():
            continue
        samples = samples.with_columns(predicted=eb.predict(fit, samples)).filter(pl.col("predicted").is_not_null())
        if samples.is_empty():
            continue
        if period == "day":
            samples = samples.group_by(MACHINE).agg(
                pl.lit(start, TIME).alias("period_start"),
                pl.lit(end, TIME).alias("period_end"),
                pl.col(TARGET).sum(),
                pl.col("predicted").sum(),
                hours=pl.len(),
            )
        rows = eb.deviations(samples, fit, key=MACHINE)
        frames.append(rows.with_columns(baseline_version=pl.lit(version), period=pl.lit(period)))
    if not frames:
        return pl.DataFrame(schema={c: pl.String() for c in DEVIATION_COLUMNS}).clear()
    return pl.concat(frames).select(
        "period_start",
        "period_end",
        "period",
        *MACHINE,
        "baseline_version",
        actual_kwh="actual",
        predicted_kwh="predicted",
        deviation_kwh="deviation",
        deviation_pct="deviation_pct",
        z="z",
        severity="severity",
    )


def replace_deviations(
    conn: psycopg.Connection,
    rows: pl.DataFrame,
    start: datetime,
    end: datetime,
    period: str,
    machines: str = "true",
    params: Sequence = (),
) -> int:
    """Replace the `period` deviations of [start, end) with `rows`; `machines` (SQL on the machine
    columns, with `params`) limits what is replaced to the machines a scoped run judged."""
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, "analytics_baseline_deviation")
        cur.execute(
            "DELETE FROM analytics.analytics_baseline_deviation WHERE period = %s AND period_start >= %s "
            f"AND period_start < %s AND {machines}",
            (period, start, end, *params),
        )
        deleted = cur.rowcount
        if not rows.is_empty():
            copy_rows(cur, "analytics_baseline_deviation", rows, DEVIATION_COLUMNS)
    return deleted
