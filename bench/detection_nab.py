"""The anomaly detectors on a real, labelled machine: NAB's machine_temperature_system_failure.

The series (bench/data/nab, MIT licence, Numenta Anomaly Benchmark commit ea702d7): an internal
component temperature of a large industrial machine, 5-minute sampling, 2013-12-02 .. 2014-02-19
(22,695 readings, 79 days), with four labelled anomaly windows: a planned shutdown, two failures
in between, and the catastrophic system failure of 2014-02-08. The machine's ordinary behaviour
includes drops of 20–40 °F lasting hours on many days: exactly the "daily swing" that made the
old detectors page all day (issue 20: 31 % of normal samples flagged, 14.7 % critical, about 4
critical events per day outside the failures, 9,234 anomaly rows).

How it is judged: every hour from the first full one to the end, exactly as the hourly asset
would (`transforms.seasonal.backtest`: 60 s aggregates, each hour's profile learned from up to 14
days before its UTC midnight, re-learned hourly while the series is younger than a day). The
machine reports no run state, so nothing is excluded. Timestamps are naive in the file and read
as UTC; the 24 duplicated timestamps (one hour repeated on 2014-01-07) keep their first reading.

Figures: share of samples outside the labelled windows flagged (any level, critical); events
(flagged samples with at most two unflagged samples between them, the SQL event rule) outside
the windows per normal day, for warning-or-worse and for critical; anomaly rows (one per flagged
sample and method family, what the table would hold); per window: the first warning and first
critical event overlapping it, and how long before NAB's labelled anomaly point it came.

Usage: python bench/detection_nab.py [--seasonal '{"quantile": 0.8}'] [--json PATH] [--nab-dir NAB]

With --nab-dir (a checkout of github.com/numenta/NAB, not kept here: 53 series, 16 MB) every series
but the tweet counts is judged the same way, one line each: does a detector tuned on one machine
stay quiet on others (CPU, disk, network, latency, traffic, ambient temperature, NAB's artificial
series with and without anomalies)?
Runs in ~20 s on one core.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.transforms import anomalies as an  # noqa: E402
from analytics_platform.transforms import seasonal as se  # noqa: E402
from analytics_platform.transforms.window_aggregates import SERIES_KEY, TIME, window_aggregates  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from detection import events_of  # noqa: E402  (gaps of ≤ 2 unflagged samples: the SQL rule, 3 samples apart)

DATA = ROOT / "bench" / "data" / "nab"
CSV = DATA / "machine_temperature_system_failure.csv.gz"
LABELS = DATA / "machine_temperature_system_failure.labels.json"
KEY = ("nab", "realKnownCause", "machine_temperature", "s-temp", "temp")
BEFORE = {  # issue 20, measured on the detectors before the redesign (z-score, sudden change, forest)
    "normal_flagged_share": 0.31,
    "normal_critical_share": 0.147,
    "window_flagged_share": 0.38,
    "critical_events_per_normal_day": 4.0,
    "anomaly_rows": 9234,
}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def load() -> tuple[pl.DataFrame, list[tuple[datetime, datetime]], list[datetime]]:
    """The readings (platform READING columns) and NAB's windows and labelled points."""
    with gzip.open(CSV, "rb") as handle:
        readings = readings_of(handle.read())
    labels = json.loads(LABELS.read_text())
    windows = [(utc(a), utc(b)) for a, b in labels["windows"]]
    return readings, windows, [utc(p) for p in labels["labelled_points"]]


def readings_of(csv: bytes) -> pl.DataFrame:
    """A NAB CSV (timestamp,value; naive times read as UTC, a repeated timestamp keeps its first
    reading) as the platform's READING columns of one series."""
    frame = pl.read_csv(io.BytesIO(csv), try_parse_dates=True)
    return (
        frame.with_columns(time=pl.col("timestamp").dt.replace_time_zone("UTC").cast(TIME))
        .unique("time", keep="first", maintain_order=True)
        .sort("time")
        .select(
            "time",
            *[pl.lit(v).alias(c) for c, v in zip(SERIES_KEY, KEY, strict=True)],
            pl.col("value").cast(pl.Float64),
        )
    )


