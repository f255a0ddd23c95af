"""The FastAPI application: read-only, versioned under /v1, JSON errors, Prometheus metrics.

Run it with `uvicorn --factory analytics_platform.api.app:create_app` (the devstack does). It
connects with API_DATABASE_URL, the read-only role; it never writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from prometheus_client import CollectorRegistry

from analytics_platform.api.db import Database, DatabaseDown
from analytics_platform.api.metrics import HttpMetrics, PipelineCollector
from analytics_platform.api.routes import health, readings
from analytics_platform.api.routes.health import BrokerProbe
from analytics_platform.contracts.registry import load_known_metrics
from analytics_platform.settings import PlatformSettings, get_settings

log = logging.getLogger("analytics_platform.api")


def create_app(settings: PlatformSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    db = Database(settings.api_url())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db.open()
        yield
        db.close()

    app = FastAPI(
        title="Plant analytics API",
        version="1.0.0",
        description="Read-only access to plant analytics: raw readings, aggregates, KPIs, anomalies.",
        lifespan=lifespan,
    )
    registry = CollectorRegistry()
    http = HttpMetrics(registry)
    registry.register(PipelineCollector(db))
    app.state.settings = settings
    app.state.db = db
    app.state.registry = registry
    app.state.broker = BrokerProbe(settings.kafka_client_config())
    app.state.known_metrics = load_known_metrics(settings.metrics_catalog)

    app.include_router(health.router)
    app.include_router(readings.router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.exception_handler(DatabaseDown)
    async def database_down(_request: Request, exc: DatabaseDown) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the API log"}, status_code=500)

    @app.middleware("http")
    async def measure(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = _route_template(request)
            http.requests.labels(route, request.method, str(status)).inc()
            http.latency.labels(route, request.method).observe(time.perf_counter() - started)

    return app


def _route_template(request: Request) -> str:
    """Label metrics by route template (/v1/readings), never by raw path: bounded cardinality.

    The router records the matched route in the request scope."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"
