"""Interval booking of counters and demand at period boundaries, with values computed by hand.

A cumulative reading at t1 measures (t0, t1] back to its series' previous reading, so its
increment belongs to the periods and tariff bands that (t0, t1] overlaps, in proportion to time,
and a reading exactly on a boundary belongs wholly to the period ending there (docs/kpis.md).

`test_a_machine_running_through_a_shift_change_keeps_its_last_minute` reproduced issue 19 finding
6: the old code booked each increment to the period holding its reading's stamp, so shift B got
13:59-14:00's 60 parts from shift A and lost 21:59-22:00's 51 parts to shift C (production 19280,
good 18855, OEE 0.74821 instead of 19271, 18848, 18848 / 25200).

Float comparisons are `==` where each KPI is one correctly rounded division of exact values (whole
seconds, whole counts, binary-exact prices); the expected side is written as that same division.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from analytics_platform.transforms.energy_kpis import TARIFF_SCHEMA
from analytics_platform.transforms.machine_kpis import (
    COUNTERS,
    MACHINE,
    MACHINE_META_SCHEMA,
    PERIOD_SCHEMA,
    POWER,
    SEEN_SCHEMA,
    SERIES,
    SERIES_READING_SCHEMA,
    SHIFT_SCHEMA,
    STATE_SCHEMA,
    TENANT_SCHEMA,
    KpiInputs,
    KpiOptions,
    Plant,
    fixed_periods,
    machine_kpis,
)

DAY = datetime(2025, 8, 20, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)


# peak demand as a utility bills it (KPI_DEMAND_INTERVAL_S=900); the default, 0, is the maximum power draw
BILLED = KpiOptions(demand_interval_s=900)


def at(hour: int, minute: int = 0, day: datetime = DAY) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


def reading(ts: datetime, metric: str, value: float, sensor: str = "s-1", machine: str = "mc-01") -> tuple:
    return (ts, "t1", "f1", machine, sensor, metric, value)


def state(ts: datetime, run_state: str, machine: str = "mc-01") -> tuple:
    return (ts, "t1", "f1", machine, run_state)


def inputs(rows: list[tuple], start: datetime, end: datetime, states: list[tuple] = (), gap_s: int = 300) -> KpiInputs:
    """What results/kpis.read_inputs reads from the stored `rows` and `states` for [start, end):
    the range, each series' last reading before it and first counter / power reading after it,
    each machine's first reading within gap_s after it, the run state in force at the start."""
    stored = pl.DataFrame(rows, schema=SERIES_READING_SCHEMA, orient="row").sort("time")
    before, after = pl.col("time") < start, pl.col("time") >= end
    history = pl.DataFrame(states, schema=STATE_SCHEMA, orient="row").sort("time")
    return KpiInputs(
        start=start,
        end=end,
        readings=stored.filter(~before & ~after),
        prior=stored.filter(before).group_by(SERIES, maintain_order=True).last().select(list(SERIES_READING_SCHEMA)),
        states=history.filter((pl.col("time") >= start) & (pl.col("time") < end)),
        prior_states=history.filter(pl.col("time") < start).group_by(MACHINE, maintain_order=True).last(),
        next_seen=stored.filter(after & (pl.col("time") <= end + timedelta(seconds=gap_s)))
        .group_by(MACHINE)
        .agg(pl.col("time").min())
        .select(list(SEEN_SCHEMA)),
        next_readings=stored.filter(after & pl.col("metric").is_in((*COUNTERS, POWER)))
        .group_by(SERIES, maintain_order=True)
        .first()
        .select(list(SERIES_READING_SCHEMA)),
    )


# peak 14:00-22:00 at 0.25 / kWh, off-peak 22:00-14:00 at 0.125 (binary-exact prices: exact costs)
BANDS = [("peak", 840, 1320, 0.25), ("off_peak", 1320, 840, 0.125)]
SHIFTS = [("A", 360, 840), ("B", 840, 1320), ("C", 1320, 360)]


