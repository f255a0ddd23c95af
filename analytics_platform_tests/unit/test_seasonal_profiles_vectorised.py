"""`seasonal.fit_profiles` learns every series in one grouped pass; before it learned them one series
at a time (the reference below, that code as it was). The two must give the same profiles bit for bit
(every float's repr, the stored JSON): a profile is stored and judges every later hour, and live ==
backfill rests on a series' profile not depending on what else was learned with it. The data has the
cases a grouped median or quantile could get wrong: even counts (two middle values), ties, constant and
held series (MAD 0), series sampled every 10 s, 60 s and 5 min, flat/daily/weekly/learning stages, and
rows in any order."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from analytics_platform.transforms import seasonal as se
from analytics_platform.transforms.window_aggregates import READING_SCHEMA, SERIES_KEY, window_aggregates

END = datetime(2025, 6, 16, tzinfo=UTC)  # a Monday: the history before it spans weekdays and a weekend


# ----- the per-series reference (seasonal.fit_profiles before it was grouped) ---------------------


def robust(values: pl.Series) -> float | None:
    clean = values.drop_nulls().drop_nans()
    if clean.len() < 2:
        return None
    mad = (clean - clean.median()).abs().median()
    return float(se.MAD_SIGMA * mad) if mad and mad > 0 else None


def per_series(
    history: pl.DataFrame,
    trained_to: datetime,
    options: se.SeasonalOptions = se.SeasonalOptions(),
    *,
    series: Sequence[tuple] = (),
) -> list[se.Profile]:
    """One se.Profile per series of `history` (its `bucket_s` aggregates before `trained_to`, running
    samples only: the caller drops the rest) and per extra key in `series` (those get 'learning')."""
    samples = se.samples_of(history, options.bucket_s).filter(pl.col("bucket_end") <= trained_to)
    by_key = samples.partition_by(se.SERIES_KEY, as_dict=True) if not samples.is_empty() else {}
    keys = sorted({*by_key, *map(tuple, series)})
    out: list[se.Profile] = []
    ready: dict[tuple, se.Profile] = {}
    for key in keys:
        group = by_key.get(key)
        n = 0 if group is None else group.height
        span_h = 0.0
        per_sample, cadence = 1.0, float(options.bucket_s)
        stage = "learning"
        if group is not None:
            span_h = (group["bucket_end"].max() - group["bucket_start"].min()).total_seconds() / 3600
            per_sample = float(group["count_n"].median())
            if group.height > 1:
                gaps = group["bucket_start"].diff().drop_nulls().dt.total_seconds()
                cadence = float(gaps.median()) if per_sample <= 1 else options.bucket_s / per_sample
            if n >= options.min_samples and span_h * 3600 >= options.min_history.total_seconds():
                days = group["bucket_start"].dt.date().n_unique()
                classes = group.select(se._day_class(se._mid(options), options).n_unique()).item()
                # an hour of day needs se.MIN_CELL_DAYS days: an hour's median from one or two days fits
                # those days' own level, and tomorrow's ordinary wander would read as a shift
                flat = span_h < 24 or days < se.MIN_CELL_DAYS
                stage = "flat" if flat else ("weekly" if classes == 2 and days >= 7 else "daily")
        profile = se.Profile(
            *key,
            stage=stage,
            trained_from=None if group is None else group["bucket_start"].min(),
            trained_to=trained_to,
            n_samples=n,
            span_hours=round(span_h, 3),
            cadence_s=cadence,
            per_sample=per_sample,
        )
        out.append(profile)
        if stage != "learning":
            ready[key] = profile
    if not ready:
        return out
    frame = pl.concat([by_key[k] for k in ready])
    centres = se._centres(frame, {k: p.stage for k, p in ready.items()}, options)
    for key, profile in ready.items():
        profile.centre = centres[key]
    frame = frame.sort(*se.SERIES_KEY, "bucket_start")
    frame = frame.with_columns(expected=se._expected(frame, se._centre_frame(list(ready.values())), options))
    residual_scale = {}
    for key, part in frame.partition_by(se.SERIES_KEY, as_dict=True).items():
        s_r = robust(part["avg_v"] - part["expected"])
        # a constant series: any deviation at all is unusual; its scale is a thousandth of its size
        residual_scale[key] = s_r if s_r is not None else max(abs(float(part["avg_v"].median())) * 1e-3, 1e-9)
    scale_frame = pl.DataFrame(
        [(*k, v) for k, v in residual_scale.items()],
        schema={**{c: pl.String() for c in se.SERIES_KEY}, "s_r": pl.Float64()},
        orient="row",
    )
    frame = frame.join(se._gap_frame(ready.values()), on=list(se.SERIES_KEY)).join(scale_frame, on=list(se.SERIES_KEY))
    stats = se._raw_statistics(frame, pl.col("_max_gap")).drop("s_r")
    for key, part in stats.partition_by(se.SERIES_KEY, as_dict=True).items():
        profile = ready[key]
        s_r = residual_scale[key]
        spread = part.filter(pl.col("count_n") >= 3)["trimmed"].drop_nulls()
        profile.spread = float(spread.median()) if spread.len() and spread.median() > 0 else None
        profile.scale = {
            "r": s_r,
            **{f"m{k}": robust(part[f"m{k}"]) or s_r / math.sqrt(k) for k in se.SHIFT_WINDOWS},
        }
        scaled = se._scaled(se._with_scales(part, [profile]))
        floors = options.floors(86_400 / profile.sample_s)
        daily = scaled.group_by(pl.col("bucket_start").dt.date().alias("day")).agg(pl.col(t).max() for t in se.TESTS)
        for test in se.TESTS:
            warn_floor, crit_floor = floors[test]
            maxima = daily[test].drop_nulls().drop_nans()
            usual = float(maxima.quantile(options.quantile, "linear")) if maxima.len() else 0.0
            if test == "stuck":
                usual = max(usual, 1.0)
            profile.warning[test] = max(warn_floor, options.warning_margin * usual)
            profile.critical[test] = max(crit_floor, options.critical_margin * usual, profile.warning[test])
        if part["run"].max() * 2 >= part["count_n"].sum():
            # a series that held one value for half its history (a setpoint, a flag) is not stuck
            # when it does so again: its runs only grow, so no level learned from them would hold
            profile.warning["stuck"] = profile.critical["stuck"] = se.NEVER
    return sorted(out, key=lambda p: p.key)


# ----- the plant ---------------------------------------------------------------------------------


def series(machine: str, metric: str) -> tuple[str, str, str, str, str]:
    return ("t1", "f1", machine, f"s-{metric}", metric)


def readings(key: tuple, start: datetime, step_s: int, values: np.ndarray) -> pl.DataFrame:
    times = [start + timedelta(seconds=step_s * i) for i in range(len(values))]
    columns = {c: [v] * len(times) for c, v in zip(SERIES_KEY, key, strict=True)}
    return pl.DataFrame({"time": times, **columns, "value": values.tolist()}, schema=READING_SCHEMA)


def swing(step_s: int, days: float, rng: np.random.Generator, grid: float, noise: float = 0.6) -> np.ndarray:
    """A daily swing with noise, rounded to `grid`: many equal values, so medians meet ties."""
    t = np.arange(0, int(days * 86_400), step_s)
    values = 60.0 + 8.0 * np.cos(2 * np.pi * (t / 86_400 - 15 / 24)) + rng.normal(0.0, noise, t.size)
    return np.round(values / grid) * grid


def plant(seed: int) -> pl.DataFrame:
    """The 60 s aggregates of ten series that take every branch of learning."""
    rng = np.random.default_rng(seed)
    parts = []
    # weekly: 10 s readings (multi-reading samples: spread, extreme), 10 days, a weekend among them
    parts.append(readings(series("m1", "temp"), END - timedelta(days=10), 10, swing(10, 10, rng, 0.5)))
    # weekly at one reading a minute, coarse grid; and its twin on another machine (ties across series)
    minute = swing(60, 9, rng, 1.0)
    parts.append(readings(series("m1", "pressure"), END - timedelta(days=9), 60, minute))
    parts.append(readings(series("m2", "pressure"), END - timedelta(days=9), 60, minute))
    # daily: every 5 min for 4 days, with a gap of three hours and a spike
    five = swing(300, 4, rng, 0.1)
    five[500] += 40.0
    keep = np.r_[0:200, 236 : five.size]
    frame = readings(series("m2", "temp"), END - timedelta(days=4), 300, five)
    parts.append(frame[keep.tolist()])
    # flat: 30 h of minutes (two calendar days)
    parts.append(readings(series("m3", "temp"), END - timedelta(hours=30), 60, swing(60, 1.25, rng, 0.25)))
    # constant: MAD 0 (the scale falls back to its size), held all along (never stuck)
    parts.append(readings(series("m3", "level"), END - timedelta(days=2), 60, np.full(2 * 1440, 5.0)))
    # a flag held for hours at a time over three days
    flag = np.repeat(rng.integers(0, 2, 3 * 24), 60).astype(np.float64)
    parts.append(readings(series("m3", "flag"), END - timedelta(days=3), 60, flag))
    # noisy, even sample count per day, readings every 20 s (3 per sample)
    parts.append(readings(series("m4", "vibration"), END - timedelta(days=5), 20, swing(20, 5, rng, 0.05, 2.0)))
    # too few samples: learning
    parts.append(readings(series("m4", "humidity"), END - timedelta(minutes=20), 60, swing(60, 20 / 1440, rng, 1.0)))
    return window_aggregates(pl.concat(parts).lazy(), [60]).collect()


def dumped(profiles: Sequence[se.Profile]) -> list[str]:
    """Each profile as stored, every float by its repr (exact: equal reprs are equal bits)."""
    return [repr(p.to_json()) for p in profiles]


# ----- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_grouped_profiles_equal_the_per_series_ones_bit_for_bit(seed: int) -> None:
    aggregates = plant(seed)
    extra = [series("m9", "temp")]  # a series with no history at all: learning
    want = per_series(aggregates, END, series=extra)
    got = se.fit_profiles(aggregates, END, series=extra)
    assert [p.stage for p in got] == [p.stage for p in want]
    assert {p.stage for p in got} == {"weekly", "daily", "flat", "learning"}
    assert dumped(got) == dumped(want)
    # the profiles learned something of each kind: a fallback scale, a never-stuck series, a spread
    judged = {p.metric + "@" + p.machine_id: p for p in got if p.judged}
    assert judged["level@m3"].scale["r"] == pytest.approx(5e-3)
    assert judged["level@m3"].warning["stuck"] == se.NEVER
    assert judged["temp@m1"].spread is not None and judged["temp@m1"].per_sample == 6.0
    assert judged["pressure@m1"].scale == judged["pressure@m2"].scale


@pytest.mark.parametrize("seed", [1, 2])
def test_grouped_profiles_do_not_depend_on_row_order(seed: int) -> None:
    aggregates = plant(seed)
    want = dumped(per_series(aggregates, END))
    for shuffle in range(3):
        shuffled = aggregates.sample(fraction=1.0, shuffle=True, seed=seed * 10 + shuffle)
        assert dumped(se.fit_profiles(shuffled, END)) == want


def test_a_series_learned_alone_equals_it_learned_with_the_plant() -> None:
    """A scoped run (one machine) learns its series alone: one-row joins, which Polars may keep as
    scalars (`plain`); its profiles must be the plant's all the same."""
    aggregates = plant(4)
    together = {p.key: repr(p.to_json()) for p in se.fit_profiles(aggregates, END)}
    for key in together:
        alone = aggregates.filter(pl.all_horizontal(pl.col(c) == v for c, v in zip(SERIES_KEY, key, strict=True)))
        (profile,) = se.fit_profiles(alone, END)
        assert repr(profile.to_json()) == together[key]
