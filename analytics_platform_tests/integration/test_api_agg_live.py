"""GET /v1/agg's live buckets on the real stack: readings through the broker and the drain sensor are
served at once as provisional buckets computed by the asset's own transform; after the hours are
materialised through Dagster the same buckets are served as final, equal to the last bit. Late,
duplicated and out-of-order readings, a 7200 s bucket across a final and a provisional hour, and
two tenants with the same ids."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from analytics_platform.defs import build_definitions
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import Api, assert_csv_equals_json, ok, running
from analytics_platform_tests.support.readings import body, drain, materialize
from analytics_platform_tests.support.stack import DatabaseHandle, domain_topic, produce

NOW = datetime(2025, 8, 20, 5, 20, tzinfo=UTC)  # the API's clock: horizon 02:00..06:00 with 3 hours back
WINDOWS = [60, 300, 3600, 7200]
QUERY = {"factory_id": "f1", "machine_id": "mc-01", "metric": "temp", "start": "2025-08-20T02:00:00Z"}


def reading(tenant: str, time: str, value: float, event_id: str) -> tuple[str, bytes]:
    message = body(time, tenant_id=tenant, sensor_id="s-001", metric="temp", value=value, event_id=event_id)
    return "t1/f1/mc-01/s-001", message


# Out of order (later times first), re-sent copies (same event_id; the first copy wins), values whose sums
# round differently in different orders; t2 has the same ids and other values.
WAVE_1 = [
    reading("t1", "2025-08-20T05:07:10Z", 23.7, "a9"),
    reading("t1", "2025-08-20T03:00:30Z", 0.1, "a1"),
    reading("t1", "2025-08-20T03:00:10Z", 0.2, "a2"),
    reading("t1", "2025-08-20T03:00:30Z", 0.3, "a3"),
    reading("t1", "2025-08-20T03:00:10Z", 0.2, "a2"),  # duplicate
    reading("t1", "2025-08-20T03:59:59.999Z", 1e16, "a4"),
    reading("t1", "2025-08-20T03:59:00Z", 1.0, "a5"),
    reading("t1", "2025-08-20T04:30:00Z", 17.3, "a6"),
    reading("t1", "2025-08-20T04:00:00Z", 17.1, "a7"),
    reading("t1", "2025-08-20T05:00:00Z", 19.9, "a8"),
    reading("t2", "2025-08-20T03:00:10Z", 500.5, "a2"),
    reading("t2", "2025-08-20T05:07:10Z", -3.3, "a9"),
]
# Produced after hours 02-04 are final: late readings of the provisional hour 05 (earlier than the ones it
# has), a re-sent copy with another value (the first copy stays), a reading of the open minute.
WAVE_2 = [
    reading("t1", "2025-08-20T05:07:05Z", 0.7, "b1"),
    reading("t1", "2025-08-20T05:00:00Z", 21.1, "b2"),
    reading("t1", "2025-08-20T05:07:10Z", 99.0, "a9"),  # duplicate of a9 with another value
    reading("t1", "2025-08-20T05:19:30Z", 42.42, "b3"),
    reading("t2", "2025-08-20T05:19:59Z", 7.77, "b1"),
]


@pytest.fixture
def live_settings(settings: PlatformSettings) -> PlatformSettings:
    return settings.model_copy(update={"windows": WINDOWS, "agg_provisional_hours": 3})


def served(api: Api, tenant: str) -> dict[int, list[dict]]:
    caller = api.t1 if tenant == "t1" else api.t2
    answers = {w: ok(caller.get("/v1/agg", **QUERY, window_s=w, end="2025-08-20T06:00:00Z")) for w in WINDOWS}
    return {w: body["items"] for w, body in answers.items()}


def flags(items: list[dict]) -> dict[str, bool]:
    return {item["bucket_start"]: item["provisional"] for item in items}


def test_provisional_buckets_equal_the_final_ones(
    live_settings: PlatformSettings, database: DatabaseHandle, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions(live_settings, secrets_from_env=False)
    topic = domain_topic(live_settings, "sensor")
    with running(live_settings, database) as api:
        api.client.app.state.clock = lambda: NOW
        produce(live_settings.kafka_brokers, topic, WAVE_1)
        drain(defs, instance, ["sensor"])
        first = {tenant: served(api, tenant) for tenant in ("t1", "t2")}
        assert all(item["provisional"] for items in first["t1"].values() for item in items)
        hours = first["t1"][3600]
        assert [(h["bucket_start"], h["count"], h["sum"], h["first"], h["last"]) for h in hours] == [
            ("2025-08-20T03:00:00Z", 5, 0.1 + 0.2 + 0.3 + 1.0 + 1e16, 0.2, 1e16),
            ("2025-08-20T04:00:00Z", 2, 17.1 + 17.3, 17.1, 17.3),
            ("2025-08-20T05:00:00Z", 2, 19.9 + 23.7, 19.9, 23.7),
        ]
        assert [(h["tenant_id"], h["count"]) for h in first["t2"][3600]] == [("t2", 1), ("t2", 1)]

        for partition in ("2025-08-20-02:00", "2025-08-20-03:00", "2025-08-20-04:00"):
            materialize(defs, instance, ["sensor_window_aggregates"], partition)
        produce(live_settings.kafka_brokers, topic, WAVE_2)
        drain(defs, instance, ["sensor"])
        mixed = {tenant: served(api, tenant) for tenant in ("t1", "t2")}
        assert flags(mixed["t1"][3600]) == {
            "2025-08-20T03:00:00Z": False,
            "2025-08-20T04:00:00Z": False,
            "2025-08-20T05:00:00Z": True,
        }
        # 02:00-04:00 is final (both hours materialised); 04:00-06:00 spans final 04 and provisional 05
        assert flags(mixed["t1"][7200]) == {"2025-08-20T02:00:00Z": False, "2025-08-20T04:00:00Z": True}
        assert all(item["provisional"] == item["bucket_start"].startswith("2025-08-20T05") for item in mixed["t1"][60])
        assert mixed["t1"][3600][2]["count"] == 5  # 19.9, 23.7, 0.7, 21.1, 42.42: a9's second copy is not counted
        assert_csv_equals_json(api.t1, "/v1/agg", 2, **QUERY, window_s=60, end="2025-08-20T06:00:00Z")

        materialize(defs, instance, ["sensor_window_aggregates"], "2025-08-20-05:00")
        final = {tenant: served(api, tenant) for tenant in ("t1", "t2")}
    for tenant in ("t1", "t2"):
        for window_s in WINDOWS:
            assert final[tenant][window_s], (tenant, window_s)
            assert not any(item["provisional"] for item in final[tenant][window_s])
            assert final[tenant][window_s] == [{**item, "provisional": False} for item in mixed[tenant][window_s]]
    # every bucket served before hour 05 got its late readings is final unchanged, or one of hour 05's
    for window_s in WINDOWS:
        before = {
            i["bucket_start"]: i for i in first["t1"][window_s] if not i["bucket_start"].startswith("2025-08-20T05")
        }
        after = {i["bucket_start"]: i for i in final["t1"][window_s] if i["bucket_start"] in before}
        if window_s != 7200:
            assert after == {k: {**v, "provisional": False} for k, v in before.items()}