def plant(ideal_cycle_time_s: float = 1.0) -> Plant:
    return Plant(
        tenants=pl.DataFrame([("*", "UTC", "USD", 0.5)], schema=TENANT_SCHEMA, orient="row"),
        tariffs=pl.DataFrame([("*", "UTC", *b) for b in BANDS], schema=TARIFF_SCHEMA, orient="row"),
        shifts=pl.DataFrame([("*", *s) for s in SHIFTS], schema=SHIFT_SCHEMA, orient="row"),
        machines=pl.DataFrame([("*", "*", "*", ideal_cycle_time_s, None)], schema=MACHINE_META_SCHEMA, orient="row"),
    )


def shifts_of_the_20th() -> pl.DataFrame:
    """A 06:00-14:00, B 14:00-22:00 (the shift under test, 480 min) and C 22:00-06:00 (UTC)."""
    return pl.DataFrame(
        [
            ("shift", "A", "t1", at(6), at(14)),
            ("shift", "B", "t1", at(14), at(22)),
            ("shift", "C", "t1", at(22), at(6, 0, NEXT)),
        ],
        schema=PERIOD_SCHEMA,
        orient="row",
    )


def hours(start: datetime, end: datetime) -> pl.DataFrame:
    return fixed_periods("hour", start, end, timedelta(hours=1))


def kpis(result: pl.DataFrame, start: datetime, machine: str = "mc-01", period: str | None = None) -> dict:
    rows = result.filter((pl.col("machine_id") == machine) & (pl.col("period_start") == start))
    if period:
        rows = rows.filter(pl.col("period") == period)
    return {r["kpi"]: r for r in rows.iter_rows(named=True)}


def values(result: pl.DataFrame, start: datetime, *names: str, machine: str = "mc-01") -> dict:
    k = kpis(result, start, machine)
    return {name: k[name]["value"] for name in names}


def details(row: dict) -> dict:
    return json.loads(row["details"]) if row["details"] else {}


# ----- OEE of a shift: the textbook case --------------------------------------------------------
#
# Shift B 14:00-22:00 (480 min): planned breaks (planned_stop) 16:00-16:30 and 19:00-19:30 = 60 min,
# fault 17:10-17:57 = 47 min, running otherwise: 480 - 60 - 47 = 373 min = 22380 s. The machine runs
# from before 13:00 and on after 22:00, its counters report through both shift changes.
#   planned busy time 480 - 60 = 420 min = 25200 s
#   the 373 running minutes make 19271 parts: 248 minutes of 52 and 125 of 51 (12896 + 6375 = 19271),
#   423 of them rejects: 2 in each of the first 50 running minutes, 1 in the other 323 (100 + 323)
#   -> good 19271 - 423 = 18848
#   availability 22380 / 25200 = 373 / 420; performance 1.0 s x 19271 / 22380;
#   quality 18848 / 19271; OEE = A x P x Q = 18848 x 1.0 / 25200
# Around it: 13:00-14:00 (shift A) 60 parts and 3 rejects a minute; 22:00-23:00 (shift C) 55 and 4.

BREAKS_AND_FAULT = [
    state(at(16), "planned_stop"),
    state(at(16, 30), "running"),
    state(at(17, 10), "fault"),
    state(at(17, 57), "running"),
    state(at(19), "planned_stop"),
    state(at(19, 30), "running"),
]
STATES = [state(at(5), "running"), *BREAKS_AND_FAULT]


def state_at(ts: datetime) -> str:
    return [s for when, *_, s in STATES if when <= ts][-1]


def minutes_made() -> list[tuple[datetime, int, int]]:
    """(end of minute, parts, rejects) for every minute 13:00-23:00."""
    out, running = [], 0
    for k in range(1, 601):
        end = at(13) + timedelta(minutes=k)
        if end <= at(14):
            out.append((end, 60, 3))
        elif end > at(22):
            out.append((end, 55, 4))
        elif state_at(end - timedelta(minutes=1)) == "running":
            out.append((end, 52 if running < 248 else 51, 2 if running < 50 else 1))
            running += 1
        else:
            out.append((end, 0, 0))
    assert running == 373
    return out


def production_counters(every_min: int) -> list[tuple]:
    """count_total and count_good read every `every_min` minutes from 13:00 to 23:00."""
    total, good = 100_000.0, 98_000.0
    rows = [reading(at(13), "count_total", total, "s-count"), reading(at(13), "count_good", good, "s-count")]
    for end, parts, rejects in minutes_made():
        total, good = total + parts, good + parts - rejects
        if end.minute % every_min == 0:
            rows += [reading(end, "count_total", total, "s-count"), reading(end, "count_good", good, "s-count")]
    return rows


