"""The metrics catalogue endpoints (/v1/catalog/...) against a real database, no mocks: exact answers
for tenant and admin keys, every edit's status and the row it leaves (source 'api', updated_by the
key's name), who may edit what (401 / 403 / 404 / 503), every 422 with its message, and that an edit
reaches the metric check of /v1/readings at once. Also `api-keys create --catalog-admin`.

The catalogue of each test is replaced by a small known one, written as the schema owner:

    tenant  metric  unit  range          source    overrides
    *       power   kW    0 .. 100000    packaged
    *       temp    degC  -60 .. 400     packaged
    t1      temp    degF  -76 .. 752     cli       yes (t1's own temp replaces the default for t1)
    t1      torque  Nm    0 .. (none)    api
    t2      flux    -     -              cli

and the policies: the default ('*') reject, t2's own reject; t1 has none of its own.

Who edits what: a key needs the `admin` scope. A tenant key edits its own tenant; naming another
tenant is a 404 (as everywhere in the API), naming the defaults '*' is a 403 (they are no secret:
every listing shows them, so the answer says why instead). An admin key (no tenant) names the
tenant, '*' for the defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics_platform.api.app import create_app
from analytics_platform.api.keys import create_key
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import Caller, assert_422, iso, ok, run_cli
from analytics_platform_tests.support.stack import DatabaseHandle

T0 = datetime(2025, 8, 20, tzinfo=UTC)
T1 = datetime(2025, 8, 21, 9, 30, tzinfo=UTC)
NO_ADMIN_SCOPE = {"detail": "this API key lacks the 'admin' scope"}
OTHER_TENANT = {"detail": "tenant 't2' not found"}
DEFAULTS_FORBIDDEN = {
    "detail": "a tenant key cannot edit the platform defaults (tenant '*'); leave tenant_id out to edit those of "
    "tenant 't1'"
}
NO_WRITER = {"detail": "editing the metrics catalogue is not configured on this API (set API_WRITE_DATABASE_URL)"}
COLUMNS = (
    "tenant_id",
    "metric",
    "unit",
    "min_value",
    "max_value",
    "description",
    "source",
    "updated_at",
    "updated_by",
)


def entry(
    tenant: str,
    metric: str,
    unit: str | None,
    low: float | None,
    high: float | None,
    description: str,
    source: str,
    by: str | None,
    at: datetime,
) -> dict:
    return dict(zip(COLUMNS, (tenant, metric, unit, low, high, description, source, at, by), strict=True))


def item(row: dict, overrides: bool = False) -> dict:
    """An entry as the API answers it: the row, times as the API writes them, and `overrides`."""
    return {**{k: iso(v) if isinstance(v, datetime) else v for k, v in row.items()}, "overrides": overrides}


POWER = entry("*", "power", "kW", 0.0, 100000.0, "active power demand", "packaged", "metrics.yaml", T0)
TEMP = entry("*", "temp", "degC", -60.0, 400.0, "temperature", "packaged", "metrics.yaml", T0)
T1_TEMP = entry("t1", "temp", "degF", -76.0, 752.0, "oven temperature", "cli", "alice", T1)
T1_TORQUE = entry("t1", "torque", "Nm", 0.0, None, "spindle torque", "api", "t1-catalog", T1)
T2_FLUX = entry("t2", "flux", None, None, None, "", "cli", None, T1)
DEFAULT_POLICY = {
    "tenant_id": "*",
    "unknown_metrics": "reject",
    "own": True,
    "updated_at": iso(T0),
    "updated_by": "migration 08",
}
T1_POLICY = {**DEFAULT_POLICY, "tenant_id": "t1", "own": False}  # t1 has none: the default applies
T2_POLICY = {"tenant_id": "t2", "unknown_metrics": "reject", "own": True, "updated_at": iso(T1), "updated_by": "ops"}


@dataclass(frozen=True)
class Api:
    t1: Caller  # read, tenant t1
    t2: Caller  # read, tenant t2
    admin: Caller  # read, every tenant
    resolver: Caller  # read + resolve, tenant t1
    t1_catalog: Caller  # read + admin, tenant t1, named "t1-catalog"
    platform: Caller  # read + admin, every tenant, named "platform-team"


def app_settings(database: DatabaseHandle, *, writer: bool = True) -> PlatformSettings:
    return PlatformSettings(
        database_url=database.pipeline_url,
        api_database_url=database.api_url,
        api_write_database_url=database.writer_url if writer else None,
    )


@contextmanager
def running(settings: PlatformSettings, database: DatabaseHandle) -> Iterator[Api]:
    """The app for `settings` with one key per kind of caller. Server errors come back as 500s."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:

        def caller(tenant: str | None, name: str, scopes: tuple[str, ...] = ("read",)) -> Caller:
            with psycopg.connect(database.admin_url, autocommit=True) as conn:
                return Caller(client, create_key(conn, name, tenant, scopes=scopes)[1])

        yield Api(
            t1=caller("t1", "t1-reader"),
            t2=caller("t2", "t2-reader"),
            admin=caller(None, "admin-reader"),
            resolver=caller("t1", "ops-bot", ("read", "resolve")),
            t1_catalog=caller("t1", "t1-catalog", ("read", "admin")),
            platform=caller(None, "platform-team", ("read", "admin")),
        )


