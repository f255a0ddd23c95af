"""Which domains exist, which are enabled, and which Kafka topics feed them.

A domain plugs in as one module in this package that defines `CONTRACT = <Contract subclass>()`;
it is found by discovery, so adding one touches no other file. What runs is configuration:
`DOMAINS_ENABLED=sensor,device,lab,sweep` picks domains, `KAFKA_TOPICS` optionally narrows or
renames their topics (`lab.results` or `lab:plant7.lab.results`), `KAFKA_TOPIC_PREFIX` namespaces
them all.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import yaml

from analytics_platform.contracts.base import Contract, ContractConfig, Registry
from analytics_platform.contracts.catalog import MetricCatalog


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the variable to fix."""


class DomainSettings(Protocol):
    """What binding domains and contract rules read from the settings. A protocol, not the
    platform's `PlatformSettings`, so this package imports nothing else of the platform and the
    edge agent can install it without Dagster (the platform's settings satisfy it as they are)."""

    @property
    def domains_enabled(self) -> Sequence[str]: ...
    @property
    def kafka_topics(self) -> Sequence[str]: ...
    @property
    def kafka_topic_prefix(self) -> str: ...
    @property
    def metrics_catalog(self) -> Path: ...
    @property
    def contract_max_future_s(self) -> int: ...
    @property
    def partitions_start(self) -> datetime: ...


@lru_cache(maxsize=1)
def registry() -> Registry:
    """All contracts found in this package (modules that define `CONTRACT`)."""
    found = Registry()
    package = importlib.import_module("analytics_platform.contracts")
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"analytics_platform.contracts.{module_info.name}")
        contract = getattr(module, "CONTRACT", None)
        if isinstance(contract, Contract):
            found.register(contract)
    return found


@dataclass(frozen=True)
class DomainBinding:
    """An enabled domain and the (prefixed) topics drained into it."""

    contract: Contract
    topics: tuple[str, ...]

    @property
    def domain(self) -> str:
        return self.contract.domain


def bind_domains(settings: DomainSettings) -> list[DomainBinding]:
    """Resolve DOMAINS_ENABLED and KAFKA_TOPICS into bindings, or raise ConfigError."""
    contracts = registry().contracts
    unknown = [d for d in settings.domains_enabled if d not in contracts]
    if unknown:
        raise ConfigError(f"DOMAINS_ENABLED names unknown domain(s) {unknown}; known: {sorted(contracts)}")
    prefix = settings.kafka_topic_prefix
    topics: dict[str, list[str]] = {d: [] for d in settings.domains_enabled}
    if not settings.kafka_topics:
        for domain in topics:
            topics[domain].append(prefix + contracts[domain].default_topic)
    by_default_topic = {c.default_topic: d for d, c in contracts.items()}
    for entry in settings.kafka_topics:
        domain, _, name = entry.rpartition(":")
        if domain and domain not in contracts:
            raise ConfigError(
                f"KAFKA_TOPICS entry {entry!r} names unknown domain {domain!r}; known: {sorted(contracts)}"
            )
        if not domain:
            domain = by_default_topic.get(name, "")
            if not domain:
                raise ConfigError(
                    f"KAFKA_TOPICS entry {entry!r} is not a known topic; "
                    f"write it as '<domain>:{name}' (domains: {sorted(contracts)})"
                )
        if domain not in topics:
            raise ConfigError(f"KAFKA_TOPICS entry {entry!r} feeds domain {domain!r}, which is not in DOMAINS_ENABLED")
        topics[domain].append(prefix + name)
    return [DomainBinding(contracts[d], tuple(dict.fromkeys(t))) for d, t in topics.items() if t]


def load_known_metrics(path: Path) -> frozenset[str]:
    """Metric names from the catalogue file (see contracts/metrics.yaml)."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"METRICS_CATALOG file {path} does not exist") from None
    metrics = (data or {}).get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise ConfigError(f"METRICS_CATALOG file {path} has no `metrics:` mapping")
    return frozenset(str(name) for name in metrics)


def contract_config(settings: DomainSettings, catalog: MetricCatalog | None = None) -> ContractConfig:
    """The data-dependent contract rules: `catalog` (the tenants' catalogue and policies, as the
    database holds them: `analytics_platform.ingest.catalog.read_catalog`), or, without one, the
    packaged defaults (METRICS_CATALOG) under the reject policy. The drain and re-derivation always
    judge with the database's; the packaged file is for code without a database (the edge agent)."""
    return ContractConfig(
        catalog=catalog or MetricCatalog.of(load_known_metrics(settings.metrics_catalog)),
        max_future_s=settings.contract_max_future_s,
        partitions_start=settings.partitions_start,
    )
