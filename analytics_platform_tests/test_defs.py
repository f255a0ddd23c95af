"""The whole Definitions loads, and every asset, check and sensor of the foundation is there."""

from __future__ import annotations

import dagster as dg

from analytics_platform.definitions import defs

RAW_ASSETS = {"raw_sensor_readings", "raw_device_health", "raw_sweep_readings", "raw_lab_results"}
CHECKS = {"keys_not_null", "time_in_partition", "values_finite", "reject_ratio"}


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)


def test_assets_checks_and_sensors_are_all_there() -> None:
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == RAW_ASSETS | {"kafka_landing"}
    assert {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys} == {
        (asset, check) for asset in RAW_ASSETS for check in CHECKS
    }
    repository = defs.get_repository_def()
    assert {s.name for s in repository.sensor_defs} == {"drain_sensor", "drain_device", "drain_sweep", "drain_lab"}
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


def test_resources_come_from_the_environment_not_from_code() -> None:
    resources = defs.resources
    assert set(resources) == {"db", "kafka"}
    # the database URL is an EnvVar reference, resolved at run time, never a literal
    assert resources["db"].url == dg.EnvVar("DATABASE_URL")
