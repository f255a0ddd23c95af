"""Event definitions: one hourly asset per enabled event domain, the day rollups, spec limits, and
with the lab domain the window aggregates of its results (lab analytes as time series)."""

from __future__ import annotations

import dagster as dg

from analytics_platform.contracts.lab import LabContract
from analytics_platform.defs.events import DAILY_EVENT_ROLLUPS, LAB_WINDOW_AGGREGATES
from analytics_platform.defs.events.assets import EVENT_ASSETS, build_daily_rollups, build_event_asset, spec_limits
from analytics_platform.defs.events.lab_series import build_lab_window_aggregates
from analytics_platform.settings import PlatformSettings


def build_defs(settings: PlatformSettings) -> dg.Definitions:
    specs = [s for s in EVENT_ASSETS if s.domain in settings.domains_enabled]
    if not specs:
        return dg.Definitions()
    assets: list = [build_event_asset(s, settings) for s in specs]
    if any(s.uses_limits for s in specs):
        assets.append(spec_limits)
    if LabContract.domain in settings.domains_enabled:
        assets.append(build_lab_window_aggregates(settings))
    return dg.Definitions(assets=[*assets, build_daily_rollups(specs, settings)])


def materialised_keys() -> set[dg.AssetKey]:
    """Every asset this folder materialises with all its domains enabled: the names CHECKS_CONFIG
    `freshness:` entries may use."""
    return {*(spec.key for spec in EVENT_ASSETS), DAILY_EVENT_ROLLUPS, LAB_WINDOW_AGGREGATES}
