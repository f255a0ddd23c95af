"""Machine KPIs: hourly (follows its raw inputs, late data included, and runs once more when the
hour's closing readings have landed) and daily with the day's shifts (scheduled once the day has
closed). Plant metadata is a table, like spec limits.

Why the hour runs twice: a counter or power reading measures the interval back to its series'
previous reading, so the hour's last intervals are closed by the first readings AFTER the hour
(docs/kpis.md). The hour is first computed as soon as it ends, when those may not have landed;
they land in the next hour's raw partition, which does not make Dagster recompute this one. So the
latest ended hour is recomputed once more at :20 past the next hour (CLOSING_READINGS_CRON: a
15-minute meter's closing reading plus delivery slack), once an hour, not on every drain tick of
the next hour. A closing reading later than that is counted the next time the hour is recomputed
(late data in it, a backfill); until then the KPI's details say how many seconds are still open.
The daily schedule runs at 00:30 UTC, after the day's closing readings, and reads up to
KpiOptions.max_interval_s (24 h) past the day for them.
"""

from datetime import timedelta

import dagster as dg

from analytics_platform.contracts.device import DeviceHealthContract
from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.data_quality.checks import RESULT_CHECKS_NO_BUCKETS
from analytics_platform.defs.automation import days_whose_hours_changed, follow_hourly_inputs
from analytics_platform.defs.baselines import BASELINE_MODELS
from analytics_platform.defs.checks import contract_specs, kpi_checks
from analytics_platform.defs.groups import ENERGY_GROUP
from analytics_platform.defs.ingest import raw_asset_key, raw_asset_keys
from analytics_platform.defs.kpis import DAILY_KPIS, HOURLY_KPIS
from analytics_platform.defs.partitions import daily_partitions, ended_hourly_partitions
from analytics_platform.defs.tracing import partition_span
from analytics_platform.resources import PostgresResource
from analytics_platform.results import baselines, kpis
from analytics_platform.results.aggregates import chunks
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms.machine_kpis import KpiOptions, fixed_periods

CLOSING_READINGS_CRON = "20 * * * *"  # UTC: the latest ended hour, once its closing readings are in

plant_metadata = dg.AssetSpec(
    "plant_metadata",
    group_name=ENERGY_GROUP,
    description="Tenants' timezone, currency, emission factors and time-of-use tariffs (versions, each in force "
    "from its valid_from) and shifts; machines' ideal cycle time: data, not code. Seeded from "
    "analytics_platform/config/plant.yaml (`analytics-platform plant load`); after a change, re-materialise the "
    "KPI partitions it affects (a past period keeps the versions that were in force then).",
    kinds={"postgres"},
    metadata={
        "tables": "analytics.plant_tenants, plant_emission_factors, plant_tariff_bands, plant_shifts, machine_metadata"
    },
)


def kpi_options(settings: PlatformSettings) -> KpiOptions:
    return KpiOptions(
        gap_s=settings.kpi_gap_s,
        slot_s=settings.kpi_slot_s,
        drivers=tuple(settings.kpi_drivers),
        demand_interval_s=settings.kpi_demand_interval_s,
    )


def closing_readings_landed(optional: list[dg.AssetKey]) -> dg.AutomationCondition:
    """Recompute the latest ended hour once, at CLOSING_READINGS_CRON. The trigger resets only when
    the hour is requested (not when a run finishes), so a late-data run finishing in the same
    evaluation as the cron tick cannot swallow it; while the hour or its inputs run, it waits."""
    ac = dg.AutomationCondition
    return (
        ac.in_latest_time_window()
        & ac.cron_tick_passed(CLOSING_READINGS_CRON, "UTC").since(ac.newly_requested())
        & ~ac.any_deps_missing().ignore(dg.AssetSelection.assets(*optional))
        & ~ac.any_deps_in_progress()
        & ~ac.in_progress()
    ).with_label("the hour's closing readings have landed")


