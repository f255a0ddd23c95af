"""Energy baselines (ISO 50001 EnB): retrained weekly on a schedule, or on demand from the UI."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from analytics_platform.data_quality.checks import RESULT_CHECKS_NO_BUCKETS
from analytics_platform.defs.baselines import BASELINE_MODELS
from analytics_platform.defs.checks import baseline_checks, contract_specs
from analytics_platform.defs.groups import ENERGY_GROUP
from analytics_platform.defs.kpis import HOURLY_KPIS
from analytics_platform.resources import PostgresResource
from analytics_platform.results import baselines
from analytics_platform.settings import PlatformSettings


def build_baseline_asset(settings: PlatformSettings) -> dg.AssetsDefinition:
    @dg.asset(
        key=BASELINE_MODELS,
        deps=[HOURLY_KPIS],
        group_name=ENERGY_GROUP,
        kinds={"statsmodels", "postgres"},
        description="One energy baseline per machine: OLS of hourly energy_kwh on "
        f"{', '.join(settings.baseline_drivers)} over the last {settings.baseline_training_days} days, hours "
        f"with fault or maintenance excluded; at least {settings.baseline_min_samples} hours or a refusal; "
        f"R² below {settings.baseline_r2_min} is stored with a warning. A new version deactivates the previous "
        "one (analytics.analytics_baseline). Retrained weekly (baseline_training_schedule).",
        metadata={"table": "analytics.analytics_baseline"},
        check_specs=contract_specs(BASELINE_MODELS, RESULT_CHECKS_NO_BUCKETS, settings),
    )
    def energy_baseline_models(context: dg.AssetExecutionContext, db: PostgresResource) -> dg.MaterializeResult:
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(days=settings.baseline_training_days)
        with db.connect() as conn:
            outcomes = baselines.train_baselines(
                conn,
                start,
                end,
                settings.baseline_drivers,
                min_samples=settings.baseline_min_samples,
                r2_min=settings.baseline_r2_min,
            )
            checks = baseline_checks(conn, settings)
        for outcome in outcomes:
            level = context.log.info if outcome.message == "accepted" else context.log.warning
            level("baseline %s: version %s, %s", "/".join(outcome.machine), outcome.version, outcome.message)
        trained = [o for o in outcomes if o.version is not None]
        return dg.MaterializeResult(
            metadata={
                "trained_from": start.isoformat(),
                "trained_to": end.isoformat(),
                "machines": len(outcomes),
                "models_stored": len(trained),
                "accepted": sum(o.message == "accepted" for o in trained),
                "flagged_low_r2": sum(o.message != "accepted" for o in trained),
                "refused": len(outcomes) - len(trained),
                "outcomes": dg.MetadataValue.md(
                    "\n".join(f"- {'/'.join(o.machine)}: v{o.version} {o.message}" for o in outcomes)
                    or "no machine has hourly KPIs in the training period"
                ),
            },
            check_results=checks,
        )

    return energy_baseline_models
