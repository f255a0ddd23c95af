"""Seasonal, robust anomaly detection at each series' own cadence (issue 20).

Why this replaced "z-score against the trailing 24 h": on a real machine the daily swing, the
weekend and a change of run state are larger than most faults, so a mean/σ of the last day called
a third of all normal samples anomalous, and rules written in one-minute buckets never fired on a
series sampled every five minutes or every hour. Here every series is judged on *samples* — its
`bucket_s` (60 s) aggregates: one reading per sample for series sampled once a minute or slower,
the minute's mean, extremes and spread for faster ones — against an expectation that knows the
time of day, weekdays from weekends, and whether the machine is running.

A `Profile` is learned per series from up to `history_days` (default 14) of history, robustly:
  * expected(t): the median sample per weekday and hour of day in the plant's time zone (a
    weekday with under three days of data takes its day class's median: weekdays or weekend),
    linearly interpolated between hour centres; a day class without data takes the other's, a
    series with less than three days of history its overall median ('flat' stage). Samples taken
    while the machine was not running (and for `settle` after it resumed) are neither learned
    from nor judged: state is part of the expectation.
  * scale: 1.4826·MAD of the residuals (robust σ), per statistic.
  * thresholds: each statistic's warning/critical level is the larger of a floor that keeps
    Gaussian noise quiet (tail probability spread over the samples of a day) and a margin times a
    high quantile (0.8) of the statistic's *daily maxima* in the history. Daily maxima rather than
    all samples: a fault that lasted two hours in the history moves one of fourteen daily maxima,
    not the quantile, so it does not blind the detector to the next one; yet a machine that really
    swings by 30 °C every few days teaches the detector that this is normal for it. (Anomalies on
    most days of the history are learned as normal too: docs/benchmarks.md, "Anomaly density".)
    A profile younger than `critical_after` (3 days) raises warnings only.

Statistics per sample (all "larger = more unusual"), each reported under its method:
  deviation  |residual| / scale; for samples of ≥ 3 readings also the reading furthest from the
             sample's own mean, against the usual spread within a sample (spikes)
  shift      |mean residual| of the last 4 and 16 samples / its scale (level shifts, drifts)
  noise      spread of the sample / usual spread (multi-reading), or the median step between
             the last 6 residuals / its value for Gaussian noise of the usual scale
  stuck      readings in a run of identical values, against the longest usual run

A lasting level change re-bases the expectation (`level_offsets`, `rebase_after`:
ANOMALY_REBASE_HOURS, 6 h by default, what it was tuned with; 0 = off).
A machine moved to a new operating point (a recipe, a setpoint, a replaced sensor) would otherwise
be critical against its profile until the profile has learned the new level, days later, and a
fault on the new level would hide in that one long event. When the residuals of the `rebase_after`
before a sample lie on one side beyond the critical 16-sample shift (all but a tenth of them) and
hold still (the median of the window's last half within a tenth of the window's 10-90 % range of the
window's median: a drift moves it by a quarter of its travel and is not taken for a level), the
sample's expectation is the profile plus the window's median residual and its scales are widened to
the window's own noise (never narrowed). The re-basing holds for a quarter of the window after its
last confirmation, so a window at the edge of its tests does not switch every other sample, and a
sample nearer the profile than the new level is judged against the profile (the level went back:
what the machine did for weeks is not an anomaly; the price is that a fault which takes the machine
back to exactly its old level is not seen as one while the new level holds). The
first re-based sample is reported as a `level_change` warning (the offset in scales; the caller's
details say `level_offset`): the event that opened at the change closes there and says what it
was. The offset is re-estimated sample by sample from that window alone, so it is the same live and
in a backfill, and it fades by itself once the profile has learned the level (the residuals go to
0) or the level goes back (the window is no longer on one side). What it costs: a fault that holds
one level for longer than the window becomes the expectation, and a drift slower than about one
noise σ per window can be followed as a level.

A series with too little history (`min_samples`, `min_history`) is 'learning': it is not judged
and the caller reports it as such. Nothing here reads a clock or a database.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Any

import numpy as np
import polars as pl

from analytics_platform.transforms.window_aggregates import SERIES_KEY, TIME

VERSION = "seasonal-1"
REBASE_HOURS = 6  # the re-basing window the detector was tuned with (SeasonalOptions.rebase_after)
SHIFT_WINDOWS = (4, 16)
NOISE_WINDOW = 6
REACH = max(*SHIFT_WINDOWS, NOISE_WINDOW + 1)  # rows before a sample that a window can see, and one more
STEP_MEDIAN = 0.6745 * math.sqrt(2)  # median |r_t − r_t−1| of independent N(0, 1) residuals
TESTS = ("deviation", "extreme", "shift4", "shift16", "noise", "stuck")
LEVEL_CHANGE = "level_change"  # not a test: the sample at which a re-based expectation begins
REBASE_MIN_SAMPLES = 8  # a re-basing window needs this many samples, and half of those it can hold
REBASE_QUANTILE = 0.1  # this share of the window's residuals may lie inside the critical shift
REBASE_STEADY = 0.1  # the last half's median may differ from the window's by this much of its 10-90 % range
REBASE_HOLD = 0.25  # of the window: how long a re-basing holds after its window last confirmed it
KEY_HASH_SEED = 20  # any fixed seed: `rebase_candidates` compares hashes made in one call

MAD_SIGMA = 1.4826  # MAD of a normal distribution × this = σ
MIN_CELL = 6  # samples a weekday-and-hour cell needs before it stands on its own
MIN_CELL_DAYS = 3  # ... and days: the median of two days fits their noise, not the weekday
MAX_GAP_SAMPLES = 3  # a gap longer than this many samples breaks rolling windows and runs
CLIP = 4.0  # residuals enter window statistics clipped at this many scales (Huber-style)
NEVER = 1e300  # a level no statistic reaches (JSON has no infinity)
SAMPLE_COLUMNS = ("bucket_start", "bucket_end", "count_n", "avg_v", "min_v", "max_v", "stddev_v")
_NORMAL = NormalDist()


@dataclass(frozen=True)
class SeasonalOptions:
    """How profiles are learned and samples judged; the defaults are tuned on bench/detection.py
    (see docs/benchmarks.md, "Detection quality")."""

    bucket_s: int = 60
    history_days: int = 14
    min_samples: int = 30
    min_history: timedelta = timedelta(hours=1)
    timezone: str = "UTC"
    weekend_days: tuple[int, ...] = (6, 7)  # ISO weekdays (Mon = 1) that form the second day class
    settle: timedelta = timedelta(minutes=30)
    critical_after: timedelta = timedelta(days=3)  # younger profiles raise warnings only
    quantile: float = 0.8  # of the daily maxima
    warning_margin: float = 1.1
    critical_margin: float = 1.6
    warning_per_day: float = 0.2  # Gaussian floor: expected exceedances per series-day, all tests
    critical_per_day: float = 0.01
    # a level held this long beyond the critical shift, on one side and steady, re-bases the
    # expectation (`level_offsets`; ANOMALY_REBASE_HOURS); 0 turns re-basing off. REBASE_HOURS, what it
    # was tuned with: longer than the simulator's 2 h level shifts and its drifts' 6 h ramps, a fault
    # that ends on its own is not a new operating point. On by default since only the series that
    # could be re-based read the window (`rebase_candidates`; docs/benchmarks.md, "Level changes
    # re-base the expectation"): off, a machine at a new operating point stayed critical for days
    rebase_after: timedelta = timedelta(hours=REBASE_HOURS)

    def floors(self, samples_per_day: float) -> dict[str, tuple[float, float]]:
        """(warning, critical) floor per statistic for a series with this many samples a day."""
        out = {}
        n = max(samples_per_day, 1.0) * len(TESTS)
        for test in TESTS:
            if test == "stuck":
                out[test] = (3.0, 6.0)
            elif test == "noise":
                out[test] = (2.0, 3.0)
            else:
                warn = _NORMAL.inv_cdf(1 - self.warning_per_day / n / 2)
                crit = _NORMAL.inv_cdf(1 - self.critical_per_day / n / 2)
                out[test] = (warn, crit)
        return out


@dataclass
class Profile:
    """What one series normally looks like; JSON-serialisable (stored in analytics_anomaly_model)."""

    tenant_id: str
    factory_id: str
    machine_id: str
    sensor_id: str
    metric: str
    stage: str  # learning | flat | daily | weekly
    trained_from: datetime | None
    trained_to: datetime
    n_samples: int
    span_hours: float
    cadence_s: float
    per_sample: float  # median readings per sample
    centre: list[list[float]] = field(default_factory=list)  # [ISO weekday − 1][hour] → median
    scale: dict[str, float] = field(default_factory=dict)
    spread: float | None = None  # median within-sample stddev (multi-reading samples)
    warning: dict[str, float] = field(default_factory=dict)
    critical: dict[str, float] = field(default_factory=dict)
    version: str = VERSION

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.tenant_id, self.factory_id, self.machine_id, self.sensor_id, self.metric)

    @property
    def judged(self) -> bool:
        return self.stage != "learning"

    @property
    def sample_s(self) -> float:
        return self.cadence_s * max(self.per_sample, 1.0)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("trained_from", "trained_to"):
            out[name] = out[name].isoformat() if out[name] else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        values = dict(data)
        for name in ("trained_from", "trained_to"):
            values[name] = datetime.fromisoformat(values[name]) if values.get(name) else None
        return cls(**values)


# ----- samples -----------------------------------------------------------------------------------


def _strings(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col(c).cast(pl.String) for c in SERIES_KEY)


def samples_of(aggregates: pl.DataFrame, bucket_s: int) -> pl.DataFrame:
    """The `bucket_s` aggregate rows with readings, as samples sorted per series."""
    frame = _strings(aggregates).with_columns(
        pl.col("bucket_start").cast(TIME), pl.col("bucket_end").cast(TIME), pl.col("count_n").cast(pl.Int64)
    )
    frame = frame.filter(
        (pl.col("count_n") > 0)
        & (pl.col("bucket_end") - pl.col("bucket_start") == pl.duration(seconds=bucket_s))
        & pl.col("avg_v").is_finite()
    )
    return frame.select(*SERIES_KEY, *SAMPLE_COLUMNS).sort(*SERIES_KEY, "bucket_start")


def _day_class(ts: pl.Expr, options: SeasonalOptions) -> pl.Expr:
    return ts.dt.weekday().is_in(list(options.weekend_days)).cast(pl.Int8)


def _local(ts: pl.Expr, options: SeasonalOptions) -> pl.Expr:
    return ts.dt.convert_time_zone(options.timezone)


def _mid(options: SeasonalOptions) -> pl.Expr:
    """The sample's midpoint in plant time: what its hour of day and day class are taken from."""
    return _local(pl.col("bucket_start") + (pl.col("bucket_end") - pl.col("bucket_start")) / 2, options)


