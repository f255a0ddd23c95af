"""Polars frames out of PostgreSQL by COPY (CSV), never row by row in Python (writes use
`analytics_platform.ingest.store.copy_rows`), and the writers' lock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
import psycopg
from psycopg import sql


def read_frame(
    conn: psycopg.Connection,
    query: str | sql.Composable,
    params: Sequence[Any] | Mapping[str, Any] | None,
    schema: Mapping[str, pl.DataType],
) -> pl.DataFrame:
    """The rows of `query` (its columns in `schema`'s order) as a typed frame.

    The connection must use TimeZone=UTC (PostgresResource connections do) so timestamps arrive
    as `YYYY-MM-DD HH:MM:SS[.ffffff]+00`, which Polars parses natively. Arrays are read as their
    text form; callers convert them (see `parse_float_array`).
    """
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(sql.SQL(query) if isinstance(query, str) else query)
    text_schema = {name: (pl.String() if isinstance(dtype, pl.List) else dtype) for name, dtype in schema.items()}
    buffer = bytearray()
    with conn.cursor() as cur, cur.copy(statement, params) as copy:
        for chunk in copy:
            buffer += chunk
    if not buffer:
        return pl.DataFrame(schema=dict(schema))
    frame = pl.read_csv(bytes(buffer), has_header=False, schema=text_schema)
    lists = [parse_float_array(name) for name, dtype in schema.items() if isinstance(dtype, pl.List)]
    return frame.with_columns(lists) if lists else frame


def parse_float_array(column: str) -> pl.Expr:
    """PostgreSQL's `{1.5,2,3}` text form of a float8[] as a Polars list."""
    return pl.col(column).str.strip_chars("{}").str.split(",").cast(pl.List(pl.Float64))


def lock_results(cur: psycopg.Cursor, table: str) -> None:
    """Serialise writers of one result table for the rest of the transaction.

    Two runs may recompute the same bucket (a window longer than an hour is rebuilt by each of its
    hours); without the lock their delete + insert could interleave into a key conflict.
    """
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"analytics.{table}",))
