"""Machine KPIs: read a range's inputs, compute every period of it, replace those periods' rows.

The hourly asset calls `recompute_kpis` with the hour; the daily one with the day and its
shifts, so a day is computed from the same readings (and the same code) as its hours.

A cumulative reading measures the interval back to its series' previous reading (docs/kpis.md),
so a range needs, per series (tenant, factory, machine, sensor_id, metric), the last reading
before it and the first one after it: the range's first and last intervals reach beyond it. The
first reading after the range may not have landed when the range is first computed; the interval
it closes is then left out (and reported open) until the range is recomputed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg

from analytics_platform.ingest.store import copy_rows
from analytics_platform.results.frames import lock_results, read_frame
from analytics_platform.results.plant import read_plant
from analytics_platform.transforms import machine_kpis as mk

log = logging.getLogger(__name__)
KPI_COLUMNS = list(mk.OUTPUT_SCHEMA)


@dataclass(frozen=True)
class KpiRun:
    machines: int
    readings: int
    rows: int
    deleted: int


# The last reading before the range of every series (tenant, factory, machine, sensor, metric).
# A plain DISTINCT ON over the five columns cannot follow raw_sensor_readings_key_idx (it has no
# sensor_id) and sorts the whole lookback: 1.0 s instead of 0.1 s for 20 machines of 10 s power.
# So: the latest reading per machine and metric in index order (no sort), then, per machine and
# metric, the latest of each OTHER sensor (usually none: a scan without a sort).
PRIOR_QUERY = """
WITH latest AS (
    SELECT DISTINCT ON (tenant_id, factory_id, machine_id, metric)
           time, tenant_id, factory_id, machine_id, sensor_id, metric, value
    FROM analytics.raw_sensor_readings
    WHERE time < %(start)s AND time >= %(from)s AND metric = ANY(%(metrics)s)
    ORDER BY tenant_id, factory_id, machine_id, metric, time DESC
)
SELECT time, tenant_id, factory_id, machine_id, sensor_id, metric, value FROM latest
UNION ALL
SELECT o.time, o.tenant_id, o.factory_id, o.machine_id, o.sensor_id, o.metric, o.value
FROM latest l CROSS JOIN LATERAL (
    SELECT DISTINCT ON (r.sensor_id) r.time, r.tenant_id, r.factory_id, r.machine_id, r.sensor_id, r.metric, r.value
    FROM analytics.raw_sensor_readings r
    WHERE r.tenant_id = l.tenant_id AND r.factory_id = l.factory_id AND r.machine_id = l.machine_id
      AND r.metric = l.metric AND r.sensor_id <> l.sensor_id AND r.time < %(start)s AND r.time >= %(from)s
    ORDER BY r.sensor_id, r.time DESC
) o
"""


def read_inputs(
    conn: psycopg.Connection,
    start: datetime,
    end: datetime,
    *,
    drivers: list[str],
    gap_s: int,
    lookback: timedelta,
    lookahead: timedelta | None = None,
) -> mk.KpiInputs:
    """The readings, run states and boundary context of [start, end).

    `prior` (last reading per series) looks back `lookback`, `next_readings` (first counter and
    power reading per series after the end) ahead `lookahead` (default: `lookback`): as far as the
    longest counter interval that is counted (KpiOptions.max_interval_s), so an hour and its day see
    the same intervals. `next_seen` only needs to look `gap_s` ahead: a reading further away
    cannot shorten a silence ending at the range's end.
    """
    metrics = [*mk.KPI_METRICS, *drivers]
    columns = "time, tenant_id, factory_id, machine_id, sensor_id, metric, value"
    readings = read_frame(
        conn,
        f"SELECT {columns} FROM analytics.raw_sensor_readings WHERE time >= %s AND time < %s AND metric = ANY(%s)",
        (start, end, metrics),
        mk.SERIES_READING_SCHEMA,
    )
    prior = read_frame(
        conn,
        PRIOR_QUERY,
        {"start": start, "from": start - lookback, "metrics": list(mk.KPI_METRICS)},
        mk.SERIES_READING_SCHEMA,
    )
    states, prior_states = read_run_states(conn, start, end, lookback)
    next_seen = read_frame(
        conn,
        "SELECT tenant_id, factory_id, machine_id, min(time) FROM analytics.raw_sensor_readings "
        "WHERE time >= %s AND time <= %s AND metric = ANY(%s) GROUP BY 1, 2, 3",
        (end, end + timedelta(seconds=gap_s), metrics),
        mk.SEEN_SCHEMA,
    )
    following = read_next_readings(conn, pl.concat([prior, readings]), end, lookahead or lookback)
    return mk.KpiInputs(start, end, readings, prior, states, prior_states, next_seen, following)


def read_next_readings(
    conn: psycopg.Connection, known: pl.DataFrame, end: datetime, lookahead: timedelta
) -> pl.DataFrame:
    """The first reading at or after `end` (before `end + lookahead`) of every counter and power
    series in `known`: the readings that close the range's last intervals. One index probe per
    series (raw_sensor_readings_key_idx), not a scan of the lookahead: a series first seen after the
    range has no interval reaching into it."""
    series = known.filter(pl.col("metric").is_in((*mk.COUNTERS, mk.POWER))).select(mk.SERIES).unique().sort(mk.SERIES)
    if series.is_empty():
        return pl.DataFrame(schema=mk.SERIES_READING_SCHEMA)
    return read_frame(
        conn,
        "SELECT n.time, s.tenant_id, s.factory_id, s.machine_id, s.sensor_id, s.metric, n.value "
        "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) "
        "AS s(tenant_id, factory_id, machine_id, sensor_id, metric) "
        "CROSS JOIN LATERAL (SELECT r.time, r.value FROM analytics.raw_sensor_readings r "
        "WHERE r.tenant_id = s.tenant_id AND r.factory_id = s.factory_id AND r.machine_id = s.machine_id "
        "AND r.metric = s.metric AND r.sensor_id = s.sensor_id AND r.time >= %s AND r.time < %s "
        "ORDER BY r.time, r.value LIMIT 1) n",
        (*(series[c].to_list() for c in mk.SERIES), end, end + lookahead),
        mk.SERIES_READING_SCHEMA,
    )


def read_run_states(
    conn: psycopg.Connection,
    start: datetime,
    end: datetime,
    lookback: timedelta,
    machines: str = "true",
    params: Sequence = (),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Run-state messages in [start, end), and each machine's last one before `start` (looked for
    back to `lookback`): a state holds until the next one, so the range starts in it. `machines`
    (SQL on the machine columns, with `params`) narrows both to the machines a run judges."""
    states = read_frame(
        conn,
        "SELECT time, tenant_id, factory_id, machine_id, run_state FROM analytics.raw_device_health "
        f"WHERE run_state IS NOT NULL AND time >= %s AND time < %s AND {machines}",
        (start, end, *params),
        mk.STATE_SCHEMA,
    )
    prior = read_frame(
        conn,
        "SELECT DISTINCT ON (tenant_id, factory_id, machine_id) time, tenant_id, factory_id, machine_id, run_state "
        f"FROM analytics.raw_device_health WHERE run_state IS NOT NULL AND time < %s AND time >= %s AND {machines} "
        "ORDER BY tenant_id, factory_id, machine_id, time DESC, run_state",
        (start, start - lookback, *params),
        mk.STATE_SCHEMA,
    )
    return states, prior


