"""Energy KPIs of one period per machine (energy, time-of-use cost, carbon, peak and average
demand, load factor) and the interval booking every counter and demand KPI rests on.

Every KPI row carries a value or, when the period gives nothing to compute it from, NULL with a
reason (`null_reason`): no readings, zero peak, no tariff for the tenant. Never an exception, never
a fake 0. The period and the machine metadata (tariffs, emission factors) come from the caller.

Booking rules (docs/kpis.md works them through by hand). Readings report at the END of what they
measure, so a value stamped t1 is about the interval (t0, t1] back to the previous reading of the
same series at t0. A series is (tenant, factory, machine, sensor_id, metric): two meters on one
machine are two counters, never interleaved; the machine's KPI sums its series.

* Counters (energy kWh meters, production counters): the increment of (t0, t1] is `value -
  previous`, or the value itself when the counter went down (a reset: the meter was replaced or
  rolled over and counts from 0 again); a decrease within 1e-9 of the value (or 1e-9 absolute) is
  float jitter, booked as 0, not a reset (COUNTER_JITTER_REL). It is spread over (t0, t1] IN PROPORTION TO TIME: every
  period and every tariff band gets increment x (its part of (t0, t1]) / (t1 - t0), one division,
  so whole-interval parts keep the increment exactly. A reading exactly on a boundary therefore
  belongs wholly to the period (band) that ends there. Across a silence the meter only knows the
  total, so the increment is spread evenly over the silence as well; an interval longer than
  `max_interval_s` is not counted at all (the counter restarts from its next reading), which keeps
  an hour, a shift and a day agreeing whatever range they were computed in.
  A period needs each series' last reading before it and its FIRST reading after it: an interval
  whose closing reading has not arrived yet is not counted yet (the KPI's details say how many
  seconds are still open) and is counted when the period is recomputed.
* Tariffs: intervals are cut at every band edge (local minute of day in the tenant's timezone), so
  each part lies in one band and is priced at it.
* Demand: a power sample at t1 stands for (t0, t1] back to the previous sample of its series (the
  same interval-ending convention), unless that interval is longer than max(gap_s, 2 x the series'
  median sampling interval): then it is not held (the sample counts only for an instantaneous
  peak), so a 15-minute meter works with a 300 s gap while an outage is not bridged. Average demand
  = integral of held power dt / held seconds, per series, summed over the machine's series. Peak
  demand, with a demand interval (`demand_interval_s` > 0, e.g. 900: KPI_DEMAND_INTERVAL_S), = the
  highest demand-interval average (the machine's held kW s / held s per series inside each
  epoch-aligned interval, summed over its series), as a utility bills it; without one (0, the
  default: "maximum power draw"), the instantaneous peak: the
  highest total demand in force during the period: at every sample stamp in (start, end) and at the
  period end, the sum over the machine's series of the sample stamped there, else of the held sample
  in force (a step function only changes at stamps, so this is its exact maximum). With one series
  that is the highest sample stamped in (start, end], or the held sample that closes the period's
  last interval when it is stamped after the end (it stands for the end of the period too; without
  it the average could exceed the peak). Load factor = average / peak (0..1). A machine without
  power readings takes its demand from its energy meters' intervals (machine_kpis.meter_demand:
  increment x 3600 / the interval's seconds, held over it), under the same rules.

Mechanics: `split_intervals` cuts intervals at every edge (period boundaries, UTC hours, band
edges) into parts, each inside one segment between consecutive edges; `segment_points` puts a
stamp into the segment (start, end] holding it. The caller aggregates parts per segment once, and a
period is then a sum over its segments: no period ever re-reads the readings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from analytics_platform.transforms import kpi_catalog as K
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
# Tariffs and emission factors change over time: a tariff version is all of a tenant's bands with one
# `valid_from`, in force from that instant until the next version's; a NULL valid_from is in force since
# forever (the flat plant.yaml form, the database's -infinity). A TARIFF_SCHEMA frame without the column
# is one version since forever. The version in force at t is the latest valid_from <= t; before a
# tenant's first version there is none (its energy is not priced, or has no carbon, and says why).
VALID_FROM = "valid_from"
TARIFF_VERSION_SCHEMA: dict[str, pl.DataType] = {**TARIFF_SCHEMA, VALID_FROM: TIME}
FACTOR_SCHEMA: dict[str, pl.DataType] = {
    "tenant_id": pl.String(),
    VALID_FROM: TIME,  # NULL: since forever
    "kg_co2_per_kwh": pl.Float64(),
}
# what energy_kpis reads: energy parts, held power parts and demand points of ONE period
ENERGY_PART_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in MACHINE},
    "kwh": pl.Float64(),
    "band": pl.String(),
    "price": pl.Float64(),
    "before_tariff": pl.Boolean(),  # before the tenant's first tariff version (optional: absent = false)
    "kg_co2_per_kwh": pl.Float64(),  # the factor in force, NULL before the first (optional: absent = the
    # tenant's one factor from energy_kpis' `emission_factors`)
    "increments": pl.Int64(),  # readings closing an interval inside the period
    "resets": pl.Int64(),  # ... of which the counter went down
}
HELD_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in MACHINE},
    "sensor_id": pl.String(),
    "kws": pl.Float64(),  # integral of held power, kW x s
    "held_s": pl.Float64(),
}
POINT_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in MACHINE},
    "time": TIME,
    "kw": pl.Float64(),  # the machine's total demand in force there
    "samples": pl.Int64(),  # power samples stamped there
}


# A counter that goes down by less than this share of its value (or this much, near 0) has not
# been reset: a float register's last-digit jitter (1000.0000001 -> 1000.0) is no change, where a
# reset would book the whole value again. Real resets drop to near 0. A wrap (a 16/32-bit register
# rolling over) is booked as a reset too, counting only the value after it: telling the two apart
# needs the register's width, which the readings do not carry.
COUNTER_JITTER_REL = 1e-9
COUNTER_JITTER_ABS = 1e-9


def _went_down() -> pl.Expr:
    """The counter dropped (by more than the jitter tolerance) from `previous` to `value`."""
    tolerance = pl.max_horizontal(pl.col("previous").abs() * COUNTER_JITTER_REL, pl.lit(COUNTER_JITTER_ABS))
    return pl.col("value") < pl.col("previous") - tolerance


def _increment() -> pl.Expr:
    """`value` after a reset; else the rise since `previous`, 0 for a decrease within the jitter."""
    rise = (pl.col("value") - pl.col("previous")).clip(lower_bound=0.0)
    return pl.when(pl.col("reset")).then(pl.col("value")).otherwise(rise)


def counter_increments(readings: pl.DataFrame, prior: pl.DataFrame, key: Sequence[str]) -> pl.DataFrame:
    """Increments of cumulative counters, each stamped with the reading that closes it:
    `readings` (time, *key, value) in a range, `prior` (*key, value) the last reading before it.
    Returns time, *key, increment, reset. For event-style rules (a counter standing still); KPIs
    book increments over their interval with `counter_intervals` instead."""
    carried = prior.select(*key, "value", time=pl.lit(None, TIME), carried=pl.lit(True))
    current = readings.select(*key, "value", pl.col("time").cast(TIME), carried=pl.lit(False))
    ordered = pl.concat([carried.select(current.columns), current]).sort(*key, pl.col("carried").not_(), "time")
    with_previous = ordered.with_columns(previous=pl.col("value").shift(1).over(key))
    return (
        with_previous.filter(~pl.col("carried") & pl.col("previous").is_not_null())
        .with_columns(reset=_went_down())
        .select("time", *key, increment=_increment(), reset="reset")
    )


def _by_series(frame: pl.DataFrame, key: Sequence[str], *then: str) -> tuple[pl.DataFrame, pl.Expr]:
    """`frame` sorted by series, time (and `then`), with an integer series id `_sid`, and the
    expression "this row continues the previous row's series". Sorting on one integer instead of
    four or five strings is several times faster (a day of 100 machines is ~1M power samples)."""
    ordered = frame.with_columns(_sid=pl.struct(*key).rank("dense")).sort("_sid", "time", *then)
    return ordered, pl.col("_sid") == pl.col("_sid").shift(1)


def counter_intervals(readings: pl.DataFrame, key: Sequence[str], max_interval_s: int) -> pl.DataFrame:
    """The intervals (t0, t1] between consecutive readings of each counter series and their
    increments. `readings` (time, *key, value): every known reading, the last one before the range
    and the first one after it included. An interval longer than `max_interval_s` is dropped (the
    counter restarts from its next reading). Returns *key, t0, t1, increment, reset."""
    ordered, same_series = _by_series(readings.select(pl.col("time").cast(TIME), *key, "value"), key, "value")
    return (
        ordered.with_columns(
            t0=pl.when(same_series).then(pl.col("time").shift(1)),
            previous=pl.when(same_series).then(pl.col("value").shift(1)),
        )
        .filter(
            pl.col("previous").is_not_null() & ((pl.col("time") - pl.col("t0")) <= pl.duration(seconds=max_interval_s))
        )
        .with_columns(reset=_went_down())
        .select(*key, "t0", t1="time", increment=_increment(), reset="reset")
    )


def power_intervals(samples: pl.DataFrame, key: Sequence[str], gap_s: int) -> pl.DataFrame:
    """Each power sample with the interval it stands for, (t0, t1] back to the previous sample of
    its series, and whether that interval is held: not longer than max(gap_s, 2 x the series' median
    sampling interval). The first sample of a series has no interval (t0 NULL, not held).
    Returns *key, t0, t1, value, held."""
    ordered, same_series = _by_series(samples.select(pl.col("time").cast(TIME), *key, "value"), key)
    length = (pl.col("time") - pl.col("t0")).dt.total_microseconds() / 1e6
    return (
        ordered.with_columns(t0=pl.when(same_series).then(pl.col("time").shift(1)))
        .with_columns(length_s=length)
        .with_columns(limit_s=pl.max_horizontal(pl.lit(float(gap_s)), 2 * pl.col("length_s").median().over("_sid")))
        .select(
            *key,
            "t0",
            t1="time",
            value="value",
            held=pl.col("t0").is_not_null() & (pl.col("length_s") > 0) & (pl.col("length_s") <= pl.col("limit_s")),
        )
    )


def with_valid_from(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with a `valid_from` column: NULL (since forever) where it has none."""
    return frame if VALID_FROM in frame.columns else frame.with_columns(pl.lit(None, TIME).alias(VALID_FROM))


