"""The agent's engine: intake → contract check → durable queue → Kafka, and backpressure.

One thread owns the queue and the producer, so ordering needs no locks: sources (any thread or
event loop) hand payloads to `submit`, the engine thread takes everything waiting, checks it in one
contract pass per domain, writes it to the queue in one transaction, then hands queue entries to
the producer strictly in sequence order and deletes each one when the broker acknowledges it.

Delivery failures never reorder a key: on the first failure (or a fatal producer error) the engine
stops handing out entries and purges what librdkafka has not sent yet, waits until every entry in
flight is settled, then rewinds to the oldest entry not acknowledged and sends again from there.
Messages the idempotent producer already had on the wire keep their order (the broker checks
sequence numbers per partition); what comes again after a rewind may be a duplicate, which the
platform removes by `event_id`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from analytics_platform.contracts.base import ContractViolation
from edge_agents.backpressure import Backpressure
from edge_agents.canonical import Canonicalizer
from edge_agents.config import AgentConfig
from edge_agents.metrics import AgentMetrics
from edge_agents.store import DiskQueue, Entry, entry_size

log = logging.getLogger("edge_agents.engine")

# errors that sending again cannot fix: the entry leaves the queue for the rejects table
_PERMANENT = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG, KafkaError.INVALID_RECORD}
_READY_CAP = 20000  # entries kept in memory for the fast path; beyond it the queue file is read
# payloads taken in per step: a flood of submits must not starve sending (measured: 4k msg/s
# acknowledged when a step took in everything waiting, 28k with this cap; bench/edge.py)
_INTAKE_PER_STEP = 5000


@dataclass
class SubmitResult:
    """What became of one `submit`: how many were queued, which were rejected and why."""

    accepted: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (index, reason, detail)
    refused: str | None = None  # set when nothing was taken (atomic batch with rejects, or queue full)


@dataclass
class _Unit:
    source: str
    domain: str
    payloads: list[dict[str, Any]]
    atomic: bool
    done: Callable[[SubmitResult], None] | None
    received_at: float


class Engine:
    """Owns the queue and the producer; everything else talks to it through `submit`."""

    def __init__(self, config: AgentConfig, metrics: AgentMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or AgentMetrics()
        self.canonical = Canonicalizer(config.kafka, config.contract)
        self.queue = DiskQueue(config.queue.path, config.queue.synchronous, config.queue.keep_rejects)
        bp = config.backpressure
        self.backpressure = Backpressure(bp.high, bp.low, bp.delay_s)
        self.on_backpressure: list[Callable[[bool], None]] = []
        self.on_crash: list[Callable[[], None]] = []
        self.crashed: BaseException | None = None
        self.delivery_observers: list[Callable[[float, float], None]] = []  # (received_at, acked_at)
        self._intake: list[_Unit] = []
        self._rejects: list[tuple[str, str | None, str, str, bytes | None]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None
        self._fatal: KafkaError | None = None
        # sending state (engine thread only)
        self._cursor = 0  # highest seq handed to the producer since the last rewind
        self._ready: deque[Entry] = deque()  # entries after the cursor, when `_ready_valid`
        self._ready_valid = False
        self._in_flight: dict[int, float] = {}  # seq -> received_at
        self._acked: list[int] = []
        self._refused: list[int] = []
        self._failed_min: int | None = None
        self._purge = False
        self._down = False  # the broker was seen unreachable and no delivery succeeded since
        self._resume_at = 0.0
        self._replay_until = self.queue.max_seq()  # what is in the queue at start is a replay
        self._dropped: set[int] = set()
        self._last_gauges = 0.0
        self._log_budget = _LogBudget()
        self.metrics.depth.set(self.queue.count)
        self.metrics.bytes.set(self.queue.bytes)
        if self.queue.count:
            log.info(
                "queue holds %d messages (%d bytes) from before: replaying them first",
                self.queue.count,
                self.queue.bytes,
            )

    # ----- the sources' side (thread-safe) -------------------------------------------------

    def submit(
        self,
        source: str,
        domain: str,
        payloads: list[dict[str, Any]],
        *,
        atomic: bool = False,
        done: Callable[[SubmitResult], None] | None = None,
        received_at: float | None = None,
    ) -> None:
        """Hand payloads in. `done` is called (on the engine thread) once they are durably queued
        or refused; `atomic` takes all of them or none."""
        self.metrics.received.labels(source).inc(len(payloads))
        unit = _Unit(source, domain, payloads, atomic, done, received_at or time.time())
        with self._lock:
            self._intake.append(unit)
        self._wake.set()

    def reject(self, source: str, domain: str | None, raw: bytes | None, reason: str, detail: str) -> None:
        """A source could not map its input: counted, logged, kept in the rejects table, never sent."""
        self.metrics.received.labels(source).inc()
        self.metrics.rejected.labels(source, reason).inc()
        if self._log_budget.take():
            log.warning("rejected input from %s: %s: %s", source, reason, detail)
        with self._lock:
            self._rejects.append((source, domain, reason, detail, raw))
        self._wake.set()

    @property
    def depth(self) -> int:
        """Messages in the queue not yet acknowledged."""
        return self.queue.count

    # ----- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._producer = self._new_producer()
        self.metrics.broker_up.set(1)
        self._thread = threading.Thread(target=self._run, name="edge-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take in what was submitted, try to deliver everything for `shutdown_timeout_s`, keep the
        rest on disk for the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread:
            self._thread.join()
        with contextlib.suppress(sqlite3.Error):
            self.queue.close()

    def _new_producer(self) -> Producer:
        config = self.config.kafka.producer_config()
        config["error_cb"] = self._on_error
        return Producer(config)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
            log.error("Kafka producer fatal error: %s", err)
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if not self._down:
                log.warning("Kafka unreachable (%s): messages wait in the disk queue", err.str())
            self._broker_down()

    # ----- the engine thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._step()
            self._drain_on_stop()
        except Exception as exc:
            log.exception("edge engine stopped on an unexpected error; the queue keeps what was not sent")
            self.crashed = exc
            for listener in self.on_crash:
                listener()

    def _step(self) -> None:
        self._take_intake()
        self._send()
        producer = self._producer
        if self._in_flight:
            producer.poll(0.001)  # type: ignore[union-attr]
        else:
            producer.poll(0)  # type: ignore[union-attr]
            self._wake.wait(0.02)
        self._wake.clear()
        self._settle()
        self._housekeeping()

    def _drain_on_stop(self) -> None:
        deadline = time.monotonic() + self.config.shutdown_timeout_s
        while self._intake or self._rejects:  # everything handed in, not just one step's worth
            self._take_intake()
        while self.queue.count and time.monotonic() < deadline:
            self._send()
            self._producer.poll(0.01)  # type: ignore[union-attr]
            self._settle()
        self._producer.purge(in_queue=True, in_flight=False)  # type: ignore[union-attr]
        self._producer.flush(min(2.0, max(0.0, deadline - time.monotonic())))  # type: ignore[union-attr]
        self._settle()
        self._housekeeping(force=True)
        log.info(
            "edge engine stopped: %d messages stay in the queue (%s) for the next start",
            self.queue.count,
            self.queue.path,
        )

    def _take_intake(self) -> None:
        with self._lock:
            units, self._intake = _take_payloads(self._intake, _INTAKE_PER_STEP)
            rejects, self._rejects = self._rejects, []
        if self._intake:
            self._wake.set()  # more waiting: the next step takes it, after this one has sent
        if rejects:
            self.queue.add_rejects(rejects)
        if units:
            self._accept(units)

    def _accept(self, units: list[_Unit]) -> None:
        now = datetime.now(UTC)
        results = [SubmitResult() for _ in units]
        # encode and check, one contract pass per domain
        encoded: list[list[Any]] = [[None] * len(u.payloads) for u in units]
        by_domain: dict[str, list[tuple[int, int, bytes]]] = {}
        for ui, unit in enumerate(units):
            for pi, payload in enumerate(unit.payloads):
                try:
                    out = self.canonical.encode(unit.domain, payload)
                except ContractViolation as violation:
                    results[ui].rejected.append((pi, violation.reason, violation.detail))
                    continue
                except (TypeError, ValueError) as exc:
                    results[ui].rejected.append((pi, "not_json", f"cannot serialise payload: {exc}"))
                    continue
                encoded[ui][pi] = out
                by_domain.setdefault(unit.domain, []).append((ui, pi, out.value))
        for domain, items in by_domain.items():
            verdicts = self.canonical.check(domain, [value for _, _, value in items], now)
            for (ui, pi, _), verdict in zip(items, verdicts, strict=True):
                if verdict is not None:
                    results[ui].rejected.append((pi, *verdict))
                    encoded[ui][pi] = None
        rows: list[tuple[str, bytes, bytes, float]] = []
        rejects: list[tuple[str, str | None, str, str, bytes | None]] = []
        incoming = 0
        for ui, unit in enumerate(units):
            result = results[ui]
            result.rejected.sort()
            for pi, reason, detail in result.rejected:
                self.metrics.rejected.labels(unit.source, reason).inc()
                rejects.append((unit.source, unit.domain, reason, detail, _payload_bytes(unit.payloads[pi])))
                if self._log_budget.take():
                    log.warning("rejected %s payload from %s: %s: %s", unit.domain, unit.source, reason, detail)
            if unit.atomic and result.rejected:
                result.refused = f"{len(result.rejected)} of {len(unit.payloads)} payloads break the contract"
                continue
            take = [o for o in encoded[ui] if o is not None]
            size = sum(entry_size(o.topic, o.key, o.value) for o in take)
            if not self._make_room(incoming + size):
                result.refused = "queue full"
                result.rejected = []
                self.metrics.dropped.labels("queue_full_stop_accepting").inc(len(take))
                continue
            incoming += size
            rows.extend((o.topic, o.key, o.value, unit.received_at) for o in take)
            result.accepted = len(take)
        entries = self.queue.append(rows) if rows else []
        if rejects:
            self.queue.add_rejects(rejects)
        self.metrics.queued.inc(len(entries))
        if entries and self._down:
            self._replay_until = entries[-1].seq  # queued while the broker was away
        if entries:
            if self._ready_valid and len(self._ready) + len(entries) <= _READY_CAP:
                self._ready.extend(entries)
            else:
                self._ready_valid = False
                self._ready.clear()
        for unit, result in zip(units, results, strict=True):
            if unit.done is not None:
                try:
                    unit.done(result)
                except Exception:
                    log.exception("a source's completion callback failed")

    def _make_room(self, incoming: int) -> bool:
        """Apply the full policy; False when the payloads must be refused."""
        limit = self.config.queue.max_bytes
        over = self.queue.bytes + incoming - limit
        if over <= 0:
            return True
        if self.config.queue.when_full == "stop_accepting" or incoming > limit:
            if self._log_budget.take():
                log.warning("queue full (%d of %d bytes): refusing new messages", self.queue.bytes, limit)
            return False
        dropped = self.queue.drop_oldest(over)
        self.metrics.dropped.labels("queue_full_drop_oldest").inc(len(dropped))
        for seq in dropped:
            if self._in_flight.pop(seq, None) is not None:
                self._dropped.add(seq)
                self._purge = True  # take them back from librdkafka too: dropped means not sent
        if self._ready_valid and self._ready and dropped:
            last = dropped[-1]
            while self._ready and self._ready[0].seq <= last:
                self._ready.popleft()
        self._cursor = max(self._cursor, dropped[-1] if dropped else 0)
        log.warning("queue full: dropped the %d oldest messages", len(dropped))
        return True

    def _send(self) -> None:
        if self._failed_min is not None or self._fatal is not None or time.monotonic() < self._resume_at:
            return
        room = self.config.kafka.max_in_flight - len(self._in_flight)
        if room <= 0:
            return
        if self._ready_valid:
            batch = [self._ready.popleft() for _ in range(min(room, len(self._ready)))]
        else:
            batch = self.queue.read_after(self._cursor, min(room, 5000))
            if len(batch) < min(room, 5000):
                self._ready_valid = True  # caught up with the file: new entries can go straight out
                self._ready.clear()
        produce = self._producer.produce  # type: ignore[union-attr]
        for i, entry in enumerate(batch):
            try:
                produce(
                    entry.topic,
                    entry.value,
                    entry.key,
                    on_delivery=partial(self._delivered, entry.seq, entry.enqueued_at),
                )
            except BufferError:
                # librdkafka's own queue is full: give the rest back and try again next step
                if self._ready_valid:
                    self._ready.extendleft(reversed(batch[i:]))
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() in _PERMANENT:
                    self._refuse(entry.seq, error, entry.value)
                    self._cursor = entry.seq
                    continue
                log.warning("producer refused message %d (%s): resending later", entry.seq, error.str())
                self._failed_min = entry.seq if self._failed_min is None else min(self._failed_min, entry.seq)
                self._broker_down()
                break
            self._in_flight[entry.seq] = entry.enqueued_at
            self._cursor = entry.seq
        self.metrics.in_flight.set(len(self._in_flight))

    def _delivered(self, seq: int, received_at: float, err: KafkaError | None, msg: Any) -> None:
        if seq in self._dropped:
            self._dropped.discard(seq)
            return
        self._in_flight.pop(seq, None)
        if err is None:
            self._acked.append(seq)
            now = time.time()
            self.metrics.latency.observe(now - received_at)
            for observer in self.delivery_observers:
                observer(received_at, now)
            if seq <= self._replay_until:
                self.metrics.replayed.inc()
            return
        if err.code() in _PERMANENT:
            self._refuse(seq, err, msg.value())
            return
        if err.code() != KafkaError._PURGE_QUEUE:  # our own purge: resent after the rewind
            self.metrics.delivery_errors.inc()
            self._broker_down()
        if self._failed_min is None:
            if err.code() != KafkaError._PURGE_QUEUE and self._log_budget.take():
                log.warning("delivery failed (%s): holding new sends until in-flight messages settle", err.str())
            self._purge = True  # see _settle: nothing librdkafka still holds may overtake this one
        self._failed_min = seq if self._failed_min is None else min(self._failed_min, seq)

    def _refuse(self, seq: int, err: KafkaError, value: bytes | None) -> None:
        """Sending again cannot help (e.g. larger than the broker takes): out of the queue, into rejects."""
        log.error("Kafka refused queue entry %d for good (%s): moved to the rejects table", seq, err.str())
        self._refused.append(seq)
        with self._lock:
            self._rejects.append(("kafka", None, "broker_refused", err.str(), value))
        self.metrics.dropped.labels("broker_refused").inc()

    def _broker_down(self) -> None:
        if not self._down:
            self._down = True
            self.metrics.broker_up.set(0)
        # everything queued now waited for the broker: its delivery counts as a replay
        self._replay_until = max(self._replay_until, self._cursor, self.queue.max_seq())

    def _settle(self) -> None:
        if self._purge:
            self._purge = False
            self._producer.purge(in_queue=True, in_flight=False)  # type: ignore[union-attr]
        if self._refused:
            refused, self._refused = self._refused, []
            self.queue.delete(refused)
        if self._acked:
            acked, self._acked = self._acked, []
            self.queue.delete(acked)
            self.metrics.sent.inc(len(acked))
            if self._down and self._failed_min is None and self._fatal is None:
                self._down = False
                self.metrics.broker_up.set(1)
                log.info("Kafka deliveries succeed again; %d messages queued", self.queue.count)
        if self._fatal is not None and self._in_flight:
            self._producer.purge()  # type: ignore[union-attr]
            self._producer.poll(0.1)  # type: ignore[union-attr]
        if (self._failed_min is not None or self._fatal is not None) and not self._in_flight:
            self._rewind()

    def _rewind(self) -> None:
        restart = self._failed_min if self._failed_min is not None else self._cursor + 1
        if self._fatal is not None:
            log.warning("rebuilding the Kafka producer after: %s", self._fatal)
            self.metrics.producer_restarts.inc()
            self._producer = self._new_producer()
            self._fatal = None
        self._cursor = restart - 1
        self._failed_min = None
        self._ready_valid = False
        self._ready.clear()
        self._resume_at = time.monotonic() + 0.5
        log.info("resending from queue entry %d (%d messages queued)", restart, self.queue.count)

    def _housekeeping(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_gauges < 0.1:
            return
        self._last_gauges = now
        m = self.metrics
        m.depth.set(self.queue.count)
        m.bytes.set(self.queue.bytes)
        m.in_flight.set(len(self._in_flight))
        oldest = self.queue.oldest_enqueued_at() if self.queue.count else None
        m.oldest_age.set(max(0.0, time.time() - oldest) if oldest else 0.0)
        switch = self.backpressure.update(self.queue.count, now)
        if switch is not None:
            m.backpressure.set(1 if switch else 0)
            m.transitions.labels("slow" if switch else "normal").inc()
            log.warning(
                "backpressure %s: queue depth %d (high %d, low %d)",
                "on, sources slow down" if switch else "off, sources back to normal",
                self.queue.count,
                self.backpressure.high,
                self.backpressure.low,
            )
            for listener in self.on_backpressure:
                try:
                    listener(switch)
                except Exception:
                    log.exception("a source failed to change its rate")


def _take_payloads(units: list[_Unit], limit: int) -> tuple[list[_Unit], list[_Unit]]:
    """Whole units, in order, until about `limit` payloads (at least one unit); and the rest."""
    taken = 0
    for i, unit in enumerate(units):
        taken += len(unit.payloads)
        if taken >= limit:
            return units[: i + 1], units[i + 1 :]
    return units, []


def _payload_bytes(payload: Any) -> bytes | None:
    try:
        return orjson.dumps(payload)
    except (TypeError, ValueError):
        return repr(payload).encode()


class _LogBudget:
    """At most `per_s` warnings a second, so a flood of bad input cannot flood the log."""

    def __init__(self, per_s: int = 20) -> None:
        self.per_s = per_s
        self.window = 0.0
        self.used = 0
        self.suppressed = 0

    def take(self) -> bool:
        now = time.monotonic()
        if now - self.window >= 1.0:
            if self.suppressed:
                log.warning("%d more warnings suppressed in the last second", self.suppressed)
            self.window, self.used, self.suppressed = now, 0, 0
        self.used += 1
        if self.used > self.per_s:
            self.suppressed += 1
            return False
        return True
