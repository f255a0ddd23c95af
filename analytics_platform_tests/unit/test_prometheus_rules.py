"""deploy/prometheus/rules.yml: valid for Prometheus (`promtool check rules`), each alert unit-tested by
`promtool test rules` (deploy/prometheus/rules.test.yml, firing and near-miss cases with exact labels and
annotations), and every metric the rules read is one the platform exposes. The edge agent's and the drain
service's metrics endpoints pass `promtool check metrics` (the API's /v1/metrics: integration/test_prometheus.py)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import helm_python
import pytest
import yaml
from prometheus_client import CollectorRegistry

from analytics_platform.api.metrics import HttpMetrics
from analytics_platform.ingest.service import DrainMetrics, DrainService
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.helm import CHART_DIR, KUBERNETES_VERSION, NAMESPACE, PREFIX, find, one, render
from analytics_platform_tests.support.tools import RULES, RULES_TESTS, promtool, run
from edge_agents.metrics import AgentMetrics

# names the API's PipelineCollector exposes (read from the database at scrape time; the integration test checks
# them against a real scrape)
PIPELINE_METRICS = {
    "analytics_database_up",
    "analytics_rejected_messages_total",
    "analytics_ingest_offset_resets_total",
    "analytics_ingest_expired_unread_total",
    "analytics_drain_next_offset",
    "analytics_ingest_lag_seconds",
    "analytics_alert_conditions_open",
}
METRIC = re.compile(r"\b((?:analytics|edge_agent)_[a-z0-9_]+)\b")


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def exposed_names(registry: CollectorRegistry) -> set[str]:
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_rules_pass_promtool_check_rules() -> None:
    result = run([promtool(), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_rules_unit_tests_pass() -> None:
    result = run([promtool(), "test", "rules", RULES_TESTS.name], cwd=RULES_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].strip() == "SUCCESS"


def test_the_issue_s_alerts_are_there_and_each_has_a_firing_test() -> None:
    names = [rule["alert"] for rule in rules()]
    assert names == [
        "AnalyticsIngestLag",
        "AnalyticsRejectsRatio",
        "AnalyticsDrainErrors",
        "AnalyticsOffsetReset",
        "AnalyticsMessagesExpiredUnread",
        "AnalyticsRunFailed",
        "AnalyticsDatabaseDown",
        "AnalyticsApiErrorRate",
        "AnalyticsApiLatency",
        "EdgeAgentQueueDepth",
        "EdgeAgentBrokerDown",
    ]
    firing = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert firing == set(names)
    assert all(rule["labels"]["severity"] in ("warning", "critical") for rule in rules())


def test_the_rules_read_only_metrics_the_platform_exposes() -> None:
    api = CollectorRegistry()
    http = HttpMetrics(api)
    # a labelled family has samples once a label set was used
    http.requests.labels("/v1/agg", "GET", "200").inc()
    http.latency.labels("/v1/agg", "GET").observe(0.1)
    drain = {f"{name}_total" for _attribute, name, _help in DrainMetrics.FAMILIES}
    edge = AgentMetrics()
    edge.dropped.labels("queue_full").inc()
    known = PIPELINE_METRICS | exposed_names(api) | drain | exposed_names(edge.registry)
    used = {name for rule in rules() for name in METRIC.findall(rule["expr"])}
    assert used - known == set()
    # the latency rule reads the histogram's buckets, which exist once a request was timed
    assert "analytics_api_request_seconds_bucket" in used


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_edge_agent_metrics_pass_promtool_check_metrics() -> None:
    """Served the way the agent serves them (prometheus_client's server on the agent's registry), with a sample
    in every labelled family, so the check sees every name and label."""
    from prometheus_client import start_http_server

    metrics = AgentMetrics()
    metrics.received.labels("plc-1").inc(3)
    metrics.rejected.labels("plc-1", "out_of_range").inc()
    metrics.dropped.labels("queue_full").inc()
    metrics.transitions.labels("on").inc()
    metrics.source_interval.labels("plc-1").set(1.0)
    metrics.source_connected.labels("plc-1").set(1)
    metrics.latency.observe(0.02)
    metrics.depth.set(42)
    server, _thread = start_http_server(0, "127.0.0.1", registry=metrics.registry)
    try:
        text = scrape(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
    assert "edge_agent_queue_depth 42.0" in text.splitlines()
    result = run([promtool(), "check", "metrics"], stdin=text)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_drain_service_metrics_count_each_thread_and_pass_promtool_check_metrics() -> None:
    service = DrainService(PlatformSettings(domains_enabled=["sensor", "lab"], drain_shards=2))
    for (domain, shard), state in service.states.items():
        state.passes, state.messages, state.rows, state.rejects = 10, 1000 + shard, 990 + shard, 10
        state.errors = 3 if (domain, shard) == ("sensor", 1) else 0
    server, port = service.serve_metrics(0, "127.0.0.1")
    try:
        text = scrape(port)
    finally:
        server.shutdown()
        server.server_close()
    lines = set(text.splitlines())
    assert {line for line in lines if line.startswith("analytics_drain_errors_total")} == {
        'analytics_drain_errors_total{domain="lab",shard="0"} 0.0',
        'analytics_drain_errors_total{domain="lab",shard="1"} 0.0',
        'analytics_drain_errors_total{domain="sensor",shard="0"} 0.0',
        'analytics_drain_errors_total{domain="sensor",shard="1"} 3.0',
    }
    assert 'analytics_drain_messages_total{domain="sensor",shard="1"} 1001.0' in lines
    assert 'analytics_drain_rows_total{domain="lab",shard="0"} 990.0' in lines
    result = run([promtool(), "check", "metrics"], stdin=text)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_chart_installs_the_rules_as_a_prometheus_rule(tmp_path: Path) -> None:
    """The chart's PrometheusRule is rules.yml itself (files/prometheus-rules.yml links to it), labelled for the
    operator's ruleSelector, and Prometheus accepts what it renders; off by default (it needs the operator's CRDs)."""
    assert find(render(), "PrometheusRule") == []
    overrides = {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}
    rule = one(render(overrides=overrides), "PrometheusRule", PREFIX)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["app.kubernetes.io/component"] == "monitoring"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    rendered = tmp_path / "rules.yml"
    rendered.write_text(yaml.safe_dump(rule["spec"]))
    result = run([promtool(), "check", "rules", str(rendered)])
    assert result.returncode == 0 and "SUCCESS: 11 rules found" in result.stdout, result.stdout + result.stderr
    report = helm_python.lint(
        CHART_DIR, overrides, strict=True, kube_version=f"v{KUBERNETES_VERSION}", namespace=NAMESPACE
    )
    assert [m for m in report["messages"] if m["severity"] >= 2] == [] and report["errors"] == [], report
    assert (CHART_DIR / "files" / "prometheus-rules.yml").resolve() == RULES.resolve()


def test_a_missing_promtool_fails_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match=r"^promtool is not installed: apt-get install prometheus \(make test"):
        promtool()
