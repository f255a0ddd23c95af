"""Aggregates definitions: the window aggregates of sensor readings (when the sensor domain runs)."""

from __future__ import annotations

import dagster as dg

from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.defs.aggregates import WINDOW_AGGREGATES
from analytics_platform.defs.aggregates.assets import build_window_aggregates
from analytics_platform.defs.aggregates.live import build_live_job
from analytics_platform.settings import PlatformSettings


def build_defs(settings: PlatformSettings) -> dg.Definitions:
    if SensorContract.domain not in settings.domains_enabled:
        return dg.Definitions()
    return dg.Definitions(assets=[build_window_aggregates(settings)], jobs=[build_live_job()])


def materialised_keys() -> set[dg.AssetKey]:
    """Every asset this folder materialises with all its domains enabled: the names CHECKS_CONFIG
    `freshness:` entries may use."""
    return {WINDOW_AGGREGATES}
