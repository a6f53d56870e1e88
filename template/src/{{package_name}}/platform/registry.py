"""The thread registry: who owns each thread and its metadata (checkpoints live in LangGraph's tables)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from .database import Pool
from .migrations import apply_migrations

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
)

INSERT_THREAD = """
    INSERT INTO service_threads (thread_id, user_id, session_type, metadata)
    VALUES (%s, %s, %s, %s)
    RETURNING thread_id, user_id, session_type, metadata, created_at, updated_at
"""
SELECT_THREAD = """
    SELECT thread_id, user_id, session_type, metadata, created_at, updated_at
    FROM service_threads WHERE thread_id = %s AND user_id = %s
"""
# A new run on the thread: read and touch it in one statement.
TOUCH_THREAD = """
    UPDATE service_threads SET updated_at = now() WHERE thread_id = %s AND user_id = %s
    RETURNING thread_id, user_id, session_type, metadata, created_at, updated_at
"""
DELETE_THREAD = "DELETE FROM service_threads WHERE thread_id = %s AND user_id = %s"


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    thread_id: str
    user_id: str
    session_type: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ThreadRegistry:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def setup(self) -> None:
        """Run under platform.migrations.migration_lock, like every subsystem's migrations."""
        await apply_migrations(self._pool, MIGRATIONS)

    async def create(self, thread_id: str, user_id: str, session_type: str, metadata: dict[str, Any]) -> ThreadRecord:
        async with self._pool.connection() as conn:
            cur = await conn.execute(INSERT_THREAD, (thread_id, user_id, session_type, Jsonb(metadata)))
            row = await cur.fetchone()
        assert row is not None
        return ThreadRecord(**row)

    async def get(self, thread_id: str, user_id: str) -> ThreadRecord | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(SELECT_THREAD, (thread_id, user_id))
            row = await cur.fetchone()
        return ThreadRecord(**row) if row is not None else None

    async def touch(self, thread_id: str, user_id: str) -> ThreadRecord | None:
        """The thread as `get` returns it, with updated_at set to now."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(TOUCH_THREAD, (thread_id, user_id))
            row = await cur.fetchone()
        return ThreadRecord(**row) if row is not None else None

    async def delete(self, thread_id: str, user_id: str) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute(DELETE_THREAD, (thread_id, user_id))
            return cur.rowcount > 0
