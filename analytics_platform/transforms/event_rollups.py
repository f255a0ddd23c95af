"""Discrete events and their rollups per window and per day: the shapes every event transform
produces, the generic count / pass / fail rollup, and the day rollup built from hourly rows.

Hourly rollup rows carry their additive parts (counts, seconds per state, health-score sums) in
`details`, so a day is rolled up from its 24 hourly rows rather than by re-reading raw data: a day
is then exactly the sum of its hours, and the daily asset depends on the hourly ones in lineage.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl

from analytics_platform.transforms.window_aggregates import MACHINE_KEY, TIME, bucket_expr

DEVICE_HEALTH = "device_health"  # the rollup that carries uptime and health-score statistics
HOUR_S = 3600
DAY_S = 86400

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "time": TIME,
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "machine_id": pl.String(),
    "event_type": pl.String(),
    "event_key": pl.String(),
    "domain": pl.String(),
    "level": pl.String(),
    "value": pl.Float64(),
    "passed": pl.Boolean(),
    "end_time": TIME,
    "duration_s": pl.Float64(),
    "details": pl.String(),  # JSON
    "subject": pl.String(),  # what the event's rollup is split by ('' = the machine as a whole)
}
EVENT_COLUMNS = tuple(c for c in EVENT_SCHEMA if c != "subject")  # the stored columns

ROLLUP_SCHEMA: dict[str, pl.DataType] = {
    "bucket_start": TIME,
    "bucket_end": TIME,
    "window_s": pl.Int32(),
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "machine_id": pl.String(),
    "event_type": pl.String(),
    "subject": pl.String(),
    "count_n": pl.Int64(),
    "pass_n": pl.Int64(),
    "fail_n": pl.Int64(),
    "fail_rate": pl.Float64(),
    "pass_rate": pl.Float64(),
    "uptime_pct": pl.Float64(),
    "details": pl.String(),  # JSON
}
ROLLUP_COLUMNS = tuple(ROLLUP_SCHEMA)
# what a device_health rollup's details hold: seconds per state and health-score statistics
DEVICE_DETAILS = (
    "up_s",
    "down_s",
    "maintenance_s",
    "offline_s",
    "health_n",
    "health_sum",
    "health_sumsq",
    "health_avg",
    "health_min",
    "health_max",
    "health_stddev",
)
ROLLUP_KEY = (*MACHINE_KEY, "event_type", "subject")


def rollup_windows(windows: Sequence[int]) -> list[int]:
    """Event rollup windows: the configured windows that tile an hour, plus the hour itself.

    Rollups are computed per hourly partition, so a window must not straddle two hours; the hour
    is always there because the day rollup is built from it.
    """
    return sorted({w for w in windows if 0 < w <= HOUR_S and HOUR_S % w == 0} | {HOUR_S})


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENT_SCHEMA)


def empty_rollups() -> pl.DataFrame:
    return pl.DataFrame(schema=ROLLUP_SCHEMA)


def as_events(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with exactly the event columns, in order and typed (so frames concatenate)."""
    return frame.select(EVENT_SCHEMA.keys()).cast(EVENT_SCHEMA)


