"""GET /v1/fleet: every machine's live status in one answer (what the dashboard's overview and an
operator's "is the plant talking to us?" both need), plus the data-contract checks failing now.

Machines are not registered anywhere: a machine is whatever sent readings or device health in the
look-back. Finding them must not scan the raw tables, which hold months of readings, so the
series are enumerated by a skip scan (a recursive CTE hopping from one index key to the next):
one index probe per series, whose first entry in (…, time DESC) order is also its newest reading.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from psycopg.rows import tuple_row

from analytics_platform.api.auth import Caller, tenant_scope
from analytics_platform.api.models import ERRORS, OTHER_TENANT, Fleet
from analytics_platform.api.params import OptionalIdentifier, TenantParam
from analytics_platform.api.respond import json_response

router = APIRouter(prefix="/v1", tags=["fleet"])

Machine = tuple[str, str, str]


def _skip_scan(table: str, columns: tuple[str, ...], where: str) -> str:
    """Distinct `columns` of `table` (an index leads with them, then time DESC) with each one's newest
    time: one probe per distinct key instead of a scan of every row."""
    cols = ", ".join(columns)
    prefixed = ", ".join(f"n.{c}" for c in columns)
    previous = ", ".join(f"s.{c}" for c in columns)
    return f"""
        WITH RECURSIVE s AS (
            (SELECT {cols}, time FROM {table} WHERE {where} ORDER BY {cols}, time DESC LIMIT 1)
            UNION ALL
            SELECT {prefixed}, n.time FROM s, LATERAL (
                SELECT {cols}, time FROM {table}
                WHERE ({cols}) > ({previous}) AND {where}
                ORDER BY {cols}, time DESC LIMIT 1
            ) n
        )
        SELECT {cols}, time FROM s"""


def _where(tenant: str | None, factory: str | None, machine: str | None) -> tuple[str, dict[str, Any]]:
    conditions, params = [], {}
    for column, value in (("tenant_id", tenant), ("factory_id", factory), ("machine_id", machine)):
        if value is not None:
            conditions.append(f"{column} = %({column})s")
            params[column] = value
    return " AND ".join(conditions) or "true", params


def _last(table_filter: str, column: str) -> str:
    """The newest non-null `column` of one machine's device health (index on machine, time DESC)."""
    return f"""(SELECT {column} FROM analytics.raw_device_health h
                WHERE (h.tenant_id, h.factory_id, h.machine_id) = (%(t)s, %(f)s, %(m)s) AND h.{column} IS NOT NULL
                  {table_filter}
                ORDER BY h.time DESC LIMIT 1)"""


