"""Read back what a partition wrote, for its data-contract checks.

Checks judge the stored rows, not the frame the transform produced: they are what readers see,
after COPY, key conflicts and whatever else ran in between. Result columns are read as the
contract types them, and only where the table has them with that type, so a table that drifted
from its contract is reported by the `schema` check instead of failing the read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import psycopg
from psycopg import sql

from analytics_platform.data_quality.raw import SERIES, SERIES_SCHEMA
from analytics_platform.data_quality.result_contracts import TableContract
from analytics_platform.results.aggregates import POSTGRES_EPOCH_US
from analytics_platform.results.frames import read_frame
from analytics_platform.transforms import spec_quality

COLUMNS_SCHEMA: dict[str, pl.DataType] = {"column_name": pl.String(), "data_type": pl.String()}
SENSOR_SCHEMA: dict[str, pl.DataType] = {
    "time": pl.Datetime("us", "UTC"),
    **SERIES_SCHEMA,
    "value": pl.Float64(),
    "unit": pl.String(),
}
# the columns the spec-quality transform reads, less the dedup key a check has no use for
SWEEP_SCHEMA: dict[str, pl.DataType] = {k: v for k, v in spec_quality.SWEEP_SCHEMA.items() if k != "dedup_key"}


def table_columns(conn: psycopg.Connection, table: str) -> pl.DataFrame:
    """column_name, data_type of analytics.`table` (information_schema)."""
    return read_frame(
        conn,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'analytics' AND table_name = %s ORDER BY ordinal_position",
        (table,),
        COLUMNS_SCHEMA,
    )


def read_written(
    conn: psycopg.Connection, contract: TableContract, where: str, params: Sequence[object]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows of analytics.<table> matching `where`, the table's columns). Only the contract's
    columns the table has with the contract's type are read."""
    columns = table_columns(conn, contract.table)
    actual = dict(columns.iter_rows())
    present = {name: dtype for name, dtype in contract.schema.items() if actual.get(name) == contract.columns[name]}
    query = sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in present),
        sql.Identifier("analytics", contract.table),
        sql.SQL(where),  # type: ignore[arg-type]  # fixed SQL text from defs/checks.py, never input
    )
    # arrays stay in their text form; booleans come as PostgreSQL's t / f
    as_text = {name for name in present if contract.columns[name] in ("ARRAY", "boolean")}
    text_schema = {name: (pl.String() if name in as_text else dtype) for name, dtype in present.items()}
    rows = read_frame(conn, query, params, text_schema) if present else pl.DataFrame()
    flags = [pl.col(name) == "t" for name in present if contract.columns[name] == "boolean"]
    rows = rows.with_columns(flags) if flags else rows
    # a drifted column is NULL here, so the suites still run; the schema check names the drift
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in contract.schema.items() if name not in present]
    return (rows.with_columns(missing) if missing else rows), columns


# fixed-width PostgreSQL types -> (their binary send function, its big-endian numpy type)
_SEND = {
    "timestamp with time zone": ("timestamptz_send", ">i8"),
    "double precision": ("float8send", ">f8"),
    "bigint": ("int8send", ">i8"),
    "integer": ("int4send", ">i4"),
    "smallint": ("int2send", ">i2"),
}


