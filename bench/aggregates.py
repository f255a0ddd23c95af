"""Window-aggregate benchmark: one day of readings, the three default windows.

Prints, from one run on one database:
  * polars (int bucket)      the transform: group by an epoch-floored integer bucket
  * ... + canonical_order     the same, after the sort by value every caller does first (the asset
                             and /v1/agg's provisional buckets: order-independent float sums)
  * polars (group_by_dynamic) the same aggregates with Polars' group_by_dynamic (the alternative)
  * postgres date_bin        PostgreSQL's own GROUP BY date_bin(...) over the same rows, same aggregates
  * read: csv / arrays       the asset's read of the day: the previous way (COPY ... CSV an hour at
                             a time into Polars) against the shipped one (a row per series and hour
                             with binary arrays, `read_readings`) on one and on two connections
  * re-materialise day       the Dagster asset over the day's 24 hourly partitions in one run
                             (read -> transform -> replace, one transaction, then the asset checks
                             judging the stored buckets), in a child process whose peak RSS and
                             read / transform / write / checks seconds are reported

Usage: python bench/aggregates.py [--readings 10000000] [--series 100] [--repeat 3]
Starts its own embedded PostgreSQL under .run/bench/ (or uses TEST_DATABASE_URL). Nothing here
asserts a time; it prints figures for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
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
from analytics_platform.results.aggregates import READ_SCHEMA, chunks, read_readings  # noqa: E402
from analytics_platform.results.frames import read_frame  # noqa: E402
from analytics_platform.transforms.window_aggregates import (  # noqa: E402
    SERIES_KEY,
    canonical_order,
    window_aggregates,
)
from bench.ingest import machine_info  # noqa: E402

DAY = datetime(2025, 8, 20, tzinfo=UTC)
WINDOWS = [60, 300, 3600]
RAW_COLUMNS = (
    "time",
    *SERIES_KEY,
    "value",
    "schema_version",
    "dedup_key",
    "topic",
    "kafka_partition",
    "kafka_offset",
)


def readings(count: int, series: int) -> pl.DataFrame:
    """`count` readings spread evenly over DAY across `series` series (machines x 2 metrics)."""
    per_series = count // series
    step_us = int(86_400_000_000 / per_series)
    index = pl.int_range(0, per_series * series, eager=True).alias("i")
    frame = pl.DataFrame(index).with_columns(
        s=pl.col("i") % series,
        n=pl.col("i") // series,
    )
    return frame.select(
        time=(pl.lit(DAY) + pl.duration(microseconds=pl.col("n") * step_us)).cast(pl.Datetime("us", "UTC")),
        tenant_id=pl.lit("t1"),
        factory_id=pl.format("f{}", pl.col("s") // 50 + 1),
        machine_id=pl.format("mc-{}", (pl.col("s") // 2) % 25),
        sensor_id=pl.when(pl.col("s") % 2 == 0).then(pl.lit("s-temp")).otherwise(pl.lit("s-press")),
        metric=pl.when(pl.col("s") % 2 == 0).then(pl.lit("temp")).otherwise(pl.lit("pressure")),
        value=(pl.col("i") * 7919 % 10007).cast(pl.Float64) / 100.0,
        schema_version=pl.lit(1, pl.Int16),
        dedup_key=pl.format("bench|{}", pl.col("i")),
        topic=pl.lit("bench"),
        kafka_partition=pl.lit(0, pl.Int32),
        kafka_offset=pl.col("i"),
    )


def group_by_dynamic(frame: pl.LazyFrame, windows: list[int]) -> pl.LazyFrame:
    """The alternative: Polars' group_by_dynamic per window (same aggregates)."""
    ordered = frame.sort(*SERIES_KEY, "time")
    parts = []
    for w in windows:
        parts.append(
            ordered.group_by_dynamic("time", every=f"{w}s", group_by=list(SERIES_KEY), start_by="window")
            .agg(
                count_n=pl.len(),
                sum_v=pl.col("value").sum(),
                avg_v=pl.col("value").mean(),
                min_v=pl.col("value").min(),
                max_v=pl.col("value").max(),
                stddev_v=pl.col("value").std(),
                first_v=pl.col("value").first(),
                last_v=pl.col("value").last(),
                p50_v=pl.col("value").quantile(0.5, "linear"),
                p95_v=pl.col("value").quantile(0.95, "linear"),
            )
            .with_columns(window_s=pl.lit(w))
        )
    return pl.concat(parts)


