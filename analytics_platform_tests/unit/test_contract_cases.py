"""Contracts are pure: a frame of messages in, typed rows and rejects out, checked by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from analytics_platform.contracts.base import KEY_SEPARATOR, MESSAGE_SCHEMA, ContractConfig
from analytics_platform.contracts.registry import registry

KAFKA_TS = datetime(2025, 8, 20, 3, 30, tzinfo=UTC)
CONFIG = ContractConfig(
    known_metrics=frozenset({"temp", "humidity"}),
    max_future_s=600,
    partitions_start=datetime(2024, 1, 1, tzinfo=UTC),
)
S = KEY_SEPARATOR


def frame(
    values: list[bytes | None],
    partitions: list[int] | None = None,
    offsets: list[int] | None = None,
    kafka_ts: datetime = KAFKA_TS,
) -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame(
        {
            "topic": ["t"] * n,
            "kafka_partition": partitions or [0] * n,
            "kafka_offset": offsets or list(range(n)),
            "kafka_key": [b"k"] * n,
            "kafka_ts": [kafka_ts] * n,
            "value": values,
        },
        schema=MESSAGE_SCHEMA,
    )


def js(**body: object) -> bytes:
    return json.dumps(body).encode()


def sensor(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "time": "2025-08-20T03:12:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "sensor_id": "s1",
        "metric": "temp",
        "value": 23.5,
    }
    body.update(overrides)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse(domain: str, values: list[bytes | None], **kwargs):
    return registry().get(domain).parse(frame(values, **kwargs), CONFIG)


def test_sensor_v1_row_is_typed_and_keyed() -> None:
    result = parse(
        "sensor", [sensor(unit="degC", payload={"source": "edge-01"}), sensor(time="2025-08-20T03:12:00.5+00:00")]
    )
    assert result.rejects.is_empty()
    assert result.rows.schema["time"] == pl.Datetime("us", "UTC")
    assert result.rows.rows(named=True) == [
        {
            "time": utc("2025-08-20T03:12:00Z"),
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "m1",
            "sensor_id": "s1",
            "metric": "temp",
            "value": 23.5,
            "unit": "degC",
            "payload": '{"source": "edge-01"}',
            "event_id": None,
            "schema_version": 1,
            "dedup_key": f"t1{S}f1{S}m1{S}s1{S}temp",
            "topic": "t",
            "kafka_partition": 0,
            "kafka_offset": 0,
        },
        {
            "time": utc("2025-08-20T03:12:00.5Z"),
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "m1",
            "sensor_id": "s1",
            "metric": "temp",
            "value": 23.5,
            "unit": None,
            "payload": None,
            "event_id": None,
            "schema_version": 1,
            "dedup_key": f"t1{S}f1{S}m1{S}s1{S}temp",
            "topic": "t",
            "kafka_partition": 0,
            "kafka_offset": 1,
        },
    ]
    assert result.accepted.to_list() == [True, True]
    assert result.event_time.to_list() == [utc("2025-08-20T03:12:00Z"), utc("2025-08-20T03:12:00.5Z")]


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (b"\xff\xfe", "not_utf8", "message is not valid UTF-8"),
        (b"{nope", "not_json", None),
        (b"", "not_json", None),
        (None, "not_json", "message has no value (tombstone)"),
        (b"[1, 2]", "not_object", "message is a JSON array, not an object"),
        (b'"text"', "not_object", "message is a JSON str, not an object"),
        (sensor(tenant_id=...), "missing_field", "Object missing required field `tenant_id`"),
        (sensor(tenant_id=None), "missing_field", "Expected `str`, got `null` - at `$.tenant_id`"),
        (sensor(machine_id=7), "wrong_type", "Expected `str`, got `int` - at `$.machine_id`"),
        (sensor(value="23.5"), "wrong_type", "Expected `float`, got `str` - at `$.value`"),
        (sensor(value=True), "wrong_type", "Expected `float`, got `bool` - at `$.value`"),
        (sensor().replace(b"23.5", b"NaN"), "non_finite", "NaN or Infinity literal in message"),
        (sensor().replace(b"23.5", b"1e999"), "non_finite", "Number out of range - at `$.value`"),
        (sensor(tenant_id=""), "invalid_value", "Expected `str` of length >= 1 - at `$.tenant_id`"),
        (
            sensor(sensor_id="a\x00b"),
            "invalid_value",
            "sensor_id contains a NUL character (PostgreSQL text cannot store it)",
        ),
        (sensor(payload=[1]), "invalid_value", "payload must be a JSON object"),
        (
            sensor(payload={"a": "\x00"}),
            "invalid_value",
            "payload contains a NUL character (PostgreSQL text cannot store it)",
        ),
        (
            sensor(time="2025-08-20 03:12:00Z"),
            "bad_time",
            "time '2025-08-20 03:12:00Z' is not ISO-8601 UTC (e.g. 2025-08-20T03:12:00Z)",
        ),
        (sensor(time="2025-08-20T10:12:00+07:00"), "bad_time", None),
        (sensor(time="2025-13-20T03:12:00Z"), "bad_time", None),
        (sensor(time="2025-08-20T03:12Z"), "bad_time", None),
        (sensor(time=1755659520), "wrong_type", "Expected `str`, got `int` - at `$.time`"),
        (
            sensor(time="2023-12-31T23:59:59Z"),
            "time_before_partitions",
            "time 2023-12-31T23:59:59Z is before the first partition 2024-01-01T00:00:00+00:00",
        ),
        (sensor(metric="flux"), "unknown_metric", "metric 'flux' is not in the metrics catalogue"),
        (sensor(schema_version=9), "unsupported_schema_version", "schema_version 9 is not one of [1, 2]"),
    ],
)
def test_every_kind_of_bad_sensor_message_is_rejected_with_its_reason(value, reason, detail) -> None:
    result = parse("sensor", [value])
    assert result.rows.is_empty()
    assert result.accepted.to_list() == [False]
    (row,) = result.rejects.rows(named=True)
    assert (row["kafka_partition"], row["kafka_offset"], row["reason"]) == (0, 0, reason)
    if detail is not None:
        assert row["detail"] == detail
    assert row["value"] == value


def test_future_time_is_relative_to_the_kafka_timestamp() -> None:
    limit = KAFKA_TS + timedelta(seconds=600)
    at_limit = sensor(time=limit.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    over = sensor(time=(limit + timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    result = parse("sensor", [at_limit, over])
    assert result.rows.get_column("kafka_offset").to_list() == [0]
    assert result.rejects.select("kafka_offset", "reason").rows() == [(1, "future_time")]
    assert result.rejects.get_column("detail")[0] == (
        "time 2025-08-20T03:40:00.000001Z is more than 600s after the Kafka timestamp 2025-08-20T03:30:00Z"
    )


def test_rejects_keep_a_best_effort_reading_time() -> None:
    result = parse("sensor", [sensor(metric="flux"), sensor(tenant_id=5), b"{nope", sensor(time="yesterday")])
    assert result.event_time.to_list() == [utc("2025-08-20T03:12:00Z"), utc("2025-08-20T03:12:00Z"), None, None]
    assert result.rejects.get_column("event_time").to_list() == result.event_time.to_list()


def test_in_batch_duplicates_keep_the_lowest_coordinate_whatever_the_input_order() -> None:
    first = sensor(value=1.0, event_id="e1")
    second = sensor(value=2.0, event_id="e1")
    natural = sensor(value=3.0)
    result = parse("sensor", [second, natural, first, natural], partitions=[1, 0, 0, 0], offsets=[0, 5, 9, 7])
    assert result.duplicates_in_batch == 2
    assert result.rows.select("value", "event_id", "kafka_partition", "kafka_offset", "dedup_key").rows() == [
        (3.0, None, 0, 5, f"t1{S}f1{S}m1{S}s1{S}temp"),
        (1.0, "e1", 0, 9, f"e1{S}temp"),
    ]


def test_sensor_v2_fans_out_one_row_per_metric() -> None:
    v2 = js(
        schema_version=2,
        time="2025-08-20T03:30:00Z",
        tenant_id="t1",
        factory_id="f1",
        machine_id="m1",
        sensor_id="s2",
        metrics={"temp": 31.5, "humidity": 40.25},
        units={"temp": "degC"},
        event_id="e5",
    )
    result = parse("sensor", [v2])
    assert result.rejects.is_empty()
    assert result.rows.select("metric", "value", "unit", "event_id", "schema_version", "dedup_key").rows() == [
        ("temp", 31.5, "degC", "e5", 2, f"e5{S}temp"),
        ("humidity", 40.25, None, "e5", 2, f"e5{S}humidity"),
    ]


def test_a_bad_metric_in_a_v2_message_rejects_the_whole_message() -> None:
    v2 = js(
        schema_version=2,
        time="2025-08-20T03:30:00Z",
        tenant_id="t1",
        factory_id="f1",
        machine_id="m1",
        sensor_id="s2",
        metrics={"temp": 31.5, "flux": 1.0},
    )
    empty = js(
        schema_version=2,
        time="2025-08-20T03:30:00Z",
        tenant_id="t1",
        factory_id="f1",
        machine_id="m1",
        sensor_id="s2",
        metrics={},
    )
    result = parse("sensor", [v2, empty])
    assert result.rows.is_empty()
    assert result.rejects.select("kafka_offset", "reason").rows() == [(0, "unknown_metric"), (1, "missing_field")]


def device(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "time": "2025-08-20T03:12:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
    }
    body.update(overrides)
    return json.dumps(body).encode()


def test_device_health_both_shapes_are_two_readings_at_one_instant() -> None:
    result = parse("device", [device(status="online", level="ok"), device(health_score=0.96)])
    assert result.rejects.is_empty()
    assert result.rows.select("status", "level", "health_score", "dedup_key").rows() == [
        ("online", "ok", None, f"t1{S}f1{S}m1{S}status"),
        (None, None, 0.96, f"t1{S}f1{S}m1{S}score"),
    ]


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (device(), "missing_field", "device.health needs `status` (event) or `health_score` (metric)"),
        (
            device(status="asleep"),
            "invalid_value",
            "status 'asleep' is not one of online, offline, degraded, maintenance, fault, starting, stopping",
        ),
        (device(health_score=1.5), "invalid_value", "health_score 1.5 is outside 0..1"),
        (device(health_score="good"), "wrong_type", "Expected `float | null`, got `str` - at `$.health_score`"),
    ],
)
def test_device_health_rejects(value: bytes, reason: str, detail: str) -> None:
    result = parse("device", [value])
    assert result.rejects.select("reason", "detail").rows() == [(reason, detail)]


def sweep(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "time": "2025-08-20T03:20:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "metric": "temp",
        "readings": [{"value": 23.1}, {"value": 22.9}, {"value": 23.6}],
    }
    body.update(overrides)
    return json.dumps(body).encode()


def test_sweep_batch_keeps_its_values_and_count() -> None:
    result = parse("sweep", [sweep(batch_id="B-1"), sweep()])
    assert result.rejects.is_empty()
    assert result.rows.select("n", "reading_values", "batch_id", "dedup_key").rows() == [
        (3, [23.1, 22.9, 23.6], "B-1", f"t1{S}f1{S}m1{S}temp{S}B-1"),
        (3, [23.1, 22.9, 23.6], None, f"t1{S}f1{S}m1{S}temp{S}"),
    ]


def test_sweep_rejects() -> None:
    result = parse("sweep", [sweep(readings=[]), sweep(readings=[{"value": "x"}]), sweep(metric="flux")])
    assert result.rejects.select("reason", "detail").rows() == [
        ("invalid_value", "Expected `array` of length >= 1 - at `$.readings`"),
        ("wrong_type", "Expected `float`, got `str` - at `$.readings[0].value`"),
        ("unknown_metric", "metric 'flux' is not in the metrics catalogue"),
    ]


def test_lab_result() -> None:
    lab = js(
        time="2025-08-20T03:25:00Z",
        tenant_id="t1",
        factory_id="f1",
        station_id="lab-01",
        sample_id="S-8892",
        analyte="Moisture",
        value=12.4,
        unit="%",
    )
    result = parse("lab", [lab, js(time="2025-08-20T03:25:00Z", tenant_id="t1")])
    assert result.rows.select(
        "station_id", "sample_id", "analyte", "value", "unit", "machine_id", "dedup_key"
    ).rows() == [
        ("lab-01", "S-8892", "Moisture", 12.4, "%", None, f"t1{S}f1{S}lab-01{S}S-8892{S}Moisture"),
    ]
    assert result.rejects.select("kafka_offset", "reason").rows() == [(1, "missing_field")]


def test_registry_discovers_the_four_domains() -> None:
    contracts = registry().contracts
    assert {d: c.default_topic for d, c in contracts.items()} == {
        "device": "device.health",
        "lab": "lab.results",
        "sensor": "sensors.device.readings",
        "sweep": "sensors.sweep.readings",
    }
