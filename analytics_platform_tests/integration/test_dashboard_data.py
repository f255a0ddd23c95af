"""The dashboard's plant is what EXPECTED says: the running API (a real uvicorn process) answers
the hand-derived figures over HTTP, and the tables the new endpoints will read (rejects, alert log,
raw freshness) hold them. When a browser test on the same fixture fails, the data is not why.

One plant is built for the whole module (support/dashboard.py, fixture `plant`); no test here writes to it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from analytics_platform.transforms.anomalies import LIMIT_METHODS
from analytics_platform_tests.support.dashboard import (
    DAY,
    EXPECTED,
    LIVE_AGE,
    MC01,
    MC02,
    MC99,
    Machine,
    Plant,
    at,
)
from analytics_platform_tests.support.dashboard import (
    plant as plant,  # the module-scoped fixture (an explicit re-export: no F401 / F811)
)

DAY_RANGE = {"start": "2025-08-20T00:00:00Z", "end": "2025-08-21T00:00:00Z"}
WINDOWS = (60, 300, 3600, 86400)


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def items(plant: Plant, path: str, *, key: str | None = None, **params: Any) -> list[dict]:
    """Every item of a one-page answer (a second page would mean the limit is too small here)."""
    response = plant.get(path, key=key, limit=1000, **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None and body["count"] == len(body["items"])
    return body["items"]


def temp_buckets(plant: Plant, machine: Machine, window_s: int, key: str | None = None) -> list[dict]:
    tenant, factory, machine_id = machine
    return items(
        plant,
        "/v1/agg",
        key=key,
        tenant_id=tenant if key is None else None,
        factory_id=factory,
        machine_id=machine_id,
        metric="temp",
        sensor_id="s-temp",
        window_s=window_s,
        **DAY_RANGE,
    )


@pytest.mark.parametrize("window_s", WINDOWS)
@pytest.mark.parametrize("machine", [MC01, MC02, MC99], ids=lambda m: m[2])
def test_agg_has_the_expected_buckets_per_window(plant: Plant, machine: Machine, window_s: int) -> None:
    buckets = temp_buckets(plant, machine, window_s)
    assert len(buckets) == EXPECTED.agg_buckets[machine][window_s]
    assert sum(b["count"] for b in buckets) == EXPECTED.temp_day[machine]["count"]
    assert {(b["tenant_id"], b["factory_id"], b["machine_id"], b["sensor_id"]) for b in buckets} == {
        (*machine, "s-temp")
    }


@pytest.mark.parametrize("machine", [MC01, MC02, MC99], ids=lambda m: m[2])
def test_the_day_bucket_holds_the_days_readings(plant: Plant, machine: Machine) -> None:
    (day,) = temp_buckets(plant, machine, 86400)
    assert moment(day["bucket_start"]) == DAY
    expected = EXPECTED.temp_day[machine]
    assert {k: day[k] for k in expected} == pytest.approx(expected)


def test_the_day_is_rolled_up_or_read_from_the_continuous_aggregate(plant: Plant) -> None:
    timescale = plant.get("/v1/health").json()["timescaledb"]
    tenant, factory, machine = MC01
    page = plant.get(
        "/v1/agg", tenant_id=tenant, factory_id=factory, machine_id=machine, metric="temp", window_s=86400, **DAY_RANGE
    ).json()
    assert (page["source"], page["source_window_s"]) == (
        "continuous_aggregate" if timescale else "rollup",
        86400 if timescale else 3600,
    )


def test_mc01_hours_and_its_spiked_minute(plant: Plant) -> None:
    hours = {moment(b["bucket_start"]): b for b in temp_buckets(plant, MC01, 3600)}
    assert set(hours) == set(EXPECTED.temp_hours)
    for start, expected in EXPECTED.temp_hours.items():
        assert {k: hours[start][k] for k in expected} == pytest.approx(expected), start
    minutes = {moment(b["bucket_start"]): b for b in temp_buckets(plant, MC01, 60)}
    assert (minutes[at(3, 12)]["count"], minutes[at(3, 12)]["max"]) == (6, 95.676)
    assert (minutes[at(3, 41)]["count"], minutes[at(3, 41)]["max"]) == (6, 95.294)


def test_the_t1_key_sees_t1_and_never_t2(plant: Plant) -> None:
    assert len(temp_buckets(plant, MC01, 60, key=plant.tenant_key)) == EXPECTED.agg_buckets[MC01][60]
    response = plant.get(
        "/v1/agg",
        key=plant.tenant_key,
        tenant_id="t2",
        factory_id="f9",
        machine_id="mc-99",
        metric="temp",
        window_s=60,
        **DAY_RANGE,
    )
    assert (response.status_code, response.json()) == (404, {"detail": "tenant 't2' not found"})
    # the t1 key's own tenant has no mc-99: an empty answer, not t2's readings
    assert temp_buckets(plant, ("t1", "f9", "mc-99"), 60, key=plant.tenant_key) == []


def event_tuple(event: dict) -> tuple:
    """An event of GET /v1/anomaly-events as the first seven fields of support.dashboard.Event."""
    return (
        moment(event["start_time"]),
        moment(event["end_time"]),
        moment(event["peak_time"]),
        event["severity"],
        event["severity_label"],
        tuple(event["methods"]),
        event["anomalies"],
    )


def test_anomalies_of_the_day(plant: Plant) -> None:
    found = items(plant, "/v1/anomalies", tenant_id="t1", machine_id="mc-01", **DAY_RANGE)
    assert sorted((moment(a["time"]), a["method"], a["severity"], a["severity_label"]) for a in found) == (
        EXPECTED.anomalies
    )
    assert [moment(a["time"]) for a in found] == sorted((moment(a["time"]) for a in found), reverse=True)
    assert {a["status"] for a in found} == {"open"}
    assert {a["anomaly_type"] for a in found} == {"temperature"}
    observed = {(moment(a["time"]), a["method"]): (a["observed"], a["expected"]) for a in found}
    assert observed.keys() == EXPECTED.anomaly_observed.keys()
    for row, values in EXPECTED.anomaly_observed.items():
        assert observed[row] == pytest.approx(values), row
    # severity 3 or more in t1: mc-01's 'spec' rows and every row of mc-02 (all 'spec', severity 3)
    severe = items(plant, "/v1/anomalies", tenant_id="t1", min_severity=3, **DAY_RANGE)
    assert sorted((a["machine_id"], moment(a["time"]), a["method"]) for a in severe) == sorted(
        [("mc-01", t, method) for t, method, severity, _ in EXPECTED.anomalies if severity >= 3]
        + [("mc-02", t, "spec") for t, *_ in EXPECTED.spec_anomalies[MC02]]
    )
    for machine, key in ((MC02, plant.tenant_key), (MC99, None)):
        rows = items(
            plant, "/v1/anomalies", key=key, tenant_id=None if key else machine[0], machine_id=machine[2], **DAY_RANGE
        )
        assert [(moment(a["time"]), a["observed"], a["expected"]) for a in rows] == sorted(
            EXPECTED.spec_anomalies[machine], reverse=True
        ), machine
        assert {(a["method"], a["severity"], a["severity_label"], a["status"]) for a in rows} == {
            ("spec", 3, "critical", "open")
        }
    assert items(plant, "/v1/anomalies", tenant_id="t2", **DAY_RANGE) == items(
        plant, "/v1/anomalies", tenant_id="t2", machine_id="mc-99", **DAY_RANGE
    )
    # the machine page's events
    events = items(plant, "/v1/anomaly-events", tenant_id="t1", machine_id="mc-01", **DAY_RANGE)
    listed = [event_tuple(e) for e in events]
    assert listed == [event[:7] for event in EXPECTED.anomaly_events]
    values = [(e["observed"], e["expected"]) for e in events]
    assert values == [pytest.approx((event.observed, event.expected)) for event in EXPECTED.anomaly_events]
    assert {(e["sensor_id"], e["metric"], e["anomaly_type"], e["status"]) for e in events} == {
        ("s-temp", "temp", "temperature", "open")
    }
    # an event's id is its first row's (by window start, then id): the smallest id among the rows it holds
    assert [e["event_id"] for e in events] == [
        min(a["anomaly_id"] for a in found if moment(e["start_time"]) <= moment(a["time"]) <= moment(e["end_time"]))
        for e in events
    ]
    # every event of t1 is severity 3: mc-01's and mc-02's
    severe = items(plant, "/v1/anomaly-events", tenant_id="t1", min_severity=3, **DAY_RANGE)
    assert [(e["machine_id"], moment(e["start_time"])) for e in severe] == [
        ("mc-01", EXPECTED.anomaly_events[0].start),
        ("mc-01", EXPECTED.anomaly_events[1].start),
        ("mc-02", EXPECTED.spec_events[MC02].start),
    ]
    for machine, event in EXPECTED.spec_events.items():
        (listed,) = items(plant, "/v1/anomaly-events", tenant_id=machine[0], machine_id=machine[2], **DAY_RANGE)
        assert event_tuple(listed) == event[:7], machine
        assert (listed["observed"], listed["expected"]) == pytest.approx((event.observed, event.expected)), machine


def test_anomaly_events_of_the_day_hold_its_anomalies(plant: Plant) -> None:
    """The machine page lists events, not rows: whatever the detector found, every anomaly row of the
    day is in exactly one event of its series, and an event's rows are the ones it counts."""
    found = items(plant, "/v1/anomalies", tenant_id="t1", **DAY_RANGE)
    events = items(plant, "/v1/anomaly-events", tenant_id="t1", **DAY_RANGE)
    assert found, "the plant has anomalies"
    assert sum(e["anomalies"] for e in events) == len(found)
    assert [(moment(e["start_time"]), e["event_id"]) for e in events] == sorted(
        ((moment(e["start_time"]), e["event_id"]) for e in events), reverse=True
    )
    series = ("tenant_id", "factory_id", "machine_id", "sensor_id", "metric")
    for row in found:
        holding = [
            e
            for e in events
            if all(e[k] == row[k] for k in series)
            and moment(e["start_time"]) <= moment(row["window_start"] or row["time"])
            and moment(row["time"]) <= moment(e["end_time"])
        ]
        assert len(holding) == 1, row
    by_id = {a["anomaly_id"]: a for a in found}
    for e in events:
        detail = plant.get(f"/v1/anomaly-events/{e['event_id']}", **DAY_RANGE).json()
        assert {k: v for k, v in detail.items() if k != "rows"} == e
        assert detail["rows"] == sorted((by_id[r["anomaly_id"]] for r in detail["rows"]), key=lambda r: r["time"])
        assert len(detail["rows"]) == e["anomalies"]
        assert e["severity"] == max(r["severity"] for r in detail["rows"])
        assert e["methods"] == sorted({r["method"] for r in detail["rows"]})
        assert (e["status"], e["open_anomalies"]) == ("open", e["anomalies"])
    # the t1 key sees the same; t2 has mc-99's one event, which holds its 5 rows
    assert items(plant, "/v1/anomaly-events", key=plant.tenant_key, **DAY_RANGE) == events
    (t2,) = items(plant, "/v1/anomaly-events", tenant_id="t2", **DAY_RANGE)
    assert (t2["machine_id"], event_tuple(t2)) == ("mc-99", EXPECTED.spec_events[MC99][:7])
    assert len(items(plant, "/v1/anomalies", tenant_id="t2", **DAY_RANGE)) == t2["anomalies"]


