"""The engine against a real broker (Tansu): the full-queue policies, a graceful stop that keeps the
queue for the next start, messages Kafka refuses for good, and the counters of each."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from analytics_platform_tests.support.edge import OwnBroker, agent_config, read_topic, wait_for
from edge_agents.canonical import Canonicalizer
from edge_agents.config import AgentConfig, ContractConfigModel, KafkaConfig
from edge_agents.engine import Engine, SubmitResult
from edge_agents.simulator import TOPICS

TOPIC = "sensors.device.readings"


def reading(i: int, **extra) -> dict:
    return {
        "time": f"2026-11-23T10:00:{i % 60:02d}Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": f"mc-{i % 2}",
        "sensor_id": "s-temp",
        "metric": "temp",
        "value": float(i),
        **extra,
    }


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[OwnBroker]:
    own = OwnBroker(tmp_path, list(TOPICS))
    yield own
    own.kill()  # a graceful stop waits ~5 s on the agent's closed-but-lingering connection; nothing to keep


def config(broker: OwnBroker, tmp_path: Path, **extra) -> AgentConfig:
    extra.setdefault("contract", {"unknown_metrics": "reject"})  # the atomic-batch test needs a local reject
    return agent_config(
        broker.address, "", tmp_path / "q.db", [{"name": "sim", "type": "simulator"}], shutdown_timeout_s=1, **extra
    )


@contextmanager
def engine(cfg: AgentConfig) -> Iterator[Engine]:
    running = Engine(cfg)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def submit_each(eng: Engine, payloads: list[dict]) -> list[SubmitResult]:
    """One submit per payload, waiting for each verdict (so units are taken one at a time)."""
    results = []
    for payload in payloads:
        done = threading.Event()
        box: list[SubmitResult] = []
        eng.submit("test", "sensor", [payload], done=lambda r, box=box, done=done: (box.append(r), done.set()))
        assert done.wait(60)
        results.append(box[0])
    return results


def test_drop_oldest_keeps_the_newest_under_the_watermark(broker: OwnBroker, tmp_path: Path) -> None:
    encoded = Canonicalizer(KafkaConfig(), ContractConfigModel()).encode("sensor", reading(10))
    size = len(TOPIC) + len(encoded.key) + len(encoded.value)  # the same for readings 10..19
    cfg = config(broker, tmp_path, queue={"max_bytes": 4 * size + 10, "when_full": "drop_oldest"})
    with engine(cfg) as eng:
        results = submit_each(eng, [reading(i) for i in range(10, 20)])
        assert [r.accepted for r in results] == [1] * 10
        snapshot = eng.metrics.snapshot()
        assert snapshot["edge_agent_dropped_total{reason=queue_full_drop_oldest}"] == 6
        assert eng.queue.count == 4 and eng.queue.bytes == 4 * size
        broker.start()
        wait_for(lambda: eng.metrics.snapshot()["edge_agent_sent_total"] == 4, 30, "the 4 kept messages sent")
        assert eng.queue.count == 0
    values = [orjson.loads(m.value())["value"] for m in read_topic(broker.address, TOPIC, expect=4)]
    assert sorted(values) == [16.0, 17.0, 18.0, 19.0]


def test_stop_accepting_refuses_and_keeps_what_it_has(broker: OwnBroker, tmp_path: Path) -> None:
    cfg = config(broker, tmp_path, queue={"max_bytes": 1024, "when_full": "stop_accepting"})
    with engine(cfg) as eng:
        results = submit_each(eng, [reading(i) for i in range(10)])
        taken = sum(r.accepted for r in results)
        assert 0 < taken < 10
        assert [r.refused for r in results] == [None] * taken + ["queue full"] * (10 - taken)
        assert eng.metrics.snapshot()["edge_agent_dropped_total{reason=queue_full_stop_accepting}"] == 10 - taken
        assert eng.queue.count == taken
        broker.start()
        wait_for(lambda: eng.queue.count == 0, 30, "the queue to drain")
        # room again: accepted
        assert submit_each(eng, [reading(50)])[0].accepted == 1
        wait_for(lambda: eng.metrics.snapshot()["edge_agent_sent_total"] == taken + 1, 30, "all sent")
    values = sorted(orjson.loads(m.value())["value"] for m in read_topic(broker.address, TOPIC, expect=taken + 1))
    assert values == [float(i) for i in range(taken)] + [50.0]


def test_graceful_stop_keeps_the_queue_and_the_next_start_replays_it(broker: OwnBroker, tmp_path: Path) -> None:
    cfg = config(broker, tmp_path)
    with engine(cfg) as eng:
        assert sum(r.accepted for r in submit_each(eng, [reading(i) for i in range(12)])) == 12
        atomic: list[SubmitResult] = []
        done = threading.Event()
        eng.submit(
            "test",
            "sensor",
            [reading(90), reading(91, metric="nope")],
            atomic=True,
            done=lambda r: (atomic.append(r), done.set()),
        )
        assert done.wait(60)
    assert atomic[0].accepted == 0
    assert atomic[0].rejected == [(1, "unknown_metric", "metric 'nope' is not in the metrics catalogue")]
    assert atomic[0].refused == "1 of 2 payloads break the contract"
    broker.start()
    with engine(cfg) as eng:
        assert eng.queue.count == 12
        wait_for(lambda: eng.metrics.snapshot()["edge_agent_sent_total"] == 12, 30, "the replay")
        snapshot = eng.metrics.snapshot()
        assert snapshot["edge_agent_replayed_total"] == 12
        wait_for(lambda: eng.queue.count == 0, 60, "the acknowledged entries to leave the queue")
    messages = read_topic(broker.address, TOPIC, expect=12)
    by_key: dict[bytes, list[float]] = {}
    for m in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        by_key.setdefault(m.key(), []).append(orjson.loads(m.value())["value"])
    assert by_key == {b"t1-f1-mc-0": [0, 2, 4, 6, 8, 10], b"t1-f1-mc-1": [1, 3, 5, 7, 9, 11]}


def test_a_message_kafka_refuses_for_good_goes_to_rejects(broker: OwnBroker, tmp_path: Path) -> None:
    broker.start()
    cfg = config(broker, tmp_path, kafka={"extra": {"message.max.bytes": 2000}})
    with engine(cfg) as eng:
        big = reading(1, payload={"note": "x" * 3000})
        assert [r.accepted for r in submit_each(eng, [reading(0), big, reading(2)])] == [1, 1, 1]
        wait_for(lambda: eng.metrics.snapshot()["edge_agent_sent_total"] == 2, 30, "the two others sent")
        wait_for(lambda: eng.queue.count == 0, 60, "the refused one to leave the queue")
        snapshot = eng.metrics.snapshot()
        assert snapshot["edge_agent_dropped_total{reason=broker_refused}"] == 1
        [(_, source, _, reason, _, payload)] = eng.queue.rejects(10)
    assert (source, reason) == ("kafka", "broker_refused")
    assert orjson.loads(payload)["payload"]["note"] == "x" * 3000
    values = sorted(orjson.loads(m.value())["value"] for m in read_topic(broker.address, TOPIC, expect=2))
    assert values == [0.0, 2.0]


def test_stop_takes_in_everything_handed_over(broker: OwnBroker, tmp_path: Path) -> None:
    """A stop right after a burst queues all of it (more than one step's intake), answering each
    source, with the broker away."""
    eng = Engine(config(broker, tmp_path))
    eng.start()
    answered: list[int] = []
    for chunk in range(120):
        eng.submit(
            "test", "sensor", [reading(chunk * 100 + i) for i in range(100)], done=lambda r: answered.append(r.accepted)
        )
    eng.stop()
    assert (len(answered), sum(answered)) == (120, 12000)
    reopened = Engine(config(broker, tmp_path))
    assert reopened.queue.count == 12000
    reopened.queue.close()
