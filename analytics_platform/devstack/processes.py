"""Small process and port utilities for the embedded stack (no Docker, no root needed)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """A prerequisite is missing; the message is one line saying what to do."""


def api_command(host: str, port: int, *extra: str) -> list[str]:
    """The API process as it is deployed (api/serve.py: uvicorn with the app factory, a listening socket
    per worker) in this interpreter: the one spelling the devstack, the API benchmark and the dashboard
    tests start it with."""
    return [sys.executable, "-m", "analytics_platform.api", "--host", host, "--port", str(port), *extra]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int, what: str, variable: str) -> None:
    """Fail with one line naming the variable to change when the port is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise StackError(
                f"port {port} on {host} is taken, so the {what} cannot start: stop what uses it "
                f"or set {variable} to a free port"
            ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (for tests, which may run side by side)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    interval: float = 0.2,
    log: Path | None = None,
) -> None:
    """Poll `condition` until it holds; on timeout raise a StackError naming the log to read."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    hint = f"; see {log}" if log else ""
    raise StackError(f"{what} did not come up within {timeout:.0f}s{hint}")


@dataclass
class Service:
    """A child process in its own session (so stopping it stops its children too)."""

    name: str
    process: subprocess.Popen
    log: Path
    stop_signal: int = signal.SIGTERM

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Signal the leader (it shuts its own children down), wait, then end the group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, self.stop_signal)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        _reap_group(self.process.pid, grace=5.0)


def _reap_group(pgid: int, grace: float = 5.0) -> None:
    """Children of a group leader may outlive it (e.g. dagster's code server): end them too."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def start_service(
    name: str,
    command: Sequence[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
    niceness: int = 0,
) -> Service:
    """Start `command` with stdout/stderr appended to `log`, in a new session; `niceness` > 0 lowers
    its CPU priority (and its children's) so that, when the cores are contended, it yields to the
    processes started without."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # coreutils' nice execs the command (a preexec_fn is not safe beside the caller's threads)
    nice = shutil.which("nice") if niceness > 0 else None
    if nice and shutil.which(command[0]) is None:  # as Popen says it when it runs the command itself
        raise StackError(f"cannot start {name}: {command[0]} not found")
    handle = log.open("ab")
    try:
        process = subprocess.Popen(
            [nice, "-n", str(niceness), *command] if nice else list(command),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise StackError(f"cannot start {name}: {command[0]} not found") from None
    finally:
        handle.close()
    return Service(name, process, log, stop_signal)