# A new version for each period rewritten (sql/14), drawn under the writers' lock: in commit order.
MARK_PERIODS = """
    INSERT INTO analytics.kpi_materialised_periods (period, period_start)
    SELECT %s, unnest(%s::timestamptz[])
    ON CONFLICT (period, period_start) DO UPDATE SET version = nextval('analytics.kpi_materialised_version')"""


def replace_kpis(conn: psycopg.Connection, rows: pl.DataFrame, periods: pl.DataFrame) -> int:
    """Delete the KPI rows of `periods` (by kind and start) and write `rows`, in one transaction,
    with a new version of each period for /v1/kpi's ETags."""
    deleted = 0
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, "analytics_kpi")
        for kind, starts in periods.group_by("period").agg(pl.col("period_start").unique()).iter_rows():
            cur.execute(
                "DELETE FROM analytics.analytics_kpi WHERE period = %s AND period_start = ANY(%s)", (kind, starts)
            )
            deleted += cur.rowcount
            cur.execute(MARK_PERIODS, (kind, starts))
        copy_rows(cur, "analytics_kpi", rows, KPI_COLUMNS)
    return deleted


def recompute_kpis(
    conn: psycopg.Connection,
    periods: pl.DataFrame,
    options: mk.KpiOptions,
    *,
    lookback: timedelta,
) -> KpiRun:
    """Recompute `periods` (PERIOD_SCHEMA) from the readings of the range they span; for hours, also
    the stored hours around them that late readings or run states of the range reach
    (`late_neighbour_hours`)."""
    if periods.is_empty():
        return KpiRun(0, 0, 0, 0)
    run, readings = _recompute(conn, periods, options, lookback=lookback)
    if set(periods["period"].unique().to_list()) != {"hour"}:
        return run
    start, end = periods["period_start"].min(), periods["period_end"].max()
    series = readings.select(mk.SERIES).unique().sort(mk.SERIES)
    for hour in late_neighbour_hours(conn, start, end, lookback, series):
        more, _ = _recompute(conn, mk.fixed_periods("hour", hour, hour + HOUR, HOUR), options, lookback=lookback)
        run = KpiRun(
            max(run.machines, more.machines),
            run.readings + more.readings,
            run.rows + more.rows,
            run.deleted + more.deleted,
        )
    return run


