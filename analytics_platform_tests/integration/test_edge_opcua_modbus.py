"""OPC-UA (an asyncua server) and Modbus TCP (a pymodbus server) → edge agent → Kafka (Tansu):
exact canonical messages with scale/offset applied, rejects for values that are not numbers,
backpressure changing the interval on the device side, and reconnecting when the device goes away.

The protocol servers run on an event loop of their own (a thread), as a device would: the agent
never shares a loop with them."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from asyncua import Server, ua
from confluent_kafka import Consumer
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from analytics_platform.devstack.processes import free_port
from analytics_platform_tests.support.edge import (
    agent_config,
    assign_all,
    decoded,
    edge_prefix,
    read_topic,
    running_agent,
    wait_for,
)
from edge_agents.agent import Agent
from edge_agents.canonical import content_event_id, time_text

T = TypeVar("T")
SENSORS = "sensors.device.readings"


class LoopThread:
    """An event loop on a thread of its own, for the devices the agent talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-devices", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def devices() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


def slow_down(agent: Agent, slow: bool) -> None:
    """What the engine does when the queue crosses a threshold: tell every listener."""
    for listener in agent.engine.on_backpressure:
        listener(slow)


def interval_metric(agent: Agent, source: str) -> float | None:
    return agent.engine.metrics.snapshot().get(f"edge_agent_source_interval_seconds{{source={source}}}")


def without_event_id(message: dict[str, Any]) -> dict[str, Any]:
    assert message["event_id"] == content_event_id("sensor", message)
    return {k: v for k, v in message.items() if k != "event_id"}


class Readings:
    """Everything that arrives on a topic, read as it comes (one consumer, kept open)."""

    def __init__(self, brokers: str, topic: str) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": brokers, "group.id": f"watch-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
        )
        assign_all(self.consumer, topic)
        self.seen: list[dict[str, Any]] = []

    def values(self) -> list[float]:
        batch = self.consumer.consume(num_messages=1000, timeout=0.2)
        self.seen.extend(orjson.loads(m.value()) for m in batch if m.error() is None)
        return [m["value"] for m in self.seen]

    def __enter__(self) -> Readings:
        return self

    def __exit__(self, *_: object) -> None:
        self.consumer.close()


# ----- OPC-UA ---------------------------------------------------------------------------------------

T0 = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=123456)
T1 = T0 + timedelta(seconds=30, microseconds=500)


def opcua_value(value: Any, variant: ua.VariantType, at: datetime, status: int = ua.StatusCodes.Good) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, variant), StatusCode=ua.StatusCode(status), SourceTimestamp=at)


class OPCUADevice:
    """An asyncua server with a press: temperature, pressure, a text state and a failed speed sensor."""

    def __init__(self, loop: LoopThread, port: int) -> None:
        self.loop = loop
        self.port = port
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/edge-test/"
        self.server: Server | None = None
        self.nodes: dict[str, Any] = {}

    def start(self) -> None:
        self.loop.run(self._start())

    async def _start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace("urn:edge-test")
        assert idx == 2
        press = await server.nodes.objects.add_object(idx, "Press")
        initial = {
            "temp": opcua_value(21.5, ua.VariantType.Double, T0),
            "pressure": opcua_value(1500, ua.VariantType.Int32, T0),
            "state": opcua_value("running", ua.VariantType.String, T0),
            "speed": opcua_value(0.0, ua.VariantType.Double, T0, ua.StatusCodes.BadSensorFailure),
        }
        for name, value in initial.items():
            node = await press.add_variable(
                f"ns={idx};s=press.{name}", name, value.Value.Value, varianttype=value.Value.VariantType
            )
            await node.write_value(value)
            self.nodes[name] = node
        await server.start()
        self.server = server

    def write(self, name: str, value: ua.DataValue) -> None:
        self.loop.run(self.nodes[name].write_value(value))

    def publishing_intervals(self) -> list[float]:
        """The publishing interval of every subscription the server holds, as the server runs it."""

        async def read() -> list[float]:
            assert self.server is not None
            subscriptions = self.server.iserver.subscription_service.subscriptions
            return sorted(s.data.RevisedPublishingInterval for s in subscriptions.values())

        return self.loop.run(read())

    def honour_modify_subscription(self) -> None:
        """asyncua's server answers ModifySubscription with the old interval; a server that follows
        the spec changes it: make this one do that (restarting its publish loop at the new period)."""
        assert self.server is not None
        service = self.server.iserver.subscription_service
        original = service.modify_subscription

        def modify(params: ua.ModifySubscriptionParameters) -> ua.ModifySubscriptionResult:
            subscription = service.subscriptions[params.SubscriptionId]
            subscription.data.RevisedPublishingInterval = params.RequestedPublishingInterval
            if subscription._task is not None:
                subscription._task.cancel()
                subscription._task = asyncio.get_running_loop().create_task(subscription._subscription_loop())
            return original(params)

        service.modify_subscription = modify

    def stop(self) -> None:
        if self.server is not None:
            self.loop.run(self.server.stop())
            self.server = None


