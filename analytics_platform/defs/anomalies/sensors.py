"""The live judges' sensor: judges the sensor readings, the lab results and the sweep batches
committed since their cursors, and the 60 s samples closed since theirs, every
LIVE_DETECT_INTERVAL_S seconds (rules without a fitted model; results/live_detection.py).
One sensor for all: each short-interval sensor costs the Dagster daemon a tick of its own.

A sensor reading what was committed, rather than a hook in the drain: it keeps its own durable
position (a restart resumes there), a slow judgement never holds up ingest, and it sees the rows
of every drain shard alike."""

from datetime import timedelta

import dagster as dg

from analytics_platform.contracts.lab import LabContract
from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.contracts.sweep import SweepContract
from analytics_platform.resources import PostgresResource
from analytics_platform.results.anomalies import AnomalyOptions
from analytics_platform.results.live_detection import (
    judge_closed_buckets,
    judge_committed,
    judge_lab_results,
    judge_sweep_batches,
)
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
        lookback = timedelta(seconds=settings.live_detect_lookback_s)
        max_wait = timedelta(seconds=settings.live_detect_max_wait_s)
        enabled = set(settings.domains_enabled)
        said = []
        # only the domains that run: a judge of a disabled domain would read a table nobody fills
        with db.connect() as conn:
            if SensorContract.domain in enabled:
                readings = judge_committed(conn, options, lookback=lookback, max_wait=max_wait)
                said.append(f"judged {readings.judged} reading(s), {readings.flagged} new anomaly row(s)")
            if LabContract.domain in enabled:
                lab = judge_lab_results(conn, lookback=lookback, max_wait=max_wait)
                said.append(f"{lab.judged} lab result(s), {lab.flagged} new out-of-spec event(s)")
            if SweepContract.domain in enabled:
                sweep = judge_sweep_batches(conn, lookback=lookback, max_wait=max_wait)
                said.append(f"{sweep.judged} sweep batch(es), {sweep.flagged} new out-of-spec event(s)")
            if SensorContract.domain in enabled:
                closed = judge_closed_buckets(
                    conn,
                    options,
                    grace=timedelta(seconds=settings.live_seasonal_grace_s),
                    lookback=lookback,
                    provisional_hours=settings.agg_provisional_hours,
                )
                said.append(
                    f"{closed.judged} reading(s) of closed samples, {closed.flagged} new seasonal anomaly row(s)"
                )
        return dg.SkipReason("; ".join(said))

    return live_anomalies
