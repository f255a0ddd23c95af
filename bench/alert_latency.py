"""Alert latency benchmark: produce an out-of-range reading -> its alert delivered to a Slack-shaped
webhook on 127.0.0.1 (issue 22, item 5).

Brings up the whole demo (`analytics-devstack demo`: database, broker, simulator at --rate msg/s,
Dagster daemon with the drains, the live judge and the alert sensor, API) on free ports with
ALERT_SLACK_URL pointing at a local receiver, then every --every seconds produces one reading of
temp = 1000 degC (the catalogue's plausible maximum is 400) from a machine of its own, so each is its
own alert condition. Latency = the moment the receiver got the message naming that machine - the
moment the reading was produced. Prints p50 / p95 / p99 / max and how many markers never alerted.

Usage: python bench/alert_latency.py [--minutes 5] [--every 3] [--rate 50]
Nothing here asserts a time; it prints figures for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.devstack.processes import free_port  # noqa: E402
from bench.freshness import start_demo  # noqa: E402
from bench.ingest import machine_info  # noqa: E402
from edge_agents.simulator import SENSOR_TOPIC  # noqa: E402

WHERE = re.compile(r"Where: t1/f1/(mc-alert-\d+)\n")


def receiver(arrived: dict[str, float]) -> http.server.ThreadingHTTPServer:
    """A Slack stand-in: records when the first message naming each marker machine arrived."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            at = time.time()
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            match = WHERE.search(body.get("text", ""))
            if match:
                arrived.setdefault(match.group(1), at)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between out-of-range markers")
    parser.add_argument("--rate", type=int, default=50, help="simulator messages/s besides the markers")
    parser.add_argument("--json", type=Path, default=ROOT / ".run" / "bench" / "alert_latency.json")
    args = parser.parse_args()

    arrived: dict[str, float] = {}
    server = receiver(arrived)
    port = server.server_address[1]
    os.environ["ALERT_SLACK_URL"] = (
        f"json://127.0.0.1:{port}/slack?:message=text&:title=&:version=&:attachments=&:type="
    )
    ports = {name: free_port() for name in ("pg", "kafka", "dagster", "api")}
    run_dir = ROOT / ".run" / f"bench-alerts-{os.getpid()}"
    print(f"starting the demo (run dir {run_dir}) ...", flush=True)
    demo, _ = start_demo(run_dir, ports, args.rate)
    produced: dict[str, float] = {}
    try:
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{ports['kafka']}", "linger.ms": 0})
        stop_at = time.time() + args.minutes * 60
        n = 0
        while time.time() < stop_at:
            machine = f"mc-alert-{n}"
            now = time.time()
            body = {
                "time": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "tenant_id": "t1",
                "factory_id": "f1",
                "machine_id": machine,
                "sensor_id": "s-marker",
                "metric": "temp",
                "value": 1000.0,
            }
            producer.produce(SENSOR_TOPIC, key=f"t1-f1-{machine}".encode(), value=json.dumps(body).encode())
            producer.flush(10)
            produced[machine] = now
            n += 1
            time.sleep(max(0.0, now + args.every - time.time()))  # the marker cadence, not synchronisation
        drain_until = time.time() + 60
        while time.time() < drain_until and len(arrived) < len(produced):
            time.sleep(0.5)  # waiting for the last alerts (bounded), not synchronisation
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=120)
        except subprocess.TimeoutExpired:
            demo.kill()
        server.shutdown()
    latencies = sorted(arrived[m] - t for m, t in produced.items() if m in arrived)
    if not latencies:
        print("no alert arrived: is the alert sensor running, is ALERT_SLACK_URL passed to the daemon?", flush=True)
        return 1
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "markers": len(produced),
        "alerted": len(latencies),
        "p50_s": round(percentile(latencies, 0.5), 2),
        "p95_s": round(percentile(latencies, 0.95), 2),
        "p99_s": round(percentile(latencies, 0.99), 2),
        "max_s": round(latencies[-1], 2),
        "simulator_rate": args.rate,
    }
    print(
        f"\nproduce -> alert delivered: p50 {result['p50_s']} s, p95 {result['p95_s']} s, p99 {result['p99_s']} s, "
        f"max {result['max_s']} s; {len(latencies)} of {len(produced)} markers alerted (simulator {args.rate} msg/s)"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
