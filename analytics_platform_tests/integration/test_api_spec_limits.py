"""GET /v1/spec-limits against a real database: a tenant's '*' rows with a factory's own, versions by
valid_from, an admin key across tenants, paging past a since-always row."""

from __future__ import annotations

import pytest

from analytics_platform_tests.support.api import Api, jsonable, ok, pages, split
from analytics_platform_tests.support.api_data import T1_SPECS, T2_SPECS

# ------------------------------------------------------------------------------------------------
# GET /v1/spec-limits
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("spec_data")
def test_spec_limits_exact(api: Api) -> None:
    assert ok(api.t1.get("/v1/spec-limits")) == {
        "items": [jsonable(s) for s in T1_SPECS],
        "count": 5,
        "next_cursor": None,
    }


@pytest.mark.usefixtures("spec_data")
@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"factory_id": "f1"}, [0, 1, 2, 3]),  # with the tenant-wide '*' rows
        ({"factory_id": "f2"}, [0, 1, 4]),
        ({"factory_id": "f9"}, [0, 1]),
        ({"factory_id": "*"}, [0, 1]),
        ({"scope": "metric"}, [3]),
        ({"name": "ph", "factory_id": "f1"}, [0, 1, 2]),
    ],
)
def test_spec_limits_filters(api: Api, filters: dict, expected: list[int]) -> None:
    assert ok(api.t1.get("/v1/spec-limits", **filters))["items"] == [jsonable(T1_SPECS[i]) for i in expected]


@pytest.mark.usefixtures("spec_data")
def test_spec_limits_admin_sees_every_tenant(api: Api) -> None:
    assert ok(api.admin.get("/v1/spec-limits"))["items"] == [jsonable(s) for s in T1_SPECS + T2_SPECS]
    assert ok(api.admin.get("/v1/spec-limits", tenant_id="t2"))["items"] == [jsonable(T2_SPECS[0])]


@pytest.mark.usefixtures("spec_data")
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_spec_limits_pages_neither_skip_nor_repeat(api: Api, limit: int) -> None:
    # the cursor after a since-always row (no valid_from) must still find the next version of that limit
    items, sizes = pages(api.t1, "/v1/spec-limits", limit)
    assert items == [jsonable(s) for s in T1_SPECS]
    assert sizes == split(5, limit)
    items, sizes = pages(api.admin, "/v1/spec-limits", limit, factory_id="f1")
    assert items == [jsonable(T1_SPECS[i]) for i in (0, 1, 2, 3)] + [jsonable(T2_SPECS[0])]
    assert sizes == split(5, limit)
