"""Trends end to end: hourly aggregates and KPIs in the real database, the series_trends asset
materialised through Dagster, its rows, its checks, a re-run leaving one copy, and a `trend` alert
rule firing once on the Slack-shaped receiver (support/alerts.py) for its own tenant only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from analytics_platform.alerts.config import RULE_PARAMS
from analytics_platform.alerts.model import Rule
from analytics_platform.defs import build_definitions
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms.trends import mann_kendall
from analytics_platform_tests.support.alerts import HttpReceiver, MailReceiver, environ, tick
from analytics_platform_tests.support.stack import DatabaseHandle

START = datetime(2026, 3, 2, 0, tzinfo=UTC)
RISING = [60.0 + 0.5 * h for h in range(12)]
RISING[5] = 90.0  # one wild hour: Theil–Sen keeps the slope at 0.5/h
FLAT = [20.0, 21.0, 19.0, 22.0, 18.0, 21.0, 20.0, 19.0, 22.0, 20.0, 21.0, 19.0]
OEE = [0.8 - 0.01 * h for h in range(12)]


def hourly_mean(db: DatabaseHandle, tenant: str, hour: int, value: float) -> None:
    at = START + timedelta(hours=hour)
    db.query(
        """INSERT INTO analytics.analytics_agg (bucket_start, bucket_end, window_s, tenant_id, factory_id, machine_id,
                                                sensor_id, metric, count_n, sum_v, avg_v, min_v, max_v)
           VALUES (%s, %s, 3600, %s, 'f1', 'mc-01', 's-temp', 'temp', 60, %s, %s, %s, %s) RETURNING 1""",
        (at, at + timedelta(hours=1), tenant, value * 60, value, value, value),
    )


def hourly_kpi(db: DatabaseHandle, hour: int, value: float) -> None:
    at = START + timedelta(hours=hour)
    db.query(
        """INSERT INTO analytics.analytics_kpi (period_start, period_end, period, tenant_id, factory_id, machine_id,
                                                kpi, value, unit)
           VALUES (%s, %s, 'hour', 't1', 'f1', 'mc-01', 'oee', %s, 'ratio') RETURNING 1""",
        (at, at + timedelta(hours=1), value),
    )


@pytest.fixture
def slack() -> Iterator[tuple[HttpReceiver, dict[str, str]]]:
    http = HttpReceiver()
    http.start()
    try:
        yield http, environ(http, MailReceiver())
    finally:
        http.stop()


def trend_rows(db: DatabaseHandle) -> list[tuple]:
    return db.query(
        """SELECT tenant_id, source, sensor_id, name, window_hours, window_end, n, slope_per_hour, mk_s, p_value,
                  direction
           FROM analytics.analytics_trend ORDER BY tenant_id, source, name, window_hours"""
    )


def test_the_trend_asset_judges_each_tenants_series_and_a_trend_rule_fires_once(
    settings: PlatformSettings,
    database: DatabaseHandle,
    instance: dg.DagsterInstance,
    slack: tuple[HttpReceiver, dict[str, str]],
) -> None:
    for h in range(12):
        hourly_mean(database, "t1", h, RISING[h])
        hourly_mean(database, "t2", h, FLAT[h])
        hourly_kpi(database, h, OEE[h])
    defs = build_definitions(
        settings.model_copy(update={"partitions_start": START - timedelta(days=1)}), secrets_from_env=False
    )
    asset = defs.resolve_assets_def("series_trends")
    for _ in range(2):  # a re-run replaces the window end's rows: one copy
        result = dg.materialize([asset], partition_key="2026-03-02-11:00", instance=instance)
        assert result.success
        assert all(c.passed for c in result.get_asset_check_evaluations())
    end = START + timedelta(hours=12)
    rising, flat, oee = mann_kendall(RISING), mann_kendall(FLAT), mann_kendall(OEE)
    last6 = mann_kendall(RISING[6:])
    assert trend_rows(database) == [
        ("t1", "kpi", "", "oee", 6, end, 6, pytest.approx(-0.01), -15, mann_kendall(OEE[6:]).p_value, "decreasing"),
        ("t1", "kpi", "", "oee", 24, end, 12, pytest.approx(-0.01), -66, oee.p_value, "decreasing"),
        ("t1", "metric", "s-temp", "temp", 6, end, 6, 0.5, 15, last6.p_value, "increasing"),
        ("t1", "metric", "s-temp", "temp", 24, end, 12, 0.5, rising.s, rising.p_value, "increasing"),
        (
            "t2",
            "metric",
            "s-temp",
            "temp",
            6,
            end,
            6,
            0.0,
            mann_kendall(FLAT[6:]).s,
            mann_kendall(FLAT[6:]).p_value,
            "stable",
        ),
        ("t2", "metric", "s-temp", "temp", 24, end, 12, 0.0, flat.s, flat.p_value, "stable"),
    ]
    assert rising.s == 66 - 2 * 6  # the wild hour 5 is above the 6 hours after it: those 6 pairs flip sign
    assert database.scalar("SELECT count(*) FROM analytics.analytics_trend") == 6

    http, env = slack
    rising_rule = Rule(
        "temp-rising",
        "trend",
        tenant_id="t1",
        params={**RULE_PARAMS["trend"], "name": "temp", "min_slope_per_hour": 0.4},
        channels=("slack",),
    )
    everyone = Rule("temp-rising-any", "trend", params={**RULE_PARAMS["trend"], "name": "temp"}, channels=("slack",))
    report = tick(database, end + timedelta(minutes=30), env, rules=(rising_rule, everyone))
    assert (report.opened, report.sent, report.rule_errors) == (2, 2, {})
    assert database.query("SELECT fingerprint FROM analytics.alert_conditions ORDER BY 1") == [
        ("temp-rising-any:t1/f1/mc-01/s-temp/temp/increasing",),
        ("temp-rising:t1/f1/mc-01/s-temp/temp/increasing",),
    ]
    texts = [b["text"] for _, b in http.requests]
    assert texts[0].startswith(
        f"What: temp rising +0.5/h over 24 h (Mann–Kendall p = {rising.p_value:.2g}, 12 points) (rule temp-rising,"
    )
    assert tick(database, end + timedelta(minutes=31), env, rules=(rising_rule, everyone)).queued == 0
    steeper = Rule("temp-fast", "trend", params={**rising_rule.params, "min_slope_per_hour": 0.5}, channels=("slack",))
    assert tick(database, end + timedelta(minutes=32), env, rules=(steeper,)).opened == 0  # 0.5 is not more than 0.5
