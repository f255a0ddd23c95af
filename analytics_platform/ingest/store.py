"""Database side of ingest: bulk writes of landing, raw and reject rows, checkpoints, and the
partition replace used when a raw partition is re-derived.

Writes are COPY, never per-row Python. The drain's landing and raw rows go in PostgreSQL's binary
COPY format, assembled column-wise by NumPy and Arrow (`encode_rows`): the server then parses no
text (timestamps, floats) and a landing row costs it about a third less than in CSV. Anything the
binary encoder does not know (arrays, dates, a dtype that is not exactly the column's type) goes as
CSV produced by Polars (Rust), the format of every other writer (`copy_rows`). Upserts try a plain COPY
inside a savepoint first, because in the live stream conflicts are rare (replays, edge re-sends);
only when the COPY hits a unique violation does the batch go through a staging table and
`INSERT ... ON CONFLICT`. The conflict rule for raw rows is "the lowest Kafka coordinate wins", so
the stored row for a key never depends on the order in which batches were processed: live ingest,
a replay and a re-derivation from landing all converge on the same row.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.types.json import Jsonb

from analytics_platform.contracts.base import MESSAGE_SCHEMA, Contract, ParsedBatch
from analytics_platform.contracts.storage import column_definitions

LANDING_COLUMNS = (
    "topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_ts",
    "kafka_key",
    "value_text",
    "value_bytes",
    "event_time",
)
REJECT_COLUMNS = (
    "topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_ts",
    "kafka_key",
    "event_time",
    "reason",
    "detail",
    "value_text",
    "value_bytes",
)
COORDINATES = ("topic", "kafka_partition", "kafka_offset", "kafka_ts")
# analytics.kafka_landing's column types (sql/01): what the binary COPY of landing rows must match
LANDING_TYPES = {
    "topic": "text",
    "kafka_partition": "integer",
    "kafka_offset": "bigint",
    "kafka_ts": "timestamptz",
    "kafka_key": "bytea",
    "value_text": "text",
    "value_bytes": "bytea",
    "event_time": "timestamptz",
}


def _table(name: str) -> sql.Composed:
    return sql.SQL("analytics.{}").format(sql.Identifier(name))


def _csv(frame: pl.DataFrame) -> bytes:
    """CSV as PostgreSQL's COPY reads it (nulls unquoted-empty, arrays as `{a,b}`, bytea as hex)."""
    conversions = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.List):
            conversions.append(pl.format("{{{}}}", pl.col(name).cast(pl.List(pl.String)).list.join(",")).alias(name))
        elif dtype == pl.Binary:
            conversions.append((pl.lit("\\x") + pl.col(name).bin.encode("hex")).alias(name))
    if conversions:
        frame = frame.with_columns(conversions)
    return frame.write_csv(include_header=False).encode()


# ----- binary COPY ----------------------------------------------------------------------------
# https://www.postgresql.org/docs/current/sql-copy.html, "Binary Format": a signature, flags and an
# empty header extension; per row a 16-bit field count, then per field a 32-bit length (-1: NULL)
# and the type's binary (`*_send`) form; a 16-bit -1 ends the data.
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_BINARY_TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, where PostgreSQL counts timestamps from, in Unix µs
# SQL type -> (Polars dtype class the column must have, NumPy big-endian code of a fixed-width value)
_BINARY_TYPES: dict[str, tuple[type[pl.DataType], str | None]] = {
    "text": (pl.String, None),
    "jsonb": (pl.String, None),
    "bytea": (pl.Binary, None),
    "timestamptz": (pl.Datetime, ">i8"),
    "double precision": (pl.Float64, ">f8"),
    "real": (pl.Float32, ">f4"),
    "bigint": (pl.Int64, ">i8"),
    "integer": (pl.Int32, ">i4"),
    "smallint": (pl.Int16, ">i2"),
    "boolean": (pl.Boolean, "u1"),
}
_EMPTY = pa.scalar(b"", pa.large_binary())
_JSONB_VERSION = pa.scalar(b"\x01", pa.large_binary())


