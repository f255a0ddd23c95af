"""Data-contract benchmark: what the asset checks cost for one hour of a realistic plant.

One hour of 100 machines x 10 series x 360 readings (one per 10 s: 360,000 rows) and the hour
before it, the window aggregates of the hour (60 / 300 / 3600 s), then, in a fresh process (so the
one-off Great Expectations import is counted once, as in a run):

  * gx import + context        importing great_expectations and building the ephemeral context
  * raw_sensor_readings checks  read the hour back, the previous hour's series, the GX suites
                                (values_in_range, units_match, completeness)
  * sensor_window_aggregates    read the hour's buckets back (grouped by series as binary arrays,
                                as the checks do; beside it, the COPY read they used before), the
                                GX suites (schema, keys, reconciliation, derived ranges)
  * live range profile          the drain's per-micro-batch values_in_range / units_match counts
                                for one 20,000-row batch (Polars, no GX)

Usage: python bench/checks.py [--machines 100] [--series 10] [--per-hour 360] [--repeat 3]
Uses TEST_DATABASE_URL (an admin URL) or starts an embedded PostgreSQL under .run/bench/. Prints
figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
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
from bench.ingest import machine_info  # noqa: E402

HOUR = datetime(2025, 8, 20, 3, tzinfo=UTC)
# ten metrics of the catalogue with a value inside its range and the canonical unit
METRICS = [
    ("temp", 65.0, "degC"),
    ("humidity", 45.0, "%"),
    ("pressure", 420.0, "kPa"),
    ("vibration", 3.2, "mm/s"),
    ("current", 120.0, "A"),
    ("voltage", 400.0, "V"),
    ("power", 50.0, "kW"),
    ("flow", 30.0, "m3/h"),
    ("speed", 1500.0, "rpm"),
    ("level", 60.0, "%"),
]
RAW_COLUMNS = (
    "time",
    "tenant_id",
    "factory_id",
    "machine_id",
    "sensor_id",
    "metric",
    "value",
    "unit",
    "schema_version",
    "dedup_key",
    "topic",
    "kafka_partition",
    "kafka_offset",
)


def readings(start: datetime, machines: int, series: int, per_hour: int) -> pl.DataFrame:
    """One hour from `start`: every series of every machine reads every 3600 / per_hour seconds."""
    step_us = 3_600_000_000 // per_hour
    n = machines * series * per_hour
    frame = pl.DataFrame({"i": pl.int_range(0, n, eager=True)}).with_columns(
        m=pl.col("i") // (series * per_hour), s=(pl.col("i") // per_hour) % series, k=pl.col("i") % per_hour
    )
    metrics = pl.DataFrame(
        {
            "s": range(series),
            "metric": [METRICS[j % len(METRICS)][0] for j in range(series)],
            "base": [METRICS[j % len(METRICS)][1] for j in range(series)],
            "unit": [METRICS[j % len(METRICS)][2] for j in range(series)],
        }
    ).with_columns(pl.col("s").cast(pl.Int64))
    return (
        frame.join(metrics, on="s")
        .select(
            time=(pl.lit(start) + pl.duration(microseconds=pl.col("k") * step_us)).cast(pl.Datetime("us", "UTC")),
            tenant_id=pl.lit("t1"),
            factory_id=pl.format("f{}", pl.col("m") // 50 + 1),
            machine_id=pl.format("mc-{}", pl.col("m")),
            sensor_id=pl.format("s-{}", pl.col("s")),
            metric=pl.col("metric"),
            value=pl.col("base") * (1 + ((pl.col("i") * 7919) % 101 - 50) / 1000),
            unit=pl.col("unit"),
            schema_version=pl.lit(1, pl.Int16),
            dedup_key=pl.format("bench|{}|{}", pl.col("i"), pl.lit(start.isoformat())),
            topic=pl.lit("bench"),
            kafka_partition=pl.lit(0, pl.Int32),
            kafka_offset=pl.col("i"),
        )
        .sort("time")
    )


def measure(url: str, repeat: int) -> dict:
    """Runs in a fresh process: the checks of the hour, each part timed, best and median."""
    began = time.perf_counter()
    from analytics_platform.data_quality.validation import _batch_definition

    _batch_definition()
    gx_s = time.perf_counter() - began

    from analytics_platform.data_quality import raw, result_contracts, written
    from analytics_platform.data_quality.config import load_checks_config, load_metric_limits
    from analytics_platform.data_quality.raw_profile import range_profile
    from analytics_platform.settings import PlatformSettings

    settings = PlatformSettings()
    config = load_checks_config(settings.checks_config)
    limits = load_metric_limits(settings.metrics_catalog)
    end = HOUR + timedelta(hours=1)
    parts: dict[str, list[float]] = {}

    def timed(name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        parts.setdefault(name, []).append(time.perf_counter() - start)
        return out

    outcomes: dict[str, bool] = {}
    agg_where = "bucket_start < %s AND bucket_end > %s"
    with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
        for _ in range(repeat):
            rows = timed("raw: read the hour", written.read_sensor_readings, conn, HOUR, end)
            previous = timed("raw: previous hour's series", written.read_previous_series, conn, HOUR)
            found = timed(
                "raw: GX suites", raw.sensor_outcomes, rows, previous, limits, config, start=HOUR, end=end, as_of=end
            )
            outcomes.update({f"raw_sensor_readings.{o.name}": o.passed for o in found})
            copied, _ = timed(
                "before: read the buckets by COPY",
                written.read_written,
                conn,
                result_contracts.AGG,
                agg_where,
                (end, HOUR),
            )
            aggs, columns = timed(
                "aggregates: read the buckets",
                written.read_written_grouped,
                conn,
                result_contracts.AGG,
                result_contracts.SERIES,
                agg_where,
                (end, HOUR),
            )
            assert aggs.equals(copied.sort(result_contracts.AGG.key), null_equal=True)  # the same frame
            found = timed(
                "aggregates: GX suites",
                result_contracts.aggregate_outcomes,
                aggs,
                columns,
                limits,
                config.result_ranges,
                start=HOUR,
                end=end,
            )
            outcomes.update({f"sensor_window_aggregates.{o.name}": o.passed for o in found})
            timed("live: range profile of a 20k batch", range_profile, rows.head(20_000), limits, "value", raw.SERIES)
    return {
        "gx_import_and_context_s": round(gx_s, 3),
        "raw_rows": rows.height,
        "aggregate_rows": aggs.height,
        "parts": {k: {"best": round(min(v), 3), "median": round(statistics.median(v), 3)} for k, v in parts.items()},
        "outcomes": outcomes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--per-hour", type=int, default=360)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.repeat)))
        return 0

    server = None
    admin = os.environ.get("TEST_DATABASE_URL")
    run_dir = ROOT / ".run" / "bench"
    if not admin:
        shutil.rmtree(run_dir / "pg-checks", ignore_errors=True)
        server = EmbeddedPostgres(
            run_dir / "pg-checks" / "data", free_port(), "bench", run_dir / "pg-checks" / "pg.log"
        )
        server.init()
        server.start()
        admin = server.admin_url
    database = f"bench_checks_{int(time.time())}"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
        url = admin.rsplit("/", 1)[0] + "/" + database
        apply_migrations(url)
        frames = [readings(HOUR - timedelta(hours=1), args.machines, args.series, args.per_hour)]
        frames.append(readings(HOUR, args.machines, args.series, args.per_hour))
        with psycopg.connect(url, autocommit=True) as conn, conn.transaction(), conn.cursor() as cur:
            for frame in frames:
                copy_rows(cur, "raw_sensor_readings", frame, RAW_COLUMNS)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE analytics.raw_sensor_readings")
        from analytics_platform.results.aggregates import recompute_aggregates

        with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
            started = time.perf_counter()  # the baseline: what the aggregates asset itself costs for the hour
            run = recompute_aggregates(conn, [60, 300, 3600], HOUR, HOUR + timedelta(hours=1))
            baseline_s = time.perf_counter() - started
        print(f"{frames[1].height:,} readings in the hour -> {run.rows:,} aggregate rows", flush=True)

        child = subprocess.run(
            [sys.executable, __file__, "--child", url, "--repeat", str(args.repeat)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"\nmachine: {machine_info()}")
        print(f"gx import + ephemeral context (once per process): {result['gx_import_and_context_s']:.2f} s")
        for name, figures in result["parts"].items():
            print(f"{name:<40} best {figures['best']:>7.3f} s   median {figures['median']:>7.3f} s")
        raw_total = sum(v["median"] for k, v in result["parts"].items() if k.startswith("raw:"))
        agg_total = sum(v["median"] for k, v in result["parts"].items() if k.startswith("aggregates:"))
        print(f"{'raw_sensor_readings checks (median)':<40} {raw_total:>12.3f} s")
        print(f"{'sensor_window_aggregates checks (median)':<40} {agg_total:>12.3f} s")
        print(f"{'baseline: aggregates recompute (same run)':<40} {baseline_s:>12.3f} s")
        print(f"checks add {agg_total / baseline_s:.0%} to the aggregates asset's hour")
        print(f"outcomes: {result['outcomes']}")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        if server:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
