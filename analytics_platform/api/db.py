"""The API's connection pool (read-only role) and how database failures become HTTP 503."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from analytics_platform.settings import utc_options


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
