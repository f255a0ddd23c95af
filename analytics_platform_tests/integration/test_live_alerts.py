"""Streaming detection (issue 22): readings, lab results and sweep batches produced to Kafka, drained,
judged by the live judges on the rows just committed, and alerted through the real alert engine to a
Slack-shaped webhook on 127.0.0.1 -- exactly once per condition, mutes respected; the hourly assets
then keep the live rows (same key: the anomaly asset confirms them, resolution kept, and closes the one
it does not find as `not_confirmed`; the lab and sweep assets rewrite the same events). Real broker,
real PostgreSQL; every step is called once, in order (no clock, no sleeping)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from analytics_platform.alerts.config import store_mutes
from analytics_platform.alerts.model import Mute, Rule
from analytics_platform.defs import build_definitions
from analytics_platform.results.anomalies import AnomalyOptions, recompute_anomalies, resolve_anomaly
from analytics_platform.results.events import recompute_quality
from analytics_platform.results.live_detection import judge_committed, judge_lab_results, judge_sweep_batches
from analytics_platform.results.spec_limits import load_spec_limits
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.alerts import HttpReceiver, tick
from analytics_platform_tests.support.api import Api, ok
from analytics_platform_tests.support.readings import body
from analytics_platform_tests.support.stack import DatabaseHandle, domain_drain, domain_topic, produce

RULE = Rule("anomaly-critical", "anomaly", params={"min_severity": 3, "max_age_hours": 24}, channels=("slack",))
LAB_RULE = Rule(
    "lab-out-of-spec", "lab_out_of_spec", params={"lookback_hours": 24, "severity": "critical"}, channels=("slack",)
)
SWEEP_RULE = Rule(
    "sweep-out-of-spec", "sweep_out_of_spec", params={"lookback_hours": 24, "severity": "critical"}, channels=("slack",)
)
OPTIONS = AnomalyOptions()
# a drain pass's budget, and how long it polls empty fetches: the tests count what one pass read, so it ends caught
# up with the watermarks, not after the drain's 5 s of silence a loaded machine's first fetch can outlast
PASS_S = 30.0
LIVE = "SELECT machine_id, method, severity, status, detected_live_at IS NOT NULL, confirmed_at IS NOT NULL, "
LIVE += "anomaly_id FROM analytics.analytics_anomaly ORDER BY machine_id, method"


@pytest.fixture
def slack() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def env(receiver: HttpReceiver) -> dict[str, str]:
    return {
        "ALERT_TEST_SLACK": f"json://127.0.0.1:{receiver.port}/slack?:message=text&:title=&:version=&:attachments=&:type="
    }


def reading(at: datetime, machine: str, value: float, n: int) -> tuple[str, bytes]:
    fields = {"machine_id": machine, "sensor_id": "s-001", "metric": "temp", "value": value, "event_id": f"e{n}"}
    return f"t1-f1-{machine}", body(at.isoformat().replace("+00:00", "Z"), **fields)


def live_sensor_tick(settings: PlatformSettings) -> str:
    """One tick of the `live_anomalies` sensor of `settings`' definitions, as the daemon evaluates it."""
    defs = build_definitions(settings, secrets_from_env=False)
    with dg.instance_for_test() as instance:
        skipped = defs.resolve_sensor_def("live_anomalies")(
            dg.build_sensor_context(instance=instance, resources=defs.resources)
        )
    return skipped.skip_message


def judge(database: DatabaseHandle):
    with database.connect(database.pipeline_url) as conn:
        return judge_committed(conn, OPTIONS)


