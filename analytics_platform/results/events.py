"""Event rollups of a range of hours (device health, sweep batches, lab results) and of days.

Each domain's hours are replaced in one transaction: its events whose time is in the range, its
rollup buckets in the range, and (device only) the offline periods that began earlier but are
still being closed inside the range, which are upserted by key with their final end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg

from analytics_platform.contracts.device import DeviceHealthContract
from analytics_platform.contracts.lab import LabContract
from analytics_platform.contracts.sweep import SweepContract
from analytics_platform.ingest.store import copy_rows
from analytics_platform.results.frames import lock_results, read_frame
from analytics_platform.settings import get_settings
from analytics_platform.transforms import device_health as device
from analytics_platform.transforms.event_rollups import (
    EVENT_COLUMNS,
    ROLLUP_COLUMNS,
    ROLLUP_SCHEMA,
    daily_rollup,
    rollup_events,
    rollup_windows,
)
from analytics_platform.transforms.spec_quality import (
    LAB_RESULT,
    LAB_SCHEMA,
    LIMIT_SCHEMA,
    SWEEP_BATCH,
    SWEEP_SCHEMA,
    lab_results,
    sweep_batches,
)

# the event types each domain writes (and so replaces)
EVENT_TYPES = {
    DeviceHealthContract.domain: (device.DEVICE_HEALTH, device.STATUS_CHANGE, device.OFFLINE_PERIOD),
    SweepContract.domain: (SWEEP_BATCH,),
    LabContract.domain: (LAB_RESULT,),
}
EVENT_KEY = ("tenant_id", "factory_id", "machine_id", "event_type", "event_key", "time")


@dataclass
class EventRun:
    domain: str
    inputs: int
    events: int
    rollups: int
    deleted: int
    # the [start, end) ranges whose events and rollups were replaced: a device recompute also replaces
    # hours outside the range it was asked for (carried, silenced, filled), which the asset reports to
    # Dagster so that the day rollups of those hours follow them
    replaced: list[tuple[datetime, datetime]] = field(default_factory=list)


def read_spec_limits(conn: psycopg.Connection) -> pl.DataFrame:
    """Every spec limit (LIMIT_SCHEMA) and its `unit`: a result in another unit gets no verdict."""
    return read_frame(
        conn,
        "SELECT tenant_id, factory_id, scope, name, lower_limit, upper_limit, target, "
        "nullif(valid_from, '-infinity'), unit "
        "FROM analytics.analytics_spec_limits",
        None,
        {**LIMIT_SCHEMA, "unit": pl.String()},
    )


def replace_events(
    conn: psycopg.Connection,
    domain: str,
    events: pl.DataFrame,
    rollups: pl.DataFrame,
    windows: Sequence[int],
    start: datetime,
    end: datetime,
) -> int:
    """Replace `domain`'s events and rollups of [start, end) in one transaction."""
    types = list(EVENT_TYPES[domain])
    earlier = events.filter(pl.col("time") < start)  # offline periods begun before the range
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, f"analytics_event:{domain}")
        cur.execute(
            "DELETE FROM analytics.analytics_event WHERE domain = %s AND time >= %s AND time < %s",
            (domain, start, end),
        )
        deleted = cur.rowcount
        if not earlier.is_empty():
            cur.executemany(
                "DELETE FROM analytics.analytics_event WHERE tenant_id = %s AND factory_id = %s "
                "AND machine_id = %s AND event_type = %s AND event_key = %s AND time = %s",
                list(earlier.select(EVENT_KEY).iter_rows()),
            )
        cur.execute(
            "DELETE FROM analytics.analytics_event_rollup WHERE event_type = ANY(%s) AND window_s = ANY(%s) "
            "AND bucket_start >= %s AND bucket_start < %s",
            (types, list(windows), start, end),
        )
        deleted += cur.rowcount
        copy_rows(cur, "analytics_event", events, EVENT_COLUMNS)
        copy_rows(cur, "analytics_event_rollup", rollups, ROLLUP_COLUMNS)
    return deleted