@dataclass(frozen=True)
class CopyRows:
    """Rows of one table encoded for COPY: built before the transaction that writes them (the
    drain encodes a batch while the previous one is being written), sent as they are."""

    columns: tuple[str, ...]
    format: str  # "binary" or "csv"
    data: bytes
    rows: int


def encode_rows(frame: pl.DataFrame, columns: Sequence[str], types: Mapping[str, str] | None = None) -> CopyRows:
    """`frame[columns]` for COPY: binary when `types` (column -> SQL type of the table) is given and
    every column's dtype is exactly its SQL type's; CSV otherwise.

    Binary COPY has no text to interpret, so a dtype that is not the column's type would be
    misread rather than converted: only exact matches go binary.
    """
    frame = frame.select(columns)
    data = _binary(frame, types) if types is not None and not frame.is_empty() else None
    if data is not None:
        return CopyRows(tuple(columns), "binary", data, frame.height)
    return CopyRows(tuple(columns), "csv", _csv(frame) if not frame.is_empty() else b"", frame.height)


def _fixed_width(values: np.ndarray, code: str, nulls: np.ndarray | None = None) -> pa.Array:
    """Each value's big-endian bytes as a binary array; NULL where `nulls` is true."""
    width = np.dtype(code).itemsize
    raw = pa.py_buffer(values.astype(code, copy=False).tobytes())
    valid = None if nulls is None else pa.py_buffer(np.packbits(~nulls, bitorder="little").tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [valid, raw]).cast(pa.large_binary())


def _binary_field(series: pl.Series, sql_type: str) -> list[pa.Array] | None:
    """One column as two Arrow arrays: each row's 32-bit length, and its bytes ("" when NULL)."""
    expected, code = _BINARY_TYPES.get(sql_type, (None, None))
    dtype = series.dtype
    if expected is None or not isinstance(dtype, expected):
        return None
    nulls = series.is_null().to_numpy()
    if code is not None:
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is None:
                return None  # a naive time means the session's zone in text: let CSV keep that meaning
            values = series.dt.cast_time_unit("us").to_physical().fill_null(0).to_numpy() - _PG_EPOCH_US
        else:
            values = series.fill_null(0).to_numpy()
        data = _fixed_width(values, code, nulls if nulls.any() else None)
        lengths = np.where(nulls, -1, np.dtype(code).itemsize)
    else:
        data = series.to_arrow().cast(pa.large_binary())
        if isinstance(data, pa.ChunkedArray):
            data = data.combine_chunks()
        lengths = pc.binary_length(data).fill_null(-1).to_numpy(zero_copy_only=False)
        if sql_type == "jsonb":  # jsonb's binary form is a version byte, then the text
            data = pc.binary_join_element_wise(_JSONB_VERSION, data, _EMPTY)
            lengths = np.where(nulls, -1, lengths + 1)
    if nulls.any():
        data = data.fill_null(_EMPTY)
    return [_fixed_width(lengths, ">i4"), data]


def _binary(frame: pl.DataFrame, types: Mapping[str, str]) -> bytes | None:
    parts = [_fixed_width(np.full(frame.height, frame.width), ">i2")]
    for name in frame.columns:
        field = _binary_field(frame.get_column(name), types.get(name, ""))
        if field is None:
            return None
        parts += field
    rows = pc.binary_join_element_wise(*parts, _EMPTY)
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64, count=len(rows) + 1, offset=rows.offset * 8)
    body = memoryview(rows.buffers()[2])[offsets[0] : offsets[-1]]
    return b"".join((_BINARY_HEADER, body, _BINARY_TRAILER))


@functools.cache
def raw_types(contract: Contract) -> dict[str, str]:
    """Column -> SQL type of a contract's raw table, as the migrations create it (storage.py)."""
    return {name: definition.split(" NOT NULL")[0] for name, definition in column_definitions(contract)}


