"""What an alert is, decided without a database, a clock or a network.

A rule observes a set of *conditions* now (each with a stable fingerprint); comparing them with
the stored state of that rule's conditions gives the transitions: open (new), reopen (seen again
after it resolved), resolve (no longer seen) or expire (no longer seen because it fell out of the
rule's look-back: closed without a message, since nothing was fixed). Only transitions notify,
which is what makes a notification exactly-once per condition rather than once per tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

RULE_KINDS = (
    "anomaly",
    "device_offline",
    "fail_rate",
    "lab_out_of_spec",
    "sweep_out_of_spec",
    "check_failed",
    "run_failed",
    "ingest_reset",
    "kpi_threshold",
    "trend",
    "energy_deviation",
    "forecast_peak",
)
SEVERITIES = ("info", "warning", "critical")
CHANNEL_KINDS = ("slack", "line", "email", "teams", "webhook")
ANY = "*"

Transition = Literal["open", "reopen", "resolve", "expire"]


@dataclass(frozen=True)
class Rule:
    """One alert rule: what to watch (`kind` + `params`), for whom, and whom to tell."""

    name: str
    kind: str
    tenant_id: str = ANY
    params: Mapping[str, Any] = field(default_factory=dict)
    channels: tuple[str, ...] = ()
    notify_resolve: bool = True
    enabled: bool = True
    description: str = ""


@dataclass(frozen=True)
class Mute:
    """Silence a rule (or every rule) for a tenant / factory / machine during [starts_at, ends_at)."""

    starts_at: datetime
    ends_at: datetime
    reason: str
    rule_name: str = ANY
    tenant_id: str = ANY
    factory_id: str = ANY
    machine_id: str = ANY
    mute_id: int | None = None

    def covers(self, rule_name: str, condition: Condition, now: datetime) -> bool:
        """True when this mute silences `condition` of `rule_name` at `now`."""
        wanted = (
            (self.rule_name, rule_name),
            (self.tenant_id, condition.tenant_id),
            (self.factory_id, condition.factory_id),
            (self.machine_id, condition.machine_id),
        )
        return self.starts_at <= now < self.ends_at and all(m in (ANY, v) for m, v in wanted)


@dataclass(frozen=True)
class Condition:
    """Something a rule sees right now. The fingerprint is its identity across ticks."""

    fingerprint: str
    severity: str
    summary: str
    tenant_id: str | None = None
    factory_id: str | None = None
    machine_id: str | None = None
    observed_at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    link: str | None = None

    def where(self) -> str:
        parts = [p for p in (self.tenant_id, self.factory_id, self.machine_id) if p]
        return "/".join(parts) if parts else "platform"


@dataclass(frozen=True)
class Observation:
    """A rule's conditions at one tick. A stored open condition observed before `horizon` that is
    no longer seen has aged out of the rule's look-back: it expires instead of resolving."""

    conditions: Sequence[Condition]
    horizon: datetime | None = None
    # fingerprints whose current state the rule actually looked at (None: everything). A stored
    # open condition outside it is left open: not seen is not the same as seen passing. One inside
    # it that is not seen resolves even if it opened before `horizon` (a machine's KPI condition
    # lives longer than the look-back while the machine keeps reporting: its recovery is news).
    known: frozenset[str] | None = None


@dataclass(frozen=True)
class Stored:
    """The stored state of one condition of a rule."""

    condition: Condition
    state: Literal["open", "resolved"]
    times_opened: int = 1


@dataclass(frozen=True)
class Change:
    transition: Transition
    condition: Condition


def plan(observation: Observation, stored: Mapping[str, Stored]) -> list[Change]:
    """The transitions that take `stored` to what `observation` sees; still-open conditions
    produce none (that is the whole point)."""
    changes: list[Change] = []
    seen = {c.fingerprint: c for c in observation.conditions}
    for fingerprint, condition in seen.items():
        before = stored.get(fingerprint)
        if before is None:
            changes.append(Change("open", condition))
        elif before.state == "resolved":
            changes.append(Change("reopen", condition))
    for fingerprint, before in stored.items():
        if before.state != "open" or fingerprint in seen:
            continue
        old = before.condition
        looked = observation.known is not None and fingerprint in observation.known
        aged = (
            not looked
            and observation.horizon is not None
            and old.observed_at is not None
            and old.observed_at < observation.horizon
        )
        if not aged and observation.known is not None and not looked:
            continue
        changes.append(Change("expire" if aged else "resolve", old))
    return changes


def notifies(change: Change, rule: Rule) -> bool:
    """Opening and re-opening always notify; resolving only if the rule asks; expiry never."""
    if change.transition == "resolve":
        return rule.notify_resolve
    return change.transition in ("open", "reopen")


def active_mute(mutes: Iterable[Mute], rule_name: str, condition: Condition, now: datetime) -> Mute | None:
    """The first mute that silences this condition now, if any."""
    return next((m for m in mutes if m.covers(rule_name, condition, now)), None)


def next_attempt(attempts: int, now: datetime, base_s: int, max_s: int) -> datetime:
    """Exponential backoff after the `attempts`-th failure: base, 2×base, 4×base, … capped."""
    return now + timedelta(seconds=min(max_s, base_s * 2 ** max(0, attempts - 1)))


def iso(ts: datetime | None) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts else "-"


def render(change: Change, rule: Rule, now: datetime) -> tuple[str, str]:
    """Title and body of a notification: what, where, when, how bad, and a link."""
    c = change.condition
    resolved = change.transition == "resolve"
    tag = "RESOLVED" if resolved else c.severity.upper()
    title = f"[{tag}] {c.where()}: {c.summary}"
    lines = [
        f"What: {c.summary} (rule {rule.name}, {rule.kind})",
        f"Where: {c.where()}",
        f"When: {iso(c.observed_at)}" + (f"; resolved {iso(now)}" if resolved else f"; detected {iso(now)}"),
        f"How bad: {c.severity}" + "".join(f"; {k} {v}" for k, v in c.details.items() if _printable(v)),
    ]
    if change.transition == "reopen":
        lines.insert(0, "Re-opened: this condition had resolved and is back.")
    if c.link:
        lines.append(f"Link: {c.link}")
    lines.append(f"Fingerprint: {c.fingerprint}")
    return title, "\n".join(lines)


def _printable(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)
