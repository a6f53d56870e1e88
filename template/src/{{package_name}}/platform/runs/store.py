"""Runs as rows in PostgreSQL (the SQL is sql.py's): admission, the queue and the lease operations on them.

The database, not process memory, coordinates replicas:
- a worker claims the oldest pending run of a thread with FOR UPDATE SKIP LOCKED;
- a partial unique index allows one `running` run per thread, whichever replica runs it;
- a run's lease is renewed by a heartbeat; any replica's sweeper ends runs whose lease expired.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

import psycopg
from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from ...errors import Conflict, ThreadNotFound, TooManyRequests
from ..checkpointing.latest import Latest
from ..core.database import Pool
from ..core.encoding import fast_jsonb
from ..core.migrations import apply_migrations
from ..threads.registry import UPDATE_METADATA
from .sql import (
    ADMIT_RUN,
    CANCEL_PENDING,
    CHANNEL,
    CLAIM_RUN,
    COUNT_ACTIVE_OF_USER,
    COUNT_BY_STATUS,
    DELETE_FINISHED_OF_THREAD,
    DELETE_FINISHED_TEMPORARY,
    DELETE_PENDING,
    DELETE_RUN,
    EXPIRE_LEASES,
    FINISH_RUN,
    INSERT_RUN,
    JOIN_THREAD,
    LOCK_THREAD,
    LOCK_THREAD_AND_USER,
    MIGRATIONS,
    RENEW_LEASE,
    REQUEST_CANCEL,
    REQUEUE_RUN,
    SELECT_ACTIVE_OF_THREAD,
    SELECT_CANCELLABLE,
    SELECT_OLDEST_PENDING,
    SELECT_RUN,
    SELECT_RUN_BY_ID,
    SELECT_RUNS_OF_THREAD,
    SELECT_THREAD_ACTIVE,
    SELECT_THREAD_STATUS,
    SQLSTATE_NEEDS_CANCEL,
    SQLSTATE_THREAD_BUSY,
    SQLSTATE_THREAD_MISSING,
    SQLSTATE_USER_BUSY,
    TRY_LOCK_THREAD,
    WATCH_RUN,
)

RunStatus = Literal["pending", "running", "success", "error", "timeout", "interrupted"]
MultitaskStrategy = Literal["reject", "enqueue", "interrupt", "rollback"]
CancelAction = Literal["interrupt", "rollback"]
INFLIGHT: tuple[RunStatus, ...] = ("pending", "running")

# What a 429 for too many active runs tells the caller to wait: runs take seconds, not milliseconds.
RETRY_ACTIVE_RUNS_SECONDS = 5


class ThreadActivity(NamedTuple):
    """What a thread's runs say of it: one in flight, and how the latest ended."""

    busy: bool
    last_status: str | None
    last_error: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: uuid.UUID
    thread_id: str
    user_id: str
    assistant_id: str
    status: RunStatus
    multitask_strategy: MultitaskStrategy
    kwargs: dict[str, Any]
    metadata: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    temporary: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    attempt: int
    cancel_reason: str | None
    # Someone waits on another replica than the executing one / reads its stream there (see WATCH_RUN).
    watched: bool = False
    streamed: bool = False

    @property
    def done(self) -> bool:
        return self.status not in INFLIGHT

    def body(self) -> dict[str, Any]:
        """The run as the Agent Server returns it."""
        return {
            "run_id": str(self.run_id),
            "thread_id": self.thread_id,
            "assistant_id": self.assistant_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "status": self.status,
            "metadata": self.metadata,
            "kwargs": self.kwargs,
            "multitask_strategy": self.multitask_strategy,
        }


def _record(row: DictRow) -> RunRecord:
    return RunRecord(**{k: v for k, v in row.items() if k in RunRecord.__slots__})


@dataclass(frozen=True, slots=True)
class Renewal:
    ours: bool
    cancel_reason: str | None
    streamed: bool


@dataclass(frozen=True, slots=True)
class Claim:
    """A replica's offer to execute a new run itself, as a worker would after claiming it."""

    owner: str
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class Claimed:
    run: RunRecord
    queue_seconds: float
    # The thread's newest root checkpoint ID, its pending writes and its parent, when the lease was taken.
    latest_checkpoint: Latest
    # Other runs were pending as it was claimed (perhaps claimable now).
    more_pending: bool


@dataclass(frozen=True, slots=True)
class Admitted:
    run: RunRecord
    # Set when the run was inserted running under the creating replica's lease.
    claimed: Claimed | None


BUSY_MESSAGE = "Thread is already running a task; wait for it or choose another multitask strategy"


