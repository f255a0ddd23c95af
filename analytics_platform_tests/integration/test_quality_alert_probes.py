"""Quality alerts as a real plant breaks them: sweep batches sent without a batch id or event id (a
PLC that only knows its metric), the same machine ids in two tenants. Real broker, drain, database
and HTTP receiver; the asset's own function judges the hour; time is passed explicitly (`now`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from analytics_platform.alerts.model import Rule
from analytics_platform.results.events import recompute_quality
from analytics_platform.results.spec_limits import load_spec_limits
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.alerts import HttpReceiver, MailReceiver, environ, tick
from analytics_platform_tests.support.stack import DatabaseHandle, domain_drain, domain_topic, produce

H9 = datetime(2025, 8, 20, 9, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
SWEEP = Rule(
    "sweep-out-of-spec", "sweep_out_of_spec", params={"lookback_hours": 24, "severity": "critical"}, channels=("hook",)
)


def sweep(tenant: str, at: datetime, values: list[float]) -> tuple[str, bytes]:
    """A sweep batch of `tenant`/f1/mc-01's temp with neither batch_id nor event_id."""
    body = {
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tenant_id": tenant,
        "factory_id": "f1",
        "machine_id": "mc-01",
        "metric": "temp",
        "unit": "degC",
        "readings": [{"value": v} for v in values],
    }
    return f"{tenant}-f1-mc-01", json.dumps(body).encode()


def test_each_failed_sweep_batch_without_a_batch_id_is_its_own_alert(
    settings: PlatformSettings, database: DatabaseHandle, receivers: tuple[HttpReceiver, MailReceiver]
) -> None:
    # temp limits are 63-67 degC (t1) and 62.5-67.5 (t2). t1's mc-01 fails at 09:10 and again at 09:40;
    # t2's mc-01 (same factory and machine id) fails at 09:10. Three failed batches, three alerts: "one
    # alert per failed sweep batch" (docs/alerts.md), whatever ids the sender gave them.
    http, mail = receivers
    with database.connect() as conn:
        load_spec_limits(conn)
    messages = [
        sweep("t1", H9 + 10 * MINUTE, [64.0, 70.0]),
        sweep("t1", H9 + 25 * MINUTE, [65.0, 65.5]),  # passes
        sweep("t1", H9 + 40 * MINUTE, [60.0, 64.0]),
        sweep("t2", H9 + 10 * MINUTE, [64.0, 70.0]),
    ]
    produce(settings.kafka_brokers, domain_topic(settings, "sweep"), messages)
    domain_drain(settings, "sweep", cold_fetch_s=30.0).run(budget_s=30)
    with database.connect(database.pipeline_url) as conn:
        recompute_quality(conn, "sweep", [3600], H9, H9 + timedelta(hours=1))
    failed = database.query(
        "SELECT tenant_id, time FROM analytics.analytics_event WHERE event_type = 'sweep_batch' AND NOT passed "
        "ORDER BY tenant_id, time"
    )
    assert failed == [("t1", H9 + 10 * MINUTE), ("t1", H9 + 40 * MINUTE), ("t2", H9 + 10 * MINUTE)]

    report = tick(database, H9 + 45 * MINUTE, environ(http, mail), [SWEEP])
    assert report.rule_errors == {}
    sent = sorted((b["tenant_id"], b["message"].split("When: ")[1][:20]) for _, b in http.requests)
    assert sent == [
        ("t1", "2025-08-20T09:10:00Z"),
        ("t1", "2025-08-20T09:40:00Z"),
        ("t2", "2025-08-20T09:10:00Z"),
    ], "the second failed batch of a machine shared the first one's alert and was never notified"
    assert database.scalar("SELECT count(*) FROM analytics.alert_conditions WHERE state = 'open'") == 3
