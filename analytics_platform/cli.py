"""`analytics-platform`: operator commands that work against any deployment (local or production).

    analytics-platform migrate [--timescale auto|on|off]   apply sql/ migrations, seed the metric
                                                           catalogue, re-derive queued raw hours
    analytics-platform replay --domain sensor [--offset 0] point a drain back (forced replay)
    analytics-platform rejects [--limit 20]                what was rejected, and why
    analytics-platform rejects readmit [--topic T] [--reason R] [--tenant T] [--since T0] [--until T1]
                                                           re-judge kept rejects, land what passes now
    analytics-platform resets [--limit 20]                 offset resets: logs that changed under a drain
    analytics-platform drain serve                         read Kafka all the time (DRAIN_MODE=service)
    analytics-platform drain check                         exit 1 when its heartbeat is stale (liveness)
    analytics-platform metrics list [--tenant T]           the metrics catalogue (defaults and tenants')
    analytics-platform metrics set NAME --tenant T [--unit U] [--min X] [--max Y] [--description D]
    analytics-platform metrics remove NAME --tenant T      a tenant's entry ('*': a default)
    analytics-platform metrics policy --tenant T [reject|accept]   unknown metrics: show or set
    analytics-platform spec-limits load [FILE]             upsert spec limits from YAML
    analytics-platform spec-limits list                    the limits in the database
    analytics-platform plant load [FILE] | show            plant metadata (dated tariffs and factors, shifts, machines)
    analytics-platform baseline predict T F M k=v ...      what-if energy from the active baseline
    analytics-platform anomalies resolve ID --note TEXT    resolve an anomaly with a note
    analytics-platform alerts load [FILE] | rules | log     alert rules and mutes; what was sent
    analytics-platform alerts mute --machine M --minutes N --reason TEXT   a mute window from now
    analytics-platform api-keys create --name N (--tenant T | --admin) [--resolve] [--catalog-admin]
        [--train] [--detect] [--days D]
    analytics-platform api-keys list | revoke KEY_ID                    REST API keys

Connection settings come from the environment (DATABASE_URL, MIGRATIONS_DATABASE_URL).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from analytics_platform import observability
from analytics_platform.alerts.config import AlertConfigError, load_alert_config, store_mutes
from analytics_platform.alerts.model import ANY, Mute
from analytics_platform.api import keys as api_keys
from analytics_platform.contracts.catalog import CatalogError, MetricEntry
from analytics_platform.contracts.errors import ConfigError
from analytics_platform.contracts.registry import bind_domains, contract_config
from analytics_platform.ingest import catalog, store
from analytics_platform.ingest.catalog import read_catalog
from analytics_platform.ingest.readmit import readmit
from analytics_platform.ingest.rederive import rederive_queued
from analytics_platform.ingest.service import DrainService, heartbeat_age_s
from analytics_platform.migrations import apply_migrations
from analytics_platform.results import plant
from analytics_platform.results.anomalies import resolve_anomaly
from analytics_platform.results.baselines import predict_what_if
from analytics_platform.results.spec_limits import DEFAULT_FILE, SpecLimitError, load_spec_limits
from analytics_platform.settings import PlatformSettings, get_settings


def _url(admin: bool = False) -> str:
    if admin and os.environ.get("MIGRATIONS_DATABASE_URL"):
        return os.environ["MIGRATIONS_DATABASE_URL"]
    if not os.environ.get("DATABASE_URL"):
        raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user:password@host:5432/analytics)")
    return os.environ["DATABASE_URL"]


def _print_besides_migrations(message: str) -> None:
    if not message.startswith("migration "):  # each file's result is printed below
        print(message)


def _migrate(args: argparse.Namespace) -> int:
    url = _url(admin=True)
    for result in apply_migrations(
        url, timescale=args.timescale, echo=lambda m: m.startswith("migration ") or print(m)
    ):
        print(f"{result.version}: {result.action}")
    if args.no_rederive:
        return 0
    # raw hours a migration queued (e.g. 07: rows lost to id collisions come back from landing)
    with psycopg.connect(url, autocommit=True) as conn:
        done = rederive_queued(conn, get_settings(), echo=print)
    if done:
        print(f"{len(done)} raw hour(s) re-derived from kafka_landing; the raw_rederivations sensor tells Dagster")
    return 0


def _replay(args: argparse.Namespace) -> int:
    settings = get_settings()
    binding = next((b for b in bind_domains(settings) if b.domain == args.domain), None)
    if binding is None:
        raise ConfigError(f"domain {args.domain!r} is not enabled (DOMAINS_ENABLED={settings.domains_enabled})")
    consumer = args.consumer or settings.drain_consumer
    with psycopg.connect(_url(), autocommit=True) as conn:
        for topic in binding.topics:
            changed = store.reset_checkpoints(conn, consumer, topic, args.offset)
            print(f"{topic}: {changed} partition checkpoint(s) of {consumer} set to offset {args.offset}")
    print("the next drain tick re-reads from there; rows already stored are deduplicated, not doubled")
    return 0


def _rejects(args: argparse.Namespace) -> int:
    if args.action == "readmit":
        return _readmit(args)
    with psycopg.connect(_url(), autocommit=True) as conn:
        summary = conn.execute("SELECT topic, reason, rejected, last_at FROM analytics.v_rejects_summary ORDER BY 1, 2")
        rows = summary.fetchall()
        if not rows:
            print("no rejected messages")
            return 0
        print(f"{'topic':40} {'reason':28} {'count':>8}  last")
        for topic, reason, count, last in rows:
            print(f"{topic:40} {reason:28} {count:>8}  {last:%Y-%m-%d %H:%M:%S}")
        print(f"\nlatest {args.limit}:")
        latest = conn.execute(
            "SELECT topic, kafka_partition, kafka_offset, reason, detail FROM analytics.rejected_message "
            "ORDER BY rejected_at DESC, kafka_offset DESC LIMIT %s",
            (args.limit,),
        )
        for topic, partition, offset, reason, detail in latest:
            print(f"  {topic}[{partition}]@{offset} {reason}: {detail[:120]}")
    return 0


def _time_arg(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--{name} {text!r} is not an ISO-8601 time, e.g. 2025-08-20T03:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _readmit(args: argparse.Namespace) -> int:
    settings = get_settings()
    bindings = bind_domains(settings)
    known_topics = {t for b in bindings for t in b.topics}
    unknown = sorted(set(args.topic or []) - known_topics)
    if unknown:
        raise ConfigError(
            f"--topic {', '.join(unknown)} is not drained here; topics: {', '.join(sorted(known_topics))}"
        )
    with psycopg.connect(_url(), autocommit=True) as conn:
        report = readmit(
            conn,
            bindings,
            contract_config(settings, read_catalog(conn)),
            topics=args.topic or None,
            reason=args.reason,
            tenant=args.tenant,
            since=_time_arg(args.since, "since"),
            until=_time_arg(args.until, "until"),
            dry_run=args.dry_run,
        )
    for line in report.lines():
        print(line)
    if args.dry_run and report.passing:
        print("dry run: nothing changed; run again without --dry-run to re-admit them")
    return 0


def _drain(args: argparse.Namespace) -> int:
    """The drain service until SIGINT/SIGTERM; each pass commits what it holds before it ends."""
    settings = get_settings()
    if args.action == "check":
        return _drain_check(settings)
    if settings.drain_mode != "service":
        raise ConfigError(
            "DRAIN_MODE is 'sensor': the Dagster drain sensors read Kafka themselves. Set DRAIN_MODE=service for "
            "this process and for the Dagster code location, so the sensors only report what it commits"
        )
    observability.setup_process("analytics-drain", settings)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # dagster-postgres' schema check, at each instance load
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # the Dagster layer, only here: the service runs the current hour's window aggregates and the
    # live judges (defs/aggregates/live.py, defs/anomalies/live.py)
    from analytics_platform.defs.aggregates.live import start_finaliser
    from analytics_platform.defs.anomalies.live import start_live_judge

    judge = start_live_judge(settings, stop)
    service = DrainService(settings, stop, on_commit=None if judge is None else judge.committed)
    names = ", ".join(f"{b.domain}[{shard}]" for b, shard in service.workers)
    print(f"drain service: {names or 'no domains'}; passes of {settings.drain_pass_s:.0f} s, Ctrl-C stops", flush=True)
    if judge is not None:
        print(f"drain service: live judges ({', '.join(sorted(judge.domains))}) after each commit", flush=True)

    finaliser = start_finaliser(settings, stop)
    if isinstance(finaliser, str):
        print(f"drain service: {finaliser}", flush=True)
    else:
        every = f"{finaliser.window_s} s bucket, {settings.agg_finalise_delay_s:g} s after it closes"
        print(f"drain service: finalises the window aggregates of the current hour at each {every}", flush=True)
    # what start-up built (definitions, catalogues, modules) lives as long as the process: out of
    # the collector's sight, a full collection no longer walks it every few thousand messages
    gc.freeze()
    if settings.drain_metrics_port:
        try:
            metrics, port = service.serve_metrics(settings.drain_metrics_port)
        except OSError as exc:
            stop.set()
            raise ConfigError(
                f"DRAIN_METRICS_PORT {settings.drain_metrics_port}: {exc.strerror}; set a free port (0: no port)"
            ) from None
        print(f"drain service: metrics on http://0.0.0.0:{port}/metrics", flush=True)
    service.run_forever(settings.drain_heartbeat_file)
    if settings.drain_metrics_port:
        metrics.shutdown()
    if not isinstance(finaliser, str):
        finaliser.join()
    if judge is not None:
        judge.join()
    print("drain service stopped; every batch it held is committed", flush=True)
    return 0


def _drain_check(settings: PlatformSettings) -> int:
    """Exit 0 while the drain service's heartbeat is fresh: the liveness probe (the metrics port is optional)."""
    path = settings.drain_heartbeat_file
    if path is None:
        raise ConfigError("DRAIN_HEARTBEAT_FILE is not set: the drain service keeps no heartbeat to check")
    age = heartbeat_age_s(path)
    limit = DrainService(settings).stale_after_s
    if age is None:
        print(f"drain service: no heartbeat at {path} yet", file=sys.stderr)
        return 1
    if age > limit:
        stuck = f"drain service: heartbeat {age:.0f} s old (limit {limit:.0f} s): a drain thread is stuck"
        print(stuck, file=sys.stderr)
        return 1
    print(f"drain service: heartbeat {age:.0f} s old (limit {limit:.0f} s)")
    return 0


def _resets(args: argparse.Namespace) -> int:
    with psycopg.connect(_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT detected_at, consumer, topic, kafka_partition, reason, stored_offset, resumed_at, skipped, detail "
            "FROM analytics.ingest_resets ORDER BY reset_id DESC LIMIT %s",
            (args.limit,),
        ).fetchall()
    if not rows:
        print("no offset resets: every drain position belongs to the log it was read from")
        return 0
    for at, consumer, topic, partition, reason, stored, resumed, skipped, detail in rows:
        lost = f", {skipped} expired unread" if skipped else ""
        print(
            f"{at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ} {consumer} {topic}[{partition}] {reason}: "
            f"stored {stored} -> read again from {resumed}{lost} ({detail})"
        )
    return 0


def _metrics(args: argparse.Namespace) -> int:
    by = os.environ.get("USER", "operator")
    with psycopg.connect(_url(), autocommit=True) as conn:
        if args.action == "list":
            rows = catalog.list_entries(conn, args.tenant)
            print(f"{'metric':24} {'tenant':12} {'unit':8} {'min':>12} {'max':>12}  {'source':8} description")
            for tenant, metric, unit, low, high, description, source, _at, _by in rows:
                cells = [f"{'' if v is None else f'{v:g}':>12}" for v in (low, high)]
                print(f"{metric:24} {tenant:12} {unit or '':8} {' '.join(cells)}  {source:8} {description}")
            if args.tenant:
                policy, own = catalog.policy_of(conn, args.tenant)
                print(f"unknown metrics of tenant {args.tenant}: {policy}" + ("" if own else " (the default)"))
            return 0
        if args.action in ("set", "remove") and (not args.name or not args.tenant):
            raise ConfigError(f"metrics {args.action} needs the metric NAME and --tenant (a tenant, or '*')")
        if args.action == "set":
            entry = MetricEntry(args.tenant, args.name, args.unit, args.min, args.max, args.description or "")
            created = catalog.upsert_entry(conn, entry, source="cli", by=by)
            print(f"{'added' if created else 'updated'} {args.name} for tenant {args.tenant}")
            print("the drain judges with it from its next pass; re-admit earlier rejects with `rejects readmit`")
            return 0
        if args.action == "remove":
            if not catalog.remove_entry(conn, args.tenant, args.name):
                print(f"error: tenant {args.tenant} has no entry {args.name}", file=sys.stderr)
                return 1
            print(f"removed {args.name} of tenant {args.tenant} (stored readings stay)")
            return 0
        if not args.tenant:
            raise ConfigError("metrics policy needs --tenant (a tenant, or '*' for the default)")
        if args.name is None:
            policy, own = catalog.policy_of(conn, args.tenant)
            print(f"{args.tenant}: {policy}" + ("" if own else " (the default)"))
            return 0
        catalog.set_policy(conn, args.tenant, args.name, by)
        print(f"unknown metrics of tenant {args.tenant}: {args.name}")
    return 0