def _version_starts(frame: pl.DataFrame) -> list[datetime | None]:
    """The distinct valid_from of `frame`'s versions in order, None (since forever) first."""
    starts = set(frame[VALID_FROM].to_list())
    return ([None] if None in starts else []) + sorted(v for v in starts if v is not None)


def _version_in_force(times: pl.Series, starts: list[datetime | None]) -> pl.Series:
    """Per time, the index into `starts` (`_version_starts`) of the version in force, -1 for none."""
    dated = pl.Series(VALID_FROM, [v for v in starts if v is not None], dtype=TIME)
    since_ever = 1 if starts and starts[0] is None else 0
    return dated.search_sorted(times.cast(TIME), side="right").cast(pl.Int64) - 1 + since_ever


def version_edges(versions: pl.DataFrame, start: datetime, end: datetime) -> dict[str, list[datetime]]:
    """Per tenant, the instants in (start, end) where one of its versions (tariffs or emission
    factors: tenant_id, valid_from) comes into force: a part must not straddle two versions."""
    out: dict[str, list[datetime]] = {}
    for (tenant,), frame in with_valid_from(versions).group_by("tenant_id"):
        out[tenant] = [v for v in _version_starts(frame) if v is not None and start < v < end]
    return out


def band_edges(tariffs: pl.DataFrame, start: datetime, end: datetime) -> dict[str, list[datetime]]:
    """Per tenant, the UTC instants in (start, end) where one of its tariff bands starts or ends
    (TARIFF_SCHEMA, each tenant's bands in its own `timezone`), and where a tariff version comes into
    force (`valid_from`, TARIFF_VERSION_SCHEMA): where intervals must be cut so that every part is
    priced at one band of one version. A version's band edges are cut only while it is in force, so
    a future version's different bands leave today's parts (and figures) exactly as they were. (A band
    edge inside a DST gap does not exist locally; the band then changes at the transition itself, a
    whole UTC hour, where machine_kpis cuts too. An edge inside the hour a DST change repeats is cut
    at both of its occurrences.)"""
    out: dict[str, list[datetime]] = {}
    for (tenant, zone), bands in with_valid_from(tariffs).group_by("tenant_id", "timezone"):
        tz = ZoneInfo(zone or "UTC")
        starts = _version_starts(bands)
        edges = set()
        for number, valid_from in enumerate(starts):
            until = starts[number + 1] if number + 1 < len(starts) else None
            low = start if valid_from is None else max(start, valid_from)
            high = end if until is None else min(end, until)
            if low >= high:
                continue
            if valid_from is not None and start < valid_from < end:
                edges.add(valid_from)
            version = bands.filter(
                pl.col(VALID_FROM).is_null() if valid_from is None else pl.col(VALID_FROM) == valid_from
            )
            minutes = sorted(set(version["start_minute"].to_list()) | set(version["end_minute"].to_list()))
            day = (low.astimezone(tz) - timedelta(days=1)).date()
            last = (high.astimezone(tz) + timedelta(days=1)).date()
            while day <= last:
                midnight = datetime(day.year, day.month, day.day)
                for minute in minutes:
                    for at in _occurrences(midnight + timedelta(minutes=minute), tz):
                        if low < at < high:
                            edges.add(at)
                day += timedelta(days=1)
        out.setdefault(tenant, []).extend(sorted(edges))
    return out


