"""Production and energy KPIs per machine and period (hour, shift, day).

One call computes every period of a range from the same inputs, so an hour, a shift and a day are
always consistent with each other: the counters are cut into the same parts (at every hour, shift,
day and tariff-band edge) and a period sums its parts, so a day's energy is the sum of its hours'
(up to floating-point rounding of the sums).

Counters and demand are booked by the interval each reading closes (energy_kpis.py; the worked
examples are in docs/kpis.md): a cumulative reading at t1 measures (t0, t1] back to its series'
previous reading, and its increment is spread over every period and tariff band it overlaps in
proportion to time. A reading exactly on a boundary belongs to the period ending there, so a
machine running through a shift change keeps its last minute's parts and kWh in the shift that
made them. The production counts (count_total, count_good) follow the same rule as energy, per
series (tenant, factory, machine, sensor_id, metric), summed per machine. The inputs therefore
carry each series' last reading before the range (`prior`) and its first after it
(`next_readings`); an interval whose closing reading has not arrived yet is not counted yet, and
the KPI's details give the seconds still open (`open_s`) until the period is recomputed.

Time accounting (ISO 22400), per machine, from the run-state timeline (`run_state` on
device.health; a state holds until the next one) and the readings' heartbeat:

* planned downtime: `planned_stop` and `maintenance` states (maintenance is scheduled work; a
  breakdown is `fault`), and time outside the tenant's shifts (not planned production time);
* no data: a silence longer than `gap_s` between a machine's readings (the whole silence), unless
  it falls in planned downtime; it counts as unplanned downtime (the machine cannot prove it ran),
  and a period of nothing but silence has availability and OEE 0; a silence before the machine's
  first run state is downtime too but, like all time then, not planned busy time;
* otherwise the state: running, idle, fault, or unknown (before the first state ever seen).

Precedence where they overlap: planned state > outside the schedule > no data > state.

    planned busy time  = period - planned downtime - unknown
    availability       = running / planned busy time
    performance        = ideal cycle time x total count / running      (may exceed 1: then the
                                                                        ideal cycle time is wrong)
    quality            = good / total
    OEE                = good x ideal cycle time / planned busy time, one division (exact for exact
                         inputs), = availability x performance x quality where all three are
                         defined; 0 for planned time in which nothing was made
    downtime_s         = fault + no data (inside planned busy time)
    SEC                = energy kWh / units produced
    production_rate_h  = units / running hours
    data_completeness  = % of `slot_s` slots of the period holding at least one reading

A value that cannot be computed (a ratio of nothing produced or no run time, no metadata, no
readings) is NULL with the reason in `null_reason`: never an exception, never a fake 0. (OEE of an
idle period is not one: the textbook's division is 0 / planned time.)
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from analytics_platform.transforms import kpi_catalog as K
from analytics_platform.transforms.energy_kpis import (
    FACTOR_SCHEMA,
    KPI_SCHEMA,
    MACHINE,
    POINT_SCHEMA,
    TARIFF_VERSION_SCHEMA,
    VALID_FROM,
    band_edges,
    counter_intervals,
    demand_points,
    emission_factor_in_force,
    energy_kpis,
    kpi_row,
    power_intervals,
    price_increments,
    segment_points,
    split_intervals,
    spread,
    version_edges,
    with_valid_from,
)
from analytics_platform.transforms.window_aggregates import TIME

ENERGY, POWER, TOTAL, GOOD = "energy", "power", "count_total", "count_good"
COUNTERS = (ENERGY, TOTAL, GOOD)
KPI_METRICS = (POWER, ENERGY, TOTAL, GOOD)
PLANNED_STATES = ("planned_stop", "maintenance")
# "unknown_no_data": a silence before the machine's first run state: downtime from a gap, as any
# silence, but not planned busy time (nothing says the machine was meant to run then)
CATEGORIES = (
    "running",
    "idle",
    "fault",
    "planned_stop",
    "maintenance",
    "unscheduled",
    "no_data",
    "unknown",
    "unknown_no_data",
)

TENANT_SCHEMA: dict[str, pl.DataType] = {
    "tenant_id": pl.String(),
    "timezone": pl.String(),
    "currency": pl.String(),
    "emission_factor_kg_per_kwh": pl.Float64(),
}
SHIFT_SCHEMA: dict[str, pl.DataType] = {
    "tenant_id": pl.String(),
    "shift": pl.String(),
    "start_minute": pl.Int32(),
    "end_minute": pl.Int32(),
}
MACHINE_META_SCHEMA: dict[str, pl.DataType] = {
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "machine_id": pl.String(),
    "ideal_cycle_time_s": pl.Float64(),
    "rated_power_kw": pl.Float64(),
}
READING_SCHEMA: dict[str, pl.DataType] = {
    "time": TIME,
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "machine_id": pl.String(),
    "metric": pl.String(),
    "value": pl.Float64(),
}
# what the KPI reader delivers: with sensor_id, so two meters of one metric on a machine stay two
# counters (frames in READING_SCHEMA are accepted too: then each machine and metric is one series)
SERIES_READING_SCHEMA: dict[str, pl.DataType] = {
    "time": TIME,
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "machine_id": pl.String(),
    "sensor_id": pl.String(),
    "metric": pl.String(),
    "value": pl.Float64(),
}
SERIES = (*MACHINE, "sensor_id", "metric")
STATE_SCHEMA: dict[str, pl.DataType] = {
    "time": TIME,
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "machine_id": pl.String(),
    "run_state": pl.String(),
}
SEEN_SCHEMA: dict[str, pl.DataType] = {
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "machine_id": pl.String(),
    "time": TIME,
}
PERIOD_SCHEMA: dict[str, pl.DataType] = {
    "period": pl.String(),  # hour | shift | day
    "label": pl.String(),  # the shift's name
    "tenant_id": pl.String(),  # shifts are per tenant; NULL = every machine
    "period_start": TIME,
    "period_end": TIME,
}
OUTPUT_SCHEMA: dict[str, pl.DataType] = {"period": pl.String(), **KPI_SCHEMA}
WILDCARD = "*"


@dataclass(frozen=True)
class Plant:
    """Plant metadata as stored: tenant '*' and factory/machine '*' rows are defaults. A tenant's
    emission factor is the versions in `emission_factors` (the database keeps them there), or the
    `emission_factor_kg_per_kwh` of its row in `tenants` as the one version since forever (the flat
    form, for a Plant built in code); a version since forever in `emission_factors` wins."""

    tenants: pl.DataFrame  # TENANT_SCHEMA
    tariffs: pl.DataFrame  # TARIFF_SCHEMA or TARIFF_VERSION_SCHEMA (its timezone is ignored: the tenant's applies)
    shifts: pl.DataFrame  # SHIFT_SCHEMA
    machines: pl.DataFrame  # MACHINE_META_SCHEMA
    emission_factors: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=FACTOR_SCHEMA))


def _no_readings() -> pl.DataFrame:
    return pl.DataFrame(schema=SERIES_READING_SCHEMA)


@dataclass(frozen=True)
class KpiInputs:
    """Everything one range [start, end) needs. `prior` (the last reading per series before the
    range) opens the first counter and power intervals and carries the heartbeat over the range
    start; `next_readings` (the first reading per counter and power series at or after the end)
    closes the last intervals: without it the range's tail is not counted yet. `prior_states`
    carries the run state; `next_seen` (first reading per machine at or after the end, within
    gap_s) closes a trailing silence. Reading frames are SERIES_READING_SCHEMA (READING_SCHEMA
    is accepted: one sensor per machine and metric)."""

    start: datetime
    end: datetime
    readings: pl.DataFrame  # KPI metrics and drivers, in [start, end)
    prior: pl.DataFrame
    states: pl.DataFrame  # STATE_SCHEMA, in [start, end)
    prior_states: pl.DataFrame  # STATE_SCHEMA
    next_seen: pl.DataFrame  # SEEN_SCHEMA
    next_readings: pl.DataFrame = field(default_factory=_no_readings)


@dataclass(frozen=True)
class KpiOptions:
    """`max_interval_s`: a counter interval longer than this is not counted (the reader's lookback
    and lookahead must reach at least this far, or an hour and its day could disagree)."""

    gap_s: int = 300
    slot_s: int = 60
    drivers: tuple[str, ...] = ("outdoor_temp", "outdoor_pressure")
    max_interval_s: int = 86_400
    # peak demand: 0 for the maximum power draw (the highest total in force, the platform's definition
    # of peak demand kW); > 0 for the highest average over epoch-aligned intervals of this length, as
    # a utility bills demand (KPI_DEMAND_INTERVAL_S=900)
    demand_interval_s: int = 0


# ----- metadata resolution -------------------------------------------------------------------


def resolve_tenants(plant: Plant, tenant_ids: Sequence[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Per tenant: its own settings, tariff bands and shifts, else those of tenant '*'.
    Returns (tenants, tariffs with the tenant's timezone, shifts); a tenant with neither its own
    row nor a '*' row is absent (its KPIs say so)."""
    own = set(plant.tenants["tenant_id"].to_list())
    with_bands = set(plant.tariffs["tenant_id"].to_list())
    with_shifts = set(plant.shifts["tenant_id"].to_list())
    tenants, tariffs, shifts = [], [], []
    for tenant in sorted(set(tenant_ids)):
        source = tenant if tenant in own else WILDCARD
        row = plant.tenants.filter(pl.col("tenant_id") == source)
        if row.is_empty():
            continue
        row = row.with_columns(tenant_id=pl.lit(tenant))
        tenants.append(row)
        zone = row["timezone"][0] or "UTC"
        band_source = tenant if tenant in with_bands else WILDCARD
        tariffs.append(
            with_valid_from(plant.tariffs)
            .filter(pl.col("tenant_id") == band_source)
            .with_columns(tenant_id=pl.lit(tenant), timezone=pl.lit(zone))
        )
        shift_source = tenant if tenant in with_shifts else WILDCARD
        shifts.append(plant.shifts.filter(pl.col("tenant_id") == shift_source).with_columns(tenant_id=pl.lit(tenant)))

    def stack(frames: list[pl.DataFrame], schema: dict[str, pl.DataType]) -> pl.DataFrame:
        if not frames:
            return pl.DataFrame(schema=schema)
        return pl.concat([f.select(list(schema)).cast(schema) for f in frames])

    return stack(tenants, TENANT_SCHEMA), stack(tariffs, TARIFF_VERSION_SCHEMA), stack(shifts, SHIFT_SCHEMA)