def test_series_with_anomalies_are_judged_not_learning(plant: Plant) -> None:
    """GET /v1/anomaly-profiles: a series still 'learning' is not judged by its profile, so it has no
    statistical anomalies; the limit rules (range, spec) need no history and judge it all the same."""
    profiles = items(plant, "/v1/anomaly-profiles", tenant_id="t1")
    assert profiles, "the detector kept a profile per series it saw"
    assert {p["stage"] for p in profiles} <= {"learning", "flat", "daily", "weekly"}
    learning = items(plant, "/v1/anomaly-profiles", tenant_id="t1", stage="learning")
    assert learning == [p for p in profiles if p["stage"] == "learning"]
    found = items(plant, "/v1/anomalies", tenant_id="t1", **DAY_RANGE)

    def series(methods: Callable[[str], bool]) -> set[tuple[str, str, str, str]]:
        return {
            (a["factory_id"], a["machine_id"], a["sensor_id"], a["metric"])
            for a in found
            if a["sensor_id"] is not None and methods(a["method"])
        }

    learning_series = {(p["factory_id"], p["machine_id"], p["sensor_id"], p["metric"]) for p in learning}
    assert not series(lambda method: method not in LIMIT_METHODS) & learning_series
    # mc-02's temp (10 readings: learning) breaks t1's spec with every reading (EXPECTED.spec_anomalies)
    assert series(lambda method: method in LIMIT_METHODS) & learning_series == {("f1", "mc-02", "s-temp", "temp")}


