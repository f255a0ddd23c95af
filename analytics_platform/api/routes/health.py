"""GET /v1/health (database and broker status) and GET /v1/metrics (Prometheus)."""

from __future__ import annotations

import time
from typing import Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from analytics_platform.api.db import DatabaseDown

router = APIRouter(prefix="/v1", tags=["operations"])


class ComponentStatus(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: Literal["ok", "degraded", "down"]
    database: ComponentStatus
    broker: ComponentStatus
    timescaledb: bool | None = None


class BrokerProbe:
    """Asks the Kafka cluster for metadata at most every `ttl` seconds (health is polled often)."""

    def __init__(self, config: dict, ttl: float = 5.0) -> None:
        # log_level 0: an unreachable broker is reported in the response, not as librdkafka noise
        self.config = {**config, "socket.connection.setup.timeout.ms": 2000, "log_level": 0}
        self.ttl = ttl
        self._checked = 0.0
        self._status = ComponentStatus(ok=False, detail="not checked yet")

    def status(self) -> ComponentStatus:
        if time.monotonic() - self._checked < self.ttl:
            return self._status
        try:
            metadata = AdminClient(self.config).list_topics(timeout=2)
            self._status = ComponentStatus(ok=True, detail=f"{len(metadata.topics)} topics")
        except KafkaException as exc:
            self._status = ComponentStatus(
                ok=False, detail=f"{self.config['bootstrap.servers']} unreachable ({exc.args[0].str()})"
            )
        self._checked = time.monotonic()
        return self._status


@router.get(
    "/health",
    response_model=Health,
    summary="Database and broker status",
    responses={503: {"model": Health, "description": "The database is unreachable"}},
)
def health(request: Request) -> JSONResponse:
    state = request.app.state
    timescale = None
    try:
        with state.db.connection() as conn:
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') AS ts"
            ).fetchone()
        timescale = bool(row["ts"])
        database = ComponentStatus(ok=True, detail="reachable")
    except DatabaseDown as exc:
        database = ComponentStatus(ok=False, detail=str(exc))
    broker = state.broker.status()
    status = "ok" if database.ok and broker.ok else ("degraded" if database.ok else "down")
    body = Health(status=status, database=database, broker=broker, timescaledb=timescale)
    return JSONResponse(body.model_dump(), status_code=200 if database.ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
