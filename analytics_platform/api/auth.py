"""Who may call: an API key in the `X-API-Key` header, bound to one tenant (or an admin key).

Every data query takes its tenant from the key, never from the request alone: a tenant key asking
for another tenant gets 404, so it cannot even learn that the tenant exists. Verified keys are
cached for API_KEY_CACHE_S seconds (a revoked key stops working within that time) so that a
request costs no extra round trip to the database.

`authenticate` is a coroutine: a key found in the cache is checked on the event loop, and only a
lookup in the database goes to the thread pool. A sync dependency would cost every request a thread
hop of its own besides the endpoint's, the larger part of a cache hit's framework cost (a 304 of
/v1/agg; docs/benchmarks.md, REST API).
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader
from opentelemetry import trace

from analytics_platform.api.errors import invalid
from analytics_platform.api.keys import Principal, digest, find_principal, key_id_of

HEADER = "X-API-Key"
api_key_header = APIKeyHeader(
    name=HEADER,
    auto_error=False,
    description="An API key from `analytics-platform api-keys create`; bound to one tenant or admin.",
)
_CACHE_MAX = 10_000


class KeyCache:
    """Digest -> (principal or None, expiry). Unknown keys are cached too, so a client hammering
    with a bad key costs one query per TTL, not one per request."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[bytes, tuple[Principal | None, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bool, Principal | None]:
        entry = self._entries.get(digest(key))
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, key: str, principal: Principal | None) -> None:
        with self._lock:
            if len(self._entries) >= _CACHE_MAX:
                self._entries.clear()
            self._entries[digest(key)] = (principal, time.monotonic() + self.ttl_s)


async def authenticate(request: Request, api_key: Annotated[str | None, Security(api_key_header)]) -> Principal:
    if not api_key:
        raise HTTPException(401, f"missing API key: send it in the {HEADER} header", {"WWW-Authenticate": HEADER})
    if key_id_of(api_key) is None:
        raise HTTPException(401, "invalid API key", {"WWW-Authenticate": HEADER})
    state = request.app.state
    hit, principal = state.key_cache.get(api_key)
    if not hit:
        principal = await run_in_threadpool(look_up, state, api_key)
    if principal is None:
        raise HTTPException(401, "invalid, revoked or expired API key", {"WWW-Authenticate": HEADER})
    request.state.principal = principal
    return principal


def look_up(state: Any, api_key: str) -> Principal | None:
    """The key's principal from the database (None: unknown, revoked or expired), kept in the cache."""
    with state.db.connection() as conn:
        principal = find_principal(conn, api_key)
    state.key_cache.put(api_key, principal)
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


def tenant_scope(principal: Principal, tenant_id: str | None, *, required: bool, location: str = "query") -> str | None:
    """The tenant a query is filtered by. A tenant key always gets its own tenant (asking for
    another one is a 404); an admin key names the tenant, or reads every tenant where allowed."""
    if principal.tenant_id is not None:
        if tenant_id is not None and tenant_id != principal.tenant_id:
            raise HTTPException(404, f"tenant {tenant_id!r} not found")
        trace.get_current_span().set_attribute("analytics.tenant", principal.tenant_id)  # a no-op untraced
        return principal.tenant_id
    if tenant_id is None and required:
        raise invalid("tenant_id", "tenant_id is required with an admin key", location=location)
    if tenant_id is not None:
        trace.get_current_span().set_attribute("analytics.tenant", tenant_id)
    return tenant_id


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise HTTPException(403, f"this API key lacks the {scope!r} scope")
