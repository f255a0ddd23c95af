"""The source documents' configuration names (DB_HOST ..., POLL_INTERVAL_SECONDS, ALERT_BACKEND, SLACK_WEBHOOK_URL,
LINE_CHANNEL_TOKEN, API_HOST/API_PORT) read as the platform's settings, with one notice line, and a pair given both
ways with different values refused with both names."""

from __future__ import annotations

import logging

import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from analytics_platform.alerts.config import Channel
from analytics_platform.alerts.engine import channel_problem
from analytics_platform.settings import PlatformSettings, enabled_channel_kinds, source_channel_urls

SOURCE_NAMES = (
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USER",
    "DB_PASSWORD",
    "DB_SCHEMA",
    "API_HOST",
    "API_PORT",
    "SLACK_WEBHOOK_URL",
    "LINE_CHANNEL_TOKEN",
    "LINE_NOTIFY_TOKEN",
    "ALERT_LINE_TO",
    "ALERT_SLACK_URL",
    "ALERT_LINE_URL",
    "POLL_INTERVAL_SECONDS",
    "ALERT_BACKEND",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: start every test from none of their variables nor the source names."""
    for name in [*PlatformSettings.model_fields, *SOURCE_NAMES]:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


def notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "analytics_platform.settings"]


def test_db_parts_build_the_database_url_with_one_notice(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in {
        "DB_HOST": "db.plant.local",
        "DB_PORT": "6432",
        "DB_NAME": "plant",
        "DB_USER": "analytics",
        "DB_PASSWORD": "p@ss:w/rd",
        "DB_SCHEMA": "analytics",
    }.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="analytics_platform.settings"):
        settings = PlatformSettings()
    url = settings.database_url.get_secret_value()
    assert url == "postgresql://analytics:p%40ss%3Aw%2Frd@db.plant.local:6432/plant"
    assert conninfo_to_dict(url) == {
        "host": "db.plant.local",
        "port": "6432",
        "dbname": "plant",
        "user": "analytics",
        "password": "p@ss:w/rd",
    }
    # the API reads the same database unless API_DATABASE_URL says otherwise
    assert settings.api_url() == url
    assert notices(caplog) == [
        "configuration: source-document names read as the platform's: DB_SCHEMA -> schema analytics (fixed), "
        "DB_HOST -> DATABASE_URL, DB_PORT -> DATABASE_URL, DB_NAME -> DATABASE_URL, DB_USER -> DATABASE_URL, "
        "DB_PASSWORD -> DATABASE_URL (docs/configuration.md)"
    ]


def test_db_parts_not_given_are_left_to_libpq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db")
    monkeypatch.setenv("DB_USER", "ops")
    assert PlatformSettings().database_url.get_secret_value() == "postgresql://ops@db/"


def test_no_source_name_no_notice(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="analytics_platform.settings"):
        settings = PlatformSettings()
    assert notices(caplog) == []
    assert settings.database_url.get_secret_value() == "postgresql://analytics@127.0.0.1:55432/analytics"
    assert (settings.alert_interval_s, settings.alert_channel_kinds) == (2, [])


def test_db_parts_agreeing_with_database_url_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://ops:secret@db:5432/plant")
    monkeypatch.setenv("DB_HOST", "db")
    monkeypatch.setenv("DB_PASSWORD", "secret")
    assert PlatformSettings().database_url.get_secret_value() == "postgresql://ops:secret@db:5432/plant"


def test_a_db_part_conflicting_with_database_url_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://ops@db:5432/plant")
    monkeypatch.setenv("DB_PORT", "6432")
    with pytest.raises(ValidationError, match=r"DB_PORT='6432' conflicts with DATABASE_URL \(port '5432'\)"):
        PlatformSettings()


def test_a_password_conflict_shows_neither_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://ops:first-secret@db/plant")
    monkeypatch.setenv("DB_PASSWORD", "second-secret")
    with pytest.raises(ValidationError) as raised:
        PlatformSettings()
    assert "DB_PASSWORD conflicts with DATABASE_URL's password" in str(raised.value)
    assert "first-secret" not in str(raised.value) and "second-secret" not in str(raised.value)


def test_db_schema_other_than_analytics_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every query names the schema `analytics` and sql/ creates it: another DB_SCHEMA could only be ignored, and
    silently ignoring it would point the operator at tables that are not there."""
    monkeypatch.setenv("DB_SCHEMA", "public")
    with pytest.raises(ValidationError, match="DB_SCHEMA='public': the platform's tables live in the fixed schema"):
        PlatformSettings()


def test_poll_interval_and_alert_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLL_INTERVAL_SECONDS", "60")
    monkeypatch.setenv("ALERT_BACKEND", "Slack")
    settings = PlatformSettings()
    assert (settings.alert_interval_s, settings.alert_channel_kinds) == (60, ["slack"])


def test_poll_interval_agreeing_is_accepted_conflicting_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLL_INTERVAL_SECONDS", "60")
    monkeypatch.setenv("ALERT_INTERVAL_S", "60")
    assert PlatformSettings().alert_interval_s == 60
    monkeypatch.setenv("ALERT_INTERVAL_S", "5")
    with pytest.raises(ValidationError, match="POLL_INTERVAL_SECONDS='60' conflicts with ALERT_INTERVAL_S='5'"):
        PlatformSettings()


def test_alert_backend_agreeing_however_written_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_BACKEND", "slack,email")
    monkeypatch.setenv("ALERT_CHANNEL_KINDS", "Slack, email")
    assert PlatformSettings().alert_channel_kinds == ["slack", "email"]
    assert PlatformSettings(alert_channel_kinds=["slack", "EMAIL"]).alert_channel_kinds == ["slack", "email"]


def test_alert_backend_conflicting_with_alert_channel_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_BACKEND", "slack")
    monkeypatch.setenv("ALERT_CHANNEL_KINDS", "email")
    with pytest.raises(ValidationError, match="ALERT_BACKEND='slack' conflicts with ALERT_CHANNEL_KINDS='email'"):
        PlatformSettings()


def test_explicit_keyword_conflicts_like_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLL_INTERVAL_SECONDS", "60")
    with pytest.raises(ValidationError, match="POLL_INTERVAL_SECONDS='60' conflicts with ALERT_INTERVAL_S='3'"):
        PlatformSettings(alert_interval_s=3)


def test_api_host_and_port() -> None:
    assert (PlatformSettings().api_host, PlatformSettings().api_port) == ("0.0.0.0", 8000)
    settings = PlatformSettings(_env_file=None, api_host="127.0.0.1", api_port=8080)
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8080)


