"""Anomalies of one hour: read the hour's readings, the trailing window aggregates (the statistics
and the Isolation Forests learn from those, not from raw rows), run states and production
counters; load (or fit and persist) the per-series models; judge the hour; compare its energy with
the active baseline; replace the hour's anomalies, keeping the resolution of those that remain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from itertools import pairwise

import polars as pl
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from analytics_platform.ingest import catalog as metric_catalog
from analytics_platform.ingest.store import copy_rows
from analytics_platform.results import baselines
from analytics_platform.results.aggregates import chunks
from analytics_platform.results.events import read_spec_limits
from analytics_platform.results.frames import lock_results, read_frame, sibling
from analytics_platform.results.kpis import read_run_states
from analytics_platform.transforms import anomalies as an
from analytics_platform.transforms import machine_kpis as mk
from analytics_platform.transforms import seasonal as se
from analytics_platform.transforms.energy_kpis import counter_increments
from analytics_platform.transforms.window_aggregates import SERIES_KEY, TIME

log = logging.getLogger(__name__)
MACHINE = mk.MACHINE
SERIES = SERIES_KEY
ANOMALY_COLUMNS = [*an.ANOMALY_SCHEMA, "model_version"]
# cumulative counters are judged as production (stoppage), never as values
NOT_JUDGED = ("energy", "count_total", "count_good")
# a machine's readings are judged while it runs (or when it reports no run state at all): a
# stopped, idle or faulty machine's power and temperatures legitimately leave their running range
NOT_RUNNING = ("idle", "planned_stop", "maintenance", "fault")
HISTORY_SCHEMA: dict[str, pl.DataType] = {
    "bucket_start": TIME,
    "bucket_end": TIME,
    **{c: pl.String() for c in SERIES},
    "count_n": pl.Int64(),
    "sum_v": pl.Float64(),
    "avg_v": pl.Float64(),
    "min_v": pl.Float64(),
    "max_v": pl.Float64(),
    "stddev_v": pl.Float64(),
}
RAW_SCHEMA: dict[str, pl.DataType] = {"time": TIME, **{c: pl.String() for c in SERIES}, "value": pl.Float64()}


@dataclass(frozen=True)
class AnomalyOptions:
    bucket_s: int = 60
    training_hours: int = 24
    refit_hours: int = 24
    contamination: float = 0.01
    trees: int = 50
    metrics: tuple[str, ...] = ()  # empty = every metric but the counters and `skip_metrics`
    skip_metrics: tuple[str, ...] = ()  # ANOMALY_SKIP_METRICS: named by the operator, never implied
    stoppage_minutes: int = 10
    state_lookback: timedelta = timedelta(hours=168)
    seasonal: se.SeasonalOptions = field(default_factory=se.SeasonalOptions)
    fit_workers: int = 2  # processes fitting forests (the forests do not depend on it): one per core here

    def __post_init__(self) -> None:
        # the profiles' samples are the aggregates this reads: one bucket size, given once
        if self.seasonal.bucket_s != self.bucket_s:
            object.__setattr__(self, "seasonal", replace(self.seasonal, bucket_s=self.bucket_s))


@dataclass(frozen=True)
class AnomalyRun:
    readings: int
    anomalies: int
    by_method: dict[str, int]
    models_fitted: int
    models_reused: int
    deviations: int
    deleted: int
    profiles_learned: int = 0
    learning: int = 0  # series in the hour with too little history to be judged yet


@dataclass(frozen=True)
class Scope:
    """What a run judges and rewrites: every series and method (the schedule, a backfill), or one
    tenant's factory or machine and some methods (a detection requested through the API).

    Every judgement is per series (profiles, statistics, forests) or per machine (run states,
    stoppage, the energy baseline), so a machine's rows come out of a scoped run exactly as out of a
    full one, and nothing outside the scope is read, rewritten or closed. The methods only choose the
    rows written: the forest judges the samples the statistics flagged, so the statistics run
    whichever methods are asked for."""

    tenant_id: str | None = None
    factory_id: str | None = None
    machine_id: str | None = None
    methods: tuple[str, ...] | None = None  # None: every method

    def __post_init__(self) -> None:
        named = (self.tenant_id, self.factory_id, self.machine_id)
        if any(inner is not None and outer is None for outer, inner in pairwise(named)):
            raise ValueError("a scope names a tenant, then a factory, then a machine: none may be skipped")
        if self.methods is not None:
            if not self.methods:
                raise ValueError("a scope's methods are absent (every method) or at least one")
            unknown = sorted(set(self.methods) - set(an.METHODS))
            if unknown:
                raise ValueError(f"unknown methods {', '.join(unknown)}; known: {', '.join(an.METHODS)}")
            # one spelling per set of methods: the same scope compares (and reads) the same
            ordered = tuple(m for m in an.METHODS if m in self.methods)
            object.__setattr__(self, "methods", None if ordered == an.METHODS else ordered)

    @property
    def whole(self) -> bool:
        """Every series and every method: the run the schedule makes."""
        return self.tenant_id is None and self.methods is None

    def machines(self, alias: str = "") -> tuple[str, list]:
        """The SQL condition (and its parameters) on the tenant, factory and machine columns of a
        table (`alias`: its alias, if any)."""
        named = [(c, v) for c, v in zip(MACHINE, (self.tenant_id, self.factory_id, self.machine_id), strict=True)]
        parts = [(f"{alias}.{c}" if alias else c, v) for c, v in named if v is not None]
        if not parts:
            return "true", []
        return " AND ".join(f"{c} = %s" for c, _ in parts), [v for _, v in parts]

    def rows(self, alias: str = "") -> tuple[str, list]:
        """`machines`, and the methods: the anomaly rows the scope owns."""
        where, params = self.machines(alias)
        if self.methods is None:
            return where, params
        return f"{where} AND {alias + '.' if alias else ''}method = ANY(%s)", [*params, list(self.methods)]

    def keep(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows of `frame` (machine columns, and `method` when it has one) inside the scope."""
        condition = pl.lit(True)
        for column, value in zip(MACHINE, (self.tenant_id, self.factory_id, self.machine_id), strict=True):
            if value is not None:
                condition = condition & (pl.col(column) == value)
        if self.methods is not None and "method" in frame.columns:
            condition = condition & pl.col("method").is_in(list(self.methods))
        return frame.filter(condition)

    def wants(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    @property
    def label(self) -> str:
        """The scope as the run's materialisation shows it in the Dagster UI."""
        if self.whole:
            return "every series, every method"
        named = [v for v in (self.tenant_id, self.factory_id, self.machine_id) if v is not None]
        where = "/".join(named) or "every series"
        return f"{where}: {'every method' if self.methods is None else ', '.join(self.methods)}"


EVERYTHING = Scope()


def metric_filter(options: AnomalyOptions) -> tuple[str, list]:
    """The SQL condition on `metric` of the readings judged: the hourly asset and the live judge
    must judge the same metrics, or a live flag could never be confirmed."""
    if options.metrics:
        return "metric = ANY(%s)", [list(options.metrics)]
    return "metric <> ALL(%s)", [[*NOT_JUDGED, *options.skip_metrics]]


def _states(
    conn: psycopg.Connection, start: datetime, end: datetime, lookback: timedelta, scope: Scope = EVERYTHING
) -> pl.DataFrame:
    return mk.state_intervals(*read_run_states(conn, start, end, lookback, *scope.machines()), start, end)


@dataclass(frozen=True)
class _RunStates:
    """The run-state messages a run of hours reads once (`read_run_states` over [since, until)):
    each hour's intervals are built from them (`_intervals`) instead of two queries per hour."""

    states: pl.DataFrame
    prior: pl.DataFrame
    since: datetime
    until: datetime
    lookback: timedelta
    scope: Scope = EVERYTHING


def _run_states(
    conn: psycopg.Connection, since: datetime, until: datetime, lookback: timedelta, scope: Scope = EVERYTHING
) -> _RunStates:
    return _RunStates(*read_run_states(conn, since, until, lookback, *scope.machines()), since, until, lookback, scope)


def _intervals(conn: psycopg.Connection, run: _RunStates, start: datetime, end: datetime) -> pl.DataFrame:
    """`_states(conn, start, end, run.lookback)`, from the run's messages when they cover [start, end):
    the messages in it, and as each machine's state before `start` its last message before it
    within the lookback (the pick of `read_run_states`' DISTINCT ON: latest time, then least state).
    The intervals sort what they are built from, so they are the same as from the two queries."""
    if not run.since <= start <= end <= run.until:
        return _states(conn, start, end, run.lookback, run.scope)
    time = pl.col("time")
    prior = (
        pl.concat([run.prior, run.states.filter(time < start)])
        .filter(time >= start - run.lookback)
        .sort(*MACHINE, "time", "run_state", descending=[False, False, False, True, False])
        .unique(list(MACHINE), keep="first", maintain_order=True)
    )
    return mk.state_intervals(run.states.filter((time >= start) & (time < end)), prior, start, end)


def _counters(conn: psycopg.Connection, start: datetime, end: datetime, scope: Scope) -> pl.DataFrame:
    machines, params = scope.machines()
    rows = read_frame(
        conn,
        "SELECT time, tenant_id, factory_id, machine_id, metric, value FROM analytics.raw_sensor_readings "
        f"WHERE metric = 'count_total' AND time >= %s AND time < %s AND {machines}",
        (start, end, *params),
        mk.READING_SCHEMA,
    )
    prior = read_frame(
        conn,
        "SELECT DISTINCT ON (tenant_id, factory_id, machine_id) time, tenant_id, factory_id, machine_id, metric, value "
        f"FROM analytics.raw_sensor_readings WHERE metric = 'count_total' AND time < %s AND time >= %s AND {machines} "
        "ORDER BY tenant_id, factory_id, machine_id, time DESC",
        (start, start - timedelta(hours=1), *params),
        mk.READING_SCHEMA,
    )
    return counter_increments(rows.sort("time"), prior, MACHINE).select("time", *MACHINE, "increment")


_FOREST_ROWS = (
    "SELECT DISTINCT ON (tenant_id, factory_id, machine_id, sensor_id, metric) "
    "tenant_id, factory_id, machine_id, sensor_id, metric, version{} FROM analytics.analytics_anomaly_model "
    "WHERE method = 'isolation_forest' AND model IS NOT NULL AND library = %s AND trained_to = %s "
    "AND contamination = %s{} "
    "ORDER BY tenant_id, factory_id, machine_id, sensor_id, metric, version DESC"
)


def stored_forests(
    conn: psycopg.Connection, trained_to: datetime, options: AnomalyOptions, scope: Scope = EVERYTHING
) -> dict[tuple, int]:
    """The version of each series' forest trained up to exactly `trained_to` (`seasonal.training_end`
    of the hour, so an hour uses the same forest whether it runs live or in a backfill, in any
    order), pickled by this scikit-learn (another version's pickle is not trusted), newest version
    per series. Only the versions: a forest is unpickled when a statistic flagged one of its
    series' samples (`load_models`), since only those samples can keep a forest row."""
    machines, params = scope.machines()
    rows = conn.execute(
        _FOREST_ROWS.format("", f" AND {machines}"),
        (f"scikit-learn {an.SKLEARN_VERSION}", trained_to, options.contamination, *params),
    ).fetchall()
    return {tuple(key): version for *key, version in rows}


def load_models(
    conn: psycopg.Connection, trained_to: datetime, options: AnomalyOptions, keys: set[tuple]
) -> dict[tuple, tuple[int, an.FittedForest]]:
    """The forests of `keys` that `stored_forests` names, unpickled (~2.5 ms and ~230 kB each, and the
    first one imports scikit-learn, ~2 s): a run loads those its statistics flagged, not every
    series' (at 100 machines 211 of 500 over a day's hours 2-24, none in a quiet hour)."""
    if not keys:
        return {}
    ordered = sorted(keys)
    rows = conn.execute(
        _FOREST_ROWS.format(
            ", model",
            " AND (tenant_id, factory_id, machine_id, sensor_id, metric) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]))",
        ),
        (
            f"scikit-learn {an.SKLEARN_VERSION}",
            trained_to,
            options.contamination,
            *([k[i] for k in ordered] for i in range(len(SERIES))),
        ),
    ).fetchall()
    return {tuple(key): (version, an.FittedForest.from_bytes(bytes(blob))) for *key, version, blob in rows}


def _next_version(cur: psycopg.Cursor, key: tuple, method: str, trained_to: datetime) -> tuple[int, bool]:
    """The next version number of a series' `method` model, and whether one trained up to
    `trained_to` becomes the active one: unless a model trained on later data already is (a
    backfill of old hours must not demote it). If it does, the old active one is deactivated."""
    cur.execute(
        "SELECT coalesce(max(version), 0) + 1, max(trained_to) FILTER (WHERE active) "
        "FROM analytics.analytics_anomaly_model WHERE tenant_id = %s AND factory_id = %s AND machine_id = %s "
        "AND sensor_id = %s AND metric = %s AND method = %s",
        (*key, method),
    )
    version, active_to = cur.fetchone()
    newest = active_to is None or trained_to >= active_to
    if newest:
        cur.execute(
            "UPDATE analytics.analytics_anomaly_model SET active = false WHERE tenant_id = %s AND factory_id = %s "
            "AND machine_id = %s AND sensor_id = %s AND metric = %s AND method = %s AND active",
            (*key, method),
        )
    return version, newest


def store_models(
    conn: psycopg.Connection,
    models: Sequence[an.FittedForest | an.PackedForest],
    options: AnomalyOptions,
    scope: Scope = EVERYTHING,
) -> dict[tuple, int]:
    """Persist newly fitted models as each series' next version. A model becomes the active one
    unless a model trained on later data already is (a backfill of old hours must not demote it).
    Only the newest three versions per series keep their bytes: the rest keep their metadata (of
    the series in `scope`: a scoped run leaves every other series' rows as they are)."""
    machines, params = scope.machines()
    versions = {}
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, "analytics_anomaly_model")
        for model in models:
            key = model.key
            version, newest = _next_version(cur, key, "isolation_forest", model.trained_to)
            cur.execute(
                "INSERT INTO analytics.analytics_anomaly_model (tenant_id, factory_id, machine_id, sensor_id, metric, "
                "version, trained_from, trained_to, n_samples, contamination, params, library, model, active) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    *key,
                    version,
                    model.trained_from,
                    model.trained_to,
                    model.n_samples,
                    model.contamination,
                    psycopg.types.json.Jsonb(
                        {"trees": options.trees, "bucket_s": model.bucket_s, "threshold": model.threshold}
                    ),
                    f"scikit-learn {model.sklearn_version}",
                    model.to_bytes(),
                    newest,
                ),
            )
            versions[key] = version
        cur.execute(
            "UPDATE analytics.analytics_anomaly_model m SET model = NULL FROM ("
            "  SELECT model_id, row_number() OVER (PARTITION BY tenant_id, factory_id, machine_id, sensor_id, metric, "
            f"  method ORDER BY version DESC) AS newest FROM analytics.analytics_anomaly_model WHERE model IS NOT NULL "
            f"  AND {machines}) r WHERE m.model_id = r.model_id AND r.newest > 3 AND NOT m.active",
            params,
        )
    return versions


