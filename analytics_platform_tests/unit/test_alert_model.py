"""Alert transitions, mutes, backoff, messages and config validation: pure, hand-computed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics_platform.alerts.config import AlertConfigError, parse_alert_config
from analytics_platform.alerts.delivery import channel_url, scrub
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
from analytics_platform.settings import get_settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def cond(fp: str, machine: str = "m1", at: datetime = NOW) -> Condition:
    return Condition(fp, "critical", f"thing {fp}", "t1", "f1", machine, at, {"severity": 4}, "http://ui/x")


def test_plan_opens_new_keeps_open_resolves_gone_and_reopens_resolved() -> None:
    stored = {
        "still": Stored(cond("still"), "open"),
        "gone": Stored(cond("gone"), "open"),
        "back": Stored(cond("back"), "resolved"),
        "quiet": Stored(cond("quiet"), "resolved"),
    }
    changes = plan(Observation([cond("new"), cond("still"), cond("back")]), stored)
    assert [(c.transition, c.condition.fingerprint) for c in changes] == [
        ("open", "new"),
        ("reopen", "back"),
        ("resolve", "gone"),
    ]


def test_a_second_identical_observation_plans_nothing() -> None:
    stored = {"a": Stored(cond("a"), "open")}
    assert plan(Observation([cond("a")]), stored) == []


def test_a_condition_older_than_the_horizon_expires_instead_of_resolving() -> None:
    old = cond("old", at=NOW - timedelta(hours=30))
    recent = cond("recent", at=NOW - timedelta(hours=1))
    stored = {"old": Stored(old, "open"), "recent": Stored(recent, "open")}
    changes = plan(Observation([], horizon=NOW - timedelta(hours=24)), stored)
    assert [(c.transition, c.condition.fingerprint) for c in changes] == [("expire", "old"), ("resolve", "recent")]


def test_an_open_condition_the_rule_did_not_look_at_stays_open() -> None:
    stored = {"looked": Stored(cond("looked"), "open"), "unseen": Stored(cond("unseen"), "open")}
    changes = plan(Observation([], known=frozenset({"looked"})), stored)
    assert [(c.transition, c.condition.fingerprint) for c in changes] == [("resolve", "looked")]
    old = Stored(cond("old", at=NOW - timedelta(days=2)), "open")  # but what aged out still expires
    changes = plan(Observation([], horizon=NOW - timedelta(days=1), known=frozenset()), {**stored, "old": old})
    assert [(c.transition, c.condition.fingerprint) for c in changes] == [("expire", "old")]


def test_a_condition_the_rule_looked_at_resolves_even_when_it_opened_before_the_horizon() -> None:
    """A machine's KPI condition opens with the first bad period and may stay open longer than the
    look-back; while the machine reports (its fingerprint is known), its recovery resolves it."""
    long_open = Stored(cond("machine", at=NOW - timedelta(days=3)), "open")
    gone = Stored(cond("silent", at=NOW - timedelta(days=3)), "open")
    observation = Observation([], horizon=NOW - timedelta(days=2), known=frozenset({"machine"}))
    changes = plan(observation, {"machine": long_open, "silent": gone})
    assert [(c.transition, c.condition.fingerprint) for c in changes] == [("resolve", "machine"), ("expire", "silent")]


@pytest.mark.parametrize(
    ("transition", "notify_resolve", "expected"),
    [
        ("open", False, True),
        ("reopen", False, True),
        ("resolve", True, True),
        ("resolve", False, False),
        ("expire", True, False),
    ],
)
def test_which_transitions_notify(transition: str, notify_resolve: bool, expected: bool) -> None:
    rule = Rule("r", "anomaly", notify_resolve=notify_resolve)
    assert notifies(Change(transition, cond("a")), rule) is expected  # type: ignore[arg-type]


def test_mutes_match_on_rule_and_subject_within_their_window_only() -> None:
    start, end = NOW - timedelta(hours=1), NOW + timedelta(hours=1)
    machine = Mute(start, end, "maintenance", machine_id="m1", mute_id=1)
    other_rule = Mute(start, end, "other", rule_name="device-offline", mute_id=2)
    over = Mute(NOW - timedelta(hours=3), NOW, "ended at now", mute_id=3)
    mutes = [other_rule, over, machine]
    assert active_mute(mutes, "anomaly-critical", cond("a", "m1"), NOW) == machine
    assert active_mute(mutes, "anomaly-critical", cond("a", "m2"), NOW) is None
    assert active_mute(mutes, "device-offline", cond("a", "m2"), NOW) == other_rule
    assert active_mute(mutes, "anomaly-critical", cond("a", "m1"), end) is None  # end is exclusive


def test_backoff_doubles_from_the_base_and_is_capped() -> None:
    delays = [(next_attempt(n, NOW, 30, 600) - NOW).total_seconds() for n in range(1, 7)]
    assert delays == [30, 60, 120, 240, 480, 600]


def test_message_says_what_where_when_how_bad_and_links() -> None:
    rule = Rule("anomaly-critical", "anomaly")
    title, body = render(Change("open", cond("fp-1")), rule, NOW + timedelta(minutes=2))
    assert title == "[CRITICAL] t1/f1/m1: thing fp-1"
    assert body.splitlines() == [
        "What: thing fp-1 (rule anomaly-critical, anomaly)",
        "Where: t1/f1/m1",
        "When: 2026-03-01T12:00:00Z; detected 2026-03-01T12:02:00Z",
        "How bad: critical; severity 4",
        "Link: http://ui/x",
        "Fingerprint: fp-1",
    ]
    title, body = render(Change("resolve", cond("fp-1")), rule, NOW + timedelta(hours=1))
    assert title == "[RESOLVED] t1/f1/m1: thing fp-1"
    assert "When: 2026-03-01T12:00:00Z; resolved 2026-03-01T13:00:00Z" in body


def test_webhook_urls_get_timeouts_and_the_alert_fields_other_urls_only_timeouts() -> None:
    fields = {"rule": "r 1", "fingerprint": "r:t1/f1/m1", "machine_id": None}
    assert channel_url("json://host/hook", fields, 5) == (
        "json://host/hook?cto=5&rto=5&:rule=r%201&:fingerprint=r%3At1%2Ff1%2Fm1"
    )
    assert channel_url("mailto://host:25?to=a@b&cto=2", fields, 5) == "mailto://host:25?to=a@b&cto=2&rto=5"


def test_errors_are_scrubbed_of_the_channel_secret() -> None:
    url = "https://hooks.slack.com/services/T0/B0/SECRETTOKEN"
    assert scrub(f"failed posting to {url} and /services/T0/B0/SECRETTOKEN", url) == "failed posting to *** and ***"


CONFIG = {
    "channels": {"hook": {"kind": "webhook", "url_env": "ALERT_HOOK"}},
    "rules": [{"name": "a", "kind": "anomaly", "params": {"min_severity": 4}, "channels": ["hook"]}],
    "mutes": [{"machine_id": "m1", "start": "2026-03-01T10:00:00Z", "end": "2026-03-01T11:00:00", "reason": "pm"}],
}


def test_config_parses_with_defaults_filled_in() -> None:
    config = parse_alert_config(CONFIG)
    assert config.rules == [
        Rule(
            "a",
            "anomaly",
            "*",
            {"min_severity": 4, "max_age_hours": 24, "max_per_machine": 3},
            ("hook",),
            True,
            True,
            "",
        )
    ]
    assert config.mutes == [
        Mute(datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 3, 1, 11, tzinfo=UTC), "pm", machine_id="m1")
    ]
    assert config.channels["hook"].url({"ALERT_HOOK": " json://x/y "}) == "json://x/y"
    assert config.channels["hook"].url({}) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rules": [{"name": "a", "kind": "bogus"}]}, "rule a: kind must be one of"),
        ({"rules": [{"name": "a", "kind": "anomaly", "params": {"min_sev": 3}}]}, "unknown param(s) ['min_sev']"),
        ({"rules": [{"name": "a", "kind": "anomaly", "params": {"min_severity": "x"}}]}, "min_severity must be"),
        ({"rules": [{"name": "a", "kind": "anomaly", "channels": ["nope"]}]}, "unknown channel(s) ['nope']"),
        ({"channels": {"c": {"kind": "pager", "url_env": "X"}}}, "channel c: kind must be one of"),
        ({"channels": {"c": {"kind": "slack", "url": "https://hooks"}}}, "expected only `kind` and `url_env`"),
        ({"mutes": [{"start": "2026-01-01", "end": "2025-01-01", "reason": "x"}]}, "end must be after start"),
        ({"mutes": [{"start": "2026-01-01", "end": "2027-01-01"}]}, "needs a `reason`"),
        ({"mutes": [{"rule": "zz", "start": "2026-01-01", "end": "2027-01-01", "reason": "x"}]}, "unknown rule"),
        (
            {"rules": [{"name": "a", "kind": "kpi_threshold", "params": {"kpi": "oe", "below": 0.6}}]},
            "rule a: param kpi must be a KPI of the catalogue, got 'oe'",
        ),
        (
            {"rules": [{"name": "a", "kind": "kpi_threshold", "params": {"below": 0.6, "above": 0.9}}]},
            "rule a: give exactly one of `below` and `above`",
        ),
        ({"rules": [{"name": "a", "kind": "kpi_threshold"}]}, "give exactly one of `below` and `above`"),
        (
            {"rules": [{"name": "a", "kind": "kpi_threshold", "params": {"below": 0.6, "period": "week"}}]},
            "param period must be one of ['hour', 'shift', 'day'], got 'week'",
        ),
        (
            {"rules": [{"name": "a", "kind": "kpi_threshold", "params": {"below": 0.6, "periods": 0}}]},
            "param periods must be a whole number ≥ 1, got 0",
        ),
        ({"rules": [{"name": "a", "kind": "trend", "params": {"direction": "up"}}]}, "param direction must be one of"),
        ({"rules": [{"name": "a", "kind": "trend", "params": {"source": "lab"}}]}, "param source must be one of"),
        ({"rules": [{"name": "a", "kind": "trend", "params": {"max_p_value": 2}}]}, "max_p_value must be at most 1"),
        ({"rules": [{"name": "a", "kind": "energy_deviation", "params": {"min_pct": -5}}]}, "min_pct must be"),
        ({"rules": [{"name": "a", "kind": "energy_deviation", "params": {"period": "shift"}}]}, "param period must"),
        ({"rules": [{"name": "a", "kind": "forecast_peak"}]}, "rule a: param above must be a number (the limit"),
        (
            {"rules": [{"name": "a", "kind": "forecast_peak", "params": {"above": 500, "use": "lower"}}]},
            "param use must be one of ['value', 'upper'], got 'lower'",
        ),
        (
            {"rules": [{"name": "a", "kind": "forecast_peak", "params": {"above": 500, "kpi": "oee"}}]},
            "param kpi must be one of ['peak_demand_kw', 'energy_kwh'], got 'oee'",
        ),
        (
            {"rules": [{"name": "a", "kind": "forecast_peak", "params": {"above": 500, "scope": "line"}}]},
            "param scope must be one of ['factory', 'machine'], got 'line'",
        ),
        (
            {"rules": [{"name": "a", "kind": "forecast_peak", "params": {"above": 500, "days_ahead": 0}}]},
            "param days_ahead must be a whole number ≥ 1, got 0",
        ),
    ],
)
def test_config_errors_name_the_entry_and_field(change: dict, message: str) -> None:
    with pytest.raises(AlertConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_alert_config({**CONFIG, **change})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        # 600 s is no rollup window of WINDOWS 60,300,3600: the rule read no rows and never alerted
        ({"bucket_s": 600}, "rule fr: param bucket_s must be one of the event rollup windows [60, 300, 3600, 86400]"),
        # 3600 s buckets wholly inside the last 60 min exist only at the stroke of the hour
        ({"bucket_s": 3600}, "rule fr: param window_minutes must span at least two bucket_s buckets (120 min"),
    ],
)
def test_a_fail_rate_rule_that_could_never_alert_is_a_config_error(params: dict, message: str) -> None:
    rules = {"rules": [{"name": "fr", "kind": "fail_rate", "params": params}]}
    with pytest.raises(AlertConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_alert_config({**CONFIG, **rules}, windows=[60, 300, 3600])
    # the same rule with a window it can fill loads: the error is about the bucket, not the kind
    parse_alert_config({**CONFIG, "rules": [{"name": "fr", "kind": "fail_rate", "params": {"bucket_s": 300}}]})


def test_a_trend_rule_on_a_window_that_is_never_judged_is_a_config_error() -> None:
    """Trends are judged only over TREND_WINDOWS_HOURS (6 and 24 by default): a rule watching the
    12 h window read no judgement and silently never alerted."""
    rule = {"name": "hot", "kind": "trend", "params": {"name": "temp", "window_hours": 12}}
    with pytest.raises(
        AlertConfigError, match=r"rule hot: param window_hours must be one of the trend windows \[6, 24\] \(h\), got 12"
    ):
        parse_alert_config({**CONFIG, "rules": [rule]}, trend_windows=[6, 24])
    # with 12 among the judged windows the same rule loads
    loaded = parse_alert_config({**CONFIG, "rules": [rule]}, trend_windows=[6, 12, 24]).rules
    assert loaded[0].params["window_hours"] == 12


def test_kpi_trend_and_deviation_rules_parse_with_their_defaults() -> None:
    rules = parse_alert_config(
        {
            **CONFIG,
            "rules": [
                {"name": "oee", "kind": "kpi_threshold", "params": {"kpi": "oee", "below": 0.6}},
                {"name": "rej", "kind": "kpi_threshold", "params": {"kpi": "reject_rate", "above": 0.02}},
                {"name": "drv", "kind": "kpi_threshold", "params": {"kpi": "avg_outdoor_temp", "above": 35}},
                {"name": "hot", "kind": "trend", "params": {"name": "temp", "min_slope_per_hour": 0.5}},
                {"name": "enb", "kind": "energy_deviation"},
            ],
        }
    ).rules
    assert rules[0].params == {
        "kpi": "oee",
        "period": "shift",
        "below": 0.6,
        "above": None,
        "periods": 1,
        "lookback_hours": 48,
        "severity": "warning",
    }
    assert rules[3].params == {
        "source": "metric",
        "name": "temp",
        "direction": "increasing",
        "min_slope_per_hour": 0.5,
        "window_hours": 24,
        "max_p_value": 0.05,
        "lookback_hours": 3,
        "severity": "warning",
    }
    assert rules[4].params == {
        "period": "day",
        "direction": "above",
        "min_pct": 10.0,
        "periods": 1,
        "lookback_hours": 48,
        "severity": "warning",
    }


def test_a_device_offline_rule_s_minutes_default_to_the_silence_the_rollups_count_offline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DEVICE_OFFLINE_MINUTES is when the uptime rollups count a silent machine offline: the alert
    # rule without its own minutes uses the same, so the two agree on what an outage is
    monkeypatch.setenv("DEVICE_OFFLINE_MINUTES", "15")
    get_settings.cache_clear()
    try:
        rule = {"name": "off", "kind": "device_offline"}
        (loaded,) = parse_alert_config({**CONFIG, "rules": [rule]}).rules
    finally:
        get_settings.cache_clear()
    assert loaded.params == {"minutes": 15, "lookback_hours": 168}
