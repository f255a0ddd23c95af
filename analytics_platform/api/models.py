"""Response and request models: the OpenAPI contract of /v1 (rows are serialised by
`respond.page_response`, which must keep to these shapes; the schemathesis test checks it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Json = dict[str, Any] | list[Any] | str | float | bool | None
TIME = "ISO-8601 UTC"


class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong, in one sentence", examples=["anomaly 42 not found"])


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, invalid, revoked or expired API key"},
    503: {"model": ErrorBody, "description": "The database is unavailable (the reason is in `detail`)"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "No such resource for this key"}}
FORBIDDEN: dict[int | str, dict[str, Any]] = {403: {"model": ErrorBody, "description": "The key lacks a scope"}}
OTHER_TENANT: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "`tenant_id` names another tenant than the key's"}
}
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "The answer still has the `ETag` sent in `If-None-Match`: no body (docs/api.md, Caching)"}
}
BAD_JSON: dict[int | str, dict[str, Any]] = {400: {"model": ErrorBody, "description": "The body is not valid JSON"}}


class Page(BaseModel):
    count: int = Field(description="Items in this page")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class AggBucket(BaseModel):
    """One bucket; with `fields`, only the columns asked for besides bucket_start, sensor_id and provisional."""

    bucket_start: datetime = Field(description=f"Inclusive, {TIME}")
    bucket_end: datetime = Field(None, description=f"Exclusive, {TIME}")
    window_s: int = None
    tenant_id: str = None
    factory_id: str = None
    machine_id: str = None
    sensor_id: str
    metric: str = None
    count: int = Field(None, description="Readings in the bucket")
    sum: float | None = None
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    stddev: float | None = Field(None, description="Sample standard deviation; null for a single reading")
    first: float | None = None
    last: float | None = None
    p50: float | None = Field(None, description="Median; null for rolled-up windows (percentiles do not combine)")
    p95: float | None = Field(None, description="95th percentile; null for rolled-up windows")
    provisional: bool = Field(
        description="True while the hourly asset has not made the bucket final: computed from the readings so far "
        "(stored windows), or holding only the final hours (rollups)"
    )


class AggPage(Page):
    window_s: int
    source_window_s: int = Field(description="The stored window the buckets were read or rolled up from")
    source: Literal["stored", "rollup", "continuous_aggregate"]
    items: list[AggBucket]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "window_s": 3600,
                    "source_window_s": 3600,
                    "source": "stored",
                    "count": 1,
                    "next_cursor": None,
                    "items": [
                        {
                            "bucket_start": "2025-08-20T03:00:00Z",
                            "bucket_end": "2025-08-20T04:00:00Z",
                            "window_s": 3600,
                            "tenant_id": "t1",
                            "factory_id": "f1",
                            "machine_id": "m1",
                            "sensor_id": "s1",
                            "metric": "temp",
                            "count": 3600,
                            "sum": 234000.0,
                            "avg": 65.0,
                            "min": 63.9,
                            "max": 66.2,
                            "stddev": 0.41,
                            "first": 64.8,
                            "last": 65.3,
                            "p50": 65.0,
                            "p95": 65.7,
                            "provisional": False,
                        }
                    ],
                }
            ]
        }
    )


class EventRollup(BaseModel):
    bucket_start: datetime
    bucket_end: datetime
    window_s: int
    tenant_id: str
    factory_id: str
    machine_id: str = Field(description="The machine, or the lab station for lab results")
    event_type: str = Field(examples=["device_health", "sweep_batch", "lab_result", "status_change"])
    subject: str = Field(description="The lab analyte or sweep metric; empty when the type has none")
    count: int
    pass_count: int | None
    fail_count: int | None
    pass_rate: float | None
    fail_rate: float | None
    uptime_pct: float | None
    details: Json = None


class EventRollupPage(Page):
    items: list[EventRollup]


class Kpi(BaseModel):
    period_start: datetime
    period_end: datetime
    period: Literal["hour", "shift", "day", "week", "month", "year", "custom"]
    tenant_id: str
    factory_id: str | None = Field(description="null in a tenant's total (scope=tenant)")
    machine_id: str | None = Field(description="null in a factory's or tenant's total (scope=factory, tenant)")
    kpi: str = Field(examples=["oee", "sec_kwh_per_unit", "peak_demand_kw"])
    value: float | None = Field(description="null when the KPI is undefined for the period; see null_reason")
    unit: str | None
    null_reason: str | None
    details: Json = None


class KpiPage(Page):
    items: list[Kpi]


class KpiCombine(BaseModel):
    """How a KPI of a longer period (a day from its hours, a factory from its machines) follows from
    its parts. Terms name a KPI, or a key of the KPI's own `details`; several terms multiply."""

    kind: Literal["sum", "ratio_of_sums", "max_with_time", "time_weighted_mean", "from_components"] = Field(
        description=(
            "sum: add the parts; ratio_of_sums: sum(numerator) / sum(denominator) x scale; max_with_time: the "
            "largest part, `at` names the details key saying when; time_weighted_mean: weighted by `weight` "
            "(null: the period's length); from_components: numerator / denominator of the combined components"
        )
    )
    numerator: list[str] = Field(examples=[["good_count"]])
    denominator: list[str] = Field(examples=[["production_count"]])
    scale: float
    weight: str | None
    at: str | None