def _spec_limits(args: argparse.Namespace) -> int:
    with psycopg.connect(_url(), autocommit=True) as conn:
        if args.action == "load":
            changed = load_spec_limits(conn, args.file, overwrite=not args.keep_existing)
            print(f"{changed} spec limit(s) inserted or updated from {args.file}")
            print("re-materialise the affected partitions to re-judge past results")
            return 0
        rows = conn.execute(
            "SELECT tenant_id, factory_id, scope, name, lower_limit, upper_limit, target, unit, valid_from "
            "FROM analytics.analytics_spec_limits ORDER BY 1, 2, 3, 4, valid_from"
        ).fetchall()
        print(f"{'tenant':10} {'factory':10} {'scope':8} {'name':16} {'lower':>10} {'upper':>10} {'target':>10}  since")
        for tenant, factory, scope, name, lower, upper, target, unit, since in rows:
            cells = [f"{'' if v is None else v:>10}" for v in (lower, upper, target)]
            print(f"{tenant:10} {factory:10} {scope:8} {name:16} {' '.join(cells)}  {since} {unit or ''}")
    return 0


def _plant(args: argparse.Namespace) -> int:
    with psycopg.connect(_url(), autocommit=True) as conn:
        if args.action == "load":
            changed = plant.load_plant_config(conn, args.file, overwrite=not args.keep_existing)
            print(f"{changed} plant metadata row(s) inserted or updated from {args.file}")
            print("re-materialise the affected KPI partitions to recompute past KPIs")
            return 0
        since = (
            "CASE WHEN valid_from = '-infinity' THEN 'since forever' "
            """ELSE to_char(valid_from AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') END AS valid_from"""
        )
        for title, query in (
            ("tenants", "SELECT * FROM analytics.plant_tenants ORDER BY 1"),
            (
                "emission factors (versions)",
                f"SELECT tenant_id, {since}, kg_per_kwh FROM analytics.plant_emission_factors "
                "ORDER BY tenant_id, plant_emission_factors.valid_from",
            ),
            (
                "tariff bands (a version: the bands with one valid_from)",
                f"SELECT tenant_id, {since}, band, start_minute, end_minute, price FROM analytics.plant_tariff_bands "
                "ORDER BY tenant_id, plant_tariff_bands.valid_from, start_minute",
            ),
            ("shifts", "SELECT * FROM analytics.plant_shifts ORDER BY 1, 3"),
            ("machines", "SELECT * FROM analytics.machine_metadata ORDER BY 1, 2, 3"),
        ):
            cur = conn.execute(query)
            names = [d.name for d in cur.description if d.name != "updated_at"]
            print(f"{title}:")
            for row in cur.fetchall():
                print("  " + ", ".join(f"{n}={v}" for n, v in zip(names, row, strict=False)))
    return 0