def test_out_of_range_readings_alert_once_and_the_hour_confirms_them(
    settings: PlatformSettings, database: DatabaseHandle, slack: HttpReceiver, api: Api
) -> None:
    # the judge has been running: its cursor exists before the readings arrive
    assert judge(database).judged == 0
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    hour = at.replace(minute=0, second=0)
    # t1 says temp is plausible up to 300 (the default is 400): mc-03's 350 is out of range, for now
    database.query(
        "INSERT INTO analytics.metric_catalog (tenant_id, metric, unit, min_value, max_value) "
        "VALUES ('t1', 'temp', 'degC', -60, 300) RETURNING metric"
    )
    with database.connect(database.pipeline_url) as conn:
        store_mutes(conn, [Mute(at - timedelta(hours=1), at + timedelta(hours=1), "maintenance", machine_id="mc-02")])
    produce(
        settings.kafka_brokers,
        domain_topic(settings),
        [
            reading(at, "mc-01", 65.0, 1),
            reading(at, "mc-01", 450.0, 2),  # above any plausible temperature: a broken sensor
            reading(at, "mc-02", 500.0, 3),  # the same on a muted machine
            reading(at, "mc-03", 350.0, 4),
        ],
    )
    assert domain_drain(settings, cold_fetch_s=PASS_S).run(budget_s=PASS_S).messages == 4

    live = judge(database)
    assert (live.judged, live.flagged) == (4, 3)
    rows = database.query(LIVE)
    assert [r[:6] for r in rows] == [
        ("mc-01", "range", 4, "open", True, False),
        ("mc-02", "range", 4, "open", True, False),
        ("mc-03", "range", 4, "open", True, False),
    ]

    report = tick(database, datetime.now(UTC), env(slack), (RULE,))
    assert report.rule_errors == {}
    assert (report.opened, report.sent, report.muted) == (3, 2, 1)
    texts = sorted((b["text"] for _, b in slack.requests), key=lambda t: t.split("Where: ")[1])
    assert len(texts) == 2
    what = "What: temperature anomaly event on temp: 1 anomaly (range), peak severity 4 (rule anomaly-critical"
    assert texts[0].startswith(what) and texts[1].startswith(what)
    assert "Where: t1/f1/mc-01\n" in texts[0] and "Where: t1/f1/mc-03\n" in texts[1]
    # the limit that applies: t1's own catalogue entry (300), not the default (400)
    assert "How bad: critical; " in texts[0] and "; observed 450.0; expected 300.0; " in texts[0]
    assert "; observed 350.0; expected 300.0; " in texts[1]
    assert f"event/{at.replace(second=0).strftime('%Y-%m-%dT%H:%M:%SZ')}" in texts[0]  # the reading's sample

    # the same rows judged again (a restart that lost its position) and another tick: nothing new
    database.query("UPDATE analytics.live_detection_cursor SET position = position - interval '1 hour' RETURNING 1")
    again = judge(database)
    assert (again.judged, again.flagged) == (4, 0)
    report = tick(database, datetime.now(UTC), env(slack), (RULE,))
    assert (report.opened, report.queued, report.sent) == (0, 0, 0)
    assert len(slack.requests) == 2

    # an engineer resolves mc-02's row; t1's override goes (350 is plausible after all); the hour runs
    mc02 = next(r[6] for r in rows if r[0] == "mc-02")
    with database.connect(database.pipeline_url) as conn:
        assert resolve_anomaly(conn, mc02, "sensor replaced", "ops")
    database.query("DELETE FROM analytics.metric_catalog WHERE tenant_id = 't1' RETURNING 1")
    with database.connect(database.pipeline_url) as conn:
        recompute_anomalies(conn, hour, hour + timedelta(hours=1), OPTIONS)
    after = database.query(LIVE)
    assert [r[:6] for r in after] == [
        ("mc-01", "range", 4, "open", True, True),  # confirmed: the same row, not a second one
        ("mc-02", "range", 4, "resolved", True, True),  # confirmed, its resolution kept
        ("mc-03", "range", 4, "not_confirmed", True, False),  # the hour does not find it: closed
    ]
    assert [r[6] for r in after] == [r[6] for r in rows]

    # mc-01's alert stays the one it was; mc-03's condition resolves (its row is closed)
    report = tick(database, datetime.now(UTC), env(slack), (RULE,))
    assert (report.opened, report.reopened, report.resolved) == (0, 0, 2)
    resolved = sorted(b["text"] for _, b in slack.requests[2:])
    assert len(resolved) == 1 and "Where: t1/f1/mc-03\n" in resolved[0] and "; resolved " in resolved[0]
    # ... and the engineer's resolution of mc-02 was muted like its opening
    assert database.query(
        "SELECT fingerprint LIKE '%%mc-01%%', state FROM analytics.alert_conditions ORDER BY fingerprint"
    ) == [(True, "open"), (False, "resolved"), (False, "resolved")]

    # as events: mc-03's is not_confirmed (not "resolved": nobody resolved it), and resolving it
    # changes nothing (a resolution is an engineer's finding; there is nothing open to resolve)
    span = (hour - timedelta(hours=1), hour + timedelta(hours=2))
    events = database.query("SELECT machine_id, status FROM analytics.anomaly_events(%s, %s) ORDER BY 1", span)
    assert events == [("mc-01", "open"), ("mc-02", "resolved"), ("mc-03", "not_confirmed")]
    mc03 = next(r[6] for r in rows if r[0] == "mc-03")
    resolve = "SELECT analytics.resolve_anomaly_event(%s, %s, %s, 'checked', 'ops')"
    assert database.scalar(resolve, (mc03, *span)) == 0
    assert database.scalar("SELECT status FROM analytics.analytics_anomaly WHERE anomaly_id = %s", (mc03,)) == (
        "not_confirmed"
    )
    # ... and so through the API: listed as not_confirmed; resolving it is a conflict, not a 404
    window = {"start": span[0].strftime("%Y-%m-%dT%H:%M:%SZ"), "end": span[1].strftime("%Y-%m-%dT%H:%M:%SZ")}
    listed = ok(api.admin.get("/v1/anomaly-events", status="not_confirmed", **window))["items"]
    assert [(e["machine_id"], e["event_id"], e["status"]) for e in listed] == [("mc-03", mc03, "not_confirmed")]
    answer = api.resolver.post(
        f"/v1/anomaly-events/{mc03}/resolve?start={window['start']}&end={window['end']}", {"note": "checked"}
    )
    assert answer.status_code == 409 and "not_confirmed" in answer.json()["detail"], answer.text


