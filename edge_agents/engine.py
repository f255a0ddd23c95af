"""The agent's engine: intake → contract check → durable queue → Kafka, and backpressure.

One thread owns the queue and the producer, so ordering needs no locks: sources (any thread or
event loop) hand payloads to `submit`, the engine thread takes everything waiting, checks it in one
contract pass per domain, writes it to the queue in one transaction, then hands queue entries to
the producer strictly in sequence order and deletes each one when the broker acknowledges it.

Delivery failures never reorder a key: on the first failure the engine stops handing out entries
and purges what librdkafka has not sent yet, waits until every entry in flight is settled, then
rewinds to the oldest entry not acknowledged and sends again from there. Messages the idempotent
producer already had on the wire keep their order (the broker checks sequence numbers per
partition); what comes again after a rewind may be a duplicate, which the platform removes by
`event_id`.

Some failures a producer never recovers from by itself, and librdkafka does not always say so: a
broker replaced by a fresh one does not know the producer's id, and librdkafka answers its
UnknownProducerId by bumping the epoch and retrying for ever, with no error callback and no delivery
report (measured: librdkafka 2.16 against a restarted Tansu). So the engine rebuilds the producer on
any of three signs: an error code that means the broker refuses the producer's idempotence state
(error_cb, a delivery report, `produce`, or a fatal error, which confluent-kafka raises from `poll`
rather than handing it to error_cb: a replaced broker causes one when requests were in flight as it
went away), the epoch bumped over and over with nothing acknowledged
(from librdkafka's statistics), or a stall (messages in flight, a broker connected, no
acknowledgement for `kafka.stall_timeout_s`). A rebuild purges everything the old producer holds,
destroys it, makes a new one (which gets a new producer id) and rewinds as above. Rebuilds with no
acknowledgement in between back off (`kafka.rebuild_backoff_s` doubling up to
`kafka.rebuild_backoff_max_s`), and no stall is declared while no broker is connected, so a broker
that is simply away causes no rebuilds at all.
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
from edge_agents import telemetry
from edge_agents.backpressure import Backpressure
from edge_agents.canonical import Canonicalizer
from edge_agents.config import AgentConfig
from edge_agents.metrics import AgentMetrics
from edge_agents.store import DiskQueue, Entry, entry_size

log = logging.getLogger("edge_agents.engine")

# errors that sending again cannot fix: the entry leaves the queue for the rejects table
_PERMANENT = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG, KafkaError.INVALID_RECORD}
# errors that mean the broker refuses this producer's idempotence state (a fresh broker that never
# heard of its id, a fenced or stale epoch, a sequence gap) or librdkafka gave up on it: only a new
# producer, with a new producer id, gets out of them
_REBUILD = {
    KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.INVALID_PRODUCER_ID_MAPPING,
    KafkaError.PRODUCER_FENCED,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError._FENCED,
    KafkaError._FATAL,
    KafkaError._INCONSISTENT,
}
_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}  # our own purges: resent after the rewind
# librdkafka answers UnknownProducerId by bumping the producer epoch and retrying (about 30 bumps a
# second against a fresh Tansu). A bump or two is ordinary recovery; this many with nothing
# acknowledged in between is that endless loop.
_EPOCH_BUMPS = 5
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
    traceparent: str | None = None  # the sender's trace context, if it sent one (HTTP `traceparent`)


@dataclass
class _Closing:
    """A replaced producer being destroyed (`Engine._retire`)."""

    began: float
    generation: int
    done: threading.Event = field(default_factory=threading.Event)
    reported: bool = False

    def destroy(self, box: list) -> None:
        box.clear()  # the producer's last reference: confluent-kafka destroys it here, the GIL released
        self.done.set()


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
        # producer health (engine thread only: librdkafka's callbacks run inside poll)
        self._rebuild_reason: str | None = None  # set: the producer must be replaced; sends are held
        self._rebuild_asked_at = 0.0
        self._generation = 0  # numbers the producers; callbacks of a replaced one are ignored
        self._progress_at = time.monotonic()  # the stall clock: last ack, first send, rebuild, broker back
        self._connected = True  # a broker is up, per librdkafka's statistics (unknown counts as up)
        self._epoch_base: tuple[int, int] | None = None  # (producer id, epoch) when last acknowledged
        self._acked_since_stats = False
        self._backoff = config.kafka.rebuild_backoff_s
        self._next_rebuild_at = 0.0
        self._closing: list[_Closing] = []  # replaced producers being destroyed on threads of their own
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
        traceparent: str | None = None,
    ) -> None:
        """Hand payloads in. `done` is called (on the engine thread) once they are durably queued
        or refused; `atomic` takes all of them or none. `traceparent`: the sender's W3C trace
        context, which the hand-over's span continues (tracing on)."""
        self.metrics.received.labels(source).inc(len(payloads))
        unit = _Unit(source, domain, payloads, atomic, done, received_at or time.time(), traceparent)
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
        self._generation += 1
        config = self.config.kafka.producer_config()
        config["error_cb"] = partial(self._on_error, self._generation)
        if config.get("statistics.interval.ms"):
            config["stats_cb"] = partial(self._on_stats, self._generation)
        self._progress_at = time.monotonic()
        self._connected = True
        self._epoch_base = None
        return Producer(config)

    def _on_error(self, generation: int, err: KafkaError) -> None:
        if generation != self._generation:
            return  # a replaced producer's last words
        if err.fatal():  # confluent-kafka raises these from poll instead (see _poll); kept for safety
            log.error("Kafka producer fatal error: %s", err)
            self._ask_rebuild(f"fatal producer error {err.name()}: {err.str()}")
        elif err.code() in _REBUILD:
            self._ask_rebuild(f"the broker answered {err.name()}: {err.str()}")
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if not self._down:
                log.warning("Kafka unreachable (%s): messages wait in the disk queue", err.str())
            self._broker_down()

    def _on_stats(self, generation: int, text: str) -> None:
        """librdkafka's statistics: is a broker connected, and is the epoch bumped with nothing acked?"""
        if generation != self._generation:
            return
        try:
            stats = orjson.loads(text)
        except orjson.JSONDecodeError:
            return
        connected = any(b.get("state") == "UP" for b in (stats.get("brokers") or {}).values())
        if connected and not self._connected:
            self._progress_at = max(self._progress_at, time.monotonic())  # a stall counts from the broker's return
        self._connected = connected
        acked, self._acked_since_stats = self._acked_since_stats, False
        eos = stats.get("eos") or {}
        pid, epoch = eos.get("producer_id", -1), eos.get("producer_epoch", -1)
        if pid < 0 or epoch < 0:
            return  # not idempotent, or no producer id yet
        base = self._epoch_base
        if base is None or base[0] != pid or acked or not self._in_flight or epoch < base[1]:
            self._epoch_base = (pid, epoch)
        elif epoch - base[1] >= _EPOCH_BUMPS:
            self._ask_rebuild(
                f"the broker does not accept the producer id: its epoch was bumped {epoch - base[1]} times "
                f"with nothing acknowledged (unknown producer id, e.g. a replaced broker)"
            )

    def _ask_rebuild(self, reason: str) -> None:
        """Hold new sends; `_settle` purges what the producer holds, then `_rewind` replaces it."""
        if self._rebuild_reason is None:
            self._rebuild_reason = reason
            self._rebuild_asked_at = time.monotonic()

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
        if self._in_flight:
            self._poll(0.001)
        else:
            self._poll(0)
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
            self._poll(0.01)
            self._settle()
        self._producer.purge(in_queue=True, in_flight=False)  # type: ignore[union-attr]
        self._poll(min(2.0, max(0.0, deadline - time.monotonic())), flush=True)
        self._settle()
        self._housekeeping(force=True)
        log.info(
            "edge engine stopped: %d messages stay in the queue (%s) for the next start",
            self.queue.count,
            self.queue.path,
        )

    def _poll(self, timeout: float, flush: bool = False) -> None:
        """Serve the producer's callbacks. confluent-kafka does not hand a fatal error to error_cb:
        poll and flush raise it (measured: UNKNOWN_PRODUCER_ID from a replaced broker while requests
        were in flight, which librdkafka cannot retry without risking duplicates). That is a reason
        to rebuild the producer, not to stop the engine. No local reference to the producer is kept
        here or in the callers: a rebuild must be able to destroy it."""
        try:
            if flush:
                self._producer.flush(timeout)  # type: ignore[union-attr]
            else:
                self._producer.poll(timeout)  # type: ignore[union-attr]
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not isinstance(error, KafkaError) or not error.fatal():
                raise  # one of the engine's own callbacks failed: a bug, not the broker
            log.error("Kafka producer fatal error: %s", error.str())
            self._ask_rebuild(f"fatal producer error {error.name()}: {error.str()}")

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
        rows: list[tuple[str, bytes, bytes, float, str | None]] = []
        traced = telemetry.tracing_on()
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
            context = None
            if traced and take:
                context = telemetry.receive_span(
                    unit.source, unit.domain, len(take), unit.received_at, time.time_ns(), unit.traceparent
                )
            rows.extend((o.topic, o.key, o.value, unit.received_at, context) for o in take)
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
        now = time.monotonic()
        if self._failed_min is not None or self._rebuild_reason is not None or now < self._resume_at:
            return
        room = self.config.kafka.max_in_flight - len(self._in_flight)
        if room <= 0:
            return
        if not self._in_flight:
            self._progress_at = now  # nothing was waiting: the stall clock starts with this send
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
                if entry.traceparent is None:
                    produce(
                        entry.topic,
                        entry.value,
                        entry.key,
                        on_delivery=partial(self._delivered, entry.seq, entry.enqueued_at),
                    )
                else:  # the reading's trace continues in the drain (analytics_platform/ingest/drain.py)
                    produce(
                        entry.topic,
                        entry.value,
                        entry.key,
                        headers=[(telemetry.TRACEPARENT, entry.traceparent)],
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
                if error.code() in _REBUILD or error.fatal():
                    self._ask_rebuild(f"the producer refused a message with {error.name()}: {error.str()}")
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
            self._acked_since_stats = True
            now = time.time()
            self.metrics.latency.observe(now - received_at)
            for observer in self.delivery_observers:
                observer(received_at, now)
            if seq <= self._replay_until:
                self.metrics.replayed.inc()
            return
        code = err.code()
        if code in _PERMANENT:
            self._refuse(seq, err, msg.value())
            return
        if code not in _PURGED:
            self.metrics.delivery_errors.inc()
            self._broker_down()
            if code in _REBUILD or err.fatal():
                self._ask_rebuild(f"a delivery failed with {err.name()}: {err.str()}")
        if self._failed_min is None:
            if code not in _PURGED and self._log_budget.take():
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
        now = time.monotonic()
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
            self._progress_at = now
            self._backoff = self.config.kafka.rebuild_backoff_s  # the producer works: no backoff owed
            if self._down and self._failed_min is None and self._rebuild_reason is None:
                self._down = False
                self.metrics.broker_up.set(1)
                log.info("Kafka deliveries succeed again; %d messages queued", self.queue.count)
        self._watch(now)
        if self._rebuild_reason is not None and self._in_flight:
            self._producer.purge()  # type: ignore[union-attr]  # in the queue and in flight: all reported back
            self._poll(0.1)
            if self._in_flight and now - self._rebuild_asked_at > self.config.kafka.stall_timeout_s:
                # never reported back: the producer is destroyed unpolled, so nothing of it can come later
                oldest = min(self._in_flight)
                self._failed_min = oldest if self._failed_min is None else min(self._failed_min, oldest)
                log.warning("%d purged messages never came back from the producer", len(self._in_flight))
                self._in_flight.clear()
        settled = not self._in_flight and (self._failed_min is not None or self._rebuild_reason is not None)
        if settled and (self._rebuild_reason is None or now >= self._next_rebuild_at):  # a rebuild waits its backoff
            self._rewind()

    def _watch(self, now: float) -> None:
        """The stall watchdog: messages in flight, a broker connected, and no ack for stall_timeout_s."""
        if self._rebuild_reason is not None or not self._in_flight or not self._connected:
            return
        waited = now - self._progress_at
        if waited >= self.config.kafka.stall_timeout_s:
            self._ask_rebuild(
                f"no acknowledgement for {waited:.1f} s with {len(self._in_flight)} messages in flight "
                "and the broker connected"
            )

    def _rebuild(self, restart: int) -> None:
        """Destroy the producer (unpolled: nothing of it may come after this) and make a new one."""
        self._retire()
        self._dropped.clear()  # their reports died with the producer
        self._purge = False  # the new producer holds nothing yet
        self._producer = self._new_producer()
        now = time.monotonic()  # the backoff counts from the new producer's existence
        self.metrics.producer_restarts.inc()
        log.warning(
            "rebuilding the Kafka producer (%.1f s after the cause, next rebuild no sooner than %.1f s unless "
            "a message is acknowledged); resending from queue entry %d; cause: %s",
            now - self._rebuild_asked_at,
            self._backoff,
            restart,
            self._rebuild_reason,
        )
        self._rebuild_reason = None
        self._next_rebuild_at = now + self._backoff
        self._backoff = min(self._backoff * 2, self.config.kafka.rebuild_backoff_max_s)

    def _retire(self) -> None:
        """Destroy the producer on a thread of its own. librdkafka's destroy joins its threads, and
        against a replaced broker one was seen never to end (rd_kafka_destroy_app waiting for a broker
        thread that waits on its queue, minutes on): done on the engine thread, that stopped every
        delivery for good while sources kept filling the queue. The new producer does not need the old
        one gone; a destroy that does not finish costs its threads and memory, and is reported."""
        box: list[Producer] = [self._producer]  # type: ignore[list-item]
        self._producer = None  # the box now holds the last reference: its thread destroys the handle
        closing = _Closing(time.monotonic(), self._generation)
        self._closing.append(closing)
        threading.Thread(target=closing.destroy, args=(box,), name="kafka-producer-destroy", daemon=True).start()

    def _watch_closing(self, now: float) -> None:
        """Say once of each old producer whose destroy outlasts the stall timeout; forget finished ones."""
        for closing in self._closing:
            late = now - closing.began > self.config.kafka.stall_timeout_s
            if late and not closing.done.is_set() and not closing.reported:
                closing.reported = True
                log.warning(
                    "the replaced Kafka producer %d has not finished closing after %.0f s (librdkafka's destroy "
                    "is stuck); the new producer delivers meanwhile, the old one's threads stay until the agent exits",
                    closing.generation,
                    now - closing.began,
                )
        self._closing = [c for c in self._closing if not c.done.is_set()]
        self.metrics.closing.set(len(self._closing))

    def _rewind(self) -> None:
        restart = self._failed_min if self._failed_min is not None else self._cursor + 1
        if self._rebuild_reason is not None:
            self._rebuild(restart)
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
        self._watch_closing(now)
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
