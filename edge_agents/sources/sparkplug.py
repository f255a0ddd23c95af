"""Sparkplug B (MQTT + protobuf, Eclipse Sparkplug 3.0) → canonical readings and device health.

A Sparkplug edge node announces its metrics once, in its birth certificates (NBIRTH for the node,
DBIRTH for each device behind it): name, alias, datatype, properties such as the engineering unit.
Its data messages (NDATA, DDATA) then carry values by alias only, numbered by `seq` (0..255, wrapping)
so that a consumer can tell when it missed one. The consumer's side of the contract, implemented by
`SparkplugState` (pure: no MQTT, so it is tested on hand-built payloads):

* a birth (re)defines the node's aliases; its values are readings too (a rebirth repeats them with
  the same timestamps, hence the same event ids: the platform's dedup drops the copies);
* a `seq` that is not the previous one plus one, data from a node whose birth this agent never saw,
  or an alias no birth declared means the agent's picture of the node may be wrong: it asks the node
  for a rebirth (NCMD `Node Control/Rebirth`, at most once per `rebirth_interval_s`) and counts why;
  values whose alias is known are still delivered;
* NDEATH/DDEATH and births become `device.health` offline/online; an NDEATH whose `bdSeq` is not the
  current birth's is the will of an older session and is ignored (the node is already back);
* each value keeps its own timestamp (historical values from an edge node's store-and-forward
  included), else the message's, else the receipt time.

Which tenant, factory and machine a node or device is, and which canonical metric a Sparkplug metric
name is, is configuration (`SparkplugSource` in edge_agents/config.py): a Sparkplug plant streams in
without code. `SparkplugSource` wires the state to paho-mqtt as the MQTT source does (QoS 1 messages
acknowledged once durably queued) and, with `primary_host_id`, acts as the plant's primary host
application (its retained STATE tells edge nodes when to send births and when to keep data back).
"""

from __future__ import annotations

import math
import struct
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter

from edge_agents.config import IDENTITY_FIELDS, Identity, SparkplugMetric, SparkplugNode
from edge_agents.config import SparkplugSource as SparkplugConfig
from edge_agents.engine import Engine, SubmitResult
from edge_agents.sources.base import sensor_payload
from edge_agents.sources.mqtt import PahoSource
from edge_agents.sources.sparkplug_b_pb2 import Payload

NAMESPACE = "spBv1.0"
SEQ_MODULO = 256
REBIRTH_METRIC = "Node Control/Rebirth"
BD_SEQ = "bdSeq"
# Sparkplug's own bookkeeping metrics: never readings, never "unmapped"
CONTROL_PREFIXES = ("Node Control/", "Device Control/", "Node Info/", "Device Info/", "Properties/")

# DataType numbers of the specification (sparkplug_b.proto's header lists them all)
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT = 9, 10, 11, 12, 13, 14
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
_UNSIGNED = (UINT8, UINT16, UINT32, UINT64)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SparkplugError(ValueError):
    """A message or a metric that cannot become canonical readings; `reason` names the reject."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# ----- the wire format ---------------------------------------------------------------------------


def decode_payload(body: bytes) -> Payload:
    """A Sparkplug B payload from its protobuf bytes."""
    payload = Payload()
    try:
        payload.ParseFromString(body)
    except DecodeError as exc:
        raise SparkplugError("not_protobuf", f"not a Sparkplug B payload: {exc}") from None
    return payload


MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant a datetime holds


def ms_time(ms: Any) -> datetime:
    """Sparkplug's milliseconds since the epoch, exactly (no float seconds in between); a value no
    datetime can hold (a garbage uint64) is a SparkplugError, not an OverflowError on paho's thread."""
    if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= MAX_MS:
        raise SparkplugError("bad_time", f"timestamp {ms!r} is not milliseconds since 1970 before year 10000")
    return _EPOCH + timedelta(milliseconds=ms)


def float32_text(value: float) -> float:
    """The shortest decimal that is the same float32: a Float metric of 23.7 travels as
    23.700000762939453, which is not what the device measured; this gives 23.7 back."""
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        try:
            if struct.pack("<f", candidate) == packed:
                return candidate
        except OverflowError:  # rounded past the largest float32
            continue
    return value


