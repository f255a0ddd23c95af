"""Live == backfill for the seasonal anomaly detectors (issue 20), on real PostgreSQL: hours judged one
by one as the hourly schedule does (each run its own process: nothing cached), and the same hours
judged again from scratch in reverse order within one run (a backfill), give the same rows, the same
profiles, and the same events. Profiles are a function of the hour alone (learned up to its midnight,
or up to the hour while the series is younger than a day), so the order hours run in cannot matter."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from analytics_platform.results import anomalies as anomaly_results
from analytics_platform.results.anomalies import AnomalyOptions, recompute_anomalies
from analytics_platform.transforms.window_aggregates import READING_SCHEMA
from analytics_platform_tests.support.readings import store_raw_readings
from analytics_platform_tests.support.stack import DatabaseHandle

START = datetime(2025, 8, 15, tzinfo=UTC)  # a Friday: four days of history before the judged day
DAY = datetime(2025, 8, 19, tzinfo=UTC)
HOURS = [DAY + timedelta(hours=h) for h in range(8, 16)]
SPIKE = DAY + timedelta(hours=13, minutes=5)
SHIFT = (DAY + timedelta(hours=10), DAY + timedelta(hours=11))
YOUNG_FROM = DAY + timedelta(hours=2)  # a second series that appears the same morning


def temperature(t: datetime) -> float:
    """A daily swing (peak 15:00), a deterministic wobble, the injected spike and level shift."""
    days = (t - START).total_seconds() / 86_400
    value = 60 + 8 * math.cos(2 * math.pi * (days % 1 - 15 / 24)) + 0.4 * math.sin(17.3 * days * 24)
    if t == SPIKE:
        value += 12
    if SHIFT[0] <= t < SHIFT[1]:
        value += 4
    return round(value, 4)


def readings() -> pl.DataFrame:
    rows = []
    t = START
    while t < DAY + timedelta(hours=16):
        rows.append((t, "t1", "f1", "m1", "s-temp", "temp", temperature(t)))
        if t >= YOUNG_FROM:
            rows.append((t, "t1", "f1", "m1", "s-oil", "oil_temp", round(40 + 0.3 * math.sin(t.timestamp() / 900), 4)))
        t += timedelta(minutes=5)
    return pl.DataFrame(rows, schema=READING_SCHEMA, orient="row")


@pytest.fixture
def loaded(database: DatabaseHandle) -> DatabaseHandle:
    store_raw_readings(database, readings(), aggregates=pl.lit(True))
    return database


ROWS = (
    "SELECT tenant_id, factory_id, machine_id, sensor_id, metric, method, anomaly_type, time, window_start, "
    "window_end, score, severity, severity_label, confidence, observed, expected, details, model_version, sample_s "
    "FROM analytics.analytics_anomaly ORDER BY sensor_id, time, method"
)
PROFILES = (
    "SELECT sensor_id, trained_to, n_samples, params->'profile' FROM analytics.analytics_anomaly_model "
    "WHERE method = 'seasonal' ORDER BY sensor_id, trained_to"
)
EVENTS = (
    "SELECT sensor_id, start_time, end_time, severity, methods, anomalies "
    "FROM analytics.anomaly_events(%s, %s) ORDER BY sensor_id, start_time"
)


def test_hours_judged_live_and_in_a_reverse_backfill_are_identical(loaded: DatabaseHandle) -> None:
    options = AnomalyOptions()
    with loaded.connect(loaded.pipeline_url) as conn:
        for hour in HOURS:  # live: one run per hour, nothing carried over
            recompute_anomalies(conn, hour, hour + timedelta(hours=1), options)
    live = loaded.query(ROWS)
    live_profiles = loaded.query(PROFILES)
    live_events = loaded.query(EVENTS, (HOURS[0], HOURS[-1] + timedelta(hours=1)))

    # what the hours show: the level shift from its first sample, the spike, both critical (four days
    # of history); the young series is judged (hourly re-learned profiles) and quiet
    events = [(s, a, b, sev, methods) for s, a, b, sev, methods, _ in live_events]

    assert [(s, a, sev >= 3) for s, a, _, sev, _ in events] == [
        ("s-temp", SHIFT[0], True),
        ("s-temp", SPIKE, True),
    ]
    shift_event = events[0]
    assert SHIFT[1] - timedelta(minutes=5) <= shift_event[2] <= SHIFT[1] + timedelta(minutes=15)
    assert "deviation" in shift_event[4]
    young = [p for p in live_profiles if p[0] == "s-oil"]
    assert [(t, p["stage"]) for _, t, _, p in young][:3] == [
        (DAY, "learning"),
        (HOURS[0], "flat"),
        (HOURS[1], "flat"),
    ]

    with loaded.connect() as conn:
        conn.execute("DELETE FROM analytics.analytics_anomaly")
        conn.execute("DELETE FROM analytics.analytics_anomaly_model")
    with loaded.connect(loaded.pipeline_url) as conn:
        forests: dict = {}
        profiles: dict = {}
        for hour in reversed(HOURS):  # a backfill: newest first, one run sharing its caches
            recompute_anomalies(conn, hour, hour + timedelta(hours=1), options, forests, profiles)
    assert loaded.query(ROWS) == live
    assert loaded.query(EVENTS, (HOURS[0], HOURS[-1] + timedelta(hours=1))) == live_events
    # the same profiles were learned (stored in another order: compare as sets)
    assert sorted(map(repr, loaded.query(PROFILES))) == sorted(map(repr, live_profiles))


def test_hours_judged_in_one_call_equal_the_hours_judged_one_by_one(loaded: DatabaseHandle) -> None:
    """The asset judges a day in one call: one read of the trailing aggregates, sliced per hour, and
    the forests fitted from that slice when the call starts at the forests' training end (midnight).
    Every hour must still come out exactly as when it ran alone."""
    options = AnomalyOptions()
    span = (HOURS[0], HOURS[-1] + timedelta(hours=1))
    with loaded.connect(loaded.pipeline_url) as conn:
        for hour in HOURS:
            recompute_anomalies(conn, hour, hour + timedelta(hours=1), options)
    live = loaded.query(ROWS)
    live_profiles = loaded.query(PROFILES)
    live_events = loaded.query(EVENTS, span)
    assert {row[5] for row in live} >= {"deviation", "isolation_forest"}  # both detectors have rows to compare

    for first in (HOURS[0], DAY):  # the judged hours alone; from midnight (forests fitted from the call's read)
        with loaded.connect() as conn:
            conn.execute("DELETE FROM analytics.analytics_anomaly")
            conn.execute("DELETE FROM analytics.analytics_anomaly_model")
        with loaded.connect(loaded.pipeline_url) as conn:
            run = recompute_anomalies(conn, first, span[1], options)
        assert run.anomalies == len(loaded.query(ROWS))
        assert loaded.query(ROWS.replace("ORDER BY", "WHERE time >= %s ORDER BY"), (span[0],)) == live
        assert loaded.query(EVENTS, span) == live_events
        profiles = sorted(map(repr, loaded.query(PROFILES)))
        if first == HOURS[0]:
            assert profiles == sorted(map(repr, live_profiles))
        else:  # the earlier hours learned the young series' profiles of their own hours too
            assert set(sorted(map(repr, live_profiles))) <= set(profiles)


def test_each_hours_run_states_from_the_runs_one_read_equal_the_hours_own_queries(database: DatabaseHandle) -> None:
    """A run reads the run states once and builds every hour's intervals from them: the same as the hour's
    own two queries, also where the state before the hour is only just inside the lookback, is two
    messages at one instant (the least state wins, as DISTINCT ON picks), or is too old to count."""
    lookback = timedelta(hours=6)
    health = [
        ("m1", DAY - timedelta(hours=9), "fault"),  # too old for every hour below
        ("m1", DAY + timedelta(hours=1, minutes=20), "running"),
        ("m1", DAY + timedelta(hours=3, minutes=5), "idle"),
        ("m1", DAY + timedelta(hours=3, minutes=5), "fault"),  # a tie: "fault" < "idle"
        ("m1", DAY + timedelta(hours=6), "running"),
        ("m2", DAY - timedelta(hours=1), "planned_stop"),  # before the run: its prior state
        ("m2", DAY + timedelta(hours=2, minutes=30), "running"),
        ("m2", DAY + timedelta(hours=2, minutes=40), "running"),  # a heartbeat, not a change
        ("m3", DAY - timedelta(hours=2, minutes=30), "maintenance"),  # within the lookback of hours 0-3 only
    ]
    with database.connect() as conn:
        conn.cursor().executemany(
            """INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, run_state,
                   schema_version, dedup_key, topic, kafka_partition, kafka_offset)
               VALUES (%s, 't1', 'f1', %s, %s, 1, %s, 'device.health', 0, 0)""",
            [(ts, m, s, f"{m}-{ts.isoformat()}-{s}") for m, ts, s in health],
        )
    with database.connect(database.pipeline_url) as conn:
        run = anomaly_results._run_states(conn, DAY, DAY + timedelta(hours=8), lookback)
        for hour in range(8):
            start = DAY + timedelta(hours=hour)
            for read_from in (start, start - timedelta(minutes=30)):
                if read_from < DAY:
                    continue
                own = anomaly_results._states(conn, read_from, start + timedelta(hours=1), lookback)
                assert anomaly_results._intervals(conn, run, read_from, start + timedelta(hours=1)).equals(own)
        at_four = anomaly_results._intervals(conn, run, DAY + timedelta(hours=4), DAY + timedelta(hours=5))
    assert at_four.sort("machine_id").select("machine_id", "state").rows() == [("m1", "fault"), ("m2", "running")]
