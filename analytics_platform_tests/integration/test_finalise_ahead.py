"""The smallest window's buckets written ahead of the rest (`results.aggregates.finalise_hour`, sql/27).

At 10:10 a 60 s and a 300 s bucket close together; the finaliser used to mark the minute final only
after it had read the five minutes the 300 s bucket needs (at 5,000 msg/s: 16-17 s after the close
instead of 8-9 s). It now writes the 60 s buckets in a transaction of their own with that window's own
mark, then the rest. Asserted on the real database and the REST API (its clock set to the moment):
between the two parts /v1/agg serves the minute as final with every reading and the 300 s bucket as
provisional, equal to what the rest of the run then stores; after the run every stored bucket is what
one full run writes; a crash between the parts leaves a state the next run completes exactly; a full
run clears the window's mark (its read is the newer truth); the hour's last bucket writes its minute
ahead before the full run the caller does.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest

from analytics_platform.ingest.store import claim_xid
from analytics_platform.results.aggregates import AggregateRun, finalise_hour, read_readings, recompute_aggregates
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms.window_aggregates import (
    AGG_COLUMNS,
    SERIES_KEY,
    canonical_order,
    covering_range,
    window_aggregates,
)
from analytics_platform_tests.support.api import Api, ok, running
from analytics_platform_tests.support.stack import DatabaseHandle

WINDOWS = [60, 300, 3600]
HOUR = datetime(2025, 8, 20, 10, tzinfo=UTC)
RAW = (
    "INSERT INTO analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric, value, "
    "schema_version, dedup_key, topic, kafka_partition, kafka_offset) "
    "VALUES (%s, %s, 'f1', 'm1', 's1', 'temp', %s, 1, %s, 'sensors', 0, %s) ON CONFLICT (time, dedup_key) DO NOTHING"
)
QUERY = {"factory_id": "f1", "machine_id": "m1", "metric": "temp", "start": "2025-08-20T10:00:00Z"}


def at(minute: float) -> datetime:
    return HOUR + timedelta(minutes=minute)


def store(conn: psycopg.Connection, rows: list[tuple[float, str, float]]) -> None:
    """(minute of HOUR, tenant, value) in one transaction, as the drain writes a batch (its id first)."""
    with conn.transaction(), conn.cursor() as cur:
        claim_xid(cur)
        for minute, tenant, value in rows:
            key = f"{tenant}|{minute}|{value}"
            cur.execute(RAW, (at(minute), tenant, value, key, zlib.crc32(key.encode())))


def expected(conn: psycopg.Connection, closed_by: datetime) -> list[tuple]:
    """The buckets of HOUR that ended by `closed_by`, computed from every reading stored."""
    lo, hi = covering_range(HOUR, HOUR + timedelta(hours=1), WINDOWS)
    readings = canonical_order(read_readings(conn, lo, hi))
    frame = window_aggregates(readings.lazy(), WINDOWS, start=HOUR, end=HOUR + timedelta(hours=1)).collect()
    frame = frame.with_columns(pl.col(k).cast(pl.String) for k in SERIES_KEY)
    return sorted(frame.filter(pl.col("bucket_end") <= closed_by).select(AGG_COLUMNS).rows(), key=_order)


def stored(conn: psycopg.Connection, closed_by: datetime) -> list[tuple]:
    rows = conn.execute(f"SELECT {', '.join(AGG_COLUMNS)} FROM analytics.analytics_agg").fetchall()
    return sorted((r for r in rows if r[1] <= closed_by), key=_order)


def _order(row: tuple) -> tuple:
    return row[2], row[0], row[3]


def marks(conn: psycopg.Connection) -> tuple:
    """The hour's as_of, its window marks, and the finaliser's position and closed_until."""
    return conn.execute(
        "SELECT m.as_of, m.window_as_of, p.position, p.closed_until, p.version = m.version "
        "FROM analytics.agg_materialised_hours m JOIN analytics.agg_finalise_positions p USING (hour_start) "
        "WHERE hour_start = %s",
        (HOUR,),
    ).fetchone()


def full_run_at(conn: psycopg.Connection, moment: datetime) -> None:
    """A full run of HOUR as if the clock had read `moment` (the database's clock is later than these readings)."""
    recompute_aggregates(conn, WINDOWS, HOUR, HOUR + timedelta(hours=1))
    conn.execute("UPDATE analytics.agg_materialised_hours SET as_of = %s WHERE hour_start = %s", (moment, HOUR))
    conn.execute("UPDATE analytics.agg_finalise_positions SET closed_until = %s WHERE hour_start = %s", (moment, HOUR))


@pytest.fixture
def conn(database: DatabaseHandle) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database.pipeline_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def api(settings: PlatformSettings, database: DatabaseHandle) -> Iterator[Api]:
    with running(settings.model_copy(update={"windows": WINDOWS, "agg_provisional_hours": 2}), database) as api:
        api.client.app.state.clock = lambda: at(10) + timedelta(seconds=8)
        yield api


def served(api: Api, window_s: int) -> dict[str, tuple]:
    """t1's buckets of `window_s` from 10:00 to 10:15: start -> (provisional, count, sum, min, max, last)."""
    items = ok(api.t1.get("/v1/agg", **QUERY, window_s=window_s, end="2025-08-20T10:15:00Z"))["items"]
    return {
        i["bucket_start"][11:16]: (i["provisional"], i["count"], i["sum"], i["min"], i["max"], i["last"]) for i in items
    }


# 10:00-10:05 stored by a full run at 10:05; then readings of 10:05-10:10 (out of order, two tenants with
# the same ids, a late one for 10:02), the open minute 10:10 too
BEFORE = [(0.5, "t1", 1.0), (2.5, "t1", 2.0), (4.5, "t1", 3.0), (4.6, "t2", 50.0)]
AFTER = [
    (9.5, "t1", 9.0),
    (5.5, "t1", 5.0),
    (7.25, "t1", 100.0),
    (7.5, "t1", 0.5),
    (2.75, "t1", 4.0),
    (6.1, "t2", -1.0),
]
OPEN = [(10.2, "t1", 7.0)]


def test_the_minute_is_final_before_the_five_minutes_are_read(conn: psycopg.Connection, api: Api) -> None:
    store(conn, BEFORE)
    full_run_at(conn, at(5))
    store(conn, AFTER)
    store(conn, OPEN)
    between: dict[int, dict[str, tuple]] = {}
    before = marks(conn)

    def look(part: AggregateRun) -> None:
        # the 60 s part committed: 10:05..10:09 of both series, and t1's late 10:02; not the 300 s buckets
        assert (part.buckets, part.late) == ({60: 5}, {60: 1})
        between.update({w: served(api, w) for w in (60, 300)})
        as_of, window_as_of, position, closed_until, same = marks(conn)
        assert (as_of, position, closed_until, same) == (at(5), before[2], at(5), True)
        assert datetime.fromisoformat(window_as_of["60"]) == at(10)

    run = finalise_hour(conn, WINDOWS, HOUR, at(10), on_ahead=look)
    assert isinstance(run, AggregateRun), run
    assert run.ahead is not None and (run.buckets, run.late) == ({60: 5, 300: 1, 3600: 0}, {60: 1, 300: 1})
    # between the parts: every minute to 10:10 final with its readings (the late 10:02 included), the
    # open 10:10 provisional; the 300 s bucket 10:05 provisional (computed on read, as the rest of the run
    # will), 10:00 as the 10:05 run stored it
    assert between[60] == {
        "10:00": (False, 1, 1.0, 1.0, 1.0, 1.0),
        "10:02": (False, 2, 6.0, 2.0, 4.0, 4.0),
        "10:04": (False, 1, 3.0, 3.0, 3.0, 3.0),
        "10:05": (False, 1, 5.0, 5.0, 5.0, 5.0),
        "10:07": (False, 2, 100.5, 0.5, 100.0, 0.5),
        "10:09": (False, 1, 9.0, 9.0, 9.0, 9.0),
        "10:10": (True, 1, 7.0, 7.0, 7.0, 7.0),
    }
    assert between[300] == {
        "10:00": (False, 3, 6.0, 1.0, 3.0, 3.0),  # final as of 10:05: the late 10:02 came after
        "10:05": (True, 4, 114.5, 0.5, 100.0, 9.0),
        "10:10": (True, 1, 7.0, 7.0, 7.0, 7.0),
    }
    # after the run: the minutes as they were; the 300 s 10:05 final with the numbers served before it
    # was, 10:00 with the late reading
    after = {w: served(api, w) for w in (60, 300)}
    assert after[60] == between[60]
    assert after[300] == {
        "10:00": (False, 4, 10.0, 1.0, 4.0, 3.0),
        "10:05": (False, 4, 114.5, 0.5, 100.0, 9.0),
        "10:10": (True, 1, 7.0, 7.0, 7.0, 7.0),
    }
    assert stored(conn, at(10)) == expected(conn, at(10))
    as_of, window_as_of, position, closed_until, same = marks(conn)
    assert (as_of, closed_until, same, position) == (at(10), at(10), True, run.position)
    assert datetime.fromisoformat(window_as_of["60"]) == at(10)


def test_a_crash_between_the_parts_is_completed_by_the_next_run(conn: psycopg.Connection, api: Api) -> None:
    store(conn, BEFORE)
    full_run_at(conn, at(5))
    before = marks(conn)
    store(conn, AFTER)

    def crash(part: AggregateRun) -> None:
        raise RuntimeError("the process died between the parts")

    with pytest.raises(RuntimeError):
        finalise_hour(conn, WINDOWS, HOUR, at(10), on_ahead=crash)
    as_of, window_as_of, position, closed_until, same = marks(conn)
    # the minute's part stands (final, its own mark); the position and the hour's mark did not move
    assert (as_of, position, closed_until, same) == (before[0], before[2], before[3], True)
    assert datetime.fromisoformat(window_as_of["60"]) == at(10)
    assert served(api, 300)["10:05"][0] is True
    store(conn, [(8.5, "t1", 8.0)])
    run = finalise_hour(conn, WINDOWS, HOUR, at(11))
    assert isinstance(run, AggregateRun), run
    # the next run starts from the old position: every bucket closed since 10:05 again, and the late ones
    assert (run.buckets, run.late) == ({60: 6, 300: 1, 3600: 0}, {60: 1, 300: 1})
    assert stored(conn, at(11)) == expected(conn, at(11))
    assert served(api, 300)["10:05"] == (False, 5, 122.5, 0.5, 100.0, 9.0)


def test_a_full_run_clears_the_window_marks(conn: psycopg.Connection) -> None:
    store(conn, BEFORE)
    full_run_at(conn, at(5))
    store(conn, AFTER)
    assert isinstance(finalise_hour(conn, WINDOWS, HOUR, at(10)), AggregateRun)
    assert marks(conn)[1] != {}
    recompute_aggregates(conn, WINDOWS, HOUR, HOUR + timedelta(hours=1))
    assert marks(conn)[1] == {}


def test_the_hours_last_minute_is_written_ahead_of_the_full_run(conn: psycopg.Connection, api: Api) -> None:
    store(conn, BEFORE)
    full_run_at(conn, at(5))
    store(conn, [*AFTER, (59.5, "t1", 59.0)])
    parts: list[AggregateRun] = []
    assert finalise_hour(conn, WINDOWS, HOUR, at(60), on_ahead=parts.append) == "the hour's last bucket closed"
    # every minute that closed since 10:05 (55 of each series) and t1's late 10:02; nothing else yet
    assert [(p.buckets, p.late) for p in parts] == [({60: 55}, {60: 1})]
    as_of, window_as_of, *_ = marks(conn)
    assert (as_of, datetime.fromisoformat(window_as_of["60"])) == (at(5), at(60))
    minutes = [r for r in stored(conn, at(60)) if r[2] == 60]
    assert minutes == [r for r in expected(conn, at(60)) if r[2] == 60]
