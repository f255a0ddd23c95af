"""Pages of rows as JSON or CSV, and keyset cursors.

Rows go from psycopg straight to orjson: the response models document the shape (OpenAPI, the
schemathesis contract test checks we keep to it), but building a pydantic object per row would
cost more than the query for a page of a thousand buckets. CSV carries the same columns and
values as the JSON items, the next cursor in `X-Next-Cursor` and a `Link: rel="next"` header.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from fastapi import Request, Response

from analytics_platform.api.errors import invalid
from analytics_platform.api.params import decode_cursor, encode_cursor

JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
CSV_TYPE = "text/csv"
CSV_RESPONSE = {
    "content": {CSV_TYPE: {"schema": {"type": "string"}}},
    "headers": {
        "X-Next-Cursor": {
            "description": "CSV pages: the cursor of the next page (absent on the last page)",
            "schema": {"type": "string"},
        },
        "Link": {"description": 'CSV pages: `<next page URL>; rel="next"`', "schema": {"type": "string"}},
    },
}


def wants_csv(request: Request) -> bool:
    """CSV when the client asks for it in Accept (and does not rank JSON first)."""
    accept = request.headers.get("accept", "")
    if CSV_TYPE not in accept:
        return False
    json_at = accept.find("application/json")
    return json_at < 0 or accept.find(CSV_TYPE) < json_at


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body, option=JSON_OPTIONS), status_code=status_code, media_type="application/json")


# A text cell beginning with one of these runs as a formula in a spreadsheet (CSV injection): a tenant's own
# ids, metric names, notes and sample ids reach operators' spreadsheets, so such a cell gets a leading
# apostrophe, which spreadsheets read as "this is text" (OWASP's advice). Numbers are never text here.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_STARTS) else value
    if isinstance(value, datetime | dict | list):
        text = orjson.dumps(value, option=JSON_OPTIONS).decode()
        return text[1:-1] if isinstance(value, datetime) else text
    if isinstance(value, float):
        return orjson.dumps(value).decode() if math.isfinite(value) else ""  # JSON digits; NaN/inf are null
    return str(value)


def page_response(
    request: Request,
    rows: Sequence[dict],
    *,
    limit: int,
    key: Sequence[str],
    columns: Sequence[str],
    extra: dict[str, Any] | None = None,
    csv_allowed: bool = True,
) -> Response:
    """One page from `limit + 1` fetched rows: the extra row only says there is a next page, whose
    cursor is the `key` values of the last row returned."""
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(*(rows[-1][k] for k in key)) if more and rows else None
    if csv_allowed and wants_csv(request):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
        headers = {}
        if cursor:
            headers["X-Next-Cursor"] = cursor
            headers["Link"] = f'<{request.url.include_query_params(cursor=cursor)}>; rel="next"'
        return Response(out.getvalue(), media_type=f"{CSV_TYPE}; charset=utf-8", headers=headers)
    # rows already shaped as the items (same keys, same order) go out as they are: no copy per row
    items = rows if not rows or tuple(rows[0]) == tuple(columns) else [{c: row.get(c) for c in columns} for row in rows]
    return json_response({**(extra or {}), "items": items, "count": len(items), "next_cursor": cursor})


def keyset(cursor: str | None, kinds: Sequence[type]) -> list | None:
    """The sort-key values a cursor carries, typed as `kinds` (datetime, str, int); None without one."""
    if not cursor:
        return None
    values = decode_cursor(cursor, len(kinds))
    out: list = []
    for value, kind in zip(values, kinds, strict=True):
        if kind is datetime:
            try:
                parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
            except ValueError:
                parsed = None
            if parsed is None or parsed.tzinfo is None:
                raise invalid("cursor", "cursor is not one this API returned", value=cursor)
            out.append(parsed)
        elif (kind is int and isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63) or (
            kind is str and isinstance(value, str)
        ):
            out.append(value)
        else:
            raise invalid("cursor", "cursor is not one this API returned", value=cursor)
    return out
