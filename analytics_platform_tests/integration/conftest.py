"""Fixtures of the integration tests: the alert tests' receivers, and those of the /v1 API tests,
shared by the integration/test_api_*.py modules: the app with one key per kind of caller (`api`, over
the test's own database; `empty_api`, over one empty database a module shares) and the known data sets
of support/api_data.py, each inserted into the test's database.

`empty_api` is module-scoped: every module asking for it builds one more database and app, so the
tests that only check how a request is refused are kept together (test_api_validation.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.alerts import HttpReceiver, MailReceiver
from analytics_platform_tests.support.api import Api, running
from analytics_platform_tests.support.api_data import (
    insert_agg_data,
    insert_anomalies,
    insert_baselines,
    insert_deviation_data,
    insert_event_data,
    insert_kpi_data,
    insert_lab_agg_data,
    insert_reading_data,
    insert_spec_data,
)
from analytics_platform_tests.support.stack import DatabaseHandle, new_database


@pytest.fixture
def receivers() -> Iterator[tuple[HttpReceiver, MailReceiver]]:
    """A local webhook server and mail server for the alert tests, started for the test and stopped after."""
    http, mail = HttpReceiver(), MailReceiver()
    http.start()
    mail.start()
    yield http, mail
    http.stop()
    mail.stop()


@pytest.fixture
def api(settings: PlatformSettings, database: DatabaseHandle) -> Iterator[Api]:
    with running(settings, database) as result:
        yield result


@pytest.fixture(scope="module")
def empty_api(pg_admin_url: str, login_roles: dict[str, str], template_database: str) -> Iterator[Api]:
    """The app over one empty, migrated database shared by a module's tests that only check how a
    request is refused or that an empty answer is an answer (they write nothing)."""
    with new_database(pg_admin_url, login_roles, template_database) as handle:
        settings = PlatformSettings(
            database_url=handle.pipeline_url, api_database_url=handle.api_url, api_write_database_url=handle.writer_url
        )
        with running(settings, handle) as result:
            yield result


@pytest.fixture
def agg_data(database: DatabaseHandle) -> None:
    insert_agg_data(database)


@pytest.fixture
def lab_agg_data(database: DatabaseHandle) -> None:
    insert_lab_agg_data(database)


@pytest.fixture
def event_data(database: DatabaseHandle) -> None:
    insert_event_data(database)


@pytest.fixture
def kpi_data(database: DatabaseHandle) -> None:
    insert_kpi_data(database)


@pytest.fixture
def deviation_data(database: DatabaseHandle) -> None:
    insert_deviation_data(database)


@pytest.fixture
def anomalies(database: DatabaseHandle) -> dict[str, dict]:
    """name -> the JSON the API serves for it (ids from the database, in insertion order)."""
    return insert_anomalies(database)


@pytest.fixture
def baselines(database: DatabaseHandle) -> dict[str, dict]:
    return insert_baselines(database)


@pytest.fixture
def spec_data(database: DatabaseHandle) -> None:
    insert_spec_data(database)


@pytest.fixture
def reading_data(database: DatabaseHandle) -> None:
    insert_reading_data(database)


@pytest.fixture
def cli_env(database: DatabaseHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI in-process (`support.api.run_cli`) talks to the test's database."""
    monkeypatch.setenv("DATABASE_URL", database.admin_url)
    monkeypatch.delenv("MIGRATIONS_DATABASE_URL", raising=False)
