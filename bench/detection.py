"""Detection quality of the anomaly detectors on labelled synthetic data, at 1 s .. 1 h sampling.
Pure in-process: no database, no broker, nothing is stored. (The real machine: detection_nab.py.)

What is generated (numpy, seeded, deterministic)
  Per sampling rate (1 s, 1 min, 5 min, 15 min, 1 h) `--series` machine temperatures (metric
  "temp", one sensor per machine), regular sampling without jitter, starting on a Monday:
    level 60 + 4·cos(daily, peak 15:00) − 3 on weekends (2 h ramps in and out)
    idle blocks: on ~45 % of weekdays one 2–5 h block where the machine is idle and the level
    falls by 15 with a 10 min thermal lag (it also warms back up with that lag once running)
    + Gaussian noise σ = 0.5 per reading (a 1 h sample is a point reading, not a mean).
  Warm-up then judged days: 14 + 14 at 1 min .. 1 h; at 1 s 8 + 6 (CPU/memory budget; see
  --warmup-days-1s / --judged-days-1s). Into the judged period only, non-overlapping (≥ 1 h
  apart, ≥ 2 h away from idle blocks and their warm-up), at random sample-aligned times, each kind
  `--per-kind` times per series (default: 1 per 14 judged days, rounded up):
    spike        1 sample, +8σ (σ = the noise σ)            window = that sample
    level_shift  +5σ for 2 h                                  window = 2 h
    drift        linear ramp to +6σ over 6 h, back over 1 h  window = 7 h
    stuck        value frozen at the previous reading, 2 h   window = 2 h
    noise_burst  noise ×5 for 1 h                            window = 1 h
    drop         abrupt fall to the idle level (−15) for 1 h while the machine reports 'running'
The list (kind, start, end) is kept per series; it is written with --json.

How the hourly asset (`results.anomalies.recompute_anomalies`) is mimicked
  * Every judged hour [h, h+1h) is judged on its own: the hour's readings plus `history` = the
    60 s aggregate rows with bucket_start ≥ h − training_hours (24 h, AnomalyOptions default) and
    bucket_end ≤ h, exactly the asset's context. The aggregates come from
    `transforms.window_aggregates.window_aggregates` over all readings, i.e. as if the aggregate
    asset had run on complete data before the anomaly hour.
  * Profiles: `seasonal.profiles_for_hour`, the asset's rule: learned (`fit_profiles`, the
    asset's SeasonalOptions) from the 14 days of running 60 s aggregates before the hour's UTC
    midnight, re-learned up to the hour itself while a series is younger than a day.
  * `detect_anomalies(readings, history, excluded, start=h, profiles=..., models=...)`: the
    seasonal statistics (deviation, shift, noise, stuck) and the forest as a second opinion.
  * Isolation Forests: the asset's rule exactly (`load_models`: hour h uses the forest trained up to
    training_end(h) = h's UTC midnight, on the 24 h before it); a series without such a model
    is fitted with `fit_isolation_forests(contamination=0.01, n_estimators=50)` (the settings'
    defaults; min_buckets stays at its default 120, as in the asset). Its verdicts on their own
    are scored too, as 'forest_alone', to measure what it would add if it could raise anomalies.
  * Run states: the idle blocks are passed as `excluded` intervals (the asset excludes
    idle/planned_stop/maintenance/fault, and the settling time after them), so idle readings are
    neither judged nor learned from. The baselines get the same knowledge (idle readings are
    neither judged nor used). With --no-run-states nothing is excluded anywhere.
  Where this differs from the asset: no stoppage detector (it needs count_total counters, not a
  temperature) and no energy-baseline deviations; run-state intervals are given exactly instead of
  being derived from device.health messages (`state_intervals`); models and profiles are kept in
  memory, not stored in PostgreSQL (no effect on results); the aggregates are always complete (no
  late data); series keys are String, not Categorical; sampling is perfectly regular.

Baselines (same run, same judged hours, same idle exclusion)
  3sigma          per hour: mean/std (ddof 1) of the trailing 24 h of readings, flag |z| > 3.
  seasonal_naive  expected = the reading at the same time one week earlier if there is one (and
                  it was not idle), else one day earlier; residual scale = 1.4826·MAD of the
                  residuals of the trailing 7 days (recomputed once per hour, ≥ 30 residuals);
                  flag |r| > 3.5 × scale.
  For both, every flag is "critical" (|z| ≥ 3); for the platform, critical = severity ≥ 3.

Scoring, per method (deviation, shift, noise, stuck, isolation_forest (second opinion), ensemble
= their union (the platform's rows), forest_alone, ensemble+forest, 3sigma, seasonal_naive) and rate
  * A platform row flags the samples in its window [window_start, window_end): one reading, or
    the minute of a faster series. Severity per sample = the highest of the rows covering it.
  * Flagged samples of a series form events: consecutive flags with gaps ≤ 2 samples.
  * recall: share of injected events overlapped by a detected event, the injected window extended
    by 2 samples after its end (tolerance); also per kind.
  * delay: first flagged sample in the (extended) window − onset, in samples; median over the
    detected non-drift events; drifts reported separately.
  * FP events / series-day: detected events overlapping no (extended) injected window, divided by
    series × judged days; "crit" = the same with only critical flags grouped into events.
  * normal flagged: share of judged, non-idle samples outside every (extended) window flagged.
  Events are counted after grouping, so the ensemble (a union) can show fewer FP events than one
  of its members: a union's flags bridge neighbouring events into one.
Goals of the redesign printed for comparison: ≤ 0.1 critical FP events per series-day, ≥ 90 %
recall at every rate, median delay ≤ 2 samples excluding drifts.

Usage: python bench/detection.py [--seed 1] [--rates 1s,1m,5m,15m,1h] [--series 6] [--json PATH]
       [--warmup-days 14] [--judged-days 14] [--warmup-days-1s 8] [--judged-days-1s 6] [--per-kind N]
       [--no-run-states] [--seasonal '{"quantile": 0.8}']
A full default run takes about 2.5 minutes on one core (1 s rate: ~7.3M readings, ~2.5 GB peak RSS).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.results.anomalies import HISTORY_SCHEMA, AnomalyOptions  # noqa: E402
from analytics_platform.transforms import anomalies as an  # noqa: E402
from analytics_platform.transforms import seasonal as se  # noqa: E402
from analytics_platform.transforms.window_aggregates import SERIES_KEY, TIME, window_aggregates  # noqa: E402

T0 = datetime(2025, 6, 2, tzinfo=UTC)  # a Monday
T0_S = int(T0.timestamp())
DAY_S = 86_400
HOUR_S = 3_600
RATES = {"1s": 1, "1m": 60, "5m": 300, "15m": 900, "1h": 3600}
KINDS = ("spike", "level_shift", "drift", "stuck", "noise_burst", "drop")
SHORT = {"spike": "spk", "level_shift": "shf", "drift": "drf", "stuck": "stk", "noise_burst": "nbs", "drop": "drp"}
PLATFORM = (*an.STATISTICAL, "isolation_forest")
METHODS = (*PLATFORM, "ensemble", "forest_alone", "ensemble+forest", "3sigma", "seasonal_naive")

BASE, DAILY_AMP, WEEKEND_DROP, IDLE_DROP, NOISE = 60.0, 4.0, 3.0, 15.0, 0.5
TAU_S = 600.0  # thermal lag of idle blocks
DURATION_S = {
    "level_shift": 2 * HOUR_S,
    "drift": 7 * HOUR_S,
    "stuck": 2 * HOUR_S,
    "noise_burst": HOUR_S,
    "drop": HOUR_S,
}
TOLERANCE = 2  # samples after an injected window that still count as on time
MERGE_GAP = 2  # flags with at most this many unflagged samples between them are one event
GOALS = {"critical_fp_per_series_day": 0.1, "recall": 0.90, "median_delay_samples": 2}
OPTIONS = AnomalyOptions()  # the asset's defaults: training_hours, refit_hours, contamination, trees
SEASONAL = OPTIONS.seasonal


@dataclass
class Event:
    kind: str
    start_s: int  # seconds after T0
    end_s: int  # exclusive
    i0: int  # first sample index
    i1: int  # one past the last sample index


@dataclass
class Series:
    machine_id: str
    cadence: int
    values: np.ndarray
    idle: list[tuple[int, int]]  # [start, end) seconds after T0
    idle_mask: np.ndarray  # samples the run state marks idle
    judged_from: int  # first judged sample index
    events: list[Event] = field(default_factory=list)


# ----- generation --------------------------------------------------------------------------------


def clean_level(t: np.ndarray, idle: list[tuple[int, int]]) -> np.ndarray:
    """The noise-free temperature at `t` seconds after T0 (a Monday 00:00 UTC)."""
    days = t / DAY_S
    daily = DAILY_AMP * np.cos(2 * np.pi * (days % 1.0 - 15 / 24))
    week = days % 7.0
    weekend = np.clip((week - 5.0) * 12.0, 0.0, 1.0) * np.clip((7.0 - week) * 12.0, 0.0, 1.0)
    cooled = np.zeros_like(t, dtype=np.float64)
    for a, b in idle:
        inside = (t >= a) & (t < b)
        after = t >= b
        cooled[inside] = 1.0 - np.exp(-(t[inside] - a) / TAU_S)
        reached = 1.0 - math.exp(-(b - a) / TAU_S)
        cooled[after] = np.maximum(cooled[after], reached * np.exp(-(t[after] - b) / TAU_S))
    return BASE + daily - WEEKEND_DROP * weekend - IDLE_DROP * cooled


def idle_blocks(rng: np.random.Generator, days: int) -> list[tuple[int, int]]:
    blocks = []
    for day in range(days):
        if day % 7 < 5 and rng.random() < 0.45:
            start = day * DAY_S + int(rng.uniform(6, 18) * 60) * 60
            blocks.append((start, start + int(rng.uniform(2, 5) * 60) * 60))
    return blocks


def place_events(
    rng: np.random.Generator, cadence: int, judged_s: int, total_s: int, idle: list[tuple[int, int]], per_kind: int
) -> list[Event]:
    """Non-overlapping events in [judged_s, total_s), away from idle blocks (and their warm-up):
    longest kinds first, each at a uniformly random free time; starts over when one finds no room."""
    busy = [(a - 2 * HOUR_S, b + 3 * HOUR_S) for a, b in idle]
    wanted = sorted((k for k in KINDS for _ in range(per_kind)), key=lambda k: -DURATION_S.get(k, cadence))
    for _ in range(200):
        placed: list[Event] = []
        for kind in wanted:
            length = DURATION_S.get(kind, cadence)
            for _ in range(2_000):
                start = int(rng.integers((judged_s + HOUR_S) // cadence, (total_s - length - 2 * HOUR_S) // cadence))
                start *= cadence
                end = start + length
                if any(start < b and end > a for a, b in busy):
                    continue
                if any(start < e.end_s + HOUR_S and end > e.start_s - HOUR_S for e in placed):
                    continue
                placed.append(Event(kind, start, end, start // cadence, -(-end // cadence)))
                break
            else:
                break
        if len(placed) == len(wanted):
            return sorted(placed, key=lambda e: e.start_s)
    raise RuntimeError("no room for the events; use fewer --per-kind or more judged days")


def make_series(
    rng: np.random.Generator, name: str, cadence: int, warmup_days: int, judged_days: int, per_kind: int
) -> Series:
    days = warmup_days + judged_days
    t = np.arange(0, days * DAY_S, cadence, dtype=np.int64)
    idle = idle_blocks(rng, days)
    noise = rng.normal(0.0, NOISE, t.size)
    values = clean_level(t.astype(np.float64), idle) + noise
    events = place_events(rng, cadence, warmup_days * DAY_S, days * DAY_S, idle, per_kind)
    for e in events:
        span = slice(e.i0, e.i1)
        if e.kind == "spike":
            values[e.i0] += 8 * NOISE
        elif e.kind == "level_shift":
            values[span] += 5 * NOISE
        elif e.kind == "drift":
            age = (t[span] - e.start_s).astype(np.float64)
            up = 6 * HOUR_S
            values[span] += 6 * NOISE * np.where(age < up, age / up, 1.0 - (age - up) / HOUR_S)
        elif e.kind == "stuck":
            values[span] = values[e.i0 - 1]
        elif e.kind == "noise_burst":
            values[span] += 4 * noise[span]
        elif e.kind == "drop":
            values[span] -= IDLE_DROP
    idle_mask = np.zeros(t.size, dtype=bool)
    for a, b in idle:
        idle_mask[-(-a // cadence) : -(-b // cadence)] = True
    return Series(name, cadence, values, idle, idle_mask, warmup_days * DAY_S // cadence, events)


# ----- the platform, as the hourly asset calls it -------------------------------------------------


def key_of(machine_id: str) -> tuple[str, str, str, str, str]:
    return ("t1", "f1", machine_id, "s-temp", "temp")


def readings_frame(series: list[Series]) -> pl.DataFrame:
    frames = []
    for s in series:
        micros = (T0_S + np.arange(s.values.size, dtype=np.int64) * s.cadence) * 1_000_000
        frames.append(
            pl.DataFrame({"time": pl.Series(micros).cast(TIME), "value": s.values}).with_columns(
                **{c: pl.lit(v) for c, v in zip(SERIES_KEY, key_of(s.machine_id), strict=True)}
            )
        )
    return pl.concat(frames).select("time", *SERIES_KEY, "value").sort("time")


def excluded_frame(series: list[Series], use_states: bool) -> pl.DataFrame | None:
    if not use_states:
        return None
    rows = [
        ("t1", "f1", s.machine_id, T0 + timedelta(seconds=a), T0 + timedelta(seconds=b))
        for s in series
        for a, b in s.idle
    ]
    schema = {
        "tenant_id": pl.String(),
        "factory_id": pl.String(),
        "machine_id": pl.String(),
        "start": TIME,
        "end": TIME,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def run_platform(series: list[Series], judged_hours: range, use_states: bool) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Every judged hour as `recompute_anomalies` does it; returns the anomaly rows (machine_id,
    method, severity, window in seconds after T0) and counters. Besides the platform's own rows
    (forest as a second opinion), the forest's verdicts on its own are kept as method
    'forest_alone', to measure what it would add if it could raise anomalies by itself."""
    readings = readings_frame(series)
    bucket_s = OPTIONS.bucket_s
    history_all = (
        window_aggregates(readings.lazy(), [bucket_s]).collect().select(HISTORY_SCHEMA.keys()).sort("bucket_start")
    )
    excluded = excluded_frame(series, use_states)
    fenced = an.settled(excluded, SEASONAL.settle)
    running_history = an.drop_excluded(history_all, fenced, "bucket_start", "bucket_end")
    r_time = readings["time"].dt.epoch("s").to_numpy()
    h_start = history_all["bucket_start"].dt.epoch("s").to_numpy()
    h_end = history_all["bucket_end"].dt.epoch("s").to_numpy()
    rh_start = running_history["bucket_start"].dt.epoch("s").to_numpy()
    cache: dict[tuple, an.FittedForest] = {}
    profiles: dict[datetime, dict[tuple, se.Profile]] = {}
    refit = timedelta(hours=OPTIONS.refit_hours)
    fits = profile_fits = 0

    def get(trained_to: datetime, keys: set[tuple]) -> dict[tuple, se.Profile]:
        nonlocal profile_fits
        known = profiles.setdefault(trained_to, {})
        if missing := keys - set(known):
            end_s = int(trained_to.timestamp())
            lo = int(np.searchsorted(rh_start, end_s - SEASONAL.history_days * DAY_S, "left"))
            hi = int(np.searchsorted(rh_start, end_s, "left"))
            part = running_history.slice(lo, hi - lo).filter(pl.col("machine_id").is_in([k[2] for k in missing]))
            fitted = se.fit_profiles(part, trained_to, SEASONAL, series=sorted(missing))
            profile_fits += len(fitted)
            known.update({p.key: p for p in fitted})
        return {k: known[k] for k in keys if k in known}

    found = []
    for hour in judged_hours:
        start_s = T0_S + hour * HOUR_S
        start = T0 + timedelta(hours=hour)
        train_s = start_s - OPTIONS.training_hours * HOUR_S
        lo = int(np.searchsorted(h_start, train_s, "left"))
        hi = int(np.searchsorted(h_start, start_s, "left"))
        history = history_all.slice(lo, hi - lo).filter(pl.Series(h_end[lo:hi] <= start_s))
        a = int(np.searchsorted(r_time, start_s, "left"))
        b = int(np.searchsorted(r_time, start_s + HOUR_S, "left"))
        hour_readings = readings.slice(a, b - a)
        wanted = set(hour_readings.select(SERIES_KEY).unique().rows())
        trained_to = se.training_end(start, refit)
        usable = {k: m for k, m in cache.items() if k in wanted and m.trained_to == trained_to}
        missing = wanted - set(usable)
        if missing:
            end_s = int(trained_to.timestamp())
            lo = int(np.searchsorted(h_start, end_s - OPTIONS.training_hours * HOUR_S, "left"))
            hi = int(np.searchsorted(h_start, end_s, "left"))
            training = history_all.slice(lo, hi - lo).filter(pl.Series(h_end[lo:hi] <= end_s))
            fitted = an.fit_isolation_forests(
                training.filter(pl.col("machine_id").is_in([k[2] for k in missing])),
                excluded,
                bucket_s=bucket_s,
                contamination=OPTIONS.contamination,
                n_estimators=OPTIONS.trees,
                trained_to=trained_to,
            )
            fits += len(fitted)
            for m in fitted:
                cache[m.key] = m
                usable[m.key] = m
        judged_with = se.profiles_for_hour(start, wanted, get, refit)
        rows = an.detect_anomalies(
            hour_readings,
            history,
            excluded,
            start=start,
            profiles=list(judged_with.values()),
            models=list(usable.values()),
            options=SEASONAL,
        )
        alone = an.isolation_forest_anomalies(list(usable.values()), hour_readings, excluded, history=history)
        rows = pl.concat([rows, alone.with_columns(method=pl.lit("forest_alone"))])
        if not rows.is_empty():
            found.append(
                rows.select(
                    "machine_id",
                    "method",
                    "severity",
                    t=pl.col("time").dt.epoch("s") - T0_S,
                    ws=pl.col("window_start").dt.epoch("s") - T0_S,
                    we=pl.col("window_end").dt.epoch("s") - T0_S,
                )
            )
    schema = {"machine_id": pl.String, "method": pl.String, "severity": pl.Int16, "t": pl.Int64}
    out = pl.concat(found) if found else pl.DataFrame(schema={**schema, "ws": pl.Int64, "we": pl.Int64})
    counters = {
        "forest_fits": fits,
        "profile_fits": profile_fits,
        "agg_rows": history_all.height,
        "readings": readings.height,
    }
    return out, counters