class KpiDefinition(BaseModel):
    name: str = Field(examples=["oee"])
    unit: str = Field(description="The unit of `value` in /v1/kpi rows; empty for avg_<metric> (the metric's unit)")
    label: str = Field(description="Display label", examples=["OEE"])
    description: str
    valid_min: float | None = Field(description="Lowest plausible value (the result checks' range); null: unbounded")
    valid_max: float | None = Field(description="Highest plausible value; null: unbounded")
    combine: KpiCombine
    format: Literal["percent", "number"] = Field(
        description="percent: a ratio shown x 100 with %; number: rounded to `digits`, followed by the unit"
    )
    digits: int = Field(description="Fraction digits to show")


class KpiCatalogPage(Page):
    items: list[KpiDefinition]


class Anomaly(BaseModel):
    anomaly_id: int
    time: datetime
    window_start: datetime | None
    window_end: datetime | None
    sample_s: float | None = Field(
        description="The series' sample spacing (s) when judged; null for interval rows (stoppage, baseline). Rows at "
        "most 3 samples apart form one anomaly event"
    )
    tenant_id: str
    factory_id: str
    machine_id: str
    sensor_id: str | None
    metric: str | None
    anomaly_type: str = Field(examples=["power", "temperature", "baseline_deviation", "production"])
    method: str = Field(
        examples=["deviation", "shift", "noise", "stuck", "isolation_forest", "stoppage", "baseline", "range", "spec"],
        description="deviation, shift, noise, stuck (seasonal statistics), isolation_forest (second opinion), "
        "stoppage, baseline, range (outside the metrics catalogue's plausible range), spec (outside the metric's "
        "spec limits)",
    )
    score: float | None
    severity: int = Field(ge=1, le=5)
    severity_label: Literal["info", "warning", "critical"]
    confidence: float | None
    observed: float | None
    expected: float | None
    model_version: int | None
    details: Json = None
    status: Literal["open", "resolved", "not_confirmed"] = Field(
        description="not_confirmed: flagged live, then not found when its hour was judged (the authoritative record)"
    )
    detected_live_at: datetime | None = Field(
        description="When the live judge flagged it, seconds after the reading; null when the hourly asset found it"
    )
    confirmed_at: datetime | None = Field(
        description="When the hourly asset found it; null while a live flag awaits its hour, or not confirmed"
    )
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None
    created_at: datetime


class AnomalyPage(Page):
    items: list[Anomaly]