@pytest.fixture
def catalog(database: DatabaseHandle) -> None:
    """The known catalogue and policies above, in place of the seeded ones."""
    with database.connect() as conn:
        conn.execute("DELETE FROM analytics.metric_catalog")
        for row in (POWER, TEMP, T1_TEMP, T1_TORQUE, T2_FLUX):
            conn.execute(
                f"INSERT INTO analytics.metric_catalog ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join(f'%({c})s' for c in COLUMNS)})",
                row,
            )
        conn.execute("UPDATE analytics.metric_policy SET updated_at = %s, updated_by = 'migration 08'", (T0,))
        conn.execute(
            "INSERT INTO analytics.metric_policy (tenant_id, unknown_metrics, updated_at, updated_by) "
            "VALUES ('t2', 'reject', %s, 'ops')",
            (T1,),
        )


@pytest.fixture
def api(database: DatabaseHandle, catalog: None) -> Iterator[Api]:
    with running(app_settings(database), database) as result:
        yield result


def stored(database: DatabaseHandle, tenant: str, metric: str) -> dict | None:
    rows = database.query(
        f"SELECT {', '.join(COLUMNS)} FROM analytics.metric_catalog WHERE tenant_id = %s AND metric = %s",
        (tenant, metric),
    )
    return dict(zip(COLUMNS, rows[0], strict=True)) if rows else None


def everything(database: DatabaseHandle) -> list[tuple]:
    """The whole catalogue and every policy: what a refused edit must leave as it was."""
    return database.query(
        f"SELECT {', '.join(COLUMNS)} FROM analytics.metric_catalog ORDER BY tenant_id, metric"
    ) + database.query("SELECT * FROM analytics.metric_policy ORDER BY tenant_id")


def db_now(database: DatabaseHandle) -> datetime:
    return database.scalar("SELECT clock_timestamp()")


def page(tenant: str | None, policy: dict, *items: dict) -> dict:
    return {"tenant_id": tenant, "policy": policy, "items": list(items), "count": len(items), "next_cursor": None}


# ------------------------------------------------------------------------------------------------
# GET /v1/catalog/metrics
# ------------------------------------------------------------------------------------------------


def test_a_tenant_key_gets_the_defaults_merged_with_its_own(api: Api) -> None:
    expected = page("t1", T1_POLICY, item(POWER), item(T1_TEMP, overrides=True), item(T1_TORQUE))
    assert ok(api.t1.get("/v1/catalog/metrics")) == expected
    assert ok(api.t1.get("/v1/catalog/metrics", tenant_id="t1")) == expected
    assert ok(api.t2.get("/v1/catalog/metrics")) == page("t2", T2_POLICY, item(T2_FLUX), item(POWER), item(TEMP))