def test_api_host_and_port_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_HOST", "127.0.0.1")
    monkeypatch.setenv("API_PORT", "8080")
    assert (PlatformSettings().api_host, PlatformSettings().api_port) == ("127.0.0.1", 8080)


def test_slack_webhook_url_is_the_slack_channels_url() -> None:
    slack = Channel("ops-slack", "slack", "ALERT_SLACK_URL")
    environ = {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/XX"}
    assert slack.url(environ) == "https://hooks.slack.com/services/T0/B0/XX"
    # the platform's own name wins when both agree ... and both set differently is refused
    assert slack.url({**environ, "ALERT_SLACK_URL": environ["SLACK_WEBHOOK_URL"]}) == environ["SLACK_WEBHOOK_URL"]
    with pytest.raises(ValueError, match="SLACK_WEBHOOK_URL conflicts with ALERT_SLACK_URL"):
        source_channel_urls({**environ, "ALERT_SLACK_URL": "https://hooks.slack.com/services/T0/B0/YY"})


def test_line_channel_token_is_a_messaging_api_push_url() -> None:
    line = Channel("ops-line", "line", "ALERT_LINE_URL")
    environ = {"LINE_CHANNEL_TOKEN": "tok/en+1", "ALERT_LINE_TO": "U4af4980629"}
    assert line.url(environ) == "line://tok%2Fen%2B1/U4af4980629"
    with pytest.raises(ValueError, match="LINE_CHANNEL_TOKEN is set but ALERT_LINE_TO is not"):
        line.url({"LINE_CHANNEL_TOKEN": "token"})


def test_line_notify_token_is_refused_with_the_replacement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINE_NOTIFY_TOKEN", "old")
    with pytest.raises(ValidationError, match=r"LINE Notify was shut down on 2025-03-31.*LINE_CHANNEL_TOKEN"):
        PlatformSettings()


def test_a_channel_conflict_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/A")
    monkeypatch.setenv("ALERT_SLACK_URL", "https://hooks.slack.com/services/B")
    with pytest.raises(ValidationError, match="SLACK_WEBHOOK_URL conflicts with ALERT_SLACK_URL"):
        PlatformSettings()


def test_channel_kinds_leave_the_other_channels_unconfigured() -> None:
    environ = {"ALERT_BACKEND": "slack", "ALERT_SLACK_URL": "slack://a/b/c", "ALERT_EMAIL_URL": "mailto://x@y"}
    assert enabled_channel_kinds(environ) == ["slack"]
    assert channel_problem(Channel("s", "slack", "ALERT_SLACK_URL"), "s", environ) is None
    assert (
        channel_problem(Channel("e", "email", "ALERT_EMAIL_URL"), "e", environ)
        == "ALERT_CHANNEL_KINDS=slack leaves out the email channel 'e'"
    )
    assert enabled_channel_kinds({}) == []
