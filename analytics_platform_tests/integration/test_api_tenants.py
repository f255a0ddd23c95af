"""Tenant isolation of /v1: tenants t1 and t2 use the SAME factory, machine and sensor ids, so only the
tenant filter keeps them apart; a tenant key reads its own tenant, an admin key names one or sees all."""

from __future__ import annotations

import pytest

from analytics_platform_tests.support.api import OTHER_TENANT, Api, at, iso, ok
from analytics_platform_tests.support.api_data import (
    AGG_QUERY,
    ANOMALY_RANGE,
    DEVIATION_QUERY,
    EVENT_QUERY,
    KPI_QUERY,
    LAB_AGG_QUERY,
    PREDICT,
    READING_QUERY,
)

# ------------------------------------------------------------------------------------------------
# tenant isolation: t1 and t2 share factory, machine and sensor ids
# ------------------------------------------------------------------------------------------------

# endpoint, its data, and a projection of each item to what tells the rows apart (expected per tenant)
ISOLATION = {
    "agg": (
        "/v1/agg",
        "agg_data",
        {**AGG_QUERY, "window_s": 3600, "start": iso(at(0)), "end": iso(at(2))},
        lambda i: (i["bucket_start"], i["sensor_id"], i["sum"]),
        [(iso(at(0)), "s1", 8.0), (iso(at(1)), "s1", 10.0), (iso(at(1)), "s2", 30.0)],
        [(iso(at(0)), "s1", 70.0), (iso(at(1)), "s1", 77.0)],
    ),
    "agg-rollup": (
        "/v1/agg",
        "agg_data",
        {**AGG_QUERY, "window_s": 86400, "start": iso(at(0)), "end": iso(at(24))},
        lambda i: (i["bucket_start"], i["sensor_id"], i["sum"]),
        [(iso(at(0)), "s1", 30.0), (iso(at(0)), "s2", 37.0)],
        [(iso(at(0)), "s1", 147.0)],
    ),
    "lab-agg": (
        "/v1/lab/agg",
        "lab_agg_data",
        {**LAB_AGG_QUERY, "start": iso(at(0)), "end": iso(at(24))},
        lambda i: (i["bucket_start"], i["station_id"], i["sum"], i["lower_limit"], i["upper_limit"]),
        [
            (iso(at(3)), "lab-01", 50.0, 11.5, 13.5),
            (iso(at(3)), "lab-02", 13.2, 11.5, 13.5),
            (iso(at(4)), "lab-01", 25.0, 11.5, 13.5),
        ],
        [(iso(at(3)), "lab-01", 102.0, 40.0, 60.0)],
    ),
    "lab-agg-rollup": (
        "/v1/lab/agg",
        "lab_agg_data",
        {**LAB_AGG_QUERY, "window_s": 86400, "start": iso(at(0)), "end": iso(at(24))},
        lambda i: (i["bucket_start"], i["station_id"], i["count"], i["sum"], i["lower_limit"]),
        [(iso(at(0)), "lab-01", 6, 75.0, 11.5), (iso(at(0)), "lab-02", 1, 13.2, 11.5)],
        [(iso(at(0)), "lab-01", 2, 102.0, 40.0)],
    ),
    "kpi": (
        "/v1/kpi",
        "kpi_data",
        {**KPI_QUERY, "kpi": "oee", "machine_id": "m1"},
        lambda i: (i["period_start"], i["value"]),
        [(iso(at(3)), 0.5), (iso(at(4)), 0.75)],
        [(iso(at(3)), 0.125)],
    ),
    "events": (
        "/v1/event-rollup",
        "event_data",
        {**EVENT_QUERY, "event_type": "device_health", "machine_id": "m1"},
        lambda i: (i["bucket_start"], i["count"]),
        [(iso(at(3)), 12), (iso(at(4)), 10)],
        [(iso(at(3)), 99)],
    ),
    "deviation": (
        "/v1/baseline-deviation",
        "deviation_data",
        {**DEVIATION_QUERY, "machine_id": "m1"},
        lambda i: (i["period_start"], i["actual_kwh"]),
        [(iso(at(3)), 50.0), (iso(at(4)), 40.5), (iso(at(5)), 80.0)],
        [(iso(at(3)), 99.0)],
    ),
    "readings": (
        "/v1/readings",
        "reading_data",
        {**READING_QUERY, "sensor_id": "s1"},
        lambda i: (i["time"], i["value"]),
        [(iso(at(3)), 20.5), ("2025-08-20T03:15:00.250000Z", 21.0), (iso(at(3, 30)), 22.0)],
        [(iso(at(3)), 91.0)],
    ),
    "anomalies": (
        "/v1/anomalies",
        "anomalies",
        {**ANOMALY_RANGE, "machine_id": "m1", "factory_id": "f1"},
        lambda i: (i["time"], i["severity"]),
        [(iso(at(3, 20)), 3), (iso(at(3, 10)), 4)],
        [(iso(at(3, 10)), 5)],
    ),
    "baselines": (
        "/v1/baselines",
        "baselines",
        {"factory_id": "f1", "machine_id": "m1"},
        lambda i: (i["version"], i["coefficients"]["intercept"]),
        [(2, 10.5)],
        [(1, 1.5)],
    ),
    "specs": (
        "/v1/spec-limits",
        "spec_data",
        {"factory_id": "f1", "name": "ph"},
        lambda i: (i["factory_id"], i["lower_limit"]),
        [("*", 6.5), ("*", 6.75), ("f1", 6.0)],
        [("*", 1.0)],
    ),
}