POSTGRES_QUERY = """
SELECT date_bin(%(w)s * interval '1 second', time, timestamptz '1970-01-01 00:00:00+00') AS bucket_start,
       tenant_id, factory_id, machine_id, sensor_id, metric,
       count(*), sum(value), avg(value), min(value), max(value), stddev_samp(value),
       (array_agg(value ORDER BY time, value))[1],
       (array_agg(value ORDER BY time DESC, value DESC))[1],
       percentile_cont(0.5) WITHIN GROUP (ORDER BY value),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY value)
FROM analytics.raw_sensor_readings
WHERE time >= %(start)s AND time < %(end)s
GROUP BY 1, 2, 3, 4, 5, 6
"""


CSV_READ_QUERY = """
SELECT time, tenant_id, factory_id, machine_id, sensor_id, metric, value
FROM analytics.raw_sensor_readings WHERE time >= %s AND time < %s
"""


def csv_read(conn: psycopg.Connection, start: datetime, end: datetime) -> pl.DataFrame:
    """The asset's read before issue 23: COPY ... CSV an hour at a time into Polars (the baseline)."""
    return pl.concat([read_frame(conn, CSV_READ_QUERY, hour, READ_SCHEMA) for hour in chunks(start, end, 1)])


def timed(fn) -> tuple[float, object]:
    began = time.perf_counter()
    result = fn()
    return time.perf_counter() - began, result