def _copy(cur: psycopg.Cursor, target: sql.Composable, rows: CopyRows) -> None:
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
        target, sql.SQL(", ").join(map(sql.Identifier, rows.columns)), sql.SQL(rows.format)
    )
    with cur.copy(statement) as copy:
        copy.write(rows.data)


def copy_rows(cur: psycopg.Cursor, table: str | sql.Composable, frame: pl.DataFrame, columns: Sequence[str]) -> None:
    """COPY `frame[columns]` into analytics.<table> (or into `table` as given, e.g. a temp table)."""
    if frame.is_empty():
        return
    _copy(cur, _table(table) if isinstance(table, str) else table, encode_rows(frame, columns))


def upsert_rows(cur: psycopg.Cursor, table: str, rows: CopyRows, conflict: sql.Composable) -> None:
    """Insert encoded rows, resolving key conflicts with `conflict` (an `ON CONFLICT ...` clause).

    Fast path: plain COPY in a savepoint. On a unique violation, roll back to the savepoint and
    go through a temporary staging table with INSERT ... ON CONFLICT.
    """
    if not rows.rows:
        return
    try:
        with cur.connection.transaction():
            _copy(cur, _table(table), rows)
        return
    except psycopg.errors.UniqueViolation:
        pass
    stage = sql.Identifier(f"stage_{table}")
    cur.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS").format(
            stage, _table(table)
        )
    )
    cur.execute(sql.SQL("TRUNCATE {}").format(stage))
    _copy(cur, stage, rows)
    column_list = sql.SQL(", ").join(map(sql.Identifier, rows.columns))
    cur.execute(
        sql.SQL("INSERT INTO {} AS t ({}) SELECT {} FROM {} {}").format(
            _table(table), column_list, column_list, stage, conflict
        )
    )


def landing_frame(messages: pl.DataFrame, parsed: ParsedBatch) -> pl.DataFrame:
    """Landing rows from a message frame: text when the value is clean UTF-8, bytes otherwise.

    Accepted messages were decoded as JSON, so they are valid UTF-8 without NUL bytes and are cast
    in bulk; only rejected ones (few) are inspected one by one.
    """
    indexed = messages.with_columns(parsed.event_time.alias("event_time")).with_row_index("_i")
    good = indexed.filter(parsed.accepted).with_columns(
        pl.col("value").cast(pl.String).alias("value_text"), pl.lit(None, pl.Binary).alias("value_bytes")
    )
    bad = indexed.filter(~parsed.accepted)
    if not bad.is_empty():
        texts = [_as_text(v) for v in bad.get_column("value").to_list()]
        bad = bad.with_columns(pl.Series("value_text", texts, dtype=pl.String)).with_columns(
            pl.when(pl.col("value_text").is_null()).then(pl.col("value")).alias("value_bytes")
        )
        good = pl.concat([good, bad]).sort("_i")
    return good.drop("_i", "value")


def _as_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def reject_frame(rejects: pl.DataFrame) -> pl.DataFrame:
    texts = [_as_text(v) for v in rejects.get_column("value").to_list()]
    return rejects.with_columns(
        pl.Series("value_text", texts, dtype=pl.String),
        pl.when(pl.Series(texts, dtype=pl.String).is_null()).then(pl.col("value")).alias("value_bytes"),
    ).drop("value")


_COORD_CONFLICT = sql.SQL("ON CONFLICT (topic, kafka_partition, kafka_offset, kafka_ts) DO NOTHING")