@pytest.fixture
def opcua_device(devices: LoopThread) -> Iterator[OPCUADevice]:
    device = OPCUADevice(devices, free_port())
    device.start()
    yield device
    device.stop()


def opcua_source(endpoint: str) -> dict[str, Any]:
    return {
        "name": "press-opc",
        "type": "opcua",
        "endpoint": endpoint,
        "sampling_ms": 250,
        "slow_sampling_ms": 2000,
        "identity": {"tenant_id": "t1", "factory_id": "f1", "machine_id": "press-1"},
        "nodes": [
            {"node_id": "ns=2;s=press.temp", "metric": "temp", "sensor_id": "s-temp", "unit": "degC", "scale": 2.0,
             "offset": -3.0},
            {"node_id": "ns=2;s=press.pressure", "metric": "pressure", "sensor_id": "s-press", "unit": "kPa",
             "scale": 0.1, "identity": {"machine_id": "press-2"}},
            {"node_id": "ns=2;s=press.state", "metric": "speed", "sensor_id": "s-state"},
            {"node_id": "ns=2;s=press.speed", "metric": "speed", "sensor_id": "s-speed", "unit": "rpm"},
        ],
    }  # fmt: skip


def reading(machine: str, sensor: str, metric: str, value: float, unit: str, at: datetime) -> dict[str, Any]:
    return {
        "time": time_text(at),
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": machine,
        "sensor_id": sensor,
        "metric": metric,
        "value": value,
        "unit": unit,
        "payload": {"source": "press-opc"},
    }


def test_opcua_to_kafka_exact_messages(kafka_brokers: str, opcua_device: OPCUADevice, tmp_path: Path) -> None:
    prefix = edge_prefix(kafka_brokers)
    config = agent_config(kafka_brokers, prefix, tmp_path / "q.db", [opcua_source(opcua_device.endpoint)])
    with running_agent(config) as agent:
        source = agent.sources[0]
        wait_for(source.connected.is_set, 30, "the agent's OPC-UA session")
        assert interval_metric(agent, "press-opc") == 0.25
        # the subscription's initial values first (temp, pressure; state and speed are rejected) ...
        wait_for(lambda: agent.engine.metrics.snapshot().get("edge_agent_queued_total") == 2, 60, "initial values")
        # ... then a change
        opcua_device.write("temp", opcua_value(22.25, ua.VariantType.Double, T1))
        messages = read_topic(kafka_brokers, prefix + SENSORS, expect=3)
        wait_for(lambda: agent.engine.metrics.snapshot().get("edge_agent_sent_total") == 3, 60, "3 acknowledgements")
        snapshot = agent.engine.metrics.snapshot()
        rejects = agent.engine.queue.rejects(10)

    keys = sorted(m.key() for m in messages)
    assert keys == [b"t1-f1-press-1", b"t1-f1-press-1", b"t1-f1-press-2"]
    by_time_and_sensor = {(m["time"], m["sensor_id"]): without_event_id(m) for m in decoded(messages)}
    assert by_time_and_sensor == {
        (time_text(T0), "s-temp"): reading("press-1", "s-temp", "temp", 40.0, "degC", T0),  # 21.5 × 2 − 3
        (time_text(T0), "s-press"): reading("press-2", "s-press", "pressure", 150.0, "kPa", T0),  # 1500 × 0.1
        (time_text(T1), "s-temp"): reading("press-1", "s-temp", "temp", 41.5, "degC", T1),  # 22.25 × 2 − 3
    }
    assert snapshot["edge_agent_rejected_total{reason=wrong_type,source=press-opc}"] == 1
    assert snapshot["edge_agent_rejected_total{reason=bad_status,source=press-opc}"] == 1
    assert sorted((r[3], r[4]) for r in rejects) == [
        ("bad_status", "ns=2;s=press.speed: status BadSensorFailure"),
        ("wrong_type", "ns=2;s=press.state: value is str, not a number"),
    ]
    assert snapshot["edge_agent_queued_total"] == 3


