"""Raw-contract quality of raw rows, per hourly partition: the numbers behind the raw asset checks.

Pure: frames in, frames out. The live drain profiles each micro-batch and adds the counts up per
partition (so a tick never holds all its rows in memory); a re-materialisation profiles the whole
re-derived partition against its fixed window, where `outside_window` really can be non-zero.

`range_profile` is the live side of the `values_in_range` / `units_match` data contracts: the
contract accepts a plausible-looking 5000 degC (it only knows types), so the drain counts readings
outside their metric's catalogue range, or in another unit, per micro-batch with one join and a
few vectorised comparisons, and keeps a handful of offending rows to show. Re-materialising a
partition judges the same rule with the Great Expectations suite of `analytics_platform.data_quality`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from analytics_platform.contracts.base import not_finite
from analytics_platform.contracts.catalog import with_catalog_limits

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
# the data contracts on metric values, for domains whose rows carry `metric`, `unit` and a value
RANGE_CHECK_NAMES = ("values_in_range", "units_match")
# offending rows kept per partition and check: enough to find the culprit, small enough for metadata
SAMPLE_ROWS = 5


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


RANGE_PROFILE_SCHEMA: dict[str, pl.DataType] = {
    "partition_start": pl.Datetime("us", "UTC"),
    "range_rows": pl.Int64(),
    "out_of_range": pl.Int64(),
    "unit_mismatch": pl.Int64(),
    "out_of_range_sample": pl.List(pl.Struct({})),
    "unit_sample": pl.List(pl.Struct({})),
}


def range_profile(
    rows: pl.DataFrame,
    limits: pl.DataFrame,
    value_column: str,
    key_columns: Sequence[str],
    *,
    missing_unit_ok: bool = True,
    sample: int = SAMPLE_ROWS,
) -> pl.DataFrame:
    """Per UTC hour of `time`: rows judged, readings outside their metric's [min, max] and readings
    whose unit is not the metric's canonical unit, with up to `sample` offending rows of each.

    `value_column` is a float or a list of floats (a sweep: the batch is out of range when any of
    its values is; the sample shows the offending extreme). A metric without a catalogue entry, a
    NULL bound or (with `missing_unit_ok`) a NULL unit passes: the contract already rejects unknown
    metrics, and a sender that states no unit means the canonical one.
    """
    if rows.is_empty():
        return pl.DataFrame(schema=RANGE_PROFILE_SCHEMA)
    value = pl.col(value_column)
    if isinstance(rows.schema[value_column], pl.List):
        low, high = value.list.min(), value.list.max()
    else:
        low = high = value
    too_low = (pl.col("_low") < pl.col("min_value")).fill_null(False)
    too_high = (pl.col("_high") > pl.col("max_value")).fill_null(False)
    unit_missing = pl.col("unit").is_null()
    wrong_unit = (
        pl.when(unit_missing)
        .then(pl.lit(not missing_unit_ok))
        .otherwise(pl.col("canonical_unit").is_not_null() & (pl.col("unit") != pl.col("canonical_unit")))
    )
    where = [*dict.fromkeys(["time", "tenant_id", *(c for c in key_columns if c in rows.columns), "metric"])]
    judged = with_catalog_limits(
        rows.select(*where, "unit", low.alias("_low"), high.alias("_high")), limits
    ).with_columns(
        pl.col("time").dt.truncate("1h").alias("partition_start"),
        (too_low | too_high).alias("_out"),
        wrong_unit.alias("_unit"),
        pl.when(too_high).then(pl.col("_high")).otherwise(pl.col("_low")).alias("value"),
    )
    return (
        judged.group_by("partition_start")
        .agg(
            pl.len().cast(pl.Int64).alias("range_rows"),
            pl.col("_out").sum().cast(pl.Int64).alias("out_of_range"),
            pl.col("_unit").sum().cast(pl.Int64).alias("unit_mismatch"),
            pl.struct(*where, "value", "min_value", "max_value", "unit")
            .filter(pl.col("_out"))
            .head(sample)
            .alias("out_of_range_sample"),
            pl.struct(*where, "unit", "canonical_unit").filter(pl.col("_unit")).head(sample).alias("unit_sample"),
        )
        .sort("partition_start")
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
    range_rows: int = 0
    out_of_range: int = 0
    unit_mismatch: int = 0
    uncatalogued: int = 0  # rows stored under a tenant's `accept` policy for unknown metrics
    out_of_range_sample: list[dict] = field(default_factory=list)
    unit_sample: list[dict] = field(default_factory=list)

    def add_profile(self, row: dict) -> None:
        self.rows += row["rows"]
        self.null_keys += row["null_keys"]
        self.non_finite += row["non_finite"]
        self.outside_window += row["outside_window"]
        self.min_time = _min(self.min_time, row["min_time"])
        self.max_time = _max(self.max_time, row["max_time"])

    def add_range_profile(self, row: dict) -> None:
        """Add one `range_profile` row; samples keep the first SAMPLE_ROWS, as JSON-ready dicts."""
        self.range_rows += row["range_rows"]
        self.out_of_range += row["out_of_range"]
        self.unit_mismatch += row["unit_mismatch"]
        self._extend(self.out_of_range_sample, row["out_of_range_sample"])
        self._extend(self.unit_sample, row["unit_sample"])

    @staticmethod
    def _extend(sample: list[dict], rows: list[dict] | None) -> None:
        for item in (rows or [])[: max(0, SAMPLE_ROWS - len(sample))]:
            sample.append({k: v.isoformat() if isinstance(v, datetime) else v for k, v in item.items()})

    def add_rejects(self, reason_counts: dict[str, int], min_time: datetime | None, max_time: datetime | None) -> None:
        for reason, count in reason_counts.items():
            self.reject_reasons[reason] = self.reject_reasons.get(reason, 0) + count
            self.rejects += count
        self.min_time = _min(self.min_time, min_time)
        self.max_time = _max(self.max_time, max_time)

    def to_json(self) -> dict:
        """A JSON-ready copy: the drain service stores each micro-batch's counts in the database
        (analytics.drain_reports) for the drain sensor to report later, possibly from another process."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["min_time"] = self.min_time.isoformat() if self.min_time else None
        data["max_time"] = self.max_time.isoformat() if self.max_time else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> PartitionQuality:
        """The inverse of `to_json` (unknown keys, e.g. from a newer writer, are ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("min_time", "max_time"):
            if known.get(name):
                known[name] = datetime.fromisoformat(known[name])
        return cls(**known)

    def merge(self, other: PartitionQuality) -> None:
        """Add another partition's (or micro-batch's) counts to these."""
        self.rows += other.rows
        self.null_keys += other.null_keys
        self.non_finite += other.non_finite
        self.outside_window += other.outside_window
        self.duplicates += other.duplicates
        self.range_rows += other.range_rows
        self.out_of_range += other.out_of_range
        self.unit_mismatch += other.unit_mismatch
        self.uncatalogued += other.uncatalogued
        self._extend(self.out_of_range_sample, other.out_of_range_sample)
        self._extend(self.unit_sample, other.unit_sample)
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


def range_outcomes(quality: PartitionQuality) -> list[CheckOutcome]:
    """`values_in_range` and `units_match` of one partition from its range profile counts, with
    the offending rows (time, keys, metric, value and bounds / unit and canonical unit)."""
    return [
        CheckOutcome(
            "values_in_range",
            quality.out_of_range == 0,
            "every reading lies within its metric's plausible range (contracts/metrics.yaml)",
            {"rows": quality.range_rows, "unexpected": quality.out_of_range, "offending": quality.out_of_range_sample},
        ),
        CheckOutcome(
            "units_match",
            quality.unit_mismatch == 0,
            "every reading is in its metric's canonical unit (contracts/metrics.yaml)",
            {"rows": quality.range_rows, "unexpected": quality.unit_mismatch, "offending": quality.unit_sample},
        ),
    ]


def hour_window(start: datetime) -> tuple[datetime, datetime]:
    return start, start + timedelta(hours=1)


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)
