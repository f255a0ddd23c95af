"""The whole Definitions loads, and every asset, check and sensor of the foundation is there."""

from __future__ import annotations

import dagster as dg

from analytics_platform.contracts.registry import registry
from analytics_platform.definitions import defs

# one raw asset and one drain sensor per registered domain (the registry pins the four: test_registry_settings)
RAW_ASSETS = {c.raw_table for c in registry().contracts.values()}
DRAINS = {f"drain_{domain}" for domain in registry().contracts}
CHECKS = {"keys_not_null", "time_in_partition", "values_finite", "reject_ratio"}
# data contracts beyond the four raw-contract checks; blocking ones map to True
RAW_CONTRACTS = {
    "raw_sensor_readings": {"values_in_range": True, "units_match": True, "completeness": False},
    "raw_sweep_readings": {"values_in_range": True, "units_match": True},
    "raw_device_health": {},
    "raw_lab_results": {},
}
RESULT_CONTRACTS = {
    # asset: {check: blocking}; schema, keys and reconciliation block, derived ranges and freshness warn
    **{
        name: {"schema": True, "unique_keys": True, "reconciliation": True, "result_ranges": False}
        for name in (
            "sensor_window_aggregates",
            "device_health_events",
            "sweep_batch_quality",
            "lab_result_quality",
            "lab_window_aggregates",
            "daily_event_rollups",
        )
    },
    **{
        name: {"schema": True, "unique_keys": True, "result_ranges": False}
        for name in (
            "hourly_machine_kpis",
            "daily_machine_kpis",
            "energy_baseline_models",
            "reading_anomalies",
            "series_trends",
            "energy_forecasts",
        )
    },
}
FRESHNESS = RAW_ASSETS | {
    "sensor_window_aggregates",
    "device_health_events",
    "hourly_machine_kpis",
    "reading_anomalies",
    "daily_event_rollups",
    "daily_machine_kpis",
    "energy_baseline_models",
}
HOURLY_ANALYTICS = {
    "sensor_window_aggregates": {"raw_sensor_readings"},
    "device_health_events": {"raw_device_health"},
    "sweep_batch_quality": {"raw_sweep_readings", "analytics_spec_limits"},
    "lab_result_quality": {"raw_lab_results", "analytics_spec_limits"},
    "lab_window_aggregates": {"raw_lab_results"},
}
ENERGY_ASSETS = {
    "plant_metadata": set(),
    "hourly_machine_kpis": {"raw_sensor_readings", "raw_device_health", "plant_metadata"},
    "daily_machine_kpis": {"hourly_machine_kpis", "energy_baseline_models"},
    "energy_baseline_models": {"hourly_machine_kpis"},
    "reading_anomalies": {
        "raw_sensor_readings",
        "raw_device_health",
        "sensor_window_aggregates",
        "hourly_machine_kpis",
        "energy_baseline_models",
    },
    "series_trends": {"sensor_window_aggregates", "hourly_machine_kpis"},
    "energy_forecasts": {"daily_machine_kpis"},
}


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)


def test_assets_checks_and_sensors_are_all_there() -> None:
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == RAW_ASSETS | set(HOURLY_ANALYTICS) | {
        "kafka_landing",
        "analytics_spec_limits",
        "daily_event_rollups",
        *ENERGY_ASSETS,
    }
    raw_checks = {
        (k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys if k.asset_key.path[0] in RAW_ASSETS
    }
    assert raw_checks == {(asset, check) for asset in RAW_ASSETS for check in CHECKS} | {
        (asset, check) for asset, checks in RAW_CONTRACTS.items() for check in [*checks, "freshness_check"]
    }
    repository = defs.get_repository_def()
    assert {s.name for s in repository.sensor_defs} == DRAINS | {
        "raw_rederivations",
        "analytics_automation",
        "aggregates_automation",
        "freshness_checks_sensor",
        "alert_rules",
        "live_anomalies",
    }
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in repository.sensor_defs)


