"""Energy forecasts: the daily asset, run by automation once the day's KPIs are in."""

from __future__ import annotations

import dagster as dg

from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.defs.forecasts import ENERGY_FORECASTS
from analytics_platform.defs.forecasts.assets import build_forecast_asset
from analytics_platform.settings import PlatformSettings


def build_defs(settings: PlatformSettings) -> dg.Definitions:
    """Learns from the hourly KPIs, which exist when the sensor domain is enabled."""
    if SensorContract.domain not in settings.domains_enabled:
        return dg.Definitions()
    return dg.Definitions(assets=[build_forecast_asset(settings)])


def materialised_keys() -> set[dg.AssetKey]:
    """Every asset this folder materialises with all its domains enabled: the names CHECKS_CONFIG
    `freshness:` entries may use."""
    return {ENERGY_FORECASTS}
