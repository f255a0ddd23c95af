"""Machine KPIs: the hourly and daily assets, plant metadata, and the daily schedule."""

from __future__ import annotations

import dagster as dg

from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.defs.kpis import DAILY_KPIS, HOURLY_KPIS
from analytics_platform.defs.kpis.assets import build_kpi_assets
from analytics_platform.settings import PlatformSettings


def build_defs(settings: PlatformSettings) -> dg.Definitions:
    """Needs sensor readings; run states (device domain) are used when that domain is enabled."""
    if SensorContract.domain not in settings.domains_enabled:
        return dg.Definitions()
    daily_job = dg.define_asset_job("daily_kpis_job", selection=[DAILY_KPIS])
    return dg.Definitions(
        assets=build_kpi_assets(settings),
        jobs=[daily_job],
        schedules=[
            dg.build_schedule_from_partitioned_job(
                daily_job,
                name="daily_kpis_schedule",
                hour_of_day=0,
                minute_of_hour=30,
                description="Daily and shift KPIs for the day that just closed (00:30 UTC), with its baseline "
                "deviation.",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            ),
        ],
    )


def materialised_keys() -> set[dg.AssetKey]:
    """Every asset this folder materialises with all its domains enabled: the names CHECKS_CONFIG
    `freshness:` entries may use."""
    return {HOURLY_KPIS, DAILY_KPIS}
