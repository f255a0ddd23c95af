"""Field-level 422s in FastAPI's own error shape, so clients parse one format."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError


def invalid(field: str, message: str, *, location: str = "query", value: object = None) -> RequestValidationError:
    """A 422 for one parameter: {"detail": [{"loc": [location, field], "msg": message, ...}]}."""
    error = {"loc": (location, field), "msg": message, "type": "value_error"}
    if value is not None:
        error["input"] = value
    return RequestValidationError([error])