class AnomalyEvent(BaseModel):
    """Consecutive anomaly rows of one series (rows at most 3 samples apart), computed on read."""

    event_id: int = Field(description="The anomaly_id of the event's first row")
    tenant_id: str
    factory_id: str
    machine_id: str
    sensor_id: str | None
    metric: str | None
    anomaly_type: str = Field(description="The peak row's type", examples=["temperature", "power", "production"])
    start_time: datetime = Field(description=f"The first row's window start, {TIME}")
    end_time: datetime = Field(description=f"The last row's window end, {TIME}")
    peak_time: datetime = Field(description="The time of the peak row: highest severity, then largest |score|")
    peak_anomaly_id: int
    severity: int = Field(ge=1, le=5, description="The highest severity of its rows")
    severity_label: Literal["info", "warning", "critical"]
    methods: list[str] = Field(description="The methods that flagged its rows, by name", examples=[["deviation"]])
    anomalies: int = Field(description="Rows in the event")
    open_anomalies: int = Field(description="Rows still open")
    status: Literal["open", "resolved", "not_confirmed"] = Field(
        description="open while any row is open; not_confirmed when every row was flagged live and then not found "
        "when its hour was judged; resolved otherwise"
    )
    observed: float | None = Field(description="The peak row's observed value")
    expected: float | None = Field(description="The peak row's expected value")
    score: float | None = Field(description="The peak row's score")


class AnomalyEventPage(Page):
    items: list[AnomalyEvent]


class AnomalyEventDetail(AnomalyEvent):
    rows: list[Anomaly] = Field(
        description="The event's rows by time (at most `limit`; `anomalies` says how many there are)"
    )


class AnomalyProfile(BaseModel):
    """What a series' anomalies are judged against: its newest seasonal profile."""

    tenant_id: str
    factory_id: str
    machine_id: str
    sensor_id: str
    metric: str
    version: int
    trained_from: datetime
    trained_to: datetime
    n_samples: int
    stage: str | None = Field(
        description="learning (too little history: not judged yet), flat (< 1 day: its median), daily, weekly",
        examples=["learning", "flat", "daily", "weekly"],
    )
    cadence_s: float | None = Field(description="The series' sample spacing (s)")
    span_hours: float | None = Field(description="Hours of history the profile was learnt from")
    created_at: datetime


class AnomalyProfilePage(Page):
    items: list[AnomalyProfile]


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # not blank, and no NUL (PostgreSQL text cannot hold it: a 422, not a 500)
    note: str = Field(
        min_length=1, max_length=4000, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$", description="What was found or done"
    )
    resolved_by: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[^\x00]+$", description="Defaults to the key's name"
    )

    @field_validator("note")
    @classmethod
    def _not_blank(cls, note: str) -> str:
        """Blank once the route strips it: Python's whitespace (e.g. U+001C) is wider than the pattern's
        \\s, and the database refuses a blank note (a 500 instead of this 422)."""
        if not note.strip():
            raise ValueError("note must not be blank")
        return note


class Baseline(BaseModel):
    baseline_id: int
    tenant_id: str
    factory_id: str
    machine_id: str
    version: int
    target: str
    drivers: list[str]
    coefficients: dict[str, float | None]
    p_values: dict[str, float | None]
    std_errors: dict[str, float | None]
    r2: float | None
    adj_r2: float | None
    rmse: float | None
    mae: float | None
    cv_rmse_pct: float | None = Field(
        description="ASHRAE Guideline 14 CV(RMSE), %: sqrt(SSR / (n - p)) / mean energy x 100 (null: fitted before it)"
    )
    n: int
    excluded: int
    trained_from: datetime
    trained_to: datetime
    accepted: bool
    warning: str | None
    active: bool
    created_at: datetime
    deactivated_at: datetime | None


class BaselinePage(Page):
    items: list[Baseline]


class Deviation(BaseModel):
    period_start: datetime
    period_end: datetime
    period: Literal["hour", "day"]
    tenant_id: str
    factory_id: str
    machine_id: str
    baseline_version: int
    actual_kwh: float | None
    predicted_kwh: float | None
    deviation_kwh: float | None
    deviation_pct: float | None
    z: float | None
    severity: Literal["normal", "warning", "critical"]


class DeviationPage(Page):
    items: list[Deviation]


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "factory_id": "f1",
                    "machine_id": "m1",
                    "drivers": {"production_count": 120, "avg_outdoor_temp": 31.5, "avg_outdoor_pressure": 1008},
                }
            ]
        },
    )
    tenant_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00]+$")
    factory_id: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")
    machine_id: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")
    drivers: dict[str, float] = Field(description="A value for every driver of the machine's active baseline")


