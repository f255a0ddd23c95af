"""The metrics catalogue tables (analytics.metric_catalog, analytics.metric_policy): tenant data.

The packaged contracts/metrics.yaml seeds the platform defaults (tenant '*') and nothing more: after
that, tenants and operators edit the tables with `analytics-platform metrics ...` or the API, and
the drain reads them on every pass, so a new metric is accepted within one tick without a deploy.
Readings rejected while a metric was missing are re-admitted with `analytics-platform rejects
readmit` (or by re-materialising their raw partitions).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import psycopg

from analytics_platform.contracts.catalog import (
    LIMITS_SCHEMA,
    POLICIES,
    WILDCARD,
    CatalogError,
    MetricCatalog,
    MetricEntry,
    read_packaged,
)


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
    the value-range data contracts (`analytics_platform.contracts.catalog.with_catalog_limits`)."""
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
