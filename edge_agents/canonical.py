"""From a source's reading to the bytes sent to Kafka: topic, key, event id, contract check.

Every message gets an `event_id`. When the source gives none, it is derived from the message's
own content (domain + canonical JSON), so a message that is received twice (an MQTT redelivery
after the agent was killed) or replayed from the disk queue carries the same id both times and the
platform's dedup removes the copy.

The contract check is the platform's own (`analytics_platform.contracts`): the agent runs the code
the drain will run, so what the agent sends is what the platform accepts.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from analytics_platform.contracts.base import (
    NON_FINITE,
    NOT_OBJECT,
    Contract,
    ContractConfig,
    ContractViolation,
)
from analytics_platform.contracts.catalog import ACCEPT, PACKAGED_CATALOG, WILDCARD, MetricCatalog
from analytics_platform.contracts.registry import load_known_metrics, registry
from edge_agents.config import ContractConfigModel, KafkaConfig


@dataclass(frozen=True)
class Outgoing:
    """One canonical message, ready for the queue."""

    topic: str
    key: bytes
    value: bytes


def content_event_id(domain: str, payload: dict[str, Any]) -> str:
    """A stable id from the content: the same reading always gets the same id."""
    return _digest(domain, _sorted_body(payload))


def _sorted_body(payload: dict[str, Any]) -> bytes:
    body = {k: v for k, v in payload.items() if k != "event_id"} if "event_id" in payload else payload
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _digest(domain: str, body: bytes) -> str:
    return hashlib.blake2b(domain.encode() + b"\x00" + body, digest_size=16).hexdigest()


def _non_finite(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinity inside a payload, if any."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "value")
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _non_finite(item, f"{path}[{i}]")
            if found:
                return found
    return None


def time_text(ts: datetime) -> str:
    """ISO-8601 UTC with microseconds and Z, the contract's time format."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Canonicalizer:
    """Topics, keys, event ids and the contract check for every domain."""

    def __init__(self, kafka: KafkaConfig, contract: ContractConfigModel) -> None:
        self.contracts: dict[str, Contract] = dict(registry(contract.domain_modules).contracts)
        self.topics = {d: kafka.topic_prefix + c.default_topic for d, c in self.contracts.items()}
        if contract.unknown_metrics == "reject":
            path = contract.metrics_catalog or PACKAGED_CATALOG
            catalog = MetricCatalog.of(load_known_metrics(path))
        else:  # the platform judges metrics against the tenant's catalogue and policy
            catalog = MetricCatalog(frozenset(), {WILDCARD: ACCEPT})
        self.rules = ContractConfig(
            catalog=catalog,
            max_future_s=contract.max_future_s,
            partitions_start=contract.partitions_start,
        )

    def encode(self, domain: str, payload: dict[str, Any]) -> Outgoing:
        """Add the event id when missing and serialise. Raises ContractViolation for what JSON cannot
        carry faithfully (orjson would write NaN as null); the contract check does the rest."""
        if not isinstance(payload, dict):
            raise ContractViolation(NOT_OBJECT, f"payload is {type(payload).__name__}, not an object")
        where = _non_finite(payload)
        if where:
            raise ContractViolation(NON_FINITE, f"{where} is not a finite number")
        # `<tenant>-<factory>-<machine>` (lab: the station): the contract's key fields
        key = self.contracts[domain].kafka_key(payload).encode()
        if payload.get("event_id"):
            return Outgoing(self.topics[domain], key, orjson.dumps(payload))
        # one serialisation serves both the hash and the message: the sorted body plus the id
        body = _sorted_body(payload)
        event_id = _digest(domain, body)
        value = (body[:-1] + b"," if len(body) > 2 else b"{") + b'"event_id":"' + event_id.encode() + b'"}'
        return Outgoing(self.topics[domain], key, value)

    def check(self, domain: str, values: list[bytes], now: datetime | None = None) -> list[tuple[str, str] | None]:
        """Per value: None when the contract accepts it, else (reason, detail)."""
        if not values:
            return []
        found = self.contracts[domain].verdicts(values, now or datetime.now(UTC), self.rules)
        return [found.get(i) for i in range(len(values))]
