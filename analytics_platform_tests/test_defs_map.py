"""What the Dagster UI sees, pinned: the assets, groups, partitions, lineage, checks, jobs, sensors and
schedules `build_definitions` produces for a few settings.

The expected listings were taken from the code before `defs/` became one folder per concept, each
owning its `build_defs(settings)`, keys and partitions (issue 21): moving definitions between folders
must not change any of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from analytics_platform.contracts.registry import registry
from analytics_platform.defs import ASSET_FOLDERS, build_definitions
from analytics_platform.settings import PlatformSettings


def describe_partitions(partitions: dg.PartitionsDefinition | None) -> str | None:
    """`hourly 2024-01-01-00:00 +1 UTC`: cadence, first key, end offset, timezone."""
    if partitions is None:
        return None
    if isinstance(partitions, dg.HourlyPartitionsDefinition):
        cadence = "hourly"
    elif isinstance(partitions, dg.DailyPartitionsDefinition):
        cadence = "daily"
    else:
        return repr(partitions)
    return f"{cadence} {partitions.start.strftime(partitions.fmt)} +{partitions.end_offset} {partitions.timezone}"


def describe_condition(condition: dg.AutomationCondition | None) -> str | None:
    """Its label, or how its labelled parts are combined (`OR(a, b)`)."""
    if condition is None:
        return None
    return condition.get_label() or f"{condition.name}({', '.join(map(describe_condition, condition.children))})"


def targets(sensor: dg.SensorDefinition, graph: Any) -> list[str] | None:
    """The assets an automation sensor evaluates (None for the others)."""
    selection = getattr(sensor, "asset_selection", None)
    return None if selection is None else sorted(k.to_user_string() for k in selection.resolve(graph))


def listing(defs: dg.Definitions) -> dict[str, Any]:
    """Everything of `defs` the UI shows as structure (not descriptions), as plain data."""
    graph = defs.resolve_asset_graph()
    repository = defs.get_repository_def()
    assets = {}
    for node in sorted(graph.asset_nodes, key=lambda n: n.key.to_user_string()):
        assets[node.key.to_user_string()] = (
            node.group_name,
            describe_partitions(node.partitions_def),
            sorted(k.to_user_string() for k in node.parent_keys),
            node.is_materializable,
            describe_condition(node.automation_condition),
        )
    checks: dict[str, dict[str, bool]] = {}
    for key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        checks.setdefault(key.asset_key.to_user_string(), {})[key.name] = graph.get(key).blocking
    return {
        "executor": defs.executor.name if defs.executor else None,
        "resources": sorted(defs.resources or {}),
        "assets": assets,
        "checks": checks,
        "jobs": {
            job.name: sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
            for job in sorted(repository.get_all_jobs(), key=lambda j: j.name)
            if not job.name.startswith("__")
        },
        "sensors": {
            s.name: (s.minimum_interval_seconds, s.default_status.value, targets(s, graph))
            for s in sorted(repository.sensor_defs, key=lambda s: s.name)
        },
        "schedules": {
            s.name: (s.cron_schedule, s.job_name, s.execution_timezone, s.default_status.value)
            for s in sorted(repository.schedule_defs, key=lambda s: s.name)
        },
    }


VARIANTS: dict[str, dict[str, Any]] = {
    "sensor_only_sharded": {"domains_enabled": ["sensor"], "drain_shards": 2},
    "device_lab_k8s": {"domains_enabled": ["device", "lab"], "backfill_executor": "k8s"},
    "all_k8s": {"backfill_executor": "k8s"},
}


def summary(found: dict[str, Any]) -> dict[str, Any]:
    """The names of a listing: what a variant of the settings adds or leaves out."""
    return {
        "assets": sorted(found["assets"]),
        "checks": sum(len(checks) for checks in found["checks"].values()),
        "jobs": found["jobs"],
        "sensors": sorted(found["sensors"]),
        "schedules": sorted(found["schedules"]),
    }


EXPECTED = {
    "executor": "in_process",
    "resources": ["db", "kafka"],
    "assets": {
        "analytics_spec_limits": ("analytics", None, [], False, None),
        "daily_event_rollups": (
            "analytics",
            "daily 2024-01-01 +0 UTC",
            ["device_health_events", "lab_result_quality", "sweep_batch_quality"],
            True,
            "day complete or its hours changed (within 2 days, 0:00:00; failed runs retried)",
        ),
        "daily_machine_kpis": (
            "energy",
            "daily 2024-01-01 +0 UTC",
            ["energy_baseline_models", "hourly_machine_kpis"],
            True,
            "an hour of the day recomputed after it (within 2 days, 0:00:00; failed runs retried)",
        ),
        "device_health_events": (
            "analytics",
            "hourly 2024-01-01-00:00 +1 UTC",
            ["raw_device_health"],
            True,
            "hourly inputs changed (within 2 days, 0:00:00; failed runs retried)",
        ),
        "energy_baseline_models": ("energy", None, ["hourly_machine_kpis"], True, None),
        # issue 25: forecasts once the day's KPIs are in
        "energy_forecasts": (
            "energy",
            "daily 2024-01-01 +0 UTC",
            ["daily_machine_kpis"],
            True,
            "the day's KPIs are in",
        ),
        "hourly_machine_kpis": (
            "energy",
            "hourly 2024-01-01-00:00 +0 UTC",
            ["plant_metadata", "raw_device_health", "raw_sensor_readings"],
            True,
            "OR(hourly inputs changed (within 2 days, 0:00:00; failed runs retried), "
            "the hour's closing readings have landed)",
        ),
        "kafka_landing": ("ingest", None, [], False, None),
        "lab_result_quality": (
            "analytics",
            "hourly 2024-01-01-00:00 +1 UTC",
            ["analytics_spec_limits", "raw_lab_results"],
            True,
            "hourly inputs changed (within 2 days, 0:00:00; failed runs retried)",
        ),
        "lab_window_aggregates": (
            "analytics",
            "hourly 2024-01-01-00:00 +1 UTC",
            ["raw_lab_results"],
            True,
            "hourly inputs changed (within 2 days, 0:00:00; failed runs retried)",
        ),
        "plant_metadata": ("energy", None, [], False, None),
        "raw_device_health": ("ingest", "hourly 2024-01-01-00:00 +1 UTC", ["kafka_landing"], True, None),
        "raw_lab_results": ("ingest", "hourly 2024-01-01-00:00 +1 UTC", ["kafka_landing"], True, None),
        "raw_sensor_readings": ("ingest", "hourly 2024-01-01-00:00 +1 UTC", ["kafka_landing"], True, None),
        "raw_sweep_readings": ("ingest", "hourly 2024-01-01-00:00 +1 UTC", ["kafka_landing"], True, None),
        "reading_anomalies": (
            "energy",
            "hourly 2024-01-01-00:00 +0 UTC",
            [
                "energy_baseline_models",
                "hourly_machine_kpis",
                "raw_device_health",
                "raw_sensor_readings",
                "sensor_window_aggregates",
            ],
            True,
            None,
        ),
        "sensor_window_aggregates": (
            "analytics",
            "hourly 2024-01-01-00:00 +1 UTC",
            ["raw_sensor_readings"],
            True,
            "hourly inputs changed (within 2 days, 0:00:00; failed runs retried)",
        ),
        "series_trends": (
            "energy",
            "hourly 2024-01-01-00:00 +0 UTC",
            ["hourly_machine_kpis", "sensor_window_aggregates"],
            True,
            None,
        ),
        "sweep_batch_quality": (
            "analytics",
            "hourly 2024-01-01-00:00 +1 UTC",
            ["analytics_spec_limits", "raw_sweep_readings"],
            True,
            "hourly inputs changed (within 2 days, 0:00:00; failed runs retried)",
        ),
    },
    "checks": {
        "daily_event_rollups": {
            "freshness_check": False,
            "reconciliation": True,
            "result_ranges": False,
            "schema": True,
            "unique_keys": True,
        },
        "daily_machine_kpis": {"freshness_check": False, "result_ranges": False, "schema": True, "unique_keys": True},
        "energy_forecasts": {"result_ranges": False, "schema": True, "unique_keys": True},
        "device_health_events": {
            "freshness_check": False,
            "reconciliation": True,
            "result_ranges": False,
            "schema": True,
            "unique_keys": True,
        },
        "energy_baseline_models": {
            "freshness_check": False,
            "result_ranges": False,
            "schema": True,
            "unique_keys": True,
        },
        "hourly_machine_kpis": {"freshness_check": False, "result_ranges": False, "schema": True, "unique_keys": True},
        "lab_result_quality": {"reconciliation": True, "result_ranges": False, "schema": True, "unique_keys": True},
        "lab_window_aggregates": {"reconciliation": True, "result_ranges": False, "schema": True, "unique_keys": True},
        "raw_device_health": {
            "freshness_check": False,
            "keys_not_null": True,
            "reject_ratio": False,
            "time_in_partition": True,
            "values_finite": True,
        },
        "raw_lab_results": {
            "freshness_check": False,
            "keys_not_null": True,
            "reject_ratio": False,
            "time_in_partition": True,
            "values_finite": True,
        },
        "raw_sensor_readings": {
            "completeness": False,
            "freshness_check": False,
            "keys_not_null": True,
            "reject_ratio": False,
            "time_in_partition": True,
            "units_match": True,
            "values_finite": True,
            "values_in_range": True,
        },
        "raw_sweep_readings": {
            "freshness_check": False,
            "keys_not_null": True,
            "reject_ratio": False,
            "time_in_partition": True,
            "units_match": True,
            "values_finite": True,
            "values_in_range": True,
        },
        "reading_anomalies": {"freshness_check": False, "result_ranges": False, "schema": True, "unique_keys": True},
        "sensor_window_aggregates": {
            "freshness_check": False,
            "reconciliation": True,
            "result_ranges": False,
            "schema": True,
            "unique_keys": True,
        },
        "series_trends": {"result_ranges": False, "schema": True, "unique_keys": True},
        "sweep_batch_quality": {"reconciliation": True, "result_ranges": False, "schema": True, "unique_keys": True},
    },
    "jobs": {
        "anomalies_job": ["reading_anomalies"],
        "baseline_training_job": ["energy_baseline_models"],
        "daily_kpis_job": ["daily_machine_kpis"],
        "trends_job": ["series_trends"],
        "window_aggregates_live": ["sensor_window_aggregates"],
    },
    "sensors": {
        "aggregates_automation": (5, "RUNNING", ["sensor_window_aggregates"]),
        "alert_rules": (2, "RUNNING", None),  # ALERT_INTERVAL_S: live conditions alert within seconds (issue 22)
        "analytics_automation": (
            30,
            "RUNNING",
            [
                "daily_event_rollups",
                "daily_machine_kpis",
                "device_health_events",
                "energy_baseline_models",
                "energy_forecasts",
                "hourly_machine_kpis",
                "lab_result_quality",
                "lab_window_aggregates",
                "raw_device_health",
                "raw_lab_results",
                "raw_sensor_readings",
                "raw_sweep_readings",
                "reading_anomalies",
                "series_trends",
                "sweep_batch_quality",
            ],
        ),
        "drain_device": (5, "RUNNING", None),
        "drain_lab": (5, "RUNNING", None),
        "drain_sensor": (5, "RUNNING", None),
        "drain_sweep": (5, "RUNNING", None),
        "freshness_checks_sensor": (60, "RUNNING", []),
        # the live judges (limits, lab, sweep, closed seasonal samples; issue 22), every 2 s
        "live_anomalies": (2, "RUNNING", None),
        "raw_rederivations": (30, "RUNNING", None),
    },
    "schedules": {
        "anomalies_schedule": ("10 * * * *", "anomalies_job", "UTC", "RUNNING"),
        "baseline_training_schedule": ("0 3 * * 1", "baseline_training_job", "UTC", "RUNNING"),
        "daily_kpis_schedule": ("30 0 * * *", "daily_kpis_job", "UTC", "RUNNING"),
        "trends_schedule": ("25 * * * *", "trends_job", "UTC", "RUNNING"),
    },
}

VARIANT_SUMMARIES = {
    "sensor_only_sharded": {
        "assets": [
            "daily_machine_kpis",
            "energy_baseline_models",
            "energy_forecasts",
            "hourly_machine_kpis",
            "kafka_landing",
            "plant_metadata",
            "raw_sensor_readings",
            "reading_anomalies",
            "sensor_window_aggregates",
            "series_trends",
        ],
        "checks": 35,
        "jobs": {
            "anomalies_job": ["reading_anomalies"],
            "baseline_training_job": ["energy_baseline_models"],
            "daily_kpis_job": ["daily_machine_kpis"],
            "trends_job": ["series_trends"],
            "window_aggregates_live": ["sensor_window_aggregates"],
        },
        "sensors": [
            "aggregates_automation",
            "alert_rules",
            "analytics_automation",
            "drain_sensor_shard_0",
            "drain_sensor_shard_1",
            "freshness_checks_sensor",
            "live_anomalies",
            "raw_rederivations",
        ],
        "schedules": ["anomalies_schedule", "baseline_training_schedule", "daily_kpis_schedule", "trends_schedule"],
    },
    "device_lab_k8s": {
        "assets": [
            "analytics_spec_limits",
            "daily_event_rollups",
            "device_health_events",
            "kafka_landing",
            "lab_result_quality",
            "lab_window_aggregates",
            "raw_device_health",
            "raw_lab_results",
        ],
        "checks": 28,
        "jobs": {
            "k8s_backfill_analytics_daily": ["daily_event_rollups"],
            "k8s_backfill_analytics_hourly": ["device_health_events", "lab_result_quality", "lab_window_aggregates"],
        },
        "sensors": [
            "alert_rules",
            "analytics_automation",
            "drain_device",
            "drain_lab",
            "freshness_checks_sensor",
            "live_anomalies",
            "raw_rederivations",
        ],
        "schedules": [],
    },
    "all_k8s": {
        "assets": [
            "analytics_spec_limits",
            "daily_event_rollups",
            "daily_machine_kpis",
            "device_health_events",
            "energy_baseline_models",
            "energy_forecasts",
            "hourly_machine_kpis",
            "kafka_landing",
            "lab_result_quality",
            "lab_window_aggregates",
            "plant_metadata",
            "raw_device_health",
            "raw_lab_results",
            "raw_sensor_readings",
            "raw_sweep_readings",
            "reading_anomalies",
            "sensor_window_aggregates",
            "series_trends",
            "sweep_batch_quality",
        ],
        "checks": 74,
        "jobs": {
            "anomalies_job": ["reading_anomalies"],
            "baseline_training_job": ["energy_baseline_models"],
            "daily_kpis_job": ["daily_machine_kpis"],
            "trends_job": ["series_trends"],
            "window_aggregates_live": ["sensor_window_aggregates"],
            "k8s_backfill_analytics_daily": ["daily_event_rollups"],
            "k8s_backfill_analytics_hourly": [
                "device_health_events",
                "lab_result_quality",
                "lab_window_aggregates",
                "sensor_window_aggregates",
                "sweep_batch_quality",
            ],
            "k8s_backfill_energy_daily": ["daily_machine_kpis", "energy_forecasts"],
            "k8s_backfill_energy_hourly": ["hourly_machine_kpis", "reading_anomalies", "series_trends"],
        },
        "sensors": [
            "aggregates_automation",
            "alert_rules",
            "analytics_automation",
            "drain_device",
            "drain_lab",
            "drain_sensor",
            "drain_sweep",
            "freshness_checks_sensor",
            "live_anomalies",
            "raw_rederivations",
        ],
        "schedules": ["anomalies_schedule", "baseline_training_schedule", "daily_kpis_schedule", "trends_schedule"],
    },
}


def test_the_default_definitions_are_what_the_ui_showed_before() -> None:
    assert listing(build_definitions(PlatformSettings(), secrets_from_env=False)) == EXPECTED


def test_domains_shards_and_executors_change_only_what_they_enable() -> None:
    for name, overrides in VARIANTS.items():
        found = listing(build_definitions(PlatformSettings(**overrides), secrets_from_env=False))
        assert summary(found) == VARIANT_SUMMARIES[name], name


SPECS = {dg.AssetKey("kafka_landing"), dg.AssetKey("analytics_spec_limits")}


def test_each_build_partitions_from_its_own_start() -> None:
    """Partitions come from the settings passed in, not from the process's environment: two builds
    with different PARTITIONS_START each get their own, and within a build the hourly assets' partitions
    still equal their raw inputs' (Dagster compares them by value)."""
    starts = {"early": datetime(2023, 6, 1, tzinfo=UTC), "late": datetime(2025, 3, 2, 5, tzinfo=UTC)}
    graphs = {
        name: build_definitions(PlatformSettings(partitions_start=start), secrets_from_env=False).resolve_asset_graph()
        for name, start in starts.items()
    }
    for name, graph in graphs.items():
        day, hour = starts[name].strftime("%Y-%m-%d"), starts[name].strftime("%Y-%m-%d-%H:%M")
        partitions = {n.key.to_user_string(): describe_partitions(n.partitions_def) for n in graph.asset_nodes}
        assert partitions == {
            **dict.fromkeys(["kafka_landing", "analytics_spec_limits", "plant_metadata", "energy_baseline_models"]),
            **dict.fromkeys(
                [
                    "raw_sensor_readings",
                    "raw_device_health",
                    "raw_sweep_readings",
                    "raw_lab_results",
                    "sensor_window_aggregates",
                    "device_health_events",
                    "sweep_batch_quality",
                    "lab_result_quality",
                    "lab_window_aggregates",
                ],
                f"hourly {hour} +1 UTC",
            ),
            **dict.fromkeys(["hourly_machine_kpis", "reading_anomalies", "series_trends"], f"hourly {hour} +0 UTC"),
            **dict.fromkeys(["daily_event_rollups", "daily_machine_kpis", "energy_forecasts"], f"daily {day} +0 UTC"),
        }, name
        for node in graph.asset_nodes:
            if describe_partitions(node.partitions_def) == f"hourly {hour} +1 UTC":
                # the raw parent of an hourly asset: a separate instance, equal by value
                assert all(graph.get(p).partitions_def == node.partitions_def for p in node.parent_keys - SPECS), node


