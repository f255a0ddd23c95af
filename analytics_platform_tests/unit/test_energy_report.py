"""The energy performance report's hour-by-hour comparison (api/routes/reports.py): which stored
hours the active baseline judges, and what it expects of them, by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics_platform.api.routes.reports import excluded, hour_energy
from analytics_platform.transforms.kpi_catalog import Part

T0 = datetime(2026, 3, 2, tzinfo=UTC)
MODEL = {
    "target": "energy_kwh",
    "drivers": ["production_count"],
    "coefficients": {"intercept": 0.5, "production_count": 0.5},
    "p_values": {},
    "std_errors": {},
    "r2": 0.9,
    "adj_r2": 0.9,
    "rmse": 0.4,
    "mae": 0.3,
    "n": 1000,
    "excluded": 0,
    "warning": None,
}


def stored(kwh: float | None, units: float | None, fault_s: float = 0.0, maintenance_s: float = 0.0) -> dict:
    return {
        "energy_kwh": Part(kwh, {}, 3600.0),
        "production_count": Part(units, {}, 3600.0),
        "fault_time_s": Part(fault_s, {}, 3600.0),
        "planned_downtime_s": Part(maintenance_s, {"maintenance_s": maintenance_s, "planned_stop_s": 0.0}, 3600.0),
    }


def test_fault_and_maintenance_hours_are_not_judged() -> None:
    assert not excluded(stored(3.0, 2.0))
    assert excluded(stored(3.0, 2.0, fault_s=60.0))
    assert excluded(stored(3.0, 2.0, maintenance_s=600.0))


def test_expected_energy_per_hour_from_the_active_model() -> None:
    hours = [
        (T0, stored(3.0, 2.0)),  # expects 0.5 + 0.5 x 2 = 1.5
        (T0 + timedelta(hours=1), stored(2.0, 4.0)),  # expects 2.5
        (T0 + timedelta(hours=2), stored(9.0, 4.0, fault_s=60.0)),  # a fault: not compared
        (T0 + timedelta(hours=3), stored(2.0, None)),  # no driver: not compared
        (T0 + timedelta(hours=4), stored(None, 4.0)),  # no energy: not compared
    ]
    got = [(h.start, h.actual, h.expected) for h in hour_energy(hours, MODEL)]
    assert got == [
        (T0, 3.0, 1.5),
        (T0 + timedelta(hours=1), 2.0, 2.5),
        (T0 + timedelta(hours=2), None, None),
        (T0 + timedelta(hours=3), None, None),
        (T0 + timedelta(hours=4), None, None),
    ]
    assert hour_energy(hours, None) == []
