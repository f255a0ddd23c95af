"""The known rows of the /v1 tests, each with the JSON item the API must serve for it, and a valid
request of each listing (AGG, KPI, ...). Tenants t1 and t2 use the SAME factory, machine and sensor
ids, so only the tenant filter keeps them apart. `insert_*` writes one data set into a test's
database (the fixtures of integration/conftest.py call them).

GET /v1/agg, hand-computed (tenant t1, f1/m1, metric temp, stored window 3600, 2025-08-20):

    hour   sensor  readings     n  sum  mean  Σx²  stddev
    00:00  s1      2, 6         2    8   4     40   √8
    01:00  s1      1, 2, 3, 4   4   10   2.5   30   √(5/3)
    01:00  s2      10, 20       2   30  15    500   √50
    05:00  s1      4, 3         2    7   3.5   25   √0.5
    05:00  s2      7            1    7   7     49   null
    23:00  s1      5            1    5   5     25   null
    plus s1 at 2025-08-19 23:00 (100) and at 2025-08-21 00:00 (9)

    day 2025-08-20  s1: n 9, sum 30, avg 30/9, min 1, max 6, first 2 (00:00), last 5 (23:00),
                        stddev √((120 - 30²/9) / 8) = √2.5
                    s2: n 3, sum 37, avg 37/3, min 7, max 20, first 10, last 7,
                        stddev √((549 - 37²/3) / 2) = √(139/3)
    7200 s at 00:00 s1: hours 00 + 01: n 6, sum 18, avg 3, min 1, max 6, first 2, last 4,
                        stddev √((70 - 18²/6) / 5) = √3.2
                    s2: hour 01: n 2, sum 30, avg 15, stddev √((500 - 30²/2) / 1) = √50
    7200 s at 04:00 s1: hour 05 (stddev √((25 - 7²/2) / 1) = √0.5); s2: hour 05 (stddev null)
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import psycopg
import pytest
from psycopg.types.json import Jsonb

from analytics_platform.results.aggregates import recompute_aggregates
from analytics_platform.results.kpis import replace_kpis
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms import machine_kpis as mk
from analytics_platform_tests.support.api import HOUR, at, insert, iso, jsonable
from analytics_platform_tests.support.stack import DatabaseHandle

# (hour, sensor, n, sum, avg, min, max, stddev, first, last, p50, p95) of the stored 3600 s window, tenant t1
T1_HOURS = [
    (-1, "s1", 1, 100.0, 100.0, 100.0, 100.0, None, 100.0, 100.0, 100.0, 100.0),
    (0, "s1", 2, 8.0, 4.0, 2.0, 6.0, math.sqrt(8), 2.0, 6.0, 4.0, 5.8),
    (1, "s1", 4, 10.0, 2.5, 1.0, 4.0, math.sqrt(5 / 3), 1.0, 4.0, 2.5, 3.85),
    (1, "s2", 2, 30.0, 15.0, 10.0, 20.0, math.sqrt(50), 10.0, 20.0, 15.0, 19.5),
    (5, "s1", 2, 7.0, 3.5, 3.0, 4.0, math.sqrt(0.5), 4.0, 3.0, 3.5, 3.95),
    (5, "s2", 1, 7.0, 7.0, 7.0, 7.0, None, 7.0, 7.0, 7.0, 7.0),
    (23, "s1", 1, 5.0, 5.0, 5.0, 5.0, None, 5.0, 5.0, 5.0, 5.0),
    (24, "s1", 1, 9.0, 9.0, 9.0, 9.0, None, 9.0, 9.0, 9.0, 9.0),
]


def agg_row(hour: float, sensor: str, *values: Any, window_s: int = 3600, **where: str) -> dict:
    n, total, avg, lo, hi, stddev, first, last, p50, p95 = values
    return {
        "bucket_start": at(hour),
        "bucket_end": at(hour) + timedelta(seconds=window_s),
        "window_s": window_s,
        "tenant_id": where.get("tenant", "t1"),
        "factory_id": where.get("factory", "f1"),
        "machine_id": where.get("machine", "m1"),
        "sensor_id": sensor,
        "metric": where.get("metric", "temp"),
        "count_n": n,
        "sum_v": total,
        "avg_v": avg,
        "min_v": lo,
        "max_v": hi,
        "stddev_v": stddev,
        "first_v": first,
        "last_v": last,
        "p50_v": p50,
        "p95_v": p95,
    }


def one_value(hour: float, sensor: str, value: float, **where: Any) -> dict:
    """A bucket holding a single reading."""
    return agg_row(hour, sensor, 1, value, value, value, value, None, value, value, value, value, **where)


def bucket(start: datetime, window_s: int, sensor: str, *values: Any, tenant: str = "t1") -> dict:
    """The JSON item of a bucket: count, sum, avg, min, max, stddev, first, last[, p50, p95]."""
    n, total, avg, lo, hi, stddev, first, last, *percentiles = values
    p50, p95 = percentiles or (None, None)
    return {
        "bucket_start": iso(start),
        "bucket_end": iso(start + timedelta(seconds=window_s)),
        "window_s": window_s,
        "tenant_id": tenant,
        "factory_id": "f1",
        "machine_id": "m1",
        "sensor_id": sensor,
        "metric": "temp",
        "count": n,
        "sum": total,
        "avg": avg,
        "min": lo,
        "max": hi,
        "stddev": stddev,
        "first": first,
        "last": last,
        "p50": p50,
        "p95": p95,
        "provisional": False,
    }


def stored(hour: float, sensor: str) -> dict:
    (row,) = [r for r in T1_HOURS if r[:2] == (hour, sensor)]
    return bucket(at(hour), 3600, sensor, *row[2:])


STORED_0_TO_6 = [stored(0, "s1"), stored(1, "s1"), stored(1, "s2"), stored(5, "s1"), stored(5, "s2")]
DAY_S1 = bucket(at(0), 86400, "s1", 9, 30.0, 30 / 9, 1.0, 6.0, pytest.approx(math.sqrt(2.5), rel=1e-12), 2.0, 5.0)
DAY_S2 = bucket(at(0), 86400, "s2", 3, 37.0, 37 / 3, 7.0, 20.0, pytest.approx(math.sqrt(139 / 3), rel=1e-12), 10.0, 7.0)
DAY_BEFORE_S1 = bucket(at(-24), 86400, "s1", 1, 100.0, 100.0, 100.0, 100.0, None, 100.0, 100.0)
DAY_AFTER_S1 = bucket(at(24), 86400, "s1", 1, 9.0, 9.0, 9.0, 9.0, None, 9.0, 9.0)
TWO_HOURS = [
    bucket(at(0), 7200, "s1", 6, 18.0, 3.0, 1.0, 6.0, pytest.approx(math.sqrt(3.2), rel=1e-12), 2.0, 4.0),
    bucket(at(0), 7200, "s2", 2, 30.0, 15.0, 10.0, 20.0, pytest.approx(math.sqrt(50), rel=1e-12), 10.0, 20.0),
    bucket(at(4), 7200, "s1", 2, 7.0, 3.5, 3.0, 4.0, pytest.approx(math.sqrt(0.5), rel=1e-12), 4.0, 3.0),
    bucket(at(4), 7200, "s2", 1, 7.0, 7.0, 7.0, 7.0, None, 7.0, 7.0),
]
T2_DAY = bucket(at(0), 86400, "s1", 2, 147.0, 73.5, 70.0, 77.0, pytest.approx(math.sqrt(24.5), rel=1e-12), 70.0, 77.0)
T2_DAY["tenant_id"] = "t2"
AGG_QUERY = {"factory_id": "f1", "machine_id": "m1", "metric": "temp"}


def insert_agg_data(database: DatabaseHandle) -> None:
    rows = [agg_row(*r) for r in T1_HOURS]
    rows += [
        # another window, machine, metric, factory and tenant at the same hours and sensors
        agg_row(1, "s1", 1, 1000.0, 1000.0, 1000.0, 1000.0, None, 1000.0, 1000.0, 1000.0, 1000.0, window_s=60),
        agg_row(1, "s1", 1, 1001.0, 1001.0, 1001.0, 1001.0, None, 1001.0, 1001.0, 1001.0, 1001.0, window_s=300),
        one_value(1, "s1", 500.0, machine="m2"),
        one_value(1, "s1", 60.0, metric="humidity"),
        one_value(1, "s1", 400.0, factory="f2"),
        one_value(0, "s1", 70.0, tenant="t2"),
        one_value(1, "s1", 77.0, tenant="t2"),
    ]
    insert(database, "analytics_agg", rows)


LAB_AGG_QUERY = {"factory_id": "f1", "analyte": "Moisture", "window_s": 3600}


def lab_bucket(hour: float, station: str, n: int, total: float, *, tenant: str = "t1", **more: Any) -> dict:
    """A stored lab bucket of one value repeated `n` times (the statistics follow from it)."""
    value = total / n
    return {
        "bucket_start": at(hour),
        "bucket_end": at(hour) + timedelta(hours=1),
        "window_s": more.get("window_s", 3600),
        "tenant_id": tenant,
        "factory_id": more.get("factory", "f1"),
        "station_id": station,
        "analyte": more.get("analyte", "Moisture"),
        "count_n": n,
        "sum_v": total,
        **{f"{s}_v": value for s in ("avg", "min", "max", "first", "last", "p50", "p95")},
        "stddev_v": 0.0 if n > 1 else None,
    }


def insert_lab_agg_data(database: DatabaseHandle) -> None:
    """Moisture per hour of two stations in t1 and of the SAME factory and station ids in t2, with
    limits that tell the tenants apart: t2 has a limit of its own factory f1 (which would win over
    t1's tenant-wide one if the tenant filter slipped)."""
    insert(
        database,
        "analytics_lab_agg",
        [
            lab_bucket(3, "lab-01", 4, 50.0),
            lab_bucket(3, "lab-02", 1, 13.2),
            lab_bucket(4, "lab-01", 2, 25.0),
            lab_bucket(4, "lab-01", 1, 6.8, analyte="pH"),
            lab_bucket(4, "lab-01", 1, 99.0, factory="f2"),
            lab_bucket(4, "lab-01", 5, 60.0, window_s=300),
            lab_bucket(3, "lab-01", 2, 102.0, tenant="t2"),
        ],
    )
    limit = {"scope": "analyte", "name": "Moisture", "unit": "%"}
    insert(
        database,
        "analytics_spec_limits",
        [
            {**limit, "tenant_id": "t1", "factory_id": "*", "lower_limit": 11.5, "upper_limit": 13.5, "target": 12.5},
            {**limit, "tenant_id": "t2", "factory_id": "f1", "lower_limit": 40.0, "upper_limit": 60.0, "target": 50.0},
        ],
    )


def event(hour: float, machine: str, event_type: str, subject: str, n: int, *rates: Any, **more: Any) -> dict:
    """An event rollup as served: pass_count, fail_count, pass_rate, fail_rate, uptime_pct, details."""
    passed, failed, pass_rate, fail_rate, uptime, details = (*rates, None, None, None, None, None, None)[:6]
    window_s = more.get("window_s", 3600)
    return {
        "bucket_start": at(hour),
        "bucket_end": at(hour) + timedelta(seconds=window_s),
        "window_s": window_s,
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": more.get("factory", "f1"),
        "machine_id": machine,
        "event_type": event_type,
        "subject": subject,
        "count": n,
        "pass_count": passed,
        "fail_count": failed,
        "pass_rate": pass_rate,
        "fail_rate": fail_rate,
        "uptime_pct": uptime,
        "details": details,
    }


T1_EVENTS = [
    event(3, "m1", "device_health", "", 12, None, None, None, None, 87.5, {"offline_s": 450.0}),
    event(3, "m1", "lab_result", "ph", 4, 3, 1, 0.75, 0.25),
    event(3, "m1", "lab_result", "viscosity", 2, 2, 0, 1.0, 0.0),
    event(3, "m2", "device_health", "", 6, None, None, None, None, 100.0),
    event(4, "m1", "device_health", "", 10, None, None, None, None, 50.0),
    event(4, "m1", "sweep_batch", "thickness", 8, 6, 2, 0.75, 0.25, None, {"batches": ["b1", "b2"], "worst": 2.75}),
]
T2_EVENTS = [event(3, "m1", "device_health", "", 99, None, None, None, None, 12.5, tenant="t2")]
EVENT_QUERY = {"factory_id": "f1", "window_s": 3600, "start": iso(at(3)), "end": iso(at(5))}
EVENT_COLUMNS = {"count": "count_n", "pass_count": "pass_n", "fail_count": "fail_n"}


def insert_event_data(database: DatabaseHandle) -> None:
    noise = [
        event(0, "m1", "device_health", "", 22, None, None, None, None, 68.75, window_s=86400),
        event(3, "m1", "device_health", "", 1, None, None, None, None, 0.0, window_s=300),
        event(3, "m1", "device_health", "", 7, None, None, None, None, 25.0, factory="f2"),
        event(5, "m1", "device_health", "", 3, None, None, None, None, 75.0),  # at the end: excluded
        event(2, "m1", "device_health", "", 3, None, None, None, None, 75.0),  # before the start
    ]
    rows = [{EVENT_COLUMNS.get(k, k): v for k, v in r.items()} for r in T1_EVENTS + T2_EVENTS + noise]
    insert(database, "analytics_event_rollup", rows)


def kpi(hour: float, machine: str, name: str, value: float | None, unit: str | None, **more: Any) -> dict:
    period = more.get("period", "hour")
    length = {"hour": HOUR, "shift": 8 * HOUR, "day": timedelta(days=1)}[period]
    return {
        "period_start": at(hour),
        "period_end": at(hour) + length,
        "period": period,
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": more.get("factory", "f1"),
        "machine_id": machine,
        "kpi": name,
        "value": value,
        "unit": unit,
        "null_reason": more.get("null_reason"),
        "details": more.get("details"),
    }


T1_KPIS = [
    kpi(3, "m1", "availability", 0.875, "ratio", details={"planned_busy_s": 3600.0, "run_time_s": 3150.0}),
    kpi(3, "m1", "oee", 0.5, "ratio", details={"availability": 0.875, "performance": 0.625, "quality": 0.9}),
    kpi(
        3,
        "m1",
        "sec_kwh_per_unit",
        None,
        "kWh/unit",
        null_reason="no units produced in the period",
        details={"energy_kwh": 12.5, "units": 0.0},
    ),
    kpi(3, "m2", "oee", 0.25, "ratio"),
    kpi(4, "m1", "availability", 1.0, "ratio"),
    kpi(4, "m1", "avg_outdoor_temp", 31.5, ""),
    kpi(4, "m1", "oee", 0.75, "ratio"),
]
T2_KPIS = [kpi(3, "m1", "oee", 0.125, "ratio", tenant="t2")]
KPI_QUERY = {"factory_id": "f1", "period": "hour", "start": iso(at(3)), "end": iso(at(5))}


def insert_kpi_data(database: DatabaseHandle) -> None:
    noise = [
        kpi(0, "m1", "oee", 0.6, "ratio", period="day"),
        kpi(-1, "m1", "oee", 0.55, "ratio", period="shift", details={"shift": "C"}),
        kpi(3, "m1", "oee", 0.9, "ratio", factory="f2"),
        kpi(5, "m1", "oee", 0.1, "ratio"),  # at the end: excluded
    ]
    insert(database, "analytics_kpi", T1_KPIS + T2_KPIS + noise)


def deviation(hour: float, machine: str, version: int, *values: Any, **more: Any) -> dict:
    actual, predicted, dev, pct, z, severity = values
    period = more.get("period", "hour")
    return {
        "period_start": at(hour),
        "period_end": at(hour) + (timedelta(days=1) if period == "day" else HOUR),
        "period": period,
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": more.get("factory", "f1"),
        "machine_id": machine,
        "baseline_version": version,
        "actual_kwh": actual,
        "predicted_kwh": predicted,
        "deviation_kwh": dev,
        "deviation_pct": pct,
        "z": z,
        "severity": severity,
    }


T1_DEVIATIONS = [
    deviation(3, "m1", 2, 50.0, 40.0, 10.0, 25.0, 2.5, "warning"),
    deviation(3, "m2", 1, 20.0, 20.0, 0.0, 0.0, 0.0, "normal"),
    deviation(4, "m1", 2, 40.5, 40.5, 0.0, 0.0, 0.0, "normal"),
    deviation(4, "m2", 1, 1.0, -1.0, 2.0, None, 0.5, "normal"),
    deviation(5, "m1", 2, 80.0, 40.0, 40.0, 100.0, 10.0, "critical"),
]
T2_DEVIATIONS = [deviation(3, "m1", 1, 99.0, 90.0, 9.0, 10.0, 1.5, "normal", tenant="t2")]
DEVIATION_QUERY = {"factory_id": "f1", "start": iso(at(3)), "end": iso(at(6))}


def insert_deviation_data(database: DatabaseHandle) -> None:
    noise = [
        deviation(0, "m1", 2, 500.0, 480.0, 20.0, 4.1666, 0.5, "normal", period="day"),
        deviation(3, "m1", 2, 7.0, 7.0, 0.0, 0.0, 0.0, "normal", factory="f2"),
        deviation(6, "m1", 2, 7.0, 7.0, 0.0, 0.0, 0.0, "normal"),  # at the end: excluded
    ]
    insert(database, "analytics_baseline_deviation", T1_DEVIATIONS + T2_DEVIATIONS + noise)


def anomaly(time: datetime, machine: str, severity: int, label: str, **more: Any) -> dict:
    """An analytics_anomaly row (every served column but the id), in the API's column order."""
    return {
        "time": time,
        "window_start": more.get("window_start"),
        "window_end": more.get("window_end"),
        "sample_s": more.get("sample_s"),
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": more.get("factory", "f1"),
        "machine_id": machine,
        "sensor_id": more.get("sensor"),
        "metric": more.get("metric"),
        "anomaly_type": more.get("anomaly_type", "temperature"),
        "method": more.get("method", "zscore"),
        "score": more.get("score"),
        "severity": severity,
        "severity_label": label,
        "confidence": more.get("confidence"),
        "observed": more.get("observed"),
        "expected": more.get("expected"),
        "model_version": more.get("model_version"),
        "details": more.get("details"),
        "status": more.get("status", "open"),
        "resolved_at": more.get("resolved_at"),
        "resolved_by": more.get("resolved_by"),
        "resolution_note": more.get("resolution_note"),
        "detected_live_at": more.get("detected_live_at"),  # NULL: the hourly asset found it
        "confirmed_at": more.get("confirmed_at"),
        "created_at": more.get("created_at", time + timedelta(minutes=1)),
    }


ANOMALY_ROWS = {
    "a1": anomaly(
        at(3, 10),
        "m1",
        4,
        "critical",
        sensor="s1",
        metric="temp",
        score=4.5,
        confidence=0.9,
        observed=95.5,
        expected=70.0,
        details={"z": 4.5, "window": "5m"},
        window_start=at(3, 5),
        window_end=at(3, 10),
        sample_s=10.0,
    ),
    "a2": anomaly(
        at(3, 20),
        "m2",
        2,
        "warning",
        anomaly_type="production",
        method="stoppage",
        observed=0.0,
        expected=120.0,
        details={"minutes": 12},
        window_start=at(3, 8),
        window_end=at(3, 20),
    ),
    "a3": anomaly(
        at(3, 20),
        "m1",
        3,
        "warning",
        sensor="s2",
        metric="power",
        anomaly_type="power",
        method="isolation_forest",
        score=0.71,
        confidence=0.625,
        model_version=2,
        status="resolved",
        resolved_at=at(4),
        resolved_by="ops",
        resolution_note="filter replaced",
    ),
    "a4": anomaly(at(2), "m1", 1, "info", factory="f2", sensor="s1", metric="temp"),
    "a5": anomaly(at(-240), "m1", 5, "critical", sensor="s1", metric="temp"),  # ten days earlier
    "b1": anomaly(at(3, 10), "m1", 5, "critical", tenant="t2", sensor="s1", metric="temp", observed=99.5),
}
ANOMALY_RANGE = {"start": iso(at(0)), "end": iso(at(24))}


def insert_anomalies(database: DatabaseHandle) -> dict[str, dict]:
    """name -> the JSON the API serves for it (ids from the database, in insertion order)."""
    ids = insert(database, "analytics_anomaly", list(ANOMALY_ROWS.values()), returning="anomaly_id")
    return {name: {"anomaly_id": i, **jsonable(row)} for (name, row), i in zip(ANOMALY_ROWS.items(), ids, strict=True)}


DRIVERS_V2 = ["production_count", "avg_outdoor_temp", "avg_outdoor_pressure"]


def baseline(version: int, active: bool, **more: Any) -> dict:
    drivers = more.get("drivers", DRIVERS_V2)
    coefficients = more.get(
        "coefficients",
        {"intercept": 10.5, "production_count": 0.25, "avg_outdoor_temp": 2.0, "avg_outdoor_pressure": -0.0625},
    )
    return {
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": more.get("factory", "f1"),
        "machine_id": more.get("machine", "m1"),
        "version": version,
        "target": "energy_kwh",
        "drivers": drivers,
        "coefficients": coefficients,
        "p_values": {k: (None if k == "intercept" else 0.001) for k in coefficients},
        "std_errors": dict.fromkeys(coefficients, 0.5),
        "r2": more.get("r2", 0.9),
        "adj_r2": 0.875,
        "rmse": 2.5,
        "mae": 1.75,
        "cv_rmse_pct": more.get("cv_rmse_pct", 12.5),
        "n": 1200,
        "excluded": 36,
        "trained_from": at(-24 * 90),
        "trained_to": at(0),
        "accepted": more.get("accepted", True),
        "warning": more.get("warning"),
        "active": active,
        "created_at": at(0, 30) + timedelta(hours=version),
        "deactivated_at": more.get("deactivated_at"),
    }


BASELINE_ROWS = {
    "v1": baseline(
        1,
        False,
        drivers=["production_count", "avg_outdoor_temp"],
        coefficients={"intercept": 2.0, "production_count": 0.5, "avg_outdoor_temp": 0.25},
        deactivated_at=at(2, 30),
    ),
    "v2": baseline(2, True),
    "f2": baseline(1, True, factory="f2", accepted=False, r2=0.61, warning="R² 0.61 is below 0.80"),
    "t2": baseline(
        1,
        True,
        tenant="t2",
        drivers=["production_count"],
        coefficients={"intercept": 1.5, "production_count": 0.125},
    ),
}


def insert_baselines(database: DatabaseHandle) -> dict[str, dict]:
    ids = insert(database, "analytics_baseline", list(BASELINE_ROWS.values()), returning="baseline_id")
    return {
        name: {"baseline_id": i, **jsonable(row)} for (name, row), i in zip(BASELINE_ROWS.items(), ids, strict=True)
    }


def spec(factory: str, scope: str, name: str, limits: tuple, unit: str, valid_from: datetime | None, **more) -> dict:
    """A spec limit as served; valid_from None = since always (stored as '-infinity')."""
    lower, upper, target = limits
    return {
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": factory,
        "scope": scope,
        "name": name,
        "lower_limit": lower,
        "upper_limit": upper,
        "target": target,
        "unit": unit,
        "valid_from": valid_from,
        "updated_at": more.get("updated_at", at(-24 * 19)),
    }


# in the listing's order: tenant, factory ('*' first), scope, name, valid_from (since-always first)
T1_SPECS = [
    spec("*", "analyte", "ph", (6.5, 8.5, 7.0), "pH", None),
    spec("*", "analyte", "ph", (6.75, 8.25, 7.5), "pH", at(-24 * 5)),
    spec("f1", "analyte", "ph", (6.0, 9.0, None), "pH", None),
    spec("f1", "metric", "thickness", (None, 2.5, 2.0), "mm", at(-24 * 19), updated_at=at(-24 * 18)),
    spec("f2", "analyte", "ph", (5.0, 9.5, 7.25), "pH", None),
]
T2_SPECS = [spec("*", "analyte", "ph", (1.0, 2.0, 1.5), "pH", None, tenant="t2")]


def insert_spec_data(database: DatabaseHandle) -> None:
    rows = [{k: v for k, v in r.items() if not (k == "valid_from" and v is None)} for r in T2_SPECS + T1_SPECS]
    insert(database, "analytics_spec_limits", rows)


def reading(moment: datetime, sensor: str, value: float, offset: int, **more: Any) -> dict:
    tenant, factory, machine = more.get("tenant", "t1"), more.get("factory", "f1"), more.get("machine", "m1")
    metric = more.get("metric", "temp")
    return {
        "time": moment,
        "tenant_id": tenant,
        "factory_id": factory,
        "machine_id": machine,
        "sensor_id": sensor,
        "metric": metric,
        "value": value,
        "unit": more.get("unit", "degC"),
        "payload": more.get("payload"),
        "event_id": more.get("event_id"),
        "schema_version": 1,
        "dedup_key": f"{tenant}|{factory}|{machine}|{sensor}|{metric}|{offset}",
        "topic": "sensors.device.readings",
        "kafka_partition": 0,
        "kafka_offset": offset,
    }


T1_READINGS = [
    reading(at(3), "s1", 20.5, 1, payload={"raw": 2050, "quality": "good", "tags": ["a", 1]}, event_id="e-1"),
    reading(at(3), "s2", 21.25, 2, unit=None),
    reading(at(3, 15) + timedelta(microseconds=250000), "s1", 21.0, 3),
    reading(at(3, 30), "s1", 22.0, 4, event_id="e-4"),
    reading(at(3, 30), "s2", 0.1, 5),
]
T2_READINGS = [reading(at(3), "s1", 91.0, 6, tenant="t2")]
READING_QUERY = {"factory_id": "f1", "machine_id": "m1", "metric": "temp", "start": iso(at(3)), "end": iso(at(4))}
READING_ITEM_COLUMNS = (
    "time",
    "tenant_id",
    "factory_id",
    "machine_id",
    "sensor_id",
    "metric",
    "value",
    "unit",
    "payload",
    "event_id",
)


def reading_item(row: dict) -> dict:
    """The JSON item of a raw reading: its served columns (not the Kafka coordinates or dedup key)."""
    return jsonable({k: row[k] for k in READING_ITEM_COLUMNS})


def insert_reading_data(database: DatabaseHandle) -> None:
    noise = [
        reading(at(3), "s1", 92.0, 7, factory="f2"),
        reading(at(3), "s1", 93.0, 8, machine="m2"),
        reading(at(3), "s1", 94.0, 9, metric="humidity", unit="%"),
        reading(at(4), "s1", 23.0, 10),  # at the end: excluded
    ]
    rows = [{**r, "payload": Jsonb(r["payload"]) if r["payload"] is not None else None} for r in noise]
    rows += [{**r, "payload": Jsonb(r["payload"]) if r["payload"] is not None else None} for r in T1_READINGS]
    rows += [{**r, "payload": None} for r in T2_READINGS]
    insert(database, "raw_sensor_readings", rows)


def resolution(database: DatabaseHandle, anomaly_id: int) -> tuple:
    """An anomaly's (status, resolved_at, resolved_by, resolution_note) as stored."""
    return database.query(
        "SELECT status, resolved_at, resolved_by, resolution_note FROM analytics.analytics_anomaly "
        "WHERE anomaly_id = %s",
        (anomaly_id,),
    )[0]


# a valid prediction request (t1's active baseline v2 for f1/m1)
PREDICT = {
    "factory_id": "f1",
    "machine_id": "m1",
    "drivers": {"production_count": 120, "avg_outdoor_temp": 31.5, "avg_outdoor_pressure": 1008},
}

# a valid request of each listing, (path, query): the 422 and 401 tests change one thing of it
AGG = ("/v1/agg", {**AGG_QUERY, "window_s": 3600, "start": iso(at(0)), "end": iso(at(24))})
KPI = ("/v1/kpi", KPI_QUERY)
EVENTS = ("/v1/event-rollup", EVENT_QUERY)
DEVIATION = ("/v1/baseline-deviation", DEVIATION_QUERY)
ANOMALIES = ("/v1/anomalies", ANOMALY_RANGE)
BASELINES = ("/v1/baselines", {})
SPECS = ("/v1/spec-limits", {})
READINGS = ("/v1/readings", READING_QUERY)
TIME_RANGED = {"agg": AGG, "kpi": KPI, "events": EVENTS, "deviation": DEVIATION, "anomalies": ANOMALIES}
LISTINGS = {**TIME_RANGED, "baselines": BASELINES, "specs": SPECS, "readings": READINGS}
NEEDS_TENANT = {"agg": AGG, "kpi": KPI, "events": EVENTS, "deviation": DEVIATION, "readings": READINGS}


# ----- /v1/agg over one series whose hours the asset's own writer materialises (HTTP caching tests) -----
CACHE_QUERY = {"factory_id": "f1", "machine_id": "m1", "metric": "temp", "start": iso(at(3)), "end": iso(at(5))}
CACHE_HOUR = {**CACHE_QUERY, "window_s": 3600}
CACHE_TWO_HOURS = {**CACHE_QUERY, "window_s": 7200, "start": iso(at(2)), "end": iso(at(6))}  # rolled up from the hours


def cache_readings(database: DatabaseHandle, *rows: tuple[datetime, float, int, str]) -> None:
    """(time, value, offset, tenant) readings of sensor s1 of f1/m1/temp."""
    insert(database, "raw_sensor_readings", [reading(t, "s1", v, o, tenant=tenant) for t, v, o, tenant in rows])


def materialise(database: DatabaseHandle, settings: PlatformSettings, first: datetime, last: datetime) -> None:
    """The hours [first, last) recomputed by the aggregates asset's own writer (each hour a new version)."""
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        recompute_aggregates(conn, list(settings.windows), first, last)


def rewrite_kpi_hours(database: DatabaseHandle, *rows: tuple[float, float, str]) -> None:
    """The KPI assets' own writer (`replace_kpis`) rewriting hours 3 and 4 with m1's OEE rows
    (hour, value, tenant): each write a new version of those periods, as a re-run leaves them."""
    hours = pl.DataFrame(
        [
            {"period": "hour", "label": None, "tenant_id": None, "period_start": at(h), "period_end": at(h + 1)}
            for h in (3, 4)
        ],
        schema=mk.PERIOD_SCHEMA,
    )
    frame = pl.DataFrame(
        [{**kpi(h, "m1", "oee", v, "ratio", tenant=t), "details": None} for h, v, t in rows],
        schema=mk.OUTPUT_SCHEMA,
    )
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        replace_kpis(conn, frame, hours)
