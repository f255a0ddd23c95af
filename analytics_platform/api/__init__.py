"""The read-only REST API (FastAPI), versioned under /v1."""