@pytest.mark.parametrize("server_honours_modify", [False, True], ids=["recreated", "modified"])
def test_opcua_backpressure_changes_sampling_on_the_server(
    kafka_brokers: str, opcua_device: OPCUADevice, tmp_path: Path, server_honours_modify: bool
) -> None:
    """Slow: the server's subscription publishes every 2 s and the monitored items sample every 2 s
    (modified in place when the server supports ModifySubscription, else a new subscription);
    normal again: back to 250 ms. Readings keep coming either way."""
    if server_honours_modify:
        opcua_device.honour_modify_subscription()
    prefix = edge_prefix(kafka_brokers)
    config = agent_config(kafka_brokers, prefix, tmp_path / "q.db", [opcua_source(opcua_device.endpoint)])
    readings = Readings(kafka_brokers, prefix + SENSORS)
    with running_agent(config) as agent, readings:
        source = agent.sources[0]
        wait_for(source.connected.is_set, 30, "the agent's OPC-UA session")
        assert opcua_device.publishing_intervals() == [250.0]
        first = source.live.subscription.subscription_id

        slow_down(agent, True)
        wait_for(lambda: opcua_device.publishing_intervals() == [2000.0], 60, "the server to publish every 2 s")
        assert interval_metric(agent, "press-opc") == 2.0
        wait_for(lambda: source.live is not None and source.live.interval_ms == 2000.0, 60, "the source to settle")
        if server_honours_modify:
            assert source.live.subscription.subscription_id == first
            assert source.live.publishing_ms == 2000.0
            assert source.live.sampling_ms == {1: 2000.0, 2: 2000.0, 3: 2000.0, 4: 2000.0}
        else:
            assert source.live.subscription.subscription_id != first
        opcua_device.write("temp", opcua_value(30.0, ua.VariantType.Double, T1))  # 30 × 2 − 3 = 57
        wait_for(lambda: 57.0 in readings.values(), 30, "a reading while slowed down")

        slow_down(agent, False)
        wait_for(lambda: opcua_device.publishing_intervals() == [250.0], 60, "the server to publish every 250 ms")
        assert interval_metric(agent, "press-opc") == 0.25
        opcua_device.write("temp", opcua_value(31.0, ua.VariantType.Double, T1 + timedelta(seconds=1)))
        wait_for(lambda: 59.0 in readings.values(), 30, "a reading at normal speed")


def test_opcua_reconnects_when_the_server_restarts(
    kafka_brokers: str, opcua_device: OPCUADevice, tmp_path: Path
) -> None:
    prefix = edge_prefix(kafka_brokers)
    config = agent_config(kafka_brokers, prefix, tmp_path / "q.db", [opcua_source(opcua_device.endpoint)])
    with running_agent(config) as agent:
        source = agent.sources[0]
        wait_for(source.connected.is_set, 30, "the agent's OPC-UA session")
        wait_for(lambda: agent.engine.metrics.snapshot().get("edge_agent_queued_total") == 2, 60, "initial values")
        opcua_device.stop()
        wait_for(lambda: not source.connected.is_set(), 30, "the agent to notice the server is gone")
        opcua_device.start()  # same port, same values, same source timestamps
        wait_for(source.connected.is_set, 60, "the agent to reconnect")
        # the new subscription sends the initial values again; the write must not replace them in its queue
        wait_for(
            lambda: agent.engine.metrics.snapshot().get("edge_agent_queued_total") == 4, 60, "initial values again"
        )
        opcua_device.write("temp", opcua_value(25.0, ua.VariantType.Double, T1))  # 25 × 2 − 3 = 47
        messages = decoded(read_topic(kafka_brokers, prefix + SENSORS, expect=5))

    temps = [(m["time"], m["value"], m["event_id"]) for m in messages if m["sensor_id"] == "s-temp"]
    # the initial value again after the reconnect: the same reading, so the same event id (deduplicated)
    first_id = temps[0][2]
    assert temps == [
        (time_text(T0), 40.0, first_id),
        (time_text(T0), 40.0, first_id),
        (time_text(T1), 47.0, temps[2][2]),
    ]


# ----- Modbus ---------------------------------------------------------------------------------------


