"""Lab analytes as time series: the hourly window aggregates of lab result values per station and
analyte (analytics.analytics_lab_agg), declared like the sensor window aggregates (hourly partitions,
single-run backfills, the same automation and result checks) so reprocessing works the same way."""

from datetime import timedelta

import dagster as dg

from analytics_platform.contracts.lab import LabContract
from analytics_platform.data_quality.checks import RESULT_CHECKS
from analytics_platform.defs.automation import follow_hourly_inputs
from analytics_platform.defs.checks import contract_specs, lab_aggregate_checks
from analytics_platform.defs.events import LAB_WINDOW_AGGREGATES
from analytics_platform.defs.groups import ANALYTICS_GROUP
from analytics_platform.defs.ingest import raw_asset_key
from analytics_platform.defs.partitions import hourly_partitions
from analytics_platform.defs.tracing import partition_span
from analytics_platform.resources import PostgresResource
from analytics_platform.results.aggregates import chunks
from analytics_platform.results.lab_series import recompute_lab_aggregates
from analytics_platform.settings import PlatformSettings


def build_lab_window_aggregates(settings: PlatformSettings) -> dg.AssetsDefinition:
    """The asset for these settings: the windows (WINDOWS), partitions and check blocking are the
    sensor aggregates', so one setting changes both kinds of series alike."""
    windows = sorted(set(settings.windows))

    @dg.asset(
        key=LAB_WINDOW_AGGREGATES,
        deps=[raw_asset_key(LabContract)],
        partitions_def=hourly_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=follow_hourly_inputs(timedelta(hours=settings.automation_lookback_hours)),
        group_name=ANALYTICS_GROUP,
        kinds={"polars", "postgres"},
        description=f"Window aggregates ({', '.join(f'{w} s' for w in windows)}) of lab result values per tenant, "
        "factory, station and analyte: count, sum, avg, min, max, stddev, first, last, p50, p95 "
        "(analytics.analytics_lab_agg, served by /v1/lab/agg). A partition recomputes every bucket that overlaps "
        "its hour from all of that bucket's results, so a late result re-opens exactly its buckets.",
        metadata={"table": "analytics.analytics_lab_agg", "windows": windows},
        check_specs=contract_specs(LAB_WINDOW_AGGREGATES, RESULT_CHECKS, settings),
    )
    def lab_window_aggregates(context: dg.AssetExecutionContext, db: PostgresResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        totals = {"results": 0, "rows": 0, "rows_replaced": 0}
        with partition_span(context), db.connect() as conn:
            # in the sensor aggregates' chunks (AGG_CHUNK_HOURS): a long backfill holds a bounded range
            for start, end in chunks(window.start, window.end, settings.agg_chunk_hours):
                run = recompute_lab_aggregates(conn, windows, start, end)
                totals["results"] += run.results
                totals["rows"] += run.rows
                totals["rows_replaced"] += run.deleted
            checks = lab_aggregate_checks(conn, settings, window.start, window.end)
        context.log.info("lab_window_aggregates %s..%s: %s", window.start, window.end, totals)
        return dg.MaterializeResult(metadata=totals, check_results=checks)

    return lab_window_aggregates
