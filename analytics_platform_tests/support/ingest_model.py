"""A model of ingest for `sensors.device.readings`: what must be stored for any stream of messages.

Pure Python written from the platform's documented guarantees (issue 19; docs/data-guarantees.md
states the same rules for users), NOT from its code: nothing here imports or reuses the platform's
parsing, deduplication or aggregation (only the public reason-code constants of
`analytics_platform.contracts.base`). The property tests (integration/test_ingest_model.py) run the
real broker, drain, database, re-derivation and window aggregates over generated streams and
compare what they stored with `expect()` and `aggregates()`; the unit tests
(unit/test_ingest_model.py) check the model itself against hand-computed cases.

The rules, as implemented here:

Contract (`judge`)
  * A message is a JSON object {time, tenant_id, factory_id, machine_id, sensor_id, metric, value,
    optional unit, event_id, payload, schema_version}. schema_version 1 (the default when absent)
    is that shape; schema_version 2 carries `metrics` {name: value} (+ optional `units` {name: unit})
    instead of metric/value and fans out to one reading per metric, all sharing the event id.
  * Identifiers (tenant, factory, machine, sensor, metric, event_id) are strings of 1 to 200
    characters; unit is a string of at most 200 (or null); payload a JSON object (or null); value
    a finite JSON number (an integer is the same number as a float; a boolean is not a number).
  * time: `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+00:00)` (hour <= 23, second <= 59, a real calendar
    date); stored at microsecond resolution (PostgreSQL timestamptz): digits below a microsecond
    are truncated, so `...:00.0000004Z` is the same instant as `...:00Z`. Before partitions_start
    -> time_before_partitions; more than max_future_s after the message's Kafka timestamp ->
    future_time (exactly max_future_s after is accepted).
  * Metrics: catalogued for a tenant when a default (tenant '*') or the tenant's own entry; an
    uncatalogued metric is rejected unknown_metric under the tenant's policy `reject` (the default
    unless the '*' policy or the tenant's own says otherwise), stored with uncatalogued = true
    under `accept`.
  * A message is accepted or rejected as a whole (one bad metric of a v2 message rejects it all).

Which reason is asserted (a `Rejected` carries the set of reasons the rules allow):
  exact, when the message has exactly one defect of these kinds:
    not_utf8 (bytes that are not UTF-8), not_json (UTF-8 text that is not JSON and has no
    NaN/Infinity literal), not_object (JSON that is not an object, `null` included), missing_field
    (a required field absent), wrong_type (a field of another JSON type: a string value, a numeric
    id, a numeric time, a boolean value), non_finite (a number that overflows a double, 1e999),
    invalid_value (an identifier empty or over 200 characters, a unit over 200), bad_time,
    time_before_partitions, future_time, unknown_metric, unsupported_schema_version (an integer
    version other than 1 and 2, the rest of the message well-formed for v1 or v2);
  one of a small set, where the rules do not choose: a required field that is null (missing_field
    or wrong_type), a NaN/Infinity literal (non_finite or not_json; one defect among the message's
    others: parsing goes on past it), a payload that is not an object (invalid_value or
    wrong_type), year 0000 (bad_time or time_before_partitions), and a message with several
    defects (any reason of any of its defects);
  any reason ("rejected, once"): a tombstone (no value), a NUL character in a stored text field or
    in the payload (PostgreSQL text cannot hold it), an empty v2 `metrics`, an unsupported version
    with another defect, an integer too large for a double.

Identity, dedup and the winning copy (`expect`)
  * A reading's identity is (time, tenant_id, factory_id, machine_id, sensor_id, metric, event_id
    or nothing): two scopes never collide whatever ids they choose; copies of one identity are
    stored once.
  * The stored copy is the one with the lowest (kafka_partition, kafka_offset, topic); on a tie
    (one coordinate in two logs of a replaced broker or re-created topic) the copy of the older log
    (the one landed first: a log is drained before the broker that replaces it exists). It never
    depends on the order in which batches were processed.
  * Every drained message that breaks the contract is kept once in rejected_message, keyed by its
    Kafka coordinate and timestamp (a re-send is another Kafka message, kept again); every drained
    message lands once in kafka_landing.
  * Messages produced to a log that was replaced (broker replaced, topic re-created) before a
    drain read them are gone with it (the documented in-memory-broker class): `lost`, expected
    nowhere. Everything drained before a replacement is kept.

Window aggregates (`aggregates`)
  * Per (tenant, factory, machine, sensor, metric) and window w in 60/300/3600 s, epoch-aligned
    buckets [start, start + w): count, sum, min, max, avg = sum / count, stddev = the sample
    standard deviation (None for a single reading: the transform stores NULL, "stddev_samp"),
    first = the value at the earliest time, last = the value at the latest time (readings of one
    series at one instant, which different event ids make possible: first the smaller value, last
    the larger, as the transform documents), p50/p95 = linear interpolation between closest ranks
    (PostgreSQL `percentile_cont`: position q * (n - 1) in the sorted values).
  * Computed exactly with fractions; `Agg.exact` says whether every value lies on the 1/4 grid
    (|v| < 2**40), where a floating-point sum is exact in any order, so count/sum/min/max/first/
    last compare exactly and avg/stddev/p50/p95 to a relative 1e-12; in a bucket with a value off
    the grid (0.1, 1e-300, ...: the generator adds a few, to check raw values round-trip) the sum,
    avg, stddev and percentiles compare to a relative 1e-9 (its float sum depends on the order of
    addition), count/min/max/first/last still exactly.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from analytics_platform.contracts.base import (
    BAD_TIME,
    FUTURE_TIME,
    INVALID_VALUE,
    MISSING_FIELD,
    NON_FINITE,
    NOT_JSON,
    NOT_OBJECT,
    NOT_UTF8,
    REASONS,
    TOO_OLD,
    UNKNOWN_METRIC,
    UNSUPPORTED_VERSION,
    WRONG_TYPE,
)

ANY_REASON = frozenset(REASONS)
WILDCARD = "*"
REJECT, ACCEPT = "reject", "accept"
WINDOWS = (60, 300, 3600)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_ID = 200
US = 1_000_000

SCOPE = ("tenant_id", "factory_id", "machine_id", "sensor_id", "metric")
# the time grammar of the contract, spelt with [0-9] (a Unicode digit is no digit here) and matched
# whole (fullmatch: a trailing newline is not allowed either)
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(?:Z|\+00:00)")


# ----- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalogue:
    """The metrics catalogue and the unknown-metric policies, as analytics.metric_catalog and
    analytics.metric_policy hold them: defaults are tenant '*' entries, policies per tenant with
    '*' the default (reject when there is no '*' row)."""

    defaults: frozenset[str] = frozenset()
    own: frozenset[tuple[str, str]] = frozenset()  # (tenant, metric)
    policies: Mapping[str, str] = field(default_factory=lambda: {WILDCARD: REJECT})

    def catalogued(self, tenant: str, metric: str) -> bool:
        return metric in self.defaults or (tenant, metric) in self.own

    def policy(self, tenant: str) -> str:
        return self.policies.get(tenant, self.policies.get(WILDCARD, REJECT))

    def describe(self) -> str:
        own = ", ".join(f"{t}:{m}" for t, m in sorted(self.own)) or "-"
        policies = ", ".join(f"{t}={p}" for t, p in sorted(self.policies.items()))
        return f"defaults {{{', '.join(sorted(self.defaults))}}}, own {{{own}}}, policies {{{policies}}}"


@dataclass(frozen=True)
class Rules:
    catalogue: Catalogue
    partitions_start: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    max_future_s: int = 600
    windows: tuple[int, ...] = WINDOWS


# ----- the broker's facts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One message as the broker stored it (from the producer's delivery report), in the log it was
    produced to, and whether a drain read that log past it before the log went away."""

    topic: str
    partition: int
    offset: int
    kafka_ts_ms: int
    value: bytes | None
    log: int = 0
    drained: bool = True

    @property
    def coordinate(self) -> tuple[int, int, str, int]:
        """The order in which copies of one reading win: lowest partition, offset, topic, then the
        older log (landed first)."""
        return (self.partition, self.offset, self.topic, self.log)

    @property
    def key(self) -> tuple[str, int, int, int]:
        """What identifies a Kafka message in landing and rejects: topic, partition, offset, timestamp."""
        return (self.topic, self.partition, self.offset, self.kafka_ts_ms)


