"""The REST API against a real PostgreSQL and a real Kafka-protocol broker: no mocks.

Readings are inserted with SQL as the schema owner; the app runs inside `TestClient(...)` as a context
manager so its lifespan opens the connection pool (the read-only API role). Covered: /v1/health
(ok, degraded, down), /v1/readings (exact rows, filters, half-open time range, UTC output, cursor
paging, field-level 422s), the read-only role, /v1/metrics, and 503s when the database goes away.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from analytics_platform.api.app import create_app
from analytics_platform.api.keys import create_key
from analytics_platform.contracts.registry import bind_domains
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.stack import DatabaseHandle

COLUMNS = (
    "time, tenant_id, factory_id, machine_id, sensor_id, metric, value, unit, payload, event_id, "
    "schema_version, dedup_key, topic, kafka_partition, kafka_offset"
)
# Nobody listens on port 1 of the loopback interface: connections are refused at once.
CLOSED_PORT_DB = "postgresql://nobody:nothing@127.0.0.1:1/nowhere?connect_timeout=2"
NO_DATABASE = "no database connection available (is the database running?)"
BAD_CURSOR = "cursor is not one this API returned"
DEFAULT_QUERY = {
    "tenant_id": "t1",
    "factory_id": "f1",
    "machine_id": "m1",
    "metric": "temp",
    "start": "2025-08-20T03:00:00Z",
    "end": "2025-08-20T04:00:00Z",
}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def reading(
    at: str,
    value: float,
    *,
    sensor: str = "s1",
    tenant: str = "t1",
    factory: str = "f1",
    machine: str = "m1",
    metric: str = "temp",
    unit: str | None = "degC",
    payload: dict | None = None,
    event_id: str | None = None,
    offset: int = 0,
) -> dict:
    """One row of analytics.raw_sensor_readings; `at` is ISO-8601 with a zone."""
    return {
        "time": datetime.fromisoformat(at),
        "tenant_id": tenant,
        "factory_id": factory,
        "machine_id": machine,
        "sensor_id": sensor,
        "metric": metric,
        "value": value,
        "unit": unit,
        "payload": Jsonb(payload) if payload is not None else None,
        "event_id": event_id,
        "schema_version": 1,
        "dedup_key": f"{tenant}|{factory}|{machine}|{sensor}|{metric}",
        "topic": "sensors.device.readings",
        "kafka_partition": 0,
        "kafka_offset": offset,
    }


def insert(db: DatabaseHandle, rows: list[dict], url: str | None = None) -> None:
    placeholders = ", ".join(f"%({c.strip()})s" for c in COLUMNS.split(","))
    with psycopg.connect(url or db.admin_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO analytics.raw_sensor_readings ({COLUMNS}) VALUES ({placeholders})", rows)


def get_readings(client: TestClient, **overrides: object) -> httpx.Response:
    """GET /v1/readings with the default query; an override of None drops that parameter."""
    query = {**DEFAULT_QUERY, **overrides}
    return client.get("/v1/readings", params={k: v for k, v in query.items() if v is not None})


def b64(value: object) -> str:
    """A cursor-looking string: unpadded URL-safe base64 of the JSON of `value`."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def item(at: str, value: float, *, sensor: str = "s1", tenant: str = "t1", factory: str = "f1", **rest) -> dict:
    """The JSON item the API returns for a reading (defaults as in `reading`)."""
    return {
        "time": at,
        "tenant_id": tenant,
        "factory_id": factory,
        "machine_id": rest.get("machine", "m1"),
        "sensor_id": sensor,
        "metric": rest.get("metric", "temp"),
        "value": value,
        "unit": rest.get("unit", "degC"),
        "payload": rest.get("payload"),
        "event_id": rest.get("event_id"),
    }


def sample_lines(text: str) -> set[str]:
    return {line for line in text.splitlines() if line and not line.startswith("#")}


def timescaledb_installed(db: DatabaseHandle) -> bool:
    return db.scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")


def keyed_client(database: DatabaseHandle, app: FastAPI, tenant: str = "t1", **kwargs: Any) -> TestClient:
    """A client of `app` sending a new read key of `tenant` on every request."""
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        _key_id, key = create_key(conn, "tests", tenant)
    return TestClient(app, headers={"X-API-Key": key}, **kwargs)


