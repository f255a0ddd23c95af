"""The live judge: the rules that need no fitted model, applied every few seconds to the sensor
readings the drains just committed (issue 22), so an out-of-range reading is an anomaly seconds
after it was produced instead of after the next hourly run.

Which rows are new is decided by `ingested_at` (the drain transaction's start, indexed), with a
durable position in `analytics.live_detection_cursor` that moves in the transaction that writes
the anomalies: a crash re-judges the same rows, and a second pass over them writes nothing
(`ON CONFLICT DO NOTHING` on the anomaly key). A drain transaction still in flight has rows with
an `ingested_at` older than its commit; so a pass only reads up to the start of the oldest writing
transaction of the database (`pg_stat_activity.backend_xid`), at most `max_wait` in the past
(a longer writer, e.g. a backfill, cannot stall live judgement: the hour judges what this missed).

The rows are exactly the hourly asset's (`transforms.anomalies.limit_anomalies` over the same
metrics), so the hour confirms them or closes them `not_confirmed` (`results.anomalies.replace_anomalies`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import psycopg
from psycopg import sql

from analytics_platform.ingest.store import copy_rows
from analytics_platform.results.anomalies import ANOMALY_COLUMNS, RAW_SCHEMA, AnomalyOptions, metric_filter, read_limits
from analytics_platform.results.frames import lock_results, read_frame
from analytics_platform.transforms import anomalies as an

JUDGE = "limits"
KEY = "tenant_id, factory_id, machine_id, method, anomaly_type, time, sensor_id, metric"


@dataclass(frozen=True)
class LivePass:
    """What one pass judged: rows read, anomalies new to the table, and the cursor span."""

    judged: int
    flagged: int
    since: datetime
    until: datetime


def judge_committed(
    conn: psycopg.Connection,
    options: AnomalyOptions,
    lookback: timedelta = timedelta(minutes=10),
    max_wait: timedelta = timedelta(seconds=30),
) -> LivePass:
    """Judge the sensor readings committed since the cursor and store the anomalies found.

    Readings older than `lookback` when they arrive are left to the hourly asset (late data: their
    hour may be judged already, and a live row nobody confirms would stay pending). A first pass
    starts at the database's `now()`: history is the hour's business."""
    where, params = metric_filter(options)
    with conn.transaction():
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
            (JUDGE, max_wait),
        ).fetchone()
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
        conn.execute(
            "UPDATE analytics.live_detection_cursor SET position = %s, judged_rows = judged_rows + %s, "
            "flagged = flagged + %s, updated_at = now() WHERE judge = %s",
            (until, readings.height, flagged, JUDGE),
        )
    return LivePass(readings.height, flagged, since, until)


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
