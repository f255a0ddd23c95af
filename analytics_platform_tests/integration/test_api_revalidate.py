"""The fast path of GETs of /v1/agg and /v1/kpi (api/revalidate.py) answers exactly what FastAPI answers.

Two apps over the same database: the API as it runs, and the same API without the fast path (its
middleware taken out before the app starts). Every request below, conditional (`If-None-Match`) or
plain, must get the same status, headers and body from both: 304s and 200s, a plain GET's first answer
(made afresh) and its repeats (the response cache's), the tag and Cache-Control, gzip, CSV, `fields=`,
other tenants, and every error before the tag (422 messages, 401s, 404 for another tenant) that the
fast path must leave to FastAPI, and the database's outage."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import fastapi.routing
import httpx
import polars as pl
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from analytics_platform.api import revalidate
from analytics_platform.api.app import REVALIDATED, create_app
from analytics_platform.api.response_cache import KeptAnswer
from analytics_platform.api.revalidate import Revalidate, fast_routes
from analytics_platform.results.aggregates import recompute_aggregates
from analytics_platform.results.kpis import replace_kpis
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms import machine_kpis as mk
from analytics_platform_tests.support.api import at, insert, iso, make_key
from analytics_platform_tests.support.api_data import KPI_QUERY, kpi, materialise, reading
from analytics_platform_tests.support.stack import DatabaseHandle

AGG = {
    "factory_id": "f1",
    "machine_id": "m1",
    "metric": "temp",
    "window_s": "3600",
    "start": iso(at(3)),
    "end": iso(at(5)),
}
# parameters the route refuses (422), or another tenant's (404): FastAPI's to answer, message and all
BAD_AGG = [
    {**AGG, "window_s": "abc"},
    {**AGG, "window_s": "0"},
    {**AGG, "window_s": "7"},
    {**AGG, "start": "2025-08-20T03:00:00"},  # no zone
    {**AGG, "start": "yesterday"},
    {**AGG, "end": iso(at(2))},
    {**AGG, "start": "1800-01-01T00:00:00Z"},
    {**AGG, "metric": "nope"},
    {**AGG, "machine_id": ""},
    {**AGG, "machine_id": "m\x001"},
    {**AGG, "machine_id": "m" * 201},
    {**AGG, "limit": "0"},
    {**AGG, "limit": "100000"},
    {**AGG, "cursor": "not-a-cursor"},
    {**AGG, "fields": "avg,mean"},
    {**AGG, "tenant_id": "t2"},  # another tenant: 404
    {k: v for k, v in AGG.items() if k != "metric"},
]
LAX_WINDOWS = (" 3600", "3600.0", "03600", "+3600")  # whatever pydantic makes of them, the same
MOMENTS = ("2025-08-20T03:00:00+00:00", "2025-08-20 03:00:00Z", "2025-08-20T05:00:00+02:00", "1755658800")
BAD_KPI = [
    {**KPI_QUERY, "period": "fortnight"},
    {**KPI_QUERY, "kpi": "nope"},
    {**KPI_QUERY, "scope": "plant"},
    {k: v for k, v in KPI_QUERY.items() if k != "factory_id"},
    {**KPI_QUERY, "start": KPI_QUERY["end"]},
]


@contextmanager
def two_apps(settings: PlatformSettings) -> Iterator[tuple[TestClient, TestClient]]:
    """The API as it runs, and the same without the fast path (neither its front nor its middleware)."""
    plain = create_app(settings)
    plain.user_middleware = [m for m in plain.user_middleware if m.cls is not Revalidate]
    plain.front = None
    with (
        TestClient(create_app(settings), raise_server_exceptions=False) as fast,
        TestClient(plain, raise_server_exceptions=False) as reference,
    ):
        yield fast, reference


def seed(settings: PlatformSettings, database: DatabaseHandle) -> None:
    rows = [
        reading(at(3, 10), "s1", 1.0, 1),
        reading(at(4, 20), "s1", 3.0, 2),
        reading(at(3, 10), "s1", 2.0, 3, tenant="t2"),
    ]
    insert(database, "raw_sensor_readings", rows)
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        recompute_aggregates(conn, list(settings.windows), at(3), at(5))
    hours = pl.DataFrame(
        [
            {"period": "hour", "label": None, "tenant_id": None, "period_start": at(h), "period_end": at(h + 1)}
            for h in (3, 4)
        ],
        schema=mk.PERIOD_SCHEMA,
    )
    frame = pl.DataFrame(
        [{**kpi(h, "m1", "oee", v, "ratio"), "details": None} for h, v in ((3, 0.5), (4, 0.75))],
        schema=mk.OUTPUT_SCHEMA,
    )
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        replace_kpis(conn, frame, hours)


def same(fast: TestClient, reference: TestClient, path: str, params: dict | list, headers: dict) -> httpx.Response:
    """One request to both apps: the same status, headers and body; the fast path's answer."""
    ours = fast.get(path, params=params, headers=headers)
    theirs = reference.get(path, params=params, headers=headers)
    assert (ours.status_code, sorted(ours.headers.multi_items()), ours.content) == (
        theirs.status_code,
        sorted(theirs.headers.multi_items()),
        theirs.content,
    ), (path, params, headers)
    return ours


