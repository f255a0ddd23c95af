"""Spec limits from a YAML file into `analytics.analytics_spec_limits` (the table is the truth;
the file is how a deployment seeds or bulk-edits it)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg
import yaml

from analytics_platform.settings import REPO_ROOT

DEFAULT_FILE = REPO_ROOT / "analytics_platform" / "config" / "spec_limits.yaml"
FIELDS = {"tenant_id", "factory_id", "scope", "name", "lower", "upper", "target", "unit", "valid_from"}


class SpecLimitError(ValueError):
    """A spec-limit file entry that cannot be loaded; the message names the entry and field."""


def parse_spec_limits(path: Path) -> list[dict]:
    """The file's entries, checked: every problem names the entry number and the field."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecLimitError(f"{path}: cannot read spec limits ({exc})") from None
    entries = (data or {}).get("limits") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise SpecLimitError(f"{path}: expected a top-level `limits:` list")
    rows = []
    for number, entry in enumerate(entries, 1):
        where = f"{path} entry {number}"
        if not isinstance(entry, dict):
            raise SpecLimitError(f"{where}: expected a mapping")
        unknown = set(entry) - FIELDS
        if unknown:
            raise SpecLimitError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        for name in ("tenant_id", "scope", "name"):
            if not isinstance(entry.get(name), str) or not entry[name]:
                raise SpecLimitError(f"{where}: `{name}` is required")
        if entry["scope"] not in ("analyte", "metric"):
            raise SpecLimitError(f"{where}: scope must be analyte or metric, got {entry['scope']!r}")
        bounds = {}
        for name in ("lower", "upper", "target"):
            value = entry.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise SpecLimitError(f"{where}: `{name}` must be a number, got {value!r}")
            bounds[name] = None if value is None else float(value)
        if bounds["lower"] is None and bounds["upper"] is None:
            raise SpecLimitError(f"{where}: give `lower`, `upper` or both")
        if bounds["lower"] is not None and bounds["upper"] is not None and bounds["lower"] > bounds["upper"]:
            raise SpecLimitError(f"{where}: lower {bounds['lower']} is above upper {bounds['upper']}")
        valid_from = entry.get("valid_from")
        if valid_from is None:
            since = datetime.min.replace(tzinfo=UTC)
        else:
            try:
                since = datetime.fromisoformat(str(valid_from).replace("Z", "+00:00"))
            except ValueError:
                raise SpecLimitError(f"{where}: valid_from {valid_from!r} is not an ISO-8601 time") from None
            if since.tzinfo is None:
                raise SpecLimitError(f"{where}: valid_from must include a timezone, e.g. 2025-08-01T00:00:00Z")
        rows.append(
            {
                "tenant_id": entry["tenant_id"],
                "factory_id": str(entry.get("factory_id") or "*"),
                "scope": entry["scope"],
                "name": entry["name"],
                "lower": bounds["lower"],
                "upper": bounds["upper"],
                "target": bounds["target"],
                "unit": entry.get("unit"),
                "valid_from": None if valid_from is None else since,
            }
        )
    return rows


def load_spec_limits(conn: psycopg.Connection, path: Path = DEFAULT_FILE, *, overwrite: bool = True) -> int:
    """Upsert the file's limits; with `overwrite=False` rows already in the table are kept.
    Returns the rows inserted or updated."""
    rows = parse_spec_limits(path)
    action = (
        "UPDATE SET lower_limit = EXCLUDED.lower_limit, upper_limit = EXCLUDED.upper_limit, "
        "target = EXCLUDED.target, unit = EXCLUDED.unit, updated_at = now()"
        if overwrite
        else "NOTHING"
    )
    changed = 0
    with conn.transaction(), conn.cursor() as cur:
        for row in rows:
            cur.execute(
                "INSERT INTO analytics.analytics_spec_limits "
                "(tenant_id, factory_id, scope, name, lower_limit, upper_limit, target, unit, valid_from) "
                "VALUES (%(tenant_id)s, %(factory_id)s, %(scope)s, %(name)s, %(lower)s, %(upper)s, %(target)s, "
                "%(unit)s, coalesce(%(valid_from)s, '-infinity'::timestamptz)) "
                f"ON CONFLICT (tenant_id, factory_id, scope, name, valid_from) DO {action}",
                row,
            )
            changed += cur.rowcount
    return changed
