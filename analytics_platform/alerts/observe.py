"""What each database-backed rule kind sees right now: one query per rule, conditions out.

`now` is a parameter (never the clock), so a test or a replay can evaluate any instant. The
Dagster-backed kinds (check_failed, run_failed) read the Dagster instance and live beside the
alert sensor; they produce the same `Observation`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import psycopg

from analytics_platform.alerts.config import DERIVED_KPIS, RULE_PARAMS
from analytics_platform.alerts.model import ANY, Condition, Observation, Rule, iso
from analytics_platform.transforms import kpi_catalog

HOUR_KEY = "%Y-%m-%d-%H:00"


def asset_link(base_url: str, asset: str, partition: str | None = None) -> str:
    """The Dagster UI page of an asset (and partition)."""
    url = f"{base_url.rstrip('/')}/assets/{quote(asset)}"
    return f"{url}?view=partitions&partition={quote(partition, safe=':')}" if partition else url


def ids(*parts: object) -> str:
    """Sender ids (tenant, factory, machine, sensor, ...) as one part of a fingerprint, joined by `/`.

    A `/` inside an id (an OPC-UA browse path, a line inside a hall) is written `%2F` and a `%` as
    `%25`, so factory "f1/hall-2" with machine "press" and factory "f1" with machine "hall-2/press"
    stay two conditions, never one whose notification the other machine never gets. Ids without
    either character read as before, so conditions stored by an older version keep their identity.
    """
    return "/".join("" if p is None else str(p).replace("%", "%25").replace("/", "%2F") for p in parts)


def _tenant_clause(rule: Rule, column: str = "tenant_id") -> tuple[str, dict]:
    if rule.tenant_id == ANY:
        return "TRUE", {}
    return f"{column} = %(tenant)s", {"tenant": rule.tenant_id}


def anomalies(conn: psycopg.Connection, rule: Rule, now: datetime, ui_url: str) -> Observation:
    """Open anomaly *events* (consecutive anomalous samples of one series, `analytics.anomaly_events`)
    of at least `min_severity` overlapping the last `max_age_hours`: one condition per event, keyed
    by the event's start, so an event that grows stays one alert. Per machine, the first
    `max_per_machine` events of the look-back (by start) get their own condition and every later
    one is folded into one grouped condition for the machine (0 or less: no limit). Events count
    toward the limit whether open or resolved, so resolving one does not move the others."""
    p = rule.params
    hours = float(p["max_age_hours"])
    since = now - timedelta(hours=hours)
    limit = int(p.get("max_per_machine", 3))
    with conn.cursor(row_factory=psycopg.rows.namedtuple_row) as cur:
        events = cur.execute(
            """SELECT event_id, tenant_id, factory_id, machine_id, sensor_id, metric, anomaly_type, start_time,
                      end_time, peak_time, severity, methods, anomalies, status, observed, expected
               FROM analytics.anomaly_events(%(since)s, %(end)s, %(tenant)s::text)
               WHERE severity >= %(min)s AND start_time <= %(now)s
               ORDER BY tenant_id, factory_id, machine_id, start_time, event_id""",
            {
                "since": since,
                "end": now + timedelta(microseconds=1),  # rows at `now` itself count
                "tenant": None if rule.tenant_id == ANY else rule.tenant_id,
                "min": int(p["min_severity"]),
                "now": now,
            },
        ).fetchall()
    per_machine: dict[tuple[str, str, str], list] = {}
    for e in events:
        per_machine.setdefault((e.tenant_id, e.factory_id, e.machine_id), []).append(e)

    def count(n: int, one: str, many: str) -> str:
        return f"{n} {one if n == 1 else many}"

    conditions = []
    still_open = _open_event_starts(conn, rule)
    for (t, f, m), machine_events in per_machine.items():
        own, folded = (machine_events[:limit], machine_events[limit:]) if limit > 0 else (machine_events, [])
        for e in own:
            if e.status != "open":
                continue
            what, methods = e.metric or e.anomaly_type, ", ".join(e.methods)
            series = f"{rule.name}:{ids(t, f, m, e.sensor_id, e.metric)}/event/"
            conditions.append(
                Condition(
                    fingerprint=_event_fingerprint(series, e.start_time, e.end_time, still_open),
                    severity="critical" if e.severity >= 3 else "warning",
                    summary=f"{e.anomaly_type} anomaly event on {what}: {count(e.anomalies, 'anomaly', 'anomalies')}"
                    f" ({methods}), peak severity {e.severity}",
                    tenant_id=t,
                    factory_id=f,
                    machine_id=m,
                    observed_at=e.start_time,
                    details=_clean(
                        {
                            "event_id": e.event_id,
                            "anomalies": e.anomalies,
                            "methods": methods,
                            "severity": e.severity,
                            "peak_time": iso(e.peak_time),
                            "observed": e.observed,
                            "expected": e.expected,
                            "start": iso(e.start_time),
                            "end": iso(e.end_time),
                            "sensor": e.sensor_id,
                        }
                    ),
                    link=asset_link(ui_url, "reading_anomalies", e.start_time.strftime(HOUR_KEY)),
                )
            )
        grouped = [e for e in folded if e.status == "open"]
        if not grouped:
            continue
        first, worst, total = grouped[0].start_time, max(e.severity for e in grouped), sum(e.anomalies for e in grouped)
        conditions.append(
            Condition(
                # keyed by the first folded event (open or not): the group stays one alert as events join it
                fingerprint=f"{rule.name}:{ids(t, f, m)}/grouped/{iso(folded[0].start_time)}",
                severity="critical" if worst >= 3 else "warning",
                summary=f"{count(len(grouped), 'more anomaly event', 'more anomaly events')} on this machine "
                f"(rate limit {limit} per {hours:g} h): {count(total, 'anomaly', 'anomalies')}, peak severity {worst}",
                tenant_id=t,
                factory_id=f,
                machine_id=m,
                observed_at=first,
                details={
                    "events": len(grouped),
                    "event_ids": ", ".join(str(e.event_id) for e in grouped),
                    "anomalies": total,
                    "severity": worst,
                    "start": iso(first),
                    "end": iso(max(e.end_time for e in grouped)),
                },
                link=asset_link(ui_url, "reading_anomalies", first.strftime(HOUR_KEY)),
            )
        )
    return Observation(conditions, horizon=since)


def _open_event_starts(conn: psycopg.Connection, rule: Rule) -> dict[str, list[tuple[datetime, str]]]:
    """The rule's open event conditions: per series part of the fingerprint, (event start, fingerprint)."""
    out: dict[str, list[tuple[datetime, str]]] = {}
    for (fingerprint,) in conn.execute(
        "SELECT fingerprint FROM analytics.alert_conditions WHERE rule_name = %s AND state = 'open' "
        "AND fingerprint LIKE '%%/event/%%'",
        (rule.name,),
    ).fetchall():
        series, _, start = fingerprint.rpartition("/event/")
        try:
            at = datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            continue
        out.setdefault(f"{series}/event/", []).append((at, fingerprint))
    return out


