"""OPC-UA subscription (asyncua): configured nodes → canonical sensor readings.

The server pushes changes: one subscription whose publishing interval equals the sampling interval,
one monitored item per configured node with queue size 1, so each publish carries at most the
latest sample of every node. A reading's time is the value's source timestamp (when the device
measured it), not when it arrived, so a value the server re-sends after a reconnect carries the
same time and therefore the same content-derived `event_id` as the first copy.

Under backpressure the sampling slows to `slow_sampling_ms` on the live subscription: first the
standard way (ModifySubscription + ModifyMonitoredItems), and when the server does not honour
ModifySubscription (asyncua's own server, for one, keeps the old publishing interval) by creating
a new subscription at the slow interval before deleting the old one, so no change is missed.

The connection is the source's own (asyncua's auto-reconnect is off): when it is lost, the client
is thrown away and a new one connects with backoff; the subscription is created afresh at whatever
interval is current, and the server sends every node's current value again.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import Client, Node, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeNotif, Subscription

from analytics_platform.contracts.sensor import SensorContract
from edge_agents.config import OPCUANode
from edge_agents.config import OPCUASource as OPCUAConfig
from edge_agents.engine import Engine
from edge_agents.sources.base import BACKOFF_S, Source, sensor_payload, sleep_or_stop

_REQUEST_TIMEOUT_S = 10.0
_CHECK_S = 0.1  # how often the session loop looks at stop / connection state / a requested re-tune


@dataclass
class _Live:
    """The subscription currently delivering, with what the server made of the requested interval."""

    subscription: Subscription
    interval_ms: float  # requested sampling = publishing interval
    monitored: dict[int, int]  # client handle -> server's monitored item id
    publishing_ms: float | None = None  # revised by the server (None: as requested at creation)
    sampling_ms: dict[int, float] | None = None  # revised per monitored item, when known


class _Handler:
    """asyncua calls this in a task of its own per notification, on the agent's loop."""

    def __init__(self, source: OPCUASource) -> None:
        self.source = source

    def datachange_notification(self, _node: Node, _value: Any, data: DataChangeNotif) -> None:
        item = data.monitored_item
        self.source._on_change(item.ClientHandle, item.Value)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        self.source.log.info("opcua %s: subscription status changed to %s", self.source.name, status.Status)