class Prediction(BaseModel):
    baseline_id: int
    version: int
    tenant_id: str
    factory_id: str
    machine_id: str
    target: str
    unit: str = "kWh"
    drivers: dict[str, float]
    predicted: float | None = Field(description="Expected energy per hour for these driver values")


class SpecLimit(BaseModel):
    tenant_id: str
    factory_id: str = Field(description="'*' = every factory of the tenant")
    scope: Literal["analyte", "metric"]
    name: str
    lower_limit: float | None
    upper_limit: float | None
    target: float | None
    unit: str | None
    valid_from: datetime | None = Field(description="null = valid since always")
    updated_at: datetime


class SpecLimitPage(Page):
    items: list[SpecLimit]


class MetricSeen(BaseModel):
    metric: str
    last_time: datetime = Field(description=f"The newest raw reading of the metric, {TIME}")


class MachineStatus(BaseModel):
    tenant_id: str
    factory_id: str
    machine_id: str
    status: Literal["online", "offline"] = Field(
        description="offline when the last reported device status is `offline`, or when nothing (reading or "
        "device health) arrived for more than `offline_after_s`"
    )
    last_seen: datetime | None = Field(description=f"The newest reading or device-health message, {TIME}")
    last_reading_at: datetime | None = Field(description=f"The newest sensor reading, {TIME}")
    freshness_s: float | None = Field(description="Seconds from the newest sensor reading to `as_of`")
    device_status: str | None = Field(description="The last status the device reported (online, offline, ...)")
    run_state: str | None = Field(description="The last run state reported (running, idle, fault, ...)")
    health_score: float | None = Field(description="The last health score reported")
    metrics: list[MetricSeen] = Field(description="Metrics with raw readings in the look-back, by name")
    open_anomalies: int = Field(
        description="Open anomaly events (any age): consecutive anomaly rows of a series, open while any row is"
    )
    max_open_severity: int | None = Field(description="Highest peak severity among the open anomaly events")


class FailingCheck(BaseModel):
    rule_name: str
    severity: Literal["info", "warning", "critical"]
    summary: str
    asset: str | None
    check: str | None
    partition: str | None
    opened_at: datetime
    last_seen_at: datetime
    link: str | None = Field(description="The asset (and partition) in the Dagster UI")


class Fleet(BaseModel):
    as_of: datetime = Field(description=f"The server time the status is judged at, {TIME}")
    offline_after_s: int
    machines: list[MachineStatus] = Field(description="By tenant, factory and machine")
    failing_checks: list[FailingCheck] | None = Field(
        description="Open conditions of check_failed alert rules (data-contract asset checks failing now). Checks "
        "judge every tenant's data at once, so only an admin key sees them; null for a tenant key"
    )


class AnalyteQuality(BaseModel):
    analyte: str
    count: int = Field(description="Lab results in the range")
    pass_count: int
    fail_count: int
    pass_rate: float | None = Field(description="pass / (pass + fail); null without a verdict (no spec limit)")
    lower_limit: float | None = Field(description="The spec limit valid at `end` (factory row over the '*' row)")
    upper_limit: float | None
    target: float | None
    unit: str | None


class SweepQuality(BaseModel):
    machine_id: str
    count: int = Field(description="Sweep batches in the range")
    pass_count: int
    fail_count: int
    fail_rate: float | None = Field(description="fail / (pass + fail); null without a verdict")


class QualityBucket(BaseModel):
    bucket_start: datetime
    event_type: Literal["lab_result", "sweep_batch"]
    count: int
    pass_count: int
    fail_count: int
    fail_rate: float | None


class Quality(BaseModel):
    tenant_id: str
    factory_id: str
    start: datetime
    end: datetime
    lab: list[AnalyteQuality] = Field(description="Per analyte, by name")
    sweep: list[SweepQuality] = Field(description="Per machine (a batch's verdict covers all its metrics' readings)")
    hourly: list[QualityBucket] = Field(description="The factory's lab and sweep verdicts per hour, by hour")