def _baseline(args: argparse.Namespace) -> int:
    drivers = {}
    for item in args.drivers:
        name, _, value = item.partition("=")
        try:
            drivers[name] = float(value)
        except ValueError:
            print(f"error: driver {item!r} must be name=number, e.g. production_count=1500", file=sys.stderr)
            return 2
    with psycopg.connect(_url(), autocommit=True) as conn:
        try:
            kwh = predict_what_if(conn, (args.tenant, args.factory, args.machine), drivers)
        except (LookupError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(f"expected energy: {kwh:.3f} kWh per hour")
    return 0


def _anomalies(args: argparse.Namespace) -> int:
    with psycopg.connect(_url(), autocommit=True) as conn:
        try:
            found = resolve_anomaly(conn, args.anomaly_id, args.note, args.by)
        except psycopg.errors.RaiseException as exc:
            print(f"error: {exc.diag.message_primary}", file=sys.stderr)
            return 2
    if not found:
        print(f"error: no anomaly {args.anomaly_id}", file=sys.stderr)
        return 1
    print(f"anomaly {args.anomaly_id} resolved")
    return 0


def _alerts(args: argparse.Namespace) -> int:
    with psycopg.connect(_url(), autocommit=True) as conn:
        if args.action == "load":
            rules, mutes = load_alert_config(conn, args.file)
            print(f"{rules} alert rule(s) and {mutes} mute window(s) loaded from {args.file}")
            return 0
        if args.action == "mute":
            if not args.reason or args.minutes <= 0:
                print("error: a mute needs --reason and a positive --minutes", file=sys.stderr)
                return 2
            now = datetime.now(UTC)
            mute = Mute(
                now,
                now + timedelta(minutes=args.minutes),
                args.reason,
                args.rule,
                args.tenant,
                args.factory,
                args.machine,
            )
            (mute_id,) = store_mutes(conn, [mute], created_by=args.by)
            print(
                f"mute {mute_id}: rule {args.rule} on {args.tenant}/{args.factory}/{args.machine} "
                f"until {mute.ends_at:%Y-%m-%dT%H:%M:%SZ} ({args.reason})"
            )
            return 0
        if args.action == "rules":
            query = (
                "SELECT rule_name, kind, tenant_id, enabled, notify_resolve, channels, params "
                "FROM analytics.alert_rules ORDER BY 1"
            )
        else:
            query = (
                "SELECT created_at, rule_name, transition, channel, status, attempts, "
                "coalesce(error, ''), title FROM analytics.alert_log ORDER BY log_id DESC LIMIT %s"
            )
        for row in conn.execute(query, (args.limit,) if args.action == "log" else None).fetchall():
            print("  ".join(str(v) for v in row))
    return 0


def _scope_rank(scope: str) -> int:
    """A scope's place in api_keys.SCOPES (unknown ones last), so listings read like `create` prints."""
    return api_keys.SCOPES.index(scope) if scope in api_keys.SCOPES else len(api_keys.SCOPES)


def _api_keys(args: argparse.Namespace) -> int:
    with psycopg.connect(_url(admin=True), autocommit=True) as conn:
        if args.action == "create":
            if not args.name or (args.tenant is None) == (not args.admin):
                print("error: create needs --name and exactly one of --tenant T or --admin", file=sys.stderr)
                return 2
            expires = datetime.now(UTC) + timedelta(days=args.days) if args.days else None
            scopes = (
                "read",
                *(("resolve",) if args.resolve else ()),
                *(("admin",) if args.catalog_admin else ()),
                *(("train",) if args.train else ()),
                *(("detect",) if args.detect else ()),
            )
            try:
                key_id, key = api_keys.create_key(conn, args.name, args.tenant, scopes=scopes, expires_at=expires)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            holder = f"tenant {args.tenant}" if args.tenant else "every tenant (admin)"
            print(f"key {key_id} for {holder}, scopes {','.join(scopes)}; store it now, it is not shown again:")
            print(key)
            return 0
        if args.action == "revoke":
            if not args.key_id:
                print("error: revoke needs the KEY_ID (see `api-keys list`)", file=sys.stderr)
                return 2
            if not api_keys.revoke_key(conn, args.key_id):
                print(f"error: no API key {args.key_id}", file=sys.stderr)
                return 1
            print(f"key {args.key_id} revoked (running APIs stop accepting it within API_KEY_CACHE_S)")
            return 0
        rows = api_keys.list_keys(conn)
        # scopes in the order of SCOPES (read, resolve, admin), the column as wide as the longest list
        shown = [",".join(sorted(row[3], key=_scope_rank)) for row in rows]
        width = max([14, *map(len, shown)])
        print(f"{'key_id':14} {'tenant':12} {'scopes':{width}} {'created':20} {'expires':20} {'revoked':20} name")
        for (key_id, name, tenant, _scopes, created, expires, revoked), scopes in zip(rows, shown, strict=True):
            cells = [f"{v.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}" if v else "-" for v in (created, expires, revoked)]
            print(
                f"{key_id:14} {tenant or '(admin)':12} {scopes:{width}} "
                f"{cells[0]:20} {cells[1]:20} {cells[2]:20} {name}"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="analytics-platform", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    migrate = sub.add_parser("migrate", help="apply the SQL migrations in sql/")
    migrate.add_argument("--timescale", choices=("auto", "on", "off"), default="auto")
    migrate.add_argument(
        "--no-rederive", action="store_true", help="leave raw hours a migration queued for the next migrate"
    )
    replay = sub.add_parser("replay", help="point a drain's stored offsets back, to re-read from Kafka")
    replay.add_argument("--domain", required=True)
    replay.add_argument("--offset", type=int, default=0)
    replay.add_argument("--consumer", help="checkpoint owner (default: DRAIN_CONSUMER)")
    rejects = sub.add_parser("rejects", help="rejected messages by topic and reason; re-admit them")
    rejects.add_argument("action", nargs="?", choices=("summary", "readmit"), default="summary")
    rejects.add_argument("--limit", type=int, default=20)
    rejects.add_argument("--topic", action="append", help="readmit: only this topic (repeatable)")
    rejects.add_argument("--reason", help="readmit: only this reason, e.g. unknown_metric")
    rejects.add_argument("--tenant", help="readmit: only messages of this tenant_id")
    rejects.add_argument("--since", help="readmit: readings at or after this time (ISO-8601)")
    rejects.add_argument("--until", help="readmit: readings before this time (ISO-8601)")
    rejects.add_argument("--dry-run", action="store_true", help="readmit: only say what would pass now")
    drain = sub.add_parser("drain", help="the Kafka drain as a long-lived process (DRAIN_MODE=service)")
    drain.add_argument("action", choices=("serve", "check"), help="serve: run it; check: is it alive (heartbeat)")
    resets = sub.add_parser("resets", help="offset resets: Kafka logs that changed under a drain's position")
    resets.add_argument("--limit", type=int, default=20)
    metrics = sub.add_parser("metrics", help="the metrics catalogue (tenant data) and unknown-metric policies")
    metrics.add_argument("action", choices=("list", "set", "remove", "policy"))
    metrics.add_argument("name", nargs="?", help="set/remove: the metric; policy: reject or accept")
    metrics.add_argument("--tenant", help="the tenant ('*' = the defaults of every tenant)")
    metrics.add_argument("--unit", help="set: the canonical unit")
    metrics.add_argument("--min", type=float, help="set: lowest plausible value")
    metrics.add_argument("--max", type=float, help="set: highest plausible value")
    metrics.add_argument("--description", help="set: what it measures")
    limits = sub.add_parser("spec-limits", help="load or list spec limits (lab analytes, sweep metrics)")
    limits.add_argument("action", choices=("load", "list"))
    limits.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE)
    limits.add_argument("--keep-existing", action="store_true", help="only add limits the table lacks")
    plant_cmd = sub.add_parser(
        "plant", help="load or show plant metadata (tariffs, shifts, emission factors, machines)"
    )
    plant_cmd.add_argument("action", choices=("load", "show"))
    plant_cmd.add_argument("file", nargs="?", type=Path, default=plant.DEFAULT_FILE)
    plant_cmd.add_argument("--keep-existing", action="store_true", help="leave tenants and machines already there")
    baseline = sub.add_parser("baseline", help="what-if prediction from a machine's active energy baseline")
    baseline.add_argument("action", choices=("predict",))
    baseline.add_argument("tenant")
    baseline.add_argument("factory")
    baseline.add_argument("machine")
    baseline.add_argument("drivers", nargs="+", metavar="driver=value")
    anomalies = sub.add_parser("anomalies", help="resolve an anomaly with a note")
    anomalies.add_argument("action", choices=("resolve",))
    anomalies.add_argument("anomaly_id", type=int)
    anomalies.add_argument("--note", required=True)
    anomalies.add_argument("--by", default=os.environ.get("USER", "operator"))
    alerts = sub.add_parser("alerts", help="load alert rules and mutes, list rules, show the alert log, mute")
    alerts.add_argument("action", choices=("load", "rules", "log", "mute"))
    alerts.add_argument("file", nargs="?", type=Path, default=get_settings().alerts_config)
    alerts.add_argument("--limit", type=int, default=50, help="log: how many notifications, newest first")
    for name in ("rule", "tenant", "factory", "machine"):
        alerts.add_argument(f"--{name}", default=ANY, help=f"mute: the {name} to silence (default: any)")
    alerts.add_argument("--minutes", type=int, default=60, help="mute: how long, from now")
    alerts.add_argument("--reason", help="mute: why (e.g. planned maintenance)")
    alerts.add_argument("--by", default=os.environ.get("USER", "operator"))
    keys = sub.add_parser("api-keys", help="create, list or revoke REST API keys (hashed in the database)")
    keys.add_argument("action", choices=("create", "list", "revoke"))
    keys.add_argument("key_id", nargs="?", help="revoke: the key's id")
    keys.add_argument("--name", help="create: who or what holds the key")
    keys.add_argument("--tenant", help="create: the one tenant the key may read")
    keys.add_argument("--admin", action="store_true", help="create: a key for every tenant")
    keys.add_argument("--resolve", action="store_true", help="create: may also resolve anomalies")
    keys.add_argument(
        "--catalog-admin",
        action="store_true",
        help="create: the `admin` scope: may edit the metrics catalogue and unknown-metric policy of its tenant "
        "(with --admin: of every tenant and the platform defaults '*')",
    )
    keys.add_argument("--train", action="store_true", help="create: may retrain baselines (POST /v1/baselines/train)")
    keys.add_argument("--detect", action="store_true", help="create: may run detection (POST /v1/anomalies/detect)")
    keys.add_argument("--days", type=int, help="create: expires after this many days (default: never)")
    args = parser.parse_args(argv)
    handlers = {
        "migrate": _migrate,
        "replay": _replay,
        "rejects": _rejects,
        "resets": _resets,
        "drain": _drain,
        "metrics": _metrics,
        "spec-limits": _spec_limits,
        "plant": _plant,
        "baseline": _baseline,
        "anomalies": _anomalies,
        "alerts": _alerts,
        "api-keys": _api_keys,
    }
    try:
        return handlers[args.command](args)
    except (ConfigError, SpecLimitError, plant.PlantConfigError, AlertConfigError, CatalogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or ["connection failed"])[0]
        print(f"error: database unreachable ({first}); check DATABASE_URL", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
