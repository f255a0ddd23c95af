"""Device health over time: status transitions, offline periods, uptime per window, health-score
statistics, from `device.health` messages.

A machine's status holds from one status message to the next. An hour is therefore computed
with what came before it (`prior`: the last status before the hour and since when it has held)
and, for a machine still offline at the hour's end, when it next came back (`next_up`), so an
offline period that spans hours has the same start, end and duration whichever hour computes it.

Uptime counts `online` and `degraded` as up; `maintenance` is planned and left out of the
denominator (ISO 22400 availability excludes planned downtime); every other status (offline,
fault, starting, stopping) is down. Time before a machine's first known status is not observed
and counts for neither. Time after `until` (<= the hour's end) is not observed either; the
platform passes the hour's end, so a running hour shows the current status carried to its end
and needs no extra run after the hour to match what a later backfill computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from analytics_platform.contracts.device import DeviceHealthContract
from analytics_platform.transforms.event_rollups import (
    DEVICE_DETAILS,
    DEVICE_HEALTH,
    MACHINE_KEY,
    as_events,
    as_rollups,
    ratio,
    rollup_events,
    with_buckets,
)
from analytics_platform.transforms.window_aggregates import TIME, bucket_expr

UP = ("online", "degraded")
PLANNED = ("maintenance",)
OFFLINE = "offline"
DOMAIN = DeviceHealthContract.domain
STATUS_CHANGE = "status_change"
OFFLINE_PERIOD = "offline_period"

HEALTH_SCHEMA: dict[str, pl.DataType] = {
    "time": TIME,
    **{c: pl.String() for c in MACHINE_KEY},
    "status": pl.String(),
    "level": pl.String(),
    "health_score": pl.Float64(),
}
PRIOR_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in MACHINE_KEY},
    "status": pl.String(),
    "level": pl.String(),
    "since": TIME,  # when the current run of `status` began
}
NEXT_UP_SCHEMA: dict[str, pl.DataType] = {**{c: pl.String() for c in MACHINE_KEY}, "next_up": TIME}


@dataclass
class DeviceHealthResult:
    events: pl.DataFrame  # EVENT_SCHEMA: status_change (in [start, end)) and offline_period rows
    rollups: pl.DataFrame  # ROLLUP_SCHEMA: device_health, status_change, offline_period per window


def _timeline(health: pl.DataFrame, prior: pl.DataFrame, start: datetime) -> pl.DataFrame:
    """Status rows in time order per machine, the prior status first (at `start`)."""
    statuses = health.filter(pl.col("status").is_not_null()).select(
        *MACHINE_KEY, "time", "status", "level", since=pl.lit(None, TIME), prior=pl.lit(False)
    )
    carried = prior.select(
        *MACHINE_KEY, pl.lit(start, TIME).alias("time"), "status", "level", "since", prior=pl.lit(True)
    )
    return (
        pl.concat([carried, statuses])
        .sort(*MACHINE_KEY, "time", pl.col("prior").not_(), "status")
        .with_columns(previous=pl.col("status").shift(1).over(MACHINE_KEY))
    )


def _status_changes(timeline: pl.DataFrame) -> pl.DataFrame:
    changes = timeline.filter(
        ~pl.col("prior") & pl.col("previous").is_not_null() & (pl.col("status") != pl.col("previous"))
    )
    return changes.select(
        "time",
        *MACHINE_KEY,
        event_type=pl.lit(STATUS_CHANGE),
        event_key=pl.col("status"),
        domain=pl.lit(DOMAIN),
        level="level",
        value=pl.lit(None, pl.Float64),
        passed=pl.lit(None, pl.Boolean),
        end_time=pl.lit(None, TIME),
        duration_s=pl.lit(None, pl.Float64),
        details=pl.struct(**{"from": "previous", "to": "status"}).struct.json_encode(),
        subject=pl.lit(""),
    )


def _offline_periods(timeline: pl.DataFrame, next_up: pl.DataFrame) -> pl.DataFrame:
    """One row per run of `offline` in the timeline, closed by the next other status (or by
    `next_up`, past the hour), open (end NULL) while no other status has arrived."""
    runs = timeline.with_columns(
        run=(pl.col("status") != pl.col("previous")).fill_null(True).cum_sum().over(MACHINE_KEY),
        following=pl.col("time").shift(-1).over(MACHINE_KEY),
    )
    periods = (
        runs.filter(pl.col("status") == OFFLINE)
        .group_by(*MACHINE_KEY, "run")
        .agg(
            start=pl.when(pl.col("prior").first()).then(pl.col("since").first()).otherwise(pl.col("time").first()),
            level=pl.col("level").first(),
            closed_by=pl.col("following").last(),
        )
        .join(next_up, on=list(MACHINE_KEY), how="left")
        .with_columns(end_time=pl.coalesce("closed_by", "next_up"))
    )
    return periods.select(
        pl.col("start").alias("time"),
        *MACHINE_KEY,
        event_type=pl.lit(OFFLINE_PERIOD),
        event_key=pl.lit(""),
        domain=pl.lit(DOMAIN),
        level="level",
        value=pl.lit(None, pl.Float64),
        passed=pl.lit(None, pl.Boolean),
        end_time="end_time",
        duration_s=(pl.col("end_time") - pl.col("start")).dt.total_microseconds() / 1e6,
        details=pl.struct(open=pl.col("end_time").is_null()).struct.json_encode(),
        subject=pl.lit(""),
    )


def _state_seconds(timeline: pl.DataFrame, window_s: int, until: datetime) -> pl.DataFrame:
    """Seconds spent up / down / in maintenance / offline per machine and bucket."""
    segments = timeline.with_columns(
        seg_end=pl.col("time").shift(-1).over(MACHINE_KEY).fill_null(pl.lit(until, TIME)).clip(upper_bound=until)
    ).filter(pl.col("seg_end") > pl.col("time"))
    pieces = (
        segments.with_columns(
            bucket_start=pl.datetime_ranges(
                bucket_expr(window_s),  # the bucket the segment starts in
                pl.col("seg_end") - pl.duration(microseconds=1),
                interval=f"{window_s}s",
            )
        )
        .explode("bucket_start")
        .with_columns(bucket_end=pl.col("bucket_start") + pl.duration(seconds=window_s))
        .with_columns(
            seconds=(
                pl.min_horizontal("seg_end", "bucket_end") - pl.max_horizontal("time", "bucket_start")
            ).dt.total_microseconds()
            / 1e6
        )
    )
    return pieces.group_by(*MACHINE_KEY, "bucket_start").agg(
        up_s=pl.col("seconds").filter(pl.col("status").is_in(UP)).sum(),
        down_s=pl.col("seconds").filter(~pl.col("status").is_in([*UP, *PLANNED])).sum(),
        maintenance_s=pl.col("seconds").filter(pl.col("status").is_in(PLANNED)).sum(),
        offline_s=pl.col("seconds").filter(pl.col("status") == OFFLINE).sum(),
    )


def _health_rollup(health: pl.DataFrame, timeline: pl.DataFrame, window_s: int, until: datetime) -> pl.DataFrame:
    scores = (
        with_buckets(health, window_s)
        .group_by(*MACHINE_KEY, "bucket_start")
        .agg(
            count_n=pl.len().cast(pl.Int64),
            health_n=pl.col("health_score").count().cast(pl.Int64),
            health_sum=pl.col("health_score").sum(),
            health_sumsq=(pl.col("health_score") ** 2).sum(),
            health_avg=pl.col("health_score").mean(),
            health_min=pl.col("health_score").min(),
            health_max=pl.col("health_score").max(),
            health_stddev=pl.col("health_score").std(ddof=1),
        )
    )
    seconds = _state_seconds(timeline, window_s, until)
    joined = scores.join(seconds, on=[*MACHINE_KEY, "bucket_start"], how="full", coalesce=True).with_columns(
        pl.col("count_n", "health_n").fill_null(0),
        pl.col("health_sum", "health_sumsq", "up_s", "down_s", "maintenance_s", "offline_s").fill_null(0.0),
    )
    return joined.select(
        "bucket_start",
        *MACHINE_KEY,
        bucket_end=pl.col("bucket_start") + pl.duration(seconds=window_s),
        window_s=pl.lit(window_s, pl.Int32),
        event_type=pl.lit(DEVICE_HEALTH),
        subject=pl.lit(""),
        count_n="count_n",
        pass_n=pl.lit(None, pl.Int64),
        fail_n=pl.lit(None, pl.Int64),
        fail_rate=pl.lit(None, pl.Float64),
        pass_rate=pl.lit(None, pl.Float64),
        uptime_pct=ratio(pl.col("up_s") * 100, pl.col("up_s") + pl.col("down_s")),
        details=pl.struct(*DEVICE_DETAILS).struct.json_encode(),
    )


def device_health(
    health: pl.DataFrame,
    prior: pl.DataFrame,
    next_up: pl.DataFrame,
    *,
    start: datetime,
    end: datetime,
    until: datetime,
    windows: Sequence[int],
) -> DeviceHealthResult:
    """Events and rollups of the hour(s) [start, end) from the health rows in that range.

    `prior` (PRIOR_SCHEMA) is each machine's status just before `start`; `next_up`
    (NEXT_UP_SCHEMA) the first non-offline status at or after `end`; `until` <= end the horizon.
    """
    health = health.select(HEALTH_SCHEMA.keys()).cast(HEALTH_SCHEMA)
    until = min(until, end)
    timeline = _timeline(health, prior.cast(PRIOR_SCHEMA), start)
    changes = _status_changes(timeline)
    periods = _offline_periods(timeline, next_up.cast(NEXT_UP_SCHEMA))
    events = pl.concat([as_events(changes), as_events(periods)])
    health_rows = [_health_rollup(health, timeline, w, until) for w in windows]
    counted = rollup_events(events, windows, start, end)
    rollups = pl.concat([as_rollups(counted), *map(as_rollups, health_rows)])
    return DeviceHealthResult(
        events=events.sort("event_type", *MACHINE_KEY, "time"),
        rollups=rollups.sort("event_type", *MACHINE_KEY, "window_s", "bucket_start"),
    )
