"""Run routes, as the Agent Server names them: background runs, wait, stream, join, cancel, stateless runs.

Every run, whatever route made it, is a row executed by the run workers (platform/runs): these
routes validate, create the row, and then wait for it or stream its events.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse
from langchain_core.messages import convert_to_messages
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, ConfigDict, Field

from ..errors import Conflict, InvalidInput, NotFound, ThreadNotFound, TooManyRequests, Unavailable
from ..platform import tracing
from ..platform.assistants import Assistant
from ..platform.database import DATABASE_OUTAGES
from ..platform.logs import bind
from ..platform.registry import ThreadRecord
from ..platform.runs import CancelAction, MultitaskStrategy, RunRecord, RunStatus
from ..platform.services import Services
from .deps import ServicesDep, ThreadDep, UserDep, check_owner
from .fields import JsonObject, StorableText
from .serialize import FastJSONResponse, dump_json

router = APIRouter(tags=["runs"])

StreamMode = Literal["values", "updates", "messages", "messages-tuple", "custom", "debug"]


class RunCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resume: Any = None
    update: JsonObject | None = None
    goto: str | list[str] | None = None


class CheckpointSelector(BaseModel):
    model_config = ConfigDict(extra="ignore")
    checkpoint_id: StorableText | None = Field(default=None, max_length=256)
    checkpoint_ns: StorableText = Field(default="", max_length=1024)


class RunCreate(BaseModel):
    # langgraph-sdk sends options this service does not implement (webhooks, feedback keys...): ignore them.
    model_config = ConfigDict(extra="ignore")
    assistant_id: StorableText = Field(max_length=256)
    input: dict[str, Any] | None = None
    command: RunCommand | None = None
    config: JsonObject | None = None
    context: JsonObject | None = None
    metadata: JsonObject | None = None
    stream_mode: StreamMode | list[StreamMode] = "values"
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: list[StorableText] | Literal["*"] | None = None
    interrupt_after: list[StorableText] | Literal["*"] | None = None
    # As the Agent Server: a step's checkpoint is written while the next step runs, and every one is
    # committed before the run ends (and so before its waiters hear of it).
    durability: Literal["sync", "async", "exit"] = "async"
    checkpoint: CheckpointSelector | None = None
    checkpoint_id: StorableText | None = Field(default=None, max_length=256)
    multitask_strategy: MultitaskStrategy = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_disconnect: Literal["cancel", "continue"] = "continue"
    on_completion: Literal["delete", "keep"] = "delete"
    after_seconds: float = Field(default=0, ge=0, le=86_400 * 7)


CANCEL_STATUSES: dict[str, list[RunStatus]] = {
    "pending": ["pending"],
    "running": ["running"],
    "all": ["pending", "running"],
}


class RunsCancel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    thread_id: StorableText | None = None
    run_ids: list[uuid.UUID] | None = None
    status: Literal["pending", "running", "all"] | None = None


def check_nodes(services: Services, field: str, nodes: list[str] | str | None) -> None:
    known = set(services.graph.nodes)
    names = [] if nodes in (None, "*") else ([nodes] if isinstance(nodes, str) else nodes)
    if unknown := [n for n in names if n not in known]:
        raise InvalidInput(f"{field} names unknown nodes {unknown}; the graph has {sorted(known)}")


def check_input(services: Services, graph_input: dict[str, Any]) -> None:
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


def _run_config(
    thread_id: str, run_id: uuid.UUID, body: RunCreate, assistant: Assistant, max_recursion_limit: int
) -> RunnableConfig:
    # The run's config over its assistant's, key by key within configurable.
    client = {**assistant.config, **(body.config or {})}
    # The thread, run and checkpoint are the server's to set; the rest of configurable is the graph's.
    configurable = {
        k: v
        for k, v in {**(assistant.config.get("configurable") or {}), **(client.get("configurable") or {})}.items()
        if not k.startswith(("thread_id", "checkpoint", "run_id", "__"))
    }
    configurable.update(assistant_id=assistant.assistant_id, graph_id=assistant.graph_id)
    configurable["thread_id"] = thread_id
    # In every checkpoint's metadata: a rollback deletes the checkpoints of its run by this ID.
    configurable["run_id"] = str(run_id)
    checkpoint_id = body.checkpoint_id or (body.checkpoint.checkpoint_id if body.checkpoint else None)
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    # The cap (RUN_MAX_RECURSION_LIMIT) bounds the steps, and so the model calls, one run may make.
    recursion_limit = client.get("recursion_limit", min(25, max_recursion_limit))
    if type(recursion_limit) is not int or not 1 <= recursion_limit <= max_recursion_limit:
        raise InvalidInput(f"config.recursion_limit must be an integer between 1 and {max_recursion_limit}")
    return {"configurable": configurable, "recursion_limit": recursion_limit, "metadata": body.metadata or {}}


async def run_kwargs(
    services: Services, body: RunCreate, thread_id: str, run_id: uuid.UUID, assistant: Assistant
) -> dict[str, Any]:
    """Validate everything before the run is queued: a stream's 200 cannot be taken back."""
    if body.input is not None and body.command is not None:
        raise InvalidInput("send input or command, not both")
    check_nodes(services, "interrupt_before", body.interrupt_before)
    check_nodes(services, "interrupt_after", body.interrupt_after)
    config = _run_config(thread_id, run_id, body, assistant, services.settings.run_max_recursion_limit)
    command: dict[str, Any] | None = None

    async def busy() -> bool:
        # The thread's state decides what can run only when no earlier run is queued to change it first.
        return (await services.runs.store.thread_status(thread_id))[0]

    if body.command is not None:
        given = body.command.model_fields_set
        if not given:
            raise InvalidInput("command needs at least one of resume, update, goto")
        if body.command.goto is not None:
            check_nodes(services, "command.goto", body.command.goto)
        if body.command.update is not None:
            check_input(services, body.command.update)
        if "resume" in given and not await busy() and not (await services.graph.aget_state(config)).interrupts:
            raise InvalidInput("the thread has no interrupt to resume")
        command = {name: getattr(body.command, name) for name in given}
    elif body.input is None:
        if not await busy() and not (await services.graph.aget_state(config)).next:
            raise InvalidInput("nothing to run: send input, or a command to resume an interrupt")
    elif not body.input:
        raise InvalidInput("input is empty")
    else:
        check_input(services, body.input)
    return {
        "input": body.input,
        "command": command,
        "config": config,
        "context": {**assistant.context, **(body.context or {})},
        "stream_mode": body.stream_mode if isinstance(body.stream_mode, list) else [body.stream_mode],
        "stream_subgraphs": body.stream_subgraphs,
        "stream_resumable": body.stream_resumable,
        "interrupt_before": body.interrupt_before,
        "interrupt_after": body.interrupt_after,
        "durability": body.durability,
        # The request's trace context: the worker that executes the run continues this trace.
        "trace_context": tracing.carrier(),
    }


