"""The thread protocol of langgraph-sdk 0.4's `client.threads.stream` (the Agent Server's v2 event streaming):
POST /threads/{thread_id}/commands and the SSE stream POST /threads/{thread_id}/stream/events.

A command names the thread by the caller's UUID (the SDK mints one) or a server-issued ID; run.start creates
the caller's own thread of that name on first use. The stream replays the thread's runs from the beginning
and follows it until the client leaves; its request body is its filter. THREAD_PROTOCOL_ENABLED=false: 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..platform.thread_protocol.commands import ThreadCommands, error
from ..platform.thread_protocol.events import ProtocolEvents, Subscription, supported_channel
from ..platform.thread_protocol.follower import ThreadFollower
from .deps import RunThreadDep, ServicesDep, ThreadDep, UserDep
from .sse import HEARTBEAT

router = APIRouter(tags=["threads"])


class EventStreamRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    channels: list[str] = Field(min_length=1, max_length=64)
    namespaces: list[list[Annotated[str, Field(max_length=1024)]]] | None = Field(default=None, max_length=64)
    depth: int | None = Field(default=None, ge=0)
    since: int | None = Field(default=None, ge=0)

    @field_validator("channels")
    @classmethod
    def known_channels(cls, channels: list[str]) -> list[str]:
        if unknown := [c for c in channels if not supported_channel(c)]:
            raise ValueError(
                f"unsupported channels {unknown[:5]}; allowed: values, updates, messages, tools, "
                "lifecycle, input, checkpoints, tasks, custom, custom:<name>"
            )
        return channels


def thread_commands(services: ServicesDep) -> ThreadCommands:
    return ThreadCommands(
        services.admission, services.registry, services.thread_ids, services.assistants, services.graphs
    )


def _answer(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@router.post("/threads/{thread_id}/commands")
async def command(
    thread_id: RunThreadDep,
    request: Request,
    user: UserDep,
    commands: Annotated[ThreadCommands, Depends(thread_commands)],
) -> Response:
    # The envelope is parsed by hand: a malformed one is answered in the protocol's shape, not FastAPI's.
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _answer(error(None, "invalid_argument", "the command is not JSON"), 400)
    command_id = payload.get("id") if isinstance(payload, dict) else None
    if type(command_id) is not int or command_id < 0 or not isinstance(payload.get("method"), str):
        message = "Protocol commands must include a non-negative integer id and a string method."
        return _answer(error(command_id if type(command_id) is int else None, "invalid_argument", message), 400)
    # The path's ID as the caller wrote it: admission derives the stored ID (a UUID names the caller's own).
    public_id = request.path_params["thread_id"]
    return _answer(await commands.handle(user, public_id, command_id, payload["method"], payload.get("params", {})))


async def _frames(follower: ThreadFollower, subscription: Subscription, since: int | None) -> AsyncIterator[bytes]:
    events = ProtocolEvents()
    async for item in follower.follow():
        if item is None:
            yield HEARTBEAT
            continue
        for event in events.translate(item):
            if (since is None or event["seq"] > since) and subscription.matches(event):
                data = orjson.dumps(event).decode()
                yield f"event: {event['method']}\r\ndata: {data}\r\nid: {event['seq']}\r\n\r\n".encode()


@router.post("/threads/{thread_id}/stream/events")
async def stream_events(body: EventStreamRequest, record: ThreadDep, services: ServicesDep) -> StreamingResponse:
    subscription = Subscription(frozenset(body.channels), body.namespaces or None, body.depth)
    follower = ThreadFollower(services.runs, record.thread_id, services.settings.stream_heartbeat_seconds)
    return StreamingResponse(
        _frames(follower, subscription, body.since),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )
