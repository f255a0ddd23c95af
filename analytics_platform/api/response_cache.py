"""The API's answers kept in memory by what they were made from: never stale, bounded in bytes.

Fifty dashboards mostly show the same machine pages, so most 200s of /v1/agg and /v1/kpi over final
ranges are the same bytes made again: rows read and decoded, JSON written, maybe gzipped (a 30-day
page: ~3.4 ms of the API's CPU and 1.3 ms of PostgreSQL's). Such an answer's ETag is keyed by what
was materialised (api/caching.py: the hours' or KPI periods' count and highest version, read in the
request's first statement, before the rows). The same key names the same body, so the body can be
served from here once the key has been read:

* only answers with a tag of that kind are kept (never a provisional answer, never one tagged by its
  body: a body-keyed tag is known only after the body is made);
* the key is the tag's exact material (route, tenant, every query parameter — `fields=` too —, the
  representation, and the versions), not its hash, plus the content coding: the identity and the
  gzip body of one answer are two entries, each made once;
* the state is read on every request, so a re-materialised hour, a late reading's hour or a KPI
  period's new version makes a new key at once and the next answer is made afresh; an entry whose
  key can no longer come up is simply never asked for again and ages out;
* a tag is read before the rows, so an entry may hold a body newer than its key (a write committed
  between the two statements), never an older one — as with the ETag itself;
* least recently used entries go first once the bytes held pass the bound (API_RESPONSE_CACHE_MB,
  per worker process; 0 turns it off).

The route still checks the key, the tenant's scope and every parameter before it asks: a request
that would fail still fails."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge

from analytics_platform.api.middleware import Send, accepts_gzip, gzipped


@dataclass(frozen=True)
class Entry:
    headers: tuple[tuple[bytes, bytes], ...]  # the answer's raw headers, Content-Length of `body` included
    body: bytes
    # the answer's two ASGI messages, built once when kept: a repeat sends them as they are (send_kept).
    # Nothing in them differs per request (uvicorn adds Date and Server itself; the key holds the host a
    # CSV page's Link names). Sent only by the fast path's front, where no middleware rewrites a message.
    start: dict[str, Any] = field(init=False, repr=False, compare=False)
    message: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", {"type": "http.response.start", "status": 200, "headers": self.headers})
        object.__setattr__(self, "message", {"type": "http.response.body", "body": self.body})

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers)


class KeptAnswer(Response):
    """A kept answer as a Response, built without rendering anything; the fast path's front sends the
    entry's pre-built messages (send_kept). Its headers are a copy made on first use: a caller that
    changes them gets them sent as it changed them, and the entry stays as it was kept."""

    def __init__(self, entry: Entry) -> None:  # no Response.__init__: nothing to render
        self.entry = entry
        self.status_code = 200
        self.body = entry.body
        self.background = None
        self._raw: list[tuple[bytes, bytes]] | None = None

    @property  # type: ignore[override]
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        if self._raw is None:
            self._raw = list(self.entry.headers)
        return self._raw

    @raw_headers.setter
    def raw_headers(self, value: list[tuple[bytes, bytes]]) -> None:
        self._raw = value

    async def send_kept(self, send: Send) -> bool:
        """Send the entry's own messages, as kept, when nothing changed this answer since (else False: send
        it as a Response). Only where nothing between here and the server changes a message (the fast
        path's front, api/revalidate.py): a middleware that adds headers (CORS) rewrites the message it
        is given, which would change the entry for every later request."""
        if self._raw is not None or self.body is not self.entry.body or self.background is not None:
            return False
        await send(self.entry.start)
        await send(self.entry.message)
        return True


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lookups = Counter(
            "analytics_api_response_cache_lookups",
            "Answers looked up in the response cache, by result (hit, miss)",
            ["result"],
            registry=registry,
        )
        self.hits, self.misses = self.lookups.labels("hit"), self.lookups.labels("miss")  # looked up once
        self.evictions = Counter(
            "analytics_api_response_cache_evictions", "Entries dropped to keep the bound", registry=registry
        )
        self.bytes = Gauge("analytics_api_response_cache_bytes", "Bytes held in this process", registry=registry)


class ResponseCache:
    """Thread-safe LRU of whole answers, bounded by `max_bytes` (the endpoints run in the thread pool)."""

    def __init__(self, max_bytes: int, metrics: CacheMetrics | None = None) -> None:
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.bytes = 0
        self._entries: OrderedDict[tuple[bytes, str, str], Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def answer(self, request: Request, material: bytes) -> KeptAnswer | None:
        """The kept answer for this tag material in the coding the request accepts, or None."""
        if self.max_bytes <= 0:
            return None
        key = self.key(request, material)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if self.metrics is not None:
            (self.metrics.hits if entry else self.metrics.misses).inc()
        return None if entry is None else KeptAnswer(entry)

    def keep(self, request: Request, material: bytes, response: Response) -> Response:
        """Keep a whole 200 answer (tagged by `material`) in the coding the request accepts, and return
        it in that coding: gzipped here as Compress would, so the middleware passes it as it is."""
        if self.max_bytes <= 0 or response.status_code != 200:
            return response
        encoding = coding(request)
        headers, body = list(response.raw_headers), bytes(response.body)
        # gzipped here as Compress would (a body too small or not text stays as it is for every client)
        if encoding == "gzip" and (packed := gzipped(headers, body)) is not None:
            headers, body = packed
            response = Response(status_code=200)
            response.body = body
            response.raw_headers = list(headers)
        self.put(self.key(request, material), Entry(tuple(headers), body))
        return response

    @staticmethod
    def key(request: Request, material: bytes) -> tuple[bytes, str, str]:
        """The tag's material, the content coding, and what the base URL is made of (a CSV page's `Link`
        names it): the scheme, the Host header (else the server's address) and the root paths, which is
        all Starlette builds `request.base_url` from. Read from the scope: building the URL itself took a
        fifth of a kept answer's lookup."""
        scope = request.scope
        host = next((v for k, v in scope["headers"] if k == b"host"), None)
        base = (scope.get("scheme"), host, scope.get("server"), scope.get("root_path"), scope.get("app_root_path"))
        return material, coding(request), repr(base)

    def put(self, key: tuple[bytes, str, str], entry: Entry) -> None:
        size = _size(key, entry)
        if size > self.max_bytes:
            return  # larger than the bound: never kept
        evicted = 0
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= _size(key, old)
            self._entries[key] = entry
            self.bytes += size
            while self.bytes > self.max_bytes:
                dropped_key, dropped = self._entries.popitem(last=False)
                self.bytes -= _size(dropped_key, dropped)
                evicted += 1
            held = self.bytes
        if self.metrics is not None:
            self.metrics.evictions.inc(evicted)
            self.metrics.bytes.set(held)


def _size(key: tuple[bytes, str, str], entry: Entry) -> int:
    return len(key[0]) + len(key[2]) + entry.size


def coding(request: Request) -> str:
    """The content coding the answer goes out in: what Compress would choose for this request."""
    return "gzip" if accepts_gzip(request.headers.get("accept-encoding", "")) else "identity"