def _occurrences(local: datetime, tz: ZoneInfo) -> list[datetime]:
    """The UTC instants of a naive local time: two where the clock goes back and repeats it (fold 0,
    then 1: 02:30 in Berlin on the last Sunday of October is 00:30Z and 01:30Z, and the repeated hour
    changes band at each), else one (a time the clock skips is read with the offset before, fold 0)."""
    first, second = local.replace(tzinfo=tz, fold=0), local.replace(tzinfo=tz, fold=1)
    if first.utcoffset() > second.utcoffset():  # repeated: the earlier offset is the larger one
        return [first.astimezone(UTC), second.astimezone(UTC)]
    return [first.astimezone(UTC)]


def _segments(edges: Iterable[datetime]) -> tuple[pl.Series, pl.DataFrame]:
    """The sorted edges and the segments between them: _k (Int64), seg_start, seg_end."""
    bounds = pl.Series("edge", sorted(set(edges)), dtype=TIME)
    segments = pl.DataFrame(
        {"_k": pl.int_range(0, max(bounds.len() - 1, 0), eager=True), "seg_start": bounds[:-1], "seg_end": bounds[1:]}
    ).with_columns(pl.col("_k").cast(pl.Int64))
    return bounds, segments


def split_intervals(intervals: pl.DataFrame, edges: Iterable[datetime]) -> pl.DataFrame:
    """Cut each interval (t0, t1] of `intervals` at `edges`: one row per part inside a segment
    (seg_start, seg_end] between consecutive edges, with part_us (the part's length) and length_us
    (the interval's); parts outside the first and last edge are dropped. A zero-length interval
    (two readings with one stamp) is one part of the segment holding its stamp. Spread a quantity
    over the parts with `spread`."""
    bounds, segments = _segments(edges)
    columns = {**intervals.schema, "seg_start": TIME, "seg_end": TIME, "part_us": pl.Int64(), "length_us": pl.Int64()}
    if intervals.is_empty() or segments.is_empty():
        return pl.DataFrame(schema=columns)
    first = bounds.search_sorted(intervals["t0"], side="right").cast(pl.Int64)  # edges <= t0
    last = bounds.search_sorted(intervals["t1"], side="left").cast(pl.Int64)  # edges < t1
    return (
        intervals.with_columns(_k=pl.int_ranges(pl.min_horizontal(first, last) - 1, last))
        .explode("_k")
        .join(segments, on="_k", maintain_order="left")
        .drop("_k")
        .with_columns(
            part_us=(pl.min_horizontal("t1", "seg_end") - pl.max_horizontal("t0", "seg_start")).dt.total_microseconds(),
            length_us=(pl.col("t1") - pl.col("t0")).dt.total_microseconds(),
        )
    )


