"""Forecast quality and fit time: a rolling-origin backtest of `transforms/forecast.py` beside the
seasonal-naive forecasts, in the same run, on two kinds of history (issue 25, item 3).

  * simulator: the edge agent's PlantSimulator (edge_agents/simulator.py) driven in 2-minute steps
    for --days days (1 tenant, 1 factory, --machines machines, seed --seed, no meter resets, no
    fault injection). Hourly energy is the energy counter's increase over the hour (a reading on
    every hour boundary), hourly peak demand the largest power sample in the hour, the outdoor
    temperature the hour's mean: the KPIs the platform computes, taken straight from the messages.
    Its weekly seasonality is the simulator's weekly shift plan (reduced weekend crews).
  * ground truth: the project's own generated series with known structure — a weekday / weekend
    shift plan (two shifts on weekdays, one on Saturdays, a skeleton load on Sundays), weather
    dependence on a slowly varying temperature, AR(1) noise, and random fault drops (an hour losing
    30-100 % of its load, ~1 in 40 hours) — a stronger weekly pattern than the simulator's.

For every series and every origin (midnight; the last --origins days before the end, each with
the --history days before it and --horizon days after it), the model forecasts the horizon's hours
and days, and so do seasonal naive with a daily (m = 24) and a weekly (m = 168) season. Reported
per horizon day: MAPE and MASE of the hourly energy and hourly peak demand (MASE scaled by the
training window's in-sample daily seasonal-naive MAE, averaged over series and origins), the ratio
of the model's MAE to each seasonal naive's MAE, the hourly band's coverage against its nominal
level, and for the days (energy: the day's sum; peak: the day's largest hour) MAPE, coverage and
the share of days above their band (the miss a peak-demand alert cannot afford).
Also the fit time per series (the asset fits 2 series per machine and per factory).

Last, the asset's daily run at plant size: `forecast_all` over --fleet generated machines (in
--fleet / 20 factories) with the asset's history of hourly KPIs, timed (wall and CPU seconds).

Usage: python bench/forecast.py [--machines 8] [--origins 28] [--fleet 100] [--json out.json]
(--days defaults to history + origins + horizon). 8 machines x 28 origins put 224 days in each
horizon day's day-coverage cell (one day = 0.45 points).
Nothing here asserts a value: docs/benchmarks.md records the figures with date, machine and commit.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.transforms import forecast as fc  # noqa: E402
from bench.ingest import git_revision, machine_info  # noqa: E402
from edge_agents.simulator import PlantSimulator, SimulatorConfig  # noqa: E402

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
STEP_MIN = 2  # the simulator's clock step: a power sample every 2 minutes (the energy counter integrates 10 s steps)


# ----- histories -----------------------------------------------------------------------------------
def simulator_history(machines: int, days: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Per machine: hourly energy (kWh), peak demand (kW) and mean outdoor temperature from the
    simulator's messages, its clock stepped every STEP_MIN minutes."""
    sim = PlantSimulator(
        SimulatorConfig(tenants=1, factories=1, machines=machines, seed=seed, event_ids=False, counter_reset_every=0)
    )
    hours = days * 24
    energy_at: dict[str, dict[int, float]] = defaultdict(dict)  # hour boundary index -> counter
    peak = defaultdict(lambda: np.full(hours, -math.inf))
    temp_sum = defaultdict(lambda: np.zeros(hours))
    temp_n = defaultdict(lambda: np.zeros(hours))
    per_round = 12 * machines  # a little over one round of every machine's messages
    for minute in range(0, hours * 60 + 1, STEP_MIN):
        now = START + timedelta(minutes=minute)
        for message in sim.messages(now, per_round):
            body = json.loads(message.value)
            metric = body.get("metric")
            if metric not in ("energy", "power", "outdoor_temp"):
                continue
            at = datetime.strptime(body["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            offset = (at - START).total_seconds()
            machine = body["machine_id"]
            if metric == "energy":
                if offset % 3600 == 0:
                    energy_at[machine][int(offset // 3600)] = body["value"]
                continue
            hour = math.ceil(offset / 3600) - 1  # a sample stamped t stands for the interval ending at t
            if not 0 <= hour < hours:
                continue
            if metric == "power":
                peak[machine][hour] = max(peak[machine][hour], body["value"])
            else:
                temp_sum[machine][hour] += body["value"]
                temp_n[machine][hour] += 1
    out = {}
    for machine, counters in sorted(energy_at.items()):
        energy = np.array([counters.get(h + 1, math.nan) - counters.get(h, math.nan) for h in range(hours)])
        with np.errstate(invalid="ignore", divide="ignore"):
            temp = temp_sum[machine] / temp_n[machine]
        out[machine] = {
            fc.ENERGY: energy,
            fc.PEAK: np.where(np.isfinite(peak[machine]), peak[machine], math.nan),
            fc.TEMP: temp,
        }
    return out


def ground_truth_history(series: int, days: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Per generated machine: hourly energy and peak demand with weekly shift plan, weather, AR(1)
    noise and fault drops (see the module docstring), and the outdoor temperature."""
    rng = np.random.default_rng(seed)
    hours = days * 24
    t = np.arange(hours)
    hour, weekday = t % 24, (t // 24) % 7  # START is a Monday: weekday 0..6 = Mon..Sun
    temp = 12 + 6 * np.sin(2 * np.pi * (hour - 9) / 24) + 4 * np.sin(2 * np.pi * t / (24 * 9.3) + rng.uniform(0, 6))
    out = {}
    for i in range(series):
        base, k = rng.uniform(30, 60), rng.uniform(0.4, 1.0)
        two_shifts = (hour >= 6) & (hour < 22)
        one_shift = (hour >= 6) & (hour < 14)
        running = np.where(weekday < 5, two_shifts, np.where(weekday == 5, one_shift, False))
        load = np.where(running, base, 0.15 * base) + np.where(running, k * (temp - 12), 0)
        noise = np.zeros(hours)
        for j in range(1, hours):
            noise[j] = 0.6 * noise[j - 1] + rng.normal(0, 0.04 * base)
        fault = rng.random(hours) < 1 / 40
        energy = np.maximum(load + noise, 0) * np.where(fault, rng.uniform(0, 0.7, hours), 1.0)
        peak = np.maximum(load + noise, 0) * 1.12 + np.abs(rng.normal(0, 0.03 * base, hours))
        peak = np.where(fault & (rng.random(hours) < 0.5), peak * 0.5, peak)
        out[f"g-{i + 1:02d}"] = {fc.ENERGY: energy, fc.PEAK: peak, fc.TEMP: temp + rng.normal(0, 0.3, hours)}
    return out


# ----- backtest ------------------------------------------------------------------------------------
def backtest(histories: dict[str, dict[str, np.ndarray]], args: argparse.Namespace) -> dict:
    """The rolling-origin backtest of every series; metrics per kpi and horizon day."""
    n, steps = args.history * 24, args.horizon * 24
    total = next(iter(histories.values()))[fc.ENERGY].size
    last_origin = total - steps
    origins = [last_origin - 24 * k for k in range(args.origins)][::-1]
    if origins[0] < n:
        raise SystemExit(f"not enough history: {total // 24} days for {args.history} + {args.origins} + {args.horizon}")
    calendar = fc.Calendar.of(START, total + steps, "UTC", (6, 7))
    acc: dict[tuple, list] = defaultdict(list)
    fit_s: list[float] = []
    fit_cpu_s: list[float] = []
    level = args.level
    for data in histories.values():
        for kpi, (_unit, aggregate) in fc.TARGETS.items():
            y = data[kpi]
            for origin in origins:
                train, actual = y[origin - n : origin], y[origin : origin + steps]
                cal = calendar[origin - n : origin + steps]
                began, cpu = time.perf_counter(), time.process_time()
                f = fc.forecast_series(
                    train, cal, steps=steps, aggregate=aggregate, level=level, temp=data[fc.TEMP][origin - n : origin]
                )
                fit_s.append(time.perf_counter() - began)
                fit_cpu_s.append(time.process_time() - cpu)
                naive = {m: fc.seasonal_naive(train, m, steps) for m in (24, 168)}
                agg = np.sum if aggregate == "sum" else np.max
                for d in range(args.horizon):
                    hours = slice(d * 24, (d + 1) * 24)
                    a = actual[hours]
                    key = (kpi, d + 1)
                    acc[(*key, "mape")].append(fc.mape(a, f.value[hours]))
                    acc[(*key, "mase")].append(fc.mase(a, f.value[hours], train, 24))
                    acc[(*key, "mae")].append(fc.mae(a, f.value[hours]))
                    acc[(*key, "coverage")].append(fc.coverage(a, f.lower[hours], f.upper[hours]))
                    for m, p in naive.items():
                        acc[(*key, f"snaive{m}_mape")].append(fc.mape(a, p[hours]))
                        acc[(*key, f"snaive{m}_mase")].append(fc.mase(a, p[hours], train, 24))
                        acc[(*key, f"snaive{m}_mae")].append(fc.mae(a, p[hours]))
                        acc[(*key, f"snaive{m}_day_mape")].append(fc.mape([agg(a)], [agg(p[hours])]))
                    acc[(*key, "day_mape")].append(fc.mape([agg(a)], [f.day_value[d]]))
                    acc[(*key, "day_coverage")].append(fc.coverage([agg(a)], [f.day_lower[d]], [f.day_upper[d]]))
                    if np.isfinite(agg(a)):  # the side a peak-demand alert cares about: the day above its band
                        acc[(*key, "day_above")].append(float(agg(a) > f.day_upper[d]))
    table: dict = {}
    for (kpi, day, metric), values in acc.items():
        known = [v for v in values if v is not None]
        table.setdefault(kpi, {}).setdefault(day, {})[metric] = float(np.mean(known)) if known else None
    for kpi in table:
        for row in table[kpi].values():
            for m in (24, 168):
                row[f"mae_ratio_snaive{m}"] = row["mae"] / row[f"snaive{m}_mae"] if row[f"snaive{m}_mae"] else None
    return {
        "series": len(histories) * len(fc.TARGETS),
        "origins": len(origins),
        "fits": len(fit_s),
        "fit_s_mean": float(np.mean(fit_s)),
        "fit_s_p95": float(np.quantile(fit_s, 0.95)),
        "fit_cpu_s_mean": float(np.mean(fit_cpu_s)),
        "metrics": table,
    }


def fleet_timing(machines: int, factories: int, seed: int) -> dict:
    """What the asset's daily run costs: `forecast_all` (the transform the asset calls, factories
    included) over `machines` generated machines in `factories` factories with the asset's history of hourly
    KPIs, timed in wall and CPU seconds of this process."""
    options = fc.ForecastOptions()
    origin = START + timedelta(days=options.history_days)
    series = ground_truth_history(machines, options.history_days, seed)
    frames = []
    for i, (name, data) in enumerate(series.items()):
        for kpi in (*fc.TARGETS, fc.TEMP):
            frames.append(
                pl.DataFrame(
                    {
                        "period_start": [START + timedelta(hours=h) for h in range(options.history_days * 24)],
                        "tenant_id": "t1",
                        "factory_id": f"f{i % factories + 1}",
                        "machine_id": name,
                        "kpi": kpi,
                        "value": data[kpi],
                    },
                    schema=fc.HOURS_SCHEMA,
                )
            )
    hours = pl.concat(frames)
    began, cpu = time.perf_counter(), time.process_time()
    rows, skipped = fc.forecast_all(hours, origin, {"t1": "UTC"}, options)
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    fits = (machines + factories) * len(fc.TARGETS)
    return {"machines": machines, "factories": factories, "fits": fits, "rows": rows.height, "skipped": len(skipped),
            "wall_s": wall, "cpu_s": cpu}  # fmt: skip


def show(name: str, result: dict, level: float) -> None:
    print(
        f"\n== {name}: {result['series']} series x {result['origins']} origins = {result['fits']} fits; "
        f"fit {result['fit_s_mean'] * 1000:.0f} ms mean, {result['fit_s_p95'] * 1000:.0f} ms p95 wall; "
        f"{result['fit_cpu_s_mean'] * 1000:.0f} ms CPU mean"
    )
    for kpi, days in result["metrics"].items():
        print(f"-- {kpi} (band nominal {level:.0%})")
        print(
            "day  MAPE%  sn24%  sn168%  MASE  sn24  sn168  MAE/sn24 MAE/sn168  cover  dayMAPE% sn24 sn168 dayCover"
            " dayAbove"
        )
        for day, r in sorted(days.items()):
            cells = [
                r["mape"], r["snaive24_mape"], r["snaive168_mape"], r["mase"], r["snaive24_mase"], r["snaive168_mase"],
                r["mae_ratio_snaive24"], r["mae_ratio_snaive168"], r["coverage"], r["day_mape"],
                r["snaive24_day_mape"], r["snaive168_day_mape"], r["day_coverage"], r.get("day_above"),
            ]  # fmt: skip
            print(f"{day:>3}  " + "  ".join("   n/a" if c is None else f"{c:6.3f}" for c in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=8, help="simulated machines (and generated series)")
    parser.add_argument("--days", type=int, default=0, help="days of history (0: history + origins + horizon)")
    parser.add_argument(
        "--history", type=int, default=fc.ForecastOptions().history_days, help="training days per origin (the asset's)"
    )
    parser.add_argument("--horizon", type=int, default=7)
    parser.add_argument("--origins", type=int, default=28, help="daily origins, the last ones before the end")
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-simulator", action="store_true")
    parser.add_argument("--fleet", type=int, default=100, help="machines of the asset-run timing (0: skip)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.days = args.days or args.history + args.origins + args.horizon
    results = {"machine": machine_info(), "commit": git_revision(), "date": datetime.now(UTC).isoformat()}
    results["args"] = {k: str(v) for k, v in vars(args).items()}
    began, began_cpu = time.perf_counter(), time.process_time()
    truth = ground_truth_history(args.machines, args.days, args.seed)
    results["ground_truth"] = backtest(truth, args)
    show("ground truth (generated: weekly shift plan, weather, AR(1), faults)", results["ground_truth"], args.level)
    if not args.skip_simulator:
        t, t_cpu = time.perf_counter(), time.process_time()
        history = simulator_history(args.machines, args.days, args.seed)
        results["simulation_s"] = {"wall": time.perf_counter() - t, "cpu": time.process_time() - t_cpu}
        print(
            f"\nsimulated {args.machines} machines x {args.days} days in {results['simulation_s']['wall']:.0f} s wall, "
            f"{results['simulation_s']['cpu']:.0f} s CPU"
        )
        results["simulator"] = backtest(history, args)
        show("simulator (edge_agents/simulator.py)", results["simulator"], args.level)
    if args.fleet:
        fleet = fleet_timing(args.fleet, max(1, args.fleet // 20), args.seed)
        results["fleet"] = fleet
        print(
            f"\nasset run: {fleet['machines']} machines + {fleet['factories']} factories = {fleet['fits']} fits, "
            f"{fleet['rows']} rows: {fleet['wall_s']:.1f} s wall, {fleet['cpu_s']:.1f} s CPU"
        )
    results["total_s"] = {"wall": time.perf_counter() - began, "cpu": time.process_time() - began_cpu}
    print(f"\ntotal {results['total_s']['wall']:.0f} s wall, {results['total_s']['cpu']:.0f} s CPU")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
