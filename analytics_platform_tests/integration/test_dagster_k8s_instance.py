"""The chart's dagster.yaml (production values) is a working Dagster instance: it loads against a
real PostgreSQL with the K8sRunLauncher, the queue and its limits as configured, stores events,
and the Kubernetes Jobs it would create for a run and for a k8s_job_executor step are valid
manifests carrying the chart's security context, resources, labels, Secrets and volumes.

There is no cluster here: the only change made to the rendered file is the run launcher's way of
finding the Kubernetes API (`load_incluster_config: false` plus a kubeconfig pointing at
https://127.0.0.1:1, which nothing ever connects to: Job creation is captured before the call).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.instance import DagsterInstance, InstanceRef
from dagster._core.launcher import LaunchRunContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from analytics_platform.devstack.stack import psycopg2_url
from analytics_platform_tests.support.helm import (
    KUBERNETES_VERSION,
    NAMESPACE,
    PREFIX,
    PRODUCTION_VALUES,
    RELEASE,
    dagster_instance_yaml,
    render,
    write_unreachable_kubeconfig,
)
from analytics_platform_tests.support.stack import DatabaseHandle

IMAGE = "registry.example.com/plant/analytics-platform:0.1.0"
RUN_LABELS = {"app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/part-of": "analytics-platform"}


@pytest.fixture
def chart_instance(
    tmp_path: Path, database: DatabaseHandle, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DagsterInstance]:
    """The production-values dagster.yaml as DAGSTER_HOME/dagster.yaml, on the test database."""
    config = dagster_instance_yaml(render([PRODUCTION_VALUES]))
    # the one change: no in-cluster service account here, so a kubeconfig instead
    launcher = config["run_launcher"]["config"]
    assert launcher["load_incluster_config"] is True
    launcher["load_incluster_config"] = False
    launcher["kubeconfig_file"] = str(write_unreachable_kubeconfig(tmp_path / "kubeconfig"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url(database.admin_url))
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        yield instance


def as_manifest(job: Any) -> dict[str, Any]:
    """The kubernetes client model as the camelCase document the API server would receive."""
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def add_probe_run(instance: DagsterInstance) -> DagsterRun:
    """A run whose code comes from the main code location's image (as a gRPC server reports it)."""
    origin = JobPythonOrigin(
        "probe_job",
        RepositoryPythonOrigin(
            executable_path="/app/.venv/bin/python",
            code_pointer=ModuleCodePointer("analytics_platform.definitions", "defs", None),
            container_image=IMAGE,
            entry_point=None,
            container_context=None,
        ),
    )
    return instance.add_run(DagsterRun(job_name="probe_job", run_id=make_new_run_id(), job_code_origin=origin))


def assert_pod_as_the_chart_configured(manifest: dict[str, Any], component: str) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    template = manifest["spec"]["template"]
    assert RUN_LABELS.items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["labels"]["app.kubernetes.io/component"] == component
    spec = template["spec"]
    assert spec["serviceAccountName"] == f"{PREFIX}-dagster"
    assert spec["automountServiceAccountToken"] is True  # run pods launch step pods
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["nodeSelector"] == {"node-pool": "analytics"}
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    (container,) = spec["containers"]
    assert container["image"] == IMAGE
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    assert container["envFrom"] == [
        {"configMapRef": {"name": f"{PREFIX}-config"}},
        {"secretRef": {"name": "analytics-database"}},
        {"secretRef": {"name": "analytics-kafka"}},
        {"secretRef": {"name": "analytics-alerts"}},
    ]
    assert {"name": "DAGSTER_HOME", "value": "/opt/dagster/dagster_home"} in container["env"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": "tmp", "/opt/dagster/dagster_home": "dagster-home", "/etc/kafka-tls": "kafka-tls"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["kafka-tls"]["secret"]["secretName"] == "analytics-kafka-tls"


def test_the_charts_instance_loads_with_the_k8s_launcher_and_the_queue(
    chart_instance: DagsterInstance, database: DatabaseHandle
) -> None:
    launcher = chart_instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.job_namespace == NAMESPACE
    assert launcher.service_account_name == f"{PREFIX}-dagster"
    assert launcher.instance_config_map == f"{PREFIX}-dagster-instance"
    assert launcher.dagster_home == "/opt/dagster/dagster_home"
    assert isinstance(chart_instance.run_coordinator, QueuedRunCoordinator)
    queue = chart_instance.get_concurrency_config().run_queue_config
    assert queue is not None
    assert queue.max_concurrent_runs == 20
    assert queue.tag_concurrency_limits == [
        {"key": "dagster/backfill", "limit": 8},
        {"key": "analytics/lane", "value": {"applyLimitPerUniqueValue": True}, "limit": 6},
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
    ]
    assert chart_instance.get_concurrency_config().pool_config.default_pool_limit == 4
    assert isinstance(chart_instance.run_storage, PostgresRunStorage)
    assert isinstance(chart_instance.event_log_storage, PostgresEventLogStorage)
    assert chart_instance.run_monitoring_enabled
    assert chart_instance.run_retries_max_retries == 1

    key = dg.AssetKey("helm_probe")
    chart_instance.report_runless_asset_event(dg.AssetMaterialization(key, metadata={"rows": 3}))
    event = chart_instance.get_latest_materialization_event(key)
    assert event is not None and event.asset_materialization is not None
    assert event.asset_materialization.metadata["rows"].value == 3
    tables = {r[0] for r in database.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"runs", "event_logs", "asset_keys"} <= tables


def test_a_launched_run_is_a_valid_job_with_the_charts_pod_settings(
    chart_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher = chart_instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    created: list[tuple[Any, str]] = []
    # capture the Job instead of sending it to the (absent) API server
    monkeypatch.setattr(
        launcher._api_client,
        "create_namespaced_job_with_retries",
        lambda body, namespace: created.append((body, namespace)),
    )
    run = add_probe_run(chart_instance)
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    ((job, namespace),) = created
    assert namespace == NAMESPACE
    manifest = as_manifest(job)
    assert_pod_as_the_chart_configured(manifest, "run_worker")
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["args"][1:5] == ["-m", "dagster", "api", "execute_run"]


def test_a_k8s_job_executor_step_inherits_the_run_launchers_pod_settings(chart_instance: DagsterInstance) -> None:
    """Backfill steps (BACKFILL_EXECUTOR=k8s) get their pod settings from the run launcher the same
    way k8s_job_executor builds them (K8sContainerContext.create_for_run without run tags)."""
    launcher = chart_instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    run = add_probe_run(chart_instance)
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    job_config = context.get_k8s_job_config(None, launcher).with_image(IMAGE)
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name="dagster-step-probe",
        pod_name="dagster-step-probe",
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/op": "probe", "dagster/run-id": run.run_id},
    )
    assert_pod_as_the_chart_configured(as_manifest(job), "step_worker")
