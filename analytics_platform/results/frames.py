"""Polars frames out of PostgreSQL by COPY (CSV), never row by row in Python (writes use
`analytics_platform.ingest.store.copy_rows`), the binary array form for reads too large for that
(`binary_array`, a second connection to read on: `sibling`), and the writers' lock."""

from __future__ import annotations

import select
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import psycopg
from psycopg import pq, sql


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
    text_schema = {name: (pl.String() if _as_text(dtype) else dtype) for name, dtype in schema.items()}
    with conn.cursor() as cur, cur.copy(statement, params):
        buffer = copy_out(conn.pgconn, conn.info.encoding)
    if not buffer:
        return pl.DataFrame(schema=dict(schema))
    frame = pl.read_csv(bytes(buffer), has_header=False, schema=text_schema)
    parsed = [
        parse_float_array(name) if isinstance(dtype, pl.List) else parse_utc_time(name, dtype)
        for name, dtype in schema.items()
        if _as_text(dtype)
    ]
    return frame.with_columns(parsed) if parsed else frame


def _as_text(dtype: pl.DataType) -> bool:
    """Whether `read_frame` reads a column of `dtype` as text and parses it afterwards: arrays
    (the CSV reader has no list type) and UTC timestamps. Why the timestamps: the CSV reader's own
    parse of `2025-08-20 00:00:10.5+00` took 1.4 s per million here, more than the rest of a
    reading's row; read as text and parsed by `str.to_datetime` with the format given, 0.65 s, the
    same values (test_frame_reads.py)."""
    return isinstance(dtype, pl.List) or (isinstance(dtype, pl.Datetime) and dtype.time_zone == "UTC")


def parse_utc_time(column: str, dtype: pl.Datetime) -> pl.Expr:
    """PostgreSQL's text form of a timestamptz (`YYYY-MM-DD HH:MM:SS[.ffffff]+00` on a UTC
    connection) as `dtype` (a UTC Datetime)."""
    return pl.col(column).str.to_datetime("%Y-%m-%d %H:%M:%S%.f%#z", time_unit=dtype.time_unit, time_zone="UTC")


def copy_out(pgconn: pq.abc.PGconn, encoding: str) -> bytearray:
    """Everything a started COPY ... TO STDOUT sends, in one buffer, and its end (the final result).

    Why not `for chunk in copy`: psycopg hands out a COPY row per call, through its wait machinery
    and a generator each: a million readings' rows took 1.2-1.3 s that way, 0.75 s this way (the
    server's side included). libpq buffers what the socket holds, so this asks it for rows directly (`get_copy_data` in
    its non-blocking form) until it has none buffered, and only then waits on the socket. The bytes
    are the same rows in the same order. When the data ends (-1), the COPY's result is read here
    (an error becomes psycopg's exception); psycopg's `Copy` then has nothing left to read: on a
    clean exit it reads nothing more, and after an error the connection is no longer in the COPY."""
    buffer = bytearray()
    get = pgconn.get_copy_data
    while True:
        nbytes, data = get(1)
        if nbytes > 0:
            buffer += data
        elif nbytes == 0:  # nothing buffered: wait for the socket
            wait_readable(pgconn)
        else:
            break
    failure = None
    while True:
        pgconn.consume_input()
        while pgconn.is_busy():
            wait_readable(pgconn)
        result = pgconn.get_result()
        if result is None:
            break
        if result.status != pq.ExecStatus.COMMAND_OK and failure is None:
            failure = psycopg.errors.error_from_result(result, encoding=encoding)
    if failure is not None:
        raise failure
    return buffer


def wait_readable(pgconn: pq.abc.PGconn) -> None:
    """Block until the connection's socket has data (poll: no limit on the descriptor's number, as
    select has), and let libpq read it."""
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    poller.poll()
    pgconn.consume_input()


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
