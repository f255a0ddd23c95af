"""Emission factors and tariffs that change over time, with hand-computed values: a period is priced
and its carbon counted with the version in force over each part of it, a period wholly inside one
version gives exactly the figures that version alone gives, and energy before a tenant's first
version has no cost or carbon (NULL, with the reason). The plant file's dated forms: test_plant_file.py.

The meter (every case): an energy counter reading every 20 minutes, +2 kWh each, so 6 kWh an hour,
1 kWh per 10 minutes, 144 kWh a UTC day; a reading closes the 20 minutes before it.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analytics_platform.transforms.energy_kpis import FACTOR_SCHEMA, TARIFF_VERSION_SCHEMA, band_edges
from analytics_platform.transforms.machine_kpis import (
    MACHINE_META_SCHEMA,
    READING_SCHEMA,
    SEEN_SCHEMA,
    SHIFT_SCHEMA,
    STATE_SCHEMA,
    TENANT_SCHEMA,
    KpiInputs,
    KpiOptions,
    Plant,
    fixed_periods,
    machine_kpis,
)

HOUR = timedelta(hours=1)
ENERGY_KPIS = ("energy_kwh", "energy_cost", "carbon_kg")


def frame(rows: list[tuple], schema: dict) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row")


def plant(zone: str, factors: list[tuple], tariffs: list[tuple]) -> Plant:
    """Tenant t1 in `zone`: factors (valid_from, kg/kWh), tariff bands (valid_from, band, start, end, price)."""
    return Plant(
        tenants=frame([("t1", zone, "USD", None)], TENANT_SCHEMA),
        tariffs=frame([("t1", zone, b, s, e, p, v) for v, b, s, e, p in tariffs], TARIFF_VERSION_SCHEMA),
        shifts=frame([], SHIFT_SCHEMA),
        machines=frame([("*", "*", "*", 2.0, 75.0)], MACHINE_META_SCHEMA),
        emission_factors=frame([("t1", v, f) for v, f in factors], FACTOR_SCHEMA),
    )


def meter(day: datetime) -> KpiInputs:
    """The meter over the UTC day `day`, with its reading before the day and its first after."""
    stamps = [day + timedelta(minutes=20 * n) for n in range(-1, 74)]
    rows = [(ts, "t1", "f1", "mc-01", "energy", 2.0 * n) for n, ts in enumerate(stamps)]
    inside = [r for r in rows if day <= r[0] < day + timedelta(days=1)]
    return KpiInputs(
        start=day,
        end=day + timedelta(days=1),
        readings=frame(inside, READING_SCHEMA),
        prior=frame([rows[0]], READING_SCHEMA),
        states=frame([], STATE_SCHEMA),
        prior_states=frame([], STATE_SCHEMA),
        next_seen=frame([("t1", "f1", "mc-01", day + timedelta(days=1))], SEEN_SCHEMA),
        next_readings=frame([rows[-2]], READING_SCHEMA),
    )


def run(inputs: KpiInputs, of: Plant) -> pl.DataFrame:
    periods = pl.concat(
        [
            fixed_periods("hour", inputs.start, inputs.end, HOUR),
            fixed_periods("day", inputs.start, inputs.end, timedelta(days=1)),
        ]
    )
    return machine_kpis(inputs, periods, of, KpiOptions(drivers=())).filter(pl.col("kpi").is_in(ENERGY_KPIS))


def kpi(out: pl.DataFrame, name: str, period: str, start: datetime) -> dict:
    (row,) = out.filter(
        (pl.col("kpi") == name) & (pl.col("period") == period) & (pl.col("period_start") == start)
    ).iter_rows(named=True)
    return {**row, "details": json.loads(row["details"]) if row["details"] else None}


# ----- an emission factor changing mid-day ------------------------------------------------------

DAY = datetime(2025, 8, 20, tzinfo=UTC)
# 12:00 in Asia/Kolkata (+05:30) is 06:30 UTC: the change falls inside the UTC hour 06:00-07:00, and
# inside the meter's interval (06:20, 06:40], whose 2 kWh are 1 before and 1 after it
CHANGE = datetime(2025, 8, 20, 6, 30, tzinfo=UTC)
FLAT = [(None, "flat", 0, 1440, 0.10)]


def test_carbon_with_the_factor_changing_mid_hour_is_each_parts_kwh_times_its_factor() -> None:
    out = run(meter(DAY), plant("Asia/Kolkata", [(None, 0.45), (CHANGE, 0.40)], FLAT))
    straddling = kpi(out, "carbon_kg", "hour", DAY + 6 * HOUR)
    # 06:00-06:30: 2 kWh (06:00-06:20) + 1 (half of 06:20-06:40) at 0.45; 06:30-07:00: 1 + 2 at 0.40
    assert straddling["value"] == pytest.approx(3 * 0.45 + 3 * 0.40)
    assert straddling["details"] == {"kg_co2_per_kwh": None, "kwh_by_factor": {"0.45": 3.0, "0.4": 3.0}}
    assert kpi(out, "energy_kwh", "hour", DAY + 6 * HOUR)["value"] == 6.0
    # the hours either side are wholly under one factor
    assert kpi(out, "carbon_kg", "hour", DAY + 5 * HOUR)["value"] == 6.0 * 0.45
    assert kpi(out, "carbon_kg", "hour", DAY + 7 * HOUR)["value"] == 6.0 * 0.40
    assert kpi(out, "carbon_kg", "hour", DAY + 7 * HOUR)["details"] == {"kg_co2_per_kwh": 0.4}
    # the day: 00:00-06:30 is 39 kWh at 0.45, 06:30-24:00 105 kWh at 0.40 (not 144 x either factor)
    day = kpi(out, "carbon_kg", "day", DAY)
    assert day["value"] == pytest.approx(39 * 0.45 + 105 * 0.40)
    assert day["details"]["kwh_by_factor"] == pytest.approx({"0.45": 39.0, "0.4": 105.0})
    # the cost is not touched by a factor change
    assert kpi(out, "energy_cost", "day", DAY)["value"] == pytest.approx(14.4)


def test_an_hour_wholly_inside_one_factor_gives_the_bits_that_factor_alone_gives() -> None:
    changing = run(meter(DAY), plant("Asia/Kolkata", [(None, 0.45), (CHANGE, 0.40)], FLAT))
    before = run(meter(DAY), plant("Asia/Kolkata", [(None, 0.45)], FLAT))
    after = run(meter(DAY), plant("Asia/Kolkata", [(None, 0.40)], FLAT))
    hours = pl.col("period") == "hour"
    assert_frame_equal(
        changing.filter(hours & (pl.col("period_start") < DAY + 6 * HOUR)),
        before.filter(hours & (pl.col("period_start") < DAY + 6 * HOUR)),
    )
    assert_frame_equal(
        changing.filter(hours & (pl.col("period_start") >= DAY + 7 * HOUR)),
        after.filter(hours & (pl.col("period_start") >= DAY + 7 * HOUR)),
    )


# ----- a tariff version starting at local midnight on the 1st -------------------------------------

# Asia/Bangkok (+07:00): 1 September 00:00 local is 31 August 17:00 UTC. Version A (since forever):
# peak 09:00-22:00 at 0.20, off-peak 22:00-09:00 at 0.10; version B (from 1 September): day
# 08:30-20:30 at 0.30, night 20:30-08:30 at 0.15.
SEPTEMBER = datetime(2025, 8, 31, 17, tzinfo=UTC)
VERSION_A = [(None, "peak", 540, 1320, 0.20), (None, "off_peak", 1320, 540, 0.10)]
VERSION_B = [(SEPTEMBER, "day", 510, 1230, 0.30), (SEPTEMBER, "night", 1230, 510, 0.15)]
LAST_DAY = datetime(2025, 8, 31, tzinfo=UTC)


def test_a_tariff_version_cuts_at_its_start_and_its_bands_only_while_in_force() -> None:
    tariffs = frame(
        [("t1", "Asia/Bangkok", b, s, e, p, v) for v, b, s, e, p in VERSION_A + VERSION_B], TARIFF_VERSION_SCHEMA
    )
    # A's edges 09:00 and 22:00 local (02:00, 15:00 UTC), then B from 17:00 UTC; B's 20:30 local on
    # 31 August (13:30 UTC) is before B is in force and is not an edge
    assert band_edges(tariffs, LAST_DAY, LAST_DAY + timedelta(days=1)) == {
        "t1": [LAST_DAY + 2 * HOUR, LAST_DAY + 15 * HOUR, SEPTEMBER]
    }


def test_cost_over_a_tariff_change_at_local_midnight_on_the_first() -> None:
    out = run(meter(LAST_DAY), plant("Asia/Bangkok", [(None, 0.5)], VERSION_A + VERSION_B))
    # the UTC day is 31 Aug 07:00 .. 1 Sep 07:00 local: off-peak 07:00-09:00 (12 kWh x 0.10), peak
    # 09:00-22:00 (78 x 0.20), off-peak 22:00-24:00 (12 x 0.10), then B: night 00:00-07:00 (42 x 0.15)
    cost = kpi(out, "energy_cost", "day", LAST_DAY)
    assert cost["value"] == pytest.approx(1.2 + 15.6 + 1.2 + 6.3)
    assert cost["details"]["kwh_by_band"] == pytest.approx({"off_peak": 24.0, "peak": 78.0, "night": 42.0})
    assert kpi(out, "energy_cost", "hour", LAST_DAY + 16 * HOUR)["value"] == pytest.approx(6 * 0.10)
    assert kpi(out, "energy_cost", "hour", LAST_DAY + 17 * HOUR)["value"] == pytest.approx(6 * 0.15)


def test_a_day_before_the_new_tariff_gives_the_bits_it_always_gave() -> None:
    day = LAST_DAY - timedelta(days=1)
    assert_frame_equal(
        run(meter(day), plant("Asia/Bangkok", [(None, 0.5)], VERSION_A + VERSION_B)),
        run(meter(day), plant("Asia/Bangkok", [(None, 0.5)], VERSION_A)),
    )


def test_energy_before_every_version_has_no_cost_or_carbon_and_says_why() -> None:
    out = run(meter(DAY), plant("Asia/Bangkok", [(SEPTEMBER, 0.40)], VERSION_B))
    assert kpi(out, "energy_kwh", "day", DAY)["value"] == 144.0
    carbon = kpi(out, "carbon_kg", "day", DAY)
    assert (carbon["value"], carbon["null_reason"]) == (
        None,
        "144 kWh of the period fall before the tenant's first emission factor (valid from 2025-08-31T17:00:00+00:00)",
    )
    cost = kpi(out, "energy_cost", "day", DAY)
    assert (cost["value"], cost["null_reason"]) == (
        None,
        "144 kWh of the period fall before the tenant's first tariff version",
    )


def test_a_period_partly_before_the_first_version_has_no_carbon() -> None:
    """The first factor starts at 06:30 UTC: the hour 06:00-07:00 has 3 kWh without a factor."""
    out = run(meter(DAY), plant("Asia/Kolkata", [(CHANGE, 0.40)], FLAT))
    assert kpi(out, "carbon_kg", "hour", DAY + 6 * HOUR)["null_reason"] == (
        "3 kWh of the period fall before the tenant's first emission factor (valid from 2025-08-20T06:30:00+00:00)"
    )
    assert kpi(out, "carbon_kg", "hour", DAY + 7 * HOUR)["value"] == 6.0 * 0.40


def test_a_tenant_without_its_own_row_takes_the_defaults_versions_and_one_with_its_own_row_only_its_own() -> None:
    """t1 has no row: tenant '*' (UTC, 0.45 then 0.40 from 12:00) applies to it; t2 has its own row and
    no factor: no carbon, as when its row's one factor was NULL."""
    plant_of = Plant(
        tenants=frame([("*", "UTC", "USD", None), ("t2", "UTC", "USD", None)], TENANT_SCHEMA),
        tariffs=frame([("*", "UTC", "flat", 0, 1440, 0.10, None)], TARIFF_VERSION_SCHEMA),
        shifts=frame([], SHIFT_SCHEMA),
        machines=frame([("*", "*", "*", 2.0, 75.0)], MACHINE_META_SCHEMA),
        emission_factors=frame([("*", None, 0.45), ("*", DAY + 12 * HOUR, 0.40)], FACTOR_SCHEMA),
    )
    one, two = meter(DAY), meter(DAY)
    inputs = KpiInputs(
        start=DAY,
        end=DAY + timedelta(days=1),
        **{
            name: pl.concat([getattr(one, name), getattr(two, name).with_columns(tenant_id=pl.lit("t2"))])
            for name in ("readings", "prior", "states", "prior_states", "next_seen", "next_readings")
        },
    )
    out = run(inputs, plant_of)
    t1 = out.filter(pl.col("tenant_id") == "t1")
    t2 = out.filter(pl.col("tenant_id") == "t2")
    assert kpi(t1, "carbon_kg", "day", DAY)["value"] == pytest.approx(72 * 0.45 + 72 * 0.40)
    assert kpi(t2, "carbon_kg", "day", DAY)["null_reason"] == "no emission factor for the tenant"
    assert kpi(t2, "energy_cost", "day", DAY)["value"] == pytest.approx(14.4)  # the default's bands


