"""Anomalies of one hour of sensor readings: the seasonal statistics of `transforms.seasonal`
(deviation, shift, noise, stuck: each series at its own cadence, against a robust profile of its
weekday × hour), production stoppages while running, and an Isolation Forest per series as a
second opinion.

Every detector returns ANOMALY_SCHEMA rows, so the asset can concatenate them and COPY them as
they are. Nothing here reads a clock or a database: the caller passes the hour's readings, the
trailing `analytics_agg` rows (`history`, one window size, normally 60 s), the not-running
intervals (`excluded`), the series' profiles and, for the forest, models it fitted earlier.

Conventions:
* Severity is one scale for every method, because the alert rules notify at severity ≥ 3: 2
  'warning', 3..5 'critical' (3 at the critical level, 4 at 1.5×, 5 at 2×). Severity 1 'info' is
  never produced here. Critical levels are calibrated per series (see `transforms.seasonal`).
* A reading is excluded when `start <= time < end` of an interval of its machine (`end` NULL =
  still open); a bucket is excluded when it overlaps one. Excluded rows are neither scored nor
  trained on, so a fault's wild values never widen the baseline; for the seasonal statistics the
  interval is lengthened by the settling time after the machine resumes.
* One row per anomalous sample and method family; consecutive rows of a series are one *event*
  (`analytics.anomaly_events()` in SQL groups rows at most 3 × `sample_s` apart).
* Output is unique on the table's key (machine, method, anomaly_type, time, sensor, metric).
"""

from __future__ import annotations

import functools
import importlib.metadata
import io
import json
import pickle
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import repeat
from multiprocessing import forkserver, get_context
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from analytics_platform.contracts.catalog import with_catalog_limits
from analytics_platform.transforms import seasonal as se
from analytics_platform.transforms.spec_quality import applicable_limits
from analytics_platform.transforms.window_aggregates import MACHINE_KEY, SERIES_KEY, TIME, bucket_expr, moment_aggs

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest

# scikit-learn is imported where a forest is fitted or loaded, not with this module: it costs ~2.6 s,
# and every Dagster run process and code server imports the anomaly assets (tests/unit/test_import_cost)
SKLEARN_VERSION = importlib.metadata.version("scikit-learn")
MACHINE = MACHINE_KEY
ANOMALY_SCHEMA: dict[str, pl.DataType] = {
    "time": TIME,
    "window_start": TIME,
    "window_end": TIME,
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "machine_id": pl.String(),
    "sensor_id": pl.String(),
    "metric": pl.String(),
    "anomaly_type": pl.String(),
    "method": pl.String(),
    "score": pl.Float64(),
    "severity": pl.Int16(),
    "severity_label": pl.String(),
    "confidence": pl.Float64(),
    "observed": pl.Float64(),
    "expected": pl.Float64(),
    "details": pl.String(),  # JSON object, always with "readings": [{"time", "value"}, ...]
    "sample_s": pl.Float64(),  # the series' sample spacing: rows closer than 2 samples are one event
}
ANOMALY_TYPES = {
    "power": "power",
    "energy": "power",
    "temp": "temperature",
    "outdoor_temp": "temperature",
    "pressure": "pressure",
    "outdoor_pressure": "pressure",
    "count_total": "production",
    "count_good": "production",
}
FEATURES = ("avg", "min", "max", "std", "d_avg")
MAX_READINGS = 10  # readings listed in details per anomaly
# series to fit before two spawned workers pay for themselves: each takes ~2 s to start (importing
# scikit-learn and Polars), a 50-tree forest on a day of minutes ~50 ms to fit
PARALLEL_FROM = 100
# forests a fit worker takes at a time: small (~0.3 s of a core), so that the two workers finish
# together; a quarter of a worker's share per chunk (63 of the plant's 500) left one worker fitting
# its last chunk after the other had none (500 forests beside 6 s of the caller's own work, three
# alternations under the lock: 13.9-14.9 s with 63 a chunk, 13.7-14.2 s with 8)
FIT_CHUNK = 8
# A standard deviation this small relative to the mean is floating-point noise of a constant series.
_RELATIVE_ZERO = 1e-12


def anomaly_type(metric: pl.Expr) -> pl.Expr:
    """The anomaly type of a metric: the family the operator filters by, else the metric itself."""
    return metric.replace_strict(ANOMALY_TYPES, default=metric, return_dtype=pl.String)


def severity(abs_z: pl.Expr, *, warning_sigma: float = 2.0, critical_sigma: float = 3.0) -> pl.Expr:
    """Severity 2..5 of |z| (NULL below `warning_sigma`); every critical is ≥ 3 so alerts fire."""
    _check_sigmas(warning_sigma, critical_sigma)
    return (
        pl.when(abs_z >= critical_sigma + 2)
        .then(5)
        .when(abs_z >= critical_sigma + 1)
        .then(4)
        .when(abs_z >= critical_sigma)
        .then(3)
        .when(abs_z >= warning_sigma)
        .then(2)
        .otherwise(None)
        .cast(pl.Int16)
    )


def severity_label(level: pl.Expr) -> pl.Expr:
    return (
        pl.when(level >= 3).then(pl.lit("critical")).when(level == 2).then(pl.lit("warning")).otherwise(pl.lit("info"))
    )


def _check_sigmas(warning_sigma: float, critical_sigma: float) -> None:
    if not 0 < warning_sigma <= critical_sigma:
        raise ValueError(f"need 0 < warning_sigma <= critical_sigma, got {warning_sigma}, {critical_sigma}")


def _strings(frame: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """Series keys as String: the asset may read Categorical, and joins need one dtype."""
    return frame.with_columns(pl.col(c).cast(pl.String) for c in columns if c in frame.columns)


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=ANOMALY_SCHEMA)


def _excluded(excluded: pl.DataFrame | None) -> pl.DataFrame:
    if excluded is None:
        return pl.DataFrame(schema={**{c: pl.String() for c in MACHINE}, "start": TIME, "end": TIME})
    return _strings(excluded, MACHINE).select(*MACHINE, pl.col("start").cast(TIME), pl.col("end").cast(TIME))


def drop_excluded(
    frame: pl.DataFrame, excluded: pl.DataFrame | None, start: str, end: str | None = None
) -> pl.DataFrame:
    """`frame` without the rows that fall in (`end` None: instant `start`) or overlap ([start, end))
    an excluded interval of their machine."""
    intervals = _excluded(excluded)
    if frame.is_empty() or intervals.is_empty():
        return frame
    indexed = frame.with_row_index("_row")
    before_end = pl.col("_ex_end").is_null() | (pl.col(start) < pl.col("_ex_end"))
    if end is None:
        overlaps = (pl.col(start) >= pl.col("_ex_start")) & before_end
    else:
        overlaps = (pl.col(end) > pl.col("_ex_start")) & before_end
    hit = (
        indexed.select("_row", *MACHINE, *([start] if end is None else [start, end]))
        .join(intervals.rename({"start": "_ex_start", "end": "_ex_end"}), on=list(MACHINE))
        .filter(overlaps)
        .select("_row")
        .unique()
    )
    return indexed.join(hit, on="_row", how="anti").drop("_row")


