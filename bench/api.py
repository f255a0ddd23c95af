"""REST API benchmark: /v1/agg and /v1/kpi under 50 concurrent clients on 127.0.0.1.

Loads (COPY, into a fresh database) 30 days of window aggregates for 50 machines x 3 metrics
(windows 60 / 300 / 3600 s, the 3600 s window back a whole year) and their hourly and daily KPIs
(20 names), starts the API as production does (`python -m analytics_platform.api`: uvicorn with the
app factory, a SO_REUSEPORT socket per worker; read-only login, no access log) and drives it with a
load generator of its own: 50 keep-alive HTTP/1.1 connections on asyncio (uvloop), each looping over
requests for a random machine and metric. Scenarios:

  * trivial        GET / (a redirect; no database): the framework's floor and the generator's cost
  * agg 1 day      /v1/agg window_s=300 over the last day            -> 288 buckets
  * agg 30 days    /v1/agg window_s=3600 over the last 30 days       -> 720 buckets
  * agg 365 days   /v1/agg window_s=86400 over the last 365 days     -> 365 buckets (rolled up from
                   the 3600 s window on PostgreSQL; the daily continuous aggregate on TimescaleDB)
  * kpi 30 days    /v1/kpi period=day, every KPI, one machine         -> 600 rows
  * ... repeat     the last three are "repeat" misses: 200s without `If-None-Match` for requests
                   other clients asked before (one of 50 machines x 3 metrics): once one worker has
                   made an answer it keeps it by its tag (api/response_cache.py) and serves it again
  * ... cold       the same three over a range no request asked before (a random start per request:
                   720 buckets from a random second of the year; the year and the KPIs from a random
                   second of their first day, so 364 days and 29 days): every cache is defeated, each
                   answer is read and written afresh; the bare-SQL baseline reads such ranges too
  * ... (hit)      the same three requests again with the `If-None-Match` tag of their answer: the
                   304s a revalidating client (a browser, with `Cache-Control: no-cache`) gets
  * dashboard mix  `--users` virtual users (default: --clients) walking the dashboard's pages with
                   the very calls ui/static/app.js makes (overview: /v1/fleet; a machine, live or over
                   a closed 30-day or 365-day range: /v1/fleet, /v1/anomaly-events, /v1/agg; KPIs:
                   /v1/kpi and /v1/baseline-deviation of the factory, /v1/kpi/catalog once), calls of
                   a page in parallel where the page makes them so, a think time between pages
                   (exponential, mean --think s), and a browser's cache (If-None-Match with the tag
                   it holds). Per call: hits (304) and misses separately; per page: load time.

The loaded hours are marked materialised and their days rolled up into agg_daily, and the KPI
periods get their versions, as the assets leave them (sql/12, sql/14).

Every 200 response is checked (status 200, `count` equal to the expected rows, the machine asked for;
the first response of each connection is parsed in full); errors are counted and flagged. Same-run
baselines per scenario: the route's own SQL text with the route's parameters through psycopg
(dict rows, like the API's pool) sequentially on one connection and from as many threads as there
are clients, each with its own connection; the server's own time (EXPLAIN ANALYZE); building the
JSON page from fetched rows; and the API with a single sequential client. CPU per request of the
API processes, the database backends and the generator is read from /proc over each run.

Usage: python bench/api.py [--machines 50] [--days 30] [--duration 15] [--clients 50] [--workers 2]
       [--users 50] [--think 2] (--workers 1,2 measures both on the same data). Uses TEST_DATABASE_URL (an admin URL) or
starts an embedded PostgreSQL under .run/bench/. Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import queue
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import orjson
import polars as pl
import psutil
import psycopg
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.api.keys import create_key  # noqa: E402
from analytics_platform.api.query import Select  # noqa: E402
from analytics_platform.api.respond import page_response  # noqa: E402
from analytics_platform.api.routes import agg as agg_route  # noqa: E402
from analytics_platform.api.routes.kpi import KPI_COLUMNS, KPI_KEY  # noqa: E402
from analytics_platform.devstack.postgres import EmbeddedPostgres, ensure_login  # noqa: E402
from analytics_platform.devstack.processes import api_command, free_port  # noqa: E402
from analytics_platform.devstack.stack import with_credentials  # noqa: E402
from analytics_platform.ingest.store import copy_rows  # noqa: E402
from analytics_platform.migrations import apply_migrations  # noqa: E402
from analytics_platform.results.aggregates import MARK_MATERIALISED, refresh_days  # noqa: E402
from analytics_platform.results.kpis import MARK_PERIODS  # noqa: E402
from analytics_platform.settings import utc_options  # noqa: E402
from analytics_platform.transforms.kpi_catalog import CATALOGUE  # noqa: E402
from bench.ingest import machine_info  # noqa: E402

TENANT, FACTORY = "t1", "f1"
WINDOWS = (60, 300, 3600)
YEAR_DAYS = 365
# metric (from contracts/metrics.yaml), level, daily swing, spread within a minute
METRICS = (("power", 50.0, 15.0, 2.0), ("temp", 65.0, 5.0, 0.5), ("vibration", 3.2, 0.8, 0.3))
SPREAD = {60: 1.0, 300: 1.3, 3600: 2.0}  # a longer window spans more of the signal
READING_S = 10  # one reading every 10 s per series
AGG_COLUMNS = (
    "bucket_start",
    "bucket_end",
    "window_s",
    "tenant_id",
    "factory_id",
    "machine_id",
    "sensor_id",
    "metric",
    "count_n",
    "sum_v",
    "avg_v",
    "min_v",
    "max_v",
    "stddev_v",
    "first_v",
    "last_v",
    "p50_v",
    "p95_v",
)
KPI_LOAD_COLUMNS = (
    "period_start",
    "period_end",
    "period",
    "tenant_id",
    "factory_id",
    "machine_id",
    "kpi",
    "value",
    "unit",
    "null_reason",
    "details",
)
# KPI -> (hourly level, the details keys the pipeline writes). Names, units and whether a KPI scales
# with the period's length (it combines by summing) come from the KPI catalogue; a KPI not listed
# here is loaded at level 1 without details.
KPI_LEVELS: dict[str, tuple[float, tuple[str, ...]]] = {
    "availability": (0.9, ("run_time_s", "planned_busy_s", "unknown_s")),
    "performance": (0.85, ("ideal_cycle_time_s",)),
    "quality": (0.97, ("good", "total")),
    "oee": (0.74, ("availability", "performance", "quality")),
    "load_factor": (0.6, ()),
    "data_completeness_pct": (99.5, ()),
    "energy_kwh": (48.0, ()),
    "energy_cost": (9.6, ()),
    "carbon_kg": (18.0, ()),
    "peak_demand_kw": (70.0, ()),
    "avg_demand_kw": (48.0, ()),
    "production_count": (300.0, ()),
    "good_count": (291.0, ()),
    "sec_kwh_per_unit": (0.16, ("energy_kwh", "units")),
    "production_rate_per_h": (333.0, ()),
    "run_time_s": (3240.0, ()),
    "idle_time_s": (180.0, ()),
    "planned_downtime_s": (120.0, ("planned_stop_s", "maintenance_s", "unscheduled_s")),
    "downtime_s": (60.0, ("fault_s", "gap_s")),
    "fault_time_s": (45.0, ()),
}
PERIODS = {"hour": 3600, "day": 86400}


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def machine_ids(count: int) -> list[str]:
    return [f"m{i:02d}" for i in range(1, count + 1)]


def agg_rows(machines: list[str], offset: int, window: int, start: datetime, end: datetime) -> pl.DataFrame:
    """Every bucket of `window` in [start, end) for each machine x metric: a daily sine per series
    plus deterministic noise; count, sum, avg, stddev, min <= first/last/p50/p95 <= max consistent."""
    buckets = int((end - start).total_seconds()) // window
    series = pl.DataFrame(
        {
            "machine_id": [m for m in machines for _ in METRICS],
            "mi": [offset + i for i in range(len(machines)) for _ in METRICS],
            "metric": [name for _ in machines for name, *_ in METRICS],
            "level": [level for _ in machines for _, level, _, _ in METRICS],
            "swing": [swing for _ in machines for _, _, swing, _ in METRICS],
            "sigma": [sigma * SPREAD[window] for _ in machines for *_, sigma in METRICS],
        }
    )
    frame = series.join(pl.DataFrame({"k": pl.int_range(0, buckets, eager=True)}), how="cross")
    epoch = int(start.timestamp()) + pl.col("k") * window
    phase = ((epoch + window // 2) % 86400) / 86400 * 2 * math.pi + pl.col("mi") * 0.7
    noise = ((pl.col("k") * 7919 + pl.col("mi") * 104729) % 1009) / 1009 - 0.5
    count = window // READING_S
    frame = frame.with_columns(
        avg=pl.col("level") + pl.col("swing") * (phase.sin() + 0.2 * noise),
        sd=pl.col("sigma") * (1 + 0.3 * noise),
        bucket_start=pl.from_epoch(epoch, time_unit="s").dt.replace_time_zone("UTC").cast(pl.Datetime("us", "UTC")),
    )
    a, s = pl.col("avg"), pl.col("sd")
    return frame.select(
        bucket_start=pl.col("bucket_start"),
        bucket_end=pl.col("bucket_start") + pl.duration(seconds=window),
        window_s=pl.lit(window, pl.Int32),
        tenant_id=pl.lit(TENANT),
        factory_id=pl.lit(FACTORY),
        machine_id=pl.col("machine_id"),
        sensor_id=pl.format("s-{}", pl.col("metric")),
        metric=pl.col("metric"),
        count_n=pl.lit(count, pl.Int64),
        sum_v=a * count,
        avg_v=a,
        min_v=a - 2.5 * s,
        max_v=a + 2.6 * s,
        stddev_v=s,
        first_v=a - 0.4 * s * noise,
        last_v=a + 0.4 * s * noise,
        p50_v=a - 0.05 * s,
        p95_v=a + 1.64 * s,
    ).sort("bucket_start", maintain_order=True)  # time-major: index inserts stay on few pages


def kpi_rows(machines: list[str], offset: int, period: str, start: datetime, end: datetime) -> pl.DataFrame:
    """One row per machine x KPI x period; every 25th production_rate / sec value is NULL with a
    reason (no units produced), and the KPIs whose pipeline rows carry details get a details object."""
    length = PERIODS[period]
    periods = int((end - start).total_seconds()) // length
    names = [kpi.name for kpi in CATALOGUE]
    units = [kpi.unit for kpi in CATALOGUE]
    levels = [KPI_LEVELS.get(kpi.name, (1.0, ()))[0] for kpi in CATALOGUE]
    additive = [kpi.combine.kind == "sum" for kpi in CATALOGUE]
    frame = (
        pl.DataFrame(
            {
                "machine_id": [m for m in machines for _ in names],
                "mi": [offset + i for i in range(len(machines)) for _ in names],
                "kpi": names * len(machines),
                "unit": units * len(machines),
                "level": [lv * (length / 3600 if add else 1.0) for lv, add in zip(levels, additive, strict=True)]
                * len(machines),
                "ki": list(range(len(names))) * len(machines),
            }
        )
        .join(pl.DataFrame({"k": pl.int_range(0, periods, eager=True)}), how="cross")
        .with_columns(noise=((pl.col("k") * 7919 + pl.col("mi") * 104729 + pl.col("ki") * 31) % 1009) / 1009 - 0.5)
    )
    value = pl.col("level") * (1 + 0.1 * pl.col("noise"))
    empty = pl.col("kpi").is_in(["sec_kwh_per_unit", "production_rate_per_h"]) & (
        (pl.col("k") + pl.col("mi")) % 25 == 0
    )
    details = pl.lit(None, pl.String)
    for name, (_, keys) in KPI_LEVELS.items():
        if keys:
            body = ", ".join(f'"{key}": {{}}' for key in keys)
            parts = [(value * (j + 1) * 1.5).round(3) for j in range(len(keys))]
            details = pl.when(pl.col("kpi") == name).then(pl.format("{{" + body + "}}", *parts)).otherwise(details)
    epoch = int(start.timestamp()) + pl.col("k") * length
    begin = pl.from_epoch(epoch, time_unit="s").dt.replace_time_zone("UTC").cast(pl.Datetime("us", "UTC"))
    return frame.select(
        period_start=begin,
        period_end=begin + pl.duration(seconds=length),
        period=pl.lit(period),
        tenant_id=pl.lit(TENANT),
        factory_id=pl.lit(FACTORY),
        machine_id=pl.col("machine_id"),
        kpi=pl.col("kpi"),
        value=pl.when(empty).then(None).otherwise(value),
        unit=pl.col("unit"),
        null_reason=pl.when(empty).then(pl.lit("no units produced in the period")).otherwise(None),
        details=details,
    )


def load(url: str, machines: list[str], days: int, end: datetime, streams: int = 2) -> dict:
    """COPY everything in batches of 10 machines, on `streams` connections at once (the server's
    side of a COPY, parsing and index upkeep, is one core per connection); rows per table, seconds."""
    batches = [(machines[i : i + 10], i) for i in range(0, len(machines), 10)]
    plan = [("analytics_agg", w, end - timedelta(days=days)) for w in WINDOWS[:-1]]
    plan.append(("analytics_agg", WINDOWS[-1], end - timedelta(days=max(days, YEAR_DAYS))))
    plan += [("analytics_kpi", p, end - timedelta(days=days)) for p in PERIODS]
    tasks = queue.SimpleQueue()
    for table, what, start in plan:
        for group, offset in batches:
            tasks.put((table, what, start, group, offset))
    counts: dict[tuple[str, int | str], int] = {}
    lock = threading.Lock()

    def stream() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")
            while True:
                try:
                    table, what, start, group, offset = tasks.get_nowait()
                except queue.Empty:
                    return
                if table == "analytics_agg":
                    frame, columns = agg_rows(group, offset, what, start, end), AGG_COLUMNS
                else:
                    frame, columns = kpi_rows(group, offset, what, start, end), KPI_LOAD_COLUMNS
                with conn.transaction(), conn.cursor() as cur:
                    copy_rows(cur, table, frame, columns)
                with lock:
                    counts[table, what] = counts.get((table, what), 0) + frame.height

    began = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        for future in [pool.submit(stream) for _ in range(streams)]:
            future.result()
    rows = {"analytics_agg": 0, "analytics_kpi": 0}
    for (table, what), count in counts.items():
        rows[table] += count
        print(f"  {table} {what}: {count:>10,} rows", flush=True)
    copy_s = time.perf_counter() - began
    with psycopg.connect(url, autocommit=True) as conn:
        part = time.perf_counter()
        first = end - timedelta(days=max(days, YEAR_DAYS))
        with conn.transaction(), conn.cursor() as cur:
            # as the window-aggregates asset leaves them: every hour final, its days rolled up
            marks = {"as_of": datetime.now(UTC), "first": first, "last": end - timedelta(hours=1)}
            cur.execute(MARK_MATERIALISED, marks)
            refresh_days(cur, first, end)
            for period, step in PERIODS.items():  # and every KPI period as the KPI assets leave it
                span = int(timedelta(days=days) / timedelta(seconds=step))
                cur.execute(MARK_PERIODS, (period, [end - timedelta(seconds=step * (i + 1)) for i in range(span)]))
        days_s = time.perf_counter() - part
        part = time.perf_counter()
        conn.execute("VACUUM ANALYZE analytics.analytics_agg")
        conn.execute("VACUUM ANALYZE analytics.agg_daily")
        conn.execute("VACUUM ANALYZE analytics.analytics_kpi")
        vacuum_s = time.perf_counter() - part
        refresh_s = None
        if has_daily_view(conn):
            part = time.perf_counter()
            conn.execute("CALL refresh_continuous_aggregate('analytics.analytics_agg_daily', NULL, NULL)")
            conn.execute("ANALYZE analytics.analytics_agg_daily")
            refresh_s = time.perf_counter() - part
        # flush the loaded pages now: a checkpoint spread over the next minutes would take CPU and disk
        # from the runs (it showed as ~0.7 of a core of "others")
        part = time.perf_counter()
        conn.execute("CHECKPOINT")
        checkpoint_s = time.perf_counter() - part
    return {
        "rows": rows,
        "copy_s": copy_s,
        "materialised_and_days_s": days_s,
        "vacuum_analyze_s": vacuum_s,
        "refresh_cagg_s": refresh_s,
        "checkpoint_s": checkpoint_s,
    }


def has_daily_view(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('analytics.analytics_agg_daily') IS NOT NULL").fetchone()[0]


# ------------------------------------------------------------------------------------------------
# Scenarios: the request, the route's SQL, what a correct answer holds
# ------------------------------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    rows: int  # items a correct response holds
    goal_ms: float | None  # p99 goal
    target: Callable[[str, str], str]  # (machine, metric) -> path + query
    sql: Callable[[str, str], tuple[str, dict]] | None = None  # the route's query and parameters
    page: dict = field(default_factory=dict)  # page_response arguments
    status: int = 200
    revalidate: bool = False  # send the If-None-Match tag of the answer (fetched before the run): 304s
    # cold: (machine, metric, rng) -> path + query of a request nobody asked before (a random range start),
    # made per request; None: the `target` requests of every machine and metric, asked again and again
    cold: Callable[[str, str, random.Random], str] | None = None


def agg_sql(window_s: int, start: datetime, end: datetime, daily: bool) -> Callable[[str, str], tuple[str, dict]]:
    """The query and parameters routes/agg.py builds for a tenant key (its very text, imported)."""

    def build(machine: str, metric: str) -> tuple[str, dict]:
        source, source_window = agg_route.plan_source(window_s, list(WINDOWS), daily and window_s % 86400 == 0)
        params = {
            "tenant_id": TENANT,
            "factory_id": FACTORY,
            "machine_id": machine,
            "metric": metric,
            "sensor_id": None,
            "window_s": window_s,
            "source_window_s": source_window,
            "start": start,
            "end": end,
            "after_time": None,
            "after_key": None,
            "limit": 1001,
        }
        if source == "stored":
            return agg_route._STORED, {**params, "provisional": []}  # load() marked every hour final
        params["final_until"] = datetime.max.replace(tzinfo=UTC)
        params["lo"] = agg_route.ceil_to(start, window_s)
        params["hi"] = agg_route.ceil_to(end, window_s)
        source_sql = agg_route._FROM_STORED if source == "rollup" else agg_route._FROM_DAILY
        if source == "rollup" and source_window == 3600 and window_s % 86400 == 0:
            if window_s == 86400:  # the route reads such days as they are stored
                return agg_route._DAYS_AS_STORED, params
            source_sql = agg_route._FROM_DAYS
        return agg_route._ROLLUP.format(source=source_sql, after=agg_route._AFTER), params

    return build


def kpi_sql(period: str, start: datetime, end: datetime) -> Callable[[str, str], tuple[str, dict]]:
    """The query routes/kpi.py builds (same builder, same filters)."""

    def build(machine: str, _metric: str) -> tuple[str, dict]:
        select = (
            Select(", ".join(KPI_COLUMNS), "analytics.analytics_kpi")
            .eq("tenant_id", TENANT)
            .eq("factory_id", FACTORY)
            .eq("machine_id", machine)
            .eq("period", period)
            .eq("kpi", None)
            .cmp("period_start", ">=", start)
            .cmp("period_start", "<", end)
        )
        return select.sql(KPI_KEY, 1001)

    return build


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def scenarios(end: datetime, days: int, daily: bool) -> list[Scenario]:
    def agg(window_s: int, span: int) -> Callable[[str, str], str]:
        start = iso(end - timedelta(days=span))
        return lambda m, x: (
            "/v1/agg?"
            + urlencode(
                {
                    "factory_id": FACTORY,
                    "machine_id": m,
                    "metric": x,
                    "window_s": window_s,
                    "start": start,
                    "end": iso(end),
                }
            )
        )

    def kpi(m: str, _x: str) -> str:
        query = {"factory_id": FACTORY, "machine_id": m, "period": "day"}
        return "/v1/kpi?" + urlencode({**query, "start": iso(end - timedelta(days=days)), "end": iso(end)})

    # Cold requests: the same shape of answer over a range no request asked before. 30 days of hours start
    # at a random second of the year before (still 720 buckets); the year and the KPIs start a random
    # 1..86,399 s after their usual start (one day fewer: 364 days, 29 days x the KPIs). With millions of
    # ranges per series a request in a 15 s run repeats another with a chance of a few in a thousand.
    month_s = (YEAR_DAYS - days) * 86400

    def cold_start(span: timedelta, spread_s: int) -> Callable[[random.Random], datetime]:
        """Ranges ending at `end` (spread_s < a day): a random second into their first day; longer
        spreads: whole ranges of `span` ending a random second before `end`."""
        if spread_s <= 86400:
            return lambda rng: end - span + timedelta(seconds=rng.randrange(1, spread_s))
        return lambda rng: end - span - timedelta(seconds=rng.randrange(1, spread_s))

    def agg_cold(window_s: int, span: timedelta, spread_s: int, shift_end: bool) -> Callable:
        first = cold_start(span, spread_s)

        def target(m: str, x: str, rng: random.Random) -> str:
            start = first(rng)
            stop = start + span if shift_end else end
            query = {"factory_id": FACTORY, "machine_id": m, "metric": x, "window_s": window_s}
            return "/v1/agg?" + urlencode({**query, "start": iso(start), "end": iso(stop)})

        return target

    def kpi_cold(m: str, _x: str, rng: random.Random) -> str:
        query = {"factory_id": FACTORY, "machine_id": m, "period": "day"}
        start = cold_start(timedelta(days=days), 86400)(rng)
        return "/v1/kpi?" + urlencode({**query, "start": iso(start), "end": iso(end)})

    def cold_sql(build: Callable, span: timedelta, spread_s: int, shift_end: bool) -> Callable:
        """The route's SQL over a random range of the cold requests' kind (the bare baseline of a cold miss)."""
        rng = random.Random(3)
        first = cold_start(span, spread_s)

        def sql(m: str, x: str) -> tuple[str, dict]:
            start = first(rng)
            return build(start, start + span if shift_end else end)(m, x)

        return sql

    agg_page = {"key": ("bucket_start", "sensor_id"), "columns": agg_route.COLUMNS}
    year = "continuous_aggregate" if daily else "rollup"
    kpi_page = {"key": KPI_KEY, "columns": KPI_COLUMNS}
    plain = [
        Scenario("trivial (GET /, no DB)", 0, None, lambda m, x: "/", status=307),
        Scenario(
            "agg 1 day (300 s)",
            288,
            50,
            agg(300, 1),
            agg_sql(300, end - timedelta(days=1), end, daily),
            {**agg_page, "extra": {"window_s": 300, "source_window_s": 300, "source": "stored"}},
        ),
        Scenario(
            f"agg {days} days (3600 s)",
            24 * days,
            50,
            agg(3600, days),
            agg_sql(3600, end - timedelta(days=days), end, daily),
            {**agg_page, "extra": {"window_s": 3600, "source_window_s": 3600, "source": "stored"}},
        ),
        Scenario(
            f"agg {YEAR_DAYS} days (86400 s)",
            YEAR_DAYS,
            200,
            agg(86400, YEAR_DAYS),
            agg_sql(86400, end - timedelta(days=YEAR_DAYS), end, daily),
            {**agg_page, "extra": {"window_s": 86400, "source_window_s": 86400 if daily else 3600, "source": year}},
        ),
        Scenario(
            f"kpi {days} days (day, all)",
            days * len(CATALOGUE),
            50,
            kpi,
            kpi_sql("day", end - timedelta(days=days), end),
            kpi_page,
        ),
    ]
    goals = [s for s in plain if s.name.startswith((f"agg {days} days", f"agg {YEAR_DAYS} days", f"kpi {days} days"))]
    month, year = timedelta(days=days), timedelta(days=YEAR_DAYS)
    colds = {
        goals[0].name: (
            24 * days,
            agg_cold(3600, month, month_s, shift_end=True),
            cold_sql(lambda a, b: agg_sql(3600, a, b, daily), month, month_s, True),
        ),
        goals[1].name: (
            YEAR_DAYS - 1,
            agg_cold(86400, year, 86400, shift_end=False),
            cold_sql(lambda a, b: agg_sql(86400, a, b, daily), year, 86400, False),
        ),
        goals[2].name: (
            (days - 1) * len(CATALOGUE),
            kpi_cold,
            cold_sql(lambda a, b: kpi_sql("day", a, b), month, 86400, False),
        ),
    }
    cold = [
        Scenario(f"{s.name} cold", rows, s.goal_ms, s.target, sql, s.page, cold=target)
        for s in goals
        for rows, target, sql in [colds[s.name]]
    ]
    hits = [Scenario(f"{s.name} hit", s.rows, s.goal_ms, s.target, status=304, revalidate=True) for s in goals]
    for s in goals:  # the plain requests are asked again and again: once kept, the server's cache answers them
        s.name = f"{s.name} repeat"
    return plain + cold + hits


# ------------------------------------------------------------------------------------------------
# The load generator: minimal HTTP/1.1 over asyncio streams, keep-alive, Content-Length bodies
# ------------------------------------------------------------------------------------------------
_TAIL = re.compile(rb'\],"count":(\d+),"next_cursor":null\}$')


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def error(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what


def _content_length(head: bytes) -> int | None:
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        at = head.lower().find(b"\r\ncontent-length:")
        if at < 0:
            return None
    stop = head.find(b"\r\n", at + 2)
    return int(head[at + 17 : stop])


def _verify(scenario: Scenario, body: bytes, machine: bytes, full: bool) -> str | None:
    """None when the body is a correct page: exact count, the machine asked for."""
    if scenario.status != 200:
        return None
    if full:
        page = orjson.loads(body)
        items = page["items"]
        if page["count"] != len(items) or len(items) != scenario.rows:
            return f"{len(items)} items, expected {scenario.rows}"
        if any(item["machine_id"].encode() != machine for item in items):
            return "an item of another machine"
        return None
    match = _TAIL.search(body, max(0, len(body) - 80))
    if match is None or int(match.group(1)) != scenario.rows:
        return f"count {match.group(1).decode() if match else '?'}, expected {scenario.rows}"
    if b'"machine_id":"' + machine + b'"' not in body:
        return "not the machine asked for"
    return None


async def _client(
    port: int, requests: Callable[[random.Random], tuple[bytes, bytes]], scenario: Scenario, clock: dict, run: Run
) -> None:
    reader = writer = None
    checked = False
    rng = random.Random()
    while True:
        request, machine = requests(rng)
        began = time.perf_counter()
        if began >= clock["stop"]:
            break
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head, body = await _exchange(reader, writer, request)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            if began >= clock["warm"]:
                run.error(f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        done = time.perf_counter()
        if began < clock["warm"]:
            continue
        status = int(head[9:12])
        problem = f"HTTP {status}: {body[:200]!r}" if status != scenario.status else None
        problem = problem or _verify(scenario, body, machine, full=not checked)
        checked = True
        if problem:
            run.error(problem)
        else:
            run.latencies.append(done - began)
    if writer is not None:
        writer.close()


def drive(
    port: int,
    api_key: str,
    scenario: Scenario,
    machines: list[str],
    clients: int,
    warmup: float,
    duration: float,
    on_warm: Callable[[], None] | None = None,
) -> tuple[Run, float]:
    """`clients` connections looping for warmup + duration seconds; returns the measured run and its
    wall time. `on_warm` runs (in the loop, briefly) when the warm-up ends."""
    targets = [(scenario.target(m, x), m) for m in machines for x, *_ in METRICS]
    tags = {path: etag_of(port, api_key, path) for path, _ in targets} if scenario.revalidate else {}
    requests = [
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {api_key}\r\n"
            "Accept: application/json\r\n" + (f"If-None-Match: {tags[path]}\r\n" if path in tags else "") + "\r\n"
        ).encode()
        for path, _ in targets
    ]
    requests = list(zip(requests, [m.encode() for _, m in targets], strict=True))
    pairs = [(m, x) for m in machines for x, *_ in METRICS]
    head = f" HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {api_key}\r\nAccept: application/json\r\n\r\n"

    def pick(rng: random.Random) -> tuple[bytes, bytes]:
        if scenario.cold is None:
            return rng.choice(requests)
        m, x = rng.choice(pairs)
        return f"GET {scenario.cold(m, x, rng)}{head}".encode(), m.encode()

    run = Run()

    async def main() -> None:
        now = time.perf_counter()
        clock = {"warm": now + warmup, "stop": now + warmup + duration}
        if on_warm:
            asyncio.get_running_loop().call_at(asyncio.get_running_loop().time() + warmup, on_warm)
        await asyncio.gather(*(_client(port, pick, scenario, clock, run) for _ in range(clients)))

    began = time.perf_counter()
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except ImportError:
        asyncio.run(main())
    return run, time.perf_counter() - began - warmup


def etag_of(port: int, api_key: str, path: str) -> str:
    """The ETag of an answer, as a client holds it after a first visit."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-API-Key": api_key})
    with urllib.request.urlopen(request, timeout=60) as response:
        tag = response.headers.get("ETag")
    if not tag:
        raise RuntimeError(f"no ETag on {path}: is the range provisional?")
    return tag


