"""`Contract.parse` of the four topic contracts, on hand-built Kafka micro-batches.

Pure: a MESSAGE_SCHEMA frame in, typed rows / rejects / event times out. Every expected value is
written out by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from analytics_platform.contracts import device, lab, sensor, sweep
from analytics_platform.contracts.base import MESSAGE_SCHEMA, REASONS, Contract, ContractConfig
from analytics_platform.contracts.catalog import MetricCatalog

KAFKA_TS = datetime(2025, 8, 20, 3, 30, tzinfo=UTC)
CONFIG = ContractConfig(
    catalog=MetricCatalog.of(frozenset({"temp", "humidity", "power"})),
    max_future_s=600,
    partitions_start=datetime(2024, 1, 1, tzinfo=UTC),
)
SEP = "\x1f"


def ident(*scope: str | None, event: str | None = None) -> str:
    """An identity key written out by hand: each scope part `<bytes>:<text>` (`~` when missing),
    then `e<bytes>:<event id>`, or `n` without one."""
    parts = ["~" if p is None else f"{len(p.encode())}:{p}" for p in scope]
    parts.append("n" if event is None else f"e{len(event.encode())}:{event}")
    return SEP.join(parts)


DROP = object()  # marks a field to leave out of a message body
TOPIC = "test.topic"

SENSOR = sensor.CONTRACT
DEVICE = device.CONTRACT
SWEEP = sweep.CONTRACT
LAB = lab.CONTRACT

REJECT_COLUMNS = [
    "topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_key",
    "kafka_ts",
    "event_time",
    "reason",
    "detail",
    "value",
]


def t(text: str) -> datetime:
    """A UTC datetime from ISO text with a trailing Z."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def encode(body: object) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    return json.dumps(body).encode()


def messages(
    values: list[object],
    coords: list[tuple[int, int]] | None = None,
    kafka_ts: list[datetime] | None = None,
    topic: str = TOPIC,
) -> pl.DataFrame:
    """A MESSAGE_SCHEMA frame; `coords` are (partition, offset), default partition 0, offsets 0..n-1."""
    n = len(values)
    coords = coords or [(0, i) for i in range(n)]
    return pl.DataFrame(
        {
            "topic": [topic] * n,
            "kafka_partition": [p for p, _ in coords],
            "kafka_offset": [o for _, o in coords],
            "kafka_key": [f"key-{i}".encode() for i in range(n)],
            "kafka_ts": kafka_ts or [KAFKA_TS] * n,
            "value": [encode(v) for v in values],
        },
        schema=MESSAGE_SCHEMA,
    )


def _body(defaults: dict, overrides: dict) -> dict:
    merged = {**defaults, **overrides}
    return {k: v for k, v in merged.items() if v is not DROP}


def reading(**overrides: object) -> dict:
    defaults = {
        "time": "2025-08-20T03:12:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "mc-01",
        "sensor_id": "s-001",
        "metric": "temp",
        "value": 23.5,
    }
    return _body(defaults, overrides)


def reading_v2(**overrides: object) -> dict:
    defaults = {
        "schema_version": 2,
        "time": "2025-08-20T03:30:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "mc-02",
        "sensor_id": "s-002",
        "metrics": {"temp": 31.5, "humidity": 40.25},
        "units": {"temp": "degC"},
    }
    return _body(defaults, overrides)


def health(**overrides: object) -> dict:
    defaults = {"time": "2025-08-20T03:12:00Z", "tenant_id": "t1", "factory_id": "f1", "machine_id": "mc-01"}
    return _body(defaults, overrides)


def sweep_batch(**overrides: object) -> dict:
    defaults = {
        "time": "2025-08-20T03:12:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "mc-01",
        "metric": "temp",
        "readings": [{"value": 65.1}, {"value": 64.9}, {"value": 65.0}],
    }
    return _body(defaults, overrides)


def lab_result(**overrides: object) -> dict:
    defaults = {
        "time": "2025-08-20T03:12:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "station_id": "lab-f1",
        "sample_id": "S-00001",
        "analyte": "pH",
        "value": 6.8,
    }
    return _body(defaults, overrides)


# Literal NaN / overflowing numbers cannot be written with json.dumps defaults: spelled out.
SENSOR_NAN = (
    b'{"time":"2025-08-20T03:14:00Z","tenant_id":"t1","factory_id":"f1","machine_id":"mc-01",'
    b'"sensor_id":"s-001","metric":"temp","value":NaN}'
)
SENSOR_INF = (
    b'{"time":"2025-08-20T03:14:00Z","tenant_id":"t1","factory_id":"f1","machine_id":"mc-01",'
    b'"sensor_id":"s-001","metric":"temp","value":1e999}'
)
SWEEP_INF = (
    b'{"time":"2025-08-20T03:12:00Z","tenant_id":"t1","factory_id":"f1","machine_id":"mc-01",'
    b'"metric":"temp","readings":[{"value":1.0},{"value":1e999}]}'
)
DEVICE_NAN = (
    b'{"time":"2025-08-20T03:12:00Z","tenant_id":"t1","factory_id":"f1","machine_id":"mc-01","health_score":NaN}'
)


