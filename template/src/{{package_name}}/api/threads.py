"""Thread routes: the server issues every thread ID, signed and bound to the caller."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import StreamingResponse
from langchain_core.runnables import RunnableConfig
from langgraph.errors import InvalidUpdateError
from langgraph.types import StateSnapshot
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..errors import Conflict, InvalidInput, NotFound, ThreadNotFound
from ..platform.core.fields import JsonObject, StorableText
from ..platform.runs.thread_stream import THREAD_STREAM_MODES
from ..platform.services import Services
from ..platform.threads.ids import MAX_THREAD_ID_CHARS, InvalidThreadId
from ..platform.threads.registry import SortColumn, ThreadRecord
from ..platform.threads.retention import Strategy
from ..platform.threads.updates import Superstep, apply_supersteps, check_supersteps, check_update
from .deps import ServicesDep, ThreadDep, UserDep
from .serialize import STATE_FIELDS, checkpoint_ref, interrupt_json, jsonable, select_fields, thread_state
from .sse import sse_frames

router = APIRouter(tags=["threads"])

MAX_SESSION_TYPE_CHARS = 64
NO_STORE = {"Cache-Control": "no-store"}


class ThreadTTL(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ttl: float = Field(gt=0, le=100 * 365 * 24 * 60, description="Minutes after the thread's last update.")
    strategy: Strategy = "delete"


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    thread_id: StorableText | None = Field(default=None, max_length=MAX_THREAD_ID_CHARS)
    metadata: JsonObject = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"
    ttl: ThreadTTL | None = None
    supersteps: list[Superstep] | None = Field(default=None, max_length=1000)


class ThreadPatch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    metadata: JsonObject | None = None
    ttl: ThreadTTL | None = None


class ThreadPrune(BaseModel):
    model_config = ConfigDict(extra="ignore")
    thread_ids: list[Annotated[StorableText, Field(max_length=MAX_THREAD_ID_CHARS)]] = Field(max_length=1000)
    strategy: Strategy = "delete"


class CheckpointRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    checkpoint_id: StorableText | None = Field(default=None, max_length=256)
    checkpoint_ns: StorableText = Field(default="", max_length=1024)


def _state_select(select: list[str] | None) -> list[str] | None:
    for name in select or ():
        if name not in STATE_FIELDS and not (name.startswith("values.") and len(name) > 7):
            raise ValueError(f"cannot select {name!r}: choose from {sorted(STATE_FIELDS)} or values.<key>")
    return select


StateSelect = Annotated[list[Annotated[str, Field(max_length=256)]] | None, AfterValidator(_state_select)]
ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
EXTRACT_STEP = re.compile(r"\.?([A-Za-z_][\w-]*)|\[(-?\d{1,9})\]")
ExtractPath = Annotated[str, Field(max_length=256, pattern=r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*|\[-?\d{1,9}\])*$")]
ThreadField = Literal[
    "thread_id",
    "created_at",
    "updated_at",
    "state_updated_at",
    "metadata",
    "config",
    "context",
    "status",
    "values",
    "interrupts",
    "error",
]


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    limit: int = Field(default=10, ge=1, le=1000)
    before: StorableText | CheckpointRef | None = None
    metadata: JsonObject | None = None
    checkpoint: CheckpointRef | None = None
    select: StateSelect = Field(default=None, max_length=32)


class StateAtCheckpoint(BaseModel):
    model_config = ConfigDict(extra="ignore")
    checkpoint: CheckpointRef
    subgraphs: bool = False
    select: StateSelect = Field(default=None, max_length=32)


class StateUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # A list only with as_node "__copy__": the updates to apply to the copy.
    values: JsonObject | list[Any] | None = None
    as_node: str | None = Field(default=None, max_length=256)
    checkpoint: CheckpointRef | None = None
    checkpoint_id: StorableText | None = Field(default=None, max_length=256)


class ThreadCount(BaseModel):
    model_config = ConfigDict(extra="ignore")
    metadata: JsonObject | None = None
    values: JsonObject | None = None
    status: ThreadStatus | None = None


ThreadIdText = Annotated[StorableText, Field(max_length=MAX_THREAD_ID_CHARS)]


class ThreadSearch(ThreadCount):
    ids: list[ThreadIdText] | None = Field(default=None, max_length=1000)
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=1_000_000_000)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at", "state_updated_at"] = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    select: list[ThreadField] | None = Field(default=None, max_length=16)
    # Alias -> path into the thread, e.g. {"last": "values.messages[-1].content"}: an `extracted` field.
    extract: dict[Annotated[str, Field(max_length=64)], ExtractPath] | None = Field(default=None, max_length=10)


def extract_path(data: Any, path: str) -> Any:
    """The value at `path` (dot-separated keys, `[n]` list indexes, negative from the end), or None."""
    for key, index in EXTRACT_STEP.findall(path):
        if key and isinstance(data, dict):
            data = data.get(key)
        elif index and isinstance(data, list) and -len(data) <= int(index) < len(data):
            data = data[int(index)]
        else:
            return None
    return data


def thread_config(thread_id: str, checkpoint: CheckpointRef | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if checkpoint is not None:
        configurable["checkpoint_ns"] = checkpoint.checkpoint_ns
        if checkpoint.checkpoint_id:
            configurable["checkpoint_id"] = checkpoint.checkpoint_id
    return {"configurable": configurable}


# The fields of a thread that only its latest checkpoint and its runs can tell.
STATE_DERIVED = frozenset(("status", "values", "interrupts", "error", "state_updated_at"))


async def thread_body(services: Services, record: ThreadRecord, select: list[str] | None = None) -> dict[str, Any]:
    if select and STATE_DERIVED.isdisjoint(select):
        return select_fields(_record_fields(record), select)
    snapshot = await services.graphs.for_thread(record.metadata).aget_state(thread_config(record.thread_id))
    interrupts = [interrupt_json(i) for t in snapshot.tasks for i in t.interrupts]
    # Derived, never stored: a run in flight makes the thread busy, wherever it runs. Then as the Agent
    # Server orders them: the last run's failure, a pause (an interrupt() or interrupt_before/after: tasks
    # still to run), else idle.
    activity = await services.runs.thread_status(record.thread_id)
    failed = activity.last_status in ("error", "timeout")
    status = "busy" if activity.busy else "error" if failed else "interrupted" if snapshot.next else "idle"
    body = {
        **_record_fields(record),
        # As the Agent Server's: the thread's error is its failed last run's, and its state changed when
        # its latest checkpoint was written.
        "error": activity.last_error if failed else None,
        "state_updated_at": snapshot.created_at or record.updated_at,
        "status": status,
        "values": jsonable(snapshot.values),
        "interrupts": {record.thread_id: interrupts} if interrupts else {},
    }
    return select_fields(body, select)


def _record_fields(record: ThreadRecord) -> dict[str, Any]:
    return {
        "thread_id": record.thread_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "metadata": record.metadata,
        # As the Agent Server's: what its runs' assistants and requests left on it (service_admit_run).
        "config": record.config,
    }


def json_contains(document: Any, pattern: Any) -> bool:
    """PostgreSQL's jsonb `document @> pattern`, which the Agent Server uses to filter threads by values."""
    if isinstance(pattern, dict):
        return isinstance(document, dict) and all(
            key in document and json_contains(document[key], value) for key, value in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(document, list) and all(
            any(json_contains(item, wanted) for item in document) for wanted in pattern
        )
    if isinstance(document, bool) or isinstance(pattern, bool):
        return document is pattern
    return bool(document == pattern)


@router.post("/threads")
async def create_thread(body: ThreadCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    session_type = body.metadata.get("session_type", "default")
    if not isinstance(session_type, str) or not session_type or len(session_type) > MAX_SESSION_TYPE_CHARS:
        raise InvalidInput("metadata.session_type must be a non-empty string of at most 64 characters")
    # Supersteps go through the graph the metadata names (graph_id), as the thread's runs would.
    graph = services.graphs.for_thread(body.metadata)
    if body.supersteps:
        check_supersteps(graph, body.supersteps)
    if body.thread_id is None:
        thread_id = services.thread_ids.generate_thread_id(user, session_type)
    else:
        # A UUID of the client's choosing (as on the Agent Server), or an ID this server issued to the caller
        # (an idempotent retry); any other ID is refused as unknown.
        thread_id = services.thread_ids.stored_id(user, body.thread_id)
        try:
            owner = services.thread_ids.owner_of(thread_id)
        except InvalidThreadId as exc:
            raise ThreadNotFound() from exc
        if owner != user:
            raise ThreadNotFound()
        existing = await services.registry.get(thread_id, user)
        if existing is not None:
            if body.if_exists == "do_nothing":
                return await thread_body(services, existing)
            raise Conflict("Thread already exists")
    metadata = {**body.metadata, "session_type": session_type, "user_id": user}
    if body.supersteps:
        # Checkpoints first, as a copy does: a refused superstep leaves neither a thread nor half its state.
        try:
            await apply_supersteps(graph, thread_config(thread_id, CheckpointRef()), body.supersteps)
        except InvalidInput:
            await services.checkpointer.adelete_thread(thread_id)
            raise
    record = await services.registry.create(thread_id, user, session_type, metadata)
    if body.ttl is not None:
        await services.retention.set_ttl(thread_id, user, body.ttl.ttl, body.ttl.strategy)
    return await thread_body(services, record)


@router.post("/threads/prune")
async def prune_threads(body: ThreadPrune, services: ServicesDep, user: UserDep) -> dict[str, int]:
    """Prune the caller's threads now; others' and unknown IDs are skipped, as are threads with a run in flight."""
    thread_ids = [services.thread_ids.stored_id(user, thread_id) for thread_id in body.thread_ids]
    return {"pruned_count": await services.retention.prune(thread_ids, user, body.strategy)}


async def _matching(services: Services, user: str, body: ThreadCount, ids: list[str] | None = None) -> list[Any]:
    """The caller's threads that pass the filters of `body`, as full thread bodies. Status and values are
    derived from runs and checkpoints, not columns: each candidate the metadata filter leaves is read."""
    bodies = []
    for record in await services.registry.search(user, metadata=body.metadata, ids=ids):
        thread = await thread_body(services, record)
        if body.status is not None and thread["status"] != body.status:
            continue
        if body.values is not None and not json_contains(thread["values"], body.values):
            continue
        bodies.append(thread)
    return bodies


# updated_at moves when a run is created or the state is written: the nearest column to the state's own time.
SORT_COLUMNS: dict[str, SortColumn] = {
    "thread_id": "thread_id",
    "created_at": "created_at",
    "updated_at": "updated_at",
    "state_updated_at": "updated_at",
    "status": "updated_at",
}


@router.post("/threads/search")
async def search_threads(
    body: ThreadSearch, services: ServicesDep, user: UserDep, response: Response
) -> list[dict[str, Any]]:
    column = SORT_COLUMNS[body.sort_by]
    descending = body.sort_order == "desc"
    select: list[str] | None = [str(name) for name in body.select] if body.select else None
    ids = [services.thread_ids.stored_id(user, thread_id) for thread_id in body.ids] if body.ids else body.ids
    if body.status is None and body.values is None and body.sort_by != "status":
        records = await services.registry.search(
            user,
            metadata=body.metadata,
            ids=ids,
            sort_by=column,
            descending=descending,
            limit=body.limit + 1,
            offset=body.offset,
        )
        more = len(records) > body.limit
        if body.extract:  # the paths may reach past the selected fields
            found = [await thread_body(services, record) for record in records[: body.limit]]
        else:
            found = [await thread_body(services, record, select) for record in records[: body.limit]]
    else:
        matching = await _matching(services, user, body, ids)
        if body.sort_by == "status":
            matching.sort(key=lambda thread: str(thread["status"]), reverse=descending)
        else:
            matching.sort(key=lambda thread: thread[column], reverse=descending)
        more = len(matching) > body.offset + body.limit
        found = matching[body.offset : body.offset + body.limit]
    page = [select_fields(thread, select) for thread in found]
    if body.extract:
        for item, thread in zip(page, found, strict=True):
            item["extracted"] = {alias: extract_path(thread, path) for alias, path in body.extract.items()}
    if more:
        response.headers["X-Pagination-Next"] = str(body.offset + body.limit)
    return page


@router.post("/threads/count")
async def count_threads(body: ThreadCount, services: ServicesDep, user: UserDep) -> int:
    if body.status is None and body.values is None:
        return await services.registry.count(user, body.metadata)
    return len(await _matching(services, user, body))


@router.get("/threads/{thread_id}")
async def get_thread(
    record: ThreadDep, services: ServicesDep, include: Annotated[str, Query(max_length=256)] = ""
) -> dict[str, Any]:
    body = await thread_body(services, record)
    if "ttl" in include.split(","):
        body["ttl"] = await services.retention.ttl_of(record.thread_id, record.user_id)
    return body


@router.patch("/threads/{thread_id}")
async def patch_thread(body: ThreadPatch, record: ThreadDep, services: ServicesDep) -> dict[str, Any]:
    """Metadata merges into the thread's; a ttl replaces its TTL. Either counts as an update (the TTL restarts)."""
    metadata = None
    if body.metadata is not None:
        # Who owns the thread and its session type are the server's: the signed ID says so.
        metadata = {**body.metadata, "session_type": record.session_type, "user_id": record.user_id}
    # One statement merges the metadata (if any) and touches the thread; a TTL is set after it.
    fresh = await services.registry.touch(record.thread_id, record.user_id, metadata)
    if body.ttl is not None:
        await services.retention.set_ttl(record.thread_id, record.user_id, body.ttl.ttl, body.ttl.strategy)
        fresh = await services.registry.get(record.thread_id, record.user_id)
    if fresh is None:
        raise ThreadNotFound()
    return await thread_body(services, fresh)


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(record: ThreadDep, services: ServicesDep) -> Response:
    # Under the thread's run lock: runs first (one still running would write checkpoints again), then
    # checkpoints, then the thread, so a crash in between leaves an empty thread, never orphaned checkpoints,
    # and no run is admitted on the thread while it goes.
    async with services.runs.forgetting_thread(record.user_id, record.thread_id) as conn:
        await services.checkpointer.adelete_thread(record.thread_id)
        await services.registry.delete(record.thread_id, record.user_id, conn)
    return Response(status_code=204)


@router.post("/threads/{thread_id}/copy")
async def copy_thread(record: ThreadDep, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """A new thread of the caller's, with a new signed ID, holding a copy of every checkpoint."""
    thread_id = services.thread_ids.generate_thread_id(user, record.session_type)
    # Checkpoints first: a failure in between leaves rows under an ID nobody holds, never a thread
    # that answers with half of its history.
    await services.checkpointer.acopy_thread(record.thread_id, thread_id)
    copied = await services.registry.create(thread_id, user, record.session_type, record.metadata, record.config)
    return await thread_body(services, copied)


async def _state(
    services: Services, record: ThreadRecord, config: RunnableConfig, subgraphs: bool, select: list[str] | None
) -> dict[str, Any]:
    graph = services.graphs.for_thread(record.metadata)
    snapshot: StateSnapshot = await graph.aget_state(config, subgraphs=subgraphs)
    if config["configurable"].get("checkpoint_id") and snapshot.created_at is None:
        raise NotFound("Checkpoint not found")
    return select_fields(thread_state(snapshot), select)


StateSelectQuery = Annotated[list[str] | None, Query(max_length=32), AfterValidator(_state_select)]


@router.get("/threads/{thread_id}/stream")
async def join_thread_stream(
    record: ThreadDep,
    services: ServicesDep,
    stream_mode: Annotated[list[str], Query(max_length=8)] = [],  # noqa: B006  # what langgraph-sdk sends
    stream_modes: Annotated[str | None, Query(max_length=64)] = None,  # what the Agent Server reads
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """The events of the thread's runs from now on (with Last-Event-ID, its resumable runs' after that
    event first), until the client leaves: langgraph_api's join_thread_stream."""
    modes = [mode.strip() for value in [*stream_mode, stream_modes or ""] for mode in value.split(",") if mode.strip()]
    if unknown := [mode for mode in modes if mode not in THREAD_STREAM_MODES]:
        raise InvalidInput(f"Invalid stream mode: {unknown[0]}")
    if last_event_id is not None and not last_event_id.isdigit():
        raise InvalidInput("Invalid last-event-id: must be an event ID this service sent")
    after = int(last_event_id) if last_event_id else None
    events = services.runs.join_thread(
        record.thread_id, after, modes or ["run_modes"], services.settings.stream_heartbeat_seconds
    )
    return StreamingResponse(sse_frames(events, with_ids=True), media_type="text/event-stream", headers=NO_STORE)


@router.get("/threads/{thread_id}/state")
async def get_state(
    record: ThreadDep, services: ServicesDep, subgraphs: bool = False, select: StateSelectQuery = None
) -> dict[str, Any]:
    return await _state(services, record, thread_config(record.thread_id), subgraphs, select)


@router.post("/threads/{thread_id}/state")
async def update_state(body: StateUpdate, record: ThreadDep, services: ServicesDep) -> dict[str, Any]:
    """Write `values` as if `as_node` had run, and answer with the new checkpoint."""
    if (await services.runs.thread_status(record.thread_id)).busy:
        raise Conflict("the thread has a run pending or running; update its state once the run ends")
    checkpoint = body.checkpoint or (CheckpointRef(checkpoint_id=body.checkpoint_id) if body.checkpoint_id else None)
    graph = services.graphs.for_thread(record.metadata)
    check_update(graph, body.values, body.as_node)
    if checkpoint is not None and checkpoint.checkpoint_id:
        # An unknown checkpoint is a 404, not a fresh branch from nothing (one read; the update reads it again).
        if await services.checkpointer.aget_tuple(thread_config(record.thread_id, checkpoint)) is None:
            raise NotFound("Checkpoint not found")
    try:
        config = await graph.aupdate_state(
            thread_config(record.thread_id, checkpoint), body.values, as_node=body.as_node
        )
    except InvalidUpdateError as exc:
        raise InvalidInput(f"cannot apply this update: {exc}") from exc
    await services.registry.touch(record.thread_id, record.user_id)
    if await services.runs.thread_joined(record.thread_id):
        # Read back only for a thread stream's readers: what the Agent Server publishes as 'state_update'.
        await services.runs.publish_state_update(record.thread_id, thread_state(await graph.aget_state(config)))
    written = checkpoint_ref(config)
    # With the Agent Server's deprecated copies of it, which older clients still read.
    return {"checkpoint": written, "configurable": written, "checkpoint_id": config["configurable"]["checkpoint_id"]}


@router.post("/threads/{thread_id}/state/checkpoint")
async def get_state_at(body: StateAtCheckpoint, record: ThreadDep, services: ServicesDep) -> dict[str, Any]:
    return await _state(services, record, thread_config(record.thread_id, body.checkpoint), body.subgraphs, body.select)


@router.get("/threads/{thread_id}/state/{checkpoint_id}")
async def get_state_at_checkpoint_id(
    record: ThreadDep,
    services: ServicesDep,
    checkpoint_id: Annotated[StorableText, Path(max_length=256)],
    subgraphs: bool = False,
    select: StateSelectQuery = None,
) -> dict[str, Any]:
    config = thread_config(record.thread_id, CheckpointRef(checkpoint_id=checkpoint_id))
    return await _state(services, record, config, subgraphs, select)


@router.get("/threads/{thread_id}/history")
async def get_history_by_query(
    record: ThreadDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1,
    before: Annotated[str | None, Query(max_length=256)] = None,
) -> list[dict[str, Any]]:
    """The Agent Server's GET form of the history: `limit` states (one by default, as there), older than the
    checkpoint `before` names."""
    return await get_history(HistoryQuery(limit=limit, before=before), record, services)


@router.post("/threads/{thread_id}/history")
async def get_history(body: HistoryQuery, record: ThreadDep, services: ServicesDep) -> list[dict[str, Any]]:
    before = body.before
    if isinstance(before, str):
        before = CheckpointRef(checkpoint_id=before)
    before_config = thread_config(record.thread_id, before) if before is not None else None
    return [
        select_fields(thread_state(snapshot), body.select)
        async for snapshot in services.graphs.for_thread(record.metadata).aget_state_history(
            thread_config(record.thread_id, body.checkpoint),
            filter=body.metadata,
            before=before_config,
            limit=body.limit,
        )
    ]
