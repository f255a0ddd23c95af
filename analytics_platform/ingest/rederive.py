"""Re-derive raw partitions from landing: the same contract code over the same messages.

This is what re-materialising a raw asset partition runs. Each hour is replaced in its own
transaction (delete the hour, copy the re-derived rows), so a partition is never half-written and
never doubled, and a range backfill can stop anywhere without leaving a mixed hour behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from analytics_platform.contracts.base import ContractConfig
from analytics_platform.contracts.registry import DomainBinding
from analytics_platform.ingest import store
from analytics_platform.transforms.raw_quality import PartitionQuality, profile

HOUR = timedelta(hours=1)


@dataclass
class HourResult:
    start: datetime
    messages: int
    rows: int
    deleted: int
    quality: PartitionQuality


def hours(start: datetime, end: datetime) -> Iterator[datetime]:
    """The hour starts in [start, end)."""
    current = start
    while current < end:
        yield current
        current += HOUR


def rederive_hour(
    conn: psycopg.Connection, binding: DomainBinding, config: ContractConfig, start: datetime
) -> HourResult:
    """Replace raw rows of one hour with what the contract derives from landing."""
    end = start + HOUR
    contract = binding.contract
    messages = store.read_landing(conn, binding.topics, start, end)
    parsed = contract.parse(messages, config)
    deleted = store.replace_window(conn, contract, start, end, parsed.rows, parsed.rejects)
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
