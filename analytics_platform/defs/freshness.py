"""Freshness of the raw and result assets: Dagster's freshness checks with the lags of
config/checks.yaml (`freshness:`), and the sensor that evaluates them.

`last_update` (the asset, any partition, was updated within the lag) suits assets fed as data
arrives: the raw assets the drain reports every tick, the device events. `latest_partition`
(the newest hour's or day's partition exists `lag` minutes after its period became due) suits
assets that must keep up with the clock: the window aggregates, the KPIs, the anomalies, the day
rollups. A late backfill of an old partition does not make a `latest_partition` asset look fresh.

Dagster 1.13 marks these builders superseded by `FreshnessPolicy`, which is still a preview that
needs `freshness: enabled` in the instance config and cannot express "the newest partition"; the
builders are kept on purpose and their warning silenced here (it printed once per asset per load).
"""

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta

import dagster as dg

from analytics_platform.contracts.errors import ConfigError
from analytics_platform.data_quality.config import Freshness
from analytics_platform.defs.checks import checks_config, severity
from analytics_platform.settings import PlatformSettings

FRESHNESS_SENSOR = "freshness_checks_sensor"
FRESHNESS_INTERVAL_S = 60


def deadline_cron(partitions_def: dg.PartitionsDefinition | None, lag_minutes: int, asset: str) -> str:
    """The cron by which the newest partition must exist: `lag_minutes` past each period's start."""
    if isinstance(partitions_def, dg.HourlyPartitionsDefinition):
        if lag_minutes >= 60:
            raise ConfigError(f"CHECKS_CONFIG freshness.{asset}: an hourly asset needs lag_minutes below 60")
        return f"{lag_minutes} * * * *"
    if isinstance(partitions_def, dg.DailyPartitionsDefinition):
        return f"{lag_minutes % 60} {lag_minutes // 60} * * *"
    raise ConfigError(f"CHECKS_CONFIG freshness.{asset}: latest_partition needs an hourly or daily partitioned asset")


def freshness_checks(
    assets: Mapping[dg.AssetKey, dg.PartitionsDefinition | None], known: set[dg.AssetKey], settings: PlatformSettings
) -> list[dg.AssetChecksDefinition]:
    """One freshness check per `freshness:` entry whose asset is in `assets` (the enabled ones).
    An entry naming an asset of a disabled domain is skipped; one naming no asset of the platform
    (`known`) is a typo and an error."""
    config = checks_config(settings)
    blocking = config.blocking.of("freshness")
    level = severity(config, "freshness")
    built: list[dg.AssetChecksDefinition] = []
    with _superseded_ok():
        for name, rule in sorted(config.freshness.items()):
            built += _freshness_check(name, rule, assets, known, settings, level, blocking)
    return built


@contextmanager
def _superseded_ok() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Function `build_\w*freshness\w*` is superseded")
        yield


def _freshness_check(
    name: str,
    rule: Freshness,
    assets: Mapping[dg.AssetKey, dg.PartitionsDefinition | None],
    known: set[dg.AssetKey],
    settings: PlatformSettings,
    level: dg.AssetCheckSeverity,
    blocking: bool,
) -> Sequence[dg.AssetChecksDefinition]:
    key = dg.AssetKey(name)
    if key not in known:
        raise ConfigError(
            f"CHECKS_CONFIG file {settings.checks_config}: freshness.{name} names no asset of the platform; "
            f"known: {sorted(k.to_user_string() for k in known)}"
        )
    if key not in assets:
        return []
    if rule.mode == "last_update":
        return dg.build_last_update_freshness_checks(
            assets=[key], lower_bound_delta=timedelta(minutes=rule.lag_minutes), severity=level, blocking=blocking
        )
    return dg.build_time_partition_freshness_checks(
        assets=[key],
        deadline_cron=deadline_cron(assets[key], rule.lag_minutes, name),
        severity=level,
        blocking=blocking,
    )


def build_defs(
    settings: PlatformSettings, assets: Mapping[dg.AssetKey, dg.PartitionsDefinition | None], known: set[dg.AssetKey]
) -> dg.Definitions:
    """The freshness checks and their sensor, for the `assets` built (key -> partitions: what the
    concept folders materialise with these settings) and the names a `freshness:` entry may use
    (`known`: what the folders declare they materialise with every domain enabled)."""
    checks = freshness_checks(assets, known, settings)
    if not checks:
        return dg.Definitions()
    with _superseded_ok():
        sensor = dg.build_sensor_for_freshness_checks(
            freshness_checks=checks,
            name=FRESHNESS_SENSOR,
            minimum_interval_seconds=FRESHNESS_INTERVAL_S,
            default_status=dg.DefaultSensorStatus.RUNNING,
        )
    return dg.Definitions(asset_checks=checks, sensors=[sensor])