def sensor_row(**overrides: object) -> dict:
    """An expected raw_sensor_readings row (defaults match `reading()` at offset 0, no event id)."""
    row = {
        "time": t("2025-08-20T03:12:00Z"),
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "mc-01",
        "sensor_id": "s-001",
        "metric": "temp",
        "value": 23.5,
        "unit": None,
        "payload": None,
        "uncatalogued": False,
        "event_id": None,
        "schema_version": 1,
        "dedup_key": ident("t1", "f1", "mc-01", "s-001", "temp"),
        "topic": TOPIC,
        "kafka_partition": 0,
        "kafka_offset": 0,
    }
    row.update(overrides)
    return row


# ----- valid rows --------------------------------------------------------------------------------


def test_sensor_v1_rows_are_typed_and_keyed() -> None:
    batch = messages(
        [
            reading(),
            reading(time="2025-08-20T03:12:00.5Z", event_id="e1", unit="degC", payload={"source": "edge-01"}),
            reading(time="2025-08-20T03:13:00+00:00", value=-1.25),
            reading(time="2025-08-20T03:14:00.123456Z", metric="power", sensor_id="s-pwr", value=0.0),
        ]
    )
    parsed = SENSOR.parse(batch, CONFIG)

    assert parsed.rows.schema == pl.Schema(
        {
            "time": pl.Datetime("us", "UTC"),
            "tenant_id": pl.String(),
            "factory_id": pl.String(),
            "machine_id": pl.String(),
            "sensor_id": pl.String(),
            "metric": pl.String(),
            "value": pl.Float64(),
            "unit": pl.String(),
            "payload": pl.String(),
            "uncatalogued": pl.Boolean(),
            "event_id": pl.String(),
            "schema_version": pl.Int16(),
            "dedup_key": pl.String(),
            "topic": pl.String(),
            "kafka_partition": pl.Int32(),
            "kafka_offset": pl.Int64(),
        }
    )
    assert parsed.rows.to_dicts() == [
        sensor_row(),
        sensor_row(
            time=datetime(2025, 8, 20, 3, 12, 0, 500000, tzinfo=UTC),
            unit="degC",
            payload='{"source": "edge-01"}',  # the sender's JSON text, verbatim
            event_id="e1",
            dedup_key=ident("t1", "f1", "mc-01", "s-001", "temp", event="e1"),
            kafka_offset=1,
        ),
        sensor_row(time=t("2025-08-20T03:13:00Z"), value=-1.25, kafka_offset=2),
        sensor_row(
            time=datetime(2025, 8, 20, 3, 14, 0, 123456, tzinfo=UTC),
            sensor_id="s-pwr",
            metric="power",
            value=0.0,
            dedup_key=ident("t1", "f1", "mc-01", "s-pwr", "power"),
            kafka_offset=3,
        ),
    ]
    assert parsed.rejects.columns == REJECT_COLUMNS
    assert parsed.rejects.height == 0
    assert parsed.accepted.to_list() == [True, True, True, True]
    assert parsed.event_time.name == "event_time"
    assert parsed.event_time.dtype == pl.Datetime("us", "UTC")
    assert parsed.event_time.to_list() == [
        t("2025-08-20T03:12:00Z"),
        datetime(2025, 8, 20, 3, 12, 0, 500000, tzinfo=UTC),
        t("2025-08-20T03:13:00Z"),
        datetime(2025, 8, 20, 3, 14, 0, 123456, tzinfo=UTC),
    ]
    assert parsed.duplicates_in_batch == 0


def test_values_list_argument_gives_the_same_result_as_the_frame() -> None:
    batch = messages([reading(), b"this is not json", reading_v2(event_id="e5")])
    from_frame = SENSOR.parse(batch, CONFIG)
    from_list = SENSOR.parse(batch, CONFIG, batch.get_column("value").to_list())
    assert from_list.rows.equals(from_frame.rows)
    assert from_list.rejects.equals(from_frame.rejects)
    assert from_list.event_time.to_list() == from_frame.event_time.to_list()
    assert from_list.accepted.to_list() == from_frame.accepted.to_list() == [True, False, True]


def test_sub_microsecond_digits_are_truncated_to_microseconds() -> None:
    parsed = SENSOR.parse(messages([reading(time="2025-08-20T03:12:00.123456789Z")]), CONFIG)
    assert parsed.rows.get_column("time").to_list() == [datetime(2025, 8, 20, 3, 12, 0, 123456, tzinfo=UTC)]


def test_raw_columns_of_every_contract() -> None:
    tail = ["event_id", "schema_version", "dedup_key", "topic", "kafka_partition", "kafka_offset"]
    assert SENSOR.raw_columns == [
        "time",
        "tenant_id",
        "factory_id",
        "machine_id",
        "sensor_id",
        "metric",
        "value",
        "unit",
        "payload",
        "uncatalogued",  # derived: stored under a tenant's `accept` policy
        *tail,
    ]
    assert DEVICE.raw_columns == [
        "time",
        "tenant_id",
        "factory_id",
        "machine_id",
        "status",
        "level",
        "health_score",
        "run_state",
        *tail,
    ]
    assert SWEEP.raw_columns == [
        "time",
        "tenant_id",
        "factory_id",
        "machine_id",
        "metric",
        "batch_id",
        "unit",
        "n",
        "reading_values",
        "uncatalogued",
        *tail,
    ]
    assert LAB.raw_columns == [
        "time",
        "tenant_id",
        "factory_id",
        "station_id",
        "sample_id",
        "analyte",
        "value",
        "unit",
        "machine_id",
        *tail,
    ]


# ----- the reject-reason table -------------------------------------------------------------------


