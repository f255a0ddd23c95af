"""The Helm chart (helm/analytics-platform): it renders and lints cleanly, every manifest is valid
Kubernetes, and what a production install depends on holds for every values set — no secret value
anywhere, resources, probes and a locked-down securityContext on every container, the migrations
as a hook that needs nothing the chart creates, the code locations and drain shards as configured,
a Dagster instance with the K8sRunLauncher and the run-queue limits, NetworkPolicies, one drain-service
pod per shard exactly when the drain runs as a service. Bad values fail at render time with a
message naming the value. No cluster, no database."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.helm import (
    CHART_DIR,
    KUBERNETES_VERSION,
    NAMESPACE,
    PREFIX,
    PRODUCTION_VALUES,
    RELEASE,
    dagster_instance_yaml,
    find,
    load_values,
    one,
    render,
)
from edge_agents.config import parse_config

DAGSTER_COMPONENTS = {"webserver", "daemon", "user-code", "drain"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|DATABASE_URL|PG_URL|_URL$", re.IGNORECASE)
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


@dataclass(frozen=True)
class Case:
    """One values set and what the chart must make of it."""

    id: str
    files: tuple[Path, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    image: str = "analytics-platform:0.1.0"
    # code location → DRAIN_SHARDS_HERE of its code server
    locations: dict[str, str] = field(default_factory=lambda: {"analytics_platform": "all"})
    drain_shards: int = 1
    dagster_secrets: tuple[str, ...] = ("analytics-database",)
    api_secrets: tuple[str, ...] = ("analytics-database",)
    migration_secrets: tuple[str, ...] = ("analytics-database",)
    hpa: tuple[int, int] = (1, 3)
    run_resources: dict[str, Any] = field(
        default_factory=lambda: {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "1", "memory": "2Gi"},
        }
    )
    edge_agent: bool = False
    kafka_tls: bool = False
    # DRAIN_MODE; `service` renders one drain-service Deployment per shard
    drain_mode: str = "service"
    drain_service_secrets: tuple[str, ...] = ("analytics-database",)
    drain_service_resources: dict[str, Any] = field(
        default_factory=lambda: {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        }
    )
    pull_secrets: tuple[str, ...] = ()
    network_policies: frozenset[str] = frozenset({"default-deny", "code-servers", "webserver", "api", "drain-service"})


CASES = [
    Case("default"),
    Case(
        "production",
        files=(PRODUCTION_VALUES,),
        image="registry.example.com/plant/analytics-platform:0.1.0",
        locations={"analytics_platform": "none", "drain-shard-0": "0", "drain-shard-1": "1", "drain-shard-2": "2"},
        drain_shards=3,
        dagster_secrets=("analytics-database", "analytics-kafka", "analytics-alerts"),
        api_secrets=("analytics-api-database", "analytics-kafka"),
        migration_secrets=("analytics-database", "analytics-migrations"),
        hpa=(2, 10),
        run_resources={"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        kafka_tls=True,
        pull_secrets=("regcred",),
        drain_service_secrets=("analytics-database", "analytics-kafka", "analytics-alerts"),
        drain_service_resources={"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    ),
    Case(
        "shared-drain-3",
        overrides={"ingest": {"drainShards": 3, "separateDrainLocations": False}},
        drain_shards=3,
    ),
    Case(
        "edge-agent",
        overrides={"edgeAgent": {"enabled": True}},
        edge_agent=True,
        network_policies=frozenset({"default-deny", "code-servers", "webserver", "api", "drain-service", "edge-agent"}),
    ),
    Case("drain-service-2", overrides={"ingest": {"drainShards": 2}}, drain_shards=2),
    Case(
        "drain-sensors",
        overrides={"ingest": {"drainShards": 2, "drain": {"mode": "sensor"}}},
        drain_shards=2,
        drain_mode="sensor",
        network_policies=frozenset({"default-deny", "code-servers", "webserver", "api"}),
    ),
]
BY_ID = {case.id: case for case in CASES}


@pytest.fixture(scope="module", params=CASES, ids=[case.id for case in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


_RENDERED: dict[str, list[dict[str, Any]]] = {}


@pytest.fixture
def docs(case: Case) -> list[dict[str, Any]]:
    """The case's manifests, rendered once per module run (rendering goes through Go, ~0.3 s)."""
    if case.id not in _RENDERED:
        _RENDERED[case.id] = render(case.files, case.overrides)
    return _RENDERED[case.id]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload."""
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    ]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def component(doc: dict[str, Any]) -> str:
    return doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def env_from(container: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("configMap", e["configMapRef"]["name"]) if "configMapRef" in e else ("secret", e["secretRef"]["name"])
        for e in container.get("envFrom", [])
    ]


def app_config(docs: list[dict[str, Any]]) -> dict[str, str]:
    return one(docs, "ConfigMap", f"{PREFIX}-config")["data"]


# --- rendering, schema, lint ---------------------------------------------------------------


def test_every_manifest_is_valid_kubernetes(docs: list[dict[str, Any]]) -> None:
    assert docs, "nothing rendered"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        assert doc["metadata"]["namespace"] == NAMESPACE
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "two objects with the same kind and name"


def test_helm_lint_strict_has_no_warnings(case: Case) -> None:
    report = helm_python.lint(
        CHART_DIR,
        load_values(case.files, case.overrides),
        strict=True,
        kube_version=f"v{KUBERNETES_VERSION}",
        namespace=NAMESPACE,
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == [], report


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ingest": {"drainShards": 0}}, "at '/ingest/drainShards': minimum: got 0, want 1"),
        ({"ingest": {"drainShards": 1025}}, "at '/ingest/drainShards': maximum"),
        ({"image": {"tag": "1.0 beta"}}, "at '/image/tag': '1.0 beta' does not match pattern"),
        ({"kafka": {"brokers": ""}}, "at '/kafka/brokers'"),
        ({"database": {"timescale": "maybe"}}, "at '/database/timescale'"),
        ({"api": {"resources": {"limits": None}}}, "at '/api/resources': missing property 'limits'"),
        ({"dagster": {"backfillExecutor": "celery"}}, "at '/dagster/backfillExecutor'"),
        ({"secrets": {"database": "Not A Name"}}, "at '/secrets/database'"),
        ({"drainShards": 3}, "additional properties 'drainShards' not allowed"),
        ({"ingest": {"drain": {"mode": "daemon"}}}, "at '/ingest/drain/mode'"),
        ({"ingest": {"drain": {"passSeconds": 0}}}, "at '/ingest/drain/passSeconds'"),
        ({"ingest": {"drainService": {"replicas": 2}}}, "additional properties 'replicas' not allowed"),
        (
            {"config": {"extraEnv": {"KAFKA_SASL_PASSWORD": "hunter2"}}},
            "config.extraEnv.KAFKA_SASL_PASSWORD looks like a secret",
        ),
        (
            {"api": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
            "api.autoscaling.minReplicas (5) must not exceed api.autoscaling.maxReplicas (2)",
        ),
        (
            {"edgeAgent": {"enabled": True, "config": {"queue": {"path": "/tmp/queue.db"}}}},
            "edgeAgent.config.queue.path must be a file under /var/lib/edge-agent/",
        ),
        (
            {"edgeAgent": {"enabled": True, "config": {"sources": [{"name": "sim", "type": "simulator"}]}}},
            "edgeAgent.httpService.enabled needs an http source",
        ),
    ],
    ids=[
        "drainShards-0",
        "drainShards-1025",
        "tag-with-space",
        "no-brokers",
        "timescale-choice",
        "no-limits",
        "executor-choice",
        "secret-name",
        "misplaced-key",
        "drain-mode-choice",
        "pass-zero",
        "drain-service-replicas",
        "secret-in-extraEnv",
        "hpa-min-above-max",
        "queue-off-volume",
        "http-service-without-source",
    ],
)
def test_bad_values_fail_with_a_message_naming_them(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises((helm_python.HelmValuesError, helm_python.HelmRenderError)) as caught:
        render(overrides=overrides)
    assert message in str(caught.value)


# --- secrets ------------------------------------------------------------------------------------


def test_no_secret_is_rendered_or_inlined(docs: list[dict[str, Any]]) -> None:
    assert find(docs, "Secret") == []
    for where, spec in pod_specs(docs):
        for container in containers(spec):
            for entry in container.get("env", []):
                if SECRET_NAME.search(entry["name"]):
                    assert "value" not in entry and "secretKeyRef" in entry.get("valueFrom", {}), (
                        f"{where}: {entry['name']} must come from a Secret"
                    )
                assert not CREDENTIALS_IN_URL.search(str(entry.get("value", ""))), f"{where}: {entry['name']}"
    for config_map in find(docs, "ConfigMap"):
        for key, value in config_map["data"].items():
            assert not SECRET_NAME.search(key) or key == "DAGSTER_UI_URL", f"{config_map['metadata']['name']}: {key}"
            assert not CREDENTIALS_IN_URL.search(value), f"{config_map['metadata']['name']}: {key}"


def test_each_pod_gets_exactly_its_secrets(case: Case, docs: list[dict[str, Any]]) -> None:
    dagster_env = [("configMap", f"{PREFIX}-config")] + [("secret", s) for s in case.dagster_secrets]
    for deployment in find(docs, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if component(deployment) in DAGSTER_COMPONENTS:
            assert env_from(container) == dagster_env, deployment["metadata"]["name"]
        elif component(deployment) == "api":
            assert env_from(container) == [("configMap", f"{PREFIX}-config")] + [
                ("secret", s) for s in case.api_secrets
            ]
    launcher = dagster_instance_yaml(docs)["run_launcher"]["config"]
    assert launcher["env_secrets"] == list(case.dagster_secrets)
    assert launcher["env_config_maps"] == [f"{PREFIX}-config"]


# --- containers: resources, probes, security ---------------------------------------------------


def test_every_container_has_requests_and_limits(case: Case, docs: list[dict[str, Any]]) -> None:
    for where, spec in pod_specs(docs):
        for container in containers(spec):
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, f"{where}/{container['name']} {kind}"
    # run and step pods get theirs from the run launcher
    assert dagster_instance_yaml(docs)["run_launcher"]["config"]["resources"] == case.run_resources


def test_every_deployment_container_has_liveness_and_readiness_probes(docs: list[dict[str, Any]]) -> None:
    deployments = find(docs, "Deployment")
    assert deployments
    for deployment in deployments:
        for container in containers(deployment["spec"]["template"]["spec"]):
            assert container.get("livenessProbe") and container.get("readinessProbe"), deployment["metadata"]["name"]


def test_every_pod_is_non_root_with_a_read_only_root_filesystem(docs: list[dict[str, Any]]) -> None:
    for where, spec in pod_specs(docs):
        pod_context = spec.get("securityContext", {})
        assert pod_context.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        for container in containers(spec):
            context = container["securityContext"]
            assert pod_context.get("runAsNonRoot") is True or context.get("runAsNonRoot") is True, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], where
    launcher = dagster_instance_yaml(docs)["run_launcher"]["config"]
    assert launcher["security_context"]["readOnlyRootFilesystem"] is True
    assert launcher["security_context"]["allowPrivilegeEscalation"] is False
    assert launcher["run_k8s_config"]["pod_spec_config"]["securityContext"]["runAsNonRoot"] is True
    assert {m["mountPath"] for m in launcher["volume_mounts"]} >= {"/tmp", "/opt/dagster/dagster_home"}


def test_only_the_dagster_pods_get_a_service_account_token(docs: list[dict[str, Any]]) -> None:
    service_account = f"{PREFIX}-dagster"
    for workload in [*find(docs, "Deployment"), *find(docs, "Job")]:
        spec = workload["spec"]["template"]["spec"]
        if workload["kind"] == "Deployment" and component(workload) in DAGSTER_COMPONENTS:
            assert spec["automountServiceAccountToken"] is True
            assert spec["serviceAccountName"] == service_account
        else:
            assert spec["automountServiceAccountToken"] is False, workload["metadata"]["name"]
            assert "serviceAccountName" not in spec
    assert one(docs, "ServiceAccount", service_account)["automountServiceAccountToken"] is False
    assert dagster_instance_yaml(docs)["run_launcher"]["config"]["service_account_name"] == service_account


def test_the_role_lets_dagster_run_jobs_and_nothing_more(docs: list[dict[str, Any]]) -> None:
    role = one(docs, "Role", f"{PREFIX}-dagster")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("batch",), ("jobs",)): {"create", "get", "list", "watch", "delete", "patch"},
        (("batch",), ("jobs/status",)): {"get", "list", "watch"},
        (("",), ("pods",)): {"get", "list", "watch", "delete"},
        (("",), ("pods/log",)): {"get"},
        (("",), ("events",)): {"get", "list", "watch"},
    }
    binding = one(docs, "RoleBinding", f"{PREFIX}-dagster")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{PREFIX}-dagster", "namespace": NAMESPACE}]


def test_one_image_everywhere(case: Case, docs: list[dict[str, Any]]) -> None:
    for where, spec in pod_specs(docs):
        for container in containers(spec):
            assert container["image"] == case.image, where
        assert [s["name"] for s in spec.get("imagePullSecrets", [])] == list(case.pull_secrets), where
    launcher = dagster_instance_yaml(docs)["run_launcher"]["config"]
    assert [s["name"] for s in launcher.get("image_pull_secrets", [])] == list(case.pull_secrets)


def test_config_changes_roll_the_pods() -> None:
    def checksums(overrides: dict[str, Any]) -> dict[str, str]:
        daemon = one(render(overrides=overrides), "Deployment", f"{PREFIX}-daemon")
        return daemon["spec"]["template"]["metadata"]["annotations"]

    before = checksums({})
    assert set(before) == {"checksum/app", "checksum/dagster-instance", "checksum/workspace"}
    assert checksums({"kafka": {"brokers": "other:9092"}})["checksum/app"] != before["checksum/app"]
    assert (
        checksums({"dagster": {"runs": {"maxConcurrent": 3}}})["checksum/dagster-instance"]
        != before["checksum/dagster-instance"]
    )
    assert checksums({}) == before


# --- Dagster -------------------------------------------------------------------------------------


def test_the_dagster_instance_launches_runs_on_kubernetes_through_the_queue(docs: list[dict[str, Any]]) -> None:
    instance = dagster_instance_yaml(docs)
    assert instance["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    launcher = instance["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    config = launcher["config"]
    assert config["job_namespace"] == NAMESPACE
    assert config["instance_config_map"] == f"{PREFIX}-dagster-instance"
    assert config["dagster_home"] == "/opt/dagster/dagster_home"
    assert config["load_incluster_config"] is True
    assert config["labels"] == {
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/part-of": "analytics-platform",
    }
    coordinator = instance["run_coordinator"]
    assert (coordinator["module"], coordinator["class"]) == ("dagster.core.run_coordinator", "QueuedRunCoordinator")
    assert instance["concurrency"] == {
        "runs": {
            "max_concurrent_runs": 20,
            "tag_concurrency_limits": [
                {"key": "dagster/backfill", "limit": 8},
                {"key": "analytics/lane", "value": {"applyLimitPerUniqueValue": True}, "limit": 6},
                {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
            ],
        },
        "pools": {"default_limit": 4},
    }
    assert instance["run_monitoring"]["enabled"] is True
    assert instance["run_retries"] == {"enabled": True, "max_retries": 1}
    assert instance["compute_logs"]["class"] == "NoOpComputeLogManager"
    assert instance["telemetry"] == {"enabled": False}


def test_code_locations_and_drain_shards(case: Case, docs: list[dict[str, Any]]) -> None:
    workspace = yaml.safe_load(one(docs, "ConfigMap", f"{PREFIX}-workspace")["data"]["workspace.yaml"])
    servers = [entry["grpc_server"] for entry in workspace["load_from"]]
    assert [s["location_name"] for s in servers] == list(case.locations)
    code_servers = [d for d in find(docs, "Deployment") if component(d) in ("user-code", "drain")]
    by_location = {
        d["spec"]["template"]["metadata"]["labels"]["analytics-platform/code-location"]: d for d in code_servers
    }
    assert set(by_location) == set(case.locations)
    for server in servers:
        assert server["port"] == 3030
        deployment = by_location[server["location_name"]]
        service = one(docs, "Service", server["host"])
        assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        assert service["spec"]["ports"] == [{"name": "grpc", "port": 3030, "targetPort": "grpc", "protocol": "TCP"}]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        module = (
            "analytics_platform.definitions"
            if server["location_name"] == "analytics_platform"
            else ("analytics_platform.drain_definitions")
        )
        assert container["command"] == [
            "dagster",
            "api",
            "grpc",
            "-h",
            "0.0.0.0",
            "-p",
            "3030",
            "-m",
            module,
            "-a",
            "defs",
        ]
        env = env_of(container)
        assert env["DRAIN_SHARDS_HERE"] == case.locations[server["location_name"]]
        assert env["DAGSTER_CURRENT_IMAGE"] == container["image"] == case.image
        health = ["dagster", "api", "grpc-health-check", "-p", "3030"]
        assert container["livenessProbe"]["exec"]["command"] == container["readinessProbe"]["exec"]["command"] == health
        if server["location_name"] != "analytics_platform":
            assert deployment["metadata"]["name"] == server["host"] == f"{PREFIX}-drain-{env['DRAIN_SHARDS_HERE']}"
    assert app_config(docs)["DRAIN_SHARDS"] == str(case.drain_shards)


def test_the_platform_settings_accept_what_each_code_server_gets(
    case: Case, docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap and the per-server env, read by the real PlatformSettings: the shards each
    code location defines add up to every shard exactly once."""
    monkeypatch.delenv("KAFKA_SSL_CA_LOCATION", raising=False)
    for name, value in app_config(docs).items():
        monkeypatch.setenv(name, value)
    owned: list[int] = []
    for deployment in find(docs, "Deployment"):
        if component(deployment) in ("user-code", "drain"):
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            monkeypatch.setenv("DRAIN_SHARDS_HERE", env_of(container)["DRAIN_SHARDS_HERE"])
            settings = PlatformSettings()
            assert settings.drain_shards == case.drain_shards
            owned.extend(settings.drain_shards_run_here())
    assert sorted(owned) == list(range(case.drain_shards))
    assert settings.backfill_executor == "k8s"
    assert settings.kafka_ssl_ca_location == ("/etc/kafka-tls/ca.crt" if case.kafka_tls else None)


