"""Cron routes, as langgraph-sdk's `client.crons` calls them.

A cron keeps the run fields of its create request as its payload, checked here as the run they will make;
each tick (platform/crons.py) has them admitted as POST /threads/{id}/runs (a thread's cron) or POST /runs
(a stateless cron, on a new thread of the cron's user each time) would.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..errors import InvalidInput
from ..platform.core.fields import JsonObject, StorableText
from ..platform.crons import CronSortBy, next_run
from ..platform.runs.admission import RunCreate
from ..platform.services import Services
from .deps import ServicesDep, ThreadDep, UserDep

router = APIRouter(tags=["crons"])

Schedule = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Timezone = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# Fields of a cron itself; everything else in a create request is the payload of its runs.
CRON_FIELDS = {"schedule", "timezone", "end_time", "enabled", "on_run_completed"}


class CronCreate(RunCreate):
    schedule: Schedule
    timezone: Timezone | None = None
    end_time: datetime | None = None
    enabled: bool = True
    on_run_completed: Literal["delete", "keep"] | None = None


class CronUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    schedule: Schedule | None = None
    timezone: Timezone | None = None
    end_time: datetime | None = None
    enabled: bool | None = None
    on_run_completed: Literal["delete", "keep"] | None = None
    # Run fields: replace the payload's.
    input: dict[str, Any] | None = None
    metadata: JsonObject | None = None
    config: JsonObject | None = None
    interrupt_before: list[StorableText] | Literal["*"] | None = None
    interrupt_after: list[StorableText] | Literal["*"] | None = None
    stream_mode: Any = None
    stream_subgraphs: bool | None = None
    stream_resumable: bool | None = None
    durability: Literal["sync", "async", "exit"] | None = None


class CronSearch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    assistant_id: StorableText | None = Field(default=None, max_length=256)
    thread_id: StorableText | None = Field(default=None, max_length=1024)
    enabled: bool | None = None
    metadata: JsonObject | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=1_000_000_000)
    sort_by: CronSortBy = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    select: list[str] | None = None


class CronCount(BaseModel):
    model_config = ConfigDict(extra="ignore")
    assistant_id: StorableText | None = Field(default=None, max_length=256)
    thread_id: StorableText | None = Field(default=None, max_length=1024)
    metadata: JsonObject | None = None


def _utc(when: datetime | None) -> datetime | None:
    """A naive end_time is read as UTC."""
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def _name_cron(payload: dict[str, Any], cron_id: uuid.UUID) -> dict[str, Any]:
    """As the Agent Server keeps a payload: its runs' config names the cron (config.configurable.cron_id)."""
    config = payload["config"] = dict(payload.get("config") or {})
    config["configurable"] = {**(config.get("configurable") or {}), "cron_id": str(cron_id)}
    return payload


async def _create_cron(services: Services, user: str, body: CronCreate, thread_id: str | None) -> dict[str, Any]:
    cron_id = uuid.uuid4()
    # The request as it came, schedule included, as the Agent Server keeps it (runs ignore the cron's own fields).
    payload = _name_cron(body.model_dump(mode="json", exclude_unset=True, exclude=CRON_FIELDS - {"schedule"}), cron_id)
    payload["assistant_id"] = body.assistant_id
    await services.admission.validate(user, RunCreate.model_validate(payload), thread_id)
    cron = await services.crons.create(
        {
            "cron_id": cron_id,
            "user_id": user,
            "thread_id": thread_id,
            "assistant_id": body.assistant_id,
            "schedule": body.schedule,
            "timezone": body.timezone,
            "end_time": _utc(body.end_time),
            "enabled": body.enabled,
            "on_run_completed": None if thread_id else body.on_run_completed or "delete",
            "payload": payload,
            "metadata": body.metadata or {},
            "next_run_date": next_run(body.schedule, body.timezone, datetime.now(UTC)),
        }
    )
    return cron.body()


@router.post("/threads/{thread_id}/runs/crons")
async def create_thread_cron(body: CronCreate, record: ThreadDep, services: ServicesDep, user: UserDep) -> Any:
    return await _create_cron(services, user, body, record.thread_id)


@router.post("/runs/crons")
async def create_cron(body: CronCreate, services: ServicesDep, user: UserDep) -> Any:
    return await _create_cron(services, user, body, None)


@router.get("/runs/crons/{cron_id}")
async def get_cron(cron_id: uuid.UUID, services: ServicesDep, user: UserDep) -> Any:
    return (await services.crons.get(cron_id, user)).body()


@router.patch("/runs/crons/{cron_id}")
async def update_cron(cron_id: uuid.UUID, body: CronUpdate, services: ServicesDep, user: UserDep) -> Any:
    cron = await services.crons.get(cron_id, user)
    given = body.model_fields_set
    if not given:
        raise InvalidInput("send at least one field to change")
    payload = dict(cron.payload)
    payload.update(body.model_dump(mode="json", include=given - CRON_FIELDS))
    schedule = body.schedule if "schedule" in given and body.schedule else cron.schedule
    payload = _name_cron({**payload, "schedule": schedule}, cron.cron_id)
    await services.admission.validate(user, RunCreate.model_validate(payload), cron.thread_id)
    timezone = body.timezone if "timezone" in given else cron.timezone
    enabled = cron.enabled if body.enabled is None else body.enabled
    next_time = cron.next_run_date
    if given & {"schedule", "timezone", "enabled"}:
        # A new schedule, or a cron enabled again, counts from now: no burst of ticks missed meanwhile.
        next_time = next_run(schedule, timezone, datetime.now(UTC))
    updated = await services.crons.update(
        {
            "cron_id": cron.cron_id,
            "user_id": user,
            "schedule": schedule,
            "timezone": timezone,
            "end_time": _utc(body.end_time) if "end_time" in given else cron.end_time,
            "enabled": enabled,
            "on_run_completed": (body.on_run_completed if cron.thread_id is None else None) or cron.on_run_completed,
            "payload": payload,
            "metadata": body.metadata if body.metadata is not None else cron.metadata,
            "next_run_date": next_time,
        }
    )
    return updated.body()


@router.delete("/runs/crons/{cron_id}", status_code=204)
async def delete_cron(cron_id: uuid.UUID, services: ServicesDep, user: UserDep) -> Response:
    await services.crons.delete(cron_id, user)
    return Response(status_code=204)


@router.post("/runs/crons/search")
async def search_crons(body: CronSearch, services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    filters = {**body.model_dump(include={"assistant_id", "thread_id", "enabled", "metadata"}), "user_id": user}
    if body.thread_id is not None:
        filters["thread_id"] = services.thread_ids.stored_id(user, body.thread_id)
    crons = await services.crons.search(filters, body.sort_by, body.sort_order == "desc", body.limit, body.offset)
    bodies = [cron.body() for cron in crons]
    if body.select:
        return [{k: v for k, v in item.items() if k in body.select} for item in bodies]
    return bodies


@router.post("/runs/crons/count")
async def count_crons(body: CronCount, services: ServicesDep, user: UserDep) -> int:
    filters = {**body.model_dump(), "user_id": user}
    if body.thread_id is not None:
        filters["thread_id"] = services.thread_ids.stored_id(user, body.thread_id)
    return await services.crons.count(filters)