# ----- verdicts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    time_us: int  # microseconds since the epoch, UTC
    tenant_id: str
    factory_id: str
    machine_id: str
    sensor_id: str
    metric: str
    value: float
    unit: str | None
    payload: Any  # the parsed JSON object, or None
    event_id: str | None
    schema_version: int
    uncatalogued: bool

    @property
    def identity(self) -> tuple:
        return (
            self.time_us,
            self.tenant_id,
            self.factory_id,
            self.machine_id,
            self.sensor_id,
            self.metric,
            self.event_id,
        )


@dataclass(frozen=True)
class Accepted:
    readings: tuple[Reading, ...]


@dataclass(frozen=True)
class Rejected:
    reasons: frozenset[str]  # the reasons the rules allow for this message
    why: str  # the defects found, for people

    @property
    def exact(self) -> str | None:
        return next(iter(self.reasons)) if len(self.reasons) == 1 else None


class _Defects:
    """Defects of one message, each with the reasons the rules allow for it."""

    def __init__(self) -> None:
        self.found: list[tuple[str, frozenset[str]]] = []

    def add(self, what: str, *reasons: str) -> None:
        self.found.append((what, frozenset(reasons) if reasons else ANY_REASON))

    def verdict(self) -> Rejected:
        reasons: frozenset[str] = frozenset().union(*(r for _, r in self.found))
        return Rejected(reasons, "; ".join(what for what, _ in self.found))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if isinstance(value, _Constant):
        return "number"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


