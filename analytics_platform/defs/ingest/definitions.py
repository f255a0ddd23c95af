"""Ingest definitions: landing, one raw asset + one drain sensor per enabled domain."""

from __future__ import annotations

import dagster as dg

from analytics_platform.contracts.registry import bind_domains
from analytics_platform.defs.ingest.assets import build_raw_asset, kafka_landing
from analytics_platform.defs.ingest.sensors import build_drain_sensor
from analytics_platform.settings import PlatformSettings


def build_defs(settings: PlatformSettings) -> dg.Definitions:
    bindings = bind_domains(settings)
    return dg.Definitions(
        assets=[kafka_landing, *(build_raw_asset(b, settings) for b in bindings)],
        sensors=[build_drain_sensor(b, settings) for b in bindings],
    )
