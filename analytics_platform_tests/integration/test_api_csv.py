"""CSV answers of the /v1 listings: every cell rendered as documented, JSON cells, the Accept header's
ranking, and a stored NaN as an empty cell like its JSON null."""

from __future__ import annotations

import csv
import io
import math

import pytest

from analytics_platform_tests.support.api import Api, at, insert, iso, jsonable, ok
from analytics_platform_tests.support.api_data import AGG_QUERY, KPI_QUERY, T1_KPIS, kpi
from analytics_platform_tests.support.stack import DatabaseHandle

# ------------------------------------------------------------------------------------------------
# CSV details
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("agg_data")
def test_csv_cells_are_rendered_as_documented(api: Api) -> None:
    response = api.t1.csv("/v1/agg", **AGG_QUERY, window_s=3600, start=iso(at(5)), end=iso(at(6)))
    assert response.text == (
        "bucket_start,bucket_end,window_s,tenant_id,factory_id,machine_id,sensor_id,metric,count,sum,avg,min,max,"
        "stddev,first,last,p50,p95,provisional\n"
        f"2025-08-20T05:00:00Z,2025-08-20T06:00:00Z,3600,t1,f1,m1,s1,temp,2,7.0,3.5,3.0,4.0,{math.sqrt(0.5)!r},"
        "4.0,3.0,3.5,3.95,false\n"
        "2025-08-20T05:00:00Z,2025-08-20T06:00:00Z,3600,t1,f1,m1,s2,temp,1,7.0,7.0,7.0,7.0,,7.0,7.0,7.0,7.0,false\n"
    )
    assert "X-Next-Cursor" not in response.headers


@pytest.mark.usefixtures("kpi_data")
def test_csv_json_cells_and_accept_ranking(api: Api) -> None:
    response = api.t1.csv("/v1/kpi", **KPI_QUERY, kpi="sec_kwh_per_unit")
    assert response.text.splitlines()[1] == (
        "2025-08-20T03:00:00Z,2025-08-20T04:00:00Z,hour,t1,f1,m1,sec_kwh_per_unit,,kWh/unit,"
        'no units produced in the period,"{""units"":0.0,""energy_kwh"":12.5}"'
    )
    # JSON ranked first (or no CSV asked for) answers JSON
    for accept in ("application/json, text/csv", "application/json", "*/*"):
        as_json = api.t1.get("/v1/kpi", accept=accept, **KPI_QUERY, kpi="sec_kwh_per_unit")
        assert as_json.headers["content-type"] == "application/json"
        assert as_json.json()["items"] == [jsonable(T1_KPIS[2])]
    assert api.t1.get("/v1/kpi", accept="text/csv, application/json", **KPI_QUERY).headers["content-type"] == (
        "text/csv; charset=utf-8"
    )


# ------------------------------------------------------------------------------------------------
# bugs found while writing these tests (each asserts the correct behaviour)
# ------------------------------------------------------------------------------------------------


def test_bug_csv_cell_of_a_nan_is_empty_like_its_json_null(api: Api, database: DatabaseHandle) -> None:
    """A NaN stored in a float column is served as JSON null; its CSV cell must be empty, as for null
    (respond._cell says "NaN -> null -> empty", but orjson renders NaN as the text `null`)."""
    insert(database, "analytics_kpi", [{**kpi(3, "m1", "oee", float("nan"), "ratio"), "null_reason": None}])
    as_json = ok(api.t1.get("/v1/kpi", **KPI_QUERY))
    assert as_json["items"][0]["value"] is None
    rows = list(csv.reader(io.StringIO(api.t1.csv("/v1/kpi", **KPI_QUERY).text)))
    assert rows[1][rows[0].index("value")] == ""
