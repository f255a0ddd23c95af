"""Talking to the /v1 API under test: its callers, its answers, and the checks every listing shares.

Rows are inserted with SQL as the schema owner (`insert`); the app runs inside one `TestClient` (its
lifespan opens the pool of the read-only role) and every request carries the key of the caller under
test (`Api`: a t1 key, a t2 key, an admin key, keys with the resolve scope). The fixtures `api` (over
the test's own database) and `empty_api` (over one empty database per module) are in
integration/conftest.py; the known rows they serve are support/api_data.py's."""

from __future__ import annotations

import csv
import io
import json
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
from analytics_platform.api.keys import create_key
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.stack import DatabaseHandle

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

    def put(self, path: str, body: Any) -> httpx.Response:
        return self.client.put(path, json=body, headers={"X-API-Key": self.key})

    def put_raw(self, path: str, content: str) -> httpx.Response:
        return self.client.put(
            path, content=content, headers={"X-API-Key": self.key, "Content-Type": "application/json"}
        )

    def delete(self, path: str, **params: Any) -> httpx.Response:
        return self.client.delete(path, params=params, headers={"X-API-Key": self.key})


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
        # the five keys over one connection: a login each was most of making them (this runs for every API test)
        with psycopg.connect(database.admin_url, autocommit=True) as conn:

            def caller(tenant: str | None, name: str, scopes: tuple[str, ...] = ("read",)) -> Caller:
                key_id, key = create_key(conn, name, tenant, scopes=scopes)
                return Caller(client, key, key_id)

            api = Api(
                client=client,
                t1=caller("t1", "t1-reader"),
                t2=caller("t2", "t2-reader"),
                admin=caller(None, "admin-reader"),
                resolver=caller("t1", "ops-bot", ("read", "resolve")),
                admin_resolver=caller(None, "admin-bot", ("read", "resolve")),
            )
        yield api


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, list[str], str]:
    """`analytics-platform ARGV` in-process: exit code, stdout lines, stderr (with `cli_env`)."""
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


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


def db_now(database: DatabaseHandle) -> datetime:
    return database.scalar("SELECT clock_timestamp()")