# ----- fitting -----------------------------------------------------------------------------------


def _centres(frame: pl.DataFrame, stages: dict[tuple, str], options: SeasonalOptions) -> dict[tuple, list[list[float]]]:
    """Per series the 7×24 table (ISO weekday − 1, hour) of medians, every cell filled.

    'weekly': a weekday's own median where that weekday and hour hold ≥ MIN_CELL samples from ≥
    MIN_CELL_DAYS different days (a plant's Monday start-up is not its Wednesday), else the median
    of its day class (weekdays or weekend days) at that hour, else the other class's; 'daily': the
    hour's median over all days; 'flat': the overall median."""
    mid = _mid(options)
    tagged = frame.with_columns(
        dow=mid.dt.weekday().cast(pl.Int8), cls=_day_class(mid, options), hour=mid.dt.hour().cast(pl.Int8)
    )
    by_dow = (
        tagged.group_by(*SERIES_KEY, "dow", "hour")
        .agg(centre=pl.col("avg_v").median(), n=pl.len(), days=pl.col("bucket_start").dt.date().n_unique())
        .filter((pl.col("n") >= MIN_CELL) & (pl.col("days") >= MIN_CELL_DAYS))
    )
    by_cls = tagged.group_by(*SERIES_KEY, "cls", "hour").agg(centre=pl.col("avg_v").median())
    by_hour = tagged.group_by(*SERIES_KEY, "hour").agg(centre=pl.col("avg_v").median())
    overall = {tuple(r[:5]): r[5] for r in frame.group_by(SERIES_KEY).agg(pl.col("avg_v").median()).iter_rows()}

    def cells(table: pl.DataFrame, by: list[str]) -> dict[tuple, dict[tuple, float]]:
        out: dict[tuple, dict[tuple, float]] = {}
        for row in table.select(*SERIES_KEY, *by, "centre").iter_rows():
            out.setdefault(tuple(row[:5]), {})[tuple(row[5:-1])] = row[-1]
        return out

    dows, classes, hours = cells(by_dow, ["dow", "hour"]), cells(by_cls, ["cls", "hour"]), cells(by_hour, ["hour"])
    weekend = set(options.weekend_days)
    out = {}
    for key, level in overall.items():
        stage = stages[key]
        grid = []
        for dow in range(1, 8):
            cls = int(dow in weekend)
            row = []
            for hour in range(24):
                if stage == "flat":
                    value = None
                elif stage == "daily":
                    value = hours.get(key, {}).get((hour,))
                else:
                    mine, by = dows.get(key, {}), classes.get(key, {})
                    value = mine.get((dow, hour), by.get((cls, hour), by.get((1 - cls, hour))))
                row.append(float(level if value is None else value))
            grid.append(row)
        out[key] = grid
    return out


