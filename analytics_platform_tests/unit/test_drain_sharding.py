"""Drain shards and the production-only definitions: which shard owns which partition, how
DRAIN_SHARDS / DRAIN_SHARDS_HERE are read, which sensors and backfill jobs a location defines."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from analytics_platform.contracts.registry import bind_domains, contract_config
from analytics_platform.defs import build_definitions
from analytics_platform.defs.automation import LANE_TAG
from analytics_platform.ingest.drain import Drain, owns
from analytics_platform.settings import PlatformSettings


@pytest.mark.parametrize("shards", range(1, 9))
def test_every_partition_has_exactly_one_owner(shards: int) -> None:
    for partition in range(48):
        assert [s for s in range(shards) if owns(partition, s, shards)] == [partition % shards]


def test_resharding_two_to_three_moves_only_ownership() -> None:
    def owners(n: int) -> list[int]:
        return [next(s for s in range(n) if owns(p, s, n)) for p in range(6)]

    assert owners(2) == [0, 1, 0, 1, 0, 1]
    assert owners(3) == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize(
    ("here", "expected"),
    [(None, [0, 1, 2]), ("all", [0, 1, 2]), ("ALL", [0, 1, 2]), ("none", []), ("2,0", [0, 2]), ("[1]", [1])],
)
def test_shards_here(here: str | None, expected: list[int]) -> None:
    settings = PlatformSettings(drain_shards=3, **({} if here is None else {"drain_shards_here": here}))
    assert settings.drain_shards_run_here() == expected


def test_shards_here_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRAIN_SHARDS", "2")
    monkeypatch.setenv("DRAIN_SHARDS_HERE", "1,2")
    with pytest.raises(ValidationError, match=r"DRAIN_SHARDS_HERE names shard\(s\) \[2\], but DRAIN_SHARDS=2"):
        PlatformSettings()
    monkeypatch.setenv("DRAIN_SHARDS_HERE", "first")
    with pytest.raises(ValidationError, match="DRAIN_SHARDS_HERE must be all, none or shard numbers"):
        PlatformSettings()
    monkeypatch.setenv("DRAIN_SHARDS", "0")
    monkeypatch.delenv("DRAIN_SHARDS_HERE")
    with pytest.raises(ValidationError, match="drain_shards"):
        PlatformSettings()


def test_a_drain_refuses_a_shard_that_does_not_exist() -> None:
    settings = PlatformSettings()
    binding = bind_domains(settings)[0]
    with pytest.raises(ValueError, match=r"drain shard 3 does not exist among 3 shard\(s\) \(0..2\)"):
        Drain(
            binding, contract_config(settings), database_url="", kafka_config={}, consumer_name="x", shard=3, shards=3
        )


def sensor_names(settings: PlatformSettings) -> list[str]:
    defs = build_definitions(settings)
    return sorted(s.name for s in defs.get_repository_def().sensor_defs if s.name.startswith("drain_"))


def test_drain_sensor_names_per_shard() -> None:
    base = {"domains_enabled": ["sensor", "lab"]}
    assert sensor_names(PlatformSettings(**base)) == ["drain_lab", "drain_sensor"]
    assert sensor_names(PlatformSettings(**base, drain_shards=2)) == [
        "drain_lab_shard_0",
        "drain_lab_shard_1",
        "drain_sensor_shard_0",
        "drain_sensor_shard_1",
    ]
    assert sensor_names(PlatformSettings(**base, drain_shards=3, drain_shards_here="none")) == []


def test_k8s_backfill_jobs_only_when_asked() -> None:
    def jobs(settings: PlatformSettings) -> dict[str, tuple[str, list[str]]]:
        return {
            job.name: (job.executor_def.name, sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys))
            for job in build_definitions(settings).resolve_all_job_defs()
            if job.name.startswith("k8s_")
        }

    assert jobs(PlatformSettings()) == {}
    assert jobs(PlatformSettings(backfill_executor="k8s")) == {
        "k8s_backfill_analytics_daily": ("k8s", ["daily_event_rollups"]),
        "k8s_backfill_analytics_hourly": (
            "k8s",
            [
                "device_health_events",
                "lab_result_quality",
                "lab_window_aggregates",
                "sensor_window_aggregates",
                "sweep_batch_quality",
            ],
        ),
        "k8s_backfill_energy_daily": ("k8s", ["daily_machine_kpis", "energy_forecasts"]),
        "k8s_backfill_energy_hourly": ("k8s", ["hourly_machine_kpis", "reading_anomalies", "series_trends"]),
    }


def test_automation_runs_carry_their_lane() -> None:
    defs = build_definitions(PlatformSettings())
    tags = {name: defs.resolve_sensor_def(name).run_tags for name in ("aggregates_automation", "analytics_automation")}
    assert tags == {
        "aggregates_automation": {"dagster/priority": "10", LANE_TAG: "aggregates"},
        "analytics_automation": {LANE_TAG: "rollups"},
    }
