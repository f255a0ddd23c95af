"""The live judges: the rules that need no fitted model, applied every few seconds to the rows the
drains just committed (issue 22), so a rule-breaking reading or lab result reaches the alert rules
seconds after it was produced instead of after the next hourly run.

* `judge_committed`: sensor readings outside the catalogue's range or the metric's spec limits
  become anomalies (`transforms.anomalies.limit_anomalies`, the hourly asset's own function over the
  same metrics), so the hour confirms them or closes them `not_confirmed`
  (`results.anomalies.replace_anomalies`).
* `judge_closed_buckets`: the seasonal statistics (`deviation`, the z-score against the profile;
  `shift4`/`shift16`, a sudden change; `noise`; `stuck`) of each 60 s sample once it has closed,
  by the hourly asset's own function (`transforms.anomalies.seasonal_anomalies`) fed exactly what
  the hour will feed it for that sample (see its docstring), so the hour confirms the rows.
* `judge_lab_results` / `judge_sweep_batches`: lab results outside their analyte's spec limits and
  sweep batches with a reading outside their metric's become their `lab_result` / `sweep_batch`
  event at once (`transforms.spec_quality.lab_results` / `sweep_batches`, the `lab_result_quality` /
  `sweep_batch_quality` asset's function), for the `lab_out_of_spec` / `sweep_out_of_spec` rule;
  the asset rewrites the hour's events later with the same keys.

Which rows are new is decided by `ingested_at` (the start of the statement that wrote the row),
with a durable position per judge in `analytics.live_detection_cursor` that moves in the
transaction that writes the results: a crash re-judges the same rows, and a second pass over them
writes nothing (`ON CONFLICT DO NOTHING` on the result's key). A drain transaction still in flight
has rows with an `ingested_at` older than its commit; so a pass only reads up to the start of the
oldest transaction that may still write them (`ingest.store.OLDEST_WRITER`, exact because writers
take their transaction id before they stamp a row), at most `max_wait` in the past (a longer
writer, e.g. a backfill, cannot stall live judgement: the hour judges what this missed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import psycopg
from psycopg import sql

from analytics_platform.contracts.base import Contract
from analytics_platform.contracts.lab import LabContract
from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.contracts.sweep import SweepContract
from analytics_platform.ingest.store import OLDEST_WRITER, copy_rows
from analytics_platform.results.anomalies import (
    ANOMALY_COLUMNS,
    HISTORY_SCHEMA,
    NOT_RUNNING,
    RAW_SCHEMA,
    SERIES,
    AnomalyOptions,
    _aggregates,
    _states,
    load_profiles,
    metric_filter,
    read_limits,
    tenant_zones,
    zoned,
)
from analytics_platform.results.events import EVENT_KEY, SPEC_QUALITY, read_spec_limits
from analytics_platform.results.frames import lock_results, read_frame
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms import anomalies as an
from analytics_platform.transforms import seasonal as se
from analytics_platform.transforms.event_rollups import EVENT_COLUMNS
from analytics_platform.transforms.window_aggregates import (
    READING_SCHEMA,
    canonical_order,
    ceil_to,
    floor_to,
    window_aggregates,
)

JUDGE = "limits"  # the sensor readings' judge (its cursor row)
LAB_JUDGE = "lab"
SWEEP_JUDGE = "sweep"
SEASONAL_JUDGE = "seasonal"
HOUR = timedelta(hours=1)
KEY = "tenant_id, factory_id, machine_id, method, anomaly_type, time, sensor_id, metric"


@dataclass(frozen=True)
class LivePass:
    """What one pass judged: rows read, results (anomalies, lab events) new to their table, and the
    cursor span."""

    judged: int
    flagged: int
    since: datetime
    until: datetime


def _span(conn: psycopg.Connection, judge: str, max_wait: timedelta) -> tuple[datetime, datetime]:
    """(since, until) of `judge`'s next pass: from its position (created at the database's `now()`
    on a first pass: history is the hour's business) to the start of the oldest writing transaction,
    at most `max_wait` back. Call inside the pass's transaction."""
    since, until = conn.execute(
        """WITH pos AS (
               INSERT INTO analytics.live_detection_cursor (judge, position) VALUES (%s, now())
               ON CONFLICT (judge) DO UPDATE SET judge = EXCLUDED.judge RETURNING position
           )
           SELECT (SELECT position FROM pos),
                  greatest(now() - %s, least(now(), """
        + OLDEST_WRITER
        + "))",
        (judge, max_wait),
    ).fetchone()
    return since, until


