"""Pure parts of the edge agent: backpressure hysteresis and dwell, the disk queue's bookkeeping
and crash survival, canonical keys and event ids, the contract verdicts, MQTT topic mapping; and the
engine's producer rebuilds against a stand-in for librdkafka (stalls, error codes, the epoch-bump
loop, no rebuild while the broker is away, backoff)."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import signal
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from analytics_platform.contracts.registry import registry
from edge_agents.backpressure import Backpressure
from edge_agents.canonical import Canonicalizer, content_event_id, time_text
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


def test_queue_keeps_each_messages_trace_context_and_upgrades_an_older_file(tmp_path: Path) -> None:
    """A queue file of an agent from before tracing (no traceparent column) opens, its messages read
    back without a context, and new messages keep theirs until they are sent."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key BLOB NOT NULL,"
        " value BLOB NOT NULL, size INTEGER NOT NULL, enqueued_at REAL NOT NULL);"
        "INSERT INTO queue (topic, key, value, size, enqueued_at) VALUES ('t', x'6b', x'76', 3, 5.0);"
    )
    old.commit()
    old.close()
    queue = DiskQueue(path)
    context = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    added = queue.append([("t", b"k", b"w", 6.0, context), ("t", b"k", b"x", 7.0)])
    assert [(e.seq, e.traceparent) for e in added] == [(2, context), (3, None)]
    assert [(e.seq, e.value, e.traceparent) for e in queue.read_after(0, 10)] == [
        (1, b"v", None),
        (2, b"w", context),
        (3, b"x", None),
    ]
    queue.close()
    reopened = DiskQueue(path)
    assert [e.traceparent for e in reopened.read_after(0, 10)] == [None, context, None]
    reopened.close()


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
    """The Kafka key is the contract's `key_fields` (lab results come from a station)."""
    assert registry().get("sensor").kafka_key(READING) == "t1-f1-mc-01"
    lab = {"tenant_id": "t1", "factory_id": "f2", "station_id": "lab-01"}
    assert registry().get("lab").kafka_key(lab) == "t1-f2-lab-01"


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
    canonical = Canonicalizer(KafkaConfig(), ContractConfigModel(max_future_s=60, unknown_metrics="reject"))
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


def test_by_default_the_platform_judges_metric_names() -> None:
    """The catalogue is tenant data on the platform: an agent forwards a metric it does not know
    (the tenant may have added it, or accept unknown metrics); only `reject` checks it here."""
    values = [orjson.dumps({**READING, "metric": "power_kw"})]
    now = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC)
    assert Canonicalizer(KafkaConfig(), ContractConfigModel()).check("sensor", values, now) == [None]
    local = Canonicalizer(KafkaConfig(), ContractConfigModel(unknown_metrics="reject"))
    assert local.check("sensor", values, now) == [
        ("unknown_metric", "metric 'power_kw' is not in the metrics catalogue")
    ]


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


# ----- the engine's producer rebuilds, against a stand-in for librdkafka -------------------------