# ------------------------------------------------------------------------------------------------
# The dashboard mix: virtual users walking ui/static/app.js's pages with think time and a cache
# ------------------------------------------------------------------------------------------------
@dataclass
class Mix:
    calls: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # kind -> (seconds, status)
    pages: dict[str, list[float]] = field(default_factory=dict)  # page -> load seconds
    errors: int = 0
    first_error: str | None = None


def dashboard_pages(machines: list[str], end: datetime, days: int) -> list[tuple[str, int, Callable]]:
    """(page, weight, steps): steps(rng, now) -> the page's calls, a list of steps made one after the
    other, each a list of (kind, path) made in parallel (the page's Promise.all)."""
    where = {"tenant_id": TENANT, "factory_id": FACTORY}
    chart = {"fields": "avg,min,max", "limit": 10000}  # what the machine chart asks for

    def url(path: str, **params: object) -> str:
        return f"/v1{path}?" + urlencode({k: v for k, v in params.items() if v is not None})

    def machine(window_s: int, span_s: int, closed: bool) -> Callable:
        def steps(rng: random.Random, now: datetime) -> list[list[tuple[str, str]]]:
            m, metric = rng.choice(machines), rng.choice(METRICS)[0]
            stop = end if closed else now
            rng_ = {"start": iso_ms(stop - timedelta(seconds=span_s)), "end": iso_ms(stop)}
            kind = f"agg {span_s // 86400} d @{window_s}{'' if closed else ' live'}"
            return [
                [
                    ("fleet (machine)", url("/fleet", **where, machine_id=m)),
                    ("anomaly-events", url("/anomaly-events", **where, machine_id=m, **rng_, limit=500)),
                ],
                [(kind, url("/agg", **where, machine_id=m, metric=metric, window_s=window_s, **rng_, **chart))],
            ]

        return steps

    def overview(_rng: random.Random, _now: datetime) -> list[list[tuple[str, str]]]:
        return [[("fleet", url("/fleet"))]]

    def kpis(_rng: random.Random, _now: datetime) -> list[list[tuple[str, str]]]:
        rng_ = {"start": iso(end - timedelta(days=min(days, 14))), "end": iso(end)}
        return [
            [
                ("kpi (factory, day)", url("/kpi", **where, **rng_, period="day", limit=10000)),
                ("baseline-deviation", url("/baseline-deviation", **where, **rng_, period="day", limit=10000)),
                ("kpi/catalog", url("/kpi/catalog")),
            ]
        ]

    return [
        ("overview", 2, overview),
        ("machine, live day @300", 3, machine(300, 86400, closed=False)),
        (f"machine, {days} days @3600", 3, machine(3600, days * 86400, closed=True)),
        (f"machine, {YEAR_DAYS} days @86400", 1, machine(86400, YEAR_DAYS * 86400, closed=True)),
        ("kpis", 2, kpis),
    ]