def assert_textbook_shift_b(result: pl.DataFrame) -> None:
    k = kpis(result, at(14))
    assert {n: k[n]["value"] for n in ("run_time_s", "planned_downtime_s", "fault_time_s", "downtime_s")} == {
        "run_time_s": 22380.0,
        "planned_downtime_s": 3600.0,
        "fault_time_s": 2820.0,
        "downtime_s": 2820.0,
    }
    assert k["production_count"]["value"] == 19271
    assert k["good_count"]["value"] == 18848
    assert k["availability"]["value"] == 373 / 420
    assert k["performance"]["value"] == 19271 / 22380
    assert k["quality"]["value"] == 18848 / 19271
    assert k["oee"]["value"] == 18848 / 25200


def test_a_machine_running_through_a_shift_change_keeps_its_last_minute() -> None:
    """1-minute counters: the reading at 14:00 measured 13:59-14:00 (shift A's), the one at 22:00
    measured 21:59-22:00 (shift B's). The old booking gave B 19271 + 60 - 51 = 19280 parts."""
    rows = production_counters(every_min=1)
    result = machine_kpis(inputs(rows, at(6), at(6, 0, NEXT), STATES), shifts_of_the_20th(), plant(), KpiOptions())
    assert_textbook_shift_b(result)
    # the neighbours got exactly their own minutes: A 60 x 60 = 3600 parts (good 60 x 57), C 60 x 55 = 3300 (60 x 51)
    assert values(result, at(6), "production_count", "good_count") == {
        "production_count": 3600.0,
        "good_count": 3420.0,
    }
    c = kpis(result, at(22))
    assert (c["production_count"]["value"], c["good_count"]["value"]) == (3300.0, 3060.0)
    # nothing has been read after 23:00 yet: C's last 7 h are open, not zero
    assert details(c["production_count"]) == {"open_s": 25200.0, "shift": "C"}


def test_the_textbook_shift_with_15_minute_counters() -> None:
    """Counters every 15 minutes (gap_s 1200, so the quarter hours are not silences): the
    intervals end on 14:00 and 22:00, so B is the same. The old booking gave B (13:45, 14:00]'s 900
    parts and lost (21:45, 22:00]'s 765: 19406."""
    rows = production_counters(every_min=15)
    result = machine_kpis(
        inputs(rows, at(6), at(6, 0, NEXT), STATES, gap_s=1200), shifts_of_the_20th(), plant(), KpiOptions(gap_s=1200)
    )
    assert_textbook_shift_b(result)


def test_the_shift_is_exact_when_computed_on_its_own_as_the_reading_after_it_arrives() -> None:
    """The shift alone (range 14:00-22:00): its first interval opens at the 14:00 reading (prior),
    its last closes at 22:00 (the first reading after it). Before 22:00 has landed the shift is
    short of its last minute (51 parts, 1 reject), and says that 60 s are still open."""
    rows = production_counters(every_min=1)
    shift_b = shifts_of_the_20th().filter(pl.col("label") == "B")
    assert_textbook_shift_b(machine_kpis(inputs(rows, at(14), at(22), STATES), shift_b, plant(), KpiOptions()))

    landed = [r for r in rows if r[0] < at(22)]
    early = kpis(machine_kpis(inputs(landed, at(14), at(22), STATES), shift_b, plant(), KpiOptions()), at(14))
    assert (early["production_count"]["value"], early["good_count"]["value"]) == (19271 - 51, 18848 - 50)
    assert details(early["production_count"]) == {"open_s": 60.0, "shift": "B"}


# ----- energy at hour, shift and tariff boundaries ----------------------------------------------


