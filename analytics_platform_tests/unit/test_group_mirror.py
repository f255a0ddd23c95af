"""The consumer-group mirror's child processes (analytics_platform/ingest/group_mirror.py).

librdkafka aborts a process whose coordinator request timed out while the broker was away once the
broker comes back (confluentinc/librdkafka#4605; `make chaos CHAOS_ARGS="--broker-down 5"` lost two
drain processes to it). The mirror therefore runs in a child: these tests give it children that
abort, hang or record what they were sent, and check that the drain's side survives, bounds and
reports them, and never drops an update.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import pytest

from analytics_platform.ingest.group_mirror import GroupMirror

KAFKA = {"bootstrap.servers": "127.0.0.1:1"}


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_aborts_is_reported_and_the_next_update_goes_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mirror = GroupMirror(command=_python("import os; os.abort()"))
    assert mirror.submit(KAFKA, "g", {("t", 0): 5}, timeout_s=5)
    with caplog.at_level(logging.WARNING, logger="analytics_platform.ingest.group_mirror"):
        (outcome,) = mirror.wait()
    assert (outcome.group, outcome.returncode, outcome.ok) == ("g", -signal.SIGABRT, False)
    assert outcome.describe().startswith("the mirror process died of SIGABRT")
    assert [r.getMessage() for r in caplog.records] == [
        "could not mirror offsets to Kafka group g (lag dashboards only; the database holds the offsets): "
        + outcome.describe()
    ]
    sent = tmp_path / "sent.json"
    mirror.command = _python(f"import sys; open({str(sent)!r}, 'wb').write(sys.stdin.buffer.read())")
    assert mirror.submit(KAFKA, "g", {("t", 0): 7}, timeout_s=5)
    (outcome,) = mirror.wait()
    assert outcome.ok
    assert json.loads(sent.read_bytes()) == {"config": KAFKA, "group": "g", "offsets": [["t", 0, 7]], "timeout_s": 5}


def test_a_hung_child_is_killed_at_its_deadline_and_its_successor_carries_every_update(tmp_path: Path) -> None:
    sent = tmp_path / "sent.json"
    mirror = GroupMirror(command=_python("import sys, time; sys.stdin.buffer.read(); time.sleep(120)"), grace_s=0)
    # a deadline of 2 s (grace 0): the two submits below must come while the child still runs, which
    # 0.3 s left to a loaded machine's scheduling between two lines
    assert mirror.submit(KAFKA, "g", {("t", 0): 5, ("t", 1): 3}, timeout_s=2)
    # while it runs, later positions wait (merged, the newest per partition), other groups go out
    assert not mirror.submit(KAFKA, "g", {("t", 0): 9}, timeout_s=2)
    assert not mirror.submit(KAFKA, "g", {("u", 2): 4}, timeout_s=2)
    assert mirror.pending("g") and not mirror.pending("h")
    (outcome,) = mirror.wait(timeout_s=30)
    assert (outcome.group, outcome.returncode) == ("g", -signal.SIGKILL)
    mirror.command = _python(f"import sys; open({str(sent)!r}, 'wb').write(sys.stdin.buffer.read())")
    assert mirror.submit(KAFKA, "g", {}, timeout_s=5)  # a pass that consumed nothing sends what waited
    assert not mirror.pending("g")
    assert [o.ok for o in mirror.wait()] == [True]
    assert json.loads(sent.read_bytes())["offsets"] == [["t", 0, 9], ["t", 1, 3], ["u", 2, 4]]
    assert not mirror.submit(KAFKA, "g", {}, timeout_s=5)  # nothing left to send


def test_the_real_child_reports_an_unreachable_broker() -> None:
    """The shipped child, against a port nobody listens on: it gives up after its timeout with the
    client's error, and exits without tearing librdkafka down."""
    mirror = GroupMirror()
    assert mirror.submit(KAFKA, "g", {("t", 0): 5}, timeout_s=0.5)
    (outcome,) = mirror.wait()
    assert outcome.returncode == 1
    assert outcome.error.startswith("KafkaException: ") and "_TIMED_OUT" in outcome.error


def test_a_config_that_cannot_travel_to_the_child_costs_the_update_not_the_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mirror = GroupMirror(command=_python("raise SystemExit(0)"))
    with caplog.at_level(logging.WARNING, logger="analytics_platform.ingest.group_mirror"):
        started = mirror.submit({**KAFKA, "oauth_cb": print}, "g", {("t", 0): 5}, timeout_s=5)
    assert (started, mirror.wait()) == (False, [])
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["cannot mirror offsets to Kafka group g"]
    assert mirror.pending("g")  # kept for a later update