def _device_inputs(conn: psycopg.Connection, start: datetime, end: datetime, lookback: timedelta) -> tuple:
    health = read_frame(
        conn,
        "SELECT time, tenant_id, factory_id, machine_id, status, level, health_score "
        "FROM analytics.raw_device_health WHERE time >= %s AND time < %s",
        (start, end),
        device.HEALTH_SCHEMA,
    )
    # each machine's last status before the range, and since when that status has held
    prior = read_frame(
        conn,
        """
        WITH last AS (
            SELECT DISTINCT ON (tenant_id, factory_id, machine_id)
                   tenant_id, factory_id, machine_id, time, status, level
            FROM analytics.raw_device_health
            WHERE status IS NOT NULL AND time < %(start)s AND time >= %(horizon)s
            ORDER BY tenant_id, factory_id, machine_id, time DESC, status DESC
        )
        SELECT l.tenant_id, l.factory_id, l.machine_id, l.status, l.level,
               coalesce((SELECT min(r.time) FROM analytics.raw_device_health r
                         WHERE r.tenant_id = l.tenant_id AND r.factory_id = l.factory_id
                           AND r.machine_id = l.machine_id AND r.status = l.status
                           AND r.time < %(start)s
                           AND r.time > coalesce((SELECT max(o.time) FROM analytics.raw_device_health o
                                                  WHERE o.tenant_id = l.tenant_id AND o.factory_id = l.factory_id
                                                    AND o.machine_id = l.machine_id AND o.status <> l.status
                                                    AND o.time < l.time AND o.time >= %(horizon)s),
                                                 %(horizon)s - interval '1 microsecond')),
                        l.time) AS since,
               (SELECT max(s.time) FROM analytics.raw_device_health s
                WHERE s.tenant_id = l.tenant_id AND s.factory_id = l.factory_id AND s.machine_id = l.machine_id
                  AND s.time < %(start)s AND s.time >= l.time) AS last_seen
        FROM last l""",
        {"start": start, "horizon": start - lookback},
        {**device.PRIOR_SCHEMA, device.LAST_SEEN: device.TIME},
    )
    next_up = read_frame(
        conn,
        """SELECT DISTINCT ON (tenant_id, factory_id, machine_id) tenant_id, factory_id, machine_id, time
           FROM analytics.raw_device_health
           WHERE status IS NOT NULL AND status <> %s AND time >= %s AND time < %s
           ORDER BY tenant_id, factory_id, machine_id, time""",
        (device.OFFLINE, end, end + lookback),
        device.NEXT_UP_SCHEMA,
    )
    # the first message of any kind at or after the range of each machine seen in it or before it:
    # where a silence reaching past the range's end ends. One probe of the key index per machine: a
    # backfilled hour has up to the look-back's week of messages after it, which a scan would sort.
    machines = pl.concat([health.select(device.MACHINE_KEY), prior.select(device.MACHINE_KEY)]).unique()
    next_seen = read_frame(
        conn,
        """SELECT m.tenant_id, m.factory_id, m.machine_id, n.time
           FROM unnest(%s::text[], %s::text[], %s::text[]) AS m(tenant_id, factory_id, machine_id)
           CROSS JOIN LATERAL (
               SELECT r.time FROM analytics.raw_device_health r
               WHERE r.tenant_id = m.tenant_id AND r.factory_id = m.factory_id AND r.machine_id = m.machine_id
                 AND r.time >= %s AND r.time < %s
               ORDER BY r.time LIMIT 1) n""",
        (*(machines[c].to_list() for c in device.MACHINE_KEY), end, end + lookback),
        device.NEXT_SEEN_SCHEMA,
    )
    return health, prior, next_up, next_seen


@dataclass(frozen=True)
class Silence:
    """How long a machine may send nothing before it is offline from its last message (the
    `device_offline` alert's minutes, DEVICE_OFFLINE_MINUTES), and the clock that tells how long a
    silence still going on has lasted."""

    offline_after: timedelta
    now: datetime


def silence_rule(offline_after: timedelta | None = None, now: datetime | None = None) -> Silence:
    """The settings' DEVICE_OFFLINE_MINUTES and the clock, unless given."""
    minutes = get_settings().device_offline_minutes
    return Silence(
        timedelta(minutes=minutes) if offline_after is None else offline_after,
        datetime.now(UTC) if now is None else now,
    )