def _expected(frame: pl.DataFrame, centres: pl.DataFrame, options: SeasonalOptions) -> pl.Series:
    """expected(t) per sample: the weekday/hour medians interpolated between hour centres (the
    centre of hour h is h:30; a sample at its midpoint m lies between the centres around it)."""
    mid = _mid(options)
    anchor = (mid - pl.duration(minutes=30)).dt.truncate("1h")
    nxt = anchor + pl.duration(hours=1)
    weight = (mid - anchor - pl.duration(minutes=30)).dt.total_microseconds() / 3.6e9
    lookup = frame.select(
        *SERIES_KEY,
        dow_a=anchor.dt.weekday().cast(pl.Int8),
        hour_a=anchor.dt.hour().cast(pl.Int8),
        dow_b=nxt.dt.weekday().cast(pl.Int8),
        hour_b=nxt.dt.hour().cast(pl.Int8),
        w=weight,
    ).with_row_index("_row")
    a = centres.rename({"dow": "dow_a", "hour": "hour_a", "centre": "centre_a"})
    b = centres.rename({"dow": "dow_b", "hour": "hour_b", "centre": "centre_b"})
    joined = (
        lookup.join(a, on=[*SERIES_KEY, "dow_a", "hour_a"], how="left")
        .join(b, on=[*SERIES_KEY, "dow_b", "hour_b"], how="left")
        .sort("_row")
    )
    return joined.select(expected=(1 - pl.col("w")) * pl.col("centre_a") + pl.col("w") * pl.col("centre_b"))["expected"]


def _centre_frame(profiles: Sequence[Profile]) -> pl.DataFrame:
    """One row per profile, weekday and hour with its centre (built from arrays: a Python tuple per
    cell cost more than the statistics themselves once an hour's context was trimmed)."""
    cells = 7 * 24
    keys = {c: np.repeat(np.array([p.key[i] for p in profiles], dtype=object), cells) for i, c in enumerate(SERIES_KEY)}
    grid = np.array([p.centre for p in profiles], dtype=np.float64).reshape(-1)
    return pl.DataFrame(
        {
            **{c: pl.Series(c, v, dtype=pl.String) for c, v in keys.items()},
            "dow": np.tile(np.repeat(np.arange(1, 8, dtype=np.int8), 24), len(profiles)),
            "hour": np.tile(np.arange(24, dtype=np.int8), 7 * len(profiles)),
            "centre": grid,
        },
        schema={**{c: pl.String() for c in SERIES_KEY}, "dow": pl.Int8(), "hour": pl.Int8(), "centre": pl.Float64()},
    )


def _segments(frame: pl.DataFrame, max_gap: pl.Expr) -> pl.DataFrame:
    """A segment id per sample: a new segment starts after a gap longer than `max_gap` (per series),
    and where a re-based expectation (`offset`, when there is one) begins or ends: the samples
    before were judged against another expectation, and their residuals in the next windows would
    read as a shift that is not there."""
    gap = pl.col("bucket_start") - pl.col("bucket_end").shift(1).over(SERIES_KEY)
    brk = gap.is_null() | (gap.dt.total_microseconds() / 1e6 > max_gap)
    if "offset" in frame.columns:
        rebased = pl.col("offset") != 0.0
        brk = brk | (rebased != rebased.shift(1).over(SERIES_KEY)).fill_null(False)
    return frame.with_columns(_seg=brk.cast(pl.Int32).cum_sum().over(SERIES_KEY))


def _raw_statistics(frame: pl.DataFrame, max_gap: pl.Expr) -> pl.DataFrame:
    """Residual-based raw statistics per sample (before scaling; `s_r` must be joined): `r`,
    `ext`, rolling means of the clipped r over SHIFT_WINDOWS, the rolling median of its steps over
    NOISE_WINDOW, the spread without the furthest reading, and the flat run length."""
    frame = _segments(frame.sort(*SERIES_KEY, "bucket_start"), max_gap)
    seg = [*SERIES_KEY, "_seg"]
    r = pl.col("avg_v") - pl.col("expected")
    flat = pl.col("min_v") == pl.col("max_v")  # a one-reading sample is flat by itself
    same = flat & (pl.col("avg_v") == pl.col("avg_v").shift(1).over(seg)) & pl.col("_flat_prev").fill_null(False)
    frame = frame.with_columns(r=r, _flat=flat).with_columns(_flat_prev=pl.col("_flat").shift(1).over(seg))
    frame = frame.with_columns(_same=same)
    run_id = (~pl.col("_same")).cast(pl.Int32).cum_sum().over(seg)
    frame = frame.with_columns(_run=run_id).with_columns(
        run=pl.when(pl.col("_flat")).then(pl.col("count_n").cum_sum().over([*seg, "_run"])).otherwise(0)
    )
    # the sample's spread without its furthest reading (exact from count, mean and stddev): one
    # spike is the extreme test's to report, not a burst of noise
    n, mean = pl.col("count_n").cast(pl.Float64), pl.col("avg_v")
    far = pl.when((pl.col("max_v") - mean).abs() >= (pl.col("min_v") - mean).abs()).then("max_v").otherwise("min_v")
    squares = pl.col("stddev_v").fill_null(0.0).pow(2) * (n - 1) - (far - mean).pow(2) * n / (n - 1)
    trimmed = pl.when(pl.col("count_n") >= 3).then((squares.clip(lower_bound=0.0) / (n - 2)).sqrt())
    # windows see residuals clipped at CLIP scales: a drop already reported by its own deviation
    # must not make the next 16 samples' mean (or spread) look shifted (or noisy)
    clipped = pl.col("r").clip(-CLIP * pl.col("s_r"), CLIP * pl.col("s_r"))
    return frame.with_columns(
        ext=pl.max_horizontal((pl.col("max_v") - pl.col("avg_v")).abs(), (pl.col("min_v") - pl.col("avg_v")).abs()),
        trimmed=trimmed,
        **{f"m{k}": window_mean(clipped, k).over(seg) for k in SHIFT_WINDOWS},
        # the median step between neighbouring residuals: a level shift is one big step and leaves
        # it alone, a burst of noise makes every step big
        steps=(clipped - clipped.shift(1).over(seg))
        .abs()
        .rolling_median(NOISE_WINDOW, min_samples=NOISE_WINDOW)
        .over(seg),
    ).drop("_flat", "_flat_prev", "_same", "_run")


def window_mean(values: pl.Expr, k: int) -> pl.Expr:
    """The mean of the last `k` values (NULL while there are fewer; use `.over` for groups), summed
    oldest first: a function of those k values alone. Polars' rolling_mean keeps a running sum along
    the frame, so its last bits depend on where the frame starts; this does not, which is what lets
    `judge` leave out the context no window reaches (`context_tail`) and still match bit for bit."""
    total = values.shift(k - 1)
    for lag in range(k - 2, -1, -1):
        total = total + values.shift(lag)
    return total / k


