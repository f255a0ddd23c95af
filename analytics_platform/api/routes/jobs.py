"""Training and detection on demand: POST /v1/baselines/train, POST /v1/anomalies/detect and
GET /v1/jobs/{id}.

A request is checked here (its machine, drivers, range and samples), recorded as a job of the
caller's tenant (analytics.api_jobs) and handed to Dagster as a queued run of the same job the
schedule runs, with the request as run config: the run is visible in the Dagster UI with its tags
and partitions, waits under the run queue's limits like any other, and writes the same tables with
the same versioning. The job row caches the run's status and result so a finished job is answered
without asking the Dagster instance.

The API process finds the instance through DAGSTER_HOME (docs/operations.md); without it these
routes answer 503 with one line saying so, and the rest of the API is unaffected.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from analytics_platform.api.auth import Caller, require_scope, tenant_scope
from analytics_platform.api.db import DatabaseDown
from analytics_platform.api.errors import invalid
from analytics_platform.api.models import BAD_JSON, ERRORS, FORBIDDEN, NOT_FOUND, OTHER_TENANT
from analytics_platform.api.params import utc
from analytics_platform.api.respond import json_response
from analytics_platform.transforms import energy_baseline as eb
from analytics_platform.transforms.anomalies import METHODS
from analytics_platform.transforms.kpi_catalog import ENERGY_KWH

if TYPE_CHECKING:
    from analytics_platform.defs.on_demand import RunSubmitter

router = APIRouter(prefix="/v1", tags=["jobs"])

TRAINING, DETECTION = "baseline_training", "anomaly_detection"
OPEN = ("submitting", "queued", "running")
# a job row still 'submitting' after this long lost its API process between recording and submitting
SUBMIT_TIMEOUT = timedelta(minutes=2)
NO_INSTANCE = (
    "on-demand training and detection need the Dagster instance: set DAGSTER_HOME for the API process "
    "to the platform's instance directory (docs/operations.md)"
)
JOB_COLUMNS = "job_id, tenant_id, kind, request, run_id, status, result, error, requested_by, created_at, updated_at"

_Id = Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")


class Period(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: datetime
    end: datetime


class TrainRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "factory_id": "f1",
                    "machine_id": "m1",
                    "drivers": ["production_count", "avg_outdoor_temp"],
                    "start": "2025-05-01T00:00:00Z",
                    "end": "2025-08-01T00:00:00Z",
                    "exclusions": [{"start": "2025-06-10T00:00:00Z", "end": "2025-06-17T00:00:00Z"}],
                }
            ]
        },
    )
    tenant_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00]+$")
    factory_id: str = _Id
    machine_id: str = _Id
    drivers: list[str] = Field(
        min_length=1,
        max_length=20,
        description="KPIs of the catalogue (GET /v1/kpi/catalog), or hdd<base>_<kpi> / cdd<base>_<kpi>: degree hours "
        "below / above a base temperature of one (hdd18_avg_outdoor_temp)",
    )
    start: datetime = Field(description="First hour of the training range (inclusive)")
    end: datetime = Field(description="End of the training range (exclusive); not in the future")
    exclusions: list[Period] = Field(default_factory=list, max_length=100, description="Periods left out")


class DetectRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"factory_id": "f1", "machine_id": "m1", "start": "2025-08-01T00:00:00Z", "end": "2025-08-02T00:00:00Z"}
            ]
        },
    )
    tenant_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00]+$")
    factory_id: str = _Id
    machine_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00]+$")
    start: datetime = Field(description="First hour to judge, on the hour (inclusive)")
    end: datetime = Field(description="End of the range, on the hour (exclusive); the hours must have ended")
    methods: list[str] | None = Field(
        default=None, min_length=1, description="Methods judged again (their rows alone are rewritten); all if absent"
    )


class Job(BaseModel):
    job_id: int
    tenant_id: str
    kind: str = Field(description="baseline_training or anomaly_detection")
    status: str = Field(description="submitting, queued, running, success, failure or canceled")
    request: dict[str, Any]
    run_id: str | None
    run_url: str | None = Field(description="The run in the Dagster UI")
    result: dict[str, Any] | None = Field(
        description="Training: the model's version and R², or the refusal and its reason; detection: anomalies found"
    )
    error: str | None
    requested_by: str
    created_at: datetime
    updated_at: datetime


# --- the Dagster instance -----------------------------------------------------------------------


def _submitter(request: Request) -> RunSubmitter:
    """The process' run submitter, on the instance DAGSTER_HOME names (loaded at first use)."""
    state = request.app.state
    if state.run_submitter is None:
        if not os.environ.get("DAGSTER_HOME"):
            raise HTTPException(503, NO_INSTANCE)
        import dagster as dg

        from analytics_platform.defs.on_demand import RunSubmitter

        try:
            instance = dg.DagsterInstance.get()
        except Exception as exc:  # an invalid dagster.yaml, unreachable run storage
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise HTTPException(503, f"the Dagster instance of DAGSTER_HOME does not load: {first}") from None
        state.run_submitter = RunSubmitter(state.settings, instance)
    return state.run_submitter


