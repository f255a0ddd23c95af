"""Energy KPIs of one period per machine: energy from a cumulative kWh counter (resets handled),
time-of-use cost, carbon, peak demand with its time, average demand, load factor.

Every KPI row carries a value or, when the period gives nothing to compute it from, NULL with a
reason (`null_reason`): no readings, zero peak, no tariff for the tenant. Never an exception, never
a fake 0. The period and the machine metadata (tariffs, emission factors) come from the caller.

Conventions:
* A counter increment is `value - previous value`; a value below the previous one is a reset
  (meter replaced or rolled over) and its increment is the value itself (counting from 0 again).
  The first reading of a period is compared with the last one before it (`prior`), so energy is
  never lost at period boundaries.
* An increment is priced at the tariff band of its reading's local time (the tenant's timezone).
* Average demand is the mean of the power samples; load factor = average / peak (0..1).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import polars as pl

from analytics_platform.transforms.window_aggregates import MACHINE_KEY, TIME

MACHINE = MACHINE_KEY
KPI_SCHEMA: dict[str, pl.DataType] = {
    "period_start": TIME,
    "period_end": TIME,
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "machine_id": pl.String(),
    "kpi": pl.String(),
    "value": pl.Float64(),
    "unit": pl.String(),
    "null_reason": pl.String(),
    "details": pl.String(),  # JSON
}
TARIFF_SCHEMA: dict[str, pl.DataType] = {
    "tenant_id": pl.String(),
    "timezone": pl.String(),
    "band": pl.String(),
    "start_minute": pl.Int32(),  # local minute of day the band starts (inclusive)
    "end_minute": pl.Int32(),  # local minute of day it ends (exclusive); below start = wraps midnight
    "price": pl.Float64(),  # per kWh
}


def counter_increments(readings: pl.DataFrame, prior: pl.DataFrame, key: Sequence[str]) -> pl.DataFrame:
    """Increments of cumulative counters: `readings` (time, *key, value) in the period, `prior`
    (*key, value) the last reading before it. Returns time, *key, increment, reset."""
    carried = prior.select(*key, "value", time=pl.lit(None, TIME), carried=pl.lit(True))
    current = readings.select(*key, "value", pl.col("time").cast(TIME), carried=pl.lit(False))
    ordered = pl.concat([carried.select(current.columns), current]).sort(*key, pl.col("carried").not_(), "time")
    with_previous = ordered.with_columns(previous=pl.col("value").shift(1).over(key))
    return (
        with_previous.filter(~pl.col("carried") & pl.col("previous").is_not_null())
        .with_columns(reset=pl.col("value") < pl.col("previous"))
        .select(
            "time",
            *key,
            increment=pl.when(pl.col("reset")).then(pl.col("value")).otherwise(pl.col("value") - pl.col("previous")),
            reset="reset",
        )
    )


def price_increments(increments: pl.DataFrame, tariffs: pl.DataFrame) -> pl.DataFrame:
    """`increments` (time, tenant_id, ..., increment) with the `band` and `price` of the tariff in
    force at each one's local time; NULL band and price where the tenant has no tariff."""
    tariffs = tariffs.select(TARIFF_SCHEMA.keys()).cast(TARIFF_SCHEMA)
    zones = dict(tariffs.select("tenant_id", "timezone").unique("tenant_id").iter_rows())
    indexed = increments.with_row_index("_row")
    priced = []
    for tenant, zone in zones.items():
        local = indexed.filter(pl.col("tenant_id") == tenant).with_columns(
            minute=(
                pl.col("time").dt.convert_time_zone(zone).dt.hour().cast(pl.Int32) * 60
                + pl.col("time").dt.convert_time_zone(zone).dt.minute().cast(pl.Int32)
            )
        )
        bands = tariffs.filter(pl.col("tenant_id") == tenant).drop("tenant_id", "timezone")
        matched = (
            local.join(bands, how="cross")
            .filter(
                pl.when(pl.col("start_minute") <= pl.col("end_minute"))
                .then((pl.col("minute") >= pl.col("start_minute")) & (pl.col("minute") < pl.col("end_minute")))
                .otherwise((pl.col("minute") >= pl.col("start_minute")) | (pl.col("minute") < pl.col("end_minute")))
            )
            .unique("_row", keep="first", maintain_order=True)
            .select("_row", "band", "price")
        )
        priced.append(matched)
    prices = (
        pl.concat(priced)
        if priced
        else pl.DataFrame(schema={"_row": pl.UInt32, "band": pl.String, "price": pl.Float64})
    )
    return indexed.join(prices, on="_row", how="left").sort("_row").drop("_row")


