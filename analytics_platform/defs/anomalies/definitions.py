"""Anomalies: the hourly asset and its schedule, and the live judges' sensor."""

from __future__ import annotations

import dagster as dg

from analytics_platform.contracts.lab import LabContract
from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.contracts.sweep import SweepContract
from analytics_platform.defs.anomalies import READING_ANOMALIES
from analytics_platform.defs.anomalies.assets import anomaly_options, build_anomaly_asset
from analytics_platform.defs.anomalies.sensors import build_live_sensor
from analytics_platform.settings import PlatformSettings


def build_defs(settings: PlatformSettings) -> dg.Definitions:
    """Judges sensor readings (the hourly asset and its schedule: nothing when the sensor domain is
    off); the live judges' sensor runs for whichever of readings, lab results and sweep batches is on."""
    live = build_live_sensor(settings, anomaly_options(settings))
    if SensorContract.domain not in settings.domains_enabled:
        judged = {LabContract.domain, SweepContract.domain} & set(settings.domains_enabled)
        return dg.Definitions(sensors=[live] if judged else [])
    job = dg.define_asset_job("anomalies_job", selection=[READING_ANOMALIES])
    return dg.Definitions(
        assets=[build_anomaly_asset(settings)],
        jobs=[job],
        sensors=[live],
        schedules=[
            dg.build_schedule_from_partitioned_job(
                job,
                name="anomalies_schedule",
                minute_of_hour=10,
                description="Anomalies of the hour that just closed (at :10, once its KPIs and aggregates are in).",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            ),
        ],
    )


def materialised_keys() -> set[dg.AssetKey]:
    """Every asset this folder materialises with all its domains enabled: the names CHECKS_CONFIG
    `freshness:` entries may use."""
    return {READING_ANOMALIES}
