"""Run routes: run the graph on a thread and wait for it, or stream it as server-sent events."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal, cast

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from langchain_core.messages import BaseMessage, BaseMessageChunk, convert_to_messages
from langchain_core.runnables import RunnableConfig
from langgraph.errors import EmptyInputError, GraphRecursionError, InvalidUpdateError
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidInput, NotFound
from ..platform.registry import ThreadRecord
from ..platform.services import Services
from .deps import ServicesDep, ThreadDep
from .fields import JsonObject
from .serialize import jsonable

log = logging.getLogger(__name__)
router = APIRouter(tags=["runs"])

StreamMode = Literal["values", "updates", "messages", "messages-tuple", "custom", "debug"]
# The Agent Server's stream modes, and the LangGraph mode that feeds each.
GRAPH_MODE: dict[str, str] = {"messages-tuple": "messages", "messages": "messages"}


class RunCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resume: Any = None
    update: JsonObject | None = None
    goto: str | list[str] | None = None


class RunCreate(BaseModel):
    # langgraph-sdk sends options this service does not implement (webhooks, multitask...): ignore them.
    model_config = ConfigDict(extra="ignore")
    assistant_id: str = Field(max_length=256)
    input: dict[str, Any] | None = None
    command: RunCommand | None = None
    config: JsonObject | None = None
    metadata: JsonObject | None = None
    stream_mode: StreamMode | list[StreamMode] = "values"
    interrupt_before: list[str] | Literal["*"] | None = None
    interrupt_after: list[str] | Literal["*"] | None = None
    durability: Literal["sync", "async", "exit"] = "sync"


def _check_nodes(services: Services, field: str, nodes: list[str] | str | None) -> None:
    known = set(services.graph.nodes)
    names = [] if nodes in (None, "*") else ([nodes] if isinstance(nodes, str) else nodes)
    if unknown := [n for n in names if n not in known]:
        raise InvalidInput(f"{field} names unknown nodes {unknown}; the graph has {sorted(known)}")


def _check_input(services: Services, graph_input: dict[str, Any]) -> None:
    channels = {name for name in services.graph.channels if not name.startswith("__")}
    if unknown := sorted(set(graph_input) - channels):
        raise InvalidInput(f"input has unknown keys {unknown}; the state has {sorted(channels)}")
    if "messages" in graph_input:
        try:
            messages = graph_input["messages"]
            if not isinstance(messages, list):
                raise ValueError("input.messages must be a list")
            convert_to_messages(messages)
        except Exception as exc:  # langchain raises several types for malformed messages
            raise InvalidInput(f"input.messages is not a list of chat messages: {exc}") from exc


def _run_config(record: ThreadRecord, body: RunCreate) -> RunnableConfig:
    client = body.config or {}
    # The thread and checkpoint are the server's to choose; the rest of configurable is the graph's.
    configurable = {
        k: v
        for k, v in (client.get("configurable") or {}).items()
        if not k.startswith(("thread_id", "checkpoint", "__"))
    }
    configurable["thread_id"] = record.thread_id
    recursion_limit = client.get("recursion_limit", 25)
    if not isinstance(recursion_limit, int) or not 1 <= recursion_limit <= 200:
        raise InvalidInput("config.recursion_limit must be an integer between 1 and 200")
    return {"configurable": configurable, "recursion_limit": recursion_limit, "metadata": body.metadata or {}}


async def _prepare(services: Services, body: RunCreate, record: ThreadRecord) -> tuple[Any, RunnableConfig]:
    """Validate everything before the run starts: a stream's 200 cannot be taken back."""
    if body.assistant_id != services.settings.assistant_id:
        raise NotFound("Assistant not found")
    _check_nodes(services, "interrupt_before", body.interrupt_before)
    _check_nodes(services, "interrupt_after", body.interrupt_after)
    config = _run_config(record, body)
    if body.command is not None:
        given = body.command.model_fields_set
        if not given:
            raise InvalidInput("command needs at least one of resume, update, goto")
        if body.command.goto is not None:
            _check_nodes(services, "command.goto", body.command.goto)
        if body.command.update is not None:
            _check_input(services, body.command.update)
        if "resume" in given and not (await services.graph.aget_state(config)).interrupts:
            raise InvalidInput("the thread has no interrupt to resume")
        return Command(**{name: getattr(body.command, name) for name in given}), config
    if body.input is None:
        if not (await services.graph.aget_state(config)).next:
            raise InvalidInput("nothing to run: send input, or a command to resume an interrupt")
        return None, config
    if not body.input:
        raise InvalidInput("input is empty")
    _check_input(services, body.input)
    return body.input, config


