"""Lab analytes as time series end to end: lab results of two tenants (the same factory and station
ids in both) produced to the real broker, drained, the `lab_window_aggregates` asset materialised
through Dagster, and GET /v1/lab/agg answering exact, hand-computed buckets beside their spec
limits; a late result re-opens exactly its buckets and re-materialising reproduces the same rows."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import dagster as dg

from analytics_platform.results.spec_limits import load_spec_limits
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import Api, assert_422, ok
from analytics_platform_tests.support.automation import Ticks
from analytics_platform_tests.support.readings import drain, materialize
from analytics_platform_tests.support.stack import DatabaseHandle, domain_topic, produce

ASSET = "lab_window_aggregates"
DAY = {"start": "2025-08-20T00:00:00Z", "end": "2025-08-21T00:00:00Z"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def lab(tenant: str, time: str, sample: str, analyte: str, value: float, station: str = "lab-01") -> tuple[str, bytes]:
    body = {
        "time": time,
        "tenant_id": tenant,
        "factory_id": "f1",
        "station_id": station,
        "sample_id": sample,
        "analyte": analyte,
        "value": value,
        "unit": "%",
    }
    return f"{tenant}-f1-{station}", json.dumps(body).encode()


RESULTS = [
    # t1, lab-01, Moisture, hour 03: [12, 14, 13, 11]
    lab("t1", "2025-08-20T03:05:00Z", "S-1", "Moisture", 12.0),
    lab("t1", "2025-08-20T03:20:00Z", "S-2", "Moisture", 14.0),
    lab("t1", "2025-08-20T03:40:00Z", "S-3", "Moisture", 13.0),
    lab("t1", "2025-08-20T03:55:00Z", "S-4", "Moisture", 11.0),
    lab("t1", "2025-08-20T03:05:00Z", "S-1", "Moisture", 12.0),  # the same result again (edge re-send)
    lab("t1", "2025-08-20T04:10:00Z", "S-5", "Moisture", 12.2),
    lab("t1", "2025-08-20T03:30:00Z", "S-3", "pH", 6.8),
    lab("t1", "2025-08-20T03:15:00Z", "S-9", "Moisture", 13.2, station="lab-02"),
    # t2: the same factory and station ids, its own numbers
    lab("t2", "2025-08-20T03:10:00Z", "S-1", "Moisture", 50.0),
    lab("t2", "2025-08-20T03:50:00Z", "S-2", "Moisture", 52.0),
]
STATS = "count_n, sum_v, avg_v, min_v, max_v, stddev_v, first_v, last_v, p50_v, p95_v"
ROWS = (
    f"SELECT tenant_id, factory_id, station_id, analyte, window_s, bucket_start, bucket_end, {STATS} "
    "FROM analytics.analytics_lab_agg ORDER BY tenant_id, factory_id, station_id, analyte, window_s, bucket_start"
)


def rows(database: DatabaseHandle, window_s: int) -> dict[tuple, tuple]:
    """(tenant, station, analyte, bucket_start) -> (count, sum, avg, min, max, stddev, first, last, p50, p95)."""
    return {(r[0], r[2], r[3], r[5]): r[7:] for r in database.query(ROWS) if r[4] == window_s}


def close(found: tuple, expected: tuple) -> bool:
    """Equal, floats to 1e-12 (stddev and p95 are irrational or not exactly representable)."""
    return len(found) == len(expected) and all(
        f == e if not isinstance(e, float) or f is None else math.isclose(f, e, rel_tol=0, abs_tol=1e-12)
        for f, e in zip(found, expected, strict=True)
    )


HOUR_3_T1 = (4, 50.0, 12.5, 11.0, 14.0, math.sqrt(5 / 3), 12.0, 11.0, 12.5, 13.85)
HOUR_3_T2 = (2, 102.0, 51.0, 50.0, 52.0, math.sqrt(2), 50.0, 52.0, 51.0, 51.9)


def test_moisture_per_hour_through_the_pipeline_by_tenant_with_limits_late_results_and_reprocessing(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    settings: PlatformSettings,
    database: DatabaseHandle,
    api: Api,
) -> None:
    with database.connect() as conn:
        load_spec_limits(conn)  # t1 Moisture 11.5..13.5 (target 12.5), t2 Moisture 11..14, tenant-wide
        # from 04:00 factory f1 of t1 has its own, narrower limit: it wins over the tenant-wide one
        conn.execute(
            "INSERT INTO analytics.analytics_spec_limits (tenant_id, factory_id, scope, name, lower_limit, "
            "upper_limit, target, unit, valid_from) VALUES ('t1', 'f1', 'analyte', 'Moisture', 12, 13, 12.5, '%', "
            "'2025-08-20T04:00:00Z')"
        )
    topic = domain_topic(settings, "lab")
    produce(settings.kafka_brokers, topic, RESULTS)
    reported = drain(defs, instance, ["lab"])
    assert sorted(reported["raw_lab_results"]) == ["2025-08-20-03:00", "2025-08-20-04:00"]
    for partition in reported["raw_lab_results"]:
        checks = materialize(defs, instance, [ASSET], partition).get_asset_check_evaluations()
        assert sorted((c.check_name, c.passed) for c in checks) == [
            ("reconciliation", True),
            ("result_ranges", True),
            ("schema", True),
            ("unique_keys", True),
        ]

    hourly = rows(database, 3600)
    assert sorted(hourly) == [
        ("t1", "lab-01", "Moisture", at("2025-08-20T03:00:00")),
        ("t1", "lab-01", "Moisture", at("2025-08-20T04:00:00")),
        ("t1", "lab-01", "pH", at("2025-08-20T03:00:00")),
        ("t1", "lab-02", "Moisture", at("2025-08-20T03:00:00")),
        ("t2", "lab-01", "Moisture", at("2025-08-20T03:00:00")),
    ]
    assert close(hourly[("t1", "lab-01", "Moisture", at("2025-08-20T03:00:00"))], HOUR_3_T1)
    lone = (1, 12.2, 12.2, 12.2, 12.2, None, 12.2, 12.2, 12.2, 12.2)  # one result: no stddev
    assert hourly[("t1", "lab-01", "Moisture", at("2025-08-20T04:00:00"))] == lone
    assert hourly[("t1", "lab-02", "Moisture", at("2025-08-20T03:00:00"))][:5] == (1, 13.2, 13.2, 13.2, 13.2)
    assert close(hourly[("t2", "lab-01", "Moisture", at("2025-08-20T03:00:00"))], HOUR_3_T2)
    # 300 s: 03:05 and 03:55 each alone, t2's two results in two buckets; 60 s the same
    five = rows(database, 300)
    assert five[("t1", "lab-01", "Moisture", at("2025-08-20T03:05:00"))][:2] == (1, 12.0)
    assert len([k for k in five if k[0] == "t1" and k[2] == "Moisture"]) == 6
    assert len(rows(database, 60)) == len(five) == 9

    # the API: t1 sees its own buckets, each beside the limit in force at its start
    body = ok(api.t1.get("/v1/lab/agg", factory_id="f1", analyte="Moisture", window_s=3600, **DAY))
    assert body["window_s"] == 3600 and body["count"] == 3 and body["next_cursor"] is None
    first = body["items"][0]
    assert {
        k: first[k] for k in ("bucket_start", "bucket_end", "tenant_id", "factory_id", "station_id", "analyte")
    } == {
        "bucket_start": "2025-08-20T03:00:00Z",
        "bucket_end": "2025-08-20T04:00:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "station_id": "lab-01",
        "analyte": "Moisture",
    }
    stats = ("count", "sum", "avg", "min", "max", "stddev", "first", "last", "p50", "p95")
    limits = ("lower_limit", "upper_limit", "target", "unit")
    assert close(tuple(first[k] for k in stats), HOUR_3_T1)
    assert [(i["bucket_start"], i["station_id"], i["count"], *(i[k] for k in limits)) for i in body["items"]] == [
        ("2025-08-20T03:00:00Z", "lab-01", 4, 11.5, 13.5, 12.5, "%"),
        ("2025-08-20T03:00:00Z", "lab-02", 1, 11.5, 13.5, 12.5, "%"),
        ("2025-08-20T04:00:00Z", "lab-01", 1, 12.0, 13.0, 12.5, "%"),
    ]
    one_station = ok(
        api.t1.get("/v1/lab/agg", factory_id="f1", analyte="Moisture", window_s=3600, station_id="lab-02", **DAY)
    )
    assert [(i["station_id"], i["sum"]) for i in one_station["items"]] == [("lab-02", 13.2)]
    # t2 (same factory and station ids) sees only its own numbers and its own limits
    other = ok(api.t2.get("/v1/lab/agg", factory_id="f1", analyte="Moisture", window_s=3600, **DAY))
    assert [(i["tenant_id"], i["station_id"], i["lower_limit"], i["upper_limit"]) for i in other["items"]] == [
        ("t2", "lab-01", 11.0, 14.0)
    ]
    assert close(tuple(other["items"][0][k] for k in stats), HOUR_3_T2)
    admin = ok(api.admin.get("/v1/lab/agg", tenant_id="t2", factory_id="f1", analyte="Moisture", window_s=3600, **DAY))
    assert admin["items"] == other["items"]
    assert api.t1.get(
        "/v1/lab/agg", tenant_id="t2", factory_id="f1", analyte="Moisture", window_s=3600, **DAY
    ).json() == {"detail": "tenant 't2' not found"}
    assert_422(
        api.t1.get("/v1/lab/agg", factory_id="f1", analyte="Moisture", window_s=90, **DAY),
        ["query", "window_s"],
        "window_s must be a stored window (60, 300, 3600) or a multiple of one, e.g. 86400",
    )
    # a day is rolled up from the stored hours: [12, 14, 13, 11] and [12.2] -> n 5, sum 62.2, mean 12.44,
    # squared deviations 0.1936 + 2.4336 + 0.3136 + 2.0736 + 0.0576 = 5.072 -> var 1.268; no percentiles;
    # the limit is the one in force at 00:00 (the tenant-wide one: f1's own starts at 04:00)
    day = ok(api.t1.get("/v1/lab/agg", factory_id="f1", analyte="Moisture", window_s=86400, station_id="lab-01", **DAY))
    assert (day["source"], day["source_window_s"], day["count"]) == ("rollup", 3600, 1)
    (whole,) = day["items"]
    assert (whole["bucket_start"], whole["bucket_end"], whole["window_s"]) == (
        "2025-08-20T00:00:00Z",
        "2025-08-21T00:00:00Z",
        86400,
    )
    assert (whole["count"], whole["min"], whole["max"], whole["first"], whole["last"]) == (5, 11.0, 14.0, 12.0, 12.2)
    assert math.isclose(whole["sum"], 62.2, abs_tol=1e-12) and math.isclose(whole["avg"], 12.44, abs_tol=1e-12)
    assert math.isclose(whole["stddev"], math.sqrt(1.268), abs_tol=1e-9)
    assert (whole["p50"], whole["p95"], whole["lower_limit"], whole["upper_limit"]) == (None, None, 11.5, 13.5)
    assert body["source"] == "stored" and body["source_window_s"] == 3600
    # two hours (7200 s buckets start at even hours): 02:00-04:00 holds hour 3, 04:00-06:00 hour 4
    two = ok(api.t1.get("/v1/lab/agg", factory_id="f1", analyte="Moisture", window_s=7200, station_id="lab-01", **DAY))
    assert [(i["bucket_start"], i["count"], i["sum"]) for i in two["items"]] == [
        ("2025-08-20T02:00:00Z", 4, 50.0),
        ("2025-08-20T04:00:00Z", 1, 12.2),
    ]
    # pages follow (bucket_start, station_id)
    page = ok(api.t1.get("/v1/lab/agg", factory_id="f1", analyte="Moisture", window_s=3600, limit=2, **DAY))
    rest = ok(
        api.t1.get("/v1/lab/agg", factory_id="f1", analyte="Moisture", window_s=3600, cursor=page["next_cursor"], **DAY)
    )
    assert page["items"] + rest["items"] == body["items"] and rest["next_cursor"] is None

    # re-materialising reproduces exactly the same rows
    before = database.query(ROWS)
    materialize(defs, instance, [ASSET], "2025-08-20-03:00")
    materialize(defs, instance, [ASSET], "2025-08-20-04:00")
    assert database.query(ROWS) == before

    # a late result lands in hour 03: re-materialising that hour picks it up, and nothing else changes
    produce(settings.kafka_brokers, topic, [lab("t1", "2025-08-20T03:58:00Z", "S-late", "Moisture", 15.0)])
    assert drain(defs, instance, ["lab"]) == {"raw_lab_results": ["2025-08-20-03:00"]}
    materialize(defs, instance, [ASSET], "2025-08-20-03:00")
    after = database.query(ROWS)
    changed = sorted((r[2], r[3], r[4], r[5]) for r in set(after) - set(before))
    assert changed == [
        ("lab-01", "Moisture", 60, at("2025-08-20T03:58:00")),
        ("lab-01", "Moisture", 300, at("2025-08-20T03:55:00")),
        ("lab-01", "Moisture", 3600, at("2025-08-20T03:00:00")),
    ]
    assert len(after) == len(before) + 1  # one new 60 s bucket; the 300 s and 3600 s ones were replaced
    # [12, 14, 13, 11, 15]: sum 65, mean 13, squared deviations 1 + 1 + 0 + 4 + 4 = 10 -> var 2.5;
    # sorted [11, 12, 13, 14, 15]: p50 13, p95 at rank 0.95 * 4 = 3.8 -> 14 + 0.8 * (15 - 14)
    late = rows(database, 3600)[("t1", "lab-01", "Moisture", at("2025-08-20T03:00:00"))]
    assert close(late, (5, 65.0, 13.0, 11.0, 15.0, math.sqrt(2.5), 12.0, 15.0, 13.0, 14.8))
    t2_hour = ("t2", "lab-01", "Moisture", at("2025-08-20T03:00:00"))
    assert rows(database, 3600)[t2_hour] == hourly[t2_hour]
    again = ok(api.t1.get("/v1/lab/agg", factory_id="f1", analyte="Moisture", window_s=3600, **DAY))
    assert [(i["station_id"], i["count"], i["last"]) for i in again["items"]] == [
        ("lab-01", 5, 15.0),
        ("lab-02", 1, 13.2),
        ("lab-01", 1, 12.2),
    ]


def test_automation_requests_the_hours_lab_results_landed_in_late_ones_included(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings
) -> None:
    key = dg.AssetKey(ASSET)
    tick = Ticks(defs, instance, dg.AssetSelection.assets(key))
    now = at("2025-08-20T04:20:00")
    start = tick(now)
    assert start.total_requested == 0  # no lab result yet
    topic = domain_topic(settings, "lab")
    produce(settings.kafka_brokers, topic, RESULTS)
    drain(defs, instance, ["lab"])
    first = tick(now)
    assert sorted(first.get_requested_partitions(key)) == ["2025-08-20-03:00", "2025-08-20-04:00"]
    # a result for 01:00 arriving late: exactly that hour
    produce(settings.kafka_brokers, topic, [lab("t1", "2025-08-20T01:30:00Z", "S-early", "Moisture", 12.9)])
    drain(defs, instance, ["lab"])
    late = tick(now)
    assert sorted(late.get_requested_partitions(key)) == ["2025-08-20-01:00"]
