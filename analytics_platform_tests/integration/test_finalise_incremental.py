"""The finaliser's incremental runs (`results.aggregates.finalise_hour`, sql/24): a run rewrites only
the buckets of the hour that closed since the previous run and those readings ingested since touched.

Asserted: after every run of a sequence with late, duplicated and out-of-order readings of two tenants
with the same machine ids, the stored buckets that closed equal, bit for bit, what the transform makes
of all the readings, and after the sequence one full run of the hour changes none of them (60, 300 and
3600 s windows and a 5400 s one, longer than the hour and not dividing it); open buckets are left; the
hour is marked final up to the bucket end; a writer still open holds the position and the mark back and
its readings come in at the next run; a write that fails re-does the same buckets; every state that
cannot be trusted (no position, other windows, another writer of the hour before or during the run, a
re-derivation, a position older than the hour, the hour's last bucket) means a full run instead.

Readings are inserted as the drain writes them (one transaction per batch that takes its id first, `ingested_at`
the writing statement's start).
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest

from analytics_platform.contracts.sensor import CONTRACT
from analytics_platform.ingest.store import claim_xid, encode_rows, write_raw
from analytics_platform.results.aggregates import AggregateRun, finalise_hour, read_readings, recompute_aggregates
from analytics_platform.transforms.window_aggregates import (
    AGG_COLUMNS,
    SERIES_KEY,
    canonical_order,
    covering_range,
    window_aggregates,
)
from analytics_platform_tests.support.stack import DatabaseHandle

WINDOWS = [60, 300, 3600, 5400]
HOUR = datetime(2025, 8, 20, 10, tzinfo=UTC)
RAW = (
    "INSERT INTO analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric, value, "
    "schema_version, dedup_key, topic, kafka_partition, kafka_offset) "
    "VALUES (%s, %s, 'f1', 'm1', %s, 'temp', %s, 1, %s, 'sensors', 0, %s) "
    # a duplicate (the same identity again) keeps the stored copy, as the drain's conflict rule does
    "ON CONFLICT (time, dedup_key) DO NOTHING"
)
STORED = (
    f"SELECT {', '.join(AGG_COLUMNS)} FROM analytics.analytics_agg "
    "ORDER BY window_s, bucket_start, tenant_id, sensor_id"
)


def at(minute: float, hour: datetime = HOUR) -> datetime:
    return hour + timedelta(minutes=minute)


def store(conn: psycopg.Connection, rows: list[tuple[float, str, str, float]]) -> None:
    """(minute of HOUR, tenant, sensor, value) in one transaction, in the order given, its id taken
    first as the drain's is (`claim_xid`)."""
    with conn.transaction(), conn.cursor() as cur:
        claim_xid(cur)
        for minute, tenant, sensor, value in rows:
            key = f"{tenant}|{sensor}|{minute}|{value}"
            conn.execute(RAW, (at(minute), tenant, sensor, value, key, zlib.crc32(key.encode())))


def expected(conn: psycopg.Connection, closed_by: datetime) -> list[tuple]:
    """The buckets overlapping HOUR that ended by `closed_by`, computed from every reading stored."""
    lo, hi = covering_range(HOUR, HOUR + timedelta(hours=1), WINDOWS)
    readings = canonical_order(read_readings(conn, lo, hi))
    frame = window_aggregates(readings.lazy(), WINDOWS, start=HOUR, end=HOUR + timedelta(hours=1)).collect()
    frame = frame.with_columns(pl.col(k).cast(pl.String) for k in SERIES_KEY)
    rows = frame.filter(pl.col("bucket_end") <= closed_by).select(AGG_COLUMNS).rows()
    return sorted(rows, key=lambda r: (r[2], r[0], r[3], r[6]))


def stored(conn: psycopg.Connection, closed_by: datetime) -> list[tuple]:
    rows = conn.execute(STORED).fetchall()
    return [r for r in rows if r[1] <= closed_by and r[0] < HOUR + timedelta(hours=1) and r[1] > HOUR]


def mark(conn: psycopg.Connection) -> tuple:
    return conn.execute(
        "SELECT m.as_of, p.closed_until, p.position, p.version = m.version FROM analytics.agg_materialised_hours m "
        "JOIN analytics.agg_finalise_positions p USING (hour_start) WHERE hour_start = %s",
        (HOUR,),
    ).fetchone()


@pytest.fixture
def conn(database: DatabaseHandle) -> psycopg.Connection:
    with psycopg.connect(database.pipeline_url, autocommit=True) as connection:
        yield connection