class FakeProducer:
    """Stands in for confluent_kafka.Producer, the way the engine uses it. `mode` is what this one does
    with what it is given:
      ack      acknowledges everything on the next poll
      silent   takes messages and never answers (a broker connected, nothing acknowledged)
      away     the same, and its statistics say no broker is connected
      bumping  never answers and bumps its epoch on every statistics tick (librdkafka's loop on
               UnknownProducerId: no error callback, no delivery report)
      dr:<CODE>     fails every delivery with that error code
      error:<CODE>  never answers and reports that code to error_cb once
      raise:<CODE>  never answers and raises that code as a fatal error from poll once (what
                    confluent-kafka does with a fatal error instead of calling error_cb)
    Delivery reports, errors and statistics are served by `poll`, as librdkafka does."""

    def __init__(self, config: dict, mode: str) -> None:
        self.mode = mode
        self.error_cb = config["error_cb"]
        self.stats_cb = config.get("stats_cb")
        self.stats_every = config.get("statistics.interval.ms", 0) / 1000
        self.next_stats = time.monotonic() + self.stats_every
        self.created = time.monotonic()
        self.pending: list[tuple[bytes, Any]] = []  # given, not answered
        self.reports: list[tuple[Any, Any, bytes]] = []  # (callback, error, value) for the next poll
        self.produced: list[bytes] = []
        self.epoch = 0
        self.stats_ticks = 0
        self.errored = False

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.produced.append(value)
        self.pending.append((value, on_delivery))

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        from confluent_kafka import KafkaError

        code = KafkaError._PURGE_INFLIGHT if in_flight else KafkaError._PURGE_QUEUE
        self.reports.extend((callback, KafkaError(code), value) for value, callback in self.pending)
        self.pending = []

    def poll(self, timeout: float = 0) -> int:
        from confluent_kafka import KafkaError, KafkaException

        kind, _, code = self.mode.partition(":")
        if kind == "ack":
            self.reports.extend((callback, None, value) for value, callback in self.pending)
            self.pending = []
        elif kind == "dr":
            error = KafkaError(getattr(KafkaError, code))
            self.reports.extend((callback, error, value) for value, callback in self.pending)
            self.pending = []
        elif kind == "error" and self.pending and not self.errored:
            self.errored = True
            self.error_cb(KafkaError(getattr(KafkaError, code)))
        elif kind == "raise" and self.pending and not self.errored:
            self.errored = True
            raise KafkaException(KafkaError(getattr(KafkaError, code), "unable to retry", fatal=True))
        if self.stats_cb and time.monotonic() >= self.next_stats:
            self.next_stats = time.monotonic() + self.stats_every
            self.stats_ticks += 1
            if kind == "bumping" and self.pending:
                self.epoch += 1
            state = "DOWN" if kind == "away" else "UP"
            stats = {
                "brokers": {"k1:9092/1": {"state": state}},
                "eos": {"producer_id": 7, "producer_epoch": self.epoch},
            }
            self.stats_cb(orjson.dumps(stats).decode())
        reports, self.reports = self.reports, []
        for callback, error, value in reports:
            callback(error, _Message(value))
        if not reports:
            time.sleep(min(timeout, 0.005))
        return len(reports)

    def flush(self, timeout: float = 0) -> int:
        self.poll(0)
        return len(self.pending)

    def __len__(self) -> int:
        return len(self.pending) + len(self.reports)


class _Message:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value


class FakeProducers:
    """The producers the engine makes, in order; the i-th one behaves as `modes[i]` (the last mode
    repeats)."""

    def __init__(self, modes: list[str]) -> None:
        self.modes = modes
        self.made: list[FakeProducer] = []

    def __call__(self, config: dict) -> FakeProducer:
        producer = FakeProducer(config, self.modes[min(len(self.made), len(self.modes) - 1)])
        self.made.append(producer)
        return producer


def fake_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, modes: list[str], factory: Any = None, **kafka: Any
) -> Any:
    """A started engine whose producers are FakeProducers of `modes` (or what `factory` makes)."""
    from edge_agents import engine as engine_module
    from edge_agents.config import parse_config

    producers = FakeProducers(modes)
    monkeypatch.setattr(engine_module, "Producer", factory or producers)
    config = parse_config(
        {
            "kafka": {"stats_interval_ms": 20, **kafka},
            "queue": {"path": str(tmp_path / "q.db")},
            "metrics": {"port": 0},
            "shutdown_timeout_s": 0.2,
            "sources": [{"name": "sim", "type": "simulator"}],
        }
    )
    eng = engine_module.Engine(config)
    eng.start()
    return eng, producers


def readings(n: int) -> list[dict[str, Any]]:
    return [
        {
            "time": "2026-11-23T10:00:00Z",
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": f"mc-{i % 2}",
            "sensor_id": "s-temp",
            "metric": "temp",
            "value": float(i),
        }
        for i in range(n)
    ]


def values(producer: FakeProducer) -> list[float]:
    return [orjson.loads(v)["value"] for v in producer.produced]


def delivered(eng: Any, n: int) -> None:
    from analytics_platform_tests.support.edge import wait_for

    wait_for(lambda: eng.metrics.snapshot()["edge_agent_sent_total"] == n, 60, f"{n} messages acknowledged")
    wait_for(lambda: eng.queue.count == 0, 60, "the queue to empty")


