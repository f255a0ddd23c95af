"""One agent process: the engine thread, the sources on an asyncio loop, the metrics endpoint.

Shutdown (SIGTERM / SIGINT) is graceful: the sources stop first (MQTT disconnects keeping its
session, HTTP stops accepting), then the engine takes in what was handed over, tries to deliver the
queue for `shutdown_timeout_s` and leaves the rest in the queue file for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from prometheus_client import start_http_server

from edge_agents.config import AgentConfig
from edge_agents.engine import Engine
from edge_agents.sources import build
from edge_agents.sources.base import BACKOFF_S, Source, sleep_or_stop

log = logging.getLogger("edge_agents.agent")


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.engine = Engine(config)
        self.sources: list[Source] = [build(s, self.engine) for s in config.sources]
        self.stop_event: asyncio.Event | None = None
        self._metrics_server: Any = None

    async def run(self, install_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        self.stop_event = stop = asyncio.Event()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)

        def on_backpressure(slow: bool) -> None:
            for source in self.sources:
                loop.call_soon_threadsafe(source.set_slow, slow)

        self.engine.on_backpressure.append(on_backpressure)
        self.engine.on_crash.append(lambda: loop.call_soon_threadsafe(stop.set))
        if self.config.metrics.port:
            try:
                self._metrics_server, _ = start_http_server(
                    self.config.metrics.port, self.config.metrics.host, registry=self.engine.metrics.registry
                )
            except OSError as exc:
                raise OSError(
                    f"metrics port {self.config.metrics.host}:{self.config.metrics.port}: {exc.strerror}; "
                    "set metrics.port to a free port (0 turns the endpoint off)"
                ) from None
            log.info("metrics on http://%s:%d/metrics", self.config.metrics.host, self.config.metrics.port)
        self.engine.start()
        log.info(
            "edge agent %s: %d source(s) -> %s", self.config.agent_id, len(self.sources), self.config.kafka.brokers
        )
        tasks = [asyncio.create_task(self._keep_running(s, stop), name=s.name) for s in self.sources]
        try:
            await stop.wait()
        finally:
            log.info("stopping: sources first, then the queue")
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(self.engine.stop)
            if self._metrics_server is not None:
                self._metrics_server.shutdown()

    async def _keep_running(self, source: Source, stop: asyncio.Event) -> None:
        """A source that fails is restarted with backoff; one bad connector never stops the others."""
        failures = 0
        while not stop.is_set():
            try:
                await source.run(stop)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                log.warning(
                    "source %s failed (%s: %s); restarting in %d s", source.name, type(exc).__name__, exc, delay
                )
                await sleep_or_stop(stop, delay)