# Which raw rows are committed, told by `ingested_at` alone: the live judges and the aggregates'
# finaliser read "the rows ingested since a position". A row's `ingested_at` is the start of the
# statement that wrote it (the column's default, contracts/storage.py), and every writer of raw rows
# takes its transaction id before that statement (`claim_xid`). So a transaction that may still
# commit a row stamped before a moment T held an id at T, and the start of the oldest transaction
# holding an id, read in a transaction begun at or before T's look, bounds every uncommitted stamp:
# each row ingested before least(now(), OLDEST_WRITER) is committed. A reader (no id) holds nothing
# back. (With the transaction's start as the stamp, a writer between BEGIN and its first row had no
# id yet and its rows could land behind a reader's position, never to be read.) pg_stat_activity
# shows a transaction's start only to its role and to pg_read_all_stats, which sql/26 grants the
# pipeline's role.
OLDEST_WRITER = """(SELECT min(xact_start) FROM pg_stat_activity
    WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid())"""


def claim_xid(cur: psycopg.Cursor) -> None:
    """Take this transaction's id now, before a statement stamps raw rows (see `OLDEST_WRITER`)."""
    cur.execute("SELECT pg_current_xact_id()")


def raw_conflict(contract: Contract) -> sql.Composed:
    """ON CONFLICT for a raw table: replace the row only if the new one has a lower coordinate.

    The replaced row takes the new `ingested_at`: it may carry another value, and the
    readers of the rows ingested since a position (the live judges, the aggregates' finaliser) must
    see it as new."""
    updates = [*(c for c in contract.raw_columns if c not in ("time", "dedup_key")), "ingested_at"]
    return sql.SQL(
        "ON CONFLICT (time, dedup_key) DO UPDATE SET {} "
        "WHERE (excluded.kafka_partition, excluded.kafka_offset, excluded.topic) "
        "< (t.kafka_partition, t.kafka_offset, t.topic)"
    ).format(sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in updates))


def encode_landing(landing: pl.DataFrame) -> CopyRows:
    return encode_rows(landing, LANDING_COLUMNS, LANDING_TYPES)


def encode_raw(contract: Contract, rows: pl.DataFrame) -> CopyRows:
    return encode_rows(rows, contract.raw_columns, raw_types(contract))


def write_landing(cur: psycopg.Cursor, landing: CopyRows) -> None:
    """Landing rows (`encode_landing`); a coordinate landed before is left as it is."""
    upsert_rows(cur, "kafka_landing", landing, _COORD_CONFLICT)


def write_rejects(cur: psycopg.Cursor, rejects: pl.DataFrame) -> None:
    upsert_rows(cur, "rejected_message", encode_rows(reject_frame(rejects), REJECT_COLUMNS), _COORD_CONFLICT)


def write_raw(cur: psycopg.Cursor, contract: Contract, rows: CopyRows) -> None:
    """Raw rows (`encode_raw`); of two rows with one key the lower Kafka coordinate stays."""
    claim_xid(cur)
    upsert_rows(cur, contract.raw_table, rows, raw_conflict(contract))


# ----- checkpoints ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """Where a drain goes on in one partition, and which log that position belongs to: the topic id
    the broker reported and the fingerprint of the last message consumed (offset next_offset - 1)."""

    topic: str
    partition: int
    next_offset: int
    topic_id: str | None = None
    last_kafka_ts: datetime | None = None
    last_digest: bytes | None = None


@dataclass(frozen=True)
class Checkpoint:
    next_offset: int
    topic_id: str | None
    last_kafka_ts: datetime | None
    last_digest: bytes | None
    log_epoch: int


def message_digest(key: bytes | None, value: bytes | None) -> bytes:
    """A fingerprint of one Kafka message's key and value. Re-reading the same log gives the same one
    at the same offset; a message of another log there (a broker replaced, a topic re-created) has
    another one unless it is the very same message, in which case resuming after it is right anyway.
    The Kafka timestamp is left out: a broker without one gets the time of landing instead."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (key, value):
        digest.update(b"\x01" if part is None else b"\x00" + len(part).to_bytes(8, "big") + part)
    return digest.digest()