def drain_services(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in find(docs, "Deployment") if component(d) == "drain-service"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels, matchExpressions with In: all the chart uses) selects `labels`."""
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return selector.get("matchLabels", {}).items() <= labels.items()


def test_one_drain_service_pod_per_shard_exactly_when_the_drain_is_a_service(
    case: Case, docs: list[dict[str, Any]]
) -> None:
    """DRAIN_MODE reaches the code servers (their sensors drain or only report) and the drain pods
    through the one ConfigMap; each shard is a Deployment of one pod that never overlaps itself."""
    config = app_config(docs)
    assert (config["DRAIN_MODE"], config["DRAIN_PASS_S"]) == (case.drain_mode, "30")
    deployments = drain_services(docs)
    if case.drain_mode == "sensor":
        assert deployments == []
        return
    assert [d["metadata"]["name"] for d in deployments] == [
        f"{PREFIX}-drain-service-{shard}" for shard in range(case.drain_shards)
    ]
    for shard, deployment in enumerate(deployments):
        name = deployment["metadata"]["name"]
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}, name
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector == {
            "app.kubernetes.io/name": "analytics-platform",
            "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": "drain-service",
            "analytics-platform/drain-shard": str(shard),
        }
        spec = deployment["spec"]["template"]["spec"]
        # it never talks to the Kubernetes API, and has a minute to commit what it holds on SIGTERM
        assert spec["automountServiceAccountToken"] is False and "serviceAccountName" not in spec, name
        assert spec["terminationGracePeriodSeconds"] == 60, name
        (container,) = spec["containers"]
        assert container["command"] == ["analytics-platform", "drain", "serve"]
        # the heartbeat lives in the pod's own /tmp (an emptyDir); the liveness probe reads it. The
        # release's Dagster instance: the pod runs the current hour's aggregates (AGG_FINALISE)
        assert env_of(container) == {
            "DAGSTER_HOME": "/opt/dagster/dagster_home",
            "DRAIN_SHARDS_HERE": str(shard),
            "DRAIN_HEARTBEAT_FILE": "/tmp/drain-heartbeat",
            "DRAIN_METRICS_PORT": "9400",
        }
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/opt/dagster/dagster_home/dagster.yaml"]["subPath"] == "dagster.yaml", name
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["dagster-instance"]["configMap"]["name"] == f"{PREFIX}-dagster-instance", name
        assert (config["AGG_FINALISE"], config["AGG_FINALISE_DELAY_S"]) == ("true", "2")
        assert container["livenessProbe"]["exec"]["command"] == ["analytics-platform", "drain", "check"]
        assert env_from(container) == [("configMap", f"{PREFIX}-config")] + [
            ("secret", s) for s in case.drain_service_secrets
        ]
        assert container["resources"] == case.drain_service_resources, name
        # its one port: the drain counts for Prometheus (deploy/prometheus/rules.yml's AnalyticsDrainErrors)
        assert container["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}], name
        assert set(deployment["spec"]["template"]["metadata"]["annotations"]) == {"checksum/app"}
    # no Service reaches them; of the NetworkPolicies the default deny selects them, and the drain-service one
    # that lets networkPolicy.metricsFrom scrape their metrics port and nothing else
    labels = [d["spec"]["template"]["metadata"]["labels"].items() for d in deployments]
    for service in find(docs, "Service"):
        assert not any(service["spec"]["selector"].items() <= pod for pod in labels), service["metadata"]["name"]
    for policy in find(docs, "NetworkPolicy"):
        expected = policy["metadata"]["name"] in (f"{PREFIX}-default-deny", f"{PREFIX}-drain-service")
        for pod in labels:
            assert selects(policy["spec"]["podSelector"], dict(pod)) == expected, policy["metadata"]["name"]
    scrape = one(docs, "NetworkPolicy", f"{PREFIX}-drain-service")["spec"]["ingress"]
    metrics_from = load_values(case.files, case.overrides).get("networkPolicy", {}).get("metricsFrom")
    expected_from = metrics_from or [{"namespaceSelector": {}}]
    assert scrape == [{"ports": [{"port": 9400, "protocol": "TCP"}], "from": expected_from}]


def test_the_platform_settings_accept_what_each_drain_service_pod_gets(
    case: Case, docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read by the real PlatformSettings: every pod drains as a service (`drain serve` refuses
    otherwise), and the pods' shards add up to every shard exactly once."""
    for name, value in app_config(docs).items():
        monkeypatch.setenv(name, value)
    assert PlatformSettings().drain_mode == case.drain_mode
    owned: list[int] = []
    for deployment in drain_services(docs):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        monkeypatch.setenv("DRAIN_SHARDS_HERE", env_of(container)["DRAIN_SHARDS_HERE"])
        monkeypatch.setenv("DRAIN_METRICS_PORT", env_of(container)["DRAIN_METRICS_PORT"])
        settings = PlatformSettings()
        assert (settings.drain_mode, settings.drain_pass_s, settings.drain_metrics_port) == ("service", 30.0, 9400)
        owned.extend(settings.drain_shards_run_here())
    assert sorted(owned) == (list(range(case.drain_shards)) if case.drain_mode == "service" else [])