def resolve_emission_factors(plant: Plant, tenant_ids: Sequence[str]) -> pl.DataFrame:
    """Per tenant, every version of its emission factor (FACTOR_SCHEMA) from the same row its other
    settings come from (its own, else tenant '*'): a tenant with its own row and no factor has none."""
    own = set(plant.tenants["tenant_id"].to_list())
    versions = with_valid_from(plant.emission_factors).select(FACTOR_SCHEMA.keys()).cast(FACTOR_SCHEMA)
    flat = plant.tenants.filter(pl.col("emission_factor_kg_per_kwh").is_not_null()).select(
        "tenant_id", pl.lit(None, TIME).alias(VALID_FROM), kg_co2_per_kwh="emission_factor_kg_per_kwh"
    )
    since_ever = set(versions.filter(pl.col(VALID_FROM).is_null())["tenant_id"].to_list())
    every = pl.concat([flat.filter(~pl.col("tenant_id").is_in(since_ever)).cast(FACTOR_SCHEMA), versions])
    out = [
        every.filter(pl.col("tenant_id") == (tenant if tenant in own else WILDCARD)).with_columns(
            tenant_id=pl.lit(tenant)
        )
        for tenant in sorted(set(tenant_ids))
    ]
    return pl.concat(out).sort("tenant_id", VALID_FROM, nulls_last=False) if out else every.clear()