def recompute_device(
    conn: psycopg.Connection,
    windows: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    lookback: timedelta,
    offline_after: timedelta | None = None,
    now: datetime | None = None,
) -> EventRun:
    """Status changes, offline periods, uptime and health-score rollups of [start, end), and of the
    rolled-up hours after it that carried a status from it (`_carried_hours`), and before it that a
    silence reaching into it makes offline (`_silenced_hours`).

    Uptime runs to `end`, not to now: a status holds until the next message, so a running hour
    shows the current status carried to its end and, once over, equals what a backfill computes.
    A machine silent for more than `offline_after` (DEVICE_OFFLINE_MINUTES by default) is offline
    from its last message, as the `device_offline` alert says; `now` (the clock) tells how long a
    silence not yet ended has lasted.
    """
    silence = silence_rule(offline_after, now)
    run, events = _device_range(conn, windows, start, end, lookback, silence)
    crossing = events.filter(
        (pl.col("event_type") == device.OFFLINE_PERIOD)
        & (pl.col("time") < start)
        & pl.col("details").str.contains('"no_data":true', literal=True)
    ).select(*device.MACHINE_KEY, "time")
    last = conn.execute(
        "SELECT max(bucket_start) FROM analytics.analytics_event_rollup WHERE event_type = %s AND window_s = 3600 "
        "AND bucket_start < %s AND bucket_start >= %s",
        (device.DEVICE_HEALTH, start, start - lookback),
    ).fetchone()[0]
    if last is not None:
        filled = fill_silent_hours(
            conn, windows, last + timedelta(hours=1), start, lookback=lookback, now=start, silence=silence
        )
        _add(run, filled)
    for hour in _carried_hours(conn, start, end, lookback):
        _add(run, _recompute_device_range(conn, windows, hour, hour + timedelta(hours=1), lookback, silence))
    for hour in _silenced_hours(conn, start - lookback, start, lookback, silence):
        _add(run, _recompute_device_range(conn, windows, hour, hour + timedelta(hours=1), lookback, silence))
    for hour in _unsilenced_hours(conn, start, lookback, crossing):
        _add(run, _recompute_device_range(conn, windows, hour, hour + timedelta(hours=1), lookback, silence))
    return run


def _unsilenced_hours(
    conn: psycopg.Connection, start: datetime, lookback: timedelta, crossing: pl.DataFrame
) -> list[datetime]:
    """The hours before `start` that hold a stored silence reaching past `start` which the range's own
    run no longer finds (`crossing`: the silences begun before `start` that it found): a late message
    just after `start` broke it up (nothing from 10:55 to 11:07, then the 11:01 heartbeat lands). The
    hour the silence began in, and those after it, counted it offline; only the late hour was re-run."""
    stored = read_frame(
        conn,
        """SELECT tenant_id, factory_id, machine_id, time FROM analytics.analytics_event
           WHERE domain = %s AND event_type = %s AND time < %s AND time >= %s
             AND (end_time IS NULL OR end_time > %s) AND (details::jsonb->>'no_data')::boolean""",
        (DeviceHealthContract.domain, device.OFFLINE_PERIOD, start, start - lookback, start),
        {**{c: pl.String() for c in device.MACHINE_KEY}, "time": device.TIME},
    )
    gone = stored.join(crossing, on=[*device.MACHINE_KEY, "time"], how="anti")
    hours: set[datetime] = set()
    for began in gone["time"]:
        hour = began.replace(minute=0, second=0, microsecond=0)
        while hour < start:
            hours.add(hour.astimezone(UTC))
            hour += timedelta(hours=1)
    return sorted(hours)


