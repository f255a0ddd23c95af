"""GET /v1/baselines, GET /v1/baselines/{id}, POST /v1/baseline/predict and GET /v1/baseline-deviation
(api/routes/baselines.py) against a real database: active and inactive models, predictions worked out by
hand and every refusal of one, deviations with filters, paging and CSV."""

from __future__ import annotations

import json

import pytest

from analytics_platform_tests.support.api import (
    OTHER_TENANT,
    Api,
    assert_422,
    assert_csv_equals_json,
    at,
    insert,
    iso,
    jsonable,
    ok,
    pages,
    split,
)
from analytics_platform_tests.support.api_data import DEVIATION_QUERY, PREDICT, T1_DEVIATIONS, baseline, deviation
from analytics_platform_tests.support.stack import DatabaseHandle

# ------------------------------------------------------------------------------------------------
# GET /v1/baselines, GET /v1/baselines/{id}, POST /v1/baseline/predict
# ------------------------------------------------------------------------------------------------


def test_baselines_active_only_by_default(api: Api, baselines: dict[str, dict]) -> None:
    assert ok(api.t1.get("/v1/baselines")) == {
        "items": [baselines["v2"], baselines["f2"]],
        "count": 2,
        "next_cursor": None,
    }
    assert ok(api.t1.get("/v1/baselines", include_inactive="true"))["items"] == [
        baselines["v1"],
        baselines["v2"],
        baselines["f2"],
    ]
    assert ok(api.t1.get("/v1/baselines", factory_id="f1", machine_id="m1", include_inactive="true"))["items"] == [
        baselines["v1"],
        baselines["v2"],
    ]
    assert ok(api.t1.get("/v1/baselines", factory_id="f2"))["items"] == [baselines["f2"]]


def test_baselines_admin_sees_every_tenant(api: Api, baselines: dict[str, dict]) -> None:
    assert ok(api.admin.get("/v1/baselines"))["items"] == [baselines[n] for n in ("v2", "f2", "t2")]
    assert ok(api.admin.get("/v1/baselines", include_inactive="true"))["items"] == list(baselines.values())
    assert ok(api.admin.get("/v1/baselines", tenant_id="t2"))["items"] == [baselines["t2"]]


def test_baseline_by_id(api: Api, baselines: dict[str, dict]) -> None:
    for name in ("v1", "v2", "f2"):  # inactive ones too
        assert ok(api.t1.get(f"/v1/baselines/{baselines[name]['baseline_id']}")) == baselines[name]
    assert ok(api.admin.get(f"/v1/baselines/{baselines['t2']['baseline_id']}")) == baselines["t2"]


def test_baseline_of_another_tenant_or_unknown_is_404(api: Api, baselines: dict[str, dict]) -> None:
    t2, v2 = baselines["t2"]["baseline_id"], baselines["v2"]["baseline_id"]
    for caller, baseline_id in ((api.t1, t2), (api.t2, v2), (api.admin, 999_999)):
        response = caller.get(f"/v1/baselines/{baseline_id}")
        assert response.status_code == 404
        assert response.json() == {"detail": f"baseline {baseline_id} not found"}


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_baselines_pages_neither_skip_nor_repeat(api: Api, baselines: dict[str, dict], limit: int) -> None:
    items, sizes = pages(api.admin, "/v1/baselines", limit, include_inactive="true")
    assert items == list(baselines.values())
    assert sizes == split(4, limit)
    items, sizes = pages(api.t1, "/v1/baselines", limit)
    assert items == [baselines["v2"], baselines["f2"]]
    assert sizes == split(2, limit)


@pytest.mark.usefixtures("baselines")
def test_baselines_answer_json_even_to_a_csv_request(api: Api) -> None:
    response = api.t1.csv("/v1/baselines")
    assert response.headers["content-type"] == "application/json"
    assert response.json()["count"] == 2


def test_predict_from_the_active_baseline(api: Api, baselines: dict[str, dict]) -> None:
    # version 2: 10.5 + 0.25 x 120 + 2.0 x 31.5 - 0.0625 x 1008 = 10.5 + 30 + 63 - 63 = 40.5
    assert ok(api.t1.post("/v1/baseline/predict", PREDICT)) == {
        "baseline_id": baselines["v2"]["baseline_id"],
        "version": 2,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "target": "energy_kwh",
        "unit": "kWh",
        "drivers": {"production_count": 120.0, "avg_outdoor_temp": 31.5, "avg_outdoor_pressure": 1008.0},
        "predicted": 40.5,
    }


def test_predict_for_t2_by_an_admin_key(api: Api, baselines: dict[str, dict]) -> None:
    # t2's baseline: 1.5 + 0.125 x 120 = 16.5
    body = {"tenant_id": "t2", "factory_id": "f1", "machine_id": "m1", "drivers": {"production_count": 120}}
    expected = {
        "baseline_id": baselines["t2"]["baseline_id"],
        "version": 1,
        "tenant_id": "t2",
        "factory_id": "f1",
        "machine_id": "m1",
        "target": "energy_kwh",
        "unit": "kWh",
        "drivers": {"production_count": 120.0},
        "predicted": 16.5,
    }
    assert ok(api.admin.post("/v1/baseline/predict", body)) == expected
    assert ok(api.t2.post("/v1/baseline/predict", {k: v for k, v in body.items() if k != "tenant_id"})) == expected


@pytest.mark.usefixtures("baselines")
def test_predict_422_for_a_missing_driver(api: Api) -> None:
    body = {**PREDICT, "drivers": {"production_count": 120}}
    assert_422(
        api.t1.post("/v1/baseline/predict", body),
        ["body", "drivers"],
        "missing driver value(s): avg_outdoor_temp, avg_outdoor_pressure",
    )


