"""Energy baselines (ISO 50001 EnB): retrained weekly on a schedule, or on demand from the UI or the
API (POST /v1/baselines/train: one machine, chosen drivers, range and exclusions in the run config)."""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from analytics_platform.data_quality.checks import RESULT_CHECKS_NO_BUCKETS
from analytics_platform.defs.baselines import BASELINE_MODELS
from analytics_platform.defs.checks import baseline_checks, contract_specs
from analytics_platform.defs.groups import ENERGY_GROUP
from analytics_platform.defs.kpis import HOURLY_KPIS
from analytics_platform.defs.tracing import partition_span
from analytics_platform.resources import PostgresResource
from analytics_platform.results import baselines
from analytics_platform.settings import PlatformSettings

RESULTS_METADATA = "results"


def outcome_record(outcome: baselines.BaselineOutcome) -> dict:
    """One machine's outcome as plain JSON: the model version and R² it stored, or the refusal."""
    refused = outcome.version is None
    return {
        "tenant_id": outcome.machine[0],
        "factory_id": outcome.machine[1],
        "machine_id": outcome.machine[2],
        "version": outcome.version,
        "r2": outcome.r2,
        "accepted": not refused and outcome.message == "accepted",
        "refused": refused,
        "message": outcome.message,
    }


class ExcludedPeriod(dg.Config):
    """[start, end) in ISO-8601 with an offset: hours overlapping it are left out of the training."""

    start: str
    end: str


class BaselineTrainingConfig(dg.Config):
    """Empty (the schedule's and the UI's runs): every machine, BASELINE_DRIVERS, the last
    BASELINE_TRAINING_DAYS. Set by an on-demand request (POST /v1/baselines/train), which names one
    machine, its drivers, the training range and periods to exclude: the run trains that machine
    alone, and stores its model with the same versioning as the weekly run."""

    tenant_id: str | None = None
    factory_id: str | None = None
    machine_id: str | None = None
    drivers: list[str] | None = None
    start: str | None = None
    end: str | None = None
    exclusions: list[ExcludedPeriod] = Field(default_factory=list)

    def machine(self) -> tuple[str, str, str] | None:
        if self.tenant_id is None or self.factory_id is None or self.machine_id is None:
            return None
        return (self.tenant_id, self.factory_id, self.machine_id)


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
        "one (analytics.analytics_baseline). Retrained weekly (baseline_training_schedule), or for one machine "
        "with chosen drivers, range and exclusions when the run config says so (POST /v1/baselines/train).",
        metadata={"table": "analytics.analytics_baseline"},
        check_specs=contract_specs(BASELINE_MODELS, RESULT_CHECKS_NO_BUCKETS, settings),
    )
    def energy_baseline_models(
        context: dg.AssetExecutionContext, db: PostgresResource, config: BaselineTrainingConfig
    ) -> dg.MaterializeResult:
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(days=settings.baseline_training_days)
        if config.start is not None and config.end is not None:
            start, end = datetime.fromisoformat(config.start), datetime.fromisoformat(config.end)
        exclusions = [(datetime.fromisoformat(p.start), datetime.fromisoformat(p.end)) for p in config.exclusions]
        drivers = config.drivers or settings.baseline_drivers
        with partition_span(context), db.connect() as conn:
            outcomes = baselines.train_baselines(
                conn,
                start,
                end,
                drivers,
                min_samples=settings.baseline_min_samples,
                r2_min=settings.baseline_r2_min,
                machine=config.machine(),
                exclusions=exclusions,
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
                "drivers": ", ".join(drivers),
                "machines": len(outcomes),
                "models_stored": len(trained),
                "accepted": sum(o.message == "accepted" for o in trained),
                "flagged_low_r2": sum(o.message != "accepted" for o in trained),
                "refused": len(outcomes) - len(trained),
                "outcomes": dg.MetadataValue.md(
                    "\n".join(f"- {'/'.join(o.machine)}: v{o.version} {o.message}" for o in outcomes)
                    or "no machine has hourly KPIs in the training period"
                ),
                # what GET /v1/jobs/{id} reports of an on-demand run
                RESULTS_METADATA: dg.MetadataValue.json([outcome_record(o) for o in outcomes]),
            },
            check_results=checks,
        )

    return energy_baseline_models
