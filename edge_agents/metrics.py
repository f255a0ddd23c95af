"""The agent's Prometheus metrics, on a registry of its own (several agents can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AgentMetrics:
    """Counters and gauges named in docs/edge.md; `snapshot()` gives the same numbers to tests."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.received = Counter("edge_agent_received", "Payloads handed in by sources", ["source"], registry=r)
        self.rejected = Counter(
            "edge_agent_rejected", "Payloads refused by the contract or the mapping", ["source", "reason"], registry=r
        )
        self.queued = Counter("edge_agent_queued", "Messages written to the durable queue", registry=r)
        self.sent = Counter("edge_agent_sent", "Messages acknowledged by the broker", registry=r)
        self.replayed = Counter(
            "edge_agent_replayed",
            "Acknowledged messages that had waited in the queue through an outage or an agent restart",
            registry=r,
        )
        self.dropped = Counter("edge_agent_dropped", "Messages given up, by policy", ["reason"], registry=r)
        self.delivery_errors = Counter(
            "edge_agent_delivery_errors", "Deliveries the broker did not acknowledge (will be retried)", registry=r
        )
        self.producer_restarts = Counter(
            "edge_agent_producer_restarts",
            "Kafka producers rebuilt: a fatal or producer-id error, the epoch-bump loop of a replaced broker, "
            "or a stall (the agent's log says which)",
            registry=r,
        )
        self.closing = Gauge(
            "edge_agent_producers_closing",
            "Replaced Kafka producers whose destroy has not finished (one that stays is stuck in librdkafka)",
            registry=r,
        )
        self.depth = Gauge("edge_agent_queue_depth", "Messages in the queue, not yet acknowledged", registry=r)
        self.bytes = Gauge("edge_agent_queue_bytes", "Payload bytes in the queue", registry=r)
        self.oldest_age = Gauge(
            "edge_agent_queue_oldest_age_seconds", "Age of the oldest message in the queue (0 when empty)", registry=r
        )
        self.in_flight = Gauge(
            "edge_agent_in_flight", "Messages handed to the producer, not yet acknowledged", registry=r
        )
        self.broker_up = Gauge("edge_agent_broker_up", "1 while deliveries succeed, 0 after a failure", registry=r)
        self.backpressure = Gauge("edge_agent_backpressure_active", "1 while sources are slowed down", registry=r)
        self.transitions = Counter("edge_agent_backpressure_transitions", "Backpressure switches", ["to"], registry=r)
        self.source_interval = Gauge(
            "edge_agent_source_interval_seconds", "Current sampling / poll interval of a source", ["source"], registry=r
        )
        self.source_connected = Gauge(
            "edge_agent_source_connected", "1 while a source is connected to its server", ["source"], registry=r
        )
        self.latency = Histogram(
            "edge_agent_delivery_latency_seconds",
            "From a source handing a payload in to the broker acknowledging it",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )

    def snapshot(self) -> dict[str, float]:
        """Every sample as `name{label=value,...}` → value."""
        out: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out
