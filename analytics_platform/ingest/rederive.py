"""Re-derive raw partitions from landing: the same contract code over the same messages.

This is what re-materialising a raw asset partition runs. Each hour is replaced in its own
transaction (delete the hour, copy the re-derived rows), so a partition is never half-written and
never doubled, and a range backfill can stop anywhere without leaving a mixed hour behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from analytics_platform.contracts.base import ContractConfig
from analytics_platform.contracts.registry import DomainBinding, bind_domains, contract_config
from analytics_platform.data_quality.raw_profile import PartitionQuality, profile
from analytics_platform.ingest import store
from analytics_platform.ingest.catalog import read_catalog
from analytics_platform.settings import PlatformSettings

HOUR = timedelta(hours=1)


class RederiveError(RuntimeError):
    """A partition cannot be re-derived safely; the message says why and what to check."""


@dataclass
class HourResult:
    start: datetime
    messages: int
    rows: int
    deleted: int
    quality: PartitionQuality


# tries of an hour's re-derivation that a concurrent drain batch made fail to serialize
REDERIVE_ATTEMPTS = 5


def hours(start: datetime, end: datetime) -> Iterator[datetime]:
    """The hour starts in [start, end)."""
    current = start
    while current < end:
        yield current
        current += HOUR


def rederive_hour(
    conn: psycopg.Connection, binding: DomainBinding, config: ContractConfig, start: datetime
) -> HourResult:
    """Replace raw rows of one hour with what the contract derives from landing.

    The landing read and the replace are one REPEATABLE READ transaction: the replace deletes only the raw
    rows and rejects of the messages it read, so a batch the drain commits into the hour meanwhile (an
    operator re-admitting the current hour's rejects while readings keep coming) stays. Read apart, the
    replace deleted that batch's rows and wrote back only what it had read: they were left in landing
    alone. A drain batch that touches a row the replace deletes fails the replace (could not serialize):
    it is tried again, on a new snapshot."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:  # a caller's transaction: its own
        return _rederive_hour(conn, binding, config, start)
    for attempt in range(1, REDERIVE_ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return _rederive_hour(conn, binding, config, start)
        except psycopg.errors.SerializationFailure:
            if attempt == REDERIVE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _rederive_hour(
    conn: psycopg.Connection, binding: DomainBinding, config: ContractConfig, start: datetime
) -> HourResult:
    start = start.astimezone(UTC)  # whatever zone the connection's TimeZone gave it (Etc/UTC, ...)
    end = start + HOUR
    contract = binding.contract
    messages = store.read_landing(conn, binding.topics, start, end)
    if messages.is_empty():
        held = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE time >= %s AND time < %s").format(
                sql.Identifier("analytics", contract.raw_table)
            ),
            (start, end),
        ).fetchone()[0]
        if held:
            # landing is the source of truth; an hour it knows nothing of is never emptied on its word
            raise RederiveError(
                f"{contract.raw_table} holds {held} rows in {start:%Y-%m-%d %H}:00 but kafka_landing has no message "
                f"of {', '.join(binding.topics)} there (topics renamed, e.g. KAFKA_TOPIC_PREFIX changed, or landing "
                "past its retention): refusing to replace the hour"
            )
    parsed = contract.parse(messages, config)
    deleted = store.replace_window(conn, contract, binding.topics, start, end, parsed.rows, parsed.rejects)
    quality = PartitionQuality(duplicates=parsed.duplicates_in_batch)
    for row in profile(parsed.rows, contract.natural_key, contract.finite_columns, window=(start, end)).iter_rows(
        named=True
    ):
        quality.add_profile(row)
    rejects = parsed.rejects
    if not rejects.is_empty():
        reasons = dict(rejects.group_by("reason").len().iter_rows())
        quality.add_rejects(reasons, rejects.get_column("event_time").min(), rejects.get_column("event_time").max())
    return HourResult(start, messages.height, parsed.rows.height, deleted, quality)


def rederive_range(
    conn: psycopg.Connection, binding: DomainBinding, config: ContractConfig, start: datetime, end: datetime
) -> list[HourResult]:
    """Re-derive every hour of [start, end), one transaction per hour."""
    return [rederive_hour(conn, binding, config, hour) for hour in hours(start, end)]


def merged_quality(results: list[HourResult]) -> PartitionQuality:
    """The quality counts of several hours added together (for a range run's check results)."""
    total = PartitionQuality()
    for result in results:
        total.merge(result.quality)
    return total


# ----- the re-derivation queue (analytics.raw_rederivations) ----------------------------------


@dataclass(frozen=True)
class PendingResult:
    raw_table: str
    hour: datetime
    reason: str
    rows_before: int
    rows_after: int


def request_rederive(conn: psycopg.Connection, raw_table: str, hours: list[datetime], reason: str) -> int:
    """Queue raw hours to be re-derived from landing (see `rederive_pending`); returns hours queued."""
    if not hours:
        return 0
    with conn.transaction():
        cur = conn.execute(
            "INSERT INTO analytics.raw_rederivations (raw_table, hour, reason) "
            "SELECT %s, h, %s FROM unnest(%s::timestamptz[]) AS h ON CONFLICT DO NOTHING",
            (raw_table, reason, sorted(set(hours))),
        )
        return cur.rowcount


def rederive_pending(
    conn: psycopg.Connection,
    bindings: list[DomainBinding],
    config: ContractConfig,
    *,
    echo: Callable[[str], None] | None = None,
) -> list[PendingResult]:
    """Re-derive every queued hour of an enabled domain, oldest first, one transaction per hour,
    and mark each done with its row counts before and after (what a collision or a reject had
    kept out shows as rows_after > rows_before). The `raw_rederivations` sensor then tells Dagster,
    so downstream assets recompute those hours."""
    by_table = {b.contract.raw_table: b for b in bindings}
    pending = conn.execute(
        "SELECT raw_table, hour, string_agg(DISTINCT reason, '; ') FROM analytics.raw_rederivations "
        "WHERE done_at IS NULL AND raw_table = ANY(%s) GROUP BY raw_table, hour ORDER BY hour, raw_table",
        (list(by_table),),
    ).fetchall()
    done: list[PendingResult] = []
    for raw_table, hour, reason in pending:
        binding = by_table[raw_table]
        before = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE time >= %s AND time < %s").format(
                sql.Identifier("analytics", raw_table)
            ),
            (hour, hour + HOUR),
        ).fetchone()[0]
        result = rederive_hour(conn, binding, config, hour)
        conn.execute(
            "UPDATE analytics.raw_rederivations SET done_at = now(), rows_before = %s, rows_after = %s "
            "WHERE raw_table = %s AND hour = %s AND done_at IS NULL",
            (before, result.rows, raw_table, hour),
        )
        done.append(PendingResult(raw_table, hour, reason, before, result.rows))
        if echo is not None:
            echo(f"re-derived {raw_table} {hour:%Y-%m-%d %H}:00 ({reason}): {before} -> {result.rows} rows")
    return done


def rederive_queued(
    conn: psycopg.Connection, settings: PlatformSettings, *, echo: Callable[[str], None] | None = None
) -> list[PendingResult]:
    """`rederive_pending` for the enabled domains and the database's catalogue: what
    `analytics-platform migrate` (and the devstack) run after the SQL migrations."""
    config = contract_config(settings, read_catalog(conn))
    return rederive_pending(conn, bind_domains(settings), config, echo=echo)