def _event_fingerprint(
    series: str, start: datetime, end: datetime, still_open: dict[str, list[tuple[datetime, str]]]
) -> str:
    """An event's fingerprint: its series and start, or, when the event grew backwards (the hour found
    anomalous samples before the one the live judge flagged), the open condition of the series whose
    start now lies inside it, so the same event stays the same alert and does not notify again."""
    inside = sorted((at, fp) for at, fp in still_open.get(series, []) if start < at <= end)
    return inside[0][1] if inside else f"{series}{iso(start)}"


def devices_offline(conn: psycopg.Connection, rule: Rule, now: datetime, ui_url: str) -> Observation:
    """Machines offline for more than `minutes`: their last status is `offline`, or nothing at all
    (status, score or run state) arrived from them for that long (a dead edge agent is silent)."""
    since = now - timedelta(hours=float(rule.params["lookback_hours"]))
    limit = now - timedelta(minutes=float(rule.params["minutes"]))
    tenant, args = _tenant_clause(rule)
    rows = conn.execute(
        f"""WITH recent AS (
                SELECT tenant_id, factory_id, machine_id, time, status FROM analytics.raw_device_health
                WHERE time > %(since)s AND time <= %(now)s AND {tenant}
            ), latest AS (
                SELECT tenant_id, factory_id, machine_id, max(time) AS last_seen,
                       max(time) FILTER (WHERE status IS NOT NULL AND status <> 'offline') AS last_online,
                       (array_agg(status ORDER BY time DESC) FILTER (WHERE status IS NOT NULL))[1] AS last_status
                FROM recent GROUP BY tenant_id, factory_id, machine_id
            )
            SELECT l.tenant_id, l.factory_id, l.machine_id, l.last_seen, l.last_status,
                   CASE WHEN l.last_status = 'offline' THEN (
                       SELECT min(r.time) FROM recent r
                       WHERE (r.tenant_id, r.factory_id, r.machine_id) = (l.tenant_id, l.factory_id, l.machine_id)
                         AND r.status = 'offline' AND r.time > coalesce(l.last_online, '-infinity'))
                   ELSE l.last_seen END AS offline_since
            FROM latest l
            ORDER BY 1, 2, 3""",
        {"since": since, "now": now, **args},
    ).fetchall()
    conditions = []
    for t, f, m, last_seen, last_status, offline_since in rows:
        reported = last_status == "offline"
        if offline_since >= limit:  # offline for *more than* `minutes`
            continue
        minutes = int((now - offline_since).total_seconds() // 60)
        conditions.append(
            Condition(
                fingerprint=f"{rule.name}:{ids(t, f, m)}",
                severity="critical",
                summary=f"device offline for {minutes} min" + ("" if reported else " (no data received)"),
                tenant_id=t,
                factory_id=f,
                machine_id=m,
                observed_at=offline_since,
                details={"offline_since": iso(offline_since), "last_seen": iso(last_seen), "minutes": minutes},
                link=asset_link(ui_url, "raw_device_health", offline_since.strftime(HOUR_KEY)),
            )
        )
    return Observation(conditions, horizon=since)


def fail_rates(conn: psycopg.Connection, rule: Rule, now: datetime, ui_url: str) -> Observation:
    """Machines whose fail rate over the last `window_minutes` (at least `min_count` verdicts) is
    above `threshold`, per event type (sweep batches by default). The rate is failed / judged, as the
    rollups' own `fail_rate`: events without a verdict (no spec limit, a unit the limit is not in)
    are counted in `count_n` but neither pass nor fail, and must not dilute it."""
    p = rule.params
    start = now - timedelta(minutes=float(p["window_minutes"]))
    tenant, args = _tenant_clause(rule)
    rows = conn.execute(
        f"""SELECT tenant_id, factory_id, machine_id, event_type,
                   sum(coalesce(pass_n, 0) + coalesce(fail_n, 0))::bigint, sum(fail_n)::bigint,
                   min(bucket_start), max(bucket_end), sum(count_n)::bigint
            FROM analytics.analytics_event_rollup
            WHERE window_s = %(bucket)s AND subject = '' AND event_type = ANY(%(types)s)
              AND bucket_start >= %(start)s AND bucket_end <= %(now)s AND {tenant}
            GROUP BY tenant_id, factory_id, machine_id, event_type
            HAVING sum(coalesce(pass_n, 0) + coalesce(fail_n, 0)) >= %(min)s
               AND sum(fail_n)::float8 / nullif(sum(coalesce(pass_n, 0) + coalesce(fail_n, 0)), 0) > %(threshold)s
            ORDER BY 1, 2, 3, 4""",
        {
            "bucket": int(p["bucket_s"]),
            "types": list(p["event_types"]),
            "start": start,
            "now": now,
            "min": int(p["min_count"]),
            "threshold": float(p["threshold"]),
            **args,
        },
    ).fetchall()
    return Observation(
        [
            Condition(
                fingerprint=f"{rule.name}:{ids(t, f, m, etype)}",
                severity=str(p["severity"]),
                summary=f"{etype} fail rate {fails / n:.0%} over {p['window_minutes']} min "
                f"(threshold {float(p['threshold']):.0%})",
                tenant_id=t,
                factory_id=f,
                machine_id=m,
                observed_at=first,
                details={
                    "failed": fails,
                    "judged": n,
                    "count": events,
                    "fail_rate": round(fails / n, 4),
                    "window_end": iso(last),
                },
                link=asset_link(ui_url, "sweep_batch_quality" if etype == "sweep_batch" else "daily_event_rollups"),
            )
            for t, f, m, etype, n, fails, first, last, events in rows
        ]
    )


def lab_out_of_spec(conn: psycopg.Connection, rule: Rule, now: datetime, ui_url: str) -> Observation:
    """Lab results outside their spec limits in the last `lookback_hours`: one condition each."""

    def condition(d: dict, value: object) -> tuple[str, dict]:
        limits = f"[{_num(d.get('lower_limit'))}, {_num(d.get('upper_limit'))}]"
        summary = f"lab {d.get('analyte', '?')} = {_num(value)} {d.get('unit') or ''} outside spec {limits}"
        details = {"analyte": d.get("analyte"), "value": value, "sample": d.get("sample_id")}
        return summary + f" (sample {d.get('sample_id', '?')})", details

    return _failed_events(conn, rule, now, ui_url, "lab_result", "lab_result_quality", condition)


def sweep_out_of_spec(conn: psycopg.Connection, rule: Rule, now: datetime, ui_url: str) -> Observation:
    """Sweep batches with a reading outside their metric's spec limits in the last `lookback_hours`:
    one condition each (`fail_rate` is the rate over many batches; this is the batch itself)."""

    def condition(d: dict, value: object) -> tuple[str, dict]:
        limits = f"[{_num(d.get('lower_limit'))}, {_num(d.get('upper_limit'))}]"
        summary = (
            f"sweep {d.get('metric', '?')}: {_num(d.get('out_of_spec_n'))} of {_num(d.get('n'))} reading(s) outside "
            f"spec {limits} (min {_num(d.get('min'))}, max {_num(d.get('max'))}, batch {_num(d.get('batch_id'))})"
        )
        details = {
            "metric": d.get("metric"),
            "batch": d.get("batch_id"),
            "out_of_spec": d.get("out_of_spec_n"),
            "n": d.get("n"),
            "min": d.get("min"),
            "max": d.get("max"),
        }
        return summary, details

    return _failed_events(conn, rule, now, ui_url, "sweep_batch", "sweep_batch_quality", condition)


def _failed_events(
    conn: psycopg.Connection,
    rule: Rule,
    now: datetime,
    ui_url: str,
    event_type: str,
    asset: str,
    condition: Callable[[dict, object], tuple[str, dict]],
) -> Observation:
    """One condition per failed `event_type` event in the last `lookback_hours`, keyed by the
    event's key and time, the event's identity (so the live judge's row and the asset's rewrite of
    it are one condition); `condition(details, value)` gives its summary and the details beside the
    limits. The key alone is the sender's scope and id, which batches without a batch or event id
    share (every batch of a machine's metric), as do batch ids a line restarts each shift: keyed by
    it alone, a second failed batch joined the first one's open condition and was never notified."""
    since = now - timedelta(hours=float(rule.params["lookback_hours"]))
    tenant, args = _tenant_clause(rule)
    rows = conn.execute(
        f"""SELECT time, tenant_id, factory_id, machine_id, event_key, value, details
            FROM analytics.analytics_event
            WHERE event_type = %(type)s AND passed = false AND time >= %(since)s AND time <= %(now)s AND {tenant}
            ORDER BY time, event_key""",
        {"type": event_type, "since": since, "now": now, **args},
    ).fetchall()
    conditions = []
    for ts, t, f, machine, key, value, details in rows:
        d = details if isinstance(details, dict) else json.loads(details or "{}")
        summary, extra = condition(d, value)
        conditions.append(
            Condition(
                fingerprint=f"{rule.name}:{ids(t, f, machine, key)}@{ts.astimezone(UTC).isoformat()}",
                severity=str(rule.params["severity"]),
                summary=summary,
                tenant_id=t,
                factory_id=f,
                machine_id=machine,
                observed_at=ts,
                details=_clean({**extra, "lower_limit": d.get("lower_limit"), "upper_limit": d.get("upper_limit")}),
                link=asset_link(ui_url, asset, ts.strftime(HOUR_KEY)),
            )
        )
    return Observation(conditions, horizon=since)


def ingest_resets(conn: psycopg.Connection, rule: Rule, now: datetime, ui_url: str) -> Observation:
    """Offset resets the drains recorded in the last `lookback_hours` (analytics.ingest_resets): a
    Kafka log changed under a stored position (broker replaced, topic re-created, retention ran
    past it). One condition per reset; critical when messages expired unread (data Kafka no longer
    has), else `severity` (the drain re-read the new log: nothing lost, but the cause wants a look)."""
    since = now - timedelta(hours=float(rule.params["lookback_hours"]))
    rows = conn.execute(
        """SELECT reset_id, detected_at, consumer, topic, kafka_partition, reason, detail, stored_offset, resumed_at,
                  skipped
           FROM analytics.ingest_resets WHERE detected_at >= %(since)s AND detected_at <= %(now)s
           ORDER BY reset_id""",
        {"since": since, "now": now},
    ).fetchall()
    return Observation(
        [
            Condition(
                fingerprint=f"{rule.name}:{reset_id}",
                severity="critical" if skipped else str(rule.params["severity"]),
                summary=f"Kafka log of {topic}[{partition}] changed under drain {consumer}: {reason}"
                + (f", {skipped} message(s) expired unread" if skipped else f", re-read from offset {resumed}"),
                observed_at=at,
                details=_clean(
                    {
                        "reason": reason,
                        "detail": detail,
                        "stored_offset": stored,
                        "resumed_at": resumed,
                        "skipped": skipped,
                    }
                ),
                link=asset_link(ui_url, "kafka_landing"),
            )
            for reset_id, at, consumer, topic, partition, reason, detail, stored, resumed, skipped in rows
        ],
        horizon=since,
    )


def kpi_thresholds(conn: psycopg.Connection, rule: Rule, now: datetime, ui_url: str) -> Observation:
    """Machines whose `kpi` of each of their `periods` latest ended `period`s (hour, shift, day)
    within `lookback_hours` is strictly below `below` (or above `above`): one condition per
    machine and KPI, so a second bad shift in a row is the same open alert, and the first good
    one resolves it. Periods without a value (no production) are no evidence either way and are
    skipped. `reject_rate` is 1 − quality, computed from the quality row's good and total counts
    (exact for whole counts, not 1 − a rounded ratio)."""
    p = _params(rule)
    since = now - timedelta(hours=float(p["lookback_hours"]))
    kpi = str(p["kpi"])
    stored = DERIVED_KPIS.get(kpi, kpi)
    value = (
        "CASE WHEN (details->>'total')::float8 > 0 THEN ((details->>'total')::float8 - (details->>'good')::float8)"
        " / (details->>'total')::float8 END"
        if kpi == "reject_rate"
        else "value"
    )
    tenant, args = _tenant_clause(rule)
    rows = conn.execute(
        f"""SELECT tenant_id, factory_id, machine_id, period_start, period_end, v, unit, details->>'shift'
            FROM (SELECT *, {value} AS v FROM analytics.analytics_kpi
                  WHERE kpi = %(kpi)s AND period = %(period)s AND period_end > %(since)s AND period_end <= %(now)s
                    AND period_start > %(since)s - INTERVAL '2 days' AND {tenant}) k
            WHERE v IS NOT NULL
            ORDER BY tenant_id, factory_id, machine_id, period_start DESC""",
        {"kpi": stored, "period": p["period"], "since": since, "now": now, **args},
    ).fetchall()
    below = p["below"] is not None
    threshold = float(p["below"] if below else p["above"])
    entry = kpi_catalog.BY_NAME.get(stored)
    percent = entry is not None and entry.format == "percent"

    def show(v: float) -> str:
        return f"{v * 100:.4g} %" if percent else f"{v:.4g}" + (f" {entry.unit}" if entry and entry.unit else "")

    conditions, known = [], set()
    for (t, f, m), latest in _latest(rows, int(p["periods"])).items():
        fingerprint = f"{rule.name}:{ids(t, f, m, kpi)}/{p['period']}"
        known.add(fingerprint)
        if not all((v < threshold) if below else (v > threshold) for *_, v, _, _ in latest):
            continue
        newest, first = latest[0], latest[-1]
        _, _, _, start, end, v, _, shift = newest
        what = f"{p['period']} {shift}" if shift else p["period"]
        run = f" for {len(latest)} {p['period']}s in a row" if len(latest) > 1 else ""
        conditions.append(
            Condition(
                fingerprint=fingerprint,
                severity=str(p["severity"]),
                summary=f"{kpi} of the {what} ending {iso(end)} = {show(v)}, "
                f"{'below' if below else 'above'} {show(threshold)}{run}",
                tenant_id=t,
                factory_id=f,
                machine_id=m,
                observed_at=first[3],
                details=_clean(
                    {
                        "kpi": kpi,
                        "period": p["period"],
                        "shift": shift,
                        "value": v,
                        "threshold": threshold,
                        "period_start": iso(start),
                        "period_end": iso(end),
                        "periods": len(latest),
                    }
                ),
                link=_kpi_link(ui_url, str(p["period"]), start, end),
            )
        )
    return Observation(conditions, horizon=since, known=frozenset(known))


def _kpi_link(ui_url: str, period: str, start: datetime, end: datetime) -> str:
    """The KPI asset partition that wrote a period: the hour itself, or the UTC day a day or shift
    ends in (the daily asset writes the shifts ending within its day)."""
    if period == "hour":
        return asset_link(ui_url, "hourly_machine_kpis", start.astimezone(UTC).strftime(HOUR_KEY))
    last = (end - timedelta(microseconds=1)).astimezone(UTC)
    return asset_link(ui_url, "daily_machine_kpis", last.strftime("%Y-%m-%d"))


def trends(conn: psycopg.Connection, rule: Rule, now: datetime, ui_url: str) -> Observation:
    """Series whose latest trend judgement (analytics.analytics_trend, window `window_hours`, judged
    within `lookback_hours`) is significant (p < `max_p_value`) in `direction` with a Theil–Sen
    slope steeper than `min_slope_per_hour` ("temperature rising by more than X per hour over Y
    hours": min_slope_per_hour X, window_hours Y). One condition per series and direction; it
    resolves when the series' latest judgement no longer says so."""
    p = _params(rule)
    since = now - timedelta(hours=float(p["lookback_hours"]))
    tenant, args = _tenant_clause(rule)
    rows = conn.execute(
        f"""SELECT DISTINCT ON (tenant_id, factory_id, machine_id, sensor_id, name)
                   tenant_id, factory_id, machine_id, sensor_id, name, unit, window_start, window_end, n,
                   slope_per_hour, p_value, direction
            FROM analytics.analytics_trend
            WHERE source = %(source)s AND (%(name)s = '*' OR name = %(name)s) AND window_hours = %(hours)s
              AND window_end > %(since)s AND window_end <= %(now)s AND {tenant}
            ORDER BY tenant_id, factory_id, machine_id, sensor_id, name, window_end DESC""",
        {"source": p["source"], "name": p["name"], "hours": int(p["window_hours"]), "since": since, "now": now, **args},
    ).fetchall()
    wanted = ("increasing", "decreasing") if p["direction"] == "any" else (p["direction"],)
    limit, max_p = float(p["min_slope_per_hour"]), float(p["max_p_value"])
    conditions, known = [], set()
    for t, f, m, sensor, name, unit, start, end, n, slope, p_value, direction in rows:
        for way in wanted:
            fingerprint = f"{rule.name}:{ids(t, f, m, sensor, name)}/{way}"
            known.add(fingerprint)
            steep = slope is not None and (slope > limit if way == "increasing" else slope < -limit)
            if direction != way or p_value >= max_p or not steep:
                continue
            rising = "rising" if way == "increasing" else "falling"
            per_hour = f"{slope:+.4g}" + (f" {unit}" if unit else "") + "/h"
            conditions.append(
                Condition(
                    fingerprint=fingerprint,
                    severity=str(p["severity"]),
                    summary=f"{name} {rising} {per_hour} over {p['window_hours']} h (Mann–Kendall p = {p_value:.2g}, "
                    f"{n} points)",
                    tenant_id=t,
                    factory_id=f,
                    machine_id=m,
                    observed_at=end,
                    details=_clean(
                        {
                            "name": name,
                            "sensor": sensor or None,
                            "slope_per_hour": slope,
                            "p_value": p_value,
                            "n": n,
                            "window_start": iso(start),
                            "window_end": iso(end),
                        }
                    ),
                    link=asset_link(ui_url, "series_trends", end.strftime(HOUR_KEY)),
                )
            )
    return Observation(conditions, horizon=since, known=frozenset(known))


def energy_deviations(conn: psycopg.Connection, rule: Rule, now: datetime, ui_url: str) -> Observation:
    """Machines whose energy deviated from their active baseline's prediction by more than
    `min_pct` % (`direction` above, below or either) in each of their `periods` latest ended
    `period`s within `lookback_hours` (analytics.analytics_baseline_deviation). With the same
    production, SEC above its baseline by X % is energy above its prediction by X %: this kind is
    that rule too. One condition per machine; the first period back within the band resolves it."""
    p = _params(rule)
    since = now - timedelta(hours=float(p["lookback_hours"]))
    tenant, args = _tenant_clause(rule)
    rows = conn.execute(
        f"""SELECT tenant_id, factory_id, machine_id, period_start, period_end, deviation_pct, actual_kwh,
                   predicted_kwh, baseline_version
            FROM analytics.analytics_baseline_deviation
            WHERE period = %(period)s AND period_end > %(since)s AND period_end <= %(now)s
              AND period_start > %(since)s - INTERVAL '2 days' AND deviation_pct IS NOT NULL AND {tenant}
            ORDER BY tenant_id, factory_id, machine_id, period_start DESC""",
        {"period": p["period"], "since": since, "now": now, **args},
    ).fetchall()
    limit, direction = float(p["min_pct"]), p["direction"]

    def beyond(pct: float) -> bool:
        return (direction != "below" and pct > limit) or (direction != "above" and pct < -limit)

    conditions, known = [], set()
    for (t, f, m), latest in _latest(rows, int(p["periods"])).items():
        fingerprint = f"{rule.name}:{ids(t, f, m)}/{p['period']}"
        known.add(fingerprint)
        if not all(beyond(row[5]) for row in latest):
            continue
        _, _, _, start, end, pct, actual, predicted, version = latest[0]
        run = f" for {len(latest)} {p['period']}s in a row" if len(latest) > 1 else ""
        conditions.append(
            Condition(
                fingerprint=fingerprint,
                severity=str(p["severity"]),
                summary=f"energy of the {p['period']} ending {iso(end)} {pct:+.3g} % against the baseline "
                f"({actual:.4g} kWh, predicted {predicted:.4g} kWh; limit {limit:g} %){run}",
                tenant_id=t,
                factory_id=f,
                machine_id=m,
                observed_at=latest[-1][3],
                details={
                    "deviation_pct": pct,
                    "actual_kwh": actual,
                    "predicted_kwh": predicted,
                    "baseline_version": version,
                    "period_start": iso(start),
                    "period_end": iso(end),
                    "periods": len(latest),
                },
                link=asset_link(ui_url, "daily_machine_kpis" if p["period"] == "day" else "reading_anomalies"),
            )
        )
    return Observation(conditions, horizon=since, known=frozenset(known))


def forecast_peaks(conn: psycopg.Connection, rule: Rule, now: datetime, ui_url: str) -> Observation:
    """Factories (or machines) whose newest forecast of the UTC day `days_ahead` after today puts
    `kpi` (peak demand by default) above `above`: compared by the forecast's `value`, or by the top
    of its band with `use: upper` (the cautious reading). One condition per factory or machine and
    target day (analytics.analytics_forecast, the `energy_forecasts` asset): a newer issue of the
    same day that falls back under the limit resolves it; once that day is no longer the one
    looked at, its condition expires without a message."""
    p = _params(rule)
    today = now.astimezone(UTC)
    day = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=int(p["days_ahead"]))
    tenant, args = _tenant_clause(rule)
    machines = "machine_id = '*'" if p["scope"] == "factory" else "machine_id <> '*'"
    rows = conn.execute(
        f"""SELECT DISTINCT ON (tenant_id, factory_id, machine_id)
                   tenant_id, factory_id, machine_id, value, lower, upper, level, unit, issued_at
            FROM analytics.analytics_forecast
            WHERE kpi = %(kpi)s AND period = 'day' AND target_start = %(day)s AND issued_at <= %(now)s
              AND {machines} AND {tenant}
            ORDER BY tenant_id, factory_id, machine_id, issued_at DESC""",
        {"kpi": p["kpi"], "day": day, "now": now, **args},
    ).fetchall()
    limit, use = float(p["above"]), p["use"]
    conditions, known = [], set()
    for t, f, m, value, lower, upper, level, unit, issued in rows:
        machine = None if m == "*" else m
        fingerprint = f"{rule.name}:{ids(t, f, m, p['kpi'])}/{day:%Y-%m-%d}"
        known.add(fingerprint)
        if not (upper if use == "upper" else value) > limit:
            continue
        who = f"{f}'s" if machine is None else machine
        said = f"{value:.4g} {unit} ({level:.0%} band {lower:.4g}–{upper:.4g})"
        summary = (
            f"{who} {p['kpi']} forecast for {day:%Y-%m-%d} (UTC) reaches above {limit:g} {unit}: {said}"
            if use == "upper"
            else f"{who} {p['kpi']} forecast for {day:%Y-%m-%d} (UTC) is above {limit:g} {unit}: {said}"
        )
        conditions.append(
            Condition(
                fingerprint=fingerprint,
                severity=str(p["severity"]),
                summary=summary,
                tenant_id=t,
                factory_id=f,
                machine_id=machine,
                observed_at=day,
                details={
                    "kpi": p["kpi"],
                    "day": f"{day:%Y-%m-%d}",
                    "value": value,
                    "lower": lower,
                    "upper": upper,
                    "limit": limit,
                    "compared": use,
                    "issued_at": iso(issued),
                },
                link=asset_link(ui_url, "energy_forecasts", f"{issued - timedelta(days=1):%Y-%m-%d}"),
            )
        )
    # a condition of an earlier target day (observed_at before `day`) is no longer looked at: it expires
    return Observation(conditions, horizon=day, known=frozenset(known))


