"""ISO 50001 energy baseline (EnB): an ordinary-least-squares model of energy on its relevant
variables (production, outdoor temperature, ...) fitted on a reference period, then used to say how
much energy a period *should* have taken and whether the actual consumption deviates from it.

Why a regression and not a plain "kWh last year": energy performance is only comparable once the
drivers the plant does not control (weather, order book) are normalised out; the model gives the
expected value for the conditions actually met, and its own residual spread says how large a gap
must be before it means something.

Conventions:
* Training rows are those whose `exclude_column` flag is not true (maintenance and fault hours are
  flagged by the caller; a NULL flag or an absent column excludes nothing) and whose target and
  drivers are all present and finite (NULL, NaN and ±inf rows are dropped). Both kinds of dropped
  rows are counted in `BaselineFit.excluded`.
* A model is refused (`BaselineRefused`, a `ValueError` with a user-facing message) rather than
  fitted badly: too few usable rows, a missing or non-numeric column, a constant driver or target,
  or collinear drivers (singular design matrix). A poor but valid fit (R² below the threshold) is
  kept, with `warning` saying so: it is the user's call whether to look for better drivers.
* RMSE is sqrt(SSR / n) over the training rows (not the degrees-of-freedom corrected σ̂).
  CV(RMSE) is ASHRAE Guideline 14's: sqrt(SSR / (n - p)) / mean(target), p the model's parameters
  (drivers + intercept), in percent (`cv_rmse_pct`; the guideline accepts an hourly model up to 30 %).
* Severity of a deviation (consistent with the platform's 2σ/3σ convention): a row summing
  `hours` hourly samples has an expected residual spread of RMSE·√hours (independent hourly
  residuals add in variance), so with σ_row = RMSE·√hours:
  |deviation| >= critical_sigma·σ_row → 'critical', >= warning_sigma·σ_row → 'warning', else
  'normal'; z = deviation / σ_row. A row with no actual or no prediction has NULL deviation,
  severity and z. When σ_row is 0 (a perfect fit) z is NULL and any non-zero deviation is critical.
* Degree hours: a driver named `hdd<base>_<kpi>` or `cdd<base>_<kpi>` (`hdd18_avg_outdoor_temp`,
  `cdd24.5_avg_outdoor_temp`) is the hour's heating degrees below, or cooling degrees above, a base
  temperature of a stored temperature KPI: max(0, base - T) or max(0, T - base) (`with_degree_drivers`),
  the textbook weather terms (heating below a base temperature, cooling above another), which a line in T
  cannot fit. A what-if prediction takes their values as given.
* For an aggregated row (e.g. a day of 24 hours) the prediction must be the sum of the hourly
  predictions, which only the caller can compute (drivers are not additive in general): pass it as
  a `predicted` column; without that column `deviations()` predicts each row from its own drivers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import polars as pl

INTERCEPT = "intercept"
SEVERITIES = ("normal", "warning", "critical")
# Hours a baseline neither trains on nor judges: the machine was not operating normally. Each entry
# is a stored hourly KPI and, where the amount is one part of it, its `details` key; an hour is
# abnormal when any amount is above 0. One declaration read twice: results/baselines.py renders it
# as SQL for training, the ISO 50001 report (api/routes/reports.py) applies it to the hours it
# compares with the baseline, so what a model learned from and what it is judged on cannot drift.
ABNORMAL_TIME: tuple[tuple[str, str | None], ...] = (("fault_time_s", None), ("planned_downtime_s", "maintenance_s"))


def abnormal_hour(amounts: dict[str, tuple[float | None, dict]]) -> bool:
    """Whether an hour is abnormal by ABNORMAL_TIME, given each stored KPI's (value, details) of the
    hour (a KPI not stored counts as 0)."""
    for kpi, key in ABNORMAL_TIME:
        value, details = amounts.get(kpi, (None, {}))
        amount = value if key is None else (details or {}).get(key)
        if amount is not None and amount > 0:
            return True
    return False


_DEGREE_DRIVER = re.compile(r"^(hdd|cdd)(\d+(?:\.\d+)?)_(.+)$")


def degree_driver(name: str) -> tuple[str, float, str] | None:
    """("hdd" or "cdd", the base temperature, the temperature KPI) of a degree-hour driver name, else None."""
    match = _DEGREE_DRIVER.match(name)
    return (match.group(1), float(match.group(2)), match.group(3)) if match else None


def source_kpis(drivers: Sequence[str]) -> list[str]:
    """The stored KPIs `drivers` are read from, once each, in order: a degree-hour driver's temperature
    KPI, any other driver itself."""
    out: list[str] = []
    for name in drivers:
        degree = degree_driver(name)
        source = degree[2] if degree else name
        if source not in out:
            out.append(source)
    return out


def with_degree_drivers(frame: pl.DataFrame, drivers: Sequence[str]) -> pl.DataFrame:
    """`frame` (the drivers' `source_kpis` as columns) with each degree-hour driver of `drivers` added:
    max(0, base - T) for hdd, max(0, T - base) for cdd; NULL where T is."""
    added = []
    for name in drivers:
        degree = degree_driver(name)
        if degree is None or name in frame.columns:
            continue
        kind, base, source = degree
        t = pl.col(source).cast(pl.Float64)
        added.append(((base - t) if kind == "hdd" else (t - base)).clip(lower_bound=0.0).alias(name))
    return frame.with_columns(added) if added else frame


# BaselineFit fields a fit stored by an older release lacks: read back as NaN
_ADDED_LATER = frozenset({"cv_rmse_pct"})


class BaselineRefused(ValueError):
    """A model cannot (or must not) be fitted or applied; the message is meant for the end user, so it
    says what is wrong with the data and what would be needed, not a stack trace."""


@dataclass(frozen=True)
class BaselineFit:
    """A fitted baseline, self-contained so it can be stored (jsonb) and re-applied later without
    refitting: the coefficients predict, the RMSE grades deviations, the statistics justify the model."""

    target: str
    drivers: tuple[str, ...]
    coefficients: dict[str, float]
    p_values: dict[str, float]
    std_errors: dict[str, float]
    r2: float
    adj_r2: float
    rmse: float
    mae: float
    n: int
    excluded: int
    warning: str | None
    cv_rmse_pct: float = math.nan  # NaN: a fit stored before it was computed

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON (non-finite floats become None: PostgreSQL jsonb rejects NaN)."""
        return {
            "target": self.target,
            "drivers": list(self.drivers),
            "coefficients": {k: _json_float(v) for k, v in self.coefficients.items()},
            "p_values": {k: _json_float(v) for k, v in self.p_values.items()},
            "std_errors": {k: _json_float(v) for k, v in self.std_errors.items()},
            "r2": _json_float(self.r2),
            "adj_r2": _json_float(self.adj_r2),
            "rmse": _json_float(self.rmse),
            "mae": _json_float(self.mae),
            "n": self.n,
            "excluded": self.excluded,
            "warning": self.warning,
            "cv_rmse_pct": _json_float(self.cv_rmse_pct),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaselineFit:
        """Inverse of `to_dict` (None back to NaN); unknown keys are ignored so older readers survive
        newer stored fits."""
        missing = [f.name for f in fields(cls) if f.name not in d and f.name not in _ADDED_LATER]
        if missing:
            raise ValueError(f"stored baseline is missing {', '.join(missing)}")
        return cls(
            target=str(d["target"]),
            drivers=tuple(d["drivers"]),
            coefficients={k: _from_json_float(v) for k, v in d["coefficients"].items()},
            p_values={k: _from_json_float(v) for k, v in d["p_values"].items()},
            std_errors={k: _from_json_float(v) for k, v in d["std_errors"].items()},
            r2=_from_json_float(d["r2"]),
            adj_r2=_from_json_float(d["adj_r2"]),
            rmse=_from_json_float(d["rmse"]),
            mae=_from_json_float(d["mae"]),
            n=int(d["n"]),
            excluded=int(d["excluded"]),
            warning=d["warning"],
            cv_rmse_pct=_from_json_float(d.get("cv_rmse_pct")),
        )


def fit_baseline(
    samples: pl.DataFrame,
    target: str,
    drivers: Sequence[str],
    *,
    min_samples: int = 1000,
    r2_threshold: float = 0.80,
    exclude_column: str | None = "excluded",
) -> BaselineFit:
    """OLS of `target` on `drivers` plus an intercept over the usable rows of `samples` (see the module
    docstring). Refuses instead of returning a model whose numbers would mislead."""
    drivers = tuple(drivers)
    _check_columns(samples, target, drivers)
    columns = (target, *drivers)
    marked = _marked(samples, columns, exclude_column)
    n_flagged = int(marked["_flagged"].sum())
    n_missing = int((~marked["_flagged"] & ~marked["_present"]).sum())
    # in one order whatever order the rows came in (the KPI table returns its hours as its plan
    # pleases): least squares adds the rows up, and float addition is not associative, so a model
    # refitted on the same hours would otherwise differ in its last bits
    usable = marked.filter(~pl.col("_flagged") & pl.col("_present")).select(columns).sort(columns)
    n = usable.height
    dropped = n_flagged + n_missing

    needed = max(min_samples, len(drivers) + 2)  # at least one residual degree of freedom
    if n < needed:
        raise BaselineRefused(
            f"Cannot fit the {target} baseline: only {n} usable rows, {needed} needed "
            f"({dropped} dropped: {n_flagged} flagged excluded, {n_missing} with a NULL/NaN {target} or driver)."
        )
    for column in columns:
        values = usable[column]
        if values.min() == values.max():
            role = "target" if column == target else "driver"
            raise BaselineRefused(
                f"Cannot fit the {target} baseline: {role} '{column}' is constant ({values[0]}) over the "
                f"{n} usable rows, so its effect cannot be estimated; remove it or choose a period where it varies."
            )

    y = usable[target].to_numpy()
    x = np.column_stack([np.ones(n), usable.select(drivers).to_numpy()])
    if np.linalg.matrix_rank(x) < x.shape[1]:
        raise BaselineRefused(
            f"Cannot fit the {target} baseline: the drivers {', '.join(drivers)} are collinear "
            "(singular design matrix: one is a linear combination of the others); remove the redundant one."
        )

    # imported here: statsmodels costs ~1.7 s to import, and every Dagster run process and code
    # server imports this module, while only a baseline fit needs it
    import statsmodels.api as sm

    result = sm.OLS(y, x).fit()
    names = (INTERCEPT, *drivers)
    residuals = np.asarray(result.resid)
    r2 = float(result.rsquared)
    warning = None
    if r2 < r2_threshold:
        warning = (
            f"R² {r2:.2f} is below {r2_threshold:.2f}: the drivers {', '.join(drivers)} explain too little of "
            f"{target}; deviations against this baseline are unreliable, consider other drivers or another period."
        )
    return BaselineFit(
        target=target,
        drivers=drivers,
        coefficients=dict(zip(names, map(float, result.params), strict=True)),
        p_values=dict(zip(names, map(float, result.pvalues), strict=True)),
        std_errors=dict(zip(names, map(float, result.bse), strict=True)),
        r2=r2,
        adj_r2=float(result.rsquared_adj),
        rmse=float(np.sqrt(np.mean(residuals**2))),
        mae=float(np.mean(np.abs(residuals))),
        n=n,
        excluded=dropped,
        warning=warning,
        cv_rmse_pct=_cv_rmse_pct(residuals, y, len(names)),
    )


def _cv_rmse_pct(residuals: np.ndarray, y: np.ndarray, parameters: int) -> float:
    """ASHRAE Guideline 14's CV(RMSE) in percent: sqrt(SSR / (n - p)) / mean(y); NaN for a mean of 0 or
    below (a share of nothing, or of a negative energy, means nothing)."""
    mean = float(np.mean(y))
    if mean <= 0:
        return math.nan
    return float(100 * np.sqrt(np.sum(residuals**2) / (len(y) - parameters)) / mean)


def usable_rows(
    samples: pl.DataFrame, target: str, drivers: Sequence[str], *, exclude_column: str | None = "excluded"
) -> int:
    """How many rows `fit_baseline` would train on (not flagged, target and drivers finite): what a
    request to train is checked against before a run is started for it."""
    drivers = tuple(drivers)
    _check_columns(samples, target, drivers)
    marked = _marked(samples, (target, *drivers), exclude_column)
    return int((~marked["_flagged"] & marked["_present"]).sum())


def _marked(samples: pl.DataFrame, columns: tuple[str, ...], exclude_column: str | None) -> pl.DataFrame:
    """`columns` as floats with `_flagged` (excluded by the caller) and `_present` (every column finite)."""
    flagged = pl.lit(False)
    if exclude_column is not None and exclude_column in samples.columns:
        flagged = pl.col(exclude_column).cast(pl.Boolean).fill_null(False)
    present = pl.all_horizontal(
        [pl.col(c).cast(pl.Float64).is_not_null() & pl.col(c).cast(pl.Float64).is_finite() for c in columns]
    )
    return samples.select(*(pl.col(c).cast(pl.Float64) for c in columns), _flagged=flagged, _present=present)


def predict(fit: BaselineFit, drivers: pl.DataFrame) -> pl.Series:
    """Expected target for each row (what-if or per-period): intercept + Σ coef·driver. A NULL or NaN
    driver gives a NULL prediction rather than a number silently missing a term."""
    missing = [d for d in fit.drivers if d not in drivers.columns]
    if missing:
        raise BaselineRefused(f"Cannot predict {fit.target}: driver column(s) {', '.join(missing)} missing.")
    expression = pl.lit(fit.coefficients[INTERCEPT], pl.Float64)
    for driver in fit.drivers:
        expression = expression + fit.coefficients[driver] * pl.col(driver).cast(pl.Float64).fill_nan(None)
    return drivers.select(predicted=expression).to_series()


def deviations(
    actual: pl.DataFrame,
    fit: BaselineFit,
    *,
    key: Sequence[str],
    warning_sigma: float = 2.0,
    critical_sigma: float = 3.0,
) -> pl.DataFrame:
    """Actual vs expected per row of `actual` (*key, period_start, period_end, the target column, and
    either the driver columns or a precomputed `predicted` column; optional integer `hours`, default 1,
    NULL read as 1). Returns *key, period_start, period_end, actual, predicted, deviation (actual -
    predicted), deviation_pct (NULL when predicted <= 0: a percentage of nothing means nothing),
    severity and z, graded by the rule in the module docstring."""
    if not 0 < warning_sigma <= critical_sigma:
        raise ValueError(f"need 0 < warning_sigma <= critical_sigma, got {warning_sigma} and {critical_sigma}")
    key = tuple(key)
    required = [*key, "period_start", "period_end", fit.target]
    absent = [c for c in required if c not in actual.columns]
    if absent:
        raise BaselineRefused(f"Cannot compute {fit.target} deviations: column(s) {', '.join(absent)} missing.")
    if "predicted" in actual.columns:
        predicted = actual["predicted"].cast(pl.Float64).fill_nan(None)
    else:
        predicted = predict(fit, actual)
    hours = actual["hours"].fill_null(1) if "hours" in actual.columns else pl.repeat(1, actual.height, eager=True)
    if (hours < 1).any():
        raise ValueError("hours must be >= 1 (the number of hourly samples a row sums)")

    frame = actual.select(
        *key,
        "period_start",
        "period_end",
        actual=pl.col(fit.target).cast(pl.Float64).fill_nan(None),
        predicted=predicted,
        _sigma=fit.rmse * hours.cast(pl.Float64).sqrt(),
    ).with_columns(deviation=pl.col("actual") - pl.col("predicted"))
    magnitude = pl.col("deviation").abs()
    return frame.select(
        *key,
        "period_start",
        "period_end",
        "actual",
        "predicted",
        "deviation",
        deviation_pct=pl.when(pl.col("predicted") > 0).then(100 * pl.col("deviation") / pl.col("predicted")),
        severity=pl.when(pl.col("deviation").is_null())
        .then(pl.lit(None, pl.String))
        .when(magnitude == 0)
        .then(pl.lit("normal"))
        .when(magnitude >= critical_sigma * pl.col("_sigma"))
        .then(pl.lit("critical"))
        .when(magnitude >= warning_sigma * pl.col("_sigma"))
        .then(pl.lit("warning"))
        .otherwise(pl.lit("normal")),
        z=pl.when(pl.col("_sigma") > 0).then(pl.col("deviation") / pl.col("_sigma")),
    )


def _check_columns(samples: pl.DataFrame, target: str, drivers: tuple[str, ...]) -> None:
    if not drivers:
        raise BaselineRefused(f"Cannot fit the {target} baseline: at least one driver is needed.")
    if len(set(drivers)) != len(drivers) or target in drivers:
        raise BaselineRefused(f"Cannot fit the {target} baseline: drivers must be distinct and differ from the target.")
    missing = [c for c in (target, *drivers) if c not in samples.columns]
    if missing:
        raise BaselineRefused(f"Cannot fit the {target} baseline: column(s) {', '.join(missing)} missing.")
    for column in (target, *drivers):
        dtype = samples.schema[column]
        if not (dtype.is_numeric() or dtype == pl.Boolean):
            raise BaselineRefused(f"Cannot fit the {target} baseline: column '{column}' is {dtype}, not numeric.")


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _from_json_float(value: float | None) -> float:
    return math.nan if value is None else float(value)