@dataclass(frozen=True)
class _Constant:
    """Where a NaN / Infinity literal stood: not JSON, and how many senders spell a non-finite
    number. Parsed on, so that the message's other defects are found too."""

    literal: str


def parse_time(text: str) -> tuple[int | None, frozenset[str] | None]:
    """(microseconds since the epoch, None) for a valid contract time, else (None, the reasons)."""
    match = _TIME.fullmatch(text)
    if match is None:
        return None, frozenset({BAD_TIME})
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if hour > 23 or minute > 59 or second > 59:
        return None, frozenset({BAD_TIME})
    if year == 0:  # ISO-8601 year 0000 (1 BC): a format error or simply too old, the rules do not say
        return None, frozenset({BAD_TIME, TOO_OLD})
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None, frozenset({BAD_TIME})
    fraction = (match.group(7) or "").ljust(9, "0")
    micros = int(fraction[:6])  # below a microsecond: truncated
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * US + micros, None


def _check_identifier(body: dict, name: str, defects: _Defects, required: bool = True) -> str | None:
    if name not in body:
        if required:
            defects.add(f"{name} missing", MISSING_FIELD)
        return None
    value = body[name]
    if value is None:
        if required:
            defects.add(f"{name} is null", MISSING_FIELD, WRONG_TYPE)
        return None
    if not isinstance(value, str):
        defects.add(f"{name} is a JSON {_json_type(value)}", WRONG_TYPE)
        return None
    if not 1 <= len(value) <= MAX_ID:
        defects.add(f"{name} has {len(value)} characters", INVALID_VALUE)
        return None
    if "\x00" in value:
        defects.add(f"{name} contains NUL")
        return None
    return value


def _check_number(value: Any, what: str, defects: _Defects) -> float | None:
    if isinstance(value, _Constant):
        return None  # the literal is a defect of the message already
    if value is None:
        defects.add(f"{what} is null", MISSING_FIELD, WRONG_TYPE)
        return None
    if not _is_number(value):
        defects.add(f"{what} is a JSON {_json_type(value)}", WRONG_TYPE)
        return None
    try:
        number = float(value)
    except OverflowError:
        defects.add(f"{what} is an integer beyond a double")
        return None
    if not math.isfinite(number):
        defects.add(f"{what} overflows a double", NON_FINITE)
        return None
    return number


def _check_unit(value: Any, what: str, defects: _Defects) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        defects.add(f"{what} is a JSON {_json_type(value)}", WRONG_TYPE)
        return None
    if len(value) > MAX_ID:
        defects.add(f"{what} has {len(value)} characters", INVALID_VALUE)
        return None
    if "\x00" in value:
        defects.add(f"{what} contains NUL")
        return None
    return value


