"""Platform configuration, read from the environment.

One typed place for every knob so that `docs/configuration.md` can list them and a bad value fails
at start-up with the variable's name instead of deep inside a sensor tick. Secrets (database URLs,
SASL passwords) are read here but never rendered: `PlatformSettings.__repr__` hides them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from analytics_platform.contracts.catalog import PACKAGED_CATALOG
from analytics_platform.contracts.registry import registry

REPO_ROOT = Path(__file__).resolve().parents[1]


def _split_list(value: Any) -> Any:
    """Accept both `a,b,c` and `["a","b","c"]` for list-valued variables."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class PlatformSettings(BaseSettings):
    """Everything the pipeline, API and devstack read from the environment."""

    # hide_input_in_errors: a validation error would otherwise print every value read, DATABASE_URL's password too
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False, hide_input_in_errors=True)

    database_url: SecretStr = Field(
        default=SecretStr("postgresql://analytics@127.0.0.1:55432/analytics"),
        description="Read-write URL used by the pipeline (Dagster assets and sensors).",
    )
    api_database_url: SecretStr | None = Field(
        default=None, description="Read-only URL used by the API; defaults to DATABASE_URL."
    )
    kafka_brokers: str = Field(default="127.0.0.1:9092", description="bootstrap.servers")
    kafka_security_protocol: str | None = None
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_topic_prefix: str = Field(default="", description="Prepended to every topic name.")
    kafka_topics: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Topics to drain; empty means the default topic of every enabled domain.",
    )
    domain_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Importable modules defining `CONTRACT`: domains registered from outside the package.",
    )
    domains_enabled: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Domains that get a drain sensor and a raw asset; unset = every registered domain.",
    )
    windows: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [60, 300, 3600])

    partitions_start: datetime = Field(
        default=datetime(2024, 1, 1, tzinfo=UTC),
        description="First hourly partition; readings older than this are rejected.",
    )
    contract_max_future_s: int = Field(
        default=600,
        ge=0,
        description="A reading whose time is more than this ahead of its Kafka timestamp is rejected.",
    )
    metrics_catalog: Path = Field(
        default=PACKAGED_CATALOG,
        description="Known metrics (name, unit, plausible range) for sensors.device.readings.",
    )

    drain_consumer: str = Field(default="analytics-drain", description="Checkpoint owner name.")
    drain_batch_size: int = Field(default=20000, ge=1)
    drain_budget_s: float = Field(
        default=20.0,
        gt=0,
        lt=55,
        description="Max seconds per sensor tick. With DRAIN_FOLLOW a tick drains this long: then set it a little "
        "under a multiple of the sensor daemon's 5 s loop (e.g. 38), so the next tick starts right after.",
    )
    drain_interval_s: int = Field(default=5, ge=1)
    drain_poll_timeout_s: float = Field(default=0.5, gt=0)
    drain_follow: bool = Field(
        default=False,
        description="A sensor tick keeps consuming after it caught up, until DRAIN_BUDGET_S (false: it ends "
        "when caught up, and a reading waits for the next tick).",
    )
    drain_linger_s: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="A micro-batch is committed when full or this many seconds after its first message came.",
    )
    drain_mode: str = Field(
        default="sensor",
        pattern="^(sensor|service)$",
        description="`sensor`: the drain sensors read Kafka in their ticks (nothing else to run). `service`: "
        "`analytics-platform drain serve` reads Kafka all the time (a reading is served ~DRAIN_LINGER_S after it "
        "reaches the broker) and the drain sensors only report what it committed to Dagster.",
    )
    drain_pass_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="The drain service's pass length: each pass re-lists partitions, re-takes their locks and "
        "re-reads the metrics catalogue, so a catalogue edit or a new partition applies within this many seconds.",
    )
    drain_heartbeat_file: Path | None = Field(
        default=None,
        description="The drain service renews this file's time while every drain thread makes progress; "
        "`analytics-platform drain check` fails once it is older than 3 x DRAIN_PASS_S + 30 s (a liveness probe).",
    )
    drain_start: str = Field(default="earliest", pattern="^(earliest|latest)$")
    drain_shards: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Drain shards per domain: shard i owns the Kafka partitions p with p % DRAIN_SHARDS == i.",
    )
    drain_shards_here: Annotated[list[int] | None, NoDecode] = Field(
        default=None,
        description="Shards whose drain sensors this code location runs: `all` (default), `none`, or e.g. `0,2`.",
    )
    backfill_executor: str = Field(
        default="in_process",
        pattern="^(in_process|k8s)$",
        description="`k8s` adds backfill jobs whose steps run as Kubernetes pods (k8s_job_executor).",
    )

    agg_finalise: bool = Field(
        default=True,
        description="With DRAIN_MODE=service: the drain service materialises the current hour's window aggregates "
        "each time a bucket of the smallest window closes (a Dagster run in its own process; it needs DAGSTER_HOME), "
        "so the bucket is final seconds later, and the automation sensor leaves the current hour to it.",
    )
    agg_finalise_delay_s: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="How long after a bucket's end the drain service finalises it: room for the readings still in "
        "flight (a reading later than that is late data: the next bucket's run takes it in).",
    )
    automation_interval_s: int = Field(
        default=5, ge=1, description="How often the window aggregates look for new or changed raw partitions."
    )
    agg_provisional_hours: int = Field(
        default=3,
        ge=0,
        le=48,
        description="/v1/agg computes the buckets not yet final from raw readings this many whole hours back "
        "(and in the current hour); older buckets are served as stored.",
    )
    automation_events_interval_s: int = Field(
        default=30, ge=1, description="How often the event and daily assets look for changed inputs."
    )
    automation_lookback_hours: int = Field(
        default=48,
        ge=1,
        description="Late data older than this is not re-processed automatically (backfill it instead).",
    )
    agg_chunk_hours: int = Field(
        default=24, ge=1, description="Hours recomputed per transaction when a run covers a range."
    )
    device_state_lookback_hours: int = Field(
        default=168, ge=1, description="How far back a machine's last status is looked for (uptime, offline periods)."
    )
    device_offline_minutes: float = Field(
        default=10,
        gt=0,
        description="A machine that sends nothing to device.health for more than this is offline from its last "
        "message (uptime, offline periods), as the device_offline alert rule says; that rule's `minutes` default.",
    )

    kpi_gap_s: int = Field(
        default=300, ge=1, description="A silence longer than this in a machine's readings counts as downtime."
    )
    kpi_slot_s: int = Field(default=60, ge=1, description="Slot size of the data-completeness KPI.")
    kpi_demand_interval_s: int = Field(
        default=0,
        ge=0,
        le=3600,
        description="0 (default): peak demand is the maximum power draw, the highest total demand in force. "
        "900 (say): the highest average demand over one of these UTC-aligned intervals, as a utility bills "
        "demand, so a momentary motor start does not set it; it must divide an hour (so hours and days agree).",
    )
    kpi_drivers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["outdoor_temp", "outdoor_pressure"],
        description="Sensor metrics averaged per machine and period (avg_<metric> KPIs; baseline drivers).",
    )
    baseline_drivers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["production_count", "avg_outdoor_temp", "avg_outdoor_pressure"],
        description="Hourly KPIs the energy baseline regresses energy_kwh on.",
    )
    baseline_training_days: int = Field(default=90, ge=1, description="Trailing days an energy baseline learns from.")
    baseline_min_samples: int = Field(default=1000, ge=2, description="Fewest usable hours a baseline is fitted on.")
    baseline_r2_min: float = Field(default=0.80, gt=0, le=1, description="R² below this stores the model flagged.")
    trend_windows_hours: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [6, 24],
        description="Rolling windows (hours) over which each series' and hourly KPI's trend is judged every hour "
        "(analytics_trend; a `trend` alert rule names one as window_hours).",
    )
    trend_min_points: int = Field(
        default=6, ge=3, description="Fewest hourly points in a window for a trend to be judged (else stable)."
    )
    trend_alpha: float = Field(
        default=0.05, gt=0, lt=1, description="Mann–Kendall level: p below it makes a trend increasing/decreasing."
    )
    anomaly_contamination: float = Field(default=0.01, gt=0, le=0.5, description="Isolation Forest contamination.")
    anomaly_trees: int = Field(default=50, ge=1, description="Trees per Isolation Forest.")
    anomaly_training_hours: int = Field(
        default=24,
        ge=1,
        description="Trailing hours the Isolation Forest learns from (and the context the hourly statistics read).",
    )
    anomaly_refit_hours: int = Field(
        default=24,
        ge=1,
        description="Forests and profiles are re-learned at every multiple of this (epoch-aligned: UTC midnight "
        "for 24); an hour is judged with those learned up to the last such point before it.",
    )
    anomaly_metrics: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Metrics judged for anomalies (empty = every metric with history)."
    )
    anomaly_skip_metrics: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["outdoor_temp", "outdoor_pressure"],
        description="Metrics never judged for anomalies, named here (and logged by every run) rather than implied "
        "by KPI_DRIVERS: weather wanders over days, which no daily profile predicts (judged, a day of 100 machines' "
        "weather gave 120k warnings: docs/benchmarks.md). The cumulative counters energy, count_total, count_good "
        "are judged as production stoppages instead. Empty: judge every metric.",
    )
    anomaly_history_days: int = Field(
        default=14,
        ge=1,
        le=90,
        description="Days of history a series' anomaly profile (time of day × weekday) learns from; a new "
        "deployment starts from whatever history exists.",
    )
    anomaly_timezone: str = Field(
        default="UTC",
        description="Time zone (IANA name) in which hours of day and weekdays are profiled for a tenant without "
        "its own plant timezone (plant_tenants.timezone wins).",
    )
    anomaly_weekend_days: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [6, 7],
        description="ISO weekdays (Mon=1 .. Sun=7) profiled as the plant's weekend, comma-separated.",
    )
    anomaly_settle_minutes: int = Field(
        default=30,
        ge=0,
        description="Minutes after a machine resumes running during which its readings are not judged.",
    )
    anomaly_stoppage_minutes: int = Field(
        default=10, ge=1, description="Running without production this long is a stoppage."
    )
    anomaly_rebase_hours: float = Field(
        default=6,
        ge=0,
        description="A level held this long beyond the critical shift (steady, on one side) re-bases the seasonal "
        "expectation, so a machine moved to a new operating point is not critical for days; 0 = off. 6 is what "
        "it was tuned with.",
    )

    reject_ratio_max: float = Field(default=0.05, ge=0, le=1)
    checks_config: Path = Field(
        default=REPO_ROOT / "analytics_platform" / "config" / "checks.yaml",
        description="Data-contract thresholds of the asset checks (ranges, freshness, completeness, ratios).",
    )
    alerts_config: Path = Field(
        default=REPO_ROOT / "analytics_platform" / "config" / "alerts.yaml",
        description="Alert channels, rules and mute windows loaded by `analytics-platform alerts load`.",
    )
    alert_interval_s: int = Field(
        default=2,
        ge=1,
        description="How often the alert sensor evaluates the database rules and delivers (seconds): an anomaly "
        "flagged live reaches the receiver within a few of these.",
    )
    alert_dagster_interval_s: int = Field(
        default=30,
        ge=1,
        description="How often the alert sensor also evaluates the rules that read the Dagster instance "
        "(check_failed, run_failed): reading check and run history costs more than a database rule.",
    )
    live_detect_interval_s: int = Field(
        default=2,
        ge=1,
        description="How often the live judges read the sensor readings and lab results committed since their cursors.",
    )
    live_detect_lookback_s: int = Field(
        default=600,
        ge=0,
        description="Readings and lab results older than this when they arrive are left to the hourly assets "
        "(late data). Keep it at most the anomaly schedule's minute (:10): the hour must run after every reading "
        "judged live.",
    )
    live_seasonal_grace_s: int = Field(
        default=5,
        ge=0,
        description="The live seasonal judge judges a 60 s sample this many seconds after it closed, so the "
        "readings the drains are still committing for it are in (a reading later than that makes the hour close "
        "the live row not_confirmed when it changes the verdict).",
    )
    live_detect_max_wait_s: int = Field(
        default=30,
        ge=1,
        description="How long the live judge waits for a writing transaction older than its horizon before "
        "judging past it (rows it then misses are judged by the hour).",
    )
    alert_delivery_budget_s: float = Field(
        default=20.0, gt=0, lt=55, description="Seconds per tick spent delivering; the rest waits for the next tick."
    )
    alert_send_timeout_s: float = Field(default=5.0, gt=0, description="Connect/read timeout of one delivery.")
    alert_retry_base_s: int = Field(
        default=30, ge=1, description="First retry delay of a failed delivery; doubled per attempt."
    )
    alert_retry_max_s: int = Field(default=3600, ge=1, description="Longest delay between two delivery attempts.")
    alert_max_attempts: int = Field(default=8, ge=1, description="Deliveries given up after this many failures.")
    dagster_ui_url: str = Field(
        default="http://127.0.0.1:3000", description="Base URL of the Dagster UI, linked from alert messages."
    )
    ui_refresh_s: float = Field(
        default=15, ge=1, le=3600, description="How often the dashboard's overview re-reads the fleet status."
    )
    ui_live_s: float = Field(
        default=5,
        ge=1,
        le=3600,
        description="How often a machine chart whose range ends now re-reads its buckets and anomaly events.",
    )
    api_write_database_url: SecretStr | None = Field(
        default=None,
        description="URL of the narrowly-granted role (analytics_resolver) for POST /v1/anomalies/{id}/resolve; "
        "unset = resolving answers 503.",
    )
    api_max_range_days: int = Field(default=31, ge=1, description="Longest range of /v1/readings (raw rows).")
    api_max_result_range_days: int = Field(
        default=400, ge=1, description="Longest range of the KPI, event-rollup, deviation and anomaly endpoints."
    )
    api_max_buckets: int = Field(
        default=50000, ge=1, description="Most buckets one /v1/agg range may span (range / window_s)."
    )
    api_page_limit_max: int = Field(default=10000, ge=1)
    api_key_cache_s: float = Field(
        default=30.0, ge=0, description="Seconds a verified API key is trusted before it is looked up again."
    )
    api_response_cache_mb: float = Field(
        default=64.0,
        ge=0,
        description="MiB of /v1/agg and /v1/kpi answers each API worker keeps by their materialisation tag "
        "(never stale: the tag is read on every request); least recently used go first; 0 turns it off.",
    )
    api_db_wait_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Seconds a request waits for a database connection before it answers 503 (database down).",
    )
    api_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (e.g. https://dash.example.com); empty = CORS off."
    )
    # logs and traces (analytics_platform/observability.py; tracing itself is configured by the standard
    # OTEL_* variables, read by the OpenTelemetry SDK: docs/operations.md, "OpenTelemetry")
    log_level: str = Field(
        default="INFO",
        pattern="(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
        description="Lowest level the platform's processes log.",
    )
    log_format: str = Field(
        default="json",
        pattern="^(json|text)$",
        description="json: one JSON object per line (the edge agent's fields); text: a line for a terminal.",
    )

    @field_validator(
        "kafka_topics",
        "domain_modules",
        "domains_enabled",
        "kpi_drivers",
        "baseline_drivers",
        "anomaly_metrics",
        "anomaly_skip_metrics",
        "api_cors_origins",
        "trend_windows_hours",
        mode="before",
    )
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("drain_shards_here", mode="before")
    @classmethod
    def _shards_here(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all")):
            return None
        if isinstance(value, str) and value.strip().lower() == "none":
            return []
        try:
            return sorted({int(v) for v in _split_list(value)})
        except (TypeError, ValueError):
            raise ValueError(f"DRAIN_SHARDS_HERE must be all, none or shard numbers like 0,2; got {value!r}") from None

    @model_validator(mode="after")
    def _every_domain_by_default(self) -> PlatformSettings:
        if "domains_enabled" not in self.model_fields_set:
            # not through __setattr__: the value stays a default (not in model_fields_set), so a copy
            # of these settings with other DOMAIN_MODULES gets the default of those
            self.__dict__["domains_enabled"] = list(registry(self.domain_modules).contracts)
        return self

    @model_validator(mode="after")
    def _shards_in_range(self) -> PlatformSettings:
        wrong = [i for i in self.drain_shards_here or [] if not 0 <= i < self.drain_shards]
        if wrong:
            raise ValueError(
                f"DRAIN_SHARDS_HERE names shard(s) {wrong}, but DRAIN_SHARDS={self.drain_shards} "
                f"has shards 0..{self.drain_shards - 1}"
            )
        return self

    def drain_shards_run_here(self) -> list[int]:
        """The shard numbers whose drain sensors this process defines."""
        return list(range(self.drain_shards)) if self.drain_shards_here is None else list(self.drain_shards_here)

    @field_validator("anomaly_weekend_days", mode="before")
    @classmethod
    def _weekend(cls, value: Any) -> Any:
        try:
            days = sorted({int(v) for v in _split_list(value)})
        except (TypeError, ValueError):
            raise ValueError(f"ANOMALY_WEEKEND_DAYS must be ISO weekdays 1..7 like 6,7; got {value!r}") from None
        if any(not 1 <= d <= 7 for d in days):
            raise ValueError(f"ANOMALY_WEEKEND_DAYS must be ISO weekdays 1..7 like 6,7; got {value!r}")
        return days

    @field_validator("anomaly_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"ANOMALY_TIMEZONE must be an IANA time zone like Europe/Berlin; got {value!r}") from None
        return value

    @field_validator("kpi_demand_interval_s")
    @classmethod
    def _demand_interval(cls, value: int) -> int:
        if value and 3600 % value:
            raise ValueError(f"KPI_DEMAND_INTERVAL_S must divide an hour (e.g. 900, 1800) or be 0; got {value}")
        return value

    @field_validator("windows", mode="before")
    @classmethod
    def _windows(cls, value: Any) -> Any:
        windows = [int(v) for v in _split_list(value)]
        if not windows or any(w <= 0 for w in windows):
            raise ValueError(
                f"WINDOWS must be one or more positive numbers of seconds, e.g. 60,300,3600; got {value!r}"
            )
        return windows

    @field_validator("partitions_start")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def api_url(self) -> str:
        """The URL the API connects with (its own read-only role when configured)."""
        return (self.api_database_url or self.database_url).get_secret_value()

    def api_write_url(self) -> str | None:
        """The URL of the API's one write (resolving anomalies), when configured."""
        return self.api_write_database_url.get_secret_value() if self.api_write_database_url else None

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every consumer, producer and admin client."""
        config: dict[str, Any] = {"bootstrap.servers": self.kafka_brokers}
        if self.kafka_security_protocol:
            config["security.protocol"] = self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            config["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_ca_location:
            config["ssl.ca.location"] = self.kafka_ssl_ca_location
        return config

    # --- The source documents' configuration names (issue 26): aliases of the settings above ---
    alert_channel_kinds: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Channel kinds that deliver (e.g. `slack,email`); a channel of another kind logs its "
        "notifications `unconfigured`. Empty: every kind. ALERT_BACKEND is its source-document name.",
    )
    drain_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="The drain service serves its pass, message, row, reject and error counts on this port "
        "(/metrics, for deploy/prometheus/rules.yml's drain-error alert); 0: no port.",
    )
    api_host: str = Field(default="0.0.0.0", description="Address `python -m analytics_platform.api` listens on.")
    api_port: int = Field(default=8000, ge=1, le=65535, description="Port `python -m analytics_platform.api` serves.")

    @field_validator("alert_channel_kinds", mode="before")
    @classmethod
    def _channel_kinds(cls, value: Any) -> Any:
        return [kind.lower() for kind in _split_list(value)]

    @model_validator(mode="before")
    @classmethod
    def _source_names(cls, data: Any) -> Any:
        """Read the names the source documents use (DB_HOST, POLL_INTERVAL_SECONDS, ...) into the platform's
        settings, so a deployment written from those documents works unchanged; a name given both ways with
        different values is an error naming both, since silently preferring one hides a misconfiguration."""
        if not isinstance(data, dict):
            return data
        mapped = source_aliases(os.environ, data)
        if mapped:
            _log.warning(
                "configuration: source-document names read as the platform's: %s (docs/configuration.md)",
                ", ".join(f"{source} -> {target}" for source, target in mapped.items()),
            )
        return data


_log = logging.getLogger(__name__)

# the source documents' database names and the libpq connection parameter each one sets
_DB_PARTS = {"DB_HOST": "host", "DB_PORT": "port", "DB_NAME": "dbname", "DB_USER": "user", "DB_PASSWORD": "password"}
# the schema every migration creates and every query names; DB_SCHEMA may only confirm it
PLATFORM_SCHEMA = "analytics"
# source name -> (the platform's own name, its PlatformSettings field)
_PLAIN_ALIASES = {
    "POLL_INTERVAL_SECONDS": ("ALERT_INTERVAL_S", "alert_interval_s"),
    "ALERT_BACKEND": ("ALERT_CHANNEL_KINDS", "alert_channel_kinds"),
}


def _env(environ: Mapping[str, str], name: str) -> str | None:
    """`name` from `environ`, case-insensitively like the settings themselves; blank counts as unset."""
    for key, value in environ.items():
        if key.upper() == name and value.strip():
            return value.strip()
    return None


def _plain(value: Any) -> str:
    """A raw setting as the text it stands for: lists (from the environment `a, b` or `[...]`, or given as a list)
    as `a,b`, so equal values compare equal however they were written."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str) and ("," in value or value.lstrip().startswith("[")):
        value = _split_list(value)
    if isinstance(value, list | tuple):
        return ",".join(str(v).strip() for v in value)
    return str(value).strip()


def source_aliases(environ: Mapping[str, str], data: dict[str, Any]) -> dict[str, str]:
    """Fill `data` (the settings' raw values) from the source-document names in `environ`; returns source name ->
    platform name for each one used. Raises ValueError naming both when a source name and the platform's own
    disagree."""
    mapped: dict[str, str] = {}
    given = {name: value for name in _DB_PARTS if (value := _env(environ, name)) is not None}
    schema = _env(environ, "DB_SCHEMA")
    if schema is not None:
        if schema != PLATFORM_SCHEMA:
            raise ValueError(
                f"DB_SCHEMA={schema!r}: the platform's tables live in the fixed schema {PLATFORM_SCHEMA!r} (sql/ "
                f"creates it and every query names it); set DB_SCHEMA={PLATFORM_SCHEMA} or leave it unset"
            )
        mapped["DB_SCHEMA"] = f"schema {PLATFORM_SCHEMA} (fixed)"
    if given:
        current = data.get("database_url")
        if current is None:
            data["database_url"] = database_url_from_parts(given)
        else:
            from psycopg.conninfo import conninfo_to_dict

            have = conninfo_to_dict(_plain(current))
            for name, value in given.items():
                part = _DB_PARTS[name]
                if str(have.get(part, "")) != value:
                    if part == "password":  # neither value is shown: both are secrets
                        raise ValueError("DB_PASSWORD conflicts with DATABASE_URL's password: set one of them")
                    raise ValueError(
                        f"{name}={value!r} conflicts with DATABASE_URL ({part} {have.get(part)!r}): set one of them"
                    )
        mapped.update(dict.fromkeys(given, "DATABASE_URL"))
    for source, (target, field) in _PLAIN_ALIASES.items():
        value = _env(environ, source)
        if value is None:
            continue
        if field in data and _plain(data[field]).lower() != _plain(value).lower():
            raise ValueError(f"{source}={value!r} conflicts with {target}={_plain(data[field])!r}: set one of them")
        data.setdefault(field, value)
        mapped[source] = target
    mapped.update({source: target for source, target in _CHANNEL_ALIASES.items() if _env(environ, source)})
    source_channel_urls(environ)
    return mapped


def database_url_from_parts(parts: Mapping[str, str]) -> SecretStr:
    """A postgresql:// URL from DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD; a part not given is left to libpq's
    default (port 5432, the local socket, the OS user), as for any libpq client given the same values."""
    user = quote(parts.get("DB_USER", ""), safe="")
    password = quote(parts.get("DB_PASSWORD", ""), safe="")
    auth = f"{user}{':' + password if password else ''}@" if user or password else ""
    host = parts.get("DB_HOST", "")
    host = f"[{host}]" if ":" in host else host
    port = f":{parts['DB_PORT']}" if "DB_PORT" in parts else ""
    if port and not parts["DB_PORT"].isdigit():
        raise ValueError(f"DB_PORT must be a port number; got {parts['DB_PORT']!r}")
    return SecretStr(f"postgresql://{auth}{host}{port}/{quote(parts.get('DB_NAME', ''), safe='')}")


def enabled_channel_kinds(environ: Mapping[str, str]) -> list[str]:
    """ALERT_CHANNEL_KINDS (or its source name ALERT_BACKEND) from `environ`: the kinds that deliver, [] = all. Read
    from the environment the alert engine is given, like the channel URLs, so a test's environ decides it."""
    value = _env(environ, "ALERT_CHANNEL_KINDS") or _env(environ, "ALERT_BACKEND") or ""
    return [kind.lower() for kind in _split_list(value)]


# the source documents' notification names -> the environment variable the shipped alerts file's channel reads
_CHANNEL_ALIASES = {"SLACK_WEBHOOK_URL": "ALERT_SLACK_URL", "LINE_CHANNEL_TOKEN": "ALERT_LINE_URL"}


def source_channel_urls(environ: Mapping[str, str]) -> dict[str, str]:
    """Channel URL variables (ALERT_SLACK_URL, ALERT_LINE_URL) made from the source-document names when unset.
    LINE_CHANNEL_TOKEN is a Messaging API channel access token: a push needs a recipient too, ALERT_LINE_TO
    (a user, group or room id). LINE_NOTIFY_TOKEN is refused: LINE Notify was shut down on 2025-03-31."""
    if _env(environ, "LINE_NOTIFY_TOKEN"):
        raise ValueError(
            "LINE_NOTIFY_TOKEN: LINE Notify was shut down on 2025-03-31; use the LINE Messaging API: "
            "LINE_CHANNEL_TOKEN (channel access token) and ALERT_LINE_TO (user, group or room id)"
        )
    urls: dict[str, str] = {}
    slack = _env(environ, "SLACK_WEBHOOK_URL")
    if slack:
        urls["ALERT_SLACK_URL"] = slack
    token = _env(environ, "LINE_CHANNEL_TOKEN")
    if token:
        to = _env(environ, "ALERT_LINE_TO")
        if not to:
            raise ValueError("LINE_CHANNEL_TOKEN is set but ALERT_LINE_TO is not: a LINE push needs a recipient id")
        urls["ALERT_LINE_URL"] = f"line://{quote(token, safe='')}/{quote(to, safe='')}"
    for target, value in urls.items():
        own = _env(environ, target)
        source = next(s for s, t in _CHANNEL_ALIASES.items() if t == target)
        if own is not None and own != value:
            raise ValueError(f"{source} conflicts with {target} (both set, to different channels): set one of them")
    return urls


def utc_options(url: str) -> str:
    """libpq `options` for `url` plus TimeZone=UTC, so times are read and written as UTC whatever
    the server's or role's default; appended, because a plain kwarg would replace the URL's own."""
    from psycopg.conninfo import conninfo_to_dict

    return " ".join(filter(None, [conninfo_to_dict(url).get("options"), "-c TimeZone=UTC"]))


@lru_cache(maxsize=1)
def get_settings() -> PlatformSettings:
    """Settings are read once per process; tests build `PlatformSettings(...)` directly."""
    return PlatformSettings()
