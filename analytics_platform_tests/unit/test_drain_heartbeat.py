"""The drain service's liveness: how old its heartbeat may get (3 x DRAIN_PASS_S + 30 s, a retry
wait counting as a pass), and what `analytics-platform drain check` answers for a fresh, a stale
and a missing heartbeat."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from analytics_platform import cli
from analytics_platform.ingest.service import DrainService, heartbeat_age_s
from analytics_platform.settings import PlatformSettings, get_settings


@pytest.mark.parametrize(("pass_s", "limit"), [(30.0, 120.0), (2.0, 45.0)])
def test_a_thread_is_stuck_after_three_passes_and_half_a_minute(pass_s: float, limit: float) -> None:
    # a pass shorter than the 5 s retry wait counts as the retry wait: 3 x 5 + 30
    assert DrainService(PlatformSettings(drain_pass_s=pass_s)).stale_after_s == limit


def test_the_service_is_healthy_until_one_thread_misses_its_passes() -> None:
    service = DrainService(PlatformSettings())
    assert service.healthy()
    state = next(iter(service.states.values()))
    state.beat = time.monotonic() - 121
    assert not service.healthy()


@pytest.fixture
def heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "drain-heartbeat"
    monkeypatch.setenv("DRAIN_HEARTBEAT_FILE", str(path))
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def test_check_passes_on_a_fresh_heartbeat_and_fails_on_a_stale_or_missing_one(
    heartbeat: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert heartbeat_age_s(heartbeat) is None
    assert cli.main(["drain", "check"]) == 1
    assert capsys.readouterr().err == f"drain service: no heartbeat at {heartbeat} yet\n"
    heartbeat.touch()
    assert cli.main(["drain", "check"]) == 0
    old = time.time() - 200
    os.utime(heartbeat, (old, old))
    assert cli.main(["drain", "check"]) == 1
    assert "s old (limit 120 s): a drain thread is stuck" in capsys.readouterr().err


def test_check_without_a_heartbeat_file_says_which_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DRAIN_HEARTBEAT_FILE", raising=False)
    get_settings.cache_clear()
    try:
        assert cli.main(["drain", "check"]) == 2
    finally:
        get_settings.cache_clear()
    assert capsys.readouterr().err.startswith("error: DRAIN_HEARTBEAT_FILE is not set")