def spread(column: str) -> pl.Expr:
    """`column` x part / interval for a part of `split_intervals`, in one division (exact when the
    part is the whole interval)."""
    return (
        pl.when(pl.col("part_us") == pl.col("length_us"))
        .then(pl.col(column))
        .otherwise(pl.col(column) * pl.col("part_us") / pl.col("length_us"))
    )


def segment_points(points: pl.DataFrame, column: str, edges: Iterable[datetime]) -> pl.DataFrame:
    """`points` with the segment (seg_start, seg_end] between consecutive `edges` that holds each
    one's `column` (a stamp on an edge belongs to the segment ending there); points outside the
    edges are dropped."""
    bounds, segments = _segments(edges)
    if points.is_empty() or segments.is_empty():
        return pl.DataFrame(schema={**points.schema, "seg_start": TIME, "seg_end": TIME})
    index = bounds.search_sorted(points[column], side="left").cast(pl.Int64) - 1
    return points.with_columns(_k=index).join(segments, on="_k", maintain_order="left").drop("_k")


def demand_points(power: pl.DataFrame, key: Sequence[str], ends: Iterable[datetime]) -> pl.DataFrame:
    """A machine's total demand (POINT_SCHEMA) at every stamp of its power samples and at every
    period end in `ends`: per series the sample stamped there, else the held sample in force (the
    first one stamped after, when its interval is held). `power` is `power_intervals` keyed by
    `key` (the machine's columns and sensor_id); points where no series has a value are dropped."""
    if power.is_empty():
        return pl.DataFrame(schema=POINT_SCHEMA)
    # integer ids for series and machines: the grid below is as long as the samples
    series = (
        power.select(key)
        .unique()
        .sort(key)
        .with_row_index("_series")
        .with_columns(_machine=pl.struct(*MACHINE).rank("dense"))
    )
    machines = series.select("_machine", *MACHINE).unique("_machine")
    samples = power.join(series.select("_series", "_machine", *key), on=list(key), maintain_order="left").select(
        "_series", "_machine", "t0", "t1", "value", "held"
    )
    ends_frame = pl.DataFrame({"time": sorted(set(ends))}, schema={"time": TIME})
    points = pl.concat(
        [samples.select("_machine", time="t1"), machines.select("_machine").join(ends_frame, how="cross")]
    ).unique()
    matched = (
        points.join(series.select("_machine", "_series"), on="_machine")
        .sort("time", "_series")
        .join_asof(
            samples.drop("_machine").sort("t1"),
            left_on="time",
            right_on="t1",
            by="_series",
            strategy="forward",
            check_sortedness=False,  # both sides are sorted by time as a whole, so within every group too
        )
        .with_columns(
            here=pl.col("t1") == pl.col("time"),
            # held and reaching back over the point: a sample's interval starts at its series' previous
            # sample, but a meter's interval after a dropped one starts later (machine_kpis.meter_demand)
            kw=pl.when((pl.col("t1") == pl.col("time")) | (pl.col("held") & (pl.col("t0") < pl.col("time")))).then(
                pl.col("value")
            ),
        )
    )
    return (
        matched.group_by("_machine", "time")
        .agg(kw=pl.col("kw").sum(), found=pl.col("kw").count(), samples=pl.col("here").fill_null(False).sum())
        .filter(pl.col("found") > 0)
        .join(machines, on="_machine")
        .select(list(POINT_SCHEMA))
        .cast(POINT_SCHEMA)
    )


