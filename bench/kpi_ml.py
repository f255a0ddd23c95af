"""KPI + anomaly + baseline benchmark: one day of 100 machines, as the hourly/daily assets run it.

Prints, from one run on one database, each step in a fresh (spawned) child process with its wall
time, rows in/out and peak memory (the child's VmHWM, and its RSS after imports, before any work):

  * raw read (floor)        the day's readings COPY'd out into Polars: the least any step reading
                            them can cost
  * baseline fits           `train_baselines`: one energy baseline per machine over 90 days of hourly
                            KPI rows (energy_kwh ~ production_count + avg_outdoor_temp + avg_outdoor_pressure)
  * hourly KPIs (24 h)      `recompute_kpis` with the day's 24 hourly periods in one call (single-run backfill)
  * day + shift KPIs        `day_periods` + `recompute_kpis`, then the day's baseline deviations (as the
                            daily asset does)
  * anomalies, hour 1       `recompute_anomalies` for the day's first hour: fits and stores one Isolation
                            Forest per machine and metric, learns and stores the profiles
  * anomalies, hours 2-24   the other 23 hours in one call (as the asset's run of a day), reusing the
                            stored forests and profiles

and the total "day's KPIs + anomalies" against the 60 s goal.

Synthetic plant (t1, factories f1..f5, machines mc-01..mc-20), over the day and the day before:
temp, humidity, pressure, vibration, power every 10 s; energy, count_total, count_good,
outdoor_temp, outdoor_pressure every 60 s; run_state on device.health (every 5 min + on change):
running, planned stops 06:00-06:15 and 12:00-12:30 UTC, one 5-20 min fault a day per machine,
a 10 min idle spell on every tenth machine. Spikes (~6 sigma) on a quarter of the machines and a
20 min jam (running, counter flat) on four, so every detector has something to find.

Each step also reports its CPU time (user + system of the step's process, not the forest workers' nor
PostgreSQL's): on a shared machine it moves much less than the wall time.

Usage: python bench/kpi_ml.py [--factories 5] [--machines 20] [--keep] [--profile DIR] [--rebase-hours H]
[--compare-rebase-hours H]
(`--factories 2 --machines 10` is the development size: 20 machines, 100 judged series)
Uses TEST_DATABASE_URL (an admin URL; the bench creates and drops its own database bench_kpi_ml),
else starts an embedded PostgreSQL under .run/bench/. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import polars as pl
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.devstack.postgres import EmbeddedPostgres  # noqa: E402
from analytics_platform.devstack.processes import free_port  # noqa: E402
from analytics_platform.ingest.store import copy_rows  # noqa: E402
from analytics_platform.migrations import apply_migrations  # noqa: E402
from analytics_platform.settings import utc_options  # noqa: E402
from bench.aggregates import RAW_COLUMNS  # noqa: E402 — the raw sensor columns a bench COPYs
from bench.ingest import machine_info  # noqa: E402

DAY = datetime(2025, 8, 20, tzinfo=UTC)
D0 = DAY - timedelta(days=1)  # the day before: anomaly history and KPI lookback
SPAN_S = 2 * 86_400
HISTORY_DAYS = 90
DRIVERS = ["production_count", "avg_outdoor_temp", "avg_outdoor_pressure"]
GOAL_S = 60.0
DATABASE = "bench_kpi_ml"

# metric -> (sensor id, set point, daily amplitude, noise), every 10 s (as the simulator's SENSORS)
FAST = {
    "temp": ("s-temp", 65.0, 4.0, 0.4),
    "humidity": ("s-hum", 45.0, 8.0, 0.8),
    "pressure": ("s-press", 420.0, 15.0, 2.0),
    "vibration": ("s-vib", 3.2, 0.5, 0.15),
}
# energy model (kW while the hour's drivers hold): the same linear function in the day's power
# readings and the 90 days of hourly KPI rows, so the baselines fit and the day's deviations are normal
BASE_KW, KWH_PER_UNIT, KW_PER_DEGC, KW_PER_HPA = 10.0, 0.02, 0.5, 0.3
RATE_UNITS_S = 0.45  # ideal cycle time 2 s (plant.yaml) at 90 % performance
HEALTH_COLUMNS = (
    "time",
    "tenant_id",
    "factory_id",
    "machine_id",
    "run_state",
    "schema_version",
    "dedup_key",
    "topic",
    "kafka_partition",
    "kafka_offset",
)
KPI_COLUMNS = (
    "period",
    "period_start",
    "period_end",
    "tenant_id",
    "factory_id",
    "machine_id",
    "kpi",
    "value",
    "unit",
    "null_reason",
    "details",
)


# ----- synthetic data ------------------------------------------------------------------------


def machines(factories: int, per_factory: int) -> list[tuple[int, str, str]]:
    return [(f * per_factory + m, f"f{f + 1}", f"mc-{m + 1:02d}") for f in range(factories) for m in range(per_factory)]


def outdoor(t: np.ndarray, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Outdoor temperature (degC, daily cycle peaking 15:00 UTC) and pressure (hPa, slow drift)."""
    temp = 25.0 + 6.0 * np.sin(2 * np.pi * ((t % 86_400) - 9 * 3600) / 86_400) + (index % 5) * 0.5
    pressure = 1010.0 + 3.0 * np.sin(2 * np.pi * t / (3 * 86_400) + index) + rng.normal(0, 0.3, t.size)
    return temp + rng.normal(0, 0.3, t.size), pressure


