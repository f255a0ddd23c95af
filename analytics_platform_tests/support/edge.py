"""Shared parts of the edge-agent tests: an agent run in-process, topics, reading Kafka back,
and a Mosquitto broker from Debian."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from analytics_platform.devstack.broker import ensure_topics, start_tansu
from analytics_platform.devstack.processes import free_port, port_open
from edge_agents.agent import Agent
from edge_agents.config import AgentConfig, parse_config
from edge_agents.simulator import TOPICS

PARTITIONS = 3


def edge_prefix(brokers: str) -> str:
    """A fresh topic prefix with the four topics created (3 partitions each)."""
    prefix = f"e{uuid.uuid4().hex[:10]}."
    ensure_topics({"bootstrap.servers": brokers}, [prefix + t for t in TOPICS], partitions=PARTITIONS)
    return prefix


def agent_config(brokers: str, prefix: str, queue_path: Path, sources: list[dict], **extra: Any) -> AgentConfig:
    """A config for tests: metrics endpoint off unless asked, text logs."""
    document: dict[str, Any] = {
        "agent_id": "test",
        "kafka": {"brokers": brokers, "topic_prefix": prefix, **extra.pop("kafka", {})},
        "queue": {"path": str(queue_path), **extra.pop("queue", {})},
        "metrics": extra.pop("metrics", {"port": 0}),
        "log_format": "text",
        "sources": sources,
        **extra,
    }
    return parse_config(document)


@contextmanager
def running_agent(config: AgentConfig) -> Iterator[Agent]:
    """Run an agent on a thread of its own (its event loop + engine thread) and stop it gracefully."""
    agent = Agent(config)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(_run(agent, started))
        except BaseException as exc:  # surfaced to the test below
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=main, name="test-agent", daemon=True)
    thread.start()
    assert started.wait(30), "agent did not start"
    try:
        yield agent
    finally:
        if agent.stop_event is not None:
            loop.call_soon_threadsafe(agent.stop_event.set)
        thread.join(60)
        loop.close()
    assert not failure, f"agent failed: {failure[0]!r}"


async def _run(agent: Agent, started: threading.Event) -> None:
    task = asyncio.create_task(agent.run(install_signals=False))
    while agent.stop_event is None and not task.done():
        await asyncio.sleep(0.01)
    started.set()
    await task


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.05,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll `condition` until truthy; fail the test naming `what` on timeout, with `explain()`'s account
    of the state (e.g. `AgentProcess.report`): a wait that fails once in many CI runs must say why."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            message = f"timed out after {timeout} s waiting for {what}"
            raise AssertionError(message if explain is None else f"{message}\n{explain()}")
        time.sleep(interval)


def read_topic(
    brokers: str, topic: str, expect: int | None = None, timeout: float = 30.0, idle_s: float = 2.0
) -> list[Any]:
    """Every message of a topic from the start; with `expect`, keep reading until that many arrived
    (then stop at the first empty read), without it until `idle_s` pass with nothing new."""
    consumer = Consumer(
        {"bootstrap.servers": brokers, "group.id": f"read-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    assign_all(consumer, topic)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=10000, timeout=0.5)
            out.extend(m for m in batch if m.error() is None)
            if batch:
                last = time.monotonic()
            elif (expect is not None and len(out) >= expect) or (expect is None and time.monotonic() - last > idle_s):
                break
    finally:
        consumer.close()
    return out


def read_log(brokers: str, topic: str, timeout: float = 60.0, recheck: bool = False) -> tuple[list[Any], bool]:
    """Every message a broker holds on a topic, and whether the read is known complete (for a broker
    about to be stopped, with nothing producing to it): each partition is read up to its high
    watermark. Tansu's high watermark is the start of the partition's last batch + 1, so the read
    goes on until that offset was seen and one read came back empty (the rest of that batch arrives
    with it). `recheck`: then the watermarks are asked once more and a partition that grew meanwhile
    is read on (for a log something may still be writing to; each ask costs Tansu ~0.5 s a partition).
    On a timeout or a broker error: what was read, and False."""
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"read-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "log_level": 3,
        }
    )
    out: list[Any] = []
    seen: dict[int, int] = {}
    deadline = time.monotonic() + timeout

    def marks(partitions: list[int]) -> dict[int, int]:
        need = {}
        for partition in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > 0:
                need[partition] = high - 1
        return need

    try:
        assign_all(consumer, topic)
        partitions = sorted(tp.partition for tp in consumer.assignment())
        need = marks(partitions)
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(num_messages=10000, timeout=0.2) if m.error() is None]
            out.extend(batch)
            for m in batch:
                seen[m.partition()] = max(seen.get(m.partition(), -1), m.offset())
            if batch or not all(seen.get(p, -1) >= offset for p, offset in need.items()):
                continue
            if not recheck:
                return out, True
            again = marks(partitions)
            if again == need:
                return out, True
            need = again
        return out, False
    except KafkaException:
        return out, False
    finally:
        consumer.close()


def read_whole_topic(brokers: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """`read_log`, for a test: complete, or the test fails."""
    messages, complete = read_log(brokers, topic, timeout)
    if not complete:
        seen = Counter(m.partition() for m in messages)
        raise AssertionError(f"{topic} on {brokers}: read {dict(seen)} messages a partition, not whole, in {timeout} s")
    return messages


def topic_has_messages(brokers: str, topic: str) -> bool:
    """Whether any partition of the topic holds a message (False while the topic does not exist)."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
    try:
        partitions = consumer.list_topics(topic, timeout=5).topics[topic].partitions
        marks = (consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5) for p in partitions)
        return any(high > 0 for _, high in marks)
    except KafkaException:
        return False
    finally:
        consumer.close()