def _recompute(
    conn: psycopg.Connection, periods: pl.DataFrame, options: mk.KpiOptions, *, lookback: timedelta
) -> tuple[KpiRun, pl.DataFrame]:
    """The run, and the range's readings it read (KPI metrics and drivers)."""
    start, end = periods["period_start"].min(), periods["period_end"].max()
    inputs = read_inputs(conn, start, end, drivers=list(options.drivers), gap_s=options.gap_s, lookback=lookback)
    rows = mk.machine_kpis(inputs, periods, read_plant(conn), options)
    deleted = replace_kpis(conn, rows, periods)
    machines = rows.select(mk.MACHINE).n_unique() if not rows.is_empty() else 0
    return KpiRun(machines, inputs.readings.height, rows.height, deleted), inputs.readings


HOUR = timedelta(hours=1)
# Stored hours around [start, end) that a reading or run state of it reaches and that were computed
# before it landed (ingested_at > computed_at). A reading closes the interval back to its series'
# previous reading and opens the one to its next (counters, demand, silences); a run state holds
# until the machine's next one. Only the range's first reading of a series reaches back, its last
# one (and the machine's last run state) ahead, so only when those landed late is a neighbour stale.
# The series of the range come from the readings the recompute read (`series`): each one's first and
# last reading are two index probes (raw_sensor_readings_key_idx), where aggregating every reading of
# the range sorted them all (3.5 s of a day's 24 hours at 100 machines, 0.2 s as probes).
LATE_NEIGHBOURS = """
WITH series AS (
    SELECT s.tenant_id, s.factory_id, s.machine_id, s.sensor_id, s.metric,
           f.ingested_at AS first_landed, l.ingested_at AS last_landed
    FROM unnest(%(tenants)s::text[], %(factories)s::text[], %(machines)s::text[], %(sensors)s::text[],
                %(metrics)s::text[]) AS s(tenant_id, factory_id, machine_id, sensor_id, metric)
    CROSS JOIN LATERAL (
        SELECT r.ingested_at FROM analytics.raw_sensor_readings r
        WHERE r.tenant_id = s.tenant_id AND r.factory_id = s.factory_id AND r.machine_id = s.machine_id
          AND r.metric = s.metric AND r.sensor_id = s.sensor_id AND r.time >= %(start)s AND r.time < %(end)s
        ORDER BY r.time, r.ingested_at DESC LIMIT 1) f
    CROSS JOIN LATERAL (
        SELECT r.ingested_at FROM analytics.raw_sensor_readings r
        WHERE r.tenant_id = s.tenant_id AND r.factory_id = s.factory_id AND r.machine_id = s.machine_id
          AND r.metric = s.metric AND r.sensor_id = s.sensor_id AND r.time >= %(start)s AND r.time < %(end)s
        ORDER BY r.time DESC, r.ingested_at DESC LIMIT 1) l
), states AS (
    SELECT tenant_id, factory_id, machine_id, (array_agg(ingested_at ORDER BY time DESC, ingested_at DESC))[1] AS landed
    FROM analytics.raw_device_health
    WHERE run_state IS NOT NULL AND time >= %(start)s AND time < %(end)s
    GROUP BY tenant_id, factory_id, machine_id
), hours AS (
    SELECT period_start, min(computed_at) AS computed FROM analytics.analytics_kpi
    WHERE period = 'hour' AND period_start >= %(from)s AND period_start < %(to)s
      AND (period_start < %(start)s OR period_start >= %(end)s)
    GROUP BY period_start
), late AS (
    SELECT min(h.computed) AS oldest FROM hours h
), reach AS (
    SELECT s.first_landed AS back_landed, s.last_landed AS ahead_landed,
           coalesce((SELECT max(r.time) FROM analytics.raw_sensor_readings r
                     WHERE r.tenant_id = s.tenant_id AND r.factory_id = s.factory_id AND r.machine_id = s.machine_id
                       AND r.metric = s.metric AND r.sensor_id = s.sensor_id
                       AND r.time < %(start)s AND r.time >= %(from)s), %(start)s) AS back,
           coalesce((SELECT min(r.time) FROM analytics.raw_sensor_readings r
                     WHERE r.tenant_id = s.tenant_id AND r.factory_id = s.factory_id AND r.machine_id = s.machine_id
                       AND r.metric = s.metric AND r.sensor_id = s.sensor_id
                       AND r.time >= %(end)s AND r.time < %(to)s), %(end)s) AS ahead
    FROM series s, late WHERE greatest(s.first_landed, s.last_landed) > late.oldest
    UNION ALL
    SELECT NULL, st.landed, %(start)s AS back,
           coalesce((SELECT min(r.time) FROM analytics.raw_device_health r
                     WHERE r.tenant_id = st.tenant_id AND r.factory_id = st.factory_id AND r.machine_id = st.machine_id
                       AND r.run_state IS NOT NULL AND r.time >= %(end)s AND r.time < %(to)s), %(to)s) AS ahead
    FROM states st, late WHERE st.landed > late.oldest
)
SELECT h.period_start FROM hours h
WHERE EXISTS (
    SELECT 1 FROM reach r
    WHERE (r.back_landed > h.computed AND h.period_start < %(start)s AND h.period_start + interval '1 hour' > r.back)
       OR (r.ahead_landed > h.computed AND h.period_start >= %(end)s AND h.period_start <= r.ahead))
ORDER BY 1"""