def test_every_asset_folder_declares_what_it_materialises() -> None:
    """The declarations freshness entries are checked against (`materialised_keys`) are exactly what
    the folders build with every domain enabled."""
    every_domain = PlatformSettings(domains_enabled=sorted(registry().contracts))
    graph = build_definitions(every_domain, secrets_from_env=False).resolve_asset_graph()
    declared = [key for folder in ASSET_FOLDERS for key in folder.materialised_keys()]
    assert len(declared) == len(set(declared))
    assert set(declared) == set(graph.materializable_asset_keys)


def test_the_definitions_read_no_settings_when_imported() -> None:
    """Only the entry points (definitions.py, drain_definitions.py) read the environment: every module
    under defs/ imports with a PARTITIONS_START that cannot be parsed; the entry point then fails on it."""
    env = {**os.environ, "PARTITIONS_START": "not a time", "PYTHONWARNINGS": "ignore"}
    import_all = (
        "import importlib, pkgutil, analytics_platform.defs as d\n"
        "names = [m.name for m in pkgutil.walk_packages(d.__path__, 'analytics_platform.defs.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))"
    )
    defs = subprocess.run([sys.executable, "-c", import_all], env=env, capture_output=True, text=True, check=False)
    assert (defs.returncode, defs.stderr) == (0, "")
    assert int(defs.stdout) > 20  # the folders and their modules, not an empty walk
    entry = subprocess.run(
        [sys.executable, "-c", "import analytics_platform.definitions"], env=env, capture_output=True, text=True
    )
    assert entry.returncode == 1
    assert "partitions_start" in entry.stderr