def test_every_route_it_serves_is_read_as_fastapi_reads_it(settings: PlatformSettings) -> None:
    """The routes' signatures are all the fast path knows how to read (a query parameter it could not
    read exactly as FastAPI does would fail here, not serve a different answer)."""
    routes = fast_routes(create_app(settings), REVALIDATED)
    assert sorted(routes) == sorted(REVALIDATED)
    assert {p.name for p in routes["/v1/kpi"].params} == {
        "start",
        "end",
        "period",
        "factory_id",
        "scope",
        "tenant_id",
        "machine_id",
        "kpi",
        "limit",
        "cursor",
    }


def cache_lookups(client: TestClient) -> dict[str, float]:
    """The app's response-cache lookups so far, by result (its own metrics registry)."""
    registry = client.app.state.registry
    name = "analytics_api_response_cache_lookups_total"
    return {result: registry.get_sample_value(name, {"result": result}) or 0.0 for result in ("hit", "miss")}


def test_the_fast_path_skips_fastapis_request_machinery(
    settings: PlatformSettings, database: DatabaseHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the fast path is for: FastAPI resolves no signature for a GET it answers, a conditional one
    (304) or a plain one, made afresh or from the response cache; errors are FastAPI's."""
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    solved = []
    solve = fastapi.routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs["request"].url.path)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    with two_apps(settings) as (fast, _):
        key = {"X-API-Key": t1}
        made = [fast.get(path, params=q, headers=key) for path, q in (("/v1/agg", AGG), ("/v1/kpi", KPI_QUERY))]
        assert [answer.status_code for answer in made] == [200, 200]
        assert cache_lookups(fast) == {"hit": 0, "miss": 2}
        again = [fast.get(path, params=q, headers=key) for path, q in (("/v1/agg", AGG), ("/v1/kpi", KPI_QUERY))]
        assert [a.content for a in again] == [m.content for m in made]
        assert cache_lookups(fast) == {"hit": 2, "miss": 2}  # the repeats are the response cache's answers
        tags = [answer.headers["ETag"] for answer in made]
        assert fast.get("/v1/agg", params=AGG, headers={**key, "If-None-Match": tags[0]}).status_code == 304
        assert fast.get("/v1/kpi", params=KPI_QUERY, headers={**key, "If-None-Match": tags[1]}).status_code == 304
        assert fast.get("/v1/agg", params=AGG, headers={**key, "If-None-Match": 'W/"old"'}).status_code == 200
        assert solved == []
        assert (
            fast.get("/v1/agg", params={**AGG, "window_s": "7"}, headers={**key, "If-None-Match": "*"}).status_code
            == 422
        )
        assert fast.get("/v1/agg", params={**AGG, "metric": "nope"}, headers=key).status_code == 422
        assert fast.get("/v1/kpi", params=KPI_QUERY).status_code == 401
        assert solved == ["/v1/agg", "/v1/agg", "/v1/kpi"]  # an error is FastAPI's to answer


def same_twice(
    fast: TestClient, reference: TestClient, path: str, params: dict | list, headers: dict
) -> httpx.Response:
    """A plain GET asked twice of both apps (the first answer made afresh, the second, where the route
    keeps it, the response cache's): the same status, headers and body every time."""
    first = same(fast, reference, path, params, headers)
    second = same(fast, reference, path, params, headers)
    assert (second.status_code, second.content) == (first.status_code, first.content)
    return second


