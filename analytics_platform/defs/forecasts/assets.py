"""The daily forecast asset: once a day's KPIs are in, forecast the next days from them.

Partitioned like the daily KPIs (UTC days): partition D learns from the hours before the end of D
and issues the forecast of D+1..D+7 (`issued_at` = the end of D), so re-materialising D replaces
exactly that issue, and a backfill issues the forecasts the plant would have had on those days.
"""

from datetime import timedelta

import dagster as dg

from analytics_platform.data_quality.checks import RESULT_CHECKS_NO_BUCKETS
from analytics_platform.defs.checks import contract_specs, forecast_checks
from analytics_platform.defs.forecasts import ENERGY_FORECASTS
from analytics_platform.defs.groups import ENERGY_GROUP
from analytics_platform.defs.kpis import DAILY_KPIS
from analytics_platform.defs.partitions import daily_partitions
from analytics_platform.defs.tracing import partition_span
from analytics_platform.resources import PostgresResource
from analytics_platform.results import forecasts
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms.forecast import ForecastOptions

AC = dg.AutomationCondition


def kpis_of_the_day_in() -> dg.AutomationCondition:
    """Forecast the latest ended day once its daily KPIs have been written (00:30 UTC schedule),
    and again when they are re-written; not while they or this asset run."""
    return (
        AC.in_latest_time_window()
        & AC.any_deps_updated().since_last_handled()
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label("the day's KPIs are in")


def build_forecast_asset(settings: PlatformSettings) -> dg.AssetsDefinition:
    options = ForecastOptions()

    @dg.asset(
        key=ENERGY_FORECASTS,
        deps=[DAILY_KPIS],
        partitions_def=daily_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=kpis_of_the_day_in(),
        group_name=ENERGY_GROUP,
        kinds={"statsmodels", "postgres"},
        description=f"Per machine and factory: hourly energy_kwh and peak_demand_kw for the {options.horizon_days} "
        f"days after the partition, and per day (energy: sum, peak: largest hour), with {options.level:.0%} "
        f"prediction intervals (analytics.analytics_forecast, issued_at = the partition's end). A regression on "
        f"the series' hour-of-day x weekday/weekend profile and the outdoor temperature with AR(1) errors "
        f"(statsmodels SARIMAX) over the last {options.history_days} days of hourly KPIs; a series with fewer than "
        f"{options.min_history_days} days of hours is skipped. docs/forecasts.md.",
        metadata={"table": "analytics.analytics_forecast"},
        check_specs=contract_specs(ENERGY_FORECASTS, RESULT_CHECKS_NO_BUCKETS, settings),
    )
    def energy_forecasts(context: dg.AssetExecutionContext, db: PostgresResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        totals = {"issues": 0, "series": 0, "skipped": 0, "rows": 0, "rows_replaced": 0, "fit_s": 0.0}
        skipped: list[str] = []
        day = timedelta(days=1)
        with partition_span(context), db.connect() as conn:
            issued_at = window.start + day
            while issued_at <= window.end:
                run = forecasts.recompute_forecasts(conn, issued_at, options)
                totals["issues"] += 1
                totals["series"] += run.series
                totals["skipped"] += len(run.skipped)
                totals["rows"] += run.rows
                totals["rows_replaced"] += run.deleted
                totals["fit_s"] = round(totals["fit_s"] + run.fit_s, 3)
                skipped += [
                    f"- {issued_at:%Y-%m-%d} {s.tenant_id}/{s.factory_id}/{s.machine_id} {s.kpi}: {s.reason}"
                    for s in run.skipped
                ]
                issued_at += day
            checks = forecast_checks(conn, settings, window.start, window.end)
        context.log.info("energy_forecasts %s..%s: %s", window.start, window.end, totals)
        return dg.MaterializeResult(
            metadata={**totals, "skipped_series": dg.MetadataValue.md("\n".join(skipped[:200]) or "none")},
            check_results=checks,
        )

    return energy_forecasts
