"""The trend math against hand-computed values, and scipy as an independent reference.

Hand example (x = 0..4 h, y = 1, 2, 3, 2, 5): the ten pairs give signs + + + + | + 0 + | − + | +,
so S = 7; the value 2 is tied twice, so Var(S) = (5·4·15 − 2·1·9) / 18 = 282 / 18; Z = (7 − 1) /
√(282/18); the pairwise slopes sorted are −1, 0, 1/3, 1, 1, 1, 1, 1, 1, 3, median 1, and the
intercept is median(y) − 1·median(x) = 2 − 2 = 0.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from scipy import stats

from analytics_platform.transforms.trends import judge, mann_kendall, series_trends, theil_sen


def test_mann_kendall_by_hand_with_a_tie() -> None:
    mk = mann_kendall([1.0, 2.0, 3.0, 2.0, 5.0])
    assert mk.s == 7
    assert mk.var_s == 282 / 18
    assert mk.z == 6 / math.sqrt(282 / 18)
    assert mk.p_value == pytest.approx(2 * stats.norm.sf(6 / math.sqrt(282 / 18)), rel=1e-12)
    assert mk.p_value == pytest.approx(0.129551, abs=1e-6)  # Φ(1.51587) = 0.935224


def test_mann_kendall_of_a_falling_series_uses_the_continuity_correction_upwards() -> None:
    mk = mann_kendall([10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    assert mk.s == -45
    assert mk.var_s == 10 * 9 * 25 / 18 == 125
    assert mk.z == -44 / math.sqrt(125)
    assert mk.p_value == pytest.approx(2 * stats.norm.sf(44 / math.sqrt(125)), rel=1e-9)


def test_mann_kendall_of_constant_or_tiny_series_is_no_evidence() -> None:
    flat = mann_kendall([4.0, 4.0, 4.0, 4.0])
    assert (flat.s, flat.var_s, flat.z, flat.p_value) == (0, 0.0, 0.0, 1.0)
    one = mann_kendall([1.0])
    assert (one.s, one.z, one.p_value) == (0, 0.0, 1.0)


def test_mann_kendall_s_and_variance_agree_with_scipy_kendalltau_on_tied_data() -> None:
    y = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0, 8.0, 9.0, 7.0, 9.0]
    x = list(range(len(y)))
    mk = mann_kendall(y)
    n0 = len(y) * (len(y) - 1) / 2
    ties_y = sum(t * (t - 1) / 2 for t in (y.count(v) for v in set(y)))
    tau = stats.kendalltau(x, y, method="asymptotic")
    # x has no ties: tau-b = S / sqrt(n0 (n0 − ties_y)); scipy's asymptotic z = S / sqrt(Var(S))
    assert mk.s == round(tau.statistic * math.sqrt(n0 * (n0 - ties_y)))
    z_scipy = stats.norm.isf(tau.pvalue / 2) * (1 if mk.s > 0 else -1)
    assert mk.var_s == pytest.approx((mk.s / z_scipy) ** 2, rel=1e-9)


def test_theil_sen_by_hand_and_against_scipy() -> None:
    x, y = [0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 2.0, 5.0]
    assert theil_sen(x, y) == (1.0, 0.0)
    x2 = [0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 9.0]
    y2 = [2.0, 2.5, 1.0, 4.0, 7.5, 9.0, 30.0]
    reference = stats.theilslopes(y2, x2)
    slope, intercept = theil_sen(x2, y2)
    assert slope == pytest.approx(reference.slope, rel=1e-12)
    assert intercept == pytest.approx(reference.intercept, rel=1e-12)
    assert theil_sen([1.0, 1.0], [2.0, 3.0]) is None  # no two x differ


def test_judge_names_the_direction_only_when_significant() -> None:
    hours = [float(h) for h in range(10)]
    assert judge(hours, [20.0 + 0.5 * h for h in range(10)]).direction == "increasing"
    assert judge(hours, [20.0 - 0.5 * h for h in range(10)]).direction == "decreasing"
    noisy = judge(hours, [20.0, 21.0, 19.0, 22.0, 18.0, 21.0, 20.0, 19.0, 22.0, 20.0])
    assert noisy.direction == "stable" and noisy.mann_kendall.p_value > 0.05
    few = judge([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], min_points=6)
    assert (few.n, few.slope, few.direction) == (3, None, "stable")


def test_series_trends_one_row_per_series_slope_per_hour_with_gaps() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    hours = [0, 1, 2, 4, 5, 7, 8]  # two missing hours: x keeps the real spacing
    rows = [("t1", "mc-01", start + timedelta(hours=h), 50.0 + 2.0 * h) for h in hours]
    rows += [("t2", "mc-01", start + timedelta(hours=h), 10.0) for h in hours]
    rows += [("t2", "mc-01", start + timedelta(hours=9), None)]
    points = pl.DataFrame(
        rows,
        schema={"tenant_id": pl.String, "machine_id": pl.String, "time": pl.Datetime("us", "UTC"), "value": pl.Float64},
        orient="row",
    )
    out = series_trends(points, ["tenant_id", "machine_id"], start).sort("tenant_id")
    assert out["tenant_id"].to_list() == ["t1", "t2"]
    assert out["n"].to_list() == [7, 7]
    assert out["slope_per_hour"].to_list() == [2.0, 0.0]
    assert out["intercept"].to_list() == [50.0, 10.0]
    assert out["mk_s"].to_list() == [21, 0]
    assert out["direction"].to_list() == ["increasing", "stable"]
    assert out["p_value"][0] == pytest.approx(2 * stats.norm.sf(20 / math.sqrt(7 * 6 * 19 / 18)), rel=1e-12)
    assert out["confidence"][0] == 1 - out["p_value"][0]
    assert out["last_time"].to_list() == [start + timedelta(hours=8)] * 2