@pytest.fixture
def client(settings: PlatformSettings, database: DatabaseHandle) -> Iterator[TestClient]:
    with keyed_client(database, create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def lenient_client(settings: PlatformSettings, database: DatabaseHandle) -> Iterator[TestClient]:
    """Server errors come back as HTTP 500 responses instead of being raised into the test."""
    with keyed_client(database, create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


# ------------------------------------------------------------------------------------------------
# /v1/health
# ------------------------------------------------------------------------------------------------


def test_health_ok_with_database_and_broker(
    client: TestClient, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    response = client.get("/v1/health")

    assert response.status_code == 200
    body = response.json()
    assert body.keys() == {"status", "database", "broker", "timescaledb"}
    assert body["status"] == "ok"
    assert body["database"] == {"ok": True, "detail": "reachable"}
    assert body["broker"]["ok"] is True
    match = re.fullmatch(r"(\d+) topics", body["broker"]["detail"])
    assert match, body["broker"]["detail"]
    own_topics = {t for b in bind_domains(settings) for t in b.topics}
    assert int(match.group(1)) >= len(own_topics)  # the broker is shared; this test's topics exist
    assert body["timescaledb"] is timescaledb_installed(database)


def test_health_reports_timescaledb_as_the_database_has_it(client: TestClient, database: DatabaseHandle) -> None:
    # The embedded PostgreSQL of the fixtures is plain PostgreSQL; an external one may run TimescaleDB.
    expected = timescaledb_installed(database)
    if "TEST_DATABASE_URL" not in os.environ:
        assert expected is False
    assert client.get("/v1/health").json()["timescaledb"] is expected


def test_health_degraded_when_the_broker_is_unreachable(settings: PlatformSettings, database: DatabaseHandle) -> None:
    no_broker = settings.model_copy(update={"kafka_brokers": "127.0.0.1:1"})
    with keyed_client(database, create_app(no_broker)) as client:
        response = client.get("/v1/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["database"] == {"ok": True, "detail": "reachable"}
    assert body["broker"]["ok"] is False
    assert re.fullmatch(
        r"127\.0\.0\.1:1 unreachable \(Failed to get metadata: Local: "
        r"(Broker transport failure|All broker connections are down|Timed out)\)",
        body["broker"]["detail"],
    ), body["broker"]["detail"]
    assert body["timescaledb"] is timescaledb_installed(database)


def test_health_down_readings_503_and_database_up_0_when_the_database_is_unreachable(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    # each of the three requests waits API_DB_WAIT_S for a connection that never comes: 1 s, not the default 5
    no_db = settings.model_copy(update={"api_database_url": SecretStr(CLOSED_PORT_DB), "api_db_wait_s": 1.0})
    with keyed_client(database, create_app(no_db), raise_server_exceptions=False) as client:
        health = client.get("/v1/health")
        page = get_readings(client)
        metrics = client.get("/v1/metrics")

    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "down"
    assert body["database"] == {"ok": False, "detail": NO_DATABASE}
    assert body["broker"]["ok"] is True
    assert body["timescaledb"] is None
    for response in (health, page):
        assert "Traceback" not in response.text
        assert 'File "' not in response.text
        assert "psycopg" not in response.text

    assert page.status_code == 503
    assert page.json() == {"detail": NO_DATABASE}

    assert metrics.status_code == 200
    assert "analytics_database_up 0.0" in sample_lines(metrics.text)


# ------------------------------------------------------------------------------------------------
# /v1/readings: exact rows
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def known_rows(database: DatabaseHandle) -> None:
    insert(
        database,
        [
            reading("2025-08-20T02:59:59.999999Z", 0.5),  # just before start: excluded
            reading(
                "2025-08-20T03:00:00Z",
                20.5,
                payload={"raw": 2050, "quality": "good", "tags": ["a", 1]},
                event_id="e-1",
                offset=1,
            ),  # at start: included
            reading("2025-08-20T03:15:30.25Z", 21.25, sensor="s2", unit=None, offset=2),
            reading("2025-08-20T03:59:59.999999Z", 22.0, event_id="e-3", offset=3),  # last included
            reading("2025-08-20T04:00:00Z", 23.0, offset=4),  # at end: excluded
            # same time and sensor, but another tenant / factory / machine / metric
            reading("2025-08-20T03:30:00Z", 91.0, tenant="t2", offset=5),
            reading("2025-08-20T03:30:00Z", 92.0, factory="f2", offset=6),
            reading("2025-08-20T03:30:00Z", 93.0, machine="m2", offset=7),
            reading("2025-08-20T03:30:00Z", 94.0, metric="humidity", unit="%", offset=8),
        ],
    )


EXPECTED_DEFAULT_WINDOW = [
    item(
        "2025-08-20T03:00:00Z",
        20.5,
        payload={"raw": 2050, "quality": "good", "tags": ["a", 1]},
        event_id="e-1",
    ),
    item("2025-08-20T03:15:30.250000Z", 21.25, sensor="s2", unit=None),
    item("2025-08-20T03:59:59.999999Z", 22.0, event_id="e-3"),
]


@pytest.mark.usefixtures("known_rows")
def test_readings_exact_items_start_inclusive_end_exclusive(client: TestClient) -> None:
    response = get_readings(client)

    assert response.status_code == 200
    assert response.json() == {"items": EXPECTED_DEFAULT_WINDOW, "count": 3, "next_cursor": None}


@pytest.mark.usefixtures("known_rows")
def test_readings_filter_by_sensor(client: TestClient) -> None:
    assert get_readings(client, sensor_id="s2").json() == {
        "items": [item("2025-08-20T03:15:30.250000Z", 21.25, sensor="s2", unit=None)],
        "count": 1,
        "next_cursor": None,
    }
    assert get_readings(client, sensor_id="s1").json()["items"] == [
        EXPECTED_DEFAULT_WINDOW[0],
        EXPECTED_DEFAULT_WINDOW[2],
    ]
    assert get_readings(client, sensor_id="s9").json() == {"items": [], "count": 0, "next_cursor": None}


@pytest.mark.usefixtures("known_rows")
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"factory_id": "f2"}, item("2025-08-20T03:30:00Z", 92.0, factory="f2")),
        ({"machine_id": "m2"}, item("2025-08-20T03:30:00Z", 93.0, machine="m2")),
        ({"metric": "humidity"}, item("2025-08-20T03:30:00Z", 94.0, metric="humidity", unit="%")),
    ],
)
def test_readings_of_another_tenant_factory_machine_or_metric_stay_apart(
    client: TestClient, overrides: dict, expected: dict
) -> None:
    assert get_readings(client, **overrides).json() == {"items": [expected], "count": 1, "next_cursor": None}


@pytest.mark.usefixtures("known_rows")
def test_readings_of_another_tenant_need_that_tenants_key(
    client: TestClient, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    # t1's key cannot name t2, not even to learn that it exists
    assert get_readings(client, tenant_id="t2").status_code == 404
    assert get_readings(client, tenant_id="t2").json() == {"detail": "tenant 't2' not found"}
    with keyed_client(database, create_app(settings), tenant="t2") as t2_client:
        for query in ({"tenant_id": "t2"}, {"tenant_id": None}):
            body = get_readings(t2_client, **query).json()
            assert body == {"items": [item("2025-08-20T03:30:00Z", 91.0, tenant="t2")], "count": 1, "next_cursor": None}


@pytest.mark.usefixtures("known_rows")
def test_readings_boundaries_to_the_microsecond(client: TestClient) -> None:
    # start one microsecond later drops the 03:00:00 row; end one microsecond later adds the 04:00 row
    later_start = get_readings(client, start="2025-08-20T03:00:00.000001Z").json()["items"]
    assert [i["time"] for i in later_start] == ["2025-08-20T03:15:30.250000Z", "2025-08-20T03:59:59.999999Z"]
    later_end = get_readings(client, end="2025-08-20T04:00:00.000001Z").json()["items"]
    assert [(i["time"], i["value"]) for i in later_end] == [
        ("2025-08-20T03:00:00Z", 20.5),
        ("2025-08-20T03:15:30.250000Z", 21.25),
        ("2025-08-20T03:59:59.999999Z", 22.0),
        ("2025-08-20T04:00:00Z", 23.0),
    ]
    earlier_start = get_readings(client, start="2025-08-20T02:59:59.999999Z", end="2025-08-20T03:00:00Z").json()
    assert earlier_start["items"] == [item("2025-08-20T02:59:59.999999Z", 0.5)]


@pytest.mark.usefixtures("known_rows")
@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2025-08-20T10:00:00+07:00", "2025-08-20T11:00:00+07:00"),
        ("2025-08-19T23:00:00-04:00", "2025-08-20T00:00:00-04:00"),
        ("2025-08-20T03:00:00+00:00", "2025-08-20T04:00:00+00:00"),
    ],
)
def test_readings_offset_times_are_converted_to_utc(client: TestClient, start: str, end: str) -> None:
    response = get_readings(client, start=start, end=end)

    assert response.status_code == 200
    assert response.json() == {"items": EXPECTED_DEFAULT_WINDOW, "count": 3, "next_cursor": None}


