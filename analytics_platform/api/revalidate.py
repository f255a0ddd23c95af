"""GETs of /v1/agg and /v1/kpi without FastAPI's per-request machinery.

A dashboard revalidates its closed ranges over and over (`If-None-Match`, answered 304 when nothing
was re-materialised: api/caching.py), and fifty dashboards showing the same machine pages ask the
same plain GETs over and over (answered from the response cache: api/response_cache.py). Profiled
under load, such an answer spent about half of the API's CPU in FastAPI resolving the route's
signature for the request (walking each parameter's annotation and aliases, then validating it),
several times what the tag query and the tag cost: a repeated 30-day page of /v1/agg took 1.0 ms of
CPU in the app through FastAPI and 0.6 ms here (docs/benchmarks.md, REST API). This middleware
answers those requests, with or without `If-None-Match`, by calling the very same endpoint with the
very same values:

* each query parameter is read as FastAPI reads it (the last value of its name; absent: the
  default, or no fast path when it is required) and validated by the route's own pydantic field, so
  a value is accepted, converted and constrained exactly as the route declares it;
* the key goes through `authenticate` itself (its cache, its database lookup on a miss);
* an endpoint written in stages (api/stages.py) has its checks, its state statement (through the event
  loop's pool) and its decision run on the event loop, and goes to the thread pool only to read the
  rows of an answer it must make; any other endpoint runs in the thread pool, as FastAPI runs a sync
  endpoint. The Response (a 304, the response cache's answer, or one made afresh) is sent as it is, as
  FastAPI sends a returned Response.

Anything else is left to FastAPI untouched: a request that is not a GET of one of those paths, a
parameter the route's field rejects, a missing or refused key, and any exception of the endpoint (a
404, a 422...). FastAPI then answers it from the start, so every error keeps its exact status,
message and headers (the endpoint only reads; running it twice is harmless, and every error but the
database's comes before the rows are read). The one exception answered here is the database being
down, by the app's own handler (the same 503): going through FastAPI would wait API_DB_WAIT_S for a
connection a second time.
Answers are never staler than the route's: it is the route's own code that decides them, and it reads
the state (what was materialised) on every request as it does under FastAPI.

It sits innermost of the app's middleware, so CORS, gzip, the request metrics (labelled with the
route, which it sets in the scope as the router would) and tracing see its answers as any other."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from time import perf_counter
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi._compat.shared import field_annotation_is_sequence
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.utils import _get_param_aliases, _get_param_model, _is_json_field
from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams

from analytics_platform.api import auth
from analytics_platform.api.db import DatabaseDown, WouldBlock
from analytics_platform.api.metrics import HttpMetrics
from analytics_platform.api.middleware import App, Compress, Receive, Scope, Send
from analytics_platform.api.response_cache import KeptAnswer
from analytics_platform.api.stages import StateRead, Steps, advance_on_loop, rest

IMMUTABLE = (type(None), bool, int, float, str, bytes)  # a default FastAPI's deepcopy would hand back as it is
NO_VALUE = object()  # a parameter the fast path cannot fill as FastAPI would: left to FastAPI
SHAREABLE = (*IMMUTABLE, datetime, date, time, timedelta, Decimal)  # values one request cannot change for another
QUERIES_KEPT = 4096  # query strings read and validated, per route and worker (emptied when full)


TRIED = "analytics.fast_path_tried"  # in the scope: the front asked the fast path, which left it to FastAPI


class Unsupported(ValueError):
    """A route whose signature the fast path does not read exactly as FastAPI does."""


@dataclass(frozen=True)
class Param:
    name: str
    field: Any  # FastAPI's ModelField of the parameter: its pydantic validation, default and constraints

    def value(self, received: Any) -> Any:
        raw = received.get(self.name)
        if raw is None:
            if self.field.field_info.is_required():
                return NO_VALUE
            default = self.field.default
            if not isinstance(default, IMMUTABLE):  # FastAPI hands each request a copy of its own
                default = copy.deepcopy(default)
            if not self.field.field_info.validate_default:
                return default
            raw = default
        value, errors = self.field.validate(raw, {}, loc=("query", self.name))
        return NO_VALUE if errors else value


@dataclass(frozen=True)
class FastRoute:
    """One route as the fast path calls it: the endpoint, its query parameters, where the request
    and the caller go."""

    route: APIRoute
    endpoint: Callable[..., Any]
    params: Sequence[Param]
    request_name: str
    caller_name: str
    stages: Callable[..., Steps] | None  # the endpoint in stages (api/stages.py); None: it runs whole
    queries: dict[bytes, tuple[QueryParams, dict[str, Any] | None]] = dataclass_field(
        default_factory=dict, compare=False
    )

    def read_query(self, query_string: bytes) -> tuple[QueryParams, dict[str, Any] | None]:
        """The query string as FastAPI reads it, and the values of the route's parameters (None: one the
        fast path cannot fill, left to FastAPI). Kept by the raw query string: dashboards ask the same few
        URLs again and again, and parsing and validating them took ~15 % of a repeat's CPU. Reading is
        pure, so a kept result is what reading again would give; it is kept only when every value is
        immutable (each request gets a copy of the dict, never of a value another request could change)."""
        known = self.queries.get(query_string)
        if known is not None:
            return known
        received = QueryParams(query_string)
        values: dict[str, Any] | None = {}
        for param in self.params:
            value = param.value(received)
            if value is NO_VALUE:
                values = None
                break
            values[param.name] = value
        found = (received, values)
        if values is None or all(isinstance(v, SHAREABLE) for v in values.values()):
            if len(self.queries) >= QUERIES_KEPT:
                self.queries.clear()
            self.queries[query_string] = found
        return found

    @classmethod
    def of(cls, route: APIRoute) -> FastRoute:
        """The route as the fast path reads it, or Unsupported when its signature has anything the
        fast path does not read as FastAPI does: only plain query parameters (no alias, model, list
        or JSON), the Request, and the Caller dependency (authenticate with the key header)."""
        dependant = route.dependant
        if route.methods != {"GET"} or route.path_regex.pattern != f"^{route.path}$":
            raise Unsupported(f"{route.path}: only a GET of a fixed path")
        others = (dependant.path_params, dependant.header_params, dependant.cookie_params, dependant.body_params)
        if any(others) or dependant.request_param_name is None or dependant.response_param_name is not None:
            raise Unsupported(f"{route.path}: only query parameters, the request and the caller")
        if dependant.background_tasks_param_name or dependant.security_scopes_param_name:
            raise Unsupported(f"{route.path}: no background tasks or security scopes")
        if [d.call for d in dependant.dependencies] != [auth.authenticate]:
            raise Unsupported(f"{route.path}: the one dependency must be the caller (authenticate)")
        caller = dependant.dependencies[0]
        inner = caller.dependencies
        if caller.query_params or len(inner) != 1 or inner[0].call is not auth.api_key_header or inner[0].dependencies:
            raise Unsupported(f"{route.path}: the caller must be authenticate with the key header alone")
        params = []
        for field in dependant.query_params:
            plain = _get_param_aliases(field) == [(field.name, field.name)]
            if not plain or _get_param_model(field) is not None or _is_json_field(field):
                raise Unsupported(f"{route.path}: parameter {field.name} is not a plain query parameter")
            if field.field_info.default_factory is not None:
                raise Unsupported(f"{route.path}: parameter {field.name} has a default factory")
            if field_annotation_is_sequence(field.field_info.annotation):
                raise Unsupported(f"{route.path}: parameter {field.name} is a list")
            params.append(Param(field.name, field))
        stages = getattr(route.endpoint, "stages", None)
        if stages is not None and list(inspect.signature(stages).parameters) != list(
            inspect.signature(route.endpoint).parameters
        ):
            raise Unsupported(f"{route.path}: its stages must take the endpoint's own parameters")
        return cls(route, route.endpoint, tuple(params), dependant.request_param_name, caller.name or "", stages)


def fast_routes(app: FastAPI, paths: Sequence[str]) -> dict[str, FastRoute]:
    """The app's GET routes of `paths`, each as the fast path calls it (Unsupported if one is not)."""
    found: dict[str, FastRoute] = {}
    for route in _api_routes(app.router.routes):
        if route.path in paths and "GET" in route.methods:
            found[route.path] = FastRoute.of(route)
    missing = set(paths) - set(found)
    if missing:
        raise Unsupported(f"no GET route for {', '.join(sorted(missing))}")
    return found


