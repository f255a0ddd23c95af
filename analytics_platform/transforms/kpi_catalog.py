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
      combined by its own rule (load factor = average demand / peak demand).
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
    "Energy times the tenant's emission factor in force when it was used.",
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
    "Overall equipment effectiveness: good x ideal cycle time / planned busy time (= availability x "
    "performance x quality where all three are defined; 0 for planned time in which nothing was made).",
    _UNIT_INTERVAL,
    # the multi-period (and multi-machine) textbook form: sum(good x ideal) / sum(planned busy time)
    # over the periods where OEE is known. A x P x Q of the combined parts agrees with it only while
    # every part is defined: a shift in which nothing was made has quality 0 / 0, and OEE 0.
    ratio_of_sums(("good_count", "ideal_cycle_time_s"), ("planned_busy_s",)),
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


# ----- combining stored periods into longer ones ---------------------------------------------
# A week, a month or a custom range is never stored: it is combined from the stored hours of the
# machines in scope by each KPI's `Combine` rule, so a month's SEC is the month's kWh over the
# month's units, never a mean of 744 hourly SECs. Plain Python on purpose: exact sums in a fixed
# order, usable by the API and the energy performance report alike.

# Details keys a `sum` KPI carries over, summed: time splits (..._s), counter bookkeeping, and
# per-band kWh (a dict of numbers). Anything else (a factor, a label) does not add up.
_SUMMED_DETAILS = ("increments", "counter_resets")
ADDITIVE_KINDS: frozenset[CombineKind] = frozenset({"sum", "ratio_of_sums"})


@dataclass(frozen=True)
class Part:
    """One stored KPI row of one machine and period: its value (None with its `null_reason`),
    its details, and the length of its period in seconds (the weight of a time-weighted mean
    without a weight key)."""

    value: float | None
    details: dict
    seconds: float
    null_reason: str | None = None


@dataclass(frozen=True)
class Combined:
    """A KPI over the combined range: a value, or None and why, and what it was combined from."""

    value: float | None
    null_reason: str | None
    details: dict


def _term(period: dict[str, Part], kpi: str, term: str) -> float | None:
    """A term of `kpi` in one stored period: the key of the KPI's own details, else the value of
    the KPI of that name (the catalogue's rule for numerator and denominator terms)."""
    own = period.get(kpi)
    if own is not None and isinstance(own.details.get(term), int | float):
        return float(own.details[term])
    other = period.get(term)
    return other.value if other is not None else None


def _product(period: dict[str, Part], kpi: str, terms: tuple[str, ...]) -> float | None:
    """The terms multiplied; None when one of them is unknown in this period."""
    out = 1.0
    for term in terms:
        value = _term(period, kpi, term)
        if value is None:
            return None
        out *= value
    return out


def _reason(rows: list[Part], fallback: str) -> str:
    """Why nothing could be combined: the stored rows' own reason when they agree on one."""
    reasons = [row.null_reason for row in rows if row.null_reason]
    return reasons[0] if reasons and len(set(reasons)) == 1 else fallback


def _sum(kpi: Kpi, rows: list[Part]) -> Combined:
    known = [row for row in rows if row.value is not None]
    details: dict = {"parts": len(rows), "parts_with_value": len(known)}
    for row in known:
        for key, value in row.details.items():
            if isinstance(value, dict):
                into = details.setdefault(key, {})
                for sub, amount in value.items():
                    if isinstance(amount, int | float):
                        into[sub] = into.get(sub, 0.0) + amount
            elif isinstance(value, int | float) and (key.endswith("_s") or key in _SUMMED_DETAILS):
                details[key] = details.get(key, 0) + value
    if not known:
        return Combined(None, _reason(rows, f"no {kpi.name} in the range"), details)
    return Combined(sum(row.value for row in known), None, details)


def _ratio_of_sums(kpi: Kpi, periods: list[dict[str, Part]]) -> Combined:
    """Summed numerator over summed denominator, over the stored periods where both are known: a
    machine-hour without a good-count counter must not put its units into quality's denominator,
    nor one without an ideal cycle time its run time into performance's."""
    rule = kpi.combine
    pairs = [(_product(p, kpi.name, rule.numerator), _product(p, kpi.name, rule.denominator)) for p in periods]
    used = [(n, d) for n, d in pairs if n is not None and d is not None]
    numerator, denominator = sum(n for n, _ in used), sum(d for _, d in used)
    details = {"numerator": numerator, "denominator": denominator, "parts": len(periods), "parts_used": len(used)}
    rows = [p[kpi.name] for p in periods if kpi.name in p]
    if not used:
        missing = rule.numerator if all(n is None for n, _ in pairs) else rule.denominator
        return Combined(None, _reason(rows, f"no {' x '.join(missing)} in the range"), details)
    if denominator <= 0:
        return Combined(None, f"the range's {' x '.join(rule.denominator)} is 0", details)
    return Combined(numerator / denominator * rule.scale, None, details)


