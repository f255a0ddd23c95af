"""One alert tick: evaluate every rule, store the transitions with their notifications (an
outbox, in the same transaction), then deliver what is due.

Exactly-once per condition comes from the transaction: a transition and its alert_log rows commit
together, so a crash either re-evaluates the same transition next tick or finds it done. Delivery
is at-least-once per alert_log row (a crash between a send and its commit sends that one again)
and never blocks anything else: each attempt has a timeout, a failure is retried with backoff on
later ticks, and a tick stops delivering at its budget.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from analytics_platform.alerts import delivery
from analytics_platform.alerts.config import Channel, read_mutes
from analytics_platform.alerts.model import (
    Change,
    Condition,
    Mute,
    Observation,
    Rule,
    Stored,
    active_mute,
    next_attempt,
    notifies,
    plan,
    render,
)
from analytics_platform.alerts.observe import OBSERVERS
from analytics_platform.settings import enabled_channel_kinds


@dataclass
class DeliveryPolicy:
    timeout_s: float = 5.0
    retry_base_s: int = 30
    retry_max_s: int = 3600
    max_attempts: int = 8
    budget_s: float = 20.0


@dataclass
class TickReport:
    """What one tick did, for the sensor's log and its tests."""

    opened: int = 0
    reopened: int = 0
    resolved: int = 0
    expired: int = 0
    queued: int = 0
    muted: int = 0
    unconfigured: int = 0
    sent: int = 0
    failed: int = 0
    gave_up: int = 0
    left_for_later: int = 0
    rule_errors: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{k} {v}" for k, v in vars(self).items() if isinstance(v, int) and v]
        errors = [f"rule {name} failed: {error}" for name, error in self.rule_errors.items()]
        return "; ".join(parts + errors) or "nothing changed"


ExternalObserver = Callable[[Rule], Observation]


def evaluate_rules(
    conn: psycopg.Connection,
    rules: Sequence[Rule],
    mutes: Sequence[Mute],
    now: datetime,
    ui_url: str,
    external: Mapping[str, ExternalObserver] | None = None,
    report: TickReport | None = None,
    channels: Mapping[str, Channel] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TickReport:
    """Observe each rule and store its transitions; one failing rule does not stop the others.
    With `channels`, a notification for a channel that has no URL is logged `unconfigured` at
    once instead of being retried (a deployment without Slack is not a failing Slack)."""
    report = report or TickReport()
    unconfigured = {}
    if channels is not None:
        for rule in rules:
            for name in rule.channels:
                problem = channel_problem(channels.get(name), name, environ)
                if problem:
                    unconfigured[name] = problem
    for rule in rules:
        try:
            if rule.kind in OBSERVERS:
                observation = OBSERVERS[rule.kind](conn, rule, now, ui_url)
            elif external and rule.kind in external:
                observation = external[rule.kind](rule)
            else:
                raise ValueError(f"no observer for kind {rule.kind!r} here")
            apply_observation(conn, rule, observation, mutes, now, report, unconfigured)
        except Exception as exc:  # a bad rule is reported, never fatal to the tick
            conn.rollback()
            report.rule_errors[rule.name] = f"{type(exc).__name__}: {exc}"
    return report


TICK_LOCK = "analytics.alert_tick"


@contextmanager
def ticking(conn: psycopg.Connection, *, wait: bool = True) -> Iterator[bool]:
    """Hold the one alert tick of the database (a session advisory lock): the alert sensor and the
    drain service both tick, and a tick reads its due deliveries, sends them, then marks them, so
    two at once could send one twice. Yields whether it is held (`wait=False`: not when another
    tick runs; that tick, or the next, does the work)."""
    if wait:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (TICK_LOCK,))
        held = True
    else:
        held = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (TICK_LOCK,)).fetchone()[0]
    try:
        yield held
    finally:
        if held:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (TICK_LOCK,))