def test_a_15_minute_meter_across_an_hour_a_shift_and_a_tariff_band() -> None:
    """Meter s-1 every 15 min, 13:00..15:00, +3, +4, +5, +6 (ending 13:15..14:00), +7, +8, +9, +10
    (ending 14:15..15:00). 14:00 is an hour, a shift (A -> B) and a band (off-peak -> peak) edge:
      hour 13 = 3 + 4 + 5 + 6 = 18 kWh, all off-peak: 18 x 0.125 = 2.25
      hour 14 = 7 + 8 + 9 + 10 = 34 kWh, all peak: 34 x 0.25 = 8.5
      shift A = 18 kWh (the 13:00 reading opens the series), shift B = 34 kWh, then open from 15:00
    The old booking priced the 14:00 reading's 6 kWh at peak in hour 14 and missed the 15:00 one:
    hour 14 = 6 + 7 + 8 + 9 = 30 kWh, cost 7.5."""
    meter, rows = 1000.0, [reading(at(13), "energy", 1000.0)]
    for step, kwh in enumerate((3, 4, 5, 6, 7, 8, 9, 10), start=1):
        meter += kwh
        rows.append(reading(at(13, 15 * step), "energy", meter))
    periods = pl.concat([hours(at(13), at(15)), shifts_of_the_20th()])
    result = machine_kpis(inputs(rows, at(6), at(6, 0, NEXT)), periods, plant(), KpiOptions(gap_s=1200))

    h13, h14 = kpis(result, at(13), period="hour"), kpis(result, at(14), period="hour")
    assert (h13["energy_kwh"]["value"], h13["energy_cost"]["value"]) == (18.0, 2.25)
    assert (h14["energy_kwh"]["value"], h14["energy_cost"]["value"]) == (34.0, 8.5)
    assert details(h13["energy_cost"]) == {"kwh_by_band": {"off_peak": 18.0}}
    assert details(h14["energy_cost"]) == {"kwh_by_band": {"peak": 34.0}}
    assert details(h14["energy_kwh"]) == {"counter_resets": 0, "increments": 4}
    assert h14["carbon_kg"]["value"] == 34 * 0.5
    assert kpis(result, at(6), period="shift")["energy_kwh"]["value"] == 18.0
    shift_b = kpis(result, at(14), period="shift")
    assert shift_b["energy_kwh"]["value"] == 34.0
    assert details(shift_b["energy_kwh"]) == {"counter_resets": 0, "increments": 4, "open_s": 7 * 3600.0, "shift": "B"}


def test_a_reading_not_on_the_boundary_is_split_in_proportion_to_time() -> None:
    """Energy 13:55 -> 14:15: +8 kWh over 1200 s; 300 s are hour 13's (off-peak), 900 s hour 14's (peak):
      hour 13: 8 x 300 / 1200 = 2 kWh, cost 2 x 0.125 = 0.25
      hour 14: 8 x 900 / 1200 = 6 kWh, cost 6 x 0.25 = 1.5
    count_total 13:58 -> 14:03: +10 over 300 s -> 10 x 120 / 300 = 4 and 10 x 180 / 300 = 6.
    An interval of a third: count_good 13:50 -> 14:20 +10 -> 10 x 600 / 1800 and 10 x 1200 / 1800."""
    rows = [
        reading(at(13, 55), "energy", 500.0),
        reading(at(14, 15), "energy", 508.0),
        reading(at(13, 58), "count_total", 40.0),
        reading(at(14, 3), "count_total", 50.0),
        reading(at(13, 50), "count_good", 30.0),
        reading(at(14, 20), "count_good", 40.0),
    ]
    result = machine_kpis(inputs(rows, at(13), at(15)), hours(at(13), at(15)), plant(), KpiOptions(gap_s=3600))
    assert values(result, at(13), "energy_kwh", "energy_cost", "production_count", "good_count") == {
        "energy_kwh": 2.0,
        "energy_cost": 0.25,
        "production_count": 4.0,
        "good_count": 10 * 600 / 1800,
    }
    assert values(result, at(14), "energy_kwh", "energy_cost", "production_count", "good_count") == {
        "energy_kwh": 6.0,
        "energy_cost": 1.5,
        "production_count": 6.0,
        "good_count": 10 * 1200 / 1800,
    }
    # a reading is counted (details) where it closes its interval: hour 13 got a share but no reading
    assert details(kpis(result, at(13))["energy_kwh"]) == {"counter_resets": 0, "increments": 0}
    # and nothing has been read after 14:15 yet: the hour's last 2700 s are open
    assert details(kpis(result, at(14))["energy_kwh"]) == {"counter_resets": 0, "increments": 1, "open_s": 2700.0}