def iso_ms(moment: datetime) -> str:
    """Like the dashboard's Date.toISOString(): milliseconds and Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


async def _fetch(port: int, idle: list, request: bytes) -> tuple[int, bytes, bytes]:
    """One request on an idle keep-alive connection of the user's (or a new one): status, head, body.

    A connection that sat idle longer than the server keeps it (uvicorn: 5 s; think times are longer)
    is closed by the server: the request finds it closed before any byte of an answer, and is sent
    again on a new connection, as a browser does for an idempotent request. Not counted as an error
    (it was one in the first version of this mix: 69 of them)."""
    while True:
        reused = bool(idle)
        reader, writer = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
        try:
            head, body = await _exchange(reader, writer, request)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            writer.close()
            closed_before_answer = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
            if reused and closed_before_answer:
                continue
            raise
        except BaseException:
            writer.close()
            raise
        idle.append((reader, writer))
        return int(head[9:12]), head, body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[bytes, bytes]:
    """Send `request`, read its answer: the head and the Content-Length body (none for 204 and 304)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0 if head[9:12] in (b"204", b"304") else _content_length(head)
    if length is None:
        raise ConnectionError("response without Content-Length")
    return head, (await reader.readexactly(length) if length else b"")


def _header(head: bytes, name: bytes) -> str | None:
    lower = head.lower()
    at = lower.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    stop = head.find(b"\r\n", at + 2)
    return head[at + len(name) + 3 : stop].strip().decode("latin-1")


