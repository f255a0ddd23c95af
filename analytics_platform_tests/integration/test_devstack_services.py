"""The devstack's child processes: `start_service` with a niceness lowers the CPU priority of the
command and of everything it starts (the demo gives Dagster's processes less of a busy machine than
the live path), and DEVSTACK_DAGSTER_NICE is read as the README says."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from analytics_platform.contracts.errors import ConfigError
from analytics_platform.devstack.cli import dagster_niceness
from analytics_platform.devstack.processes import StackError, start_service
from analytics_platform_tests.support.edge import wait_for

# a parent that starts a child, writes the child's pid and waits for it
PARENT = (
    "import subprocess, sys\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'], stdin=subprocess.PIPE)\n"
    "print(child.pid, flush=True)\n"
    "child.wait()\n"
)


def _started(tmp_path: Path, niceness: int) -> tuple[int, int, object]:
    log = tmp_path / f"parent-{niceness}.log"
    service = start_service("parent", [sys.executable, "-c", PARENT], log, niceness=niceness)
    child = int(wait_for(lambda: log.read_text().strip(), 30, "the child's pid"))
    return service.process.pid, child, service


@pytest.mark.parametrize("niceness", [0, 7])
def test_a_service_and_its_children_run_at_the_niceness_asked_for(tmp_path: Path, niceness: int) -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    parent, child, service = _started(tmp_path, niceness)
    try:
        expected = min(ours + niceness, 19)
        assert os.getpriority(os.PRIO_PROCESS, parent) == expected
        assert os.getpriority(os.PRIO_PROCESS, child) == expected
        assert os.getpriority(os.PRIO_PROCESS, 0) == ours  # the caller keeps its own
    finally:
        service.stop(timeout=5)


def test_a_missing_command_is_one_line_with_or_without_a_niceness(tmp_path: Path) -> None:
    for niceness in (0, 10):
        with pytest.raises(StackError, match="cannot start ghost: /nonexistent/ghost not found"):
            start_service("ghost", ["/nonexistent/ghost"], tmp_path / "ghost.log", niceness=niceness)


def test_dagster_niceness_defaults_to_10_and_refuses_what_nice_does_not_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEVSTACK_DAGSTER_NICE", raising=False)
    assert dagster_niceness() == 10
    for raw, value in (("0", 0), (" 19 ", 19), ("3", 3)):
        monkeypatch.setenv("DEVSTACK_DAGSTER_NICE", raw)
        assert dagster_niceness() == value
    for raw in ("20", "-1", "ten", ""):
        monkeypatch.setenv("DEVSTACK_DAGSTER_NICE", raw)
        with pytest.raises(ConfigError, match="DEVSTACK_DAGSTER_NICE must be an integer from 0 to 19"):
            dagster_niceness()
