"""Alert rules on KPIs, trends and energy deviation, end to end: rows in the real result tables, one
tick of the alert engine at an explicit `now`, and the Slack-shaped receiver on 127.0.0.1 that the
other alert tests use (support/alerts.py). Exactly once (a second tick sends nothing), mutes,
resolve when the value recovers, and a tenant's rule never fires on another tenant's machine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from analytics_platform.alerts.config import RULE_PARAMS, store_mutes, store_rules
from analytics_platform.alerts.model import ANY, Mute, Rule
from analytics_platform_tests.support.alerts import NOW, UI, HttpReceiver, MailReceiver, environ, tick
from analytics_platform_tests.support.stack import DatabaseHandle


def rule(name: str, kind: str, tenant: str = ANY, **params: object) -> Rule:
    """A rule as read from the table: its kind's defaults under the given params."""
    return Rule(name, kind, tenant_id=tenant, params={**RULE_PARAMS[kind], **params}, channels=("slack",))


OEE_RULE = rule("oee-shift-low", "kpi_threshold", "t1", kpi="oee", period="shift", below=0.6)
DAY = datetime(2026, 3, 1, 6, 0, tzinfo=NOW.tzinfo)  # the early shift of the day before NOW


@pytest.fixture
def receivers() -> Iterator[tuple[HttpReceiver, dict[str, str]]]:
    http, mail = HttpReceiver(), MailReceiver()
    http.start()
    try:
        yield http, environ(http, mail)
    finally:
        http.stop()


def kpi(
    db: DatabaseHandle,
    machine: str,
    start: datetime,
    hours: int,
    value: float | None,
    *,
    name: str = "oee",
    period: str = "shift",
    tenant: str = "t1",
    details: dict | None = None,
) -> None:
    """One KPI row as the KPI assets write it."""
    db.query(
        """INSERT INTO analytics.analytics_kpi
               (period_start, period_end, period, tenant_id, factory_id, machine_id, kpi, value, unit, null_reason,
                details)
           VALUES (%s, %s, %s, %s, 'f1', %s, %s, %s, 'ratio', %s, %s) RETURNING 1""",
        (
            start,
            start + timedelta(hours=hours),
            period,
            tenant,
            machine,
            name,
            value,
            None if value is not None else "no units produced in the period",
            json.dumps(details) if details else None,
        ),
    )


def slack_texts(http: HttpReceiver) -> list[str]:
    return [body["text"] for path, body in http.requests if path == "/slack"]


def test_a_shift_oee_below_60_percent_is_told_once_and_resolves_when_it_recovers(
    database: DatabaseHandle, receivers: tuple[HttpReceiver, dict[str, str]]
) -> None:
    http, env = receivers
    with database.connect() as conn:  # the table accepts the new kinds (sql/20)
        store_rules(conn, [OEE_RULE, rule("t", "trend"), rule("e", "energy_deviation")])
    kpi(database, "mc-01", DAY, 8, 0.52, details={"shift": "early"})
    kpi(database, "mc-01", DAY, 8, 0.40, tenant="t2", details={"shift": "early"})  # another tenant's machine
    kpi(database, "mc-02", DAY, 8, 0.6, details={"shift": "early"})  # exactly 60 %: not below

    report = tick(database, NOW, env, rules=(OEE_RULE,))
    assert (report.opened, report.queued, report.sent, report.rule_errors) == (1, 1, 1, {})
    fingerprint = "oee-shift-low:t1/f1/mc-01/oee/shift"
    summary = "oee of the shift early ending 2026-03-01T14:00:00Z = 52 %, below 60 %"
    assert slack_texts(http) == [
        "\n".join(
            [
                f"What: {summary} (rule oee-shift-low, kpi_threshold)",
                "Where: t1/f1/mc-01",
                "When: 2026-03-01T06:00:00Z; detected 2026-03-02T10:00:00Z",
                "How bad: warning; kpi oee; period shift; shift early; value 0.52; threshold 0.6; "
                "period_start 2026-03-01T06:00:00Z; period_end 2026-03-01T14:00:00Z; periods 1",
                f"Link: {UI}/assets/daily_machine_kpis?view=partitions&partition=2026-03-01",
                f"Fingerprint: {fingerprint}",
            ]
        )
    ]

    # exactly once: a second tick, and a second bad shift in a row, send nothing
    assert tick(database, NOW + timedelta(minutes=1), env, rules=(OEE_RULE,)).queued == 0
    kpi(database, "mc-01", DAY + timedelta(hours=8), 8, 0.55, details={"shift": "late"})
    report = tick(database, NOW + timedelta(minutes=2), env, rules=(OEE_RULE,))
    assert (report.opened, report.resolved, report.queued) == (0, 0, 0)
    # a shift without production is no evidence: still open
    kpi(database, "mc-01", DAY + timedelta(hours=16), 8, None, details={"shift": "night"})
    assert tick(database, NOW + timedelta(minutes=3), env, rules=(OEE_RULE,)).queued == 0
    assert len(http.requests) == 1

    # the next good shift resolves it, with one message
    kpi(database, "mc-01", DAY + timedelta(hours=24), 8, 0.75, details={"shift": "early"})
    later = DAY + timedelta(hours=32, minutes=5)
    report = tick(database, later, env, rules=(OEE_RULE,))
    assert (report.resolved, report.queued, report.sent) == (1, 1, 1)
    assert slack_texts(http)[1].startswith(f"What: {summary} (rule oee-shift-low, kpi_threshold)")
    assert tick(database, later + timedelta(minutes=1), env, rules=(OEE_RULE,)).queued == 0
    assert database.query(
        "SELECT fingerprint, state, tenant_id, machine_id FROM analytics.alert_conditions ORDER BY fingerprint"
    ) == [(fingerprint, "resolved", "t1", "mc-01")]
    assert database.query("SELECT transition, channel, status FROM analytics.alert_log ORDER BY log_id") == [
        ("open", "slack", "sent"),
        ("resolve", "slack", "sent"),
    ]


