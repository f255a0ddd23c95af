"""Data contracts end to end: known readings through the real broker, one drain tick, Dagster's
own materialisation. An out-of-range reading fails `values_in_range` live (a runless evaluation
right after the tick) and again when its hour is materialised, where the check blocks: the raw
materialisation is recorded, the aggregates of that hour are not computed. A clean hour passes
every check, reconciliation included."""

from __future__ import annotations

import dagster as dg

from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.readings import KEY, reading
from analytics_platform_tests.support.stack import DatabaseHandle, domain_topic, produce

RAW = dg.AssetKey("raw_sensor_readings")
AGG = dg.AssetKey("sensor_window_aggregates")
BAD_HOUR, GOOD_HOUR = "2025-08-20-03:00", "2025-08-20-04:00"
MESSAGES = [
    reading("2025-08-20T03:00:00Z", 21.0, "r1", unit="degC"),
    reading("2025-08-20T03:00:30Z", 5000.0, "r2", unit="degC"),  # a plausible-looking JSON, 5000 degC
    reading("2025-08-20T03:01:00Z", 70.0, "r3", unit="degF"),  # the right range, the wrong unit
    reading("2025-08-20T04:00:00Z", 20.0, "g1", unit="degC"),
    reading("2025-08-20T04:00:30Z", 22.0, "g2"),  # no unit: the canonical one
    reading("2025-08-20T04:01:00Z", 24.0, "g3", unit="degC"),
    reading("2025-08-20T04:05:10Z", 26.0, "g4", unit="degC"),
]
SERIES = {"tenant_id": "t1", "factory_id": "f1", "machine_id": "mc-01", "sensor_id": "s-001", "metric": "temp"}


def tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, dg.AssetCheckEvaluation]:
    """One drain_sensor tick, recorded as the daemon records it; its check evaluations by name."""
    sensor = defs.resolve_sensor_def("drain_sensor")
    result = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return {e.check_name: e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)}


def evaluations(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == key}


def latest_check_status(instance: dg.DagsterInstance, name: str) -> str:
    check_key = dg.AssetCheckKey(RAW, name)
    summary = instance.event_log_storage.get_asset_check_summary_records([check_key])[check_key]
    return summary.last_check_execution_record.status.value


def test_an_out_of_range_reading_fails_live_then_blocks_its_hour_and_a_clean_hour_passes(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    produce(settings.kafka_brokers, domain_topic(settings, "sensor"), [(KEY, m) for m in MESSAGES])

    # live: the drain tick reports the failure with the offending reading, before any run
    live = tick(defs, instance)
    values, units = live["values_in_range"], live["units_match"]
    assert (values.passed, values.severity, values.blocking) == (False, dg.AssetCheckSeverity.ERROR, True)
    assert values.metadata["partitions"].value == [BAD_HOUR, GOOD_HOUR]
    assert values.metadata["failing_partitions"].value == {
        BAD_HOUR: {
            "rows": 3,
            "unexpected": 1,
            "offending": [
                {
                    "time": "2025-08-20T03:00:30+00:00",
                    **SERIES,
                    "value": 5000.0,
                    "min_value": -60.0,
                    "max_value": 400.0,
                    "unit": "degC",
                }
            ],
        }
    }
    assert not units.passed
    assert units.metadata["failing_partitions"].value[BAD_HOUR]["offending"] == [
        {"time": "2025-08-20T03:01:00+00:00", **SERIES, "unit": "degF", "canonical_unit": "degC"}
    ]
    assert latest_check_status(instance, "values_in_range") == "FAILED"
    assert database.scalar("SELECT count(*) FROM analytics.raw_sensor_readings") == 7  # accepted by the contract

    # materialising the bad hour: the raw partition is recorded, its blocking check fails, and the
    # aggregates of the hour do not run
    assets = [defs.resolve_assets_def("raw_sensor_readings"), defs.resolve_assets_def("sensor_window_aggregates")]
    bad = dg.materialize(assets, partition_key=BAD_HOUR, instance=instance, raise_on_error=False)
    assert not bad.success
    assert [m.partition for m in bad.asset_materializations_for_node("raw_sensor_readings")] == [BAD_HOUR]
    assert bad.asset_materializations_for_node("sensor_window_aggregates") == []
    raw_checks = evaluations(bad, RAW)
    assert {name: e.passed for name, e in raw_checks.items()} == {
        "keys_not_null": True,
        "time_in_partition": True,
        "values_finite": True,
        "reject_ratio": True,
        "values_in_range": False,
        "units_match": False,
        "completeness": False,  # three readings of a series expected every 10 s (a warning)
    }
    (above,) = raw_checks["values_in_range"].metadata["failures"].value
    assert above["partial_unexpected_list"] == [[400.0, 5000.0]]
    assert above["offending"] == [{"time": "2025-08-20T03:00:30+00:00", **SERIES, "max_value": 400.0, "value": 5000.0}]
    assert raw_checks["completeness"].severity == dg.AssetCheckSeverity.WARN
    # the raw step failed on its blocking checks after recording the materialization; the
    # aggregates step never started
    started = [e.step_key for e in bad.all_events if e.event_type == dg.DagsterEventType.STEP_START]
    assert started == ["raw_sensor_readings"]
    (failure,) = [e for e in bad.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "raw_sensor_readings"
    assert failure.step_failure_data.error.cls_name == "DagsterAssetCheckFailedError"
    assert database.scalar("SELECT count(*) FROM analytics.analytics_agg") == 0
    assert instance.get_materialized_partitions(AGG) == set()

    # a clean hour: every check passes (completeness only warns) and the aggregates reconcile
    good = dg.materialize(assets, partition_key=GOOD_HOUR, instance=instance)
    assert good.success
    assert {n: e.passed for n, e in evaluations(good, RAW).items() if n in ("values_in_range", "units_match")} == {
        "values_in_range": True,
        "units_match": True,
    }
    agg_checks = evaluations(good, AGG)
    assert {name: e.passed for name, e in agg_checks.items()} == {
        "schema": True,
        "unique_keys": True,
        "reconciliation": True,
        "result_ranges": True,
    }
    # 60 s buckets 04:00 (2), 04:01 (1), 04:05 (1) add up to 300 s 04:00 (3), 04:05 (1) and 3600 s (4)
    assert agg_checks["reconciliation"].metadata["rows"].value == 3
    assert database.query(
        "SELECT window_s, count(*), sum(count_n) FROM analytics.analytics_agg GROUP BY 1 ORDER BY 1"
    ) == [(60, 3, 4), (300, 2, 4), (3600, 1, 4)]
    assert instance.get_materialized_partitions(AGG) == {GOOD_HOUR}