def _params(rule: Rule) -> dict:
    """The rule's params over its kind's defaults: a rule built in code (a test, a replay) with only
    the params it changes reads like one loaded from the table."""
    return {**RULE_PARAMS[rule.kind], **rule.params}


def _latest(rows: list[tuple], periods: int) -> dict[tuple, list[tuple]]:
    """Rows (tenant, factory, machine first; newest first per machine) -> per machine its `periods`
    newest rows, only for machines that have that many (fewer is not yet "for N periods")."""
    per_machine: dict[tuple, list[tuple]] = {}
    for row in rows:
        per_machine.setdefault(tuple(row[:3]), []).append(row)
    return {key: found[:periods] for key, found in per_machine.items() if len(found) >= periods}


def _num(value: object) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _clean(details: dict) -> dict:
    return {k: v for k, v in details.items() if v is not None}


Observer = Callable[[psycopg.Connection, Rule, datetime, str], Observation]
OBSERVERS: dict[str, Observer] = {
    "anomaly": anomalies,
    "device_offline": devices_offline,
    "fail_rate": fail_rates,
    "lab_out_of_spec": lab_out_of_spec,
    "sweep_out_of_spec": sweep_out_of_spec,
    "ingest_reset": ingest_resets,
    "kpi_threshold": kpi_thresholds,
    "trend": trends,
    "energy_deviation": energy_deviations,
    "forecast_peak": forecast_peaks,
}