# values whose float sum depends on the order of its terms: the buckets must still be bit-identical
FIRST = [
    (-30, "t1", "s1", 5.0),  # 09:30: in the 5400 s bucket [09:00, 10:30) with this hour's first half
    (0.5, "t1", "s1", 0.1),
    (0.25, "t2", "s1", 7.0),  # t2 has the same factory, machine and sensor ids
    (1.5, "t1", "s1", 1e16),
    (1.2, "t1", "s1", 0.2),
    (3.9, "t1", "s2", 0.3),
    (4.1, "t2", "s1", -2.5),
]


def full_run_at(conn: psycopg.Connection, moment: datetime) -> None:
    """A full run of HOUR as if the clock had read `moment` (the database's clock is a year later than
    these readings, so a full run now would find every bucket of the hour closed)."""
    recompute_aggregates(conn, WINDOWS, HOUR, HOUR + timedelta(hours=1))
    conn.execute("UPDATE analytics.agg_materialised_hours SET as_of = %s WHERE hour_start = %s", (moment, HOUR))
    conn.execute("UPDATE analytics.agg_finalise_positions SET closed_until = %s WHERE hour_start = %s", (moment, HOUR))


def finalise(conn: psycopg.Connection, closed_by: datetime, **kwargs: object) -> AggregateRun:
    run = finalise_hour(conn, WINDOWS, HOUR, closed_by, **kwargs)
    assert isinstance(run, AggregateRun), run
    return run


def test_incremental_runs_leave_what_one_full_run_writes(conn: psycopg.Connection) -> None:
    store(conn, FIRST)
    full_run_at(conn, at(5))
    assert stored(conn, at(5)) == expected(conn, at(5))
    hour_bucket = conn.execute(
        "SELECT count_n FROM analytics.analytics_agg WHERE window_s = 3600 AND tenant_id = 't1' AND sensor_id = 's1'"
    ).fetchone()

    # out of order, late for the closed 10:00 and 10:02 buckets, a duplicate of a stored reading, two batches
    store(conn, [(6.5, "t1", "s1", 0.7), (5.2, "t1", "s1", 0.1), (0.75, "t1", "s1", 0.3), (0.5, "t1", "s1", 0.1)])
    store(conn, [(2.1, "t2", "s1", 1e-3), (6.9, "t2", "s1", 3.0)])
    run = finalise(conn, at(7))
    # every series' 60 s buckets 10:05 and 10:06 closed since; late: t1/s1's 10:00 and t2/s1's 10:02
    # and both series' 300 s 10:00 (the duplicate is no new row). 300 s 10:05 is open; so are the
    # hour's 3600 s bucket and the 5400 s one (to 10:30): left as they were
    assert (run.incremental, run.buckets, run.late) == (True, {60: 2, 300: 0, 3600: 0, 5400: 0}, {60: 2, 300: 2})
    # 10:05..10:07 of every series (3), 10:00..10:05 of t1/s1 (4) and t2/s1 (3); not t1/s2's
    assert run.readings == 10
    assert stored(conn, at(7)) == expected(conn, at(7))
    as_of, closed_until, position, same_version = mark(conn)
    assert (as_of, closed_until, same_version) == (at(7), at(7), True)

    store(conn, [(31.2, "t1", "s1", 1.0), (29.5, "t2", "s2", 4.0), (8, "t1", "s1", 2.0), (2.5, "t1", "s2", 9.0)])
    run = finalise(conn, at(31))
    # 60 s: the 24 that closed since 10:07; 300 s: five; the 5400 s bucket closed at 10:30; late:
    # t1/s2's 10:02 and 10:00. 10:31 is open: its reading waits
    assert (run.buckets, run.late) == ({60: 24, 300: 5, 3600: 0, 5400: 1}, {60: 1, 300: 1})
    assert stored(conn, at(31)) == expected(conn, at(31))
    assert mark(conn)[:2] == (at(31), at(31)) and mark(conn)[2] >= position
    assert conn.execute("SELECT count(*) FROM analytics.analytics_agg WHERE bucket_start = %s", (at(31),)).fetchone()[
        0
    ] == (0)
    assert (
        conn.execute(
            "SELECT count_n FROM analytics.analytics_agg "
            "WHERE window_s = 3600 AND tenant_id = 't1' AND sensor_id = 's1'"
        ).fetchone()
        == hour_bucket
    )

    last = finalise(conn, at(32))
    assert (last.buckets, last.late) == ({60: 1, 300: 0, 3600: 0, 5400: 0}, {})  # nothing new: 10:31 closed
    assert stored(conn, at(32)) == expected(conn, at(32))
    assert finalise_hour(conn, WINDOWS, HOUR, at(60)) == "the hour's last bucket closed"
    before = stored(conn, at(32))
    recompute_aggregates(conn, WINDOWS, HOUR, HOUR + timedelta(hours=1))
    assert stored(conn, at(32)) == before