def test_plain_gets_of_agg_get_what_fastapi_answers(settings: PlatformSettings, database: DatabaseHandle) -> None:
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    _, t2 = make_key(database, "t2", "t2-reader")
    _, admin = make_key(database, None, "admin-reader")
    with two_apps(settings) as (fast, reference):
        key = {"X-API-Key": t1}
        plain = same_twice(fast, reference, "/v1/agg", AGG, key)
        assert plain.status_code == 200 and plain.json()["count"] == 2
        assert plain.headers["Cache-Control"] == "private, no-cache"
        for headers in (
            {"Accept-Encoding": "gzip"},
            {"Accept": "text/csv"},
            {"Accept": "text/csv", "Accept-Encoding": "gzip"},
            {"Accept": "application/json, text/csv"},
        ):
            assert same_twice(fast, reference, "/v1/agg", AGG, {**key, **headers}).status_code == 200
        assert same_twice(fast, reference, "/v1/agg", {**AGG, "fields": "avg"}, key).json()["items"][0] == {
            "bucket_start": iso(at(3)),
            "sensor_id": "s1",
            "avg": 1.0,
            "provisional": False,
        }
        rolled = {**AGG, "window_s": "7200", "start": iso(at(2)), "end": iso(at(6))}
        assert same_twice(fast, reference, "/v1/agg", rolled, key).json()["count"] == 2
        assert same_twice(fast, reference, "/v1/agg", {**AGG, "unasked": "x"}, key).status_code == 200
        paged = same_twice(fast, reference, "/v1/agg", {**AGG, "limit": "1"}, {**key, "Accept": "text/csv"})
        assert paged.headers["Link"].startswith("<http://testserver/v1/agg?")  # the CSV page names the next one
        nxt = same_twice(fast, reference, "/v1/agg", {**AGG, "cursor": paged.headers["X-Next-Cursor"]}, key)
        assert [item["avg"] for item in nxt.json()["items"]] == [3.0]

        for params in BAD_AGG:
            assert same(fast, reference, "/v1/agg", params, key).status_code in (404, 422)
        for lax in LAX_WINDOWS:
            same_twice(fast, reference, "/v1/agg", {**AGG, "window_s": lax}, key)
        for moment in MOMENTS:
            same_twice(fast, reference, "/v1/agg", {**AGG, "start": moment}, key)
        twice = [*AGG.items(), ("machine_id", "m2")]  # the last value counts, as FastAPI reads it
        assert same_twice(fast, reference, "/v1/agg", twice, key).json()["count"] == 0

        for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "apk_nope"}, {"X-API-Key": t1[:-1] + "x"}):
            assert same(fast, reference, "/v1/agg", AGG, headers).status_code == 401
        assert same(fast, reference, "/v1/agg", AGG, {"X-API-Key": admin}).status_code == 422
        admin_t2 = same_twice(fast, reference, "/v1/agg", {**AGG, "tenant_id": "t2"}, {"X-API-Key": admin})
        assert admin_t2.json()["items"][0]["avg"] == 2.0
        t2_own = same_twice(fast, reference, "/v1/agg", AGG, {"X-API-Key": t2})
        assert t2_own.json()["items"][0]["avg"] == 2.0  # the same ids, the other tenant's answer
        assert t2_own.headers["ETag"] not in (plain.headers["ETag"], admin_t2.headers["ETag"])

        for app in (fast.app, reference.app):
            app.state.clock = lambda: at(5, 30)  # hour 5 open: provisional, no-store, never kept
        open_hour = {**AGG, "start": iso(at(5)), "end": iso(at(6))}
        live = same_twice(fast, reference, "/v1/agg", open_hour, key)
        assert live.headers["Cache-Control"] == "no-store" and "ETag" not in live.headers


def test_plain_gets_of_kpi_get_what_fastapi_answers(settings: PlatformSettings, database: DatabaseHandle) -> None:
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    with two_apps(settings) as (fast, reference):
        key = {"X-API-Key": t1}
        stored = same_twice(fast, reference, "/v1/kpi", KPI_QUERY, key)
        assert [(i["period_start"], i["value"]) for i in stored.json()["items"]] == [
            (iso(at(3)), 0.5),
            (iso(at(4)), 0.75),
        ]
        for headers in ({"Accept-Encoding": "gzip"}, {"Accept": "text/csv"}):
            assert same_twice(fast, reference, "/v1/kpi", KPI_QUERY, {**key, **headers}).status_code == 200
        assert same_twice(fast, reference, "/v1/kpi", {**KPI_QUERY, "kpi": "oee"}, key).json()["count"] == 2
        combined = {**KPI_QUERY, "period": "custom", "scope": "factory"}
        assert same_twice(fast, reference, "/v1/kpi", combined, key).status_code == 200
        for params in BAD_KPI:
            assert same(fast, reference, "/v1/kpi", params, key).status_code == 422
        assert same(fast, reference, "/v1/kpi", KPI_QUERY, {}).status_code == 401