@dataclass(frozen=True)
class RejectCase:
    id: str
    contract: Contract
    value: object  # body dict or raw bytes (None: tombstone)
    reason: str
    detail: str | None  # None: msgspec's parser message with a byte position, not asserted


BAD_TIME_DETAIL = "time '{}' is not ISO-8601 UTC (e.g. 2025-08-20T03:12:00Z)"
NUL_DETAIL = "{} contains a NUL character (PostgreSQL text cannot store it)"
STATUS_DETAIL = "status 'exploded' is not one of online, offline, degraded, maintenance, fault, starting, stopping"

REJECT_CASES = [
    RejectCase("not_utf8", SENSOR, b"\xff\xfe\x00garbage", "not_utf8", "message is not valid UTF-8"),
    RejectCase("not_json", SENSOR, b"this is not json", "not_json", None),
    RejectCase("not_json_truncated", SENSOR, b'{"time": "2025', "not_json", "Input data was truncated"),
    RejectCase("not_json_empty", SENSOR, b"", "not_json", "Input data was truncated"),
    RejectCase("not_json_tombstone", SENSOR, None, "not_json", "message has no value (tombstone)"),
    RejectCase("not_object_array", SENSOR, [reading()], "not_object", "message is a JSON array, not an object"),
    RejectCase("not_object_int", SENSOR, b"42", "not_object", "message is a JSON int, not an object"),
    RejectCase(
        "missing_field_absent",
        SENSOR,
        reading(tenant_id=DROP),
        "missing_field",
        "Object missing required field `tenant_id`",
    ),
    RejectCase(
        "missing_field_null",
        SENSOR,
        reading(tenant_id=None),
        "missing_field",
        "Expected `str`, got `null` - at `$.tenant_id`",
    ),
    RejectCase(
        "missing_field_sweep_readings",
        SWEEP,
        sweep_batch(readings=DROP),
        "missing_field",
        "Object missing required field `readings`",
    ),
    RejectCase(
        "missing_field_lab_sample",
        LAB,
        lab_result(sample_id=DROP),
        "missing_field",
        "Object missing required field `sample_id`",
    ),
    RejectCase(
        "missing_field_device_neither_shape",
        DEVICE,
        health(),
        "missing_field",
        "device.health needs `status` (event), `health_score` (metric) or `run_state`",
    ),
    RejectCase(
        "missing_field_v2_no_metrics",
        SENSOR,
        reading_v2(metrics={}),
        "missing_field",
        "schema_version 2 needs at least one entry in `metrics`",
    ),
    RejectCase(
        "wrong_type_int_identifier",
        SENSOR,
        reading(factory_id=17),
        "wrong_type",
        "Expected `str`, got `int` - at `$.factory_id`",
    ),
    RejectCase(
        "wrong_type_str_value",
        SENSOR,
        reading(value="high"),
        "wrong_type",
        "Expected `float`, got `str` - at `$.value`",
    ),
    RejectCase(
        "wrong_type_v2_metric_value",
        SENSOR,
        reading_v2(metrics={"temp": "x"}),
        "wrong_type",
        "Expected `float`, got `str` - at `$.metrics[...]`",
    ),
    RejectCase("non_finite_nan_literal", SENSOR, SENSOR_NAN, "non_finite", "NaN or Infinity literal in message"),
    RejectCase("non_finite_1e999", SENSOR, SENSOR_INF, "non_finite", "Number out of range - at `$.value`"),
    RejectCase(
        "non_finite_sweep_reading", SWEEP, SWEEP_INF, "non_finite", "Number out of range - at `$.readings[1].value`"
    ),
    RejectCase("non_finite_health_score", DEVICE, DEVICE_NAN, "non_finite", "NaN or Infinity literal in message"),
    RejectCase(
        "invalid_value_empty_identifier",
        SENSOR,
        reading(tenant_id=""),
        "invalid_value",
        "Expected `str` of length >= 1 - at `$.tenant_id`",
    ),
    RejectCase(
        "invalid_value_long_identifier",
        SENSOR,
        reading(sensor_id="x" * 201),
        "invalid_value",
        "Expected `str` of length <= 200 - at `$.sensor_id`",
    ),
    RejectCase(
        "invalid_value_nul_identifier",
        SENSOR,
        reading(machine_id="mc\x0001"),
        "invalid_value",
        NUL_DETAIL.format("machine_id"),
    ),
    RejectCase(
        "invalid_value_nul_event_id", SENSOR, reading(event_id="e\x00"), "invalid_value", NUL_DETAIL.format("event_id")
    ),
    RejectCase(
        "invalid_value_nul_in_payload",
        SENSOR,
        reading(payload={"note": "a\x00b"}),
        "invalid_value",
        NUL_DETAIL.format("payload"),
    ),
    RejectCase(
        "invalid_value_payload_not_object",
        SENSOR,
        reading(payload=[1, 2]),
        "invalid_value",
        "payload must be a JSON object",
    ),
    RejectCase(
        "invalid_value_lab_nul_station",
        LAB,
        lab_result(station_id="\x00"),
        "invalid_value",
        NUL_DETAIL.format("station_id"),
    ),
    RejectCase("invalid_value_device_status", DEVICE, health(status="exploded"), "invalid_value", STATUS_DETAIL),
    RejectCase(
        "invalid_value_health_score_above_1",
        DEVICE,
        health(health_score=1.5),
        "invalid_value",
        "health_score 1.5 is outside 0..1",
    ),
    RejectCase(
        "invalid_value_health_score_below_0",
        DEVICE,
        health(health_score=-0.01),
        "invalid_value",
        "health_score -0.01 is outside 0..1",
    ),
    RejectCase(
        "invalid_value_sweep_empty_readings",
        SWEEP,
        sweep_batch(readings=[]),
        "invalid_value",
        "Expected `array` of length >= 1 - at `$.readings`",
    ),
    RejectCase(
        "bad_time_space_instead_of_t",
        SENSOR,
        reading(time="2025-08-20 03:12:00"),
        "bad_time",
        BAD_TIME_DETAIL.format("2025-08-20 03:12:00"),
    ),
    RejectCase(
        "bad_time_offset_0700",
        SENSOR,
        reading(time="2025-08-20T10:12:00+07:00"),
        "bad_time",
        BAD_TIME_DETAIL.format("2025-08-20T10:12:00+07:00"),
    ),
    RejectCase(
        "bad_time_no_seconds",
        SENSOR,
        reading(time="2025-08-20T03:12Z"),
        "bad_time",
        BAD_TIME_DETAIL.format("2025-08-20T03:12Z"),
    ),
    RejectCase(
        "bad_time_no_zone",
        LAB,
        lab_result(time="2025-08-20T03:12:00"),
        "bad_time",
        BAD_TIME_DETAIL.format("2025-08-20T03:12:00"),
    ),
    RejectCase(
        "bad_time_impossible_date",
        SENSOR,
        reading(time="2025-02-30T03:12:00Z"),
        "bad_time",
        BAD_TIME_DETAIL.format("2025-02-30T03:12:00Z"),
    ),
    RejectCase(
        "bad_time_hour_24",
        DEVICE,
        health(time="2025-08-20T24:00:00Z", status="online"),
        "bad_time",
        BAD_TIME_DETAIL.format("2025-08-20T24:00:00Z"),
    ),
    RejectCase(
        "future_time_one_microsecond_over",
        SENSOR,
        reading(time="2025-08-20T03:40:00.000001Z"),
        "future_time",
        "time 2025-08-20T03:40:00.000001Z is more than 600s after the Kafka timestamp 2025-08-20T03:30:00Z",
    ),
    RejectCase(
        "future_time_2099",
        DEVICE,
        health(time="2099-01-01T00:00:00.000Z", status="online"),
        "future_time",
        "time 2099-01-01T00:00:00.000Z is more than 600s after the Kafka timestamp 2025-08-20T03:30:00Z",
    ),
    RejectCase(
        "time_before_partitions",
        SENSOR,
        reading(time="2023-12-31T23:59:59.999999Z"),
        "time_before_partitions",
        "time 2023-12-31T23:59:59.999999Z is before the first partition 2024-01-01T00:00:00+00:00",
    ),
    RejectCase(
        "unknown_metric_sensor",
        SENSOR,
        reading(metric="flux"),
        "unknown_metric",
        "metric 'flux' is not in the metrics catalogue",
    ),
    RejectCase(
        "unknown_metric_sweep",
        SWEEP,
        sweep_batch(metric="Temp"),
        "unknown_metric",
        "metric 'Temp' is not in the metrics catalogue",
    ),
    RejectCase(
        "unsupported_schema_version_9",
        SENSOR,
        reading(schema_version=9),
        "unsupported_schema_version",
        "schema_version 9 is not one of [1, 2]",
    ),
    RejectCase(
        "unsupported_schema_version_0",
        SENSOR,
        reading(schema_version=0),
        "unsupported_schema_version",
        "schema_version 0 is not one of [1, 2]",
    ),
    RejectCase(
        "unsupported_schema_version_device_2",
        DEVICE,
        health(status="online", schema_version=2),
        "unsupported_schema_version",
        "schema_version 2 is not one of [1]",
    ),
]