def _api_routes(routes: Sequence[Any]) -> list[APIRoute]:
    """Every APIRoute, those of included routers too."""
    out: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            out.append(route)
        elif hasattr(route, "original_router"):  # FastAPI 0.16x keeps an included router as a branch
            out += _api_routes(route.original_router.routes)
    return out


class Revalidate:
    """The fast path of GETs (see the module's docstring) of `routes` (fast_routes: built
    with the app, so a route signature it cannot read stops the app from starting, never a request)."""

    def __init__(self, app: App, fastapi: FastAPI, routes: dict[str, FastRoute]) -> None:
        self.app = app
        self.fastapi = fastapi
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fresh = not scope.get("root_path") and not scope.get(TRIED)
        if scope["type"] == "http" and scope["method"] == "GET" and fresh:
            route = self.routes.get(scope["path"])
            if route is not None and not self.fastapi.dependency_overrides:
                response = await self._answer(route, scope, receive)
                if response is not None:
                    scope.update(route=route.route, endpoint=route.endpoint, path_params={})  # as the router
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, route: FastRoute, scope: Scope, receive: Receive) -> Response | None:
        """The endpoint's Response, or None to leave the request to FastAPI."""
        received, read = route.read_query(scope.get("query_string", b""))
        if read is None:
            return None
        values = dict(read)
        request = Request(scope, receive)
        # Starlette's own cache of the parsed query (what request.query_params returns), filled with the same
        # parse of the same bytes; immutable, so requests may share it. Were the attribute renamed, the
        # query would merely be parsed again.
        request._query_params = received
        try:
            caller = await auth.authenticate(request, await auth.api_key_header(request))
            values[route.request_name] = request
            values[route.caller_name] = caller
            db = self.fastapi.state.db
            if route.stages is not None and db.reads_on_loop():
                response = await self._in_stages(route, values)
            else:
                response = await run_in_threadpool(route.endpoint, **values)
        except DatabaseDown as exc:  # the app's own 503, at once: asking FastAPI would wait for the pool again
            return await self.fastapi.exception_handlers[DatabaseDown](request, exc)
        except Exception:  # FastAPI answers it from the start, exactly as without this path
            return None
        return response if isinstance(response, Response) else None  # anything else FastAPI would serialise

    async def _in_stages(self, route: FastRoute, values: dict[str, Any]) -> Any:
        """The route's answer with its checks, state and decision on the event loop (api/stages.py): a
        repeat or a 304 never leaves it; only a read of rows (an answer to make) goes to the thread pool.
        A stage that would read through the sync pool on the loop (WouldBlock: a stale catalogue...)
        makes the whole endpoint run in the thread pool instead, as without stages."""
        assert route.stages is not None
        db = self.fastapi.state.db
        steps = route.stages(**values)
        try:
            done, step = advance_on_loop(steps, None)
            if not done and isinstance(step, StateRead):
                done, step = advance_on_loop(steps, await db.first_row(step.query, step.params))
        except WouldBlock:
            steps.close()
            return await run_in_threadpool(route.endpoint, **values)
        if done:
            return step
        return await run_in_threadpool(rest, db, steps, step)


