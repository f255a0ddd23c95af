"""Sparkplug B (Mosquitto) → edge agent → Kafka (Tansu): an edge node of the test's own (protobuf built
field by field, NDEATH as its MQTT will) goes through birth, data by alias, historical values, a `seq`
gap and an unknown alias (each answered by an NCMD rebirth the node receives), a rebirth, a broken
connection (the broker's will → offline) and a reconnect (→ online); a host application's STATE
becomes health too. The agent is the plant's primary host: its retained STATE says when it is there,
and under backpressure it says offline, pauses and comes back."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from analytics_platform.devstack.processes import free_port
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
from analytics_platform_tests.support.sparkplug import EdgeNode, metric
from edge_agents.canonical import content_event_id
from edge_agents.simulator import TOPICS
from edge_agents.sources.sparkplug import FLOAT, INT32, UINT32

T0 = 1_764_576_000_000  # 2025-12-01T08:00:00Z
DBIRTHS = "edge_agent_sparkplug_messages_total{source=spb,type=DBIRTH}"
NDEATHS = "edge_agent_sparkplug_messages_total{source=spb,type=NDEATH}"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def mqtt_port(tmp_path: Path):
    with mosquitto(tmp_path) as port:
        yield port


def sparkplug_source(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": "spb",
        "type": "sparkplug",
        "port": port,
        "primary_host_id": "platform",
        "identity": {"tenant_id": "t1"},
        "nodes": [
            {
                "group_id": "Plant A",
                "edge_node_id": "Gateway1",
                "identity": {"factory_id": "f1", "machine_id": "gw-1"},
                "devices": {"Press1": {"machine_id": "press-1"}},
            }
        ],
        "hosts": {"scada1": {"factory_id": "f1", "machine_id": "scada"}},
        "metrics": {
            "Motor/Temperature": {"metric": "temp", "sensor_id": "s-temp"},
            "Motor/Pressure": {"metric": "pressure", "sensor_id": "s-press", "scale": 0.001, "unit": "bar"},
            "Counter": {"metric": "count", "sensor_id": "s-count"},
        },
        "rebirth_interval_s": 0.001,  # every gap and unknown alias asks (the default waits 5 s between asks)
        **extra,
    }


class Watcher:
    """A client that records every message of its filter (retained ones included)."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"w-{time.time_ns()}"
        )
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(60)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def states(self) -> list[dict[str, Any]]:
        with self._lock:
            return [orjson.loads(body) for _topic, body, _retain in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def temp(alias_only: bool, value: float, **kw: Any) -> dict[str, Any]:
    return metric(None if alias_only else "Motor/Temperature", alias=1, datatype=FLOAT, value=value, **kw)


def pressure(alias_only: bool, value: int, **kw: Any) -> dict[str, Any]:
    return metric(None if alias_only else "Motor/Pressure", alias=2, datatype=INT32, value=value, **kw)


def counter(alias_only: bool, value: int, **kw: Any) -> dict[str, Any]:
    return metric(None if alias_only else "Counter", alias=10, datatype=UINT32, value=value, **kw)


def test_sparkplug_plant_to_kafka(kafka_brokers: str, mqtt_port: int, tmp_path: Path) -> None:
    prefix = edge_prefix(kafka_brokers)
    config = agent_config(kafka_brokers, prefix, tmp_path / "q.db", [sparkplug_source(mqtt_port)])
    host_state = Watcher(mqtt_port, "spBv1.0/STATE/platform")
    with running_agent(config) as agent:
        metrics = agent.engine.metrics.snapshot
        wait_for(lambda: agent.sources[0].connected.is_set(), 60, "the agent's MQTT connection")
        wait_for(host_state.states, 60, "the agent's STATE")
        [online] = host_state.states()
        late = Watcher(mqtt_port, "spBv1.0/STATE/platform")  # an edge node that connects later sees it too
        wait_for(lambda: late.messages, 60, "the retained STATE")
        late.close()
        assert late.messages == [("spBv1.0/STATE/platform", orjson.dumps(online), True)]
        node = EdgeNode(mqtt_port, "Plant A", "Gateway1", bd=0)
        node.publish("NBIRTH", [temp(False, 21.5, unit="degC"), pressure(False, -1500)], ts=T0)
        node.publish("DBIRTH", [counter(False, 7)], device="Press1", ts=T0 + 1)
        node.publish("NDATA", [temp(True, 22.25)], ts=T0 + 1000)
        node.publish(
            "DDATA",
            [counter(True, 8), counter(True, 6, timestamp=T0 - 60_000, historical=True)],
            device="Press1",
            ts=T0 + 2000,
        )
        node.skip(2)  # two messages lost on the way: the agent asks for a rebirth
        node.publish("NDATA", [temp(True, 23.0)], ts=T0 + 3000)
        wait_for(lambda: node.rebirths() == 1, 60, "the NCMD rebirth after the seq gap")
        node.publish("NDATA", [metric(alias=77, datatype=FLOAT, value=1.0), pressure(True, -1400)], ts=T0 + 4000)
        wait_for(lambda: node.rebirths() == 2, 60, "the NCMD rebirth after the unknown alias")
        node.publish("NBIRTH", [temp(False, 23.0, unit="degC"), pressure(False, -1400)], ts=T0 + 5000)
        node.publish("DBIRTH", [counter(False, 8)], device="Press1", ts=T0 + 5001)
        wait_for(lambda: metrics().get(DBIRTHS) == 2, 60, "the rebirth's DBIRTH handled")
        before_death = datetime.now(UTC)
        node.vanish()  # the broker publishes the node's will: NDEATH with bdSeq 0
        wait_for(lambda: metrics().get(NDEATHS) == 1, 60, "the will's NDEATH handled")
        after_death = datetime.now(UTC)
        node.reconnect()  # bdSeq 1
        node.publish("NBIRTH", [temp(False, 24.0, unit="degC"), pressure(False, -1300)], ts=T0 + 10_000)
        scada = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="scada1")
        scada.connect("127.0.0.1", mqtt_port)
        scada.loop_start()
        scada.publish(
            "spBv1.0/STATE/scada1", orjson.dumps({"online": True, "timestamp": T0 + 11_000}), qos=1, retain=True
        ).wait_for_publish(10)
        sensors = decoded(read_topic(kafka_brokers, prefix + "sensors.device.readings", expect=13))
        health = decoded(read_topic(kafka_brokers, prefix + "device.health", expect=8))
        wait_for(lambda: metrics().get("edge_agent_sent_total") == 21, 60, "21 acknowledgements")
        snapshot = metrics()
        node.close()
        scada.loop_stop()
        scada.disconnect()
    wait_for(lambda: len(host_state.states()) == 2, 60, "the agent's STATE offline on shutdown")
    host_state.close()

    assert online["online"] is True
    assert host_state.states()[1] == {"online": False, "timestamp": online["timestamp"]}
    got = sorted((r["time"], r["machine_id"], r["sensor_id"], r["metric"], r["value"], r.get("unit")) for r in sensors)
    assert got == sorted(
        [
            (iso(T0), "gw-1", "s-temp", "temp", 21.5, "degC"),
            (iso(T0), "gw-1", "s-press", "pressure", -1.5, "bar"),
            (iso(T0 + 1), "press-1", "s-count", "count", 7.0, None),
            (iso(T0 + 1000), "gw-1", "s-temp", "temp", 22.25, "degC"),
            (iso(T0 + 2000), "press-1", "s-count", "count", 8.0, None),
            (iso(T0 - 60_000), "press-1", "s-count", "count", 6.0, None),  # historical: its own time
            (iso(T0 + 3000), "gw-1", "s-temp", "temp", 23.0, "degC"),  # after the gap: still delivered
            (iso(T0 + 4000), "gw-1", "s-press", "pressure", -1.4, "bar"),  # beside the unknown alias
            (iso(T0 + 5000), "gw-1", "s-temp", "temp", 23.0, "degC"),
            (iso(T0 + 5000), "gw-1", "s-press", "pressure", -1.4, "bar"),
            (iso(T0 + 5001), "press-1", "s-count", "count", 8.0, None),
            (iso(T0 + 10_000), "gw-1", "s-temp", "temp", 24.0, "degC"),
            (iso(T0 + 10_000), "gw-1", "s-press", "pressure", -1.3, "bar"),
        ]
    )
    assert all(r["tenant_id"] == "t1" and r["factory_id"] == "f1" for r in sensors)
    assert all(r["event_id"] == content_event_id("sensor", r) for r in sensors)
    historical = [r for r in sensors if r["time"] == iso(T0 - 60_000)]
    assert historical[0]["payload"] == {"source": "spb", "historical": True}
    events = [(h["machine_id"], h["status"]) for h in health]
    assert sorted(events) == sorted(
        [
            ("gw-1", "online"),
            ("press-1", "online"),
            ("gw-1", "online"),
            ("press-1", "online"),
            ("gw-1", "offline"),
            ("press-1", "offline"),
            ("gw-1", "online"),
            ("scada", "online"),
        ]
    )
    deaths = [h for h in health if h["status"] == "offline"]
    assert all(h["level"] == "critical" for h in deaths)
    # the will carries no timestamp: the time the agent received it
    for death in deaths:
        assert before_death <= datetime.fromisoformat(death["time"].replace("Z", "+00:00")) <= after_death
    assert sorted(h["time"] for h in health if h["status"] == "online") == [
        iso(T0),
        iso(T0 + 1),
        iso(T0 + 5000),
        iso(T0 + 5001),
        iso(T0 + 10_000),
        iso(T0 + 11_000),
    ]
    assert snapshot["edge_agent_sparkplug_seq_gaps_total{source=spb}"] == 1
    assert snapshot["edge_agent_sparkplug_unknown_aliases_total{source=spb}"] == 1
    assert snapshot["edge_agent_sparkplug_rebirth_requests_total{reason=seq_gap,source=spb}"] == 1
    assert snapshot["edge_agent_sparkplug_rebirth_requests_total{reason=unknown_alias,source=spb}"] == 1
    assert snapshot["edge_agent_sparkplug_messages_total{source=spb,type=NCMD}"] == 2  # ours, ignored
    assert snapshot["edge_agent_sparkplug_ignored_total{reason=command,source=spb}"] == 2
    assert snapshot["edge_agent_received_total{source=spb}"] == 21
    assert [k for k in snapshot if k.startswith("edge_agent_rejected_total")] == []


