"""The server's cache of /v1/agg and /v1/kpi answers (api/response_cache.py) is never stale and never mixes
answers up: each kept answer is served again only while the materialisation tag read by the request itself
is the one it was made under, so a re-materialised hour, a late reading's hour or a KPI period's new version
changes the very next 200; every query parameter, `fields=`, the representation, the tenant and the content
coding have entries of their own, each byte for byte what the route makes without the cache; the bytes held
stay within API_RESPONSE_CACHE_MB, least recently used going first.

Readings go in raw and the hours are materialised by the asset's own writer; hits and misses are read from
the API's own `/v1/metrics`."""

from __future__ import annotations

import re

import httpx

from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import Api, at, iso, ok, running
from analytics_platform_tests.support.api_data import (
    CACHE_HOUR,
    CACHE_TWO_HOURS,
    KPI_QUERY,
    cache_readings,
    materialise,
    rewrite_kpi_hours,
)
from analytics_platform_tests.support.stack import DatabaseHandle


def lookups(api: Api) -> dict[str, int]:
    """The response cache's hits and misses so far, from /metrics."""
    text = api.client.get("/v1/metrics").text
    found = dict(re.findall(r'^analytics_api_response_cache_lookups_total\{result="(\w+)"\} (\S+)$', text, re.M))
    return {result: int(float(found.get(result, 0))) for result in ("hit", "miss")}


def counted(api: Api, call: object) -> tuple[httpx.Response, str]:
    """`call()`'s answer and whether the cache had it ("hit"), had not ("miss"), or was not asked ("-")."""
    before = lookups(api)
    answer = call()  # type: ignore[operator]
    after = lookups(api)
    moved = [result for result in ("hit", "miss") if after[result] != before[result]]
    assert len(moved) <= 1 and all(after[r] - before[r] == 1 for r in moved), (before, after)
    return answer, moved[0] if moved else "-"


def items(answer: httpx.Response) -> list[tuple]:
    return [(i["bucket_start"], i["count"], i["avg"]) for i in ok(answer)["items"]]


