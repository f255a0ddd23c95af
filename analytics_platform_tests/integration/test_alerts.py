"""Alerts end to end with real receivers: a local HTTP server standing in for the Slack and webhook
endpoints (it records every request) and a local SMTP server (aiosmtpd), both on 127.0.0.1,
against a real PostgreSQL. Notifications go out through Apprise exactly as in production; only
the URLs point here. Time is passed explicitly (`now`), so retries and backoff need no sleeping.
The receivers and the tick are support/alerts.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from analytics_platform.alerts.config import load_alert_config, store_mutes, store_rules
from analytics_platform.alerts.engine import ticking
from analytics_platform.alerts.model import Condition, Mute, Observation, Rule
from analytics_platform.defs import build_definitions
from analytics_platform.defs.alerts import sensors as alert_sensors
from analytics_platform.devstack.processes import free_port
from analytics_platform.results.anomalies import resolve_anomaly
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.alerts import (
    FAIL_RATE,
    NOW,
    POLICY,
    RULE,
    UI,
    HttpReceiver,
    MailReceiver,
    environ,
    insert_anomaly,
    tick,
)
from analytics_platform_tests.support.readings import KEY, drain, reading
from analytics_platform_tests.support.stack import DatabaseHandle, domain_topic, produce


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def mail_receiver() -> Iterator[MailReceiver]:
    receiver = MailReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def log(db: DatabaseHandle) -> list[tuple]:
    return db.query("SELECT transition, channel, status, attempts, machine_id FROM analytics.alert_log ORDER BY log_id")


def test_one_notification_per_channel_when_it_opens_none_while_open_one_when_it_resolves(
    database: DatabaseHandle, http_receiver: HttpReceiver, mail_receiver: MailReceiver
) -> None:
    env = environ(http_receiver, mail_receiver)
    with database.connect() as conn:
        store_rules(conn, [RULE])
    # two consecutive anomalous samples of one series (two methods): one event, one alert
    anomaly = insert_anomaly(database, "mc-01", 4, NOW - timedelta(minutes=10))
    second = insert_anomaly(database, "mc-01", 3, NOW - timedelta(minutes=9), "shift")
    insert_anomaly(database, "mc-03", 2, NOW - timedelta(minutes=5))  # below the rule's severity

    report = tick(database, NOW, env)
    assert (report.opened, report.queued, report.sent, report.failed) == (1, 3, 3, 0)
    fingerprint = "anomaly-critical:t1/f1/mc-01/s-temp/temp/event/2026-03-02T09:50:00Z"
    summary = "temperature anomaly event on temp: 2 anomalies (deviation, shift), peak severity 4"
    title = f"[CRITICAL] t1/f1/mc-01: {summary}"
    body = [
        f"What: {summary} (rule anomaly-critical, anomaly)",
        "Where: t1/f1/mc-01",
        "When: 2026-03-02T09:50:00Z; detected 2026-03-02T10:00:00Z",
        f"How bad: critical; event_id {anomaly}; anomalies 2; methods deviation, shift; severity 4; "
        "peak_time 2026-03-02T09:50:00Z; observed 95.0; expected 65.0; start 2026-03-02T09:50:00Z; "
        "end 2026-03-02T09:52:00Z; sensor s-temp",
        f"Link: {UI}/assets/reading_anomalies?view=partitions&partition=2026-03-02-09:00",
        f"Fingerprint: {fingerprint}",
    ]
    assert http_receiver.requests == [
        ("/slack", {"text": "\n".join(body)}),
        (
            "/hook",
            {
                "version": "1.0",
                "title": title,
                "message": "\n".join(body),
                "attachments": [],
                "type": "info",
                "rule": "anomaly-critical",
                "fingerprint": fingerprint,
                "transition": "open",
                "severity": "critical",
                "tenant_id": "t1",
                "factory_id": "f1",
                "machine_id": "mc-01",
                "link": body[4].removeprefix("Link: "),
            },
        ),
    ]
    assert [m["Subject"] for m in mail_receiver.messages] == [title]
    assert mail_receiver.messages[0]["To"] == "ops@plant.test"
    assert mail_receiver.messages[0].get_body(("plain",)).get_content().strip().splitlines() == body

    report = tick(database, NOW + timedelta(seconds=30), env)  # still open: nothing new
    assert (report.opened, report.queued, report.sent) == (0, 0, 0)
    assert len(http_receiver.requests) == 2 and len(mail_receiver.messages) == 1

    with database.connect(database.pipeline_url) as conn:
        assert resolve_anomaly(conn, anomaly, "bearing replaced", "ops")
    report = tick(database, NOW + timedelta(minutes=1), env)  # one row of the event is still open
    assert (report.resolved, report.opened, report.queued) == (0, 0, 0)
    with database.connect(database.pipeline_url) as conn:
        assert resolve_anomaly(conn, second, "bearing replaced", "ops")
    report = tick(database, NOW + timedelta(minutes=2), env)
    assert (report.resolved, report.queued, report.sent) == (1, 3, 3)
    resolved_title = f"[RESOLVED] t1/f1/mc-01: {summary}"
    assert [m["Subject"] for m in mail_receiver.messages] == [title, resolved_title]
    hook = [b for p, b in http_receiver.requests if p == "/hook"]
    assert [(b["title"], b["transition"], b["severity"]) for b in hook] == [
        (title, "open", "critical"),
        (resolved_title, "resolve", "info"),
    ]
    assert len(http_receiver.requests) == 4
    report = tick(database, NOW + timedelta(minutes=3), env)
    assert (report.opened, report.resolved, report.queued) == (0, 0, 0)
    assert log(database) == [
        ("open", "slack", "sent", 1, "mc-01"),
        ("open", "hook", "sent", 1, "mc-01"),
        ("open", "mail", "sent", 1, "mc-01"),
        ("resolve", "slack", "sent", 1, "mc-01"),
        ("resolve", "hook", "sent", 1, "mc-01"),
        ("resolve", "mail", "sent", 1, "mc-01"),
    ]
    assert database.query("SELECT fingerprint, state, times_opened FROM analytics.alert_conditions") == [
        (fingerprint, "resolved", 1)
    ]


def test_a_muted_machine_is_logged_as_muted_and_nothing_is_sent(
    database: DatabaseHandle, http_receiver: HttpReceiver, mail_receiver: MailReceiver
) -> None:
    env = environ(http_receiver, mail_receiver)
    with database.connect() as conn:
        store_rules(conn, [RULE])
        (mute_id,) = store_mutes(
            conn, [Mute(NOW - timedelta(hours=1), NOW + timedelta(hours=2), "planned maintenance", machine_id="mc-02")]
        )
    insert_anomaly(database, "mc-02", 5, NOW - timedelta(minutes=3))

    report = tick(database, NOW, env)
    assert (report.opened, report.muted, report.queued, report.sent) == (1, 3, 0, 0)
    assert http_receiver.requests == [] and mail_receiver.messages == []
    assert database.query(
        "SELECT channel, status, mute_id, error, next_attempt_at FROM analytics.alert_log ORDER BY log_id"
    ) == [(c, "muted", mute_id, "muted: planned maintenance", None) for c in ("slack", "hook", "mail")]
    assert tick(database, NOW + timedelta(minutes=1), env).muted == 0  # still open: not even muted again


def test_a_receiver_that_is_down_is_retried_with_backoff_and_the_others_still_deliver(
    database: DatabaseHandle, http_receiver: HttpReceiver, mail_receiver: MailReceiver
) -> None:
    env = environ(http_receiver, mail_receiver)
    with database.connect() as conn:
        store_rules(conn, [RULE])
    insert_anomaly(database, "mc-01", 3, NOW - timedelta(minutes=1))
    http_receiver.stop()

    report = tick(database, NOW, env)
    assert (report.opened, report.sent, report.failed) == (1, 1, 2)  # the mail went; both HTTP channels failed
    rows = database.query(
        "SELECT channel, status, attempts, next_attempt_at, error FROM analytics.alert_log ORDER BY log_id"
    )
    assert [(c, s, a, n) for c, s, a, n, _ in rows] == [
        ("slack", "failed", 1, NOW + timedelta(seconds=30)),
        ("hook", "failed", 1, NOW + timedelta(seconds=30)),
        ("mail", "sent", 1, None),
    ]
    assert all("127.0.0.1" in e and "Connection" in e for _, _, _, _, e in rows[:2])
    assert all(str(http_receiver.port) not in e for _, _, _, _, e in rows[:2])

    assert tick(database, NOW + timedelta(seconds=10), env).failed == 0  # not due yet: no attempt
    report = tick(database, NOW + timedelta(seconds=30), env)  # due, still down: second failure, doubled delay
    assert report.failed == 2
    assert database.query("SELECT attempts, next_attempt_at FROM analytics.alert_log WHERE channel = 'hook'") == [
        (2, NOW + timedelta(seconds=90))
    ]

    http_receiver.start()
    report = tick(database, NOW + timedelta(seconds=90), env)
    assert (report.sent, report.failed, report.opened) == (2, 0, 0)
    assert sorted(p for p, _ in http_receiver.requests) == ["/hook", "/slack"]
    assert log(database) == [
        ("open", "slack", "sent", 3, "mc-01"),
        ("open", "hook", "sent", 3, "mc-01"),
        ("open", "mail", "sent", 1, "mc-01"),
    ]
    assert len(mail_receiver.messages) == 1


def test_a_delivery_that_keeps_failing_is_given_up_and_an_unset_channel_is_logged_unconfigured(
    database: DatabaseHandle, mail_receiver: MailReceiver
) -> None:
    env = {"ALERT_TEST_HOOK": f"json://127.0.0.1:{free_port()}/hook"}  # nothing listens there
    with database.connect() as conn:
        store_rules(conn, [RULE])
    insert_anomaly(database, "mc-01", 4, NOW - timedelta(minutes=1))
    at = NOW
    for _ in range(POLICY.max_attempts):
        tick(database, at, env)
        at += timedelta(seconds=POLICY.retry_max_s)
    assert database.query("SELECT channel, status, attempts, error FROM analytics.alert_log ORDER BY log_id")[::2] == [
        ("slack", "unconfigured", 0, "ALERT_TEST_SLACK is not set (the slack channel 'slack' has no URL)"),
        ("mail", "unconfigured", 0, "ALERT_TEST_MAIL is not set (the email channel 'mail' has no URL)"),
    ]
    assert database.query(
        "SELECT status, attempts, next_attempt_at FROM analytics.alert_log WHERE channel = 'hook'"
    ) == [("gave_up", POLICY.max_attempts, None)]
    assert mail_receiver.messages == []


def test_device_offline_fail_rate_and_lab_rules_open_and_resolve_from_their_tables(
    database: DatabaseHandle, http_receiver: HttpReceiver, mail_receiver: MailReceiver
) -> None:
    env = environ(http_receiver, mail_receiver)
    rules = [
        Rule("offline", "device_offline", params={"minutes": 10, "lookback_hours": 168}, channels=("hook",)),
        FAIL_RATE,
        Rule(
            "lab",
            "lab_out_of_spec",
            params={"lookback_hours": 24, "severity": "critical"},
            channels=("hook",),
            notify_resolve=False,
        ),
    ]
    health = [
        ("mc-01", NOW - timedelta(minutes=30), "online"),
        ("mc-01", NOW - timedelta(minutes=12), "offline"),  # offline 12 min -> alert
        ("mc-01", NOW - timedelta(minutes=6), "offline"),
        ("mc-02", NOW - timedelta(minutes=30), "online"),
        ("mc-02", NOW - timedelta(minutes=5), "offline"),  # offline 5 min -> not yet
        ("mc-03", NOW - timedelta(minutes=25), "online"),  # silent for 25 min -> alert
        ("mc-04", NOW - timedelta(minutes=2), "online"),
    ]
    with database.connect() as conn:
        conn.cursor().executemany(
            """INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, status,
                   schema_version, dedup_key, topic, kafka_partition, kafka_offset)
               VALUES (%s, 't1', 'f1', %s, %s, 1, %s, 'device.health', 0, 0)""",
            [(ts, m, s, f"{m}-{ts.isoformat()}") for m, ts, s in health],
        )
        # sweep verdicts in 5-minute buckets: mc-01 3 failed of 10 (30 %), mc-02 1 of 10
        conn.cursor().executemany(
            """INSERT INTO analytics.analytics_event_rollup (bucket_start, bucket_end, window_s, tenant_id,
                   factory_id, machine_id, event_type, subject, count_n, pass_n, fail_n, fail_rate)
               VALUES (%s, %s, 300, 't1', 'f1', %s, 'sweep_batch', '', 5, %s, %s, %s)""",
            [
                (NOW - timedelta(minutes=m + 5), NOW - timedelta(minutes=m), machine, 5 - f, f, f / 5)
                for machine, fails in (("mc-01", (2, 1)), ("mc-02", (1, 0)))
                for m, f in zip((10, 20), fails, strict=True)
            ],
        )
        conn.execute(
            """INSERT INTO analytics.analytics_event (time, tenant_id, factory_id, machine_id, event_type, event_key,
                   domain, value, passed, details)
               VALUES (%s, 't1', 'f1', 'lab-1', 'lab_result', 'k1', 'lab', 9.1, false,
                       '{"analyte": "ph", "unit": "pH", "sample_id": "S-7", "lower_limit": 6.5, "upper_limit": 8.5}'),
                      (%s, 't1', 'f1', 'lab-1', 'lab_result', 'k2', 'lab', 7.0, true, '{"analyte": "ph"}')""",
            (NOW - timedelta(hours=2), NOW - timedelta(hours=2)),
        )
    report = tick(database, NOW, env, rules)
    assert report.rule_errors == {}
    titles = sorted(b["title"] for _, b in http_receiver.requests)
    assert titles == [
        "[CRITICAL] t1/f1/lab-1: lab ph = 9.1 pH outside spec [6.5, 8.5] (sample S-7)",
        "[CRITICAL] t1/f1/mc-01: device offline for 12 min",
        "[CRITICAL] t1/f1/mc-03: device offline for 25 min (no data received)",
        "[WARNING] t1/f1/mc-01: sweep_batch fail rate 30% over 60 min (threshold 20%)",
    ]
    with database.connect() as conn:  # mc-01 comes back; mc-03 speaks again
        conn.execute(
            """INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, status,
                   schema_version, dedup_key, topic, kafka_partition, kafka_offset)
               VALUES (%s, 't1', 'f1', 'mc-01', 'online', 1, 'back-1', 'device.health', 0, 0),
                      (%s, 't1', 'f1', 'mc-03', 'online', 1, 'back-3', 'device.health', 0, 0)""",
            (NOW + timedelta(minutes=1), NOW + timedelta(minutes=1)),
        )
    report = tick(database, NOW + timedelta(minutes=2), env, rules)
    assert (report.resolved, report.opened) == (2, 0)
    assert sorted(b["title"] for _, b in http_receiver.requests[4:]) == [
        "[RESOLVED] t1/f1/mc-01: device offline for 12 min",
        "[RESOLVED] t1/f1/mc-03: device offline for 25 min (no data received)",
    ]
    report = tick(database, NOW + timedelta(hours=23), env, rules[1:])  # (every machine is silent by then)
    assert (report.expired, report.resolved, report.queued) == (1, 1, 1)  # the lab result ages out silently
    assert [b["title"] for _, b in http_receiver.requests[6:]] == [
        "[RESOLVED] t1/f1/mc-01: sweep_batch fail rate 30% over 60 min (threshold 20%)"
    ]


ALERTS_FILE = """
channels:
  hook: {kind: webhook, url_env: ALERT_TEST_HOOK}