def test_conditional_gets_of_agg_get_what_fastapi_answers(settings: PlatformSettings, database: DatabaseHandle) -> None:
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    _, t2 = make_key(database, "t2", "t2-reader")
    _, admin = make_key(database, None, "admin-reader")
    with two_apps(settings) as (fast, reference):
        tag = fast.get("/v1/agg", params=AGG, headers={"X-API-Key": t1}).headers["ETag"]
        key = {"X-API-Key": t1}
        for match in (tag, "*", f'"other", {tag.removeprefix("W/")}', 'W/"other"'):
            answer = same(fast, reference, "/v1/agg", AGG, {**key, "If-None-Match": match})
            assert answer.status_code == (200 if match == 'W/"other"' else 304)
        changed = same(fast, reference, "/v1/agg", AGG, {**key, "If-None-Match": 'W/"old"', "Accept-Encoding": "gzip"})
        assert changed.status_code == 200 and changed.json()["count"] == 2
        as_csv = same(fast, reference, "/v1/agg", AGG, {**key, "If-None-Match": tag, "Accept": "text/csv"})
        assert as_csv.status_code == 200  # the CSV answer has a tag of its own
        assert (
            same(fast, reference, "/v1/agg", {**AGG, "fields": "avg"}, {**key, "If-None-Match": tag}).status_code == 200
        )
        rolled = {**AGG, "window_s": "7200", "start": iso(at(2)), "end": iso(at(6))}
        assert same(fast, reference, "/v1/agg", rolled, {**key, "If-None-Match": "*"}).status_code == 304
        assert (
            same(fast, reference, "/v1/agg", {**AGG, "unasked": "x"}, {**key, "If-None-Match": "*"}).status_code == 304
        )

        for params in BAD_AGG:
            assert same(fast, reference, "/v1/agg", params, {**key, "If-None-Match": "*"}).status_code in (404, 422)
        for lax in LAX_WINDOWS:
            same(fast, reference, "/v1/agg", {**AGG, "window_s": lax}, {**key, "If-None-Match": "*"})
        for moment in MOMENTS:
            same(fast, reference, "/v1/agg", {**AGG, "start": moment}, {**key, "If-None-Match": "*"})
        twice = [*AGG.items(), ("machine_id", "m2")]  # the last value counts, as FastAPI reads it
        other = same(fast, reference, "/v1/agg", twice, {**key, "If-None-Match": tag})
        assert other.status_code == 200 and other.json()["count"] == 0

        for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "apk_nope"}, {"X-API-Key": t1[:-1] + "x"}):
            assert same(fast, reference, "/v1/agg", AGG, {**headers, "If-None-Match": "*"}).status_code == 401
        assert same(fast, reference, "/v1/agg", AGG, {"X-API-Key": admin, "If-None-Match": "*"}).status_code == 422
        admin_t2 = same(
            fast, reference, "/v1/agg", {**AGG, "tenant_id": "t2"}, {"X-API-Key": admin, "If-None-Match": tag}
        )
        assert admin_t2.status_code == 200 and admin_t2.json()["items"][0]["avg"] == 2.0
        t2_own = same(fast, reference, "/v1/agg", AGG, {"X-API-Key": t2, "If-None-Match": tag})
        assert t2_own.status_code == 200 and t2_own.headers["ETag"] != tag  # tenants never share a tag

        for app in (fast.app, reference.app):
            app.state.clock = lambda: at(5, 30)  # hour 5 open: provisional, no-store, never a 304
        open_hour = {**AGG, "start": iso(at(5)), "end": iso(at(6))}
        live = same(fast, reference, "/v1/agg", open_hour, {**key, "If-None-Match": "*"})
        assert live.status_code == 200 and live.headers["Cache-Control"] == "no-store"


def test_conditional_gets_of_kpi_get_what_fastapi_answers(settings: PlatformSettings, database: DatabaseHandle) -> None:
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    with two_apps(settings) as (fast, reference):
        key = {"X-API-Key": t1}
        tag = fast.get("/v1/kpi", params=KPI_QUERY, headers=key).headers["ETag"]
        assert same(fast, reference, "/v1/kpi", KPI_QUERY, {**key, "If-None-Match": tag}).status_code == 304
        assert same(fast, reference, "/v1/kpi", KPI_QUERY, {**key, "If-None-Match": 'W/"x"'}).status_code == 200
        combined = {**KPI_QUERY, "period": "custom", "scope": "factory"}
        assert same(fast, reference, "/v1/kpi", combined, {**key, "If-None-Match": "*"}).status_code == 200
        for params in BAD_KPI:
            assert same(fast, reference, "/v1/kpi", params, {**key, "If-None-Match": "*"}).status_code == 422


