"""Sweep batches and lab results judged against spec limits.

Spec limits are data (`analytics.analytics_spec_limits`): per tenant, optionally per factory
(`'*'` = every factory), for an analyte (lab) or a metric (sweep), with lower / upper / target and
the time they are valid from. For each result the most specific, most recent limit applies: the
factory's own limit before the tenant-wide one, then the latest `valid_from` at or before the
result's time. A result with no applicable limit has no verdict (`passed` NULL): it is counted but
not in pass or fail rates, so a missing limit never looks like a pass.

A sweep batch passes when every reading lies within [lower, upper] (a missing bound is no bound);
its event carries n, mean, min, max and stddev of the batch. A lab result passes when its value
lies within [lower, upper].

A limit is stated in a unit (`unit`, optional). A result reported in another unit (moisture in g/kg
against limits in %, a sweep in degF against degC) is not comparable with it: it gets no verdict
(`passed` NULL, level `unit_mismatch`) rather than a false fail or pass. A result or limit without a
unit (or a blank one) is judged as before (the unit is taken to match); case and surrounding spaces
do not make units differ.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import polars as pl

from analytics_platform.contracts.lab import LabContract
from analytics_platform.contracts.sweep import SweepContract
from analytics_platform.transforms.event_rollups import MACHINE_KEY, as_events
from analytics_platform.transforms.window_aggregates import TIME

SWEEP_BATCH = "sweep_batch"
LAB_RESULT = "lab_result"

ALWAYS = datetime(1, 1, 1, tzinfo=UTC)  # a limit without valid_from (NULL, '-infinity' in SQL) always applies
LIMIT_SCHEMA: dict[str, pl.DataType] = {
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "scope": pl.String(),
    "name": pl.String(),
    "lower_limit": pl.Float64(),
    "upper_limit": pl.Float64(),
    "target": pl.Float64(),
    "valid_from": TIME,  # NULL = always
}
SWEEP_SCHEMA: dict[str, pl.DataType] = {
    "time": TIME,
    **{c: pl.String() for c in MACHINE_KEY},
    "metric": pl.String(),
    "batch_id": pl.String(),
    "unit": pl.String(),
    "reading_values": pl.List(pl.Float64()),
    "dedup_key": pl.String(),
}
LAB_SCHEMA: dict[str, pl.DataType] = {
    "time": TIME,
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "station_id": pl.String(),
    "sample_id": pl.String(),
    "analyte": pl.String(),
    "value": pl.Float64(),
    "unit": pl.String(),
    "dedup_key": pl.String(),
}


def applicable_limits(
    items: pl.DataFrame, limits: pl.DataFrame, scope: str, name_column: str, *, with_unit: bool = False
) -> pl.DataFrame:
    """`items` with lower_limit, upper_limit and target of the limit that applies to each row
    (NULL when none does); `with_unit`: and the limit's unit as `limit_unit` (NULL when `limits` has no
    `unit` column)."""
    indexed = items.with_row_index("_row")
    unit = pl.col("unit").cast(pl.String) if "unit" in limits.columns else pl.lit(None, pl.String)
    chosen = (
        indexed.select("_row", "time", "tenant_id", "factory_id", name_column)
        .join(
            limits.select(*LIMIT_SCHEMA.keys(), unit.alias("limit_unit"))
            .cast(LIMIT_SCHEMA)
            .filter(pl.col("scope") == scope)
            .with_columns(pl.col("valid_from").fill_null(ALWAYS)),
            left_on=["tenant_id", name_column],
            right_on=["tenant_id", "name"],
            suffix="_limit",
        )
        .filter(
            ((pl.col("factory_id_limit") == pl.col("factory_id")) | (pl.col("factory_id_limit") == "*"))
            & (pl.col("valid_from") <= pl.col("time"))
        )
        # the factory's own limit before the tenant-wide one, then the latest valid_from
        .sort("_row", pl.col("factory_id_limit") == "*", "valid_from", descending=[False, False, True])
        .unique("_row", keep="first", maintain_order=True)
        .select("_row", "lower_limit", "upper_limit", "target", *(["limit_unit"] if with_unit else []))
    )
    return indexed.join(chosen, on="_row", how="left").sort("_row").drop("_row")


def _within(value: pl.Expr) -> pl.Expr:
    return (pl.col("lower_limit").is_null() | (value >= pl.col("lower_limit"))) & (
        pl.col("upper_limit").is_null() | (value <= pl.col("upper_limit"))
    )


def _has_limit() -> pl.Expr:
    return pl.col("lower_limit").is_not_null() | pl.col("upper_limit").is_not_null()


def _unit(column: str) -> pl.Expr:
    """A unit as compared: spaces around it and letter case do not count ("mg/L" and "mg/l " are one
    unit as people type them), and a blank one is no unit."""
    unit = pl.col(column).str.strip_chars().str.to_lowercase()
    return pl.when(unit != "").then(unit)


def _unit_mismatch() -> pl.Expr:
    """The result's unit and its limit's are both given and differ: the two cannot be compared."""
    return (_unit("unit") != _unit("limit_unit")).fill_null(False)


def _judged() -> pl.Expr:
    """A limit applies and is in the result's unit: the result gets a verdict."""
    return _has_limit() & ~_unit_mismatch()


