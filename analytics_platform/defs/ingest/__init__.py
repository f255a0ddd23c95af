"""Kafka-draining sensors and the hourly raw assets they fill (built in definitions.py).

The raw assets' keys are declared here, once, so the folders computing from raw readings name
their inputs through `raw_asset_key` without importing how ingest is built.
"""

from collections.abc import Sequence

import dagster as dg

from analytics_platform.contracts.registry import registry
from analytics_platform.settings import PlatformSettings


def raw_asset_key(domain: str) -> dg.AssetKey:
    """The raw asset of `domain`, named after its contract's raw table."""
    return dg.AssetKey(registry().get(domain).raw_table)


def raw_asset_keys(settings: PlatformSettings, domains: Sequence[str]) -> list[dg.AssetKey]:
    """The raw assets of those of `domains` that are enabled: an asset reading an optional domain
    (run states from device health) simply has one input fewer when it is off."""
    return [raw_asset_key(domain) for domain in domains if domain in settings.domains_enabled]