PROFILE_LIBRARY = f"analytics_platform {se.VERSION}"


def _options_tag(options: AnomalyOptions) -> str:
    """A digest of what a profile depends on besides the data: change a setting, get new profiles."""
    return hashlib.sha256(json.dumps(asdict(options.seasonal), default=str, sort_keys=True).encode()).hexdigest()[:16]


def load_profiles(
    conn: psycopg.Connection,
    trained_to: datetime,
    keys: set[tuple],
    options: AnomalyOptions,
    scope: Scope = EVERYTHING,
) -> dict[tuple, se.Profile]:
    """The stored profiles learned up to exactly `trained_to` with these options, for `keys` (read
    within `scope`: a scoped run does not read the plant's profiles to keep a machine's)."""
    machines, params = scope.machines()
    rows = conn.execute(
        "SELECT DISTINCT ON (tenant_id, factory_id, machine_id, sensor_id, metric) "
        "tenant_id, factory_id, machine_id, sensor_id, metric, params->'profile' "
        "FROM analytics.analytics_anomaly_model WHERE method = 'seasonal' AND trained_to = %s AND library = %s "
        f"AND params->>'options' = %s AND {machines} "
        "ORDER BY tenant_id, factory_id, machine_id, sensor_id, metric, version DESC",
        (trained_to, PROFILE_LIBRARY, _options_tag(options), *params),
    ).fetchall()
    return {tuple(r[:5]): se.Profile.from_json(r[5]) for r in rows if tuple(r[:5]) in keys}