def test_a_rule_for_every_tenant_sees_each_tenant_and_a_tenant_rule_only_its_own(
    database: DatabaseHandle, receivers: tuple[HttpReceiver, dict[str, str]]
) -> None:
    http, env = receivers
    kpi(database, "mc-01", DAY, 8, 0.40, tenant="t2", details={"shift": "early"})
    assert tick(database, NOW, env, rules=(OEE_RULE,)).opened == 0
    assert http.requests == []
    everyone = rule("oee-any", "kpi_threshold", kpi="oee", period="shift", below=0.6)
    report = tick(database, NOW + timedelta(minutes=1), env, rules=(everyone,))
    assert (report.opened, report.sent) == (1, 1)
    assert database.query("SELECT fingerprint, tenant_id FROM analytics.alert_conditions") == [
        ("oee-any:t2/f1/mc-01/oee/shift", "t2")
    ]


def test_a_muted_machine_is_logged_muted_and_never_sent(
    database: DatabaseHandle, receivers: tuple[HttpReceiver, dict[str, str]]
) -> None:
    http, env = receivers
    kpi(database, "mc-02", DAY, 8, 0.31, details={"shift": "early"})
    with database.connect() as conn:
        (mute_id,) = store_mutes(
            conn, [Mute(NOW - timedelta(hours=1), NOW + timedelta(hours=2), "line changeover", machine_id="mc-02")]
        )
    report = tick(database, NOW, env, rules=(OEE_RULE,))
    assert (report.opened, report.muted, report.queued, report.sent) == (1, 1, 0, 0)
    assert database.query("SELECT status, mute_id, error FROM analytics.alert_log") == [
        ("muted", mute_id, "muted: line changeover")
    ]
    assert tick(database, NOW + timedelta(hours=3), env, rules=(OEE_RULE,)).queued == 0  # mute over, still open
    assert http.requests == []


def test_reject_rate_above_2_percent_from_whole_counts(
    database: DatabaseHandle, receivers: tuple[HttpReceiver, dict[str, str]]
) -> None:
    """2 rejects in 100 is exactly 2 % (not above); 3 in 100 is above. Computed from the quality
    row's counts, so 1 − 0.98 rounding cannot fire the first."""
    http, env = receivers
    reject = rule("reject-rate", "kpi_threshold", kpi="reject_rate", period="hour", above=0.02, lookback_hours=4)
    hour = NOW - timedelta(hours=1)
    kpi(database, "mc-01", hour, 1, 0.98, name="quality", period="hour", details={"good": 98, "total": 100})
    kpi(database, "mc-02", hour, 1, 0.97, name="quality", period="hour", details={"good": 97, "total": 100})
    report = tick(database, NOW, env, rules=(reject,))
    assert (report.opened, report.sent) == (1, 1)
    assert slack_texts(http)[0].startswith(
        "What: reject_rate of the hour ending 2026-03-02T10:00:00Z = 3 %, above 2 % (rule reject-rate, kpi_threshold)"
    )
    assert database.query("SELECT machine_id FROM analytics.alert_conditions") == [("mc-02",)]