def test_reject_table_covers_every_reason() -> None:
    assert {case.reason for case in REJECT_CASES} == set(REASONS)


@pytest.mark.parametrize("case", REJECT_CASES, ids=[c.id for c in REJECT_CASES])
def test_reject_reason(case: RejectCase) -> None:
    parsed = case.contract.parse(messages([case.value]), CONFIG)

    assert parsed.rows.height == 0
    assert parsed.rows.columns == case.contract.raw_columns
    assert parsed.accepted.to_list() == [False]
    assert parsed.rejects.height == 1
    reject = parsed.rejects.row(0, named=True)
    assert reject["reason"] == case.reason
    if case.detail is None:
        assert reject["detail"].startswith("JSON is malformed: ")
    else:
        assert reject["detail"] == case.detail
    assert (reject["topic"], reject["kafka_partition"], reject["kafka_offset"]) == (TOPIC, 0, 0)
    assert reject["value"] == encode(case.value)


def test_a_reject_row_keeps_the_whole_message_and_its_coordinates() -> None:
    value = encode(reading(metric="flux"))
    batch = messages(
        [reading(), value], coords=[(3, 41), (3, 42)], kafka_ts=[KAFKA_TS, KAFKA_TS + timedelta(seconds=1)]
    )
    parsed = SENSOR.parse(batch, CONFIG)
    assert parsed.rejects.to_dicts() == [
        {
            "topic": TOPIC,
            "kafka_partition": 3,
            "kafka_offset": 42,
            "kafka_key": b"key-1",
            "kafka_ts": KAFKA_TS + timedelta(seconds=1),
            "event_time": t("2025-08-20T03:12:00Z"),
            "reason": "unknown_metric",
            "detail": "metric 'flux' is not in the metrics catalogue",
            "value": value,
        }
    ]
    assert parsed.rows.get_column("kafka_offset").to_list() == [41]
    assert parsed.accepted.to_list() == [True, False]


