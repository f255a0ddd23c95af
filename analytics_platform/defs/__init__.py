"""The Dagster definitions, as a map: one folder per concept, shared helpers beside them.

Each concept folder (`ingest/`, `aggregates/`, `events/`, `kpis/`, `baselines/`, `anomalies/`,
`trends/`, `forecasts/`, `alerts/`) declares its asset keys in its `__init__.py` and builds its assets, checks, jobs,
sensors and schedules from the settings passed in with `definitions.py: build_defs(settings)`.
The modules beside them are used by several folders: `partitions.py` (the time partitions),
`groups.py` (the UI's asset groups), `automation.py` (automation conditions and their sensors),
`checks.py` (data-contract check wiring), `freshness.py` (freshness checks of what was built) and
`resources.py`. `build_definitions` below is the one place they are merged.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from analytics_platform.defs import freshness
from analytics_platform.defs.aggregates import definitions as aggregates
from analytics_platform.defs.alerts import definitions as alerts
from analytics_platform.defs.anomalies import definitions as anomalies
from analytics_platform.defs.automation import automation_sensors
from analytics_platform.defs.baselines import definitions as baselines
from analytics_platform.defs.events import definitions as events
from analytics_platform.defs.forecasts import definitions as forecasts
from analytics_platform.defs.groups import INGEST_GROUP
from analytics_platform.defs.ingest import definitions as ingest
from analytics_platform.defs.kpis import definitions as kpis
from analytics_platform.defs.resources import build_resources
from analytics_platform.defs.trends import definitions as trends
from analytics_platform.settings import PlatformSettings

# the folders that own assets, each with `build_defs(settings)` and `materialised_keys()`
ASSET_FOLDERS = (ingest, aggregates, events, kpis, baselines, anomalies, trends, forecasts)


def build_definitions(settings: PlatformSettings, *, secrets_from_env: bool = True) -> dg.Definitions:
    """The platform's definitions for `settings` (tests build their own with explicit settings)."""
    parts = {folder: folder.build_defs(settings) for folder in ASSET_FOLDERS}
    assets = dg.Definitions.merge(*parts.values())
    known = {key for folder in ASSET_FOLDERS for key in folder.materialised_keys()}
    defs = dg.Definitions.merge(
        assets,
        freshness.build_defs(settings, materialised(assets), known),
        alerts.build_defs(settings),
        dg.Definitions(
            sensors=automation_sensors(
                list(materialised(parts[aggregates])),  # the window aggregates: the fast lane
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


def materialised(defs: dg.Definitions) -> Mapping[dg.AssetKey, dg.PartitionsDefinition | None]:
    """Asset key -> partitions of every asset `defs` materialises (specs of tables are not)."""
    return {
        key: asset.partitions_def
        for asset in defs.assets or []
        if isinstance(asset, dg.AssetsDefinition) and asset.is_executable
        for key in asset.keys
    }


def k8s_backfill_jobs(defs: dg.Definitions) -> list[dg.UnresolvedAssetJobDefinition]:
    """One job per asset group and cadence (hourly, daily) of the derived assets, run with
    `k8s_job_executor`: a backfill launched from such a job spreads each run's steps over pods.

    Only for backfills: a pod per step costs seconds of start-up, which live automation (in-process,
    one pod per run) cannot afford against the 30 s freshness goal. Raw assets stay out: re-deriving
    them from landing is a separate, deliberate act (docs/architecture.md, "Ingest"). A job needs one
    partitioning for all its assets, and within a group and cadence they share one.
    """
    # imported here: dagster_k8s (and the kubernetes client) cost ~1.4 s to import, in every run
    # process, and only BACKFILL_EXECUTOR=k8s uses it
    from dagster_k8s import k8s_job_executor

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
