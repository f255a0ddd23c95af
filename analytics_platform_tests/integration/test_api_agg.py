"""GET /v1/agg against a real database: stored windows exact, longer windows rolled up from hours (or read
from the daily continuous aggregate on TimescaleDB), epoch-aligned multi-day buckets, tenants, paging and
CSV. The rows and the hand-computed buckets are support/api_data.py's."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime

import pytest

from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import (
    Api,
    assert_422,
    assert_csv_equals_json,
    at,
    daily_view,
    iso,
    ok,
    pages,
    running,
    split,
)
from analytics_platform_tests.support.api_data import (
    AGG_QUERY,
    DAY_AFTER_S1,
    DAY_BEFORE_S1,
    DAY_S1,
    DAY_S2,
    STORED_0_TO_6,
    T2_DAY,
    TWO_HOURS,
    bucket,
    stored,
)
from analytics_platform_tests.support.stack import DatabaseHandle

# ------------------------------------------------------------------------------------------------
# GET /v1/agg
# ------------------------------------------------------------------------------------------------


def test_the_daily_view_exists_exactly_on_timescaledb(database: DatabaseHandle) -> None:
    """So that a run on each database covers one path of whole-day windows (see ANALYTICS_TIMESCALE)."""
    timescale = database.scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")
    assert daily_view(database) is timescale
    if os.environ.get("ANALYTICS_TIMESCALE") == "on":
        assert timescale


@pytest.mark.usefixtures("agg_data")
def test_agg_stored_window_exact(api: Api) -> None:
    body = ok(api.t1.get("/v1/agg", **AGG_QUERY, window_s=3600, start=iso(at(0)), end=iso(at(6))))
    assert body == {
        "window_s": 3600,
        "source_window_s": 3600,
        "source": "stored",
        "items": STORED_0_TO_6,
        "count": 5,
        "next_cursor": None,
    }


@pytest.mark.usefixtures("agg_data")
def test_agg_sensor_filter(api: Api) -> None:
    query = {**AGG_QUERY, "window_s": 3600, "start": iso(at(0)), "end": iso(at(6))}
    assert ok(api.t1.get("/v1/agg", **query, sensor_id="s2"))["items"] == [stored(1, "s2"), stored(5, "s2")]
    assert ok(api.t1.get("/v1/agg", **query, sensor_id="s9"))["items"] == []
    day = ok(api.t1.get("/v1/agg", **{**query, "window_s": 86400, "end": iso(at(24))}, sensor_id="s2"))
    assert day["items"] == [DAY_S2]


@pytest.mark.usefixtures("agg_data")
def test_agg_start_inclusive_end_exclusive(api: Api) -> None:
    query = {**AGG_QUERY, "window_s": 3600}
    one = ok(api.t1.get("/v1/agg", **query, start=iso(at(1)), end=iso(at(5))))["items"]
    assert one == [stored(1, "s1"), stored(1, "s2")]
    later = ok(api.t1.get("/v1/agg", **query, start="2025-08-20T01:00:00.000001Z", end=iso(at(5, 1))))["items"]
    assert later == [stored(5, "s1"), stored(5, "s2")]


@pytest.mark.usefixtures("agg_data")
def test_agg_day_rolled_up_from_hours(api: Api, database: DatabaseHandle) -> None:
    body = ok(api.t1.get("/v1/agg", **AGG_QUERY, window_s=86400, start=iso(at(0)), end=iso(at(24))))
    source, source_window = ("continuous_aggregate", 86400) if daily_view(database) else ("rollup", 3600)
    assert body == {
        "window_s": 86400,
        "source_window_s": source_window,
        "source": source,
        "items": [DAY_S1, DAY_S2],
        "count": 2,
        "next_cursor": None,
    }


@pytest.mark.usefixtures("agg_data")
def test_agg_two_hour_window_rolled_up_from_hours(api: Api) -> None:
    body = ok(api.t1.get("/v1/agg", **AGG_QUERY, window_s=7200, start=iso(at(0)), end=iso(at(6))))
    assert body == {
        "window_s": 7200,
        "source_window_s": 3600,
        "source": "rollup",
        "items": TWO_HOURS,
        "count": 4,
        "next_cursor": None,
    }


@pytest.mark.usefixtures("agg_data")
def test_agg_rollup_holds_the_buckets_starting_in_the_range(api: Api) -> None:
    # 01:00-06:00 at 7200 s: the 00:00 bucket starts before the range (it is not cut short), 04:00 is in
    body = ok(api.t1.get("/v1/agg", **AGG_QUERY, window_s=7200, start=iso(at(1)), end=iso(at(6))))
    assert body["items"] == TWO_HOURS[2:]
    # 00:00-04:00: the 04:00 bucket starts at the end: excluded
    body = ok(api.t1.get("/v1/agg", **AGG_QUERY, window_s=7200, start=iso(at(0)), end=iso(at(4))))
    assert body["items"] == TWO_HOURS[:2]


@pytest.mark.usefixtures("agg_data")
def test_agg_days_around_the_day(api: Api) -> None:
    body = ok(api.t1.get("/v1/agg", **AGG_QUERY, window_s=86400, start=iso(at(-24)), end=iso(at(48))))
    assert body["items"] == [DAY_BEFORE_S1, DAY_S1, DAY_S2, DAY_AFTER_S1]


@pytest.mark.usefixtures("agg_data")
def test_agg_two_day_window_is_epoch_aligned(api: Api, database: DatabaseHandle) -> None:
    # 2025-08-18 is an even number of days after 1970-01-01: the buckets are 08-18..08-20 and 08-20..08-22
    assert (at(-48) - datetime(1970, 1, 1, tzinfo=UTC)).days % 2 == 0
    body = ok(api.t1.get("/v1/agg", **AGG_QUERY, window_s=172800, start=iso(at(-48)), end=iso(at(72))))
    plan = ("continuous_aggregate", 86400) if daily_view(database) else ("rollup", 3600)
    assert (body["source"], body["source_window_s"]) == plan
    # s1 from 08-20: the day's nine readings (Σx² 120) and 9 at 08-21 00:00: n 10, sum 39, Σx² 201
    stddev_s1 = pytest.approx(math.sqrt((201 - 39**2 / 10) / 9), rel=1e-12)
    assert body["items"] == [
        bucket(at(-48), 172800, "s1", 1, 100.0, 100.0, 100.0, 100.0, None, 100.0, 100.0),
        bucket(at(0), 172800, "s1", 10, 39.0, 3.9, 1.0, 9.0, stddev_s1, 2.0, 9.0),
        {**DAY_S2, "bucket_end": iso(at(48)), "window_s": 172800},
    ]
    # a range starting 08-19 leaves out the bucket that started 08-18
    later = ok(api.t1.get("/v1/agg", **AGG_QUERY, window_s=172800, start=iso(at(-24)), end=iso(at(72))))
    assert later["items"] == body["items"][1:]


@pytest.mark.usefixtures("agg_data")
def test_agg_t2_day_with_the_same_ids(api: Api) -> None:
    query = {**AGG_QUERY, "window_s": 86400, "start": iso(at(0)), "end": iso(at(24))}
    assert ok(api.admin.get("/v1/agg", **query, tenant_id="t2"))["items"] == [T2_DAY]
    assert ok(api.t2.get("/v1/agg", **query))["items"] == [T2_DAY]


@pytest.mark.usefixtures("agg_data")
@pytest.mark.parametrize(
    ("window_s", "start", "end", "total"),
    [
        pytest.param(3600, at(0), at(6), 5, id="stored"),
        pytest.param(86400, at(-48), at(72), 4, id="days"),
        pytest.param(7200, at(0), at(6), 4, id="two-hours"),
        pytest.param(172800, at(-48), at(72), 3, id="two-days"),
    ],
)
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_agg_pages_neither_skip_nor_repeat(
    api: Api, window_s: int, start: datetime, end: datetime, total: int, limit: int
) -> None:
    query = {**AGG_QUERY, "window_s": window_s, "start": iso(start), "end": iso(end)}
    everything = ok(api.t1.get("/v1/agg", **query))
    assert everything["count"] == total and everything["next_cursor"] is None
    items, sizes = pages(api.t1, "/v1/agg", limit, **query)
    assert items == everything["items"]
    assert sizes == split(total, limit)


@pytest.mark.usefixtures("agg_data")
@pytest.mark.parametrize(("window_s", "end"), [(3600, at(6)), (86400, at(48)), (7200, at(6))])
def test_agg_csv_equals_json(api: Api, window_s: int, end: datetime) -> None:
    assert_csv_equals_json(api.t1, "/v1/agg", 2, **AGG_QUERY, window_s=window_s, start=iso(at(-24)), end=iso(end))


# ------------------------------------------------------------------------------------------------
# 422: every parameter rule, with its location and message
# ------------------------------------------------------------------------------------------------


def test_agg_rollup_of_too_many_source_rows(settings: PlatformSettings, database: DatabaseHandle) -> None:
    """Two-day buckets rolled up from hours: one bucket is 48 source rows, more than 24 per allowed bucket.
    The continuous aggregate (TimescaleDB) reads 2 daily rows for it and answers."""
    small = settings.model_copy(update={"api_max_buckets": 1})
    with running(small, database) as api:
        response = api.t1.get("/v1/agg", **AGG_QUERY, window_s=172800, start=iso(at(0)), end=iso(at(48)))
    if daily_view(database):
        assert ok(response)["source"] == "continuous_aggregate"
    else:
        assert_422(
            response, ["query", "end"], "range is too long to roll up; use a coarser window_s or a shorter range"
        )
