"""LangGraph's message stream (the messages-tuple events of a run: a chunk or a whole message, with its
metadata) as the protocol's content-block events: message-start, content-block-start/delta/finish per text
or tool call block, message-finish. LangGraph marks no message's end, so a message ends at its last chunk
(chunk_position "last"), when its node's update arrives, or when the run ends."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

Data = dict[str, Any]
Namespaced = tuple[list[str], Data]

ROLES = {"ai": "ai", "human": "human", "system": "system", "tool": "tool"}
# The metadata of a message-start: the scalars a client routes by (the SDK reads langgraph_node).
START_METADATA = ("langgraph_node", "langgraph_step", "ls_provider", "ls_model_name")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part if isinstance(part, str) else str(part.get("text", ""))
            for part in content
            if isinstance(part, str) or (isinstance(part, dict) and part.get("type") == "text")
        )
    return ""


@dataclass
class _ToolBlock:
    index: int
    id: str | None
    name: str | None
    args: str = ""


@dataclass
class _Message:
    namespace: list[str]
    node: str | None
    next_index: int = 0
    text_index: int | None = None
    text: str = ""
    tools: dict[Any, _ToolBlock] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)

    def allocate(self) -> int:
        self.next_index += 1
        return self.next_index - 1


class MessageStreams:
    """One run's messages in flight, by message ID."""

    def __init__(self) -> None:
        self._open: dict[str, _Message] = {}
        self._ended: set[str] = set()
        self._unnamed = 0

    def feed(self, namespace: list[str], message: Any, metadata: Any) -> list[Namespaced]:
        if not isinstance(message, dict):
            return []
        meta = metadata if isinstance(metadata, dict) else {}
        kind = str(message.get("type", "ai"))
        chunk = kind.endswith("Chunk")
        message_id = message.get("id")
        if not isinstance(message_id, str) or not message_id:
            self._unnamed += 1
            message_id = f"message-{self._unnamed}"
        if message_id in self._ended:  # a streamed message seen again whole (a node's output)
            return []
        out: list[Namespaced] = []
        state = self._open.get(message_id)
        if state is None:
            node = meta.get("langgraph_node")
            state = self._open[message_id] = _Message(namespace, node if isinstance(node, str) else None)
            start: Data = {"event": "message-start", "role": ROLES.get(kind.removesuffix("MessageChunk").lower(), "ai")}
            start["id"] = message_id
            scalars = {k: v for k in START_METADATA if isinstance(v := meta.get(k), str | int | float | bool)}
            if scalars:
                start["metadata"] = scalars
            out.append((namespace, start))
        if text := _text(message.get("content")):
            if state.text_index is None:
                state.text_index = state.allocate()
                block = {"type": "text", "text": ""}
                out.append((namespace, {"event": "content-block-start", "index": state.text_index, "content": block}))
            state.text += text
            delta = {"type": "text-delta", "text": text}
            out.append((namespace, {"event": "content-block-delta", "index": state.text_index, "delta": delta}))
        calls = message.get("tool_call_chunks") if chunk else message.get("tool_calls")
        for position, call in enumerate(calls if isinstance(calls, list) else []):
            out += self._tool(state, position, call, chunk)
        if isinstance(usage := message.get("usage_metadata"), dict):
            for key in ("input_tokens", "output_tokens", "total_tokens"):
                if isinstance(usage.get(key), int):
                    state.usage[key] = state.usage.get(key, 0) + usage[key]
        if not chunk or message.get("chunk_position") == "last":
            out += self._finish(message_id)
        return out

    def _tool(self, state: _Message, position: int, call: Any, chunk: bool) -> list[Namespaced]:
        if not isinstance(call, dict):
            return []
        key = call.get("index", position) if chunk else position
        args = call.get("args")
        args_text = args if isinstance(args, str) else json.dumps(args or {})
        out: list[Namespaced] = []
        block = state.tools.get(key)
        if block is None:
            block = state.tools[key] = _ToolBlock(state.allocate(), call.get("id"), call.get("name"))
            start = {"type": "tool_call_chunk", "id": block.id, "name": block.name, "args": ""}
            out.append((state.namespace, {"event": "content-block-start", "index": block.index, "content": start}))
        block.id = block.id or call.get("id")
        block.name = block.name or call.get("name")
        if args_text:
            block.args += args_text
            delta = {"type": "tool-call-delta", "args": args_text}
            out.append((state.namespace, {"event": "content-block-delta", "index": block.index, "delta": delta}))
        return out

    def _finish(self, message_id: str) -> list[Namespaced]:
        state = self._open.pop(message_id)
        self._ended.add(message_id)
        out: list[Namespaced] = []
        if state.text_index is not None:
            content = {"type": "text", "text": state.text}
            out.append(
                (state.namespace, {"event": "content-block-finish", "index": state.text_index, "content": content})
            )
        for block in state.tools.values():
            try:
                parsed = json.loads(block.args or "{}")
            except json.JSONDecodeError:
                parsed = None
            finished: Data = (
                {"type": "tool_call", "id": block.id, "name": block.name or "", "args": parsed}
                if isinstance(parsed, dict)
                else {
                    "type": "invalid_tool_call",
                    "id": block.id,
                    "name": block.name,
                    "args": block.args,
                    "error": None,
                }
            )
            out.append((state.namespace, {"event": "content-block-finish", "index": block.index, "content": finished}))
        finish: Data = {"event": "message-finish"}
        if state.usage:
            finish["usage"] = state.usage
        out.append((state.namespace, finish))
        return out

    def finish_node(self, namespace: list[str], node: str) -> list[Namespaced]:
        """The node's update arrived: its messages are whole."""
        ids = [mid for mid, m in self._open.items() if m.namespace == namespace and m.node == node]
        return [item for mid in ids for item in self._finish(mid)]

    def finish_all(self) -> list[Namespaced]:
        return [item for mid in list(self._open) for item in self._finish(mid)]