def assign_all(consumer: Consumer, topic: str) -> None:
    """Read every partition the broker has: a fresh Tansu auto-creates a topic a producer asks for
    (with its own partition count) when the producer is faster than the test's topic creation."""
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])


def decoded(messages: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(m.value()) for m in messages]


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not found:
        raise RuntimeError("Mosquitto is not installed: apt-get install mosquitto (make test does it when root)")
    return found


@contextmanager
def mosquitto(workdir: Path, port: int | None = None) -> Iterator[int]:
    """A Mosquitto broker on a free port (or `port`: the same one again, for a broker restart);
    `max_queued_messages 0` so a slow subscriber loses nothing."""
    port = port or free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_inflight_messages 1000\n"
    )
    log = (workdir / "mosquitto.log").open("w")
    process = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: port_open("127.0.0.1", port) or process.poll() is not None, 60, "mosquitto to listen")
        assert process.poll() is None, (workdir / "mosquitto.log").read_text()
        yield port
    finally:
        process.terminate()
        process.wait(10)
        log.close()


class OwnBroker:
    """A Tansu broker of the test's own, on a fixed port, that the test stops and starts again.
    Tansu keeps everything in memory: each start is a fresh, empty broker (topics re-created here)."""

    def __init__(self, workdir: Path, topics: list[str]) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.workdir = workdir
        self.topics = topics
        self.service = None
        self.starts = 0

    def start(self, create_topics: bool = True) -> None:
        """A fresh broker; `create_topics=False` leaves the topics to `create_topics()` later (a broker
        that comes back without them for a while)."""
        self.starts += 1
        self.service = start_tansu(self.port, self.workdir / f"tansu-{self.starts}.log")
        if create_topics:
            self.create_topics()

    def create_topics(self) -> None:
        ensure_topics({"bootstrap.servers": self.address}, self.topics, partitions=PARTITIONS)

    def kill(self) -> None:
        """End the broker at once (SIGKILL), as a crashed or replaced broker goes. A graceful stop
        waits about 5 s while a client (a frozen agent) keeps its connection open."""
        if self.service is not None:
            self.service.process.kill()
            self.service.process.wait(10)
            self.service = None

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(timeout=10)
            self.service = None


def scrape_metrics(port: int) -> dict[str, float]:
    """An agent's /metrics as `name{labels}` → value; empty when the endpoint does not answer (the
    agent is stopped, frozen or gone)."""
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


