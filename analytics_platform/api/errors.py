"""Field-level 422s in FastAPI's own error shape, so clients parse one format."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError


def invalid(
    field: str | tuple[str, ...], message: str, *, location: str = "query", value: object = None
) -> RequestValidationError:
    """A 422 for one parameter: {"detail": [{"loc": [location, *field], "msg": message, ...}]}; a tuple
    names a nested field, e.g. ("drivers", "flux") in a JSON body."""
    path = field if isinstance(field, tuple) else (field,)
    error = {"loc": (location, *path), "msg": message, "type": "value_error"}
    if value is not None:
        error["input"] = value
    return RequestValidationError([error])
