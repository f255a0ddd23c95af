"""A lasting level change re-bases the expectation (`seasonal.level_offsets`): a machine moved to a new
operating point is critical for the confirmation span, not for the days its profile needs to learn
the new level, and the event that opened at the change closes saying what it was; a fault on the new
level is still critical, a drift is not taken for a level, and an hour inside the re-based span is
judged the same from its own context as in a longer one (live == backfill)."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from analytics_platform.transforms import anomalies as an
from analytics_platform.transforms import seasonal as se
from analytics_platform.transforms.anomalies import CONTEXT, seasonal_anomalies
from analytics_platform.transforms.window_aggregates import READING_SCHEMA, SERIES_KEY, window_aggregates

SERIES = ("t1", "f1", "m1", "s1", "temp")
MONDAY = datetime(2025, 6, 2, tzinfo=UTC)
SIGMA = 0.5  # the noise σ of every series here
ONSET = MONDAY + timedelta(days=21, hours=10)  # a Monday, after three weeks of normal running
ON = se.SeasonalOptions(rebase_after=timedelta(hours=se.REBASE_HOURS))  # ANOMALY_REBASE_HOURS=6
WINDOW = ON.rebase_after
HOUR = timedelta(hours=1)


def series(days: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(times in s from MONDAY, values): a reading a minute, a daily swing of ±10 (peak 15:00) and
    Gaussian noise of σ = SIGMA."""
    t = np.arange(0, days * 86_400, 60)
    rng = np.random.default_rng(seed)
    return t, 60.0 + 10.0 * np.cos(2 * np.pi * (t / 86_400 - 15 / 24)) + rng.normal(0.0, SIGMA, t.size)


def frame_of(values: np.ndarray) -> pl.DataFrame:
    times = [MONDAY + timedelta(minutes=i) for i in range(values.size)]
    return pl.DataFrame(
        {"time": times, **{k: [v] * len(times) for k, v in zip(SERIES_KEY, SERIES, strict=True)}, "value": values},
        schema=READING_SCHEMA,
    )


def since(t: np.ndarray, at: datetime) -> np.ndarray:
    return t >= (at - MONDAY).total_seconds()