def build_kpi_assets(settings: PlatformSettings) -> list:
    """Reads sensor readings, and run states when the device domain runs (availability needs them)."""
    options = kpi_options(settings)
    raw = raw_asset_keys(settings, [SensorContract, DeviceHealthContract])
    # prior and next readings as far as a counter interval is counted: hours and days agree
    lookback = timedelta(seconds=options.max_interval_s)
    optional = [k for k in raw if k != raw_asset_key(SensorContract)] + [plant_metadata.key]

    @dg.asset(
        key=HOURLY_KPIS,
        deps=[*raw, plant_metadata.key],
        partitions_def=ended_hourly_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=follow_hourly_inputs(
            timedelta(hours=settings.automation_lookback_hours), optional=optional
        )
        | closing_readings_landed(optional),
        group_name=ENERGY_GROUP,
        kinds={"polars", "postgres"},
        description="Per machine and hour (analytics.analytics_kpi, period 'hour'): energy, cost (time-of-use), "
        "carbon, peak / average demand, load factor, SEC, production and good count, run / idle / planned / "
        "unplanned downtime, availability, performance, quality, OEE, production rate, data completeness, "
        "driver averages. NULL with a reason where a value cannot be computed. Counters are booked by the "
        "interval each reading closes (docs/kpis.md); the hour runs when it ends, when its inputs change, and "
        "once more at :20 past the next hour, when the readings closing its last intervals have landed.",
        metadata={"table": "analytics.analytics_kpi"},
        check_specs=contract_specs(HOURLY_KPIS, RESULT_CHECKS_NO_BUCKETS, settings),
    )
    def hourly_machine_kpis(context: dg.AssetExecutionContext, db: PostgresResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        totals = {"machines": 0, "readings": 0, "kpi_rows": 0, "rows_replaced": 0}
        with partition_span(context), db.connect() as conn:
            for start, end in chunks(window.start, window.end, settings.agg_chunk_hours):
                run = kpis.recompute_kpis(
                    conn, fixed_periods("hour", start, end, timedelta(hours=1)), options, lookback=lookback
                )
                totals["machines"] = max(totals["machines"], run.machines)
                totals["readings"] += run.readings
                totals["kpi_rows"] += run.rows
                totals["rows_replaced"] += run.deleted
            checks = kpi_checks(conn, settings, ["hour"], window.start, window.end)
        context.log.info("hourly_machine_kpis %s..%s: %s", window.start, window.end, totals)
        return dg.MaterializeResult(metadata=totals, check_results=checks)

    @dg.asset(
        key=DAILY_KPIS,
        deps=[hourly_machine_kpis, BASELINE_MODELS],
        partitions_def=daily_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        # a late reading recomputes its hour; without this its day (and shifts) kept the figures of the
        # 00:30 run, and a day's energy stopped being the sum of its hours'
        automation_condition=days_whose_hours_changed(
            timedelta(hours=max(48, settings.automation_lookback_hours)), ignore=[BASELINE_MODELS]
        ),
        group_name=ENERGY_GROUP,
        kinds={"polars", "postgres"},
        description="Per machine and day and per shift (local time, reported with the day it ends in): the same "
        "KPIs as the hours, computed from the same readings by the same code, so a day's energy is the sum "
        "of its hours'. Also the day's energy against the active baseline (analytics.analytics_baseline_deviation). "
        "Scheduled after the day closes (daily_kpis_schedule), and run again when one of its hours is "
        "recomputed (late data).",
        metadata={"table": "analytics.analytics_kpi"},
        check_specs=contract_specs(DAILY_KPIS, RESULT_CHECKS_NO_BUCKETS, settings),
    )
    def daily_machine_kpis(context: dg.AssetExecutionContext, db: PostgresResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        totals = {"days": 0, "shifts": 0, "machines": 0, "kpi_rows": 0, "rows_replaced": 0, "deviations": 0}
        with partition_span(context), db.connect() as conn:
            for start, end in chunks(window.start, window.end, 24):
                periods = kpis.day_periods(conn, start, end)
                run = kpis.recompute_kpis(conn, periods, options, lookback=lookback)
                deviations = baselines.compute_deviations(conn, start, end, period="day")
                baselines.replace_deviations(conn, deviations, start, end, "day")
                totals["days"] += 1
                totals["shifts"] += periods.filter(periods["period"] == "shift").height
                totals["machines"] = max(totals["machines"], run.machines)
                totals["kpi_rows"] += run.rows
                totals["rows_replaced"] += run.deleted
                totals["deviations"] += deviations.height
            checks = kpi_checks(conn, settings, ["day", "shift"], window.start, window.end)
        context.log.info("daily_machine_kpis %s..%s: %s", window.start, window.end, totals)
        return dg.MaterializeResult(metadata=totals, check_results=checks)

    return [plant_metadata, hourly_machine_kpis, daily_machine_kpis]
