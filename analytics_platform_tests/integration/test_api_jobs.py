"""Training and detection on demand through the API, on the real stack: the request is checked
against the database, recorded as a tenant's job and queued as a run in a real Dagster instance (the
repository's dagster.yaml: PostgreSQL storage, the QueuedRunCoordinator); the test then drives the
queue as the daemon does (the workspace.yaml code location in its own gRPC server process, which
launches the run in a process of its own), and reads the result back through GET /v1/jobs/{id}.

The training data is exact: energy_kwh = 10 + 0.05·production_count + 0.8·avg_outdoor_temp, so the
fitted model is that one (R² = 1) and its version, sample count and exclusions are known by hand.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events.log import EventLogEntry
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from fastapi.testclient import TestClient

from analytics_platform.api.app import create_app
from analytics_platform.devstack.stack import psycopg2_url
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import Caller, assert_422, make_key, ok, run_cli
from analytics_platform_tests.support.stack import DatabaseHandle

END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
HOURS = 1100  # BASELINE_MIN_SAMPLES is 1000 by default
FAULT_EVERY = 50  # every 50th hour has fault time: excluded
KPIS = """
    INSERT INTO analytics.analytics_kpi (period_start, period_end, period, tenant_id, factory_id, machine_id,
                                         kpi, value, unit, details)
    SELECT ts, ts + interval '1 hour', 'hour', %(tenant)s, 'f1', %(machine)s, k.kpi, k.value, '', k.details
    FROM generate_series(%(end)s - %(hours)s * interval '1 hour', %(end)s - interval '1 hour', interval '1 hour')
         WITH ORDINALITY AS g(ts, i)
    CROSS JOIN LATERAL (VALUES
        ('production_count', (i * 37 %% 1000)::float8, NULL::jsonb),
        ('avg_outdoor_temp', 15 + (i * 13 %% 20)::float8, NULL),
        ('energy_kwh', 10 + 0.05 * (i * 37 %% 1000) + 0.8 * (15 + (i * 13 %% 20))
                       + CASE WHEN i %% 50 = 0 THEN 500 ELSE 0 END, NULL),
        ('fault_time_s', CASE WHEN i %% 50 = 0 THEN 600 ELSE 0 END, NULL),
        ('planned_downtime_s', 0, '{"maintenance_s": 0}'::jsonb)
    ) AS k(kpi, value, details)
