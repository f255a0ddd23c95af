"""The dashboard's endpoints of /v1 against a real database, no mocks: GET /v1/fleet, /v1/quality,
/v1/alerts and /v1/rejects answer exactly what the rows inserted here say (hand-computed below),
to the right key only. The helpers and keys are support/api.py's; `api` and `empty_api` are the
fixtures of integration/conftest.py.

GET /v1/fleet is judged at the database's now(), so its rows are placed relative to N, the
database clock just before they are inserted (a test takes far less than the 600 s of
`offline_after_s` that separates "30 s ago" from "700 s ago"):

    t1/f1/m1  readings temp s1 N-120s, s2 N-30s, s1 N-3d; power s1 N-300s, N-2d; humidity s1 N-8d
              (out of the look-back: not listed); health N-2h offline/fault/0.1, N-1h online/running/0.9,
              N-30min run_state idle only, N-15min status degraded only, N-60s health_score 0.75 only
              -> online (degraded is not offline), last seen N-30s, degraded / idle / 0.75;
              anomalies, counted as open anomaly *events* (rows of one series at most 3 samples apart,
              analytics.anomaly_events) with their peak severity: open sev 4 (N-40d: any age counts);
              s1/temp every 60 s at N-62min open sev 2, N-61min resolved sev 5, N-60min open sev 3:
              one event, open, peak 5 (a resolved row's severity is still the event's peak); resolved
              sev 5 (N-2h), an event of its own, resolved -> 2 open events (of 3 open rows), max 5
    t1/f1/m2  reading N-700s, health N-650s online -> offline: silent for more than 600 s
    t1/f1/m3  reading N-10s, health N-120s offline/idle/0.5, N-20s health_score 0.4 only -> offline
    t1/f1/m4  device health only, N-100s online/running/1.0 -> online, no readings, no metrics
    t1/f1/m5  reading N-10d, health N-9d; open anomalies sev 3 (N-10d) and sev 2 (N-10d+2min, 60 s samples:
              one event) -> listed (offline, nothing in the look-back), 1 open event, max 3
    t1/f1/m6  reading and health N-8d, a resolved anomaly -> not listed
    t1/f1/m7  reading N-2d only -> offline; gone with lookback_days=1
    t1/f2/m1  reading N-45s -> online
    t2/f1/m1  reading N-5s, health N-5s online/running/0.99, open anomalies sev 5 (N-1h) and sev 2 (N-50min,
              60 s samples: 10 samples apart, two events) -> online (t2 only), 2 open events, max 5

GET /v1/quality, tenant t1, factory f1, 2025-08-20 [00:00, 24:00), 3600 s rollups (subject <> ''):

    lab    hour  station  analyte   n  pass fail
           00    lab1     Moisture  4   3    1      (start: inclusive)
           01    lab2     Moisture  2   2    0
           02    lab1     Ash       3   -    -      (no spec limit: no verdicts)
           03    lab1     pH        4   4    0
           04    lab1     Protein   5   2    1      (5 results, 3 of them with a verdict)
           05    lab1     Moisture  5   3    2
    Moisture 11 / 8 / 3 -> pass_rate 8/11; limits '*' -inf, '*' 08-19, '*' 03:00 (valid at end: this one),
             '*' 2025-08-21 06:00 (after end: ignored); f2's own row is another factory's
    pH       4 / 4 / 0  -> 1.0; f1's own row (since always) beats the newer '*' row; f1's next row starts
             at end exactly: not valid at end
    Protein  5 / 2 / 1  -> 2/3 (verdicts only); its one limit starts at end: not valid at end -> limits null
    Ash      3 / 0 / 0  -> null; only a 'metric' limit of that name (not an analyte's) -> limits null

    sweep  hour  machine (subject '': batches are rolled up per machine)  n  pass fail
           01    m1                                                        15  14    1
           02    m1                                                        10   7    3
           02    m2                                                         4   -    -
    m1 25 / 21 / 4 -> fail_rate 4/25; m2 4 / 0 / 0 -> null

    hourly 00 lab 4/3/1 -> 1/4;  01 lab 2/2/0 -> 0.0;  01 sweep 15/14/1 -> 1/15;  02 lab 3/0/0 -> null;
           02 sweep 14/7/3 -> 3/10;  03 lab 4/4/0 -> 0.0;  04 lab 5/2/1 -> 1/3;  05 lab 5/3/2 -> 2/5

    not counted: hour 24 and hour -1 (outside), 60 s and 86400 s windows, lab rows with subject '' and sweep
    rows with a subject, factory f2,
    tenant t2 (the same factory, station and analyte ids), device_health rollups.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from analytics_platform_tests.support.api import (
    MISSING_KEY,
    OTHER_TENANT,
    Api,
    assert_422,
    at,
    db_now,
    insert,
    iso,
    jsonable,
    ok,
    pages,
)
from analytics_platform_tests.support.api_data import anomaly, reading
from analytics_platform_tests.support.stack import DatabaseHandle

S = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
D = timedelta(days=1)
DAY_RANGE = {"start": iso(at(0)), "end": iso(at(24))}


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


# ------------------------------------------------------------------------------------------------
# GET /v1/fleet
# ------------------------------------------------------------------------------------------------


def health(moment: datetime, machine: str, offset: int, status: str | None, run_state: str | None, score: float | None,
           **more: str) -> dict:  # fmt: skip
    """A raw_device_health row; a message may carry any of status, run_state and health_score."""
    tenant, factory = more.get("tenant", "t1"), more.get("factory", "f1")
    return {
        "time": moment,
        "tenant_id": tenant,
        "factory_id": factory,
        "machine_id": machine,
        "status": status,
        "run_state": run_state,
        "health_score": score,
        "schema_version": 1,
        "dedup_key": f"{tenant}|{factory}|{machine}|{offset}",
        "topic": "device.health",
        "kafka_partition": 0,
        "kafka_offset": offset,
    }


def machine(tenant: str, factory: str, machine_id: str, status: str, **more: Any) -> dict:
    """A machine as /v1/fleet lists it, but for freshness_s (which needs the answer's as_of)."""
    last_seen, last_reading = more.get("last_seen"), more.get("last_reading_at")
    return {
        "tenant_id": tenant,
        "factory_id": factory,
        "machine_id": machine_id,
        "status": status,
        "last_seen": None if last_seen is None else iso(last_seen),
        "last_reading_at": None if last_reading is None else iso(last_reading),
        "device_status": more.get("device_status"),
        "run_state": more.get("run_state"),
        "health_score": more.get("health_score"),
        "metrics": [{"metric": m, "last_time": iso(t)} for m, t in more.get("metrics", ())],
        "open_anomalies": more.get("open_anomalies", 0),
        "max_open_severity": more.get("max_open_severity"),
    }


@dataclass(frozen=True)
class Fleet:
    n: datetime  # the database clock the rows were placed by
    machines: dict[str, dict]  # name -> the machine as listed with the defaults (no freshness_s)

    def __getitem__(self, name: str) -> dict:
        return self.machines[name]


@pytest.fixture
def fleet(database: DatabaseHandle) -> Fleet:
    """Inserts the fleet of the module docstring."""
    n = db_now(database)
    temp_s1 = {"sensor": "s1", "metric": "temp", "sample_s": 60.0}
    resolved = {"status": "resolved", "resolved_at": n - 30 * MINUTE, "resolved_by": "ops"}
    insert(
        database,
        "raw_sensor_readings",
        [
            reading(n - 120 * S, "s1", 20.0, 1),
            reading(n - 30 * S, "s2", 21.0, 2),
            reading(n - 3 * D, "s1", 19.0, 3),
            reading(n - 300 * S, "s1", 5.5, 4, metric="power", unit="kW"),
            reading(n - 2 * D, "s1", 5.0, 5, metric="power", unit="kW"),
            reading(n - 8 * D, "s1", 40.0, 6, metric="humidity", unit="%"),
            reading(n - 700 * S, "s1", 20.0, 7, machine="m2"),
            reading(n - 10 * S, "s1", 20.0, 8, machine="m3"),
            reading(n - 10 * D, "s1", 20.0, 9, machine="m5"),
            reading(n - 8 * D, "s1", 20.0, 10, machine="m6"),
            reading(n - 2 * D, "s1", 20.0, 11, machine="m7"),
            reading(n - 45 * S, "s1", 20.0, 12, factory="f2"),
            reading(n - 5 * S, "s1", 90.0, 13, tenant="t2"),
        ],
    )
    insert(
        database,
        "raw_device_health",
        [
            health(n - 2 * HOUR, "m1", 1, "offline", "fault", 0.1),
            health(n - HOUR, "m1", 2, "online", "running", 0.9),
            health(n - 30 * MINUTE, "m1", 3, None, "idle", None),
            health(n - 15 * MINUTE, "m1", 4, "degraded", None, None),
            health(n - 60 * S, "m1", 5, None, None, 0.75),
            health(n - 650 * S, "m2", 6, "online", "running", 0.95),
            health(n - 120 * S, "m3", 7, "offline", "idle", 0.5),
            health(n - 20 * S, "m3", 8, None, None, 0.4),
            health(n - 100 * S, "m4", 9, "online", "running", 1.0),
            health(n - 9 * D, "m5", 10, "online", "running", 0.8),
            health(n - 8 * D, "m6", 11, "online", "running", 0.8),
            health(n - 5 * S, "m1", 12, "online", "running", 0.99, tenant="t2"),
        ],
    )
    insert(
        database,
        "analytics_anomaly",
        [
            anomaly(n - 40 * D, "m1", 4, "critical"),
            anomaly(n - HOUR - 2 * MINUTE, "m1", 2, "warning", **temp_s1),
            anomaly(n - HOUR - MINUTE, "m1", 5, "critical", **temp_s1, **resolved),
            anomaly(n - HOUR, "m1", 3, "critical", **temp_s1),
            anomaly(n - 2 * HOUR, "m1", 5, "critical", **resolved),
            anomaly(n - 10 * D, "m5", 3, "critical", sample_s=60.0),
            anomaly(n - 10 * D + 2 * MINUTE, "m5", 2, "warning", sample_s=60.0),
            anomaly(n - 8 * D, "m6", 4, "critical", status="resolved", resolved_at=n - 7 * D, resolved_by="ops"),
            anomaly(n - HOUR, "m1", 5, "critical", tenant="t2", sample_s=60.0),
            anomaly(n - 50 * MINUTE, "m1", 2, "warning", tenant="t2", sample_s=60.0),
        ],
    )
    return Fleet(n, {
        "m1": machine(
            "t1",
            "f1",
            "m1",
            "online",
            last_seen=n - 30 * S,
            last_reading_at=n - 30 * S,
            device_status="degraded",
            run_state="idle",
            health_score=0.75,
            metrics=[("power", n - 300 * S), ("temp", n - 30 * S)],
            open_anomalies=2,
            max_open_severity=5,
        ),
        "m2": machine(
            "t1",
            "f1",
            "m2",
            "offline",
            last_seen=n - 650 * S,
            last_reading_at=n - 700 * S,
            device_status="online",
            run_state="running",
            health_score=0.95,
            metrics=[("temp", n - 700 * S)],
        ),
        "m3": machine(
            "t1",
            "f1",
            "m3",
            "offline",
            last_seen=n - 10 * S,
            last_reading_at=n - 10 * S,
            device_status="offline",
            run_state="idle",
            health_score=0.4,
            metrics=[("temp", n - 10 * S)],
        ),
        "m4": machine(
            "t1",
            "f1",
            "m4",
            "online",
            last_seen=n - 100 * S,
            device_status="online",
            run_state="running",
            health_score=1.0,
        ),
        "m5": machine("t1", "f1", "m5", "offline", open_anomalies=1, max_open_severity=3),
        "m7": machine(
            "t1", "f1", "m7", "offline", last_seen=n - 2 * D, last_reading_at=n - 2 * D, metrics=[("temp", n - 2 * D)]
        ),
        "f2/m1": machine(
            "t1", "f2", "m1", "online", last_seen=n - 45 * S, last_reading_at=n - 45 * S, metrics=[("temp", n - 45 * S)]
        ),
        "t2/m1": machine(
            "t2",
            "f1",
            "m1",
            "online",
            last_seen=n - 5 * S,
            last_reading_at=n - 5 * S,
            device_status="online",
            run_state="running",
            health_score=0.99,
            metrics=[("temp", n - 5 * S)],
            open_anomalies=2,
            max_open_severity=5,
        ),
    })  # fmt: skip


T1_MACHINES = ["m1", "m2", "m3", "m4", "m5", "m7", "f2/m1"]


def fleet_machines(body: dict) -> list[dict]:
    """The answer's machines without freshness_s, after checking it is exactly as_of - last_reading_at."""
    as_of = parse(body["as_of"])
    out = []
    for item in body["machines"]:
        item = dict(item)
        freshness = item.pop("freshness_s")
        last = item["last_reading_at"]
        assert freshness == (None if last is None else (as_of - parse(last)).total_seconds()), item
        out.append(item)
    return out


def get_fleet(database: DatabaseHandle, caller: Any, **params: Any) -> dict:
    """GET /v1/fleet, checking as_of is the database's clock during the request."""
    before = db_now(database)
    body = ok(caller.get("/v1/fleet", **params))
    assert before <= parse(body["as_of"]) <= db_now(database)
    return body


def test_fleet_tenant_key_exact(api: Api, database: DatabaseHandle, fleet: Fleet) -> None:
    body = get_fleet(database, api.t1)
    assert set(body) == {"as_of", "offline_after_s", "machines", "failing_checks"}
    assert body["offline_after_s"] == 600
    assert fleet_machines(body) == [fleet[m] for m in T1_MACHINES]
    assert body["failing_checks"] is None  # checks judge every tenant at once: not for a tenant key
    # its own tenant named explicitly is the same answer
    assert fleet_machines(get_fleet(database, api.t1, tenant_id="t1")) == [fleet[m] for m in T1_MACHINES]


def test_fleet_freshness_is_exact(api: Api, database: DatabaseHandle, fleet: Fleet) -> None:
    body = get_fleet(database, api.t1, factory_id="f1", machine_id="m1")
    (item,) = body["machines"]
    assert item["last_reading_at"] == fleet["m1"]["last_reading_at"]
    assert item["freshness_s"] == (parse(body["as_of"]) - parse(item["last_reading_at"])).total_seconds()
    assert 30 <= item["freshness_s"] < 600


def test_fleet_t2_key_sees_only_t2(api: Api, database: DatabaseHandle, fleet: Fleet) -> None:
    body = get_fleet(database, api.t2)
    assert (fleet_machines(body), body["failing_checks"]) == ([fleet["t2/m1"]], None)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"factory_id": "f2"}, ["f2/m1"]),
        ({"machine_id": "m1"}, ["m1", "f2/m1"]),
        ({"factory_id": "f1", "machine_id": "m3"}, ["m3"]),
        ({"machine_id": "m5"}, ["m5"]),  # known only by its open anomaly
        ({"machine_id": "m6"}, []),  # old and without open anomalies
        ({"factory_id": "f9"}, []),
    ],
)
def test_fleet_filters(api: Api, database: DatabaseHandle, fleet: Fleet, filters: dict, expected: list[str]) -> None:
    assert fleet_machines(get_fleet(database, api.t1, **filters)) == [fleet[m] for m in expected]