def _silenced_hours(
    conn: psycopg.Connection, since: datetime, at: datetime, lookback: timedelta, silence: Silence
) -> list[datetime]:
    """The rolled-up hours of [since, at) that a machine's silence reaching `at` covers but which do
    not count it offline yet: computed before the silence had lasted `offline_after` (an hour rolled
    up at 10:58 with the machine's last message at 10:55), they held its status to their end.

    Only hours are recomputed whose stored offline seconds fall short of the silence's share of them,
    so a silence that every hour already counts costs this one query."""
    rows = conn.execute(
        """
        WITH machines AS (
            -- the machines rolled up before `at`: only they have hours to refresh (and a known status)
            SELECT DISTINCT tenant_id, factory_id, machine_id FROM analytics.analytics_event_rollup
            WHERE event_type = %(type)s AND window_s = 3600 AND bucket_start >= %(since)s AND bucket_start < %(at)s
        ), last AS (
            -- each one's last message before `at`: one probe of the key index per machine, not a sort of
            -- the look-back's messages
            SELECT m.tenant_id, m.factory_id, m.machine_id, s.time AS seen, s.status AS seen_status FROM machines m
            CROSS JOIN LATERAL (
                SELECT r.time, r.status FROM analytics.raw_device_health r
                WHERE r.tenant_id = m.tenant_id AND r.factory_id = m.factory_id AND r.machine_id = m.machine_id
                  AND r.time < %(at)s AND r.time >= %(horizon)s
                ORDER BY r.time DESC, r.status DESC NULLS LAST LIMIT 1) s  -- a status sent with a score decides
        ), silent AS (
            SELECT l.* FROM last l
            WHERE coalesce((SELECT min(n.time) FROM analytics.raw_device_health n
                            WHERE n.tenant_id = l.tenant_id AND n.factory_id = l.factory_id
                              AND n.machine_id = l.machine_id AND n.time >= %(at)s AND n.time < %(reach)s),
                           %(now)s) - l.seen > %(after)s
              -- a silence counts from a known status other than offline (offline already counts)
              AND (SELECT s.status FROM analytics.raw_device_health s
                   WHERE s.tenant_id = l.tenant_id AND s.factory_id = l.factory_id AND s.machine_id = l.machine_id
                     AND s.status IS NOT NULL AND s.time <= l.seen AND s.time >= %(horizon)s
                   ORDER BY s.time DESC, s.status DESC LIMIT 1) <> %(offline)s
              -- ... and only after a heartbeat: a last message that changed the status (an agent
              -- reporting on change) is the status holding (transforms/device_health.py)
              AND (l.seen_status IS NULL OR l.seen_status IS NOT DISTINCT FROM (
                   SELECT p.status FROM analytics.raw_device_health p
                   WHERE p.tenant_id = l.tenant_id AND p.factory_id = l.factory_id AND p.machine_id = l.machine_id
                     AND p.status IS NOT NULL AND p.time < l.seen AND p.time >= %(horizon)s
                   ORDER BY p.time DESC, p.status DESC LIMIT 1))
        )
        SELECT DISTINCT r.bucket_start FROM silent g
        JOIN analytics.analytics_event_rollup r
          ON r.event_type = %(type)s AND r.window_s = 3600 AND r.tenant_id = g.tenant_id
         AND r.factory_id = g.factory_id AND r.machine_id = g.machine_id
         AND r.bucket_start >= greatest(%(since)s, date_bin('1 hour', g.seen, timestamptz '2000-01-01'))
         AND r.bucket_start < %(at)s
        WHERE coalesce((r.details::jsonb->>'offline_s')::float8, 0) + 1e-6
              < extract(epoch FROM r.bucket_start + interval '1 hour' - greatest(r.bucket_start, g.seen))
        ORDER BY 1""",
        {
            "at": at,
            "since": since,
            "horizon": at - lookback,
            "reach": at + lookback,
            "now": silence.now,
            "after": silence.offline_after,
            "offline": device.OFFLINE,
            "type": device.DEVICE_HEALTH,
        },
    ).fetchall()
    return [r[0].astimezone(UTC) for r in rows]  # in UTC whatever the session's TimeZone


def _add(run: EventRun, more: EventRun) -> None:
    run.inputs, run.events, run.rollups = run.inputs + more.inputs, run.events + more.events, run.rollups + more.rollups
    run.deleted += more.deleted
    run.replaced += more.replaced


