"""Machine KPIs with hand-computed values: a 24 h day with a known tariff split, a meter reset and
a production-counter reset, a planned stop, a fault, an idle hour, a silence in the data, an hour
with zero production, a machine without counters or run states, and shift periods in local time.

The day (machine mc-01, all values by hand; a counter reading at t1 measures the hour (t0, t1]
before it, which is spread over the periods it overlaps in proportion to time):
  power every 5 min at 40 kW, 100 kW at 10:30; none at 03:05..03:20 (a 25 min silence 03:00-03:25);
    the day before ends with 40 kW at 23:55, the next day starts with 40 kW at 00:00
  energy counter at HH:30, +10 kWh each, prior 1000 at 23:30 the day before, next 00:30 the day
    after; reset at 12:30 (reads 5: +5 over 11:30-12:30)
    -> half of 23:30-00:30 (5) + 22 x 10 + 5 (the intervals closing 01:30..23:30) + half of
       23:30-00:30 next (5) = 235 kWh (24 readings close an interval in the day, one reset)
       each hour H gets half of the intervals closing at H:30 and (H+1):30: off-peak (22:00-09:00)
       hours 00..08, 22, 23 are 11 x (5 + 5) = 110 kWh, peak 125 -> cost 110 x 0.10 + 125 x 0.20 = 36.0;
       carbon 235 x 0.45 = 105.75
  count_total at HH:30 +1500 (+0 at 12:30), reset at 06:30 (reads 1500), next +1500:
    750 + 22 x 1500 + 750 = 34500
  count_good  at HH:30 +1470 (+0 at 12:30), reset at 06:30 (reads 1470): 735 + 22 x 1470 + 735 = 33810
  run state: running (since the day before), planned_stop 12:00-13:00, fault 15:00-15:30,
    idle 20:00-21:00
  -> planned 3600, fault 1800, idle 3600, no data 1500 (03:00-03:25), running 75900
     availability 75900 / 82800 = 11/12, performance 2.0 x 34500 / 75900 = 10/11,
     quality 33810 / 34500 = 0.98, OEE = 33810 x 2.0 / 82800 = 11/12 x 10/11 x 0.98
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analytics_platform.transforms.energy_kpis import TARIFF_SCHEMA
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
    resolve_machines,
    resolve_tenants,
    shift_periods,
)

DAY = datetime(2025, 8, 20, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)


def at(hour: int, minute: int = 0, day: datetime = DAY) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


def frame(rows: list[tuple], schema: dict) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row")


def plant(shifts: list[tuple] = (), zone: str = "UTC") -> Plant:
    return Plant(
        tenants=frame([("*", zone, "USD", 0.45)], TENANT_SCHEMA),
        tariffs=frame(
            [("*", "UTC", "peak", 540, 1320, 0.20), ("*", "UTC", "off_peak", 1320, 540, 0.10)], TARIFF_SCHEMA
        ),
        shifts=frame([("*", *s) for s in shifts], SHIFT_SCHEMA),
        machines=frame([("*", "*", "*", 2.0, 75.0)], MACHINE_META_SCHEMA),
    )


def reading(ts: datetime, metric: str, value: float, machine: str = "mc-01") -> tuple:
    return (ts, "t1", "f1", machine, metric, value)


def day_inputs() -> KpiInputs:
    rows = []
    silent = {at(3, m) for m in (5, 10, 15, 20)}
    for step in range(288):
        ts = DAY + timedelta(minutes=5 * step)
        if ts not in silent:
            rows.append(reading(ts, "power", 100.0 if ts == at(10, 30) else 40.0))
        rows.append(reading(ts, "power", 40.0, "mc-02"))
    energy, total, good = 1000.0, 500.0, 300.0
    for hour in range(24):
        ts = at(hour, 30)
        energy = 5.0 if hour == 12 else energy + 10
        if hour == 6:
            total, good = 1500.0, 1470.0
        elif hour != 12:
            total, good = total + 1500, good + 1470
        rows += [reading(ts, "energy", energy), reading(ts, "count_total", total), reading(ts, "count_good", good)]
    after = [
        reading(at(0, 30, NEXT), "energy", energy + 10),
        reading(at(0, 30, NEXT), "count_total", total + 1500),
        reading(at(0, 30, NEXT), "count_good", good + 1470),
        reading(NEXT, "power", 40.0),
        reading(NEXT, "power", 40.0, "mc-02"),
    ]
    prior = [
        reading(at(23, 30, DAY - timedelta(days=1)), "energy", 1000.0),
        reading(at(23, 30, DAY - timedelta(days=1)), "count_total", 500.0),
        reading(at(23, 30, DAY - timedelta(days=1)), "count_good", 300.0),
        reading(at(23, 55, DAY - timedelta(days=1)), "power", 40.0),
        reading(at(23, 55, DAY - timedelta(days=1)), "power", 40.0, "mc-02"),
    ]
    states = [
        (at(12), "t1", "f1", "mc-01", "planned_stop"),
        (at(12, 30), "t1", "f1", "mc-01", "planned_stop"),  # a heartbeat repeating the state
        (at(13), "t1", "f1", "mc-01", "running"),
        (at(15), "t1", "f1", "mc-01", "fault"),
        (at(15, 30), "t1", "f1", "mc-01", "running"),
        (at(20), "t1", "f1", "mc-01", "idle"),
        (at(21), "t1", "f1", "mc-01", "running"),
    ]
    return KpiInputs(
        start=DAY,
        end=NEXT,
        readings=frame(rows, READING_SCHEMA),
        prior=frame(prior, READING_SCHEMA),
        states=frame(states, STATE_SCHEMA),
        prior_states=frame([(at(22, 0, DAY - timedelta(days=1)), "t1", "f1", "mc-01", "running")], STATE_SCHEMA),
        next_seen=frame([("t1", "f1", m, NEXT) for m in ("mc-01", "mc-02")], SEEN_SCHEMA),
        next_readings=frame(after, READING_SCHEMA),
    )


def kpis(result: pl.DataFrame, machine: str = "mc-01", period: str = "day", start: datetime = DAY) -> dict:
    rows = result.filter(
        (pl.col("machine_id") == machine) & (pl.col("period") == period) & (pl.col("period_start") == start)
    )
    return {r["kpi"]: r for r in rows.iter_rows(named=True)}


@pytest.fixture(scope="module")
def day() -> pl.DataFrame:
    return machine_kpis(
        day_inputs(), fixed_periods("day", DAY, NEXT, timedelta(days=1)), plant(), KpiOptions(drivers=())
    )


def test_energy_cost_carbon_and_demand(day: pl.DataFrame) -> None:
    k = kpis(day)
    assert k["energy_kwh"]["value"] == pytest.approx(235.0)
    assert json.loads(k["energy_kwh"]["details"]) == {"counter_resets": 1, "increments": 24}
    assert k["energy_cost"]["value"] == pytest.approx(36.0)
    assert json.loads(k["energy_cost"]["details"])["kwh_by_band"] == pytest.approx({"off_peak": 110.0, "peak": 125.0})
    assert k["carbon_kg"]["value"] == pytest.approx(105.75)
    assert k["peak_demand_kw"]["value"] == 100.0
    assert json.loads(k["peak_demand_kw"]["details"])["at"].startswith("2025-08-20 10:30:00")
    # time-weighted: each sample holds the 300 s before it; the 24:00 sample closes the day's last
    # interval, 03:25's 1500 s reach back over the silence (longer than max(300, 2 x 300)): not held.
    # 283 held samples, 282 x 40 + 100 = 11380, each x 300 s -> 11380 x 300 / (283 x 300)
    assert k["avg_demand_kw"]["value"] == 11380 / 283
    assert k["load_factor"]["value"] == 11380 / 283 / 100


def test_time_accounting_and_oee(day: pl.DataFrame) -> None:
    k = kpis(day)
    assert k["run_time_s"]["value"] == pytest.approx(75900)
    assert k["idle_time_s"]["value"] == pytest.approx(3600)
    assert k["planned_downtime_s"]["value"] == pytest.approx(3600)
    assert k["downtime_s"]["value"] == pytest.approx(3300)
    assert json.loads(k["downtime_s"]["details"]) == {"fault_s": 1800.0, "gap_s": 1500.0}
    assert k["fault_time_s"]["value"] == pytest.approx(1800)
    assert k["availability"]["value"] == pytest.approx(11 / 12)
    assert k["performance"]["value"] == pytest.approx(10 / 11)
    assert k["quality"]["value"] == pytest.approx(0.98)
    assert k["oee"]["value"] == pytest.approx(11 / 12 * 10 / 11 * 0.98)


def test_production_sec_rate_completeness(day: pl.DataFrame) -> None:
    k = kpis(day)
    assert k["production_count"]["value"] == 34500
    assert k["good_count"]["value"] == 33810
    assert k["sec_kwh_per_unit"]["value"] == pytest.approx(235 / 34500)
    assert k["production_rate_per_h"]["value"] == pytest.approx(34500 / (75900 / 3600))
    assert k["data_completeness_pct"]["value"] == pytest.approx(100 * 284 / 1440)


def test_machine_without_counters_or_states_gets_null_with_reasons(day: pl.DataFrame) -> None:
    k = kpis(day, "mc-02")
    assert k["avg_demand_kw"]["value"] == 40.0
    assert k["data_completeness_pct"]["value"] == pytest.approx(20.0)
    for name in ("energy_kwh", "energy_cost", "carbon_kg", "production_count", "sec_kwh_per_unit"):
        assert k[name]["value"] is None and k[name]["null_reason"], name
    assert k["production_count"]["null_reason"] == "no production counter (count_total) readings in the period"
    assert k["availability"]["null_reason"] == "no run-state data for the machine in the period"
    assert k["oee"]["null_reason"] == "availability: no run-state data for the machine in the period"
    assert k["downtime_s"]["value"] == 0.0
    # its day is unknown time, no planned production time a longer range's OEE would add up
    assert json.loads(k["oee"]["details"])["planned_busy_s"] is None


def test_planned_stop_hour_has_no_availability_and_the_hours_add_up_to_the_day() -> None:
    hours = machine_kpis(
        day_inputs(), fixed_periods("hour", DAY, NEXT, timedelta(hours=1)), plant(), KpiOptions(drivers=())
    )
    assert (
        hours.filter(pl.col("machine_id") == "mc-01").height
        == 24 * hours.filter((pl.col("machine_id") == "mc-01") & (pl.col("period_start") == DAY)).height
    )
    k = kpis(hours, period="hour", start=at(12))
    # hourly counters at :30 only know each hour's total: the planned-stop hour 12:00-13:00 gets half
    # of 11:30-12:30 (+0) and half of 12:30-13:30 (+1500): 750 parts, 735 good; energy half of the
    # reset interval's 5 kWh and half of the next one's 10: 7.5 kWh
    assert k["production_count"]["value"] == 750.0
    assert k["good_count"]["value"] == 735.0
    assert k["planned_downtime_s"]["value"] == 3600
    assert k["availability"]["null_reason"] == "no planned production time in the period"
    assert k["energy_kwh"]["value"] == 7.5
    assert json.loads(k["energy_kwh"]["details"]) == {"counter_resets": 1, "increments": 1}
    assert k["sec_kwh_per_unit"]["value"] == 7.5 / 750
    assert k["quality"]["value"] == 735 / 750
    # the hours add up to the day, exactly
    energy = hours.filter((pl.col("machine_id") == "mc-01") & (pl.col("kpi") == "energy_kwh"))["value"].sum()
    assert energy == pytest.approx(235.0)
    runs = hours.filter((pl.col("machine_id") == "mc-01") & (pl.col("kpi") == "run_time_s"))["value"].sum()
    assert runs == pytest.approx(75900)
    # the silence 03:00-03:25 is 1500 s of downtime in hour 3
    assert kpis(hours, period="hour", start=at(3))["downtime_s"]["value"] == 1500


def test_shift_periods_in_local_time_belong_to_the_day_they_end_in() -> None:
    tenants = frame([("t1", "Asia/Bangkok", "THB", 0.5)], TENANT_SCHEMA)
    shifts = frame([("t1", "A", 360, 840), ("t1", "B", 840, 1320), ("t1", "C", 1320, 360)], SHIFT_SCHEMA)
    periods = shift_periods(tenants, shifts, DAY, NEXT)
    assert periods.select("label", "period_start", "period_end").rows() == [
        ("A", at(23, 0, DAY - timedelta(days=1)), at(7)),
        ("B", at(7), at(15)),
        ("C", at(15), at(23)),
    ]


def test_time_outside_every_shift_is_planned_not_downtime() -> None:
    # two shifts 06:00-22:00 UTC: 22:00-06:00 is not planned production time
    result = machine_kpis(
        day_inputs(),
        fixed_periods("day", DAY, NEXT, timedelta(days=1)),
        plant(shifts=[("A", 360, 840), ("B", 840, 1320)]),
        KpiOptions(drivers=()),
    )
    k = kpis(result)
    # planned: 8 h unscheduled + the 1 h planned stop; the 03:00 silence falls outside the schedule
    assert k["planned_downtime_s"]["value"] == pytest.approx(9 * 3600)
    assert json.loads(k["planned_downtime_s"]["details"])["unscheduled_s"] == 8 * 3600
    assert k["downtime_s"]["value"] == pytest.approx(1800)
    assert k["run_time_s"]["value"] == pytest.approx(86400 - 9 * 3600 - 1800 - 3600)
    assert k["availability"]["value"] == pytest.approx((86400 - 9 * 3600 - 1800 - 3600) / (15 * 3600))


def test_metadata_resolution_most_specific_row_wins() -> None:
    meta = frame(
        [("*", "*", "*", 2.0, None), ("t1", "*", "*", 3.0, None), ("t1", "f1", "mc-02", 4.0, 50.0)],
        MACHINE_META_SCHEMA,
    )
    machines = pl.DataFrame(
        {"tenant_id": ["t1", "t1", "t2"], "factory_id": ["f1", "f1", "f9"], "machine_id": ["mc-01", "mc-02", "x"]}
    )
    resolved = resolve_machines(machines, meta)
    assert resolved.select("machine_id", "ideal_cycle_time_s").rows() == [("mc-01", 3.0), ("mc-02", 4.0), ("x", 2.0)]
    tenants, tariffs, _ = resolve_tenants(
        Plant(
            tenants=frame([("*", "UTC", "USD", 0.45), ("t2", "Asia/Bangkok", "THB", 0.5)], TENANT_SCHEMA),
            tariffs=frame([("*", "UTC", "flat", 0, 1440, 0.1)], TARIFF_SCHEMA),
            shifts=frame([], SHIFT_SCHEMA),
            machines=meta,
        ),
        ["t1", "t2"],
    )
    assert tenants.select("tenant_id", "timezone").rows() == [("t1", "UTC"), ("t2", "Asia/Bangkok")]
    assert tariffs.select("tenant_id", "timezone", "band").rows() == [
        ("t1", "UTC", "flat"),
        ("t2", "Asia/Bangkok", "flat"),
    ]


# ----- the same bits whatever the order -------------------------------------------------------
# KPIs are the same bits whatever order the readings arrive in and on every run.
#
# A backfill reads the same readings as the live run, in whatever order the table returns them; a
# period's KPIs add many segment parts (float addition is not associative), and Polars' joins and
# group-bys return rows in no fixed order. Before the sums were ordered, the day's good count, cost,
# OEE and quality and the hours' average drivers differed in their last bits between two runs on one
# input and between two orders of the same readings (bench/kpi_ml.py: 80 day and 131 shift rows of
# two base runs; here 1-3 rows of 8 machines).

ORDER_MACHINES = [f"mc-{m:02d}" for m in range(8)]


def order_day() -> tuple[pl.DataFrame, list[tuple], list[tuple]]:
    """A day of 8 machines: power every 30 s, energy and the production counters every minute (7 s
    past it, so every hour's edge cuts an interval), an outdoor temperature; irregular values."""
    rng = np.random.default_rng(7)
    rows, prior, after = [], [], []
    for machine in ORDER_MACHINES:
        energy, total, good = 1000.0, 0.0, 0.0
        before = DAY - timedelta(minutes=1)
        prior += [(before, "t1", "f1", machine, m, v) for m, v in (("energy", energy), ("count_total", 0.0))]
        prior += [(before, "t1", "f1", machine, "count_good", 0.0), (before, "t1", "f1", machine, "power", 40.0)]
        for second in range(0, 86_400, 30):
            moment = DAY + timedelta(seconds=second)
            rows.append((moment, "t1", "f1", machine, "power", float(rng.uniform(10, 90))))
            if second % 60 == 0:
                energy += float(rng.uniform(0.1, 1.7))
                total += float(rng.integers(0, 30))
                good = min(total, good + float(rng.integers(0, 30)))
                late = moment + timedelta(seconds=7)
                rows += [(late, "t1", "f1", machine, m, v) for m, v in (("energy", energy), ("count_total", total))]
                rows += [
                    (late, "t1", "f1", machine, "count_good", good),
                    (moment, "t1", "f1", machine, "outdoor_temp", float(rng.normal(20, 3))),
                ]
        closing = NEXT + timedelta(seconds=7)
        after += [(closing, "t1", "f1", machine, m, v) for m, v in (("energy", energy + 0.3), ("count_total", total))]
        after += [(closing, "t1", "f1", machine, "count_good", good), (NEXT, "t1", "f1", machine, "power", 40.0)]
    return frame(rows, READING_SCHEMA), prior, after


@pytest.fixture(scope="module")
def order_day_readings() -> tuple[pl.DataFrame, list[tuple], list[tuple]]:
    return order_day()


def kpis_of(readings: pl.DataFrame, prior: list[tuple], after: list[tuple]) -> pl.DataFrame:
    inputs = KpiInputs(
        start=DAY,
        end=NEXT,
        readings=readings,
        prior=frame(prior, READING_SCHEMA),
        states=frame([], STATE_SCHEMA),
        prior_states=frame(
            [(DAY - timedelta(hours=2), "t1", "f1", m, "running") for m in ORDER_MACHINES], STATE_SCHEMA
        ),
        next_seen=frame([("t1", "f1", m, NEXT) for m in ORDER_MACHINES], SEEN_SCHEMA),
        next_readings=frame(after, READING_SCHEMA),
    )
    periods = pl.concat(
        [fixed_periods("day", DAY, NEXT, timedelta(days=1)), fixed_periods("hour", DAY, NEXT, timedelta(hours=1))]
    )
    return machine_kpis(inputs, periods, plant())


def test_every_run_gives_the_same_bits(order_day_readings) -> None:
    first = kpis_of(*order_day_readings)
    assert first.filter(pl.col("period") == "day")["machine_id"].unique().sort().to_list() == ORDER_MACHINES
    assert first.filter(pl.col("period") == "hour")["period_start"].n_unique() == 24
    for _ in range(3):
        assert_frame_equal(kpis_of(*order_day_readings), first, check_exact=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_order_of_the_readings_gives_the_same_bits(order_day_readings, seed: int) -> None:
    readings, prior, after = order_day_readings
    shuffled = readings.sample(fraction=1.0, shuffle=True, seed=seed)
    assert not shuffled.equals(readings)
    assert_frame_equal(kpis_of(shuffled, prior, after), kpis_of(readings, prior, after), check_exact=True)


def meter_only_hour(
    demand_interval_s: int = 0, hour: int = 10, values: list | None = None, max_interval_s: int = 86_400
) -> dict:
    """mc-03 has only a 15-minute kWh meter (no power readings): 10 kWh over 09:45-10:00, then 25, 25,
    10 and 20 kWh over the quarters of 10:00-11:00 (100, 100, 40, 80 kW), 10 over 11:00-11:15."""
    values = values or [
        (at(9, 45), 100.0),
        (at(10), 110.0),
        (at(10, 15), 135.0),
        (at(10, 30), 160.0),
        (at(10, 45), 170.0),
        (at(11), 190.0),
        (at(11, 15), 200.0),
    ]
    start, end = at(hour), at(hour + 1)
    meter = [reading(t, "energy", v, "mc-03") for t, v in values]
    inputs = KpiInputs(
        start=start,
        end=end,
        readings=frame([r for r in meter if start <= r[0] < end], READING_SCHEMA),
        prior=frame([r for r in meter if r[0] < start][-1:], READING_SCHEMA),
        states=frame([], STATE_SCHEMA),
        prior_states=frame([], STATE_SCHEMA),
        next_seen=frame([("t1", "f1", "mc-03", end)], SEEN_SCHEMA),
        next_readings=frame([r for r in meter if r[0] >= end], READING_SCHEMA),
    )
    out = machine_kpis(
        inputs,
        fixed_periods("hour", start, end, timedelta(hours=1)),
        plant(),
        KpiOptions(drivers=(), demand_interval_s=demand_interval_s, max_interval_s=max_interval_s),
    )
    return kpis(out, "mc-03", "hour", start)


def test_a_machine_with_only_an_energy_meter_has_demand_from_the_meters_intervals() -> None:
    """A plant's most common energy data is a kWh meter read every 15 minutes. Without power readings the
    demand KPIs were NULL ("no power readings"); a meter's interval is its average demand (kWh x 3600 /
    the interval's seconds), as a utility reads billed demand off an interval meter."""
    k = meter_only_hour()
    assert k["energy_kwh"]["value"] == 80.0
    assert k["avg_demand_kw"]["value"] == 80.0, k["avg_demand_kw"]["null_reason"]
    assert k["peak_demand_kw"]["value"] == 100.0
    peak = json.loads(k["peak_demand_kw"]["details"])
    assert peak["at"].startswith("2025-08-20 10:15:00") and peak["source"] == "energy meter intervals"
    assert json.loads(k["avg_demand_kw"]["details"])["held_s"] == 3600.0
    assert k["load_factor"]["value"] == 0.8
    # billed over half hours: 10:00-10:30 holds 50 kWh (100 kW), 10:30-11:00 30 kWh (60 kW)
    half = meter_only_hour(1800)
    assert (half["peak_demand_kw"]["value"], half["load_factor"]["value"]) == (100.0, 0.8)
    assert json.loads(half["peak_demand_kw"]["details"])["at"].startswith("2025-08-20 10:30:00")


def test_a_meters_dropped_interval_gives_no_demand_inside_it() -> None:
    """An interval longer than KPI_MAX_INTERVAL_S is not counted; the next one starts at its own first
    reading, so the hours inside the dropped one have no demand (not the next interval's, which a
    period end inside the gap would otherwise take as the power in force)."""
    values = [(at(9, 45), 100.0), (at(10), 110.0), (at(15), 900.0), (at(15, 15), 925.0)]
    k = meter_only_hour(hour=12, values=values, max_interval_s=3600)
    for name in ("energy_kwh", "peak_demand_kw", "avg_demand_kw", "load_factor"):
        assert k[name]["value"] is None, (name, k[name])


def production_hour(state: str | None, made: float = 0.0, silent: bool = False) -> dict:
    """mc-04 holds `state` (since the day before) over 10:00-11:00, its counters read every 5 minutes
    (no silence) from 500 made / 490 good at 10:00, rising evenly by `made` units over the hour, 98 %
    of them good; ideal cycle time 2 s, no shifts: the whole hour is planned production time."""
    start, end = at(10), at(11)
    rows = []
    for step in range(-1, 14):
        t = start + timedelta(minutes=5 * step)
        if silent and start <= t < end:  # the agent sends nothing from 09:55 to 11:00
            continue
        total = 500.0 + made * max(step, 0) / 12
        rows += [
            reading(t, "count_total", total, "mc-04"),
            reading(t, "count_good", 490.0 + (total - 500.0) * 0.98, "mc-04"),
        ]
    inputs = KpiInputs(
        start=start,
        end=end,
        readings=frame([r for r in rows if start <= r[0] < end], READING_SCHEMA),
        prior=frame([r for r in rows if r[0] < start], READING_SCHEMA),
        states=frame([], STATE_SCHEMA),
        prior_states=frame(
            [(at(22, 0, DAY - timedelta(days=1)), "t1", "f1", "mc-04", state)] if state else [], STATE_SCHEMA
        ),
        next_seen=frame([("t1", "f1", "mc-04", end)], SEEN_SCHEMA),
        next_readings=frame([r for r in rows if r[0] >= end], READING_SCHEMA),
    )
    out = machine_kpis(inputs, fixed_periods("hour", start, end, timedelta(hours=1)), plant(), KpiOptions(drivers=()))
    return kpis(out, "mc-04", "hour", start)


def test_oee_of_planned_time_without_production_is_zero_not_null() -> None:
    """OEE = good x ideal cycle time / planned production time (the textbook single division): a machine
    planned to produce that makes nothing scores 0. It was NULL ("quality: no units produced"), so an idle
    shift vanished from OEE averages and threshold alerts instead of counting 0 %."""
    idle = production_hour("idle")  # the counters stand still all hour
    assert (idle["availability"]["value"], idle["production_count"]["value"], idle["good_count"]["value"]) == (
        0.0,
        0.0,
        0.0,
    )
    assert idle["performance"]["value"] is None and idle["quality"]["value"] is None  # 0 / 0: undefined
    assert (idle["oee"]["value"], idle["oee"]["null_reason"]) == (0.0, None)
    details = json.loads(idle["oee"]["details"])
    assert (details["ideal_cycle_time_s"], details["planned_busy_s"]) == (2.0, 3600.0)

    running = production_hour("running")  # running, nothing made: performance 0, quality 0 / 0
    assert (running["availability"]["value"], running["performance"]["value"]) == (1.0, 0.0)
    assert (running["quality"]["value"], running["oee"]["value"]) == (None, 0.0)

    # the textbook's worked hour stays A x P x Q: 1500 made, 1470 good, ideal 2 s, running all hour
    made = production_hour("running", 1500.0)
    assert made["oee"]["value"] == 1470 * 2.0 / 3600
    assert made["oee"]["value"] == pytest.approx(
        made["availability"]["value"] * made["performance"]["value"] * made["quality"]["value"], rel=1e-15
    )


def test_oee_without_run_states_or_an_ideal_cycle_time_stays_null_with_the_reason() -> None:
    k = production_hour("planned_stop")  # all hour planned stop: no planned production time
    assert k["oee"]["value"] is None
    assert k["oee"]["null_reason"] == "availability: no planned production time in the period"


def test_a_silent_hour_of_a_machine_with_run_states_is_an_outage_not_missing_states() -> None:
    """Nothing from 09:55 to 11:00 of a machine running since the day before: the silence is unplanned
    downtime (docs: the machine cannot prove it ran), so the hour's availability and OEE are 0, as a
    month that sums the hour's terms already counted them. They were NULL, "no run-state data for the
    machine in the period", while downtime_s said 3600 s."""
    k = production_hour("running", silent=True)
    assert k["downtime_s"]["value"] == 3600.0
    assert (k["availability"]["value"], k["availability"]["null_reason"]) == (0.0, None)
    assert (k["run_time_s"]["value"], k["oee"]["value"]) == (0.0, 0.0)


def test_a_silence_of_a_machine_without_run_states_is_downtime_but_not_planned_time() -> None:
    """A machine that never reported a run state has no planned busy time, silent or not: its silence
    made 3600 s of planned time with nothing running, and a month with one such hour availability 0.
    The silence is still its downtime (the brief's "downtime from gaps")."""
    k = production_hour(None, silent=True)
    assert (k["availability"]["value"], k["availability"]["null_reason"]) == (
        None,
        "no run-state data for the machine in the period",
    )
    assert json.loads(k["availability"]["details"])["planned_busy_s"] == 0.0
    assert json.loads(k["oee"]["details"])["planned_busy_s"] is None
    assert (k["downtime_s"]["value"], json.loads(k["downtime_s"]["details"])["gap_s"]) == (3600.0, 3600.0)
    assert json.loads(k["availability"]["details"])["unknown_s"] == 3600.0
