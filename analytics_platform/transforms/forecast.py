"""Energy and peak-demand forecasts per machine and factory, and the metrics that judge them (issue 25).

Why this model: a plant's hourly energy and peak demand repeat by hour of day (shifts, breaks,
planned stops) and by weekday/weekend, move with the weather, and carry minutes-long disturbances
(faults, idle spells) that persist for an hour or two. So each series is forecast by a regression
on its own seasonal profile and the outdoor temperature with AR(1) errors (statsmodels SARIMAX,
order (1, 0, 0), the regression estimated by maximum likelihood with OLS start values):

  * profile: the median of the series per local hour of day and day class (weekday / weekend) over
    the history (both classes need MIN_CLASS_DAYS days, else one class for all days; an hour
    without data takes the series' median), and, where every weekday has MIN_CLASS_DAYS + 1 days, a
    second regressor: each weekday-hour's own median minus the profile (a Saturday unlike Sunday).
    History hours get leave-one-out medians, so the fit's residuals are as large as a forecast's
    errors. This is where the shift plan enters: it repeats daily and weekly, so its planned stops
    and weekend crews are hours of the profile. The platform holds no production plan, so none is used.
  * weather: the hour's mean outdoor temperature (avg_outdoor_temp) minus its hour-of-day mean over
    the history. For the future no weather forecast is known, so the anomaly is 0 unless the caller
    passes a forecast (`future_temp`); the coefficient still keeps weather out of the residuals.
  * AR(1) errors: the last hours' deviation from the profile decays into the first forecast hours.

Prediction intervals are empirical, not Gaussian: an hour's energy falls by a fault far more often
and further than noise lifts it, so a symmetric normal band is too narrow below and too wide above.
The band is the point forecast plus the split-conformal bounds (`band_quantiles`) of the in-sample
residuals of the steady-state prediction (profile, and weather only when the future's is known;
without the AR part): the error a forecast a day or more ahead makes. A day's forecast aggregates
its hours (energy: the sum;
peak demand: the largest hour) and its band is built the same way from the in-sample errors of
whole days, so a peak forecast also corrects the max of hourly expectations for being below the
expected max (median daily error added).

The metrics (`mae`, `mape`, `mase`, `coverage`) and the `seasonal_naive` baseline are the textbook
definitions (Hyndman & Koehler 2006); bench/forecast.py and the unit tests use them. Nothing here
reads a clock or a database.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from analytics_platform.transforms.window_aggregates import TIME

MODEL = "sarimax-ar1-profile-1"
FALLBACK_MODEL = "ols-profile-1"  # when the likelihood fit fails: the same regression, no AR part
FACTORY = "*"  # machine_id of a factory's rows
ENERGY = "energy_kwh"
PEAK = "peak_demand_kw"
TEMP = "avg_outdoor_temp"
TARGETS: dict[str, tuple[str, Literal["sum", "max"]]] = {ENERGY: ("kWh", "sum"), PEAK: ("kW", "max")}
MIN_CLASS_DAYS = 2  # days of a day class before its own profile is used
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

HOURS_SCHEMA: dict[str, pl.DataType] = {
    "period_start": TIME,
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "machine_id": pl.String(),
    "kpi": pl.String(),
    "value": pl.Float64(),
}
FORECAST_SCHEMA: dict[str, pl.DataType] = {
    "issued_at": TIME,
    "period": pl.String(),
    "target_start": TIME,
    "target_end": TIME,
    "horizon_day": pl.Int16(),
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "machine_id": pl.String(),
    "kpi": pl.String(),
    "value": pl.Float64(),
    "lower": pl.Float64(),
    "upper": pl.Float64(),
    "level": pl.Float64(),
    "unit": pl.String(),
    "model": pl.String(),
    "details": pl.String(),  # JSON
}


@dataclass(frozen=True)
class ForecastOptions:
    """How far back a series is learned, how far ahead it is forecast, the band's nominal level and
    how much history a series needs before it is forecast at all.

    Six whole weeks of history: every weekday is seen equally often (6 days per weekday cell), and
    the day band's n = 42 day errors put its conformal ranks (2nd smallest, 41st) at an expected
    coverage of 39/43 = 0.907 for a nominal 0.90, where 28 days gave the extremes and 27/29 = 0.931
    (bench/forecast.py measured 0.96-0.97 on the ground truth with 28)."""

    history_days: int = 42
    horizon_days: int = 7
    level: float = 0.9
    min_history_days: int = 7
    weekend_days: tuple[int, ...] = (6, 7)  # ISO weekdays (Mon = 1) of the second day class


# ----- metrics and the baseline -----------------------------------------------------------------------
def seasonal_naive(history: Sequence[float], season: int, steps: int) -> np.ndarray:
    """ŷ[T+h] = y[T+h − season·⌈h/season⌉]: each future hour repeats the same hour of the last
    season in the history (NaN where that hour is missing)."""
    y = np.asarray(history, dtype=float)
    if y.size < season:
        raise ValueError(f"seasonal naive needs a whole season ({season}) of history, got {y.size}")
    last = y[-season:]
    return np.array([last[h % season] for h in range(steps)], dtype=float)


def _pairs(actual: Sequence[float], forecast: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, f = np.asarray(actual, dtype=float), np.asarray(forecast, dtype=float)
    if a.shape != f.shape:
        raise ValueError(f"actual and forecast differ in length: {a.shape} vs {f.shape}")
    keep = np.isfinite(a) & np.isfinite(f)
    return a[keep], f[keep]


def mae(actual: Sequence[float], forecast: Sequence[float]) -> float | None:
    """Mean absolute error over the pairs where both are known; None without any."""
    a, f = _pairs(actual, forecast)
    return float(np.mean(np.abs(a - f))) if a.size else None


def mape(actual: Sequence[float], forecast: Sequence[float]) -> float | None:
    """Mean absolute percentage error, in percent: mean(|a − f| / |a|) × 100 over the pairs with a
    known, non-zero actual (a zero actual has no percentage error); None without any."""
    a, f = _pairs(actual, forecast)
    keep = a != 0
    return float(np.mean(np.abs(a[keep] - f[keep]) / np.abs(a[keep])) * 100) if keep.any() else None


def naive_scale(training: Sequence[float], season: int) -> float | None:
    """The in-sample MAE of the seasonal-naive forecast, mean |y[t] − y[t−season]| over the training
    pairs where both are known: the denominator of MASE. None when there is no such pair."""
    y = np.asarray(training, dtype=float)
    if y.size <= season:
        return None
    diff = y[season:] - y[:-season]
    diff = diff[np.isfinite(diff)]
    return float(np.mean(np.abs(diff))) if diff.size else None


def mase(actual: Sequence[float], forecast: Sequence[float], training: Sequence[float], season: int) -> float | None:
    """Mean absolute scaled error: MAE of the forecast / the in-sample seasonal-naive MAE of
    `training`. Below 1: better than the seasonal-naive forecast was in sample. None when either is
    undefined or the scale is 0 (a series that repeats exactly)."""
    error, scale = mae(actual, forecast), naive_scale(training, season)
    if error is None or scale is None or scale == 0:
        return None
    return error / scale


def coverage(actual: Sequence[float], lower: Sequence[float], upper: Sequence[float]) -> float | None:
    """The fraction of known actuals inside their band [lower, upper] (bounds included); None without any."""
    a = np.asarray(actual, dtype=float)
    lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    keep = np.isfinite(a) & np.isfinite(lo) & np.isfinite(hi)
    return float(np.mean((a[keep] >= lo[keep]) & (a[keep] <= hi[keep]))) if keep.any() else None


# ----- one series -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calendar:
    """Per hour of a grid: the local hour of day (0..23), ISO weekday (1..7) and day class (weekend)."""

    hour: np.ndarray
    weekday: np.ndarray
    weekend: np.ndarray

    @classmethod
    def of(cls, start: datetime, hours: int, timezone: str, weekend_days: tuple[int, ...]) -> Calendar:
        """The calendar of `hours` hours from `start` (UTC) in `timezone`."""
        zone = ZoneInfo(timezone or "UTC")
        local = [(start + HOUR * i).astimezone(zone) for i in range(hours)]
        weekday = np.array([t.isoweekday() for t in local], dtype=np.int64)
        return cls(np.array([t.hour for t in local], dtype=np.int64), weekday, np.isin(weekday, weekend_days))

    def __getitem__(self, part: slice) -> Calendar:
        return Calendar(self.hour[part], self.weekday[part], self.weekend[part])


def cell_medians(
    y: np.ndarray, cells: np.ndarray, target_cells: np.ndarray, min_count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Medians of `y` (NaN = missing) per cell: for each history hour the median of the OTHER known
    hours of its cell (leave one out, so an hour never predicts itself and the in-sample residuals
    are as large as a forecast's), for each target hour the median of its whole cell. NaN where a
    cell has fewer than `min_count` known hours (leaving one out: fewer than `min_count` others)."""
    known = np.isfinite(y)
    in_sample = np.full(y.size, math.nan)
    full: dict[int, float] = {}
    for cell in np.unique(cells):
        where = np.flatnonzero(known & (cells == cell))
        values = y[where]
        if values.size >= min_count:
            full[int(cell)] = float(np.median(values))
        if values.size > min_count:
            for j, i in enumerate(where):
                in_sample[i] = float(np.median(np.delete(values, j)))
    target = np.array([full.get(int(c), math.nan) for c in target_cells])
    return in_sample, target