def fill_silent_hours(
    conn: psycopg.Connection,
    windows: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    lookback: timedelta,
    now: datetime,
    silence: Silence | None = None,
) -> EventRun:
    """Roll up the hours of [start, end) that ended by `now` and were never rolled up although a
    machine had a status before them (within `lookback`): hours in which nobody sent anything.

    Only hours that receive messages are materialised, so a machine that went offline at 10:10
    before the whole site fell silent would have the rest of its day missing from its uptime. A
    status holds until the next one, so those hours carry each machine's last state, as an hour
    with messages from other machines carries it. Hours that have not ended are left to come:
    their state is not known yet. `silence` judges the machines silent meanwhile (the settings' and
    the clock's by default)."""
    silence = silence or silence_rule()
    run = EventRun(DeviceHealthContract.domain, 0, 0, 0, 0)
    if end <= start:
        return run
    hours = conn.execute(
        """SELECT h FROM generate_series(%(start)s::timestamptz, %(last)s::timestamptz, interval '1 hour') h
           WHERE h + interval '1 hour' <= %(now)s
             AND NOT EXISTS (SELECT 1 FROM analytics.analytics_event_rollup r
                             WHERE r.event_type = %(type)s AND r.window_s = 3600 AND r.bucket_start = h)
             AND EXISTS (SELECT 1 FROM analytics.raw_device_health d
                         WHERE d.status IS NOT NULL AND d.time < h AND d.time >= h - %(lookback)s)
           ORDER BY 1""",
        {
            "start": start,
            "last": end - timedelta(hours=1),
            "now": now,
            "type": device.DEVICE_HEALTH,
            "lookback": lookback,
        },
    ).fetchall()
    for (hour,) in hours:
        hour = hour.astimezone(UTC)  # in UTC whatever the session's TimeZone (see _carried_hours)
        _add(run, _recompute_device_range(conn, windows, hour, hour + timedelta(hours=1), lookback, silence))
    return run


def _carried_hours(conn: psycopg.Connection, start: datetime, end: datetime, lookback: timedelta) -> list[datetime]:
    """The hours after `end`, already rolled up, that carried a status of [start, end) which landed
    after they were computed.

    A status holds until the next one, so the hours after a machine's statuses of [start, end) carry
    the last of them, up to and including the hour of its next status message. When late messages
    change that range (an edge agent replaying an outage in order: offline at 10:10, online at 12:15),
    the automation recomputes only the hours that received messages; hour 11 would keep the status
    it carried before and count the machine up while it was offline. Only statuses that landed after
    an hour was computed (`ingested_at` > its `computed_at`) make it stale, so live processing (the
    newest hour has nothing rolled up after it) and a recompute without late data cost one query.
    """
    rows = conn.execute(
        """
        WITH landed AS (
            SELECT tenant_id, factory_id, machine_id, max(ingested_at) AS landed
            FROM analytics.raw_device_health
            WHERE status IS NOT NULL AND time >= %(start)s AND time < %(end)s
            GROUP BY tenant_id, factory_id, machine_id
        ), reach AS (
            SELECT l.landed,
                   coalesce((SELECT min(r.time) FROM analytics.raw_device_health r
                             WHERE r.tenant_id = l.tenant_id AND r.factory_id = l.factory_id
                               AND r.machine_id = l.machine_id AND r.status IS NOT NULL
                               AND r.time >= %(end)s AND r.time < %(horizon)s),
                            %(horizon)s) AS until
            FROM landed l
        ), hours AS (
            SELECT bucket_start, min(computed_at) AS computed FROM analytics.analytics_event_rollup
            WHERE event_type = %(type)s AND window_s = 3600 AND bucket_start >= %(end)s AND bucket_start < %(horizon)s
            GROUP BY bucket_start
        )
        SELECT h.bucket_start FROM hours h
        WHERE EXISTS (SELECT 1 FROM reach r WHERE h.bucket_start <= r.until AND r.landed > h.computed)
        ORDER BY 1""",
        {"start": start, "end": end, "horizon": end + lookback, "type": device.DEVICE_HEALTH},
    ).fetchall()
    # in UTC whatever the session's TimeZone (a server set to 'Etc/UTC' gives that zone, which Polars
    # refuses to compare with the range's UTC)
    return [r[0].astimezone(UTC) for r in rows]


def _recompute_device_range(
    conn: psycopg.Connection,
    windows: Sequence[int],
    start: datetime,
    end: datetime,
    lookback: timedelta,
    silence: Silence,
) -> EventRun:
    """Status changes, offline periods, uptime and health-score rollups of [start, end) alone."""
    return _device_range(conn, windows, start, end, lookback, silence)[0]


