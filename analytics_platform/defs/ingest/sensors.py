"""One Kafka-draining sensor per enabled domain and drain shard.

With DRAIN_SHARDS=1 (the default) the sensor of a domain is `drain_<domain>` and reads every
partition. With N shards it is `drain_<domain>_shard_<i>` for each shard i this code location runs
(DRAIN_SHARDS_HERE), reading the partitions p with p % N == i; the names do not contain N, so
shard i keeps its cursor when N changes.

Each tick runs one bounded drain pass (see `analytics_platform.ingest.drain`) and tells Dagster
which hourly raw partitions received rows, as runless materializations with metadata (rows,
rejects, min/max time, ingest lag) and raw-contract check evaluations. No run is launched per
tick: on two cores run start-up would dominate; downstream assets coalesce on their own.

With DRAIN_FOLLOW the pass does not end when it caught up: it keeps committing micro-batches (at
least every DRAIN_LINGER_S) until DRAIN_BUDGET_S, so rows are queryable within about a second while
the tick runs; but the daemon takes 10-15 s between ticks, which is what the tail sees. With
DRAIN_MODE=service the drain runs outside Dagster without that gap (`analytics-platform drain
serve`, ingest/service.py) and these sensors only report what it committed (`build_report_sensor`):
the same events, from analytics.drain_reports (docs/architecture.md, "Ingest").

An hour that is not a valid partition yet (data slightly ahead of the clock) is kept in the cursor
and reported on the first tick after its partition exists, so Dagster never misses a partition.
"""

import json
import logging
from collections.abc import Callable
from datetime import datetime

import dagster as dg

from analytics_platform.contracts.registry import DomainBinding, contract_config
from analytics_platform.data_quality.raw_profile import CheckOutcome, PartitionQuality, check_outcomes, range_outcomes
from analytics_platform.defs.checks import checks_config, severity
from analytics_platform.defs.ingest import raw_asset_key
from analytics_platform.defs.ingest.assets import kafka_landing
from analytics_platform.defs.partitions import hourly_partitions, partition_key
from analytics_platform.defs.tracing import TRACEPARENTS
from analytics_platform.ingest import store
from analytics_platform.ingest.drain import Drain, DrainError, DrainReport, shard_label
from analytics_platform.resources import KafkaResource, PostgresResource
from analytics_platform.settings import PlatformSettings

log = logging.getLogger(__name__)


def partition_metadata(quality: PartitionQuality, report: DrainReport) -> dict:
    return {
        "rows": quality.rows,
        "rejects": quality.rejects,
        "reject_reasons": dict(sorted(quality.reject_reasons.items())),
        "uncatalogued": quality.uncatalogued,
        "min_time": quality.min_time.isoformat() if quality.min_time else "",
        "max_time": quality.max_time.isoformat() if quality.max_time else "",
        "ingest_lag_s": round(report.max_ingest_lag_s, 3),
        "source": "kafka drain (live)",
    }


