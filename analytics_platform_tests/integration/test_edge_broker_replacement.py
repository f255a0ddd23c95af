"""The Kafka broker replaced under a running agent (issue 19, finding 4): MQTT at 1000 msg/s → agent →
Kafka while the broker is swapped for a fresh one three times. The agent process is never restarted,
so it is the agent's long-lived producer that meets each new broker. A fresh broker does not know
that producer's id and answers its idempotent produce requests with UnknownProducerId: librdkafka
then either bumps the epoch and retries for ever without telling anyone, or, when requests were in
flight as the old broker went, raises a fatal error (which of the two depends on the moment of the
freeze; both happen in this test). Either way the agent must rebuild its producer and send its
queue again, in order, without being restarted.

Tansu is an in-memory broker, so what a broker held is gone with it. To see it, the test freezes the
agent (SIGSTOP), reads everything the current broker holds, kills it, starts a fresh one on the same
port, re-creates the topics and lets the agent go on (SIGCONT): from the agent's side the broker it
was connected to is replaced while it runs. The second replacement brings the broker back without
topics and creates them only after the agent has resumed (a broker whose topics are missing for a
while; Tansu creates a topic a producer asks for, so the test's own creation may find it there).
Downstream is then the brokers' logs one after the other: after dedup by `event_id` (a resend after
a rewind may duplicate) every message the agent accepted is there, and each key is in publish order.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from analytics_platform.devstack.processes import free_port
from analytics_platform_tests.support.edge import (
    MQTTPublisher,
    OwnBroker,
    mosquitto,
    read_whole_topic,
    scrape_metrics,
    start_mqtt_agent,
    topic_has_messages,
    wait_for,
)
from edge_agents.simulator import TOPICS

RATE = 1000  # messages per second
MACHINES = [f"mc-{i:02d}" for i in range(1, 7)]
REPLACEMENTS = 3
PHASE = 2000  # messages published after the agent resumed, before the next replacement (2 s at RATE)
LATE_TOPICS = 1  # the replacement (0-based) whose broker gets its topics only after the agent resumed
RESUME_TIMEOUT_S = 30.0  # measured 1 to 4.3 s with the agent's defaults; the defect never resumes
TOPIC = "sensors.device.readings"
SENT = "edge_agent_sent_total"
RESTARTS = "edge_agent_producer_restarts_total"

pytestmark = pytest.mark.timeout(300)

Row = tuple[int, int, bytes, dict[str, Any]]  # partition, offset, key, value


@dataclass
class Replacement:
    frozen_s: float  # how long the agent was frozen while the broker was swapped
    resumed_s: float  # from SIGCONT to the first message on the fresh broker
    rebuilds: int  # producer rebuilds between this replacement and the next (or the end)


def drain(address: str) -> list[Row]:
    """Everything the broker holds on the topic (nothing is producing to it: the agent is frozen)."""
    return [(m.partition(), m.offset(), m.key(), orjson.loads(m.value())) for m in read_whole_topic(address, TOPIC)]


def test_agent_delivers_in_order_through_broker_replacements(tmp_path: Path) -> None:
    started = time.monotonic()
    broker = OwnBroker(tmp_path, list(TOPICS))
    broker.start()
    metrics_port = free_port()
    logs: list[list[Row]] = []  # each broker's log, in the order the brokers ran
    replacements: list[Replacement] = []

    def metric(name: str) -> float:
        return wait_for(lambda: scrape_metrics(metrics_port), 60, "the agent's /metrics").get(name, 0.0)

    try:
        with mosquitto(tmp_path) as mqtt_port:
            agent = start_mqtt_agent(tmp_path, broker.address, metrics_port, mqtt_port, name="replace")
            try:
                publisher = MQTTPublisher(mqtt_port, RATE, MACHINES, "replace", "replace-pub")
                publisher.start()
                try:
                    restarts_from = 0.0
                    mark = 0  # messages published when the current broker started taking them
                    for i in range(REPLACEMENTS):
                        wait_for(
                            lambda mark=mark: len(publisher.published) >= mark + PHASE,
                            60,
                            f"traffic through broker {i + 1}",
                        )
                        if replacements:
                            replacements[-1].rebuilds = int(metric(RESTARTS) - restarts_from)
                        agent.signal(signal.SIGSTOP)
                        frozen = time.monotonic()
                        logs.append(drain(broker.address))
                        broker.kill()
                        broker.start(create_topics=i != LATE_TOPICS)
                        agent.signal(signal.SIGCONT)
                        resumed = time.monotonic()
                        restarts_from = metric(RESTARTS)
                        if i == LATE_TOPICS:
                            broker.create_topics()
                        # acknowledgements the agent had not read before it froze still count after it
                        # resumes, so the agent's counters cannot tell; the fresh broker's log can
                        wait_for(
                            lambda: topic_has_messages(broker.address, TOPIC),
                            RESUME_TIMEOUT_S,
                            f"the agent's messages on the fresh broker after replacement {i + 1}",
                            interval=0.1,
                        )
                        replacements.append(Replacement(resumed - frozen, time.monotonic() - resumed, 0))
                        mark = len(publisher.published)
                    wait_for(lambda: len(publisher.published) >= mark + PHASE, 60, "traffic after the last replacement")
                finally:
                    publisher.finish()
                published = publisher.published
                wait_for(
                    lambda: metric(SENT) == len(published) and metric("edge_agent_queue_depth") == 0,
                    60,
                    "every published message acknowledged and the queue empty",
                )
                final = scrape_metrics(metrics_port)
                replacements[-1].rebuilds = int(final[RESTARTS] - restarts_from)
                logs.append(drain(broker.address))
                assert agent.process is not None and agent.process.poll() is None, "the agent exited on its own"
            finally:
                exit_code = agent.stop()
    finally:
        broker.stop()

    # the same agent process met every broker, and stopped cleanly
    assert len(agent.pids) == 1
    assert exit_code == 0
    assert broker.starts == REPLACEMENTS + 1

    # every accepted message was queued once and acknowledged once: nothing lost, nothing left
    assert final["edge_agent_queued_total"] == len(published)
    assert final[SENT] == len(published)
    assert final["edge_agent_queue_depth"] == 0
    assert final["edge_agent_in_flight"] == 0

    # a rebuild for every replacement, and no rebuild storm
    assert len(replacements) == REPLACEMENTS
    assert all(r.rebuilds >= 1 for r in replacements), replacements
    assert final[RESTARTS] == sum(r.rebuilds for r in replacements) <= 2 * REPLACEMENTS

    # downstream: the brokers' logs one after the other, each in (partition, offset) order
    rows = [row for log in logs for row in sorted(log)]
    unique: dict[str, tuple[bytes, dict[str, Any]]] = {}
    for _, _, key, value in rows:
        unique.setdefault(value["event_id"], (key, value))
    delivered = [(v["machine_id"], int(v["value"])) for _, v in unique.values()]
    assert len(delivered) == len(published) == len(set(delivered))
    assert set(delivered) == set(published)
    assert all(key == f"t1-f1-{v['machine_id']}".encode() for key, v in unique.values())
    for machine in MACHINES:
        seqs = [int(v["value"]) for _, v in unique.values() if v["machine_id"] == machine]
        assert seqs == sorted(seqs), f"{machine}: order broken"

    print(
        f"\npublished {len(published)}, per broker {[len(log) for log in logs]}, "
        f"duplicates {len(rows) - len(unique)}, rebuilds {final[RESTARTS]:.0f}, "
        f"wall time {time.monotonic() - started:.1f} s"
    )
    for n, r in enumerate(replacements, 1):
        print(
            f"replacement {n}: frozen {r.frozen_s:.2f} s, "
            f"resumed {r.resumed_s:.2f} s after SIGCONT, rebuilds {r.rebuilds}"
        )