def _device_range(
    conn: psycopg.Connection,
    windows: Sequence[int],
    start: datetime,
    end: datetime,
    lookback: timedelta,
    silence: Silence,
) -> tuple[EventRun, pl.DataFrame]:
    """`_recompute_device_range`, and the events it wrote."""
    health, prior, next_up, next_seen = _device_inputs(conn, start, end, lookback)
    windows = rollup_windows(windows)
    # an hour in which no machine reported anything carries each machine's last status, as live
    # processing now rolls such hours up too (fill_silent_hours)
    result = device.device_health(
        health,
        prior,
        next_up,
        start=start,
        end=end,
        until=end,
        windows=windows,
        next_seen=next_seen,
        offline_after=silence.offline_after,
        now=silence.now,
    )
    deleted = replace_events(conn, DeviceHealthContract.domain, result.events, result.rollups, windows, start, end)
    run = EventRun(
        DeviceHealthContract.domain,
        health.height,
        result.events.height,
        result.rollups.height,
        deleted,
        [(start, end)],
    )
    return run, result.events


SPEC_QUALITY = {
    # domain: (raw query, its schema, the transform judging it against spec limits)
    SweepContract.domain: (
        "SELECT time, tenant_id, factory_id, machine_id, metric, batch_id, unit, reading_values, dedup_key "
        f"FROM analytics.{SweepContract.raw_table} WHERE time >= %s AND time < %s",
        SWEEP_SCHEMA,
        sweep_batches,
    ),
    LabContract.domain: (
        "SELECT time, tenant_id, factory_id, station_id, sample_id, analyte, value, unit, dedup_key "
        f"FROM analytics.{LabContract.raw_table} WHERE time >= %s AND time < %s",
        LAB_SCHEMA,
        lab_results,
    ),
}


def recompute_quality(
    conn: psycopg.Connection, domain: str, windows: Sequence[int], start: datetime, end: datetime
) -> EventRun:
    """Sweep batch or lab result verdicts against the spec limits in the table now, and their
    fail / pass rates per machine (sweep) or station and analyte (lab), of [start, end).

    The hour is read under the writers' lock it is replaced under: the live judge stores a failed
    verdict under that lock too, so a result that landed (and was judged live) after a read made
    before the lock would have its event deleted by the replace, and its alert resolved and
    re-opened by the next run. Read after the lock, the run either sees the result or the live
    event is written after the run."""
    query, schema, judge = SPEC_QUALITY[domain]
    windows = rollup_windows(windows)
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, f"analytics_event:{domain}")
        inputs = read_frame(conn, query, (start, end), schema)
        events = judge(inputs, read_spec_limits(conn))
        rollups = rollup_events(events, windows, start, end)
        deleted = replace_events(conn, domain, events, rollups, windows, start, end)
    return EventRun(domain, inputs.height, events.height, rollups.height, deleted)


def recompute_days(
    conn: psycopg.Connection,
    domains: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    windows: Sequence[int],
    lookback: timedelta,
    now: datetime | None = None,
    offline_after: timedelta | None = None,
) -> EventRun:
    """Day rollups of [start, end) (whole days) from the hourly rollups of `domains`; with the device
    domain, its silent hours that have ended by `now` (the clock by default) are rolled up first
    (`fill_silent_hours`), so a day's uptime counts the hours after a site fell silent, and the hours
    rolled up before a machine's silence had lasted `offline_after` are recomputed (`_silenced_hours`)."""
    if DeviceHealthContract.domain in domains:
        silence = silence_rule(offline_after, now)
        fill_silent_hours(conn, windows, start, end, lookback=lookback, now=silence.now, silence=silence)
        at = min(end, silence.now.replace(minute=0, second=0, microsecond=0))
        if at > start:
            for hour in _silenced_hours(conn, start, at, lookback, silence):
                _recompute_device_range(conn, windows, hour, hour + timedelta(hours=1), lookback, silence)
    types = [t for d in domains for t in EVENT_TYPES[d]]
    hourly = read_frame(
        conn,
        f"SELECT {', '.join(ROLLUP_COLUMNS)} FROM analytics.analytics_event_rollup "
        "WHERE window_s = 3600 AND event_type = ANY(%s) AND bucket_start >= %s AND bucket_start < %s",
        (types, start, end),
        ROLLUP_SCHEMA,
    )
    days = daily_rollup(hourly)
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, "analytics_event_rollup:day")
        cur.execute(
            "DELETE FROM analytics.analytics_event_rollup WHERE window_s = 86400 AND event_type = ANY(%s) "
            "AND bucket_start >= %s AND bucket_start < %s",
            (types, start, end),
        )
        deleted = cur.rowcount
        copy_rows(cur, "analytics_event_rollup", days, ROLLUP_COLUMNS)
    return EventRun("day", hourly.height, 0, days.height, deleted)
