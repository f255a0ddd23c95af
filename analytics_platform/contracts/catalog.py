"""The metrics catalogue as the contracts see it: which metric names each tenant's readings may
carry, and what becomes of the others (the tenant's policy: reject or accept).

Pure data, no database: `analytics_platform.catalog` reads it from the tables (tenant data,
edited with the CLI and the API) and the drain hands it to the contracts with every pass. The
vectorised expressions here are what the sensor and sweep contracts judge a micro-batch with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from analytics_platform.contracts.errors import ConfigError, load_yaml

# The platform's default metrics (tenant '*'), shipped inside this package rather than in the
# platform's config/ so that the edge agent, which installs the contracts without the platform,
# finds the same file (METRICS_CATALOG's default, and the agent's `contract.metrics_catalog`).
PACKAGED_CATALOG = Path(__file__).with_name("metrics.yaml")

WILDCARD = "*"  # the tenant of the platform defaults, and of the default policy
REJECT, ACCEPT = "reject", "accept"
POLICIES = (REJECT, ACCEPT)


def _pair(tenant: pl.Expr, metric: pl.Expr) -> pl.Expr:
    # length-prefixed, so no tenant or metric name can spell another (tenant, metric) pair
    return pl.format("{}:{}/{}", tenant.str.len_bytes(), tenant, metric)


@dataclass(frozen=True)
class MetricCatalog:
    """`entries`: (tenant or '*', metric) names; `policies`: tenant or '*' -> reject | accept."""

    entries: frozenset[tuple[str, str]] = frozenset()
    policies: Mapping[str, str] = field(default_factory=lambda: {WILDCARD: REJECT})

    @classmethod
    def of(cls, names: Iterable[str], policy: str = REJECT) -> MetricCatalog:
        """A catalogue of platform defaults only (no tenant entries), one policy for everybody."""
        return cls(frozenset((WILDCARD, n) for n in names), {WILDCARD: policy})

    @property
    def default_policy(self) -> str:
        return self.policies.get(WILDCARD, REJECT)

    def defaults(self) -> frozenset[str]:
        return frozenset(m for t, m in self.entries if t == WILDCARD)

    def known_to(self, tenant: str) -> frozenset[str]:
        """The metric names `tenant`'s readings may carry: the defaults and its own."""
        return frozenset(m for t, m in self.entries if t in (WILDCARD, tenant))

    def policy_of(self, tenant: str) -> str:
        return self.policies.get(tenant, self.default_policy)

    def catalogued(self, tenant: pl.Expr, metric: pl.Expr) -> pl.Expr:
        """True where `metric` is a default or one of the tenant's own entries."""
        own = sorted(_pair_text(t, m) for t, m in self.entries if t != WILDCARD)
        expr = metric.is_in(sorted(self.defaults()))
        if own:
            expr = expr | _pair(tenant, metric).is_in(own)
        return expr

    def accepting(self, tenant: pl.Expr) -> pl.Expr:
        """True where the tenant's policy stores readings of uncatalogued metrics."""
        others = sorted(t for t, p in self.policies.items() if t != WILDCARD and p != self.default_policy)
        if self.default_policy == ACCEPT:
            return ~tenant.is_in(others) if others else pl.lit(True)
        return tenant.is_in(others) if others else pl.lit(False)


def _pair_text(tenant: str, metric: str) -> str:
    return f"{len(tenant.encode())}:{tenant}/{metric}"


class CatalogError(ValueError):
    """An edit the catalogue cannot take; the message says which value and why."""


@dataclass(frozen=True)
class MetricEntry:
    tenant_id: str
    metric: str
    unit: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    description: str = ""

    def check(self) -> MetricEntry:
        """The entry, or CatalogError saying what is wrong with it."""
        for name, value in (("tenant", self.tenant_id), ("metric", self.metric)):
            if not value or not value.strip() or len(value) > 200 or "\x00" in value:
                raise CatalogError(f"{name} must be 1 to 200 characters without NUL, got {value!r}")
        for name, value in (("min", self.min_value), ("max", self.max_value)):
            if value is not None and not math.isfinite(value):
                raise CatalogError(f"{name} must be a finite number, got {value}")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise CatalogError(f"min {self.min_value} is above max {self.max_value}")
        return self


def read_packaged(path: Path) -> list[MetricEntry]:
    """The platform defaults from a catalogue file (contracts/metrics.yaml), as tenant '*' entries."""
    data = load_yaml(path, "METRICS_CATALOG")
    metrics = (data or {}).get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict) or not metrics:
        raise ConfigError(f"METRICS_CATALOG file {path} has no `metrics:` mapping")
    entries = []
    for name, entry in metrics.items():
        entry = entry or {}
        if not isinstance(entry, dict):
            raise ConfigError(f"METRICS_CATALOG file {path}: metrics.{name} must be a mapping")
        try:
            low, high = entry.get("min"), entry.get("max")
            entries.append(
                MetricEntry(
                    WILDCARD,
                    str(name),
                    entry.get("unit"),
                    None if low is None else float(low),
                    None if high is None else float(high),
                    str(entry.get("description") or ""),
                ).check()
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"METRICS_CATALOG file {path}: metrics.{name}: {exc}") from None
    return entries


# the metrics catalogue as a frame (analytics_platform.ingest.catalog.read_limits): tenant '*' rows
# are the defaults, a tenant's own row replaces the default of that metric for that tenant. Here, beside
# the catalogue, because the drain's range profile, the data contracts and the anomaly limit rule
# (transforms.anomalies.limit_anomalies) must resolve a reading's range the same way
LIMITS_SCHEMA: dict[str, pl.DataType] = {
    "tenant_id": pl.String(),
    "metric": pl.String(),
    "min_value": pl.Float64(),
    "max_value": pl.Float64(),
    "canonical_unit": pl.String(),
}
LIMIT_COLUMNS = ("min_value", "max_value", "canonical_unit")


def with_catalog_limits(frame: pl.DataFrame, limits: pl.DataFrame, metric: str = "metric") -> pl.DataFrame:
    """`frame` (with `tenant_id` and a metric column) plus the min_value, max_value and canonical_unit
    of each row's tenant entry, else of the default ('*') entry; NULL for a metric in neither (an
    uncatalogued reading is not judged). A tenant entry replaces the default whole, NULL bounds
    included: a tenant may lift a default's range."""
    limits = limits.select(list(LIMITS_SCHEMA)).cast(LIMITS_SCHEMA)
    defaults = limits.filter(pl.col("tenant_id") == "*").drop("tenant_id")
    own = limits.filter(pl.col("tenant_id") != "*")
    keyed = frame.with_columns(pl.col(metric).alias("_metric"))
    if not own.is_empty():
        keyed = keyed.join(
            own.rename({"metric": "_metric", **{c: f"_own_{c}" for c in LIMIT_COLUMNS}}).with_columns(
                _own=pl.lit(True)
            ),
            on=["tenant_id", "_metric"],
            how="left",
            maintain_order="left",
        )
    joined = keyed.join(defaults.rename({"metric": "_metric"}), on="_metric", how="left", maintain_order="left")
    if own.is_empty():
        return joined.drop("_metric")
    return joined.with_columns(
        [pl.when(pl.col("_own")).then(pl.col(f"_own_{c}")).otherwise(pl.col(c)).alias(c) for c in LIMIT_COLUMNS]
    ).drop("_metric", "_own", *(f"_own_{c}" for c in LIMIT_COLUMNS))
