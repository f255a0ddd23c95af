"""The drain writes landing and raw rows in PostgreSQL's binary COPY format (store.encode_rows); every
other writer, and anything the encoder does not know, uses CSV. Binary has no text to interpret, so
these tests pin that both formats store exactly the same rows, for the awkward values too (NULLs,
non-ASCII and escaped text, bytes with NUL, extreme floats, times before 2000 and with microseconds),
and that a frame the encoder cannot match exactly falls back to CSV instead of being misread."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from psycopg import sql

from analytics_platform.contracts.base import MESSAGE_SCHEMA
from analytics_platform.contracts.registry import registry
from analytics_platform.contracts.sensor import CONTRACT as SENSOR
from analytics_platform.contracts.sweep import CONTRACT as SWEEP
from analytics_platform.ingest import store
from analytics_platform_tests.support.stack import DatabaseHandle

UTC_US = pl.Datetime("us", "UTC")


def _stored(database: DatabaseHandle, table: str, rows: store.CopyRows) -> list[tuple]:
    """COPY `rows` into an empty copy of analytics.<table>; the stored rows, as text, in key order."""
    copy = sql.Identifier(f"copy_{rows.format}_{table}")
    columns = sql.SQL(", ").join(map(sql.Identifier, rows.columns))
    with database.connect() as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(copy, store._table(table)))
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(copy, columns, sql.SQL(rows.format))) as c:
            c.write(rows.data)
        text = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in rows.columns)
        return cur.execute(sql.SQL("SELECT {} FROM {} ORDER BY 1, 2, 3").format(text, copy)).fetchall()


def _csv(frame: pl.DataFrame, columns: tuple[str, ...] | list[str]) -> store.CopyRows:
    return store.encode_rows(frame, columns)


def test_landing_rows_are_the_same_in_binary_and_csv(database: DatabaseHandle) -> None:
    landing = pl.DataFrame(
        {
            "topic": ["sensors.device.readings", "t", "ü-topic"],
            "kafka_partition": [0, 2_147_483_647, 3],
            "kafka_offset": [0, 9_223_372_036_854_775_807, 12],
            "kafka_ts": [
                datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
                datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                datetime(1970, 1, 1, tzinfo=UTC),
            ],
            "kafka_key": [b"t1-f1-m1", None, b'\x00\xff,"\n'],
            "value_text": ['{"a":"é \\u0041 \\"q\\",\n"}', None, None],
            "value_bytes": [None, b"\x00\x01\xff", None],
            "event_time": [datetime(2026, 1, 2, 3, 0, tzinfo=UTC), None, None],
        },
        schema={name: MESSAGE_SCHEMA.get(name, UTC_US) for name in store.LANDING_COLUMNS}
        | {"value_text": pl.String(), "value_bytes": pl.Binary(), "event_time": UTC_US},
    )
    binary = store.encode_landing(landing)
    assert binary.format == "binary"
    csv = _csv(landing, store.LANDING_COLUMNS)
    stored = _stored(database, "kafka_landing", binary)
    assert stored == _stored(database, "kafka_landing", csv)
    assert len(stored) == 3


def test_raw_sensor_rows_are_the_same_in_binary_and_csv(database: DatabaseHandle) -> None:
    time = [datetime(2026, 5, 1, 0, 0, 0, 1, tzinfo=UTC), datetime(2000, 1, 1, tzinfo=UTC)]
    rows = pl.DataFrame(
        {
            "time": time,
            "tenant_id": ["t1", "tenant ü"],
            "factory_id": ["f1", "f,2"],
            "machine_id": ["m1", 'm"3'],
            "sensor_id": ["s1", "s\\2"],
            "metric": ["temp", "pressure"],
            "value": [1.7976931348623157e308, -5e-324],
            "unit": ["degC", None],
            "payload": ['{"source": "sim", "n": [1, 2.5, null]}', None],
            "uncatalogued": [False, True],
            "event_id": ["e-1", None],
            "schema_version": [1, 2],
            "dedup_key": ["2:t12:f1", "k\x1fé"],
            "topic": ["sensors.device.readings", "sensors.device.readings"],
            "kafka_partition": [0, 5],
            "kafka_offset": [7, 8],
        },
        schema={**SENSOR.row_schema, **SENSOR.derived_schema}
        | {"event_id": pl.String(), "schema_version": pl.Int16(), "dedup_key": pl.String()}
        | {name: MESSAGE_SCHEMA[name] for name in ("topic", "kafka_partition", "kafka_offset")},
    )
    binary = store.encode_raw(SENSOR, rows)
    assert binary.format == "binary"
    stored = _stored(database, SENSOR.raw_table, binary)
    assert stored == _stored(database, SENSOR.raw_table, _csv(rows, SENSOR.raw_columns))
    assert stored[1][6] == "1.7976931348623157e+308"  # rows in time order: 2000 first


@pytest.mark.parametrize("contract", list(registry().contracts.values()), ids=lambda c: c.domain)
def test_each_raw_table_has_a_binary_type_for_its_columns_or_falls_back_to_csv(contract) -> None:
    """Every column type of every raw table is either encoded in binary or sends the batch as CSV:
    the sweep's float array is the one type without a binary encoder."""
    types = store.raw_types(contract)
    unsupported = {name for name, kind in types.items() if kind not in store._BINARY_TYPES}
    assert unsupported == ({"reading_values"} if contract is SWEEP else set())


def test_a_frame_whose_dtype_is_not_the_column_type_goes_as_csv() -> None:
    """A naive datetime (meaning the session's zone in CSV), an Int64 for an integer column or an
    array column is not sent in binary, where it would be misread."""
    naive = pl.DataFrame({"time": [datetime(2026, 1, 1)]})
    assert store.encode_rows(naive, ["time"], {"time": "timestamptz"}).format == "csv"
    wide = pl.DataFrame({"kafka_partition": [1]}, schema={"kafka_partition": pl.Int64()})
    assert store.encode_rows(wide, ["kafka_partition"], {"kafka_partition": "integer"}).format == "csv"
    values = pl.DataFrame({"reading_values": [[1.0, 2.0]]})
    assert store.encode_rows(values, ["reading_values"], {"reading_values": "double precision[]"}).format == "csv"
    assert store.encode_rows(values.clear(), ["reading_values"], {"reading_values": "double precision[]"}).rows == 0
