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

Silence is an outage too (docs/architecture.md, "Silence is an outage"): a machine that sent nothing at all (no
status, score or run state) for more than `offline_after` is offline from its last message until
its next one, as the `device_offline` alert reports it ("offline since" its last message, "no data
received"), when it began with a heartbeat (the status repeated, a score, a run state): an agent
that reports only status changes is silent after each by design, and its status holds. A silence
is known once it has lasted that long by `now`, or once the next message
shows how long it lasted; until then the status holds, as before. Such a silence is its own
offline period (details `no_data`), beside the ones the machine reported itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
SILENT = "no_data"  # the timeline's state while a machine is silent for more than `offline_after`
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
# each machine's last message of any kind before the range (`last_seen`, beside PRIOR_SCHEMA's
# columns) and first one at or after its end (`next_seen`): the ends of the silences that cross them
LAST_SEEN = "last_seen"
NEXT_SEEN_SCHEMA: dict[str, pl.DataType] = {**{c: pl.String() for c in MACHINE_KEY}, "next_seen": TIME}


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


def _silences(
    timeline: pl.DataFrame,
    health: pl.DataFrame,
    prior: pl.DataFrame,
    next_seen: pl.DataFrame,
    *,
    start: datetime,
    end: datetime,
    offline_after: timedelta,
    now: datetime,
) -> pl.DataFrame:
    """The silences of more than `offline_after` that overlap [start, end): per machine, its last
    message before each (`time`), the next message (`end_time`, null while none has come) and the
    status that held (a silence before the first status, or of a machine already offline, is none)."""
    messages = (
        pl.concat(
            [
                health.select(*MACHINE_KEY, "time"),
                prior.filter(pl.col(LAST_SEEN).is_not_null()).select(*MACHINE_KEY, time=LAST_SEEN),
                next_seen.select(*MACHINE_KEY, time="next_seen"),
            ]
        )
        .unique()
        .sort(*MACHINE_KEY, "time")
        .with_columns(end_time=pl.col("time").shift(-1).over(MACHINE_KEY))
    )
    known_until = pl.coalesce("end_time", pl.lit(now, TIME))
    # A machine that reports only when its status changes is silent between changes by design: a silence
    # that begins with a status change (the first status, a new one, or the prior run's start) is not
    # judged, the status holds until the next report. One that begins with anything else (the status
    # repeated, a score, a run state) is a heartbeat's silence, and judged.
    changed_at = pl.concat(
        [
            timeline.filter(
                ~pl.col("prior") & (pl.col("previous").is_null() | (pl.col("status") != pl.col("previous")))
            ).select(*MACHINE_KEY, "time"),
            timeline.filter(pl.col("prior") & pl.col("since").is_not_null()).select(*MACHINE_KEY, time="since"),
        ]
    ).unique()
    gaps = messages.filter(
        (known_until - pl.col("time") > offline_after)
        & (pl.col("time") < end)
        & (pl.col("end_time").is_null() | (pl.col("end_time") > start))
    ).join(changed_at, on=[*MACHINE_KEY, "time"], how="anti")
    # the status each silence began in: the last row at or before its start (the prior one, carried
    # at `start`, stands for every time before the range)
    statuses = (
        timeline.with_columns(time=pl.when("prior").then(pl.lit(_EPOCH, TIME)).otherwise("time"))
        .unique([*MACHINE_KEY, "time"], keep="last", maintain_order=True)
        .select(*MACHINE_KEY, "time", "status", "level")
        .sort("time")
    )
    # both sides are sorted by time (within each machine too), which Polars cannot check with `by`
    held = gaps.sort("time").join_asof(
        statuses, on="time", by=list(MACHINE_KEY), strategy="backward", check_sortedness=False
    )
    return held.filter(pl.col("status").is_not_null() & (pl.col("status") != OFFLINE))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _with_silences(timeline: pl.DataFrame, silences: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """The timeline with each silence as a SILENT state from its start (or `start`) to the next
    message, where the status that held before it resumes (that message's own status, if it has
    one, follows at the same instant)."""
    order = [*MACHINE_KEY, "time", "order", "status"]
    real = timeline.select(*MACHINE_KEY, "time", "status", "level", order=pl.when("prior").then(0).otherwise(2))
    silent = silences.select(
        *MACHINE_KEY,
        time=pl.max_horizontal("time", pl.lit(start, TIME)),
        status=pl.lit(SILENT),
        level="level",
        order=pl.lit(3),
    )
    resumed = silences.filter(pl.col("end_time") < end).select(
        *MACHINE_KEY, time="end_time", status="status", level="level", order=pl.lit(1)
    )
    frames = [f.cast({"order": pl.Int32}) for f in (real, silent, resumed)]
    return pl.concat(frames).sort(order)


def _silent_periods(silences: pl.DataFrame) -> pl.DataFrame:
    """Each silence as an offline period, from the machine's last message to its next one (open
    while none has come): what the `device_offline` alert reports as the outage."""
    return silences.select(
        "time",
        *MACHINE_KEY,
        event_type=pl.lit(OFFLINE_PERIOD),
        event_key=pl.lit(""),
        domain=pl.lit(DOMAIN),
        level=pl.lit("critical"),  # nobody reported a level; the alert calls an offline machine critical
        value=pl.lit(None, pl.Float64),
        passed=pl.lit(None, pl.Boolean),
        end_time="end_time",
        duration_s=(pl.col("end_time") - pl.col("time")).dt.total_microseconds() / 1e6,
        details=pl.struct(open=pl.col("end_time").is_null(), no_data=pl.lit(True)).struct.json_encode(),
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
        offline_s=pl.col("seconds").filter(pl.col("status").is_in([OFFLINE, SILENT])).sum(),
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
    next_seen: pl.DataFrame | None = None,
    offline_after: timedelta | None = None,
    now: datetime | None = None,
) -> DeviceHealthResult:
    """Events and rollups of the hour(s) [start, end) from the health rows in that range.

    `prior` (PRIOR_SCHEMA) is each machine's status just before `start`, with its last message of
    any kind (`last_seen`) for silences; `next_up` (NEXT_UP_SCHEMA) the first non-offline status at
    or after `end`; `until` <= end the horizon. With `offline_after`, a silence longer than it (known
    from `next_seen`, NEXT_SEEN_SCHEMA, or by `now`) is offline; without it, silence is not judged.
    """
    health = health.select(HEALTH_SCHEMA.keys()).cast(HEALTH_SCHEMA)
    if LAST_SEEN not in prior.columns:
        prior = prior.with_columns(pl.lit(None, TIME).alias(LAST_SEEN))
    until = min(until, end)
    timeline = _timeline(health, prior.select(*PRIOR_SCHEMA).cast(PRIOR_SCHEMA), start)
    changes = _status_changes(timeline)
    periods = _offline_periods(timeline, next_up.cast(NEXT_UP_SCHEMA))
    events = [as_events(changes), as_events(periods)]
    if offline_after is not None:
        seen = pl.DataFrame(schema=NEXT_SEEN_SCHEMA) if next_seen is None else next_seen.cast(NEXT_SEEN_SCHEMA)
        silences = _silences(
            timeline,
            health,
            prior.select(*MACHINE_KEY, LAST_SEEN).cast({LAST_SEEN: TIME}),
            seen,
            start=start,
            end=end,
            offline_after=offline_after,
            now=datetime.now(UTC) if now is None else now,
        )
        events.append(as_events(_silent_periods(silences)))
        timeline = _with_silences(timeline, silences, start, end)
    events = pl.concat(events)
    health_rows = [_health_rollup(health, timeline, w, until) for w in windows]
    counted = rollup_events(events, windows, start, end)
    rollups = pl.concat([as_rollups(counted), *map(as_rollups, health_rows)])
    return DeviceHealthResult(
        events=events.sort("event_type", *MACHINE_KEY, "time"),
        rollups=rollups.sort("event_type", *MACHINE_KEY, "window_s", "bucket_start"),
    )
