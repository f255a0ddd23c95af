"""Final buckets seconds after their window closes: the drain service materialises the window
aggregates of the hour a bucket just closed in, once per smallest window (AGG_FINALISE).

Why not the automation sensor alone: a run it starts is three daemon hops after the readings (the
report sensor, the automation sensor, the run queue, each on the daemon's 5 s loop) plus a run
process' start-up, so a 60 s bucket became final p50 23.5 s / p95 26.7 s after its window closed
(docs/benchmarks.md, "Live"). The drain service already has the readings' arrival in hand and, in
the demo and the chart, the Dagster instance; it runs the same asset in its own process
(`execute_in_process` of the `window_aggregates_live` job): a real run of the hourly asset,
recorded in the instance with its materialisation and checks, so the UI, lineage, re-materialising
and live == backfill are unchanged. What it skips is the queue (no run slot, no subprocess).

Each run is incremental (FINALISE_MODE_TAG): it rewrites only the buckets that closed since the
hour's previous run and those readings ingested since touched (`results.aggregates.finalise_hour`),
so its cost is a minute of readings, not the hour so far (which made a bucket final more than a
minute late in a busy hour's last half). The first run of a process, a run with no usable position
and the hour's last bucket recompute the whole hour; a run from the UI or a backfill always does.

While it runs (DRAIN_MODE=service and AGG_FINALISE), the aggregates' automation leaves the current
hour to it (each of its runs re-reads the hour so far; both doing so doubled the work under load)
and keeps every earlier hour, late data included. Several drain-service pods (one per shard) each
try at every boundary; a session advisory lock lets one of them run it.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition
from dagster._utils.warnings import BetaWarning

from analytics_platform.contracts.registry import bind_domains
from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.defs.aggregates import WINDOW_AGGREGATES
from analytics_platform.defs.automation import LANE_TAG
from analytics_platform.defs.partitions import partition_key
from analytics_platform.ingest.drain import watermarks
from analytics_platform.resources import PostgresResource
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms.window_aggregates import floor_to

log = logging.getLogger(__name__)

LIVE_JOB = "window_aggregates_live"
# the tag each of the finaliser's runs carries: the end of the bucket it made final
FINALISED_TAG = "analytics/finalised_bucket_end"
# `incremental` or `full`: whether the run may rewrite only what changed since the hour's last run
FINALISE_MODE_TAG = "analytics/finalise"
# one finaliser at a time across every drain-service process (pg_try_advisory_xact_lock's key)
LOCK_KEY = "analytics.finalise_aggregates"

_STATE = f"""
SELECT (SELECT as_of FROM analytics.agg_materialised_hours WHERE hour_start = %(hour)s) AS as_of,
       EXISTS (SELECT 1 FROM analytics.{SensorContract.raw_table}
               WHERE time >= %(hour)s AND time < %(hour)s + INTERVAL '1 hour') AS readings