def as_rollups(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with exactly the rollup columns, in order and typed."""
    return frame.select(ROLLUP_COLUMNS).cast(ROLLUP_SCHEMA)


def ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """numerator / denominator, NULL (not NaN, not 0) when there is nothing to divide by."""
    return pl.when(denominator > 0).then(numerator.cast(pl.Float64) / denominator).otherwise(None)


def with_buckets(frame: pl.DataFrame, window_s: int) -> pl.DataFrame:
    """`frame` with the epoch-aligned bucket of its `time` for a window of `window_s` seconds."""
    return frame.with_columns(bucket_start=bucket_expr(window_s)).with_columns(
        bucket_end=pl.col("bucket_start") + pl.duration(seconds=window_s), window_s=pl.lit(window_s, pl.Int32)
    )


def rollup_events(events: pl.DataFrame, windows: Sequence[int], start: datetime, end: datetime) -> pl.DataFrame:
    """Count, pass and fail per machine, event type and subject for each window, over the events
    whose time is in [start, end). Rates are NULL when no event had a verdict."""
    inside = events.filter((pl.col("time") >= start) & (pl.col("time") < end))
    frames = [empty_rollups()]
    for window_s in windows:
        grouped = (
            with_buckets(inside, window_s)
            .group_by(*ROLLUP_KEY, "bucket_start", "bucket_end", "window_s")
            .agg(
                count_n=pl.len().cast(pl.Int64),
                pass_n=(pl.col("passed") == True).sum().cast(pl.Int64),  # noqa: E712 (NULL is no verdict)
                fail_n=(pl.col("passed") == False).sum().cast(pl.Int64),  # noqa: E712
            )
            .with_columns(
                fail_rate=ratio(pl.col("fail_n"), pl.col("pass_n") + pl.col("fail_n")),
                pass_rate=ratio(pl.col("pass_n"), pl.col("pass_n") + pl.col("fail_n")),
                uptime_pct=pl.lit(None, pl.Float64),
                details=pl.struct(
                    no_verdict_n=pl.col("count_n") - pl.col("pass_n") - pl.col("fail_n")
                ).struct.json_encode(),
            )
        )
        frames.append(as_rollups(grouped))
    return pl.concat(frames).sort(*ROLLUP_KEY, "window_s", "bucket_start")


# Additive parts a day rollup sums from its hours (absent keys count as 0 / are ignored).
DETAIL_PARTS = pl.Struct(
    {
        "no_verdict_n": pl.Int64(),
        "up_s": pl.Float64(),
        "down_s": pl.Float64(),
        "maintenance_s": pl.Float64(),
        "offline_s": pl.Float64(),
        "health_n": pl.Int64(),
        "health_sum": pl.Float64(),
        "health_sumsq": pl.Float64(),
        "health_min": pl.Float64(),
        "health_max": pl.Float64(),
    }
)


def daily_rollup(hourly: pl.DataFrame) -> pl.DataFrame:
    """Day rows (window 86400) from the hourly (3600 s) rollup rows of the same days."""
    if hourly.is_empty():
        return empty_rollups()
    parts = (
        hourly.filter(pl.col("window_s") == HOUR_S)
        .with_columns(
            bucket_start=pl.col("bucket_start").dt.truncate("1d"),
            parts=pl.col("details").str.json_decode(DETAIL_PARTS),
        )
        .unnest("parts")
    )
    day = parts.group_by(*ROLLUP_KEY, "bucket_start").agg(
        pl.col("count_n").sum(),
        # NULL stays NULL (device rows have no verdicts), as SQL's sum would keep it
        *(pl.when(pl.col(c).is_not_null().any()).then(pl.col(c).sum()).alias(c) for c in ("pass_n", "fail_n")),
        pl.col("no_verdict_n", "up_s", "down_s", "maintenance_s", "offline_s").sum(),
        pl.col("health_n", "health_sum", "health_sumsq").sum(),
        pl.col("health_min").min(),
        pl.col("health_max").max(),
    )
    device = pl.col("event_type") == DEVICE_HEALTH
    n = pl.col("health_n")
    variance = (pl.col("health_sumsq") - pl.col("health_sum") ** 2 / n) / (n - 1)
    day = day.with_columns(
        bucket_end=pl.col("bucket_start") + pl.duration(days=1),
        window_s=pl.lit(DAY_S, pl.Int32),
        fail_rate=ratio(pl.col("fail_n"), pl.col("pass_n") + pl.col("fail_n")),
        pass_rate=ratio(pl.col("pass_n"), pl.col("pass_n") + pl.col("fail_n")),
        uptime_pct=pl.when(device).then(ratio(pl.col("up_s") * 100, pl.col("up_s") + pl.col("down_s"))),
        health_avg=ratio(pl.col("health_sum"), n),
        # clip: the sum-of-squares form can go a hair below 0 by rounding for a constant score
        health_stddev=pl.when(n > 1).then(variance.clip(lower_bound=0).sqrt()),
    )
    details = (
        pl.when(device)
        .then(pl.struct(*DEVICE_DETAILS).struct.json_encode())
        .otherwise(pl.struct("no_verdict_n").struct.json_encode())
    )
    return as_rollups(day.with_columns(details=details)).sort(*ROLLUP_KEY, "bucket_start")