def test_a_kpi_must_stay_past_its_threshold_for_the_rules_number_of_periods(
    database: DatabaseHandle, receivers: tuple[HttpReceiver, dict[str, str]]
) -> None:
    _, env = receivers
    sec = rule(
        "sec-high", "kpi_threshold", kpi="sec_kwh_per_unit", period="hour", above=1.5, periods=3, lookback_hours=6
    )
    for h, value in enumerate([1.6, 1.7, 1.8]):  # mc-01: three high hours in a row
        kpi(database, "mc-01", NOW - timedelta(hours=3 - h), 1, value, name="sec_kwh_per_unit", period="hour")
    for h, value in enumerate([1.6, 1.2, 1.8]):  # mc-02: one normal hour between
        kpi(database, "mc-02", NOW - timedelta(hours=3 - h), 1, value, name="sec_kwh_per_unit", period="hour")
    report = tick(database, NOW, env, rules=(sec,))
    assert report.opened == 1
    assert database.query("SELECT machine_id, observed_at, details->>'periods' FROM analytics.alert_conditions") == [
        ("mc-01", NOW - timedelta(hours=3), "3")
    ]


def deviation(db: DatabaseHandle, machine: str, day: datetime, actual: float, predicted: float, tenant: str = "t1"):
    pct = (actual - predicted) / predicted * 100
    db.query(
        """INSERT INTO analytics.analytics_baseline_deviation
               (period_start, period_end, period, tenant_id, factory_id, machine_id, baseline_version, actual_kwh,
                predicted_kwh, deviation_kwh, deviation_pct, z, severity)
           VALUES (%s, %s, 'day', %s, 'f1', %s, 1, %s, %s, %s, %s, NULL, 'warning') RETURNING 1""",
        (day, day + timedelta(days=1), tenant, machine, actual, predicted, actual - predicted, pct),
    )


def test_energy_above_its_baseline_by_more_than_10_percent(
    database: DatabaseHandle, receivers: tuple[HttpReceiver, dict[str, str]]
) -> None:
    http, env = receivers
    energy = rule("energy-over-baseline", "energy_deviation", "t1", min_pct=10)
    day = datetime(2026, 3, 1, tzinfo=NOW.tzinfo)
    deviation(database, "mc-01", day, 1150.0, 1000.0)  # +15 %
    deviation(database, "mc-02", day, 1100.0, 1000.0)  # +10 %: not more than 10
    deviation(database, "mc-03", day, 800.0, 1000.0)  # −20 %: below, not above
    deviation(database, "mc-01", day, 1500.0, 1000.0, tenant="t2")
    report = tick(database, NOW, env, rules=(energy,))
    assert (report.opened, report.sent) == (1, 1)
    assert slack_texts(http)[0].startswith(
        "What: energy of the day ending 2026-03-02T00:00:00Z +15 % against the baseline (1150 kWh, predicted 1000 kWh; "
        "limit 10 %) (rule energy-over-baseline, energy_deviation)"
    )
    assert tick(database, NOW + timedelta(minutes=1), env, rules=(energy,)).queued == 0
    deviation(database, "mc-01", day + timedelta(days=1), 1020.0, 1000.0)
    report = tick(database, NOW + timedelta(days=1), env, rules=(energy,))
    assert (report.resolved, report.sent) == (1, 1)


def test_a_rule_built_with_only_the_params_it_changes_reads_its_kinds_defaults(
    database: DatabaseHandle, receivers: tuple[HttpReceiver, dict[str, str]]
) -> None:
    """A rule made in code (a replay, a test) with just `kpi` and `below` behaves as one loaded from
    the table: period shift, one period, 48 h look-back, severity warning."""
    _, env = receivers
    kpi(database, "mc-01", DAY, 8, 0.5, details={"shift": "early"})
    bare = Rule("oee-bare", "kpi_threshold", params={"kpi": "oee", "below": 0.6}, channels=("slack",))
    report = tick(database, NOW, env, rules=(bare,))
    assert (report.opened, report.sent, report.rule_errors) == (1, 1, {})
    assert database.query("SELECT fingerprint, severity FROM analytics.alert_conditions") == [
        ("oee-bare:t1/f1/mc-01/oee/shift", "warning")
    ]


TOMORROW = datetime(2026, 3, 3, tzinfo=NOW.tzinfo)  # the UTC day after NOW's
PEAK_RULE = rule("peak-tomorrow", "forecast_peak", "t1", above=500.0)


