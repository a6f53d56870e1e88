"""Turns LangGraph state (messages, snapshots) into the JSON shapes the Agent Server returns."""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi.responses import JSONResponse
from langgraph.types import StateSnapshot

from ..platform.core.encoding import interrupt_json, jsonable


def dump_json(content: Any) -> bytes:
    """orjson, several times faster than json; json for what it refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


class FastJSONResponse(JSONResponse):
    """The app's default response class: JSONResponse rendered with `dump_json`."""

    def render(self, content: Any) -> bytes:
        return dump_json(content)


def checkpoint_ref(config: Any) -> dict[str, Any] | None:
    if not config:
        return None
    configurable = config.get("configurable", {})
    ref = {
        "thread_id": configurable.get("thread_id"),
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "checkpoint_id": configurable.get("checkpoint_id"),
    }
    # Only a subgraph's checkpoint has a map, and only then does the Agent Server send one.
    if "checkpoint_map" in configurable:
        ref["checkpoint_map"] = configurable["checkpoint_map"]
    return ref


def thread_state(snapshot: StateSnapshot) -> dict[str, Any]:
    interrupts = [interrupt_json(i) for task in snapshot.tasks for i in task.interrupts]
    return {
        "values": jsonable(snapshot.values),
        "next": list(snapshot.next),
        "checkpoint": checkpoint_ref(snapshot.config),
        "metadata": jsonable(snapshot.metadata or {}),
        "created_at": snapshot.created_at,
        "parent_checkpoint": checkpoint_ref(snapshot.parent_config),
        "tasks": [
            {
                "id": task.id,
                "name": task.name,
                "error": task.error,
                "interrupts": [interrupt_json(i) for i in task.interrupts],
                # With subgraphs=true a subgraph's task carries its whole state, else a pointer to its checkpoint.
                "checkpoint": None
                if task.state is None or isinstance(task.state, StateSnapshot)
                else jsonable(task.state.get("configurable")),
                "state": thread_state(task.state) if isinstance(task.state, StateSnapshot) else None,
                "result": jsonable(task.result),
            }
            for task in snapshot.tasks
        ],
        "interrupts": interrupts,
        # Deprecated in the Agent Server's schema, and still sent there.
        "checkpoint_id": (snapshot.config or {}).get("configurable", {}).get("checkpoint_id"),
        "parent_checkpoint_id": (snapshot.parent_config or {}).get("configurable", {}).get("checkpoint_id"),
    }


STATE_FIELDS = frozenset(
    (
        "values",
        "next",
        "tasks",
        "checkpoint",
        "metadata",
        "created_at",
        "parent_checkpoint",
        "interrupts",
        "checkpoint_id",
        "parent_checkpoint_id",
    )
)


def select_fields(body: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """Only the fields `select` names (all when it is empty); `values.<key>` keeps one key of the values."""
    if not select:
        return body
    keys = {name.partition(".")[2] for name in select if name.startswith("values.")}
    picked = {name: body[name] for name in select if name in body}
    if keys and "values" not in picked and isinstance(body.get("values"), dict):
        picked["values"] = {k: v for k, v in body["values"].items() if k in keys}
    return picked
