"""One reading's trace, with the SDK's in-memory exporter: the edge agent's engine receives it (a
span, and its `traceparent` as the Kafka header), the real drain lands it from the real broker into
PostgreSQL (a span per micro-batch linked to the message's trace), the drain sensor reports the hour
and the hourly aggregates run for it (a span per asset partition linked to the batch), and the API
answers it (a request span continuing the caller's trace, with a child span per SQL statement). And
the JSON log lines of that whole run carry the fields exactly, and none of the configured secrets."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from confluent_kafka import Consumer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from analytics_platform import observability
from analytics_platform.api.middleware import TraceRequests
from analytics_platform.defs.partitions import partition_key
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import running
from analytics_platform_tests.support.edge import agent_config, assign_all, wait_for
from analytics_platform_tests.support.readings import drain, materialize
from analytics_platform_tests.support.stack import DatabaseHandle, domain_drain, domain_topic
from edge_agents import telemetry
from edge_agents.engine import Engine, SubmitResult

WEBHOOK_TOKEN = "T0TRACE/B0TRACE/hookSecretToken77"
CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # the caller's own trace (W3C example)
GATEWAY = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"  # a device that sent its own context


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the platform's hooks and the edge agent, into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observability.use_tracer_provider(provider)
    telemetry.use_tracer_provider(provider)
    yield exporter
    observability.use_tracer_provider(None)
    telemetry.use_tracer_provider(None)


@pytest.fixture
def log_lines(settings: PlatformSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The process's logs as JSON lines into a buffer, with a webhook URL configured (a secret)."""
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"https://hooks.example.com/services/{WEBHOOK_TOKEN}")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    observability.setup_logging("INFO", "json", observability.secrets_of(settings), stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def send(settings: PlatformSettings, tmp_path: Path, reading: dict, traceparent: str | None = None) -> None:
    """One reading through the edge agent's engine (the code path every source hands readings to,
    with the sender's `traceparent` as the HTTP source passes it), until the broker acknowledged it."""
    config = agent_config(
        settings.kafka_brokers,
        settings.kafka_topic_prefix,
        tmp_path / "q.db",
        [{"name": "sim", "type": "simulator"}],
        shutdown_timeout_s=1,
    )
    engine = Engine(config)
    engine.start()
    try:
        done = threading.Event()
        verdict: list[SubmitResult] = []
        engine.submit(
            "gateway-http",
            "sensor",
            [reading],
            done=lambda r: (verdict.append(r), done.set()),
            traceparent=traceparent,
        )
        assert done.wait(60)
        assert verdict[0].accepted == 1
        wait_for(lambda: engine.depth == 0, 30, "the broker's acknowledgement")
    finally:
        engine.stop()


def by_name(exported: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in exported if s.name.startswith(prefix)]


def linked(span: ReadableSpan) -> set[tuple[int, int]]:
    return {(link.context.trace_id, link.context.span_id) for link in span.links}


def ids(span: ReadableSpan) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


def test_one_readings_trace_from_the_edge_agent_to_the_aggregate_run_and_the_api(
    spans: InMemorySpanExporter,
    log_lines: io.StringIO,
    settings: PlatformSettings,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    database: DatabaseHandle,
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    reading = {
        "time": now.isoformat().replace("+00:00", "Z"),
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "mc-01",
        "sensor_id": "s-001",
        "metric": "temp",
        "value": 21.5,
    }
    # the edge agent's engine (the code path every source hands readings to) sends it to the broker
    topic = domain_topic(settings)
    send(settings, tmp_path, reading, GATEWAY)
    [edge] = by_name(spans.get_finished_spans(), "edge_agent receive sensor")
    assert edge.kind is SpanKind.PRODUCER
    assert edge.attributes["edge.source"] == "gateway-http"
    assert edge.attributes["messaging.batch.message_count"] == 1
    # the device's trace continues in the agent
    assert edge.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert edge.parent is not None and edge.parent.span_id == 0x00F067AA0BA902B7
    header = observability.traceparent(edge.context)

    # the message on the wire carries the header
    consumer = Consumer({"bootstrap.servers": settings.kafka_brokers, "group.id": "trace-check"})
    try:
        assign_all(consumer, topic)
        message = wait_for(lambda: next(iter(consumer.consume(1, timeout=1)), None), 30, "the message")
        assert message.headers() == [("traceparent", header.encode())]
    finally:
        consumer.close()

    # the drain sensor's pass lands it: one batch span, linked to the reading's trace
    hour = partition_key(now.replace(minute=0))
    assert drain(defs, instance, domains=("sensor",)) == {"raw_sensor_readings": [hour]}
    [batch] = by_name(spans.get_finished_spans(), "drain sensor batch")
    assert batch.kind is SpanKind.CONSUMER
    assert linked(batch) == {ids(edge)}
    assert batch.attributes["messaging.batch.message_count"] == 1
    assert batch.attributes["analytics.drain.rows"] == 1
    assert batch.context.trace_id != edge.context.trace_id  # a batch is its own trace, linked to many
    assert database.scalar("SELECT count(*) FROM analytics.raw_sensor_readings WHERE tenant_id = 't1'") == 1

    # the hour's aggregate run: a span for the asset partition, linked to the batch
    result = materialize(defs, instance, ["sensor_window_aggregates"], hour)
    [asset] = by_name(spans.get_finished_spans(), "asset sensor_window_aggregates")
    assert linked(asset) == {ids(batch)}
    assert asset.attributes["dagster.partition"] == hour
    assert asset.attributes["dagster.run_id"] == result.run_id
    minute = database.query(
        "SELECT count_n, avg_v FROM analytics.analytics_agg WHERE tenant_id = 't1' AND window_s = 60 "
        "AND bucket_start = %s",
        (now,),
    )
    assert minute == [(1, 21.5)]

    # the API: the caller's trace continues in a request span, with the SQL as its children
    spans.clear()
    with running(settings, database) as api:
        response = api.client.get(
            "/v1/agg",
            params={
                "factory_id": "f1",
                "machine_id": "mc-01",
                "metric": "temp",
                "window_s": 60,
                "start": now.isoformat(),
                "end": (now + timedelta(minutes=1)).isoformat(),
            },
            headers={"X-API-Key": api.t1.key, "traceparent": CALLER},
        )
        assert response.status_code == 200, response.text
        assert [(row["count"], row["avg"]) for row in response.json()["items"]] == [(1, 21.5)]
    exported = spans.get_finished_spans()
    [request] = [s for s in exported if s.kind is SpanKind.SERVER]
    assert request.name == "GET /v1/agg"
    assert request.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert request.parent is not None and request.parent.span_id == 0xB7AD6B7169203331
    assert request.attributes["http.route"] == "/v1/agg"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["analytics.tenant"] == "t1"
    statements = [s for s in exported if s.kind is SpanKind.CLIENT and s.context.trace_id == request.context.trace_id]
    assert statements, "no SQL span in the request's trace"
    assert all(s.attributes["db.system.name"] == "postgresql" for s in statements)
    assert any("analytics_agg" in s.attributes["db.query.text"] for s in statements)
    assert all(_descends_from(s, request, exported) for s in statements)

    # the run's JSON log lines: exact fields, and no secret (database password, webhook token)
    # a library that logs the URLs it was given (as some HTTP and database clients do on failure)
    logging.getLogger("some.client").warning(
        "retrying %s and %s", database.pipeline_url, f"https://hooks.example.com/services/{WEBHOOK_TOKEN}"
    )
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    allowed = {"ts", "level", "logger", "msg", "tenant", "partition", "run", "trace_id", "span_id", "exc"}
    assert all({"ts", "level", "logger", "msg"} <= set(line) <= allowed for line in lines)
    assert all(line["level"] in ("debug", "info", "warning", "error", "critical") for line in lines)
    # the lines logged inside the aggregate run say which run, partition and trace
    run_id = f"{asset.context.trace_id:032x}"
    inside = [line for line in lines if line.get("run") == result.run_id]
    assert all(line["partition"] == hour and line["trace_id"] == run_id for line in inside)
    assert {k: v for k, v in inside[0].items() if k != "ts"} == {
        "level": "info",
        "logger": "analytics_platform.defs.tracing",
        "msg": f"sensor_window_aggregates {hour}: traced, linked to 1 drain batch(es)",
        "partition": hour,
        "run": result.run_id,
        "trace_id": run_id,
        "span_id": f"{asset.context.span_id:016x}",
    }
    assert any(line["logger"] == "httpx" and "/v1/agg" in line["msg"] for line in lines)  # the API's client too
    password = database.pipeline_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    text = log_lines.getvalue()
    assert password not in text and WEBHOOK_TOKEN not in text
    assert lines[-1]["msg"] == "retrying " + database.pipeline_url.replace(f":{password}@", ":***@") + " and ***"


def _descends_from(span: ReadableSpan, ancestor: ReadableSpan, exported: tuple[ReadableSpan, ...]) -> bool:
    by_id = {s.context.span_id: s for s in exported}
    current = span
    while current.parent is not None:
        if current.parent.span_id == ancestor.context.span_id:
            return True
        current = by_id.get(current.parent.span_id)  # type: ignore[assignment]
        if current is None:
            return False
    return False


def test_tracing_off_sends_no_header_and_reports_no_trace(
    settings: PlatformSettings, database: DatabaseHandle, tmp_path: Path
) -> None:
    """Off (the default): the engine stamps nothing, the drain links nothing, the API adds no middleware."""
    assert not observability.tracing_on() and not telemetry.tracing_on()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    reading = {
        "time": now.isoformat().replace("+00:00", "Z"),
        "tenant_id": "t2",
        "factory_id": "f1",
        "machine_id": "mc-02",
        "sensor_id": "s-001",
        "metric": "temp",
        "value": 3.0,
    }
    send(settings, tmp_path, reading)
    consumer = Consumer({"bootstrap.servers": settings.kafka_brokers, "group.id": "trace-check-off"})
    try:
        assign_all(consumer, domain_topic(settings))
        message = wait_for(lambda: next(iter(consumer.consume(1, timeout=1)), None), 30, "the message")
        assert message.headers() is None
    finally:
        consumer.close()
    report = domain_drain(settings).run(budget_s=30)
    assert (report.rows, report.traces) == (1, {})
    with running(settings, database) as api:
        assert not any(m.cls is TraceRequests for m in api.client.app.user_middleware)
