"""A domain's raw table, as its contract declares it: columns, key, indexes and time partitioning.

The migration runner (`analytics_platform.migrations`) creates and evolves every registered
contract's table from this declaration, so a domain needs no hand-written SQL. Pure: it turns the
declaration into SQL text and touches no database, so it stays in this package (the edge agent
installs it without the platform).

The SQL types come from the contract's Polars schema (`row_schema`, `derived_schema`); the
standard columns every raw table has (identity, Kafka coordinates, ingest time) are appended, and
the table's key is `(time, dedup_key)`. Columns the contract derives (`derived_schema`) come last
and are NOT NULL with a default, so adding one to a table that already holds rows works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from analytics_platform.contracts.base import Contract

SCHEMA = "analytics"

# the columns after the payload's: how a row was identified and where it came from
STANDARD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "text"),
    ("schema_version", "smallint NOT NULL"),
    ("dedup_key", "text NOT NULL"),
    ("topic", "text NOT NULL"),
    ("kafka_partition", "integer NOT NULL"),
    ("kafka_offset", "bigint NOT NULL"),
    # the start of the writing statement, not of its transaction: see ingest/store.py OLDEST_WRITER
    ("ingested_at", "timestamptz NOT NULL DEFAULT statement_timestamp()"),
)
PRIMARY_KEY = ("time", "dedup_key")


@dataclass(frozen=True)
class RawIndex:
    """One index of a raw table: `<raw_table>_<suffix>` on `columns` (`"time DESC"` allowed),
    partial when `where` is given."""

    suffix: str
    columns: tuple[str, ...]
    where: str | None = None


@dataclass(frozen=True)
class Timeseries:
    """How the raw table is partitioned on TimescaleDB (`analytics.make_timeseries`: a hypertable
    on `time` in chunks of `chunk`, compressed after `compress_after` segmented by `segment_by`
    (default: the contract's Kafka key fields) and dropped after `retain`). Plain PostgreSQL keeps
    a plain table with the same columns and indexes."""

    chunk: str = "1 day"
    segment_by: tuple[str, ...] | None = None
    order_by: str = "time DESC"
    compress_after: str | None = "7 days"
    retain: str | None = "90 days"


def sql_type(dtype: pl.DataType) -> str:
    """The PostgreSQL type a raw column of this Polars dtype is stored as."""
    if isinstance(dtype, pl.List):
        return sql_type(dtype.inner) + "[]"
    if isinstance(dtype, pl.Datetime):
        return "timestamptz"
    simple = {
        pl.String: "text",
        pl.Float64: "double precision",
        pl.Float32: "real",
        pl.Int16: "smallint",
        pl.Int32: "integer",
        pl.Int64: "bigint",
        pl.Boolean: "boolean",
        pl.Date: "date",
    }
    for polars_type, sql in simple.items():
        if isinstance(dtype, polars_type):
            return sql
    raise ValueError(f"no SQL type for a raw column of dtype {dtype}")


_SQL_DEFAULTS = {"boolean": "false", "text": "''", "double precision": "0", "integer": "0", "bigint": "0"}


def column_definitions(contract: Contract) -> list[tuple[str, str]]:
    """(name, SQL definition) of every raw column, in table order."""
    required = contract.required_columns()
    columns = []
    for name, dtype in contract.row_schema.items():
        kind = "jsonb" if name in contract.json_columns else sql_type(dtype)
        columns.append((name, kind + (" NOT NULL" if name in required else "")))
    columns += STANDARD_COLUMNS
    for name, dtype in contract.derived_schema.items():
        kind = sql_type(dtype)
        default = contract.column_defaults.get(name, _SQL_DEFAULTS.get(kind))
        if default is None:
            raise ValueError(f"{contract.raw_table}.{name}: a derived column needs a default (column_defaults)")
        columns.append((name, f"{kind} NOT NULL DEFAULT {default}"))
    return columns


def index_statements(contract: Contract) -> list[str]:
    table = f"{SCHEMA}.{contract.raw_table}"
    statements = []
    for index in contract.raw_indexes():
        where = f" WHERE {index.where}" if index.where else ""
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {contract.raw_table}_{index.suffix} "
            f"ON {table} ({', '.join(index.columns)}){where}"
        )
    return statements


def timeseries_statement(contract: Contract) -> str:
    """`analytics.make_timeseries(...)` for the table (sql/01; a no-op on plain PostgreSQL)."""
    ts = contract.timeseries
    segment_by = ", ".join(ts.segment_by or contract.key_fields)

    def interval(value: str | None) -> str:
        return "NULL" if value is None else f"INTERVAL '{value}'"

    return (
        f"SELECT {SCHEMA}.make_timeseries('{SCHEMA}.{contract.raw_table}', 'time', {interval(ts.chunk)}, "
        f"'{segment_by}', '{ts.order_by}', {interval(ts.compress_after)}, {interval(ts.retain)})"
    )


def create_statements(contract: Contract, existing_columns: frozenset[str] = frozenset()) -> list[str]:
    """Everything that makes the table what the contract declares, idempotent: create it when
    missing, add the columns a table made by an older declaration lacks (`existing_columns`),
    create missing indexes, make it a hypertable (TimescaleDB), grant the two roles."""
    table = f"{SCHEMA}.{contract.raw_table}"
    columns = column_definitions(contract)
    body = ",\n    ".join([*(f"{name} {kind}" for name, kind in columns), f"PRIMARY KEY ({', '.join(PRIMARY_KEY)})"])
    statements = [f"CREATE TABLE IF NOT EXISTS {table} (\n    {body}\n)"]
    if existing_columns:
        statements += [
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind}"
            for name, kind in columns
            if name not in existing_columns
        ]
        # a table made by an older declaration keeps its columns' old defaults otherwise
        statements += [
            f"ALTER TABLE {table} ALTER COLUMN {name} SET DEFAULT {kind.split(' DEFAULT ', 1)[1]}"
            for name, kind in STANDARD_COLUMNS
            if name in existing_columns and " DEFAULT " in kind
        ]
    statements += index_statements(contract)
    statements.append(timeseries_statement(contract))
    statements.append(f"GRANT SELECT ON {table} TO analytics_ro")
    statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO analytics_rw")
    return statements
