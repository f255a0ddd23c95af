"""Landing and the raw assets of every enabled domain.

`kafka_landing` is where the drain sensors put every message verbatim; the raw assets are hourly
partitions of typed rows. The sensors report raw partitions as they fill; materialising a raw
partition (or a range, in one run) re-derives it from landing with the same contract code.
"""

import dagster as dg

from analytics_platform.contracts.registry import DomainBinding, contract_config
from analytics_platform.defs.checks import raw_checks, raw_specs
from analytics_platform.defs.groups import INGEST_GROUP
from analytics_platform.defs.ingest import raw_asset_key
from analytics_platform.defs.partitions import hourly_partitions
from analytics_platform.defs.tracing import partition_span
from analytics_platform.ingest.catalog import read_catalog
from analytics_platform.ingest.rederive import merged_quality, rederive_range
from analytics_platform.resources import PostgresResource
from analytics_platform.settings import PlatformSettings

kafka_landing = dg.AssetSpec(
    "kafka_landing",
    group_name=INGEST_GROUP,
    description=(
        "Every Kafka message exactly as it arrived (analytics.kafka_landing): topic, partition, "
        "offset, key, timestamp, value. The replayable source of truth for the raw assets."
    ),
    kinds={"kafka", "postgres"},
)


def build_raw_asset(binding: DomainBinding, settings: PlatformSettings) -> dg.AssetsDefinition:
    """The hourly raw asset of one domain, with its raw-contract checks (defs/checks.py): the four
    of every domain, plus the metric-value contracts and completeness where they apply."""
    contract = binding.contract
    key = raw_asset_key(binding.contract)

    @dg.asset(
        key=key,
        deps=[kafka_landing],
        partitions_def=hourly_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=INGEST_GROUP,
        kinds={"polars", "postgres"},
        description=f"{contract.description} Table analytics.{contract.raw_table}, fed by "
        f"{', '.join(binding.topics)}. Materialising re-derives the hours from kafka_landing.",
        check_specs=raw_specs(binding, key, settings),
        metadata={"table": f"analytics.{contract.raw_table}", "topics": ", ".join(binding.topics)},
        pool="raw_rederive",
    )
    def _raw(context: dg.AssetExecutionContext, db: PostgresResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        with partition_span(context), db.connect() as conn:
            config = contract_config(settings, read_catalog(conn))
            results = rederive_range(conn, binding, config, window.start, window.end)
            quality = merged_quality(results)
            checks = raw_checks(conn, binding, settings, quality, window.start, window.end)
        context.log.info(
            "re-derived %d hour(s) of %s: %d messages -> %d rows, %d rejects, %d rows replaced",
            len(results),
            contract.raw_table,
            sum(r.messages for r in results),
            quality.rows,
            quality.rejects,
            sum(r.deleted for r in results),
        )
        return dg.MaterializeResult(
            metadata={
                "rows": quality.rows,
                "rejects": quality.rejects,
                "messages": sum(r.messages for r in results),
                "rows_replaced": sum(r.deleted for r in results),
                "duplicates_in_landing": quality.duplicates,
                "min_time": str(quality.min_time) if quality.min_time else "",
                "max_time": str(quality.max_time) if quality.max_time else "",
                "source": "kafka_landing (re-derived)",
            },
            check_results=checks,
        )

    return _raw