def test_a_counter_reset_inside_a_period_and_across_a_boundary() -> None:
    """mc-01: 500 (13:00) -> 505 (+5) -> 2 at 13:30 (reset: the meter counts from 0 again, +2) -> 6
    (+4) -> 10 at 14:00 (+4): hour 13 = 5 + 2 + 4 + 4 = 15 kWh, one reset.
    mc-02: 700 (13:50) -> 3 at 14:10 (reset, +3 over 1200 s): 1.5 kWh to each hour; the reset is
    counted in hour 14, where its reading closed it."""
    rows = [
        reading(at(13), "energy", 500.0),
        reading(at(13, 15), "energy", 505.0),
        reading(at(13, 30), "energy", 2.0),
        reading(at(13, 45), "energy", 6.0),
        reading(at(14), "energy", 10.0),
        reading(at(13, 50), "energy", 700.0, machine="mc-02"),
        reading(at(14, 10), "energy", 3.0, machine="mc-02"),
    ]
    result = machine_kpis(inputs(rows, at(13), at(15)), hours(at(13), at(15)), plant(), KpiOptions(gap_s=3600))
    one = kpis(result, at(13))["energy_kwh"]
    assert (one["value"], details(one)) == (15.0, {"counter_resets": 1, "increments": 4})
    assert kpis(result, at(13), "mc-02")["energy_kwh"]["value"] == 1.5
    two = kpis(result, at(14), "mc-02")["energy_kwh"]
    assert (two["value"], details(two)["counter_resets"]) == (1.5, 1)


def test_an_increment_across_a_silence_is_spread_over_it() -> None:
    """The meter reads 100 at 13:00 and 13:30, then the machine is silent until 14:30 (112) and 15:00
    (112). The meter only knows the total: +12 kWh over the 3600 s silence -> 6 kWh to hour 13 and 6
    to hour 14, at their own bands (6 x 0.125 = 0.75, 6 x 0.25 = 1.5). The silence itself is no-data
    downtime: 1800 s in each hour (gap_s 1800: the meter reads every half hour). With max_interval_s
    below one hour the interval is not counted at all (the counter restarts from its next reading):
    0 kWh in both hours."""
    rows = [reading(at(h, m), "energy", kwh) for h, m, kwh in ((13, 0, 100.0), (13, 30, 100.0), (14, 30, 112.0))]
    rows.append(reading(at(15), "energy", 112.0))
    states = [state(at(12), "running")]
    result = machine_kpis(
        inputs(rows, at(13), at(15), states, gap_s=1800), hours(at(13), at(15)), plant(), KpiOptions(gap_s=1800)
    )
    assert values(result, at(13), "energy_kwh", "energy_cost", "downtime_s") == {
        "energy_kwh": 6.0,
        "energy_cost": 0.75,
        "downtime_s": 1800.0,
    }
    assert values(result, at(14), "energy_kwh", "energy_cost", "downtime_s") == {
        "energy_kwh": 6.0,
        "energy_cost": 1.5,
        "downtime_s": 1800.0,
    }
    short = machine_kpis(
        inputs(rows, at(13), at(15), states), hours(at(13), at(15)), plant(), KpiOptions(max_interval_s=3000)
    )
    assert [kpis(short, at(h))["energy_kwh"]["value"] for h in (13, 14)] == [0.0, 0.0]


def test_two_meters_on_one_machine_are_two_counters() -> None:
    """Energy sensors s-a (100 -> 130) and s-b (5000 -> 5004 -> 5010) on one machine, 14:00..15:00:
    30 + 10 = 40 kWh. Read as one series they would interleave (100, 5000, 5004, 130 ...: a 'reset'
    at every switch)."""
    rows = [
        reading(at(14), "energy", 100.0, "s-a"),
        reading(at(15), "energy", 130.0, "s-a"),
        reading(at(14), "energy", 5000.0, "s-b"),
        reading(at(14, 30), "energy", 5004.0, "s-b"),
        reading(at(15), "energy", 5010.0, "s-b"),
    ]
    result = machine_kpis(inputs(rows, at(14), at(15)), hours(at(14), at(15)), plant(), KpiOptions(gap_s=3600))
    energy = kpis(result, at(14))["energy_kwh"]
    assert (energy["value"], details(energy)) == (40.0, {"counter_resets": 0, "increments": 3})


