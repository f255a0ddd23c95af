"""Event assets: device health (transitions, offline periods, uptime), sweep batch and lab result
quality against spec limits (hourly), and their day rollups (daily)."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg
import psycopg

from analytics_platform.contracts.base import Contract
from analytics_platform.contracts.device import DeviceHealthContract
from analytics_platform.contracts.lab import LabContract
from analytics_platform.contracts.sweep import SweepContract
from analytics_platform.data_quality.checks import RESULT_CHECKS
from analytics_platform.defs.automation import complete_days, follow_hourly_inputs
from analytics_platform.defs.checks import contract_specs, daily_rollup_checks, event_checks
from analytics_platform.defs.events import DAILY_EVENT_ROLLUPS
from analytics_platform.defs.groups import ANALYTICS_GROUP
from analytics_platform.defs.ingest import raw_asset_key
from analytics_platform.defs.partitions import daily_partitions, hourly_partitions, partition_key
from analytics_platform.defs.tracing import partition_span
from analytics_platform.resources import PostgresResource
from analytics_platform.results import events
from analytics_platform.results.aggregates import chunks
from analytics_platform.settings import PlatformSettings

spec_limits = dg.AssetSpec(
    "analytics_spec_limits",
    group_name=ANALYTICS_GROUP,
    description="Spec limits (lower / upper / target per tenant, factory, analyte or metric): data, not code. "
    "Seeded from analytics_platform/config/spec_limits.yaml (`analytics-platform spec-limits load`); after a "
    "change, re-materialise the quality partitions to re-judge past results.",
    kinds={"postgres"},
    metadata={"table": "analytics.analytics_spec_limits"},
)


@dataclass(frozen=True)
class EventAsset:
    """An hourly event asset: computed from its domain's raw asset (named by the ingest folder)."""

    contract: type[Contract]
    name: str
    description: str
    uses_limits: bool

    @property
    def domain(self) -> str:
        return self.contract.domain

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey(self.name)


EVENT_ASSETS = (
    EventAsset(
        DeviceHealthContract,
        "device_health_events",
        "Status transitions and offline periods (analytics.analytics_event); uptime % and health-score "
        "statistics per machine and window (analytics.analytics_event_rollup, event_type device_health).",
        False,
    ),
    EventAsset(
        SweepContract,
        "sweep_batch_quality",
        "Each sweep batch's n, mean, min, max, stddev and pass/fail against spec limits "
        "(analytics_event sweep_batch); fail rate per machine and window (analytics_event_rollup).",
        True,
    ),
    EventAsset(
        LabContract,
        "lab_result_quality",
        "Each lab result judged against its analyte's spec limits (analytics_event lab_result); pass rate "
        "per station and analyte and window (analytics_event_rollup, subject = analyte).",
        True,
    ),
)


def _recompute(spec: EventAsset, settings: PlatformSettings) -> Callable[..., events.EventRun]:
    lookback = timedelta(hours=settings.device_state_lookback_hours)
    offline_after = timedelta(minutes=settings.device_offline_minutes)

    def run(conn: psycopg.Connection, start: datetime, end: datetime) -> events.EventRun:
        if spec.domain == DeviceHealthContract.domain:
            return events.recompute_device(
                conn, settings.windows, start, end, lookback=lookback, offline_after=offline_after
            )
        return events.recompute_quality(conn, spec.domain, settings.windows, start, end)

    return run


def build_event_asset(spec: EventAsset, settings: PlatformSettings) -> dg.AssetsDefinition:
    recompute = _recompute(spec, settings)
    deps = [raw_asset_key(spec.contract), *([spec_limits.key] if spec.uses_limits else [])]

    @dg.asset(
        key=spec.key,
        deps=deps,
        partitions_def=hourly_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=follow_hourly_inputs(
            timedelta(hours=settings.automation_lookback_hours), optional=[spec_limits.key]
        ),
        group_name=ANALYTICS_GROUP,
        kinds={"polars", "postgres"},
        description=spec.description,
        metadata={"tables": "analytics.analytics_event, analytics.analytics_event_rollup"},
        check_specs=contract_specs(spec.key, RESULT_CHECKS, settings),
    )
    def _asset(context: dg.AssetExecutionContext, db: PostgresResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        totals = {"inputs": 0, "events": 0, "rollups": 0, "rows_replaced": 0}
        with partition_span(context), db.connect() as conn:
            # hour by hour: each hour is replaced in its own transaction, and each hour's device
            # state comes from the data before it, exactly as when the hour was processed live
            replaced: set[datetime] = set()
            for start, end in chunks(window.start, window.end, 1):
                result = recompute(conn, start, end)
                totals["inputs"] += result.inputs
                totals["events"] += result.events
                totals["rollups"] += result.rollups
                totals["rows_replaced"] += result.deleted
                replaced.update(hour for hour, _ in result.replaced)
            checks = event_checks(conn, settings, spec.domain, window.start, window.end)
        context.log.info("%s %s..%s: %s", spec.name, window.start, window.end, totals)
        report_other_hours(context, spec.key, window, replaced, settings.partitions_start)
        return dg.MaterializeResult(metadata=totals, check_results=checks)

    return _asset


def report_other_hours(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    window: dg.TimeWindow,
    replaced: set[datetime],
    first: datetime,
) -> None:
    """Tell Dagster of the hours outside the run's partitions that the recompute replaced as well (a late
    status rewrites the hours after it that carried the old one, a silence the hours before it): each is a
    materialisation of its own partition, so the automation re-rolls up the day it lies in. Without this, a
    late status at 23:55 rewrote the next day's hours but only its own day's rollup followed."""
    for hour in sorted(h for h in replaced if h >= first and not window.start <= h < window.end):
        context.log_event(
            dg.AssetMaterialization(
                key,
                partition=partition_key(hour),
                metadata={"recomputed_with": f"{partition_key(window.start)}..{partition_key(window.end)}"},
            )
        )


def build_daily_rollups(specs: list[EventAsset], settings: PlatformSettings) -> dg.AssetsDefinition:
    domains = [s.domain for s in specs]

    @dg.asset(
        key=DAILY_EVENT_ROLLUPS,
        deps=[s.key for s in specs],
        partitions_def=daily_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=complete_days(timedelta(hours=max(48, settings.automation_lookback_hours))),
        group_name=ANALYTICS_GROUP,
        kinds={"polars", "postgres"},
        description="Day rollups (window_s 86400) of every hourly event rollup: counts, uptime %, health-score "
        "statistics, sweep fail rate, lab pass rate per station and analyte. Built from the day's 24 hourly rows, "
        "so a day always equals the sum of its hours.",
        metadata={"table": "analytics.analytics_event_rollup", "window_s": 86400},
        check_specs=contract_specs(DAILY_EVENT_ROLLUPS, RESULT_CHECKS, settings),
    )
    def daily_event_rollups(context: dg.AssetExecutionContext, db: PostgresResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        with partition_span(context), db.connect() as conn:
            result = events.recompute_days(
                conn,
                domains,
                window.start,
                window.end,
                windows=settings.windows,
                lookback=timedelta(hours=settings.device_state_lookback_hours),
                offline_after=timedelta(minutes=settings.device_offline_minutes),
            )
            checks = daily_rollup_checks(conn, settings, domains, window.start, window.end)
        return dg.MaterializeResult(
            metadata={"hourly_rows": result.inputs, "day_rows": result.rollups, "rows_replaced": result.deleted},
            check_results=checks,
        )

    return daily_event_rollups