def test_an_admin_key_names_the_tenant_or_lists_everything(api: Api) -> None:
    assert ok(api.admin.get("/v1/catalog/metrics", tenant_id="t1")) == ok(api.t1.get("/v1/catalog/metrics"))
    assert ok(api.admin.get("/v1/catalog/metrics", tenant_id="*")) == page("*", DEFAULT_POLICY, item(POWER), item(TEMP))
    # a tenant without entries or a policy of its own: the defaults
    t9_policy = {**DEFAULT_POLICY, "tenant_id": "t9", "own": False}
    assert ok(api.admin.get("/v1/catalog/metrics", tenant_id="t9")) == page("t9", t9_policy, item(POWER), item(TEMP))
    # every entry of every tenant, by metric, the default first; the default policy
    assert ok(api.admin.get("/v1/catalog/metrics")) == page(
        None,
        DEFAULT_POLICY,
        item(T2_FLUX),
        item(POWER),
        item(TEMP),
        item(T1_TEMP, overrides=True),
        item(T1_TORQUE),
    )


def test_a_tenant_key_naming_another_tenant_or_the_defaults_is_404(api: Api) -> None:
    for tenant in ("t2", "*"):
        response = api.t1.get("/v1/catalog/metrics", tenant_id=tenant)
        assert (response.status_code, response.json()) == (404, {"detail": f"tenant {tenant!r} not found"})


def test_the_listing_as_csv(api: Api) -> None:
    response = api.t1.get("/v1/catalog/metrics", accept="text/csv")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.text == (
        "tenant_id,metric,unit,min_value,max_value,description,source,overrides,updated_at,updated_by\n"
        "*,power,kW,0.0,100000.0,active power demand,packaged,false,2025-08-20T00:00:00Z,metrics.yaml\n"
        "t1,temp,degF,-76.0,752.0,oven temperature,cli,true,2025-08-21T09:30:00Z,alice\n"
        "t1,torque,Nm,0.0,,spindle torque,api,false,2025-08-21T09:30:00Z,t1-catalog\n"
    )
    assert "X-Next-Cursor" not in response.headers


# ------------------------------------------------------------------------------------------------
# PUT /v1/catalog/metrics/{metric}
# ------------------------------------------------------------------------------------------------


def test_put_creates_then_replaces_a_tenant_entry(api: Api, database: DatabaseHandle) -> None:
    body = {"unit": "rpm", "min_value": 0, "max_value": 24000, "description": "spindle speed"}
    before = db_now(database)
    created = ok(api.t1_catalog.put("/v1/catalog/metrics/spindle_speed", body), 201)
    after = db_now(database)
    row = stored(database, "t1", "spindle_speed")
    assert row == entry(
        "t1", "spindle_speed", "rpm", 0.0, 24000.0, "spindle speed", "api", "t1-catalog", row["updated_at"]
    )
    assert before <= row["updated_at"] <= after
    assert created == item(row)

    # replaced: every field, a field left out becomes null or ''
    replaced = ok(api.t1_catalog.put("/v1/catalog/metrics/spindle_speed", {"unit": "rpm", "tenant_id": "t1"}))
    again = stored(database, "t1", "spindle_speed")
    assert again == entry("t1", "spindle_speed", "rpm", None, None, "", "api", "t1-catalog", again["updated_at"])
    assert again["updated_at"] >= row["updated_at"]
    assert replaced == item(again)

    # replacing an entry the CLI wrote makes it the API's; it still overrides the default
    temp = ok(api.t1_catalog.put("/v1/catalog/metrics/temp", {"unit": "degC", "min_value": -10, "max_value": 300}))
    assert temp == item(stored(database, "t1", "temp"), overrides=True)
    assert (temp["source"], temp["updated_by"], temp["min_value"]) == ("api", "t1-catalog", -10.0)

    # t1's listing has them; t2's does not
    assert [i["metric"] for i in ok(api.t1.get("/v1/catalog/metrics"))["items"]] == [
        "power",
        "spindle_speed",
        "temp",
        "torque",
    ]
    assert ok(api.t2.get("/v1/catalog/metrics")) == page("t2", T2_POLICY, item(T2_FLUX), item(POWER), item(TEMP))


def test_put_a_tenant_entry_named_like_a_default_overrides_it(api: Api, database: DatabaseHandle) -> None:
    body = {"unit": "W", "min_value": 0, "max_value": 5e6, "description": "power in watts"}
    created = ok(api.t1_catalog.put("/v1/catalog/metrics/power", body), 201)
    assert created == item(stored(database, "t1", "power"), overrides=True)
    assert stored(database, "*", "power") == POWER
    listed = ok(api.t1.get("/v1/catalog/metrics"))["items"]
    assert [(i["tenant_id"], i["metric"], i["overrides"]) for i in listed] == [
        ("t1", "power", True),
        ("t1", "temp", True),
        ("t1", "torque", False),
    ]


