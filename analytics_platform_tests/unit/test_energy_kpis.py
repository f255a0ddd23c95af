"""Energy KPIs with hand-computed values: counter increments and intervals across a reset, the
cutting of intervals at period and tariff-band edges in proportion to time, time-of-use pricing in
the tenant's local time, held power intervals, and a day's energy, cost, carbon, peak, average and
load factor, with NULL and a reason where there is nothing to compute from. (The boundary cases
through `machine_kpis` are in test_kpi_intervals.py.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
import pytest

from analytics_platform.transforms.energy_kpis import (
    band_edges,
    counter_increments,
    counter_intervals,
    demand_points,
    energy_kpis,
    power_intervals,
    price_increments,
    segment_points,
    split_intervals,
    spread,
)

KEY = ("tenant_id", "factory_id", "machine_id")
DAY = datetime(2025, 8, 20, tzinfo=UTC)
NEXT = datetime(2025, 8, 21, tzinfo=UTC)


def t(hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 8, 20, hour, minute, tzinfo=UTC)


def counter(rows: list[tuple[datetime, float]], machine: str = "mc-01", sensor: str = "s-1") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "time": [r[0] for r in rows],
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": machine,
            "sensor_id": sensor,
            "value": [r[1] for r in rows],
        },
        schema={
            "time": pl.Datetime("us", "UTC"),
            **dict.fromkeys(("tenant_id", "factory_id", "machine_id", "sensor_id"), pl.String),
            "value": pl.Float64,
        },
    )


def prior(value: float | None, machine: str = "mc-01") -> pl.DataFrame:
    values = [] if value is None else [value]
    return pl.DataFrame(
        {
            "tenant_id": ["t1"] * len(values),
            "factory_id": ["f1"] * len(values),
            "machine_id": [machine] * len(values),
            "value": values,
        },
        schema={"tenant_id": pl.String, "factory_id": pl.String, "machine_id": pl.String, "value": pl.Float64},
    )


TARIFFS = pl.DataFrame(
    {
        "tenant_id": ["t1", "t1"],
        "timezone": ["Asia/Bangkok", "Asia/Bangkok"],  # UTC+7
        "band": ["peak", "off_peak"],
        "start_minute": [9 * 60, 22 * 60],  # peak 09:00-22:00 local, off-peak 22:00-09:00 (wraps)
        "end_minute": [22 * 60, 9 * 60],
        "price": [0.20, 0.10],
    }
)


def test_increments_carry_the_previous_period_and_handle_a_reset() -> None:
    """prior 100 -> 101.5 (+1.5) -> 103 (+1.5) -> 2 (reset: +2) -> 4 (+2) = 7 kWh."""
    readings = counter([(t(0, 10), 101.5), (t(0, 20), 103.0), (t(0, 30), 2.0), (t(0, 40), 4.0)])
    out = counter_increments(readings, prior(100.0), KEY)
    assert out.select("time", "increment", "reset").rows() == [
        (t(0, 10), 1.5, False),
        (t(0, 20), 1.5, False),
        (t(0, 30), 2.0, True),
        (t(0, 40), 2.0, False),
    ]


def test_without_a_prior_reading_the_first_reading_is_only_a_baseline() -> None:
    out = counter_increments(counter([(t(1), 50.0), (t(2), 53.0)]), prior(None), KEY)
    assert out.select("time", "increment").rows() == [(t(2), 3.0)]


def test_empty_counter_gives_no_increments() -> None:
    assert counter_increments(counter([]), prior(None), KEY).height == 0


def test_prices_follow_the_tenants_local_time_and_wrap_midnight() -> None:
    """01:59 UTC = 08:59 Bangkok (off-peak), 02:00 = 09:00 (peak), 14:59 = 21:59 (peak),
    15:00 = 22:00 (off-peak); tenant t2 has no tariff."""
    increments = pl.DataFrame(
        {
            "time": [t(1, 59), t(2), t(14, 59), t(15), t(3)],
            "tenant_id": ["t1", "t1", "t1", "t1", "t2"],
            "increment": [1.0, 1.0, 1.0, 1.0, 1.0],
        },
        schema_overrides={"time": pl.Datetime("us", "UTC")},
    )
    out = price_increments(increments, TARIFFS)
    assert out.select("band", "price").rows() == [
        ("off_peak", 0.10),
        ("peak", 0.20),
        ("peak", 0.20),
        ("off_peak", 0.10),
        (None, None),
    ]


SERIES = (*KEY, "sensor_id")


def test_counter_intervals_run_from_reading_to_reading_per_series() -> None:
    """s-1: 100 (00:00) -> 101.5 (00:10) -> 2 (00:20, a reset: +2) -> 4 (00:30); s-2 on the same
    machine: 7 (00:05) -> 9 (00:25); an interval longer than max_interval_s (s-1 00:30 -> 02:00, 5400 s
    > 3600) is not counted."""
    readings = pl.concat(
        [
            counter([(t(0), 100.0), (t(0, 10), 101.5), (t(0, 20), 2.0), (t(0, 30), 4.0), (t(2), 9.0)]),
            counter([(t(0, 5), 7.0), (t(0, 25), 9.0)], sensor="s-2"),
        ]
    )
    out = counter_intervals(readings, SERIES, max_interval_s=3600).sort("sensor_id", "t1")
    assert out.select("sensor_id", "t0", "t1", "increment", "reset").rows() == [
        ("s-1", t(0), t(0, 10), 1.5, False),
        ("s-1", t(0, 10), t(0, 20), 2.0, True),
        ("s-1", t(0, 20), t(0, 30), 2.0, False),
        ("s-2", t(0, 5), t(0, 25), 2.0, False),
    ]


def test_a_tiny_float_decrease_is_no_change_not_a_reset() -> None:
    """A meter's float register jitters: 1000.0000001 -> 1000.0 is no change (a decrease within
    1e-9 of the value), not a reset that would book the whole 1000 kWh again; 1000 -> 1001 is +1.
    A real reset (1001 -> 999.99, a drop far beyond the tolerance) is still one: +999.99."""
    rows = [(t(0, 10), 1000.0000001), (t(0, 20), 1000.0), (t(0, 30), 1001.0), (t(0, 40), 999.99)]
    intervals = counter_intervals(counter([(t(0), 1000.0), *rows]), SERIES, max_interval_s=3600)
    expected = [(1e-7, False), (0.0, False), (1.0, False), (999.99, True)]
    got = [(pytest.approx(i, abs=1e-12), r) for i, r in intervals.sort("t1").select("increment", "reset").rows()]
    assert got == expected, "a tiny float decrease of a counter was booked as a reset (its whole value again)"
    increments = counter_increments(counter(rows), prior(1000.0), KEY).select("increment", "reset").rows()
    assert [(pytest.approx(i, abs=1e-12), r) for i, r in increments] == expected


def test_intervals_are_cut_at_edges_in_proportion_to_time() -> None:
    """(00:50, 01:10] +6 and edges 00:00, 01:00, 02:00: 600 s of 1200 in each hour -> 3 + 3;
    (01:00, 01:45] +9 lies in one segment -> 9 (exactly, the whole interval); (01:30, 02:30] +4 has its
    last 30 min beyond the last edge (dropped) -> 4 x 1800 / 3600 = 2; a zero-length interval at
    01:00 (+1) belongs to the segment ending there."""
    intervals = pl.DataFrame(
        {
            "t0": [t(0, 50), t(1), t(1, 30), t(1)],
            "t1": [t(1, 10), t(1, 45), t(2, 30), t(1)],
            "increment": [6.0, 9.0, 4.0, 1.0],
        },
        schema={"t0": pl.Datetime("us", "UTC"), "t1": pl.Datetime("us", "UTC"), "increment": pl.Float64},
    )
    parts = split_intervals(intervals, [t(0), t(1), t(2)]).with_columns(amount=spread("increment"))
    assert parts.sort("t0", "seg_start").select("t0", "seg_start", "seg_end", "part_us", "amount").rows() == [
        (t(0, 50), t(0), t(1), 600_000_000, 3.0),
        (t(0, 50), t(1), t(2), 600_000_000, 3.0),
        (t(1), t(0), t(1), 0, 1.0),
        (t(1), t(1), t(2), 2_700_000_000, 9.0),
        (t(1, 30), t(1), t(2), 1_800_000_000, 2.0),
    ]
    points = pl.DataFrame({"time": [t(0), t(0, 30), t(1), t(2, 30)]}, schema={"time": pl.Datetime("us", "UTC")})
    # a stamp on an edge belongs to the segment ending there; 00:00 and 02:30 are outside the edges
    assert segment_points(points, "time", [t(0), t(1), t(2)]).rows() == [(t(0, 30), t(0), t(1)), (t(1), t(0), t(1))]


def test_band_edges_are_the_local_band_boundaries_in_utc() -> None:
    """Bangkok (UTC+7) peak 09:00-22:00: edges at 02:00 and 15:00 UTC."""
    edges = band_edges(TARIFFS.cast({"start_minute": pl.Int32, "end_minute": pl.Int32}), DAY, NEXT)
    assert edges == {"t1": [t(2), t(15)]}


def test_power_samples_hold_back_to_the_previous_one_unless_too_far() -> None:
    """Samples 00:00, 00:05, 00:10, 00:40, 00:45: intervals 300, 300, 1800, 300 s, median 300 ->
    held up to max(gap 300, 2 x 300) = 600 s: the 30 min silence before 00:40 is not held; the first
    sample has no interval."""
    samples = counter([(t(0), 1.0), (t(0, 5), 2.0), (t(0, 10), 3.0), (t(0, 40), 4.0), (t(0, 45), 5.0)])
    out = power_intervals(samples, SERIES, gap_s=300)
    assert out.select("t0", "t1", "held").rows() == [
        (None, t(0), False),
        (t(0), t(0, 5), True),
        (t(0, 5), t(0, 10), True),
        (t(0, 10), t(0, 40), False),
        (t(0, 40), t(0, 45), True),
    ]
    # the demand in force: the sample stamped at each point, else the held one closing over it;
    # 00:20 lies in the silence (nothing held) and 00:50 after the last sample: no point there
    points = demand_points(out, SERIES, [t(0, 2), t(0, 20), t(0, 50)])
    assert points.sort("time").select("time", "kw", "samples").rows() == [
        (t(0), 1.0, 1),
        (t(0, 2), 2.0, 0),
        (t(0, 5), 2.0, 1),
        (t(0, 10), 3.0, 1),
        (t(0, 40), 4.0, 1),
        (t(0, 45), 5.0, 1),
    ]


def energy_parts(readings: pl.DataFrame, tariffs: pl.DataFrame) -> pl.DataFrame:
    """The day's energy parts per segment between the day's ends and the tenant's band edges,
    priced (what machine_kpis.book does for every period at once)."""
    tariffs = tariffs.cast({"start_minute": pl.Int32, "end_minute": pl.Int32})
    edges = [DAY, NEXT, *band_edges(tariffs, DAY, NEXT).get("t1", [])]
    closing = pl.col("t1") <= pl.col("seg_end")
    parts = (
        split_intervals(counter_intervals(readings, SERIES, 86_400), edges)
        .group_by(*KEY, "seg_start")
        .agg(
            kwh=spread("increment").sum(),
            increments=closing.sum().cast(pl.Int64),
            resets=(closing & pl.col("reset")).sum().cast(pl.Int64),
        )
    )
    return price_increments(parts.with_columns(time="seg_start"), tariffs)


def demand(power: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The day's held power parts (per series) and demand points in (DAY, NEXT]."""
    intervals = power_intervals(power, SERIES, gap_s=300)
    held = (
        split_intervals(intervals.filter("held"), [DAY, NEXT])
        .group_by(*SERIES)
        .agg(kws=(pl.col("value") * pl.col("part_us") / 1e6).sum(), held_s=(pl.col("part_us") / 1e6).sum())
    )
    points = demand_points(intervals, SERIES, [NEXT]).filter((pl.col("time") > DAY) & (pl.col("time") <= NEXT))
    return held, points


