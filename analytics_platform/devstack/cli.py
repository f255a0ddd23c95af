"""`analytics-devstack`: bring the whole platform up on one machine, and take it down cleanly.

    analytics-devstack demo    database + broker + migrations + topics + simulator + Dagster + API
    analytics-devstack up      database + broker + migrations only (for running things by hand)
    analytics-devstack stop    stop a database left running by a demo that was killed hard

Ctrl-C (or SIGTERM) stops everything the command started, in reverse order, and waits for it.
A missing prerequisite is reported as one line saying what to do, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from analytics_platform import observability
from analytics_platform.contracts.errors import ConfigError
from analytics_platform.contracts.registry import bind_domains
from analytics_platform.devstack.postgres import EmbeddedPostgres
from analytics_platform.devstack.processes import (
    Service,
    StackError,
    api_command,
    ensure_port_free,
    start_service,
    wait_until,
)
from analytics_platform.devstack.stack import Secrets, Stack, StackConfig, redact
from analytics_platform.settings import REPO_ROOT, PlatformSettings


def _echo(message: str) -> None:
    print(f"[devstack] {message}", flush=True)


# DEVSTACK_DAGSTER_NICE: the niceness of `dagster dev` and everything it starts (code server, daemon,
# webserver, the runs); 0 gives Dagster the same share of the cores as the live path
DAGSTER_NICE_DEFAULT = 10


def dagster_niceness() -> int:
    """DEVSTACK_DAGSTER_NICE as an int in 0..19 (a bad value is one line, not a traceback).

    Why lower Dagster's priority: at 5,000 readings/s the demo's processes saturate both cores, and
    Dagster's orchestration (0.5 of a core) competed with the drain service, the broker, PostgreSQL
    and the API, which serve a reading within seconds; the hourly runs lose nothing by waiting a moment."""
    raw = os.environ.get("DEVSTACK_DAGSTER_NICE", str(DAGSTER_NICE_DEFAULT)).strip()
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise ConfigError(f"DEVSTACK_DAGSTER_NICE must be an integer from 0 to 19, got {raw!r}")
    return value


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except (urllib.error.URLError, OSError):
        return False


class Demo:
    """The processes of `make demo`, started in order and stopped in reverse."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stack = Stack(StackConfig())
        self.services: list[Service] = []
        self.stopping = False
        self.dagster_nice = DAGSTER_NICE_DEFAULT

    def _signal(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            _echo(f"{signal.Signals(signum).name} received, stopping everything...")
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._signal)
        signal.signal(signal.SIGTERM, self._signal)
        host = "127.0.0.1"
        self.dagster_nice = dagster_niceness()  # a bad value stops the demo before anything starts
        ensure_port_free(host, self.args.dagster_port, "Dagster UI", "DAGSTER_PORT")
        ensure_port_free(host, self.args.api_port, "API", "API_PORT")
        try:
            env = self._start(host)
            if env is None:
                return 1
            self._banner(host)
            while not self.stopping:
                for service in self.services:
                    if not service.alive():
                        _echo(f"{service.name} exited unexpectedly; see {service.log}. Stopping.")
                        self.stopping = True
                        break
                time.sleep(0.5)
            return 0
        finally:
            self._stop()

    def _start(self, host: str) -> dict[str, str] | None:
        env = self.stack.up(echo=_echo)
        settings = PlatformSettings(kafka_brokers=env["KAFKA_BROKERS"])
        topics = [t for b in bind_domains(settings) for t in b.topics]
        created = self.stack.create_topics(topics)
        _echo(
            f"topics: {len(topics)} ready ({len(created)} created, "
            f"{self.stack.config.topic_partitions} partitions each)"
        )
        home = self.stack.config.run_dir / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
        child_env = {**os.environ, **env, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        # following drain ticks hold a code-server request thread each for DRAIN_BUDGET_S (the
        # default pool is cores + 4): room for them and for what the daemon and webserver ask
        child_env.setdefault("DAGSTER_GRPC_MAX_WORKERS", "16")
        # the drain reads Kafka all the time in its own process (a reading is served within about a
        # second); the Dagster drain sensors only report what it committed. DRAIN_MODE=sensor keeps
        # the drain inside the sensor ticks (one process fewer, readings wait for the next tick)
        child_env.setdefault("DRAIN_MODE", "service")
        logs = self.stack.config.logs
        bin_dir = Path(sys.executable).parent
        self.services.append(
            start_service(
                "api",
                api_command(host, self.args.api_port),
                logs / "api.log",
                env=child_env,
            )
        )
        self.services.append(
            start_service(
                "dagster",
                [
                    str(bin_dir / "dagster"),
                    "dev",
                    "-w",
                    str(REPO_ROOT / "workspace.yaml"),
                    "-h",
                    host,
                    "-p",
                    str(self.args.dagster_port),
                ],
                logs / "dagster.log",
                env=child_env,
                cwd=REPO_ROOT,
                stop_signal=signal.SIGINT,
                # the hourly runs, the daemon and the code server are not on the live path (the drain
                # service drains, finalises and judges): when both cores are busy they wait, not it
                niceness=self.dagster_nice,
            )
        )
        if child_env["DRAIN_MODE"] == "service":
            self.services.append(
                start_service(
                    "drain",
                    [sys.executable, "-m", "analytics_platform.cli", "drain", "serve"],
                    logs / "drain.log",
                    env=child_env,
                )
            )
        if self.args.rate > 0:
            self.services.append(
                start_service(
                    "simulator",
                    [
                        sys.executable,
                        "-m",
                        "edge_agents.simulator",
                        "--rate",
                        str(self.args.rate),
                        "--late",
                        "0.01",
                        "--duplicate",
                        "0.01",
                        "--malformed",
                        "0.005",
                    ],
                    logs / "simulator.log",
                    env=child_env,
                )
            )
        api = f"http://{host}:{self.args.api_port}/v1/health"
        dagster = f"http://{host}:{self.args.dagster_port}/server_info"
        _echo("waiting for the API and the Dagster UI (the first start takes ~30 s)...")
        try:
            wait_until(lambda: self.stopping or _http_ok(api), 60, "API", log=logs / "api.log")
            wait_until(lambda: self.stopping or _http_ok(dagster), 180, "Dagster UI", log=logs / "dagster.log")
        except StackError as exc:
            _echo(str(exc))
            return None
        return None if self.stopping else env

    def _banner(self, host: str) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        start = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        end = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        env = self.stack.env
        service = os.environ.get("DRAIN_MODE", "service") == "service"
        drain = f"reads Kafka all the time, log {self.stack.config.logs}/drain.log" if service else "in Dagster's ticks"
        lines = [
            "",
            "The plant analytics platform is running:",
            f"  Dagster UI     http://{host}:{self.args.dagster_port}   (Assets, group ingest)",
            f"  Dashboard      http://{host}:{self.args.api_port}/ui   "
            f"(sign in with the key in {self.stack.api_key_file})",
            f"  REST API       http://{host}:{self.args.api_port}/docs",
            f"  health         http://{host}:{self.args.api_port}/v1/health",
            f"  metrics        http://{host}:{self.args.api_port}/v1/metrics",
            f"  Kafka broker   {env['KAFKA_BROKERS']}",
            f"  drain          {drain} (DRAIN_MODE)",
            f"  database       {redact(env['DATABASE_URL'])}",
            f"  logs           {self.stack.config.logs}/",
            "",
            f"Readings from the simulator are served about a second after they are sent, the current minute's "
            f"aggregate moves with them (provisional until its hour is materialised); the API key of tenant t1 is "
            f"in {self.stack.api_key_file}:",
            f'  curl -H "X-API-Key: $(cat {self.stack.api_key_file})" \'{f"http://{host}:{self.args.api_port}"}'
            f"/v1/readings?factory_id=f1&machine_id=mc-01&metric=temp&start={start}&end={end}&limit=5'",
            f'  curl -H "X-API-Key: $(cat {self.stack.api_key_file})" \'{f"http://{host}:{self.args.api_port}"}'
            f"/v1/agg?factory_id=f1&machine_id=mc-01&metric=temp&window_s=60&start={start}&end={end}&limit=5'",
            "",
            "Press Ctrl-C to stop everything.",
        ]
        print("\n".join(lines), flush=True)

    def _stop(self) -> None:
        for service in reversed(self.services):
            _echo(f"stopping {service.name}")
            service.stop(timeout=30 if service.name == "dagster" else 10)
        self.services.clear()
        _echo("stopping broker and database")
        self.stack.down()
        _echo("stopped")


def _up(args: argparse.Namespace) -> int:
    stack = Stack(StackConfig())
    stopping = {"now": False}

    def _signal(_signum: int, _frame: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGINT, _signal)
    signal.signal(signal.SIGTERM, _signal)
    try:
        env = stack.up(echo=_echo)
        settings = PlatformSettings(kafka_brokers=env["KAFKA_BROKERS"])
        stack.create_topics([t for b in bind_domains(settings) for t in b.topics])
        if args.env_file:
            Path(args.env_file).write_text("".join(f"export {k}='{v}'\n" for k, v in env.items()))
            Path(args.env_file).chmod(0o600)
            _echo(f"environment written to {args.env_file} (source it); Ctrl-C stops the stack")
        else:
            print(json.dumps({k: redact(v) for k, v in env.items()}, indent=2), flush=True)
        while not stopping["now"]:
            time.sleep(0.5)
        return 0
    finally:
        stack.down()


def _stop_leftovers(_args: argparse.Namespace) -> int:
    config = StackConfig()
    data = config.run_dir / "pgdata"
    if not (data / "PG_VERSION").exists():
        _echo("no devstack database here")
        return 0
    pg = EmbeddedPostgres(
        data,
        config.pg_port,
        Secrets(config.run_dir / "secrets.json").get("postgres"),
        config.logs / "postgres.log",
    )
    if pg.running():
        pg.stop()
        _echo("database stopped")
    else:
        _echo("database was not running")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="analytics-devstack", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the whole platform with the simulator")
    demo.add_argument("--dagster-port", type=int, default=int(os.environ.get("DAGSTER_PORT", 3000)))
    demo.add_argument("--api-port", type=int, default=int(os.environ.get("API_PORT", 7305)))
    demo.add_argument(
        "--rate",
        type=float,
        default=float(os.environ.get("SIMULATOR_RATE", 50)),
        help="simulator messages per second (0 = no simulator)",
    )
    up = sub.add_parser("up", help="database + broker + migrations, until Ctrl-C")
    up.add_argument("--env-file", help="write export lines with the connection settings here")
    sub.add_parser("stop", help="stop a database left running by a killed demo")
    args = parser.parse_args(argv)
    try:
        # its own log lines as the processes it starts write theirs (they inherit LOG_* and OTEL_*)
        observability.setup_process("analytics-devstack", PlatformSettings())
        if args.command == "demo":
            return Demo(args).run()
        if args.command == "up":
            return _up(args)
        return _stop_leftovers(args)
    except (StackError, ConfigError) as exc:
        print(f"[devstack] error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