def context_tail(samples: pl.DataFrame, start: datetime, rebase: timedelta = timedelta(0)) -> pl.DataFrame:
    """`samples` (each series' rows in time order) without the rows before `start` that no statistic of a
    sample at or after `start` can see, so an hour's judgement costs its own samples plus a short
    tail instead of its whole day of context.

    Per series the tail starts at the latest row before `start` that lies at least REACH rows before
    the first row at or after `start` (the windows look back at most 15 samples, the steps' median 6)
    and at which a run of identical readings certainly restarts (its readings differ, or its value
    differs from the row before): from there on segments, windows and runs are what the full context
    gives them. Without such a row the series keeps all its rows. With `rebase` (the re-basing
    window, `level_offsets`) the tail also keeps the rows up to `rebase` before that row: the offsets
    of the rows a window sees are medians of the residuals that long before each."""
    return _tail(samples, start, rebase).drop("_window_row")


def _tail(samples: pl.DataFrame, start: datetime, rebase: timedelta) -> pl.DataFrame:
    """`context_tail` with `_window_row`: whether a row is in the windows' tail (the rest is only
    there for the offsets). `_cut` is computed once: its grouped maxima cost more than the filter."""
    position = pl.int_range(pl.len()).over(SERIES_KEY)
    frame = samples.with_columns(_cut=_cut(start), _pos=position)
    window_row = ~(pl.col("bucket_start") < start) | (pl.col("_pos") >= pl.col("_cut"))
    kept = window_row
    if rebase > timedelta(0):
        cut_time = pl.when(pl.col("_pos") == pl.col("_cut")).then(pl.col("bucket_start")).max().over(SERIES_KEY)
        kept = kept | (pl.col("bucket_start") >= cut_time - rebase)
    return frame.filter(kept).with_columns(_window_row=window_row).drop("_cut", "_pos")


def tail_inside(samples: pl.DataFrame, start: datetime, rebase: timedelta = timedelta(0)) -> pl.DataFrame:
    """The series (SERIES_KEY rows) with at least REACH rows before `start` whose `context_tail` of
    `samples` starts after their first row. Their tail is the same in any longer context (more rows
    before these, same rows after): the row it starts at has its predecessor here, and the rows
    before it cannot start a later tail. So a caller may judge them from a short recent context and
    read the whole one only for the others. With `rebase`, the first row must also lie at least
    `rebase` before the row the windows' tail starts at: the context then holds every row of the
    re-basing window (it starts no later than that first row).

    The REACH rows are needed because `_cut`'s count of rows before `start` is unsigned: with fewer,
    its `- REACH` wraps round and every earlier restart qualifies, a cut no longer context repeats."""
    enough = (pl.col("bucket_start") < start).sum().over(SERIES_KEY).cast(pl.Int64) >= REACH
    covered = pl.col("bucket_start").min().over(SERIES_KEY) <= _cut_time(start) - rebase
    return (
        samples.select(*SERIES_KEY, _cut=_cut(start), _enough=enough, _covered=covered)
        .filter((pl.col("_cut") > 0) & pl.col("_enough") & pl.col("_covered"))
        .select(SERIES_KEY)
        .unique()
    )


def _cut_time(start: datetime) -> pl.Expr:
    """Per series, the `bucket_start` of the row `_cut` names."""
    position = pl.int_range(pl.len()).over(SERIES_KEY)
    return pl.when(position == _cut(start)).then(pl.col("bucket_start")).max().over(SERIES_KEY)


def _cut(start: datetime) -> pl.Expr:
    """Per series, the position (in time order) of the row `context_tail` starts the tail at; 0 when
    no row qualifies (the series keeps all its rows)."""
    before = pl.col("bucket_start") < start
    position = pl.int_range(pl.len()).over(SERIES_KEY)
    restarts = (pl.col("min_v") != pl.col("max_v")) | (
        pl.col("avg_v") != pl.col("avg_v").shift(1).over(SERIES_KEY)
    ).fill_null(True)
    fits = before & restarts & (position <= before.sum().over(SERIES_KEY) - REACH)
    return pl.when(fits).then(position).otherwise(0).max().over(SERIES_KEY)


def rebase_reach(window: timedelta) -> timedelta:
    """How far before a sample its offset looks: the window of each confirmation it holds on to."""
    return window * (1 + REBASE_HOLD)


def rebase_candidates(
    samples: pl.DataFrame, profiles: Sequence[Profile], window: timedelta, options: SeasonalOptions
) -> pl.DataFrame:
    """The series (SERIES_KEY rows) of `samples` that `level_offsets` could re-base anywhere in a frame
    made of any of their rows: those with at least its least count of residuals beyond the critical
    shift on one side (`level_offsets`' `_candidate`, the same residuals, the same comparison). Every
    other series gets no offset from any subset of these rows, so it can be judged from the windows'
    short tail alone, without the `rebase_reach` of context before it.

    Why: with re-basing on, every judged hour read, fenced and judged `rebase_reach` (7.5 h) of
    context per series to find the rare series that hold a new level; this costs one residual per
    context row and a grouped count, and only its answer gets the long context."""
    none = pl.DataFrame(schema={c: pl.String() for c in SERIES_KEY})
    judged = [p for p in profiles if p.judged]
    if not judged or samples.is_empty() or window <= timedelta(0):
        return none
    # each judged series by its number (`_sid`), each row by a hash of its key: the centres are then
    # looked up by position in one array and the rows counted by an integer, where joins and groups on
    # the five key strings cost most here. A row whose key's hash equals a judged series' (its own
    # rows, and in a collision another series' too) is counted for that series: the counts can only
    # grow, so no series that could be re-based is left out
    key_hash = pl.struct(*(pl.col(c).cast(pl.String) for c in SERIES_KEY)).hash(KEY_HASH_SEED)
    ids = pl.DataFrame(
        [(*p.key, i, p.critical["shift16"] * p.scale["m16"]) for i, p in enumerate(judged)],
        schema={**{c: pl.String() for c in SERIES_KEY}, "_sid": pl.Int64(), "_l_shift": pl.Float64()},
        orient="row",
    )
    ids = ids.with_columns(_h=key_hash)
    times = (pl.col("bucket_start").cast(TIME), pl.col("bucket_end").cast(TIME))
    frame = samples.select(*times, pl.col("avg_v").cast(pl.Float64), _h=key_hash)
    frame = frame.join(ids.select("_h", "_sid", "_l_shift"), on="_h")
    if frame.is_empty():
        return none
    # expected(t) as `_expected` computes it: the same cells, weights and arithmetic, so the same floats
    mid = _mid(options)
    anchor = (mid - pl.duration(minutes=30)).dt.truncate("1h")
    nxt = anchor + pl.duration(hours=1)
    weight = (mid - anchor - pl.duration(minutes=30)).dt.total_microseconds() / 3.6e9
    centres = pl.Series(np.array([p.centre for p in judged], dtype=np.float64).reshape(-1))

    def cell(at: pl.Expr) -> pl.Expr:
        """The position of the series' centre at `at`'s weekday and hour in `centres`."""
        return pl.col("_sid") * 168 + (at.dt.weekday().cast(pl.Int64) - 1) * 24 + at.dt.hour().cast(pl.Int64)

    frame = plain(frame.select("_sid", "avg_v", "_l_shift", _a=cell(anchor), _b=cell(nxt), w=weight))
    frame = frame.with_columns(centre_a=centres.gather(frame["_a"]), centre_b=centres.gather(frame["_b"]))
    expected = (1 - pl.col("w")) * pl.col("centre_a") + pl.col("w") * pl.col("centre_b")
    r = pl.col("avg_v") - expected
    beyond = frame.group_by("_sid").agg(up=(r >= pl.col("_l_shift")).sum(), down=(r <= -pl.col("_l_shift")).sum())
    # `level_offsets`' least count, by its own expression from the `_max_gap` `judge` joins
    gaps = pl.DataFrame(
        {"_sid": range(len(judged)), "gap": [MAX_GAP_SAMPLES * p.sample_s for p in judged]},
        schema={"_sid": pl.Int64(), "gap": pl.Float64()},
    )
    holds = window.total_seconds() / (pl.col("gap") / MAX_GAP_SAMPLES)
    least = (1 - REBASE_QUANTILE) * pl.max_horizontal(pl.lit(float(REBASE_MIN_SAMPLES)), 0.5 * holds)
    found = plain(beyond.join(gaps, on="_sid")).filter(pl.max_horizontal("up", "down") >= least)
    return ids.join(found.select("_sid"), on="_sid", how="semi").select(SERIES_KEY)


