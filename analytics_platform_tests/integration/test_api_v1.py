"""/v1 of the REST API against a real database, no mocks: exact answers of every endpoint, every 422,
keys and scopes (401 / 403 / 404 / 503), tenant isolation, keyset paging, CSV, the database roles
and the `api-keys` CLI.

Rows are inserted with SQL as the schema owner; the app runs inside one `TestClient` (its lifespan
opens the pool of the read-only role) and every request carries the key of the caller under test: a
t1 key, a t2 key, an admin key, keys with the resolve scope. Tenants t1 and t2 use the SAME factory,
machine and sensor ids, so only the tenant filter keeps them apart.

GET /v1/agg, hand-computed (tenant t1, f1/m1, metric temp, stored window 3600, 2025-08-20):

    hour   sensor  readings     n  sum  mean  Σx²  stddev
    00:00  s1      2, 6         2    8   4     40   √8
    01:00  s1      1, 2, 3, 4   4   10   2.5   30   √(5/3)
    01:00  s2      10, 20       2   30  15    500   √50
    05:00  s1      4, 3         2    7   3.5   25   √0.5
    05:00  s2      7            1    7   7     49   null
    23:00  s1      5            1    5   5     25   null
    plus s1 at 2025-08-19 23:00 (100) and at 2025-08-21 00:00 (9)

    day 2025-08-20  s1: n 9, sum 30, avg 30/9, min 1, max 6, first 2 (00:00), last 5 (23:00),
                        stddev √((120 - 30²/9) / 8) = √2.5
                    s2: n 3, sum 37, avg 37/3, min 7, max 20, first 10, last 7,
                        stddev √((549 - 37²/3) / 2) = √(139/3)
    7200 s at 00:00 s1: hours 00 + 01: n 6, sum 18, avg 3, min 1, max 6, first 2, last 4,
                        stddev √((70 - 18²/6) / 5) = √3.2
                    s2: hour 01: n 2, sum 30, avg 15, stddev √((500 - 30²/2) / 1) = √50
    7200 s at 04:00 s1: hour 05 (stddev √((25 - 7²/2) / 1) = √0.5); s2: hour 05 (stddev null)
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.types.json import Jsonb

from analytics_platform import cli
from analytics_platform.api.app import create_app
from analytics_platform.api.keys import create_key, revoke_key
from analytics_platform.devstack.stack import with_credentials
from analytics_platform.migrations import apply_migrations
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.stack import DatabaseHandle, role_password

DAY = datetime(2025, 8, 20, tzinfo=UTC)
HOUR = timedelta(hours=1)
NO_NUL = r"^[^\x00]+$"
NOTE_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
BAD_CURSOR = "cursor is not one this API returned"
KNOWN_METRICS = (
    "co2, count_good, count_total, current, energy, flow, humidity, level, outdoor_pressure, outdoor_temp, ph, "
    "power, pressure, speed, temp, vibration, voltage"
)
KNOWN_KPIS = (
    "availability, avg_demand_kw, avg_outdoor_pressure, avg_outdoor_temp, carbon_kg, data_completeness_pct, "
    "downtime_s, energy_cost, energy_kwh, fault_time_s, good_count, idle_time_s, load_factor, oee, peak_demand_kw, "
    "performance, planned_downtime_s, production_count, production_rate_per_h, quality, run_time_s, sec_kwh_per_unit"
)
MISSING_KEY = {"detail": "missing API key: send it in the X-API-Key header"}
INVALID_KEY = {"detail": "invalid API key"}
REJECTED_KEY = {"detail": "invalid, revoked or expired API key"}
OTHER_TENANT = {"detail": "tenant 't2' not found"}


# ------------------------------------------------------------------------------------------------
# helpers: times, rows, callers
# ------------------------------------------------------------------------------------------------


def at(hour: float, minute: int = 0) -> datetime:
    """2025-08-20 plus hours and minutes (negative hours reach back into 2025-08-19)."""
    return DAY + timedelta(hours=hour, minutes=minute)


def iso(moment: datetime) -> str:
    """A time as the API writes it: UTC with 'Z', microseconds only when there are some."""
    return moment.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"


def jsonable(row: dict) -> dict:
    """A row as its JSON item: times as the API writes them, everything else as it is."""
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in row.items()}


def insert(db: DatabaseHandle, table: str, rows: list[dict], returning: str | None = None) -> list:
    """Insert rows (each its own column set; dicts become jsonb) as the schema owner."""
    out = []
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        for row in rows:
            names = sql.SQL(", ").join(sql.Identifier(c) for c in row)
            marks = sql.SQL(", ").join(sql.Placeholder(c) for c in row)
            statement = sql.SQL("INSERT INTO analytics.{} ({}) VALUES ({})").format(sql.Identifier(table), names, marks)
            if returning:
                statement += sql.SQL(" RETURNING {}").format(sql.Identifier(returning))
            params = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in row.items()}
            cursor = conn.execute(statement, params)
            if returning:
                out.append(cursor.fetchone()[0])
    return out


def make_key(db: DatabaseHandle, tenant: str | None, name: str = "tests", **kwargs: Any) -> tuple[str, str]:
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        return create_key(conn, name, tenant, **kwargs)


@dataclass(frozen=True)
class Caller:
    """One API key talking to the app under test."""

    client: TestClient
    key: str
    key_id: str = ""

    def get(self, path: str, *, accept: str | None = None, **params: Any) -> httpx.Response:
        headers = {"X-API-Key": self.key, **({"Accept": accept} if accept else {})}
        return self.client.get(path, params={k: v for k, v in params.items() if v is not None}, headers=headers)

    def csv(self, path: str, **params: Any) -> httpx.Response:
        return self.get(path, accept="text/csv", **params)

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.client.post(path, json=body, headers={"X-API-Key": self.key})


@dataclass(frozen=True)
class Api:
    client: TestClient
    t1: Caller  # read, tenant t1
    t2: Caller  # read, tenant t2
    admin: Caller  # read, every tenant
    resolver: Caller  # read + resolve, tenant t1, named "ops-bot"
    admin_resolver: Caller  # read + resolve, every tenant


@contextmanager
def running(settings: PlatformSettings, database: DatabaseHandle) -> Iterator[Api]:
    """The app for `settings` with one key per kind of caller. Server errors come back as 500s."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:

        def caller(tenant: str | None, name: str, scopes: tuple[str, ...] = ("read",)) -> Caller:
            key_id, key = make_key(database, tenant, name, scopes=scopes)
            return Caller(client, key, key_id)

        yield Api(
            client=client,
            t1=caller("t1", "t1-reader"),
            t2=caller("t2", "t2-reader"),
            admin=caller(None, "admin-reader"),
            resolver=caller("t1", "ops-bot", ("read", "resolve")),
            admin_resolver=caller(None, "admin-bot", ("read", "resolve")),
        )


@pytest.fixture
def api(settings: PlatformSettings, database: DatabaseHandle) -> Iterator[Api]:
    with running(settings, database) as result:
        yield result


