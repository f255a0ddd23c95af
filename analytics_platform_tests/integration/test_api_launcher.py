"""The API's launcher (`python -m analytics_platform.api`, api/serve.py) as the devstack and the chart run it:
with --workers 2 each worker accepts on a SO_REUSEPORT socket of its own, so 50 connections opened at once
are spread by the kernel over both (uvicorn's one shared socket let one worker take 50 of 50); SIGTERM stops
the workers and the parent cleanly; SIGHUP, SIGTTIN and SIGTTOU replace, add and remove workers, each with
a socket of its own; a taken port, or one an API of this user already serves, is one line
and exit status 1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from analytics_platform.devstack.processes import api_command, free_port
from analytics_platform_tests.support.edge import wait_for
from analytics_platform_tests.support.stack import DatabaseHandle


def _env(database: DatabaseHandle, kafka_brokers: str) -> dict[str, str]:
    return {
        **os.environ,
        "API_DATABASE_URL": database.api_url,
        "DATABASE_URL": database.api_url,
        "KAFKA_BROKERS": kafka_brokers,
        "PYTHONUNBUFFERED": "1",
    }


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # answered (503: degraded) is up
    except OSError:
        return False


def _workers(process: subprocess.Popen) -> list[psutil.Process]:
    """The live uvicorn workers (spawned children that import the app), not multiprocessing's tracker, nor a
    killed worker the supervisor has not reaped yet."""
    workers = []
    for child in psutil.Process(process.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.Error:  # it died between the listing and the look
            continue
    return workers


@contextmanager
def launched(database: DatabaseHandle, kafka_brokers: str, tmp_path: Path, workers: int) -> Iterator[tuple]:
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("w") as out:
        command = api_command("127.0.0.1", port, "--workers", str(workers), "--log-level", "warning")
        process = subprocess.Popen(command, env=_env(database, kafka_brokers), stdout=out, stderr=out)
    try:
        wait_for(lambda: _healthy(port), 90, "the API to answer")
        wait_for(lambda: len(_workers(process)) == workers, 30, f"{workers} workers")
        yield process, port, log
    finally:
        if process.poll() is None:
            # the workers too: killed alone, the supervisor leaves them serving (a failed test left two
            # workers running for hours)
            for child in psutil.Process(process.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()
            process.kill()
            process.wait(10)


def _connections_per_worker(process: subprocess.Popen, port: int) -> list[int]:
    counts = []
    for worker in _workers(process):
        held = worker.net_connections(kind="tcp")
        counts.append(sum(1 for c in held if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port))
    return sorted(counts, reverse=True)


def test_fifty_connections_spread_over_both_workers_and_sigterm_stops_all(
    database: DatabaseHandle, kafka_brokers: str, tmp_path: Path
) -> None:
    with launched(database, kafka_brokers, tmp_path, workers=2) as (process, port, _log):
        workers = _workers(process)
        listening = [
            sum(1 for c in w.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port)
            for w in workers
        ]
        assert listening == [1, 1], "each worker holds a listening socket of its own"
        parent_listens = [
            c for c in psutil.Process(process.pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN
        ]
        assert parent_listens == [], "the parent keeps no socket that no worker accepts on"
        clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(50)]
        try:
            for client in clients:
                client.sendall(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n")
            for client in clients:
                assert client.recv(64).startswith(b"HTTP/1.1 307"), "every connection is served"
            split = _connections_per_worker(process, port)
        finally:
            for client in clients:
                client.close()
        assert sum(split) == 50
        # by the kernel's hash each connection lands on either socket alike: 41 or more of 50 on one
        # has a probability of 1e-5; uvicorn's shared socket put 43-50 on one in 6 of 12 tries
        assert max(split) <= 40, split
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_a_taken_port_is_one_line_and_exit_1(database: DatabaseHandle, kafka_brokers: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = api_command("127.0.0.1", port, "--workers", "2")
        done = subprocess.run(command, env=_env(database, kafka_brokers), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"cannot start the API: 127.0.0.1:{port} cannot be bound (Address already in use); "
        "stop what uses it or pass another --port (API_PORT)"
    )


def test_a_second_api_on_the_same_port_is_refused_not_joined(
    database: DatabaseHandle, kafka_brokers: str, tmp_path: Path
) -> None:
    """SO_REUSEPORT lets sockets of one user share a port: a second API must not silently take half
    of the first one's connections."""
    with launched(database, kafka_brokers, tmp_path, workers=2) as (process, port, _log):
        command = [sys.executable, "-m", "analytics_platform.api", "--host", "127.0.0.1", "--port", str(port)]
        done = subprocess.run(command, env=_env(database, kafka_brokers), capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert done.stderr.strip().startswith(f"cannot start the API: 127.0.0.1:{port} cannot be bound")
        assert _healthy(port)
        process.terminate()
        assert process.wait(30) == 0


def _listening(workers: list[psutil.Process], port: int) -> list[int]:
    return [
        sum(1 for c in w.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port)
        for w in workers
    ]


def _served(port: int, connections: int = 50) -> list[bytes]:
    """The first bytes of the answer to `GET /` on each of `connections` connections opened at once."""
    clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(connections)]
    try:
        for client in clients:
            client.sendall(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n")
        return [client.recv(64)[:12] for client in clients]
    finally:
        for client in clients:
            client.close()


def test_a_killed_worker_is_replaced_with_a_socket_of_its_own_and_no_connection_is_lost(
    database: DatabaseHandle, kafka_brokers: str, tmp_path: Path
) -> None:
    """The supervisor's replacement (ReusePortWorkers.keep_subprocess_alive) binds the new worker a socket,
    and the dead one's goes with it: a socket nobody accepts on would take its share of new connections
    and leave them unanswered."""
    with launched(database, kafka_brokers, tmp_path, workers=2) as (process, port, _log):
        before = _workers(process)
        victim, survivor = before[0], before[1]
        victim.kill()

        def replaced() -> bool:
            pids = {w.pid for w in _workers(process)}
            return len(pids) == 2 and survivor.pid in pids and victim.pid not in pids

        wait_for(replaced, 60, "the killed worker to be replaced")
        workers = _workers(process)
        wait_for(lambda: _listening(workers, port) == [1, 1], 60, "the new worker to listen on its own socket")
        parent = psutil.Process(process.pid)
        assert [c for c in parent.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN] == []
        assert _served(port) == [b"HTTP/1.1 307"] * 50, "every connection is served"
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0


def test_sighup_replaces_every_worker_and_ttin_ttou_add_and_remove_one_each_with_its_own_socket(
    database: DatabaseHandle, kafka_brokers: str, tmp_path: Path
) -> None:
    """uvicorn's supervisor signals through ReusePortWorkers' own restart_all and handle_ttin: SIGHUP
    (a new release, a rotated key file) replaces the workers one by one, SIGTTIN adds one, SIGTTOU
    removes one. Each worker started so listens on a socket of its own, and a removed or replaced
    worker's socket goes with it: a listening socket left behind would take its share of new
    connections and never answer them."""
    with launched(database, kafka_brokers, tmp_path, workers=2) as (process, port, _log):
        first = {w.pid for w in _workers(process)}
        os.kill(process.pid, signal.SIGHUP)

        def replaced() -> bool:
            pids = {w.pid for w in _workers(process)}
            return len(pids) == 2 and not pids & first

        wait_for(replaced, 90, "SIGHUP to replace both workers")
        wait_for(lambda: _listening(_workers(process), port) == [1, 1], 60, "each new worker to listen")
        assert _served(port) == [b"HTTP/1.1 307"] * 50
        second = {w.pid for w in _workers(process)}

        os.kill(process.pid, signal.SIGTTIN)
        wait_for(lambda: len(_workers(process)) == 3, 60, "SIGTTIN to add a third worker")
        wait_for(lambda: _listening(_workers(process), port) == [1, 1, 1], 60, "the third worker to listen")
        assert second < {w.pid for w in _workers(process)}, "adding a worker keeps the others"
        assert _served(port) == [b"HTTP/1.1 307"] * 50

        os.kill(process.pid, signal.SIGTTOU)
        wait_for(lambda: len(_workers(process)) == 2, 60, "SIGTTOU to remove a worker")
        assert _listening(_workers(process), port) == [1, 1]
        parent = psutil.Process(process.pid)
        assert [c for c in parent.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN] == []
        assert _served(port) == [b"HTTP/1.1 307"] * 50, "no connection lands on a socket nobody accepts on"
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0
