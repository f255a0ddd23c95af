"""Every notification channel on its own protocol, against a local receiver that speaks it (over TLS verified
against a test CA): Slack's incoming webhook and its Web API chat.postMessage, the LINE Messaging API push,
Microsoft Teams through a Workflows webhook, e-mail over SMTP with STARTTLS and AUTH, and the generic webhook
signed with HMAC-SHA256, which the receiver verifies. Each request is checked whole: method, path, query, auth
and the exact body; and a refusal by the service comes back as the delivery's error, free of the secret."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics_platform.alerts import delivery
from analytics_platform.alerts.config import AlertConfigError, parse_alert_config
from analytics_platform.alerts.engine import channel_problem
from analytics_platform_tests.support.channels import (
    HttpsReceiver,
    Reply,
    Request,
    SmtpsReceiver,
    TestCA,
    redirect_apprise,
    verify_signature,
)

TITLE = "[CRITICAL] t1/f1/mc-01: temp 95 (expected 65)"
BODY = "What: temp 95 (expected 65) (rule anomaly-critical, anomaly)\nWhere: t1/f1/mc-01\nFingerprint: fp-1"
FIELDS = {
    "rule": "anomaly-critical",
    "fingerprint": "fp-1",
    "transition": "open",
    "severity": "critical",
    "tenant_id": "t1",
    "factory_id": "f1",
    "machine_id": "mc-01",
    "link": None,
}
TIMEOUT_S = 5
# a Teams TextBlock renders Markdown: the body's Markdown characters arrive escaped, so they show as written
TEAMS_BODY = (
    "What: temp 95 \\(expected 65\\) \\(rule anomaly\\-critical, anomaly\\)\nWhere: t1/f1/mc\\-01\nFingerprint: fp\\-1"
)


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestCA:
    authority = TestCA(tmp_path)
    authority.trust(monkeypatch)
    return authority


@pytest.fixture
def receiver(ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpsReceiver]:
    server = HttpsReceiver(ca)
    redirect_apprise(monkeypatch, server)
    server.start()
    yield server
    server.stop()


def bearer(token: str):
    """A service's check of its API token (Slack's Web API and LINE's answer 401/invalid_auth otherwise)."""

    def check(request: Request) -> str | None:
        return None if request.headers.get("authorization") == f"Bearer {token}" else "invalid_auth"

    return check


def only(receiver: HttpsReceiver) -> Request:
    assert len(receiver.requests) == 1, receiver.requests
    return receiver.requests[0]


def test_slack_incoming_webhook(receiver: HttpsReceiver) -> None:
    url = "https://hooks.slack.com/services/T0AAA1111/B0BBB2222/abcdefghijklmnopqrstuvwx"
    assert delivery.send(url, TITLE, BODY, {}, TIMEOUT_S) is None
    request = only(receiver)
    assert (request.method, request.path, request.query) == (
        "POST",
        "/services/T0AAA1111/B0BBB2222/abcdefghijklmnopqrstuvwx",
        {},
    )
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert "authorization" not in request.headers  # the webhook's path is its secret
    assert request.json() == {"mrkdwn": False, "attachments": [{"title": TITLE, "text": BODY, "color": "#3AA3E3"}]}


def test_slack_incoming_webhook_refused_says_so_without_the_secret(receiver: HttpsReceiver) -> None:
    receiver.replies["/services/T0AAA1111/B0BBB2222/abcdefghijklmnopqrstuvwx"] = Reply(404, b"no_service")
    url = "https://hooks.slack.com/services/T0AAA1111/B0BBB2222/abcdefghijklmnopqrstuvwx"
    error = delivery.send(url, TITLE, BODY, {}, TIMEOUT_S)
    assert error is not None and "404" in error
    assert "abcdefghijklmnopqrstuvwx" not in error


def test_slack_chat_post_message(receiver: HttpsReceiver) -> None:
    token = "xoxb-1111111111-2222222222-abcdefabcdefabcdefabcdef"
    receiver.verify = bearer(token)
    receiver.replies["/api/chat.postMessage"] = Reply(
        200, json.dumps({"ok": True, "channel": "C0123456789", "ts": "1767225600.000100"}).encode(), "application/json"
    )
    assert delivery.send(f"slack://{token}/#plant-alerts", TITLE, BODY, {}, TIMEOUT_S) is None
    request = only(receiver)
    assert (request.method, request.path, request.query) == ("POST", "/api/chat.postMessage", {})
    assert request.headers["authorization"] == f"Bearer {token}"
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.json() == {
        "mrkdwn": False,
        "attachments": [{"title": TITLE, "text": BODY, "color": "#3AA3E3"}],
        "channel": "#plant-alerts",
    }


