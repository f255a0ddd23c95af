"""`python -m analytics_platform.api`: the API on API_HOST:API_PORT (the source documents' names), for a
deployment configured from those documents; the Helm chart and compose.yaml run uvicorn with explicit flags."""

import uvicorn

from analytics_platform.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    uvicorn.run("analytics_platform.api.app:create_app", factory=True, host=settings.api_host, port=settings.api_port)
