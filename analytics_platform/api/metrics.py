"""Prometheus metrics of the API process: HTTP traffic, the DB pool, and pipeline figures read
from the database at scrape time (rejects per topic and reason, drain positions and their age)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from analytics_platform.api.db import Database, DatabaseDown
from analytics_platform.contracts.sensor import SensorContract


class HttpMetrics:
    """Requests and latency per route template (never the raw path: bounded cardinality)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "analytics_api_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "analytics_api_request_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        # each label set's counter and histogram, looked up once: prometheus_client's labels() takes a
        # lock and rebuilds the key on every call. As bounded as the metrics' own label sets.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request answered: the request middleware's, and the fast path's (api/revalidate.py)."""
        children = self._children.get((route, method, status))
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)


class PipelineCollector(Collector):
    """Reads pipeline figures on scrape, cached for `ttl` seconds to keep scrapes cheap.

    `raw_tables`: the raw table of every enabled domain (the registry's, so a domain registered by
    configuration is measured like the others)."""

    def __init__(self, db: Database, raw_tables: Sequence[str], ttl: float = 5.0) -> None:
        self.db = db
        self.raw_tables = tuple(raw_tables)
        self.ttl = ttl
        self._at = 0.0
        self._cache: list = []

    def collect(self) -> Iterator:
        if time.monotonic() - self._at > self.ttl:
            self._cache = self._read()
            self._at = time.monotonic()
        yield from self._cache

    def _read(self) -> list:
        pool = GaugeMetricFamily("analytics_api_db_pool", "Connection pool statistics", labels=["stat"])
        for name, value in self.db.stats().items():
            pool.add_metric([name], value)
        loop_pool = GaugeMetricFamily(
            "analytics_api_db_loop_pool",
            "Connection pool statistics of the event loop's pool (the state of repeats and 304s, api/stages.py)",
            labels=["stat"],
        )
        for name, value in self.db.loop_stats().items():
            loop_pool.add_metric([name], value)
        state_reads = CounterMetricFamily(
            "analytics_api_state_reads",
            "The state statements of repeats and 304s, read in batches (api/state_reads.py): requests that asked "
            "one, distinct statements sent, batches sent",
            labels=["what"],
        )
        for name, value in self.db.state_read_counts().items():
            state_reads.add_metric([name], value)
        up = GaugeMetricFamily("analytics_database_up", "1 when the API can query the database")
        rejects = CounterMetricFamily(
            "analytics_rejected_messages", "Messages rejected by their contract", labels=["topic", "reason"]
        )
        offsets = GaugeMetricFamily(
            "analytics_drain_next_offset",
            "Next Kafka offset stored by each drain",
            labels=["consumer", "topic", "partition"],
        )
        age = GaugeMetricFamily(
            "analytics_drain_checkpoint_age_seconds",
            "Seconds since a drain last stored progress",
            labels=["consumer", "topic", "partition"],
        )
        resets = CounterMetricFamily(
            "analytics_ingest_offset_resets",
            "Kafka logs that changed under a drain's stored offset (broker replaced, topic re-created, retention), "
            "by topic and reason (analytics.ingest_resets)",
            labels=["topic", "reason"],
        )
        expired = CounterMetricFamily(
            "analytics_ingest_expired_unread",
            "Messages Kafka's retention removed before any drain read them, by topic",
            labels=["topic"],
        )
        uncatalogued = GaugeMetricFamily(
            "analytics_uncatalogued_readings",
            "Raw readings stored under a tenant's `accept` policy for metrics outside its catalogue",
            labels=["tenant", "metric"],
        )
        lag = GaugeMetricFamily(
            "analytics_ingest_lag_seconds",
            "Seconds between now and the newest stored raw row of each domain (the time of the reading itself)",
            labels=["table"],
        )
        live = GaugeMetricFamily(
            "analytics_live_anomalies",
            "Anomaly rows the live judge flagged, by outcome: pending (their hour not judged yet), confirmed (the "
            "hourly record found them too), not_confirmed (it did not: closed)",
            labels=["outcome"],
        )
        conditions = GaugeMetricFamily(
            "analytics_alert_conditions_open",
            "Open alert conditions by rule, rule kind and severity (a run_failed rule's are failed Dagster runs)",
            labels=["rule", "kind", "severity"],
        )
        try:
            with self.db.connection() as conn:
                for row in conn.execute(
                    "SELECT c.rule_name, coalesce(r.kind, 'unknown') AS kind, c.severity, count(*) AS n "
                    "FROM analytics.alert_conditions c LEFT JOIN analytics.alert_rules r USING (rule_name) "
                    "WHERE c.state = 'open' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
                ):
                    conditions.add_metric([row["rule_name"], row["kind"], row["severity"]], row["n"])
                for row in conn.execute(  # the partial index holds only the live rows
                    "SELECT CASE WHEN status = 'not_confirmed' THEN 'not_confirmed' WHEN confirmed_at IS NULL "
                    "THEN 'pending' ELSE 'confirmed' END AS outcome, count(*) AS n FROM analytics.analytics_anomaly "
                    "WHERE detected_live_at IS NOT NULL GROUP BY 1 ORDER BY 1"
                ):
                    live.add_metric([row["outcome"]], row["n"])
                for table in self.raw_tables:
                    row = conn.execute(
                        f"SELECT extract(epoch FROM now() - max(time)) AS lag FROM analytics.{table}"
                    ).fetchone()
                    if row["lag"] is not None:
                        lag.add_metric([table], float(row["lag"]))
                for row in conn.execute("SELECT topic, reason, rejected FROM analytics.v_rejects_summary"):
                    rejects.add_metric([row["topic"], row["reason"]], row["rejected"])
                for row in conn.execute(
                    "SELECT topic, reason, count(*) AS n, sum(skipped) AS skipped FROM analytics.ingest_resets "
                    "GROUP BY topic, reason ORDER BY topic, reason"
                ):
                    resets.add_metric([row["topic"], row["reason"]], row["n"])
                    if row["skipped"]:
                        expired.add_metric([row["topic"]], float(row["skipped"]))
                for row in conn.execute(  # the partial index holds only these rows
                    f"SELECT tenant_id, metric, count(*) AS n FROM analytics.{SensorContract.raw_table} "
                    "WHERE uncatalogued GROUP BY tenant_id, metric ORDER BY 1, 2"
                ):
                    uncatalogued.add_metric([row["tenant_id"], row["metric"]], row["n"])
                for row in conn.execute(
                    "SELECT consumer, topic, kafka_partition, next_offset, "
                    "extract(epoch FROM since_update) AS age FROM analytics.v_ingest_progress"
                ):
                    labels = [row["consumer"], row["topic"], str(row["kafka_partition"])]
                    offsets.add_metric(labels, row["next_offset"])
                    age.add_metric(labels, float(row["age"]))
            up.add_metric([], 1)
        except DatabaseDown:
            up.add_metric([], 0)
        return [
            pool,
            loop_pool,
            state_reads,
            up,
            rejects,
            resets,
            expired,
            uncatalogued,
            offsets,
            age,
            lag,
            live,
            conditions,
        ]
