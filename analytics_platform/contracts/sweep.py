"""`sensors.sweep.readings`: a batch of readings of one metric taken in one sweep.

Raw keeps the values as an array (`reading_values`) with their count, so batch statistics and
pass/fail against spec limits are derived downstream and can be recomputed when limits change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

import msgspec
import polars as pl

from analytics_platform.contracts.base import UTC_TIME, Contract, ContractConfig, RowCheck
from analytics_platform.contracts.fields import Identifier, Label
from analytics_platform.contracts.sensor import flag_uncatalogued, known_metric_check


class SweepValue(msgspec.Struct, gc=False):
    value: float


class SweepBatch(msgspec.Struct, gc=False):
    time: str
    tenant_id: Identifier
    factory_id: Identifier
    machine_id: Identifier
    metric: Identifier
    readings: Annotated[list[SweepValue], msgspec.Meta(min_length=1, max_length=100_000)]
    batch_id: Identifier | None = None
    unit: Label | None = None
    event_id: Identifier | None = None
    schema_version: int = 1


class SweepContract(Contract):
    domain = "sweep"
    default_topic = "sensors.sweep.readings"
    raw_table = "raw_sweep_readings"
    description = "Sweep batches: one row per batch with its reading values."
    row_type = SweepBatch
    row_schema: ClassVar[dict[str, pl.DataType]] = {
        "time": UTC_TIME,
        "tenant_id": pl.String(),
        "factory_id": pl.String(),
        "machine_id": pl.String(),
        "metric": pl.String(),
        "batch_id": pl.String(),
        "unit": pl.String(),
        "n": pl.Int32(),
        "reading_values": pl.List(pl.Float64()),
    }
    natural_key = ("tenant_id", "factory_id", "machine_id", "metric")
    finite_columns = ("reading_values",)
    range_column = "reading_values"
    derived_schema: ClassVar[dict[str, pl.DataType]] = {"uncatalogued": pl.Boolean()}
    order = 40
    key_index = ("tenant_id", "factory_id", "machine_id", "metric")
    required_extra = ("n", "reading_values")  # built from `readings`, which every batch carries
    quality_checks = ("values_in_range", "units_match")

    def derive(self, rows: pl.DataFrame, config: ContractConfig) -> pl.DataFrame:
        return flag_uncatalogued(rows, config)

    def column_values(self, name: str, objs: Sequence[Any]) -> list[Any]:
        if name == "reading_values":
            return [[r.value for r in o.readings] for o in objs]
        if name == "n":
            return [len(o.readings) for o in objs]
        return super().column_values(name, objs)

    def scope_exprs(self) -> list[pl.Expr]:
        return [*(pl.col(c) for c in self.natural_key), pl.col("batch_id")]

    def extra_checks(self, config: ContractConfig) -> list[RowCheck]:
        return [known_metric_check(config)]


CONTRACT = SweepContract()
