"""The metrics catalogue tables (analytics.metric_catalog, analytics.metric_policy): tenant data.

The packaged contracts/metrics.yaml seeds the platform defaults (tenant '*') and nothing more: after
that, tenants and operators edit the tables with `analytics-platform metrics ...` or the API, and
the drain reads them on every pass, so a new metric is accepted within one tick without a deploy.
Readings rejected while a metric was missing are re-admitted with `analytics-platform rejects
readmit` (or by re-materialising their raw partitions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import psycopg
import yaml

from analytics_platform.contracts.catalog import POLICIES, WILDCARD, MetricCatalog
from analytics_platform.contracts.registry import ConfigError
from analytics_platform.data_quality.raw_profile import LIMITS_SCHEMA


class CatalogError(ValueError):
    """An edit the catalogue cannot take; the message says which value and why."""


@dataclass(frozen=True)
class MetricEntry:
    tenant_id: str
    metric: str
    unit: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    description: str = ""

    def check(self) -> MetricEntry:
        """The entry, or CatalogError saying what is wrong with it."""
        for name, value in (("tenant", self.tenant_id), ("metric", self.metric)):
            if not value or not value.strip() or len(value) > 200 or "\x00" in value:
                raise CatalogError(f"{name} must be 1 to 200 characters without NUL, got {value!r}")
        for name, value in (("min", self.min_value), ("max", self.max_value)):
            if value is not None and not math.isfinite(value):
                raise CatalogError(f"{name} must be a finite number, got {value}")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise CatalogError(f"min {self.min_value} is above max {self.max_value}")
        return self


def read_packaged(path: Path) -> list[MetricEntry]:
    """The platform defaults from a catalogue file (contracts/metrics.yaml), as tenant '*' entries."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"METRICS_CATALOG file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"METRICS_CATALOG file {path} is not valid YAML: {exc}") from None
    metrics = (data or {}).get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict) or not metrics:
        raise ConfigError(f"METRICS_CATALOG file {path} has no `metrics:` mapping")
    entries = []
    for name, entry in metrics.items():
        entry = entry or {}
        if not isinstance(entry, dict):
            raise ConfigError(f"METRICS_CATALOG file {path}: metrics.{name} must be a mapping")
        try:
            low, high = entry.get("min"), entry.get("max")
            entries.append(
                MetricEntry(
                    WILDCARD,
                    str(name),
                    entry.get("unit"),
                    None if low is None else float(low),
                    None if high is None else float(high),
                    str(entry.get("description") or ""),
                ).check()
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"METRICS_CATALOG file {path}: metrics.{name}: {exc}") from None
    return entries


def seed_packaged(conn: psycopg.Connection, path: Path) -> int:
    """Add the packaged defaults the table does not have yet; never overwrites an edited entry.
    Returns how many were added."""
    entries = read_packaged(path)
    with conn.transaction():
        cur = conn.cursor()
        cur.executemany(
            "INSERT INTO analytics.metric_catalog (tenant_id, metric, unit, min_value, max_value, description, "
            "source, updated_by) VALUES (%s, %s, %s, %s, %s, %s, 'packaged', %s) ON CONFLICT DO NOTHING",
            [(e.tenant_id, e.metric, e.unit, e.min_value, e.max_value, e.description, str(path.name)) for e in entries],
        )
        return max(cur.rowcount, 0)


def read_catalog(conn: psycopg.Connection) -> MetricCatalog:
    """The catalogue and the policies as the contracts judge with them."""
    entries = frozenset(conn.execute("SELECT tenant_id, metric FROM analytics.metric_catalog").fetchall())
    policies = dict(conn.execute("SELECT tenant_id, unknown_metrics FROM analytics.metric_policy").fetchall())
    policies.setdefault(WILDCARD, "reject")
    return MetricCatalog(entries, policies)


def read_limits(conn: psycopg.Connection) -> pl.DataFrame:
    """Every entry's plausible range and canonical unit (LIMITS_SCHEMA, tenant '*' = defaults), for
    the value-range data contracts (`analytics_platform.data_quality.raw_profile.with_catalog_limits`)."""
    rows = conn.execute(
        "SELECT tenant_id, metric, min_value, max_value, unit FROM analytics.metric_catalog ORDER BY 1, 2"
    ).fetchall()
    return pl.DataFrame(rows, schema=LIMITS_SCHEMA, orient="row")


def list_entries(conn: psycopg.Connection, tenant: str | None = None) -> list[tuple]:
    """(tenant_id, metric, unit, min, max, description, source, updated_at, updated_by): every entry,
    or the defaults and `tenant`'s own (its own first where it overrides a default)."""
    where, params = ("", ()) if tenant is None else ("WHERE tenant_id IN ('*', %s)", (tenant,))
    return conn.execute(
        "SELECT tenant_id, metric, unit, min_value, max_value, description, source, updated_at, updated_by "
        f"FROM analytics.metric_catalog {where} ORDER BY metric, tenant_id = '*', tenant_id",
        params,
    ).fetchall()


def upsert_entry(conn: psycopg.Connection, entry: MetricEntry, *, source: str, by: str | None) -> bool:
    """Add or replace one entry; True when it was new."""
    entry.check()
    row = conn.execute(
        """INSERT INTO analytics.metric_catalog AS c
               (tenant_id, metric, unit, min_value, max_value, description, source, updated_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (tenant_id, metric) DO UPDATE SET unit = excluded.unit, min_value = excluded.min_value,
               max_value = excluded.max_value, description = excluded.description, source = excluded.source,
               updated_by = excluded.updated_by, updated_at = now()
           RETURNING (xmax = 0)""",
        (
            entry.tenant_id,
            entry.metric,
            entry.unit,
            entry.min_value,
            entry.max_value,
            entry.description,
            source,
            by,
        ),
    ).fetchone()
    return bool(row and row[0])


def remove_entry(conn: psycopg.Connection, tenant: str, metric: str) -> bool:
    """Remove one entry (a tenant's own, or a default with tenant '*'); False when there was none.
    Readings already stored stay; new ones follow the tenant's policy."""
    cur = conn.execute("DELETE FROM analytics.metric_catalog WHERE tenant_id = %s AND metric = %s", (tenant, metric))
    return cur.rowcount > 0


def set_policy(conn: psycopg.Connection, tenant: str, policy: str, by: str | None) -> None:
    """`reject` or `accept` readings of metrics outside the tenant's catalogue ('*': the default)."""
    if policy not in POLICIES:
        raise CatalogError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if not tenant or len(tenant) > 200:
        raise CatalogError(f"tenant must be 1 to 200 characters, got {tenant!r}")
    conn.execute(
        """INSERT INTO analytics.metric_policy (tenant_id, unknown_metrics, updated_by) VALUES (%s, %s, %s)
           ON CONFLICT (tenant_id) DO UPDATE SET unknown_metrics = excluded.unknown_metrics,
               updated_by = excluded.updated_by, updated_at = now()""",
        (tenant, policy, by),
    )


def policy_of(conn: psycopg.Connection, tenant: str) -> tuple[str, bool]:
    """The tenant's policy and whether it is its own (False: the default applies)."""
    rows = dict(
        conn.execute(
            "SELECT tenant_id, unknown_metrics FROM analytics.metric_policy WHERE tenant_id IN ('*', %s)", (tenant,)
        ).fetchall()
    )
    if tenant in rows:
        return rows[tenant], True
    return rows.get(WILDCARD, "reject"), False
