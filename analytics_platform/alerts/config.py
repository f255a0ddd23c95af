"""Alert channels, rules and mute windows: from a YAML file into the tables, and back out.

The tables are the truth (a rule is edited with SQL or by re-loading the file, never with code);
the file is how a deployment seeds them. Channels are names and kinds only: the URL or token of a
channel is read from the environment variable the channel names, at delivery time, so secrets are
in neither the file, the database nor the logs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.types.json import Jsonb

from analytics_platform.alerts.model import ANY, CHANNEL_KINDS, RULE_KINDS, SEVERITIES, Mute, Rule
from analytics_platform.settings import REPO_ROOT, get_settings, source_channel_urls
from analytics_platform.transforms import kpi_catalog
from analytics_platform.transforms.event_rollups import DAY_S, rollup_windows

DEFAULT_FILE = REPO_ROOT / "analytics_platform" / "config" / "alerts.yaml"

# every parameter a rule kind understands, with its default
RULE_PARAMS: dict[str, dict[str, Any]] = {
    "anomaly": {"min_severity": 3, "max_age_hours": 24, "max_per_machine": 3},
    "device_offline": {"minutes": 10, "lookback_hours": 168},
    "fail_rate": {
        "event_types": ["sweep_batch"],
        "window_minutes": 60,
        "bucket_s": 300,
        "threshold": 0.2,
        "min_count": 5,
        "severity": "warning",
    },
    "lab_out_of_spec": {"lookback_hours": 24, "severity": "critical"},
    "sweep_out_of_spec": {"lookback_hours": 24, "severity": "critical"},
    "check_failed": {"include_warnings": False},
    "run_failed": {"lookback_hours": 24},
    "ingest_reset": {"lookback_hours": 24, "severity": "warning"},
    # `below` or `above` (exactly one) must hold for the machine's `periods` latest ended periods
    "kpi_threshold": {
        "kpi": "oee",
        "period": "shift",
        "below": None,
        "above": None,
        "periods": 1,
        "lookback_hours": 48,
        "severity": "warning",
    },
    "trend": {
        "source": "metric",
        "name": "*",
        "direction": "increasing",
        "min_slope_per_hour": 0.0,
        "window_hours": 24,
        "max_p_value": 0.05,
        "lookback_hours": 3,
        "severity": "warning",
    },
    "energy_deviation": {
        "period": "day",
        "direction": "above",
        "min_pct": 10.0,
        "periods": 1,
        "lookback_hours": 48,
        "severity": "warning",
    },
    # the newest forecast of a UTC day `days_ahead` days after today above `above` (e.g. the
    # contracted kW): per factory (`scope` factory, the machines' peaks summed) or per machine
    "forecast_peak": {
        "kpi": "peak_demand_kw",
        "above": None,
        "use": "value",
        "scope": "factory",
        "days_ahead": 1,
        "severity": "warning",
    },
}
FORECAST_KPIS = ("peak_demand_kw", "energy_kwh")
FORECAST_USE = ("value", "upper")
FORECAST_SCOPES = ("factory", "machine")
KPI_PERIODS = ("hour", "shift", "day")
DEVIATION_PERIODS = ("hour", "day")
TREND_SOURCES = ("metric", "kpi")
TREND_DIRECTIONS = ("increasing", "decreasing", "any")
DEVIATION_DIRECTIONS = ("above", "below", "either")
# KPIs an alert can name beside the catalogue's: derived from a catalogue KPI's row
DERIVED_KPIS = {"reject_rate": "quality"}
_RULE_FIELDS = {"name", "kind", "tenant_id", "params", "channels", "notify_resolve", "enabled", "description"}
_MUTE_FIELDS = {"rule", "tenant_id", "factory_id", "machine_id", "start", "end", "reason", "created_by"}


class AlertConfigError(ValueError):
    """An alerts file entry that cannot be loaded; the message names the entry and field."""


@dataclass(frozen=True)
class Channel:
    """A notification channel: its kind and the environment variable holding its Apprise URL (and, for a webhook,
    the one holding its signing secret)."""

    name: str
    kind: str
    url_env: str
    # a webhook's HMAC-SHA256 signing secret, by environment variable (docs/alerts.md, "Signed webhooks")
    secret_env: str | None = None

    def secret(self, environ: Mapping[str, str] | None = None) -> str | None:
        if self.secret_env is None:
            return None
        return (os.environ if environ is None else environ).get(self.secret_env, "").strip() or None

    def url(self, environ: Mapping[str, str] | None = None) -> str | None:
        env = os.environ if environ is None else environ
        value = env.get(self.url_env, "").strip()
        # else from the source documents' names (SLACK_WEBHOOK_URL, LINE_CHANNEL_TOKEN), when this is their variable
        return value or source_channel_urls(env).get(self.url_env)


@dataclass(frozen=True)
class AlertConfig:
    channels: dict[str, Channel]
    rules: list[Rule]
    mutes: list[Mute]


def parse_alert_config(
    data: Any, windows: Sequence[int] | None = None, trend_windows: Sequence[int] | None = None
) -> AlertConfig:
    """Validate the alerts document; every error names the entry and the field. `windows` are the
    configured aggregate windows (WINDOWS, the settings' by default): a `fail_rate` rule reads the
    event rollups of one of them, and a `bucket_s` they do not have would never alert. Likewise
    `trend_windows` (TREND_WINDOWS_HOURS) for a `trend` rule's `window_hours`."""
    if not isinstance(data, dict):
        raise AlertConfigError("the alerts file must be a mapping with `channels`, `rules` and `mutes`")
    unknown = set(data) - {"channels", "rules", "mutes"}
    if unknown:
        raise AlertConfigError(f"unknown top-level key(s) {sorted(unknown)}; expected channels, rules, mutes")
    channels = _channels(data.get("channels") or {})
    buckets = fail_rate_buckets(get_settings().windows if windows is None else windows)
    judged = sorted(get_settings().trend_windows_hours if trend_windows is None else trend_windows)
    rules = [_rule(entry, n, channels, buckets, judged) for n, entry in enumerate(data.get("rules") or [], 1)]
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AlertConfigError(f"rule name(s) used twice: {duplicates}")
    mutes = [_mute(entry, n, set(names)) for n, entry in enumerate(data.get("mutes") or [], 1)]
    return AlertConfig(channels, rules, mutes)


def read_alert_file(path: Path) -> AlertConfig:
    try:
        return parse_alert_config(yaml.safe_load(path.read_text()))
    except FileNotFoundError as exc:
        raise AlertConfigError(f"alerts file {path} not found") from exc
    except yaml.YAMLError as exc:
        raise AlertConfigError(f"alerts file {path} is not valid YAML: {exc}") from exc


def _channels(entries: Any) -> dict[str, Channel]:
    if not isinstance(entries, dict):
        raise AlertConfigError("`channels` must map a channel name to {kind, url_env}")
    channels = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or set(entry) - {"kind", "url_env", "secret_env"}:
            raise AlertConfigError(f"channel {name}: expected only `kind` and `url_env` (and a webhook's `secret_env`)")
        kind, env, secret = entry.get("kind"), entry.get("url_env"), entry.get("secret_env")
        if kind not in CHANNEL_KINDS:
            raise AlertConfigError(f"channel {name}: kind must be one of {list(CHANNEL_KINDS)}, got {kind!r}")
        if not isinstance(env, str) or not env.isidentifier():
            raise AlertConfigError(f"channel {name}: `url_env` must name an environment variable, got {env!r}")
        if secret is not None and kind != "webhook":
            raise AlertConfigError(f"channel {name}: only a webhook channel signs its requests (`secret_env`)")
        if secret is not None and (not isinstance(secret, str) or not secret.isidentifier()):
            raise AlertConfigError(f"channel {name}: `secret_env` must name an environment variable, got {secret!r}")
        channels[str(name)] = Channel(str(name), kind, env, secret)
    return channels


def fail_rate_buckets(windows: Sequence[int]) -> list[int]:
    """The bucket sizes a `fail_rate` rule can read: the event rollups' windows and the day."""
    return [*rollup_windows(windows), DAY_S]


def _rule(
    entry: Any, number: int, channels: Mapping[str, Channel], buckets: Sequence[int], trend_windows: Sequence[int]
) -> Rule:
    if not isinstance(entry, dict) or not entry.get("name"):
        raise AlertConfigError(f"rule {number}: needs a `name` and a `kind`")
    at = f"rule {entry['name']}"
    unknown = set(entry) - _RULE_FIELDS
    if unknown:
        raise AlertConfigError(f"{at}: unknown field(s) {sorted(unknown)}")
    kind = entry.get("kind")
    if kind not in RULE_KINDS:
        raise AlertConfigError(f"{at}: kind must be one of {list(RULE_KINDS)}, got {kind!r}")
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise AlertConfigError(f"{at}: `params` must be a mapping")
    bad = set(params) - set(RULE_PARAMS[kind])
    if bad:
        raise AlertConfigError(
            f"{at}: unknown param(s) {sorted(bad)} for kind {kind}; known: {sorted(RULE_PARAMS[kind])}"
        )
    merged = {**RULE_PARAMS[kind], **_setting_defaults(kind), **params}
    if merged.get("severity", "warning") not in SEVERITIES:
        raise AlertConfigError(f"{at}: severity must be one of {list(SEVERITIES)}")
    for key, default in RULE_PARAMS[kind].items():
        if isinstance(default, int | float) and not isinstance(default, bool):
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise AlertConfigError(f"{at}: param {key} must be a number ≥ 0, got {value!r}")
    _kind_params(kind, merged, at, buckets, trend_windows)
    wanted = entry.get("channels") or []
    if not isinstance(wanted, list):
        raise AlertConfigError(f"{at}: `channels` must be a list of channel names")
    missing = [c for c in wanted if c not in channels]
    if missing:
        raise AlertConfigError(f"{at}: unknown channel(s) {missing}; defined: {sorted(channels)}")
    return Rule(
        name=str(entry["name"]),
        kind=kind,
        tenant_id=str(entry.get("tenant_id", ANY)),
        params=merged,
        channels=tuple(str(c) for c in wanted),
        notify_resolve=bool(entry.get("notify_resolve", True)),
        enabled=bool(entry.get("enabled", True)),
        description=str(entry.get("description", "")),
    )


def _setting_defaults(kind: str) -> dict[str, Any]:
    """Defaults the settings own: a device_offline rule's minutes are DEVICE_OFFLINE_MINUTES, the
    silence after which the uptime rollups count a machine offline, so alert and rollups agree."""
    if kind == "device_offline":
        return {"minutes": get_settings().device_offline_minutes}
    return {}


def _kind_params(
    kind: str, params: Mapping[str, Any], at: str, buckets: Sequence[int], trend_windows: Sequence[int]
) -> None:
    """The checks of the KPI, trend, deviation and fail-rate kinds' params: a typo in a KPI name, a
    period, a bucket or a trend window would otherwise be a rule that silently never fires."""

    def one_of(key: str, allowed: Sequence[str]) -> None:
        if params[key] not in allowed:
            raise AlertConfigError(f"{at}: param {key} must be one of {list(allowed)}, got {params[key]!r}")

    def whole(key: str) -> None:
        if not isinstance(params[key], int) or isinstance(params[key], bool) or params[key] < 1:
            raise AlertConfigError(f"{at}: param {key} must be a whole number ≥ 1, got {params[key]!r}")

    if kind == "fail_rate":
        bucket = params["bucket_s"]
        if bucket not in buckets:
            raise AlertConfigError(
                f"{at}: param bucket_s must be one of the event rollup windows {list(buckets)} (s), got {bucket!r}"
            )
        # only buckets wholly inside the window are counted: a window shorter than two buckets holds
        # none at most ticks (60 min of 3600 s buckets only at the stroke of the hour)
        if params["window_minutes"] * 60 < 2 * bucket:
            raise AlertConfigError(
                f"{at}: param window_minutes must span at least two bucket_s buckets "
                f"({2 * bucket // 60} min for {bucket} s), got {params['window_minutes']!r}"
            )
    elif kind == "kpi_threshold":
        names = kpi_catalog.kpi_names(()) | set(DERIVED_KPIS)
        kpi = params["kpi"]
        if kpi not in names and not (isinstance(kpi, str) and kpi.startswith(kpi_catalog.DRIVER_PREFIX)):
            raise AlertConfigError(f"{at}: param kpi must be a KPI of the catalogue, got {kpi!r}")
        one_of("period", KPI_PERIODS)
        whole("periods")
        bounds = [k for k in ("below", "above") if params[k] is not None]
        if len(bounds) != 1:
            raise AlertConfigError(f"{at}: give exactly one of `below` and `above` (the threshold)")
        value = params[bounds[0]]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise AlertConfigError(f"{at}: param {bounds[0]} must be a number, got {value!r}")
    elif kind == "trend":
        one_of("source", TREND_SOURCES)
        one_of("direction", TREND_DIRECTIONS)
        whole("window_hours")
        if params["window_hours"] not in trend_windows:
            raise AlertConfigError(
                f"{at}: param window_hours must be one of the trend windows {list(trend_windows)} (h), "
                f"got {params['window_hours']!r} (TREND_WINDOWS_HOURS lists the windows judged)"
            )
        if not isinstance(params["name"], str) or not params["name"]:
            raise AlertConfigError(f"{at}: param name must name a metric or KPI (or '*')")
        if params["max_p_value"] > 1:
            raise AlertConfigError(f"{at}: param max_p_value must be at most 1, got {params['max_p_value']!r}")
    elif kind == "energy_deviation":
        one_of("period", DEVIATION_PERIODS)
        one_of("direction", DEVIATION_DIRECTIONS)
        whole("periods")
    elif kind == "forecast_peak":
        one_of("kpi", FORECAST_KPIS)
        one_of("use", FORECAST_USE)
        one_of("scope", FORECAST_SCOPES)
        whole("days_ahead")
        limit = params["above"]
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit):
            raise AlertConfigError(f"{at}: param above must be a number (the limit, in the KPI's unit), got {limit!r}")


