"""`sensor_window_aggregates`: hourly partitions of analytics.analytics_agg."""

import time
from datetime import datetime, timedelta

import dagster as dg
import psycopg

from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.data_quality.checks import RESULT_CHECKS
from analytics_platform.data_quality.validation import warm_up
from analytics_platform.defs.aggregates import WINDOW_AGGREGATES
from analytics_platform.defs.aggregates.live import FINALISE_MODE_TAG, FINALISED_TAG, finalises_open_hour
from analytics_platform.defs.automation import follow_hourly_inputs
from analytics_platform.defs.checks import aggregate_checks, contract_specs
from analytics_platform.defs.groups import ANALYTICS_GROUP
from analytics_platform.defs.ingest import raw_asset_key
from analytics_platform.defs.partitions import hourly_partitions
from analytics_platform.defs.tracing import partition_span
from analytics_platform.resources import PostgresResource
from analytics_platform.results.aggregates import AggregateRun, chunks, finalise_hour, recompute_aggregates
from analytics_platform.settings import PlatformSettings


def build_window_aggregates(settings: PlatformSettings) -> dg.AssetsDefinition:
    windows = sorted(set(settings.windows))

    @dg.asset(
        key=WINDOW_AGGREGATES,
        deps=[raw_asset_key(SensorContract)],
        partitions_def=hourly_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=follow_hourly_inputs(
            timedelta(hours=settings.automation_lookback_hours), skip_current=finalises_open_hour(settings)
        ),
        group_name=ANALYTICS_GROUP,
        kinds={"polars", "postgres"},
        description=f"Window aggregates ({', '.join(f'{w} s' for w in windows)}) per tenant, factory, machine, "
        "sensor and metric: count, sum, avg, min, max, stddev, first, last, p50, p95 (analytics.analytics_agg). "
        "A partition recomputes every bucket that overlaps its hour from all of that bucket's readings; the drain "
        "service's finaliser runs recompute only the buckets that closed or got readings since its last run.",
        metadata={"table": "analytics.analytics_agg", "windows": windows},
        check_specs=contract_specs(WINDOW_AGGREGATES, RESULT_CHECKS, settings),
    )
    def sensor_window_aggregates(context: dg.AssetExecutionContext, db: PostgresResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        totals = {"readings": 0, "rows": 0, "rows_replaced": 0}
        by_window: dict[str, int] = {}
        with partition_span(context), db.connect() as conn:
            finalised = finalise_run(context, conn, windows, window.start, window.end)
            if isinstance(finalised, AggregateRun):
                # the buckets that closed: a coarse bucket still open was left as an earlier run
                # stored it, so its finer buckets need not add up to it yet (reconciliation)
                closed_by = datetime.fromisoformat(context.run.tags[FINALISED_TAG])
                checks = aggregate_checks(conn, settings, window.start, min(closed_by, window.end))
                return dg.MaterializeResult(metadata=incremental_metadata(finalised), check_results=checks)
            full = {"incremental": False, **({} if finalised is None else {"full_because": finalised})}
            for start, end in chunks(window.start, window.end, settings.agg_chunk_hours):
                # the checks' Great Expectations import runs beside the write (PostgreSQL's work)
                run = recompute_aggregates(conn, windows, start, end, before_write=warm_up)
                totals["readings"] += run.readings
                totals["rows"] += run.rows
                totals["rows_replaced"] += run.deleted
                for w, n in run.by_window.items():
                    by_window[f"{w}s"] = by_window.get(f"{w}s", 0) + n
                context.log.info(
                    "%s..%s: %d readings -> %d buckets (read %.2fs, transform %.2fs, write %.2fs)",
                    start.isoformat(),
                    end.isoformat(),
                    run.readings,
                    run.rows,
                    *(run.seconds[k] for k in ("read", "transform", "write")),
                )
            began = time.perf_counter()
            checks = aggregate_checks(conn, settings, window.start, window.end)
            context.log.info("checks %.2fs", time.perf_counter() - began)
        return dg.MaterializeResult(metadata={**totals, "buckets_by_window": by_window, **full}, check_results=checks)

    return sensor_window_aggregates


def finalise_run(
    context: dg.AssetExecutionContext, conn: psycopg.Connection, windows: list[int], start: datetime, end: datetime
) -> AggregateRun | str | None:
    """An incremental finaliser run of the hour if this run is one the drain service's finaliser
    asked for (its tags) and the hour's state allows it; else why not (a string: the run recomputes
    the hour), or None for every other run (the UI, a backfill, the automation: always the whole
    range, the authoritative recompute)."""
    tags = context.run.tags
    if tags.get(FINALISE_MODE_TAG) != "incremental" or FINALISED_TAG not in tags or end - start != timedelta(hours=1):
        return None

    def ahead(part: AggregateRun) -> None:
        context.log.info(
            "the %d s buckets ahead of the rest: %d readings -> %d rows, final (read %.2fs, transform %.2fs, "
            "write %.2fs)",
            windows[0],
            part.readings,
            part.rows,
            *(part.seconds[k] for k in ("read", "transform", "write")),
        )

    closed_by = datetime.fromisoformat(tags[FINALISED_TAG])
    run = finalise_hour(conn, windows, start, closed_by, before_write=warm_up, on_ahead=ahead)
    if isinstance(run, str):
        context.log.info("recomputing the whole hour: %s", run)
        return run
    context.log.info(
        "incremental: %d readings -> %d rows (closed buckets %s, late buckets of a series %s), position %s "
        "(read %.2fs, transform %.2fs, write %.2fs)",
        run.readings,
        run.rows,
        run.buckets,
        run.late,
        run.position.isoformat() if run.position else None,
        *(run.seconds[k] for k in ("read", "transform", "write")),
    )
    return run


def incremental_metadata(run: AggregateRun) -> dict[str, object]:
    """What an incremental run touched, in the materialisation the instance records."""
    return {
        "incremental": True,
        "readings": run.readings,
        "rows": run.rows,
        "rows_replaced": run.deleted,
        "closed_buckets_by_window": {f"{w}s": n for w, n in run.buckets.items()},
        "late_series_buckets_by_window": {f"{w}s": n for w, n in run.late.items()},
        "position": run.position.isoformat() if run.position else None,
        # the smallest window's buckets, final before the rest were read (results/aggregates.py)
        "written_ahead": run.ahead is not None,
    }
