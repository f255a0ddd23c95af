"""Conditional GETs: ETags that are never stale, 304 Not Modified, and each answer's Cache-Control.

A dashboard asks for the same closed ranges again and again; most of those answers have not changed.
Two kinds of tag, both weak (`W/`: the gzip and the identity encoding of an answer share it):

* keyed by what was materialised (`/v1/agg` on final ranges): a hash of the tenant, the query, the
  representation, and the count and highest `version` of the hours the range reads in
  `analytics.agg_materialised_hours` (the asset draws a new version, in commit order, in the same
  transaction as an hour's buckets, so a re-materialised hour changes the tag the moment its buckets
  change; sql/14). `/v1/kpi` likewise by the periods the KPI assets rewrote. The tag costs one small
  query, and a matching `If-None-Match` is answered before the rows are read;
* keyed by the body (every other page): a hash of the answer itself, exact by construction; it
  saves the client the transfer and the parsing, not the server the query.

Answers that are still changing (provisional buckets, computed from the readings so far) carry no
tag and `Cache-Control: no-store`. Tagged answers say `private, no-cache`: a client may keep them but
must revalidate every use (a re-materialisation can come at any moment, so no max-age is safe), and
shared caches must not keep one key's answer for another."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from fastapi import Request, Response

from analytics_platform.api.respond import wants_csv
from analytics_platform.api.response_cache import ResponseCache

# Part of every tag: bump it when the JSON or CSV shape of an answer changes, so that no tag a
# client kept from an older API matches a body of the new one.
FORMAT = "api-2026-12"
VARY = "Accept, Accept-Encoding, X-API-Key"  # every answer may be gzipped (api/middleware.py)
REVALIDATE = "private, no-cache"
NO_STORE = "no-store"


def material(*parts: Any) -> bytes:
    """What a tag is the hash of: exact, so the server's response cache (api/response_cache.py) keys
    by it rather than trusting the hash."""
    return orjson.dumps([FORMAT, *parts], default=str, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def tag_of_material(raw: bytes) -> str:
    """The weak ETag of a tag's material (`material`): the routes tag by it, and the response cache keeps
    answers by the material itself."""
    return f'W/"{hashlib.blake2b(raw, digest_size=16).hexdigest()}"'


def request_key(request: Request, tenant: str | None, representation: str) -> list:
    """What of a request decides its answer besides the data: the route, the tenant (two tenants
    never share a tag, even for the same ids), every query parameter and the representation. The path as
    the scope has it (what `request.url.path` is made of, unescaped): building the whole URL took a quarter
    of a kept answer's lookup."""
    return [request.scope["path"], tenant, sorted(request.query_params.multi_items()), representation]


def matches(request: Request, tag: str) -> bool:
    """If-None-Match by weak comparison (RFC 9110 13.1.2): `*` or any listed tag, W/ or not."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    opaque = tag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == opaque for candidate in header.split(","))


def not_modified(tag: str) -> Response:
    return Response(status_code=304, headers={"ETag": tag, "Cache-Control": REVALIDATE, "Vary": VARY})


def tagged(response: Response, tag: str) -> Response:
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = REVALIDATE
    response.headers["Vary"] = VARY
    return response


def unstored(response: Response) -> Response:
    response.headers["Cache-Control"] = NO_STORE
    response.headers["Vary"] = VARY
    return response


def by_body(request: Request, response: Response) -> Response:
    """The body-keyed tag of a 200 answer, or a 304 when the client holds that body already."""
    if response.status_code != 200:
        return response
    tag = f'W/"{hashlib.blake2b(response.body, digest_size=16).hexdigest()}"'
    if matches(request, tag):
        return not_modified(tag)
    return tagged(response, tag)


def known_answer(
    request: Request, tenant: str | None, version: Any, cache: ResponseCache
) -> tuple[bytes, str, Response | None]:
    """The tag's material and tag of this request's answer under `version` (what was materialised), and
    the answer when it needs no rows: a 304 for the client's own tag, else the body the response cache
    keeps for that material; None: make it, then `cache.keep(request, material, tagged(response, tag))`."""
    representation = "csv" if wants_csv(request) else "json"
    raw = material(request_key(request, tenant, representation), version)
    tag = tag_of_material(raw)
    if matches(request, tag):
        return raw, tag, not_modified(tag)
    return raw, tag, cache.answer(request, raw)