def test_a_stalled_producer_is_rebuilt_and_the_queue_resent_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages in flight, a broker connected, no ack for stall_timeout_s: purge, rebuild, resend
    everything not acknowledged from the oldest, in queue order."""
    eng, producers = fake_engine(tmp_path, monkeypatch, ["silent", "ack"], stall_timeout_s=0.3)
    try:
        eng.submit("test", "sensor", readings(10))
        delivered(eng, 10)
        snapshot = eng.metrics.snapshot()
    finally:
        eng.stop()
    first, second = producers.made
    assert values(first) == values(second) == [float(i) for i in range(10)]
    assert second.created - first.created >= 0.3
    assert snapshot["edge_agent_producer_restarts_total"] == 1
    assert snapshot["edge_agent_delivery_errors_total"] == 0  # our own purge is not a failed delivery
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rebuilding the Kafka producer")]
    assert re.search(
        r"resending from queue entry 1; cause: no acknowledgement for \d+\.\d s with 10 messages in flight "
        r"and the broker connected$",
        line,
    ), line


def test_the_unknown_producer_id_loop_is_seen_in_the_statistics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """librdkafka reports UnknownProducerId nowhere but in its epoch: bumped 5 times with nothing
    acknowledged is a rebuild, long before the stall watchdog."""
    eng, producers = fake_engine(tmp_path, monkeypatch, ["bumping", "ack"], stall_timeout_s=600)
    try:
        eng.submit("test", "sensor", readings(6))
        delivered(eng, 6)
        snapshot = eng.metrics.snapshot()
    finally:
        eng.stop()
    bumping, fresh = producers.made
    assert values(bumping) == values(fresh) == [float(i) for i in range(6)]
    assert snapshot["edge_agent_producer_restarts_total"] == 1
    causes = [r.getMessage().partition("cause: ")[2] for r in caplog.records if "rebuilding" in r.getMessage()]
    assert causes == [
        "the broker does not accept the producer id: its epoch was bumped 5 times with nothing acknowledged "
        "(unknown producer id, e.g. a replaced broker)"
    ]


def test_a_replaced_producer_whose_destroy_hangs_does_not_stop_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """librdkafka's destroy of a producer replaced after a broker replacement was seen to hang for
    good (rd_kafka_destroy_app joining a broker thread that never ends; test_broker_replacement_e2e
    under load). It ran on the engine thread, so the agent stopped delivering anything, for ever,
    while its sources kept filling the queue. The old producer is destroyed on a thread of its own:
    the new one delivers everything while the old one's destroy still hangs, and the agent says so."""
    from analytics_platform_tests.support.edge import wait_for

    release = threading.Event()
    destroyed_in: list[str] = []

    class StuckOnDestroy(FakeProducer):
        def __del__(self) -> None:
            destroyed_in.append(threading.current_thread().name)
            release.wait(60)

    made: list[str] = []
    fresh: list[FakeProducer] = []  # kept: not the first, which must be free to be destroyed

    def producers(config: dict) -> FakeProducer:
        made.append("producer")
        if len(made) == 1:
            return StuckOnDestroy(config, "bumping")  # the UnknownProducerId loop: it gets replaced
        fresh.append(FakeProducer(config, "ack"))
        return fresh[-1]

    eng, _ = fake_engine(tmp_path, monkeypatch, [], factory=producers, stall_timeout_s=0.5)
    try:
        eng.submit("test", "sensor", readings(6))
        delivered(eng, 6)  # while the old producer's destroy hangs
        assert not release.is_set() and destroyed_in == ["kafka-producer-destroy"]
        wait_for(lambda: eng.metrics.snapshot()["edge_agent_producers_closing"] == 1, 60, "the closing gauge at 1")
        wait_for(lambda: any("has not finished closing" in r.getMessage() for r in caplog.records), 60, "the warning")
        release.set()
        wait_for(lambda: eng.metrics.snapshot()["edge_agent_producers_closing"] == 0, 60, "the destroy to finish")
        snapshot = eng.metrics.snapshot()
    finally:
        release.set()
        eng.stop()
    assert values(fresh[0]) == [float(i) for i in range(6)] and len(fresh) == 1
    assert snapshot["edge_agent_producer_restarts_total"] == 1
    [warning] = [r.getMessage() for r in caplog.records if "has not finished closing" in r.getMessage()]
    assert warning.startswith("the replaced Kafka producer 1 has not finished closing after ")


def wait_for_producers(producers: FakeProducers, n: int) -> None:
    from analytics_platform_tests.support.edge import wait_for

    wait_for(lambda: len(producers.made) >= n, 60, f"{n} producers")