async def _user(port: int, api_key: str, pages: list, clock: dict, think_s: float, mix: Mix, seed: int) -> None:
    rng = random.Random(seed)
    cache: dict[str, str] = {}  # path -> the ETag the browser holds
    idle: list = []
    catalog_seen = False
    names, weights = [p[0] for p in pages], [p[1] for p in pages]
    await asyncio.sleep(rng.uniform(0, think_s))  # users arrive spread out
    while time.perf_counter() < clock["stop"]:
        index = rng.choices(range(len(pages)), weights)[0]
        steps = pages[index][2](rng, datetime.now(UTC))
        began = time.perf_counter()
        failed = False
        for step in steps:
            if catalog_seen:
                step = [(k, p) for k, p in step if k != "kpi/catalog"]  # state.kpiCatalog: once per page load
            catalog_seen = catalog_seen or any(k == "kpi/catalog" for k, _ in step)

            async def call(kind: str, path: str) -> None:
                nonlocal failed
                head_lines = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {api_key}\r\n"
                head_lines += "Accept: application/json\r\n"
                if path in cache:
                    head_lines += f"If-None-Match: {cache[path]}\r\n"
                started = time.perf_counter()
                try:
                    status, head, _body = await _fetch(port, idle, (head_lines + "\r\n").encode())
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    status, head = 0, f"{type(exc).__name__}: {exc}".encode()
                done = time.perf_counter()
                if status not in (200, 304):
                    failed = True
                    if started >= clock["warm"]:
                        mix.errors += 1
                        mix.first_error = mix.first_error or f"{kind}: {status} {head[:200]!r}"
                    return
                tag = _header(head, b"etag")
                if status == 200 and tag and _header(head, b"cache-control") != "no-store":
                    cache[path] = tag
                if started >= clock["warm"]:
                    mix.calls.setdefault(kind, []).append((done - started, status))

            await asyncio.gather(*(call(kind, path) for kind, path in step))
        if began >= clock["warm"] and not failed:
            mix.pages.setdefault(names[index], []).append(time.perf_counter() - began)
        await asyncio.sleep(rng.expovariate(1 / think_s) if think_s > 0 else 0)
    for _reader, writer in idle:
        writer.close()


