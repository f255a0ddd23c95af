"""Send one notification through Apprise (Slack, LINE, email, JSON webhook and ~100 others).

Apprise rather than hand-written clients: it knows each service's payload and auth, and a
channel's URL is just an environment variable (`slack://…` or `https://hooks.slack.com/…`,
`line://token/user`, `mailtos://user:pass@host?to=…`, `json://host/path`). URLs carry secrets
(a Slack webhook path *is* the secret), so they are never logged or stored: errors come from
Apprise's warnings, which name the host only, and are scrubbed of the URL besides.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, urlsplit

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


def send(url: str, title: str, body: str, fields: Mapping[str, object], timeout_s: float) -> str | None:
    """Deliver once; None when the service accepted it, else why not (secret-free)."""
    import apprise  # here: ~0.45 s to import, paid by every run process and code server otherwise

    notifier = apprise.Apprise()
    if not notifier.add(channel_url(url, fields, timeout_s)):
        return "the channel URL is not one Apprise understands (check its scheme)"
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
