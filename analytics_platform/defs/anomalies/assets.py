"""Anomalies per hour: statistics and Isolation Forests over the sensor readings, production
stoppages, baseline deviations. Scheduled hourly (anomalies_schedule) once the hour has closed."""

from datetime import timedelta

import dagster as dg

from analytics_platform.contracts.device import DeviceHealthContract
from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.data_quality.checks import RESULT_CHECKS_NO_BUCKETS
from analytics_platform.defs.aggregates import WINDOW_AGGREGATES
from analytics_platform.defs.anomalies import READING_ANOMALIES
from analytics_platform.defs.baselines import BASELINE_MODELS
from analytics_platform.defs.checks import anomaly_checks, contract_specs
from analytics_platform.defs.groups import ENERGY_GROUP
from analytics_platform.defs.ingest import raw_asset_keys
from analytics_platform.defs.kpis import HOURLY_KPIS
from analytics_platform.defs.partitions import ended_hourly_partitions
from analytics_platform.defs.tracing import partition_span
from analytics_platform.resources import PostgresResource
from analytics_platform.results import anomalies
from analytics_platform.results.aggregates import chunks
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms.seasonal import SeasonalOptions


def anomaly_options(settings: PlatformSettings) -> anomalies.AnomalyOptions:
    return anomalies.AnomalyOptions(
        bucket_s=min(settings.windows),
        training_hours=settings.anomaly_training_hours,
        refit_hours=settings.anomaly_refit_hours,
        contamination=settings.anomaly_contamination,
        trees=settings.anomaly_trees,
        metrics=tuple(settings.anomaly_metrics),
        skip_metrics=tuple(settings.anomaly_skip_metrics),
        stoppage_minutes=settings.anomaly_stoppage_minutes,
        state_lookback=timedelta(hours=settings.device_state_lookback_hours),
        seasonal=SeasonalOptions(
            history_days=settings.anomaly_history_days,
            timezone=settings.anomaly_timezone,
            weekend_days=tuple(settings.anomaly_weekend_days),
            settle=timedelta(minutes=settings.anomaly_settle_minutes),
            rebase_after=timedelta(hours=settings.anomaly_rebase_hours),
        ),
    )


class DetectionScope(dg.Config):
    """The part of the hours a run judges: none given (the schedule, a backfill) is every series
    and method; a detection requested through the API names its tenant, factory, perhaps machine,
    and methods, so it re-judges and rewrites that and nothing else (`anomalies.Scope`)."""

    tenant_id: str | None = None
    factory_id: str | None = None
    machine_id: str | None = None
    methods: list[str] | None = None

    def scope(self) -> anomalies.Scope:
        methods = None if self.methods is None else tuple(self.methods)
        return anomalies.Scope(self.tenant_id, self.factory_id, self.machine_id, methods)


# on a scoped run's materialisation, valued "partial": its partitions were judged in part (which part:
# its metadata `scope`; a tag's value must be a short plain word, and tenant and machine ids need not be)
SCOPE_TAG = "analytics/scope"


def build_anomaly_asset(settings: PlatformSettings) -> dg.AssetsDefinition:
    """Reads sensor readings, and run states when the device domain runs (non-running periods are skipped)."""
    options = anomaly_options(settings)
    raw = raw_asset_keys(settings, [SensorContract, DeviceHealthContract])

    @dg.asset(
        key=READING_ANOMALIES,
        deps=[*raw, WINDOW_AGGREGATES, HOURLY_KPIS, BASELINE_MODELS],
        partitions_def=ended_hourly_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=ENERGY_GROUP,
        kinds={"scikit-learn", "postgres"},
        description="Anomalies of the hour (analytics.analytics_anomaly; events: analytics.anomaly_events()): "
        "each series judged at its own cadence against a robust seasonal profile (weekday × hour medians, "
        "learned over ANOMALY_HISTORY_DAYS, stored in analytics.analytics_anomaly_model as method 'seasonal') "
        "for deviation, level shift, noise and stuck readings; the Isolation Forest as a second opinion; "
        "production stoppage while running; energy baseline deviation. Non-running periods (and "
        "ANOMALY_SETTLE_MINUTES after them) are skipped; series with too little history are 'learning'. "
        "Re-materialising an hour replaces its anomalies; resolutions of those found again are kept. A run "
        "configured with a scope (tenant_id, factory_id, machine_id, methods: POST /v1/anomalies/detect) judges "
        "and replaces only those; its materialisation says so (metadata `scope`, tag analytics/scope=partial).",
        metadata={"table": "analytics.analytics_anomaly"},
        check_specs=contract_specs(READING_ANOMALIES, RESULT_CHECKS_NO_BUCKETS, settings),
    )
    def reading_anomalies(
        context: dg.AssetExecutionContext, db: PostgresResource, config: DetectionScope
    ) -> dg.MaterializeResult:
        window = context.partition_time_window
        scope = config.scope()
        totals: dict[str, int] = {
            "readings": 0,
            "anomalies": 0,
            "models_fitted": 0,
            "profiles_learned": 0,
            "deviations": 0,
        }
        methods: dict[str, int] = {}
        models: dict = {}  # forests loaded or fitted once per run, reused hour after hour
        profiles: dict = {}  # profiles likewise (one per series and day)
        learning = 0
        with partition_span(context), db.connect() as conn:
            # a day per call: its hours share one read of the trailing aggregates, and memory stays
            # bounded by a day whatever the backfill's length
            for start, end in chunks(window.start, window.end, 24):
                run = anomalies.recompute_anomalies(conn, start, end, options, models, profiles, scope)
                totals["readings"] += run.readings
                totals["anomalies"] += run.anomalies
                totals["models_fitted"] += run.models_fitted
                totals["profiles_learned"] += run.profiles_learned
                totals["deviations"] += run.deviations
                learning = run.learning
                for method, count in run.by_method.items():
                    methods[method] = methods.get(method, 0) + count
            # the checks look at the whole hours, scoped run or not: a check result is recorded for
            # the partition, and the partition is every row of its hours (the scope's rewritten,
            # the rest as earlier runs left them), so a check over the scope alone would report a
            # partition as passing that it never looked at
            checks = anomaly_checks(conn, settings, window.start, window.end)
        skipped = ", ".join(options.skip_metrics) or "none"
        context.log.info(
            "reading_anomalies %s..%s (%s): %s %s; %d series still learning (not judged); metrics not judged "
            "(ANOMALY_SKIP_METRICS): %s",
            window.start,
            window.end,
            scope.label,
            totals,
            methods,
            learning,
            skipped,
        )
        return dg.MaterializeResult(
            metadata={
                "scope": scope.label,
                **totals,
                "series_learning": learning,
                "metrics_not_judged": skipped,
                **{f"by_{k}": v for k, v in methods.items()},
            },
            check_results=checks,
            tags={} if scope.whole else {SCOPE_TAG: "partial"},
        )

    return reading_anomalies