def resolve_machines(machines: pl.DataFrame, metadata: pl.DataFrame) -> pl.DataFrame:
    """`machines` (tenant, factory, machine) with ideal_cycle_time_s and rated_power_kw from the
    most specific metadata row (exact beats '*', tenant before factory before machine); NULL when
    nothing matches."""
    keys = machines.select(MACHINE).unique()
    candidates = (
        keys.join(metadata.rename({c: f"m_{c}" for c in MACHINE}), how="cross")
        .filter(
            *[(pl.col(f"m_{c}") == pl.col(c)) | (pl.col(f"m_{c}") == WILDCARD) for c in MACHINE],
        )
        .with_columns(
            specificity=(pl.col("m_tenant_id") != WILDCARD).cast(pl.Int32) * 4
            + (pl.col("m_factory_id") != WILDCARD).cast(pl.Int32) * 2
            + (pl.col("m_machine_id") != WILDCARD).cast(pl.Int32)
        )
        .sort("specificity", descending=True)
        .unique(MACHINE, keep="first")
        .select(*MACHINE, "ideal_cycle_time_s", "rated_power_kw")
    )
    return keys.join(candidates, on=list(MACHINE), how="left").sort(MACHINE)


# ----- periods and schedule ------------------------------------------------------------------


def _local_instances(
    shifts: pl.DataFrame, zone: str, start: datetime, end: datetime
) -> list[tuple[str, datetime, datetime]]:
    """Every instance (name, start, end in UTC) of the shifts that overlaps [start - 1 day, end + 1 day]."""
    tz = ZoneInfo(zone)
    first = (start.astimezone(tz) - timedelta(days=2)).date()
    last = (end.astimezone(tz) + timedelta(days=1)).date()
    out = []
    day = first
    while day <= last:
        midnight = datetime(day.year, day.month, day.day)
        for name, s_min, e_min in shifts.select("shift", "start_minute", "end_minute").iter_rows():
            s_local = midnight + timedelta(minutes=s_min)
            e_local = midnight + timedelta(minutes=e_min, days=1 if e_min <= s_min else 0)
            out.append((name, s_local.replace(tzinfo=tz).astimezone(UTC), e_local.replace(tzinfo=tz).astimezone(UTC)))
        day += timedelta(days=1)
    return sorted(out, key=lambda item: item[1])


def shift_periods(tenants: pl.DataFrame, shifts: pl.DataFrame, day_start: datetime, day_end: datetime) -> pl.DataFrame:
    """The shift instances belonging to the day [day_start, day_end): those that *end* in it, so a
    night shift is reported with the day it finishes in, once it is complete."""
    rows = []
    for tenant, zone in tenants.select("tenant_id", "timezone").iter_rows():
        own = shifts.filter(pl.col("tenant_id") == tenant)
        for name, start, end in _local_instances(own, zone or "UTC", day_start, day_end):
            if day_start < end <= day_end:
                rows.append(
                    {"period": "shift", "label": name, "tenant_id": tenant, "period_start": start, "period_end": end}
                )
    return pl.DataFrame(rows, schema=PERIOD_SCHEMA) if rows else pl.DataFrame(schema=PERIOD_SCHEMA)


