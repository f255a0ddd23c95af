"""The drain service (DRAIN_MODE=service, `analytics-platform drain serve`): the drain runs outside
Dagster all the time, each batch writes its report in its own transaction, and the drain sensors only
report those rows to Dagster. Asserted: exact rows, offsets and reports; the report exists exactly
when its batch does; a sensor tick that was not recorded is reported again; a stopped service has
committed what it held and a restarted one goes on from the stored offsets."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import dagster as dg
import pytest

from analytics_platform.alerts.config import store_rules
from analytics_platform.alerts.engine import ticking
from analytics_platform.alerts.model import Rule
from analytics_platform.defs import build_definitions
from analytics_platform.defs.anomalies.live import LiveJudge
from analytics_platform.ingest.service import DrainService
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.alerts import HttpReceiver
from analytics_platform_tests.support.edge import wait_for
from analytics_platform_tests.support.readings import KEY, body, reading
from analytics_platform_tests.support.stack import DatabaseHandle, domain_drain, domain_topic, produce

STATE = (
    "SELECT (SELECT count(*) FROM analytics.kafka_landing), "
    "(SELECT count(*) FROM analytics.raw_sensor_readings), "
    "(SELECT count(*) FROM analytics.rejected_message), "
    "(SELECT coalesce(sum(next_offset), 0) FROM analytics.worker_checkpoints)"
)
# what the stored reports of the sensor domain add up to
REPORTED = (
    "SELECT count(*), coalesce(sum((report->>'messages')::int), 0), coalesce(sum((report->>'rows')::int), 0), "
    "coalesce(sum((report->>'rejects')::int), 0) FROM analytics.drain_reports WHERE domain = 'sensor'"
)


def state(database: DatabaseHandle) -> tuple[int, ...]:
    return tuple(database.query(STATE)[0])


def send(settings: PlatformSettings, *values: bytes) -> None:
    produce(settings.kafka_brokers, domain_topic(settings), [(KEY, v) for v in values], partition=0)


@pytest.fixture
def service_settings(settings: PlatformSettings) -> PlatformSettings:
    # short passes, so the test crosses pass boundaries (re-claim, re-read of the stored offsets)
    return settings.model_copy(update={"drain_mode": "service", "drain_pass_s": 2.0, "drain_linger_s": 0.2})


@pytest.fixture
def service(service_settings: PlatformSettings) -> Iterator[DrainService]:
    running = DrainService(service_settings)
    running.start()
    yield running
    running.stop.set()
    assert running.join(60), "the drain service did not stop"


def test_each_batch_lands_with_its_report_and_the_sensor_reports_it_at_least_once(
    service_settings: PlatformSettings, database: DatabaseHandle, instance: dg.DagsterInstance, service: DrainService
) -> None:
    send(
        service_settings,
        reading("2025-08-20T03:10:00Z", 21.0, "e-1"),
        reading("2025-08-20T03:20:00Z", 22.0, "e-2"),
        reading("2025-08-20T04:05:00Z", 23.0, "e-3"),
        b"{not json",
    )
    # 4 landed, 3 rows, 1 reject, the next offset of partition 0 is 4
    wait_for(lambda: state(database) == (4, 3, 1, 4), 60, "the service committed the four messages")
    assert database.query(REPORTED)[0][1:] == (4, 3, 1)

    defs = build_definitions(service_settings, secrets_from_env=False)
    sensor = defs.resolve_sensor_def("drain_sensor")

    def tick(cursor: str | None) -> dg.SensorResult:
        return sensor(dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor))

    first = tick(None)
    landing = [e for e in first.asset_events if e.asset_key == dg.AssetKey("kafka_landing")]
    assert [(e.metadata["messages"].value, e.metadata["rows"].value, e.metadata["rejects"].value) for e in landing] == [
        (4, 3, 1)
    ]
    assert landing[0].metadata["rejects_without_time"].value == 1
    raw = [
        (e.partition, e.metadata["rows"].value)
        for e in first.asset_events
        if isinstance(e, dg.AssetMaterialization) and e.asset_key == dg.AssetKey("raw_sensor_readings")
    ]
    assert raw == [("2025-08-20-03:00", 2), ("2025-08-20-04:00", 1)]
    reported = json.loads(first.cursor)["reported"]
    assert sorted(reported) == [r[0] for r in database.query("SELECT id FROM analytics.drain_reports ORDER BY id")]

    # the daemon lost that tick (its cursor was never stored): the next tick reports the same again
    again = tick(None)
    assert sorted(
        e.partition
        for e in again.asset_events
        if isinstance(e, dg.AssetMaterialization) and e.asset_key == dg.AssetKey("raw_sensor_readings")
    ) == [
        "2025-08-20-03:00",
        "2025-08-20-04:00",
    ]
    # the tick after a recorded one deletes what that one reported, and has nothing new
    after = tick(first.cursor)
    assert after.asset_events == []
    assert after.skip_reason is not None and "drain service" in (after.skip_reason.skip_message or "")
    assert database.query(REPORTED)[0] == (0, 0, 0, 0)

    send(service_settings, reading("2025-08-20T04:06:00Z", 24.0, "e-4"))
    wait_for(lambda: state(database) == (5, 4, 1, 5), 60, "the fifth message committed")
    later = tick(after.cursor)
    assert [
        (e.partition, e.metadata["rows"].value)
        for e in later.asset_events
        if isinstance(e, dg.AssetMaterialization) and e.asset_key == dg.AssetKey("raw_sensor_readings")
    ] == [("2025-08-20-04:00", 1)]


def test_a_crash_inside_the_batch_leaves_neither_rows_nor_report(
    service_settings: PlatformSettings, database: DatabaseHandle
) -> None:
    def crash() -> None:
        raise RuntimeError("injected crash after rows were written, before offsets and report")

    send(service_settings, reading("2025-08-20T03:10:00Z", 21.0, "e-1"), reading("2025-08-20T03:11:00Z", 22.0, "e-2"))
    drain = domain_drain(service_settings, report_batches=True)
    drain.before_checkpoint = crash
    with pytest.raises(RuntimeError, match="injected crash"):
        drain.run(budget_s=30)
    assert state(database) == (0, 0, 0, 0)
    assert database.query(REPORTED)[0] == (0, 0, 0, 0)

    report = domain_drain(service_settings, report_batches=True).run(budget_s=30)
    assert (report.messages, report.rows, report.batches) == (2, 2, 1)
    assert state(database) == (2, 2, 0, 2)
    assert database.query(REPORTED)[0] == (1, 2, 2, 0)


def test_a_stopped_service_committed_what_it_held_and_a_restart_goes_on_exactly(
    service_settings: PlatformSettings, database: DatabaseHandle
) -> None:
    first = DrainService(service_settings)
    first.start()
    send(service_settings, *(reading(f"2025-08-20T03:{m:02d}:00Z", 20.0 + m, f"e-{m}") for m in range(3)))
    wait_for(lambda: state(database) == (3, 3, 0, 3), 60, "three readings committed")
    first.stop.set()
    assert first.join(60)
    assert first.states[("sensor", 0)].rows == 3

    send(service_settings, *(reading(f"2025-08-20T03:{m:02d}:00Z", 20.0 + m, f"e-{m}") for m in range(3, 6)))
    assert state(database) == (3, 3, 0, 3)  # nothing reads while it is stopped
    second = DrainService(service_settings)
    second.start()
    try:
        wait_for(lambda: state(database) == (6, 6, 0, 6), 60, "the restarted service read the other three")
    finally:
        second.stop.set()
        assert second.join(60)
    assert database.query("SELECT kafka_offset, value FROM analytics.raw_sensor_readings ORDER BY kafka_offset") == [
        (m, 20.0 + m) for m in range(6)
    ]
    assert database.query(REPORTED)[0][1:] == (6, 6, 0)


def test_the_cli_refuses_to_serve_while_the_sensors_drain(settings: PlatformSettings) -> None:
    env = {"DATABASE_URL": settings.database_url.get_secret_value(), "DRAIN_MODE": "sensor", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "analytics_platform.cli", "drain", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: DRAIN_MODE is 'sensor'")
    assert "Traceback" not in done.stderr


def test_back_in_sensor_mode_the_sensor_reports_what_the_service_left(
    service_settings: PlatformSettings, database: DatabaseHandle, instance: dg.DagsterInstance
) -> None:
    """A deployment going back from DRAIN_MODE=service to sensor: batches the service committed but
    no report sensor reported yet are reported by the draining sensor's next tick, then deleted."""
    send(service_settings, reading("2025-08-20T03:10:00Z", 21.0, "e-1"), reading("2025-08-20T05:10:00Z", 22.0, "e-2"))
    domain_drain(service_settings, report_batches=True).run(budget_s=30)
    assert database.query(REPORTED)[0][1:] == (2, 2, 0)

    sensor_mode = service_settings.model_copy(update={"drain_mode": "sensor"})
    send(sensor_mode, reading("2025-08-20T04:10:00Z", 23.0, "e-3"))
    defs = build_definitions(sensor_mode, secrets_from_env=False)
    sensor = defs.resolve_sensor_def("drain_sensor")
    first = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))
    raw = sorted(
        (e.partition, e.metadata["rows"].value)
        for e in first.asset_events
        if isinstance(e, dg.AssetMaterialization) and e.asset_key == dg.AssetKey("raw_sensor_readings")
    )
    # 03:00 and 05:00 from the service's reports, 04:00 drained by this tick
    assert raw == [("2025-08-20-03:00", 1), ("2025-08-20-04:00", 1), ("2025-08-20-05:00", 1)]
    sensor(dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=first.cursor))
    assert database.query(REPORTED)[0] == (0, 0, 0, 0)


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpReceiver]:
    """A Slack-shaped receiver behind the alerts file's ops-slack channel (ALERT_SLACK_URL)."""
    receiver = HttpReceiver()
    receiver.start()
    query = ":message=text&:title=&:version=&:attachments=&:type="
    monkeypatch.setenv("ALERT_SLACK_URL", f"json://127.0.0.1:{receiver.port}/slack?{query}")
    yield receiver
    receiver.stop()


