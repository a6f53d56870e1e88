"""One cross-process lock around every subsystem's migrations, so replicas that start together all come up."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection, errors

from .database import Pool

log = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = "service_migrations"
# Which subsystems' migrations, as they are now, ran: a replica that starts while others serve (a restart,
# a second replica) skips them. Run again, DDL takes its table lock even when IF NOT EXISTS finds nothing
# to do, and a serving transaction that read the table and then writes it deadlocks with it: PostgreSQL
# cancels one side, often the request.
APPLIED = """
    CREATE TABLE IF NOT EXISTS service_migrations (
        digest TEXT PRIMARY KEY,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
"""
# New migrations still meet serving transactions (a rolling deploy): they wait for a lock no longer than
# this, less than PostgreSQL's deadlock_timeout (1 s), then give way and try again.
MIGRATION_LOCK_TIMEOUT = "500ms"
MIGRATION_ATTEMPTS = 20


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
    """One subsystem's migrations in one transaction, unless they ran as they are; every setup() calls this
    under migration_lock."""
    digest = hashlib.sha256("\0".join(statements).encode()).hexdigest()
    for attempt in range(1, MIGRATION_ATTEMPTS + 1):
        try:
            async with pool.connection() as conn, conn.transaction():
                await conn.execute(APPLIED)
                if await (
                    await conn.execute("SELECT 1 FROM service_migrations WHERE digest = %s", (digest,))
                ).fetchone():
                    return
                await conn.execute(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'")
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO service_migrations (digest) VALUES (%s)", (digest,))
            return
        except (errors.LockNotAvailable, errors.DeadlockDetected):
            if attempt == MIGRATION_ATTEMPTS:
                raise
            log.info("migrations gave way to a serving transaction (attempt %d); again", attempt)
            await asyncio.sleep(0.1 * attempt)
