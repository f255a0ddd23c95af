"""analytics.agg_daily (sql/14), kept by the window-aggregates writer: each day is exactly the rollup of
its stored hours, also after one hour is re-materialised with a late reading; /v1/agg serves whole
days from it and answers the same as when it rolls the hours up per request.

The readings are small integers, so every sum is exact whatever order the database adds in."""

from __future__ import annotations

import math
from datetime import datetime

import psycopg
import pytest

from analytics_platform.results.aggregates import recompute_aggregates
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import at, daily_view, insert, iso, ok, running
from analytics_platform_tests.support.api_data import reading
from analytics_platform_tests.support.stack import DatabaseHandle

# (hour, minute, sensor, value, tenant) over two days; t2 has the same ids
READINGS = [
    (0, 5, "s1", 4.0, "t1"),
    (0, 40, "s1", 2.0, "t1"),
    (3, 0, "s2", 7.0, "t1"),
    (13, 59, "s1", 9.0, "t1"),
    (23, 30, "s1", 1.0, "t1"),
    (24, 0, "s1", 6.0, "t1"),
    (30, 10, "s1", 3.0, "t1"),
    (30, 20, "s2", 5.0, "t1"),
    (0, 5, "s1", 50.0, "t2"),
]
LATE = (13, 10, "s1", 11.0, "t1")  # in hour 13 of the first day, before the reading it has
DAILY = """
SELECT tenant_id, sensor_id, bucket_start, count_n, sum_v, min_v, max_v, sumsq_v, first_v, last_v
FROM analytics.agg_daily ORDER BY tenant_id, sensor_id, bucket_start
"""


def store(database: DatabaseHandle, rows: list[tuple], offset: int = 0) -> None:
    insert(
        database,
        "raw_sensor_readings",
        [reading(at(h, m), s, v, offset + i, tenant=t) for i, (h, m, s, v, t) in enumerate(rows)],
    )


def materialise(database: DatabaseHandle, settings: PlatformSettings, start: datetime, end: datetime) -> None:
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        recompute_aggregates(conn, list(settings.windows), start, end)


def expected(rows: list[tuple]) -> list[tuple]:
    """Each (tenant, sensor, day)'s n, Σx, min, max, Σx², first, last straight from the readings."""
    days: dict[tuple, list[tuple[datetime, float]]] = {}
    for h, m, s, v, t in rows:
        moment = at(h, m)
        day = moment.replace(hour=0, minute=0)
        days.setdefault((t, s, day), []).append((moment, v))
    out = []
    for (t, s, day), values in sorted(days.items()):
        xs = [v for _, v in sorted(values)]
        out.append((t, s, day, len(xs), sum(xs), min(xs), max(xs), sum(x * x for x in xs), xs[0], xs[-1]))
    return out


