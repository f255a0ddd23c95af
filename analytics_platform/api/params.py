"""Parameter rules shared by the time-series endpoints: UTC times, bounded ranges, cursors."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

from analytics_platform.api.errors import invalid


def utc(name: str, value: datetime) -> datetime:
    """Times must say they are UTC (or carry an offset we convert); naive times are ambiguous."""
    if value.tzinfo is None:
        raise invalid(name, "time must include a timezone, e.g. 2025-08-20T03:00:00Z", value=value.isoformat())
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise invalid(name, "time is outside the representable UTC range", value=value.isoformat()) from None


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
    if not isinstance(values, list) or len(values) != size or any(isinstance(v, str) and "\x00" in v for v in values):
        raise invalid("cursor", "cursor is not one this API returned", value=cursor)
    return values