@pytest.mark.parametrize("name", list(ISOLATION))
def test_tenant_isolation(api: Api, request: pytest.FixtureRequest, name: str) -> None:
    path, data, query, project, t1_rows, t2_rows = ISOLATION[name]
    request.getfixturevalue(data)

    def rows(body: dict, tenant: str) -> list:
        assert {i["tenant_id"] for i in body["items"]} <= {tenant}
        return [project(i) for i in body["items"]]

    # a tenant key reads its own tenant, named or not; another tenant is not found
    own = ok(api.t1.get(path, **query))
    assert rows(own, "t1") == t1_rows
    assert ok(api.t1.get(path, **query, tenant_id="t1")) == own
    response = api.t1.get(path, **query, tenant_id="t2")
    assert (response.status_code, response.json()) == (404, OTHER_TENANT)
    assert rows(ok(api.t2.get(path, **query)), "t2") == t2_rows
    response = api.t2.get(path, **{**query, "tenant_id": "t1"})
    assert (response.status_code, response.json()) == (404, {"detail": "tenant 't1' not found"})
    # an admin key names the tenant
    assert ok(api.admin.get(path, **query, tenant_id="t1")) == own
    assert rows(ok(api.admin.get(path, **query, tenant_id="t2")), "t2") == t2_rows
    nobody = ok(api.admin.get(path, **query, tenant_id="t3"))
    assert (nobody["items"], nobody["count"], nobody["next_cursor"]) == ([], 0, None)


# an admin key without tenant_id on the list endpoints: every tenant, in the listing's order
EVERY_TENANT = {
    "anomalies": [("t1", (iso(at(3, 20)), 3)), ("t2", (iso(at(3, 10)), 5)), ("t1", (iso(at(3, 10)), 4))],
    "baselines": [("t1", (2, 10.5)), ("t2", (1, 1.5))],
    "specs": [("t1", ("*", 6.5)), ("t1", ("*", 6.75)), ("t1", ("f1", 6.0)), ("t2", ("*", 1.0))],
}


@pytest.mark.parametrize("name", list(EVERY_TENANT))
def test_admin_key_without_tenant_lists_every_tenant(api: Api, request: pytest.FixtureRequest, name: str) -> None:
    path, data, query, project, _t1_rows, _t2_rows = ISOLATION[name]
    request.getfixturevalue(data)
    items = ok(api.admin.get(path, **query))["items"]
    assert [(i["tenant_id"], project(i)) for i in items] == EVERY_TENANT[name]


def test_tenant_isolation_of_single_items_and_predict(
    api: Api, anomalies: dict[str, dict], baselines: dict[str, dict]
) -> None:
    for path in (f"/v1/anomalies/{anomalies['b1']['anomaly_id']}", f"/v1/baselines/{baselines['t2']['baseline_id']}"):
        assert api.t1.get(path).status_code == 404
        assert api.t2.get(path).status_code == 200
        assert api.admin.get(path).status_code == 200
    # predict: the same ids give t1's model to a t1 key and t2's to a t2 key
    assert ok(api.t1.post("/v1/baseline/predict", PREDICT))["baseline_id"] == baselines["v2"]["baseline_id"]
    t2_body = {**PREDICT, "drivers": {"production_count": 120}}
    assert ok(api.t2.post("/v1/baseline/predict", t2_body))["predicted"] == 16.5
    response = api.t2.post("/v1/baseline/predict", {**t2_body, "tenant_id": "t1"})
    assert (response.status_code, response.json()) == (404, {"detail": "tenant 't1' not found"})