def report_events(
    binding: DomainBinding,
    report: DrainReport,
    pending: dict[str, dict],
    settings: PlatformSettings,
) -> tuple[list, dict[str, dict]]:
    """Dagster events for a drain report; returns (events, partitions still waiting to exist)."""
    key = raw_asset_key(binding.contract)
    events: list = []
    waiting = dict(pending)
    for start, quality in sorted(report.partitions.items()):
        metadata = partition_metadata(quality, report)
        if report.traces.get(start):  # tracing on: the batch spans the hour's asset spans link to
            metadata[TRACEPARENTS] = report.traces[start]
        waiting[partition_key(start)] = {
            "metadata": metadata,
            "checks": [
                {"name": o.name, "passed": o.passed, "metadata": o.metadata, "description": o.description}
                for o in live_outcomes(binding, quality, settings)
            ],
        }
    by_check: dict[str, list[tuple[str, dict]]] = {}
    partitions = hourly_partitions(settings)
    for pkey in sorted(waiting):
        if not partitions.has_partition_key(pkey):
            continue
        entry = waiting.pop(pkey)
        events.append(dg.AssetMaterialization(asset_key=key, partition=pkey, metadata=entry["metadata"]))
        for check in entry["checks"]:
            by_check.setdefault(check["name"], []).append((pkey, check))
    config = checks_config(settings)
    events.extend(
        _tick_check_evaluation(key, name, results, severity(config, name), config.blocking.of(name))
        for name, results in by_check.items()
    )
    if report.messages:
        events.insert(
            0,
            dg.AssetMaterialization(
                asset_key=kafka_landing.key,
                metadata={
                    "domain": binding.domain,
                    "messages": report.messages,
                    "rows": report.rows,
                    "rejects": report.rejects,
                    "rejects_without_time": report.unpartitioned_rejects,
                    "duplicates_in_batch": report.duplicates_in_batch,
                    "batches": report.batches,
                    "messages_per_s": round(report.rate, 1),
                    "ingest_lag_s": round(report.max_ingest_lag_s, 3),
                    "next_offsets": {f"{t}[{p}]": o for (t, p), o in sorted(report.positions.items())},
                    "uncatalogued_rows": sum(q.uncatalogued for q in report.partitions.values()),
                },
            ),
        )
    if report.offset_resets:
        # a log that changed under a stored offset: said where operators look (the landing asset's
        # materialisations), besides analytics.ingest_resets, the Prometheus counter and the alert
        events.append(
            dg.AssetMaterialization(
                asset_key=kafka_landing.key,
                metadata={
                    "domain": binding.domain,
                    "offset_resets": [
                        {
                            "partition": f"{r.topic}[{r.partition}]",
                            "reason": r.reason,
                            "detail": r.detail,
                            "stored_offset": r.stored_offset,
                            "resumed_at": r.resumed_at,
                            "skipped": r.skipped,
                        }
                        for r in report.offset_resets
                    ],
                },
                description=f"{len(report.offset_resets)} offset reset(s): the log changed under stored offsets",
            )
        )
    return events, waiting


def live_outcomes(binding: DomainBinding, quality: PartitionQuality, settings: PlatformSettings) -> list[CheckOutcome]:
    """The checks the drain can judge per tick from its counts: the raw-contract four, and for
    domains with metric values `values_in_range` and `units_match` (completeness needs the whole
    hour, so only a materialisation judges it)."""
    found = check_outcomes(quality, checks_config(settings).reject_ratio_max(settings.reject_ratio_max))
    if binding.contract.range_column is not None:
        found += range_outcomes(quality)
    return found


def _tick_check_evaluation(
    key: dg.AssetKey,
    name: str,
    results: list[tuple[str, dict]],
    level: dg.AssetCheckSeverity,
    blocking: bool,
) -> dg.AssetCheckEvaluation:
    """One evaluation per check per tick, over every partition the tick reported.

    Not attached to a partition: Dagster 1.13 stores runless check evaluations under a unique
    (asset, check, run_id='', partition) key, so a second live evaluation of the same partition
    fails the whole tick. Per-partition results come from materialising the partition instead.
    """
    failing = {pkey: check["metadata"] for pkey, check in results if not check["passed"]}
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=name,
        passed=not failing,
        metadata={
            "partitions": [pkey for pkey, _ in results],
            "failing_partitions": failing,
            "latest": results[-1][1]["metadata"],
        },
        description=f"{results[0][1]['description']} (live drain, {len(results)} partition(s))",
        severity=level,
        blocking=blocking,
    )


def drain_sensor_name(domain: str, shard: int, shards: int) -> str:
    return f"drain_{domain}" if shards == 1 else f"drain_{domain}_shard_{shard}"


def service_report(rows: list[tuple[int, datetime, dict]]) -> DrainReport | None:
    """One report of the drain service's batches (analytics.drain_reports rows), as a pass's; its
    rate is over the span from the first batch's start to the last one's commit."""
    if not rows:
        return None
    report = DrainReport.from_json(rows[0][2])
    for _id, _at, data in rows[1:]:
        report.merge(DrainReport.from_json(data))
    first = DrainReport.from_json(rows[0][2]).elapsed_s
    report.elapsed_s = (rows[-1][1] - rows[0][1]).total_seconds() + first
    return report


