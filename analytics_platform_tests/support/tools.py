"""Debian tools some tests run: promtool (package `prometheus`) and the compose client (package `docker-compose`).

A test that needs one and does not find it fails with one line saying what to install, never skips: `make test` and
.ci/run install both when they can (`make promtool`, `make compose`), as they do Mosquitto and Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from analytics_platform.settings import REPO_ROOT

RULES = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TESTS = REPO_ROOT / "deploy" / "prometheus" / "rules.test.yml"
COMPOSE_FILE = REPO_ROOT / "compose.yaml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        raise RuntimeError("promtool is not installed: apt-get install prometheus (make test does it when root)")
    return found


def compose_command() -> list[str]:
    """`docker compose` (the v2 plugin) when the docker CLI has it, else Debian's `docker-compose` (v1)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    found = shutil.which("docker-compose")
    if found is None:
        raise RuntimeError(
            "no compose client: apt-get install docker-compose (make test does it when root), or the docker "
            "compose plugin"
        )
    return [found]


def run(
    argv: list[str], stdin: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`argv` to completion with its output as text (a tool's answer is the test's subject: never raises)."""
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
