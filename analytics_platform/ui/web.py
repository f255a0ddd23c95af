"""Serves the dashboard under /ui from the API process: one HTML page, its script and styles, and
the vendored chart library. The page reads data only through the public /v1 API with the user's
API key, like any other client; this module adds no data route of its own.

The Content-Security-Policy allows nothing but this origin: the dashboard works offline, and a
page that tried to load a CDN script would fail loudly in the browser test instead of quietly
depending on the internet.
"""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from analytics_platform.ui.vendor import missing_assets

STATIC_DIR = Path(__file__).resolve().parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@lru_cache(maxsize=1)
def _page_template() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


def mount_dashboard(app: FastAPI, dagster_ui_url: str, refresh_s: float, live_s: float = 5) -> None:
    """/ui (the page), /ui/static/* (script, styles, chart library); / redirects to /ui."""
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="ui-static")

    @app.get("/ui", include_in_schema=False)
    def dashboard(_request: Request) -> Response:
        missing = missing_assets()
        if missing:
            return Response(
                "The dashboard's chart library is missing (" + ", ".join(missing) + "): run `make install`, "
                "or `python -m analytics_platform.ui.vendor`, where the npm registry is reachable.\n",
                status_code=503,
                media_type="text/plain",
            )
        page = (
            _page_template()
            .replace("{{DAGSTER_UI_URL}}", html.escape(dagster_ui_url.rstrip("/"), quote=True))
            .replace("{{REFRESH_S}}", html.escape(f"{refresh_s:g}", quote=True))
            .replace("{{LIVE_S}}", html.escape(f"{live_s:g}", quote=True))
        )
        return HTMLResponse(page, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @app.get("/ui/", include_in_schema=False)
    def dashboard_slash() -> RedirectResponse:
        return RedirectResponse("/ui")
