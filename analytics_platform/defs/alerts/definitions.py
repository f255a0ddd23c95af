"""Alerting: the rule-evaluating sensor (rules, mutes and the alert log live in the database)."""

import dagster as dg

from analytics_platform.defs.alerts.sensors import build_alert_sensor
from analytics_platform.settings import PlatformSettings


def build_defs(settings: PlatformSettings) -> dg.Definitions:
    return dg.Definitions(sensors=[build_alert_sensor(settings)])