def test_an_interval_is_counted_once_its_closing_reading_has_landed() -> None:
    """Hour 14 computed at 15:00 with readings 14:00 (0) and 14:30 (5) only: 5 kWh, 1800 s still
    open. The 15:00 reading (9) lands, the hour is recomputed: 9 kWh, nothing open. An hour with no
    reading closing in it yet is NULL with why, not 0."""
    landed = [reading(at(14), "energy", 0.0), reading(at(14, 30), "energy", 5.0)]
    early = kpis(machine_kpis(inputs(landed, at(14), at(15)), hours(at(14), at(15)), plant()), at(14))["energy_kwh"]
    assert (early["value"], details(early)) == (5.0, {"counter_resets": 0, "increments": 1, "open_s": 1800.0})

    complete = [*landed, reading(at(15), "energy", 9.0)]
    later = kpis(machine_kpis(inputs(complete, at(14), at(15)), hours(at(14), at(15)), plant()), at(14))["energy_kwh"]
    assert (later["value"], details(later)) == (9.0, {"counter_resets": 0, "increments": 2})

    nothing = kpis(machine_kpis(inputs(landed, at(15), at(16)), hours(at(15), at(16)), plant()), at(15))
    assert nothing["energy_kwh"]["value"] is None
    assert nothing["energy_kwh"]["null_reason"] == (
        "the energy counter's interval over the period has not closed yet (no reading after it)"
    )
    assert details(nothing["energy_kwh"]) == {"open_s": 3600.0}


# ----- demand ------------------------------------------------------------------------------------


def test_average_demand_is_time_weighted_over_irregular_samples() -> None:
    """One power series; a sample stands for the interval back to the previous one.
      stamps  13:55 14:00 14:04 14:10 14:15 14:25 14:50 14:55 15:05
      kW        10    20    30    90    40    50   100    60    24
      back s   -    300   240   360   300   600  1500   300   600
    median interval (300 + 360) / 2 = 330 s -> held up to max(300, 2 x 330) = 660 s: all but the
    25 min silence before 14:50, whose 100 kW counts only for the peak.
    Hour 14, held parts: 30 x 240 + 90 x 360 + 40 x 300 + 50 x 600 + 60 x 300 + 24 x 300 (15:05's
    interval clipped at 15:00) = 7200 + 32400 + 12000 + 30000 + 18000 + 7200 = 106800 kW s over
    240 + 360 + 300 + 600 + 300 + 300 = 2100 s -> 106800 / 2100 = 356 / 7 = 50.86 kW (the plain mean
    of the hour's samples, 390 / 7 = 55.71, over-weights the fast sampling around the 90 kW burst).
    Peak with a 15-minute demand interval (KPI_DEMAND_INTERVAL_S=900: held kW s / held s of each interval):
      14:00-14:15  30 x 240 + 90 x 360 + 40 x 300 = 51600 over 900 s -> 57.33 kW  (ends 14:15)
      14:15-14:30  50 x 600 = 30000 over 600 s (14:25-14:30 is the silence)  -> 50 kW
      14:30-14:45  nothing held;  14:45-15:00  60 x 300 + 24 x 300 = 25200 over 600 s -> 42 kW
    -> 51600 / 900 at 14:15, load factor (356 / 7) / (51600 / 900). The instantaneous peak
    (KPI_DEMAND_INTERVAL_S=0, the default) is the highest sample stamped in (14:00, 15:00]: 100 kW at 14:50.
    Hour 13: only (13:55, 14:00] is known: 20 kW for 300 s -> average 20, peak 20 at 14:00, load 1."""
    samples = [(13, 55, 10), (14, 0, 20), (14, 4, 30), (14, 10, 90), (14, 15, 40), (14, 25, 50), (14, 50, 100)]
    samples += [(14, 55, 60), (15, 5, 24)]
    rows = [reading(at(h, m), "power", float(kw)) for h, m, kw in samples]
    result = machine_kpis(inputs(rows, at(13), at(15)), hours(at(13), at(15)), plant(), BILLED)
    k = kpis(result, at(14))
    assert k["avg_demand_kw"]["value"] == 106800 / 2100 == 356 / 7
    assert details(k["avg_demand_kw"]) == {"held_s": 2100.0, "samples": 6}
    assert k["peak_demand_kw"]["value"] == 51600 / 900
    assert details(k["peak_demand_kw"]) == {"at": "2025-08-20 14:15:00+00:00", "samples": 6}
    assert k["load_factor"]["value"] == 356 / 7 / (51600 / 900)
    assert values(result, at(13), "avg_demand_kw", "peak_demand_kw", "load_factor") == {
        "avg_demand_kw": 20.0,
        "peak_demand_kw": 20.0,
        "load_factor": 1.0,
    }
    instantaneous = machine_kpis(
        inputs(rows, at(13), at(15)), hours(at(13), at(15)), plant(), KpiOptions(demand_interval_s=0)
    )
    k = kpis(instantaneous, at(14))
    assert k["peak_demand_kw"]["value"] == 100.0
    assert details(k["peak_demand_kw"]) == {"at": "2025-08-20 14:50:00+00:00", "samples": 6}
    assert k["load_factor"]["value"] == 356 / 7 / 100


