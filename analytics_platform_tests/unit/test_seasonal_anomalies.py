"""The seasonal detectors of issue 20, by hand: profile stages and cadence learned from the data, the
expectation interpolated between hour medians, statistics and severity levels, which profile an hour
is judged with (the same live and in a backfill), and the defects the issue reported reproduced:
hourly and 5-minute series were never judged, a daily swing paged all day, a young series was judged
blindly."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from analytics_platform.transforms import seasonal as se
from analytics_platform.transforms.anomalies import seasonal_anomalies, settled
from analytics_platform.transforms.window_aggregates import READING_SCHEMA, SERIES_KEY, TIME, window_aggregates

SERIES = ("t1", "f1", "m1", "s1", "temp")
MONDAY = datetime(2025, 6, 2, tzinfo=UTC)


def readings(start: datetime, step_s: int, values: list[float] | np.ndarray, series=SERIES) -> pl.DataFrame:
    ts = [start + timedelta(seconds=step_s * i) for i in range(len(values))]
    return pl.DataFrame(
        {"time": ts, **{k: [v] * len(ts) for k, v in zip(SERIES_KEY, series, strict=True)}, "value": values},
        schema=READING_SCHEMA,
    )


def aggregates(frame: pl.DataFrame) -> pl.DataFrame:
    return window_aggregates(frame.lazy(), [60]).collect()


def daily(step_s: int, days: int, amplitude: float = 10.0, noise: float = 0.5, seed: int = 1) -> np.ndarray:
    """A machine temperature with a daily swing (peak 15:00) and Gaussian noise."""
    t = np.arange(0, days * 86_400, step_s)
    rng = np.random.default_rng(seed)
    return 60.0 + amplitude * np.cos(2 * np.pi * (t / 86_400 - 15 / 24)) + rng.normal(0.0, noise, t.size)


# ----- which profile an hour is judged with ------------------------------------------------------


def test_training_end_is_the_start_floored_to_the_refit_period() -> None:
    at = datetime(2025, 8, 20, 13, 45, 12, 500, tzinfo=UTC)
    assert se.training_end(at, timedelta(hours=24)) == datetime(2025, 8, 20, tzinfo=UTC)
    assert se.training_end(at, timedelta(hours=6)) == datetime(2025, 8, 20, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="positive"):
        se.training_end(at, timedelta(0))


def profile(key: tuple, stage: str, trained_to: datetime, span_hours: float) -> se.Profile:
    return se.Profile(*key, stage=stage, trained_from=None, trained_to=trained_to, n_samples=0,
                      span_hours=span_hours, cadence_s=60, per_sample=1)  # fmt: skip


def test_a_young_series_is_relearned_every_hour_a_mature_one_at_midnight() -> None:
    old, young = ("t", "f", "m", "s", "old"), ("t", "f", "m", "s", "new")
    calls = []

    def get(trained_to: datetime, keys: set[tuple]) -> dict[tuple, se.Profile]:
        calls.append((trained_to, sorted(keys)))
        # the old series has two weeks of history, the new one 20 hours
        return {k: profile(k, "weekly", trained_to, 336.0) if k == old else profile(k, "flat", trained_to, 20.0)
                for k in keys}  # fmt: skip

    hour = datetime(2025, 8, 20, 13, tzinfo=UTC)
    chosen = se.profiles_for_hour(hour, {old, young}, get)
    midnight = datetime(2025, 8, 20, tzinfo=UTC)
    assert calls == [(midnight, sorted([old, young])), (hour, [young])]
    assert (chosen[old].trained_to, chosen[young].trained_to) == (midnight, hour)
    # the choice depends on the hour alone: judged again later (a backfill), the same profiles
    calls.clear()
    assert se.profiles_for_hour(hour, {old, young}, get) == chosen


# ----- learning: stages and cadence --------------------------------------------------------------


def test_stages_follow_the_history_there_is() -> None:
    start = MONDAY
    five_min = lambda hours: aggregates(readings(start, 300, [50.0 + (i % 7) for i in range(hours * 12)]))  # noqa: E731
    (learning,) = se.fit_profiles(five_min(2), start + timedelta(hours=2))  # 24 samples < 30
    assert (learning.stage, learning.judged, learning.n_samples) == ("learning", False, 24)
    (flat,) = se.fit_profiles(five_min(3), start + timedelta(hours=3))
    assert (flat.stage, flat.n_samples, flat.cadence_s, flat.per_sample, flat.sample_s) == ("flat", 36, 300, 1, 300)
    assert {v for row in flat.centre for v in row} == {53.0}  # the overall median of 50..56
    (two_days,) = se.fit_profiles(five_min(48), start + timedelta(hours=48))
    assert two_days.stage == "flat"  # an hour's median from two days fits those days, not the hour
    (day,) = se.fit_profiles(five_min(72), start + timedelta(hours=72))
    assert day.stage == "daily"
    (week,) = se.fit_profiles(five_min(24 * 8), start + timedelta(days=8))
    assert week.stage == "weekly"
    # a series only named (no history at all) is learning too
    (nothing,) = se.fit_profiles(five_min(1).clear(), start, series=[SERIES])
    assert (nothing.stage, nothing.n_samples) == ("learning", 0)


def test_cadence_is_learned_fast_series_are_judged_per_minute() -> None:
    # nothing before the point it learns up to: nothing learned, and no series named, no profile
    assert se.fit_profiles(aggregates(readings(MONDAY, 10, [1.0, 2.0])), MONDAY) == []
    (fast,) = se.fit_profiles(
        aggregates(readings(MONDAY, 10, [1.0 + (i % 5) for i in range(6 * 360)])), MONDAY + timedelta(hours=6)
    )
    assert (fast.cadence_s, fast.per_sample, fast.sample_s) == (10.0, 6.0, 60.0)
    (hourly,) = se.fit_profiles(
        aggregates(readings(MONDAY, 3600, [float(i % 5) for i in range(72)])), MONDAY + timedelta(days=3)
    )
    assert (hourly.cadence_s, hourly.per_sample, hourly.sample_s, hourly.stage) == (3600.0, 1.0, 3600.0, "daily")
    # three days: every hour's median is the middle of its three values (i mod 5 for i = h, h+24, h+48)
    assert hourly.centre[0][:3] == [3.0, 1.0, 1.0]


def test_weekday_cells_stand_alone_only_with_three_days_of_them() -> None:
    """Three Mondays at 20, every other day at 10 (10-min readings): Monday's cells hold 3 days × 6
    samples, so Monday gets its own median; with two Mondays the weekday class median stands for it."""
    values = []
    for day in range(15):
        values += [20.0 if day % 7 == 0 else 10.0] * 144
    (p,) = se.fit_profiles(aggregates(readings(MONDAY, 600, values)), MONDAY + timedelta(days=15))
    assert p.stage == "weekly"
    assert set(p.centre[0]) == {20.0} and set(p.centre[1]) == {10.0}  # Monday, Tuesday
    (p2,) = se.fit_profiles(aggregates(readings(MONDAY, 600, values[: 144 * 14])), MONDAY + timedelta(days=14))
    assert set(p2.centre[0]) == {10.0}


# ----- judging by hand ---------------------------------------------------------------------------


def hand_profile(**overrides) -> se.Profile:
    """expected(hh:30) = hh on every weekday; scale 1 (so a statistic is the residual itself);
    every statistic warns at 4 and is critical at 5; stuck warns at 3 readings, critical at 6."""
    values = dict(
        stage="weekly", trained_from=MONDAY, trained_to=MONDAY + timedelta(days=14), n_samples=1000,
        span_hours=336.0, cadence_s=60.0, per_sample=1.0,
        centre=[[float(h) for h in range(24)] for _ in range(7)],
        scale={"r": 1.0, "m4": 1.0, "m16": 1.0}, spread=None,
        warning={t: 4.0 for t in se.TESTS} | {"stuck": 3.0},
        critical={t: 5.0 for t in se.TESTS} | {"stuck": 6.0},
    )  # fmt: skip
    values.update(overrides)
    return se.Profile(*SERIES, **values)


def test_expectation_is_interpolated_between_hour_centres() -> None:
    day = MONDAY + timedelta(days=15)
    # one-minute buckets whose midpoints are 10:14:30, 10:29:30, 10:59:30: between the centres 09:30
    # (9) and 10:30 (10) at 0.7417 and 0.9917 of the way, then between 10:30 and 11:30 at 0.4917
    starts = [day.replace(hour=10, minute=m) for m in (14, 29, 59)]
    frame = pl.concat([readings(t, 60, [10.0]) for t in starts])
    judged = se.judge(se.samples_of(aggregates(frame), 60), [hand_profile()], day.replace(hour=10))
    assert judged.select("bucket_start", "expected").rows() == [
        (starts[0], pytest.approx(9 + 44.5 / 60)),
        (starts[1], pytest.approx(9 + 59.5 / 60)),
        (starts[2], pytest.approx(10 + 29.5 / 60)),
    ]


def test_levels_by_hand() -> None:
    hour = MONDAY + timedelta(days=15, hours=10)  # expected 9.5 at 10:00 .. 10.5 at 11:00
    # one reading a minute from 10:00 (bucket midpoints hh:mm:30, expected 9.5 + (m + 0.5)/60): residuals
    # 0, then +4, +5, +7.5, +10
    expected = [9.5 + (m + 0.5) / 60 for m in range(5)]
    values = [expected[0], expected[1] + 4, expected[2] + 5, expected[3] + 7.5, expected[4] + 10]
    judged = se.judge(se.samples_of(aggregates(readings(hour, 60, values)), 60), [hand_profile()], hour)
    assert judged["deviation"].to_list() == pytest.approx([0, 4, 5, 7.5, 10])
    assert judged["l_deviation"].to_list() == [0, 2, 3, 4, 5]


def test_a_young_profile_only_warns() -> None:
    hour = MONDAY + timedelta(days=15, hours=10)
    young = hand_profile(span_hours=48.0)  # < 3 days
    judged = se.judge(se.samples_of(aggregates(readings(hour, 60, [9.5 + 0.5 / 60 + 10])), 60), [young], hour)
    assert judged["l_deviation"].to_list() == [2]


def test_a_learning_series_is_not_judged() -> None:
    hour = MONDAY + timedelta(days=15, hours=10)
    learning = hand_profile(stage="learning")
    history = aggregates(readings(hour - timedelta(hours=1), 60, [10.0] * 60))
    hot = readings(hour, 60, [1000.0])
    assert seasonal_anomalies(hot, history, [learning], start=hour).is_empty()


def test_stuck_counts_identical_readings_across_the_hour_boundary() -> None:
    """Hourly readings 1, 2, 3, then 7 four times (two before the judged hour): runs of 3 and 4."""
    start = MONDAY + timedelta(days=15)
    frame = readings(start, 3600, [1.0, 2.0, 3.0, 7.0, 7.0, 7.0, 7.0])
    hourly = hand_profile(cadence_s=3600.0, warning={t: 1e9 for t in se.TESTS} | {"stuck": 3.0})
    judged = se.judge(se.samples_of(aggregates(frame), 60), [hourly], start + timedelta(hours=5))
    assert judged.select("run", "stuck", "l_stuck").rows() == [(3, 3.0, 2), (4, 4.0, 2)]


def test_noise_spread_leaves_out_one_spike() -> None:
    """A minute of 1, 2, 3, 100: the spread without the furthest reading is that of 1, 2, 3 (1.0)."""
    hour = MONDAY + timedelta(days=15, hours=10)
    frame = readings(hour, 15, [1.0, 2.0, 3.0, 100.0])
    multi = hand_profile(spread=1.0, per_sample=4.0, cadence_s=15.0)
    judged = se.judge(se.samples_of(aggregates(frame), 60), [multi], hour)
    assert judged["trimmed"].to_list() == pytest.approx([1.0])
    assert judged["noise"].to_list() == pytest.approx([1.0])  # not noisy: one spike
    assert judged["extreme"].to_list() == pytest.approx([100 - 26.5])  # but that spike is extreme
    assert judged["l_extreme"].to_list() == [5]


# ----- trailing statistics: what an hour needs of its context ------------------------------------


def test_window_mean_by_hand_and_whatever_the_frame_starts_with() -> None:
    """Mean of the last k values, NULL with fewer, per group; the same bits from a shorter frame."""
    frame = pl.DataFrame({"g": [1, 1, 1, 1, 1, 2, 2, 2, 2], "v": [1.0, 2.0, 4.0, 8.0, 16.0, 0.1, 0.2, 0.3, 0.7]})
    means = frame.select(se.window_mean(pl.col("v"), 4).over("g"))["v"].to_list()
    assert means == [None, None, None, 3.75, 7.5, None, None, None, pytest.approx(0.325)]
    values = pl.Series(np.random.default_rng(3).normal(50.0, 10.0, 3000) * 1.2345)
    full = pl.select(se.window_mean(pl.lit(values), 16)).to_series()
    tail = pl.select(se.window_mean(pl.lit(values.slice(1234)), 16)).to_series()
    assert full.slice(1234 + 15).to_list() == tail.slice(15).to_list()  # bit for bit


def test_context_tail_keeps_what_the_windows_and_runs_reach() -> None:
    """20 minutes before the hour: a varying series keeps its last 16 (rows 4..19); one holding 7.0
    from row 2 on keeps from row 2, where its run began (a run is counted back to its start)."""
    hour = MONDAY + timedelta(days=15, hours=10)
    varying = readings(hour - timedelta(minutes=20), 60, [float(i) for i in range(22)])
    stuck = readings(hour - timedelta(minutes=20), 60, [1.0, 2.0] + [7.0] * 20, series=(*SERIES[:3], "s2", "temp"))
    samples = se.samples_of(aggregates(pl.concat([varying, stuck])), 60)
    kept = se.context_tail(samples, hour)
    first = kept.group_by("sensor_id").agg(pl.col("bucket_start").min(), pl.len()).sort("sensor_id").rows()
    assert first == [("s1", hour - timedelta(minutes=16), 18), ("s2", hour - timedelta(minutes=18), 20)]


def test_an_hour_judged_with_its_tail_equals_the_hour_judged_with_its_whole_context() -> None:
    """Three hours of context with a stuck stretch into the hour, a gap (09:48-09:56), a flat multi-reading
    minute and noise: every statistic of the hour, to the last bit, as when the context is kept whole (judging from
    three hours earlier keeps it all, and gives the hour's rows among its own)."""
    hour = MONDAY + timedelta(days=15, hours=10)
    rng = np.random.default_rng(5)
    single = 9.5 + rng.normal(0.0, 0.4, 240)
    single[150:185] = 9.7  # stuck from 09:30 (30 minutes before the hour) to 10:05
    slow = readings(hour - timedelta(hours=3), 60, single)
    fast_values = 9.5 + rng.normal(0.0, 0.4, 960)
    fast_values[640:644] = 9.9  # one flat minute of four readings (09:40)
    fast = readings(hour - timedelta(hours=3), 15, fast_values, series=(*SERIES[:3], "s2", "temp"))
    fast = fast.filter(
        (pl.col("time") < hour - timedelta(minutes=12)) | (pl.col("time") >= hour - timedelta(minutes=4))
    )
    samples = se.samples_of(aggregates(pl.concat([slow, fast])), 60)
    multi = hand_profile(spread=0.4, per_sample=4.0, cadence_s=15.0)
    profiles = [hand_profile(), se.Profile.from_json({**multi.to_json(), "sensor_id": "s2"})]
    alone = se.judge(samples, profiles, hour)
    whole = se.judge(samples, profiles, hour - timedelta(hours=3)).filter(pl.col("bucket_start") >= hour)
    assert alone.height == 120 and alone["run"].max() == 35  # the run counted from 09:30, 16 rows further back
    assert alone.equals(whole)


def test_a_tail_inside_the_last_hour_is_the_tail_of_the_whole_day() -> None:
    """A varying series' tail starts inside the last hour before the judged one: tail_inside names it,
    and judging it from that hour gives the bits the day gives. A series stuck for the whole hour
    (its run began before it) and a sparse one (12 samples an hour: fewer than REACH, where the
    count's `- REACH` wraps round) are not named: the caller judges them from the whole day."""
    hour = MONDAY + timedelta(days=15, hours=10)
    rng = np.random.default_rng(7)
    varying = readings(hour - timedelta(hours=3), 60, 9.5 + rng.normal(0.0, 0.4, 200))
    stuck_values = 9.5 + rng.normal(0.0, 0.4, 200)
    stuck_values[100:] = 9.7  # from 08:40: the whole last hour and into the judged one
    stuck = readings(hour - timedelta(hours=3), 60, stuck_values, series=(*SERIES[:3], "s2", "temp"))
    sparse = readings(
        hour - timedelta(hours=3), 300, 9.5 + rng.normal(0.0, 0.4, 40), series=(*SERIES[:3], "s3", "temp")
    )
    samples = se.samples_of(aggregates(pl.concat([varying, stuck, sparse])), 60)
    recent = samples.filter(pl.col("bucket_start") >= hour - timedelta(hours=1))
    assert se.tail_inside(recent, hour)["sensor_id"].to_list() == ["s1"]
    profile = hand_profile()
    whole = se.judge(samples.filter(pl.col("sensor_id") == "s1"), [profile], hour)
    short = se.judge(recent.filter(pl.col("sensor_id") == "s1"), [profile], hour)
    assert whole.height == 20 and short.equals(whole)


# ----- the defects of issue 20, reproduced ----------------------------------------------------------


def judge_day(step_s: int, values: np.ndarray, day: int, inject=None) -> pl.DataFrame:
    """Readings every `step_s` from MONDAY; profiles learned up to `day`'s midnight from the 14 days
    before; that day's 24 hours judged one by one, as the asset does. Returns the anomaly rows."""
    frame = readings(MONDAY, step_s, values)
    if inject is not None:
        frame = inject(frame)
    aggs = aggregates(frame)
    midnight = MONDAY + timedelta(days=day)
    profiles = se.fit_profiles(aggs.filter(pl.col("bucket_start") >= midnight - timedelta(days=14)), midnight)
    rows = []
    for h in range(24):
        start = midnight + timedelta(hours=h)
        hour = frame.filter((pl.col("time") >= start) & (pl.col("time") < start + timedelta(hours=1)))
        context = aggs.filter((pl.col("bucket_end") <= start) & (pl.col("bucket_start") >= start - timedelta(days=1)))
        rows.append(seasonal_anomalies(hour, context, profiles, start=start))
    return pl.concat(rows)


@pytest.mark.parametrize("step_s", [300, 3600])
def test_a_daily_swing_of_twenty_degrees_is_not_an_anomaly(step_s: int) -> None:
    """Before: z-score against the trailing 24 h flagged the peaks and troughs of every day."""
    assert judge_day(step_s, daily(step_s, 22), 21).is_empty()


def test_an_hourly_series_is_judged_and_a_spike_is_critical() -> None:
    """Before: z-score needed 30 readings in its trailing 24 h, the forest 120 one-minute buckets."""
    at = MONDAY + timedelta(days=21, hours=9)
    spike = lambda f: f.with_columns(value=pl.when(pl.col("time") == at).then(pl.col("value") + 6.0).otherwise("value"))  # noqa: E731
    rows = judge_day(3600, daily(3600, 22), 21, spike)
    assert rows.select("time", "method", "severity_label").rows() == [(at, "deviation", "critical")]
    assert rows["sample_s"].to_list() == [3600.0]


def test_a_level_shift_at_five_minute_sampling_is_found_at_its_first_sample() -> None:
    """Before: sudden change compared adjacent 60 s buckets, never both filled at 5-min sampling."""
    onset, end = MONDAY + timedelta(days=21, hours=14), MONDAY + timedelta(days=21, hours=16)
    inside = (pl.col("time") >= onset) & (pl.col("time") < end)
    shift = lambda f: f.with_columns(value=pl.when(inside).then(pl.col("value") + 3.0).otherwise("value"))  # noqa: E731
    rows = judge_day(300, daily(300, 22), 21, shift)
    assert rows["time"].min() == onset
    assert rows["time"].max() < end + timedelta(minutes=15)
    assert rows.filter(pl.col("severity") >= 3)["time"].min() == onset
    assert set(rows["method"]) <= {"deviation", "shift", "noise"}


def test_readings_while_settling_after_a_stop_are_not_judged() -> None:
    hour = MONDAY + timedelta(days=15, hours=10)
    stop = pl.DataFrame(
        [(*SERIES[:3], hour - timedelta(hours=1), hour + timedelta(minutes=5))],
        schema={"tenant_id": pl.String(), "factory_id": pl.String(), "machine_id": pl.String(),
                "start": TIME, "end": TIME},
        orient="row",
    )  # fmt: skip
    assert settled(stop, timedelta(minutes=30))["end"].to_list() == [hour + timedelta(minutes=35)]
    cold = readings(hour, 60, [9.5 + (m + 0.5) / 60 + (-20.0 if m < 40 else 20.0) for m in range(60)])
    history = aggregates(readings(hour - timedelta(hours=1), 60, [10.0] * 60))
    rows = seasonal_anomalies(cold, history, [hand_profile()], stop, start=hour)
    # minutes 0..34 are excluded or settling; 35..39 still 20 below, 40.. 20 above: all judged
    assert rows.filter(pl.col("method") == "deviation")["time"].min() == hour + timedelta(minutes=35)
    assert math.isclose(rows.filter(pl.col("method") == "deviation")["score"].max(), 4.0)


def test_a_series_that_mostly_holds_one_value_is_never_stuck() -> None:
    """A setpoint that changes twice in two weeks: its runs only grow, so 'stuck' is off for it."""
    values = [50.0] * (24 * 6) + [55.0] * (24 * 8)
    frame = readings(MONDAY, 3600, values + [55.0] * 24)
    (p,) = se.fit_profiles(aggregates(frame), MONDAY + timedelta(days=14))
    assert p.warning["stuck"] == p.critical["stuck"] == se.NEVER
    judged = se.judge(se.samples_of(aggregates(frame), 60), [p], MONDAY + timedelta(days=14))
    assert judged["run"].to_list() == list(range(24 * 8 + 1, 24 * 9 + 1))  # 193 .. 216 readings
    assert set(judged["l_stuck"]) == {0}


def test_a_series_judged_alone_gets_the_bits_it_gets_judged_with_another() -> None:
    """A detection scoped to one machine judges its series alone; the schedule judges it with the
    plant's. Joined on alone, a series' scales and levels are a one-value column, which Polars divides
    by as a multiplication by the reciprocal (an ulp off): `plain` keeps every statistic the same."""
    at = MONDAY + timedelta(days=21, hours=9, minutes=35)
    frames = [
        readings(MONDAY, 300, daily(300, 22, seed=seed), series=(*SERIES[:3], sensor, "temp")).with_columns(
            value=pl.when(pl.col("time") == at).then(pl.col("value") + 7.0).otherwise("value")
        )
        for seed, sensor in ((1, "s1"), (2, "s2"))
    ]
    aggs = aggregates(pl.concat(frames))
    midnight, start = MONDAY + timedelta(days=21), MONDAY + timedelta(hours=9, days=21)
    profiles = se.fit_profiles(aggs.filter(pl.col("bucket_start") >= midnight - timedelta(days=14)), midnight)
    hour = pl.concat(frames).filter((pl.col("time") >= start) & (pl.col("time") < start + timedelta(hours=1)))
    context = aggs.filter((pl.col("bucket_end") <= start) & (pl.col("bucket_start") >= start - timedelta(days=1)))
    both = seasonal_anomalies(hour, context, profiles, start=start)
    s1 = pl.col("sensor_id") == "s1"
    alone = seasonal_anomalies(hour.filter(s1), context.filter(s1), profiles[:1], start=start)
    assert alone.height >= 1 and alone.equals(both.filter(s1))
    # every statistic of every sample of the hour, not only those flagged
    window = (pl.col("bucket_start") >= start - timedelta(hours=3)) & (
        pl.col("bucket_end") <= start + timedelta(hours=1)
    )
    samples = se.samples_of(aggs.filter(window), 60)
    judged = se.judge(samples, profiles, start).filter(s1)
    assert judged.height == 12 and judged.equals(se.judge(samples.filter(s1), profiles[:1], start))
    # the arithmetic it guards: a column by a one-row join's column, divided value by value
    r, s = 12.445284583333347, 0.3995038670000076
    joined = pl.DataFrame({"k": ["a"] * 3, "r": [r] * 3}).join(pl.DataFrame({"k": ["a"], "s": [s]}), on="k")
    assert se.plain(joined).select(pl.col("r") / pl.col("s"))["r"].to_list() == [r / s] * 3
