"""Assistant routes, as the Agent Server names them (platform/assistants.py: ownership and versions)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal
from weakref import WeakKeyDictionary

from fastapi import APIRouter, Query, Response
from langgraph.pregel import Pregel
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from ..errors import InvalidInput
from ..platform.assistants import Assistant, AssistantFilter, SortBy, SortOrder
from ..platform.core.fields import JsonObject, StorableText
from .deps import ServicesDep, UserDep
from .serialize import select_fields

log = logging.getLogger(__name__)
router = APIRouter(tags=["assistants"])
_SCHEMAS: WeakKeyDictionary[Pregel, dict[str, Any]] = WeakKeyDictionary()

MAX_NAME_CHARS = 256
AssistantId = Annotated[str, Field(max_length=256)]


AssistantField = Literal[
    "assistant_id",
    "graph_id",
    "name",
    "description",
    "config",
    "context",
    "metadata",
    "version",
    "created_at",
    "updated_at",
]


class AssistantSearch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    graph_id: StorableText | None = Field(default=None, max_length=256)
    name: StorableText | None = Field(default=None, max_length=MAX_NAME_CHARS)
    metadata: JsonObject | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=1_000_000_000)
    sort_by: SortBy | None = None
    sort_order: SortOrder = "desc"
    select: list[AssistantField] | None = Field(default=None, max_length=16)


class AssistantCount(BaseModel):
    model_config = ConfigDict(extra="ignore")
    graph_id: StorableText | None = Field(default=None, max_length=256)
    name: StorableText | None = Field(default=None, max_length=MAX_NAME_CHARS)
    metadata: JsonObject | None = None


class AssistantCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    assistant_id: AssistantId | None = None
    graph_id: StorableText = Field(max_length=256)
    config: JsonObject = Field(default_factory=dict)
    context: JsonObject = Field(default_factory=dict)
    metadata: JsonObject = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"
    name: StorableText | None = Field(default=None, max_length=MAX_NAME_CHARS)
    description: StorableText | None = Field(default=None, max_length=4096)


class AssistantPatch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    graph_id: StorableText | None = Field(default=None, max_length=256)
    config: JsonObject | None = None
    context: JsonObject | None = None
    metadata: JsonObject | None = None
    name: StorableText | None = Field(default=None, max_length=MAX_NAME_CHARS)
    description: StorableText | None = Field(default=None, max_length=4096)


class AssistantVersionsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    metadata: JsonObject | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=1_000_000_000)


class AssistantLatest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: int = Field(ge=1, le=2**31 - 1)


def _schema(name: str, build: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
    # A graph whose types pydantic cannot describe still answers, without that schema (as the Agent Server).
    try:
        return build()
    except Exception as exc:
        log.warning("no %s schema for the graph: %s", name, exc)
        return None


def _state_schema(graph: Pregel) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key in graph.stream_channels_list:
        update_type = getattr(graph.channels[key], "UpdateType", Any)
        try:
            TypeAdapter(update_type).json_schema()
            fields[key] = (update_type, None)
        except Exception:
            fields[key] = (Any, None)
    return create_model(graph.get_name("State"), **fields).model_json_schema()


def _config_schema(graph: Pregel) -> dict[str, Any]:
    """The `configurable` part only, as the Agent Server returns it; {} for a graph without a config type."""
    config_type = getattr(graph, "config_type", None)
    return TypeAdapter(config_type).json_schema() if config_type is not None else {}


def graph_schemas(graph: Pregel) -> dict[str, Any]:
    # Building them takes pydantic a fifth of a second, and a compiled graph never changes: once per graph.
    if (known := _SCHEMAS.get(graph)) is not None:
        return known
    _SCHEMAS[graph] = schemas = {
        "input_schema": _schema("input", graph.get_input_jsonschema),
        "output_schema": _schema("output", graph.get_output_jsonschema),
        "state_schema": _schema("state", lambda: _state_schema(graph)),
        "config_schema": _schema("config", lambda: _config_schema(graph)),
        "context_schema": _schema("context", graph.get_context_jsonschema),
    }
    return schemas


def _xray(value: str | None) -> bool | int:
    if value in (None, "", "false", "False"):
        return False
    if value in ("true", "True"):
        return True
    assert value is not None
    if not value.isdigit() or int(value) <= 0 or int(value) > 100:
        raise InvalidInput("xray must be true, false or a positive depth")
    return int(value)


# What a create or a patch may set on an assistant, as the Agent Server's fields.
ASSISTANT_FIELDS = {"graph_id", "name", "description", "config", "context", "metadata"}


@router.post("/assistants")
async def create_assistant(body: AssistantCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    assistant = await services.assistants.create(
        user, **body.model_dump(include={*ASSISTANT_FIELDS, "assistant_id", "if_exists"})
    )
    return assistant.body()


@router.post("/assistants/search")
async def search_assistants(
    body: AssistantSearch, services: ServicesDep, user: UserDep, response: Response
) -> list[dict[str, Any]]:
    where = AssistantFilter(graph_id=body.graph_id, metadata=body.metadata, name=body.name)
    found, next_offset = await services.assistants.search(
        user, where, body.limit, body.offset, body.sort_by, body.sort_order
    )
    if next_offset is not None:
        response.headers["X-Pagination-Next"] = str(next_offset)
    return [select_fields(assistant.body(), list(body.select or ())) for assistant in found]


@router.post("/assistants/count")
async def count_assistants(body: AssistantCount, services: ServicesDep, user: UserDep) -> int:
    return await services.assistants.count(
        user, AssistantFilter(graph_id=body.graph_id, metadata=body.metadata, name=body.name)
    )


@router.get("/assistants/{assistant_id}")
async def get_assistant(assistant_id: AssistantId, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return (await services.assistants.get(assistant_id, user)).body()


@router.patch("/assistants/{assistant_id}")
async def patch_assistant(
    assistant_id: AssistantId, body: AssistantPatch, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    current: Assistant = await services.assistants.owned(assistant_id, user)
    updated = await services.assistants.update(current.assistant_id, user, **body.model_dump(include=ASSISTANT_FIELDS))
    return updated.body()


@router.delete("/assistants/{assistant_id}", status_code=204)
async def delete_assistant(assistant_id: AssistantId, services: ServicesDep, user: UserDep) -> Response:
    await services.assistants.delete(assistant_id, user)
    return Response(status_code=204)


@router.post("/assistants/{assistant_id}/versions")
async def assistant_versions(
    assistant_id: AssistantId, body: AssistantVersionsQuery, services: ServicesDep, user: UserDep
) -> list[dict[str, Any]]:
    versions = await services.assistants.versions(assistant_id, user, body.metadata, body.limit, body.offset)
    return [version.version_body() for version in versions]


@router.post("/assistants/{assistant_id}/latest")
async def set_latest_version(
    assistant_id: AssistantId, body: AssistantLatest, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return (await services.assistants.set_latest(assistant_id, user, body.version)).body()


@router.get("/assistants/{assistant_id}/graph")
async def assistant_graph(
    assistant_id: AssistantId,
    services: ServicesDep,
    user: UserDep,
    xray: Annotated[str | None, Query(max_length=8)] = None,
) -> dict[str, Any]:
    assistant = await services.assistants.get(assistant_id, user)
    graph = services.graphs.get_graph(assistant.graph_id)
    drawable = (await graph.aget_graph(xray=_xray(xray))).to_json()
    # Node data names Python classes: implementation detail the Agent Server leaves out too.
    for node in drawable.get("nodes", []):
        if isinstance(data := node.get("data"), dict):
            data.pop("id", None)
    return drawable


@router.get("/assistants/{assistant_id}/schemas")
async def assistant_schemas(assistant_id: AssistantId, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    assistant = await services.assistants.get(assistant_id, user)
    return {"graph_id": assistant.graph_id, **graph_schemas(services.graphs.get_graph(assistant.graph_id))}


@router.get("/assistants/{assistant_id}/subgraphs")
@router.get("/assistants/{assistant_id}/subgraphs/{namespace}")
async def assistant_subgraphs(
    assistant_id: AssistantId,
    services: ServicesDep,
    user: UserDep,
    namespace: str | None = None,
    recurse: bool = False,
) -> dict[str, Any]:
    assistant = await services.assistants.get(assistant_id, user)
    return {
        ns: graph_schemas(subgraph)
        async for ns, subgraph in services.graphs.get_graph(assistant.graph_id).aget_subgraphs(
            namespace=namespace, recurse=recurse
        )
        if isinstance(subgraph, Pregel)
    }