def _too_many(active: int, limit: int | None) -> TooManyRequests:
    return TooManyRequests(
        f"this user already has {active} runs pending or running (limit {limit})",
        retry_after=RETRY_ACTIVE_RUNS_SECONDS,
    )


async def notify(conn: AsyncConnection[DictRow], *keys: str) -> None:
    if keys:
        await conn.execute("SELECT pg_notify(%s, key) FROM unnest(%s::text[]) AS key", (CHANNEL, list(keys)))


@dataclass(eq=False)
class RunStore:
    """Every read and write of service_runs; the strategies, the workers and the routers go through it."""

    _pool: Pool

    async def setup(self) -> None:
        """Run under platform.core.migrations.migration_lock, like every subsystem's migrations."""
        await apply_migrations(self._pool, MIGRATIONS)

    async def create(
        self,
        *,
        run_id: uuid.UUID,
        thread_id: str,
        user_id: str,
        assistant_id: str,
        strategy: MultitaskStrategy,
        kwargs: dict[str, Any],
        metadata: dict[str, Any],
        temporary: bool = False,
        after_seconds: float = 0,
        max_user_runs: int | None = None,
        stamp: dict[str, Any] | None = None,
        claim: Claim | None = None,
        watched: bool = False,
        streamed: bool = False,
    ) -> Admitted:
        """Insert a run, applying the multitask strategy to the thread's runs in flight.

        A per-thread transaction lock makes the check-then-insert atomic across replicas, so two
        'reject' runs can never both be accepted, and an interrupted run is cancelled exactly once.
        With `stamp`, the user's thread must exist: it is touched, `stamp` merged into its metadata and, on
        an idle thread, its "config" ({"assistant": ..., "run": ...}) into its config, in the same
        transaction (ThreadNotFound otherwise, and nothing is written).
        With `claim`, a run that can start at once is inserted running under that lease (`Admitted.claimed`);
        otherwise it is pending for the workers. `watched` / `streamed`: the caller will wait for it / read
        its stream, and must be told from afar if another replica runs it.
        """
        params = {
            "run_id": run_id,
            "thread_id": thread_id,
            "user_id": user_id,
            "assistant_id": assistant_id,
            "strategy": strategy,
            "kwargs": fast_jsonb(kwargs),
            "metadata": fast_jsonb(metadata),
            "temporary": temporary,
            "after_seconds": after_seconds,
            "max_user_runs": max_user_runs,
            "stamp": None if stamp is None else Jsonb(stamp),
            "owner": claim.owner if claim else None,
            "lease_seconds": claim.lease_seconds if claim else 0,
            "watched": watched,
            "streamed": streamed,
        }
        try:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(ADMIT_RUN, params)).fetchone()
        except psycopg.Error as exc:
            if exc.sqlstate == SQLSTATE_THREAD_MISSING:
                raise ThreadNotFound() from None
            if exc.sqlstate == SQLSTATE_THREAD_BUSY:
                raise Conflict(BUSY_MESSAGE) from None
            if exc.sqlstate == SQLSTATE_USER_BUSY:
                raise _too_many(int(exc.diag.message_primary or 0), max_user_runs) from None
            if exc.sqlstate != SQLSTATE_NEEDS_CANCEL:
                raise
            return Admitted(await self._create_cancelling(params), None)
        assert row is not None
        run = _record(row)
        if run.status != "running":
            return Admitted(run, None)
        latest = (row["latest_checkpoint_id"], int(row["latest_checkpoint_writes"]), row["latest_checkpoint_parent"])
        return Admitted(run, Claimed(run, 0.0, latest, False))

    async def _create_cancelling(self, params: dict[str, Any]) -> RunRecord:
        """An interrupt or rollback on a busy thread: what is in flight is cancelled in the insert's transaction."""
        thread_id, user_id, max_user_runs = params["thread_id"], params["user_id"], params["max_user_runs"]
        # Pipelined: statements go out together and results are read where a decision needs them.
        async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
            if max_user_runs is None:
                await conn.execute(LOCK_THREAD, (thread_id,))
            else:
                await conn.execute(LOCK_THREAD_AND_USER, (thread_id, user_id))
            # The thread is busy: its config stays as it is (as in service_admit_run), its metadata is stamped.
            stamped = params["stamp"]
            stamp = None if stamped is None else Jsonb({k: v for k, v in stamped.obj.items() if k != "config"})
            touched = None if stamp is None else await conn.execute(UPDATE_METADATA, (stamp, thread_id, user_id))
            cur = await conn.execute(SELECT_ACTIVE_OF_THREAD, (thread_id,))
            inflight = [row["run_id"] for row in await cur.fetchall()]
            if touched is not None and await touched.fetchone() is None:
                raise ThreadNotFound()  # the transaction rolls back: no run, no notification
            if max_user_runs is not None:
                # Runs this one interrupts or rolls back end now, so they do not count against it.
                row = await (await conn.execute(COUNT_ACTIVE_OF_USER, (user_id,))).fetchone()
                if row is not None and row["n"] - len(inflight) >= max_user_runs:
                    raise _too_many(row["n"], max_user_runs)
            if inflight:
                await self._cancel(conn, inflight, params["strategy"])
            cur = await conn.execute(INSERT_RUN, params)
            await notify(conn, "queue", f"thread:{thread_id}")
        row = await cur.fetchone()
        assert row is not None
        return _record(row)

    async def _cancel(
        self, conn: AsyncConnection[DictRow], run_ids: list[uuid.UUID], action: CancelAction
    ) -> list[uuid.UUID]:
        if action == "rollback":
            ended = await (await conn.execute(DELETE_PENDING, (run_ids,))).fetchall()
        else:
            ended = await (await conn.execute(CANCEL_PENDING, (action, run_ids))).fetchall()
        running = await (await conn.execute(REQUEST_CANCEL, (action, run_ids))).fetchall()
        # A pending run that ends may have held up the runs queued behind it on its thread.
        woken = [str(row["run_id"]) for row in ended] + (["queue"] if ended else [])
        await notify(conn, *woken, *(f"cancel:{row['run_id']}" for row in running))
        return [row["run_id"] for row in (*ended, *running)]

    async def cancel(self, run_ids: list[uuid.UUID], action: CancelAction) -> list[uuid.UUID]:
        async with self._pool.connection() as conn, conn.transaction():
            return await self._cancel(conn, run_ids, action)

    async def cancellable(
        self, user_id: str, statuses: list[RunStatus], thread_id: str | None, run_ids: list[uuid.UUID] | None
    ) -> list[uuid.UUID]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(SELECT_CANCELLABLE, (user_id, statuses, thread_id, thread_id, run_ids, run_ids))
            return [row["run_id"] for row in await cur.fetchall()]

    async def get(self, thread_id: str, run_id: uuid.UUID) -> RunRecord | None:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(SELECT_RUN, (run_id, thread_id))).fetchone()
        return _record(row) if row is not None else None

    async def get_for_user(self, run_id: uuid.UUID, user_id: str) -> RunRecord | None:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(SELECT_RUN_BY_ID, (run_id, user_id))).fetchone()
        return _record(row) if row is not None else None

    async def list_for_thread(
        self, thread_id: str, status: RunStatus | None, limit: int, offset: int
    ) -> list[RunRecord]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(SELECT_RUNS_OF_THREAD, (thread_id, status, status, limit, offset))
            return [_record(row) for row in await cur.fetchall()]

    async def join_thread(self, thread_id: str, seconds: float, after: int | None = None) -> list[RunRecord]:
        """The runs in flight on the thread, and with `after` those with events after that ID, oldest first;
        the thread's new runs write their events as rows and notify "thread:<ID>" for `seconds` from now."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(JOIN_THREAD, {"thread_id": thread_id, "seconds": seconds, "after": after})
            return [_record(row) for row in await cur.fetchall()]

    async def delete(self, thread_id: str, run_id: uuid.UUID) -> bool:
        async with self._pool.connection() as conn:
            return (await conn.execute(DELETE_RUN, (run_id, thread_id))).rowcount > 0

    @asynccontextmanager
    async def thread_locked(self, thread_id: str) -> AsyncIterator[AsyncConnection[DictRow]]:
        """A transaction holding the thread's run lock (the one admission takes): no run is admitted on the
        thread until it ends, and an admission that waited for it sees what it committed."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(LOCK_THREAD, (thread_id,))
            yield conn

    async def forget_thread(self, conn: AsyncConnection[DictRow], user_id: str, thread_id: str) -> None:
        """In `conn`'s transaction (thread_locked): the thread's runs in flight rolled back, its finished
        runs deleted."""
        params = (user_id, ["pending", "running"], thread_id, thread_id, None, None)
        inflight = [row["run_id"] for row in await (await conn.execute(SELECT_CANCELLABLE, params)).fetchall()]
        if inflight:
            await self._cancel(conn, inflight, "rollback")
        await conn.execute(DELETE_FINISHED_OF_THREAD, (thread_id,))

    async def delete_finished_of_thread(self, thread_id: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(DELETE_FINISHED_OF_THREAD, (thread_id,))

    async def lock_idle_thread(self, conn: AsyncConnection[Any], thread_id: str) -> bool:
        """Whether `thread_id` has no run pending or running, taking its run lock (the one admission takes)
        in `conn`'s transaction when so: no run can be admitted on it until that transaction ends. The lock
        is only tried: a thread another transaction holds counts as busy."""
        locked = await (await conn.execute(TRY_LOCK_THREAD, (thread_id,))).fetchone()
        if not (locked and locked["locked"]):
            return False
        # A statement of its own: its snapshot is taken after the lock, so it sees every run admitted before.
        return await (await conn.execute(SELECT_THREAD_ACTIVE, (thread_id,))).fetchone() is None

    async def thread_status(self, thread_id: str) -> ThreadActivity:
        """Whether the thread has a run in flight, and its latest run's status and error."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(SELECT_THREAD_STATUS, (thread_id,))).fetchone()
        assert row is not None
        return ThreadActivity(bool(row["busy"]), row["last_status"], row["last_error"])

    # The worker side: claim, renew, finish.

    async def claim(self, owner: str, lease_seconds: float, limit: int = 1) -> list[Claimed]:
        """Up to `limit` runs, each of another thread, now running under `owner`'s lease."""
        params = {"owner": owner, "lease_seconds": lease_seconds, "limit": limit}
        try:
            async with self._pool.connection() as conn:
                rows = await (await conn.execute(CLAIM_RUN, params)).fetchall()
        except UniqueViolation:
            return []  # another replica started one of these threads' runs in between: the index said no
        return [
            Claimed(
                _record(row),
                row["queue_seconds"],
                (row["latest_checkpoint_id"], int(row["latest_checkpoint_writes"]), row["latest_checkpoint_parent"]),
                row["more_pending"],
            )
            for row in rows
        ]

    async def renew(self, run_id: uuid.UUID, owner: str, lease_seconds: float) -> Renewal:
        """Whether the lease is still ours (a run whose lease was taken away must stop writing), a cancel
        requested, and whether someone on another replica reads its stream."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(RENEW_LEASE, (lease_seconds, run_id, owner))).fetchone()
        return Renewal(False, None, False) if row is None else Renewal(True, row["cancel_reason"], row["streamed"])

    async def watch(self, run: RunRecord, stream: bool) -> RunRecord | None:
        """The run as it is now, marked as waited for (and read, with `stream`) from this replica."""
        async with self._pool.connection() as conn:
            params = {"stream": stream, "run_id": run.run_id, "thread_id": run.thread_id, "channel": CHANNEL}
            row = await (await conn.execute(WATCH_RUN, params)).fetchone()
        return _record(row) if row is not None else None

    async def finish(
        self, run: RunRecord, owner: str, status: RunStatus, output: Any, error: dict[str, Any] | None
    ) -> None:
        async with self._pool.connection() as conn:
            ended = (run.run_id, owner, status, fast_jsonb(output), Jsonb(error) if error else None)
            await conn.execute(FINISH_RUN, ended)

    async def requeue(self, run: RunRecord, owner: str) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(REQUEUE_RUN, (run.run_id, owner))
            await notify(conn, "queue")

    async def remove(self, run: RunRecord) -> None:
        """A rolled-back run disappears; its waiters see it gone."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM service_runs WHERE run_id = %s", (run.run_id,))
            await notify(conn, str(run.run_id), "queue")

    async def expire_leases(self, retry: bool, max_attempts: int) -> list[DictRow]:
        async with self._pool.connection() as conn, conn.transaction():
            flags = (retry, max_attempts) * 3
            rows = await (await conn.execute(EXPIRE_LEASES, flags)).fetchall()
            await notify(conn, *(str(row["run_id"]) for row in rows), *(["queue"] if rows else []))
        return rows

    async def delete_finished_temporary(self, retention_seconds: float) -> list[tuple[str, str]]:
        """Deletes stateless runs a retention after they ended; returns their (thread, user) to delete."""
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(DELETE_FINISHED_TEMPORARY, (retention_seconds,))).fetchall()
        return [(row["thread_id"], row["user_id"]) for row in rows]

    async def counts(self) -> tuple[dict[str, int], float]:
        """Runs pending and running across all replicas, and the age of the oldest claimable one."""
        async with self._pool.connection() as conn:
            counts = {row["status"]: row["n"] for row in await (await conn.execute(COUNT_BY_STATUS)).fetchall()}
            oldest = await (await conn.execute(SELECT_OLDEST_PENDING)).fetchone()
        return counts, float(oldest["age"]) if oldest else 0.0
