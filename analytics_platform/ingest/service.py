"""The drain service: the Kafka drain as a long-lived process (`analytics-platform drain serve`,
DRAIN_MODE=service), so a reading is queryable about DRAIN_LINGER_S after it reaches the broker.

Why not only the sensors: a sensor tick is bounded (Dagster stops an evaluation after 60 s) and the
daemon takes 10-15 s between one tick ending and the next starting (recording the tick, its loop,
the next tick's set-up). A following tick makes readings fast while it runs, but the gap between
ticks is what the 95th percentile sees (measured p95 13.8 s). Here each domain and shard has a thread
that runs following passes back to back, so there is no gap to wait for.

The same `Drain` runs, so every ingest invariant holds unchanged (offsets with the rows, one
transaction per batch, advisory lock per partition, log identity checks). The one addition: each
batch also writes its report (the hours it touched and their quality counts) into
analytics.drain_reports in its own transaction (sql/15). The drain sensors, in this mode, read those
rows and report them to Dagster; so Dagster hears about exactly what was committed, even if this
process dies between a commit and the next tick. A pass ends every DRAIN_PASS_S to re-list
partitions, re-take their locks and re-read the catalogue, as a sensor tick would.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from analytics_platform.contracts.registry import DomainBinding, bind_domains, contract_config
from analytics_platform.data_quality.config import cached_checks_config
from analytics_platform.ingest.drain import Drain, DrainError, DrainReport, shard_label
from analytics_platform.settings import PlatformSettings

log = logging.getLogger(__name__)

# seconds between attempts while the broker or the database is unreachable
RETRY_S = 5.0


@dataclass
class WorkerState:
    """What one drain thread did so far (for the log line and tests)."""

    domain: str
    shard: int
    passes: int = 0
    messages: int = 0
    rows: int = 0
    rejects: int = 0
    errors: int = 0
    last_error: str = ""
    # when the thread last finished a pass or a retry wait (time.monotonic): the heartbeat's input
    beat: float = field(default_factory=time.monotonic)


class DrainService:
    """Runs a following drain per enabled domain and shard of DRAIN_SHARDS_HERE until stopped."""

    def __init__(
        self,
        settings: PlatformSettings,
        stop: threading.Event | None = None,
        on_commit: Callable[[str], None] | None = None,
    ) -> None:
        """`on_commit(domain)` is called on the drain thread after each batch of `domain` commits
        (the live judges' wake-up: defs/anomalies/live.py); it must return at once."""
        self.settings = settings
        self.stop = stop or threading.Event()
        self.on_commit = on_commit
        self.workers: list[tuple[DomainBinding, int]] = [
            (binding, shard) for binding in bind_domains(settings) for shard in settings.drain_shards_run_here()
        ]
        self.states = {(b.domain, shard): WorkerState(b.domain, shard) for b, shard in self.workers}
        self._threads: list[threading.Thread] = []

    def drain(self, binding: DomainBinding, shard: int) -> Drain:
        """The drain of one domain and shard, configured as the drain sensor configures its own."""
        settings = self.settings
        return Drain(
            binding,
            contract_config(settings),
            database_url=settings.database_url.get_secret_value(),
            kafka_config=settings.kafka_client_config(),
            consumer_name=settings.drain_consumer,
            batch_size=settings.drain_batch_size,
            poll_timeout_s=settings.drain_poll_timeout_s,
            start=settings.drain_start,
            missing_unit_is_canonical=cached_checks_config(settings.checks_config).units.missing_is_canonical,
            shard=shard,
            shards=settings.drain_shards,
            linger_s=settings.drain_linger_s,
            report_batches=True,
            on_commit=None if self.on_commit is None else lambda _batch: self.on_commit(binding.domain),
        )

    def start(self) -> None:
        for binding, shard in self.workers:
            thread = threading.Thread(
                target=self._work, args=(binding, shard), name=f"drain-{binding.domain}-{shard}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every thread to end (after `stop` is set); True when all did."""
        for thread in self._threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    def run_forever(self, heartbeat: Path | None = None) -> None:
        """Start, then block until `stop` is set and every pass has committed what it held.

        With `heartbeat`, its modification time is renewed every few seconds while every thread
        finished a pass (or a retry wait) within `stale_after_s`: the liveness signal of a
        process that serves no traffic (`analytics-platform drain check`, the chart's liveness probe).
        A thread stuck in a call no budget bounds stops the renewals, and the pod is restarted."""
        self.start()
        while True:
            if heartbeat is not None and self.healthy():
                heartbeat.touch()
            if self.stop.wait(min(5.0, self.settings.drain_pass_s)):
                break
        self.join()

    @property
    def stale_after_s(self) -> float:
        """A thread that has not finished a pass this long is stuck (a pass lasts DRAIN_PASS_S; a
        retry wait RETRY_S; a few seconds of slack for connecting and the last batch)."""
        return 3 * max(self.settings.drain_pass_s, RETRY_S) + 30

    def serve_metrics(self, port: int, host: str = "0.0.0.0") -> tuple[object, int]:
        """Serve the drain threads' counts on http://host:port/metrics (DRAIN_METRICS_PORT): a failing pass is
        only retried and logged here, so without this a drain failing for hours shows nowhere Prometheus looks.
        Returns the server (`.shutdown()` ends it) and the port it listens on (`port` 0: a free one)."""
        registry = CollectorRegistry()
        registry.register(DrainMetrics(self))
        server, _thread = start_http_server(port, host, registry=registry)
        return server, server.server_port

    def healthy(self) -> bool:
        now = time.monotonic()
        return all(now - state.beat < self.stale_after_s for state in self.states.values())

    def _work(self, binding: DomainBinding, shard: int) -> None:
        state = self.states[(binding.domain, shard)]
        label = f"{binding.domain} ({shard_label(shard, self.settings.drain_shards)})"
        drain = self.drain(binding, shard)
        while not self.stop.is_set():
            state.beat = time.monotonic()
            try:
                report = drain.run(self.settings.drain_pass_s, follow=True, stop=self.stop)
                drain.report_pass(report)
            except DrainError as exc:
                state.errors += 1
                if str(exc) != state.last_error:  # one line per new problem, not one per retry
                    log.error("%s: %s (retrying every %.0f s)", label, exc, RETRY_S)
                state.last_error = str(exc)
                self.stop.wait(RETRY_S)
                continue
            except Exception as exc:  # a bug or a database error mid-batch: the batch rolled back; go on
                state.errors += 1
                problem = f"{type(exc).__name__}: {exc}"
                if problem != state.last_error:  # its traceback once, not once per retry
                    log.exception("%s: drain pass failed; the next pass resumes from the stored offsets", label)
                state.last_error = problem
                self.stop.wait(RETRY_S)
                continue
            if state.last_error:
                log.info("%s: draining again", label)
                state.last_error = ""
            self._account(label, state, report)

    @staticmethod
    def _account(label: str, state: WorkerState, report: DrainReport) -> None:
        state.passes += 1
        state.messages += report.messages
        state.rows += report.rows
        state.rejects += report.rejects
        for reset in report.offset_resets:
            log.warning("%s: offset reset: %s (resumed at offset %d)", label, reset.describe(), reset.resumed_at)
        if report.messages:
            log.info(
                "%s: %d messages -> %d rows, %d rejects in %d batches (%.0f msg/s), max lag %.2f s",
                label,
                report.messages,
                report.rows,
                report.rejects,
                report.batches,
                report.rate,
                report.max_ingest_lag_s,
            )


class DrainMetrics(Collector):
    """The WorkerState counts of a DrainService as Prometheus counters, read at scrape time (nothing is
    added to the drain's own path)."""

    FAMILIES = (
        ("passes", "analytics_drain_passes", "Drain passes finished, by domain and shard"),
        ("messages", "analytics_drain_messages", "Kafka messages the drain service committed, by domain and shard"),
        ("rows", "analytics_drain_rows", "Raw rows the drain service stored, by domain and shard"),
        ("rejects", "analytics_drain_rejects", "Messages the drain service rejected, by domain and shard"),
        (
            "errors",
            "analytics_drain_errors",
            "Drain passes that failed (broker or database unreachable, a bug); each is retried after 5 s",
        ),
    )

    def __init__(self, service: DrainService) -> None:
        self.service = service

    def collect(self) -> Iterator[CounterMetricFamily]:
        for attribute, name, documentation in self.FAMILIES:
            family = CounterMetricFamily(name, documentation, labels=["domain", "shard"])
            for (domain, shard), state in sorted(self.service.states.items()):
                family.add_metric([domain, str(shard)], getattr(state, attribute))
            yield family


def heartbeat_age_s(path: Path) -> float | None:
    """Seconds since the drain service last renewed `path` (None: it never did)."""
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return None
