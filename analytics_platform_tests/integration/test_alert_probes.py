"""Alert rules as a real plant breaks them: a machine offline for exactly the rule's minutes, and
ids that contain the `/` the fingerprints and titles join them with. Real PostgreSQL, real HTTP
receiver; time is passed explicitly (`now`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from analytics_platform.alerts.model import Rule
from analytics_platform_tests.support.alerts import (
    FAIL_RATE,
    NOW,
    HttpReceiver,
    MailReceiver,
    environ,
    insert_anomaly,
    tick,
)
from analytics_platform_tests.support.stack import DatabaseHandle

OFFLINE = Rule("offline", "device_offline", params={"minutes": 10, "lookback_hours": 168}, channels=("hook",))


def insert_health(db: DatabaseHandle, rows: list[tuple[str, str, str, datetime, str]]) -> None:
    """(tenant, factory, machine, time, status) rows of raw_device_health, as the drain stores them."""
    with db.connect() as conn:
        conn.cursor().executemany(
            """INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, status,
                   schema_version, dedup_key, topic, kafka_partition, kafka_offset)
               VALUES (%s, %s, %s, %s, %s, 1, %s, 'device.health', 0, 0)""",
            [(ts, t, f, m, s, f"{t}|{f}|{m}|{ts.isoformat()}") for t, f, m, ts, s in rows],
        )


def test_device_offline_notifies_only_after_more_than_its_minutes(
    database: DatabaseHandle, receivers: tuple[HttpReceiver, MailReceiver]
) -> None:
    # "offline for more than 10 minutes": exactly 10 minutes offline (or silent) is not yet an alert
    http, mail = receivers
    env = environ(http, mail)
    insert_health(
        database,
        [
            ("t1", "f1", "mc-01", NOW - timedelta(minutes=30), "online"),
            ("t1", "f1", "mc-01", NOW - timedelta(minutes=10), "offline"),  # reported offline 10 min ago
            ("t1", "f1", "mc-02", NOW - timedelta(minutes=10), "online"),  # silent for 10 min
        ],
    )
    report = tick(database, NOW, env, [OFFLINE])
    assert (report.opened, report.queued) == (0, 0), "a machine offline for exactly 10 minutes alerted"
    assert http.requests == []

    report = tick(database, NOW + timedelta(seconds=1), env, [OFFLINE])  # 10 min 1 s: more than 10
    assert (report.opened, report.queued, report.sent) == (2, 2, 2)
    assert sorted(b["title"] for _, b in http.requests) == [
        "[CRITICAL] t1/f1/mc-01: device offline for 10 min",
        "[CRITICAL] t1/f1/mc-02: device offline for 10 min (no data received)",
    ]


def test_ids_containing_a_slash_never_share_an_alert_condition(
    database: DatabaseHandle, receivers: tuple[HttpReceiver, MailReceiver]
) -> None:
    # Factory "f1/hall-2" with machine "press", and factory "f1" with machine "hall-2/press" (ids taken
    # from OPC-UA browse paths): joined with "/" both read "t1/f1/hall-2/press". Each is its own
    # machine and must open, notify and resolve as its own condition.
    http, mail = receivers
    env = environ(http, mail)
    insert_health(
        database,
        [
            ("t1", "f1/hall-2", "press", NOW - timedelta(minutes=30), "offline"),
            ("t1", "f1", "hall-2/press", NOW - timedelta(minutes=20), "offline"),
        ],
    )
    report = tick(database, NOW, env, [OFFLINE])
    assert report.rule_errors == {}
    assert (report.opened, report.sent) == (2, 2), "two machines offline, yet not two alerts"
    conditions = database.query(
        "SELECT tenant_id, factory_id, machine_id, state FROM analytics.alert_conditions ORDER BY factory_id"
    )
    assert conditions == [("t1", "f1", "hall-2/press", "open"), ("t1", "f1/hall-2", "press", "open")]
    assert sorted((b["factory_id"], b["machine_id"]) for _, b in http.requests) == [
        ("f1", "hall-2/press"),
        ("f1/hall-2", "press"),
    ]

    # one of them comes back: only its condition resolves
    insert_health(database, [("t1", "f1", "hall-2/press", NOW + timedelta(minutes=1), "online")])
    report = tick(database, NOW + timedelta(minutes=2), env, [OFFLINE])
    assert (report.resolved, report.opened) == (1, 0)
    assert database.query(
        "SELECT factory_id, machine_id, state FROM analytics.alert_conditions ORDER BY factory_id"
    ) == [("f1", "hall-2/press", "resolved"), ("f1/hall-2", "press", "open")]


def test_fail_rate_is_failed_over_judged_batches_with_at_least_min_count_verdicts(
    database: DatabaseHandle, receivers: tuple[HttpReceiver, MailReceiver]
) -> None:
    # Batches without a verdict (no spec limit for their metric, or a unit the limit is not in) are
    # counted in count_n but judged neither way. mc-01: 3 failed of 5 judged (60 %) among 15 batches;
    # mc-02: 1 failed of 4 judged (and 11 not judged): fewer than min_count verdicts, no alert.
    http, mail = receivers
    env = environ(http, mail)
    with database.connect() as conn:
        conn.cursor().executemany(
            """INSERT INTO analytics.analytics_event_rollup (bucket_start, bucket_end, window_s, tenant_id,
                   factory_id, machine_id, event_type, subject, count_n, pass_n, fail_n, fail_rate, pass_rate)
               VALUES (%s, %s, 300, 't1', 'f1', %s, 'sweep_batch', '', %s, %s, %s, %s, %s)""",
            [
                (NOW - timedelta(minutes=10), NOW - timedelta(minutes=5), "mc-01", 15, 2, 3, 0.6, 0.4),
                (NOW - timedelta(minutes=10), NOW - timedelta(minutes=5), "mc-02", 15, 3, 1, 0.25, 0.75),
            ],
        )
    report = tick(database, NOW, env, [FAIL_RATE])
    assert report.rule_errors == {}
    assert [(b["machine_id"], b["title"]) for _, b in http.requests] == [
        ("mc-01", "[WARNING] t1/f1/mc-01: sweep_batch fail rate 60% over 60 min (threshold 20%)")
    ], "the fail rate was diluted by the batches without a verdict"


ANOMALY = Rule(
    "anomaly-critical",
    "anomaly",
    params={"min_severity": 3, "max_age_hours": 24, "max_per_machine": 3},
    channels=("hook",),
)


def test_an_anomaly_event_the_hour_extends_backwards_stays_one_alert(
    database: DatabaseHandle, receivers: tuple[HttpReceiver, MailReceiver]
) -> None:
    # The live judge flags an out-of-range reading at 09:50 (one alert). The hour then finds a
    # seasonal shift on the sample before it, 09:49: the event now starts at 09:49. It is the same
    # open condition and must not notify again, nor resolve the first alert.
    http, mail = receivers
    env = environ(http, mail)
    insert_anomaly(database, "mc-01", 4, NOW - timedelta(minutes=10), "range")
    report = tick(database, NOW, env, [ANOMALY])
    assert (report.opened, report.sent) == (1, 1)

    insert_anomaly(database, "mc-01", 2, NOW - timedelta(minutes=11), "shift")
    report = tick(database, NOW + timedelta(minutes=1), env, [ANOMALY])
    assert (report.opened, report.resolved, report.queued) == (0, 0, 0), "the grown event notified again"
    assert [b["transition"] for _, b in http.requests] == ["open"]
    assert database.query("SELECT state FROM analytics.alert_conditions") == [("open",)]

    # its rows resolved: the one condition resolves, once
    with database.connect() as conn:
        conn.execute("UPDATE analytics.analytics_anomaly SET status = 'resolved'")
    report = tick(database, NOW + timedelta(minutes=2), env, [ANOMALY])
    assert (report.resolved, report.opened) == (1, 0)
    assert [b["transition"] for _, b in http.requests] == ["open", "resolve"]