def _readings(readings: pl.DataFrame, excluded: pl.DataFrame | None) -> pl.DataFrame:
    frame = _strings(readings, SERIES_KEY).select(
        pl.col("time").cast(TIME), *SERIES_KEY, pl.col("value").cast(pl.Float64)
    )
    return drop_excluded(frame.filter(pl.col("value").is_finite()), excluded, "time")


def _history(history: pl.DataFrame, excluded: pl.DataFrame | None, bucket_s: int | None = None) -> pl.DataFrame:
    frame = _strings(history, SERIES_KEY).with_columns(
        pl.col("bucket_start").cast(TIME), pl.col("bucket_end").cast(TIME), pl.col("count_n").cast(pl.Int64)
    )
    if bucket_s is not None:  # only buckets of one size are comparable with the hour's buckets
        frame = frame.filter(pl.col("bucket_end") - pl.col("bucket_start") == pl.duration(seconds=bucket_s))
    return drop_excluded(frame.filter(pl.col("count_n") > 0), excluded, "bucket_start", "bucket_end")


def pooled_stats(history: pl.DataFrame, excluded: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per series: n (readings), mean and std (sample, of individual readings) from bucket
    aggregates, exactly: mean = Σsum/N, var = (Σ stddev²·(count−1) + Σ count·(avg−mean)²)/(N−1).

    The within-bucket and between-bucket parts are both needed: 60-s bucket means alone would
    understate the spread of single readings many times over. std is NULL when N < 2 or the spread
    is zero (to rounding), so no caller can divide by it.
    """
    frame = _history(history, excluded)
    n = pl.col("count_n").sum().over(SERIES_KEY)
    mean = pl.col("sum_v").sum().over(SERIES_KEY) / n
    stats = (
        frame.with_columns(_n=n, _mean=mean)
        .group_by(SERIES_KEY)
        .agg(
            n=pl.col("_n").first(),
            mean=pl.col("_mean").first(),
            within=(pl.col("stddev_v").fill_null(0.0).pow(2) * (pl.col("count_n") - 1)).sum(),
            between=(pl.col("count_n") * (pl.col("avg_v") - pl.col("_mean")).pow(2)).sum(),
        )
        .with_columns(
            std=pl.when(pl.col("n") > 1)
            .then(((pl.col("within") + pl.col("between")) / (pl.col("n") - 1)).sqrt())
            .otherwise(None)
        )
    )
    tiny = pl.col("std") <= _RELATIVE_ZERO * pl.max_horizontal(pl.lit(1.0), pl.col("mean").abs())
    return stats.select(
        *SERIES_KEY, "n", "mean", std=pl.when(tiny | ~pl.col("std").is_finite()).then(None).otherwise(pl.col("std"))
    ).sort(SERIES_KEY)


def bucket_readings(readings: pl.DataFrame, bucket_s: int = 60) -> pl.DataFrame:
    """The hour's readings as history-like rows (epoch-aligned buckets of `bucket_s`), so the
    hour is judged with exactly the aggregates the history was built from."""
    if bucket_s <= 0:
        raise ValueError(f"bucket_s must be a positive number of seconds, got {bucket_s}")
    return (
        readings.with_columns(bucket_start=bucket_expr(bucket_s))
        .group_by(*SERIES_KEY, "bucket_start")
        .agg(moment_aggs())
        .with_columns(bucket_end=pl.col("bucket_start") + pl.duration(seconds=bucket_s))
        .sort(*SERIES_KEY, "bucket_start")
    )


def bucket_features(frame: pl.DataFrame) -> pl.DataFrame:
    """Per bucket: avg, min, max, std (NULL → 0: one reading has no spread) and d_avg, the change
    of avg from the *adjacent* previous bucket, NULL when there is none (the hour's first bucket,
    after a gap or an excluded period). A NULL d_avg is imputed with the training mean, never 0:
    on a series that always moves, "no change" would itself look unusual.

    The same function builds training rows (from `history`) and scoring rows (from
    `bucket_readings`), so the forest sees identically defined features."""
    ordered = _strings(frame, SERIES_KEY).sort(*SERIES_KEY, "bucket_start")
    adjacent = pl.col("bucket_end").shift(1).over(SERIES_KEY) == pl.col("bucket_start")
    return ordered.select(
        *SERIES_KEY,
        pl.col("bucket_start").cast(TIME),
        pl.col("bucket_end").cast(TIME),
        avg=pl.col("avg_v"),
        min=pl.col("min_v"),
        max=pl.col("max_v"),
        std=pl.col("stddev_v").fill_null(0.0),
        d_avg=pl.when(adjacent).then(pl.col("avg_v") - pl.col("avg_v").shift(1).over(SERIES_KEY)),
    ).filter(
        pl.all_horizontal(pl.col(f).is_finite() for f in FEATURES if f != "d_avg")
        & (pl.col("d_avg").is_null() | pl.col("d_avg").is_finite())
    )


def _finish(frame: pl.DataFrame, stats: Sequence[str], optional: Sequence[str] = ()) -> pl.DataFrame:
    """ANOMALY_SCHEMA rows from `frame` (schema columns + `readings` list of structs + `stats`),
    with `details` = {"readings": [...], **stats} as JSON; the `optional` columns enter the details
    only where they are not null."""
    if frame.is_empty():
        return _empty()
    if "sample_s" not in frame.columns:
        frame = frame.with_columns(sample_s=pl.lit(None, pl.Float64))
    details = []
    for row in frame.select("readings", *stats, *optional).iter_rows(named=True):
        entry: dict[str, Any] = {
            "readings": [{"time": r["time"].isoformat(), "value": r["value"]} for r in row["readings"] or []]
        }
        for name in stats:
            value = row[name]
            entry[name] = value.isoformat() if isinstance(value, datetime) else value
        entry.update({name: row[name] for name in optional if row[name] is not None})
        details.append(json.dumps(entry, sort_keys=True))
    return (
        frame.with_columns(details=pl.Series(details, dtype=pl.String))
        .select(ANOMALY_SCHEMA.keys())
        .cast(ANOMALY_SCHEMA)
    )


def _reading_struct() -> pl.Expr:
    return pl.struct(pl.col("time"), pl.col("value"))


# ----- seasonal, robust, at the series' cadence ----------------------------------------------------

FAMILIES = {
    "deviation": ("deviation", "extreme"),
    # a confirmed level change (`seasonal.level_offsets`) is reported as a shift at its first re-based sample
    "shift": ("shift4", "shift16", se.LEVEL_CHANGE),
    "noise": ("noise",),
    "stuck": ("stuck",),
}
STATISTICAL = tuple(FAMILIES)
CONTEXT = timedelta(hours=24)  # history before the hour the seasonal statistics read
RECENT = timedelta(hours=1)  # the context tried first: where a series' tail nearly always starts


def settled(excluded: pl.DataFrame | None, settle: timedelta) -> pl.DataFrame | None:
    """The excluded intervals, each lengthened by `settle`: a machine that has just resumed is
    still warming up (or cooling down), and its first readings would read as a fault."""
    if excluded is None or not settle:
        return excluded
    return _excluded(excluded).with_columns(end=pl.col("end") + settle)


def _context(
    history: pl.DataFrame,
    hour: pl.DataFrame,
    past: Callable[[datetime, pl.DataFrame], pl.DataFrame],
    profiles: Sequence[se.Profile],
    *,
    start: datetime,
    options: se.SeasonalOptions,
    prune: bool = True,
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The samples `se.judge` judges the hour from: `hour` and the running samples of `history` before
    it (`past(since, frame)`) that a statistic of the hour can see; and the series whose offsets it
    computes (`judge`'s `rebased`; None: all).

    The context is a day before the hour (windows look back 16 samples; a day bounds the work whatever
    history the caller read, and is the same live and in a backfill). Judging needs only each series'
    tail of it (`se.context_tail`), which nearly always starts in the last hour: the series whose tail
    does start there are judged from that hour, the others from the whole day (the same rows either
    way, and a twentieth of the work per hour). With re-basing on, a series' offsets look `rebase_reach`
    further back; only the series `se.rebase_candidates` finds in that span (nearly none) get it, the
    others could not be re-based by any of it and are judged from their short tail (the same rows out,
    bit for bit; `prune=False` gives every series the long context, the reference the tests hold it to)."""
    keys = list(SERIES_KEY)
    rebase = se.rebase_reach(options.rebase_after)

    def judged_from(reach: timedelta, series: pl.DataFrame | None) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The context for `series` (all when None) with the offsets' `reach` before the windows' tail,
        and the series of the hour whose tail starts before the last hour (they get the whole day)."""
        mine = hour if series is None else hour.join(series, on=keys, how="semi")
        before = history if series is None else _strings(history, SERIES_KEY).join(series, on=keys, how="semi")
        recent = past(max(start - RECENT - reach, start - CONTEXT), before)
        short = se.tail_inside(pl.concat([recent, mine]).sort("bucket_start"), start, reach)
        whole = mine.select(SERIES_KEY).unique().join(short, on=keys, how="anti")
        if whole.is_empty():
            return pl.concat([recent, mine]), whole
        day = past(start - CONTEXT, _strings(before, SERIES_KEY).join(whole, on=keys, how="semi"))
        return pl.concat([recent.join(short, on=keys, how="semi"), day, mine]), whole

    if rebase <= timedelta(0) or not prune:
        return judged_from(rebase, None)[0], None
    samples, whole = judged_from(timedelta(0), None)
    # the rows the offsets of a series with a short tail could see: its unfenced aggregates from `rebase`
    # before the last hour (fencing, and dropping other bucket sizes and empty buckets, only takes rows
    # away, and a subset of them re-bases nothing either); a series whose tail starts before the last
    # hour (`whole`) is given the long context as before
    since = pl.col("bucket_start").cast(TIME)
    columns = [*SERIES_KEY, "bucket_start", "bucket_end", "avg_v"]
    span = history.lazy().filter((since >= max(start - RECENT - rebase, start - CONTEXT)) & (since < start))
    span = span.select(columns).collect().cast(hour.select(columns).schema)
    found = se.rebase_candidates(pl.concat([span, hour.select(columns)]), profiles, options.rebase_after, options)
    wanted = pl.concat([whole, found]).unique()
    if wanted.is_empty():
        return samples, wanted
    return pl.concat([samples.join(wanted, on=keys, how="anti"), judged_from(rebase, wanted)[0]]), wanted


def zone_groups(zones: Mapping[str, str] | None, tenants: Iterable[str], default: str) -> list[tuple[str, list[str]]]:
    """`tenants` by the time zone their hours of day and weekdays are profiled in (`zones`: tenant ->
    IANA zone; a tenant not in it: `default`), each zone once, in order."""
    out: dict[str, list[str]] = {}
    for tenant in sorted(set(tenants)):
        out.setdefault((zones or {}).get(tenant, default), []).append(tenant)
    return sorted(out.items())


def _of_tenants(frame: pl.DataFrame | None, tenants: Sequence[str]) -> pl.DataFrame | None:
    return None if frame is None else frame.filter(pl.col("tenant_id").cast(pl.String).is_in(list(tenants)))


def seasonal_anomalies(
    readings: pl.DataFrame,
    history: pl.DataFrame,
    profiles: Sequence[se.Profile],
    excluded: pl.DataFrame | None = None,
    *,
    start: datetime,
    options: se.SeasonalOptions = se.SeasonalOptions(),
    zones: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """The hour's samples (its readings in `options.bucket_s` buckets) that a statistic of
    `transforms.seasonal` finds unusual for their series, one row per sample and method family
    (deviation, shift, noise, stuck) at the family's worst level.

    `history` supplies the samples before `start` (the rolling statistics look up to 16 samples
    back, across the hour boundary, so an hour is judged the same whatever ran before it);
    `excluded` intervals (machine not running), lengthened by `options.settle`, are neither
    judged nor part of any window. Series whose profile is missing or 'learning' are skipped.

    score = statistic / its critical level (1 = just critical); confidence = min(1, score);
    observed = the sample's mean, or its furthest reading when that is what stood out; expected =
    the profile's expectation, plus the offset of a re-based level (`seasonal.level_offsets`, in
    details as `level_offset`; its first sample is a `shift` warning, statistic `level_change`);
    `time` = the sample's reading furthest from it, the window its bucket; details name the
    statistic, its value and levels, the profile's stage and the sample spacing (`sample_s`, which
    also groups rows into events).

    `zones` (tenant -> IANA zone): a tenant's samples are judged in its plant's clock, the zone its
    profiles were learned in (`options.timezone` for a tenant not in it), so a plant's 06:00 start-up
    stays at its hour of day across its own DST change, whatever the other tenants' clocks."""
    if zones:
        groups = zone_groups(zones, readings["tenant_id"].cast(pl.String).unique().to_list(), options.timezone)
        if [zone for zone, _ in groups] != [options.timezone]:
            parts = [
                seasonal_anomalies(
                    _of_tenants(readings, tenants),
                    _of_tenants(history, tenants),
                    [p for p in profiles if p.key[0] in tenants],
                    _of_tenants(excluded, tenants),
                    start=start,
                    options=replace(options, timezone=zone),
                )
                for zone, tenants in groups
            ]
            return pl.concat(parts) if parts else _empty()
    fenced = settled(excluded, options.settle)
    live = _readings(readings, fenced).filter(pl.col("time") >= start)
    if live.is_empty() or not profiles:
        return _empty()
    columns = [*SERIES_KEY, *se.SAMPLE_COLUMNS]
    hour = bucket_readings(live, options.bucket_s).select(columns)

    def past(since: datetime, before: pl.DataFrame) -> pl.DataFrame:
        """The samples of `before` in [since, start), running (what `_history` keeps is row by row,
        so the time filter may come first: a day of buckets costs more to fence than to judge)."""
        bucket_start = pl.col("bucket_start").cast(TIME)
        rows = _history(before.filter((bucket_start < start) & (bucket_start >= since)), fenced, options.bucket_s)
        return _strings(rows, SERIES_KEY).select(columns).cast(hour.schema)

    samples, rebased = _context(history, hour, past, profiles, start=start, options=options)
    stats = se.judge(samples, profiles, start, options, rebased=rebased)
    if stats.is_empty():
        return _empty()
    meta = pl.DataFrame(
        [(*p.key, p.stage, p.sample_s) for p in profiles if p.judged],
        schema={**{c: pl.String() for c in SERIES_KEY}, "stage": pl.String(), "sample_s": pl.Float64()},
        orient="row",
    )
    stats = stats.join(meta, on=list(SERIES_KEY))
    parts = []
    for method, tests in FAMILIES.items():
        level = pl.max_horizontal(pl.col(f"l_{t}") for t in tests)
        ratio = pl.concat_list((pl.col(t) / pl.col(f"c_{t}")).fill_null(-1.0).fill_nan(-1.0).alias(t) for t in tests)
        picked = stats.filter(level >= 2).with_columns(
            level=level.cast(pl.Int16), _worst=ratio.list.arg_max(), score=ratio.list.max()
        )
        if picked.is_empty():
            continue
        names = pl.lit(list(tests), pl.List(pl.String)).list.get(pl.col("_worst"))
        parts.append(
            picked.with_columns(method=pl.lit(method), statistic=names).with_columns(
                value=pl.coalesce(*(pl.when(pl.col("statistic") == t).then(pl.col(t)) for t in tests)),
                warning_at=pl.coalesce(*(pl.when(pl.col("statistic") == t).then(pl.col(f"w_{t}")) for t in tests)),
                critical_at=pl.coalesce(*(pl.when(pl.col("statistic") == t).then(pl.col(f"c_{t}")) for t in tests)),
            )
        )
    if not parts:
        return _empty()
    flagged = pl.concat(parts, how="diagonal_relaxed")
    key = [*SERIES_KEY, "bucket_start"]
    ranked = (
        live.with_columns(bucket_start=bucket_expr(options.bucket_s))
        .join(flagged.select(*key, "expected").unique(key), on=key)
        .with_columns(dev=(pl.col("value") - pl.col("expected")).abs())
        .sort(*key, "dev", "time", descending=[False] * 6 + [True, False])
        .group_by(key, maintain_order=True)
        .agg(
            time=pl.col("time").first(),
            furthest=pl.col("value").first(),
            readings=_reading_struct().head(MAX_READINGS).sort_by(pl.col("time").head(MAX_READINGS)),
        )
    )
    rows = flagged.join(ranked, on=key, how="left").with_columns(
        time=pl.coalesce("time", "bucket_start"),
        window_start=pl.col("bucket_start"),
        window_end=pl.col("bucket_end"),
        anomaly_type=anomaly_type(pl.col("metric")),
        severity=pl.col("level"),
        severity_label=severity_label(pl.col("level")),
        confidence=pl.col("score").clip(0.0, 1.0),
        observed=pl.when(pl.col("statistic") == "extreme").then(pl.col("furthest")).otherwise(pl.col("avg_v")),
        level_offset=pl.when(pl.col("offset") != 0.0).then(pl.col("offset")),
    )
    return _finish(rows, ["statistic", "value", "warning_at", "critical_at", "stage"], optional=["level_offset"])


