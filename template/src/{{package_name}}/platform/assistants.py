"""Assistants: named, versioned configurations (config, context, metadata) of the service's graphs.

Ownership: an assistant a user creates is theirs alone; to anyone else it does not exist (404). Each graph's
own assistant is built in, read-only and visible to every user; it is addressed by the graph's ID or by
the UUID LangGraph's server derives from it (uuid5), so clients written for that server find it.
Every update writes a new version; `set_latest` points the assistant at any earlier one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from ..errors import Conflict, InvalidInput, NotFound
from .core.database import Pool
from .core.migrations import apply_migrations
from .graphs import DEFAULT_NAME, Graphs

# LangGraph's server names the assistant of graph G uuid5(NAMESPACE_GRAPH, G).
NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
SYSTEM_USER = "system"
_BUILTIN_CREATED = datetime(2025, 1, 1, tzinfo=UTC)

MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS service_assistants (
        assistant_id UUID PRIMARY KEY,
        user_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS service_assistant_versions (
        assistant_id UUID NOT NULL REFERENCES service_assistants (assistant_id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        graph_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        config JSONB NOT NULL,
        context JSONB NOT NULL,
        metadata JSONB NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (assistant_id, version)
    )
    """,
    "CREATE INDEX IF NOT EXISTS service_assistants_user_idx ON service_assistants (user_id, created_at DESC)",
)

_CURRENT = """
    SELECT a.assistant_id, a.user_id, a.version, a.created_at, a.updated_at,
        v.graph_id, v.name, v.description, v.config, v.context, v.metadata
    FROM service_assistants a
    JOIN service_assistant_versions v ON v.assistant_id = a.assistant_id AND v.version = a.version
"""
SELECT_ASSISTANT = _CURRENT + " WHERE a.assistant_id = %s AND a.user_id = %s"
_MATCHING = """
    WHERE a.user_id = %(user)s AND (%(graph_id)s::text IS NULL OR v.graph_id = %(graph_id)s)
      AND v.metadata @> %(metadata)s AND (%(name)s::text IS NULL OR v.name = %(name)s)
"""
# The Agent Server's sort_by values, and their columns; ties go by assistant ID.
SORT_COLUMNS = {
    "assistant_id": ("a.assistant_id", "uuid"),
    "graph_id": ("v.graph_id", "text"),
    "name": ("v.name", "text"),
    "created_at": ("a.created_at", "timestamptz"),
    "updated_at": ("a.updated_at", "timestamptz"),
}
SortBy = Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"]
SortOrder = Literal["asc", "desc"]


def search_sql(sort_by: SortBy, sort_order: SortOrder) -> str:
    column, _ = SORT_COLUMNS[sort_by]  # a closed set of names, never the caller's text
    return (
        _CURRENT
        + _MATCHING
        + f"ORDER BY {column} {sort_order.upper()}, a.assistant_id LIMIT %(limit)s OFFSET %(offset)s"
    )


def rows_before_sql(sort_by: SortBy, sort_order: SortOrder) -> str:
    """How many matching rows sort before a (value, assistant ID) in search_sql's order."""
    column, type_ = SORT_COLUMNS[sort_by]
    before = "<" if sort_order == "asc" else ">"
    value = f"%(value)s::{type_}"
    where = f" AND ({column} {before} {value} OR ({column} = {value} AND a.assistant_id < %(id)s::uuid))"
    return COUNT_ASSISTANTS + where