def profiles(y: np.ndarray, history: Calendar, target: Calendar) -> tuple[np.ndarray, np.ndarray]:
    """The seasonal profile of `y` over history and target hours (see the module docstring) and the
    weekday adjustment: per hour of the week the median minus the profile, where each weekday has
    MIN_CLASS_DAYS + 1 days (0 elsewhere). History hours get leave-one-out medians."""
    known = np.isfinite(y)
    overall = float(np.median(y[known])) if known.any() else math.nan
    both = all(np.sum(known & (history.weekend == w)) / 24 >= MIN_CLASS_DAYS for w in (False, True))
    hist_class = history.weekend.astype(np.int64) if both else np.zeros(history.hour.size, dtype=np.int64)
    target_class = target.weekend.astype(np.int64) if both else np.zeros(target.hour.size, dtype=np.int64)
    loo, ahead = cell_medians(y, hist_class * 24 + history.hour, target_class * 24 + target.hour, 1)
    loo_h, ahead_h = cell_medians(y, history.hour, target.hour, 1)
    base = np.where(np.isfinite(loo), loo, np.where(np.isfinite(loo_h), loo_h, overall))
    base_t = np.where(np.isfinite(ahead), ahead, np.where(np.isfinite(ahead_h), ahead_h, overall))
    week, week_t = cell_medians(
        y, history.weekday * 24 + history.hour, target.weekday * 24 + target.hour, MIN_CLASS_DAYS + 1
    )
    past = np.concatenate([base, base_t])
    adjust = np.concatenate([np.nan_to_num(week - base), np.nan_to_num(week_t - base_t)])
    return past, adjust