def test_slack_chat_post_message_with_a_revoked_token_fails(receiver: HttpsReceiver) -> None:
    # the Web API answers HTTP 200 with ok: false; the delivery must not count that as sent
    receiver.replies["/api/chat.postMessage"] = Reply(
        200, json.dumps({"ok": False, "error": "token_revoked"}).encode(), "application/json"
    )
    token = "xoxb-1111111111-2222222222-abcdefabcdefabcdefabcdef"
    error = delivery.send(f"slack://{token}/#plant-alerts", TITLE, BODY, {}, TIMEOUT_S)
    assert error == "Failed to send to Slack: error=200."  # Apprise's words; the token appears nowhere


def test_line_messaging_api_push(receiver: HttpsReceiver) -> None:
    token = "lineChannelAccessToken0123456789abcdef="
    receiver.verify = bearer(token)
    receiver.replies["/v2/bot/message/push"] = Reply(200, b"{}", "application/json")
    user = "U4af4980629abcdef0123456789abcdef"
    assert delivery.send(f"line://{token}/{user}", TITLE, BODY, {}, TIMEOUT_S) is None
    request = only(receiver)
    assert (request.method, request.path, request.query) == ("POST", "/v2/bot/message/push", {})
    assert request.headers["authorization"] == f"Bearer {token}"
    assert request.headers["content-type"] == "application/json"
    # LINE shows no title: it leads the text; the sender name is the platform's, not a library's
    assert request.json() == {
        "to": user,
        "messages": [{"type": "text", "text": f"{TITLE}\r\n{BODY}", "sender": {"name": "analytics-platform"}}],
    }


def test_line_push_with_a_wrong_token_fails(receiver: HttpsReceiver) -> None:
    receiver.verify = bearer("the-right-token")
    error = delivery.send("line://a-wrong-token-0123456789/U4af4980629", TITLE, BODY, {}, TIMEOUT_S)
    assert error is not None and "401" in error
    assert "a-wrong-token-0123456789" not in error
    assert receiver.refusals == ["invalid_auth"]


def test_teams_workflows_webhook_posts_an_adaptive_card(receiver: HttpsReceiver) -> None:
    workflow, sig = "8f5c2d6e0b1a4c3d9e7f6a5b4c3d2e1f", "KODuebWbDGYFr0z0eu-6Rj8aUKz7108W3wrNJZxFE5A"
    path = f"/workflows/{workflow}/triggers/manual/paths/invoke"
    receiver.replies[path] = Reply(202, b"", "text/plain")  # a Workflows trigger answers 202 Accepted
    assert delivery.send(f"workflows://127.0.0.1:{receiver.port}/{workflow}/{sig}", TITLE, BODY, {}, TIMEOUT_S) is None
    request = only(receiver)
    assert (request.method, request.path) == ("POST", path)
    assert request.query == {"api-version": ["2016-06-01"], "sp": ["/triggers/manual/run"], "sv": ["1.0"], "sig": [sig]}
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": TITLE,
                            "style": "heading",
                            "weight": "Bolder",
                            "size": "Large",
                            "id": "title",
                        },
                        {"type": "TextBlock", "text": TEAMS_BODY, "style": "default", "wrap": True, "id": "body"},
                    ],
                    "msteams": {"width": "full"},
                },
            }
        ],
    }


def test_email_over_starttls_with_auth(ca: TestCA) -> None:
    mail = SmtpsReceiver(ca, "alerts@plant.test", "smtp-s3cret")
    mail.start()
    try:
        url = (
            f"mailtos://alerts%40plant.test:smtp-s3cret@127.0.0.1:{mail.port}"
            "?mode=starttls&from=alerts@plant.test&to=ops@plant.test"
        )
        assert delivery.send(url, TITLE, BODY, {}, TIMEOUT_S) is None
    finally:
        mail.stop()
    assert mail.logins == [("PLAIN", "alerts@plant.test", True)]
    (sent,) = mail.mails
    assert (sent.tls, sent.mail_from, sent.rcpt_tos) == (True, "alerts@plant.test", ["ops@plant.test"])
    message = sent.message
    assert (message["Subject"], message["From"], message["To"]) == (TITLE, "alerts@plant.test", "ops@plant.test")
    assert message["X-Application"] == "analytics-platform"
    assert message.get_content_type() == "text/plain"
    # SMTP carries lines ending CRLF
    assert message.get_content().replace("\r\n", "\n").rstrip("\n") == BODY


def test_email_with_a_wrong_password_is_refused_and_sends_nothing(ca: TestCA) -> None:
    mail = SmtpsReceiver(ca, "alerts@plant.test", "smtp-s3cret")
    mail.start()
    try:
        url = (
            f"mailtos://alerts%40plant.test:wrong-pass@127.0.0.1:{mail.port}"
            "?mode=starttls&from=alerts@plant.test&to=ops@plant.test"
        )
        error = delivery.send(url, TITLE, BODY, {}, TIMEOUT_S)
    finally:
        mail.stop()
    assert error is not None and "wrong-pass" not in error
    # smtplib tries each mechanism the server offers before it gives up
    assert mail.logins == [("PLAIN", "alerts@plant.test", False), ("LOGIN", "alerts@plant.test", False)]
    assert mail.mails == []