def load_checkpoints(
    conn: psycopg.Connection, consumer: str, topics: Iterable[str]
) -> dict[tuple[str, int], Checkpoint]:
    """Stored positions of `consumer` for `topics`: {(topic, partition): Checkpoint}."""
    rows = conn.execute(
        "SELECT topic, kafka_partition, next_offset, topic_id, last_kafka_ts, last_digest, log_epoch "
        "FROM analytics.worker_checkpoints WHERE consumer = %s AND topic = ANY(%s)",
        (consumer, list(topics)),
    ).fetchall()
    return {(topic, partition): Checkpoint(*rest) for topic, partition, *rest in rows}


def landed_message(conn: psycopg.Connection, topic: str, partition: int, offset: int) -> tuple | None:
    """(kafka_ts, key, value) of the newest landed message at a coordinate: the fingerprint source
    of checkpoints written before fingerprints were stored."""
    return conn.execute(
        "SELECT kafka_ts, kafka_key, coalesce(convert_to(value_text, 'UTF8'), value_bytes) "
        "FROM analytics.kafka_landing WHERE topic = %s AND kafka_partition = %s AND kafka_offset = %s "
        "ORDER BY landed_at DESC, kafka_ts DESC LIMIT 1",
        (topic, partition, offset),
    ).fetchone()


def write_checkpoints(cur: psycopg.Cursor, consumer: str, positions: Iterable[Position]) -> None:
    """Store next offsets with their log; called inside the transaction that wrote the rows they
    carried."""
    cur.executemany(
        """INSERT INTO analytics.worker_checkpoints
               (consumer, topic, kafka_partition, next_offset, topic_id, last_kafka_ts, last_digest)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (consumer, topic, kafka_partition)
           DO UPDATE SET next_offset = excluded.next_offset, updated_at = now(),
               topic_id = coalesce(excluded.topic_id, worker_checkpoints.topic_id),
               last_kafka_ts = excluded.last_kafka_ts, last_digest = excluded.last_digest""",
        [
            (consumer, p.topic, p.partition, p.next_offset, p.topic_id, p.last_kafka_ts, p.last_digest)
            for p in positions
        ],
    )


@dataclass(frozen=True)
class OffsetReset:
    """The drain found that a stored position belongs to another log than the broker's now."""

    topic: str
    partition: int
    reason: str  # see analytics.ingest_resets.reason
    detail: str
    stored_offset: int
    resumed_at: int
    skipped: int = 0
    old_topic_id: str | None = None
    new_topic_id: str | None = None

    def describe(self) -> str:
        return f"{self.topic}[{self.partition}] {self.reason}: {self.detail}"


def write_drain_report(cur: psycopg.Cursor, consumer: str, shard: int, report: dict) -> None:
    """One drain-service report row (sql/15); called inside the batch's transaction, so the report
    exists exactly when the batch's rows and offsets do."""
    cur.execute(
        "INSERT INTO analytics.drain_reports (consumer, domain, shard, report) VALUES (%s, %s, %s, %s)",
        (consumer, report["domain"], shard, Jsonb(report)),
    )


def take_drain_reports(
    conn: psycopg.Connection, consumer: str, domain: str, shard: int, reported: Sequence[int], limit: int = 2000
) -> list[tuple[int, datetime, dict]]:
    """The drain-service reports of one domain and shard not reported yet, oldest first, after
    deleting those a recorded sensor tick reported (`reported`: the ids in its cursor).

    Acknowledged by id, not by a high-water mark: ids come from a sequence, and two shards'
    transactions can commit out of id order, so a mark could pass a row that was not visible yet.
    """
    if reported:
        conn.execute("DELETE FROM analytics.drain_reports WHERE id = ANY(%s)", (list(reported),))
    return conn.execute(
        "SELECT id, committed_at, report FROM analytics.drain_reports WHERE consumer = %s AND domain = %s "
        "AND shard = %s ORDER BY id LIMIT %s",
        (consumer, domain, shard, limit),
    ).fetchall()