def test_a_platform_admin_key_edits_any_tenant_and_the_defaults(api: Api, database: DatabaseHandle) -> None:
    default = ok(api.platform.put("/v1/catalog/metrics/co2", {"unit": "ppm", "tenant_id": "*"}), 201)
    assert default == item(stored(database, "*", "co2"))
    assert (default["tenant_id"], default["source"], default["updated_by"]) == ("*", "api", "platform-team")

    flux = ok(api.platform.put("/v1/catalog/metrics/flux", {"unit": "Wb", "tenant_id": "t2"}))
    assert flux == item(stored(database, "t2", "flux"))
    assert (flux["unit"], flux["updated_by"]) == ("Wb", "platform-team")

    # the new default applies to every tenant at once
    assert [i["metric"] for i in ok(api.t2.get("/v1/catalog/metrics"))["items"]] == ["co2", "flux", "power", "temp"]

    response = api.platform.put("/v1/catalog/metrics/co2", {"unit": "ppm"})
    assert_422(response, ["body", "tenant_id"], "tenant_id is required with an admin key ('*' = the defaults)")


def test_a_tenant_key_cannot_edit_another_tenant_or_the_defaults(api: Api, database: DatabaseHandle) -> None:
    before = everything(database)
    response = api.t1_catalog.put("/v1/catalog/metrics/flux", {"unit": "Wb", "tenant_id": "t2"})
    assert (response.status_code, response.json()) == (404, OTHER_TENANT)
    response = api.t1_catalog.put("/v1/catalog/metrics/power", {"unit": "W", "tenant_id": "*"})
    assert (response.status_code, response.json()) == (403, DEFAULTS_FORBIDDEN)
    response = api.t1_catalog.delete("/v1/catalog/metrics/flux", tenant_id="t2")
    assert (response.status_code, response.json()) == (404, OTHER_TENANT)
    response = api.t1_catalog.delete("/v1/catalog/metrics/power", tenant_id="*")
    assert (response.status_code, response.json()) == (403, DEFAULTS_FORBIDDEN)
    response = api.t1_catalog.put("/v1/catalog/policy", {"unknown_metrics": "accept", "tenant_id": "t2"})
    assert (response.status_code, response.json()) == (404, OTHER_TENANT)
    response = api.t1_catalog.put("/v1/catalog/policy", {"unknown_metrics": "accept", "tenant_id": "*"})
    assert (response.status_code, response.json()) == (403, DEFAULTS_FORBIDDEN)
    assert everything(database) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/catalog/metrics/torque", {"unit": "Nm"}),
        ("PUT", "/v1/catalog/metrics/torque", {"min_value": 5, "max_value": 1, "colour": "red"}),  # scope first
        ("DELETE", "/v1/catalog/metrics/torque", None),
        ("PUT", "/v1/catalog/policy", {"unknown_metrics": "accept"}),
    ],
    ids=["put", "put-bad-body", "delete", "policy"],
)
def test_keys_without_the_admin_scope_are_403(
    api: Api, database: DatabaseHandle, method: str, path: str, body: dict | None
) -> None:
    before = everything(database)
    for caller in (api.t1, api.resolver, api.admin):
        response = caller.put(path, body) if method == "PUT" else caller.delete(path)
        assert (response.status_code, response.json()) == (403, NO_ADMIN_SCOPE)
    assert everything(database) == before


