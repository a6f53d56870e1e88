"""Thread routes: the server issues every thread ID, signed and bound to the caller."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, ConfigDict, Field

from ..errors import Conflict, InvalidInput, ThreadNotFound
from ..platform.registry import ThreadRecord
from ..platform.retention import Strategy
from ..platform.services import Services
from ..platform.threads import MAX_THREAD_ID_CHARS, InvalidThreadId
from .deps import ServicesDep, ThreadDep, UserDep
from .fields import JsonObject
from .serialize import jsonable, thread_state

router = APIRouter(tags=["threads"])

MAX_SESSION_TYPE_CHARS = 64


class ThreadTTL(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ttl: float = Field(gt=0, le=100 * 365 * 24 * 60, description="Minutes after the thread's last update.")
    strategy: Strategy = "delete"


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    thread_id: str | None = Field(default=None, max_length=MAX_THREAD_ID_CHARS)
    metadata: JsonObject = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"
    ttl: ThreadTTL | None = None


class ThreadPatch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    metadata: JsonObject | None = None
    ttl: ThreadTTL | None = None


class ThreadPrune(BaseModel):
    model_config = ConfigDict(extra="ignore")
    thread_ids: list[Annotated[str, Field(max_length=MAX_THREAD_ID_CHARS)]] = Field(max_length=1000)
    strategy: Strategy = "delete"


class CheckpointRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    checkpoint_id: str | None = Field(default=None, max_length=256)
    checkpoint_ns: str = Field(default="", max_length=1024)


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    limit: int = Field(default=10, ge=1, le=1000)
    before: str | CheckpointRef | None = None
    metadata: JsonObject | None = None
    checkpoint: CheckpointRef | None = None


def thread_config(thread_id: str, checkpoint: CheckpointRef | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if checkpoint is not None:
        configurable["checkpoint_ns"] = checkpoint.checkpoint_ns
        if checkpoint.checkpoint_id:
            configurable["checkpoint_id"] = checkpoint.checkpoint_id
    return {"configurable": configurable}


async def thread_body(services: Services, record: ThreadRecord) -> dict[str, Any]:
    snapshot = await services.graph.aget_state(thread_config(record.thread_id))
    interrupts = [{"value": jsonable(i.value), "id": i.id} for t in snapshot.tasks for i in t.interrupts]
    # Derived, never stored: a run in flight makes the thread busy, wherever it runs.
    busy, last_status = await services.runs.store.thread_status(record.thread_id)
    status = "busy" if busy else "interrupted" if interrupts else "error" if last_status == "error" else "idle"
    return {
        "thread_id": record.thread_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "metadata": record.metadata,
        "status": status,
        "values": jsonable(snapshot.values),
        "interrupts": {record.thread_id: interrupts} if interrupts else {},
    }


@router.post("/threads")
async def create_thread(body: ThreadCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    session_type = body.metadata.get("session_type", "default")
    if not isinstance(session_type, str) or not session_type or len(session_type) > MAX_SESSION_TYPE_CHARS:
        raise InvalidInput("metadata.session_type must be a non-empty string of at most 64 characters")
    if body.thread_id is None:
        thread_id = services.thread_ids.generate_thread_id(user, session_type)
    else:
        # Clients may only name IDs this server issued to them (idempotent retries).
        try:
            owner = services.thread_ids.owner_of(body.thread_id)
        except InvalidThreadId as exc:
            raise ThreadNotFound() from exc
        if owner != user:
            raise ThreadNotFound()
        thread_id = body.thread_id
        existing = await services.registry.get(thread_id, user)
        if existing is not None:
            if body.if_exists == "do_nothing":
                return await thread_body(services, existing)
            raise Conflict("Thread already exists")
    metadata = {**body.metadata, "session_type": session_type, "user_id": user}
    record = await services.registry.create(thread_id, user, session_type, metadata)
    if body.ttl is not None:
        await services.retention.set_ttl(thread_id, user, body.ttl.ttl, body.ttl.strategy)
    return await thread_body(services, record)


@router.post("/threads/prune")
async def prune_threads(body: ThreadPrune, services: ServicesDep, user: UserDep) -> dict[str, int]:
    """Prune the caller's threads now; others' and unknown IDs are skipped, as are threads with a run in flight."""
    return {"pruned_count": await services.retention.prune(body.thread_ids, user, body.strategy)}


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
    if body.metadata is not None:
        # Who owns the thread and its session type are the server's: the signed ID says so.
        metadata = {**body.metadata, "session_type": record.session_type, "user_id": record.user_id}
        await services.registry.update_metadata(record.thread_id, record.user_id, metadata)
    if body.ttl is not None:
        await services.retention.set_ttl(record.thread_id, record.user_id, body.ttl.ttl, body.ttl.strategy)
    else:
        await services.registry.touch(record.thread_id)
    fresh = await services.registry.get(record.thread_id, record.user_id)
    if fresh is None:
        raise ThreadNotFound()
    return await thread_body(services, fresh)


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(record: ThreadDep, services: ServicesDep) -> Response:
    # Runs first (one still running would write checkpoints again), then checkpoints: a crash in between
    # leaves an empty thread, never orphaned checkpoints.
    await services.runs.forget_thread(record.user_id, record.thread_id)
    await services.checkpointer.adelete_thread(record.thread_id)
    await services.registry.delete(record.thread_id, record.user_id)
    return Response(status_code=204)


@router.get("/threads/{thread_id}/state")
async def get_state(record: ThreadDep, services: ServicesDep) -> dict[str, Any]:
    snapshot = await services.graph.aget_state(thread_config(record.thread_id))
    return thread_state(snapshot)


@router.post("/threads/{thread_id}/history")
async def get_history(body: HistoryQuery, record: ThreadDep, services: ServicesDep) -> list[dict[str, Any]]:
    before = body.before
    if isinstance(before, str):
        before = CheckpointRef(checkpoint_id=before)
    before_config = thread_config(record.thread_id, before) if before is not None else None
    return [
        thread_state(snapshot)
        async for snapshot in services.graph.aget_state_history(
            thread_config(record.thread_id, body.checkpoint),
            filter=body.metadata,
            before=before_config,
            limit=body.limit,
        )
    ]
