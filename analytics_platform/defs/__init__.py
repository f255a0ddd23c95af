"""One folder per concept; `build_definitions` merges them (definitions.py calls it once)."""

from __future__ import annotations

import dagster as dg

from analytics_platform.defs.aggregates.definitions import build_defs as aggregate_defs
from analytics_platform.defs.automation import automation_sensor
from analytics_platform.defs.events.definitions import build_defs as event_defs
from analytics_platform.defs.ingest.definitions import build_defs as ingest_defs
from analytics_platform.defs.resources import build_resources
from analytics_platform.settings import PlatformSettings


def build_definitions(settings: PlatformSettings, *, secrets_from_env: bool = True) -> dg.Definitions:
    """The platform's definitions for `settings` (tests build their own with explicit settings)."""
    return dg.Definitions.merge(
        ingest_defs(settings),
        aggregate_defs(settings),
        event_defs(settings),
        dg.Definitions(sensors=[automation_sensor(settings.automation_interval_s)]),
        dg.Definitions(resources=build_resources(settings, secrets_from_env=secrets_from_env)),
    )
