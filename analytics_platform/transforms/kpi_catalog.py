"""The KPI catalogue: every KPI the pipeline writes to analytics.analytics_kpi, declared once.

A KPI used to be spelt in five places (the transforms, the API's list of accepted names, the
result checks' ranges in config/checks.yaml, the dashboard's labels and formats, the API benchmark),
and they drifted: a KPI missing from checks.yaml was silently never judged. Here each KPI is one
`Kpi` entry (name, unit, meaning, the range the result checks judge it by, how it combines over a
longer period, its display label and format), and everything else reads it: the transforms take
names and units from the entries, the API validates `kpi=` and serves the catalogue
(`GET /v1/kpi/catalog`), the result checks judge every entry by its range (checks.yaml only
overrides), the dashboard labels and formats from the API's copy, and bench/api.py loads rows of
every entry. Adding a KPI is one entry here plus its computation; a unit test fails when a
computed KPI has no entry or an entry is never computed.

Pure declarations (no Polars, no I/O): the transforms import it, so it sits at their layer.

`avg_<driver>` KPIs (the mean of each KPI_DRIVERS metric over the period, a baseline regressor)
are one family, `driver_kpi(metric)`: their names depend on the deployment's drivers, and their
valid range is the metric's own range in the tenant's metrics catalogue, not a fixed one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Bound = float | None
CombineKind = Literal["sum", "ratio_of_sums", "max_with_time", "time_weighted_mean", "from_components"]
Format = Literal["percent", "number"]
DRIVER_PREFIX = "avg_"


@dataclass(frozen=True)
class Combine:
    """How a KPI of a longer period follows from those of its parts (hours into a day, machines
    into a factory). `numerator` / `denominator` name the terms: a KPI name, or a key of the KPI's
    own `details`; several terms multiply.

    * sum: add the parts' values.
    * ratio_of_sums: sum(numerator) / sum(denominator) x scale, never a mean of the parts' ratios.
    * max_with_time: the largest part; `at` is the details key that says when it happened.
    * time_weighted_mean: the parts' values weighted by `weight` (a details key; None: the length
      of each part's period).
    * from_components: numerator / denominator of the longer period's own component KPIs, each
      combined by its own rule (OEE = availability x performance x quality).
    """

    kind: CombineKind
    numerator: tuple[str, ...] = ()
    denominator: tuple[str, ...] = ()
    scale: float = 1.0
    weight: str | None = None
    at: str | None = None


SUM = Combine("sum")


def ratio_of_sums(numerator: tuple[str, ...], denominator: tuple[str, ...], scale: float = 1.0) -> Combine:
    return Combine("ratio_of_sums", numerator=numerator, denominator=denominator, scale=scale)


def from_components(numerator: tuple[str, ...], denominator: tuple[str, ...] = ()) -> Combine:
    return Combine("from_components", numerator=numerator, denominator=denominator)


@dataclass(frozen=True)
class Kpi:
    """One KPI. `valid_range` is what the `result_ranges` check judges the stored value by
    (None: that side unbounded; config/checks.yaml may override it per deployment). `format`
    tells a display how to show the value: `percent` (a ratio shown x 100 with %) or `number`
    (rounded to `digits`, followed by the unit)."""

    name: str
    unit: str
    label: str
    description: str
    valid_range: tuple[Bound, Bound]
    combine: Combine
    format: Format = "number"
    digits: int = 2


RATIO = "ratio"
SECONDS = "s"
_NON_NEGATIVE: tuple[Bound, Bound] = (0.0, None)
_UNIT_INTERVAL: tuple[Bound, Bound] = (0.0, 1.0)

# ----- energy (energy_kpis.py) -------------------------------------------------------------------
ENERGY_KWH = Kpi(
    "energy_kwh",
    "kWh",
    "Energy (kWh)",
    "Energy the machine's meters counted in the period (increments booked by the interval each reading closes).",
    _NON_NEGATIVE,
    SUM,
)
ENERGY_COST = Kpi(
    "energy_cost",
    "currency",
    "Energy cost",
    "Energy priced at the tenant's time-of-use tariff band in force when it was used (tenant's currency).",
    _NON_NEGATIVE,
    SUM,
)
CARBON_KG = Kpi(
    "carbon_kg",
    "kg CO2",
    "Carbon (kg CO₂e)",
    "Energy times the tenant's emission factor.",
    _NON_NEGATIVE,
    SUM,
)
PEAK_DEMAND_KW = Kpi(
    "peak_demand_kw",
    "kW",
    "Peak demand (kW)",
    "Highest total power in force during the period (the coincident peak of the machine's meters); "
    "details.at says when.",
    _NON_NEGATIVE,
    Combine("max_with_time", at="at"),
)
AVG_DEMAND_KW = Kpi(
    "avg_demand_kw",
    "kW",
    "Average demand (kW)",
    "Time-weighted mean power over the time a sample holds (details.held_s), summed over the machine's meters.",
    _NON_NEGATIVE,
    Combine("time_weighted_mean", weight="held_s"),
)
LOAD_FACTOR = Kpi(
    "load_factor",
    RATIO,
    "Load factor",
    "Average demand / peak demand.",
    _UNIT_INTERVAL,
    from_components(("avg_demand_kw",), ("peak_demand_kw",)),
    format="percent",
)

# ----- production and time (machine_kpis.py) -----------------------------------------------------
PRODUCTION_COUNT = Kpi(
    "production_count",
    "units",
    "Production",
    "Units produced (count_total increments), good and rejected.",
    _NON_NEGATIVE,
    SUM,
)
GOOD_COUNT = Kpi(
    "good_count",
    "units",
    "Good units",
    "Good units produced (count_good increments).",
    _NON_NEGATIVE,
    SUM,
)
SEC_KWH_PER_UNIT = Kpi(
    "sec_kwh_per_unit",
    "kWh/unit",
    "SEC (kWh/unit)",
    "Specific energy consumption: energy / units produced.",
    _NON_NEGATIVE,
    ratio_of_sums(("energy_kwh",), ("production_count",)),
)
RUN_TIME_S = Kpi(
    "run_time_s",
    SECONDS,
    "Run time (s)",
    "Time the machine was running (run state), outside planned downtime and silences.",
    _NON_NEGATIVE,
    SUM,
)
IDLE_TIME_S = Kpi(
    "idle_time_s",
    SECONDS,
    "Idle time (s)",
    "Time the machine was idle (run state).",
    _NON_NEGATIVE,
    SUM,
)
PLANNED_DOWNTIME_S = Kpi(
    "planned_downtime_s",
    SECONDS,
    "Planned downtime (s)",
    "Planned stops, maintenance and time outside every shift (details split them).",
    _NON_NEGATIVE,
    SUM,
)
DOWNTIME_S = Kpi(
    "downtime_s",
    SECONDS,
    "Downtime (s)",
    "Unplanned downtime: faults plus silences longer than KPI_GAP_S (details split them).",
    _NON_NEGATIVE,
    SUM,
)
FAULT_TIME_S = Kpi(
    "fault_time_s",
    SECONDS,
    "Fault time (s)",
    "Time in the fault state.",
    _NON_NEGATIVE,
    SUM,
)
AVAILABILITY = Kpi(
    "availability",
    RATIO,
    "Availability",
    "Run time / planned busy time (the period less planned downtime and time before any run state).",
    _UNIT_INTERVAL,
    ratio_of_sums(("run_time_s",), ("planned_busy_s",)),
    format="percent",
)
PERFORMANCE = Kpi(
    "performance",
    RATIO,
    "Performance",
    "Ideal cycle time x units produced / run time; above 1 the machine's ideal cycle time is too long.",
    _UNIT_INTERVAL,
    ratio_of_sums(("ideal_cycle_time_s", "production_count"), ("run_time_s",)),
    format="percent",
)
QUALITY = Kpi(
    "quality",
    RATIO,
    "Quality",
    "Good units / units produced.",
    _UNIT_INTERVAL,
    ratio_of_sums(("good_count",), ("production_count",)),
    format="percent",
)
OEE = Kpi(
    "oee",
    RATIO,
    "OEE",
    "Overall equipment effectiveness: availability x performance x quality "
    "(= good x ideal cycle time / planned busy time).",
    _UNIT_INTERVAL,
    from_components(("availability", "performance", "quality")),
    format="percent",
)
PRODUCTION_RATE_PER_H = Kpi(
    "production_rate_per_h",
    "units/h",
    "Production rate (units/h)",
    "Units produced per running hour.",
    _NON_NEGATIVE,
    ratio_of_sums(("production_count",), ("run_time_s",), scale=3600.0),
)
DATA_COMPLETENESS_PCT = Kpi(
    "data_completeness_pct",
    "%",
    "Data completeness (%)",
    "Share of the period's KPI_SLOT_S slots holding at least one reading of the machine.",
    (0.0, 100.0),
    ratio_of_sums(("slots_with_data",), ("slots",), scale=100.0),
)

# The order is the dashboard's and the API's: OEE and its parts, then energy, then the rest.
CATALOGUE: tuple[Kpi, ...] = (
    OEE,
    AVAILABILITY,
    PERFORMANCE,
    QUALITY,
    SEC_KWH_PER_UNIT,
    LOAD_FACTOR,
    PEAK_DEMAND_KW,
    AVG_DEMAND_KW,
    ENERGY_KWH,
    ENERGY_COST,
    CARBON_KG,
    PRODUCTION_COUNT,
    GOOD_COUNT,
    PRODUCTION_RATE_PER_H,
    RUN_TIME_S,
    IDLE_TIME_S,
    PLANNED_DOWNTIME_S,
    DOWNTIME_S,
    FAULT_TIME_S,
    DATA_COMPLETENESS_PCT,
)
BY_NAME: dict[str, Kpi] = {kpi.name: kpi for kpi in CATALOGUE}


def driver_kpi(metric: str) -> Kpi:
    """The `avg_<metric>` KPI of one KPI_DRIVERS metric. Its unit is empty (the metric's unit is
    the catalogue's, per tenant) and its range unbounded here: the result checks judge it by the
    metric's range in the tenant's metrics catalogue."""
    return Kpi(
        f"{DRIVER_PREFIX}{metric}",
        "",
        f"Average {metric.replace('_', ' ')}",
        f"Mean of the machine's {metric} readings in the period (an energy-baseline driver).",
        (None, None),
        Combine("time_weighted_mean"),
    )


def kpis(drivers: Iterable[str]) -> tuple[Kpi, ...]:
    """Every KPI a deployment with these KPI_DRIVERS writes, in catalogue order, drivers last."""
    return (*CATALOGUE, *(driver_kpi(metric) for metric in drivers))


def kpi_names(drivers: Iterable[str]) -> frozenset[str]:
    """The names `GET /v1/kpi` accepts: the catalogue's and one avg_<metric> per driver."""
    return frozenset(kpi.name for kpi in kpis(drivers))


def valid_ranges() -> dict[str, tuple[Bound, Bound]]:
    """KPI name -> the range the result checks judge it by (the fixed entries; avg_<metric> KPIs
    are judged by their metric's catalogue range)."""
    return {kpi.name: kpi.valid_range for kpi in CATALOGUE}
