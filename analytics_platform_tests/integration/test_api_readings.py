"""GET /v1/readings against a real database: the served columns of raw readings exact, paging and CSV."""

from __future__ import annotations

import pytest

from analytics_platform_tests.support.api import Api, assert_csv_equals_json, ok, pages, split
from analytics_platform_tests.support.api_data import READING_QUERY, T1_READINGS, reading_item

# ------------------------------------------------------------------------------------------------
# GET /v1/readings
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("reading_data")
def test_readings_exact(api: Api) -> None:
    assert ok(api.t1.get("/v1/readings", **READING_QUERY)) == {
        "items": [reading_item(r) for r in T1_READINGS],
        "count": 5,
        "next_cursor": None,
    }
    assert ok(api.t1.get("/v1/readings", **READING_QUERY, sensor_id="s2"))["items"] == [
        reading_item(T1_READINGS[1]),
        reading_item(T1_READINGS[4]),
    ]


@pytest.mark.usefixtures("reading_data")
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_readings_pages_neither_skip_nor_repeat(api: Api, limit: int) -> None:
    items, sizes = pages(api.t1, "/v1/readings", limit, **READING_QUERY)
    assert items == [reading_item(r) for r in T1_READINGS]
    assert sizes == split(5, limit)


@pytest.mark.usefixtures("reading_data")
def test_readings_csv_equals_json(api: Api) -> None:
    assert_csv_equals_json(api.t1, "/v1/readings", 2, **READING_QUERY)