COUNT_ASSISTANTS = (
    """
    SELECT count(*) AS n FROM service_assistants a
    JOIN service_assistant_versions v ON v.assistant_id = a.assistant_id AND v.version = a.version
"""
    + _MATCHING
)
INSERT_ASSISTANT = """
    INSERT INTO service_assistants (assistant_id, user_id, version) VALUES (%s, %s, 1)
    ON CONFLICT (assistant_id) DO NOTHING RETURNING assistant_id
"""
INSERT_VERSION = """
    INSERT INTO service_assistant_versions (assistant_id, version, graph_id, name, description, config, context,
        metadata)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
"""
# Locks the assistant row: concurrent updates get consecutive versions instead of a key clash.
LOCK_ASSISTANT = "SELECT 1 FROM service_assistants WHERE assistant_id = %s AND user_id = %s FOR UPDATE"
NEXT_VERSION = "SELECT max(version) + 1 AS version FROM service_assistant_versions WHERE assistant_id = %s"
SET_VERSION = "UPDATE service_assistants SET version = %s, updated_at = now() WHERE assistant_id = %s"
VERSION_EXISTS = "SELECT 1 FROM service_assistant_versions WHERE assistant_id = %s AND version = %s"
SELECT_VERSIONS = """
    SELECT v.assistant_id, v.version, v.graph_id, v.name, v.description, v.config, v.context, v.metadata,
        v.created_at
    FROM service_assistant_versions v JOIN service_assistants a ON a.assistant_id = v.assistant_id
    WHERE v.assistant_id = %s AND a.user_id = %s AND v.metadata @> %s
    ORDER BY v.version DESC LIMIT %s OFFSET %s
"""
DELETE_ASSISTANT = "DELETE FROM service_assistants WHERE assistant_id = %s AND user_id = %s"


def builtin_assistant_id(graph_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE_GRAPH, graph_id))


async def setup_assistants(pool: Pool) -> None:
    await apply_migrations(pool, MIGRATIONS)