def test_signed_webhook_is_verified_by_the_receiver(receiver: HttpsReceiver) -> None:
    secret = "whsec-0123456789abcdef"
    receiver.verify = verify_signature(secret)
    url = f"jsons://127.0.0.1:{receiver.port}/hooks/plant?+X-Team=ops"
    assert delivery.send(url, TITLE, BODY, FIELDS, TIMEOUT_S, secret=secret) is None
    request = only(receiver)
    assert receiver.refusals == []
    assert (request.method, request.path, request.query) == ("POST", "/hooks/plant", {})
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-team"] == "ops"
    stamp = request.headers["x-analytics-timestamp"]
    assert request.headers["x-analytics-signature"] == delivery.signature(secret, int(stamp), request.body)
    # the body an unsigned json:// channel gets, with the alert's fields (None left out), as the bytes signed
    assert request.json() == {
        "version": "1.0",
        "title": TITLE,
        "message": BODY,
        "attachments": [],
        "type": "info",
        "rule": "anomaly-critical",
        "fingerprint": "fp-1",
        "transition": "open",
        "severity": "critical",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "mc-01",
    }


def test_a_webhook_signed_with_another_secret_is_refused(receiver: HttpsReceiver) -> None:
    receiver.verify = verify_signature("the-receivers-secret")
    url = f"https://127.0.0.1:{receiver.port}/hooks/plant"
    error = delivery.send(url, TITLE, BODY, FIELDS, TIMEOUT_S, secret="another-secret")
    assert error == "the webhook at 127.0.0.1 answered 401 Unauthorized"
    assert receiver.refusals == ["bad signature"]


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    # a receiver in any language can check this: HMAC-SHA256(key="secret", msg="1767225600.{}")
    assert delivery.signature("secret", 1767225600, b"{}") == (
        "sha256=" + __import__("hmac").new(b"secret", b"1767225600.{}", "sha256").hexdigest()
    )


def test_a_signed_webhook_refuses_a_non_http_url() -> None:
    assert delivery.send("mailto://x@y", TITLE, BODY, {}, TIMEOUT_S, secret="s") == (
        "a signed webhook's URL must be json://, jsons://, http:// or https://"
    )


def test_webhook_channels_sign_with_their_secret_variable_and_refuse_to_send_unsigned() -> None:
    config = parse_alert_config(
        {
            "channels": {
                "hook": {"kind": "webhook", "url_env": "HOOK_URL", "secret_env": "HOOK_SECRET"},
                "teams": {"kind": "teams", "url_env": "TEAMS_URL"},
            }
        }
    )
    hook = config.channels["hook"]
    assert (hook.secret({"HOOK_SECRET": " s "}), hook.secret({})) == ("s", None)
    assert channel_problem(hook, "hook", {"HOOK_URL": "jsons://h/x"}) == (
        "HOOK_SECRET is not set (the webhook channel 'hook' signs its requests with it)"
    )
    assert channel_problem(hook, "hook", {"HOOK_URL": "jsons://h/x", "HOOK_SECRET": "s"}) is None
    assert config.channels["teams"].secret({"HOOK_SECRET": "s"}) is None
    with pytest.raises(AlertConfigError, match="channel s: only a webhook channel signs its requests"):
        parse_alert_config({"channels": {"s": {"kind": "slack", "url_env": "U", "secret_env": "S"}}})
    with pytest.raises(AlertConfigError, match="channel h: `secret_env` must name an environment variable"):
        parse_alert_config({"channels": {"h": {"kind": "webhook", "url_env": "U", "secret_env": "not a name"}}})


def test_email_refuses_a_server_whose_certificate_is_not_trusted(ca: TestCA, tmp_path: Path) -> None:
    """STARTTLS verifies the server: a certificate from a CA the host does not trust (only `ca` is) stops the
    delivery before AUTH, so the password never crosses an unverified connection."""
    other = tmp_path / "other"
    other.mkdir()
    mail = SmtpsReceiver(TestCA(other), "alerts@plant.test", "smtp-s3cret")
    mail.start()
    try:
        url = (
            f"mailtos://alerts%40plant.test:smtp-s3cret@127.0.0.1:{mail.port}"
            "?mode=starttls&from=alerts@plant.test&to=ops@plant.test"
        )
        error = delivery.send(url, TITLE, BODY, {}, TIMEOUT_S)
    finally:
        mail.stop()
    assert error is not None and "smtp-s3cret" not in error
    assert (mail.logins, mail.mails) == ([], [])