def _profile_history(
    conn: psycopg.Connection,
    trained_to: datetime,
    keys: set[tuple],
    options: AnomalyOptions,
    run: _RunAggregates | None = None,
    scope: Scope = EVERYTHING,
) -> pl.DataFrame:
    """The running samples a profile learns from: `history_days` of `bucket_s` aggregates before
    `trained_to`, without the machine's non-running periods and their settling time.

    The part a run's aggregates (`run`) already hold is taken from them, not read again (the day's
    first hour learns from the very day the run read as its context). The profile is the same: its
    series' rows are the same (judged metrics, bucket-aligned split), and learning sorts them."""
    seasonal = options.seasonal
    since = trained_to - timedelta(days=seasonal.history_days)
    machines = sorted({k[:3] for k in keys})
    aligned = run is not None and int(run.since.timestamp()) % seasonal.bucket_s == 0
    reuse = run is not None and aligned and since < run.since <= trained_to <= run.until
    history = _aggregates(
        conn,
        seasonal.bucket_s,
        since,
        run.since if run is not None and reuse else trained_to,
        "(tenant_id, factory_id, machine_id) IN (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))",
        [[m[0] for m in machines], [m[1] for m in machines], [m[2] for m in machines]],
    )
    if run is not None and reuse:
        history = pl.concat([history, _window(conn, run, seasonal.bucket_s, run.since, trained_to)])
    wanted = pl.DataFrame(sorted(keys), schema=list(SERIES), orient="row")
    history = history.join(wanted, on=list(SERIES), how="semi")
    intervals = _states(conn, since, trained_to, options.state_lookback, scope)
    fenced = an.settled(intervals.filter(pl.col("state").is_in(NOT_RUNNING)), seasonal.settle)
    return an.drop_excluded(history, fenced, "bucket_start", "bucket_end")


