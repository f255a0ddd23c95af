"""Structured logs: one JSON object per line on stderr (or plain text for a terminal).

The platform's processes write the same fields (analytics_platform/observability.py), so one log
query covers the gateway and the platform; inside a traced span a line also carries the span's
`trace_id` and `span_id`, the way from a log line to its trace."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson
from opentelemetry.trace import get_current_span


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span = get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = f"{span.trace_id:032x}"
            entry["span_id"] = f"{span.span_id:016x}"
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup(fmt: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pymodbus warns on every failed connect; the Modbus source already reports outages, rate-limited
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
