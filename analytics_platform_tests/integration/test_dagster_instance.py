"""The repository's dagster.yaml works against the platform's PostgreSQL (dagster-postgres)."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest
from dagster._core.instance import DagsterInstance, InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from analytics_platform.devstack.stack import psycopg2_url
from analytics_platform_tests.support.stack import DatabaseHandle


@pytest.fixture
def dagster_home(repo_root, tmp_path, database: DatabaseHandle, monkeypatch: pytest.MonkeyPatch):
    shutil.copyfile(repo_root / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url(database.admin_url))
    return tmp_path


def test_instance_uses_postgres_storage_and_the_queue(dagster_home, database: DatabaseHandle) -> None:
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home))) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 2
        assert queue.tag_concurrency_limits == [{"key": "dagster/backfill", "limit": 1}]

        key = dg.AssetKey("probe")
        instance.report_runless_asset_event(dg.AssetMaterialization(key, metadata={"rows": 3}))
        event = instance.get_latest_materialization_event(key)
        assert event is not None and event.asset_materialization.metadata["rows"].value == 3
    tables = {r[0] for r in database.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"runs", "event_logs", "asset_keys"} <= tables
