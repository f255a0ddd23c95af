"""Energy baseline (ISO 50001 EnB): a seeded synthetic plant with known coefficients is recovered by
the OLS fit, a noise target is fitted but flagged, too few / constant / collinear data are refused
with a message that says why, and predictions and deviation severities are checked by hand."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from analytics_platform.transforms.energy_baseline import (
    ABNORMAL_TIME,
    BaselineFit,
    BaselineRefused,
    abnormal_hour,
    deviations,
    fit_baseline,
    predict,
    usable_rows,
)

DRIVERS = ("production_count", "avg_outdoor_temp", "avg_outdoor_pressure")
TRUE = {"intercept": 12.0, "production_count": 0.8, "avg_outdoor_temp": 1.5, "avg_outdoor_pressure": -0.05}


def plant(n: int, seed: int = 42, noise_only: bool = False) -> pl.DataFrame:
    """Hourly samples: production 50..500 units, outdoor 15..40 °C, pressure around 1010 hPa (sd 15)."""
    rng = np.random.default_rng(seed)
    production = rng.uniform(50, 500, n)
    temp = rng.uniform(15, 40, n)
    pressure = rng.normal(1010, 15, n)
    noise = rng.normal(0, 1, n)
    energy = (
        noise + 100
        if noise_only
        else (
            TRUE["intercept"]
            + TRUE["production_count"] * production
            + TRUE["avg_outdoor_temp"] * temp
            + TRUE["avg_outdoor_pressure"] * pressure
            + noise
        )
    )
    return pl.DataFrame(
        {
            "energy_kwh": energy,
            "production_count": production,
            "avg_outdoor_temp": temp,
            "avg_outdoor_pressure": pressure,
            "excluded": [False] * n,
        }
    )


def test_recovers_known_coefficients() -> None:
    fit = fit_baseline(plant(1500), "energy_kwh", DRIVERS)

    assert fit.target == "energy_kwh"
    assert fit.drivers == DRIVERS
    assert list(fit.coefficients) == ["intercept", *DRIVERS]
    assert fit.p_values.keys() == fit.std_errors.keys() == fit.coefficients.keys()
    for name, true in TRUE.items():
        # unbiased estimator: within 4 standard errors of the truth
        assert abs(fit.coefficients[name] - true) < 4 * fit.std_errors[name], name
    # the well-determined slopes are also within 1 % (pressure: sd 15 hPa, so within 15 %)
    assert fit.coefficients["production_count"] == pytest.approx(0.8, rel=0.01)
    assert fit.coefficients["avg_outdoor_temp"] == pytest.approx(1.5, rel=0.01)
    assert fit.coefficients["avg_outdoor_pressure"] == pytest.approx(-0.05, rel=0.15)
    for driver in DRIVERS:
        assert fit.p_values[driver] < 1e-6, driver
    assert fit.r2 >= 0.8
    assert fit.adj_r2 <= fit.r2
    assert fit.warning is None
    assert fit.n == 1500
    assert fit.excluded == 0
    assert fit.rmse == pytest.approx(1.0, abs=0.1)  # N(0, 1) noise
    assert fit.mae == pytest.approx(math.sqrt(2 / math.pi), abs=0.05)  # E|N(0, 1)| = 0.798


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_refit_on_the_same_hours_in_another_order_is_the_same_model(seed: int) -> None:
    """The KPI table returns a training range's hours in whatever order its plan gives; least squares
    adds the rows up (float addition is not associative), so the fit must not depend on that order."""
    samples = plant(1500)
    shuffled = samples.sample(fraction=1.0, shuffle=True, seed=seed)
    assert not shuffled.equals(samples)
    assert fit_baseline(shuffled, "energy_kwh", DRIVERS) == fit_baseline(samples, "energy_kwh", DRIVERS)


def test_noise_target_is_fitted_but_warned() -> None:
    fit = fit_baseline(plant(1500, noise_only=True), "energy_kwh", DRIVERS)

    assert fit.r2 < 0.8
    assert fit.warning is not None
    assert fit.warning.startswith(f"R² {fit.r2:.2f} is below 0.80")
    assert fit.n == 1500


def test_custom_r2_threshold() -> None:
    fit = fit_baseline(plant(1500), "energy_kwh", DRIVERS, r2_threshold=0.99999)
    assert fit.warning is not None and "below 1.00" in fit.warning


def test_999_usable_rows_are_refused() -> None:
    with pytest.raises(BaselineRefused) as refused:
        fit_baseline(plant(999), "energy_kwh", DRIVERS)
    message = str(refused.value)
    assert "only 999 usable rows, 1000 needed" in message
    assert "0 dropped" in message


def with_dropped_rows() -> pl.DataFrame:
    """1200 rows: 150 flagged excluded (one of them also NULL: counted once, as excluded), 60 with a
    NULL or NaN target/driver, and one NULL flag (not excluded) -> 990 usable, 210 dropped."""
    samples = plant(1200)
    excluded = [i < 150 for i in range(1200)]
    excluded[1199] = None  # NULL flag: not excluded
    energy = samples["energy_kwh"].to_list()
    temp = samples["avg_outdoor_temp"].to_list()
    pressure = samples["avg_outdoor_pressure"].to_list()
    energy[0] = None  # excluded and NULL: counted once
    for i in range(150, 170):
        energy[i] = None
    for i in range(170, 190):
        temp[i] = None
    for i in range(190, 210):
        pressure[i] = float("nan")
    return samples.with_columns(
        energy_kwh=pl.Series(energy, dtype=pl.Float64),
        avg_outdoor_temp=pl.Series(temp, dtype=pl.Float64),
        avg_outdoor_pressure=pl.Series(pressure, dtype=pl.Float64),
        excluded=pl.Series(excluded, dtype=pl.Boolean),
    )


def test_excluded_and_null_rows_are_dropped_and_counted() -> None:
    samples = with_dropped_rows()

    with pytest.raises(BaselineRefused) as refused:
        fit_baseline(samples, "energy_kwh", DRIVERS)
    message = str(refused.value)
    assert "only 990 usable rows, 1000 needed" in message
    assert "210 dropped: 150 flagged excluded, 60 with a NULL/NaN" in message

    fit = fit_baseline(samples, "energy_kwh", DRIVERS, min_samples=900)
    assert fit.n == 990
    assert fit.excluded == 210


def test_usable_rows_counts_what_the_fit_trains_on() -> None:
    """The count a training request is checked against before its run is queued: the same 990 rows
    (150 flagged, 60 NULL/NaN, a NULL flag kept) as the fit, and ±inf is not usable either."""
    samples = with_dropped_rows()
    assert usable_rows(samples, "energy_kwh", DRIVERS) == 990
    assert usable_rows(samples, "energy_kwh", DRIVERS, exclude_column=None) == 1139
    infinite = samples.with_columns(
        production_count=pl.when(pl.int_range(pl.len()) == 500).then(float("inf")).otherwise(pl.col("production_count"))
    )
    assert usable_rows(infinite, "energy_kwh", DRIVERS) == 989
    assert fit_baseline(infinite, "energy_kwh", DRIVERS, min_samples=900).n == 989
    with pytest.raises(BaselineRefused, match="column\\(s\\) flux missing"):
        usable_rows(samples, "energy_kwh", ("flux",))


def test_no_exclude_column() -> None:
    samples = with_dropped_rows()
    # flag ignored: only the 61 NULL/NaN rows (row 0 included) are dropped
    fit = fit_baseline(samples, "energy_kwh", DRIVERS, min_samples=900, exclude_column=None)
    assert (fit.n, fit.excluded) == (1139, 61)
    # absent flag column: nothing is flagged either
    fit = fit_baseline(samples.drop("excluded"), "energy_kwh", DRIVERS, min_samples=900)
    assert (fit.n, fit.excluded) == (1139, 61)


def test_constant_driver_is_refused_by_name() -> None:
    samples = plant(1200).with_columns(avg_outdoor_pressure=pl.lit(1013.0))
    with pytest.raises(BaselineRefused, match="driver 'avg_outdoor_pressure' is constant"):
        fit_baseline(samples, "energy_kwh", DRIVERS)


def test_constant_only_among_usable_rows_is_refused() -> None:
    # the only rows where temp varies are excluded ones
    samples = plant(1200).with_columns(
        avg_outdoor_temp=pl.when(pl.int_range(pl.len()) < 100).then(pl.col("avg_outdoor_temp")).otherwise(30.0),
        excluded=pl.int_range(pl.len()) < 100,
    )
    with pytest.raises(BaselineRefused, match="'avg_outdoor_temp' is constant"):
        fit_baseline(samples, "energy_kwh", DRIVERS, min_samples=1000)


def test_collinear_drivers_are_refused() -> None:
    samples = plant(1200).with_columns(production_kg=pl.col("production_count") * 2.5 + 1)
    with pytest.raises(BaselineRefused, match="collinear"):
        fit_baseline(samples, "energy_kwh", (*DRIVERS, "production_kg"))


def test_missing_driver_is_refused_by_name() -> None:
    with pytest.raises(BaselineRefused, match="humidity"):
        fit_baseline(plant(1200), "energy_kwh", (*DRIVERS, "humidity"))


def test_refusal_is_a_value_error() -> None:
    assert issubclass(BaselineRefused, ValueError)


def manual_fit(rmse: float = 2.0) -> BaselineFit:
    return BaselineFit(
        target="energy_kwh",
        drivers=("production_count", "avg_outdoor_temp"),
        coefficients={"intercept": 10.0, "production_count": 0.5, "avg_outdoor_temp": 2.0},
        p_values={"intercept": 0.01, "production_count": 1e-12, "avg_outdoor_temp": 1e-8},
        std_errors={"intercept": 0.5, "production_count": 0.01, "avg_outdoor_temp": 0.1},
        r2=0.91,
        adj_r2=0.909,
        rmse=rmse,
        mae=1.6,
        n=2000,
        excluded=12,
        warning=None,
    )


def test_predict_hand_computed() -> None:
    what_if = pl.DataFrame(
        {
            "production_count": [100, 0, None, 4],
            "avg_outdoor_temp": [20.0, -5.0, 25.0, float("nan")],
            "unrelated": ["a", "b", "c", "d"],
        }
    )
    predicted = predict(manual_fit(), what_if)
    # 10 + 0.5·100 + 2·20 = 100; 10 + 0 + 2·(-5) = 0; NULL production -> NULL; NaN temp -> NULL
    assert predicted.to_list() == [100.0, 0.0, None, None]
    assert predicted.dtype == pl.Float64
    assert predicted.len() == 4


def test_predict_missing_driver_named() -> None:
    with pytest.raises(ValueError, match="avg_outdoor_temp"):
        predict(manual_fit(), pl.DataFrame({"production_count": [1.0]}))


DAY = datetime(2025, 8, 20, tzinfo=UTC)
HOUR = datetime(2025, 8, 20, 1, tzinfo=UTC)


def test_deviations_hand_computed_with_drivers() -> None:
    # rmse 2: hourly thresholds 4 (warning) and 6 (critical); predicted 10 + 0.5·0 + 2·0 = 10
    actual = pl.DataFrame(
        {
            "machine_id": ["m1", "m2", "m3", "m4", "m5", "m6"],
            "period_start": [DAY] * 6,
            "period_end": [HOUR] * 6,
            "energy_kwh": [13.9, 14.0, 16.0, 5.9, 4.0, None],
            "production_count": [0.0] * 6,
            "avg_outdoor_temp": [0.0] * 6,
        }
    )
    result = deviations(actual, manual_fit(), key=["machine_id"])

    assert result.columns == [
        "machine_id",
        "period_start",
        "period_end",
        "actual",
        "predicted",
        "deviation",
        "deviation_pct",
        "severity",
        "z",
    ]
    assert result["predicted"].to_list() == [10.0] * 6
    assert result["deviation"].to_list() == pytest.approx([3.9, 4.0, 6.0, -4.1, -6.0, None], abs=1e-12, nan_ok=False)
    assert result["severity"].to_list() == ["normal", "warning", "critical", "warning", "critical", None]
    assert result["z"].to_list() == pytest.approx([1.95, 2.0, 3.0, -2.05, -3.0, None], abs=1e-12)
    assert result["deviation_pct"].to_list() == pytest.approx([39.0, 40.0, 60.0, -41.0, -60.0, None], abs=1e-9)


def test_deviations_precomputed_daily_predictions() -> None:
    # hours=4: sigma = 2·√4 = 4, thresholds 8 (warning) and 12 (critical); `predicted` given by the caller
    actual = pl.DataFrame(
        {
            "machine_id": ["m1", "m1", "m1", "m1", "m1"],
            "period_start": [DAY] * 5,
            "period_end": [HOUR] * 5,
            "energy_kwh": [107.9, 108.0, 112.0, 8.0, 3.0],
            "predicted": [100.0, 100.0, 100.0, 0.0, -1.0],
            "hours": [4, 4, 4, 4, None],  # NULL hours -> 1
        }
    )
    result = deviations(actual, manual_fit(), key=["machine_id"])

    assert result["predicted"].to_list() == [100.0, 100.0, 100.0, 0.0, -1.0]
    assert result["deviation"].to_list() == pytest.approx([7.9, 8.0, 12.0, 8.0, 4.0], abs=1e-12)
    assert result["severity"].to_list() == ["normal", "warning", "critical", "warning", "warning"]
    assert result["z"].to_list() == pytest.approx([1.975, 2.0, 3.0, 2.0, 2.0], abs=1e-12)
    # predicted <= 0: no percentage
    assert result["deviation_pct"].to_list() == pytest.approx([7.9, 8.0, 12.0, None, None], abs=1e-9)


def test_deviations_custom_sigmas_and_perfect_fit() -> None:
    actual = pl.DataFrame(
        {
            "machine_id": ["m1", "m2"],
            "period_start": [DAY] * 2,
            "period_end": [HOUR] * 2,
            "energy_kwh": [11.0, 10.0],
            "predicted": [10.0, 10.0],
        }
    )
    result = deviations(actual, manual_fit(), key=["machine_id"], warning_sigma=0.5, critical_sigma=1.0)
    assert result["severity"].to_list() == ["warning", "normal"]  # 1.0 >= 0.5·2, < 1·2
    # rmse 0 (perfect fit): no z, any gap is critical, no gap is normal
    result = deviations(actual, manual_fit(rmse=0.0), key=["machine_id"])
    assert result["severity"].to_list() == ["critical", "normal"]
    assert result["z"].to_list() == [None, None]


def test_round_trip_through_json() -> None:
    for fit in (manual_fit(), fit_baseline(plant(1500), "energy_kwh", DRIVERS)):
        restored = BaselineFit.from_dict(json.loads(json.dumps(fit.to_dict())))
        assert restored == fit
        assert isinstance(restored.drivers, tuple)
    warned = fit_baseline(plant(1500, noise_only=True), "energy_kwh", DRIVERS)
    assert BaselineFit.from_dict(json.loads(json.dumps(warned.to_dict()))) == warned


def test_non_finite_values_stored_as_null() -> None:
    fit = BaselineFit(**{**manual_fit().__dict__, "p_values": {**manual_fit().p_values, "intercept": math.nan}})
    stored = json.dumps(fit.to_dict(), allow_nan=False)  # strict JSON: jsonb rejects NaN
    restored = BaselineFit.from_dict(json.loads(stored))
    assert math.isnan(restored.p_values["intercept"])
    assert restored.coefficients == fit.coefficients


def test_an_hour_is_abnormal_with_fault_time_or_maintenance_in_its_planned_downtime() -> None:
    assert ABNORMAL_TIME == (("fault_time_s", None), ("planned_downtime_s", "maintenance_s"))
    assert not abnormal_hour({})
    assert not abnormal_hour({"energy_kwh": (12.0, {}), "fault_time_s": (0.0, {})})
    assert abnormal_hour({"fault_time_s": (1.0, {})})
    assert not abnormal_hour({"fault_time_s": (None, {})})  # not known: not abnormal, as SQL's coalesce(…, 0)
    # planned downtime is normal operation (breaks, shift changes) unless part of it was maintenance
    assert not abnormal_hour({"planned_downtime_s": (900.0, {"maintenance_s": 0.0})})
    assert not abnormal_hour({"planned_downtime_s": (900.0, {})})
    assert not abnormal_hour({"planned_downtime_s": (900.0, None)})
    assert abnormal_hour({"planned_downtime_s": (900.0, {"maintenance_s": 600.0})})