@pytest.mark.parametrize(
    ("path", "body", "loc", "msg"),
    [
        ("m", '{"min_value": 5, "max_value": 1}', ["body", "min_value"], "min_value 5.0 is above max_value 1.0"),
        ("m", '{"min_value": NaN}', ["body", "min_value"], "Input should be a finite number"),
        ("m", '{"max_value": Infinity}', ["body", "max_value"], "Input should be a finite number"),
        ("m", '{"max_value": 1e400}', ["body", "max_value"], "Input should be a finite number"),
        (
            "m",
            '{"min_value": "low"}',
            ["body", "min_value"],
            "Input should be a valid number, unable to parse string as a number",
        ),
        ("m", '{"unit": "k\\u0000W"}', ["body", "unit"], "Value error, must not contain a NUL character"),
        ("m", '{"unit": " "}', ["body", "unit"], "Value error, must not be blank"),
        ("m", '{"unit": "' + "u" * 65 + '"}', ["body", "unit"], "String should have at most 64 characters"),
        ("m", '{"description": "a\\u0000"}', ["body", "description"], "Value error, must not contain a NUL character"),
        (
            "m",
            '{"description": "' + "d" * 2001 + '"}',
            ["body", "description"],
            "String should have at most 2000 characters",
        ),
        ("m", '{"tenant_id": "t1\\u0000"}', ["body", "tenant_id"], "Value error, must not contain a NUL character"),
        ("m", '{"tenant_id": ""}', ["body", "tenant_id"], "Value error, must not be blank"),
        ("m", '{"colour": "red"}', ["body", "colour"], "Extra inputs are not permitted"),
        ("m", "[1]", ["body"], "Input should be a valid dictionary or object to extract fields from"),
        ("a%00b", "{}", ["path", "metric"], "metric must not contain a NUL character"),
        ("%20%20", "{}", ["path", "metric"], "metric must not be blank"),
        ("x" * 201, "{}", ["path", "metric"], "String should have at most 200 characters"),
    ],
    ids=[
        "min-above-max",
        "nan",
        "infinity",
        "overflow",
        "not-a-number",
        "unit-nul",
        "unit-blank",
        "unit-too-long",
        "description-nul",
        "description-too-long",
        "tenant-nul",
        "tenant-empty",
        "unknown-field",
        "not-an-object",
        "metric-nul",
        "metric-blank",
        "metric-too-long",
    ],
)
def test_put_422(api: Api, database: DatabaseHandle, path: str, body: str, loc: list, msg: str) -> None:
    before = everything(database)
    assert_422(api.t1_catalog.put_raw(f"/v1/catalog/metrics/{path}", body), loc, msg)
    assert everything(database) == before


def test_put_of_a_metric_name_at_the_length_limit(api: Api, database: DatabaseHandle) -> None:
    name = "x" * 200
    assert ok(api.t1_catalog.put(f"/v1/catalog/metrics/{name}", {}), 201) == item(stored(database, "t1", name))


def test_put_min_equal_to_max_is_a_range_of_one_value(api: Api, database: DatabaseHandle) -> None:
    body = ok(api.t1_catalog.put("/v1/catalog/metrics/setpoint", {"min_value": 7.5, "max_value": 7.5}), 201)
    assert (body["min_value"], body["max_value"]) == (7.5, 7.5)


# ------------------------------------------------------------------------------------------------
# DELETE /v1/catalog/metrics/{metric}
# ------------------------------------------------------------------------------------------------


def test_delete_a_tenant_entry_then_again(api: Api, database: DatabaseHandle) -> None:
    response = api.t1_catalog.delete("/v1/catalog/metrics/torque")
    assert (response.status_code, response.content) == (204, b"")
    assert stored(database, "t1", "torque") is None

    response = api.t1_catalog.delete("/v1/catalog/metrics/torque", tenant_id="t1")
    assert (response.status_code, response.json()) == (404, {"detail": "tenant 't1' has no entry for metric 'torque'"})

    # removing t1's own temp brings the default back for t1
    assert api.t1_catalog.delete("/v1/catalog/metrics/temp").status_code == 204
    assert ok(api.t1.get("/v1/catalog/metrics")) == page("t1", T1_POLICY, item(POWER), item(TEMP))


def test_a_tenant_key_never_deletes_a_default(api: Api, database: DatabaseHandle) -> None:
    response = api.t1_catalog.delete("/v1/catalog/metrics/power")
    assert (response.status_code, response.json()) == (
        404,
        {
            "detail": "tenant 't1' has no entry for metric 'power' (it is a platform default: only a platform admin "
            "key removes it)"
        },
    )
    assert stored(database, "*", "power") == POWER


