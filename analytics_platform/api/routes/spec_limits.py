"""GET /v1/spec-limits: the lower / upper / target limits lab analytes and sweep metrics are judged
against, per tenant and factory ('*' = every factory), with the time each version took effect."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from analytics_platform.api.auth import Caller, tenant_scope
from analytics_platform.api.models import ERRORS, OTHER_TENANT, SpecLimitPage
from analytics_platform.api.params import Cursor, Limit, OptionalIdentifier, TenantParam, page_limit
from analytics_platform.api.query import Select
from analytics_platform.api.respond import keyset, page_response

router = APIRouter(prefix="/v1", tags=["spec limits"])

KEY = ("tenant_id", "factory_id", "scope", "name", "valid_from_key")
COLUMNS = (
    "tenant_id",
    "factory_id",
    "scope",
    "name",
    "lower_limit",
    "upper_limit",
    "target",
    "unit",
    "valid_from",
    "updated_at",
)
# '-infinity' (valid since always) has no Python datetime: it is served as null, and sorts first
_SELECT = (
    "tenant_id, factory_id, scope, name, lower_limit, upper_limit, target, unit, "
    "CASE WHEN isfinite(valid_from) THEN valid_from END AS valid_from, updated_at, "
    "CASE WHEN isfinite(valid_from) THEN valid_from ELSE TIMESTAMPTZ '0001-01-01 00:00:00+00' END AS valid_from_key"
)
_FROM = "analytics.analytics_spec_limits"
_KEY_SQL = (
    "tenant_id",
    "factory_id",
    "scope",
    "name",
    "CASE WHEN isfinite(valid_from) THEN valid_from ELSE TIMESTAMPTZ '0001-01-01 00:00:00+00' END",
)


@router.get(
    "/spec-limits",
    response_model=SpecLimitPage,
    summary="Spec limits of lab analytes and sweep metrics",
    description="Every version of each limit (`valid_from`); `factory_id` also lists the tenant-wide ('*') rows.",
    responses={**ERRORS, **OTHER_TENANT},
)
def spec_limits(
    request: Request,
    caller: Caller,
    tenant_id: TenantParam = None,
    factory_id: OptionalIdentifier = None,
    scope: Annotated[Literal["analyte", "metric"] | None, Query()] = None,
    name: OptionalIdentifier = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Response:
    state = request.app.state
    tenant = tenant_scope(caller, tenant_id, required=False)
    page_limit(limit, state.settings.api_page_limit_max)
    select = Select(_SELECT, _FROM).eq("tenant_id", tenant).eq("scope", scope).eq("name", name)
    if factory_id is not None:
        select.cond("factory_id IN ({}, '*')", factory_id)
    select.after(_KEY_SQL, keyset(cursor, (str, str, str, str, datetime)))
    query, params = select.sql(_KEY_SQL, limit + 1)
    with state.db.connection() as conn:
        rows = conn.execute(query, params).fetchall()
    for row in rows:
        row["valid_from_key"] = row["valid_from_key"].astimezone(UTC)
    return page_response(request, rows, limit=limit, key=KEY, columns=COLUMNS, csv_allowed=False)
