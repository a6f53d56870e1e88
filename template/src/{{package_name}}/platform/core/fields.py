"""Field types of what PostgreSQL can store (no NUL in jsonb or text; 64-bit integers for orjson), shared by
the request models of the routes and of run admission."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
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
# Text that reaches a PostgreSQL text column or parameter (checkpoint IDs, thread IDs): no NUL either.
StorableText = Annotated[str, AfterValidator(_storable)]


def _orjson_serialisable(value: Any) -> Any:
    """`value` itself, once orjson (what LangGraph's store serialises with) takes it."""
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise ValueError(f"not storable as JSON here ({exc}): integers must fit in 64 bits") from None
    return value


# Values and filters of the memory store: LangGraph's store serialises them with orjson.
StoreJsonObject = Annotated[dict[str, Any], AfterValidator(_storable), AfterValidator(_orjson_serialisable)]