def test_backpressure_says_offline_to_the_edge_nodes_and_comes_back(mqtt_port: int, tmp_path: Path) -> None:
    """Kafka is down: the queue passes `high` and the agent, as primary host, publishes STATE offline
    and disconnects (Sparkplug edge nodes then keep their data as historical). Kafka comes back: the
    queue drains below `low`, the agent reconnects with STATE online and a new timestamp, and every
    value queued before reaches Kafka."""
    broker = OwnBroker(tmp_path, list(TOPICS))
    config = agent_config(
        broker.address,
        "",
        tmp_path / "q.db",
        [sparkplug_source(mqtt_port)],
        backpressure={"high": 20, "low": 5, "delay_s": 0.5},
    )
    host_state = Watcher(mqtt_port, "spBv1.0/STATE/platform")
    node = EdgeNode(mqtt_port, "Plant A", "Gateway1")
    try:
        with running_agent(config) as agent:
            metrics = agent.engine.metrics.snapshot
            wait_for(lambda: agent.sources[0].connected.is_set(), 60, "the agent's MQTT connection")
            node.publish("NBIRTH", [temp(False, 0.0)], ts=T0)
            for i in range(1, 30):
                node.publish("NDATA", [temp(True, float(i))], ts=T0 + i)
            wait_for(lambda: not agent.sources[0].connected.is_set(), 60, "the subscription to pause")
            assert [s["online"] for s in host_state.states()] == [True, False]
            snapshot = metrics()
            assert snapshot["edge_agent_backpressure_transitions_total{to=slow}"] == 1
            assert snapshot["edge_agent_queue_depth"] == 31  # 30 readings and the online health
            broker.start()
            wait_for(lambda: metrics().get("edge_agent_sent_total") == 31, 60, "all 31 messages sent")
            wait_for(lambda: agent.sources[0].connected.is_set(), 60, "the subscription to resume")
            wait_for(lambda: len(host_state.states()) == 3, 60, "STATE online again")
            states = host_state.states()
            assert states[2]["online"] is True and states[2]["timestamp"] > states[0]["timestamp"]
            messages = read_topic(broker.address, "sensors.device.readings", expect=30)
    finally:
        node.close()
        host_state.close()
        broker.stop()
    assert [m["value"] for m in decoded(messages)] == [float(i) for i in range(30)]


