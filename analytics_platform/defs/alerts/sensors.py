"""The alert sensor: evaluates the rules, stores transitions, delivers notifications. The database
rules run every ALERT_INTERVAL_S (2 s: an anomaly the live judge wrote is notified seconds later),
the Dagster-backed ones (asset checks, runs) every ALERT_DAGSTER_INTERVAL_S.

A sensor rather than hooks on the producing assets: rules look across assets (an anomaly, a
device that went silent, a failing check, a failed run), a silent device produces no asset run to
hook into, and a slow receiver must never hold up a run. Rules on asset checks and run status read
the Dagster instance; the rest read the database.
"""

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import psycopg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from analytics_platform.alerts.config import AlertConfigError, read_alert_file, read_rules
from analytics_platform.alerts.engine import DeliveryPolicy, ExternalObserver, TickReport, run_tick, ticking
from analytics_platform.alerts.model import Condition, Observation, Rule, iso
from analytics_platform.alerts.observe import asset_link
from analytics_platform.resources import PostgresResource
from analytics_platform.settings import PlatformSettings

CHECK_HISTORY = 200  # executions per check looked at: enough to see each recent partition's latest


def check_conditions(
    instance: dg.DagsterInstance, check_keys: Sequence[dg.AssetCheckKey], rule: Rule, ui_url: str
) -> Observation:
    """One condition per (check, partition) whose latest evaluation failed; live (drain) evaluations,
    which carry no partition, count as the partition `live`. Only the newest CHECK_HISTORY
    executions are read (the drain adds one per tick), so a partition not among them is unknown,
    not passing: its open condition stays open until the partition is judged again."""
    conditions = []
    known: set[str] = set()
    for key in sorted(check_keys, key=lambda k: k.to_user_string()):
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=CHECK_HISTORY)
        # Dagster 1.13 stores the partition on a check's PLANNED record but not on the evaluation
        # of a check that ran inside its asset's step: take it from the run's planned record
        planned: dict[str, list[str]] = {}
        for record in history:
            if record.status == AssetCheckExecutionRecordStatus.PLANNED and record.partition:
                planned.setdefault(record.run_id, []).append(record.partition)
        latest: dict[str, object] = {}
        for record in history:  # newest first
            if record.status != AssetCheckExecutionRecordStatus.PLANNED:
                latest.setdefault(_partition_of(instance, record, planned), record)
        for partition, record in sorted(latest.items()):
            known.add(f"{rule.name}:{key.asset_key.to_user_string()}/{key.name}/{partition}")
            evaluation = record.event.dagster_event.event_specific_data if record.event else None
            if record.status != AssetCheckExecutionRecordStatus.FAILED or evaluation is None:
                continue
            warn = evaluation.severity == dg.AssetCheckSeverity.WARN
            if warn and not rule.params.get("include_warnings"):
                continue
            asset = key.asset_key.to_user_string()
            details = {"check": key.name, "asset": asset, "partition": partition}
            if evaluation.description:
                details["description"] = evaluation.description
            details.update(_metadata_excerpt(evaluation.metadata))
            if record.run_id:
                details["run_id"] = record.run_id
            conditions.append(
                Condition(
                    fingerprint=f"{rule.name}:{asset}/{key.name}/{partition}",
                    severity="warning" if warn else "critical",
                    summary=f"asset check {key.name} on {asset} failed ({partition})",
                    observed_at=datetime.fromtimestamp(record.create_timestamp, UTC),
                    details=details,
                    link=asset_link(ui_url, asset, None if partition == "live" else partition),
                )
            )
    return Observation(conditions, known=frozenset(known))


def _partition_of(instance: dg.DagsterInstance, record: Any, planned: Mapping[str, list[str]]) -> str:
    """`live` for a drain evaluation (no run); else the partition (or range) the run judged: from
    the record, the run's PLANNED records, or (when those fell out of the history read) its tags."""
    if record.partition:
        return record.partition
    if not record.run_id:
        return "live"
    partitions = planned.get(record.run_id)
    if not partitions:
        run = instance.get_run_by_id(record.run_id)
        tags = run.tags if run else {}
        start = tags.get("dagster/partition") or tags.get("dagster/asset_partition_range_start")
        end = tags.get("dagster/asset_partition_range_end", start)
        partitions = [p for p in (start, end) if p] or [f"run {record.run_id}"]
    first, last = min(partitions), max(partitions)
    return first if first == last else f"{first}...{last}"


def _metadata_excerpt(metadata: Mapping[str, Any], entries: int = 6, width: int = 500) -> dict[str, str]:
    """The first few metadata values of a check result (the failing values), short and printable."""
    excerpt = {}
    for name, entry in list(metadata.items())[:entries]:
        value = getattr(entry, "value", entry)
        text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
        excerpt[name] = text if len(text) <= width else text[: width - 1] + "…"
    return excerpt


