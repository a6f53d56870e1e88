"""The thread registry: who owns each thread and its metadata (checkpoints live in LangGraph's tables)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from ..core.database import Pool
from ..core.migrations import apply_migrations

MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS service_threads (
        thread_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        session_type TEXT NOT NULL,
        metadata JSONB NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX IF NOT EXISTS service_threads_user_idx ON service_threads (user_id, created_at DESC)",
    # As the Agent Server's: what its runs' assistants and configs left on the thread (THREAD_CONFIG_OF_RUN).
    "ALTER TABLE service_threads ADD COLUMN IF NOT EXISTS config JSONB NOT NULL DEFAULT '{}'",
)

INSERT_THREAD = """
    INSERT INTO service_threads (thread_id, user_id, session_type, metadata, config)
    VALUES (%s, %s, %s, %s, %s)
    RETURNING thread_id, user_id, session_type, metadata, config, created_at, updated_at
"""
SELECT_THREAD = """
    SELECT thread_id, user_id, session_type, metadata, config, created_at, updated_at
    FROM service_threads WHERE thread_id = %s AND user_id = %s
"""
# Merges metadata and touches the thread: a PATCH, and a new run (which stamps its graph and assistant).
UPDATE_METADATA = """
    UPDATE service_threads SET metadata = metadata || %s, updated_at = now()
    WHERE thread_id = %s AND user_id = %s
    RETURNING thread_id, user_id, session_type, metadata, config, created_at, updated_at
"""
# A search never leaves the caller's rows, whatever else it filters on.
SEARCH_THREADS = """
    SELECT thread_id, user_id, session_type, metadata, config, created_at, updated_at FROM service_threads
    WHERE user_id = %(user)s AND metadata @> %(metadata)s
      AND (%(ids)s::text[] IS NULL OR thread_id = ANY(%(ids)s))
    ORDER BY {column} {direction}, thread_id {direction}
"""
COUNT_THREADS = """
    SELECT count(*) AS n FROM service_threads WHERE user_id = %(user)s AND metadata @> %(metadata)s
"""
SortColumn = Literal["thread_id", "created_at", "updated_at"]
DELETE_THREAD = "DELETE FROM service_threads WHERE thread_id = %s AND user_id = %s"


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    thread_id: str
    user_id: str
    session_type: str
    metadata: dict[str, Any]
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(eq=False)
class ThreadRegistry:
    """Every read and write of service_threads but retention's (retention.py), which adds its TTL columns."""

    _pool: Pool

    async def setup(self) -> None:
        """Run under platform.core.migrations.migration_lock, like every subsystem's migrations."""
        await apply_migrations(self._pool, MIGRATIONS)

    async def create(
        self,
        thread_id: str,
        user_id: str,
        session_type: str,
        metadata: dict[str, Any],
        config: dict[str, Any] | None = None,
    ) -> ThreadRecord:
        async with self._pool.connection() as conn:
            params = (thread_id, user_id, session_type, Jsonb(metadata), Jsonb(config or {}))
            cur = await conn.execute(INSERT_THREAD, params)
            row = await cur.fetchone()
        assert row is not None
        return ThreadRecord(**row)

    async def get(self, thread_id: str, user_id: str) -> ThreadRecord | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(SELECT_THREAD, (thread_id, user_id))
            row = await cur.fetchone()
        return ThreadRecord(**row) if row is not None else None

    async def search(
        self,
        user_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        ids: list[str] | None = None,
        sort_by: SortColumn = "created_at",
        descending: bool = True,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ThreadRecord]:
        """The user's threads whose metadata contains `metadata` (jsonb @>), optionally among `ids`."""
        query = sql.SQL(SEARCH_THREADS).format(
            column=sql.Identifier(sort_by), direction=sql.SQL("DESC" if descending else "ASC")
        )
        if limit is not None:
            query += sql.SQL(" LIMIT {} OFFSET {}").format(limit, offset)
        params = {"user": user_id, "metadata": Jsonb(metadata or {}), "ids": ids}
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return [ThreadRecord(**row) for row in await cur.fetchall()]

    async def count(self, user_id: str, metadata: dict[str, Any] | None = None) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(COUNT_THREADS, {"user": user_id, "metadata": Jsonb(metadata or {})})
            row = await cur.fetchone()
        assert row is not None
        return int(row["n"])

    async def touch(self, thread_id: str, user_id: str, metadata: dict[str, Any] | None = None) -> ThreadRecord | None:
        """The thread as `get` returns it, with updated_at set to now and `metadata` merged into its own
        (a run stamps its graph and assistant)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(UPDATE_METADATA, (Jsonb(metadata or {}), thread_id, user_id))
            row = await cur.fetchone()
        return ThreadRecord(**row) if row is not None else None

    async def delete(self, thread_id: str, user_id: str, conn: AsyncConnection[Any] | None = None) -> bool:
        """In `conn`'s transaction when given (RunService.forgetting_thread holds the thread's run lock)."""
        if conn is not None:
            return (await conn.execute(DELETE_THREAD, (thread_id, user_id))).rowcount > 0
        async with self._pool.connection() as own:
            return (await own.execute(DELETE_THREAD, (thread_id, user_id))).rowcount > 0
