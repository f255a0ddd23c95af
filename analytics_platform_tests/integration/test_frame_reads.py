"""How result modules read query rows into Polars (analytics_platform.results.frames.read_frame): a COPY
drained from libpq's buffer (`copy_out`), UTC timestamps parsed after the CSV reader. Every caller
must get the frame the CSV reader gave them before, type for type and bit for bit; a server error in
the middle of a COPY must come back as psycopg's exception, the connection still usable."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest
from psycopg import sql

from analytics_platform.results.frames import read_frame
from analytics_platform_tests.support.stack import DatabaseHandle

TIME = pl.Datetime("us", "UTC")
SCHEMA: dict[str, pl.DataType] = {
    "time": TIME,
    "label": pl.String(),
    "value": pl.Float64(),
    "n": pl.Int64(),
    "k": pl.Int32(),
    "values": pl.List(pl.Float64()),
}
# 30,000 rows, so the COPY spans many reads of the socket: times on both sides of 1970 and 2000,
# whole seconds and fractions down to the microsecond, a NULL every 997th; labels that need CSV quoting
QUERY = """
SELECT CASE WHEN i %% 997 = 0 THEN NULL
            ELSE timestamptz '1969-12-31 23:59:59.5+00' + i * interval '1 day 0.000001 second' * (i %% 3) END,
       CASE i %% 4 WHEN 0 THEN 'plain' WHEN 1 THEN 'a,comma' WHEN 2 THEN 'a "quote"' ELSE E'a\\nnewline' END,
       CASE WHEN i %% 11 = 0 THEN NULL ELSE (i * 0.1)::float8 / 3 END,
       i::int8 * 1000000007,
       (i %% 5)::int4,
       ARRAY[i::float8 / 7, -0.0, 1e308]
FROM generate_series(-15000, 14999) AS i
WHERE i >= %s
"""


def bits(values: list[float | None]) -> list[int | None]:
    return [None if v is None else struct.unpack("<q", struct.pack("<d", v))[0] for v in values]


def csv_reader_frame(conn: psycopg.Connection, query: str, params: tuple, schema: dict) -> pl.DataFrame:
    """The frame read_frame returned before (the rows psycopg handed out one by one, the CSV reader
    parsing the timestamps): what every caller must still get."""
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(sql.SQL(query))
    buffer = bytearray()
    with conn.cursor() as cur, cur.copy(statement, params) as copy:
        for chunk in copy:
            buffer += chunk
    text = {name: pl.String() if isinstance(dtype, pl.List) else dtype for name, dtype in schema.items()}
    frame = pl.read_csv(bytes(buffer), has_header=False, schema=text)
    return frame.with_columns(
        pl.col(name).str.strip_chars("{}").str.split(",").cast(pl.List(pl.Float64))
        for name, dtype in schema.items()
        if isinstance(dtype, pl.List)
    )


def test_read_frame_gives_the_csv_readers_frame_bit_for_bit(database: DatabaseHandle) -> None:
    with psycopg.connect(database.admin_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        got = read_frame(conn, QUERY, (-15000,), SCHEMA)
        want = csv_reader_frame(conn, QUERY, (-15000,), SCHEMA)
    assert got.schema == pl.Schema(SCHEMA)
    assert got.height == want.height == 30_000
    assert got["time"].to_list() == want["time"].to_list()
    assert got["time"].null_count() == 31
    assert got.select("label", "n", "k").rows() == want.select("label", "n", "k").rows()
    assert bits(got["value"].to_list()) == bits(want["value"].to_list())
    assert [bits(v) for v in got["values"].to_list()] == [bits(v) for v in want["values"].to_list()]
    # by hand: rows before 1970 and after 2000, with and without a microsecond fraction
    start = datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)
    assert got.row(0, named=True)["time"] == start  # i = -15000: i % 3 = 0
    # i = -14999: i % 3 = -2, so 29,998 days and 29,998 us after the start
    assert got.row(1, named=True)["time"] == start + timedelta(days=29_998, microseconds=29_998)
    assert got.filter(pl.col("n") == 0).row(0, named=True)["time"] is None  # i = 0: a NULL (0 % 997)
    assert got.filter(pl.col("n") == 1000000007)["time"].to_list() == [
        datetime(1970, 1, 1, 23, 59, 59, 500001, tzinfo=UTC)  # i = 1: one day and 1 us after the start
    ]
    assert got.filter(pl.col("n") == 1000000007)["label"].to_list() == ["a,comma"]


def test_an_empty_result_is_an_empty_frame_of_the_schema(database: DatabaseHandle) -> None:
    with psycopg.connect(database.admin_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        empty = read_frame(conn, QUERY, (20_000,), SCHEMA)
    assert empty.height == 0
    assert empty.schema == pl.Schema(SCHEMA)


def test_an_error_in_the_middle_of_a_copy_is_raised_and_the_connection_stays_usable(
    database: DatabaseHandle,
) -> None:
    # the division fails at the 20,001st row, after the server has sent rows
    failing = "SELECT i::float8 / (i - 5000) FROM generate_series(-15000, 14999) AS i"
    with psycopg.connect(database.admin_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            read_frame(conn, failing, None, {"x": pl.Float64()})
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with conn.transaction():
            with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
                read_frame(conn, failing, None, {"x": pl.Float64()})
            assert read_frame(conn, "SELECT 2::int8", None, {"x": pl.Int64()})["x"].to_list() == [2]