def kpis(out: pl.DataFrame, machine: str) -> dict[str, tuple]:
    return {
        r["kpi"]: (r["value"], r["unit"], r["null_reason"], json.loads(r["details"]) if r["details"] else None)
        for r in out.filter(pl.col("machine_id") == machine).iter_rows(named=True)
    }


def test_a_day_with_a_known_tariff_split() -> None:
    """mc-01 (Bangkok, peak 09:00-22:00 local = 02:00-15:00 UTC), meter readings UTC:
      00:00 1000 -> 02:00 1010: +10 over local 07:00-09:00, off-peak
      02:00 -> 05:00 1030: +20 over 09:00-12:00, peak
      05:00 -> 14:00 1030: +0
      14:00 -> 16:00 1034: +4 over 21:00-23:00 local: 2 peak (to 22:00) + 2 off-peak
    energy 34 kWh: off-peak 12, peak 22; cost 12 x 0.10 + 22 x 0.20 = 5.6; carbon 34 x 0.45 = 15.3.
    Power 10 (06:00), 40 (12:00), 30 (18:00), 20 (23:00) kW: every 5-6 h (median 6 h, all held), each
    sample holds back to the previous one: 40 x 6 h + 30 x 6 h + 20 x 5 h = 520 kWh over 17 h ->
    average 520 / 17 kW (the 06:00 sample has no known interval); peak 40 at 12:00; load factor
    (520 / 17) / 40 = 13 / 17. mc-02: no readings at all. mc-03: the machine drew no power (peak 0)."""
    readings = counter([(t(0), 1000.0), (t(2), 1010.0), (t(5), 1030.0), (t(14), 1030.0), (t(16), 1034.0)])
    power = pl.concat(
        [
            counter([(t(6), 10.0), (t(12), 40.0), (t(18), 30.0), (t(23), 20.0)]),
            counter([(t(1), 0.0), (t(2), 0.0)], machine="mc-03"),
        ]
    )
    held, points = demand(power)
    machines = pl.DataFrame({"tenant_id": "t1", "factory_id": "f1", "machine_id": ["mc-01", "mc-02", "mc-03"]})
    factors = pl.DataFrame({"tenant_id": ["t1"], "kg_co2_per_kwh": [0.45]})
    out = energy_kpis(energy_parts(readings, TARIFFS), held, points, factors, machines, start=DAY, end=NEXT)

    assert out.height == 18
    assert set(out.get_column("period_start")) == {DAY} and set(out.get_column("period_end")) == {NEXT}
    one = kpis(out, "mc-01")
    assert one["energy_kwh"] == (34.0, "kWh", None, {"counter_resets": 0, "increments": 4})
    assert one["energy_cost"][:3] == (pytest.approx(5.6), "currency", None)
    assert one["energy_cost"][3] == {"kwh_by_band": {"off_peak": 12.0, "peak": 22.0}}
    assert one["carbon_kg"][:3] == (pytest.approx(15.3), "kg CO2", None)
    assert one["peak_demand_kw"] == (40.0, "kW", None, {"at": "2025-08-20 12:00:00+00:00", "samples": 4})
    assert one["avg_demand_kw"] == (520 / 17, "kW", None, {"held_s": 61200.0, "samples": 4})
    assert one["load_factor"][:3] == (520 / 17 / 40, "ratio", None)

    none = kpis(out, "mc-02")
    assert {k: v[0] for k, v in none.items()} == dict.fromkeys(
        ("energy_kwh", "energy_cost", "carbon_kg", "peak_demand_kw", "avg_demand_kw", "load_factor")
    )
    assert none["energy_kwh"][2] == "no energy counter readings in the period"
    assert none["load_factor"][2] == "no power readings in the period"

    idle = kpis(out, "mc-03")
    assert idle["peak_demand_kw"][0] == 0.0
    assert idle["load_factor"][:3] == (None, "ratio", "peak demand is 0: the machine drew no power")


