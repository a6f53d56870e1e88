"""One cross-process lock around every subsystem's migrations, so replicas that start together all come up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from psycopg import AsyncConnection

from .database import Pool

MIGRATION_LOCK_KEY = "service_migrations"


@asynccontextmanager
async def migration_lock(pool: Pool) -> AsyncIterator[None]:
    """Hold the lock while the body runs every subsystem's setup(); other replicas wait, then find nothing to do.

    A session-level lock on a connection of its own: the checkpointer's setup() commits on pooled
    connections, and a pool of one connection must not deadlock against the lock's holder.
    """
    conninfo = cast(str, pool.conninfo)  # open_pool always passes a URL
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (MIGRATION_LOCK_KEY,))
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (MIGRATION_LOCK_KEY,))
