"""Kafka-draining sensors and the hourly raw assets they fill (built in definitions.py).

The raw assets' keys are declared here, once, so the folders computing from raw readings name
their inputs through `raw_asset_key` without importing how ingest is built.
"""

from collections.abc import Sequence

import dagster as dg

from analytics_platform.contracts.base import Contract
from analytics_platform.settings import PlatformSettings


def raw_asset_key(contract: Contract | type[Contract]) -> dg.AssetKey:
    """The raw asset of a domain, named after its contract's raw table. It takes the contract, not
    the domain's name: a domain registered by DOMAIN_MODULES is not in the default registry."""
    return dg.AssetKey(contract.raw_table)


def raw_asset_keys(settings: PlatformSettings, contracts: Sequence[type[Contract]]) -> list[dg.AssetKey]:
    """The raw assets of those of `contracts` whose domains are enabled: an asset reading an optional
    domain (run states from device health) simply has one input fewer when it is off."""
    return [raw_asset_key(c) for c in contracts if c.domain in settings.domains_enabled]