def judge(value: bytes | None, kafka_ts_ms: int, rules: Rules) -> Accepted | Rejected:
    """What the contract makes of one message: the readings it carries, or why it is rejected."""
    if value is None:
        return Rejected(ANY_REASON, "tombstone (no value)")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected(frozenset({NOT_UTF8}), "not UTF-8")
    constants: list[str] = []

    def constant(literal: str) -> _Constant:
        constants.append(literal)
        return _Constant(literal)

    try:
        body = json.loads(text, parse_constant=constant)
    except ValueError:
        return Rejected(frozenset({NOT_JSON}), "not JSON")
    defects = _Defects()
    if constants:
        defects.add(f"{constants[0]} literal", NON_FINITE, NOT_JSON)
    if not isinstance(body, dict):
        defects.add(f"a JSON {_json_type(body)}, not an object", NOT_OBJECT)
        return defects.verdict()
    version: int | None = 1
    if "schema_version" in body:
        raw_version = body["schema_version"]
        if raw_version is None:
            defects.add("schema_version is null", MISSING_FIELD, WRONG_TYPE)
            version = None
        elif not isinstance(raw_version, int) or isinstance(raw_version, bool):
            defects.add(f"schema_version is a JSON {_json_type(raw_version)}", WRONG_TYPE)
            version = None
        else:
            version = raw_version
    if version is not None and version not in (1, 2):
        # the rest cannot be read as any known shape; a second defect leaves the reason open
        as_v1, as_v2 = _Defects(), _Defects()
        _fields(body, 1, kafka_ts_ms, rules, as_v1)
        _fields(body, 2, kafka_ts_ms, rules, as_v2)
        clean = not constants and (not as_v1.found or not as_v2.found)
        return Rejected(
            frozenset({UNSUPPORTED_VERSION}) if clean else ANY_REASON,
            f"schema_version {version}" + ("" if clean else " and other defects"),
        )
    readings = _fields(body, version or 1, kafka_ts_ms, rules, defects)
    if defects.found:
        return defects.verdict()
    return Accepted(tuple(readings))


def _fields(body: dict, version: int, kafka_ts_ms: int, rules: Rules, defects: _Defects) -> list[Reading]:
    """The readings of a v1 or v2 body, recording every defect found in `defects`."""
    time_us = None
    if "time" not in body:
        defects.add("time missing", MISSING_FIELD)
    elif body["time"] is None:
        defects.add("time is null", MISSING_FIELD, WRONG_TYPE)
    elif not isinstance(body["time"], str):
        defects.add(f"time is a JSON {_json_type(body['time'])}", WRONG_TYPE)
    else:
        time_us, reasons = parse_time(body["time"])
        if reasons is not None:
            defects.add(f"time {body['time']!r} malformed", *reasons)
        elif time_us < _micros(rules.partitions_start):
            defects.add("time before partitions_start", TOO_OLD)
        elif time_us > kafka_ts_ms * 1000 + rules.max_future_s * US:
            defects.add(f"time more than {rules.max_future_s}s after the Kafka timestamp", FUTURE_TIME)
    ids = {
        name: _check_identifier(body, name, defects) for name in ("tenant_id", "factory_id", "machine_id", "sensor_id")
    }
    event_id = _check_identifier(body, "event_id", defects, required=False)
    payload = body.get("payload")
    if payload is not None:
        if not isinstance(payload, dict):
            defects.add(f"payload is a JSON {_json_type(payload)}", INVALID_VALUE, WRONG_TYPE)
        elif _has_nul(payload):
            defects.add("payload contains NUL")

    pairs: list[tuple[str | None, float | None, str | None]] = []
    if version == 1:
        metric = _check_identifier(body, "metric", defects)
        number = _check_number(body["value"], "value", defects) if "value" in body else None
        if "value" not in body:
            defects.add("value missing", MISSING_FIELD)
        pairs.append((metric, number, _check_unit(body.get("unit"), "unit", defects)))
    else:
        metrics, units = body.get("metrics"), body.get("units", {})
        if "metrics" not in body:
            defects.add("metrics missing", MISSING_FIELD)
        elif metrics is None:
            defects.add("metrics is null", MISSING_FIELD, WRONG_TYPE)
        elif not isinstance(metrics, dict):
            defects.add(f"metrics is a JSON {_json_type(metrics)}", WRONG_TYPE)
        elif not metrics:
            defects.add("metrics is empty")
        if not isinstance(units, dict):
            defects.add(f"units is a JSON {_json_type(units)}", WRONG_TYPE if units is not None else MISSING_FIELD)
            units = {}
        unit_of = {name: _check_unit(unit, f"units[{name!r}]", defects) for name, unit in units.items()}
        for name, reading in (metrics if isinstance(metrics, dict) else {}).items():
            metric = _check_identifier({"metric": name}, "metric", defects)
            pairs.append((metric, _check_number(reading, f"metrics[{name!r}]", defects), unit_of.get(name)))

    tenant = ids["tenant_id"]
    readings = []
    for metric, number, unit in pairs:
        uncatalogued = False
        if tenant is not None and metric is not None and not rules.catalogue.catalogued(tenant, metric):
            if rules.catalogue.policy(tenant) != ACCEPT:
                defects.add(f"metric {metric!r} not catalogued for {tenant!r}", UNKNOWN_METRIC)
            uncatalogued = True
        if defects.found or time_us is None or metric is None or number is None:
            continue
        readings.append(
            Reading(
                time_us,
                ids["tenant_id"],  # type: ignore[arg-type]
                ids["factory_id"],  # type: ignore[arg-type]
                ids["machine_id"],  # type: ignore[arg-type]
                ids["sensor_id"],  # type: ignore[arg-type]
                metric,
                number,
                unit,
                payload,
                event_id,
                version,
                uncatalogued,
            )
        )
    return readings


