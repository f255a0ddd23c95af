"""Event rollups as a real plant breaks them, on the real database: an edge agent cut off for two
hours replays its machine's status changes after the hours that carried its old status were rolled
up; a failed lab result lands, and is judged live, while its hour is being recomputed."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from analytics_platform.results.events import recompute_days, recompute_device, recompute_quality
from analytics_platform_tests.support.stack import DatabaseHandle

H10 = datetime(2025, 8, 20, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
LOOKBACK = timedelta(hours=168)
ON_CHANGE = 10 * MINUTE  # DEVICE_OFFLINE_MINUTES' default: an agent reporting on change keeps its status in silence


def insert_status(db: DatabaseHandle, rows: list[tuple[str, datetime, str]]) -> None:
    """(machine, time, status) rows of t1/f1 in raw_device_health, as the drain stores them."""
    with db.connect() as conn:
        conn.cursor().executemany(
            """INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, status,
                   schema_version, dedup_key, topic, kafka_partition, kafka_offset)
               VALUES (%s, 't1', 'f1', %s, %s, 1, %s, 'device.health', 0, 0)""",
            [(ts, m, s, f"{m}|{ts.isoformat()}") for m, ts, s in rows],
        )


def compute_hour(
    db: DatabaseHandle, start: datetime, offline_after: timedelta | None = None, now: datetime | None = None
) -> None:
    """What the device_health_events asset does for the hour partition starting at `start`, at `now`
    (the clock by default)."""
    with db.connect(db.pipeline_url) as conn:
        recompute_device(conn, [3600], start, start + HOUR, lookback=LOOKBACK, offline_after=offline_after, now=now)


def uptime(db: DatabaseHandle, machine: str) -> dict[int, float | None]:
    """hour of day -> the machine's hourly uptime %."""
    rows = db.query(
        "SELECT bucket_start, uptime_pct FROM analytics.analytics_event_rollup WHERE event_type = 'device_health' "
        "AND window_s = 3600 AND machine_id = %s ORDER BY 1",
        (machine,),
    )
    return {start.hour: None if pct is None else round(pct, 6) for start, pct in rows}


def test_a_replayed_outage_recomputes_the_hours_that_carried_the_old_status(database: DatabaseHandle) -> None:
    # mc-02 reports every 30 min, so every hour is rolled up. mc-01 was online at 09:50, then its edge
    # agent lost the broker: hours 10, 11 and 12 were rolled up with mc-01 still online (its last status).
    # The site's agents report on change only: a silence that begins with a status change is the status
    # holding, not an outage, whatever DEVICE_OFFLINE_MINUTES says (mc-02's repeated statuses are heartbeats,
    # whose silences are judged); each hour is computed live, 5 min after its end.
    insert_status(database, [("mc-01", H10 - timedelta(minutes=10), "online")])
    insert_status(database, [("mc-02", H10 + timedelta(minutes=30 * i), "online") for i in range(6)])
    for hour in range(3):
        compute_hour(database, H10 + hour * HOUR, ON_CHANGE, H10 + (hour + 1) * HOUR + 5 * MINUTE)
    assert uptime(database, "mc-01") == {10: 100.0, 11: 100.0, 12: 100.0}

    # The agent reconnects and replays, in order: offline at 10:10, online again at 12:15. Their raw
    # partitions (hours 10 and 12) change and are recomputed; hour 11 received nothing new.
    insert_status(database, [("mc-01", H10 + timedelta(minutes=10), "offline")])
    insert_status(database, [("mc-01", H10 + 2 * HOUR + timedelta(minutes=15), "online")])
    compute_hour(database, H10, ON_CHANGE, H10 + 3 * HOUR + 10 * MINUTE)
    compute_hour(database, H10 + 2 * HOUR, ON_CHANGE, H10 + 3 * HOUR + 10 * MINUTE)

    # By hand: up 10:00-10:10, offline 10:10-12:15, up 12:15-13:00.
    assert uptime(database, "mc-01") == {10: round(100 * 10 / 60, 6), 11: 0.0, 12: 75.0}, (
        "hour 11 kept the status it carried before the replay: 100 % uptime for an hour the machine was offline"
    )
    assert database.query(
        "SELECT time, end_time, duration_s FROM analytics.analytics_event "
        "WHERE event_type = 'offline_period' AND machine_id = 'mc-01'"
    ) == [(H10 + timedelta(minutes=10), H10 + 2 * HOUR + timedelta(minutes=15), 7500.0)]

    # recomputing hour 10 again, with nothing new landed, leaves the hours after it as they are
    computed = (
        "SELECT bucket_start, computed_at FROM analytics.analytics_event_rollup WHERE bucket_start > %s ORDER BY 1"
    )
    before = database.query(computed, (H10,))
    compute_hour(database, H10, ON_CHANGE, H10 + 3 * HOUR + 10 * MINUTE)
    assert database.query(computed, (H10,)) == before


