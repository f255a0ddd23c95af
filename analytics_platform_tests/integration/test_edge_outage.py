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
import time
from pathlib import Path

import orjson
import pytest

from analytics_platform.devstack.processes import free_port
from analytics_platform_tests.support.edge import (
    MQTTPublisher,
    OwnBroker,
    mosquitto,
    read_log,
    read_whole_topic,
    scrape_metrics,
    start_mqtt_agent,
    wait_for,
)
from edge_agents.simulator import TOPICS

RATE = 1000  # messages per second
MACHINES = [f"mc-{i:02d}" for i in range(1, 7)]
BEFORE_S = 10.0
OUTAGE_S = float(os.environ.get("EDGE_OUTAGE_S", "60"))
KILL_AT_S = OUTAGE_S / 2
AFTER_S = 5.0
TOPIC = "sensors.device.readings"

pytestmark = pytest.mark.timeout(420)


def as_rows(messages: list) -> list[tuple[int, int, bytes, dict]]:
    """(partition, offset, key, value) of each message."""
    return [(m.partition(), m.offset(), m.key(), orjson.loads(m.value())) for m in messages]


def test_no_loss_through_broker_outage_and_agent_kill(tmp_path: Path) -> None:
    broker = OwnBroker(tmp_path, list(TOPICS))
    broker.start()
    metrics_port = free_port()
    with mosquitto(tmp_path) as mqtt_port:
        agent = start_mqtt_agent(
            tmp_path,
            broker.address,
            metrics_port,
            mqtt_port,
            name="outage",
            backpressure=None,  # the agent's own: a 60 s outage at 1000 msg/s passes its thresholds
        )
        publisher = MQTTPublisher(mqtt_port, RATE, MACHINES, "outage", "outage-pub")
        publisher.start()
        try:
            time.sleep(BEFORE_S)  # the scenario's timeline: traffic flows normally first
            agent.signal(signal.SIGSTOP)
            # everything the broker holds, read to its watermarks (nothing produces meanwhile), not until a
            # fixed silence, which a loaded machine's fetch could outlast and lose the rest with the broker
            first = as_rows(read_whole_topic(broker.address, TOPIC, timeout=120))
            broker.stop()
            agent.signal(signal.SIGCONT)
            outage_started = time.monotonic()
            time.sleep(KILL_AT_S)
            agent.signal(signal.SIGKILL)
            agent.process.wait(10)
            after_kill = scrape_metrics(metrics_port)
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
            messages, whole = read_log(broker.address, TOPIC, timeout=120)  # the log up to its watermarks now
            second[:] = as_rows(messages)
            seen = {(v["machine_id"], int(v["value"])) for _, _, _, v in first + second}
            return whole and expected <= seen

        wait_for(complete, 240, "every published message in Kafka", interval=1.0)
        wait_for(
            lambda: scrape_metrics(metrics_port).get("edge_agent_queue_depth") == 0, 60, "the agent's queue to empty"
        )
        final = scrape_metrics(metrics_port)
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
