"""Sharded drain over a 6-partition topic: shards own disjoint partitions, offsets stay per
partition in the database, and re-sharding 2 -> 3 (including the overlap of a rolling update,
when an old and a new shard both claim a partition) loses and doubles nothing."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from analytics_platform.defs.ingest.definitions import drain_sensors
from analytics_platform.defs.resources import build_resources
from analytics_platform.devstack.broker import ensure_topics
from analytics_platform.ingest.drain import Drain, DrainReport
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support import dataset
from analytics_platform_tests.support.stack import DatabaseHandle, domain_drain, domain_topic, produce

PARTITIONS = 6
START = datetime(2025, 8, 20, 0, 0, tzinfo=UTC)


@pytest.fixture
def sharded(settings: PlatformSettings) -> PlatformSettings:
    """The test's settings with its own sensor topic of 6 partitions."""
    sharded = settings.model_copy(
        update={"kafka_topic_prefix": f"s{uuid.uuid4().hex[:10]}.", "domains_enabled": ["sensor"]}
    )
    ensure_topics(sharded.kafka_client_config(), [topic_of(sharded)], PARTITIONS)
    return sharded


def topic_of(settings: PlatformSettings) -> str:
    return domain_topic(settings)


def produce_round(settings: PlatformSettings, round_no: int, per_partition: int) -> None:
    """`per_partition` distinct readings into each of the 6 partitions (one machine per partition)."""
    for partition in range(PARTITIONS):
        values = [
            dataset.reading(
                (START + timedelta(hours=round_no, seconds=i)).isoformat().replace("+00:00", "Z"),
                float(i),
                machine=f"mc-{partition:02d}",
            )
            for i in range(per_partition)
        ]
        produce(
            settings.kafka_brokers, topic_of(settings), [(f"t1-f1-mc-{partition:02d}", v) for v in values], partition
        )


PASS_S = 60  # every pass's budget


def shard(settings: PlatformSettings, index: int, of: int) -> Drain:
    """One shard's drain. The tests count each pass's messages exactly, so a pass must end caught up with the
    watermarks (or at its budget), not after the drain's 5 s of empty fetches: on a loaded machine (three
    xdist workers on 2 cores) a first fetch came back empty that long once, and so did the time the old shard
    of the overlap spends blocked on its held commit."""
    return domain_drain(settings, batch_size=50, shard=index, shards=of, cold_fetch_s=PASS_S)


def run_together(drains: list[Drain]) -> list[DrainReport]:
    with ThreadPoolExecutor(max_workers=len(drains)) as pool:
        return list(pool.map(lambda d: d.run(PASS_S), drains))


def partitions_of(report: DrainReport) -> list[int]:
    return sorted(p for _, p in report.assigned)


def stored_offsets(database: DatabaseHandle, settings: PlatformSettings) -> dict[int, int]:
    return dict(
        database.query(
            "SELECT kafka_partition, next_offset FROM analytics.worker_checkpoints WHERE topic = %s",
            (topic_of(settings),),
        )
    )


def landed(database: DatabaseHandle, settings: PlatformSettings) -> dict[int, tuple[int, int, int]]:
    """Per partition: (rows, distinct offsets, max offset + 1) in landing."""
    rows = database.query(
        "SELECT kafka_partition, count(*), count(DISTINCT kafka_offset), max(kafka_offset) + 1 "
        "FROM analytics.kafka_landing WHERE topic = %s GROUP BY 1",
        (topic_of(settings),),
    )
    return {p: (n, d, m) for p, n, d, m in rows}


def test_two_shards_then_three_read_every_message_exactly_once(
    sharded: PlatformSettings, database: DatabaseHandle
) -> None:
    produce_round(sharded, 0, 120)
    first = run_together([shard(sharded, 0, 2), shard(sharded, 1, 2)])
    assert [partitions_of(r) for r in first] == [[0, 2, 4], [1, 3, 5]]
    assert [r.messages for r in first] == [360, 360]
    assert [r.busy for r in first] == [[], []]
    assert stored_offsets(database, sharded) == dict.fromkeys(range(PARTITIONS), 120)

    # more traffic; shard 0 of 2 reads part of its share, then the drain is re-sharded to 3
    produce_round(sharded, 1, 120)
    partial = shard(sharded, 0, 2).run(PASS_S, max_messages=100)
    assert partial.messages == 100
    produce_round(sharded, 2, 30)
    second = run_together([shard(sharded, i, 3) for i in range(3)])
    assert [partitions_of(r) for r in second] == [[0, 3], [1, 4], [2, 5]]

    produced = PARTITIONS * (120 + 120 + 30)
    consumed = sum(r.messages for r in [*first, partial, *second])
    assert consumed == produced == 1620  # nothing read twice, nothing skipped
    assert landed(database, sharded) == dict.fromkeys(range(PARTITIONS), (270, 270, 270))
    assert stored_offsets(database, sharded) == dict.fromkeys(range(PARTITIONS), 270)
    assert database.scalar("SELECT count(*) FROM analytics.raw_sensor_readings") == produced
    assert database.scalar("SELECT count(*) FROM analytics.rejected_message") == 0


