"""MQTT subscribe (paho-mqtt): topic patterns → canonical payloads, at least once end to end.

The session is persistent (fixed client id, clean_session off) and QoS 1 messages are acknowledged
*manually*, only once the engine has written them to the durable queue. A `kill -9` of the agent
therefore loses nothing: the broker redelivers what was not acknowledged, and because a payload's
`event_id` is derived from its content, a redelivered message carries the same id as the first copy.

Which topics become which readings is configuration (`MQTTMapping`): `{field}` levels capture
identity fields, `format` says how to read the payload. Bare values (`format: value`) take the
receipt time; payloads that carry their own time dedupe across redeliveries exactly.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from abc import abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from edge_agents.config import IDENTITY_FIELDS, Identity, MQTTMapping
from edge_agents.config import MQTTSource as MQTTConfig
from edge_agents.engine import Engine, SubmitResult
from edge_agents.sources.base import Source, sensor_payload, sleep_or_stop


class MappingError(ValueError):
    """A message matched a mapping but its payload cannot become a canonical reading."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class TopicMapper:
    """Compiled mappings: which one a topic matches and what it captures."""

    def __init__(self, mappings: list[MQTTMapping]) -> None:
        self.mappings = [(m, m.topic.split("/")) for m in mappings]

    @staticmethod
    def subscription(mapping: MQTTMapping) -> str:
        """The MQTT filter of a pattern: captures become `+`."""
        return "/".join("+" if level.startswith("{") else level for level in mapping.topic.split("/"))

    def match(self, topic: str) -> tuple[MQTTMapping, dict[str, str]] | None:
        levels = topic.split("/")
        for mapping, pattern in self.mappings:
            captured = _match_levels(pattern, levels)
            if captured is not None:
                return mapping, captured
        return None


def _match_levels(pattern: list[str], levels: list[str]) -> dict[str, str] | None:
    captured: dict[str, str] = {}
    for i, part in enumerate(pattern):
        if part == "#":
            return captured
        if i >= len(levels):
            return None
        if part == "+":
            continue
        if part.startswith("{"):
            if not levels[i]:
                return None
            captured[part[1:-1]] = levels[i]
        elif part != levels[i]:
            return None
    return captured if len(levels) == len(pattern) else None


