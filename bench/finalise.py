"""Finaliser benchmark: one incremental finaliser run of a busy hour against the full-hour run it
replaces, in the same run (issue 22, item 2: a final 60 s bucket p95 <= 15 s after its window closes).

Loads `--minutes` (42) of an hour at `--rate` (5,000) readings/s into raw (two tenants with the same
machine ids, 1,000 series), runs the window aggregates of the hour in full (the state a finaliser run
starts from: as if it ran at the minute's end), then `--steps` times: one more minute of readings and
`--late` late readings of one machine spread over the earlier minutes (an edge agent's buffer after an
outage), each committed like a drain batch, and the finaliser's incremental run at the new minute's end
(`finalise_hour`; the defaults end at 10:45, where a 300 s bucket closes with the minute's: the run
writes the 60 s buckets ahead of the rest, and says when they were final; `--minutes 57` ends at the
hour's end, where the minute goes ahead of the full run). Last, the full-hour run at the same point
(what each finaliser run used to cost) and a check that it leaves every closed bucket the incremental
runs wrote as it was (bit for bit). Wall seconds and CPU seconds (this process;
PostgreSQL's server processes) of each. Asserts nothing about time.

Usage: python bench/finalise.py [--minutes 42] [--rate 5000] [--steps 3] [--late 1000]
Uses TEST_DATABASE_URL (an admin URL) or starts an embedded PostgreSQL under .run/bench/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.devstack.postgres import EmbeddedPostgres  # noqa: E402
from analytics_platform.devstack.processes import free_port  # noqa: E402
from analytics_platform.ingest.store import copy_rows  # noqa: E402
from analytics_platform.migrations import apply_migrations  # noqa: E402
from analytics_platform.results.aggregates import AggregateRun, finalise_hour, recompute_aggregates  # noqa: E402
from analytics_platform.transforms.window_aggregates import AGG_COLUMNS  # noqa: E402
from bench.checks import RAW_COLUMNS  # noqa: E402
from bench.ingest import git_revision, machine_info, process_tree_cpu_s  # noqa: E402

HOUR = datetime(2025, 8, 20, 15, tzinfo=UTC)
WINDOWS = [60, 300, 3600]
MACHINES, SERIES = 100, 10  # 1,000 series; machines 0-49 of t1 and t2 share their ids


def minute_of_readings(minute: int, rate: int, offset: int) -> pl.DataFrame:
    """`rate` readings/s for one minute of HOUR, spread evenly over the series."""
    n = rate * 60
    per_series = max(1, n // (MACHINES * SERIES))
    step_us = 60_000_000 // per_series
    frame = pl.DataFrame({"i": pl.int_range(0, MACHINES * SERIES * per_series, eager=True)})
    return frame.select(
        time=(
            pl.lit(HOUR + timedelta(minutes=minute)) + pl.duration(microseconds=(pl.col("i") % per_series) * step_us)
        ).cast(pl.Datetime("us", "UTC")),
        tenant_id=pl.when(pl.col("i") // (per_series * SERIES) < MACHINES // 2)
        .then(pl.lit("t1"))
        .otherwise(pl.lit("t2")),
        factory_id=pl.lit("f1"),
        machine_id=pl.format("mc-{}", (pl.col("i") // (per_series * SERIES)) % (MACHINES // 2)),
        sensor_id=pl.format("s-{}", (pl.col("i") // per_series) % SERIES),
        metric=pl.lit("temp"),
        value=65.0 + ((pl.col("i") * 7919 + minute * 104729) % 1001 - 500) / 997,
        unit=pl.lit("degC"),
        schema_version=pl.lit(1, pl.Int16),
        dedup_key=pl.format("bench|{}|{}", pl.lit(minute), pl.col("i") + offset),
        topic=pl.lit("bench"),
        kafka_partition=pl.lit(0, pl.Int32),
        kafka_offset=pl.col("i") + offset,
    )


def late_readings(before: int, count: int, seed: int) -> pl.DataFrame:
    """`count` readings of one machine (t2's mc-7, its 10 series) spread over the minutes [0, before),
    arriving now: an edge agent's buffer after an outage."""
    step_us = before * 60_000_000 // max(count, 1)
    return pl.DataFrame({"i": pl.int_range(0, count, eager=True)}).select(
        time=(pl.lit(HOUR) + pl.duration(microseconds=pl.col("i") * step_us + seed)).cast(pl.Datetime("us", "UTC")),
        tenant_id=pl.lit("t2"),
        factory_id=pl.lit("f1"),
        machine_id=pl.lit("mc-7"),
        sensor_id=pl.format("s-{}", pl.col("i") % SERIES),
        metric=pl.lit("temp"),
        value=64.0 + (pl.col("i") % 17) / 8,
        unit=pl.lit("degC"),
        schema_version=pl.lit(1, pl.Int16),
        dedup_key=pl.format("late|{}|{}", pl.lit(seed), pl.col("i")),
        topic=pl.lit("bench"),
        kafka_partition=pl.lit(1, pl.Int32),
        kafka_offset=pl.col("i") + seed * 10**6,
    )


def store(url: str, frame: pl.DataFrame) -> None:
    """One transaction, as a drain batch commits (its start is the rows' ingested_at)."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction(), conn.cursor() as cur:
        copy_rows(cur, "raw_sensor_readings", frame, RAW_COLUMNS)


def timed(server_pid: int, fn: Callable[[], object]) -> tuple[object, float, float, float]:
    """fn's result, wall seconds, this process' CPU seconds, the database server's CPU seconds."""
    server = process_tree_cpu_s(server_pid)
    cpu = time.process_time()
    began = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - began
    return out, wall, time.process_time() - cpu, process_tree_cpu_s(server_pid) - server


CLOSED = f"""SELECT {", ".join(AGG_COLUMNS)} FROM analytics.analytics_agg WHERE bucket_end <= %s
ORDER BY window_s, bucket_start, tenant_id, machine_id, sensor_id"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=42)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--late", type=int, default=1000)
    args = parser.parse_args()
    admin = os.environ.get("TEST_DATABASE_URL")
    run_dir = ROOT / ".run" / "bench"
    server = None
    if not admin:
        shutil.rmtree(run_dir / "pg-finalise", ignore_errors=True)
        server = EmbeddedPostgres(
            run_dir / "pg-finalise" / "data", free_port(), "bench", run_dir / "pg-finalise" / "pg.log"
        )
        server.init()
        server.start()
        admin = server.admin_url
        server_pid = int((run_dir / "pg-finalise" / "data" / "postmaster.pid").read_text().split()[0])
    else:
        server_pid = os.getpid()  # a server elsewhere: its CPU is not ours to read
    database = f"bench_finalise_{int(time.time())}"
    print(f"machine: {machine_info()}, commit {git_revision()}", flush=True)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
        url = admin.rsplit("/", 1)[0] + "/" + database
        apply_migrations(url)
        began = time.perf_counter()
        for minute in range(args.minutes):
            store(url, minute_of_readings(minute, args.rate, minute * 10**7))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE analytics.raw_sensor_readings")
            loaded = conn.execute("SELECT count(*) FROM analytics.raw_sensor_readings").fetchone()[0]
        print(f"{loaded:,} readings in {args.minutes} min of the hour, loaded in {time.perf_counter() - began:.0f} s")

        end = HOUR + timedelta(hours=1)
        with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
            run, wall, cpu, pg = timed(server_pid, lambda: recompute_aggregates(conn, WINDOWS, HOUR, end))
            print(f"full hour at {args.minutes} min: {run.readings:,} readings, wall {wall:.2f} s, CPU {cpu:.2f} s + "
                  f"PostgreSQL {pg:.2f} s")  # fmt: skip
            # the database's clock is a year past the readings: as if that run had been at the minute's end
            at = HOUR + timedelta(minutes=args.minutes)
            conn.execute("UPDATE analytics.agg_materialised_hours SET as_of = %s WHERE hour_start = %s", (at, HOUR))
            conn.execute("UPDATE analytics.agg_finalise_positions SET closed_until = %s", (at,))
            for step in range(args.steps):
                minute = args.minutes + step
                store(url, minute_of_readings(minute, args.rate, minute * 10**7))
                store(url, late_readings(minute, args.late, step))
                closed_by = HOUR + timedelta(minutes=minute + 1)
                ahead: list[float] = []  # when the smallest window's part committed, if written ahead
                began = time.perf_counter()

                def note(_: AggregateRun, ahead: list[float] = ahead, began: float = began) -> None:
                    ahead.append(time.perf_counter() - began)

                run, wall, cpu, pg = timed(
                    server_pid, lambda c=closed_by, n=note: finalise_hour(conn, WINDOWS, HOUR, c, on_ahead=n)
                )
                if isinstance(run, str):  # the hour's last bucket: its minute went ahead, the caller runs it in full
                    assert run == "the hour's last bucket closed" and ahead, run
                    print(f"the hour's end at {closed_by:%H:%M}: the {WINDOWS[0]} s buckets final after "
                          f"{ahead[0]:.2f} s; then the full run below (what the asset does next)")  # fmt: skip
                    continue
                parts = ", ".join(f"{k} {v:.2f}" for k, v in run.seconds.items())
                first = (
                    f"; the {WINDOWS[0]} s buckets final after {ahead[0]:.2f} s ({run.ahead.readings:,} readings), "
                    f"the rest after {wall:.2f} s"
                    if ahead and run.ahead
                    else ""
                )
                print(
                    f"incremental at {closed_by:%H:%M}: {run.readings:,} readings, closed buckets {run.buckets}, "
                    f"late series buckets {run.late}, wall {wall:.2f} s ({parts}), CPU {cpu:.2f} s + "
                    f"PostgreSQL {pg:.2f} s{first}"
                )
            # at the hour's end only the 60 s buckets were written ahead; the full run writes the rest
            closed = [r for r in conn.execute(CLOSED, (closed_by,)).fetchall() if closed_by < end or r[2] == WINDOWS[0]]
            run, wall, cpu, pg = timed(server_pid, lambda: recompute_aggregates(conn, WINDOWS, HOUR, end))
            print(f"full hour at {closed_by:%H:%M} (same-run baseline): {run.readings:,} readings, wall {wall:.2f} s, "
                  f"CPU {cpu:.2f} s + PostgreSQL {pg:.2f} s")  # fmt: skip
            same = [r for r in conn.execute(CLOSED, (closed_by,)).fetchall() if closed_by < end or r[2] == WINDOWS[0]]
            same = same == closed
            print(f"the full run left the {len(closed):,} closed buckets as the incremental runs wrote them: {same}")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        if server:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
