"""Logs and the tracing switch (analytics_platform/observability.py, edge_agents/telemetry.py): the JSON
line's exact fields, the same as the edge agent's; secrets never reach a line; tracing is off, with
nothing of the SDK imported, unless the OTEL_* variables ask for it; trace contexts from the wire are
parsed strictly."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from analytics_platform import observability
from analytics_platform.settings import REPO_ROOT, PlatformSettings
from edge_agents import logs as edge_logs
from edge_agents import telemetry

DB_PASSWORD = "s3cr3t-Db-pw"
SASL_PASSWORD = "sasl-Pw-0042"
SLACK_TOKEN = "T0001/B0002/XyZsecretToken42"
SLACK_URL = f"https://hooks.slack.com/services/{SLACK_TOKEN}"
WEBHOOK_URL = "https://hooks.example.com/notify?token=wh-Tok-9931"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    observability.use_tracer_provider(sdk)
    yield sdk, exporter
    observability.use_tracer_provider(None)


def record(message: str, *args: object, exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("analytics_platform.ingest.drain", logging.WARNING, __file__, 1, message, args, None)
    rec.created = 1_764_950_400.123456  # 2025-12-05T16:00:00.123Z
    if exc is not None:
        rec.exc_info = (type(exc), exc, exc.__traceback__)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_a_json_line_has_the_edge_agents_fields_and_where_it_comes_from() -> None:
    formatter = observability.JSONFormatter(observability.Redactor())
    assert json.loads(formatter.format(record("batch of %d", 3))) == {
        "ts": "2025-12-05T16:00:00.123Z",
        "level": "warning",
        "logger": "analytics_platform.ingest.drain",
        "msg": "batch of 3",
    }
    with observability.log_context(tenant="t1", run="run-1"), observability.log_context(partition="2025-12-05-16:00"):
        line = json.loads(formatter.format(record("hour done")))
    assert line == {
        "ts": "2025-12-05T16:00:00.123Z",
        "level": "warning",
        "logger": "analytics_platform.ingest.drain",
        "msg": "hour done",
        "tenant": "t1",
        "partition": "2025-12-05-16:00",
        "run": "run-1",
    }
    # `extra=` names the tenant of one line; outside the block the context is gone
    assert json.loads(formatter.format(record("x", tenant="t2")))["tenant"] == "t2"
    assert "run" not in json.loads(formatter.format(record("x")))


def test_the_platform_and_the_edge_agent_write_the_same_fields(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    platform = observability.JSONFormatter(observability.Redactor())
    edge = edge_logs.JSONFormatter()
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        failed = exc
    with observability.tracer("test").start_as_current_span("work") as span:
        ours = json.loads(platform.format(record("failed: %s", "x", exc=failed)))
        theirs = json.loads(edge.format(record("failed: %s", "x", exc=failed)))
    assert ours == theirs
    assert set(ours) == {"ts", "level", "logger", "msg", "trace_id", "span_id", "exc"}
    assert ours["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert ours["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert ours["exc"].endswith("RuntimeError: boom")


def secret_settings(tmp_path: Path) -> PlatformSettings:
    alerts = tmp_path / "alerts.yaml"
    alerts.write_text("channels:\n  ops: {kind: webhook, url_env: OPS_HOOK}\n")
    return PlatformSettings(
        database_url=f"postgresql://analytics:{DB_PASSWORD}@db.internal:5432/analytics",
        kafka_sasl_password=SASL_PASSWORD,
        alerts_config=alerts,
    )


SECRETS = (DB_PASSWORD, SASL_PASSWORD, SLACK_TOKEN, "wh-Tok-9931")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_secret_reaches_a_log_line(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    monkeypatch.setenv("ALERT_SLACK_URL", SLACK_URL)
    monkeypatch.setenv("OPS_HOOK", WEBHOOK_URL)  # named by the alerts configuration only
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=collector-Key-31")
    settings = secret_settings(tmp_path)
    stream = io.StringIO()
    observability.setup_logging(settings.log_level, fmt, observability.secrets_of(settings), stream=stream)
    log = logging.getLogger("analytics_platform.test")
    log.warning("connecting to %s", settings.database_url.get_secret_value())
    log.warning("password %s rejected", DB_PASSWORD)
    log.warning("SASL login with %s", SASL_PASSWORD)
    log.error("delivery to %s failed", SLACK_URL)
    log.error("delivery to %s failed", WEBHOOK_URL)
    log.info("another URL: postgresql://someone:0ther-Pw@elsewhere/db")  # a password nobody configured
    log.info("dsn host=db password=kv-Pw-77 dbname=x; https://h.example/x?token=q-Tok-5&a=1")
    log.info("exporter headers: x-api-key=collector-Key-31")
    try:
        raise ConnectionError(f"cannot reach {WEBHOOK_URL}")
    except ConnectionError:
        log.exception("alert channel down")
    text = stream.getvalue()
    for secret in (*SECRETS, "0ther-Pw", "kv-Pw-77", "q-Tok-5", "collector-Key-31"):
        assert secret not in text
    assert "postgresql://analytics:***@db.internal:5432/analytics" in text
    assert "postgresql://someone:***@elsewhere/db" in text
    if fmt == "json":
        parsed = [json.loads(line) for line in text.splitlines()]
        assert [p["msg"] for p in parsed] == [
            "connecting to postgresql://analytics:***@db.internal:5432/analytics",
            "password *** rejected",
            "SASL login with ***",
            "delivery to *** failed",
            "delivery to *** failed",
            "another URL: postgresql://someone:***@elsewhere/db",
            "dsn host=db password=*** dbname=x; https://h.example/x?token=***&a=1",
            "exporter headers: ***",
            "alert channel down",
        ]
        assert "ConnectionError: cannot reach ***" in parsed[-1]["exc"]


def test_setup_logging_replaces_its_own_handler_and_keeps_others(restore_logging: None) -> None:
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    first = observability.setup_logging("DEBUG", "json", stream=io.StringIO())
    second = observability.setup_logging("warning", "text", stream=io.StringIO())
    assert other in root.handlers and second in root.handlers and first not in root.handlers
    assert root.level == logging.WARNING


def test_great_expectations_start_up_chatter_stays_out_of_info_logs(restore_logging: None) -> None:
    """GX logs each decorated function and metric it registers at INFO (~30 lines per process):
    below WARNING only when LOG_LEVEL is debug; the platform's own INFO lines still pass."""
    stream = io.StringIO()
    observability.setup_logging("INFO", "text", stream=stream)
    logging.getLogger("great_expectations._docs_decorators").info("Skipping registering function get_context")
    logging.getLogger("great_expectations.expectations.registry").warning("a real problem")
    logging.getLogger("analytics_platform.test").info("ours")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "a real problem" in lines[0] and "ours" in lines[1]
    debug = io.StringIO()
    observability.setup_logging("DEBUG", "text", stream=debug)
    logging.getLogger("great_expectations._docs_decorators").info("Skipping registering function get_context")
    assert "Skipping registering function get_context" in debug.getvalue()
    logging.getLogger("great_expectations").setLevel(logging.NOTSET)


