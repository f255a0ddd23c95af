"""/v1/metrics passes `promtool check metrics` (Prometheus' own linter: names, types, suffixes, help) with a
sample in every family, and carries each pipeline figure deploy/prometheus/rules.yml reads, among them the open
alert conditions per rule kind that the run-failure alert counts; so does a running edge agent's endpoint."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from analytics_platform.devstack.processes import free_port
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import insert, running
from analytics_platform_tests.support.edge import agent_config, edge_prefix, running_agent, scrape_metrics, wait_for
from analytics_platform_tests.support.stack import DatabaseHandle
from analytics_platform_tests.support.tools import promtool, run


def test_v1_metrics_pass_promtool_and_carry_what_the_rules_read(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    now = datetime.now(UTC)
    insert(
        database,
        "rejected_message",
        [{"topic": "x", "kafka_partition": 0, "kafka_offset": 1, "kafka_ts": now, "reason": "not_json", "detail": "d"}],
    )
    insert(
        database,
        "ingest_resets",
        [
            {
                "consumer": "analytics-drain",
                "topic": "x",
                "kafka_partition": 0,
                "reason": "log_start_after_offset",
                "detail": "retention",
                "stored_offset": 5,
                "resumed_at": 9,
                "skipped": 4,
            }
        ],
    )
    insert(
        database,
        "worker_checkpoints",
        [{"consumer": "analytics-drain", "topic": "x", "kafka_partition": 0, "next_offset": 9}],
    )
    insert(
        database,
        "raw_sensor_readings",
        [
            {
                "time": now - timedelta(minutes=1),
                "tenant_id": "t1",
                "factory_id": "f1",
                "machine_id": "m1",
                "sensor_id": "s1",
                "metric": "temp",
                "value": 1.0,
                "unit": "degC",
                "schema_version": 1,
                "dedup_key": "t1|f1|m1|s1|temp",
                "topic": "sensors.device.readings",
                "kafka_partition": 0,
                "kafka_offset": 0,
            }
        ],
    )
    insert(database, "alert_rules", [{"rule_name": "run-failed", "kind": "run_failed"}])
    insert(database, "alert_rules", [{"rule_name": "anomaly-critical", "kind": "anomaly"}])
    condition = {"state": "open", "summary": "s", "opened_at": now, "last_seen_at": now}
    insert(
        database,
        "alert_conditions",
        [
            {**condition, "fingerprint": "run-failed:r1", "rule_name": "run-failed", "severity": "critical"},
            {**condition, "fingerprint": "run-failed:r2", "rule_name": "run-failed", "severity": "critical"},
            {**condition, "fingerprint": "run-failed:r0", "rule_name": "run-failed", "severity": "critical"}
            | {"state": "resolved"},
            {**condition, "fingerprint": "anomaly-critical:a", "rule_name": "anomaly-critical", "severity": "warning"},
        ],
    )
    with running(settings, database) as api:
        assert api.admin.get("/v1/health").status_code == 200
        assert api.admin.get("/v1/readings/nothing-here").status_code == 404
        api.admin.get("/v1/metrics")  # counted once answered: the next scrape has its own request too
        response = api.admin.get("/v1/metrics")
    assert response.status_code == 200
    lines = {line for line in response.text.splitlines() if line and not line.startswith("#")}
    assert {line for line in lines if line.startswith("analytics_alert_conditions_open")} == {
        'analytics_alert_conditions_open{kind="anomaly",rule="anomaly-critical",severity="warning"} 1.0',
        'analytics_alert_conditions_open{kind="run_failed",rule="run-failed",severity="critical"} 2.0',
    }
    assert 'analytics_ingest_expired_unread_total{topic="x"} 4.0' in lines
    assert 'analytics_ingest_offset_resets_total{reason="log_start_after_offset",topic="x"} 1.0' in lines
    assert 'analytics_drain_next_offset{consumer="analytics-drain",partition="0",topic="x"} 9.0' in lines
    names = {line.split("{")[0].split(" ")[0] for line in lines}
    # every family the rules read from the API has samples here, so the check below saw them all
    assert {
        "analytics_database_up",
        "analytics_rejected_messages_total",
        "analytics_ingest_offset_resets_total",
        "analytics_ingest_expired_unread_total",
        "analytics_drain_next_offset",
        "analytics_ingest_lag_seconds",
        "analytics_alert_conditions_open",
        "analytics_api_requests_total",
        "analytics_api_request_seconds_bucket",
    } <= names
    result = run([promtool(), "check", "metrics"], stdin=response.text)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_running_edge_agent_s_metrics_pass_promtool(kafka_brokers: str, tmp_path: Path) -> None:
    """The agent's own metrics endpoint while it publishes the simulator to the broker (every family the rules
    read, sent and queue figures moving), as Prometheus would scrape it."""
    port = free_port()
    config = agent_config(
        kafka_brokers,
        edge_prefix(kafka_brokers),
        tmp_path / "queue.db",
        [{"name": "sim", "type": "simulator", "rate": 200}],
        metrics={"host": "127.0.0.1", "port": port},
    )
    with running_agent(config):
        wait_for(lambda: scrape_metrics(port).get("edge_agent_sent_total", 0) >= 20, 60, "the agent to deliver")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert {"edge_agent_queue_depth", "edge_agent_broker_up", "edge_agent_sent_total"} <= samples
    assert "edge_agent_broker_up 1.0" in text.splitlines()
    result = run([promtool(), "check", "metrics"], stdin=text)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
