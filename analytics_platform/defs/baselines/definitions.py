"""Energy baselines: the model asset and its weekly training schedule."""

from __future__ import annotations

import dagster as dg

from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.defs.baselines import BASELINE_MODELS
from analytics_platform.defs.baselines.assets import build_baseline_asset
from analytics_platform.settings import PlatformSettings


def build_defs(settings: PlatformSettings) -> dg.Definitions:
    """Trained on the hourly KPIs, which exist when the sensor domain is enabled."""
    if SensorContract.domain not in settings.domains_enabled:
        return dg.Definitions()
    job = dg.define_asset_job("baseline_training_job", selection=[BASELINE_MODELS])
    return dg.Definitions(
        assets=[build_baseline_asset(settings)],
        jobs=[job],
        schedules=[
            dg.ScheduleDefinition(
                name="baseline_training_schedule",
                job=job,
                cron_schedule="0 3 * * 1",
                execution_timezone="UTC",
                description="Weekly energy-baseline retraining (Mondays 03:00 UTC); run it on demand from the job.",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            ),
        ],
    )


def materialised_keys() -> set[dg.AssetKey]:
    """Every asset this folder materialises with all its domains enabled: the names CHECKS_CONFIG
    `freshness:` entries may use."""
    return {BASELINE_MODELS}