def _time(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise AlertConfigError(f"{where}: expected an ISO-8601 time, got {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _mute(entry: Any, number: int, rules: set[str]) -> Mute:
    at = f"mute {number}"
    if not isinstance(entry, dict):
        raise AlertConfigError(f"{at}: expected a mapping")
    unknown = set(entry) - _MUTE_FIELDS
    if unknown:
        raise AlertConfigError(f"{at}: unknown field(s) {sorted(unknown)}")
    rule = str(entry.get("rule", ANY))
    if rule != ANY and rule not in rules:
        raise AlertConfigError(f"{at}: unknown rule {rule!r}")
    if not entry.get("reason"):
        raise AlertConfigError(f"{at}: needs a `reason` (e.g. planned maintenance)")
    start, end = _time(entry.get("start"), f"{at} start"), _time(entry.get("end"), f"{at} end")
    if end <= start:
        raise AlertConfigError(f"{at}: end must be after start")
    return Mute(
        starts_at=start,
        ends_at=end,
        reason=str(entry["reason"]),
        rule_name=rule,
        tenant_id=str(entry.get("tenant_id", ANY)),
        factory_id=str(entry.get("factory_id", ANY)),
        machine_id=str(entry.get("machine_id", ANY)),
    )


def store_rules(conn: psycopg.Connection, rules: Sequence[Rule]) -> int:
    """Insert or replace rules by name; rules not in `rules` are left as they are."""
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO analytics.alert_rules
                   (rule_name, tenant_id, kind, params, channels, notify_resolve, enabled, description, updated_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
               ON CONFLICT (rule_name) DO UPDATE SET
                   tenant_id = EXCLUDED.tenant_id, kind = EXCLUDED.kind, params = EXCLUDED.params,
                   channels = EXCLUDED.channels, notify_resolve = EXCLUDED.notify_resolve,
                   enabled = EXCLUDED.enabled, description = EXCLUDED.description, updated_at = now()""",
            [
                (
                    r.name,
                    r.tenant_id,
                    r.kind,
                    Jsonb(dict(r.params)),
                    list(r.channels),
                    r.notify_resolve,
                    r.enabled,
                    r.description,
                )
                for r in rules
            ],
        )
    return len(rules)


def store_mutes(conn: psycopg.Connection, mutes: Sequence[Mute], created_by: str | None = None) -> list[int]:
    """Add mute windows (the same rule/subject/start again is updated, not doubled); their ids."""
    ids = []
    with conn.cursor() as cur:
        for m in mutes:
            cur.execute(
                """INSERT INTO analytics.alert_mutes
                       (rule_name, tenant_id, factory_id, machine_id, starts_at, ends_at, reason, created_by)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (rule_name, tenant_id, factory_id, machine_id, starts_at) DO UPDATE
                   SET ends_at = EXCLUDED.ends_at, reason = EXCLUDED.reason
                   RETURNING mute_id""",
                (m.rule_name, m.tenant_id, m.factory_id, m.machine_id, m.starts_at, m.ends_at, m.reason, created_by),
            )
            ids.append(cur.fetchone()[0])
    return ids


def load_alert_config(conn: psycopg.Connection, path: Path) -> tuple[int, int]:
    """Load a file's rules and mutes into the tables (in one transaction); (rules, mutes) loaded."""
    config = read_alert_file(path)
    with conn.transaction():
        rules = store_rules(conn, config.rules)
        mutes = len(store_mutes(conn, config.mutes, created_by=f"file {path.name}"))
    return rules, mutes


def seed_alert_rules(conn: psycopg.Connection, path: Path | None = None) -> int:
    """Load the default (or given) file's rules and mutes only into an empty rules table, so a
    restarted demo keeps the rules an operator edited; the number of rules loaded."""
    if conn.execute("SELECT EXISTS (SELECT 1 FROM analytics.alert_rules)").fetchone()[0]:
        return 0
    return load_alert_config(conn, path or DEFAULT_FILE)[0]


def read_rules(conn: psycopg.Connection) -> list[Rule]:
    """The enabled rules, each with its kind's defaults under its stored params."""
    rows = conn.execute(
        """SELECT rule_name, kind, tenant_id, params, channels, notify_resolve, enabled, coalesce(description, '')
           FROM analytics.alert_rules WHERE enabled ORDER BY rule_name"""
    ).fetchall()
    return [
        Rule(name, kind, tenant, {**RULE_PARAMS.get(kind, {}), **(params or {})}, tuple(channels), notify, enabled, d)
        for name, kind, tenant, params, channels, notify, enabled, d in rows
    ]


def read_mutes(conn: psycopg.Connection, now: datetime) -> list[Mute]:
    """Mute windows in force at `now`."""
    rows = conn.execute(
        """SELECT starts_at, ends_at, reason, rule_name, tenant_id, factory_id, machine_id, mute_id
           FROM analytics.alert_mutes WHERE starts_at <= %s AND ends_at > %s ORDER BY mute_id""",
        (now, now),
    ).fetchall()
    return [Mute(*row) for row in rows]
