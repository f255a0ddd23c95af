"""Analytics assets end to end: known messages through the real broker and the drain sensors, the
analytics assets materialised through Dagster, exact rows in analytics_agg, analytics_event and
analytics_event_rollup; late data, replays, spec-limit changes, automation and reprocessing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
import pytest

from analytics_platform.defs import build_definitions
from analytics_platform.ingest import store
from analytics_platform.results.spec_limits import load_spec_limits
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.automation import Ticks
from analytics_platform_tests.support.readings import HEALTH, KEY, LAB, SWEEPS, body, drain, materialize, reading
from analytics_platform_tests.support.stack import DatabaseHandle, domain_topic, produce

AGG = dg.AssetKey("sensor_window_aggregates")
HOURLY = ("sensor_window_aggregates", "device_health_events", "sweep_batch_quality", "lab_result_quality")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


SENSOR_WAVE_1 = [
    reading("2025-08-20T03:00:00Z", 10.0, "r1"),
    reading("2025-08-20T03:00:30Z", 20.0, "r2"),
    reading("2025-08-20T03:00:59.999Z", 30.0, "r3"),
    reading("2025-08-20T03:01:00Z", 40.0, "r4"),
    reading("2025-08-20T03:59:59Z", 50.0, "r5"),
    reading("2025-08-20T04:00:00Z", 60.0, "r6"),
    reading("2025-08-20T03:00:30Z", 20.0, "r2"),  # duplicate (edge re-send)
]


def materialize_range(defs, instance, names, first: str, last: str) -> None:
    materialize(
        defs,
        instance,
        names,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )


AGG_ROWS = (
    "SELECT window_s, bucket_start, bucket_end, tenant_id, factory_id, machine_id, sensor_id, metric, count_n, "
    "sum_v, avg_v, min_v, max_v, round(stddev_v::numeric, 6)::float8, first_v, last_v, p50_v, "
    "round(p95_v::numeric, 6)::float8 FROM analytics.analytics_agg ORDER BY window_s, bucket_start, sensor_id"
)
EVENT_ROWS = (
    "SELECT domain, event_type, tenant_id, factory_id, machine_id, event_key, time, level, value, passed, end_time, "
    "duration_s, details::text FROM analytics.analytics_event ORDER BY domain, event_type, machine_id, time, event_key"
)
ROLLUP_ROWS = (
    "SELECT event_type, subject, window_s, bucket_start, bucket_end, tenant_id, factory_id, machine_id, count_n, "
    "pass_n, fail_n, fail_rate, pass_rate, round(uptime_pct::numeric, 6)::float8, details::text "
    "FROM analytics.analytics_event_rollup ORDER BY event_type, subject, machine_id, window_s, bucket_start"
)


def results(db: DatabaseHandle) -> dict[str, list[tuple]]:
    return {"agg": db.query(AGG_ROWS), "events": db.query(EVENT_ROWS), "rollups": db.query(ROLLUP_ROWS)}


def agg(db: DatabaseHandle, window_s: int) -> dict[datetime, tuple]:
    """bucket_start -> (count, sum, avg, min, max, stddev, first, last, p50, p95) of s-001/temp."""
    return {row[1]: row[8:] for row in db.query(AGG_ROWS) if row[0] == window_s}


def test_window_aggregates_exact_rows_from_known_messages(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    produce(settings.kafka_brokers, domain_topic(settings, "sensor"), [(KEY, m) for m in SENSOR_WAVE_1])
    reported = drain(defs, instance, ["sensor"])
    assert sorted(reported["raw_sensor_readings"]) == ["2025-08-20-03:00", "2025-08-20-04:00"]
    for partition in reported["raw_sensor_readings"]:
        materialize(defs, instance, ["sensor_window_aggregates"], partition)

    # 60 s: [10, 20, 30] | [40] | [50] | [60]; the duplicate of r2 is counted once
    assert agg(database, 60) == {
        at("2025-08-20T03:00:00"): (3, 60.0, 20.0, 10.0, 30.0, 10.0, 10.0, 30.0, 20.0, 29.0),
        at("2025-08-20T03:01:00"): (1, 40.0, 40.0, 40.0, 40.0, None, 40.0, 40.0, 40.0, 40.0),
        at("2025-08-20T03:59:00"): (1, 50.0, 50.0, 50.0, 50.0, None, 50.0, 50.0, 50.0, 50.0),
        at("2025-08-20T04:00:00"): (1, 60.0, 60.0, 60.0, 60.0, None, 60.0, 60.0, 60.0, 60.0),
    }
    # 300 s: [10, 20, 30, 40]: stddev sqrt(500/3) = 12.909944, p95 = 30 + 0.85 * 10 = 38.5
    assert agg(database, 300) == {
        at("2025-08-20T03:00:00"): (4, 100.0, 25.0, 10.0, 40.0, 12.909944, 10.0, 40.0, 25.0, 38.5),
        at("2025-08-20T03:55:00"): (1, 50.0, 50.0, 50.0, 50.0, None, 50.0, 50.0, 50.0, 50.0),
        at("2025-08-20T04:00:00"): (1, 60.0, 60.0, 60.0, 60.0, None, 60.0, 60.0, 60.0, 60.0),
    }
    # 3600 s: [10, 20, 30, 40, 50]: stddev sqrt(250) = 15.811388, p95 = 40 + 0.8 * 10 = 48
    assert agg(database, 3600) == {
        at("2025-08-20T03:00:00"): (5, 150.0, 30.0, 10.0, 50.0, 15.811388, 10.0, 50.0, 30.0, 48.0),
        at("2025-08-20T04:00:00"): (1, 60.0, 60.0, 60.0, 60.0, None, 60.0, 60.0, 60.0, 60.0),
    }
    row = database.query(AGG_ROWS)[0]
    assert row[:8] == (60, at("2025-08-20T03:00:00"), at("2025-08-20T03:01:00"), "t1", "f1", "mc-01", "s-001", "temp")


def test_a_late_message_updates_exactly_its_buckets_and_a_replay_changes_nothing(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    sensor_topic = domain_topic(settings, "sensor")
    produce(settings.kafka_brokers, sensor_topic, [(KEY, m) for m in SENSOR_WAVE_1])
    for partition in drain(defs, instance, ["sensor"])["raw_sensor_readings"]:
        materialize(defs, instance, ["sensor_window_aggregates"], partition)
    before = set(database.query(AGG_ROWS))

    produce(settings.kafka_brokers, sensor_topic, [(KEY, reading("2025-08-20T03:00:45Z", 25.0, "late-1"))])
    reported = drain(defs, instance, ["sensor"])
    assert reported == {"raw_sensor_readings": ["2025-08-20-03:00"]}
    materialize(defs, instance, ["sensor_window_aggregates"], "2025-08-20-03:00")
    after = set(database.query(AGG_ROWS))

    # exactly the three buckets containing 03:00:45 changed: 60 s [10,20,25,30], 300 s, 3600 s
    assert sorted((r[0], r[1]) for r in before - after) == [
        (60, at("2025-08-20T03:00:00")),
        (300, at("2025-08-20T03:00:00")),
        (3600, at("2025-08-20T03:00:00")),
    ]
    assert agg(database, 60)[at("2025-08-20T03:00:00")][:5] == (4, 85.0, 21.25, 10.0, 30.0)
    assert agg(database, 3600)[at("2025-08-20T03:00:00")][:3] == (6, 175.0, 175.0 / 6)

    # replay the whole topic from offset 0: raw and aggregates stay exactly as they are
    with database.connect(database.admin_url) as conn:
        store.reset_checkpoints(conn, settings.drain_consumer, sensor_topic, 0)
    drain(defs, instance, ["sensor"])
    materialize(defs, instance, ["sensor_window_aggregates"], "2025-08-20-03:00")
    assert set(database.query(AGG_ROWS)) == after
    assert database.scalar("SELECT count(*) FROM analytics.raw_sensor_readings") == 7


def test_a_window_longer_than_an_hour_is_whole_from_any_of_its_hours(
    settings: PlatformSettings, database: DatabaseHandle, instance: dg.DagsterInstance
) -> None:
    """7200 s buckets span two hourly partitions: whichever hour computes one, it holds every
    reading of both hours; re-materialising the other hour gives the same row."""
    wide = settings.model_copy(update={"windows": [60, 7200]})
    defs = build_definitions(wide, secrets_from_env=False)
    produce(settings.kafka_brokers, domain_topic(settings, "sensor"), [(KEY, m) for m in SENSOR_WAVE_1])
    drain(defs, instance, ["sensor"])
    materialize(defs, instance, ["sensor_window_aggregates"], "2025-08-20-03:00")
    first = agg(database, 7200)
    # the 03:00 hour writes the one 7200 s bucket overlapping it, 02:00-04:00 (04:00's belongs to 04:00)
    assert first == {at("2025-08-20T02:00:00"): (5, 150.0, 30.0, 10.0, 50.0, 15.811388, 10.0, 50.0, 30.0, 48.0)}
    produce(
        settings.kafka_brokers, domain_topic(settings, "sensor"), [(KEY, reading("2025-08-20T02:30:00Z", 0.0, "early"))]
    )
    drain(defs, instance, ["sensor"])
    materialize(defs, instance, ["sensor_window_aggregates"], "2025-08-20-02:00")
    from_two = agg(database, 7200)[at("2025-08-20T02:00:00")]
    assert from_two[:4] == (6, 150.0, 25.0, 0.0)
    materialize(defs, instance, ["sensor_window_aggregates"], "2025-08-20-03:00")
    assert agg(database, 7200)[at("2025-08-20T02:00:00")] == from_two
    assert database.scalar("SELECT count(*) FROM analytics.analytics_agg WHERE window_s = 7200") == 1


def produce_events(settings: PlatformSettings) -> None:
    produce(settings.kafka_brokers, domain_topic(settings, "device"), [(KEY, m) for m in HEALTH])
    produce(settings.kafka_brokers, domain_topic(settings, "sweep"), [(KEY, m) for m in SWEEPS])
    produce(settings.kafka_brokers, domain_topic(settings, "lab"), [("t1-f1-lab-f1", m) for m in LAB])


def rollup(db: DatabaseHandle, event_type: str, window_s: int, subject: str = "") -> dict[datetime, tuple]:
    """bucket_start -> (count_n, pass_n, fail_n, fail_rate, pass_rate, uptime_pct, details)."""
    return {
        r[3]: (*r[8:14], json.loads(r[14]))
        for r in db.query(ROLLUP_ROWS)
        if r[0] == event_type and r[2] == window_s and r[1] == subject
    }


def test_device_health_transitions_offline_periods_uptime_and_day(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    produce_events(settings)
    reported = drain(defs, instance, ["device"])
    assert sorted(reported["raw_device_health"]) == ["2025-08-20-03:00", "2025-08-20-04:00"]
    materialize_range(defs, instance, ["device_health_events"], "2025-08-20-03:00", "2025-08-20-04:00")
    materialize(defs, instance, ["daily_event_rollups"], "2025-08-20")

    events = [(r[1], r[6], r[7], r[10], r[11], json.loads(r[12])) for r in database.query(EVENT_ROWS)]
    # nothing at all came between the score at 03:50 and the offline status at 04:30: silent for more than
    # DEVICE_OFFLINE_MINUTES (10), offline from its last message, as the device_offline alert reports it
    silent = {"open": False, "no_data": True}
    assert events == [
        ("offline_period", at("2025-08-20T03:20:00"), "critical", at("2025-08-20T03:40:00"), 1200.0, {"open": False}),
        ("offline_period", at("2025-08-20T03:50:00"), "critical", at("2025-08-20T04:30:00"), 2400.0, silent),
        ("offline_period", at("2025-08-20T04:30:00"), "critical", None, None, {"open": True}),
        ("status_change", at("2025-08-20T03:20:00"), "critical", None, None, {"from": "online", "to": "offline"}),
        ("status_change", at("2025-08-20T03:40:00"), "ok", None, None, {"from": "offline", "to": "online"}),
        ("status_change", at("2025-08-20T04:30:00"), "critical", None, None, {"from": "online", "to": "offline"}),
    ]
    hourly = rollup(database, "device_health", 3600)
    # 03:00: unobserved until 03:10; up 03:10-03:20 + 03:40-03:50 = 1200 s, offline 03:20-03:40 and (silent)
    # 03:50-04:00 = 1800 s -> 40 %
    h3 = hourly[at("2025-08-20T03:00:00")]
    assert h3[0] == 5 and h3[5] == 40.0
    assert h3[6]["up_s"] == 1200.0 and h3[6]["down_s"] == 1800.0 and h3[6]["offline_s"] == 1800.0
    assert (h3[6]["health_n"], h3[6]["health_min"], h3[6]["health_max"]) == (2, 0.8, 0.9)
    assert h3[6]["health_avg"] == pytest.approx(0.85) and h3[6]["health_stddev"] == pytest.approx(0.0707107, abs=1e-6)
    # 04:00: silent until 04:30, then offline -> 0 %
    h4 = hourly[at("2025-08-20T04:00:00")]
    assert (h4[0], h4[5], h4[6]["up_s"], h4[6]["down_s"]) == (1, 0.0, 0.0, 3600.0)
    # day: up 1200 s, down 5400 s in hours 3 and 4, and offline from 04:30 on: nothing came after it, so
    # hours 5-23 carry that status (19 x 3600 s down) -> 1200 / 75000 = 1.6 %; counts are the sums of the hours
    day = rollup(database, "device_health", 86400)[at("2025-08-20T00:00:00")]
    assert (day[0], day[5], day[6]["up_s"], day[6]["down_s"], day[6]["health_n"]) == (6, 1.6, 1200.0, 73800.0, 2)
    assert rollup(database, "status_change", 86400)[at("2025-08-20T00:00:00")][0] == 3
    assert rollup(database, "offline_period", 86400)[at("2025-08-20T00:00:00")][0] == 3
    assert sorted(rollup(database, "status_change", 60)) == [
        at("2025-08-20T03:20:00"),
        at("2025-08-20T03:40:00"),
        at("2025-08-20T04:30:00"),
    ]


def test_sweep_and_lab_against_spec_limits_and_a_limit_change(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    with database.connect() as conn:
        assert load_spec_limits(conn) == 8  # the shipped file: t1 and t2, 3 analytes + temp each
    produce_events(settings)
    drain(defs, instance, ["sweep", "lab"])
    materialize(defs, instance, ["sweep_batch_quality", "lab_result_quality"], "2025-08-20-03:00")

    sweeps = [(r[6], r[8], r[9], r[7], json.loads(r[12])) for r in database.query(EVENT_ROWS) if r[0] == "sweep"]
    assert [s[:4] for s in sweeps] == [
        (at("2025-08-20T03:15:00"), 65.0, True, "pass"),
        (at("2025-08-20T03:45:00"), 63.5, False, "fail"),
    ]
    assert sweeps[1][4] | {"stddev": round(sweeps[1][4]["stddev"], 6)} == {
        "metric": "temp",
        "batch_id": "B-2",
        "unit": None,
        "n": 2,
        "mean": 63.5,
        "min": 62.0,
        "max": 65.0,
        "stddev": 2.12132,
        "out_of_spec_n": 1,
        "lower_limit": 63.0,
        "upper_limit": 67.0,
        "target": 65.0,
    }
    assert rollup(database, "sweep_batch", 3600)[at("2025-08-20T03:00:00")][:5] == (2, 1, 1, 0.5, 0.5)

    labs = [(json.loads(r[12])["analyte"], r[8], r[9], r[7]) for r in database.query(EVENT_ROWS) if r[0] == "lab"]
    assert labs == [
        ("Moisture", 12.0, True, "pass"),
        ("Moisture", 14.0, False, "fail"),
        ("pH", 6.8, True, "pass"),
        ("Ash", 1.0, None, "no_limit"),
    ]
    assert rollup(database, "lab_result", 3600, "Moisture")[at("2025-08-20T03:00:00")][:5] == (2, 1, 1, 0.5, 0.5)
    assert rollup(database, "lab_result", 3600, "Ash")[at("2025-08-20T03:00:00")][:5] == (1, 0, 0, None, None)

    # a limit is data: widen Moisture, re-materialise, and 14.0 passes
    with database.connect() as conn:
        conn.execute(
            "UPDATE analytics.analytics_spec_limits SET upper_limit = 15 WHERE tenant_id = 't1' AND name = 'Moisture'"
        )
    materialize(defs, instance, ["lab_result_quality"], "2025-08-20-03:00")
    materialize(defs, instance, ["daily_event_rollups"], "2025-08-20")
    assert rollup(database, "lab_result", 3600, "Moisture")[at("2025-08-20T03:00:00")][:5] == (2, 2, 0, 0.0, 1.0)
    assert rollup(database, "lab_result", 86400, "Moisture")[at("2025-08-20T00:00:00")][:5] == (2, 2, 0, 0.0, 1.0)
    assert rollup(database, "sweep_batch", 86400)[at("2025-08-20T00:00:00")][:5] == (2, 1, 1, 0.5, 0.5)
    assert database.scalar("SELECT count(*) FROM analytics.analytics_event WHERE domain = 'lab'") == 4


def test_automation_requests_exactly_the_changed_partitions_late_ones_included(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings
) -> None:
    now = at("2025-08-20T04:10:00")
    tick = Ticks(defs, instance, dg.AssetSelection.assets(AGG))
    start = tick(now)
    assert start.total_requested == 0  # no raw data yet
    produce(settings.kafka_brokers, domain_topic(settings, "sensor"), [(KEY, m) for m in SENSOR_WAVE_1])
    drain(defs, instance, ["sensor"])
    first = tick(now)
    assert sorted(first.get_requested_partitions(AGG)) == ["2025-08-20-03:00", "2025-08-20-04:00"]
    # nothing new: nothing requested, however many evaluations
    again = tick(now)
    assert again.total_requested == 0
    # a late reading for 01:00 (three hours back): exactly that hour
    produce(
        settings.kafka_brokers, domain_topic(settings, "sensor"), [(KEY, reading("2025-08-20T01:30:00Z", 1.0, "late"))]
    )
    drain(defs, instance, ["sensor"])
    late = tick(now)
    assert sorted(late.get_requested_partitions(AGG)) == ["2025-08-20-01:00"]


def test_live_processing_equals_a_backfill_of_the_same_range(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """Live: two waves drained and processed partition by partition as they were reported, the second
    with late data, duplicates and a re-send of the first. Then the results are wiped and the whole
    range is backfilled in one run per asset (twice): every row equals the live one."""
    with database.connect() as conn:
        load_spec_limits(conn)
    sensor_topic = domain_topic(settings, "sensor")
    produce(settings.kafka_brokers, sensor_topic, [(KEY, m) for m in SENSOR_WAVE_1[:4]])
    produce_events(settings)

    def process_live() -> None:
        reported = drain(defs, instance)
        raw_to_asset = {
            "raw_sensor_readings": "sensor_window_aggregates",
            "raw_device_health": "device_health_events",
            "raw_sweep_readings": "sweep_batch_quality",
            "raw_lab_results": "lab_result_quality",
        }
        for raw, partitions in reported.items():
            for partition in sorted(partitions):
                materialize(defs, instance, [raw_to_asset[raw]], partition)

    process_live()
    wave_2 = [
        *SENSOR_WAVE_1[4:],
        reading("2025-08-20T02:59:59Z", 5.0, "late-1"),  # late, into an earlier hour
        reading("2025-08-20T03:00:45Z", 25.0, "late-2"),  # late, into a processed bucket
        *SENSOR_WAVE_1[:4],  # the first wave again (edge replay)
    ]
    produce(settings.kafka_brokers, sensor_topic, [(KEY, m) for m in wave_2])
    produce(settings.kafka_brokers, domain_topic(settings, "device"), [(KEY, m) for m in HEALTH[:2]])  # re-sent
    process_live()
    materialize(defs, instance, ["daily_event_rollups"], "2025-08-20")
    live = results(database)
    # events: 3 status changes, 3 offline periods (one of them HEALTH's silence 03:50-04:30), 2 sweeps, 4 lab results
    assert len(live["agg"]) == 12 and len(live["events"]) == 12 and len(live["rollups"]) > 20

    with database.connect() as conn:
        conn.execute("TRUNCATE analytics.analytics_agg, analytics.analytics_event, analytics.analytics_event_rollup")
    for _ in range(2):
        materialize_range(defs, instance, HOURLY, "2025-08-20-00:00", "2025-08-20-23:00")
        materialize(defs, instance, ["daily_event_rollups"], "2025-08-20")
        assert results(database) == live


def test_the_day_rollup_waits_for_its_day_to_end_then_follows_late_hours(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings
) -> None:
    daily = dg.AssetKey("daily_event_rollups")
    tick = Ticks(defs, instance, dg.AssetSelection.assets(daily))
    produce_events(settings)
    drain(defs, instance, ["device"])
    materialize_range(defs, instance, ["device_health_events"], "2025-08-20-03:00", "2025-08-20-04:00")

    # during the day: its partition does not exist yet, nothing is requested
    during = tick(at("2025-08-20T23:59:00"))
    assert during.total_requested == 0
    # once the day has ended: exactly that day
    after = tick(at("2025-08-21T00:05:00"))
    assert after.get_requested_partitions(daily) == {"2025-08-20"}
    materialize(defs, instance, ["daily_event_rollups"], "2025-08-20")
    quiet = tick(at("2025-08-21T00:10:00"))
    assert quiet.total_requested == 0
    # a late health message for 05:00 re-materialises its hour, and then the day again
    produce(
        settings.kafka_brokers,
        domain_topic(settings, "device"),
        [(KEY, body("2025-08-20T05:00:00Z", health_score=0.7))],
    )
    drain(defs, instance, ["device"])
    materialize(defs, instance, ["device_health_events"], "2025-08-20-05:00")
    late = tick(at("2025-08-21T00:15:00"))
    assert late.get_requested_partitions(daily) == {"2025-08-20"}