def kpis(plant: Plant, period: str, start: datetime, end: datetime, machine: str | None = "mc-01") -> list[dict]:
    return items(
        plant,
        "/v1/kpi",
        tenant_id="t1",
        factory_id="f1",
        machine_id=machine,
        period=period,
        start=start.isoformat(),
        end=end.isoformat(),
    )


@pytest.mark.parametrize(
    ("period", "start", "end", "expected"),
    [("hour", at(3), at(4), EXPECTED.kpi_hour), ("day", DAY, at(24), EXPECTED.kpi_day)],
    ids=["hour", "day"],
)
def test_kpis_of_mc01(plant: Plant, period: str, start: datetime, end: datetime, expected: dict) -> None:
    rows = kpis(plant, period, start, end)
    assert {moment(r["period_start"]) for r in rows} == {start}
    values = {r["kpi"]: r["value"] for r in rows if r["value"] is not None}
    assert values == pytest.approx(expected)
    assert {r["kpi"]: r["null_reason"] for r in rows if r["value"] is None} == EXPECTED.kpi_null


def test_only_mc01_has_kpis(plant: Plant) -> None:
    # mc-02 and mc-99 sent temperatures only: no counter, meter, power or run state, so no KPI machine
    assert {r["machine_id"] for r in kpis(plant, "day", DAY, at(24), machine=None)} == {"mc-01"}
    assert items(plant, "/v1/kpi", tenant_id="t2", factory_id="f9", period="day", **DAY_RANGE) == []