def words(fmt: str, value: float, word_order: str = "big") -> list[int]:
    """Registers of a 32-bit value as a device with that word order holds them."""
    high, low = struct.unpack(">HH", struct.pack(fmt, value))
    return [high, low] if word_order == "big" else [low, high]


# holding 0-1: float32 21.5 (0x41AC 0x0000); 2: int16 -100 (0xFF9C); 3: uint16 1234;
# 4-9: not on the device; 10-11: uint32 100000, little word order (0x86A0 0x0001)
HOLDING = {0: [0x41AC, 0x0000, 0xFF9C, 1234], 10: [0x86A0, 0x0001]}
# input 0-1: int32 -5 (0xFFFF 0xFFFB); 2-3: float32 3.75, little word order (0x0000 0x4070)
INPUT = {0: [0xFFFF, 0xFFFB, 0x0000, 0x4070]}


class ModbusDevice:
    """A pymodbus server (device id 1) with separate holding and input registers; it notes every read."""

    def __init__(self, loop: LoopThread, port: int) -> None:
        self.loop = loop
        self.port = port
        self.server: ModbusTcpServer | None = None
        self.reads: list[tuple[float, int, int, int]] = []  # (monotonic time, function code, address, count)

    def start(self) -> None:
        self.loop.run(self._start())

    async def _start(self) -> None:
        async def note(function: int, _start: int, address: int, count: int, _regs: list[int], _set: Any) -> None:
            self.reads.append((time.monotonic(), function, address, count))

        def block(blocks: dict[int, list[int]]) -> list[SimData]:
            return [SimData(address, values=regs, datatype=DataType.REGISTERS) for address, regs in blocks.items()]

        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        device = SimDevice(1, simdata=(bits, bits, block(HOLDING), block(INPUT)), action=note)
        self.server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)

    def stop(self) -> None:
        if self.server is not None:
            self.loop.run(self.server.shutdown())
            self.server = None

    def poll_starts(self, since: float) -> list[float]:
        """When each poll began: its first read is the holding block at 0."""
        return [at for at, function, address, _ in list(self.reads) if (function, address) == (3, 0) and at >= since]


@pytest.fixture
def modbus_device(devices: LoopThread) -> Iterator[ModbusDevice]:
    device = ModbusDevice(devices, free_port())
    device.start()
    yield device
    device.stop()


def modbus_source(port: int, poll_ms: int = 250) -> dict[str, Any]:
    return {
        "name": "press-mb",
        "type": "modbus",
        "port": port,
        "poll_ms": poll_ms,
        "identity": {"tenant_id": "t1", "factory_id": "f1", "machine_id": "press-1"},
        "registers": [
            {"address": 0, "type": "float32", "metric": "temp", "sensor_id": "mb-temp", "unit": "degC",
             "scale": 2.0, "offset": -3.0},
            {"address": 2, "type": "int16", "metric": "outdoor_temp", "sensor_id": "mb-out", "scale": 0.25},
            {"address": 3, "type": "uint16", "metric": "speed", "sensor_id": "mb-speed", "scale": 0.5, "offset": 10},
            {"address": 10, "type": "uint32", "word_order": "little", "metric": "count_total", "sensor_id": "mb-count",
             "identity": {"machine_id": "press-2"}},
            {"address": 0, "kind": "input", "type": "int32", "metric": "humidity", "sensor_id": "mb-hum",
             "offset": 50},
            {"address": 2, "kind": "input", "type": "float32", "word_order": "little", "metric": "pressure",
             "sensor_id": "mb-press", "scale": 100},
        ],
    }  # fmt: skip


