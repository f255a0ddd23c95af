"""Anomaly transforms: pooled statistics from bucket aggregates (hand-computed), the seasonal detectors as
the hourly asset runs them (spikes critical, a clean hour silent), stoppages, the Isolation Forest as a
second opinion (only where a statistic flagged, at most a warning), exclusions and settling.

The pooled z-score and the adjacent-bucket sudden-change detector were removed in issue 20 (they paged
on a real machine's daily swing and never fired at 5-min or hourly sampling); their hand-computed tests
went with them. The seasonal statistics are tested by hand in test_seasonal_anomalies.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from analytics_platform.contracts.catalog import LIMITS_SCHEMA
from analytics_platform.transforms.anomalies import (
    ANOMALY_SCHEMA,
    FittedForest,
    PackedForest,
    anomaly_type,
    bucket_features,
    bucket_readings,
    detect_anomalies,
    fit_isolation_forests,
    isolation_forest_anomalies,
    limit_anomalies,
    pooled_stats,
    seasonal_anomalies,
    stoppage_anomalies,
)
from analytics_platform.transforms.seasonal import fit_profiles
from analytics_platform.transforms.spec_quality import LIMIT_SCHEMA
from analytics_platform.transforms.window_aggregates import READING_SCHEMA, SERIES_KEY, TIME

HOUR = datetime(2025, 8, 20, 12, tzinfo=UTC)
DAY_BEFORE = HOUR - timedelta(hours=24)
SERIES = ("t1", "f1", "m1", "s1", "temp")
MACHINE = SERIES[:3]
STEP_S = 5  # one reading every 5 s: 12 per 60-s bucket
EXCLUDED_SCHEMA = {"tenant_id": pl.String(), "factory_id": pl.String(), "machine_id": pl.String(),
                   "start": TIME, "end": TIME, "state": pl.String()}  # fmt: skip


def raw(times: list[datetime], values: list[float] | np.ndarray, series: tuple[str, ...] = SERIES) -> pl.DataFrame:
    return pl.DataFrame(
        {"time": times, **{k: [v] * len(times) for k, v in zip(SERIES_KEY, series, strict=True)}, "value": values},
        schema=READING_SCHEMA,
    )


def history_of(readings: pl.DataFrame, bucket_s: int = 60) -> pl.DataFrame:
    """`analytics_agg`-like rows of raw readings: epoch-aligned buckets, stddev_samp (NULL for 1)."""
    micros = bucket_s * 1_000_000
    return (
        readings.with_columns(bucket_start=(pl.col("time").dt.epoch("us") // micros * micros).cast(TIME))
        .group_by(*SERIES_KEY, "bucket_start")
        .agg(
            count_n=pl.len().cast(pl.Int64),
            sum_v=pl.col("value").sum(),
            avg_v=pl.col("value").mean(),
            min_v=pl.col("value").min(),
            max_v=pl.col("value").max(),
            stddev_v=pl.col("value").std(ddof=1),
        )
        .with_columns(bucket_end=pl.col("bucket_start") + pl.duration(seconds=bucket_s))
        .sort("bucket_start")
    )


def excluded(*intervals: tuple[datetime, datetime | None], state: str = "maintenance") -> pl.DataFrame:
    return pl.DataFrame([(*MACHINE, s, e, state) for s, e in intervals], schema=EXCLUDED_SCHEMA, orient="row")


def times(start: datetime, seconds: int, step: int = STEP_S) -> list[datetime]:
    return [start + timedelta(seconds=s) for s in range(0, seconds, step)]


def signal(ts: list[datetime], seed: int) -> np.ndarray:
    """A 10-minute machine cycle (amplitude 1) plus bounded uniform noise (±0.3): no reading is
    ever 2σ from the mean (max deviation 1.3 < 2·√(0.5 + 0.03) ≈ 1.46)."""
    seconds = np.array([(t - DAY_BEFORE).total_seconds() for t in ts])
    rng = np.random.default_rng(seed)
    return 50.0 + np.sin(2 * np.pi * seconds / 600.0) + rng.uniform(-0.3, 0.3, len(ts))


def details(frame: pl.DataFrame) -> list[dict]:
    return [json.loads(d) for d in frame["details"]]


# ----- z-score -----------------------------------------------------------------------------------


def hand_history() -> pl.DataFrame:
    """Two buckets: 5 readings avg 8 sd 1, 5 readings avg 12 sd 5. N = 10, mean = 100/10 = 10,
    within = 4·1 + 4·25 = 104, between = 5·4 + 5·4 = 40, var = 144/9 = 16, σ = 4."""
    return pl.DataFrame(
        {
            "bucket_start": [DAY_BEFORE, DAY_BEFORE + timedelta(minutes=1)],
            "bucket_end": [DAY_BEFORE + timedelta(minutes=1), DAY_BEFORE + timedelta(minutes=2)],
            **{k: [v, v] for k, v in zip(SERIES_KEY, SERIES, strict=True)},
            "count_n": [5, 5],
            "sum_v": [40.0, 60.0],
            "avg_v": [8.0, 12.0],
            "min_v": [7.0, 5.0],
            "max_v": [9.0, 19.0],
            "stddev_v": [1.0, 5.0],
        },
        schema_overrides={"bucket_start": TIME, "bucket_end": TIME},
    )


def test_pooled_stats_by_hand() -> None:
    assert pooled_stats(hand_history()).select("n", "mean", "std").row(0) == (10, 10.0, 4.0)


def test_pooled_stats_equal_those_of_the_raw_readings() -> None:
    ts = times(DAY_BEFORE, 3 * 3600, 7)  # 7-s steps: buckets of 8 and 9 readings
    values = np.random.default_rng(1).normal(20.0, 3.0, len(ts))
    stats = pooled_stats(history_of(raw(ts, values)))
    assert stats["n"][0] == len(ts)
    assert stats["mean"][0] == pytest.approx(values.mean(), rel=1e-12)
    assert stats["std"][0] == pytest.approx(values.std(ddof=1), rel=1e-12)


@pytest.mark.parametrize(
    ("metric", "kind"),
    [("energy", "power"), ("outdoor_pressure", "pressure"), ("power", "power"), ("vibration", "vibration")],
)
def test_anomaly_types(metric: str, kind: str) -> None:
    assert pl.select(anomaly_type(pl.lit(metric))).item() == kind


# ----- acceptance: four clean days, a clean hour, the same hour with spikes -------------------------

DAYS_BEFORE = HOUR - timedelta(days=4)


@pytest.fixture(scope="module")
def clean_day() -> tuple[pl.DataFrame, pl.DataFrame, list[FittedForest], list]:
    """Four days of history (as bucket aggregates: profiles judge with critical only after three
    days), the following clean hour, forests fitted on the last 24 h as the asset does, profiles."""
    past = times(DAYS_BEFORE, 4 * 24 * 3600)
    history = history_of(raw(past, signal(past, seed=7)))
    hour = times(HOUR, 3600)
    readings = raw(hour, signal(hour, seed=8))
    last_day = history.filter(pl.col("bucket_start") >= DAY_BEFORE)
    return last_day, readings, fit_isolation_forests(last_day), fit_profiles(history, HOUR)


SPIKES = [HOUR + timedelta(minutes=m, seconds=s) for m, s in ((3, 10), (17, 0), (29, 55), (41, 30), (58, 5))]


def spiked(readings: pl.DataFrame, sigma: float, at: list[datetime] = SPIKES, by: float = 8.0) -> pl.DataFrame:
    return readings.with_columns(
        value=pl.when(pl.col("time").is_in(at)).then(pl.col("value") + by * sigma).otherwise(pl.col("value"))
    )


def detect(readings: pl.DataFrame, clean_day, excluded_: pl.DataFrame | None = None) -> pl.DataFrame:
    history, _, models, profiles = clean_day
    return detect_anomalies(readings, history, excluded_, start=HOUR, profiles=profiles, models=models)


def test_clean_hour_yields_nothing(clean_day) -> None:
    _, readings, models, profiles = clean_day
    assert len(models) == 1 and models[0].n_samples == 1440
    assert [(p.stage, p.cadence_s, p.per_sample, p.n_samples) for p in profiles] == [("daily", 5.0, 12.0, 5760)]
    result = detect(readings, clean_day)
    assert result.schema == pl.Schema(ANOMALY_SCHEMA)
    assert result.is_empty()


def test_injected_spikes_are_critical(clean_day) -> None:
    history, readings, _, _ = clean_day
    sigma = pooled_stats(history)["std"][0]
    hot = spiked(readings, sigma)
    result = detect(hot, clean_day)
    deviation = result.filter(pl.col("method") == "deviation").sort("time")
    assert deviation["time"].to_list() == SPIKES  # the spiked reading itself, each one
    assert set(deviation["severity_label"]) == {"critical"}
    assert (deviation["window_end"] - deviation["window_start"]).unique().to_list() == [timedelta(minutes=1)]
    assert deviation["sample_s"].unique().to_list() == [60.0]  # 12 readings a minute are judged per minute
    spike_values = hot.filter(pl.col("time").is_in(SPIKES)).sort("time")["value"].to_list()
    assert deviation["observed"].to_list() == spike_values  # the furthest reading is what stood out
    for spike, value, detail in zip(SPIKES, spike_values, details(deviation), strict=True):
        assert detail["statistic"] == "extreme" and detail["stage"] == "daily"
        assert {"time": spike.isoformat(), "value": value} in detail["readings"]
    # nothing else: one spike in twelve readings is not a noisy minute, nor a shifted level
    assert set(result["method"]) <= {"deviation", "isolation_forest"}
    forest = result.filter(pl.col("method") == "isolation_forest")
    spike_buckets = {t.replace(second=0) for t in SPIKES}
    assert set(forest["time"]) <= spike_buckets  # a second opinion: only where a statistic flagged
    assert set(forest["severity"]) <= {2}  # ... and never more than a warning


def test_forest_critical_needs_an_extreme_reading(clean_day) -> None:
    """A bucket shape the forest has never seen (flat) is unusual but within ±σ: a warning only."""
    _history, readings, models, _ = clean_day
    flat_minute = (pl.col("time") >= HOUR + timedelta(minutes=20)) & (pl.col("time") < HOUR + timedelta(minutes=21))
    odd = readings.with_columns(value=pl.when(flat_minute).then(50.9).otherwise(pl.col("value")))
    result = isolation_forest_anomalies(models, odd)
    assert HOUR + timedelta(minutes=20) in result["time"].to_list()
    assert set(result["severity"]) == {2}
    # twelve identical readings in a series that never repeats is what a stuck sensor looks like: the
    # platform reports it as such, and the forest's opinion is attached, as a warning
    reported = detect(odd, clean_day).select("time", "method", "severity", "observed")
    assert reported.sort("method").rows() == [
        (HOUR + timedelta(minutes=20), "isolation_forest", 2, 50.9),
        (HOUR + timedelta(minutes=20), "stuck", 5, 50.9),
    ]


# ----- exclusions --------------------------------------------------------------------------------


def test_spike_in_maintenance_or_while_settling_is_not_reported(clean_day) -> None:
    history, readings, _, _ = clean_day
    sigma = pooled_stats(history)["std"][0]
    # maintenance 15:00–20:00 hides the spike at 17:00; the machine is still settling until 50:00
    # (30 min after), which hides the one at 29:55 and 41:30 too
    maintenance = excluded((HOUR + timedelta(minutes=15), HOUR + timedelta(minutes=20)))
    result = detect(spiked(readings, sigma), clean_day, maintenance)
    reported = sorted(result.filter(pl.col("severity_label") == "critical")["time"].to_list())
    assert reported == [SPIKES[0], SPIKES[4]]


def test_open_ended_interval_excludes_everything_after_its_start(clean_day) -> None:
    history, readings, _, profiles = clean_day
    hot = spiked(readings, 10.0)
    result = seasonal_anomalies(hot, history, profiles, excluded((HOUR, None)), start=HOUR)
    assert result.is_empty()


def test_history_in_fault_is_not_trained_on(clean_day) -> None:
    past = times(DAYS_BEFORE, 4 * 24 * 3600)
    full = history_of(raw(past, signal(past, seed=7)))
    fault = (DAY_BEFORE + timedelta(hours=5), DAY_BEFORE + timedelta(hours=5, minutes=30))
    in_fault = (pl.col("bucket_start") < fault[1]) & (pl.col("bucket_end") > fault[0])
    wild = full.with_columns(
        max_v=pl.when(in_fault).then(1e6).otherwise(pl.col("max_v")),
        sum_v=pl.when(in_fault).then(pl.col("sum_v") + 1e6).otherwise(pl.col("sum_v")),
        avg_v=pl.when(in_fault).then(pl.col("avg_v") + 1e6 / pl.col("count_n")).otherwise(pl.col("avg_v")),
        stddev_v=pl.when(in_fault).then(1e5).otherwise(pl.col("stddev_v")),
    )
    faults = excluded(fault, state="fault")
    assert pooled_stats(wild, faults).equals(pooled_stats(full.filter(~in_fault)))
    assert pooled_stats(wild)["std"][0] > 1000  # without the exclusion the baseline would be ruined
    wild_day = wild.filter(pl.col("bucket_start") >= DAY_BEFORE)
    (forest,) = fit_isolation_forests(wild_day, faults)
    assert forest.n_samples == 1440 - 30 and forest.feature_mean["max"] < 100


# ----- stoppage ----------------------------------------------------------------------------------

COUNTER_SCHEMA = {"time": TIME, "tenant_id": pl.String(), "factory_id": pl.String(), "machine_id": pl.String(),
                  "increment": pl.Float64()}  # fmt: skip
RUNNING_SCHEMA = {"tenant_id": pl.String(), "factory_id": pl.String(), "machine_id": pl.String(),
                  "start": TIME, "end": TIME}  # fmt: skip


def counters(zero_minutes: range, *, report_zeros: bool = True) -> pl.DataFrame:
    """An increment at every minute of the hour: 5 pieces, 0 in `zero_minutes` (or no row)."""
    rows = [
        (HOUR + timedelta(minutes=m), *MACHINE, 0.0 if m in zero_minutes else 5.0)
        for m in range(60)
        if report_zeros or m not in zero_minutes
    ]
    return pl.DataFrame(rows, schema=COUNTER_SCHEMA, orient="row")


def running(*minutes: tuple[int, int]) -> pl.DataFrame:
    rows = [(*MACHINE, HOUR + timedelta(minutes=a), HOUR + timedelta(minutes=b)) for a, b in minutes]
    return pl.DataFrame(rows, schema=RUNNING_SCHEMA, orient="row")


@pytest.mark.parametrize("report_zeros", [True, False])
def test_twelve_minute_hole_while_running_is_one_stoppage(report_zeros: bool) -> None:
    # Zero increments at minutes 20..31: nothing was produced from the reading at 19 to the one at 31.
    result = stoppage_anomalies(counters(range(20, 32), report_zeros=report_zeros), running((0, 60)))
    assert result.schema == pl.Schema(ANOMALY_SCHEMA)
    assert result.height == 1
    row = result.row(0, named=True)
    assert (row["window_start"], row["window_end"]) == (HOUR + timedelta(minutes=19), HOUR + timedelta(minutes=31))
    assert row["time"] == row["window_start"]
    assert (row["score"], row["severity"], row["severity_label"], row["confidence"]) == (12.0, 2, "warning", 1.0)
    assert (row["anomaly_type"], row["method"], row["sensor_id"], row["metric"]) == (
        "production",
        "stoppage",
        None,
        "count_total",
    )
    assert row["observed"] == 0.0 and row["expected"] > 0
    assert details(result)[0]["readings"][0] == {"time": (HOUR + timedelta(minutes=19)).isoformat(), "value": 5.0}


def test_long_stoppage_is_critical_and_runs_to_the_interval_end() -> None:
    result = stoppage_anomalies(counters(range(25, 60)), running((0, 60)))
    assert result.select("window_start", "window_end", "score", "severity", "severity_label").rows() == [
        (HOUR + timedelta(minutes=24), HOUR + timedelta(minutes=60), 36.0, 3, "critical")
    ]


def test_hole_outside_running_is_not_a_stoppage() -> None:
    assert stoppage_anomalies(counters(range(20, 32)), running((0, 15), (35, 60))).is_empty()
    assert stoppage_anomalies(counters(range(20, 32)), running()).is_empty()
    assert stoppage_anomalies(counters(range(20, 29)), running((0, 60))).is_empty()  # 9 minutes < 10


def test_no_counter_readings_is_not_a_stoppage() -> None:
    """A silent counter is a device problem (device health reports it), not a stopped machine."""
    assert stoppage_anomalies(counters(range(0)).clear(), running((0, 60))).is_empty()


# ----- Isolation Forest model --------------------------------------------------------------------


def test_model_round_trip_scores_identically(clean_day) -> None:
    history, readings, models, _ = clean_day
    (forest,) = models
    assert forest.key == SERIES and forest.features == ("avg", "min", "max", "std", "d_avg")
    assert forest.trained_from == DAY_BEFORE and forest.trained_to == HOUR
    assert forest.contamination == 0.01 and forest.reading_std == pytest.approx(pooled_stats(history)["std"][0])
    loaded = FittedForest.from_bytes(forest.to_bytes())
    features = bucket_features(bucket_readings(readings)).select(forest.features).to_numpy()
    assert np.array_equal(loaded.model.score_samples(features), forest.model.score_samples(features))
    assert loaded.threshold == forest.threshold
    hot = spiked(readings, forest.reading_std)
    assert isolation_forest_anomalies([loaded], hot).equals(isolation_forest_anomalies(models, hot))


def test_scoring_only_some_buckets_gives_exactly_those_rows_of_the_full_result(clean_day) -> None:
    """detect_anomalies scores only the samples a statistic flagged: a bucket's score must not depend
    on which other buckets are scored with it, nor its change (d_avg) on them."""
    history, readings, models, _ = clean_day
    (forest,) = models
    odd = spiked(readings, forest.reading_std, by=4.0)
    full = isolation_forest_anomalies(models, odd, history=history)
    assert full.height >= 3
    picked = full.select(*SERIES_KEY, bucket_start="window_start").gather([0, full.height - 1])
    picked = pl.concat([picked, picked.with_columns(bucket_start=pl.lit(HOUR + timedelta(minutes=59), TIME))])
    only = isolation_forest_anomalies(models, odd, history=history, only=picked)
    assert only.equals(full.gather([0, full.height - 1]))
    assert isolation_forest_anomalies(models, odd, history=history, only=picked.clear()).is_empty()


def test_forests_fitted_on_two_workers_equal_those_fitted_on_one(clean_day) -> None:
    """Fitting in parallel shares the series out over processes; each forest still sees only its own
    rows and the same random_state, so the forests (and their scores) are the same."""
    history, readings, _, _ = clean_day
    series = [("t1", "f1", f"m{i}", "s1", "temp") for i in range(8)]
    many = pl.concat(
        [history.with_columns(machine_id=pl.lit(k[2]), avg_v=pl.col("avg_v") + i) for i, k in enumerate(series)]
    )
    alone = fit_isolation_forests(many, n_estimators=20, workers=1)
    shared = fit_isolation_forests(many, n_estimators=20, workers=2, parallel_from=2)
    assert [f.key for f in shared] == [f.key for f in alone] == series
    features = bucket_features(bucket_readings(readings)).select(alone[0].features).to_numpy()
    for a, b in zip(alone, shared, strict=True):
        assert (a.threshold, a.feature_mean, a.reading_mean, a.n_samples) == (
            b.threshold,
            b.feature_mean,
            b.reading_mean,
            b.n_samples,
        )
        assert np.array_equal(a.model.score_samples(features), b.model.score_samples(features))


def test_a_forest_is_stored_as_the_same_bytes_whichever_path_fitted_it(clean_day) -> None:
    """The live path fits an hour's few forests in its own process, a backfill of the plant shares
    them out over worker processes: the stored bytes of the same series' forest (same rows, same
    seed) must not depend on which, nor on a round trip through the database (they are compared and
    audited as the model of that data)."""
    history, _, _, _ = clean_day
    series = [("t1", "f1", f"m{i}", "s1", "temp") for i in range(4)]
    many = pl.concat(
        [history.with_columns(machine_id=pl.lit(k[2]), avg_v=pl.col("avg_v") + i) for i, k in enumerate(series)]
    )
    alone = [f.to_bytes() for f in fit_isolation_forests(many, n_estimators=20, workers=1)]
    shared = [f.to_bytes() for f in fit_isolation_forests(many, n_estimators=20, workers=2, parallel_from=2)]
    assert len(set(alone)) == 4
    assert shared == alone
    assert [FittedForest.from_bytes(b).to_bytes() for b in alone] == alone
    # packed where fitted (a run's path): the same bytes, in this process or in the workers
    for workers in (1, 2):
        packed = fit_isolation_forests(many, n_estimators=20, workers=workers, parallel_from=2, pack=True)
        assert [p.to_bytes() for p in packed] == alone
        assert [p.key for p in packed] == series


def test_a_packed_forest_keeps_the_stored_fields_and_scores_as_the_forest(clean_day) -> None:
    history, readings, models, _ = clean_day
    (forest,) = models
    (packed,) = fit_isolation_forests(history, pack=True)
    assert isinstance(packed, PackedForest)
    assert (packed.key, packed.bucket_s, packed.trained_from, packed.trained_to, packed.n_samples) == (
        forest.key,
        forest.bucket_s,
        forest.trained_from,
        forest.trained_to,
        forest.n_samples,
    )
    assert (packed.contamination, packed.threshold, packed.sklearn_version) == (
        forest.contamination,
        forest.threshold,
        forest.sklearn_version,
    )
    unpacked = packed.unpack()
    features = bucket_features(bucket_readings(readings)).select(forest.features).to_numpy()
    assert np.array_equal(unpacked.model.score_samples(features), forest.model.score_samples(features))
    assert (unpacked.feature_mean, unpacked.feature_std, unpacked.reading_std) == (
        forest.feature_mean,
        forest.feature_std,
        forest.reading_std,
    )
    hot = spiked(readings, forest.reading_std)
    assert isolation_forest_anomalies([unpacked], hot).equals(isolation_forest_anomalies(models, hot))


def test_too_few_buckets_fit_no_model(clean_day) -> None:
    history, _, _, _ = clean_day
    assert fit_isolation_forests(history.head(100)) == []


def test_bucket_features_change_is_null_without_an_adjacent_bucket() -> None:
    ts = [HOUR, HOUR + timedelta(seconds=61), HOUR + timedelta(seconds=185)]
    features = bucket_features(bucket_readings(raw(ts, [1.0, 3.0, 10.0])))
    assert features.select("bucket_start", "avg", "std", "d_avg").rows() == [
        (HOUR, 1.0, 0.0, None),
        (HOUR + timedelta(minutes=1), 3.0, 0.0, 2.0),
        (HOUR + timedelta(minutes=3), 10.0, 0.0, None),
    ]


def test_without_profiles_they_are_learned_from_the_history_given(clean_day) -> None:
    """What a caller with only readings and history gets: the hour of the first reading, profiles
    learned from that history (four days: critical allowed), the same rows as with stored profiles."""
    history, readings, models, profiles = clean_day
    past = times(DAYS_BEFORE, 4 * 24 * 3600)
    full = history_of(raw(past, signal(past, seed=7)))
    hot = spiked(readings, pooled_stats(history)["std"][0])
    learned = detect_anomalies(hot, full, models=models)
    assert learned.equals(detect_anomalies(hot, full, start=HOUR, profiles=profiles, models=models))
    assert learned.filter(pl.col("method") == "deviation")["time"].to_list() == SPIKES
    assert detect_anomalies(hot.clear(), full).is_empty()


def test_limit_anomalies_judge_the_tenants_range_before_the_default_and_the_applicable_spec() -> None:
    t = datetime(2026, 3, 2, 10, 1, 30, tzinfo=UTC)
    readings = pl.DataFrame(
        [
            (t, "t1", "f1", "m1", "s1", "temp", 450.0),  # above the default 400: range; above t1's spec 45: spec
            (t + timedelta(seconds=10), "t1", "f1", "m1", "s1", "temp", 50.0),  # in range, above spec
            (t + timedelta(seconds=20), "t1", "f1", "m1", "s1", "temp", 40.0),  # fine
            (t, "t2", "f1", "m1", "s1", "temp", 350.0),  # above t2's own range (300), no spec limit
            (t, "t2", "f1", "m1", "s1", "ph", float("nan")),  # not finite: never judged here
        ],
        schema=["time", "tenant_id", "factory_id", "machine_id", "sensor_id", "metric", "value"],
        orient="row",
    )
    catalog = pl.DataFrame(
        [("*", "temp", -60.0, 400.0, "degC"), ("t2", "temp", 0.0, 300.0, "degC"), ("*", "ph", 0.0, 14.0, "pH")],
        schema=LIMITS_SCHEMA,
        orient="row",
    )
    spec = pl.DataFrame(
        [
            ("t1", "*", "metric", "temp", None, 45.0, None, None),
            ("t1", "f2", "metric", "temp", None, 10.0, None, None),  # another factory's: not f1's
            ("t1", "*", "metric", "temp", None, 5.0, None, t + timedelta(hours=1)),  # not valid yet
        ],
        schema=LIMIT_SCHEMA,
        orient="row",
    )
    out = limit_anomalies(readings, catalog, spec)
    assert out.select("tenant_id", "time", "method", "severity", "observed", "expected").rows() == [
        ("t1", t, "range", 4, 450.0, 400.0),
        ("t1", t, "spec", 3, 450.0, 45.0),
        ("t1", t + timedelta(seconds=10), "spec", 3, 50.0, 45.0),
        ("t2", t, "range", 4, 350.0, 300.0),
    ]
    # the window is the reading's 60 s sample, so it opens the same event a seasonal row of it would
    assert set(out["window_start"]) == {datetime(2026, 3, 2, 10, 1, tzinfo=UTC)}
    assert set(out["sample_s"]) == {60.0}
    assert json.loads(out["details"][0]) == {
        "bound": "upper",
        "lower_limit": -60.0,
        "upper_limit": 400.0,
        "readings": [{"time": t.isoformat(), "value": 450.0}],
    }