def level_offsets(frame: pl.DataFrame, window: timedelta) -> pl.DataFrame:
    """`frame` (sorted per series in time, with `avg_v`, `expected`, `_max_gap`, `s_r` and `_l_shift`,
    the residual at which a 16-sample mean is critical) with `offset`: what a lasting level change
    adds to the expectation of each sample, 0.0 where there is none, and `rescale`: what the
    scales are multiplied by there (the new level's noise against the profile's, at least 1).

    Why: a machine moved to a new operating point (a recipe, a setpoint, a replaced sensor) stays
    'critical' against its profile until the profile has learned the new level, for days, and a real
    fault on the new level hides in that. So when the residuals of the `window` before a sample (not
    the sample itself) sit on one side beyond the critical shift (all but REBASE_QUANTILE of them)
    and hold still (the median of the window's last half within REBASE_STEADY of its 10-90 % range of the
    window's: a drift moves it by a quarter of its travel over the window and is not a level), the
    sample's expectation is the profile plus the window's median residual, held for REBASE_HOLD of
    the window after the last confirmation, unless the sample is nearer the profile than the new
    level. Re-estimated sample by sample from the window alone (so the same whatever ran before,
    live or backfill); it ends by itself when the profile learns the level (the residuals go to 0)
    or the level goes back (the window is no longer on one side)."""
    r = pl.col("avg_v") - pl.col("expected")
    spec = {"by": "bucket_start", "window_size": window, "closed": "left"}
    half = {**spec, "window_size": window / 2}
    holds = window.total_seconds() / (pl.col("_max_gap") / MAX_GAP_SAMPLES)
    # a confirmation needs nine tenths of a window's residuals beyond the critical shift on one
    # side, and the window at least REBASE_MIN_SAMPLES and half the samples it can hold: a series
    # without that many such residuals anywhere in the frame (nearly every series, nearly every
    # hour) is not re-based, and is left out of the rolling quantiles, the cost here
    least = (1 - REBASE_QUANTILE) * pl.max_horizontal(pl.lit(float(REBASE_MIN_SAMPLES)), 0.5 * holds)
    beyond = [(r >= pl.col("_l_shift")).sum(), (r <= -pl.col("_l_shift")).sum()]
    frame = frame.with_row_index("_i").with_columns(
        _candidate=(pl.max_horizontal(*beyond) >= least.min()).over(SERIES_KEY)
    )
    if not frame["_candidate"].any():
        return frame.drop("_i", "_candidate").with_columns(offset=0.0, rescale=1.0, rebase_held=False)
    rest = frame.filter(~pl.col("_candidate")).with_columns(offset=0.0, rescale=1.0, rebase_held=False)
    frame = frame.filter("_candidate")
    frame = frame.with_columns(
        _n=r.is_not_null().cast(pl.Int32).rolling_sum_by(**spec).over(SERIES_KEY),
        _lo=r.rolling_quantile_by(quantile=REBASE_QUANTILE, interpolation="linear", **spec).over(SERIES_KEY),
        _hi=r.rolling_quantile_by(quantile=1 - REBASE_QUANTILE, interpolation="linear", **spec).over(SERIES_KEY),
        _med=r.rolling_median_by(**spec).over(SERIES_KEY),
        _half=r.rolling_median_by(**half).over(SERIES_KEY),
    )
    n = pl.col("_n").cast(pl.Float64)
    # against the window's own spread, not the profile's scale: a new operating point is often
    # noisier than the old one (a CPU at 80 % wanders more than at 5 %), and its medians with it
    steady = (pl.col("_half") - pl.col("_med")).abs() <= REBASE_STEADY * (pl.col("_hi") - pl.col("_lo"))
    one_side = (pl.col("_lo") >= pl.col("_l_shift")) | (pl.col("_hi") <= -pl.col("_l_shift"))
    confirmed = ((n >= REBASE_MIN_SAMPLES) & (n >= 0.5 * holds) & steady & one_side).fill_null(False)
    # held for REBASE_HOLD of the window after the last confirmation: a window whose tests sit at
    # their limits would otherwise re-base every other sample, each switch a `level_change`
    frame = frame.with_columns(_ok=confirmed.cast(pl.Int8))
    held = pl.col("_ok").rolling_max_by("bucket_start", window_size=window * REBASE_HOLD, closed="right")
    frame = frame.with_columns(_held=held.over(SERIES_KEY) == 1)
    # the new level's own noise (the 10-90 % range of a normal distribution is 2.5631 σ): scales
    # learned at the old level judge a noisier new one as one long noise burst
    local = (pl.col("_hi") - pl.col("_lo")) / 2.5631 / pl.col("s_r")
    # a sample nearer the profile than the new level is judged against the profile: the level has
    # gone back (or is going), and a machine back at what it did for weeks is not an anomaly; judged
    # against the new level until the window lets go, the return read as one more critical event
    nearer = (r - pl.col("_med")).abs() < r.abs()
    rebased = pl.col("_held") & nearer
    frame = frame.with_columns(
        offset=pl.when(rebased).then(pl.col("_med")).otherwise(0.0),
        rescale=pl.when(rebased).then(pl.max_horizontal(local, 1.0)).otherwise(1.0),
        rebase_held=pl.col("_held"),
    ).drop("_n", "_lo", "_hi", "_med", "_half", "_ok", "_held")
    return pl.concat([rest, frame]).sort("_i").drop("_i", "_candidate")


