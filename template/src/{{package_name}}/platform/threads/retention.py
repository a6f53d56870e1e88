"""Thread TTL and checkpoint retention (docs/operations.md): the sweeper and the prune the API calls.

A thread's TTL counts from its last update (creation, a run, a PATCH). When it runs out, the thread is
deleted with its checkpoints, runs and objects ("delete"), or its checkpoints are pruned to the latest
("keep_latest"), which leaves a thread that answers get_state and takes the next turn. Threads without a
TTL of their own use the service default, if one is set.

A thread with a run pending or running is never touched: each thread is taken under the same transaction
lock that run creation takes, so no run can start on it until its prune has committed, and in the same
order (that lock, then the thread's row).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver
from psycopg import AsyncConnection

from ..core.database import Pool
from ..core.metrics import Metrics
from ..core.migrations import apply_migrations

log = logging.getLogger(__name__)

Strategy = Literal["delete", "keep_latest"]
LEASE = "retention-sweeper"

MIGRATIONS = (
    "ALTER TABLE service_threads ADD COLUMN IF NOT EXISTS ttl_minutes DOUBLE PRECISION",
    "ALTER TABLE service_threads ADD COLUMN IF NOT EXISTS ttl_strategy TEXT",
    # When keep_latest last pruned the thread: it is due again only after a later update.
    "ALTER TABLE service_threads ADD COLUMN IF NOT EXISTS pruned_at TIMESTAMPTZ",
)

SET_TTL = """
    UPDATE service_threads SET ttl_minutes = %s, ttl_strategy = %s, updated_at = now()
    WHERE thread_id = %s AND user_id = %s
"""
SELECT_TTL = """
    SELECT COALESCE(ttl_strategy, %(strategy)s) AS strategy, COALESCE(ttl_minutes, %(minutes)s) AS ttl_minutes,
        updated_at + make_interval(secs => COALESCE(ttl_minutes, %(minutes)s) * 60) AS expires_at
    FROM service_threads WHERE thread_id = %(thread_id)s AND user_id = %(user)s
"""
DUE = """
    COALESCE(ttl_minutes, %(minutes)s) IS NOT NULL
    AND updated_at + make_interval(secs => COALESCE(ttl_minutes, %(minutes)s) * 60) < now()
    AND (pruned_at IS NULL OR pruned_at < updated_at)
"""
# Due threads, oldest expiry first: candidates only, each taken (and checked again) by LOCK_DUE_THREAD.
SELECT_DUE = f"""
    SELECT thread_id, COALESCE(ttl_strategy, %(strategy)s) AS strategy,
        extract(epoch FROM now() - (updated_at + make_interval(secs => COALESCE(ttl_minutes, %(minutes)s) * 60)))
            AS overdue_seconds
    FROM service_threads WHERE {DUE}
    ORDER BY updated_at + make_interval(secs => COALESCE(ttl_minutes, %(minutes)s) * 60)
    LIMIT %(limit)s