def test_the_agent_reconnects_to_a_restarted_broker_and_says_online_again(kafka_brokers: str, tmp_path: Path) -> None:
    """Mosquitto restarts on the same port (in memory: its retained STATE is gone). The agent
    reconnects, subscribes again and publishes its STATE online anew, so edge nodes that connect
    afterwards see it; the edge node's new birth and data reach Kafka."""
    prefix = edge_prefix(kafka_brokers)
    port = free_port()
    config = agent_config(kafka_brokers, prefix, tmp_path / "q.db", [sparkplug_source(port)])
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with running_agent(config) as agent:
        source, metrics = agent.sources[0], agent.engine.metrics.snapshot
        with mosquitto(tmp_path / "first", port):
            wait_for(lambda: source.connected.is_set(), 60, "the agent's MQTT connection")
            node = EdgeNode(port, "Plant A", "Gateway1", bd=0)
            node.publish("NBIRTH", [temp(False, 20.0)], ts=T0)
            node.publish("NDATA", [temp(True, 20.5)], ts=T0 + 1000)
            node.vanish()  # before the broker goes: its will (NDEATH) is the last thing it says
            wait_for(lambda: metrics().get("edge_agent_sent_total") == 4, 30, "2 readings, online, offline")
        wait_for(lambda: not source.connected.is_set(), 60, "the agent to notice the broker gone")
        with mosquitto(tmp_path / "second", port):
            wait_for(lambda: source.connected.is_set(), 45, "the agent's reconnection (paho backs off up to 30 s)")
            late = Watcher(port, "spBv1.0/STATE/platform")
            wait_for(lambda: late.messages, 60, "the retained STATE after the restart")
            late.close()
            node.reconnect()  # bdSeq 1
            node.publish("NBIRTH", [temp(False, 21.0)], ts=T0 + 10_000)
            node.publish("NDATA", [temp(True, 21.5)], ts=T0 + 11_000)
            sensors = decoded(read_topic(kafka_brokers, prefix + "sensors.device.readings", expect=4))
            health = decoded(read_topic(kafka_brokers, prefix + "device.health", expect=3))
            node.close()
    [(topic, body, retained)] = late.messages
    assert (topic, orjson.loads(body)["online"], retained) == ("spBv1.0/STATE/platform", True, True)
    assert sorted((r["time"], r["value"]) for r in sensors) == [
        (iso(T0), 20.0),
        (iso(T0 + 1000), 20.5),
        (iso(T0 + 10_000), 21.0),
        (iso(T0 + 11_000), 21.5),
    ]
    assert sorted(h["status"] for h in health) == ["offline", "online", "online"]  # the will: receipt time
    assert sorted(h["time"] for h in health if h["status"] == "online") == [iso(T0), iso(T0 + 10_000)]
