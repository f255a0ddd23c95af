"""Textbook probes of the pure transforms: figures a reviewer computes by hand from the brief's definitions.

Energy baseline goodness of fit, ASHRAE Guideline 14: CV(RMSE) = sqrt(SSR / (n - p)) / mean(y), p the
model's parameters (the drivers and the intercept). Ten hours, y = 2 + 3x + e with residuals e = (1, -1, -1,
1, 1, -1, -1, 1, 0, 0), orthogonal to 1 and x, so OLS recovers a = 2, b = 3 and e exactly:

    SSR = 8, n = 10, p = 2, mean(y) = 2 + 3 x 4.5 = 15.5
    CV(RMSE) = sqrt(8 / 8) / 15.5 = 6.4516 %     (RMSE as stored, sqrt(SSR / n) = 0.8944)
    SST = 9 x 82.5 + 8 = 750.5,  R² = 1 - 8 / 750.5 = 0.98934
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from analytics_platform.transforms import machine_kpis as mk
from analytics_platform.transforms.energy_baseline import BaselineFit, fit_baseline, predict, with_degree_drivers
from analytics_platform.transforms.energy_kpis import TARIFF_SCHEMA

RESIDUALS = (1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 0.0, 0.0)


def ten_hours() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "production_count": [float(x) for x in range(10)],
            "energy_kwh": [2 + 3 * x + e for x, e in enumerate(RESIDUALS)],
        }
    )


def test_the_baseline_reports_ashrae_cv_rmse_with_n_minus_p_degrees_of_freedom() -> None:
    fit = fit_baseline(ten_hours(), "energy_kwh", ["production_count"], min_samples=10)
    assert fit.coefficients == pytest.approx({"intercept": 2.0, "production_count": 3.0}, rel=1e-12)
    assert fit.r2 == pytest.approx(1 - 8 / 750.5, rel=1e-12)
    assert fit.rmse == pytest.approx(math.sqrt(8 / 10), rel=1e-12)
    assert fit.cv_rmse_pct == pytest.approx(100 * math.sqrt(8 / 8) / 15.5, rel=1e-12)
    # stored and read back; a fit stored before the figure existed reads back without it
    assert BaselineFit.from_dict(fit.to_dict()) == fit
    older = {k: v for k, v in fit.to_dict().items() if k != "cv_rmse_pct"}
    assert math.isnan(BaselineFit.from_dict(older).cv_rmse_pct)


# ----- a tariff band edge in the hour a DST change repeats -------------------------------------------
#
# Berlin, 26 October 2025: clocks go back at 03:00 CEST to 02:00 CET, so local 02:00-03:00 happens twice
# (00:00-01:00Z, then 01:00-02:00Z). Peak 02:30-23:00 at 0.25, off-peak 23:00-02:30 at 0.125; a meter adds
# 1 kWh every quarter hour. Each local 02:00-03:00 is two off-peak quarters and two peak ones:
#   00:00-01:00Z (02:00-03:00 CEST): 2 x 0.125 + 2 x 0.25 = 0.75
#   01:00-02:00Z (02:00-03:00 CET):  2 x 0.125 + 2 x 0.25 = 0.75   (was 4 x 0.125 = 0.5: the 02:30 edge was
#   cut only at its first occurrence, 00:30Z, so the repeated hour was priced whole at its 02:00 band)
BERLIN_BANDS = [("peak", 150, 1380, 0.25), ("off_peak", 1380, 150, 0.125)]


def meter_only(rows: list[tuple], start: datetime, end: datetime) -> mk.KpiInputs:
    """What results/kpis.read_inputs gives for energy-meter readings alone (no run states, no power)."""
    stored = pl.DataFrame(rows, schema=mk.SERIES_READING_SCHEMA, orient="row").sort("time")
    before, after = pl.col("time") < start, pl.col("time") >= end
    return mk.KpiInputs(
        start=start,
        end=end,
        readings=stored.filter(~before & ~after),
        prior=stored.filter(before)
        .group_by(mk.SERIES, maintain_order=True)
        .last()
        .select(list(mk.SERIES_READING_SCHEMA)),
        states=pl.DataFrame(schema=mk.STATE_SCHEMA),
        prior_states=pl.DataFrame(schema=mk.STATE_SCHEMA),
        next_seen=stored.filter(after).group_by(mk.MACHINE).agg(pl.col("time").min()).select(list(mk.SEEN_SCHEMA)),
        next_readings=stored.filter(after)
        .group_by(mk.SERIES, maintain_order=True)
        .first()
        .select(list(mk.SERIES_READING_SCHEMA)),
    )


def test_a_band_edge_in_the_repeated_hour_of_a_dst_change_cuts_both_occurrences() -> None:
    start, end = datetime(2025, 10, 25, 23, tzinfo=UTC), datetime(2025, 10, 26, 3, tzinfo=UTC)
    meter = [
        (start - timedelta(hours=1) + timedelta(minutes=15 * k), "t1", "f1", "mc-01", "s-1", "energy", float(k))
        for k in range(25)
    ]
    plant = mk.Plant(
        tenants=pl.DataFrame([("*", "Europe/Berlin", "EUR", 0.5)], schema=mk.TENANT_SCHEMA, orient="row"),
        tariffs=pl.DataFrame([("*", "Europe/Berlin", *b) for b in BERLIN_BANDS], schema=TARIFF_SCHEMA, orient="row"),
        shifts=pl.DataFrame(schema=mk.SHIFT_SCHEMA),
        machines=pl.DataFrame([("*", "*", "*", 1.0, None)], schema=mk.MACHINE_META_SCHEMA, orient="row"),
    )
    hours = mk.fixed_periods("hour", start, end, timedelta(hours=1))
    result = mk.machine_kpis(meter_only(meter, start, end), hours, plant).filter(pl.col("kpi") == "energy_cost")
    costs = {row["period_start"]: row for row in result.iter_rows(named=True)}
    assert {at: row["value"] for at, row in costs.items()} == {
        start: 0.5,
        start + timedelta(hours=1): 0.75,
        start + timedelta(hours=2): 0.75,
        start + timedelta(hours=3): 1.0,
    }
    assert json.loads(costs[start + timedelta(hours=2)]["details"]) == {"kwh_by_band": {"off_peak": 2.0, "peak": 2.0}}


def test_degree_hours_below_and_above_base_temperatures_are_drivers() -> None:
    """E = 4 + 1.5 x max(0, 18 - T) + 2.5 x max(0, T - 24.5) over T = 10 .. 30 °C: the fit recovers 4, 1.5, 2.5."""
    temps = [10.0 + t for t in range(21)]
    energy = [4 + 1.5 * max(0.0, 18 - t) + 2.5 * max(0.0, t - 24.5) for t in temps]
    drivers = ["hdd18_avg_outdoor_temp", "cdd24.5_avg_outdoor_temp"]
    frame = with_degree_drivers(
        pl.DataFrame({"avg_outdoor_temp": [*temps, None], "energy_kwh": [*energy, 1.0]}), drivers
    )
    assert frame["hdd18_avg_outdoor_temp"].to_list()[:9] == [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    assert frame["cdd24.5_avg_outdoor_temp"].to_list()[-3:] == [4.5, 5.5, None]
    fit = fit_baseline(frame, "energy_kwh", drivers, min_samples=10)
    assert fit.n == 21  # the hour without a temperature has no degree hours
    assert fit.coefficients == pytest.approx(
        {"intercept": 4.0, "hdd18_avg_outdoor_temp": 1.5, "cdd24.5_avg_outdoor_temp": 2.5}, abs=1e-9
    )
    assert predict(fit, pl.DataFrame({"hdd18_avg_outdoor_temp": [2.0], "cdd24.5_avg_outdoor_temp": [0.0]}))[0] == (
        pytest.approx(7.0, abs=1e-9)
    )
