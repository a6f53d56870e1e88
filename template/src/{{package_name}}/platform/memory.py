"""Long-term memory: LangGraph's own AsyncPostgresStore on the service's pool, scoped per user.

Every namespace is stored under a first label that names its user (`UserStore`). The API and every run's
graph only ever see a user's store through that wrapper, so neither a request nor a prompt-injected tool
call can name another user's namespace: there is no namespace it could write to get out of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchOp,
    TTLConfig,
)
from langgraph.store.postgres import AsyncPostgresStore
from langgraph.store.postgres.base import PostgresIndexConfig

from ..settings import Settings
from .core.database import Pool
from .core.metrics import Metrics


def open_store(pool: Pool, settings: Settings) -> AsyncPostgresStore:
    """The store on the service's pool; call setup() under the migration lock before using it."""
    ttl: TTLConfig = {
        "default_ttl": settings.store_ttl_minutes,
        "refresh_on_read": settings.store_ttl_refresh_on_read,
        # An expired item is gone for readers at once, not only once the sweeper deleted it.
        "omit_expired": True,
    }
    index: PostgresIndexConfig | None = None
    if settings.store_index_embed:
        index = {
            "dims": settings.store_index_dims,
            "embed": settings.store_index_embed,
            "fields": settings.store_index_fields,
        }
    return AsyncPostgresStore(pool, index=index, ttl=ttl)


async def sweep_expired(store: AsyncPostgresStore, metrics: Metrics) -> None:
    """One pass of the store's own TTL sweep; a LeasedLoop runs it on one replica at a time."""
    metrics.store_items_expired.inc(await store.sweep_ttl())


def user_label(user_id: str) -> str:
    """The root label of a user's namespaces. Quoted, with '.' quoted too: the store joins labels with '.',
    so user "a.b" must not become the two labels of user "a"'s namespace ("b", ...)."""
    return "user:" + quote(user_id, safe="").replace(".", "%2E")


class UserStore(BaseStore):
    """One user's view of the store: namespaces in and out are relative to the user's root label."""

    supports_ttl = True

    def __init__(self, store: BaseStore, user_id: str) -> None:
        self.store = store
        self.root = user_label(user_id)
        # BaseStore.aput/aget apply the default TTL and refresh policy from this before building ops.
        self.ttl_config = getattr(store, "ttl_config", None)

    def _scoped(self, op: Op) -> Op:
        if isinstance(op, (GetOp, PutOp)):
            return op._replace(namespace=(self.root, *op.namespace))
        if isinstance(op, SearchOp):
            return op._replace(namespace_prefix=(self.root, *op.namespace_prefix))
        conditions = [
            MatchCondition("prefix", (self.root, *c.path)) if c.match_type == "prefix" else c
            for c in op.match_conditions or ()
        ]
        if not any(c.match_type == "prefix" for c in conditions):
            conditions.insert(0, MatchCondition("prefix", (self.root,)))
        depth = None if op.max_depth is None else op.max_depth + 1
        return op._replace(match_conditions=tuple(conditions), max_depth=depth)

    def _unscoped(self, result: Result) -> Result:
        if isinstance(result, Item):
            result.namespace = self._strip(result.namespace)
        elif isinstance(result, list):
            for entry in result:
                if isinstance(entry, Item):
                    entry.namespace = self._strip(entry.namespace)
            if result and isinstance(result[0], tuple):
                return [self._strip(namespace) for namespace in result]
        return result

    def _strip(self, namespace: tuple[str, ...]) -> tuple[str, ...]:
        if not namespace or namespace[0] != self.root:
            raise RuntimeError("the store returned a namespace outside the caller's")
        return tuple(namespace[1:])

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return [self._unscoped(r) for r in self.store.batch([self._scoped(op) for op in ops])]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return [self._unscoped(r) for r in await self.store.abatch([self._scoped(op) for op in ops])]


def item_body(item: Item | None) -> dict[str, Any] | None:
    """An item (or search hit) as the Agent Server returns it."""
    return None if item is None else item.dict()