def _hour_means(x: np.ndarray, cal: Calendar) -> np.ndarray:
    """Per hour of day, the mean of `x` (NaN = missing) over `cal`; NaN for an hour without data."""
    out = np.full(24, math.nan)
    for hour in range(24):
        cell = x[(cal.hour == hour) & np.isfinite(x)]
        if cell.size:
            out[hour] = float(np.mean(cell))
    return out


@dataclass(frozen=True)
class SeriesForecast:
    """The hourly forecast of one series from its origin, its band, and the days it adds up to."""

    value: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    day_value: np.ndarray
    day_lower: np.ndarray
    day_upper: np.ndarray
    model: str
    details: dict = field(default_factory=dict)


def forecast_series(
    y: np.ndarray,
    calendar: Calendar,
    *,
    steps: int,
    aggregate: Literal["sum", "max"],
    level: float,
    temp: np.ndarray | None = None,
    future_temp: np.ndarray | None = None,
) -> SeriesForecast:
    """Forecast `steps` hours after the hourly history `y` (NaN = missing hour; it ends at the
    origin, a day boundary, and spans whole days). `calendar` covers history and future
    (len(y) + steps hours); `temp` is the history's outdoor temperature (NaN = unknown),
    `future_temp` a weather forecast for the steps if one is known. Days are consecutive blocks of
    24 steps, aggregated by `aggregate`."""
    n = y.size
    if n % 24 or steps % 24:
        raise ValueError("history and horizon must be whole days of hours")
    past, future = calendar[:n], calendar[n:]
    seasonal, weekday = profiles(y, past, future)
    columns, names = [np.ones(n + steps), seasonal], ["const", "profile"]
    if np.std(weekday[:n]) > 1e-9:
        columns.append(weekday)
        names.append("weekday")
    if temp is not None and np.isfinite(temp).sum() >= 48:
        normal = _hour_means(temp, past)
        anomaly = np.nan_to_num(temp - normal[past.hour])
        ahead = np.zeros(steps)
        if future_temp is not None:
            ahead = np.nan_to_num(np.asarray(future_temp, dtype=float) - normal[future.hour])
        if np.std(anomaly) > 1e-9:
            columns.append(np.concatenate([anomaly, np.nan_to_num(ahead)]))
            names.append("temp_anomaly")
    x = np.column_stack(columns)
    xh, xf = x[:n], x[n:]
    known = np.isfinite(y)
    beta = np.linalg.lstsq(xh[known], y[known], rcond=None)[0]
    steady = xh @ beta
    model, details = MODEL, {"history_hours": int(known.sum()), "drivers": names[1:]}
    try:
        point, beta = _sarimax(y, xh, xf, beta)
        details["ar1"] = round(float(beta[-1]), 6)
        beta = beta[:-1]
        steady = xh @ beta
    except (np.linalg.LinAlgError, ValueError, RuntimeError, ArithmeticError) as exc:
        # one series' failed likelihood fit must not fail the plant's run: its rows say so (details)
        model, point = FALLBACK_MODEL, xf @ beta
        details["fallback"] = f"{type(exc).__name__}: {exc}"
    details["coefficients"] = {name: round(float(b), 6) for name, b in zip(names, beta, strict=True)}
    if "temp_anomaly" in names and future_temp is None:
        # the future's weather is not known: the band must hold the error of not knowing it too
        steady = steady - beta[names.index("temp_anomaly")] * xh[:, names.index("temp_anomaly")]
    residuals = (y - steady)[known]
    point = np.maximum(point, 0.0)  # energy and demand are never negative
    low, high = band_quantiles(residuals, level)
    lower = np.clip(point + low, 0.0, point)
    upper = np.maximum(point + high, point)
    agg = np.nansum if aggregate == "sum" else np.max
    days = steps // 24
    day_point = np.array([agg(point[d * 24 : (d + 1) * 24]) for d in range(days)])
    fitted_days, actual_days = [], []
    for d in range(n // 24):
        block = slice(d * 24, (d + 1) * 24)
        if known[block].all():
            fitted_days.append(agg(steady[block]))
            actual_days.append(agg(y[block]))
    errors = np.array(actual_days) - np.array(fitted_days)
    if errors.size:
        shift = float(np.median(errors)) if aggregate == "max" else 0.0
        day_value = np.maximum(day_point + shift, 0.0)
        low, high = band_quantiles(errors, level)
        day_lower = np.clip(day_point + low, 0.0, day_value)
        day_upper = np.maximum(day_point + high, day_value)
    else:  # no complete day in the history: the hours' band, aggregated
        day_value = day_point
        day_lower = np.array([agg(lower[d * 24 : (d + 1) * 24]) for d in range(days)])
        day_upper = np.array([agg(upper[d * 24 : (d + 1) * 24]) for d in range(days)])
    details["complete_days"] = int(errors.size)
    return SeriesForecast(point, lower, upper, day_value, day_lower, day_upper, model, details)


def band_quantiles(errors: np.ndarray, level: float) -> tuple[float, float]:
    """The split-conformal bounds of a central `level` band from n past errors: the k-th smallest
    with k = ⌊(n + 1)(1 − level)/2⌋ and the k-th with k = ⌈(n + 1)(1 + level)/2⌉ (clamped to the
    smallest and largest). Plain sample quantiles of 28 daily errors would cover a new day ~84 % of
    the time at a nominal 90 %; these order statistics cover it at least `level` for exchangeable
    errors."""
    ordered = np.sort(np.asarray(errors, dtype=float))
    n = ordered.size
    if n == 0:
        raise ValueError("a band needs at least one past error")
    # rounded first: (39 + 1) x 0.1 / 2 is 1.9999999999999996 in floating point, and must be 2
    low = math.floor(round((n + 1) * (1 - level) / 2, 9))
    high = math.ceil(round((n + 1) * (1 + level) / 2, 9))
    return float(ordered[min(max(low, 1), n) - 1]), float(ordered[min(max(high, 1), n) - 1])


def _sarimax(y: np.ndarray, xh: np.ndarray, xf: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Regression with AR(1) errors by maximum likelihood, started from the OLS fit (a few
    iterations instead of dozens: ~0.1 s for four weeks of hours). Returns the forecast over `xf`
    and the parameters (regression coefficients, then the AR coefficient)."""
    # imported here: statsmodels costs ~1.7 s to import, which every Dagster process would pay
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    residual = y - xh @ beta
    pairs = np.isfinite(residual[1:]) & np.isfinite(residual[:-1])
    phi = 0.0
    if pairs.sum() > 2 and np.std(residual[:-1][pairs]) > 0 and np.std(residual[1:][pairs]) > 0:
        phi = float(np.clip(np.corrcoef(residual[1:][pairs], residual[:-1][pairs])[0, 1], -0.95, 0.95))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; a failed fit raises and falls back
        model = SARIMAX(y, exog=xh, order=(1, 0, 0), trend="n", concentrate_scale=True)
        fit = model.fit(start_params=[*beta, phi], disp=False, method="lbfgs", maxiter=50)
        params = np.asarray(fit.params, dtype=float)
        if not np.all(np.isfinite(params)):
            raise ValueError("the likelihood fit gave non-finite parameters")
        point = np.asarray(fit.forecast(xf.shape[0], exog=xf), dtype=float)
    if not np.all(np.isfinite(point)):
        raise ValueError("the likelihood fit gave a non-finite forecast")
    return point, params


# ----- machines and factories -------------------------------------------------------------------------
@dataclass(frozen=True)
class Skipped:
    """A series not forecast, and why (too little history)."""

    tenant_id: str
    factory_id: str
    machine_id: str
    kpi: str
    reason: str


def series_grid(hours: pl.DataFrame, origin: datetime, options: ForecastOptions) -> pl.DataFrame:
    """`hours` (HOURS_SCHEMA) of the history window before `origin` pivoted to one row per
    (tenant, factory, machine, period_start) with energy_kwh, peak_demand_kw, avg_outdoor_temp,
    and the factories' series added under machine_id FACTORY: energy and peak demand summed over
    the factory's current fleet (its machines with a value on the history's last day; a machine
    gone since is left out of every hour, so the sum has no step where it left) for the hours where
    every machine of the fleet has a value, else missing. A factory's peak is then the sum of its
    machines' peaks: an upper bound of its coincident peak, which hourly KPIs cannot give. The
    temperature is the machines' mean."""
    start = origin - DAY * options.history_days
    wanted = hours.filter(
        (pl.col("period_start") >= start) & (pl.col("period_start") < origin) & pl.col("kpi").is_in([*TARGETS, TEMP])
    )
    frame = (
        wanted.pivot("kpi", index=["tenant_id", "factory_id", "machine_id", "period_start"], values="value")
        if not wanted.is_empty()
        else pl.DataFrame(schema={**{c: pl.String() for c in ("tenant_id", "factory_id", "machine_id")}})
    )
    for column in (*TARGETS, TEMP):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Float64()).alias(column))
    if "period_start" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, TIME).alias("period_start"))
    frame = frame.select("tenant_id", "factory_id", "machine_id", "period_start", *TARGETS, TEMP).cast(
        {"period_start": TIME, **{c: pl.Float64() for c in (*TARGETS, TEMP)}}
    )
    machines = frame.filter(pl.col("machine_id") != FACTORY)
    place = ["tenant_id", "factory_id", "period_start"]
    factories = machines.group_by(place).agg(pl.col(TEMP).mean())
    for kpi in TARGETS:
        # the factory's current fleet for this KPI: its machines with a value on the history's last day
        fleet = (
            machines.filter((pl.col("period_start") >= origin - DAY) & pl.col(kpi).is_not_null())
            .select("tenant_id", "factory_id", "machine_id")
            .unique()
        )
        size = fleet.group_by("tenant_id", "factory_id").agg(_fleet=pl.len())
        summed = (
            machines.join(fleet, on=["tenant_id", "factory_id", "machine_id"])
            .group_by(place)
            .agg(pl.col(kpi).sum(), _known=pl.col(kpi).count())
            .join(size, on=["tenant_id", "factory_id"])
            .select(*place, pl.when(pl.col("_known") == pl.col("_fleet")).then(pl.col(kpi)).alias(kpi))
        )
        factories = factories.join(summed, on=place, how="left")
    factories = factories.with_columns(machine_id=pl.lit(FACTORY)).select(frame.columns)
    return pl.concat([machines, factories]).sort("tenant_id", "factory_id", "machine_id", "period_start")


