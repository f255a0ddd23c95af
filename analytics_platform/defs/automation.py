"""When downstream assets run by themselves.

`AutomationCondition.eager()` only targets the latest time partition, so late data landing in an
older hour would never be re-processed. These conditions drop that restriction in favour of a
lookback window (AUTOMATION_LOOKBACK_HOURS): any hour in it whose raw partition changed is
recomputed, coalesced (one request per partition per evaluation, however many drain ticks
touched it), never while its inputs or itself are still running.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import dagster as dg

AC = dg.AutomationCondition
LANE_TAG = "analytics/lane"
# how often a partition whose latest run failed is asked for again (see retry_failed)
RETRY_FAILED_CRON = "*/5 * * * *"


def retry_failed() -> dg.AutomationCondition:
    """A partition whose latest run failed is asked for again at the next 5-minute mark, and every 5 minutes
    while it keeps failing. The request that ran it counted as handling its change, so without this a run
    failed by a passing fault (the database restarted under it) left the hour missing, or stale, until more
    data happened to land in it: for an ended hour, never. The cron tick is judged first, so the runs' states
    are read only once every 5 minutes; a fault that persists costs one run per 5 minutes, not a storm."""
    return AC.cron_tick_passed(RETRY_FAILED_CRON, "UTC") & AC.execution_failed()


def follow_hourly_inputs(
    lookback: timedelta, *, optional: Sequence[dg.AssetKey] = (), skip_current: bool = False
) -> dg.AutomationCondition:
    """Recompute an hour once its input partition exists and whenever it changes. `optional`
    inputs (spec limits: a table, not a materialised asset) never count as missing, but a change
    to them does count as an update. `skip_current`: not the latest partition (the current hour),
    which something else keeps (the drain service's finaliser, defs/aggregates/live.py)."""
    condition = (
        AC.in_latest_time_window(lookback_delta=lookback)
        & ((AC.newly_missing() | AC.any_deps_updated()).since_last_handled() | retry_failed())
        & ~AC.any_deps_missing().ignore(dg.AssetSelection.assets(*optional))
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    )
    if skip_current:
        return (condition & ~AC.in_latest_time_window()).with_label(
            f"hourly inputs changed (within {lookback}; failed runs retried; the current hour is the drain service's)"
        )
    return condition.with_label(f"hourly inputs changed (within {lookback}; failed runs retried)")


def complete_days(lookback: timedelta) -> dg.AutomationCondition:
    """Roll up a day once it has ended (its partition appears) and whenever one of its hours
    changes. Hours without any input (no lab result that hour) must not block the day, so
    missing upstream hours do not hold it back; running ones do."""
    return (
        AC.in_latest_time_window(lookback_delta=lookback)
        & ((AC.newly_missing() | AC.any_deps_updated()).since_last_handled() | retry_failed())
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label(f"day complete or its hours changed (within {lookback}; failed runs retried)")


def days_whose_hours_changed(lookback: timedelta, *, ignore: Sequence[dg.AssetKey] = ()) -> dg.AutomationCondition:
    """Run a day again when one of its hours is recomputed after the day was (late data), within the
    look-back. Its first run is a schedule's, once its last hour's closing readings have landed; a day
    never materialised is not asked for here, unless that run failed (retried as the hours are).
    `ignore`: inputs whose update must not re-run every day in the look-back (a baseline model
    refitted: a past day keeps the deviation it was reported with)."""
    return (
        AC.in_latest_time_window(lookback_delta=lookback)
        & (
            (~AC.missing() & AC.any_deps_updated().ignore(dg.AssetSelection.assets(*ignore)).since_last_handled())
            | retry_failed()
        )
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label(f"an hour of the day recomputed after it (within {lookback}; failed runs retried)")


def automation_sensors(
    fast: Sequence[dg.AssetKey], fast_interval_s: int, rest_interval_s: int
) -> list[dg.AutomationConditionSensorDefinition]:
    """Two evaluators: `fast` assets (the window aggregates, with a freshness goal) every
    `fast_interval_s`, their runs ahead in the queue; everything else every `rest_interval_s`, so
    event rollups coalesce several drain ticks into one run instead of competing for the two
    cores with the aggregates. Dagster's own default evaluator ticks every 30 s for everything.

    Their runs carry `analytics/lane` (aggregates | rollups): the production instance caps
    concurrent runs per lane with a tag limit (helm/analytics-platform, dagster.yaml)."""
    sensors = [
        dg.AutomationConditionSensorDefinition(
            "analytics_automation",
            target=dg.AssetSelection.all() - dg.AssetSelection.assets(*fast),
            minimum_interval_seconds=rest_interval_s,
            run_tags={LANE_TAG: "rollups"},
            default_status=dg.DefaultSensorStatus.RUNNING,
            description="Runs event and daily assets when their inputs change (late data included).",
        )
    ]
    if fast:
        sensors.append(
            dg.AutomationConditionSensorDefinition(
                "aggregates_automation",
                target=dg.AssetSelection.assets(*fast),
                minimum_interval_seconds=fast_interval_s,
                run_tags={"dagster/priority": "10", LANE_TAG: "aggregates"},
                # runs directly, not through a backfill: the backfill daemon only looks every
                # 30 s, which alone made buckets ~31 s late (measured, docs/benchmarks.md)
                emit_backfills=False,
                default_status=dg.DefaultSensorStatus.RUNNING,
                description="Runs the window aggregates as soon as raw readings change (freshness goal: a 60 s "
                "bucket complete within 30 s of its window closing).",
            )
        )
    return sensors
