"""Parameter rules shared by the time-series endpoints: UTC times, bounded ranges, cursors."""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Query

from analytics_platform.api.errors import invalid

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def utc(name: str, value: datetime) -> datetime:
    """Times must say they are UTC (or carry an offset we convert); naive times are ambiguous."""
    if value.tzinfo is None:
        raise invalid(name, "time must include a timezone, e.g. 2025-08-20T03:00:00Z", value=value.isoformat())
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise invalid(name, "time is outside the representable UTC range", value=value.isoformat()) from None
    if not EARLIEST <= value <= LATEST:
        raise invalid(name, "time must be between 1900-01-01 and 2999-12-31", value=value.isoformat())
    return value


def text(name: str, value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: such a parameter is a client error, not a server one."""
    if value is not None and "\x00" in value:
        raise invalid(name, "must not contain a NUL character")
    return value


def time_range(start: datetime, end: datetime, max_days: int) -> tuple[datetime, datetime]:
    start, end = utc("start", start), utc("end", end)
    if end <= start:
        raise invalid("end", "end must be after start", value=end.isoformat())
    if end - start > timedelta(days=max_days):
        raise invalid(
            "end",
            f"range is longer than {max_days} days; narrow it or page through it",
            value=end.isoformat(),
        )
    return start, end


def encode_cursor(*values: object) -> str:
    raw = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        raise invalid("cursor", "cursor is not one this API returned", value=cursor) from None
    if not isinstance(values, list) or len(values) != size or not all(_storable(v) for v in values):
        raise invalid("cursor", "cursor is not one this API returned", value=cursor)
    return values


def _storable(value: object) -> bool:
    """Whether a cursor value can go to PostgreSQL as a parameter: text holds no NUL, and JSON's \\u
    escapes can make lone surrogates, which are not UTF-8 (both a 422, not a 500)."""
    if not isinstance(value, str):
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


# ------------------------------------------------------------------------------------------------
# Query parameter types shared by the routes
# ------------------------------------------------------------------------------------------------
_NO_NUL = r"^[^\x00]+$"  # PostgreSQL text cannot hold NUL: such a value is a 422, not a 500
Identifier = Annotated[str, Query(min_length=1, max_length=200, pattern=_NO_NUL)]
OptionalIdentifier = Annotated[str | None, Query(min_length=1, max_length=200, pattern=_NO_NUL)]
TenantParam = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        pattern=_NO_NUL,
        description="The key's own tenant when omitted; required with an admin key. Another tenant is a 404.",
    ),
]
Start = Annotated[datetime, Query(description="Inclusive, ISO-8601 with a zone, e.g. 2025-08-20T00:00:00Z")]
End = Annotated[datetime, Query(description="Exclusive, ISO-8601 with a zone")]
Limit = Annotated[int, Query(ge=1, le=10000, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=2000, description="`next_cursor` of the previous page")]


def known(field: str, value: str, names: Collection[str]) -> str:
    """A name from a catalogue (metrics, KPIs): anything else is a 422 that lists the known ones."""
    if value not in names:
        raise invalid(field, f"unknown {field} {value!r}; known: {', '.join(sorted(names))}")
    return value


def page_limit(limit: int, maximum: int) -> int:
    if limit > maximum:
        raise invalid("limit", f"limit must be at most {maximum} (API_PAGE_LIMIT_MAX)")
    return limit


def ceil_to(moment: datetime, window_s: int) -> datetime:
    """The first window boundary (epoch-aligned, like the stored buckets) at or after `moment`."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    micros = (moment - epoch) // timedelta(microseconds=1)
    step = window_s * 1_000_000
    return epoch + timedelta(microseconds=-(-micros // step) * step)


def floor_to(moment: datetime, window_s: int) -> datetime:
    """The last window boundary (epoch-aligned) at or before `moment`."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    micros = (moment - epoch) // timedelta(microseconds=1)
    step = window_s * 1_000_000
    return epoch + timedelta(microseconds=micros // step * step)
