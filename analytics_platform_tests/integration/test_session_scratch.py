"""What a test session killed before its teardown leaves behind (support/stack.py): its PostgreSQL cluster in
/dev/shm, still running, its temporary files and its in-memory broker, still running, are stopped and removed by
the next session, and nothing of a live session or of an unrelated process is touched."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics_platform.devstack.broker import start_tansu
from analytics_platform.devstack.postgres import EmbeddedPostgres
from analytics_platform.devstack.processes import free_port, port_open
from analytics_platform_tests.support.stack import (
    process_alive,
    stop_orphan_postmaster,
    sweep_dead_brokers,
    sweep_dead_sessions,
)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped (as a SIGKILLed pytest's)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def sessions_root() -> Iterator[Path]:
    """A stand-in for /dev/shm/analytics-platform-tests, traversable by the PostgreSQL server's own OS user
    (tmp_path is private to the user running the tests)."""
    root = Path(tempfile.mkdtemp(prefix="sessions-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_dead_sessions_running_cluster_is_stopped_and_removed_and_a_live_sessions_kept(sessions_root: Path) -> None:
    dead = dead_pid()
    run_dir = sessions_root / f"test-pg-{dead}"
    server = EmbeddedPostgres(
        data_dir=run_dir / "data",
        port=free_port(),
        password="test-" + secrets.token_hex(8),
        log=run_dir / "postgres.log",
        durable=False,
    )
    server.init()
    server.start()
    postmaster = int((run_dir / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
    live = sessions_root / "test-pg-1"  # pid 1 never exits
    (live / "data").mkdir(parents=True)
    dead_tmp = sessions_root / f"tmp-{dead}"
    dead_tmp.mkdir()
    not_a_session = sessions_root / "test-pg-template"
    not_a_session.mkdir()
    try:
        assert process_alive(postmaster) and port_open("127.0.0.1", server.port)
        assert sweep_dead_sessions(sessions_root, "test-pg") == [run_dir]
        assert not run_dir.exists()
        assert not process_alive(postmaster) and not port_open("127.0.0.1", server.port)
        assert live.is_dir() and not_a_session.is_dir()
        assert dead_tmp.is_dir()  # another kind: swept by its own owner's call
        assert sweep_dead_sessions(sessions_root, "tmp") == [dead_tmp]
        assert not dead_tmp.exists()
        assert sweep_dead_sessions(sessions_root, "test-pg") == []
    finally:
        if process_alive(postmaster):
            server.stop()


def test_a_pid_that_no_longer_runs_the_clusters_postmaster_is_not_signalled(sessions_root: Path) -> None:
    """postmaster.pid outlives its server; the system may have given the pid to another process since."""
    data = sessions_root / f"test-pg-{dead_pid()}" / "data"
    data.mkdir(parents=True)
    other = subprocess.Popen(["sleep", "60"])
    try:
        (data / "postmaster.pid").write_text(f"{other.pid}\n{data}\n")
        assert stop_orphan_postmaster(data) is False
        assert sweep_dead_sessions(sessions_root, "test-pg") == [data.parent]
        assert other.poll() is None and process_alive(other.pid)
    finally:
        other.kill()
        other.wait()
    data.parent.mkdir()
    assert stop_orphan_postmaster(data) is False  # no postmaster.pid at all
    assert not process_alive(other.pid)


def test_a_dead_sessions_broker_is_killed_and_a_live_sessions_kept(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    orphan = start_tansu(free_port(), logs / f"test-kafka-{dead_pid()}.log")
    live = start_tansu(free_port(), logs / f"test-kafka-{os.getpid()}.log")
    elsewhere = start_tansu(free_port(), tmp_path / "other" / f"test-kafka-{dead_pid()}.log")
    try:
        assert sweep_dead_brokers(logs) == [orphan.process.pid]
        assert orphan.process.wait(10) == -signal.SIGKILL
        assert live.alive() and elsewhere.alive()  # a live session's; another directory's
        assert sweep_dead_brokers(logs) == []
    finally:
        for broker in (orphan, live, elsewhere):
            broker.process.kill()
            broker.process.wait(10)