async def check_callers_thread(services: Services, user: str, thread_id: str, body: RunCreate) -> None:
    """The caller's thread; with if_not_exists=create, an ID this server issued to them may be new. A run
    with input only has the ID's signature checked here: its own transaction finds the thread (or 404s)."""
    check_owner(services, user, thread_id)
    # No input: the run's validation reads the thread's state, which must be the caller's existing thread.
    if body.if_not_exists == "create" or body.input is None:
        if await services.registry.get(thread_id, user) is None:
            if body.if_not_exists != "create":
                raise ThreadNotFound()
            await services.registry.create(thread_id, user, "default", {"session_type": "default", "user_id": user})


async def enqueue_run(
    services: Services,
    user: str,
    thread_id: str,
    body: RunCreate,
    temporary: bool,
    new_thread: bool = False,
    follow: Literal["wait", "stream"] | None = None,
) -> RunRecord:
    """Admit a run; `follow`: the caller will wait for its end or read its stream from the first event."""
    run_id = uuid.uuid4()
    bind(thread_id=thread_id, run_id=str(run_id))
    assistant = await services.assistants.get(body.assistant_id, user)
    kwargs = await run_kwargs(services, body, thread_id, run_id, assistant)
    # As the Agent Server does: a search by graph or assistant finds the threads it ran on.
    stamp = {"graph_id": services.settings.assistant_id, "assistant_id": body.assistant_id}
    if new_thread:
        # Registered only once the body is valid: a refused stateless run leaves no thread behind.
        metadata = {"session_type": "stateless", "user_id": user, **stamp}
        await services.registry.create(thread_id, user, "stateless", metadata)
    try:
        return await services.runs.create(
            waited=follow is not None,
            streamed=follow == "stream",
            run_id=run_id,
            thread_id=thread_id,
            user_id=user,
            assistant_id=assistant.assistant_id,
            strategy=body.multitask_strategy,
            kwargs=kwargs,
            metadata=body.metadata or {},
            temporary=temporary,
            after_seconds=body.after_seconds,
            max_user_runs=services.settings.user_max_active_runs,
            # The thread is touched (and must exist) in the run's transaction; a new one is fresh already.
            stamp=None if new_thread else stamp,
        )
    except TooManyRequests:
        services.metrics.user_limit_rejections.labels("active_runs").inc()
        raise


