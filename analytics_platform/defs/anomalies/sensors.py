"""The live judge's sensor: judges the sensor readings committed since its cursor every
LIVE_DETECT_INTERVAL_S seconds (rules without a fitted model; results/live_detection.py).

A sensor reading what was committed, rather than a hook in the drain: it keeps its own durable
position (a restart resumes there), a slow judgement never holds up ingest, and it sees the rows
of every drain shard alike."""

from datetime import timedelta

import dagster as dg

from analytics_platform.resources import PostgresResource
from analytics_platform.results.anomalies import AnomalyOptions
from analytics_platform.results.live_detection import judge_committed
from analytics_platform.settings import PlatformSettings


def build_live_sensor(settings: PlatformSettings, options: AnomalyOptions) -> dg.SensorDefinition:
    @dg.sensor(
        name="live_anomalies",
        minimum_interval_seconds=settings.live_detect_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Judges the sensor readings just committed against the metrics catalogue's plausible ranges "
        "and the metric spec limits; writes the anomalies found to analytics.analytics_anomaly at once (marked "
        "detected_live_at) for the alert rules. The hourly reading_anomalies asset confirms each one or closes it "
        "as not_confirmed.",
    )
    def live_anomalies(context: dg.SensorEvaluationContext, db: PostgresResource) -> dg.SkipReason:
        with db.connect() as conn:
            result = judge_committed(
                conn,
                options,
                lookback=timedelta(seconds=settings.live_detect_lookback_s),
                max_wait=timedelta(seconds=settings.live_detect_max_wait_s),
            )
        return dg.SkipReason(f"judged {result.judged} reading(s), {result.flagged} new anomaly row(s)")

    return live_anomalies
