"""The seasonal statistics judged live on closed 60 s samples (issue 22 item 3), on real PostgreSQL:
the live judge writes, for a sample that closed, exactly the rows the hourly asset writes for it
(same function, same inputs: the hour's stored profiles, its readings so far, the aggregates before
it, provisional where the aggregate asset has not made them final yet), so the hour confirms them;
a reading arriving after the sample was judged is the hour's to weigh, and it confirms the live row
or closes it `not_confirmed` by what it finds."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from analytics_platform.results.aggregates import recompute_aggregates
from analytics_platform.results.anomalies import AnomalyOptions, profiles_for_hour, recompute_anomalies
from analytics_platform.results.live_detection import _stored_profiles, judge_closed_buckets
from analytics_platform.transforms.anomalies import STATISTICAL
from analytics_platform.transforms.window_aggregates import READING_SCHEMA
from analytics_platform_tests.support.readings import store_raw_readings
from analytics_platform_tests.support.stack import DatabaseHandle

START = datetime(2025, 8, 15, tzinfo=UTC)  # four days of history before the judged day
DAY = datetime(2025, 8, 19, tzinfo=UTC)
HOUR = DAY + timedelta(hours=13)
SPIKE = DAY + timedelta(hours=13, minutes=5)
YOUNG_FROM = DAY + timedelta(hours=2)  # a second series that appears the same morning (re-learned hourly)
OPTIONS = AnomalyOptions()
KEYS = {("t1", "f1", "m1", "s-temp", "temp"), ("t1", "f1", "m1", "s-oil", "oil_temp")}
# the first pass places the position at 13:02; the second judges the samples 13:02 .. 13:05
POSITION = SPIKE - timedelta(minutes=3)
FIRST, SECOND = POSITION + timedelta(seconds=5), SPIKE + timedelta(seconds=65)

ROWS = (
    "SELECT tenant_id, factory_id, machine_id, sensor_id, metric, method, anomaly_type, time, window_start, "
    "window_end, score, severity, severity_label, confidence, observed, expected, details, model_version, sample_s "
    "FROM analytics.analytics_anomaly WHERE window_start >= %s AND window_start < %s AND method = ANY(%s) "
    "ORDER BY sensor_id, time, method"
)
LIVE = (
    "SELECT sensor_id, method, time, status, confirmed_at IS NOT NULL FROM analytics.analytics_anomaly "
    "WHERE detected_live_at IS NOT NULL ORDER BY sensor_id, time, method"
)


def temperature(t: datetime) -> float:
    """A daily swing (peak 15:00), a deterministic wobble, and the spike."""
    days = (t - START).total_seconds() / 86_400
    value = 60 + 8 * math.cos(2 * math.pi * (days % 1 - 15 / 24)) + 0.4 * math.sin(17.3 * days * 24)
    if t == SPIKE:
        value += 12
    return round(value, 4)


def readings() -> pl.DataFrame:
    rows = []
    t = START
    while t < DAY + timedelta(hours=14):
        rows.append((t, "t1", "f1", "m1", "s-temp", "temp", temperature(t)))
        if t >= YOUNG_FROM:
            rows.append((t, "t1", "f1", "m1", "s-oil", "oil_temp", round(40 + 0.3 * math.sin(t.timestamp() / 900), 4)))
        t += timedelta(minutes=5)
    return pl.DataFrame(rows, schema=READING_SCHEMA, orient="row")


@pytest.fixture
def loaded(database: DatabaseHandle) -> DatabaseHandle:
    """Readings to 14:00 of the judged day; the 60 s aggregates stored up to 12:00 only (the hour
    before the judged one is not materialised yet: the live judge computes it as the asset will);
    the judged hour's profiles stored (its midnight one and the young series' own)."""
    store_raw_readings(database, readings(), aggregates=pl.col("bucket_start") < HOUR - timedelta(hours=1))
    with database.connect(database.pipeline_url) as conn:
        profiles, learned = profiles_for_hour(conn, HOUR, KEYS, OPTIONS)
    assert learned == 3 and set(profiles) == KEYS  # the day's two and the young series' hourly one
    return database


def judged_window() -> tuple:
    return (POSITION, SPIKE + timedelta(minutes=1), list(STATISTICAL))


def materialise_hour(database: DatabaseHandle) -> None:
    """What the pipeline does by hh:10: the aggregates of the hour before, then the anomaly hour."""
    with database.connect(database.pipeline_url) as conn:
        recompute_aggregates(conn, [60], HOUR - timedelta(hours=1), HOUR)
        recompute_anomalies(conn, HOUR, HOUR + timedelta(hours=1), OPTIONS)


def test_the_hour_confirms_exactly_the_rows_judged_live_on_a_closed_sample(loaded: DatabaseHandle) -> None:
    with loaded.connect(loaded.pipeline_url) as conn:
        placed = judge_closed_buckets(conn, OPTIONS, now=FIRST)
        passed = judge_closed_buckets(conn, OPTIONS, now=SECOND)
        again = judge_closed_buckets(conn, OPTIONS, now=SECOND)
    assert (placed.judged, placed.flagged, placed.since, placed.until) == (0, 0, POSITION, POSITION)
    assert (passed.since, passed.until) == (POSITION, SPIKE + timedelta(minutes=1))
    assert passed.judged == 2  # both series' readings of 13:05 (the samples before it have none)
    live = loaded.query(ROWS, judged_window())
    assert passed.flagged == len(live) >= 1
    # the z-score (`deviation`) critical, the sudden change (`shift4`) a warning, both on the spike's sample
    assert [(r[3], r[5], r[7], r[8], r[11], r[16]["statistic"]) for r in live] == [
        ("s-temp", "deviation", SPIKE, SPIKE, 5, "deviation"),
        ("s-temp", "shift", SPIKE, SPIKE, 2, "shift4"),
    ]
    assert (again.judged, again.flagged) == (0, 0)
    assert loaded.query(LIVE) == [(r[3], r[5], r[7], "open", False) for r in live]

    materialise_hour(loaded)

    # the hour wrote the same rows, to the last bit, and confirmed each; nothing was left unconfirmed
    assert loaded.query(ROWS, judged_window()) == live
    assert loaded.query(LIVE) == [(r[3], r[5], r[7], "open", True) for r in live]
    # judged again from the same position (a restart, a cursor moved back): nothing new, nothing changed
    with loaded.connect(loaded.pipeline_url) as conn:
        conn.execute("UPDATE analytics.live_detection_cursor SET position = %s WHERE judge = 'seasonal'", (POSITION,))
        repeat = judge_closed_buckets(conn, OPTIONS, now=SECOND)
    assert (repeat.judged, repeat.flagged) == (2, 0)
    assert loaded.query(LIVE) == [(r[3], r[5], r[7], "open", True) for r in live]


@pytest.mark.parametrize(
    ("late_value", "status", "confirmed"),
    [
        (temperature(SPIKE) - 24, "not_confirmed", False),  # the sample's mean is back on the profile
        (temperature(SPIKE), "open", True),  # a second spike: still flagged, same furthest reading (the first)
    ],
)
def test_a_late_reading_in_a_judged_sample_is_the_hours_to_weigh(
    loaded: DatabaseHandle, late_value: float, status: str, confirmed: bool
) -> None:
    with loaded.connect(loaded.pipeline_url) as conn:
        judge_closed_buckets(conn, OPTIONS, now=FIRST)
        passed = judge_closed_buckets(conn, OPTIONS, now=SECOND)
    live = loaded.query(LIVE)
    assert passed.flagged == len(live) >= 1 and ("s-temp", "deviation", SPIKE, "open", False) in live

    late = pl.DataFrame(
        [(SPIKE + timedelta(seconds=30), "t1", "f1", "m1", "s-temp", "temp", late_value)],
        schema=READING_SCHEMA,
        orient="row",
    )
    store_raw_readings(loaded, late, first_offset=1_000_000)
    materialise_hour(loaded)

    assert loaded.query(LIVE) == [(s, m, t, status, confirmed) for s, m, t, _, _ in live]
    found = loaded.query(
        "SELECT count(*) FROM analytics.analytics_anomaly WHERE detected_live_at IS NULL AND window_start = %s "
        "AND method = ANY(%s)",
        (SPIKE, list(STATISTICAL)),
    )
    assert found == [(0,)]  # the hour added no statistical row of its own to the judged sample


def test_series_without_the_hours_stored_profile_are_left_to_the_hour(loaded: DatabaseHandle) -> None:
    """Learning a profile reads days of aggregates: the hour's work, never a live tick's. Without
    the hour's profiles the spike waits for the hour, and the live pass stores no profile."""
    with loaded.connect() as conn:
        conn.execute("DELETE FROM analytics.analytics_anomaly_model")
    with loaded.connect(loaded.pipeline_url) as conn:
        judge_closed_buckets(conn, OPTIONS, now=FIRST)
        passed = judge_closed_buckets(conn, OPTIONS, now=SECOND)
    assert (passed.judged, passed.flagged) == (2, 0)
    assert loaded.query("SELECT count(*) FROM analytics.analytics_anomaly_model") == [(0,)]
    assert loaded.query(LIVE) == []


def test_a_young_series_is_judged_only_with_the_profile_the_hour_re_learns_for_itself(loaded: DatabaseHandle) -> None:
    """A series younger than a day is judged by the hour with a profile learned up to the hour; its
    midnight profile (stored too) is not the hour's, so without the hour's own it is left out."""
    with loaded.connect(loaded.pipeline_url) as conn:
        both = _stored_profiles(conn, HOUR, KEYS, OPTIONS)
        conn.execute(
            "DELETE FROM analytics.analytics_anomaly_model WHERE sensor_id = 's-oil' AND trained_to = %s", (HOUR,)
        )
        without = _stored_profiles(conn, HOUR, KEYS, OPTIONS)
    assert {k[3]: p.trained_to for k, p in both.items()} == {"s-temp": DAY, "s-oil": HOUR}
    assert {k[3]: p.trained_to for k, p in without.items()} == {"s-temp": DAY}
