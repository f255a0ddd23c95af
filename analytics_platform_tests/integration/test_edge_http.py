"""The HTTP ingest source against the real broker: 202 only once queued, exactly what was posted
arrives in Kafka, a batch with one bad item is refused whole (422, one reason per bad item, counted),
401 without the token, 503 when the queue is full under `stop_accepting`, and accepting on under
backpressure with the answers marked."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from analytics_platform.devstack.processes import free_port, port_open
from analytics_platform_tests.support.edge import (
    agent_config,
    decoded,
    edge_prefix,
    read_topic,
    running_agent,
    wait_for,
)
from edge_agents.agent import Agent
from edge_agents.canonical import content_event_id
from edge_agents.config import QueueConfig
from edge_agents.sources.http import HTTPSource
from edge_agents.store import DiskQueue, entry_size

SENSORS = "sensors.device.readings"


@dataclass
class Ingest:
    agent: Agent
    source: HTTPSource
    client: httpx.Client
    prefix: str
    queue: Path

    def post(self, domain: str, body: Any, **kwargs: Any) -> httpx.Response:
        return self.client.post(f"/v1/ingest/{domain}", json=body, **kwargs)

    def post_raw(self, domain: str, content: bytes, **kwargs: Any) -> httpx.Response:
        return self.client.post(
            f"/v1/ingest/{domain}", content=content, headers={"Content-Type": "application/json"}, **kwargs
        )

    def rejected(self, reason: str) -> float:
        return self.agent.engine.metrics.snapshot().get(f"edge_agent_rejected_total{{reason={reason},source=http}}", 0)


@contextmanager
def http_ingest(
    brokers: str, tmp_path: Path, source: dict | None = None, *, reachable: bool = True, **extra: Any
) -> Iterator[Ingest]:
    """An agent with one HTTP source on a free port and a client for it."""
    prefix = edge_prefix(brokers) if reachable else "unreachable."
    queue = tmp_path / "queue.db"
    queue_options = extra.pop("queue_options", {})
    extra.setdefault("contract", {"unknown_metrics": "reject"})  # the reject cases include a local unknown metric
    config = agent_config(
        brokers, prefix, queue, [{"type": "http", "name": "http", "port": 0, **(source or {})}], **extra
    )
    if queue_options:  # agent_config's `queue` parameter is the path: queue options cannot go through it
        config = config.model_copy(update={"queue": QueueConfig(path=queue, **queue_options)})
    with running_agent(config) as agent:
        http = agent.sources[0]
        assert isinstance(http, HTTPSource)
        port = wait_for(lambda: http.port, 60, "the HTTP source to listen")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield Ingest(agent, http, client, prefix, queue)


def sensor(machine: str = "mc-01", sensor_id: str = "s-001", value: float = 23.7, **over: Any) -> dict[str, Any]:
    return {
        "time": "2025-08-20T03:12:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": machine,
        "sensor_id": sensor_id,
        "metric": "temp",
        "value": value,
        "payload": {"source": "gw-7"},
        **over,
    }


def with_event_id(domain: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "event_id": content_event_id(domain, payload)}


def by_value(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(messages, key=lambda m: json.dumps(m, sort_keys=True))


def test_object_and_batch_are_queued_then_arrive_exactly(kafka_brokers: str, tmp_path: Path) -> None:
    single = sensor("mc-01", "s-001", 23.7)
    batch = [sensor("mc-02", "s-002", 41.5), sensor("mc-02", "s-003", -2.25), sensor("mc-03", "s-001", 0.0)]
    health = {"time": "2025-08-20T03:12:00Z", "tenant_id": "t1", "factory_id": "f1", "machine_id": "mc-01"}
    health |= {"status": "online", "level": "ok"}
    sweep = {"time": "2025-08-20T03:12:00Z", "tenant_id": "t1", "factory_id": "f1", "machine_id": "mc-03"}
    sweep |= {"metric": "temp", "readings": [{"value": 23.1}, {"value": 22.9}, {"value": 23.6}]}
    with http_ingest(kafka_brokers, tmp_path) as ingest:
        first = ingest.post("sensor", single)
        assert (first.status_code, first.json()) == (202, {"accepted": 1})
        assert "x-backpressure" not in first.headers
        second = ingest.post("sensor", batch)
        assert (second.status_code, second.json()) == (202, {"accepted": 3})
        assert ingest.post("device", health).json() == {"accepted": 1}
        assert ingest.post("sweep", [sweep]).json() == {"accepted": 1}

        sensors = read_topic(kafka_brokers, ingest.prefix + SENSORS, expect=4)
        assert by_value(decoded(sensors)) == by_value([with_event_id("sensor", p) for p in [single, *batch]])
        keys = sorted(m.key().decode() for m in sensors)
        assert keys == ["t1-f1-mc-01", "t1-f1-mc-02", "t1-f1-mc-02", "t1-f1-mc-03"]
        devices = read_topic(kafka_brokers, ingest.prefix + "device.health", expect=1)
        assert decoded(devices) == [with_event_id("device", health)]
        assert [m.key() for m in devices] == [b"t1-f1-mc-01"]
        sweeps = read_topic(kafka_brokers, ingest.prefix + "sensors.sweep.readings", expect=1)
        assert decoded(sweeps) == [with_event_id("sweep", sweep)]
        assert [m.key() for m in sweeps] == [b"t1-f1-mc-03"]
        wait_for(lambda: ingest.agent.engine.depth == 0, 30, "the queue to drain")
        health_check = ingest.client.get("/healthz")
        assert health_check.status_code == 200
        assert health_check.json() == {
            "status": "ok",
            "source": "http",
            "queue_depth": 0,
            "queue_bytes": 0,
            "backpressure": False,
        }
        snapshot = ingest.agent.engine.metrics.snapshot()
        assert snapshot["edge_agent_received_total{source=http}"] == 6
        assert snapshot["edge_agent_queued_total"] == 6


def test_lab_result_is_keyed_by_station(kafka_brokers: str, tmp_path: Path) -> None:
    lab = {
        "time": "2025-08-20T03:12:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "station_id": "lab-01",
        "sample_id": "S-8892",
        "analyte": "Moisture",
        "value": 12.4,
        "unit": "%",
        "event_id": "lims-8892-moisture",
    }
    with http_ingest(kafka_brokers, tmp_path) as ingest:
        assert ingest.post("lab", lab).json() == {"accepted": 1}
        messages = read_topic(kafka_brokers, ingest.prefix + "lab.results", expect=1)
    assert [m.key() for m in messages] == [b"t1-f1-lab-01"]
    assert decoded(messages) == [lab]  # the sender's event id is kept as it is


def test_source_identity_fills_what_a_gateway_leaves_out(kafka_brokers: str, tmp_path: Path) -> None:
    identity = {"tenant_id": "t9", "factory_id": "f4", "machine_id": "press-2"}
    partial = {k: v for k, v in sensor().items() if k not in identity}
    with http_ingest(kafka_brokers, tmp_path, {"identity": identity}) as ingest:
        assert ingest.post("sensor", [partial, {**partial, "machine_id": "press-3"}]).json() == {"accepted": 2}
        messages = read_topic(kafka_brokers, ingest.prefix + SENSORS, expect=2)
    assert sorted(m.key() for m in messages) == [b"t9-f4-press-2", b"t9-f4-press-3"]
    assert by_value(decoded(messages)) == by_value(
        [
            with_event_id("sensor", {**partial, **identity}),
            with_event_id("sensor", {**partial, **identity, "machine_id": "press-3"}),
        ]
    )


BAD_ITEMS = [
    pytest.param(
        {"metric": "tempp"}, "unknown_metric", "metric 'tempp' is not in the metrics catalogue", id="unknown-metric"
    ),
    pytest.param({"sensor_id": None}, "missing_field", "Object missing required field `sensor_id`", id="missing-field"),
    pytest.param({"value": float("nan")}, "non_finite", "value is not a finite number", id="nan"),
    pytest.param(
        {"time": "20/08/2025 03:12"},
        "bad_time",
        "time '20/08/2025 03:12' is not ISO-8601 UTC (e.g. 2025-08-20T03:12:00Z)",
        id="bad-time",
    ),
]


@pytest.mark.parametrize(("change", "reason", "message"), BAD_ITEMS)
def test_one_bad_item_refuses_the_whole_batch(
    kafka_brokers: str, tmp_path: Path, change: dict[str, Any], reason: str, message: str
) -> None:
    bad = {k: v for k, v in {**sensor("mc-02", "s-002"), **change}.items() if v is not None}
    batch = [sensor("mc-01", "s-001"), bad, sensor("mc-03", "s-003")]
    marker = sensor("mc-09", "s-009", 1.0)
    with http_ingest(kafka_brokers, tmp_path) as ingest:
        # stdlib json writes NaN as the literal many senders use
        refused = ingest.post_raw("sensor", json.dumps(batch).encode())
        assert refused.status_code == 422
        assert refused.json() == {"detail": [{"index": 1, "reason": reason, "message": message}]}
        assert ingest.rejected(reason) == 1
        assert ingest.agent.engine.depth == 0
        # what is sent after the refused batch arrives; nothing of the batch came before it
        assert ingest.post("sensor", marker).json() == {"accepted": 1}
        messages = read_topic(kafka_brokers, ingest.prefix + SENSORS, expect=1)
        assert decoded(messages) == [with_event_id("sensor", marker)]
    rejects = DiskQueue(ingest.queue).rejects()
    assert [(source, domain, why, detail) for _, source, domain, why, detail, _ in rejects] == [
        ("http", "sensor", reason, message)
    ]


def test_every_bad_item_of_a_batch_is_named_in_order(kafka_brokers: str, tmp_path: Path) -> None:
    batch = [
        sensor(value=float("inf")),
        sensor(sensor_id="s-002"),
        sensor(metric="nope"),
        {k: v for k, v in sensor().items() if k != "value"},
        sensor(time="2025-08-20 03:12:00"),
        sensor(payload={"raw": float("nan")}),  # inside free JSON too: not turned into null and sent
    ]
    with http_ingest(kafka_brokers, tmp_path) as ingest:
        refused = ingest.post_raw("sensor", json.dumps(batch).encode())
        assert refused.status_code == 422
        assert refused.json() == {
            "detail": [
                {"index": 0, "reason": "non_finite", "message": "value is not a finite number"},
                {"index": 2, "reason": "unknown_metric", "message": "metric 'nope' is not in the metrics catalogue"},
                {"index": 3, "reason": "missing_field", "message": "Object missing required field `value`"},
                {
                    "index": 4,
                    "reason": "bad_time",
                    "message": "time '2025-08-20 03:12:00' is not ISO-8601 UTC (e.g. 2025-08-20T03:12:00Z)",
                },
                {"index": 5, "reason": "non_finite", "message": "payload.raw is not a finite number"},
            ]
        }
        assert [ingest.rejected(r) for r in ("non_finite", "unknown_metric", "missing_field", "bad_time")] == [
            2,
            1,
            1,
            1,
        ]
        assert ingest.agent.engine.depth == 0


def test_unusable_bodies_get_422_with_a_clear_message(kafka_brokers: str, tmp_path: Path) -> None:
    with http_ingest(kafka_brokers, tmp_path, {"max_batch": 3}) as ingest:
        not_json = ingest.post_raw("sensor", b'{"time": "2025-08-20T03:12:00Z",')
        assert not_json.status_code == 422
        [problem] = not_json.json()["detail"]
        assert (problem["index"], problem["reason"]) == (None, "not_json")
        assert problem["message"].startswith("the body is not JSON: ")

        cases = [
            ("sensor", [], "empty_batch", "the array is empty: send at least one object"),
            (
                "sensors",
                sensor(),
                "unknown_domain",
                "unknown domain 'sensors'; use one of sensor, device, lab, sweep",
            ),
            ("sensor", "23.7", "not_object", "the body is a JSON string; send an object or an array"),
            ("sensor", [sensor()] * 4, "batch_too_large", "4 items in one request; at most 3 (max_batch)"),
        ]
        for domain, body, reason, message in cases:
            answer = ingest.post(domain, body)
            assert (answer.status_code, answer.json()) == (
                422,
                {"detail": [{"index": None, "reason": reason, "message": message}]},
            ), reason

        items = ingest.post("sensor", [sensor(), 5, None])
        assert (items.status_code, items.json()) == (
            422,
            {
                "detail": [
                    {"index": 1, "reason": "not_object", "message": "item 1 is a JSON number, not an object"},
                    {"index": 2, "reason": "not_object", "message": "item 2 is a JSON null, not an object"},
                ]
            },
        )
        counted = {r: ingest.rejected(r) for r in ("not_json", "empty_batch", "unknown_domain", "batch_too_large")}
        assert counted == {"not_json": 1, "empty_batch": 1, "unknown_domain": 1, "batch_too_large": 1}
        assert ingest.rejected("not_object") == 3
        assert ingest.client.get("/v1/ingest/sensor").status_code == 405
        assert ingest.agent.engine.depth == 0
        assert ingest.agent.engine.metrics.snapshot()["edge_agent_queued_total"] == 0


def test_token_is_required_when_configured(kafka_brokers: str, tmp_path: Path) -> None:
    with http_ingest(kafka_brokers, tmp_path, {"token": "s3cret-token"}) as ingest:
        missing = ingest.post("sensor", sensor())
        assert (missing.status_code, missing.json()) == (401, {"detail": "missing or wrong bearer token"})
        assert missing.headers["www-authenticate"] == 'Bearer realm="edge-agent"'
        wrong = ingest.post("sensor", sensor(), headers={"Authorization": "Bearer s3cret-tokeN"})
        assert wrong.status_code == 401
        basic = ingest.post("sensor", sensor(), headers={"Authorization": "Basic s3cret-token"})
        assert basic.status_code == 401
        right = ingest.post("sensor", sensor(), headers={"Authorization": "Bearer s3cret-token"})
        assert (right.status_code, right.json()) == (202, {"accepted": 1})
        assert len(read_topic(kafka_brokers, ingest.prefix + SENSORS, expect=1)) == 1
        assert ingest.agent.engine.metrics.snapshot()["edge_agent_received_total{source=http}"] == 1


def test_full_queue_under_stop_accepting_answers_503_and_keeps_what_it_had(tmp_path: Path) -> None:
    unreachable = f"127.0.0.1:{free_port()}"  # nothing listens: nothing drains
    items = [sensor("mc-01", f"s-{i:03d}") for i in range(1, 10)]
    with http_ingest(
        unreachable,
        tmp_path,
        reachable=False,
        queue_options={"max_bytes": 1024, "when_full": "stop_accepting"},
        shutdown_timeout_s=0,
    ) as ingest:
        encoded = [ingest.agent.engine.canonical.encode("sensor", item) for item in items]
        sizes = {entry_size(o.topic, o.key, o.value) for o in encoded}
        [size] = sizes  # every item has the same size
        fits = 1024 // size
        assert fits >= 2
        for item in items[:fits]:
            answer = ingest.post("sensor", item)
            assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
        assert ingest.agent.engine.depth == fits
        for body in (items[fits], items[fits : fits + 2]):
            full = ingest.post("sensor", body)
            assert full.status_code == 503
            assert full.headers["retry-after"] == "5"
            assert full.json() == {
                "detail": "queue full: nothing of this request was queued; retry later",
            }
        assert ingest.agent.engine.depth == fits
        health = ingest.client.get("/healthz").json()
        assert (health["queue_depth"], health["queue_bytes"]) == (fits, fits * size)
        snapshot = ingest.agent.engine.metrics.snapshot()
        assert snapshot["edge_agent_dropped_total{reason=queue_full_stop_accepting}"] == 3
        assert snapshot["edge_agent_queued_total"] == fits
    kept = DiskQueue(ingest.queue)
    assert (kept.count, kept.bytes) == (fits, fits * size)
    assert [orjson.loads(e.value) for e in kept.read_after(0, 100)] == [
        with_event_id("sensor", item) for item in items[:fits]
    ]


def test_backpressure_keeps_accepting_and_marks_answers(tmp_path: Path) -> None:
    unreachable = f"127.0.0.1:{free_port()}"
    with http_ingest(
        unreachable,
        tmp_path,
        reachable=False,
        backpressure={"high": 2, "low": 1, "delay_s": 0},
        shutdown_timeout_s=0,
    ) as ingest:
        batch = [sensor("mc-01", f"s-{i:03d}") for i in range(1, 4)]
        assert ingest.post("sensor", batch).json() == {"accepted": 3}
        wait_for(lambda: ingest.source.slow, 60, "backpressure to switch on")
        answer = ingest.post("sensor", sensor("mc-01", "s-004"))
        assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
        assert answer.headers["x-backpressure"] == "on"
        health = ingest.client.get("/healthz")
        assert health.headers["x-backpressure"] == "on"
        assert (health.json()["queue_depth"], health.json()["backpressure"]) == (4, True)


def test_sigterm_stops_the_whole_agent_not_only_its_http_server(kafka_brokers: str, tmp_path: Path) -> None:
    """`edge-agent run` in a process of its own, where signals reach the main thread: SIGTERM is the
    agent's (uvicorn installs no handlers of its own), so the HTTP server is stopped as one of the
    sources, never restarted, the queue is delivered and the process exits 0."""
    prefix = edge_prefix(kafka_brokers)
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        json.dumps(
            {
                "kafka": {"brokers": kafka_brokers, "topic_prefix": prefix},
                "queue": {"path": str(tmp_path / "queue.db")},
                "metrics": {"port": 0},
                "log_format": "text",
                "sources": [{"type": "http", "name": "webhook", "port": port}],
            }
        )
    )
    log = tmp_path / "agent.log"
    with log.open("w") as out:
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agents.cli", "run", "--config", str(config)], stdout=out, stderr=out
        )
    try:
        wait_for(lambda: port_open("127.0.0.1", port) or agent.poll() is not None, 30, "the agent to listen")
        assert agent.poll() is None, log.read_text()
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/ingest/sensor", json=sensor(), timeout=30)
        assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
        assert decoded(read_topic(kafka_brokers, prefix + SENSORS, expect=1)) == [with_event_id("sensor", sensor())]
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0, log.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
    text = log.read_text()
    assert "stopping: sources first, then the queue" in text
    assert "edge engine stopped: 0 messages stay in the queue" in text
    assert "restarting" not in text
    assert not port_open("127.0.0.1", port)