rules:
  - {name: check-failed, kind: check_failed, channels: [hook]}
  - {name: run-failed, kind: run_failed, channels: [hook], notify_resolve: false}
"""


def test_a_contract_violation_from_kafka_fails_the_check_blocks_downstream_and_alerts(
    database: DatabaseHandle,
    settings: PlatformSettings,
    instance: dg.DagsterInstance,
    http_receiver: HttpReceiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An out-of-range temperature produced to the real broker: the live check fails at the drain
    tick, re-materialising the hour fails its blocking check so the aggregates do not run, and the
    alert sensor (as the daemon runs it) notifies the failing checks and the failed run, once."""
    (tmp_path / "alerts.yaml").write_text(ALERTS_FILE)
    settings = settings.model_copy(update={"alerts_config": tmp_path / "alerts.yaml"})
    defs = build_definitions(settings, secrets_from_env=False)
    monkeypatch.setenv("ALERT_TEST_HOOK", f"json://127.0.0.1:{http_receiver.port}/hook")
    with database.connect() as conn:
        assert load_alert_config(conn, settings.alerts_config) == (2, 0)

    messages = [reading(f"2025-08-20T05:{m:02d}:00Z", 60.0 + m, f"r{m}") for m in range(0, 60, 10)]
    messages.append(reading("2025-08-20T05:30:30Z", 5000.0, "r-bad"))  # temp plausible range is -60..400 degC
    produce(settings.kafka_brokers, domain_topic(settings, "sensor"), [(KEY, m) for m in messages])
    assert drain(defs, instance, ("sensor",)) == {"raw_sensor_readings": ["2025-08-20-05:00"]}

    def alert_tick() -> list[str]:
        before = len(http_receiver.requests)
        sensor = defs.resolve_sensor_def("alert_rules")
        result = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs))
        assert "rule(s)" in str(result.skip_message)
        return [body["title"] for _, body in http_receiver.requests[before:]]

    assert alert_tick() == ["[CRITICAL] platform: asset check values_in_range on raw_sensor_readings failed (live)"]
    assert alert_tick() == []  # still failing: no second notification

    result = dg.materialize(
        [defs.resolve_assets_def("raw_sensor_readings"), defs.resolve_assets_def("sensor_window_aggregates")],
        partition_key="2025-08-20-05:00",
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"raw_sensor_readings"}  # recorded, but its blocking check stopped the aggregates
    assert database.scalar("SELECT count(*) FROM analytics.analytics_agg") == 0
    titles = alert_tick()
    assert sorted(titles) == [
        "[CRITICAL] platform: asset check values_in_range on raw_sensor_readings failed (2025-08-20-05:00)",
        "[CRITICAL] platform: run of __ephemeral_asset_job__ at step raw_sensor_readings failed "
        "(partition 2025-08-20-05:00)",
    ]
    hook = {b["fingerprint"]: b for _, b in http_receiver.requests}
    check = hook["check-failed:raw_sensor_readings/values_in_range/2025-08-20-05:00"]
    assert (
        check["link"]
        == f"{settings.dagster_ui_url}/assets/raw_sensor_readings?view=partitions&partition=2025-08-20-05:00"
    )
    assert "5000" in check["message"]
    assert alert_tick() == []

    # clean readings arrive: the live evaluation passes and its condition resolves; the failed hour
    # was not judged again, so it stays open even once its evaluation is beyond the history read
    monkeypatch.setattr(alert_sensors, "CHECK_HISTORY", 1)
    produce(
        settings.kafka_brokers, domain_topic(settings, "sensor"), [(KEY, reading("2025-08-20T06:00:00Z", 61.0, "r-ok"))]
    )
    assert drain(defs, instance, ("sensor",)) == {"raw_sensor_readings": ["2025-08-20-06:00"]}
    assert alert_tick() == ["[RESOLVED] platform: asset check values_in_range on raw_sensor_readings failed (live)"]
    assert database.query("SELECT fingerprint, state FROM analytics.alert_conditions ORDER BY fingerprint")[:2] == [
        ("check-failed:raw_sensor_readings/values_in_range/2025-08-20-05:00", "open"),
        ("check-failed:raw_sensor_readings/values_in_range/live", "resolved"),
    ]
    assert database.query("SELECT rule_name, transition, channel, status FROM analytics.alert_log ORDER BY log_id") == [
        ("check-failed", "open", "hook", "sent"),
        ("check-failed", "open", "hook", "sent"),
        ("run-failed", "open", "hook", "sent"),
        ("check-failed", "resolve", "hook", "sent"),
    ]