def store_profiles(
    conn: psycopg.Connection, profiles: list[se.Profile], options: AnomalyOptions, scope: Scope = EVERYTHING
) -> None:
    """Persist profiles as each series' next 'seasonal' version (active: the newest trained_to).
    Profiles learned more than `history_days` + 7 days before the newest are deleted (within
    `scope`): any hour needing one again re-learns it from the same data."""
    machines, params = scope.machines()
    if not profiles:
        return
    tag = _options_tag(options)
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, "analytics_anomaly_model")
        for profile in profiles:
            key = profile.key
            version, newest = _next_version(cur, key, "seasonal", profile.trained_to)
            cur.execute(
                "INSERT INTO analytics.analytics_anomaly_model (tenant_id, factory_id, machine_id, sensor_id, metric, "
                "method, version, trained_from, trained_to, n_samples, contamination, params, library, model, active) "
                "VALUES (%s, %s, %s, %s, %s, 'seasonal', %s, %s, %s, %s, 0, %s, %s, NULL, %s)",
                (
                    *key,
                    version,
                    profile.trained_from or profile.trained_to,
                    profile.trained_to,
                    profile.n_samples,
                    psycopg.types.json.Jsonb(
                        {
                            "options": tag,
                            "stage": profile.stage,
                            "cadence_s": profile.cadence_s,
                            "span_hours": profile.span_hours,
                            "profile": profile.to_json(),
                        }
                    ),
                    PROFILE_LIBRARY,
                    newest,
                ),
            )
        horizon = max(p.trained_to for p in profiles) - timedelta(days=options.seasonal.history_days + 7)
        cur.execute(
            f"DELETE FROM analytics.analytics_anomaly_model WHERE method = 'seasonal' AND trained_to < %s "
            f"AND NOT active AND {machines}",
            (horizon, *params),
        )


