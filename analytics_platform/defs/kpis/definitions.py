"""Energy and production intelligence: KPIs, baselines, anomalies, and their schedules."""

from __future__ import annotations

import dagster as dg

from analytics_platform.contracts.device import DeviceHealthContract
from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.defs.anomalies.assets import build_anomaly_asset
from analytics_platform.defs.baselines.assets import build_baseline_asset
from analytics_platform.defs.kpis.assets import build_kpi_assets
from analytics_platform.settings import PlatformSettings


def build_defs(settings: PlatformSettings) -> dg.Definitions:
    """Needs sensor readings; run states (device domain) are used when that domain is enabled."""
    if SensorContract.domain not in settings.domains_enabled:
        return dg.Definitions()
    raw = [dg.AssetKey(SensorContract.raw_table)]
    if DeviceHealthContract.domain in settings.domains_enabled:
        raw.append(dg.AssetKey(DeviceHealthContract.raw_table))
    kpi_assets = build_kpi_assets(settings, raw)
    baseline = build_baseline_asset(settings)
    anomalies = build_anomaly_asset(settings, raw)
    daily_job = dg.define_asset_job("daily_kpis_job", selection=["daily_machine_kpis"])
    anomaly_job = dg.define_asset_job("anomalies_job", selection=["reading_anomalies"])
    baseline_job = dg.define_asset_job("baseline_training_job", selection=["energy_baseline_models"])
    return dg.Definitions(
        assets=[*kpi_assets, baseline, anomalies],
        jobs=[daily_job, anomaly_job, baseline_job],
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
            dg.build_schedule_from_partitioned_job(
                anomaly_job,
                name="anomalies_schedule",
                minute_of_hour=10,
                description="Anomalies of the hour that just closed (at :10, once its KPIs and aggregates are in).",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            ),
            dg.ScheduleDefinition(
                name="baseline_training_schedule",
                job=baseline_job,
                cron_schedule="0 3 * * 1",
                execution_timezone="UTC",
                description="Weekly energy-baseline retraining (Mondays 03:00 UTC); run it on demand from the job.",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            ),
        ],
    )
