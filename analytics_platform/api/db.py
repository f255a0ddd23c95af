"""The API's connection pools (read-only role) and how database failures become HTTP 503.

Two pools on the same role: the thread pool's (sync psycopg), which makes answers, and the event
loop's (async psycopg, opened by the app's lifespan), which reads only the state a repeated answer
depends on (api/stages.py): a state statement read from a thread paid two wake-ups between threads
for a round trip of ~0.1 ms, the larger part of a repeat's cost (docs/benchmarks.md, REST API)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import orjson
import psycopg
from opentelemetry.trace import SpanKind
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from analytics_platform import observability
from analytics_platform.api.state_reads import StateReads
from analytics_platform.settings import utc_options


def json_loads(data: bytes | bytearray | memoryview | str) -> Any:
    """orjson for json/jsonb columns: a 30-day KPI page decodes a `details` object per row, and the
    standard library's decoder took a tenth of such a request. What orjson refuses (a number beyond
    a double) the standard library still reads, as before. orjson reads an integer beyond 64 bits as
    a double, where the standard library kept it exact; no answer could carry it anyway (the API
    writes with orjson, which refuses such integers)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)


def _configure(conn: psycopg.Connection) -> None:
    set_json_loads(json_loads, conn)


async def _configure_async(conn: psycopg.AsyncConnection) -> None:
    set_json_loads(json_loads, conn)


# Set while a route's code runs on the event loop (api/stages.py): a blocking statement there would stall
# every other request of the worker, so asking the sync pool for a connection raises WouldBlock instead
# and the caller runs the route in the thread pool. A context variable: the loop's other tasks, and
# the threads a request hands work to once it is reset, are not affected.
_ON_LOOP: ContextVar[bool] = ContextVar("api_db_on_loop", default=False)
# Set around the async pool's getconn when the caller's first statement checks the connection itself.
_UNCHECKED: ContextVar[bool] = ContextVar("api_db_unchecked", default=False)


class WouldBlock(RuntimeError):
    """A statement through the sync pool asked on the event loop (see _ON_LOOP)."""


@contextmanager
def on_loop() -> Iterator[None]:
    """Code in this block runs on the event loop: the sync pool refuses it (WouldBlock)."""
    token = _ON_LOOP.set(True)
    try:
        yield
    finally:
        _ON_LOOP.reset(token)


class TracedCursor(psycopg.Cursor):
    """A child span per SQL statement of a request (the pool's cursors only while tracing is on).

    Plain spans rather than opentelemetry-instrumentation-psycopg: no release of it matches the SDK's
    1.45.2 line (0.66b2 is not published; 0.66b1 pins an older semantic-conventions than the SDK),
    and the statement text with its operation is all a request's trace needs. Parameters are sent
    apart from the text and never recorded."""

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Any:
        with self._span(query):
            return super().execute(query, params, prepare=prepare, binary=binary)

    def executemany(self, query: Any, params_seq: Iterable[Any], *, returning: bool = False) -> None:
        with self._span(query):
            super().executemany(query, params_seq, returning=returning)

    @contextmanager
    def copy(self, statement: Any, params: Any = None, *, writer: Any = None) -> Iterator[Any]:
        with self._span(statement), super().copy(statement, params, writer=writer) as copy:
            yield copy

    def stream(self, query: Any, params: Any = None, *, binary: bool | None = None, size: int = 1) -> Iterator[Any]:
        with self._span(query):
            yield from super().stream(query, params, binary=binary, size=size)

    def _span(self, query: Any) -> Any:
        return statement_span(query, self, self.connection.info)


def statement_span(query: Any, context: Any, info: Any) -> Any:
    """A client span for one statement (`context` renders a composed query; `info`: the connection's)."""
    if isinstance(query, sql.Composable):
        text = query.as_string(context)
    elif isinstance(query, bytes | bytearray | memoryview):
        text = bytes(query).decode(errors="replace")
    else:
        text = str(query)
    operation = text.lstrip().split(None, 1)[0].upper() if text.strip() else "SQL"
    return observability.tracer(__name__).start_as_current_span(
        f"{operation} {info.dbname}",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system.name": "postgresql",
            "db.namespace": info.dbname,
            "db.operation.name": operation,
            "db.query.text": text,
            "server.address": info.host,
            "server.port": info.port,
        },
    )


class DatabaseDown(RuntimeError):
    """The database cannot serve the request; mapped to 503 with this reason."""