def _advance(conn: psycopg.Connection, judge: str, until: datetime, judged: int, flagged: int) -> None:
    conn.execute(
        "UPDATE analytics.live_detection_cursor SET position = %s, judged_rows = judged_rows + %s, "
        "flagged = flagged + %s, updated_at = now() WHERE judge = %s",
        (until, judged, flagged, judge),
    )


@dataclass(frozen=True)
class LiveSummary:
    """One `live_pass`: what each judge found, in one line, and the results new to their tables."""

    text: str
    flagged: int


def live_pass(conn: psycopg.Connection, settings: PlatformSettings, options: AnomalyOptions) -> LiveSummary:
    """One pass of every live judge of the enabled domains (a judge of a disabled domain would read
    a table nobody fills), in a fixed order.

    Run by the `live_anomalies` sensor and, in the drain service, after each commit: passes may
    overlap, since each judge's cursor row is locked by its pass (`_span`), so a second pass waits
    and goes on from where the first ended."""
    lookback = timedelta(seconds=settings.live_detect_lookback_s)
    max_wait = timedelta(seconds=settings.live_detect_max_wait_s)
    enabled = set(settings.domains_enabled)
    said = []
    flagged = 0
    if SensorContract.domain in enabled:
        readings = judge_committed(conn, options, lookback=lookback, max_wait=max_wait)
        flagged += readings.flagged
        said.append(f"judged {readings.judged} reading(s), {readings.flagged} new anomaly row(s)")
    if LabContract.domain in enabled:
        lab = judge_lab_results(conn, lookback=lookback, max_wait=max_wait)
        flagged += lab.flagged
        said.append(f"{lab.judged} lab result(s), {lab.flagged} new out-of-spec event(s)")
    if SweepContract.domain in enabled:
        sweep = judge_sweep_batches(conn, lookback=lookback, max_wait=max_wait)
        flagged += sweep.flagged
        said.append(f"{sweep.judged} sweep batch(es), {sweep.flagged} new out-of-spec event(s)")
    if SensorContract.domain in enabled:
        closed = judge_closed_buckets(
            conn,
            options,
            grace=timedelta(seconds=settings.live_seasonal_grace_s),
            lookback=lookback,
            provisional_hours=settings.agg_provisional_hours,
        )
        flagged += closed.flagged
        said.append(f"{closed.judged} reading(s) of closed samples, {closed.flagged} new seasonal anomaly row(s)")
    return LiveSummary("; ".join(said), flagged)


def judge_committed(
    conn: psycopg.Connection,
    options: AnomalyOptions,
    lookback: timedelta = timedelta(minutes=10),
    max_wait: timedelta = timedelta(seconds=30),
) -> LivePass:
    """Judge the sensor readings committed since the cursor and store the anomalies found.

    Readings older than `lookback` when they arrive are left to the hourly asset (late data: their
    hour may be judged already, and a live row nobody confirms would stay pending)."""
    where, params = metric_filter(options)
    with conn.transaction():
        since, until = _span(conn, JUDGE, max_wait)
        if until <= since:
            return LivePass(0, 0, since, since)
        readings = read_frame(
            conn,
            "SELECT time, tenant_id, factory_id, machine_id, sensor_id, metric, value "
            "FROM analytics.raw_sensor_readings WHERE ingested_at >= %s AND ingested_at < %s "
            f"AND time >= now() - %s AND {where}",
            [since, until, lookback, *params],
            RAW_SCHEMA,
        )
        flagged = 0
        if not readings.is_empty():
            catalog, spec_limits = read_limits(conn)
            rows = an.limit_anomalies(readings, catalog, spec_limits, bucket_s=options.bucket_s)
            flagged = _insert(conn, rows)
        _advance(conn, JUDGE, until, readings.height, flagged)
    return LivePass(readings.height, flagged, since, until)


