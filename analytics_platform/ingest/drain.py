"""The Kafka drain: one bounded pass from the stored offsets to (about) the end of the topics.

Invariants (DESIGN.md, "Ingest"):
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

Parsing batch i+1 overlaps the database write of batch i (one writer thread, at most one batch in
flight, batches committed strictly in order), so the client core and the database core both work.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import psycopg
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from analytics_platform.contracts.base import FUTURE_TIME, MESSAGE_SCHEMA, TOO_OLD, ContractConfig, ParsedBatch
from analytics_platform.contracts.registry import DomainBinding
from analytics_platform.ingest import store
from analytics_platform.transforms.raw_quality import PartitionQuality, profile, range_profile

log = logging.getLogger(__name__)

# How long a pass keeps polling an empty fetch while the watermarks say data is there (a first
# fetch on a cold connection can take seconds).
_COLD_FETCH_S = 5.0


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
    offset_resets: list[str] = field(default_factory=list)
    # partitions this drain owned and read, and those it owned but another drain held (skipped)
    assigned: list[tuple[str, int]] = field(default_factory=list)
    busy: list[tuple[str, int]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s else 0.0


@dataclass
class _Batch:
    messages: pl.DataFrame
    parsed: ParsedBatch
    positions: dict[tuple[str, int], int]
    oldest_kafka_ts: datetime | None


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
        metric_limits: pl.DataFrame | None = None,
        missing_unit_is_canonical: bool = True,
        shard: int = 0,
        shards: int = 1,
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
        self.start = start
        self.commit_to_kafka = commit_to_kafka
        # the metrics catalogue, for the live `values_in_range` / `units_match` counts of domains
        # with a range column (None: not profiled)
        self.metric_limits = metric_limits if binding.contract.range_column is not None else None
        self.missing_unit_is_canonical = missing_unit_is_canonical
        self.shard = shard
        self.shards = shards
        # called inside each batch's transaction after its rows and before its offsets are
        # written: the fault-injection point of the crash tests
        self.before_checkpoint: Callable[[], None] | None = None

    # ----- public -------------------------------------------------------------------------
    def run(self, budget_s: float, max_messages: int | None = None) -> DrainReport:
        """Drain until caught up, `budget_s` elapsed or `max_messages` consumed."""
        report = DrainReport(domain=self.contract.domain)
        started = time.monotonic()
        conn = _connect(self.database_url)
        consumer: Consumer | None = None
        try:
            consumer = self._consumer()
            owned = self._owned_partitions(consumer, report)
            claimed = self._claim(conn, owned, report)
            # offsets are read only once the partitions are ours: whoever read them before has
            # committed (or rolled back) and let go
            stored = store.load_checkpoints(conn, self.consumer_name, self.binding.topics)
            assignment = self._assignment(claimed, stored)
            if not assignment:
                return report
            consumer.assign(assignment)
            floors = self._known_ends(consumer, assignment)
            self._loop(consumer, conn, stored, floors, report, started, budget_s, max_messages)
            if self.commit_to_kafka and report.positions:
                self._commit_group(consumer, report.positions)
        finally:
            if consumer is not None:
                consumer.close()
            conn.close()
            report.elapsed_s = time.monotonic() - started
        return report

    # ----- consuming ----------------------------------------------------------------------
    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self.kafka_config,
                "group.id": self.consumer_name,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": self.start,
                "enable.partition.eof": False,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 16 * 1024 * 1024,
                "queued.max.messages.kbytes": 256 * 1024,
                "socket.connection.setup.timeout.ms": 5000,
                "log_level": 3,
            }
        )

    def _owned_partitions(self, consumer: Consumer, report: DrainReport) -> list[tuple[str, int]]:
        """The (topic, partition)s of this drain's shard, as the broker lists them now."""
        try:
            metadata = consumer.list_topics(timeout=10)
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

    def _assignment(self, claimed: list[tuple[str, int]], stored: dict) -> list[TopicPartition]:
        default = OFFSET_BEGINNING if self.start == "earliest" else OFFSET_END
        return [TopicPartition(t, p, stored.get((t, p), default)) for t, p in claimed]

    def _known_ends(self, consumer: Consumer, assignment: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """A lower bound of each partition's end: its high watermark.

        Tansu reports the start of the last batch + 1, so this is never used to decide that a
        pass is complete, only to keep waiting (longer) while data is known to be there.
        """
        floors = {}
        for tp in assignment:
            if tp.offset == OFFSET_END:
                continue  # DRAIN_START=latest with no stored offset: nothing is owed from before
            try:
                _low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            except KafkaException:
                continue
            floors[(tp.topic, tp.partition)] = high
        return floors

    def _loop(
        self,
        consumer: Consumer,
        conn: psycopg.Connection,
        stored: dict,
        floors: dict[tuple[str, int], int],
        report: DrainReport,
        started: float,
        budget_s: float,
        max_messages: int | None,
    ) -> None:
        expected = dict(stored)

        def behind() -> bool:
            return any(expected.get(tp, 0) < end for tp, end in floors.items())

        pending: Future | None = None
        last_progress = time.monotonic()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"drain-{self.contract.domain}") as writer:
            try:
                while time.monotonic() - started < budget_s:
                    want = self.batch_size
                    if max_messages is not None:
                        want = min(want, max_messages - report.messages)
                        if want <= 0:
                            break
                    messages = consumer.consume(num_messages=want, timeout=self.poll_timeout_s)
                    batch = self._batch(messages, expected, report) if messages else None
                    if batch is not None:
                        if pending is not None:
                            pending.result()
                        pending = writer.submit(self._write, conn, batch, report)
                        report.messages += batch.messages.height
                    if messages:
                        last_progress = time.monotonic()
                    if len(messages) < want and not behind():
                        break  # caught up: the broker had less than a full batch for us
                    if not messages and time.monotonic() - last_progress > _COLD_FETCH_S:
                        break  # the watermarks promised data that did not come: next tick

            finally:
                if pending is not None:
                    pending.result()

    def _batch(self, messages: list, expected: dict, report: DrainReport) -> _Batch | None:
        topics, partitions, offsets, keys, stamps, values = [], [], [], [], [], []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise DrainError(f"Kafka error while draining {self.contract.domain}: {error}")
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("Kafka error while draining %s: %s", self.contract.domain, error)
                continue
            topics.append(message.topic())
            partitions.append(message.partition())
            offsets.append(message.offset())
            keys.append(message.key())
            stamps.append(message.timestamp()[1])
            values.append(message.value())
        if not offsets:
            return None
        now_ms = int(time.time() * 1000)
        frame = pl.DataFrame(
            {
                "topic": topics,
                "kafka_partition": partitions,
                "kafka_offset": offsets,
                "kafka_key": keys,
                "kafka_ts": pl.Series([s if s > 0 else now_ms for s in stamps], dtype=pl.Int64)
                .cast(pl.Datetime("ms"))
                .dt.replace_time_zone("UTC")
                .cast(pl.Datetime("us", "UTC")),
                "value": values,
            },
            schema=MESSAGE_SCHEMA,
        )
        positions = self._positions(frame, expected, report)
        parsed = self.contract.parse(frame, self.config, values)
        oldest = frame.get_column("kafka_ts").min()
        return _Batch(frame, parsed, positions, oldest)  # type: ignore[arg-type]

    def _positions(self, frame: pl.DataFrame, expected: dict, report: DrainReport) -> dict[tuple[str, int], int]:
        spans = frame.group_by("topic", "kafka_partition").agg(
            pl.col("kafka_offset").min().alias("first"), pl.col("kafka_offset").max().alias("last")
        )
        positions = {}
        for topic, partition, first, last in spans.iter_rows():
            before = expected.get((topic, partition))
            if before is not None and first < before:
                note = f"{topic}[{partition}] restarted at offset {first} below stored {before}"
                log.warning("offset reset: %s (did the broker lose its log?)", note)
                report.offset_resets.append(note)
            positions[(topic, partition)] = last + 1
            expected[(topic, partition)] = last + 1
        return positions

    # ----- writing ------------------------------------------------------------------------
    def _write(self, conn: psycopg.Connection, batch: _Batch, report: DrainReport) -> None:
        parsed = batch.parsed
        landing = store.landing_frame(batch.messages, parsed)
        with conn.transaction(), conn.cursor() as cur:
            store.write_landing(cur, landing)
            store.write_raw(cur, self.contract, parsed.rows)
            store.write_rejects(cur, parsed.rejects)
            if self.before_checkpoint is not None:
                self.before_checkpoint()
            store.write_checkpoints(
                cur,
                self.consumer_name,
                [store.Position(t, p, o) for (t, p), o in batch.positions.items()],
            )
        committed = datetime.now(UTC)
        self._account(batch, report, committed)

    def _account(self, batch: _Batch, report: DrainReport, committed: datetime) -> None:
        parsed = batch.parsed
        report.batches += 1
        report.rows += parsed.rows.height
        report.rejects += parsed.rejects.height
        report.duplicates_in_batch += parsed.duplicates_in_batch
        report.positions.update(batch.positions)
        if batch.oldest_kafka_ts is not None:
            report.max_ingest_lag_s = max(report.max_ingest_lag_s, (committed - batch.oldest_kafka_ts).total_seconds())
        for row in profile(parsed.rows, self.contract.natural_key, self.contract.finite_columns).iter_rows(named=True):
            report.partitions[row["partition_start"]].add_profile(row)
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

    def _commit_group(self, consumer: Consumer, positions: dict[tuple[str, int], int]) -> None:
        """Mirror the stored offsets into the Kafka group, for lag dashboards only."""
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()], asynchronous=False)
        except KafkaException as exc:
            log.warning("could not mirror offsets to Kafka group %s: %s", self.consumer_name, exc)


def _connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, connect_timeout=10, autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        raise DrainError(f"database unreachable ({first}); start it (make demo) or set DATABASE_URL") from None
