"""A known dataset for the ingest tests: valid, duplicate, late, out-of-order, fan-out and every kind
of malformed message, with the rows and rejects it must produce written out by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.stack import domain_topic, produce

KEY = "t1-f1-mc-01"


def reading(
    time: str,
    value: float,
    *,
    machine: str = "mc-01",
    metric: str = "temp",
    event_id: str | None = None,
    sensor: str = "s-001",
    **extra: object,
) -> bytes:
    body: dict[str, object] = {
        "time": time,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": machine,
        "sensor_id": sensor,
        "metric": metric,
        "value": value,
    }
    if event_id:
        body["event_id"] = event_id
    body.update(extra)
    return json.dumps(body).encode()


# (partition, value) in produce order; offsets follow per partition.
P0: list[bytes] = [
    reading("2025-08-20T03:12:00Z", 23.7, event_id="e1", payload={"source": "edge-01"}),  # 0 ok
    reading("2025-08-20T03:13:00Z", 24.1, event_id="e2"),  # 1 ok
    reading("2025-08-20T03:12:00Z", 23.7, event_id="e1", payload={"source": "edge-01"}),  # 2 replay of 0
    reading("2025-08-20T01:59:59.500Z", 20.0, event_id="e3"),  # 3 late, older hour
    reading("2025-08-20T03:05:00Z", 22.5, event_id="e4"),  # 4 out of order
    b"this is not json",  # 5
    b'[{"time": "2025-08-20T03:12:00Z"}]',  # 6 not an object
    b'{"time":"2025-08-20T03:12:00Z","factory_id":"f1","machine_id":"mc-01","sensor_id":"s-001",'
    b'"metric":"temp","value":1.0}',  # 7 missing tenant_id
    reading("2025-08-20T03:12:00Z", 1.0, machine=7),  # type: ignore[arg-type]  # 8 wrong type
    b'{"time":"2025-08-20T03:14:00Z","tenant_id":"t1","factory_id":"f1","machine_id":"mc-01",'
    b'"sensor_id":"s-001","metric":"temp","value":NaN}',  # 9 NaN
    b'{"time":"2025-08-20T03:14:00Z","tenant_id":"t1","factory_id":"f1","machine_id":"mc-01",'
    b'"sensor_id":"s-001","metric":"temp","value":1e999}',  # 10 overflows to infinity
    reading("2025-08-20 03:15:00", 1.0),  # 11 not ISO-8601
    reading("2025-08-20T10:15:00+07:00", 1.0),  # 12 not UTC
    reading("2099-01-01T00:00:00Z", 1.0),  # 13 absurdly in the future
    reading("2025-08-20T03:16:00Z", 1.0, metric="flux"),  # 14 unknown metric
    reading("2025-08-20T03:17:00Z", 1.0, schema_version=9),  # 15 unsupported version
    b"\xff\xfe\x00garbage",  # 16 not UTF-8
    reading("2025-08-20T03:18:00Z", 1.0, tenant_id=""),  # 17 empty identifier
]
P1: list[bytes] = [
    reading("2025-08-20T03:20:00Z", 30.0, machine="mc-02"),  # 0 ok, natural key
    reading("2025-08-20T03:20:00Z", 30.0, machine="mc-02"),  # 1 natural-key duplicate of 0
    json.dumps(
        {  # 2 schema_version 2: one message, two metrics
            "schema_version": 2,
            "time": "2025-08-20T03:30:00Z",
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "mc-02",
            "sensor_id": "s-002",
            "metrics": {"temp": 31.5, "humidity": 40.25},
            "units": {"temp": "degC"},
            "event_id": "e5",
        }
    ).encode(),
]
P2: list[bytes] = [
    reading("2025-08-20T02:30:00Z", 21.0, machine="mc-03", event_id="e6"),  # 0 ok
    b"",  # 1 empty value
]

MESSAGES = {0: P0, 1: P1, 2: P2}
TOTAL = sum(len(v) for v in MESSAGES.values())


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# (time, machine, sensor, metric, value, event_id, schema_version, kafka_partition, kafka_offset)
EXPECTED_ROWS = sorted(
    [
        (ts("2025-08-20T03:12:00Z"), "mc-01", "s-001", "temp", 23.7, "e1", 1, 0, 0),
        (ts("2025-08-20T03:13:00Z"), "mc-01", "s-001", "temp", 24.1, "e2", 1, 0, 1),
        (ts("2025-08-20T01:59:59.5Z"), "mc-01", "s-001", "temp", 20.0, "e3", 1, 0, 3),
        (ts("2025-08-20T03:05:00Z"), "mc-01", "s-001", "temp", 22.5, "e4", 1, 0, 4),
        (ts("2025-08-20T03:20:00Z"), "mc-02", "s-001", "temp", 30.0, None, 1, 1, 0),
        (ts("2025-08-20T03:30:00Z"), "mc-02", "s-002", "temp", 31.5, "e5", 2, 1, 2),
        (ts("2025-08-20T03:30:00Z"), "mc-02", "s-002", "humidity", 40.25, "e5", 2, 1, 2),
        (ts("2025-08-20T02:30:00Z"), "mc-03", "s-001", "temp", 21.0, "e6", 1, 2, 0),
    ]
)

# (kafka_partition, kafka_offset, reason)
EXPECTED_REJECTS = sorted(
    [
        (0, 5, "not_json"),
        (0, 6, "not_object"),
        (0, 7, "missing_field"),
        (0, 8, "wrong_type"),
        (0, 9, "non_finite"),
        (0, 10, "non_finite"),
        (0, 11, "bad_time"),
        (0, 12, "bad_time"),
        (0, 13, "future_time"),
        (0, 14, "unknown_metric"),
        (0, 15, "unsupported_schema_version"),
        (0, 16, "not_utf8"),
        (0, 17, "invalid_value"),
        (2, 1, "not_json"),
    ]
)

EXPECTED_OFFSETS = {0: len(P0), 1: len(P1), 2: len(P2)}


def produce_dataset(settings: PlatformSettings) -> str:
    """Each partition's messages to its own partition of the sensor topic (the expected rows name their
    offsets); the topic returned."""
    topic = domain_topic(settings)
    for partition, values in MESSAGES.items():
        produce(settings.kafka_brokers, topic, [(KEY, v) for v in values], partition=partition)
    return topic
