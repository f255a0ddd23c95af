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


# Daily rollups: a day's partition exists only once the day has ended (end_offset=0), so a day
# is rolled up when it is complete, and again whenever one of its hours changes.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=get_settings().partitions_start.strftime("%Y-%m-%d"),
    timezone="UTC",
    end_offset=0,
)


# KPIs and anomalies judge whole hours: an hour's partition exists once the hour has ended
# (end_offset=0), so a silence at the end of a still-running hour is never counted as downtime,
# and an hourly schedule's run targets the hour that just closed.
ended_hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=get_settings().partitions_start.strftime(PARTITION_FORMAT),
    timezone="UTC",
    end_offset=0,
    fmt=PARTITION_FORMAT,
)