def test_a_demand_interval_makes_peak_demand_the_highest_15_minute_average_not_a_one_minute_spike() -> None:
    """A press draws 100 kW, sampled every minute, with one 400 kW minute at 14:20 (a motor start).
    By default peak demand is the maximum power draw, 400 kW (load factor 105 / 400 = 0.2625). With
    KPI_DEMAND_INTERVAL_S=900 it is what a utility bills, the highest 15-minute average: 14:15-14:30
    holds 14 minutes at 100 and one at 400 -> (14 x 100 + 400) / 15 = 120 kW; the hour's average is
    (59 x 100 + 400) / 60 = 105 kW, its load factor 105 / 120 = 0.875."""
    rows = [reading(at(14, m), "power", 400.0 if m == 20 else 100.0) for m in range(61)]
    k = kpis(machine_kpis(inputs(rows, at(14), at(15)), hours(at(14), at(15)), plant(), BILLED), at(14))
    assert (k["peak_demand_kw"]["value"], details(k["peak_demand_kw"])["at"]) == (
        (14 * 100 * 60 + 400 * 60) / 900,
        "2025-08-20 14:30:00+00:00",
    ), "with a demand interval, peak demand was the highest momentary reading, not the interval average"
    assert k["avg_demand_kw"]["value"] == (59 * 100 + 400) / 60
    assert k["load_factor"]["value"] == (59 * 100 + 400) / 60 / ((14 * 100 * 60 + 400 * 60) / 900)
    k = kpis(machine_kpis(inputs(rows, at(14), at(15)), hours(at(14), at(15)), plant(), KpiOptions()), at(14))
    assert (k["peak_demand_kw"]["value"], details(k["peak_demand_kw"])["at"]) == (400.0, "2025-08-20 14:20:00+00:00")
    assert k["load_factor"]["value"] == (59 * 100 + 400) / 60 / 400


def test_a_15_minute_power_meter_is_held_and_its_last_sample_reaches_back_into_the_hour() -> None:
    """Power every 15 min at :10, :25, :40, :55 (median 900 s: held up to 1800 s with the default 300
    s gap). Hour 14: (14:00, 14:10] is the 14:10 sample's (600 s x 10), then 15 min each at 20, 30,
    40, and (14:55, 15:00] belongs to the 15:10 sample (300 s x 200):
      (6000 + 18000 + 27000 + 36000 + 60000) / 3600 = 147000 / 3600 = 40.83 kW
    Peak with a 15-minute demand interval: 14:45-15:00 holds 40 kW for 600 s and the 15:10 sample's
    200 kW for 300 s -> 84000 / 900 = 93.33 kW (14:00-14:15 13.33, then 23.33, 33.33), at 15:00.
    Instantaneous (KPI_DEMAND_INTERVAL_S=0, the default): the 15:10 sample's 200 kW is in force at the end of the
    hour, so it is the hour's peak (at the period end); the highest sample stamped inside the hour,
    40 kW, would sit below the average (load factor 1.02)."""
    samples = [(13, 55, 5), (14, 10, 10), (14, 25, 20), (14, 40, 30), (14, 55, 40), (15, 10, 200)]
    rows = [reading(at(h, m), "power", float(kw)) for h, m, kw in samples]
    result = machine_kpis(inputs(rows, at(14), at(15)), hours(at(14), at(15)), plant(), BILLED)
    k = kpis(result, at(14))
    assert k["avg_demand_kw"]["value"] == 147000 / 3600
    assert k["peak_demand_kw"]["value"] == 84000 / 900
    assert details(k["peak_demand_kw"]) == {"at": "2025-08-20 15:00:00+00:00", "samples": 4}
    assert k["load_factor"]["value"] == 147000 / 3600 / (84000 / 900)
    options = KpiOptions(demand_interval_s=0)
    k = kpis(machine_kpis(inputs(rows, at(14), at(15)), hours(at(14), at(15)), plant(), options), at(14))
    assert k["peak_demand_kw"]["value"] == 200.0
    assert details(k["peak_demand_kw"]) == {"at": "2025-08-20 15:00:00+00:00", "samples": 4}
    assert k["load_factor"]["value"] == 147000 / 3600 / 200


