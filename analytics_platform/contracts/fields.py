"""Field types shared by the payload schemas.

Identifiers are non-empty, bounded strings: an empty `machine_id` would silently merge machines and
an unbounded one is an attack on the index, so both are contract violations.
"""

from typing import Annotated

import msgspec

Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Label = Annotated[str, msgspec.Meta(max_length=200)]


def raw_json_text(raw: msgspec.Raw | msgspec.UnsetType) -> str | None:
    """The verbatim JSON text of an optional sub-document (`None` when absent or null)."""
    if raw is msgspec.UNSET:
        return None
    text = bytes(raw).decode("utf-8")
    return None if text == "null" else text