def test_fleet_offline_after_s(api: Api, database: DatabaseHandle, fleet: Fleet) -> None:
    # silent for 650 s: online when an hour of silence is allowed; m3 said it is offline, m5 and m7
    # stay silent for longer than an hour
    body = get_fleet(database, api.t1, offline_after_s=3600)
    assert body["offline_after_s"] == 3600
    expected = [fleet[m] for m in T1_MACHINES]
    expected[1] = {**fleet["m2"], "status": "online"}
    assert fleet_machines(body) == expected
    # m1 last sent 30 s ago: offline when 10 s of silence is enough
    body = get_fleet(database, api.t1, offline_after_s=10, machine_id="m1")
    assert fleet_machines(body) == [{**fleet["m1"], "status": "offline"}, fleet["f2/m1"] | {"status": "offline"}]


def test_fleet_lookback_days(api: Api, database: DatabaseHandle, fleet: Fleet) -> None:
    # one day back: m7 (2 days) is gone; m1's power (its reading 300 s ago) and temp remain; m5 stays
    # for its open anomaly
    body = get_fleet(database, api.t1, lookback_days=1)
    assert fleet_machines(body) == [fleet[m] for m in T1_MACHINES if m != "m7"]
    # ten days back reach m1's humidity, m6 (8 days) and m5's device health (9 days), not m5's reading
    # (10 days and the time since N)
    n = fleet.n
    body = get_fleet(database, api.t1, lookback_days=10)
    m1 = fleet["m1"] | {"metrics": [{"metric": "humidity", "last_time": iso(n - 8 * D)}, *fleet["m1"]["metrics"]]}
    m5 = fleet["m5"] | {
        "last_seen": iso(n - 9 * D),
        "device_status": "online",
        "run_state": "running",
        "health_score": 0.8,
    }
    m6 = machine(
        "t1",
        "f1",
        "m6",
        "offline",
        last_seen=n - 8 * D,
        last_reading_at=n - 8 * D,
        device_status="online",
        run_state="running",
        health_score=0.8,
        metrics=[("temp", n - 8 * D)],
    )
    expected = [m1, fleet["m2"], fleet["m3"], fleet["m4"], m5, m6, fleet["m7"], fleet["f2/m1"]]
    assert fleet_machines(body) == expected