@pytest.mark.usefixtures("known_rows")
def test_readings_offset_start_is_inclusive_after_conversion(client: TestClient) -> None:
    # 10:15:30.25+07:00 is 03:15:30.25Z exactly: that row is the first one
    items = get_readings(client, start="2025-08-20T10:15:30.25+07:00").json()["items"]
    assert [i["time"] for i in items] == ["2025-08-20T03:15:30.250000Z", "2025-08-20T03:59:59.999999Z"]


# ------------------------------------------------------------------------------------------------
# /v1/readings: cursor paging
# ------------------------------------------------------------------------------------------------


def pages(client: TestClient, **params: object) -> list[dict]:
    """Follow next_cursor until null; every page must be a 200."""
    result, cursor = [], None
    for _ in range(100):
        response = get_readings(client, cursor=cursor, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(body["items"])
        result.append(body)
        cursor = body["next_cursor"]
        if cursor is None:
            return result
    raise AssertionError("paging did not end")


def test_cursor_paging_three_three_one_with_shared_timestamps(client: TestClient, database: DatabaseHandle) -> None:
    layout = [
        ("2025-08-20T03:01:00Z", "s1"),
        ("2025-08-20T03:01:00Z", "s2"),
        ("2025-08-20T03:02:00Z", "s1"),
        ("2025-08-20T03:02:00Z", "s2"),  # the page boundary splits this timestamp
        ("2025-08-20T03:03:00Z", "s1"),
        ("2025-08-20T03:03:00Z", "s2"),
        ("2025-08-20T03:04:00Z", "s1"),
    ]
    rows = [reading(at, float(i), sensor=s, offset=i) for i, (at, s) in enumerate(layout)]
    # noise interleaved in time: another machine and another metric
    noise = [reading(at, 99.0, machine="m2", sensor=s, offset=100) for at, s in layout]
    noise += [reading(at, 98.0, metric="humidity", sensor=s, offset=200) for at, s in layout]
    insert(database, list(reversed(rows)) + noise)  # insertion order is not the answer order

    result = pages(client, limit=3)

    assert [p["count"] for p in result] == [3, 3, 1]
    assert [p["next_cursor"] is None for p in result] == [False, False, True]
    assert [[(i["time"], i["sensor_id"], i["value"]) for i in p["items"]] for p in result] == [
        [("2025-08-20T03:01:00Z", "s1", 0.0), ("2025-08-20T03:01:00Z", "s2", 1.0), ("2025-08-20T03:02:00Z", "s1", 2.0)],
        [("2025-08-20T03:02:00Z", "s2", 3.0), ("2025-08-20T03:03:00Z", "s1", 4.0), ("2025-08-20T03:03:00Z", "s2", 5.0)],
        [("2025-08-20T03:04:00Z", "s1", 6.0)],
    ]
    everything = [i for p in result for i in p["items"]]
    assert everything == get_readings(client).json()["items"]  # same as one big page
    assert {(i["machine_id"], i["metric"]) for i in everything} == {("m1", "temp")}


def test_cursor_paging_when_every_row_shares_one_timestamp(client: TestClient, database: DatabaseHandle) -> None:
    insert(database, [reading("2025-08-20T03:30:00Z", float(n), sensor=f"s{n}", offset=n) for n in range(1, 8)])

    result = pages(client, limit=3)

    assert [[i["sensor_id"] for i in p["items"]] for p in result] == [["s1", "s2", "s3"], ["s4", "s5", "s6"], ["s7"]]
    assert {i["time"] for p in result for i in p["items"]} == {"2025-08-20T03:30:00Z"}


def test_cursor_paging_exact_fit_and_one_left_over(client: TestClient, database: DatabaseHandle) -> None:
    insert(database, [reading(f"2025-08-20T03:0{n}:00Z", float(n), offset=n) for n in range(7)])

    exact = get_readings(client, limit=7).json()
    assert exact["count"] == 7 and exact["next_cursor"] is None

    first = get_readings(client, limit=6).json()
    assert first["count"] == 6 and isinstance(first["next_cursor"], str)
    last = get_readings(client, limit=6, cursor=first["next_cursor"]).json()
    assert last == {"items": [item("2025-08-20T03:06:00Z", 6.0)], "count": 1, "next_cursor": None}


def test_cursor_is_stateless_and_combines_with_the_sensor_filter(client: TestClient, database: DatabaseHandle) -> None:
    insert(
        database,
        [reading(f"2025-08-20T03:1{n}:00Z", float(n), sensor=s, offset=n) for n in range(5) for s in ("s1", "s2")],
    )
    first = get_readings(client, sensor_id="s2", limit=2).json()
    assert [(i["time"], i["sensor_id"]) for i in first["items"]] == [
        ("2025-08-20T03:10:00Z", "s2"),
        ("2025-08-20T03:11:00Z", "s2"),
    ]
    again = get_readings(client, sensor_id="s2", limit=2, cursor=first["next_cursor"]).json()
    twice = get_readings(client, sensor_id="s2", limit=2, cursor=first["next_cursor"]).json()
    assert again == twice
    assert [(i["time"], i["sensor_id"]) for i in again["items"]] == [
        ("2025-08-20T03:12:00Z", "s2"),
        ("2025-08-20T03:13:00Z", "s2"),
    ]
    rest = get_readings(client, sensor_id="s2", limit=2, cursor=again["next_cursor"]).json()
    assert rest == {"items": [item("2025-08-20T03:14:00Z", 4.0, sensor="s2")], "count": 1, "next_cursor": None}


# ------------------------------------------------------------------------------------------------
# /v1/readings: 422 naming the field
# ------------------------------------------------------------------------------------------------


def assert_one_error(response: httpx.Response, field: str, message: str) -> dict:
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", field]
    assert message in error["msg"], error["msg"]
    return error


@pytest.mark.parametrize("field", ["factory_id", "machine_id", "metric", "start", "end"])
def test_422_for_each_missing_required_parameter(client: TestClient, field: str) -> None:
    error = assert_one_error(get_readings(client, **{field: None}), field, "Field required")
    assert error["type"] == "missing"


def test_422_lists_every_missing_parameter(client: TestClient) -> None:
    response = client.get("/v1/readings")

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [e["loc"] for e in detail] == [
        ["query", "factory_id"],
        ["query", "machine_id"],
        ["query", "metric"],
        ["query", "start"],
        ["query", "end"],
    ]
    assert {e["msg"] for e in detail} == {"Field required"}


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        # time range
        ({"start": "2025-08-20T05:00:00Z"}, "end", "end must be after start"),
        ({"end": "2025-08-20T03:00:00Z"}, "end", "end must be after start"),
        ({"start": "2025-08-20T11:00:00+07:00"}, "end", "end must be after start"),  # 04:00Z, the same instant
        ({"end": "2025-09-20T03:00:00.000001Z"}, "end", "range is longer than 31 days; narrow it or page through it"),
        ({"start": "2025-06-01T00:00:00Z"}, "end", "range is longer than 31 days"),
        # times without a zone, or not times at all
        ({"start": "2025-08-20T03:00:00"}, "start", "time must include a timezone, e.g. 2025-08-20T03:00:00Z"),
        ({"end": "2025-08-20T04:00:00"}, "end", "time must include a timezone"),
        ({"start": "yesterday"}, "start", "Input should be a valid datetime"),
        ({"end": "2025-13-01T00:00:00Z"}, "end", "Input should be a valid datetime"),
        ({"start": "2025-08-20T03:00:00+25:00"}, "start", "Input should be a valid datetime"),
        # metric and identifiers
        ({"metric": "flux"}, "metric", "unknown metric 'flux'; known: "),
        ({"metric": "Temp"}, "metric", "unknown metric 'Temp'"),
        ({"tenant_id": ""}, "tenant_id", "String should have at least 1 character"),
        ({"sensor_id": ""}, "sensor_id", "String should have at least 1 character"),
        ({"machine_id": "m" * 201}, "machine_id", "String should have at most 200 characters"),
        # limit
        ({"limit": 0}, "limit", "Input should be greater than or equal to 1"),
        ({"limit": -1}, "limit", "Input should be greater than or equal to 1"),
        ({"limit": 10001}, "limit", "Input should be less than or equal to 10000"),
        ({"limit": "ten"}, "limit", "Input should be a valid integer"),
    ],
)
def test_422_for_a_bad_parameter(client: TestClient, overrides: dict, field: str, message: str) -> None:
    assert_one_error(get_readings(client, **overrides), field, message)


