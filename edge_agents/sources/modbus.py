"""Modbus TCP polling (pymodbus): configured registers → canonical sensor readings.

Every `poll_ms` (× `slow_factor` under backpressure) the source reads all registers and submits
one batch stamped with the poll time. Registers of the same kind whose addresses touch or overlap
are read together (at most 125 words, the protocol's limit), so a block of 20 consecutive
registers costs one request; registers with gaps between them are read separately, because a
device may refuse a read that spans addresses it does not have.

Polling is fixed-rate: a poll that takes too long skips the missed ticks rather than catching up.
A device that answers with a Modbus exception (say, an illegal address) is a configuration
problem: that block is skipped and logged, the rest keeps coming. A connection or timeout error
closes the client and reconnects with backoff; the source never ends on its own.
"""

from __future__ import annotations

import asyncio
import math
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from analytics_platform.contracts.sensor import SensorContract
from edge_agents.config import ModbusRegister
from edge_agents.config import ModbusSource as ModbusConfig
from edge_agents.engine import Engine
from edge_agents.sources.base import BACKOFF_S, Source, sensor_payload, sleep_or_stop

WORDS = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}
_STRUCT = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i", "float32": ">f"}
MAX_READ_WORDS = 125  # registers per read request (Modbus application protocol, function 0x03/0x04)


def decode_registers(words: list[int], type: str, word_order: str) -> float:
    """Registers as the device sent them → the number. Bytes within a word are always big-endian
    (the protocol says so); `word_order` is the device's choice for 32-bit values: "big" puts the
    most significant word first (at the lower address), "little" the least significant."""
    if type not in _STRUCT:
        raise ValueError(f"unknown register type {type!r}")
    if word_order not in ("big", "little"):
        raise ValueError(f"word_order must be 'big' or 'little', not {word_order!r}")
    if len(words) != WORDS[type]:
        raise ValueError(f"{type} takes {WORDS[type]} register(s), got {len(words)}")
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise ValueError(f"registers are 16-bit unsigned: {words}")
    ordered = words if word_order == "big" else words[::-1]
    raw = b"".join(w.to_bytes(2, "big") for w in ordered)
    return float(struct.unpack(_STRUCT[type], raw)[0])


@dataclass(frozen=True)
class ReadBlock:
    """One read request: `count` registers of `kind` from `start`, and the configured registers in it."""

    kind: str
    start: int
    count: int
    registers: tuple[int, ...]  # indexes into the source's `registers`


def plan_reads(registers: list[ModbusRegister], max_words: int = MAX_READ_WORDS) -> list[ReadBlock]:
    """Group registers into as few reads as is safe (touching or overlapping addresses only)."""
    blocks: list[ReadBlock] = []
    for kind in ("holding", "input"):
        spans = sorted((r.address, r.address + WORDS[r.type], i) for i, r in enumerate(registers) if r.kind == kind)
        start = end = -1
        members: list[int] = []
        for lo, hi, index in spans:
            if members and lo <= end and max(end, hi) - start <= max_words:
                end = max(end, hi)
                members.append(index)
                continue
            if members:
                blocks.append(ReadBlock(kind, start, end - start, tuple(members)))
            start, end, members = lo, hi, [index]
        if members:
            blocks.append(ReadBlock(kind, start, end - start, tuple(members)))
    return blocks