def _scaled(frame: pl.DataFrame) -> pl.DataFrame:
    """The six statistics of TESTS from the raw ones and the joined scales (`s_*` columns)."""
    multi = pl.col("count_n") >= 3
    # a window statistic speaks only while the sample itself is off the same way as the window (by
    # at least one scale) and the window's recent part (the sample for 4, the last 4 for 16) is at
    # least half as far off: otherwise a 16-sample mean keeps "finding" a fault after it ended
    off = pl.col("r").abs() >= pl.col("s_r")

    def along(m: str, recent: str) -> pl.Expr:
        same = (pl.col("r").sign() == pl.col(m).sign()) & (pl.col(recent).sign() == pl.col(m).sign())
        return off & same & (pl.col(recent).abs() >= 0.5 * pl.col(m).abs())

    return frame.with_columns(
        deviation=pl.col("r").abs() / pl.col("s_r"),
        extreme=pl.when(multi & pl.col("s_spread").is_not_null()).then(pl.col("ext") / pl.col("s_spread")),
        shift4=pl.when(along("m4", "r")).then(pl.col("m4").abs() / pl.col("s_m4")),
        shift16=pl.when(along("m16", "m4")).then(pl.col("m16").abs() / pl.col("s_m16")),
        noise=pl.when(multi & pl.col("s_spread").is_not_null())
        .then(pl.col("trimmed") / pl.col("s_spread"))
        .when(~multi)
        .then(pl.col("steps") / (STEP_MEDIAN * pl.col("s_r"))),
        stuck=pl.when(pl.col("run") > 1).then(pl.col("run").cast(pl.Float64)),
    )


def _robust(frame: pl.DataFrame, value: str) -> dict[tuple, float | None]:
    """Per series, 1.4826·MAD of `value` (nulls and NaNs left out), None for fewer than two values
    or a MAD of 0. One grouped pass over all series: Polars' grouped median is the very median a
    series' own `Series.median()` gives (test_seasonal_profiles_vectorised.py holds them equal)."""
    clean = frame.select(*SERIES_KEY, v=pl.col(value)).filter(pl.col("v").is_not_null() & pl.col("v").is_not_nan())
    mads = (
        clean.with_columns(dev=(pl.col("v") - pl.col("v").median().over(SERIES_KEY)).abs())
        .group_by(SERIES_KEY)
        .agg(n=pl.len(), mad=pl.col("dev").median())
        .rows()
    )
    return {
        tuple(row[:5]): float(MAD_SIGMA * row[6]) if row[5] >= 2 and row[6] and row[6] > 0 else None for row in mads
    }


def _summaries(samples: pl.DataFrame, options: SeasonalOptions) -> dict[tuple, tuple]:
    """Per series of `samples` (sorted per series in time): rows, first start, last end, median
    readings per sample, median gap between starts (s; None for one row), days and day classes."""
    gap = pl.col("bucket_start").diff().over(SERIES_KEY).dt.total_seconds()
    rows = (
        samples.with_columns(_gap=gap, _cls=_day_class(_mid(options), options))
        .group_by(SERIES_KEY)
        .agg(
            n=pl.len(),
            first=pl.col("bucket_start").min(),
            last=pl.col("bucket_end").max(),
            per_sample=pl.col("count_n").median(),
            gap=pl.col("_gap").median(),
            days=pl.col("bucket_start").dt.date().n_unique(),
            classes=pl.col("_cls").n_unique(),
        )
        .rows()
    )
    return {tuple(row[:5]): row[5:] for row in rows}