def test_422_for_start_after_end_echoes_the_utc_end(client: TestClient) -> None:
    error = assert_one_error(get_readings(client, start="2025-08-20T05:00:00Z"), "end", "end must be after start")
    assert error == {
        "loc": ["query", "end"],
        "msg": "end must be after start",
        "type": "value_error",
        "input": "2025-08-20T04:00:00+00:00",
    }


def test_422_for_naive_time_echoes_the_input(client: TestClient) -> None:
    error = assert_one_error(get_readings(client, start="2025-08-20T03:00:00"), "start", "time must include")
    assert error["input"] == "2025-08-20T03:00:00"
    assert error["type"] == "value_error"


def test_unknown_metric_message_lists_the_known_metrics(client: TestClient) -> None:
    error = assert_one_error(get_readings(client, metric="flux"), "metric", "unknown metric 'flux'")
    known = error["msg"].split("known: ", 1)[1].split(", ")
    assert known == sorted(known)
    assert {"temp", "humidity", "pressure"} <= set(known)


def test_range_of_exactly_31_days_is_accepted(client: TestClient) -> None:
    response = get_readings(client, start="2025-08-01T00:00:00Z", end="2025-09-01T00:00:00Z")
    assert response.status_code == 200
    assert response.json() == {"items": [], "count": 0, "next_cursor": None}