def test_first_failing_check_wins_when_a_row_breaks_several() -> None:
    # bad time comes before the metric check: one reject row with the first reason
    parsed = SENSOR.parse(messages([reading(time="2025-08-20 03:12:00", metric="flux")]), CONFIG)
    assert parsed.rejects.select("reason").to_series().to_list() == ["bad_time"]


# ----- time limits -------------------------------------------------------------------------------


def test_future_time_limit_is_relative_to_each_messages_kafka_ts() -> None:
    later = KAFKA_TS + timedelta(hours=1)
    batch = messages(
        [
            reading(time="2025-08-20T03:40:00Z"),  # exactly kafka_ts + 600 s: accepted
            reading(time="2025-08-20T03:40:00.000001Z"),  # one microsecond over: rejected
            reading(time="2025-08-20T04:40:00Z", machine_id="mc-09"),  # exactly at the limit of a later kafka_ts
            reading(time="2025-08-20T04:40:00.000001Z", machine_id="mc-09"),
        ],
        kafka_ts=[KAFKA_TS, KAFKA_TS, later, later],
    )
    parsed = SENSOR.parse(batch, CONFIG)
    assert parsed.rows.select("time", "machine_id", "kafka_offset").rows() == [
        (t("2025-08-20T03:40:00Z"), "mc-01", 0),
        (t("2025-08-20T04:40:00Z"), "mc-09", 2),
    ]
    assert parsed.rejects.select("kafka_offset", "reason", "detail").rows() == [
        (
            1,
            "future_time",
            "time 2025-08-20T03:40:00.000001Z is more than 600s after the Kafka timestamp 2025-08-20T03:30:00Z",
        ),
        (
            3,
            "future_time",
            "time 2025-08-20T04:40:00.000001Z is more than 600s after the Kafka timestamp 2025-08-20T04:30:00Z",
        ),
    ]
    assert parsed.accepted.to_list() == [True, False, True, False]


def test_first_partition_instant_is_accepted() -> None:
    parsed = SENSOR.parse(
        messages([reading(time="2024-01-01T00:00:00Z"), reading(time="2023-12-31T23:59:59.999999Z")]), CONFIG
    )
    assert parsed.rows.get_column("time").to_list() == [t("2024-01-01T00:00:00Z")]
    assert parsed.rejects.select("kafka_offset", "reason").rows() == [(1, "time_before_partitions")]


def test_second_60_is_a_bad_time() -> None:
    parsed = SENSOR.parse(messages([reading(time="2025-08-20T03:12:60Z")]), CONFIG)
    assert parsed.rows.height == 0
    assert parsed.rejects.select("reason").to_series().to_list() == ["bad_time"]


# ----- device.health -----------------------------------------------------------------------------


def device_row(**overrides: object) -> dict:
    row = {
        "time": t("2025-08-20T03:12:00Z"),
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "mc-01",
        "status": None,
        "level": None,
        "health_score": None,
        "run_state": None,
        "event_id": None,
        "schema_version": 1,
        "dedup_key": None,
        "topic": TOPIC,
        "kafka_partition": 0,
        "kafka_offset": 0,
    }
    row.update(overrides)
    return row


def test_device_health_status_event_and_score_at_the_same_instant_are_two_rows() -> None:
    batch = messages(
        [
            health(status="online", level="ok"),
            health(health_score=0.93),
            health(status="degraded", level="warning"),  # same machine+time+shape as offset 0: duplicate
            health(health_score=0.5),  # same machine+time+shape as offset 1: duplicate
            health(),  # neither shape
        ]
    )
    parsed = DEVICE.parse(batch, CONFIG)
    status_key = ident("t1", "f1", "mc-01", "status")
    score_key = ident("t1", "f1", "mc-01", "score")
    assert parsed.rows.to_dicts() == [
        device_row(status="online", level="ok", dedup_key=status_key),
        device_row(health_score=0.93, dedup_key=score_key, kafka_offset=1),
    ]
    assert parsed.duplicates_in_batch == 2
    assert parsed.rejects.select("kafka_offset", "reason", "detail").rows() == [
        (4, "missing_field", "device.health needs `status` (event), `health_score` (metric) or `run_state`")
    ]
    assert parsed.accepted.to_list() == [True, True, True, True, False]


def test_device_health_run_state_is_its_own_shape_and_checked() -> None:
    batch = messages(
        [
            health(run_state="running"),
            health(status="online", level="ok"),  # same instant, other shape: kept
            health(run_state="fault"),  # same machine+time+shape as offset 0: duplicate
            health(run_state="exploded"),
        ]
    )
    parsed = DEVICE.parse(batch, CONFIG)
    assert parsed.rows.to_dicts() == [
        device_row(run_state="running", dedup_key=ident("t1", "f1", "mc-01", "run")),
        device_row(status="online", level="ok", dedup_key=ident("t1", "f1", "mc-01", "status"), kafka_offset=1),
    ]
    assert parsed.rejects.select("kafka_offset", "reason", "detail").rows() == [
        (3, "invalid_value", "run_state 'exploded' is not one of running, idle, planned_stop, maintenance, fault")
    ]