def _sensor(binding: DomainBinding, settings: PlatformSettings, shard: int, description: str) -> Callable:
    """The `dg.sensor` decorator a drain sensor of `binding`'s shard has in either mode (one name, so
    switching DRAIN_MODE keeps the sensor's history and cursor); `description` may use {which}."""
    shards = settings.drain_shards
    which = "" if shards == 1 else f" (partitions p with p % {shards} == {shard})"
    return dg.sensor(
        name=drain_sensor_name(binding.domain, shard, shards),
        minimum_interval_seconds=settings.drain_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description.format(which=which),
    )


def _take_reports(
    db: PostgresResource, settings: PlatformSettings, binding: DomainBinding, shard: int, cursor: dict
) -> tuple[list[int], DrainReport | None]:
    """The drain service's unreported batches of this domain and shard, merged, after deleting those
    the last recorded tick reported (their ids are in its cursor); the ids go in the next cursor."""
    with db.connect() as conn:
        rows = store.take_drain_reports(
            conn, settings.drain_consumer, binding.domain, shard, cursor.get("reported", [])
        )
    return [row[0] for row in rows], service_report(rows)


def build_drain_sensor(binding: DomainBinding, settings: PlatformSettings, shard: int = 0) -> dg.SensorDefinition:
    """The sensor that drains shard `shard` of `binding`'s topics into landing and its raw table
    (DRAIN_MODE=sensor), or reports what the drain service committed for it (DRAIN_MODE=service)."""
    if settings.drain_mode == "service":
        return build_report_sensor(binding, settings, shard)
    shards = settings.drain_shards

    @_sensor(
        binding,
        settings,
        shard,
        f"Drains {', '.join(binding.topics)}{{which}} into kafka_landing and "
        f"{binding.contract.raw_table}; offsets are stored with the rows, per partition.",
    )
    def _drain(context: dg.SensorEvaluationContext, db: PostgresResource, kafka: KafkaResource) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        drain = Drain(
            binding,
            contract_config(settings),
            database_url=db.url,
            kafka_config=kafka.client_config(),
            consumer_name=settings.drain_consumer,
            batch_size=settings.drain_batch_size,
            poll_timeout_s=settings.drain_poll_timeout_s,
            start=settings.drain_start,
            missing_unit_is_canonical=checks_config(settings).units.missing_is_canonical,
            shard=shard,
            shards=shards,
            linger_s=settings.drain_linger_s,
        )
        try:
            report = drain.run(settings.drain_budget_s, follow=settings.drain_follow)
        except DrainError as exc:
            context.log.error(str(exc))
            return dg.SensorResult(skip_reason=str(exc), cursor=context.cursor)
        # batches a drain service committed before the deployment went back to DRAIN_MODE=sensor
        reported, leftover = _take_reports(db, settings, binding, shard, cursor)
        if leftover is not None:
            leftover.elapsed_s = 0.0  # the rate stays this pass's
            report.merge(leftover)
        events, waiting = report_events(binding, report, cursor.get("pending", {}), settings)
        for reset in report.offset_resets:
            context.log.warning("offset reset: %s (resumed at offset %d)", reset.describe(), reset.resumed_at)
        for topic in report.missing_topics:
            context.log.info("topic %s does not exist yet", topic)
        if report.busy:
            context.log.info(
                "%s: %d partition(s) held by another drain (re-sharding?), next tick: %s",
                shard_label(shard, shards),
                len(report.busy),
                ", ".join(f"{t}[{p}]" for t, p in report.busy),
            )
        if report.messages:
            context.log.info(
                "%s (%s): %d messages -> %d rows, %d rejects in %d batches (%.0f msg/s), %d partitions",
                binding.domain,
                shard_label(shard, shards),
                report.messages,
                report.rows,
                report.rejects,
                report.batches,
                report.rate,
                len(report.partitions),
            )
        new_cursor = json.dumps(
            {"pending": waiting, "reported": reported, "last_tick": datetime.now().isoformat()},
            default=str,
        )
        if not events:
            return dg.SensorResult(skip_reason="no new messages", cursor=new_cursor)
        return dg.SensorResult(asset_events=events, cursor=new_cursor)

    return _drain