def rollups(plant: Plant, window_s: int, **params: Any) -> list[dict]:
    return items(plant, "/v1/event-rollup", tenant_id="t1", factory_id="f1", window_s=window_s, **DAY_RANGE, **params)


def test_sweep_and_lab_verdicts(plant: Plant) -> None:
    for window_s, start in ((3600, at(3)), (86400, DAY)):
        sweeps = rollups(plant, window_s, event_type="sweep_batch")
        assert {r["machine_id"]: (r["count"], r["pass_count"], r["fail_count"]) for r in sweeps} == EXPECTED.sweeps
        labs = rollups(plant, window_s, event_type="lab_result")
        assert {r["subject"]: (r["count"], r["pass_count"], r["fail_count"]) for r in labs} == EXPECTED.lab
        assert {moment(r["bucket_start"]) for r in sweeps + labs} == {start}
        assert {r["machine_id"] for r in labs} == {"lab-f1"}
    verdicts = plant.database.query(
        "SELECT time, value, passed FROM analytics.analytics_event WHERE event_type = 'sweep_batch' ORDER BY time"
    )
    assert verdicts == EXPECTED.sweep_batches
    labs = plant.database.query(
        "SELECT time, details->>'sample_id', details->>'analyte', value, passed FROM analytics.analytics_event "
        "WHERE event_type = 'lab_result' ORDER BY time"
    )
    assert labs == EXPECTED.lab_results


def test_device_health_counts_uptime_and_events(plant: Plant) -> None:
    health = {
        (r["window_s"], moment(r["bucket_start"])): (r["count"], r["uptime_pct"])
        for window_s in (3600, 86400)
        for r in rollups(plant, window_s, event_type="device_health", machine_id="mc-01")
    }
    assert set(health) == set(EXPECTED.device_health)
    for bucket, (count, uptime) in EXPECTED.device_health.items():
        assert health[bucket] == (count, pytest.approx(uptime)), bucket
    day = {r["event_type"]: r["count"] for r in rollups(plant, 86400, machine_id="mc-01")}
    assert {k: day[k] for k in EXPECTED.device_events} == EXPECTED.device_events


def test_rejected_messages_by_topic_and_reason(plant: Plant) -> None:
    domain_of = {plant.topic(d): d for d in ("sensor", "device", "sweep", "lab")}
    rows = plant.database.query("SELECT topic, reason, count(*) FROM analytics.rejected_message GROUP BY 1, 2")
    assert {(domain_of[topic], reason): n for topic, reason, n in rows} == EXPECTED.rejects