@pytest.fixture(scope="module")
def empty_api(pg_admin_url: str, login_roles: dict[str, str]) -> Iterator[Api]:
    """The app over one empty, migrated database shared by this module's tests that only check how a
    request is refused or that an empty answer is an answer (they write nothing)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        head, _, tail = pg_admin_url.rpartition("/")
        admin = f"{head}/{name}" + (f"?{tail.split('?', 1)[1]}" if "?" in tail else "")
        apply_migrations(admin, timescale=os.environ.get("ANALYTICS_TIMESCALE", "auto"))
        password = role_password(pg_admin_url)
        pipeline, reader, writer = (
            with_credentials(admin, login_roles[r], password) for r in ("pipeline", "api", "writer")
        )
        handle = DatabaseHandle(name, admin, pipeline, reader, writer)
        settings = PlatformSettings(database_url=pipeline, api_database_url=reader, api_write_database_url=writer)
        with running(settings, handle) as api:
            yield api
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def assert_422(response: httpx.Response, loc: list, msg: str) -> dict:
    """Exactly one error, at `loc`, saying `msg`."""
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == loc
    assert error["msg"] == msg
    return error


def pages(caller: Caller, path: str, limit: int, **params: Any) -> tuple[list[dict], list[int]]:
    """Every item of a listing, following next_cursor from the first page; and each page's size."""
    items: list[dict] = []
    sizes: list[int] = []
    cursor = None
    for _ in range(100):
        body = ok(caller.get(path, limit=limit, cursor=cursor, **params))
        assert body["count"] == len(body["items"])
        items += body["items"]
        sizes.append(body["count"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items, sizes
    raise AssertionError("paging did not end")


def split(total: int, limit: int) -> list[int]:
    """Page sizes of `total` items at `limit` per page (a lone empty page when there is nothing)."""
    return [min(limit, total - start) for start in range(0, total, limit)] or [0]


def csv_cell(value: Any) -> str:
    """What a JSON value (floats still as their JSON digits) must read as in CSV."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return value  # strings, times, and floats as their JSON text


def assert_csv_page_equals_json(csv_response: httpx.Response, json_response: httpx.Response) -> list[list[str]]:
    """The CSV page carries the JSON page: same header, same cells, same next cursor."""
    assert csv_response.status_code == 200, csv_response.text
    assert csv_response.headers["content-type"] == "text/csv; charset=utf-8"
    page = json.loads(json_response.text, parse_float=str)  # floats keep the digits the API wrote
    header, *rows = list(csv.reader(io.StringIO(csv_response.text)))
    assert rows, "compare pages that hold rows"
    assert header == list(page["items"][0])
    assert len(rows) == len(page["items"])
    for row, item in zip(rows, page["items"], strict=True):
        for name, cell in zip(header, row, strict=True):
            value = item[name]
            if isinstance(value, dict | list):
                assert json.loads(cell, parse_float=str) == value, name
            else:
                assert cell == csv_cell(value), name
    assert csv_response.headers.get("X-Next-Cursor") == page["next_cursor"]
    return rows


def assert_csv_equals_json(caller: Caller, path: str, limit: int, **params: Any) -> None:
    """Page by page (following the CSV's Link header), CSV equals JSON."""
    cursor = None
    seen = 0
    for _ in range(100):
        as_json = caller.get(path, limit=limit, cursor=cursor, **params)
        as_csv = caller.csv(path, limit=limit, cursor=cursor, **params)
        seen += len(assert_csv_page_equals_json(as_csv, as_json))
        cursor = as_json.json()["next_cursor"]
        if cursor is None:
            assert "Link" not in as_csv.headers
            assert seen == ok(caller.get(path, **params))["count"]
            return
        link = as_csv.headers["Link"]
        assert link.startswith("<http://testserver" + path + "?") and link.endswith('>; rel="next"')
        assert httpx.URL(link[1 : -len('>; rel="next"')]).params["cursor"] == cursor
    raise AssertionError("paging did not end")


def daily_view(database: DatabaseHandle) -> bool:
    """Whether analytics_agg_daily exists: whole days are then served from it, not rolled up per request."""
    return database.scalar("SELECT to_regclass('analytics.analytics_agg_daily') IS NOT NULL")


# ------------------------------------------------------------------------------------------------
# data: window aggregates
# ------------------------------------------------------------------------------------------------

# (hour, sensor, n, sum, avg, min, max, stddev, first, last, p50, p95) of the stored 3600 s window, tenant t1
T1_HOURS = [
    (-1, "s1", 1, 100.0, 100.0, 100.0, 100.0, None, 100.0, 100.0, 100.0, 100.0),
    (0, "s1", 2, 8.0, 4.0, 2.0, 6.0, math.sqrt(8), 2.0, 6.0, 4.0, 5.8),
    (1, "s1", 4, 10.0, 2.5, 1.0, 4.0, math.sqrt(5 / 3), 1.0, 4.0, 2.5, 3.85),
    (1, "s2", 2, 30.0, 15.0, 10.0, 20.0, math.sqrt(50), 10.0, 20.0, 15.0, 19.5),
    (5, "s1", 2, 7.0, 3.5, 3.0, 4.0, math.sqrt(0.5), 4.0, 3.0, 3.5, 3.95),
    (5, "s2", 1, 7.0, 7.0, 7.0, 7.0, None, 7.0, 7.0, 7.0, 7.0),
    (23, "s1", 1, 5.0, 5.0, 5.0, 5.0, None, 5.0, 5.0, 5.0, 5.0),
    (24, "s1", 1, 9.0, 9.0, 9.0, 9.0, None, 9.0, 9.0, 9.0, 9.0),
]


def agg_row(hour: float, sensor: str, *values: Any, window_s: int = 3600, **where: str) -> dict:
    n, total, avg, lo, hi, stddev, first, last, p50, p95 = values
    return {
        "bucket_start": at(hour),
        "bucket_end": at(hour) + timedelta(seconds=window_s),
        "window_s": window_s,
        "tenant_id": where.get("tenant", "t1"),
        "factory_id": where.get("factory", "f1"),
        "machine_id": where.get("machine", "m1"),
        "sensor_id": sensor,
        "metric": where.get("metric", "temp"),
        "count_n": n,
        "sum_v": total,
        "avg_v": avg,
        "min_v": lo,
        "max_v": hi,
        "stddev_v": stddev,
        "first_v": first,
        "last_v": last,
        "p50_v": p50,
        "p95_v": p95,
    }


def one_value(hour: float, sensor: str, value: float, **where: Any) -> dict:
    """A bucket holding a single reading."""
    return agg_row(hour, sensor, 1, value, value, value, value, None, value, value, value, value, **where)


def bucket(start: datetime, window_s: int, sensor: str, *values: Any, tenant: str = "t1") -> dict:
    """The JSON item of a bucket: count, sum, avg, min, max, stddev, first, last[, p50, p95]."""
    n, total, avg, lo, hi, stddev, first, last, *percentiles = values
    p50, p95 = percentiles or (None, None)
    return {
        "bucket_start": iso(start),
        "bucket_end": iso(start + timedelta(seconds=window_s)),
        "window_s": window_s,
        "tenant_id": tenant,
        "factory_id": "f1",
        "machine_id": "m1",
        "sensor_id": sensor,
        "metric": "temp",
        "count": n,
        "sum": total,
        "avg": avg,
        "min": lo,
        "max": hi,
        "stddev": stddev,
        "first": first,
        "last": last,
        "p50": p50,
        "p95": p95,
    }


def stored(hour: float, sensor: str) -> dict:
    (row,) = [r for r in T1_HOURS if r[:2] == (hour, sensor)]
    return bucket(at(hour), 3600, sensor, *row[2:])


STORED_0_TO_6 = [stored(0, "s1"), stored(1, "s1"), stored(1, "s2"), stored(5, "s1"), stored(5, "s2")]
DAY_S1 = bucket(at(0), 86400, "s1", 9, 30.0, 30 / 9, 1.0, 6.0, pytest.approx(math.sqrt(2.5), rel=1e-12), 2.0, 5.0)
DAY_S2 = bucket(at(0), 86400, "s2", 3, 37.0, 37 / 3, 7.0, 20.0, pytest.approx(math.sqrt(139 / 3), rel=1e-12), 10.0, 7.0)
DAY_BEFORE_S1 = bucket(at(-24), 86400, "s1", 1, 100.0, 100.0, 100.0, 100.0, None, 100.0, 100.0)
DAY_AFTER_S1 = bucket(at(24), 86400, "s1", 1, 9.0, 9.0, 9.0, 9.0, None, 9.0, 9.0)
TWO_HOURS = [
    bucket(at(0), 7200, "s1", 6, 18.0, 3.0, 1.0, 6.0, pytest.approx(math.sqrt(3.2), rel=1e-12), 2.0, 4.0),
    bucket(at(0), 7200, "s2", 2, 30.0, 15.0, 10.0, 20.0, pytest.approx(math.sqrt(50), rel=1e-12), 10.0, 20.0),
    bucket(at(4), 7200, "s1", 2, 7.0, 3.5, 3.0, 4.0, pytest.approx(math.sqrt(0.5), rel=1e-12), 4.0, 3.0),
    bucket(at(4), 7200, "s2", 1, 7.0, 7.0, 7.0, 7.0, None, 7.0, 7.0),
]
T2_DAY = bucket(at(0), 86400, "s1", 2, 147.0, 73.5, 70.0, 77.0, pytest.approx(math.sqrt(24.5), rel=1e-12), 70.0, 77.0)
T2_DAY["tenant_id"] = "t2"
AGG_QUERY = {"factory_id": "f1", "machine_id": "m1", "metric": "temp"}


@pytest.fixture
def agg_data(database: DatabaseHandle) -> None:
    rows = [agg_row(*r) for r in T1_HOURS]
    rows += [
        # another window, machine, metric, factory and tenant at the same hours and sensors
        agg_row(1, "s1", 1, 1000.0, 1000.0, 1000.0, 1000.0, None, 1000.0, 1000.0, 1000.0, 1000.0, window_s=60),
        agg_row(1, "s1", 1, 1001.0, 1001.0, 1001.0, 1001.0, None, 1001.0, 1001.0, 1001.0, 1001.0, window_s=300),
        one_value(1, "s1", 500.0, machine="m2"),
        one_value(1, "s1", 60.0, metric="humidity"),
        one_value(1, "s1", 400.0, factory="f2"),
        one_value(0, "s1", 70.0, tenant="t2"),
        one_value(1, "s1", 77.0, tenant="t2"),
    ]
    insert(database, "analytics_agg", rows)


# ------------------------------------------------------------------------------------------------
# data: event rollups, KPIs, baseline deviations
# ------------------------------------------------------------------------------------------------


def event(hour: float, machine: str, event_type: str, subject: str, n: int, *rates: Any, **more: Any) -> dict:
    """An event rollup as served: pass_count, fail_count, pass_rate, fail_rate, uptime_pct, details."""
    passed, failed, pass_rate, fail_rate, uptime, details = (*rates, None, None, None, None, None, None)[:6]
    window_s = more.get("window_s", 3600)
    return {
        "bucket_start": at(hour),
        "bucket_end": at(hour) + timedelta(seconds=window_s),
        "window_s": window_s,
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": more.get("factory", "f1"),
        "machine_id": machine,
        "event_type": event_type,
        "subject": subject,
        "count": n,
        "pass_count": passed,
        "fail_count": failed,
        "pass_rate": pass_rate,
        "fail_rate": fail_rate,
        "uptime_pct": uptime,
        "details": details,
    }


T1_EVENTS = [
    event(3, "m1", "device_health", "", 12, None, None, None, None, 87.5, {"offline_s": 450.0}),
    event(3, "m1", "lab_result", "ph", 4, 3, 1, 0.75, 0.25),
    event(3, "m1", "lab_result", "viscosity", 2, 2, 0, 1.0, 0.0),
    event(3, "m2", "device_health", "", 6, None, None, None, None, 100.0),
    event(4, "m1", "device_health", "", 10, None, None, None, None, 50.0),
    event(4, "m1", "sweep_batch", "thickness", 8, 6, 2, 0.75, 0.25, None, {"batches": ["b1", "b2"], "worst": 2.75}),
]
T2_EVENTS = [event(3, "m1", "device_health", "", 99, None, None, None, None, 12.5, tenant="t2")]
EVENT_QUERY = {"factory_id": "f1", "window_s": 3600, "start": iso(at(3)), "end": iso(at(5))}
EVENT_COLUMNS = {"count": "count_n", "pass_count": "pass_n", "fail_count": "fail_n"}


@pytest.fixture
def event_data(database: DatabaseHandle) -> None:
    noise = [
        event(0, "m1", "device_health", "", 22, None, None, None, None, 68.75, window_s=86400),
        event(3, "m1", "device_health", "", 1, None, None, None, None, 0.0, window_s=300),
        event(3, "m1", "device_health", "", 7, None, None, None, None, 25.0, factory="f2"),
        event(5, "m1", "device_health", "", 3, None, None, None, None, 75.0),  # at the end: excluded
        event(2, "m1", "device_health", "", 3, None, None, None, None, 75.0),  # before the start
    ]
    rows = [{EVENT_COLUMNS.get(k, k): v for k, v in r.items()} for r in T1_EVENTS + T2_EVENTS + noise]
    insert(database, "analytics_event_rollup", rows)


def kpi(hour: float, machine: str, name: str, value: float | None, unit: str | None, **more: Any) -> dict:
    period = more.get("period", "hour")
    length = {"hour": HOUR, "shift": 8 * HOUR, "day": timedelta(days=1)}[period]
    return {
        "period_start": at(hour),
        "period_end": at(hour) + length,
        "period": period,
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": more.get("factory", "f1"),
        "machine_id": machine,
        "kpi": name,
        "value": value,
        "unit": unit,
        "null_reason": more.get("null_reason"),
        "details": more.get("details"),
    }


T1_KPIS = [
    kpi(3, "m1", "availability", 0.875, "ratio", details={"planned_busy_s": 3600.0, "run_time_s": 3150.0}),
    kpi(3, "m1", "oee", 0.5, "ratio", details={"availability": 0.875, "performance": 0.625, "quality": 0.9}),
    kpi(
        3,
        "m1",
        "sec_kwh_per_unit",
        None,
        "kWh/unit",
        null_reason="no units produced in the period",
        details={"energy_kwh": 12.5, "units": 0.0},
    ),
    kpi(3, "m2", "oee", 0.25, "ratio"),
    kpi(4, "m1", "availability", 1.0, "ratio"),
    kpi(4, "m1", "avg_outdoor_temp", 31.5, ""),
    kpi(4, "m1", "oee", 0.75, "ratio"),
]
T2_KPIS = [kpi(3, "m1", "oee", 0.125, "ratio", tenant="t2")]
KPI_QUERY = {"factory_id": "f1", "period": "hour", "start": iso(at(3)), "end": iso(at(5))}


@pytest.fixture
def kpi_data(database: DatabaseHandle) -> None:
    noise = [
        kpi(0, "m1", "oee", 0.6, "ratio", period="day"),
        kpi(-1, "m1", "oee", 0.55, "ratio", period="shift", details={"shift": "C"}),
        kpi(3, "m1", "oee", 0.9, "ratio", factory="f2"),
        kpi(5, "m1", "oee", 0.1, "ratio"),  # at the end: excluded
    ]
    insert(database, "analytics_kpi", T1_KPIS + T2_KPIS + noise)


def deviation(hour: float, machine: str, version: int, *values: Any, **more: Any) -> dict:
    actual, predicted, dev, pct, z, severity = values
    period = more.get("period", "hour")
    return {
        "period_start": at(hour),
        "period_end": at(hour) + (timedelta(days=1) if period == "day" else HOUR),
        "period": period,
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": more.get("factory", "f1"),
        "machine_id": machine,
        "baseline_version": version,
        "actual_kwh": actual,
        "predicted_kwh": predicted,
        "deviation_kwh": dev,
        "deviation_pct": pct,
        "z": z,
        "severity": severity,
    }


T1_DEVIATIONS = [
    deviation(3, "m1", 2, 50.0, 40.0, 10.0, 25.0, 2.5, "warning"),
    deviation(3, "m2", 1, 20.0, 20.0, 0.0, 0.0, 0.0, "normal"),
    deviation(4, "m1", 2, 40.5, 40.5, 0.0, 0.0, 0.0, "normal"),
    deviation(4, "m2", 1, 1.0, -1.0, 2.0, None, 0.5, "normal"),
    deviation(5, "m1", 2, 80.0, 40.0, 40.0, 100.0, 10.0, "critical"),
]
T2_DEVIATIONS = [deviation(3, "m1", 1, 99.0, 90.0, 9.0, 10.0, 1.5, "normal", tenant="t2")]
DEVIATION_QUERY = {"factory_id": "f1", "start": iso(at(3)), "end": iso(at(6))}


@pytest.fixture
def deviation_data(database: DatabaseHandle) -> None:
    noise = [
        deviation(0, "m1", 2, 500.0, 480.0, 20.0, 4.1666, 0.5, "normal", period="day"),
        deviation(3, "m1", 2, 7.0, 7.0, 0.0, 0.0, 0.0, "normal", factory="f2"),
        deviation(6, "m1", 2, 7.0, 7.0, 0.0, 0.0, 0.0, "normal"),  # at the end: excluded
    ]
    insert(database, "analytics_baseline_deviation", T1_DEVIATIONS + T2_DEVIATIONS + noise)


# ------------------------------------------------------------------------------------------------
# data: anomalies, baselines, spec limits, readings
# ------------------------------------------------------------------------------------------------


def anomaly(time: datetime, machine: str, severity: int, label: str, **more: Any) -> dict:
    """An analytics_anomaly row (every served column but the id), in the API's column order."""
    return {
        "time": time,
        "window_start": more.get("window_start"),
        "window_end": more.get("window_end"),
        "sample_s": more.get("sample_s"),
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": more.get("factory", "f1"),
        "machine_id": machine,
        "sensor_id": more.get("sensor"),
        "metric": more.get("metric"),
        "anomaly_type": more.get("anomaly_type", "temperature"),
        "method": more.get("method", "zscore"),
        "score": more.get("score"),
        "severity": severity,
        "severity_label": label,
        "confidence": more.get("confidence"),
        "observed": more.get("observed"),
        "expected": more.get("expected"),
        "model_version": more.get("model_version"),
        "details": more.get("details"),
        "status": more.get("status", "open"),
        "resolved_at": more.get("resolved_at"),
        "resolved_by": more.get("resolved_by"),
        "resolution_note": more.get("resolution_note"),
        "created_at": more.get("created_at", time + timedelta(minutes=1)),
    }


ANOMALY_ROWS = {
    "a1": anomaly(
        at(3, 10),
        "m1",
        4,
        "critical",
        sensor="s1",
        metric="temp",
        score=4.5,
        confidence=0.9,
        observed=95.5,
        expected=70.0,
        details={"z": 4.5, "window": "5m"},
        window_start=at(3, 5),
        window_end=at(3, 10),
        sample_s=10.0,
    ),
    "a2": anomaly(
        at(3, 20),
        "m2",
        2,
        "warning",
        anomaly_type="production",
        method="stoppage",
        observed=0.0,
        expected=120.0,
        details={"minutes": 12},
        window_start=at(3, 8),
        window_end=at(3, 20),
    ),
    "a3": anomaly(
        at(3, 20),
        "m1",
        3,
        "warning",
        sensor="s2",
        metric="power",
        anomaly_type="power",
        method="isolation_forest",
        score=0.71,
        confidence=0.625,
        model_version=2,
        status="resolved",
        resolved_at=at(4),
        resolved_by="ops",
        resolution_note="filter replaced",
    ),
    "a4": anomaly(at(2), "m1", 1, "info", factory="f2", sensor="s1", metric="temp"),
    "a5": anomaly(at(-240), "m1", 5, "critical", sensor="s1", metric="temp"),  # ten days earlier
    "b1": anomaly(at(3, 10), "m1", 5, "critical", tenant="t2", sensor="s1", metric="temp", observed=99.5),
}
ANOMALY_RANGE = {"start": iso(at(0)), "end": iso(at(24))}


@pytest.fixture
def anomalies(database: DatabaseHandle) -> dict[str, dict]:
    """name -> the JSON the API serves for it (ids from the database, in insertion order)."""
    ids = insert(database, "analytics_anomaly", list(ANOMALY_ROWS.values()), returning="anomaly_id")
    return {name: {"anomaly_id": i, **jsonable(row)} for (name, row), i in zip(ANOMALY_ROWS.items(), ids, strict=True)}


DRIVERS_V2 = ["production_count", "avg_outdoor_temp", "avg_outdoor_pressure"]


def baseline(version: int, active: bool, **more: Any) -> dict:
    drivers = more.get("drivers", DRIVERS_V2)
    coefficients = more.get(
        "coefficients",
        {"intercept": 10.5, "production_count": 0.25, "avg_outdoor_temp": 2.0, "avg_outdoor_pressure": -0.0625},
    )
    return {
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": more.get("factory", "f1"),
        "machine_id": more.get("machine", "m1"),
        "version": version,
        "target": "energy_kwh",
        "drivers": drivers,
        "coefficients": coefficients,
        "p_values": {k: (None if k == "intercept" else 0.001) for k in coefficients},
        "std_errors": dict.fromkeys(coefficients, 0.5),
        "r2": more.get("r2", 0.9),
        "adj_r2": 0.875,
        "rmse": 2.5,
        "mae": 1.75,
        "n": 1200,
        "excluded": 36,
        "trained_from": at(-24 * 90),
        "trained_to": at(0),
        "accepted": more.get("accepted", True),
        "warning": more.get("warning"),
        "active": active,
        "created_at": at(0, 30) + timedelta(hours=version),
        "deactivated_at": more.get("deactivated_at"),
    }


BASELINE_ROWS = {
    "v1": baseline(
        1,
        False,
        drivers=["production_count", "avg_outdoor_temp"],
        coefficients={"intercept": 2.0, "production_count": 0.5, "avg_outdoor_temp": 0.25},
        deactivated_at=at(2, 30),
    ),
    "v2": baseline(2, True),
    "f2": baseline(1, True, factory="f2", accepted=False, r2=0.61, warning="R² 0.61 is below 0.80"),
    "t2": baseline(
        1,
        True,
        tenant="t2",
        drivers=["production_count"],
        coefficients={"intercept": 1.5, "production_count": 0.125},
    ),
}


@pytest.fixture
def baselines(database: DatabaseHandle) -> dict[str, dict]:
    ids = insert(database, "analytics_baseline", list(BASELINE_ROWS.values()), returning="baseline_id")
    return {
        name: {"baseline_id": i, **jsonable(row)} for (name, row), i in zip(BASELINE_ROWS.items(), ids, strict=True)
    }


def spec(factory: str, scope: str, name: str, limits: tuple, unit: str, valid_from: datetime | None, **more) -> dict:
    """A spec limit as served; valid_from None = since always (stored as '-infinity')."""
    lower, upper, target = limits
    return {
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": factory,
        "scope": scope,
        "name": name,
        "lower_limit": lower,
        "upper_limit": upper,
        "target": target,
        "unit": unit,
        "valid_from": valid_from,
        "updated_at": more.get("updated_at", at(-24 * 19)),
    }


# in the listing's order: tenant, factory ('*' first), scope, name, valid_from (since-always first)
T1_SPECS = [
    spec("*", "analyte", "ph", (6.5, 8.5, 7.0), "pH", None),
    spec("*", "analyte", "ph", (6.75, 8.25, 7.5), "pH", at(-24 * 5)),
    spec("f1", "analyte", "ph", (6.0, 9.0, None), "pH", None),
    spec("f1", "metric", "thickness", (None, 2.5, 2.0), "mm", at(-24 * 19), updated_at=at(-24 * 18)),
    spec("f2", "analyte", "ph", (5.0, 9.5, 7.25), "pH", None),
]
T2_SPECS = [spec("*", "analyte", "ph", (1.0, 2.0, 1.5), "pH", None, tenant="t2")]


@pytest.fixture
def spec_data(database: DatabaseHandle) -> None:
    rows = [{k: v for k, v in r.items() if not (k == "valid_from" and v is None)} for r in T2_SPECS + T1_SPECS]
    insert(database, "analytics_spec_limits", rows)


def reading(moment: datetime, sensor: str, value: float, offset: int, **more: Any) -> dict:
    tenant, factory, machine = more.get("tenant", "t1"), more.get("factory", "f1"), more.get("machine", "m1")
    metric = more.get("metric", "temp")
    return {
        "time": moment,
        "tenant_id": tenant,
        "factory_id": factory,
        "machine_id": machine,
        "sensor_id": sensor,
        "metric": metric,
        "value": value,
        "unit": more.get("unit", "degC"),
        "payload": more.get("payload"),
        "event_id": more.get("event_id"),
        "schema_version": 1,
        "dedup_key": f"{tenant}|{factory}|{machine}|{sensor}|{metric}|{offset}",
        "topic": "sensors.device.readings",
        "kafka_partition": 0,
        "kafka_offset": offset,
    }


T1_READINGS = [
    reading(at(3), "s1", 20.5, 1, payload={"raw": 2050, "quality": "good", "tags": ["a", 1]}, event_id="e-1"),
    reading(at(3), "s2", 21.25, 2, unit=None),
    reading(at(3, 15) + timedelta(microseconds=250000), "s1", 21.0, 3),
    reading(at(3, 30), "s1", 22.0, 4, event_id="e-4"),
    reading(at(3, 30), "s2", 0.1, 5),
]
T2_READINGS = [reading(at(3), "s1", 91.0, 6, tenant="t2")]
READING_QUERY = {"factory_id": "f1", "machine_id": "m1", "metric": "temp", "start": iso(at(3)), "end": iso(at(4))}
READING_ITEM_COLUMNS = (
    "time",
    "tenant_id",
    "factory_id",
    "machine_id",
    "sensor_id",
    "metric",
    "value",
    "unit",
    "payload",
    "event_id",
)


def reading_item(row: dict) -> dict:
    """The JSON item of a raw reading: its served columns (not the Kafka coordinates or dedup key)."""
    return jsonable({k: row[k] for k in READING_ITEM_COLUMNS})


@pytest.fixture
def reading_data(database: DatabaseHandle) -> None:
    noise = [
        reading(at(3), "s1", 92.0, 7, factory="f2"),
        reading(at(3), "s1", 93.0, 8, machine="m2"),
        reading(at(3), "s1", 94.0, 9, metric="humidity", unit="%"),
        reading(at(4), "s1", 23.0, 10),  # at the end: excluded
    ]
    rows = [{**r, "payload": Jsonb(r["payload"]) if r["payload"] is not None else None} for r in noise]
    rows += [{**r, "payload": Jsonb(r["payload"]) if r["payload"] is not None else None} for r in T1_READINGS]
    rows += [{**r, "payload": None} for r in T2_READINGS]
    insert(database, "raw_sensor_readings", rows)


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
# GET /v1/event-rollup
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("event_data")
def test_event_rollup_exact(api: Api) -> None:
    body = ok(api.t1.get("/v1/event-rollup", **EVENT_QUERY))
    assert body == {"items": [jsonable(e) for e in T1_EVENTS], "count": 6, "next_cursor": None}


@pytest.mark.usefixtures("event_data")
@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"machine_id": "m2"}, [3]),
        ({"event_type": "lab_result"}, [1, 2]),
        ({"event_type": "lab_result", "subject": "ph"}, [1]),
        ({"subject": ""}, [0, 3, 4]),  # the rollups without a subject
        ({"machine_id": "m1", "event_type": "sweep_batch"}, [5]),
        ({"machine_id": "m9"}, []),
    ],
)
def test_event_rollup_filters(api: Api, filters: dict, expected: list[int]) -> None:
    body = ok(api.t1.get("/v1/event-rollup", **EVENT_QUERY, **filters))
    assert body["items"] == [jsonable(T1_EVENTS[i]) for i in expected]