def _micros(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * US + delta.microseconds


# ----- what must be stored --------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRow:
    """A row of analytics.raw_sensor_readings as the model expects it (source coordinates included)."""

    reading: Reading
    topic: str
    kafka_partition: int
    kafka_offset: int

    def as_tuple(self) -> tuple:
        r = self.reading
        return (
            r.time_us,
            r.tenant_id,
            r.factory_id,
            r.machine_id,
            r.sensor_id,
            r.metric,
            r.value,
            r.unit,
            _canonical(r.payload),
            r.event_id,
            r.schema_version,
            r.uncatalogued,
            self.topic,
            self.kafka_partition,
            self.kafka_offset,
        )


ROW_COLUMNS = (
    "time_us",
    "tenant_id",
    "factory_id",
    "machine_id",
    "sensor_id",
    "metric",
    "value",
    "unit",
    "payload",
    "event_id",
    "schema_version",
    "uncatalogued",
    "topic",
    "kafka_partition",
    "kafka_offset",
)


def _canonical(payload: Any) -> str | None:
    """A payload as comparable text (key order and spacing do not matter in jsonb)."""
    return None if payload is None else json.dumps(payload, sort_keys=True, ensure_ascii=False)


def canonical_payload(text: str | None) -> str | None:
    """The comparable text of a payload read back from the database (jsonb::text)."""
    return None if text is None else _canonical(json.loads(text))


@dataclass
class Expected:
    """What the database must hold after the stream: raw rows by identity, rejects by Kafka message,
    the Kafka messages landed, and the messages lost with a replaced log (expected nowhere)."""

    rows: dict[tuple, StoredRow]
    rejects: dict[tuple[str, int, int, int], Rejected]
    landed: set[tuple[str, int, int, int]]
    lost: list[Message]
    verdicts: dict[tuple[str, int, int, int], Accepted | Rejected]


def expect(messages: Iterable[Message], rules: Rules) -> Expected:
    """The store the rules demand for `messages` (every message produced, drained or not)."""
    rows: dict[tuple, tuple[tuple, StoredRow]] = {}
    rejects: dict[tuple[str, int, int, int], Rejected] = {}
    landed: dict[tuple[str, int, int, int], bytes | None] = {}
    verdicts: dict[tuple[str, int, int, int], Accepted | Rejected] = {}
    lost = []
    for message in messages:
        if not message.drained:
            lost.append(message)
            continue
        if message.key in landed:
            # one Kafka message read twice (a log replayed with the same timestamps): the same bytes
            if landed[message.key] != message.value:
                raise ValueError(f"two different messages at one coordinate and timestamp: {message.key}")
            continue
        landed[message.key] = message.value
        verdict = judge(message.value, message.kafka_ts_ms, rules)
        verdicts[message.key] = verdict
        if isinstance(verdict, Rejected):
            rejects[message.key] = verdict
            continue
        for reading in verdict.readings:
            row = StoredRow(reading, message.topic, message.partition, message.offset)
            held = rows.get(reading.identity)
            if held is None or message.coordinate < held[0]:
                rows[reading.identity] = (message.coordinate, row)
    return Expected(
        rows={identity: row for identity, (_, row) in rows.items()},
        rejects=rejects,
        landed=set(landed),
        lost=lost,
        verdicts=verdicts,
    )


# ----- window aggregates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Agg:
    count: int
    sum: float
    avg: float
    min: float
    max: float
    stddev: float | None
    first: float
    last: float
    p50: float
    p95: float
    exact: bool  # every value on the 1/4 grid: sums are exact in floating point in any order

    def as_tuple(self) -> tuple:
        return (
            self.count,
            self.sum,
            self.avg,
            self.min,
            self.max,
            self.stddev,
            self.first,
            self.last,
            self.p50,
            self.p95,
        )


AGG_FIELDS = ("count", "sum", "avg", "min", "max", "stddev", "first", "last", "p50", "p95")
# picked, not computed: equal whatever the order of the values, so always compared exactly
PICKED_FIELDS = frozenset({"count", "min", "max", "first", "last"})


def on_grid(value: float) -> bool:
    """A multiple of 1/4 below 2**40: any sum of a few of them is exact in a double."""
    return abs(value) < 2**40 and (value * 4).is_integer()


def percentile_cont(ordered: list[Fraction], q: Fraction) -> Fraction:
    """Linear interpolation between the closest ranks, position q * (n - 1) (PostgreSQL's)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _agg(points: list[tuple[int, float]]) -> Agg:
    values = [Fraction(v) for _, v in points]
    n = len(values)
    total = sum(values, Fraction(0))
    mean = total / n
    stddev = None
    if n > 1:
        variance = sum(((v - mean) ** 2 for v in values), Fraction(0)) / (n - 1)
        stddev = _sqrt(variance)
    earliest = min(t for t, _ in points)
    latest = max(t for t, _ in points)
    ordered = sorted(values)
    return Agg(
        count=n,
        sum=float(total),
        avg=float(mean),
        min=float(ordered[0]),
        max=float(ordered[-1]),
        stddev=stddev,
        first=min(v for t, v in points if t == earliest),
        last=max(v for t, v in points if t == latest),
        p50=float(percentile_cont(ordered, Fraction(1, 2))),
        p95=float(percentile_cont(ordered, Fraction(95, 100))),
        exact=all(on_grid(v) for _, v in points),
    )


def _sqrt(value: Fraction) -> float:
    """The square root of an exact fraction, correctly rounded to well within 1e-15 relative."""
    if value == 0:
        return 0.0
    # scale so that the integer square root keeps ~60 significant bits
    shift = max(0, 120 - (value.numerator.bit_length() - value.denominator.bit_length()))
    shift += shift % 2
    scaled = (value.numerator << shift) // value.denominator
    return math.isqrt(scaled) / 2 ** (shift // 2)


def bucket_start(time_us: int, window_s: int) -> int:
    """The start (microseconds since the epoch) of the epoch-aligned bucket of `window_s` holding time_us."""
    width = window_s * US
    return time_us // width * width


def aggregates(rows: Iterable[StoredRow], windows: Iterable[int] = WINDOWS) -> dict[tuple, Agg]:
    """(window_s, bucket_start_us, tenant, factory, machine, sensor, metric) -> the bucket's aggregates."""
    groups: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    rows = list(rows)
    for window_s in windows:
        for row in rows:
            r = row.reading
            key = (window_s, bucket_start(r.time_us, window_s), r.tenant_id, r.factory_id, r.machine_id, r.sensor_id)
            groups[(*key, r.metric)].append((r.time_us, r.value))
    return {key: _agg(points) for key, points in groups.items()}


def agg_close(field_name: str, want: float | None, got: float | None, exact: bool) -> bool:
    """Whether a stored aggregate equals the model's: count/min/max/first/last exactly, the sum of an
    on-grid bucket exactly, the rest to a relative 1e-12 (1e-9 off the grid, where a float sum
    depends on the order of addition)."""
    if want is None or got is None:
        return want is None and got is None
    if field_name in PICKED_FIELDS or (exact and field_name == "sum"):
        return want == got
    tolerance = 1e-12 if exact else 1e-9
    return math.isclose(want, got, rel_tol=tolerance, abs_tol=1e-300)


# Times with the wrong shape (each a bad_time): the generators draw them, the model's own tests check each.
BAD_TIMES = (
    "2025-08-20T11:00Z",
    "2025-08-20 11:00:00Z",
    "2025-08-20T11:00:00",
    "2025-08-20T11:00:00+01:00",
    "2025-08-20T11:00:60Z",
    "2025-08-20T24:00:00Z",
    "2025-02-30T11:00:00Z",
    "2025-08-20T11:00:00.1234567890Z",
    "2025-08-20T11:00:00z",
    "2025-08-20T11:00:00Z\n",
    "２０２５-08-20T11:00:00Z",
    "",
)
