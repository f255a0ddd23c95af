"""Textbook probes of the pure transforms: figures a reviewer computes by hand from the brief's definitions.

Energy baseline goodness of fit, ASHRAE Guideline 14: CV(RMSE) = sqrt(SSR / (n - p)) / mean(y), p the
model's parameters (the drivers and the intercept). Ten hours, y = 2 + 3x + e with residuals e = (1, -1, -1,
1, 1, -1, -1, 1, 0, 0), orthogonal to 1 and x, so OLS recovers a = 2, b = 3 and e exactly:

    SSR = 8, n = 10, p = 2, mean(y) = 2 + 3 x 4.5 = 15.5
    CV(RMSE) = sqrt(8 / 8) / 15.5 = 6.4516 %     (RMSE as stored, sqrt(SSR / n) = 0.8944)
    SST = 9 x 82.5 + 8 = 750.5,  R² = 1 - 8 / 750.5 = 0.98934
"""

from __future__ import annotations

import math

import polars as pl
import pytest

from analytics_platform.transforms.energy_baseline import BaselineFit, fit_baseline

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