def drive_dashboard(
    port: int, api_key: str, pages: list, users: int, think_s: float, warmup: float, duration: float
) -> tuple[Mix, float]:
    mix = Mix()

    async def main() -> None:
        now = time.perf_counter()
        clock = {"warm": now + warmup, "stop": now + warmup + duration}
        await asyncio.gather(*(_user(port, api_key, pages, clock, think_s, mix, seed) for seed in range(users)))

    began = time.perf_counter()
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except ImportError:
        asyncio.run(main())
    return mix, time.perf_counter() - began - warmup


def mix_summary(mix: Mix, wall: float) -> dict:
    def stats(values: list[float]) -> dict:
        return {"n": len(values), "p50_ms": percentile(values, 50) * 1000, "p99_ms": percentile(values, 99) * 1000}

    calls = {}
    for kind, seen in sorted(mix.calls.items()):
        hits = [t for t, status in seen if status == 304]
        misses = [t for t, status in seen if status == 200]
        calls[kind] = {"hit": stats(hits), "miss": stats(misses)}
    every = [t for seen in mix.calls.values() for t, _ in seen]
    return {
        "requests_per_s": len(every) / wall,
        "all_calls": stats(every),
        "hit_ratio": sum(c["hit"]["n"] for c in calls.values()) / max(len(every), 1),
        "calls": calls,
        "pages": {name: stats(times) for name, times in sorted(mix.pages.items())},
        "errors": mix.errors,
        "first_error": mix.first_error,
    }


# ------------------------------------------------------------------------------------------------
# CPU accounting over a run: API processes, the database's backends of this database, the generator
# ------------------------------------------------------------------------------------------------
class CpuMeter:
    def __init__(self, api_pid: int, admin: str, database: str) -> None:
        """`admin` reads pg_stat_activity; the backends' CPU is only seen when the server is local."""
        self.api = psutil.Process(api_pid)
        self.conn = psycopg.connect(admin, autocommit=True)  # open before any run: marks must be quick
        self.database = database
        self.marks: list[dict] = []

    def close(self) -> None:
        self.conn.close()

    def _backends(self) -> list[psutil.Process]:
        out = []
        query = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        pids = [r[0] for r in self.conn.execute(query, (self.database,))]
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                out.append(psutil.Process(pid))
        return out

    @staticmethod
    def _cpu(processes: list[psutil.Process]) -> dict[int, float]:
        out = {}
        for proc in processes:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                out[proc.pid] = times.user + times.system
        return out

    def connections(self, port: int) -> list[int]:
        """The clients' connections each API worker holds (established, on `port`), most first: the
        worker holding more queues longer. Each worker listens on a SO_REUSEPORT socket of its own
        (api/serve.py), so the kernel's hash splits them; under uvicorn's one shared socket whichever
        worker woke first took all it found waiting (43/7 seen)."""
        counts = []
        for worker in self.api.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "resource_tracker" in " ".join(worker.cmdline()):
                    continue  # multiprocessing's helper beside the workers, not one of them
                held = worker.net_connections(kind="tcp")
                counts.append(sum(1 for c in held if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port))
        return sorted(counts, reverse=True)

    def mark(self) -> None:
        api = [self.api, *self.api.children(recursive=True)]
        total = psutil.cpu_times()  # busy = user + nice + system + irq + softirq (not idle, iowait, steal)
        self.marks.append(
            {
                "api": self._cpu(api),
                "db": self._cpu(self._backends()),
                "generator": time.process_time(),
                "machine": total.user + total.nice + total.system + total.irq + total.softirq,
                "wall": time.perf_counter(),
            }
        )

    def split(self) -> dict[str, float]:
        """CPU seconds between the last two marks (a backend or worker born in between counts whole)."""
        a, b = self.marks[-2], self.marks[-1]
        api = sum(v - a["api"].get(pid, 0.0) for pid, v in b["api"].items())
        db = sum(v - a["db"].get(pid, 0.0) for pid, v in b["db"].items())
        generator = b["generator"] - a["generator"]
        machine = b["machine"] - a["machine"]
        wall = b["wall"] - a["wall"]
        return {"api": api, "db": db, "generator": generator, "other": machine - api - db - generator, "wall": wall}


