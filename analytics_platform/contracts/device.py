"""`device.health`: a status event (`status`, `level`), a metric (`health_score` 0..1) or a
machine run state (`run_state`: running, idle, planned_stop, maintenance, fault).

All shapes share one raw table; a message may also carry several. The natural key includes which
shape it is, so a status change and a score sent at the same instant are two readings, not one.
`run_state` is optional and new fields only widen the payload, so schema_version 1 still reads.
The connectivity `status` and the production `run_state` are different questions (a machine can be
online and idle): uptime comes from the first, OEE availability from the second.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec
import polars as pl

from analytics_platform.contracts.base import (
    INVALID_VALUE,
    MISSING_FIELD,
    UTC_TIME,
    Contract,
    ContractConfig,
    RowCheck,
)
from analytics_platform.contracts.fields import Identifier, Label
from analytics_platform.contracts.storage import RawIndex

STATUSES = ("online", "offline", "degraded", "maintenance", "fault", "starting", "stopping")
RUN_STATES = ("running", "idle", "planned_stop", "maintenance", "fault")


class DeviceHealth(msgspec.Struct, gc=False):
    time: str
    tenant_id: Identifier
    factory_id: Identifier
    machine_id: Identifier
    status: Identifier | None = None
    level: Label | None = None
    health_score: float | None = None
    run_state: Identifier | None = None
    event_id: Identifier | None = None
    schema_version: int = 1


class DeviceHealthContract(Contract):
    domain = "device"
    default_topic = "device.health"
    raw_table = "raw_device_health"
    description = "Device status events and health scores."
    row_type = DeviceHealth
    row_schema: ClassVar[dict[str, pl.DataType]] = {
        "time": UTC_TIME,
        "tenant_id": pl.String(),
        "factory_id": pl.String(),
        "machine_id": pl.String(),
        "status": pl.String(),
        "level": pl.String(),
        "health_score": pl.Float64(),
        "run_state": pl.String(),
    }
    natural_key = ("tenant_id", "factory_id", "machine_id")
    finite_columns = ("health_score",)
    order = 20
    # a machine's run states alone (the OEE availability and the KPIs read them)
    extra_indexes = (
        RawIndex("run_state_idx", ("tenant_id", "factory_id", "machine_id", "time DESC"), "run_state IS NOT NULL"),
    )

    def scope_exprs(self) -> list[pl.Expr]:
        # which stream of the device a message belongs to: its status events, health scores and run
        # states are three streams that may each number their messages from 1
        shape = (
            pl.when(pl.col("status").is_not_null())
            .then(pl.lit("status"))
            .when(pl.col("health_score").is_not_null())
            .then(pl.lit("score"))
            .otherwise(pl.lit("run"))
        )
        return [*(pl.col(c) for c in self.natural_key), shape]

    def extra_checks(self, config: ContractConfig) -> list[RowCheck]:
        return [
            RowCheck(
                MISSING_FIELD,
                pl.col("status").is_null() & pl.col("health_score").is_null() & pl.col("run_state").is_null(),
                pl.lit("device.health needs `status` (event), `health_score` (metric) or `run_state`"),
            ),
            RowCheck(
                INVALID_VALUE,
                pl.col("run_state").is_not_null() & ~pl.col("run_state").is_in(RUN_STATES),
                pl.format("run_state '{}' is not one of " + ", ".join(RUN_STATES), pl.col("run_state")),
            ),
            RowCheck(
                INVALID_VALUE,
                pl.col("status").is_not_null() & ~pl.col("status").is_in(STATUSES),
                pl.format("status '{}' is not one of " + ", ".join(STATUSES), pl.col("status")),
            ),
            RowCheck(
                INVALID_VALUE,
                (pl.col("health_score") < 0) | (pl.col("health_score") > 1),
                pl.format("health_score {} is outside 0..1", pl.col("health_score")),
            ),
        ]


CONTRACT = DeviceHealthContract()
