"""Through Dagster's own APIs: the drain sensor reports partitions and checks, and materialising raw
partitions (one, or a range in one run) re-derives exactly the rows live ingest wrote."""

from __future__ import annotations

import json

import dagster as dg

from analytics_platform.defs import build_definitions
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support import dataset
from analytics_platform_tests.support.dataset import produce_dataset
from analytics_platform_tests.support.stack import DatabaseHandle, produce

RAW = dg.AssetKey("raw_sensor_readings")
ROWS = (
    "SELECT time, dedup_key, tenant_id, factory_id, machine_id, sensor_id, metric, value, unit, payload::text, "
    "event_id, schema_version, topic, kafka_partition, kafka_offset FROM analytics.raw_sensor_readings "
    "ORDER BY time, dedup_key"
)


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    """Evaluate the sensor and record its events the way the daemon does."""
    sensor = defs.resolve_sensor_def("drain_sensor")
    result = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def materializations(result: dg.SensorResult) -> dict[str, dict]:
    return {
        e.partition: {k: v.value for k, v in e.metadata.items()}
        for e in result.asset_events
        if isinstance(e, dg.AssetMaterialization) and e.asset_key == RAW
    }


def test_sensor_reports_partitions_metadata_and_checks(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    produce_dataset(settings)
    result = tick(defs, instance)

    reported = materializations(result)
    assert sorted(reported) == ["2025-08-20-01:00", "2025-08-20-02:00", "2025-08-20-03:00"]
    assert {p: (m["rows"], m["rejects"]) for p, m in reported.items()} == {
        "2025-08-20-01:00": (1, 0),
        "2025-08-20-02:00": (1, 0),
        "2025-08-20-03:00": (6, 7),
    }
    hour3 = reported["2025-08-20-03:00"]
    assert hour3["min_time"] == "2025-08-20T03:05:00+00:00"
    assert hour3["max_time"] == "2025-08-20T03:30:00+00:00"
    assert hour3["reject_reasons"] == {
        "invalid_value": 1,
        "missing_field": 1,
        "non_finite": 2,
        "unknown_metric": 1,
        "unsupported_schema_version": 1,
        "wrong_type": 1,
    }
    assert hour3["ingest_lag_s"] >= 0

    landing = next(e for e in result.asset_events if isinstance(e, dg.AssetMaterialization) and e.partition is None)
    assert landing.asset_key == dg.AssetKey("kafka_landing")
    assert landing.metadata["messages"].value == dataset.TOTAL
    assert landing.metadata["rejects_without_time"].value == 7  # 5, 6, 11, 12, 13 (2099), 16 and p2:1
    checks = {e.check_name: e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)}
    assert {name: c.passed for name, c in checks.items()} == {
        "keys_not_null": True,
        "time_in_partition": True,
        "values_finite": True,
        "reject_ratio": False,  # 7 of 13 messages in hour 03 were rejected
        "values_in_range": True,
        "units_match": True,
    }
    # a failing check that does not block downstream reports as a warning
    assert checks["reject_ratio"].severity == dg.AssetCheckSeverity.WARN
    assert list(checks["reject_ratio"].metadata["failing_partitions"].value) == ["2025-08-20-03:00"]

    # Dagster recorded it: partition status and the latest materialization per partition
    status = instance.get_materialized_partitions(RAW)
    assert status == {"2025-08-20-01:00", "2025-08-20-02:00", "2025-08-20-03:00"}

    # a second tick with new data for an already reported hour is recorded too
    topic = settings.kafka_topic_prefix + "sensors.device.readings"
    produce(settings.kafka_brokers, topic, [(dataset.KEY, dataset.reading("2025-08-20T03:40:00Z", 9.0))])
    second = tick(defs, instance, cursor=result.cursor)
    assert {p: m["rows"] for p, m in materializations(second).items()} == {"2025-08-20-03:00": 1}
    third = tick(defs, instance, cursor=second.cursor)
    assert third.asset_events == [] and third.skip_reason is not None


def test_sensor_holds_back_hours_that_are_not_partitions_yet(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """Data up to CONTRACT_MAX_FUTURE_S ahead of the clock is valid, but its hour has no
    partition yet: the sensor keeps it in its cursor instead of losing or mis-reporting it."""
    from datetime import UTC, datetime, timedelta

    ahead = (datetime.now(UTC) + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    value = dataset.reading(ahead.strftime("%Y-%m-%dT%H:%M:%SZ"), 1.0)
    settings_far = settings.model_copy(update={"contract_max_future_s": 7200})
    far_defs = build_definitions(settings_far, secrets_from_env=False)
    produce(settings.kafka_brokers, settings.kafka_topic_prefix + "sensors.device.readings", [(dataset.KEY, value)])
    result = tick(far_defs, instance)
    assert materializations(result) == {}
    pending = json.loads(result.cursor)["pending"]
    assert list(pending) == [ahead.strftime("%Y-%m-%d-%H:%M")]
    assert pending[ahead.strftime("%Y-%m-%d-%H:%M")]["metadata"]["rows"] == 1
    assert database.scalar("SELECT count(*) FROM analytics.raw_sensor_readings") == 1


def test_materializing_partitions_rederives_exactly_what_live_ingest_wrote(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    produce_dataset(settings)
    tick(defs, instance)
    live = database.query(ROWS)
    assert len(live) == len(dataset.EXPECTED_ROWS)

    raw_asset = defs.get_assets_def(RAW)
    resources = defs.resources

    # one partition: results replaced, not doubled, and equal to live ingest
    result = dg.materialize([raw_asset], partition_key="2025-08-20-03:00", resources=resources, instance=instance)
    assert result.success
    assert database.query(ROWS) == live
    metadata = result.asset_materializations_for_node(raw_asset.node_def.name)[0].metadata
    assert (metadata["rows"].value, metadata["rejects"].value, metadata["rows_replaced"].value) == (6, 7, 6)
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {
        "keys_not_null": True,
        "time_in_partition": True,
        "values_finite": True,
        "reject_ratio": False,
        "values_in_range": True,
        "units_match": True,
        "completeness": False,  # a handful of readings, not one per 10 s of every series
    }

    # the raw table lost rows (someone deleted them): re-materialising restores them from landing
    database.query("DELETE FROM analytics.raw_sensor_readings WHERE time >= '2025-08-20T03:00Z' RETURNING 1")
    assert database.scalar("SELECT count(*) FROM analytics.raw_sensor_readings") == 2
    assert dg.materialize([raw_asset], partition_key="2025-08-20-03:00", resources=resources, instance=instance).success
    assert database.query(ROWS) == live

    # a range in one run (single-run backfill policy), twice: still exactly the live rows
    for _ in range(2):
        ranged = dg.materialize(
            [raw_asset],
            resources=resources,
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "2025-08-20-00:00",
                "dagster/asset_partition_range_end": "2025-08-20-04:00",
            },
        )
        assert ranged.success
        assert database.query(ROWS) == live
    assert instance.get_materialized_partitions(RAW) >= {
        "2025-08-20-00:00",
        "2025-08-20-01:00",
        "2025-08-20-02:00",
        "2025-08-20-03:00",
        "2025-08-20-04:00",
    }
