"""A deployment configured with the source documents' names only: `python -m analytics_platform.api` given DB_HOST,
DB_PORT, DB_NAME, DB_USER, DB_PASSWORD, DB_SCHEMA, API_HOST and API_PORT (no DATABASE_URL) serves on that address,
reaches that database, and says once at start-up which names it read as the platform's."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from analytics_platform.devstack.processes import free_port
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.edge import wait_for
from analytics_platform_tests.support.stack import DatabaseHandle

NOTICE = (
    "configuration: source-document names read as the platform's: DB_SCHEMA -> schema analytics (fixed), "
    "DB_HOST -> DATABASE_URL, DB_PORT -> DATABASE_URL, DB_NAME -> DATABASE_URL, DB_USER -> DATABASE_URL, "
    "DB_PASSWORD -> DATABASE_URL (docs/configuration.md)"
)


def health(port: int) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None


def test_the_api_runs_on_the_source_documents_names(
    settings: PlatformSettings, database: DatabaseHandle, tmp_path: Path
) -> None:
    parts = conninfo_to_dict(database.api_url)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "HOME": str(tmp_path),
        "DB_HOST": parts["host"],
        "DB_PORT": str(parts["port"]),
        "DB_NAME": parts["dbname"],
        "DB_USER": parts["user"],
        "DB_PASSWORD": parts["password"],
        "DB_SCHEMA": "analytics",
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "KAFKA_BROKERS": settings.kafka_brokers,
    }
    log = tmp_path / "api.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "analytics_platform.api"], env=env, stdout=out, stderr=out)
    try:
        answer = wait_for(lambda: health(port), 60, "the API to answer on API_HOST:API_PORT")
        assert answer[0] == 200, answer
        assert '"database":{"ok":true,"detail":"reachable"}' in answer[1]
    finally:
        process.terminate()
        process.wait(30)
    lines = log.read_text().splitlines()
    assert lines.count(NOTICE) == 1, lines