def test_range_limit_follows_the_setting(settings: PlatformSettings, database: DatabaseHandle) -> None:
    one_day = settings.model_copy(update={"api_max_range_days": 1})
    with keyed_client(database, create_app(one_day)) as client:
        assert get_readings(client, start="2025-08-20T00:00:00Z", end="2025-08-21T00:00:00Z").status_code == 200
        too_long = get_readings(client, start="2025-08-20T00:00:00Z", end="2025-08-21T00:00:01Z")
    assert_one_error(too_long, "end", "range is longer than 1 days")


@pytest.mark.parametrize("limit", [1, 10000])
def test_limit_bounds_are_accepted(client: TestClient, limit: int) -> None:
    assert get_readings(client, limit=limit).status_code == 200


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("%%%", id="garbage"),
        pytest.param("not base64 at all!", id="garbage-with-spaces"),
        pytest.param("A", id="one-base64-char"),
        pytest.param("QUJD", id="base64-not-json"),
        pytest.param("__79", id="base64-not-utf8"),
        pytest.param(b64({"time": "2025-08-20T03:00:00+00:00", "key": "k"}), id="object"),
        pytest.param(b64("2025-08-20T03:00:00+00:00"), id="string"),
        pytest.param(b64(["2025-08-20T03:00:00+00:00"]), id="list-of-one"),
        pytest.param(b64(["2025-08-20T03:00:00+00:00", "k", "x"]), id="list-of-three"),
        pytest.param(b64([]), id="empty-list"),
        pytest.param(b64(["not a time", "k"]), id="text-not-a-time"),
        pytest.param(b64([1755658800, "k"]), id="number-not-a-time"),
        pytest.param(b64([None, "k"]), id="null-not-a-time"),
        pytest.param(b64([["2025-08-20T03:00:00+00:00"], "k"]), id="list-not-a-time"),
        pytest.param(b64(["2025-08-20T03:00:00+00:00", 7]), id="number-key"),
        pytest.param(b64(["2025-08-20T03:00:00+00:00", None]), id="null-key"),
    ],
)
def test_422_for_a_tampered_cursor(client: TestClient, database: DatabaseHandle, cursor: str) -> None:
    insert(database, [reading("2025-08-20T03:10:00Z", 1.0)])
    error = assert_one_error(get_readings(client, cursor=cursor), "cursor", BAD_CURSOR)
    assert error == {"loc": ["query", "cursor"], "msg": BAD_CURSOR, "type": "value_error", "input": cursor}