def test_a_platform_admin_key_deletes_a_default_or_a_tenants_entry(api: Api, database: DatabaseHandle) -> None:
    assert api.platform.delete("/v1/catalog/metrics/power", tenant_id="*").status_code == 204
    assert api.platform.delete("/v1/catalog/metrics/flux", tenant_id="t2").status_code == 204
    assert ok(api.t2.get("/v1/catalog/metrics")) == page("t2", T2_POLICY, item(TEMP))
    response = api.platform.delete("/v1/catalog/metrics/power", tenant_id="*")
    assert (response.status_code, response.json()) == (404, {"detail": "tenant '*' has no entry for metric 'power'"})
    response = api.platform.delete("/v1/catalog/metrics/temp", tenant_id="t2")
    assert (response.status_code, response.json()) == (
        404,
        {"detail": "tenant 't2' has no entry for metric 'temp' (it is a platform default: tenant_id '*' removes it)"},
    )
    response = api.platform.delete("/v1/catalog/metrics/temp")
    assert_422(response, ["query", "tenant_id"], "tenant_id is required with an admin key ('*' = the defaults)")


@pytest.mark.parametrize(
    ("path", "params", "loc", "msg"),
    [
        ("a%00b", {}, ["path", "metric"], "metric must not contain a NUL character"),
        ("%20", {}, ["path", "metric"], "metric must not be blank"),
        ("x" * 201, {}, ["path", "metric"], "String should have at most 200 characters"),
        ("torque", {"tenant_id": "t1\x00"}, ["query", "tenant_id"], "String should match pattern '^[^\\x00]+$'"),
        ("torque", {"tenant_id": ""}, ["query", "tenant_id"], "String should have at least 1 character"),
    ],
    ids=["metric-nul", "metric-blank", "metric-too-long", "tenant-nul", "tenant-empty"],
)
def test_delete_422(api: Api, database: DatabaseHandle, path: str, params: dict, loc: list, msg: str) -> None:
    before = everything(database)
    assert_422(api.t1_catalog.delete(f"/v1/catalog/metrics/{path}", **params), loc, msg)
    assert everything(database) == before


# ------------------------------------------------------------------------------------------------
# GET and PUT /v1/catalog/policy
# ------------------------------------------------------------------------------------------------


def test_get_policy(api: Api) -> None:
    assert ok(api.t1.get("/v1/catalog/policy")) == T1_POLICY
    assert ok(api.t2.get("/v1/catalog/policy")) == T2_POLICY
    assert ok(api.admin.get("/v1/catalog/policy", tenant_id="t2")) == T2_POLICY
    assert ok(api.admin.get("/v1/catalog/policy", tenant_id="*")) == DEFAULT_POLICY
    assert_422(api.admin.get("/v1/catalog/policy"), ["query", "tenant_id"], "tenant_id is required with an admin key")
    response = api.t1.get("/v1/catalog/policy", tenant_id="t2")
    assert (response.status_code, response.json()) == (404, OTHER_TENANT)


def test_put_policy_of_the_own_tenant_then_of_the_default(api: Api, database: DatabaseHandle) -> None:
    before = db_now(database)
    body = ok(api.t1_catalog.put("/v1/catalog/policy", {"unknown_metrics": "accept"}))
    (at,) = database.query(
        "SELECT updated_at FROM analytics.metric_policy WHERE tenant_id = 't1' AND unknown_metrics = 'accept' "
        "AND updated_by = 't1-catalog'"
    )[0]
    assert before <= at <= db_now(database)
    assert body == {
        "tenant_id": "t1",
        "unknown_metrics": "accept",
        "own": True,
        "updated_at": iso(at),
        "updated_by": "t1-catalog",
    }
    assert ok(api.t1.get("/v1/catalog/metrics"))["policy"] == body

    # the default changes for tenants without their own (t9), not for t1 or t2
    default = ok(api.platform.put("/v1/catalog/policy", {"unknown_metrics": "accept", "tenant_id": "*"}))
    assert (default["tenant_id"], default["unknown_metrics"], default["own"], default["updated_by"]) == (
        "*",
        "accept",
        True,
        "platform-team",
    )
    assert ok(api.admin.get("/v1/catalog/policy", tenant_id="t9")) == {**default, "tenant_id": "t9", "own": False}
    assert ok(api.t2.get("/v1/catalog/policy")) == T2_POLICY
    response = api.platform.put("/v1/catalog/policy", {"unknown_metrics": "reject"})
    assert_422(response, ["body", "tenant_id"], "tenant_id is required with an admin key ('*' = the defaults)")