"""


def insert_hours(database: DatabaseHandle, tenant: str, machine: str, hours: int = HOURS) -> None:
    with database.connect() as conn:
        conn.execute(KPIS, {"tenant": tenant, "machine": machine, "end": END, "hours": hours})


@pytest.fixture
def dagster_home(
    repo_root: Path, tmp_path: Path, database: DatabaseHandle, settings: PlatformSettings, monkeypatch
) -> Path:
    """The repository's dagster.yaml on this test's database as DAGSTER_HOME, and the environment the
    code location's processes (started by the test's workspace) build their settings from."""
    shutil.copyfile(repo_root / "dagster.yaml", tmp_path / "dagster.yaml")
    with (tmp_path / "dagster.yaml").open("a") as config:  # the test's code server ends with its workspace
        config.write("\ncode_servers:\n  wait_for_local_processes_on_shutdown: true\n")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url(database.admin_url))
    monkeypatch.setenv("DATABASE_URL", database.pipeline_url)
    monkeypatch.setenv("KAFKA_BROKERS", settings.kafka_brokers)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", settings.kafka_topic_prefix)
    return tmp_path


@pytest.fixture
def client(settings: PlatformSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def caller(client: TestClient, database: DatabaseHandle, tenant: str | None, *scopes: str) -> Caller:
    key_id, key = make_key(database, tenant, f"{tenant}-{'-'.join(scopes) or 'read'}", scopes=("read", *scopes))
    return Caller(client, key, key_id)


def training(**changes: object) -> dict:
    body = {
        "factory_id": "f1",
        "machine_id": "mc-01",
        "drivers": ["production_count", "avg_outdoor_temp"],
        "start": (END - timedelta(hours=HOURS)).isoformat(),
        "end": END.isoformat(),
        "exclusions": [
            {"start": (END - timedelta(hours=24)).isoformat(), "end": END.isoformat()},
        ],
    }
    return {**body, **changes}


def drive_queue(repo_root: Path, instance: dg.DagsterInstance, run_id: str, timeout_s: float = 300) -> dg.DagsterRun:
    """What the daemon does with a queued run: dequeue it under the instance's limits and launch it
    in the code location's server, which runs it in a process of its own; returns the ended run,
    waiting for the run's last event through the instance's event-log watcher."""
    ended = threading.Event()
    last = (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED)

    def seen(entry: EventLogEntry, _cursor: str) -> None:
        if entry.dagster_event is not None and entry.dagster_event.event_type in last:
            ended.set()

    instance.event_log_storage.watch(run_id, None, seen)
    try:
        target = WorkspaceFileTarget([str(repo_root / "workspace.yaml")])
        with WorkspaceProcessContext(instance, target) as workspace:
            list(QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(workspace))
            assert ended.wait(timeout_s), f"run {run_id} did not end within {timeout_s} s"
    finally:
        instance.event_log_storage.end_watch(run_id, seen)
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run


def test_a_machine_is_retrained_with_chosen_drivers_through_a_queued_dagster_run(
    repo_root: Path, dagster_home: Path, client: TestClient, database: DatabaseHandle
) -> None:
    insert_hours(database, "t1", "mc-01")
    insert_hours(database, "t2", "mc-01")  # the same machine id in another tenant: never trained here
    trainer = caller(client, database, "t1", "train")
    job = ok(trainer.post("/v1/baselines/train", training()), 202)
    assert job["status"] == "queued" and job["kind"] == "baseline_training" and job["tenant_id"] == "t1"
    assert job["run_url"] == f"http://127.0.0.1:3000/runs/{job['run_id']}"
    assert job["request"]["drivers"] == ["production_count", "avg_outdoor_temp"]
    assert job["requested_by"] == trainer.key_id and job["result"] is None

    # the same request while it waits: the same job, no second run
    again = ok(trainer.post("/v1/baselines/train", training(drivers=["avg_outdoor_temp", "production_count"])))
    assert again["job_id"] == job["job_id"] and again["run_id"] == job["run_id"]

    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(job["run_id"])
        assert run is not None and run.status == dg.DagsterRunStatus.QUEUED
        assert run.job_name == "baseline_training_job"
        assert run.tags["analytics/api_job"] == str(job["job_id"])
        assert run.tags["analytics/tenant"] == "t1" and run.tags["analytics/machine"] == "mc-01"
        config = run.run_config["ops"]["energy_baseline_models"]["config"]
        assert config["machine_id"] == "mc-01" and config["drivers"] == ["production_count", "avg_outdoor_temp"]
        assert run.remote_job_origin is not None and run.remote_job_origin.location_name == "analytics_platform"
        ended = drive_queue(repo_root, instance, job["run_id"])
        assert ended.status == dg.DagsterRunStatus.SUCCESS

    done = ok(trainer.get(f"/v1/jobs/{job['job_id']}"))
    assert done["status"] == "success" and done["error"] is None
    assert done["result"]["version"] == 1 and done["result"]["accepted"] is True
    assert done["result"]["refused"] is False and done["result"]["message"] == "accepted"
    assert done["result"]["r2"] == pytest.approx(1.0, abs=1e-9)
    # 1100 hours: 22 with a fault, 24 excluded on request (the last day; none of them a fault hour
    # but hour 1100, the last one): 1100 - 22 - 23 = 1055 fitted, 45 dropped
    rows = database.query(
        "SELECT tenant_id, machine_id, version, active, drivers, n, excluded, trained_from, trained_to, "
        "round((coefficients->>'production_count')::numeric, 6)::float8, "
        "round((coefficients->>'avg_outdoor_temp')::numeric, 6)::float8 FROM analytics.analytics_baseline"
    )
    assert rows == [
        (
            "t1",
            "mc-01",
            1,
            True,
            ["production_count", "avg_outdoor_temp"],
            1055,
            45,
            END - timedelta(hours=HOURS),
            END,
            0.05,
            0.8,
        )
    ]
    # another tenant's key cannot see the job; a read key cannot train
    other = caller(client, database, "t2", "train")
    assert other.get(f"/v1/jobs/{job['job_id']}").status_code == 404
    reader = caller(client, database, "t1")
    assert reader.post("/v1/baselines/train", training()).status_code == 403
    assert ok(reader.get(f"/v1/jobs/{job['job_id']}"))["status"] == "success"
    # once ended, the same request is a new job
    assert ok(trainer.post("/v1/baselines/train", training()), 202)["job_id"] != job["job_id"]


def test_bad_training_requests_say_why(client: TestClient, database: DatabaseHandle) -> None:
    insert_hours(database, "t1", "mc-01")
    insert_hours(database, "t1", "mc-02", hours=900)
    insert_hours(database, "t2", "mc-03")
    trainer = caller(client, database, "t1", "train")
    assert_422(
        trainer.post("/v1/baselines/train", training(machine_id="mc-03")),
        ["body", "machine_id"],
        "no machine f1/mc-03 of this tenant has hourly KPIs to train on",
    )
    assert trainer.post("/v1/baselines/train", training(tenant_id="t2", machine_id="mc-03")).status_code == 404
    assert_422(
        trainer.post("/v1/baselines/train", training(machine_id="mc-02")),
        ["body", "start"],
        "only 859 usable hours of t1/f1/mc-02 in the training range, 1000 needed (BASELINE_MIN_SAMPLES): an hour "
        "counts when it has energy_kwh and every driver, no fault or maintenance time and no overlap with an "
        "exclusion",
    )
    response = trainer.post("/v1/baselines/train", training(drivers=["production_count", "flux"]))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "drivers", 1]
    assert response.json()["detail"][0]["msg"].startswith("unknown driver 'flux': not a KPI of the catalogue (")
    assert_422(
        trainer.post("/v1/baselines/train", training(drivers=["energy_kwh"])),
        ["body", "drivers", 0],
        "energy_kwh is what the baseline predicts, not a driver",
    )
    future = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    response = trainer.post("/v1/baselines/train", training(end=future.isoformat()))
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "end"]
    assert response.json()["detail"][0]["msg"].startswith("the range ends in the future")
    assert_422(
        trainer.post("/v1/baselines/train", training(start=END.isoformat())), ["body", "end"], "end must be after start"
    )
    assert database.scalar("SELECT count(*) FROM analytics.api_jobs") == 0


def test_without_a_dagster_instance_the_jobs_answer_503_in_one_line(
    client: TestClient, database: DatabaseHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    insert_hours(database, "t1", "mc-01")
    response = caller(client, database, "t1", "train").post("/v1/baselines/train", training())
    assert response.status_code == 503
    assert response.json() == {
        "detail": "on-demand training and detection need the Dagster instance: set DAGSTER_HOME for the API "
        "process to the platform's instance directory (docs/operations.md)"
    }


def insert_baseline(database: DatabaseHandle, tenant: str) -> None:
    """An active model energy_kwh = 10 + 0.05·production_count with an RMSE of 1 kWh."""
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO analytics.analytics_baseline (tenant_id, factory_id, machine_id, version, target, drivers, "
            "coefficients, p_values, std_errors, r2, adj_r2, rmse, mae, n, excluded, trained_from, trained_to, "
            "accepted) VALUES (%s, 'f1', 'mc-01', 1, 'energy_kwh', ARRAY['production_count'], "
            '\'{"intercept": 10, "production_count": 0.05}\', \'{"intercept": 0, "production_count": 0}\', '
            '\'{"intercept": 0, "production_count": 0}\', 0.99, 0.99, 1.0, 0.8, 1000, 0, %s, %s, true)',
            (tenant, END - timedelta(days=60), END - timedelta(days=10)),
        )


def insert_hour(database: DatabaseHandle, tenant: str, start: datetime, production: float, energy: float) -> None:
    with database.connect() as conn:
        for kpi, value, details in (
            ("production_count", production, None),
            ("energy_kwh", energy, None),
            ("fault_time_s", 0.0, None),
            ("planned_downtime_s", 0.0, '{"maintenance_s": 0}'),
        ):
            conn.execute(
                "INSERT INTO analytics.analytics_kpi (period_start, period_end, period, tenant_id, factory_id, "
                "machine_id, kpi, value, unit, details) VALUES (%s, %s, 'hour', %s, 'f1', 'mc-01', %s, %s, '', %s)",
                (start, start + timedelta(hours=1), tenant, kpi, value, details),
            )


def test_detection_judges_the_requested_hours_in_one_partitioned_run(
    repo_root: Path, dagster_home: Path, client: TestClient, database: DatabaseHandle
) -> None:
    """Two ended hours of t1/f1/mc-01 against its active baseline (predicted 60 kWh, RMSE 1): 61 kWh is
    normal (z = 1), 70 kWh critical (z = 10), so the run finds one baseline anomaly. The run is scoped
    to the request: t2's identical machine (the same hours, the same baseline) is not judged by t1's
    request, and the row t2's own earlier run left keeps every byte."""
    first, second = END - timedelta(hours=2), END - timedelta(hours=1)
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO analytics.analytics_agg (bucket_start, bucket_end, window_s, tenant_id, factory_id, "
            "machine_id, sensor_id, metric, count_n) VALUES (%s, %s, 60, 't1', 'f1', 'mc-01', 's1', 'power', 1)",
            (END - timedelta(days=2), END - timedelta(days=2) + timedelta(minutes=1)),
        )
    for tenant in ("t1", "t2"):
        insert_baseline(database, tenant)
        insert_hour(database, tenant, first, 1000, 61)
        insert_hour(database, tenant, second, 1000, 70)
    with database.connect() as conn:  # what t2's own run found earlier, then resolved by its engineer
        conn.execute(
            "INSERT INTO analytics.analytics_anomaly (time, tenant_id, factory_id, machine_id, metric, anomaly_type, "
            "method, score, severity, severity_label, status, resolved_by, resolution_note) VALUES "
            "(%s, 't2', 'f1', 'mc-01', 'energy_kwh', 'baseline_deviation', 'baseline', 10, 5, 'critical', "
            "'resolved', 'bo', 'a press ran twice')",
            (first,),
        )
    t2_rows = "SELECT a.*, a.xmin::text FROM analytics.analytics_anomaly a WHERE tenant_id = 't2'"
    t2_before = database.query(t2_rows)
    detector = caller(client, database, "t1", "detect")
    assert detector.post("/v1/baselines/train", training()).status_code == 403  # detect is not train
    body = {"factory_id": "f1", "machine_id": "mc-01", "start": first.isoformat(), "end": END.isoformat()}
    job = ok(detector.post("/v1/anomalies/detect", body), 202)
    assert job["kind"] == "anomaly_detection" and job["status"] == "queued"
    assert ok(detector.post("/v1/anomalies/detect", body))["job_id"] == job["job_id"]
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(job["run_id"])
        assert run is not None and run.job_name == "anomalies_job"
        assert run.tags["dagster/asset_partition_range_start"] == first.strftime("%Y-%m-%d-%H:%M")
        assert run.tags["dagster/asset_partition_range_end"] == second.strftime("%Y-%m-%d-%H:%M")
        assert (run.tags["analytics/tenant"], run.tags["analytics/machine"], run.tags["analytics/methods"]) == (
            "t1",
            "mc-01",
            "all",
        )
        scope = {"tenant_id": "t1", "factory_id": "f1", "machine_id": "mc-01", "methods": None}
        assert run.run_config == {"ops": {"reading_anomalies": {"config": scope}}}
        assert drive_queue(repo_root, instance, job["run_id"]).status == dg.DagsterRunStatus.SUCCESS
    done = ok(detector.get(f"/v1/jobs/{job['job_id']}"))
    assert done["status"] == "success"
    assert done["result"] == {"anomalies": 1, "by_method": {"baseline": 1}}
    assert database.query(
        "SELECT tenant_id, time, method, severity_label FROM analytics.analytics_anomaly ORDER BY tenant_id"
    ) == [("t1", second, "baseline", "critical"), ("t2", first, "baseline", "critical")]
    assert database.query(t2_rows) == t2_before
    assert database.query(
        "SELECT tenant_id, period_start, severity FROM analytics.analytics_baseline_deviation ORDER BY period_start"
    ) == [("t1", first, "normal"), ("t1", second, "critical")]

    # some methods of the factory: the run is configured with those alone (in the catalogue's order)
    body = {"factory_id": "f1", "start": first.isoformat(), "end": END.isoformat(), "methods": ["range", "baseline"]}
    factory = ok(detector.post("/v1/anomalies/detect", body), 202)
    assert factory["request"]["machine_id"] is None and factory["request"]["methods"] == ["baseline", "range"]
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(factory["run_id"])
        assert run is not None and run.tags["analytics/methods"] == "baseline,range"
        assert "analytics/machine" not in run.tags
        scope = {"tenant_id": "t1", "factory_id": "f1", "machine_id": None, "methods": ["baseline", "range"]}
        assert run.run_config == {"ops": {"reading_anomalies": {"config": scope}}}


