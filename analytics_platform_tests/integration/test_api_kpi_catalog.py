"""GET /v1/kpi/catalog against a real database (the key is checked there): exact entries, display
order, the deployment's KPI drivers, the OpenAPI contract, and that /v1/kpi accepts exactly the
names the catalogue serves.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics_platform.api.app import create_app
from analytics_platform.api.keys import create_key
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms.kpi_catalog import CATALOGUE
from analytics_platform_tests.support.stack import DatabaseHandle

KPI_QUERY = {"factory_id": "f1", "period": "day", "start": "2025-08-20T00:00:00Z", "end": "2025-08-21T00:00:00Z"}
OEE = {
    "name": "oee",
    "unit": "ratio",
    "label": "OEE",
    "description": "Overall equipment effectiveness: good x ideal cycle time / planned busy time (= availability x "
    "performance x quality where all three are defined; 0 for planned time in which nothing was made).",
    "valid_min": 0.0,
    "valid_max": 1.0,
    "combine": {
        "kind": "ratio_of_sums",
        "numerator": ["good_count", "ideal_cycle_time_s"],
        "denominator": ["planned_busy_s"],
        "scale": 1.0,
        "weight": None,
        "at": None,
    },
    "format": "percent",
    "digits": 2,
}
PEAK = {
    "name": "peak_demand_kw",
    "unit": "kW",
    "label": "Peak demand (kW)",
    "description": "Highest total power in force during the period (the coincident peak of the machine's meters); "
    "details.at says when.",
    "valid_min": 0.0,
    "valid_max": None,
    "combine": {"kind": "max_with_time", "numerator": [], "denominator": [], "scale": 1.0, "weight": None, "at": "at"},
    "format": "number",
    "digits": 2,
}
RATE = {
    "kind": "ratio_of_sums",
    "numerator": ["production_count"],
    "denominator": ["run_time_s"],
    "scale": 3600.0,
    "weight": None,
    "at": None,
}
AVG_TEMP = {
    "name": "avg_outdoor_temp",
    "unit": "",
    "label": "Average outdoor temp",
    "description": "Mean of the machine's outdoor_temp readings in the period (an energy-baseline driver).",
    "valid_min": None,
    "valid_max": None,
    "combine": {
        "kind": "time_weighted_mean",
        "numerator": [],
        "denominator": [],
        "scale": 1.0,
        "weight": None,
        "at": None,
    },
    "format": "number",
    "digits": 2,
}


class Client:
    def __init__(self, client: TestClient, key: str) -> None:
        self.client, self.key = client, key

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.client.get(path, params=params, headers={"X-API-Key": self.key})


@pytest.fixture(scope="module")
def reader(module_database: DatabaseHandle) -> Iterator[Client]:
    """The app with the default KPI drivers (outdoor_temp, outdoor_pressure) and a t1 read key."""
    settings = PlatformSettings(database_url=module_database.pipeline_url, api_database_url=module_database.api_url)
    with psycopg.connect(module_database.admin_url, autocommit=True) as conn:
        key = create_key(conn, "kpi-catalog", "t1")[1]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Client(client, key)


def test_the_catalogue_lists_every_kpi_in_display_order_with_the_drivers_last(reader: Client) -> None:
    response = reader.get("/v1/kpi/catalog")
    assert response.status_code == 200, response.text
    body = response.json()
    names = [item["name"] for item in body["items"]]
    assert names == [kpi.name for kpi in CATALOGUE] + ["avg_outdoor_temp", "avg_outdoor_pressure"]
    assert (body["count"], body["next_cursor"]) == (22, None)
    by_name = {item["name"]: item for item in body["items"]}
    assert by_name["oee"] == OEE
    assert by_name["peak_demand_kw"] == PEAK
    assert by_name["production_rate_per_h"]["combine"] == RATE
    assert by_name["avg_outdoor_temp"] == AVG_TEMP
    assert {n for n, item in by_name.items() if item["format"] == "percent"} == {
        "oee",
        "availability",
        "performance",
        "quality",
        "load_factor",
    }
    assert {n for n, item in by_name.items() if item["combine"]["kind"] == "sum"} == {
        "energy_kwh",
        "energy_cost",
        "carbon_kg",
        "production_count",
        "good_count",
        "run_time_s",
        "idle_time_s",
        "planned_downtime_s",
        "downtime_s",
        "fault_time_s",
    }


def test_the_catalogue_needs_a_key(reader: Client) -> None:
    response = reader.client.get("/v1/kpi/catalog")
    assert (response.status_code, response.json()) == (
        401,
        {"detail": "missing API key: send it in the X-API-Key header"},
    )


def test_kpi_accepts_exactly_the_catalogue_names(reader: Client) -> None:
    served = [item["name"] for item in reader.get("/v1/kpi/catalog").json()["items"]]
    for name in served:
        response = reader.get("/v1/kpi", **KPI_QUERY, kpi=name)
        assert response.status_code == 200, (name, response.text)
    response = reader.get("/v1/kpi", **KPI_QUERY, kpi="avg_humidity")
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert (error["loc"], error["msg"]) == (
        ["query", "kpi"],
        f"unknown kpi 'avg_humidity'; known: {', '.join(sorted(served))}",
    )


def test_a_deployment_s_drivers_decide_its_average_kpis(module_database: DatabaseHandle) -> None:
    settings = PlatformSettings(
        database_url=module_database.pipeline_url,
        api_database_url=module_database.api_url,
        kpi_drivers=["humidity"],
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        with psycopg.connect(module_database.admin_url, autocommit=True) as conn:
            caller = Client(client, create_key(conn, "kpi-catalog-humidity", "t1")[1])
        names = [item["name"] for item in caller.get("/v1/kpi/catalog").json()["items"]]
        assert names == [kpi.name for kpi in CATALOGUE] + ["avg_humidity"]
        assert caller.get("/v1/kpi", **KPI_QUERY, kpi="avg_humidity").status_code == 200
        assert caller.get("/v1/kpi", **KPI_QUERY, kpi="avg_outdoor_temp").status_code == 422


def test_the_catalogue_is_typed_in_the_openapi_contract(reader: Client) -> None:
    spec = reader.client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/kpi/catalog"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/KpiCatalogPage"}
    definition = spec["components"]["schemas"]["KpiDefinition"]
    assert set(definition["properties"]) == set(OEE)
    combine = spec["components"]["schemas"]["KpiCombine"]["properties"]["kind"]
    assert combine["enum"] == ["sum", "ratio_of_sums", "max_with_time", "time_weighted_mean", "from_components"]
