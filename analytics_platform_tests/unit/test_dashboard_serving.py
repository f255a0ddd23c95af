"""/ui is served by the API process: the page with its settings filled in and a policy that
allows this origin only, or, without the vendored chart library, a 503 saying how to get it.
No database is needed: the page route never queries (the app's lifespan is not entered)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from analytics_platform.api.app import create_app
from analytics_platform.settings import PlatformSettings
from analytics_platform.ui import web


@pytest.fixture
def client() -> TestClient:
    settings = PlatformSettings(dagster_ui_url="http://dagster.example:3000/", ui_refresh_s=7)
    return TestClient(create_app(settings))


def test_the_page_carries_its_settings_and_a_same_origin_policy(client: TestClient, monkeypatch) -> None:
    monkeypatch.setattr(web, "missing_assets", lambda: [])
    response = client.get("/ui")
    assert response.status_code == 200
    assert '<meta name="dagster-ui" content="http://dagster.example:3000">' in response.text
    assert '<meta name="refresh-s" content="7">' in response.text
    assert response.headers["content-security-policy"] == web.CSP
    assert "default-src 'self'" in web.CSP and "http" not in web.CSP
    assert response.headers["x-content-type-options"] == "nosniff"


def test_every_script_and_stylesheet_is_served_from_ui_static(client: TestClient, monkeypatch) -> None:
    monkeypatch.setattr(web, "missing_assets", lambda: [])
    page = client.get("/ui").text
    for path in ("/ui/static/app.js", "/ui/static/labseries.js", "/ui/static/style.css"):
        assert f'"{path}"' in page
        assert client.get(path).status_code == 200
    assert "//" not in page.replace("http://dagster.example:3000", "").replace("<!--", "")


def test_without_the_chart_library_the_page_says_how_to_get_it(client: TestClient, monkeypatch) -> None:
    monkeypatch.setattr(web, "missing_assets", lambda: ["uPlot.iife.min.js", "uPlot.min.css"])
    response = client.get("/ui")
    assert response.status_code == 503
    assert response.text == (
        "The dashboard's chart library is missing (uPlot.iife.min.js, uPlot.min.css): run `make install`, "
        "or `python -m analytics_platform.ui.vendor`, where the npm registry is reachable.\n"
    )


def test_ui_with_a_slash_redirects_to_the_page(client: TestClient) -> None:
    response = client.get("/ui/", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (307, "/ui")
