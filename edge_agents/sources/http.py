"""HTTP / webhook ingest: lab systems, gateways and scripts POST canonical payloads to the agent.

`POST /v1/ingest/{domain}` (domain: sensor, device, sweep, lab) takes one JSON object or a JSON
array of objects. The request is one atomic unit: either every item passes the contract and is in
the durable queue before the answer goes out, or nothing is queued and the answer says why, per
item. So a client may treat 202 as "the agent has it" and retry anything else; a retry cannot
double a message downstream, because its event id is the sender's or derived from its content
(canonical.py), the same both times.

  202 {"accepted": n}                         durably queued
  422 {"detail": [{"index", "reason", "message"}, ...]}
                                              an item breaks the contract (index = its place in the
                                              array; null for a problem with the body as a whole)
  401                                         `token` is configured and the bearer token is wrong
  413                                         body larger than the ingest limit
  503 + Retry-After                           the queue is full and `when_full: stop_accepting`

`GET /healthz` (no token: it reveals only the queue depth) answers 200 with the queue depth and
whether backpressure is on, for a load balancer or a gateway that wants to look before it sends.

Backpressure: an HTTP source cannot slow its callers down by sampling less, and holding requests
open would only move the backlog into sockets. It keeps accepting and marks every answer with
`X-Backpressure: on` while the queue is deep; the caller is the one to slow down. When the queue is
actually full the 503 above is the hard stop.

The server is uvicorn on the agent's own event loop, without signal handlers of its own (the agent
owns SIGTERM / SIGINT) and without touching the logging configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
from collections.abc import Iterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge_agents.config import IDENTITY_FIELDS
from edge_agents.config import HTTPSource as HTTPSourceConfig
from edge_agents.engine import Engine, SubmitResult
from edge_agents.sources.base import Source

MAX_BODY_BYTES = 32 * 1024 * 1024  # well above max_batch canonical payloads; stops a runaway upload
RETRY_AFTER_S = 5
CONFIRM_TIMEOUT_S = 30.0  # the engine confirms in milliseconds; this only guards against a dead engine
_KEPT_RAW_BYTES = 64 * 1024  # how much of an unusable body the rejects table keeps


class _Refusal(Exception):
    """A request refused before it reaches the engine: (index, reason, message, raw) per problem;
    index None and raw None for the body as a whole."""

    def __init__(self, status: int, problems: list[tuple[int | None, str, str, bytes | None]]) -> None:
        super().__init__(problems[0][2])
        self.status = status
        self.problems = problems

    @classmethod
    def body(cls, status: int, reason: str, message: str) -> _Refusal:
        return cls(status, [(None, reason, message, None)])


class _AgentServer(uvicorn.Server):
    """uvicorn would take over SIGINT/SIGTERM while serving; the agent's own handlers must win so
    that a signal stops the sources in order instead of only this server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HTTPSource(Source):
    """The ingest endpoint. `port` is the bound port once listening (None before), so a config
    with `port: 0` can be used by tests and by a supervisor that reads it back."""

    config: HTTPSourceConfig

    def __init__(self, config: HTTPSourceConfig, engine: Engine) -> None:
        super().__init__(config, engine)
        self.port: int | None = None
        self._defaults = {f: v for f in IDENTITY_FIELDS if (v := getattr(config.identity, f))}
        self.app = Starlette(
            routes=[
                Route("/v1/ingest/{domain}", self._ingest, methods=["POST"]),
                Route("/healthz", self._healthz, methods=["GET"]),
            ]
        )

    async def run(self, stop: asyncio.Event) -> None:
        sock = self._bind()
        server = _AgentServer(
            uvicorn.Config(
                self.app,
                host=self.config.host,
                port=self.port or 0,
                log_level="warning",
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=10,
            )
        )
        self.log.info("HTTP ingest %s on http://%s:%d/v1/ingest/{domain}", self.name, self.config.host, self.port)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name=f"{self.name}-uvicorn")
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # stops accepting, lets requests in progress get their answer, then returns
            server.should_exit = True
            stopping.cancel()
            try:
                await serving
            finally:
                sock.close()
        if not stop.is_set():
            raise RuntimeError(f"HTTP server {self.name} stopped on its own")

    def _bind(self) -> socket.socket:
        """Bind here rather than in uvicorn so that port 0 resolves before serving starts and a bind
        failure is an exception (restarted with backoff), not uvicorn's `sys.exit`."""
        host = self.config.host
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, self.config.port))
            sock.listen(128)  # connections made before uvicorn starts wait in the backlog
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        return sock

    # ----- endpoints ---------------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        return self._answer(
            200,
            {
                "status": "ok",
                "source": self.name,
                "queue_depth": self.engine.depth,
                "queue_bytes": self.engine.queue.bytes,
                "backpressure": self.slow,
            },
        )

    async def _ingest(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._answer(
                401, {"detail": "missing or wrong bearer token"}, {"WWW-Authenticate": 'Bearer realm="edge-agent"'}
            )
        domain = request.path_params["domain"]
        domains = self.engine.canonical.contracts  # every registered domain (DOMAIN_MODULES included)
        body = b""
        try:
            if domain not in domains:
                raise _Refusal.body(
                    422, "unknown_domain", f"unknown domain {domain!r}; use one of {', '.join(domains)}"
                )
            body = await _read_body(request)
            items = self._items(body)
        except _Refusal as refusal:
            # counted and kept like any other input that cannot be used (`edge-agent rejects`)
            for _, reason, message, raw in refusal.problems:
                self.engine.reject(
                    self.name, domain if domain in domains else None, raw or body[:_KEPT_RAW_BYTES], reason, message
                )
            problems = [
                {"index": i, "reason": reason, "message": message} for i, reason, message, _ in refusal.problems
            ]
            return self._answer(refusal.status, {"detail": problems})
        result = await self._submit(domain, items, request.headers.get("traceparent"))
        if result is None:
            return self._answer(
                503,
                {"detail": "the queue did not confirm in time; retrying is safe"},
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        if result.rejected:
            problems = [{"index": i, "reason": reason, "message": detail} for i, reason, detail in result.rejected]
            return self._answer(422, {"detail": problems})
        if result.refused is not None:
            self.log.debug("%s: refused %d payloads: %s", self.name, len(items), result.refused)
            return self._answer(
                503,
                {"detail": f"{result.refused}: nothing of this request was queued; retry later"},
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        return self._answer(202, {"accepted": result.accepted})

    # ----- parts -------------------------------------------------------------------------------

    def _authorised(self, request: Request) -> bool:
        token = self.config.token
        if not token:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

    def _items(self, body: bytes) -> list[dict[str, Any]]:
        """The body as a list of payloads, or a _Refusal that names the problem."""
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            document = _lenient_json(body, exc)
        if isinstance(document, dict):
            items = [document]
        elif isinstance(document, list):
            items = document
            if not items:
                raise _Refusal.body(422, "empty_batch", "the array is empty: send at least one object")
            if len(items) > self.config.max_batch:
                raise _Refusal.body(
                    422,
                    "batch_too_large",
                    f"{len(items)} items in one request; at most {self.config.max_batch} (max_batch)",
                )
        else:
            raise _Refusal.body(
                422, "not_object", f"the body is a JSON {_json_kind(document)}; send an object or an array"
            )
        problems: list[tuple[int | None, str, str, bytes | None]] = [
            (i, "not_object", f"item {i} is a JSON {_json_kind(item)}, not an object", orjson.dumps(item))
            for i, item in enumerate(items)
            if not isinstance(item, dict)
        ]
        if problems:  # the objects of such a batch are not checked: the batch is refused anyway
            raise _Refusal(422, problems)
        if self._defaults:
            items = [self._with_defaults(item) for item in items]
        return items

    def _with_defaults(self, item: dict[str, Any]) -> dict[str, Any]:
        """A gateway for one machine may leave out who it is; the source's identity fills it in."""
        missing = {f: v for f, v in self._defaults.items() if f not in item}
        return {**missing, **item} if missing else item

    async def _submit(
        self, domain: str, items: list[dict[str, Any]], traceparent: str | None = None
    ) -> SubmitResult | None:
        """Hand the batch to the engine as one unit and wait until it is on disk or refused; a
        caller's `traceparent` header makes the reading's trace continue the caller's."""
        loop = asyncio.get_running_loop()
        confirmed: asyncio.Future[SubmitResult] = loop.create_future()

        def settle(result: SubmitResult) -> None:
            if not confirmed.done():  # the client may have gone away meanwhile
                confirmed.set_result(result)

        def done(result: SubmitResult) -> None:  # engine thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(settle, result)

        self.engine.submit(self.name, domain, items, atomic=True, done=done, traceparent=traceparent)
        try:
            return await asyncio.wait_for(asyncio.shield(confirmed), CONFIRM_TIMEOUT_S)
        except TimeoutError:
            self.log.error(
                "%s: the engine did not confirm a batch of %d within %s s", self.name, len(items), CONFIRM_TIMEOUT_S
            )
            return None

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        headers = dict(headers or {})
        if self.slow:
            headers["X-Backpressure"] = "on"
        return JSONResponse(body, status_code=status, headers=headers)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _Refusal.body(413, "body_too_large", f"the body has {declared} bytes; at most {MAX_BODY_BYTES}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Refusal.body(413, "body_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _lenient_json(body: bytes, strict_error: Exception) -> Any:
    """Accept NaN / Infinity literals (and numbers beyond a double) after all, so that the item
    carrying one is refused as `non_finite` with its index (the engine checks every payload for
    them), instead of the whole body being called "not JSON"."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _Refusal.body(422, "not_json", f"the body is not JSON: {strict_error}") from None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