def test_a_rematerialised_hour_and_a_late_readings_hour_change_the_next_answer_at_once(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    cache_readings(database, (at(3, 10), 1.0, 1, "t1"), (at(4, 20), 3.0, 2, "t1"))
    materialise(database, settings, at(3), at(5))
    with running(settings, database) as api:
        for query in (CACHE_HOUR, CACHE_TWO_HOURS):  # a stored window and a rollup of it
            first, how = counted(api, lambda q=query: api.t1.get("/v1/agg", **q))
            assert how == "miss"
            again, how = counted(api, lambda q=query: api.t1.get("/v1/agg", **q))
            assert how == "hit"
            assert (again.content, again.headers["ETag"]) == (first.content, first.headers["ETag"])
            assert again.headers["Cache-Control"] == "private, no-cache"
        assert items(again) == [(iso(at(2)), 1, 1.0), (iso(at(4)), 1, 3.0)]

        # a late reading is in the raw table only: the materialised answer has not changed
        cache_readings(database, (at(3, 50), 5.0, 3, "t1"))
        unchanged, how = counted(api, lambda: api.t1.get("/v1/agg", **CACHE_HOUR))
        assert how == "hit" and items(unchanged) == [(iso(at(3)), 1, 1.0), (iso(at(4)), 1, 3.0)]

        materialise(database, settings, at(3), at(4))  # the late reading's hour re-materialised
        late, how = counted(api, lambda: api.t1.get("/v1/agg", **CACHE_HOUR))
        assert how == "miss" and items(late) == [(iso(at(3)), 2, 3.0), (iso(at(4)), 1, 3.0)]
        rolled, how = counted(api, lambda: api.t1.get("/v1/agg", **CACHE_TWO_HOURS))
        assert how == "miss" and items(rolled) == [(iso(at(2)), 2, 3.0), (iso(at(4)), 1, 3.0)]
        assert counted(api, lambda: api.t1.get("/v1/agg", **CACHE_HOUR))[1] == "hit"

        # a reading corrected at its source and hour 4 re-materialised from it
        with database.connect() as conn:
            conn.execute("UPDATE analytics.raw_sensor_readings SET value = 7.0 WHERE time = %s", (at(4, 20),))
        materialise(database, settings, at(4), at(5))
        redone, how = counted(api, lambda: api.t1.get("/v1/agg", **CACHE_HOUR))
        assert how == "miss" and items(redone) == [(iso(at(3)), 2, 3.0), (iso(at(4)), 1, 7.0)]
        assert redone.headers["ETag"] not in (late.headers["ETag"], first.headers["ETag"])

        # a finaliser-style version bump with the same buckets: a new tag, so made afresh (the same body)
        with database.connect() as conn:
            conn.execute(
                "UPDATE analytics.agg_materialised_hours SET version = nextval('analytics.agg_materialised_version')"
                " WHERE hour_start = %s",
                (at(3),),
            )
        bumped, how = counted(api, lambda: api.t1.get("/v1/agg", **CACHE_HOUR))
        assert how == "miss" and bumped.content == redone.content and bumped.headers["ETag"] != redone.headers["ETag"]


def test_a_kpi_periods_new_version_changes_the_next_answer_at_once(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    rewrite_kpi_hours(database, (3, 0.5, "t1"), (4, 0.75, "t1"))
    with running(settings, database) as api:
        first, how = counted(api, lambda: api.t1.get("/v1/kpi", **KPI_QUERY))
        assert how == "miss" and [i["value"] for i in ok(first)["items"]] == [0.5, 0.75]
        again, how = counted(api, lambda: api.t1.get("/v1/kpi", **KPI_QUERY))
        assert how == "hit" and again.content == first.content

        rewrite_kpi_hours(database, (3, 0.5, "t1"), (4, 0.25, "t1"))  # the KPI assets rewrite hours 3 and 4
        changed, how = counted(api, lambda: api.t1.get("/v1/kpi", **KPI_QUERY))
        assert how == "miss" and [i["value"] for i in ok(changed)["items"]] == [0.5, 0.25]
        assert changed.headers["ETag"] != first.headers["ETag"]
        kept, how = counted(api, lambda: api.t1.get("/v1/kpi", **KPI_QUERY))
        assert how == "hit" and [i["value"] for i in ok(kept)["items"]] == [0.5, 0.25]


def test_every_request_representation_tenant_and_coding_has_its_own_entry(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """Each answer, asked twice, is a miss then a hit; every first answer and every kept one is byte for
    byte (headers too) what the same app makes with the cache off."""
    cache_readings(database, *((at(3, m), float(m), m + 1, "t1") for m in range(0, 60, 2)), (at(3, 10), 4.0, 1, "t2"))
    materialise(database, settings, at(3), at(5))
    fine = {**CACHE_HOUR, "window_s": 60}  # 30 buckets: over a kilobyte, so gzip applies
    asks: list[tuple[str, dict, str, dict[str, str]]] = [  # (who, query, path, headers)
        ("t1", fine, "/v1/agg", {}),
        ("t1", {**fine, "fields": "avg"}, "/v1/agg", {}),
        ("t1", {**fine, "fields": "avg,min"}, "/v1/agg", {}),
        ("t1", {**fine, "end": iso(at(3, 30))}, "/v1/agg", {}),
        ("t1", {**fine, "limit": 10}, "/v1/agg", {}),
        ("t1", fine, "/v1/agg", {"Accept": "text/csv"}),
        ("t1", fine, "/v1/agg", {"Accept-Encoding": "gzip"}),
        ("t1", fine, "/v1/agg", {"Accept": "text/csv", "Accept-Encoding": "gzip"}),
        ("t2", fine, "/v1/agg", {}),
        ("t1", {**fine, "window_s": 3600}, "/v1/agg", {}),
        ("t1", KPI_QUERY, "/v1/kpi", {}),
        # a CSV page names the next one in Link, with the host it was asked of: one entry per host
        ("t1", {**fine, "limit": 10}, "/v1/agg", {"Accept": "text/csv"}),
        ("t1", {**fine, "limit": 10}, "/v1/agg", {"Accept": "text/csv", "Host": "other.example"}),
    ]
    off = settings.model_copy(update={"api_response_cache_mb": 0})

    def ask(api: Api, who: str, query: dict, path: str, headers: dict[str, str]) -> httpx.Response:
        caller = api.t1 if who == "t1" else api.t2
        sent = {"X-API-Key": caller.key, "Accept-Encoding": "identity", **headers}
        return api.client.get(path, params=query, headers=sent)

    def shape(answer: httpx.Response) -> tuple:
        return answer.status_code, dict(answer.headers.items()), answer.content  # httpx decoded a gzip body

    with running(off, database) as plain:
        expected = [shape(ask(plain, *a)) for a in asks]
        assert lookups(plain) == {"hit": 0, "miss": 0}
    with running(settings, database) as api:
        firsts = [counted(api, lambda a=a: ask(api, *a)) for a in asks]
        seconds = [counted(api, lambda a=a: ask(api, *a)) for a in asks]
        assert [how for _, how in firsts] == ["miss"] * len(asks)
        assert [how for _, how in seconds] == ["hit"] * len(asks)
        assert [shape(a) for a, _ in firsts] == expected
        assert [shape(a) for a, _ in seconds] == expected
        assert len(api.client.app.state.response_cache) == len(asks)
        gzipped = seconds[6][0]
        assert gzipped.headers["content-encoding"] == "gzip" and gzipped.content == seconds[0][0].content
        assert ok(seconds[8][0])["items"][0]["tenant_id"] == "t2"
        links = [answer.headers["Link"] for answer, _ in seconds[-2:]]
        assert [link.split("/v1/")[0] for link in links] == ["<http://testserver", "<http://other.example"]


def test_provisional_answers_are_never_kept(settings: PlatformSettings, database: DatabaseHandle) -> None:
    cache_readings(database, (at(3, 10), 1.0, 1, "t1"))
    with running(settings, database) as api:
        api.client.app.state.clock = lambda: at(3, 30)  # hour 3 is open, and not materialised
        for _ in range(2):
            live, how = counted(api, lambda: api.t1.get("/v1/agg", **CACHE_HOUR))
            assert how == "-" and live.headers["Cache-Control"] == "no-store"
        assert len(api.client.app.state.response_cache) == 0
        cache_readings(database, (at(3, 20), 3.0, 2, "t1"))
        assert [i["count"] for i in ok(api.t1.get("/v1/agg", **CACHE_HOUR))["items"]] == [2]


def test_the_bytes_held_stay_within_the_bound_least_recently_used_first(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    cache_readings(database, *((at(3, m), float(m), m + 1, "t1") for m in range(60)))
    materialise(database, settings, at(3), at(4))
    ranges = [{**CACHE_HOUR, "window_s": 60, "end": iso(at(3, 10 + m))} for m in range(6)]  # 10..15 buckets
    with running(settings, database) as probe:
        sizes = []
        for query in ranges:
            probe.t1.get("/v1/agg", **query)
            sizes.append(probe.client.app.state.response_cache.bytes - sum(sizes))
    bound = sizes[3] + sizes[4] + sizes[5]  # room for the last three answers, not for a fourth
    mib = bound / 2**20
    with running(settings.model_copy(update={"api_response_cache_mb": mib}), database) as api:
        cache = api.client.app.state.response_cache
        assert cache.max_bytes == int(mib * 2**20)
        for query in ranges:
            assert counted(api, lambda q=query: api.t1.get("/v1/agg", **q))[1] == "miss"
            assert cache.bytes <= cache.max_bytes
        assert (len(cache), cache.bytes) == (3, bound)
        hows = [counted(api, lambda q=q: api.t1.get("/v1/agg", **q))[1] for q in ranges[3:]]
        assert hows == ["hit", "hit", "hit"]
        # ranges[3] is now the least recently used; asking ranges[0] again evicts it
        assert counted(api, lambda: api.t1.get("/v1/agg", **ranges[0]))[1] == "miss"
        assert cache.bytes <= cache.max_bytes
        assert counted(api, lambda: api.t1.get("/v1/agg", **ranges[5]))[1] == "hit"
        assert counted(api, lambda: api.t1.get("/v1/agg", **ranges[3]))[1] == "miss"
        metrics = api.client.get("/v1/metrics").text
        evictions = re.search(r"^analytics_api_response_cache_evictions_total (\S+)$", metrics, re.M)
        assert evictions is not None and float(evictions.group(1)) == 5.0
        held = re.search(r"^analytics_api_response_cache_bytes (\S+)$", metrics, re.M)
        assert held is not None and int(float(held.group(1))) == cache.bytes
