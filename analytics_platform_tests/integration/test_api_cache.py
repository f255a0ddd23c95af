"""HTTP caching of the read routes that is never stale, compressed answers and `fields=` on /v1/agg.

Readings go in raw and the hours are materialised by the asset's own writer (`recompute_aggregates`,
which draws each hour's version with its buckets; KPIs through `replace_kpis` likewise); the answers'
tags follow what was materialised: a late reading changes nothing until its hour is re-materialised,
and then the answer and the tag change at once. Buckets the asset has not made final are never
tagged."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import httpx
import polars as pl
import psycopg

from analytics_platform.results.kpis import replace_kpis
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms import machine_kpis as mk
from analytics_platform_tests.support.api import Api, assert_422, at, iso, ok, running
from analytics_platform_tests.support.api_data import (
    CACHE_HOUR,
    CACHE_QUERY,
    CACHE_TWO_HOURS,
    EVENT_QUERY,
    KPI_QUERY,
    cache_readings,
    insert_event_data,
    kpi,
    materialise,
    rewrite_kpi_hours,
)
from analytics_platform_tests.support.stack import DatabaseHandle


def conditional(api: Api, tag: str, key: str | None = None, **params: object) -> httpx.Response:
    caller = api.t1 if key is None else api.t2
    headers = {"X-API-Key": caller.key, "If-None-Match": tag}
    return api.client.get("/v1/agg", params=params, headers=headers)


def test_a_rematerialised_hour_changes_the_answer_and_the_tag_at_once(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    cache_readings(database, (at(3, 10), 1.0, 1, "t1"), (at(4, 20), 3.0, 2, "t1"))
    materialise(database, settings, at(3), at(5))
    with running(settings, database) as api:
        first = api.t1.get("/v1/agg", **CACHE_HOUR)
        assert [(i["count"], i["avg"], i["provisional"]) for i in ok(first)["items"]] == [
            (1, 1.0, False),
            (1, 3.0, False),
        ]
        tag = first.headers["ETag"]
        assert tag.startswith('W/"')
        assert first.headers["Cache-Control"] == "private, no-cache"
        rolled = api.t1.get("/v1/agg", **CACHE_TWO_HOURS)
        assert [(i["count"], i["avg"]) for i in ok(rolled)["items"]] == [(1, 1.0), (1, 3.0)]

        again = conditional(api, tag, **CACHE_HOUR)
        assert (again.status_code, again.content, again.headers["ETag"]) == (304, b"", tag)
        assert conditional(api, rolled.headers["ETag"], **CACHE_TWO_HOURS).status_code == 304

        # a late reading is in the raw table only: the stored answer has not changed, nor has its tag
        cache_readings(database, (at(3, 50), 5.0, 3, "t1"))
        assert conditional(api, tag, **CACHE_HOUR).status_code == 304

        materialise(database, settings, at(3), at(4))  # the automation re-materialises hour 3
        changed = conditional(api, tag, **CACHE_HOUR)
        assert changed.status_code == 200
        assert [(i["count"], i["avg"]) for i in changed.json()["items"]] == [(2, 3.0), (1, 3.0)]
        assert changed.headers["ETag"] != tag
        assert conditional(api, changed.headers["ETag"], **CACHE_HOUR).status_code == 304
        rolled_again = conditional(api, rolled.headers["ETag"], **CACHE_TWO_HOURS)
        assert rolled_again.status_code == 200
        assert [(i["count"], i["avg"]) for i in rolled_again.json()["items"]] == [(2, 3.0), (1, 3.0)]


YEAR = {**CACHE_QUERY, "window_s": 86400, "start": iso(at(-24 * 363)), "end": iso(at(48))}  # 365 days to 2025-08-22
# hours around whole days: 21 hours of 08-18, all of 08-19 and 08-20, 3 hours of 08-21 (the tag reads both)
EDGES = {**CACHE_QUERY, "window_s": 3600, "start": iso(at(-45)), "end": iso(at(26))}


def test_a_years_tag_changes_at_once_with_a_rematerialised_hour_and_a_late_reading(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """A year's tag reads the per-day sums of the hours' versions (sql/28), not 8,760 hours: a
    re-materialised hour, a late reading's hour and any other writer of an hour's mark (as the
    finaliser) change it at the very next request, in whole days and in the hours around them."""
    cache_readings(database, (at(3, 10), 1.0, 1, "t1"), (at(25, 20), 3.0, 2, "t1"))
    materialise(database, settings, at(-48), at(48))
    with running(settings, database) as api:
        year, edges = api.t1.get("/v1/agg", **YEAR), api.t1.get("/v1/agg", **EDGES)
        assert [(i["bucket_start"], i["count"], i["avg"]) for i in ok(year)["items"]] == [
            (iso(at(0)), 1, 1.0),
            (iso(at(24)), 1, 3.0),
        ]
        assert [(i["bucket_start"], i["count"]) for i in ok(edges)["items"]] == [(iso(at(3)), 1), (iso(at(25)), 1)]
        tags = {"year": year.headers["ETag"], "edges": edges.headers["ETag"]}
        queries = {"year": YEAR, "edges": EDGES}
        if database.scalar("SELECT analytics.timescale_enabled()"):
            # whole days come from the continuous aggregate there, tagged by their body (it catches up
            # with a re-materialised hour at its refresh): the per-day sums are plain PostgreSQL's path
            del tags["year"], queries["year"]

        def expect(year: object, edges: object) -> dict[str, object]:
            return {name: answer for name, answer in (("year", year), ("edges", edges)) if name in tags}

        def revalidated() -> dict[str, int]:
            return {name: conditional(api, tags[name], **queries[name]).status_code for name in tags}

        def retag() -> dict[str, list]:
            answers = {name: api.t1.get("/v1/agg", **queries[name]) for name in tags}
            tags.update({name: answer.headers["ETag"] for name, answer in answers.items()})
            return {name: [(i["count"], i["avg"]) for i in ok(answer)["items"]] for name, answer in answers.items()}

        assert revalidated() == expect(304, 304)
        materialise(database, settings, at(5), at(6))  # an hour of a whole day, its buckets the same
        assert revalidated() == expect(200, 200)
        assert retag() == expect([(1, 1.0), (1, 3.0)], [(1, 1.0), (1, 3.0)])

        cache_readings(database, (at(25, 50), 5.0, 3, "t1"))  # late, in an hour the edges' query reads as an hour
        assert revalidated() == expect(304, 304)  # in the raw table only, until its hour runs
        materialise(database, settings, at(25), at(26))
        assert revalidated() == expect(200, 200)
        assert retag() == expect([(1, 1.0), (2, 4.0)], [(1, 1.0), (2, 4.0)])

        with database.connect() as conn:  # another writer of a mark (the finaliser draws a version so)
            conn.execute(
                "UPDATE analytics.agg_materialised_hours SET version = nextval('analytics.agg_materialised_version')"
                " WHERE hour_start = %s",
                (at(-30),),
            )
        assert revalidated() == expect(200, 200)
        retag()
        with database.connect() as conn:  # an hour's mark deleted: the range holds one hour less
            conn.execute("DELETE FROM analytics.agg_materialised_hours WHERE hour_start = %s", (at(-44),))
        assert revalidated() == expect(200, 200)


def test_every_request_and_representation_has_its_own_tag(settings: PlatformSettings, database: DatabaseHandle) -> None:
    cache_readings(database, (at(3, 10), 1.0, 1, "t1"), (at(3, 10), 1.0, 2, "t2"))
    materialise(database, settings, at(3), at(5))
    with running(settings, database) as api:
        t1, t2 = api.t1.get("/v1/agg", **CACHE_HOUR), api.t2.get("/v1/agg", **CACHE_HOUR)
        assert ok(t1)["items"][0]["avg"] == ok(t2)["items"][0]["avg"] == 1.0  # the same ids and values
        assert t1.headers["ETag"] != t2.headers["ETag"]  # tenants never share a tag
        assert conditional(api, t1.headers["ETag"], key="t2", **CACHE_HOUR).status_code == 200
        assert conditional(api, t2.headers["ETag"], key="t2", **CACHE_HOUR).status_code == 304
        as_csv = api.t1.csv("/v1/agg", **CACHE_HOUR)
        avg = api.t1.get("/v1/agg", **CACHE_HOUR, fields="avg")
        other_end = api.t1.get("/v1/agg", **{**CACHE_HOUR, "end": iso(at(6))})
        tags = {r.headers["ETag"] for r in (t1, as_csv, avg, other_end)}
        assert len(tags) == 4
        # If-None-Match may list several tags, weak or not, or be `*`
        listed = f'"other", {t1.headers["ETag"].removeprefix("W/")}'
        assert conditional(api, listed, **CACHE_HOUR).status_code == 304
        assert conditional(api, "*", **CACHE_HOUR).status_code == 304
        assert conditional(api, 'W/"other"', **CACHE_HOUR).status_code == 200


def test_provisional_buckets_are_never_stored(settings: PlatformSettings, database: DatabaseHandle) -> None:
    cache_readings(database, (at(3, 10), 1.0, 1, "t1"))
    with running(settings, database) as api:
        api.client.app.state.clock = lambda: at(3, 30)  # hour 3 is open, and not materialised
        live = api.t1.get("/v1/agg", **CACHE_HOUR)
        assert [(i["count"], i["provisional"]) for i in ok(live)["items"]] == [(1, True)]
        assert live.headers["Cache-Control"] == "no-store"
        assert "ETag" not in live.headers
        rolled = api.t1.get("/v1/agg", **CACHE_TWO_HOURS)
        assert ok(rolled)["items"] == [] and rolled.headers["Cache-Control"] == "no-store"  # hour 3 not final yet
        assert conditional(api, "*", **CACHE_HOUR).status_code == 200

        api.client.app.state.clock = lambda: at(5, 30)
        materialise(database, settings, at(3), at(5))  # as_of is now: after the buckets' end
        final = api.t1.get("/v1/agg", **CACHE_HOUR)
        assert [(i["count"], i["provisional"]) for i in ok(final)["items"]] == [(1, False)]
        assert final.headers["Cache-Control"] == "private, no-cache" and "ETag" in final.headers


def test_a_rewritten_kpi_period_changes_the_answer_and_the_tag_at_once(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """/v1/kpi: keyed by the periods the KPI assets wrote, through their own writer."""
    rewrite_kpi_hours(database, (3, 0.5, "t1"), (4, 0.75, "t1"), (3, 0.5, "t2"))
    with running(settings, database) as api:
        first = api.t1.get("/v1/kpi", **KPI_QUERY)
        assert [i["value"] for i in ok(first)["items"]] == [0.5, 0.75]
        tag = first.headers["ETag"]
        assert first.headers["Cache-Control"] == "private, no-cache"
        headers = {"X-API-Key": api.t1.key, "If-None-Match": tag}
        same = api.client.get("/v1/kpi", params=KPI_QUERY, headers=headers)
        assert (same.status_code, same.content, same.headers["ETag"]) == (304, b"", tag)
        t2 = api.t2.get("/v1/kpi", **KPI_QUERY)
        assert ok(t2)["items"][0]["value"] == 0.5 and t2.headers["ETag"] != tag  # tenants never share a tag

        rewrite_kpi_hours(database, (3, 0.5, "t1"), (4, 0.25, "t1"), (3, 0.5, "t2"))  # hours 3 and 4 rerun
        changed = api.client.get("/v1/kpi", params=KPI_QUERY, headers=headers)
        assert changed.status_code == 200 and changed.headers["ETag"] != tag
        assert [i["value"] for i in changed.json()["items"]] == [0.5, 0.25]


def test_other_listings_are_tagged_by_their_body(settings: PlatformSettings, database: DatabaseHandle) -> None:
    """/v1/event-rollup and the other listings: the tag of the answer itself, so it changes exactly with it."""
    insert_event_data(database)
    with running(settings, database) as api:
        first = api.t1.get("/v1/event-rollup", **EVENT_QUERY)
        tag = first.headers["ETag"]
        headers = {"X-API-Key": api.t1.key, "If-None-Match": tag}
        same = api.client.get("/v1/event-rollup", params=EVENT_QUERY, headers=headers)
        assert (same.status_code, same.content, same.headers["Cache-Control"]) == (304, b"", "private, no-cache")
        with database.connect() as conn:
            conn.execute("UPDATE analytics.analytics_event_rollup SET count_n = count_n + 1 WHERE tenant_id = 't1'")
        changed = api.client.get("/v1/event-rollup", params=EVENT_QUERY, headers=headers)
        assert changed.status_code == 200 and changed.headers["ETag"] != tag
        counts = [i["count"] for i in ok(first)["items"]]
        assert [i["count"] for i in changed.json()["items"]] == [c + 1 for c in counts]


def test_answers_are_gzipped_when_the_client_accepts_it(settings: PlatformSettings, database: DatabaseHandle) -> None:
    cache_readings(database, *((at(3) + timedelta(seconds=30 * i), float(i), i, "t1") for i in range(120)))
    materialise(database, settings, at(3), at(4))
    with running(settings, database) as api:
        params = {**CACHE_QUERY, "window_s": 60, "end": iso(at(4))}
        for accept in ("application/json", "text/csv"):
            plain = api.client.get(
                "/v1/agg",
                params=params,
                headers={"X-API-Key": api.t1.key, "Accept": accept, "Accept-Encoding": "identity"},
            )
            packed = api.client.get(
                "/v1/agg", params=params, headers={"X-API-Key": api.t1.key, "Accept": accept, "Accept-Encoding": "gzip"}
            )
            assert "content-encoding" not in plain.headers
            assert packed.headers["content-encoding"] == "gzip"
            assert packed.headers["Vary"] == plain.headers["Vary"] == "Accept, Accept-Encoding, X-API-Key"
            assert int(packed.headers["content-length"]) < len(plain.content) / 3
            assert packed.content == plain.content  # httpx decoded it
            assert packed.headers["ETag"] == plain.headers["ETag"]  # weak: one tag for both encodings
        refused = api.client.get(
            "/v1/agg", params=params, headers={"X-API-Key": api.t1.key, "Accept-Encoding": "gzip;q=0, br"}
        )
        assert "content-encoding" not in refused.headers
        small = api.client.get("/v1/health", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in small.headers  # under a kilobyte: not worth it
        # the dashboard's files: their strong tag becomes weak once gzipped, and still revalidates
        script = api.client.get("/ui/static/app.js", headers={"Accept-Encoding": "gzip"})
        plain_script = api.client.get("/ui/static/app.js", headers={"Accept-Encoding": "identity"})
        assert script.headers["content-encoding"] == "gzip" and script.content == plain_script.content
        assert script.headers["ETag"] == "W/" + plain_script.headers["ETag"]
        again = api.client.get(
            "/ui/static/app.js", headers={"Accept-Encoding": "gzip", "If-None-Match": script.headers["ETag"]}
        )
        assert again.status_code == 304


def test_fields_choose_the_columns(settings: PlatformSettings, database: DatabaseHandle) -> None:
    cache_readings(database, (at(3, 10), 1.0, 1, "t1"), (at(3, 20), 3.0, 2, "t1"))
    materialise(database, settings, at(3), at(5))
    with running(settings, database) as api:
        body = ok(api.t1.get("/v1/agg", **CACHE_HOUR, fields="max, avg,min"))
        assert body["items"] == [
            {"bucket_start": iso(at(3)), "sensor_id": "s1", "avg": 2.0, "min": 1.0, "max": 3.0, "provisional": False}
        ]
        rows = list(csv.reader(io.StringIO(api.t1.csv("/v1/agg", **CACHE_HOUR, fields="avg,min,max").text)))
        assert rows == [
            ["bucket_start", "sensor_id", "avg", "min", "max", "provisional"],
            [iso(at(3)), "s1", "2.0", "1.0", "3.0", "false"],
        ]
        assert_422(
            api.t1.get("/v1/agg", **CACHE_HOUR, fields="avg,mean,median"),
            ["query", "fields"],
            "unknown field 'mean', 'median'; known: " + ", ".join(ok(api.t1.get("/v1/agg", **CACHE_HOUR))["items"][0]),
        )
        assert_422(
            api.t1.get("/v1/agg", **CACHE_HOUR, fields=" , "),
            ["query", "fields"],
            "fields names no column; known: " + ", ".join(ok(api.t1.get("/v1/agg", **CACHE_HOUR))["items"][0]),
        )


def test_a_revalidation_on_a_connection_the_server_closed_is_answered_as_on_a_fresh_one(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """The tag query is a revalidation's first statement and stands in for the pool's check of the
    connection (Database.checked_by): a pooled connection the server has closed since (a restart, an
    administrator) is replaced and the query runs again, never a 503, and the answer is as fresh."""
    cache_readings(database, (at(3, 10), 1.0, 1, "t1"), (at(4, 20), 3.0, 2, "t1"))
    materialise(database, settings, at(3), at(5))
    hours = pl.DataFrame(
        [{"period": "hour", "label": None, "tenant_id": None, "period_start": at(3), "period_end": at(4)}],
        schema=mk.PERIOD_SCHEMA,
    )
    oee = pl.DataFrame([{**kpi(3, "m1", "oee", 0.5, "ratio", tenant="t1"), "details": None}], schema=mk.OUTPUT_SCHEMA)
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        replace_kpis(conn, oee, hours)

    def api_backends(conn: psycopg.Connection) -> set[int]:
        query = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        return {pid for (pid,) in conn.execute(query + " AND backend_type = 'client backend'")}

    def close_the_pools_connections() -> set[int]:
        with database.connect() as conn:
            terminate = "SELECT pg_terminate_backend(%s, 10000)"
            return {pid for pid in api_backends(conn) if conn.execute(terminate, (pid,)).fetchone()[0]}

    with running(settings, database) as api:
        tag = api.t1.get("/v1/agg", **CACHE_HOUR).headers["ETag"]
        kpi_tag = api.t1.get("/v1/kpi", **KPI_QUERY).headers["ETag"]
        kpi_headers = {"X-API-Key": api.t1.key, "If-None-Match": kpi_tag}

        closed = close_the_pools_connections()
        assert closed
        again = conditional(api, tag, **CACHE_HOUR)
        assert (again.status_code, again.content, again.headers["ETag"]) == (304, b"", tag)
        with database.connect() as conn:
            assert api_backends(conn) and not api_backends(conn) & closed  # served by a new connection

        assert close_the_pools_connections()
        assert api.client.get("/v1/kpi", params=KPI_QUERY, headers=kpi_headers).status_code == 304

        cache_readings(
            database, (at(3, 50), 5.0, 3, "t1")
        )  # a late reading, its hour re-materialised, a dead connection
        materialise(database, settings, at(3), at(4))
        assert close_the_pools_connections()
        changed = conditional(api, tag, **CACHE_HOUR)
        assert changed.status_code == 200 and changed.headers["ETag"] != tag
        assert [(i["count"], i["avg"]) for i in changed.json()["items"]] == [(2, 3.0), (1, 3.0)]
