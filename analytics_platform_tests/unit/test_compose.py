"""compose.yaml: valid for the compose client (`docker compose config`, or Debian's docker-compose; neither needs a
Docker engine, and none runs here: the file is checked, never started), and in agreement with the Helm chart it
mirrors: the same image, the same command for each component, the chart's settings (its app ConfigMap at default
values and each container's own variables) with the differences compose needs written out, settings the platform
accepts, a Dagster instance that is the chart's without Kubernetes, and an edge agent config the agent accepts."""

from __future__ import annotations

import os
from typing import Any

import pytest
import yaml

from analytics_platform.contracts.registry import registry
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.helm import PREFIX, dagster_instance_yaml, find, one, render
from analytics_platform_tests.support.tools import COMPOSE_FILE, compose_command, run
from edge_agents.config import parse_config

SECRETS = {"POSTGRES_PASSWORD": "pgadmin1", "ANALYTICS_PIPELINE_PASSWORD": "pipe2", "ANALYTICS_API_PASSWORD": "api3"}
# compose service -> the chart's workload (Deployment or Job) it stands for
WORKLOADS = {
    "migrations": f"{PREFIX}-migrate",
    "user-code": f"{PREFIX}-user-code",
    "webserver": f"{PREFIX}-webserver",
    "daemon": f"{PREFIX}-daemon",
    "drain": f"{PREFIX}-drain-service-0",
    "api": f"{PREFIX}-api",
    "edge-agent": f"{PREFIX}-edge-agent",
}
# the chart's app ConfigMap values compose sets otherwise, and why
DIFFERENT = {
    "DAGSTER_UI_URL": "http://127.0.0.1:3000",  # the address a browser on the host opens, not a cluster Service
    "BACKFILL_EXECUTOR": "in_process",  # no Kubernetes to run step pods on
}
COMPOSE_DIR = COMPOSE_FILE.parent / "deploy" / "compose"


