"""The forecast transform (transforms/forecast.py) against values worked out by hand: the textbook
metrics (MAE, MAPE, MASE, interval coverage), the seasonal-naive forecast, the conformal band
bounds, the leave-one-out profile medians, an exactly periodic series forecast exactly, and the
machines' and factories' rows of several tenants that share factory and machine names."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from analytics_platform.transforms import forecast as fc

NAN = math.nan
ORIGIN = datetime(2026, 3, 15, tzinfo=UTC)  # a Sunday midnight
HOUR = timedelta(hours=1)
# 10 kWh (kW) an hour 08:00-18:00 UTC, 4 otherwise: a day of 10 x 10 + 14 x 4 = 156 kWh, peak 10 kW
PATTERN = np.array([4.0] * 8 + [10.0] * 10 + [4.0] * 6)


# ----- metrics --------------------------------------------------------------------------------------
def test_seasonal_naive_repeats_the_last_season() -> None:
    assert fc.seasonal_naive([1, 2, 3, 4], 2, 5).tolist() == [3, 4, 3, 4, 3]
    assert fc.seasonal_naive([1, 2, 3, 4, 5, 6], 3, 4).tolist() == [4, 5, 6, 4]
    with pytest.raises(ValueError, match="whole season"):
        fc.seasonal_naive([1, 2], 3, 1)


def test_mae_and_mape_by_hand() -> None:
    assert fc.mae([1, 2, 3], [2, 2, 5]) == 1.0  # (1 + 0 + 2) / 3
    # the zero actual has no percentage error, the unknown one no pair: (10/100 + 10/50) / 2 = 15 %
    assert fc.mape([100, 0, 50, NAN], [90, 5, 60, 1]) == pytest.approx(15.0, abs=1e-12)
    assert fc.mape([0, 0], [1, 2]) is None
    assert fc.mae([NAN], [1]) is None
    with pytest.raises(ValueError, match="differ in length"):
        fc.mae([1, 2], [1])


def test_mase_scales_by_the_in_sample_seasonal_naive_error() -> None:
    training = [1, 2, 3, 5, 8]
    # |3 - 1|, |5 - 2|, |8 - 3| = 2, 3, 5: scale 10 / 3
    assert fc.naive_scale(training, 2) == pytest.approx(10 / 3, abs=1e-12)
    # MAE (|10 - 11| + |12 - 10|) / 2 = 1.5, / (10 / 3) = 0.45
    assert fc.mase([10, 12], [11, 10], training, 2) == pytest.approx(0.45, abs=1e-12)
    assert fc.naive_scale([1, NAN, 3, 4], 2) == 2.0  # only the pair (3, 1) is known, not (4, NaN)
    assert fc.mase([1], [2], [1, 1, 1, 1], 1) is None  # a series that repeats exactly has no scale
    assert fc.mase([1], [2], [1, 2], 2) is None  # no seasonal pair in the training


def test_seasonal_naive_has_mase_one_on_a_series_that_repeats_with_noise() -> None:
    """Forecasting the next season of a random walk by the last one: its MASE is the out-of-sample
    over the in-sample seasonal difference, here computed by hand on four values."""
    training = [0, 4, 1, 5]  # season 2: |1 - 0|, |5 - 4| = 1, 1: scale 1
    forecast = fc.seasonal_naive(training, 2, 2)  # 1, 5
    assert fc.mase([2, 3], forecast, training, 2) == pytest.approx(1.5)  # (1 + 2) / 2


def test_coverage_counts_the_bounds_as_inside() -> None:
    actual = [1, 2, 3, 4, NAN]
    # 1 in [0, 1] yes, 2 in [2, 3] yes, 3 in [3.5, 4] no, 4 in [0, 3] no; the unknown is not counted
    assert fc.coverage(actual, [0, 2, 3.5, 0, 0], [1, 3, 4, 3, 9]) == 0.5
    assert fc.coverage([NAN], [0], [1]) is None


def test_band_quantiles_are_the_conformal_order_statistics() -> None:
    # n = 39, level 0.9: k = floor(40 x 0.05) = 2 and ceil(40 x 0.95) = 38
    assert fc.band_quantiles(np.arange(1, 40, dtype=float)[::-1], 0.9) == (2.0, 38.0)
    # n = 19: k = 1 and 19, the extremes
    assert fc.band_quantiles(np.arange(1, 20, dtype=float), 0.9) == (1.0, 19.0)
    # the default history's 42 day errors: k = floor(43 x 0.05) = 2 and ceil(43 x 0.95) = 41, an expected
    # coverage of (41 - 2) / 43 = 0.907; 28 days gave k = 1 and 28, the extremes: (28 - 1) / 29 = 0.931
    assert fc.ForecastOptions().history_days == 42 == 6 * 7
    assert fc.band_quantiles(np.arange(1, 43, dtype=float), 0.9) == (2.0, 41.0)
    assert fc.band_quantiles(np.arange(1, 29, dtype=float), 0.9) == (1.0, 28.0)
    # n = 9, level 0.5: floor(10 x 0.25) = 2, ceil(10 x 0.75) = 8
    assert fc.band_quantiles(np.arange(1, 10, dtype=float), 0.5) == (2.0, 8.0)
    # n = 5 at 0.9: floor(0.3) = 0 -> the smallest, ceil(5.7) = 6 -> the largest
    assert fc.band_quantiles(np.array([3.0, -1.0, 2.0, 0.0, 1.0]), 0.9) == (-1.0, 3.0)
    with pytest.raises(ValueError):
        fc.band_quantiles(np.array([]), 0.9)


def test_cell_medians_leave_each_hour_out_of_its_own_median() -> None:
    y = np.array([1, 2, 3, 10, 20, 30, NAN])
    cells = np.array([0, 0, 0, 1, 1, 1, 1])
    in_sample, target = fc.cell_medians(y, cells, np.array([0, 1, 2]), 1)
    assert in_sample[:6].tolist() == [2.5, 2.0, 1.5, 25.0, 20.0, 15.0]
    assert math.isnan(in_sample[6])
    assert target[:2].tolist() == [2.0, 20.0]
    assert math.isnan(target[2])  # a cell never seen
    # min_count 3: the full cells qualify, their leave-one-out medians (2 others) do not
    in_sample, target = fc.cell_medians(y, cells, np.array([0, 1]), 3)
    assert np.isnan(in_sample).all()
    assert target.tolist() == [2.0, 20.0]


# ----- one series -----------------------------------------------------------------------------------
def calendar(days: int, horizon: int = 7) -> fc.Calendar:
    return fc.Calendar.of(ORIGIN - timedelta(days=days), (days + horizon) * 24, "UTC", (6, 7))


def test_a_series_that_repeats_exactly_is_forecast_exactly_with_a_zero_width_band() -> None:
    y = np.tile(PATTERN, 14)
    energy = fc.forecast_series(y, calendar(14), steps=7 * 24, aggregate="sum", level=0.9)
    assert energy.value == pytest.approx(np.tile(PATTERN, 7), abs=1e-9)
    assert energy.lower == pytest.approx(energy.value, abs=1e-9)
    assert energy.upper == pytest.approx(energy.value, abs=1e-9)
    assert energy.day_value == pytest.approx([156.0] * 7, abs=1e-9)
    assert energy.day_lower == pytest.approx([156.0] * 7, abs=1e-9)
    assert energy.day_upper == pytest.approx([156.0] * 7, abs=1e-9)
    peak = fc.forecast_series(y, calendar(14), steps=7 * 24, aggregate="max", level=0.9)
    assert peak.day_value == pytest.approx([10.0] * 7, abs=1e-9)
    assert peak.details["complete_days"] == 14


def test_weekends_get_their_own_profile() -> None:
    """Weekdays as PATTERN, Saturdays and Sundays a flat 1 kWh: the forecast's Sunday (the origin's
    day) and Monday follow their own day class."""
    cal = calendar(28)
    y = np.where(cal.weekend[: 28 * 24], 1.0, np.tile(PATTERN, 28))
    f = fc.forecast_series(y, cal, steps=7 * 24, aggregate="sum", level=0.9)
    assert f.day_value[0] == pytest.approx(24.0, abs=1e-6)  # Sunday 15 March
    assert f.day_value[1] == pytest.approx(156.0, abs=1e-6)  # Monday


def test_a_noisy_series_is_fitted_by_the_ar_model_and_its_band_holds_the_forecast() -> None:
    rng = random.Random(3)
    y = np.tile(PATTERN, 21) + np.array([rng.gauss(0, 0.8) for _ in range(21 * 24)])
    y[100:104] = NAN  # missing hours are left to the Kalman filter
    f = fc.forecast_series(y, calendar(21), steps=7 * 24, aggregate="sum", level=0.9)
    assert f.model == fc.MODEL
    assert abs(f.details["ar1"]) < 0.3  # white noise: little autocorrelation
    assert f.details["history_hours"] == 21 * 24 - 4
    assert (f.lower <= f.value).all() and (f.value <= f.upper).all() and (f.lower >= 0).all()
    assert (f.upper - f.lower).min() > 1.0  # the noise's 90 % band is ~2.6 wide
    # a day is the sum of its hours
    assert f.day_value == pytest.approx([f.value[d * 24 : (d + 1) * 24].sum() for d in range(7)], abs=1e-9)
    assert f.value[9] == pytest.approx(10.0, abs=0.5) and f.value[3] == pytest.approx(4.0, abs=0.5)


def test_the_history_and_horizon_must_be_whole_days() -> None:
    with pytest.raises(ValueError, match="whole days"):
        fc.forecast_series(np.ones(30), calendar(2), steps=24, aggregate="sum", level=0.9)


# ----- machines and factories of several tenants -------------------------------------------------
def hours_frame(series: dict[tuple[str, str, str], dict[str, list[float]]], days: int) -> pl.DataFrame:
    rows = []
    start = ORIGIN - timedelta(days=days)
    for (tenant, factory, machine), kpis in series.items():
        for kpi, values in kpis.items():
            for i, value in enumerate(values):
                if not math.isnan(value):
                    rows.append((start + HOUR * i, tenant, factory, machine, kpi, value))
    return pl.DataFrame(rows, schema=fc.HOURS_SCHEMA, orient="row")


def test_machines_and_factories_of_two_tenants_never_mix() -> None:
    days = 14
    options = fc.ForecastOptions(history_days=days, horizon_days=2)
    m1 = list(np.tile(PATTERN, days))
    hours = hours_frame(
        {
            ("t1", "f1", "m1"): {fc.ENERGY: m1, fc.PEAK: m1},
            ("t1", "f1", "m2"): {fc.ENERGY: [6.0] * days * 24, fc.PEAK: [7.0] * days * 24},
            # t2 uses the same names: 100 kWh every hour
            ("t2", "f1", "m1"): {fc.ENERGY: [100.0] * days * 24, fc.PEAK: [120.0] * days * 24},
            # 5 days of history: skipped, and not part of its factory either (no value on the last day)
            ("t1", "f1", "m3"): {fc.ENERGY: [50.0] * 5 * 24 + [NAN] * 9 * 24},
        },
        days,
    )
    rows, skipped = fc.forecast_all(hours, ORIGIN, {"t1": "Asia/Bangkok"}, options)
    assert [(s.machine_id, s.kpi) for s in skipped] == [("m3", fc.ENERGY), ("m3", fc.PEAK)]
    assert skipped[0].reason == "5.0 days of known hours in the last 14, 7 needed"
    assert rows.schema == pl.Schema(fc.FORECAST_SCHEMA)
    days_of = rows.filter(pl.col("period") == "day").sort("tenant_id", "machine_id", "kpi", "horizon_day")
    got = {
        (r["tenant_id"], r["machine_id"], r["kpi"], r["horizon_day"]): (r["value"], r["lower"], r["upper"])
        for r in days_of.iter_rows(named=True)
    }
    expected = {
        ("t1", "*", fc.ENERGY): 156.0 + 144.0,
        ("t1", "*", fc.PEAK): 10.0 + 7.0,
        ("t1", "m1", fc.ENERGY): 156.0,
        ("t1", "m1", fc.PEAK): 10.0,
        ("t1", "m2", fc.ENERGY): 144.0,
        ("t1", "m2", fc.PEAK): 7.0,
        ("t2", "*", fc.ENERGY): 2400.0,
        ("t2", "*", fc.PEAK): 120.0,
        ("t2", "m1", fc.ENERGY): 2400.0,
        ("t2", "m1", fc.PEAK): 120.0,
    }
    assert sorted(got) == sorted((*k, d) for k in expected for d in (1, 2))
    for (tenant, machine, kpi, _day), band in got.items():
        assert band == (expected[(tenant, machine, kpi)],) * 3  # stored to 1e-6: exact
    hourly = rows.filter((pl.col("period") == "hour") & (pl.col("tenant_id") == "t1") & (pl.col("machine_id") == "*"))
    energy = hourly.filter(pl.col("kpi") == fc.ENERGY).sort("target_start")
    assert energy["value"].to_list() == list(np.tile(PATTERN + 6.0, 2))
    first = energy.row(0, named=True)
    assert (first["issued_at"], first["target_start"], first["target_end"]) == (ORIGIN, ORIGIN, ORIGIN + HOUR)
    assert (first["horizon_day"], first["unit"], first["level"], first["factory_id"]) == (1, "kWh", 0.9, "f1")
    assert energy.row(24, named=True)["horizon_day"] == 2
    assert rows.filter(pl.col("period") == "hour").height == 10 * 48
    day = days_of.row(0, named=True)
    assert (day["target_start"], day["target_end"]) == (ORIGIN, ORIGIN + timedelta(days=1))
    assert json.loads(day["details"])["complete_days"] == 14


def test_a_factory_hour_is_known_only_when_its_whole_fleet_reported() -> None:
    days = 10
    options = fc.ForecastOptions(history_days=days, horizon_days=1)
    a = [2.0] * days * 24
    b = [3.0] * days * 24
    b[5] = NAN
    hours = hours_frame({("t1", "f1", "a"): {fc.ENERGY: a}, ("t1", "f1", "b"): {fc.ENERGY: b}}, days)
    grid = fc.series_grid(hours, ORIGIN, options)
    factory = grid.filter(pl.col("machine_id") == fc.FACTORY).sort("period_start")
    values = factory[fc.ENERGY].to_list()
    assert values[5] is None
    assert values[:5] == [5.0] * 5 and values[6:] == [5.0] * (days * 24 - 6)
    assert factory[fc.PEAK].null_count() == factory.height  # nobody reported peak demand


def test_no_hours_no_rows() -> None:
    rows, skipped = fc.forecast_all(pl.DataFrame(schema=fc.HOURS_SCHEMA), ORIGIN, {}, fc.ForecastOptions())
    assert rows.is_empty() and rows.schema == pl.Schema(fc.FORECAST_SCHEMA)
    assert skipped == []
