"""Who may call /v1: API keys (401 for a missing, malformed, unknown, forged, revoked or expired key; the
key cache), what the database roles of the API's logins may do, and the `api-keys` CLI."""

from __future__ import annotations

from datetime import UTC, timedelta

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.types.json import Jsonb

from analytics_platform.api.app import create_app
from analytics_platform.api.keys import create_key, revoke_key
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import (
    INVALID_KEY,
    MISSING_KEY,
    REJECTED_KEY,
    Api,
    Caller,
    db_now,
    insert,
    make_key,
    ok,
    run_cli,
    running,
)
from analytics_platform_tests.support.api_data import (
    AGG,
    ANOMALY_ROWS,
    DEVIATION_QUERY,
    EVENT_QUERY,
    KPI_QUERY,
    LAB_AGG_QUERY,
    PREDICT,
    READING_QUERY,
    T1_KPIS,
    T2_KPIS,
    one_value,
    resolution,
)
from analytics_platform_tests.support.stack import DatabaseHandle

# ------------------------------------------------------------------------------------------------
# keys: 401, 403
# ------------------------------------------------------------------------------------------------

EVERY_ENDPOINT = [
    ("GET", "/v1/agg", AGG[1]),
    ("GET", "/v1/lab/agg", {**LAB_AGG_QUERY, "start": "2025-08-20T00:00:00Z", "end": "2025-08-21T00:00:00Z"}),
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
    ("GET", "/v1/forecasts", {"factory_id": "f1"}),
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
