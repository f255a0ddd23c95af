"""Where a reading's trace begins: the agent's span per received hand-over, and its W3C `traceparent`.

The gateway installs the edge agent without the platform, so this is the agent's own small copy of
the platform's tracing switch (`analytics_platform/observability.py`): tracing is off unless the
standard OTEL_* variables configure an exporter, and off, nothing of the SDK is imported and the
engine stamps no header. On, each hand-over from a source (an MQTT message, an HTTP request, a poll)
gets a span from its reception to its durable queueing, and every message it yields carries that
span's context in the queue file and, once sent, as its Kafka `traceparent` header.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TracerProvider,
    set_span_in_context,
    set_tracer_provider,
)

TRACEPARENT = "traceparent"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_provider: TracerProvider | None = None


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    """OTEL_SDK_DISABLED=true: off; else on when OTEL_TRACES_EXPORTER names an exporter other than
    `none` or an OTLP endpoint is set (the platform's rule, docs/operations.md)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()) or bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def setup(agent_id: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install the SDK with the OTEL_TRACES_EXPORTER exporters (otlp over HTTP, console) when
    `tracing_requested`; the service is `edge-agent` (OTEL_SERVICE_NAME overrides it) and the
    instance the agent id. True when tracing is on."""
    if _provider is not None:
        return True
    env = os.environ if environ is None else environ
    if not tracing_requested(env):
        return False
    from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporters: list[SpanExporter] = []
    for name in (n.strip().lower() for n in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name not in ("none", ""):
            raise ValueError(f"OTEL_TRACES_EXPORTER: unsupported exporter {name!r} (otlp, console or none)")
    attributes = {SERVICE_INSTANCE_ID: agent_id}
    if not env.get("OTEL_SERVICE_NAME", "").strip():
        attributes[SERVICE_NAME] = "edge-agent"
    provider = SdkTracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    set_tracer_provider(provider)
    use_tracer_provider(provider)
    return True


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace with `provider` (None: off); the tests pass one with an in-memory exporter."""
    global _provider
    _provider = provider


def tracing_on() -> bool:
    return _provider is not None


def _remote_parent(value: str | None) -> Context | None:
    """The context of a sender's `traceparent` (W3C, version 00), or None for a missing or malformed one
    (a header is the sender's data: a bad one starts a new trace, it does not refuse the readings)."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or not int(match.group(1), 16) or not int(match.group(2), 16):
        return None
    remote = SpanContext(
        int(match.group(1), 16),
        int(match.group(2), 16),
        is_remote=True,
        trace_flags=TraceFlags(int(match.group(3), 16)),
    )
    return set_span_in_context(NonRecordingSpan(remote))


def traceparent(context: SpanContext) -> str:
    """The W3C `traceparent` value (version 00) of a span context."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def receive_span(
    source: str, domain: str, messages: int, received_at: float, queued_ns: int, parent: str | None = None
) -> str:
    """Record one hand-over's span (received at `received_at`, durably queued at `queued_ns`; a child of
    the sender's `parent` context when it sent a valid one) and return the `traceparent` its messages
    carry."""
    assert _provider is not None
    span = _provider.get_tracer(__name__).start_span(
        f"edge_agent receive {domain}",
        context=_remote_parent(parent),
        kind=SpanKind.PRODUCER,
        start_time=int(received_at * 1e9),
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "create",
            "messaging.batch.message_count": messages,
            "edge.source": source,
            "analytics.domain": domain,
        },
    )
    span.end(end_time=max(queued_ns, int(received_at * 1e9)))
    return traceparent(span.get_span_context())