def _writer(request: Request):
    writer = request.app.state.writer
    if writer is None:
        raise DatabaseDown("on-demand jobs are not configured on this API (set API_WRITE_DATABASE_URL)")
    return writer


# --- requests -----------------------------------------------------------------------------------


def _when(field: str | tuple[str, ...], value: datetime) -> datetime:
    if value.tzinfo is None:
        raise invalid(field, "time must include a timezone, e.g. 2025-08-20T03:00:00Z", location="body")
    return utc(field if isinstance(field, str) else field[-1], value)


def _range(request: Request, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    start, end = _when("start", start), _when("end", end)
    if start >= end:
        raise invalid("end", "end must be after start", location="body")
    now = request.app.state.clock()
    if end > now:
        raise invalid(
            "end", f"the range ends in the future ({end.isoformat()} is after {now.isoformat()})", location="body"
        )
    return start, end


def _request_key(kind: str, canonical: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([kind, canonical], sort_keys=True).encode()).hexdigest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@router.post(
    "/baselines/train",
    status_code=202,
    response_model=Job,
    summary="Retrain one machine's energy baseline with chosen drivers (a Dagster run)",
    description="Needs a key with the `train` scope. Checks the machine, the drivers (KPIs of the catalogue), the "
    "range (ended) and that enough usable hours exist, then queues a run of `baseline_training_job` for that "
    "machine alone: 202 with the new job, or 200 with the job already running for the same request. Follow it "
    "with GET /v1/jobs/{job_id}. 503 when the API has no Dagster instance (DAGSTER_HOME).",
    responses={
        **ERRORS,
        **BAD_JSON,
        **FORBIDDEN,
        **OTHER_TENANT,
        200: {"model": Job, "description": "The same request runs"},
    },
)
def train(request: Request, caller: Caller, body: TrainRequest) -> Response:
    require_scope(caller, "train")
    tenant = tenant_scope(caller, body.tenant_id, required=True, location="body")
    start, end = _range(request, body.start, body.end)
    state = request.app.state
    drivers: list[str] = []
    for i, name in enumerate(body.drivers):
        if name == ENERGY_KWH.name:
            raise invalid(("drivers", i), f"{name} is what the baseline predicts, not a driver", location="body")
        degree = eb.degree_driver(name)
        if (degree[2] if degree else name) not in state.kpi_names:
            known = ", ".join(sorted(n for n in state.kpi_names if n != ENERGY_KWH.name))
            raise invalid(
                ("drivers", i),
                f"unknown driver {name!r}: not a KPI of the catalogue ({known}), nor hdd<base>_ / cdd<base>_ "
                "(degree hours below / above a base temperature) before one",
                location="body",
            )
        if name in drivers:
            raise invalid(("drivers", i), f"driver {name!r} is given twice", location="body")
        drivers.append(name)
    exclusions = []
    for i, period in enumerate(body.exclusions):
        since, until = _when(("exclusions", i, "start"), period.start), _when(("exclusions", i, "end"), period.end)
        if since >= until:
            raise invalid(("exclusions", i, "end"), "an exclusion's end must be after its start", location="body")
        exclusions.append((since, until))
    machine = (tenant, body.factory_id, body.machine_id)

    from analytics_platform.defs.on_demand import training_shortfall

    with state.db.connection() as conn:
        known = conn.execute(
            "SELECT 1 FROM analytics.analytics_kpi WHERE tenant_id = %s AND factory_id = %s AND machine_id = %s "
            "AND period = 'hour' LIMIT 1",
            machine,
        ).fetchone()
        if known is None:
            raise invalid(
                "machine_id",
                f"no machine {body.factory_id}/{body.machine_id} of this tenant has hourly KPIs to train on",
                location="body",
            )
        shortfall = training_shortfall(conn, state.settings, machine, start, end, drivers, exclusions)
    if shortfall is not None:
        raise invalid("start", shortfall, location="body")
    canonical = {
        "tenant_id": tenant,
        "factory_id": body.factory_id,
        "machine_id": body.machine_id,
        "drivers": drivers,
        "start": _iso(start),
        "end": _iso(end),
        "exclusions": [{"start": _iso(s), "end": _iso(e)} for s, e in sorted(exclusions)],
    }
    keyed = {**canonical, "drivers": sorted(drivers)}  # the same model whatever the drivers' order
    return _start(request, caller, TRAINING, canonical, _request_key(TRAINING, keyed))


@router.post(
    "/anomalies/detect",
    status_code=202,
    response_model=Job,
    summary="Judge a range of hours again for anomalies (a Dagster run over their partitions)",
    description="Needs a key with the `detect` scope. Queues one run of `anomalies_job` over the hourly partitions "
    "of [start, end) (whole, ended hours), configured with the request's scope: it re-judges that factory (or "
    "machine) of the key's tenant and those methods alone, as the schedule judges them (their anomalies of the "
    "hours replaced, resolutions of those found again kept, their live flags confirmed or closed not_confirmed); "
    "every other machine's and method's rows stay as they are. The job's result counts the scope's anomalies by "
    "method. 202 with the new job, 200 with the one already running for the same request.",
    responses={
        **ERRORS,
        **BAD_JSON,
        **FORBIDDEN,
        **OTHER_TENANT,
        200: {"model": Job, "description": "The same request runs"},
    },
)
def detect(request: Request, caller: Caller, body: DetectRequest) -> Response:
    require_scope(caller, "detect")
    tenant = tenant_scope(caller, body.tenant_id, required=True, location="body")
    start, end = _range(request, body.start, body.end)
    state = request.app.state
    for field, moment in (("start", start), ("end", end)):
        if moment != moment.replace(minute=0, second=0, microsecond=0):
            raise invalid(field, "detection judges whole hours: give a time on the hour", location="body")
    first = state.settings.partitions_start
    if start < first:
        raise invalid("start", f"the first hour with a partition is {_iso(first)} (PARTITIONS_START)", location="body")
    hours = (end - start) // timedelta(hours=1)
    limit = state.settings.api_max_result_range_days * 24
    if hours > limit:
        raise invalid("end", f"at most {limit} hours per request (API_MAX_RESULT_RANGE_DAYS)", location="body")
    methods = list(dict.fromkeys(body.methods or METHODS))
    for i, method in enumerate(methods):
        if method not in METHODS:
            raise invalid(("methods", i), f"unknown method {method!r}; known: {', '.join(METHODS)}", location="body")
    scope = "tenant_id = %s AND factory_id = %s" + (" AND machine_id = %s" if body.machine_id else "")
    params = (tenant, body.factory_id, *((body.machine_id,) if body.machine_id else ()))
    with state.db.connection() as conn:
        known = conn.execute(f"SELECT 1 FROM analytics.analytics_agg WHERE {scope} LIMIT 1", params).fetchone()
    if known is None:
        what = f"machine {body.factory_id}/{body.machine_id}" if body.machine_id else f"factory {body.factory_id}"
        raise invalid(
            "machine_id" if body.machine_id else "factory_id",
            f"no {what} of this tenant has readings to judge",
            location="body",
        )
    canonical = {
        "tenant_id": tenant,
        "factory_id": body.factory_id,
        "machine_id": body.machine_id,
        "start": _iso(start),
        "end": _iso(end),
        "methods": sorted(methods),
    }
    return _start(request, caller, DETECTION, canonical, _request_key(DETECTION, canonical))


# --- jobs ---------------------------------------------------------------------------------------


def _start(request: Request, caller: Caller, kind: str, canonical: dict[str, Any], key: str) -> Response:
    """Record the job and submit its run, or answer the open job of the same request."""
    submitter = _submitter(request)
    writer = _writer(request)
    tenant = canonical["tenant_id"]
    with writer.connection() as conn:
        for _ in range(3):
            row = conn.execute(
                f"INSERT INTO analytics.api_jobs (tenant_id, kind, request, request_key, requested_by) "
                f"VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id, kind, request_key) "
                f"WHERE status IN ('submitting', 'queued', 'running') DO NOTHING RETURNING {JOB_COLUMNS}",
                (tenant, kind, json.dumps(canonical), key, caller.key_id),
            ).fetchone()
            if row is not None:
                break
            running = conn.execute(
                f"SELECT {JOB_COLUMNS} FROM analytics.api_jobs WHERE tenant_id = %s AND kind = %s "
                "AND request_key = %s AND status IN ('submitting', 'queued', 'running')",
                (tenant, kind, key),
            ).fetchone()
            if running is None:
                continue  # it ended between the two statements
            running = _refresh(request, conn, running)
            if running["status"] in OPEN:
                return json_response(_body(request, running), status_code=200)
        else:
            raise HTTPException(409, "the same request was started and ended concurrently; send it again")
        run_config, tags, partitions = _run_request(kind, canonical, row["job_id"], caller)
        try:
            from analytics_platform.defs.on_demand import DETECTION_JOB, TRAINING_JOB

            job_name = TRAINING_JOB if kind == TRAINING else DETECTION_JOB
            run_id = submitter.submit(job_name, run_config, tags, partitions)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            conn.execute(
                "UPDATE analytics.api_jobs SET status = 'failure', error = %s, updated_at = now() WHERE job_id = %s",
                (f"the run could not be submitted: {first}", row["job_id"]),
            )
            raise HTTPException(503, f"the Dagster instance did not accept the run: {first}") from None
        row = conn.execute(
            f"UPDATE analytics.api_jobs SET run_id = %s, status = 'queued', updated_at = now() WHERE job_id = %s "
            f"RETURNING {JOB_COLUMNS}",
            (run_id, row["job_id"]),
        ).fetchone()
    return json_response(_body(request, row), status_code=202)


def _run_request(
    kind: str, canonical: dict[str, Any], job_id: int, caller: Caller
) -> tuple[dict[str, Any], dict[str, str], tuple[str, str] | None]:
    """The run config, tags and partition range (first and last key) of a job's run. A detection's
    run is configured with the request's scope, so it judges and rewrites that machine (or factory)
    and those methods alone; the tags show the scope in the Dagster UI's run list."""
    from analytics_platform.defs.anomalies import READING_ANOMALIES
    from analytics_platform.defs.on_demand import JOB_TAG
    from analytics_platform.defs.partitions import partition_key

    tags = {
        JOB_TAG: str(job_id),
        "analytics/requested_by": caller.key_id,
        "analytics/tenant": canonical["tenant_id"],
        "analytics/factory": canonical["factory_id"],
    }
    if canonical["machine_id"] is not None:
        tags["analytics/machine"] = canonical["machine_id"]
    if kind == TRAINING:
        config = {k: canonical[k] for k in ("tenant_id", "factory_id", "machine_id", "drivers", "start", "end")}
        config["exclusions"] = canonical["exclusions"]
        return {"ops": {"energy_baseline_models": {"config": config}}}, tags, None
    start, end = datetime.fromisoformat(canonical["start"]), datetime.fromisoformat(canonical["end"])
    every = set(canonical["methods"]) == set(METHODS)
    methods = None if every else [m for m in METHODS if m in canonical["methods"]]
    tags["analytics/methods"] = "all" if every else ",".join(methods or ())
    config = {k: canonical[k] for k in ("tenant_id", "factory_id", "machine_id")}
    run_config = {"ops": {READING_ANOMALIES.to_python_identifier(): {"config": {**config, "methods": methods}}}}
    return run_config, tags, (partition_key(start), partition_key(end - timedelta(hours=1)))


def _refresh(request: Request, conn: Any, row: dict[str, Any]) -> dict[str, Any]:
    """The job with its run's current status (and, once it succeeded, its result) cached in its row."""
    if row["status"] not in OPEN:
        return row
    if row["run_id"] is None:
        if request.app.state.clock() - row["created_at"] < SUBMIT_TIMEOUT:
            return row
        status, error, result = "failure", "the API stopped before the run was submitted; send the request again", None
    else:
        state = _submitter(request).state(row["run_id"])
        status, error, result = state.status, state.error, None
        if status == row["status"]:
            return row
        if status == "missing":
            status = "failure"
        if status == "success":
            result = _result(request, conn, row)
    updated = conn.execute(
        f"UPDATE analytics.api_jobs SET status = %s, error = %s, result = %s, updated_at = now() "
        f"WHERE job_id = %s AND status = %s RETURNING {JOB_COLUMNS}",
        (status, error, None if result is None else json.dumps(result), row["job_id"], row["status"]),
    ).fetchone()
    if updated is None:  # another request refreshed it first
        updated = conn.execute(f"SELECT {JOB_COLUMNS} FROM analytics.api_jobs WHERE job_id = %s", (row["job_id"],))
        updated = updated.fetchone()
    return updated


def _result(request: Request, conn: Any, row: dict[str, Any]) -> dict[str, Any]:
    asked = row["request"]
    if row["kind"] == TRAINING:
        machine = (asked["tenant_id"], asked["factory_id"], asked["machine_id"])
        for outcome in _submitter(request).training_results(row["run_id"]):
            if (outcome["tenant_id"], outcome["factory_id"], outcome["machine_id"]) == machine:
                return {k: outcome[k] for k in ("version", "r2", "accepted", "refused", "message")}
        return {"version": None, "r2": None, "accepted": False, "refused": True, "message": "the run stored no outcome"}
    scope = "tenant_id = %s AND factory_id = %s" + (" AND machine_id = %s" if asked["machine_id"] else "")
    params = [asked["tenant_id"], asked["factory_id"], *([asked["machine_id"]] if asked["machine_id"] else [])]
    rows = conn.execute(
        f"SELECT method, count(*) AS n FROM analytics.analytics_anomaly WHERE {scope} AND time >= %s AND time < %s "
        "AND method = ANY(%s) GROUP BY method ORDER BY method",
        (*params, datetime.fromisoformat(asked["start"]), datetime.fromisoformat(asked["end"]), asked["methods"]),
    ).fetchall()
    by_method = {r["method"]: r["n"] for r in rows}
    return {"anomalies": sum(by_method.values()), "by_method": by_method}


def _body(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    base = request.app.state.settings.dagster_ui_url.rstrip("/")
    return {
        "job_id": row["job_id"],
        "tenant_id": row["tenant_id"],
        "kind": row["kind"],
        "status": row["status"],
        "request": row["request"],
        "run_id": row["run_id"],
        "run_url": f"{base}/runs/{row['run_id']}" if row["run_id"] else None,
        "result": row["result"],
        "error": row["error"],
        "requested_by": row["requested_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


@router.get(
    "/jobs/{job_id}",
    response_model=Job,
    summary="An on-demand training or detection job: status, the run's link, the result",
    description="Jobs of the key's tenant only (another tenant's job is a 404). While the run has not ended, each "
    "call asks the Dagster instance for its status; once ended, the answer comes from the job's record.",
    responses={**ERRORS, **NOT_FOUND},
)
def job(request: Request, caller: Caller, job_id: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> Response:
    tenant = tenant_scope(caller, None, required=False)
    query = f"SELECT {JOB_COLUMNS} FROM analytics.api_jobs WHERE job_id = %s"
    params: tuple = (job_id,)
    if tenant is not None:
        query += " AND tenant_id = %s"
        params = (job_id, tenant)
    with request.app.state.db.connection() as conn:
        row = conn.execute(query, params).fetchone()
    if row is None:
        raise HTTPException(404, f"job {job_id} not found")
    if row["status"] in OPEN:
        with _writer(request).connection() as conn:
            row = _refresh(request, conn, row)
    return json_response(_body(request, row))
