"""Send one notification through Apprise (Slack, LINE, Teams, email, JSON webhook and ~100 others).

Apprise rather than hand-written clients: it knows each service's payload and auth, and a
channel's URL is just an environment variable (`slack://…` or `https://hooks.slack.com/…`,
`line://token/user`, `workflows://host/workflow/signature`, `mailtos://user:pass@host?to=…`,
`json://host/path`). URLs carry secrets (a Slack webhook path *is* the secret), so they are never
logged or stored: errors come from Apprise's warnings, which name the host only, and are scrubbed of
the URL besides.

The one request Apprise cannot make is a signed one: a webhook whose channel has a secret is posted
here, with the same JSON body Apprise's json:// sends and an HMAC-SHA256 signature of it, so the
receiver can tell the platform's requests from anyone's who learned the URL (docs/alerts.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

# schemes whose payload can carry extra JSON/form fields (`:key=value` in the URL's query)
_STRUCTURED = ("json", "jsons", "form", "forms")


def channel_url(url: str, fields: Mapping[str, object], timeout_s: float) -> str:
    """`url` with connect/read timeouts (unless set) and, for a generic webhook, the alert's
    fields added to the JSON body, so a receiver can route on rule, fingerprint or machine."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    extra = [f"{k}={v:g}" for k, v in (("cto", timeout_s), ("rto", timeout_s)) if k not in query]
    if parts.scheme.lower() in _STRUCTURED:
        extra += [f":{k}={quote(str(v), safe='')}" for k, v in fields.items() if v is not None and f":{k}" not in query]
    if not extra:
        return url
    return f"{url}{'&' if parts.query else '?'}{'&'.join(extra)}"


# who the messages say they come from (User-Agent, LINE's sender name, the mail's X-Application), instead of Apprise
APP_ID = "analytics-platform"
SIGNATURE_HEADER = "X-Analytics-Signature"
TIMESTAMP_HEADER = "X-Analytics-Timestamp"


def send(
    url: str, title: str, body: str, fields: Mapping[str, object], timeout_s: float, secret: str | None = None
) -> str | None:
    """Deliver once; None when the service accepted it, else why not (secret-free). With `secret` (a webhook
    channel's), the request is posted and signed here rather than by Apprise."""
    if secret is not None:
        return send_signed(url, title, body, fields, timeout_s, secret)
    import apprise  # here: ~0.45 s to import, paid by every run process and code server otherwise

    # no Apprise branding: no icon fetched from github.com, no "Apprise" footer and time stamp under a Slack message
    notifier = apprise.Apprise(asset=apprise.AppriseAsset(app_id=APP_ID, image_url_mask=""))
    if not notifier.add(channel_url(url, fields, timeout_s)):
        return "the channel URL is not one Apprise understands (check its scheme)"
    for service in notifier:
        if hasattr(service, "include_footer"):
            service.include_footer = False
    with apprise.LogCapture(level=logging.WARNING) as log:
        ok = notifier.notify(title=title, body=body, body_format=apprise.NotifyFormat.TEXT)
        captured = log.getvalue()
    if ok:
        return None
    lines = [line.split(" - ", 2)[-1].strip() for line in captured.splitlines() if line.strip()]
    return scrub(" | ".join(lines) or "delivery failed without a reason from Apprise", url)


def scrub(text: str, url: str) -> str:
    """Remove the URL and its secret-bearing parts from `text` (belt and braces over Apprise)."""
    parts = urlsplit(url)
    secrets = [url, parts.path, parts.query, parts.password or "", parts.username or ""]
    for secret in sorted((s for s in secrets if len(s) > 3), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text[:500]


def webhook_payload(title: str, body: str, fields: Mapping[str, object]) -> dict[str, object]:
    """The JSON Apprise's json:// sends (version, title, message, attachments, type) plus the alert's fields, so a
    receiver reads a signed request as it read an unsigned one."""
    payload: dict[str, object] = {"version": "1.0", "title": title, "message": body, "attachments": [], "type": "info"}
    payload.update({k: str(v) for k, v in fields.items() if v is not None})
    return payload


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=` + the hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`: the timestamp is signed too, so a
    receiver that refuses old timestamps refuses a replayed request."""
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def send_signed(
    url: str, title: str, body: str, fields: Mapping[str, object], timeout_s: float, secret: str
) -> str | None:
    """POST the webhook JSON to `url` (json:// or http:// for plain HTTP, jsons:// or https:// for TLS, verified
    against the system's CAs) with X-Analytics-Timestamp and X-Analytics-Signature; a user:password in the URL is
    sent as basic auth, `+Name=value` query entries as headers, the other query entries stay in the query.
    None when the receiver answered 2xx, else why not (secret-free)."""
    parts = urlsplit(url)
    scheme = {"json": "http", "http": "http", "jsons": "https", "https": "https"}.get(parts.scheme.lower())
    if scheme is None:
        return "a signed webhook's URL must be json://, jsons://, http:// or https://"
    # `+Name=value` (Apprise's header syntax): the + is literal here, not a URL-encoded space
    query = parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True)
    headers = {k[1:]: v for k, v in query if k.startswith("+")}
    kept = [(k, v) for k, v in query if not k.startswith(("+", ":")) and k not in ("cto", "rto")]
    netloc = parts.hostname or ""
    netloc = f"[{netloc}]" if ":" in netloc else netloc
    if parts.port:
        netloc += f":{parts.port}"
    target = urlunsplit((scheme, netloc, parts.path or "/", urlencode(kept), ""))
    payload = json.dumps(webhook_payload(title, body, fields), separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = int(time.time())
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": APP_ID,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(secret, timestamp, payload),
        }
    )
    if parts.username:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + b64encode(credentials).decode()
    request = urllib.request.Request(target, data=payload, headers=headers, method="POST")
    context = ssl.create_default_context() if scheme == "https" else None
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            response.read()
        return None
    except urllib.error.HTTPError as exc:
        return scrub(f"the webhook at {parts.hostname} answered {exc.code} {exc.reason}", url)
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return scrub(f"could not reach the webhook at {parts.hostname}: {reason}", url)