# ----- limits: the catalogue's plausible range and the spec limits --------------------------------

LIMIT_METHODS = ("range", "spec")  # outside the metrics catalogue's plausible range / a metric's spec limits
LIMIT_SEVERITY = {"range": 4, "spec": 3}  # an impossible value is a broken sensor or a wild process: both page
# every method an anomaly row names (the seasonal statistics, the forest's second opinion, stoppage,
# the energy baseline's deviation, the limits): what a detection request may choose among
METHODS = (*STATISTICAL, "isolation_forest", "stoppage", "baseline", *LIMIT_METHODS)


def limit_anomalies(
    readings: pl.DataFrame, catalog: pl.DataFrame, spec_limits: pl.DataFrame, *, bucket_s: int = 60
) -> pl.DataFrame:
    """One row per reading outside its metric's plausible range (`catalog`, contracts.catalog.LIMITS_SCHEMA:
    the tenant's own entry, else the `*` default, as `with_catalog_limits` resolves it for the data
    contracts; method `range`, severity 4) or outside the metric's spec limits
    (`spec_limits` rows of scope `metric`, resolved as `spec_quality.applicable_limits` does:
    the factory's own before `*`, the latest `valid_from`; method `spec`, severity 3).

    These rules need no fitted model, so the live judge (every few seconds, on the rows just
    committed) and the hourly asset run this same function and produce the same keys: the live
    row is confirmed by the hour, never duplicated. No run-state exclusion: an impossible value is
    wrong whether the machine runs or not. The window is the reading's `bucket_s` sample, so the
    row starts the same anomaly event as a seasonal row of the same sample would; score = the
    distance beyond the limit over the limit's width (or its size when one-sided)."""
    frame = _strings(readings, SERIES_KEY).select(
        pl.col("time").cast(TIME), *SERIES_KEY, pl.col("value").cast(pl.Float64)
    )
    frame = frame.filter(pl.col("value").is_finite())
    if frame.is_empty():
        return _empty()
    ranged = with_catalog_limits(frame, catalog).select(
        *frame.columns, lower_limit="min_value", upper_limit="max_value"
    )
    spec = applicable_limits(frame, spec_limits, "metric", "metric").drop("target")
    parts = []
    for method, part in (("range", ranged), ("spec", spec)):
        low = pl.col("lower_limit").is_not_null() & (pl.col("value") < pl.col("lower_limit"))
        high = pl.col("upper_limit").is_not_null() & (pl.col("value") > pl.col("upper_limit"))
        out = part.filter(low | high)
        if out.is_empty():
            continue
        limit = pl.when(low).then(pl.col("lower_limit")).otherwise(pl.col("upper_limit"))
        width = (
            pl.when(pl.col("lower_limit").is_not_null() & pl.col("upper_limit").is_not_null())
            .then(pl.col("upper_limit") - pl.col("lower_limit"))
            .otherwise(limit.abs())
        )
        parts.append(
            out.with_columns(
                method=pl.lit(method),
                bound=pl.when(low).then(pl.lit("lower")).otherwise(pl.lit("upper")),
                limit=limit,
                score=1.0 + (pl.col("value") - limit).abs() / pl.when(width > 0).then(width).otherwise(1.0),
                expected=limit,
            )
        )
    if not parts:
        return _empty()
    rows = (
        pl.concat(parts, how="diagonal_relaxed")
        .with_columns(
            window_start=bucket_expr(bucket_s),
            anomaly_type=anomaly_type(pl.col("metric")),
            severity=pl.lit(None, pl.Int16),
            observed=pl.col("value"),
            confidence=pl.lit(1.0),
            sample_s=pl.lit(float(bucket_s)),
            readings=pl.concat_list(_reading_struct()),
        )
        .with_columns(
            window_end=pl.col("window_start") + pl.duration(seconds=bucket_s),
            severity=pl.col("method").replace_strict(LIMIT_SEVERITY, return_dtype=pl.Int16),
        )
        .with_columns(severity_label=severity_label(pl.col("severity")))
    )
    return sort_anomalies(_finish(rows, ["bound", "lower_limit", "upper_limit"]))


