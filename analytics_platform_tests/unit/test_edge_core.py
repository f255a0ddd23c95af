"""Pure parts of the edge agent: backpressure hysteresis and dwell, the disk queue's bookkeeping
and crash survival, canonical keys and event ids, the contract verdicts, MQTT topic mapping."""

from __future__ import annotations

import multiprocessing
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from edge_agents.backpressure import Backpressure
from edge_agents.canonical import Canonicalizer, content_event_id, kafka_key, time_text
from edge_agents.config import ContractConfigModel, KafkaConfig, MQTTMapping
from edge_agents.sources.mqtt import MappingError, TopicMapper, to_payloads
from edge_agents.store import DiskQueue, entry_size

# ----- backpressure -----------------------------------------------------------------------------


def test_backpressure_switches_after_the_delay_and_both_ways() -> None:
    bp = Backpressure(high=1000, low=500, delay_s=5)
    assert bp.update(1001, 0.0) is None  # above high, but not yet for 5 s
    assert bp.update(1500, 4.9) is None
    assert bp.update(1200, 5.0) is True and bp.slow
    assert bp.update(700, 6.0) is None  # between the thresholds: stays slow (hysteresis)
    assert bp.update(499, 7.0) is None
    assert bp.update(0, 11.9) is None
    assert bp.update(10, 12.0) is False and not bp.slow


def test_backpressure_dwell_restarts_when_the_condition_breaks() -> None:
    bp = Backpressure(high=10, low=5, delay_s=5)
    assert bp.update(11, 0.0) is None
    assert bp.update(10, 3.0) is None  # not above high: the dwell starts over
    assert bp.update(11, 4.0) is None
    assert bp.update(11, 8.9) is None
    assert bp.update(11, 9.0) is True


def test_backpressure_zero_delay_and_bad_thresholds() -> None:
    bp = Backpressure(high=2, low=1, delay_s=0)
    assert bp.update(3, 0.0) is True
    assert bp.update(0, 0.0) is False
    with pytest.raises(ValueError, match="low"):
        Backpressure(high=5, low=5, delay_s=1)


# ----- the disk queue -----------------------------------------------------------------------------


def rows(n: int, start: int = 0) -> list[tuple[str, bytes, bytes, float]]:
    return [("topic", f"k{i % 3}".encode(), f"value-{i}".encode(), 1000.0 + i) for i in range(start, start + n)]


