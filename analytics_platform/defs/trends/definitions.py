"""Trends: the hourly asset and its schedule."""

from __future__ import annotations

import dagster as dg

from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.defs.trends import SERIES_TRENDS
from analytics_platform.defs.trends.assets import build_trend_asset
from analytics_platform.settings import PlatformSettings


def build_defs(settings: PlatformSettings) -> dg.Definitions:
    """Needs the sensor domain (its aggregates and KPIs are the series); nothing without it."""
    if SensorContract.domain not in settings.domains_enabled:
        return dg.Definitions()
    job = dg.define_asset_job("trends_job", selection=[SERIES_TRENDS])
    return dg.Definitions(
        assets=[build_trend_asset(settings)],
        jobs=[job],
        schedules=[
            dg.build_schedule_from_partitioned_job(
                job,
                name="trends_schedule",
                minute_of_hour=25,
                description="Trends of the windows ending with the hour that just closed (at :25, after the hour's "
                "KPIs are recomputed with their closing readings at :20).",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            ),
        ],
    )


def materialised_keys() -> set[dg.AssetKey]:
    """Every asset this folder materialises with all its domains enabled: the names CHECKS_CONFIG
    `freshness:` entries may use."""
    return {SERIES_TRENDS}