def judge_lab_results(
    conn: psycopg.Connection, lookback: timedelta = timedelta(minutes=10), max_wait: timedelta = timedelta(seconds=30)
) -> LivePass:
    """Judge the lab results committed since the cursor against the spec limits and store each
    failed verdict as its `lab_result` event, the row the `lab_result_quality` asset writes for it,
    for the `lab_out_of_spec` rule (`_judge_failed_events`)."""
    return _judge_failed_events(conn, LAB_JUDGE, LabContract, lookback, max_wait)


def judge_sweep_batches(
    conn: psycopg.Connection, lookback: timedelta = timedelta(minutes=10), max_wait: timedelta = timedelta(seconds=30)
) -> LivePass:
    """Judge the sweep batches committed since the cursor against the spec limits and store each
    failed verdict as its `sweep_batch` event, the row the `sweep_batch_quality` asset writes for
    it, for the `sweep_out_of_spec` rule (`_judge_failed_events`)."""
    return _judge_failed_events(conn, SWEEP_JUDGE, SweepContract, lookback, max_wait)


def _judge_failed_events(
    conn: psycopg.Connection, judge: str, contract: type[Contract], lookback: timedelta, max_wait: timedelta
) -> LivePass:
    """Judge `contract`'s raw rows committed since `judge`'s cursor with its spec-quality asset's
    own function (`results.events.SPEC_QUALITY`, so the events carry the asset's keys) and store
    the failed verdicts only.

    Only the failures: they are what the out-of-spec rules alert on, and the asset's hour (events
    and their pass/fail rollups together) stays the one record of the rest. The asset replaces its
    hour later with the same keys, so the alert's condition stays the one it was; a row it no longer
    judges failed (the limits changed) is gone and its condition resolves. Rows older than
    `lookback` when they arrive are left to the asset (late data)."""
    _, schema, verdicts = SPEC_QUALITY[contract.domain]
    with conn.transaction():
        since, until = _span(conn, judge, max_wait)
        if until <= since:
            return LivePass(0, 0, since, since)
        rows = read_frame(
            conn,
            f"SELECT {', '.join(schema)} FROM analytics.{contract.raw_table} "
            "WHERE ingested_at >= %s AND ingested_at < %s AND time >= now() - %s",
            (since, until, lookback),
            schema,
        )
        flagged = 0
        if not rows.is_empty():
            failed = verdicts(rows, read_spec_limits(conn)).filter(pl.col("passed").eq(False))
            flagged = _insert_events(conn, contract.domain, failed)
        _advance(conn, judge, until, rows.height, flagged)
    return LivePass(rows.height, flagged, since, until)


def closed_buckets(
    position: datetime, now: datetime, grace: timedelta, lookback: timedelta, bucket_s: int
) -> tuple[datetime, datetime]:
    """[since, until) of the samples a seasonal pass judges: those closed at least `grace` before
    `now` (readings of a sample arrive a little after it ends: the drain's batch, the network), from
    the judge's `position` on, but none starting more than `lookback` before `now` (late: the hour's).
    Both ends are bucket boundaries; until <= since means there is nothing to judge."""
    until = floor_to(now - grace, bucket_s)
    return max(floor_to(position, bucket_s), ceil_to(now - lookback, bucket_s)), until


def judge_closed_buckets(
    conn: psycopg.Connection,
    options: AnomalyOptions,
    now: datetime | None = None,
    grace: timedelta = timedelta(seconds=5),
    lookback: timedelta = timedelta(minutes=10),
    provisional_hours: int = 3,
) -> LivePass:
    """Judge the `bucket_s` samples closed since the judge's position with the seasonal statistics
    and store the anomalies found, marked live, with the hour's key.

    A sample is judged once, after it closed: judged while open its mean would not be the one the
    hour sees. Within an hour, each call of `seasonal_anomalies` gets what the hour's will get for
    those samples (`_closed_bucket_rows`); its statistics look only backwards, so the readings after
    the judged samples, which the hour will also have, cannot change them. `now` defaults to the
    database's; the first pass only places the position (history is the hour's business)."""
    bucket_s = options.bucket_s
    with conn.transaction():
        if now is None:
            now = conn.execute("SELECT now()").fetchone()[0]
        (position,) = conn.execute(
            """INSERT INTO analytics.live_detection_cursor (judge, position) VALUES (%s, %s)
               ON CONFLICT (judge) DO UPDATE SET judge = EXCLUDED.judge RETURNING position""",
            (SEASONAL_JUDGE, floor_to(now - grace, bucket_s)),
        ).fetchone()
        since, until = closed_buckets(position, now, grace, lookback, bucket_s)
        if until <= since:
            return LivePass(0, 0, since, since)
        judged = flagged = 0
        hour = since.replace(minute=0, second=0, microsecond=0)
        while hour < until:
            count, rows = _closed_bucket_rows(
                conn, options, hour, max(since, hour), min(until, hour + HOUR), now, provisional_hours
            )
            judged += count
            flagged += _insert(conn, rows)
            hour += HOUR
        _advance(conn, SEASONAL_JUDGE, until, judged, flagged)
    return LivePass(judged, flagged, since, until)