@pytest.mark.usefixtures("baselines")
def test_predict_422_for_an_unknown_driver(api: Api) -> None:
    body = {**PREDICT, "drivers": {**PREDICT["drivers"], "flux": 1.0}}
    response = api.t1.post("/v1/baseline/predict", body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["msg"] == (
        "'flux' is not a driver of this baseline; its drivers: production_count, avg_outdoor_temp, avg_outdoor_pressure"
    )
    assert error["loc"][0] == "body"


@pytest.mark.usefixtures("baselines")
def test_predict_422_for_a_non_finite_driver(api: Api) -> None:
    body = json.dumps({**PREDICT, "drivers": {**PREDICT["drivers"], "production_count": float("nan")}})
    response = api.client.post(
        "/v1/baseline/predict", content=body, headers={"X-API-Key": api.t1.key, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["msg"] == "driver values must be finite numbers"


@pytest.mark.usefixtures("baselines")
def test_predict_404_without_an_active_baseline(api: Api) -> None:
    response = api.t1.post("/v1/baseline/predict", {**PREDICT, "machine_id": "m9"})
    assert response.status_code == 404
    assert response.json() == {"detail": "no active energy baseline for t1/f1/m9: train one first"}
    # t2 has an active model for f1/m1, but a t1 key cannot name t2
    response = api.t1.post("/v1/baseline/predict", {**PREDICT, "tenant_id": "t2"})
    assert response.status_code == 404
    assert response.json() == OTHER_TENANT


def test_predict_404_when_the_only_baseline_is_inactive(api: Api, database: DatabaseHandle) -> None:
    insert(database, "analytics_baseline", [baseline(1, False, machine="m7", deactivated_at=at(1))])
    response = api.t1.post("/v1/baseline/predict", {**PREDICT, "machine_id": "m7"})
    assert response.status_code == 404
    assert response.json() == {"detail": "no active energy baseline for t1/f1/m7: train one first"}


# ------------------------------------------------------------------------------------------------
# GET /v1/baseline-deviation
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("deviation_data")
def test_deviation_exact(api: Api) -> None:
    assert ok(api.t1.get("/v1/baseline-deviation", **DEVIATION_QUERY)) == {
        "items": [jsonable(d) for d in T1_DEVIATIONS],
        "count": 5,
        "next_cursor": None,
    }


@pytest.mark.usefixtures("deviation_data")
@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"severity": "normal"}, [1, 2, 3]),
        ({"severity": "critical"}, [4]),
        ({"machine_id": "m1"}, [0, 2, 4]),
        ({"machine_id": "m2", "severity": "warning"}, []),
        ({"start": iso(at(4)), "end": iso(at(5))}, [2, 3]),
    ],
)
def test_deviation_filters(api: Api, filters: dict, expected: list[int]) -> None:
    body = ok(api.t1.get("/v1/baseline-deviation", **{**DEVIATION_QUERY, **filters}))
    assert body["items"] == [jsonable(T1_DEVIATIONS[i]) for i in expected]


@pytest.mark.usefixtures("deviation_data")
def test_deviation_period_day(api: Api) -> None:
    query = {**DEVIATION_QUERY, "period": "day", "start": iso(at(0)), "end": iso(at(24))}
    assert ok(api.t1.get("/v1/baseline-deviation", **query))["items"] == [
        jsonable(deviation(0, "m1", 2, 500.0, 480.0, 20.0, 4.1666, 0.5, "normal", period="day"))
    ]


@pytest.mark.usefixtures("deviation_data")
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_deviation_pages_neither_skip_nor_repeat(api: Api, limit: int) -> None:
    items, sizes = pages(api.t1, "/v1/baseline-deviation", limit, **DEVIATION_QUERY)
    assert items == [jsonable(d) for d in T1_DEVIATIONS]
    assert sizes == split(5, limit)


@pytest.mark.usefixtures("deviation_data")
def test_deviation_csv_equals_json(api: Api) -> None:
    assert_csv_equals_json(api.t1, "/v1/baseline-deviation", 2, **DEVIATION_QUERY)


# ------------------------------------------------------------------------------------------------
# bugs found while writing these tests (each asserts the correct behaviour)
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("baselines")
def test_bug_predict_driver_errors_are_located_under_drivers(api: Api) -> None:
    """An unknown name or a non-finite value is an entry of `drivers`: its location is
    body.drivers.<name> (where pydantic puts a driver value that is not a number), not a top-level
    body field of that name."""
    body = {**PREDICT, "drivers": {**PREDICT["drivers"], "flux": 1.0}}
    assert_422(
        api.t1.post("/v1/baseline/predict", body),
        ["body", "drivers", "flux"],
        "'flux' is not a driver of this baseline; its drivers: "
        "production_count, avg_outdoor_temp, avg_outdoor_pressure",
    )
    body = {**PREDICT, "drivers": {**PREDICT["drivers"], "production_count": "many"}}
    assert api.t1.post("/v1/baseline/predict", body).json()["detail"][0]["loc"] == [
        "body",
        "drivers",
        "production_count",
    ]
    nan = json.dumps({**PREDICT, "drivers": {**PREDICT["drivers"], "production_count": float("nan")}})
    headers = {"X-API-Key": api.t1.key, "Content-Type": "application/json"}
    assert_422(
        api.client.post("/v1/baseline/predict", content=nan, headers=headers),
        ["body", "drivers", "production_count"],
        "driver values must be finite numbers",
    )
