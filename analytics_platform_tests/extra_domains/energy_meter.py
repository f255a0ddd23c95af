"""`meters.energy.readings`: one reading of one energy meter (cumulative kWh counter, power in kW).

A fifth domain, defined outside the platform's package: the module is all of it. Its raw table,
raw asset, checks, drain, rejects, metrics and the edge agent's acceptance all come from this
declaration.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec
import polars as pl

from analytics_platform.contracts.base import INVALID_VALUE, UTC_TIME, Contract, ContractConfig, RowCheck
from analytics_platform.contracts.fields import Identifier


class EnergyMeterReading(msgspec.Struct, gc=False):
    time: str
    tenant_id: Identifier
    factory_id: Identifier
    meter_id: Identifier
    energy_kwh: float  # the meter's cumulative counter
    power_kw: float
    event_id: Identifier | None = None
    schema_version: int = 1


class EnergyMeterContract(Contract):
    domain = "energy_meter"
    default_topic = "meters.energy.readings"
    raw_table = "raw_energy_meter_readings"
    description = "Energy meter readings, one row per (meter, time): cumulative kWh and power kW."
    row_type = EnergyMeterReading
    row_schema: ClassVar[dict[str, pl.DataType]] = {
        "time": UTC_TIME,
        "tenant_id": pl.String(),
        "factory_id": pl.String(),
        "meter_id": pl.String(),
        "energy_kwh": pl.Float64(),
        "power_kw": pl.Float64(),
    }
    natural_key = ("tenant_id", "factory_id", "meter_id")
    finite_columns = ("energy_kwh", "power_kw")
    key_fields = ("tenant_id", "factory_id", "meter_id")

    def extra_checks(self, config: ContractConfig) -> list[RowCheck]:
        return [
            RowCheck(
                INVALID_VALUE,
                pl.col("energy_kwh") < 0,
                pl.format("energy_kwh {} is negative (a counter starts at 0)", pl.col("energy_kwh")),
            )
        ]


CONTRACT = EnergyMeterContract()
