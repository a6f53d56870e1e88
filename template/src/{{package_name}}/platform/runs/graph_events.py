"""The Agent Server's stream events, built from LangGraph's stream parts."""

from __future__ import annotations

import json
from typing import Any, cast

from langchain_core.messages import BaseMessage, BaseMessageChunk

from ..core.encoding import jsonable

# The Agent Server's stream modes, and the LangGraph mode that feeds each ('events' is fed by
# astream_events instead: no LangGraph mode).
GRAPH_MODE: dict[str, str | None] = {"messages-tuple": "messages", "messages": "messages", "events": None}

Event = tuple[str, str]


def event(name: str, data: Any) -> Event:
    return name, json.dumps(jsonable(data), separators=(",", ":"))


class MessageAccumulator:
    """Builds the Agent Server's 'messages' events (metadata/partial/complete) from message chunks."""

    def __init__(self) -> None:
        self._messages: dict[str, BaseMessage] = {}

    def events(self, chunk: BaseMessage, metadata: dict[str, Any], build: bool = True) -> list[Event]:
        """The chunk's events; with `build` false only the message so far is kept (nobody reads yet)."""
        key = chunk.id or "0"
        out = []
        if key not in self._messages:
            if build:
                out.append(event("messages/metadata", {key: {"metadata": metadata}}))
            self._messages[key] = chunk
        else:
            previous = self._messages[key]
            if isinstance(previous, BaseMessageChunk) and isinstance(chunk, BaseMessageChunk):
                self._messages[key] = previous + chunk
            else:
                self._messages[key] = chunk
        if build:
            out.append(event("messages/partial", [self._messages[key]]))
        return out

    def complete(self) -> list[Event]:
        return [event("messages/complete", [m]) for m in self._messages.values()]


class EventBuilder:
    """Turns (namespace, mode, chunk) parts into the events the client asked for, and keeps the final values."""

    def __init__(self, requested: list[str]) -> None:
        self.requested = requested
        # 'values' and 'updates' are always streamed: the run's output and its interrupts come from them.
        modes = {GRAPH_MODE.get(mode, mode) for mode in requested} - {None}
        self.graph_modes = sorted(cast(set[str], modes) | {"values", "updates"})
        # As langgraph_api/stream.py: the run's stream comes from astream_events v2, whose events other than
        # the graph's own stream parts are the 'events' stream.
        self.astream_events = "events" in requested
        self._messages = MessageAccumulator() if "messages" in requested else None
        self.values: Any = None
        self.interrupts: Any = None

    def part(self, namespace: tuple[str, ...], mode: str, chunk: Any, build: bool = True) -> list[Event]:
        """The part's events; with `build` false only the run's output is kept (nobody reads its events)."""
        suffix = "|" + "|".join(namespace) if namespace else ""
        if not namespace and mode == "values":
            self.values = chunk
        if not namespace and mode == "updates" and isinstance(chunk, dict) and "__interrupt__" in chunk:
            self.interrupts = chunk["__interrupt__"]
        if mode == "messages":
            message, metadata = chunk
            tuples = build and "messages-tuple" in self.requested
            out = [event("messages" + suffix, [message, metadata])] if tuples else []
            if self._messages is not None:
                out += self._messages.events(message, metadata, build)
            return out
        if not build or mode not in self.requested:
            return []
        if mode == "debug" and isinstance(chunk, dict) and chunk.get("type") == "checkpoint":
            chunk = {**chunk, "payload": _debug_checkpoint(chunk["payload"])}
        return [event(mode + suffix, chunk)]

    def graph_event(self, item: dict[str, Any], build: bool = True) -> list[Event]:
        """An astream_events event that is not a stream part of the graph itself."""
        if not build or "langsmith:hidden" in (item.get("tags") or ()):
            return []
        return [event("events", item)]

    def complete(self) -> list[Event]:
        return self._messages.complete() if self._messages is not None else []

    def output(self) -> Any:
        """What runs.wait returns: the final values, with the pending interrupts as ainvoke gives them."""
        values = jsonable(self.values)
        if self.interrupts and isinstance(values, dict):
            values["__interrupt__"] = jsonable(self.interrupts)
        return values


def _checkpoint(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A checkpoint's config as the Agent Server names a checkpoint (langgraph_api/state.py)."""
    configurable = (config or {}).get("configurable") or {}
    if not configurable.get("thread_id") or not configurable.get("checkpoint_id"):
        return None
    keys = ("checkpoint_id", "thread_id", "checkpoint_map")
    checkpoint = {key: configurable[key] for key in keys if key in configurable}
    if "checkpoint_ns" in configurable:
        checkpoint["checkpoint_ns"] = configurable["checkpoint_ns"] or ""
    return checkpoint


def _debug_checkpoint(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """A debug checkpoint as the Agent Server sends it: with `checkpoint` / `parent_checkpoint` beside
    the configs, and each task's state config as its `checkpoint`."""
    if not payload:
        return None
    tasks = []
    for task in payload.get("tasks", []):
        state = task.get("state")
        if isinstance(state, dict) and state.get("configurable"):
            task = {**{k: v for k, v in task.items() if k != "state"}, "checkpoint": state["configurable"]}
        tasks.append(task)
    return {
        **payload,
        "checkpoint": _checkpoint(payload.get("config")),
        "parent_checkpoint": _checkpoint(payload.get("parent_config")),
        "tasks": tasks,
    }