@router.get(
    "/fleet",
    response_model=Fleet,
    summary="Every machine's live status: online/offline, data freshness, open anomaly events; failing checks",
    description=(
        "Machines that sent sensor readings or device health in the last `lookback_days`, or that have open "
        "anomalies, by tenant, factory and machine. `open_anomalies` counts the machine's open anomaly events "
        "(of any age; an event is open while any of its anomalies is) and `max_open_severity` is their highest "
        "peak severity. A machine is offline when its last reported status is "
        "`offline` or nothing (reading or device health) arrived from it for more than `offline_after_s`. "
        "An admin key sees every tenant unless `tenant_id` is given."
    ),
    responses={**ERRORS, **OTHER_TENANT},
)
def fleet(
    request: Request,
    caller: Caller,
    tenant_id: TenantParam = None,
    factory_id: OptionalIdentifier = None,
    machine_id: OptionalIdentifier = None,
    offline_after_s: Annotated[
        int, Query(ge=10, le=7 * 86400, description="Silence after which a machine counts as offline")
    ] = 600,
    lookback_days: Annotated[int, Query(ge=1, le=90, description="How far back a machine counts as known")] = 7,
) -> Response:
    tenant = tenant_scope(caller, tenant_id, required=False)
    where, params = _where(tenant, factory_id, machine_id)
    with request.app.state.db.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
        as_of: datetime = cur.execute("SELECT now()").fetchone()[0]
        since = as_of - timedelta(days=lookback_days)
        series = cur.execute(
            _skip_scan("analytics.raw_sensor_readings", ("tenant_id", "factory_id", "machine_id", "metric"), where),
            params,
        ).fetchall()
        health = cur.execute(
            _skip_scan("analytics.raw_device_health", ("tenant_id", "factory_id", "machine_id"), where), params
        ).fetchall()
        # open anomaly *events* (consecutive anomalous samples of one series, analytics.anomaly_events)
        # of any age, each with its peak severity. An event is open while any of its rows is, so every
        # open event ends at or after the scope's oldest open row: events are read from that row's time
        # (anomaly_events reads rows from a day before it, as a listing does), not from the table's
        # first row, which every refresh of the overview would otherwise sort through
        open_events = cur.execute(
            f"""SELECT tenant_id, factory_id, machine_id, count(*), max(severity)
                FROM analytics.anomaly_events(
                    (SELECT min(time) FROM analytics.analytics_anomaly WHERE status = 'open' AND {where}),
                    'infinity'::timestamptz, %(events_tenant)s::text)
                WHERE status = 'open' AND {where} GROUP BY 1, 2, 3""",
            {**params, "events_tenant": tenant},
        ).fetchall()

        metrics: dict[Machine, list[dict[str, Any]]] = {}
        for t, f, m, metric, last in series:
            if last >= since:
                metrics.setdefault((t, f, m), []).append({"metric": metric, "last_time": last})
        last_health = {(t, f, m): last for t, f, m, last in health if last >= since}
        anomalies = {(t, f, m): (n, worst) for t, f, m, n, worst in open_events}
        machines = sorted(set(metrics) | set(last_health) | set(anomalies))

        items = []
        for key in machines:
            t, f, m = key
            status = run_state = score = None
            if key in last_health:
                bounded = "AND h.time >= %(since)s"
                status, run_state, score = cur.execute(
                    f"SELECT {_last(bounded, 'status')}, {_last(bounded, 'run_state')}, "
                    f"{_last(bounded, 'health_score')}",
                    {"t": t, "f": f, "m": m, "since": since},
                ).fetchone()
            last_reading = max((s["last_time"] for s in metrics.get(key, ())), default=None)
            last_seen = max((x for x in (last_reading, last_health.get(key)) if x is not None), default=None)
            silent = last_seen is None or (as_of - last_seen).total_seconds() > offline_after_s
            n_open, worst = anomalies.get(key, (0, None))
            items.append(
                {
                    "tenant_id": t,
                    "factory_id": f,
                    "machine_id": m,
                    "status": "offline" if silent or status == "offline" else "online",
                    "last_seen": last_seen,
                    "last_reading_at": last_reading,
                    "freshness_s": None if last_reading is None else (as_of - last_reading).total_seconds(),
                    "device_status": status,
                    "run_state": run_state,
                    "health_score": score,
                    "metrics": sorted(metrics.get(key, ()), key=lambda s: s["metric"]),
                    "open_anomalies": n_open,
                    "max_open_severity": worst,
                }
            )
        checks = None if caller.tenant_id is not None else _failing_checks(cur)
    return json_response(
        {"as_of": as_of, "offline_after_s": offline_after_s, "machines": items, "failing_checks": checks}
    )


def _failing_checks(cur: Any) -> list[dict[str, Any]]:
    """Open conditions of the check_failed rules: the alert sensor already reads the checks' latest
    evaluations from Dagster, so the API serves its verdict instead of reaching into Dagster."""
    rows: Iterable[tuple] = cur.execute(
        """SELECT c.rule_name, c.severity, c.summary, c.details->>'asset', c.details->>'check',
                  c.details->>'partition', c.opened_at, c.last_seen_at, c.link
           FROM analytics.alert_conditions c JOIN analytics.alert_rules r USING (rule_name)
           WHERE c.state = 'open' AND r.kind = 'check_failed'
           ORDER BY c.opened_at, c.fingerprint"""
    ).fetchall()
    names = ("rule_name", "severity", "summary", "asset", "check", "partition", "opened_at", "last_seen_at", "link")
    return [dict(zip(names, row, strict=True)) for row in rows]
