"""The `anomaly` alert rule on anomaly events (issue 20), against a real PostgreSQL: consecutive
anomalous samples of one series are one event and one alert however long it runs, and past
`max_per_machine` events a machine's further events are one grouped alert. Every tick is the alert
sensor's (`run_tick`) at an explicit `now`, delivering to a local webhook receiver.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from analytics_platform.alerts.config import DEFAULT_FILE, AlertConfigError, parse_alert_config, read_alert_file
from analytics_platform.alerts.engine import TickReport
from analytics_platform.alerts.model import Rule
from analytics_platform_tests.support.alerts import NOW, UI, HttpReceiver, insert_anomaly, tick
from analytics_platform_tests.support.stack import DatabaseHandle

T0 = NOW - timedelta(hours=1)  # 09:00
RULE = Rule(
    "anomaly-critical",
    "anomaly",
    params={"min_severity": 3, "max_age_hours": 24, "max_per_machine": 3},
    channels=("hook",),
)


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def env(receiver: HttpReceiver) -> dict[str, str]:
    return {"ALERT_TEST_HOOK": f"json://127.0.0.1:{receiver.port}/hook"}


def sent(receiver: HttpReceiver, since: int = 0) -> list[tuple[str, str]]:
    """(transition, title) of each webhook request from the `since`-th on."""
    return [(body["transition"], body["title"]) for _, body in receiver.requests[since:]]


def conditions(db: DatabaseHandle) -> list[tuple[str, str]]:
    return db.query("SELECT fingerprint, state FROM analytics.alert_conditions ORDER BY observed_at, fingerprint")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(db: DatabaseHandle, now: datetime, receiver: HttpReceiver, rules: tuple[Rule, ...] = (RULE,)) -> TickReport:
    report = tick(db, now, env(receiver), rules)
    assert report.rule_errors == {}
    return report


def resolve_event(db: DatabaseHandle, event_id: int) -> int:
    return db.scalar(
        "SELECT analytics.resolve_anomaly_event(%s, %s, %s, 'checked', 'ops')",
        (event_id, NOW - timedelta(days=1), NOW + timedelta(days=1)),
    )


def test_twelve_consecutive_samples_are_one_event_and_notify_once(database: DatabaseHandle, hook: HttpReceiver) -> None:
    """12 anomalous minutes (two methods, one of them worse) notify once, counting them; the 13th
    minute, added later, joins the event and notifies nothing."""
    ids = [
        insert_anomaly(database, "mc-01", 4 if m == 5 else 3, at(m), "shift" if m % 4 == 3 else "deviation")
        for m in range(12)
    ]
    insert_anomaly(database, "mc-02", 5, at(3), sensor="s-vib", metric="vibration", anomaly_type="vibration")

    report = run(database, at(12), hook)
    assert (report.opened, report.sent) == (2, 2)
    summary = "temperature anomaly event on temp: 12 anomalies (deviation, shift), peak severity 4"
    assert sent(hook) == [
        ("open", f"[CRITICAL] t1/f1/mc-01: {summary}"),
        (
            "open",
            "[CRITICAL] t1/f1/mc-02: vibration anomaly event on vibration: 1 anomaly (deviation), peak severity 5",
        ),
    ]
    assert hook.requests[0][1]["message"].splitlines()[3] == (
        f"How bad: critical; event_id {ids[0]}; anomalies 12; methods deviation, shift; severity 4; "
        "peak_time 2026-03-02T09:05:00Z; observed 95.0; expected 65.0; start 2026-03-02T09:00:00Z; "
        "end 2026-03-02T09:12:00Z; sensor s-temp"
    )
    fingerprint = "anomaly-critical:t1/f1/mc-01/s-temp/temp/event/2026-03-02T09:00:00Z"

    insert_anomaly(database, "mc-01", 5, at(12))  # the next minute, worse still
    report = run(database, at(13), hook)
    assert (report.opened, report.reopened, report.resolved, report.queued) == (0, 0, 0, 0)
    assert len(hook.requests) == 2
    assert database.query(
        "SELECT event_id, anomalies, severity, end_time FROM analytics.anomaly_events(%s, %s) "
        "WHERE machine_id = 'mc-01'",
        (NOW - timedelta(days=1), NOW),
    ) == [(ids[0], 13, 5, at(13))]
    assert conditions(database) == [
        (fingerprint, "open"),
        ("anomaly-critical:t1/f1/mc-02/s-vib/vibration/event/2026-03-02T09:03:00Z", "open"),
    ]


def test_samples_more_than_three_spacings_apart_are_two_events(database: DatabaseHandle, hook: HttpReceiver) -> None:
    """At 60 s spacing a row starting 3 samples after the last one ended (09:01 -> 09:04) joins its
    event; one starting 5 min after (09:05 -> 09:10) begins another."""
    first = insert_anomaly(database, "mc-01", 3, at(0))
    insert_anomaly(database, "mc-01", 4, at(4))
    second = insert_anomaly(database, "mc-01", 3, at(10))
    insert_anomaly(database, "mc-01", 2, at(11))  # below min_severity, but part of the event

    report = run(database, at(20), hook)
    assert report.opened == 2
    assert sent(hook) == [
        ("open", "[CRITICAL] t1/f1/mc-01: temperature anomaly event on temp: 2 anomalies (deviation), peak severity 4"),
        ("open", "[CRITICAL] t1/f1/mc-01: temperature anomaly event on temp: 2 anomalies (deviation), peak severity 3"),
    ]
    assert [b["message"].split("event_id ")[1].split(";")[0] for _, b in hook.requests] == [str(first), str(second)]
    assert conditions(database) == [
        ("anomaly-critical:t1/f1/mc-01/s-temp/temp/event/2026-03-02T09:00:00Z", "open"),
        ("anomaly-critical:t1/f1/mc-01/s-temp/temp/event/2026-03-02T09:10:00Z", "open"),
    ]


def five_events(db: DatabaseHandle, machine: str, start: float = 0) -> list[int]:
    """Five events 10 minutes apart: 1, 2, 1, 3 and 2 rows; the fifth peaks at severity 4."""
    rows = {0: [3], 10: [3, 3], 20: [3], 30: [3, 3, 3], 40: [3, 4]}
    ids = []
    for offset, severities in rows.items():
        ids.append(insert_anomaly(db, machine, severities[0], at(start + offset)))
        for n, severity in enumerate(severities[1:], 1):
            insert_anomaly(db, machine, severity, at(start + offset + n))
    return ids


def test_past_max_per_machine_a_machines_events_are_one_grouped_alert(
    database: DatabaseHandle, hook: HttpReceiver
) -> None:
    ids = five_events(database, "mc-01")
    report = run(database, at(45), hook)
    assert (report.opened, report.sent) == (4, 4)
    event = "[CRITICAL] t1/f1/mc-01: temperature anomaly event on temp: {} (deviation), peak severity 3"
    grouped = (
        "[CRITICAL] t1/f1/mc-01: 2 more anomaly events on this machine (rate limit 3 per 24 h): 5 anomalies, "
        "peak severity 4"
    )
    assert sent(hook) == [
        ("open", event.format("1 anomaly")),
        ("open", event.format("2 anomalies")),
        ("open", event.format("1 anomaly")),
        ("open", grouped),
    ]
    group_fp = "anomaly-critical:t1/f1/mc-01/grouped/2026-03-02T09:30:00Z"
    assert hook.requests[3][1]["message"].splitlines() == [
        f"What: {grouped.removeprefix('[CRITICAL] t1/f1/mc-01: ')} (rule anomaly-critical, anomaly)",
        "Where: t1/f1/mc-01",
        "When: 2026-03-02T09:30:00Z; detected 2026-03-02T09:45:00Z",
        f"How bad: critical; events 2; event_ids {ids[3]}, {ids[4]}; anomalies 5; severity 4; "
        "start 2026-03-02T09:30:00Z; end 2026-03-02T09:42:00Z",
        f"Link: {UI}/assets/reading_anomalies?view=partitions&partition=2026-03-02-09:00",
        f"Fingerprint: {group_fp}",
    ]

    # a sixth event on mc-01 joins the group without a notification; mc-02's first event is its own
    insert_anomaly(database, "mc-01", 5, at(50))
    insert_anomaly(database, "mc-02", 3, at(50))
    report = run(database, at(55), hook)
    assert (report.opened, report.resolved, report.queued) == (1, 0, 1)
    assert sent(hook, 4) == [
        ("open", "[CRITICAL] t1/f1/mc-02: temperature anomaly event on temp: 1 anomaly (deviation), peak severity 3")
    ]
    event_fp = "anomaly-critical:t1/f1/mc-01/s-temp/temp/event/2026-03-02T09:{:02d}:00Z"
    assert conditions(database) == [
        (event_fp.format(0), "open"),
        (event_fp.format(10), "open"),
        (event_fp.format(20), "open"),
        (group_fp, "open"),
        ("anomaly-critical:t1/f1/mc-02/s-temp/temp/event/2026-03-02T09:50:00Z", "open"),
    ]

    # resolving one of the first three resolves that alert only: it keeps its slot, the group stays as it is
    assert resolve_event(database, ids[1]) == 2
    report = run(database, at(56), hook)
    assert (report.opened, report.resolved, report.queued) == (0, 1, 1)
    assert sent(hook, 5) == [("resolve", "[RESOLVED] " + event.format("2 anomalies").removeprefix("[CRITICAL] "))]

    # the group resolves once every folded event is resolved
    for event_id in (ids[3], ids[4]):
        resolve_event(database, event_id)
    assert run(database, at(57), hook).resolved == 0  # the sixth event is still open
    sixth = database.scalar("SELECT max(anomaly_id) FROM analytics.analytics_anomaly WHERE machine_id = 'mc-01'")
    assert resolve_event(database, sixth) == 1
    report = run(database, at(58), hook)
    assert (report.opened, report.resolved) == (0, 1)
    assert sent(hook, 6) == [("resolve", "[RESOLVED] " + grouped.removeprefix("[CRITICAL] "))]
    assert dict(conditions(database))[group_fp] == "resolved"


def test_max_per_machine_zero_is_no_limit(database: DatabaseHandle, hook: HttpReceiver) -> None:
    five_events(database, "mc-01")
    unlimited = Rule(RULE.name, RULE.kind, params={**RULE.params, "max_per_machine": 0}, channels=RULE.channels)
    report = run(database, at(45), hook, (unlimited,))
    assert report.opened == 5
    assert [fp for fp, _ in conditions(database)] == [
        f"anomaly-critical:t1/f1/mc-01/s-temp/temp/event/2026-03-02T09:{m:02d}:00Z" for m in (0, 10, 20, 30, 40)
    ]


STOPPAGE: dict = {"sample_s": None, "sensor": None, "metric": None, "anomaly_type": "production"}


def test_a_tenant_rule_sees_its_tenants_events_and_interval_rows_without_a_series(
    database: DatabaseHandle, hook: HttpReceiver
) -> None:
    """A stoppage has no sensor, metric or sample spacing: its window is the event; rows whose
    windows touch are one event. A rule of tenant t2 does not see t1's events."""
    insert_anomaly(database, "mc-01", 3, at(0), "stoppage", window_s=600, **STOPPAGE)
    insert_anomaly(database, "mc-01", 4, at(10), "stoppage", window_s=300, **STOPPAGE)
    insert_anomaly(database, "mc-07", 3, at(5), tenant="t2")
    t2 = Rule("anomaly-t2", "anomaly", tenant_id="t2", params=dict(RULE.params), channels=("hook",))

    report = run(database, at(20), hook, (RULE, t2))
    assert report.opened == 3
    assert sent(hook) == [
        (
            "open",
            "[CRITICAL] t1/f1/mc-01: production anomaly event on production: 2 anomalies (stoppage), peak severity 4",
        ),
        ("open", "[CRITICAL] t2/f1/mc-07: temperature anomaly event on temp: 1 anomaly (deviation), peak severity 3"),
        ("open", "[CRITICAL] t2/f1/mc-07: temperature anomaly event on temp: 1 anomaly (deviation), peak severity 3"),
    ]
    assert database.query("SELECT rule_name, fingerprint FROM analytics.alert_conditions ORDER BY 1, 2") == [
        ("anomaly-critical", "anomaly-critical:t1/f1/mc-01///event/2026-03-02T09:00:00Z"),
        ("anomaly-critical", "anomaly-critical:t2/f1/mc-07/s-temp/temp/event/2026-03-02T09:05:00Z"),
        ("anomaly-t2", "anomaly-t2:t2/f1/mc-07/s-temp/temp/event/2026-03-02T09:05:00Z"),
    ]


def test_the_shipped_rule_has_the_default_rate_limit_and_a_file_can_turn_it_off() -> None:
    shipped = {r.name: r for r in read_alert_file(DEFAULT_FILE).rules}["anomaly-critical"]
    assert shipped.params == {"min_severity": 3, "max_age_hours": 24, "max_per_machine": 3}
    rule = {"name": "a", "kind": "anomaly", "params": {"max_per_machine": 0}}
    assert parse_alert_config({"rules": [rule]}).rules[0].params["max_per_machine"] == 0
    with pytest.raises(AlertConfigError, match="param max_per_machine must be a number ≥ 0"):
        parse_alert_config({"rules": [{**rule, "params": {"max_per_machine": "three"}}]})
