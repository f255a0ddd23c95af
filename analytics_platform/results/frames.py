"""Polars frames out of PostgreSQL by COPY (CSV), never row by row in Python (writes use
`analytics_platform.ingest.store.copy_rows`), the binary array form for reads too large for that
(`binary_array`, a second connection to read on: `sibling`), and the writers' lock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
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


def binary_array(blob: bytes, dtype: str) -> np.ndarray:
    """The elements of a one-dimensional, NULL-free array of 8-byte values in PostgreSQL's binary
    form (`array_send(...)` read as bytea), as a native-endian numpy array.

    Why: millions of values come back as a few such blobs instead of a COPY row each, and a COPY row
    costs psycopg ~1 us of Python whatever its format. After the header (ndim, has-nulls flag,
    element type, then length and lower bound per dimension) each element is (int32 length, 8 bytes),
    so the values are one strided view away. `dtype` is the big-endian element type: `>f8` for
    float8, `>i8` for int8 and timestamptz (microseconds since 2000-01-01).
    """
    native = np.dtype(dtype).newbyteorder("=")
    ndim, has_nulls, _ = np.frombuffer(blob, ">i4", 3)
    if ndim == 0:  # an empty array has no dimensions
        return np.empty(0, native)
    if ndim != 1 or has_nulls:
        raise ValueError(f"expected a one-dimensional array without NULLs, got ndim={ndim}, nulls={has_nulls}")
    length = int(np.frombuffer(blob, ">i4", 1, 12)[0])
    elements = np.frombuffer(blob, np.dtype([("length", ">i4"), ("value", dtype)]), length, 20)
    return elements["value"].astype(native)


def sibling(conn: psycopg.Connection) -> psycopg.Connection:
    """A new autocommit connection to `conn`'s server, database and role, with its options (TimeZone).

    Why: PostgreSQL runs a statement on one core; a read split over two connections uses two, and
    the functions that want that are handed one connection by their asset. The password is kept by
    the connection, never in a parameter listing; it is passed on only when there is one.
    """
    params: dict[str, Any] = conn.info.get_parameters()
    if conn.info.password:
        params["password"] = conn.info.password
    return psycopg.connect(**params, autocommit=True)
