"""The time partitions of the platform's assets, built from the settings passed in (PARTITIONS_START).

Shared by several folders: the raw assets and everything computed per hour from them must use equal
partitions (Dagster compares them by value, so each builder's own instance lines up with the raw
assets'), the KPIs and anomalies judge ended hours, the day rollups and daily KPIs ended days.
"""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from analytics_platform.settings import PlatformSettings

PARTITION_FORMAT = "%Y-%m-%d-%H:%M"


def partition_key(start: datetime) -> str:
    """The partition key of the hour starting at `start` (UTC)."""
    return start.strftime(PARTITION_FORMAT)


def hourly_partitions(settings: PlatformSettings) -> dg.HourlyPartitionsDefinition:
    """Hourly UTC partitions of the raw assets, by each reading's own time, and of the assets that
    follow them hour by hour. end_offset=1: the current, still-filling hour has a partition, so live
    data shows up at once."""
    return dg.HourlyPartitionsDefinition(
        start_date=settings.partitions_start.strftime(PARTITION_FORMAT),
        timezone="UTC",
        end_offset=1,
        fmt=PARTITION_FORMAT,
    )


def daily_partitions(settings: PlatformSettings) -> dg.DailyPartitionsDefinition:
    """Daily rollups: a day's partition exists only once the day has ended (end_offset=0), so a day
    is rolled up when it is complete, and again whenever one of its hours changes."""
    return dg.DailyPartitionsDefinition(
        start_date=settings.partitions_start.strftime("%Y-%m-%d"),
        timezone="UTC",
        end_offset=0,
    )


def ended_hourly_partitions(settings: PlatformSettings) -> dg.HourlyPartitionsDefinition:
    """KPIs and anomalies judge whole hours: an hour's partition exists once the hour has ended
    (end_offset=0), so a silence at the end of a still-running hour is never counted as downtime,
    and an hourly schedule's run targets the hour that just closed."""
    return dg.HourlyPartitionsDefinition(
        start_date=settings.partitions_start.strftime(PARTITION_FORMAT),
        timezone="UTC",
        end_offset=0,
        fmt=PARTITION_FORMAT,
    )