def test_each_day_is_the_rollup_of_its_hours_also_after_one_hour_changes(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    store(database, READINGS)
    materialise(database, settings, at(0), at(48))
    assert [r[:3] + tuple(_round(r[3:])) for r in database.query(DAILY)] == expected(READINGS)
    assert database.query("SELECT day_start FROM analytics.agg_daily_days ORDER BY 1") == [(at(0),), (at(24),)]
    rolled_second_day = database.query("SELECT rolled_at FROM analytics.agg_daily_days WHERE day_start = %s", (at(24),))

    store(database, [LATE], offset=len(READINGS))
    assert [r[:3] + tuple(_round(r[3:])) for r in database.query(DAILY)] == expected(READINGS)  # until its hour runs
    materialise(database, settings, at(13), at(14))
    assert [r[:3] + tuple(_round(r[3:])) for r in database.query(DAILY)] == expected([*READINGS, LATE])
    # the second day was not touched
    assert (
        database.query("SELECT rolled_at FROM analytics.agg_daily_days WHERE day_start = %s", (at(24),))
        == rolled_second_day
    )


def test_whole_days_from_the_daily_table_equal_the_rollup_of_the_hours(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    store(database, [*READINGS, LATE])
    materialise(database, settings, at(0), at(48))
    query = {"factory_id": "f1", "machine_id": "m1", "metric": "temp", "start": iso(at(-24)), "end": iso(at(72))}
    rolled = {**query, "window_s": 86400, "start": iso(at(0)), "end": iso(at(48))}  # only days in agg_daily
    # the test edits agg_daily behind the versions' back to see which table a day is read from: the response
    # cache, keyed by those versions, would rightly answer the second request from memory
    uncached = settings.model_copy(update={"api_response_cache_mb": 0})
    with running(uncached, database) as api:
        from_days = {w: ok(api.t1.get("/v1/agg", **query, window_s=w)) for w in (86400, 172800)}
        as_stored = ok(api.t1.get("/v1/agg", **rolled))  # its rows as they are, no rollup of them
        day = from_days[86400]["items"]
        if not daily_view(database):  # plain PostgreSQL: the second day is read from agg_daily, not its hours
            with database.connect() as conn:
                conn.execute(
                    "UPDATE analytics.agg_daily SET count_n = count_n + 100 WHERE bucket_start = %s", (at(24),)
                )
            marked = ok(api.t1.get("/v1/agg", **query, window_s=86400))["items"]
            assert [i["count"] for i in marked] == [i["count"] + 100 * (i["bucket_start"] == iso(at(24))) for i in day]
            with database.connect() as conn:
                conn.execute(
                    "UPDATE analytics.agg_daily SET count_n = count_n - 100 WHERE bucket_start = %s", (at(24),)
                )
        # the days written by anything but the asset are rolled up from their hours: forget one day
        with database.connect() as conn:
            conn.execute("DELETE FROM analytics.agg_daily_days WHERE day_start = %s", (at(0),))
            conn.execute("DELETE FROM analytics.agg_daily WHERE bucket_start = %s", (at(0),))
        half = {w: ok(api.t1.get("/v1/agg", **query, window_s=w)) for w in (86400, 172800)}
        with database.connect() as conn:
            conn.execute("TRUNCATE analytics.agg_daily, analytics.agg_daily_days")
        from_hours = {w: ok(api.t1.get("/v1/agg", **query, window_s=w)) for w in (86400, 172800)}
        as_rolled_up = ok(api.t1.get("/v1/agg", **rolled))
    assert from_days == half == from_hours
    assert as_stored == as_rolled_up
    assert as_stored["items"] == [i for i in day if i["bucket_start"] in (iso(at(0)), iso(at(24)))]
    first_s1 = next(i for i in day if i["sensor_id"] == "s1")
    xs = [4.0, 2.0, 11.0, 9.0, 1.0]
    assert (first_s1["bucket_start"], first_s1["count"], first_s1["sum"], first_s1["first"], first_s1["last"]) == (
        iso(at(0)),
        5,
        27.0,
        4.0,
        1.0,
    )
    mean = sum(xs) / len(xs)
    assert math.isclose(first_s1["stddev"], math.sqrt(sum((x - mean) ** 2 for x in xs) / 4), rel_tol=1e-12)
    assert [(i["bucket_start"], i["sensor_id"]) for i in day] == [
        (iso(at(0)), "s1"),
        (iso(at(0)), "s2"),
        (iso(at(24)), "s1"),
        (iso(at(24)), "s2"),
    ]


def _round(values: tuple) -> list:
    """Σx² comes back through the hours' mean and stddev: exact up to the last bits of a double."""
    n, total, low, high, sumsq, first, last = values
    return [n, total, low, high, round(sumsq, 6), first, last]


def test_a_tiny_reading_neither_stops_the_hour_nor_the_daily_rollup(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """A finite reading of 1e-300 (found by the ingest model's Hypothesis stream): its square
    underflows, and PostgreSQL raises on a float8 product that underflows to zero, which failed the
    whole hour's materialisation and every /v1/agg rollup over it. Squares below the smallest
    normal double's square root count as 0 (their true size, < 2.3e-308, is below what a float sum
    of larger terms can hold anyway)."""
    store(database, [(0, 5, "s1", 1e-300, "t1"), (0, 6, "s1", 2e-300, "t1")])
    materialise(database, settings, at(0), at(1))
    assert database.query("SELECT count_n, sum_v, sumsq_v FROM analytics.agg_daily") == [(2, 3e-300, 0.0)]
    query = {"factory_id": "f1", "machine_id": "m1", "metric": "temp", "start": iso(at(0)), "end": iso(at(24))}
    with running(settings, database) as api:
        day = ok(api.t1.get("/v1/agg", **query, window_s=86400))["items"]
        hours = ok(api.t1.get("/v1/agg", **query, window_s=7200))["items"]
    assert [(i["count"], i["sum"], i["stddev"]) for i in day] == [(2, 3e-300, 0.0)]
    assert [(i["count"], i["sum"]) for i in hours] == [(2, 3e-300)]


def test_a_day_rolled_up_while_a_request_reads_is_counted_once(
    settings: PlatformSettings, database: DatabaseHandle, monkeypatch
) -> None:
    """A day whose hours were written by anything but the asset (the drain service's finaliser) is rolled
    up from its hours per request; the asset can roll it up into agg_daily while a request reads. The
    list of such days and the rows used to be two statements: a day rolled between them was read from
    agg_daily and from its hours, and its counts came back doubled."""
    if daily_view(database):
        pytest.skip("TimescaleDB serves whole days from the continuous aggregate")
    store(database, READINGS)
    materialise(database, settings, at(0), at(48))
    with database.connect() as conn:  # the first day as the finaliser leaves it: hours only
        conn.execute("DELETE FROM analytics.agg_daily_days WHERE day_start = %s", (at(0),))
        conn.execute("DELETE FROM analytics.agg_daily WHERE bucket_start = %s", (at(0),))
    rolled: list[str] = []
    execute = psycopg.Connection.execute

    def asset_rolls_up_before_the_rows(conn: psycopg.Connection, query, *args, **kwargs):
        text = str(query)
        if not rolled and "agg_daily" in text and "analytics_agg AS a" in text:
            rolled.append(text)
            materialise(database, settings, at(0), at(1))  # the asset's run of the day's first hour
        return execute(conn, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", asset_rolls_up_before_the_rows)
    query = {"factory_id": "f1", "machine_id": "m1", "metric": "temp", "start": iso(at(0)), "end": iso(at(48))}
    with running(settings, database) as api:
        day = ok(api.t1.get("/v1/agg", **query, window_s=86400))["items"]
    assert rolled, "the request never read the rows of a day not rolled up"
    counts = {(i["bucket_start"], i["sensor_id"]): (i["count"], i["sum"]) for i in day}
    assert counts == {
        (iso(at(0)), "s1"): (4, 16.0),
        (iso(at(0)), "s2"): (1, 7.0),
        (iso(at(24)), "s1"): (2, 9.0),
        (iso(at(24)), "s2"): (1, 5.0),
    }, "a day rolled up during the request was counted from agg_daily and from its hours"