def test_422_for_an_overlong_cursor(client: TestClient) -> None:
    assert_one_error(get_readings(client, cursor="A" * 2001), "cursor", "String should have at most 2000 characters")


def test_a_truncated_real_cursor_is_rejected(client: TestClient, database: DatabaseHandle) -> None:
    insert(database, [reading(f"2025-08-20T03:0{n}:00Z", float(n), offset=n) for n in range(4)])
    cursor = get_readings(client, limit=2).json()["next_cursor"]
    assert json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))) == [
        "2025-08-20T03:01:00+00:00",
        "t1|f1|m1|s1|temp",
    ]
    # cut the cursor short: it no longer decodes to a two-element list
    assert_one_error(get_readings(client, limit=2, cursor=cursor[:-6]), "cursor", BAD_CURSOR)


# ------------------------------------------------------------------------------------------------
# roles
# ------------------------------------------------------------------------------------------------

INSERT_ONE = (
    f"INSERT INTO analytics.raw_sensor_readings ({COLUMNS}) VALUES "
    "('2025-08-20T03:00:00Z', 't1', 'f1', 'm1', %s, 'temp', 1.5, 'degC', NULL, NULL, 1, %s, 'x', 0, 0)"
)


def test_the_api_role_can_select_but_not_write(database: DatabaseHandle) -> None:
    insert(database, [reading("2025-08-20T03:00:00Z", 1.0)])
    with psycopg.connect(database.api_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*), min(value) FROM analytics.raw_sensor_readings").fetchone() == (1, 1.0)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(INSERT_ONE, ("s9", "api-key"))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE analytics.raw_sensor_readings SET value = 2")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM analytics.raw_sensor_readings")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO analytics.rejected_message "
                "(topic, kafka_partition, kafka_offset, kafka_ts, reason, detail) "
                "VALUES ('x', 0, 1, now(), 'not_json', 'd')"
            )
    assert database.query("SELECT sensor_id, value FROM analytics.raw_sensor_readings") == [("s1", 1.0)]


