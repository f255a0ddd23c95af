"""Freshness benchmark: how long after a 60 s window closes its bucket is complete in analytics_agg
(`--measure bucket`, the default), or, as the API serves them (`--measure live`), how long after
it is produced a reading is served by `/v1/readings` and counted in the provisional 60 s bucket
of `/v1/agg`, and how long after its window closes the bucket is served final.

Brings up the whole demo (`analytics-devstack demo`: database, broker, simulator, Dagster daemon
with the drain and automation sensors, API) on free ports, then produces one marker reading per
second (its own machine, time = now) next to the simulator's traffic, and polls analytics_agg
every 0.25 s. A bucket counts as fresh when its row holds every marker produced in its window;
latency = that moment - the window's end. Prints p50 / p95 / max over the buckets observed.

`--measure live` produces a marker reading every `--marker-every` seconds (and, with `--load`, that
many extra readings per second of 100 machines of its own beside the simulator), polls
/v1/readings and /v1/agg (60 s) for the marker machine every 50 ms, and reports p50/p95/p99/max of
produce -> served raw, produce -> counted in a provisional bucket, window close -> bucket final and
whole, beside the same run's floor: produce -> received by a plain consumer of the topic (assigned
at its end, consuming all the time), i.e. what the broker alone costs. The demo's drain is
DRAIN_MODE=service unless the environment says otherwise.

The bench keeps its own cost out of the way of what it measures: the load is a process of its own
with its own producer (batched like the simulator's: lz4, 20 ms linger) filling a pre-encoded template;
the markers and alert readings have an edge agent's producer of their own, so none waits behind the
load's queue; the floor consumer is a process of its own and decodes only the markers. Over the
markers' minutes it reads /proc every second and prints the CPU each process of the run used (the
broker, PostgreSQL, the drain service, Dagster, the API, the simulator, the bench's own), beside the
whole machine's, so the figures say where the cores went.

Usage: python bench/freshness.py [--minutes 12] [--rate 50]
       python bench/freshness.py --measure live [--minutes 5] [--rate 50] [--load 5000]
Nothing here asserts a time; it prints figures for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import multiprocessing
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

import httpx
import psycopg
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.devstack.processes import free_port  # noqa: E402
from bench.ingest import machine_info  # noqa: E402
from edge_agents.simulator import SENSOR_TOPIC  # noqa: E402

MACHINE = "mc-fresh"
# the alert markers: one machine each, so each is its own alert condition
ALERT_MACHINE = "mc-alert-{}"
WHERE = re.compile(r"Where: t1/f1/(mc-alert-\d+)\n")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# what a demo process is, from its command line (first match wins; the Dagster daemon's and the
# webserver's command lines carry the code server's options too, so they come first); a process
# none matches (a run's step process, a multiprocessing helper) counts as its parent's role.
# PostgreSQL is found by its data directory (pg_ctl daemonises the postmaster: no child of the demo)
ROLES = (
    ("tansu", "Tansu (broker)"),
    ("analytics_platform.cli drain serve", "drain service"),
    # the API's launcher (api/serve.py); its workers are multiprocessing children and count as it
    ("-m analytics_platform.api", "API"),
    ("edge_agents.simulator", "simulator"),
    ("dagster._daemon", "Dagster daemon"),
    ("dagster_webserver", "Dagster webserver"),
    ("execute_run", "Dagster run workers"),
    ("execute_step", "Dagster run workers"),
    ("api grpc", "Dagster code server"),
    ("dagster dev", "Dagster dev (supervisor)"),
    ("analytics_platform.devstack", "devstack (supervisor)"),
    ("postgres", "PostgreSQL"),
)


def role_of_command(command: str) -> str | None:
    """The role of a demo process by its command line (its arguments joined by spaces), None for one
    that counts as its parent's."""
    return next((role for needle, role in ROLES if needle in command), None)


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, start time, CPU ticks user + system) of a live process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return int(fields[1]), int(fields[19]), int(fields[11]) + int(fields[12])


