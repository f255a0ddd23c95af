"""Messages of t1/f1/mc-01 as the edge sends them, and the two steps every pipeline test takes with
them: one tick of the drain sensors (as the daemon would record it) and a materialisation of assets.

HEALTH, SWEEPS and LAB are the device, sweep and lab messages of the hour 2025-08-20 03:00 that
integration/test_analytics.py checks row by row and the dashboard plant (support/dashboard.py) reuses."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
from psycopg import sql

from analytics_platform.ingest.store import copy_rows
from analytics_platform.transforms.window_aggregates import window_aggregates
from analytics_platform_tests.support.stack import DatabaseHandle

KEY = "t1-f1-mc-01"


def body(time: str, **fields: object) -> bytes:
    return json.dumps({"time": time, "tenant_id": "t1", "factory_id": "f1", "machine_id": "mc-01", **fields}).encode()


def reading(time: str, value: float, event_id: str, **extra: object) -> bytes:
    return body(time, sensor_id="s-001", metric="temp", value=value, event_id=event_id, **extra)


HEALTH = [
    body("2025-08-20T03:10:00Z", status="online", level="ok"),
    body("2025-08-20T03:20:00Z", status="offline", level="critical"),
    body("2025-08-20T03:30:00Z", health_score=0.9),
    body("2025-08-20T03:40:00Z", status="online", level="ok"),
    body("2025-08-20T03:50:00Z", health_score=0.8),
    body("2025-08-20T04:30:00Z", status="offline", level="critical"),
]


SWEEPS = [
    body("2025-08-20T03:15:00Z", metric="temp", readings=[{"value": 64.0}, {"value": 65.0}, {"value": 66.0}]),
    body("2025-08-20T03:45:00Z", metric="temp", batch_id="B-2", readings=[{"value": 62.0}, {"value": 65.0}]),
]


def lab(time: str, sample: str, analyte: str, value: float) -> bytes:
    return body(time, station_id="lab-f1", sample_id=sample, analyte=analyte, value=value)


LAB = [
    lab("2025-08-20T03:05:00Z", "S-1", "Moisture", 12.0),  # 11.5..13.5: pass
    lab("2025-08-20T03:06:00Z", "S-2", "Moisture", 14.0),  # fail
    lab("2025-08-20T03:07:00Z", "S-3", "pH", 6.8),  # pass
    lab("2025-08-20T03:08:00Z", "S-4", "Ash", 1.0),  # no limit: no verdict
]


def drain(defs: dg.Definitions, instance: dg.DagsterInstance, domains=("sensor", "device", "sweep", "lab")) -> dict:
    """One tick of each drain sensor, recorded as the daemon would; the raw partitions reported."""
    reported: dict[str, list[str]] = {}
    for domain in domains:
        sensor = defs.resolve_sensor_def(f"drain_{domain}")
        result = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
            if isinstance(event, dg.AssetMaterialization) and event.partition:
                reported.setdefault(event.asset_key.to_user_string(), []).append(event.partition)
    return reported


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance, names, partition: str | None = None, **kw):
    assets = [defs.resolve_assets_def(name) for name in names]
    result = dg.materialize(assets, partition_key=partition, instance=instance, **kw)  # resources bound by defs
    assert result.success
    return result


def store_raw_readings(
    database: DatabaseHandle,
    frame: pl.DataFrame,
    *,
    first_offset: int = 0,
    aggregates: pl.Expr | None = None,
    dedup_key: pl.Expr | None = None,
) -> None:
    """Store `frame` (window_aggregates.READING_SCHEMA, temperatures in degC) in raw_sensor_readings as
    if drained from partition 0 at offsets from `first_offset`, without a broker (the anomaly tests
    load days of readings), and with `aggregates` (a filter on bucket_start; pl.lit(True): all) its
    60 s window aggregates as the asset would have stored them. `dedup_key` defaults to sensor|epoch."""
    raw = frame.with_columns(
        unit=pl.lit("degC"),
        schema_version=pl.lit(1, pl.Int16),
        dedup_key=dedup_key
        if dedup_key is not None
        else pl.concat_str(pl.col("sensor_id"), pl.col("time").dt.epoch("s").cast(pl.String), separator="|"),
        topic=pl.lit("sensors.device.readings"),
        kafka_partition=pl.lit(0, pl.Int32),
        kafka_offset=pl.int_range(pl.len(), dtype=pl.Int64) + first_offset,
    )
    with database.connect() as conn, conn.cursor() as cur:
        copy_rows(cur, sql.Identifier("analytics", "raw_sensor_readings"), raw, raw.columns)
        if aggregates is not None:
            aggs = window_aggregates(frame.lazy(), [60]).collect().filter(aggregates)
            copy_rows(cur, sql.Identifier("analytics", "analytics_agg"), aggs, aggs.columns)