def state_changes(index: int, rng: np.random.Generator) -> list[tuple[int, str]]:
    """(second since D0, state) of the two days: running, two planned stops a day, one fault, an
    idle spell on every tenth machine."""
    spells = []
    for day in range(2):
        at = day * 86_400
        spells += [(at + 6 * 3600, 15 * 60, "planned_stop"), (at + 12 * 3600, 30 * 60, "planned_stop")]
        fault_at = int(rng.integers(1, 23)) * 3600 + int(rng.integers(0, 3600))
        if 5 * 3600 <= fault_at <= 7 * 3600 or 11 * 3600 <= fault_at <= 13 * 3600:
            fault_at += 2 * 3600
        spells.append((at + fault_at, int(rng.integers(5, 21)) * 60, "fault"))
        if index % 10 == 0:
            spells.append((at + 16 * 3600 + 17 * 60, 10 * 60, "idle"))
    changes = [(0, "running")]
    for start, length, state in sorted(spells):
        changes += [(start, state), (start + length, "running")]
    return changes


def machine_frames(index: int, factory: str, machine: str, offset: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(readings, run-state rows) of one machine over [D0, D0 + 2 days)."""
    rng = np.random.default_rng(1000 + index)
    changes = state_changes(index, rng)
    change_t = np.array([t for t, _ in changes])
    change_state = np.array([s for _, s in changes])

    phase = index % 10  # machines do not all sample on the same second
    t10 = np.arange(phase, SPAN_S, 10, dtype=np.int64)
    running = change_state[np.searchsorted(change_t, t10, side="right") - 1] == "running"
    rate = np.where(running, RATE_UNITS_S * (1 + 0.02 * (index % 5)), 0.0)
    jam = index % 25 == 3
    if jam:  # running, but the counter stands still for 20 minutes (a stoppage)
        rate[(t10 >= 86_400 + 10 * 3600) & (t10 < 86_400 + 10 * 3600 + 20 * 60)] = 0.0
    o_temp, o_press = outdoor(t10, index, rng)
    power = (
        BASE_KW
        + (index % 5)
        + KW_PER_DEGC * o_temp
        + KW_PER_HPA * (o_press - 1000.0)
        + KWH_PER_UNIT * rate * 3600
        + rng.normal(0, 1.0, t10.size)
    )
    energy = 100_000.0 + index * 1000 + np.cumsum(power * 10 / 3600)
    total = np.floor(np.cumsum(rate * 10))
    good = np.floor(total * 0.98)

    series: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    day_cycle = np.sin(2 * np.pi * (t10 % 86_400) / 86_400)
    for metric, (sensor, setpoint, amplitude, noise) in FAST.items():
        values = setpoint + amplitude * day_cycle + rng.normal(0, noise, t10.size)
        if index % 4 == 1:  # a few spikes of ~6 sigma on the benchmarked day
            sigma = math.sqrt(amplitude**2 / 2 + noise**2)
            for at in rng.integers(t10.size // 2, t10.size, 2):
                values[at] += 6 * sigma * (1 if rng.random() < 0.5 else -1)
        series.append((sensor, metric, t10, values))
    series.append(("s-pwr", "power", t10, power))
    every_min = slice(0, None, 6)
    series += [
        ("s-meter", "energy", t10[every_min], np.round(energy[every_min], 3)),
        ("s-count", "count_total", t10[every_min], total[every_min]),
        ("s-count", "count_good", t10[every_min], good[every_min]),
        ("s-outdoor-temp", "outdoor_temp", t10[every_min], np.round(o_temp[every_min], 2)),
        ("s-outdoor-press", "outdoor_pressure", t10[every_min], np.round(o_press[every_min], 2)),
    ]
    frames = []
    for sensor, metric, t, values in series:
        frames.append(
            pl.DataFrame({"s": t, "value": values}).select(
                time=pl.lit(D0) + pl.duration(seconds=pl.col("s")),
                sensor_id=pl.lit(sensor),
                metric=pl.lit(metric),
                value=pl.col("value").cast(pl.Float64),
            )
        )
    readings = pl.concat(frames).with_row_index("n", offset=offset)
    readings = readings.select(
        pl.col("time").cast(pl.Datetime("us", "UTC")),
        tenant_id=pl.lit("t1"),
        factory_id=pl.lit(factory),
        machine_id=pl.lit(machine),
        sensor_id="sensor_id",
        metric="metric",
        value="value",
        schema_version=pl.lit(1, pl.Int16),
        dedup_key=pl.format("bench|{}|{}|{}", pl.lit(factory), pl.lit(machine), pl.col("n")),
        topic=pl.lit("sensors.device.readings"),
        kafka_partition=pl.lit(0, pl.Int32),
        kafka_offset=pl.col("n").cast(pl.Int64),
    )

    heartbeat = np.arange(phase, SPAN_S, 300, dtype=np.int64)
    beat_state = change_state[np.searchsorted(change_t, heartbeat, side="right") - 1]
    t_all = np.concatenate([change_t, heartbeat])
    s_all = np.concatenate([change_state, beat_state])
    health = (
        pl.DataFrame({"s": t_all, "run_state": s_all})
        .with_row_index("n")
        .select(
            time=(pl.lit(D0) + pl.duration(seconds=pl.col("s"))).cast(pl.Datetime("us", "UTC")),
            tenant_id=pl.lit("t1"),
            factory_id=pl.lit(factory),
            machine_id=pl.lit(machine),
            run_state="run_state",
            schema_version=pl.lit(1, pl.Int16),
            dedup_key=pl.format("bench-health|{}|{}|{}", pl.lit(factory), pl.lit(machine), pl.col("n")),
            topic=pl.lit("device.health"),
            kafka_partition=pl.lit(0, pl.Int32),
            kafka_offset=pl.col("n").cast(pl.Int64) + offset,
        )
    )
    return readings, health


def kpi_history(fleet: list[tuple[int, str, str]]) -> pl.DataFrame:
    """HISTORY_DAYS x 24 hourly KPI rows per machine before DAY: the six the baseline reads, energy
    the model's linear function of the drivers plus noise; ~3 % of hours have fault time (excluded)."""
    rng = np.random.default_rng(7)
    hours = HISTORY_DAYS * 24
    start_s = np.arange(hours, dtype=np.int64) * 3600
    t = start_s + int((DAY - timedelta(days=HISTORY_DAYS) - D0).total_seconds())
    frames = []
    for index, factory, machine in fleet:
        count = np.floor(RATE_UNITS_S * 3600 * rng.uniform(0.6, 1.0, hours))
        o_temp = 25.0 + 6.0 * np.sin(2 * np.pi * ((t % 86_400) - 9 * 3600) / 86_400) + rng.normal(0, 2.0, hours)
        o_press = 1010.0 + rng.normal(0, 4.0, hours)
        energy = (
            BASE_KW
            + (index % 5)
            + KW_PER_DEGC * o_temp
            + KW_PER_HPA * (o_press - 1000.0)
            + KWH_PER_UNIT * count
            + rng.normal(0, 1.0, hours)
        )
        fault = np.where(rng.random(hours) < 0.03, 600.0, 0.0)
        base = pl.DataFrame({"s": start_s}).select(
            period=pl.lit("hour"),
            period_start=pl.lit(DAY - timedelta(days=HISTORY_DAYS)) + pl.duration(hours=pl.col("s") // 3600),
            tenant_id=pl.lit("t1"),
            factory_id=pl.lit(factory),
            machine_id=pl.lit(machine),
        )
        base = base.with_columns(period_end=pl.col("period_start") + pl.duration(hours=1))
        for kpi, values, unit, details in (
            ("energy_kwh", energy, "kWh", None),
            ("production_count", count, "units", None),
            ("avg_outdoor_temp", o_temp, "", None),
            ("avg_outdoor_pressure", o_press, "", None),
            ("fault_time_s", fault, "s", None),
            ("planned_downtime_s", np.zeros(hours), "s", '{"maintenance_s": 0}'),
        ):
            frames.append(
                base.with_columns(
                    kpi=pl.lit(kpi),
                    value=pl.Series(values, dtype=pl.Float64),
                    unit=pl.lit(unit),
                    null_reason=pl.lit(None, pl.String),
                    details=pl.lit(details, pl.String),
                )
            )
    return pl.concat(frames, how="diagonal").select(KPI_COLUMNS)


# ----- the timed steps (each in a fresh spawned child) -----------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu_s() -> float:
    """User + system CPU seconds of this process (and of children it waited for: not the forest
    workers, which are the forkserver's): on a machine shared with other work, wall time carries
    their load, CPU time much less. PostgreSQL's share is not in it either."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_step(name: str, url: str, profile: Path | None = None, rebase_hours: float | None = None) -> dict:
    """One step in this (spawned) process; wall time, rows, VmHWM (not ru_maxrss: Linux carries
    ru_maxrss over fork + exec from the large parent) and the RSS before the work started. With
    `profile`, the step runs under cProfile and its stats go to `profile`/<step>.prof."""
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        out = profiler.runcall(run_step, name, url, None, rebase_hours)
        profile.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(profile / f"{name}.prof")
        return out
    from analytics_platform.results import anomalies, baselines, kpis
    from analytics_platform.results.anomalies import RAW_SCHEMA, AnomalyOptions
    from analytics_platform.results.frames import read_frame
    from analytics_platform.transforms.machine_kpis import KpiOptions, fixed_periods
    from analytics_platform.transforms.seasonal import SeasonalOptions

    day_end = DAY + timedelta(days=1)
    out: dict = {"step": name, "base_rss_mib": _status_kib("VmRSS") / 1024}
    cpu_before = _cpu_s()
    with psycopg.connect(url, autocommit=True, options=utc_options(url)) as conn:
        began = time.perf_counter()
        if name == "raw_read":
            frame = read_frame(
                conn,
                "SELECT time, tenant_id, factory_id, machine_id, sensor_id, metric, value "
                "FROM analytics.raw_sensor_readings WHERE time >= %s AND time < %s",
                (DAY, day_end),
                RAW_SCHEMA,
            )
            out.update(rows_in=frame.height, rows_out=frame.height)
        elif name == "baselines":
            outcomes = baselines.train_baselines(
                conn, DAY - timedelta(days=HISTORY_DAYS), DAY, DRIVERS, min_samples=1000, r2_min=0.8
            )
            accepted = sum(o.version is not None for o in outcomes)
            out.update(rows_in=HISTORY_DAYS * 24 * len(outcomes), rows_out=accepted)
            out["note"] = f"{accepted} of {len(outcomes)} fitted; " + "; ".join(sorted({o.message for o in outcomes}))
        elif name == "kpi_hours":
            hours = fixed_periods("hour", DAY, day_end, timedelta(hours=1))
            run = kpis.recompute_kpis(conn, hours, KpiOptions(), lookback=timedelta(hours=24))
            out.update(rows_in=run.readings, rows_out=run.rows, note=f"{run.machines} machines, 24 hours")
        elif name == "kpi_day":
            periods = kpis.day_periods(conn, DAY, day_end)
            run = kpis.recompute_kpis(conn, periods, KpiOptions(), lookback=timedelta(hours=24))
            kpi_s = time.perf_counter() - began
            deviations = baselines.compute_deviations(conn, DAY, day_end, period="day")
            baselines.replace_deviations(conn, deviations, DAY, day_end, "day")
            out.update(
                rows_in=run.readings,
                rows_out=run.rows,
                kpi_s=kpi_s,
                note=f"{periods.height} periods (day + shifts); recompute_kpis {kpi_s:.2f} s, "
                f"day deviations {time.perf_counter() - began - kpi_s:.2f} s ({deviations.height} rows)",
            )
        elif name in ("anomalies_first", "anomalies_rest"):
            # as the asset runs them: weather not judged (ANOMALY_SKIP_METRICS' default); the first
            # hour alone (it fits the forests and learns the profiles), then the other 23 in one call
            # (one read of the trailing aggregates, forests and profiles kept across its hours)
            seasonal = SeasonalOptions()
            if rebase_hours is not None:  # ANOMALY_REBASE_HOURS, else its default
                seasonal = SeasonalOptions(rebase_after=timedelta(hours=rebase_hours))
            options = AnomalyOptions(
                bucket_s=60, trees=50, skip_metrics=("outdoor_temp", "outdoor_pressure"), seasonal=seasonal
            )
            first, last = (0, 1) if name == "anomalies_first" else (1, 24)
            run = anomalies.recompute_anomalies(
                conn, DAY + timedelta(hours=first), DAY + timedelta(hours=last), options, {}, {}
            )
            out.update(
                rows_in=run.readings,
                rows_out=run.anomalies,
                note=f"models fitted {run.models_fitted}, reused {run.models_reused}; by method "
                + ", ".join(f"{k} {v}" for k, v in sorted(run.by_method.items())),
            )
        else:
            raise ValueError(name)
        out["seconds"] = time.perf_counter() - began
    out["cpu_s"] = _cpu_s() - cpu_before
    out["peak_rss_mib"] = _status_kib("VmHWM") / 1024
    return out


def in_child(name: str, url: str, profile: Path | None = None, rebase_hours: float | None = None) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_step, name, url, profile, rebase_hours).result()


# ----- main ----------------------------------------------------------------------------------


def load(url: str, fleet: list[tuple[int, str, str]]) -> dict:
    """Generate and COPY the raw rows (a factory at a time), the 60 s aggregates of both days and
    the KPI history; returns counts and load times (setup, not part of the figures)."""
    from analytics_platform.results.aggregates import recompute_aggregates
    from analytics_platform.results.plant import load_plant_config

    stats = {"readings": 0, "health": 0, "gen_s": 0.0, "copy_s": 0.0}
    with psycopg.connect(url, autocommit=True, options=utc_options(url)) as conn:
        load_plant_config(conn)
        factories = sorted({f for _, f, _ in fleet})
        for factory in factories:
            began = time.perf_counter()
            parts = [machine_frames(i, f, m, i * 1_000_000) for i, f, m in fleet if f == factory]
            readings = pl.concat([r for r, _ in parts])
            health = pl.concat([h for _, h in parts])
            stats["gen_s"] += time.perf_counter() - began
            began = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                copy_rows(cur, "raw_sensor_readings", readings, RAW_COLUMNS)
                copy_rows(cur, "raw_device_health", health, HEALTH_COLUMNS)
            stats["copy_s"] += time.perf_counter() - began
            stats["readings"] += readings.height
            stats["health"] += health.height
            print(f"  {factory}: {readings.height:,} readings, {health.height:,} run states", flush=True)
            del parts, readings, health
        conn.execute("VACUUM ANALYZE analytics.raw_sensor_readings")
        conn.execute("VACUUM ANALYZE analytics.raw_device_health")
        began = time.perf_counter()
        agg_rows = 0
        for day in (D0, DAY):  # the day before is the first hours' history; the day itself the later hours'
            agg_rows += recompute_aggregates(conn, [60], day, day + timedelta(days=1)).rows
        stats["agg_s"] = time.perf_counter() - began
        stats["agg_rows"] = agg_rows
        history = kpi_history(fleet)
        with conn.transaction(), conn.cursor() as cur:
            copy_rows(cur, "analytics_kpi", history, KPI_COLUMNS)
        stats["kpi_history"] = history.height
        conn.execute("VACUUM ANALYZE analytics.analytics_agg")
        conn.execute("VACUUM ANALYZE analytics.analytics_kpi")
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factories", type=int, default=5)
    parser.add_argument("--machines", type=int, default=20, help="machines per factory")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--json", type=Path, default=ROOT / ".run" / "bench" / "kpi_ml.json")
    parser.add_argument(
        "--profile", type=Path, help="run each step under cProfile and write DIR/<step>.prof (times then include it)"
    )
    parser.add_argument(
        "--rebase-hours",
        type=float,
        help="the anomaly steps' re-basing window (ANOMALY_REBASE_HOURS; 0 = off), else SeasonalOptions' default",
    )
    parser.add_argument(
        "--compare-rebase-hours",
        type=float,
        help="then, on the same database, the anomaly steps again with this re-basing window (outputs and "
        "stored models emptied first): a same-run pair, the KPI steps shared",
    )
    args = parser.parse_args()

    run_dir = ROOT / ".run" / "bench"
    server = None
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        shutil.rmtree(run_dir / "pg-kpi", ignore_errors=True)
        server = EmbeddedPostgres(run_dir / "pg-kpi" / "data", free_port(), "bench", run_dir / "pg-kpi" / "pg.log")
        server.init()
        server.start()
        admin = server.admin_url
    url = admin.rsplit("/", 1)[0] + "/" + DATABASE
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            conn.execute(f"CREATE DATABASE {DATABASE}")
            version = conn.execute("SHOW server_version").fetchone()[0]
        apply_migrations(url)
        fleet = machines(args.factories, args.machines)
        print(f"generating {len(fleet)} machines x 2 days ({D0:%Y-%m-%d}, {DAY:%Y-%m-%d})...", flush=True)
        setup = load(url, fleet)
        print(
            f"setup: {setup['readings']:,} readings + {setup['health']:,} run states (generated "
            f"{setup['gen_s']:.1f} s, COPY {setup['copy_s']:.1f} s); 60 s aggregates of both days "
            f"{setup['agg_rows']:,} rows ({setup['agg_s']:.1f} s); {setup['kpi_history']:,} hourly KPI rows "
            f"({HISTORY_DAYS} days)",
            flush=True,
        )

        steps = [
            ("raw_read", "raw read of the day (floor)"),
            ("baselines", f"baseline fits ({len(fleet)} x {HISTORY_DAYS} d)"),
            ("kpi_hours", "hourly KPIs (24 h, one call)"),
            ("kpi_day", "day + shift KPIs"),
            ("anomalies_first", "anomalies hour 1 (fits)"),
            ("anomalies_rest", "anomalies hours 2-24 (one call)"),
        ]
        results = {}
        for name, label in steps:
            result = in_child(name, url, args.profile, args.rebase_hours)
            results[name] = result
            print(
                f"{label:<34} {result['seconds']:>8.2f} s (CPU {result['cpu_s']:>6.1f} s)  rows in "
                f"{result['rows_in']:>10,}  out {result['rows_out']:>8,}  peak {result['peak_rss_mib']:>6,.0f} MiB "
                f"(after imports {result['base_rss_mib']:,.0f})",
                flush=True,
            )
            if result.get("note"):
                print(f"{'':<36}{result['note']}", flush=True)
        day_total = sum(results[n]["seconds"] for n in ("kpi_hours", "kpi_day", "anomalies_first", "anomalies_rest"))
        verdict = "met" if day_total <= GOAL_S else "NOT met"
        print(
            f"\nday's KPIs + anomalies: {day_total:.1f} s (goal <= {GOAL_S:.0f} s: {verdict}); "
            f"floor (raw read of the day) {results['raw_read']['seconds']:.1f} s",
            flush=True,
        )
        if args.compare_rebase_hours is not None:
            # the same anomaly steps from the same empty start (hour 1 fits and stores the models
            # again), so the two settings differ in nothing but the window
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DELETE FROM analytics.analytics_anomaly")
                conn.execute("DELETE FROM analytics.analytics_anomaly_model")
            compared = {}
            for name, label in steps[-2:]:
                result = in_child(name, url, args.profile, args.compare_rebase_hours)
                compared[name] = result
                print(
                    f"{label + f' (rebase {args.compare_rebase_hours:g} h)':<34} {result['seconds']:>8.2f} s "
                    f"(CPU {result['cpu_s']:>6.1f} s)  out {result['rows_out']:>8,}  "
                    f"peak {result['peak_rss_mib']:>6,.0f} MiB",
                    flush=True,
                )
                if result.get("note"):
                    print(f"{'':<36}{result['note']}", flush=True)
            other = sum(results[n]["seconds"] for n in ("kpi_hours", "kpi_day")) + sum(
                compared[n]["seconds"] for n in ("anomalies_first", "anomalies_rest")
            )
            print(f"day's KPIs + anomalies with rebase {args.compare_rebase_hours:g} h: {other:.1f} s", flush=True)
            results["compared"] = {"rebase_hours": args.compare_rebase_hours, "steps": compared, "day_total_s": other}
        record = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "postgres": version,
            "machines": len(fleet),
            "setup": setup,
            "steps": results,
            "day_total_s": round(day_total, 2),
            "rebase_hours": args.rebase_hours,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2, default=str))
        print(f"written to {args.json}")
    finally:
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        if server:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
