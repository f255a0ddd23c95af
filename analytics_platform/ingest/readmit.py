"""Re-admit rejected messages once their cause is fixed (a metric added to the catalogue, a tenant's
policy changed, a mapping for an older schema version shipped).

A reject keeps the message's exact bytes and Kafka coordinates, and landing keeps every message,
so nothing needs to be sent again: the kept bytes are parsed with the current catalogue and
contracts, and every hour holding a message that now passes is re-derived from landing (the same
code a raw partition's re-materialisation runs). That replaces the hour's raw rows and rejects in
one transaction: what passes now is stored exactly once and leaves the rejects table, what still
fails stays there with its (possibly new) reason. The hours are then reported to Dagster by the
`raw_rederivations` sensor, so the aggregates and everything downstream recompute them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl
import psycopg

from analytics_platform.contracts.base import MESSAGE_SCHEMA, ContractConfig
from analytics_platform.contracts.registry import DomainBinding
from analytics_platform.ingest import store
from analytics_platform.ingest.rederive import PendingResult, rederive_pending, request_rederive


@dataclass
class ReadmitReport:
    matched: int = 0  # rejects the filters selected
    passing: int = 0  # of those, messages the current catalogue and contracts accept
    readmitted: int = 0  # of those, gone from the rejects table after their hours were re-derived
    still_rejected: Counter = field(default_factory=Counter)  # (topic, reason) -> count, as judged now
    hours: list[PendingResult] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"{self.matched} rejected message(s) matched; {self.passing} pass the current catalogue and contracts; "
            f"{self.readmitted} re-admitted into raw (exactly once)",
        ]
        out += [
            f"  re-derived {h.raw_table} {h.hour:%Y-%m-%d %H}:00: {h.rows_before} -> {h.rows_after} rows"
            for h in self.hours
        ]
        if self.still_rejected:
            out.append("still rejected:")
            out += [f"  {topic}  {reason}: {n}" for (topic, reason), n in sorted(self.still_rejected.items())]
        return out


_SELECT = """
SELECT topic, kafka_partition, kafka_offset, kafka_key, kafka_ts,
       coalesce(convert_to(value_text, 'UTF8'), value_bytes) AS value, event_time, reason
FROM analytics.rejected_message
WHERE topic = ANY(%(topics)s)
  AND (%(reason)s::text IS NULL OR reason = %(reason)s)
  AND (%(since)s::timestamptz IS NULL OR event_time >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR event_time < %(until)s)
ORDER BY topic, kafka_partition, kafka_offset, kafka_ts
"""


def _tenant_of(value: bytes | None) -> str | None:
    try:
        body = json.loads(value) if value is not None else None
    except (ValueError, UnicodeDecodeError, RecursionError):  # a kept reject may be nested past any decoder
        return None
    tenant = body.get("tenant_id") if isinstance(body, dict) else None
    return tenant if isinstance(tenant, str) else None


def readmit(
    conn: psycopg.Connection,
    bindings: Sequence[DomainBinding],
    config: ContractConfig,
    *,
    topics: Sequence[str] | None = None,
    reason: str | None = None,
    tenant: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] | None = None,
) -> ReadmitReport:
    """Re-judge the rejects the filters select (topic, reason, tenant of the payload, reading time
    in [since, until)); re-derive the hours of those that pass now, unless `dry_run`."""
    report = ReadmitReport()
    for binding in bindings:
        wanted = [t for t in binding.topics if topics is None or t in topics]
        if not wanted:
            continue
        rows = conn.execute(_SELECT, {"topics": wanted, "reason": reason, "since": since, "until": until}).fetchall()
        if tenant is not None:
            rows = [r for r in rows if _tenant_of(r[5]) == tenant]
        report.matched += len(rows)
        if not rows:
            continue
        frame = pl.DataFrame([r[:6] for r in rows], schema=MESSAGE_SCHEMA, orient="row")
        parsed = binding.contract.parse(frame, config)
        passing = [i for i, ok in enumerate(parsed.accepted.to_list()) if ok]
        report.passing += len(passing)
        for topic, why in parsed.rejects.select("topic", "reason").iter_rows():
            report.still_rejected[(topic, why)] += 1
        if not passing or dry_run:
            continue
        _ensure_landed(conn, [rows[i] for i in passing], parsed.event_time.gather(passing).to_list())
        hours = sorted({t.replace(minute=0, second=0, microsecond=0) for t in parsed.event_time.gather(passing)})
        request_rederive(conn, binding.contract.raw_table, hours, "readmit of rejected messages")
        keys = [(rows[i][0], rows[i][1], rows[i][2], rows[i][4]) for i in passing]
        report.hours += rederive_pending(conn, [binding], config, echo=echo)
        left = conn.execute(
            "SELECT count(*) FROM analytics.rejected_message r "
            "JOIN unnest(%s::text[], %s::int[], %s::bigint[], %s::timestamptz[]) AS k(topic, p, o, ts) "
            "ON r.topic = k.topic AND r.kafka_partition = k.p AND r.kafka_offset = k.o AND r.kafka_ts = k.ts",
            tuple(list(column) for column in zip(*keys, strict=True)),
        ).fetchone()[0]
        report.readmitted += len(passing) - left
    return report


def _ensure_landed(conn: psycopg.Connection, rows: list[tuple], event_times: list[datetime]) -> None:
    """Landing is what a re-derivation reads: a reject whose landing row is gone (landing older
    than its retention, a database restored without it) is landed again from its kept bytes first,
    so re-deriving its hour can never drop it."""
    frame = pl.DataFrame([r[:6] for r in rows], schema=MESSAGE_SCHEMA, orient="row").with_columns(
        pl.Series("event_time", event_times, dtype=pl.Datetime("us", "UTC"))
    )
    landing = frame.with_columns(
        pl.col("value").cast(pl.String).alias("value_text"), pl.lit(None, pl.Binary).alias("value_bytes")
    ).drop("value")
    with conn.transaction(), conn.cursor() as cur:
        store.write_landing(cur, store.encode_landing(landing))