class RejectGroup(BaseModel):
    topic: str
    reason: str
    count: int
    first_at: datetime = Field(description=f"First rejection in the range, {TIME}")
    last_at: datetime
    last_detail: str = Field(description="The detail of the newest rejection")
    last_partition: int
    last_offset: int = Field(description="Kafka coordinates of the newest rejection (replay it from there)")


class Rejects(BaseModel):
    start: datetime
    end: datetime
    total: int
    items: list[RejectGroup] = Field(description="Per topic and reason, most rejected first")


class AlertLogEntry(BaseModel):
    log_id: int
    created_at: datetime
    rule_name: str
    fingerprint: str
    transition: Literal["open", "reopen", "resolve"]
    channel: str
    status: Literal["pending", "sent", "failed", "muted", "unconfigured", "gave_up"]
    attempts: int
    sent_at: datetime | None
    error: str | None
    tenant_id: str | None
    factory_id: str | None
    machine_id: str | None
    severity: str
    title: str
    body: str
    link: str | None


class AlertLogPage(Page):
    items: list[AlertLogEntry]


# ------------------------------------------------------------------------------------------------
# the metrics catalogue (tenant data: GET / PUT / DELETE /v1/catalog/...)
# ------------------------------------------------------------------------------------------------
UnknownMetrics = Literal["reject", "accept"]


class CatalogEntry(BaseModel):
    tenant_id: str = Field(description="The tenant whose entry this is; '*' = a platform default (every tenant)")
    metric: str
    unit: str | None = Field(description="The canonical unit; null = any unit")
    min_value: float | None = Field(description="The lowest plausible value (value-range contracts); null = not judged")
    max_value: float | None = Field(description="The highest plausible value; null = not judged")
    description: str
    source: Literal["packaged", "cli", "api"] = Field(
        description="Who wrote it last: the packaged defaults, `analytics-platform metrics set`, or this API"
    )
    overrides: bool = Field(description="A tenant's own entry replacing the platform default of the same name")
    updated_at: datetime = Field(description=TIME)
    updated_by: str | None = Field(description="The API key's name, the CLI user, or the packaged file")


class MetricPolicy(BaseModel):
    tenant_id: str = Field(description="The tenant asked about; '*' = the default policy")
    unknown_metrics: UnknownMetrics = Field(
        description="What becomes of a reading whose metric is in neither the tenant's entries nor the defaults: "
        "`reject` (kept as unknown_metric, re-admittable with `analytics-platform rejects readmit`) or `accept` "
        "(stored, flagged uncatalogued, no range check)"
    )
    own: bool = Field(description="true: the tenant's own policy; false: it has none, the default ('*') applies")
    updated_at: datetime | None = Field(description=f"When the policy that applies was set, {TIME}")
    updated_by: str | None


class CatalogPage(Page):
    tenant_id: str | None = Field(
        description="Whose catalogue this is (the defaults merged with that tenant's entries); null = every entry of "
        "every tenant (an admin key without `tenant_id`)"
    )
    policy: MetricPolicy = Field(description="The tenant's unknown-metric policy (the default's for tenant_id null)")
    items: list[CatalogEntry] = Field(description="By metric; '*' before the tenants' entries of the same metric")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tenant_id": "t1",
                    "policy": {
                        "tenant_id": "t1",
                        "unknown_metrics": "reject",
                        "own": False,
                        "updated_at": "2025-08-20T00:00:00Z",
                        "updated_by": "migration 08",
                    },
                    "count": 2,
                    "next_cursor": None,
                    "items": [
                        {
                            "tenant_id": "*",
                            "metric": "humidity",
                            "unit": "%",
                            "min_value": 0.0,
                            "max_value": 100.0,
                            "description": "relative humidity",
                            "source": "packaged",
                            "overrides": False,
                            "updated_at": "2025-08-20T00:00:00Z",
                            "updated_by": "metrics.yaml",
                        },
                        {
                            "tenant_id": "t1",
                            "metric": "temp",
                            "unit": "degC",
                            "min_value": -20.0,
                            "max_value": 150.0,
                            "description": "oven temperature",
                            "source": "api",
                            "overrides": True,
                            "updated_at": "2025-08-21T09:30:00Z",
                            "updated_by": "plant-admin",
                        },
                    ],
                }
            ]
        }
    )


