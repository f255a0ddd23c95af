"""Sparkplug B without a broker: the protobuf bytes against the specification's field numbers, values
by datatype (two's complement, float32), births learning aliases and units, `seq` gaps and unknown
aliases asking for a rebirth (rate-limited), deaths and STATE as device health, historical values
keeping their own time, identities and metric names from configuration. Payloads are hand-built."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from analytics_platform_tests.support.sparkplug import bd_seq, metric, payload
from edge_agents.config import ConfigError, load_config, parse_config
from edge_agents.config import SparkplugSource as SparkplugConfig
from edge_agents.engine import Engine
from edge_agents.sources.sparkplug import (
    BOOLEAN,
    DATETIME,
    DOUBLE,
    FLOAT,
    INT8,
    INT16,
    INT32,
    INT64,
    STRING,
    UINT8,
    UINT32,
    UINT64,
    SparkplugError,
    SparkplugSource,
    SparkplugState,
    decode_payload,
    float32_text,
    message_type,
    metric_value,
    ms_time,
    rebirth_request,
    scaled,
)
from edge_agents.sources.sparkplug_b_pb2 import Payload

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
T0 = 1_764_576_000_000  # 2025-12-01T08:00:00Z in ms
SOURCE: dict[str, Any] = {
    "name": "spb",
    "type": "sparkplug",
    "identity": {"tenant_id": "t1"},
    "nodes": [
        {
            "group_id": "Plant A",
            "edge_node_id": "Gateway1",
            "identity": {"factory_id": "f1", "machine_id": "gw-1"},
            "devices": {"Press1": {"machine_id": "press-1"}, "Oven": {"factory_id": "f2", "machine_id": "oven-9"}},
        }
    ],
    "group_identity": {"Plant B": {"tenant_id": "t2", "factory_id": "f7"}},
    "hosts": {"scada1": {"factory_id": "f1", "machine_id": "scada"}},
    "metrics": {
        "Motor/Temperature": {"metric": "temp", "sensor_id": "s-temp"},
        "Motor/Pressure": {"metric": "pressure", "unit": "bar", "scale": 0.001},
        "Counter": {"metric": "count"},
    },
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(clock: Clock | None = None, **extra: Any) -> SparkplugState:
    return SparkplugState(SparkplugConfig.model_validate({**SOURCE, **extra}), clock or Clock())


def birth_metrics() -> list[dict[str, Any]]:
    return [
        metric("Motor/Temperature", alias=1, datatype=FLOAT, value=21.5, unit="degC"),
        metric("Motor/Pressure", alias=2, datatype=INT32, value=-1500),
        metric("Node Control/Rebirth", alias=3, datatype=BOOLEAN, value=False),
        metric("Uptime", alias=4, datatype=INT64, value=77),  # not in `metrics`
    ]


def born(s: SparkplugState, group: str = "Plant A", node: str = "Gateway1") -> None:
    s.handle(f"spBv1.0/{group}/NBIRTH/{node}", payload([bd_seq(4), *birth_metrics()], seq=0, timestamp=T0), NOW)
    device = [metric("Counter", alias=10, datatype=UINT32, value=7)]
    s.handle(f"spBv1.0/{group}/DBIRTH/{node}/Press1", payload(device, seq=1, timestamp=T0 + 1), NOW)


# ----- the wire format -----------------------------------------------------------------------------


def test_payload_bytes_follow_the_specification_field_numbers() -> None:
    # Payload.timestamp = 1 (varint), metrics = 2, seq = 3; Metric.name = 1, alias = 2, timestamp = 3,
    # datatype = 4, is_historical = 5, double_value = 13 (64-bit): worked out by hand
    body = payload([metric("a", alias=1, datatype=DOUBLE, value=1.5, timestamp=2, historical=True)], seq=3, timestamp=5)
    assert body.hex() == "0805" + "1214" + "0a0161" + "1001" + "1802" + "200a" + "2801" + "69000000000000f83f" + "1803"
    decoded = decode_payload(body)
    assert (decoded.timestamp, decoded.seq) == (5, 3)
    [m] = decoded.metrics
    assert (m.name, m.alias, m.timestamp, m.datatype, m.is_historical, m.double_value) == ("a", 1, 2, 10, True, 1.5)


def test_garbage_is_not_a_payload() -> None:
    with pytest.raises(SparkplugError) as caught:
        decode_payload(b"\xff\xff\xff")
    assert caught.value.reason == "not_protobuf"


def _one(datatype: int, value: Any) -> Payload.Metric:
    return decode_payload(payload([metric("m", datatype=datatype, value=value)])).metrics[0]


@pytest.mark.parametrize(
    ("datatype", "value", "expected"),
    [
        (INT8, -5, -5.0),
        (INT8, 127, 127.0),
        (INT16, -300, -300.0),
        (INT32, -2147483648, -2147483648.0),
        (INT64, -1, -1.0),
        (INT64, 2**62, float(2**62)),
        (UINT8, 255, 255.0),
        (UINT32, 4294967295, 4294967295.0),
        (UINT64, 2**63, float(2**63)),
        (FLOAT, 23.7, 23.7),  # float32 on the wire: 23.700000762939453
        (FLOAT, 0.1, 0.1),
        (DOUBLE, 0.1, 0.1),
        (BOOLEAN, True, 1.0),
        (BOOLEAN, False, 0.0),
    ],
)
def test_values_by_datatype(datatype: int, value: Any, expected: float) -> None:
    assert metric_value(_one(datatype, value), datatype) == expected


def test_twos_complement_on_the_wire() -> None:
    assert _one(INT16, -5).int_value == 65531
    assert _one(INT64, -1).long_value == 2**64 - 1


def test_non_numbers_and_non_finite_values_are_refused() -> None:
    for datatype, value, reason in [
        (STRING, "hot", "wrong_type"),
        (DATETIME, T0, "wrong_type"),
        (DOUBLE, math.nan, "non_finite"),
        (FLOAT, math.inf, "non_finite"),
    ]:
        with pytest.raises(SparkplugError) as caught:
            metric_value(_one(datatype, value), datatype)
        assert caught.value.reason == reason
    with pytest.raises(SparkplugError) as caught:
        metric_value(decode_payload(payload([metric("m", datatype=DOUBLE)])).metrics[0], DOUBLE)
    assert caught.value.reason == "missing_field"


def test_float32_text_is_the_shortest_same_float32() -> None:
    assert float32_text(decode_payload(payload([metric("m", datatype=FLOAT, value=1 / 3)])).metrics[0].float_value) == (
        0.33333334
    )
    assert float32_text(3.4028234663852886e38) == 3.4028235e38  # the largest float32
    assert float32_text(16777216.0) == 16777216.0


def test_scaling_rounds_once_on_the_written_decimals() -> None:
    assert scaled(-1400.0, 0.001, 0.0) == -1.4  # float arithmetic: -1.4000000000000001
    assert scaled(0.1, 3.0, 0.0) == 0.3  # float arithmetic: 0.30000000000000004
    assert scaled(98.6, 1.0, -32.0) == 66.6
    assert scaled(2.5, 1.0, 0.0) == 2.5


def test_ms_time_is_exact() -> None:
    assert ms_time(T0 + 123) == datetime(2025, 12, 1, 8, 0, 0, 123000, tzinfo=UTC)
    assert ms_time(1) == datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)
    assert ms_time(253_402_300_799_999) == datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    for bad in (253_402_300_800_000, 2**64 - 1, -1, 1.5, True, "1"):
        with pytest.raises(SparkplugError) as caught:
            ms_time(bad)
        assert caught.value.reason == "bad_time"


def test_garbage_timestamps_are_rejects_not_crashes() -> None:
    s = state()
    with pytest.raises(SparkplugError) as caught:
        s.handle("spBv1.0/Plant A/NBIRTH/Gateway1", payload([bd_seq(0)], seq=0, timestamp=2**64 - 1), NOW)
    assert caught.value.reason == "bad_time"
    born(s)
    out = s.handle(
        "spBv1.0/Plant A/NDATA/Gateway1",
        payload(
            [metric(alias=1, datatype=FLOAT, value=1.0, timestamp=2**63), metric(alias=1, datatype=FLOAT, value=2.0)],
            seq=2,
            timestamp=T0,
        ),
        NOW,
    )
    assert [r["value"] for r in out.sensor] == [2.0]
    assert [reason for reason, _ in out.rejects] == ["bad_time"]
    with pytest.raises(SparkplugError) as caught:
        s.handle("spBv1.0/STATE/scada1", b'{"online": true, "timestamp": 99999999999999999999}', NOW)
    assert caught.value.reason == "bad_state"


def test_rebirth_request_is_node_control_rebirth_true() -> None:
    decoded = decode_payload(rebirth_request(T0))
    [m] = decoded.metrics
    assert (decoded.timestamp, m.name, m.datatype, m.boolean_value, m.timestamp) == (
        T0,
        "Node Control/Rebirth",
        BOOLEAN,
        True,
        T0,
    )


# ----- births and data -----------------------------------------------------------------------------


def test_births_learn_names_aliases_units_and_their_values_are_readings() -> None:
    s = state()
    out = s.handle("spBv1.0/Plant A/NBIRTH/Gateway1", payload([bd_seq(4), *birth_metrics()], seq=0, timestamp=T0), NOW)
    assert out.rebirth is None and out.rejects == []
    assert out.ignored == {"unmapped_metric": 1}  # Uptime; bdSeq and Node Control/* are not metrics
    assert out.device == [
        {
            "time": "2025-12-01T08:00:00.000000Z",
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "gw-1",
            "status": "online",
            "level": "ok",
        }
    ]
    assert out.sensor == [
        {
            "time": "2025-12-01T08:00:00.000000Z",
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "gw-1",
            "sensor_id": "s-temp",
            "metric": "temp",
            "value": 21.5,
            "unit": "degC",  # from the birth's engUnit property
            "payload": {"source": "spb"},
        },
        {
            "time": "2025-12-01T08:00:00.000000Z",
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "gw-1",
            "sensor_id": "Gateway1",  # no sensor_id configured: the node's id
            "metric": "pressure",
            "value": -1.5,  # Int32 -1500 × 0.001
            "unit": "bar",  # configured: wins over the properties
            "payload": {"source": "spb"},
        },
    ]
    session = s.sessions[("Plant A", "Gateway1")]
    assert session.bd_seq == 4 and session.seq == 0
    assert {a: k.name for a, k in session.aliases.items()} == {
        1: "Motor/Temperature",
        2: "Motor/Pressure",
        3: "Node Control/Rebirth",
        4: "Uptime",
    }


def test_data_by_alias_map_to_the_device_identity_and_keep_their_units() -> None:
    s = state()
    born(s)
    out = s.handle(
        "spBv1.0/Plant A/DDATA/Gateway1/Press1",
        payload([metric(alias=10, value=8, datatype=UINT32)], seq=2, timestamp=T0 + 1000),
        NOW,
    )
    [reading] = out.sensor
    assert reading == {
        "time": "2025-12-01T08:00:01.000000Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "press-1",
        "sensor_id": "Press1",
        "metric": "count",
        "value": 8.0,
        "payload": {"source": "spb"},
    }
    # node data by alias: the birth's name, unit and identity (Float → its float32 text)
    out = s.handle(
        "spBv1.0/Plant A/NDATA/Gateway1",
        payload([metric(alias=1, value=22.1, datatype=FLOAT)], seq=3, timestamp=T0 + 2000),
        NOW,
    )
    assert out.rebirth is None
    [reading] = out.sensor
    assert (reading["metric"], reading["value"], reading["unit"], reading["machine_id"]) == (
        "temp",
        pytest.approx(22.1, abs=0),
        "degC",
        "gw-1",
    )


def test_datatype_on_the_data_message_is_not_needed() -> None:
    s = state()
    born(s)
    raw = Payload(seq=2, timestamp=T0)
    m = raw.metrics.add()
    m.alias, m.int_value = 2, 2**32 - 2000  # Int32 -2000, datatype from the birth
    [reading] = s.handle("spBv1.0/Plant A/NDATA/Gateway1", raw.SerializeToString(), NOW).sensor
    assert reading["value"] == -2.0


def test_historical_values_keep_their_own_timestamps() -> None:
    s = state()
    born(s)
    out = s.handle(
        "spBv1.0/Plant A/NDATA/Gateway1",
        payload(
            [
                metric(alias=1, datatype=FLOAT, value=20.5, timestamp=T0 - 3_600_000, historical=True),
                metric(alias=1, datatype=FLOAT, value=20.75, timestamp=T0 - 1_800_123, historical=True),
                metric(alias=1, datatype=FLOAT, value=21.0),  # current: the message's time
            ],
            seq=2,
            timestamp=T0 + 5000,
        ),
        NOW,
    )
    assert [(r["time"], r["value"], r["payload"]) for r in out.sensor] == [
        ("2025-12-01T07:00:00.000000Z", 20.5, {"source": "spb", "historical": True}),
        ("2025-12-01T07:29:59.877000Z", 20.75, {"source": "spb", "historical": True}),
        ("2025-12-01T08:00:05.000000Z", 21.0, {"source": "spb"}),
    ]


def test_a_message_without_timestamps_takes_the_receipt_time() -> None:
    s = state()
    born(s)
    [reading] = s.handle(
        "spBv1.0/Plant A/NDATA/Gateway1", payload([metric(alias=1, datatype=FLOAT, value=1.0)], seq=2), NOW
    ).sensor
    assert reading["time"] == "2026-12-01T08:00:00.000000Z"


def test_null_values_and_unmapped_metrics() -> None:
    s = state()
    born(s)
    out = s.handle(
        "spBv1.0/Plant A/NDATA/Gateway1",
        payload([metric(alias=1, datatype=FLOAT, null=True), metric(alias=4, datatype=INT64, value=9)], seq=2),
        NOW,
    )
    assert (out.sensor, out.ignored, out.rejects) == ([], {"null": 1, "unmapped_metric": 1}, [])
    strict = state(unmapped_metrics="reject")
    born(strict)
    out = strict.handle(
        "spBv1.0/Plant A/NDATA/Gateway1", payload([metric(alias=4, datatype=INT64, value=9)], seq=2), NOW
    )
    assert out.rejects == [("unmapped_metric", "Plant A/Gateway1: metric 'Uptime' is not in `metrics`")]


def test_a_string_metric_mapped_to_a_reading_is_a_reject() -> None:
    s = state()
    s.handle(
        "spBv1.0/Plant A/NBIRTH/Gateway1",
        payload([bd_seq(0), metric("Counter", alias=5, datatype=STRING, value="x")], seq=0),
        NOW,
    )
    out = s.handle("spBv1.0/Plant A/NDATA/Gateway1", payload([metric(alias=5, datatype=STRING, value="y")], seq=1), NOW)
    assert out.sensor == []
    assert out.rejects == [("wrong_type", "Plant A/Gateway1: metric 5: datatype 12 is not numeric")]


# ----- seq, aliases, rebirth -----------------------------------------------------------------------


def test_a_seq_gap_asks_for_a_rebirth_once_per_interval_and_still_delivers() -> None:
    clock = Clock()
    s = state(clock)
    born(s)  # seq 0, 1
    value = [metric(alias=1, datatype=FLOAT, value=1.0)]
    out = s.handle("spBv1.0/Plant A/NDATA/Gateway1", payload(value, seq=4), NOW)  # 2, 3 lost
    assert (out.seq_gaps, out.rebirth, out.rebirth_reason, len(out.sensor)) == (
        1,
        ("Plant A", "Gateway1"),
        "seq_gap",
        1,
    )
    out = s.handle("spBv1.0/Plant A/NDATA/Gateway1", payload(value, seq=9), NOW)
    assert (out.seq_gaps, out.rebirth) == (1, None)  # counted; asked 0 s ago
    clock.now += 5.0  # rebirth_interval_s
    out = s.handle("spBv1.0/Plant A/NDATA/Gateway1", payload(value, seq=11), NOW)
    assert (out.seq_gaps, out.rebirth) == (1, ("Plant A", "Gateway1"))
    # the rebirth arrives: seq starts again at 0 and a new gap may ask at once
    born(s)
    out = s.handle("spBv1.0/Plant A/NDATA/Gateway1", payload(value, seq=3), NOW)
    assert (out.seq_gaps, out.rebirth) == (1, ("Plant A", "Gateway1"))


def test_seq_wraps_after_255() -> None:
    s = state()
    born(s)
    s.sessions[("Plant A", "Gateway1")].seq = 254
    value = [metric(alias=1, datatype=FLOAT, value=1.0)]
    for seq in (255, 0, 1):
        out = s.handle("spBv1.0/Plant A/NDATA/Gateway1", payload(value, seq=seq), NOW)
        assert (out.seq_gaps, out.rebirth) == (0, None)


def test_an_unknown_alias_asks_for_a_rebirth_and_the_known_ones_are_delivered() -> None:
    s = state()
    born(s)
    out = s.handle(
        "spBv1.0/Plant A/NDATA/Gateway1",
        payload([metric(alias=99, datatype=DOUBLE, value=1.0), metric(alias=1, datatype=FLOAT, value=2.0)], seq=2),
        NOW,
    )
    assert (out.unknown_aliases, out.rebirth_reason, out.seq_gaps) == (1, "unknown_alias", 0)
    assert [r["value"] for r in out.sensor] == [2.0]


def test_aliases_are_per_edge_node_and_a_device_alias_is_not_the_node_s_metric() -> None:
    s = state()
    born(s)
    # alias 10 is Press1's Counter; on the node's own data it still means Counter (aliases are unique per
    # edge node), but the reading belongs to the device the birth declared it for
    out = s.handle(
        "spBv1.0/Plant A/DDATA/Gateway1/Press1", payload([metric(alias=10, datatype=UINT32, value=3)], seq=2), NOW
    )
    assert [(r["machine_id"], r["metric"]) for r in out.sensor] == [("press-1", "count")]


def test_data_before_any_birth_asks_for_one() -> None:
    s = state()
    out = s.handle("spBv1.0/Plant A/NDATA/Gateway1", payload([metric(alias=1, datatype=FLOAT, value=1.0)], seq=7), NOW)
    assert (out.sensor, out.rebirth, out.rebirth_reason, out.ignored) == (
        [],
        ("Plant A", "Gateway1"),
        "no_birth",
        {"no_birth": 1},
    )


def test_unknown_nodes_commands_and_other_topics() -> None:
    s = state()
    assert s.handle("spBv1.0/Plant C/NBIRTH/X", b"", NOW).ignored == {"unknown_node": 1}
    assert s.handle("spBv1.0/Plant A/NBIRTH/Other", b"", NOW).ignored == {"unknown_node": 1}
    assert s.handle("spBv1.0/Plant A/NCMD/Gateway1", rebirth_request(T0), NOW).ignored == {"command": 1}
    for topic, reason in [
        ("spBv1.0/Plant A/DDATA/Gateway1", "unmapped_topic"),
        ("spBv1.0/Plant A/NFOO/Gateway1", "unmapped_topic"),
        ("plant/a/b/c", "unmapped_topic"),
    ]:
        born(s)
        with pytest.raises(SparkplugError) as caught:
            s.handle(topic, payload([], seq=2), NOW)
        assert caught.value.reason == reason


def test_message_types_for_the_counters() -> None:
    assert [
        message_type(t)
        for t in (
            "spBv1.0/Plant A/NDATA/Gateway1",
            "spBv1.0/Plant A/DDATA/Gateway1/Press1",
            "spBv1.0/STATE/scada1",
            "spBv1.0/Plant A",  # `spBv1.0/Plant A/#` matches its parent level too
            "spBv1.0/Plant A/x/y/z/w",
        )
    ] == ["NDATA", "DDATA", "STATE", "other", "other"]
    with pytest.raises(SparkplugError) as caught:
        state().handle("spBv1.0/Plant A", b"", NOW)
    assert caught.value.reason == "unmapped_topic"


# ----- death, health, STATE ------------------------------------------------------------------------


def test_ndeath_is_offline_for_the_node_and_its_devices() -> None:
    s = state()
    born(s)
    s.handle("spBv1.0/Plant A/DBIRTH/Gateway1/Oven", payload([], seq=2, timestamp=T0), NOW)
    out = s.handle("spBv1.0/Plant A/NDEATH/Gateway1", payload([bd_seq(4)]), NOW)
    assert [(h["factory_id"], h["machine_id"], h["status"], h["level"], h["time"]) for h in out.device] == [
        ("f1", "gw-1", "offline", "critical", "2026-12-01T08:00:00.000000Z"),
        ("f2", "oven-9", "offline", "critical", "2026-12-01T08:00:00.000000Z"),
        ("f1", "press-1", "offline", "critical", "2026-12-01T08:00:00.000000Z"),
    ]
    assert ("Plant A", "Gateway1") not in s.sessions


def test_a_stale_ndeath_of_an_older_session_is_ignored() -> None:
    s = state()
    born(s)  # bdSeq 4
    out = s.handle("spBv1.0/Plant A/NDEATH/Gateway1", payload([bd_seq(3)]), NOW)
    assert (out.device, out.ignored) == ([], {"stale_death": 1})
    assert ("Plant A", "Gateway1") in s.sessions


def test_ddeath_is_offline_for_the_device() -> None:
    s = state()
    born(s)
    out = s.handle("spBv1.0/Plant A/DDEATH/Gateway1/Press1", payload([], seq=2, timestamp=T0 + 9), NOW)
    assert [(h["machine_id"], h["status"], h["time"]) for h in out.device] == [
        ("press-1", "offline", "2025-12-01T08:00:00.009000Z")
    ]
    assert s.sessions[("Plant A", "Gateway1")].devices == set()


def test_a_group_identity_names_machines_after_their_sparkplug_ids() -> None:
    s = state()
    born(s, group="Plant B", node="Edge7")
    out = s.handle(
        "spBv1.0/Plant B/DDATA/Edge7/Press1", payload([metric(alias=10, datatype=UINT32, value=1)], seq=2), NOW
    )
    [reading] = out.sensor
    assert (reading["tenant_id"], reading["factory_id"], reading["machine_id"], reading["sensor_id"]) == (
        "t2",
        "f7",
        "Press1",
        "Press1",
    )
    out = s.handle("spBv1.0/Plant B/NDEATH/Edge7", payload([bd_seq(4)]), NOW)
    assert [(h["tenant_id"], h["machine_id"]) for h in out.device] == [("t2", "Edge7"), ("t2", "Press1")]


def test_state_of_a_host_application_is_its_health() -> None:
    s = state()
    online = s.handle("spBv1.0/STATE/scada1", b'{"online": true, "timestamp": 1764576000000}', NOW).device
    offline = s.handle("spBv1.0/STATE/scada1", b"OFFLINE", NOW).device  # Sparkplug 2.2's form
    assert online == [
        {
            "time": "2025-12-01T08:00:00.000000Z",
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "scada",
            "status": "online",
            "level": "ok",
        }
    ]
    assert [(h["status"], h["time"]) for h in offline] == [("offline", "2026-12-01T08:00:00.000000Z")]
    assert s.handle("spBv1.0/STATE/other", b'{"online": true}', NOW).ignored == {"unknown_host": 1}
    for body in (b"{}", b"nope", b'{"online": "yes"}'):
        with pytest.raises(SparkplugError) as caught:
            s.handle("spBv1.0/STATE/scada1", body, NOW)
        assert caught.value.reason == "bad_state"


# ----- configuration -------------------------------------------------------------------------------


def _errors(source: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [source]})
    return str(caught.value).splitlines()


def test_configuration_errors_name_their_place() -> None:
    assert _errors({**SOURCE, "identity": {}}) == [
        "sources[0]: Plant A/Gateway1: no tenant_id (give it in its identity or the source's)"
    ]
    node = SOURCE["nodes"][0]
    assert _errors({**SOURCE, "nodes": [node, node]}) == ["sources[0]: edge nodes listed twice: ['Plant A/Gateway1']"]
    assert _errors({**SOURCE, "nodes": [], "group_identity": {}}) == [
        "sources[0]: list the edge nodes (`nodes`) or give a group's identity (`group_identity`)"
    ]
    assert _errors({**SOURCE, "metrics": {}})[0].startswith("sources[0].metrics:")
    assert _errors({**SOURCE, "nodes": [{**node, "group_id": "a/b"}]})[0].startswith("sources[0].nodes[0].group_id:")


def test_the_example_configuration_is_valid() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "edge_agents" / "examples" / "sparkplug.yaml")
    [source] = config.sources
    assert isinstance(source, SparkplugConfig)
    assert source.primary_host_id and source.metrics


# ----- the MQTT callback ---------------------------------------------------------------------------


def test_a_message_that_breaks_the_reader_is_a_reject_and_the_source_goes_on(tmp_path: Path) -> None:
    """An invalid UTF-8 metric name parses (proto2 does not check) and comes back as bytes: whatever
    such a message makes the reader raise, paho's network thread must survive it (an exception out of
    `on_message` would end the client's loop). A real engine, never started: rejects are counted."""
    config = parse_config({"queue": {"path": str(tmp_path / "q.db")}, "sources": [SOURCE]})
    engine = Engine(config)
    source = SparkplugSource(config.sources[0], engine)
    try:

        def deliver(topic: str, body: bytes) -> None:
            message = mqtt.MQTTMessage(topic=topic.encode())
            message.payload = body
            source._on_message(source.client, None, message)

        deliver("spBv1.0/Plant A/NBIRTH/Gateway1", bytes([0x12, 0x06, 0x0A, 0x02, 0xFF, 0xFE, 0x10, 0x01]))
        deliver("spBv1.0/Plant A/NDATA/Gateway1", b"\xff\xff")  # not protobuf
        deliver("spBv1.0/STATE/scada1", b"ONLINE")
        snapshot = engine.metrics.snapshot()
    finally:
        engine.queue.close()
    assert snapshot["edge_agent_rejected_total{reason=unreadable,source=spb}"] == 1
    assert snapshot["edge_agent_rejected_total{reason=not_protobuf,source=spb}"] == 1
    assert snapshot["edge_agent_received_total{source=spb}"] == 3  # two rejects, one health event
    assert snapshot["edge_agent_sparkplug_messages_total{source=spb,type=NBIRTH}"] == 1
    assert snapshot["edge_agent_sparkplug_messages_total{source=spb,type=STATE}"] == 1