@pytest.mark.parametrize(
    ("body", "loc", "msg"),
    [
        ({}, ["body", "unknown_metrics"], "Field required"),
        ({"unknown_metrics": "maybe"}, ["body", "unknown_metrics"], "Input should be 'reject' or 'accept'"),
        (
            {"unknown_metrics": "accept", "tenant_id": "t1\x00"},
            ["body", "tenant_id"],
            "Value error, must not contain a NUL character",
        ),
        (
            {"unknown_metrics": "accept", "tenant_id": "t" * 201},
            ["body", "tenant_id"],
            "String should have at most 200 characters",
        ),
        ({"unknown_metrics": "accept", "who": "me"}, ["body", "who"], "Extra inputs are not permitted"),
    ],
    ids=["missing", "unknown", "tenant-nul", "tenant-too-long", "unknown-field"],
)
def test_put_policy_422(api: Api, database: DatabaseHandle, body: dict, loc: list, msg: str) -> None:
    before = everything(database)
    assert_422(api.t1_catalog.put("/v1/catalog/policy", body), loc, msg)
    assert everything(database) == before


# ------------------------------------------------------------------------------------------------
# an edit reaches the API's own metric check at once (the catalogue cache is dropped)
# ------------------------------------------------------------------------------------------------

READINGS = {"factory_id": "f1", "machine_id": "m1", "start": iso(T0), "end": iso(T0 + timedelta(hours=1))}


def add_reading(database: DatabaseHandle, tenant: str, metric: str, value: float) -> dict:
    """One raw reading at T0 + 5 min, and its JSON item."""
    row = {
        "time": T0 + timedelta(minutes=5),
        "tenant_id": tenant,
        "factory_id": "f1",
        "machine_id": "m1",
        "sensor_id": "s1",
        "metric": metric,
        "value": value,
        "unit": "rpm",
    }
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric, "
            "value, unit, payload, event_id, schema_version, dedup_key, topic, kafka_partition, kafka_offset) VALUES "
            "(%(time)s, %(tenant_id)s, %(factory_id)s, %(machine_id)s, %(sensor_id)s, %(metric)s, %(value)s, "
            "%(unit)s, NULL, NULL, 1, %(tenant_id)s || '|' || %(metric)s, 'sensors.device.readings', 0, 0)",
            row,
        )
    return {**row, "time": iso(row["time"]), "payload": None, "event_id": None}


def readings(caller: Caller, metric: str) -> httpx.Response:
    return caller.get("/v1/readings", metric=metric, **READINGS)


def test_a_metric_put_is_queryable_at_once_by_its_tenant_only(api: Api, database: DatabaseHandle) -> None:
    mine = add_reading(database, "t1", "spindle_speed", 12000.0)
    add_reading(database, "t2", "spindle_speed", 9000.0)
    unknown = "unknown metric 'spindle_speed'; known: "
    assert_422(readings(api.t1, "spindle_speed"), ["query", "metric"], unknown + "power, temp, torque")

    ok(api.t1_catalog.put("/v1/catalog/metrics/spindle_speed", {"unit": "rpm"}), 201)
    assert ok(readings(api.t1, "spindle_speed")) == {"items": [mine], "count": 1, "next_cursor": None}
    assert_422(readings(api.t2, "spindle_speed"), ["query", "metric"], unknown + "flux, power, temp")
    response = api.admin.get("/v1/readings", metric="spindle_speed", tenant_id="t2", **READINGS)
    assert_422(response, ["query", "metric"], unknown + "flux, power, temp")

    # and gone again once deleted
    assert api.t1_catalog.delete("/v1/catalog/metrics/spindle_speed").status_code == 204
    assert_422(readings(api.t1, "spindle_speed"), ["query", "metric"], unknown + "power, temp, torque")


