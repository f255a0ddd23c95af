"""Traces and structured logs of the platform's processes (drain, Dagster code, API, devstack).

Tracing is off unless the standard OpenTelemetry variables ask for it (`tracing_requested`): then,
and only then, the SDK and the OTLP exporter are imported and a tracer provider is installed. Off,
the hooks in the drain, the assets and the API test one module flag and do nothing else, so a
platform without a collector pays no per-message or per-request cost.

One reading's trace: the edge agent stamps a W3C `traceparent` header on each Kafka message; the
drain's span per micro-batch links to those contexts (a batch holds thousands of readings of many
traces, so they are links, not parents); the drain reports the batch span's context with the raw
partitions it touched, and the span of each asset partition computed from them links to it; the API
continues the caller's `traceparent` and wraps each SQL statement in a child span.

Logs: one JSON object per line with the edge agent's field names (`edge_agents/logs.py`): `ts`,
`level`, `logger`, `msg`, plus `tenant`, `partition`, `run` where the code knows them
(`log_context`) and `trace_id`/`span_id` inside a span. Every line passes a redactor that replaces
the configured secrets and any password in a URL, so a secret never reaches a log line.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import yaml
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, TraceFlags, Tracer, TracerProvider
from pydantic import SecretStr

TRACEPARENT = "traceparent"
# at most this many links per span: the SDK's default OTEL_SPAN_LINK_COUNT_LIMIT, and a batch of 20,000
# readings from one gateway mostly shares a few traces anyway
MAX_LINKS = 128
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

_provider: TracerProvider | None = None


# ----- tracing ---------------------------------------------------------------------------------


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the OTEL_* variables turn tracing on.

    OTEL_SDK_DISABLED=true always wins. Otherwise tracing is on when OTEL_TRACES_EXPORTER names an
    exporter other than `none`, or when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT
    or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). The specification's default exporter is `otlp`; the
    platform's default is off, because exporting to a collector that is not there costs a thread,
    retries and a warning per batch."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()) or bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def setup_tracing(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install the SDK's tracer provider when `tracing_requested`; True when tracing is on.

    The exporters are those OTEL_TRACES_EXPORTER lists (`otlp`, the default: OTLP over HTTP/protobuf,
    configured by OTEL_EXPORTER_OTLP_*; `console`); the sampler, resource attributes and batch
    processor limits come from their OTEL_* variables through the SDK itself. OTEL_SERVICE_NAME
    overrides `service_name`. Once per process: a second call keeps the first provider."""
    if _provider is not None:
        return True
    env = os.environ if environ is None else environ
    if not tracing_requested(env):
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    names = [n.strip().lower() for n in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER: unsupported exporter {name!r} (otlp, console or none)")
    attributes = {} if env.get("OTEL_SERVICE_NAME", "").strip() else {SERVICE_NAME: service_name}
    provider = SdkTracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # for libraries that trace through the global provider
    use_tracer_provider(provider)
    return True


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace the platform's hooks with `provider` (None: tracing off). The tests pass an SDK provider
    with an in-memory exporter; the global provider can be set only once per process, this can be
    swapped."""
    global _provider
    _provider = provider


def tracing_on() -> bool:
    """The one check every hook makes first: no tracing work at all while this is False."""
    return _provider is not None


def tracer(name: str) -> Tracer:
    """A tracer of the installed provider (a no-op one while tracing is off)."""
    return (_provider or trace.NoOpTracerProvider()).get_tracer(name)


def traceparent(span_context: SpanContext) -> str:
    """The W3C `traceparent` value of a span context (version 00)."""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The `traceparent` of the current span, or None outside a (recording or sampled-out) span."""
    context = trace.get_current_span().get_span_context()
    return traceparent(context) if context.is_valid else None


def parse_traceparent(value: str | bytes | None) -> SpanContext | None:
    """The remote span context a `traceparent` header names; None for anything malformed (a header
    is the sender's data: a bad one must not fail a batch)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match.group(3), 16)))


def links(traceparents: Iterable[str | bytes | None], limit: int = MAX_LINKS) -> list[Link]:
    """Links to the distinct valid contexts among `traceparents`, in order of first appearance, at most
    `limit` of them."""
    seen: set[tuple[int, int]] = set()
    raw: set[str | bytes] = set()  # a batch repeats a hand-over's header many times: parse each once
    out: list[Link] = []
    for value in traceparents:
        if value is None or value in raw:
            continue
        raw.add(value)
        context = parse_traceparent(value)
        if context is None or (context.trace_id, context.span_id) in seen:
            continue
        seen.add((context.trace_id, context.span_id))
        out.append(Link(context))
        if len(out) >= limit:
            break
    return out


def remote_parent(value: str | bytes | None) -> Any:
    """A context whose parent is the remote span `value` names (None: start a new trace)."""
    context = parse_traceparent(value)
    return trace.set_span_in_context(trace.NonRecordingSpan(context)) if context is not None else None


# ----- logs ------------------------------------------------------------------------------------

_log_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("log_context", default=None)
CONTEXT_FIELDS = ("tenant", "partition", "run")
# environment variables whose values are secrets wherever they show up (alert channel URLs carry
# tokens in their paths: Slack, LINE, generic webhooks)
_SECRET_NAMES = re.compile(
    r"PASSWORD|SECRET|TOKEN|WEBHOOK|CREDENTIAL|^ALERT_.*_URL$|^OTEL_EXPORTER_OTLP_(TRACES_)?HEADERS$", re.IGNORECASE
)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]*:)(?P<password>[^@\s/]+)(?P<tail>@)", re.IGNORECASE)
# `password=...` in a libpq key/value string or a URL's query, `token=...`, `secret=...` likewise
_KEY_VALUE_SECRET = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|token|secret|api_key|apikey)=)(?P<value>[^&\s'\"]+)", re.IGNORECASE
)
REDACTED = "***"


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add `tenant`, `partition` or `run` to every log line written inside the block (this thread or
    task, and what it starts with a copied context)."""
    merged = {**(_log_context.get() or {}), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _log_context.set(merged)
    try:
        yield
    finally:
        _log_context.reset(token)


class Redactor:
    """Replaces known secret values, the password of any URL and any `password=`/`token=` value with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first, so a URL is replaced whole before its password alone
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}{m['tail']}", text)
        return _KEY_VALUE_SECRET.sub(lambda m: f"{m['head']}{REDACTED}", text)


def secrets_of(settings: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret value the process knows: the settings' SecretStr fields (of a database URL only its
    password: host and database name stay readable in a line), the values of secret-named environment
    variables (PASSWORD, SECRET, TOKEN, WEBHOOK, CREDENTIAL, ALERT_*_URL, the OTLP exporter's headers:
    a collector's API key) and of the variables the
    alerts configuration names for its channels (`url_env`: a channel URL carries its token)."""
    env = os.environ if environ is None else environ
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr) and value.get_secret_value().strip():
            text = value.get_secret_value().strip()
            match = _URL_PASSWORD.search(text)
            if match:
                found.append(match["password"])
            elif "://" not in text:
                found.append(text)
    names = {n for n in env if _SECRET_NAMES.search(n)}
    names |= set(_alert_url_envs(getattr(settings, "alerts_config", None)))
    for name in sorted(names):
        text = env.get(name, "").strip()
        if text:
            found.append(text)
            match = _URL_PASSWORD.search(text)
            if match:
                found.append(match["password"])
    return found


def _alert_url_envs(path: Path | None) -> list[str]:
    """The `url_env` names of the alerts configuration's channels (read here without the alerts
    package: logging is set up before anything else and must not fail on a bad alerts file)."""
    if path is None:
        return []
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        channels = data.get("channels") or {}
        return [str(c["url_env"]) for c in channels.values() if isinstance(c, dict) and c.get("url_env")]
    except (OSError, yaml.YAMLError, AttributeError):
        return []


class JSONFormatter(logging.Formatter):
    """The edge agent's JSON line (ts, level, logger, msg, exc) plus where the line comes from."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self.redact(record.getMessage()),
        }
        entry.update(_where(record))
        if record.exc_info:
            entry["exc"] = self.redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    """A terminal's line: the edge agent's text layout, the context fields appended as key=value."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        where = _where(record)
        if where:
            line += " " + " ".join(f"{k}={v}" for k, v in where.items())
        return self.redact(line)


def _where(record: logging.LogRecord) -> dict[str, str]:
    """tenant/partition/run from `extra=` or `log_context`, and the current span's ids."""
    fields: dict[str, str] = {}
    context = _log_context.get() or {}
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None) or context.get(name)
        if value is not None:
            fields[name] = str(value)
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        fields["trace_id"] = f"{span.trace_id:032x}"
        fields["span_id"] = f"{span.span_id:016x}"
    return fields