def _dotted(document: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(document, dict) or part not in document:
            raise MappingError("missing_field", f"payload has no `{path}`")
        document = document[part]
    return document


def _number(raw: Any, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise MappingError("wrong_type", f"{what} is {type(raw).__name__}, not a number")
    if not math.isfinite(raw):
        raise MappingError("non_finite", f"{what} is not finite")
    return float(raw)


def _time(raw: Any) -> datetime:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = raw / 1000 if raw > 1e11 else raw  # epoch milliseconds or seconds
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise MappingError("bad_time", f"time {raw!r} is not ISO-8601") from None
        if parsed.tzinfo is None:
            raise MappingError("bad_time", f"time {raw!r} has no zone")
        return parsed
    raise MappingError("bad_time", f"time is {type(raw).__name__}")


def to_payloads(
    mapping: MQTTMapping,
    captured: dict[str, str],
    body: bytes,
    defaults: dict[str, str | None],
    source: str,
    now: datetime,
) -> list[dict[str, Any]]:
    """The canonical payloads one MQTT message stands for; MappingError when it cannot."""
    fields = {**{k: v for k, v in defaults.items() if v}, **mapping.fields, **captured}
    if mapping.format == "value":
        try:
            value = float(body.decode().strip())
        except (UnicodeDecodeError, ValueError):
            raise MappingError("wrong_type", f"payload {body[:40]!r} is not a number") from None
        if not math.isfinite(value):
            raise MappingError("non_finite", "payload is not finite")
        return [_reading(fields, fields["metric"], value * mapping.scale + mapping.offset, now, source)]
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MappingError("not_json", f"payload is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MappingError("not_object", "payload is not a JSON object")
    if mapping.format == "canonical":
        for name, value in fields.items():
            document.setdefault(name, value)
        return [document]
    ts = _time(_dotted(document, mapping.time_path)) if mapping.time_path else now
    return [
        _reading(fields, metric, _number(_dotted(document, path), path) * mapping.scale + mapping.offset, ts, source)
        for metric, path in mapping.values.items()
    ]


def _reading(fields: dict[str, str], metric: str, value: float, ts: datetime, source: str) -> dict[str, Any]:
    identity = Identity(**{f: fields.get(f) for f in IDENTITY_FIELDS})
    return sensor_payload(
        identity,
        sensor_id=fields.get("sensor_id", ""),
        metric=metric,
        value=value,
        time=ts,
        unit=fields.get("unit"),
        source=source,
    )


class PahoSource(Source):
    """A source on one paho-mqtt client, the MQTT and the Sparkplug B sources alike: a persistent
    session (fixed client id, clean_session off), QoS 1 acknowledged manually once queued, reconnects
    with back-off (one line while the broker is unreachable), and `when_slow: pause` disconnecting
    until the engine catches up. Subclasses name their subscriptions and read the messages; the hooks
    `_prepare` (before each connect), `_announce` (after subscribing) and `_leaving` (before a
    disconnect we ask for) are where Sparkplug's primary-host STATE goes."""

    kind = "mqtt"  # the first word of the source's log lines
    pause_note = "disconnected; the broker keeps the session's messages"

    def __init__(self, config: Any, engine: Engine) -> None:
        super().__init__(config, engine)
        self._paused = False
        self._unreachable_logged = False
        self.client = self._client()

    @abstractmethod
    def topics(self) -> list[tuple[str, int]]:
        """(filter, QoS) of each subscription."""

    def _prepare(self, client: mqtt.Client) -> None:
        """Before each connect (the first and each resume)."""

    def _announce(self, client: mqtt.Client) -> None:
        """Once connected and subscribed."""

    def _leaving(self) -> None:
        """Before a disconnect the source asks for (pause, shutdown)."""

    def _client(self) -> mqtt.Client:
        config = self.config
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=config.client_id or f"{self.engine.config.agent_id}-{config.name}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if config.username:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            client.tls_set(
                ca_certs=config.tls.ca_file,
                certfile=config.tls.cert_file,
                keyfile=config.tls.key_file,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            client.tls_insecure_set(config.tls.insecure)
        self._prepare(client)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self.client.loop_start()
        try:
            while not await sleep_or_stop(stop, 0.1):
                wanted_pause = self.slow and self.config.when_slow == "pause"
                if wanted_pause != self._paused:
                    await asyncio.to_thread(self._pause if wanted_pause else self._resume)
        finally:
            await asyncio.to_thread(self._shutdown)

    def _pause(self) -> None:
        self._paused = True
        self.log.info("%s %s: pausing (%s)", self.kind, self.name, self.pause_note)
        self._leaving()
        self.client.disconnect()
        self.client.loop_stop()

    def _resume(self) -> None:
        self._paused = False
        self.log.info("%s %s: resuming", self.kind, self.name)
        self._prepare(self.client)
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self.client.loop_start()

    def _shutdown(self) -> None:
        self._paused = True  # a disconnect we asked for
        self._leaving()
        self.client.disconnect()
        self.client.loop_stop()

    def _shed(self, ack: Callable[[], None]) -> bool:
        """`when_slow: shed` while the engine is slow: the message is counted as dropped and acknowledged."""
        if self.slow and self.config.when_slow == "shed":
            self.engine.metrics.dropped.labels("shed").inc()
            ack()
            return True
        return False

    # ----- paho callbacks (paho's network thread) ---------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self.log.warning("%s %s: connection refused: %s", self.kind, self.name, reason)
            return
        self._unreachable_logged = False
        client.subscribe(self.topics())
        self.log.info("%s %s: connected to %s:%d", self.kind, self.name, self.config.host, self.config.port)

    def _on_subscribe(self, client: mqtt.Client, _userdata: Any, _mid: int, codes: list[Any], _props: Any) -> None:
        """The broker granted the subscriptions (SUBACK): only from here does a message published for
        them reach this source, so only here is it connected (the source_connected metric, `connected`)
        and announced. On CONNACK, as before, a message published between CONNACK and the broker taking
        the SUBSCRIBE was never delivered while the source already said it was receiving (a test that
        published on `connected` lost all 30 of its messages once in CI)."""
        refused = [str(code) for code in codes if code.is_failure]
        if refused:
            self.log.warning(
                "%s %s: the broker refused %d of %d subscriptions (%s): nothing of those arrives; check the "
                "filters and the broker's ACL for this client",
                self.kind,
                self.name,
                len(refused),
                len(codes),
                ", ".join(refused),
            )
        if len(refused) == len(codes):
            return
        self._announce(client)
        self._loop.call_soon_threadsafe(self.set_connected, True)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        if not self._unreachable_logged:
            self._unreachable_logged = True
            self.log.warning(
                "%s %s: broker %s:%d unreachable: start it or fix host/port; retrying",
                self.kind,
                self.name,
                self.config.host,
                self.config.port,
            )
        self._loop.call_soon_threadsafe(self.set_connected, False)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._loop.call_soon_threadsafe(self.set_connected, False)
        if not self._paused:
            self.log.warning("%s %s: disconnected (%s); reconnecting", self.kind, self.name, reason)

    @abstractmethod
    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Read one message and hand it to the engine, acknowledging it once queued (paho's thread)."""


class MQTTSource(PahoSource):
    config: MQTTConfig

    def __init__(self, config: MQTTConfig, engine: Engine) -> None:
        self.mapper = TopicMapper(config.mappings)
        self.defaults = config.identity.model_dump()
        super().__init__(config, engine)

    def topics(self) -> list[tuple[str, int]]:
        return [(TopicMapper.subscription(m), self.config.qos) for m in self.config.mappings]

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        mid, qos = message.mid, message.qos

        def ack(_result: SubmitResult | None = None) -> None:
            if qos:
                client.ack(mid, qos)

        if self._shed(ack):
            return
        matched = self.mapper.match(message.topic)
        if matched is None:  # a broker can deliver overlapping subscriptions' topics we do not map
            self.engine.reject(self.name, None, message.payload, "unmapped_topic", f"no mapping for {message.topic}")
            ack()
            return
        mapping, captured = matched
        try:
            payloads = to_payloads(mapping, captured, message.payload, self.defaults, self.name, datetime.now(UTC))
        except MappingError as exc:
            self.engine.reject(self.name, mapping.domain, message.payload, exc.reason, f"{message.topic}: {exc}")
            ack()
            return
        # acknowledged once durably queued (or refused by the contract, which keeps it as a reject)
        self.engine.submit(self.name, mapping.domain, payloads, done=ack)
