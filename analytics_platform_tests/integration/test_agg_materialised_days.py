"""analytics.agg_materialised_days (sql/28): per UTC day, the count of the hours agg_materialised_hours
holds and the highest version they have had, kept by triggers in the writers' own statements, so
/v1/agg's tag of a year reads 365 rows. Whatever writes the marks, the days follow at once; two writers
of one day do not lose each other's hours."""

from __future__ import annotations

import threading
from datetime import datetime

from analytics_platform_tests.support.api import at
from analytics_platform_tests.support.stack import DatabaseHandle

DAYS = "SELECT day_start, hours, version FROM analytics.agg_materialised_days ORDER BY 1"
FROM_HOURS = """
SELECT date_bin(INTERVAL '1 day', hour_start, TIMESTAMPTZ '1970-01-01 00:00:00+00'), count(*)::integer, max(version)
FROM analytics.agg_materialised_hours GROUP BY 1 ORDER BY 1"""
# the asset's statement (results/aggregates.py MARK_MATERIALISED): new hours, or new versions of known ones
MARK = """
INSERT INTO analytics.agg_materialised_hours (hour_start, as_of)
SELECT hour, %(as_of)s FROM generate_series(%(first)s::timestamptz, %(last)s::timestamptz, interval '1 hour') AS hour
ON CONFLICT (hour_start) DO UPDATE
SET as_of = excluded.as_of, version = nextval('analytics.agg_materialised_version')"""


def mark(database: DatabaseHandle, first: datetime, last: datetime) -> None:
    with database.connect(database.pipeline_url) as conn:
        conn.execute(MARK, {"as_of": at(100), "first": first, "last": last})


def test_the_days_follow_every_write_of_the_hours(database: DatabaseHandle) -> None:
    mark(database, at(-2), at(25))  # 2 hours of 08-19, all of 08-20, 2 of 08-21
    assert database.query(DAYS) == database.query(FROM_HOURS)
    assert [(day, hours) for day, hours, _ in database.query(DAYS)] == [(at(-24), 2), (at(0), 24), (at(24), 2)]

    before = {day: version for day, _, version in database.query(DAYS)}
    mark(database, at(3), at(4))  # re-materialised: the same hours, new versions
    after = {day: (hours, version) for day, hours, version in database.query(DAYS)}
    assert after[at(0)][0] == 24 and after[at(0)][1] > before[at(0)]
    assert {day: after[day][1] for day in (at(-24), at(24))} == {day: before[day] for day in (at(-24), at(24))}
    assert database.query(DAYS) == database.query(FROM_HOURS)

    with database.connect() as conn:  # the finaliser's kind of write: a new version of one hour
        conn.execute(
            "UPDATE analytics.agg_materialised_hours SET version = nextval('analytics.agg_materialised_version')"
            " WHERE hour_start = %s",
            (at(25),),
        )
    assert database.query(DAYS) == database.query(FROM_HOURS)

    # an hour's mark deleted: one hour less; the day's version stays the highest it has had
    last_day = "SELECT max(version) FROM analytics.agg_materialised_hours WHERE hour_start >= %s"
    highest = database.scalar(last_day, (at(24),))
    with database.connect() as conn:
        conn.execute("DELETE FROM analytics.agg_materialised_hours WHERE hour_start = %s", (at(25),))
    assert database.query(DAYS)[-1] == (at(24), 1, highest)
    assert database.scalar(last_day, (at(24),)) < highest

    with database.connect() as conn:
        conn.execute("TRUNCATE analytics.agg_materialised_hours")
    assert [(day, hours) for day, hours, _ in database.query(DAYS)] == [(at(-24), 0), (at(0), 0), (at(24), 0)]
    mark(database, at(0), at(0))
    assert [(day, hours) for day, hours, _ in database.query(DAYS)] == [(at(-24), 0), (at(0), 1), (at(24), 0)]


def test_two_writers_of_one_day_both_count(database: DatabaseHandle) -> None:
    """The second writer waits for the first one's day row and then adds to what it committed: a
    recount of the day's hours in the second writer's snapshot would have missed the first one's."""
    with database.connect(database.pipeline_url) as first, database.connect(database.pipeline_url) as second:
        first.execute("BEGIN")
        first.execute(MARK, {"as_of": at(100), "first": at(3), "last": at(4)})
        done = threading.Event()

        def write_second() -> None:
            second.execute(MARK, {"as_of": at(100), "first": at(10), "last": at(10)})
            done.set()

        writer = threading.Thread(target=write_second)
        writer.start()
        waiting = "SELECT cardinality(pg_blocking_pids(%s)) > 0"
        with database.connect() as watcher:
            while not watcher.execute(waiting, (second.info.backend_pid,)).fetchone()[0]:
                assert not done.is_set(), "the second writer did not wait for the first one's day"
        first.execute("COMMIT")
        writer.join(timeout=30)
        assert done.is_set()
    assert [(day, hours) for day, hours, _ in database.query(DAYS)] == [(at(0), 3)]
    assert database.query(DAYS) == database.query(FROM_HOURS)
