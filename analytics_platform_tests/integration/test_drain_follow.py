"""A following drain pass (the sensor's default, DRAIN_FOLLOW): it keeps consuming after it caught
up, and each micro-batch is committed -- rows with their offsets, one transaction -- when it is
full or DRAIN_LINGER_S after its first message, while the pass is still running. What another
connection sees is asserted, never a time: the pass is kept running by `max_messages` (it cannot
end before that many messages came, or its budget is spent), so a row observed while the pass is
alive was committed before the pass ended."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import dagster as dg
import pytest

from analytics_platform.contracts.base import ParsedBatch
from analytics_platform.defs import build_definitions
from analytics_platform.ingest.drain import DrainReport
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.edge import wait_for
from analytics_platform_tests.support.readings import KEY, reading
from analytics_platform_tests.support.stack import DatabaseHandle, domain_drain, domain_topic, produce

# committed rows and offsets, read together from another connection
STATE = (
    "SELECT (SELECT count(*) FROM analytics.kafka_landing), "
    "(SELECT count(*) FROM analytics.raw_sensor_readings), "
    "(SELECT coalesce(sum(next_offset), 0) FROM analytics.worker_checkpoints)"
)


class Pass:
    """A drain pass on a thread: its report, or the exception it ended with."""

    def __init__(self, run: Callable[[], DrainReport]) -> None:
        self.report: DrainReport | None = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.report = run()
            except BaseException as exc:  # handed to the test
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float = 90) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the drain pass did not end"


def send(settings: PlatformSettings, minute: int) -> None:
    """One reading, on partition 0 (its offsets are 0, 1, 2 ... in the order sent)."""
    value = reading(f"2025-08-20T03:{minute:02d}:00Z", 20.0 + minute, f"e-{minute}")
    produce(settings.kafka_brokers, domain_topic(settings), [(KEY, value)], partition=0)


def state(database: DatabaseHandle) -> tuple[int, int, int]:
    return tuple(database.query(STATE)[0])  # type: ignore[return-value]


def test_a_trickle_is_committed_batch_by_batch_while_the_pass_runs(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    seen_after_commit: list[tuple[int, tuple[int, int, int]]] = []

    def on_commit(parsed: ParsedBatch) -> None:
        # runs after the batch's transaction: another connection sees its rows already
        seen_after_commit.append((parsed.rows.height, state(database)))

    drain = domain_drain(settings, on_commit=on_commit)
    running = Pass(lambda: drain.run(budget_s=120, max_messages=3, follow=True))
    for n in (1, 2, 3):
        send(settings, n)
        # rows and offsets arrive together; the pass (3 messages or 120 s) is still running for
        # the first two, so each was committed on its own, before the pass ended
        wait_for(lambda n=n: state(database) == (n, n, n), 60, f"reading {n} committed with its offset")
        if n < 3:
            assert running.alive()
    running.join()
    assert running.error is None
    assert running.report is not None
    assert (running.report.messages, running.report.rows, running.report.batches) == (3, 3, 3)
    assert seen_after_commit == [(1, (1, 1, 1)), (1, (2, 2, 2)), (1, (3, 3, 3))]


def test_a_full_batch_is_committed_without_waiting_for_the_linger(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    for minute in range(20):
        send(settings, minute)
    # a linger far longer than the test waits: only being full commits these batches
    drain = domain_drain(settings, batch_size=10, linger_s=600)
    running = Pass(lambda: drain.run(budget_s=600, max_messages=25, follow=True))
    wait_for(lambda: state(database) == (20, 20, 20), 60, "two full batches committed")
    assert running.alive()
    for minute in range(20, 25):
        send(settings, minute)
    running.join()  # the last batch is full at max_messages: no linger either
    assert running.error is None
    assert running.report is not None
    assert (running.report.messages, running.report.batches) == (25, 3)
    assert state(database) == (25, 25, 25)


def test_a_crash_mid_loop_keeps_rows_and_offsets_together(settings: PlatformSettings, database: DatabaseHandle) -> None:
    batches = {"n": 0}

    def crash_on_second_batch() -> None:
        batches["n"] += 1
        if batches["n"] == 2:
            raise RuntimeError("injected crash after rows were written, before offsets")

    drain = domain_drain(settings)
    drain.before_checkpoint = crash_on_second_batch
    running = Pass(lambda: drain.run(budget_s=120, max_messages=5, follow=True))
    send(settings, 1)
    wait_for(lambda: state(database) == (1, 1, 1), 60, "the first reading committed")
    send(settings, 2)
    running.join()
    assert isinstance(running.error, RuntimeError) and "injected crash" in str(running.error)
    assert state(database) == (1, 1, 1)  # the second batch's rows went with its offsets

    again = domain_drain(settings).run(budget_s=30)
    assert again.messages == 1
    assert state(database) == (2, 2, 2)
    assert database.query("SELECT kafka_offset, value FROM analytics.raw_sensor_readings ORDER BY kafka_offset") == [
        (0, 21.0),
        (1, 22.0),
    ]


@pytest.fixture
def following(settings: PlatformSettings) -> PlatformSettings:
    """The test settings with the sensor following, as deployed, for a short budget. The test waits for the
    tick to end, which a following tick does only when its budget is spent: 10 s (20 s was half of the
    module's time) still leaves the two commits it waits for, ~1 s each, several times their time."""
    return settings.model_copy(update={"drain_follow": True, "drain_budget_s": 10.0})


def test_the_sensor_tick_follows_and_reports_what_it_committed_when_it_ends(
    following: PlatformSettings, database: DatabaseHandle, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions(following, secrets_from_env=False)
    sensor = defs.resolve_sensor_def("drain_sensor")
    send(following, 1)
    result: dict[str, dg.SensorResult] = {}

    def tick() -> None:
        result["tick"] = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))

    running = threading.Thread(target=tick, daemon=True)
    running.start()
    wait_for(lambda: state(database) == (1, 1, 1), 60, "the first reading committed during the tick")
    assert running.is_alive()
    send(following, 2)  # produced while the tick runs: the same tick commits it
    wait_for(lambda: state(database) == (2, 2, 2), 60, "the second reading committed during the tick")
    running.join(90)
    assert not running.is_alive()
    events = result["tick"].asset_events
    landing = [e for e in events if e.asset_key == dg.AssetKey("kafka_landing")]
    assert [e.metadata["messages"].value for e in landing] == [2]
    raw = [
        e
        for e in events
        if isinstance(e, dg.AssetMaterialization) and e.asset_key == dg.AssetKey("raw_sensor_readings")
    ]
    assert [(e.partition, e.metadata["rows"].value) for e in raw] == [("2025-08-20-03:00", 2)]
    assert json.loads(result["tick"].cursor)["pending"] == {}