def forecast_all(
    hours: pl.DataFrame,
    origin: datetime,
    timezones: dict[str, str],
    options: ForecastOptions,
) -> tuple[pl.DataFrame, list[Skipped]]:
    """Every machine's and factory's forecast (FORECAST_SCHEMA) of the `horizon_days` after
    `origin` (a UTC midnight) from the hourly KPIs before it: hourly rows and one row per UTC day
    (horizon_day 1 = the day starting at the origin) for energy_kwh and peak_demand_kw. A series
    with fewer than `min_history_days` days of known hours is skipped, with the reason.
    `timezones` maps a tenant to its IANA zone (the day classes and hours of the profile are local)."""
    grid = series_grid(hours, origin, options)
    n, steps = options.history_days * 24, options.horizon_days * 24
    start = origin - DAY * options.history_days
    index = {start + HOUR * i: i for i in range(n)}
    rows: list[dict] = []
    skipped: list[Skipped] = []
    calendars: dict[str, Calendar] = {}
    for (tenant, factory, machine), series in grid.group_by(
        "tenant_id", "factory_id", "machine_id", maintain_order=True
    ):
        zone = timezones.get(tenant, "UTC")
        calendar = calendars.get(zone) or Calendar.of(start, n + steps, zone, options.weekend_days)
        calendars[zone] = calendar
        slots = np.array([index[t] for t in series["period_start"]], dtype=np.int64)
        temp = _column(series, TEMP, slots, n)
        for kpi, (unit, aggregate) in TARGETS.items():
            y = _column(series, kpi, slots, n)
            days = int(np.isfinite(y).sum()) / 24
            if days < options.min_history_days:
                reason = f"{days:.1f} days of known hours in the last {options.history_days}, "
                reason += f"{options.min_history_days} needed"
                skipped.append(Skipped(tenant, factory, machine, kpi, reason))
                continue
            result = forecast_series(y, calendar, steps=steps, aggregate=aggregate, level=options.level, temp=temp)
            rows += _rows(origin, (tenant, factory, machine), kpi, unit, result, options)
    frame = pl.DataFrame(rows, schema=FORECAST_SCHEMA, orient="row") if rows else pl.DataFrame(schema=FORECAST_SCHEMA)
    return frame, skipped


