"""The API's connection pool (read-only role) and how database failures become HTTP 503."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

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


class DatabaseDown(RuntimeError):
    """The database cannot serve the request; mapped to 503 with this reason."""


class Database:
    """A small pool, opened lazily so the API starts (and says why it is degraded) without a DB."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8, timeout: float = 5.0) -> None:
        self.pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 5, "options": utc_options(url)},
            check=ConnectionPool.check_connection,
            configure=_configure,
        )
        self._opened = False

    def open(self) -> None:
        if not self._opened:
            self.pool.open(wait=False)
            self._opened = True

    def close(self) -> None:
        if self._opened:
            self.pool.close()
            self._opened = False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        self.open()
        try:
            with self.pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise DatabaseDown("no database connection available (is the database running?)") from None
        except psycopg.OperationalError as exc:
            first = (str(exc).strip().splitlines() or ["connection failed"])[0]
            raise DatabaseDown(f"database error: {first}") from None

    def stats(self) -> dict[str, int]:
        return dict(self.pool.get_stats()) if self._opened else {}