def _closed_bucket_rows(
    conn: psycopg.Connection,
    options: AnomalyOptions,
    hour: datetime,
    first: datetime,
    end: datetime,
    now: datetime,
    provisional_hours: int,
) -> tuple[int, pl.DataFrame]:
    """The seasonal anomalies of the samples in [first, end) of the hour at `hour`, computed as the
    hour's `_recompute_hour` computes them: its readings from the hour's start (the windows look
    back across the samples before `first`), the hour's stored profiles, the `training_hours` of
    aggregates before the hour, the machines' non-running intervals. Returns the readings judged
    (in [first, end)) and the rows."""
    where, params = metric_filter(options)
    readings = read_frame(
        conn,
        "SELECT time, tenant_id, factory_id, machine_id, sensor_id, metric, value FROM analytics.raw_sensor_readings "
        f"WHERE time >= %s AND time < %s AND {where}",
        [hour, end, *params],
        RAW_SCHEMA,
    )
    judged = readings.filter(pl.col("time") >= first)
    keys = set(judged.select(SERIES).unique().rows())
    zones = tenant_zones(conn, {k[0] for k in keys})  # each tenant's profiles in its plant's clock, as the hour's
    profiles: dict[tuple, se.Profile] = {}
    for zone, tenants in an.zone_groups(zones, {k[0] for k in keys}, options.seasonal.timezone):
        profiles.update(_stored_profiles(conn, hour, {k for k in keys if k[0] in tenants}, zoned(options, zone)))
    if not profiles:
        return judged.height, pl.DataFrame(schema=an.ANOMALY_SCHEMA)
    context_from = hour - timedelta(hours=options.training_hours)
    history = _history(conn, options, context_from, hour, now, provisional_hours)
    excluded = _states(conn, context_from, end, options.state_lookback).filter(pl.col("state").is_in(NOT_RUNNING))
    found = an.seasonal_anomalies(
        readings, history, list(profiles.values()), excluded, start=hour, options=options.seasonal, zones=zones
    )
    rows = found.cast(an.ANOMALY_SCHEMA).filter((pl.col("window_start") >= first) & (pl.col("window_start") < end))
    return judged.height, rows


def _stored_profiles(
    conn: psycopg.Connection, hour: datetime, keys: set[tuple], options: AnomalyOptions
) -> dict[tuple, se.Profile]:
    """The profiles the hour at `hour` will judge `keys` with (`results.anomalies.profiles_for_hour`),
    for the series whose profile is stored: learning one (a day of aggregates) is the hour's work,
    not a 2 s tick's. A series the hour would re-learn up to its own start (younger than a day) is
    left out unless that profile is stored too: its midnight profile is not the one the hour uses."""
    if not keys:
        return {}
    missing: list[set[tuple]] = []

    def get(trained_to: datetime, wanted: set[tuple]) -> dict[tuple, se.Profile]:
        found = load_profiles(conn, trained_to, wanted, options)
        missing.append(wanted - set(found))
        return found

    profiles = se.profiles_for_hour(hour, keys, get, timedelta(hours=options.refit_hours))
    # the last lookup is the one the hour would have filled by learning: what it missed is unknown
    return {k: p for k, p in profiles.items() if k not in missing[-1]}


