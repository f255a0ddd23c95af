"""Device rollups benchmark: a day of hourly `device_health_events` runs and the day's rollup, as the
assets run them, over a week of `device.health` history.

Synthetic plant (t1, machines mc-000..), 8 days: a health score every 60 s per machine and a status
message every 15 min (online), with one 20-60 min offline spell a day reported by status, and one
30-90 min silence a day (nothing at all from the machine: its edge agent lost power), so the hours
have silences to judge and hours rolled up before a silence was known to refresh.

Prints the wall time of: the day's 24 hours recomputed one by one (`recompute_device`, as the
asset's run of a range does, hour by hour), the same again (nothing changed: the steady-state
cost of a re-run), and the day's rollup (`recompute_days`). Nothing here asserts a time.

Usage: python bench/device_events.py [--machines 100]
Uses TEST_DATABASE_URL (an admin URL; the bench creates and drops bench_device_events), else starts an
embedded PostgreSQL under .run/bench/. Run it from another source tree (a copy of an older commit) to
get a baseline on the same machine: the calls it makes are the ones both versions have.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.devstack.postgres import EmbeddedPostgres  # noqa: E402
from analytics_platform.devstack.processes import free_port  # noqa: E402
from analytics_platform.ingest.store import copy_rows  # noqa: E402
from analytics_platform.migrations import apply_migrations  # noqa: E402
from analytics_platform.results.events import recompute_days, recompute_device  # noqa: E402

DATABASE = "bench_device_events"
DAY = datetime(2025, 8, 20, tzinfo=UTC)
FIRST = DAY - timedelta(days=7)
HOUR = timedelta(hours=1)
LOOKBACK = timedelta(hours=168)


def plant(machines: int) -> pl.DataFrame:
    """raw_device_health rows of `machines` machines over FIRST..DAY + 1 day."""
    rng = random.Random(7)
    times, ids, statuses, scores = [], [], [], []
    for n in range(machines):
        machine = f"mc-{n:03d}"
        minute = 0
        for day in range(8):
            offline_at = day * 1440 + rng.randrange(60, 1380)
            offline_to = offline_at + rng.randrange(20, 60)
            silent_at = day * 1440 + rng.randrange(60, 1340)
            silent_to = silent_at + rng.randrange(30, 90)
            for minute in range(day * 1440, (day + 1) * 1440):
                if silent_at <= minute < silent_to:
                    continue
                status = None
                if minute == offline_at:
                    status = "offline"
                elif minute == offline_to or (minute % 15 == 0 and not offline_at < minute < offline_to):
                    status = "online"
                times.append(FIRST + timedelta(minutes=minute, seconds=n % 60))
                ids.append(machine)
                statuses.append(status)
                scores.append(None if status else 0.9)
    frame = pl.DataFrame(
        {"time": times, "machine_id": ids, "status": statuses, "health_score": scores},
        schema={
            "time": pl.Datetime("us", "UTC"),
            "machine_id": pl.String,
            "status": pl.String,
            "health_score": pl.Float64,
        },
    )
    return frame.with_columns(
        tenant_id=pl.lit("t1"),
        factory_id=pl.lit("f1"),
        level=pl.when(pl.col("status") == "offline").then(pl.lit("critical")).otherwise(pl.lit("ok")),
        schema_version=pl.lit(1, pl.Int16),
        dedup_key=pl.col("machine_id") + "|" + pl.col("time").dt.epoch("us").cast(pl.String),
        topic=pl.lit("device.health"),
        kafka_partition=pl.lit(0, pl.Int32),
        kafka_offset=pl.int_range(pl.len(), dtype=pl.Int64),
    )


def timed(label: str, work) -> float:
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    print(f"{label:<44} {seconds:8.2f} s", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=100)
    args = parser.parse_args()
    run_dir = ROOT / ".run" / "bench"
    server = None
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        shutil.rmtree(run_dir / "pg-device", ignore_errors=True)
        server = EmbeddedPostgres(
            run_dir / "pg-device" / "data", free_port(), "bench", run_dir / "pg-device" / "pg.log"
        )
        server.init()
        server.start()
        admin = server.admin_url
    url = admin.rsplit("/", 1)[0] + "/" + DATABASE
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            conn.execute(f"CREATE DATABASE {DATABASE}")
        apply_migrations(url)
        rows = plant(args.machines)
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            copy_rows(cur, sql.Identifier("analytics", "raw_device_health"), rows, rows.columns)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE analytics.raw_device_health")
        print(
            f"source tree {ROOT}; {args.machines} machines, {rows.height:,} device.health rows over 8 days", flush=True
        )

        def hours() -> None:
            with psycopg.connect(url) as conn:
                for h in range(24):
                    recompute_device(conn, [60, 300, 3600], DAY + h * HOUR, DAY + (h + 1) * HOUR, lookback=LOOKBACK)

        def day() -> None:
            with psycopg.connect(url) as conn:
                recompute_days(conn, ["device"], DAY, DAY + 24 * HOUR, windows=[60, 300, 3600], lookback=LOOKBACK)

        timed("24 hours, one by one (first run)", hours)
        timed("24 hours, one by one (re-run, nothing new)", hours)
        timed("day rollup", day)
        with psycopg.connect(url) as conn:
            uptime = conn.execute(
                "SELECT round(avg(uptime_pct)::numeric, 3) FROM analytics.analytics_event_rollup "
                "WHERE event_type = 'device_health' AND window_s = 86400"
            ).fetchone()[0]
            periods = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE details::text LIKE '%%no_data%%'), min(time), max(time) "
                "FROM analytics.analytics_event WHERE event_type = 'offline_period'"
            ).fetchone()
        print(
            f"day's mean uptime {uptime} %, offline periods stored {periods[0]} ({periods[1]} of them silences), "
            f"begun {periods[2]:%m-%d %H:%M} to {periods[3]:%m-%d %H:%M}",
            flush=True,
        )
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
