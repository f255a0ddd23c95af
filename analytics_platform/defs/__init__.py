"""One folder per concept; `build_definitions` merges them (definitions.py calls it once)."""

from __future__ import annotations

import dagster as dg

from analytics_platform.defs.aggregates.definitions import build_defs as aggregate_defs
from analytics_platform.defs.alerts.definitions import build_defs as alert_defs
from analytics_platform.defs.automation import automation_sensors
from analytics_platform.defs.events.definitions import build_defs as event_defs
from analytics_platform.defs.freshness import build_defs as freshness_defs
from analytics_platform.defs.ingest.definitions import build_defs as ingest_defs
from analytics_platform.defs.kpis.definitions import build_defs as kpi_defs
from analytics_platform.defs.resources import build_resources
from analytics_platform.settings import PlatformSettings


def build_definitions(settings: PlatformSettings, *, secrets_from_env: bool = True) -> dg.Definitions:
    """The platform's definitions for `settings` (tests build their own with explicit settings)."""
    return dg.Definitions.merge(
        ingest_defs(settings),
        aggregate_defs(settings),
        event_defs(settings),
        kpi_defs(settings),
        freshness_defs(settings),
        alert_defs(settings),
        dg.Definitions(
            sensors=automation_sensors(
                [dg.AssetKey("sensor_window_aggregates")] if "sensor" in settings.domains_enabled else [],
                settings.automation_interval_s,
                settings.automation_events_interval_s,
            ),
            # in-process: on two cores a subprocess per step (the multiprocess default) costs more
            # than the step itself; production swaps in k8s_job_executor for backfills
            executor=dg.in_process_executor,
        ),
        dg.Definitions(resources=build_resources(settings, secrets_from_env=secrets_from_env)),
    )