# ----- stoppage ----------------------------------------------------------------------------------


def stoppage_anomalies(
    counters: pl.DataFrame,
    running: pl.DataFrame,
    *,
    min_minutes: float = 10.0,
) -> pl.DataFrame:
    """Stretches of at least `min_minutes` inside a 'running' interval with no positive count_total
    increment: the machine says it runs but produces nothing.

    An increment at t counts what was produced since the previous counter reading, so production
    resumed only after the reading before the next positive one: the stop is [last positive
    increment (or the interval's start), next positive increment − the machine's median reading
    interval) — the median rather than the previous row's time, so a counter that stays silent
    while nothing changes and one that reports zeros give the same stop. A stop that runs to the
    interval's end ends there. Machines with no counter reading at all are skipped.

    Severity 3 'critical' from 3·min_minutes on, else 2 'warning'; score = minutes stopped;
    observed = 0 produced; expected = the machine's production rate over its running time in the
    hour × the stop's length (NULL when it produced nothing at all). The caller clips `running` to
    the hour, so a stop across the hour boundary is judged in two parts."""
    counts = _strings(counters, MACHINE).select(
        pl.col("time").cast(TIME), *MACHINE, pl.col("increment").cast(pl.Float64)
    )
    runs = _strings(running, MACHINE).select(*MACHINE, pl.col("start").cast(TIME), pl.col("end").cast(TIME))
    if runs.is_empty():
        return _empty()
    gaps, runs, inside = _stops(counts, runs, min_minutes)
    if gaps.is_empty():
        return _empty()
    stops = _with_rate_and_readings(gaps, runs, inside, counts)
    level = pl.when(pl.col("minutes") >= 3 * min_minutes).then(3).otherwise(2).cast(pl.Int16)
    return _finish(
        stops.with_columns(
            window_start=pl.col("time"),
            window_end=pl.col("stop_end"),
            sensor_id=pl.lit(None, pl.String),
            metric=pl.lit("count_total"),
            anomaly_type=pl.lit("production"),
            method=pl.lit("stoppage"),
            score=pl.col("minutes"),
            severity=level,
            severity_label=severity_label(level),
            confidence=pl.lit(1.0),
            observed=pl.lit(0.0),
            expected=pl.col("per_minute") * pl.col("minutes"),
            running_start=pl.col("start"),
            running_end=pl.col("end"),
        ),
        ["minutes", "per_minute", "running_start", "running_end"],
    )