def price_increments(increments: pl.DataFrame, tariffs: pl.DataFrame) -> pl.DataFrame:
    """`increments` (time, tenant_id, ...) with the `band` and `price` of the tariff in force at
    each one's local time, and `before_tariff`: true before the first version of a tenant's tariff
    (false for a tenant without any). NULL band and price where the tenant has no tariff, none is in
    force yet, or no band of the version covers the time. `tariffs` is TARIFF_SCHEMA (one version,
    since forever) or TARIFF_VERSION_SCHEMA. For a part of an interval pass its segment's start: a segment never
    straddles a band edge or a version change (`band_edges`)."""
    tariffs = with_valid_from(tariffs).select(TARIFF_VERSION_SCHEMA.keys()).cast(TARIFF_VERSION_SCHEMA)
    zones = dict(tariffs.select("tenant_id", "timezone").unique("tenant_id").iter_rows())
    indexed = increments.with_row_index("_row")
    priced = []
    for tenant, zone in zones.items():
        bands = tariffs.filter(pl.col("tenant_id") == tenant)
        starts = _version_starts(bands)
        local = indexed.filter(pl.col("tenant_id") == tenant)
        local = local.select(
            "_row",
            _version=_version_in_force(local["time"], starts),
            minute=(
                pl.col("time").dt.convert_time_zone(zone).dt.hour().cast(pl.Int32) * 60
                + pl.col("time").dt.convert_time_zone(zone).dt.minute().cast(pl.Int32)
            ),
        )
        version_of = {v: n for n, v in enumerate(starts)}
        bands = bands.with_row_index("_band").with_columns(
            _version=pl.Series([version_of[v] for v in bands[VALID_FROM].to_list()], dtype=pl.Int64)
        )
        matched = (
            local.join(bands.drop("tenant_id", "timezone", VALID_FROM), on="_version")
            .filter(
                pl.when(pl.col("start_minute") <= pl.col("end_minute"))
                .then((pl.col("minute") >= pl.col("start_minute")) & (pl.col("minute") < pl.col("end_minute")))
                .otherwise((pl.col("minute") >= pl.col("start_minute")) | (pl.col("minute") < pl.col("end_minute")))
            )
            .sort("_row", "_band")  # overlapping bands: the first listed wins, as it always has
            .unique("_row", keep="first", maintain_order=True)
            .select("_row", "band", "price")
        )
        priced.append(local.select("_row", before_tariff=pl.col("_version") < 0).join(matched, on="_row", how="left"))
    prices = (
        pl.concat(priced)
        if priced
        else pl.DataFrame(
            schema={"_row": pl.UInt32, "before_tariff": pl.Boolean, "band": pl.String, "price": pl.Float64}
        )
    )
    return (
        indexed.join(prices.select("_row", "band", "price", "before_tariff"), on="_row", how="left")
        .sort("_row")
        .drop("_row")
        .with_columns(pl.col("before_tariff").fill_null(False))
    )


def emission_factor_in_force(increments: pl.DataFrame, factors: pl.DataFrame) -> pl.DataFrame:
    """`increments` (time, tenant_id, ...) with `kg_co2_per_kwh`, the tenant's emission factor in
    force at each one's time (FACTOR_SCHEMA versions); NULL before its first version or without any.
    For a part of an interval pass its segment's start: a segment never straddles a factor change
    (`version_edges`)."""
    factors = with_valid_from(factors).select(FACTOR_SCHEMA.keys()).cast(FACTOR_SCHEMA)
    indexed = increments.with_row_index("_row")
    found = []
    for (tenant,), versions in factors.group_by("tenant_id"):
        starts = _version_starts(versions)
        by_start = {v: f for v, f in versions.select(VALID_FROM, "kg_co2_per_kwh").iter_rows()}
        local = indexed.filter(pl.col("tenant_id") == tenant)
        found.append(
            local.select(
                "_row",
                kg_co2_per_kwh=_version_in_force(local["time"], starts).replace_strict(
                    {n: by_start[v] for n, v in enumerate(starts)}, return_dtype=pl.Float64, default=None
                ),
            )
        )
    column = pl.concat(found) if found else pl.DataFrame(schema={"_row": pl.UInt32, "kg_co2_per_kwh": pl.Float64})
    return indexed.join(column, on="_row", how="left").sort("_row").drop("_row")