def _max_with_time(kpi: Kpi, rows: list[Part]) -> Combined:
    known = [row for row in rows if row.value is not None]
    if not known:
        return Combined(None, _reason(rows, f"no {kpi.name} in the range"), {"parts": len(rows)})
    at = kpi.combine.at
    peak = max(row.value for row in known)
    # the first time it happened: stored times are one ISO format, so they sort as text
    times = sorted(str(row.details.get(at)) for row in known if row.value == peak and row.details.get(at) is not None)
    return Combined(peak, None, {at or "at": times[0] if times else None, "parts": len(rows)})


def _time_weighted_mean(kpi: Kpi, rows: list[Part]) -> Combined:
    key = kpi.combine.weight
    weighted = [
        (row.value, float(row.details.get(key) or 0.0) if key else row.seconds) for row in rows if row.value is not None
    ]
    weighted = [(value, weight) for value, weight in weighted if weight > 0]
    total = sum(weight for _, weight in weighted)
    details = {key or "seconds": total, "parts": len(rows)}
    if not weighted:
        return Combined(None, _reason(rows, f"no {kpi.name} in the range"), details)
    return Combined(sum(value * weight for value, weight in weighted) / total, None, details)


def _from_components(kpi: Kpi, done: dict[str, Combined]) -> Combined:
    rule = kpi.combine
    parts = {name: done[name].value if name in done else None for name in (*rule.numerator, *rule.denominator)}
    missing = next((name for name, value in parts.items() if value is None), None)
    if missing is not None:
        why = done[missing].null_reason if missing in done else "not combined"
        return Combined(None, f"{missing}: {why}", parts)
    numerator = 1.0
    for name in rule.numerator:
        numerator *= parts[name]
    denominator = 1.0
    for name in rule.denominator:
        denominator *= parts[name]
    if denominator <= 0:
        return Combined(None, f"{' x '.join(rule.denominator)} is 0 over the range", parts)
    return Combined(numerator / denominator, None, parts)


def adds_up(kpi: Kpi, by_name: dict[str, Kpi]) -> bool:
    """Whether the KPI of several machines together follows from their stored parts. Sums and
    ratios of sums do; a largest peak is not the machines' coincident peak, and machines' demands
    (or temperatures) add or average in ways a weighted mean of their means does not say; a KPI
    made of components adds up when all of them do."""
    rule = kpi.combine
    if rule.kind == "from_components":
        return all(name in by_name and adds_up(by_name[name], by_name) for name in (*rule.numerator, *rule.denominator))
    return rule.kind in ADDITIVE_KINDS


_NOT_ADDITIVE = {
    "max_with_time": "the largest machine's peak is not the coincident peak of the machines together",
    "time_weighted_mean": "a mean of the machines' means is not the mean of the machines together",
    "from_components": "its components do not add up across machines",
}


def combine(wanted: Iterable[Kpi], periods: Iterable[dict[str, Part]], *, machines: int = 1) -> dict[str, Combined]:
    """Every KPI in `wanted` over the stored `periods` (each: KPI name -> that period's row of one
    machine), by its catalogue rule. With `machines` > 1 (a factory or tenant total) only the KPIs
    that add up across machines get a value; the others are None and say why."""
    chosen = list(wanted)
    by_name = {kpi.name: kpi for kpi in chosen}
    periods = list(periods)
    done: dict[str, Combined] = {}
    ordered = sorted(chosen, key=lambda kpi: kpi.combine.kind == "from_components")
    for kpi in ordered:
        if machines > 1 and not adds_up(kpi, {**BY_NAME, **by_name}):
            why = f"does not add up across machines: {_NOT_ADDITIVE[kpi.combine.kind]}"
            done[kpi.name] = Combined(None, why, {"adds_up": False, "machines": machines})
            continue
        rows = [p[kpi.name] for p in periods if kpi.name in p]
        kind = kpi.combine.kind
        if kind == "sum":
            result = _sum(kpi, rows)
        elif kind == "ratio_of_sums":
            result = _ratio_of_sums(kpi, periods)
        elif kind == "max_with_time":
            result = _max_with_time(kpi, rows)
        elif kind == "time_weighted_mean":
            result = _time_weighted_mean(kpi, rows)
        else:
            result = _from_components(kpi, {**done, **_components(kpi, by_name, periods, done, machines)})
        done[kpi.name] = result
    return {kpi.name: done[kpi.name] for kpi in chosen}


def _components(
    kpi: Kpi, by_name: dict[str, Kpi], periods: list[dict[str, Part]], done: dict[str, Combined], machines: int
) -> dict[str, Combined]:
    """The components of a from_components KPI that were not asked for themselves (OEE alone
    still needs availability, performance and quality combined by their own rules)."""
    names = [n for n in (*kpi.combine.numerator, *kpi.combine.denominator) if n not in done and n in BY_NAME]
    return combine([BY_NAME[n] for n in names], periods, machines=machines) if names else {}