def _stops(
    counts: pl.DataFrame, runs: pl.DataFrame, min_minutes: float
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The stops of at least `min_minutes` (per run: time, stop_end, next_time, minutes, the run and
    the machine's median reading `period`), the runs of machines with counter readings (numbered
    `_run`), and the counter readings inside them."""
    period = (
        counts.sort(*MACHINE, "time")
        .with_columns(gap=pl.col("time").diff().over(MACHINE))
        .group_by(MACHINE)
        .agg(period=pl.col("gap").drop_nulls().median())
    )
    # A machine without a single counter reading in the hour has a dead counter, not a stop (and
    # the silence is the device-health check's to report).
    runs = runs.join(period.select(MACHINE), on=list(MACHINE), how="semi").with_row_index("_run")
    inside = counts.join(runs, on=list(MACHINE)).filter(
        (pl.col("time") >= pl.col("start")) & (pl.col("time") <= pl.col("end"))
    )
    positive = inside.filter(pl.col("increment") > 0).select("_run", "time")
    # Boundaries of each run: its start, every positive increment, its end; a stop lies between two.
    marks = pl.concat(
        [
            runs.select("_run", time=pl.col("start"), kind=pl.lit("start")),
            positive.with_columns(kind=pl.lit("count")),
            runs.select("_run", time=pl.col("end"), kind=pl.lit("end")),
        ]
    ).sort("_run", "time", pl.col("kind").replace_strict({"start": 0, "count": 1, "end": 2}, return_dtype=pl.Int8))
    gaps = (
        marks.with_columns(
            next_time=pl.col("time").shift(-1).over("_run"), next_kind=pl.col("kind").shift(-1).over("_run")
        )
        .filter(pl.col("next_time").is_not_null() & (pl.col("kind") != "end"))
        .join(runs, on="_run")
        .join(period, on=list(MACHINE), how="left")
        .with_columns(
            stop_end=pl.when(pl.col("next_kind") == "count")
            .then(pl.col("next_time") - pl.col("period").fill_null(pl.duration(seconds=0)))
            .otherwise(pl.col("next_time"))
        )
        .with_columns(minutes=(pl.col("stop_end") - pl.col("time")).dt.total_microseconds() / 60e6)
        .filter(pl.col("minutes") >= min_minutes)
    )
    return gaps, runs, inside


def _with_rate_and_readings(
    gaps: pl.DataFrame, runs: pl.DataFrame, inside: pl.DataFrame, counts: pl.DataFrame
) -> pl.DataFrame:
    """Each stop once (overlapping running rows give it twice) with the machine's production rate
    over its running time (`per_minute`, NULL when it produced nothing) and the counter readings
    from the stop's start to the increment that ended it (at most MAX_READINGS)."""
    run_minutes = (
        runs.select(*MACHINE, minutes=(pl.col("end") - pl.col("start")).dt.total_microseconds() / 60e6)
        .group_by(MACHINE)
        .agg(pl.col("minutes").sum())
    )
    rate = (
        inside.group_by(MACHINE)
        .agg(produced=pl.col("increment").clip(lower_bound=0).sum())
        .join(run_minutes, on=list(MACHINE))
        .select(*MACHINE, per_minute=pl.when(pl.col("produced") > 0).then(pl.col("produced") / pl.col("minutes")))
    )
    listed = (
        gaps.select(*MACHINE, "time", "stop_end", "next_time")
        .join(counts.rename({"time": "at"}), on=list(MACHINE))
        .filter((pl.col("at") >= pl.col("time")) & (pl.col("at") <= pl.col("next_time")))
        .sort(*MACHINE, "time", "at")
        .group_by(*MACHINE, "time", maintain_order=True)
        .head(MAX_READINGS)
        .group_by(*MACHINE, "time", maintain_order=True)
        .agg(readings=pl.struct(time=pl.col("at"), value=pl.col("increment")))
    )
    return (
        gaps.join(rate, on=list(MACHINE), how="left")
        .join(listed, on=[*MACHINE, "time"], how="left")
        .sort(*MACHINE, "time")
        .unique([*MACHINE, "time"], keep="first", maintain_order=True)  # overlapping running rows
    )


# ----- Isolation Forest --------------------------------------------------------------------------


@dataclass
class FittedForest:
    """One series' Isolation Forest with what is needed to use and audit it later.

    `threshold` is the `score_samples` cut-off at the `contamination` quantile of the training
    buckets (sklearn's `offset_`): a bucket scoring below it is unusual. `reading_mean` /
    `reading_std` are the pooled statistics of the individual training readings, used to decide
    whether an unusual bucket is also *extreme* (see `isolation_forest_anomalies`).
    """

    tenant_id: str
    factory_id: str
    machine_id: str
    sensor_id: str
    metric: str
    model: IsolationForest
    features: tuple[str, ...]
    bucket_s: int
    trained_from: datetime
    trained_to: datetime
    n_samples: int
    contamination: float
    threshold: float
    feature_mean: dict[str, float]
    feature_std: dict[str, float]
    reading_mean: float
    reading_std: float | None
    n_readings: int
    sklearn_version: str = field(default=SKLEARN_VERSION)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.tenant_id, self.factory_id, self.machine_id, self.sensor_id, self.metric)

    def to_bytes(self) -> bytes:
        """Compressed pickle for a bytea column. zlib level 1 shrinks a 100-tree forest from ~1.6 MB
        to ~0.47 MB in ~10 ms (level 6 or lzma save little more and cost 2–6×). Only load bytes
        this platform wrote: unpickling runs code.

        The pickle is written without its memo (`Pickler.fast`): each object by value, however the
        objects are shared in memory. A pickle's memo follows object identity, and identity depends
        on where the forest comes from: a freshly fitted forest's trees share one numpy node dtype
        object, a forest that came back from a worker process (or the database) has one per tree, so
        the same forest was stored as different bytes by the live path (fitted here) and a backfill
        (fitted by the workers). Without the memo the bytes are a function of the values alone.
        Nothing in a FittedForest refers to itself (the pickler raises if something ever does)."""
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.fast = True
        pickler.dump(self)
        return zlib.compress(buffer.getvalue(), 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> FittedForest:
        """The model `to_bytes` stored; compare `sklearn_version` with the running one to decide
        whether to refit (sklearn warns when they differ)."""
        loaded = pickle.loads(zlib.decompress(data))
        if not isinstance(loaded, cls):
            raise TypeError(f"expected a pickled {cls.__name__}, got {type(loaded).__name__}")
        return loaded


@dataclass(frozen=True)
class PackedForest:
    """A FittedForest already packed (`FittedForest.to_bytes`) by the process that fitted it, with
    the fields its stored row keeps beside the bytes. A run fitting the plant's forests stores all of
    them but scores only the few its statistics flag: the parent no longer unpickles every forest
    the workers send back only to pickle and compress it again, one after another (~4 s of a
    day's first hour at 500 forests); `unpack` gives the forest when it is scored."""

    tenant_id: str
    factory_id: str
    machine_id: str
    sensor_id: str
    metric: str
    bucket_s: int
    trained_from: datetime
    trained_to: datetime
    n_samples: int
    contamination: float
    threshold: float
    sklearn_version: str
    data: bytes

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.tenant_id, self.factory_id, self.machine_id, self.sensor_id, self.metric)

    def to_bytes(self) -> bytes:
        return self.data

    def unpack(self) -> FittedForest:
        return FittedForest.from_bytes(self.data)

    @classmethod
    def of(cls, forest: FittedForest) -> PackedForest:
        return cls(
            *forest.key,
            bucket_s=forest.bucket_s,
            trained_from=forest.trained_from,
            trained_to=forest.trained_to,
            n_samples=forest.n_samples,
            contamination=forest.contamination,
            threshold=forest.threshold,
            sklearn_version=forest.sklearn_version,
            data=forest.to_bytes(),
        )