def record_reset(conn: psycopg.Connection, consumer: str, reset: OffsetReset) -> None:
    """Record a reset and move the checkpoint to the new log's start, in one transaction: a pass that
    dies right after still starts the next one on the new log, and never detects the reset twice."""
    with conn.transaction():
        conn.execute(
            """INSERT INTO analytics.ingest_resets (consumer, topic, kafka_partition, reason, detail, stored_offset,
                   resumed_at, skipped, old_topic_id, new_topic_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                consumer,
                reset.topic,
                reset.partition,
                reset.reason,
                reset.detail,
                reset.stored_offset,
                reset.resumed_at,
                reset.skipped,
                reset.old_topic_id,
                reset.new_topic_id,
            ),
        )
        conn.execute(
            """INSERT INTO analytics.worker_checkpoints (consumer, topic, kafka_partition, next_offset, topic_id)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (consumer, topic, kafka_partition) DO UPDATE SET next_offset = excluded.next_offset,
                   topic_id = coalesce(excluded.topic_id, worker_checkpoints.topic_id), last_kafka_ts = NULL,
                   last_digest = NULL, log_epoch = worker_checkpoints.log_epoch + 1, updated_at = now()""",
            (consumer, reset.topic, reset.partition, reset.resumed_at, reset.new_topic_id),
        )


def reset_checkpoints(conn: psycopg.Connection, consumer: str, topic: str, offset: int) -> int:
    """Point every stored partition of `topic` at `offset` (forced replay); returns rows changed."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE analytics.worker_checkpoints SET next_offset = %s, updated_at = now() "
            "WHERE consumer = %s AND topic = %s",
            (offset, consumer, topic),
        )
        return cur.rowcount


# ----- re-derivation --------------------------------------------------------------------------


def read_landing(conn: psycopg.Connection, topics: Sequence[str], start: datetime, end: datetime) -> pl.DataFrame:
    """Landed messages of `topics` whose reading time falls in [start, end), in Kafka order; one
    coordinate in two logs of a topic (before and after a broker was replaced) in the order they
    landed, which is the live drain's order (the contracts keep the first of two such copies)."""
    cur = conn.execute(
        """SELECT topic, kafka_partition, kafka_offset, kafka_key, kafka_ts,
                  coalesce(convert_to(value_text, 'UTF8'), value_bytes) AS value
           FROM analytics.kafka_landing
           WHERE topic = ANY(%s) AND event_time >= %s AND event_time < %s
           ORDER BY topic, kafka_partition, kafka_offset, landed_at, kafka_ts""",
        (list(topics), start, end),
    )
    return pl.DataFrame(cur.fetchall(), schema=MESSAGE_SCHEMA, orient="row")


def replace_window(
    conn: psycopg.Connection,
    contract: Contract,
    topics: Sequence[str],
    start: datetime,
    end: datetime,
    rows: pl.DataFrame,
    rejects: pl.DataFrame,
) -> int:
    """Atomically replace the raw rows and the rejects of [start, end) with `rows` and `rejects`;
    returns raw rows deleted.

    The rejects of the window are replaced too: a message the current catalogue and contracts now
    accept (a metric added, a mapping for an old schema version) leaves the rejects table as it
    enters the raw table, so it is never counted as both. Rejects without a readable time belong
    to no window and stay.
    """
    with conn.transaction(), conn.cursor() as cur:
        claim_xid(cur)
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE time >= %s AND time < %s").format(_table(contract.raw_table)),
            (start, end),
        )
        deleted = cur.rowcount
        cur.execute(
            "DELETE FROM analytics.rejected_message WHERE topic = ANY(%s) AND event_time >= %s AND event_time < %s",
            (list(topics), start, end),
        )
        window_rows = rows.filter((pl.col("time") >= start) & (pl.col("time") < end))
        copy_rows(cur, contract.raw_table, window_rows, contract.raw_columns)
        write_rejects(cur, rejects)
    return deleted