@pytest.mark.usefixtures("event_data")
def test_event_rollup_other_windows(api: Api) -> None:
    day = ok(api.t1.get("/v1/event-rollup", **{**EVENT_QUERY, "window_s": 86400, "start": iso(at(0))}))
    assert day["items"] == [
        jsonable(event(0, "m1", "device_health", "", 22, None, None, None, None, 68.75, window_s=86400))
    ]
    five = ok(api.t1.get("/v1/event-rollup", **{**EVENT_QUERY, "window_s": 300}))
    assert five["items"] == [
        jsonable(event(3, "m1", "device_health", "", 1, None, None, None, None, 0.0, window_s=300))
    ]


@pytest.mark.usefixtures("event_data")
@pytest.mark.parametrize("limit", [1, 2, 3, 4])
def test_event_rollup_pages_neither_skip_nor_repeat(api: Api, limit: int) -> None:
    items, sizes = pages(api.t1, "/v1/event-rollup", limit, **EVENT_QUERY)
    assert items == [jsonable(e) for e in T1_EVENTS]
    assert sizes == split(6, limit)


@pytest.mark.usefixtures("event_data")
def test_event_rollup_csv_equals_json(api: Api) -> None:
    assert_csv_equals_json(api.t1, "/v1/event-rollup", 4, **EVENT_QUERY)