def fit_isolation_forests(
    history: pl.DataFrame, excluded: pl.DataFrame | None = None, **options: Any
) -> list[FittedForest] | list[PackedForest]:
    """`start_isolation_forests` (same keyword options), waited for."""
    return start_isolation_forests(history, excluded, **options)()


def start_isolation_forests(
    history: pl.DataFrame,
    excluded: pl.DataFrame | None = None,
    *,
    bucket_s: int = 60,
    contamination: float = 0.01,
    n_estimators: int = 100,
    min_buckets: int = 120,
    random_state: int = 0,
    trained_to: datetime | None = None,
    workers: int = 1,
    parallel_from: int = PARALLEL_FROM,
    pack: bool = False,
) -> Callable[[], list[FittedForest] | list[PackedForest]]:
    """One IsolationForest per series with at least `min_buckets` usable `bucket_s` buckets
    (excluded ones dropped), `trained_to` the end of the training window (default: the last bucket's
    end; the asset passes the window's end, which is how it finds the model again).

    Each forest is fitted with n_jobs=1 (at ~1440 buckets a forest's trees are too quick for
    joblib's start-up to pay); with `workers` > 1 and at least `parallel_from` series, the series are
    shared out over that many processes instead (forked from a server that preloads this module).
    Every forest gets the same `random_state` and its own
    rows only, so the forests are the same whatever the number of workers or the order they finish in.

    Returns a function that waits for the forests and returns them (call it exactly once, also when
    what the caller does meanwhile fails: it shuts the workers down): the caller works on while two
    workers fit, which in the day's first hour is most of the hour. With `pack`, each forest comes
    as a PackedForest, packed where it was fitted (a worker, or this process: the same bytes)."""
    if not 0 < contamination < 0.5:
        raise ValueError(f"contamination must be in (0, 0.5), got {contamination}")
    buckets = _history(history, excluded, bucket_s)
    if buckets.is_empty():
        return list
    features = bucket_features(buckets)
    stats = {tuple(row[:5]): row[5:] for row in pooled_stats(buckets).iter_rows()}
    series = []
    for key, group in sorted(features.partition_by(SERIES_KEY, as_dict=True).items()):
        if group.height < min_buckets:
            continue
        matrix = (
            group.select(pl.col(FEATURES).fill_null(pl.col(FEATURES).mean()).fill_null(0.0))
            .to_numpy()
            .astype(np.float64)
        )
        n_readings, reading_mean, reading_std = stats[key]
        about = {
            **dict(zip(("tenant_id", "factory_id", "machine_id", "sensor_id", "metric"), key, strict=True)),
            "features": FEATURES,
            "bucket_s": bucket_s,
            "trained_from": group["bucket_start"].min(),
            "trained_to": trained_to or group["bucket_end"].max(),
            "n_samples": group.height,
            "contamination": contamination,
            "reading_mean": reading_mean,
            "reading_std": reading_std,
            "n_readings": n_readings,
        }
        series.append((matrix, about))
    params = {"n_estimators": n_estimators, "contamination": contamination, "random_state": random_state}
    if workers > 1 and len(series) >= parallel_from:
        # a pool of this call's own, shut down when done (a reusable one, joblib's loky, keeps idle
        # workers for minutes, and a process exiting waits for its children), forked from a server
        # that imported scikit-learn once: spawned workers would each import the program's main
        # module again (seconds, with Dagster or a bench behind it), and a plain fork of this
        # process would copy Polars' thread pool mid-flight
        count = min(workers, len(series))
        pool = ProcessPoolExecutor(max_workers=count, mp_context=_fit_context(), initializer=_fit_worker_started)
        try:
            pending = pool.map(
                _fit_series,
                *zip(*series, strict=True),
                repeat(params),
                repeat(pack),
                chunksize=FIT_CHUNK,
            )
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise

        def finish() -> list[FittedForest] | list[PackedForest]:
            with pool:
                return list(pending)

        return finish
    fitted = [_fit_series(matrix, about, params, pack) for matrix, about in series]
    return lambda: fitted


