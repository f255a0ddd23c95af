"""Several tenants at once, as a real platform carries them: the same factory and machine ids in two
tenants, and the same machine id in two factories of one tenant, through the hourly KPIs, the device
rollups and the device_offline alert. Each machine's figures must be its own, exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics_platform.alerts.config import store_mutes
from analytics_platform.alerts.model import Mute, Rule
from analytics_platform.alerts.observe import devices_offline
from analytics_platform.results.events import recompute_device
from analytics_platform.results.kpis import recompute_kpis
from analytics_platform.transforms.machine_kpis import KpiOptions, fixed_periods
from analytics_platform_tests.support.alerts import HttpReceiver, MailReceiver, environ, tick
from analytics_platform_tests.support.stack import DatabaseHandle

H10 = datetime(2025, 8, 20, 10, tzinfo=UTC)
HOUR, MINUTE = timedelta(hours=1), timedelta(minutes=1)
OPTIONS = KpiOptions(drivers=())
# the same ids three times: two tenants, and a second factory of the first
MACHINES = (("t1", "f1", "mc-01"), ("t2", "f1", "mc-01"), ("t1", "f2", "mc-01"))


def insert_readings(db: DatabaseHandle, rows: list[tuple[tuple[str, str, str], datetime, str, str, float]]) -> None:
    with db.connect() as conn:
        conn.cursor().executemany(
            """INSERT INTO analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric,
                   value, schema_version, dedup_key, topic, kafka_partition, kafka_offset)
               VALUES (%s, %s, %s, %s, %s, %s, %s, 1, %s, 'sensors.device.readings', 0, 0)""",
            [(ts, *m, s, metric, v, f"{'|'.join(m)}|{s}|{metric}|{ts.isoformat()}") for m, ts, s, metric, v in rows],
        )


def insert_health(
    db: DatabaseHandle, rows: list[tuple[tuple[str, str, str], datetime, str | None, str | None]]
) -> None:
    """(machine, time, status, run_state) rows of raw_device_health."""
    with db.connect() as conn:
        conn.cursor().executemany(
            """INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, status, run_state,
                   schema_version, dedup_key, topic, kafka_partition, kafka_offset)
               VALUES (%s, %s, %s, %s, %s, %s, 1, %s, 'device.health', 0, 0)""",
            [(ts, *m, s, r, f"{'|'.join(m)}|{s}|{r}|{ts.isoformat()}") for m, ts, s, r in rows],
        )


def test_the_same_machine_ids_in_two_tenants_and_two_factories_keep_their_own_kpis_and_uptime(
    database: DatabaseHandle,
) -> None:
    # Each of the three machines runs from 09:55 and meters 100 kWh at 09:55. Over the hour 10:00-11:00,
    # machine n (1, 2, 3) meters n x 60 kWh (readings every 10 min, n x 10 kWh each), draws n x 100 kW
    # and makes n x 6 parts (count_total every 10 min, n per reading), all good.
    for n, m in enumerate(MACHINES, 1):
        insert_health(database, [(m, H10 - 5 * MINUTE, "online", "running")])
        insert_health(database, [(m, H10 + 5 * i * MINUTE, None, None) for i in range(1, 13)])  # heartbeats
        insert_readings(database, [(m, H10 - 5 * MINUTE, "s-e", "energy", 100.0)])
        insert_readings(database, [(m, H10 - 5 * MINUTE, "s-c", "count_total", 0.0)])
        insert_readings(database, [(m, H10 - 5 * MINUTE, "s-g", "count_good", 0.0)])
        for i in range(1, 7):
            at = H10 - 5 * MINUTE + 10 * i * MINUTE
            insert_readings(database, [(m, at, "s-e", "energy", 100.0 + n * 10 * i)])
            insert_readings(database, [(m, at, "s-c", "count_total", float(n * i))])
            insert_readings(database, [(m, at, "s-g", "count_good", float(n * i))])
        insert_readings(database, [(m, H10 + 5 * i * MINUTE, "s-p", "power", n * 100.0) for i in range(-1, 13)])
    # machine 2 (t2) goes offline at 10:30 and says so; the others stay online
    insert_health(database, [(MACHINES[1], H10 + 30 * MINUTE, "offline", None)])

    with database.connect(database.pipeline_url) as conn:
        recompute_kpis(
            conn,
            fixed_periods("hour", H10, H10 + HOUR, HOUR),
            OPTIONS,
            lookback=timedelta(seconds=OPTIONS.max_interval_s),
        )
        recompute_device(conn, [3600], H10, H10 + HOUR, lookback=timedelta(hours=168), now=H10 + HOUR)

    def kpi(name: str) -> dict[tuple[str, str, str], float]:
        rows = database.query(
            "SELECT tenant_id, factory_id, machine_id, value FROM analytics.analytics_kpi "
            "WHERE period = 'hour' AND period_start = %s AND kpi = %s",
            (H10, name),
        )
        return {(t, f, m): v for t, f, m, v in rows}

    # By hand, machine n: 09:55-10:55 metered n x 60 kWh, of which the hour holds 10:00-10:55 in full and
    # 5 of the 10 minutes of 09:55-10:05: n x (5 + 50) kWh; 10:55-11:00 is not metered yet (no reading after).
    energy = kpi("energy_kwh")
    assert {m: round(v, 9) for m, v in energy.items()} == {m: round(n * 55.0, 9) for n, m in enumerate(MACHINES, 1)}, (
        "machines with the same ids in another tenant or factory mixed their meters"
    )
    assert kpi("peak_demand_kw") == {m: n * 100.0 for n, m in enumerate(MACHINES, 1)}
    assert database.query(
        "SELECT tenant_id, factory_id, round(uptime_pct::numeric, 6)::float8 FROM analytics.analytics_event_rollup "
        "WHERE event_type = 'device_health' AND window_s = 3600 ORDER BY 1, 2"
    ) == [("t1", "f1", 100.0), ("t1", "f2", 100.0), ("t2", "f1", 50.0)]

    # the alert at 10:45: only t2's machine is offline (15 min), and it is t2's
    rule = Rule("offline", "device_offline", params={"minutes": 10, "lookback_hours": 168}, channels=())
    with database.connect(database.pipeline_url) as conn:
        conditions = devices_offline(conn, rule, H10 + 45 * MINUTE, "http://ui").conditions
    assert [(c.tenant_id, c.factory_id, c.machine_id, c.observed_at) for c in conditions] == [
        ("t2", "f1", "mc-01", H10 + 30 * MINUTE)
    ]


def test_a_mute_of_one_tenant_s_machine_leaves_the_same_ids_in_another_tenant_notifying(
    database: DatabaseHandle,
) -> None:
    # t1's mc-01 is in a maintenance window (a mute of t1/f1/mc-01); t2's mc-01 goes offline too: its
    # alert must go out, t1's must be recorded as muted, and neither may be notified again next tick.
    http, mail = HttpReceiver(), MailReceiver()
    http.start()
    mail.start()
    try:
        now = H10 + HOUR
        insert_health(database, [(m, H10, "offline", None) for m in MACHINES[:2]])
        with database.connect() as conn:
            store_mutes(
                conn,
                [Mute(H10, H10 + 2 * HOUR, "maintenance", tenant_id="t1", factory_id="f1", machine_id="mc-01")],
            )
        rule = Rule("offline", "device_offline", params={"minutes": 10, "lookback_hours": 168}, channels=("hook",))
        report = tick(database, now, environ(http, mail), [rule])
        assert (report.opened, report.muted, report.sent) == (2, 1, 1)
        assert [(b["tenant_id"], b["machine_id"]) for _, b in http.requests] == [("t2", "mc-01")]
        report = tick(database, now + MINUTE, environ(http, mail), [rule])
        assert (report.opened, report.queued, report.sent) == (0, 0, 0)
        assert database.query("SELECT tenant_id, status FROM analytics.alert_log ORDER BY 1") == [
            ("t1", "muted"),
            ("t2", "sent"),
        ]
    finally:
        http.stop()
        mail.stop()
