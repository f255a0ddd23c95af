"""GET /v1/trends (api/routes/trends.py) against a real database: the rows the trend computation
stored (results/trends.py over hourly aggregates of two tenants), exact values, filters, paging, CSV,
tenant isolation and refusals."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from analytics_platform.results.trends import TrendOptions, recompute_trends
from analytics_platform.transforms.trends import mann_kendall
from analytics_platform_tests.support.api import (
    OTHER_TENANT,
    Api,
    assert_422,
    assert_csv_equals_json,
    at,
    iso,
    ok,
    pages,
    split,
)
from analytics_platform_tests.support.stack import DatabaseHandle

UP = [10.0, 11.0, 12.5, 13.0, 14.0, 15.5]
DOWN = [9.0, 8.0, 8.0, 7.0, 6.0, 5.0]  # one tie: Var(S) = (6·5·17 − 2·1·9) / 18 = 492 / 18
QUERY = {"factory_id": "f1", "start": iso(at(6)), "end": iso(at(8))}


def mean(db: DatabaseHandle, tenant: str, machine: str, hour: int, value: float) -> None:
    db.query(
        """INSERT INTO analytics.analytics_agg (bucket_start, bucket_end, window_s, tenant_id, factory_id, machine_id,
                                                sensor_id, metric, count_n, avg_v)
           VALUES (%s, %s, 3600, %s, 'f1', %s, 's1', 'temp', 1, %s) RETURNING 1""",
        (at(hour), at(hour + 1), tenant, machine, value),
    )


@pytest.fixture
def trend_data(database: DatabaseHandle) -> None:
    for h in range(6):
        mean(database, "t1", "m1", h, UP[h])
        mean(database, "t1", "m2", h, DOWN[h])
        mean(database, "t2", "m1", h, DOWN[h])
    with database.connect(database.pipeline_url) as conn:
        assert recompute_trends(conn, [at(6), at(7)], TrendOptions(windows_hours=(6,), min_points=6)) == (6, 0)


def item(machine: str, values: list[float], slope: float, intercept: float, direction: str, hour: int = 6) -> dict:
    mk = mann_kendall(values)
    n = len(values) if hour == 6 else 5
    return {
        "window_end": iso(at(hour)),
        "window_start": iso(at(hour - 6)),
        "window_hours": 6,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": machine,
        "source": "metric",
        "sensor_id": "s1",
        "name": "temp",
        "unit": None,
        "n": n,
        "slope_per_hour": slope,
        "intercept": intercept,
        "mk_s": mk.s,
        "mk_var_s": mk.var_s,
        "mk_z": mk.z,
        "p_value": mk.p_value,
        "confidence": 1 - mk.p_value,
        "direction": direction,
        "first_time": iso(at(hour - 6)),
        "last_time": iso(at(5)),
    }


@pytest.mark.usefixtures("trend_data")
def test_trends_exact(api: Api) -> None:
    body = ok(api.t1.get("/v1/trends", **{**QUERY, "end": iso(at(7))}))
    up, down = body["items"]
    # the 15 pairwise slopes sorted: 0.5, 0.75, then seven 1s, ...: the 8th is 1; 12.75 − 1·2.5
    assert up == item("m1", UP, 1.0, 10.25, "increasing")
    # seven −1s, then −0.8 (the 8th), −0.75, ...; median(y) 7.5 − (−0.8)·2.5
    assert down == item("m2", DOWN, -0.8, 9.5, "decreasing")
    assert (up["mk_s"], up["mk_var_s"]) == (15, 6 * 5 * 17 / 18)
    assert (down["mk_s"], down["mk_var_s"]) == (-14, 492 / 18)
    assert down["mk_z"] == -13 / math.sqrt(492 / 18)
    assert body["count"] == 2


@pytest.mark.usefixtures("trend_data")
@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"machine_id": "m2"}, [("m2", 6), ("m2", 7)]),
        ({"direction": "increasing"}, [("m1", 6)]),
        ({"source": "kpi"}, []),
        ({"name": "temp", "sensor_id": "s1", "window_hours": 6, "end": iso(at(7))}, [("m1", 6), ("m2", 6)]),
        ({"window_hours": 24}, []),
    ],
)
def test_trends_filters(api: Api, filters: dict, expected: list[tuple]) -> None:
    body = ok(api.t1.get("/v1/trends", **{**QUERY, **filters}))
    assert [(i["machine_id"], int(i["window_end"][11:13])) for i in body["items"]] == expected


@pytest.mark.usefixtures("trend_data")
def test_the_window_ending_later_holds_only_the_points_inside_it(api: Api) -> None:
    """The window ending at 07:00 is [01:00, 07:00): five of the six hours, judged `stable` (fewer
    than TrendOptions.min_points), with no slope."""
    (later,) = ok(api.t1.get("/v1/trends", **{**QUERY, "start": iso(at(7)), "machine_id": "m1"}))["items"]
    assert (later["n"], later["slope_per_hour"], later["direction"], later["first_time"]) == (
        5,
        None,
        "stable",
        iso(at(1)),
    )


@pytest.mark.usefixtures("trend_data")
@pytest.mark.parametrize("limit", [1, 3])
def test_trends_pages_neither_skip_nor_repeat(api: Api, limit: int) -> None:
    items, sizes = pages(api.t1, "/v1/trends", limit, **QUERY)
    assert [(i["window_end"], i["machine_id"]) for i in items] == [
        (iso(at(6)), "m1"),
        (iso(at(6)), "m2"),
        (iso(at(7)), "m1"),
        (iso(at(7)), "m2"),
    ]
    assert sizes == split(4, limit)


@pytest.mark.usefixtures("trend_data")
def test_trends_csv_equals_json(api: Api) -> None:
    assert_csv_equals_json(api.t1, "/v1/trends", 3, **QUERY)


@pytest.mark.usefixtures("trend_data")
def test_trends_tenant_isolation(api: Api) -> None:
    assert {i["tenant_id"] for i in ok(api.admin.get("/v1/trends", tenant_id="t2", **QUERY))["items"]} == {"t2"}
    assert ok(api.t1.get("/v1/trends", tenant_id="t2", **QUERY), 404) == OTHER_TENANT
    assert {i["tenant_id"] for i in ok(api.t1.get("/v1/trends", **QUERY))["items"]} == {"t1"}


def test_trends_refusals(api: Api) -> None:
    assert_422(
        api.t1.get("/v1/trends", **{**QUERY, "window_hours": 0}),
        ["query", "window_hours"],
        "Input should be greater than or equal to 1",
    )
    assert_422(
        api.t1.get("/v1/trends", **{**QUERY, "direction": "up"}),
        ["query", "direction"],
        "Input should be 'increasing', 'decreasing' or 'stable'",
    )
    assert api.t1.get("/v1/trends", start=QUERY["start"], end=QUERY["end"]).status_code == 422  # no factory
    assert ok(api.t1.get("/v1/trends", **{**QUERY, "start": iso(at(6) + timedelta(days=1))}), 422)