def test_log_settings_are_validated() -> None:
    assert PlatformSettings(log_level="debug", log_format="text").log_format == "text"
    with pytest.raises(ValueError, match="log_format"):
        PlatformSettings(log_format="xml")
    with pytest.raises(ValueError, match="log_level"):
        PlatformSettings(log_level="loud")


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, True),
    ],
)
def test_tracing_is_on_only_when_the_otel_variables_configure_an_exporter(environ: dict, on: bool) -> None:
    assert observability.tracing_requested(environ) is on
    assert telemetry.tracing_requested(environ) is on


_OFF_BY_DEFAULT = """
import json, os, sys
for name in list(os.environ):
    if name.startswith("OTEL_"):
        del os.environ[name]
from analytics_platform import observability
from analytics_platform.api.app import create_app
from analytics_platform.settings import REPO_ROOT, PlatformSettings
from edge_agents import telemetry
create_app(PlatformSettings())
on = [observability.tracing_on(), telemetry.setup("edge-01"), telemetry.tracing_on()]
print(json.dumps([on, sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk") or "exporter" in m)]))
"""


def test_off_by_default_no_sdk_is_loaded() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _OFF_BY_DEFAULT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[False, False, False], []]


def test_an_unknown_exporter_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER: unsupported exporter 'zipkin'"):
        telemetry.setup("edge-01", {"OTEL_TRACES_EXPORTER": "zipkin"})
    assert not telemetry.tracing_on()


