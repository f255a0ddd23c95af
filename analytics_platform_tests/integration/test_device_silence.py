"""A machine that falls silent is offline, and the rollups say so as the alert does: from its last
message, once the silence has lasted more than the `device_offline` minutes (DEVICE_OFFLINE_MINUTES,
10). Its day and hour uptime, its offline periods and the alert's "offline since" are compared on one
stream: through the real broker, the drain sensor and the Dagster assets, and hour by hour as live
processing computes them (docs/architecture.md, "Silence is an outage")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from analytics_platform.alerts.model import Condition, Rule
from analytics_platform.alerts.observe import devices_offline
from analytics_platform.results.events import recompute_days, recompute_device
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.alerts import HttpReceiver, MailReceiver, environ, tick
from analytics_platform_tests.support.readings import KEY, body, drain, materialize
from analytics_platform_tests.support.stack import DatabaseHandle, domain_topic, produce

DAY = datetime(2025, 8, 20, tzinfo=UTC)
H10 = DAY + timedelta(hours=10)
HOUR, MINUTE = timedelta(hours=1), timedelta(minutes=1)
LOOKBACK = timedelta(hours=168)
OFFLINE = Rule("offline", "device_offline", params={"minutes": 10, "lookback_hours": 168}, channels=("hook",))


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


# mc-01: online at 10:00 with a health score every 5 min to 10:40, then nothing until it reports
# online again at 12:20 (the edge agent's power was cut), scores every 5 min to 12:55, then nothing.
STREAM = (
    [body(iso(H10), status="online", level="ok")]
    + [body(iso(H10 + 5 * i * MINUTE), health_score=0.9) for i in range(1, 9)]
    + [body(iso(H10 + 140 * MINUTE), status="online", level="ok")]
    + [body(iso(H10 + (140 + 5 * i) * MINUTE), health_score=0.9) for i in range(1, 8)]
)
SILENT_FROM, BACK_AT, LAST = H10 + 40 * MINUTE, H10 + 140 * MINUTE, H10 + 175 * MINUTE


def offline_periods(db: DatabaseHandle) -> list[tuple]:
    return [
        (start, end, duration, json.loads(details))
        for start, end, duration, details in db.query(
            "SELECT time, end_time, duration_s, details::text FROM analytics.analytics_event "
            "WHERE event_type = 'offline_period' AND machine_id = 'mc-01' ORDER BY time"
        )
    ]


def seconds(db: DatabaseHandle, window_s: int) -> dict[int, tuple]:
    """hour (or 0 for the day) -> (up_s, down_s, offline_s, uptime %) of mc-01."""
    rows = db.query(
        "SELECT bucket_start, (details::jsonb->>'up_s')::float8, (details::jsonb->>'down_s')::float8, "
        "(details::jsonb->>'offline_s')::float8, round(uptime_pct::numeric, 6)::float8 "
        "FROM analytics.analytics_event_rollup WHERE event_type = 'device_health' AND window_s = %s "
        "AND machine_id = 'mc-01' ORDER BY 1",
        (window_s,),
    )
    return {start.hour: tuple(rest) for start, *rest in rows}


def test_silence_is_offline_from_the_last_message_in_the_rollups_as_in_the_alert(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    settings: PlatformSettings,
    database: DatabaseHandle,
    receivers: tuple[HttpReceiver, MailReceiver],
) -> None:
    http, mail = receivers
    env = environ(http, mail)
    produce(settings.kafka_brokers, domain_topic(settings, "device"), [(KEY, m) for m in STREAM])
    assert sorted(drain(defs, instance, ["device"])["raw_device_health"]) == [
        "2025-08-20-10:00",
        "2025-08-20-12:00",
    ]

    # the alert, ticking through the outage: silent for 10 min is not yet offline, 10 min 1 s is,
    # since the last message; the machine's return resolves it
    assert tick(database, SILENT_FROM + 10 * MINUTE, env, [OFFLINE]).opened == 0
    report = tick(database, SILENT_FROM + 10 * MINUTE + timedelta(seconds=1), env, [OFFLINE])
    assert (report.opened, report.sent) == (1, 1)
    (_, sent), *_ = http.requests
    assert sent["title"] == "[CRITICAL] t1/f1/mc-01: device offline for 10 min (no data received)"
    alert_since = database.scalar("SELECT details->>'offline_since' FROM analytics.alert_conditions")
    assert alert_since == "2025-08-20T10:40:00Z"
    assert tick(database, BACK_AT + MINUTE, env, [OFFLINE]).resolved == 1

    # the assets, as the automation runs them: the hours that received messages, then the day
    materialize(
        defs,
        instance,
        ["device_health_events"],
        tags={
            "dagster/asset_partition_range_start": "2025-08-20-10:00",
            "dagster/asset_partition_range_end": "2025-08-20-12:00",
        },
    )
    materialize(defs, instance, ["daily_event_rollups"], "2025-08-20")

    # the offline periods: the outage the alert reported, from 10:40 (its "offline since") to 12:20, and
    # the silence after the last score at 12:55, still open (the clock is long past it)
    assert offline_periods(database) == [
        (SILENT_FROM, BACK_AT, 6000.0, {"open": False, "no_data": True}),
        (LAST, None, None, {"open": True, "no_data": True}),
    ], "the silence the alert reported as an outage is no offline period in the rollups"
    # By hand: hour 10 up 10:00-10:40 (2400 s), offline 10:40-11:00; hour 11 offline; hour 12 offline to
    # 12:20, up 12:20-12:55 (2100 s), offline 12:55-13:00; hours 13-23 offline (the day has ended).
    hours = seconds(database, 3600)
    assert hours[10] == (2400.0, 1200.0, 1200.0, round(100 * 2400 / 3600, 6))
    assert hours[11] == (0.0, 3600.0, 3600.0, 0.0), "an hour the alert called offline counted as up"
    assert hours[12] == (2100.0, 1500.0, 1500.0, round(100 * 2100 / 3600, 6))
    assert sorted(hours) == list(range(10, 24)) and hours[23] == (0.0, 3600.0, 3600.0, 0.0)
    down = 1200 + 3600 + 1500 + 11 * 3600
    assert seconds(database, 86400) == {0: (4500.0, down, down, round(100 * 4500 / (4500 + down), 6))}


def compute_hour(db: DatabaseHandle, start: datetime, now: datetime) -> None:
    """What device_health_events does for the hour starting at `start` when it runs at `now`."""
    with db.connect(db.pipeline_url) as conn:
        recompute_device(conn, [3600], start, start + HOUR, lookback=LOOKBACK, now=now)


def alerted(db: DatabaseHandle, now: datetime) -> list[Condition]:
    """The conditions the device_offline rule observes at `now`."""
    with db.connect(db.pipeline_url) as conn:
        return devices_offline(conn, OFFLINE, now, "http://dagster.test").conditions


def insert(db: DatabaseHandle, rows: list[tuple[str, datetime, str | None]]) -> None:
    """(machine, time, status) rows of t1/f1 in raw_device_health (a None status: a health score)."""
    with db.connect() as conn:
        conn.cursor().executemany(
            """INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, status,
                   health_score, schema_version, dedup_key, topic, kafka_partition, kafka_offset)
               VALUES (%s, 't1', 'f1', %s, %s, 0.9, 1, %s, 'device.health', 0, 0)""",
            [(ts, m, s, f"{m}|{ts.isoformat()}") for m, ts, s in rows],
        )


def test_an_hour_rolled_up_before_the_silence_was_known_is_recomputed_once_it_is(database: DatabaseHandle) -> None:
    # Live: hour 10 is computed at 10:50, 5 min after mc-01's last message (10:45): not yet silent for
    # 10 min, so it holds its status to the hour's end. mc-02 keeps reporting, so hour 11 is computed
    # at 11:10: by then mc-01 has been silent for 25 min, offline since 10:45, and hour 10 must say so
    # too; the alert says so at the same clock.
    insert(database, [("mc-01", H10, "online")] + [("mc-01", H10 + 5 * i * MINUTE, None) for i in range(1, 10)])
    insert(database, [("mc-02", H10 + 5 * i * MINUTE, "online") for i in range(0, 26)])
    compute_hour(database, H10, now=H10 + 50 * MINUTE)
    assert seconds(database, 3600)[10] == (3600.0, 0.0, 0.0, 100.0)

    compute_hour(database, H10 + HOUR, now=H10 + 70 * MINUTE)
    assert seconds(database, 3600) == {
        10: (2700.0, 900.0, 900.0, 75.0),
        11: (0.0, 3600.0, 3600.0, 0.0),
    }, "hour 10 kept mc-01 up after its last message although the silence had since lasted 25 min"
    assert offline_periods(database) == [(H10 + 45 * MINUTE, None, None, {"open": True, "no_data": True})]

    assert [(c.machine_id, c.observed_at) for c in alerted(database, H10 + 70 * MINUTE)] == [
        ("mc-01", H10 + 45 * MINUTE)
    ]


def test_a_day_rolled_up_after_a_silent_site_counts_the_hours_rolled_up_before_it(database: DatabaseHandle) -> None:
    # The whole site goes silent at 10:45 (mc-01's last message). Hour 10 was computed live at 10:50;
    # nothing else is. The day, rolled up once it has ended, counts mc-01 offline from 10:45.
    insert(database, [("mc-01", H10, "online")] + [("mc-01", H10 + 5 * i * MINUTE, None) for i in range(1, 10)])
    compute_hour(database, H10, now=H10 + 50 * MINUTE)
    with database.connect(database.pipeline_url) as conn:
        recompute_days(conn, ["device"], DAY, DAY + 24 * HOUR, windows=[3600], lookback=LOOKBACK, now=DAY + 25 * HOUR)
    hours = seconds(database, 3600)
    assert hours[10] == (2700.0, 900.0, 900.0, 75.0), "the day kept hour 10 as computed before the silence"
    assert seconds(database, 86400) == {0: (2700.0, 900.0 + 13 * 3600, 900.0 + 13 * 3600, round(100 * 2700 / 50400, 6))}


def test_a_silence_of_at_most_the_threshold_holds_the_status(database: DatabaseHandle) -> None:
    # Scores exactly 10 min apart: never silent for *more than* 10 min, so never offline, in the
    # rollups as in the alert (test_alert_probes: exactly 10 minutes is not yet an alert).
    insert(database, [("mc-01", H10, "online")] + [("mc-01", H10 + 10 * i * MINUTE, None) for i in range(1, 7)])
    compute_hour(database, H10, now=H10 + 65 * MINUTE)
    assert seconds(database, 3600)[10] == (3600.0, 0.0, 0.0, 100.0)
    assert offline_periods(database) == []


def test_a_reported_offline_status_then_silence_is_one_offline_period(database: DatabaseHandle) -> None:
    # The machine says it goes offline and then says nothing: one offline period, the reported one,
    # not a second one for the silence that follows (the alert's "offline since" is the report).
    insert(database, [("mc-01", H10, "online"), ("mc-01", H10 + 5 * MINUTE, None)])
    insert(database, [("mc-01", H10 + 10 * MINUTE, "offline")])
    compute_hour(database, H10, now=H10 + 3 * HOUR)
    assert offline_periods(database) == [(H10 + 10 * MINUTE, None, None, {"open": True})]
    assert seconds(database, 3600)[10] == (600.0, 3000.0, 3000.0, round(100 / 6, 6))
    assert [c.observed_at for c in alerted(database, H10 + 3 * HOUR)] == [H10 + 10 * MINUTE]


def test_a_late_message_that_breaks_a_silence_across_the_hour_recomputes_the_hour_before(
    database: DatabaseHandle,
) -> None:
    # mc-01 sends every 5 min, but nothing came between 10:55 and 11:07 (12 min): hours 10 and 11 are
    # computed at 11:30 with mc-01 offline 10:55-11:07. Then its agent delivers the heartbeat of 11:01 it
    # had buffered: no silence was longer than 6 min. Only hour 11 received it and is recomputed; hour 10
    # must lose its 5 min offline, and the offline period must go.
    insert(database, [("mc-01", H10, "online")] + [("mc-01", H10 + 5 * i * MINUTE, None) for i in range(1, 12)])
    insert(database, [("mc-01", H10 + HOUR + m * MINUTE, None) for m in (7, 10, 15, 20, 25)])
    compute_hour(database, H10, now=H10 + 90 * MINUTE)
    compute_hour(database, H10 + HOUR, now=H10 + 90 * MINUTE)
    assert offline_periods(database) == [
        (H10 + 55 * MINUTE, H10 + 67 * MINUTE, 720.0, {"open": False, "no_data": True})
    ]
    assert seconds(database, 3600)[10] == (3300.0, 300.0, 300.0, round(100 * 3300 / 3600, 6))

    insert(database, [("mc-01", H10 + 61 * MINUTE, None)])  # the late heartbeat
    compute_hour(database, H10 + HOUR, now=H10 + 96 * MINUTE)
    assert offline_periods(database) == [
        (H10 + 85 * MINUTE, None, None, {"open": True, "no_data": True})  # silent since 11:25, 11 min by now
    ], "the silence a late message broke up stayed an offline period"
    hours = seconds(database, 3600)
    assert hours[10] == (3600.0, 0.0, 0.0, 100.0), "hour 10 kept the offline time of a silence that never was"
    assert hours[11] == (1500.0, 2100.0, 2100.0, round(100 * 1500 / 3600, 6))