def read_written_grouped(
    conn: psycopg.Connection, contract: TableContract, group: Sequence[str], where: str, params: Sequence[object]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`read_written` for a table whose rows share a few values of the text columns `group`: the
    same frame (its rows in key order), read as one row per group with every other column as its
    values' binary form concatenated (`string_agg(float8send(...))`) instead of a COPY row per row.

    Why: a day of window aggregates is 175,200 rows in 100 series; a COPY row costs psycopg Python
    and a CSV parse, while a group's column is one bytes value numpy reads as it is. Whether a row's
    column is NULL travels in one bit mask per row (the value itself as 0), so the frame is the one
    `read_written` gives, NULLs, NaN and every bit of the floats included. A table that drifted
    from its contract in any column this form relies on is read by `read_written`.
    """
    columns = table_columns(conn, contract.table)
    actual = dict(columns.iter_rows())
    present = [name for name in contract.columns if actual.get(name) == contract.columns[name]]
    packed = [name for name in present if name not in group]
    drifted = set(present) != set(contract.columns)
    if drifted or len(packed) > 62 or any(contract.columns[name] not in _SEND for name in packed):
        return read_written(conn, contract, where, params)
    selected = [sql.Identifier(c) for c in group]
    nulls = []
    for bit, name in enumerate(packed):
        column = sql.Identifier(name)
        function = sql.Identifier(_SEND[contract.columns[name]][0])
        zero = sql.SQL("'epoch'") if contract.columns[name] == "timestamp with time zone" else sql.SQL("0")
        selected.append(sql.SQL("string_agg({}(coalesce({}, {})), ''::bytea)").format(function, column, zero))
        nulls.append(sql.SQL("(({} IS NULL)::int::bigint << {})").format(column, sql.Literal(bit)))
    selected.append(sql.SQL("string_agg(int8send({}), ''::bytea)").format(sql.SQL(" | ").join(nulls)))
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in group)
    query = sql.SQL("SELECT {} FROM {} WHERE {} GROUP BY {}").format(
        sql.SQL(", ").join(selected),
        sql.Identifier("analytics", contract.table),
        sql.SQL(where),  # type: ignore[arg-type]  # fixed SQL text from defs/checks.py, never input
        keys,
    )
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(query, params).fetchall()
    schema = contract.schema
    if not rows:
        return pl.DataFrame(schema=schema), columns
    width = len(group)
    # the aggregates of a group see its rows in one order, so a group's columns line up
    masks = [np.frombuffer(row[-1], ">i8") for row in rows]
    index = pl.Series(np.repeat(np.arange(len(rows), dtype=np.uint32), [len(m) for m in masks]))
    mask = np.concatenate(masks)
    keyed = pl.DataFrame([row[:width] for row in rows], schema={c: schema[c] for c in group}, orient="row")
    found: dict[str, pl.Series] = {c: keyed[c].gather(index) for c in group}
    for bit, name in enumerate(packed):
        values = np.frombuffer(b"".join(row[width + bit] for row in rows), _SEND[contract.columns[name]][1])
        if len(values) != len(mask):
            raise ValueError(f"{contract.table}.{name}: {len(values)} values for {len(mask)} rows")
        if contract.columns[name] == "timestamp with time zone":
            values = values + POSTGRES_EPOCH_US
        series = pl.Series(name, values.astype(values.dtype.newbyteorder("="))).cast(schema[name])
        missing = np.flatnonzero(mask & (1 << bit))
        found[name] = series.scatter(missing, None) if len(missing) else series
    return pl.DataFrame([found[c] for c in contract.columns]).sort(contract.key), columns


def read_sensor_readings(conn: psycopg.Connection, start: datetime, end: datetime) -> pl.DataFrame:
    """time, series key, value, unit of the raw sensor readings in [start, end)."""
    return read_frame(
        conn,
        "SELECT time, tenant_id, factory_id, machine_id, sensor_id, metric, value, unit "
        "FROM analytics.raw_sensor_readings WHERE time >= %s AND time < %s",
        (start, end),
        SENSOR_SCHEMA,
    )


def read_series(conn: psycopg.Connection, start: datetime, end: datetime) -> pl.DataFrame:
    """The distinct series (tenant, factory, machine, sensor, metric) with readings in [start, end)."""
    return read_frame(
        conn,
        f"SELECT DISTINCT {', '.join(SERIES)} FROM analytics.raw_sensor_readings WHERE time >= %s AND time < %s",
        (start, end),
        SERIES_SCHEMA,
    )


def read_previous_series(conn: psycopg.Connection, start: datetime) -> pl.DataFrame:
    """The series that reported in the hour before `start` (expected to go on reporting)."""
    return read_series(conn, start - timedelta(hours=1), start)


def read_sweep_readings(conn: psycopg.Connection, start: datetime, end: datetime) -> pl.DataFrame:
    """Sweep batches of [start, end) with their values as a list."""
    return read_frame(
        conn,
        f"SELECT {', '.join(SWEEP_SCHEMA)} FROM analytics.raw_sweep_readings WHERE time >= %s AND time < %s",
        (start, end),
        SWEEP_SCHEMA,
    )