def test_queue_numbers_in_order_and_counts_bytes(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q.db")
    first = queue.append(rows(3))
    second = queue.append(rows(2, 3))
    assert [e.seq for e in first + second] == [1, 2, 3, 4, 5]
    assert first[0].size == entry_size("topic", b"k0", b"value-0") == 5 + 2 + 7
    assert (queue.count, queue.bytes) == (5, 5 * 14)
    assert [e.value for e in queue.read_after(2, 10)] == [b"value-2", b"value-3", b"value-4"]
    assert queue.delete([2, 4, 99]) == (2, 28)  # 99 was never there: counts nothing
    assert [e.seq for e in queue.read_after(0, 10)] == [1, 3, 5]
    assert queue.oldest_enqueued_at() == 1000.0
    queue.delete([1, 3, 5])
    assert (queue.count, queue.bytes, queue.oldest_enqueued_at()) == (0, 0, None)
    # AUTOINCREMENT: numbers never come back, even with the table empty
    assert [e.seq for e in queue.append(rows(1))] == [6]


def test_queue_drop_oldest_frees_at_least_what_is_asked(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q.db")
    queue.append(rows(5))
    assert queue.drop_oldest(20) == [1, 2]  # 14 bytes each
    assert (queue.count, queue.bytes) == (3, 42)
    assert [e.seq for e in queue.read_after(0, 10)] == [3, 4, 5]


def test_queue_keeps_only_the_newest_rejects(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q.db", keep_rejects=100)
    for i in range(250):
        queue.add_rejects([("src", "sensor", "wrong_type", f"n{i}", b"x")])
    kept = queue.rejects(1000)
    # trimmed to the newest 100 after the 101st and the 202nd insert, then 48 more arrived
    assert len(kept) == 148
    assert (kept[0][4], kept[-1][4]) == ("n249", "n102")


def _append_then_die(path: str) -> None:
    queue = DiskQueue(Path(path))
    queue.append(rows(1000))
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint


def test_queue_survives_kill_9(tmp_path: Path) -> None:
    process = multiprocessing.get_context("spawn").Process(target=_append_then_die, args=(str(tmp_path / "q.db"),))
    process.start()
    process.join(30)
    assert process.exitcode == -signal.SIGKILL
    queue = DiskQueue(tmp_path / "q.db")
    assert queue.count == 1000
    assert [e.value for e in queue.read_after(998, 10)] == [b"value-998", b"value-999"]


# ----- canonical --------------------------------------------------------------------------------

READING = {
    "time": "2026-11-23T10:00:00Z",
    "tenant_id": "t1",
    "factory_id": "f1",
    "machine_id": "mc-01",
    "sensor_id": "s-temp",
    "metric": "temp",
    "value": 23.7,
}


def test_keys_per_domain() -> None:
    assert kafka_key("sensor", READING) == "t1-f1-mc-01"
    assert kafka_key("lab", {"tenant_id": "t1", "factory_id": "f2", "station_id": "lab-01"}) == "t1-f2-lab-01"


def test_event_id_depends_on_content_only() -> None:
    same = dict(reversed(list(READING.items())))
    assert content_event_id("sensor", READING) == content_event_id("sensor", same)
    assert content_event_id("sensor", READING) == content_event_id("sensor", {**READING, "event_id": "ignored"})
    assert content_event_id("sensor", READING) != content_event_id("sensor", {**READING, "value": 23.8})
    assert content_event_id("sensor", READING) != content_event_id("device", READING)
    assert len(content_event_id("sensor", READING)) == 32


def test_encode_keeps_a_senders_event_id_and_prefixes_topics() -> None:
    canonical = Canonicalizer(KafkaConfig(topic_prefix="plant7."), ContractConfigModel())
    out = canonical.encode("sensor", {**READING, "event_id": "e-1"})
    assert (out.topic, out.key) == ("plant7.sensors.device.readings", b"t1-f1-mc-01")
    assert orjson.loads(out.value) == {**READING, "event_id": "e-1"}
    generated = orjson.loads(canonical.encode("sensor", READING).value)
    assert generated["event_id"] == content_event_id("sensor", READING)


def test_contract_verdicts_per_value() -> None:
    canonical = Canonicalizer(KafkaConfig(), ContractConfigModel(max_future_s=60))
    now = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC)
    values = [
        orjson.dumps(READING),
        orjson.dumps({**READING, "metric": "tmep"}),
        orjson.dumps({k: v for k, v in READING.items() if k != "sensor_id"}),
        orjson.dumps({**READING, "time": "2026-11-23T10:05:00Z"}),
        b"{not json",
    ]
    verdicts = canonical.check("sensor", values, now)
    assert verdicts[0] is None
    assert verdicts[1] == ("unknown_metric", "metric 'tmep' is not in the metrics catalogue")
    assert [v[0] if v else None for v in verdicts[2:]] == ["missing_field", "future_time", "not_json"]


def test_time_text_is_utc_with_z() -> None:
    from datetime import timedelta, timezone

    ts = datetime(2026, 11, 23, 19, 0, 0, 5, tzinfo=timezone(timedelta(hours=9)))
    assert time_text(ts) == "2026-11-23T10:00:00.000005Z"


# ----- MQTT mapping -----------------------------------------------------------------------------

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
DEFAULTS = {"tenant_id": "t1", "factory_id": "f1", "machine_id": None}


def mapping(**fields) -> MQTTMapping:
    return MQTTMapping(**fields)


def test_topic_patterns_capture_levels() -> None:
    value = mapping(topic="plant/{factory_id}/{machine_id}/{metric}", format="value", fields={"sensor_id": "s"})
    wild = mapping(topic="gw/+/canonical/#")
    mapper = TopicMapper([value, wild])
    assert TopicMapper.subscription(value) == "plant/+/+/+"
    assert mapper.match("plant/f2/mc-9/temp") == (value, {"factory_id": "f2", "machine_id": "mc-9", "metric": "temp"})
    assert mapper.match("gw/x/canonical/a/b") == (wild, {})
    assert mapper.match("plant/f2/mc-9") is None
    assert mapper.match("plant/f2/mc-9/temp/extra") is None
    assert mapper.match("plant//mc-9/temp") is None  # an empty capture would be an empty id


def test_value_format_scales_and_takes_receipt_time() -> None:
    m = mapping(topic="p/{machine_id}/{metric}", format="value", scale=0.1, offset=-1, fields={"sensor_id": "s1"})
    [payload] = to_payloads(m, {"machine_id": "mc-2", "metric": "temp"}, b" 250 ", DEFAULTS, "src", NOW)
    assert payload == {
        "time": "2026-11-23T10:00:00.000000Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "mc-2",
        "sensor_id": "s1",
        "metric": "temp",
        "value": 24.0,
        "payload": {"source": "src"},
    }


def test_json_format_reads_paths_and_time() -> None:
    m = mapping(
        topic="j/{machine_id}",
        format="json",
        values={"temp": "d.t", "humidity": "d.h"},
        time_path="at",
        fields={"sensor_id": "s"},
    )
    body = orjson.dumps({"at": 1795428000, "d": {"t": 60, "h": 41.5}})
    out = to_payloads(m, {"machine_id": "m"}, body, DEFAULTS, "src", NOW)
    assert [(p["metric"], p["value"], p["time"]) for p in out] == [
        ("temp", 60.0, "2026-11-23T10:00:00.000000Z"),
        ("humidity", 41.5, "2026-11-23T10:00:00.000000Z"),
    ]
    ms = to_payloads(
        m, {"machine_id": "m"}, orjson.dumps({"at": 1795428000250, "d": {"t": 1, "h": 2}}), DEFAULTS, "s", NOW
    )
    assert ms[0]["time"] == "2026-11-23T10:00:00.250000Z"


def test_canonical_format_fills_only_what_is_missing() -> None:
    m = mapping(topic="c/{machine_id}", domain="device", fields={"factory_id": "f9"})
    body = orjson.dumps({"time": "2026-11-23T10:00:00Z", "tenant_id": "t7", "status": "online"})
    [payload] = to_payloads(m, {"machine_id": "mc-3"}, body, DEFAULTS, "src", NOW)
    assert payload == {
        "time": "2026-11-23T10:00:00Z",
        "tenant_id": "t7",
        "status": "online",
        "factory_id": "f9",
        "machine_id": "mc-3",
    }


@pytest.mark.parametrize(
    ("fmt", "body", "reason"),
    [
        ("value", b"hot", "wrong_type"),
        ("value", b"nan", "non_finite"),
        ("json", b"[1]", "not_object"),
        ("json", b"{", "not_json"),
        ("json", b'{"d": {"t": "x"}, "at": 0}', "wrong_type"),
        ("json", b'{"d": {"t": true}, "at": 0}', "wrong_type"),
        ("json", b'{"d": {}, "at": 0}', "missing_field"),
        ("json", b'{"d": {"t": 1}, "at": "yesterday"}', "bad_time"),
        ("json", b'{"d": {"t": 1}, "at": "2026-11-23T10:00:00"}', "bad_time"),
    ],
)
def test_mapping_errors_name_their_reason(fmt: str, body: bytes, reason: str) -> None:
    if fmt == "value":
        m = mapping(topic="p/{metric}", format="value", fields={"sensor_id": "s"})
        captured = {"metric": "temp"}
    else:
        m = mapping(topic="p", format="json", values={"temp": "d.t"}, time_path="at", fields={"sensor_id": "s"})
        captured = {}
    with pytest.raises(MappingError) as error:
        to_payloads(m, captured, body, DEFAULTS, "src", NOW)
    assert error.value.reason == reason


def test_encode_refuses_what_json_cannot_carry() -> None:
    from analytics_platform.contracts.base import ContractViolation

    canonical = Canonicalizer(KafkaConfig(), ContractConfigModel())
    with pytest.raises(ContractViolation) as error:
        canonical.encode("sensor", {**READING, "payload": {"probe": [1.0, float("inf")]}})
    assert (error.value.reason, error.value.detail) == ("non_finite", "payload.probe[1] is not a finite number")
    with pytest.raises(ContractViolation) as error:
        canonical.encode("sensor", [READING])  # type: ignore[arg-type]
    assert (error.value.reason, error.value.detail) == ("not_object", "payload is list, not an object")


def test_the_example_config_passes_check(capsys: pytest.CaptureFixture[str]) -> None:
    from edge_agents.cli import main

    example = Path(__file__).resolve().parents[2] / "edge_agents" / "examples" / "agent.yaml"
    assert main(["check", "--config", str(example)]) == 0
    assert (
        "sources: line1-mqtt (mqtt), press-plc (opcua), meter (modbus), lab-webhook (http)" in capsys.readouterr().out
    )


def test_the_agents_check_gives_the_drains_verdicts() -> None:
    """`Contract.verdicts` (the agent) and `Contract.parse` (the drain) reject the same messages
    for the same reasons: the simulator's malformed, late and duplicate traffic on every topic."""
    import polars as pl

    from analytics_platform.contracts.base import MESSAGE_SCHEMA
    from edge_agents.simulator import PlantSimulator, SimulatorConfig

    simulator = PlantSimulator(SimulatorConfig(malformed=0.3, late=0.1, duplicate=0.1, seed=11))
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    by_topic: dict[str, list[bytes]] = {}
    for message in simulator.messages(now, 3000):
        by_topic.setdefault(message.topic, []).append(message.value)
    canonical = Canonicalizer(KafkaConfig(), ContractConfigModel())
    domains = {c.default_topic: d for d, c in canonical.contracts.items()}
    rejected = 0
    for topic, values in by_topic.items():
        contract = canonical.contracts[domains[topic]]
        n = len(values)
        frame = pl.DataFrame(
            {
                "topic": [topic] * n,
                "kafka_partition": [0] * n,
                "kafka_offset": list(range(n)),
                "kafka_key": [b""] * n,
                "kafka_ts": [now] * n,
                "value": values,
            },
            schema=MESSAGE_SCHEMA,
        )
        parsed = contract.parse(frame, canonical.rules, values)
        drain = {o: (r, d) for o, r, d in parsed.rejects.select("kafka_offset", "reason", "detail").iter_rows()}
        assert contract.verdicts(values, now, canonical.rules) == drain
        rejected += len(drain)
    assert rejected > 500
