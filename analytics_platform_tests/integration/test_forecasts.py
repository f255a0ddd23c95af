"""Energy forecasts end to end on the real PostgreSQL: two weeks of readings through the pipeline's KPI
code (support/forecast_plant.py, with the hand-computed forecasts), the `energy_forecasts` asset
materialised through Dagster for a partition with enough history, the rows it stored (exactly what
the transform computes from the stored KPIs; the hand values of the machines that repeat; every
tenant on its own), and GET /v1/forecasts serving exactly those rows to each tenant."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import pytest

from analytics_platform.alerts.config import RULE_PARAMS
from analytics_platform.alerts.model import Rule
from analytics_platform.alerts.observe import forecast_peaks
from analytics_platform.defs import build_definitions
from analytics_platform.results.forecasts import (
    FORECAST_COLUMNS,
    read_hours,
    tenant_timezones,
)
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms import forecast as fc
from analytics_platform_tests.support.api import (
    Api,
    assert_csv_equals_json,
    iso,
    jsonable,
    ok,
    pages,
    running,
)
from analytics_platform_tests.support.automation import Ticks
from analytics_platform_tests.support.forecast_plant import DAY, EARLIER_PARTITION, ISSUE, PARTITION, load_plant
from analytics_platform_tests.support.readings import materialize
from analytics_platform_tests.support.stack import DatabaseHandle

API_COLUMNS = [c for c in FORECAST_COLUMNS if c != "details"]
# 4 machines and 3 factories (t1/f1, t1/f2, t2/f1), 2 KPIs each
SERIES = 7 * 2


@pytest.fixture(scope="module")
def plant(
    module_database: DatabaseHandle, module_settings: PlatformSettings, module_instance: dg.DagsterInstance
) -> Iterator[Api]:
    load_plant(module_database)
    defs = build_definitions(module_settings, secrets_from_env=False)
    materialize(defs, module_instance, ["energy_forecasts"], EARLIER_PARTITION)
    materialize(defs, module_instance, ["energy_forecasts"], PARTITION)
    # again: the issue is replaced, not added to
    result = materialize(defs, module_instance, ["energy_forecasts"], PARTITION)
    metadata = result.asset_materializations_for_node("energy_forecasts")[0].metadata
    assert metadata["issues"].value == 1
    assert metadata["series"].value == SERIES
    assert metadata["rows_replaced"].value == metadata["rows"].value == SERIES * (7 * 24 + 7)
    with running(module_settings, module_database) as api:
        yield api


def refused(response, name: str) -> None:
    """A 422 naming the parameter `name`."""
    assert response.status_code == 422, response.text
    assert [e["loc"][-1] for e in response.json()["detail"]] == [name]


def stored(database: DatabaseHandle, where: str = "true", params: tuple = ()) -> list[dict]:
    columns = ", ".join(API_COLUMNS)
    with database.connect() as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT {columns} FROM analytics.analytics_forecast WHERE {where} ORDER BY target_start, machine_id, kpi",
            params,
        )
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_the_asset_stores_what_the_transform_computes_from_the_stored_kpis(
    plant: Api, module_database: DatabaseHandle
) -> None:
    options = fc.ForecastOptions()
    with module_database.connect() as conn:
        hours = read_hours(conn, ISSUE - DAY * options.history_days, ISSUE)
        expected, skipped = fc.forecast_all(hours, ISSUE, tenant_timezones(conn, ["t1", "t2"]), options)
    assert skipped == []
    key = ("tenant_id", "factory_id", "machine_id", "kpi", "period", "target_start")

    def keyed(items: list[dict]) -> list[dict]:
        return sorted(items, key=lambda r: tuple(r[k] for k in key))

    rows = keyed(stored(module_database, "issued_at = %s", (ISSUE,)))
    want = keyed(expected.select(API_COLUMNS).to_dicts())
    assert len(rows) == len(want) == SERIES * (7 * 24 + 7)
    for got, row in zip(rows, want, strict=True):
        assert {k: v for k, v in got.items() if not isinstance(v, float)} == {
            k: v for k, v in row.items() if not isinstance(v, float)
        }
        for k in ("value", "lower", "upper", "level"):
            assert got[k] == pytest.approx(row[k], rel=1e-9, abs=1e-9), (got, row)
    noisy = [r for r in rows if r["machine_id"] == "m9"]
    assert {r["model"] for r in noisy} == {fc.MODEL}
    assert all(r["lower"] < r["value"] < r["upper"] for r in noisy)


def test_machines_that_repeat_are_forecast_by_hand(plant: Api, module_database: DatabaseHandle) -> None:
    days = stored(module_database, "issued_at = %s AND period = 'day' AND factory_id = 'f1'", (ISSUE,))
    by = {(r["tenant_id"], r["machine_id"], r["kpi"], r["horizon_day"]): r for r in days}
    expected = {
        ("t1", "m1", "energy_kwh"): 156.0,
        ("t1", "m1", "peak_demand_kw"): 10.0,
        ("t1", "m2", "energy_kwh"): 144.0,
        ("t1", "m2", "peak_demand_kw"): 7.0,
        ("t1", "*", "energy_kwh"): 300.0,
        ("t1", "*", "peak_demand_kw"): 17.0,
        ("t2", "m1", "energy_kwh"): 2400.0,
        ("t2", "m1", "peak_demand_kw"): 120.0,
        ("t2", "*", "energy_kwh"): 2400.0,
        ("t2", "*", "peak_demand_kw"): 120.0,
    }
    assert sorted(by) == sorted((*k, d) for k in expected for d in range(1, 8))
    for (tenant, machine, kpi, day), row in by.items():
        want = expected[(tenant, machine, kpi)]
        assert (row["value"], row["lower"], row["upper"]) == (want, want, want)
        assert row["target_start"] == ISSUE + DAY * (day - 1) and row["target_end"] == ISSUE + DAY * day
    hours = stored(
        module_database,
        "issued_at = %s AND period = 'hour' AND tenant_id = 't1' AND machine_id = 'm1' AND kpi = 'energy_kwh'",
        (ISSUE,),
    )
    assert [r["value"] for r in hours] == [10.0 if 8 <= r["target_start"].hour < 18 else 4.0 for r in hours]
    assert len(hours) == 7 * 24 and hours[0]["target_start"] == ISSUE


def test_each_issue_is_kept_and_replaced_on_its_own(plant: Api, module_database: DatabaseHandle) -> None:
    issues = module_database.query(
        "SELECT issued_at, count(*) FROM analytics.analytics_forecast GROUP BY 1 ORDER BY 1",
    )
    assert issues == [(ISSUE - DAY, SERIES * (7 * 24 + 7)), (ISSUE, SERIES * (7 * 24 + 7))]


def test_v1_forecasts_serves_the_latest_issue_exactly_as_stored(plant: Api, module_database: DatabaseHandle) -> None:
    for caller, tenant in ((plant.t1, "t1"), (plant.t2, "t2")):
        items, _ = pages(caller, "/v1/forecasts", 500, factory_id="f1", period="hour")
        where = "issued_at = %s AND tenant_id = %s AND factory_id = 'f1' AND period = 'hour'"
        rows = stored(module_database, where, (ISSUE, tenant))
        assert items == [jsonable(r) for r in rows]
        assert {i["tenant_id"] for i in items} == {tenant}
    body = ok(plant.t1.get("/v1/forecasts", factory_id="f1", period="day", machine_id="*", kpi="peak_demand_kw"))
    assert [(i["target_start"], i["value"], i["horizon_day"]) for i in body["items"]] == [
        (iso(ISSUE + DAY * d), 17.0, d + 1) for d in range(7)
    ]
    # tomorrow's band, as the dashboard asks for it
    window = {"start": iso(ISSUE + DAY), "end": iso(ISSUE + 2 * DAY)}
    body = ok(plant.t2.get("/v1/forecasts", factory_id="f1", period="day", **window))
    assert [(i["machine_id"], i["kpi"]) for i in body["items"]] == [
        ("*", "energy_kwh"),
        ("*", "peak_demand_kw"),
        ("m1", "energy_kwh"),
        ("m1", "peak_demand_kw"),
    ]


def test_an_earlier_issue_on_request(plant: Api, module_database: DatabaseHandle) -> None:
    earlier = ISSUE - DAY
    body = ok(plant.t1.get("/v1/forecasts", factory_id="f2", period="day", issued_at=iso(earlier), limit=100))
    where = "issued_at = %s AND tenant_id = 't1' AND factory_id = 'f2' AND period = 'day'"
    rows = stored(module_database, where, (earlier,))
    assert body["items"] == [jsonable(r) for r in rows] and len(rows) == 2 * 2 * 7  # m9 and f2's '*'
    assert {i["issued_at"] for i in body["items"]} == {iso(earlier)}
    assert ok(plant.t1.get("/v1/forecasts", factory_id="f1", issued_at=iso(earlier - DAY)))["items"] == []


def test_what_a_forecast_peak_alert_rule_reads(plant: Api, module_database: DatabaseHandle) -> None:
    """Tomorrow seen from noon of 2026-03-15: the newest issue (2026-03-15, its day 2), per factory of
    the tenant (or per machine), never another tenant's; a limit of 0 shows every row it reads."""
    noon = ISSUE + timedelta(hours=12)

    def read(tenant: str, **params: object) -> list[tuple]:
        rule = Rule(
            "r", "forecast_peak", tenant_id=tenant, params={**RULE_PARAMS["forecast_peak"], "above": 0.0, **params}
        )
        with module_database.connect() as conn:
            seen = forecast_peaks(conn, rule, noon, "http://ui")
        return [
            (c.factory_id, c.machine_id, c.details["value"], c.details["upper"], c.details["issued_at"])
            for c in seen.conditions
        ]

    issued = iso(ISSUE)
    t1 = read("t1")
    assert [(f, m, issued_at) for f, m, _, _, issued_at in t1] == [("f1", None, issued), ("f2", None, issued)]
    assert t1[0][2] == 17.0
    assert read("t2") == [("f1", None, 120.0, 120.0, issued)]
    machines = read("t1", kpi="energy_kwh", scope="machine")
    assert [(f, m, value) for f, m, value, _, _ in machines if f == "f1"] == [("f1", "m1", 156.0), ("f1", "m2", 144.0)]
    assert [(f, value) for f, _, value, _, _ in read("t1", kpi="energy_kwh")][:1] == [("f1", 300.0)]
    assert read("t3") == []