def test_traceparent_round_trip_and_strict_parsing() -> None:
    value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    context = observability.parse_traceparent(value)
    assert context is not None and context.is_remote
    assert (context.trace_id, context.span_id, int(context.trace_flags)) == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        1,
    )
    assert observability.traceparent(context) == value
    assert telemetry.traceparent(context) == value
    assert observability.parse_traceparent(value.encode()) == context
    for bad in (
        None,
        "",
        "garbage",
        b"\xff\xfe",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # unknown version
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
    ):
        assert observability.parse_traceparent(bad) is None


def test_links_are_distinct_valid_and_bounded() -> None:
    a = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    b = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b8-01"
    links = observability.links([a, b.encode(), a, None, "bad", b])
    assert [(link.context.trace_id, link.context.span_id) for link in links] == [
        (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7),
        (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B8),
    ]
    many = [f"00-{i + 1:032x}-{i + 1:016x}-01" for i in range(300)]
    assert len(observability.links(many)) == observability.MAX_LINKS == 128


def test_the_agents_span_continues_a_senders_trace_and_ignores_a_malformed_one() -> None:
    exporter = InMemorySpanExporter()
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(sdk)
    try:
        sender = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        child = telemetry.receive_span("http", "sensor", 3, 1_764_950_400.0, 1_764_950_400_002_000_000, sender)
        orphan = telemetry.receive_span("http", "sensor", 1, 1_764_950_400.0, 1_764_950_400_001_000_000, "00-zz-1-01")
    finally:
        telemetry.use_tracer_provider(None)
    first, second = exporter.get_finished_spans()
    assert child == telemetry.traceparent(first.context) and child.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert first.parent is not None and first.parent.span_id == 0x00F067AA0BA902B7
    assert (first.start_time, first.end_time) == (1_764_950_400_000_000_000, 1_764_950_400_002_000_000)
    assert dict(first.attributes) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "create",
        "messaging.batch.message_count": 3,
        "edge.source": "http",
        "analytics.domain": "sensor",
    }
    assert second.parent is None and orphan == telemetry.traceparent(second.context)


_EXPORT = """
import os, sys
from analytics_platform import observability
assert observability.setup_tracing("analytics-test")
with observability.tracer("t").start_as_current_span("drain sensor batch"):
    pass
from opentelemetry import trace
trace.get_tracer_provider().shutdown()  # flushes the batch processor, as at process exit
"""


def test_the_otlp_exporter_posts_spans_where_the_otel_variables_say() -> None:
    """The real exporter, configured only by OTEL_* variables, against a collector stand-in on
    loopback: OTLP/HTTP protobuf on /v1/traces, the service name and resource attributes applied."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        }
        done = subprocess.run(
            [sys.executable, "-c", _EXPORT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    finally:
        server.shutdown()
        server.server_close()
    [(path, content_type, body)] = received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "analytics-test"
    assert resource["deployment.environment"] == "test"
    assert [s.name for scope in resource_spans.scope_spans for s in scope.spans] == ["drain sensor batch"]