class SilentWatermarks(Drain):
    """The drain on a broker that does not answer the watermark query in time (a loaded broker:
    confluent-kafka returns None on a timeout, raises on an error)."""

    def _watermarks(self, consumer, tp):  # type: ignore[no-untyped-def]
        return None


def test_a_pass_whose_watermark_queries_go_unanswered_still_reads_what_is_there(
    sharded: PlatformSettings, database: DatabaseHandle
) -> None:
    """Unknown high watermarks are not "nothing to read": the pass keeps consuming until the broker
    has given nothing for a cold fetch's time, so a loaded broker delays no message by a pass."""
    produce_round(sharded, 0, 10)
    report = domain_drain(sharded, cls=SilentWatermarks, batch_size=50).run(60)
    assert report.messages == PARTITIONS * 10
    assert stored_offsets(database, sharded) == dict.fromkeys(range(PARTITIONS), 10)
    assert database.scalar("SELECT count(*) FROM analytics.raw_sensor_readings") == PARTITIONS * 10


class ShortFetches(Drain):
    """The drain whose consume calls bring at most 20 messages, as when a fetch response ends at a
    record batch's boundary on a loaded broker: every call is "short" of the pass's batch."""

    def _consumer(self):  # type: ignore[no-untyped-def]
        return _Capped(super()._consumer())


class _Capped:
    def __init__(self, consumer) -> None:  # type: ignore[no-untyped-def]
        self.consumer = consumer

    def consume(self, num_messages: int = 1, timeout: float = -1):  # type: ignore[no-untyped-def]
        return self.consumer.consume(num_messages=min(num_messages, 20), timeout=timeout)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.consumer, name)


def test_a_short_fetch_past_tansus_list_offsets_watermark_does_not_end_the_pass(
    sharded: PlatformSettings, database: DatabaseHandle
) -> None:
    """Tansu's ListOffsets high watermark is the start of the log's last record batch + 1 (docs/architecture.md),
    its fetch responses' the log's end. Two produce calls per partition (120 then 30 readings: two
    record batches) make the planned watermark 121 of 150. On a loaded machine a gathered batch's
    linger has often run out by the time it is gathered, so it is committed at once and the next
    consume call waits no time: a call that comes back short once the pass stands past 121 ended the
    pass 'caught up' with the rest of the partition left for the next tick (a one-pass test once
    counted 1,570 of 1,620). linger_s=0 makes every batch such a batch. The pass now also asks the
    fetches' own high watermark (local, no broker call) before it calls itself caught up."""
    produce_round(sharded, 0, 120)
    produce_round(sharded, 1, 30)
    drain = domain_drain(sharded, cls=ShortFetches, batch_size=50, cold_fetch_s=PASS_S, linger_s=0)
    report = drain.run(PASS_S)
    assert report.messages == PARTITIONS * 150, "the pass ended at Tansu's ListOffsets watermark"
    assert stored_offsets(database, sharded) == dict.fromkeys(range(PARTITIONS), 150)
    assert database.scalar("SELECT count(*) FROM analytics.raw_sensor_readings") == PARTITIONS * 150