def test_under_the_accept_policy_any_metric_passes_the_check(api: Api, database: DatabaseHandle) -> None:
    mine = add_reading(database, "t1", "anything_at_all", 1.5)
    assert readings(api.t1, "anything_at_all").status_code == 422
    ok(api.t1_catalog.put("/v1/catalog/policy", {"unknown_metrics": "accept"}))
    assert ok(readings(api.t1, "anything_at_all")) == {"items": [mine], "count": 1, "next_cursor": None}
    assert ok(readings(api.t1, "never_sent")) == {"items": [], "count": 0, "next_cursor": None}
    assert_422(
        readings(api.t2, "never_sent"), ["query", "metric"], "unknown metric 'never_sent'; known: flux, power, temp"
    )

    # back to reject: the check applies again
    ok(api.t1_catalog.put("/v1/catalog/policy", {"unknown_metrics": "reject"}))
    assert readings(api.t1, "anything_at_all").status_code == 422


# ------------------------------------------------------------------------------------------------
# without a writer login, edits are 503 and reads work
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("catalog")
def test_edits_are_503_without_a_write_database(database: DatabaseHandle) -> None:
    before = everything(database)
    with running(app_settings(database, writer=False), database) as api:
        for response in (
            api.t1_catalog.put("/v1/catalog/metrics/torque", {"unit": "Nm"}),
            api.t1_catalog.delete("/v1/catalog/metrics/torque"),
            api.t1_catalog.put("/v1/catalog/policy", {"unknown_metrics": "accept"}),
        ):
            assert (response.status_code, response.json()) == (503, NO_WRITER)
        assert ok(api.t1.get("/v1/catalog/policy")) == T1_POLICY
        assert ok(api.t1.get("/v1/catalog/metrics"))["count"] == 3
    assert everything(database) == before


@pytest.mark.usefixtures("catalog")
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/catalog/metrics"),
        ("PUT", "/v1/catalog/metrics/torque"),
        ("DELETE", "/v1/catalog/metrics/torque"),
        ("GET", "/v1/catalog/policy"),
        ("PUT", "/v1/catalog/policy"),
    ],
)
def test_401_without_a_key(api: Api, method: str, path: str) -> None:
    client = api.t1.client
    response = client.request(method, path, json={} if method == "PUT" else None)
    assert (response.status_code, response.json()) == (
        401,
        {"detail": "missing API key: send it in the X-API-Key header"},
    )


# ------------------------------------------------------------------------------------------------
# the api-keys CLI: --catalog-admin
# ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("cli_env", "catalog")
def test_cli_creates_a_catalog_admin_key(database: DatabaseHandle, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(capsys, "api-keys", "create", "--name", "cat", "--tenant", "t1", "--catalog-admin")
    assert (code, err) == (0, "")
    key = out[-1]
    key_id = key.split("_")[1]
    assert out == [f"key {key_id} for tenant t1, scopes read,admin; store it now, it is not shown again:", key]
    assert database.query("SELECT tenant_id, scopes FROM analytics.api_keys WHERE key_id = %s", (key_id,)) == [
        ("t1", ["admin", "read"])
    ]
    with running(app_settings(database), database) as api:
        holder = Caller(api.t1.client, key)
        assert ok(holder.put("/v1/catalog/metrics/torque", {"unit": "kNm"}))["updated_by"] == "cat"

    code, out, _err = run_cli(capsys, "api-keys", "create", "--name", "ops", "--admin", "--resolve", "--catalog-admin")
    ops_id = out[-1].split("_")[1]
    assert (code, out[0]) == (
        0,
        f"key {ops_id} for every tenant (admin), scopes read,resolve,admin; store it now, it is not shown again:",
    )

    # the listing: scopes in the order create prints them, the column as wide as the longest
    _code, listed, _err = run_cli(capsys, "api-keys", "list")
    rows = {
        key_id: created.astimezone(UTC)
        for key_id, created in database.query("SELECT key_id, created_at FROM analytics.api_keys")
    }
    assert listed[0] == f"{'key_id':14} {'tenant':12} {'scopes':18} {'created':20} {'expires':20} {'revoked':20} name"
    assert f"{key_id:14} {'t1':12} {'read,admin':18} {rows[key_id]:%Y-%m-%dT%H:%M:%SZ} {'-':20} {'-':20} cat" in listed
    ops = (
        f"{ops_id:14} {'(admin)':12} {'read,resolve,admin':18} {rows[ops_id]:%Y-%m-%dT%H:%M:%SZ} {'-':20} {'-':20} ops"
    )
    assert ops in listed
    assert len(listed) == 1 + len(rows)
