"""Data contracts as Dagster asset checks: the one place asset bodies get their checks from.

Every asset that writes results declares `contract_specs(...)` and returns the `*_checks(...)`
results of the rows its partition wrote, read back from the database and judged by the Great
Expectations suites of `analytics_platform.data_quality`. Whether a check blocks comes from
config/checks.yaml: a blocking check fails with severity ERROR, so Dagster fails the step after
recording the materialization and skips the assets downstream of it in the same run; the others
fail with severity WARN and only report.

Freshness is in `defs/freshness.py` (Dagster's own freshness checks).
"""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import dagster as dg
import psycopg

from analytics_platform.contracts.errors import ConfigError
from analytics_platform.contracts.registry import DomainBinding
from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.contracts.sweep import SweepContract
from analytics_platform.data_quality import raw as raw_suites
from analytics_platform.data_quality import result_contracts as suites
from analytics_platform.data_quality import written
from analytics_platform.data_quality.checks import DESCRIPTIONS, raw_check_names
from analytics_platform.data_quality.config import ChecksConfig, cached_checks_config
from analytics_platform.data_quality.raw_profile import CHECK_NAMES, CheckOutcome, PartitionQuality, check_outcomes
from analytics_platform.data_quality.validation import merge_windows
from analytics_platform.defs.partitions import partition_key
from analytics_platform.ingest.catalog import read_limits
from analytics_platform.ingest.rederive import HOUR, hours
from analytics_platform.results.aggregates import chunks
from analytics_platform.results.events import EVENT_TYPES
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms.event_rollups import DAY_S, HOUR_S, rollup_windows


def checks_config(settings: PlatformSettings) -> ChecksConfig:
    """config/checks.yaml (CHECKS_CONFIG), parsed again only when the file changed."""
    return cached_checks_config(settings.checks_config)


def severity(config: ChecksConfig, name: str) -> dg.AssetCheckSeverity:
    """ERROR for a blocking check (its failure stops downstream), WARN for the others."""
    return dg.AssetCheckSeverity.ERROR if config.blocking.of(name) else dg.AssetCheckSeverity.WARN


def contract_specs(key: dg.AssetKey, names: Sequence[str], settings: PlatformSettings) -> list[dg.AssetCheckSpec]:
    """The check specs of `key`, blocking as configured."""
    config = checks_config(settings)
    return [
        dg.AssetCheckSpec(name, asset=key, blocking=config.blocking.of(name), description=DESCRIPTIONS[name])
        for name in names
    ]


def check_results(outcomes: Sequence[CheckOutcome], settings: PlatformSettings) -> list[dg.AssetCheckResult]:
    """Outcomes as the results an asset returns, with the configured severity."""
    config = checks_config(settings)
    return [
        dg.AssetCheckResult(
            check_name=o.name,
            passed=o.passed,
            metadata=o.metadata,
            severity=severity(config, o.name),
            description=o.description,
        )
        for o in outcomes
    ]


# ----- raw assets ---------------------------------------------------------------------------------
def raw_specs(binding: DomainBinding, key: dg.AssetKey, settings: PlatformSettings) -> list[dg.AssetCheckSpec]:
    """A raw asset's checks (quality.checks.raw_check_names): its contract declares which apply."""
    names = raw_check_names(binding.contract)
    if len(names) > len(CHECK_NAMES) and binding.domain not in _METRIC_SUITES:
        raise ConfigError(
            f"domain {binding.domain!r} declares {names[len(CHECK_NAMES) :]} but has no suite judging them"
        )
    return contract_specs(key, names, settings)


def raw_checks(
    conn: psycopg.Connection,
    binding: DomainBinding,
    settings: PlatformSettings,
    quality: PartitionQuality,
    start: datetime,
    end: datetime,
) -> list[dg.AssetCheckResult]:
    """The raw-contract checks from the re-derivation's counts, plus the metric-value contracts
    (and completeness) of the re-derived rows, judged by GX."""
    config = checks_config(settings)
    outcomes = check_outcomes(quality, config.reject_ratio_max(settings.reject_ratio_max))
    suite = _METRIC_SUITES.get(binding.domain)
    if suite is not None:
        # hour by hour, as re-derived: a range run never holds more than an hour of readings
        outcomes += merge_windows(
            [(partition_key(hour), suite(conn, settings, config, hour, hour + HOUR)) for hour in hours(start, end)]
        )
    return check_results(outcomes, settings)


def _sensor_suite(
    conn: psycopg.Connection, settings: PlatformSettings, config: ChecksConfig, start: datetime, end: datetime
) -> list[CheckOutcome]:
    return raw_suites.sensor_outcomes(
        written.read_sensor_readings(conn, start, end),
        written.read_previous_series(conn, start),
        read_limits(conn),
        config,
        start=start,
        end=end,
        as_of=datetime.now(UTC),
    )


def _sweep_suite(
    conn: psycopg.Connection, settings: PlatformSettings, config: ChecksConfig, start: datetime, end: datetime
) -> list[CheckOutcome]:
    return raw_suites.sweep_outcomes(written.read_sweep_readings(conn, start, end), read_limits(conn), config)


# the suites reading the rows of the domains whose contracts declare checks beyond the raw four
_METRIC_SUITES: dict[str, Callable[..., list[CheckOutcome]]] = {
    SensorContract.domain: _sensor_suite,
    SweepContract.domain: _sweep_suite,
}


