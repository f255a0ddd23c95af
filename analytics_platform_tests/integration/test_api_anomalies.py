"""GET /v1/anomalies, GET /v1/anomalies/{id} and POST /v1/anomalies/{id}/resolve against a real database:
newest first, filters, the default seven days, tenants, paging and CSV; resolving through the writer
login (the resolve scope, another tenant's anomaly, no write database, every 422 of the body)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import (
    HOUR,
    NO_NUL,
    NOTE_PATTERN,
    Api,
    assert_422,
    assert_csv_equals_json,
    at,
    db_now,
    insert,
    iso,
    jsonable,
    ok,
    pages,
    running,
    split,
)
from analytics_platform_tests.support.api_data import ANOMALY_RANGE, anomaly, resolution
from analytics_platform_tests.support.stack import DatabaseHandle

# ------------------------------------------------------------------------------------------------
# GET /v1/anomalies, GET /v1/anomalies/{id}
# ------------------------------------------------------------------------------------------------


def test_anomalies_newest_first_exact(api: Api, anomalies: dict[str, dict]) -> None:
    body = ok(api.t1.get("/v1/anomalies", **ANOMALY_RANGE))
    # a2 and a3 share a time: the higher id first
    assert body == {"items": [anomalies[n] for n in ("a3", "a2", "a1", "a4")], "count": 4, "next_cursor": None}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"status": "open"}, ["a2", "a1", "a4"]),
        ({"status": "resolved"}, ["a3"]),
        ({"status": "all"}, ["a3", "a2", "a1", "a4"]),
        ({"min_severity": 3}, ["a3", "a1"]),
        ({"min_severity": 4}, ["a1"]),
        ({"min_severity": 5}, []),
        ({"machine_id": "m1"}, ["a3", "a1", "a4"]),
        ({"factory_id": "f1", "machine_id": "m1"}, ["a3", "a1"]),
        ({"factory_id": "f2"}, ["a4"]),
        ({"anomaly_type": "production"}, ["a2"]),
        ({"status": "open", "min_severity": 2, "machine_id": "m2"}, ["a2"]),
        ({"start": iso(at(3, 10)), "end": iso(at(3, 20))}, ["a1"]),  # start inclusive, end exclusive
        ({"start": iso(at(-300)), "end": iso(at(0))}, ["a5"]),
    ],
)
def test_anomalies_filters(api: Api, anomalies: dict[str, dict], filters: dict, expected: list[str]) -> None:
    body = ok(api.t1.get("/v1/anomalies", **{**ANOMALY_RANGE, **filters}))
    assert body["items"] == [anomalies[n] for n in expected]


def test_anomalies_default_range_is_the_last_seven_days(api: Api, database: DatabaseHandle) -> None:
    now = datetime.now(UTC)
    rows = {
        "recent": anomaly(now - HOUR, "m1", 2, "warning"),
        "recent-other-machine": anomaly(now - HOUR, "m2", 2, "warning"),  # the same time
        "six-days": anomaly(now - timedelta(days=7) + HOUR, "m1", 3, "warning"),
        "eight-days": anomaly(now - timedelta(days=7) - HOUR, "m1", 4, "critical"),
        "future": anomaly(now + HOUR, "m1", 5, "critical"),
    }
    ids = dict(
        zip(rows, insert(database, "analytics_anomaly", list(rows.values()), returning="anomaly_id"), strict=True)
    )
    body = ok(api.t1.get("/v1/anomalies"))
    assert [i["anomaly_id"] for i in body["items"]] == [
        ids["recent-other-machine"],
        ids["recent"],
        ids["six-days"],
    ]
    assert body["items"][0] == {"anomaly_id": ids["recent-other-machine"], **jsonable(rows["recent-other-machine"])}
    # end alone: the 7 days before it
    before = ok(api.t1.get("/v1/anomalies", end=iso(now - timedelta(days=7))))
    assert [i["anomaly_id"] for i in before["items"]] == [ids["eight-days"]]


def test_anomaly_by_id(api: Api, anomalies: dict[str, dict]) -> None:
    for name in ("a1", "a2", "a3", "a5"):
        assert ok(api.t1.get(f"/v1/anomalies/{anomalies[name]['anomaly_id']}")) == anomalies[name]
    # the admin key reads any tenant's anomaly; the t2 key its own
    assert ok(api.admin.get(f"/v1/anomalies/{anomalies['b1']['anomaly_id']}")) == anomalies["b1"]
    assert ok(api.t2.get(f"/v1/anomalies/{anomalies['b1']['anomaly_id']}")) == anomalies["b1"]


def test_anomaly_of_another_tenant_or_unknown_is_404(api: Api, anomalies: dict[str, dict]) -> None:
    b1, a1 = anomalies["b1"]["anomaly_id"], anomalies["a1"]["anomaly_id"]
    for caller, anomaly_id in ((api.t1, b1), (api.t2, a1), (api.t1, 999_999), (api.admin, 999_999)):
        response = caller.get(f"/v1/anomalies/{anomaly_id}")
        assert response.status_code == 404
        assert response.json() == {"detail": f"anomaly {anomaly_id} not found"}


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_anomalies_pages_neither_skip_nor_repeat(api: Api, anomalies: dict[str, dict], limit: int) -> None:
    items, sizes = pages(api.t1, "/v1/anomalies", limit, **ANOMALY_RANGE)
    assert items == [anomalies[n] for n in ("a3", "a2", "a1", "a4")]
    assert sizes == split(4, limit)
    # an admin key across tenants: b1 shares a1's time
    items, sizes = pages(api.admin, "/v1/anomalies", limit, **ANOMALY_RANGE)
    assert items == [anomalies[n] for n in ("a3", "a2", "b1", "a1", "a4")]
    assert sizes == split(5, limit)


@pytest.mark.usefixtures("anomalies")
def test_anomalies_csv_equals_json(api: Api) -> None:
    assert_csv_equals_json(api.t1, "/v1/anomalies", 3, **ANOMALY_RANGE)
    assert_csv_equals_json(api.admin, "/v1/anomalies", 2, **ANOMALY_RANGE)


# ------------------------------------------------------------------------------------------------
# POST /v1/anomalies/{id}/resolve
# ------------------------------------------------------------------------------------------------


def test_resolve_then_resolve_again(api: Api, anomalies: dict[str, dict], database: DatabaseHandle) -> None:
    a1 = anomalies["a1"]
    path = f"/v1/anomalies/{a1['anomaly_id']}/resolve"
    before = db_now(database)
    first = ok(api.resolver.post(path, {"note": "  recalibrated the probe  "}))
    after = db_now(database)

    resolved_at = datetime.fromisoformat(first["resolved_at"])
    assert before <= resolved_at <= after
    assert first == {
        **a1,
        "status": "resolved",
        "resolved_at": iso(resolved_at),
        "resolved_by": f"ops-bot (key {api.resolver.key_id})",
        "resolution_note": "recalibrated the probe",
    }
    assert resolution(database, a1["anomaly_id"]) == (
        "resolved",
        resolved_at,
        f"ops-bot (key {api.resolver.key_id})",
        "recalibrated the probe",
    )

    # again: the note and who are replaced, the first resolution time stays
    second = ok(api.resolver.post(path, {"note": "wrong probe; replaced it", "resolved_by": "alice"}))
    assert second == {**first, "resolved_by": "alice", "resolution_note": "wrong probe; replaced it"}
    assert resolution(database, a1["anomaly_id"]) == ("resolved", resolved_at, "alice", "wrong probe; replaced it")

    # the listing agrees, and nothing else changed
    listed = ok(api.t1.get("/v1/anomalies", **ANOMALY_RANGE))["items"]
    assert listed == [anomalies["a3"], anomalies["a2"], second, anomalies["a4"]]
    assert ok(api.t2.get(f"/v1/anomalies/{anomalies['b1']['anomaly_id']}")) == anomalies["b1"]


def test_resolve_by_an_admin_key_any_tenant(api: Api, anomalies: dict[str, dict]) -> None:
    b1 = anomalies["b1"]
    body = ok(api.admin_resolver.post(f"/v1/anomalies/{b1['anomaly_id']}/resolve", {"note": "checked"}))
    assert (body["status"], body["resolved_by"], body["resolution_note"]) == (
        "resolved",
        f"admin-bot (key {api.admin_resolver.key_id})",
        "checked",
    )
    assert {k: v for k, v in body.items() if k not in ("status", "resolved_at", "resolved_by", "resolution_note")} == {
        k: v for k, v in b1.items() if k not in ("status", "resolved_at", "resolved_by", "resolution_note")
    }


def test_resolve_another_tenants_anomaly_is_404_and_leaves_it_open(
    api: Api, anomalies: dict[str, dict], database: DatabaseHandle
) -> None:
    b1 = anomalies["b1"]["anomaly_id"]
    response = api.resolver.post(f"/v1/anomalies/{b1}/resolve", {"note": "not mine"})
    assert response.status_code == 404
    assert response.json() == {"detail": f"anomaly {b1} not found"}
    assert resolution(database, b1) == ("open", None, None, None)
    assert ok(api.admin.get(f"/v1/anomalies/{b1}")) == anomalies["b1"]


@pytest.mark.usefixtures("anomalies")
def test_resolve_unknown_anomaly_is_404(api: Api) -> None:
    for caller in (api.resolver, api.admin_resolver):
        response = caller.post("/v1/anomalies/999999/resolve", {"note": "x"})
        assert response.status_code == 404
        assert response.json() == {"detail": "anomaly 999999 not found"}


def test_resolve_without_the_resolve_scope_is_403(
    api: Api, anomalies: dict[str, dict], database: DatabaseHandle
) -> None:
    a1 = anomalies["a1"]["anomaly_id"]
    for caller in (api.t1, api.admin):
        response = caller.post(f"/v1/anomalies/{a1}/resolve", {"note": "x"})
        assert response.status_code == 403
        assert response.json() == {"detail": "this API key lacks the 'resolve' scope"}
    assert resolution(database, a1) == ("open", None, None, None)


def test_resolve_is_503_without_a_write_database(
    settings: PlatformSettings, database: DatabaseHandle, anomalies: dict[str, dict]
) -> None:
    read_only = settings.model_copy(update={"api_write_database_url": None})
    with running(read_only, database) as api:
        response = api.resolver.post(f"/v1/anomalies/{anomalies['a1']['anomaly_id']}/resolve", {"note": "x"})
        assert ok(api.resolver.get(f"/v1/anomalies/{anomalies['a1']['anomaly_id']}")) == anomalies["a1"]
    assert response.status_code == 503
    assert response.json() == {"detail": "resolving is not configured on this API (set API_WRITE_DATABASE_URL)"}
    assert resolution(database, anomalies["a1"]["anomaly_id"]) == ("open", None, None, None)


@pytest.mark.parametrize(
    ("body", "loc", "msg"),
    [
        ({}, ["body", "note"], "Field required"),
        ({"note": ""}, ["body", "note"], "String should have at least 1 character"),
        ({"note": "   "}, ["body", "note"], f"String should match pattern '{NOTE_PATTERN}'"),
        ({"note": "a\x00b"}, ["body", "note"], f"String should match pattern '{NOTE_PATTERN}'"),
        ({"note": "\x1c"}, ["body", "note"], "Value error, note must not be blank"),
        ({"note": "x", "resolved_by": "a\x00"}, ["body", "resolved_by"], f"String should match pattern '{NO_NUL}'"),
        ({"note": "x" * 4001}, ["body", "note"], "String should have at most 4000 characters"),
        ({"note": "x", "resolved_by": ""}, ["body", "resolved_by"], "String should have at least 1 character"),
        ({"note": "x", "status": "open"}, ["body", "status"], "Extra inputs are not permitted"),
    ],
)
def test_resolve_422_for_a_bad_body(
    api: Api, anomalies: dict[str, dict], database: DatabaseHandle, body: dict, loc: list, msg: str
) -> None:
    a1 = anomalies["a1"]["anomaly_id"]
    assert_422(api.resolver.post(f"/v1/anomalies/{a1}/resolve", body), loc, msg)
    assert resolution(database, a1) == ("open", None, None, None)
