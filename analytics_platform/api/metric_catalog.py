"""The metrics catalogue as the API checks query parameters against it: tenant data, read from the
database and kept for a few seconds, so a metric a tenant adds is queryable at once (the cache is
dropped on every edit through the API) and within `ttl_s` after an edit made elsewhere."""

from __future__ import annotations

import threading
import time

from analytics_platform.api.db import Database
from analytics_platform.api.params import known
from analytics_platform.contracts.catalog import ACCEPT, WILDCARD, MetricCatalog


class MetricCatalogCache:
    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self._catalog: MetricCatalog | None = None
        self._at = 0.0
        self._generation = 0  # bumped by every invalidate(): a read that raced an edit is not kept
        self._lock = threading.Lock()

    def get(self, db: Database) -> MetricCatalog:
        catalog = self._catalog
        if catalog is None or time.monotonic() - self._at > self.ttl_s:
            generation = self._generation
            with db.connection() as conn:
                entries = frozenset(
                    (r["tenant_id"], r["metric"])
                    for r in conn.execute("SELECT tenant_id, metric FROM analytics.metric_catalog")
                )
                policies = {
                    r["tenant_id"]: r["unknown_metrics"]
                    for r in conn.execute("SELECT tenant_id, unknown_metrics FROM analytics.metric_policy")
                }
            policies.setdefault(WILDCARD, "reject")
            catalog = MetricCatalog(entries, policies)
            with self._lock:
                if generation == self._generation:
                    self._catalog, self._at = catalog, time.monotonic()
        return catalog

    def invalidate(self) -> None:
        with self._lock:
            self._catalog = None
            self._generation += 1


def known_metric(cache: MetricCatalogCache, db: Database, tenant: str, metric: str) -> str:
    """`metric` when the tenant's readings may carry it (its catalogue, or any name under the
    `accept` policy, whose readings are stored uncatalogued); else a 422 listing the known ones."""
    catalog = cache.get(db)
    if catalog.policy_of(tenant) == ACCEPT:
        return metric
    return known("metric", metric, catalog.known_to(tenant))