def _machine_busy_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine since boot, every core (/proc/stat's first line)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8])


class CpuAccount:
    """Where the cores go during the measured window: CPU seconds per process of the demo and of the
    bench, read from /proc every second and summed by role, beside the whole machine's busy time (the
    difference is what ran outside this run: other sessions). A process that ends between two samples
    loses at most its last second; one that started inside the window counts from zero."""

    def __init__(self, named: dict[int, str], run_dir: Path) -> None:
        self.named = named  # pid -> role of the bench's own processes; the rest is told by its command line
        self.run_dir = run_dir
        self.first: dict[tuple[int, int], int] = {}  # (pid, start time) -> ticks when the window opened
        self.last: dict[tuple[int, int], int] = {}
        self.role: dict[tuple[int, int], str] = {}
        self.postgres: set[int] = set()
        self.opened_at = self.closed_at = 0.0
        self.machine_first = self.machine_last = (0, 0)
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _postmasters(self) -> set[int]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return {int((self.run_dir / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])}
        return set()

    def _sample(self) -> dict[tuple[int, int], int]:
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (stat := _proc_stat(int(entry))) is not None:
                stats[int(entry)] = stat
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        found: dict[tuple[int, int], int] = {}
        postgres = self.postgres
        todo = [(root, "PostgreSQL" if root in postgres else "bench") for root in [os.getpid(), *postgres]]
        while todo:
            pid, parent_role = todo.pop()
            if pid not in stats:
                continue
            ident = (pid, stats[pid][1])
            found[ident] = stats[pid][2]
            if ident not in self.role:
                self.role[ident] = self._role_of(pid) or parent_role
            todo.extend((child, self.role[ident]) for child in children.get(pid, []))
        return found

    def _role_of(self, pid: int) -> str | None:
        if pid in self.named:
            return self.named[pid]
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
        return role_of_command(command)

    def open(self) -> None:
        """Start the window now and keep sampling in a thread until close()."""
        self.postgres = self._postmasters()
        self.opened_at = time.time()
        self.machine_first = _machine_busy_ticks()
        self.first = self._sample()
        self.last = dict(self.first)
        self.thread.start()

    def _run(self) -> None:
        while not self.closed.wait(1.0):  # the sampling cadence, not synchronisation
            self.last.update(self._sample())

    def close(self) -> None:
        self.closed.set()
        self.thread.join(10)
        self.last.update(self._sample())
        self.closed_at = time.time()
        self.machine_last = _machine_busy_ticks()

    def figures(self) -> dict:
        wall = self.closed_at - self.opened_at
        by_role: dict[str, float] = {}
        for ident, ticks in self.last.items():
            used = (ticks - self.first.get(ident, 0)) / CLOCK_TICKS
            by_role[self.role[ident]] = by_role.get(self.role[ident], 0.0) + used
        busy = (self.machine_last[0] - self.machine_first[0]) / CLOCK_TICKS
        accounted = sum(by_role.values())
        cores = os.cpu_count() or 1
        roles = dict(sorted(by_role.items(), key=lambda item: -item[1]))
        return {
            "window_s": round(wall, 1),
            "cores": cores,
            "machine_busy_cores": round(busy / wall, 2),
            "outside_this_run_cores": round(max(0.0, busy - accounted) / wall, 2),
            "cores_by_process": {role: round(seconds / wall, 3) for role, seconds in roles.items()},
            "cpu_s_by_process": {role: round(seconds, 1) for role, seconds in roles.items()},
        }


class SlackReceiver:
    """A Slack stand-in on 127.0.0.1: when each message naming an alert marker's machine arrived
    (the first one), and how many arrived per machine (exactly once is the contract)."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.count: dict[str, int] = {}
        seen, counts = self.arrived, self.count

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                match = WHERE.search(body.get("text", ""))
                # an opening ("When: ...; detected ...") or a re-opening, not a resolution
                if match and "; detected " in body.get("text", ""):
                    seen.setdefault(match.group(1), at)
                    counts[match.group(1)] = counts.get(match.group(1), 0) + 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        port = self.server.server_address[1]
        return f"json://127.0.0.1:{port}/slack?:message=text&:title=&:version=&:attachments=&:type="


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
    parser.add_argument("--json", type=Path, default=None, help="where the figures go (.run/bench/freshness*.json)")
    parser.add_argument("--measure", choices=("bucket", "live"), default="bucket")
    parser.add_argument("--load", type=int, default=0, help="live: extra readings/s of the bench's own machines")
    parser.add_argument("--marker-every", type=float, default=0.25, help="live: seconds between markers")
    parser.add_argument(
        "--alert-every", type=float, default=3.0, help="live: seconds between out-of-range readings (1000 degC)"
    )
    args = parser.parse_args()

    ports = {name: free_port() for name in ("pg", "kafka", "dagster", "api")}
    run_dir = ROOT / ".run" / f"bench-freshness-{os.getpid()}"
    slack = SlackReceiver() if args.measure == "live" else None
    if slack is not None:
        os.environ["ALERT_SLACK_URL"] = slack.url  # the demo's alert rules send critical anomalies there
    print(f"starting the demo (run dir {run_dir}) ...", flush=True)
    demo, _ = start_demo(run_dir, ports, args.rate)
    try:
        if slack is not None:
            return measure_live(args, run_dir, ports, slack)
        args.json = args.json or ROOT / ".run" / "bench" / "freshness.json"
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


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "p50_s": round(at(0.50), 3),
        "p95_s": round(at(0.95), 3),
        "p99_s": round(at(0.99), 3),
        "max_s": round(ordered[-1], 3),
    }


# an edge agent's producer (edge_agents/config.py producer_config): idempotent, acks=all, lz4, 1 ms linger
EDGE_PRODUCER = {"enable.idempotence": True, "acks": "all", "compression.type": "lz4", "linger.ms": 1}
# the load batches as the simulator (the platform's own high-rate producer) does: 20 ms linger; a
# queue deep enough that a slow broker shows as the load falling behind, reported, not as an error
LOAD_PRODUCER = EDGE_PRODUCER | {"linger.ms": 20, "queue.buffering.max.messages": 1000000}
LOAD_MACHINES = 100
# one reading's JSON after its time, for each i % 700 (700 = 100 machines x 7 sensors, and 20 values
# divide it): only the time and the event id are filled in per reading
LOAD_PERIOD = 700


def _load_templates() -> tuple[list[bytes], list[bytes]]:
    keys = [f"t1-f1-mc-load-{m:03d}".encode() for m in range(LOAD_MACHINES)]
    middles = []
    for j in range(LOAD_PERIOD):
        # inside t1's temp spec limits (63..67, config/spec_limits.yaml) and its seasonal band: the
        # load is ordinary traffic; out-of-spec readings at 5,000/s were an alarm storm of the
        # bench's own making (every reading an anomaly row to write and an event to alert)
        fields = {
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": f"mc-load-{j % LOAD_MACHINES:03d}",
            "sensor_id": f"s-{j % 7}",
            "metric": "temp",
            "value": 64.0 + (j % 20) / 10,
        }
        middles.append(('", ' + json.dumps(fields)[1:-1] + ', "event_id": "load-').encode())
    return keys, middles


def _load(brokers: str, rate: int, stop: MpEvent, report: MpQueue) -> None:
    """`rate` readings/s of 100 machines of the bench's own (time = now), in 10 ms slices, in a process
    of its own with its own producer (the bench's markers do not queue behind it, and its encoding
    does not hold the probe's interpreter). Reports how many it handed over and how far behind its
    schedule it ever was, so a load generator that cannot keep up shows in the figures."""
    producer = Producer({"bootstrap.servers": brokers, **LOAD_PRODUCER})
    keys, middles = _load_templates()
    sent = queue_full = 0
    behind = 0.0
    began = time.time()
    while not stop.is_set():
        now = time.time()
        due = int((now - began) * rate)
        behind = max(behind, (due - sent) / rate)
        moment = b'{"time": "' + _marker_text(now).encode()
        for i in range(sent, due):
            value = moment + middles[i % LOAD_PERIOD] + str(i).encode() + b'"}'
            while True:
                try:
                    producer.produce(SENSOR_TOPIC, value, keys[i % LOAD_MACHINES])
                    break
                except BufferError:
                    queue_full += 1
                    producer.poll(0.05)
        sent = max(sent, due)
        producer.poll(0)
        stop.wait(0.01)
    seconds = time.time() - began
    left = producer.flush(30)
    report.put(
        {
            "sent": sent,
            "seconds": round(seconds, 1),
            "rate": round(sent / seconds, 1),
            "max_behind_schedule_s": round(behind, 3),
            "queue_full_waits": queue_full,
            "undelivered_at_end": left,
        }
    )


def _floor(brokers: str, ready: MpEvent, stop: MpEvent, report: MpQueue) -> None:
    """The bare broker: a plain consumer of the topic, assigned at its end, in a process of its own,
    records when each marker arrives; it compares keys and decodes only the markers' values."""
    consumer = Consumer(
        {"bootstrap.servers": brokers, "group.id": "bench-freshness-floor", "enable.auto.commit": False}
    )
    marker = f"t1-f1-{MACHINE}".encode()
    seen: dict[str, float] = {}
    try:
        partitions = consumer.list_topics(SENSOR_TOPIC, timeout=10).topics[SENSOR_TOPIC].partitions
        consumer.assign([TopicPartition(SENSOR_TOPIC, p, OFFSET_END) for p in partitions])
        while not stop.is_set():
            for message in consumer.consume(num_messages=10000, timeout=0.1):
                if message.key() == marker and message.error() is None:
                    seen.setdefault(json.loads(message.value())["time"], time.time())
            ready.set()
    finally:
        consumer.close()
        report.put(seen)


def _collect(report: MpQueue, process: multiprocessing.process.BaseProcess) -> dict | None:
    """What a helper process reported when it stopped (read before joining: a full pipe blocks it)."""
    try:
        return report.get(timeout=60)
    except queue.Empty:
        print(f"{process.name} reported nothing (exit code {process.exitcode})", flush=True)
        return None
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()


def _marker_text(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _item_text(item: dict) -> str:
    return _marker_text(datetime.fromisoformat(item["time"].replace("Z", "+00:00")).timestamp())


class LiveProbe:
    """What the API serves of the markers: each marker's first sighting in /v1/readings, and in
    /v1/agg's 60 s bucket (provisional or final). Markers of one machine share a Kafka key, so they
    are committed in the order produced: a bucket whose count is k holds its first k markers."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.produced: dict[str, float] = {}  # marker time text -> when it was handed to the producer
        self.by_bucket: dict[datetime, list[str]] = {}  # bucket start -> its markers in produced order
        self.raw: dict[str, float] = {}
        self.provisional: dict[str, float] = {}  # first seen counted in a provisional bucket
        self.final: dict[datetime, float] = {}  # bucket -> when it was first served final and whole
        self.final_seen_provisional: dict[datetime, bool] = {}

    def add(self, text: str, at: float) -> None:
        self.produced[text] = at
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        self.by_bucket.setdefault(moment.replace(second=0, microsecond=0), []).append(text)

    def params(self, start: datetime) -> dict:
        end = datetime.now(UTC) + timedelta(minutes=2)
        return {
            "factory_id": "f1",
            "machine_id": MACHINE,
            "metric": "temp",
            "start": start.isoformat(),
            "end": end.isoformat(),
        }

    def waiting(self, first_bucket: datetime, last_bucket: datetime) -> bool:
        """Whether a marker is not served yet, or a whole bucket not served final."""
        unserved = len(self.raw) < len(self.produced)
        return unserved or any(b not in self.final for b in self.by_bucket if first_bucket <= b < last_bucket)

    def poll(self, last_bucket: datetime) -> None:
        waiting = sorted(t for t in self.produced if t not in self.raw)
        if waiting:
            start = datetime.fromisoformat(waiting[0].replace("Z", "+00:00"))
            answer = self.client.get("/v1/readings", params={**self.params(start), "limit": 10000})
            answer.raise_for_status()
            seen_at = time.time()
            for item in answer.json()["items"]:
                text = _item_text(item)
                if text in self.produced:
                    self.raw.setdefault(text, seen_at)
        open_buckets = sorted(b for b in self.by_bucket if b not in self.final and b < last_bucket)
        if not open_buckets:
            return
        answer = self.client.get("/v1/agg", params={**self.params(open_buckets[0]), "window_s": 60, "limit": 10000})
        answer.raise_for_status()
        seen_at = time.time()
        for item in answer.json()["items"]:
            bucket = datetime.fromisoformat(item["bucket_start"].replace("Z", "+00:00"))
            markers = self.by_bucket.get(bucket)
            if not markers or bucket in self.final:
                continue
            for text in markers[: item["count"]]:
                if item["provisional"]:
                    self.provisional.setdefault(text, seen_at)
                self.final_seen_provisional[bucket] = (
                    self.final_seen_provisional.get(bucket, False) or item["provisional"]
                )
            closed = (bucket + timedelta(seconds=60)).timestamp() <= seen_at
            if closed and not item["provisional"] and item["count"] == len(markers):
                self.final[bucket] = seen_at


class PageCost:
    """What one open live machine chart costs: the two requests app.js's followMachineChart makes
    every UI_LIVE_S (a 1 h range of a simulator machine at 60 s, and its anomaly events)."""

    def __init__(self, client: httpx.Client, every_s: float = 5.0) -> None:
        self.client = client
        self.every_s = every_s
        self.next_at = 0.0
        self.bytes: list[int] = []  # per refresh, both responses' JSON
        self.wire: list[int] = []  # ... as sent (gzip: httpx asks for it, as browsers do)
        self.errors = 0  # refreshes that timed out (the page would show its retry banner)
        self.seconds: list[float] = []  # per refresh, both requests one after the other

    def maybe(self) -> None:
        if time.time() < self.next_at:
            return
        self.next_at = time.time() + self.every_s
        end = datetime.now(UTC)
        where = {"tenant_id": "t1", "factory_id": "f1", "machine_id": "mc-01"}
        span = {"start": (end - timedelta(hours=1)).isoformat(), "end": end.isoformat()}
        chart = {"metric": "temp", "window_s": 60, "limit": 10000, "fields": "avg,min,max"}  # what app.js asks
        began = time.perf_counter()
        try:
            agg = self.client.get("/v1/agg", params={**where, **span, **chart})
            events = self.client.get("/v1/anomaly-events", params={**where, **span, "limit": 500})
        except httpx.TransportError:  # a saturated machine: counted, not fatal
            self.errors += 1
            return
        self.seconds.append(time.perf_counter() - began)
        agg.raise_for_status()
        events.raise_for_status()
        self.bytes.append(len(agg.content) + len(events.content))
        self.wire.append(agg.num_bytes_downloaded + events.num_bytes_downloaded)

    def figures(self) -> dict | None:
        if not self.bytes:
            return None
        return {
            "refresh_every_s": self.every_s,
            "requests_per_minute": round(2 * 60 / self.every_s),
            "bytes_per_refresh_median": int(statistics.median(self.bytes)),
            "wire_bytes_per_refresh_median": int(statistics.median(self.wire)),
            "wire_kbytes_per_minute": round(statistics.median(self.wire) * 60 / self.every_s / 1024, 1),
            "server_s_per_refresh": percentiles(self.seconds),
            "timed_out": self.errors,
        }


def measure_live(args: argparse.Namespace, run_dir: Path, ports: dict[str, int], slack: SlackReceiver) -> int:
    """Produce -> served by /v1/readings, produce -> counted in the provisional 60 s bucket of /v1/agg,
    window close -> the bucket served final; beside produce -> a plain consumer, over `args.minutes`."""
    brokers = f"127.0.0.1:{ports['kafka']}"
    key = (run_dir / "api-key").read_text().strip()
    # the markers and the alert readings: an edge agent's producer of their own, not the load's queue
    producer = Producer({"bootstrap.servers": brokers, **EDGE_PRODUCER})
    spawn = multiprocessing.get_context("spawn")  # no fork of a process with threads
    stop, floor_ready = spawn.Event(), spawn.Event()
    floor_report: MpQueue = spawn.Queue()
    load_report: MpQueue = spawn.Queue()
    helpers = {"bench: floor consumer": spawn.Process(target=_floor, args=(brokers, floor_ready, stop, floor_report))}
    if args.load:
        helpers["bench: load generator"] = spawn.Process(target=_load, args=(brokers, args.load, stop, load_report))
    for process in helpers.values():
        process.start()
    floor_ready.wait(60)
    # the demo's first minute drains what the simulator produced while Dagster started: markers go
    # in once the stack is in its steady state
    print("warming up for 60 s ...", flush=True)
    stop.wait(60)
    named = {process.pid: role for role, process in helpers.items()}
    cpu = CpuAccount({os.getpid(): "bench: markers, API polls, receiver", **named}, run_dir)  # type: ignore[dict-item]
    client = httpx.Client(base_url=f"http://127.0.0.1:{ports['api']}", headers={"X-API-Key": key}, timeout=10)
    probe = LiveProbe(client)
    page = PageCost(client)
    stop_at = time.time() + args.minutes * 60
    cpu.open()
    # the last bucket markers go into is cut short by the end of the run: not a whole bucket
    last_bucket = datetime.fromtimestamp(stop_at, UTC).replace(second=0, microsecond=0)
    first_bucket = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    next_marker = next_alert = time.time()
    alerts: dict[str, float] = {}  # alert marker machine -> when its reading was handed to the producer
    poll_errors = 0
    try:
        while time.time() < stop_at or (
            time.time() < stop_at + 300
            and (
                probe.waiting(first_bucket, last_bucket)
                or (time.time() < stop_at + 60 and len(slack.arrived) < len(alerts))
            )
        ):
            now = time.time()
            if now >= next_marker and now < stop_at:
                text = _marker_text(now)
                body = {"time": text, "tenant_id": "t1", "factory_id": "f1", "machine_id": MACHINE}
                body |= {"sensor_id": "s-marker", "metric": "temp", "value": 20.0}
                probe.add(text, time.time())
                producer.produce(SENSOR_TOPIC, key=f"t1-f1-{MACHINE}".encode(), value=json.dumps(body).encode())
                producer.poll(0)
                next_marker += args.marker_every
            if now >= next_alert and now < stop_at:
                machine = ALERT_MACHINE.format(len(alerts))
                body = {"time": _marker_text(now), "tenant_id": "t1", "factory_id": "f1", "machine_id": machine}
                body |= {"sensor_id": "s-marker", "metric": "temp", "value": 1000.0}  # above the 400 degC range
                alerts[machine] = time.time()
                producer.produce(SENSOR_TOPIC, key=f"t1-f1-{machine}".encode(), value=json.dumps(body).encode())
                producer.poll(0)
                next_alert += args.alert_every
            try:
                probe.poll(last_bucket)
            except httpx.TransportError:
                poll_errors += 1  # a poll that timed out: the markers are looked for again next time
            if time.time() < stop_at:
                page.maybe()
            elif not cpu.closed.is_set():
                cpu.close()  # the window is the markers' minutes, not the wait for the last ones
            time.sleep(0.05)  # the polling cadence of the measurement itself, not synchronisation
    finally:
        client.close()
        if not cpu.closed.is_set():
            cpu.close()
        stop.set()
        producer.flush(10)
        floor_seen: dict[str, float] = _collect(floor_report, helpers["bench: floor consumer"]) or {}
        load = _collect(load_report, helpers["bench: load generator"]) if args.load else None
    produced = probe.produced
    raw = [probe.raw[t] - produced[t] for t in probe.raw]
    provisional = [probe.provisional[t] - produced[t] for t in probe.provisional]
    whole = [b for b in probe.final if first_bucket <= b < last_bucket]
    final = [probe.final[b] - (b + timedelta(seconds=60)).timestamp() for b in whole]
    floor = [floor_seen[t] - produced[t] for t in produced if t in floor_seen]
    alerted = [slack.arrived[m] - t for m, t in alerts.items() if m in slack.arrived]
    if not raw:
        print("no marker was served: is the drain running? see the demo's logs", flush=True)
        return 1
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "measure": "live",
        "drain_mode": os.environ.get("DRAIN_MODE", "service"),
        "simulator_rate": args.rate,
        "extra_load": args.load,
        "minutes": args.minutes,
        "markers": len(produced),
        "never_served": len(produced) - len(probe.raw),
        "never_counted_provisional": len(produced) - len(probe.provisional),
        "whole_buckets": len(range(int(first_bucket.timestamp()), int(last_bucket.timestamp()), 60)),
        "never_final": len(range(int(first_bucket.timestamp()), int(last_bucket.timestamp()), 60)) - len(whole),
        "produce_to_served": percentiles(raw),
        "produce_to_provisional_bucket": percentiles(provisional) if provisional else None,
        "window_close_to_final_bucket": percentiles(final) if final else None,
        # each bucket's, so the minutes a larger window closes with (hh:x0, hh:x5) can be told apart
        "final_bucket_by_start": {f"{b:%H:%M}": round(s, 2) for b, s in zip(whole, final, strict=True)},
        "produce_to_consumer_floor": percentiles(floor) if floor else None,
        "alert_markers": len(alerts),
        "never_alerted": len(alerts) - len(alerted),
        "alerted_more_than_once": sum(1 for m in alerts if slack.count.get(m, 0) > 1),
        "produce_to_alert_delivered": percentiles(alerted) if alerted else None,
        "live_chart_cost": page.figures(),
        "api_polls_timed_out": poll_errors,
        "load_generator": load,
        "cpu": cpu.figures(),
    }
    path = args.json or ROOT / ".run" / "bench" / f"freshness-live-{args.rate + args.load}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"one open live chart: {json.dumps(result['live_chart_cost'])}", flush=True)
    if load:
        print(f"load generator: {json.dumps(load)}", flush=True)
    share = result["cpu"]
    print(
        f"CPU over the {share['window_s']} s window, in cores of {share['cores']}: machine busy "
        f"{share['machine_busy_cores']}, of it outside this run {share['outside_this_run_cores']}",
        flush=True,
    )
    for role, cores in share["cores_by_process"].items():
        print(f"  {role:<36} {cores:6.3f} cores  ({share['cpu_s_by_process'][role]:7.1f} CPU s)", flush=True)
    for name in (
        "produce_to_served",
        "produce_to_alert_delivered",
        "produce_to_provisional_bucket",
        "window_close_to_final_bucket",
        "produce_to_consumer_floor",
    ):
        figures = result[name]
        if figures:
            print(
                f"{name}: p50 {figures['p50_s']:.2f} s, p95 {figures['p95_s']:.2f} s, p99 {figures['p99_s']:.2f} s, "
                f"max {figures['max_s']:.2f} s over {figures['n']}",
                flush=True,
            )
    by_start = ", ".join(f"{start} {seconds:.1f}" for start, seconds in sorted(result["final_bucket_by_start"].items()))
    print(f"window close -> final, by bucket start (s): {by_start}", flush=True)
    served, final_n, whole_n = result["never_served"], result["never_final"], result["whole_buckets"]
    print(f"never served {served} markers; never final {final_n} of {whole_n} whole buckets", flush=True)
    never, twice, markers = result["never_alerted"], result["alerted_more_than_once"], result["alert_markers"]
    print(f"alerts: {never} never delivered, {twice} delivered more than once, of {markers} readings", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