def test_a_writer_still_open_holds_the_position_and_its_readings_come_next(
    conn: psycopg.Connection, database: DatabaseHandle
) -> None:
    store(conn, FIRST)
    full_run_at(conn, at(5))
    with psycopg.connect(database.pipeline_url) as writer:  # a drain transaction in flight
        began = writer.execute("SELECT now()").fetchone()[0]
        store(writer, [(5.5, "t1", "s1", 40.0)])
        run = finalise(conn, at(7))
        # its reading is not visible yet: its bucket closed with what was committed and the position
        # stops where the writer began (the mark is the bucket end: the writer began after it, so its
        # reading is a late one; a writer begun before it holds the mark back as well: min(T, position))
        assert run.position <= began and run.buckets == {60: 2, 300: 0, 3600: 0, 5400: 0}
        assert mark(conn)[:3] == (at(7), at(7), run.position)
        writer.commit()
    run = finalise(conn, at(8))
    # 10:07 closed; t1/s1's 10:05 has the writer's reading (its 300 s bucket is open)
    assert (run.buckets, run.late) == ({60: 1, 300: 0, 3600: 0, 5400: 0}, {60: 1})
    assert stored(conn, at(8)) == expected(conn, at(8))
    assert conn.execute(
        "SELECT count_n, max_v FROM analytics.analytics_agg WHERE window_s = 60 AND bucket_start = %s", (at(5),)
    ).fetchone() == (1, 40.0)
    assert mark(conn)[:2] == (at(8), at(8))


def test_a_transaction_begun_before_a_run_and_writing_after_it_comes_in_at_the_next_run(
    conn: psycopg.Connection, database: DatabaseHandle
) -> None:
    store(conn, FIRST)
    full_run_at(conn, at(5))
    with psycopg.connect(database.pipeline_url) as drain:  # BEGIN, no row written yet: no transaction id
        began = drain.execute("SELECT now()").fetchone()[0]
        run = finalise(conn, at(6))
        # it holds nothing back (it may never write): its rows are stamped when they are written, after
        # it took its id, so after this position (ingest.store.OLDEST_WRITER)
        assert run.position > began
        store(drain, [(5.5, "t1", "s1", 40.0)])
        drain.commit()
    run = finalise(conn, at(7))  # its reading is found: t1/s1's 10:05 again
    assert (run.buckets, run.late) == ({60: 1, 300: 0, 3600: 0, 5400: 0}, {60: 1})
    assert stored(conn, at(7)) == expected(conn, at(7))


def test_a_failed_write_is_done_again_by_the_next_run(conn: psycopg.Connection) -> None:
    store(conn, FIRST)
    full_run_at(conn, at(5))
    before = mark(conn)
    store(conn, [(0.9, "t2", "s1", 11.0), (5.5, "t1", "s2", 12.0)])

    def crash() -> None:
        raise RuntimeError("the process died before its write")

    with pytest.raises(RuntimeError):
        finalise_hour(conn, WINDOWS, HOUR, at(6), before_write=crash)
    assert mark(conn) == before  # nothing moved
    run = finalise(conn, at(7))
    # 10:05 and 10:06 closed, and t2/s1's late 10:00 again (60 s and 300 s)
    assert (run.buckets, run.late) == ({60: 2, 300: 0, 3600: 0, 5400: 0}, {60: 1, 300: 1})
    assert stored(conn, at(7)) == expected(conn, at(7))


