"""Run routes, as the Agent Server names them: background runs, wait, stream, join, cancel, stateless runs.

Every run, whatever route made it, is a row executed by the run workers (platform/runs): these routes
parse the request, have it admitted (platform/runs/admission.py), and then wait for it or stream its events
(framed by sse.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..errors import Conflict, InvalidInput, NotFound, Unavailable
from ..platform.core.database import DATABASE_OUTAGES
from ..platform.core.fields import StorableText
from ..platform.runs import CancelAction, RunRecord, RunStatus
from ..platform.runs.admission import RunCreate
from ..platform.services import Services
from .deps import RunThreadDep, ServicesDep, ThreadDep, UserDep
from .serialize import FastJSONResponse, dump_json
from .sse import sse_frames

router = APIRouter(tags=["runs"])

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


def _sse(
    services: Services, run: RunRecord, last_event_id: str | None, cancel_on_disconnect: bool, from_start: bool
) -> StreamingResponse:
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    events = services.runs.stream(run, after, services.settings.stream_heartbeat_seconds, from_start)
    on_disconnect = partial(_cancel_after_disconnect, services, run) if cancel_on_disconnect else None
    # As the Agent Server: an event ID only where a reconnect can resume from it.
    body = sse_frames(events, bool(run.kwargs.get("stream_resumable")), on_disconnect)
    return StreamingResponse(
        body, media_type="text/event-stream", headers={**_locations(run, "/stream"), "Cache-Control": "no-store"}
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


async def _owned_run(services: Services, thread_id: str, run_id: uuid.UUID) -> RunRecord:
    """A run of the caller's thread (whose ID's signature names the caller), the thread itself maybe gone."""
    run = await services.runs.get(thread_id, run_id)
    if run is None:
        raise NotFound("Run not found")
    return run


# Runs on a thread


@router.post("/threads/{thread_id}/runs")
async def create_run(thread_id: str, body: RunCreate, services: ServicesDep, user: UserDep, response: Response) -> Any:
    run = await services.admission.on_thread(user, thread_id, body)
    response.headers["Content-Location"] = f"/threads/{run.thread_id}/runs/{run.run_id}"
    return run.body()


@router.post("/threads/{thread_id}/runs/wait")
async def wait_run(thread_id: str, body: RunCreate, services: ServicesDep, user: UserDep) -> Response:
    run = await services.admission.on_thread(user, thread_id, body, follow="wait")
    return await _wait_response(services, run, body.on_disconnect == "cancel")


@router.post("/threads/{thread_id}/runs/stream")
async def stream_run(thread_id: str, body: RunCreate, services: ServicesDep, user: UserDep) -> StreamingResponse:
    run = await services.admission.on_thread(user, thread_id, body, follow="stream")
    return _sse(services, run, None, body.on_disconnect == "cancel", from_start=True)


@router.get("/threads/{thread_id}/runs")
async def list_runs(
    record: ThreadDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    status: RunStatus | None = None,
) -> list[dict[str, Any]]:
    return [run.body() for run in await services.runs.list_for_thread(record.thread_id, status, limit, offset)]


@router.get("/threads/{thread_id}/runs/{run_id}")
async def get_run(run_id: uuid.UUID, thread_id: RunThreadDep, services: ServicesDep) -> dict[str, Any]:
    return (await _owned_run(services, thread_id, run_id)).body()


@router.delete("/threads/{thread_id}/runs/{run_id}", status_code=204)
async def delete_run(run_id: uuid.UUID, record: ThreadDep, services: ServicesDep) -> Response:
    run = await _owned_run(services, record.thread_id, run_id)
    if not run.done:
        raise Conflict("the run is still pending or running: cancel it first")
    await services.runs.delete(record.thread_id, run_id)
    return Response(status_code=204)


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join_run(
    run_id: uuid.UUID, thread_id: RunThreadDep, services: ServicesDep, cancel_on_disconnect: bool = False
) -> Response:
    return await _wait_response(services, await _owned_run(services, thread_id, run_id), cancel_on_disconnect)


@router.get("/threads/{thread_id}/runs/{run_id}/stream")
async def join_run_stream(
    run_id: uuid.UUID,
    thread_id: RunThreadDep,
    services: ServicesDep,
    cancel_on_disconnect: bool = False,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    run = await _owned_run(services, thread_id, run_id)
    return _sse(services, run, last_event_id, cancel_on_disconnect, from_start=False)


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(
    run_id: uuid.UUID,
    thread_id: RunThreadDep,
    services: ServicesDep,
    wait: bool = False,
    action: CancelAction = "interrupt",
) -> Response:
    run = await _owned_run(services, thread_id, run_id)
    await services.runs.cancel([run.run_id], action)
    if not wait:
        return Response(status_code=202)
    return await _wait_response(services, run, cancel_on_disconnect=False)


# Stateless runs: each on a new thread of the caller's, deleted when the run ends unless on_completion=keep.


@router.post("/runs")
async def create_stateless_run(body: RunCreate, services: ServicesDep, user: UserDep, response: Response) -> Any:
    run = await services.admission.stateless(user, body)
    response.headers["Content-Location"] = f"/runs/{run.run_id}"
    return run.body()


@router.post("/runs/wait")
async def wait_stateless_run(body: RunCreate, services: ServicesDep, user: UserDep) -> Response:
    run = await services.admission.stateless(user, body, follow="wait")
    return await _wait_response(services, run, body.on_disconnect == "cancel")


@router.post("/runs/stream")
async def stream_stateless_run(body: RunCreate, services: ServicesDep, user: UserDep) -> StreamingResponse:
    run = await services.admission.stateless(user, body, follow="stream")
    return _sse(services, run, None, body.on_disconnect == "cancel", from_start=True)


@router.post("/runs/batch")
async def create_stateless_batch(
    body: Annotated[list[RunCreate], Field(min_length=1, max_length=100)], services: ServicesDep, user: UserDep
) -> list[dict[str, Any]]:
    runs = []
    for item in body:
        runs.append(await services.admission.stateless(user, item))
    return [run.body() for run in runs]


@router.post("/runs/cancel", status_code=204)
async def cancel_runs(
    body: RunsCancel, services: ServicesDep, user: UserDep, action: CancelAction = "interrupt"
) -> Response:
    statuses = CANCEL_STATUSES[body.status or "all"]
    if body.thread_id is None and body.run_ids is None and body.status is None:
        raise InvalidInput("name a thread_id, run_ids or a status")
    thread_id = None if body.thread_id is None else services.thread_ids.stored_id(user, body.thread_id)
    run_ids = await services.runs.cancellable(user, statuses, thread_id, body.run_ids)
    await services.runs.cancel(run_ids, action)
    return Response(status_code=204)