def forecast(
    db: DatabaseHandle, factory: str, machine: str, issued: datetime, value: float, band: float, tenant: str = "t1"
) -> None:
    """One day row of tomorrow's peak demand as the energy_forecasts asset writes it."""
    db.query(
        """INSERT INTO analytics.analytics_forecast (issued_at, period, target_start, target_end, horizon_day,
               tenant_id, factory_id, machine_id, kpi, value, lower, upper, level, unit, model)
           VALUES (%s, 'day', %s, %s, 1, %s, %s, %s, 'peak_demand_kw', %s, %s, %s, 0.9, 'kW', 'test')
           RETURNING 1""",
        (issued, TOMORROW, TOMORROW + timedelta(days=1), tenant, factory, machine, value, value - band, value + band),
    )


def test_tomorrows_forecast_peak_above_the_contracted_limit_is_told_once_per_factory_and_day(
    database: DatabaseHandle, receivers: tuple[HttpReceiver, dict[str, str]]
) -> None:
    http, env = receivers
    issued = datetime(2026, 3, 2, tzinfo=NOW.tzinfo)
    with database.connect() as conn:  # the table accepts the kind (sql/23)
        store_rules(conn, [PEAK_RULE])
    forecast(database, "f1", "*", issued, 520.0, 40.0)  # the factory: above 500 kW
    forecast(database, "f2", "*", issued, 450.0, 60.0)  # below; only its band reaches above
    forecast(database, "f1", "m1", issued, 600.0, 10.0)  # a machine: not the factory scope
    forecast(database, "f1", "*", issued, 900.0, 10.0, tenant="t2")  # another tenant's factory
    forecast(database, "f1", "*", NOW + timedelta(hours=1), 10.0, 1.0)  # issued after now: not yet there

    report = tick(database, NOW, env, rules=(PEAK_RULE,))
    assert (report.opened, report.queued, report.sent, report.rule_errors) == (1, 1, 1, {})
    fingerprint = "peak-tomorrow:t1/f1/*/peak_demand_kw/2026-03-03"
    summary = "f1's peak_demand_kw forecast for 2026-03-03 (UTC) is above 500 kW: 520 kW (90% band 480–560)"
    assert slack_texts(http) == [
        "\n".join(
            [
                f"What: {summary} (rule peak-tomorrow, forecast_peak)",
                "Where: t1/f1",
                "When: 2026-03-03T00:00:00Z; detected 2026-03-02T10:00:00Z",
                "How bad: warning; kpi peak_demand_kw; day 2026-03-03; value 520.0; lower 480.0; upper 560.0; "
                "limit 500.0; compared value; issued_at 2026-03-02T00:00:00Z",
                f"Link: {UI}/assets/energy_forecasts?view=partitions&partition=2026-03-01",
                f"Fingerprint: {fingerprint}",
            ]
        )
    ]
    assert tick(database, NOW + timedelta(minutes=1), env, rules=(PEAK_RULE,)).queued == 0  # exactly once

    # a newer issue of the same day under the limit resolves it, with one message
    forecast(database, "f1", "*", NOW + timedelta(minutes=5), 490.0, 40.0)
    report = tick(database, NOW + timedelta(minutes=6), env, rules=(PEAK_RULE,))
    assert (report.resolved, report.queued, report.sent) == (1, 1, 1)
    assert slack_texts(http)[1].startswith(f"What: {summary} (rule peak-tomorrow, forecast_peak)")

    # the cautious reading (the band's top) of the same rows: both factories of t1 reach above 500 kW
    cautious = rule("peak-cautious", "forecast_peak", "t1", above=500.0, use="upper")
    report = tick(database, NOW + timedelta(minutes=7), env, rules=(cautious,))
    assert (report.opened, report.sent) == (2, 2)
    # a day later "tomorrow" is 2026-03-04, which has no forecast: the 2026-03-03 conditions expire unsaid
    report = tick(database, NOW + timedelta(days=1), env, rules=(cautious,))
    assert (report.expired, report.resolved, report.queued) == (2, 0, 0)
    assert database.query(
        "SELECT fingerprint, state, tenant_id, factory_id, machine_id FROM analytics.alert_conditions "
        "ORDER BY fingerprint"
    ) == [
        ("peak-cautious:t1/f1/*/peak_demand_kw/2026-03-03", "resolved", "t1", "f1", None),
        ("peak-cautious:t1/f2/*/peak_demand_kw/2026-03-03", "resolved", "t1", "f2", None),
        (fingerprint, "resolved", "t1", "f1", None),
    ]
    # the expiry closed them without a notification: the log holds the two opens, the resolve and nothing else
    assert database.query("SELECT rule_name, transition, status FROM analytics.alert_log ORDER BY log_id") == [
        ("peak-tomorrow", "open", "sent"),
        ("peak-tomorrow", "resolve", "sent"),
        ("peak-cautious", "open", "sent"),
        ("peak-cautious", "open", "sent"),
    ]
    assert len(http.requests) == 4