class Front:
    """The fast path ahead of the app's whole middleware stack, for what no middleware changes: a GET it
    answers skips FastAPI's and Starlette's layers (the error middleware, FastAPI's telemetry and body
    limit, the request metrics' and gzip's wrappers of `send`), a tenth of a repeat's CPU in the app, and a
    kept answer goes out as its pre-built ASGI messages (api/response_cache.py: KeptAnswer.send_kept).
    What those layers would do to its answer it does itself: the request metrics (HttpMetrics.observe,
    the same labels) and gzip (Compress, for an answer it made; a kept answer or a 304 is already in the
    coding the request accepts). Installed only where no other layer has a say (create_app): not while
    tracing is on (the request's span holds everything), nor with CORS on (its middleware adds `Vary:
    Origin` to every answer). What it leaves to FastAPI passes the stack untouched, marked so that
    Revalidate does not ask the same question twice."""

    def __init__(self, fastapi: FastAPI, routes: dict[str, FastRoute], http: HttpMetrics) -> None:
        self.path = Revalidate(_never, fastapi, routes)
        self.http = http
        self.compress = Compress(_respond)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Whether it answered the request (False: the app's to answer, as without it)."""
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return False
        route = self.path.routes.get(scope["path"])
        if route is None or self.path.fastapi.dependency_overrides:
            return False
        started = perf_counter()
        response = await self.path._answer(route, scope, receive)
        if response is None:
            scope[TRIED] = True
            return False
        scope.update(route=route.route, endpoint=route.endpoint, path_params={})  # as the router
        status = 500  # what an exception while sending becomes, as MeasureRequests counts it
        try:
            if not (isinstance(response, KeptAnswer) and await response.send_kept(send)):
                scope[RESPONSE] = response
                await self.compress(scope, receive, send)
            status = response.status_code
        finally:
            self.http.observe(route.route.path, "GET", status, perf_counter() - started)
        return True


RESPONSE = "analytics.fast_path_response"  # in the scope: the front's answer, for Compress to send


async def _respond(scope: Scope, receive: Receive, send: Send) -> None:
    await scope.pop(RESPONSE)(scope, receive, send)


async def _never(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the front's fast path never passes a request on")