def test_fleet_counts_open_anomaly_events_not_rows(api: Api, database: DatabaseHandle, fleet: Fleet) -> None:
    """m1's s1/temp event stays one open event, of peak severity 5, while any of its rows is open."""
    n = fleet.n

    def resolve(*moments: datetime) -> None:
        with database.connect() as conn:
            conn.execute(
                "UPDATE analytics.analytics_anomaly SET status = 'resolved', resolved_at = now(), resolved_by = 'ops' "
                "WHERE tenant_id = 't1' AND machine_id = 'm1' AND time = ANY(%s)",
                (list(moments),),
            )

    def m1() -> dict:
        (item,) = get_fleet(database, api.t1, factory_id="f1", machine_id="m1")["machines"]
        return {k: item[k] for k in ("open_anomalies", "max_open_severity")}

    assert m1() == {"open_anomalies": 2, "max_open_severity": 5}
    resolve(n - HOUR - 2 * MINUTE)  # one of the event's two open rows: still one open event
    assert m1() == {"open_anomalies": 2, "max_open_severity": 5}
    resolve(n - HOUR)  # its last open row: the event is resolved, N-40d's (sev 4) is left
    assert m1() == {"open_anomalies": 1, "max_open_severity": 4}
    resolve(n - 40 * D)
    assert m1() == {"open_anomalies": 0, "max_open_severity": None}


