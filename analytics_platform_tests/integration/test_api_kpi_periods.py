"""GET /v1/kpi over weeks, months and custom ranges, per machine, factory and tenant, and the ISO 50001
report GET /v1/reports/energy-performance, against a month of readings run through the pipeline's KPI
computation (support/kpi_month.py, which works every expected figure out by hand), on the real
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import Api, assert_csv_equals_json, insert, ok, running
from analytics_platform_tests.support.kpi_month import BASELINES, load_month
from analytics_platform_tests.support.stack import new_database

MARCH = {"factory_id": "f1", "period": "month", "start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z"}
# Berlin's March: 743 hours (the spring change), from local midnight to local midnight
MARCH_START, MARCH_END = "2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z"


@pytest.fixture(scope="module")
def month(pg_admin_url: str, login_roles: dict[str, str], template_database: str) -> Iterator[Api]:
    with new_database(pg_admin_url, login_roles, template_database) as handle:
        load_month(handle)
        insert(handle, "analytics_baseline", BASELINES)
        settings = PlatformSettings(
            database_url=handle.pipeline_url, api_database_url=handle.api_url, api_write_database_url=handle.writer_url
        )
        with running(settings, handle) as api:
            yield api


def by_kpi(items: list[dict], machine: str | None = "m1") -> dict[str, dict]:
    return {i["kpi"]: i for i in items if i["machine_id"] == machine}


def value(items: dict[str, dict], name: str) -> float | None:
    return items[name]["value"]


def test_month_of_a_machine_in_the_tenants_calendar(month: Api) -> None:
    body = ok(month.t1.get("/v1/kpi", **MARCH, machine_id="m1"))
    items = by_kpi(body["items"])
    first = items["energy_kwh"]
    assert (first["period_start"], first["period_end"], first["period"]) == (MARCH_START, MARCH_END, "month")
    assert (first["tenant_id"], first["factory_id"], first["machine_id"], first["unit"]) == ("t1", "f1", "m1", "kWh")
    assert first["details"]["label"] == "2026-03"
    assert first["details"]["stored_periods"] == 743
    assert first["details"]["timezone"] == "Europe/Berlin"
    assert value(items, "energy_kwh") == 1858.0
    assert value(items, "production_count") == 2228.0
    assert value(items, "good_count") == 1856.0
    assert value(items, "carbon_kg") == 929.0
    assert value(items, "sec_kwh_per_unit") == pytest.approx(1858 / 2228, rel=1e-12)
    assert value(items, "peak_demand_kw") == 50.0
    assert items["peak_demand_kw"]["details"]["at"] == "2026-03-10 12:00:00+00:00"
    assert value(items, "avg_demand_kw") == pytest.approx(7470 / 743, rel=1e-12)
    assert value(items, "load_factor") == pytest.approx(7470 / 743 / 50, rel=1e-12)
    assert value(items, "run_time_s") == 2674800.0
    assert value(items, "availability") == 1.0
    assert value(items, "performance") == pytest.approx(1200 * 2228 / 2674800, rel=1e-12)
    assert value(items, "quality") == pytest.approx(1856 / 2228, rel=1e-12)
    assert value(items, "oee") == pytest.approx(1200 * 1856 / 2674800, rel=1e-12)
    assert value(items, "production_rate_per_h") == pytest.approx(2228 / 743, rel=1e-12)
    assert value(items, "data_completeness_pct") == 100.0
    assert value(items, "energy_cost") is None  # t1 has no tariff: said, not guessed
    assert items["energy_cost"]["null_reason"]


def test_a_machine_that_joined_mid_month_and_the_factory_total(month: Api) -> None:
    m2 = by_kpi(ok(month.t1.get("/v1/kpi", **MARCH, machine_id="m2"))["items"], "m2")
    assert (value(m2, "energy_kwh"), value(m2, "production_count")) == (1910.0, 382.0)
    assert value(m2, "sec_kwh_per_unit") == 5.0
    assert m2["energy_kwh"]["details"]["parts_with_value"] == 382

    factory = by_kpi(ok(month.t1.get("/v1/kpi", **MARCH, scope="factory"))["items"], None)
    assert {i["machine_id"] for i in factory.values()} == {None}
    assert factory["energy_kwh"]["details"]["machines"] == 2
    assert value(factory, "energy_kwh") == 3768.0  # 1858 + 1910
    assert value(factory, "production_count") == 2610.0
    assert value(factory, "carbon_kg") == 1884.0
    assert value(factory, "sec_kwh_per_unit") == pytest.approx(3768 / 2610, rel=1e-12)
    # m2 has no good counter and no ideal cycle time: its units stay out of quality and performance
    assert value(factory, "quality") == pytest.approx(1856 / 2228, rel=1e-12)
    assert value(factory, "performance") == pytest.approx(1200 * 2228 / 2674800, rel=1e-12)
    for name in ("peak_demand_kw", "avg_demand_kw", "load_factor"):
        assert value(factory, name) is None
        assert factory[name]["null_reason"].startswith("does not add up across machines")
        assert factory[name]["details"]["adds_up"] is False

    tenant = ok(month.t1.get("/v1/kpi", **{**MARCH, "factory_id": None}, scope="tenant", kpi="energy_kwh"))["items"]
    assert [(i["factory_id"], i["machine_id"], i["value"]) for i in tenant] == [(None, None, 3768.0)]


def test_iso_weeks_and_a_custom_range(month: Api) -> None:
    weeks = {"factory_id": "f1", "period": "week", "start": "2026-03-09T00:00:00Z", "end": "2026-03-23T00:00:00Z"}
    items = ok(month.t1.get("/v1/kpi", **weeks, kpi="energy_kwh"))["items"]
    # W11: Mon 9 March local (08 23:00Z) to Mon 16 March, 168 hours of m1 (84 odd, 84 even): 84 x 5 kWh;
    # W12: m1 again 420, and m2 from 16 March 00:00Z to 22 March 22:00Z, 167 hours x 5 kWh
    assert [(i["period_start"], i["details"]["label"], i["machine_id"], i["value"]) for i in items] == [
        ("2026-03-08T23:00:00Z", "2026-W11", "m1", 420.0),
        ("2026-03-15T23:00:00Z", "2026-W12", "m1", 420.0),
        ("2026-03-15T23:00:00Z", "2026-W12", "m2", 835.0),
    ]
    day = {"factory_id": "f1", "period": "custom", "start": "2026-03-10T00:00:00Z", "end": "2026-03-11T00:00:00Z"}
    custom = by_kpi(ok(month.t1.get("/v1/kpi", **day, machine_id="m1"))["items"])
    assert custom["energy_kwh"]["period_end"] == "2026-03-11T00:00:00Z"
    assert (value(custom, "energy_kwh"), value(custom, "production_count")) == (60.0, 72.0)  # 12 odd, 12 even hours
    assert value(custom, "sec_kwh_per_unit") == pytest.approx(60 / 72, rel=1e-12)
    assert value(custom, "peak_demand_kw") == 50.0


def test_tenants_see_only_their_own(month: Api) -> None:
    # t2 (New York): W11 runs from Mon 9 March 04:00Z (after its own change on the 8th): 168 x 100 kWh
    weeks = {"factory_id": "f1", "period": "week", "start": "2026-03-09T00:00:00Z", "end": "2026-03-16T00:00:00Z"}
    items = ok(month.t2.get("/v1/kpi", **weeks, kpi="energy_kwh"))["items"]
    assert [(i["tenant_id"], i["period_start"], i["machine_id"], i["value"]) for i in items] == [
        ("t2", "2026-03-09T04:00:00Z", "m1", 16800.0)
    ]
    assert ok(month.admin.get("/v1/kpi", **weeks, kpi="energy_kwh", tenant_id="t2"))["items"] == items
    assert month.t1.get("/v1/kpi", **weeks, tenant_id="t2").status_code == 404


def test_factory_totals_of_stored_hours(month: Api) -> None:
    hour = {"factory_id": "f1", "period": "hour", "start": "2026-03-20T10:00:00Z", "end": "2026-03-20T12:00:00Z"}
    items = ok(month.t1.get("/v1/kpi", **hour, scope="factory", kpi="energy_kwh"))["items"]
    # 10:00 (even): m1 2 + m2 5; 11:00 (odd): m1 3 + m2 5
    assert [(i["period_start"], i["period"], i["value"]) for i in items] == [
        ("2026-03-20T10:00:00Z", "hour", 7.0),
        ("2026-03-20T11:00:00Z", "hour", 8.0),
    ]


def test_combined_periods_page_and_csv_equals_json(month: Api) -> None:
    assert_csv_equals_json(month.t1, "/v1/kpi", 7, **MARCH)
    # two machines, every catalogue KPI and the default drivers' avg_outdoor_temp and avg_outdoor_pressure
    assert ok(month.t1.get("/v1/kpi", **MARCH))["count"] == 2 * 22


def test_factory_is_required_but_for_a_tenant_total(month: Api) -> None:
    response = month.t1.get("/v1/kpi", **{**MARCH, "factory_id": None})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "factory_id is required unless scope=tenant"


REPORT = "/v1/reports/energy-performance"


def test_energy_performance_report_of_a_month(month: Api) -> None:
    body = ok(month.t1.get(REPORT, **{**MARCH, "period": "month"}))
    assert (body["tenant_id"], body["factory_id"], body["period"], body["timezone"]) == (
        "t1",
        "f1",
        "month",
        "Europe/Berlin",
    )
    m1, m2, factory = body["items"]
    assert (m1["machine_id"], m1["scope"], m1["period_start"], m1["period_end"], m1["label"]) == (
        "m1",
        "machine",
        MARCH_START,
        MARCH_END,
        "2026-03",
    )
    assert m1["energy_kwh"] == 1858.0
    indicators = {i["kpi"]: i["value"] for i in m1["indicators"]}
    assert indicators["sec_kwh_per_unit"] == pytest.approx(1858 / 2228, rel=1e-12)
    assert indicators["peak_demand_kw"] == 50.0
    (model,) = m1["baselines"]
    assert (model["version"], model["r2"], model["drivers"], model["coefficients"]) == (
        2,
        0.91,
        ["production_count"],
        {"intercept": 0.5, "production_count": 0.5},
    )
    assert m1["expected_kwh"] == 1485.5
    assert m1["actual_kwh_compared"] == 1858.0
    assert m1["deviation_kwh"] == 372.5
    assert m1["deviation_pct"] == pytest.approx(372.5 / 1485.5 * 100, rel=1e-12)
    assert m1["cusum_kwh"] == 372.5
    assert (m1["hours_stored"], m1["hours_compared"]) == (743, 743)
    steps = m1["steps"]
    assert len(steps) == 31
    assert (steps[0]["label"], steps[0]["start"], steps[0]["hours"], steps[0]["cusum_kwh"]) == (
        "2026-03-01",
        MARCH_START,
        24,
        12.0,
    )
    dst = steps[28]  # 29 March: 23 hours
    assert (dst["label"], dst["hours"], dst["deviation_kwh"], dst["cusum_kwh"]) == ("2026-03-29", 23, 12.5, 348.5)
    assert (steps[-1]["end"], steps[-1]["cusum_kwh"]) == (MARCH_END, 372.5)

    assert (m2["machine_id"], m2["energy_kwh"], m2["expected_kwh"], m2["steps"]) == ("m2", 1910.0, None, [])
    assert m2["null_reason"] == "no active energy baseline for the machine (GET /v1/baselines)"
    assert (factory["scope"], factory["machine_id"], factory["machines"]) == ("factory", None, 2)
    assert factory["energy_kwh"] == 3768.0
    assert (factory["expected_kwh"], factory["deviation_kwh"], factory["cusum_kwh"]) == (1485.5, 372.5, 372.5)
    assert [a["asset"] for a in body["lineage"]] == ["hourly_machine_kpis", "energy_baseline_models"]
    assert body["lineage"][0]["partitions"] == ["2026-02-28-23:00", "2026-03-31-22:00"]


def test_energy_performance_report_csv_and_tenants(month: Api) -> None:
    params = {**MARCH, "period": "month", "machine_id": "m1"}
    rows = month.t1.csv(REPORT, **params).text.splitlines()
    assert len(rows) == 1 + 31  # a row per CUSUM step
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(","), strict=True))
    assert (last["machine_id"], last["baseline_versions"], last["step_label"], last["cusum_kwh"]) == (
        "m1",
        "m1:v2",
        "2026-03-31",
        "372.5",
    )
    # t2's own model (7 kWh a unit) over its own week: 168 hours of 100 kWh and 1 unit
    week = {"factory_id": "f1", "period": "week", "start": "2026-03-09T00:00:00Z", "end": "2026-03-16T00:00:00Z"}
    (t2, _factory) = ok(month.t2.get(REPORT, **week))["items"]
    assert (t2["energy_kwh"], t2["expected_kwh"], t2["deviation_kwh"]) == (16800.0, 1176.0, 15624.0)
    assert month.t1.get(REPORT, **week, tenant_id="t2").status_code == 404
