"""Request field types shared by the routers."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator


def _storable(value: Any) -> Any:
    """`value` itself, once no string inside it holds NUL."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL (\\u0000): PostgreSQL cannot store it in JSON")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    elif isinstance(value, list):
        for item in value:
            _storable(item)
    return value


# Metadata and config end up in PostgreSQL jsonb columns, which refuse the NUL character.
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable)]
# Text that ends up in a PostgreSQL text parameter, which refuses NUL too.
StorableText = Annotated[str, AfterValidator(_storable)]
