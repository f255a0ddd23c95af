"""`sensors.device.readings`: one measurement of one metric of one sensor.

schema_version 1 (default when absent) is the canonical shape (`SensorReading` below). schema_version 2 lets
an edge device send several metrics of one sensor in one message
(`"metrics": {"temp": 23.7, "humidity": 41.0}`, optional `"units"`); it maps to one v1 row per
metric, so everything downstream only ever sees the canonical row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec
import polars as pl

from analytics_platform.contracts.base import (
    INVALID_VALUE,
    MISSING_FIELD,
    UNKNOWN_METRIC,
    UTC_TIME,
    Contract,
    ContractConfig,
    ContractViolation,
    RowCheck,
)
from analytics_platform.contracts.fields import Identifier, Label, raw_json_text
from analytics_platform.contracts.storage import RawIndex


class SensorReading(msgspec.Struct, gc=False):
    time: str
    tenant_id: Identifier
    factory_id: Identifier
    machine_id: Identifier
    sensor_id: Identifier
    metric: Identifier
    value: float
    unit: Label | None = None
    payload: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    event_id: Identifier | None = None
    schema_version: int = 1


class SensorReadingsV2(msgspec.Struct, gc=False):
    time: str
    tenant_id: Identifier
    factory_id: Identifier
    machine_id: Identifier
    sensor_id: Identifier
    metrics: dict[Identifier, float]
    units: dict[str, Label] = {}
    payload: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    event_id: Identifier | None = None
    schema_version: int = 2


_v2 = msgspec.json.Decoder(SensorReadingsV2)


def _from_v2(value: bytes) -> list[SensorReading]:
    msg = _v2.decode(value)
    if not msg.metrics:
        raise ContractViolation(MISSING_FIELD, "schema_version 2 needs at least one entry in `metrics`")
    return [
        SensorReading(
            time=msg.time,
            tenant_id=msg.tenant_id,
            factory_id=msg.factory_id,
            machine_id=msg.machine_id,
            sensor_id=msg.sensor_id,
            metric=metric,
            value=reading,
            unit=msg.units.get(metric),
            payload=msg.payload,
            event_id=msg.event_id,
            schema_version=2,
        )
        for metric, reading in msg.metrics.items()
    ]


class SensorContract(Contract):
    domain = "sensor"
    default_topic = "sensors.device.readings"
    raw_table = "raw_sensor_readings"
    description = "Sensor measurements, one row per (machine, sensor, metric, time)."
    row_type = SensorReading
    row_schema: ClassVar[dict[str, pl.DataType]] = {
        "time": UTC_TIME,
        "tenant_id": pl.String(),
        "factory_id": pl.String(),
        "machine_id": pl.String(),
        "sensor_id": pl.String(),
        "metric": pl.String(),
        "value": pl.Float64(),
        "unit": pl.String(),
        "payload": pl.String(),
    }
    natural_key = ("tenant_id", "factory_id", "machine_id", "sensor_id", "metric")
    finite_columns = ("value",)
    range_column = "value"
    json_columns = ("payload",)
    legacy: ClassVar[dict[int, Any]] = {2: _from_v2}
    derived_schema: ClassVar[dict[str, pl.DataType]] = {"uncatalogued": pl.Boolean()}
    order = 10
    key_index = ("tenant_id", "factory_id", "machine_id", "metric")
    # the readings stored under a tenant's `accept` policy (the uncatalogued-readings metric counts them)
    # the live judge reads the rows committed since its cursor by `ingested_at` (results/live_detection.py)
    extra_indexes = (
        RawIndex("uncatalogued_idx", ("tenant_id", "metric", "time"), "uncatalogued"),
        RawIndex("ingested_idx", ("ingested_at",)),
    )
    quality_checks = ("values_in_range", "units_match", "completeness")

    def derive(self, rows: pl.DataFrame, config: ContractConfig) -> pl.DataFrame:
        return flag_uncatalogued(rows, config)

    def column_values(self, name: str, objs: Sequence[Any]) -> list[Any]:
        if name == "payload":
            return [raw_json_text(o.payload) for o in objs]
        return super().column_values(name, objs)

    def extra_checks(self, config: ContractConfig) -> list[RowCheck]:
        return [
            known_metric_check(config),
            RowCheck(
                INVALID_VALUE,
                pl.col("payload").is_not_null() & ~pl.col("payload").str.starts_with("{"),
                pl.lit("payload must be a JSON object"),
            ),
        ]


def known_metric_check(config: ContractConfig) -> RowCheck:
    """Metrics come from the tenant's catalogue (the defaults plus its own entries): under the
    `reject` policy a typo is a reject, not a new series; under `accept` the reading is stored,
    flagged (`uncatalogued`)."""
    catalog = config.catalog
    return RowCheck(
        UNKNOWN_METRIC,
        ~catalog.catalogued(pl.col("tenant_id"), pl.col("metric")) & ~catalog.accepting(pl.col("tenant_id")),
        pl.format("metric '{}' is not in the metrics catalogue", pl.col("metric")),
    )


def flag_uncatalogued(rows: pl.DataFrame, config: ContractConfig) -> pl.DataFrame:
    """The `uncatalogued` column: true for readings stored under the `accept` policy."""
    return rows.with_columns((~config.catalog.catalogued(pl.col("tenant_id"), pl.col("metric"))).alias("uncatalogued"))


CONTRACT = SensorContract()
