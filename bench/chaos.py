"""`make chaos`: the project's own fault campaign, with exact counts of what happened to every reading.

An edge agent is fed a known set of sensor readings over HTTP while the processes of the ingest path
are killed at seeded random moments; afterwards every reading is accounted for in SQL:

  accepted   the agent answered 202 for its batch (its documented meaning: durably queued)
  in raw     a row of `analytics.raw_sensor_readings` carries its event id
  lost       accepted, not in raw, each with its cause:
               in-memory broker   it was in the log of a broker that was killed (read just before its
                                  death) and in no later broker's log: acknowledged to the agent, not yet
                                  drained, gone with the broker (docs/data-guarantees.md, "What each kind of
                                  broker can lose": the one class the platform cannot prevent)
               agent queue        still in the agent's queue file once everything settled
               last broker        in the last broker's log but never drained (the drain stopped)
               unexplained        in no broker log that was read: a defect, printed with its history
             only the first is a documented loss; the others fail the run
  doubled    more than one raw row for one reading
  wrong      a raw row of the campaign's tenant whose time, identity or value is not what was sent

Everything runs on loopback, on free ports, under a work directory (default `.run/chaos-<pid>/`):

* PostgreSQL: an `EmbeddedPostgres` (the devstack's), migrated with `apply_migrations` (which seeds
  the metrics catalogue); the drain logs in as a member of `analytics_rw`, as deployed.
* Kafka: the devstack's Tansu broker (memory only), topics created with `ensure_topics`, 3 partitions.
* The edge agent: `python -m edge_agents.cli run --config agent.yaml`, an HTTP source, the agent's
  own Kafka defaults (what ships is what is tested).
* The drain: a process of this script (`--drain-worker`) that runs `Drain(...).run(budget_s)` for the
  sensor domain in a loop (default budget 20 s = DRAIN_BUDGET_S, 1 s between passes: back to back
  rather than the sensor's 5 s ticks, so that kills land in passes more often), built from
  `PlatformSettings` as the Dagster sensor builds it. A JSON line at the start and at the end of each
  pass (elapsed, messages, resets, error) goes to `drain-passes.jsonl`; a pass still running after
  twice its budget leaves its Python stacks in drain.log (faulthandler).
* The feeder: a thread POSTing batches of `--batch` readings, paced to `--rate` (and catching up after
  an outage). A batch is retried, the very same bytes, until the agent answers 202: on connection
  errors, timeouts and 5xx while the agent is down or frozen. Retries are safe by design: event ids
  are the sender's, so a batch queued twice is stored once.

Readings are exact by construction: reading `seq` has event id `<run>-<seq>`, a machine from its
number, time = its batch's creation time + its index in microseconds, and value
`((seq * 7919) % 100003) / 8` (an exact binary fraction, different for neighbours), so a stored row
either matches what was sent field for field or is "wrong", and a second row for one id is "doubled".

Faults (`random.Random(seed)`): `--faults` moments drawn uniformly in the feed's window (after a warm-up,
before its last seconds), kinds shuffled with every kind at least `faults // 4` times:

  drain      SIGKILL of the drain process (mid-pass, mid-transaction or between passes), restarted
  postgres   SIGKILL of the postmaster; restarted on the same data directory (crash recovery); the
             restart is retried while the old backends still hold the shared memory
  agent      SIGKILL of the agent, restarted on the same queue file
  broker     a broker restart: Tansu keeps everything in memory, so the new broker is empty and the
             topics are created again, as docs/edge.md says. To attribute losses exactly, the agent and
             the drain are frozen (SIGSTOP), in-flight produce requests are given 0.5 s to land, the
             dying broker's whole log is read and its event ids kept with the broker's incarnation, then
             the broker is killed, a fresh one started on the same port, the topics created, and both
             processes resumed (SIGCONT): from their side the broker was replaced under them.
             `--broker-down S` keeps them running with no broker at all for S seconds before the fresh
             one starts (a real restart takes a while; the log is still read and the broker killed
             while they are frozen, so the attribution stays exact).

A fault waits for the previous fault's restart to finish (the processes are back), not for the data
to flow again, so a fault can land in the middle of the recovery from the one before (a PostgreSQL
kill while the drain re-reads a replaced log): that is part of the campaign. Recovery of a fault is
measured end to end: from the fault to the commit (raw's `ingested_at`) of the first reading made
after it. Not "the first reading accepted after it": that one may be lost with the next broker.

Watching for defects while it runs (a monitor thread): a drain or agent process that ends without
being killed is recorded with the last line of its log and restarted, as a supervisor would; a drain
pass running past twice its budget is recorded as hung and, when gdb is installed, its native thread
stacks go to `drain-hang-<pid>.txt`. It is left hung (not papered over): both fail the run.

When the feed is done the faults stop and everything settles: the agent's queue empties (its
/metrics), the last broker's log is read whole, and the drain is caught up (a pass that found nothing
new after that read, and stored offsets at or past the log's end). Then the agent and the drain stop,
the agent's queue file is read, and the counts are made in SQL over a `chaos` schema holding what was
sent and what each broker held. Also reported: drain offset resets (`analytics.ingest_resets`, by
reason), rebuilds of the agent's producer (counted from its log, which survives its restarts, unlike
its /metrics counter), drain passes (errors, the longest against its budget), feeder retries, each
fault's recovery and the wall time.

Bounded: `--timeout` (default 900 s) ends the run whatever happens; every process started is ended on
the way out, also on Ctrl-C. Exit status: 0 when nothing was doubled, wrong or lost without a cause,
and the campaign ran to its end; 1 otherwise (2 for a harness error).

Usage: python bench/chaos.py [--readings 200000] [--rate 1000] [--faults 24] [--seed 1] [--workdir DIR]
       [--batch 100] [--timeout 900] [--broker-down 0] [--keep]
`make chaos` runs the defaults (CHAOS_ARGS adds options); figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import http.client
import json
import logging
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics_platform.devstack.postgres import EmbeddedPostgres, ensure_login  # noqa: E402
from analytics_platform.devstack.processes import (  # noqa: E402
    Service,
    StackError,
    free_port,
    port_open,
    start_service,
)
from analytics_platform.devstack.stack import with_credentials  # noqa: E402
from analytics_platform.migrations import apply_migrations  # noqa: E402
from analytics_platform_tests.support.edge import AgentProcess, OwnBroker, read_log, scrape_metrics  # noqa: E402
from edge_agents.canonical import time_text  # noqa: E402
from edge_agents.simulator import SENSOR_TOPIC, TOPICS  # noqa: E402

KINDS = ("drain", "postgres", "agent", "broker")
TENANT = "chaos"
MACHINES = 12
DATABASE = "analytics"
DRAIN_USER = "chaos_drain"
WARMUP_S = 10.0  # no fault before the path has carried traffic for this long
TAIL_S = 15.0  # nor in the feed's last seconds: each fault needs readings after it to measure recovery
RECOVERY_LIMIT_S = 120.0  # a fault not recovered from within this long: the path stopped delivering
SETTLE_LIMIT_S = 240.0  # the agent's queue empty and the drain caught up, after the feed
HTTP_TIMEOUT_S = 10.0
FREEZE_LAND_S = 0.5  # after SIGSTOP, the time given to produce requests in flight to reach the broker
LOSS_CAUSES = (
    "lost: in-memory broker",  # the documented class
    "lost: still in the agent queue",
    "lost: in the last broker, never drained",
    "lost: unexplained",  # in no broker log that was read, not in the agent's queue
)
REBUILD = re.compile(r"rebuilding the Kafka producer .*?; cause: (.*)$")


# ----- the readings ---------------------------------------------------------------------------------


class Readings:
    """The known set: reading `seq` is a pure function of (run, seq, its batch's time)."""

    def __init__(self, run: str, count: int) -> None:
        self.run = run
        self.count = count

    def event_id(self, seq: int) -> str:
        return f"{self.run}-{seq:07d}"

    @staticmethod
    def value(seq: int) -> float:
        return ((seq * 7919) % 100_003) / 8  # exact in binary: equal means equal

    @staticmethod
    def machine(seq: int) -> tuple[str, str]:
        m = seq % MACHINES
        return ("f1" if m < MACHINES // 2 else "f2", f"m-{m:02d}")

    def payloads(self, first: int, count: int, at: datetime) -> list[dict[str, Any]]:
        out = []
        for i in range(count):
            seq = first + i
            factory, machine = self.machine(seq)
            out.append(
                {
                    "time": time_text(at + timedelta(microseconds=i)),
                    "tenant_id": TENANT,
                    "factory_id": factory,
                    "machine_id": machine,
                    "sensor_id": "s-power",
                    "metric": "power",
                    "unit": "kW",
                    "value": self.value(seq),
                    "event_id": self.event_id(seq),
                }
            )
        return out


@dataclass
class Batch:
    first: int  # seq of its first reading
    count: int
    at: datetime  # time of its first reading (reading i: + i µs)
    attempts: int = 0
    accepted_at: float | None = None  # campaign clock, when the 202 came


class Clock:
    """Seconds since the campaign started (monotonic)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.t0


class Feeder(threading.Thread):
    """POSTs the readings in batches, paced to `rate`, each batch retried until the agent says 202."""

    def __init__(self, readings: Readings, port: int, rate: float, batch: int, clock: Clock) -> None:
        super().__init__(name="chaos-feeder", daemon=True)
        self.readings = readings
        self.port = port
        self.rate = rate
        self.size = batch
        self.clock = clock
        self.batches: list[Batch] = []
        self.accepted = 0
        self.errors: Counter[str] = Counter()
        self.failure: str | None = None
        self.started_at = 0.0
        self.finished_at: float | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        self.started_at = self.clock()
        try:
            for first in range(0, self.readings.count, self.size):
                due = self.started_at + first / self.rate
                while (wait := due - self.clock()) > 0:
                    if self.halt.wait(min(wait, 0.05)):
                        return
                batch = Batch(first, min(self.size, self.readings.count - first), datetime.now(UTC))
                self.batches.append(batch)
                body = orjson.dumps(self.readings.payloads(batch.first, batch.count, batch.at))
                conn = self._deliver(conn, batch, body)
                if batch.accepted_at is None:
                    return  # halted or failed
                self.accepted += batch.count
            self.finished_at = self.clock()
        finally:
            if conn is not None:
                conn.close()

    def _deliver(
        self, conn: http.client.HTTPConnection | None, batch: Batch, body: bytes
    ) -> http.client.HTTPConnection | None:
        while not self.halt.is_set():
            batch.attempts += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)
                conn.request("POST", "/v1/ingest/sensor", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.read()
            except TimeoutError:
                self.errors["timeout"] += 1
            except (OSError, http.client.HTTPException):
                self.errors["connection"] += 1
            else:
                if response.status == 202:
                    batch.accepted_at = self.clock()
                    return conn
                if response.status >= 500:
                    self.errors[f"http {response.status}"] += 1
                    time.sleep(0.2)
                    continue
                self.failure = f"the agent refused batch {batch.first}: {response.status} {answer[:300]!r}"
                self.halt.set()
                return conn
            if conn is not None:
                conn.close()
                conn = None
            self.halt.wait(0.1)
        return conn


# ----- processes ------------------------------------------------------------------------------------


@dataclass
class Fault:
    index: int
    kind: str
    planned_at: float  # campaign clock
    at: float = 0.0  # when it struck (campaign clock)
    wall: float = 0.0  # the same moment, wall clock (readings' times and raw's ingested_at are wall clock)
    action_s: float = 0.0  # kill + restart (broker: the whole freeze)
    recovered_s: float | None = None  # from the fault to the first reading made after it committed to raw
    note: str = ""


class Stack:
    """The services of one campaign, each killable and restartable; `close()` ends every one."""

    def __init__(self, workdir: Path, drain_budget_s: float, drain_interval_s: float, broker_down_s: float) -> None:
        self.workdir = workdir
        self.pg = EmbeddedPostgres(workdir / "pg" / "data", free_port(), uuid.uuid4().hex, workdir / "postgres.log")
        self.broker = OwnBroker(workdir, list(TOPICS))
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.queue_path = workdir / "agent-queue.db"
        self.agent = AgentProcess(workdir / "agent.yaml", workdir / "agent.log")
        self.drain: Service | None = None
        self.drain_starts = 0
        self.drain_kills: list[tuple[int, float | None]] = []  # pid, how far into a pass (None: between passes)
        self.drain_budget_s = drain_budget_s
        self.drain_interval_s = drain_interval_s
        self.broker_down_s = broker_down_s
        self.admin_url = ""
        self.drain_url = ""
        self.broker_logs: list[tuple[int, bool, list[tuple[int, int, str]]]] = []  # incarnation, killed, rows
        self.frozen: list[int] = []
        # a process that ended without being killed: (kind, pid, exit status, wall time, last log line)
        self.crashes: list[tuple[str, int, int, float, str]] = []
        self.lock = threading.RLock()  # kills and restarts: the fault runner and the monitor's revive()

    # ----- start -----------------------------------------------------------------------------
    def start(self, echo: Callable[[str], None]) -> None:
        self.pg.init()
        self.pg.start()
        self.pg.ensure_database(DATABASE)
        self.admin_url = with_credentials(self.pg.admin_url, "postgres", self.pg.password, DATABASE)
        apply_migrations(self.admin_url, echo=lambda _m: None)
        password = uuid.uuid4().hex
        ensure_login(self.admin_url, DRAIN_USER, password, "analytics_rw")
        self.drain_url = with_credentials(self.admin_url, DRAIN_USER, password)
        echo(f"PostgreSQL on 127.0.0.1:{self.pg.port} (data {self.pg.data_dir}), migrated")
        self.broker.start()
        echo(f"Tansu broker on {self.broker.address}, topics created (3 partitions)")
        self.agent.config.write_text(
            yaml.safe_dump(
                {
                    "agent_id": "chaos",
                    "kafka": {"brokers": self.broker.address},
                    "queue": {"path": str(self.queue_path)},
                    "metrics": {"host": "127.0.0.1", "port": self.metrics_port},
                    "log_format": "text",
                    "sources": [{"name": "feeder", "type": "http", "host": "127.0.0.1", "port": self.http_port}],
                }
            )
        )
        self.start_agent()
        echo(f"edge agent: HTTP on 127.0.0.1:{self.http_port}, /metrics on {self.metrics_port}")
        (self.workdir / "drain.json").write_text(
            json.dumps(
                {
                    "database_url": self.drain_url,
                    "brokers": self.broker.address,
                    "budget_s": self.drain_budget_s,
                    "interval_s": self.drain_interval_s,
                    "passes": str(self.workdir / "drain-passes.jsonl"),
                }
            )
        )
        self.start_drain()
        echo(f"drain: budget {self.drain_budget_s:g} s a pass, {self.drain_interval_s:g} s between passes")

    def start_agent(self) -> None:
        self.agent.start()
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", self.http_port):
            if self.agent.process is not None and self.agent.process.poll() is not None:
                raise StackError(f"the edge agent exited at start; see {self.agent.log}")
            if time.monotonic() > deadline:
                raise StackError(f"the edge agent did not listen within 60 s; see {self.agent.log}")
            time.sleep(0.05)

    def start_drain(self) -> None:
        self.drain_starts += 1
        self.drain = start_service(
            "drain",
            [sys.executable, str(Path(__file__).resolve()), "--drain-worker", str(self.workdir / "drain.json")],
            self.workdir / "drain.log",
        )

    # ----- faults ----------------------------------------------------------------------------
    def kill_drain(self) -> str:
        with self.lock:
            assert self.drain is not None
            pid = self.drain.process.pid
            self.drain.process.kill()
            self.drain.process.wait(10)
            self.start_drain()
        running = unfinished_passes(self.workdir).get(pid)
        into = time.time() - running if running else None
        self.drain_kills.append((pid, into))
        state = f"{into:.1f} s into a pass" if into is not None else "between passes"
        return f"drain {pid} killed {state}"

    def kill_postgres(self) -> str:
        pid = int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.02)
        tries = 0
        deadline = time.monotonic() + 90
        while True:
            tries += 1
            try:
                self.pg.start()  # crash recovery on the same data directory
                return f"postmaster {pid} killed, restarted after {tries} attempt(s)"
            except StackError:
                # the old backends still hold the shared memory for a moment after their postmaster died
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def kill_agent(self) -> str:
        with self.lock:
            assert self.agent.process is not None
            pid = self.agent.process.pid
            self.agent.process.kill()
            self.agent.process.wait(10)
            self.start_agent()
        return f"agent {pid} killed"

    def revive(self) -> list[str]:
        """Restart the drain or the agent if it ended on its own, as a supervisor (Kubernetes, the
        Dagster daemon) would, and keep the fact: a process that dies without being killed is a defect,
        reported with the last line of its log."""
        found = []
        with self.lock:
            for kind, process, log, restart in (
                ("drain", self.drain.process if self.drain else None, self.workdir / "drain.log", self.start_drain),
                ("agent", self.agent.process, self.agent.log, self.start_agent),
            ):
                if process is None or process.poll() is None:
                    continue
                last = _last_line(log)
                self.crashes.append((kind, process.pid, process.returncode, time.time(), last))
                found.append(f"the {kind} (pid {process.pid}) ended on its own, status {process.returncode}: {last}")
                restart()
        return found

    def restart_broker(self) -> str:
        """Freeze the agent and the drain, read the dying broker whole, replace it, resume both."""
        with self.lock:
            return self._restart_broker()

    def _restart_broker(self) -> str:
        self.freeze()
        try:
            time.sleep(FREEZE_LAND_S)
            began = time.monotonic()
            rows, complete = read_broker_log(self.broker.address)
            read_s = time.monotonic() - began
            incarnation = self.broker.starts
            self.broker_logs.append((incarnation, True, rows))
            self.broker.kill()
            if self.broker_down_s <= 0:
                self.broker.start()
        finally:
            self.thaw()
        if self.broker_down_s > 0:  # no broker at all for a while, the agent and the drain running
            time.sleep(self.broker_down_s)
            self.broker.start()
        return (
            f"broker {incarnation} held {len(rows):,} messages{'' if complete else ' (read INCOMPLETE)'} "
            f"(read in {read_s:.1f} s), replaced"
            + (f" after {self.broker_down_s:g} s away" if self.broker_down_s else "")
        )

    def freeze(self) -> None:
        for process in (self.agent.process, self.drain.process if self.drain else None):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGSTOP)
                self.frozen.append(process.pid)

    def thaw(self) -> None:
        while self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.frozen.pop(), signal.SIGCONT)

    # ----- end -------------------------------------------------------------------------------
    def stop_drain(self, hung: bool = False) -> None:
        """SIGTERM: the drain ends after its pass. A hung one would never see it (the signal waits for
        the C call to return): it is killed."""
        if self.drain is not None:
            if hung:
                self.drain.process.kill()
            self.drain.stop(timeout=self.drain_budget_s + 15)

    def close(self) -> None:
        """End everything this campaign started, whatever state it is in (also after Ctrl-C)."""
        with self.lock:
            self._close()

    def _close(self) -> None:
        self.thaw()
        with contextlib.suppress(Exception):
            self.stop_drain()
        with contextlib.suppress(Exception):
            self.agent.stop(timeout=30)
        with contextlib.suppress(Exception):
            self.broker.kill()
        with contextlib.suppress(Exception):
            self.pg.stop()


def _last_line(log: Path) -> str:
    """The last line of a log that is not librdkafka's own chatter (`%3|...`), cut to 300 characters."""
    if not log.exists():
        return ""
    with log.open("rb") as handle:
        handle.seek(max(0, log.stat().st_size - 20000))
        lines = handle.read().decode(errors="replace").splitlines()
    kept = [line for line in lines if line.strip() and not line.startswith("%")]
    return kept[-1][:300] if kept else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_broker_log(brokers: str) -> tuple[list[tuple[int, int, str]], bool]:
    """(partition, offset, event_id) of every message the broker holds on the sensor topic, and
    whether the read is known complete: `read_log` of analytics_platform_tests/support/edge.py, watermarks asked
    again at the end (the agent may still be writing to the last broker)."""
    messages, complete = read_log(brokers, SENSOR_TOPIC, recheck=True)
    return [(m.partition(), m.offset(), orjson.loads(m.value())["event_id"]) for m in messages], complete


# ----- watching -------------------------------------------------------------------------------------


class Monitor(threading.Thread):
    """Measures each fault's recovery (the first reading made after it, found in raw), keeps an eye on
    the agent's queue, and notices a drain pass that hangs (running past twice its budget): its
    native thread stacks are taken with gdb, when installed, into `drain-hang-<pid>.txt` (the drain
    itself leaves its Python stacks in drain.log). Survives the database and the agent being away."""

    def __init__(self, stack: Stack, clock: Clock) -> None:
        super().__init__(name="chaos-monitor", daemon=True)
        self.stack = stack
        self.clock = clock
        self.open: list[Fault] = []
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.raw_rows: int | None = None
        self.queue_depth: float | None = None
        self.queue_peak = 0.0
        self._conn: psycopg.Connection | None = None
        self._last_count = 0.0
        self._last_hang_check = 0.0
        self.hangs: dict[int, float] = {}  # drain pid -> wall time its hung pass began
        self._hang_lock = threading.Lock()  # the settling main thread checks too

    def watch(self, fault: Fault) -> None:
        with self.lock:
            self.open.append(fault)

    def run(self) -> None:
        while not self.halt.wait(0.25):
            metrics = scrape_metrics(self.stack.metrics_port)
            if metrics:
                self.queue_depth = metrics.get("edge_agent_queue_depth")
                self.queue_peak = max(self.queue_peak, self.queue_depth or 0)
            for note in self.stack.revive():
                print(f"[{self.clock():6.1f} s]   {note}; restarted")
            if time.monotonic() - self._last_hang_check > 5:
                self._last_hang_check = time.monotonic()
                self.check_hangs()
            try:
                self._probe()
                if time.monotonic() - self._last_count > 5:
                    self._last_count = time.monotonic()
                    self.raw_rows = self._query("SELECT count(*) FROM analytics.raw_sensor_readings", ())[0]
            except psycopg.Error:
                self._drop()

    def check_hangs(self) -> None:
        with self._hang_lock:
            self._check_hangs()

    def _check_hangs(self) -> None:
        limit = 2 * self.stack.drain_budget_s + 5
        for pid, began in unfinished_passes(self.stack.workdir).items():
            if pid in self.hangs or time.time() - began < limit or not _alive(pid) or pid in self.stack.frozen:
                continue
            self.hangs[pid] = began
            print(f"[{self.clock():6.1f} s]   the drain pass of pid {pid} runs for {time.time() - began:.0f} s: hung?")
            gdb = shutil.which("gdb")
            if gdb:
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    stacks = subprocess.run(
                        [gdb, "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                        capture_output=True,
                        text=True,
                        timeout=120,
                    )
                    (self.stack.workdir / f"drain-hang-{pid}.txt").write_text(stacks.stdout + stacks.stderr)

    def _probe(self) -> None:
        """A fault is recovered from when a reading made after it (its time is later: the feeder stamps a
        batch when it makes it) is in raw; `ingested_at` of its row (the drain's transaction) dates it.
        Not "the first reading accepted after it": that one may have been lost with a broker."""
        with self.lock:
            waiting = list(self.open)
        for fault in waiting:
            row = self._query(
                "SELECT extract(epoch FROM min(ingested_at)) FROM analytics.raw_sensor_readings "
                "WHERE time >= to_timestamp(%s) AND tenant_id = %s",
                (fault.wall, TENANT),
            )
            if row[0] is None:
                continue
            fault.recovered_s = float(row[0]) - fault.wall
            with self.lock:
                self.open.remove(fault)
            print(
                f"[{self.clock():6.1f} s]   fault {fault.index} ({fault.kind}): recovered in {fault.recovered_s:.1f} s"
            )

    def _query(self, statement: str, params: tuple) -> tuple:
        if self._conn is None:
            self._conn = psycopg.connect(self.stack.admin_url, autocommit=True, connect_timeout=2)
        return self._conn.execute(statement, params).fetchone()  # type: ignore[return-value]

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        self._drop()


# ----- the campaign ---------------------------------------------------------------------------------


class Aborted(RuntimeError):
    """The campaign could not go on (timeout, a process that would not come back)."""


def schedule(rng: random.Random, faults: int, start: float, end: float) -> list[tuple[float, str]]:
    """`faults` (moment, kind) pairs: moments uniform in [start, end], kinds shuffled, each kind at
    least `faults // 4` times (the remainder drawn at random)."""
    kinds = [kind for kind in KINDS for _ in range(faults // len(KINDS))]
    kinds += [rng.choice(KINDS) for _ in range(faults - len(kinds))]
    rng.shuffle(kinds)
    moments = sorted(rng.uniform(start, end) for _ in range(faults))
    return list(zip(moments, kinds, strict=True))


@dataclass
class Options:
    readings: int
    rate: float
    faults: int
    seed: int
    workdir: Path
    batch: int
    timeout: float
    drain_budget: float
    drain_interval: float
    broker_down: float
    keep: bool


@dataclass
class Outcome:
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class Campaign:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.clock = Clock()
        self.deadline = time.monotonic() + options.timeout
        self.readings = Readings(f"c{options.seed}p{os.getpid()}", options.readings)
        self.stack = Stack(options.workdir, options.drain_budget, options.drain_interval, options.broker_down)
        self.faults: list[Fault] = []
        self.feeder: Feeder | None = None
        self.monitor: Monitor | None = None
        self.outcome = Outcome()
        self.final_read_at = 0.0

    def echo(self, text: str) -> None:
        print(f"[{self.clock():6.1f} s] {text}", flush=True)

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Aborted(f"hard timeout of {self.o.timeout:g} s reached")
        return left

    def run(self) -> Outcome:
        o = self.o
        feed_s = o.readings / o.rate
        plan = schedule(random.Random(o.seed), o.faults, WARMUP_S, max(WARMUP_S + 1, feed_s - TAIL_S))
        self.echo(
            f"chaos: {o.readings:,} readings at {o.rate:,.0f} msg/s (about {feed_s:.0f} s), {o.faults} faults "
            f"({', '.join(f'{n} {k}' for k, n in sorted(Counter(k for _, k in plan).items()))}), seed {o.seed}, "
            f"work dir {o.workdir}"
        )
        self.stack.start(self.echo)
        self.feeder = Feeder(self.readings, self.stack.http_port, o.rate, o.batch, self.clock)
        self.monitor = Monitor(self.stack, self.clock)
        offset = self.clock()
        self.feeder.start()
        self.monitor.start()
        progress = threading.Thread(target=self._progress, name="chaos-progress", daemon=True)
        progress.start()
        actions = {
            "drain": self.stack.kill_drain,
            "postgres": self.stack.kill_postgres,
            "agent": self.stack.kill_agent,
            "broker": self.stack.restart_broker,
        }
        for i, (moment, kind) in enumerate(plan, 1):
            fault = Fault(i, kind, offset + moment)
            while self.clock() < fault.planned_at:
                self.left()
                self._check_feeder()
                time.sleep(0.02)
            fault.at, fault.wall = self.clock(), time.time()
            fault.note = actions[kind]()
            fault.action_s = self.clock() - fault.at
            self.faults.append(fault)
            self.monitor.watch(fault)
            late = fault.at - fault.planned_at
            self.echo(
                f"fault {i}/{len(plan)}: {kind:8s} {fault.note}; back in {fault.action_s:.1f} s"
                + (f" (struck {late:.1f} s after its moment)" if late > 0.5 else "")
            )
        self._settle()
        return self.outcome

    def _check_feeder(self) -> None:
        assert self.feeder is not None
        if self.feeder.failure:
            raise Aborted(self.feeder.failure)

    def _progress(self) -> None:
        assert self.feeder is not None and self.monitor is not None
        last = (self.clock(), 0)
        while self.feeder.finished_at is None and not self.feeder.halt.is_set():
            time.sleep(10)
            now, accepted = self.clock(), self.feeder.accepted
            rate = (accepted - last[1]) / max(now - last[0], 1e-9)
            last = (now, accepted)
            raw = f"{self.monitor.raw_rows:,}" if self.monitor.raw_rows is not None else "?"
            depth = f"{self.monitor.queue_depth:,.0f}" if self.monitor.queue_depth is not None else "?"
            self.echo(
                f"accepted {accepted:,}/{self.o.readings:,} ({rate:,.0f}/s) | raw rows {raw} | "
                f"agent queue {depth} | faults {len(self.faults)}/{self.o.faults}"
            )

    def _settle(self) -> None:
        """The feed finished, the agent's queue empty, the last broker read whole, the drain caught up."""
        feeder, monitor = self.feeder, self.monitor
        assert feeder is not None and monitor is not None
        while feeder.finished_at is None:
            self.left()
            self._check_feeder()
            time.sleep(0.1)
        self.echo(f"feed done: {feeder.accepted:,} readings accepted; waiting for the agent's queue to empty")
        limit = time.monotonic() + SETTLE_LIMIT_S
        while True:
            metrics = scrape_metrics(self.stack.metrics_port)
            if metrics.get("edge_agent_queue_depth") == 0 and metrics.get("edge_agent_in_flight") == 0:
                break
            if time.monotonic() > limit:
                self.outcome.problems.append(
                    f"the agent's queue did not empty within {SETTLE_LIMIT_S:g} s after the feed "
                    f"(depth {metrics.get('edge_agent_queue_depth')}, in flight {metrics.get('edge_agent_in_flight')})"
                )
                break
            self.left()
            time.sleep(0.2)
        rows, complete = read_broker_log(self.stack.broker.address)
        if not complete:
            self.outcome.problems.append("the last broker's log could not be read whole")
        self.stack.broker_logs.append((self.stack.broker.starts, False, rows))
        self.final_read_at = time.time()
        ends: dict[int, int] = {}
        for partition, offset, _ in rows:
            ends[partition] = max(ends.get(partition, 0), offset + 1)
        self.echo(f"agent queue empty; the last broker holds {len(rows):,} messages; waiting for the drain")
        while not self._caught_up(ends):
            monitor.check_hangs()
            if any(_alive(pid) for pid in monitor.hangs):
                self.outcome.problems.append("the drain hung (see below): not waiting for it to catch up")
                break
            if time.monotonic() > limit:
                self.outcome.problems.append(f"the drain did not catch up within {SETTLE_LIMIT_S:g} s after the feed")
                break
            self.left()
            time.sleep(0.5)
        monitor.stop()
        self.stack.stop_drain(hung=any(_alive(pid) for pid in monitor.hangs))
        self.stack.agent.stop(timeout=30)
        self.echo("settled: drain and agent stopped; counting")

    def _caught_up(self, ends: dict[int, int]) -> bool:
        """A drain pass begun after the last broker's log was read found nothing (no error, no reset),
        and the stored offsets are at or past the log's end."""
        quiet = [
            p
            for p in drain_passes(self.stack.workdir)
            if p["started"] > self.final_read_at and not p["error"] and not p["messages"] and not p["resets"]
        ]
        if not quiet:
            return False
        try:
            with psycopg.connect(self.stack.admin_url, autocommit=True, connect_timeout=2) as conn:
                stored = dict(
                    conn.execute(
                        "SELECT kafka_partition, next_offset FROM analytics.worker_checkpoints WHERE topic = %s",
                        (SENSOR_TOPIC,),
                    ).fetchall()
                )
        except psycopg.Error:
            return False
        return all(stored.get(p, 0) >= end for p, end in ends.items())


def _pass_lines(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "drain-passes.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a line cut short by a kill
            out.append(json.loads(line))
    return out


def drain_passes(workdir: Path) -> list[dict[str, Any]]:
    """The drain passes that finished (a line per pass: elapsed, messages, resets, error)."""
    return [line for line in _pass_lines(workdir) if "elapsed" in line]


def unfinished_passes(workdir: Path) -> dict[int, float]:
    """pid -> start of its pass that never finished (the process was killed or stopped during it)."""
    begun: dict[int, float] = {}
    for line in _pass_lines(workdir):
        if "begin" in line:
            begun[line["pid"]] = line["begin"]
        elif begun.get(line["pid"]) == line["started"]:
            del begun[line["pid"]]
    return begun


# ----- counting -------------------------------------------------------------------------------------


def agent_queue_leftovers(path: Path) -> list[str]:
    """Event ids of the entries still in the agent's queue file (read after the agent stopped)."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return [orjson.loads(value).get("event_id", "") for (value,) in conn.execute("SELECT value FROM queue")]


def count(campaign: Campaign) -> Outcome:
    """Load what was sent and what each broker held into the `chaos` schema, then count in SQL."""
    stack, feeder, outcome = campaign.stack, campaign.feeder, campaign.outcome
    assert feeder is not None
    leftovers = agent_queue_leftovers(stack.queue_path)
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS chaos CASCADE")
        conn.execute("CREATE SCHEMA chaos")
        conn.execute(
            "CREATE TABLE chaos.sent (seq int PRIMARY KEY, event_id text NOT NULL, time timestamptz NOT NULL, "
            "factory_id text NOT NULL, machine_id text NOT NULL, value double precision NOT NULL, "
            "accepted_at double precision, attempts int NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE chaos.broker_log (incarnation int NOT NULL, killed boolean NOT NULL, "
            "kafka_partition int NOT NULL, kafka_offset bigint NOT NULL, event_id text NOT NULL)"
        )
        conn.execute("CREATE TABLE chaos.agent_queue (event_id text NOT NULL)")
        with conn.cursor() as cur:
            with cur.copy("COPY chaos.sent FROM STDIN") as copy:
                for batch in feeder.batches:
                    for i in range(batch.count):
                        seq = batch.first + i
                        factory, machine = Readings.machine(seq)
                        copy.write_row(
                            (
                                seq,
                                campaign.readings.event_id(seq),
                                batch.at + timedelta(microseconds=i),
                                factory,
                                machine,
                                Readings.value(seq),
                                batch.accepted_at,
                                batch.attempts,
                            )
                        )
            with cur.copy("COPY chaos.broker_log FROM STDIN") as copy:
                for incarnation, killed, rows in stack.broker_logs:
                    for partition, offset, event_id in rows:
                        copy.write_row((incarnation, killed, partition, offset, event_id))
            with cur.copy("COPY chaos.agent_queue FROM STDIN") as copy:
                for event_id in leftovers:
                    copy.write_row((event_id,))
        conn.execute("CREATE INDEX ON chaos.sent (event_id)")
        conn.execute("CREATE INDEX ON chaos.broker_log (event_id)")
        conn.execute(
            "CREATE TABLE chaos.stored AS SELECT event_id, count(*) AS copies FROM analytics.raw_sensor_readings "
            "WHERE tenant_id = %s GROUP BY event_id",
            (TENANT,),
        )
        conn.execute("CREATE INDEX ON chaos.stored (event_id)")
        conn.execute("ANALYZE chaos.sent; ANALYZE chaos.broker_log; ANALYZE chaos.stored")

        def one(statement: str, params: tuple = ()) -> int:
            return int(conn.execute(statement, params).fetchone()[0])  # type: ignore[index]

        c = outcome.counts
        c["sent"] = one("SELECT count(*) FROM chaos.sent")
        c["accepted"] = one("SELECT count(*) FROM chaos.sent WHERE accepted_at IS NOT NULL")
        c["in raw"] = one("SELECT count(*) FROM chaos.sent s JOIN chaos.stored r USING (event_id)")
        c["raw rows (campaign tenant)"] = one(
            "SELECT count(*) FROM analytics.raw_sensor_readings WHERE tenant_id = %s", (TENANT,)
        )
        c["doubled"] = one("SELECT count(*) FROM chaos.stored WHERE copies > 1")
        c["wrong"] = one(
            "SELECT count(*) FROM analytics.raw_sensor_readings r LEFT JOIN chaos.sent s USING (event_id) "
            "WHERE r.tenant_id = %s AND (s.event_id IS NULL OR r.time <> s.time OR r.factory_id <> s.factory_id "
            "OR r.machine_id <> s.machine_id OR r.sensor_id <> 's-power' OR r.metric <> 'power' "
            "OR r.value <> s.value OR r.unit IS DISTINCT FROM 'kW')",
            (TENANT,),
        )
        c["in raw, never accepted"] = one(
            "SELECT count(*) FROM chaos.sent s JOIN chaos.stored r USING (event_id) WHERE s.accepted_at IS NULL"
        )
        c["rejected by the drain"] = one(
            "SELECT count(*) FROM analytics.rejected_message WHERE topic = %s", (SENSOR_TOPIC,)
        )
        # each accepted reading that is not in raw, with the last broker whose log held it and its cause
        conn.execute(
            """
            CREATE TABLE chaos.lost AS
            WITH lost AS (
                SELECT s.event_id FROM chaos.sent s
                WHERE s.accepted_at IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM chaos.stored r WHERE r.event_id = s.event_id)
            ), last_seen AS (
                SELECT l.event_id, max(b.incarnation) AS incarnation
                FROM lost l LEFT JOIN chaos.broker_log b USING (event_id) GROUP BY l.event_id
            )
            SELECT ls.event_id, ls.incarnation, CASE
                WHEN EXISTS (SELECT 1 FROM chaos.agent_queue q WHERE q.event_id = ls.event_id)
                    THEN 'lost: still in the agent queue'
                WHEN EXISTS (SELECT 1 FROM chaos.broker_log b
                             WHERE b.event_id = ls.event_id AND b.incarnation = ls.incarnation AND b.killed)
                    THEN 'lost: in-memory broker'
                WHEN ls.incarnation IS NOT NULL THEN 'lost: in the last broker, never drained'
                ELSE 'lost: unexplained' END AS cause
            FROM last_seen ls
            """
        )
        causes = dict(conn.execute("SELECT cause, count(*) FROM chaos.lost GROUP BY 1").fetchall())
        for cause in LOSS_CAUSES:
            c[cause] = int(causes.get(cause, 0))
        c["lost"] = sum(int(n) for n in causes.values())
        per_broker = conn.execute(
            "SELECT incarnation, count(*) FROM chaos.lost WHERE cause = 'lost: in-memory broker' GROUP BY 1 ORDER BY 1"
        ).fetchall()
        outcome.details["in-memory broker losses per broker"] = {int(i): int(n) for i, n in per_broker}
        outcome.details["resets"] = dict(
            conn.execute("SELECT reason, count(*) FROM analytics.ingest_resets GROUP BY 1 ORDER BY 1").fetchall()
        )
        if c["lost: unexplained"] or c["lost: in the last broker, never drained"]:
            outcome.details["unexplained"] = [
                {"seq": seq, "event_id": event_id, "accepted_at_s": at, "attempts": attempts, "broker_logs": logs}
                for seq, event_id, at, attempts, logs in conn.execute(
                    """
                    SELECT s.seq, s.event_id, round(s.accepted_at::numeric, 2)::float, s.attempts,
                           coalesce(string_agg('broker ' || b.incarnation || CASE WHEN b.killed THEN ' (killed)'
                                               ELSE ' (last)' END || ' p' || b.kafka_partition || '@' || b.kafka_offset,
                                               ', ' ORDER BY b.incarnation, b.kafka_offset), 'in no broker log read')
                    FROM chaos.lost l JOIN chaos.sent s USING (event_id) LEFT JOIN chaos.broker_log b USING (event_id)
                    WHERE l.cause NOT IN ('lost: in-memory broker', 'lost: still in the agent queue')
                    GROUP BY s.seq, s.event_id, s.accepted_at, s.attempts ORDER BY s.seq LIMIT 20
                    """
                ).fetchall()
            ]
    return outcome


def judge(campaign: Campaign) -> None:
    """Everything that makes the run fail, beside the counts: faults never recovered from, drain
    passes far over their budget, a feeder that could not deliver."""
    outcome, o = campaign.outcome, campaign.o
    c = outcome.counts
    for key in (
        "doubled",
        "wrong",
        "lost: still in the agent queue",
        "lost: in the last broker, never drained",
        "lost: unexplained",
        "in raw, never accepted",
        "rejected by the drain",
    ):
        if c.get(key):
            outcome.problems.append(f"{key}: {c[key]:,}")
    if c.get("accepted", 0) < o.readings:
        outcome.problems.append(f"only {c.get('accepted', 0):,} of {o.readings:,} readings were accepted")
    for fault in campaign.faults:
        if fault.recovered_s is None:
            outcome.problems.append(f"fault {fault.index} ({fault.kind} at {fault.at:.1f} s): never recovered from")
        elif fault.recovered_s > RECOVERY_LIMIT_S:
            outcome.problems.append(f"fault {fault.index} ({fault.kind}): recovery took {fault.recovered_s:.0f} s")
    for kind, pid, status, at, last in campaign.stack.crashes:
        how = f"signal {-status}" if status < 0 else f"exit status {status}"
        outcome.problems.append(
            f"the {kind} (pid {pid}) ended on its own at {datetime.fromtimestamp(at, UTC):%H:%M:%S} UTC ({how}); "
            f"its log's last line: {last}"
        )
    hangs = campaign.monitor.hangs if campaign.monitor else {}
    for pid, began in hangs.items():
        outcome.problems.append(
            f"drain pass of pid {pid} hung: begun at {datetime.fromtimestamp(began, UTC):%H:%M:%S} UTC, never "
            f"finished (Python stacks in drain.log after 'Timeout', native ones in drain-hang-{pid}.txt)"
        )
    passes = drain_passes(campaign.stack.workdir)
    far = [p["elapsed"] for p in passes if p["elapsed"] > 2 * o.drain_budget]
    far += [s for pid, s in campaign.stack.drain_kills if s is not None and s > 2 * o.drain_budget and pid not in hangs]
    if far:
        outcome.problems.append(
            f"{len(far)} drain pass(es) ran more than twice their {o.drain_budget:g} s budget "
            f"(longest {max(far):.1f} s; thread stacks in drain.log, after 'Timeout')"
        )


# ----- report ---------------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def report(campaign: Campaign, wall_s: float) -> dict[str, Any]:
    o, outcome, stack = campaign.o, campaign.outcome, campaign.stack
    feeder = campaign.feeder
    assert feeder is not None
    c = outcome.counts
    passes = drain_passes(stack.workdir)
    rebuilds: Counter[str] = Counter()
    if stack.agent.log.exists():
        for line in stack.agent.log.read_text(errors="replace").splitlines():
            found = REBUILD.search(line)
            if found:
                rebuilds[found.group(1).split(":")[0].strip()[:90]] += 1
    errors = Counter(p["error"].split(":")[0] for p in passes if p["error"])
    feed_s = (feeder.finished_at or 0) - feeder.started_at
    print()
    print(
        f"Chaos campaign: seed {o.seed}, {o.readings:,} readings at {o.rate:,.0f} msg/s, "
        f"{len(campaign.faults)} faults, wall time {wall_s:.0f} s (feed {feed_s:.0f} s)"
    )
    print()
    labels = [
        ("sent", "readings sent"),
        ("accepted", "accepted (agent answered 202)"),
        ("in raw", "in raw"),
        ("lost", "lost"),
        ("lost: in-memory broker", "  in-memory broker (documented)"),
        ("lost: still in the agent queue", "  still in the agent queue"),
        ("lost: in the last broker, never drained", "  in the last broker, never drained"),
        ("lost: unexplained", "  unexplained"),
        ("doubled", "doubled"),
        ("wrong", "wrong"),
        ("in raw, never accepted", "in raw, never accepted"),
        ("rejected by the drain", "rejected by the drain"),
    ]
    for key, label in labels:
        print(f"  {label:38s} {c.get(key, 0):>10,}")
    print()
    print(f"  {'fault':10s} {'count':>5s}  {'restart s (min/med/max)':>24s}  {'recovery s (min/med/max)':>25s}")
    for kind in KINDS:
        mine = [f for f in campaign.faults if f.kind == kind]
        recovered = [f.recovered_s for f in mine if f.recovered_s is not None]
        print(
            f"  {kind:10s} {len(mine):5d}  {_spread([f.action_s for f in mine]):>24s}  {_spread(recovered):>25s}"
            + (f"  ({len(mine) - len(recovered)} not recovered)" if len(recovered) < len(mine) else "")
        )
    print()
    losses = outcome.details.get("in-memory broker losses per broker", {})
    print(f"  in-memory broker losses per killed broker: {losses or 'none'}")
    print(f"  drain offset resets (analytics.ingest_resets): {outcome.details.get('resets') or 'none'}")
    print(f"  agent producer rebuilds (its log): {sum(rebuilds.values())} {dict(rebuilds) if rebuilds else ''}")
    longest = max((p["elapsed"] for p in passes), default=0.0)
    print(
        f"  drain passes: {len(passes):,} finished, {stack.drain_starts} processes, errors {dict(errors) or 'none'}, "
        f"longest {longest:.1f} s (budget {o.drain_budget:g} s)"
    )
    mid = sorted(s for _, s in stack.drain_kills if s is not None)
    print(
        f"  drain kills: {len(mid)} of {len(stack.drain_kills)} mid-pass"
        + (f" ({', '.join(f'{s:.1f}' for s in mid)} s into it)" if mid else "")
    )
    retried = sum(1 for b in feeder.batches if b.attempts > 1)
    peak = campaign.monitor.queue_peak if campaign.monitor else 0
    print(
        f"  feeder: {len(feeder.batches):,} batches of {o.batch}, {retried} retried, "
        f"failures {dict(feeder.errors) or 'none'}; agent queue peak {peak:,.0f}"
    )
    if outcome.details.get("unexplained"):
        print("\n  losses without a documented cause (first 20, with their history):")
        for item in outcome.details["unexplained"]:
            print(f"    {item}")
    print()
    if outcome.problems:
        print("FAILED:")
        for problem in outcome.problems:
            print(f"  - {problem}")
    else:
        print("OK: nothing doubled, nothing wrong, every lost reading has its documented cause")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(o).items()},
        "counts": c,
        "problems": outcome.problems,
        "details": outcome.details,
        "faults": [asdict(f) for f in campaign.faults],
        "rebuilds": dict(rebuilds),
        "drain": {
            "passes": len(passes),
            "processes": stack.drain_starts,
            "errors": dict(errors),
            "longest_s": longest,
            "kills_into_pass_s": [s for _, s in stack.drain_kills],
        },
        "feeder": {"batches": len(feeder.batches), "retried": retried, "errors": dict(feeder.errors), "feed_s": feed_s},
        "wall_s": wall_s,
    }


# ----- the drain process ----------------------------------------------------------------------------


def drain_worker(config_path: Path) -> int:
    """Drain passes back to back (`interval_s` apart) until SIGTERM, as the Dagster sensor ticks; one
    JSON line per pass. Built like `defs/ingest/sensors.py` builds it, from `PlatformSettings`."""
    from analytics_platform.contracts.registry import bind_domains, contract_config
    from analytics_platform.ingest.drain import Drain, DrainError
    from analytics_platform.settings import PlatformSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = json.loads(config_path.read_text())
    settings = PlatformSettings(
        database_url=config["database_url"],
        kafka_brokers=config["brokers"],
        domains_enabled=["sensor"],
        drain_budget_s=config["budget_s"],
    )
    binding = next(b for b in bind_domains(settings) if b.domain == "sensor")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with open(config["passes"], "a") as passes:
        while not stopping.is_set():
            drain = Drain(
                binding,
                contract_config(settings),
                database_url=config["database_url"],
                kafka_config=settings.kafka_client_config(),
                consumer_name=settings.drain_consumer,
                batch_size=settings.drain_batch_size,
                poll_timeout_s=settings.drain_poll_timeout_s,
                start=settings.drain_start,
            )
            started = time.time()
            passes.write(json.dumps({"pid": os.getpid(), "begin": started}) + "\n")
            passes.flush()
            line: dict[str, Any] = {"pid": os.getpid(), "started": started, "error": None}
            # a pass far over its budget leaves the stacks of every thread in drain.log
            faulthandler.dump_traceback_later(2 * settings.drain_budget_s + 5, exit=False)
            try:
                result = drain.run(settings.drain_budget_s)
                line |= {
                    "messages": result.messages,
                    "rows": result.rows,
                    "resets": [[r.partition, r.reason] for r in result.offset_resets],
                }
            except DrainError as exc:
                line |= {"messages": 0, "rows": 0, "resets": [], "error": f"DrainError: {exc}"}
            except Exception as exc:  # a database killed mid-pass: the next pass starts over
                line |= {"messages": 0, "rows": 0, "resets": [], "error": f"{type(exc).__name__}: {exc}"[:500]}
            faulthandler.cancel_dump_traceback_later()
            line["elapsed"] = time.time() - started
            passes.write(json.dumps(line) + "\n")
            passes.flush()
            stopping.wait(config["interval_s"])
    return 0


# ----- main -----------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring.")
    parser.add_argument("--readings", type=int, default=200_000, help="readings fed to the agent (default 200000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="readings per second (default 1000)")
    parser.add_argument("--faults", type=int, default=24, help="faults, of four kinds (default 24)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the fault moments and kinds (default 1)")
    parser.add_argument("--workdir", type=Path, help="default .run/chaos-<pid>")
    parser.add_argument("--batch", type=int, default=100, help="readings per HTTP request (default 100)")
    parser.add_argument("--timeout", type=float, default=900.0, help="hard limit on the whole run, s (default 900)")
    parser.add_argument("--drain-budget", type=float, default=20.0, help="drain pass budget, s (DRAIN_BUDGET_S)")
    parser.add_argument("--drain-interval", type=float, default=1.0, help="pause between drain passes, s")
    parser.add_argument(
        "--broker-down",
        type=float,
        default=0.0,
        help="seconds with no broker at all in a broker restart, the agent and the drain running (default 0)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and queue files after a clean run")
    args = parser.parse_args(argv)
    if args.readings < 1 or args.rate <= 0 or args.faults < 0 or args.batch < 1:
        parser.error("--readings, --rate and --batch must be positive, --faults not negative")
    workdir = (args.workdir or ROOT / ".run" / f"chaos-{os.getpid()}").resolve()
    return Options(
        args.readings,
        args.rate,
        args.faults,
        args.seed,
        workdir,
        args.batch,
        args.timeout,
        args.drain_budget,
        args.drain_interval,
        args.broker_down,
        args.keep,
    )


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--drain-worker"]:
        return drain_worker(Path(argv[1]))
    options = parse(argv)
    options.workdir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    campaign = Campaign(options)
    status = 2
    try:
        campaign.run()
        count(campaign)
        judge(campaign)
        summary = report(campaign, time.monotonic() - started)
        (options.workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        status = 1 if campaign.outcome.problems else 0
    except (Aborted, StackError) as exc:
        print(f"\nchaos: aborted: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nchaos: interrupted; stopping everything it started", file=sys.stderr)
        status = 130
    finally:
        if campaign.feeder is not None:
            campaign.feeder.halt.set()
        if campaign.monitor is not None:
            campaign.monitor.halt.set()
        campaign.stack.close()
    if status == 0 and not options.keep:
        # the figures and logs stay; the bulky state goes
        shutil.rmtree(options.workdir / "pg", ignore_errors=True)
        for path in options.workdir.glob("agent-queue.db*"):
            path.unlink(missing_ok=True)
    print(f"work dir: {options.workdir} (logs, summary.json)")
    return status


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows under make
    sys.exit(main())