async def enqueue_stateless_run(
    services: Services, user: str, body: RunCreate, follow: Literal["wait", "stream"] | None = None
) -> RunRecord:
    thread_id = services.thread_ids.generate_thread_id(user, "stateless")
    temporary = body.on_completion == "delete"
    return await enqueue_run(services, user, thread_id, body, temporary, new_thread=True, follow=follow)


def _locations(run: RunRecord, tail: str) -> dict[str, str]:
    base = f"/threads/{run.thread_id}/runs/{run.run_id}"
    return {"Location": base + tail, "Content-Location": base}


def _result(run: RunRecord | None) -> Any:
    """What wait and join return: the final values, or the error as the Agent Server reports it."""
    if run is None:
        return {"__error__": {"error": "RunDeleted", "message": "the run was rolled back"}}
    if run.status == "error":
        return {"__error__": run.error}
    return run.output


async def _cancel_after_disconnect(services: Services, run: RunRecord) -> None:
    # The response's task is being cancelled (the client left): shield the cancel request from that.
    with anyio.CancelScope(shield=True):
        await services.runs.cancel([run.run_id], "interrupt")


async def _waiting(
    services: Services, run: RunRecord, waiter: asyncio.Task[RunRecord | None], cancel_on_disconnect: bool
) -> AsyncIterator[bytes]:
    """The rest of a long wait: whitespace every heartbeat so proxies keep it open, then the result."""
    try:
        while not waiter.done():
            await asyncio.wait({waiter}, timeout=services.settings.stream_heartbeat_seconds)
            if not waiter.done():
                yield b"\n"
        try:
            result = _result(waiter.result())
        except DATABASE_OUTAGES as exc:  # the 200 is gone: the outage travels in the body
            result = {"__error__": {"error": type(exc).__name__, "message": "database unavailable; join again"}}
        yield dump_json(result)
    finally:
        if not waiter.done():
            waiter.cancel()
            if cancel_on_disconnect:
                await _cancel_after_disconnect(services, run)


async def _events(
    services: Services, run: RunRecord, last_event_id: str | None, cancel_on_disconnect: bool, from_start: bool
) -> AsyncIterator[bytes]:
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    # As the Agent Server: an event ID only where a reconnect can resume from it.
    resumable = bool(run.kwargs.get("stream_resumable"))
    finished = False
    try:
        async for item in services.runs.stream(run, after, services.settings.stream_heartbeat_seconds, from_start):
            if item is None:
                yield b": heartbeat\n\n"
            elif resumable:
                yield f"event: {item.event}\ndata: {item.data}\nid: {item.id}\n\n".encode()
            else:
                yield f"event: {item.event}\ndata: {item.data}\n\n".encode()
        finished = True
    finally:
        if not finished and cancel_on_disconnect:
            await _cancel_after_disconnect(services, run)


def _sse(
    services: Services, run: RunRecord, last_event_id: str | None, cancel_on_disconnect: bool, from_start: bool
) -> StreamingResponse:
    return StreamingResponse(
        _events(services, run, last_event_id, cancel_on_disconnect, from_start),
        media_type="text/event-stream",
        headers={**_locations(run, "/stream"), "Cache-Control": "no-store"},
    )


async def _wait_response(services: Services, run: RunRecord, cancel_on_disconnect: bool) -> Response:
    """A run that ends within one heartbeat gets a plain JSON answer with a real status code (503 for an
    outage); a longer one a streamed body that the heartbeat keeps alive, as the Agent Server does."""
    waiter = asyncio.create_task(services.runs.wait(run))
    try:
        await asyncio.wait({waiter}, timeout=services.settings.stream_heartbeat_seconds)
    except asyncio.CancelledError:
        waiter.cancel()
        raise
    headers = _locations(run, "/join")
    if not waiter.done():
        return StreamingResponse(
            _waiting(services, run, waiter, cancel_on_disconnect), media_type="application/json", headers=headers
        )
    ended = waiter.result()
    if ended is not None and ended.status == "error" and (ended.error or {}).get("unavailable"):
        raise Unavailable("the run failed on an outage; retry")
    return FastJSONResponse(_result(ended), headers=headers)


async def _owned_run(services: Services, record: ThreadRecord, run_id: uuid.UUID) -> RunRecord:
    run = await services.runs.store.get(record.thread_id, run_id)
    if run is None:
        raise NotFound("Run not found")
    return run


# Runs on a thread


@router.post("/threads/{thread_id}/runs")
async def create_run(thread_id: str, body: RunCreate, services: ServicesDep, user: UserDep, response: Response) -> Any:
    await check_callers_thread(services, user, thread_id, body)
    run = await enqueue_run(services, user, thread_id, body, temporary=False)
    response.headers["Content-Location"] = f"/threads/{run.thread_id}/runs/{run.run_id}"
    return run.body()