def compose_config(**env: str) -> Any:
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **env}
    result = run([*compose_command(), "-f", str(COMPOSE_FILE), "config"], cwd=COMPOSE_FILE.parent, env=environ)
    return result


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result = compose_config(**SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def chart() -> list[dict[str, Any]]:
    return render(overrides={"edgeAgent": {"enabled": True}})


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    workload = next(d for d in docs if d["kind"] in ("Deployment", "Job") and d["metadata"]["name"] == name)
    return workload["spec"]["template"]["spec"]["containers"][0]


def test_compose_config_accepts_the_file_and_names_each_missing_secret(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "timescaledb",
        "kafka",
        "kafka-topics",
        "migrations",
        "user-code",
        "webserver",
        "daemon",
        "drain",
        "api",
        "edge-agent",
    }
    for name in SECRETS:
        result = compose_config(**{k: v for k, v in SECRETS.items() if k != name})
        assert result.returncode != 0
        assert f"set {name}" in result.stderr


def test_kafka_runs_kraft_with_the_four_domains_topics(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]["environment"]
    assert (kafka["KAFKA_PROCESS_ROLES"], kafka["KAFKA_ADVERTISED_LISTENERS"]) == (
        "broker,controller",
        "PLAINTEXT://kafka:9092",
    )
    assert "KAFKA_ZOOKEEPER_CONNECT" not in kafka
    (script,) = compose["services"]["kafka-topics"]["command"]
    topics = "sensors.device.readings device.health sensors.sweep.readings lab.results"
    assert f"for t in {topics};" in script
    assert set(topics.split()) == {c.default_topic for c in registry([]).contracts.values()}


def test_same_image_and_commands_as_the_chart(compose: dict[str, Any], chart: list[dict[str, Any]]) -> None:
    for service, workload in WORKLOADS.items():
        ours, theirs = compose["services"][service], container(chart, workload)
        assert ours["image"] == theirs["image"] == "analytics-platform:0.1.0", service
        assert ours["command"] == theirs["command"], service
    assert compose_config(**SECRETS, ANALYTICS_IMAGE="registry.example.com/ap:1.2").stdout.count(
        "image: registry.example.com/ap:1.2"
    ) == len(WORKLOADS)


def test_the_chart_s_settings_with_compose_s_differences_written_out(
    compose: dict[str, Any], chart: list[dict[str, Any]]
) -> None:
    app = one(chart, "ConfigMap", f"{PREFIX}-config")["data"]
    assert set(DIFFERENT) <= set(app)
    for service, workload in WORKLOADS.items():
        env = compose["services"][service]["environment"]
        theirs = container(chart, workload)
        own = {e["name"]: e["value"] for e in theirs.get("env", [])}
        if service == "edge-agent":
            assert env == own
            continue
        expected = {**app, **DIFFERENT, **own}
        assert {k: str(env.get(k)) for k in expected} == expected, service
        assert env["DATABASE_URL"] == "postgresql://analytics_pipeline:pipe2@timescaledb:5432/analytics"
        assert env["DAGSTER_PG_URL"] == "postgresql+psycopg2://analytics_pipeline:pipe2@timescaledb:5432/dagster"
    assert compose["services"]["api"]["environment"]["API_DATABASE_URL"] == (
        "postgresql://analytics_api:api3@timescaledb:5432/analytics"
    )
    assert compose["services"]["migrations"]["environment"]["MIGRATIONS_DATABASE_URL"] == (
        "postgresql://postgres:pgadmin1@timescaledb:5432/analytics"
    )


@pytest.mark.parametrize("service", ["migrations", "user-code", "webserver", "daemon", "drain", "api"])
def test_the_platform_accepts_each_service_s_settings(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in PlatformSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in compose["services"][service]["environment"].items():
        monkeypatch.setenv(name, str(value))
    settings = PlatformSettings()
    assert (settings.drain_mode, settings.kafka_brokers, settings.windows) == ("service", "kafka:9092", [60, 300, 3600])
    if service == "drain":
        assert (settings.drain_shards_run_here(), settings.drain_metrics_port) == ([0], 9400)


def test_ports_are_the_chart_s_on_the_loopback_only(compose: dict[str, Any], chart: list[dict[str, Any]]) -> None:
    def published(service: str) -> list[tuple[str, int, int]]:
        out = []
        for port in compose["services"][service].get("ports", []):
            if isinstance(port, str):  # docker-compose v1: "127.0.0.1:8000:8000/tcp"
                host_ip, published_port, target = port.removesuffix("/tcp").split(":")
                out.append((host_ip, int(published_port), int(target)))
            else:  # docker compose v2: the long syntax
                out.append((port["host_ip"], int(port["published"]), int(port["target"])))
        return out

    assert published("api") == [("127.0.0.1", 8000, 8000)]
    assert published("webserver") == [("127.0.0.1", 3000, 3000)]
    assert {p["containerPort"] for p in container(chart, f"{PREFIX}-api")["ports"]} == {8000}
    assert {p["containerPort"] for p in container(chart, f"{PREFIX}-webserver")["ports"]} == {3000}
    assert not any(compose["services"][s].get("ports") for s in ("timescaledb", "kafka", "user-code", "drain"))


def test_start_order(compose: dict[str, Any]) -> None:
    def needs(service: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in compose["services"][service]["depends_on"].items()}

    done = "service_completed_successfully"
    assert needs("migrations") == {"timescaledb": "service_healthy"}
    assert needs("kafka-topics") == {"kafka": "service_healthy"}
    assert needs("user-code") == {"migrations": done, "kafka-topics": done}
    assert needs("drain") == {"migrations": done, "kafka-topics": done}
    assert needs("webserver") == needs("daemon") == {"user-code": "service_healthy"}
    assert needs("api") == {"migrations": done}
    assert needs("edge-agent") == {"kafka-topics": done}


def test_dagster_instance_is_the_chart_s_without_kubernetes(chart: list[dict[str, Any]]) -> None:
    ours = yaml.safe_load((COMPOSE_DIR / "dagster.yaml").read_text())
    theirs = dagster_instance_yaml(chart)
    assert theirs["run_launcher"]["class"] == "K8sRunLauncher" and "run_launcher" not in ours  # the default one
    assert ours["concurrency"]["runs"]["max_concurrent_runs"] == 4  # one host (the chart: 20)
    same = set(theirs) - {"run_launcher", "concurrency"}
    assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}
    assert set(ours) == set(theirs) - {"run_launcher"}
    workspace = yaml.safe_load((COMPOSE_DIR / "workspace.yaml").read_text())
    chart_workspace = yaml.safe_load(one(chart, "ConfigMap", f"{PREFIX}-workspace")["data"]["workspace.yaml"])
    assert workspace == {
        "load_from": [{"grpc_server": {"host": "user-code", "port": 3030, "location_name": "analytics_platform"}}]
    }
    assert (
        chart_workspace["load_from"][0]["grpc_server"] | {"host": "user-code"}
        == workspace["load_from"][0]["grpc_server"]
    )


def test_the_edge_agent_config_is_valid_and_publishes_the_simulator_to_the_compose_kafka(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in compose["services"]["edge-agent"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    config = parse_config(yaml.safe_load((COMPOSE_DIR / "agent.yaml").read_text()))
    assert config.kafka.brokers == "kafka:9092"
    assert [(s.name, s.type) for s in config.sources] == [("simulator", "simulator")]
    assert (config.metrics.host, config.metrics.port) == ("0.0.0.0", 9464)
    # the queue lives in the named volume mounted over the image's home directory
    assert str(config.queue.path) == "/home/app/queue.db"
    assert any(v.startswith("edge-queue:/home/app") for v in volumes(compose, "edge-agent"))
    assert find(render(overrides={"edgeAgent": {"enabled": True}}), "Deployment", f"{PREFIX}-edge-agent")


def volumes(compose: dict[str, Any], service: str) -> list[str]:
    out = []
    for volume in compose["services"][service].get("volumes", []):
        # v1 prints "source:target:mode", v2 the long syntax
        out.append(volume if isinstance(volume, str) else f"{volume.get('source')}:{volume['target']}")
    return out


def test_the_database_init_script_makes_the_roles_the_urls_use() -> None:
    script = (COMPOSE_DIR / "initdb.sh").read_text()
    assert "CREATE ROLE analytics_pipeline LOGIN PASSWORD :'pipeline_pw' IN ROLE analytics_rw;" in script
    assert "CREATE ROLE analytics_api LOGIN PASSWORD :'api_pw' IN ROLE analytics_ro;" in script
    assert "CREATE DATABASE dagster OWNER analytics_pipeline;" in script
    assert os.access(COMPOSE_DIR / "initdb.sh", os.X_OK)


def test_a_missing_compose_client_fails_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match=r"^no compose client: apt-get install docker-compose"):
        compose_command()