def test_alert_log_and_conditions_of_the_tick(plant: Plant) -> None:
    log = plant.database.query("SELECT rule_name, transition, channel, status FROM analytics.alert_log")
    assert len(log) == sum(EXPECTED.alert_log.values()) == 24
    assert Counter(rule for rule, *_ in log) == EXPECTED.alert_log
    assert {(transition, status) for _, transition, _, status in log} == {("open", "unconfigured")}
    for rule, count in EXPECTED.alert_log.items():
        channels = Counter(channel for name, _, channel, _ in log if name == rule)
        assert channels == dict.fromkeys(EXPECTED.alert_rules[rule], count // len(EXPECTED.alert_rules[rule]))
    conditions = plant.database.query("SELECT rule_name, fingerprint, state FROM analytics.alert_conditions")
    assert {state for *_, state in conditions} == {"open"}
    by_rule: dict[str, list[str]] = {}
    for rule, fingerprint, _ in conditions:
        by_rule.setdefault(rule, []).append(fingerprint)
    assert {rule: sorted(fps) for rule, fps in by_rule.items()} == {
        rule: sorted(fps) for rule, fps in EXPECTED.alert_conditions.items()
    }
    rules = plant.database.query("SELECT rule_name, channels FROM analytics.alert_rules")
    assert {name: tuple(channels) for name, channels in rules} == EXPECTED.alert_rules
    assert plant.built.tick.rule_errors == {}


def test_no_asset_check_failed(plant: Plant) -> None:
    assert plant.built.checks_evaluated > 0  # evaluated, and passed
    assert tuple(plant.built.failed_checks) == EXPECTED.failed_checks


def last_seen(plant: Plant, machine: Machine) -> datetime | None:
    return plant.database.scalar(
        "SELECT max(time) FROM (SELECT time FROM analytics.raw_sensor_readings WHERE (tenant_id, factory_id, "
        "machine_id) = (%(t)s, %(f)s, %(m)s) UNION ALL SELECT time FROM analytics.raw_device_health "
        "WHERE (tenant_id, factory_id, machine_id) = (%(t)s, %(f)s, %(m)s)) AS seen",
        dict(zip("tfm", machine, strict=True)),
    )


def test_mc01_and_mc99_are_live_and_mc02_is_silent(plant: Plant) -> None:
    assert EXPECTED.online | EXPECTED.offline == {MC01, MC02, MC99}
    assert {machine: last_seen(plant, machine) for machine in (MC01, MC02, MC99)} == plant.recent
    assert {machine for machine, seen in plant.recent.items() if seen == plant.live_at} == EXPECTED.online
    assert datetime.now(UTC) - plant.live_at >= LIVE_AGE
    assert plant.database.query(
        "SELECT machine_id, time, status FROM analytics.raw_device_health WHERE status IS NOT NULL "
        "ORDER BY time DESC LIMIT 1"
    ) == [("mc-01", plant.live_at, "online")]
    live = plant.database.query(
        "SELECT tenant_id, factory_id, machine_id, value FROM analytics.raw_sensor_readings WHERE time = %s",
        (plant.live_at,),
    )
    assert {(t, f, m): value for t, f, m, value in live} == EXPECTED.live_temp
    # mc-02 and mc-99 never sent device health: their state is their data's age alone
    assert plant.database.scalar("SELECT count(*) FROM analytics.raw_device_health WHERE machine_id <> 'mc-01'") == 0


def test_the_api_runs_as_its_own_process_with_both_keys(plant: Plant) -> None:
    health = plant.get("/v1/health")
    assert (health.status_code, health.json()["database"]["ok"]) == (200, True)
    assert "Application startup complete" in plant.log.read_text()
    assert sorted(
        plant.database.query("SELECT tenant_id, scopes FROM analytics.api_keys"), key=lambda r: r[0] or ""
    ) == [(None, ["read", "resolve"]), ("t1", ["read"])]
    anomaly = plant.database.scalar("SELECT min(anomaly_id) FROM analytics.analytics_anomaly")
    refused = httpx.post(
        f"{plant.api_url}/v1/anomalies/{anomaly}/resolve",
        json={"note": "a read-only key may not"},
        headers={"X-API-Key": plant.tenant_key},
        timeout=30,
    )
    assert (refused.status_code, refused.json()) == (403, {"detail": "this API key lacks the 'resolve' scope"})
    assert plant.dagster_ui_url == "http://127.0.0.1:3000"
