"""Zero loss through a broker outage: MQTT at 1000 msg/s → agent → Kafka, while the Kafka broker is
stopped for 60 s and comes back fresh (Tansu keeps nothing: topics re-created), and the agent is
`kill -9`ed and restarted once during the outage. Afterwards every published message is in Kafka
exactly once after dedup by `event_id`, and each key's messages are in publish order.

Tansu is an in-memory broker, so what it held before the outage is gone with it. To see those
messages, the test freezes the agent (SIGSTOP) for a moment, reads everything the first broker
holds, stops the broker and lets the agent go on (SIGCONT): from the agent's side the broker simply
disappears. The downstream view is then "first broker's log, then the fresh broker's log".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml

from analytics_platform.devstack.processes import free_port
from analytics_platform_tests.edge_support import OwnBroker, mosquitto, read_topic, wait_for
from edge_agents.simulator import TOPICS

RATE = 1000  # messages per second
MACHINES = [f"mc-{i:02d}" for i in range(1, 7)]
BEFORE_S = 10.0
OUTAGE_S = float(os.environ.get("EDGE_OUTAGE_S", "60"))
KILL_AT_S = OUTAGE_S / 2
AFTER_S = 5.0
TOPIC = "sensors.device.readings"

pytestmark = pytest.mark.timeout(420)


class Publisher(threading.Thread):
    """QoS 1 at a fixed rate, round-robin over the machines; remembers what it published."""

    def __init__(self, port: int) -> None:
        super().__init__(name="mqtt-publisher", daemon=True)
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="outage-pub")
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.stop = threading.Event()
        self.published: list[tuple[str, int]] = []
        self.infos: list[mqtt.MQTTMessageInfo] = []

    def run(self) -> None:
        started = time.monotonic()
        n = 0
        while not self.stop.is_set():
            due = int((time.monotonic() - started) * RATE)
            while n < due:
                machine = MACHINES[n % len(MACHINES)]
                ts = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
                body = orjson.dumps({"seq": n, "ts": ts})
                self.infos.append(self.client.publish(f"outage/{machine}", body, qos=1))
                self.published.append((machine, n))
                n += 1
            time.sleep(0.002)  # pacing of the generator, not synchronisation

    def finish(self) -> None:
        self.stop.set()
        self.join()
        for info in self.infos:
            info.wait_for_publish(30)
        self.client.loop_stop()
        self.client.disconnect()


def metrics(port: int) -> dict[str, float]:
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def drain(address: str, idle_s: float = 3.0) -> list[tuple[int, int, bytes, dict]]:
    """Everything the broker holds on the topic: (partition, offset, key, value), until idle."""
    return [
        (m.partition(), m.offset(), m.key(), orjson.loads(m.value()))
        for m in read_topic(address, TOPIC, timeout=120, idle_s=idle_s)
    ]


class AgentProcess:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge_agents.cli", "run", "--config", str(self.config)],
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
        )

    def signal(self, sig: int) -> None:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
        self.process.send_signal(sig)


def test_no_loss_through_broker_outage_and_agent_kill(tmp_path: Path) -> None:
    broker = OwnBroker(tmp_path, list(TOPICS))
    broker.start()
    metrics_port = free_port()
    with mosquitto(tmp_path) as mqtt_port:
        config = tmp_path / "agent.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "agent_id": "outage",
                    "kafka": {"brokers": broker.address},
                    "queue": {"path": str(tmp_path / "queue.db")},
                    "metrics": {"port": metrics_port},
                    "sources": [
                        {
                            "name": "plc-gw",
                            "type": "mqtt",
                            "port": mqtt_port,
                            "identity": {"tenant_id": "t1", "factory_id": "f1"},
                            "mappings": [
                                {
                                    "topic": "outage/{machine_id}",
                                    "format": "json",
                                    "values": {"temp": "seq"},
                                    "time_path": "ts",
                                    "fields": {"sensor_id": "s-temp"},
                                }
                            ],
                        }
                    ],
                }
            )
        )
        agent = AgentProcess(config, tmp_path / "agent.log")
        agent.start()
        connected = 'edge_agent_source_connected{source="plc-gw"}'
        wait_for(lambda: metrics(metrics_port).get(connected) == 1, 30, "the agent's MQTT subscription")
        publisher = Publisher(mqtt_port)
        publisher.start()
        try:
            time.sleep(BEFORE_S)  # the scenario's timeline: traffic flows normally first
            agent.signal(signal.SIGSTOP)
            first = drain(broker.address)
            broker.stop()
            agent.signal(signal.SIGCONT)
            outage_started = time.monotonic()
            time.sleep(KILL_AT_S)
            agent.signal(signal.SIGKILL)
            agent.process.wait(10)
            after_kill = metrics(metrics_port)
            agent.start()
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
            broker.start()
            time.sleep(AFTER_S)
        finally:
            publisher.finish()
        published = publisher.published
        expected = {(machine, seq) for machine, seq in published}
        second: list = []

        def complete() -> bool:
            second[:] = drain(broker.address, idle_s=1.0)
            seen = {(v["machine_id"], int(v["value"])) for _, _, _, v in first + second}
            return expected <= seen

        wait_for(complete, 240, "every published message in Kafka", interval=1.0)
        wait_for(lambda: metrics(metrics_port).get("edge_agent_queue_depth") == 0, 60, "the agent's queue to empty")
        final = metrics(metrics_port)
        agent.signal(signal.SIGTERM)
        assert agent.process.wait(60) == 0
    broker.stop()
    assert after_kill == {}  # the agent really was gone

    rows = sorted(first) + sorted(second)  # each broker's log in (partition, offset) order
    unique: dict[str, tuple[bytes, dict]] = {}
    for _, _, key, value in rows:
        unique.setdefault(value["event_id"], (key, value))
    delivered = [(v["machine_id"], int(v["value"])) for _, v in unique.values()]
    assert len(delivered) == len(published) == len(set(delivered))
    assert set(delivered) == expected
    assert all(k == f"t1-f1-{v['machine_id']}".encode() for k, v in unique.values())
    for machine in MACHINES:
        seqs = [int(v["value"]) for _, v in unique.values() if v["machine_id"] == machine]
        assert seqs == sorted(seqs), f"{machine}: order broken"
    assert final["edge_agent_replayed_total"] > 0
    assert final["edge_agent_queue_depth"] == 0
    print(
        f"published {len(published)}, first broker {len(first)}, fresh broker {len(second)}, "
        f"duplicates {len(rows) - len(unique)}, replayed after restart {final['edge_agent_replayed_total']:.0f}"
    )