def test_the_forecast_follows_the_days_kpis(
    plant: Api, module_settings: PlatformSettings, instance: dg.DagsterInstance
) -> None:
    """What the analytics_automation sensor does at 00:45: nothing until the day's KPIs are written,
    then the day's forecast, once."""
    defs = build_definitions(module_settings, secrets_from_env=False)
    tick = Ticks(defs, instance, dg.AssetSelection.assets("energy_forecasts"))
    at = ISSUE + timedelta(minutes=45)
    first = tick(at)
    assert first.total_requested == 0
    materialize(defs, instance, ["daily_machine_kpis"], PARTITION)
    after = tick(at)
    assert after.get_requested_partitions(dg.AssetKey("energy_forecasts")) == {PARTITION}
    again = tick(at + timedelta(minutes=1))
    assert again.total_requested == 0


def test_tenants_never_see_each_other(plant: Api) -> None:
    assert plant.t1.get("/v1/forecasts", factory_id="f1", tenant_id="t2").status_code == 404
    assert ok(plant.t2.get("/v1/forecasts", factory_id="f2"))["items"] == []  # t1's factory name
    refused(plant.admin.get("/v1/forecasts", factory_id="f1"), "tenant_id")
    admin = ok(plant.admin.get("/v1/forecasts", factory_id="f1", tenant_id="t2", period="day", limit=1000))
    assert {i["tenant_id"] for i in admin["items"]} == {"t2"} and len(admin["items"]) == 4 * 7


def test_pages_and_csv(plant: Api) -> None:
    items, sizes = pages(plant.t1, "/v1/forecasts", 97, factory_id="f1", period="hour", kpi="energy_kwh")
    assert sizes == [97] * 5 + [3 * 7 * 24 - 97 * 5]
    assert [(i["target_start"], i["machine_id"]) for i in items] == sorted(
        (i["target_start"], i["machine_id"]) for i in items
    )
    assert_csv_equals_json(plant.t1, "/v1/forecasts", 50, factory_id="f1", period="day")


def test_a_bad_request_is_a_422(plant: Api) -> None:
    refused(plant.t1.get("/v1/forecasts", factory_id="f1", period="week"), "period")
    refused(plant.t1.get("/v1/forecasts", factory_id="f1", kpi="oee"), "kpi")
    refused(plant.t1.get("/v1/forecasts", factory_id="f1", issued_at="2026-03-15T00:00:00"), "issued_at")
    refused(plant.t1.get("/v1/forecasts"), "factory_id")
    later = ISSUE + timedelta(days=401)  # api_max_result_range_days: 400
    refused(plant.t1.get("/v1/forecasts", factory_id="f1", start=iso(ISSUE), end=iso(later)), "end")
