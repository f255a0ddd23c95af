"""The FastAPI application: read-only, versioned under /v1, JSON errors, Prometheus metrics.

Run it with `python -m analytics_platform.api` (api/serve.py; the devstack does). It reads
with API_DATABASE_URL, the read-only role; its few writes (resolving anomalies, editing the metrics
catalogue, keys with the matching scope) go through API_WRITE_DATABASE_URL, a role granted exactly
those.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse
from prometheus_client import CollectorRegistry

from analytics_platform import observability
from analytics_platform.api.auth import KeyCache
from analytics_platform.api.db import Database, DatabaseDown
from analytics_platform.api.metric_catalog import MetricCatalogCache
from analytics_platform.api.metrics import HttpMetrics, PipelineCollector
from analytics_platform.api.middleware import Compress, MeasureRequests, Receive, Scope, Send, TraceRequests
from analytics_platform.api.response_cache import CacheMetrics, ResponseCache
from analytics_platform.api.revalidate import Front, Revalidate, fast_routes
from analytics_platform.api.routes import (
    agg,
    alerts,
    anomalies,
    baselines,
    catalog,
    fleet,
    forecasts,
    health,
    jobs,
    kpi,
    lab_agg,
    quality,
    readings,
    reports,
    spec_limits,
    trends,
)
from analytics_platform.api.routes.health import BrokerProbe
from analytics_platform.contracts.registry import registry as domain_registry
from analytics_platform.settings import PlatformSettings, get_settings
from analytics_platform.transforms import kpi_catalog
from analytics_platform.ui.web import mount_dashboard

log = logging.getLogger("analytics_platform.api")
REVALIDATED = ("/v1/agg", "/v1/kpi")  # conditional GETs answered by api/revalidate.py's fast path


_frozen = False


class PlatformAPI(FastAPI):
    """FastAPI with the fast path's front (api/revalidate.py) ahead of everything else: a GET it answers
    never enters the middleware stack. `front` None (the default, and while tracing is on): every
    request goes through the stack."""

    front: Front | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is not None and not self.root_path:
            scope["app"] = self  # as Starlette would (request.app); the router's too, as the router would
            scope.setdefault("router", self.router)
            if await front(scope, receive, send):
                return
        await super().__call__(scope, receive, send)


def freeze_startup_objects() -> None:
    """Move everything alive at the first start-up (modules, the app, its routes and models, which
    live as long as the process) out of the collector's sight: it stops walking them on every
    collection, which under load paused a worker for 140 ms at a time (docs/benchmarks.md).

    Once per process: a process that builds many apps (the tests) would otherwise freeze each
    one, and a frozen cycle is never collected when it becomes garbage."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


def create_app(settings: PlatformSettings | None = None) -> PlatformAPI:
    settings = settings or get_settings()
    observability.setup_process("analytics-api", settings)
    db = Database(settings.api_url(), timeout=settings.api_db_wait_s)
    write_url = settings.api_write_url()
    writer = Database(write_url, min_size=0, max_size=2) if write_url else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db.open()
        await db.open_async()  # the state of repeats and 304s, read on the loop (api/stages.py)
        freeze_startup_objects()
        yield
        await db.close_async()
        db.close()
        if writer is not None:
            writer.close()
        if app.state.run_submitter is not None:
            app.state.run_submitter.instance.dispose()

    app = PlatformAPI(
        title="Plant analytics API",
        version="1.0.0",
        description=(
            "Plant analytics under /v1: raw readings, window aggregates, event rollups, KPIs, anomalies, energy "
            "baselines and spec limits. Every data endpoint needs an API key in the `X-API-Key` header; the key's "
            "tenant filters every query. Times are ISO-8601, returned in UTC. Lists are pages: pass `next_cursor` "
            "back as `cursor`. Time series answer CSV to `Accept: text/csv`. Errors: 401 (key), 403 (scope), "
            "404 (unknown id or tenant), 422 (a parameter, with its location), 503 (database unavailable)."
        ),
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry off: the app traces itself (TraceRequests, while tracing is on) and
        # counts requests in its own metrics; left on, it asked the global providers on every request
        # (~3 % of a repeat's CPU) and would have recorded each request a second time.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    registry = CollectorRegistry()
    http = HttpMetrics(registry)
    contracts = domain_registry(settings.domain_modules).contracts
    raw_tables = [c.raw_table for d, c in contracts.items() if d in settings.domains_enabled]
    registry.register(PipelineCollector(db, raw_tables))
    app.state.settings = settings
    app.state.db = db
    app.state.registry = registry
    app.state.broker = BrokerProbe(settings.kafka_client_config())
    app.state.writer = writer
    app.state.key_cache = KeyCache(settings.api_key_cache_s)
    # answers of /v1/agg and /v1/kpi by what they were made from (api/response_cache.py)
    cache_metrics = CacheMetrics(registry)
    app.state.response_cache = ResponseCache(int(settings.api_response_cache_mb * 2**20), cache_metrics)
    app.state.metric_catalog = MetricCatalogCache()
    app.state.kpis = kpi_catalog.kpis(settings.kpi_drivers)  # what /v1/kpi serves and accepts
    app.state.kpi_names = kpi_catalog.kpi_names(settings.kpi_drivers)
    app.state.agg_daily_view = None  # looked up on first use
    app.state.clock = lambda: datetime.now(UTC)  # "now" of /v1/agg's provisional horizon; tests pin it
    app.state.run_submitter = None  # on-demand runs' Dagster instance, loaded (DAGSTER_HOME) at first use

    for module in (
        health,
        fleet,
        agg,
        lab_agg,
        kpi,
        quality,
        anomalies,
        baselines,
        spec_limits,
        readings,
        alerts,
        catalog,
        trends,
    ):
        app.include_router(module.router)
    app.include_router(reports.router)
    app.include_router(jobs.router)
    app.include_router(forecasts.router)
    # innermost: its answers pass CORS, gzip, the metrics and tracing like any other (api/revalidate.py)
    routes = fast_routes(app, REVALIDATED)
    app.add_middleware(Revalidate, fastapi=app, routes=routes)
    if settings.api_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api_cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type", "Accept"],
            expose_headers=["X-Next-Cursor", "Link"],
        )

    mount_dashboard(app, settings.dagster_ui_url, settings.ui_refresh_s, settings.ui_live_s)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.exception_handler(RequestValidationError)
    async def unprocessable(_request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler echoes the bad input as UTF-8 and fails (a 500) on a lone surrogate
        # such as "\ud800" in a JSON body; ASCII-escaped JSON can carry any input back
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(DatabaseDown)
    async def database_down(_request: Request, exc: DatabaseDown) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the API log"}, status_code=500)

    app.add_middleware(Compress)
    app.add_middleware(MeasureRequests, http=http)  # measures the compression too
    if observability.tracing_on():
        app.add_middleware(TraceRequests)  # outermost: the request's span holds everything else
    elif not settings.api_cors_origins:  # ahead of the stack: answered before any layer (api/revalidate.py)
        app.front = Front(app, routes, http)
    return app
