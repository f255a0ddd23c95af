"""`lab.results`: one analyte result of one lab sample, checked later against spec limits."""

from __future__ import annotations

from typing import ClassVar

import msgspec
import polars as pl

from analytics_platform.contracts.base import UTC_TIME, Contract
from analytics_platform.contracts.fields import Identifier, Label
from analytics_platform.contracts.storage import Timeseries


class LabResult(msgspec.Struct, gc=False):
    time: str
    tenant_id: Identifier
    factory_id: Identifier
    station_id: Identifier
    sample_id: Identifier
    analyte: Identifier
    value: float
    unit: Label | None = None
    machine_id: Identifier | None = None
    event_id: Identifier | None = None
    schema_version: int = 1


class LabContract(Contract):
    domain = "lab"
    default_topic = "lab.results"
    raw_table = "raw_lab_results"
    description = "Lab results, one row per (station, sample, analyte, time)."
    row_type = LabResult
    row_schema: ClassVar[dict[str, pl.DataType]] = {
        "time": UTC_TIME,
        "tenant_id": pl.String(),
        "factory_id": pl.String(),
        "station_id": pl.String(),
        "sample_id": pl.String(),
        "analyte": pl.String(),
        "value": pl.Float64(),
        "unit": pl.String(),
        "machine_id": pl.String(),
    }
    natural_key = ("tenant_id", "factory_id", "station_id", "sample_id", "analyte")
    finite_columns = ("value",)
    order = 30
    key_fields = ("tenant_id", "factory_id", "station_id")  # a lab result comes from a station
    key_index = ("tenant_id", "factory_id", "station_id", "analyte")
    timeseries = Timeseries(segment_by=("tenant_id", "factory_id"))


CONTRACT = LabContract()