# ------------------------------------------------------------------------------------------------
# GET /v1/kpi
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("kpi_data")
def test_kpi_all_exact(api: Api) -> None:
    assert ok(api.t1.get("/v1/kpi", **KPI_QUERY)) == {
        "items": [jsonable(k) for k in T1_KPIS],
        "count": 7,
        "next_cursor": None,
    }


@pytest.mark.usefixtures("kpi_data")
def test_kpi_one_exact(api: Api) -> None:
    assert ok(api.t1.get("/v1/kpi", **KPI_QUERY, kpi="oee")) == {
        "items": [jsonable(T1_KPIS[i]) for i in (1, 3, 6)],
        "count": 3,
        "next_cursor": None,
    }
    assert ok(api.t1.get("/v1/kpi", **KPI_QUERY, kpi="oee", machine_id="m1"))["items"] == [
        jsonable(T1_KPIS[1]),
        jsonable(T1_KPIS[6]),
    ]
    # a known KPI without rows is an empty page, not an error
    assert ok(api.t1.get("/v1/kpi", **KPI_QUERY, kpi="carbon_kg")) == {"items": [], "count": 0, "next_cursor": None}


@pytest.mark.usefixtures("kpi_data")
def test_kpi_periods_day_and_shift(api: Api) -> None:
    query = {**KPI_QUERY, "start": iso(at(-1)), "end": iso(at(24))}
    assert ok(api.t1.get("/v1/kpi", **{**query, "period": "day"}))["items"] == [
        jsonable(kpi(0, "m1", "oee", 0.6, "ratio", period="day"))
    ]
    assert ok(api.t1.get("/v1/kpi", **{**query, "period": "shift"}))["items"] == [
        jsonable(kpi(-1, "m1", "oee", 0.55, "ratio", period="shift", details={"shift": "C"}))
    ]


@pytest.mark.usefixtures("kpi_data")
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_kpi_pages_neither_skip_nor_repeat(api: Api, limit: int) -> None:
    items, sizes = pages(api.t1, "/v1/kpi", limit, **KPI_QUERY)
    assert items == [jsonable(k) for k in T1_KPIS]
    assert sizes == split(7, limit)


@pytest.mark.usefixtures("kpi_data")
def test_kpi_csv_equals_json(api: Api) -> None:
    assert_csv_equals_json(api.t1, "/v1/kpi", 3, **KPI_QUERY)


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


def db_now(database: DatabaseHandle) -> datetime:
    return database.scalar("SELECT clock_timestamp()")


def resolution(database: DatabaseHandle, anomaly_id: int) -> tuple:
    return database.query(
        "SELECT status, resolved_at, resolved_by, resolution_note FROM analytics.analytics_anomaly "
        "WHERE anomaly_id = %s",
        (anomaly_id,),
    )[0]


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


# ------------------------------------------------------------------------------------------------
# GET /v1/baselines, GET /v1/baselines/{id}, POST /v1/baseline/predict
# ------------------------------------------------------------------------------------------------


def test_baselines_active_only_by_default(api: Api, baselines: dict[str, dict]) -> None:
    assert ok(api.t1.get("/v1/baselines")) == {
        "items": [baselines["v2"], baselines["f2"]],
        "count": 2,
        "next_cursor": None,
    }
    assert ok(api.t1.get("/v1/baselines", include_inactive="true"))["items"] == [
        baselines["v1"],
        baselines["v2"],
        baselines["f2"],
    ]
    assert ok(api.t1.get("/v1/baselines", factory_id="f1", machine_id="m1", include_inactive="true"))["items"] == [
        baselines["v1"],
        baselines["v2"],
    ]
    assert ok(api.t1.get("/v1/baselines", factory_id="f2"))["items"] == [baselines["f2"]]


def test_baselines_admin_sees_every_tenant(api: Api, baselines: dict[str, dict]) -> None:
    assert ok(api.admin.get("/v1/baselines"))["items"] == [baselines[n] for n in ("v2", "f2", "t2")]
    assert ok(api.admin.get("/v1/baselines", include_inactive="true"))["items"] == list(baselines.values())
    assert ok(api.admin.get("/v1/baselines", tenant_id="t2"))["items"] == [baselines["t2"]]


def test_baseline_by_id(api: Api, baselines: dict[str, dict]) -> None:
    for name in ("v1", "v2", "f2"):  # inactive ones too
        assert ok(api.t1.get(f"/v1/baselines/{baselines[name]['baseline_id']}")) == baselines[name]
    assert ok(api.admin.get(f"/v1/baselines/{baselines['t2']['baseline_id']}")) == baselines["t2"]


def test_baseline_of_another_tenant_or_unknown_is_404(api: Api, baselines: dict[str, dict]) -> None:
    t2, v2 = baselines["t2"]["baseline_id"], baselines["v2"]["baseline_id"]
    for caller, baseline_id in ((api.t1, t2), (api.t2, v2), (api.admin, 999_999)):
        response = caller.get(f"/v1/baselines/{baseline_id}")
        assert response.status_code == 404
        assert response.json() == {"detail": f"baseline {baseline_id} not found"}


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_baselines_pages_neither_skip_nor_repeat(api: Api, baselines: dict[str, dict], limit: int) -> None:
    items, sizes = pages(api.admin, "/v1/baselines", limit, include_inactive="true")
    assert items == list(baselines.values())
    assert sizes == split(4, limit)
    items, sizes = pages(api.t1, "/v1/baselines", limit)
    assert items == [baselines["v2"], baselines["f2"]]
    assert sizes == split(2, limit)


@pytest.mark.usefixtures("baselines")
def test_baselines_answer_json_even_to_a_csv_request(api: Api) -> None:
    response = api.t1.csv("/v1/baselines")
    assert response.headers["content-type"] == "application/json"
    assert response.json()["count"] == 2


PREDICT = {
    "factory_id": "f1",
    "machine_id": "m1",
    "drivers": {"production_count": 120, "avg_outdoor_temp": 31.5, "avg_outdoor_pressure": 1008},
}


def test_predict_from_the_active_baseline(api: Api, baselines: dict[str, dict]) -> None:
    # version 2: 10.5 + 0.25 x 120 + 2.0 x 31.5 - 0.0625 x 1008 = 10.5 + 30 + 63 - 63 = 40.5
    assert ok(api.t1.post("/v1/baseline/predict", PREDICT)) == {
        "baseline_id": baselines["v2"]["baseline_id"],
        "version": 2,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "target": "energy_kwh",
        "unit": "kWh",
        "drivers": {"production_count": 120.0, "avg_outdoor_temp": 31.5, "avg_outdoor_pressure": 1008.0},
        "predicted": 40.5,
    }


