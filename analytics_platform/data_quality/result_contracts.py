"""Data contracts of the result tables: schema and key columns, unique natural keys, bucket
reconciliation and the plausible ranges of derived values, per asset.

A `TableContract` is the promise a result table makes to its readers (the API, later assets): its
columns with their PostgreSQL types, and its natural key. It is written out here rather than
derived from the migrations because it is what the check holds the table to: a migration that
drops or retypes a column the pipeline relies on is caught at the next materialisation.

Every suite works on the rows one partition wrote (read back by `data_quality.written`), so a check
judges what readers will see. Float comparisons allow `result_ranges.tolerance` of slack through
helper columns (`<column>__slack`), since GX compares columns exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from analytics_platform.contracts.catalog import with_catalog_limits
from analytics_platform.data_quality.checks import RESULT_CHECKS, RESULT_CHECKS_NO_BUCKETS, describe
from analytics_platform.data_quality.config import ResultRanges
from analytics_platform.data_quality.raw_profile import CheckOutcome
from analytics_platform.data_quality.validation import Expect, ExpectationResult, outcomes, validate
from analytics_platform.transforms import kpi_catalog
from analytics_platform.transforms.lab_series import LAB_SERIES_KEY
from analytics_platform.transforms.window_aggregates import MACHINE_KEY, SERIES_KEY

TS = "timestamp with time zone"
F8 = "double precision"
TEXT = "text"

# PostgreSQL type (information_schema.columns.data_type) -> the Polars type it is read as
POLARS_TYPES: dict[str, pl.DataType] = {
    TS: pl.Datetime("us", "UTC"),
    F8: pl.Float64(),
    TEXT: pl.String(),
    "bigint": pl.Int64(),
    "integer": pl.Int32(),
    "smallint": pl.Int16(),
    "boolean": pl.Boolean(),
    "jsonb": pl.String(),
    "ARRAY": pl.String(),
}


@dataclass(frozen=True)
class TableContract:
    """A result table's promise: columns (name -> PostgreSQL type) and natural key. Key columns
    must not be NULL, except `nullable_key` ones (a UNIQUE NULLS NOT DISTINCT key)."""

    table: str
    columns: Mapping[str, str]
    key: tuple[str, ...]
    nullable_key: tuple[str, ...] = ()

    @property
    def schema(self) -> dict[str, pl.DataType]:
        return {name: POLARS_TYPES[kind] for name, kind in self.columns.items()}

    @property
    def signatures(self) -> list[str]:
        return [f"{name} {kind}" for name, kind in self.columns.items()]


MACHINE = MACHINE_KEY
SERIES = SERIES_KEY
_MACHINE_COLUMNS = {c: TEXT for c in MACHINE}

_BUCKET_STATS = {
    "count_n": "bigint",
    **{f"{s}_v": F8 for s in ("sum", "avg", "min", "max", "stddev", "first", "last", "p50", "p95")},
}
AGG = TableContract(
    "analytics_agg",
    {"bucket_start": TS, "bucket_end": TS, "window_s": "integer", **{c: TEXT for c in SERIES}, **_BUCKET_STATS},
    (*SERIES, "window_s", "bucket_start"),
)
LAB_AGG = TableContract(
    "analytics_lab_agg",
    {"bucket_start": TS, "bucket_end": TS, "window_s": "integer", **{c: TEXT for c in LAB_SERIES_KEY}, **_BUCKET_STATS},
    (*LAB_SERIES_KEY, "window_s", "bucket_start"),
)
EVENT = TableContract(
    "analytics_event",
    {
        "time": TS,
        **_MACHINE_COLUMNS,
        "event_type": TEXT,
        "event_key": TEXT,
        "domain": TEXT,
        "level": TEXT,
        "value": F8,
        "passed": "boolean",
        "end_time": TS,
        "duration_s": F8,
        "details": "jsonb",
    },
    (*MACHINE, "event_type", "event_key", "time"),
)
ROLLUP_KEY = (*MACHINE, "event_type", "subject")
ROLLUP = TableContract(
    "analytics_event_rollup",
    {
        "bucket_start": TS,
        "bucket_end": TS,
        "window_s": "integer",
        **_MACHINE_COLUMNS,
        "event_type": TEXT,
        "subject": TEXT,
        "count_n": "bigint",
        "pass_n": "bigint",
        "fail_n": "bigint",
        "fail_rate": F8,
        "pass_rate": F8,
        "uptime_pct": F8,
        "details": "jsonb",
    },
    (*ROLLUP_KEY, "window_s", "bucket_start"),
)
KPI = TableContract(
    "analytics_kpi",
    {
        "period_start": TS,
        "period_end": TS,
        "period": TEXT,
        **_MACHINE_COLUMNS,
        "kpi": TEXT,
        "value": F8,
        "unit": TEXT,
        "null_reason": TEXT,
        "details": "jsonb",
    },
    (*MACHINE, "period", "kpi", "period_start"),
)
ANOMALY = TableContract(
    "analytics_anomaly",
    {
        "time": TS,
        **_MACHINE_COLUMNS,
        "sensor_id": TEXT,
        "metric": TEXT,
        "anomaly_type": TEXT,
        "method": TEXT,
        "score": F8,
        "severity": "smallint",
        "severity_label": TEXT,
        "confidence": F8,
        "observed": F8,
        "expected": F8,
        "details": "jsonb",
        "status": TEXT,
        "window_start": TS,
        "window_end": TS,
    },
    (*MACHINE, "method", "anomaly_type", "time", "sensor_id", "metric"),
    nullable_key=("sensor_id", "metric"),
)
TREND = TableContract(
    "analytics_trend",
    {
        "window_end": TS,
        "window_start": TS,
        "window_hours": "integer",
        **_MACHINE_COLUMNS,
        "source": TEXT,
        "sensor_id": TEXT,
        "name": TEXT,
        "unit": TEXT,
        "n": "integer",
        "slope_per_hour": F8,
        "intercept": F8,
        "mk_s": "integer",
        "mk_var_s": F8,
        "mk_z": F8,
        "p_value": F8,
        "confidence": F8,
        "direction": TEXT,
        "first_time": TS,
        "last_time": TS,
    },
    (*MACHINE, "source", "sensor_id", "name", "window_hours", "window_end"),
)
FORECAST = TableContract(
    "analytics_forecast",
    {
        "issued_at": TS,
        "period": TEXT,
        "target_start": TS,
        "target_end": TS,
        "horizon_day": "smallint",
        **_MACHINE_COLUMNS,
        "kpi": TEXT,
        "value": F8,
        "lower": F8,
        "upper": F8,
        "level": F8,
        "unit": TEXT,
        "model": TEXT,
        "details": "jsonb",
    },
    (*MACHINE, "kpi", "period", "issued_at", "target_start"),
)
BASELINE = TableContract(
    "analytics_baseline",
    {
        **_MACHINE_COLUMNS,
        "version": "integer",
        "target": TEXT,
        "drivers": "ARRAY",
        "coefficients": "jsonb",
        "r2": F8,
        "adj_r2": F8,
        "rmse": F8,
        "mae": F8,
        "n": "integer",
        "trained_from": TS,
        "trained_to": TS,
        "accepted": "boolean",
        "active": "boolean",
    },
    (*MACHINE, "version"),
)


# ----- building blocks ----------------------------------------------------------------------------
def unique(check: str, columns: Sequence[str]) -> Expect:
    if len(columns) == 1:
        return Expect(check, "ExpectColumnValuesToBeUnique", {"column": columns[0]})
    return Expect(check, "ExpectCompoundColumnsToBeUnique", {"column_list": list(columns)})


def at_most(check: str, low: str, high: str) -> Expect:
    """`low` <= `high` on every row where both are present."""
    return Expect(
        check,
        "ExpectColumnPairValuesAToBeGreaterThanB",
        {"column_A": high, "column_B": low, "or_equal": True, "ignore_row_if": "either_value_is_missing"},
    )


def between(check: str, column: str, bounds: tuple[float | None, float | None]) -> Expect:
    return Expect(
        check, "ExpectColumnValuesToBeBetween", {"column": column, "min_value": bounds[0], "max_value": bounds[1]}
    )


def with_slack(frame: pl.DataFrame, columns: Sequence[str], tolerance: float) -> pl.DataFrame:
    """`<column>__slack` = column + tolerance * max(1, |column|): the upper bound a float may reach."""
    return frame.with_columns(
        (pl.col(c) + tolerance * pl.max_horizontal(pl.lit(1.0), pl.col(c).abs())).alias(f"{c}__slack") for c in columns
    )


def with_epoch(frame: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """`<column>__us`: a timestamp as epoch microseconds. GX compares timezone-aware pandas columns
    through a path pandas 3.1 deprecates (a warning per comparison); integers compare cleanly."""
    return frame.with_columns(pl.col(c).dt.epoch("us").alias(f"{c}__us") for c in columns)


def schema_frame(columns: pl.DataFrame) -> pl.DataFrame:
    """`column_name`, `data_type` rows (information_schema.columns) as one `signature` column."""
    return columns.select(pl.concat_str(["column_name", "data_type"], separator=" ").alias("signature"))


def schema_expectations(contract: TableContract, present: Sequence[str]) -> tuple[list[Expect], list[Expect]]:
    """(on the table's columns, on its rows): the contract's columns exist with their types, and
    its key columns hold no NULL in the written rows."""
    on_columns = [
        Expect(
            "schema",
            "ExpectColumnDistinctValuesToContainSet",
            {"column": "signature", "value_set": contract.signatures},
        )
    ]
    on_rows = [
        Expect("schema", "ExpectColumnValuesToNotBeNull", {"column": c})
        for c in contract.key
        if c not in contract.nullable_key and c in present
    ]
    return on_columns, on_rows


def count_reconciliation(rows: pl.DataFrame, key: Sequence[str], start: datetime, end: datetime) -> pl.DataFrame:
    """For every coarse bucket lying wholly inside [start, end): the count of the coarse bucket and
    the sum of the counts of the finest window's buckets inside it, per `key`.

    The finest window is the smallest `window_s` present; coarse windows are its multiples.
    Buckets are epoch-aligned, so the fine buckets tile each coarse one exactly. A side that is
    missing counts 0 (a coarse bucket without its fine rows, or the reverse, is a mismatch).
    """
    schema = {
        **{c: rows.schema[c] for c in key},
        "window_s": pl.Int32(),
        "bucket_start": pl.Datetime("us", "UTC"),
        "fine_window_s": pl.Int32(),
        "fine_count": pl.Int64(),
        "count_n": pl.Int64(),
    }
    if rows.is_empty():
        return pl.DataFrame(schema=schema)
    fine_window = int(rows["window_s"].min())  # type: ignore[arg-type]
    fine = rows.filter(pl.col("window_s") == fine_window)
    inside = (pl.col("bucket_start") >= start) & (pl.col("bucket_end") <= end)
    coarse = rows.filter((pl.col("window_s") > fine_window) & (pl.col("window_s") % fine_window == 0) & inside)
    frames = [pl.DataFrame(schema=schema)]
    for window in sorted(coarse["window_s"].unique().to_list()):
        width = f"{window}s"
        sums = (
            fine.with_columns(pl.col("bucket_start").dt.truncate(width).alias("coarse_start"))
            .filter((pl.col("coarse_start") >= start) & (pl.col("coarse_start") + pl.duration(seconds=window) <= end))
            .group_by(*key, "coarse_start")
            .agg(pl.col("count_n").sum().cast(pl.Int64).alias("fine_count"))
            .rename({"coarse_start": "bucket_start"})
        )
        joined = (
            coarse.filter(pl.col("window_s") == window)
            .select(*key, "bucket_start", "count_n")
            .join(sums, on=[*key, "bucket_start"], how="full", coalesce=True)
            .with_columns(
                pl.lit(window, pl.Int32).alias("window_s"),
                pl.lit(fine_window, pl.Int32).alias("fine_window_s"),
                pl.col("fine_count", "count_n").fill_null(0).cast(pl.Int64),
            )
        )
        frames.append(joined.select(list(schema)).cast(schema))
    return pl.concat(frames)


def reconciliation_expectations() -> list[Expect]:
    return [
        Expect("reconciliation", "ExpectColumnPairValuesToBeEqual", {"column_A": "fine_count", "column_B": "count_n"})
    ]


@dataclass(frozen=True)
class Part:
    """One frame of a suite, its expectations and the columns that identify an offending row."""

    frame: pl.DataFrame
    expects: list[Expect]
    index: Sequence[str] = ()


def judge(name: str, checks: Sequence[str], parts: Sequence[Part]) -> list[CheckOutcome]:
    """Validate every part and fold the results into one outcome per check, in `checks`' order."""
    results: list[ExpectationResult] = []
    for number, part in enumerate(parts):
        results += validate(part.frame, part.expects, part.index, name=f"{name}:{number}")
    return outcomes(describe(list(checks)), results)


# ----- assets -------------------------------------------------------------------------------------
_BUCKET_SLACK = ["avg_v", "max_v", "p50_v", "p95_v", "min_v"]


def _bucket_ranges() -> list[Expect]:
    """min <= avg / p50 <= p95 <= max, first and last within [min, max], stddev >= 0, count >= 1: what
    every bucket of a window aggregate (sensor or lab) promises."""
    r = "result_ranges"
    return [
        between(r, "count_n", (1, None)),
        between(r, "stddev_v", (0, None)),
        at_most(r, "min_v", "avg_v__slack"),
        at_most(r, "avg_v", "max_v__slack"),
        at_most(r, "min_v", "p50_v__slack"),
        at_most(r, "p50_v", "p95_v__slack"),
        at_most(r, "p95_v", "max_v__slack"),
        at_most(r, "min_v", "first_v"),
        at_most(r, "first_v", "max_v"),
        at_most(r, "min_v", "last_v"),
        at_most(r, "last_v", "max_v"),
    ]


def aggregate_outcomes(
    rows: pl.DataFrame,
    columns: pl.DataFrame,
    limits: pl.DataFrame,
    ranges: ResultRanges,
    *,
    start: datetime,
    end: datetime,
) -> list[CheckOutcome]:
    """Window aggregates of [start, end): schema, unique key, 60 s counts adding up to every
    coarser bucket of the window (reconciliation), and min <= avg / p50 <= p95 <= max, first and
    last within [min, max], stddev >= 0, count >= 1, extremes within the metric's range."""
    frame = with_catalog_limits(with_slack(rows, _BUCKET_SLACK, ranges.tolerance), limits)
    on_columns, on_rows = schema_expectations(AGG, rows.columns)
    r = "result_ranges"
    judged = [*_bucket_ranges(), at_most(r, "min_value", "min_v"), at_most(r, "max_v", "max_value")]
    key = [*AGG.key]
    return judge(
        "sensor_window_aggregates",
        RESULT_CHECKS,
        [
            Part(schema_frame(columns), on_columns),
            Part(frame, [*on_rows, unique("unique_keys", AGG.key), *judged], key),
            Part(count_reconciliation(rows, SERIES, start, end), reconciliation_expectations(), key),
        ],
    )


def lab_aggregate_outcomes(
    rows: pl.DataFrame, columns: pl.DataFrame, ranges: ResultRanges, *, start: datetime, end: datetime
) -> list[CheckOutcome]:
    """Lab window aggregates of [start, end): schema, unique key, the finest window's counts adding
    up to every coarser bucket, and each bucket's statistics consistent (`_bucket_ranges`). Lab
    analytes have no plausible range of their own: their spec limits judge results, not buckets."""
    frame = with_slack(rows, _BUCKET_SLACK, ranges.tolerance)
    on_columns, on_rows = schema_expectations(LAB_AGG, rows.columns)
    key = [*LAB_AGG.key]
    return judge(
        "lab_window_aggregates",
        RESULT_CHECKS,
        [
            Part(schema_frame(columns), on_columns),
            Part(frame, [*on_rows, unique("unique_keys", LAB_AGG.key), *_bucket_ranges()], key),
            Part(count_reconciliation(rows, LAB_SERIES_KEY, start, end), reconciliation_expectations(), key),
        ],
    )


def _rollup_ranges(ranges: ResultRanges) -> list[Expect]:
    r = "result_ranges"
    return [
        between(r, "count_n", (0, None)),
        at_most(r, "verdicts", "count_n"),
        between(r, "pass_rate", ranges.rate),
        between(r, "fail_rate", ranges.rate),
        between(r, "uptime_pct", ranges.uptime_pct),
    ]


def _with_verdicts(rollups: pl.DataFrame) -> pl.DataFrame:
    return rollups.with_columns((pl.col("pass_n").fill_null(0) + pl.col("fail_n").fill_null(0)).alias("verdicts"))


def event_outcomes(
    events: pl.DataFrame,
    rollups: pl.DataFrame,
    event_columns: pl.DataFrame,
    rollup_columns: pl.DataFrame,
    ranges: ResultRanges,
    *,
    start: datetime,
    end: datetime,
) -> list[CheckOutcome]:
    """An hourly event asset's events and rollups of [start, end): both tables' schema and keys,
    fine rollup counts adding up to the hour's, rates and uptime in range, pass + fail <= count,
    periods that do not end before they start."""
    event_schema, event_keys = schema_expectations(EVENT, events.columns)
    rollup_schema, rollup_keys = schema_expectations(ROLLUP, rollups.columns)
    r = "result_ranges"
    event_ranges = [between(r, "duration_s", (0, None)), at_most(r, "time__us", "end_time__us")]
    return judge(
        "events",
        RESULT_CHECKS,
        [
            Part(schema_frame(event_columns), event_schema),
            Part(schema_frame(rollup_columns), rollup_schema),
            Part(
                with_epoch(events, ["time", "end_time"]),
                [*event_keys, unique("unique_keys", EVENT.key), *event_ranges],
                EVENT.key,
            ),
            Part(
                _with_verdicts(rollups),
                [*rollup_keys, unique("unique_keys", ROLLUP.key), *_rollup_ranges(ranges)],
                ROLLUP.key,
            ),
            Part(count_reconciliation(rollups, ROLLUP_KEY, start, end), reconciliation_expectations(), ROLLUP.key),
        ],
    )


def daily_rollup_outcomes(
    rollups: pl.DataFrame, rollup_columns: pl.DataFrame, ranges: ResultRanges, *, start: datetime, end: datetime
) -> list[CheckOutcome]:
    """Day rollups of [start, end) (and the hourly rows they were built from): schema, keys, each
    day's count equal to the sum of its 24 hourly counts, rates and uptime in range."""
    days = rollups.filter(pl.col("window_s") == 86400)
    rollup_schema, rollup_keys = schema_expectations(ROLLUP, rollups.columns)
    return judge(
        "daily_event_rollups",
        RESULT_CHECKS,
        [
            Part(schema_frame(rollup_columns), rollup_schema),
            Part(
                _with_verdicts(days),
                [*rollup_keys, unique("unique_keys", ROLLUP.key), *_rollup_ranges(ranges)],
                ROLLUP.key,
            ),
            Part(count_reconciliation(rollups, ROLLUP_KEY, start, end), reconciliation_expectations(), ROLLUP.key),
        ],
    )


def with_kpi_ranges(rows: pl.DataFrame, ranges: ResultRanges, limits: pl.DataFrame) -> pl.DataFrame:
    """`rows` (KPI rows) with kpi_min, kpi_max: each KPI's catalogue range unless checks.yaml
    overrides it, and for avg_<metric> the metric's range in the row's tenant's metrics catalogue.
    The catalogue supplies the default so that a KPI left out of checks.yaml is still judged."""
    configured = pl.DataFrame(
        [(name, low, high) for name, (low, high) in {**kpi_catalog.valid_ranges(), **ranges.kpi}.items()],
        schema={"kpi": pl.String(), "kpi_min": pl.Float64(), "kpi_max": pl.Float64()},
        orient="row",
    ).with_columns(_configured=pl.lit(True))
    averaged = with_catalog_limits(
        rows.with_columns(
            pl.when(pl.col("kpi").str.starts_with("avg_")).then(pl.col("kpi").str.strip_prefix("avg_")).alias("_avg")
        ),
        limits,
        metric="_avg",
    )
    return (
        averaged.join(configured, on="kpi", how="left", maintain_order="left")
        .with_columns(
            kpi_min=pl.when(pl.col("_configured")).then("kpi_min").otherwise("min_value"),
            kpi_max=pl.when(pl.col("_configured")).then("kpi_max").otherwise("max_value"),
        )
        .drop("_avg", "_configured", "min_value", "max_value", "canonical_unit")
    )


def kpi_outcomes(
    rows: pl.DataFrame, columns: pl.DataFrame, ranges: ResultRanges, limits: pl.DataFrame
) -> list[CheckOutcome]:
    """KPI rows of a period range: schema, unique key, each KPI within its range (the catalogue's or
    checks.yaml's: ratios 0..1 ...), avg_<metric> within the metric's range, durations (unit s)
    within their period."""
    frame = with_kpi_ranges(rows, ranges, limits).with_columns(
        pl.when(pl.col("unit") == "s")
        .then((pl.col("period_end") - pl.col("period_start")).dt.total_seconds().cast(pl.Float64))
        .alias("period_s")
    )
    frame = with_slack(frame, ["value", "kpi_max", "period_s"], ranges.tolerance)
    on_columns, on_rows = schema_expectations(KPI, rows.columns)
    r = "result_ranges"
    judged = [
        at_most(r, "kpi_min", "value__slack"),
        at_most(r, "value", "kpi_max__slack"),
        at_most(r, "value", "period_s__slack"),
    ]
    return judge(
        "kpis",
        RESULT_CHECKS_NO_BUCKETS,
        [
            Part(schema_frame(columns), on_columns),
            Part(frame, [*on_rows, unique("unique_keys", KPI.key), *judged], KPI.key),
        ],
    )


def anomaly_outcomes(rows: pl.DataFrame, columns: pl.DataFrame, ranges: ResultRanges) -> list[CheckOutcome]:
    """Anomalies of an hour range: schema, unique key (NULL sensor / metric equal, as in the
    table's NULLS NOT DISTINCT key), severity and confidence in range, a known severity label,
    windows that do not end before they start."""
    on_columns, on_rows = schema_expectations(ANOMALY, rows.columns)
    r = "result_ranges"
    judged = [
        between(r, "severity", ranges.anomaly_severity),
        between(r, "confidence", ranges.anomaly_confidence),
        Expect(
            r, "ExpectColumnValuesToBeInSet", {"column": "severity_label", "value_set": list(ranges.anomaly_labels)}
        ),
        at_most(r, "window_start__us", "window_end__us"),
    ]
    return judge(
        "reading_anomalies",
        RESULT_CHECKS_NO_BUCKETS,
        [
            Part(schema_frame(columns), on_columns),
            Part(
                with_epoch(rows, ["window_start", "window_end"]),
                [*on_rows, unique("unique_keys", ANOMALY.key), *judged],
                ANOMALY.key,
            ),
        ],
    )


def trend_outcomes(rows: pl.DataFrame, columns: pl.DataFrame) -> list[CheckOutcome]:
    """Trends of a range of window ends: schema, unique key, p-value and confidence in [0, 1], a
    known direction, a non-negative tie-corrected variance, and every point inside its window."""
    on_columns, on_rows = schema_expectations(TREND, rows.columns)
    r = "result_ranges"
    judged = [
        between(r, "p_value", (0, 1)),
        between(r, "confidence", (0, 1)),
        between(r, "mk_var_s", (0, None)),
        Expect(
            r,
            "ExpectColumnValuesToBeInSet",
            {"column": "direction", "value_set": ["increasing", "decreasing", "stable"]},
        ),
        at_most(r, "window_start__us", "first_time__us"),
        at_most(r, "first_time__us", "last_time__us"),
        at_most(r, "last_time__us", "window_end__us"),
    ]
    return judge(
        "series_trends",
        RESULT_CHECKS_NO_BUCKETS,
        [
            Part(schema_frame(columns), on_columns),
            Part(
                with_epoch(rows, ["window_start", "first_time", "last_time", "window_end"]),
                [*on_rows, unique("unique_keys", TREND.key), *judged],
                TREND.key,
            ),
        ],
    )


def forecast_outcomes(rows: pl.DataFrame, columns: pl.DataFrame) -> list[CheckOutcome]:
    """Forecasts of a range of issues: schema, unique key, every value inside its band and never
    negative (energy and demand), a band level in (0, 1), a known period and KPI, a horizon of 1 to
    31 days, and every target after its issue."""
    on_columns, on_rows = schema_expectations(FORECAST, rows.columns)
    r = "result_ranges"
    judged = [
        between(r, "lower", (0, None)),
        at_most(r, "lower", "value"),
        at_most(r, "value", "upper"),
        Expect(
            r,
            "ExpectColumnValuesToBeBetween",
            {"column": "level", "min_value": 0, "max_value": 1, "strict_min": True, "strict_max": True},
        ),
        between(r, "horizon_day", (1, 31)),
        Expect(r, "ExpectColumnValuesToBeInSet", {"column": "period", "value_set": ["hour", "day"]}),
        Expect(r, "ExpectColumnValuesToBeInSet", {"column": "kpi", "value_set": ["energy_kwh", "peak_demand_kw"]}),
        at_most(r, "issued_at__us", "target_start__us"),
        at_most(r, "target_start__us", "target_end__us"),
    ]
    return judge(
        "energy_forecasts",
        RESULT_CHECKS_NO_BUCKETS,
        [
            Part(schema_frame(columns), on_columns),
            Part(
                with_epoch(rows, ["issued_at", "target_start", "target_end"]),
                [*on_rows, unique("unique_keys", FORECAST.key), *judged],
                FORECAST.key,
            ),
        ],
    )


def baseline_outcomes(
    rows: pl.DataFrame, columns: pl.DataFrame, ranges: ResultRanges, *, min_samples: int, r2_min: float
) -> list[CheckOutcome]:
    """Energy baselines: schema, unique (machine, version) and at most one active model per
    machine; the active models' fit statistics in range, an accepted model meeting `r2_min`,
    trained on at least `min_samples` hours."""
    on_columns, on_rows = schema_expectations(BASELINE, rows.columns)
    active = rows.filter(pl.col("active"))
    accepted = active.filter(pl.col("accepted"))
    r = "result_ranges"
    judged = [
        between(r, "r2", ranges.baseline_r2),
        between(r, "rmse", (0, None)),
        between(r, "mae", (0, None)),
        between(r, "n", (min_samples, None)),
    ]
    index = [*MACHINE, "version"]
    return judge(
        "energy_baseline_models",
        RESULT_CHECKS_NO_BUCKETS,
        [
            Part(schema_frame(columns), on_columns),
            Part(rows, [*on_rows, unique("unique_keys", BASELINE.key)], index),
            Part(active, [unique("unique_keys", MACHINE), *judged], index),
            Part(accepted, [between(r, "r2", (r2_min, None))], index),
        ],
    )