def test_raw_assets_are_hourly_utc_with_the_current_hour_open() -> None:
    graph = defs.resolve_asset_graph()
    for name in RAW_ASSETS:
        node = graph.get(dg.AssetKey(name))
        partitions = node.partitions_def
        assert isinstance(partitions, dg.HourlyPartitionsDefinition)
        assert partitions.timezone == "UTC"
        assert partitions.end_offset == 1
        assert node.parent_keys == {dg.AssetKey("kafka_landing")}
        assert node.group_name == "ingest"


def test_analytics_assets_follow_their_raw_partitions_and_days_follow_hours() -> None:
    graph = defs.resolve_asset_graph()
    for name, parents in HOURLY_ANALYTICS.items():
        node = graph.get(dg.AssetKey(name))
        assert node.partitions_def == graph.get(dg.AssetKey("raw_sensor_readings")).partitions_def
        assert {k.to_user_string() for k in node.parent_keys} == parents
        assert node.group_name == "analytics"
        assert node.automation_condition is not None
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
    daily = graph.get(dg.AssetKey("daily_event_rollups"))
    assert isinstance(daily.partitions_def, dg.DailyPartitionsDefinition)
    assert daily.partitions_def.end_offset == 0  # a day exists once it has ended
    # the event assets' hours, not the window aggregates (sensor or lab): those have no day rollup asset
    windowed = {"sensor_window_aggregates", "lab_window_aggregates"}
    assert {k.to_user_string() for k in daily.parent_keys} == set(HOURLY_ANALYTICS) - windowed


def test_resources_come_from_the_environment_not_from_code() -> None:
    resources = defs.resources
    assert set(resources) == {"db", "kafka"}
    # the database URL is an EnvVar reference, resolved at run time, never a literal
    assert resources["db"].url == dg.EnvVar("DATABASE_URL")


def test_energy_assets_lineage_partitions_and_schedules() -> None:
    graph = defs.resolve_asset_graph()
    for name, parents in ENERGY_ASSETS.items():
        node = graph.get(dg.AssetKey(name))
        assert {k.to_user_string() for k in node.parent_keys} == parents, name
    for name in ("hourly_machine_kpis", "reading_anomalies", "series_trends"):
        partitions = graph.get(dg.AssetKey(name)).partitions_def
        # whole hours only: the running hour has no partition
        assert isinstance(partitions, dg.HourlyPartitionsDefinition) and partitions.end_offset == 0
    assert isinstance(graph.get(dg.AssetKey("daily_machine_kpis")).partitions_def, dg.DailyPartitionsDefinition)
    assert graph.get(dg.AssetKey("energy_baseline_models")).partitions_def is None
    repository = defs.get_repository_def()
    schedules = {s.name: s for s in repository.schedule_defs}
    assert {name: s.cron_schedule for name, s in schedules.items()} == {
        "daily_kpis_schedule": "30 0 * * *",
        "anomalies_schedule": "10 * * * *",
        "baseline_training_schedule": "0 3 * * 1",
        "trends_schedule": "25 * * * *",
    }
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in schedules.values())
    assert schedules["anomalies_schedule"].job_name == "anomalies_job"


def test_every_result_asset_has_its_data_contracts_blocking_as_configured() -> None:
    graph = defs.resolve_asset_graph()
    checks: dict[str, dict[str, bool]] = {}
    for key in graph.asset_check_keys:
        checks.setdefault(key.asset_key.to_user_string(), {})[key.name] = graph.get(key).blocking
    for asset, expected in RESULT_CONTRACTS.items():
        freshness = {"freshness_check": False} if asset in FRESHNESS else {}
        assert checks[asset] == {**expected, **freshness}, asset
    for asset, expected in RAW_CONTRACTS.items():
        base = {"keys_not_null": True, "time_in_partition": True, "values_finite": True, "reject_ratio": False}
        assert checks[asset] == {**base, **expected, "freshness_check": False}, asset
    # every asset that writes rows has checks; only the tables edited by people (specs) have none
    materialized = {k.to_user_string() for k in graph.materializable_asset_keys}
    assert materialized - set(checks) == set()
    assert set(checks) - materialized == set()
