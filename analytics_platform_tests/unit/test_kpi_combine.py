"""KPIs over a longer range combined from stored periods (kpi_catalog.combine) and the tenant's
local calendar (kpi_periods): every expected value below is worked out by hand in the comments,
never by running the code under test."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from analytics_platform.transforms import kpi_catalog as K
from analytics_platform.transforms import kpi_periods as kp
from analytics_platform.transforms.kpi_catalog import CATALOGUE, Part


def hour(**values: tuple[float | None, dict]) -> dict[str, Part]:
    """One stored hour of one machine: KPI name -> (value, details) as the pipeline writes them."""
    return {name: Part(value, details, 3600.0) for name, (value, details) in values.items()}


# Two hours of one machine, with the components the pipeline stores in details.
H1 = hour(
    energy_kwh=(10.0, {"increments": 60, "counter_resets": 0}),
    energy_cost=(1.5, {"kwh_by_band": {"peak": 5.0, "off_peak": 5.0}}),
    carbon_kg=(4.5, {"kg_co2_per_kwh": 0.45}),
    production_count=(4.0, {}),
    good_count=(3.0, {}),
    sec_kwh_per_unit=(2.5, {"energy_kwh": 10.0, "units": 4.0}),
    peak_demand_kw=(50.0, {"at": "2026-03-02 00:20:00+00:00", "samples": 60}),
    avg_demand_kw=(20.0, {"held_s": 3600.0, "samples": 60}),
    load_factor=(0.4, {}),
    run_time_s=(1800.0, {}),
    planned_downtime_s=(0.0, {"planned_stop_s": 0.0, "maintenance_s": 0.0, "unscheduled_s": 0.0}),
    availability=(0.5, {"run_time_s": 1800.0, "planned_busy_s": 3600.0, "unknown_s": 0.0}),
    performance=(240 / 1800, {"ideal_cycle_time_s": 60.0}),
    quality=(0.75, {"good": 3.0, "total": 4.0}),
    oee=(0.5 * 240 / 1800 * 0.75, {"ideal_cycle_time_s": 60.0, "planned_busy_s": 3600.0}),
    production_rate_per_h=(8.0, {}),
    data_completeness_pct=(50.0, {"slots": 60, "slots_with_data": 30, "slot_s": 60}),
)
H2 = hour(
    energy_kwh=(30.0, {"increments": 60, "counter_resets": 1}),
    energy_cost=(6.0, {"kwh_by_band": {"peak": 30.0}}),
    carbon_kg=(13.5, {"kg_co2_per_kwh": 0.45}),
    production_count=(6.0, {}),
    good_count=(6.0, {}),
    sec_kwh_per_unit=(5.0, {"energy_kwh": 30.0, "units": 6.0}),
    peak_demand_kw=(80.0, {"at": "2026-03-02 01:40:00+00:00", "samples": 60}),
    avg_demand_kw=(40.0, {"held_s": 1800.0, "samples": 30}),
    load_factor=(0.5, {}),
    run_time_s=(3000.0, {}),
    planned_downtime_s=(600.0, {"planned_stop_s": 600.0, "maintenance_s": 0.0, "unscheduled_s": 0.0}),
    availability=(1.0, {"run_time_s": 3000.0, "planned_busy_s": 3000.0, "unknown_s": 0.0}),
    performance=(360 / 3000, {"ideal_cycle_time_s": 60.0}),
    quality=(1.0, {"good": 6.0, "total": 6.0}),
    oee=(360 / 3000, {"ideal_cycle_time_s": 60.0, "planned_busy_s": 3000.0}),
    production_rate_per_h=(7.2, {}),
    data_completeness_pct=(100.0, {"slots": 60, "slots_with_data": 60, "slot_s": 60}),
)
WANTED = [K.BY_NAME[name] for name in H1] + [K.IDLE_TIME_S]


def values(combined: dict[str, K.Combined]) -> dict[str, float | None]:
    return {name: c.value for name, c in combined.items()}


def test_one_machine_combines_each_kpi_by_its_rule() -> None:
    got = K.combine(WANTED, [H1, H2])
    assert values(got) == {
        "energy_kwh": 40.0,  # 10 + 30
        "energy_cost": 7.5,  # 1.5 + 6
        "carbon_kg": 18.0,  # 4.5 + 13.5
        "production_count": 10.0,
        "good_count": 9.0,
        "sec_kwh_per_unit": 4.0,  # 40 kWh / 10 units, not the mean of 2.5 and 5 (3.75)
        "peak_demand_kw": 80.0,
        "avg_demand_kw": pytest.approx(80 / 3, rel=1e-15),  # (20 x 3600 + 40 x 1800) / 5400
        "load_factor": pytest.approx(1 / 3, rel=1e-15),  # (80/3) / 80
        "run_time_s": 4800.0,
        "planned_downtime_s": 600.0,
        "availability": pytest.approx(8 / 11, rel=1e-15),  # 4800 / 6600
        "performance": 0.125,  # 60 x 10 / 4800
        "quality": 0.9,  # 9 / 10
        "oee": 540 / 6600,  # 9 good x 60 s / 6600 s planned = 8/11 x 1/8 x 9/10
        "production_rate_per_h": 7.5,  # 10 / 4800 s x 3600
        "data_completeness_pct": 75.0,  # 90 of 120 slots
        "idle_time_s": None,  # no stored row: nothing to combine
    }
    assert got["peak_demand_kw"].details == {"at": "2026-03-02 01:40:00+00:00", "parts": 2}
    assert got["energy_kwh"].details == {"parts": 2, "parts_with_value": 2, "increments": 120, "counter_resets": 1}
    assert got["energy_cost"].details["kwh_by_band"] == {"peak": 35.0, "off_peak": 5.0}
    assert "kg_co2_per_kwh" not in got["carbon_kg"].details  # a factor does not add up
    assert got["planned_downtime_s"].details["planned_stop_s"] == 600.0
    assert got["sec_kwh_per_unit"].details == {"numerator": 40.0, "denominator": 10.0, "parts": 2, "parts_used": 2}
    assert got["avg_demand_kw"].details == {"held_s": 5400.0, "parts": 2}
    # sum(good x ideal) / sum(planned busy time): (3 x 60 + 6 x 60) / (3600 + 3000)
    assert got["oee"].details == {"numerator": 540.0, "denominator": 6600.0, "parts": 2, "parts_used": 2}
    assert got["idle_time_s"].null_reason == "no idle_time_s in the range"


def test_peak_ties_keep_the_first_time_and_nulls_carry_reasons() -> None:
    late = hour(peak_demand_kw=(80.0, {"at": "2026-03-02 05:00:00+00:00"}))
    early = hour(peak_demand_kw=(80.0, {"at": "2026-03-02 01:00:00+00:00"}))
    got = K.combine([K.PEAK_DEMAND_KW], [late, early])["peak_demand_kw"]
    assert (got.value, got.details["at"]) == (80.0, "2026-03-02 01:00:00+00:00")

    why = "no energy counter readings in the period"
    silent = {"energy_kwh": Part(None, {}, 3600.0, why)}
    got = K.combine([K.ENERGY_KWH, K.SEC_KWH_PER_UNIT], [silent, silent])
    assert (got["energy_kwh"].value, got["energy_kwh"].null_reason) == (None, why)
    assert got["sec_kwh_per_unit"].value is None


def test_ratio_with_zero_denominator_and_oee_without_a_component() -> None:
    idle = hour(
        energy_kwh=(2.0, {}),
        production_count=(0.0, {}),
        sec_kwh_per_unit=(None, {"energy_kwh": 2.0, "units": 0.0}),
    )
    got = K.combine([K.SEC_KWH_PER_UNIT], [idle, idle])["sec_kwh_per_unit"]
    assert (got.value, got.null_reason) == (None, "the range's production_count is 0")
    # OEE alone needs only its own terms: (3 + 6) good x 60 s / (3600 + 3000) s
    got = K.combine([K.OEE], [H1, H2])["oee"]
    assert got.value == 540 / 6600
    # an hour of a machine without an ideal cycle time stores OEE NULL and no ideal: its reason carries
    why = "performance: no ideal cycle time for the machine (machine_metadata)"
    no_ideal = {**H1, "oee": Part(None, {"ideal_cycle_time_s": None, "planned_busy_s": 3600.0}, 3600.0, why)}
    got = K.combine([K.OEE], [no_ideal, no_ideal])["oee"]
    assert (got.value, got.null_reason) == (None, why)


def test_ratios_sum_only_the_periods_where_both_terms_are_known() -> None:
    # a second machine-hour with units but no good-count counter and no ideal cycle time
    blind = hour(
        production_count=(100.0, {}),
        good_count=(None, {}),
        quality=(None, {"good": None, "total": 100.0}),
        run_time_s=(3600.0, {}),
        performance=(None, {"ideal_cycle_time_s": None}),
    )
    got = K.combine([K.QUALITY, K.PERFORMANCE], [H1, H2, blind], machines=2)
    assert got["quality"].value == 0.9  # 9 / 10: its 100 units of unknown quality are left out
    assert got["quality"].details == {"numerator": 9.0, "denominator": 10.0, "parts": 3, "parts_used": 2}
    assert got["performance"].value == 0.125  # 600 / 4800: nor does its run time count


def test_machines_together_only_where_kpis_add_up() -> None:
    # two machines, one hour each: H1 and H2 are now different machines
    got = K.combine(WANTED, [H1, H2], machines=2)
    assert got["energy_kwh"].value == 40.0
    assert got["sec_kwh_per_unit"].value == 4.0
    assert got["oee"].value == pytest.approx(9 / 110, rel=1e-15)
    assert got["data_completeness_pct"].value == 75.0
    for name, kind in (("peak_demand_kw", "max_with_time"), ("avg_demand_kw", "time_weighted_mean")):
        assert got[name].value is None
        assert got[name].details == {"adds_up": False, "machines": 2}
        assert got[name].null_reason.startswith("does not add up across machines: "), kind
    assert got["load_factor"].null_reason == (
        "does not add up across machines: its components do not add up across machines"
    )
    assert {k.name for k in CATALOGUE if not K.adds_up(k, K.BY_NAME)} == {
        "peak_demand_kw",
        "avg_demand_kw",
        "load_factor",
    }


def test_drivers_weigh_by_period_length() -> None:
    driver = K.driver_kpi("outdoor_temp")
    parts = [
        {driver.name: Part(10.0, {}, 3600.0)},
        {driver.name: Part(20.0, {}, 1800.0)},
        {driver.name: Part(None, {}, 3600.0, "no outdoor_temp readings in the period")},
    ]
    got = K.combine([driver], parts)[driver.name]
    assert got.value == pytest.approx(40 / 3, rel=1e-15)  # (10 x 3600 + 20 x 1800) / 5400
    assert got.details == {"seconds": 5400.0, "parts": 3}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "zone", "start", "end", "expected"),
    [
        # Berlin's March 2026 holds the spring change (29 March): 743 hours, 23:00Z to 22:00Z
        ("month", "Europe/Berlin", utc(2026, 3, 1), utc(2026, 4, 1), [(utc(2026, 2, 28, 23), utc(2026, 3, 31, 22))]),
        # the same month asked for in local midnights
        (
            "month",
            "Europe/Berlin",
            utc(2026, 2, 28, 23),
            utc(2026, 3, 31, 22),
            [(utc(2026, 2, 28, 23), utc(2026, 3, 31, 22))],
        ),
        # New York's March (change on the 8th): 05:00Z to 04:00Z; a UTC-midnight query still means March only
        ("month", "America/New_York", utc(2026, 3, 1), utc(2026, 4, 1), [(utc(2026, 3, 1, 5), utc(2026, 4, 1, 4))]),
        # October in Berlin: 745 hours
        ("month", "Europe/Berlin", utc(2026, 10, 1), utc(2026, 11, 1), [(utc(2026, 9, 30, 22), utc(2026, 10, 31, 23))]),
        # ISO week 2026-W01 starts on Monday 29 December 2025
        (
            "week",
            "UTC",
            utc(2025, 12, 29),
            utc(2026, 1, 12),
            [(utc(2025, 12, 29), utc(2026, 1, 5)), (utc(2026, 1, 5), utc(2026, 1, 12))],
        ),
        # a range starting mid-week holds only the weeks starting in it
        ("week", "UTC", utc(2025, 12, 31), utc(2026, 1, 12), [(utc(2026, 1, 5), utc(2026, 1, 12))]),
        ("year", "Asia/Tokyo", utc(2026, 1, 1), utc(2027, 1, 1), [(utc(2025, 12, 31, 15), utc(2026, 12, 31, 15))]),
    ],
)
def test_calendar_periods_in_local_time(kind: str, zone: str, start: datetime, end: datetime, expected: list) -> None:
    assert [(p.start, p.end) for p in kp.calendar_periods(kind, start, end, zone)] == expected


def test_calendar_labels_and_hours() -> None:
    (march,) = kp.calendar_periods("month", utc(2026, 3, 1), utc(2026, 4, 1), "Europe/Berlin")
    assert (march.label, (march.end - march.start).total_seconds() / 3600) == ("2026-03", 743.0)
    weeks = kp.calendar_periods("week", utc(2025, 12, 29), utc(2026, 1, 12), "UTC")
    assert [w.label for w in weeks] == ["2026-W01", "2026-W02"]
    (year,) = kp.calendar_periods("year", utc(2026, 1, 1), utc(2027, 1, 1), "UTC")
    assert year.label == "2026"


def test_local_days_tile_the_range_across_dst() -> None:
    days = kp.local_days(utc(2026, 3, 27, 23), utc(2026, 3, 30, 22), "Europe/Berlin")
    assert [(d.label, (d.end - d.start).total_seconds() / 3600) for d in days] == [
        ("2026-03-28", 24.0),
        ("2026-03-29", 23.0),  # the spring change
        ("2026-03-30", 24.0),
    ]
    # a range cut mid-day keeps the cut
    days = kp.local_days(utc(2026, 3, 28, 12), utc(2026, 3, 29, 5), "Europe/Berlin")
    assert [(d.start, d.end) for d in days] == [
        (utc(2026, 3, 28, 12), utc(2026, 3, 28, 23)),
        (utc(2026, 3, 28, 23), utc(2026, 3, 29, 5)),
    ]


def test_cusum_of_deviations_by_hand() -> None:
    steps = kp.local_days(utc(2026, 3, 1), utc(2026, 3, 4), "UTC")
    hours = [
        kp.HourEnergy(utc(2026, 3, 1, 0), 12.0, 10.0),  # +2
        kp.HourEnergy(utc(2026, 3, 1, 1), 9.0, 10.0),  # -1
        kp.HourEnergy(utc(2026, 3, 2, 0), 20.0, None),  # not comparable: left out
        kp.HourEnergy(utc(2026, 3, 3, 5), 7.0, 10.0),  # -3
    ]
    got = [
        (s.label, s.actual_kwh, s.expected_kwh, s.deviation_kwh, s.deviation_pct, s.cusum_kwh, s.hours)
        for s in kp.cusum(hours, steps)
    ]
    assert got == [
        ("2026-03-01", 21.0, 20.0, 1.0, 5.0, 1.0, 2),
        ("2026-03-02", 0.0, 0.0, 0.0, None, 1.0, 0),
        ("2026-03-03", 7.0, 10.0, -3.0, -30.0, -2.0, 1),
    ]


IDLE = hour(
    production_count=(0.0, {}),
    good_count=(0.0, {}),
    run_time_s=(0.0, {}),
    availability=(0.0, {"run_time_s": 0.0, "planned_busy_s": 3600.0, "unknown_s": 0.0}),
    performance=(None, {"ideal_cycle_time_s": 60.0}),
    quality=(None, {"good": 0.0, "total": 0.0}),
    oee=(0.0, {"ideal_cycle_time_s": 60.0, "planned_busy_s": 3600.0}),
)


def test_oee_over_a_range_is_good_x_ideal_over_planned_time_and_idle_hours_count_zero() -> None:
    # a shift of two idle hours made nothing in 7200 s of planned time: OEE 0, not NULL
    got = K.combine([K.OEE], [IDLE, IDLE])["oee"]
    assert (got.value, got.null_reason) == (0.0, None)
    # one idle hour beside H1: (3 x 60) / (3600 + 3600) = 0.025, where A x P x Q of the combined parts
    # would agree only because the idle hour's 0 / 0 parts add nothing
    got = K.combine([K.OEE], [H1, IDLE])["oee"]
    assert got.value == 180 / 7200