def test_no_energy_before_the_first_version_leaves_the_period_its_cost_and_carbon() -> None:
    """A meter standing still until 06:40 (the machine off), then +2 kWh every 20 minutes; the tenant's first
    factor and first tariff version both start at 06:30 UTC. The hour 06:00-07:00 used 2 kWh, all of it in
    06:40-07:00, after both: its cost and carbon are known (0 kWh before the first version costs nothing and
    emits nothing, whatever the price). They were NULL ("0 kWh of the period fall before ...")."""
    inputs = meter(DAY)
    still = DAY + timedelta(hours=6, minutes=40)

    def standing(frame_: pl.DataFrame) -> pl.DataFrame:
        steps = ((pl.col("time") - still).dt.total_minutes() // 20).clip(lower_bound=0)
        return frame_.with_columns(value=(steps * 2.0).cast(pl.Float64))

    inputs = dataclasses.replace(
        inputs,
        readings=standing(inputs.readings),
        prior=standing(inputs.prior),
        next_readings=standing(inputs.next_readings),
    )
    out = run(inputs, plant("Asia/Kolkata", [(CHANGE, 0.40)], [(CHANGE, "flat", 0, 1440, 0.10)]))
    assert kpi(out, "energy_kwh", "hour", DAY + 5 * HOUR)["value"] == 0.0
    assert kpi(out, "energy_kwh", "hour", DAY + 6 * HOUR)["value"] == 2.0
    carbon, cost = kpi(out, "carbon_kg", "hour", DAY + 6 * HOUR), kpi(out, "energy_cost", "hour", DAY + 6 * HOUR)
    assert (carbon["value"], carbon["null_reason"]) == (2.0 * 0.40, None)
    assert (cost["value"], cost["null_reason"]) == (2.0 * 0.10, None)
    # the hour before the versions used nothing: nothing to price, so 0 as well
    assert kpi(out, "carbon_kg", "hour", DAY + 5 * HOUR)["value"] == 0.0
    assert kpi(out, "energy_cost", "hour", DAY + 5 * HOUR)["value"] == 0.0