def kpi_row(
    machine: dict,
    start: datetime,
    end: datetime,
    kpi: str,
    value: float | None,
    unit: str,
    reason: str | None,
    **details,
) -> dict:
    """One KPI row: the value, or NULL and why; `details` as a JSON object (shared by every KPI
    transform so all rows read alike)."""
    return {
        "period_start": start,
        "period_end": end,
        **machine,
        "kpi": kpi,
        "value": value,
        "unit": unit,
        "null_reason": None if value is not None else reason,
        "details": json.dumps(details, default=str, sort_keys=True) if details else None,
    }


def energy_kpis(
    priced: pl.DataFrame,
    power: pl.DataFrame,
    emission_factors: pl.DataFrame,
    machines: pl.DataFrame,
    *,
    start: datetime,
    end: datetime,
) -> pl.DataFrame:
    """energy_kwh, energy_cost, carbon_kg, peak_demand_kw, avg_demand_kw, load_factor for every
    machine in `machines` (tenant_id, factory_id, machine_id) over [start, end).

    `priced`: energy counter increments with band and price (`price_increments`); `power`: kW
    samples (time, *machine, value); `emission_factors`: tenant_id, kg_co2_per_kwh.
    """
    factors = dict(emission_factors.select("tenant_id", "kg_co2_per_kwh").iter_rows())
    energy = {
        (r["tenant_id"], r["factory_id"], r["machine_id"]): r
        for r in priced.group_by(*MACHINE)
        .agg(
            kwh=pl.col("increment").sum(),
            n=pl.len(),
            resets=pl.col("reset").sum(),
            unpriced=pl.col("price").is_null().sum(),
            cost=(pl.col("increment") * pl.col("price")).sum(),
            by_band=pl.struct("band", "increment").filter(pl.col("band").is_not_null()),
        )
        .iter_rows(named=True)
    }
    demand = {
        tuple(r[:3]): r[3:]
        for r in power.sort("time")
        .group_by(*MACHINE)
        .agg(
            peak=pl.col("value").max(),
            peak_time=pl.col("time").filter(pl.col("value") == pl.col("value").max()).first(),
            avg=pl.col("value").mean(),
            n=pl.len(),
        )
        .iter_rows()
    }
    rows = []
    for machine_key in machines.select(MACHINE).unique().sort(MACHINE).iter_rows():
        machine = dict(zip(MACHINE, machine_key, strict=True))
        e = energy.get(machine_key)
        kwh = e["kwh"] if e else None
        rows.append(
            kpi_row(
                machine,
                start,
                end,
                "energy_kwh",
                kwh,
                "kWh",
                "no energy counter readings in the period",
                **({"increments": e["n"], "counter_resets": e["resets"]} if e else {}),
            )
        )
        if e is None:
            cost, reason = None, "no energy counter readings in the period"
        elif e["unpriced"]:
            cost, reason = None, f"{e['unpriced']} increment(s) fall outside every tariff band of the tenant"
        else:
            cost, reason = e["cost"], None
        bands: dict[str, float] = {}
        for item in e["by_band"] if e else []:
            bands[item["band"]] = bands.get(item["band"], 0.0) + item["increment"]
        rows.append(kpi_row(machine, start, end, "energy_cost", cost, "currency", reason, kwh_by_band=bands))
        factor = factors.get(machine["tenant_id"])
        carbon = kwh * factor if kwh is not None and factor is not None else None
        carbon_reason = (
            "no energy counter readings in the period" if kwh is None else "no emission factor for the tenant"
        )
        rows.append(kpi_row(machine, start, end, "carbon_kg", carbon, "kg CO2", carbon_reason, kg_co2_per_kwh=factor))
        d = demand.get(machine_key)
        peak, peak_time, avg, samples = d if d else (None, None, None, 0)
        no_power = "no power readings in the period"
        rows.append(kpi_row(machine, start, end, "peak_demand_kw", peak, "kW", no_power, at=peak_time, samples=samples))
        rows.append(kpi_row(machine, start, end, "avg_demand_kw", avg, "kW", no_power, samples=samples))
        if peak is None:
            load, load_reason = None, no_power
        elif peak <= 0:
            load, load_reason = None, "peak demand is 0: the machine drew no power"
        else:
            load, load_reason = avg / peak, None
        rows.append(kpi_row(machine, start, end, "load_factor", load, "ratio", load_reason))
    return pl.DataFrame(rows, schema=KPI_SCHEMA, orient="row") if rows else pl.DataFrame(schema=KPI_SCHEMA)