def test_a_get_while_the_database_is_down_gets_the_same_503(
    settings: PlatformSettings, database: DatabaseHandle, pg_admin_url: str
) -> None:
    """The database refuses connections: the fast path answers the app's own 503 to a conditional GET and to
    a plain one, even one whose answer the response cache holds (the state is read on every request: no
    answer without it), and does not hand the request to FastAPI to wait for the pool a second time."""
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    impatient = settings.model_copy(update={"api_db_wait_s": 0.5})
    with two_apps(impatient) as (fast, reference):
        key = {"X-API-Key": t1}
        kept = fast.get("/v1/agg", params=AGG, headers=key)  # kept in the response cache
        tag = kept.headers["ETag"]
        assert reference.get("/v1/agg", params=AGG, headers=key).status_code == 200  # its key is cached too
        assert fast.get("/v1/kpi", params=KPI_QUERY, headers=key).status_code == 200
        name = sql.Identifier(database.name)
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
            try:
                admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM "
                    "(SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()) AS others",
                    (database.name,),
                )
                down = same(fast, reference, "/v1/agg", AGG, {**key, "If-None-Match": tag})
                kpi_down = same(fast, reference, "/v1/kpi", KPI_QUERY, {**key, "If-None-Match": "*"})
                plain_down = same(fast, reference, "/v1/agg", AGG, key)
                plain_kpi_down = same(fast, reference, "/v1/kpi", KPI_QUERY, key)
            finally:
                admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))
    assert down.status_code == kpi_down.status_code == plain_down.status_code == plain_kpi_down.status_code == 503
    assert down.json() == plain_down.json() == {"detail": "no database connection available (is the database running?)"}


@contextmanager
def thread_hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of what the fast path hands to the thread pool, in order."""
    hops: list[str] = []
    hop = revalidate.run_in_threadpool

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(func.__name__)
        return await hop(func, *args, **kwargs)

    monkeypatch.setattr(revalidate, "run_in_threadpool", counted)
    yield hops


def sync_requests(client: TestClient) -> int:
    """Connections the app's sync pool has handed out so far."""
    return client.app.state.db.stats().get("requests_num", 0)


