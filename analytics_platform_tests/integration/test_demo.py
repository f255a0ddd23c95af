"""End to end, as a newcomer runs it: `analytics-devstack demo` brings up database, broker,
simulator, Dagster and the API; the simulator's readings become queryable through the API and
the raw partitions show up in Dagster; Ctrl-C stops everything, leaving no process behind."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from analytics_platform.devstack.processes import free_port, port_open

pytestmark = pytest.mark.slow


def _get(url: str, api_key: str | None = None) -> dict:
    request = urllib.request.Request(url, headers={"X-API-Key": api_key} if api_key else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


def _poll(check, timeout: float, what: str):
    """Wait for an observable condition (not a fixed sleep), failing with what was awaited."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def _processes_with_env(marker: str) -> list[str]:
    """Every live process that inherited `marker` in its environment (i.e. the demo started it)."""
    found = []
    for proc in os.listdir("/proc"):
        if not proc.isdigit() or int(proc) == os.getpid():
            continue
        try:
            with open(f"/proc/{proc}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
            with open(f"/proc/{proc}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker.encode() in environ:
            found.append(f"{proc}: {cmdline}")
    return found


def _parent(pid: int) -> int:
    """The parent of `pid` (0 once it is gone): the field after the command name in /proc/<pid>/stat,
    read after the last ")" because the name itself may hold spaces and parentheses."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _descends_from(pid: int, ancestors: set[int]) -> bool:
    while pid > 1:
        if pid in ancestors:
            return True
        pid = _parent(pid)
    return False


def _niceness(pid: int) -> int | None:
    try:
        return os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:  # ended between the listing and the look (a run's worker, say)
        return None


def test_demo_runs_end_to_end_and_stops_cleanly(repo_root, tmp_path) -> None:
    ports = {name: free_port() for name in ("pg", "kafka", "dagster", "api")}
    run_dir = repo_root / ".run" / f"test-demo-{os.getpid()}"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BROKERS")},
        "DEVSTACK_RUN_DIR": str(run_dir),
        "DEVSTACK_PG_PORT": str(ports["pg"]),
        "DEVSTACK_KAFKA_PORT": str(ports["kafka"]),
        "DAGSTER_PORT": str(ports["dagster"]),
        "API_PORT": str(ports["api"]),
        "SIMULATOR_RATE": "40",
    }
    demo = subprocess.Popen(
        [sys.executable, "-m", "analytics_platform.devstack", "demo"],
        cwd=repo_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout], daemon=True).start()  # type: ignore[union-attr]

    def banner_seen() -> bool:
        while not lines.empty():
            output.append(lines.get())
        assert demo.poll() is None, "demo exited early:\n" + "".join(output)
        return any("Press Ctrl-C" in line for line in output)

    try:
        _poll(banner_seen, 240, "the demo banner")
        text = "".join(output)
        for url in (
            f"http://127.0.0.1:{ports['dagster']}",
            f"http://127.0.0.1:{ports['api']}/docs",
            f"http://127.0.0.1:{ports['api']}/ui",
        ):
            assert url in text
        # the dashboard is served by the demo's API, its chart library vendored at install time
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['api']}/ui", timeout=5) as response:
            assert response.status == 200 and b'<script src="/ui/static/app.js"' in response.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['api']}/ui/static/vendor/uPlot.iife.min.js") as response:
            assert response.status == 200 and b"uPlot" in response.read()

        health = _get(f"http://127.0.0.1:{ports['api']}/v1/health")
        assert health["status"] == "ok"

        # Dagster (its supervisor, code server, daemon, webserver) runs at DEVSTACK_DAGSTER_NICE (10) above
        # the demo's own niceness; everything else it started (the live path: drain service, API, broker,
        # database, simulator) at the demo's
        base = os.getpriority(os.PRIO_PROCESS, demo.pid)
        started = [line.split(": ", 1) for line in _processes_with_env(f"DEVSTACK_RUN_DIR={run_dir}")]
        dagster = re.compile(r"/bin/dagster |-m dagster[ _.]")
        # whatever Dagster itself starts is Dagster's work and inherits its niceness: a run's worker and
        # the multiprocess executor's step processes (`multiprocessing.spawn`, its resource tracker) show no
        # "dagster" in their command line, so a process is judged by its ancestry, not its name
        dagster_pids = {int(pid) for pid, cmd in started if dagster.search(cmd)}
        wrong = [
            f"{found} (not {wanted}) {cmd[:100]}"
            for pid, cmd in started
            if (found := _niceness(int(pid))) is not None
            and found != (wanted := min(base + 10, 19) if _descends_from(int(pid), dagster_pids) else base)
        ]
        assert sum(1 for _, cmd in started if dagster.search(cmd)) >= 4, started  # dev, code server, webserver, daemon
        assert sum(1 for _, cmd in started if "analytics_platform.cli drain serve" in cmd) == 1
        assert not wrong, wrong

        now = datetime.now(UTC)
        start = (now - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
        end = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        # the banner names the file holding the demo tenant's API key
        key_file = run_dir / "api-key"
        assert f"$(cat {key_file})" in text
        api_key = key_file.read_text().strip()
        readings_url = (
            f"http://127.0.0.1:{ports['api']}/v1/readings?factory_id=f1&machine_id=mc-01"
            f"&metric=temp&start={start}&end={end}&limit=50"
        )
        page = _poll(lambda: _get(readings_url, api_key)["items"], 90, "simulator readings in /v1/readings")
        assert all(item["tenant_id"] == "t1" and item["machine_id"] == "mc-01" for item in page)
        assert all(item["metric"] == "temp" for item in page)

        query = (
            '{ assetNodeOrError(assetKey: {path: ["raw_sensor_readings"]}) '
            "{ ... on AssetNode { partitionStats { numMaterialized } } } }"
        )
        materialized = _poll(
            lambda: _graphql(ports["dagster"], query)["assetNodeOrError"]["partitionStats"]["numMaterialized"],
            90,
            "a raw_sensor_readings partition reported in Dagster",
        )
        assert materialized >= 1

        # downstream automation runs without a human: the aggregates follow the raw partitions
        aggregated = _poll(
            lambda: _graphql(ports["dagster"], query.replace("raw_sensor_readings", "sensor_window_aggregates"))[
                "assetNodeOrError"
            ]["partitionStats"]["numMaterialized"],
            180,
            "a sensor_window_aggregates partition materialised (the drain service finalises the current hour)",
        )
        assert aggregated >= 1
        # ... and the API serves them
        agg_url = readings_url.replace("/v1/readings?", "/v1/agg?window_s=60&")
        buckets = _poll(lambda: _get(agg_url, api_key)["items"], 60, "60 s buckets in /v1/agg")
        assert all(b["window_s"] == 60 and b["machine_id"] == "mc-01" and b["count"] >= 1 for b in buckets)
        # the drain service's own run of the current hour (a provisional bucket is served before it, and the
        # automation may have materialised an earlier hour): its line, before Ctrl-C cuts the demo short
        finalised = re.compile(r"window aggregates of \S+: materialised through")
        drain_log = run_dir / "logs" / "drain.log"
        _poll(
            lambda: drain_log.exists() and finalised.search(drain_log.read_text()),
            150,
            "the drain service finalising a bucket of the current hour",
        )
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
        try:
            code = demo.wait(timeout=120)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
        while not lines.empty():
            output.append(lines.get())
        still_open = [name for name, port in ports.items() if port_open("127.0.0.1", port)]
        leftovers = _processes_with_env(f"DEVSTACK_RUN_DIR={run_dir}")
        drain_log = run_dir / "logs" / "drain.log"
        drained = drain_log.read_text() if drain_log.exists() else ""
        shutil.rmtree(run_dir, ignore_errors=True)
    assert code == 0, "".join(output)
    assert "[devstack] stopped" in "".join(output)
    assert still_open == [], f"ports still open after Ctrl-C: {still_open}"
    assert leftovers == [], f"processes left behind: {leftovers}"
    # the readings above came through the drain service (the demo's DRAIN_MODE), which stopped
    # on Ctrl-C after committing what it held
    assert "drain service: sensor[0], device[0], lab[0], sweep[0]" in drained, drained[-2000:]
    assert "drain service stopped; every batch it held is committed" in drained, drained[-2000:]
    # and it made closed buckets final itself: runs of the current hour's window aggregates
    assert "drain service: finalises the window aggregates of the current hour" in drained, drained[-2000:]
    assert re.search(r"window aggregates of \S+: materialised through", drained), drained[-2000:]
