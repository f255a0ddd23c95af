"""The API's launcher: uvicorn with the app factory, each worker on a listening socket of its own.

`uvicorn --workers N` binds one socket in the parent and every worker accepts from it: whichever
worker wakes first takes every connection then waiting, so 50 dashboards connecting at once split
43/7 between two workers in one measured run, and the 43 connections' requests queued behind one
process while the other idled (docs/benchmarks.md, REST API). Here each worker gets its own socket
bound with SO_REUSEPORT on the same address: the kernel spreads new connections over the listening
sockets by a hash of the connection, independently of which process is awake.

Everything else is uvicorn's own supervisor (`Multiprocess`): SIGINT/SIGTERM stop the workers
gracefully (each finishes its requests), SIGHUP replaces them one by one, SIGTTIN/SIGTTOU add or
remove one, a dead worker is replaced, and a worker that fails to start stops the whole. The only
change is where a new worker's socket comes from: bound for it, handed to it, and closed in the
parent once the worker holds it, so a worker's socket lives and dies with the worker (connections
are never hashed to a socket nobody accepts on).

`--workers` means what it means to uvicorn (default: WEB_CONCURRENCY, else 1); one worker runs in
this process, as `uvicorn` does. A port already taken is one line on stderr and exit status 1."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

import uvicorn
from uvicorn.config import LOG_LEVELS
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from analytics_platform.settings import get_settings

APP = "analytics_platform.api.app:create_app"


class PortTaken(RuntimeError):
    """The address cannot be bound; the message is one line saying what to do."""


def listening_socket(host: str, port: int, *, reuse_port: bool, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on host:port; with `reuse_port`, one of a group on the same address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise PortTaken(
            f"cannot start the API: {host}:{port} cannot be bound ({exc.strerror or exc}); "
            "stop what uses it or pass another --port (API_PORT)"
        ) from None
    sock.set_inheritable(True)
    return sock


def free_address(host: str, port: int) -> int:
    """The port to serve on, checked free by a bind without SO_REUSEPORT: a bind with it would join
    the listening group of another process of the same user (an API left running) and share its
    connections instead of failing. Port 0 picks one."""
    probe = listening_socket(host, port, reuse_port=False)
    try:
        return probe.getsockname()[1]
    finally:
        probe.close()


class ReusePortWorkers(Multiprocess):
    """uvicorn's supervisor, each worker started with a SO_REUSEPORT socket of its own. The methods
    below are uvicorn 0.54's, with `Process(config, sockets)` + `start()` replaced by `_spawn()`."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config, sockets=[])

    def _spawn(self) -> Process:
        sock = listening_socket(self.config.host, self.config.port, reuse_port=True, backlog=self.config.backlog)
        try:
            process = Process(self.config, [sock])
            process.start()  # the spawned worker receives its own copy of the descriptor
        finally:
            sock.close()
        return process

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            self.processes.append(self._spawn())

    def restart_all(self) -> None:
        for idx, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = self._spawn()
            if not new_process.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new_process.kill()
                new_process.join()
                return
            old_process.terminate()
            old_process.join()
            self.processes[idx] = new_process

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == uvicorn.config.STARTUP_FAILURE:
                self.should_exit.set()  # the app or its settings are broken: every restart would fail alike
                return
            if self.should_exit.is_set():
                return
            self.processes[idx] = self._spawn()

    def handle_ttin(self) -> None:
        self.processes_num += 1
        self.processes.append(self._spawn())


def default_workers() -> int:
    """uvicorn's default: WEB_CONCURRENCY, else one."""
    return int(os.environ.get("WEB_CONCURRENCY", "1"))


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m analytics_platform.api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=settings.api_host, help="address (default API_HOST)")
    parser.add_argument("--port", type=int, default=settings.api_port, help="port (default API_PORT)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default WEB_CONCURRENCY or 1)")
    parser.add_argument("--log-level", choices=sorted(LOG_LEVELS), default=None)
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    args = parser.parse_args(argv)
    args.workers = default_workers() if args.workers is None else args.workers
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        port = free_address(args.host, args.port)
    except PortTaken as exc:
        print(exc, file=sys.stderr)
        return 1
    config = uvicorn.Config(
        APP,
        factory=True,
        host=args.host,
        port=port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    if args.workers == 1:
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else uvicorn.config.STARTUP_FAILURE
    print(f"API on http://{args.host}:{port}: {args.workers} workers, a SO_REUSEPORT socket each", flush=True)
    try:
        ReusePortWorkers(config).run()
    except PortTaken as exc:  # another process took the port between the check and a worker's bind
        print(exc, file=sys.stderr)
        return 1
    return 0