def _down(exc: psycopg.Error) -> DatabaseDown:
    """The 503 of a statement's connection error: its first line."""
    first = (str(exc).strip().splitlines() or ["connection failed"])[0]
    return DatabaseDown(f"database error: {first}")


class Database:
    """A small pool, opened lazily so the API starts (and says why it is degraded) without a DB; and
    the event loop's pool of the same size for state statements, opened by open_async."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8, timeout: float = 5.0) -> None:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": 5,
            "options": utc_options(url),
        }
        self._url, self._async_kwargs = url, dict(kwargs)
        self._min_size, self._max_size, self._timeout = min_size, max_size, timeout
        # How long the pools' background reconnection backs off (1, 2, 4 ... s) before it gives up and the
        # next request starts a new one at once. At psycopg_pool's default (300 s) the pause between attempts
        # grew with the outage: 40 s of database down were followed by 20 s of 503s with the database back.
        # Bounded by a request's own wait, a request made once the database is back gets its connection.
        self._reconnect_s = timeout
        self.async_pool: AsyncConnectionPool | None = None
        self.state_reads: StateReads | None = None  # the loop's batches of state statements (open_async)
        self._async_loop: asyncio.AbstractEventLoop | None = None
        if observability.tracing_on():
            kwargs["cursor_factory"] = TracedCursor
        self.pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            reconnect_timeout=self._reconnect_s,
            open=False,
            kwargs=kwargs,
            check=self._check,
            configure=_configure,
        )
        self._opened = False
        self._unchecked = threading.local()  # set by checked_by() around its getconn, in its own thread

    def open(self) -> None:
        if not self._opened:
            self.pool.open(wait=False)
            self._opened = True

    def close(self) -> None:
        if self._opened:
            self.pool.close()
            self._opened = False

    def _check(self, conn: psycopg.Connection) -> None:
        """The pool's check of a connection it hands out (an empty statement, a round trip), unless
        the caller's first statement checks it instead (checked_by)."""
        if not getattr(self._unchecked, "on", False):
            ConnectionPool.check_connection(conn)

    @contextmanager
    def connection(self, *, check: bool = True) -> Iterator[psycopg.Connection]:
        if _ON_LOOP.get():
            raise WouldBlock("a sync statement on the event loop")
        self.open()
        self._unchecked.on = not check
        try:
            with self.pool.connection() as conn:
                self._unchecked.on = False
                try:
                    yield conn
                except psycopg.errors.ReadOnlySqlTransaction:
                    # a standby's session, and every other session of the pool reached the same server: all are
                    # replaced (drain), reaching the promoted or re-pointed one; dropping this one alone left the
                    # rest to fail one edit each
                    conn.close()
                    self.pool.drain()
                    raise
        except PoolTimeout:
            raise DatabaseDown("no database connection available (is the database running?)") from None
        except psycopg.OperationalError as exc:
            first = (str(exc).strip().splitlines() or ["connection failed"])[0]
            raise DatabaseDown(f"database error: {first}") from None
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            # the URL reaches a standby (a failover in progress): a write (resolve, catalogue edit) cannot be
            # served now, which is the database's state, not a fault of the request (it was a 500)
            first = (str(exc).strip().splitlines() or ["read-only transaction"])[0]
            raise DatabaseDown(f"database is read-only ({first}): a standby after a failover?") from None
        finally:
            self._unchecked.on = False

    @contextmanager
    def checked_by(self, query: Any, params: Any = None) -> Iterator[tuple[psycopg.Connection, Any]]:
        """A connection and the first row of `query`, its first statement, which stands in for the
        pool's check: one round trip where a conditional GET's tag took two (the check, then the tag
        query), and each costs a wake-up of a backend on the few cores the API shares with it.

        A connection found dead by `query` (the server restarted, or closed it) is dropped and the
        query runs again on one the pool checked, as it would have been without the stand-in; only a
        read that is safe to repeat belongs here. Any other error is the caller's, as with connection()."""
        dead = False
        with self.connection(check=False) as conn:
            try:
                row = conn.execute(query, params).fetchone()
            except psycopg.OperationalError:
                if not conn.broken:
                    raise
                dead = True  # leaving the block returns it to the pool, which drops a broken connection
            else:
                yield conn, row
        if dead:
            with self.connection() as conn:
                yield conn, conn.execute(query, params).fetchone()

    def read(self, read: Callable[[psycopg.Connection], Any]) -> Any:
        """What `read` returns, run on a connection without the pool's check (its empty statement, a round
        trip of its own): a connection `read` finds dead is dropped and `read` runs again on one the pool
        checked, as checked_by does. Only for reads that are safe to repeat."""
        with self.connection(check=False) as conn:
            try:
                return read(conn)
            except psycopg.OperationalError:
                if not conn.broken:
                    raise
        with self.connection() as conn:  # the dead one went back to the pool, which dropped it
            return read(conn)

    def stats(self) -> dict[str, int]:
        return dict(self.pool.get_stats()) if self._opened else {}

    def loop_stats(self) -> dict[str, int]:
        """The event loop's pool's figures, as stats() gives the thread pool's (empty until the lifespan
        opens it). Read from the scrape's thread: get_stats only copies counters, it awaits nothing."""
        pool = self.async_pool
        return dict(pool.get_stats()) if pool is not None else {}

    def state_read_counts(self) -> dict[str, int]:
        """The event loop's batches of state statements so far (api/state_reads.py; empty until opened)."""
        reads = self.state_reads
        return dict(reads.counts) if reads is not None else {}

    async def open_async(self) -> None:
        """Open the event loop's pool, bound to the running loop (the app's lifespan): it connects in
        the background, so the API still starts without a database."""
        if self.async_pool is None:
            self.async_pool = AsyncConnectionPool(
                self._url,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._timeout,
                reconnect_timeout=self._reconnect_s,
                open=False,
                kwargs=self._async_kwargs,
                check=self._check_async,
                configure=_configure_async,
            )
            await self.async_pool.open(wait=False)
            self._async_loop = asyncio.get_running_loop()
            self.state_reads = StateReads(self._getconn, self.async_pool.putconn, _down, unavailable=(DatabaseDown,))

    async def close_async(self) -> None:
        """Close the event loop's pool once every state read in flight or waiting has its answer."""
        if self.async_pool is not None:
            if self.state_reads is not None:
                await self.state_reads.close()
            pool, self.async_pool, self._async_loop, self.state_reads = self.async_pool, None, None, None
            await pool.close()

    def reads_on_loop(self) -> bool:
        """Whether first_row can run on the running loop: its pool was opened on it (a test client
        without its lifespan runs each request on a loop of its own, and gets the thread pool)."""
        try:
            return self.async_pool is not None and self._async_loop is asyncio.get_running_loop()
        except RuntimeError:
            return False

    async def _check_async(self, conn: psycopg.AsyncConnection) -> None:
        if not _UNCHECKED.get():
            await AsyncConnectionPool.check_connection(conn)

    async def _getconn(self, check: bool) -> psycopg.AsyncConnection:
        assert self.async_pool is not None
        token = _UNCHECKED.set(not check)
        try:
            return await self.async_pool.getconn()
        except PoolTimeout:
            raise DatabaseDown("no database connection available (is the database running?)") from None
        finally:
            _UNCHECKED.reset(token)

    async def first_row(self, query: Any, params: Any = None) -> Any:
        """The first row of `query` on the event loop's pool, the request's first statement, which stands
        in for the pool's check as checked_by's does: a connection found dead by it is dropped and the query
        runs again on one the pool checked. Failures are DatabaseDown, as with connection(); the wait for a
        connection is bounded by the same timeout as the sync pool's (API_DB_WAIT_S).

        Read in a batch with the other requests' state statements (api/state_reads.py: one round trip, and
        one statement for identical ones), except while tracing is on: the statement's span belongs in the
        request's trace, so it is read alone in the request's own task."""
        if self.state_reads is not None and not observability.tracing_on():
            return await self.state_reads.first_row(query, params)
        return await self._first_row_alone(query, params)

    async def _first_row_alone(self, query: Any, params: Any) -> Any:
        """first_row on a connection of its own (getconn/putconn rather than the pool's context manager:
        two fewer context managers a request)."""
        assert self.async_pool is not None
        for check in (False, True):
            conn = await self._getconn(check)
            try:
                return await self._execute(conn, query, params)
            except psycopg.OperationalError as exc:
                if check or not conn.broken:
                    raise _down(exc) from None
            finally:
                await self.async_pool.putconn(conn)  # a broken connection is dropped
        raise AssertionError("unreachable")

    @staticmethod
    async def _execute(conn: psycopg.AsyncConnection, query: Any, params: Any) -> Any:
        if not observability.tracing_on():
            return await (await conn.execute(query, params)).fetchone()
        with statement_span(query, conn, conn.info):
            return await (await conn.execute(query, params)).fetchone()