@contextmanager
def judging_service(
    service_settings: PlatformSettings, database: DatabaseHandle
) -> Iterator[tuple[LiveJudge, datetime]]:
    """The drain service with its live judge and one anomaly rule, the judge's cursors placed by a
    first pass (history is the hour's business) that a lab batch woke; stopped at the end. A minute
    between passes without commits: only a commit (or a retry) can explain a pass within a test."""
    with database.connect(database.pipeline_url) as conn:
        store_rules(conn, [Rule("anomaly-critical", "anomaly", params={"min_severity": 3}, channels=("ops-slack",))])
    judge_settings = service_settings.model_copy(update={"live_detect_interval_s": 60})
    stop = threading.Event()
    judge = LiveJudge(judge_settings, stop)
    running = DrainService(judge_settings, stop, on_commit=judge.committed)
    judge.start()
    try:
        running.start()
        now = datetime.now(UTC).replace(microsecond=0)
        lab = body(
            now.isoformat().replace("+00:00", "Z"),
            machine_id="lab-f1",
            station_id="lab-f1",
            sample_id="S-0",
            analyte="pH",
            value=6.8,
        )
        produce(service_settings.kafka_brokers, domain_topic(service_settings, "lab"), [("t1-f1-lab-f1", lab)])
        wait_for(lambda: judge.passes >= 1, 60, "the judges' first pass, woken by the lab batch")
        yield judge, now
    finally:
        stop.set()
        assert running.join(60) and judge.join(60)