def test_bad_detection_requests_say_why(client: TestClient, database: DatabaseHandle) -> None:
    detector = caller(client, database, "t1", "detect")
    start = END - timedelta(hours=2)
    body = {"factory_id": "f1", "machine_id": "mc-01", "start": start.isoformat(), "end": END.isoformat()}
    assert_422(
        detector.post("/v1/anomalies/detect", body),
        ["body", "machine_id"],
        "no machine f1/mc-01 of this tenant has readings to judge",
    )
    assert_422(
        detector.post("/v1/anomalies/detect", {**body, "start": (start + timedelta(minutes=30)).isoformat()}),
        ["body", "start"],
        "detection judges whole hours: give a time on the hour",
    )
    assert_422(
        detector.post("/v1/anomalies/detect", {**body, "methods": ["baseline", "tea_leaves"]}),
        ["body", "methods", 1],
        "unknown method 'tea_leaves'; known: deviation, shift, noise, stuck, isolation_forest, stoppage, baseline, "
        "range, spec",
    )
    assert_422(
        detector.post("/v1/anomalies/detect", {**body, "start": "2023-12-31T23:00:00Z"}),
        ["body", "start"],
        "the first hour with a partition is 2024-01-01T00:00:00+00:00 (PARTITIONS_START)",
    )
    next_hour = (datetime.now(UTC) + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    response = detector.post("/v1/anomalies/detect", {**body, "end": next_hour.isoformat()})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "end"]
    assert response.json()["detail"][0]["msg"].startswith("the range ends in the future")
    assert caller(client, database, "t1", "train").post("/v1/anomalies/detect", body).status_code == 403


