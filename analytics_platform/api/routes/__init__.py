"""One module per resource under /v1."""