def lab_result(at: datetime, sample: str, analyte: str, value: float) -> tuple[str, bytes]:
    fields = {"machine_id": "lab-f1", "station_id": "lab-f1", "sample_id": sample, "analyte": analyte, "value": value}
    return "t1-f1-lab-f1", body(at.isoformat().replace("+00:00", "Z"), **fields)


def judge_lab(database: DatabaseHandle):
    with database.connect(database.pipeline_url) as conn:
        return judge_lab_results(conn)


def test_out_of_spec_lab_results_alert_once_and_the_hour_keeps_their_conditions(
    settings: PlatformSettings, database: DatabaseHandle, slack: HttpReceiver
) -> None:
    with database.connect() as conn:
        load_spec_limits(conn)  # config/spec_limits.yaml: t1 Moisture 11.5..13.5, pH 6.5..7.1, no Ash limit
    assert judge_lab(database).judged == 0  # the judge has been running: its cursor exists
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    hour = at.replace(minute=0, second=0)
    produce(
        settings.kafka_brokers,
        domain_topic(settings, "lab"),
        [
            lab_result(at, "S-1", "Moisture", 12.0),  # inside 11.5..13.5: passed
            lab_result(at, "S-2", "Moisture", 14.0),  # above 13.5: failed
            lab_result(at, "S-3", "pH", 7.5),  # above 7.1: failed
            lab_result(at, "S-4", "Ash", 1.0),  # no limit: no verdict
        ],
    )
    assert domain_drain(settings, "lab", cold_fetch_s=PASS_S).run(budget_s=PASS_S).messages == 4

    # the two failures are their lab_result events at once; the others wait for the hour. This pass is
    # the `live_anomalies` sensor's, as the Dagster daemon evaluates it, in a deployment of device and
    # lab data only (no sensor domain, so no anomaly asset: the sensor is there for the lab judge alone)
    lab_only = settings.model_copy(update={"domains_enabled": ["device", "lab"]})
    assert live_sensor_tick(lab_only) == "4 lab result(s), 2 new out-of-spec event(s)"
    events = "SELECT details->>'sample_id', value, passed, event_key FROM analytics.analytics_event ORDER BY 1"
    failed = database.query(events)
    assert [r[:3] for r in failed] == [("S-2", 14.0, False), ("S-3", 7.5, False)]

    report = tick(database, datetime.now(UTC), env(slack), (LAB_RULE,))
    assert report.rule_errors == {}
    assert (report.opened, report.sent) == (2, 2)
    texts = sorted(b["text"] for _, b in slack.requests)
    assert texts[0].startswith("What: lab Moisture = 14 ") and "outside spec [11.5, 13.5] (sample S-2)" in texts[0]
    assert texts[1].startswith("What: lab pH = 7.5 ") and "outside spec [6.5, 7.1] (sample S-3)" in texts[1]
    assert all("Where: t1/f1/lab-f1\n" in t for t in texts)

    # judged again (a restart that lost its position): nothing new
    database.query("UPDATE analytics.live_detection_cursor SET position = position - interval '1 hour' RETURNING 1")
    again = judge_lab(database)
    assert (again.judged, again.flagged) == (4, 0)
    assert database.query(events) == failed

    # the lab_result_quality asset's hour: every verdict, the failures with the live rows' keys, so the
    # alert sensor sees the same two conditions and notifies nothing
    with database.connect(database.pipeline_url) as conn:
        recompute_quality(conn, "lab", settings.windows, hour, hour + timedelta(hours=1))
    assert [r[:3] for r in database.query(events)] == [
        ("S-1", 12.0, True),
        ("S-2", 14.0, False),
        ("S-3", 7.5, False),
        ("S-4", 1.0, None),
    ]
    assert [r for r in database.query(events) if r[2] is False] == failed
    report = tick(database, datetime.now(UTC), env(slack), (LAB_RULE,))
    assert (report.opened, report.reopened, report.resolved, report.sent) == (0, 0, 0, 0)
    assert len(slack.requests) == 2

    # the hour is the record: Moisture's limit widens to 15 and the hour is judged again: S-2 passes,
    # its condition resolves (one notification); S-3's stays
    database.query(
        "UPDATE analytics.analytics_spec_limits SET upper_limit = 15 WHERE tenant_id = 't1' AND name = 'Moisture' "
        "RETURNING 1"
    )
    with database.connect(database.pipeline_url) as conn:
        recompute_quality(conn, "lab", settings.windows, hour, hour + timedelta(hours=1))
    report = tick(database, datetime.now(UTC), env(slack), (LAB_RULE,))
    assert (report.opened, report.resolved) == (0, 1)
    (resolved,) = [b["text"] for _, b in slack.requests[2:]]
    assert "(sample S-2)" in resolved and "; resolved " in resolved