def test_another_writer_of_the_hour_during_the_run_wins(conn: psycopg.Connection, database: DatabaseHandle) -> None:
    store(conn, FIRST)
    full_run_at(conn, at(5))

    def rematerialise() -> None:  # a run from the UI (a full one) writes the hour while this one computes
        store(conn, [(5.5, "t1", "s1", 40.0)])
        with psycopg.connect(database.pipeline_url, autocommit=True) as other:
            recompute_aggregates(other, WINDOWS, HOUR, HOUR + timedelta(hours=1))

    assert finalise_hour(conn, WINDOWS, HOUR, at(7), before_write=rematerialise) == (
        "another run wrote the hour while this one read"
    )
    assert stored(conn, at(60)) == expected(conn, at(60))  # the full run's rows, every bucket, stand


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("DELETE FROM analytics.agg_finalise_positions", "no finaliser position for the hour"),
        ("UPDATE analytics.agg_finalise_positions SET windows = '{60,300,3600}'", "the stored buckets are of windows"),
        (  # a writer that does not know positions (another version of the asset)
            "UPDATE analytics.agg_materialised_hours SET version = nextval('analytics.agg_materialised_version')",
            "another run wrote the hour since",
        ),
        (
            "INSERT INTO analytics.raw_rederivations (raw_table, hour, reason, done_at) "
            "VALUES ('raw_sensor_readings', '2025-08-20 10:00+00', 'test', now())",
            "raw readings of the hour were re-derived",
        ),
        (  # the 5400 s bucket of 09:00 reads the hour before: its re-derivation counts too
            "INSERT INTO analytics.raw_rederivations (raw_table, hour, reason, done_at) "
            "VALUES ('raw_sensor_readings', '2025-08-20 09:00+00', 'test', now())",
            "raw readings of the hour were re-derived",
        ),
        ("UPDATE analytics.agg_finalise_positions SET position = '2025-08-20 09:59+00'", "the position is older"),
    ],
)
def test_a_state_that_cannot_be_trusted_means_a_full_run(
    conn: psycopg.Connection, database: DatabaseHandle, change: str, reason: str
) -> None:
    store(conn, FIRST)
    full_run_at(conn, at(5))
    with database.connect() as admin:
        admin.execute(change)
    answer = finalise_hour(conn, WINDOWS, HOUR, at(7))
    assert isinstance(answer, str) and answer.startswith(reason)


def test_a_re_derivation_done_before_the_position_is_not_a_reason(
    conn: psycopg.Connection, database: DatabaseHandle
) -> None:
    with database.connect() as admin:
        admin.execute(
            "INSERT INTO analytics.raw_rederivations (raw_table, hour, reason, done_at) "
            "VALUES ('raw_sensor_readings', '2025-08-20 10:00+00', 'test', now())"
        )
    store(conn, FIRST)
    full_run_at(conn, at(5))
    run = finalise(conn, at(7))
    assert (run.buckets, run.late) == ({60: 2, 300: 0, 3600: 0, 5400: 0}, {})


def resend(conn: psycopg.Connection, minute: float, value: float, partition: int) -> None:
    """One reading as the drain writes it (`write_raw`: the lowest Kafka coordinate of an identity wins)."""
    row = {
        "time": at(minute), "tenant_id": "t1", "factory_id": "f1", "machine_id": "m1", "sensor_id": "s1",
        "metric": "temp", "value": value, "unit": None, "payload": None, "uncatalogued": False, "event_id": "x",
        "schema_version": 1, "dedup_key": "t1|x", "topic": "sensors", "kafka_partition": partition, "kafka_offset": 7,
    }  # fmt: skip
    with conn.transaction(), conn.cursor() as cur:
        write_raw(cur, CONTRACT, encode_rows(pl.DataFrame([row]), CONTRACT.raw_columns))


def test_a_re_sent_reading_that_replaces_the_stored_one_rewrites_its_buckets(conn: psycopg.Connection) -> None:
    store(conn, FIRST)
    resend(conn, 1.5, 3.0, partition=2)
    full_run_at(conn, at(5))
    resend(conn, 1.5, 8.0, partition=0)  # the same identity, another value, a lower coordinate: it wins
    run = finalise(conn, at(6))
    assert (run.buckets, run.late) == ({60: 1, 300: 0, 3600: 0, 5400: 0}, {60: 1, 300: 1})  # 10:05; t1/s1's 10:01
    assert stored(conn, at(6)) == expected(conn, at(6))
    assert conn.execute(
        "SELECT max_v FROM analytics.analytics_agg WHERE window_s = 60 AND bucket_start = %s AND tenant_id = 't1' "
        "AND sensor_id = 's1'",
        (at(1),),
    ).fetchone() == (1e16,)


def test_a_late_reading_rewrites_its_own_series_buckets_only(conn: psycopg.Connection) -> None:
    store(conn, FIRST)
    full_run_at(conn, at(5))
    written = "SELECT tenant_id, sensor_id, window_s, bucket_start, updated_at FROM analytics.analytics_agg"
    before = {row[:4]: row[4] for row in conn.execute(written).fetchall()}
    store(conn, [(2.1, "t2", "s1", 1e-3)])  # t1 has a series with the same factory, machine and sensor ids
    run = finalise(conn, at(5))
    assert (run.buckets, run.late, run.readings) == ({60: 0, 300: 0, 3600: 0, 5400: 0}, {60: 1, 300: 1}, 3)
    after = {row[:4]: row[4] for row in conn.execute(written).fetchall()}
    assert sorted(k for k in after if after[k] != before.get(k)) == [
        ("t2", "s1", 60, at(2)),
        ("t2", "s1", 300, at(0)),
    ]
    assert stored(conn, at(5)) == expected(conn, at(5))
