"""Trend benchmark: what the hourly series_trends asset costs for a plant, without a database.

Prints, from one run:
  * series_trends (1 end)    transforms/trends via results.trends.compute_trends: every series judged
                             over each window (6 h and 24 h) ending at one hour, as the hourly run does
  * series_trends (24 ends)  the same for a day's 24 window ends (a backfill of one day in one run)
  * scipy baseline (1 end)   the same judgements with scipy.stats.theilslopes + kendalltau per series
                             and window, the reference the unit tests check against (same run)

Usage: python bench/trends.py [--machines 100] [--series 10] [--hours 48] [--repeat 3]
Nothing here asserts a time; it prints figures for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.results.trends import POINT_SCHEMA, TrendOptions, compute_trends  # noqa: E402

START = datetime(2026, 3, 1, tzinfo=UTC)


def points(machines: int, series: int, hours: int) -> pl.DataFrame:
    rng = random.Random(20260301)
    at = [START + timedelta(hours=h) for h in range(hours)]
    rows = [
        ("t1", "f1", f"m{m}", "metric", f"s{s}", "temp", None, at[h], 20 + 0.1 * h + rng.gauss(0, 1))
        for m in range(machines)
        for s in range(series)
        for h in range(hours)
    ]
    return pl.DataFrame(rows, schema=POINT_SCHEMA, orient="row")


def scipy_baseline(frame: pl.DataFrame, end: datetime, windows: tuple[int, ...]) -> int:
    judged = 0
    for hours in windows:
        start = end - timedelta(hours=hours)
        inside = frame.filter((pl.col("time") >= start) & (pl.col("time") < end)).sort("time")
        for _, group in inside.group_by(["machine_id", "sensor_id"]):
            x = [(t - start).total_seconds() / 3600 for t in group["time"]]
            y = group["value"].to_list()
            stats.theilslopes(y, x)
            stats.kendalltau(x, y)
            judged += 1
    return judged


def best(repeat: int, fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--hours", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    frame = points(args.machines, args.series, args.hours)
    options = TrendOptions((6, 24))
    end = START + timedelta(hours=args.hours)
    day = [START + timedelta(hours=args.hours - 23 + i) for i in range(24)]
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, {len(frame):,} points")
    one, rows = best(args.repeat, lambda: compute_trends(frame, [end], options))
    print(f"series_trends (1 end):   {one:.3f} s  {rows.height:,} judgements")
    many, rows = best(args.repeat, lambda: compute_trends(frame, day, options))
    print(f"series_trends (24 ends): {many:.3f} s  {rows.height:,} judgements")
    base, judged = best(args.repeat, lambda: scipy_baseline(frame, end, options.windows_hours))
    print(f"scipy baseline (1 end):  {base:.3f} s  {judged:,} judgements")


if __name__ == "__main__":
    main()
