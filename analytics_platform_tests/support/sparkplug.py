"""A Sparkplug B edge node of the tests' own: payloads built field by field with the protobuf module
(no Sparkplug library between the test and the bytes), and `EdgeNode`, a paho client that behaves as
an edge node on a real broker: NDEATH as its will, births, data by alias with `seq`, and the NCMDs it
receives recorded. Imports only what the edge agent's own distribution has, so the unit tests that use
it also run in `make test-edge`."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt

from edge_agents.sources.sparkplug import (
    BD_SEQ,
    BOOLEAN,
    DATETIME,
    DOUBLE,
    FLOAT,
    INT8,
    INT16,
    INT32,
    INT64,
    NAMESPACE,
    STRING,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    decode_payload,
)
from edge_agents.sources.sparkplug_b_pb2 import Payload

_FIELD = {
    INT8: "int_value",
    INT16: "int_value",
    INT32: "int_value",
    UINT8: "int_value",
    UINT16: "int_value",
    UINT32: "int_value",
    INT64: "long_value",
    UINT64: "long_value",
    DATETIME: "long_value",
    FLOAT: "float_value",
    DOUBLE: "double_value",
    BOOLEAN: "boolean_value",
    STRING: "string_value",
}
_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}


def metric(
    name: str | None = None,
    *,
    alias: int | None = None,
    datatype: int | None = None,
    value: Any = None,
    timestamp: int | None = None,
    historical: bool = False,
    unit: str | None = None,
    null: bool = False,
) -> dict[str, Any]:
    """One metric as a plain description; `payload` turns it into protobuf. Negative integers are
    written as the specification says (two's complement in the unsigned field), by `payload`."""
    return {
        "name": name,
        "alias": alias,
        "datatype": datatype,
        "value": value,
        "timestamp": timestamp,
        "historical": historical,
        "unit": unit,
        "null": null,
    }


def payload(metrics: list[dict[str, Any]], *, seq: int | None = None, timestamp: int | None = None) -> bytes:
    """The protobuf bytes of a Sparkplug B payload."""
    message = Payload()
    if timestamp is not None:
        message.timestamp = timestamp
    if seq is not None:
        message.seq = seq
    for spec in metrics:
        m = message.metrics.add()
        if spec["name"] is not None:
            m.name = spec["name"]
        if spec["alias"] is not None:
            m.alias = spec["alias"]
        if spec["timestamp"] is not None:
            m.timestamp = spec["timestamp"]
        if spec["historical"]:
            m.is_historical = True
        if spec["unit"] is not None:
            m.properties.keys.append("engUnit")
            prop = m.properties.values.add()
            prop.type = STRING
            prop.string_value = spec["unit"]
        datatype = spec["datatype"]
        if datatype is not None:
            m.datatype = datatype
        if spec["null"]:
            m.is_null = True
        elif spec["value"] is not None:
            value = spec["value"]
            if datatype in _BITS and value < 0:
                value += 1 << _BITS[datatype]
            setattr(m, _FIELD[datatype], value)
    return message.SerializeToString()


def bd_seq(value: int) -> dict[str, Any]:
    return metric(BD_SEQ, datatype=INT64, value=value)


class EdgeNode:
    """An edge node `group/node` on a real broker: its NDEATH (with `bd_seq`) as the MQTT will, a
    `seq` that the publish methods advance (or that a test skips), the NCMD payloads it receives in
    `commands`."""

    def __init__(self, port: int, group: str, node: str, bd: int = 0) -> None:
        self.port, self.group, self.node, self.bd = port, group, node, bd
        self.seq = 0
        self.commands: list[Payload] = []
        self._lock = threading.Lock()
        self.client = self._client()

    def _client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-{self.group}-{self.node}"
        )
        client.will_set(self.topic("NDEATH"), payload([bd_seq(self.bd)]), qos=1)
        subscribed = threading.Event()
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        client.subscribe(self.topic("NCMD"), qos=1)
        if not subscribed.wait(60):
            raise RuntimeError("the edge node's NCMD subscription was not acknowledged")
        return client

    def topic(self, kind: str, device: str | None = None) -> str:
        return "/".join([NAMESPACE, self.group, kind, self.node, *([device] if device else [])])

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.commands.append(decode_payload(message.payload))

    def rebirths(self) -> int:
        """NCMD Node Control/Rebirth requests received so far."""
        with self._lock:
            return sum(
                1 for c in self.commands for m in c.metrics if m.name == "Node Control/Rebirth" and m.boolean_value
            )

    def publish(self, kind: str, metrics: list[dict[str, Any]], *, device: str | None = None, ts: int) -> None:
        """A birth (seq restarts at 0 with NBIRTH) or data message. QoS 1, not the specification's 0,
        so that the test can wait for the broker to have it: the test's order is the broker's."""
        if kind == "NBIRTH":
            self.seq = 0
            metrics = [bd_seq(self.bd), *metrics]
        body = payload(metrics, seq=self.seq, timestamp=ts)
        self.seq = (self.seq + 1) % 256
        self.client.publish(self.topic(kind, device), body, qos=1).wait_for_publish(10)

    def skip(self, count: int = 1) -> None:
        """Lose `count` messages on the way: the next one's seq jumps."""
        self.seq = (self.seq + count) % 256

    def vanish(self) -> None:
        """The node's connection breaks without a DISCONNECT: the broker publishes its will (NDEATH)."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def reconnect(self) -> None:
        """Back after `vanish`: a new session, the next bdSeq (births follow with `publish`)."""
        self.bd += 1
        self.client = self._client()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
