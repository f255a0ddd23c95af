"""The data contracts' thresholds (config/checks.yaml) and the metric limits (contracts/metrics.yaml).

Thresholds are configuration, not code, so operators tune them without a release. Loading is
strict: an unknown key is a typo that would otherwise silently keep a default, so it fails with a
`ConfigError` (a ValueError) that names the file and the key. Metric ranges and canonical units
are read from the metrics catalogue, never copied here: the contract that accepts a metric and
the check that judges its values must not drift apart.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from analytics_platform.contracts.catalog import LIMITS_SCHEMA, read_packaged
from analytics_platform.contracts.errors import ConfigError, load_yaml

Bound = float | None
Range = tuple[Bound, Bound]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered(value: Range) -> Range:
    low, high = value
    if low is not None and high is not None and low > high:
        raise ValueError(f"range [{low}, {high}] has its minimum above its maximum")
    return value


class Blocking(_Strict):
    """Check name -> blocking (severity ERROR, downstream skipped) or not (severity WARN)."""

    keys_not_null: bool = True
    time_in_partition: bool = True
    values_finite: bool = True
    values_in_range: bool = True
    units_match: bool = True
    reject_ratio: bool = False
    completeness: bool = False
    schema_: bool = Field(default=True, alias="schema")
    unique_keys: bool = True
    reconciliation: bool = True
    result_ranges: bool = False
    freshness: bool = False

    def of(self, check: str) -> bool:
        """Whether `check` blocks; an unknown name is a programming error, not a config one."""
        field = "schema_" if check == "schema" else check
        if field not in type(self).model_fields:
            raise KeyError(f"no blocking setting for check {check!r}")
        return bool(getattr(self, field))


class RejectRatio(_Strict):
    max: Annotated[float, Field(ge=0, le=1)] | None = None


class Units(_Strict):
    missing_is_canonical: bool = True


class Completeness(_Strict):
    min_ratio: Annotated[float, Field(ge=0, le=1)] = 0.9
    interval_s: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: {"default": 10.0})

    @field_validator("interval_s")
    @classmethod
    def _has_default(cls, value: dict[str, float]) -> dict[str, float]:
        if "default" not in value:
            raise ValueError("needs a `default` interval (seconds between two readings of a series)")
        return value

    def interval_of(self, metric: str) -> float:
        return self.interval_s.get(metric, self.interval_s["default"])


class Freshness(_Strict):
    mode: Literal["last_update", "latest_partition"]
    lag_minutes: Annotated[int, Field(gt=0)]


class ResultRanges(_Strict):
    tolerance: Annotated[float, Field(ge=0)] = 1e-9
    kpi: dict[str, Range] = Field(default_factory=dict)
    rate: Range = (0.0, 1.0)
    uptime_pct: Range = (0.0, 100.0)
    anomaly_severity: Range = (1.0, 5.0)
    anomaly_confidence: Range = (0.0, 1.0)
    anomaly_labels: tuple[str, ...] = ("info", "warning", "critical")
    baseline_r2: Range = (None, 1.0)

    @field_validator("rate", "uptime_pct", "anomaly_severity", "anomaly_confidence", "baseline_r2")
    @classmethod
    def _range(cls, value: Range) -> Range:
        return _ordered(value)

    @field_validator("kpi")
    @classmethod
    def _kpi_ranges(cls, value: dict[str, Range]) -> dict[str, Range]:
        for name, bounds in value.items():
            try:
                _ordered(bounds)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value


class ChecksConfig(_Strict):
    """Everything config/checks.yaml can say (see the comments in that file)."""

    blocking: Blocking = Blocking()
    reject_ratio: RejectRatio = RejectRatio()
    units: Units = Units()
    completeness: Completeness = Completeness()
    freshness: dict[str, Freshness] = Field(default_factory=dict)
    result_ranges: ResultRanges = ResultRanges()

    @model_validator(mode="after")
    def _hourly_lags(self) -> ChecksConfig:
        for asset, rule in self.freshness.items():
            if rule.mode == "latest_partition" and rule.lag_minutes >= 1440:
                raise ValueError(f"freshness.{asset}: latest_partition needs lag_minutes below 1440")
        return self

    def reject_ratio_max(self, default: float) -> float:
        """The reject-ratio threshold; `default` (REJECT_RATIO_MAX) when the file leaves it null."""
        return default if self.reject_ratio.max is None else self.reject_ratio.max


def load_checks_config(path: Path) -> ChecksConfig:
    """Parse `path` (CHECKS_CONFIG), or raise ConfigError naming the file and every bad key."""
    data = _read_yaml(path, "CHECKS_CONFIG")
    try:
        return ChecksConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ConfigError(f"CHECKS_CONFIG file {path}: {problems}") from None


def cached_checks_config(path: Path) -> ChecksConfig:
    """`load_checks_config`, parsed again only when the file changed (every check run asks)."""
    return _cached_checks(Path(path), _mtime(path))


@lru_cache(maxsize=8)
def _cached_checks(path: Path, _mtime_ns: int) -> ChecksConfig:
    return load_checks_config(path)


def _mtime(path: Path) -> int:
    try:
        return Path(path).stat().st_mtime_ns
    except FileNotFoundError:
        return -1  # load_* reports the missing file


def load_metric_limits(path: Path) -> pl.DataFrame:
    """A catalogue file (METRICS_CATALOG, the packaged defaults) as a limits frame: tenant '*',
    metric, min_value, max_value, canonical_unit (NULL where the file gives none: that side is not
    judged). The pipeline judges with the database's catalogue (`ingest.catalog.read_limits`); this
    is for code and tests without one."""
    rows = [(e.tenant_id, e.metric, e.min_value, e.max_value, e.unit) for e in read_packaged(path)]
    return pl.DataFrame(rows, schema=LIMITS_SCHEMA, orient="row")


def _read_yaml(path: Path, variable: str) -> dict[str, Any]:
    data = load_yaml(path, variable)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{variable} file {path} must hold a mapping at the top level")
    return data


def _describe(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{location}'"
    return f"{location}: {error['msg']}"
