"""Anomaly events and profiles over the REST API (issue 20), against a real database, no mocks.

A real fault is many rows of analytics_anomaly (one per anomalous sample and method); the database
groups consecutive rows of one series into an event on read (analytics.anomaly_events, rows at most
3 samples apart). Rows are inserted with SQL as the schema owner; every request goes through the
app with the key of the caller under test (support/api.py's callers). The data set, 2025-08-20 UTC
unless said; a sampled row's window is [t, t + 60 s) (sample_s 60, so rows up to 180 s apart join)
and its time t + 20 s:

    event  tenant/factory/machine sensor/metric       rows (window starts)                 severities
    A      t1/f1/m1  s1/temp        03:00 .. 03:11, one a minute (12)      2 2 3 3 4 5 5 4 3 2 2 2
                                    deviation, isolation_forest at 03:04 and 03:07
                                    peak: severity 5 at 03:05 and 03:06, |score| 5.9 at 03:06 wins
    B      t1/f1/m1  s1/temp        03:22, 03:23 (stuck): 10 min after A ends, a new event  2 3
    C      t1/f1/m1  s2/temp        04:00, 04:04: 180 s apart (exactly 3 samples), one event 2 4
    D      t1/f1/m1  s2/temp        04:09: 240 s after C's end, its own event               2
    S      t1/f1/m2  -/count_total  stoppages [03:30, 03:45) and [03:45, 03:50): touching   2 3
                                    (interval rows have no sample_s: they join only touching)
    R      t1/f2/m1  s1/temp        05:00, already resolved                                 3
    E      t1/f1/m3  s1/temp        2025-08-19 23:58 .. 2025-08-20 00:01 (4): begins before  2 2 2 2
                                    the range, read whole (rows from 1 day before start)
    old    t1/f1/m3  s1/temp        2025-08-19 12:00: ends before the range, never listed   2
    T      t2/f1/m1  s1/temp        03:05 (tenant t2, the same ids as A's series)           4

Newest first (by start) for t1 over the day: R, D, C, S, B, A, E; the admin key adds T after B.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from analytics_platform.api.params import encode_cursor
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import (
    BAD_CURSOR,
    NOTE_PATTERN,
    OTHER_TENANT,
    Api,
    Caller,
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
from analytics_platform_tests.support.api_data import anomaly
from analytics_platform_tests.support.stack import DatabaseHandle

MINUTE = timedelta(minutes=1)
DAY_RANGE = {"start": iso(at(0)), "end": iso(at(24))}
EVENTS = "/v1/anomaly-events"


def sampled(start: datetime, severity: int, **more: Any) -> dict:
    """A row of a sampled series: window [start, start + 60 s), time start + 20 s, sample_s 60."""
    more = {"machine": "m1", "sensor": "s1", "metric": "temp", "method": "deviation", **more}
    machine = more.pop("machine")
    label = "critical" if severity >= 3 else "warning" if severity == 2 else "info"
    return anomaly(
        start + timedelta(seconds=20),
        machine,
        severity,
        label,
        window_start=start,
        window_end=start + MINUTE,
        sample_s=60.0,
        **more,
    )


A_SEVERITIES = [2, 2, 3, 3, 4, 5, 5, 4, 3, 2, 2, 2]
A_SCORES = [3.1, 3.2, 3.5, 3.6, 4.1, 5.2, -5.9, 4.4, 3.3, 3.0, 2.9, 2.8]
ROWS: dict[str, list[dict]] = {
    "A": [
        sampled(
            at(3, k),
            A_SEVERITIES[k],
            method="isolation_forest" if k in (4, 7) else "deviation",
            score=A_SCORES[k],
            observed=70.0 + k,
            expected=65.0,
        )
        for k in range(12)
    ],
    "B": [sampled(at(3, 22), 2, method="stuck", observed=66.0), sampled(at(3, 23), 3, method="stuck", observed=66.0)],
    "C": [sampled(at(4, 0), 2, sensor="s2", score=3.0), sampled(at(4, 4), 4, sensor="s2", score=4.5, observed=80.0)],
    "D": [sampled(at(4, 9), 2, sensor="s2", score=3.2)],
    "S": [
        anomaly(
            at(3, 30),
            "m2",
            2,
            "warning",
            metric="count_total",
            anomaly_type="production",
            method="stoppage",
            score=15.0,
            window_start=at(3, 30),
            window_end=at(3, 45),
            observed=0.0,
            expected=120.0,
        ),
        anomaly(
            at(3, 45),
            "m2",
            3,
            "critical",
            metric="count_total",
            anomaly_type="production",
            method="stoppage",
            score=5.0,
            window_start=at(3, 45),
            window_end=at(3, 50),
            observed=0.0,
            expected=40.0,
        ),
    ],
    "R": [
        sampled(
            at(5, 0),
            3,
            factory="f2",
            status="resolved",
            resolved_at=at(6),
            resolved_by="ops",
            resolution_note="known drift",
        )
    ],
    "E": [sampled(at(-1, 58 + k), 2, machine="m3", score=3.0 + k / 10) for k in range(4)],
    "old": [sampled(at(-12), 2, machine="m3")],
    "T": [sampled(at(3, 5), 4, tenant="t2", score=4.0, observed=90.0)],
}


@pytest.fixture
def rows(database: DatabaseHandle) -> dict[str, list[dict]]:
    """event name -> its rows as GET /v1/anomalies serves them (ids from the database)."""
    flat = [(name, row) for name, rows in ROWS.items() for row in rows]
    ids = insert(database, "analytics_anomaly", [row for _, row in flat], returning="anomaly_id")
    out: dict[str, list[dict]] = {name: [] for name in ROWS}
    for (name, row), anomaly_id in zip(flat, ids, strict=True):
        out[name].append({"anomaly_id": anomaly_id, **jsonable(row)})
    return out


def event(rows: list[dict], peak: int, start: datetime, end: datetime, methods: list[str]) -> dict:
    """The event of `rows` as the API serves it; `peak` indexes the peak row (its type and values)."""
    top = rows[peak]
    open_rows = sum(1 for r in rows if r["status"] == "open")
    severity = top["severity"]  # the peak's is the highest
    return {
        "event_id": rows[0]["anomaly_id"],
        "tenant_id": top["tenant_id"],
        "factory_id": top["factory_id"],
        "machine_id": top["machine_id"],
        "sensor_id": top["sensor_id"],
        "metric": top["metric"],
        "anomaly_type": top["anomaly_type"],
        "start_time": iso(start),
        "end_time": iso(end),
        "peak_time": top["time"],
        "peak_anomaly_id": top["anomaly_id"],
        "severity": severity,
        "severity_label": "critical" if severity >= 3 else "warning" if severity == 2 else "info",
        "methods": methods,
        "anomalies": len(rows),
        "open_anomalies": open_rows,
        "status": "open" if open_rows else "resolved",
        "observed": top["observed"],
        "expected": top["expected"],
        "score": top["score"],
    }


@pytest.fixture
def events(rows: dict[str, list[dict]]) -> dict[str, dict]:
    """event name -> the event over DAY_RANGE, derived by hand (see the module docstring)."""
    return {
        "A": event(rows["A"], 6, at(3, 0), at(3, 12), ["deviation", "isolation_forest"]),
        "B": event(rows["B"], 1, at(3, 22), at(3, 24), ["stuck"]),
        "C": event(rows["C"], 1, at(4, 0), at(4, 5), ["deviation"]),
        "D": event(rows["D"], 0, at(4, 9), at(4, 10), ["deviation"]),
        "S": event(rows["S"], 1, at(3, 30), at(3, 50), ["stoppage"]),
        "R": event(rows["R"], 0, at(5, 0), at(5, 1), ["deviation"]),
        # all severity 2: the largest |score| (the last row, 3.3) is the peak
        "E": event(rows["E"], 3, at(-1, 58), at(0, 2), ["deviation"]),
        "T": event(rows["T"], 0, at(3, 5), at(3, 6), ["deviation"]),
    }


def post(caller: Caller, path: str, body: Any, **params: Any) -> httpx.Response:
    """POST as `caller`, with query parameters (the range an event is looked for in)."""
    return caller.client.post(path, json=body, params=params, headers={"X-API-Key": caller.key})


def listed(body: dict) -> list[int]:
    return [e["event_id"] for e in body["items"]]


# ------------------------------------------------------------------------------------------------
# GET /v1/anomaly-events
# ------------------------------------------------------------------------------------------------


def test_events_newest_first_exact(api: Api, events: dict[str, dict]) -> None:
    body = ok(api.t1.get(EVENTS, **DAY_RANGE))
    assert body == {"items": [events[n] for n in "RDCSBAE"], "count": 7, "next_cursor": None}
    # 12 rows one minute apart are one event of 12; 10 minutes later, a second event of 2
    a, b = events["A"], events["B"]
    assert (a["start_time"], a["end_time"], a["anomalies"], a["severity"], a["methods"]) == (
        "2025-08-20T03:00:00Z",
        "2025-08-20T03:12:00Z",
        12,
        5,
        ["deviation", "isolation_forest"],
    )
    assert (a["peak_time"], a["score"], a["observed"]) == ("2025-08-20T03:06:20Z", -5.9, 76.0)
    assert (b["start_time"], b["end_time"], b["anomalies"], b["severity"], b["methods"]) == (
        "2025-08-20T03:22:00Z",
        "2025-08-20T03:24:00Z",
        2,
        3,
        ["stuck"],
    )


def test_events_tenant_isolation(api: Api, events: dict[str, dict]) -> None:
    # t2's series has t1's ids: only the tenant keeps them apart
    assert ok(api.t2.get(EVENTS, **DAY_RANGE))["items"] == [events["T"]]
    assert ok(api.admin.get(EVENTS, **DAY_RANGE))["items"] == [events[n] for n in "RDCSBTAE"]
    assert ok(api.admin.get(EVENTS, tenant_id="t2", **DAY_RANGE))["items"] == [events["T"]]
    assert ok(api.t1.get(EVENTS, tenant_id="t1", **DAY_RANGE))["items"] == [events[n] for n in "RDCSBAE"]
    response = api.t1.get(EVENTS, tenant_id="t2", **DAY_RANGE)
    assert (response.status_code, response.json()) == (404, OTHER_TENANT)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"machine_id": "m1"}, "RDCBA"),
        ({"factory_id": "f1", "machine_id": "m1"}, "DCBA"),
        ({"factory_id": "f2"}, "R"),
        ({"sensor_id": "s2"}, "DC"),
        ({"metric": "count_total"}, "S"),
        ({"anomaly_type": "production"}, "S"),
        ({"min_severity": 3}, "RCSBA"),  # the event's highest severity: C's second row is 4
        ({"min_severity": 4}, "CA"),
        ({"min_severity": 5}, "A"),
        ({"status": "resolved"}, "R"),
        ({"status": "open"}, "DCSBAE"),
        ({"status": "all"}, "RDCSBAE"),
        ({"status": "open", "min_severity": 3, "machine_id": "m1"}, "CBA"),
        ({"machine_id": "m3"}, "E"),  # began the day before: whole; the older one ended before the range
        ({"machine_id": "m9"}, ""),
    ],
)
def test_events_filters(api: Api, events: dict[str, dict], filters: dict, expected: str) -> None:
    body = ok(api.t1.get(EVENTS, **{**DAY_RANGE, **filters}))
    assert body["items"] == [events[n] for n in expected]


def test_events_are_cut_at_the_range_end(api: Api, rows: dict[str, list[dict]], events: dict[str, dict]) -> None:
    # [03:10, 03:23): A overlaps it; of B only the row before the end (03:22:20) is read
    body = ok(api.t1.get(EVENTS, start=iso(at(3, 10)), end=iso(at(3, 23))))
    assert body["items"] == [event(rows["B"][:1], 0, at(3, 22), at(3, 23), ["stuck"]), events["A"]]
    # the day before: E's rows up to then, and the older event of m3
    body = ok(api.t1.get(EVENTS, machine_id="m3", start=iso(at(-24)), end=iso(at(0))))
    assert body["items"] == [
        event(rows["E"][:2], 1, at(-1, 58), at(0), ["deviation"]),
        event(rows["old"], 0, at(-12), at(-12, 1), ["deviation"]),
    ]


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_events_pages_neither_skip_nor_repeat(api: Api, events: dict[str, dict], limit: int) -> None:
    items, sizes = pages(api.t1, EVENTS, limit, **DAY_RANGE)
    assert items == [events[n] for n in "RDCSBAE"]
    assert sizes == split(7, limit)
    items, sizes = pages(api.admin, EVENTS, limit, **DAY_RANGE)
    assert items == [events[n] for n in "RDCSBTAE"]
    assert sizes == split(8, limit)


@pytest.mark.usefixtures("events")
def test_events_csv_equals_json(api: Api) -> None:
    assert_csv_equals_json(api.t1, EVENTS, 3, **DAY_RANGE)


def test_events_default_range_is_the_last_seven_days(api: Api, database: DatabaseHandle) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    recent = insert(database, "analytics_anomaly", [sampled(now - timedelta(hours=1), 3)], returning="anomaly_id")
    old = insert(database, "analytics_anomaly", [sampled(now - timedelta(days=9), 3)], returning="anomaly_id")
    assert listed(ok(api.t1.get(EVENTS))) == recent
    assert listed(ok(api.t1.get(EVENTS, end=iso(now - timedelta(days=7))))) == old


@pytest.mark.parametrize(
    ("params", "loc", "msg"),
    [
        ({"min_severity": 0}, ["query", "min_severity"], "Input should be greater than or equal to 1"),
        ({"min_severity": 6}, ["query", "min_severity"], "Input should be less than or equal to 5"),
        ({"status": "closed"}, ["query", "status"], "Input should be 'open', 'resolved', 'not_confirmed' or 'all'"),
        (
            {"start": "2025-08-20T00:00:00"},
            ["query", "start"],
            "time must include a timezone, e.g. 2025-08-20T03:00:00Z",
        ),
        ({"start": iso(at(5)), "end": iso(at(5))}, ["query", "end"], "end must be after start"),
        (
            {"start": iso(at(-24 * 401)), "end": iso(at(0))},
            ["query", "end"],
            "range is longer than 400 days; narrow it or page through it",
        ),
        ({"cursor": "not a cursor"}, ["query", "cursor"], BAD_CURSOR),
        ({"cursor": encode_cursor(at(3), "x")}, ["query", "cursor"], BAD_CURSOR),  # the id must be a number
        ({"cursor": encode_cursor("t1", "f1", "m1", "s1", "temp")}, ["query", "cursor"], BAD_CURSOR),
        ({"limit": 0}, ["query", "limit"], "Input should be greater than or equal to 1"),
        ({"machine_id": ""}, ["query", "machine_id"], "String should have at least 1 character"),
    ],
)
def test_events_422(api: Api, params: dict, loc: list, msg: str) -> None:
    assert_422(api.t1.get(EVENTS, **params), loc, msg)


# ------------------------------------------------------------------------------------------------
# GET /v1/anomaly-events/{id}
# ------------------------------------------------------------------------------------------------


def test_event_with_its_rows(api: Api, rows: dict[str, list[dict]], events: dict[str, dict]) -> None:
    for name in ("A", "S", "C"):
        body = ok(api.t1.get(f"{EVENTS}/{events[name]['event_id']}", **DAY_RANGE))
        assert body == {**events[name], "rows": rows[name]}
    # at most `limit` rows, by time; `anomalies` still says 12
    body = ok(api.t1.get(f"{EVENTS}/{events['A']['event_id']}", limit=5, **DAY_RANGE))
    assert body == {**events["A"], "rows": rows["A"][:5]}
    # the admin key reads any tenant's event; the t2 key its own
    t2 = f"{EVENTS}/{events['T']['event_id']}"
    assert ok(api.admin.get(t2, **DAY_RANGE)) == ok(api.t2.get(t2, **DAY_RANGE)) == {**events["T"], "rows": rows["T"]}


def test_event_404(api: Api, rows: dict[str, list[dict]], events: dict[str, dict]) -> None:
    a, t = events["A"]["event_id"], events["T"]["event_id"]
    second_row = rows["A"][1]["anomaly_id"]  # a row of A, not its first: no event has that id
    cases = [
        (api.t1, t, DAY_RANGE),  # another tenant's
        (api.t2, a, DAY_RANGE),
        (api.t1, second_row, DAY_RANGE),
        (api.t1, 999_999, DAY_RANGE),
        (api.admin, 999_999, DAY_RANGE),
        (api.t1, a, {}),  # looked for in the last 30 days: A is older
        (api.t1, a, {"start": iso(at(4)), "end": iso(at(5))}),
    ]
    for caller, event_id, params in cases:
        response = caller.get(f"{EVENTS}/{event_id}", **params)
        assert (response.status_code, response.json()) == (404, {"detail": f"anomaly event {event_id} not found"})


def test_event_default_range_is_the_last_thirty_days(api: Api, database: DatabaseHandle) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    recent, old = insert(
        database,
        "analytics_anomaly",
        [sampled(now - timedelta(days=29), 3), sampled(now - timedelta(days=31), 3, machine="m2")],
        returning="anomaly_id",
    )
    assert ok(api.t1.get(f"{EVENTS}/{recent}"))["event_id"] == recent
    assert api.t1.get(f"{EVENTS}/{old}").status_code == 404
    assert ok(api.t1.get(f"{EVENTS}/{old}", start=iso(now - timedelta(days=40))))["event_id"] == old


@pytest.mark.usefixtures("rows")
def test_event_422(api: Api) -> None:
    assert_422(api.t1.get(f"{EVENTS}/1", limit=0), ["query", "limit"], "Input should be greater than or equal to 1")
    assert_422(api.t1.get(f"{EVENTS}/1", start=iso(at(5)), end=iso(at(4))), ["query", "end"], "end must be after start")
    assert_422(api.t1.get(f"{EVENTS}/0"), ["path", "event_id"], "Input should be greater than or equal to 1")


# ------------------------------------------------------------------------------------------------
# POST /v1/anomaly-events/{id}/resolve
# ------------------------------------------------------------------------------------------------


def statuses(database: DatabaseHandle, ids: list[int]) -> list[tuple]:
    return database.query(
        "SELECT anomaly_id, status, resolved_at, resolved_by, resolution_note FROM analytics.analytics_anomaly "
        "WHERE anomaly_id = ANY(%s) ORDER BY anomaly_id",
        (ids,),
    )


def ids_of(rows: list[dict]) -> list[int]:
    return [r["anomaly_id"] for r in rows]


def test_resolve_event_resolves_every_row(
    api: Api, database: DatabaseHandle, rows: dict[str, list[dict]], events: dict[str, dict]
) -> None:
    a = events["A"]
    before = db_now(database)
    body = ok(
        post(api.resolver, f"{EVENTS}/{a['event_id']}/resolve", {"note": "  replaced the thermocouple "}, **DAY_RANGE)
    )
    after = db_now(database)
    assert body == {**a, "open_anomalies": 0, "status": "resolved"}
    by = f"ops-bot (key {api.resolver.key_id})"
    stored = statuses(database, ids_of(rows["A"]))
    assert [(i, s, who, note) for i, s, _at, who, note in stored] == [
        (i, "resolved", by, "replaced the thermocouple") for i in ids_of(rows["A"])
    ]
    assert all(before <= resolved_at <= after for _i, _s, resolved_at, _w, _n in stored)
    # B (the same series, another event) and t2's event of the same ids stay open
    assert {s for _i, s, *_ in statuses(database, ids_of(rows["B"]) + ids_of(rows["T"]))} == {"open"}
    # the listings agree
    assert ok(api.t1.get(EVENTS, status="resolved", **DAY_RANGE))["items"] == [events["R"], body]
    listed_rows = ok(api.t1.get("/v1/anomalies", machine_id="m1", factory_id="f1", status="resolved", **DAY_RANGE))
    assert sorted(r["anomaly_id"] for r in listed_rows["items"]) == ids_of(rows["A"])
    detail = ok(api.t1.get(f"{EVENTS}/{a['event_id']}", **DAY_RANGE))
    assert {(r["status"], r["resolved_by"], r["resolution_note"]) for r in detail["rows"]} == {
        ("resolved", by, "replaced the thermocouple")
    }


def test_resolve_event_by_an_admin_key_any_tenant(
    api: Api, database: DatabaseHandle, rows: dict[str, list[dict]], events: dict[str, dict]
) -> None:
    t = events["T"]
    body = ok(
        post(
            api.admin_resolver,
            f"{EVENTS}/{t['event_id']}/resolve",
            {"note": "checked", "resolved_by": "bo"},
            **DAY_RANGE,
        )
    )
    assert body == {**t, "open_anomalies": 0, "status": "resolved"}
    ((_i, status, _at, who, note),) = statuses(database, ids_of(rows["T"]))
    assert (status, who, note) == ("resolved", "bo", "checked")
    assert {s for _i, s, *_ in statuses(database, ids_of(rows["A"]))} == {"open"}


def test_resolve_event_404_changes_nothing(
    api: Api, database: DatabaseHandle, rows: dict[str, list[dict]], events: dict[str, dict]
) -> None:
    every = [i for r in rows.values() for i in ids_of(r)]
    unchanged = statuses(database, every)
    a, t = events["A"]["event_id"], events["T"]["event_id"]
    cases = [
        (api.resolver, t, DAY_RANGE),  # another tenant's
        (api.resolver, rows["A"][1]["anomaly_id"], DAY_RANGE),  # a row of A, not its first
        (api.resolver, 999_999, DAY_RANGE),
        (api.admin_resolver, 999_999, DAY_RANGE),
        (api.resolver, a, {}),  # looked for in the last 30 days: A is older
    ]
    for caller, event_id, params in cases:
        response = post(caller, f"{EVENTS}/{event_id}/resolve", {"note": "x"}, **params)
        assert (response.status_code, response.json()) == (404, {"detail": f"anomaly event {event_id} not found"})
    assert statuses(database, every) == unchanged


def test_resolve_event_needs_the_scope_and_a_writer(
    api: Api, settings: PlatformSettings, database: DatabaseHandle, rows: dict[str, list[dict]], events: dict
) -> None:
    path = f"{EVENTS}/{events['A']['event_id']}/resolve"
    for caller in (api.t1, api.admin):
        response = post(caller, path, {"note": "x"}, **DAY_RANGE)
        assert (response.status_code, response.json()) == (403, {"detail": "this API key lacks the 'resolve' scope"})
    assert_422(
        post(api.resolver, path, {"note": "   "}, **DAY_RANGE),
        ["body", "note"],
        f"String should match pattern '{NOTE_PATTERN}'",
    )
    assert_422(
        post(api.resolver, path, {"note": "x"}, start=iso(at(5)), end=iso(at(4))),
        ["query", "end"],
        "end must be after start",
    )
    read_only = settings.model_copy(update={"api_write_database_url": None})
    with running(read_only, database) as other:
        response = post(other.resolver, path, {"note": "x"}, **DAY_RANGE)
    assert (response.status_code, response.json()) == (
        503,
        {"detail": "resolving is not configured on this API (set API_WRITE_DATABASE_URL)"},
    )
    assert {s for _i, s, *_ in statuses(database, ids_of(rows["A"]))} == {"open"}


# ------------------------------------------------------------------------------------------------
# GET /v1/anomaly-profiles
# ------------------------------------------------------------------------------------------------


def profile(machine: str, version: int, stage: str, **more: Any) -> dict:
    """An analytics_anomaly_model row of the seasonal detector."""
    return {
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": "f1",
        "machine_id": machine,
        "sensor_id": "s1",
        "metric": "temp",
        "method": more.get("method", "seasonal"),
        "version": version,
        "trained_from": more.get("trained_from", at(-24)),
        "trained_to": more.get("trained_to", at(0)),
        "n_samples": more.get("n_samples", 1440),
        "contamination": 0.0,
        "params": {
            "stage": stage,
            "cadence_s": more.get("cadence_s", 60.0),
            "span_hours": more.get("span_hours", 24.0),
            "centres": [[65.0]],
        },
        "library": "analytics_platform seasonal",
        "active": more.get("active", True),
        "created_at": more.get("created_at", at(0, 5)),
    }


def served(row: dict) -> dict:
    keep = ("tenant_id", "factory_id", "machine_id", "sensor_id", "metric", "version", "trained_from", "trained_to")
    params = row["params"]
    return {
        **jsonable({k: row[k] for k in keep}),
        "n_samples": row["n_samples"],
        "stage": params["stage"],
        "cadence_s": params["cadence_s"],
        "span_hours": params["span_hours"],
        "created_at": iso(row["created_at"]),
    }


PROFILES = {
    "m1-v1": profile("m1", 1, "flat", trained_to=at(-24), span_hours=12.0, active=False),  # superseded by v2
    "m1-v2": profile("m1", 2, "daily", span_hours=36.0),
    "m1-forest": profile("m1", 1, "daily", method="isolation_forest"),  # not a seasonal profile
    "m4": profile("m4", 1, "learning", n_samples=30, span_hours=0.5, trained_from=at(-0.5)),
    "t2": profile("m1", 1, "flat", tenant="t2", span_hours=6.0),
}


@pytest.fixture
def profiles(database: DatabaseHandle) -> dict[str, dict]:
    insert(database, "analytics_anomaly_model", list(PROFILES.values()))
    return {name: served(row) for name, row in PROFILES.items()}


def test_profiles_list_the_learning_series(api: Api, profiles: dict[str, dict]) -> None:
    assert ok(api.t1.get("/v1/anomaly-profiles")) == {
        "items": [profiles["m1-v2"], profiles["m4"]],
        "count": 2,
        "next_cursor": None,
    }
    learning = ok(api.t1.get("/v1/anomaly-profiles", stage="learning"))["items"]
    assert learning == [profiles["m4"]]
    assert (learning[0]["cadence_s"], learning[0]["span_hours"]) == (60.0, 0.5)
    assert ok(api.t1.get("/v1/anomaly-profiles", machine_id="m1"))["items"] == [profiles["m1-v2"]]
    assert ok(api.t1.get("/v1/anomaly-profiles", stage="weekly"))["items"] == []
    assert ok(api.t2.get("/v1/anomaly-profiles"))["items"] == [profiles["t2"]]
    assert ok(api.admin.get("/v1/anomaly-profiles"))["items"] == [profiles[n] for n in ("m1-v2", "m4", "t2")]
    items, sizes = pages(api.admin, "/v1/anomaly-profiles", 1)
    assert (items, sizes) == ([profiles[n] for n in ("m1-v2", "m4", "t2")], [1, 1, 1])
    response = api.t1.get("/v1/anomaly-profiles", tenant_id="t2")
    assert (response.status_code, response.json()) == (404, OTHER_TENANT)


def test_profiles_422(api: Api) -> None:
    assert_422(
        api.t1.get("/v1/anomaly-profiles", stage="ready"),
        ["query", "stage"],
        "Input should be 'learning', 'flat', 'daily' or 'weekly'",
    )
    # a cursor of the events listing is not one of this listing
    assert_422(api.t1.get("/v1/anomaly-profiles", cursor=encode_cursor(at(3), 1)), ["query", "cursor"], BAD_CURSOR)
