"""The pipeline's database connection (TimescaleDB or plain PostgreSQL, read-write role)."""

from __future__ import annotations

import dagster as dg
import psycopg

from analytics_platform.settings import utc_options


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached; the message says what to start or set."""


class PostgresResource(dg.ConfigurableResource):
    """Connections for assets and sensors. `url` comes from DATABASE_URL (a secret: never logged)."""

    url: str

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection:
        """A new connection; autocommit so that `conn.transaction()` blocks are real transactions."""
        try:
            # TimeZone=UTC: COPY output parses as UTC whatever the server's or role's default is
            return psycopg.connect(self.url, autocommit=autocommit, connect_timeout=10, options=utc_options(self.url))
        except psycopg.OperationalError as exc:
            first = (str(exc).strip().splitlines() or ["connection failed"])[0]
            raise DatabaseUnavailable(
                f"database unreachable ({first}); start it (make demo) or set DATABASE_URL"
            ) from None