def test_an_on_change_agents_silence_does_not_recompute_its_hours_on_every_run(database: DatabaseHandle) -> None:
    """mc-01 reports on change only: online at 09:50, nothing since. Its silence is the status holding
    (test_device_health.py), so the hours rolled up with it online are right as they are: each hourly
    run's look for hours a silence covers but which do not count it offline yet must not find them
    (it did, and recomputed every earlier hour of the look-back on every run)."""
    insert_status(database, [("mc-01", H10 - timedelta(minutes=10), "online")])
    for hour in range(3):
        compute_hour(database, H10 + hour * HOUR, ON_CHANGE, H10 + (hour + 1) * HOUR + 5 * MINUTE)
    assert uptime(database, "mc-01") == {10: 100.0, 11: 100.0, 12: 100.0}
    computed = "SELECT bucket_start, computed_at FROM analytics.analytics_event_rollup ORDER BY 1, 2"
    before = database.query(computed)
    compute_hour(database, H10 + 3 * HOUR, ON_CHANGE, H10 + 4 * HOUR + 5 * MINUTE)
    after = database.query(computed)
    assert [row for row in after if row[0] < H10 + 3 * HOUR] == [row for row in before if row[0] < H10 + 3 * HOUR], (
        "the run of 13:00 recomputed the hours an on-change agent's silence covers"
    )
    assert uptime(database, "mc-01") == {10: 100.0, 11: 100.0, 12: 100.0, 13: 100.0}


def day_rollup(db: DatabaseHandle, day: datetime, now: datetime) -> None:
    """What daily_event_rollups does for the day partition starting at `day`, at `now`."""
    with db.connect(db.pipeline_url) as conn:
        recompute_days(conn, ["device"], day, day + 24 * HOUR, windows=[3600], lookback=LOOKBACK, now=now)


def device_seconds(db: DatabaseHandle, machine: str, window_s: int) -> list[tuple]:
    """(bucket start, up_s, down_s, offline_s, uptime %) of the machine's device_health rollups."""
    return db.query(
        "SELECT bucket_start, (details::jsonb->>'up_s')::float8, (details::jsonb->>'down_s')::float8, "
        "(details::jsonb->>'offline_s')::float8, round(uptime_pct::numeric, 6)::float8 "
        "FROM analytics.analytics_event_rollup WHERE event_type = 'device_health' AND window_s = %s "
        "AND machine_id = %s ORDER BY 1",
        (window_s, machine),
    )


def test_a_device_offline_then_total_silence_counts_offline_for_the_rest_of_its_day(database: DatabaseHandle) -> None:
    # The site's only machine reports online at 09:00 (and every 5 min after), offline at 10:10, then nothing
    # arrives from anyone (the whole site lost power). Only hours 9 and 10 received messages, so only they
    # were rolled up.
    insert_status(database, [("mc-01", H10 - HOUR + 5 * i * MINUTE, "online") for i in range(14)])
    insert_status(database, [("mc-01", H10 + timedelta(minutes=10), "offline")])
    compute_hour(database, H10 - HOUR)
    compute_hour(database, H10)
    day = H10.replace(hour=0)
    day_rollup(database, day, now=day + 48 * HOUR)

    # By hand: up 09:00-10:10 (4200 s), offline 10:10-24:00 (49800 s): 4200 / 54000 = 7.777778 %.
    assert device_seconds(database, "mc-01", 86400) == [(day, 4200.0, 49800.0, 49800.0, 7.777778)], (
        "the hours of silence after the machine went offline were never rolled up: the day counted 50 min of it"
    )
    hours = device_seconds(database, "mc-01", 3600)
    assert [h[0].hour for h in hours] == list(range(9, 24))
    assert hours[-1] == (day + 23 * HOUR, 0.0, 3600.0, 3600.0, 0.0)
    # the offline period is still open, from 10:10
    assert database.query(
        "SELECT time, end_time FROM analytics.analytics_event WHERE event_type = 'offline_period'"
    ) == [(H10 + timedelta(minutes=10), None)]