def run_tick(
    conn: psycopg.Connection,
    rules: Sequence[Rule],
    now: datetime,
    ui_url: str,
    channels: Mapping[str, Channel],
    policy: DeliveryPolicy,
    external: Mapping[str, ExternalObserver] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TickReport:
    """What the alert sensor does each tick: `rules` under the mutes in force at `now`, then
    every delivery due."""
    report = evaluate_rules(
        conn, rules, read_mutes(conn, now), now, ui_url, external, channels=channels, environ=environ
    )
    return deliver_due(conn, channels, now, policy, environ=environ, report=report)


def _stored(conn: psycopg.Connection, rule: str, seen: Sequence[str]) -> dict[str, Stored]:
    rows = conn.execute(
        """SELECT fingerprint, state, times_opened, severity, summary, tenant_id, factory_id, machine_id,
                  observed_at, details, link
           FROM analytics.alert_conditions
           WHERE rule_name = %s AND (state = 'open' OR fingerprint = ANY(%s))
           FOR UPDATE""",
        (rule, list(seen)),
    ).fetchall()
    return {
        fp: Stored(Condition(fp, sev, summary, t, f, m, observed, details or {}, link), state, opened)
        for fp, state, opened, sev, summary, t, f, m, observed, details, link in rows
    }


def apply_observation(
    conn: psycopg.Connection,
    rule: Rule,
    observation: Observation,
    mutes: Sequence[Mute],
    now: datetime,
    report: TickReport,
    unconfigured: Mapping[str, str] | None = None,
) -> list[Change]:
    """Store one rule's transitions and queue (or mute) their notifications, atomically."""
    seen = [c.fingerprint for c in observation.conditions]
    with conn.transaction():
        stored = _stored(conn, rule.name, seen)
        changes = plan(observation, stored)
        still_open = [fp for fp in seen if fp in stored and stored[fp].state == "open"]
        if still_open:
            conn.execute(
                "UPDATE analytics.alert_conditions SET last_seen_at = %s WHERE fingerprint = ANY(%s)",
                (now, still_open),
            )
        for change in changes:
            _store_transition(conn, rule, change, now)
            setattr(report, _COUNTER[change.transition], getattr(report, _COUNTER[change.transition]) + 1)
            if notifies(change, rule):
                _queue(conn, rule, change, mutes, now, report, unconfigured or {})
    return changes


_COUNTER = {"open": "opened", "reopen": "reopened", "resolve": "resolved", "expire": "expired"}


def _store_transition(conn: psycopg.Connection, rule: Rule, change: Change, now: datetime) -> None:
    c = change.condition
    if change.transition in ("open", "reopen"):
        conn.execute(
            """INSERT INTO analytics.alert_conditions
                   (fingerprint, rule_name, state, tenant_id, factory_id, machine_id, severity, summary, details,
                    link, observed_at, opened_at, last_seen_at)
               VALUES (%s, %s, 'open', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (fingerprint) DO UPDATE SET
                   state = 'open', severity = EXCLUDED.severity, summary = EXCLUDED.summary,
                   details = EXCLUDED.details, link = EXCLUDED.link, observed_at = EXCLUDED.observed_at,
                   opened_at = EXCLUDED.opened_at, last_seen_at = EXCLUDED.last_seen_at, resolved_at = NULL,
                   times_opened = analytics.alert_conditions.times_opened + 1""",
            (
                c.fingerprint,
                rule.name,
                c.tenant_id,
                c.factory_id,
                c.machine_id,
                c.severity,
                c.summary,
                Jsonb(dict(c.details)),
                c.link,
                c.observed_at,
                now,
                now,
            ),
        )
    else:
        conn.execute(
            """UPDATE analytics.alert_conditions
               SET state = 'resolved', resolved_at = %s,
                   details = coalesce(details, '{}'::jsonb) || jsonb_build_object('closed_by', %s::text)
               WHERE fingerprint = %s""",
            (now, change.transition, c.fingerprint),
        )


def _queue(
    conn: psycopg.Connection,
    rule: Rule,
    change: Change,
    mutes: Sequence[Mute],
    now: datetime,
    report: TickReport,
    unconfigured: Mapping[str, str],
) -> None:
    c = change.condition
    title, body = render(change, rule, now)
    mute = active_mute(mutes, rule.name, c, now)
    for channel in rule.channels:
        if mute:
            status, error = "muted", f"muted: {mute.reason}"
        elif channel in unconfigured:
            status, error = "unconfigured", unconfigured[channel]
        else:
            status, error = "pending", None
        conn.execute(
            """INSERT INTO analytics.alert_log
                   (created_at, rule_name, fingerprint, transition, channel, status, next_attempt_at, mute_id,
                    error, tenant_id, factory_id, machine_id, severity, title, body, link)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                now,
                rule.name,
                c.fingerprint,
                change.transition,
                channel,
                status,
                now if status == "pending" else None,
                mute.mute_id if mute else None,
                error,
                c.tenant_id,
                c.factory_id,
                c.machine_id,
                "info" if change.transition == "resolve" else c.severity,
                title,
                body,
                c.link,
            ),
        )
        if status == "pending":
            report.queued += 1
        elif status == "muted":
            report.muted += 1
        else:
            report.unconfigured += 1


def deliver_due(
    conn: psycopg.Connection,
    channels: Mapping[str, Channel],
    now: datetime,
    policy: DeliveryPolicy,
    environ: Mapping[str, str] | None = None,
    report: TickReport | None = None,
) -> TickReport:
    """Send every notification due at `now`, oldest first, each committed on its own."""
    report = report or TickReport()
    deadline = time.monotonic() + policy.budget_s
    due = conn.execute(
        """SELECT log_id, channel, attempts, rule_name, fingerprint, transition, severity, tenant_id, factory_id,
                  machine_id, title, body, link
           FROM analytics.alert_log
           WHERE status IN ('pending', 'failed') AND next_attempt_at <= %s
           ORDER BY next_attempt_at, log_id LIMIT 500""",
        (now,),
    ).fetchall()
    conn.commit()
    for position, (log_id, name, attempts, *fields, title, body, link) in enumerate(due):
        if time.monotonic() > deadline:
            report.left_for_later += len(due) - position
            break
        error = _attempt(channels.get(name), name, title, body, fields, link, policy, environ)
        attempts += 1
        if error is None:
            status, retry_at = "sent", None
            report.sent += 1
        elif attempts >= policy.max_attempts:
            status, retry_at = "gave_up", None
            report.gave_up += 1
        else:
            status, retry_at = "failed", next_attempt(attempts, now, policy.retry_base_s, policy.retry_max_s)
            report.failed += 1
        with conn.transaction():
            conn.execute(
                """UPDATE analytics.alert_log
                   SET status = %s, attempts = %s, last_attempt_at = %s, next_attempt_at = %s, error = %s,
                       sent_at = CASE WHEN %s = 'sent' THEN %s END
                   WHERE log_id = %s""",
                (status, attempts, now, retry_at, error, status, now, log_id),
            )
    return report


def _attempt(
    channel: Channel | None,
    name: str,
    title: str,
    body: str,
    fields: Sequence[object],
    link: str | None,
    policy: DeliveryPolicy,
    environ: Mapping[str, str] | None,
) -> str | None:
    problem = channel_problem(channel, name, environ)
    if problem or channel is None:
        return problem
    url = channel.url(environ) or ""
    keys = ("rule", "fingerprint", "transition", "severity", "tenant_id", "factory_id", "machine_id")
    # only a generic webhook gets the alert's fields in its body: a Slack-shaped or LINE body is fixed
    payload = {**dict(zip(keys, fields, strict=True)), "link": link} if channel.kind == "webhook" else {}
    return delivery.send(url, title, body, payload, policy.timeout_s, secret=channel.secret(environ))


def channel_problem(channel: Channel | None, name: str, environ: Mapping[str, str] | None) -> str | None:
    """Why `name` cannot deliver at all (not a transient failure), or None."""
    if channel is None:
        return f"channel {name!r} is not defined in the alerts file"
    kinds = enabled_channel_kinds(os.environ if environ is None else environ)
    if kinds and channel.kind not in kinds:
        return f"ALERT_CHANNEL_KINDS={','.join(kinds)} leaves out the {channel.kind} channel {name!r}"
    if channel.url(environ) is None:
        return f"{channel.url_env} is not set (the {channel.kind} channel {name!r} has no URL)"
    if channel.secret_env and channel.secret(environ) is None:  # never sent unsigned when it should be signed
        return f"{channel.secret_env} is not set (the webhook channel {name!r} signs its requests with it)"
    return None
