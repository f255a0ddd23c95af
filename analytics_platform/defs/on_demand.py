"""Runs the API starts on request (POST /v1/baselines/train, POST /v1/anomalies/detect) and what it
reads back of them (GET /v1/jobs/{id}).

Why here and not in the API: a run is created from the job's definition (Dagster stores the job's
and the execution plan's snapshots with the run, as the UI does when it launches one), and the
definitions live here. The run is then only *submitted*: it waits in the instance's run queue with
the scheduled runs, under the same limits (dagster.yaml `concurrency`), and the daemon launches it
in the code location named LOCATION_NAME, like a run started from the Dagster UI. So the API
process needs the instance (DAGSTER_HOME) but never runs a model itself.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import dagster as dg
import psycopg
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._utils.warnings import BetaWarning
from pydantic import SecretStr

from analytics_platform.defs import build_definitions
from analytics_platform.defs.baselines import BASELINE_MODELS
from analytics_platform.defs.baselines.assets import RESULTS_METADATA
from analytics_platform.results import baselines
from analytics_platform.settings import PlatformSettings

# the code location of workspace.yaml and of the chart's workspace: where the daemon launches the runs
LOCATION_NAME = "analytics_platform"
MODULE, ATTRIBUTE = "analytics_platform.definitions", "defs"
TRAINING_JOB = "baseline_training_job"
DETECTION_JOB = "anomalies_job"
RESOURCES_FROM_RUN_ENV = "postgresql://set-by-the-run-process-environment/DATABASE_URL"
JOB_TAG = "analytics/api_job"  # the analytics.api_jobs id a run was started for (searchable in the UI)

# Dagster's run states, as a job reports them
_STATUS = {
    dg.DagsterRunStatus.NOT_STARTED: "queued",
    dg.DagsterRunStatus.QUEUED: "queued",
    dg.DagsterRunStatus.STARTING: "running",
    dg.DagsterRunStatus.STARTED: "running",
    dg.DagsterRunStatus.MANAGED: "running",
    dg.DagsterRunStatus.CANCELING: "running",
    dg.DagsterRunStatus.SUCCESS: "success",
    dg.DagsterRunStatus.FAILURE: "failure",
    dg.DagsterRunStatus.CANCELED: "canceled",
}


@dataclass(frozen=True)
class RunState:
    """A run as a job reports it: status (queued, running, success, failure, canceled, or missing
    when the instance no longer has the run) and, for a failure, the first error's message."""

    status: str
    error: str | None = None


def training_shortfall(
    conn: psycopg.Connection,
    settings: PlatformSettings,
    machine: Sequence[str],
    start: datetime,
    end: datetime,
    drivers: Sequence[str],
    exclusions: Sequence[tuple[datetime, datetime]] = (),
) -> str | None:
    """Why training `machine` as asked would be refused for too few samples (None: enough), with
    the numbers: checked before the run is queued, so the caller gets the reason at once."""
    usable = baselines.usable_hours(conn, machine, start, end, drivers, exclusions)
    needed = max(settings.baseline_min_samples, len(drivers) + 2)  # as fit_baseline requires
    if usable >= needed:
        return None
    return (
        f"only {usable} usable hours of {'/'.join(machine)} in the training range, {needed} needed "
        "(BASELINE_MIN_SAMPLES): an hour counts when it has energy_kwh and every driver, no fault or "
        "maintenance time and no overlap with an exclusion"
    )


class RunSubmitter:
    """Creates and submits runs of the platform's jobs on one Dagster instance, and reads them back."""

    def __init__(self, settings: PlatformSettings, instance: dg.DagsterInstance) -> None:
        self.settings = settings
        self.instance = instance

    @cached_property
    def _definitions(self) -> dg.Definitions:
        # built once per process, at the first request that starts a run (Dagster warns at each
        # definition with a beta parameter; the code location's log carries that already)
        warnings.filterwarnings("ignore", category=BetaWarning)
        # The API holds no pipeline credential, and Dagster stores the job's snapshot (resource
        # values included) with the run: the resources here name a placeholder. The run's own
        # process builds its resources from its environment (DATABASE_URL, ...) as every run does.
        placeholder = self.settings.model_copy(
            update={"database_url": SecretStr(RESOURCES_FROM_RUN_ENV), "kafka_sasl_password": None}
        )
        return build_definitions(placeholder, secrets_from_env=False)

    def submit(
        self,
        job_name: str,
        run_config: Mapping[str, Any],
        tags: Mapping[str, str],
        partition_range: tuple[str, str] | None = None,
    ) -> str:
        """Queue a run of `job_name` (over the partition keys `partition_range`, first and last,
        in one run); returns its run id."""
        defs = self._definitions
        job = defs.resolve_job_def(job_name)
        repository = defs.get_repository_def().name
        run_tags = {**job.tags, **tags}
        if partition_range is not None:
            run_tags[ASSET_PARTITION_RANGE_START_TAG], run_tags[ASSET_PARTITION_RANGE_END_TAG] = partition_range
        location = ManagedGrpcPythonEnvCodeLocationOrigin(
            LoadableTargetOrigin(executable_path=sys.executable, module_name=MODULE, attribute=ATTRIBUTE),
            LOCATION_NAME,
        )
        code_origin = JobPythonOrigin(
            job_name,
            RepositoryPythonOrigin(
                executable_path=sys.executable,
                code_pointer=ModuleCodePointer(MODULE, ATTRIBUTE, None),
                # the API runs the platform's image; a Kubernetes launcher starts the run pod from it
                container_image=os.environ.get("DAGSTER_CURRENT_IMAGE"),
                entry_point=None,
                container_context=None,
            ),
        )
        run = self.instance.create_run_for_job(
            job,
            run_config=dict(run_config),
            tags=run_tags,
            remote_job_origin=RemoteJobOrigin(RemoteRepositoryOrigin(location, repository), job_name),
            job_code_origin=code_origin,
        )
        self.instance.submit_run(run.run_id, workspace=None)
        return run.run_id

    def state(self, run_id: str) -> RunState:
        run = self.instance.get_run_by_id(run_id)
        if run is None:
            return RunState("missing", f"the Dagster instance has no run {run_id} (deleted?)")
        status = _STATUS.get(run.status, "running")
        return RunState(status, self._error(run_id) if status == "failure" else None)

    def _error(self, run_id: str) -> str:
        for kind in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE):
            records = self.instance.get_records_for_run(run_id, of_type=kind, limit=1).records
            for record in records:
                event = record.event_log_entry.dagster_event
                data = event.step_failure_data if kind == dg.DagsterEventType.STEP_FAILURE else None
                if data is not None and data.error is not None:
                    return data.error.message.strip()
                if event.message:
                    return event.message
        return "the run failed; see it in the Dagster UI"

    def training_results(self, run_id: str) -> list[dict[str, Any]]:
        """The per-machine outcomes the baseline asset recorded in the run (its materialisation's
        `results`): version and R² of each stored model, or the refusal with its reason."""
        records = self.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        for record in records:
            materialization = record.event_log_entry.asset_materialization
            if materialization is not None and materialization.asset_key == BASELINE_MODELS:
                value = materialization.metadata.get(RESULTS_METADATA)
                if value is not None:
                    return list(value.value)
        return []
