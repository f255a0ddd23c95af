"""GET /v1/quality: a factory's lab pass rates per analyte beside the spec limits they are judged
by, sweep fail rates per machine, and both per hour, in one answer. The event rollups
hold the counts already (GET /v1/event-rollup pages through them); this sums them over a range,
which a dashboard would otherwise do with a page per hour and a second call for the limits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from psycopg.rows import tuple_row

from analytics_platform.api.auth import Caller, tenant_scope
from analytics_platform.api.models import ERRORS, OTHER_TENANT, Quality
from analytics_platform.api.params import End, Identifier, Start, TenantParam, time_range
from analytics_platform.api.respond import json_response

router = APIRouter(prefix="/v1", tags=["kpis and events"])

HOUR_S = 3600
LAB, SWEEP = "lab_result", "sweep_batch"


def _rate(part: int | None, pass_n: int | None, fail_n: int | None) -> float | None:
    """A rate over the verdicts only: results without a spec limit have none and do not count."""
    judged = (pass_n or 0) + (fail_n or 0)
    return None if judged == 0 else (part or 0) / judged


@router.get(
    "/quality",
    response_model=Quality,
    summary="Lab pass rates vs. spec limits per analyte, sweep fail rates, both per hour",
    description=(
        "Sums the hourly event rollups whose hour starts in [start, end). Lab: per analyte, with the spec limit "
        "valid at `end` (the factory's own before the tenant-wide '*' row). Sweep: per machine. A rate "
        "counts verdicts only; a result without a limit has none."
    ),
    responses={**ERRORS, **OTHER_TENANT},
)
def quality(
    request: Request, caller: Caller, factory_id: Identifier, start: Start, end: End, tenant_id: TenantParam = None
) -> Response:
    state = request.app.state
    tenant = tenant_scope(caller, tenant_id, required=True)
    start, end = time_range(start, end, state.settings.api_max_result_range_days)
    scope = {"t": tenant, "f": factory_id, "start": start, "end": end, "w": HOUR_S}
    in_range = (
        "tenant_id = %(t)s AND factory_id = %(f)s AND window_s = %(w)s "
        "AND bucket_start >= %(start)s AND bucket_start < %(end)s"
    )
    # the rollup rows that count each verdict once: lab results are rolled up per analyte (subject),
    # sweep batches per machine as a whole (subject '')
    counted = f"((event_type = '{LAB}' AND subject <> '') OR (event_type = '{SWEEP}' AND subject = ''))"
    with state.db.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
        lab = cur.execute(
            f"""SELECT q.subject, q.n, q.pass_n, q.fail_n, l.lower_limit, l.upper_limit, l.target, l.unit
                FROM (SELECT subject, sum(count_n)::bigint AS n, sum(pass_n)::bigint AS pass_n,
                             sum(fail_n)::bigint AS fail_n
                      FROM analytics.analytics_event_rollup
                      WHERE event_type = '{LAB}' AND subject <> '' AND {in_range}
                      GROUP BY subject) q
                LEFT JOIN LATERAL (
                    SELECT lower_limit, upper_limit, target, unit FROM analytics.analytics_spec_limits s
                    WHERE s.tenant_id = %(t)s AND s.factory_id IN (%(f)s, '*') AND s.scope = 'analyte'
                      AND s.name = q.subject AND s.valid_from < %(end)s
                    ORDER BY s.factory_id = '*', s.valid_from DESC LIMIT 1
                ) l ON true
                ORDER BY q.subject""",
            scope,
        ).fetchall()
        sweep = cur.execute(
            f"""SELECT machine_id, sum(count_n)::bigint, sum(pass_n)::bigint, sum(fail_n)::bigint
                FROM analytics.analytics_event_rollup WHERE event_type = '{SWEEP}' AND subject = '' AND {in_range}
                GROUP BY machine_id ORDER BY machine_id""",
            scope,
        ).fetchall()
        hourly = cur.execute(
            f"""SELECT bucket_start, event_type, sum(count_n)::bigint, sum(pass_n)::bigint, sum(fail_n)::bigint
                FROM analytics.analytics_event_rollup WHERE {counted} AND {in_range}
                GROUP BY bucket_start, event_type ORDER BY bucket_start, event_type""",
            scope,
        ).fetchall()
    body: dict[str, Any] = {
        "tenant_id": tenant,
        "factory_id": factory_id,
        "start": start,
        "end": end,
        "lab": [
            {
                "analyte": analyte,
                "count": n,
                "pass_count": p or 0,
                "fail_count": f or 0,
                "pass_rate": _rate(p, p, f),
                "lower_limit": lower,
                "upper_limit": upper,
                "target": target,
                "unit": unit,
            }
            for analyte, n, p, f, lower, upper, target, unit in lab
        ],
        "sweep": [
            {
                "machine_id": machine,
                "count": n,
                "pass_count": p or 0,
                "fail_count": f or 0,
                "fail_rate": _rate(f, p, f),
            }
            for machine, n, p, f in sweep
        ],
        "hourly": [
            {
                "bucket_start": bucket,
                "event_type": kind,
                "count": n,
                "pass_count": p or 0,
                "fail_count": f or 0,
                "fail_rate": _rate(f, p, f),
            }
            for bucket, kind, n, p, f in hourly
        ],
    }
    return json_response(body)
