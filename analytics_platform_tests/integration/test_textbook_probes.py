"""Textbook probes on the database and API path: figures a reviewer computes by hand from the brief's
definitions, checked against what /v1 serves.

Standard deviation of a rolled-up window (NIST StRD univariate "NumAcc" data: a large mean with a small
spread, whose certified standard deviation a one-pass Σx² formula loses). Six hours of a sensor that reads
10000000.1, 10000000.3 and 10000000.2 each hour: 18 readings, mean 10000000.2, squared deviations 0.01,
0.01 and 0 an hour, so

    stddev(2 h)  = sqrt(2 x 0.02 / 5)  = 0.0894427191   (window_s 7200, rolled up from the hours)
    stddev(day)  = sqrt(6 x 0.02 / 17) = 0.0840168050   (window_s 86400, whole days)

Each stored hour holds stddev 0.1 (Polars, from the readings). The day and the 2-hour windows were rebuilt as
sqrt((Σx² - (Σx)²/n) / (n - 1)) from Σx² = Σ (n-1)s² + n·mean²: 1.8e15 against a spread of 0.12, far below
a double's resolution there, so the API served 0 for the day and 0.158 for two hours."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import psycopg
import pytest

from analytics_platform.migrations import apply_migrations
from analytics_platform.results.aggregates import recompute_aggregates
from analytics_platform.results.anomalies import AnomalyOptions, recompute_anomalies
from analytics_platform.results.baselines import compute_deviations, train_baselines
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms.window_aggregates import READING_SCHEMA
from analytics_platform_tests.support.api import Api, at, insert, iso, ok, running
from analytics_platform_tests.support.api_data import AGG_QUERY, LAB_AGG_QUERY, kpi, lab_bucket, reading
from analytics_platform_tests.support.kpi_month import load_month
from analytics_platform_tests.support.readings import store_raw_readings
from analytics_platform_tests.support.stack import DatabaseHandle, new_database, older_database

BASE = 10_000_000.0
HOUR_VALUES = ((10, 0.1), (20, 0.3), (30, 0.2))  # (minute, value - BASE) in each of the hours 0..5


def _materialise(database: DatabaseHandle, settings: PlatformSettings, start: datetime, end: datetime) -> None:
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        recompute_aggregates(conn, list(settings.windows), start, end)


def test_the_stddev_of_a_rolled_up_window_keeps_a_small_spread_around_a_large_mean(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    rows, offset = [], 0
    for hour in range(6):
        for minute, delta in HOUR_VALUES:
            for tenant in ("t1", "t2"):  # t2: the same ids, ten times the spread; never mixed in
                value = BASE + (delta if tenant == "t1" else 10 * delta)
                rows.append(reading(at(hour, minute), "s1", value, offset, tenant=tenant))
                offset += 1
    insert(database, "raw_sensor_readings", rows)
    _materialise(database, settings, at(0), at(24))
    query = {**AGG_QUERY, "sensor_id": "s1", "start": iso(at(0)), "end": iso(at(24))}
    with running(settings, database) as api:
        hours = ok(api.t1.get("/v1/agg", **query, window_s=3600))["items"]
        two_hours = ok(api.t1.get("/v1/agg", **query, window_s=7200))["items"]
        day = ok(api.t1.get("/v1/agg", **query, window_s=86400))["items"]
        other = ok(api.t2.get("/v1/agg", **query, window_s=86400))["items"]
    assert [i["count"] for i in hours] == [3] * 6
    for item in hours:
        assert math.isclose(item["stddev"], 0.1, rel_tol=1e-6)
    assert [(i["bucket_start"], i["count"]) for i in two_hours] == [(iso(at(h)), 6) for h in (0, 2, 4)]
    for item in two_hours:
        assert math.isclose(item["avg"], BASE + 0.2, rel_tol=1e-15)
        assert math.isclose(item["stddev"], math.sqrt(2 * 0.02 / 5), rel_tol=1e-6), item
    assert [(i["bucket_start"], i["count"]) for i in day] == [(iso(at(0)), 18)]
    assert math.isclose(day[0]["stddev"], math.sqrt(6 * 0.02 / 17), rel_tol=1e-6), day[0]
    assert [(i["bucket_start"], i["count"]) for i in other] == [(iso(at(0)), 18)]
    assert math.isclose(other[0]["stddev"], math.sqrt(6 * 2.0 / 17), rel_tol=1e-6), other[0]


def test_the_stddev_of_rolled_up_lab_buckets_keeps_a_small_spread_around_a_large_mean(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """/v1/lab/agg rolls its stored hours up the same way: two hours of 3 results, each hour's mean
    10000000.2 and stddev 0.1, are a 2-hour stddev of sqrt(2 x 2 x 0.01 / 5) (it served 0)."""
    hours = [
        {**lab_bucket(hour, "lab-01", 3, 3 * (BASE + 0.2)), "stddev_v": 0.1, "min_v": BASE + 0.1, "max_v": BASE + 0.3}
        for hour in (0, 1)
    ]
    insert(database, "analytics_lab_agg", hours)
    query = {**LAB_AGG_QUERY, "window_s": 7200, "start": iso(at(0)), "end": iso(at(2))}
    with running(settings, database) as api:
        items = ok(api.t1.get("/v1/lab/agg", **query))["items"]
    assert [(i["bucket_start"], i["count"]) for i in items] == [(iso(at(0)), 6)]
    assert math.isclose(items[0]["stddev"], math.sqrt(2 * 2 * 0.01 / 5), rel_tol=1e-6), items[0]


# agg_daily as an older release wrote it: Σx² of the day, rebuilt from each hour's count, mean and stddev
OLD_REFRESH_DAY = """
INSERT INTO analytics.agg_daily (bucket_start, tenant_id, factory_id, machine_id, sensor_id, metric,
                                 count_n, sum_v, min_v, max_v, sumsq_v, first_v, last_v)