GRAPH_INPUT_ERRORS = (EmptyInputError, InvalidUpdateError, GraphRecursionError)


@router.post("/threads/{thread_id}/runs/wait")
async def wait_run(body: RunCreate, record: ThreadDep, services: ServicesDep) -> Any:
    graph_input, config = await _prepare(services, body, record)
    services.active_runs.claim(record.thread_id)
    try:
        await services.registry.touch(record.thread_id)
        result = await services.graph.ainvoke(
            graph_input,
            config,
            interrupt_before=body.interrupt_before,
            interrupt_after=body.interrupt_after,
            durability=body.durability,
        )
    except GRAPH_INPUT_ERRORS as exc:
        raise InvalidInput(str(exc)) from exc
    finally:
        services.active_runs.release(record.thread_id)
    return jsonable(result)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(jsonable(data), separators=(',', ':'))}\n\n".encode()


class _MessageAccumulator:
    """Builds the Agent Server's 'messages' events (metadata/partial/complete) from message chunks."""

    def __init__(self) -> None:
        self._messages: dict[str, BaseMessage] = {}

    def events(self, chunk: BaseMessage, metadata: dict[str, Any]) -> list[bytes]:
        key = chunk.id or "0"
        out = []
        if key not in self._messages:
            out.append(_sse("messages/metadata", {key: {"metadata": metadata}}))
            self._messages[key] = chunk
        else:
            previous = self._messages[key]
            if isinstance(previous, BaseMessageChunk) and isinstance(chunk, BaseMessageChunk):
                self._messages[key] = previous + chunk
            else:
                self._messages[key] = chunk
        out.append(_sse("messages/partial", [self._messages[key]]))
        return out

    def complete(self) -> list[bytes]:
        return [_sse("messages/complete", [m]) for m in self._messages.values()]


async def _stream(
    services: Services,
    body: RunCreate,
    record: ThreadRecord,
    graph_input: Any,
    config: RunnableConfig,
    run_id: str,
) -> AsyncIterator[bytes]:
    requested = body.stream_mode if isinstance(body.stream_mode, list) else [body.stream_mode]
    graph_modes = sorted({GRAPH_MODE.get(mode, mode) for mode in requested})
    messages = _MessageAccumulator() if "messages" in requested else None
    try:
        yield _sse("metadata", {"run_id": run_id, "attempt": 1})
        async for part in services.graph.astream(
            graph_input,
            config,
            stream_mode=graph_modes,  # type: ignore[arg-type]
            interrupt_before=body.interrupt_before,
            interrupt_after=body.interrupt_after,
            durability=body.durability,
        ):
            mode, chunk = cast(tuple[str, Any], part)
            if mode == "messages":
                message, metadata = chunk
                if "messages-tuple" in requested:
                    yield _sse("messages", [message, metadata])
                if messages is not None:
                    for event in messages.events(message, metadata):
                        yield event
            else:
                yield _sse(mode, chunk)
        if messages is not None:
            for event in messages.complete():
                yield event
    except Exception as exc:
        # Headers are gone: the failure travels as an 'error' event, as the Agent Server does.
        log.warning("run %s failed: %s", run_id, exc)
        yield _sse("error", {"error": type(exc).__name__, "message": "run failed; see the service logs"})
    finally:
        services.active_runs.release(record.thread_id)


@router.post("/threads/{thread_id}/runs/stream")
async def stream_run(body: RunCreate, record: ThreadDep, services: ServicesDep) -> StreamingResponse:
    graph_input, config = await _prepare(services, body, record)
    services.active_runs.claim(record.thread_id)
    try:
        # A database outage is a 503 now, not an error event after the 200.
        await services.registry.touch(record.thread_id)
    except BaseException:
        services.active_runs.release(record.thread_id)
        raise
    run_id = str(uuid.uuid4())
    return StreamingResponse(
        _stream(services, body, record, graph_input, config, run_id),
        media_type="text/event-stream",
        headers={"Content-Location": f"/threads/{record.thread_id}/runs/{run_id}", "Cache-Control": "no-store"},
    )