def kpi_row(
    machine: dict,
    start: datetime,
    end: datetime,
    kpi: K.Kpi,
    value: float | None,
    reason: str | None,
    **details,
) -> dict:
    """One row of a catalogue KPI (name and unit from its entry): the value, or NULL and why;
    `details` as a JSON object (shared by every KPI transform so all rows read alike)."""
    return {
        "period_start": start,
        "period_end": end,
        **machine,
        "kpi": kpi.name,
        "value": value,
        "unit": kpi.unit,
        "null_reason": None if value is not None else reason,
        "details": json.dumps(details, default=str, sort_keys=True) if details else None,
    }


NO_ENERGY = "no energy counter readings in the period"
METERED = "energy meter intervals"  # demand details' `source` where a machine has no power readings
ENERGY_OPEN = "the energy counter's interval over the period has not closed yet (no reading after it)"


def energy_kpis(
    energy: pl.DataFrame,
    held: pl.DataFrame,
    points: pl.DataFrame,
    emission_factors: pl.DataFrame,
    machines: pl.DataFrame,
    *,
    start: datetime,
    end: datetime,
    open_s: Mapping[tuple, float] | None = None,
    demand_interval_s: int = 0,
    metered: frozenset[tuple] = frozenset(),
) -> pl.DataFrame:
    """energy_kwh, energy_cost, carbon_kg, peak_demand_kw, avg_demand_kw, load_factor for every
    machine in `machines` (tenant_id, factory_id, machine_id) over the period [start, end).
    `demand_interval_s` > 0: the peak is the highest average demand over one of the epoch-aligned
    demand intervals of that length (`held` must be cut at their edges); 0: the highest demand
    point (the instantaneous coincident peak).

    `energy`: the energy counters' parts inside the period (ENERGY_PART_SCHEMA, any number of rows
    per machine: parts of `split_intervals`, priced); `held`: the held power parts inside it
    (HELD_SCHEMA, per series); `points`: the demand points in (start, end] (`demand_points`);
    `emission_factors`: every version of the tenants' factors (FACTOR_SCHEMA; without `valid_from`,
    one factor per tenant since forever); the parts carry the factor in force over each
    (`kg_co2_per_kwh`, from `emission_factor_in_force`), else the tenant's factor since forever is
    used for all of them. `open_s`: per machine, the seconds at the end of the period whose energy
    interval has not closed yet (not counted yet). `metered`: the machines whose held power and points
    come from their energy meters' intervals (machine_kpis.meter_demand), said so in the demand KPIs'
    details.
    """
    open_s = open_s or {}
    versions = with_valid_from(emission_factors).select(FACTOR_SCHEMA.keys()).cast(FACTOR_SCHEMA)
    if "kg_co2_per_kwh" not in energy.columns:
        since_ever = versions.filter(pl.col(VALID_FROM).is_null()).select("tenant_id", "kg_co2_per_kwh")
        energy = energy.join(since_ever, on="tenant_id", how="left", maintain_order="left")
    if "before_tariff" not in energy.columns:
        energy = energy.with_columns(before_tariff=pl.lit(False))
    factor_of = {
        tenant: _FactorOf(True, first, only if n == 1 else None)
        for tenant, first, only, n in versions.group_by("tenant_id")
        .agg(pl.col(VALID_FROM).min(), pl.col("kg_co2_per_kwh").first(), pl.len())
        .iter_rows()
    }  # a tenant absent here has no factor at all
    booked = _booked_energy(energy)
    average = _average_demand(held)
    peaks = _interval_peak_demand(held, points, demand_interval_s, end) if demand_interval_s else _peak_demand(points)
    rows = []
    for machine_key in machines.select(MACHINE).unique().sort(MACHINE).iter_rows():
        machine = dict(zip(MACHINE, machine_key, strict=True))
        factor = factor_of.get(machine["tenant_id"], _FactorOf(False, None, None))
        rows += _consumption_rows(machine, start, end, booked.get(machine_key), open_s.get(machine_key, 0.0), factor)
        rows += _demand_rows(
            machine,
            start,
            end,
            peaks.get(machine_key, (None, None, 0)),
            average.get(machine_key, (None, 0.0, 0)),
            {"source": METERED} if machine_key in metered else {},
        )
    return pl.DataFrame(rows, schema=KPI_SCHEMA, orient="row") if rows else pl.DataFrame(schema=KPI_SCHEMA)


