"""The live judges: the rules that need no fitted model, applied every few seconds to the rows the
drains just committed (issue 22), so a rule-breaking reading or lab result reaches the alert rules
seconds after it was produced instead of after the next hourly run.

* `judge_committed`: sensor readings outside the catalogue's range or the metric's spec limits
  become anomalies (`transforms.anomalies.limit_anomalies`, the hourly asset's own function over the
  same metrics), so the hour confirms them or closes them `not_confirmed`
  (`results.anomalies.replace_anomalies`).
* `judge_lab_results`: lab results outside their analyte's spec limits become their `lab_result`
  event at once (`transforms.spec_quality.lab_results`, the `lab_result_quality` asset's function),
  for the `lab_out_of_spec` rule; the asset rewrites the hour's events later with the same keys.

Which rows are new is decided by `ingested_at` (the drain transaction's start), with a durable
position per judge in `analytics.live_detection_cursor` that moves in the transaction that writes
the results: a crash re-judges the same rows, and a second pass over them writes nothing
(`ON CONFLICT DO NOTHING` on the result's key). A drain transaction still in flight has rows with
an `ingested_at` older than its commit; so a pass only reads up to the start of the oldest writing
transaction of the database (`pg_stat_activity.backend_xid`), at most `max_wait` in the past
(a longer writer, e.g. a backfill, cannot stall live judgement: the hour judges what this missed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import psycopg
from psycopg import sql

from analytics_platform.contracts.lab import LabContract
from analytics_platform.ingest.store import copy_rows
from analytics_platform.results.anomalies import ANOMALY_COLUMNS, RAW_SCHEMA, AnomalyOptions, metric_filter, read_limits
from analytics_platform.results.events import EVENT_KEY, read_spec_limits
from analytics_platform.results.frames import lock_results, read_frame
from analytics_platform.transforms import anomalies as an
from analytics_platform.transforms.event_rollups import EVENT_COLUMNS
from analytics_platform.transforms.spec_quality import LAB_SCHEMA, lab_results

JUDGE = "limits"  # the sensor readings' judge (its cursor row)
LAB_JUDGE = "lab"
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
                  greatest(now() - %s, least(now(), (
                      SELECT min(xact_start) FROM pg_stat_activity
                      WHERE datname = current_database() AND backend_xid IS NOT NULL
                        AND pid <> pg_backend_pid())))""",
        (judge, max_wait),
    ).fetchone()
    return since, until


def _advance(conn: psycopg.Connection, judge: str, until: datetime, judged: int, flagged: int) -> None:
    conn.execute(
        "UPDATE analytics.live_detection_cursor SET position = %s, judged_rows = judged_rows + %s, "
        "flagged = flagged + %s, updated_at = now() WHERE judge = %s",
        (until, judged, flagged, judge),
    )


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
    failed verdict as its `lab_result` event, the row the `lab_result_quality` asset writes for it.

    Only the failures: they are what the `lab_out_of_spec` rule alerts on, and the asset's hour
    (events and their pass/fail rollups together) stays the one record of the rest. The asset
    replaces its hour later with the same keys, so the alert's condition stays the one it was;
    a result it no longer judges failed (the limits changed) is gone and its condition resolves.
    Results older than `lookback` when they arrive are left to the asset (late data)."""
    with conn.transaction():
        since, until = _span(conn, LAB_JUDGE, max_wait)
        if until <= since:
            return LivePass(0, 0, since, since)
        results = read_frame(
            conn,
            f"SELECT {', '.join(LAB_SCHEMA)} FROM analytics.{LabContract.raw_table} "
            "WHERE ingested_at >= %s AND ingested_at < %s AND time >= now() - %s",
            (since, until, lookback),
            LAB_SCHEMA,
        )
        flagged = 0
        if not results.is_empty():
            failed = lab_results(results, read_spec_limits(conn)).filter(pl.col("passed").eq(False))
            flagged = _insert_events(conn, failed)
        _advance(conn, LAB_JUDGE, until, results.height, flagged)
    return LivePass(results.height, flagged, since, until)


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
        cur.execute(
            "CREATE TEMP TABLE live_anomaly ON COMMIT DROP AS SELECT "
            + ", ".join(ANOMALY_COLUMNS)
            + " FROM analytics.analytics_anomaly WITH NO DATA"
        )
        copy_rows(cur, sql.Identifier("live_anomaly"), frame, ANOMALY_COLUMNS)
        cur.execute(
            f"INSERT INTO analytics.analytics_anomaly ({', '.join(ANOMALY_COLUMNS)}, detected_live_at) "
            f"SELECT {', '.join(ANOMALY_COLUMNS)}, now() FROM live_anomaly ON CONFLICT ({KEY}) DO NOTHING"
        )
        return cur.rowcount


def _insert_events(conn: psycopg.Connection, events: pl.DataFrame) -> int:
    """Add the lab events not in the table yet; an existing one (the asset's) is left as it is."""
    if events.is_empty():
        return 0
    with conn.cursor() as cur:
        # the asset's replace_events holds this lock: a live row lands before or after its hour
        lock_results(cur, f"analytics_event:{LabContract.domain}")
        cur.execute(
            "CREATE TEMP TABLE live_event ON COMMIT DROP AS SELECT "
            + ", ".join(EVENT_COLUMNS)
            + " FROM analytics.analytics_event WITH NO DATA"
        )
        copy_rows(cur, sql.Identifier("live_event"), events, EVENT_COLUMNS)
        cur.execute(
            f"INSERT INTO analytics.analytics_event ({', '.join(EVENT_COLUMNS)}) SELECT {', '.join(EVENT_COLUMNS)} "
            f"FROM live_event ON CONFLICT ({', '.join(EVENT_KEY)}) DO NOTHING"
        )
        return cur.rowcount