def _verdict_columns() -> dict[str, pl.Expr]:
    """The columns every judged event shares: its verdict and level, no period."""
    return {
        "level": pl.when(_has_limit() & _unit_mismatch())
        .then(pl.lit("unit_mismatch"))
        .otherwise(_verdict_level(pl.col("passed"))),
        "passed": pl.col("passed"),
        "end_time": pl.lit(None, TIME),
        "duration_s": pl.lit(None, pl.Float64),
    }


def _verdict_level(passed: pl.Expr) -> pl.Expr:
    return (
        pl.when(passed.is_null()).then(pl.lit("no_limit")).when(passed).then(pl.lit("pass")).otherwise(pl.lit("fail"))
    )


def _finite_stat(values: pl.Expr, stat: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """`stat` of a list of finite readings, computed on the readings scaled by a power of two near
    their largest magnitude when the plain form overflows (two readings of 1e308 sum to inf: mean inf,
    stddev NaN). Mean and stddev scale linearly and a power of two scales exactly, so the scaled form
    is the same statistic (dividing by the magnitude itself went through its subnormal reciprocal: a
    mean of 9.999999999999998e307). The plain form is kept whenever it is finite, so ordinary batches
    give bit for bit what they always did; a stddev that truly exceeds the largest float (readings of
    ±1.7e308) is still inf."""
    plain = stat(values)
    exponent = pl.element().abs().max().log(2).floor()
    scaled = stat(values.list.eval(pl.element() * pl.lit(2.0).pow(-exponent)))
    back = pl.lit(2.0).pow(values.list.eval(exponent).list.first())
    return pl.when(plain.is_finite() | plain.is_null()).then(plain).otherwise(scaled * back)


def sweep_batches(sweeps: pl.DataFrame, limits: pl.DataFrame) -> pl.DataFrame:
    """One `sweep_batch` event per batch: statistics of its readings and its verdict."""
    batches = sweeps.select(SWEEP_SCHEMA.keys()).cast(SWEEP_SCHEMA)
    judged = applicable_limits(batches, limits, "metric", "metric", with_unit=True).with_row_index("_row")
    outside = (
        judged.select("_row", "reading_values", "lower_limit", "upper_limit")
        .explode("reading_values")
        .group_by("_row")
        .agg(out_of_spec_n=(~_within(pl.col("reading_values"))).sum().cast(pl.Int64))
    )
    judged = (
        judged.join(outside, on="_row", how="left")
        .sort("_row")
        .with_columns(
            n=pl.col("reading_values").list.len(),
            mean=_finite_stat(pl.col("reading_values"), lambda values: values.list.mean()),
            min=pl.col("reading_values").list.min(),
            max=pl.col("reading_values").list.max(),
            stddev=_finite_stat(pl.col("reading_values"), lambda values: values.list.std(ddof=1)),
            out_of_spec_n=pl.when(_judged()).then("out_of_spec_n"),
        )
        .with_columns(passed=pl.when(_judged()).then(pl.col("out_of_spec_n") == 0))
    )
    events = judged.select(
        "time",
        *MACHINE_KEY,
        event_type=pl.lit(SWEEP_BATCH),
        event_key="dedup_key",
        domain=pl.lit(SweepContract.domain),
        value="mean",
        **_verdict_columns(),
        details=pl.struct(
            "metric",
            "batch_id",
            "unit",
            "n",
            "mean",
            "min",
            "max",
            "stddev",
            "out_of_spec_n",
            "lower_limit",
            "upper_limit",
            "target",
        ).struct.json_encode(),
        subject=pl.lit(""),
    )
    return as_events(events).sort(*MACHINE_KEY, "time", "event_key")


def lab_results(results: pl.DataFrame, limits: pl.DataFrame) -> pl.DataFrame:
    """One `lab_result` event per result with its verdict; rolled up per station and analyte."""
    rows = results.select(LAB_SCHEMA.keys()).cast(LAB_SCHEMA)
    judged = applicable_limits(rows, limits, "analyte", "analyte", with_unit=True).with_columns(
        passed=pl.when(_judged()).then(_within(pl.col("value")))
    )
    events = judged.select(
        "time",
        "tenant_id",
        "factory_id",
        machine_id="station_id",
        event_type=pl.lit(LAB_RESULT),
        event_key="dedup_key",
        domain=pl.lit(LabContract.domain),
        value="value",
        **_verdict_columns(),
        details=pl.struct(
            "analyte",
            "sample_id",
            "unit",
            "lower_limit",
            "upper_limit",
            "target",
            deviation_from_target=pl.col("value") - pl.col("target"),
        ).struct.json_encode(),
        subject="analyte",
    )
    return as_events(events).sort(*MACHINE_KEY, "time", "event_key")