def _column(series: pl.DataFrame, name: str, slots: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, math.nan)
    values = series[name].to_numpy().astype(float)
    out[slots] = values
    return out


def _round(x: float) -> float:
    """Stored to 1e-6 (a milliwatt-hour): the likelihood fit's last bits are noise, and a machine that
    repeats exactly is then forecast as exactly what it repeats (10.0, not 9.999999999999993)."""
    return round(float(x), 6)


def _rows(
    origin: datetime,
    key: tuple[str, str, str],
    kpi: str,
    unit: str,
    f: SeriesForecast,
    options: ForecastOptions,
) -> list[dict]:
    tenant, factory, machine = key
    common = {"tenant_id": tenant, "factory_id": factory, "machine_id": machine, "kpi": kpi, "unit": unit}
    common |= {"issued_at": origin, "level": options.level, "model": f.model}
    details = json.dumps(f.details, sort_keys=True)
    rows = []
    for i in range(f.value.size):
        at = origin + HOUR * i
        rows.append(
            {
                **common,
                "period": "hour",
                "target_start": at,
                "target_end": at + HOUR,
                "horizon_day": i // 24 + 1,
                "value": _round(f.value[i]),
                "lower": _round(f.lower[i]),
                "upper": _round(f.upper[i]),
                "details": None,
            }
        )
    for d in range(f.day_value.size):
        at = origin + DAY * d
        rows.append(
            {
                **common,
                "period": "day",
                "target_start": at,
                "target_end": at + DAY,
                "horizon_day": d + 1,
                "value": _round(f.day_value[d]),
                "lower": _round(f.day_lower[d]),
                "upper": _round(f.day_upper[d]),
                "details": details,
            }
        )
    return rows
