"""The metrics catalogue as tenant data: GET /v1/catalog/metrics and /v1/catalog/policy (any key),
PUT / DELETE /v1/catalog/metrics/{metric} and PUT /v1/catalog/policy (keys with the `admin` scope).

Tenant '*' holds the platform defaults; a tenant's own entry adds a metric for it or replaces a
default's unit, range and description (sql/08_metric_catalog.sql). A tenant key with the `admin`
scope edits its own tenant only; an admin key (no tenant) with it edits any tenant and the '*'
defaults. Edits go through the writer pool (the analytics_resolver role) with the same helpers as
`analytics-platform metrics ...` (ingest/catalog.py), so the API and the CLI cannot disagree on
what an edit is, and then drop the API's catalogue cache, so /v1/agg and /v1/readings know a new
metric at once. The drain re-reads the tables on every pass; readings rejected before the metric
existed come back with `analytics-platform rejects readmit`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from psycopg.rows import tuple_row

from analytics_platform.api.auth import Caller, require_scope, tenant_scope
from analytics_platform.api.db import DatabaseDown
from analytics_platform.api.errors import invalid
from analytics_platform.api.keys import Principal
from analytics_platform.api.models import (
    BAD_JSON,
    ERRORS,
    OTHER_TENANT,
    CatalogEntry,
    CatalogEntryBody,
    CatalogPage,
    ErrorBody,
    MetricPolicy,
    PolicyBody,
)
from analytics_platform.api.respond import CSV_RESPONSE, json_response, page_response
from analytics_platform.contracts.catalog import REJECT, WILDCARD, CatalogError, MetricEntry
from analytics_platform.ingest.catalog import remove_entry, set_policy, upsert_entry

router = APIRouter(prefix="/v1/catalog", tags=["metrics catalogue"])

COLUMNS = tuple(CatalogEntry.model_fields)
NO_WRITER = "editing the metrics catalogue is not configured on this API (set API_WRITE_DATABASE_URL)"
READMIT = (
    "The drain judges with the change from its next pass (seconds); readings rejected meanwhile as unknown_metric "
    "are re-admitted with `analytics-platform rejects readmit --reason unknown_metric`."
)
WHO = (
    "Needs a key with the `admin` scope (`api-keys create --catalog-admin`): a tenant key edits its own tenant "
    "(`tenant_id` may be left out; another tenant is a 404, the defaults '*' a 403); an admin key names "
    "`tenant_id`, '*' for the platform defaults."
)
EDIT_FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "The key lacks the `admin` scope, or a tenant key names the defaults '*'"}
}
EDIT_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "`tenant_id` names another tenant than the key's, or no such entry"}
}
MetricName = Annotated[str, Path(max_length=200, description="The metric name, as readings carry it")]
# `:path`, so a name holding a slash (a plant tag such as "Line1/Flow", sent percent-encoded as %2F, which the
# server decodes before routing) is one metric rather than a 404 of the route
METRIC_PATH = "/metrics/{metric:path}"
ListTenant = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00]+$",
        description="The key's own tenant when omitted (another tenant is a 404). An admin key names a tenant "
        "('*': the defaults alone), or leaves it out for every entry of every tenant.",
    ),
]
PolicyTenant = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00]+$",
        description="The key's own tenant when omitted (another tenant is a 404); required with an admin key, "
        "'*' = the default policy.",
    ),
]
EditTenant = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00]+$",
        description="A tenant key: its own tenant (the default; another is a 404, '*' a 403). An admin key: "
        "required, '*' = the platform defaults.",
    ),
]

# An entry with `overrides`: a tenant's own entry where a default of the same name exists.
_ENTRY = (
    "SELECT c.tenant_id, c.metric, c.unit, c.min_value, c.max_value, c.description, c.source, "
    "(c.tenant_id <> '*' AND EXISTS (SELECT 1 FROM analytics.metric_catalog d "
    "WHERE d.tenant_id = '*' AND d.metric = c.metric)) AS overrides, c.updated_at, c.updated_by "
    "FROM analytics.metric_catalog c "
)
# byte order ("C"), so the order does not depend on the database's collation
_ORDER = 'ORDER BY c.metric COLLATE "C", c.tenant_id <> \'*\', c.tenant_id COLLATE "C"'
# the tenant's own entries, and the defaults it does not override
_OF_TENANT = (
    "WHERE c.tenant_id = %(tenant)s OR (c.tenant_id = '*' AND NOT EXISTS (SELECT 1 FROM analytics.metric_catalog o "
    "WHERE o.tenant_id = %(tenant)s AND o.metric = c.metric)) "
)


def catalog_admin(caller: Caller) -> Principal:
    """The caller, when its key has the `admin` scope. A dependency, so that a key without it gets
    the 403 before its body or parameters are judged: their errors are no business of that key."""
    require_scope(caller, "admin")
    return caller


CatalogAdmin = Annotated[Principal, Depends(catalog_admin)]


def _entries(conn: psycopg.Connection, tenant: str | None) -> list[dict]:
    """The entries that apply to `tenant` (its own, and the defaults it does not replace), or every
    entry of every tenant for None."""
    where = _OF_TENANT if tenant is not None else ""
    return conn.execute(_ENTRY + where + _ORDER, {"tenant": tenant}).fetchall()


def _entry(conn: psycopg.Connection, tenant: str, metric: str) -> dict:
    return conn.execute(_ENTRY + "WHERE c.tenant_id = %s AND c.metric = %s", (tenant, metric)).fetchone()


def _policy(conn: psycopg.Connection, tenant: str) -> dict:
    """The tenant's policy (its own row, else the default '*' row), as MetricPolicy. Without even a
    default row the drain rejects (contracts.catalog), and so does this answer."""
    row = conn.execute(
        "SELECT tenant_id, unknown_metrics, updated_at, updated_by FROM analytics.metric_policy "
        "WHERE tenant_id IN ('*', %s) ORDER BY tenant_id = '*' LIMIT 1",
        (tenant,),
    ).fetchone()
    if row is None:
        return {"tenant_id": tenant, "unknown_metrics": REJECT, "own": False, "updated_at": None, "updated_by": None}
    return {
        "tenant_id": tenant,
        "unknown_metrics": row["unknown_metrics"],
        "own": row["tenant_id"] == tenant,
        "updated_at": row["updated_at"],
        "updated_by": row["updated_by"],
    }


def _edited_tenant(caller: Principal, tenant_id: str | None, location: str) -> str:
    """The tenant an edit applies to. The defaults are refused to a tenant key with a 403 rather
    than the 404 of another tenant: '*' is no secret (every listing shows it), and the answer
    should say why and what to do instead."""
    if caller.is_admin:
        if tenant_id is None:
            raise invalid(
                "tenant_id", "tenant_id is required with an admin key ('*' = the defaults)", location=location
            )
        return tenant_id
    if tenant_id == WILDCARD:
        raise HTTPException(
            403,
            f"a tenant key cannot edit the platform defaults (tenant '*'); leave tenant_id out to edit those of "
            f"tenant {caller.tenant_id!r}",
        )
    tenant_scope(caller, tenant_id, required=True, location=location)  # another tenant: 404
    return str(caller.tenant_id)


def _metric_name(metric: str) -> str:
    """The path's metric, checked as the catalogue's (and PostgreSQL text's) rules require."""
    if "\x00" in metric:
        raise invalid("metric", "metric must not contain a NUL character", location="path")
    if not metric.strip():
        raise invalid("metric", "metric must not be blank", location="path")
    return metric


@contextmanager
def _editing(request: Request) -> Iterator[psycopg.Connection]:
    """One transaction on the writer pool; afterwards the API's catalogue cache is dropped, so the
    next /v1/agg or /v1/readings request judges metrics with the edit."""
    writer = request.app.state.writer
    if writer is None:
        raise DatabaseDown(NO_WRITER)
    try:
        with writer.connection() as conn, conn.transaction():
            yield conn
    except psycopg.errors.InsufficientPrivilege as exc:
        first = (str(exc).strip().splitlines() or ["permission denied"])[0]
        raise DatabaseDown(f"the API's write role lacks a privilege ({first}); grant it analytics_resolver") from None
    finally:
        request.app.state.metric_catalog.invalidate()


@contextmanager
def _tuple_rows(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The pools hand out dict rows; the CLI's catalogue helpers index tuples."""
    previous = conn.row_factory
    conn.row_factory = tuple_row
    try:
        yield conn
    finally:
        conn.row_factory = previous


@router.get(
    "/metrics",
    response_model=CatalogPage,
    summary="The metrics catalogue of a tenant, and its unknown-metric policy",
    description=(
        "The metric names a tenant's readings may carry: the platform defaults (`tenant_id` '*') and the tenant's "
        "own entries, an own entry replacing the default of the same name (`overrides`). An admin key names the "
        "tenant with `tenant_id`, or leaves it out for every entry of every tenant. With the tenant's policy for "
        "metrics in neither (`policy`). One page (the catalogue is small): `next_cursor` is always null. "
        "`Accept: text/csv` returns the items as CSV."
    ),
    responses={**ERRORS, **OTHER_TENANT, 200: CSV_RESPONSE},
)
def metrics(request: Request, caller: Caller, tenant_id: ListTenant = None) -> Response:
    tenant = tenant_scope(caller, tenant_id, required=False)
    with request.app.state.db.connection() as conn:
        rows = _entries(conn, tenant)
        policy = _policy(conn, WILDCARD if tenant is None else tenant)
    extra = {"tenant_id": tenant, "policy": policy}
    return page_response(request, rows, limit=len(rows), key=(), columns=COLUMNS, extra=extra)


@router.put(
    METRIC_PATH,
    response_model=CatalogEntry,
    summary="Add or replace a catalogue entry",
    description=(
        "Adds the metric for the tenant (201) or replaces its entry (200): unit, plausible range and description; "
        "a field left out becomes null (not judged) or ''. A tenant's entry named like a default overrides it for "
        f"that tenant. {WHO} {READMIT}"
    ),
    responses={
        **ERRORS,
        **BAD_JSON,
        **EDIT_FORBIDDEN,
        **OTHER_TENANT,
        201: {"model": CatalogEntry, "description": "The entry was added"},
    },
)
def put_metric(request: Request, caller: CatalogAdmin, metric: MetricName, body: CatalogEntryBody) -> Response:
    tenant = _edited_tenant(caller, body.tenant_id, "body")
    _metric_name(metric)
    low, high = body.min_value, body.max_value
    if low is not None and high is not None and low > high:
        raise invalid("min_value", f"min_value {low!r} is above max_value {high!r}", location="body", value=low)
    entry = MetricEntry(tenant, metric, body.unit, low, high, body.description)
    try:
        entry.check()
    except CatalogError as exc:  # the same rules as the CLI's; the checks above already name the field
        raise invalid((), str(exc), location="body") from None
    with _editing(request) as conn:
        with _tuple_rows(conn):
            created = upsert_entry(conn, entry, source="api", by=caller.name)
        row = _entry(conn, tenant, metric)
    return json_response(row, status_code=201 if created else 200)


@router.delete(
    METRIC_PATH,
    status_code=204,
    response_class=Response,
    summary="Remove a catalogue entry",
    description=(
        "Removes the tenant's entry of the metric (the default of the same name, if any, applies again) or, with an "
        "admin key and `tenant_id` '*', a platform default. Readings already stored stay; new ones follow the "
        f"tenant's unknown-metric policy. {WHO}"
    ),
    responses={**ERRORS, **EDIT_FORBIDDEN, **EDIT_NOT_FOUND},
)
def delete_metric(request: Request, caller: CatalogAdmin, metric: MetricName, tenant_id: EditTenant = None) -> Response:
    tenant = _edited_tenant(caller, tenant_id, "query")
    _metric_name(metric)
    with _editing(request) as conn:
        if not remove_entry(conn, tenant, metric):
            detail = f"tenant {tenant!r} has no entry for metric {metric!r}"
            if tenant != WILDCARD and _entry(conn, WILDCARD, metric) is not None:
                removes = "tenant_id '*' removes it" if caller.is_admin else "only a platform admin key removes it"
                detail += f" (it is a platform default: {removes})"
            raise HTTPException(404, detail)
    return Response(status_code=204)


@router.get(
    "/policy",
    response_model=MetricPolicy,
    summary="A tenant's unknown-metric policy",
    description=(
        "What becomes of a reading whose metric is in neither the tenant's entries nor the defaults: `reject` or "
        "`accept`, the tenant's own policy or the default ('*') one (`own`). An admin key names `tenant_id` "
        "('*' = the default)."
    ),
    responses={**ERRORS, **OTHER_TENANT},
)
def policy(request: Request, caller: Caller, tenant_id: PolicyTenant = None) -> Response:
    tenant = str(tenant_scope(caller, tenant_id, required=True))  # a tenant key's own, or the one named
    with request.app.state.db.connection() as conn:
        return json_response(_policy(conn, tenant))


@router.put(
    "/policy",
    response_model=MetricPolicy,
    summary="Set a tenant's unknown-metric policy",
    description=(
        "`reject`: readings of metrics outside the tenant's catalogue are kept in the rejects (reason "
        "unknown_metric); `accept`: they are stored and aggregated, flagged uncatalogued, without a range check, "
        f"and /v1/agg and /v1/readings answer any metric name of the tenant. {WHO} {READMIT}"
    ),
    responses={**ERRORS, **BAD_JSON, **EDIT_FORBIDDEN, **OTHER_TENANT},
)
def put_policy(request: Request, caller: CatalogAdmin, body: PolicyBody) -> Response:
    tenant = _edited_tenant(caller, body.tenant_id, "body")
    with _editing(request) as conn:
        try:
            set_policy(conn, tenant, body.unknown_metrics, caller.name)
        except CatalogError as exc:
            raise invalid((), str(exc), location="body") from None
        row = _policy(conn, tenant)
    return json_response(row)