def _share(flags: np.ndarray) -> float | None:
    """The share of flags set; None for no samples (a series without labelled windows)."""
    return float(flags.mean()) if flags.size else None


def evaluate(
    options: se.SeasonalOptions,
    source: tuple[pl.DataFrame, list[tuple[datetime, datetime]], list[datetime]] | None = None,
) -> dict[str, Any]:
    """The figures of one labelled series: `source` = (readings, windows, labelled points), by default
    the machine temperature kept in bench/data/nab."""
    readings, windows, points = source if source is not None else load()
    aggregates = window_aggregates(readings.lazy(), [options.bucket_s]).collect()
    first_hour = readings["time"].min().replace(minute=0, second=0) + timedelta(hours=1)
    end = readings["time"].max() + timedelta(minutes=5)
    clock = time.perf_counter()
    judged = se.backtest(aggregates, first_hour, end, options)
    seconds = time.perf_counter() - clock
    families = {m: pl.max_horizontal(pl.col(f"l_{t}") for t in tests) for m, tests in an.FAMILIES.items()}
    judged = judged.with_columns(**{f"f_{m}": e for m, e in families.items()}).with_columns(
        level=pl.max_horizontal(pl.col(f"f_{m}") for m in families)
    )
    times = judged["bucket_start"].to_list()
    level = judged["level"].to_numpy()
    inside = np.array([any(a <= t <= b for a, b in windows) for t in times])
    normal_days = (times[-1] - times[0]).total_seconds() / 86_400 - sum(
        (b - a).total_seconds() / 86_400 for a, b in windows
    )
    result: dict[str, Any] = {
        "samples_judged": len(times),
        "first_judged": times[0].isoformat(),
        "seconds": round(seconds, 1),
        "normal_flagged_share": _share(level[~inside] >= 2),
        "normal_critical_share": _share(level[~inside] >= 3),
        "window_flagged_share": _share(level[inside] >= 2),
        "window_critical_share": _share(level[inside] >= 3),
        "anomaly_rows": int(sum((judged[f"f_{m}"] >= 2).sum() for m in families)),
        "rows_by_method": {m: int((judged[f"f_{m}"] >= 2).sum()) for m in families},
        "normal_days": round(normal_days, 2),
        "windows": [],
    }
    for name, least in (("warning", 2), ("critical", 3)):
        evs = events_of(level >= least)
        hit = [any(times[i] <= b and times[j] >= a for a, b in windows) for i, j in evs]
        outside = [
            (times[i], times[j], int(level[i : j + 1].max())) for (i, j), h in zip(evs, hit, strict=True) if not h
        ]
        result[f"{name}_events"] = len(evs)
        result[f"{name}_events_outside"] = len(outside)
        result[f"{name}_events_per_normal_day"] = len(outside) / normal_days
        if name == "critical":
            result["critical_outside"] = [(a.isoformat(), b.isoformat(), lvl) for a, b, lvl in outside]
    for (a, b), point in zip(windows, points, strict=True):
        entry: dict[str, Any] = {"window": [a.isoformat(), b.isoformat()], "labelled": point.isoformat()}
        for name, least in (("warning", 2), ("critical", 3)):
            first = next((t for t, lv in zip(times, level, strict=True) if a <= t <= b and lv >= least), None)
            entry[name] = first.isoformat() if first else None
            entry[f"{name}_lead_h"] = round((point - first).total_seconds() / 3600, 1) if first else None
        result["windows"].append(entry)
    return result


def nab_series(nab_dir: Path) -> list[tuple[str, tuple[pl.DataFrame, list, list]]]:
    """Every real (and artificial) series of a NAB checkout with its windows, each window's labelled
    point the label inside it (its middle when NAB lists none there). The Twitter volumes are left
    out: counts of tweets, nothing a machine reports."""
    windows = json.loads((nab_dir / "labels" / "combined_windows.json").read_text())
    labels = json.loads((nab_dir / "labels" / "combined_labels.json").read_text())
    found = []
    for csv in sorted((nab_dir / "data").glob("*/*.csv")):
        name = f"{csv.parent.name}/{csv.name}"
        if csv.parent.name == "realTweets" or name not in windows:
            continue
        spans = [(utc(a[:19]), utc(b[:19])) for a, b in windows[name]]
        marks = [utc(p[:19]) for p in labels.get(name, [])]
        points = [next((p for p in marks if a <= p <= b), a + (b - a) / 2) for a, b in spans]
        found.append((name, (readings_of(csv.read_bytes()), spans, points)))
    return found