@pytest.mark.parametrize(
    ("mode", "cause"),
    [
        ("dr:UNKNOWN_PRODUCER_ID", "a delivery failed with UNKNOWN_PRODUCER_ID"),
        ("dr:OUT_OF_ORDER_SEQUENCE_NUMBER", "a delivery failed with OUT_OF_ORDER_SEQUENCE_NUMBER"),
        ("error:INVALID_PRODUCER_EPOCH", "the broker answered INVALID_PRODUCER_EPOCH"),
        ("error:PRODUCER_FENCED", "the broker answered PRODUCER_FENCED"),
        ("raise:UNKNOWN_PRODUCER_ID", "fatal producer error UNKNOWN_PRODUCER_ID: unable to retry"),
    ],
)
def test_error_codes_that_need_a_new_producer_rebuild_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str, cause: str
) -> None:
    eng, producers = fake_engine(tmp_path, monkeypatch, [mode, "ack"], stall_timeout_s=600)
    try:
        eng.submit("test", "sensor", readings(6))
        delivered(eng, 6)
        snapshot = eng.metrics.snapshot()
    finally:
        eng.stop()
    broken, fresh = producers.made
    assert values(broken) == values(fresh) == [float(i) for i in range(6)]
    assert snapshot["edge_agent_producer_restarts_total"] == 1
    assert snapshot["edge_agent_delivery_errors_total"] == (6 if mode.startswith("dr:") else 0)
    causes = [r.getMessage().partition("cause: ")[2] for r in caplog.records if "rebuilding" in r.getMessage()]
    assert len(causes) == 1 and causes[0].startswith(cause), causes


def test_no_rebuild_while_no_broker_is_connected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker that is simply away is not a stall: nothing is rebuilt however long it stays away,
    and the stall clock starts only when a broker is connected again."""
    eng, producers = fake_engine(tmp_path, monkeypatch, ["away", "ack"], stall_timeout_s=0.2)
    try:
        eng.submit("test", "sensor", readings(3))
        [away] = producers.made
        wait_for_ticks(away, 30)  # 0.6 s of statistics saying no broker: three stall timeouts
        assert len(producers.made) == 1
        assert eng.metrics.snapshot()["edge_agent_producer_restarts_total"] == 0
        back = time.monotonic()
        away.mode = "silent"  # connected again, and still nothing acknowledged
        delivered(eng, 3)
        snapshot = eng.metrics.snapshot()
    finally:
        eng.stop()
    assert producers.made[1].created - back >= 0.2
    assert snapshot["edge_agent_producer_restarts_total"] == 1


def wait_for_ticks(producer: FakeProducer, n: int) -> None:
    from analytics_platform_tests.support.edge import wait_for

    wait_for(lambda: producer.stats_ticks >= n, 60, f"{n} statistics ticks")


def test_rebuilds_back_off_while_nothing_is_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that keeps taking messages and never acknowledges: each rebuild waits twice as long
    as the one before, up to the maximum, so a broken broker is not hammered. An acknowledgement
    ends the backoff: the next stall starts again from the first wait. (The waits are longer than
    the engine's 0.5 s pause before it resends after a rewind, or that pause would hide them.)"""
    eng, producers = fake_engine(
        tmp_path,
        monkeypatch,
        ["silent"] * 3 + ["ack"],
        stall_timeout_s=0.05,
        rebuild_backoff_s=0.6,
        rebuild_backoff_max_s=1.0,
    )
    try:
        eng.submit("test", "sensor", readings(4))
        delivered(eng, 4)
        producers.made[-1].mode = "silent"  # the working producer stalls in turn
        eng.submit("test", "sensor", readings(6)[4:])
        delivered(eng, 6)
        snapshot = eng.metrics.snapshot()
    finally:
        eng.stop()
    assert len(producers.made) == 5
    made = [p.created for p in producers.made[:4]]
    gaps = [b - a for a, b in itertools.pairwise(made)]
    # the first rebuild waits for the stall alone, each further one for the backoff
    assert all(gap >= wait for gap, wait in zip(gaps, [0.05, 0.6, 1.0], strict=True)), gaps
    waits = [
        re.search(r"no sooner than (\S+) s", r.getMessage()).group(1)  # type: ignore[union-attr]
        for r in caplog.records
        if r.getMessage().startswith("rebuilding")
    ]
    assert waits == ["0.6", "1.0", "1.0", "0.6"]
    assert snapshot["edge_agent_producer_restarts_total"] == 4
    assert all(values(p) == [0.0, 1.0, 2.0, 3.0] for p in producers.made[:3])
    assert values(producers.made[3]) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert values(producers.made[4]) == [4.0, 5.0]