def sweep(at: datetime, machine: str, batch: str, *values: float) -> tuple[str, bytes]:
    fields = {"machine_id": machine, "metric": "temp", "batch_id": batch, "readings": [{"value": v} for v in values]}
    return f"t1-f1-{machine}", body(at.isoformat().replace("+00:00", "Z"), **fields)


def judge_sweeps(database: DatabaseHandle):
    with database.connect(database.pipeline_url) as conn:
        return judge_sweep_batches(conn)


def test_out_of_spec_sweep_batches_alert_once_and_the_hour_keeps_their_conditions(
    settings: PlatformSettings, database: DatabaseHandle, slack: HttpReceiver
) -> None:
    with database.connect() as conn:
        load_spec_limits(conn)  # config/spec_limits.yaml: t1 temp 63..67
    assert judge_sweeps(database).judged == 0  # the judge has been running: its cursor exists
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    hour = at.replace(minute=0, second=0)
    with database.connect(database.pipeline_url) as conn:
        store_mutes(conn, [Mute(at - timedelta(hours=1), at + timedelta(hours=1), "maintenance", machine_id="mc-02")])
    produce(
        settings.kafka_brokers,
        domain_topic(settings, "sweep"),
        [
            sweep(at, "mc-01", "B-1", 64.0, 65.0, 66.0),  # inside 63..67: passed
            sweep(at, "mc-01", "B-2", 62.0, 65.0),  # 62 below 63: failed
            sweep(at, "mc-02", "B-3", 68.0, 69.0),  # above 67: failed, on a muted machine
        ],
    )
    assert domain_drain(settings, "sweep", cold_fetch_s=PASS_S).run(budget_s=PASS_S).messages == 3

    # the two failures are their sweep_batch events at once; the passed batch waits for the hour. This
    # pass is the `live_anomalies` sensor's, as the Dagster daemon evaluates it
    assert live_sensor_tick(settings) == (
        "judged 0 reading(s), 0 new anomaly row(s); 0 lab result(s), 0 new out-of-spec event(s); "
        "3 sweep batch(es), 2 new out-of-spec event(s); 0 reading(s) of closed samples, 0 new seasonal anomaly row(s)"
    )
    events = "SELECT details->>'batch_id', value, passed, event_key FROM analytics.analytics_event ORDER BY 1"
    failed = database.query(events)
    assert [r[:3] for r in failed] == [("B-2", 63.5, False), ("B-3", 68.5, False)]

    report = tick(database, datetime.now(UTC), env(slack), (SWEEP_RULE,))
    assert report.rule_errors == {}
    assert (report.opened, report.sent, report.muted) == (2, 1, 1)
    (text,) = [b["text"] for _, b in slack.requests]
    assert text.startswith("What: sweep temp: 1 of 2 reading(s) outside spec [63, 67] (min 62, max 65, batch B-2)")
    assert "Where: t1/f1/mc-01\n" in text and "How bad: critical" in text

    # judged again (a restart that lost its position): nothing new
    database.query("UPDATE analytics.live_detection_cursor SET position = position - interval '1 hour' RETURNING 1")
    again = judge_sweeps(database)
    assert (again.judged, again.flagged) == (3, 0)
    assert database.query(events) == failed
    report = tick(database, datetime.now(UTC), env(slack), (SWEEP_RULE,))
    assert (report.opened, report.queued, report.sent) == (0, 0, 0)

    # the sweep_batch_quality asset's hour: every verdict, the failures with the live rows' keys, so
    # the alert sensor sees the same two conditions and notifies nothing
    with database.connect(database.pipeline_url) as conn:
        recompute_quality(conn, "sweep", settings.windows, hour, hour + timedelta(hours=1))
    assert [r[:3] for r in database.query(events)] == [("B-1", 65.0, True), ("B-2", 63.5, False), ("B-3", 68.5, False)]
    assert [r for r in database.query(events) if r[2] is False] == failed
    report = tick(database, datetime.now(UTC), env(slack), (SWEEP_RULE,))
    assert (report.opened, report.reopened, report.resolved, report.sent) == (0, 0, 0, 0)
    assert len(slack.requests) == 1

    # the hour is the record: temp's lower limit drops to 61 and the hour is judged again: B-2 passes,
    # its condition resolves (one notification); B-3's stays, still muted
    database.query(
        "UPDATE analytics.analytics_spec_limits SET lower_limit = 61 WHERE tenant_id = 't1' AND name = 'temp' "
        "RETURNING 1"
    )
    with database.connect(database.pipeline_url) as conn:
        recompute_quality(conn, "sweep", settings.windows, hour, hour + timedelta(hours=1))
    report = tick(database, datetime.now(UTC), env(slack), (SWEEP_RULE,))
    assert (report.opened, report.resolved, report.sent) == (0, 1, 1)
    (resolved,) = [b["text"] for _, b in slack.requests[1:]]
    assert "batch B-2)" in resolved and "; resolved " in resolved
    assert database.query(
        "SELECT fingerprint LIKE '%%mc-01%%', state FROM analytics.alert_conditions ORDER BY fingerprint"
    ) == [(True, "resolved"), (False, "open")]