def _fit_series(
    matrix: np.ndarray, about: dict[str, Any], params: dict[str, Any], pack: bool
) -> FittedForest | PackedForest:
    """One series' FittedForest (module level, so a worker process can run it): its forest with the
    statistics of its training buckets, packed when asked (where it was fitted)."""
    model = _fit_forest(matrix, params)
    fitted = FittedForest(
        **about,
        model=model,
        threshold=float(model.offset_),
        feature_mean=dict(zip(FEATURES, matrix.mean(axis=0).tolist(), strict=True)),
        feature_std=dict(zip(FEATURES, matrix.std(axis=0, ddof=1).tolist(), strict=True)),
    )
    return PackedForest.of(fitted) if pack else fitted


def warm_fit_workers(series: int, workers: int, parallel_from: int = PARALLEL_FROM) -> None:
    """Start the forest workers' server now when `series` forests are about to be fitted on
    `workers` processes (`start_isolation_forests`' rule): it imports scikit-learn (~1.3 s), which
    the first worker otherwise waited for. Started early, that happens while the caller reads and
    prepares the training rows. Nothing is fitted differently; a server not used stays idle."""
    if workers > 1 and series >= parallel_from:
        _fit_context()
        forkserver.ensure_running()


def _fit_worker_started() -> None:
    """A fit worker remembers each scikit-learn estimator class's parameter names. scikit-learn reads
    them from the constructor's signature (`inspect.signature`) on every `get_params`, which it calls
    4 times a tree (cloning the base tree, setting its random state): ~13 % of a 50-tree forest's CPU
    (47 -> 41 ms a forest, CPU time alternated in one process), which is most of the day's first
    hour's wall time. The names are a function of the class alone, so what is fitted does not
    change (the same stored bytes as a forest fitted in the caller's process, which keeps
    scikit-learn as it is: `test_a_forest_is_stored_as_the_same_bytes_whichever_path_fitted_it`).
    Only in the worker processes this module's pool starts; skipped if scikit-learn ever defines the
    method differently."""
    from sklearn.base import BaseEstimator

    names = BaseEstimator.__dict__.get("_get_param_names")
    if isinstance(names, classmethod):
        known = functools.cache(names.__func__)
        # a new list each call, as scikit-learn's own: a caller may change it
        BaseEstimator._get_param_names = classmethod(lambda cls: list(known(cls)))


def _fit_context() -> BaseContext:
    """The forkserver context, its server preloading only this module (not the main module)."""
    context = get_context("forkserver")
    context.set_forkserver_preload([__name__, "sklearn.ensemble"])
    return context


def _fit_forest(matrix: np.ndarray, params: dict[str, Any]) -> IsolationForest:
    """One series' forest (module level, so a worker process can run it).

    scikit-learn validates the parameters of the forest and of each of its trees on every fit
    (about a sixth of a 50-tree forest's ~1 ms a tree, nearly all of it Python): these are fixed
    here and valid, so that is skipped. What is fitted does not change: the same pickled bytes."""
    from sklearn import config_context
    from sklearn.ensemble import IsolationForest

    with config_context(skip_parameter_validation=True):
        return IsolationForest(max_samples="auto", n_jobs=1, **params).fit(matrix)


def isolation_forest_anomalies(
    models: Sequence[FittedForest],
    readings: pl.DataFrame,
    excluded: pl.DataFrame | None = None,
    *,
    history: pl.DataFrame | None = None,
    warning_sigma: float = 2.0,
    critical_sigma: float = 3.0,
    only: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The hour's buckets (each model's `bucket_s`) that score below their model's threshold.

    With `history`, the hour's first bucket takes its change (d_avg) from the last history bucket
    when adjacent, exactly as in training; otherwise it is imputed. With `only` (series key +
    `bucket_start`), just those buckets are scored: a bucket's score depends on its own features
    alone, so the rows returned are exactly the full result's rows for those buckets.

    The forest says "unusual" but its score has no σ scale, so a flagged bucket is 2 'warning';
    it is 'critical' (3..5, the z scale) only when its most extreme reading is also at least
    `critical_sigma` pooled standard deviations of the *training readings* from their mean. The
    individual-reading statistics were chosen over the per-bucket max/min: they are what the
    operator reads as "σ", and they make forest and z-score agree on what critical means. So a
    series staying inside its usual ±critical_sigma never gets more than a warning from the forest.

    score = −score_samples, the paper's anomaly score in (0, 1] (higher = more isolated);
    confidence = 0.5 + 0.5·(threshold − s)/(threshold + 1), s = score_samples: a bucket just at the
    threshold is a coin flip, one at the most isolated possible score (s = −1) is certain.
    observed = the most extreme reading, expected = the training mean; the readings listed are the
    bucket's three furthest from that mean."""
    _check_sigmas(warning_sigma, critical_sigma)
    if not models:
        return _empty()
    live = _readings(readings, excluded)
    if live.is_empty():
        return _empty()
    buckets = _flagged_buckets(models, live, excluded, history, only)
    if buckets is None:
        return _empty()
    scored = _furthest_readings(live, buckets).with_columns(
        z=pl.when(pl.col("training_std") > 0).then(
            (pl.col("observed") - pl.col("training_mean")) / pl.col("training_std")
        )
    )
    by_z = severity(pl.col("z").abs(), warning_sigma=warning_sigma, critical_sigma=critical_sigma)
    level = pl.when(pl.col("z").abs() >= critical_sigma).then(by_z).otherwise(2).cast(pl.Int16)
    return _finish(
        scored.with_columns(
            time=pl.col("bucket_start"),
            window_start=pl.col("bucket_start"),
            window_end=pl.col("bucket_end"),
            anomaly_type=anomaly_type(pl.col("metric")),
            method=pl.lit("isolation_forest"),
            score=-pl.col("score_samples"),
            severity=level,
            severity_label=severity_label(level),
            confidence=(0.5 + 0.5 * (pl.col("threshold") - pl.col("score_samples")) / (pl.col("threshold") + 1.0)).clip(
                0.0, 1.0
            ),
            expected=pl.col("training_mean"),
        ),
        ["score_samples", "threshold", "z", "training_mean", "training_std"],
    )


