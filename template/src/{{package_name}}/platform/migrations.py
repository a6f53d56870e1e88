"""One cross-process lock around every subsystem's migrations, so replicas that start together all come up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection

MIGRATION_LOCK_KEY = "service_migrations"


@asynccontextmanager
async def migration_lock(conninfo: str) -> AsyncIterator[None]:
    """Hold the lock while the body runs every subsystem's setup(); other replicas wait, then find nothing to do.

    A session-level lock on a connection of its own: the checkpointer's setup() commits on pooled
    connections, and a pool of one connection must not deadlock against the lock's holder.
    """
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (MIGRATION_LOCK_KEY,))
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (MIGRATION_LOCK_KEY,))