# ------------------------------------------------------------------------------------------------
# Same-run baselines: the SQL alone, JSON building alone, one sequential client
# ------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 < q <= 100) of `values` in seconds; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def connect(url: str) -> psycopg.Connection:
    """A connection set up like the API's pool (autocommit, dict rows, UTC)."""
    return psycopg.connect(url, autocommit=True, row_factory=dict_row, options=utc_options(url))


def sql_sequential(url: str, scenario: Scenario, machines: list[str], duration: float) -> tuple[list[float], int]:
    latencies, rows = [], 0
    rng = random.Random(1)
    with connect(url) as conn:
        stop = time.perf_counter() + duration
        while (began := time.perf_counter()) < stop:
            query, params = scenario.sql(rng.choice(machines), rng.choice(METRICS)[0])
            rows = len(conn.execute(query, params).fetchall())
            latencies.append(time.perf_counter() - began)
    return latencies, rows


def sql_concurrent(
    url: str, scenario: Scenario, machines: list[str], threads: int, warmup: float, duration: float
) -> tuple[list[float], float]:
    connections = [connect(url) for _ in range(threads)]
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter()
    warm, stop = start + warmup, start + warmup + duration

    def worker(conn: psycopg.Connection, seed: int) -> None:
        rng = random.Random(seed)
        mine = []
        while (began := time.perf_counter()) < stop:
            query, params = scenario.sql(rng.choice(machines), rng.choice(METRICS)[0])
            conn.execute(query, params).fetchall()
            if began >= warm:
                mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker, args=(c, i)) for i, c in enumerate(connections)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - warm
    for conn in connections:
        conn.close()
    return latencies, wall


def server_time(url: str, scenario: Scenario, machines: list[str], repeat: int = 15) -> float:
    """Median planning + execution time the server reports (EXPLAIN ANALYZE, no timing per node)."""
    times = []
    rng = random.Random(2)
    with connect(url) as conn:
        for _ in range(repeat):
            query, params = scenario.sql(rng.choice(machines), rng.choice(METRICS)[0])
            plan = conn.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + query, params).fetchone()
            doc = next(iter(plan.values()))[0]
            times.append((doc["Planning Time"] + doc["Execution Time"]) / 1000)
    return statistics.median(times[2:])