def tenant_zones(conn: psycopg.Connection, tenants: Iterable[str]) -> dict[str, str]:
    """The plant time zone of each of `tenants` that has its own (analytics.plant_tenants, as its KPIs,
    shifts and tariffs use it); the others are profiled in ANOMALY_TIMEZONE (`SeasonalOptions.timezone`)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT tenant_id, timezone FROM analytics.plant_tenants WHERE tenant_id = ANY(%s) AND timezone <> ''",
            (sorted(set(tenants)),),
        ).fetchall()
    return dict(rows)


def zoned(options: AnomalyOptions, zone: str) -> AnomalyOptions:
    """`options` with the seasonal profiles in `zone` (profiles learned in one zone are stored under its
    options tag, and never read for another)."""
    return (
        options
        if zone == options.seasonal.timezone
        else replace(options, seasonal=replace(options.seasonal, timezone=zone))
    )


def profiles_for_hour(
    conn: psycopg.Connection,
    start: datetime,
    keys: set[tuple],
    options: AnomalyOptions,
    cache: dict[tuple[datetime, tuple], se.Profile] | None = None,
    run: _RunAggregates | None = None,
    scope: Scope = EVERYTHING,
    zones: dict[str, str] | None = None,
) -> tuple[dict[tuple, se.Profile], int]:
    """The profile of every series in `keys` for the hour at `start` (`seasonal.profiles_for_hour`):
    from `cache`, else stored, else learned now (from `run`'s aggregates where they reach) and
    stored, each in its tenant's plant time zone (`zones`, default `tenant_zones`). Returns them and
    how many were learned."""
    zones = tenant_zones(conn, {k[0] for k in keys}) if zones is None else zones
    profiles: dict[tuple, se.Profile] = {}
    learned = 0
    for zone, tenants in an.zone_groups(zones, {k[0] for k in keys}, options.seasonal.timezone):
        mine = {k for k in keys if k[0] in tenants}
        found, n = _profiles_in_zone(conn, start, mine, zoned(options, zone), cache, run, scope)
        profiles.update(found)
        learned += n
    return profiles, learned


def _profiles_in_zone(
    conn: psycopg.Connection,
    start: datetime,
    keys: set[tuple],
    options: AnomalyOptions,
    cache: dict[tuple[datetime, tuple], se.Profile] | None,
    run: _RunAggregates | None,
    scope: Scope,
) -> tuple[dict[tuple, se.Profile], int]:
    cache = {} if cache is None else cache
    learned = 0

    def get(trained_to: datetime, wanted: set[tuple]) -> dict[tuple, se.Profile]:
        nonlocal learned
        found = {k: cache[(trained_to, k)] for k in wanted if (trained_to, k) in cache}
        if missing := wanted - set(found):
            found.update(load_profiles(conn, trained_to, missing, options, scope))
        if missing := wanted - set(found):
            history = _profile_history(conn, trained_to, missing, options, run, scope)
            fitted = se.fit_profiles(history, trained_to, options.seasonal, series=sorted(missing))
            store_profiles(conn, fitted, options, scope)
            learned += len(fitted)
            found.update({p.key: p for p in fitted})
        cache.update({(trained_to, k): p for k, p in found.items()})
        return found

    profiles = se.profiles_for_hour(start, keys, get, timedelta(hours=options.refit_hours))
    return profiles, learned


def _baseline_anomalies(deviations: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """A warning or critical hourly deviation is an anomaly of type baseline_deviation, on the
    platform's σ scale (z = deviation / RMSE)."""
    flagged = deviations.filter(pl.col("severity") != "normal")
    if flagged.is_empty():
        return pl.DataFrame(schema=an.ANOMALY_SCHEMA)
    abs_z = pl.col("z").abs()
    return flagged.select(
        time=pl.lit(start, TIME),
        window_start=pl.lit(start, TIME),
        window_end=pl.lit(end, TIME),
        tenant_id="tenant_id",
        factory_id="factory_id",
        machine_id="machine_id",
        sensor_id=pl.lit(None, pl.String),
        metric=pl.lit(baselines.TARGET),
        anomaly_type=pl.lit("baseline_deviation"),
        method=pl.lit("baseline"),
        score=pl.col("z"),
        severity=an.severity(abs_z),
        severity_label=an.severity_label(an.severity(abs_z)),
        confidence=abs_z.map_elements(lambda z: math.erf(z / math.sqrt(2)), return_dtype=pl.Float64),
        observed="actual_kwh",
        expected="predicted_kwh",
        details=pl.struct(
            "baseline_version", "deviation_kwh", "deviation_pct", pl.lit([], pl.List(pl.String)).alias("readings")
        ).struct.json_encode(),
        sample_s=pl.lit(3600.0),  # one judgement per machine-hour: an event groups consecutive hours
    ).cast(an.ANOMALY_SCHEMA)


def replace_anomalies(
    conn: psycopg.Connection, rows: pl.DataFrame, start: datetime, end: datetime, scope: Scope = EVERYTHING
) -> int:
    """Replace [start, end)'s anomalies of `scope` (all by default): those no longer found go, the
    others are updated in place so a resolution (status, note, who, when) survives
    re-materialisation. Returns rows deleted.

    The hour is the authoritative record of what the live judge flagged: a live row found again is
    confirmed (`confirmed_at`; a `not_confirmed` one re-opens), a live row not found is kept and
    closed `not_confirmed` (visible and counted, never silently gone). Rows only ever found by an
    hour still go when no longer found. Outside `scope` nothing is deleted, closed or written: a row
    of `rows` outside it is dropped, since the run did not judge its series as a whole."""
    rows = scope.keep(rows)
    owned, owned_params = scope.rows("a")
    key = "tenant_id, factory_id, machine_id, method, anomaly_type, time, sensor_id, metric"
    with conn.transaction(), conn.cursor() as cur:
        lock_results(cur, "analytics_anomaly")
        cur.execute(
            "CREATE TEMP TABLE new_anomaly ON COMMIT DROP AS SELECT "
            + ", ".join(ANOMALY_COLUMNS)
            + " FROM analytics.analytics_anomaly WITH NO DATA"
        )
        copy_rows(cur, sql.Identifier("new_anomaly"), rows, ANOMALY_COLUMNS)
        missing = (
            f"a.time >= %s AND a.time < %s AND {owned} AND NOT EXISTS (SELECT 1 FROM new_anomaly n WHERE "
            f"({key}) IS NOT DISTINCT FROM "
            "(a.tenant_id, a.factory_id, a.machine_id, a.method, a.anomaly_type, a.time, a.sensor_id, a.metric))"
        )
        cur.execute(
            f"DELETE FROM analytics.analytics_anomaly a WHERE {missing} AND a.detected_live_at IS NULL",
            (start, end, *owned_params),
        )
        deleted = cur.rowcount
        cur.execute(
            "UPDATE analytics.analytics_anomaly a SET status = 'not_confirmed', confirmed_at = NULL "
            f"WHERE {missing} AND a.detected_live_at IS NOT NULL AND a.status <> 'resolved'",
            (start, end, *owned_params),
        )
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in ANOMALY_COLUMNS if c not in key.split(", "))
        cur.execute(
            f"INSERT INTO analytics.analytics_anomaly ({', '.join(ANOMALY_COLUMNS)}, confirmed_at) "
            f"SELECT {', '.join(ANOMALY_COLUMNS)}, now() FROM new_anomaly ON CONFLICT ({key}) DO UPDATE SET {updates}, "
            "confirmed_at = coalesce(analytics_anomaly.confirmed_at, now()), status = CASE "
            "WHEN analytics_anomaly.status = 'not_confirmed' THEN 'open' ELSE analytics_anomaly.status END"
        )
    return deleted


