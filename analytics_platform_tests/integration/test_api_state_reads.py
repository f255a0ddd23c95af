"""The batches of state statements (api/state_reads.py) on a real PostgreSQL, through the API's own
Database (its event loop's pool): a statement asked while a batch is in flight is read by the next batch,
after the request arrived, so it sees every commit made before; identical statements of a batch are sent
once; one statement's failure is its own requests'; a dead connection is dropped and the batch read again
on a checked one; a batch stuck on a lock holds up no other; shutdown waits for the batch in flight.

A statement that must be held in flight *after* its snapshot was taken waits on an advisory lock inside
it (`pg_advisory_xact_lock_shared`): the row it returns is the one of the moment it started, whatever
commits while it waits, as a real state statement's would be had its round trip been slow."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from analytics_platform.api.db import Database, DatabaseDown
from analytics_platform_tests.support.stack import DatabaseHandle

LOCK = 7_123_001
# the probe's value as of the statement's start, read before the statement waits on the advisory lock
HELD = "SELECT v, pg_advisory_xact_lock_shared(%s)::text AS waited FROM public.state_probe"


def probe(database: DatabaseHandle, value: int) -> None:
    with database.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.state_probe (v integer NOT NULL)")
        conn.execute("DELETE FROM public.state_probe")
        conn.execute("INSERT INTO public.state_probe VALUES (%s)", (value,))


def run(database: DatabaseHandle, body: Callable[[Database, psycopg.AsyncConnection], Awaitable[Any]]) -> Any:
    """`body(db, admin)` on an event loop with the API's Database opened on it (the admin login, which may
    read the probe), and an admin connection of its own; the pool closed after it."""

    async def main() -> Any:
        db = Database(database.admin_url, timeout=5.0)
        await db.open_async()
        admin = await psycopg.AsyncConnection.connect(database.admin_url, autocommit=True)
        try:
            return await body(db, admin)
        finally:
            await admin.close()
            await db.close_async()

    return asyncio.run(main())


async def waiting_on_advisory(admin: psycopg.AsyncConnection, count: int) -> None:
    """Until `count` statements of HELD wait on the advisory lock (polling the server; no fixed pause)."""
    for _ in range(100_000):
        row = await (
            await admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND wait_event = 'advisory' AND query LIKE %s",
                ("%state_probe%",),
            )
        ).fetchone()
        if row[0] >= count:
            assert row[0] == count
            return
        await asyncio.sleep(0)  # let the loop run the batches meanwhile
    raise AssertionError(f"never {count} statements waiting on the advisory lock")


def test_a_statement_asked_while_a_batch_is_in_flight_is_read_after_it_and_sees_a_commit_made_before(
    database: DatabaseHandle,
) -> None:
    """A's statement is in flight (started, holding its snapshot, waiting on the lock); the probe is updated
    and committed; B asks the very same statement. B's answer must show the commit: it is read by a batch of
    its own, sent after B arrived, never handed A's row (identical statements share a row only within one
    batch). A's shows the value of its start."""
    probe(database, 1)

    async def body(db: Database, admin: psycopg.AsyncConnection) -> tuple:
        locker = await psycopg.AsyncConnection.connect(database.admin_url, autocommit=True)
        try:
            await locker.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
            first = asyncio.create_task(db.first_row(HELD, (LOCK,)))
            await waiting_on_advisory(admin, 1)
            await admin.execute("UPDATE public.state_probe SET v = 2")  # committed: autocommit
            second = asyncio.create_task(db.first_row(HELD, (LOCK,)))
            await waiting_on_advisory(admin, 2)  # B's batch went out on another connection: A's is stuck
            assert not first.done()
            await locker.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))
            rows = await asyncio.gather(first, second)
        finally:
            await locker.close()
        assert db.state_reads is not None
        return rows, dict(db.state_reads.counts)

    rows, counts = run(database, body)
    assert [row["v"] for row in rows] == [1, 2]
    assert counts == {"requests": 2, "statements": 2, "batches": 2}


def test_identical_statements_of_one_batch_are_sent_once_and_the_next_batch_reads_again(
    database: DatabaseHandle,
) -> None:
    probe(database, 5)
    query = "SELECT v FROM public.state_probe WHERE v > %(above)s"

    async def body(db: Database, admin: psycopg.AsyncConnection) -> tuple:
        assert db.state_reads is not None
        together = await asyncio.gather(*(db.first_row(query, {"above": 0}) for _ in range(6)))
        counts = dict(db.state_reads.counts)
        await admin.execute("UPDATE public.state_probe SET v = 6")
        after = await asyncio.gather(*(db.first_row(query, {"above": 0}) for _ in range(3)))
        return together, counts, after, dict(db.state_reads.counts)

    together, counts, after, later = run(database, body)
    assert together == [{"v": 5}] * 6
    assert counts == {"requests": 6, "statements": 1, "batches": 1}
    assert after == [{"v": 6}] * 3
    assert later == {"requests": 9, "statements": 2, "batches": 2}


