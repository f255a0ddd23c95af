"""Probe round 4: late data across a UTC day boundary, through the real broker, the drain sensors, the
Dagster assets and their automation. A late status at 23:55 changes the hours of the next day that
carried the old status; the next day's rollup must be asked for again, not only the late hour's day.
A late reading re-opens its hour's KPIs and, once they are recomputed, its day's."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from analytics_platform.defs import build_definitions
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.automation import Ticks
from analytics_platform_tests.support.readings import KEY, body, drain, materialize, reading
from analytics_platform_tests.support.stack import DatabaseHandle, domain_topic, produce

DAILY = dg.AssetKey("daily_event_rollups")
HOURLY = "device_health_events"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def defs(settings: PlatformSettings) -> dg.Definitions:
    return build_definitions(settings, secrets_from_env=False)


def uptime(database: DatabaseHandle, window_s: int) -> dict[str, float]:
    rows = database.query(
        "SELECT bucket_start, round(uptime_pct::numeric, 4)::float8 FROM analytics.analytics_event_rollup "
        "WHERE event_type = 'device_health' AND window_s = %s ORDER BY 1",
        (window_s,),
    )
    return {start.astimezone(UTC).strftime("%d %H:%M"): pct for start, pct in rows}


def test_a_late_status_before_midnight_asks_again_for_the_rollup_of_the_day_it_carried_into(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    # An agent reporting on change: online at 23:50 on the 20th, next report online at 00:10 on the 22nd;
    # the hours of the 21st carry "online" (a silence that begins with a status change is the status
    # holding). The hours and both days are rolled up as the automation would (the hour of the 22nd
    # rolls up the silent hours of the 21st before it).
    topic = domain_topic(settings, "device")
    produce(
        settings.kafka_brokers,
        topic,
        [
            (KEY, body("2025-08-20T23:50:00Z", status="online", level="ok")),
            (KEY, body("2025-08-22T00:10:00Z", status="online", level="ok")),
        ],
    )
    drain(defs, instance, ["device"])
    for hour in ("2025-08-20-23:00", "2025-08-22-00:00"):
        materialize(defs, instance, [HOURLY], hour)
    materialize(defs, instance, ["daily_event_rollups"], "2025-08-20")
    materialize(defs, instance, ["daily_event_rollups"], "2025-08-21")
    assert uptime(database, 86400)["21 00:00"] == 100.0
    tick = Ticks(defs, instance, dg.AssetSelection.assets(DAILY))
    tick(at("2025-08-22T00:30:00"))  # the day settled: its rollups ran
    quiet = tick(at("2025-08-22T00:35:00"))
    assert quiet.total_requested == 0

    # The agent's buffered "offline" of 23:55 arrives late: the machine was down until 00:10 on the 22nd.
    # Its one raw partition (the 20th, 23:00) is recomputed, which recomputes the hours that carried the
    # old status: the whole 21st.
    produce(settings.kafka_brokers, topic, [(KEY, body("2025-08-20T23:55:00Z", status="offline", level="critical"))])
    drain(defs, instance, ["device"])
    materialize(defs, instance, [HOURLY], "2025-08-20-23:00")
    hours = uptime(database, 3600)
    assert {hours[f"21 {h:02d}:00"] for h in range(24)} == {0.0}

    late = tick(at("2025-08-22T00:40:00"))
    assert late.get_requested_partitions(DAILY) == {"2025-08-20", "2025-08-21"}, (
        "the late status rewrote every hour of the 21st, but the 21st's day rollup was not asked for again: "
        f"it keeps {uptime(database, 86400)['21 00:00']} % uptime beside 24 hours of 0 %"
    )


def test_a_late_reading_asks_again_for_the_daily_kpis_of_its_day(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings
) -> None:
    hourly, daily = dg.AssetKey("hourly_machine_kpis"), dg.AssetKey("daily_machine_kpis")
    topic = domain_topic(settings, "sensor")
    produce(settings.kafka_brokers, topic, [(KEY, reading("2025-08-20T10:00:00Z", 5.0, "p-1"))])
    drain(defs, instance, ["sensor"])
    materialize(defs, instance, ["hourly_machine_kpis"], "2025-08-20-10:00")
    materialize(defs, instance, ["daily_machine_kpis"], "2025-08-20")  # the 00:30 schedule's run
    tick = Ticks(defs, instance, dg.AssetSelection.assets(hourly, daily))
    tick(at("2025-08-21T01:00:00"))  # the day settled: its KPIs ran

    produce(settings.kafka_brokers, topic, [(KEY, reading("2025-08-20T10:30:00Z", 7.0, "p-2"))])  # late
    drain(defs, instance, ["sensor"])
    late = tick(at("2025-08-21T01:05:00"))
    assert late.get_requested_partitions(hourly) == {"2025-08-20-10:00"}
    materialize(defs, instance, ["hourly_machine_kpis"], "2025-08-20-10:00")
    after = tick(at("2025-08-21T01:10:00"))
    assert after.get_requested_partitions(daily) == {"2025-08-20"}, "the day's KPIs never follow the late reading"
