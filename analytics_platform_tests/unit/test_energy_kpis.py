"""Energy KPIs with hand-computed values: counter increments across a reset and a period
boundary, time-of-use pricing in the tenant's local time, and a day's energy, cost, carbon,
peak, average and load factor, with NULL and a reason where there is nothing to compute from."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
import pytest

from analytics_platform.transforms.energy_kpis import counter_increments, energy_kpis, price_increments

KEY = ("tenant_id", "factory_id", "machine_id")
DAY = datetime(2025, 8, 20, tzinfo=UTC)
NEXT = datetime(2025, 8, 21, tzinfo=UTC)


def t(hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 8, 20, hour, minute, tzinfo=UTC)


def counter(rows: list[tuple[datetime, float]], machine: str = "mc-01") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "time": [r[0] for r in rows],
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": machine,
            "value": [r[1] for r in rows],
        },
        schema_overrides={"time": pl.Datetime("us", "UTC")},
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


def kpis(out: pl.DataFrame, machine: str) -> dict[str, tuple]:
    return {
        r["kpi"]: (r["value"], r["unit"], r["null_reason"], json.loads(r["details"]) if r["details"] else None)
        for r in out.filter(pl.col("machine_id") == machine).iter_rows(named=True)
    }


def test_a_day_with_a_known_tariff_split() -> None:
    """mc-01: 10 kWh at 20:00 UTC (03:00 local, off-peak) + 20 kWh at 05:00 UTC (12:00, peak):
    cost 10 x 0.10 + 20 x 0.20 = 5.0; carbon 30 x 0.45 = 13.5 kg; power 10, 40, 30, 20 kW:
    peak 40 at 12:00, average 25, load factor 0.625. mc-02: no readings at all. mc-03: the meter
    reads, but the machine drew no power (peak 0)."""
    readings = counter([(t(0), 1000.0), (t(5), 1020.0), (t(20), 1030.0)])
    priced = price_increments(counter_increments(readings, prior(None), KEY), TARIFFS)
    power = pl.DataFrame(
        {
            "time": [t(6), t(12), t(18), t(23), t(1), t(2)],
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": ["mc-01"] * 4 + ["mc-03"] * 2,
            "value": [10.0, 40.0, 30.0, 20.0, 0.0, 0.0],
        },
        schema_overrides={"time": pl.Datetime("us", "UTC")},
    )
    machines = pl.DataFrame({"tenant_id": "t1", "factory_id": "f1", "machine_id": ["mc-01", "mc-02", "mc-03"]})
    factors = pl.DataFrame({"tenant_id": ["t1"], "kg_co2_per_kwh": [0.45]})
    out = energy_kpis(priced, power, factors, machines, start=DAY, end=NEXT)

    assert out.height == 18
    assert set(out.get_column("period_start")) == {DAY} and set(out.get_column("period_end")) == {NEXT}
    one = kpis(out, "mc-01")
    assert one["energy_kwh"] == (30.0, "kWh", None, {"counter_resets": 0, "increments": 2})
    assert one["energy_cost"][:3] == (pytest.approx(5.0), "currency", None)
    assert one["energy_cost"][3] == {"kwh_by_band": {"off_peak": 10.0, "peak": 20.0}}
    assert one["carbon_kg"][:3] == (pytest.approx(13.5), "kg CO2", None)
    assert one["peak_demand_kw"] == (40.0, "kW", None, {"at": "2025-08-20 12:00:00+00:00", "samples": 4})
    assert one["avg_demand_kw"][:3] == (25.0, "kW", None)
    assert one["load_factor"][:3] == (0.625, "ratio", None)

    none = kpis(out, "mc-02")
    assert {k: v[0] for k, v in none.items()} == dict.fromkeys(
        ("energy_kwh", "energy_cost", "carbon_kg", "peak_demand_kw", "avg_demand_kw", "load_factor")
    )
    assert none["energy_kwh"][2] == "no energy counter readings in the period"
    assert none["load_factor"][2] == "no power readings in the period"

    idle = kpis(out, "mc-03")
    assert idle["peak_demand_kw"][0] == 0.0
    assert idle["load_factor"][:3] == (None, "ratio", "peak demand is 0: the machine drew no power")


def test_an_increment_outside_every_band_gives_no_cost_and_says_why() -> None:
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
    readings = counter([(t(0), 0.0), (t(10), 5.0), (t(20), 7.0)])  # +5 at 10:00 (in band), +2 at 20:00 (not)
    priced = price_increments(counter_increments(readings, prior(None), KEY), gap)
    machines = pl.DataFrame({"tenant_id": ["t1"], "factory_id": ["f1"], "machine_id": ["mc-01"]})
    no_factor = pl.DataFrame(schema={"tenant_id": pl.String, "kg_co2_per_kwh": pl.Float64})
    out = kpis(energy_kpis(priced, counter([]), no_factor, machines, start=DAY, end=NEXT), "mc-01")
    assert out["energy_kwh"][0] == 7.0
    assert out["energy_cost"][:3] == (None, "currency", "1 increment(s) fall outside every tariff band of the tenant")
    assert out["carbon_kg"][:3] == (None, "kg CO2", "no emission factor for the tenant")