def test_device_health_shapes_bounds_and_event_id() -> None:
    batch = messages(
        [
            health(health_score=0.0),
            health(time="2025-08-20T03:13:00Z", health_score=1.0),
            health(time="2025-08-20T03:14:00Z", status="fault", level="critical", health_score=0.2),
            health(time="2025-08-20T03:15:00Z", status="offline", event_id="h1"),
        ]
    )
    parsed = DEVICE.parse(batch, CONFIG)
    score_key = ident("t1", "f1", "mc-01", "score")
    assert parsed.rows.to_dicts() == [
        device_row(health_score=0.0, dedup_key=score_key),
        device_row(time=t("2025-08-20T03:13:00Z"), health_score=1.0, dedup_key=score_key, kafka_offset=1),
        device_row(
            time=t("2025-08-20T03:14:00Z"),
            status="fault",
            level="critical",
            health_score=0.2,
            dedup_key=ident("t1", "f1", "mc-01", "status"),  # both given: the status shape
            kafka_offset=2,
        ),
        device_row(
            time=t("2025-08-20T03:15:00Z"),
            status="offline",
            event_id="h1",
            dedup_key=ident("t1", "f1", "mc-01", "status", event="h1"),
            kafka_offset=3,
        ),
    ]
    assert parsed.rejects.height == 0


# ----- sweep and lab -----------------------------------------------------------------------------


def test_sweep_readings_become_a_value_list_with_its_count() -> None:
    batch = messages(
        [
            sweep_batch(batch_id="B-000001", unit="degC"),
            sweep_batch(time="2025-08-20T03:13:00Z", readings=[{"value": 1.5}]),
            sweep_batch(time="2025-08-20T03:14:00Z", event_id="sw1", metric="power"),
        ]
    )
    parsed = SWEEP.parse(batch, CONFIG)
    assert parsed.rows.schema["n"] == pl.Int32()
    assert parsed.rows.schema["reading_values"] == pl.List(pl.Float64())
    common = {
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "mc-01",
        "schema_version": 1,
        "topic": TOPIC,
        "kafka_partition": 0,
        "uncatalogued": False,
    }
    assert parsed.rows.to_dicts() == [
        {
            **common,
            "time": t("2025-08-20T03:12:00Z"),
            "metric": "temp",
            "batch_id": "B-000001",
            "unit": "degC",
            "n": 3,
            "reading_values": [65.1, 64.9, 65.0],
            "event_id": None,
            "dedup_key": ident("t1", "f1", "mc-01", "temp", "B-000001"),
            "kafka_offset": 0,
        },
        {
            **common,
            "time": t("2025-08-20T03:13:00Z"),
            "metric": "temp",
            "batch_id": None,
            "unit": None,
            "n": 1,
            "reading_values": [1.5],
            "event_id": None,
            "dedup_key": ident("t1", "f1", "mc-01", "temp", None),  # no batch id: a missing part
            "kafka_offset": 1,
        },
        {
            **common,
            "time": t("2025-08-20T03:14:00Z"),
            "metric": "power",
            "batch_id": None,
            "unit": None,
            "n": 3,
            "reading_values": [65.1, 64.9, 65.0],
            "event_id": "sw1",
            "dedup_key": ident("t1", "f1", "mc-01", "power", None, event="sw1"),
            "kafka_offset": 2,
        },
    ]
    assert parsed.rejects.height == 0


def test_lab_results() -> None:
    batch = messages(
        [
            lab_result(unit="pH", machine_id="mc-01", event_id="l1"),
            lab_result(analyte="Moisture", value=12.5),
            lab_result(analyte="Moisture", value=12.5),  # natural-key duplicate of offset 1
            lab_result(analyte="anything", value=-3.0, time="2025-08-20T03:13:00Z"),  # analytes are not catalogued
        ]
    )
    parsed = LAB.parse(batch, CONFIG)
    common = {
        "tenant_id": "t1",
        "factory_id": "f1",
        "station_id": "lab-f1",
        "sample_id": "S-00001",
        "schema_version": 1,
        "topic": TOPIC,
        "kafka_partition": 0,
    }
    assert parsed.rows.to_dicts() == [
        {
            **common,
            "time": t("2025-08-20T03:12:00Z"),
            "analyte": "pH",
            "value": 6.8,
            "unit": "pH",
            "machine_id": "mc-01",
            "event_id": "l1",
            "dedup_key": ident("t1", "f1", "lab-f1", "S-00001", "pH", event="l1"),
            "kafka_offset": 0,
        },
        {
            **common,
            "time": t("2025-08-20T03:12:00Z"),
            "analyte": "Moisture",
            "value": 12.5,
            "unit": None,
            "machine_id": None,
            "event_id": None,
            "dedup_key": ident("t1", "f1", "lab-f1", "S-00001", "Moisture"),
            "kafka_offset": 1,
        },
        {
            **common,
            "time": t("2025-08-20T03:13:00Z"),
            "analyte": "anything",
            "value": -3.0,
            "unit": None,
            "machine_id": None,
            "event_id": None,
            "dedup_key": ident("t1", "f1", "lab-f1", "S-00001", "anything"),
            "kafka_offset": 3,
        },
    ]
    assert parsed.duplicates_in_batch == 1
    assert parsed.rejects.height == 0


# ----- sensor schema_version 2 -------------------------------------------------------------------