def json_time(url: str, scenario: Scenario, machines: list[str], repeat: int = 50) -> tuple[float, int]:
    """Median time of building the page (routes' page_response: dicts -> orjson -> Response)."""
    from starlette.requests import Request

    request = Request({"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""})
    with connect(url) as conn:
        query, params = scenario.sql(machines[0], METRICS[0][0])
        rows = conn.execute(query, params).fetchall()
    times = []
    size = 0
    for _ in range(repeat):
        began = time.perf_counter()
        response = page_response(request, rows, limit=1000, **scenario.page)
        times.append(time.perf_counter() - began)
        size = len(response.body)
    return statistics.median(times), size


# ------------------------------------------------------------------------------------------------
# Where a request's time goes: cProfile of the app in this process
# ------------------------------------------------------------------------------------------------
def profile(api_url: str, api_key: str, plan: list[Scenario], machines: list[str], count: int) -> dict[str, str]:
    """cProfile of `count` sequential requests per scenario through the whole ASGI app (middleware,
    validation, auth, the route, the response), in this process. FastAPI runs sync endpoints and
    dependencies in a thread pool, out of a profiler's sight; here they run inline in the loop's
    thread. Returns each scenario's top functions by own time."""
    import cProfile
    import io
    import logging
    import pstats

    import fastapi.dependencies.utils
    import fastapi.routing
    import httpx

    from analytics_platform.api import auth, revalidate
    from analytics_platform.api.app import create_app
    from analytics_platform.settings import PlatformSettings

    async def inline(func: Callable, *args: object, **kwargs: object) -> object:
        return func(*args, **kwargs)

    fastapi.routing.run_in_threadpool = inline
    fastapi.dependencies.utils.run_in_threadpool = inline
    revalidate.run_in_threadpool = inline  # the conditional GETs' fast path calls the endpoint itself
    auth.run_in_threadpool = inline
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request would be most of the profile
    settings = PlatformSettings(database_url=api_url, api_database_url=api_url, kafka_brokers="127.0.0.1:1")
    app = create_app(settings)
    out: dict[str, str] = {}

    async def main() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as client:
                for scenario in plan:
                    if scenario.status == 307:
                        continue
                    paths = [scenario.target(m, x) for m in machines for x, *_ in METRICS]
                    headers = {"X-API-Key": api_key, "Accept": "application/json"}
                    tags = {}
                    for path in paths:  # warm the pool and caches; a hit scenario keeps the tags
                        answer = await client.get(path, headers=headers)
                        tags[path] = answer.headers.get("etag", "")
                    profiler = cProfile.Profile()
                    profiler.enable()
                    for i in range(count):
                        path = paths[i % len(paths)]
                        sent = {**headers, "If-None-Match": tags[path]} if scenario.revalidate else headers
                        answer = await client.get(path, headers=sent)
                        if answer.status_code != scenario.status:
                            raise RuntimeError(f"{scenario.name}: HTTP {answer.status_code} {answer.text[:200]}")
                    profiler.disable()
                    text = io.StringIO()
                    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(14)
                    out[scenario.name] = text.getvalue()

    asyncio.run(main())
    return out


# ------------------------------------------------------------------------------------------------
# The API under uvicorn
# ------------------------------------------------------------------------------------------------
def spy_on(api: psutil.Process, folder: Path, name: str, seconds: float) -> list[subprocess.Popen]:
    """py-spy recording each uvicorn worker (the API's child processes) for `seconds`, as collapsed stacks.
    Sampling at 200 Hz; idle waits (the loop in epoll) are left out, so the samples are the worker's CPU."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    out = []
    for worker in api.children(recursive=True):
        command = [spy, "record", "-p", str(worker.pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw"]
        command += ["-o", str(folder / f"{slug}-{worker.pid}.txt"), "--nonblocking"]
        out.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return out


def spied(spies: list[subprocess.Popen], top: int = 25) -> str:
    """Where the recorded workers' samples are: by own time (the innermost frame) and by inclusive time
    (any frame of the stack, once per sample), summed over the workers."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for spy in spies:
        spy.wait(60)
        path = Path(spy.args[spy.args.index("-o") + 1])
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [re.sub(r" \(([^)]*/)?([^/)]+):\d+\)$", r" (\2)", f) for f in stack.split(";")[1:]]
            if frames:
                own[frames[-1]] = own.get(frames[-1], 0) + n
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + n
    if not total:
        return "  py-spy: no samples"
    lines = [f"  py-spy, {total} samples of the workers: own time"]
    lines += [f"    {n / total:6.1%}  {f}" for f, n in sorted(own.items(), key=lambda i: -i[1])[:top]]
    lines.append("  inclusive")
    lines += [f"    {n / total:6.1%}  {f}" for f, n in sorted(inclusive.items(), key=lambda i: -i[1])[:top]]
    return "\n".join(lines)


def start_api(api_url: str, workers: int, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        **os.environ,
        "API_DATABASE_URL": api_url,
        "DATABASE_URL": api_url,
        "KAFKA_BROKERS": "127.0.0.1:1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("API_WRITE_DATABASE_URL", None)
    command = api_command("127.0.0.1", port, "--workers", str(workers), "--no-access-log", "--log-level", "warning")
    log.parent.mkdir(parents=True, exist_ok=True)  # absent when TEST_DATABASE_URL spared the embedded server
    out = log.open("ab")
    process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    out.close()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=10):
                pass
            break
        except urllib.error.HTTPError as exc:  # 503: up, database or broker degraded
            if exc.code == 503:
                break
        except OSError:
            time.sleep(0.3)
    else:
        stop_api(process)
        raise RuntimeError(f"uvicorn did not answer /v1/health within 90 s; see {log}")
    return process, port


def stop_api(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


# ------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--baseline-duration", type=float, default=5.0, help="seconds per baseline measurement")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", default="2", help="uvicorn workers; a list (1,2) measures each in turn")
    parser.add_argument("--users", type=int, help="virtual dashboard users of the mix (default: --clients)")
    parser.add_argument("--think", type=float, default=2.0, help="mean think time between pages, seconds")
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    parser.add_argument("--profile", type=int, default=0, help="cProfile N requests per scenario in-process, print")
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="record each uvicorn worker with py-spy (on PATH or beside this Python) over each scenario's measured "
        "seconds into this folder, and print where the workers' samples are (its own CPU counts as others')",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database (name printed) for --database")
    parser.add_argument(
        "--database", help="reuse a database loaded by an earlier --keep run (never dropped by the reusing run)"
    )
    parser.add_argument("--json", type=Path, default=ROOT / ".run" / "bench" / "api.json")
    args = parser.parse_args()
    workers_list = [int(w) for w in str(args.workers).split(",")]
    machines = machine_ids(args.machines)

    run_dir = ROOT / ".run" / "bench"
    server = None
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        if not args.database:
            shutil.rmtree(run_dir / "pg-api", ignore_errors=True)
        server = EmbeddedPostgres(run_dir / "pg-api" / "data", free_port(), "bench", run_dir / "pg-api" / "pg.log")
        server.init()
        server.start()
        admin = server.admin_url
    database = args.database or f"bench_api_{int(time.time())}"
    url = admin.rsplit("/", 1)[0] + "/" + database
    login = "bench_api_ro"
    processes: list[subprocess.Popen] = []
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            if not args.database:
                conn.execute(f"CREATE DATABASE {database}")
            version = conn.execute("SHOW server_version").fetchone()[0]
        if not args.database:
            apply_migrations(url, timescale="auto")
        password = "bench-" + secrets.token_hex(12)
        ensure_login(admin, login, password, "analytics_ro")
        api_url = with_credentials(url, login, password)
        with psycopg.connect(url, autocommit=True) as conn:
            _, api_key = create_key(conn, "bench", TENANT)
            timescale = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
            daily = has_daily_view(conn)
        server_name = f"PostgreSQL {version}" + (f" + TimescaleDB {timescale[0]}" if timescale else "")
        print(f"{server_name}; database {database}", flush=True)

        if args.database:
            with psycopg.connect(url, autocommit=True) as conn:
                last = "SELECT max(bucket_end) FROM analytics.analytics_agg WHERE window_s = 3600"
                end = conn.execute(last).fetchone()[0].astimezone(UTC)
            loaded = None
        else:
            end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            print(
                f"loading {args.machines} machines x {len(METRICS)} metrics, {args.days} days "
                f"(window {WINDOWS[-1]} s {YEAR_DAYS} days) up to {iso(end)}...",
                flush=True,
            )
            loaded = load(url, machines, args.days, end)
            total = sum(loaded["rows"].values())
            print(
                f"loaded {total:,} rows in {loaded['copy_s']:.1f} s ({total / loaded['copy_s']:,.0f} rows/s); "
                f"VACUUM ANALYZE {loaded['vacuum_analyze_s']:.1f} s"
                + (f"; continuous aggregate refresh {loaded['refresh_cagg_s']:.1f} s" if daily else "")
                + f"; CHECKPOINT {loaded['checkpoint_s']:.1f} s",
                flush=True,
            )
        plan = scenarios(end, args.days, daily)
        if args.only:
            plan = [s for s in plan if args.only in s.name]

        if args.profile:
            for name, text in profile(api_url, api_key, plan, machines, args.profile).items():
                print(f"\nprofile of {args.profile} requests, {name} (by own time):\n{text}", flush=True)
        results: dict = {"by_workers": {}, "baselines": {}}
        for workers in workers_list:
            process, port = start_api(api_url, workers, run_dir / "api-uvicorn.log")
            processes.append(process)
            meter = CpuMeter(process.pid, admin, database)
            rows_out = []
            print(f"\nAPI: uvicorn --workers {workers}, {args.clients} clients, {args.duration:.0f} s per scenario")
            for scenario in plan:
                held: list[int] = []

                spies: list[subprocess.Popen] = []

                def warm(
                    held: list[int] = held,
                    meter: CpuMeter = meter,
                    port: int = port,
                    spies: list[subprocess.Popen] = spies,
                    name: str = f"w{workers}-{scenario.name}",
                ) -> None:
                    meter.mark()
                    held.extend(meter.connections(port))
                    if args.py_spy:
                        spies.extend(spy_on(meter.api, args.py_spy, name, args.duration))

                run, wall = drive(port, api_key, scenario, machines, args.clients, args.warmup, args.duration, warm)
                meter.mark()
                cpu = meter.split()
                if spies:
                    print(spied(spies), flush=True)
                n = len(run.latencies) + run.errors
                p99 = percentile(run.latencies, 99)
                row = {
                    "scenario": scenario.name,
                    "rows": scenario.rows,
                    "requests": n,
                    "rps": n / wall,
                    "p50_ms": percentile(run.latencies, 50) * 1000,
                    "p95_ms": percentile(run.latencies, 95) * 1000,
                    "p99_ms": p99 * 1000,
                    "errors": run.errors,
                    "first_error": run.first_error,
                    "goal_ms": scenario.goal_ms,
                    "met": None if scenario.goal_ms is None else (run.errors == 0 and p99 * 1000 <= scenario.goal_ms),
                    "cpu_ms_per_request": {k: cpu[k] / max(n, 1) * 1000 for k in ("api", "db", "generator")},
                    # CPU of everything else on the machine (other processes, the kernel's own work), in cores
                    "other_cores": cpu["other"] / cpu["wall"],
                    "busy_cores": (cpu["api"] + cpu["db"] + cpu["generator"] + cpu["other"]) / cpu["wall"],
                    "connections_per_worker": held,
                }
                rows_out.append(row)
                print(
                    f"  {scenario.name:<26} {row['rps']:>7.0f} req/s  p50 {row['p50_ms']:6.1f}  "
                    f"p95 {row['p95_ms']:6.1f}  p99 {row['p99_ms']:6.1f} ms  errors {run.errors}  "
                    f"connections per worker {'/'.join(map(str, held))}"
                    + (f" (first: {run.first_error})" if run.errors else ""),
                    flush=True,
                )
            mix = None
            if not args.only or args.only in "dashboard mix":
                users = args.users or args.clients
                pages = dashboard_pages(machines, end, args.days)
                meter.mark()
                run_mix, wall = drive_dashboard(port, api_key, pages, users, args.think, args.warmup, args.duration)
                meter.mark()
                cpu = meter.split()
                mix = {"users": users, "think_s": args.think, **mix_summary(run_mix, wall)}
                mix["busy_cores"] = (cpu["api"] + cpu["db"] + cpu["generator"] + cpu["other"]) / cpu["wall"]
                print(
                    f"  dashboard mix, {users} users: {mix['requests_per_s']:.0f} req/s  p50 "
                    f"{mix['all_calls']['p50_ms']:6.1f}  p99 {mix['all_calls']['p99_ms']:6.1f} ms  hits "
                    f"{mix['hit_ratio']:.0%}  errors {run_mix.errors}"
                    + (f" (first: {run_mix.first_error})" if run_mix.errors else ""),
                    flush=True,
                )
            # a single sequential client: latency without queueing
            single = {}
            for scenario in plan:
                run, wall = drive(port, api_key, scenario, machines, 1, 1.0, args.baseline_duration)
                single[scenario.name] = {
                    "rps": len(run.latencies) / wall,
                    "p50_ms": percentile(run.latencies, 50) * 1000,
                    "p99_ms": percentile(run.latencies, 99) * 1000,
                    "errors": run.errors,
                }
            stop_api(process)
            meter.close()
            results["by_workers"][workers] = {"concurrent": rows_out, "single_client": single, "dashboard": mix}

        print("\nbaselines (same run): the route's SQL through psycopg, JSON building", flush=True)
        for scenario in plan:
            if scenario.sql is None:
                continue
            seq, rows = sql_sequential(api_url, scenario, machines, args.baseline_duration)
            conc, wall = sql_concurrent(api_url, scenario, machines, args.clients, 1.0, args.baseline_duration)
            server_s = server_time(api_url, scenario, machines)
            json_s, size = json_time(api_url, scenario, machines)
            results["baselines"][scenario.name] = {
                "rows": rows,
                "response_bytes": size,
                "server_ms": server_s * 1000,
                "sql_seq_p50_ms": percentile(seq, 50) * 1000,
                "sql_seq_p99_ms": percentile(seq, 99) * 1000,
                "sql_threads_rps": len(conc) / wall,
                "sql_threads_p50_ms": percentile(conc, 50) * 1000,
                "sql_threads_p99_ms": percentile(conc, 99) * 1000,
                "json_ms": json_s * 1000,
            }
            print(f"  {scenario.name}: done", flush=True)

        report(args, server_name, loaded, results, plan)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": machine_info(),
                    "server": server_name,
                    "machines": args.machines,
                    "days": args.days,
                    "clients": args.clients,
                    "duration_s": args.duration,
                    "load": loaded,
                    **results,
                },
                indent=2,
                default=str,
            )
        )
        print(f"\nwritten to {args.json}")
    finally:
        for process in processes:
            stop_api(process)
        # a database given with --database was loaded by an earlier run and is someone's to drop: a reuse
        # without --keep deleted a 9.84 M-row database another hold was about to measure on
        if not args.keep and not args.database:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
                with contextlib.suppress(psycopg.Error):
                    conn.execute(f"DROP ROLE IF EXISTS {login}")
        else:
            print(f"kept database {database} (rerun with --database {database})")
        if server:
            server.stop()
    return 0