@pytest.fixture
def checks(database: DatabaseHandle) -> list[dict]:
    """alert rules and conditions: returns the failing checks an admin key must see, in order."""
    insert(
        database,
        "alert_rules",
        [
            {"rule_name": "asset_checks", "kind": "check_failed"},
            {"rule_name": "more_checks", "kind": "check_failed", "tenant_id": "t1"},
            {"rule_name": "device_offline", "kind": "device_offline"},
        ],
    )

    def condition(fingerprint: str, rule: str, state: str, opened: datetime, **more: Any) -> dict:
        return {
            "fingerprint": fingerprint,
            "rule_name": rule,
            "state": state,
            "severity": more.get("severity", "critical"),
            "summary": more.get("summary", f"{fingerprint} failed"),
            "details": more.get("details"),
            "link": more.get("link"),
            "opened_at": opened,
            "last_seen_at": more.get("last_seen_at", opened + HOUR),
            "resolved_at": more.get("resolved_at"),
            "tenant_id": more.get("tenant"),
        }

    raw_check = {"asset": "raw_sensor_readings", "check": "no_future_times", "partition": "2025-08-20", "rows": 3}
    insert(
        database,
        "alert_conditions",
        [
            condition(
                "asset_checks:raw_sensor_readings:no_future_times",
                "asset_checks",
                "open",
                at(2),
                summary="raw_sensor_readings: 3 readings from the future",
                details=raw_check,
                link="http://dagster:3000/assets/raw_sensor_readings?partition=2025-08-20",
            ),
            condition(
                "asset_checks:kpi:complete",
                "asset_checks",
                "resolved",
                at(1),
                resolved_at=at(3),
                details={"asset": "kpi", "check": "complete", "partition": "2025-08-19"},
            ),
            condition("device_offline:t1|f1|m2", "device_offline", "open", at(0), tenant="t1"),
            condition("more_checks:agg", "more_checks", "open", at(1), severity="warning", last_seen_at=at(4)),
        ],
    )
    return [
        {
            "rule_name": "more_checks",
            "severity": "warning",
            "summary": "more_checks:agg failed",
            "asset": None,
            "check": None,
            "partition": None,
            "opened_at": iso(at(1)),
            "last_seen_at": iso(at(4)),
            "link": None,
        },
        {
            "rule_name": "asset_checks",
            "severity": "critical",
            "summary": "raw_sensor_readings: 3 readings from the future",
            "asset": "raw_sensor_readings",
            "check": "no_future_times",
            "partition": "2025-08-20",
            "opened_at": iso(at(2)),
            "last_seen_at": iso(at(3)),
            "link": "http://dagster:3000/assets/raw_sensor_readings?partition=2025-08-20",
        },
    ]


def test_fleet_admin_key_sees_every_tenant_and_the_failing_checks(
    api: Api, database: DatabaseHandle, fleet: Fleet, checks: list[dict]
) -> None:
    body = get_fleet(database, api.admin)
    assert fleet_machines(body) == [fleet[m] for m in [*T1_MACHINES, "t2/m1"]]
    assert body["failing_checks"] == checks
    # a tenant named by the admin key narrows the machines, not the (platform-wide) checks
    body = get_fleet(database, api.admin, tenant_id="t2")
    assert (fleet_machines(body), body["failing_checks"]) == ([fleet["t2/m1"]], checks)
    # still none for a tenant key
    assert get_fleet(database, api.t1)["failing_checks"] is None


def test_fleet_of_an_empty_database(api: Api, database: DatabaseHandle) -> None:
    body = get_fleet(database, api.admin)
    assert (body["machines"], body["failing_checks"]) == ([], [])
    body = get_fleet(database, api.t1)
    assert (body["machines"], body["failing_checks"]) == ([], None)


def test_fleet_skip_scan_finds_every_series_among_many_readings(api: Api, database: DatabaseHandle) -> None:
    """Machines with many readings each over 12 days (a chunk a day on TimescaleDB), inserted in a
    shuffled order, t2's newer ones under the same ids: every series of the tenant is found once,
    with its newest time."""
    n = db_now(database)
    rows = [
        reading(n - (k * 7 + i) * HOUR, f"s{k % 3}", float(k), 1000 * i + k, machine=f"m{i % 4}", metric=metric)
        for i, metric in enumerate(("temp", "power", "vibration", "temp", "power", "flow"))
        for k in range(40)
    ]
    t2 = [reading(n - MINUTE, "s0", 1.0, 9000 + j, machine=f"m{j}", metric="level", tenant="t2") for j in range(5)]
    shuffled = rows + t2
    random.Random(20250820).shuffle(shuffled)
    insert(database, "raw_sensor_readings", shuffled)
    if database.scalar("SELECT analytics.timescale_enabled()"):
        chunks = database.scalar(
            "SELECT count(*) FROM timescaledb_information.chunks "
            "WHERE hypertable_schema = 'analytics' AND hypertable_name = 'raw_sensor_readings'"
        )
        assert chunks >= 12
    newest: dict[tuple[str, str], datetime] = {}
    for r in rows:
        key = (r["machine_id"], r["metric"])
        newest[key] = max(newest.get(key, r["time"]), r["time"])
    # m0: temp, power; m1: power, flow; m2: vibration; m3: temp (each newest k = 0: N - i hours)
    assert len(newest) == 6
    body = get_fleet(database, api.t1)
    listed = {(item["machine_id"], m["metric"]): m["last_time"] for item in body["machines"] for m in item["metrics"]}
    assert listed == {key: iso(t) for key, t in newest.items()}
    assert [i["machine_id"] for i in body["machines"]] == ["m0", "m1", "m2", "m3"]
    body = get_fleet(database, api.admin)
    assert [(i["tenant_id"], i["machine_id"]) for i in body["machines"]] == [
        *[("t1", f"m{j}") for j in range(4)],
        *[("t2", f"m{j}") for j in range(5)],
    ]