# ----- result assets ------------------------------------------------------------------------------
def aggregate_checks(
    conn: psycopg.Connection, settings: PlatformSettings, start: datetime, end: datetime
) -> list[dg.AssetCheckResult]:
    """Every bucket overlapping [start, end), as the aggregates asset rewrote them."""
    limits = read_limits(conn)
    ranges = checks_config(settings).result_ranges
    parts = []
    # in the asset's own chunks (AGG_CHUNK_HOURS): bounded memory for a long backfill
    for chunk_start, chunk_end in chunks(start, end, settings.agg_chunk_hours):
        rows, columns = written.read_written_grouped(
            conn, suites.AGG, suites.SERIES, "bucket_start < %s AND bucket_end > %s", (chunk_end, chunk_start)
        )
        found = suites.aggregate_outcomes(rows, columns, limits, ranges, start=chunk_start, end=chunk_end)
        parts.append((partition_key(chunk_start), found))
    return check_results(merge_windows(parts), settings)


def lab_aggregate_checks(
    conn: psycopg.Connection, settings: PlatformSettings, start: datetime, end: datetime
) -> list[dg.AssetCheckResult]:
    """Every lab bucket overlapping [start, end), as the lab aggregates asset rewrote them."""
    rows, columns = written.read_written(conn, suites.LAB_AGG, "bucket_start < %s AND bucket_end > %s", (end, start))
    ranges = checks_config(settings).result_ranges
    return check_results(suites.lab_aggregate_outcomes(rows, columns, ranges, start=start, end=end), settings)


def event_checks(
    conn: psycopg.Connection, settings: PlatformSettings, domain: str, start: datetime, end: datetime
) -> list[dg.AssetCheckResult]:
    """`domain`'s events whose time is in [start, end) and its rollups of those hours."""
    events, event_columns = written.read_written(
        conn, suites.EVENT, "domain = %s AND time >= %s AND time < %s", (domain, start, end)
    )
    rollups, rollup_columns = written.read_written(
        conn,
        suites.ROLLUP,
        "event_type = ANY(%s) AND window_s = ANY(%s) AND bucket_start >= %s AND bucket_start < %s",
        (list(EVENT_TYPES[domain]), rollup_windows(settings.windows), start, end),
    )
    ranges = checks_config(settings).result_ranges
    found = suites.event_outcomes(events, rollups, event_columns, rollup_columns, ranges, start=start, end=end)
    return check_results(found, settings)


def daily_rollup_checks(
    conn: psycopg.Connection, settings: PlatformSettings, domains: Sequence[str], start: datetime, end: datetime
) -> list[dg.AssetCheckResult]:
    """The day rows of [start, end) and the hourly rows they were summed from."""
    rollups, columns = written.read_written(
        conn,
        suites.ROLLUP,
        "event_type = ANY(%s) AND window_s = ANY(%s) AND bucket_start >= %s AND bucket_start < %s",
        ([t for d in domains for t in EVENT_TYPES[d]], [HOUR_S, DAY_S], start, end),
    )
    ranges = checks_config(settings).result_ranges
    return check_results(suites.daily_rollup_outcomes(rollups, columns, ranges, start=start, end=end), settings)


def kpi_checks(
    conn: psycopg.Connection, settings: PlatformSettings, periods: Sequence[str], start: datetime, end: datetime
) -> list[dg.AssetCheckResult]:
    """KPI rows of `periods` ending in (start, end]: the hours of an hourly partition, or a day and
    the shifts that end in it."""
    rows, columns = written.read_written(
        conn, suites.KPI, "period = ANY(%s) AND period_end > %s AND period_end <= %s", (list(periods), start, end)
    )
    limits = read_limits(conn)
    return check_results(suites.kpi_outcomes(rows, columns, checks_config(settings).result_ranges, limits), settings)


def anomaly_checks(
    conn: psycopg.Connection, settings: PlatformSettings, start: datetime, end: datetime
) -> list[dg.AssetCheckResult]:
    """The anomalies whose time is in [start, end), as the anomaly asset replaced them."""
    rows, columns = written.read_written(conn, suites.ANOMALY, "time >= %s AND time < %s", (start, end))
    return check_results(suites.anomaly_outcomes(rows, columns, checks_config(settings).result_ranges), settings)


def forecast_checks(
    conn: psycopg.Connection, settings: PlatformSettings, start: datetime, end: datetime
) -> list[dg.AssetCheckResult]:
    """The forecasts issued in (start, end], as the forecast asset replaced them."""
    rows, columns = written.read_written(conn, suites.FORECAST, "issued_at > %s AND issued_at <= %s", (start, end))
    return check_results(suites.forecast_outcomes(rows, columns), settings)


def trend_checks(
    conn: psycopg.Connection, settings: PlatformSettings, start: datetime, end: datetime
) -> list[dg.AssetCheckResult]:
    """The trends of the windows ending in (start, end], as the trend asset replaced them."""
    rows, columns = written.read_written(conn, suites.TREND, "window_end > %s AND window_end <= %s", (start, end))
    return check_results(suites.trend_outcomes(rows, columns), settings)


def baseline_checks(conn: psycopg.Connection, settings: PlatformSettings) -> list[dg.AssetCheckResult]:
    """Every stored baseline version (a few per machine and year) and the active ones."""
    rows, columns = written.read_written(conn, suites.BASELINE, "true", ())
    found = suites.baseline_outcomes(
        rows,
        columns,
        checks_config(settings).result_ranges,
        min_samples=settings.baseline_min_samples,
        r2_min=settings.baseline_r2_min,
    )
    return check_results(found, settings)
