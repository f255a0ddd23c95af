"""Freshness benchmark: how long after a 60 s window closes its bucket is complete in analytics_agg.

Brings up the whole demo (`analytics-devstack demo`: database, broker, simulator, Dagster daemon
with the drain and automation sensors, API) on free ports, then produces one marker reading per
second (its own machine, time = now) next to the simulator's traffic, and polls analytics_agg
every 0.25 s. A bucket counts as fresh when its row holds every marker produced in its window;
latency = that moment - the window's end. Prints p50 / p95 / max over the buckets observed.

Usage: python bench/freshness.py [--minutes 12] [--rate 50]
Nothing here asserts a time; it prints figures for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.devstack.processes import free_port  # noqa: E402
from bench.ingest import machine_info  # noqa: E402
from edge_agents.simulator import SENSOR_TOPIC  # noqa: E402

MACHINE = "mc-fresh"


def start_demo(run_dir: Path, ports: dict[str, int], rate: int) -> tuple[subprocess.Popen, list[str]]:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BROKERS")},
        "DEVSTACK_RUN_DIR": str(run_dir),
        "DEVSTACK_PG_PORT": str(ports["pg"]),
        "DEVSTACK_KAFKA_PORT": str(ports["kafka"]),
        "DAGSTER_PORT": str(ports["dagster"]),
        "API_PORT": str(ports["api"]),
        "SIMULATOR_RATE": str(rate),
    }
    demo = subprocess.Popen(
        [sys.executable, "-m", "analytics_platform.devstack", "demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout], daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            output.append(lines.get(timeout=1))
        if demo.poll() is not None:
            raise SystemExit("demo exited early:\n" + "".join(output))
        if any("Press Ctrl-C" in line for line in output):
            return demo, output
    raise SystemExit("the demo did not come up within 300 s:\n" + "".join(output))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=12)
    parser.add_argument("--rate", type=int, default=50, help="simulator messages/s besides the markers")
    parser.add_argument("--json", type=Path, default=ROOT / ".run" / "bench" / "freshness.json")
    args = parser.parse_args()

    ports = {name: free_port() for name in ("pg", "kafka", "dagster", "api")}
    run_dir = ROOT / ".run" / f"bench-freshness-{os.getpid()}"
    print(f"starting the demo (run dir {run_dir}) ...", flush=True)
    demo, _ = start_demo(run_dir, ports, args.rate)
    try:
        secrets = json.loads((run_dir / "secrets.json").read_text())
        url = f"postgresql://postgres:{secrets['postgres']}@127.0.0.1:{ports['pg']}/analytics"
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{ports['kafka']}", "linger.ms": 5})
        produced: dict[datetime, int] = {}  # bucket start -> markers produced in it
        complete: dict[datetime, float] = {}  # bucket start -> seconds after its end it was complete
        stop_at = time.time() + args.minutes * 60
        next_marker = time.time()
        # skip the first, partial bucket: markers start mid-window
        first_full = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
        last_full = datetime.fromtimestamp(stop_at, UTC).replace(second=0, microsecond=0)
        with psycopg.connect(url, autocommit=True) as conn:
            while time.time() < stop_at or any(b not in complete for b in produced if first_full <= b < last_full):
                now = time.time()
                if now >= next_marker and now < stop_at:
                    moment = datetime.fromtimestamp(now, UTC)
                    body = {
                        "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                        "tenant_id": "t1",
                        "factory_id": "f1",
                        "machine_id": MACHINE,
                        "sensor_id": "s-marker",
                        "metric": "temp",
                        "value": 20.0,
                    }
                    producer.produce(SENSOR_TOPIC, key=f"t1-f1-{MACHINE}".encode(), value=json.dumps(body).encode())
                    producer.poll(0)
                    bucket = moment.replace(second=0, microsecond=0)
                    produced[bucket] = produced.get(bucket, 0) + 1
                    next_marker += 1.0
                rows = conn.execute(
                    "SELECT bucket_start, count_n FROM analytics.analytics_agg "
                    "WHERE machine_id = %s AND window_s = 60 AND bucket_start >= %s",
                    (MACHINE, first_full),
                ).fetchall()
                seen_at = time.time()
                for bucket, count in rows:
                    end = bucket + timedelta(seconds=60)
                    if bucket >= last_full:
                        continue  # markers stopped inside this window: not a whole bucket
                    if bucket not in complete and end.timestamp() <= seen_at and count == produced.get(bucket):
                        complete[bucket] = seen_at - end.timestamp()
                        print(f"  bucket {bucket:%H:%M} complete {complete[bucket]:5.1f} s after it closed", flush=True)
                if time.time() > stop_at + 300:
                    print("some buckets never completed within 5 minutes", flush=True)
                    break
                time.sleep(0.25)  # the polling cadence of the measurement itself, not synchronisation
        producer.flush(10)
        latencies = sorted(complete.values())
        if not latencies:
            print("no bucket completed: is the automation sensor running? see the demo's logs", flush=True)
            return 1
        p50 = statistics.median(latencies)
        p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
        print(
            f"\n60 s bucket complete after window close: p50 {p50:.1f} s, p95 {p95:.1f} s, "
            f"max {latencies[-1]:.1f} s over {len(latencies)} buckets (simulator {args.rate} msg/s + 1 marker/s)"
        )
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "buckets": len(latencies),
            "p50_s": round(p50, 2),
            "p95_s": round(p95, 2),
            "max_s": round(latencies[-1], 2),
            "latencies_s": [round(v, 2) for v in latencies],
            "simulator_rate": args.rate,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=120)
        except subprocess.TimeoutExpired:
            demo.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