class OPCUASource(Source):
    config: OPCUAConfig

    def __init__(self, config: OPCUAConfig, engine: Engine) -> None:
        super().__init__(config, engine)
        # a malformed node id is a configuration error: fail at start, not at every reconnect
        try:
            self._node_ids = [ua.NodeId.from_string(node.node_id) for node in config.nodes]
        except (ValueError, ua.UaError) as exc:
            raise ValueError(f"opcua source {config.name}: bad node_id: {exc}") from None
        self._identities = [config.identity.merged(node.identity) for node in config.nodes]
        self.live: _Live | None = None
        self._retune = False
        self._pending: list[dict[str, Any]] = []
        self._flush_scheduled = False
        self._failures = 0

    @property
    def interval_ms(self) -> int:
        return self.config.slow_sampling_ms if self.slow else self.config.sampling_ms

    def set_slow(self, slow: bool) -> None:
        super().set_slow(slow)
        self._retune = True  # applied by the session loop, which owns the client
        self.set_interval(self.interval_ms / 1000)
        self.log.info("opcua %s: sampling every %d ms%s", self.name, self.interval_ms, " (slowed down)" if slow else "")

    # ----- connection life cycle ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.set_interval(self.interval_ms / 1000)
        while not stop.is_set():
            try:
                await self._session(stop)
            except Exception as exc:
                delay = BACKOFF_S[min(self._failures, len(BACKOFF_S) - 1)]
                self._failures += 1
                self._outage_log(f"{type(exc).__name__}: {exc}", delay)
            else:
                return
            if await sleep_or_stop(stop, delay):
                return

    def _outage_log(self, problem: str, delay: float) -> None:
        self.warn_rarely(
            "connection",
            f"opcua {self.name}: {self.config.endpoint} ({problem}; attempt {self._failures}); "
            f"reconnecting in {delay} s",
            first=self._failures == 1,
        )

    async def _session(self, stop: asyncio.Event) -> None:
        config = self.config
        client = Client(config.endpoint, timeout=_REQUEST_TIMEOUT_S)
        if config.username:
            client.set_user(config.username)
        if config.password:
            client.set_password(config.password)
        if config.security:
            await client.set_security_string(config.security)
        lost = asyncio.Event()

        async def on_lost(_exc: Exception) -> None:
            lost.set()

        client.connection_lost_callback = on_lost
        await client.connect()
        try:
            self._retune = False
            self.live = await self._subscribe(client, self.interval_ms)
            if self._failures:
                self.log.info("opcua %s: connected again after %d failed attempts", self.name, self._failures)
            else:
                self.log.info("opcua %s: connected to %s", self.name, config.endpoint)
            self._failures = 0
            self.set_connected(True)
            while not await sleep_or_stop(stop, _CHECK_S):
                if lost.is_set() or client.state is not UaClientState.CONNECTED:
                    raise ConnectionError("connection to the server lost")
                if self._retune:
                    self._retune = False
                    self.live = await self._apply_interval(client, self.live)
        finally:
            self.set_connected(False)
            self.live = None
            with suppress(Exception):
                await asyncio.wait_for(client.disconnect(), _REQUEST_TIMEOUT_S)

    # ----- subscription ----------------------------------------------------------------------------

    async def _subscribe(self, client: Client, interval_ms: float) -> _Live:
        """A subscription at `interval_ms` with every configured node; fails when no node can be monitored."""
        subscription = await client.create_subscription(float(interval_ms), _Handler(self))
        requests = [self._item_request(handle, interval_ms) for handle in range(1, len(self._node_ids) + 1)]
        results = await subscription.create_monitored_items(requests)
        monitored: dict[int, int] = {}
        for handle, (node, result) in enumerate(zip(self.config.nodes, results, strict=True), start=1):
            if isinstance(result, ua.StatusCode):
                self.log.warning("opcua %s: node %s cannot be monitored: %s", self.name, node.node_id, result.name)
            else:
                monitored[handle] = result
        if not monitored:
            with suppress(Exception):
                await subscription.delete()
            raise RuntimeError("none of the configured nodes can be monitored")
        return _Live(subscription, float(interval_ms), monitored)

    def _item_request(self, handle: int, interval_ms: float) -> ua.MonitoredItemCreateRequest:
        read = ua.ReadValueId()
        read.NodeId = self._node_ids[handle - 1]
        read.AttributeId = ua.AttributeIds.Value
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = read
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = self._monitoring(handle, interval_ms)
        return request

    @staticmethod
    def _monitoring(handle: int, interval_ms: float) -> ua.MonitoringParameters:
        # the client handle is the node's place in the config (from 1): notifications map back to it
        params = ua.MonitoringParameters()
        params.ClientHandle = handle
        params.SamplingInterval = float(interval_ms)
        params.QueueSize = 1  # the latest sample per publish: slowing down really sends less
        params.DiscardOldest = True
        return params

    async def _apply_interval(self, client: Client, live: _Live) -> _Live:
        """Move the live subscription to the current interval (see the module docstring)."""
        wanted = float(self.interval_ms)
        if wanted == live.interval_ms:
            return live
        subscription = live.subscription
        modify = ua.ModifySubscriptionParameters()
        modify.SubscriptionId = subscription.subscription_id
        modify.RequestedPublishingInterval = wanted
        modify.RequestedLifetimeCount = subscription.parameters.RequestedLifetimeCount
        modify.RequestedMaxKeepAliveCount = client.get_keepalive_count(wanted)
        modify.MaxNotificationsPerPublish = subscription.parameters.MaxNotificationsPerPublish
        modify.Priority = subscription.parameters.Priority
        try:
            revised = (await subscription.update(modify)).RevisedPublishingInterval
        except ua.UaStatusCodeError as exc:
            self.log.info("opcua %s: ModifySubscription refused (%s)", self.name, exc)
            revised = None
        if revised != wanted:
            # the server kept (or chose) another publishing interval: a new subscription gets ours
            fresh = await self._subscribe(client, wanted)
            with suppress(Exception):
                await subscription.delete()
            self.log.info(
                "opcua %s: the server answered ModifySubscription with %s ms for %s ms; "
                "moved to a new subscription at %s ms",
                self.name,
                revised,
                wanted,
                wanted,
            )
            return fresh
        items = ua.ModifyMonitoredItemsParameters()
        items.SubscriptionId = subscription.subscription_id
        items.TimestampsToReturn = ua.TimestampsToReturn.Both
        for handle, item_id in live.monitored.items():
            request = ua.MonitoredItemModifyRequest()
            request.MonitoredItemId = item_id
            request.RequestedParameters = self._monitoring(handle, wanted)
            items.ItemsToModify.append(request)
        results = await subscription.server.modify_monitored_items(items)
        sampling: dict[int, float] = {}
        for handle, result in zip(live.monitored, results, strict=True):
            if result.StatusCode.is_good():
                sampling[handle] = result.RevisedSamplingInterval
            else:
                self.log.warning(
                    "opcua %s: node %s kept its sampling interval: %s",
                    self.name,
                    self.config.nodes[handle - 1].node_id,
                    result.StatusCode.name,
                )
        self.log.info(
            "opcua %s: subscription %s now publishes every %s ms, samples every %s ms",
            self.name,
            subscription.subscription_id,
            revised,
            sorted(set(sampling.values())),
        )
        return _Live(subscription, wanted, live.monitored, publishing_ms=revised, sampling_ms=sampling)

    # ----- notifications ---------------------------------------------------------------------------

    def _on_change(self, handle: int, value: ua.DataValue | None) -> None:
        if not 1 <= handle <= len(self.config.nodes) or value is None:
            return
        node = self.config.nodes[handle - 1]
        raw = value.Value.Value if value.Value is not None else None
        status = value.StatusCode
        if status is not None and not status.is_good():
            self._reject(node, raw, "bad_status", f"status {status.name}")
            return
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            self._reject(node, raw, "wrong_type", f"value is {type(raw).__name__}, not a number")
            return
        if not math.isfinite(raw):
            self._reject(node, raw, "non_finite", "value is not finite")
            return
        stamp = value.SourceTimestamp or value.ServerTimestamp or datetime.now(UTC)
        if stamp.tzinfo is None:  # OPC-UA times are UTC
            stamp = stamp.replace(tzinfo=UTC)
        self._pending.append(
            sensor_payload(
                self._identities[handle - 1],
                sensor_id=node.sensor_id,
                metric=node.metric,
                value=raw * node.scale + node.offset,
                time=stamp,
                unit=node.unit,
                source=self.name,
            )
        )
        if not self._flush_scheduled:
            # every notification of one publish is already scheduled: they all land in one batch
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        payloads, self._pending = self._pending, []
        if payloads:
            self.engine.submit(self.name, SensorContract.domain, payloads)

    def _reject(self, node: OPCUANode, raw: Any, reason: str, detail: str) -> None:
        self.engine.reject(
            self.name, SensorContract.domain, f"{node.node_id}={raw!r}".encode(), reason, f"{node.node_id}: {detail}"
        )
