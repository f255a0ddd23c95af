"""The hourly trend asset: at the end of each hour, every hourly series and hourly KPI is judged over
each TREND_WINDOWS_HOURS window ending then (Theil–Sen slope, Mann–Kendall test: transforms/trends.py)."""

from datetime import timedelta

import dagster as dg

from analytics_platform.data_quality.checks import RESULT_CHECKS_NO_BUCKETS
from analytics_platform.defs.aggregates import WINDOW_AGGREGATES
from analytics_platform.defs.checks import contract_specs, trend_checks
from analytics_platform.defs.groups import ENERGY_GROUP
from analytics_platform.defs.kpis import HOURLY_KPIS
from analytics_platform.defs.partitions import ended_hourly_partitions
from analytics_platform.defs.tracing import partition_span
from analytics_platform.defs.trends import SERIES_TRENDS
from analytics_platform.resources import PostgresResource
from analytics_platform.results import trends
from analytics_platform.settings import PlatformSettings


def trend_options(settings: PlatformSettings) -> trends.TrendOptions:
    return trends.TrendOptions(
        windows_hours=tuple(sorted(set(settings.trend_windows_hours))),
        min_points=settings.trend_min_points,
        alpha=settings.trend_alpha,
    )


def build_trend_asset(settings: PlatformSettings) -> dg.AssetsDefinition:
    """Downstream of the hourly aggregates and KPIs; one partition per ended hour (the window end)."""
    options = trend_options(settings)

    @dg.asset(
        key=SERIES_TRENDS,
        deps=[WINDOW_AGGREGATES, HOURLY_KPIS],
        partitions_def=ended_hourly_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=ENERGY_GROUP,
        kinds={"polars", "postgres"},
        description="Per series (hourly mean of each sensor's metric) and per hourly KPI of each machine: the "
        "trend over each TREND_WINDOWS_HOURS window ending at the partition's end (analytics.analytics_trend): "
        "Theil–Sen slope per hour, Mann–Kendall S, tie-corrected variance, Z, two-sided p-value, and "
        "increasing / decreasing / stable at TREND_ALPHA. Served by /v1/trends; `trend` alert rules read it.",
        metadata={"table": "analytics.analytics_trend"},
        check_specs=contract_specs(SERIES_TRENDS, RESULT_CHECKS_NO_BUCKETS, settings),
    )
    def series_trends(context: dg.AssetExecutionContext, db: PostgresResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        hours = int((window.end - window.start) / timedelta(hours=1))
        ends = [window.start + timedelta(hours=h + 1) for h in range(hours)]
        with partition_span(context), db.connect() as conn:
            written, replaced = trends.recompute_trends(conn, ends, options)
            checks = trend_checks(conn, settings, window.start, window.end)
        totals = {"window_ends": len(ends), "trend_rows": written, "rows_replaced": replaced}
        context.log.info("series_trends %s..%s: %s", window.start, window.end, totals)
        return dg.MaterializeResult(metadata=totals, check_results=checks)

    return series_trends
