"""Store routes, as langgraph-sdk's `client.store` calls them: items and namespaces of the caller's memory.

Every call goes through the caller's UserStore (platform/memory.py): namespaces are relative to the caller,
so no request can name another user's items.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, Literal, TypeVar

import psycopg
from fastapi import APIRouter, Query, Response
from langgraph.store.base import InvalidNamespaceError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..errors import InvalidInput
from ..platform.core.fields import StorableText, StoreJsonObject
from ..platform.memory import UserStore, item_body
from .deps import ServicesDep, UserDep

router = APIRouter(tags=["store"])

T = TypeVar("T")

# The store joins labels with '.', so a label may not hold one; LangGraph's own check says the same.
Label = Annotated[StorableText, StringConstraints(min_length=1, max_length=256, pattern=r"^[^.]+$")]
Namespace = Annotated[list[Label], Field(max_length=32)]
Key = Annotated[StorableText, StringConstraints(min_length=1, max_length=1024)]


class ItemPut(BaseModel):
    model_config = ConfigDict(extra="ignore")
    namespace: Annotated[list[Label], Field(min_length=1, max_length=32)]
    key: Key
    value: StoreJsonObject
    index: Literal[False] | list[Annotated[str, StringConstraints(max_length=256)]] | None = None
    # Minutes; PostgreSQL reads it as an interval, which takes neither exponents nor a century.
    ttl: float | None = Field(default=None, ge=0.001, le=525_600 * 99)


class ItemDelete(BaseModel):
    model_config = ConfigDict(extra="ignore")
    namespace: Annotated[list[Label], Field(min_length=1, max_length=32)]
    key: Key


class ItemSearch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    namespace_prefix: Namespace = Field(default_factory=list)
    filter: StoreJsonObject | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=1_000_000_000)
    query: StorableText | None = Field(default=None, max_length=10_000)
    refresh_ttl: bool | None = None


class NamespaceSearch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # "*" matches any one label in a prefix or suffix.
    prefix: Namespace | None = None
    suffix: Namespace | None = None
    max_depth: int | None = Field(default=None, ge=1, le=32)
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=1_000_000_000)


async def _checked(call: Awaitable[T]) -> T:
    """The store's own refusals (a namespace it will not take, a filter operator it does not know) are 422s."""
    try:
        return await call
    except (InvalidNamespaceError, ValueError, psycopg.DataError) as exc:
        raise InvalidInput(str(exc)) from exc


@router.put("/store/items", status_code=204)
async def put_item(body: ItemPut, services: ServicesDep, user: UserDep) -> Response:
    store = UserStore(services.store, user)
    ttl: dict[str, Any] = {"ttl": body.ttl} if "ttl" in body.model_fields_set else {}
    await _checked(store.aput(tuple(body.namespace), body.key, body.value, index=body.index, **ttl))
    return Response(status_code=204)


@router.get("/store/items")
async def get_item(
    services: ServicesDep,
    user: UserDep,
    key: Annotated[StorableText, Query(min_length=1, max_length=1024)],
    namespace: Annotated[StorableText, Query(max_length=8192)] = "",
    refresh_ttl: bool | None = None,
) -> dict[str, Any] | None:
    labels = tuple(namespace.split(".")) if namespace else ()
    item = await _checked(UserStore(services.store, user).aget(labels, key, refresh_ttl=refresh_ttl))
    return item_body(item)


@router.delete("/store/items", status_code=204)
async def delete_item(body: ItemDelete, services: ServicesDep, user: UserDep) -> Response:
    await _checked(UserStore(services.store, user).adelete(tuple(body.namespace), body.key))
    return Response(status_code=204)


@router.post("/store/items/search")
async def search_items(body: ItemSearch, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    items = await _checked(
        UserStore(services.store, user).asearch(
            tuple(body.namespace_prefix),
            query=body.query,
            filter=body.filter,
            limit=body.limit,
            offset=body.offset,
            refresh_ttl=body.refresh_ttl,
        )
    )
    return {"items": [item.dict() for item in items]}


@router.post("/store/namespaces")
async def list_namespaces(body: NamespaceSearch, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    namespaces = await _checked(
        UserStore(services.store, user).alist_namespaces(
            prefix=tuple(body.prefix) if body.prefix else None,
            suffix=tuple(body.suffix) if body.suffix else None,
            max_depth=body.max_depth,
            limit=body.limit,
            offset=body.offset,
        )
    )
    return {"namespaces": [list(namespace) for namespace in namespaces]}
