"""Ingest definitions: landing, one raw asset per enabled domain, and its drain sensors (one per shard)."""

from __future__ import annotations

import dagster as dg

from analytics_platform.contracts.registry import bind_domains, registry
from analytics_platform.defs.ingest import raw_asset_key
from analytics_platform.defs.ingest.assets import build_raw_asset, kafka_landing
from analytics_platform.defs.ingest.sensors import build_drain_sensor, build_rederivation_sensor
from analytics_platform.settings import PlatformSettings


def build_defs(settings: PlatformSettings) -> dg.Definitions:
    bindings = bind_domains(settings)
    return dg.Definitions(
        assets=[kafka_landing, *(build_raw_asset(b, settings) for b in bindings)],
        sensors=[*drain_sensors(settings), build_rederivation_sensor(bindings, settings, interval_s=30)],
    )


def materialised_keys() -> set[dg.AssetKey]:
    """Every asset this folder materialises with all its domains enabled: the names CHECKS_CONFIG
    `freshness:` entries may use."""
    return {raw_asset_key(contract) for contract in registry().contracts.values()}


def drain_sensors(settings: PlatformSettings) -> list[dg.SensorDefinition]:
    """The drain sensors of the shards this code location runs (DRAIN_SHARDS_HERE)."""
    return [
        build_drain_sensor(binding, settings, shard)
        for binding in bind_domains(settings)
        for shard in settings.drain_shards_run_here()
    ]
