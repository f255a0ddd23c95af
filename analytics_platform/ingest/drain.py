"""The Kafka drain: one bounded pass from the stored offsets to (about) the end of the topics, or,
following (the sensor's way), on past the end until the budget is spent.

Invariants (docs/architecture.md, "Ingest"; docs/data-guarantees.md):
1. Offsets live with the data: the landing rows, raw rows, rejects and the next offsets of one
   micro-batch are committed in one database transaction. A crash anywhere re-reads from the last
   committed position; dedup by key makes the replay a no-op.
2. Assign, don't subscribe: the consumer is assigned the topic partitions at the stored offsets
   (no group join per tick) and always closed.
3. Land, then derive: every message lands verbatim; the same batch is parsed by the domain's
   contract into raw rows and rejects.
4. One reader per partition: a drain may be one of N shards (shard i owns the partitions p with
   p % N == i), and before reading a partition it takes a PostgreSQL advisory lock on
   (consumer, topic, partition), then loads the partition's stored offset. While shards are
   re-configured (2 -> 3 in a rolling update) an old and a new shard may both claim a partition;
   the lock lets only one read it at a time and the other skips it until the next tick, and since
   the offset is read under the lock, the next reader starts exactly where the last one committed.

Parsing, encoding and accounting batch i+1 overlaps the database write of batch i (one writer thread
that only talks to the database, at most one batch in flight, batches committed strictly in order),
so the client core and the database core both work.

Freshness: a micro-batch is committed when it holds `batch_size` messages or `linger_s` after the
consume call that brought its first message began, whichever comes first. A following pass
(`run(..., follow=True)`) keeps consuming after it caught up, so a reading waits at most about
`linger_s` plus one write for its transaction instead of the gap to the next sensor tick; the pass
still ends at its budget (the sensor's time limit) and reports what it touched then. `on_commit`
is the place for work that must see each committed batch as it lands (streaming rules): it runs
after the transaction commits, in batch order.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

import polars as pl
import psycopg
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from opentelemetry.trace import SpanKind

from analytics_platform import observability
from analytics_platform.contracts.base import FUTURE_TIME, MESSAGE_SCHEMA, TOO_OLD, ContractConfig, ParsedBatch
from analytics_platform.contracts.registry import DomainBinding
from analytics_platform.data_quality.raw_profile import PartitionQuality, profile, range_profile
from analytics_platform.ingest import catalog, store
from analytics_platform.ingest.group_mirror import MIRROR, GroupMirror

log = logging.getLogger(__name__)

# How long a pass keeps polling an empty fetch while the watermarks say data is there (a first
# fetch on a cold connection can take seconds); a Drain's `cold_fetch_s`. Only the consume calls'
# own time counts: a pass waiting for its previous commit is not hearing silence from the broker.
_COLD_FETCH_S = 5.0
# the consumer-group mirror's own request timeout (its child process; the pass does not wait for it)
MIRROR_TIMEOUT_S = 5.0
# the batch span contexts a report keeps per hour: what the spans of the assets computed from the hour
# link to (the newest ones; a sensor tick's pass may commit hundreds of batches)
TRACES_PER_HOUR = 16


def watermarks(consumer: Consumer, tp: TopicPartition, timeout_s: float) -> tuple[int, int] | None:
    """The partition's (low, high) watermarks, or None when the broker did not say in time
    (confluent-kafka returns None on a timeout and raises on an error). Never progress on their
    own: Tansu's high watermark is the start of the log's last batch + 1."""
    try:
        return consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
    except KafkaException:
        return None


@dataclass
class DrainReport:
    """What one drain pass did; the sensor turns it into Dagster events and metadata."""

    domain: str
    messages: int = 0
    rows: int = 0
    rejects: int = 0
    duplicates_in_batch: int = 0
    batches: int = 0
    unpartitioned_rejects: int = 0
    max_ingest_lag_s: float = 0.0
    elapsed_s: float = 0.0
    partitions: dict[datetime, PartitionQuality] = field(default_factory=lambda: defaultdict(PartitionQuality))
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    missing_topics: list[str] = field(default_factory=list)
    offset_resets: list[store.OffsetReset] = field(default_factory=list)
    # partitions this drain owned and read, and those it owned but another drain held (skipped)
    assigned: list[tuple[str, int]] = field(default_factory=list)
    busy: list[tuple[str, int]] = field(default_factory=list)
    # with tracing on: hour -> the `traceparent` of the batch spans that wrote rows into it
    traces: dict[datetime, list[str]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s else 0.0

    def merge(self, other: DrainReport) -> None:
        """Add another report's counts (a micro-batch's, or a pass's) to these; `other` is newer."""
        self.messages += other.messages
        self.rows += other.rows
        self.rejects += other.rejects
        self.duplicates_in_batch += other.duplicates_in_batch
        self.batches += other.batches
        self.unpartitioned_rejects += other.unpartitioned_rejects
        self.max_ingest_lag_s = max(self.max_ingest_lag_s, other.max_ingest_lag_s)
        self.elapsed_s += other.elapsed_s
        for start, quality in other.partitions.items():
            self.partitions[start].merge(quality)
        self.positions.update(other.positions)
        self.offset_resets += other.offset_resets
        for start, traces in other.traces.items():
            kept = self.traces.setdefault(start, [])
            kept.extend(t for t in traces if t not in kept)
            del kept[:-TRACES_PER_HOUR]

    def to_json(self) -> dict:
        """What the drain service stores per micro-batch in analytics.drain_reports, in the batch's
        own transaction (sql/15): the counts the drain sensor turns into Dagster events."""
        return {
            "domain": self.domain,
            "messages": self.messages,
            "rows": self.rows,
            "rejects": self.rejects,
            "duplicates_in_batch": self.duplicates_in_batch,
            "batches": self.batches,
            "unpartitioned_rejects": self.unpartitioned_rejects,
            "max_ingest_lag_s": self.max_ingest_lag_s,
            "elapsed_s": self.elapsed_s,
            "partitions": {start.isoformat(): q.to_json() for start, q in self.partitions.items()},
            "positions": [[topic, partition, offset] for (topic, partition), offset in self.positions.items()],
            "offset_resets": [asdict(r) for r in self.offset_resets],
            "traces": {start.isoformat(): traces for start, traces in self.traces.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> DrainReport:
        report = cls(
            domain=data["domain"],
            **{k: data.get(k, 0) for k in _COUNTS},
            positions={(t, p): o for t, p, o in data.get("positions", [])},
            offset_resets=[store.OffsetReset(**r) for r in data.get("offset_resets", [])],
        )
        for start, quality in data.get("partitions", {}).items():
            report.partitions[datetime.fromisoformat(start)] = PartitionQuality.from_json(quality)
        report.traces = {datetime.fromisoformat(start): list(t) for start, t in data.get("traces", {}).items()}
        return report


_COUNTS = (
    "messages",
    "rows",
    "rejects",
    "duplicates_in_batch",
    "batches",
    "unpartitioned_rejects",
    "max_ingest_lag_s",
    "elapsed_s",
)


@dataclass
class _Batch:
    """A parsed micro-batch, encoded for COPY and accounted before the writer thread takes it, so
    that thread only talks to the database while the next batch is consumed and prepared."""

    parsed: ParsedBatch
    positions: dict[tuple[str, int], store.Position]
    landing: store.CopyRows
    raw: store.CopyRows
    summary: DrainReport
    oldest_kafka_ts: datetime | None
    # with tracing on: the messages' `traceparent` headers, and when the batch's span begins (the
    # batch closed and its parsing starts, in ns since the epoch)
    traceparents: list[bytes | None] = field(default_factory=list)
    began_ns: int | None = None


class DrainError(RuntimeError):
    """The drain could not make progress (broker or database); the message says which."""


def owns(partition: int, shard: int, shards: int) -> bool:
    """Whether drain shard `shard` of `shards` reads Kafka partition `partition`.

    A rule of the partition number alone, so that every partition has exactly one owner for any
    shard count and a re-sharded drain resumes each partition from its stored offset.
    """
    return partition % shards == shard


def shard_label(shard: int, shards: int) -> str:
    return f"shard {shard} of {shards}" if shards > 1 else "unsharded"


# pg_try_advisory_lock takes one bigint; hashtextextended gives a stable 64-bit hash of the text
_LOCK_PARTITIONS = """
SELECT t.topic, t.p, pg_try_advisory_lock(hashtextextended('analytics-drain/' || %s || '/' || t.topic || '/' || t.p, 0))
FROM unnest(%s::text[], %s::int[]) AS t(topic, p)
"""


@dataclass
class _Partition:
    """One claimed partition during a pass: where it started and whether its log is proven yet."""

    topic: str
    partition: int
    stored: store.Checkpoint | None
    topic_id: str | None  # as the broker reports it now (None: the broker has no topic ids)
    start: int  # the offset assigned (or OFFSET_BEGINNING / OFFSET_END)
    low: int | None = None
    high: int | None = None
    # the fingerprint to find at `verify_offset` (the last message consumed) before going on
    verify_offset: int | None = None
    verify_digest: bytes | None = None
    seen: bool = False  # a message of it arrived in this pass
    paused: bool = False  # its log changed under it: read again from the start in the next pass


class Drain:
    """Moves messages of one domain from Kafka into landing + raw + rejects, exactly once."""

    def __init__(
        self,
        binding: DomainBinding,
        config: ContractConfig,
        *,
        database_url: str,
        kafka_config: dict,
        consumer_name: str,
        batch_size: int = 20000,
        poll_timeout_s: float = 0.5,
        start: str = "earliest",
        commit_to_kafka: bool = True,
        profile_ranges: bool = True,
        catalog_from_db: bool = True,
        missing_unit_is_canonical: bool = True,
        shard: int = 0,
        shards: int = 1,
        mirror: GroupMirror | None = None,
        linger_s: float = 0.5,
        on_commit: Callable[[ParsedBatch], None] | None = None,
        report_batches: bool = False,
        cold_fetch_s: float = _COLD_FETCH_S,
    ) -> None:
        if not 0 <= shard < shards:
            raise ValueError(f"drain shard {shard} does not exist among {shards} shard(s) (0..{shards - 1})")
        self.binding = binding
        self.contract = binding.contract
        self.config = config
        self.database_url = database_url
        self.kafka_config = kafka_config
        self.consumer_name = consumer_name
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        # a test that counts one pass's messages sets its budget here: the pass then ends caught up with the
        # watermarks, not after a fixed silence a loaded machine's first fetch can outlast
        self.cold_fetch_s = cold_fetch_s
        self.start = start
        self.commit_to_kafka = commit_to_kafka
        # the consumer-group mirror runs in a child process (group_mirror.py: a librdkafka abort)
        self.mirror = mirror if mirror is not None else MIRROR
        # the live `values_in_range` / `units_match` counts of domains with a range column, against
        # the catalogue's limits as the database holds them at the start of each pass
        self.profile_ranges = profile_ranges and binding.contract.range_column is not None
        self.metric_limits: pl.DataFrame | None = None
        # judge with the metrics catalogue and policies of the database (tenant data, edited at any
        # time), re-read at the start of every pass; False keeps `config.catalog` as given
        self.catalog_from_db = catalog_from_db
        self.missing_unit_is_canonical = missing_unit_is_canonical
        self.shard = shard
        self.shards = shards
        # called inside each batch's transaction after its rows and before its offsets are
        # written: the fault-injection point of the crash tests
        self.before_checkpoint: Callable[[], None] | None = None
        # the oldest a gathered batch gets before it is committed (seconds after the consume call
        # that brought its first message began)
        self.linger_s = linger_s
        # called with each batch's parsed rows and rejects once its transaction has committed, on the
        # writer thread, strictly in batch order (the hook for per-batch streaming work); an
        # exception stops the pass like a failed write, after the batch is safely stored
        self.on_commit = on_commit
        # write each batch's report (hours touched, quality counts) into analytics.drain_reports in
        # the batch's transaction: the drain service's way of telling the drain sensor (sql/15)
        self.report_batches = report_batches
        self._stop: threading.Event | None = None
        self._deadline = 0.0
        self._pending: Future | None = None  # the batch the writer thread is committing

    # ----- public -------------------------------------------------------------------------
    def run(
        self,
        budget_s: float,
        max_messages: int | None = None,
        *,
        follow: bool = False,
        stop: threading.Event | None = None,
    ) -> DrainReport:
        """Drain until caught up, `budget_s` elapsed or `max_messages` consumed; with `follow`, go
        on consuming after catching up until `budget_s` (or `max_messages`), committing a batch at
        least every `linger_s`. Setting `stop` ends the pass early, after committing what it holds.

        Every call to the broker or the database is bounded by what is left of the budget, so a
        broker that dies or a database that hangs mid-pass costs at most a few seconds more.
        """
        report = DrainReport(domain=self.contract.domain)
        started = time.monotonic()
        self._deadline = started + budget_s
        self._stop = stop
        conn = _connect(self.database_url, self._left(10))
        consumer: Consumer | None = None
        admin: AdminClient | None = None
        try:
            consumer = self._consumer()
            admin = AdminClient({**self.kafka_config, "log_level": 3})
            owned = self._owned_partitions(consumer, report)
            claimed = self._claim(conn, owned, report)
            if not claimed:
                return report
            self._refresh_catalog(conn)
            # offsets are read only once the partitions are ours: whoever read them before has
            # committed (or rolled back) and let go
            stored = store.load_checkpoints(conn, self.consumer_name, self.binding.topics)
            topic_ids = self._topic_ids(admin, sorted({t for t, _ in claimed}))
            plan = self._plan(conn, consumer, claimed, stored, topic_ids, report)
            if not plan:
                return report
            consumer.assign([TopicPartition(p.topic, p.partition, p.start) for p in plan.values()])
            floors = {tp: p.high for tp, p in plan.items() if p.high is not None and p.start != OFFSET_END}
            self._loop(consumer, conn, plan, floors, report, max_messages, follow)
            self._unverified(conn, plan, report)
            if self.commit_to_kafka and (report.positions or self.mirror.pending(self.consumer_name)):
                self.mirror.submit(self.kafka_config, self.consumer_name, report.positions, MIRROR_TIMEOUT_S)
        except psycopg.OperationalError as exc:
            # the database went away (restarted, failed over, timed a statement out) under the pass: the batch
            # in flight rolled back with its offsets, so this is an outage to report in one line and retry,
            # not a bug's traceback
            raise DrainError(
                f"database unavailable mid-pass ({_first_line(exc)}); the next pass resumes from the stored offsets"
            ) from None
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            # DATABASE_URL reaches a standby (a failover in progress): nothing can be written until it is promoted
            raise DrainError(
                f"database is read-only ({_first_line(exc)}): a standby after a failover? "
                "the next pass resumes from the stored offsets"
            ) from None
        finally:
            if consumer is not None:
                consumer.close()
            conn.close()
            report.elapsed_s = time.monotonic() - started
        return report

    def _left(self, cap: float, floor: float = 0.5) -> float:
        """Seconds a call may wait: at most `cap`, never past the budget (but at least `floor`)."""
        return max(floor, min(cap, self._deadline - time.monotonic()))

    # ----- consuming ----------------------------------------------------------------------
    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self.kafka_config,
                "group.id": self.consumer_name,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # only a log that lost our position is read from a default: always from its start
                # (DRAIN_START=latest applies to partitions without a checkpoint, by assignment)
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 16 * 1024 * 1024,
                "queued.max.messages.kbytes": 256 * 1024,
                "socket.connection.setup.timeout.ms": 5000,
                "log_level": 3,
            }
        )

    def _refresh_catalog(self, conn: psycopg.Connection) -> None:
        if self.catalog_from_db:
            self.config = replace(self.config, catalog=catalog.read_catalog(conn))
        if self.profile_ranges:
            self.metric_limits = catalog.read_limits(conn)

    def _owned_partitions(self, consumer: Consumer, report: DrainReport) -> list[tuple[str, int]]:
        """The (topic, partition)s of this drain's shard, as the broker lists them now."""
        try:
            metadata = consumer.list_topics(timeout=self._left(10))
        except KafkaException as exc:
            raise DrainError(
                f"Kafka broker {self.kafka_config.get('bootstrap.servers')} is unreachable ({exc}); "
                "start it (make demo starts one) or set KAFKA_BROKERS"
            ) from None
        owned = []
        for topic in self.binding.topics:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None or not info.partitions:
                report.missing_topics.append(topic)
                log.warning("topic %s does not exist yet; nothing to drain for it", topic)
                continue
            owned += [(topic, p) for p in sorted(info.partitions) if owns(p, self.shard, self.shards)]
        return owned

    def _claim(self, conn: psycopg.Connection, owned: list[tuple[str, int]], report: DrainReport) -> list:
        """Take the advisory lock of each owned partition; those another drain holds are skipped.

        Session locks on the drain's own connection: closing it (end of pass, crash, killed pod)
        lets go of all of them.
        """
        if not owned:
            return []
        rows = conn.execute(
            _LOCK_PARTITIONS, (self.consumer_name, [t for t, _ in owned], [p for _, p in owned])
        ).fetchall()
        for topic, partition, locked in rows:
            (report.assigned if locked else report.busy).append((topic, partition))
        if report.busy:
            log.info(
                "%s (%s): %d partition(s) held by another drain, skipped this pass: %s",
                self.contract.domain,
                shard_label(self.shard, self.shards),
                len(report.busy),
                ", ".join(f"{t}[{p}]" for t, p in report.busy),
            )
        return report.assigned

    def _topic_ids(self, admin: AdminClient, topics: list[str]) -> dict[str, str]:
        """The broker's topic id of each topic (KIP-516); empty where the broker reports none."""
        found: dict[str, str] = {}
        try:
            futures = admin.describe_topics(TopicCollection(topics), request_timeout=self._left(5))
        except (KafkaException, ValueError, TypeError):
            return found
        for topic, future in futures.items():
            try:
                topic_id = future.result(timeout=self._left(5)).topic_id
            except Exception:  # an old broker, a timeout: the fingerprint still proves the log
                continue
            text = str(topic_id) if topic_id is not None else ""
            if text and text != "AAAAAAAAAAAAAAAAAAAAAA":  # the all-zero id: the broker has none
                found[topic] = text
        return found

    def _plan(
        self,
        conn: psycopg.Connection,
        consumer: Consumer,
        claimed: list[tuple[str, int]],
        stored: dict[tuple[str, int], store.Checkpoint],
        topic_ids: dict[str, str],
        report: DrainReport,
    ) -> dict[tuple[str, int], _Partition]:
        """Where each partition starts, after proving (or disproving) that its stored offset belongs
        to the log the broker has now (docs/data-guarantees.md, section 4; sql/09)."""
        plan: dict[tuple[str, int], _Partition] = {}
        for topic, partition in claimed:
            checkpoint = stored.get((topic, partition))
            current_id = topic_ids.get(topic)
            part = _Partition(topic, partition, checkpoint, current_id, OFFSET_BEGINNING)
            marks = self._watermarks(consumer, TopicPartition(topic, partition))
            if marks is not None:  # unknown: the checks that need them wait a pass
                part.low, part.high = marks
            plan[(topic, partition)] = part
            if checkpoint is None:
                part.start = OFFSET_BEGINNING if self.start == "earliest" else OFFSET_END
                continue
            part.start = checkpoint.next_offset
            if checkpoint.topic_id and current_id and checkpoint.topic_id != current_id:
                self._reset(
                    conn,
                    report,
                    part,
                    "topic_id_changed",
                    f"the broker reports topic id {current_id}, the checkpoint was taken on {checkpoint.topic_id} "
                    "(broker replaced or topic re-created)",
                )
                continue
            if part.low is not None and part.low > checkpoint.next_offset:
                # retention (or a deleted range) removed messages nobody drained: they are gone
                # from Kafka; say how many, and go on from the log's start
                self._reset(
                    conn,
                    report,
                    part,
                    "log_start_after_offset",
                    f"the log starts at {part.low}, after the stored offset {checkpoint.next_offset}: "
                    f"{part.low - checkpoint.next_offset} message(s) expired unread",
                    resumed_at=part.low,
                    skipped=part.low - checkpoint.next_offset,
                )
                continue
            digest = checkpoint.last_digest
            if checkpoint.next_offset > 0 and digest is None:
                landed = store.landed_message(conn, topic, partition, checkpoint.next_offset - 1)
                if landed is not None:
                    digest = store.message_digest(landed[1], landed[2])
            if checkpoint.next_offset > 0 and digest is not None:
                # start one message early: the last one consumed must come back unchanged
                part.start = part.verify_offset = checkpoint.next_offset - 1
                part.verify_digest = digest
        return plan

    def _reset(
        self,
        conn: psycopg.Connection,
        report: DrainReport,
        part: _Partition,
        reason: str,
        detail: str,
        *,
        resumed_at: int = 0,
        skipped: int = 0,
    ) -> None:
        if self._pending is not None:
            self._pending.result()  # the connection is the writer's until its batch is committed
        stored = part.stored.next_offset if part.stored else 0
        reset = store.OffsetReset(
            part.topic,
            part.partition,
            reason,
            detail,
            stored,
            resumed_at,
            skipped,
            part.stored.topic_id if part.stored else None,
            part.topic_id,
        )
        store.record_reset(conn, self.consumer_name, reset)
        report.offset_resets.append(reset)
        log.warning("offset reset of %s (%s): %s", self.consumer_name, self.contract.domain, reset.describe())
        part.start = OFFSET_BEGINNING
        part.verify_offset = part.verify_digest = None
        part.stored = store.Checkpoint(resumed_at, part.topic_id, None, None, 0)

    def _watermarks(self, consumer: Consumer, tp: TopicPartition) -> tuple[int, int] | None:
        return watermarks(consumer, tp, self._left(5))

    def _loop(
        self,
        consumer: Consumer,
        conn: psycopg.Connection,
        plan: dict[tuple[str, int], _Partition],
        floors: dict[tuple[str, int], int],
        report: DrainReport,
        max_messages: int | None,
        follow: bool,
    ) -> None:
        expected = {tp: p.stored.next_offset for tp, p in plan.items() if p.stored is not None}

        def behind() -> bool:
            waiting = any(p.verify_offset is not None and not p.seen for p in plan.values())
            # a partition whose watermarks the broker did not give is not known to be caught up: polled
            # until a cold fetch's time brings nothing, not dropped at the first short fetch
            unknown = any(p.high is None and p.start != OFFSET_END and not p.paused for p in plan.values())
            return (
                waiting
                or unknown
                or any(expected.get(tp, 0) < end for tp, end in floors.items() if not plan[tp].paused)
            )

        held: list = []  # the admitted messages of the batch being gathered
        opened = 0.0  # when the consume call that brought its first message began
        # seconds the consume calls since the last message spent bringing nothing: only fetches count,
        # not the time the pass waited for its own previous commit (a slow commit is not a silent broker)
        silent_s = 0.0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"drain-{self.contract.domain}") as writer:

            def commit_held() -> None:
                nonlocal held
                batch = self._batch(held, expected, plan)
                held = []
                if batch is None:
                    return
                if self._pending is not None:
                    self._pending.result()
                self._pending = writer.submit(self._write, conn, batch, report)
                report.messages += batch.summary.messages

            try:
                while (now := time.monotonic()) < self._deadline and not (self._stop and self._stop.is_set()):
                    if self._pending is not None and self._pending.done():
                        self._pending.result()  # a failed write ends the pass now, not at its budget
                    full = self.batch_size
                    if max_messages is not None:
                        full = min(full, max_messages - report.messages)
                    want = full - len(held)
                    if want <= 0:
                        break
                    # a log replaced under a paused partition is read from its start by the next
                    # pass: stop following so that pass comes soon
                    following = follow and not any(p.paused for p in plan.values())
                    if held:
                        wait = opened + self.linger_s - now
                    else:
                        wait = min(self.poll_timeout_s, self.linger_s) if following else self.poll_timeout_s
                    with _collector_paused():
                        messages = consumer.consume(
                            num_messages=want, timeout=max(0.0, min(wait, self._deadline - now))
                        )
                    silent_s = 0.0 if messages else silent_s + time.monotonic() - now
                    kept = self._admit(consumer, conn, messages, plan, report)
                    if kept and not held:
                        opened = now
                    held += kept
                    if held and (len(held) >= full or time.monotonic() >= opened + self.linger_s):
                        commit_held()
                    if following:
                        continue
                    if (
                        len(messages) < want
                        and not behind()
                        and not self._fetched_further(consumer, plan, floors, expected)
                    ):
                        break  # caught up: the broker had less than a full batch for us
                    if not messages and silent_s > self.cold_fetch_s:
                        break  # the watermarks promised data that did not come: next tick
                if held:
                    commit_held()
            finally:
                pending, self._pending = self._pending, None
                if pending is not None:
                    pending.result()

    def _fetched_further(
        self,
        consumer: Consumer,
        plan: dict[tuple[str, int], _Partition],
        floors: dict[tuple[str, int], int],
        expected: dict[tuple[str, int], int],
    ) -> bool:
        """Whether the fetches so far told of messages past where the pass stands: the floors are raised
        to the high watermarks the broker's fetch responses gave (librdkafka keeps them; no broker call).

        A short consume call is "caught up" only against the right watermarks, and Tansu's ListOffsets
        answer is the start of the log's last record batch + 1 while its fetch responses carry the log's
        end. A short call is common once a batch's linger has run out (the next call then waits no
        time), so on a loaded machine a pass stopped inside a partition's last record batch and left
        the rest of it to the next tick."""
        further = False
        for tp, part in plan.items():
            if part.paused or part.start == OFFSET_END:
                continue
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            if high > floors.get(tp, -1):
                floors[tp] = high
                further = further or expected.get(tp, 0) < high
        return further

    def _admit(
        self,
        consumer: Consumer,
        conn: psycopg.Connection,
        messages: list,
        plan: dict[tuple[str, int], _Partition],
        report: DrainReport,
    ) -> list:
        """The messages to land: Kafka errors logged (fatal ones raise), and each partition's first
        message of the pass checked against its stored position (`_first_message_fits`)."""
        kept = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise DrainError(f"Kafka error while draining {self.contract.domain}: {error}")
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("Kafka error while draining %s: %s", self.contract.domain, error)
                continue
            tp = (message.topic(), message.partition())
            part = plan.get(tp)
            if part is None:
                continue
            if part.paused:
                continue
            if not part.seen:
                part.seen = True
                if not self._first_message_fits(consumer, conn, part, message, report):
                    continue
                if part.verify_offset is not None and message.offset() == part.verify_offset:
                    part.verify_offset = None
                    continue  # the last message consumed before: proven, and already landed
                part.verify_offset = None
            kept.append(message)
        return kept

    def _first_message_fits(
        self, consumer: Consumer, conn: psycopg.Connection, part: _Partition, message, report: DrainReport
    ) -> bool:
        """Whether a partition's first message of the pass continues its stored position.

        * the message at the stored position minus one is the one consumed there before: yes;
        * it is another message: the log was replaced; the reset is recorded (the checkpoint moves
          to the new log's start) and the partition is paused for the rest of the pass: False;
        * it comes from before the stored position: the broker answered "offset out of range" and
          the consumer went back to the log's start (auto.offset.reset=earliest), so the log now
          ends before our position; the reset is recorded and reading goes on from there: True.
        """
        offset = message.offset()
        stored = part.stored
        if stored is None:
            return True
        if part.verify_offset is not None and offset == part.verify_offset:
            if store.message_digest(message.key(), message.value()) == part.verify_digest:
                return True
            self._reset(
                conn,
                report,
                part,
                "fingerprint_mismatch",
                f"the message at offset {offset} is not the one consumed there before "
                "(a new log under the same topic: broker replaced or topic re-created)",
            )
            # the checkpoint now points at the new log's start; this pass lets the partition be
            # (what was fetched for it came from the old position) and the next one reads it whole
            part.paused = True
            with contextlib.suppress(KafkaException):
                consumer.pause([TopicPartition(part.topic, part.partition)])
            return False
        floor = part.verify_offset if part.verify_offset is not None else stored.next_offset
        if offset < floor:
            # the broker answered "offset out of range" and the consumer went back to the log's
            # start (auto.offset.reset=earliest): the log now ends before our position
            self._reset(
                conn,
                report,
                part,
                "log_end_before_offset",
                f"the broker moved the consumer back to offset {offset}: the log ends before the stored offset",
                resumed_at=offset,
            )
            part.stored = store.Checkpoint(offset, part.topic_id, None, None, 0)
            return True
        return True

    def _unverified(
        self, conn: psycopg.Connection, plan: dict[tuple[str, int], _Partition], report: DrainReport
    ) -> None:
        """A partition whose last consumed message never came back, on a broker that reports no
        topic ids: if even the high watermark stops before our position, the log was replaced by a
        shorter one (the next pass reads it from its start). With topic ids, a matching id already
        proved the log, and a high watermark below our position is the broker's (Tansu's) own
        under-reporting, not a new log."""
        for part in plan.values():
            stored = part.stored
            if part.seen or part.verify_offset is None or stored is None or part.topic_id is not None:
                continue
            if part.high is not None and part.high < stored.next_offset:
                self._reset(
                    conn,
                    report,
                    part,
                    "log_end_before_offset",
                    f"the log ends at {part.high}, before the stored offset {stored.next_offset}, and the last "
                    "message consumed is not there",
                    resumed_at=part.low or 0,
                )

    def _batch(self, messages: list, expected: dict, plan: dict[tuple[str, int], _Partition]) -> _Batch | None:
        if not messages:
            return None
        traceparents = [_traceparent(m) for m in messages] if observability.tracing_on() else []
        began_ns = time.time_ns() if traceparents else None
        topics = [m.topic() for m in messages]
        partitions = [m.partition() for m in messages]
        offsets = [m.offset() for m in messages]
        keys = [m.key() for m in messages]
        stamps = [m.timestamp()[1] for m in messages]
        values = [m.value() for m in messages]
        now_ms = int(time.time() * 1000)
        # The future bound is judged against the Kafka timestamp, which is the producer's own clock
        # (CreateTime, Kafka's default): an edge gateway whose clock runs days ahead stamps its
        # readings and its messages alike, and would pass. No message was produced after it was
        # read, so a stamp after now is taken as now (as a missing one is), and landing keeps that,
        # so a re-derivation judges the message exactly as this pass did.
        frame = pl.DataFrame(
            {
                "topic": topics,
                "kafka_partition": partitions,
                "kafka_offset": offsets,
                "kafka_key": keys,
                "kafka_ts": pl.Series([s if 0 < s <= now_ms else now_ms for s in stamps], dtype=pl.Int64)
                .cast(pl.Datetime("ms"))
                .dt.replace_time_zone("UTC")
                .cast(pl.Datetime("us", "UTC")),
                "value": values,
            },
            schema=MESSAGE_SCHEMA,
        )
        positions = self._positions(messages, frame, expected, plan)
        messages.clear()  # the caller's list: the Kafka messages die here, young (`_collector_paused`)
        parsed = self.contract.parse(frame, self.config, values)
        oldest = frame.get_column("kafka_ts").min()
        landing = store.encode_landing(store.landing_frame(frame, parsed))
        raw = store.encode_raw(self.contract, parsed.rows)
        summary = self._account(frame.height, parsed, positions, oldest)  # type: ignore[arg-type]
        return _Batch(parsed, positions, landing, raw, summary, oldest, traceparents, began_ns)  # type: ignore[arg-type]

    def _positions(
        self, messages: list, frame: pl.DataFrame, expected: dict, plan: dict[tuple[str, int], _Partition]
    ) -> dict[tuple[str, int], store.Position]:
        """Per partition of the batch: the next offset, with the log it belongs to (the topic id and
        the fingerprint of the batch's last message of the partition)."""
        # the first message with the highest offset of each partition, in order of appearance
        highest = (
            frame.select("topic", "kafka_partition", "kafka_offset")
            .with_row_index("_i")
            .group_by("topic", "kafka_partition", maintain_order=True)
            .agg(pl.col("_i").get(pl.col("kafka_offset").arg_max()))
        )
        last = {(topic, partition): i for topic, partition, i in highest.iter_rows()}
        kafka_ts = frame.get_column("kafka_ts")
        positions = {}
        for tp, i in last.items():
            message = messages[i]
            part = plan.get(tp)
            positions[tp] = store.Position(
                tp[0],
                tp[1],
                message.offset() + 1,
                part.topic_id if part else None,
                kafka_ts[i],
                store.message_digest(message.key(), message.value()),
            )
            expected[tp] = message.offset() + 1
        return positions

    # ----- writing ------------------------------------------------------------------------
    def _write(self, conn: psycopg.Connection, batch: _Batch, report: DrainReport) -> None:
        """Commit one batch; with tracing on, inside the batch's span, which links to the traces of
        its messages (a batch carries the readings of many traces: links, not a parent) and whose
        context the report keeps for every hour the batch wrote into."""
        if not observability.tracing_on():
            self._commit(conn, batch, report)
            return
        summary = batch.summary
        with observability.tracer(__name__).start_as_current_span(
            f"drain {self.contract.domain} batch",
            kind=SpanKind.CONSUMER,
            links=observability.links(batch.traceparents),
            start_time=batch.began_ns,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": self.consumer_name,
                "messaging.batch.message_count": summary.messages,
                "analytics.domain": self.contract.domain,
                "analytics.drain.shard": self.shard,
                "analytics.drain.rows": summary.rows,
                "analytics.drain.rejects": summary.rejects,
            },
        ):
            context = observability.current_traceparent()
            if context is not None:
                summary.traces = {start: [context] for start in summary.partitions}
            self._commit(conn, batch, report)

    def _commit(self, conn: psycopg.Connection, batch: _Batch, report: DrainReport) -> None:
        parsed = batch.parsed
        began = time.monotonic()
        summary = batch.summary
        if batch.oldest_kafka_ts is not None:  # the lag when the batch reaches the database
            summary.max_ingest_lag_s = (datetime.now(UTC) - batch.oldest_kafka_ts).total_seconds()
        with conn.transaction(), conn.cursor() as cur:
            # a hung database must not hold the pass much past its budget (a few seconds of slack)
            cur.execute(f"SET LOCAL statement_timeout = {int(self._left(3600, floor=5) * 1000) + 5000}")
            store.write_landing(cur, batch.landing)
            store.write_raw(cur, self.contract, batch.raw)
            store.write_rejects(cur, parsed.rejects)
            if self.before_checkpoint is not None:
                self.before_checkpoint()
            store.write_checkpoints(cur, self.consumer_name, batch.positions.values())
            if self.report_batches:
                summary.elapsed_s = time.monotonic() - began
                store.write_drain_report(cur, self.consumer_name, self.shard, summary.to_json())
        if batch.oldest_kafka_ts is not None:
            summary.max_ingest_lag_s = (datetime.now(UTC) - batch.oldest_kafka_ts).total_seconds()
        summary.elapsed_s = 0.0  # the pass measures its own time
        summary.messages = 0  # counted when the batch was handed to this thread (the loop's max_messages)
        report.merge(summary)
        if self.on_commit is not None:
            self.on_commit(parsed)

    def report_pass(self, report: DrainReport) -> None:
        """Store what a pass found outside its batches (offset resets) for the drain sensor; a
        batch's own counts are stored in its transaction. Only with `report_batches`."""
        if not (self.report_batches and report.offset_resets):
            return
        only = DrainReport(domain=self.contract.domain, offset_resets=list(report.offset_resets))
        with _connect(self.database_url) as conn, conn.cursor() as cur:
            store.write_drain_report(cur, self.consumer_name, self.shard, only.to_json())

    def _account(
        self,
        messages: int,
        parsed: ParsedBatch,
        positions: dict[tuple[str, int], store.Position],
        oldest_kafka_ts: datetime | None,
    ) -> DrainReport:
        """One batch's report: its counts, positions and per-hour quality (before it is written, so
        the drain service can store it with the batch; the ingest lag is measured when it is)."""
        report = DrainReport(domain=self.contract.domain)
        report.messages = messages
        report.batches = 1
        report.rows = parsed.rows.height
        report.rejects = parsed.rejects.height
        report.duplicates_in_batch = parsed.duplicates_in_batch
        report.positions.update({tp: p.next_offset for tp, p in positions.items()})
        if oldest_kafka_ts is not None:
            report.max_ingest_lag_s = (datetime.now(UTC) - oldest_kafka_ts).total_seconds()
        for row in profile(parsed.rows, self.contract.natural_key, self.contract.finite_columns).iter_rows(named=True):
            report.partitions[row["partition_start"]].add_profile(row)
        if "uncatalogued" in parsed.rows.columns:
            flagged = parsed.rows.filter(pl.col("uncatalogued"))
            for (start,), group in flagged.group_by(pl.col("time").dt.truncate("1h")):
                report.partitions[start].uncatalogued += group.height
        if self.metric_limits is not None and self.contract.range_column is not None:
            ranges = range_profile(
                parsed.rows,
                self.metric_limits,
                self.contract.range_column,
                self.contract.natural_key,
                missing_unit_ok=self.missing_unit_is_canonical,
            )
            for row in ranges.iter_rows(named=True):
                report.partitions[row["partition_start"]].add_range_profile(row)
        # a reject belongs to an hour only when its time is one a partition can have
        placeable = pl.col("event_time").is_not_null() & ~pl.col("reason").is_in([FUTURE_TIME, TOO_OLD])
        rejects = parsed.rejects
        report.unpartitioned_rejects += rejects.filter(~placeable).height
        timed = rejects.filter(placeable).with_columns(pl.col("event_time").dt.truncate("1h").alias("partition_start"))
        for (start,), group in timed.group_by("partition_start"):
            reasons = Counter(group.get_column("reason").to_list())
            report.partitions[start].add_rejects(
                dict(reasons), group.get_column("event_time").min(), group.get_column("event_time").max()
            )
        return report


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while librdkafka hands over a batch.

    A consume call creates up to a batch of Kafka message objects, which the collector tracks: the
    ~30 young collections it triggers on the way promote most of them to the oldest generation
    before the call returns, and every few batches that sets off a collection of the whole heap
    (measured in the Dagster sensor's process: ~3 µs of the drain's ~13 µs of CPU per message).
    Messages hold no reference cycles, so pausing the collector for the call loses nothing; they
    die young once `_batch` has their columns.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _traceparent(message) -> bytes | None:
    """A Kafka message's `traceparent` header (the edge agent's), if it has one."""
    for name, value in message.headers() or ():
        if name == observability.TRACEPARENT:
            return value
    return None


def _connect(url: str, timeout_s: float = 10) -> psycopg.Connection:
    try:
        # keepalives: a database host that vanished is noticed in seconds, not hours
        return psycopg.connect(
            url,
            connect_timeout=max(1, int(timeout_s)),
            autocommit=True,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
    except psycopg.OperationalError as exc:
        raise DrainError(
            f"database unreachable ({_first_line(exc)}); start it (make demo) or set DATABASE_URL"
        ) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "connection failed"