def _flagged_buckets(
    models: Sequence[FittedForest],
    live: pl.DataFrame,
    excluded: pl.DataFrame | None,
    history: pl.DataFrame | None,
    only: pl.DataFrame | None = None,
) -> pl.DataFrame | None:
    """The buckets of `live` (of `only`, when given) its series' forest scores below the threshold,
    with the score and the model's training statistics; None when there are none. Each model
    scores its buckets in one call: per call, scikit-learn walks all the trees in Python."""
    flagged = []
    for bucket_s in sorted({m.bucket_s for m in models}):
        buckets = bucket_readings(live, bucket_s)
        first = buckets["bucket_start"].min()
        if history is not None and not history.is_empty():
            before = _history(history, excluded, bucket_s)
            before = before.filter(pl.col("bucket_start") == pl.col("bucket_start").max().over(SERIES_KEY))
            buckets = pl.concat([_strings(before, SERIES_KEY).select(buckets.columns).cast(buckets.schema), buckets])
        features = bucket_features(buckets).filter(pl.col("bucket_start") >= first)
        if only is not None:
            wanted = _strings(only, SERIES_KEY).select(*SERIES_KEY, pl.col("bucket_start").cast(TIME)).unique()
            features = features.join(wanted, on=[*SERIES_KEY, "bucket_start"], how="semi", maintain_order="left")
        groups = features.partition_by(SERIES_KEY, as_dict=True)
        for forest in (m for m in models if m.bucket_s == bucket_s):
            group = groups.get(forest.key)
            if group is None:
                continue
            imputed = group.select(pl.col(f).fill_null(forest.feature_mean.get(f, 0.0)) for f in forest.features)
            scores = forest.model.score_samples(imputed.to_numpy().astype(np.float64))
            hit = scores < forest.threshold
            if hit.any():
                flagged.append(
                    group.filter(pl.Series(hit)).select(
                        *SERIES_KEY,
                        "bucket_start",
                        "bucket_end",
                        score_samples=pl.Series(scores[hit]),
                        threshold=pl.lit(forest.threshold),
                        training_mean=pl.lit(forest.reading_mean, pl.Float64),
                        training_std=pl.lit(forest.reading_std, pl.Float64),
                        bucket_s=pl.lit(bucket_s, pl.Int64),
                    )
                )
    # a forest's constants are literals: held value by value, they divide the same with one forest or many
    return se.plain(pl.concat(flagged)) if flagged else None


def _furthest_readings(live: pl.DataFrame, buckets: pl.DataFrame) -> pl.DataFrame:
    """`buckets` (flagged) with each one's reading furthest from the training mean (`observed`) and
    its three furthest readings, in time order."""
    key = [*SERIES_KEY, "bucket_start"]
    ranked = (
        pl.concat(
            [
                live.with_columns(bucket_start=bucket_expr(s)).join(buckets.filter(pl.col("bucket_s") == s), on=key)
                for s in buckets["bucket_s"].unique().to_list()
            ]
        )
        .with_columns(dev=(pl.col("value") - pl.col("training_mean")).abs())
        .sort(*key, "dev", "time", descending=[False] * 6 + [True, False])
        .group_by(key, maintain_order=True)
        .agg(
            observed=pl.col("value").first(),
            readings=_reading_struct().head(3).sort_by(pl.col("time").head(3)),
        )
    )
    return buckets.join(ranked, on=key)


# ----- all together ------------------------------------------------------------------------------

ORDER = ("tenant_id", "factory_id", "machine_id", "time", "method", "sensor_id", "metric")


def sort_anomalies(frame: pl.DataFrame) -> pl.DataFrame:
    """A deterministic order (the table's key), so reruns write byte-identical COPY streams."""
    return frame.sort(*ORDER, "anomaly_type", nulls_last=True)


def detect_anomalies(
    readings: pl.DataFrame,
    history: pl.DataFrame,
    excluded: pl.DataFrame | None = None,
    *,
    start: datetime | None = None,
    profiles: Sequence[se.Profile] | None = None,
    models: Sequence[FittedForest] | Callable[[set[tuple]], Sequence[FittedForest]] = (),
    counters: pl.DataFrame | None = None,
    running: pl.DataFrame | None = None,
    options: se.SeasonalOptions = se.SeasonalOptions(),
    min_stop_minutes: float = 10.0,
    zones: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Every detector's anomalies of the hour starting at `start` in one frame, sorted by
    `sort_anomalies`: the seasonal statistics (deviation, shift, noise, stuck), stoppage when
    `counters` and `running` are given, and the Isolation Forest as a second opinion.

    The forest only speaks where a statistic already flagged the same sample, and at most as a
    warning: on the labelled harness it found nothing the statistics missed while adding false
    alarms of its own (bench/detection.py, docs/benchmarks.md), so it may agree, never page.

    `models` may be a function of the flagged series' keys returning their forests: the caller then
    unpickles only the forests a statistic gave work to (most series have none in an hour). `zones`:
    each tenant's plant time zone for the seasonal statistics (`seasonal_anomalies`).

    Without `start`, the hour of the earliest reading; without `profiles`, they are learned from
    `history` up to `start` (running samples only), as a new deployment's first hour would be."""
    if start is None:
        first = readings["time"].min() if not readings.is_empty() else None
        if first is None:
            return _empty()
        start = first.replace(minute=0, second=0, microsecond=0)
    if profiles is None:
        running = _history(history, settled(excluded, options.settle), options.bucket_s)
        keys = _strings(readings, SERIES_KEY).select(SERIES_KEY).unique().rows()
        profiles = se.fit_profiles(running, start, options, series=keys)
    statistical = seasonal_anomalies(readings, history, profiles, excluded, start=start, options=options, zones=zones)
    seen = statistical.group_by(*SERIES_KEY, "window_start").agg(pl.col("sample_s").first())
    # only the samples a statistic flagged can keep a forest row (the join below), so only they
    # are scored, and only their series' readings and history are bucketed (each series' features
    # are its own): the same rows, without a scikit-learn call per series and hour
    only = seen.select(*SERIES_KEY, bucket_start="window_start")
    flagged = only.select(SERIES_KEY).unique()
    keys = set(flagged.rows())
    forest = isolation_forest_anomalies(
        models(keys) if callable(models) else [m for m in models if m.key in keys],
        _strings(readings, SERIES_KEY).join(flagged, on=list(SERIES_KEY), how="semi"),
        excluded,
        # of the history the forest only reads the bucket just before a flagged one (its change,
        # d_avg), and every flagged bucket starts at or after `start`
        history=_strings(history.filter(pl.col("bucket_end").cast(TIME) >= start), SERIES_KEY).join(
            flagged, on=list(SERIES_KEY), how="semi"
        ),
        only=only,
    )
    if not forest.is_empty():
        forest = (
            forest.drop("sample_s")
            .join(seen, on=[*SERIES_KEY, "window_start"], nulls_equal=True)
            .with_columns(severity=pl.col("severity").clip(upper_bound=2), severity_label=pl.lit("warning"))
            .select(ANOMALY_SCHEMA.keys())
        )
    parts = [statistical, forest]
    if counters is not None and running is not None:
        parts.append(stoppage_anomalies(counters, running, min_minutes=min_stop_minutes))
    return sort_anomalies(pl.concat(parts))