@router.post("/threads/{thread_id}/runs/wait")
async def wait_run(thread_id: str, body: RunCreate, services: ServicesDep, user: UserDep) -> Response:
    await check_callers_thread(services, user, thread_id, body)
    run = await enqueue_run(services, user, thread_id, body, temporary=False, follow="wait")
    return await _wait_response(services, run, body.on_disconnect == "cancel")


@router.post("/threads/{thread_id}/runs/stream")
async def stream_run(thread_id: str, body: RunCreate, services: ServicesDep, user: UserDep) -> StreamingResponse:
    await check_callers_thread(services, user, thread_id, body)
    run = await enqueue_run(services, user, thread_id, body, temporary=False, follow="stream")
    return _sse(services, run, None, body.on_disconnect == "cancel", from_start=True)


@router.get("/threads/{thread_id}/runs")
async def list_runs(
    record: ThreadDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    status: RunStatus | None = None,
) -> list[dict[str, Any]]:
    return [run.body() for run in await services.runs.store.list_for_thread(record.thread_id, status, limit, offset)]


@router.get("/threads/{thread_id}/runs/{run_id}")
async def get_run(run_id: uuid.UUID, record: ThreadDep, services: ServicesDep) -> dict[str, Any]:
    return (await _owned_run(services, record, run_id)).body()


@router.delete("/threads/{thread_id}/runs/{run_id}", status_code=204)
async def delete_run(run_id: uuid.UUID, record: ThreadDep, services: ServicesDep) -> Response:
    run = await _owned_run(services, record, run_id)
    if not run.done:
        raise Conflict("the run is still pending or running: cancel it first")
    await services.runs.store.delete(record.thread_id, run_id)
    return Response(status_code=204)


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join_run(
    run_id: uuid.UUID, record: ThreadDep, services: ServicesDep, cancel_on_disconnect: bool = False
) -> Response:
    return await _wait_response(services, await _owned_run(services, record, run_id), cancel_on_disconnect)


@router.get("/threads/{thread_id}/runs/{run_id}/stream")
async def join_run_stream(
    run_id: uuid.UUID,
    record: ThreadDep,
    services: ServicesDep,
    cancel_on_disconnect: bool = False,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    run = await _owned_run(services, record, run_id)
    return _sse(services, run, last_event_id, cancel_on_disconnect, from_start=False)


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(
    run_id: uuid.UUID,
    record: ThreadDep,
    services: ServicesDep,
    wait: bool = False,
    action: CancelAction = "interrupt",
) -> Response:
    run = await _owned_run(services, record, run_id)
    await services.runs.cancel([run.run_id], action)
    if not wait:
        return Response(status_code=202)
    return await _wait_response(services, run, cancel_on_disconnect=False)


# Stateless runs: each on a new thread of the caller's, deleted when the run ends unless on_completion=keep.


@router.post("/runs")
async def create_stateless_run(body: RunCreate, services: ServicesDep, user: UserDep, response: Response) -> Any:
    run = await enqueue_stateless_run(services, user, body)
    response.headers["Content-Location"] = f"/runs/{run.run_id}"
    return run.body()


@router.post("/runs/wait")
async def wait_stateless_run(body: RunCreate, services: ServicesDep, user: UserDep) -> Response:
    run = await enqueue_stateless_run(services, user, body, follow="wait")
    return await _wait_response(services, run, body.on_disconnect == "cancel")


@router.post("/runs/stream")
async def stream_stateless_run(body: RunCreate, services: ServicesDep, user: UserDep) -> StreamingResponse:
    run = await enqueue_stateless_run(services, user, body, follow="stream")
    return _sse(services, run, None, body.on_disconnect == "cancel", from_start=True)


@router.post("/runs/batch")
async def create_stateless_batch(
    body: Annotated[list[RunCreate], Field(min_length=1, max_length=100)], services: ServicesDep, user: UserDep
) -> list[dict[str, Any]]:
    runs = []
    for item in body:
        runs.append(await enqueue_stateless_run(services, user, item))
    return [run.body() for run in runs]


@router.post("/runs/cancel", status_code=204)
async def cancel_runs(
    body: RunsCancel, services: ServicesDep, user: UserDep, action: CancelAction = "interrupt"
) -> Response:
    statuses = CANCEL_STATUSES[body.status or "all"]
    if body.thread_id is None and body.run_ids is None and body.status is None:
        raise InvalidInput("name a thread_id, run_ids or a status")
    run_ids = await services.runs.store.cancellable(user, statuses, body.thread_id, body.run_ids)
    await services.runs.cancel(run_ids, action)
    return Response(status_code=204)