def test_the_pipeline_role_can_insert(database: DatabaseHandle) -> None:
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        conn.execute(INSERT_ONE, ("s7", "pipeline-key"))
    with psycopg.connect(database.api_url, autocommit=True) as conn:
        assert conn.execute("SELECT sensor_id, value, dedup_key FROM analytics.raw_sensor_readings").fetchall() == [
            ("s7", 1.5, "pipeline-key")
        ]


def test_the_api_connects_as_the_read_only_role(client: TestClient, database: DatabaseHandle) -> None:
    with client.app.state.db.connection() as conn:
        row = conn.execute(
            "SELECT current_user AS who, "
            "has_table_privilege('analytics.raw_sensor_readings', 'SELECT') AS can_select, "
            "has_table_privilege('analytics.raw_sensor_readings', 'INSERT') AS can_insert, "
            "pg_has_role('analytics_ro', 'MEMBER') AS ro"
        ).fetchone()
    assert row == {
        "who": conninfo_to_dict(database.api_url)["user"],
        "can_select": True,
        "can_insert": False,
        "ro": True,
    }


# ------------------------------------------------------------------------------------------------
# /v1/metrics
# ------------------------------------------------------------------------------------------------


def test_metrics_prometheus_text_with_traffic_and_pipeline_figures(
    client: TestClient, database: DatabaseHandle
) -> None:
    # before the first scrape (the collector reads the database then, and caches for 5 s)
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO analytics.rejected_message (topic, kafka_partition, kafka_offset, kafka_ts, reason, detail) "
            "VALUES ('x', 0, 1, now(), 'not_json', 'd'), ('x', 0, 2, now(), 'not_json', 'd')"
        )
    insert(database, [reading("2025-08-20T03:10:00Z", 1.0)])
    assert get_readings(client).json()["count"] == 1
    assert get_readings(client, sensor_id="s1", limit=5).status_code == 200
    assert get_readings(client, limit=0).status_code == 422
    assert client.get("/v1/readings/m1").status_code == 404
    assert client.post("/v1/readings").status_code == 405

    newest = datetime.fromisoformat("2025-08-20T03:10:00+00:00")
    lag_before = time.time() - newest.timestamp()
    response = client.get("/v1/metrics")
    lag_after = time.time() - newest.timestamp()

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    # ingest lag: only the table that has rows reports one, the age of its newest reading
    lags = [line for line in sample_lines(response.text) if line.startswith("analytics_ingest_lag_seconds")]
    assert len(lags) == 1, lags
    label, value = lags[0].rsplit(" ", 1)
    assert label == 'analytics_ingest_lag_seconds{table="raw_sensor_readings"}'
    assert lag_before - 1 <= float(value) <= lag_after + 1
    assert "# TYPE analytics_api_requests_total counter" in response.text
    lines = sample_lines(response.text)
    requests = {line for line in lines if line.startswith("analytics_api_requests_total")}
    assert requests == {
        'analytics_api_requests_total{method="GET",route="/v1/readings",status="200"} 2.0',
        'analytics_api_requests_total{method="GET",route="/v1/readings",status="422"} 1.0',
        'analytics_api_requests_total{method="POST",route="/v1/readings",status="405"} 1.0',
        'analytics_api_requests_total{method="GET",route="unmatched",status="404"} 1.0',
    }
    assert "analytics_database_up 1.0" in lines
    assert 'analytics_rejected_messages_total{reason="not_json",topic="x"} 2.0' in lines
    assert not any("tenant_id" in line or "/v1/readings/m1" in line for line in lines)
    assert 'analytics_api_request_seconds_count{method="GET",route="/v1/readings"} 3.0' in lines

    # the scrape itself is counted once it has been answered
    second = sample_lines(client.get("/v1/metrics").text)
    assert 'analytics_api_requests_total{method="GET",route="/v1/metrics",status="200"} 1.0' in second


def test_metrics_list_rejects_per_topic_and_reason(settings: PlatformSettings, database: DatabaseHandle) -> None:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO analytics.rejected_message (topic, kafka_partition, kafka_offset, kafka_ts, reason, detail) "
            "VALUES ('x', 0, 1, now(), 'not_json', 'd'), ('x', 1, 1, now(), 'not_json', 'd'), "
            "('x', 0, 2, now(), 'bad_time', 'd'), ('y', 0, 1, now(), 'not_json', 'd')"
        )
    with keyed_client(database, create_app(settings)) as client:  # created after the inserts
        lines = sample_lines(client.get("/v1/metrics").text)
    rejects = {line for line in lines if line.startswith("analytics_rejected_messages_total")}
    assert rejects == {
        'analytics_rejected_messages_total{reason="not_json",topic="x"} 2.0',
        'analytics_rejected_messages_total{reason="bad_time",topic="x"} 1.0',
        'analytics_rejected_messages_total{reason="not_json",topic="y"} 1.0',
    }


