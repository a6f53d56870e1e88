"""LangGraph values (messages, pydantic models, named tuples, dataclasses such as Interrupt) as plain JSON values."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
from langgraph.types import Interrupt
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
    if isinstance(value, Interrupt):
        return interrupt_json(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    return str(value)


def interrupt_json(interrupt: Interrupt) -> dict[str, Any]:
    """An interrupt as the Agent Server shows it (langgraph_api/state.py `patch_interrupt`)."""
    patched = {"id": interrupt.id, "value": jsonable(interrupt.value)}
    if (schema := getattr(interrupt, "response_schema", None)) is not None:
        patched["response_schema"] = jsonable(schema)
    return patched


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson refuses and json writes (integers past 64 bits)
        return json.dumps(value).encode()


def fast_jsonb(value: Any) -> Jsonb:
    """A JSONB parameter dumped by orjson: a run's output is the whole state, written on every turn."""
    return Jsonb(value, dumps=_dumps)