"""


# how often the finaliser reads the stored offsets while it waits for the drains to commit a bucket's readings
DRAINED_POLL_S = 0.2
_STORED = """
    SELECT topic, kafka_partition, next_offset FROM analytics.worker_checkpoints
    WHERE consumer = %s AND topic = ANY(%s)"""


class Backlog:
    """What the sensor drains still owe the database: the broker's high watermarks of the sensor
    topics against the next offsets stored with the rows (analytics.worker_checkpoints, written in
    each batch's transaction). Read from the broker and the database, not from this process's
    drains, so it holds whichever drain-service pod or shard owns a partition. On Tansu the high
    watermark is the start of the log's last batch + 1 (docs/architecture.md): the wait then ends
    once the drains committed into the last producer batch, which they consume and commit whole
    in practice; on Kafka it is exact."""

    def __init__(self, settings: PlatformSettings) -> None:
        binding = next(b for b in bind_domains(settings) if b.domain == SensorContract.domain)
        self.topics = list(binding.topics)
        self.consumer_name = settings.drain_consumer
        self.config = {**settings.kafka_client_config(), "group.id": f"{settings.drain_consumer}-finaliser"}
        self._consumer: Consumer | None = None

    def marks(self, timeout_s: float = 5.0) -> dict[tuple[str, int], int]:
        """Each sensor partition's high watermark now (raises KafkaException when the broker does not say)."""
        if self._consumer is None:
            self._consumer = Consumer({**self.config, "enable.auto.commit": False})
        metadata = self._consumer.list_topics(timeout=timeout_s)
        marks: dict[tuple[str, int], int] = {}
        for topic in self.topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                continue  # not created yet: nothing owed
            for partition in found.partitions:
                answer = watermarks(self._consumer, TopicPartition(topic, partition), timeout_s)
                if answer is None:
                    raise KafkaException(f"no watermarks for {topic}[{partition}] within {timeout_s:g} s")
                marks[(topic, partition)] = answer[1]
        return marks

    def owed(self, conn: psycopg.Connection, marks: dict[tuple[str, int], int]) -> int:
        """Messages below `marks` the drains have not committed yet, over the partitions they have a
        stored position in (one they never stored, e.g. DRAIN_START=latest before its first new
        message, owes nothing they will ever drain)."""
        stored = {(t, p): o for t, p, o in conn.execute(_STORED, (self.consumer_name, self.topics)).fetchall()}
        return sum(max(0, high - stored[tp]) for tp, high in marks.items() if tp in stored)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


@dataclass(frozen=True)
class Drained:
    """How a wait for the drains ended: `complete` when nothing the broker held is still owed (or
    there was nothing to wait for), else why the bucket is finalised without it."""

    complete: bool
    reason: str


def build_live_job() -> dg.UnresolvedAssetJobDefinition:
    """The job the drain service runs in its own process for the hour a bucket closed in."""
    return dg.define_asset_job(
        LIVE_JOB,
        selection=dg.AssetSelection.assets(WINDOW_AGGREGATES),
        tags={LANE_TAG: "aggregates"},
        description="The window aggregates of the current hour, run by the drain service each time a bucket of the "
        "smallest window closes (AGG_FINALISE), so the bucket is final seconds later. Runs in that process, not "
        "through the queue.",
    )


def finalises_open_hour(settings: PlatformSettings) -> bool:
    """Whether the drain service takes the current hour's aggregates off the automation sensor."""
    enabled = SensorContract.domain in settings.domains_enabled
    return settings.drain_mode == "service" and settings.agg_finalise and enabled


@dataclass(frozen=True)
class Outcome:
    """What one boundary did: `ran` with the run's id and success, or why not."""

    bucket_end: datetime
    hour: datetime
    ran: bool
    reason: str
    run_id: str | None = None
    seconds: float = 0.0


class Finaliser:
    """At each end T of a bucket of the smallest window, AGG_FINALISE_DELAY_S later (for the
    readings still in flight), materialise the hour the bucket [T - window, T) lies in, unless that
    hour has no readings or is already final up to T."""

    def __init__(
        self,
        settings: PlatformSettings,
        job: dg.JobDefinition,
        instance: dg.DagsterInstance | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        backlog: Backlog | None = None,
    ) -> None:
        self.settings = settings
        self.job = job
        # None: loaded (DAGSTER_HOME) at the first run, and again after a failed load
        self.instance = instance
        self.stop = stop or threading.Event()
        self.clock = clock
        self.window_s = min(settings.windows)
        self.delay = timedelta(seconds=settings.agg_finalise_delay_s)
        self.outcomes: list[Outcome] = []  # the last few, for the log and tests
        # None: finalise at the delay alone; else first wait (at most a window) for the drains to
        # commit what the broker held then
        self.backlog = backlog
        # the first run of a process is full (a restart trusts nothing it finds); after it the hour's
        # state in the database says what to trust (`finalise_hour`), whether or not a run failed: a
        # run that failed before its write left the position as it was, and one whose blocking check
        # failed wrote its buckets (so a check failing persistently does not make every run full)
        self.incremental = False
        self._thread: threading.Thread | None = None

    def latest_due(self, now: datetime) -> datetime:
        """The latest bucket end T with T + delay <= now."""
        return floor_to(now - self.delay, self.window_s)

    def wait_drained(self, limit_s: float) -> Drained:
        """Wait until the sensor drains have committed every message the broker held when this was
        called (so every reading produced before then is in raw), at most `limit_s` or until `stop`.
        Why: a fixed delay after a bucket closes is too short when the drains lag (at 5,000 msg/s
        the broker alone took 13.75 s at p95 from produce to consume), and a bucket finalised with
        its readings still in flight was served final a minute early, then corrected."""
        if self.backlog is None:
            return Drained(True, "no backlog to wait for")
        try:
            marks = self.backlog.marks()
        except KafkaException as exc:
            self.backlog.close()  # a new client at the next bucket
            return Drained(False, f"the broker did not give its watermarks ({exc}): finalised at the delay")
        began = time.monotonic()
        url = self.settings.database_url.get_secret_value()
        with PostgresResource(url=url).connect() as conn:
            while (owed := self.backlog.owed(conn, marks)) > 0:
                if time.monotonic() - began >= limit_s:
                    return Drained(False, f"{owed} messages still owed after {limit_s:g} s: finalised anyway")
                if self.stop.wait(DRAINED_POLL_S):
                    return Drained(False, "stopped")
        return Drained(True, f"drained in {time.monotonic() - began:.1f} s")

    def finalise(self, bucket_end: datetime) -> Outcome:
        hour = floor_to(bucket_end - timedelta(seconds=self.window_s), 3600)
        url = self.settings.database_url.get_secret_value()
        with PostgresResource(url=url).connect() as conn:  # autocommit, UTC: as the asset's
            as_of, readings = conn.execute(_STATE, {"hour": hour}).fetchone()
            if not readings:
                return Outcome(bucket_end, hour, False, "no readings in the hour")
            if as_of is not None and as_of >= bucket_end:
                return Outcome(bucket_end, hour, False, "final already")
            # held while the run lasts, released with this (writeless) transaction however it ends
            with conn.transaction():
                locked = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (LOCK_KEY,)).fetchone()[0]
                if not locked:
                    return Outcome(bucket_end, hour, False, "another drain service is finalising")
                began = time.perf_counter()
                if self.instance is None:
                    self.instance = dg.DagsterInstance.get()
                mode = "incremental" if self.incremental else "full"
                result = self.job.execute_in_process(
                    instance=self.instance,
                    partition_key=partition_key(hour),
                    tags={FINALISED_TAG: bucket_end.isoformat(), FINALISE_MODE_TAG: mode},
                    raise_on_error=False,
                )
                seconds = time.perf_counter() - began
                self.incremental = True
        reason = "materialised" if result.success else "the run failed (see it in the Dagster UI)"
        return Outcome(bucket_end, hour, True, reason, result.run_id, seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="finalise-aggregates", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def run_forever(self) -> None:
        """Until `stop`: wait for the next boundary plus the delay, finalise its bucket. A run
        longer than the window skips the boundaries it overran (the next run covers them: it
        rewrites every bucket that closed since the hour's last run)."""
        done = self.latest_due(self.clock())
        failing = ""
        while not self.stop.is_set():
            wake = done + timedelta(seconds=self.window_s) + self.delay
            if self.stop.wait(max(0.0, (wake - self.clock()).total_seconds())):
                break
            done = self.latest_due(self.clock())
            try:
                waited = self.wait_drained(self.window_s)
                if self.stop.is_set():
                    break
                if not waited.complete:
                    log.warning("finalising the %s bucket: %s", done.time(), waited.reason)
                outcome = self.finalise(done)
            except Exception as exc:  # the database is away, or a bug: say so once, try at every boundary
                if str(exc) != failing:
                    log.error("finalising the %s bucket failed (trying at each bucket): %s", done.time(), exc)
                failing = str(exc)
                continue
            failing = ""
            self.outcomes = [*self.outcomes[-59:], outcome]
            if outcome.ran:
                level = logging.INFO if outcome.reason == "materialised" else logging.ERROR
                log.log(
                    level,
                    "window aggregates of %s: %s through %s (run %s, %.1f s)",
                    partition_key(outcome.hour),
                    outcome.reason,
                    done.time(),
                    outcome.run_id,
                    outcome.seconds,
                )


def start_finaliser(settings: PlatformSettings, stop: threading.Event) -> Finaliser | str:
    """The running finaliser of a drain service, or the one line saying why there is none."""
    if not finalises_open_hour(settings):
        return "AGG_FINALISE is off or the sensor domain is not enabled: the aggregates' automation keeps every hour"
    instance: dg.DagsterInstance | None = None
    try:
        instance = dg.DagsterInstance.get()
    except dg.DagsterError as exc:  # DAGSTER_HOME unset, not a directory, or its dagster.yaml invalid
        return (
            f"cannot finalise buckets ({exc}): set DAGSTER_HOME to the platform's Dagster instance, or "
            "AGG_FINALISE=false for this process and the code location so the automation sensor keeps the current hour"
        )
    except Exception as exc:  # its storage is unreachable for now: the finaliser loads it at each bucket until it can
        log.error("the Dagster instance does not load yet (trying at each bucket): %s", exc)
    from analytics_platform.defs import build_definitions  # the definitions, only where a finaliser runs

    # Dagster warns at each definition built with a beta parameter (backfill_policy); the code
    # location's log carries it, the drain service's log would carry it once per asset
    warnings.filterwarnings("ignore", category=BetaWarning)
    job = build_definitions(settings).resolve_job_def(LIVE_JOB)
    finaliser = Finaliser(settings, job, instance, stop, backlog=Backlog(settings))
    finaliser.start()
    return finaliser