def test_sensor_v2_fans_out_to_one_row_per_metric() -> None:
    batch = messages([reading_v2(event_id="e5"), reading_v2(time="2025-08-20T03:31:00Z")], coords=[(1, 2), (1, 3)])
    parsed = SENSOR.parse(batch, CONFIG)
    v2 = {"machine_id": "mc-02", "sensor_id": "s-002", "schema_version": 2, "kafka_partition": 1}
    assert parsed.rows.to_dicts() == [
        sensor_row(
            **v2,
            time=t("2025-08-20T03:30:00Z"),
            metric="temp",
            value=31.5,
            unit="degC",
            event_id="e5",
            dedup_key=ident("t1", "f1", "mc-02", "s-002", "temp", event="e5"),
            kafka_offset=2,
        ),
        sensor_row(
            **v2,
            time=t("2025-08-20T03:30:00Z"),
            metric="humidity",
            value=40.25,
            unit=None,  # not in `units`
            event_id="e5",
            dedup_key=ident("t1", "f1", "mc-02", "s-002", "humidity", event="e5"),
            kafka_offset=2,
        ),
        sensor_row(
            **v2,
            time=t("2025-08-20T03:31:00Z"),
            metric="temp",
            value=31.5,
            unit="degC",
            dedup_key=ident("t1", "f1", "mc-02", "s-002", "temp"),
            kafka_offset=3,
        ),
        sensor_row(
            **v2,
            time=t("2025-08-20T03:31:00Z"),
            metric="humidity",
            value=40.25,
            dedup_key=ident("t1", "f1", "mc-02", "s-002", "humidity"),
            kafka_offset=3,
        ),
    ]
    assert parsed.duplicates_in_batch == 0
    assert parsed.accepted.to_list() == [True, True]
    assert parsed.event_time.to_list() == [t("2025-08-20T03:30:00Z"), t("2025-08-20T03:31:00Z")]


def test_a_v2_message_with_one_bad_metric_is_rejected_as_a_whole() -> None:
    bad = encode(reading_v2(event_id="e7", metrics={"temp": 30.0, "flux": 1.0, "humidity": 40.0}))
    batch = messages([reading(), bad, reading(time="2025-08-20T03:13:00Z")])
    parsed = SENSOR.parse(batch, CONFIG)
    assert parsed.rows.select("kafka_offset", "metric", "event_id").rows() == [(0, "temp", None), (2, "temp", None)]
    assert parsed.rejects.select("kafka_offset", "reason", "detail", "value", "event_time").rows() == [
        (1, "unknown_metric", "metric 'flux' is not in the metrics catalogue", bad, t("2025-08-20T03:30:00Z"))
    ]
    assert parsed.accepted.to_list() == [True, False, True]
    assert parsed.duplicates_in_batch == 0


# ----- in-batch deduplication --------------------------------------------------------------------


@pytest.mark.parametrize(
    "coords",
    [
        [(1, 5), (0, 9), (0, 3), (2, 0)],
        [(0, 3), (0, 9), (1, 5), (2, 0)],
        [(2, 0), (1, 5), (0, 9), (0, 3)],
    ],
    ids=["mixed", "sorted", "reversed"],
)
def test_in_batch_dedup_keeps_the_lowest_kafka_coordinate(coords: list[tuple[int, int]]) -> None:
    # the same event four times, each copy with a different value so the survivor is visible
    values = {coord: float(i) for i, coord in enumerate([(0, 3), (0, 9), (1, 5), (2, 0)])}
    batch = messages([reading(event_id="e1", value=values[c]) for c in coords], coords=coords)
    parsed = SENSOR.parse(batch, CONFIG)
    assert parsed.rows.select("kafka_partition", "kafka_offset", "value", "dedup_key").rows() == [
        (0, 3, 0.0, ident("t1", "f1", "mc-01", "s-001", "temp", event="e1"))
    ]
    assert parsed.duplicates_in_batch == 3
    assert parsed.accepted.to_list() == [True, True, True, True]  # duplicates are not rejects
    assert parsed.rejects.height == 0


def test_dedup_uses_time_plus_key_and_sorts_rows_by_coordinate() -> None:
    batch = messages(
        [
            reading(value=2.0),  # (1, 0): natural-key duplicate of (0, 7)
            reading(value=1.0),  # (0, 7)
            reading(time="2025-08-20T03:13:00Z", value=3.0),  # (0, 8): same key, other time
            reading(event_id="e9", value=4.0),  # (0, 9): with an event id the key differs from the natural one
        ],
        coords=[(1, 0), (0, 7), (0, 8), (0, 9)],
    )
    parsed = SENSOR.parse(batch, CONFIG)
    assert parsed.rows.select("kafka_partition", "kafka_offset", "value").rows() == [
        (0, 7, 1.0),
        (0, 8, 3.0),
        (0, 9, 4.0),
    ]
    assert parsed.duplicates_in_batch == 1


# ----- event times -------------------------------------------------------------------------------