def metric_value(metric: Payload.Metric, datatype: int) -> float:
    """A metric's value as the canonical float, by its Sparkplug datatype: Int8..Int64 are two's
    complement in the unsigned protobuf fields (so -5 as Int16 arrives as 65531), booleans are 0/1.
    Strings, dates, bytes, data sets and templates are not measurements."""
    kind = metric.WhichOneof("value")
    if kind is None:
        raise SparkplugError("missing_field", f"metric {metric.name or metric.alias} has no value")
    if datatype in _SIGNED_BITS and kind in ("int_value", "long_value"):
        bits = _SIGNED_BITS[datatype]
        raw = getattr(metric, kind) & ((1 << bits) - 1)
        return float(raw - (1 << bits) if raw >= 1 << (bits - 1) else raw)
    if datatype in _UNSIGNED and kind in ("int_value", "long_value"):
        return float(getattr(metric, kind))
    if datatype == FLOAT and kind == "float_value":
        value = float32_text(metric.float_value)
    elif datatype in (FLOAT, DOUBLE) and kind in ("float_value", "double_value"):
        value = getattr(metric, kind)
    elif datatype == BOOLEAN and kind == "boolean_value":
        return 1.0 if metric.boolean_value else 0.0
    else:
        raise SparkplugError("wrong_type", f"metric {metric.name or metric.alias}: datatype {datatype} is not numeric")
    if not math.isfinite(value):
        raise SparkplugError("non_finite", f"metric {metric.name or metric.alias} is not finite")
    return value


def scaled(value: float, scale: float, offset: float) -> float:
    """value × scale + offset on the decimals as written (config and device), rounded once: -1400 mbar
    × 0.001 is -1.4 bar, where float arithmetic gives -1.4000000000000001."""
    if scale == 1.0 and offset == 0.0:
        return value
    return float(Decimal(repr(value)) * Decimal(repr(scale)) + Decimal(repr(offset)))


def property_text(metric: Payload.Metric, key: str) -> str | None:
    """A string property of a birth's metric (the engineering unit), if it has it."""
    properties = metric.properties
    for name, value in zip(properties.keys, properties.values, strict=False):
        if name == key and value.WhichOneof("value") == "string_value" and not value.is_null:
            return value.string_value
    return None


def rebirth_request(now_ms: int) -> bytes:
    """The NCMD payload that asks an edge node to publish its births again."""
    payload = Payload(timestamp=now_ms)
    metric = payload.metrics.add()
    metric.name = REBIRTH_METRIC
    metric.timestamp = now_ms
    metric.datatype = BOOLEAN
    metric.boolean_value = True
    return payload.SerializeToString()


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    """A Sparkplug 3.0 host application STATE message."""
    return orjson.dumps({"online": online, "timestamp": timestamp_ms})


# ----- what the consumer knows of each edge node -------------------------------------------------


@dataclass
class Known:
    """One metric as a birth declared it."""

    name: str
    datatype: int
    unit: str | None
    device: str | None


@dataclass
class NodeSession:
    """An edge node between its NBIRTH and its NDEATH."""

    bd_seq: int | None
    seq: int
    aliases: dict[int, Known] = field(default_factory=dict)
    names: dict[tuple[str | None, str], Known] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)


@dataclass
class Outcome:
    """What one MQTT message stands for."""

    sensor: list[dict[str, Any]] = field(default_factory=list)  # sensors.device.readings payloads
    device: list[dict[str, Any]] = field(default_factory=list)  # device.health payloads
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (reason, detail)
    ignored: dict[str, int] = field(default_factory=dict)  # reason → metrics or messages left out
    rebirth: tuple[str, str] | None = None  # (group_id, edge_node_id) to send NCMD Rebirth to
    rebirth_reason: str | None = None
    seq_gaps: int = 0
    unknown_aliases: int = 0

    def ignore(self, reason: str, count: int = 1) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + count


