"""Mirror the drain's offsets into the Kafka consumer group, in a child process.

The database holds the drain's offsets (they commit with the rows); the Kafka consumer group is
only a mirror for lag dashboards (Burrow, kafka-exporter, `kafka-consumer-groups`). Setting a
group's offsets is a coordinator request, and librdkafka (2.16 here) aborts the whole process
(`rd_kafka_enq_once_del_source_return: Assertion 'eonce->refcnt > 0' failed`, SIGABRT) when such a
request times out while the broker is away and the broker comes back before the client is destroyed:
confluentinc/librdkafka#4605, fix proposed in #5397. Found by `make chaos CHAOS_ARGS="--broker-down 5"`:
two drain processes died that way in one run. In-process, that abort would take the Dagster code
server (and every sensor in it) down with the mirror.

So the mirror runs in a short-lived child process (`python -m analytics_platform.ingest.group_mirror`,
the request on stdin: no secrets in argv). It is off the pass's critical path (the pass does not
wait for it), bounded (a child still running after its timeout plus a grace is killed), one at a
time per consumer group (a pass that finds the previous mirror still running leaves its offsets for
the next pass, which sends them with its own), and a child that failed or died is logged, with its
signal, when it is reaped. Whatever librdkafka does in the child, the drain only loses (or delays) a
lag-dashboard update.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

log = logging.getLogger(__name__)

#: seconds a child may outlive its own request timeout before it is killed
GRACE_S = 5.0


@dataclass
class _Child:
    group: str
    process: subprocess.Popen
    stderr: IO[bytes]
    started: float
    deadline: float
    positions: dict[tuple[str, int], int]


@dataclass
class MirrorOutcome:
    """What a finished mirror child did: `returncode` 0 = the group's offsets were set."""

    group: str
    returncode: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"the mirror process died of {name}" + (f": {self.error}" if self.error else "")
        return self.error or f"the mirror process exited with status {self.returncode}"


@dataclass
class GroupMirror:
    """The drain's side: starts mirror children, reaps them, reports how they ended.

    `command` is the child's argv (the module below by default)."""

    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", __name__])
    grace_s: float = GRACE_S
    _pending: dict[str, dict[tuple[str, int], int]] = field(default_factory=dict)
    _children: dict[str, _Child] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: list[MirrorOutcome] = field(default_factory=list)

    def submit(
        self, kafka_config: dict[str, Any], group: str, positions: dict[tuple[str, int], int], timeout_s: float
    ) -> bool:
        """Mirror `positions` into `group`: start a child now, or, while the previous child of this
        group still runs, keep them for the next call (merged, newest per partition: an update is
        delayed, never dropped). True when a child was started."""
        self.reap()
        with self._lock:
            pending = self._pending.setdefault(group, {})
            pending.update(positions)
            if group in self._children or not pending:
                return False
            try:  # the mirror never fails a pass: its offsets are already committed
                payload = json.dumps(
                    {
                        "config": kafka_config,
                        "group": group,
                        "offsets": [[t, p, o] for (t, p), o in sorted(pending.items())],
                        "timeout_s": timeout_s,
                    }
                ).encode()
            except (TypeError, ValueError) as exc:  # a client config holding callbacks
                log.warning(
                    "cannot mirror offsets to Kafka group %s: the Kafka client config is not JSON: %s", group, exc
                )
                return False
            stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed when the child is reaped)
            try:
                process = subprocess.Popen(
                    self.command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,  # a Ctrl-C of the drain's terminal is not its business
                )
                assert process.stdin is not None
                process.stdin.write(payload)
                process.stdin.close()
            except OSError as exc:
                stderr.close()
                log.warning("could not start the Kafka consumer-group mirror for %s: %s", group, exc)
                return False
            del self._pending[group]
            now = time.monotonic()
            self._children[group] = _Child(group, process, stderr, now, now + timeout_s + self.grace_s, pending)
            return True

    def pending(self, group: str) -> bool:
        """Whether positions of `group` wait for the next call."""
        with self._lock:
            return bool(self._pending.get(group))

    def reap(self) -> list[MirrorOutcome]:
        """Collect finished children (and kill overdue ones); log the failures; return what ended."""
        ended: list[MirrorOutcome] = []
        with self._lock:
            for group, child in list(self._children.items()):
                code = child.process.poll()
                if code is None and time.monotonic() > child.deadline:
                    child.process.kill()
                    code = child.process.wait()
                if code is None:
                    continue
                del self._children[group]
                child.stderr.seek(0)
                text = child.stderr.read().decode("utf-8", "replace").strip()
                child.stderr.close()
                lines = [line for line in text.splitlines() if not line.startswith("%")]  # librdkafka's own log
                outcome = MirrorOutcome(group, code, lines[-1] if lines else "")
                ended.append(outcome)
                if not outcome.ok:
                    # what it did not set goes out with the next update (newer positions win)
                    self._pending[group] = {**child.positions, **self._pending.get(group, {})}
                    log.warning(
                        "could not mirror offsets to Kafka group %s (lag dashboards only; the database holds "
                        "the offsets): %s",
                        group,
                        outcome.describe(),
                    )
            self.outcomes.extend(ended)
            del self.outcomes[:-100]
        return ended

    def wait(self, timeout_s: float = 30) -> list[MirrorOutcome]:
        """Block until every running child ended (or was killed at its deadline): for tests and a
        clean shutdown."""
        end = time.monotonic() + timeout_s
        ended: list[MirrorOutcome] = []
        while True:
            with self._lock:
                children = list(self._children.values())
            if not children:
                return ended
            left = end - time.monotonic()
            if left <= 0:
                return ended
            with contextlib.suppress(subprocess.TimeoutExpired):
                children[0].process.wait(timeout=min(left, max(0.0, children[0].deadline - time.monotonic()) + 0.1))
            ended += self.reap()


#: one per process: the Dagster code server's sensors and the devstack's drain loop share it
MIRROR = GroupMirror()


def _main() -> int:
    """The child: read the request, set the offsets, exit without destroying the client.

    `os._exit` skips librdkafka's teardown, where a timed-out coordinator request can still fire."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    request = json.loads(sys.stdin.buffer.read())
    timeout_s = float(request["timeout_s"])
    code = 0
    try:
        admin = AdminClient({**request["config"], "log_level": 3})
        offsets = [TopicPartition(t, p, o) for t, p, o in request["offsets"]]
        futures = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(request["group"], offsets)], request_timeout=timeout_s
        )
        for future in futures.values():
            future.result(timeout=timeout_s + 1)
    except Exception as exc:  # a timeout, a broker without the admin API
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        code = 1
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _main()