def test_predict_for_t2_by_an_admin_key(api: Api, baselines: dict[str, dict]) -> None:
    # t2's baseline: 1.5 + 0.125 x 120 = 16.5
    body = {"tenant_id": "t2", "factory_id": "f1", "machine_id": "m1", "drivers": {"production_count": 120}}
    expected = {
        "baseline_id": baselines["t2"]["baseline_id"],
        "version": 1,
        "tenant_id": "t2",
        "factory_id": "f1",
        "machine_id": "m1",
        "target": "energy_kwh",
        "unit": "kWh",
        "drivers": {"production_count": 120.0},
        "predicted": 16.5,
    }
    assert ok(api.admin.post("/v1/baseline/predict", body)) == expected
    assert ok(api.t2.post("/v1/baseline/predict", {k: v for k, v in body.items() if k != "tenant_id"})) == expected


@pytest.mark.usefixtures("baselines")
def test_predict_422_for_a_missing_driver(api: Api) -> None:
    body = {**PREDICT, "drivers": {"production_count": 120}}
    assert_422(
        api.t1.post("/v1/baseline/predict", body),
        ["body", "drivers"],
        "missing driver value(s): avg_outdoor_temp, avg_outdoor_pressure",
    )


@pytest.mark.usefixtures("baselines")
def test_predict_422_for_an_unknown_driver(api: Api) -> None:
    body = {**PREDICT, "drivers": {**PREDICT["drivers"], "flux": 1.0}}
    response = api.t1.post("/v1/baseline/predict", body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["msg"] == (
        "'flux' is not a driver of this baseline; its drivers: production_count, avg_outdoor_temp, avg_outdoor_pressure"
    )
    assert error["loc"][0] == "body"


@pytest.mark.usefixtures("baselines")
def test_predict_422_for_a_non_finite_driver(api: Api) -> None:
    body = json.dumps({**PREDICT, "drivers": {**PREDICT["drivers"], "production_count": float("nan")}})
    response = api.client.post(
        "/v1/baseline/predict", content=body, headers={"X-API-Key": api.t1.key, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["msg"] == "driver values must be finite numbers"


@pytest.mark.usefixtures("baselines")
def test_predict_404_without_an_active_baseline(api: Api) -> None:
    response = api.t1.post("/v1/baseline/predict", {**PREDICT, "machine_id": "m9"})
    assert response.status_code == 404
    assert response.json() == {"detail": "no active energy baseline for t1/f1/m9: train one first"}
    # t2 has an active model for f1/m1, but a t1 key cannot name t2
    response = api.t1.post("/v1/baseline/predict", {**PREDICT, "tenant_id": "t2"})
    assert response.status_code == 404
    assert response.json() == OTHER_TENANT


def test_predict_404_when_the_only_baseline_is_inactive(api: Api, database: DatabaseHandle) -> None:
    insert(database, "analytics_baseline", [baseline(1, False, machine="m7", deactivated_at=at(1))])
    response = api.t1.post("/v1/baseline/predict", {**PREDICT, "machine_id": "m7"})
    assert response.status_code == 404
    assert response.json() == {"detail": "no active energy baseline for t1/f1/m7: train one first"}


# ------------------------------------------------------------------------------------------------
# GET /v1/baseline-deviation
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("deviation_data")
def test_deviation_exact(api: Api) -> None:
    assert ok(api.t1.get("/v1/baseline-deviation", **DEVIATION_QUERY)) == {
        "items": [jsonable(d) for d in T1_DEVIATIONS],
        "count": 5,
        "next_cursor": None,
    }


@pytest.mark.usefixtures("deviation_data")
@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"severity": "normal"}, [1, 2, 3]),
        ({"severity": "critical"}, [4]),
        ({"machine_id": "m1"}, [0, 2, 4]),
        ({"machine_id": "m2", "severity": "warning"}, []),
        ({"start": iso(at(4)), "end": iso(at(5))}, [2, 3]),
    ],
)
def test_deviation_filters(api: Api, filters: dict, expected: list[int]) -> None:
    body = ok(api.t1.get("/v1/baseline-deviation", **{**DEVIATION_QUERY, **filters}))
    assert body["items"] == [jsonable(T1_DEVIATIONS[i]) for i in expected]


@pytest.mark.usefixtures("deviation_data")
def test_deviation_period_day(api: Api) -> None:
    query = {**DEVIATION_QUERY, "period": "day", "start": iso(at(0)), "end": iso(at(24))}
    assert ok(api.t1.get("/v1/baseline-deviation", **query))["items"] == [
        jsonable(deviation(0, "m1", 2, 500.0, 480.0, 20.0, 4.1666, 0.5, "normal", period="day"))
    ]


@pytest.mark.usefixtures("deviation_data")
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_deviation_pages_neither_skip_nor_repeat(api: Api, limit: int) -> None:
    items, sizes = pages(api.t1, "/v1/baseline-deviation", limit, **DEVIATION_QUERY)
    assert items == [jsonable(d) for d in T1_DEVIATIONS]
    assert sizes == split(5, limit)


@pytest.mark.usefixtures("deviation_data")
def test_deviation_csv_equals_json(api: Api) -> None:
    assert_csv_equals_json(api.t1, "/v1/baseline-deviation", 2, **DEVIATION_QUERY)


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