class SparkplugState:
    """The consumer side of Sparkplug B for one source: sessions per edge node, identities and metric
    names from the configuration. Not thread-safe: one MQTT network thread drives it."""

    def __init__(self, config: SparkplugConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.listed: dict[tuple[str, str], SparkplugNode] = {(n.group_id, n.edge_node_id): n for n in config.nodes}
        self.sessions: dict[tuple[str, str], NodeSession] = {}
        self._asked: dict[tuple[str, str], float] = {}
        self._identities: dict[tuple[str, str, str | None], Identity] = {}

    # ----- identities ----------------------------------------------------------------------

    def covers(self, group: str, node: str) -> bool:
        return (group, node) in self.listed or group in self.config.group_identity

    def identity(self, group: str, node: str, device: str | None) -> Identity:
        """Who a node's (device=None) or device's readings belong to; the machine defaults to the
        Sparkplug device id, or the edge node id for the node itself. Remembered: it is asked for
        every value, and merging pydantic models was half of a reading's cost."""
        key = (group, node, device)
        found = self._identities.get(key)
        if found is None:
            found = self._identities[key] = self._resolve(group, node, device)
        return found

    def _resolve(self, group: str, node: str, device: str | None) -> Identity:
        listed = self.listed.get((group, node))
        if listed is not None:
            found = self.config.identity.merged(listed.identity)
            if device is not None:
                found = found.merged(listed.devices.get(device))
        else:
            found = self.config.identity.merged(self.config.group_identity.get(group))
        if found.machine_id is None:
            found = found.merged(Identity(machine_id=device or node))
        return found

    # ----- messages -------------------------------------------------------------------------

    def handle(self, topic: str, body: bytes, now: datetime) -> Outcome:
        """Everything one message on `spBv1.0/...` means; SparkplugError when it means nothing."""
        levels = topic.split("/")
        out = Outcome()
        if len(levels) == 3 and levels[0] == NAMESPACE and levels[1] == "STATE":
            self._state(levels[2], body, now, out)
            return out
        if len(levels) not in (4, 5) or levels[0] != NAMESPACE:
            raise SparkplugError("unmapped_topic", f"{topic} is not a Sparkplug B topic")
        group, kind, node = levels[1], levels[2], levels[3]
        device = levels[4] if len(levels) == 5 else None
        if kind in ("NCMD", "DCMD"):  # commands (ours among them): not data
            out.ignore("command")
            return out
        if not self.covers(group, node):
            out.ignore("unknown_node")
            return out
        payload = decode_payload(body)
        sent = ms_time(payload.timestamp) if payload.HasField("timestamp") else now
        key = (group, node)
        if kind == "NBIRTH":
            self._nbirth(key, payload, sent, out)
        elif kind == "NDEATH":
            self._ndeath(key, payload, sent, out)
        elif kind in ("DBIRTH", "DDATA", "DDEATH", "NDATA"):
            if kind != "NDATA" and device is None:
                raise SparkplugError("unmapped_topic", f"{topic}: {kind} needs a device id")
            session = self.sessions.get(key)
            if session is None:
                # data from a node whose birth this agent has not seen (it started later, or lost it)
                self._ask(key, "no_birth", out)
                out.ignore("no_birth", max(len(payload.metrics), 1))
                return out
            self._check_seq(key, session, payload, out)
            if kind == "DBIRTH":
                self._dbirth(key, session, device, payload, sent, out)
            elif kind == "DDEATH":
                session.devices.discard(device)  # type: ignore[arg-type]
                out.device.append(self._health(key, device, "offline", "critical", sent))
            else:
                self._values(key, session, device, payload.metrics, sent, out)
        else:
            raise SparkplugError("unmapped_topic", f"{topic}: unknown message type {kind}")
        return out

    def _nbirth(self, key: tuple[str, str], payload: Payload, sent: datetime, out: Outcome) -> None:
        bd_seq = next((int(m.long_value or m.int_value) for m in payload.metrics if m.name == BD_SEQ), None)
        session = NodeSession(bd_seq=bd_seq, seq=payload.seq)
        self.sessions[key] = session
        self._asked.pop(key, None)  # the rebirth (if any) came: a new gap may ask again at once
        self._learn(session, None, payload.metrics)
        out.device.append(self._health(key, None, "online", "ok", sent))
        self._values(key, session, None, payload.metrics, sent, out)

    def _dbirth(
        self,
        key: tuple[str, str],
        session: NodeSession,
        device: str | None,
        payload: Payload,
        sent: datetime,
        out: Outcome,
    ) -> None:
        self._learn(session, device, payload.metrics)
        session.devices.add(device)  # type: ignore[arg-type]
        out.device.append(self._health(key, device, "online", "ok", sent))
        self._values(key, session, device, payload.metrics, sent, out)

    def _ndeath(self, key: tuple[str, str], payload: Payload, sent: datetime, out: Outcome) -> None:
        session = self.sessions.get(key)
        bd_seq = next((int(m.long_value or m.int_value) for m in payload.metrics if m.name == BD_SEQ), None)
        if session is not None and bd_seq is not None and session.bd_seq is not None and bd_seq != session.bd_seq:
            out.ignore("stale_death")  # an older session's will, delivered after the node came back
            return
        # the node and every device behind it: one health event per machine, not one per id
        machines = [None, *sorted(session.devices)] if session is not None else [None]
        seen: set[tuple[str | None, ...]] = set()
        for device in machines:
            event = self._health(key, device, "offline", "critical", sent)
            identity = tuple(event[f] for f in IDENTITY_FIELDS)
            if identity not in seen:
                seen.add(identity)
                out.device.append(event)
        self.sessions.pop(key, None)

    def _learn(self, session: NodeSession, device: str | None, metrics: Any) -> None:
        for metric in metrics:
            if not metric.name:
                continue
            known = Known(metric.name, metric.datatype, property_text(metric, self.config.unit_property), device)
            session.names[(device, metric.name)] = known
            if metric.HasField("alias"):
                session.aliases[metric.alias] = known

    def _check_seq(self, key: tuple[str, str], session: NodeSession, payload: Payload, out: Outcome) -> None:
        expected = (session.seq + 1) % SEQ_MODULO
        if payload.HasField("seq"):
            if payload.seq != expected:
                out.seq_gaps += 1
                self._ask(key, "seq_gap", out)
            session.seq = payload.seq
        else:
            session.seq = expected

    def _values(
        self,
        key: tuple[str, str],
        session: NodeSession,
        device: str | None,
        metrics: Any,
        sent: datetime,
        out: Outcome,
    ) -> None:
        for metric in metrics:
            if metric.name:
                known = session.names.get((device, metric.name))
            else:
                known = session.aliases.get(metric.alias) if metric.HasField("alias") else None
            if known is None:
                out.unknown_aliases += 1
                self._ask(key, "unknown_alias", out)
                continue
            name = known.name
            if name == BD_SEQ or name.startswith(CONTROL_PREFIXES):
                continue
            mapping = self.config.metrics.get(name)
            if mapping is None:
                if self.config.unmapped_metrics == "reject":
                    out.rejects.append(("unmapped_metric", f"{key[0]}/{key[1]}: metric {name!r} is not in `metrics`"))
                else:
                    out.ignore("unmapped_metric")
                continue
            if metric.is_null:
                out.ignore("null")
                continue
            datatype = metric.datatype if metric.HasField("datatype") else known.datatype
            try:
                value = metric_value(metric, datatype)
                taken = ms_time(metric.timestamp) if metric.HasField("timestamp") else sent
            except SparkplugError as exc:
                out.rejects.append((exc.reason, f"{key[0]}/{key[1]}: {exc}"))
                continue
            out.sensor.append(self._reading(key, device, mapping, known, value, taken, metric.is_historical))

    def _reading(
        self,
        key: tuple[str, str],
        device: str | None,
        mapping: SparkplugMetric,
        known: Known,
        value: float,
        taken: datetime,
        historical: bool,
    ) -> dict[str, Any]:
        payload = sensor_payload(
            self.identity(*key, device),
            sensor_id=mapping.sensor_id or device or key[1],
            metric=mapping.metric,
            value=scaled(value, mapping.scale, mapping.offset),
            time=taken,
            unit=mapping.unit or known.unit,
            source=self.config.name,
        )
        if historical:  # store-and-forward: the edge node held it back while the host was away
            payload["payload"]["historical"] = True
        return payload

    def _health(
        self, key: tuple[str, str], device: str | None, status: str, level: str, at: datetime
    ) -> dict[str, Any]:
        identity = self.identity(*key, device)
        return {
            "time": _text(at),
            **{f: getattr(identity, f) for f in IDENTITY_FIELDS},
            "status": status,
            "level": level,
        }

    def _state(self, host: str, body: bytes, now: datetime, out: Outcome) -> None:
        """A host application's STATE: Sparkplug 3.0 JSON, or 2.2's bare ONLINE/OFFLINE."""
        identity = self.config.hosts.get(host)
        if identity is None:
            out.ignore("unknown_host")
            return
        text = body.strip()
        if text in (b"ONLINE", b"OFFLINE"):
            online, at = text == b"ONLINE", now
        else:
            try:
                document = orjson.loads(body)
                online = document["online"]
                at = ms_time(document["timestamp"]) if "timestamp" in document else now
            except (orjson.JSONDecodeError, TypeError, KeyError, SparkplugError) as exc:
                raise SparkplugError("bad_state", f"STATE of {host}: {exc}") from None
            if not isinstance(online, bool):
                raise SparkplugError("bad_state", f"STATE of {host}: `online` is not a boolean")
        identity = self.config.identity.merged(identity)
        out.device.append(
            {
                "time": _text(at),
                **{f: getattr(identity, f) or (host if f == "machine_id" else None) for f in IDENTITY_FIELDS},
                "status": "online" if online else "offline",
                "level": "ok" if online else "critical",
            }
        )

    def _ask(self, key: tuple[str, str], reason: str, out: Outcome) -> None:
        """Ask for a rebirth unless one was asked for within `rebirth_interval_s`."""
        now = self.clock()
        last = self._asked.get(key)
        if last is not None and now - last < self.config.rebirth_interval_s:
            return
        self._asked[key] = now
        out.rebirth, out.rebirth_reason = key, reason


def _text(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ----- the counters --------------------------------------------------------------------------------


class SparkplugMetrics:
    """Sparkplug's own counters, on the agent's registry (docs/edge.md lists them)."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.messages = Counter(
            "edge_agent_sparkplug_messages", "Sparkplug messages by type", ["source", "type"], registry=r
        )
        self.seq_gaps = Counter(
            "edge_agent_sparkplug_seq_gaps", "Data messages whose seq skipped", ["source"], registry=r
        )
        self.unknown_aliases = Counter(
            "edge_agent_sparkplug_unknown_aliases", "Metrics whose alias no birth declared", ["source"], registry=r
        )
        self.rebirths = Counter(
            "edge_agent_sparkplug_rebirth_requests", "NCMD Node Control/Rebirth sent", ["source", "reason"], registry=r
        )
        self.ignored = Counter(
            "edge_agent_sparkplug_ignored", "Metrics or messages left out on purpose", ["source", "reason"], registry=r
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> SparkplugMetrics:
        """One set per registry: several Sparkplug sources of one agent share the counters."""
        with _METRICS_LOCK:
            found = _METRICS.get(registry)
            if found is None:
                found = _METRICS[registry] = cls(registry)
            return found


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, SparkplugMetrics] = weakref.WeakKeyDictionary()
_METRICS_LOCK = threading.Lock()


# ----- the MQTT side -------------------------------------------------------------------------------


class SparkplugSource(PahoSource):
    config: SparkplugConfig
    kind = "sparkplug"
    pause_note = "disconnected"

    def __init__(self, config: SparkplugConfig, engine: Engine) -> None:
        self.state = SparkplugState(config)
        self.counters = SparkplugMetrics.of(engine.metrics.registry)
        self._state_ms = _now_ms()
        super().__init__(config, engine)

    def subscriptions(self) -> list[str]:
        """The MQTT filters: each listed edge node, each whole group with an identity, host STATEs."""
        config = self.config
        found = [f"{NAMESPACE}/{g}/#" for g in config.group_identity]
        found += [
            f"{NAMESPACE}/{n.group_id}/+/{n.edge_node_id}/#"
            for n in config.nodes
            if n.group_id not in config.group_identity
        ]
        if config.hosts:
            found.append(f"{NAMESPACE}/STATE/+")
        return found

    def topics(self) -> list[tuple[str, int]]:
        return [(topic, 1) for topic in self.subscriptions()]

    def _prepare(self, client: mqtt.Client) -> None:
        """As primary host: the broker announces us offline if we vanish (3.0: the will's timestamp
        is the online STATE's, renewed at each connect)."""
        if self.config.primary_host_id:
            self._state_ms = _now_ms()
            topic = f"{NAMESPACE}/STATE/{self.config.primary_host_id}"
            client.will_set(topic, state_payload(False, self._state_ms), qos=1, retain=True)

    def _announce(self, client: mqtt.Client) -> None:
        """After subscribing, so births that answer the online STATE find us listening."""
        if self.config.primary_host_id:
            topic = f"{NAMESPACE}/STATE/{self.config.primary_host_id}"
            client.publish(topic, state_payload(True, self._state_ms), qos=1, retain=True)

    def _leaving(self) -> None:
        """As primary host, say we are leaving: edge nodes keep their data as historical until we
        are back (Sparkplug's store-and-forward at the edge)."""
        if self.config.primary_host_id and self.client.is_connected():
            topic = f"{NAMESPACE}/STATE/{self.config.primary_host_id}"
            info = self.client.publish(topic, state_payload(False, self._state_ms), qos=1, retain=True)
            try:
                info.wait_for_publish(5)
            except (RuntimeError, ValueError):  # the connection went in between: the will says it
                self.log.info("sparkplug %s: STATE offline not confirmed; the broker's will says it", self.name)

    # ----- paho callbacks (paho's network thread) --------------------------------------------

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        mid, qos = message.mid, message.qos

        def ack() -> None:
            if qos:
                client.ack(mid, qos)

        if self._shed(ack):
            return
        self.counters.messages.labels(self.name, message_type(message.topic)).inc()
        try:
            out = self.state.handle(message.topic, message.payload, datetime.now(UTC))
        except SparkplugError as exc:
            self.engine.reject(self.name, None, message.payload, exc.reason, f"{message.topic}: {exc}")
            ack()
            return
        except Exception as exc:  # a message nobody foresaw must not end paho's network thread
            self.log.exception("sparkplug %s: cannot read %s", self.name, message.topic)
            self.engine.reject(self.name, None, message.payload, "unreadable", f"{message.topic}: {exc!r}")
            ack()
            return
        self._count(out)
        if out.rebirth is not None:
            group, node = out.rebirth
            client.publish(f"{NAMESPACE}/{group}/NCMD/{node}", rebirth_request(_now_ms()), qos=0)
        for reason, detail in out.rejects:
            self.engine.reject(self.name, "sensor", message.payload, reason, f"{message.topic}: {detail}")
        batches = [(d, p) for d, p in (("sensor", out.sensor), ("device", out.device)) if p]
        if not batches:
            ack()
            return
        # acknowledged once every part is durably queued (or refused by the contract, kept as a reject)
        pending = [len(batches)]
        lock = threading.Lock()

        def part_done(_result: SubmitResult) -> None:
            with lock:
                pending[0] -= 1
                last = pending[0] == 0
            if last:
                ack()

        for domain, payloads in batches:
            self.engine.submit(self.name, domain, payloads, done=part_done)

    def _count(self, out: Outcome) -> None:
        if out.seq_gaps:
            self.counters.seq_gaps.labels(self.name).inc(out.seq_gaps)
        if out.unknown_aliases:
            self.counters.unknown_aliases.labels(self.name).inc(out.unknown_aliases)
        if out.rebirth_reason:
            self.counters.rebirths.labels(self.name, out.rebirth_reason).inc()
        for reason, count in out.ignored.items():
            self.counters.ignored.labels(self.name, reason).inc(count)


def message_type(topic: str) -> str:
    """The Sparkplug message type of a topic for the counters (`other` for what is none)."""
    levels = topic.split("/")
    if len(levels) == 3 and levels[1] == "STATE":
        return "STATE"
    return levels[2] if len(levels) in (4, 5) else "other"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