def platform_flags(rows: pl.DataFrame, s: Series) -> dict[str, np.ndarray]:
    """Per platform method, the severity of every sample of `s` (0 = not flagged): a row flags the
    samples in its window [window_start, window_end) (one reading, or a minute of fast ones)."""
    n, c = s.values.size, s.cadence
    out = {}
    mine = rows.filter(pl.col("machine_id") == s.machine_id)
    for method in (*PLATFORM, "forest_alone"):
        sev = np.zeros(n, dtype=np.int16)
        part = mine.filter(pl.col("method") == method)
        if part.height:
            level = part["severity"].to_numpy().astype(np.int16)
            first = -(-part["ws"].to_numpy() // c)
            last = np.maximum(-(-part["we"].to_numpy() // c), first + 1)
            counts = np.maximum(last - first, 0)
            idx = np.repeat(first, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
            keep = idx < n
            np.maximum.at(sev, idx[keep], np.repeat(level, counts)[keep])
        out[method] = sev
    out["ensemble"] = np.maximum.reduce([out[m] for m in PLATFORM])
    out["ensemble+forest"] = np.maximum(out["ensemble"], out["forest_alone"])
    return out


# ----- baselines ---------------------------------------------------------------------------------


def baseline_flags(s: Series, use_states: bool) -> dict[str, np.ndarray]:
    n, c = s.values.size, s.cadence
    x = s.values.copy()
    if use_states:
        x[s.idle_mask] = np.nan
    per_hour, per_day, per_week = HOUR_S // c, DAY_S // c, 7 * DAY_S // c
    sigma = np.zeros(n, dtype=np.int16)
    naive = np.zeros(n, dtype=np.int16)
    ref = np.full(n, np.nan)
    ref[per_week:] = x[:-per_week]
    day_ago = np.full(n, np.nan)
    day_ago[per_day:] = x[:-per_day]
    ref = np.where(np.isfinite(ref), ref, day_ago)
    resid = x - ref
    for h0 in range(s.judged_from, n, per_hour):
        h1 = min(h0 + per_hour, n)
        now = x[h0:h1]
        past = x[max(0, h0 - per_day) : h0]
        past = past[np.isfinite(past)]
        if past.size >= 2:
            std = past.std(ddof=1)
            if std > 0:
                z = np.abs(now - past.mean()) / std
                sigma[h0:h1][np.nan_to_num(z, nan=0.0) > 3] = 3
        window = resid[max(0, h0 - per_week) : h0]
        window = window[np.isfinite(window)]
        if window.size >= 30:
            scale = 1.4826 * np.median(np.abs(window - np.median(window)))
            if scale > 0:
                r = np.abs(resid[h0:h1]) / scale
                naive[h0:h1][np.nan_to_num(r, nan=0.0) > 3.5] = 3
    return {"3sigma": sigma, "seasonal_naive": naive}


# ----- scoring -----------------------------------------------------------------------------------


def events_of(flags: np.ndarray) -> np.ndarray:
    """(first, last) sample index of each run of flags, gaps of ≤ MERGE_GAP samples bridged."""
    idx = np.flatnonzero(flags)
    if idx.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    breaks = np.flatnonzero(np.diff(idx) > MERGE_GAP + 1)
    return np.column_stack([idx[np.r_[0, breaks + 1]], idx[np.r_[breaks, idx.size - 1]]])


def score(flags: list[np.ndarray], series: list[Series], judged_days: float, use_states: bool) -> dict[str, Any]:
    hits: dict[str, list[int]] = {k: [] for k in KINDS}
    delays: dict[str, list[int]] = {k: [] for k in KINDS}
    fp = crit_fp = normal = normal_flagged = 0
    for sev, s in zip(flags, series, strict=True):
        sev = sev.copy()
        sev[: s.judged_from] = 0
        windows = np.array([(e.i0, e.i1 - 1 + TOLERANCE) for e in s.events], dtype=np.int64).reshape(-1, 2)
        labelled = np.zeros(sev.size, dtype=bool)
        for a, b in windows:
            labelled[a : b + 1] = True
        for e, (a, b) in zip(s.events, windows, strict=True):
            inside = np.flatnonzero(sev[a : b + 1])
            hits[e.kind].append(int(inside.size > 0))
            if inside.size:
                delays[e.kind].append(int(inside[0]))

        def unlabelled(evs: np.ndarray, windows: np.ndarray = windows) -> int:
            if evs.size == 0:
                return 0
            if windows.size == 0:
                return len(evs)
            overlap = (evs[:, None, 0] <= windows[None, :, 1]) & (evs[:, None, 1] >= windows[None, :, 0])
            return int((~overlap.any(axis=1)).sum())

        fp += unlabelled(events_of(sev > 0))
        crit_fp += unlabelled(events_of(sev >= 3))
        judged = np.zeros(sev.size, dtype=bool)
        judged[s.judged_from :] = True
        ok = judged & ~labelled & (~s.idle_mask if use_states else True)
        normal += int(ok.sum())
        normal_flagged += int((ok & (sev > 0)).sum())
    series_days = len(series) * judged_days
    all_hits = [h for k in KINDS for h in hits[k]]
    no_drift = [d for k in KINDS if k != "drift" for d in delays[k]]
    return {
        "events": len(all_hits),
        "detected": sum(all_hits),
        "recall": sum(all_hits) / len(all_hits) if all_hits else None,
        "recall_by_kind": {k: (sum(v) / len(v) if v else None) for k, v in hits.items()},
        "events_by_kind": {k: len(v) for k, v in hits.items()},
        "median_delay_samples": float(np.median(no_drift)) if no_drift else None,
        "median_drift_delay_samples": float(np.median(delays["drift"])) if delays["drift"] else None,
        "fp_events_per_series_day": fp / series_days,
        "critical_fp_events_per_series_day": crit_fp / series_days,
        "normal_flagged_share": normal_flagged / normal if normal else None,
        "flagged_normal_samples": normal_flagged,
        "normal_samples": normal,
    }


# ----- one rate ----------------------------------------------------------------------------------


def run_rate(rate: str, args: argparse.Namespace) -> dict[str, Any]:
    cadence = RATES[rate]
    warmup, judged = (
        (args.warmup_days_1s, args.judged_days_1s) if rate == "1s" else (args.warmup_days, args.judged_days)
    )
    per_kind = args.per_kind or math.ceil(judged / 14)
    rng = np.random.default_rng([args.seed, cadence])
    clock = time.perf_counter()
    series = [make_series(rng, f"m{k + 1}", cadence, warmup, judged, per_kind) for k in range(args.series)]
    use_states = not args.no_run_states
    rows, counters = run_platform(series, range(warmup * 24, (warmup + judged) * 24), use_states)
    flags: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    for s in series:
        for method, sev in {**platform_flags(rows, s), **baseline_flags(s, use_states)}.items():
            flags[method].append(sev)
    figures = {m: score(flags[m], series, judged, use_states) for m in METHODS}
    by_method = dict(rows.group_by("method").len().iter_rows()) if rows.height else {}
    return {
        "rate": rate,
        "cadence_s": cadence,
        "warmup_days": warmup,
        "judged_days": judged,
        "series": len(series),
        "per_kind": per_kind,
        "seconds": round(time.perf_counter() - clock, 1),
        "platform_rows": {m: by_method.get(m, 0) for m in PLATFORM},
        **counters,
        "methods": figures,
        "injected": {
            s.machine_id: {
                "idle": [[a, b] for a, b in s.idle],
                "events": [asdict(e) for e in s.events],
            }
            for s in series
        },
    }


def pct(value: float | None) -> str:
    return "   -" if value is None else f"{100 * value:4.0f}"


def num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def print_rate(result: dict[str, Any]) -> None:
    m = result["methods"]
    events = m["ensemble"]["events_by_kind"]
    print(
        f"\n== {result['rate']} sampling: {result['series']} series x {result['judged_days']} judged days "
        f"(+{result['warmup_days']} warm-up), {sum(events.values())} events "
        f"({result['per_kind']} per kind per series), {result['readings']:,} readings, "
        f"{result['agg_rows']:,} 60 s aggregate rows, {result['profile_fits']} profile fits, "
        f"{result['forest_fits']} forest fits, {result['seconds']} s"
    )
    kinds = " ".join(f"{SHORT[k]:>4}" for k in KINDS)
    header = (
        f"{'method':<17}{'recall':>7}  {kinds}  {'delay':>6}{'drift':>7}{'FP/sd':>8}{'critFP/sd':>10}{'normal%':>9}"
    )
    print(header)
    print("-" * len(header))
    for method in METHODS:
        f = m[method]
        per_kind = " ".join(pct(f["recall_by_kind"][k]) for k in KINDS)
        print(
            f"{method:<17}{pct(f['recall']):>6}%  {per_kind}  {num(f['median_delay_samples']):>6}"
            f"{num(f['median_drift_delay_samples'], '{:.0f}'):>7}{f['fp_events_per_series_day']:>8.2f}"
            f"{f['critical_fp_events_per_series_day']:>10.2f}{share(f['normal_flagged_share']):>9}"
        )
    silent = [p for p in PLATFORM if result["platform_rows"][p] == 0]
    if silent:
        print(f"never fired at {result['rate']}: {', '.join(silent)}")
    e = m["ensemble"]
    met = [
        meth
        for meth in METHODS
        if (m[meth]["recall"] or 0) >= GOALS["recall"]
        and m[meth]["critical_fp_events_per_series_day"] <= GOALS["critical_fp_per_series_day"]
        and m[meth]["median_delay_samples"] is not None
        and m[meth]["median_delay_samples"] <= GOALS["median_delay_samples"]
    ]
    print(
        f"summary {result['rate']}: platform ensemble recall {pct(e['recall']).strip()} %, median delay "
        f"{num(e['median_delay_samples'])} samples (drift {num(e['median_drift_delay_samples'], '{:.0f}')}), "
        f"{e['fp_events_per_series_day']:.2f} FP events/series-day of which "
        f"{e['critical_fp_events_per_series_day']:.2f} critical, {share(e['normal_flagged_share'])} % of normal "
        f"samples flagged; methods meeting all goals: {', '.join(met) or 'none'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rates", default=",".join(RATES), help="subset of " + ",".join(RATES))
    parser.add_argument("--series", type=int, default=6, help="series (machines) per rate")
    parser.add_argument("--warmup-days", type=int, default=14, help="warm-up days at 1 min .. 1 h")
    parser.add_argument("--judged-days", type=int, default=14, help="judged days at 1 min .. 1 h")
    parser.add_argument("--warmup-days-1s", type=int, default=8)
    parser.add_argument("--judged-days-1s", type=int, default=6)
    parser.add_argument(
        "--per-kind", type=int, default=0, help="events per kind per series (0: 1 per 14 judged days, rounded up)"
    )
    parser.add_argument("--seasonal", default="", help='override SeasonalOptions, JSON, e.g. {"quantile": 0.8}')
    parser.add_argument("--no-run-states", action="store_true", help="exclude nothing (machine reports no states)")
    parser.add_argument("--json", type=Path, help="also write every figure (and the injected events) here")
    args = parser.parse_args()
    if args.seasonal:
        global SEASONAL
        SEASONAL = replace(SEASONAL, **json.loads(args.seasonal))
    rates = [r.strip() for r in args.rates.split(",") if r.strip()]
    if unknown := [r for r in rates if r not in RATES]:
        parser.error(f"unknown rate(s) {unknown}; choose from {list(RATES)}")
    if args.warmup_days < 1 or args.warmup_days_1s < 1:
        parser.error("at least one warm-up day is needed (the platform's history is 24 h)")

    clock = time.perf_counter()
    print(
        f"detectors as the hourly asset runs them: profiles from {SEASONAL.history_days} days of {SEASONAL.bucket_s} s "
        f"aggregates (quantile {SEASONAL.quantile}, margins {SEASONAL.warning_margin}/{SEASONAL.critical_margin}), "
        f"context {OPTIONS.training_hours} h, forests contamination {OPTIONS.contamination}, {OPTIONS.trees} trees, "
        f"re-learned every {OPTIONS.refit_hours} h; run states "
        f"{'ignored' if args.no_run_states else 'excluded (idle blocks)'}; "
        f"seed {args.seed}"
    )
    print(
        "columns: recall = injected events hit; per kind "
        + ", ".join(f"{SHORT[k]}={k}" for k in KINDS)
        + " (%); delay = median samples to first flag (no drifts); drift = drifts' median; FP/sd = unlabelled "
        "events per series-day; critFP/sd = same, critical flags only; normal% = normal samples flagged"
    )
    results = []
    for rate in rates:
        result = run_rate(rate, args)
        results.append(result)
        print_rate(result)
    wall = time.perf_counter() - clock
    print(
        f"\ngoals of the redesign: <= {GOALS['critical_fp_per_series_day']} critical FP events per series-day, "
        f">= {100 * GOALS['recall']:.0f} % recall at every rate, median delay <= {GOALS['median_delay_samples']} "
        f"samples excluding drifts"
    )
    print(f"wall time {wall:.1f} s")
    if args.json:
        record = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "seed": args.seed,
            "run_states": not args.no_run_states,
            "options": asdict(OPTIONS),
            "goals": GOALS,
            "wall_s": round(wall, 1),
            "rates": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2, default=str))
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