def read_limits(conn: psycopg.Connection) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The metrics catalogue's plausible ranges (every tenant's and the `*` defaults) and the spec
    limits: what `limit_anomalies` judges readings against, live and hourly alike."""
    return metric_catalog.read_limits(conn), read_spec_limits(conn)


def _aggregates(
    conn: psycopg.Connection, bucket_s: int, since: datetime, until: datetime, where: str, params: list
) -> pl.DataFrame:
    """The `bucket_s` window aggregates in [since, until) of the judged metrics (`where`, `params`)."""
    return read_frame(
        conn,
        "SELECT bucket_start, bucket_end, tenant_id, factory_id, machine_id, sensor_id, metric, count_n, sum_v, "
        "avg_v, min_v, max_v, stddev_v FROM analytics.analytics_agg WHERE window_s = %s AND bucket_start >= %s "
        f"AND bucket_end <= %s AND {where}",
        [bucket_s, since, until, *params],
        HISTORY_SCHEMA,
    )


@dataclass(frozen=True)
class _RunAggregates:
    """The `bucket_s` aggregates of the judged metrics in [since, until), read once for a run of
    hours and sorted by series and time. Every hour takes its trailing window from them, and a
    window they do not cover is read and sorted the same way (`_window`), so an hour sees the same
    rows in the same order whichever run it is part of: live == backfill, to the last bit."""

    frame: pl.DataFrame
    since: datetime
    until: datetime
    where: str
    params: list


def _run_aggregates(
    conn: psycopg.Connection, options: AnomalyOptions, since: datetime, until: datetime, scope: Scope
) -> _RunAggregates:
    """The run's aggregates; their condition (judged metrics, the scope's machines) is also the
    readings' (`_recompute_hour`), so a scoped run reads nothing of other machines."""
    where, params = metric_filter(options)
    machines, machine_params = scope.machines()
    where, params = f"{where} AND {machines}", [*params, *machine_params]
    frame = _aggregates(conn, options.bucket_s, since, until, where, params).sort(*SERIES, "bucket_start")
    return _RunAggregates(frame, since, until, where, params)


def _window(
    conn: psycopg.Connection, run: _RunAggregates, bucket_s: int, since: datetime, until: datetime
) -> pl.DataFrame:
    """The aggregates in [since, until) (bucket_start ≥ since, bucket_end ≤ until), from the run's
    frame when it covers them, else read (and sorted) as the run's were."""
    if run.since <= since and until <= run.until:
        return run.frame.filter((pl.col("bucket_start") >= since) & (pl.col("bucket_end") <= until))
    return _aggregates(conn, bucket_s, since, until, run.where, run.params).sort(*SERIES, "bucket_start")


