"""The live judges in the drain service: a pass right after each committed batch of readings, lab
results or sweep batches, instead of at the `live_anomalies` sensor's next tick.

Why: an alert went drain commit -> `live_anomalies` tick -> `alert_rules` tick -> receiver, and the
Dagster daemon starts a sensor's tick at most once per turn of its 5 s loop, so two such steps were
most of the p95 (12.6 s at demo load, over 15 s on a busy machine: docs/benchmarks.md, "Live").
The service knows when a batch has committed (`Drain.on_commit`).

A pass that found something then ticks the database's alert rules itself (`database_tick`: the
rules that need no Dagster instance, and the deliveries due), so the alert leaves seconds after
the reading, whatever the daemon is doing; the alert sensor's ticks and these take turns (an
advisory lock: a delivery is read, sent and marked outside one transaction).

The same `live_pass` as the sensor, whose passes may overlap with these (each judge's cursor row is
locked by its pass, so the second goes on from where the first ended): the sensor stays, for a
service that is down, and for DRAIN_MODE=sensor. Every LIVE_DETECT_INTERVAL_S without a commit a
pass runs anyway (samples close with the clock, not with commits).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import psycopg

from analytics_platform.contracts.lab import LabContract
from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.contracts.sweep import SweepContract
from analytics_platform.defs.alerts.sensors import database_tick
from analytics_platform.defs.anomalies.assets import anomaly_options
from analytics_platform.resources import PostgresResource
from analytics_platform.results.live_detection import LiveSummary, live_pass
from analytics_platform.settings import PlatformSettings

log = logging.getLogger(__name__)

JUDGED = {SensorContract.domain, LabContract.domain, SweepContract.domain}
RETRY_S = 5.0
# how soon an alert tick that found another tick running is tried again
TICK_RETRY_S = 0.5


class LiveJudge:
    """A thread running `live_pass` once a batch of a judged domain commits (`committed`), or every
    LIVE_DETECT_INTERVAL_S, on a connection of its own."""

    def __init__(self, settings: PlatformSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.options = anomaly_options(settings)
        self.stop = stop or threading.Event()
        self.domains = JUDGED & set(settings.domains_enabled)
        self.wake = threading.Event()
        self.passes = 0
        self.last: LiveSummary | None = None  # what the last pass found
        # what a pass found waits for an alert tick: the one this thread tried found another tick
        # running (the alert sensor's), which may have read the rules' tables before these rows
        self.alert_owed = False
        self._thread: threading.Thread | None = None

    def committed(self, domain: str) -> None:
        """The drain's `on_commit`: a batch of `domain` is in the database (runs on a drain thread:
        only wakes this one)."""
        if domain in self.domains:
            self.wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="live-judges", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def run_forever(self) -> None:
        url = self.settings.database_url.get_secret_value()
        conn: psycopg.Connection | None = None
        failing = ""
        while not self.stop.is_set():
            self.wake.wait(TICK_RETRY_S if self.alert_owed else self.settings.live_detect_interval_s)
            self.wake.clear()
            if self.stop.is_set():
                break
            try:
                if conn is None or conn.closed:
                    conn = PostgresResource(url=url).connect()  # autocommit, UTC: as the sensor's
                self.last = live_pass(conn, self.settings, self.options)
            except Exception as exc:  # the database is away, or a bug: say so once, retry
                if conn is not None:
                    conn.close()
                    conn = None
                if str(exc) != failing:
                    log.error("live judges failed (retrying every %.0f s): %s", RETRY_S, exc)
                failing = str(exc)
                self.stop.wait(RETRY_S)
                continue
            if failing:
                log.info("live judges: judging again")
            failing = ""
            self.passes += 1
            if self.last.flagged:  # the log carries the passes that found something
                log.info("live judges: %s", self.last.text)
            if self.last.flagged or self.alert_owed:
                self.alert_owed = not self._alert(conn)
        if conn is not None:
            conn.close()

    def _alert(self, conn: psycopg.Connection) -> bool:
        """Tick the database's alert rules now, so what was just found is notified without waiting
        for the alert sensor. False when another tick was running: it may have read the rules'
        tables before this pass wrote, so the tick is tried again TICK_RETRY_S later rather than
        left to the sensor's next tick (on a busy daemon, seconds to tens of seconds away)."""
        try:
            report = database_tick(conn, self.settings, datetime.now(UTC))
        except Exception as exc:  # the sensor's next tick does it; a bad alerts file is its to report
            log.error("alert tick after the live judges failed (the alert sensor's next tick does it): %s", exc)
            return True
        if report is None:
            return False
        if report.opened or report.sent or report.rule_errors:
            log.info("alerts: %s", report.summary())
        return True


def start_live_judge(settings: PlatformSettings, stop: threading.Event) -> LiveJudge | None:
    """The running judge of a drain service, or None when no judged domain is enabled."""
    judge = LiveJudge(settings, stop)
    if not judge.domains:
        return None
    judge.start()
    return judge