def test_several_power_sensors_on_one_machine_add_up() -> None:
    """s-a every 20 min (10 at 14:20, 30 at 14:40, 10 at 15:00) and s-b every 10 min (5, 20 at
    14:20, then 5), both from 14:00. Average = the sum of the series' averages:
      s-a (10 + 30 + 10) x 1200 / 3600 = 50 / 3; s-b (5 + 20 + 5 + 5 + 5 + 5) x 600 / 3600 = 7.5
    Peak with a 15-minute demand interval = the highest average of the two together (coincident):
      14:00-14:15  s-a 10;                          s-b (5 x 600 + 20 x 300) / 900 = 10   -> 20
      14:15-14:30  s-a (10 x 300 + 30 x 600) / 900; s-b (20 x 300 + 5 x 600) / 900 = 10   -> 33.33
      14:30-14:45  s-a (30 x 600 + 10 x 300) / 900; s-b 5 -> 28.33;  14:45-15:00  10 + 5 -> 15
      -> 33.33 kW, the interval ending 14:30. Instantaneous (the default), the highest total
      in force: 14:10 10 + 5, 14:20 10 + 20 = 30, 14:30 30 + 5 = 35, 14:40 35, 14:50 15 -> 35 at 14:30."""
    rows = [reading(at(14, m), "power", kw, "s-a") for m, kw in ((0, 10.0), (20, 10.0), (40, 30.0), (60, 10.0))]
    rows += [reading(at(14, 10 * i), "power", 20.0 if i == 2 else 5.0, "s-b") for i in range(7)]
    result = machine_kpis(inputs(rows, at(14), at(15)), hours(at(14), at(15)), plant(), BILLED)
    k = kpis(result, at(14))
    assert k["avg_demand_kw"]["value"] == 50 / 3 + 7.5
    assert details(k["avg_demand_kw"]) == {"held_s": 7200.0, "samples": 9, "series": 2}
    assert k["peak_demand_kw"]["value"] == 21000 / 900 + 9000 / 900
    assert details(k["peak_demand_kw"])["at"] == "2025-08-20 14:30:00+00:00"
    assert k["load_factor"]["value"] == (50 / 3 + 7.5) / (21000 / 900 + 9000 / 900)
    options = KpiOptions(demand_interval_s=0)
    k = kpis(machine_kpis(inputs(rows, at(14), at(15)), hours(at(14), at(15)), plant(), options), at(14))
    assert k["peak_demand_kw"]["value"] == 35.0
    assert details(k["peak_demand_kw"])["at"] == "2025-08-20 14:30:00+00:00"
    assert k["load_factor"]["value"] == (50 / 3 + 7.5) / 35


def test_the_demand_interval_setting_reaches_the_kpi_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """KPI_DEMAND_INTERVAL_S is read from the environment into the assets' KpiOptions; 0 (the maximum
    power draw) by default; a length that does not divide an hour is refused by name (an hour and its
    day would cut different intervals)."""
    from analytics_platform.defs.kpis.assets import kpi_options
    from analytics_platform.settings import PlatformSettings

    assert kpi_options(PlatformSettings()).demand_interval_s == 0
    monkeypatch.setenv("KPI_DEMAND_INTERVAL_S", "900")
    assert kpi_options(PlatformSettings()).demand_interval_s == 900
    monkeypatch.setenv("KPI_DEMAND_INTERVAL_S", "700")
    with pytest.raises(ValueError, match="KPI_DEMAND_INTERVAL_S must divide an hour"):
        PlatformSettings()