class SlowFirstCommit(Drain):
    """The drain whose first batch's commit takes 3 s (a loaded database), and whose consumer, once it has
    handed out messages while that commit runs, brings nothing for one call (a fetch that found nothing
    within its timeout, which it waits out): that call's linger then runs out with messages held, so the
    pass waits for the slow commit before it can hand them to the writer."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.writing = threading.Event()
        self.slowed = False
        self.consumer: _EmptyOnceWhileWriting | None = None

    def _consumer(self):  # type: ignore[no-untyped-def]
        self.consumer = _EmptyOnceWhileWriting(super()._consumer(), self.writing)
        return self.consumer

    def _write(self, conn, batch, report) -> None:  # type: ignore[no-untyped-def]
        if not self.slowed:
            self.slowed = True
            self.writing.set()
            threading.Event().wait(3.0)  # the slow commit itself, not a synchronisation
            self.writing.clear()
        super()._write(conn, batch, report)


class _EmptyOnceWhileWriting(_Capped):
    def __init__(self, consumer, writing: threading.Event) -> None:  # type: ignore[no-untyped-def]
        super().__init__(consumer)
        self.writing = writing
        self.handed = 0  # messages handed out while the slow commit runs
        self.emptied = False

    def consume(self, num_messages: int = 1, timeout: float = -1):  # type: ignore[no-untyped-def]
        if self.writing.is_set() and self.handed and not self.emptied:
            self.emptied = True
            threading.Event().wait(max(timeout, 0.0))  # an empty fetch lasts its timeout
            return []
        messages = super().consume(num_messages=num_messages, timeout=timeout)
        if self.writing.is_set():
            self.handed += len(messages)
        return messages


def test_time_blocked_on_a_slow_commit_is_not_fetch_silence(
    sharded: PlatformSettings, database: DatabaseHandle
) -> None:
    """A pass gives up on a partition whose watermarks promise messages when its fetches bring nothing
    for `cold_fetch_s`. The time a pass waits for its own previous commit is not a fetch: counted as one,
    a 3 s commit ended a pass with a 2 s window after 70 of 900 messages, the rest left for the next tick
    (nothing lost, but the pass not caught up, and a one-pass count wrong)."""
    produce_round(sharded, 0, 150)
    drain = domain_drain(sharded, cls=SlowFirstCommit, batch_size=50, cold_fetch_s=2.0, linger_s=0.3)
    report = drain.run(PASS_S)
    assert drain.slowed and drain.consumer is not None and drain.consumer.emptied, "the set-up did not happen"
    assert report.messages == PARTITIONS * 150, "time blocked on the writer was counted as fetch silence"
    assert stored_offsets(database, sharded) == dict.fromkeys(range(PARTITIONS), 150)


def test_rolling_update_overlap_one_reader_per_partition(sharded: PlatformSettings, database: DatabaseHandle) -> None:
    """Old shard 1-of-2 (partitions 1, 3, 5) is mid-commit when new shard 0-of-3 (0, 3) starts:
    partition 3 is held, so the new shard skips it, and reads it on its next pass from exactly
    where the old shard committed."""
    # a first round drained by 2 shards: besides being realistic, it creates the day's chunks on
    # TimescaleDB, whose creation would otherwise wait for the old shard's held transaction
    produce_round(sharded, 0, 10)
    assert [r.messages for r in run_together([shard(sharded, 0, 2), shard(sharded, 1, 2)])] == [30, 30]
    produce_round(sharded, 1, 40)
    old = shard(sharded, 1, 2)
    inside = threading.Event()
    release = threading.Event()

    def hold_in_first_batch() -> None:
        old.before_checkpoint = None  # only the first batch waits
        inside.set()
        assert release.wait(30), "the test never released the old shard"

    old.before_checkpoint = hold_in_first_batch
    with ThreadPoolExecutor(max_workers=1) as pool:
        old_run = pool.submit(old.run, PASS_S)
        assert inside.wait(30), "the old shard never reached its first commit"
        new = shard(sharded, 0, 3)
        overlapped = new.run(PASS_S)
        release.set()
        old_report = old_run.result(60)

    topic = topic_of(sharded)
    assert partitions_of(old_report) == [1, 3, 5] and old_report.messages == 120
    assert overlapped.assigned == [(topic, 0)] and overlapped.busy == [(topic, 3)]
    assert overlapped.messages == 40

    produce_round(sharded, 2, 10)
    after = [shard(sharded, i, 3).run(PASS_S) for i in range(3)]
    assert [partitions_of(r) for r in after] == [[0, 3], [1, 4], [2, 5]]
    # round 2 everywhere, plus round 1 of partitions 2 and 4, which no shard of the overlap owned;
    # partition 3's round 1 was read once, by the old shard
    assert [r.messages for r in after] == [10 + 10, 40 + 10 + 10, 40 + 10 + 10]
    assert 60 + old_report.messages + overlapped.messages + sum(r.messages for r in after) == PARTITIONS * 60
    assert landed(database, sharded) == dict.fromkeys(range(PARTITIONS), (60, 60, 60))
    assert stored_offsets(database, sharded) == dict.fromkeys(range(PARTITIONS), 60)


def test_shard_sensors_report_every_partition_of_the_main_locations_assets(
    sharded: PlatformSettings, database: DatabaseHandle
) -> None:
    """The sensors of a drain-only code location (analytics_platform.drain_definitions) record
    materialisations of the raw asset defined in the main location, by asset key."""
    settings = sharded.model_copy(update={"drain_shards": 3, "drain_shards_here": [0, 2]})
    produce_round(settings, 0, 5)
    produce_round(settings, 1, 5)
    sensors = drain_sensors(settings)
    assert [s.name for s in sensors] == ["drain_sensor_shard_0", "drain_sensor_shard_2"]
    resources = build_resources(settings, secrets_from_env=False)
    raw = dg.AssetKey("raw_sensor_readings")
    with dg.instance_for_test() as instance:
        reported: dict[str, list[str]] = {}
        for sensor in sensors:
            result = sensor(dg.build_sensor_context(instance=instance, resources=resources))
            for event in result.asset_events:
                instance.report_runless_asset_event(event)
            reported[sensor.name] = sorted(
                e.partition
                for e in result.asset_events
                if isinstance(e, dg.AssetMaterialization) and e.asset_key == raw
            )
        assert reported == {
            "drain_sensor_shard_0": ["2025-08-20-00:00", "2025-08-20-01:00"],
            "drain_sensor_shard_2": ["2025-08-20-00:00", "2025-08-20-01:00"],
        }
        latest = instance.get_latest_materialization_event(raw)
        assert latest is not None and latest.asset_materialization.partition == "2025-08-20-01:00"
    # shards 0 and 2 of 3 own partitions 0, 3 and 2, 5; partitions 1 and 4 wait for shard 1
    assert stored_offsets(database, settings) == {0: 10, 2: 10, 3: 10, 5: 10}
    assert database.scalar("SELECT count(*) FROM analytics.raw_sensor_readings") == 40