SELECT date_bin(INTERVAL '1 day', bucket_start, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
       tenant_id, factory_id, machine_id, sensor_id, metric,
       sum(count_n)::bigint, sum(sum_v), min(min_v), max(max_v),
       sum((count_n - 1) * analytics.sq(coalesce(stddev_v, 0)) + count_n * analytics.sq(avg_v)),
       (array_agg(first_v ORDER BY bucket_start))[1], (array_agg(last_v ORDER BY bucket_start DESC))[1]
FROM analytics.analytics_agg WHERE window_s = 3600
GROUP BY 1, 2, 3, 4, 5, 6
"""


def test_the_upgrade_gives_days_stored_before_it_their_spread_from_their_hours(
    pg_admin_url: str, repo_root: Path, tmp_path: Path
) -> None:
    """sql/31 on a database whose agg_daily rows an older release wrote: each day's m2_v comes from its
    stored hours (six hours of stddev 0.1 and mean 10000000.2: 6 x 2 x 0.01 = 0.12), not from its Σx²."""
    older = [path for path in sorted((repo_root / "sql").glob("*.sql")) if path.name < "31"]
    with older_database(pg_admin_url, older, tmp_path) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for hour in range(6):
                conn.execute(
                    "INSERT INTO analytics.analytics_agg (bucket_start, bucket_end, window_s, tenant_id, factory_id, "
                    "machine_id, sensor_id, metric, count_n, sum_v, avg_v, min_v, max_v, stddev_v, first_v, last_v) "
                    "VALUES (%s, %s, 3600, 't1', 'f1', 'm1', 's1', 'temp', 3, %s, %s, %s, %s, 0.1, %s, %s)",
                    (
                        at(hour),
                        at(hour) + timedelta(hours=1),
                        3 * (BASE + 0.2),
                        BASE + 0.2,
                        BASE + 0.1,
                        BASE + 0.3,
                        BASE + 0.1,
                        BASE + 0.2,
                    ),
                )
            conn.execute(OLD_REFRESH_DAY)
        assert {r.version: r.action for r in apply_migrations(url)}["31_agg_daily_m2"] == "applied"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute((repo_root / "sql" / "31_agg_daily_m2.sql").read_text())  # a re-run changes nothing
            ((count, m2),) = conn.execute("SELECT count_n, m2_v FROM analytics.agg_daily").fetchall()
    assert count == 18
    assert math.isclose(m2, 6 * 2 * 0.01, rel_tol=1e-9)


def test_a_trained_baseline_serves_its_ashrae_cv_rmse(settings: PlatformSettings, database: DatabaseHandle) -> None:
    """Ten stored hours, energy = 2 + 3 x units + (1, -1, -1, 1, 1, -1, -1, 1, 0, 0): OLS recovers 2 and 3,
    SSR = 8 over n - p = 8 degrees of freedom, mean energy 15.5: CV(RMSE) = 1 / 15.5 = 6.4516 %."""
    residuals = (1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 0.0, 0.0)
    rows = [
        kpi(hour, "m1", name, value, None)
        for hour, e in enumerate(residuals)
        for name, value in (("energy_kwh", 2 + 3 * hour + e), ("production_count", float(hour)))
    ]
    insert(database, "analytics_kpi", rows)
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        (outcome,) = train_baselines(conn, at(0), at(10), ["production_count"], min_samples=10, r2_min=0.8)
    assert (outcome.machine, outcome.version) == (("t1", "f1", "m1"), 1)
    with running(settings, database) as api:
        (model,) = ok(api.t1.get("/v1/baselines", factory_id="f1", machine_id="m1"))["items"]
        other = ok(api.t2.get("/v1/baselines", factory_id="f1", machine_id="m1"))["items"]
    assert model["coefficients"] == {"intercept": pytest.approx(2.0), "production_count": pytest.approx(3.0)}
    assert model["rmse"] == pytest.approx(math.sqrt(8 / 10), rel=1e-9)
    assert model["cv_rmse_pct"] == pytest.approx(100 / 15.5, rel=1e-9)
    assert other == []  # t2 has the same ids and no model


# ----- a plant's own day, on the day its clocks change --------------------------------------------------
#
# support/kpi_month.py: t1 is in Europe/Berlin, m1 uses 3 kWh in each hour starting at an odd UTC hour and
# 2 kWh in each even one. Berlin's 29 March 2026 has 23 hours (02:00 CET jumps to 03:00 CEST): 28 March
# 23:00Z to 29 March 22:00Z, 12 odd and 11 even hours = 58 kWh; 28 March is 24 hours (12 + 12) = 60 kWh.
# The stored days are UTC days (24 hours every day, 01:00-01:00 local in winter), so a daily KPI in the
# plant's calendar, which a reviewer computes over the local day, must be combined from the hours.


@pytest.fixture(scope="module")
def month(pg_admin_url: str, login_roles: dict[str, str], template_database: str) -> Iterator[Api]:
    with new_database(pg_admin_url, login_roles, template_database) as handle:
        load_month(handle)
        settings = PlatformSettings(database_url=handle.pipeline_url, api_database_url=handle.api_url)
        with running(settings, handle) as api:
            yield api


def test_daily_kpis_in_the_tenants_calendar_have_23_hours_on_the_spring_change(month: Api) -> None:
    days = {"factory_id": "f1", "machine_id": "m1", "start": "2026-03-28T00:00:00Z", "end": "2026-03-30T00:00:00Z"}
    items = ok(month.t1.get("/v1/kpi", **days, period="local_day", kpi="energy_kwh"))["items"]
    assert [
        (i["period_start"], i["period_end"], i["details"]["label"], i["details"]["stored_periods"], i["value"])
        for i in items
    ] == [
        ("2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z", "2026-03-28", 24, 60.0),
        ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", "2026-03-29", 23, 58.0),
    ]
    # t2 (New York, same ids, 100 kWh an hour) keeps its own calendar: the bounds read as its local dates are
    # 27 March 20:00 and 29 March 20:00, so its days 27 and 28 March, each 04:00Z to 04:00Z (EDT since 8 March)
    other = ok(month.t2.get("/v1/kpi", **days, period="local_day", kpi="energy_kwh"))["items"]
    assert [(i["tenant_id"], i["period_start"], i["value"]) for i in other] == [
        ("t2", "2026-03-27T04:00:00Z", 2400.0),
        ("t2", "2026-03-28T04:00:00Z", 2400.0),
    ]


# ----- a weather-driven baseline: degree hours with a base temperature -----------------------------------
#
# The textbook weather model of energy is not linear in the temperature: heating below a base temperature,
# cooling above another, E = a + b x HDD(base_h) + c x CDD(base_c), HDD = max(0, base_h - T) per hour
# (degree hours), CDD = max(0, T - base_c). Twenty-one stored hours at 10 .. 30 °C of a machine that uses
# 4 kWh + 1.5 kWh per heating degree below 18 °C + 2.5 kWh per cooling degree above 24 °C: a model on the
# drivers hdd18_avg_outdoor_temp and cdd24_avg_outdoor_temp recovers 4, 1.5 and 2.5 exactly (R² 1); on
# avg_outdoor_temp alone it cannot (the V is not a line).


def _weather_hours(database: DatabaseHandle) -> None:
    rows = []
    for hour in range(21):
        temp = 10.0 + hour
        energy = 4 + 1.5 * max(0.0, 18 - temp) + 2.5 * max(0.0, temp - 24)
        rows += [kpi(hour, "m1", "energy_kwh", energy, None), kpi(hour, "m1", "avg_outdoor_temp", temp, None)]
    insert(database, "analytics_kpi", rows)


def test_a_baseline_on_heating_and_cooling_degree_hours_with_base_temperatures(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    _weather_hours(database)
    drivers = ["hdd18_avg_outdoor_temp", "cdd24_avg_outdoor_temp"]
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        (linear,) = train_baselines(conn, at(0), at(21), ["avg_outdoor_temp"], min_samples=10, r2_min=0.8)
        (degrees,) = train_baselines(conn, at(0), at(21), drivers, min_samples=10, r2_min=0.8)
        deviations = compute_deviations(conn, at(0), at(21), period="hour")
    assert linear.r2 is not None and linear.r2 < 0.5
    assert (degrees.version, degrees.message) == (2, "accepted")
    assert degrees.r2 == pytest.approx(1.0, abs=1e-12)
    with running(settings, database) as api:
        (model,) = ok(api.t1.get("/v1/baselines", factory_id="f1", machine_id="m1"))["items"]
        cold = {"hdd18_avg_outdoor_temp": 8.0, "cdd24_avg_outdoor_temp": 0.0}
        predicted = ok(api.t1.post("/v1/baseline/predict", {"factory_id": "f1", "machine_id": "m1", "drivers": cold}))
        span = {"factory_id": "f1", "machine_id": "m1", "period": "custom", "start": iso(at(0)), "end": iso(at(21))}
        report = ok(api.t1.get("/v1/reports/energy-performance", **span))["items"]
    assert model["drivers"] == drivers
    assert model["coefficients"] == pytest.approx(
        {"intercept": 4.0, "hdd18_avg_outdoor_temp": 1.5, "cdd24_avg_outdoor_temp": 2.5}, abs=1e-9
    )
    assert predicted["predicted"] == pytest.approx(4 + 1.5 * 8, abs=1e-9)
    assert deviations.height == 21
    assert deviations["deviation_kwh"].abs().max() == pytest.approx(0.0, abs=1e-9)
    # the ISO 50001 report predicts each stored hour from its temperature the same way
    (machine,) = [i for i in report if i["machine_id"] == "m1"]
    assert machine["hours_compared"] == 21
    assert machine["expected_kwh"] == pytest.approx(machine["actual_kwh_compared"], abs=1e-9)


# ----- anomaly profiles in each tenant's own clock ------------------------------------------------------
#
# Two plants with the same ids, t1 in Europe/Berlin (summer time from 29 March 2026) and t2 in
# America/New_York (from 8 March): each runs its machine from 06:00 to 18:00 local time (80 °C, else 20 °C).
# An hour of day in the plant's clock is the same every day; in UTC it moves an hour at the plant's DST
# change. The profiles learn hours of day in ANOMALY_TIMEZONE (one for the deployment, UTC by default), not in
# the tenant's plant timezone, so the day after its change each plant's 06:00 start-up came an hour before the
# hour its profile expected it in: critical anomalies on a normal morning, for as long as the two weeks of
# history hold the old hour. A deployment zone cannot fix it: no one zone has both plants' changes.
PLANTS = {  # tenant: (its plant timezone, the hour judged: its 06:00 the day after its change)
    "t1": ("Europe/Berlin", datetime(2026, 3, 30, 4, tzinfo=UTC)),
    "t2": ("America/New_York", datetime(2026, 3, 9, 10, tzinfo=UTC)),
}


def _plant_day(zone: str, since: datetime, until: datetime, tenant: str) -> list[tuple]:
    rows, t = [], since
    while t < until:
        local = t.astimezone(ZoneInfo(zone))
        value = (80.0 if 6 <= local.hour < 18 else 20.0) + round(0.5 * math.sin(t.timestamp() / 1700), 4)
        rows.append((t, tenant, "f1", "m1", "s-temp", "temp", value))
        t += timedelta(minutes=5)
    return rows


def test_anomaly_profiles_follow_each_tenants_clock_across_its_dst_change(database: DatabaseHandle) -> None:
    rows = []
    for tenant, (zone, judged) in PLANTS.items():
        rows += _plant_day(zone, judged - timedelta(days=15), judged + timedelta(hours=1), tenant)
    frame = pl.DataFrame(rows, schema=READING_SCHEMA, orient="row")
    key = pl.concat_str("tenant_id", "sensor_id", pl.col("time").dt.epoch("s").cast(pl.String), separator="|")
    store_raw_readings(database, frame, aggregates=pl.lit(True), dedup_key=key)
    insert(database, "plant_tenants", [{"tenant_id": t, "timezone": zone} for t, (zone, _) in PLANTS.items()])
    found = {}
    with database.connect(database.pipeline_url) as conn:
        for tenant, (_, judged) in PLANTS.items():
            recompute_anomalies(conn, judged, judged + timedelta(hours=1), AnomalyOptions())
            found[tenant] = conn.execute(
                "SELECT count(*) FROM analytics.analytics_anomaly WHERE tenant_id = %s AND time >= %s AND time < %s "
                "AND severity >= 3",
                (tenant, judged, judged + timedelta(hours=1)),
            ).fetchone()[0]
    assert found == {"t1": 0, "t2": 0}