def judge_hours(
    values: np.ndarray | pl.DataFrame, first: datetime, hours: int, excluded: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The anomaly rows of `hours` hours from `first`, each judged on its own as the hourly asset
    does: the profile learned up to the hour's UTC midnight from the 14 days before, the day of
    aggregates before the hour as context. `values`: SERIES' readings a minute from MONDAY, or readings."""
    frame = frame_of(values) if isinstance(values, np.ndarray) else values
    aggs = window_aggregates(frame.lazy(), [60]).collect()
    profiles: dict[datetime, list[se.Profile]] = {}
    rows = []
    for h in range(hours):
        start = first + h * HOUR
        midnight = se.training_end(start, timedelta(days=1))
        if midnight not in profiles:
            history = aggs.filter(pl.col("bucket_start") >= midnight - timedelta(days=14))
            profiles[midnight] = se.fit_profiles(history, midnight)
        hour = frame.filter((pl.col("time") >= start) & (pl.col("time") < start + HOUR))
        context = aggs.filter((pl.col("bucket_end") <= start) & (pl.col("bucket_start") >= start - CONTEXT))
        rows.append(seasonal_anomalies(hour, context, profiles[midnight], excluded, start=start, options=ON))
    return pl.concat(rows).sort("window_start", "method", *SERIES_KEY)


def events(rows: pl.DataFrame) -> list[tuple[datetime, datetime, int]]:
    """(first window start, last window end, worst severity) of the rows at most 3 samples apart:
    `analytics.anomaly_events`' grouping."""
    out: list[list] = []
    for start, end, severity in rows.sort("window_start").select("window_start", "window_end", "severity").rows():
        if out and start <= out[-1][1] + timedelta(minutes=3):
            out[-1][1] = max(out[-1][1], end)
            out[-1][2] = max(out[-1][2], severity)
        else:
            out.append([start, end, severity])
    return [tuple(e) for e in out]


def with_step(seed: int = 1) -> np.ndarray:
    """+8σ from ONSET for three days (the new operating point)."""
    t, values = series(25, seed)
    step = since(t, ONSET) & ~since(t, ONSET + timedelta(days=3))
    return values + np.where(step, 8 * SIGMA, 0.0)


def test_a_lasting_step_is_critical_for_the_confirmation_span_then_rebased() -> None:
    """Before: every sample of the three days was judged against the old level, critical all along
    (a 2-3 day open event on NAB's level changes). Now: critical from the step's first sample until
    the window before a sample (`rebase_after`, 6 h) has held the new level, then nothing; the
    event ends with one `level_change` warning that says the level moved by +8σ."""
    rows = judge_hours(with_step(), ONSET - 2 * HOUR, 50)
    critical = rows.filter(pl.col("severity") >= 3)
    assert critical["window_start"].min() == ONSET
    change = rows.filter(pl.col("details").str.contains('"level_change"'))
    assert change.select("method", "severity_label").rows() == [("shift", "warning")]
    # confirmed once all but a tenth of the window lie beyond the critical shift (the window's oldest
    # part may still hold the old level, the upper part of its noise beyond the shift): 5.1-6 h in
    confirmed = change["window_start"][0]
    assert ONSET + 0.85 * WINDOW <= confirmed <= ONSET + WINDOW
    assert critical.filter(pl.col("window_start") >= confirmed).height == 0
    assert critical["window_start"].max() == confirmed - timedelta(minutes=1)
    details = json.loads(change["details"][0])
    assert abs(details["level_offset"] - 8 * SIGMA) < 0.3 * SIGMA
    opened = [e for e in events(rows) if e[0] == ONSET]
    assert opened == [(ONSET, confirmed + timedelta(minutes=1), 5)]  # closed at the level_change row
    # nothing but that event from the step on, for the two days judged
    assert [e for e in events(rows) if e[0] >= ONSET] == opened


def test_a_spike_on_the_new_level_is_still_critical() -> None:
    """12 h after the step, +8σ above the new level: judged against profile + offset, a deviation
    of about 8 scales, critical; before re-basing it would have been one more sample of the open event."""
    values = with_step()
    spike = ONSET + timedelta(hours=12, minutes=7)
    values[int((spike - MONDAY).total_seconds() // 60)] += 8 * SIGMA
    rows = judge_hours(values, ONSET + timedelta(hours=11), 3)
    assert rows.filter(pl.col("severity") >= 3).select("window_start", "method").rows() == [(spike, "deviation")]
    assert json.loads(rows.filter(pl.col("window_start") == spike)["details"][0])["level_offset"] > 7 * SIGMA


def test_a_drift_is_not_taken_for_a_level_change() -> None:
    """A ramp of +σ/2 an hour for 30 h (15σ at its end) keeps moving: no window of it holds still,
    so nothing is re-based and its last hours are as critical as without re-basing."""
    t, values = series(25)
    hours = (t - (ONSET - MONDAY).total_seconds()) / 3600
    values = values + np.where((hours >= 0) & (hours < 30), hours * SIGMA / 2, 0.0)
    rows = judge_hours(values, ONSET + timedelta(hours=20), 10)
    assert not rows["details"].str.contains("level_offset").any()
    last = rows.filter(pl.col("window_start") >= ONSET + timedelta(hours=29))
    assert last.filter((pl.col("method") == "deviation") & (pl.col("severity") >= 3)).height == 60


def test_an_hour_inside_the_rebased_span_is_judged_the_same_from_its_own_context() -> None:
    """The offset is a function of the `rebase_after` before each sample, which the hour's own day
    of context holds: judging the hour from its tail (context_tail keeps the re-basing window),
    from the short recent context (`tail_inside`) or from a whole earlier start gives the same bits."""
    values = with_step()
    frame = frame_of(values)
    aggs = window_aggregates(frame.lazy(), [60]).collect()
    hour = ONSET + timedelta(hours=8)
    midnight = se.training_end(hour, timedelta(days=1))
    profiles = se.fit_profiles(aggs.filter(pl.col("bucket_start") >= midnight - timedelta(days=14)), midnight)
    samples = se.samples_of(
        aggs.filter((pl.col("bucket_start") >= hour - CONTEXT) & (pl.col("bucket_start") < hour + HOUR)), 60
    ).sort("bucket_start")
    alone = se.judge(samples, profiles, hour, ON)
    whole = se.judge(samples, profiles, hour - timedelta(hours=12), ON).filter(pl.col("bucket_start") >= hour)
    assert alone.height == 60 and (alone["offset"] > 7 * SIGMA).all()
    assert alone.equals(whole)
    recent = samples.filter(pl.col("bucket_start") >= hour - HOUR - WINDOW)
    assert se.tail_inside(recent, hour, WINDOW)["sensor_id"].to_list() == ["s1"]
    assert se.tail_inside(samples.filter(pl.col("bucket_start") >= hour - WINDOW), hour, WINDOW).is_empty()
    assert se.judge(recent, profiles, hour, ON).equals(alone)
    # the rows the hourly asset writes: the same from a day of context as from two
    readings = frame.filter((pl.col("time") >= hour) & (pl.col("time") < hour + HOUR))
    day = aggs.filter((pl.col("bucket_end") <= hour) & (pl.col("bucket_start") >= hour - CONTEXT))
    two = aggs.filter((pl.col("bucket_end") <= hour) & (pl.col("bucket_start") >= hour - 2 * CONTEXT))
    assert seasonal_anomalies(readings, day, profiles, start=hour, options=ON).equals(
        seasonal_anomalies(readings, two, profiles, start=hour, options=ON)
    )


def test_rebasing_off_judges_against_the_profile_alone() -> None:
    """`rebase_after` = 0: the step 8 h on is still judged against the old level (critical)."""
    values = with_step()
    frame = frame_of(values)
    aggs = window_aggregates(frame.lazy(), [60]).collect()
    hour = ONSET + timedelta(hours=8)
    midnight = se.training_end(hour, timedelta(days=1))
    profiles = se.fit_profiles(aggs.filter(pl.col("bucket_start") >= midnight - timedelta(days=14)), midnight)
    samples = se.samples_of(
        aggs.filter((pl.col("bucket_start") >= hour - CONTEXT) & (pl.col("bucket_start") < hour + HOUR)), 60
    )
    off = se.judge(samples, profiles, hour, se.SeasonalOptions(rebase_after=timedelta(0)))
    assert (off["offset"] == 0.0).all()
    assert off.select(worst=pl.max_horizontal(pl.col(f"l_{t}") for t in se.TESTS))["worst"].min() >= 3


def test_the_rebase_setting_reaches_the_assets_options(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """ANOMALY_REBASE_HOURS is read into the anomaly assets' (and the live judge's) SeasonalOptions: the
    tuned 6 h by default (SeasonalOptions' own default too), off when 0; a negative window is refused by name."""
    from analytics_platform.defs.anomalies.assets import anomaly_options
    from analytics_platform.settings import PlatformSettings

    monkeypatch.delenv("ANOMALY_REBASE_HOURS", raising=False)
    assert anomaly_options(PlatformSettings()).seasonal.rebase_after == WINDOW == se.SeasonalOptions().rebase_after
    monkeypatch.setenv("ANOMALY_REBASE_HOURS", "0")
    assert anomaly_options(PlatformSettings()).seasonal.rebase_after == timedelta(0)
    monkeypatch.setenv("ANOMALY_REBASE_HOURS", "-1")
    with pytest.raises(ValueError, match="anomaly_rebase_hours"):
        PlatformSettings()


# ----- the short context: only the series that could be re-based read the re-basing window -----------


@pytest.fixture
def full_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference: every series judged from the whole `rebase_reach` of context, as before
    `rebase_candidates` (`_context(prune=False)`)."""
    monkeypatch.setattr(an, "_context", functools.partial(an._context, prune=False))


def plant(days: int = 23) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(readings, excluded) of a seeded plant of eight series on two machines, a reading a minute
    (one every 5 minutes for `m2`'s flow): a lasting step up (+8σ at ONSET) and one down (−6σ from
    ONSET + 3 h), a spike, a drift, a value held for a day (its tail starts before the last hour), and
    three ordinary series; `m2` stops for 40 minutes at ONSET + 5 h (its samples then are fenced)."""
    t, base = series(days, seed=7)
    rng = np.random.default_rng(11)
    hours = (t - (ONSET - MONDAY).total_seconds()) / 3600
    shapes = {
        ("m1", "s1", "temp"): np.where(hours >= 0, 8 * SIGMA, 0.0),
        ("m1", "s2", "pressure"): np.where(hours >= 3, -6 * SIGMA, 0.0),
        ("m1", "s3", "humidity"): np.where(np.isclose(hours, 4 + 17 / 60), 9 * SIGMA, 0.0),
        ("m2", "s1", "temp"): np.where(hours >= 0, np.minimum(hours, 30) * SIGMA / 2, 0.0),
        ("m2", "s2", "power"): 0.0,
        ("m2", "s3", "vibration"): 0.0,
        ("m2", "s4", "flow"): 0.0,
        ("m2", "s5", "setpoint"): 0.0,
    }
    parts = []
    for i, ((machine, sensor, metric), shape) in enumerate(shapes.items()):
        values = base + rng.normal(0.0, SIGMA, t.size) + shape + 3.0 * i
        if metric == "setpoint":  # one value from the day before ONSET on
            values = np.where(hours >= -24, 55.0, np.round(values))
        keep = t % 300 == 0 if metric == "flow" else np.ones(t.size, dtype=bool)
        parts.append(
            pl.DataFrame(
                {
                    "time": [MONDAY + timedelta(seconds=int(s)) for s in t[keep]],
                    "tenant_id": "t1",
                    "factory_id": "f1",
                    "machine_id": machine,
                    "sensor_id": sensor,
                    "metric": metric,
                    "value": values[keep],
                },
                schema=READING_SCHEMA,
            )
        )
    stop = ONSET + timedelta(hours=5)
    excluded = pl.DataFrame(
        {
            "tenant_id": ["t1"],
            "factory_id": ["f1"],
            "machine_id": ["m2"],
            "start": [stop],
            "end": [stop + 40 * (HOUR / 60)],
        }
    )
    return pl.concat(parts), excluded


def test_a_series_that_cannot_be_rebased_is_judged_from_its_short_tail_to_the_same_bits(full_context: None) -> None:
    """Each hour from before the step to well inside its re-based span, judged as the hourly asset does
    with the short context (only the series `rebase_candidates` finds get the re-basing window), equals
    the reference that gives every series the whole window: the rows, every column, bit for bit."""
    values = with_step()
    reference = judge_hours(values, ONSET - 2 * HOUR, 12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(an, "_context", an._context.func)  # type: ignore[attr-defined]
        pruned = judge_hours(values, ONSET - 2 * HOUR, 12)
    assert pruned.equals(reference)
    assert pruned.filter(pl.col("details").str.contains('"level_change"')).height == 1  # the span was judged


def test_a_seeded_plant_is_judged_the_same_from_the_short_context(full_context: None) -> None:
    """Eight series of two machines, hour by hour across the steps, a stop and a held value: the rows
    with the short context equal the reference's; the long context went only to the series that could
    be re-based (the two steps, the held value: a new level for its series, and the drift, which in
    this noise holds still enough for the window: its documented cost), never to the four ordinary ones."""
    readings, excluded = plant()
    first = ONSET - HOUR
    reference = judge_hours(readings, first, 14, excluded)
    found: list[set[tuple]] = []
    rebase_candidates = se.rebase_candidates

    def candidates(*args, **kwargs) -> pl.DataFrame:  # type: ignore[no-untyped-def]
        out = rebase_candidates(*args, **kwargs)
        found.append(set(out.select("machine_id", "sensor_id").rows()))
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(an, "_context", an._context.func)  # type: ignore[attr-defined]
        patch.setattr(an.se, "rebase_candidates", candidates)
        pruned = judge_hours(readings, first, 14, excluded)
    assert pruned.height == reference.height > 0
    assert pruned.equals(reference)
    rebased = set(
        pruned.filter(pl.col("details").str.contains("level_offset")).select("machine_id", "sensor_id").rows()
    )
    up, down, drift, held = ("m1", "s1"), ("m1", "s2"), ("m2", "s1"), ("m2", "s5")
    assert rebased == {up, down, drift, held}
    # a candidate once a step has put the least count (0.9 × 180 samples) beyond the critical shift:
    # the step up from ONSET + 2 h, the step down 3 h later, the drift once it has gone far enough
    assert found == [{held}] * 3 + [{held, up}] * 2 + [{held, up, down}] * 2 + [{held, up, down, drift}] * 7
