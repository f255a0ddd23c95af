"""The simulator produces through the real broker: keyed messages on all four topics, and with fault
injection the drains land exactly what was sent, rejects with reasons, duplicates removed."""

from __future__ import annotations

from analytics_platform.contracts.registry import bind_domains, contract_config
from analytics_platform.ingest.drain import Drain
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.edge import read_whole_topic
from analytics_platform_tests.support.stack import DatabaseHandle
from edge_agents.simulator import TOPICS, SimulatorConfig, run


def test_simulator_run_produces_to_all_topics_with_keys(settings: PlatformSettings, database: DatabaseHandle) -> None:
    config = SimulatorConfig(
        tenants=1, factories=1, machines=2, rate=400, seed=3, late=0.1, duplicate=0.1, malformed=0.05
    )
    counts = run(config, settings.kafka_brokers, settings.kafka_topic_prefix, duration_s=2.0)
    produced = sum(counts.values())
    # each topic read to its high watermarks (the producer has flushed), not until a consume comes back empty
    prefix = settings.kafka_topic_prefix
    messages = {topic: read_whole_topic(settings.kafka_brokers, prefix + topic) for topic in TOPICS}
    assert sum(len(m) for m in messages.values()) == produced
    assert all(messages[t] for t in TOPICS), {t: len(m) for t, m in messages.items()}
    keys = {m.key().decode() for t in TOPICS for m in messages[t]}
    assert {"t1-f1-mc-01", "t1-f1-mc-02"} <= keys
    assert all(k.startswith("t1-f1-") for k in keys)

    # drain every domain: every produced message lands, bad ones are rejected, nothing is doubled
    cfg = contract_config(settings)
    landed = rejected = 0
    for binding in bind_domains(settings):
        report = Drain(
            binding,
            cfg,
            database_url=settings.database_url.get_secret_value(),
            kafka_config=settings.kafka_client_config(),
            consumer_name="sim-test",
            poll_timeout_s=settings.drain_poll_timeout_s,  # the tests' 0.2 s, as domain_drain's
        ).run(budget_s=30)
        landed += report.messages
        rejected += report.rejects
    assert landed == produced == database.scalar("SELECT count(*) FROM analytics.kafka_landing")
    assert rejected == counts.get("malformed", 0) == database.scalar("SELECT count(*) FROM analytics.rejected_message")
    raw = sum(
        database.scalar(f"SELECT count(*) FROM analytics.{t}")
        for t in ("raw_sensor_readings", "raw_device_health", "raw_sweep_readings", "raw_lab_results")
    )
    # each duplicate is the same bytes twice: one row; every other accepted message is one row
    assert raw == produced - counts.get("malformed", 0) - counts.get("duplicate", 0)