def _booked_energy(energy: pl.DataFrame) -> dict[tuple, dict]:
    """Per machine: kWh, increments, resets, the kWh no tariff band prices (and of those, the kWh
    before the tenant's first tariff version), cost and kWh by band, the kWh without an emission
    factor in force and kWh by factor (in the parts' order)."""
    return {
        (r["tenant_id"], r["factory_id"], r["machine_id"]): r
        for r in energy.group_by(*MACHINE)
        .agg(
            kwh=pl.col("kwh").sum(),
            n=pl.col("increments").sum(),
            resets=pl.col("resets").sum(),
            unpriced=pl.col("kwh").filter(pl.col("price").is_null()).sum(),
            unpriced_parts=pl.col("price").is_null().sum(),
            untariffed=pl.col("kwh").filter(pl.col("before_tariff")).sum(),
            untariffed_parts=pl.col("before_tariff").sum(),
            cost=(pl.col("kwh") * pl.col("price")).sum(),
            by_band=pl.struct("band", "kwh").filter(pl.col("band").is_not_null()),
            no_factor=pl.col("kwh").filter(pl.col("kg_co2_per_kwh").is_null()).sum(),
            no_factor_parts=pl.col("kg_co2_per_kwh").is_null().sum(),
            by_factor=pl.struct("kg_co2_per_kwh", "kwh").filter(pl.col("kg_co2_per_kwh").is_not_null()),
        )
        .iter_rows(named=True)
    }


def _series_demand(held: pl.DataFrame, by: Sequence[str] = ()) -> pl.DataFrame:
    """Demand per machine (and `by`): each series' held kW s / held s, summed over the machine's series
    in one order run after run, with the held seconds and the number of series. The period's average
    demand, and with the demand interval in `by` each interval's demand: one definition for both."""
    return (
        held.group_by(*MACHINE, *by, "sensor_id")
        .agg(kws=pl.col("kws").sum(), held_s=pl.col("held_s").sum())
        .filter(pl.col("held_s") > 0)
        .sort(*MACHINE, *by, "sensor_id")
        .group_by(*MACHINE, *by, maintain_order=True)
        .agg(kw=(pl.col("kws") / pl.col("held_s")).sum(), held_s=pl.col("held_s").sum(), series=pl.len())
    )


def _average_demand(held: pl.DataFrame) -> dict[tuple, tuple]:
    """Per machine: (the sum of its series' time-weighted averages, held seconds, series)."""
    return {tuple(r[:3]): r[3:] for r in _series_demand(held).iter_rows()}


def _peak_demand(points: pl.DataFrame) -> dict[tuple, tuple]:
    """Per machine: (the highest demand point, its first time, samples stamped in the period)."""
    return {
        tuple(r[:3]): r[3:]
        for r in points.group_by(*MACHINE)
        .agg(
            peak=pl.col("kw").max(),
            at=pl.col("time").filter(pl.col("kw") == pl.col("kw").max()).min(),
            samples=pl.col("samples").sum(),
        )
        .iter_rows()
    }


