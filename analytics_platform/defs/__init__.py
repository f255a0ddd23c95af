"""One folder per concept; `build_definitions` merges them (definitions.py calls it once)."""

from __future__ import annotations

import dagster as dg
from dagster_k8s import k8s_job_executor

from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.defs.aggregates.definitions import build_defs as aggregate_defs
from analytics_platform.defs.alerts.definitions import build_defs as alert_defs
from analytics_platform.defs.automation import automation_sensors
from analytics_platform.defs.events.definitions import build_defs as event_defs
from analytics_platform.defs.freshness import build_defs as freshness_defs
from analytics_platform.defs.ingest.assets import INGEST_GROUP
from analytics_platform.defs.ingest.definitions import build_defs as ingest_defs
from analytics_platform.defs.kpis.definitions import build_defs as kpi_defs
from analytics_platform.defs.resources import build_resources
from analytics_platform.settings import PlatformSettings


def build_definitions(settings: PlatformSettings, *, secrets_from_env: bool = True) -> dg.Definitions:
    """The platform's definitions for `settings` (tests build their own with explicit settings)."""
    defs = dg.Definitions.merge(
        ingest_defs(settings),
        aggregate_defs(settings),
        event_defs(settings),
        kpi_defs(settings),
        freshness_defs(settings),
        alert_defs(settings),
        dg.Definitions(
            sensors=automation_sensors(
                [dg.AssetKey("sensor_window_aggregates")] if SensorContract.domain in settings.domains_enabled else [],
                settings.automation_interval_s,
                settings.automation_events_interval_s,
            ),
            # in-process: on two cores a subprocess per step (the multiprocess default) costs more
            # than the step itself; production swaps in k8s_job_executor for backfills
            executor=dg.in_process_executor,
        ),
        dg.Definitions(resources=build_resources(settings, secrets_from_env=secrets_from_env)),
    )
    if settings.backfill_executor == "k8s":
        defs = dg.Definitions.merge(defs, dg.Definitions(jobs=k8s_backfill_jobs(defs)))
    return defs


def k8s_backfill_jobs(defs: dg.Definitions) -> list[dg.UnresolvedAssetJobDefinition]:
    """One job per asset group and cadence (hourly, daily) of the derived assets, run with
    `k8s_job_executor`: a backfill launched from such a job spreads each run's steps over pods.

    Only for backfills: a pod per step costs seconds of start-up, which live automation (in-process,
    one pod per run) cannot afford against the 30 s freshness goal. Raw assets stay out: re-deriving
    them from landing is a separate, deliberate act (DESIGN.md, "Ingest"). A job needs one
    partitioning for all its assets, and within a group and cadence they share one.
    """
    jobs: dict[str, list[dg.AssetKey]] = {}
    for node in defs.resolve_asset_graph().asset_nodes:
        partitions = node.partitions_def
        if not node.is_materializable or node.group_name == INGEST_GROUP:
            continue
        if isinstance(partitions, dg.HourlyPartitionsDefinition):
            jobs.setdefault(f"k8s_backfill_{node.group_name}_hourly", []).append(node.key)
        elif isinstance(partitions, dg.DailyPartitionsDefinition):
            jobs.setdefault(f"k8s_backfill_{node.group_name}_daily", []).append(node.key)
    return [
        dg.define_asset_job(
            name,
            selection=dg.AssetSelection.assets(*sorted(keys, key=lambda k: k.to_user_string())),
            executor_def=k8s_job_executor,
            description="Each step in its own pod: launch backfills of these assets here to spread them over the "
            "cluster (BACKFILL_EXECUTOR=k8s).",
        )
        for name, keys in sorted(jobs.items())
    ]