def rematerialise_child(url: str) -> None:
    """Run in a child process: the asset over the whole day in one run; prints JSON."""
    import dagster as dg

    from analytics_platform.defs import build_definitions
    from analytics_platform.settings import PlatformSettings

    settings = PlatformSettings(database_url=url, domains_enabled=["sensor"], windows=WINDOWS)
    defs = build_definitions(settings, secrets_from_env=False)
    asset = defs.resolve_assets_def("sensor_window_aggregates")
    began = time.perf_counter()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset],
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": DAY.strftime("%Y-%m-%d-00:00"),
                "dagster/asset_partition_range_end": DAY.strftime("%Y-%m-%d-23:00"),
            },
        )
        elapsed = time.perf_counter() - began
        metadata = {
            k: v.value
            for k, v in result.asset_materializations_for_node("sensor_window_aggregates")[0].metadata.items()
        }
        # the asset logs each chunk's "(read 1.23s, transform 1.23s, write 1.23s)", then "checks 1.23s"
        phases = {"read": 0.0, "transform": 0.0, "write": 0.0, "checks": 0.0}
        for entry in instance.all_logs(result.run_id):
            for phase, seconds in re.findall(r"(read|transform|write|checks) ([0-9.]+)s", entry.user_message or ""):
                phases[phase] += float(seconds)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child of this (large)
    # benchmark process would report its parent's peak
    status = Path("/proc/self/status").read_text().splitlines()
    hwm_kib = next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), None)
    peak_mib = (hwm_kib or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "peak_rss_mib": peak_mib,
                "rows": metadata["rows"],
                "readings": metadata["readings"],
                **phases,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=10_000_000)
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / ".run" / "bench" / "aggregates.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rematerialise_child(args.child)
        return 0

    run_dir = ROOT / ".run" / "bench"
    shutil.rmtree(run_dir / "pg-agg", ignore_errors=True)
    server = None
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        server = EmbeddedPostgres(run_dir / "pg-agg" / "data", free_port(), "bench", run_dir / "pg-agg" / "pg.log")
        server.init()
        server.start()
        admin = server.admin_url
    try:
        database = f"bench_agg_{int(time.time())}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
            version = conn.execute("SHOW server_version").fetchone()[0]
        url = admin.rsplit("/", 1)[0] + "/" + database
        apply_migrations(url)

        print(f"generating {args.readings:,} readings over {DAY:%Y-%m-%d} in {args.series} series...", flush=True)
        frame = readings(args.readings, args.series)
        with psycopg.connect(url, autocommit=True) as conn, conn.transaction(), conn.cursor() as cur:
            load_s, _ = timed(lambda: copy_rows(cur, "raw_sensor_readings", frame, RAW_COLUMNS))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE analytics.raw_sensor_readings")
        print(f"loaded into raw_sensor_readings in {load_s:.1f}s ({frame.height / load_s:,.0f} rows/s)", flush=True)
        data = frame.select("time", *SERIES_KEY, "value")

        polars_s, ordered_s, dynamic_s, postgres_s = [], [], [], []
        reads: dict[str, list[float]] = {"csv": [], "arrays_1": [], "arrays_2": []}
        rows = {}
        day = (DAY, DAY + timedelta(days=1))
        for attempt in range(args.repeat):  # interleaved, so machine noise hits all alike
            seconds, out = timed(lambda: window_aggregates(data.lazy(), WINDOWS).collect())
            polars_s.append(seconds)
            rows["polars"] = out.height
            seconds, out = timed(lambda: window_aggregates(canonical_order(data).lazy(), WINDOWS).collect())
            ordered_s.append(seconds)
            seconds, out = timed(lambda: group_by_dynamic(data.lazy(), WINDOWS).collect())
            dynamic_s.append(seconds)
            rows["dynamic"] = out.height
            with psycopg.connect(url, autocommit=True) as conn:
                began = time.perf_counter()
                count = 0
                for w in WINDOWS:
                    cursor = conn.execute(POSTGRES_QUERY, {"w": w, "start": DAY, "end": DAY + timedelta(days=1)})
                    count += len(cursor.fetchall())
                postgres_s.append(time.perf_counter() - began)
                rows["postgres"] = count
            with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
                for name, read in (
                    ("csv", lambda: csv_read(conn, *day)),
                    ("arrays_1", lambda: read_readings(conn, *day, readers=1)),
                    ("arrays_2", lambda: read_readings(conn, *day, readers=2)),
                ):
                    seconds, out = timed(read)
                    reads[name].append(seconds)
                    rows[f"read_{name}"] = out.height
                    del out
            print(
                f"  round {attempt + 1}: polars {polars_s[-1]:.2f}s  +canonical_order {ordered_s[-1]:.2f}s  "
                f"group_by_dynamic {dynamic_s[-1]:.2f}s  "
                f"postgres {postgres_s[-1]:.2f}s  "
                f"read: csv {reads['csv'][-1]:.2f}s  arrays {reads['arrays_1'][-1]:.2f}s, "
                f"on two connections {reads['arrays_2'][-1]:.2f}s",
                flush=True,
            )
        child = subprocess.run([sys.executable, __file__, "--child", url], check=True, capture_output=True, text=True)
        remat = json.loads(child.stdout.strip().splitlines()[-1])

        best = {
            "polars": min(polars_s),
            "ordered": min(ordered_s),
            "dynamic": min(dynamic_s),
            "postgres": min(postgres_s),
            **{f"read_{name}": min(seconds) for name, seconds in reads.items()},
        }
        print(f"\n{args.readings:,} readings, windows {WINDOWS}, {rows['polars']:,} buckets (best of {args.repeat})")
        print(f"polars (int bucket)        {best['polars']:>8.2f} s")
        sort_cost = best["ordered"] - best["polars"]
        print(f"  + canonical_order        {best['ordered']:>8.2f} s   (the sort by value costs {sort_cost:.2f} s)")
        ratio = best["dynamic"] / best["polars"]
        print(f"polars (group_by_dynamic)  {best['dynamic']:>8.2f} s   ({ratio:.1f}x the int bucket)")
        print(
            f"postgres date_bin GROUP BY {best['postgres']:>8.2f} s   ({best['postgres'] / best['polars']:.1f}x polars)"
        )
        print(f"read the day: csv          {best['read_csv']:>8.2f} s   (COPY ... CSV an hour at a time, before)")
        print(f"  arrays, one connection   {best['read_arrays_1']:>8.2f} s")
        print(f"  arrays, two connections  {best['read_arrays_2']:>8.2f} s   (read_readings, shipped)")
        print(
            f"re-materialise the day     {remat['seconds']:>8.2f} s   (Dagster, 24 partitions in one run; "
            f"peak RSS {remat['peak_rss_mib']:,.0f} MiB; {remat['readings']:,} readings -> {remat['rows']:,} rows; "
            f"read {remat['read']:.2f} s, transform {remat['transform']:.2f} s, write {remat['write']:.2f} s, "
            f"checks {remat['checks']:.2f} s; the rest is Dagster's run)"
        )
        assert rows["polars"] == rows["postgres"] == rows["dynamic"], rows  # same buckets, or the race is unfair
        assert rows["read_csv"] == rows["read_arrays_1"] == rows["read_arrays_2"] == args.readings, rows
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "postgres": version,
            "readings": args.readings,
            "series": args.series,
            "buckets": rows["polars"],
            "polars_s": [round(s, 3) for s in polars_s],
            "polars_canonical_order_s": [round(s, 3) for s in ordered_s],
            "group_by_dynamic_s": [round(s, 3) for s in dynamic_s],
            "postgres_s": [round(s, 3) for s in postgres_s],
            **{f"read_{name}_s": [round(s, 3) for s in seconds] for name, seconds in reads.items()},
            "rematerialise_day_s": round(remat["seconds"], 2),
            "rematerialise_peak_rss_mib": round(remat["peak_rss_mib"]),
            **{f"rematerialise_{p}_s": round(remat[p], 2) for p in ("read", "transform", "write", "checks")},
            "load_rows_s": round(frame.height / load_s),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\nwritten to {args.json}")
    finally:
        if server:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
