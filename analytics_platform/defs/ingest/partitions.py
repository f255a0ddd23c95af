"""Hourly UTC partitions of the raw assets, by each reading's own time."""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from analytics_platform.settings import get_settings

PARTITION_FORMAT = "%Y-%m-%d-%H:%M"

# end_offset=1: the current, still-filling hour has a partition, so live data shows up at once.
hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=get_settings().partitions_start.strftime(PARTITION_FORMAT),
    timezone="UTC",
    end_offset=1,
    fmt=PARTITION_FORMAT,
)


def partition_key(start: datetime) -> str:
    """The partition key of the hour starting at `start` (UTC)."""
    return start.strftime(PARTITION_FORMAT)