def test_the_alert_sensor_reads_the_dagster_history_with_the_tick_free_and_applies_it_in_the_tick(
    database: DatabaseHandle,
    settings: PlatformSettings,
    instance: dg.DagsterInstance,
    http_receiver: HttpReceiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rules on asset checks and runs read the Dagster instance (10-22 s a tick at 5,000 msg/s):
    the tick's lock is free meanwhile, so the drain service's tick, which skips while another holds
    it, does not wait for those reads; what they observed (or the error they raised) is applied and
    reported by the tick as before. A condition the drain service's tick opened meanwhile stays open:
    the database rules are judged at the moment the lock is held, not when the sensor's tick began
    (judged at that earlier moment, a newer anomaly is not there yet and its condition "resolved",
    to be re-opened and notified again by the next tick)."""
    anomaly_rule = "  - {name: anomaly-critical, kind: anomaly, params: {min_severity: 3}, channels: [hook]}\n"
    (tmp_path / "alerts.yaml").write_text(ALERTS_FILE + anomaly_rule)
    settings = settings.model_copy(update={"alerts_config": tmp_path / "alerts.yaml"})
    defs = build_definitions(settings, secrets_from_env=False)
    monkeypatch.setenv("ALERT_TEST_HOOK", f"json://127.0.0.1:{http_receiver.port}/hook")
    with database.connect() as conn:
        assert load_alert_config(conn, settings.alerts_config) == (3, 0)
    tick_free: list[bool] = []

    with database.connect() as probe:

        def failing_check(*_args: object) -> Observation:
            with ticking(probe, wait=False) as free:
                tick_free.append(free)
            # meanwhile the live judge writes an anomaly and the drain service's tick notifies it
            insert_anomaly(database, "mc-07", 4, datetime.now(UTC))
            assert alert_sensors.database_tick(probe, settings, datetime.now(UTC)).opened == 1
            condition = Condition("check-failed:a/b/live", "critical", "asset check b on a failed (live)")
            return Observation([condition], known=frozenset({condition.fingerprint}))

        def unreadable_runs(*_args: object) -> Observation:
            with ticking(probe, wait=False) as free:
                tick_free.append(free)
            raise RuntimeError("run storage away")

        monkeypatch.setattr(alert_sensors, "check_conditions", failing_check)
        monkeypatch.setattr(alert_sensors, "run_conditions", unreadable_runs)
        sensor = defs.resolve_sensor_def("alert_rules")
        result = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs))

    assert tick_free == [True, True]
    titles = [body["title"] for _, body in http_receiver.requests]
    assert len(titles) == 2 and titles[1] == "[CRITICAL] platform: asset check b on a failed (live)"
    assert titles[0].startswith("[CRITICAL] ") and "mc-07" in titles[0]  # once: not resolved, not re-opened
    assert database.query("SELECT rule_name, state FROM analytics.alert_conditions ORDER BY rule_name") == [
        ("anomaly-critical", "open"),
        ("check-failed", "open"),
    ]
    assert "3 rule(s)" in str(result.skip_message)
    assert "rule run-failed failed: RuntimeError: run storage away" in str(result.skip_message)
