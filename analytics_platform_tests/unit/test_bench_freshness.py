"""What bench/freshness.py's live measurement relies on: the load it produces from a template is the
reading the old per-reading dict made (the platform sees the same traffic), and its CPU account
charges a process's CPU to that process's role (the report says where the cores went)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from analytics_platform.devstack.processes import api_command
from analytics_platform.settings import REPO_ROOT


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("freshness", REPO_ROOT / "bench" / "freshness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_load_template_makes_the_reading_the_dict_made() -> None:
    freshness = bench()
    keys, middles = freshness._load_templates()
    moment = "2026-12-05T10:00:00.125Z"
    for i in (0, 1, 6, 7, 19, 99, 100, 699, 700, 12_345, 4_999_999):
        value = b'{"time": "' + moment.encode() + middles[i % freshness.LOAD_PERIOD] + str(i).encode() + b'"}'
        machine = f"mc-load-{i % 100:03d}"
        assert json.loads(value) == {
            "time": moment,
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": machine,
            "sensor_id": f"s-{i % 7}",
            "metric": "temp",
            "value": 64.0 + (i % 20) / 10,  # inside t1's spec limits 63..67
            "event_id": f"load-{i}",
        }
        assert keys[i % freshness.LOAD_MACHINES] == f"t1-f1-{machine}".encode()


def test_the_cpu_account_charges_a_busy_child_to_its_role(tmp_path: Path) -> None:
    freshness = bench()
    # burns CPU until told to stop on stdin; says once it has used 0.3 s of CPU
    burner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time, select\n"
            "said = False\n"
            "while not select.select([sys.stdin], [], [], 0)[0]:\n"
            "    if not said and time.process_time() >= 0.3:\n"
            "        print('busy', flush=True); said = True\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        account = freshness.CpuAccount({burner.pid: "bench: burner"}, tmp_path)
        account.open()
        assert burner.stdout.readline() == "busy\n"
        account.close()
    finally:
        burner.communicate("stop\n", timeout=30)
    figures = account.figures()
    assert figures["cpu_s_by_process"]["bench: burner"] >= 0.2  # 0.3 s less what it used before open()
    assert figures["cores_by_process"]["bench: burner"] > 0
    assert list(figures["cores_by_process"]) == list(figures["cpu_s_by_process"])
    assert figures["cores"] >= 1


def test_the_demo_processes_are_told_apart_by_their_command_lines() -> None:
    """The API runs from its own launcher since issue 23 (no `uvicorn` in its command line): its CPU
    was charged to the devstack supervisor, its parent, and the report named no API at all."""
    freshness = bench()
    api = " ".join(api_command("127.0.0.1", 7305))
    assert freshness.role_of_command(api) == "API"
    assert freshness.role_of_command(f"{sys.executable} -m analytics_platform.cli drain serve") == "drain service"
    assert freshness.role_of_command(f"{sys.executable} -m analytics_platform.devstack demo") == "devstack (supervisor)"
    assert freshness.role_of_command(f"{sys.executable} -m dagster._daemon run --workspace w.yaml") == "Dagster daemon"
    assert freshness.role_of_command(f"{sys.executable} -c from multiprocessing.spawn import spawn_main") is None