def fixed_periods(kind: str, start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
    """Back-to-back hours or days covering [start, end)."""
    rows, at = [], start
    while at < end:
        rows.append(
            {"period": kind, "label": None, "tenant_id": None, "period_start": at, "period_end": min(at + step, end)}
        )
        at += step
    return pl.DataFrame(rows, schema=PERIOD_SCHEMA)


def _unscheduled(tenants: pl.DataFrame, shifts: pl.DataFrame, start: datetime, end: datetime) -> dict[str, list]:
    """Per tenant with shifts: the parts of [start, end) outside every shift."""
    out: dict[str, list] = {}
    for tenant, zone in tenants.select("tenant_id", "timezone").iter_rows():
        own = shifts.filter(pl.col("tenant_id") == tenant)
        if own.is_empty():
            continue
        covered = sorted((s, e) for _, s, e in _local_instances(own, zone or "UTC", start, end))
        holes, at = [], start
        for s, e in covered:
            if s > at:
                holes.append((at, min(s, end)))
            at = max(at, e)
            if at >= end:
                break
        if at < end:
            holes.append((at, end))
        out[tenant] = [(s, e) for s, e in holes if e > s and s < end]
    return out


# ----- the time line -------------------------------------------------------------------------


def _gaps(inputs: KpiInputs, gap_s: int) -> pl.DataFrame:
    """Silences longer than gap_s between a machine's readings (any KPI metric or driver),
    bounded by the last reading before the range and the first after it when known, else by the
    range itself."""
    beats = pl.concat(
        [
            inputs.readings.select(*MACHINE, "time"),
            inputs.prior.select(*MACHINE, "time"),
            inputs.next_seen.select(*MACHINE, "time"),
        ]
    )
    machines = beats.select(MACHINE).unique()
    edges = pl.concat(
        [
            machines.with_columns(time=pl.lit(inputs.start, TIME)),
            machines.with_columns(time=pl.lit(inputs.end, TIME)),
        ]
    )
    # a range edge only bounds a silence when there is no reading beyond it
    has_before = inputs.prior.select(*MACHINE).unique().with_columns(before=pl.lit(True))
    has_after = inputs.next_seen.select(*MACHINE).unique().with_columns(after=pl.lit(True))
    edges = (
        edges.join(has_before, on=list(MACHINE), how="left")
        .join(has_after, on=list(MACHINE), how="left")
        .filter(
            ((pl.col("time") == inputs.start) & pl.col("before").is_null())
            | ((pl.col("time") == inputs.end) & pl.col("after").is_null())
        )
        .select(*MACHINE, "time")
    )
    return (
        pl.concat([beats, edges])
        .unique()
        .sort(*MACHINE, "time")
        .with_columns(gap_start=pl.col("time").shift(1).over(MACHINE))
        .filter((pl.col("time") - pl.col("gap_start")) > pl.duration(seconds=gap_s))
        .select(
            *MACHINE,
            gap_start=pl.max_horizontal("gap_start", pl.lit(inputs.start, TIME)),
            gap_end=pl.min_horizontal("time", pl.lit(inputs.end, TIME)),
        )
        .filter(pl.col("gap_end") > pl.col("gap_start"))
    )


def _state_changes(states: pl.DataFrame, prior_states: pl.DataFrame, start: datetime) -> pl.DataFrame:
    """Each machine's run state at `start` (carried from before) and every change after it.

    Of several states with one stamp (a PLC stamping whole seconds, two event ids) the least by name
    holds after it: the state the next range is carried in with (`results.kpis.read_run_states`
    picks the latest message, then the least state), so an hour and the next agree."""
    carried = prior_states.with_columns(time=pl.lit(start, TIME))
    return (
        pl.concat([carried.select(list(STATE_SCHEMA)), states.select(list(STATE_SCHEMA))])
        .filter(pl.col("run_state").is_not_null())
        .sort(*MACHINE, "time", "run_state", descending=[False, False, False, False, True])
        .filter(pl.col("run_state") != pl.col("run_state").shift(1).over(MACHINE).fill_null(""))
    )


def timeline(inputs: KpiInputs, tenants: pl.DataFrame, shifts: pl.DataFrame, gap_s: int) -> pl.DataFrame:
    """Per machine, [start, end) segments covering the range, each with one category."""
    gaps: dict[tuple, list] = {}
    for row in _gaps(inputs, gap_s).iter_rows():
        gaps.setdefault(row[:3], []).append((row[3], row[4]))
    changes: dict[tuple, list] = {}
    for row in (
        _state_changes(inputs.states, inputs.prior_states, inputs.start)
        .select(*MACHINE, "time", "run_state")
        .iter_rows()
    ):
        changes.setdefault(row[:3], []).append((row[3], row[4]))
    unscheduled = _unscheduled(tenants, shifts, inputs.start, inputs.end)
    machines = sorted(set(gaps) | set(changes) | set(_machines(inputs)))
    rows = []
    for machine in machines:
        state_at = changes.get(machine, [])
        state_times = [t for t, _ in state_at]
        machine_gaps = gaps.get(machine, [])
        holes = unscheduled.get(machine[0], [])
        points = {inputs.start, inputs.end, *state_times}
        points.update(t for interval in machine_gaps + holes for t in interval)
        ordered = sorted(p for p in points if inputs.start <= p <= inputs.end)
        for seg_start, seg_end in itertools.pairwise(ordered):
            index = bisect.bisect_right(state_times, seg_start) - 1
            state = state_at[index][1] if index >= 0 else "unknown"
            if state in PLANNED_STATES:
                category = state
            elif any(s <= seg_start and seg_end <= e for s, e in holes):
                category = "unscheduled"
            elif any(s <= seg_start and seg_end <= e for s, e in machine_gaps):
                # a silence is downtime; before the machine's first run state it is not planned busy time
                # (else a machine that never reports run states had planned busy time, and a month's
                # availability 0, from a silence alone)
                category = "unknown_no_data" if state == "unknown" else "no_data"
            else:
                category = state
            if rows and rows[-1][:3] == machine and rows[-1][5] == category and rows[-1][4] == seg_start:
                rows[-1] = (*machine, rows[-1][3], seg_end, category)
            else:
                rows.append((*machine, seg_start, seg_end, category))
    schema = {**{c: pl.String() for c in MACHINE}, "start": TIME, "end": TIME, "category": pl.String()}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _machines(inputs: KpiInputs) -> list[tuple]:
    frames = [inputs.readings, inputs.prior, inputs.states, inputs.prior_states]
    return pl.concat([f.select(MACHINE) for f in frames]).unique().sort(MACHINE).rows()


def _time_components(segments: pl.DataFrame, start: datetime, end: datetime) -> dict[tuple, dict[str, float]]:
    clipped = segments.with_columns(
        seconds=(
            pl.min_horizontal("end", pl.lit(end, TIME)) - pl.max_horizontal("start", pl.lit(start, TIME))
        ).dt.total_microseconds()
        / 1e6
    ).filter(pl.col("seconds") > 0)
    out: dict[tuple, dict[str, float]] = {}
    for *machine, category, seconds in clipped.group_by(*MACHINE, "category").agg(pl.col("seconds").sum()).iter_rows():
        out.setdefault(tuple(machine), dict.fromkeys(CATEGORIES, 0.0))[category] = seconds
    return out


# ----- interval booking ----------------------------------------------------------------------


def _series_readings(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` in SERIES_READING_SCHEMA; without a sensor_id each machine and metric is one series."""
    if "sensor_id" not in frame.columns:
        frame = frame.with_columns(sensor_id=pl.lit(""))
    return (
        frame.select(list(SERIES_READING_SCHEMA))
        .cast(SERIES_READING_SCHEMA)
        .with_columns(pl.col("sensor_id").fill_null(""))
    )


def _edges(
    start: datetime,
    end: datetime,
    periods: pl.DataFrame,
    tariffs: pl.DataFrame,
    tenant_ids: Sequence[str],
    demand_interval_s: int = 0,
    factors: pl.DataFrame | None = None,
) -> dict[str, list[datetime]]:
    """Per tenant, where intervals are cut: the range's ends, every UTC hour (so hourly and daily
    runs cut alike), every demand interval's edge, every period boundary, every edge of the
    tenant's tariff bands in force and every change of its tariff or emission factor version."""
    common = {start, end}
    for bounds in periods.select("period_start", "period_end").iter_rows():
        common.update(bounds)
    at = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while at < end:
        common.add(at)
        at += timedelta(hours=1)
    if demand_interval_s:
        at = datetime.fromtimestamp(start.timestamp() // demand_interval_s * demand_interval_s, UTC)
        step = timedelta(seconds=demand_interval_s)
        while at < end:
            if at > start:
                common.add(at)
            at += step
    bands = band_edges(tariffs, start, end)
    changes = version_edges(factors, start, end) if factors is not None else {}
    return {tenant: sorted(common | set(bands.get(tenant, ())) | set(changes.get(tenant, ()))) for tenant in tenant_ids}


def _per_tenant(
    frame: pl.DataFrame,
    edges: dict[str, list[datetime]],
    cut: Callable[[pl.DataFrame, list[datetime]], pl.DataFrame],
) -> pl.DataFrame:
    """`cut` applied to each tenant's rows with that tenant's edges (band edges are local times)."""
    parts = [cut(frame.filter(pl.col("tenant_id") == tenant), tenant_edges) for tenant, tenant_edges in edges.items()]
    return pl.concat(parts) if parts else cut(frame.clear(), [])


@dataclass(frozen=True)
class Booked:
    """A range's counters and demand per segment between consecutive edges: a period sums the
    segments inside it. `counters`: *MACHINE, metric, seg_start, seg_end, amount, increments,
    resets, band, price (band and price for energy); `held`: *MACHINE, sensor_id, seg_start,
    seg_end, kws, held_s; `peaks`: the highest demand point per machine and segment (POINT_SCHEMA
    and the segment); `last_seen`: *MACHINE, sensor_id, metric, last, the newest reading of each
    counter series (what is after it is not counted yet)."""

    counters: pl.DataFrame
    held: pl.DataFrame
    peaks: pl.DataFrame
    last_seen: pl.DataFrame
    metered: frozenset[tuple] = frozenset()  # machines whose demand comes from their energy meters


def book(
    inputs: KpiInputs,
    periods: pl.DataFrame,
    tariffs: pl.DataFrame,
    options: KpiOptions,
    factors: pl.DataFrame | None = None,
) -> Booked:
    """Book the counters and power samples of `inputs` (prior, range and next readings) into the
    segments of `periods`, the tariff bands and the tariff and emission factor versions (energy_kpis.py
    has the rules; `factors`: FACTOR_SCHEMA, none = no factor for anyone). Each frame comes sorted
    by its keys and segment, so a period adds the same numbers in the same order on every run and
    whatever order the readings arrived in: float addition is not associative, and Polars' joins and
    group-bys give rows in no fixed order (day KPIs differed in their last bits from run to run)."""
    start = min(inputs.start, periods["period_start"].min())
    end = max(inputs.end, periods["period_end"].max())
    known = pl.concat(
        [
            _series_readings(f).filter(pl.col("metric").is_in((*COUNTERS, POWER)))
            for f in (inputs.prior, inputs.readings, inputs.next_readings)
        ]
    )
    tenant_ids = sorted(set(known["tenant_id"].to_list()))
    factors = pl.DataFrame(schema=FACTOR_SCHEMA) if factors is None else factors
    edges = _edges(start, end, periods, tariffs, tenant_ids, options.demand_interval_s, factors)

    counters = known.filter(pl.col("metric").is_in(COUNTERS))
    intervals = counter_intervals(counters, SERIES, options.max_interval_s)
    closing = pl.col("t1") <= pl.col("seg_end")  # the part a reading closes
    parts = (
        _per_tenant(intervals, edges, split_intervals)
        .group_by(*MACHINE, "metric", "seg_start", "seg_end")
        .agg(
            amount=spread("increment").sum(),
            increments=closing.sum().cast(pl.Int64),
            resets=(closing & pl.col("reset")).sum().cast(pl.Int64),
        )
        .sort(*MACHINE, "metric", "seg_start")
    )
    priced = emission_factor_in_force(
        price_increments(parts.filter(pl.col("metric") == ENERGY).with_columns(time="seg_start"), tariffs), factors
    )
    counted = pl.concat(
        [
            priced.drop("time"),
            parts.filter(pl.col("metric") != ENERGY).with_columns(
                band=pl.lit(None, pl.String),
                price=pl.lit(None, pl.Float64),
                before_tariff=pl.lit(None, pl.Boolean),
                kg_co2_per_kwh=pl.lit(None, pl.Float64),
            ),
        ]
    )

    power_key = (*MACHINE, "sensor_id")
    power = power_intervals(known.filter(pl.col("metric") == POWER), power_key, options.gap_s)
    metered = meter_demand(intervals, power)
    power = pl.concat([power, metered.select(power.columns).cast(power.schema)])
    held = (
        _per_tenant(power.filter("held"), edges, split_intervals)
        .group_by(*power_key, "seg_start", "seg_end")
        .agg(kws=(pl.col("value") * pl.col("part_us") / 1e6).sum(), held_s=(pl.col("part_us") / 1e6).sum())
        .sort(*power_key, "seg_start")
    )
    points = demand_points(power, power_key, periods["period_end"].to_list())
    peaks = (
        _per_tenant(points, edges, lambda frame, tenant_edges: segment_points(frame, "time", tenant_edges))
        .group_by(*MACHINE, "seg_start", "seg_end")
        .agg(
            time=pl.col("time").filter(pl.col("kw") == pl.col("kw").max()).min(),
            kw=pl.col("kw").max(),
            samples=pl.col("samples").sum(),
        )
        .sort(*MACHINE, "seg_start")
    )
    last_seen = counters.group_by(*MACHINE, "sensor_id", "metric").agg(last=pl.col("time").max())
    return Booked(counted, held, peaks, last_seen, frozenset(metered.select(MACHINE).unique().iter_rows()))


def meter_demand(intervals: pl.DataFrame, power: pl.DataFrame) -> pl.DataFrame:
    """Demand from the energy meters' intervals for the machines without any power series in `power`
    (`power_intervals`' frame): an interval's increment x 3600 / its seconds is the average demand over
    it, held over the interval as a power sample stamped at its end would be. A plant's commonest energy
    data is a kWh meter read every 15 minutes, and that is how a utility reads demand off it; where a
    machine has power readings they are used alone (the two would count its demand twice).
    `intervals`: `counter_intervals` of every counter series. Returns `power`'s columns."""
    seconds = (pl.col("t1") - pl.col("t0")).dt.total_microseconds() / 1e6
    return (
        intervals.filter((pl.col("metric") == ENERGY) & (seconds > 0))
        .join(power.select(MACHINE).unique(), on=list(MACHINE), how="anti")
        .select(*MACHINE, "sensor_id", "t0", "t1", value=pl.col("increment") * 3600 / seconds, held=pl.lit(True))
    )


def _open_seconds(last_seen: pl.DataFrame, start: datetime, end: datetime) -> dict[tuple, float]:
    """Per (machine, metric): the longest tail of [start, end) after a series' newest reading,
    which is not counted until the reading closing it arrives."""
    return {
        (*r[:3], r[3]): r[4]
        for r in last_seen.filter(pl.col("last") < end)
        .with_columns(
            open_s=(pl.lit(end, TIME) - pl.max_horizontal("last", pl.lit(start, TIME))).dt.total_microseconds() / 1e6
        )
        .group_by(*MACHINE, "metric")
        .agg(pl.col("open_s").max())
        .iter_rows()
    }


# ----- KPIs ----------------------------------------------------------------------------------


def _row(period: dict, machine: tuple, kpi: K.Kpi, value: float | None, reason: str | None, **details) -> dict:
    return {
        "period": period["period"],
        **kpi_row(
            dict(zip(MACHINE, machine, strict=True)),
            period["period_start"],
            period["period_end"],
            kpi,
            value,
            reason,
            **details,
        ),
    }


def _ratio(numerator: float | None, denominator: float | None, why_numerator: str, why_zero: str) -> tuple:
    if numerator is None:
        return None, why_numerator
    if denominator is None or denominator <= 0:
        return None, why_zero
    return numerator / denominator, None


def _counter_reason(metric: str, open_s: float) -> str:
    if open_s > 0:
        return f"the {metric} counter's interval over the period has not closed yet (no reading after it)"
    if metric == TOTAL:
        return "no production counter (count_total) readings in the period"
    return "no good-count (count_good) readings in the period"


NO_STATES = "no run-state data for the machine in the period"


@dataclass(frozen=True)
class _Counts:
    """One machine's production counters over one period, and why each is NULL when it is."""

    total: float | None
    good: float | None
    open_s: dict[str, float]  # per counter metric, seconds at the period's end not counted yet

    @property
    def no_total(self) -> str:
        return _counter_reason(TOTAL, self.open_s.get(TOTAL, 0.0))

    @property
    def no_good(self) -> str:
        return _counter_reason(GOOD, self.open_s.get(GOOD, 0.0))


@dataclass(frozen=True)
class _Account:
    """One machine's time over one period: seconds per category (CATEGORIES), whether any run
    state was seen, planned downtime (planned states and time outside every shift) and planned
    busy time (the period less planned downtime and unknown time)."""

    seconds: dict[str, float]
    has_states: bool
    planned: float
    busy: float

    @classmethod
    def of(cls, period: dict, times: dict[str, float] | None) -> _Account:
        t = times or dict.fromkeys(CATEGORIES, 0.0)
        period_s = (period["period_end"] - period["period_start"]).total_seconds()
        planned = t["planned_stop"] + t["maintenance"] + t["unscheduled"]
        # a silence after a known state is the state's time too (an outage: availability 0, not "no
        # run-state data", as the range's sum of the period's terms already counted it)
        has_states = (
            times is not None and sum(t[c] for c in ("running", "idle", "fault", "no_data", *PLANNED_STATES)) > 0
        )
        return cls(t, has_states, planned, period_s - planned - t["unknown"] - t["unknown_no_data"])


def _count_rows(period: dict, machine: tuple, counts: _Counts, energy_kwh: float | None) -> list[dict]:
    """production_count, good_count and the energy per unit."""
    total, open_s = counts.total, counts.open_s
    sec, sec_reason = _ratio(
        energy_kwh,
        total,
        "no energy counter readings in the period",
        "no units produced in the period" if total is not None else counts.no_total,
    )
    return [
        _row(
            period,
            machine,
            K.PRODUCTION_COUNT,
            total,
            counts.no_total,
            **({"open_s": open_s[TOTAL]} if open_s.get(TOTAL) else {}),
        ),
        _row(
            period,
            machine,
            K.GOOD_COUNT,
            counts.good,
            counts.no_good,
            **({"open_s": open_s[GOOD]} if open_s.get(GOOD) else {}),
        ),
        _row(period, machine, K.SEC_KWH_PER_UNIT, sec, sec_reason, energy_kwh=energy_kwh, units=total),
    ]


def _time_rows(period: dict, machine: tuple, account: _Account) -> list[dict]:
    """Run, idle, planned, unplanned and fault time."""
    t, has_states = account.seconds, account.has_states
    return [
        _row(period, machine, K.RUN_TIME_S, t["running"] if has_states else None, NO_STATES),
        _row(period, machine, K.IDLE_TIME_S, t["idle"] if has_states else None, NO_STATES),
        _row(
            period,
            machine,
            K.PLANNED_DOWNTIME_S,
            account.planned if has_states or t["unscheduled"] else None,
            NO_STATES,
            planned_stop_s=t["planned_stop"],
            maintenance_s=t["maintenance"],
            unscheduled_s=t["unscheduled"],
        ),
        _row(
            period,
            machine,
            K.DOWNTIME_S,
            t["fault"] + t["no_data"] + t["unknown_no_data"],
            None,
            fault_s=t["fault"],
            gap_s=t["no_data"] + t["unknown_no_data"],
        ),
        _row(period, machine, K.FAULT_TIME_S, t["fault"], None),
    ]


def _performance(account: _Account, counts: _Counts, ideal: float | None) -> tuple[float | None, str | None]:
    if ideal is None:
        return None, "no ideal cycle time for the machine (machine_metadata)"
    if counts.total is None:
        return None, counts.no_total
    if not account.has_states:
        return None, NO_STATES
    return _ratio(ideal * counts.total, account.seconds["running"], counts.no_total, "no run time in the period")


def _oee_rows(period: dict, machine: tuple, account: _Account, counts: _Counts, ideal: float | None) -> list[dict]:
    """Availability, performance, quality, their product OEE, and the production rate."""
    running, busy, total, good = account.seconds["running"], account.busy, counts.total, counts.good
    if not account.has_states:
        availability, a_reason = None, NO_STATES
    else:
        availability, a_reason = _ratio(running, busy, NO_STATES, "no planned production time in the period")
    performance, p_reason = _performance(account, counts, ideal)
    quality, q_reason = _ratio(good, total, counts.no_good, "no units produced in the period")
    # OEE = good x ideal cycle time / planned busy time, the textbook's single division and what
    # A x P x Q = (run / busy) (ideal x total / run) (good / total) reduces to where all three are
    # defined; it needs only the good count, so planned time in which nothing was made (or the machine
    # never ran) scores 0 where performance and quality are 0 / 0. It is unknown only without planned
    # production time (no run states, or all of it planned down), an ideal cycle time or a good count.
    # (a missing term is named by the part it belongs to, with that part's own reason)
    terms = {K.AVAILABILITY: (availability, a_reason), K.PERFORMANCE: (ideal, p_reason), K.QUALITY: (good, q_reason)}
    missing = next(((kpi.name, why) for kpi, (value, why) in terms.items() if value is None), None)
    oee = None if missing else good * ideal / busy
    rate, r_reason = _ratio(
        total,
        running / 3600 if account.has_states else None,
        counts.no_total,
        "no run time in the period" if account.has_states else NO_STATES,
    )
    above_1 = {"above_1": "ideal cycle time may be too long"} if performance is not None and performance > 1 else {}
    return [
        _row(
            period,
            machine,
            K.AVAILABILITY,
            availability,
            a_reason,
            run_time_s=running,
            planned_busy_s=busy,
            unknown_s=account.seconds["unknown"] + account.seconds["unknown_no_data"],
        ),
        _row(period, machine, K.PERFORMANCE, performance, p_reason, ideal_cycle_time_s=ideal, **above_1),
        _row(period, machine, K.QUALITY, quality, q_reason, good=good, total=total),
        _row(
            period,
            machine,
            K.OEE,
            oee,
            f"{missing[0]}: {missing[1]}" if missing else None,
            availability=availability,
            performance=performance,
            quality=quality,
            # the terms a longer range's OEE adds up (kpi_catalog.OEE)
            ideal_cycle_time_s=ideal,
            planned_busy_s=busy if account.has_states else None,
        ),
        _row(period, machine, K.PRODUCTION_RATE_PER_H, rate, r_reason),
    ]


def _production_rows(
    period: dict,
    machine: tuple,
    times: dict[str, float] | None,
    counts: _Counts,
    energy_kwh: float | None,
    meta: dict,
) -> list[dict]:
    """The production, time and OEE KPIs of one machine and period."""
    account = _Account.of(period, times)
    return [
        *_count_rows(period, machine, counts, energy_kwh),
        *_time_rows(period, machine, account),
        *_oee_rows(period, machine, account, counts, meta.get("ideal_cycle_time_s")),
    ]


@dataclass(frozen=True)
class _Range:
    """What every period of a range reads, computed once: the machines' metadata, their time
    lines, the booked counters and demand, and the tenants' emission factors."""

    meta: dict[tuple, dict]
    segments: pl.DataFrame
    booked: Booked
    factors: pl.DataFrame  # FACTOR_SCHEMA: every version of the tenants' emission factors
    options: KpiOptions


@dataclass(frozen=True)
class _Period:
    """One period's measurements per machine, read by `_machine_rows`."""

    energy_rows: dict[tuple, list[dict]]
    kwh: dict[tuple, float]
    counts: dict[str, dict[tuple, float]]
    open_s: dict[tuple, float]
    times: dict[tuple, dict[str, float]]
    covered: dict[tuple, int]
    slots_total: int
    drivers: dict[tuple, float]


def _measure(context: _Range, readings: pl.DataFrame, period: dict, scope: pl.DataFrame) -> _Period:
    """The energy KPIs of the machines in `scope` over one period, and what the other KPIs need."""
    start, end, options = period["period_start"], period["period_end"], context.options
    booked = context.booked
    inside = (pl.col("seg_start") >= start) & (pl.col("seg_end") <= end)
    counters = booked.counters.filter(inside)
    open_s = _open_seconds(booked.last_seen, start, end)
    energy = energy_kpis(
        counters.filter(pl.col("metric") == ENERGY).rename({"amount": "kwh"}),
        booked.held.filter(inside),
        booked.peaks.filter(inside).select(list(POINT_SCHEMA)),
        context.factors,
        scope,
        start=start,
        end=end,
        open_s={m[:3]: seconds for m, seconds in open_s.items() if m[3] == ENERGY},
        demand_interval_s=options.demand_interval_s,
        metered=booked.metered,
    ).with_columns(period=pl.lit(period["period"]))
    kwh = {r[:3]: r[3] for r in energy.filter(pl.col("kpi") == K.ENERGY_KWH.name).select(*MACHINE, "value").iter_rows()}
    counts: dict[str, dict[tuple, float]] = {TOTAL: {}, GOOD: {}}
    for *machine, metric, amount in (
        counters.filter(pl.col("metric").is_in((TOTAL, GOOD)))
        .group_by(*MACHINE, "metric")
        .agg(pl.col("amount").sum())
        .iter_rows()
    ):
        counts[metric][tuple(machine)] = amount
    period_readings = readings.filter((pl.col("time") >= start) & (pl.col("time") < end))
    slot = pl.col("time").dt.epoch("s") // options.slot_s
    energy_rows: dict[tuple, list[dict]] = {}
    for row in energy.select(list(OUTPUT_SCHEMA)).to_dicts():
        energy_rows.setdefault((row["tenant_id"], row["factory_id"], row["machine_id"]), []).append(row)
    return _Period(
        energy_rows=energy_rows,
        kwh=kwh,
        counts=counts,
        open_s=open_s,
        times=_time_components(context.segments, start, end),
        covered={r[:3]: r[3] for r in period_readings.group_by(MACHINE).agg(slot.n_unique()).iter_rows()},
        slots_total=-(-int((end - start).total_seconds()) // options.slot_s),
        drivers={
            (r[0], *r[1:4]): r[4]
            for r in period_readings.filter(pl.col("metric").is_in(options.drivers))
            .group_by("metric", *MACHINE)
            .agg(pl.col("value").sort_by("time", "value").mean())  # one order whatever order the rows came in
            .iter_rows()
        },
    )


def _machine_rows(context: _Range, period: dict, machine: tuple, measured: _Period) -> list[dict]:
    """Every KPI row of one machine and period (a shift's carry its name in details)."""
    options = context.options
    counts = _Counts(
        measured.counts[TOTAL].get(machine),
        measured.counts[GOOD].get(machine),
        {metric: measured.open_s.get((*machine, metric), 0.0) for metric in (TOTAL, GOOD)},
    )
    rows = measured.energy_rows.get(machine, [])
    rows += _production_rows(
        period,
        machine,
        measured.times.get(machine),
        counts,
        measured.kwh.get(machine),
        context.meta.get(machine, {}),
    )
    rows.append(
        _row(
            period,
            machine,
            K.DATA_COMPLETENESS_PCT,
            100.0 * measured.covered.get(machine, 0) / measured.slots_total,
            None,
            slots=measured.slots_total,
            slots_with_data=measured.covered.get(machine, 0),
            slot_s=options.slot_s,
        )
    )
    for driver in options.drivers:
        rows.append(
            _row(
                period,
                machine,
                K.driver_kpi(driver),
                measured.drivers.get((driver, *machine)),
                f"no {driver} readings in the period",
            )
        )
    if period["label"] is not None:
        for row in rows:
            details = json.loads(row["details"]) if row["details"] else {}
            row["details"] = json.dumps({"shift": period["label"], **details}, default=str, sort_keys=True)
    return rows


def machine_kpis(
    inputs: KpiInputs, periods: pl.DataFrame, plant: Plant, options: KpiOptions = KpiOptions()
) -> pl.DataFrame:
    """KPI rows (OUTPUT_SCHEMA) for every period in `periods` and every machine seen in the range
    (a shift period only for its tenant's machines)."""
    machines = _machines(inputs)
    if not machines or periods.is_empty():
        return pl.DataFrame(schema=OUTPUT_SCHEMA)
    machine_frame = pl.DataFrame(machines, schema=list(MACHINE), orient="row")
    tenants, tariffs, shifts = resolve_tenants(plant, machine_frame["tenant_id"].unique().to_list())
    factors = resolve_emission_factors(plant, tenants["tenant_id"].to_list())
    context = _Range(
        meta={
            r[:3]: {"ideal_cycle_time_s": r[3], "rated_power_kw": r[4]}
            for r in resolve_machines(machine_frame, plant.machines).iter_rows()
        },
        segments=timeline(inputs, tenants, shifts, options.gap_s),
        booked=book(inputs, periods, tariffs, options, factors),
        factors=factors,
        options=options,
    )
    rows: list[dict] = []
    for period in periods.iter_rows(named=True):
        scope = (
            machine_frame
            if period["tenant_id"] is None
            else machine_frame.filter(pl.col("tenant_id") == period["tenant_id"])
        )
        if scope.is_empty():
            continue
        measured = _measure(context, inputs.readings, period, scope)
        for machine in scope.rows():
            rows += _machine_rows(context, period, machine, measured)
    if not rows:
        return pl.DataFrame(schema=OUTPUT_SCHEMA)
    return pl.DataFrame(rows, schema=OUTPUT_SCHEMA, orient="row").sort("period", "period_start", *MACHINE, "kpi")


INTERVAL_SCHEMA: dict[str, pl.DataType] = {
    "tenant_id": pl.String(),
    "factory_id": pl.String(),
    "machine_id": pl.String(),
    "start": TIME,
    "end": TIME,
    "state": pl.String(),
}


def state_intervals(states: pl.DataFrame, prior_states: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """Run-state intervals within [start, end) per machine (INTERVAL_SCHEMA): a state holds from
    its message to the next different one; the prior state (before `start`) holds from `start`."""
    return (
        _state_changes(states, prior_states, start)
        .with_columns(next=pl.col("time").shift(-1).over(MACHINE))
        .select(
            *MACHINE,
            start=pl.col("time"),
            end=pl.col("next").fill_null(pl.lit(end, TIME)),
            state=pl.col("run_state"),
        )
        .filter(pl.col("end") > pl.col("start"))
        .cast(INTERVAL_SCHEMA)
    )
