"""Anomalies per hour: statistics and Isolation Forests over the sensor readings, production
stoppages, baseline deviations. Scheduled hourly (anomalies_schedule) once the hour has closed."""

from datetime import timedelta

import dagster as dg

from analytics_platform.defs.checks import anomaly_checks, contract_specs
from analytics_platform.defs.ingest.partitions import ended_hourly_partitions
from analytics_platform.defs.kpis.assets import ENERGY_GROUP
from analytics_platform.quality.checks import RESULT_CHECKS_NO_BUCKETS
from analytics_platform.resources import PostgresResource
from analytics_platform.results import anomalies
from analytics_platform.results.aggregates import chunks
from analytics_platform.settings import PlatformSettings


def anomaly_options(settings: PlatformSettings) -> anomalies.AnomalyOptions:
    return anomalies.AnomalyOptions(
        bucket_s=min(settings.windows),
        training_hours=settings.anomaly_training_hours,
        refit_hours=settings.anomaly_refit_hours,
        contamination=settings.anomaly_contamination,
        trees=settings.anomaly_trees,
        metrics=tuple(settings.anomaly_metrics),
        skip_metrics=tuple(settings.kpi_drivers),
        stoppage_minutes=settings.anomaly_stoppage_minutes,
        state_lookback=timedelta(hours=settings.device_state_lookback_hours),
    )


def build_anomaly_asset(settings: PlatformSettings, raw: list[dg.AssetKey]) -> dg.AssetsDefinition:
    options = anomaly_options(settings)

    @dg.asset(
        deps=[
            *raw,
            dg.AssetKey("sensor_window_aggregates"),
            dg.AssetKey("hourly_machine_kpis"),
            dg.AssetKey("energy_baseline_models"),
        ],
        partitions_def=ended_hourly_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=ENERGY_GROUP,
        kinds={"scikit-learn", "postgres"},
        description="Anomalies of the hour (analytics.analytics_anomaly): z-score (2σ warning, 3σ critical) and "
        "sudden change against the trailing window, Isolation Forest per machine and metric (persisted, "
        "versioned in analytics.analytics_anomaly_model, refitted when older than ANOMALY_REFIT_HOURS), "
        "production stoppage while running, energy baseline deviation. Maintenance and fault periods are "
        "skipped. Re-materialising an hour replaces its anomalies; resolutions of those found again are kept.",
        metadata={"table": "analytics.analytics_anomaly"},
        check_specs=contract_specs(dg.AssetKey("reading_anomalies"), RESULT_CHECKS_NO_BUCKETS, settings),
    )
    def reading_anomalies(context: dg.AssetExecutionContext, db: PostgresResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        totals: dict[str, int] = {"readings": 0, "anomalies": 0, "models_fitted": 0, "deviations": 0}
        methods: dict[str, int] = {}
        models: dict = {}  # forests loaded or fitted once per run, reused hour after hour
        with db.connect() as conn:
            for start, end in chunks(window.start, window.end, 1):
                run = anomalies.recompute_anomalies(conn, start, end, options, models)
                totals["readings"] += run.readings
                totals["anomalies"] += run.anomalies
                totals["models_fitted"] += run.models_fitted
                totals["deviations"] += run.deviations
                for method, count in run.by_method.items():
                    methods[method] = methods.get(method, 0) + count
            checks = anomaly_checks(conn, settings, window.start, window.end)
        context.log.info("reading_anomalies %s..%s: %s %s", window.start, window.end, totals, methods)
        return dg.MaterializeResult(
            metadata={**totals, **{f"by_{k}": v for k, v in methods.items()}}, check_results=checks
        )

    return reading_anomalies