class ModbusSource(Source):
    config: ModbusConfig

    def __init__(self, config: ModbusConfig, engine: Engine) -> None:
        super().__init__(config, engine)
        self.plan = plan_reads(config.registers)
        self._identities = [config.identity.merged(r.identity) for r in config.registers]
        self.polls = 0  # completed polls since start
        self._retune: asyncio.Event | None = None
        self._failures = 0

    @property
    def interval_s(self) -> float:
        seconds = self.config.poll_ms / 1000
        return seconds * self.config.slow_factor if self.slow else seconds

    def set_slow(self, slow: bool) -> None:
        super().set_slow(slow)
        self.set_interval(self.interval_s)
        if self._retune is not None:
            self._retune.set()  # a poll waiting out the slow interval should not wait for it to end
        self.log.info("modbus %s: polling every %.3f s%s", self.name, self.interval_s, " (slowed down)" if slow else "")

    # ----- connection life cycle ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._retune = asyncio.Event()
        self.set_interval(self.interval_s)
        config = self.config
        while not stop.is_set():
            # pymodbus' own reconnect is off (reconnect_delay=0): this loop owns backoff and logging
            client = AsyncModbusTcpClient(
                config.host, port=config.port, timeout=config.timeout_s, retries=0, reconnect_delay=0
            )
            try:
                if not await client.connect():
                    raise ConnectionError("connection refused or timed out")
                if self._failures:
                    self.log.info("modbus %s: connected again after %d failed attempts", self.name, self._failures)
                else:
                    self.log.info("modbus %s: connected to %s:%d", self.name, config.host, config.port)
                self._failures = 0
                self.set_connected(True)
                await self._poll(client, stop)
                return
            except Exception as exc:
                delay = BACKOFF_S[min(self._failures, len(BACKOFF_S) - 1)]
                self._failures += 1
                self.warn_rarely(
                    "connection",
                    f"modbus {self.name}: {config.host}:{config.port}: {type(exc).__name__}: {exc} "
                    f"(attempt {self._failures}); reconnecting in {delay} s",
                    first=self._failures == 1,
                )
            finally:
                self.set_connected(False)
                client.close()
            if await sleep_or_stop(stop, delay):
                return

    # ----- polling ---------------------------------------------------------------------------------

    async def _poll(self, client: AsyncModbusTcpClient, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        assert self._retune is not None
        while True:
            started = loop.time()
            payloads = await self._poll_once(client, datetime.now(UTC))
            if payloads:
                self.engine.submit(self.name, SensorContract.domain, payloads)
            self.polls += 1
            self._retune.clear()
            while True:
                wait = started + self.interval_s - loop.time()
                if wait <= 0:
                    break  # late: poll now, the missed ticks are skipped
                if await _sleep_or_wake(stop, self._retune, wait):
                    return
                if not self._retune.is_set():
                    break
                self._retune.clear()  # the interval changed: wait out the rest of the new one
            if stop.is_set():
                return

    async def _poll_once(self, client: AsyncModbusTcpClient, now: datetime) -> list[dict[str, Any]]:
        """Read every block once: the readings of this poll. Connection errors propagate."""
        registers = self.config.registers
        payloads: list[dict[str, Any]] = []
        for block in self.plan:
            read = client.read_holding_registers if block.kind == "holding" else client.read_input_registers
            response = await read(block.start, count=block.count, device_id=self.config.unit_id)
            if response.isError():
                self.warn_rarely(
                    f"block {block.kind}:{block.start}",
                    f"modbus {self.name}: reading {block.count} {block.kind} register(s) at {block.start} "
                    f"failed: {response}; skipping them",
                )
                continue
            words = list(response.registers)
            if len(words) < block.count:
                self.warn_rarely(
                    f"short {block.kind}:{block.start}",
                    f"modbus {self.name}: asked for {block.count} registers at {block.start}, got {len(words)}",
                )
                continue
            for index in block.registers:
                register = registers[index]
                at = register.address - block.start
                chunk = words[at : at + WORDS[register.type]]
                value = decode_registers(chunk, register.type, register.word_order)
                if not math.isfinite(value):
                    self.engine.reject(
                        self.name,
                        SensorContract.domain,
                        repr(chunk).encode(),
                        "non_finite",
                        f"{register.kind} register {register.address} ({register.type}) is not finite",
                    )
                    continue
                payloads.append(
                    sensor_payload(
                        self._identities[index],
                        sensor_id=register.sensor_id,
                        metric=register.metric,
                        value=value * register.scale + register.offset,
                        time=now,
                        unit=register.unit,
                        source=self.name,
                    )
                )
        return payloads


async def _sleep_or_wake(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, until stop (True) or until `wake` is set (False, `wake` stays set)."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return stop.is_set()