def test_energy_outside_every_band_gives_no_cost_and_says_why() -> None:
    """Band 'day' 08:00-18:00 UTC only: 00:00 -> 10:00 +5 kWh (2 h of 10 in the band: 1 kWh priced,
    4 not), 10:00 -> 20:00 +2 (8 h of 10: 1.6 priced, 0.4 not): 4.4 kWh have no price."""
    gap = pl.DataFrame(
        {
            "tenant_id": ["t1"],
            "timezone": ["UTC"],
            "band": ["day"],
            "start_minute": [480],
            "end_minute": [1080],
            "price": [0.3],
        }
    )
    readings = counter([(t(0), 0.0), (t(10), 5.0), (t(20), 7.0)])
    machines = pl.DataFrame({"tenant_id": ["t1"], "factory_id": ["f1"], "machine_id": ["mc-01"]})
    no_factor = pl.DataFrame(schema={"tenant_id": pl.String, "kg_co2_per_kwh": pl.Float64})
    held, points = demand(counter([]))
    out = kpis(
        energy_kpis(energy_parts(readings, gap), held, points, no_factor, machines, start=DAY, end=NEXT), "mc-01"
    )
    assert out["energy_kwh"][0] == 7.0
    assert out["energy_cost"][:3] == (
        None,
        "currency",
        "4.4 kWh of the period fall outside every tariff band of the tenant",
    )
    assert out["carbon_kg"][:3] == (None, "kg CO2", "no emission factor for the tenant")