@pytest.mark.parametrize(
    ("params", "field", "msg"),
    [
        ({"offline_after_s": 9}, "offline_after_s", "Input should be greater than or equal to 10"),
        ({"offline_after_s": 604801}, "offline_after_s", "Input should be less than or equal to 604800"),
        (
            {"offline_after_s": "ten"},
            "offline_after_s",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        ({"lookback_days": 0}, "lookback_days", "Input should be greater than or equal to 1"),
        ({"lookback_days": 91}, "lookback_days", "Input should be less than or equal to 90"),
        ({"machine_id": "m\x00"}, "machine_id", "String should match pattern '^[^\\x00]+$'"),
    ],
)
def test_fleet_422(empty_api: Api, params: dict, field: str, msg: str) -> None:
    assert_422(empty_api.t1.get("/v1/fleet", **params), ["query", field], msg)


def test_fleet_bounds_are_accepted(empty_api: Api) -> None:
    for params in ({"offline_after_s": 10, "lookback_days": 1}, {"offline_after_s": 604800, "lookback_days": 90}):
        assert ok(empty_api.t1.get("/v1/fleet", **params))["machines"] == []


def test_fleet_another_tenant_is_404(empty_api: Api) -> None:
    response = empty_api.t1.get("/v1/fleet", tenant_id="t2")
    assert (response.status_code, response.json()) == (404, OTHER_TENANT)


# ------------------------------------------------------------------------------------------------
# GET /v1/quality
# ------------------------------------------------------------------------------------------------


def rollup(hour: float, machine_id: str, event_type: str, subject: str, n: int, passed: int | None,
           failed: int | None, **more: Any) -> dict:  # fmt: skip
    window_s = more.get("window_s", 3600)
    return {
        "bucket_start": at(hour),
        "bucket_end": at(hour) + timedelta(seconds=window_s),
        "window_s": window_s,
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": more.get("factory", "f1"),
        "machine_id": machine_id,
        "event_type": event_type,
        "subject": subject,
        "count_n": n,
        "pass_n": passed,
        "fail_n": failed,
        "pass_rate": None if not (passed or failed) else passed / (passed + failed),
        "fail_rate": None if not (passed or failed) else failed / (passed + failed),
    }


def limit(factory: str, name: str, limits: tuple, unit: str | None, valid_from: datetime | None, **more: Any) -> dict:
    lower, upper, target = limits
    row = {
        "tenant_id": more.get("tenant", "t1"),
        "factory_id": factory,
        "scope": more.get("scope", "analyte"),
        "name": name,
        "lower_limit": lower,
        "upper_limit": upper,
        "target": target,
        "unit": unit,
    }
    return row if valid_from is None else {**row, "valid_from": valid_from}


LAB, SWEEP = "lab_result", "sweep_batch"


@pytest.fixture
def quality_data(database: DatabaseHandle) -> None:
    insert(
        database,
        "analytics_event_rollup",
        [
            rollup(0, "lab1", LAB, "Moisture", 4, 3, 1),
            rollup(1, "lab2", LAB, "Moisture", 2, 2, 0),
            rollup(2, "lab1", LAB, "Ash", 3, None, None),
            rollup(3, "lab1", LAB, "pH", 4, 4, 0),
            rollup(4, "lab1", LAB, "Protein", 5, 2, 1),
            rollup(5, "lab1", LAB, "Moisture", 5, 3, 2),
            # sweep batches are rolled up per machine as a whole (subject ''): a batch's verdict covers every
            # reading of the batch
            rollup(1, "m1", SWEEP, "", 15, 14, 1),
            rollup(2, "m1", SWEEP, "", 10, 7, 3),
            rollup(2, "m2", SWEEP, "", 4, None, None),
            # not counted
            rollup(24, "lab1", LAB, "Moisture", 100, 0, 100),  # at end: excluded
            rollup(-1, "lab1", LAB, "Moisture", 100, 0, 100),  # before start
            rollup(24, "m1", SWEEP, "", 100, 0, 100),
            rollup(-1, "m1", SWEEP, "", 100, 0, 100),
            rollup(1, "lab1", LAB, "Moisture", 100, 0, 100, window_s=60),
            rollup(0, "lab1", LAB, "Moisture", 100, 0, 100, window_s=86400),
            rollup(0, "m1", SWEEP, "", 100, 0, 100, window_s=86400),
            rollup(1, "lab1", LAB, "", 100, 0, 100),  # no subject: a station's total
            rollup(1, "m1", SWEEP, "temp", 100, 0, 100),  # a per-metric row (the pipeline writes none)
            rollup(1, "lab1", LAB, "Moisture", 100, 0, 100, factory="f2"),
            rollup(1, "m1", SWEEP, "", 100, 0, 100, factory="f2"),
            rollup(1, "lab1", LAB, "Moisture", 7, 7, 0, tenant="t2"),
            rollup(1, "m1", SWEEP, "", 8, 2, 6, tenant="t2"),
            rollup(1, "m1", "device_health", "", 12, None, None),
            rollup(1, "m1", "status_change", "x", 2, None, None),
        ],
    )
    insert(
        database,
        "analytics_spec_limits",
        [
            limit("*", "Moisture", (11.5, 13.5, 12.5), "%", None),
            limit("*", "Moisture", (11.0, 13.0, 12.0), "%", at(-24)),
            limit("*", "Moisture", (10.5, 12.5, 11.5), "%", at(3)),
            limit("*", "Moisture", (9.0, 10.0, 9.5), "%", at(30)),  # after end
            limit("f2", "Moisture", (1.0, 2.0, 1.5), "%", None),  # another factory's own
            limit("f1", "pH", (6.0, 9.0, None), "pH", None),
            limit("*", "pH", (6.5, 8.5, 7.0), "pH", at(-24)),
            limit("f1", "pH", (5.0, 5.5, None), "pH", at(24)),  # starts at end: not valid at end
            limit("*", "Protein", (None, 30.0, None), None, at(24)),
            limit("f1", "Ash", (0.0, 1.0, 0.5), "%", None, scope="metric"),  # a metric's, not an analyte's
            limit("*", "Ash", (0.0, 1.0, 0.5), "%", None, tenant="t2"),
        ],
    )


def analyte(name: str, n: int, passed: int, failed: int, rate: float | None, limits: tuple, unit: str | None) -> dict:
    lower, upper, target = limits
    return {
        "analyte": name,
        "count": n,
        "pass_count": passed,
        "fail_count": failed,
        "pass_rate": rate,
        "lower_limit": lower,
        "upper_limit": upper,
        "target": target,
        "unit": unit,
    }


def sweep(machine_id: str, n: int, passed: int, failed: int, rate: float | None) -> dict:
    return {
        "machine_id": machine_id,
        "count": n,
        "pass_count": passed,
        "fail_count": failed,
        "fail_rate": rate,
    }


def hourly(hour: float, event_type: str, n: int, passed: int, failed: int, rate: float | None) -> dict:
    return {
        "bucket_start": iso(at(hour)),
        "event_type": event_type,
        "count": n,
        "pass_count": passed,
        "fail_count": failed,
        "fail_rate": rate,
    }


NO_LIMIT = (None, None, None)
QUALITY_DAY = {
    "tenant_id": "t1",
    "factory_id": "f1",
    "start": iso(at(0)),
    "end": iso(at(24)),
    "lab": [
        analyte("Ash", 3, 0, 0, None, NO_LIMIT, None),
        analyte("Moisture", 11, 8, 3, 8 / 11, (10.5, 12.5, 11.5), "%"),
        analyte("Protein", 5, 2, 1, 2 / 3, NO_LIMIT, None),
        analyte("pH", 4, 4, 0, 1.0, (6.0, 9.0, None), "pH"),
    ],
    "sweep": [
        sweep("m1", 25, 21, 4, 4 / 25),
        sweep("m2", 4, 0, 0, None),
    ],
    "hourly": [
        hourly(0, LAB, 4, 3, 1, 1 / 4),
        hourly(1, LAB, 2, 2, 0, 0.0),
        hourly(1, SWEEP, 15, 14, 1, 1 / 15),
        hourly(2, LAB, 3, 0, 0, None),
        hourly(2, SWEEP, 14, 7, 3, 3 / 10),
        hourly(3, LAB, 4, 4, 0, 0.0),
        hourly(4, LAB, 5, 2, 1, 1 / 3),
        hourly(5, LAB, 5, 3, 2, 2 / 5),
    ],
}


@pytest.mark.usefixtures("quality_data")
def test_quality_day_exact(api: Api) -> None:
    assert ok(api.t1.get("/v1/quality", factory_id="f1", **DAY_RANGE)) == QUALITY_DAY
    # the same from an admin key naming t1, or from the t1 key naming itself
    assert ok(api.admin.get("/v1/quality", tenant_id="t1", factory_id="f1", **DAY_RANGE)) == QUALITY_DAY
    assert ok(api.t1.get("/v1/quality", tenant_id="t1", factory_id="f1", **DAY_RANGE)) == QUALITY_DAY


@pytest.mark.usefixtures("quality_data")
def test_quality_range_bounds_and_the_limit_valid_at_end(api: Api) -> None:
    # [01:00, 03:00): hour 0 and hour 3 are out; at end 03:00 the Moisture limit of 03:00 is not yet valid
    assert ok(api.t1.get("/v1/quality", factory_id="f1", start=iso(at(1)), end=iso(at(3)))) == {
        "tenant_id": "t1",
        "factory_id": "f1",
        "start": iso(at(1)),
        "end": iso(at(3)),
        "lab": [
            analyte("Ash", 3, 0, 0, None, NO_LIMIT, None),
            analyte("Moisture", 2, 2, 0, 1.0, (11.0, 13.0, 12.0), "%"),
        ],
        "sweep": [
            sweep("m1", 25, 21, 4, 4 / 25),
            sweep("m2", 4, 0, 0, None),
        ],
        "hourly": [
            hourly(1, LAB, 2, 2, 0, 0.0),
            hourly(1, SWEEP, 15, 14, 1, 1 / 15),
            hourly(2, LAB, 3, 0, 0, None),
            hourly(2, SWEEP, 14, 7, 3, 3 / 10),
        ],
    }
    # just past 03:00 the newer limit is valid; an end mid-hour still takes only whole buckets that start before it
    body = ok(api.t1.get("/v1/quality", factory_id="f1", start=iso(at(3)), end=iso(at(3) + S)))
    assert body["lab"] == [analyte("pH", 4, 4, 0, 1.0, (6.0, 9.0, None), "pH")]
    body = ok(api.t1.get("/v1/quality", factory_id="f1", start=iso(at(5)), end=iso(at(6))))
    assert body["lab"] == [analyte("Moisture", 5, 3, 2, 3 / 5, (10.5, 12.5, 11.5), "%")]
    assert (body["sweep"], body["hourly"]) == ([], [hourly(5, LAB, 5, 3, 2, 2 / 5)])
    # past 2025-08-21 06:00 the last Moisture limit and f1's second pH limit apply, and Protein has its limit
    body = ok(api.t1.get("/v1/quality", factory_id="f1", start=iso(at(0)), end=iso(at(31))))
    assert body["lab"] == [
        analyte("Ash", 3, 0, 0, None, NO_LIMIT, None),
        analyte("Moisture", 111, 8, 103, 8 / 111, (9.0, 10.0, 9.5), "%"),  # with hour 24's 100 failures
        analyte("Protein", 5, 2, 1, 2 / 3, (None, 30.0, None), None),
        analyte("pH", 4, 4, 0, 1.0, (5.0, 5.5, None), "pH"),
    ]


@pytest.mark.usefixtures("quality_data")
def test_quality_other_factory_and_tenant(api: Api) -> None:
    # f2: its own Moisture limit beats the tenant-wide '*' rows
    body = ok(api.t1.get("/v1/quality", factory_id="f2", **DAY_RANGE))
    assert body["lab"] == [analyte("Moisture", 100, 0, 100, 0.0, (1.0, 2.0, 1.5), "%")]
    assert body["sweep"] == [sweep("m1", 100, 0, 100, 1.0)]
    assert body["hourly"] == [hourly(1, LAB, 100, 0, 100, 1.0), hourly(1, SWEEP, 100, 0, 100, 1.0)]
    # t2: the same ids, its own rows, none of t1's limits
    body = ok(api.t2.get("/v1/quality", factory_id="f1", **DAY_RANGE))
    assert body == {
        "tenant_id": "t2",
        "factory_id": "f1",
        **DAY_RANGE,
        "lab": [analyte("Moisture", 7, 7, 0, 1.0, NO_LIMIT, None)],
        "sweep": [sweep("m1", 8, 2, 6, 6 / 8)],
        "hourly": [hourly(1, LAB, 7, 7, 0, 0.0), hourly(1, SWEEP, 8, 2, 6, 6 / 8)],
    }
    # a factory without rollups: empty lists, not an error
    body = ok(api.t1.get("/v1/quality", factory_id="f9", **DAY_RANGE))
    assert (body["lab"], body["sweep"], body["hourly"]) == ([], [], [])


QUALITY_QUERY = {"factory_id": "f1", **DAY_RANGE}


@pytest.mark.parametrize(
    ("params", "field", "msg"),
    [
        ({"factory_id": None}, "factory_id", "Field required"),
        ({"start": None}, "start", "Field required"),
        ({"end": None}, "end", "Field required"),
        ({"start": iso(at(24)), "end": iso(at(0))}, "end", "end must be after start"),
        ({"start": "2025-08-20T00:00:00"}, "start", "time must include a timezone, e.g. 2025-08-20T03:00:00Z"),
        (
            {"start": "2024-07-16T00:00:00Z", "end": "2025-08-20T00:00:00.000001Z"},
            "end",
            "range is longer than 400 days; narrow it or page through it",
        ),
        ({"factory_id": "f\x00"}, "factory_id", "String should match pattern '^[^\\x00]+$'"),
    ],
)
def test_quality_422(empty_api: Api, params: dict, field: str, msg: str) -> None:
    assert_422(empty_api.t1.get("/v1/quality", **{**QUALITY_QUERY, **params}), ["query", field], msg)


def test_quality_admin_key_needs_a_tenant(empty_api: Api) -> None:
    assert_422(
        empty_api.admin.get("/v1/quality", **QUALITY_QUERY),
        ["query", "tenant_id"],
        "tenant_id is required with an admin key",
    )


def test_quality_another_tenant_is_404(empty_api: Api) -> None:
    response = empty_api.t1.get("/v1/quality", tenant_id="t2", **QUALITY_QUERY)
    assert (response.status_code, response.json()) == (404, OTHER_TENANT)


# ------------------------------------------------------------------------------------------------
# GET /v1/rejects
# ------------------------------------------------------------------------------------------------

READINGS_TOPIC, LAB_TOPIC = "sensors.device.readings", "lab.results"


def rejected(topic: str, reason: str, when: datetime, partition: int, offset: int, detail: str) -> dict:
    return {
        "topic": topic,
        "kafka_partition": partition,
        "kafka_offset": offset,
        "kafka_ts": when - S,
        "reason": reason,
        "detail": detail,
        "value_text": "{}",
        "rejected_at": when,
    }


@pytest.fixture
def rejects_data(database: DatabaseHandle) -> None:
    insert(
        database,
        "rejected_message",
        [
            rejected(READINGS_TOPIC, "schema_violation", at(0), 0, 1, "value: not a number"),  # start: inclusive
            rejected(READINGS_TOPIC, "schema_violation", at(1), 1, 7, "metric: missing"),
            # one drain batch: the same rejected_at; offset 11 came after offset 10
            rejected(READINGS_TOPIC, "schema_violation", at(2), 0, 11, "unit: unknown 'degF'"),
            rejected(READINGS_TOPIC, "schema_violation", at(2), 0, 10, "time: in the future"),
            rejected(READINGS_TOPIC, "bad_json", at(3), 2, 4, "Expecting value: line 1 column 1"),
            rejected(LAB_TOPIC, "schema_violation", at(4), 1, 5, "analyte: missing"),
            rejected(LAB_TOPIC, "schema_violation", at(5), 2, 3, "value: negative"),
            rejected(READINGS_TOPIC, "schema_violation", at(24), 0, 20, "after the range"),  # end: exclusive
            rejected(READINGS_TOPIC, "schema_violation", at(-1), 0, 0, "before the range"),
            rejected(LAB_TOPIC, "bad_json", at(-1), 0, 1, "before the range"),
        ],
    )


def group(topic: str, reason: str, n: int, first: datetime, last: datetime, detail: str, partition: int,
          offset: int) -> dict:  # fmt: skip
    return {
        "topic": topic,
        "reason": reason,
        "count": n,
        "first_at": iso(first),
        "last_at": iso(last),
        "last_detail": detail,
        "last_partition": partition,
        "last_offset": offset,
    }


READINGS_SCHEMA = group(READINGS_TOPIC, "schema_violation", 4, at(0), at(2), "unit: unknown 'degF'", 0, 11)
LAB_SCHEMA = group(LAB_TOPIC, "schema_violation", 2, at(4), at(5), "value: negative", 2, 3)
READINGS_JSON = group(READINGS_TOPIC, "bad_json", 1, at(3), at(3), "Expecting value: line 1 column 1", 2, 4)


@pytest.mark.usefixtures("rejects_data")
def test_rejects_grouped_most_rejected_first(api: Api) -> None:
    assert ok(api.admin.get("/v1/rejects", **DAY_RANGE)) == {
        **DAY_RANGE,
        "total": 7,
        "items": [READINGS_SCHEMA, LAB_SCHEMA, READINGS_JSON],
    }


@pytest.mark.usefixtures("rejects_data")
def test_rejects_topic_filter_and_range(api: Api) -> None:
    assert ok(api.admin.get("/v1/rejects", topic=LAB_TOPIC, **DAY_RANGE)) == {
        **DAY_RANGE,
        "total": 2,
        "items": [LAB_SCHEMA],
    }
    # [02:00, 04:00): the batch of 02:00 and the bad JSON of 03:00; a tie in count goes by topic, reason
    narrow = {"start": iso(at(2)), "end": iso(at(4))}
    assert ok(api.admin.get("/v1/rejects", **narrow)) == {
        **narrow,
        "total": 3,
        "items": [
            group(READINGS_TOPIC, "schema_violation", 2, at(2), at(2), "unit: unknown 'degF'", 0, 11),
            READINGS_JSON,
        ],
    }
    narrow = {"start": iso(at(3)), "end": iso(at(5))}
    assert ok(api.admin.get("/v1/rejects", **narrow))["items"] == [
        group(LAB_TOPIC, "schema_violation", 1, at(4), at(4), "analyte: missing", 1, 5),
        group(READINGS_TOPIC, "bad_json", 1, at(3), at(3), "Expecting value: line 1 column 1", 2, 4),
    ]
    assert ok(api.admin.get("/v1/rejects", topic="nothing.here", **DAY_RANGE)) == {**DAY_RANGE, "total": 0, "items": []}


def test_rejects_default_range_is_the_last_seven_days(api: Api, database: DatabaseHandle) -> None:
    now = datetime.now(UTC)
    insert(
        database,
        "rejected_message",
        [
            rejected(LAB_TOPIC, "schema_violation", now - HOUR, 0, 1, "recent"),
            rejected(LAB_TOPIC, "schema_violation", now - 8 * D, 0, 2, "eight days ago"),
            rejected(LAB_TOPIC, "schema_violation", now + HOUR, 0, 3, "in the future"),
        ],
    )
    body = ok(api.admin.get("/v1/rejects"))
    assert parse(body["end"]) - parse(body["start"]) == 7 * D
    assert now <= parse(body["end"]) <= datetime.now(UTC)
    assert body["total"] == 1
    assert body["items"] == [group(LAB_TOPIC, "schema_violation", 1, now - HOUR, now - HOUR, "recent", 0, 1)]


def test_rejects_need_an_admin_key(empty_api: Api) -> None:
    for caller in (empty_api.t1, empty_api.t2):
        response = caller.get("/v1/rejects")
        assert (response.status_code, response.json()) == (
            403,
            {"detail": "rejected messages are not attributable to a tenant: they need an admin API key"},
        )


@pytest.mark.parametrize(
    ("params", "field", "msg"),
    [
        ({"topic": ""}, "topic", "String should have at least 1 character"),
        ({"topic": "a" * 250}, "topic", "String should have at most 249 characters"),
        ({"start": iso(at(5)), "end": iso(at(4))}, "end", "end must be after start"),
        ({"end": "2025-08-20T04:00:00"}, "end", "time must include a timezone, e.g. 2025-08-20T03:00:00Z"),
    ],
)
def test_rejects_422(empty_api: Api, params: dict, field: str, msg: str) -> None:
    assert_422(empty_api.admin.get("/v1/rejects", **params), ["query", field], msg)


# ------------------------------------------------------------------------------------------------
# GET /v1/alerts
# ------------------------------------------------------------------------------------------------


def log(created: datetime, rule: str, status: str, **more: Any) -> dict:
    """An alert_log row holding every served column but log_id (and the delivery bookkeeping)."""
    tenant = more.get("tenant", "t1")
    return {
        "created_at": created,
        "rule_name": rule,
        "fingerprint": more.get("fingerprint", f"{rule}:{tenant}|f1|m1"),
        "transition": more.get("transition", "open"),
        "channel": more.get("channel", "slack"),
        "status": status,
        "attempts": more.get("attempts", 1 if status in ("sent", "failed", "gave_up") else 0),
        "sent_at": created + S if status == "sent" else None,
        "error": more.get("error"),
        "tenant_id": tenant,
        "factory_id": None if tenant is None else "f1",
        "machine_id": None if tenant is None else "m1",
        "severity": more.get("severity", "warning"),
        "title": f"{rule} {more.get('transition', 'open')}",
        "body": more.get("body", f"{rule} on m1"),
        "link": more.get("link"),
    }


LOG_ROWS = {
    "L0": log(at(0), "anomaly_high", "sent", link="http://ui/anomalies/1"),  # start: inclusive
    "L1": log(at(1), "anomaly_high", "sent", severity="critical"),
    "L2": log(at(2), "anomaly_high", "failed", attempts=3, error="HTTP 502 from the webhook"),
    "L3": log(at(3), "device_offline", "muted"),
    "L4": log(at(3), "device_offline", "sent", channel="email"),  # the same time: the higher log_id first
    "L5": log(at(4), "anomaly_high", "unconfigured", transition="resolve"),
    "L6": log(at(5), "fail_rate", "pending"),
    "L7": log(at(6), "anomaly_high", "gave_up", attempts=8, error="timed out", transition="reopen"),
    "L8": log(at(3), "anomaly_high", "sent", tenant="t2"),
    "L9": log(at(4), "asset_checks", "sent", tenant=None, fingerprint="asset_checks:kpi:complete"),
    "L10": log(at(2), "run_failed", "failed", tenant=None, fingerprint="run_failed:ingest", error="HTTP 500"),
    "L11": log(at(24), "anomaly_high", "sent"),  # end: exclusive
    "L12": log(at(-1), "anomaly_high", "sent"),
}


@pytest.fixture
def alert_log(database: DatabaseHandle) -> dict[str, dict]:
    """name -> the JSON item the API serves for it (log ids in insertion order)."""
    ids = insert(database, "alert_log", list(LOG_ROWS.values()), returning="log_id")
    return {name: {"log_id": i, **jsonable(row)} for (name, row), i in zip(LOG_ROWS.items(), ids, strict=True)}


T1_LOG = ["L7", "L6", "L5", "L4", "L3", "L2", "L1", "L0"]
ALL_LOG = ["L7", "L6", "L9", "L5", "L8", "L4", "L3", "L10", "L2", "L1", "L0"]


def test_alerts_newest_first_exact(api: Api, alert_log: dict[str, dict]) -> None:
    assert ok(api.t1.get("/v1/alerts", **DAY_RANGE)) == {
        "items": [alert_log[n] for n in T1_LOG],
        "count": 8,
        "next_cursor": None,
    }
    # the admin key: every tenant and the rows of none (asset checks, runs)
    body = ok(api.admin.get("/v1/alerts", **DAY_RANGE))
    assert body["items"] == [alert_log[n] for n in ALL_LOG]
    assert ok(api.admin.get("/v1/alerts", tenant_id="t2", **DAY_RANGE))["items"] == [alert_log["L8"]]
    assert ok(api.t2.get("/v1/alerts", **DAY_RANGE))["items"] == [alert_log["L8"]]


def test_alerts_pages_neither_skip_nor_repeat(api: Api, alert_log: dict[str, dict]) -> None:
    items, sizes = pages(api.t1, "/v1/alerts", 3, **DAY_RANGE)
    assert (items, sizes) == ([alert_log[n] for n in T1_LOG], [3, 3, 2])
    # the cursor falls between the two rows of 03:00 (L4 ends page 1 of 4, L3 starts page 2)
    items, sizes = pages(api.t1, "/v1/alerts", 4, **DAY_RANGE)
    assert (items, sizes) == ([alert_log[n] for n in T1_LOG], [4, 4])
    items, sizes = pages(api.admin, "/v1/alerts", 4, **DAY_RANGE)
    assert (items, sizes) == ([alert_log[n] for n in ALL_LOG], [4, 4, 3])


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"rule_name": "anomaly_high"}, ["L7", "L5", "L2", "L1", "L0"]),
        ({"status": "sent"}, ["L4", "L1", "L0"]),
        ({"status": "gave_up"}, ["L7"]),
        ({"rule_name": "device_offline", "status": "muted"}, ["L3"]),
        ({"rule_name": "asset_checks"}, []),  # platform-wide: not a tenant's
        ({"rule_name": "nothing"}, []),
        ({"start": iso(at(3)), "end": iso(at(5))}, ["L5", "L4", "L3"]),
    ],
)
def test_alerts_filters(api: Api, alert_log: dict[str, dict], filters: dict, expected: list[str]) -> None:
    assert ok(api.t1.get("/v1/alerts", **{**DAY_RANGE, **filters}))["items"] == [alert_log[n] for n in expected]


