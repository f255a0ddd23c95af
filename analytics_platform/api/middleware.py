"""The API's two middlewares, written as plain ASGI callables.

Starlette's `BaseHTTPMiddleware` (what `@app.middleware("http")` builds) runs the app in a task of
its own and passes the body through a memory stream: on a 300 KB page that costs more than the
measuring it wraps. These wrap `send` instead and add nothing per body chunk."""

from __future__ import annotations

import gzip
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode

from analytics_platform import observability
from analytics_platform.api.metrics import HttpMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class MeasureRequests:
    """Requests and latency per route template (HttpMetrics.observe)."""

    def __init__(self, app: App, http: HttpMetrics) -> None:
        self.app = app
        self.http = http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what an exception the app lets through becomes (ServerErrorMiddleware answers it)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"  # the router records the match
            self.http.observe(route, scope["method"], status, time.perf_counter() - started)


class TraceRequests:
    """A server span per request, continuing the caller's W3C `traceparent`, named after the route
    template once the router matched it. `create_app` adds it only while tracing is on, so an API
    without a collector runs no tracing code per request."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.tracer = observability.tracer("analytics_platform.api")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parent = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                parent = observability.remote_parent(value)
                break
        method = scope["method"]
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"], "url.scheme": scope["scheme"]},
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))


COMPRESSIBLE = ("application/json", "text/csv", "text/plain", "text/html", "text/css", "text/javascript")


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether `Accept-Encoding` allows gzip: named (or `*`) without `q=0`."""
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().lower()
            return not (q.startswith("q=") and q[2:].strip("0.") == "")
    return False


class Compress:
    """gzip for answers of at least `minimum` bytes whose client accepts it.

    Only whole bodies (the API's JSON and CSV answers are one message) are compressed; a streamed
    body passes as it is. Level 1: on a 30-day page of /v1/agg (317 KB of JSON with noisy doubles)
    it took 5.5 ms for 85 KB where level 5 took 29 ms for 75 KB (this machine, loaded): under load
    the CPU, not the bytes, is what runs short; `fields=` shrinks the page far more. ETags are weak
    (`W/`), so one tag stands for both encodings. zstd is not offered: no zstd library is installed
    (Python 3.11 has none in its standard library), and adding a compiled dependency for a ratio
    gzip already gets was not worth it here.
    """

    def __init__(self, app: App, minimum: int = 1024, level: int = 1) -> None:
        self.app = app
        self.minimum = minimum
        self.level = level

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        accept = next((v for k, v in scope["headers"] if k == b"accept-encoding"), b"").decode("latin-1")
        if not accepts_gzip(accept):
            await self.app(scope, receive, send)
            return
        start: Message | None = None

        async def compress(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message  # held until the body says whether it is whole
                return
            if start is None:  # not the body of a held start (a trailer or the like)
                await send(message)
                return
            held, start = start, None
            body = message.get("body", b"")
            packed = (
                None
                if message.get("more_body", False)
                else gzipped(held.get("headers", []), body, self.minimum, self.level)
            )
            if packed is None:
                await send(held)
                await send(message)
                return
            await send({**held, "headers": packed[0]})
            await send({**message, "body": packed[1]})

        await self.app(scope, receive, compress)


Headers = list[tuple[bytes, bytes]]


def gzipped(headers: Headers, body: bytes, minimum: int = 1024, level: int = 1) -> tuple[Headers, bytes] | None:
    """A whole answer's headers and body gzipped, or None when it stays as it is (too small, not text,
    already encoded). Compress sends what it gives; the response cache (api/response_cache.py) stores it."""
    if len(body) < minimum or not compressible(headers):
        return None
    packed = gzip.compress(body, compresslevel=level, mtime=0)
    dropped = (b"content-length", b"vary")
    kept = [(k, weak(v) if k.lower() == b"etag" else v) for k, v in headers if k.lower() not in dropped]
    vary = [v.decode("latin-1") for k, v in headers if k.lower() == b"vary"]
    if not any("accept-encoding" in v.lower() for v in vary):
        vary.append("Accept-Encoding")
    kept += [
        (b"content-encoding", b"gzip"),
        (b"content-length", str(len(packed)).encode()),
        (b"vary", ", ".join(vary).encode("latin-1")),
    ]
    return kept, packed


def weak(tag: bytes) -> bytes:
    """A strong ETag (the static files') names one exact body: once gzipped, the tag is weak."""
    return tag if tag.startswith(b"W/") else b"W/" + tag


def compressible(headers: list[tuple[bytes, bytes]]) -> bool:
    """A text type not already encoded."""
    kind = b""
    for key, value in headers:
        name = key.lower()
        if name == b"content-encoding":
            return False
        if name == b"content-type":
            kind = value
    return kind.decode("latin-1").split(";")[0].strip() in COMPRESSIBLE