def test_event_time_is_aligned_with_the_input() -> None:
    batch = messages(
        [
            reading(),  # 0 row
            b"this is not json",  # 1 unreadable
            reading(time="2025-08-20 03:12:00"),  # 2 unreadable time
            SENSOR_INF,  # 3 rejected, time readable
            reading(time="2099-01-01T00:00:00Z"),  # 4 rejected, time readable
            None,  # 5 tombstone
            reading_v2(),  # 6 two rows, one time
            reading(time="2025-08-20T03:13:00+00:00", metric="flux"),  # 7 rejected by a vector check
            reading(factory_id=17, time="2025-08-20T03:20:00.25Z"),  # 8 rejected when decoding
            reading(time="2025-08-20T10:12:00+07:00"),  # 9 not UTC: no best-effort conversion
        ]
    )
    parsed = SENSOR.parse(batch, CONFIG)
    assert parsed.event_time.to_list() == [
        t("2025-08-20T03:12:00Z"),
        None,
        None,
        t("2025-08-20T03:14:00Z"),
        t("2099-01-01T00:00:00Z"),
        None,
        t("2025-08-20T03:30:00Z"),
        t("2025-08-20T03:13:00Z"),
        datetime(2025, 8, 20, 3, 20, 0, 250000, tzinfo=UTC),
        None,
    ]
    assert parsed.accepted.to_list() == [True, False, False, False, False, False, True, False, False, False]
    assert parsed.rejects.select("kafka_offset", "event_time").rows() == [
        (1, None),
        (2, None),
        (3, t("2025-08-20T03:14:00Z")),
        (4, t("2099-01-01T00:00:00Z")),
        (5, None),
        (7, t("2025-08-20T03:13:00Z")),
        (8, datetime(2025, 8, 20, 3, 20, 0, 250000, tzinfo=UTC)),
        (9, None),
    ]


def test_event_time_of_a_nan_literal_reject_is_its_time() -> None:
    parsed = SENSOR.parse(messages([SENSOR_NAN]), CONFIG)
    assert parsed.rejects.select("reason", "event_time").rows() == [("non_finite", t("2025-08-20T03:14:00Z"))]
    assert parsed.event_time.to_list() == [t("2025-08-20T03:14:00Z")]


# ----- NUL detection in JSON sub-documents ------------------------------------------------------


def test_payload_with_a_literal_backslash_u0000_string_is_accepted() -> None:
    # the JSON text is {"path": "C:\\u0000x"}: a backslash then the characters u0000x, no NUL character
    body = reading(payload={"path": "C:\\u0000x"})
    parsed = SENSOR.parse(messages([body]), CONFIG)
    assert parsed.rejects.height == 0
    assert parsed.rows.get_column("payload").to_list() == ['{"path": "C:\\\\u0000x"}']


# ----- the metrics catalogue is tenant data --------------------------------------------------------


def test_a_tenants_own_metric_is_accepted_for_that_tenant_only() -> None:
    catalog = MetricCatalog(frozenset({("*", "temp"), ("t2", "power_kw")}), {"*": "reject"})
    config = ContractConfig(catalog=catalog, max_future_s=600, partitions_start=datetime(2024, 1, 1, tzinfo=UTC))
    batch = messages([reading(tenant_id="t2", metric="power_kw"), reading(tenant_id="t1", metric="power_kw")])
    parsed = SENSOR.parse(batch, config)
    assert parsed.rows.select("tenant_id", "metric", "uncatalogued").rows() == [("t2", "power_kw", False)]
    assert parsed.rejects.select("kafka_offset", "reason").rows() == [(1, "unknown_metric")]


def test_the_accept_policy_stores_uncatalogued_readings_flagged() -> None:
    """t3 accepts unknown metrics, everybody else keeps the default reject."""
    catalog = MetricCatalog(frozenset({("*", "temp")}), {"*": "reject", "t3": "accept"})
    config = ContractConfig(catalog=catalog, max_future_s=600, partitions_start=datetime(2024, 1, 1, tzinfo=UTC))
    batch = messages(
        [
            reading(tenant_id="t3", metric="flux"),
            reading(tenant_id="t3", metric="temp"),
            reading(tenant_id="t1", metric="flux"),
        ]
    )
    parsed = SENSOR.parse(batch, config)
    assert parsed.rows.select("tenant_id", "metric", "uncatalogued").rows() == [
        ("t3", "flux", True),
        ("t3", "temp", False),
    ]
    assert parsed.rejects.select("kafka_offset", "reason").rows() == [(2, "unknown_metric")]
    # the same with the default turned round: everybody accepts but t1
    flipped = ContractConfig(
        catalog=MetricCatalog(frozenset({("*", "temp")}), {"*": "accept", "t1": "reject"}),
        max_future_s=600,
        partitions_start=datetime(2024, 1, 1, tzinfo=UTC),
    )
    assert SENSOR.parse(batch, flipped).rows.select("tenant_id", "uncatalogued").rows() == [
        ("t3", True),
        ("t3", False),
    ]


def test_a_tenant_pair_cannot_be_spelled_by_another_tenant() -> None:
    """(tenant `t1/x`, metric `y`) and (tenant `t1`, metric `x/y`) are different entries."""
    catalog = MetricCatalog(frozenset({("t1/x", "y")}), {"*": "reject"})
    config = ContractConfig(catalog=catalog, max_future_s=600, partitions_start=datetime(2024, 1, 1, tzinfo=UTC))
    parsed = SWEEP.parse(
        messages([sweep_batch(tenant_id="t1/x", metric="y"), sweep_batch(tenant_id="t1", metric="x/y")]), config
    )
    assert parsed.rows.select("tenant_id", "metric").rows() == [("t1/x", "y")]
    assert parsed.rejects.select("kafka_offset", "reason").rows() == [(1, "unknown_metric")]
