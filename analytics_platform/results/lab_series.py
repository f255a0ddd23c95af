"""Window aggregates of lab results for a range of hours: read every result of the buckets the hours
touch, aggregate in Polars (transforms/lab_series.py), replace those buckets in one transaction.

Lab results are a few per station and hour, so a range is read as one frame (no per-hour readers
as for sensor readings, results/aggregates.py). Re-materialising a range therefore leaves exactly
the buckets its results make, a late result included, and never a second copy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl
import psycopg

from analytics_platform.contracts.lab import LabContract
from analytics_platform.ingest.store import copy_rows
from analytics_platform.results.frames import lock_results, read_frame
from analytics_platform.transforms.lab_series import (
    LAB_AGG_COLUMNS,
    LAB_RESULT_SCHEMA,
    LAB_SERIES_KEY,
    lab_window_aggregates,
)
from analytics_platform.transforms.window_aggregates import ceil_to, covering_range, floor_to

TABLE = "analytics_lab_agg"
RESULTS_QUERY = (
    f"SELECT {', '.join(LAB_RESULT_SCHEMA)} FROM analytics.{LabContract.raw_table} WHERE time >= %s AND time < %s"
)


@dataclass
class LabAggregateRun:
    """What one range's recompute did, for the asset's metadata: results read, buckets written, replaced."""

    results: int = 0
    rows: int = 0
    deleted: int = 0


def read_lab_results(conn: psycopg.Connection, start: datetime, end: datetime) -> pl.DataFrame:
    """The lab results of [start, end) in LAB_RESULT_SCHEMA, every tenant's."""
    return read_frame(conn, RESULTS_QUERY, (start, end), LAB_RESULT_SCHEMA)


def replace_lab_aggregates(
    conn: psycopg.Connection, aggregates: pl.DataFrame, windows: Sequence[int], start: datetime, end: datetime
) -> int:
    """Delete every bucket of `windows` overlapping [start, end) and COPY `aggregates` in its place,
    in one transaction; returns the rows deleted."""
    deleted = 0
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, TABLE)
        for window_s in windows:
            cur.execute(
                f"DELETE FROM analytics.{TABLE} WHERE window_s = %s AND bucket_start >= %s AND bucket_start < %s",
                (window_s, floor_to(start, window_s), ceil_to(end, window_s)),
            )
            deleted += cur.rowcount
        copy_rows(cur, TABLE, aggregates.sort(*LAB_SERIES_KEY, "window_s", "bucket_start"), LAB_AGG_COLUMNS)
    return deleted


def recompute_lab_aggregates(
    conn: psycopg.Connection, windows: Sequence[int], start: datetime, end: datetime
) -> LabAggregateRun:
    """Recompute the lab aggregates of every bucket overlapping the hours [start, end) from the raw results."""
    windows = sorted(set(windows))
    results = read_lab_results(conn, *covering_range(start, end, windows))
    aggregates = lab_window_aggregates(results, windows, start=start, end=end)
    deleted = replace_lab_aggregates(conn, aggregates, windows, start, end)
    return LabAggregateRun(results=results.height, rows=aggregates.height, deleted=deleted)
