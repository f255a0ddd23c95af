"""Ingest checked against a model (issue 19, part 6): generated streams of `sensors.device.readings`
messages through the real broker, drain, database, re-derivation and window aggregates, compared
with what `analytics_platform_tests.support.ingest_model` says must be stored.

Each Hypothesis example is a `Stream`: a metrics catalogue with policies, then steps -- batches
produced (new readings v1/v2, malformed messages of every kind, exact re-sends, corrections of an
earlier reading, late readings hours back, readings at the future and partition limits, Kafka
timestamps from skewed producer clocks), drain passes, the broker replaced by a fresh in-memory
Tansu (optionally followed by an edge replay of the lost log from offset 0, with the original or
new timestamps) and the topic deleted and re-created. After the stream (and a last drain pass):

1. the raw rows, rejects and landed messages equal the model's;
2. the window aggregates of every touched hour (recomputed by the function the aggregates asset
   runs for a partition) equal the model's;
3. the touched hours re-derived from landing leave raw rows and rejects equal to the model's
   (live == re-derived).

The model decides which messages a replaced log took with it from the broker's own facts: the
partition, offset and timestamp of each delivery report, and which drain passes read the log
before it went away (each pass is run until the stored checkpoints reach the log's end).

Profiles (INGEST_MODEL_PROFILE): `ci` (default; `make test`: derandomised, a bounded number of
small streams) and `soak` (`make soak`: random seeds, longer streams, INGEST_MODEL_EXAMPLES examples).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from hypothesis import HealthCheck, Phase, given, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from analytics_platform.contracts.registry import DomainBinding, bind_domains, contract_config
from analytics_platform.devstack.broker import ensure_topics
from analytics_platform.ingest.catalog import read_catalog
from analytics_platform.ingest.drain import Drain
from analytics_platform.ingest.rederive import rederive_range
from analytics_platform.results.aggregates import recompute_aggregates
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.edge import OwnBroker, wait_for
from analytics_platform_tests.support.ingest_model import (
    ACCEPT,
    AGG_FIELDS,
    BAD_TIMES,
    REJECT,
    ROW_COLUMNS,
    US,
    WILDCARD,
    Agg,
    Catalogue,
    Expected,
    Message,
    Rules,
    agg_close,
    aggregates,
    canonical_payload,
    expect,
)
from analytics_platform_tests.support.stack import DatabaseHandle

pytestmark = pytest.mark.timeout(int(os.environ.get("INGEST_MODEL_TIMEOUT_S", "600")))

PARTITIONS = 3
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The producers' clock: Kafka timestamps are set explicitly (CreateTime) around this instant, so
# future/late limits and skewed clocks are part of the generated stream, not of the machine's date.
BROKER_NOW = datetime(2025, 8, 20, 12, 0, tzinfo=UTC)
BROKER_NOW_MS = int((BROKER_NOW - EPOCH).total_seconds() * 1000)
WINDOWS = (60, 300, 3600)


# ----- profiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    """How big a generated stream may get."""

    steps: int  # steps besides the final drain
    batch: int  # messages per produced batch


PROFILE = os.environ.get("INGEST_MODEL_PROFILE", "ci")
_COMMON = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
}
PROFILES = {
    # make test: reproducible (derandomised: the same examples on every run and machine) and bounded, even
    # when it fails: no shrinking (each shrink step replays a stream on the stack, minutes in all); the
    # failing stream is small and printed whole, and `make soak` shrinks
    "ci": (
        hypothesis_settings(
            max_examples=20, derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate], **_COMMON
        ),
        Size(steps=7, batch=6),
    ),
    # make soak: new random examples every run; a failure prints the seed / blob to reproduce it
    "soak": (
        hypothesis_settings(max_examples=int(os.environ.get("INGEST_MODEL_EXAMPLES", "200")), **_COMMON),
        Size(steps=14, batch=20),
    ),
}
if PROFILE not in PROFILES:
    raise ValueError(f"INGEST_MODEL_PROFILE must be one of {sorted(PROFILES)}, got {PROFILE!r}")
HYPOTHESIS, SIZE = PROFILES[PROFILE]


# ----- streams ----------------------------------------------------------------------------------

# Small pools so that identities collide; ids that spell separators, the null marker and CSV
# specials, so that two scopes that only look alike are told apart.
TENANTS = ("t1", "t2", "1:t")
FACTORIES = ("f1", "f\x1f1")
MACHINES = ("m1", 'm,"\n2')
SENSORS = ("s1", "~")
METRICS = ("temp", "humidity", "power_kw", "Temp")
EVENT_IDS = (None, "e1", "e2", "~", "n")
UNITS = (None, "degC", "")
# the last one holds the text `\u0000` (an escaped backslash), not a NUL character
PAYLOADS = (None, {"source": "edge-1"}, {}, {"nested": {"a": [1, 2.5, "é"]}, "k": None}, {"path": "C:\\u0000"})
# hours of the readings: now, the hour before, two hours back, a day back (late), the first partition
HOURS = ("2025-08-20T11", "2025-08-20T12", "2025-08-20T10", "2025-08-19T10", "2024-01-01T00")
# minute:second within the hour; sub-microsecond digits, bucket and future-limit edges
OFFSETS = (
    "00:00",
    "00:30",
    "00:00.0000004",
    "00:59.999999",
    "01:00",
    "04:59",
    "05:00",
    "10:00",
    "10:00.001",
    "59:59.5",
)
SUFFIXES = ("Z", "+00:00")
SPECIAL_TIMES = (
    "2023-12-31T23:59:59.999999Z",  # just before the first partition
    "2026-08-20T11:00:00Z",  # a year ahead of the Kafka timestamp
    "0000-01-01T00:00:00Z",  # ISO year 0000
)
# Kafka timestamp skews of a producer's clock (ms); multiples of 1 s so timestamps stay unique
SKEWS_MS = (0, -2 * 3600_000, 3600_000, -30_000)
EXOTIC_VALUES = (0.1, -0.0, 1e-300, 5e-324, 123456.789)
REQUIRED_V1 = ("time", "tenant_id", "factory_id", "machine_id", "sensor_id", "metric", "value")
REQUIRED_V2 = ("time", "tenant_id", "factory_id", "machine_id", "sensor_id", "metrics")
_OVERFLOW, _NAN, _BAD_UTF8 = "__overflow__", "__constant__", "__not_utf8__"


@dataclass(frozen=True)
class Spec:
    """One message a stream produces: its bytes, partition and Kafka timestamp (the producer's)."""

    n: int
    label: str
    value: bytes | None
    partition: int
    ts_ms: int

    def describe(self) -> str:
        ts = (self.ts_ms - BROKER_NOW_MS) / 1000
        shown = "<tombstone>" if self.value is None else _show(self.value)
        return f"#{self.n} p{self.partition} ts=now{ts:+.3f}s [{self.label}] {shown}"


def _show(value: bytes) -> str:
    """The bytes as text: undecodable bytes and control characters escaped, long runs counted."""
    text = value.decode("utf-8", errors="backslashreplace")
    text = re.sub(r"[\x00-\x1f]", lambda m: repr(m.group(0))[1:-1], text)
    return re.sub(r"(.)\1{19,}", lambda m: f"{m.group(1)}{{x{len(m.group(0))}}}", text)


@dataclass(frozen=True)
class Produce:
    specs: tuple[Spec, ...]
    note: str = ""


@dataclass(frozen=True)
class DrainPass:
    pass


@dataclass(frozen=True)
class ReplaceBroker:
    pass


@dataclass(frozen=True)
class RecreateTopic:
    pass


Step = Produce | DrainPass | ReplaceBroker | RecreateTopic


@dataclass(frozen=True)
class Stream:
    catalogue: Catalogue
    steps: tuple[Step, ...]

    @property
    def messages(self) -> int:
        return sum(len(s.specs) for s in self.steps if isinstance(s, Produce))

    def __repr__(self) -> str:
        lines = [f"Stream(catalogue: {self.catalogue.describe()}"]
        for i, step in enumerate(self.steps, 1):
            if isinstance(step, Produce):
                lines.append(f"  {i}. produce{' (' + step.note + ')' if step.note else ''}:")
                lines += [f"       {spec.describe()}" for spec in step.specs]
            else:
                lines.append(f"  {i}. {type(step).__name__}")
        lines.append(f"  {len(self.steps) + 1}. DrainPass (final))")
        return "\n".join(lines)


def _body_v1(draw: st.DrawFn, time_text: str) -> dict:
    body: dict = {
        "time": time_text,
        "tenant_id": draw(st.sampled_from(TENANTS)),
        "factory_id": draw(st.sampled_from(FACTORIES)),
        "machine_id": draw(st.sampled_from(MACHINES)),
        "sensor_id": draw(st.sampled_from(SENSORS)),
        "metric": draw(st.sampled_from(METRICS)),
        "value": draw(_values()),
    }
    for name, pool in (("event_id", EVENT_IDS), ("unit", UNITS), ("payload", PAYLOADS)):
        choice = draw(st.sampled_from((*pool, "absent")))
        if choice != "absent":
            body[name] = choice
    return body


def _body_v2(draw: st.DrawFn, time_text: str) -> dict:
    body = _body_v1(draw, time_text)
    del body["metric"], body["value"]
    body.pop("unit", None)
    names = draw(st.lists(st.sampled_from(METRICS), min_size=1, max_size=3, unique=True))
    body["metrics"] = {name: draw(_values()) for name in names}
    if draw(st.booleans()):
        body["units"] = {name: draw(st.sampled_from(("degC", "%", ""))) for name in names[:2]}
    body["schema_version"] = 2
    return {"schema_version": body.pop("schema_version"), **body}


def _values() -> st.SearchStrategy[float | int]:
    """Values on the 1/4 grid (sums exact whatever the order), sometimes large, integers or exotic."""
    return st.one_of(
        st.integers(-400, 400).map(lambda k: k / 4),
        st.integers(-3_999_999, 3_999_999).map(lambda k: k / 4),
        st.integers(-1000, 1000),
        st.sampled_from(EXOTIC_VALUES),
    )


def _time(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(SPECIAL_TIMES))
    hour = draw(st.sampled_from(HOURS))
    offset = draw(st.sampled_from(OFFSETS))
    return f"{hour}:{offset}{draw(st.sampled_from(SUFFIXES))}"


def _encode(body: object) -> bytes:
    text = json.dumps(body, ensure_ascii=False)
    text = text.replace(f'"{_OVERFLOW}"', "1e999")
    for literal in ("NaN", "Infinity", "-Infinity"):
        text = text.replace(f'"{_NAN}{literal}"', literal)
    return text.encode()


# Each defect: (label, how it changes a body); applied to a fresh valid body.
def _defect(draw: st.DrawFn, body: dict) -> tuple[str, bytes | None]:
    version2 = body.get("schema_version") == 2
    required = REQUIRED_V2 if version2 else REQUIRED_V1
    ids = ("tenant_id", "factory_id", "machine_id", "sensor_id") + (() if version2 else ("metric",))
    kind = draw(
        st.sampled_from(
            (
                "missing",
                "null",
                "wrong_type",
                "empty_id",
                "long_id",
                "nul",
                "bad_time",
                "version",
                "overflow",
                "nan",
                "not_object",
                "not_json",
                "not_utf8",
                "tombstone",
                "payload",
                "v2_shape",
            )
        )
    )
    if kind == "missing":
        name = draw(st.sampled_from(required))
        del body[name]
        return f"{name} missing", _encode(body)
    if kind == "null":
        name = draw(st.sampled_from(required))
        body[name] = None
        return f"{name} null", _encode(body)
    if kind == "wrong_type":
        name, wrong = draw(
            st.sampled_from(
                [
                    ("tenant_id", 5),
                    ("time", 1755687600),
                    ("event_id", 7),
                    *([("metrics", [["temp", 1.0]]), ("units", "degC")] if version2 else []),
                    *([] if version2 else [("value", "23.5"), ("value", True), ("unit", 5)]),
                ]
            )
        )
        body[name] = wrong
        return f"{name} is {type(wrong).__name__}", _encode(body)
    if kind == "empty_id":
        name = draw(st.sampled_from((*ids, "event_id")))
        body[name] = ""
        return f"{name} empty", _encode(body)
    if kind == "long_id":
        name = draw(st.sampled_from((*ids, "event_id", *(() if version2 else ("unit",)))))
        body[name] = ("x" if name != "unit" else "u") * 201
        return f"{name} 201 characters", _encode(body)
    if kind == "nul":
        name = draw(st.sampled_from((*ids, "event_id", "payload")))
        body[name] = {"note": "a\x00b"} if name == "payload" else "a\x00b"
        return f"NUL in {name}", _encode(body)
    if kind == "bad_time":
        body["time"] = draw(st.sampled_from(BAD_TIMES))
        return "bad time", _encode(body)
    if kind == "version":
        body["schema_version"] = draw(st.sampled_from((3, 0, 99)))
        return f"schema_version {body['schema_version']}", _encode(body)
    if kind == "overflow":
        if version2:
            body["metrics"][next(iter(body["metrics"]))] = _OVERFLOW
        else:
            body["value"] = _OVERFLOW
        return "value 1e999", _encode(body)
    if kind == "nan":
        literal = draw(st.sampled_from(("NaN", "Infinity", "-Infinity")))
        if version2:
            body["metrics"][next(iter(body["metrics"]))] = _NAN + literal
        else:
            body["value"] = _NAN + literal
        return f"{literal} literal", _encode(body)
    if kind == "not_object":
        shape = draw(st.sampled_from(("array", "number", "string", "null", "true")))
        other = {"array": [body], "number": 42, "string": "reading", "null": None, "true": True}[shape]
        return f"a JSON {shape}", _encode(other)
    if kind == "not_json":
        how = draw(st.sampled_from(("truncated", "word", "empty", "python")))
        text = _encode(body)
        value = {"truncated": text[:-1], "word": b"hello", "empty": b"", "python": b"{'value': 1}"}[how]
        return f"not JSON ({how})", value
    if kind == "not_utf8":
        where = draw(st.sampled_from(("before the object", "in the first key", *ids, "payload")))
        if where == "payload":
            body["payload"] = {"note": _BAD_UTF8}
        elif where in ids:
            body[where] = _BAD_UTF8 + str(body[where])
        text = _encode(body)
        if where == "before the object":
            return "not UTF-8 (a byte 0xff first)", b"\xff" + text
        if where == "in the first key":
            return "not UTF-8 (in the first key)", text.replace(b'"', b'"\xc3\x28', 1)
        return f"not UTF-8 (in {where})", text.replace(_BAD_UTF8.encode(), b"\xff")
    if kind == "tombstone":
        return "tombstone", None
    if kind == "payload":
        body["payload"] = draw(st.sampled_from(([1, 2], "edge-1", 5)))
        return "payload not an object", _encode(body)
    # v2_shape: an empty `metrics`, or a v2 version on a v1 body
    if version2:
        body["metrics"] = {}
        return "metrics empty", _encode(body)
    body["schema_version"] = 2
    return "v1 body with schema_version 2", _encode(body)


@dataclass
class _Draft:
    """Generation state: the specs of the current log and of every log, and v1 bodies to correct."""

    n: itertools.count = field(default_factory=itertools.count)
    log: list[Spec] = field(default_factory=list)
    every: list[Spec] = field(default_factory=list)
    v1_bodies: list[dict] = field(default_factory=list)

    def spec(self, label: str, value: bytes | None, partition: int, ts_ms: int | None, skew_ms: int = 0) -> Spec:
        n = next(self.n)
        made = Spec(n, label, value, partition, BROKER_NOW_MS + skew_ms + n if ts_ms is None else ts_ms)
        self.log.append(made)
        self.every.append(made)
        return made


def _message(draw: st.DrawFn, draft: _Draft) -> Spec:
    partition = draw(st.integers(0, PARTITIONS - 1))
    skew = draw(st.sampled_from(SKEWS_MS)) if draw(st.integers(0, 5)) == 0 else 0
    kind = draw(st.sampled_from(("v1", "v1", "v2", "defect", "defect", "resend", "correction")))
    if kind == "resend" and draft.every:
        original = draw(st.sampled_from(draft.every))
        keep_ts = draw(st.booleans())
        label = f"re-send of #{original.n}" + (" with its timestamp" if keep_ts else "")
        return draft.spec(label, original.value, partition, original.ts_ms if keep_ts else None, skew)
    if kind == "correction" and draft.v1_bodies:
        body = dict(draw(st.sampled_from(draft.v1_bodies)))
        changed = draw(st.sampled_from(("value", "unit", "payload")))
        body[changed] = draw(
            {"value": _values(), "unit": st.sampled_from(UNITS), "payload": st.sampled_from(PAYLOADS)}[changed]
        )
        return draft.spec(f"correction ({changed})", _encode(body), partition, None, skew)
    time_text = _time(draw)
    if kind == "v2":
        return draft.spec("v2", _encode(_body_v2(draw, time_text)), partition, None, skew)
    body = _body_v1(draw, time_text)
    if kind == "defect":
        label, value = _defect(draw, body if draw(st.integers(0, 3)) else _body_v2(draw, time_text))
        if draw(st.integers(0, 7)) == 0 and value is not None and value[:1] == b"{" and b"1e999" not in value:
            # a second defect on top (the reason is then any of the defects')
            try:
                second = json.loads(value)
                second["machine_id"] = ""
                label, value = f"{label} + machine_id empty", _encode(second)
            except ValueError:
                pass
        return draft.spec(label, value, partition, None, skew)
    draft.v1_bodies.append(body)
    return draft.spec("v1", _encode(body), partition, None, skew)


def _burst(draw: st.DrawFn, draft: _Draft, most: int) -> list[Spec]:
    """Several readings of one series in one hour (event ids b0, b1, ...; seconds apart, sometimes
    at one instant): buckets with many values, for stddev, percentiles and first/last ties."""
    body = _body_v1(draw, "")
    hour = draw(st.sampled_from(HOURS[:4]))
    partition = draw(st.integers(0, PARTITIONS - 1))
    specs = []
    for i in range(draw(st.integers(2, max(2, most)))):
        second = draw(st.integers(0, 3599))
        body = {
            **body,
            "time": f"{hour}:{second // 60:02d}:{second % 60:02d}Z",
            "value": draw(_values()),
            "event_id": f"b{i}",
        }
        draft.v1_bodies.append(body)
        specs.append(draft.spec(f"burst {i}", _encode(body), draw(st.sampled_from((partition, i % PARTITIONS))), None))
    return specs


@st.composite
def catalogues(draw: st.DrawFn) -> Catalogue:
    """Defaults, tenants' own entries and policies over the metric and tenant pools."""
    defaults = draw(st.sets(st.sampled_from(METRICS)).map(lambda s: frozenset(s | {"temp"})))
    own = draw(st.sets(st.tuples(st.sampled_from(TENANTS), st.sampled_from(METRICS)), max_size=3))
    policies = {WILDCARD: draw(st.sampled_from((REJECT, ACCEPT)))}
    policies.update(draw(st.dictionaries(st.sampled_from(TENANTS), st.sampled_from((REJECT, ACCEPT)), max_size=2)))
    return Catalogue(defaults, frozenset(own), policies)


@st.composite
def streams(draw: st.DrawFn, size: Size = SIZE) -> Stream:
    catalogue = draw(catalogues())
    draft = _Draft()
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, size.steps))):
        kind = draw(st.sampled_from(("produce", "drain", "produce", "replace", "produce", "drain", "recreate")))
        if kind == "produce":
            batch: list[Spec] = []
            for _ in range(draw(st.integers(1, size.batch))):
                if draw(st.integers(0, 9)) == 0:
                    batch += _burst(draw, draft, size.batch)
                else:
                    batch.append(_message(draw, draft))
            steps.append(Produce(tuple(batch)))
        elif kind == "drain":
            steps.append(DrainPass())
        else:
            previous, draft.log = draft.log, []
            steps.append(ReplaceBroker() if kind == "replace" else RecreateTopic())
            if previous and draw(st.booleans()):
                # the edge replays what it sent to the lost log, in order, from offset 0 of the new one
                keep_ts = draw(st.booleans())
                replay = tuple(
                    draft.spec(f"replay of #{s.n}", s.value, s.partition, s.ts_ms if keep_ts else None)
                    for s in previous
                )
                steps.append(Produce(replay, "edge replay" + (" with the original timestamps" if keep_ts else "")))
    return Stream(catalogue, tuple(steps))


