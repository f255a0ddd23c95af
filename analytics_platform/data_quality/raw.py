"""Data contracts of raw partitions: metric values in range and in their canonical unit, and the
completeness of each machine's readings.

The catalogue's min / max / unit are joined onto the readings so that one pair expectation judges
every metric at once (instead of one expectation per metric), and the offending rows come back
with their keys. Completeness compares, per machine, the readings received with those expected
from each of its series at the configured interval; the series are those seen in the hour or the
hour before, so a machine that fell silent mid-hour (or for the whole hour after reporting in the
previous one) is found.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from analytics_platform.contracts.catalog import with_catalog_limits
from analytics_platform.data_quality.checks import describe
from analytics_platform.data_quality.config import ChecksConfig, Completeness
from analytics_platform.data_quality.raw_profile import CheckOutcome
from analytics_platform.data_quality.validation import Expect, ExpectationResult, outcomes, validate
from analytics_platform.transforms.window_aggregates import MACHINE_KEY, SERIES_KEY

SERIES = SERIES_KEY
MACHINE = MACHINE_KEY
SERIES_SCHEMA: dict[str, pl.DataType] = {c: pl.String() for c in SERIES}


def with_limits(readings: pl.DataFrame, limits: pl.DataFrame, value_column: str = "value") -> pl.DataFrame:
    """`readings` with their metric's min_value, max_value and canonical_unit; a list-valued
    column (a sweep batch) becomes one row per value, in column `value`."""
    frame = readings
    if isinstance(frame.schema[value_column], pl.List):
        frame = frame.explode(value_column)
    if value_column != "value":
        frame = frame.rename({value_column: "value"})
    return with_catalog_limits(frame, limits)


def metric_expectations(config: ChecksConfig) -> list[Expect]:
    """`values_in_range` and `units_match` over a `with_limits` frame. Rows without a bound or a
    canonical unit are not judged on that side; a reading without a unit is canonical unless
    `units.missing_is_canonical` is off."""
    skip = {"ignore_row_if": "either_value_is_missing"}
    expects = [
        Expect(
            "values_in_range",
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "value", "column_B": "min_value", "or_equal": True, **skip},
        ),
        Expect(
            "values_in_range",
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "max_value", "column_B": "value", "or_equal": True, **skip},
        ),
        Expect(
            "units_match", "ExpectColumnPairValuesToBeEqual", {"column_A": "unit", "column_B": "canonical_unit", **skip}
        ),
    ]
    if not config.units.missing_is_canonical:
        expects.append(Expect("units_match", "ExpectColumnValuesToNotBeNull", {"column": "unit"}))
    return expects


def completeness_frame(
    readings: pl.DataFrame, previous_series: pl.DataFrame, settings: Completeness, start: datetime, end: datetime
) -> pl.DataFrame:
    """Per machine: series, readings received, readings expected over [start, end), their ratio.

    Expected = sum over the machine's series of (end - start) / interval of the series' metric,
    where the series are those with readings in the window or in `previous_series` (the hour
    before).
    """
    seconds = (end - start).total_seconds()
    received = readings.group_by(SERIES).agg(pl.len().cast(pl.Int64).alias("received"))
    series = pl.concat(
        [received.select(SERIES).cast(SERIES_SCHEMA), previous_series.select(SERIES).cast(SERIES_SCHEMA)]
    )
    intervals = pl.DataFrame(
        {"metric": list(settings.interval_s), "interval_s": list(settings.interval_s.values())},
        schema={"metric": pl.String(), "interval_s": pl.Float64()},
    )
    return (
        series.unique()
        .join(received.cast({c: pl.String() for c in SERIES}), on=SERIES, how="left", maintain_order="left")
        .join(intervals, on="metric", how="left", maintain_order="left")
        .with_columns(
            pl.col("received").fill_null(0),
            (seconds / pl.col("interval_s").fill_null(settings.interval_of("default"))).alias("expected"),
        )
        .group_by(MACHINE)
        .agg(
            pl.len().cast(pl.Int64).alias("series"),
            pl.col("received").sum(),
            pl.col("expected").sum().round(1),
        )
        .with_columns((pl.col("received") / pl.col("expected")).round(4).alias("ratio"))
        .sort(MACHINE)
    )


def sensor_outcomes(
    readings: pl.DataFrame,
    previous_series: pl.DataFrame,
    limits: pl.DataFrame,
    config: ChecksConfig,
    *,
    start: datetime,
    end: datetime,
    as_of: datetime,
) -> list[CheckOutcome]:
    """`values_in_range`, `units_match` and `completeness` of the sensor readings of [start, end).

    `readings`: time, the series key, value, unit. `previous_series`: the series key of the hour
    before `start`. An hour that has not ended at `as_of` is not judged for completeness (its
    readings are still arriving): that outcome passes and says so.
    """
    results = validate(
        with_limits(readings, limits), metric_expectations(config), ["time", *SERIES], name="raw_sensor_readings"
    )
    found = outcomes(describe(["values_in_range", "units_match"]), results)
    return [*found, _completeness(readings, previous_series, config.completeness, start, end, as_of)]


def sweep_outcomes(readings: pl.DataFrame, limits: pl.DataFrame, config: ChecksConfig) -> list[CheckOutcome]:
    """`values_in_range` and `units_match` of sweep batches: every value of a batch is judged."""
    frame = with_limits(readings, limits, "reading_values")
    keys = ["time", "tenant_id", "factory_id", "machine_id", "metric", "batch_id"]
    results = validate(frame, metric_expectations(config), keys, name="raw_sweep_readings")
    return outcomes(describe(["values_in_range", "units_match"]), results)


def _completeness(
    readings: pl.DataFrame,
    previous_series: pl.DataFrame,
    settings: Completeness,
    start: datetime,
    end: datetime,
    as_of: datetime,
) -> CheckOutcome:
    description = describe(["completeness"])["completeness"]
    if as_of < end:
        return CheckOutcome(
            "completeness", True, description, {"judged": False, "reason": f"the window ends at {end.isoformat()}"}
        )
    frame = completeness_frame(readings, previous_series, settings, start, end)
    results: list[ExpectationResult] = validate(
        frame,
        [Expect("completeness", "ExpectColumnValuesToBeBetween", {"column": "ratio", "min_value": settings.min_ratio})],
        [*MACHINE, "series", "received", "expected"],
        name="completeness",
    )
    outcome = outcomes({"completeness": description}, results)[0]
    metadata = {**outcome.metadata, "machines": frame.height, "min_ratio": settings.min_ratio}
    return CheckOutcome(outcome.name, outcome.passed, outcome.description, metadata)
