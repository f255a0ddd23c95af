"""Lab analytes as time series: the window aggregates of lab result values per tenant, factory,
station and analyte, so a quality engineer charts Moisture per hour as an engineer charts a
sensor's temperature.

The numbers are the sensor aggregates' own (`window_aggregates` with the lab series key, in
`canonical_order`): the same epoch-aligned buckets, sample stddev, linear-interpolated p50/p95
and first/last rules, so a lab bucket can be cross-checked against PostgreSQL's aggregates exactly
as a sensor bucket can. Only the series key differs: a lab result belongs to a station and an
analyte, not to a machine's sensor and metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl

from analytics_platform.transforms.window_aggregates import STAT_COLUMNS, TIME, canonical_order, window_aggregates

LAB_SERIES_KEY = ("tenant_id", "factory_id", "station_id", "analyte")
LAB_RESULT_SCHEMA: dict[str, pl.DataType] = {
    "time": TIME,
    **{name: pl.String() for name in LAB_SERIES_KEY},
    "value": pl.Float64(),
}
LAB_AGG_COLUMNS = ("bucket_start", "bucket_end", "window_s", *LAB_SERIES_KEY, *STAT_COLUMNS)


def lab_window_aggregates(
    results: pl.DataFrame,
    windows: Sequence[int],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pl.DataFrame:
    """Aggregates of the lab `results` (LAB_RESULT_SCHEMA) for every window, as LAB_AGG_COLUMNS rows.

    With `start`/`end`, only the buckets overlapping [start, end) come back; the caller passes every
    result of `covering_range(start, end, windows)` so those buckets are whole. The results are put
    in `canonical_order` here: a lab bucket's numbers never depend on the order results arrived in.
    """
    ordered = canonical_order(results.select(LAB_RESULT_SCHEMA.keys()).cast(LAB_RESULT_SCHEMA))
    aggregates = window_aggregates(ordered.lazy(), windows, start=start, end=end, series_key=LAB_SERIES_KEY)
    return aggregates.collect()