def late_neighbour_hours(
    conn: psycopg.Connection,
    start: datetime,
    end: datetime,
    lookback: timedelta,
    series: pl.DataFrame,
) -> list[datetime]:
    """The stored hours before `start` and from `end` (within `lookback`) that a reading or run state of
    [start, end) reaches and that were computed before it landed.

    An edge agent replaying an outage in order (fault at 10:10, running at 12:15, the meter's reading
    at 12:55) changes the raw partitions of hours 10 and 12, which the automation recomputes; hour 11
    received nothing and kept the run state and the open meter interval it was computed with. Live
    processing (the newest hour; the :20 rerun of the hour before, which is computed after the next
    hour's first readings landed) finds nothing here: one query. `series` (mk.SERIES): those of the
    range's readings (KPI metrics and drivers), as the recompute read them.
    """
    rows = conn.execute(
        LATE_NEIGHBOURS,
        {
            "start": start,
            "end": end,
            "from": start - lookback,
            "to": end + lookback,
            "tenants": series["tenant_id"].to_list(),
            "factories": series["factory_id"].to_list(),
            "machines": series["machine_id"].to_list(),
            "sensors": series["sensor_id"].to_list(),
            "metrics": series["metric"].to_list(),
        },
    ).fetchall()
    # in UTC whatever the session's TimeZone (a server set to 'Etc/UTC' gives that zone, which Polars
    # refuses to compare with the range's UTC)
    return [r[0].astimezone(UTC) for r in rows]


def day_periods(conn: psycopg.Connection, day_start: datetime, day_end: datetime) -> pl.DataFrame:
    """The day itself and the shifts of every tenant seen in it (those ending within the day)."""
    tenants = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT tenant_id FROM analytics.analytics_kpi WHERE period = 'hour' "
            "AND period_start >= %s AND period_start < %s",
            (day_start, day_end),
        ).fetchall()
    ]
    resolved, _, shifts = mk.resolve_tenants(read_plant(conn), tenants)
    return pl.concat(
        [
            mk.fixed_periods("day", day_start, day_end, day_end - day_start),
            mk.shift_periods(resolved, shifts, day_start, day_end),
        ]
    )
