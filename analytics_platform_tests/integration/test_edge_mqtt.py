"""MQTT (Mosquitto) → edge agent → Kafka (Tansu): exact canonical messages, rejects kept locally,
backpressure pausing the subscription and resuming it."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest

from analytics_platform_tests.support.edge import (
    OwnBroker,
    agent_config,
    decoded,
    edge_prefix,
    mosquitto,
    read_topic,
    running_agent,
    wait_for,
)
from edge_agents.canonical import content_event_id
from edge_agents.simulator import TOPICS

MAPPINGS = [
    {"topic": "plant/{tenant_id}/{factory_id}/{machine_id}/{sensor_id}/{metric}", "format": "value", "scale": 0.1},
    {
        "topic": "json/{machine_id}",
        "format": "json",
        "values": {"temp": "m.t", "humidity": "m.h"},
        "time_path": "ts",
        "fields": {"sensor_id": "s-combo"},
    },
    {"topic": "canonical/+/health", "domain": "device", "format": "canonical"},
]


@pytest.fixture
def mqtt_port(tmp_path: Path):
    with mosquitto(tmp_path) as port:
        yield port


def publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish_all(client: mqtt.Client, messages: list[tuple[str, bytes]]) -> None:
    infos = [client.publish(topic, body, qos=1) for topic, body in messages]
    for info in infos:
        info.wait_for_publish(10)


def mqtt_source(port: int, **extra) -> dict:
    return {
        "name": "line1",
        "type": "mqtt",
        "port": port,
        "identity": {"tenant_id": "t1", "factory_id": "f1"},
        "mappings": MAPPINGS,
        **extra,
    }


def test_mqtt_to_kafka_exact_messages(kafka_brokers: str, mqtt_port: int, tmp_path: Path) -> None:
    prefix = edge_prefix(kafka_brokers)
    config = agent_config(
        kafka_brokers, prefix, tmp_path / "q.db", [mqtt_source(mqtt_port)], contract={"unknown_metrics": "reject"}
    )
    health = {"time": "2026-11-23T08:00:00Z", "tenant_id": "t2", "factory_id": "f9", "machine_id": "mc-7"}
    with running_agent(config) as agent:
        source = agent.sources[0]
        wait_for(lambda: source.connected.is_set(), 60, "the agent's MQTT connection")
        client = publisher(mqtt_port)
        publish_all(
            client,
            [
                ("plant/t1/f1/mc-01/s-temp/temp", b"237"),
                ("json/mc-02", orjson.dumps({"ts": "2026-11-23T08:00:01.500Z", "m": {"t": 61.5, "h": 40}})),
                ("canonical/x/health", orjson.dumps({**health, "status": "online", "level": "ok"})),
                ("plant/t1/f1/mc-01/s-temp/not_a_metric", b"1"),  # contract: unknown metric
                ("plant/t1/f1/mc-01/s-temp/temp", b"hot"),  # mapping: not a number
                ("json/mc-02", orjson.dumps({"m": {"t": 1}})),  # mapping: no time
            ],
        )
        client.loop_stop()
        client.disconnect()
        sensors = decoded(read_topic(kafka_brokers, prefix + "sensors.device.readings", expect=3))
        devices = read_topic(kafka_brokers, prefix + "device.health", expect=1)
        wait_for(lambda: agent.engine.metrics.snapshot().get("edge_agent_sent_total") == 4, 60, "4 acknowledgements")
        snapshot = agent.engine.metrics.snapshot()
        rejects = agent.engine.queue.rejects(10)

    by_metric = {(m["machine_id"], m["metric"]): m for m in sensors}
    assert len(sensors) == 3
    temp = by_metric[("mc-01", "temp")]
    assert temp["value"] == pytest.approx(23.7)
    assert (temp["tenant_id"], temp["factory_id"], temp["sensor_id"]) == ("t1", "f1", "s-temp")
    assert temp["payload"] == {"source": "line1"}
    assert temp["event_id"] == content_event_id("sensor", temp)
    combo_t, combo_h = by_metric[("mc-02", "temp")], by_metric[("mc-02", "humidity")]
    assert (combo_t["value"], combo_h["value"]) == (61.5, 40.0)  # no scale on this mapping
    assert combo_t["time"] == combo_h["time"] == "2026-11-23T08:00:01.500000Z"
    assert combo_t["sensor_id"] == "s-combo" and combo_t["tenant_id"] == "t1"
    assert combo_t["event_id"] != combo_h["event_id"]
    [device] = devices
    assert device.key() == b"t2-f9-mc-7"
    assert orjson.loads(device.value())["status"] == "online"
    assert snapshot["edge_agent_received_total{source=line1}"] == 7  # 6 messages, one of them two readings
    assert snapshot["edge_agent_rejected_total{reason=unknown_metric,source=line1}"] == 1
    assert snapshot["edge_agent_rejected_total{reason=wrong_type,source=line1}"] == 1
    assert snapshot["edge_agent_rejected_total{reason=missing_field,source=line1}"] == 1
    assert snapshot["edge_agent_queued_total"] == 4
    assert sorted(r[3] for r in rejects) == ["missing_field", "unknown_metric", "wrong_type"]


class HeldSubscriptions(threading.Thread):
    """The least of an MQTT 3.1.1 broker: it accepts one client (CONNACK), takes its SUBSCRIBE and
    answers it only when `grant` is set, with `codes` (0x80 refuses). Mosquitto answers a SUBSCRIBE at
    once, so the moment between CONNACK and SUBACK, when a message published for the subscription is
    not delivered, cannot be held open with it."""

    def __init__(self, codes: bytes) -> None:
        super().__init__(name="held-subscriptions", daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.codes = codes
        self.grant = threading.Event()
        self.subscribed = threading.Event()  # the SUBSCRIBE arrived
        self.done = threading.Event()

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:  # the client went (a recv of 0 bytes would otherwise loop for ever)
                raise ConnectionError("closed")
            data += chunk
        return data

    def _packet(self, conn: socket.socket) -> tuple[int, bytes]:
        first = self._read(conn, 1)[0]
        length, shift = 0, 0
        while True:
            byte = self._read(conn, 1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first >> 4, self._read(conn, length)

    def run(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            conn.settimeout(60)
            kind, _ = self._packet(conn)
            assert kind == 1  # CONNECT
            conn.sendall(bytes([0x20, 2, 0, 0]))  # CONNACK: session not present, accepted
            kind, body = self._packet(conn)
            assert kind == 8  # SUBSCRIBE
            self.subscribed.set()
            self.grant.wait(60)
            conn.sendall(bytes([0x90, 2 + len(self.codes)]) + body[:2] + self.codes)  # SUBACK, same packet id
            while not self.done.is_set():  # PINGREQ -> PINGRESP until the client goes
                try:
                    kind, _ = self._packet(conn)
                except (ConnectionError, OSError):
                    break
                if kind == 12:
                    conn.sendall(bytes([0xD0, 0]))
                elif kind == 14:  # DISCONNECT
                    break

    def close(self) -> None:
        self.done.set()
        self.server.close()


@pytest.mark.parametrize(("codes", "connected"), [(b"\x01\x01\x01", True), (b"\x80\x80\x80", False)])
def test_the_source_is_connected_once_its_subscriptions_are_granted(
    tmp_path: Path, codes: bytes, connected: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """`connected` (and edge_agent_source_connected) said 1 at CONNACK, before the broker had taken the
    SUBSCRIBE: a message published then is not delivered to the subscription, and a test publishing
    on `connected` lost all 30 of its messages in CI. It now follows the SUBACK; a broker refusing
    every filter leaves the source not connected, with one line saying why."""
    broker = HeldSubscriptions(codes)
    broker.start()
    config = agent_config("127.0.0.1:9", "", tmp_path / "q.db", [mqtt_source(broker.port)])
    try:
        with running_agent(config) as agent:
            source = agent.sources[0]
            assert broker.subscribed.wait(60), "no SUBSCRIBE came"
            # CONNACK is in, the SUBSCRIBE is held: the source must not say it receives (a condition that
            # cannot become true while SUBACK is held, so this checks the state, it waits for nothing)
            assert not source.connected.is_set()
            assert agent.engine.metrics.snapshot().get("edge_agent_source_connected{source=line1}", 0) == 0
            broker.grant.set()
            if connected:
                wait_for(lambda: source.connected.is_set(), 60, "the source connected after SUBACK")
                assert agent.engine.metrics.snapshot()["edge_agent_source_connected{source=line1}"] == 1
            else:
                wait_for(
                    lambda: any("the broker refused 3 of 3 subscriptions" in r.getMessage() for r in caplog.records),
                    60,
                    "the refusal logged",
                )
                assert not source.connected.is_set()
    finally:
        broker.close()


def test_backpressure_pauses_mqtt_and_resumes(mqtt_port: int, tmp_path: Path) -> None:
    """The broker is down: the queue passes `high`, the subscription pauses (the broker keeps the
    session's messages). The broker comes up: the queue drains below `low`, the subscription resumes
    and every message published meanwhile arrives, in order."""
    broker = OwnBroker(tmp_path, list(TOPICS))
    config = agent_config(
        broker.address,
        "",
        tmp_path / "q.db",
        [mqtt_source(mqtt_port)],
        backpressure={"high": 20, "low": 5, "delay_s": 0.5},
    )
    client = publisher(mqtt_port)
    try:
        with running_agent(config) as agent:
            metrics = agent.engine.metrics.snapshot
            wait_for(lambda: agent.sources[0].connected.is_set(), 60, "the agent's MQTT connection")
            publish_all(client, [("plant/t1/f1/mc-01/s-temp/temp", str(i).encode()) for i in range(30)])
            wait_for(lambda: not agent.sources[0].connected.is_set(), 60, "the subscription to pause")
            snapshot = metrics()
            assert snapshot["edge_agent_backpressure_transitions_total{to=slow}"] == 1
            assert snapshot["edge_agent_backpressure_active"] == 1
            assert snapshot["edge_agent_queue_depth"] == 30
            assert snapshot["edge_agent_sent_total"] == 0
            publish_all(client, [("plant/t1/f1/mc-01/s-temp/temp", str(i).encode()) for i in range(30, 50)])
            assert metrics()["edge_agent_received_total{source=line1}"] == 30  # held by Mosquitto
            broker.start()
            wait_for(lambda: metrics().get("edge_agent_sent_total") == 50, 60, "all 50 messages sent")
            snapshot = metrics()
            assert snapshot["edge_agent_backpressure_transitions_total{to=normal}"] == 1
            assert snapshot["edge_agent_backpressure_active"] == 0
            assert snapshot["edge_agent_replayed_total"] == 30
            assert agent.sources[0].connected.is_set()
            messages = read_topic(broker.address, "sensors.device.readings", expect=50)
    finally:
        client.loop_stop()
        client.disconnect()
        broker.stop()
    assert [m["value"] for m in decoded(messages)] == pytest.approx([i * 0.1 for i in range(50)])
