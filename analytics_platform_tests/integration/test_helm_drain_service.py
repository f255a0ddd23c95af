"""The chart's drain-service pods, run as the chart renders them: each shard's exact command and
environment (the app ConfigMap, the container's env, DATABASE_URL as its Secret would give it)
drains its own partitions and together they read every message exactly once; their probes pass
against the running process and the live database, and fail for what they are meant to catch; and
SIGTERM makes each commit and exit 0 well inside terminationGracePeriodSeconds.

There is no cluster: the pods' processes run here, the console script and `python` from this
virtualenv standing for the image's /opt/venv/bin, and each pod's heartbeat file in the test's own
directory instead of the pod's /tmp."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from analytics_platform.contracts.registry import bind_domains
from analytics_platform.devstack.processes import free_port
from analytics_platform.devstack.stack import psycopg2_url
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.edge import wait_for
from analytics_platform_tests.support.helm import (
    PREFIX,
    dagster_instance_yaml,
    find,
    one,
    render,
    write_unreachable_kubeconfig,
)
from analytics_platform_tests.support.readings import KEY, reading
from analytics_platform_tests.support.stack import DatabaseHandle, domain_topic, produce

BIN = Path(sys.executable).parent
SHARDS = 2
# per partition of the test topic (3 partitions): shard 0 owns 0 and 2, shard 1 owns 1
SENT = {0: 3, 1: 2, 2: 4}
SENT_BY_SHARD = {0: SENT[0] + SENT[2], 1: SENT[1]}
FINALISING = (
    "drain service: finalises the window aggregates of the current hour at each 60 s bucket, 2 s after it closes"
)
BY_SHARD = (
    "SELECT shard, sum((report->>'messages')::int) FROM analytics.drain_reports WHERE domain = 'sensor' GROUP BY shard"
)


@dataclass
class Pod:
    """One drain-service Deployment's container, running as a local process."""

    name: str
    container: dict[str, Any]
    env: dict[str, str]
    grace_s: int
    process: subprocess.Popen
    log: Path

    def probe(self, which: str, **env: str) -> int:
        """The probe's exit code (its timeoutSeconds is the kubelet's business: on a loaded test
        machine a Python start-up alone can take seconds, so the test allows a minute)."""
        command = [sys.executable if part == "python" else part for part in self.container[which]["exec"]["command"]]
        if command[0] == "analytics-platform":
            command[0] = str(BIN / command[0])
        return subprocess.run(command, env={**self.env, **env}, capture_output=True, timeout=60).returncode

    @property
    def heartbeat(self) -> Path:
        return Path(self.env["DRAIN_HEARTBEAT_FILE"])

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    @property
    def container_env(self) -> dict[str, str]:
        return {e["name"]: e["value"] for e in self.container["env"]}

    def metrics(self) -> list[str]:
        """The sample lines the pod's metrics port serves (DRAIN_METRICS_PORT)."""
        url = f"http://127.0.0.1:{self.env['DRAIN_METRICS_PORT']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return [line for line in response.read().decode().splitlines() if not line.startswith("#")]