@dataclass(frozen=True, slots=True)
class Assistant:
    assistant_id: str
    user_id: str
    graph_id: str
    version: int
    name: str
    description: str | None
    config: dict[str, Any]
    context: dict[str, Any]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    def body(self) -> dict[str, Any]:
        """The Agent Server's Assistant object."""
        return {
            "assistant_id": self.assistant_id,
            "graph_id": self.graph_id,
            "name": self.name,
            "description": self.description,
            "config": self.config,
            "context": self.context,
            "metadata": self.metadata,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def version_body(self) -> dict[str, Any]:
        body = self.body()
        del body["updated_at"]
        return body


@dataclass(frozen=True, slots=True)
class AssistantFilter:
    graph_id: str | None = None
    metadata: dict[str, Any] | None = None
    name: str | None = None

    def matches(self, assistant: Assistant) -> bool:
        metadata = self.metadata or {}
        return (
            self.graph_id in (None, assistant.graph_id)
            and self.name in (None, assistant.name)
            and all(assistant.metadata.get(k) == v for k, v in metadata.items())
        )

    def params(self, user: str) -> dict[str, Any]:
        return {"user": user, "graph_id": self.graph_id, "metadata": Jsonb(self.metadata or {}), "name": self.name}


def _from_row(row: dict[str, Any]) -> Assistant:
    return Assistant(
        assistant_id=str(row["assistant_id"]),
        user_id=row.get("user_id", ""),
        graph_id=row["graph_id"],
        version=row["version"],
        name=row["name"],
        description=row["description"],
        config=row["config"],
        context=row["context"],
        metadata=row["metadata"],
        created_at=row["created_at"],
        updated_at=row.get("updated_at", row["created_at"]),
    )


async def _read(conn: AsyncConnection[DictRow], key: uuid.UUID, user: str) -> Assistant:
    """The assistant just written in this transaction, as the caller sees it."""
    row = await (await conn.execute(SELECT_ASSISTANT, (key, user))).fetchone()
    assert row is not None
    return _from_row(row)


def _uuid(assistant_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(assistant_id)
    except ValueError as exc:
        raise InvalidInput("assistant_id must be a UUID") from exc


def _builtin(graph_id: str, name: str, description: str | None) -> Assistant:
    return Assistant(
        assistant_id=builtin_assistant_id(graph_id),
        user_id=SYSTEM_USER,
        graph_id=graph_id,
        version=1,
        name=name,
        description=description,
        config={},
        context={},
        metadata={"created_by": "system"},
        created_at=_BUILTIN_CREATED,
        updated_at=_BUILTIN_CREATED,
    )


def _ordered_before(a: Assistant, b: Assistant, sort_by: SortBy, sort_order: SortOrder) -> bool:
    """Whether `a` sorts before `b` as search_sql orders rows: by the column, then by assistant ID ascending."""
    key_a, key_b = getattr(a, sort_by), getattr(b, sort_by)
    if key_a != key_b:
        return bool(key_a < key_b) if sort_order == "asc" else bool(key_a > key_b)
    return a.assistant_id < b.assistant_id


class AssistantStore:
    def __init__(self, pool: Pool, graphs: Graphs) -> None:
        self._pool = pool
        self._graphs = graphs
        # One per graph, named as langgraph-api names it: the graph's own name, else its ID.
        self.builtins = [
            _builtin(graph_id, graph.name if graph.name != DEFAULT_NAME else graph_id, graphs.descriptions[graph_id])
            for graph_id, graph in graphs.items()
        ]
        self._by_key = {key: a for a in self.builtins for key in (a.graph_id, a.assistant_id)}

    def check_graph(self, graph_id: str) -> None:
        self._graphs.check(graph_id)

    def is_builtin(self, assistant: Assistant) -> bool:
        return self._by_key.get(assistant.assistant_id) is assistant

    async def get(self, assistant_id: str, user: str) -> Assistant:
        """The assistant `user` may use: the built-in one (by graph name or UUID) or one of their own."""
        if (builtin := self._by_key.get(assistant_id)) is not None:
            return builtin
        try:
            key = uuid.UUID(assistant_id)
        except ValueError:
            # Neither a graph's ID nor a UUID: no assistant by that name, as for an unknown UUID.
            raise NotFound("Assistant not found") from None
        async with self._pool.connection() as conn:
            row = await (await conn.execute(SELECT_ASSISTANT, (key, user))).fetchone()
        if row is None:
            raise NotFound("Assistant not found")
        return _from_row(row)

    async def owned(self, assistant_id: str, user: str) -> Assistant:
        """One of the user's own assistants, which they may change; the built-in one is read-only."""
        assistant = await self.get(assistant_id, user)
        if self.is_builtin(assistant):
            raise Conflict("the graph's built-in assistant is read-only; create an assistant to configure it")
        return assistant

    async def create(
        self,
        user: str,
        *,
        assistant_id: str | None,
        graph_id: str,
        name: str | None,
        description: str | None,
        config: dict[str, Any],
        context: dict[str, Any],
        metadata: dict[str, Any],
        if_exists: str,
    ) -> Assistant:
        self.check_graph(graph_id)
        key = _uuid(assistant_id) if assistant_id is not None else uuid.uuid4()
        if str(key) in self._by_key:
            raise Conflict("Assistant already exists")
        async with self._pool.connection() as conn, conn.transaction():
            inserted = await (await conn.execute(INSERT_ASSISTANT, (key, user))).fetchone()
            if inserted is None:
                existing = await (await conn.execute(SELECT_ASSISTANT, (key, user))).fetchone()
                # Another user's assistant is never returned, whatever if_exists says.
                if existing is not None and if_exists == "do_nothing":
                    return _from_row(existing)
                raise Conflict("Assistant already exists")
            await conn.execute(
                INSERT_VERSION,
                (key, 1, graph_id, name or "Untitled", description, Jsonb(config), Jsonb(context), Jsonb(metadata)),
            )
            return await _read(conn, key, user)

    async def update(
        self,
        assistant_id: str,
        user: str,
        *,
        graph_id: str | None,
        name: str | None,
        description: str | None,
        config: dict[str, Any] | None,
        context: dict[str, Any] | None,
        metadata: dict[str, Any] | None,
    ) -> Assistant:
        """A new version from the current one: given fields replace, metadata merges (as the Agent Server)."""
        if graph_id is not None:
            self.check_graph(graph_id)
        key = _uuid(assistant_id)
        async with self._pool.connection() as conn, conn.transaction():
            if await (await conn.execute(LOCK_ASSISTANT, (key, user))).fetchone() is None:
                raise NotFound("Assistant not found")
            current = await (await conn.execute(SELECT_ASSISTANT, (key, user))).fetchone()
            assert current is not None
            latest = await (await conn.execute(NEXT_VERSION, (key,))).fetchone()
            assert latest is not None
            version = latest["version"]
            await conn.execute(
                INSERT_VERSION,
                (
                    key,
                    version,
                    graph_id or current["graph_id"],
                    name if name is not None else current["name"],
                    description if description is not None else current["description"],
                    Jsonb(config if config is not None else current["config"]),
                    Jsonb(context if context is not None else current["context"]),
                    Jsonb({**current["metadata"], **(metadata or {})}),
                ),
            )
            await conn.execute(SET_VERSION, (version, key))
            return await _read(conn, key, user)

    async def delete(self, assistant_id: str, user: str) -> None:
        await self.owned(assistant_id, user)
        async with self._pool.connection() as conn:
            await conn.execute(DELETE_ASSISTANT, (_uuid(assistant_id), user))

    async def versions(
        self, assistant_id: str, user: str, metadata: dict[str, Any] | None, limit: int, offset: int
    ) -> list[Assistant]:
        assistant = await self.get(assistant_id, user)
        if self.is_builtin(assistant):
            return [assistant] if offset == 0 and AssistantFilter(metadata=metadata).matches(assistant) else []
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                SELECT_VERSIONS, (_uuid(assistant.assistant_id), user, Jsonb(metadata or {}), limit, offset)
            )
            return [_from_row(row) for row in await cur.fetchall()]

    async def set_latest(self, assistant_id: str, user: str, version: int) -> Assistant:
        key = _uuid((await self.owned(assistant_id, user)).assistant_id)
        async with self._pool.connection() as conn, conn.transaction():
            if await (await conn.execute(LOCK_ASSISTANT, (key, user))).fetchone() is None:
                raise NotFound("Assistant not found")
            if await (await conn.execute(VERSION_EXISTS, (key, version))).fetchone() is None:
                raise NotFound(f"Assistant has no version {version}")
            await conn.execute(SET_VERSION, (version, key))
            return await _read(conn, key, user)

    async def search(
        self,
        user: str,
        where: AssistantFilter,
        limit: int,
        offset: int,
        sort_by: SortBy | None = None,
        sort_order: SortOrder = "desc",
    ) -> tuple[list[Assistant], int | None]:
        """One page, and the next page's offset (None on the last page). Without sort_by, the built-in
        assistants come first (in langgraph.json's order) and the user's newest after them; with it, each
        built-in takes its place in the order."""
        if where.graph_id is not None:
            self.check_graph(where.graph_id)  # as the Agent Server: a graph it does not serve is a 404
        params: dict[str, Any] = where.params(user)
        matching = [a for a in self.builtins if where.matches(a)]
        # Each matching built-in's place in the whole ordered result: the user's rows and built-ins before it.
        positions: list[tuple[int, Assistant]] = []
        async with self._pool.connection() as conn:
            for index, builtin in enumerate(matching):
                if sort_by is None:
                    positions.append((index, builtin))
                    continue
                before = {**params, "value": getattr(builtin, sort_by), "id": builtin.assistant_id}
                row = await (await conn.execute(rows_before_sql(sort_by, sort_order), before)).fetchone()
                others = sum(_ordered_before(other, builtin, sort_by, sort_order) for other in matching)
                positions.append(((int(row["n"]) if row else 0) + others, builtin))
            positions.sort(key=lambda placed: placed[0])
            # Read one more than asked for, to know whether another page follows.
            wanted = limit + 1
            skip = offset - sum(1 for position, _ in positions if position < offset)
            sql = search_sql(sort_by or "created_at", sort_order if sort_by else "desc")
            rows = await (await conn.execute(sql, {**params, "limit": wanted, "offset": skip})).fetchall()
        found = [_from_row(row) for row in rows]
        # In ascending order, each at its place: the ones before it on this page are in already.
        for position, builtin in positions:
            if offset <= position < offset + wanted:
                found.insert(position - offset, builtin)
        return found[:limit], (offset + limit if len(found) > limit else None)

    async def count(self, user: str, where: AssistantFilter) -> int:
        if where.graph_id is not None:
            self.check_graph(where.graph_id)
        async with self._pool.connection() as conn:
            row = await (await conn.execute(COUNT_ASSISTANTS, where.params(user))).fetchone()
        assert row is not None
        return int(row["n"]) + sum(1 for builtin in self.builtins if where.matches(builtin))