# ------------------------------------------------------------------------------------------------
# CSV details
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("agg_data")
def test_csv_cells_are_rendered_as_documented(api: Api) -> None:
    response = api.t1.csv("/v1/agg", **AGG_QUERY, window_s=3600, start=iso(at(5)), end=iso(at(6)))
    assert response.text == (
        "bucket_start,bucket_end,window_s,tenant_id,factory_id,machine_id,sensor_id,metric,count,sum,avg,min,max,"
        "stddev,first,last,p50,p95\n"
        f"2025-08-20T05:00:00Z,2025-08-20T06:00:00Z,3600,t1,f1,m1,s1,temp,2,7.0,3.5,3.0,4.0,{math.sqrt(0.5)!r},"
        "4.0,3.0,3.5,3.95\n"
        "2025-08-20T05:00:00Z,2025-08-20T06:00:00Z,3600,t1,f1,m1,s2,temp,1,7.0,7.0,7.0,7.0,,7.0,7.0,7.0,7.0\n"
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
# 422: every parameter rule, with its location and message
# ------------------------------------------------------------------------------------------------

AGG = ("/v1/agg", {**AGG_QUERY, "window_s": 3600, "start": iso(at(0)), "end": iso(at(24))})
KPI = ("/v1/kpi", KPI_QUERY)
EVENTS = ("/v1/event-rollup", EVENT_QUERY)
DEVIATION = ("/v1/baseline-deviation", DEVIATION_QUERY)
ANOMALIES = ("/v1/anomalies", ANOMALY_RANGE)
BASELINES = ("/v1/baselines", {})
SPECS = ("/v1/spec-limits", {})
READINGS = ("/v1/readings", READING_QUERY)
TIME_RANGED = {"agg": AGG, "kpi": KPI, "events": EVENTS, "deviation": DEVIATION, "anomalies": ANOMALIES}
LISTINGS = {**TIME_RANGED, "baselines": BASELINES, "specs": SPECS, "readings": READINGS}
NEEDS_TENANT = {"agg": AGG, "kpi": KPI, "events": EVENTS, "deviation": DEVIATION, "readings": READINGS}
START_AFTER_END = {"start": "2025-08-20T05:00:00Z", "end": "2025-08-20T04:00:00Z"}
# the first error of each case, as (endpoint, overrides, field, message)
CASES = [
    # window_s
    (
        AGG,
        {"window_s": 7000},
        "window_s",
        "window_s must be a stored window (60, 300, 3600) or a multiple of one, e.g. 86400",
    ),
    (
        AGG,
        {"window_s": 90},
        "window_s",
        "window_s must be a stored window (60, 300, 3600) or a multiple of one, e.g. 86400",
    ),
    (AGG, {"window_s": 0}, "window_s", "Input should be greater than or equal to 1"),
    (AGG, {"window_s": 366 * 86400 + 1}, "window_s", "Input should be less than or equal to 31622400"),
    (EVENTS, {"window_s": 7200}, "window_s", "window_s must be a stored rollup window: 60, 300, 3600, 86400"),
    (EVENTS, {"window_s": 120}, "window_s", "window_s must be a stored rollup window: 60, 300, 3600, 86400"),
    (EVENTS, {"window_s": 172800}, "window_s", "Input should be less than or equal to 86400"),
    # range too large
    (
        AGG,
        {"window_s": 60, "start": "2025-08-01T00:00:00Z", "end": "2025-09-04T17:21:00Z"},
        "end",
        "range holds 50001 buckets of 60 s, more than 50000 (API_MAX_BUCKETS); "
        "use a coarser window_s or a shorter range",
    ),
    (
        AGG,
        {"window_s": 86400, "start": "2015-01-01T00:00:00Z", "end": "2025-01-09T00:00:00Z"},
        "end",
        "range is longer than 3660 days; narrow it or page through it",
    ),
    *[
        (
            endpoint,
            {"start": "2024-07-16T00:00:00Z", "end": "2025-08-20T00:00:00.000001Z"},
            "end",
            "range is longer than 400 days; narrow it or page through it",
        )
        for endpoint in (KPI, EVENTS, DEVIATION, ANOMALIES)
    ],
    (
        READINGS,
        {"end": "2025-09-20T03:00:00.000001Z"},
        "end",
        "range is longer than 31 days; narrow it or page through it",
    ),
    # unknown names, bad choices
    (AGG, {"metric": "flux"}, "metric", f"unknown metric 'flux'; known: {KNOWN_METRICS}"),
    (READINGS, {"metric": "Temp"}, "metric", f"unknown metric 'Temp'; known: {KNOWN_METRICS}"),
    (KPI, {"kpi": "mtbf"}, "kpi", f"unknown kpi 'mtbf'; known: {KNOWN_KPIS}"),
    (KPI, {"kpi": "avg_humidity"}, "kpi", f"unknown kpi 'avg_humidity'; known: {KNOWN_KPIS}"),
    (KPI, {"period": "week"}, "period", "Input should be 'hour', 'shift' or 'day'"),
    (DEVIATION, {"period": "shift"}, "period", "Input should be 'hour' or 'day'"),
    (DEVIATION, {"severity": "bad"}, "severity", "Input should be 'normal', 'warning' or 'critical'"),
    (ANOMALIES, {"status": "closed"}, "status", "Input should be 'open', 'resolved' or 'all'"),
    (ANOMALIES, {"min_severity": 6}, "min_severity", "Input should be less than or equal to 5"),
    (ANOMALIES, {"min_severity": 0}, "min_severity", "Input should be greater than or equal to 1"),
    (SPECS, {"scope": "lab"}, "scope", "Input should be 'analyte' or 'metric'"),
    (
        BASELINES,
        {"include_inactive": "maybe"},
        "include_inactive",
        "Input should be a valid boolean, unable to interpret input",
    ),
    # NUL bytes in identifiers
    (AGG, {"factory_id": "f\x001"}, "factory_id", f"String should match pattern '{NO_NUL}'"),
    (AGG, {"sensor_id": "s\x00"}, "sensor_id", f"String should match pattern '{NO_NUL}'"),
    (KPI, {"machine_id": "\x00"}, "machine_id", f"String should match pattern '{NO_NUL}'"),
    (EVENTS, {"subject": "p\x00h"}, "subject", "String should match pattern '^[^\\x00]*$'"),
    (EVENTS, {"event_type": "lab\x00"}, "event_type", f"String should match pattern '{NO_NUL}'"),
    (DEVIATION, {"factory_id": "\x00"}, "factory_id", f"String should match pattern '{NO_NUL}'"),
    (ANOMALIES, {"anomaly_type": "x\x00"}, "anomaly_type", f"String should match pattern '{NO_NUL}'"),
    (BASELINES, {"machine_id": "m\x00"}, "machine_id", f"String should match pattern '{NO_NUL}'"),
    (SPECS, {"name": "p\x00h"}, "name", f"String should match pattern '{NO_NUL}'"),
    (SPECS, {"tenant_id": "t\x001"}, "tenant_id", f"String should match pattern '{NO_NUL}'"),
    (READINGS, {"metric": "te\x00mp"}, "metric", f"String should match pattern '{NO_NUL}'"),
]
# every listing: page size and cursor
CASES += [
    (endpoint, overrides, field, msg)
    for endpoint in LISTINGS.values()
    for overrides, field, msg in (
        ({"limit": 0}, "limit", "Input should be greater than or equal to 1"),
        ({"limit": 10001}, "limit", "Input should be less than or equal to 10000"),
        ({"limit": "ten"}, "limit", "Input should be a valid integer, unable to parse string as an integer"),
        ({"cursor": "%%%"}, "cursor", BAD_CURSOR),
        ({"cursor": "A" * 2001}, "cursor", "String should have at most 2000 characters"),
    )
]
# every time range: order, zone, format
CASES += [
    (endpoint, overrides, field, msg)
    for endpoint in (*TIME_RANGED.values(), READINGS)
    for overrides, field, msg in (
        (START_AFTER_END, "end", "end must be after start"),
        ({"start": iso(at(4)), "end": iso(at(4))}, "end", "end must be after start"),
        ({"start": "2025-08-20T03:00:00"}, "start", "time must include a timezone, e.g. 2025-08-20T03:00:00Z"),
        ({"end": "2025-08-20T04:00:00"}, "end", "time must include a timezone, e.g. 2025-08-20T03:00:00Z"),
        ({"start": "yesterday"}, "start", "Input should be a valid datetime or date, input is too short"),
        (
            {"end": "2025-13-01T00:00:00Z"},
            "end",
            "Input should be a valid datetime or date, month value is outside expected range of 1-12",
        ),
    )
]


def _case_id(case: tuple) -> str:
    (path, _query), overrides, field, _msg = case
    shown = ",".join(f"{k}={str(v)[:12]!r}" for k, v in overrides.items())
    return f"{path.removeprefix('/v1/')}:{field}:{shown}"


@pytest.mark.parametrize(("endpoint", "overrides", "field", "msg"), CASES, ids=[_case_id(c) for c in CASES])
def test_422(empty_api: Api, endpoint: tuple[str, dict], overrides: dict, field: str, msg: str) -> None:
    path, query = endpoint
    assert_422(empty_api.t1.get(path, **{**query, **overrides}), ["query", field], msg)


@pytest.mark.parametrize(("path", "query"), NEEDS_TENANT.values(), ids=list(NEEDS_TENANT))
def test_422_admin_key_without_tenant_on_a_series_endpoint(empty_api: Api, path: str, query: dict) -> None:
    assert_422(empty_api.admin.get(path, **query), ["query", "tenant_id"], "tenant_id is required with an admin key")


@pytest.mark.parametrize("endpoint", [AGG, KPI, EVENTS, DEVIATION, READINGS], ids=lambda e: e[0])
def test_422_start_after_end_echoes_the_utc_end(empty_api: Api, endpoint: tuple[str, dict]) -> None:
    path, query = endpoint
    response = empty_api.t1.get(
        path, **{**query, "start": "2025-08-20T12:00:00+07:00", "end": "2025-08-20T04:00:00+02:00"}
    )
    assert response.json()["detail"] == [
        {
            "loc": ["query", "end"],
            "msg": "end must be after start",
            "type": "value_error",
            "input": "2025-08-20T02:00:00+00:00",
        }
    ]


@pytest.mark.parametrize(
    ("window_s", "end", "status"),
    [(60, "2025-09-04T17:20:00Z", 200), (60, "2025-09-04T17:20:00.000001Z", 422), (3600, "2031-06-01T00:00:00Z", 422)],
)
def test_agg_bucket_limit_boundary(empty_api: Api, window_s: int, end: str, status: int) -> None:
    # 50000 buckets of 60 s from 2025-08-01 end at 2025-09-04T17:20:00Z
    response = empty_api.t1.get("/v1/agg", **AGG_QUERY, window_s=window_s, start="2025-08-01T00:00:00Z", end=end)
    assert response.status_code == status, response.text


@pytest.mark.parametrize("endpoint", [KPI, EVENTS, DEVIATION, ANOMALIES], ids=lambda e: e[0])
def test_range_of_exactly_400_days_is_accepted(empty_api: Api, endpoint: tuple[str, dict]) -> None:
    path, query = endpoint
    body = ok(empty_api.t1.get(path, **{**query, "start": "2024-07-16T00:00:00Z", "end": "2025-08-20T00:00:00Z"}))
    assert body == {"items": [], "count": 0, "next_cursor": None}


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


@pytest.mark.parametrize(("path", "query"), LISTINGS.values(), ids=list(LISTINGS))
def test_422_limit_above_the_page_limit_setting(
    settings: PlatformSettings, database: DatabaseHandle, path: str, query: dict
) -> None:
    small = settings.model_copy(update={"api_page_limit_max": 5})
    with running(small, database) as api:
        assert ok(api.t1.get(path, **query, limit=5))["count"] == 0
        assert_422(
            api.t1.get(path, **query, limit=6), ["query", "limit"], "limit must be at most 5 (API_PAGE_LIMIT_MAX)"
        )


def b64(value: object) -> str:
    """A cursor-looking string: unpadded URL-safe base64 of the JSON of `value`."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


TAMPERED = {
    # each listing's cursor is a list of its sort key; these are well-formed base64 JSON of the wrong shape
    "agg": [b64(["2025-08-20T01:00:00+00:00"]), b64(["2025-08-20T01:00:00+00:00", 1]), b64(["x", "s1"])],
    "kpi": [b64(["2025-08-20T03:00:00+00:00", "m1"]), b64(["2025-08-20T03:00:00", "m1", "oee"])],
    "events": [b64(["2025-08-20T03:00:00+00:00", "m1", "lab_result"]), b64([None, "m1", "x", ""])],
    "deviation": [b64(["2025-08-20T03:00:00+00:00", "m1\x00"]), b64({"period_start": "x"})],
    "anomalies": [b64(["2025-08-20T03:00:00+00:00", "7"]), b64(["2025-08-20T03:00:00+00:00", 2**63])],
    "baselines": [b64([True]), b64(["1"]), b64([1, 2])],
    "specs": [b64(["t1", "*", "analyte", "ph", None]), b64(["t1", "*", "analyte", "ph"])],
    "readings": [b64(["2025-08-20T03:00:00+00:00", 5]), b64(["2025-08-20T03:00:00+00:00", "k", "x"])],
}


@pytest.mark.parametrize(
    ("name", "cursor"), [(n, c) for n, cursors in TAMPERED.items() for c in cursors], ids=lambda v: str(v)[:16]
)
def test_422_tampered_cursor(empty_api: Api, name: str, cursor: str) -> None:
    path, query = LISTINGS[name]
    error = assert_422(empty_api.t1.get(path, **query, cursor=cursor), ["query", "cursor"], BAD_CURSOR)
    assert error["input"] == cursor


@pytest.mark.usefixtures("kpi_data", "reading_data")
def test_422_a_cursor_of_another_listing(api: Api) -> None:
    cursor = ok(api.t1.get("/v1/readings", **READING_QUERY, limit=1))["next_cursor"]
    assert_422(api.t1.get("/v1/kpi", **KPI_QUERY, cursor=cursor), ["query", "cursor"], BAD_CURSOR)
    cursor = ok(api.t1.get("/v1/kpi", **KPI_QUERY, limit=1))["next_cursor"]
    assert_422(api.t1.get("/v1/readings", **READING_QUERY, cursor=cursor), ["query", "cursor"], BAD_CURSOR)


@pytest.mark.parametrize(
    ("path", "loc", "msg"),
    [
        ("/v1/anomalies/0", ["path", "anomaly_id"], "Input should be greater than or equal to 1"),
        (
            "/v1/anomalies/abc",
            ["path", "anomaly_id"],
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            "/v1/anomalies/9223372036854775808",
            ["path", "anomaly_id"],
            "Input should be less than or equal to 9223372036854775807",
        ),
        ("/v1/baselines/0", ["path", "baseline_id"], "Input should be greater than or equal to 1"),
        (
            "/v1/baselines/1.5",
            ["path", "baseline_id"],
            "Input should be a valid integer, unable to parse string as an integer",
        ),
    ],
)
def test_422_bad_path_id(empty_api: Api, path: str, loc: list, msg: str) -> None:
    assert_422(empty_api.t1.get(path), loc, msg)


# ------------------------------------------------------------------------------------------------
# keys: 401, 403
# ------------------------------------------------------------------------------------------------

EVERY_ENDPOINT = [
    ("GET", "/v1/agg", AGG[1]),
    ("GET", "/v1/kpi", KPI_QUERY),
    ("GET", "/v1/event-rollup", EVENT_QUERY),
    ("GET", "/v1/baseline-deviation", DEVIATION_QUERY),
    ("GET", "/v1/anomalies", {}),
    ("GET", "/v1/anomalies/1", {}),
    ("POST", "/v1/anomalies/1/resolve", {"note": "x"}),
    ("GET", "/v1/baselines", {}),
    ("GET", "/v1/baselines/1", {}),
    ("POST", "/v1/baseline/predict", PREDICT),
    ("GET", "/v1/spec-limits", {}),
    ("GET", "/v1/readings", READING_QUERY),
]


def send(client: TestClient, method: str, path: str, data: dict, headers: dict) -> httpx.Response:
    if method == "POST":
        return client.post(path, json=data, headers=headers)
    return client.get(path, params=data, headers=headers)


@pytest.mark.parametrize(("method", "path", "data"), EVERY_ENDPOINT, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, MISSING_KEY),
        ({"X-API-Key": ""}, MISSING_KEY),
        ({"X-API-Key": "secret"}, INVALID_KEY),
        ({"X-API-Key": "apk_0123456789ab_" + "A" * 42}, INVALID_KEY),  # one character short
        ({"X-API-Key": "apk_0123456789ab_" + "A" * 43}, REJECTED_KEY),  # well-formed, unknown
    ],
    ids=["no-header", "empty", "malformed", "short", "unknown"],
)
def test_401_without_a_valid_key(
    empty_api: Api, method: str, path: str, data: dict, headers: dict, expected: dict
) -> None:
    response = send(empty_api.client, method, path, data, headers)
    assert response.status_code == 401
    assert response.json() == expected
    assert response.headers["WWW-Authenticate"] == "X-API-Key"


def test_401_comes_before_parameter_validation(empty_api: Api) -> None:
    response = empty_api.client.get("/v1/agg", params={"window_s": "x"})
    assert (response.status_code, response.json()) == (401, MISSING_KEY)


def test_401_for_a_key_with_a_wrong_secret(api: Api) -> None:
    forged = api.t1.key[:-1] + ("A" if api.t1.key[-1] != "A" else "B")  # the real key id, another secret
    response = api.client.get("/v1/baselines", headers={"X-API-Key": forged})
    assert (response.status_code, response.json()) == (401, REJECTED_KEY)
    assert ok(api.t1.get("/v1/baselines")) == {"items": [], "count": 0, "next_cursor": None}


def test_401_for_a_revoked_key(settings: PlatformSettings, database: DatabaseHandle) -> None:
    uncached = settings.model_copy(update={"api_key_cache_s": 0})
    with running(uncached, database) as api:
        assert ok(api.t1.get("/v1/baselines"))["count"] == 0
        with psycopg.connect(database.admin_url, autocommit=True) as conn:
            assert revoke_key(conn, api.t1.key_id) is True
        response = api.t1.get("/v1/baselines")
        assert (response.status_code, response.json()) == (401, REJECTED_KEY)
        assert ok(api.t2.get("/v1/baselines"))["count"] == 0  # other keys still work


def test_a_revoked_key_works_until_its_cache_entry_expires(api: Api, database: DatabaseHandle) -> None:
    """API_KEY_CACHE_S (30 s by default): a verified key is not looked up again within that time."""
    assert ok(api.t1.get("/v1/baselines"))["count"] == 0
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        revoke_key(conn, api.t1.key_id)
    assert ok(api.t1.get("/v1/baselines"))["count"] == 0


def test_401_for_an_expired_key(api: Api, database: DatabaseHandle) -> None:
    now = db_now(database)
    _, expired = make_key(database, "t1", "old", expires_at=now - timedelta(seconds=1))
    _, current = make_key(database, "t1", "new", expires_at=now + timedelta(days=1))
    response = api.client.get("/v1/baselines", headers={"X-API-Key": expired})
    assert (response.status_code, response.json()) == (401, REJECTED_KEY)
    assert ok(Caller(api.client, current).get("/v1/baselines"))["count"] == 0


# ------------------------------------------------------------------------------------------------
# tenant isolation: t1 and t2 share factory, machine and sensor ids
# ------------------------------------------------------------------------------------------------

# endpoint, its data, and a projection of each item to what tells the rows apart (expected per tenant)
ISOLATION = {
    "agg": (
        "/v1/agg",
        "agg_data",
        {**AGG_QUERY, "window_s": 3600, "start": iso(at(0)), "end": iso(at(2))},
        lambda i: (i["bucket_start"], i["sensor_id"], i["sum"]),
        [(iso(at(0)), "s1", 8.0), (iso(at(1)), "s1", 10.0), (iso(at(1)), "s2", 30.0)],
        [(iso(at(0)), "s1", 70.0), (iso(at(1)), "s1", 77.0)],
    ),
    "agg-rollup": (
        "/v1/agg",
        "agg_data",
        {**AGG_QUERY, "window_s": 86400, "start": iso(at(0)), "end": iso(at(24))},
        lambda i: (i["bucket_start"], i["sensor_id"], i["sum"]),
        [(iso(at(0)), "s1", 30.0), (iso(at(0)), "s2", 37.0)],
        [(iso(at(0)), "s1", 147.0)],
    ),
    "kpi": (
        "/v1/kpi",
        "kpi_data",
        {**KPI_QUERY, "kpi": "oee", "machine_id": "m1"},
        lambda i: (i["period_start"], i["value"]),
        [(iso(at(3)), 0.5), (iso(at(4)), 0.75)],
        [(iso(at(3)), 0.125)],
    ),
    "events": (
        "/v1/event-rollup",
        "event_data",
        {**EVENT_QUERY, "event_type": "device_health", "machine_id": "m1"},
        lambda i: (i["bucket_start"], i["count"]),
        [(iso(at(3)), 12), (iso(at(4)), 10)],
        [(iso(at(3)), 99)],
    ),
    "deviation": (
        "/v1/baseline-deviation",
        "deviation_data",
        {**DEVIATION_QUERY, "machine_id": "m1"},
        lambda i: (i["period_start"], i["actual_kwh"]),
        [(iso(at(3)), 50.0), (iso(at(4)), 40.5), (iso(at(5)), 80.0)],
        [(iso(at(3)), 99.0)],
    ),
    "readings": (
        "/v1/readings",
        "reading_data",
        {**READING_QUERY, "sensor_id": "s1"},
        lambda i: (i["time"], i["value"]),
        [(iso(at(3)), 20.5), ("2025-08-20T03:15:00.250000Z", 21.0), (iso(at(3, 30)), 22.0)],
        [(iso(at(3)), 91.0)],
    ),
    "anomalies": (
        "/v1/anomalies",
        "anomalies",
        {**ANOMALY_RANGE, "machine_id": "m1", "factory_id": "f1"},
        lambda i: (i["time"], i["severity"]),
        [(iso(at(3, 20)), 3), (iso(at(3, 10)), 4)],
        [(iso(at(3, 10)), 5)],
    ),
    "baselines": (
        "/v1/baselines",
        "baselines",
        {"factory_id": "f1", "machine_id": "m1"},
        lambda i: (i["version"], i["coefficients"]["intercept"]),
        [(2, 10.5)],
        [(1, 1.5)],
    ),
    "specs": (
        "/v1/spec-limits",
        "spec_data",
        {"factory_id": "f1", "name": "ph"},
        lambda i: (i["factory_id"], i["lower_limit"]),
        [("*", 6.5), ("*", 6.75), ("f1", 6.0)],
        [("*", 1.0)],
    ),
}


@pytest.mark.parametrize("name", list(ISOLATION))
def test_tenant_isolation(api: Api, request: pytest.FixtureRequest, name: str) -> None:
    path, data, query, project, t1_rows, t2_rows = ISOLATION[name]
    request.getfixturevalue(data)

    def rows(body: dict, tenant: str) -> list:
        assert {i["tenant_id"] for i in body["items"]} <= {tenant}
        return [project(i) for i in body["items"]]

    # a tenant key reads its own tenant, named or not; another tenant is not found
    own = ok(api.t1.get(path, **query))
    assert rows(own, "t1") == t1_rows
    assert ok(api.t1.get(path, **query, tenant_id="t1")) == own
    response = api.t1.get(path, **query, tenant_id="t2")
    assert (response.status_code, response.json()) == (404, OTHER_TENANT)
    assert rows(ok(api.t2.get(path, **query)), "t2") == t2_rows
    response = api.t2.get(path, **{**query, "tenant_id": "t1"})
    assert (response.status_code, response.json()) == (404, {"detail": "tenant 't1' not found"})
    # an admin key names the tenant
    assert ok(api.admin.get(path, **query, tenant_id="t1")) == own
    assert rows(ok(api.admin.get(path, **query, tenant_id="t2")), "t2") == t2_rows
    nobody = ok(api.admin.get(path, **query, tenant_id="t3"))
    assert (nobody["items"], nobody["count"], nobody["next_cursor"]) == ([], 0, None)


# an admin key without tenant_id on the list endpoints: every tenant, in the listing's order
EVERY_TENANT = {
    "anomalies": [("t1", (iso(at(3, 20)), 3)), ("t2", (iso(at(3, 10)), 5)), ("t1", (iso(at(3, 10)), 4))],
    "baselines": [("t1", (2, 10.5)), ("t2", (1, 1.5))],
    "specs": [("t1", ("*", 6.5)), ("t1", ("*", 6.75)), ("t1", ("f1", 6.0)), ("t2", ("*", 1.0))],
}


@pytest.mark.parametrize("name", list(EVERY_TENANT))
def test_admin_key_without_tenant_lists_every_tenant(api: Api, request: pytest.FixtureRequest, name: str) -> None:
    path, data, query, project, _t1_rows, _t2_rows = ISOLATION[name]
    request.getfixturevalue(data)
    items = ok(api.admin.get(path, **query))["items"]
    assert [(i["tenant_id"], project(i)) for i in items] == EVERY_TENANT[name]


def test_tenant_isolation_of_single_items_and_predict(
    api: Api, anomalies: dict[str, dict], baselines: dict[str, dict]
) -> None:
    for path in (f"/v1/anomalies/{anomalies['b1']['anomaly_id']}", f"/v1/baselines/{baselines['t2']['baseline_id']}"):
        assert api.t1.get(path).status_code == 404
        assert api.t2.get(path).status_code == 200
        assert api.admin.get(path).status_code == 200
    # predict: the same ids give t1's model to a t1 key and t2's to a t2 key
    assert ok(api.t1.post("/v1/baseline/predict", PREDICT))["baseline_id"] == baselines["v2"]["baseline_id"]
    t2_body = {**PREDICT, "drivers": {"production_count": 120}}
    assert ok(api.t2.post("/v1/baseline/predict", t2_body))["predicted"] == 16.5
    response = api.t2.post("/v1/baseline/predict", {**t2_body, "tenant_id": "t1"})
    assert (response.status_code, response.json()) == (404, {"detail": "tenant 't1' not found"})


# ------------------------------------------------------------------------------------------------
# database roles
# ------------------------------------------------------------------------------------------------


def test_the_api_role_cannot_write_results_or_keys(database: DatabaseHandle) -> None:
    with psycopg.connect(database.api_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO analytics.analytics_agg (bucket_start, bucket_end, window_s, tenant_id, factory_id, "
                "machine_id, sensor_id, metric, count_n) VALUES (now(), now(), 60, 't', 'f', 'm', 's', 'temp', 1)"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            create_key(conn, "sneaky", None)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE analytics.api_keys SET revoked_at = NULL")
    assert database.query("SELECT count(*) FROM analytics.api_keys") == [(0,)]
    assert database.query("SELECT count(*) FROM analytics.analytics_agg") == [(0,)]


def test_the_writer_role_resolves_and_nothing_else(database: DatabaseHandle, anomalies: dict[str, dict]) -> None:
    a1 = anomalies["a1"]["anomaly_id"]
    with psycopg.connect(database.writer_url, autocommit=True) as conn:
        assert conn.execute("SELECT analytics.resolve_anomaly(%s, 'fixed', 'writer')", (a1,)).fetchone() == (True,)
        assert conn.execute("SELECT analytics.resolve_anomaly(999999, 'fixed', 'writer')").fetchone() == (False,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            insert_as(conn, "analytics_anomaly", ANOMALY_ROWS["a5"] | {"machine_id": "m8"})
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE analytics.analytics_anomaly SET severity = 1 WHERE anomaly_id = %s", (a1,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM analytics.analytics_anomaly WHERE anomaly_id = %s", (a1,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            insert_as(conn, "analytics_agg", one_value(0, "s1", 1.0))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            create_key(conn, "sneaky", None)
    assert resolution(database, a1) == ("resolved", resolution(database, a1)[1], "writer", "fixed")
    assert database.query("SELECT severity FROM analytics.analytics_anomaly WHERE anomaly_id = %s", (a1,)) == [(4,)]
    assert database.scalar("SELECT count(*) FROM analytics.analytics_anomaly") == len(ANOMALY_ROWS)
    assert database.scalar("SELECT count(*) FROM analytics.analytics_agg") == 0


def insert_as(conn: psycopg.Connection, table: str, row: dict) -> None:
    names = sql.SQL(", ").join(sql.Identifier(c) for c in row)
    marks = sql.SQL(", ").join(sql.Placeholder(c) for c in row)
    statement = sql.SQL("INSERT INTO analytics.{} ({}) VALUES ({})").format(sql.Identifier(table), names, marks)
    conn.execute(statement, {k: Jsonb(v) if isinstance(v, dict) else v for k, v in row.items()})


def test_the_app_resolves_through_the_writer_login(
    api: Api, anomalies: dict[str, dict], database: DatabaseHandle
) -> None:
    ok(api.resolver.post(f"/v1/anomalies/{anomalies['a1']['anomaly_id']}/resolve", {"note": "x"}))
    with api.client.app.state.writer.connection() as conn:
        assert conn.execute("SELECT current_user AS who").fetchone() == {
            "who": psycopg.conninfo.conninfo_to_dict(database.writer_url)["user"]
        }


# ------------------------------------------------------------------------------------------------
# the api-keys CLI
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(database: DatabaseHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database.admin_url)
    monkeypatch.delenv("MIGRATIONS_DATABASE_URL", raising=False)


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


@pytest.mark.usefixtures("cli_env")
def test_cli_create_list_revoke(
    settings: PlatformSettings, database: DatabaseHandle, capsys: pytest.CaptureFixture
) -> None:
    code, out, err = run_cli(capsys, "api-keys", "create", "--name", "x", "--tenant", "t1")
    assert (code, err) == (0, "")
    key = out[-1]
    key_id = key.split("_")[1]
    assert out == [f"key {key_id} for tenant t1, scopes read; store it now, it is not shown again:", key]

    uncached = settings.model_copy(update={"api_key_cache_s": 0})
    insert(database, "analytics_kpi", T1_KPIS + T2_KPIS)
    with TestClient(create_app(uncached), raise_server_exceptions=False) as client:
        holder = Caller(client, key)
        assert [i["tenant_id"] for i in ok(holder.get("/v1/kpi", **KPI_QUERY, kpi="oee"))["items"]] == ["t1"] * 3

        code, listed, err = run_cli(capsys, "api-keys", "list")
        assert (code, err) == (0, "")
        created = database.scalar("SELECT created_at FROM analytics.api_keys WHERE key_id = %s", (key_id,))
        assert listed == [
            f"{'key_id':14} {'tenant':12} {'scopes':14} {'created':20} {'expires':20} {'revoked':20} name",
            f"{key_id:14} {'t1':12} {'read':14} {created.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}{'':1}{'-':20} {'-':20} x",
        ]
        assert key.split("_", 2)[2] not in "\n".join(listed)

        code, out, err = run_cli(capsys, "api-keys", "revoke", key_id)
        assert (code, out, err) == (
            0,
            [f"key {key_id} revoked (running APIs stop accepting it within API_KEY_CACHE_S)"],
            "",
        )
        response = holder.get("/v1/kpi", **KPI_QUERY)
        assert (response.status_code, response.json()) == (401, REJECTED_KEY)

    _code, listed, _err = run_cli(capsys, "api-keys", "list")
    revoked = database.scalar("SELECT revoked_at FROM analytics.api_keys WHERE key_id = %s", (key_id,))
    assert listed[1].endswith(f" {'-':20} {revoked.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ} x")


@pytest.mark.usefixtures("cli_env")
def test_cli_admin_key_with_resolve_and_expiry(database: DatabaseHandle, capsys: pytest.CaptureFixture) -> None:
    before = db_now(database)
    code, out, _err = run_cli(capsys, "api-keys", "create", "--name", "ops", "--admin", "--resolve", "--days", "2")
    after = db_now(database)
    key_id = out[-1].split("_")[1]
    assert (code, out[0]) == (
        0,
        f"key {key_id} for every tenant (admin), scopes read,resolve; store it now, it is not shown again:",
    )
    tenant, scopes, expires = database.query(
        "SELECT tenant_id, scopes, expires_at FROM analytics.api_keys WHERE key_id = %s", (key_id,)
    )[0]
    assert (tenant, scopes) == (None, ["read", "resolve"])
    assert before + timedelta(days=2) - timedelta(seconds=5) <= expires <= after + timedelta(days=2)


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    "argv",
    [
        ["--name", "x", "--tenant", "t1", "--admin"],
        ["--name", "x"],
        ["--tenant", "t1"],
    ],
)
def test_cli_create_needs_a_name_and_exactly_one_holder(
    database: DatabaseHandle, capsys: pytest.CaptureFixture, argv: list[str]
) -> None:
    code, out, err = run_cli(capsys, "api-keys", "create", *argv)
    assert (code, out) == (2, [])
    assert err == "error: create needs --name and exactly one of --tenant T or --admin\n"
    assert database.scalar("SELECT count(*) FROM analytics.api_keys") == 0


@pytest.mark.usefixtures("cli_env")
def test_cli_revoke_unknown_key(capsys: pytest.CaptureFixture) -> None:
    assert run_cli(capsys, "api-keys", "revoke", "0123456789ab") == (1, [], "error: no API key 0123456789ab\n")
    assert run_cli(capsys, "api-keys", "revoke") == (2, [], "error: revoke needs the KEY_ID (see `api-keys list`)\n")


# ------------------------------------------------------------------------------------------------
# bugs found while writing these tests (each asserts the correct behaviour)
# ------------------------------------------------------------------------------------------------


def test_bug_predict_admin_without_tenant_names_the_body_field(empty_api: Api) -> None:
    """POST /v1/baseline/predict takes tenant_id in its JSON body: the 422 must point there, not at a
    query parameter the endpoint does not have."""
    assert_422(
        empty_api.admin.post("/v1/baseline/predict", PREDICT),
        ["body", "tenant_id"],
        "tenant_id is required with an admin key",
    )


@pytest.mark.usefixtures("baselines")
def test_bug_predict_driver_errors_are_located_under_drivers(api: Api) -> None:
    """An unknown name or a non-finite value is an entry of `drivers`: its location is
    body.drivers.<name> (where pydantic puts a driver value that is not a number), not a top-level
    body field of that name."""
    body = {**PREDICT, "drivers": {**PREDICT["drivers"], "flux": 1.0}}
    assert_422(
        api.t1.post("/v1/baseline/predict", body),
        ["body", "drivers", "flux"],
        "'flux' is not a driver of this baseline; its drivers: "
        "production_count, avg_outdoor_temp, avg_outdoor_pressure",
    )
    body = {**PREDICT, "drivers": {**PREDICT["drivers"], "production_count": "many"}}
    assert api.t1.post("/v1/baseline/predict", body).json()["detail"][0]["loc"] == [
        "body",
        "drivers",
        "production_count",
    ]
    nan = json.dumps({**PREDICT, "drivers": {**PREDICT["drivers"], "production_count": float("nan")}})
    headers = {"X-API-Key": api.t1.key, "Content-Type": "application/json"}
    assert_422(
        api.client.post("/v1/baseline/predict", content=nan, headers=headers),
        ["body", "drivers", "production_count"],
        "driver values must be finite numbers",
    )


def test_bug_csv_cell_of_a_nan_is_empty_like_its_json_null(api: Api, database: DatabaseHandle) -> None:
    """A NaN stored in a float column is served as JSON null; its CSV cell must be empty, as for null
    (respond._cell says "NaN -> null -> empty", but orjson renders NaN as the text `null`)."""
    insert(database, "analytics_kpi", [{**kpi(3, "m1", "oee", float("nan"), "ratio"), "null_reason": None}])
    as_json = ok(api.t1.get("/v1/kpi", **KPI_QUERY))
    assert as_json["items"][0]["value"] is None
    rows = list(csv.reader(io.StringIO(api.t1.csv("/v1/kpi", **KPI_QUERY).text)))
    assert rows[1][rows[0].index("value")] == ""


@pytest.mark.usefixtures("cli_env")
def test_bug_cli_list_times_are_utc_whatever_the_database_timezone(
    database: DatabaseHandle, capsys: pytest.CaptureFixture
) -> None:
    """The listing labels its times Z: they must be UTC whatever the session's TimeZone."""
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET timezone TO 'Asia/Bangkok'").format(sql.Identifier(database.name)))
    _code, out, _err = run_cli(capsys, "api-keys", "create", "--name", "x", "--tenant", "t1")
    key_id = out[-1].split("_")[1]
    created = database.scalar("SELECT created_at FROM analytics.api_keys WHERE key_id = %s", (key_id,))
    _code, listed, _err = run_cli(capsys, "api-keys", "list")
    assert listed[1].split()[3] == f"{created.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