def test_a_failed_run_is_reported_with_its_error_and_frees_the_request(
    dagster_home: Path, client: TestClient, database: DatabaseHandle
) -> None:
    insert_hours(database, "t1", "mc-01")
    trainer = caller(client, database, "t1", "train")
    job = ok(trainer.post("/v1/baselines/train", training()), 202)
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(job["run_id"])
        assert run is not None
        instance.report_run_failed(run, message="the run worker lost its database")
    failed = ok(trainer.get(f"/v1/jobs/{job['job_id']}"))
    assert (failed["status"], failed["error"], failed["result"]) == (
        "failure",
        "the run worker lost its database",
        None,
    )
    assert database.query("SELECT status, error FROM analytics.api_jobs") == [
        ("failure", "the run worker lost its database")
    ]
    # an ended job no longer holds the request: the same one is a new job and run
    again = ok(trainer.post("/v1/baselines/train", training()), 202)
    assert again["job_id"] != job["job_id"] and again["run_id"] != job["run_id"]


def test_tenants_train_only_their_own_machines(client: TestClient, database: DatabaseHandle) -> None:
    insert_hours(database, "t1", "mc-01")
    t2 = caller(client, database, "t2", "train")
    # t1's machine is no machine of t2's; naming t1 is a 404, as for any tenant a key does not have
    assert_422(
        t2.post("/v1/baselines/train", training()),
        ["body", "machine_id"],
        "no machine f1/mc-01 of this tenant has hourly KPIs to train on",
    )
    assert t2.post("/v1/baselines/train", training(tenant_id="t1")).json() == {"detail": "tenant 't1' not found"}
    assert (
        t2.post(
            "/v1/anomalies/detect",
            {"tenant_id": "t1", "factory_id": "f1", "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T01:00:00Z"},
        ).status_code
        == 403
    )  # no detect scope
    admin = caller(client, database, None, "train")
    assert_422(
        admin.post("/v1/baselines/train", training()), ["body", "tenant_id"], "tenant_id is required with an admin key"
    )
    assert database.scalar("SELECT count(*) FROM analytics.api_jobs") == 0