def run_conditions(instance: dg.DagsterInstance, rule: Rule, now: datetime, ui_url: str) -> Observation:
    """One condition per run that failed in the last `lookback_hours` (they expire, never resolve)."""
    since = now - timedelta(hours=float(rule.params["lookback_hours"]))
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=since), limit=100
    )
    conditions = []
    for record in records:
        run = record.dagster_run
        ended = datetime.fromtimestamp(record.end_time, UTC) if record.end_time else record.update_timestamp
        partition = run.tags.get("dagster/partition") or run.tags.get("dagster/asset_partition_range_start")
        failed_steps = sorted(
            {e.step_key for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE) if e.step_key}
        )
        what = f"{run.job_name} at step {', '.join(failed_steps)}" if failed_steps else run.job_name
        conditions.append(
            Condition(
                fingerprint=f"{rule.name}:{run.run_id}",
                severity="critical",
                summary=f"run of {what} failed" + (f" (partition {partition})" if partition else ""),
                observed_at=ended,
                details={"run_id": run.run_id, "job": run.job_name, "ended": iso(ended)},
                link=f"{ui_url.rstrip('/')}/runs/{run.run_id}",
            )
        )
    # a failed run never un-fails: its condition only expires with the look-back (and a run beyond
    # the 100 read is not taken as fixed)
    return Observation(conditions, horizon=since, known=frozenset(c.fingerprint for c in conditions))


# rules that read the Dagster instance's check and run history (only the sensor has it)
DAGSTER_KINDS = ("check_failed", "run_failed")


def _observe_outside_the_tick(
    rules: Sequence[Rule], external: Mapping[str, ExternalObserver]
) -> dict[str, ExternalObserver]:
    """Each external rule's observation made now, as observers that hand it to the tick: what a rule
    observed is applied under the tick's lock as if observed there (an observer's error is raised
    there too, so the tick reports it as that rule's error)."""
    made: dict[str, Observation | Exception] = {}
    for rule in rules:
        if rule.kind in external:
            try:
                made[rule.name] = external[rule.kind](rule)
            except Exception as exc:  # reported by the tick, as an error raised inside it is
                made[rule.name] = exc

    def replay(rule: Rule) -> Observation:
        found = made[rule.name]
        if isinstance(found, Exception):
            raise found
        return found

    return {kind: replay for kind in external}


def delivery_policy(settings: PlatformSettings) -> DeliveryPolicy:
    return DeliveryPolicy(
        timeout_s=settings.alert_send_timeout_s,
        retry_base_s=settings.alert_retry_base_s,
        retry_max_s=settings.alert_retry_max_s,
        max_attempts=settings.alert_max_attempts,
        budget_s=settings.alert_delivery_budget_s,
    )


def database_tick(conn: psycopg.Connection, settings: PlatformSettings, now: datetime) -> TickReport | None:
    """A tick of the rules that read only the database (anomalies, lab and sweep out of spec, ...)
    and every delivery due, unless another tick is running (None): the drain service's, right
    after its live judges found something, so the alert does not wait for the sensor's next tick."""
    with ticking(conn, wait=False) as held:
        if not held:
            return None
        channels = read_alert_file(settings.alerts_config).channels
        rules = [r for r in read_rules(conn) if r.kind not in DAGSTER_KINDS]
        return run_tick(conn, rules, now, settings.dagster_ui_url, channels, delivery_policy(settings))


def build_alert_sensor(settings: PlatformSettings) -> dg.SensorDefinition:
    policy = delivery_policy(settings)

    @dg.sensor(
        name="alert_rules",
        minimum_interval_seconds=settings.alert_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Evaluates the alert rules (analytics.alert_rules) over anomalies, device health, quality "
        "rollups, asset checks and runs; notifies each condition once when it opens, re-opens or resolves, "
        "records every notification in analytics.alert_log and retries failed deliveries with backoff.",
    )
    def alert_rules(context: dg.SensorEvaluationContext, db: PostgresResource) -> dg.SkipReason:
        started = time.monotonic()
        now = datetime.now(UTC)
        try:
            channels = read_alert_file(settings.alerts_config).channels
        except AlertConfigError as exc:
            context.log.error(f"alert channels unavailable, notifications wait: {exc}")
            channels = {}

        def failed_checks(rule: Rule) -> Observation:
            if context.repository_def is None:  # without the definitions every open check would "resolve"
                raise RuntimeError("the sensor was evaluated without its repository; asset checks unknown")
            keys = list(context.repository_def.asset_graph.asset_check_keys)
            return check_conditions(context.instance, keys, rule, settings.dagster_ui_url)

        external = {
            "check_failed": failed_checks,
            "run_failed": lambda rule: run_conditions(context.instance, rule, now, settings.dagster_ui_url),
        }
        # the database rules (anomalies flagged live among them) every tick; the rules that read
        # the Dagster instance's check and run history only every ALERT_DAGSTER_INTERVAL_S
        last_dagster = float(context.cursor) if context.cursor else 0.0
        dagster_due = now.timestamp() - last_dagster >= settings.alert_dagster_interval_s
        with db.connect() as conn:
            rules = [r for r in read_rules(conn) if dagster_due or r.kind not in DAGSTER_KINDS]
            # the Dagster instance's check and run history is read before the tick's lock is taken:
            # those reads took 10-22 s on a busy machine, and the drain service's alert tick, which
            # does not wait while another holds the lock, waited for them (docs/benchmarks.md, "Live")
            observed = _observe_outside_the_tick(rules, external)
            with ticking(conn):
                # the database rules judged as of now, with the lock held: as of the tick's start, a
                # condition the drain service's tick opened meanwhile would look gone and be resolved
                held_at = datetime.now(UTC)
                report = run_tick(conn, rules, held_at, settings.dagster_ui_url, channels, policy, observed)
        if dagster_due:
            context.update_cursor(str(now.timestamp()))
        for name, error in report.rule_errors.items():
            context.log.error(f"alert rule {name} could not be evaluated: {error}")
        summary = f"{len(rules)} rule(s) in {time.monotonic() - started:.1f} s: {report.summary()}"
        context.log.info(summary)
        return dg.SkipReason(summary)

    return alert_rules
