"""What every source shares: the engine to hand payloads to, its identity defaults, its rate."""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any

from edge_agents.canonical import time_text
from edge_agents.config import Identity
from edge_agents.engine import Engine

BACKOFF_S = (1, 2, 5, 10, 30)  # reconnect delays, the last one repeated
WARN_EVERY_S = 60.0


class Source(ABC):
    """One configured input. `run` lives on the agent's event loop until `stop` is set; it must
    survive its server going away (reconnect with backoff) rather than end. `set_slow` is called on
    the same event loop when backpressure switches."""

    def __init__(self, config: Any, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.name: str = config.name
        self.slow = False
        self.connected = asyncio.Event()
        self.log = logging.getLogger(f"edge_agents.sources.{config.type}")
        self._last_warning: dict[str, float] = {}

    @abstractmethod
    async def run(self, stop: asyncio.Event) -> None: ...

    def set_slow(self, slow: bool) -> None:
        self.slow = slow

    def set_connected(self, connected: bool) -> None:
        """`connected` and edge_agent_source_connected; call on the event loop."""
        if connected:
            self.connected.set()
        else:
            self.connected.clear()
        self.engine.metrics.source_connected.labels(self.name).set(1 if connected else 0)

    def warn_rarely(self, topic: str, message: str, first: bool = False) -> None:
        """At most one warning a minute per topic (the rest at debug): a dead server retried every
        second, or a device polled every 250 ms, must not flood the log."""
        now = time.monotonic()
        if first or now - self._last_warning.get(topic, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._last_warning[topic] = now
            self.log.warning("%s", message)
        else:
            self.log.debug("%s", message)

    def set_interval(self, seconds: float) -> None:
        """Publish the current sampling / poll interval (edge_agent_source_interval_seconds)."""
        self.engine.metrics.source_interval.labels(self.name).set(seconds)


def sensor_payload(
    identity: Identity,
    *,
    sensor_id: str,
    metric: str,
    value: float,
    time: datetime,
    unit: str | None = None,
    source: str,
) -> dict[str, Any]:
    """A canonical `sensors.device.readings` payload (`analytics_platform.contracts.sensor`); the
    contract checks the rest."""
    payload: dict[str, Any] = {
        "time": time_text(time),
        "tenant_id": identity.tenant_id,
        "factory_id": identity.factory_id,
        "machine_id": identity.machine_id,
        "sensor_id": sensor_id,
        "metric": metric,
        "value": value,
        "payload": {"source": source},
    }
    if unit is not None:
        payload["unit"] = unit
    return payload


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` or until stop; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
