"""GET /v1/kpi and GET /v1/event-rollup (api/routes/kpi.py) against a real database: exact items, filters,
periods and windows, paging and CSV, over support/api_data.py's rows."""

from __future__ import annotations

import pytest

from analytics_platform_tests.support.api import Api, assert_csv_equals_json, at, iso, jsonable, ok, pages, split
from analytics_platform_tests.support.api_data import EVENT_QUERY, KPI_QUERY, T1_EVENTS, T1_KPIS, event, kpi

# ------------------------------------------------------------------------------------------------
# GET /v1/event-rollup
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("event_data")
def test_event_rollup_exact(api: Api) -> None:
    body = ok(api.t1.get("/v1/event-rollup", **EVENT_QUERY))
    assert body == {"items": [jsonable(e) for e in T1_EVENTS], "count": 6, "next_cursor": None}


@pytest.mark.usefixtures("event_data")
@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"machine_id": "m2"}, [3]),
        ({"event_type": "lab_result"}, [1, 2]),
        ({"event_type": "lab_result", "subject": "ph"}, [1]),
        ({"subject": ""}, [0, 3, 4]),  # the rollups without a subject
        ({"machine_id": "m1", "event_type": "sweep_batch"}, [5]),
        ({"machine_id": "m9"}, []),
    ],
)
def test_event_rollup_filters(api: Api, filters: dict, expected: list[int]) -> None:
    body = ok(api.t1.get("/v1/event-rollup", **EVENT_QUERY, **filters))
    assert body["items"] == [jsonable(T1_EVENTS[i]) for i in expected]


@pytest.mark.usefixtures("event_data")
def test_event_rollup_other_windows(api: Api) -> None:
    day = ok(api.t1.get("/v1/event-rollup", **{**EVENT_QUERY, "window_s": 86400, "start": iso(at(0))}))
    assert day["items"] == [
        jsonable(event(0, "m1", "device_health", "", 22, None, None, None, None, 68.75, window_s=86400))
    ]
    five = ok(api.t1.get("/v1/event-rollup", **{**EVENT_QUERY, "window_s": 300}))
    assert five["items"] == [
        jsonable(event(3, "m1", "device_health", "", 1, None, None, None, None, 0.0, window_s=300))
    ]


@pytest.mark.usefixtures("event_data")
@pytest.mark.parametrize("limit", [1, 2, 3, 4])
def test_event_rollup_pages_neither_skip_nor_repeat(api: Api, limit: int) -> None:
    items, sizes = pages(api.t1, "/v1/event-rollup", limit, **EVENT_QUERY)
    assert items == [jsonable(e) for e in T1_EVENTS]
    assert sizes == split(6, limit)


@pytest.mark.usefixtures("event_data")
def test_event_rollup_csv_equals_json(api: Api) -> None:
    assert_csv_equals_json(api.t1, "/v1/event-rollup", 4, **EVENT_QUERY)


# ------------------------------------------------------------------------------------------------
# GET /v1/kpi
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("kpi_data")
def test_kpi_all_exact(api: Api) -> None:
    assert ok(api.t1.get("/v1/kpi", **KPI_QUERY)) == {
        "items": [jsonable(k) for k in T1_KPIS],
        "count": 7,
        "next_cursor": None,
    }


@pytest.mark.usefixtures("kpi_data")
def test_kpi_one_exact(api: Api) -> None:
    assert ok(api.t1.get("/v1/kpi", **KPI_QUERY, kpi="oee")) == {
        "items": [jsonable(T1_KPIS[i]) for i in (1, 3, 6)],
        "count": 3,
        "next_cursor": None,
    }
    assert ok(api.t1.get("/v1/kpi", **KPI_QUERY, kpi="oee", machine_id="m1"))["items"] == [
        jsonable(T1_KPIS[1]),
        jsonable(T1_KPIS[6]),
    ]
    # a known KPI without rows is an empty page, not an error
    assert ok(api.t1.get("/v1/kpi", **KPI_QUERY, kpi="carbon_kg")) == {"items": [], "count": 0, "next_cursor": None}


@pytest.mark.usefixtures("kpi_data")
def test_kpi_periods_day_and_shift(api: Api) -> None:
    query = {**KPI_QUERY, "start": iso(at(-1)), "end": iso(at(24))}
    assert ok(api.t1.get("/v1/kpi", **{**query, "period": "day"}))["items"] == [
        jsonable(kpi(0, "m1", "oee", 0.6, "ratio", period="day"))
    ]
    assert ok(api.t1.get("/v1/kpi", **{**query, "period": "shift"}))["items"] == [
        jsonable(kpi(-1, "m1", "oee", 0.55, "ratio", period="shift", details={"shift": "C"}))
    ]


@pytest.mark.usefixtures("kpi_data")
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_kpi_pages_neither_skip_nor_repeat(api: Api, limit: int) -> None:
    items, sizes = pages(api.t1, "/v1/kpi", limit, **KPI_QUERY)
    assert items == [jsonable(k) for k in T1_KPIS]
    assert sizes == split(7, limit)


@pytest.mark.usefixtures("kpi_data")
def test_kpi_csv_equals_json(api: Api) -> None:
    assert_csv_equals_json(api.t1, "/v1/kpi", 3, **KPI_QUERY)