def test_modbus_to_kafka_exact_messages(kafka_brokers: str, modbus_device: ModbusDevice, tmp_path: Path) -> None:
    assert words(">f", 21.5) == HOLDING[0][:2] and words(">f", 3.75, "little") == INPUT[0][2:]
    prefix = edge_prefix(kafka_brokers)
    # one poll a minute: the test sees exactly one
    config = agent_config(kafka_brokers, prefix, tmp_path / "q.db", [modbus_source(modbus_device.port, 60_000)])
    started = datetime.now(UTC)
    with running_agent(config) as agent:
        source = agent.sources[0]
        wait_for(lambda: source.polls >= 1, 30, "a poll")
        messages = read_topic(kafka_brokers, prefix + SENSORS, expect=6)
        assert interval_metric(agent, "press-mb") == 60.0
    finished = datetime.now(UTC)

    # registers that touch are read together, the gap 4-9 is not read across
    assert [(function, address, count) for _, function, address, count in modbus_device.reads] == [
        (3, 0, 4),
        (3, 10, 2),
        (4, 0, 4),
    ]
    polled_at = decoded(messages)[0]["time"]
    assert time_text(started) <= polled_at <= time_text(finished)

    def expect(machine: str, sensor: str, metric: str, value: float, unit: str | None = None) -> tuple[bytes, dict]:
        payload = {
            "time": polled_at,
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": machine,
            "sensor_id": sensor,
            "metric": metric,
            "value": value,
            "payload": {"source": "press-mb"},
        }
        if unit:
            payload["unit"] = unit
        return f"t1-f1-{machine}".encode(), payload

    received = {
        orjson.loads(m.value())["sensor_id"]: (m.key(), without_event_id(orjson.loads(m.value()))) for m in messages
    }
    assert len(messages) == 6
    assert received == {
        "mb-temp": expect("press-1", "mb-temp", "temp", 40.0, "degC"),  # float32 21.5 × 2 − 3
        "mb-out": expect("press-1", "mb-out", "outdoor_temp", -25.0),  # int16 −100 × 0.25
        "mb-speed": expect("press-1", "mb-speed", "speed", 627.0),  # uint16 1234 × 0.5 + 10
        "mb-count": expect("press-2", "mb-count", "count_total", 100000.0),  # uint32, low word first
        "mb-hum": expect("press-1", "mb-hum", "humidity", 45.0),  # int32 −5 + 50
        "mb-press": expect("press-1", "mb-press", "pressure", 375.0),  # float32 3.75, low word first, × 100
    }


def test_modbus_backpressure_slows_polling(kafka_brokers: str, modbus_device: ModbusDevice, tmp_path: Path) -> None:
    """Slow: one poll every 2 s (250 ms × 8), measured at the device; normal again: every 250 ms,
    starting at once rather than after the slow wait."""
    prefix = edge_prefix(kafka_brokers)
    config = agent_config(kafka_brokers, prefix, tmp_path / "q.db", [modbus_source(modbus_device.port)])
    with running_agent(config) as agent:
        source = agent.sources[0]
        wait_for(lambda: source.polls >= 2, 30, "two polls")
        assert interval_metric(agent, "press-mb") == 0.25
        normal = gaps(modbus_device.poll_starts(0.0))
        assert all(0.15 <= gap <= 0.5 for gap in normal), normal

        slow_down(agent, True)
        wait_for(lambda: interval_metric(agent, "press-mb") == 2.0, 60, "the interval metric to switch")
        since = time.monotonic()
        wait_for(lambda: len(modbus_device.poll_starts(since)) >= 3, 60, "three polls while slowed down")
        slow = gaps(modbus_device.poll_starts(since))
        assert all(1.8 <= gap <= 2.6 for gap in slow), slow

        slow_down(agent, False)
        wait_for(lambda: interval_metric(agent, "press-mb") == 0.25, 60, "the interval metric to switch back")
        since = time.monotonic()
        wait_for(lambda: len(modbus_device.poll_starts(since)) >= 5, 60, "five polls at normal speed")
        fast = gaps(modbus_device.poll_starts(since))
        assert all(0.15 <= gap <= 0.5 for gap in fast), fast
        assert modbus_device.poll_starts(since)[0] - since < 0.5  # the slow wait was cut short


def gaps(starts: list[float]) -> list[float]:
    return [b - a for a, b in pairwise(starts)]


def test_modbus_reconnects_when_the_device_restarts(
    kafka_brokers: str, modbus_device: ModbusDevice, tmp_path: Path
) -> None:
    prefix = edge_prefix(kafka_brokers)
    config = agent_config(kafka_brokers, prefix, tmp_path / "q.db", [modbus_source(modbus_device.port)])
    with running_agent(config) as agent:
        source = agent.sources[0]

        def queued() -> float:
            return agent.engine.metrics.snapshot().get("edge_agent_queued_total", 0)

        wait_for(lambda: source.polls >= 1 and source.connected.is_set(), 30, "a poll")
        modbus_device.stop()
        wait_for(lambda: not source.connected.is_set(), 30, "the agent to notice the device is gone")
        before = queued()
        modbus_device.start()
        wait_for(source.connected.is_set, 60, "the agent to reconnect")
        wait_for(lambda: queued() >= before + 12, 60, "two more polls' readings (6 each) queued")