def fit_profiles(
    history: pl.DataFrame,
    trained_to: datetime,
    options: SeasonalOptions = SeasonalOptions(),
    *,
    series: Sequence[tuple] = (),
) -> list[Profile]:
    """One Profile per series of `history` (its `bucket_s` aggregates before `trained_to`, running
    samples only: the caller drops the rest) and per extra key in `series` (those get 'learning').

    All series are learned in one pass of grouped queries (a day's first hour learns 500 at once;
    one series at a time was ~40 small queries each, the hour's largest cost). Every figure is the
    one a series learned alone gets, bit for bit: medians, quantiles and maxima per group, and each
    division made value by value (`plain`)."""
    samples = samples_of(history, options.bucket_s).filter(pl.col("bucket_end") <= trained_to)
    summaries = _summaries(samples, options) if not samples.is_empty() else {}
    out: list[Profile] = []
    ready: dict[tuple, Profile] = {}
    for key in sorted({*summaries, *map(tuple, series)}):
        summary = summaries.get(key)
        n, span_h, per_sample, cadence, stage, first = 0, 0.0, 1.0, float(options.bucket_s), "learning", None
        if summary is not None:
            n, first, last, median_count, median_gap, days, classes = summary
            span_h = (last - first).total_seconds() / 3600
            per_sample = float(median_count)
            if n > 1:
                cadence = float(median_gap) if per_sample <= 1 else options.bucket_s / per_sample
            if n >= options.min_samples and span_h * 3600 >= options.min_history.total_seconds():
                # an hour of day needs MIN_CELL_DAYS days: an hour's median from one or two days fits
                # those days' own level, and tomorrow's ordinary wander would read as a shift
                flat = span_h < 24 or days < MIN_CELL_DAYS
                stage = "flat" if flat else ("weekly" if classes == 2 and days >= 7 else "daily")
        profile = Profile(
            *key,
            stage=stage,
            trained_from=first,
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
    wanted = pl.DataFrame(list(ready), schema={c: pl.String() for c in SERIES_KEY}, orient="row")
    frame = samples.join(wanted, on=list(SERIES_KEY), how="semi", maintain_order="left")
    centres = _centres(frame, {k: p.stage for k, p in ready.items()}, options)
    for key, profile in ready.items():
        profile.centre = centres[key]
    frame = frame.sort(*SERIES_KEY, "bucket_start")
    frame = frame.with_columns(expected=_expected(frame, _centre_frame(list(ready.values())), options))
    residuals = _robust(frame.with_columns(res=pl.col("avg_v") - pl.col("expected")), "res")
    levels = {tuple(r[:5]): r[5] for r in frame.group_by(SERIES_KEY).agg(pl.col("avg_v").median()).rows()}
    residual_scale = {}
    for key in ready:
        # a constant series: any deviation at all is unusual; its scale is a thousandth of its size
        s_r = residuals.get(key)
        residual_scale[key] = s_r if s_r is not None else max(abs(float(levels[key])) * 1e-3, 1e-9)
    scale_frame = pl.DataFrame(
        [(*k, v) for k, v in residual_scale.items()],
        schema={**{c: pl.String() for c in SERIES_KEY}, "s_r": pl.Float64()},
        orient="row",
    )
    frame = frame.join(_gap_frame(ready.values()), on=list(SERIES_KEY)).join(scale_frame, on=list(SERIES_KEY))
    stats = _raw_statistics(frame, pl.col("_max_gap")).drop("s_r")
    spreads = {
        tuple(r[:5]): r[5]
        for r in stats.filter((pl.col("count_n") >= 3) & pl.col("trimmed").is_not_null())
        .group_by(SERIES_KEY)
        .agg(pl.col("trimmed").median())
        .rows()
    }
    windows = {k: _robust(stats, f"m{k}") for k in SHIFT_WINDOWS}
    for key, profile in ready.items():
        s_r = residual_scale[key]
        spread = spreads.get(key)
        profile.spread = float(spread) if spread is not None and spread > 0 else None
        profile.scale = {"r": s_r, **{f"m{k}": windows[k].get(key) or s_r / math.sqrt(k) for k in SHIFT_WINDOWS}}
    scaled = _scaled(_with_scales(stats, list(ready.values())))
    daily = scaled.group_by(*SERIES_KEY, pl.col("bucket_start").dt.date().alias("day")).agg(
        pl.col(t).max() for t in TESTS
    )
    usual: dict[str, dict[tuple, float]] = {}
    for test in TESTS:
        usual[test] = {
            tuple(row[:5]): row[5]
            for row in daily.filter(pl.col(test).is_not_null() & pl.col(test).is_not_nan())
            .group_by(SERIES_KEY)
            .agg(pl.col(test).quantile(options.quantile, "linear"))
            .rows()
        }
    settled = {
        tuple(row[:5])
        for row in stats.group_by(SERIES_KEY)
        .agg(held=pl.col("run").max() * 2 >= pl.col("count_n").sum())
        .filter("held")
        .rows()
    }
    for key, profile in ready.items():
        floors = options.floors(86_400 / profile.sample_s)
        for test in TESTS:
            warn_floor, crit_floor = floors[test]
            level = float(usual[test].get(key, 0.0))
            if test == "stuck":
                level = max(level, 1.0)
            profile.warning[test] = max(warn_floor, options.warning_margin * level)
            profile.critical[test] = max(crit_floor, options.critical_margin * level, profile.warning[test])
        if key in settled:
            # a series that held one value for half its history (a setpoint, a flag) is not stuck
            # when it does so again: its runs only grow, so no level learned from them would hold
            profile.warning["stuck"] = profile.critical["stuck"] = NEVER
    return sorted(out, key=lambda p: p.key)


def _gap_frame(profiles: Sequence[Profile] | Any) -> pl.DataFrame:
    return pl.DataFrame(
        [(*p.key, MAX_GAP_SAMPLES * p.sample_s) for p in profiles],
        schema={**{c: pl.String() for c in SERIES_KEY}, "_max_gap": pl.Float64()},
        orient="row",
    )


def plain(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with every column held value by value. Why: Polars keeps a column that repeats one
    value (a one-row right side of a join, a literal) as a scalar, and divides by a scalar as a
    multiplication by its reciprocal, an ulp off the division it makes value by value. A series'
    scales and levels joined on are such a column when it is the only series judged, so without
    this a machine judged alone (a scoped detection) would not get the very values it gets when
    judged with the rest of the plant."""
    return pl.DataFrame(frame.get_columns())


def _with_scales(frame: pl.DataFrame, profiles: Sequence[Profile]) -> pl.DataFrame:
    scales = pl.DataFrame(
        [(*p.key, p.scale["r"], p.scale["m4"], p.scale["m16"], p.spread) for p in profiles if p.judged],
        schema={
            **{c: pl.String() for c in SERIES_KEY},
            **{c: pl.Float64() for c in ("s_r", "s_m4", "s_m16", "s_spread")},
        },
        orient="row",
    )
    return plain(frame.join(scales, on=list(SERIES_KEY)))


# ----- judging -----------------------------------------------------------------------------------


def judge(
    samples: pl.DataFrame,
    profiles: Sequence[Profile],
    start: datetime,
    options: SeasonalOptions = SeasonalOptions(),
    *,
    rebased: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Every sample at or after `start` of a judged series with its statistics, their levels
    (0 none, 2 warning, 3..5 critical), its `offset` (a re-based level, `level_offsets`; 0.0 for
    none: `expected` includes it) and `level_change` where a re-basing begins. `samples` holds the
    context before `start` too (up to 16 samples, and `rebase_reach` of time, are used), running
    samples only.

    `rebased` (SERIES_KEY rows; None: every series) names the series whose offsets are computed; the
    caller vouches that no other can be re-based (`rebase_candidates`): they get the offset 0.0 the
    offsets would give them, without the rows before their windows' tail."""
    judged = [p for p in profiles if p.judged]
    if not judged or samples.is_empty():
        return pl.DataFrame()
    frame = _strings(samples).join(
        pl.DataFrame([p.key for p in judged], schema=list(SERIES_KEY), orient="row"), on=list(SERIES_KEY), how="semi"
    )
    if frame.is_empty():
        return pl.DataFrame()
    # the tail needs each series in time order only (a cheap sort on one column); sorting the day's
    # rows by the five key strings would cost more than judging the hour
    rebase = options.rebase_after
    frame = frame.sort("bucket_start")
    if rebase > timedelta(0) and rebased is not None and rebased.is_empty():
        frame = _tail(frame, start, timedelta(0))
    elif rebase > timedelta(0) and rebased is not None:
        # only the series that may be re-based keep the rows before their windows' tail
        keys = list(SERIES_KEY)
        frame = pl.concat(
            [
                _tail(frame.join(rebased, on=keys, how="anti"), start, timedelta(0)),
                _tail(frame.join(rebased, on=keys, how="semi"), start, rebase_reach(rebase)),
            ]
        )
    else:
        frame = _tail(frame, start, rebase_reach(rebase))
    frame = frame.sort(*SERIES_KEY, "bucket_start")
    frame = frame.with_columns(expected=_expected(frame, _centre_frame(judged), options))
    gaps = _gap_frame(judged)
    frame = _with_scales(frame.join(gaps, on=list(SERIES_KEY)), judged)
    if rebase > timedelta(0):
        shift = pl.DataFrame(
            [(*p.key, p.critical["shift16"] * p.scale["m16"]) for p in judged],
            schema={**{c: pl.String() for c in SERIES_KEY}, "_l_shift": pl.Float64()},
            orient="row",
        )
        if rebased is not None and rebased.is_empty():  # what `level_offsets` gives a series it cannot re-base
            frame = frame.with_columns(offset=0.0, rescale=1.0, rebase_held=False)
        else:
            frame = level_offsets(plain(frame.join(shift, on=list(SERIES_KEY))), rebase).drop("_l_shift")
        # the first re-based sample after one judged against the profile: where the event that
        # opened at the change says what it was (a warning, `level_change`, the offset in scales)
        held = pl.col("rebase_held")
        began = held & (pl.col("offset") != 0.0) & ~held.shift(1).over(SERIES_KEY).fill_null(False)
        frame = (
            frame.with_columns(
                expected=pl.col("expected") + pl.col("offset"),
                **{LEVEL_CHANGE: pl.when(began).then(pl.col("offset").abs() / pl.col("s_r"))},
            )
            .with_columns(pl.col(c) * pl.col("rescale") for c in ("s_r", "s_m4", "s_m16", "s_spread"))
            .drop("rebase_held")
        )
    else:
        frame = frame.with_columns(offset=pl.lit(0.0), **{LEVEL_CHANGE: pl.lit(None, pl.Float64)})
    # the rows kept only for the offsets' windows: no statistic of a judged sample reaches them
    frame = frame.filter("_window_row").drop("_window_row")
    # `_seg` only labels segments: its numbers depend on where the frame starts, its breaks do not
    stats = _scaled(_raw_statistics(frame, pl.col("_max_gap"))).drop("_seg")
    stats = stats.filter(pl.col("bucket_start") >= start)
    limits = pl.DataFrame(
        [(*p.key, *(p.warning[t] for t in TESTS), *(p.critical[t] for t in TESTS)) for p in judged],
        schema={
            **{c: pl.String() for c in SERIES_KEY},
            **{f"w_{t}": pl.Float64() for t in TESTS},
            **{f"c_{t}": pl.Float64() for t in TESTS},
        },
        orient="row",
    )
    stats = plain(stats.join(limits, on=list(SERIES_KEY)))
    levels = {}
    for t in TESTS:
        value, crit = pl.col(t), pl.col(f"c_{t}")
        levels[f"l_{t}"] = (
            pl.when(value >= 2 * crit)
            .then(5)
            .when(value >= 1.5 * crit)
            .then(4)
            .when(value >= crit)
            .then(3)
            .when(value >= pl.col(f"w_{t}"))
            .then(2)
            .otherwise(0)
            .fill_null(0)
            .cast(pl.Int16)
        )
    stats = stats.with_columns(
        **levels,
        **{
            f"w_{LEVEL_CHANGE}": pl.col("w_deviation"),
            f"c_{LEVEL_CHANGE}": pl.col("c_deviation"),
            f"l_{LEVEL_CHANGE}": pl.when(pl.col(LEVEL_CHANGE).is_not_null()).then(2).otherwise(0).cast(pl.Int16),
        },
    )
    young = [p.key for p in judged if p.span_hours * 3600 < options.critical_after.total_seconds()]
    if young:
        cap = pl.struct(SERIES_KEY).is_in([dict(zip(SERIES_KEY, k, strict=True)) for k in young])
        stats = stats.with_columns(
            pl.when(cap).then(pl.col(c).clip(upper_bound=2)).otherwise(pl.col(c)) for c in levels
        )
    return stats


def training_end(start: datetime, refit: timedelta) -> datetime:
    """The end of the history a profile for the hour at `start` learns from: `start` floored to
    the refit period (epoch-aligned, so UTC midnight for a day). A function of `start` alone, so
    a live hour and a backfill of it use the same profile whatever order hours run in."""
    period = int(refit.total_seconds())
    if period <= 0:
        raise ValueError(f"refit period must be positive, got {refit}")
    epoch = int(start.timestamp())
    return start - timedelta(seconds=epoch % period, microseconds=start.microsecond)


def profiles_for_hour(
    start: datetime,
    keys: set[tuple],
    get: Callable[[datetime, set[tuple]], dict[tuple, Profile]],
    refit: timedelta = timedelta(hours=24),
) -> dict[tuple, Profile]:
    """The profile each series is judged with in the hour at `start`: the one learned up to
    `training_end(start)`; a series that had less than a day of history then (or was still
    'learning') is re-learned up to `start` itself, so a new series starts being judged within
    hours rather than at the next midnight. `get(trained_to, keys)` loads or fits profiles."""
    end = training_end(start, refit)
    found = get(end, keys) if keys else {}
    young = {k for k in keys if k not in found or not found[k].judged or found[k].span_hours < 24}
    if young and end != start:
        found.update(get(start, young))
    return found


def backtest(
    aggregates: pl.DataFrame,
    start: datetime,
    end: datetime,
    options: SeasonalOptions = SeasonalOptions(),
    refit: timedelta = timedelta(hours=24),
) -> pl.DataFrame:
    """Every sample in [start, end) judged exactly as the hourly asset would have judged it, from
    `aggregates` alone (the series' `bucket_s` rows, running samples only): each hour with the
    profile `profiles_for_hour` picks, learned from the same rows. Hours that share one profile
    are judged together (the statistics only look back, so this is the same as hour by hour).

    What an engineer runs to see what the detector would have said about last month, and what
    bench/detection.py and the tests replay labelled data with."""
    samples = samples_of(aggregates, options.bucket_s).sort("bucket_start")
    starts = samples["bucket_start"]
    fitted: dict[datetime, dict[tuple, Profile]] = {}

    def get(trained_to: datetime, keys: set[tuple]) -> dict[tuple, Profile]:
        if trained_to not in fitted:
            since = trained_to - timedelta(days=options.history_days)
            lo, hi = starts.search_sorted(since, "left"), starts.search_sorted(trained_to, "left")
            fitted[trained_to] = {p.key: p for p in fit_profiles(samples.slice(lo, hi - lo), trained_to, options)}
        return {k: fitted[trained_to][k] for k in keys if k in fitted[trained_to]}

    keys = set(samples.select(SERIES_KEY).unique().rows())
    out = []
    hour = start
    while hour < end:
        profiles = profiles_for_hour(hour, keys, get, refit)
        block_end = hour + timedelta(hours=1)
        if all(p.judged and p.span_hours >= 24 for p in profiles.values()):  # one profile until the next refit
            block_end = min(training_end(hour, refit) + refit, end)
        lo = starts.search_sorted(hour - timedelta(hours=24), "left")
        hi = starts.search_sorted(block_end, "left")
        judged = judge(samples.slice(lo, hi - lo), list(profiles.values()), hour, options)
        if not judged.is_empty():
            out.append(judged)
        hour = block_end
    return pl.concat(out, how="diagonal_relaxed") if out else pl.DataFrame()