def build_report_sensor(binding: DomainBinding, settings: PlatformSettings, shard: int = 0) -> dg.SensorDefinition:
    """DRAIN_MODE=service: the drain service (`analytics-platform drain serve`) reads Kafka; this
    sensor turns the reports its batches committed (analytics.drain_reports, sql/15) into the same
    events a draining tick emits. A row is deleted on the tick after the one that reported it: the
    ids ride in the cursor, which Dagster stores only with a recorded tick, so a tick lost between
    reading and recording is reported again (at least once, never lost)."""
    shards = settings.drain_shards

    @_sensor(
        binding,
        settings,
        shard,
        f"Reports what the drain service committed from {', '.join(binding.topics)}{{which}} into "
        f"kafka_landing and {binding.contract.raw_table} (DRAIN_MODE=service).",
    )
    def _report(context: dg.SensorEvaluationContext, db: PostgresResource) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        reported, found = _take_reports(db, settings, binding, shard, cursor)
        report = found or DrainReport(domain=binding.domain)
        events, waiting = report_events(binding, report, cursor.get("pending", {}), settings)
        if report.batches:
            context.log.info(
                "%s (%s): the drain service committed %d messages -> %d rows, %d rejects in %d batches, %d hours",
                binding.domain,
                shard_label(shard, shards),
                report.messages,
                report.rows,
                report.rejects,
                report.batches,
                len(report.partitions),
            )
        new_cursor = json.dumps({"pending": waiting, "reported": reported}, default=str)
        if not events:
            return dg.SensorResult(
                skip_reason="no new batches from the drain service (`analytics-platform drain serve` must run)",
                cursor=new_cursor,
            )
        return dg.SensorResult(asset_events=events, cursor=new_cursor)

    return _report


def build_rederivation_sensor(
    bindings: list[DomainBinding], settings: PlatformSettings, interval_s: int
) -> dg.SensorDefinition:
    """Tells Dagster about raw hours re-derived outside a run (`analytics-platform migrate` after a
    key migration, `rejects readmit`): one runless materialization per hour, with what changed, so
    partition status, lineage and the downstream automation (aggregates, rollups, KPIs) follow as
    they do for live ingest. The cursor (the last reported `done_at`) makes it at least once."""
    keys = {b.contract.raw_table: raw_asset_key(b.contract) for b in bindings}
    partitions = hourly_partitions(settings)

    @dg.sensor(
        name="raw_rederivations",
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reports raw hours re-derived from kafka_landing outside a run (migrations, re-admitted "
        "rejects), so downstream assets recompute them.",
    )
    def _rederivations(context: dg.SensorEvaluationContext, db: PostgresResource) -> dg.SensorResult:
        after = json.loads(context.cursor) if context.cursor else ["-infinity", "", "-infinity"]
        with db.connect() as conn:
            rows = conn.execute(
                "SELECT done_at, raw_table, hour, string_agg(DISTINCT reason, '; '), min(rows_before), max(rows_after) "
                "FROM analytics.raw_rederivations WHERE done_at IS NOT NULL AND raw_table = ANY(%s) "
                "AND (done_at, raw_table, hour) > (%s::timestamptz, %s, %s::timestamptz) "
                "GROUP BY done_at, raw_table, hour ORDER BY done_at, raw_table, hour LIMIT 2000",
                (list(keys), *after),
            ).fetchall()
            if not rows:
                return dg.SensorResult(skip_reason="no re-derived raw hours to report")
            events = [
                dg.AssetMaterialization(
                    asset_key=keys[table],
                    partition=partition_key(hour),
                    metadata={
                        "source": "kafka_landing (re-derived)",
                        "reason": why,
                        "rows_before": before,
                        "rows": rows_after,
                    },
                )
                for _done, table, hour, why, before, rows_after in rows
                if partitions.has_partition_key(partition_key(hour))
            ]
            conn.execute(
                "UPDATE analytics.raw_rederivations SET reported_at = now() "
                "WHERE reported_at IS NULL AND done_at IS NOT NULL AND done_at <= %s",
                (rows[-1][0],),
            )
        last = rows[-1]
        context.log.info("reported %d re-derived raw hour(s) to Dagster", len(events))
        cursor = json.dumps([last[0].isoformat(), last[1], last[2].isoformat()])
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return _rederivations
