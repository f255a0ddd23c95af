"""Shared parts of the edge-agent tests: an agent run in-process, topics, reading Kafka back,
and a Mosquitto broker from Debian."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

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


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `condition` until truthy; fail the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
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
def mosquitto(workdir: Path) -> Iterator[int]:
    """A Mosquitto broker on a free port; `max_queued_messages 0` so a slow subscriber loses nothing."""
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_inflight_messages 1000\n"
    )
    log = (workdir / "mosquitto.log").open("w")
    process = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: port_open("127.0.0.1", port) or process.poll() is not None, 10, "mosquitto to listen")
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

    def start(self) -> None:
        self.starts += 1
        self.service = start_tansu(self.port, self.workdir / f"tansu-{self.starts}.log")
        ensure_topics({"bootstrap.servers": self.address}, self.topics, partitions=PARTITIONS)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(timeout=10)
            self.service = None
