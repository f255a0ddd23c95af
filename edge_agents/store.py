"""The durable store-and-forward queue: SQLite in WAL mode, one file, one writer.

Every accepted message is written here *before* it is handed to Kafka and deleted only after the
broker acknowledged it, so a `kill -9` of the agent at any moment loses nothing that was accepted:
on restart the queue is sent again from its oldest entry, in order. Sequence numbers come from
AUTOINCREMENT, so they only ever grow and sending in sequence order keeps each key's order.

Only the agent's engine thread touches the connection (SQLite objects are not shared across
threads), which is also why no locking is needed here.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    traceparent TEXT
);
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    source TEXT NOT NULL,
    domain TEXT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB
);
"""


@dataclass(slots=True)
class Entry:
    seq: int
    topic: str
    key: bytes
    value: bytes
    size: int
    enqueued_at: float
    # the W3C trace context the message carries as its `traceparent` header (tracing on), else None
    traceparent: str | None = None


def entry_size(topic: str, key: bytes, value: bytes) -> int:
    """What an entry counts against the watermark: its payload bytes."""
    return len(topic) + len(key) + len(value)


class DiskQueue:
    """Append, read in order, delete what the broker acknowledged; counts kept in memory."""

    def __init__(self, path: Path, synchronous: str = "NORMAL", keep_rejects: int = 10000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.keep_rejects = keep_rejects
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.executescript(_SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(queue)")}
        if "traceparent" not in columns:  # a queue file written by an agent before tracing
            self.db.execute("ALTER TABLE queue ADD COLUMN traceparent TEXT")
        count, size = self.db.execute("SELECT count(*), coalesce(sum(size), 0) FROM queue").fetchone()
        self.count: int = count
        self.bytes: int = size
        self._rejects_since_trim = 0

    # ----- writing --------------------------------------------------------------------------

    def append(
        self, rows: list[tuple[str, bytes, bytes, float]] | list[tuple[str, bytes, bytes, float, str | None]]
    ) -> list[Entry]:
        """Write (topic, key, value, received_at[, traceparent]) rows in one transaction; returns them
        numbered. The trace context is stored with the message, so a message sent after a restart
        still carries the trace it was received in."""
        if not rows:
            return []
        sized = [
            (row[0], row[1], row[2], entry_size(row[0], row[1], row[2]), row[3], row[4] if len(row) > 4 else None)
            for row in rows
        ]
        with self._transaction():
            self.db.executemany(
                "INSERT INTO queue (topic, key, value, size, enqueued_at, traceparent) VALUES (?, ?, ?, ?, ?, ?)",
                sized,
            )
            # one writer inside one transaction: AUTOINCREMENT numbers the batch contiguously
            last = self.db.execute("SELECT last_insert_rowid()").fetchone()[0]
        first = last - len(sized) + 1
        entries = [Entry(first + i, *row) for i, row in enumerate(sized)]
        self.count += len(entries)
        self.bytes += sum(row[3] for row in sized)
        return entries

    def delete(self, seqs: Iterable[int]) -> tuple[int, int]:
        """Remove acknowledged entries; returns (entries, bytes) removed (already-gone ones count 0)."""
        seqs = list(seqs)
        if not seqs:
            return 0, 0
        removed = removed_bytes = 0
        with self._transaction():
            for start in range(0, len(seqs), 500):
                chunk = seqs[start : start + 500]
                marks = ",".join("?" * len(chunk))
                sizes = self.db.execute(f"DELETE FROM queue WHERE seq IN ({marks}) RETURNING size", chunk).fetchall()
                removed += len(sizes)
                removed_bytes += sum(size for (size,) in sizes)
        self.count -= removed
        self.bytes -= removed_bytes
        return removed, removed_bytes

    def drop_oldest(self, need_bytes: int) -> list[int]:
        """Delete the oldest entries until `need_bytes` more fit under the caller's watermark."""
        dropped: list[int] = []
        freed = 0
        with self._transaction():
            for seq, size in self.db.execute("SELECT seq, size FROM queue ORDER BY seq"):
                if freed >= need_bytes:
                    break
                dropped.append(seq)
                freed += size
            for start in range(0, len(dropped), 500):
                chunk = dropped[start : start + 500]
                self.db.execute(f"DELETE FROM queue WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
        self.count -= len(dropped)
        self.bytes -= freed
        return dropped

    def add_rejects(self, rows: list[tuple[str, str | None, str, str, bytes | None]]) -> None:
        """Keep rejected input (source, domain, reason, detail, payload) for inspection, newest N."""
        if not rows or not self.keep_rejects:
            return
        now = time.time()
        with self._transaction():
            self.db.executemany(
                "INSERT INTO rejects (at, source, domain, reason, detail, payload) VALUES (?, ?, ?, ?, ?, ?)",
                [(now, *row) for row in rows],
            )
            self._rejects_since_trim += len(rows)
            if self._rejects_since_trim > max(100, self.keep_rejects // 10):
                self.db.execute(
                    "DELETE FROM rejects WHERE id <= (SELECT max(id) FROM rejects) - ?", (self.keep_rejects,)
                )
                self._rejects_since_trim = 0

    # ----- reading --------------------------------------------------------------------------

    def read_after(self, seq: int, limit: int) -> list[Entry]:
        """Entries with a higher sequence number, oldest first."""
        return [
            Entry(*row)
            for row in self.db.execute(
                "SELECT seq, topic, key, value, size, enqueued_at, traceparent FROM queue WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (seq, limit),
            )
        ]

    def max_seq(self) -> int:
        row = self.db.execute("SELECT max(seq) FROM queue").fetchone()
        return row[0] or 0

    def oldest_enqueued_at(self) -> float | None:
        row = self.db.execute("SELECT enqueued_at FROM queue ORDER BY seq LIMIT 1").fetchone()
        return row[0] if row else None

    def rejects(self, limit: int = 100) -> list[tuple]:
        return self.db.execute(
            "SELECT at, source, domain, reason, detail, payload FROM rejects ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()

    def close(self) -> None:
        self.db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
