"""Trend judgements in the database: read the hourly series, judge each rolling window, replace the
window ends' rows (analytics.analytics_trend), and read them back for the API.

The inputs are the results already computed hour by hour, so a trend never re-reads raw data:
`metric` series are the hourly means of analytics_agg (window 3600 s), one per sensor and metric;
`kpi` series are the hourly KPIs of analytics_kpi (period 'hour'), one per machine and KPI. Every
series is keyed by its tenant, factory and machine, so a tenant's points never enter another
tenant's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import psycopg

from analytics_platform.ingest.store import copy_rows
from analytics_platform.results.frames import lock_results, read_frame
from analytics_platform.transforms import trends as tr

SERIES_KEYS = ["tenant_id", "factory_id", "machine_id", "source", "sensor_id", "name", "unit"]
POINT_SCHEMA = {
    "tenant_id": pl.String,
    "factory_id": pl.String,
    "machine_id": pl.String,
    "source": pl.String,
    "sensor_id": pl.String,
    "name": pl.String,
    "unit": pl.String,
    "time": pl.Datetime("us", "UTC"),
    "value": pl.Float64,
}
POINTS_QUERY = """
SELECT tenant_id, factory_id, machine_id, 'metric', sensor_id, metric, NULL::text, bucket_start, avg_v
FROM analytics.analytics_agg
WHERE window_s = 3600 AND bucket_start >= %(start)s AND bucket_start < %(end)s AND avg_v IS NOT NULL
UNION ALL
SELECT tenant_id, factory_id, machine_id, 'kpi', '', kpi, unit, period_start, value
FROM analytics.analytics_kpi
WHERE period = 'hour' AND period_start >= %(start)s AND period_start < %(end)s AND value IS NOT NULL
"""
TREND_COLUMNS = [
    "window_end",
    "window_start",
    "window_hours",
    *SERIES_KEYS,
    "n",
    "slope_per_hour",
    "intercept",
    "mk_s",
    "mk_var_s",
    "mk_z",
    "p_value",
    "confidence",
    "direction",
    "first_time",
    "last_time",
]


@dataclass(frozen=True)
class TrendOptions:
    windows_hours: tuple[int, ...] = (6, 24)
    min_points: int = tr.DEFAULT_MIN_POINTS
    alpha: float = tr.DEFAULT_ALPHA


def read_points(conn: psycopg.Connection, start: datetime, end: datetime) -> pl.DataFrame:
    """Every hourly point (metric means and hourly KPIs) starting in [start, end)."""
    return read_frame(conn, POINTS_QUERY, {"start": start, "end": end}, POINT_SCHEMA)


def compute_trends(points: pl.DataFrame, window_ends: Sequence[datetime], options: TrendOptions) -> pl.DataFrame:
    """The trend of every series over each window [end − hours, end) of each end and window length
    (an hour's point belongs to the window its start is in)."""
    frames = []
    for end in window_ends:
        for hours in options.windows_hours:
            start = end - timedelta(hours=hours)
            inside = points.filter((pl.col("time") >= start) & (pl.col("time") < end))
            if inside.is_empty():
                continue
            judged = tr.series_trends(inside, SERIES_KEYS, start, alpha=options.alpha, min_points=options.min_points)
            frames.append(
                judged.with_columns(
                    window_end=pl.lit(end, pl.Datetime("us", "UTC")),
                    window_start=pl.lit(start, pl.Datetime("us", "UTC")),
                    window_hours=pl.lit(hours, pl.Int32),
                ).select(TREND_COLUMNS)
            )
    return pl.concat(frames) if frames else pl.DataFrame()


def replace_trends(
    conn: psycopg.Connection, trends: pl.DataFrame, window_ends: Sequence[datetime], options: TrendOptions
) -> int:
    """Replace the rows of these window ends and lengths with `trends`, in one transaction (a
    re-run leaves one copy); the rows deleted."""
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, "analytics_trend")
        cur.execute(
            "DELETE FROM analytics.analytics_trend WHERE window_end = ANY(%s) AND window_hours = ANY(%s)",
            (list(window_ends), list(options.windows_hours)),
        )
        deleted = cur.rowcount
        if not trends.is_empty():
            copy_rows(cur, "analytics_trend", trends, TREND_COLUMNS)
    return deleted


def recompute_trends(
    conn: psycopg.Connection, window_ends: Sequence[datetime], options: TrendOptions
) -> tuple[int, int]:
    """Judge and store the windows ending at `window_ends`; (rows written, rows replaced)."""
    if not window_ends:
        return 0, 0
    longest = timedelta(hours=max(options.windows_hours))
    points = read_points(conn, min(window_ends) - longest, max(window_ends))
    trends = compute_trends(points, window_ends, options)
    return trends.height, replace_trends(conn, trends, window_ends, options)