def recompute_anomalies(
    conn: psycopg.Connection,
    start: datetime,
    end: datetime,
    options: AnomalyOptions,
    cache: dict[tuple, tuple[int, an.FittedForest | an.PackedForest]] | None = None,
    profile_cache: dict[tuple[datetime, tuple], se.Profile] | None = None,
    scope: Scope = EVERYTHING,
) -> AnomalyRun:
    """Judge the hours of [start, end) and replace their anomalies and hourly baseline deviations,
    each hour exactly as a run of that hour alone would judge it (live == backfill).

    A run of several hours reads the trailing aggregates once (the first hour's `training_hours`
    of context up to the last hour) instead of a day of them per hour, and keeps forests and
    profiles from hour to hour; `cache` and `profile_cache` carry them on to the caller's next call.
    `scope` (everything by default) narrows what is read, judged and replaced to a tenant's factory
    or machine and some methods; its rows come out as a full run's (`Scope`)."""
    cache = {} if cache is None else cache
    profile_cache = {} if profile_cache is None else profile_cache
    hours = list(chunks(start, end, 1))
    context = timedelta(hours=options.training_hours)
    run = _run_aggregates(conn, options, start - context, hours[-1][0] if hours else start, scope)
    # every hour's states come from one read: back to the first hour's training window, which any
    # later hour's reads start after
    first_trained = se.training_end(start, timedelta(hours=options.refit_hours))
    states = _run_states(conn, min(first_trained, start) - context, end, options.state_lookback, scope)
    # the hourly baseline deviations are row by row (machine-hour): computed and replaced once for
    # the run, each hour takes its own rows for its anomalies (none: a frame of strings, no times).
    # A run whose methods leave out `baseline` neither needs nor rewrites them.
    deviations = pl.DataFrame(schema={c: pl.String() for c in baselines.DEVIATION_COLUMNS})
    if scope.wants("baseline"):
        deviations = scope.keep(baselines.compute_deviations(conn, start, end, period="hour"))
        baselines.replace_deviations(conn, deviations, start, end, "hour", *scope.machines())
    with ExitStack() as stack:
        parts = [
            _recompute_hour(
                conn,
                a,
                b,
                options,
                run,
                states,
                cache,
                profile_cache,
                deviations.filter((pl.col("period_start") >= a) & (pl.col("period_start") < b))
                if deviations.height
                else deviations,
                scope,
                readings(),
            )
            for (a, b), readings in zip(hours, _readings_ahead(conn, run, hours, stack), strict=True)
        ]
    methods: dict[str, int] = {}
    for part in parts:
        for method, count in part.by_method.items():
            methods[method] = methods.get(method, 0) + count
    return AnomalyRun(
        readings=sum(p.readings for p in parts),
        anomalies=sum(p.anomalies for p in parts),
        by_method=methods,
        models_fitted=sum(p.models_fitted for p in parts),
        models_reused=max((p.models_reused for p in parts), default=0),
        deviations=sum(p.deviations for p in parts),
        deleted=sum(p.deleted for p in parts),
        profiles_learned=sum(p.profiles_learned for p in parts),
        learning=parts[-1].learning if parts else 0,
    )


def _hour_readings(conn: psycopg.Connection, run: _RunAggregates, start: datetime, end: datetime) -> pl.DataFrame:
    """The readings of [start, end) an hour judges: the judged metrics of the run's machines (`run.where`)."""
    return read_frame(
        conn,
        "SELECT time, tenant_id, factory_id, machine_id, sensor_id, metric, value FROM analytics.raw_sensor_readings "
        f"WHERE time >= %s AND time < %s AND {run.where}",
        [start, end, *run.params],
        RAW_SCHEMA,
    )


def _readings_ahead(
    conn: psycopg.Connection, run: _RunAggregates, hours: list[tuple[datetime, datetime]], stack: ExitStack
) -> Iterator[Callable[[], pl.DataFrame]]:
    """For each of `hours` in turn, a function returning its readings (`_hour_readings`). A run of
    several hours reads each next hour on a second connection in a thread while this one judges
    the hour before: the server's scan of an hour (~0.4 s at 100 machines) had the judging wait
    for it, and psycopg waits for the server without the GIL. The same query, so the same rows in
    the same order. A `conn` inside a transaction, or a run of one hour, reads on `conn` as it goes
    (a transaction's own writes are seen only by it)."""
    if len(hours) < 2 or conn.info.transaction_status != TransactionStatus.IDLE:
        for start, end in hours:
            yield lambda start=start, end=end: _hour_readings(conn, run, start, end)
        return
    reader = stack.enter_context(sibling(conn))
    pool = stack.enter_context(ThreadPoolExecutor(1))
    ahead = pool.submit(_hour_readings, reader, run, *hours[0])
    for index in range(len(hours)):
        current = ahead
        if index + 1 < len(hours):
            ahead = pool.submit(_hour_readings, reader, run, *hours[index + 1])
        yield current.result