# ------------------------------------------------------------------------------------------------
# the database goes away while the API runs
# ------------------------------------------------------------------------------------------------


def test_readings_503_when_the_database_stops_accepting_connections(
    settings: PlatformSettings, database: DatabaseHandle, pg_admin_url: str
) -> None:
    insert(database, [reading("2025-08-20T03:10:00Z", 1.0)])
    impatient = settings.model_copy(update={"api_db_wait_s": 1.0})  # the 503 comes after this wait
    with keyed_client(database, create_app(impatient)) as client:
        assert get_readings(client).json()["count"] == 1  # the pool holds a live connection now
        name = sql.Identifier(database.name)
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
            try:
                terminated = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database.name,),
                ).fetchone()[0]
                assert terminated >= 1

                response = get_readings(client)
            finally:
                admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))

    assert response.status_code == 503
    assert response.json() == {"detail": NO_DATABASE}
    assert "\n" not in response.text


def _wait_for_lock_waiter(monitor: psycopg.Connection, worker: threading.Thread) -> int:
    """The pid of the API backend once it waits for our table lock (polled, no fixed sleep)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and worker.is_alive():
        row = monitor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchone()
        if row:
            return row[0]
    raise AssertionError("the API query never waited for the lock")


def test_readings_503_when_the_connection_dies_during_the_query(client: TestClient, database: DatabaseHandle) -> None:
    insert(database, [reading("2025-08-20T03:10:00Z", 1.0)])
    assert get_readings(client).status_code == 200
    result: dict[str, httpx.Response] = {}
    worker = threading.Thread(target=lambda: result.setdefault("response", get_readings(client)))
    with psycopg.connect(database.admin_url) as locker, psycopg.connect(database.admin_url, autocommit=True) as mon:
        locker.execute("LOCK TABLE analytics.raw_sensor_readings IN ACCESS EXCLUSIVE MODE")
        worker.start()
        pid = _wait_for_lock_waiter(mon, worker)
        assert mon.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        worker.join(30)
    assert not worker.is_alive()

    response = result["response"]
    assert response.status_code == 503
    assert response.json() == {"detail": "database error: terminating connection due to administrator command"}
    assert "\n" not in response.text

    # the pool replaces the dead connection: the next request is served
    assert get_readings(client).json()["count"] == 1


def test_readings_503_with_the_first_line_of_an_operational_error(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    impatient = settings.model_copy(
        update={"api_database_url": SecretStr(database.api_url + "?options=-c%20lock_timeout%3D100")}
    )
    with keyed_client(database, create_app(impatient)) as client:
        assert get_readings(client).status_code == 200
        with psycopg.connect(database.admin_url) as locker:
            locker.execute("LOCK TABLE analytics.raw_sensor_readings IN ACCESS EXCLUSIVE MODE")
            response = get_readings(client)
        after = get_readings(client)

    assert response.status_code == 503
    assert response.json() == {"detail": "database error: canceling statement due to lock timeout"}
    assert after.status_code == 200


# ------------------------------------------------------------------------------------------------
# bugs found while writing these tests (fixed)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["tenant_id", "factory_id", "machine_id", "sensor_id"])
def test_bug_nul_byte_in_an_identifier_is_a_422(lenient_client: TestClient, field: str) -> None:
    response = get_readings(lenient_client, **{field: "a\x00b"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_bug_cursor_key_with_nul_byte_is_a_422(lenient_client: TestClient) -> None:
    response = get_readings(lenient_client, cursor=b64(["2025-08-20T03:00:00+00:00", "a\x00b"]))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T00:00:00+14:00", "0001-01-02T00:00:00+14:00"),
        ("9999-12-31T00:00:00-14:00", "9999-12-31T12:00:00-14:00"),
    ],
)
def test_bug_time_outside_the_utc_range_is_a_422(lenient_client: TestClient, start: str, end: str) -> None:
    response = get_readings(lenient_client, start=start, end=end)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "query"


def test_bug_times_are_utc_even_when_the_database_timezone_is_not(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    insert(database, [reading("2025-08-20T03:00:00Z", 1.0)])
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET timezone TO 'Asia/Bangkok'").format(sql.Identifier(database.name)))
    with keyed_client(database, create_app(settings)) as client:
        items = get_readings(client).json()["items"]
    assert [i["time"] for i in items] == ["2025-08-20T03:00:00Z"]


def test_bug_page_limit_follows_the_setting(settings: PlatformSettings, database: DatabaseHandle) -> None:
    small = settings.model_copy(update={"api_page_limit_max": 5})
    with keyed_client(database, create_app(small)) as client:
        response = get_readings(client, limit=6)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]