"""
# A thread's row, after its run lock: still due, and not held by another writer (a PATCH, a delete).
LOCK_DUE_THREAD = f"SELECT 1 FROM service_threads WHERE thread_id = %(thread_id)s AND {DUE} FOR UPDATE SKIP LOCKED"
SELECT_OWNED = "SELECT thread_id FROM service_threads WHERE thread_id = ANY(%s) AND user_id = %s ORDER BY thread_id"
LOCK_OWNED_THREAD = "SELECT 1 FROM service_threads WHERE thread_id = %(thread_id)s FOR UPDATE SKIP LOCKED"
COUNT_CHECKPOINTS = "SELECT count(*) AS n FROM checkpoints WHERE thread_id = ANY(%s)"
DELETE_THREADS = "DELETE FROM service_threads WHERE thread_id = ANY(%s)"
MARK_PRUNED = "UPDATE service_threads SET pruned_at = now() WHERE thread_id = ANY(%s)"


class RunLocks(Protocol):
    """What retention needs of the runs (platform/runs/store.py RunStore): their thread lock, and their rows
    gone with a deleted thread. A protocol: threads sit below runs, which import the registry."""

    async def lock_idle_thread(self, conn: AsyncConnection[Any], thread_id: str) -> bool: ...

    async def delete_finished_of_thread(self, thread_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    default_ttl_minutes: float | None = None
    default_strategy: Strategy = "delete"
    sweep_seconds: float = 60.0
    batch_size: int = 100
    max_batches: int = 10


@dataclass(eq=False)
class Retention:
    _pool: Pool
    _checkpointer: BaseCheckpointSaver[str]
    _runs: RunLocks
    _metrics: Metrics
    settings: RetentionSettings

    async def setup(self) -> None:
        """After the thread registry's own migrations: these add its TTL columns."""
        await apply_migrations(self._pool, MIGRATIONS)

    def _defaults(self) -> dict[str, Any]:
        return {"strategy": self.settings.default_strategy, "minutes": self.settings.default_ttl_minutes}

    async def set_ttl(self, thread_id: str, user_id: str, minutes: float, strategy: Strategy) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(SET_TTL, (minutes, strategy, thread_id, user_id))

    async def ttl_of(self, thread_id: str, user_id: str) -> dict[str, Any] | None:
        """The Agent Server's ThreadTTLInfo, or None for a thread that never expires."""
        async with self._pool.connection() as conn:
            params = {**self._defaults(), "thread_id": thread_id, "user": user_id}
            row = await (await conn.execute(SELECT_TTL, params)).fetchone()
        if row is None or row["ttl_minutes"] is None:
            return None
        return {"strategy": row["strategy"], "ttl_minutes": row["ttl_minutes"], "expires_at": row["expires_at"]}

    async def prune(self, thread_ids: Sequence[str], user_id: str, strategy: Strategy) -> int:
        """Prune the user's own threads among `thread_ids` now; others and busy threads are skipped."""
        async with self._pool.connection() as conn, conn.transaction():
            rows = await (await conn.execute(SELECT_OWNED, (list(thread_ids), user_id))).fetchall()
            idle = await self._take(conn, [row["thread_id"] for row in rows], LOCK_OWNED_THREAD, {})
            await self._apply(conn, idle, strategy)
        return len(idle)

    async def tick(self) -> None:
        """The sweeper loop's tick (platform/core/leases.py LeasedLoop)."""
        if handled := await self.sweep():
            log.info("retention: swept %d expired threads", handled)

    async def sweep(self) -> int:
        """One tick of the sweeper: up to max_batches batches of due threads; returns how many it handled."""
        started = time.perf_counter()
        handled = 0
        lag = 0.0
        try:
            for batch in range(self.settings.max_batches):
                async with self._pool.connection() as conn, conn.transaction():
                    params = {**self._defaults(), "limit": self.settings.batch_size}
                    rows = await (await conn.execute(SELECT_DUE, params)).fetchall()
                    if batch == 0 and rows:
                        lag = float(rows[0]["overdue_seconds"])
                    due = [row["thread_id"] for row in rows]
                    idle = set(await self._take(conn, due, LOCK_DUE_THREAD, params))
                    for strategy in ("delete", "keep_latest"):
                        chosen = [r["thread_id"] for r in rows if r["thread_id"] in idle and r["strategy"] == strategy]
                        await self._apply(conn, chosen, strategy)
                handled += len(idle)
                if len(rows) < self.settings.batch_size:
                    break
        finally:
            self._metrics.retention_lag.set(lag)
            self._metrics.retention_sweep_duration.observe(time.perf_counter() - started)
        return handled

    async def _take(
        self, conn: AsyncConnection[Any], thread_ids: list[str], lock_row: str, params: dict[str, Any]
    ) -> list[str]:
        """The threads among `thread_ids` that no run holds or waits on, each locked until the transaction
        ends in the order run admission locks them: the runs' thread lock first (RunStore.lock_idle_thread),
        then the thread's row (`lock_row`, which may check it again). Either lock is only tried: a thread
        busy either way is skipped, and a skipped thread's row is never held while the batch is pruned."""
        taken = []
        for thread_id in thread_ids:
            if not await self._runs.lock_idle_thread(conn, thread_id):
                continue
            if await (await conn.execute(lock_row, {**params, "thread_id": thread_id})).fetchone() is not None:
                taken.append(thread_id)
        return taken

    async def _apply(self, conn: AsyncConnection[Any], thread_ids: list[str], strategy: str) -> None:
        if not thread_ids:
            return
        before = await (await conn.execute(COUNT_CHECKPOINTS, (thread_ids,))).fetchone()
        # The saver's own connections: its rows are not locked by this transaction, the threads' rows are.
        await self._checkpointer.aprune(thread_ids, strategy=strategy)
        if strategy == "delete":
            for thread_id in thread_ids:
                await self._runs.delete_finished_of_thread(thread_id)
            await conn.execute(DELETE_THREADS, (thread_ids,))
            after = None
        else:
            await conn.execute(MARK_PRUNED, (thread_ids,))
            after = await (await conn.execute(COUNT_CHECKPOINTS, (thread_ids,))).fetchone()
        pruned = int(before["n"] if before else 0) - int(after["n"] if after else 0)
        self._metrics.retention_threads.labels(strategy).inc(len(thread_ids))
        self._metrics.retention_checkpoints.labels(strategy).inc(pruned)
