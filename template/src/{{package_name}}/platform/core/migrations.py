"""One cross-process lock around every subsystem's migrations, so replicas that start together all come up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection

from .database import Pool

MIGRATION_LOCK_KEY = "service_migrations"


async def _try_lock(conn: AsyncConnection[Any]) -> bool:
    row = await (await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (MIGRATION_LOCK_KEY,))).fetchone()
    return bool(row and row[0])


@asynccontextmanager
async def migration_lock(conninfo: str, poll_seconds: float = 0.2) -> AsyncIterator[None]:
    """Hold the lock while the body runs every subsystem's setup(); other replicas wait, then find nothing to do.

    A session-level lock on a connection of its own: the checkpointer's setup() commits on pooled
    connections, and a pool of one connection must not deadlock against the lock's holder.
    """
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        # Polled, never waited for: a session blocked in pg_advisory_lock is a running transaction, and the
        # checkpointer's CREATE INDEX CONCURRENTLY waits for every running transaction, so the lock's
        # holder would wait for its own waiters, forever.
        locked = await _try_lock(conn)
        while not locked:
            await asyncio.sleep(poll_seconds)
            locked = await _try_lock(conn)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (MIGRATION_LOCK_KEY,))


async def apply_migrations(pool: Pool, statements: Sequence[str]) -> None:
    """One subsystem's migrations in one transaction; every setup() calls this under migration_lock."""
    async with pool.connection() as conn, conn.transaction():
        for statement in statements:
            await conn.execute(statement)