# ----- the stack ------------------------------------------------------------------------------


@dataclass
class Delivered:
    spec: Spec
    partition: int
    offset: int
    ts_ms: int
    log: int
    lost: bool = False  # its log was replaced before a drain pass reached it


@dataclass
class Observed:
    """What the database holds, in the model's terms."""

    rows: dict[tuple, tuple]
    rejects: dict[tuple[str, int, int, int], str]
    landed: set[tuple[str, int, int, int]]


@dataclass
class Totals:
    """What the examples of one run added up to: printed at the end of the module, the figures of
    docs/benchmarks.md ("Soak: the ingest model")."""

    examples: int = 0
    messages: int = 0
    lost: int = 0
    rows: int = 0
    rejects: int = 0
    buckets: int = 0
    replacements: int = 0
    seconds: float = 0.0
    reasons: Counter = field(default_factory=Counter)


def _micros(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * US + delta.microseconds


def _at(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


class Stack:
    """The real broker (one Tansu of this module's own, replaced when a stream says so), the real
    database (the module's, emptied before each example), the drain, re-derivation from landing and
    the window aggregates."""

    CONSUMER = "model-drain"

    def __init__(self, database: DatabaseHandle, broker: OwnBroker) -> None:
        self.database = database
        self.broker = broker
        self.settings = self._settings("unused.")
        self.totals = Totals()
        self._producer: Producer | None = None  # see `_produce`

    def _settings(self, prefix: str) -> PlatformSettings:
        return PlatformSettings(
            database_url=self.database.pipeline_url,
            kafka_brokers=self.broker.address,
            kafka_topic_prefix=prefix,
            domains_enabled=["sensor"],
            drain_consumer=self.CONSUMER,
            drain_poll_timeout_s=0.2,
            windows=list(WINDOWS),
        )

    # --- one example ---------------------------------------------------------------------------
    def run(self, stream: Stream) -> tuple[list[Delivered], int, PlatformSettings]:
        """Play the stream; returns every delivery (with the log it went to), the current log and
        the settings (topic prefix) used."""
        settings = self._settings(f"m{uuid.uuid4().hex[:10]}.")
        binding = next(b for b in bind_domains(settings) if b.domain == "sensor")
        topic = binding.topics[0]
        self._reset(stream.catalogue)
        ensure_topics(settings.kafka_client_config(), [topic], partitions=PARTITIONS)
        delivered: list[Delivered] = []
        drained_upto = 0  # deliveries before this index were on a log a drain caught up with
        log = 0
        for step in stream.steps:
            if isinstance(step, Produce):
                delivered += self._produce(topic, step.specs, log)
            elif isinstance(step, DrainPass):
                self._drain(settings, binding, topic, delivered, log)
                drained_upto = len(delivered)
            else:
                for d in delivered[drained_upto:]:
                    d.lost = True
                drained_upto = len(delivered)
                self._producer = None  # its producer id and sequence numbers belong to the log just dropped
                if isinstance(step, ReplaceBroker):
                    self.broker.kill()
                    self.broker.start(create_topics=False)
                else:
                    self._delete_topic(topic)
                ensure_topics(settings.kafka_client_config(), [topic], partitions=PARTITIONS)
                log += 1
        self._drain(settings, binding, topic, delivered, log)
        return delivered, log, settings

    def _reset(self, catalogue: Catalogue) -> None:
        with self.database.connect() as conn, conn.transaction():
            conn.execute(
                "TRUNCATE analytics.kafka_landing, analytics.raw_sensor_readings, analytics.rejected_message, "
                "analytics.worker_checkpoints, analytics.ingest_resets, analytics.analytics_agg, "
                "analytics.metric_catalog, analytics.metric_policy"
            )
            cur = conn.cursor()
            cur.executemany(
                "INSERT INTO analytics.metric_catalog (tenant_id, metric, source) VALUES (%s, %s, 'cli')",
                [(WILDCARD, m) for m in sorted(catalogue.defaults)] + sorted(catalogue.own),
            )
            cur.executemany(
                "INSERT INTO analytics.metric_policy (tenant_id, unknown_metrics) VALUES (%s, %s)",
                sorted(catalogue.policies.items()),
            )

    def _produce(self, topic: str, specs: tuple[Spec, ...], log: int) -> list[Delivered]:
        """Produce a batch and take each message's partition, offset and timestamp from its delivery
        report. One idempotent producer serves the batches and examples while the broker keeps its logs (a
        new one waits 0.5 s for its producer id, 32 times in the 20 examples): it is dropped when a step
        replaces the broker or re-creates the topic (`run`), since a replaced broker answers an old
        idempotent producer with UnknownProducerId and a re-created topic does not know its sequence
        numbers, and one left behind would retry the dead broker for the rest of the session. Every batch
        is flushed before the next step, so nothing of one log is in flight when it is dropped."""
        if self._producer is None:
            self._producer = Producer(
                {"bootstrap.servers": self.broker.address, "enable.idempotence": True, "linger.ms": 2, "log_level": 0}
            )
        producer = self._producer
        reports: dict[int, tuple] = {}

        def report(spec: Spec):
            def on_delivery(err, msg) -> None:
                reports[spec.n] = (err, msg.partition(), msg.offset(), msg.timestamp()[1])

            return on_delivery

        for spec in specs:
            producer.produce(
                topic, value=spec.value, partition=spec.partition, timestamp=spec.ts_ms, on_delivery=report(spec)
            )
        remaining = producer.flush(30)
        if remaining or any(reports[spec.n][0] is not None for spec in specs):
            self._producer = None  # not trusted with the next example (Hypothesis goes on to shrink)
        assert remaining == 0, "the broker did not acknowledge every message"
        out = []
        for spec in specs:
            err, partition, offset, ts_ms = reports[spec.n]
            assert err is None, f"produce of #{spec.n} failed: {err}"
            out.append(Delivered(spec, partition, offset, ts_ms, log))
        return out

    def _drain(
        self, settings: PlatformSettings, binding: DomainBinding, topic: str, delivered: list[Delivered], log: int
    ) -> None:
        """Drain passes until every partition's stored checkpoint is at the end of the current log."""
        ends = {p: 0 for p in range(PARTITIONS)}
        for d in delivered:
            if d.log == log:
                ends[d.partition] = max(ends[d.partition], d.offset + 1)
        for _ in range(4):
            Drain(
                binding,
                contract_config(settings),
                database_url=settings.database_url.get_secret_value(),
                kafka_config=settings.kafka_client_config(),
                consumer_name=self.CONSUMER,
                poll_timeout_s=settings.drain_poll_timeout_s,
            ).run(budget_s=20)
            stored = dict(
                self.database.query(
                    "SELECT kafka_partition, next_offset FROM analytics.worker_checkpoints "
                    "WHERE consumer = %s AND topic = %s",
                    (self.CONSUMER, topic),
                )
            )
            if all(stored.get(p, 0) == end for p, end in ends.items()):
                return
        raise AssertionError(f"the drain did not reach the end of the log in 4 passes: stored {stored}, log {ends}")

    def _delete_topic(self, topic: str) -> None:
        admin = AdminClient({"bootstrap.servers": self.broker.address})
        admin.delete_topics([topic])[topic].result(timeout=30)
        wait_for(lambda: topic not in admin.list_topics(timeout=5).topics, 30, "the topic to be gone")

    # --- what the database holds ---------------------------------------------------------------
    def observe(self) -> Observed:
        rows = {}
        for r in self.database.query(
            "SELECT time, tenant_id, factory_id, machine_id, sensor_id, metric, value, unit, payload::text, event_id, "
            "schema_version, uncatalogued, topic, kafka_partition, kafka_offset FROM analytics.raw_sensor_readings"
        ):
            row = (_micros(r[0]), *r[1:8], canonical_payload(r[8]), *r[9:])
            rows[(row[0], *row[1:6], row[9])] = row
        rejects = {
            (t, p, o, _micros(ts) // 1000): reason
            for t, p, o, ts, reason in self.database.query(
                "SELECT topic, kafka_partition, kafka_offset, kafka_ts, reason FROM analytics.rejected_message"
            )
        }
        landed = {
            (t, p, o, _micros(ts) // 1000)
            for t, p, o, ts in self.database.query(
                "SELECT topic, kafka_partition, kafka_offset, kafka_ts FROM analytics.kafka_landing"
            )
        }
        return Observed(rows, rejects, landed)

    def observe_aggregates(self) -> dict[tuple, tuple]:
        return {
            (r[0], _micros(r[1]), *r[2:7]): tuple(r[7:])
            for r in self.database.query(
                "SELECT window_s, bucket_start, tenant_id, factory_id, machine_id, sensor_id, metric, count_n, sum_v, "
                "avg_v, min_v, max_v, stddev_v, first_v, last_v, p50_v, p95_v FROM analytics.analytics_agg"
            )
        }

    def touched_hours(self, expected: Expected) -> list[datetime]:
        """Hours of the model's rows, of the stored rows and of every landed message's time."""
        hours = {r.reading.time_us // (3600 * US) for r in expected.rows.values()}
        for (start,) in self.database.query(
            "SELECT DISTINCT date_trunc('hour', time) FROM analytics.raw_sensor_readings UNION "
            "SELECT DISTINCT date_trunc('hour', event_time) FROM analytics.kafka_landing WHERE event_time IS NOT NULL"
        ):
            hours.add(_micros(start) // (3600 * US))
        return [_at(h * 3600 * US) for h in sorted(hours)]

    def recompute_aggregates(self, hours: list[datetime]) -> None:
        """The window aggregates of each hour, by the function the `sensor_window_aggregates` asset runs
        for its partition (`recompute_aggregates`). A Dagster run per hour costs 1-3 s here (run
        bookkeeping and the asset's Great Expectations checks), several times a whole example."""
        with psycopg.connect(self.settings.database_url.get_secret_value(), autocommit=True) as conn:
            for hour in hours:
                recompute_aggregates(conn, list(WINDOWS), hour, hour + timedelta(hours=1))

    def rederive(self, settings: PlatformSettings, hours: list[datetime]) -> None:
        """Re-derive the hours from landing, as materialising the raw asset's partitions does."""
        binding = next(b for b in bind_domains(settings) if b.domain == "sensor")
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            config = contract_config(settings, read_catalog(conn))
            for hour in hours:
                rederive_range(conn, binding, config, hour, hour + timedelta(hours=1))


# ----- comparing ------------------------------------------------------------------------------


def _row_text(row: tuple) -> str:
    fields = dict(zip(ROW_COLUMNS, row, strict=True))
    time_text = _at(fields.pop("time_us")).isoformat().replace("+00:00", "Z")
    return f"time={time_text} " + ", ".join(f"{k}={v!r}" for k, v in fields.items())


def compare_store(expected: Expected, observed: Observed, where: str) -> list[str]:
    """Differences between the model's store and the database's, one readable line each."""
    problems = []
    want = {identity: row.as_tuple() for identity, row in expected.rows.items()}
    for identity in sorted(want.keys() - observed.rows.keys(), key=repr):
        problems.append(f"{where} raw: missing  {_row_text(want[identity])}")
    for identity in sorted(observed.rows.keys() - want.keys(), key=repr):
        problems.append(f"{where} raw: unexpected {_row_text(observed.rows[identity])}")
    for identity in sorted(want.keys() & observed.rows.keys(), key=repr):
        if want[identity] != observed.rows[identity]:
            problems.append(
                f"{where} raw: differs\n      model:  {_row_text(want[identity])}\n"
                f"      stored: {_row_text(observed.rows[identity])}"
            )
    for key in sorted(expected.rejects.keys() - observed.rejects.keys()):
        problems.append(f"{where} rejects: missing {key} ({expected.rejects[key].why})")
    for key in sorted(observed.rejects.keys() - expected.rejects.keys()):
        verdict = expected.verdicts.get(key)
        problems.append(f"{where} rejects: unexpected {key} reason {observed.rejects[key]} (model: {verdict})")
    for key in sorted(expected.rejects.keys() & observed.rejects.keys()):
        verdict = expected.rejects[key]
        if observed.rejects[key] not in verdict.reasons:
            problems.append(
                f"{where} rejects: {key} stored reason {observed.rejects[key]!r}, the rules allow "
                f"{sorted(verdict.reasons)} ({verdict.why})"
            )
    for key in sorted(expected.landed ^ observed.landed):
        problems.append(f"{where} landing: {'missing' if key in expected.landed else 'unexpected'} {key}")
    return problems


def compare_aggregates(want: dict[tuple, Agg], got: dict[tuple, tuple]) -> list[str]:
    problems = []
    for key in sorted(want.keys() - got.keys(), key=repr):
        problems.append(f"aggregates: missing bucket {_bucket(key)}: {want[key]}")
    for key in sorted(got.keys() - want.keys(), key=repr):
        problems.append(f"aggregates: unexpected bucket {_bucket(key)}: {got[key]}")
    for key in sorted(want.keys() & got.keys(), key=repr):
        model = want[key]
        wrong = [
            f"{name} model {m!r} stored {g!r}"
            for name, m, g in zip(AGG_FIELDS, model.as_tuple(), got[key], strict=True)
            if not agg_close(name, m, g, model.exact)
        ]
        if wrong:
            problems.append(f"aggregates: {_bucket(key)}: {'; '.join(wrong)}")
    return problems


def _bucket(key: tuple) -> str:
    window, start, *series = key
    return f"{window}s {_at(start).isoformat().replace('+00:00', 'Z')} {series}"


def model_messages(delivered: list[Delivered], topic: str) -> list[Message]:
    """The broker's facts as the model takes them; a message on a replaced log before any drain
    reached it is marked not drained (lost)."""
    return [
        Message(topic, d.partition, d.offset, d.ts_ms, d.spec.value, log=d.log, drained=not d.lost) for d in delivered
    ]


def _note(text: str) -> None:
    """Hypothesis' note (printed with a failing example), or nothing in a plain test."""
    if currently_in_test_context():
        note(text)


def check(stack: Stack, stream: Stream, totals: Totals | None = None) -> list[str]:
    """Play `stream` on the stack and compare every stored result with the model; the problems found
    (counted into `totals` when given)."""
    started = time.monotonic()
    delivered, _, settings = stack.run(stream)
    topic = next(b for b in bind_domains(settings) if b.domain == "sensor").topics[0]
    rules = Rules(stream.catalogue, settings.partitions_start, settings.contract_max_future_s, WINDOWS)
    expected = expect(model_messages(delivered, topic), rules)
    _note(
        f"model: {len(expected.rows)} rows, {len(expected.rejects)} rejects, {len(expected.landed)} landed, "
        f"{len(expected.lost)} lost"
    )
    problems = compare_store(expected, stack.observe(), "live")

    hours = stack.touched_hours(expected)
    stack.recompute_aggregates([h for h in hours if h >= settings.partitions_start])
    want_aggs = aggregates(expected.rows.values(), WINDOWS)
    problems += compare_aggregates(want_aggs, stack.observe_aggregates())

    stack.rederive(settings, [h for h in hours if h >= settings.partitions_start])
    problems += compare_store(expected, stack.observe(), "re-derived")

    if totals is not None:
        totals.examples += 1
        totals.messages += stream.messages
        totals.lost += len(expected.lost)
        totals.rows += len(expected.rows)
        totals.rejects += len(expected.rejects)
        totals.buckets += len(want_aggs)
        totals.replacements += sum(isinstance(s, ReplaceBroker | RecreateTopic) for s in stream.steps)
        totals.seconds += time.monotonic() - started
        totals.reasons.update(stack.observe().rejects.values())
    return problems


# ----- fixtures and the property ----------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    module_database: DatabaseHandle, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    broker = OwnBroker(Path(tmp_path_factory.mktemp("ingest-model")), [])
    broker.start(create_topics=False)
    try:
        own = Stack(module_database, broker)
        yield own
        t = own.totals
        plugins = request.config.pluginmanager
        reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
        if t.examples and reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():  # the figures make soak runs comparable (docs/benchmarks.md)
                reporter.write_line(
                    f"\ningest model ({PROFILE}): {t.examples} examples, {t.messages} messages "
                    f"({t.lost} lost with a replaced log), {t.rows} raw rows, {t.rejects} rejects, "
                    f"{t.buckets} aggregate buckets, {t.replacements} logs replaced, {t.seconds:.1f} s "
                    f"({t.seconds / t.examples:.2f} s/example); reasons seen: {dict(sorted(t.reasons.items()))}"
                )
    finally:
        broker.stop()


@HYPOTHESIS
@given(stream=streams())
def test_ingest_stores_what_the_model_says(stack: Stack, stream: Stream) -> None:
    note(repr(stream))  # printed with a failing example whatever pytest plugins do to Hypothesis' own printing
    problems = check(stack, stream, stack.totals)
    assert not problems, "the stack differs from the model:\n  " + "\n  ".join(problems)


# ----- discrepancies the model found on the real stack (fixed), kept as regression tests ---------

CATALOGUE = Catalogue(frozenset({"temp", "humidity"}))


def reading_bytes(**fields: object) -> bytes:
    body: dict = {
        "time": "2025-08-20T11:00:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "sensor_id": "s1",
        "metric": "temp",
        "value": 1.0,
        **fields,
    }
    return _encode(body)


def hand_written(*steps: Step | list[tuple[str, bytes | None, int, int]]) -> Stream:
    """A stream written by hand: a list of (label, value, partition, Kafka timestamp relative to
    BROKER_NOW in ms) is a produced batch; numbered in order like generated ones."""
    n = itertools.count()
    made: list[Step] = []
    for step in steps:
        if isinstance(step, list):
            made.append(Produce(tuple(Spec(next(n), label, v, p, BROKER_NOW_MS + ts) for label, v, p, ts in step)))
        else:
            made.append(step)
    return Stream(CATALOGUE, tuple(made))


def test_a_reading_of_year_0000_is_rejected_and_does_not_stop_the_drain(stack: Stack) -> None:
    """Model: `0000-01-01T00:00:00Z` has the contract's shape; it is rejected (bad_time or
    time_before_partitions, the rules do not say which) and the reading after it is stored.
    Stack: the contract parses it (Polars has a year 0), the drain writes its event_time to
    kafka_landing, and PostgreSQL refuses the whole COPY (DatetimeFieldOverflow: date/time field
    value out of range "0000-01-01T00:00:00.000000+0000"). The batch is never committed and every
    later pass fails on the same message: the partition is stuck behind it, nothing after it is
    ingested, and the message is not in rejected_message. Fixed: year 0000 is a bad_time, and a
    time PostgreSQL cannot store is never a reject's or landing's event_time."""
    stream = hand_written(
        [("year 0000", reading_bytes(time="0000-01-01T00:00:00Z"), 0, 0), ("a good reading", reading_bytes(), 0, 1)]
    )
    problems = check(stack, stream)
    assert not problems, f"{stream!r}\n  " + "\n  ".join(problems)


def test_one_coordinate_in_two_logs_keeps_the_copy_of_the_older_log(stack: Stack) -> None:
    """Model (the coordinate rule): copies of one reading at the same (partition, offset, topic) in
    two logs of a replaced broker -> the copy of the older log (landed first) wins, whatever the
    Kafka timestamps say. Here the new log's copy has the older timestamp (its producer's clock runs
    30 min behind). Found: the rule used to be "the older Kafka timestamp", which live ingest could
    not apply (raw rows carry no Kafka timestamp) while re-deriving from landing did: live kept 1.0,
    re-derived 2.0. Now both keep the older log's copy (landing is read in landing order)."""
    stream = hand_written(
        [("first copy", reading_bytes(value=1.0, event_id="e1"), 0, 0)],
        DrainPass(),
        ReplaceBroker(),
        [("correction, clock 30 min behind", reading_bytes(value=2.0, event_id="e1"), 0, -1_800_000)],
    )
    problems = check(stack, stream)
    assert not problems, f"{stream!r}\n  " + "\n  ".join(problems)


def test_invalid_utf8_inside_a_string_is_rejected_and_does_not_stop_the_drain(stack: Stack) -> None:
    """Model: bytes that are not UTF-8 -> rejected not_utf8, and the reading after it is stored.
    Stack: msgspec does not check the UTF-8 of the strings it decodes, so the message passes
    decoding; building the batch's frame then raises UnicodeDecodeError (a string field, here
    machine_id; the payload's raw text in `raw_json_text` likewise), the drain pass fails before
    anything is written, and every later pass fails on the same message: the partition is stuck
    behind it and the message is not in rejected_message. Fixed: the contracts check UTF-8 up
    front, over the whole batch."""
    bad = reading_bytes(machine_id=_BAD_UTF8).replace(_BAD_UTF8.encode(), b"m\xff")
    stream = hand_written([("machine_id with a byte 0xff", bad, 0, 0), ("a good reading", reading_bytes(), 0, 1)])
    problems = check(stack, stream)
    assert not problems, f"{stream!r}\n  " + "\n  ".join(problems)


def test_invalid_utf8_inside_a_key_is_rejected_as_not_utf8(stack: Stack) -> None:
    """Model: bytes that are not UTF-8 -> reason not_utf8. Stack: the invalid bytes inside the key
    "time" make msgspec read an unknown key (skipped unchecked) and report `time` as missing: the
    message is kept with reason missing_field, which sends an operator looking for a sender bug
    that is not there. Same cause as above (UTF-8 never checked up front)."""
    bad = reading_bytes().replace(b'"time"', b'"\xc3\x28time"', 1)
    stream = hand_written([("key `time` with the bytes c3 28", bad, 0, 0)])
    problems = check(stack, stream)
    assert not problems, f"{stream!r}\n  " + "\n  ".join(problems)