def test_the_service_judges_each_committed_batch_live_and_alerts_without_a_sensor_tick(
    service_settings: PlatformSettings, database: DatabaseHandle, slack: HttpReceiver
) -> None:
    with judging_service(service_settings, database) as (judge, now):
        # the readings' judge runs in every pass of the enabled domains: its cursor is placed
        assert database.scalar("SELECT count(*) FROM analytics.live_detection_cursor WHERE judge = 'limits'") == 1
        passes = judge.passes
        # a reading far above the catalogue's plausible maximum (temp: 400): an anomaly at once
        send(service_settings, reading(now.isoformat().replace("+00:00", "Z"), 1000.0, "hot"))
        wait_for(
            lambda: database.scalar("SELECT count(*) FROM analytics.analytics_anomaly") == 1,
            60,
            "the live anomaly of the committed reading",
        )
        # ... and its alert, sent by the same thread's tick of the database's rules, exactly once
        wait_for(lambda: slack.requests, 60, "the alert at the receiver")
    assert judge.passes > passes
    assert database.query(
        "SELECT machine_id, method, severity, status, observed, detected_live_at IS NOT NULL "
        "FROM analytics.analytics_anomaly"
    ) == [("mc-01", "range", 4, "open", 1000.0, True)]
    [(_, message)] = slack.requests
    assert "Where: t1/f1/mc-01\n" in message["text"] and "; observed 1000.0; expected 400.0; " in message["text"]
    assert database.query("SELECT rule_name, transition, status FROM analytics.alert_log") == [
        ("anomaly-critical", "open", "sent")
    ]


def test_an_alert_tick_that_found_another_running_is_tried_again_without_a_new_commit(
    service_settings: PlatformSettings, database: DatabaseHandle, slack: HttpReceiver
) -> None:
    """The judge's alert tick skips while another tick (the alert sensor's) holds the tick's lock;
    that tick may have read the rules' tables before the judge wrote, so the judge tries again
    shortly instead of leaving its alert to the sensor's next tick (seconds to tens of seconds on a
    busy daemon). Exactly one notification still."""
    with judging_service(service_settings, database) as (judge, now):
        with database.connect() as other, ticking(other) as held:  # the alert sensor's tick, say
            assert held
            send(service_settings, reading(now.isoformat().replace("+00:00", "Z"), 1000.0, "hot"))
            wait_for(lambda: judge.alert_owed, 60, "the judge's alert tick finding the other one running")
            assert database.scalar("SELECT count(*) FROM analytics.analytics_anomaly") == 1
            assert slack.requests == []
        wait_for(lambda: slack.requests, 60, "the alert, from the judge's retry once the other tick ended")
        wait_for(lambda: not judge.alert_owed, 60, "the judge's retry done")
    [(_, message)] = slack.requests
    assert "Where: t1/f1/mc-01\n" in message["text"] and "; observed 1000.0; expected 400.0; " in message["text"]
    assert database.query("SELECT rule_name, transition, status FROM analytics.alert_log") == [
        ("anomaly-critical", "open", "sent")
    ]
