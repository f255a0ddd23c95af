"""Real alert receivers on 127.0.0.1 and the alert engine's tick at a given clock.

A local HTTP server stands in for the Slack and webhook endpoints (it records every request) and a
local SMTP server (aiosmtpd) for e-mail: notifications go out through Apprise exactly as in
production, only the URLs point here. `tick` runs one evaluation and delivery as the alert sensor
does, at an explicit `now`, so retries and backoff need no sleeping. `insert_anomaly` writes an
anomalous sample as the detector does, for the rules to find."""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import threading
from datetime import UTC, datetime, timedelta

from aiosmtpd.controller import Controller

from analytics_platform.alerts.config import Channel
from analytics_platform.alerts.engine import DeliveryPolicy, TickReport, run_tick
from analytics_platform.alerts.model import Rule
from analytics_platform.devstack.processes import free_port
from analytics_platform_tests.support.stack import DatabaseHandle

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


UI = "http://dagster.test:3000"


class HttpReceiver:
    """Records each POST (path, JSON body); can be taken down and brought back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[str, dict]] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                requests.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class MailReceiver:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd handler hook
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


CHANNELS = {
    "slack": Channel("slack", "slack", "ALERT_TEST_SLACK"),
    "hook": Channel("hook", "webhook", "ALERT_TEST_HOOK"),
    "mail": Channel("mail", "email", "ALERT_TEST_MAIL"),
}


POLICY = DeliveryPolicy(timeout_s=2, retry_base_s=30, retry_max_s=600, max_attempts=3, budget_s=30)


RULE = Rule(
    "anomaly-critical", "anomaly", params={"min_severity": 3, "max_age_hours": 24}, channels=("slack", "hook", "mail")
)


# the sweep fail-rate rule of the tests: over 20 % failed of at least 5 verdicts in an hour of 5-minute rollups
FAIL_RATE = Rule(
    "sweeps",
    "fail_rate",
    params={
        "event_types": ["sweep_batch"],
        "window_minutes": 60,
        "bucket_s": 300,
        "threshold": 0.2,
        "min_count": 5,
        "severity": "warning",
    },
    channels=("hook",),
)


def environ(http: HttpReceiver, mail: MailReceiver) -> dict[str, str]:
    """Where each channel points: a Slack-shaped JSON body ({"text": ...}) for the Slack stand-in,
    the generic JSON webhook, and plain SMTP on the local server."""
    base = f"127.0.0.1:{http.port}"
    return {
        "ALERT_TEST_SLACK": f"json://{base}/slack?:message=text&:title=&:version=&:attachments=&:type=",
        "ALERT_TEST_HOOK": f"json://{base}/hook",
        "ALERT_TEST_MAIL": f"mailto://127.0.0.1:{mail.port}?from=alerts@plant.test&to=ops@plant.test&mode=insecure",
    }


def insert_anomaly(
    db: DatabaseHandle,
    machine: str,
    severity: int,
    at: datetime,
    method: str = "deviation",
    *,
    sample_s: float | None = 60.0,
    window_s: float | None = None,
    tenant: str = "t1",
    sensor: str | None = "s-temp",
    metric: str | None = "temp",
    anomaly_type: str = "temperature",
) -> int:
    """One anomalous sample as the detector writes it: judged at `at` over [at, at + sample_s)
    (or `window_s` for an interval such as a stoppage, which has no sample spacing)."""
    end = at + timedelta(seconds=window_s if window_s is not None else sample_s or 0)
    label = "critical" if severity >= 3 else "warning" if severity == 2 else "info"
    return db.scalar(
        """INSERT INTO analytics.analytics_anomaly
               (time, window_start, window_end, sample_s, tenant_id, factory_id, machine_id, sensor_id, metric,
                anomaly_type, method, score, severity, severity_label, confidence, observed, expected)
           VALUES (%s, %s, %s, %s, %s, 'f1', %s, %s, %s, %s, %s, 4.2, %s, %s, 0.9, 95, 65)
           RETURNING anomaly_id""",
        (at, at, end, sample_s, tenant, machine, sensor, metric, anomaly_type, method, severity, label),
    )


def tick(db: DatabaseHandle, now: datetime, env: dict[str, str], rules=(RULE,)) -> TickReport:
    """One evaluation + delivery, as the alert sensor does it, at `now`."""
    with db.connect(db.pipeline_url) as conn:
        return run_tick(conn, list(rules), now, UI, CHANNELS, POLICY, environ=env)