def _history(
    conn: psycopg.Connection,
    options: AnomalyOptions,
    since: datetime,
    until: datetime,
    now: datetime,
    provisional_hours: int,
) -> pl.DataFrame:
    """The `bucket_s` aggregates in [since, until) as the hour will read them from `analytics_agg`:
    stored, except the hours within `provisional_hours` of `now` that the aggregate asset has not
    made final yet (`agg_materialised_hours`), computed from the raw readings as the asset will
    compute them (`window_aggregates` over `canonical_order`: bit-identical, as /v1/agg's
    provisional buckets). Sorted by series and time, as the hour's are."""
    where, params = metric_filter(options)
    stored = _aggregates(conn, options.bucket_s, since, until, where, params)
    lo = max(since, now.replace(minute=0, second=0, microsecond=0) - provisional_hours * HOUR)
    final = {
        row[0]
        for row in conn.execute(
            "SELECT hour_start FROM analytics.agg_materialised_hours WHERE hour_start >= %s AND hour_start < %s "
            "AND as_of >= hour_start + interval '1 hour'",
            (lo, until),
        ).fetchall()
    }
    open_hours = []
    hour = ceil_to(lo, 3600)
    while hour < until:
        if hour not in final:
            open_hours.append(hour)
        hour += HOUR
    if not open_hours:
        return stored.sort(*SERIES, "bucket_start")
    parts = [
        stored.filter(
            ~pl.col("bucket_start")
            .dt.truncate("1h")
            .is_in(pl.Series(open_hours, dtype=HISTORY_SCHEMA["bucket_start"]).implode())
        )
    ]
    for hour in open_hours:
        raw = read_frame(
            conn,
            "SELECT time, tenant_id, factory_id, machine_id, sensor_id, metric, value "
            f"FROM analytics.raw_sensor_readings WHERE time >= %s AND time < %s AND {where}",
            [hour, hour + HOUR, *params],
            READING_SCHEMA,
        )
        if not raw.is_empty():
            frame = window_aggregates(canonical_order(raw).lazy(), [options.bucket_s]).collect()
            parts.append(frame.select(HISTORY_SCHEMA.keys()).cast(HISTORY_SCHEMA))
    return pl.concat(parts).sort(*SERIES, "bucket_start")


def _insert(conn: psycopg.Connection, rows: pl.DataFrame) -> int:
    """Add the rows not in the table yet, marked live; an existing row (judged before, confirmed,
    resolved or closed) is left exactly as it is."""
    if rows.is_empty():
        return 0
    frame = rows.with_columns(model_version=pl.lit(None, pl.Int32)).select(ANOMALY_COLUMNS)
    with conn.cursor() as cur:
        # the hour's replace_anomalies holds this lock: a live row lands before or after it, never
        # between its reading of what exists and its commit
        lock_results(cur, "analytics_anomaly")
        return _insert_new(cur, "analytics_anomaly", frame, ANOMALY_COLUMNS, KEY, live_stamp="detected_live_at")


def _insert_events(conn: psycopg.Connection, domain: str, events: pl.DataFrame) -> int:
    """Add `domain`'s events not in the table yet; an existing one (the asset's) is left as it is."""
    if events.is_empty():
        return 0
    with conn.cursor() as cur:
        # the asset's replace_events holds this lock: a live row lands before or after its hour
        lock_results(cur, f"analytics_event:{domain}")
        return _insert_new(cur, "analytics_event", events, EVENT_COLUMNS, ", ".join(EVENT_KEY))


def _insert_new(
    cur: psycopg.Cursor,
    table: str,
    frame: pl.DataFrame,
    columns: Sequence[str],
    key: str,
    live_stamp: str | None = None,
) -> int:
    """COPY `frame` into a temporary twin of analytics.`table` and insert the rows whose `key` is not
    there yet (`live_stamp`, if named, set to now()); returns how many were new. The caller holds the
    writers' lock, so the table's asset never replaces rows between this read and the commit."""
    cur.execute(
        f"CREATE TEMP TABLE live_{table} ON COMMIT DROP AS SELECT {', '.join(columns)} "
        f"FROM analytics.{table} WITH NO DATA"
    )
    copy_rows(cur, sql.Identifier(f"live_{table}"), frame, columns)
    stamp, now = (f", {live_stamp}", ", now()") if live_stamp else ("", "")
    cur.execute(
        f"INSERT INTO analytics.{table} ({', '.join(columns)}{stamp}) SELECT {', '.join(columns)}{now} "
        f"FROM live_{table} ON CONFLICT ({key}) DO NOTHING"
    )
    return cur.rowcount