def _interval_peak_demand(held: pl.DataFrame, points: pl.DataFrame, interval_s: int, end: datetime) -> dict:
    """Per machine: (the highest average demand over a demand interval, that interval's end, samples
    stamped in the period). A utility bills the highest 15-minute (say) average, not a one-second
    spike: an interval's demand is, per series, its held kW s / held s inside the interval, summed
    over the machine's series (as the period's average is). A machine with samples but no held
    interval has no peak. The interval's end is its time (a demand interval reports at its end, as
    readings do), or the period's end for an interval a period boundary cuts."""
    samples = {tuple(r[:3]): r[3] for r in points.group_by(*MACHINE).agg(pl.col("samples").sum()).iter_rows()}
    micros = interval_s * 1_000_000
    demand = _series_demand(
        held.with_columns(interval=(pl.col("seg_start").dt.epoch("us") // micros * micros).cast(TIME)), ("interval",)
    )
    out: dict[tuple, tuple] = {}
    for *machine, peak, first in (
        demand.group_by(*MACHINE)
        .agg(peak=pl.col("kw").max(), at=pl.col("interval").filter(pl.col("kw") == pl.col("kw").max()).min())
        .iter_rows()
    ):
        out[tuple(machine)] = (peak, min(first + timedelta(seconds=interval_s), end), samples.get(tuple(machine), 0))
    for machine, n in samples.items():
        out.setdefault(machine, (None, None, n))
    return out


def _kwh_by(parts: Iterable[dict], key: str) -> dict:
    """The parts' kWh summed per value of `key` (a band, a factor), in the parts' order (float sums)."""
    out: dict = {}
    for part in parts:
        out[part[key]] = out.get(part[key], 0.0) + part["kwh"]
    return out


@dataclass(frozen=True)
class _FactorOf:
    """What a tenant's emission factors are, for the reason a carbon figure is NULL: none at all, or
    none in force before `first` (its first version's valid_from); `only`: the factor of a tenant with
    one version (shown in the details of a period without energy, as it always was)."""

    any: bool
    first: datetime | None
    only: float | None


def _carbon(kwh: float | None, e: dict | None, factor: _FactorOf, no_energy: str) -> tuple[float | None, str, dict]:
    """carbon_kg: the sum over the factors in force of their kWh x the factor; a period wholly under
    one factor is its kWh x that factor, one multiplication (the figure a single factor always gave).
    NULL with the reason when some of the energy has no factor in force."""
    if kwh is None or e is None:
        return None, no_energy, {"kg_co2_per_kwh": factor.only}
    if not factor.any:
        return None, "no emission factor for the tenant", {"kg_co2_per_kwh": None}
    # energy before the first version has no carbon; none used there emits nothing, whatever the factor
    if e["no_factor_parts"] and e["no_factor"] > 0:
        return (
            None,
            f"{e['no_factor']:g} kWh of the period fall before the tenant's first emission factor "
            f"(valid from {factor.first.isoformat() if factor.first else '?'})",
            {"kg_co2_per_kwh": None},
        )
    by_factor = _kwh_by(e["by_factor"], "kg_co2_per_kwh")
    if not by_factor:  # all of it (0 kWh) before the first version
        return 0.0, "", {"kg_co2_per_kwh": None}
    if len(by_factor) == 1:
        (only,) = by_factor
        return kwh * only, "", {"kg_co2_per_kwh": only}
    carbon = sum(f * k for f, k in by_factor.items())
    return carbon, "", {"kg_co2_per_kwh": None, "kwh_by_factor": {repr(f): k for f, k in by_factor.items()}}


def _consumption_rows(
    machine: dict, start: datetime, end: datetime, e: dict | None, still_open: float, factor: _FactorOf
) -> list[dict]:
    """energy_kwh, energy_cost and carbon_kg of one machine from its booked energy `e`."""
    open_details = {"open_s": still_open} if still_open > 0 else {}
    kwh = e["kwh"] if e else None
    no_energy = ENERGY_OPEN if still_open > 0 else NO_ENERGY
    if e is None:
        cost, reason = None, no_energy
    # kWh no price applies to has no cost; 0 kWh there costs nothing, whatever the price would be
    elif e["untariffed_parts"] and e["untariffed"] > 0:
        cost, reason = None, f"{e['untariffed']:g} kWh of the period fall before the tenant's first tariff version"
    elif e["unpriced_parts"] and e["unpriced"] > 0:
        cost, reason = None, f"{e['unpriced']:g} kWh of the period fall outside every tariff band of the tenant"
    else:
        cost, reason = e["cost"], None
    bands = _kwh_by(e["by_band"] if e else [], "band")
    carbon, carbon_reason, carbon_details = _carbon(kwh, e, factor, no_energy)
    return [
        kpi_row(
            machine,
            start,
            end,
            K.ENERGY_KWH,
            kwh,
            no_energy,
            **({"increments": e["n"], "counter_resets": e["resets"]} if e else {}),
            **open_details,
        ),
        kpi_row(machine, start, end, K.ENERGY_COST, cost, reason, kwh_by_band=bands),
        kpi_row(machine, start, end, K.CARBON_KG, carbon, carbon_reason, **carbon_details),
    ]


def _demand_rows(
    machine: dict, start: datetime, end: datetime, peak_of: tuple, average_of: tuple, source: dict
) -> list[dict]:
    """peak_demand_kw, avg_demand_kw and load_factor of one machine (`source`: details of where its
    demand came from, when not from power readings)."""
    peak, peak_time, samples = peak_of
    avg, held_s, series = average_of
    no_power = "no power readings in the period" if not samples else "no power sample holds over the period"
    if peak is None:
        load, load_reason = None, no_power
    elif avg is None:
        load, load_reason = None, "no average demand in the period"
    elif peak <= 0:
        load, load_reason = None, "peak demand is 0: the machine drew no power"
    else:
        load, load_reason = avg / peak, None
    return [
        kpi_row(machine, start, end, K.PEAK_DEMAND_KW, peak, no_power, at=peak_time, samples=samples, **source),
        kpi_row(
            machine,
            start,
            end,
            K.AVG_DEMAND_KW,
            avg,
            no_power
            if peak is None
            else "no power sample holds over the period (samples further apart than the gap limit)",
            samples=samples,
            held_s=held_s,
            **({"series": series} if series > 1 else {}),
            **source,
        ),
        kpi_row(machine, start, end, K.LOAD_FACTOR, load, load_reason),
    ]
