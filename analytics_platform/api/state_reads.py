"""The state statements of concurrent requests, read together on the event loop.

Every repeat and every 304 reads its route's state (what was materialised) before its answer, and never
from a cache: an answer must reflect every commit that finished before its request arrived. Read one by
one, a state statement cost each request a pool checkout, a cursor, a round trip to its own backend and
that backend's CPU: ~45 % of a repeat's CPU in the API and ~0.15 ms in PostgreSQL (docs/benchmarks.md,
REST API, round 6). But a read *sent after* a request arrived is as fresh for it as one of its own. So
the requests of a worker queue their statements here, and one sender sends all that are waiting at once:

* a statement asked while a batch is in flight waits for the next batch, never joins the one sent (which
  may have been read before the request arrived);
* identical statements (same query, same parameters) of one batch are sent once and their row is handed
  to each request: every request of a 30-day dashboard page asks the same state whatever its machine;
* more than one distinct statement go out in psycopg's pipeline mode: one round trip for the batch;
* one statement's failure is its requests' alone: a pipeline aborted by an error is finished statement by
  statement, so each request gets its own statement's row or error. The errors are what a single read
  gave: a connection error is DatabaseDown (503), a connection found dead is dropped and the batch read
  again once on a checked one, any other error is the request's (the fast path leaves it to FastAPI);
* a batch still in flight after STALL_S (a statement waiting on a lock) no longer holds the next back:
  the next goes on another connection, so one slow read never holds up the worker's other requests.

A row handed to several requests is the same object: the routes only read it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import psycopg
from psycopg import pq

log = logging.getLogger(__name__)

# A batch in flight this long (a statement waiting on a lock, a slow server) stops holding the next batch
# back. Far above a batch's round trip under load (~1 ms), so batches stay whole; at the p99 goal's scale,
# so a stuck read costs the requests queued behind it no more than that.
STALL_S = 0.05
TUPLES_OK = pq.ExecStatus.TUPLES_OK


class _Wanted:
    """One distinct statement of a batch and the futures of the requests that asked it."""

    __slots__ = ("futures", "params", "query")

    def __init__(self, query: Any, params: Any, future: asyncio.Future) -> None:
        self.query, self.params, self.futures = query, params, [future]


def _key(query: Any, params: Any) -> Hashable:
    """What makes two statements the same: the query and the parameters' values (a dict's in its order).
    Anything unhashable is its own statement."""
    try:
        if isinstance(params, dict):
            key: Hashable = (query, tuple(params.items()))
        else:
            key = (query, params)
        hash(key)
    except TypeError:
        return object()
    return key


def _settle(futures: list[asyncio.Future], value: Any, failed: bool) -> None:
    for future in futures:
        if not future.done():  # a request cancelled meanwhile
            if failed:
                future.set_exception(value)
            else:
                future.set_result(value)


class StateReads:
    """The batches of one event loop (a worker). `getconn(check)` lends a connection of the loop's pool
    (check=False: the batch's first statement checks it), `putconn` returns it (a broken one is dropped),
    `down(exc)` is the exception a request gets for a connection error."""

    def __init__(
        self,
        getconn: Callable[[bool], Awaitable[psycopg.AsyncConnection]],
        putconn: Callable[[psycopg.AsyncConnection], Awaitable[None]],
        down: Callable[[psycopg.Error], Exception],
        *,
        stall_s: float = STALL_S,
        unavailable: tuple[type[Exception], ...] = (),
    ) -> None:
        """`unavailable`: what `getconn` raises when no connection comes (the database is down): each
        waiting request answers it (a 503), and it is no fault of this code to log with a traceback."""
        self._getconn, self._putconn, self._down, self._stall_s = getconn, putconn, down, stall_s
        self._unavailable = unavailable
        self._pending: dict[Hashable, _Wanted] = {}
        self._holder: asyncio.Task | None = None  # the sender the next batch waits for
        self._sent_at: float | None = None  # when the holder's batch went out (None: none in flight)
        self._stall: asyncio.TimerHandle | None = None
        self._senders: set[asyncio.Task] = set()
        # requests asked, distinct statements and batches sent (a batch read again on a checked connection
        # counts once): what the batching saves, for the tests and the benchmark
        self.counts = {"requests": 0, "statements": 0, "batches": 0}

    async def first_row(self, query: Any, params: Any = None) -> Any:
        """The first row of `query`, read by a batch sent after this call."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        key = _key(query, params)
        wanted = self._pending.get(key)
        if wanted is None:
            self._pending[key] = _Wanted(query, params, future)
        else:
            wanted.futures.append(future)
        self.counts["requests"] += 1
        if self._holder is None:
            self._start(loop)
        elif self._sent_at is not None and self._stall is None:
            self._stall = loop.call_at(self._sent_at + self._stall_s, self._stalled, self._holder)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._send_batches())
        self._holder = task
        self._senders.add(task)

    def _stalled(self, holder: asyncio.Task) -> None:
        """The holder's batch is still in flight after stall_s: the waiting statements go on without it."""
        self._stall = None
        if self._holder is holder and self._sent_at is not None and self._pending:
            self._holder, self._sent_at = None, None
            self._start(asyncio.get_running_loop())

    async def _send_batches(self) -> None:
        """Send what is waiting, batch after batch on one connection, until nothing waits (or a stall made
        another sender the holder); every request of a batch gets its outcome, whatever happens."""
        me = asyncio.current_task()
        loop = asyncio.get_running_loop()
        conn: psycopg.AsyncConnection | None = None
        batch: list[_Wanted] = []
        try:
            while self._pending and self._holder is me:
                batch = list(self._pending.values())
                self._pending = {}
                self._sent_at = loop.time()
                self.counts["batches"] += 1
                self.counts["statements"] += len(batch)
                held, conn = conn, None  # _read returns the connection to keep, or has given it back
                try:
                    outcomes, conn = await self._read(batch, held)
                except Exception as exc:  # no connection (DatabaseDown), or a fault of this code
                    if not isinstance(exc, (psycopg.Error, *self._unavailable)):
                        log.exception("state reads: a batch failed")
                    for wanted in batch:
                        _settle(wanted.futures, exc, True)
                else:
                    for wanted, (failed, value) in zip(batch, outcomes, strict=True):
                        _settle(wanted.futures, value, failed)
                finally:
                    if self._holder is me:
                        self._sent_at = None
                        if self._stall is not None:
                            self._stall.cancel()
                            self._stall = None
                batch = []
        except BaseException as exc:  # cancelled (the loop torn down): no request waits forever
            stopped = RuntimeError("the state reads stopped") if isinstance(exc, asyncio.CancelledError) else exc
            waiting = batch + (list(self._pending.values()) if self._holder is me else [])
            if self._holder is me:
                self._pending = {}
            for wanted in waiting:
                _settle(wanted.futures, stopped, True)
            raise
        finally:
            if self._holder is me:
                self._holder, self._sent_at = None, None
            self._senders.discard(me)  # type: ignore[arg-type]
            if conn is not None:
                await self._putconn(conn)

    async def _read(
        self, batch: list[_Wanted], conn: psycopg.AsyncConnection | None
    ) -> tuple[list[tuple[bool, Any]], psycopg.AsyncConnection | None]:
        """Each statement's (failed, row or error), and the connection to keep: a connection found dead is
        dropped and the batch read again, once, on one the pool checked."""
        for check in (False, True):
            if conn is None:
                conn = await self._getconn(check)
            try:
                return await self._outcomes(conn, batch), conn
            except BaseException as exc:
                await self._putconn(conn)  # dropped by the pool when broken
                conn = None
                if not isinstance(exc, psycopg.Error):  # _outcomes raises psycopg's only when broken
                    raise
                if check:
                    raise self._down(exc) from None
        raise AssertionError("unreachable")

    async def _outcomes(self, conn: psycopg.AsyncConnection, batch: list[_Wanted]) -> list[tuple[bool, Any]]:
        if len(batch) == 1:  # the common case under load (identical statements): no pipeline to enter
            return [await self._alone(conn, batch[0])]
        cursors: list[psycopg.AsyncCursor] = []
        try:
            async with conn.pipeline():
                for wanted in batch:
                    cursors.append(await conn.execute(wanted.query, wanted.params))
        except psycopg.Error:
            if conn.broken:
                raise
        outcomes = []
        for at, wanted in enumerate(batch):
            cursor = cursors[at] if at < len(cursors) else None
            result = cursor.pgresult if cursor is not None else None
            if cursor is not None and result is not None and result.status == TUPLES_OK:
                outcomes.append((False, await cursor.fetchone()))
            else:  # failed, or aborted by a failure before it: read alone for its own outcome
                outcomes.append(await self._alone(conn, wanted))
        return outcomes

    async def _alone(self, conn: psycopg.AsyncConnection, wanted: _Wanted) -> tuple[bool, Any]:
        try:
            return False, await (await conn.execute(wanted.query, wanted.params)).fetchone()
        except psycopg.Error as exc:
            if conn.broken:
                raise
            return True, self._down(exc) if isinstance(exc, psycopg.OperationalError) else exc

    async def close(self) -> None:
        """Wait for every batch in flight and every request waiting (a request may still be queued)."""
        while self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)
