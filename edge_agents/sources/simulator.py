"""The plant simulator as a source: realistic canonical traffic without any hardware."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson

from edge_agents.config import SimulatorSource as SimulatorConfigModel
from edge_agents.engine import Engine
from edge_agents.simulator import HEALTH_TOPIC, LAB_TOPIC, SENSOR_TOPIC, SWEEP_TOPIC, PlantSimulator, SimulatorConfig
from edge_agents.sources.base import Source, sleep_or_stop

_DOMAIN = {SENSOR_TOPIC: "sensor", HEALTH_TOPIC: "device", SWEEP_TOPIC: "sweep", LAB_TOPIC: "lab"}
_TICK_S = 0.05


class SimulatorSource(Source):
    config: SimulatorConfigModel

    def __init__(self, config: SimulatorConfigModel, engine: Engine) -> None:
        super().__init__(config, engine)
        self.simulator = PlantSimulator(
            SimulatorConfig(
                tenants=config.tenants,
                factories=config.factories,
                machines=config.machines,
                rate=config.rate,
                seed=config.seed,
            )
        )

    @property
    def rate(self) -> float:
        return self.config.rate / self.config.slow_factor if self.slow else self.config.rate

    async def run(self, stop: asyncio.Event) -> None:
        self.set_interval(1.0 / self.rate)
        carry = 0.0
        next_tick = time.monotonic()
        while not stop.is_set():
            carry += self.rate * _TICK_S
            count, carry = int(carry), carry - int(carry)
            batches: dict[str, list[dict]] = {}
            for message in self.simulator.messages(datetime.now(UTC), count):
                batches.setdefault(_DOMAIN[message.topic], []).append(orjson.loads(message.value))
            for domain, payloads in batches.items():
                self.engine.submit(self.name, domain, payloads)
            next_tick += _TICK_S
            if await sleep_or_stop(stop, max(0.0, next_tick - time.monotonic())):
                return

    def set_slow(self, slow: bool) -> None:
        super().set_slow(slow)
        self.set_interval(1.0 / self.rate)
        self.log.info("simulator %s: %.1f messages/s", self.name, self.rate)
