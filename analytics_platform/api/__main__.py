"""`python -m analytics_platform.api`: the API as deployed (the devstack, compose.yaml and the Helm chart
start it so), on API_HOST:API_PORT unless --host/--port say otherwise; api/serve.py says how workers listen."""

from analytics_platform.api.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