def test_repeats_and_304s_are_answered_on_the_event_loop(
    settings: PlatformSettings, database: DatabaseHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain GET whose answer is kept, and a conditional one answered 304, read their state through the
    event loop's pool and never go to the thread pool nor the sync pool; an answer to make goes there once,
    to read its rows; a route that would read through the sync pool before its state (the metrics catalogue
    expired) runs whole in the thread pool, answering the same."""
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    key = {"X-API-Key": t1}
    with two_apps(settings) as (fast, reference), thread_hops(monkeypatch) as hops:
        assert fast.get("/v1/agg", params=AGG, headers=key).status_code == 200
        made = same(fast, reference, "/v1/kpi", KPI_QUERY, key)
        # the catalogue's first read makes /v1/agg run whole in a thread; the KPI's rows are read in one
        assert hops == ["aggregates", "rest"]
        hops.clear()
        before = sync_requests(fast)
        repeat = same(fast, reference, "/v1/agg", AGG, key)
        kpi_repeat = same(fast, reference, "/v1/kpi", KPI_QUERY, key)
        assert kpi_repeat.content == made.content
        for path, params, tag in (
            ("/v1/agg", AGG, repeat.headers["ETag"]),
            ("/v1/kpi", KPI_QUERY, made.headers["ETag"]),
        ):
            assert same(fast, reference, path, params, {**key, "If-None-Match": tag}).status_code == 304
        assert (hops, sync_requests(fast) - before) == ([], 0)
        assert cache_lookups(fast) == {"hit": 2, "miss": 2}

        combined = {**KPI_QUERY, "period": "custom", "scope": "factory"}  # no state: read in a thread at once
        assert same(fast, reference, "/v1/kpi", combined, key).status_code == 200
        assert hops == ["rest"]
        hops.clear()
        fast.app.state.metric_catalog.invalidate()  # /v1/agg's check would read the catalogue: not on the loop
        assert same(fast, reference, "/v1/agg", AGG, key).content == repeat.content
        assert hops == ["aggregates"]
        hops.clear()
        assert same(fast, reference, "/v1/agg", AGG, key).content == repeat.content  # the catalogue kept again
        assert hops == []
        for _ in range(2):  # a query string read before (kept with its values, api/revalidate.py) reads alike
            assert same(fast, reference, "/v1/agg", {**AGG, "window_s": "0"}, key).status_code == 422
            assert same(fast, reference, "/v1/agg", {**AGG, "window_s": "+3600"}, key).json() == repeat.json()


def test_a_state_read_waiting_on_the_database_holds_up_no_other_request(
    settings: PlatformSettings, database: DatabaseHandle, pg_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state statement that waits (here on a lock) waits on the event loop without holding the worker:
    another request is answered meanwhile, and the waiting one gets its answer once the database answers."""
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    key = {"X-API-Key": t1}
    with two_apps(settings) as (fast, _), thread_hops(monkeypatch) as hops:
        kept = fast.get("/v1/kpi", params=KPI_QUERY, headers=key)
        repeat = fast.get("/v1/agg", params=AGG, headers=key)
        hops.clear()
        with (
            psycopg.connect(database.admin_url) as locker,
            psycopg.connect(pg_admin_url, autocommit=True) as watcher,
            ThreadPoolExecutor(1) as pool,
        ):
            locker.execute("LOCK TABLE analytics.kpi_materialised_periods IN ACCESS EXCLUSIVE MODE")
            waiting = pool.submit(fast.get, "/v1/kpi", params=KPI_QUERY, headers=key)
            for _ in range(100_000):  # until the state statement waits on the lock (no fixed pause)
                blocked = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                    "AND query LIKE %s",
                    (database.name, "%kpi_materialised_periods%"),
                ).fetchone()[0]
                if blocked or waiting.done():
                    break
            assert (blocked, waiting.done()) == (1, False)
            meanwhile = fast.get("/v1/agg", params=AGG, headers=key)
            assert (meanwhile.status_code, meanwhile.content) == (200, repeat.content)
            assert not waiting.done()
            locker.rollback()
            answer = waiting.result(timeout=60)
        assert (answer.status_code, answer.content) == (200, kept.content)
        assert hops == []  # both were answered on the loop


def requests_counted(client: TestClient) -> dict[tuple[str, str], float]:
    """The app's request metrics so far: (route, status) -> requests, and the latency histogram's count."""
    counted: dict[tuple[str, str], float] = {}
    for family in client.app.state.registry.collect():
        for sample in family.samples:
            if sample.name == "analytics_api_requests_total":
                counted[(sample.labels["route"], sample.labels["status"])] = sample.value
            elif sample.name == "analytics_api_request_seconds_count":
                counted[(sample.labels["route"], "latency")] = sample.value
    return counted


