"""Raw-contract quality of raw rows, per hourly partition: the numbers behind the raw asset checks.

Pure: frames in, frames out. The live drain profiles each micro-batch and adds the counts up per
partition (so a tick never holds all its rows in memory); a re-materialisation profiles the whole
re-derived partition against its fixed window, where `outside_window` really can be non-zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from analytics_platform.contracts.base import not_finite

PROFILE_SCHEMA: dict[str, pl.DataType] = {
    "partition_start": pl.Datetime("us", "UTC"),
    "rows": pl.Int64(),
    "null_keys": pl.Int64(),
    "non_finite": pl.Int64(),
    "outside_window": pl.Int64(),
    "min_time": pl.Datetime("us", "UTC"),
    "max_time": pl.Datetime("us", "UTC"),
}

CHECK_NAMES = ("keys_not_null", "time_in_partition", "values_finite", "reject_ratio")


def profile(
    rows: pl.DataFrame,
    key_columns: Sequence[str],
    finite_columns: Sequence[str],
    window: tuple[datetime, datetime] | None = None,
) -> pl.DataFrame:
    """Count rows, null/empty keys, non-finite values and rows outside their window.

    With `window=None` rows are grouped by the UTC hour of their time; with a window, all rows
    are profiled as one partition starting at `window[0]`.
    """
    if rows.is_empty():
        return pl.DataFrame(schema=PROFILE_SCHEMA)
    null_key = pl.any_horizontal(
        [pl.col(c).is_null() | (pl.col(c).cast(pl.String) == "") for c in ["time", *key_columns]]
    )
    non_finite = pl.any_horizontal([not_finite(c, rows.schema[c]) for c in finite_columns] or [pl.lit(False)])
    if window is None:
        start = pl.col("time").dt.truncate("1h")
        end = start + pl.duration(hours=1)
    else:
        start = pl.lit(window[0]).dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        end = pl.lit(window[1]).dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    return (
        rows.with_columns(
            start.alias("partition_start"),
            null_key.alias("_null_key"),
            non_finite.alias("_non_finite"),
            ((pl.col("time") < start) | (pl.col("time") >= end)).fill_null(True).alias("_outside"),
        )
        .group_by("partition_start")
        .agg(
            pl.len().cast(pl.Int64).alias("rows"),
            pl.col("_null_key").sum().cast(pl.Int64).alias("null_keys"),
            pl.col("_non_finite").sum().cast(pl.Int64).alias("non_finite"),
            pl.col("_outside").sum().cast(pl.Int64).alias("outside_window"),
            pl.col("time").min().alias("min_time"),
            pl.col("time").max().alias("max_time"),
        )
        .sort("partition_start")
        .select(list(PROFILE_SCHEMA))
    )


@dataclass
class PartitionQuality:
    """Additive quality counts of one raw partition (summed over micro-batches)."""

    rows: int = 0
    rejects: int = 0
    null_keys: int = 0
    non_finite: int = 0
    outside_window: int = 0
    min_time: datetime | None = None
    max_time: datetime | None = None
    duplicates: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)

    def add_profile(self, row: dict) -> None:
        self.rows += row["rows"]
        self.null_keys += row["null_keys"]
        self.non_finite += row["non_finite"]
        self.outside_window += row["outside_window"]
        self.min_time = _min(self.min_time, row["min_time"])
        self.max_time = _max(self.max_time, row["max_time"])

    def add_rejects(self, reason_counts: dict[str, int], min_time: datetime | None, max_time: datetime | None) -> None:
        for reason, count in reason_counts.items():
            self.reject_reasons[reason] = self.reject_reasons.get(reason, 0) + count
            self.rejects += count
        self.min_time = _min(self.min_time, min_time)
        self.max_time = _max(self.max_time, max_time)

    def merge(self, other: PartitionQuality) -> None:
        """Add another partition's (or micro-batch's) counts to these."""
        self.rows += other.rows
        self.null_keys += other.null_keys
        self.non_finite += other.non_finite
        self.outside_window += other.outside_window
        self.duplicates += other.duplicates
        self.add_rejects(other.reject_reasons, other.min_time, other.max_time)

    @property
    def reject_ratio(self) -> float:
        total = self.rows + self.rejects
        return self.rejects / total if total else 0.0


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict


def check_outcomes(quality: PartitionQuality, max_reject_ratio: float) -> list[CheckOutcome]:
    """The four raw-contract checks of one partition, with the failing figures as metadata."""
    return [
        CheckOutcome(
            "keys_not_null",
            quality.null_keys == 0,
            "every row has its time and key columns",
            {"rows": quality.rows, "rows_with_null_key": quality.null_keys},
        ),
        CheckOutcome(
            "time_in_partition",
            quality.outside_window == 0,
            "every row's time lies inside the partition's hour",
            {"rows": quality.rows, "rows_outside": quality.outside_window},
        ),
        CheckOutcome(
            "values_finite",
            quality.non_finite == 0,
            "every value is a finite number",
            {"rows": quality.rows, "non_finite_rows": quality.non_finite},
        ),
        CheckOutcome(
            "reject_ratio",
            quality.reject_ratio <= max_reject_ratio,
            f"rejected messages are at most {max_reject_ratio:.1%} of the partition's messages",
            {
                "rejects": quality.rejects,
                "rows": quality.rows,
                "reject_ratio": round(quality.reject_ratio, 6),
                "threshold": max_reject_ratio,
                "reasons": dict(sorted(quality.reject_reasons.items())),
            },
        ),
    ]


def hour_window(start: datetime) -> tuple[datetime, datetime]:
    return start, start + timedelta(hours=1)


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)
