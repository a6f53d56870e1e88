"""A thread's followed runs (follower.py) as the protocol's events, and one connection's filter of them.

Each event: {"type": "event", "event_id", "seq", "method", "params": {"namespace", "timestamp", "data"}}.
`seq` counts every event of the thread's replay from its beginning, whatever the filter, so a reconnect's
`since` means the same on any connection (the Agent Server numbers them so); `event_id` is stable across
connections (the log row's ID), for the client's dedup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from .follower import Followed, RunBegan, RunEnded, RunLogged
from .messages import MessageStreams

CHANNELS = frozenset({"values", "updates", "messages", "tools", "lifecycle", "input", "checkpoints", "tasks", "custom"})
Event = dict[str, Any]


def supported_channel(channel: str) -> bool:
    return channel in CHANNELS or (channel.startswith("custom:") and len(channel) > len("custom:"))


def _prefix_match(namespace: list[str], prefix: list[str]) -> bool:
    """As the protocol matches: a prefix segment without ':' also matches a segment's name before its ':'."""
    if len(prefix) > len(namespace):
        return False
    return all(
        seg == cand or (":" not in seg and cand.split(":")[0] == seg)
        for seg, cand in zip(prefix, namespace, strict=False)
    )


@dataclass(frozen=True, slots=True)
class Subscription:
    channels: frozenset[str]
    namespaces: list[list[str]] | None = None
    depth: int | None = None

    def matches(self, event: Event) -> bool:
        method, params = event["method"], event["params"]
        if method == "input.requested":
            channel = "input"
        elif method == "custom":
            name = params["data"].get("name") if isinstance(params["data"], dict) else None
            if "custom" not in self.channels and f"custom:{name}" not in self.channels:
                return False
            channel = None
        else:
            channel = method
        if channel is not None and channel not in self.channels:
            return False
        if not self.namespaces:
            return True
        namespace = params["namespace"]
        return any(
            _prefix_match(namespace, prefix) and (self.depth is None or len(namespace) - len(prefix) <= self.depth)
            for prefix in self.namespaces
        )


@dataclass
class _Run:
    graph_name: str
    messages: MessageStreams = field(default_factory=MessageStreams)
    # An interrupt comes in the run's updates and again in its values: requested once.
    interrupts: set[str] = field(default_factory=set)
    error: str | None = None


def _lifecycle_end(run: Any, state: _Run) -> tuple[str, str | None]:
    """The terminal lifecycle of a run: completed, interrupted (paused on an interrupt) or failed."""
    if run is None:
        return "failed", "the run was rolled back"
    if run.status == "success":
        return ("interrupted" if state.interrupts else "completed"), None
    if run.status == "interrupted":
        # Cancelled, not paused: the SDK ends a run's projections only on completed/failed.
        return "failed", "the run was cancelled"
    error = run.error or {}
    return "failed", state.error or str(error.get("message") or error.get("error") or run.status)


class ProtocolEvents:
    """One connection's translation: its sequence numbers and the state of the run being translated."""

    def __init__(self) -> None:
        self.seq = 0
        self._runs: dict[Any, _Run] = {}

    def translate(self, item: Followed) -> list[Event]:
        if isinstance(item, RunBegan):
            configurable = (item.run.kwargs.get("config") or {}).get("configurable") or {}
            state = self._runs[item.run.run_id] = _Run(str(configurable.get("graph_id") or item.run.assistant_id))
            running = {"event": "running", "graph_name": state.graph_name}
            return [self._event(f"{item.run.run_id}:start", "lifecycle", [], running)]
        if isinstance(item, RunEnded):
            state = self._runs.pop(item.run_id, _Run("root"))
            ended = [
                self._event(f"{item.run_id}:end.{n}", "messages", ns, d)
                for n, (ns, d) in enumerate(state.messages.finish_all())
            ]
            status, error = _lifecycle_end(item.run, state)
            data: dict[str, Any] = {"event": status, "graph_name": state.graph_name}
            if error is not None:
                data["error"] = error
            return [*ended, self._event(f"{item.run_id}:end", "lifecycle", [], data)]
        state = self._runs.setdefault(item.run_id, _Run("root"))
        return self._logged(item, state)

    def _logged(self, item: RunLogged, state: _Run) -> list[Event]:
        name, _, suffix = item.event.event.partition("|")
        namespace = suffix.split("|") if suffix else []
        data = orjson.loads(item.event.data)
        out: list[tuple[str, list[str], Any, str | None]] = []
        if name == "values" and isinstance(data, dict):
            interrupts = data.pop("__interrupt__", None)
            out += self._interrupts(state, namespace, interrupts)
            out.append(("values", namespace, data, None))
        elif name == "updates" and isinstance(data, dict):
            for node, values in data.items():
                if node == "__interrupt__":
                    out += self._interrupts(state, namespace, values)
                    continue
                for ns, message in state.messages.finish_node(namespace, node):
                    out.append(("messages", ns, message, None))
                update = values if isinstance(values, dict) else {"value": values}
                out.append(("updates", namespace, {"node": node, "values": update}, node))
        elif name == "messages" and isinstance(data, list) and len(data) == 2:
            out += [("messages", ns, message, None) for ns, message in state.messages.feed(namespace, *data)]
        elif name == "custom":
            out.append(("custom", namespace, {"payload": data}, None))
        elif name == "tasks":
            out.append(("tasks", namespace, data, None))
        elif name == "checkpoints" and isinstance(data, dict):
            out.append(("checkpoints", namespace, _checkpoint(data), None))
        elif name == "error" and isinstance(data, dict):
            state.error = str(data.get("message") or data.get("error") or "error")
        events = []
        for n, (method, ns, payload, node) in enumerate(out):
            event_id = str(item.event.id) if n == 0 else f"{item.event.id}.{n}"
            events.append(self._event(event_id, method, ns, payload, node))
        return events

    def _interrupts(self, state: _Run, namespace: list[str], interrupts: Any) -> list[tuple[str, list[str], Any, None]]:
        out: list[tuple[str, list[str], Any, None]] = []
        for interrupt in interrupts if isinstance(interrupts, list) else []:
            if isinstance(interrupt, dict) and isinstance(interrupt.get("id"), str):
                if interrupt["id"] in state.interrupts:
                    continue
                state.interrupts.add(interrupt["id"])
                value = interrupt.get("value")
                # `payload` is the protocol's field; the Python SDK reads `value` (thread.interrupts).
                data = {"interrupt_id": interrupt["id"], "payload": value, "value": value}
                out.append(("input.requested", namespace, data, None))
        return out

    def _event(self, event_id: str, method: str, namespace: list[str], data: Any, node: str | None = None) -> Event:
        self.seq += 1
        params: dict[str, Any] = {"namespace": namespace, "timestamp": int(time.time() * 1000), "data": data}
        if node is not None:
            params["node"] = node
        return {"type": "event", "event_id": event_id, "seq": self.seq, "method": method, "params": params}


def _checkpoint(payload: dict[str, Any]) -> dict[str, Any]:
    """LangGraph's checkpoints stream part as the protocol's checkpoint reference."""
    config = (payload.get("config") or {}).get("configurable") or {}
    parent = (payload.get("parent_config") or {}).get("configurable") or {}
    metadata = payload.get("metadata") or {}
    ref: dict[str, Any] = {"id": config.get("checkpoint_id"), "step": metadata.get("step", 0)}
    ref["source"] = metadata.get("source", "loop")
    if parent.get("checkpoint_id"):
        ref["parent_id"] = parent["checkpoint_id"]
    return ref