def test_the_front_answers_before_the_middleware_stack_and_is_counted_as_the_stack_counts(
    settings: PlatformSettings, database: DatabaseHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repeats, 304s and answers made afresh are answered ahead of the middleware stack (api/revalidate.py's
    Front), a kept answer as its entry's own messages, with the same request metrics the stack records;
    what the front leaves to FastAPI enters the stack once and is not asked of the fast path again."""
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    key = {"X-API-Key": t1}
    asked = []
    authenticate = revalidate.auth.authenticate

    async def counted(*args: Any, **kwargs: Any) -> Any:
        asked.append(args[0].url.path)
        return await authenticate(*args, **kwargs)

    with two_apps(settings) as (fast, reference):
        monkeypatch.setattr(revalidate.auth, "authenticate", counted)  # once the apps checked their routes
        assert fast.get("/v1/health").status_code in (200, 503)  # builds the stack, which is then watched
        reference.get("/v1/health")
        stack, entered = fast.app.middleware_stack, []

        async def watched(scope: Any, receive: Any, send: Any) -> None:
            entered.append(scope["path"])
            await stack(scope, receive, send)

        fast.app.middleware_stack = watched
        sent_kept = []
        send_kept = KeptAnswer.send_kept

        async def sent_as_kept(answer: KeptAnswer, send: Any) -> bool:
            sent_kept.append(await send_kept(answer, send))
            return sent_kept[-1]

        monkeypatch.setattr(KeptAnswer, "send_kept", sent_as_kept)
        made = same(fast, reference, "/v1/agg", AGG, key)
        for headers in ({}, {"Accept-Encoding": "gzip"}, {"Accept": "text/csv"}):
            same_twice(fast, reference, "/v1/agg", AGG, {**key, **headers})
        same_twice(fast, reference, "/v1/kpi", KPI_QUERY, key)
        assert same(fast, reference, "/v1/agg", AGG, {**key, "If-None-Match": made.headers["ETag"]}).status_code == 304
        for app in (fast.app, reference.app):
            app.state.clock = lambda: at(5, 30)  # hour 5 open: provisional, made afresh, gzipped by the front
        open_hour = {**AGG, "start": iso(at(5)), "end": iso(at(6))}
        same_twice(fast, reference, "/v1/agg", open_hour, {**key, "Accept-Encoding": "gzip"})
        assert entered == [] and cache_lookups(fast)["hit"] >= 4
        assert sent_kept == [True] * int(cache_lookups(fast)["hit"])  # every kept answer, as its own messages

        asked.clear()
        assert same(fast, reference, "/v1/agg", {**AGG, "tenant_id": "t2"}, key).status_code == 404
        assert same(fast, reference, "/v1/agg", {**AGG, "window_s": "7"}, key).status_code == 422
        assert same(fast, reference, "/v1/agg", AGG, {}).status_code == 401
        assert entered == ["/v1/agg"] * 3
        assert asked == ["/v1/agg"] * 3  # each asked of the fast path once, by the front (twice without TRIED)
        assert requests_counted(fast) == requests_counted(reference)
        assert requests_counted(fast)[("/v1/agg", "200")] == 9


def test_a_cross_origin_get_gets_the_stacks_answer_and_leaves_the_kept_one_as_it_was(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """With CORS on, every GET goes through the stack (no front: CORS has a say in every answer, `Vary: Origin`),
    and CORS adds its headers to a copy of the kept answer's: the entry stays as kept, so the next GET
    without an Origin gets none of them."""
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    key = {"X-API-Key": t1}
    with two_apps(settings.model_copy(update={"api_cors_origins": ["https://dash.example.com"]})) as (fast, reference):
        assert fast.app.front is None
        plain = same_twice(fast, reference, "/v1/agg", AGG, key)
        assert "access-control-allow-origin" not in plain.headers
        crossed = same(fast, reference, "/v1/agg", AGG, {**key, "Origin": "https://dash.example.com"})
        assert crossed.headers["access-control-allow-origin"] == "https://dash.example.com"
        assert crossed.content == plain.content
        again = same(fast, reference, "/v1/agg", AGG, key)
        assert "access-control-allow-origin" not in again.headers
        assert sorted(again.headers.multi_items()) == sorted(plain.headers.multi_items())


def test_the_event_loops_pool_is_on_the_metrics(settings: PlatformSettings, database: DatabaseHandle) -> None:
    """/v1/metrics has the loop's pool's figures beside the thread pool's, and the batches of state statements:
    here two state reads on the loop, one after the other (a batch each)."""
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    _, admin = make_key(database, None, "admin-reader")
    with two_apps(settings) as (fast, _):
        for _ in range(3):  # the first runs whole in a thread (the catalogue's first read), then two on the loop
            assert fast.get("/v1/agg", params=AGG, headers={"X-API-Key": t1}).status_code == 200
        text = fast.get("/v1/metrics", headers={"X-API-Key": admin}).text
    lines = {line for line in text.splitlines() if line.startswith("analytics_api_db_loop_pool{")}
    assert 'analytics_api_db_loop_pool{stat="requests_num"} 2.0' in lines
    assert 'analytics_api_db_loop_pool{stat="pool_max"} 8.0' in lines  # the same size as the thread pool's
    reads = {line for line in text.splitlines() if line.startswith("analytics_api_state_reads_total{")}
    assert reads == {
        f'analytics_api_state_reads_total{{what="{what}"}} 2.0' for what in ("requests", "statements", "batches")
    }


def together(client: TestClient, asked: list[tuple[str, dict, dict]]) -> list[httpx.Response]:
    """The requests sent at once on the app's own event loop (its pools' loop), each in a task of its own:
    every one reaches its state statement before any batch goes out (a kept key and catalogue: nothing on
    the way awaits), so their statements are one batch."""

    async def send() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await asyncio.gather(
                *(http.get(path, params=params, headers=headers) for path, params, headers in asked)
            )

    assert client.portal is not None
    return client.portal.call(send)


def state_counts(client: TestClient) -> dict[str, int]:
    reads = client.app.state.db.state_reads
    assert reads is not None
    return dict(reads.counts)


def test_concurrent_gets_read_their_state_in_one_batch_and_get_what_fastapi_answers(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """Six GETs at once, of three states (the 30-day kind of page: the same state whatever the machine):
    one batch, one statement per distinct state, and each answer what FastAPI answers to it."""
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    key = {"X-API-Key": t1}
    later = {**AGG, "start": iso(at(4))}
    with two_apps(settings) as (fast, reference):
        tags = {}
        for path, params in (("/v1/agg", AGG), ("/v1/agg", later), ("/v1/kpi", KPI_QUERY), ("/v1/agg", AGG)):
            tags[path, str(params)] = fast.get(path, params=params, headers=key).headers["ETag"]  # made, kept
        asked = [
            ("/v1/agg", AGG, key),
            ("/v1/agg", {**AGG, "machine_id": "m2"}, key),  # another machine: the same state
            ("/v1/agg", AGG, {**key, "If-None-Match": tags["/v1/agg", str(AGG)]}),
            ("/v1/agg", later, key),
            ("/v1/kpi", KPI_QUERY, key),
            ("/v1/kpi", KPI_QUERY, {**key, "If-None-Match": tags["/v1/kpi", str(KPI_QUERY)]}),
        ]
        fast.get("/v1/agg", params={**AGG, "machine_id": "m2"}, headers=key)  # kept too
        before = state_counts(fast)
        answers = together(fast, asked)
        after = state_counts(fast)
        for (path, params, headers), ours in zip(asked, answers, strict=True):
            theirs = reference.get(path, params=params, headers=headers)
            assert (ours.status_code, sorted(ours.headers.multi_items()), ours.content) == (
                theirs.status_code,
                sorted(theirs.headers.multi_items()),
                theirs.content,
            ), (path, params, headers)
    assert [a.status_code for a in answers] == [200, 200, 304, 200, 200, 304]
    assert {k: after[k] - before[k] for k in after} == {"requests": 6, "statements": 3, "batches": 1}


def test_a_commit_between_two_requests_arrivals_is_in_the_later_ones_answer(
    settings: PlatformSettings, database: DatabaseHandle, pg_admin_url: str
) -> None:
    """A KPI page's state statement is in flight (waiting on a lock) when hour 3 of /v1/agg is
    re-materialised from a late reading and committed; a GET of /v1/agg asked after the commit gets the new
    answer (what FastAPI answers after it, not the kept one), while the first is still waiting; the first
    then gets its own answer."""
    seed(settings, database)
    _, t1 = make_key(database, "t1", "t1-reader")
    key = {"X-API-Key": t1}
    with two_apps(settings) as (fast, reference):
        kept_kpi = fast.get("/v1/kpi", params=KPI_QUERY, headers=key)
        old = fast.get("/v1/agg", params=AGG, headers=key)
        assert fast.get("/v1/agg", params=AGG, headers=key).content == old.content  # kept
        with (
            psycopg.connect(database.admin_url) as locker,
            psycopg.connect(pg_admin_url, autocommit=True) as watcher,
            ThreadPoolExecutor(1) as pool,
        ):
            locker.execute("LOCK TABLE analytics.kpi_materialised_periods IN ACCESS EXCLUSIVE MODE")
            waiting = pool.submit(fast.get, "/v1/kpi", params=KPI_QUERY, headers=key)
            for _ in range(100_000):  # until its state statement waits on the lock (no fixed pause)
                blocked = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                    "AND query LIKE %s",
                    (database.name, "%kpi_materialised_periods%"),
                ).fetchone()[0]
                if blocked or waiting.done():
                    break
            assert (blocked, waiting.done()) == (1, False)
            insert(database, "raw_sensor_readings", [reading(at(3, 40), "s1", 5.0, 4)])
            materialise(database, settings, at(3), at(4))  # committed before the next request
            new = fast.get("/v1/agg", params=AGG, headers=key)
            assert not waiting.done()
            theirs = reference.get("/v1/agg", params=AGG, headers=key)
            locker.rollback()
            first = waiting.result(timeout=60)
    assert (new.status_code, new.headers["ETag"], new.content) == (200, theirs.headers["ETag"], theirs.content)
    assert new.headers["ETag"] != old.headers["ETag"]
    assert [item["avg"] for item in new.json()["items"]] == [3.0, 3.0]  # hour 3: (1 + 5) / 2
    assert (first.status_code, first.content) == (200, kept_kpi.content)