@pytest.fixture
def pods(settings: PlatformSettings, database: DatabaseHandle, tmp_path: Path) -> Iterator[list[Pod]]:
    docs = render(
        overrides={
            "kafka": {"brokers": settings.kafka_brokers, "topicPrefix": settings.kafka_topic_prefix},
            "ingest": {"drainShards": SHARDS, "drain": {"consumer": settings.drain_consumer}},
        }
    )
    config = one(docs, "ConfigMap", f"{PREFIX}-config")["data"]
    # the pods' DAGSTER_HOME: the instance ConfigMap's dagster.yaml, with a kubeconfig instead of the
    # in-cluster service account (the finaliser never launches a pod; the instance must still load)
    instance = dagster_instance_yaml(docs)
    instance["run_launcher"]["config"]["load_incluster_config"] = False
    instance["run_launcher"]["config"]["kubeconfig_file"] = str(write_unreachable_kubeconfig(tmp_path / "kubeconfig"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    deployments = [d for d in find(docs, "Deployment") if d["metadata"]["name"].startswith(f"{PREFIX}-drain-service-")]
    started: list[Pod] = []
    try:
        for deployment in deployments:
            spec = deployment["spec"]["template"]["spec"]
            (container,) = spec["containers"]
            env = {
                **config,
                **{e["name"]: e["value"] for e in container["env"]},
                # the pod's /tmp is its own emptyDir: here each pod gets its own file
                "DRAIN_HEARTBEAT_FILE": str(tmp_path / f"heartbeat-{deployment['metadata']['name']}"),
                # and its own network namespace: here each pod gets a free port for its metrics
                "DRAIN_METRICS_PORT": str(free_port()),
                "DAGSTER_HOME": str(home),
                # what secretRef analytics-database gives the pod
                "DATABASE_URL": database.pipeline_url,
                # the Dagster storage login (it creates Dagster's tables in the schema it owns)
                "DAGSTER_PG_URL": psycopg2_url(database.admin_url),
                "PATH": f"{BIN}:/usr/bin:/bin",
                "HOME": str(tmp_path),
                "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            }
            command = [str(BIN / container["command"][0]), *container["command"][1:]]
            log = tmp_path / f"{deployment['metadata']['name']}.log"
            with log.open("w") as out:
                process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            started.append(
                Pod(deployment["metadata"]["name"], container, env, spec["terminationGracePeriodSeconds"], process, log)
            )
        yield started
    finally:
        for pod in started:
            if pod.process.poll() is None:
                pod.process.kill()
                pod.process.wait(30)


def test_the_rendered_drain_service_pods_drain_probe_and_stop_cleanly(
    settings: PlatformSettings, database: DatabaseHandle, pods: list[Pod]
) -> None:
    assert [p.name for p in pods] == [f"{PREFIX}-drain-service-{shard}" for shard in range(SHARDS)]
    domains = [b.domain for b in bind_domains(settings)]
    for shard, pod in enumerate(pods):
        workers = ", ".join(f"{domain}[{shard}]" for domain in domains)
        wait_for(lambda pod=pod: pod.lines(), 120, f"{pod.name}'s first line")
        assert pod.lines()[0] == f"drain service: {workers}; passes of 30 s, Ctrl-C stops", pod.lines()
        # the chart's Dagster instance loaded: the pod finalises the current hour's buckets
        wait_for(lambda pod=pod: FINALISING in pod.lines(), 120, f"{pod.name} finalising")

    topic = domain_topic(settings)
    for partition, count in SENT.items():
        values = [reading(f"2025-08-20T03:{n:02d}:00Z", 20.0 + n, f"p{partition}-{n}") for n in range(count)]
        produce(settings.kafka_brokers, topic, [(KEY, v) for v in values], partition=partition)
    total = sum(SENT.values())
    wait_for(
        lambda: database.query("SELECT count(*) FROM analytics.raw_sensor_readings")[0][0] == total,
        120,
        "both shards committed every reading",
    )
    assert dict(database.query(BY_SHARD)) == {0: SENT[0] + SENT[2], 1: SENT[1]}
    assert database.query(
        "SELECT kafka_partition, next_offset FROM analytics.worker_checkpoints WHERE topic = %s ORDER BY 1", (topic,)
    ) == sorted(SENT.items())

    # each pod's metrics (deploy/prometheus/rules.yml reads the errors) count what it drained once its pass ends
    for shard, pod in enumerate(pods):
        assert pod.env["DRAIN_METRICS_PORT"] != pod.container_env["DRAIN_METRICS_PORT"] == "9400"
        drained = f'analytics_drain_messages_total{{domain="sensor",shard="{shard}"}} {float(SENT_BY_SHARD[shard])}'
        wait_for(lambda pod=pod, drained=drained: drained in pod.metrics(), 90, f"{pod.name}'s pass counted")
        errors = {line for line in pod.metrics() if line.startswith("analytics_drain_errors_total")}
        assert errors == {f'analytics_drain_errors_total{{domain="{d}",shard="{shard}"}} 0.0' for d in domains}

    for pod in pods:
        assert pod.probe("readinessProbe") == 0, pod.name
        assert pod.probe("readinessProbe", DATABASE_URL="postgresql://nobody:none@127.0.0.1:1/none") == 1, pod.name
        assert pod.probe("livenessProbe") == 0, pod.name
    # what the liveness probe catches: a process that stopped renewing its heartbeat. Stopped
    # (SIGSTOP), it renews nothing; its heartbeat is set back past the limit (3 x 30 s + 30 s)
    # instead of waiting two minutes for it to age, and stays there while the process is stopped
    stopped = pods[0]
    stopped.process.send_signal(signal.SIGSTOP)
    try:
        aged = time.time() - 121
        os.utime(stopped.heartbeat, (aged, aged))
        assert stopped.probe("livenessProbe") == 1
        assert stopped.heartbeat.stat().st_mtime == aged
    finally:
        stopped.process.send_signal(signal.SIGCONT)
    # running again, it renews the heartbeat within its 5 s cadence
    wait_for(lambda: stopped.heartbeat.stat().st_mtime > aged, 60, "the heartbeat renewed after SIGCONT")
    assert stopped.probe("livenessProbe") == 0

    for pod in pods:
        pod.process.send_signal(signal.SIGTERM)
    for pod in pods:
        assert pod.process.wait(pod.grace_s) == 0, pod.lines()
        assert pod.lines()[-1] == "drain service stopped; every batch it held is committed", pod.lines()
    assert database.query("SELECT count(*) FROM analytics.raw_sensor_readings")[0][0] == total
