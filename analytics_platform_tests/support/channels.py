"""Local receivers that speak each notification service's own protocol, over TLS signed by a test CA.

Slack (incoming webhook and the Web API's chat.postMessage), LINE (Messaging API push) and Microsoft Teams
(Workflows) are HTTPS endpoints: one HttpsReceiver records every request (method, path, query, headers, body) and
answers as the service does. Apprise sends to the services' fixed hosts (hooks.slack.com, slack.com, api.line.me);
`redirect_apprise` points those at the receiver, nothing else of Apprise changes, so the request is the one
production sends. Teams and the generic webhook take their host from the channel URL already. E-mail goes to an
SMTP server (aiosmtpd) that requires STARTTLS and then AUTH. Every TLS connection is verified against the test CA
(`TestCA.trust`, through SSL_CERT_FILE and REQUESTS_CA_BUNDLE): nothing runs with verification off."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import http.server
import ipaddress
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from analytics_platform.devstack.processes import free_port


class TestCA:
    """A self-signed certificate for 127.0.0.1 and localhost, its own CA (what a receiver presents)."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, directory: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "analytics-platform test receiver")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self.cert = directory / "receiver.pem"
        self.key = directory / "receiver.key"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def trust(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make this CA the one OpenSSL (smtplib's STARTTLS) and requests (Apprise's HTTP) verify against."""
        monkeypatch.setenv("SSL_CERT_FILE", str(self.cert))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(self.cert))


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    content_type: str = "text/plain"


class HttpsReceiver:
    """Records each request; answers `replies[path]` (default 200 "ok"), or 401 when `verify` says no."""

    def __init__(self, ca: TestCA) -> None:
        self.ca = ca
        self.port = free_port()
        self.requests: list[Request] = []
        self.replies: dict[str, Reply] = {}
        # a check of each request before it is answered: None accepts, a string refuses it with 401 and says why
        self.verify: Any = None
        self.refusals: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = Request(
                    "POST",
                    parts.path,
                    parse_qs(parts.query, keep_blank_values=True),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                receiver.requests.append(request)
                refused = receiver.verify(request) if receiver.verify else None
                if refused:
                    receiver.refusals.append(refused)
                    reply = Reply(401, json.dumps({"error": refused}).encode(), "application/json")
                else:
                    reply = receiver.replies.get(parts.path, Reply())
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.socket = self.ca.server_context().wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def redirect_apprise(monkeypatch: pytest.MonkeyPatch, receiver: HttpsReceiver) -> None:
    """Send Apprise's Slack and LINE requests to `receiver` instead of the services' fixed hosts."""
    from apprise.plugins.line import NotifyLine
    from apprise.plugins.slack import NotifySlack

    monkeypatch.setattr(NotifySlack, "webhook_url", f"{receiver.base}/services")
    monkeypatch.setattr(NotifySlack, "api_url", f"{receiver.base}/api/{{}}")
    monkeypatch.setattr(NotifyLine, "notify_url", f"{receiver.base}/v2/bot/message/push")


def verify_signature(secret: str, max_age_s: float = 300) -> Any:
    """A receiver's check of the platform's webhook signature (docs/alerts.md, "Signed webhooks"): the HMAC-SHA256
    of `<timestamp>.<body>` under the shared secret, in X-Analytics-Signature as `sha256=<hex>`, and a timestamp
    no older than `max_age_s` (a replayed request is refused)."""

    def check(request: Request) -> str | None:
        stamp = request.headers.get("x-analytics-timestamp", "")
        given = request.headers.get("x-analytics-signature", "")
        if not stamp.isdigit():
            return "no timestamp"
        expected = hmac.new(secret.encode(), stamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given, f"sha256={expected}"):
            return "bad signature"
        if abs(time.time() - int(stamp)) > max_age_s:
            return "too old"
        return None

    return check


@dataclass
class Mail:
    """One accepted message and how it came: over TLS or not, as which user, to whom."""

    tls: bool
    login: str | None
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage = field(repr=False)


class SmtpsReceiver:
    """An SMTP server that refuses anything before STARTTLS and any mail before AUTH as `user`/`password`."""

    def __init__(self, ca: TestCA, user: str, password: str) -> None:
        self.port = free_port()
        self.mails: list[Mail] = []
        self.logins: list[tuple[str, str, bool]] = []  # (mechanism, user, accepted)
        self.user, self.password = user, password
        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=ca.server_context(),
            require_starttls=True,
            authenticator=self._authenticate,
            auth_required=True,
            auth_require_tls=True,
        )

    def _authenticate(self, server: object, session: object, envelope: object, mechanism: str, data: object):
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = data.login.decode(), data.password.decode()
        accepted = (user, password) == (self.user, self.password)
        self.logins.append((mechanism, user, accepted))
        return AuthResult(success=accepted, handled=False)

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd handler hook
        auth = session.auth_data
        self.mails.append(
            Mail(
                tls=session.ssl is not None,
                login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=email.message_from_bytes(envelope.content, policy=email.policy.default),
            )
        )
        return "250 OK"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
