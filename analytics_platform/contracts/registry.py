"""Which domains exist, which are enabled, and which Kafka topics feed them.

A domain plugs in as one module that defines `CONTRACT = <Contract subclass>()`: a module of this
package (found by discovery), a module named in `DOMAIN_MODULES=pkg.module,...` (any importable
module, e.g. of the plant's own package), or one registered under the entry-point group
`analytics_platform.domains` by an installed distribution. The contract declares everything the
platform needs (payload, identity, raw table, checks, Kafka key), so adding a domain touches no
other file. What runs is configuration: `DOMAINS_ENABLED` picks domains (default: every registered
one), `KAFKA_TOPICS` optionally narrows or renames their topics (`lab.results` or
`lab:plant7.lab.results`), `KAFKA_TOPIC_PREFIX` namespaces them all.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from analytics_platform.contracts.base import Contract, ContractConfig, Registry
from analytics_platform.contracts.catalog import MetricCatalog, read_packaged
from analytics_platform.contracts.errors import ConfigError


class DomainSettings(Protocol):
    """What binding domains and contract rules read from the settings. A protocol, not the
    platform's `PlatformSettings`, so this package imports nothing else of the platform and the
    edge agent can install it without Dagster (the platform's settings satisfy it as they are)."""

    @property
    def domain_modules(self) -> Sequence[str]: ...
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


ENTRY_POINT_GROUP = "analytics_platform.domains"


def registry(modules: Sequence[str] = ()) -> Registry:
    """Every contract: this package's modules that define `CONTRACT`, the installed distributions'
    `analytics_platform.domains` entry points, and `modules` (DOMAIN_MODULES), in their `order`.

    Cached per list of modules, so the contract objects are the same wherever they are asked for.
    """
    return _registry(tuple(m.strip() for m in modules if m.strip()))


@lru_cache(maxsize=8)
def _registry(modules: tuple[str, ...]) -> Registry:
    found: list[Contract] = []
    package = importlib.import_module("analytics_platform.contracts")
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        contract = getattr(importlib.import_module(f"{package.__name__}.{module_info.name}"), "CONTRACT", None)
        if isinstance(contract, Contract):
            found.append(contract)
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        found.append(_contract_of(entry.load(), f"entry point {entry.name!r} ({entry.value})"))
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"DOMAIN_MODULES names {name!r}, which cannot be imported: {exc}") from None
        found.append(_contract_of(module, f"DOMAIN_MODULES module {name!r}"))
    registered = Registry()
    for contract in sorted(found, key=lambda c: (c.order, c.domain)):
        if contract.domain in registered.contracts and registered.contracts[contract.domain] is contract:
            continue  # a module named twice (in DOMAIN_MODULES and as an entry point)
        registered.register(contract)
    return registered


def _contract_of(source: object, where: str) -> Contract:
    contract = source if isinstance(source, Contract) else getattr(source, "CONTRACT", None)
    if not isinstance(contract, Contract):
        raise ConfigError(f"{where} defines no `CONTRACT = <Contract subclass>()`")
    return contract


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
    contracts = registry(settings.domain_modules).contracts
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
    return frozenset(entry.metric for entry in read_packaged(path))


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