def test_silent_hours_are_rolled_up_from_the_last_state_once_a_later_hour_is(database: DatabaseHandle) -> None:
    # mc-01 (tenant t1) went offline at 10:10; nothing from anyone in hours 11-13; at 14:05 a machine of
    # another tenant reports. Hour 14 is rolled up: hours 11-13 carry mc-01's offline state too.
    insert_status(database, [("mc-01", H10 + timedelta(minutes=10), "offline")])
    compute_hour(database, H10)
    with database.connect() as conn:
        conn.execute(
            """INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, status,
                   schema_version, dedup_key, topic, kafka_partition, kafka_offset)
               VALUES (%s, 't2', 'f1', 'mc-01', 'online', 1, 't2', 'device.health', 0, 1)""",
            (H10 + 4 * HOUR + timedelta(minutes=5),),
        )
    compute_hour(database, H10 + 4 * HOUR, now=H10 + 4 * HOUR + 10 * MINUTE)  # live, 5 min after it reported
    assert database.query(
        "SELECT bucket_start, uptime_pct FROM analytics.analytics_event_rollup "
        "WHERE event_type = 'device_health' AND window_s = 3600 AND tenant_id = 't1' ORDER BY 1"
    ) == [(H10 + i * HOUR, 0.0) for i in range(5)], (
        "the silent hours between the last rolled-up hour and the next were never rolled up"
    )
    # the other tenant's machine of the same name is apart: up from 14:05, nothing before it
    assert database.query(
        "SELECT bucket_start, uptime_pct FROM analytics.analytics_event_rollup WHERE event_type = 'device_health' "
        "AND window_s = 3600 AND tenant_id = 't2'"
    ) == [(H10 + 4 * HOUR, 100.0)]


def test_silent_hours_are_not_rolled_up_past_now(database: DatabaseHandle) -> None:
    insert_status(database, [("mc-01", H10 + timedelta(minutes=10), "offline")])
    compute_hour(database, H10)
    day = H10.replace(hour=0)
    day_rollup(database, day, now=H10 + 3 * HOUR + timedelta(minutes=20))  # hours 11 and 12 have ended
    assert [h[0].hour for h in device_seconds(database, "mc-01", 3600)] == [10, 11, 12]
    assert device_seconds(database, "mc-01", 86400) == [(day, 0.0, 10200.0, 10200.0, 0.0)]


def test_a_failed_lab_result_judged_live_while_its_hour_is_recomputed_keeps_its_event(
    database: DatabaseHandle,
) -> None:
    # lab_result_quality re-runs the current hour as results arrive. A failed result committed, and
    # judged live, while such a run is under way must keep its event: losing it until the next run
    # resolves its lab_out_of_spec alert and re-opens it (a second notification for one condition).
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO analytics.analytics_spec_limits (tenant_id, factory_id, scope, name, lower_limit, "
            "upper_limit) VALUES ('t1', '*', 'analyte', 'pH', 6.5, 8.5)"
        )
    result = (
        "INSERT INTO analytics.raw_lab_results (time, tenant_id, factory_id, station_id, sample_id, analyte, value, "
    )
    result += "schema_version, dedup_key, topic, kafka_partition, kafka_offset) "
    result += "VALUES (%s, 't1', 'f1', 'lab-1', %s, 'pH', %s, 1, %s, 'lab.results', 0, %s)"
    with database.connect() as conn:
        conn.execute(result, (H10 + timedelta(minutes=5), "S-1", 7.0, "k-S-1", 0))

    lock = "SELECT pg_advisory_lock(hashtext('analytics.analytics_event:lab'))"
    with database.connect() as holder:
        holder.execute(lock)  # another writer of lab events holds the hour for now
        run = threading.Thread(target=judge_lab_hour, args=(database,))
        run.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        deadline = time.monotonic() + 30
        while database.scalar(waiting) == 0:  # the run is under way: it waits for the lock
            assert time.monotonic() < deadline, "the recompute never reached the writers' lock"
        # meanwhile a failed result lands and the live judge stores its event
        with database.connect() as conn:
            conn.execute(result, (H10 + timedelta(minutes=20), "S-2", 9.1, "k-S-2", 1))
            conn.execute(
                "INSERT INTO analytics.analytics_event (time, tenant_id, factory_id, machine_id, event_type, "
                "event_key, domain, level, value, passed, details) VALUES (%s, 't1', 'f1', 'lab-1', 'lab_result', "
                "'k-S-2', 'lab', 'fail', 9.1, false, '{}')",
                (H10 + timedelta(minutes=20),),
            )
        holder.execute("SELECT pg_advisory_unlock(hashtext('analytics.analytics_event:lab'))")
        run.join(60)
    assert database.query(
        "SELECT event_key, passed FROM analytics.analytics_event WHERE event_type = 'lab_result' ORDER BY time"
    ) == [("k-S-1", True), ("k-S-2", False)], "the run replaced the hour with what it read before the result landed"


def judge_lab_hour(db: DatabaseHandle) -> None:
    with db.connect(db.pipeline_url) as conn:
        recompute_quality(conn, "lab", [3600], H10, H10 + HOUR)