@pytest.mark.usefixtures("cli_env")
def test_the_cli_makes_keys_that_may_train_and_detect(
    client: TestClient, database: DatabaseHandle, capsys: pytest.CaptureFixture
) -> None:
    code, out, err = run_cli(capsys, "api-keys", "create", "--name", "energy", "--tenant", "t1", "--train", "--detect")
    assert (code, err) == (0, "")
    key_id = out[-1].split("_")[1]
    assert out[0] == f"key {key_id} for tenant t1, scopes read,train,detect; store it now, it is not shown again:"
    assert database.scalar("SELECT scopes FROM analytics.api_keys WHERE key_id = %s", (key_id,)) == [
        "detect",
        "read",
        "train",
    ]
    # the key passes the scope checks: what it gets is the verdict on its body
    holder = Caller(client, out[-1], key_id)
    assert holder.post("/v1/baselines/train", training(drivers=["flux"])).status_code == 422


def test_a_job_left_submitting_by_a_stopped_api_is_failed_and_does_not_block_the_request(
    dagster_home: Path, client: TestClient, database: DatabaseHandle
) -> None:
    """A row recorded but never submitted (the API stopped in between) holds its request for two
    minutes (SUBMIT_TIMEOUT); after that the next look marks it failed and the request runs."""
    insert_hours(database, "t1", "mc-01")
    trainer = caller(client, database, "t1", "train")
    first = ok(trainer.post("/v1/baselines/train", training()), 202)
    key = database.scalar("SELECT request_key FROM analytics.api_jobs WHERE job_id = %s", (first["job_id"],))
    with database.connect() as conn:  # the first job ended; a second was recorded, then its API stopped
        conn.execute("UPDATE analytics.api_jobs SET status = 'success'")
        stuck = conn.execute(
            "INSERT INTO analytics.api_jobs (tenant_id, kind, request, request_key, requested_by, created_at) "
            "SELECT tenant_id, kind, request, request_key, requested_by, now() - interval '1 minute' "
            "FROM analytics.api_jobs RETURNING job_id"
        ).fetchone()[0]
    assert ok(trainer.post("/v1/baselines/train", training()))["job_id"] == stuck  # still within the timeout
    with database.connect() as conn:
        conn.execute(
            "UPDATE analytics.api_jobs SET created_at = now() - interval '3 minutes' WHERE job_id = %s", (stuck,)
        )
    fresh = ok(trainer.post("/v1/baselines/train", training()), 202)
    assert fresh["job_id"] not in (first["job_id"], stuck) and fresh["status"] == "queued"
    assert database.query(
        "SELECT status, error, request_key = %s FROM analytics.api_jobs WHERE job_id = %s", (key, stuck)
    ) == [("failure", "the API stopped before the run was submitted; send the request again", True)]