def _storable_text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: a 422 that says so, rather than a 500 from the database."""
    if value is not None and "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _name(value: str | None) -> str | None:
    _storable_text(value)
    if value is not None and not value.strip():
        raise ValueError("must not be blank")
    return value


class CatalogEntryBody(BaseModel):
    """A whole entry: PUT replaces every field, so a field left out becomes null (not judged) or ''."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"unit": "Nm", "min_value": 0, "max_value": 5000, "description": "spindle torque"}]
        },
    )
    unit: str | None = Field(default=None, max_length=64, description="The canonical unit; null = any unit")
    min_value: float | None = Field(default=None, allow_inf_nan=False, description="Lowest plausible value")
    max_value: float | None = Field(default=None, allow_inf_nan=False, description="Highest plausible value")
    description: str = Field(default="", max_length=2000, description="What it measures")
    tenant_id: str | None = Field(
        default=None,
        max_length=200,
        description="A tenant key: its own tenant (the default; another is a 404, '*' a 403). An admin key: "
        "required, '*' = the platform defaults",
    )

    @field_validator("unit", "tenant_id")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        return _name(value)

    @field_validator("description")
    @classmethod
    def _text(cls, value: str) -> str:
        return _storable_text(value) or ""


class PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"unknown_metrics": "accept"}]})
    unknown_metrics: UnknownMetrics
    tenant_id: str | None = Field(
        default=None,
        max_length=200,
        description="A tenant key: its own tenant (the default; another is a 404, '*' a 403). An admin key: "
        "required, '*' = the default policy of tenants without their own",
    )

    @field_validator("tenant_id")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        return _name(value)


class LabAggBucket(BaseModel):
    """One bucket of one station's analyte, with the spec limit in force at its start."""

    bucket_start: datetime = Field(description=f"Inclusive, {TIME}")
    bucket_end: datetime = Field(description=f"Exclusive, {TIME}")
    window_s: int
    tenant_id: str
    factory_id: str
    station_id: str
    analyte: str
    count: int = Field(description="Lab results in the bucket")
    sum: float | None
    avg: float | None
    min: float | None
    max: float | None
    stddev: float | None = Field(description="Sample standard deviation; null for a single result")
    first: float | None = Field(description="The value of the earliest result")
    last: float | None = Field(description="The value of the latest result")
    p50: float | None = Field(
        description="Median (linear interpolation, as PostgreSQL's percentile_cont); null for rolled-up windows"
    )
    p95: float | None = Field(description="95th percentile (linear interpolation); null for rolled-up windows")
    lower_limit: float | None = Field(
        description="The analyte's spec limit in force at bucket_start (the factory's own before the tenant-wide "
        "'*' one, the latest valid_from at or before bucket_start); null when there is none"
    )
    upper_limit: float | None
    target: float | None
    unit: str | None = Field(description="The spec limit's unit")


class LabAggPage(Page):
    window_s: int
    source_window_s: int = Field(description="The stored window the buckets were read or rolled up from")
    source: Literal["stored", "rollup"]
    items: list[LabAggBucket]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "window_s": 3600,
                    "source_window_s": 3600,
                    "source": "stored",
                    "count": 1,
                    "next_cursor": None,
                    "items": [
                        {
                            "bucket_start": "2025-08-20T03:00:00Z",
                            "bucket_end": "2025-08-20T04:00:00Z",
                            "window_s": 3600,
                            "tenant_id": "t1",
                            "factory_id": "f1",
                            "station_id": "lab-01",
                            "analyte": "Moisture",
                            "count": 4,
                            "sum": 50.0,
                            "avg": 12.5,
                            "min": 11.0,
                            "max": 14.0,
                            "stddev": 1.290994,
                            "first": 12.0,
                            "last": 11.0,
                            "p50": 12.5,
                            "p95": 13.85,
                            "lower_limit": 11.5,
                            "upper_limit": 13.5,
                            "target": 12.5,
                            "unit": "%",
                        }
                    ],
                }
            ]
        }
    )