def test_a_failing_statement_among_good_ones_fails_only_its_own_requests(database: DatabaseHandle) -> None:
    """One batch of five distinct statements (pipelined) and a repeated one: a division by zero (the route's
    error, as a single read raises it), a value psycopg cannot adapt (refused before it is sent), a
    statement cancelled by the server (a connection error: DatabaseDown, the 503); the others, before and
    after the failures, get their rows, and the connection serves the next batch."""
    probe(database, 3)

    async def body(db: Database, admin: psycopg.AsyncConnection) -> tuple:
        assert db.state_reads is not None
        asked = [
            ("SELECT v FROM public.state_probe", None),
            ("SELECT 1 / %s AS n", (0,)),
            ("SELECT %s::int AS n", (2,)),
            ("SELECT %s AS n", (object(),)),
            ("SELECT pg_cancel_backend(pg_backend_pid()), pg_sleep(5)", None),
            ("SELECT v + %s AS n FROM public.state_probe", (10,)),
            ("SELECT v FROM public.state_probe", None),
        ]
        outcomes = await asyncio.gather(*(db.first_row(q, p) for q, p in asked), return_exceptions=True)
        counts = dict(db.state_reads.counts)
        following = await db.first_row("SELECT %s::int AS n", (4,))
        return outcomes, counts, following

    outcomes, counts, following = run(database, body)
    assert outcomes[0] == outcomes[6] == {"v": 3}
    assert isinstance(outcomes[1], psycopg.errors.DivisionByZero)
    assert outcomes[2] == {"n": 2}
    assert isinstance(outcomes[3], psycopg.ProgrammingError) and "cannot adapt" in str(outcomes[3])
    assert isinstance(outcomes[4], DatabaseDown)
    assert str(outcomes[4]) == "database error: canceling statement due to user request"
    assert outcomes[5] == {"n": 13}
    assert counts == {"requests": 7, "statements": 6, "batches": 1}
    assert following == {"n": 4}


def test_a_dead_connection_is_dropped_and_the_batch_read_again_on_a_checked_one(database: DatabaseHandle) -> None:
    """The pool's idle connection is terminated by the server: the next batch finds it dead, drops it and
    reads again on a connection the pool checked; every request of the batch gets its row."""

    async def body(db: Database, admin: psycopg.AsyncConnection) -> tuple:
        assert db.state_reads is not None and db.async_pool is not None
        first = await db.first_row("SELECT pg_backend_pid() AS pid")
        await admin.execute("SELECT pg_terminate_backend(%s, 10000)", (first["pid"],))
        again = await asyncio.gather(
            db.first_row("SELECT pg_backend_pid() AS pid"), db.first_row("SELECT %s::int AS n", (1,))
        )
        return first, again, dict(db.state_reads.counts)

    first, again, counts = run(database, body)
    assert again[0]["pid"] != first["pid"] and again[1] == {"n": 1}
    assert counts == {"requests": 3, "statements": 3, "batches": 2}


def test_the_requests_of_a_batch_that_cannot_get_a_connection_get_a_503_and_the_sender_goes_on(
    database: DatabaseHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No connection for a batch (the pool's wait ran out): its requests get DatabaseDown, the app's 503;
    a fault of the sender itself fails its batch's requests, never silently; the next batch is read."""

    async def body(db: Database, admin: psycopg.AsyncConnection) -> tuple:
        reads = db.state_reads
        assert reads is not None
        real = reads._getconn
        faults = [DatabaseDown("no database connection available (is the database running?)"), KeyError("x")]

        async def failing(check: bool) -> psycopg.AsyncConnection:
            if faults:
                raise faults.pop(0)
            return await real(check)

        monkeypatch.setattr(reads, "_getconn", failing)
        down = await asyncio.gather(
            db.first_row("SELECT 1 AS n"), db.first_row("SELECT 2 AS n"), return_exceptions=True
        )
        fault = await asyncio.gather(db.first_row("SELECT 1 AS n"), return_exceptions=True)
        return down, fault, await db.first_row("SELECT 3 AS n")

    down, fault, following = run(database, body)
    assert [type(o) for o in down] == [DatabaseDown, DatabaseDown]
    assert isinstance(fault[0], KeyError)
    assert following == {"n": 3}


def test_shutdown_waits_for_the_batch_in_flight(database: DatabaseHandle) -> None:
    probe(database, 8)

    async def body(db: Database, admin: psycopg.AsyncConnection) -> tuple:
        locker = await psycopg.AsyncConnection.connect(database.admin_url, autocommit=True)
        try:
            await locker.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
            asked = asyncio.create_task(db.first_row(HELD, (LOCK,)))
            await waiting_on_advisory(admin, 1)
            assert db.state_reads is not None
            closing = asyncio.create_task(db.state_reads.close())
            await waiting_on_advisory(admin, 1)  # the loop ran the close meanwhile: it waits
            assert not closing.done() and not asked.done()
            await locker.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))
            await closing
            return asked.done(), asked.result()
        finally:
            await locker.close()

    assert run(database, body) == (True, {"v": 8, "waited": ""})
