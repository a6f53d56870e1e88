"""LangGraph values (messages, pydantic models, named tuples) as plain JSON values."""

from __future__ import annotations

import json
from typing import Any

import orjson
from psycopg.types.json import Jsonb
from pydantic import BaseModel


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "_asdict"):
        return jsonable(value._asdict())
    return str(value)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson refuses and json writes (integers past 64 bits)
        return json.dumps(value).encode()


def fast_jsonb(value: Any) -> Jsonb:
    """A JSONB parameter dumped by orjson: a run's output is the whole state, written on every turn."""
    return Jsonb(value, dumps=_dumps)