def sweep(nab_dir: Path, options: se.SeasonalOptions) -> list[dict[str, Any]]:
    """The figures of every NAB series: does a detector tuned on one machine stay quiet on others?"""
    rows = []
    print(
        f"{'series':58}{'samples':>8}{'normal d':>9}{'warn/d':>8}{'crit/d':>8}{'crit %':>8}"
        f"{'windows warned':>16}{'critical':>10}"
    )
    for name, source in nab_series(nab_dir):
        r = evaluate(options, source)
        n = len(r["windows"])
        warned = f"{sum(1 for w in r['windows'] if w['warning'])} of {n}"
        critical = f"{sum(1 for w in r['windows'] if w['critical'])} of {n}"
        crit_share = r["normal_critical_share"]
        print(
            f"{name:58}{r['samples_judged']:>8,}{r['normal_days']:>9.1f}{r['warning_events_per_normal_day']:>8.2f}"
            f"{r['critical_events_per_normal_day']:>8.2f}{100 * (crit_share or 0):>7.2f}%"
            f"{warned:>16}{critical:>10}",
            flush=True,
        )
        rows.append({"series": name, **r})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seasonal", default="", help='override SeasonalOptions, JSON, e.g. {"quantile": 0.8}')
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--nab-dir",
        type=Path,
        help="a checkout of github.com/numenta/NAB: judge every one of its series (not kept here), one line each",
    )
    args = parser.parse_args()
    options = se.SeasonalOptions()
    if args.seasonal:
        options = replace(options, **json.loads(args.seasonal))
    if args.nab_dir:
        rows = sweep(args.nab_dir, options)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"options": asdict(options), "series": rows}, indent=2, default=str))
        return 0
    r = evaluate(options)
    print(
        f"NAB machine_temperature_system_failure: {r['samples_judged']:,} samples judged from {r['first_judged']}, "
        f"{r['normal_days']} normal days, {r['seconds']} s"
    )
    print(f"{'':32}{'before (issue 20)':>20}{'now':>12}")
    for label, key in (
        ("normal samples flagged", "normal_flagged_share"),
        ("normal samples critical", "normal_critical_share"),
        ("samples flagged in the windows", "window_flagged_share"),
    ):
        print(f"{label:32}{100 * BEFORE[key]:>19.1f}%{100 * r[key]:>11.2f}%")
    print(f"{'samples critical in the windows':32}{'-':>20}{100 * r['window_critical_share']:>11.2f}%")
    print(
        f"{'critical events / normal day':32}{BEFORE['critical_events_per_normal_day']:>20.1f}"
        f"{r['critical_events_per_normal_day']:>12.3f}"
    )
    print(f"{'anomaly rows':32}{BEFORE['anomaly_rows']:>20,}{r['anomaly_rows']:>12,}")
    print(
        f"events outside the windows: {r['warning_events_outside']} warning-or-worse "
        f"({r['warning_events_per_normal_day']:.3f}/normal day), {r['critical_events_outside']} critical; "
        f"rows by method {r['rows_by_method']}"
    )
    for w in r["windows"]:
        print(
            f"window {w['window'][0][:16]} .. {w['window'][1][:16]} (labelled {w['labelled'][:16]}): "
            f"first warning {(w['warning'] or '-')[:16]} (lead {w['warning_lead_h']} h), "
            f"first critical {(w['critical'] or '-')[:16]} (lead {w['critical_lead_h']} h)"
        )
    for a, b, lvl in r["critical_outside"]:
        print(f"  critical outside the windows: {a[:16]} .. {b[:16]} severity {lvl}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"options": asdict(options), **r}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