def test_webserver_and_daemon(docs: list[dict[str, Any]]) -> None:
    webserver = one(docs, "Deployment", f"{PREFIX}-webserver")
    (container,) = webserver["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [
        "dagster-webserver",
        "-h",
        "0.0.0.0",
        "-p",
        "3000",
        "-w",
        "/opt/dagster/workspace/workspace.yaml",
    ]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/server_info", "port": "http"}
    assert {"name": "http", "containerPort": 3000, "protocol": "TCP"} in container["ports"]
    daemon = one(docs, "Deployment", f"{PREFIX}-daemon")
    assert daemon["spec"]["replicas"] == 1 and daemon["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = daemon["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["dagster-daemon", "run", "-w", "/opt/dagster/workspace/workspace.yaml"]
    assert container["livenessProbe"]["exec"]["command"] == ["dagster-daemon", "liveness-check"]
    for workload in (webserver, daemon):
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/opt/dagster/dagster_home/dagster.yaml"]["subPath"] == "dagster.yaml"
        assert "/opt/dagster/workspace" in mounts and "/opt/dagster/dagster_home" in mounts


# --- API, migrations, edge agent -----------------------------------------------------------------


def test_api_readiness_follows_health_and_an_hpa_scales_it(case: Case, docs: list[dict[str, Any]]) -> None:
    api = one(docs, "Deployment", f"{PREFIX}-api")
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [
        "python",
        "-m",
        "analytics_platform.api",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/health", "port": "http"}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "http"}
    # POST /v1/baselines/train and /v1/anomalies/detect queue runs on the release's Dagster instance
    assert env_of(container) == {"DAGSTER_HOME": "/opt/dagster/dagster_home"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/opt/dagster/dagster_home/dagster.yaml"]["subPath"] == "dagster.yaml"
    volumes = {v["name"]: v for v in api["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dagster-instance"]["configMap"]["name"] == f"{PREFIX}-dagster-instance"
    assert "replicas" not in api["spec"], "the HPA owns the replica count"
    (hpa,) = find(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{PREFIX}-api"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == case.hpa
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_migrations_run_as_a_hook_that_needs_only_the_users_secrets(case: Case, docs: list[dict[str, Any]]) -> None:
    job = one(docs, "Job", f"{PREFIX}-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert "helm.sh/hook-weight" in annotations
    assert job["spec"]["backoffLimit"] <= 3 and job["spec"]["activeDeadlineSeconds"] > 0
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    timescale = "on" if case.id == "production" else "auto"
    assert container["command"] == ["analytics-platform", "migrate", "--timescale", timescale]
    # nothing the chart creates: it runs before them on a first install
    assert env_from(container) == [("secret", s) for s in case.migration_secrets]
    assert all("configMap" not in v for v in spec["volumes"])
    assert spec["restartPolicy"] == "Never"


def test_edge_agent(case: Case, docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    deployments = [d for d in find(docs, "Deployment") if component(d) == "edge-agent"]
    if not case.edge_agent:
        assert deployments == [] and find(docs, "PersistentVolumeClaim") == []
        return
    (agent,) = deployments
    assert agent["spec"]["replicas"] == 1 and agent["spec"]["strategy"] == {"type": "Recreate"}
    spec = agent["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["edge-agent", "run", "--config", "/etc/edge-agent/agent.yaml"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in container["ports"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    claim = one(
        docs, "PersistentVolumeClaim", volumes[mounts["/var/lib/edge-agent"]]["persistentVolumeClaim"]["claimName"]
    )
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    # the real agent accepts the rendered file, and its queue lives on the volume
    text = one(docs, "ConfigMap", volumes[mounts["/etc/edge-agent"]]["configMap"]["name"])["data"]["agent.yaml"]
    for entry in container["env"]:
        monkeypatch.setenv(entry["name"], entry["value"])
    config = parse_config(yaml.safe_load(text))
    assert str(config.queue.path).startswith("/var/lib/edge-agent/")
    assert (config.metrics.host, config.metrics.port) == ("0.0.0.0", 9464)
    assert config.kafka.brokers == app_config(docs)["KAFKA_BROKERS"]
    service = one(docs, "Service", f"{PREFIX}-edge-agent-http")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert {"name": "http", "containerPort": 8081, "protocol": "TCP"} in container["ports"]


# --- network ---------------------------------------------------------------------------------------


def test_network_policies(case: Case, docs: list[dict[str, Any]]) -> None:
    policies = {p["metadata"]["name"].removeprefix(f"{PREFIX}-"): p["spec"] for p in find(docs, "NetworkPolicy")}
    assert set(policies) == case.network_policies
    release = {"app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/part-of": "analytics-platform"}
    deny = policies["default-deny"]
    assert deny["podSelector"] == {"matchLabels": release} and deny["ingress"] == []
    assert deny["policyTypes"] == ["Ingress"]
    # every pod of the release is covered by the default deny, run and step pods included
    for workload in [*find(docs, "Deployment"), *find(docs, "Job")]:
        assert release.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    assert release.items() <= dagster_instance_yaml(docs)["run_launcher"]["config"]["labels"].items()
    (grpc,) = policies["code-servers"]["ingress"]
    assert grpc["ports"] == [{"port": 3030, "protocol": "TCP"}]
    (peer,) = grpc["from"]
    assert peer["podSelector"]["matchLabels"] == release
    assert peer["podSelector"]["matchExpressions"] == [
        {
            "key": "app.kubernetes.io/component",
            "operator": "In",
            "values": ["webserver", "daemon", "run_worker", "step_worker"],
        }
    ]
    expected_from = (
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
        if case.id == "production"
        else [{"namespaceSelector": {}}]
    )
    assert policies["webserver"]["ingress"] == [{"ports": [{"port": 3000, "protocol": "TCP"}], "from": expected_from}]
    assert policies["api"]["ingress"][0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert expected_from[0] in policies["api"]["ingress"][0]["from"]


def test_egress_rules_turn_on_egress_policy_with_dns() -> None:
    database = {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 5432, "protocol": "TCP"}]}
    docs = render(overrides={"networkPolicy": {"egress": [database]}})
    deny = one(docs, "NetworkPolicy", f"{PREFIX}-default-deny")["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert deny["egress"][0]["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert deny["egress"][-1] == database
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_services_select_exactly_one_workload_and_named_ports(docs: list[dict[str, Any]]) -> None:
    deployments = find(docs, "Deployment")
    for service in find(docs, "Service"):
        selector = service["spec"]["selector"].items()
        matched = [d for d in deployments if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matched) == 1, service["metadata"]["name"]
        (container,) = matched[0]["spec"]["template"]["spec"]["containers"]
        names = {p["name"] for p in container["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names, service["metadata"]["name"]


def test_optional_files_and_kafka_ca_reach_every_pod_that_runs_platform_code() -> None:
    docs = render(
        overrides={
            "secrets": {"kafkaTls": "kafka-ca"},
            "config": {
                "files": {"alerts.yaml": "channels: {}\n"},
                "extraEnv": {"ALERTS_CONFIG": "/etc/analytics-platform/alerts.yaml"},
            },
        }
    )
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert one(docs, "ConfigMap", f"{PREFIX}-files")["data"] == {"alerts.yaml": "channels: {}\n"}
    assert app_config(docs)["ALERTS_CONFIG"] == "/etc/analytics-platform/alerts.yaml"
    assert app_config(docs)["KAFKA_SSL_CA_LOCATION"] == "/etc/kafka-tls/ca.crt"
    for deployment in find(docs, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/etc/kafka-tls", "/etc/analytics-platform"} <= mounts, deployment["metadata"]["name"]
        assert "checksum/files" in deployment["spec"]["template"]["metadata"]["annotations"]
    launcher = dagster_instance_yaml(docs)["run_launcher"]["config"]
    assert {m["mountPath"] for m in launcher["volume_mounts"]} >= {"/etc/kafka-tls", "/etc/analytics-platform"}


def test_a_compute_log_manager_from_values_replaces_the_noop_one() -> None:
    s3 = {
        "module": "dagster_aws.s3.compute_log_manager",
        "class": "S3ComputeLogManager",
        "config": {"bucket": "plant-dagster-logs", "prefix": "compute-logs"},
    }
    assert dagster_instance_yaml(render(overrides={"dagster": {"computeLogs": s3}}))["compute_logs"] == s3
    with pytest.raises(helm_python.HelmValuesError, match="/dagster/computeLogs"):
        render(overrides={"dagster": {"computeLogs": {"bucket": "no-module-or-class"}}})