class AgentProcess:
    """`edge-agent run` as a child process, so a test can freeze (SIGSTOP), resume or kill it."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen | None = None
        self.pids: list[int] = []  # every process started: one entry means never restarted

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge_agents.cli", "run", "--config", str(self.config)],
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
        )
        self.pids.append(self.process.pid)

    def signal(self, sig: int) -> None:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
        self.process.send_signal(sig)

    def report(self, metrics_port: int | None = None, lines: int = 40) -> str:
        """What the agent is doing, for a failed wait: alive or its exit code, its last warnings and
        errors (info lines are one per batch and bury them), and its metrics when a port is given."""
        state = "not started" if self.process is None else f"exit code {self.process.poll()}"
        if self.process is not None and self.process.poll() is None:
            state = f"running (pid {self.process.pid})"
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        notable = [line for line in text.splitlines() if '"level":"info"' not in line][-lines:]
        parts = [f"the agent: {state}; its last {len(notable)} warnings/errors:", *notable]
        if metrics_port is not None:
            metrics = scrape_metrics(metrics_port)
            kept = {k: v for k, v in metrics.items() if k.startswith("edge_agent_") and "bucket" not in k}
            parts.append(f"its metrics: {kept}" if kept else "its metrics endpoint did not answer")
        return "\n".join(parts)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the exit code (a frozen agent is resumed first, or it would never exit)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


class MQTTPublisher(threading.Thread):
    """QoS 1 messages `{"seq", "ts"}` at `rate` a second to `<prefix>/<machine>`, round-robin over the
    machines; remembers what it published as (machine, seq)."""

    def __init__(self, port: int, rate: int, machines: list[str], prefix: str, client_id: str) -> None:
        super().__init__(name="mqtt-publisher", daemon=True)
        self.rate = rate
        self.machines = machines
        self.prefix = prefix
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.halt = threading.Event()
        self.published: list[tuple[str, int]] = []
        self.infos: list[mqtt.MQTTMessageInfo] = []

    def run(self) -> None:
        started = time.monotonic()
        n = 0
        while not self.halt.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while n < due:
                machine = self.machines[n % len(self.machines)]
                ts = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
                body = orjson.dumps({"seq": n, "ts": ts})
                self.infos.append(self.client.publish(f"{self.prefix}/{machine}", body, qos=1))
                self.published.append((machine, n))
                n += 1
            time.sleep(0.002)  # pacing of the generator, not synchronisation

    def finish(self) -> None:
        """Stop publishing and wait until Mosquitto has taken every message."""
        self.halt.set()
        self.join()
        for info in self.infos:
            info.wait_for_publish(30)
        self.client.loop_stop()
        self.client.disconnect()


NO_BACKPRESSURE = {"high": 1_000_000, "low": 500_000}


def start_mqtt_agent(
    workdir: Path, brokers: str, metrics_port: int, mqtt_port: int, *, name: str, **options: Any
) -> AgentProcess:
    """The agent of `mqtt_agent_yaml` (agent id and MQTT topic `name`; `options` go to it) as a child
    process with its config, queue and log under `workdir`, returned once its MQTT source is
    subscribed (and stopped again if it never is)."""
    queue = workdir / "queue.db"
    config = mqtt_agent_yaml(
        workdir / "agent.yaml", brokers, queue, metrics_port, mqtt_port, agent_id=name, topic=name, **options
    )
    agent = AgentProcess(config, workdir / "agent.log")
    agent.start()
    connected = 'edge_agent_source_connected{source="plc-gw"}'
    try:
        wait_for(lambda: scrape_metrics(metrics_port).get(connected) == 1, 30, "the agent's MQTT subscription")
    except BaseException:
        agent.stop()
        raise
    return agent


def mqtt_agent_yaml(
    path: Path,
    brokers: str,
    queue: Path,
    metrics_port: int,
    mqtt_port: int,
    *,
    agent_id: str,
    topic: str,
    backpressure: dict[str, int] | None = NO_BACKPRESSURE,
) -> Path:
    """An agent config with the agent's own Kafka defaults (what ships is what is tested) and one MQTT
    source mapping `<topic>/{machine_id}` messages `{"seq", "ts"}` (MQTTPublisher's) to `temp`
    readings of tenant t1, factory f1, sensor s-temp. By default backpressure thresholds are out of
    reach (pausing the subscription is tested elsewhere, and its QoS 1 redeliveries would make
    counts inexact); `backpressure=None` keeps the agent's own."""
    path.write_text(
        yaml.safe_dump(
            {
                "agent_id": agent_id,
                "kafka": {"brokers": brokers},
                "queue": {"path": str(queue)},
                "metrics": {"port": metrics_port},
                **({"backpressure": backpressure} if backpressure is not None else {}),
                "sources": [
                    {
                        "name": "plc-gw",
                        "type": "mqtt",
                        "port": mqtt_port,
                        "identity": {"tenant_id": "t1", "factory_id": "f1"},
                        "mappings": [
                            {
                                "topic": f"{topic}/{{machine_id}}",
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
    return path