def test_alerts_admin_filters(api: Api, alert_log: dict[str, dict]) -> None:
    assert ok(api.admin.get("/v1/alerts", rule_name="asset_checks", **DAY_RANGE))["items"] == [alert_log["L9"]]
    assert ok(api.admin.get("/v1/alerts", status="failed", **DAY_RANGE))["items"] == [
        alert_log["L10"],
        alert_log["L2"],
    ]


def test_alerts_default_range_is_the_last_seven_days(api: Api, database: DatabaseHandle) -> None:
    now = datetime.now(UTC)
    rows = [log(now - HOUR, "anomaly_high", "sent"), log(now - 8 * D, "anomaly_high", "sent")]
    rows.append(log(now + HOUR, "anomaly_high", "pending"))
    ids = insert(database, "alert_log", rows, returning="log_id")
    body = ok(api.t1.get("/v1/alerts"))
    assert body == {"items": [{"log_id": ids[0], **jsonable(rows[0])}], "count": 1, "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "field", "msg"),
    [
        (
            {"status": "delivered"},
            "status",
            "Input should be 'pending', 'sent', 'failed', 'muted', 'unconfigured' or 'gave_up'",
        ),
        ({"rule_name": ""}, "rule_name", "String should have at least 1 character"),
        ({"limit": 0}, "limit", "Input should be greater than or equal to 1"),
        ({"cursor": "%%%"}, "cursor", "cursor is not one this API returned"),
        ({"start": iso(at(5)), "end": iso(at(5))}, "end", "end must be after start"),
    ],
)
def test_alerts_422(empty_api: Api, params: dict, field: str, msg: str) -> None:
    assert_422(empty_api.t1.get("/v1/alerts", **params), ["query", field], msg)


def test_alerts_another_tenant_is_404(empty_api: Api) -> None:
    response = empty_api.t1.get("/v1/alerts", tenant_id="t2")
    assert (response.status_code, response.json()) == (404, OTHER_TENANT)


# ------------------------------------------------------------------------------------------------
# 401 without a key
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query"),
    [("/v1/fleet", {}), ("/v1/quality", QUALITY_QUERY), ("/v1/alerts", {}), ("/v1/rejects", {})],
    ids=["fleet", "quality", "alerts", "rejects"],
)
def test_401_without_a_key(empty_api: Api, path: str, query: dict) -> None:
    for headers in ({}, {"X-API-Key": ""}):
        response = empty_api.client.get(path, params=query, headers=headers)
        assert (response.status_code, response.json()) == (401, MISSING_KEY)
        assert response.headers["WWW-Authenticate"] == "X-API-Key"