_HANDLER_MARK = "_analytics_platform_handler"


class _Stderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is emitted (a test runner swaps it per test; a
    handler holding the first one would write into a closed capture)."""

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


QUIET_LIBRARIES = ("great_expectations",)


def setup_logging(
    level: str = "INFO", fmt: str = "json", secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """One handler on the root logger writing `fmt` lines (json or text) at `level` to `stream`
    (stderr). Replaces a handler installed before by this function or a plain stream handler (what
    `logging.basicConfig` and uvicorn's defaults add), and leaves others (pytest's capture, Dagster's
    own) in place."""
    redact = Redactor(secrets)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(JSONFormatter(redact) if fmt == "json" else TextFormatter(redact))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    root.handlers[:] = [
        h for h in root.handlers if not getattr(h, _HANDLER_MARK, False) and type(h) is not logging.StreamHandler
    ]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # libraries that narrate their own start-up at INFO (Great Expectations registers every
    # decorated function and expectation: ~30 lines per process) speak from WARNING unless debugging
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)
    return handler


def setup_process(service_name: str, settings: Any) -> None:
    """What every platform process does first: logs as LOG_FORMAT/LOG_LEVEL say, secrets redacted, and
    tracing when the OTEL_* variables ask for it. Once per process: the first set-up stays (an app
    factory called again, or a test's own capture, keeps its handler)."""
    if not any(getattr(h, _HANDLER_MARK, False) for h in logging.getLogger().handlers):
        setup_logging(settings.log_level, settings.log_format, secrets_of(settings))
    setup_tracing(service_name)
