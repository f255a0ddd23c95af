"""The asset checks by name: what each verifies, and which assets carry which.

Dagster needs the check names when the definitions are built, long before any frame exists, so
they live here, apart from the suites (and from Great Expectations, which is only imported when
a frame is validated). Whether a check blocks is configuration (config/checks.yaml `blocking:`).
"""

from __future__ import annotations

from analytics_platform.contracts.base import Contract
from analytics_platform.contracts.errors import ConfigError
from analytics_platform.data_quality.raw_profile import CHECK_NAMES, RANGE_CHECK_NAMES

DESCRIPTIONS: dict[str, str] = {
    "keys_not_null": "every row has its time and key columns",
    "time_in_partition": "every row's time lies inside the partition's hour",
    "values_finite": "every value is a finite number",
    "reject_ratio": "rejected messages stay below the reject-ratio threshold",
    "values_in_range": "every reading lies within its metric's plausible [min, max] (contracts/metrics.yaml)",
    "units_match": "every reading is in its metric's canonical unit (contracts/metrics.yaml)",
    "completeness": "each machine sent at least the configured share of the readings expected of its series",
    "schema": "the result table has the contract's columns and types, and no written row has a NULL key",
    "unique_keys": "the natural key of every written row is unique",
    "reconciliation": "the counts of the finest buckets add up to the count of each coarser bucket they tile",
    "result_ranges": "derived values lie in their plausible ranges (config/checks.yaml result_ranges)",
}

# result assets: schema and uniqueness everywhere, reconciliation where buckets tile each other
RESULT_CHECKS = ("schema", "unique_keys", "reconciliation", "result_ranges")
RESULT_CHECKS_NO_BUCKETS = ("schema", "unique_keys", "result_ranges")


def raw_check_names(contract: Contract) -> tuple[str, ...]:
    """The checks of a raw asset: the four raw-contract checks every domain has, then those its
    contract declares (`quality_checks`: the metric-value contracts for rows that carry a metric
    and a value, completeness for a domain sent at a steady cadence). Raises ConfigError for a
    check the platform does not know or a metric-value check without a `range_column`."""
    unknown = [n for n in contract.quality_checks if n not in DESCRIPTIONS or n in CHECK_NAMES]
    if unknown:
        raise ConfigError(f"domain {contract.domain!r} declares unknown raw check(s) {unknown}")
    if contract.range_column is None and set(RANGE_CHECK_NAMES) & set(contract.quality_checks):
        raise ConfigError(f"domain {contract.domain!r} declares {list(RANGE_CHECK_NAMES)} without a range_column")
    return (*CHECK_NAMES, *contract.quality_checks)


def describe(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """name -> description for `names`, in their order."""
    return {name: DESCRIPTIONS[name] for name in names}
