"""The alert engine's tick delivers to a signed webhook channel (the shipped alerts file's ops-webhook shape:
url_env + secret_env) with the alert's fields in the signed body, which the receiver verifies; and with the secret
unset it sends nothing and logs the notification `unconfigured` with the reason, never unsigned."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from analytics_platform.alerts import delivery
from analytics_platform.alerts.config import Channel, store_rules
from analytics_platform.alerts.engine import run_tick
from analytics_platform.alerts.model import Rule
from analytics_platform_tests.support.alerts import NOW, POLICY, UI, insert_anomaly
from analytics_platform_tests.support.channels import HttpsReceiver, TestCA, verify_signature
from analytics_platform_tests.support.stack import DatabaseHandle

SECRET = "whsec-plant-0123456789"
CHANNELS = {"hook": Channel("hook", "webhook", "ALERT_HOOK_URL", "ALERT_HOOK_SECRET")}
RULE = Rule("anomaly-critical", "anomaly", params={"min_severity": 3, "max_age_hours": 24}, channels=("hook",))


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpsReceiver]:
    ca = TestCA(tmp_path)
    ca.trust(monkeypatch)
    server = HttpsReceiver(ca)
    server.verify = verify_signature(SECRET)
    server.start()
    yield server
    server.stop()


def tick(database: DatabaseHandle, env: dict[str, str]):
    with database.connect(database.pipeline_url) as conn:
        return run_tick(conn, [RULE], NOW, UI, CHANNELS, POLICY, environ=env)


def test_a_tick_signs_the_webhook_and_the_receiver_verifies_it(
    database: DatabaseHandle, receiver: HttpsReceiver
) -> None:
    with database.connect() as conn:
        store_rules(conn, [RULE])
    insert_anomaly(database, "mc-01", 4, NOW - timedelta(minutes=10))
    env = {"ALERT_HOOK_URL": f"jsons://127.0.0.1:{receiver.port}/plant-hook", "ALERT_HOOK_SECRET": SECRET}
    report = tick(database, env)
    assert (report.opened, report.sent, report.failed) == (1, 1, 0)
    assert receiver.refusals == []
    (request,) = receiver.requests
    stamp = int(request.headers["x-analytics-timestamp"])
    assert request.headers["x-analytics-signature"] == delivery.signature(SECRET, stamp, request.body)
    ((fingerprint, title, body, link, status),) = database.query(
        "SELECT fingerprint, title, body, link, status FROM analytics.alert_log"
    )
    assert status == "sent"
    assert request.json() == {
        "version": "1.0",
        "title": title,
        "message": body,
        "attachments": [],
        "type": "info",
        "rule": "anomaly-critical",
        "fingerprint": fingerprint,
        "transition": "open",
        "severity": "critical",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "mc-01",
        **({"link": link} if link else {}),
    }
    assert title.startswith("[CRITICAL] t1/f1/mc-01: ")


def test_without_its_secret_the_webhook_sends_nothing_and_says_why(
    database: DatabaseHandle, receiver: HttpsReceiver
) -> None:
    with database.connect() as conn:
        store_rules(conn, [RULE])
    insert_anomaly(database, "mc-01", 4, NOW - timedelta(minutes=10))
    report = tick(database, {"ALERT_HOOK_URL": f"jsons://127.0.0.1:{receiver.port}/plant-hook"})
    assert (report.opened, report.sent) == (1, 0)
    assert receiver.requests == []
    assert database.query("SELECT channel, status, error FROM analytics.alert_log") == [
        ("hook", "unconfigured", "ALERT_HOOK_SECRET is not set (the webhook channel 'hook' signs its requests with it)")
    ]