def report(args: argparse.Namespace, server_name: str, loaded: dict | None, results: dict, plan: list) -> None:
    print(f"\nmachine: {machine_info()}; {server_name}")
    if loaded:
        print(f"rows: {loaded['rows']}")
    others = 0.0
    for workers, res in results["by_workers"].items():
        print(f"\n--workers {workers}, {args.clients} concurrent clients, {args.duration:.0f} s each (times in ms)")
        print(
            f"{'scenario':<28}{'rows':>6}{'req/s':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'errors':>8}{'goal p99':>10}"
            f"  met? {'needs req/s':>12}   CPU ms/req: API    DB   gen   others (cores)"
        )
        for r in res["concurrent"]:
            goal = f"<= {r['goal_ms']:.0f}" if r["goal_ms"] else "-"
            met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
            # Little's law: with a closed loop of `clients`, mean latency = clients / throughput <= p99
            needs = f"{args.clients / r['goal_ms'] * 1000:,.0f}" if r["goal_ms"] else "-"
            cpu = r["cpu_ms_per_request"]
            others = max(others, r["other_cores"])
            print(
                f"{r['scenario']:<28}{r['rows']:>6}{r['rps']:>8.0f}{r['p50_ms']:>8.1f}{r['p95_ms']:>8.1f}"
                f"{r['p99_ms']:>8.1f}{r['errors']:>8}{goal:>10}  {met:<4}{needs:>12}"
                f"{cpu['api']:>18.2f}{cpu['db']:>6.2f}{cpu['generator']:>6.2f}{r['other_cores']:>9.2f}"
            )
            if r["errors"]:
                print(f"    first error: {r['first_error']}")
        mix = res.get("dashboard")
        if mix:
            print(
                f"dashboard mix: {mix['users']} users, think {mix['think_s']:.1f} s: {mix['requests_per_s']:.0f} req/s,"
                f" p50 {mix['all_calls']['p50_ms']:.1f} p99 {mix['all_calls']['p99_ms']:.1f} ms, hits "
                f"{mix['hit_ratio']:.0%}, errors {mix['errors']}, busy cores {mix['busy_cores']:.2f}"
            )
            print(f"  {'call':<28}{'hits':>7}{'p50':>8}{'p99':>8}{'misses':>8}{'p50':>8}{'p99':>8}")
            for kind, c in mix["calls"].items():
                hit, miss = c["hit"], c["miss"]
                print(
                    f"  {kind:<28}{hit['n']:>7}{hit['p50_ms']:>8.1f}{hit['p99_ms']:>8.1f}"
                    f"{miss['n']:>8}{miss['p50_ms']:>8.1f}{miss['p99_ms']:>8.1f}"
                )
            for name, page in mix["pages"].items():
                print(
                    f"  page {name:<33} {page['n']:>6} loads  p50 {page['p50_ms']:7.1f}  p99 {page['p99_ms']:7.1f} ms"
                )
            if mix["first_error"]:
                print(f"    first error: {mix['first_error']}")
        print("single sequential client:")
        for name, s in res["single_client"].items():
            print(
                f"  {name:<26} {s['rps']:>6.0f} req/s  p50 {s['p50_ms']:6.2f}  p99 {s['p99_ms']:6.2f}  "
                f"errors {s['errors']}"
            )
    if results["baselines"]:
        print(
            f"\n{'where a request goes (ms)':<28}{'bytes':>9}{'DB server':>10}{'SQL+fetch':>10}{'p99':>7}"
            f"{'JSON':>7}{'API 1 client':>13}{'rest':>7}   SQL alone, {args.clients} threads: req/s   p50    p99"
        )
        for name, b in results["baselines"].items():
            api = [res["single_client"][name]["p50_ms"] for res in results["by_workers"].values()]
            single = min(api) if api else float("nan")
            rest = single - b["sql_seq_p50_ms"] - b["json_ms"]
            print(
                f"{name:<28}{b['response_bytes']:>9,}{b['server_ms']:>10.2f}{b['sql_seq_p50_ms']:>10.2f}"
                f"{b['sql_seq_p99_ms']:>7.2f}{b['json_ms']:>7.2f}{single:>13.2f}{rest:>7.2f}"
                f"{b['sql_threads_rps']:>31.0f}{b['sql_threads_p50_ms']:>6.1f}{b['sql_threads_p99_ms']:>7.1f}"
            )
        print(f"\nthe API against bare SQL in this run ({args.clients} clients; the SQL with as many threads):")
        for workers, res in results["by_workers"].items():
            for r in res["concurrent"]:
                b = results["baselines"].get(r["scenario"])
                if b:
                    print(
                        f"  --workers {workers} {r['scenario']:<28} req/s {r['rps'] / b['sql_threads_rps']:5.2f} x SQL,"
                        f"  p99 {r['p99_ms'] / b['sql_threads_p99_ms']:5.2f} x SQL"
                    )
                    r["vs_sql"] = {
                        "rps": r["rps"] / b["sql_threads_rps"],
                        "p99": r["p99_ms"] / b["sql_threads_p99_ms"],
                    }
        print(
            "DB server: planning + execution (EXPLAIN ANALYZE); SQL+fetch: the route's query through psycopg, dict"
            " rows, one connection, sequential (p50, p99); JSON: page_response on fetched rows; API 1 client: p50 of"
            " one sequential HTTP client (best of the worker counts); rest = API - SQL+fetch - JSON (framework, HTTP,"
            " pool, generator)."
        )
    if others > 0.15:
        print(
            f"\nNOTE: other processes used up to {others:.2f} of the {os.cpu_count()} cores during the runs; the"
            " machine was not quiet and the figures are pessimistic."
        )


if __name__ == "__main__":
    raise SystemExit(main())