def _recompute_hour(
    conn: psycopg.Connection,
    start: datetime,
    end: datetime,
    options: AnomalyOptions,
    run: _RunAggregates,
    states: _RunStates,
    cache: dict[tuple, tuple[int, an.FittedForest | an.PackedForest]],
    profile_cache: dict[tuple[datetime, tuple], se.Profile],
    deviations: pl.DataFrame,
    scope: Scope,
    readings: pl.DataFrame | None = None,
) -> AnomalyRun:
    """Judge the hour [start, end) within `scope` (whose machines `run.where` already names) and
    replace its anomalies (`deviations`: its hourly baseline deviations, already stored by the run;
    `readings`: the hour's, `_hour_readings`, when the caller read them ahead)."""
    readings = _hour_readings(conn, run, start, end) if readings is None else readings
    # the statistics read the `training_hours` before the hour as context; forests learn the
    # `training_hours` before the hour's training end (its midnight), read only for the series that
    # have no forest for it yet (normally: in the day's first hour)
    trained_to = se.training_end(start, timedelta(hours=options.refit_hours))
    train_from = trained_to - timedelta(hours=options.training_hours)
    context_from = start - timedelta(hours=options.training_hours)
    wanted = set(readings.select(SERIES).unique().rows())
    for key in [k for k, (_, m) in cache.items() if m.trained_to != trained_to]:
        del cache[key]  # another day's forests: a long backfill must not pile them up
    cached = {k: v for k, (v, _) in cache.items()}
    versions = cached if wanted <= set(cached) else stored_forests(conn, trained_to, options, scope)
    need = wanted - set(versions)
    an.warm_fit_workers(len(need), options.fit_workers)
    history = _window(conn, run, options.bucket_s, context_from, start)
    read_from = min(train_from, context_from) if need else context_from
    intervals = _intervals(conn, states, read_from, end)
    excluded = intervals.filter(pl.col("state").is_in(NOT_RUNNING))
    running = intervals.filter(
        (pl.col("state") == "running") & (pl.col("end") > start) & (pl.col("start") < end)
    ).with_columns(
        start=pl.max_horizontal("start", pl.lit(start, TIME)), end=pl.min_horizontal("end", pl.lit(end, TIME))
    )
    missing = pl.DataFrame(schema=HISTORY_SCHEMA)
    if need:
        training = _window(conn, run, options.bucket_s, train_from, trained_to)
        missing = training.filter(pl.struct(SERIES).is_in([dict(zip(SERIES, k, strict=True)) for k in need]))
    # the forests are fitted by two workers while this process learns the profiles and judges the
    # hour's statistics: they are wanted only for the samples a statistic flagged (`forests`)
    pending = an.start_isolation_forests(
        missing,
        excluded,
        bucket_s=options.bucket_s,
        contamination=options.contamination,
        n_estimators=options.trees,
        trained_to=trained_to,
        workers=options.fit_workers,
        pack=True,
    )
    fitted: list[an.PackedForest] = []
    usable = {k: v for k, v in versions.items() if k in wanted}

    def store_fitted() -> None:
        """Wait for the forests (once), store them and make them usable."""
        nonlocal pending
        if pending is None:
            return
        finish, pending = pending, None
        fitted.extend(finish())
        new_versions = store_models(conn, fitted, options, scope) if fitted else {}
        cache.update({m.key: (new_versions[m.key], m) for m in fitted})
        usable.update({k: v for k, v in new_versions.items() if k in wanted})

    def forests(keys: set[tuple]) -> list[an.FittedForest]:
        """The usable forests of `keys`, unpickled on first use and kept in `cache` (those this run
        fitted are there packed, as the workers sent them)."""
        store_fitted()
        keys = keys & set(usable)
        cache.update(load_models(conn, trained_to, options, {k for k in keys if cache.get(k, (None,))[0] != usable[k]}))
        for key in keys & set(cache):
            version, forest = cache[key]
            if isinstance(forest, an.PackedForest):
                cache[key] = (version, forest.unpack())
        return [cache[k][1] for k in sorted(keys) if k in cache]

    try:
        zones = tenant_zones(conn, {k[0] for k in wanted})
        profiles, learned = profiles_for_hour(conn, start, wanted, options, profile_cache, run, scope, zones)
        found = an.detect_anomalies(
            readings,
            history,
            excluded,
            start=start,
            profiles=list(profiles.values()),
            models=forests,
            counters=_counters(conn, start, end, scope),
            running=running,
            options=options.seasonal,
            min_stop_minutes=options.stoppage_minutes,
            zones=zones,
        )
    finally:
        store_fitted()
    catalog, spec_limits = read_limits(conn)
    limited = an.limit_anomalies(readings, catalog, spec_limits, bucket_s=options.bucket_s)
    model_version = pl.DataFrame(
        [(*k, v) for k, v in usable.items()],
        schema={**{c: pl.String() for c in SERIES}, "model_version": pl.Int32()},
        orient="row",
    )
    rows = pl.concat([found.cast(an.ANOMALY_SCHEMA), limited, _baseline_anomalies(deviations, start, end)])
    rows = (
        scope.keep(rows)
        .join(
            model_version.with_columns(method=pl.lit("isolation_forest")),
            on=[*SERIES, "method"],
            how="left",
            nulls_equal=True,
        )
        .select(ANOMALY_COLUMNS)
    )
    deleted = replace_anomalies(conn, rows, start, end, scope)
    return AnomalyRun(
        readings=readings.height,
        anomalies=rows.height,
        by_method=dict(rows.group_by("method").len().iter_rows()),
        models_fitted=len(fitted),
        models_reused=len(usable) - len(fitted),
        deviations=deviations.height,
        deleted=deleted,
        profiles_learned=learned,
        learning=sum(1 for p in profiles.values() if not p.judged),
    )


def resolve_anomaly(conn: psycopg.Connection, anomaly_id: int, note: str, by: str) -> bool:
    """Mark an anomaly resolved with a note (what was found or done); False if there is none."""
    with conn.transaction():
        row = conn.execute("SELECT analytics.resolve_anomaly(%s, %s, %s)", (anomaly_id, note, by)).fetchone()
    return bool(row[0])
