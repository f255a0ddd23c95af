"""The live judges' sensor: judges the sensor readings, the lab results and the sweep batches
committed since their cursors, and the 60 s samples closed since theirs, every
LIVE_DETECT_INTERVAL_S seconds (rules without a fitted model; results/live_detection.py).
One sensor for all: each short-interval sensor costs the Dagster daemon a tick of its own.

A sensor reading what was committed, rather than a hook in the drain: it keeps its own durable
position (a restart resumes there), a slow judgement never holds up ingest, and it sees the rows
of every drain shard alike."""

import dagster as dg

from analytics_platform.resources import PostgresResource
from analytics_platform.results.anomalies import AnomalyOptions
from analytics_platform.results.live_detection import live_pass
from analytics_platform.settings import PlatformSettings


def build_live_sensor(settings: PlatformSettings, options: AnomalyOptions) -> dg.SensorDefinition:
    @dg.sensor(
        name="live_anomalies",
        minimum_interval_seconds=settings.live_detect_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Judges the sensor readings just committed against the metrics catalogue's plausible ranges "
        "and the metric spec limits; writes the anomalies found to analytics.analytics_anomaly at once (marked "
        "detected_live_at) for the alert rules. The hourly reading_anomalies asset confirms each one or closes it "
        "as not_confirmed. Judges the lab results just committed against their spec limits too and writes each "
        "failed one as its lab_result event (lab_result_quality rewrites the hour later with the same keys), and "
        "the sweep batches likewise as their sweep_batch events (sweep_batch_quality rewrites them). "
        "Judges each 60 s sample with the seasonal statistics (deviation, shift, noise, stuck) LIVE_SEASONAL_GRACE_S "
        "after it closed, with the hour's stored profiles.",
    )
    def live_anomalies(context: dg.SensorEvaluationContext, db: PostgresResource) -> dg.SkipReason:
        with db.connect() as conn:
            return dg.SkipReason(live_pass(conn, settings, options).text)

    return live_anomalies
