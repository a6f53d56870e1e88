"""Runs as rows in PostgreSQL: the table, its SQL, and the queue and lease operations on it.

The database, not process memory, coordinates replicas:
- a worker claims the oldest pending run of a thread with FOR UPDATE SKIP LOCKED;
- a partial unique index allows one `running` run per thread, whichever replica runs it;
- a run's lease is renewed by a heartbeat; any replica's sweeper ends runs whose lease expired.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from ...errors import Conflict, ThreadNotFound, TooManyRequests
from ..checkpointing.latest import Latest
from ..database import Pool
from ..encoding import fast_jsonb
from ..migrations import apply_migrations
from ..registry import UPDATE_METADATA

RunStatus = Literal["pending", "running", "success", "error", "timeout", "interrupted"]
MultitaskStrategy = Literal["reject", "enqueue", "interrupt", "rollback"]
CancelAction = Literal["interrupt", "rollback"]
INFLIGHT: tuple[RunStatus, ...] = ("pending", "running")

# LISTEN/NOTIFY channel; the payload names what changed (see bus.py).
CHANNEL = "service_runs"

# Run admission as one statement: the thread's (and user's) lock, the thread's touch, the multitask and
# per-user checks and the insert, in one round trip and one server-side transaction. Each statement in a
# PL/pgSQL function takes a fresh snapshot, so every check after the lock sees what committed before it.
# A run on an idle thread with nothing claimable queued is inserted already claimed by `p_owner` (when
# given): the creating replica executes it at once, with no claim query and no notification.
# Refusals are errors with the SQLSTATEs below; 'busy' hands an interrupt/rollback on a busy thread to
# RunStore.create's slower path, which cancels what is in flight in the same transaction as the insert.
ADMIT_RUN_FUNCTION = """
CREATE OR REPLACE FUNCTION service_admit_run(
    p_run_id uuid, p_thread_id text, p_user_id text, p_assistant_id text, p_strategy text, p_kwargs jsonb,
    p_metadata jsonb, p_temporary boolean, p_after_seconds float8, p_max_user_runs integer, p_stamp jsonb,
    p_owner text, p_lease_seconds float8, p_watched boolean, p_streamed boolean
) RETURNS TABLE (
    run_id uuid, thread_id text, user_id text, assistant_id text, status text, multitask_strategy text, kwargs jsonb,
    metadata jsonb, output jsonb, error jsonb, temporary boolean, created_at timestamptz, updated_at timestamptz,
    started_at timestamptz, ended_at timestamptz, attempt integer, cancel_reason text, watched boolean,
    streamed boolean, latest_checkpoint_id text, latest_checkpoint_parent text, latest_checkpoint_writes bigint
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    busy boolean;
    active bigint;
    claim boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('service_runs'), hashtext(p_thread_id));
    IF p_max_user_runs IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('service_runs/user'), hashtext(p_user_id));
    END IF;
    IF p_stamp IS NOT NULL THEN
        UPDATE service_threads SET metadata = metadata || p_stamp, updated_at = now()
        WHERE thread_id = p_thread_id AND user_id = p_user_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'thread not found' USING ERRCODE = 'SR404';
        END IF;
    END IF;
    busy := EXISTS (
        SELECT 1 FROM service_runs WHERE thread_id = p_thread_id AND status IN ('pending', 'running')
    );
    IF busy AND p_strategy = 'reject' THEN
        RAISE EXCEPTION 'thread busy' USING ERRCODE = 'SR409';
    ELSIF busy AND p_strategy <> 'enqueue' THEN
        RAISE EXCEPTION 'thread busy' USING ERRCODE = 'SRBSY';
    END IF;
    IF p_max_user_runs IS NOT NULL THEN
        SELECT count(*) INTO active FROM service_runs WHERE user_id = p_user_id AND status IN ('pending', 'running');
        IF active >= p_max_user_runs THEN
            RAISE EXCEPTION '%', active USING ERRCODE = 'SR429';
        END IF;
    END IF;
    -- Claimable runs already queued go first: a new run does not overtake them.
    claim := p_owner IS NOT NULL AND NOT busy AND p_after_seconds = 0 AND NOT EXISTS (
        SELECT 1 FROM service_runs q WHERE q.status = 'pending' AND q.not_before <= now()
          AND NOT EXISTS (SELECT 1 FROM service_runs x WHERE x.thread_id = q.thread_id AND x.status = 'running')
    );
    IF NOT claim THEN
        PERFORM pg_notify('service_runs', 'queue');
    END IF;
    RETURN QUERY INSERT INTO service_runs AS r (run_id, thread_id, user_id, assistant_id, multitask_strategy, kwargs,
        metadata, temporary, not_before, status, attempt, lease_owner, lease_expires_at, started_at, watched, streamed)
    VALUES (p_run_id, p_thread_id, p_user_id, p_assistant_id, p_strategy, p_kwargs, p_metadata, p_temporary,
        now() + make_interval(secs => p_after_seconds),
        CASE WHEN claim THEN 'running' ELSE 'pending' END, CASE WHEN claim THEN 1 ELSE 0 END,
        CASE WHEN claim THEN p_owner END,
        CASE WHEN claim THEN now() + make_interval(secs => p_lease_seconds) END,
        CASE WHEN claim THEN clock_timestamp() END,
        p_watched AND NOT claim, p_streamed AND NOT claim)
    RETURNING r.run_id, r.thread_id, r.user_id, r.assistant_id, r.status, r.multitask_strategy, r.kwargs, r.metadata,
        r.output, r.error, r.temporary, r.created_at, r.updated_at, r.started_at, r.ended_at, r.attempt,
        r.cancel_reason, r.watched, r.streamed,
        -- As a claim reads it: the thread's newest checkpoint validates this replica's cached copy.
        CASE WHEN claim THEN (SELECT c.checkpoint_id FROM checkpoints c WHERE c.thread_id = p_thread_id
            AND c.checkpoint_ns = '' ORDER BY c.checkpoint_id DESC LIMIT 1) END,
        CASE WHEN claim THEN (SELECT c.parent_checkpoint_id FROM checkpoints c WHERE c.thread_id = p_thread_id
            AND c.checkpoint_ns = '' ORDER BY c.checkpoint_id DESC LIMIT 1) END,
        CASE WHEN claim THEN (SELECT count(*) FROM checkpoint_writes w WHERE w.thread_id = p_thread_id
            AND w.checkpoint_ns = '' AND w.checkpoint_id = (SELECT c.checkpoint_id FROM checkpoints c
                WHERE c.thread_id = p_thread_id AND c.checkpoint_ns = '' ORDER BY c.checkpoint_id DESC LIMIT 1)) END;
END $$
"""
# The end of a run as one statement: its status and output; its own notification only when someone on
# another replica watches it; and the claimers woken only when its thread has runs queued behind it.
# Under the thread's lock (as run creation), a run enqueued meanwhile is either seen here or created
# after the finish; when the lock is busy (a creation or a sweep holds it), claimers are woken anyway.
# The lock is only tried: a finish must not wait on a sweep or a creation past its lease.
FINISH_RUN_FUNCTION = """
CREATE OR REPLACE FUNCTION service_finish_run(
    p_run_id uuid, p_owner text, p_status text, p_output jsonb, p_error jsonb
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    finished record;
BEGIN
    UPDATE service_runs SET status = p_status, output = p_output, error = p_error, ended_at = clock_timestamp(),
        updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
    WHERE run_id = p_run_id AND lease_owner = p_owner AND status = 'running'
    RETURNING thread_id, watched INTO finished;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF finished.watched THEN
        PERFORM pg_notify('service_runs', p_run_id::text);
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtext('service_runs'), hashtext(finished.thread_id)) OR EXISTS (
        SELECT 1 FROM service_runs p WHERE p.thread_id = finished.thread_id AND p.status = 'pending'
          AND p.not_before <= now()
    ) THEN
        PERFORM pg_notify('service_runs', 'queue');
    END IF;
    RETURN true;
END $$
"""

MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS service_runs (
        run_id UUID PRIMARY KEY,
        seq BIGSERIAL NOT NULL,
        thread_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'running', 'success', 'error', 'timeout', 'interrupted')),
        multitask_strategy TEXT NOT NULL DEFAULT 'enqueue',
        kwargs JSONB NOT NULL,
        metadata JSONB NOT NULL DEFAULT '{}',
        output JSONB,
        error JSONB,
        temporary BOOLEAN NOT NULL DEFAULT false,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        not_before TIMESTAMPTZ NOT NULL DEFAULT now(),
        started_at TIMESTAMPTZ,
        ended_at TIMESTAMPTZ,
        attempt INTEGER NOT NULL DEFAULT 0,
        cancel_reason TEXT,
        lease_owner TEXT,
        lease_expires_at TIMESTAMPTZ
    )
    """,
    # The database's guarantee: at most one running run per thread, across every replica.
    "CREATE UNIQUE INDEX IF NOT EXISTS service_runs_one_running ON service_runs (thread_id) WHERE status = 'running'",
    "CREATE INDEX IF NOT EXISTS service_runs_thread_idx ON service_runs (thread_id, seq)",
    "CREATE INDEX IF NOT EXISTS service_runs_pending_idx ON service_runs (seq) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS service_runs_lease_idx ON service_runs (lease_expires_at) WHERE status = 'running'",
    # The per-user active-runs count on every run creation (quotas): only the user's runs in flight.
    "CREATE INDEX IF NOT EXISTS service_runs_user_active_idx ON service_runs (user_id)"
    " WHERE status IN ('pending', 'running')",
    # Admission asks whether a thread is busy on every run: only the runs in flight, not a thread's history.
    "CREATE INDEX IF NOT EXISTS service_runs_thread_active_idx ON service_runs (thread_id)"
    " WHERE status IN ('pending', 'running')",
    # Someone on another replica than the executing one waits for the run's end (`watched`: its finish
    # notifies) or reads its stream (`streamed`: its events become rows). Nobody else needs either.
    "ALTER TABLE service_runs ADD COLUMN IF NOT EXISTS watched BOOLEAN NOT NULL DEFAULT false",
    "ALTER TABLE service_runs ADD COLUMN IF NOT EXISTS streamed BOOLEAN NOT NULL DEFAULT false",
    ADMIT_RUN_FUNCTION,
    FINISH_RUN_FUNCTION,
)

COLUMNS = """run_id, thread_id, user_id, assistant_id, status, multitask_strategy, kwargs, metadata, output, error,
    temporary, created_at, updated_at, started_at, ended_at, attempt, cancel_reason, watched, streamed"""

ADMIT_RUN = f"""
    SELECT {COLUMNS}, latest_checkpoint_id, latest_checkpoint_parent, latest_checkpoint_writes
    FROM service_admit_run(%(run_id)s, %(thread_id)s, %(user_id)s, %(assistant_id)s, %(strategy)s, %(kwargs)s,
        %(metadata)s, %(temporary)s, %(after_seconds)s, %(max_user_runs)s, %(stamp)s, %(owner)s, %(lease_seconds)s,
        %(watched)s, %(streamed)s)
"""
# Admission's refusals (service_admit_run raises them).
THREAD_MISSING, THREAD_BUSY, USER_BUSY, NEEDS_CANCEL = "SR404", "SR409", "SR429", "SRBSY"
# The slower path of admission, for an interrupt or rollback of the runs in flight on a thread.
INSERT_RUN = f"""
    INSERT INTO service_runs (run_id, thread_id, user_id, assistant_id, multitask_strategy, kwargs, metadata,
        temporary, not_before, watched, streamed)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s), %s, %s)
    RETURNING {COLUMNS}
"""
# A waiter or reader on another replica than the executing one: the run's end must notify, or its events be
# rows. Also the waiter's first read of the run.
WATCH_RUN = f"""
    WITH marked AS (
        UPDATE service_runs SET watched = true, streamed = streamed OR %(stream)s
        WHERE run_id = %(run_id)s AND thread_id = %(thread_id)s
        RETURNING {COLUMNS}
    )
    -- The executing replica starts writing the events at once, not at its next lease renewal.
    SELECT marked.*, CASE WHEN %(stream)s THEN pg_notify(%(channel)s, 'stream:' || marked.run_id::text) END
    FROM marked
"""
LOCK_THREAD = "SELECT pg_advisory_xact_lock(hashtext('service_runs'), hashtext(%s))"
# And the user's lock as well. It serialises run creation per user, so two replicas cannot both admit the
# user's last allowed run. Only this statement waits for both locks (the others wait for the thread's, or
# only try), so whatever order PostgreSQL takes them in, no two transactions wait for each other.
LOCK_THREAD_AND_USER = (
    "SELECT pg_advisory_xact_lock(hashtext('service_runs'), hashtext(%s)),"
    " pg_advisory_xact_lock(hashtext('service_runs/user'), hashtext(%s))"
)
INFLIGHT_OF_USER = "SELECT count(*) AS n FROM service_runs WHERE user_id = %s AND status IN ('pending', 'running')"
# What a 429 for too many active runs tells the caller to wait: runs take seconds, not milliseconds.
RETRY_ACTIVE_RUNS_SECONDS = 5
INFLIGHT_OF_THREAD = "SELECT run_id FROM service_runs WHERE thread_id = %s AND status IN ('pending', 'running')"
SELECT_RUN = f"SELECT {COLUMNS} FROM service_runs WHERE run_id = %s AND thread_id = %s"
SELECT_RUN_BY_ID = f"SELECT {COLUMNS} FROM service_runs WHERE run_id = %s AND user_id = %s"
LIST_RUNS = f"""
    SELECT {COLUMNS} FROM service_runs WHERE thread_id = %s AND (%s::text IS NULL OR status = %s)
    ORDER BY seq DESC LIMIT %s OFFSET %s
"""
DELETE_RUN = "DELETE FROM service_runs WHERE run_id = %s AND thread_id = %s AND status NOT IN ('pending', 'running')"
DELETE_FINISHED_OF_THREAD = "DELETE FROM service_runs WHERE thread_id = %s AND status NOT IN ('pending', 'running')"
THREAD_STATUS = """
    SELECT
        bool_or(status IN ('pending', 'running')) AS busy,
        (array_agg(status ORDER BY seq DESC))[1] AS last_status
    FROM service_runs WHERE thread_id = %s
"""

# The oldest pending runs of threads that have no running run, and no older pending one (so at most one a
# thread), as many as the claimer has free slots: a queue drains in batches, not one query a run. SKIP
# LOCKED lets every replica claim at once without waiting on each other.
CLAIM_RUN = f"""
    WITH next AS (
        SELECT r.run_id, r.thread_id FROM service_runs r
        WHERE r.status = 'pending' AND r.not_before <= now()
          AND NOT EXISTS (SELECT 1 FROM service_runs x WHERE x.thread_id = r.thread_id AND x.status = 'running')
          AND NOT EXISTS (
              SELECT 1 FROM service_runs y WHERE y.thread_id = r.thread_id AND y.status = 'pending' AND y.seq < r.seq
          )
        ORDER BY r.seq
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    UPDATE service_runs r SET status = 'running', attempt = r.attempt + 1, lease_owner = %(owner)s,
        -- The statement's own time, not its transaction's: a claim that waited on the previous run's
        -- finish must not start before it ended.
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s), started_at = clock_timestamp(),
        updated_at = now()
    FROM next LEFT JOIN LATERAL (
        -- The thread's newest checkpoint, read as the lease is taken: it validates this replica's cached copy.
        SELECT c.checkpoint_id, c.parent_checkpoint_id FROM checkpoints c
        WHERE c.thread_id = next.thread_id AND c.checkpoint_ns = '' ORDER BY c.checkpoint_id DESC LIMIT 1
    ) AS latest ON true
    WHERE r.run_id = next.run_id
    RETURNING {", ".join("r." + c.strip() for c in COLUMNS.split(","))},
        extract(epoch FROM now() - r.not_before)::float8 AS queue_seconds,
        latest.checkpoint_id AS latest_checkpoint_id, latest.parent_checkpoint_id AS latest_checkpoint_parent,
        (SELECT count(*) FROM checkpoint_writes w WHERE w.thread_id = r.thread_id AND w.checkpoint_ns = ''
            AND w.checkpoint_id = latest.checkpoint_id) AS latest_checkpoint_writes,
        -- Whether to claim again at once, or to wait for a notification (one empty claim saved per run). Runs
        -- queued behind this one are woken by its finish; delayed ones by the poll.
        EXISTS (SELECT 1 FROM service_runs m WHERE m.status = 'pending' AND m.not_before <= now()
                  AND m.thread_id NOT IN (SELECT thread_id FROM next)) AS more_pending
"""
RENEW_LEASE = """
    UPDATE service_runs SET lease_expires_at = now() + make_interval(secs => %s)
    WHERE run_id = %s AND lease_owner = %s AND status = 'running'
    RETURNING cancel_reason, streamed
"""
FINISH_RUN = "SELECT service_finish_run(%s, %s, %s, %s, %s) AS ours"
# A run handed back (shutdown) or whose lease expired under the 'retry' policy runs again from its checkpoint.
# Whoever waited on this replica now waits from afar: the run's end notifies, its events become rows.
REQUEUE_RUN = """
    UPDATE service_runs SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
        watched = true, streamed = true
    WHERE run_id = %s AND lease_owner = %s AND status = 'running'
"""
EXPIRE_LEASES = """
    UPDATE service_runs SET
        status = CASE WHEN %s AND attempt < %s THEN 'pending' ELSE 'error' END,
        error = CASE WHEN %s AND attempt < %s THEN error
            ELSE '{"error": "LeaseExpired", "message": "the replica running this run stopped heartbeating"}' END,
        ended_at = CASE WHEN %s AND attempt < %s THEN NULL ELSE now() END,
        lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE status = 'running' AND lease_expires_at < now()
    RETURNING run_id, thread_id, status
"""
REQUEST_CANCEL = """
    UPDATE service_runs SET cancel_reason = %s, updated_at = now()
    WHERE run_id = ANY(%s) AND status = 'running'
    RETURNING run_id
"""
# A pending run has nothing to keep: interrupt ends it, rollback deletes it.
CANCEL_PENDING = """
    UPDATE service_runs SET status = 'interrupted', cancel_reason = %s, ended_at = now(), updated_at = now()
    WHERE run_id = ANY(%s) AND status = 'pending'
    RETURNING run_id
"""
DELETE_PENDING = "DELETE FROM service_runs WHERE run_id = ANY(%s) AND status = 'pending' RETURNING run_id"
SELECT_CANCELLABLE = """
    SELECT run_id FROM service_runs
    WHERE user_id = %s AND status = ANY(%s) AND (%s::text IS NULL OR thread_id = %s)
      AND (%s::uuid[] IS NULL OR run_id = ANY(%s))
"""
DELETE_FINISHED_TEMPORARY = """
    DELETE FROM service_runs WHERE temporary AND status NOT IN ('pending', 'running')
      AND ended_at < now() - make_interval(secs => %s)
    RETURNING thread_id, user_id
"""
COUNT_BY_STATUS = """
    SELECT status, count(*) AS n FROM service_runs WHERE status IN ('pending', 'running') GROUP BY status
"""
OLDEST_PENDING = """
    SELECT coalesce(extract(epoch FROM now() - min(not_before)), 0)::float8 AS age
    FROM service_runs WHERE status = 'pending' AND not_before <= now()
"""


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


class RunStore:
    """Every read and write of service_runs; the strategies, the workers and the routers go through it."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def setup(self) -> None:
        """Run under platform.migrations.migration_lock, like every subsystem's migrations."""
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
        With `stamp`, the user's thread must exist: it is touched, `stamp` merged into its metadata, in
        the same transaction (ThreadNotFound otherwise, and nothing is written).
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
            if exc.sqlstate == THREAD_MISSING:
                raise ThreadNotFound() from None
            if exc.sqlstate == THREAD_BUSY:
                raise Conflict(BUSY_MESSAGE) from None
            if exc.sqlstate == USER_BUSY:
                raise _too_many(int(exc.diag.message_primary or 0), max_user_runs) from None
            if exc.sqlstate != NEEDS_CANCEL:
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
            stamp = params["stamp"]
            touched = None if stamp is None else await conn.execute(UPDATE_METADATA, (stamp, thread_id, user_id))
            cur = await conn.execute(INFLIGHT_OF_THREAD, (thread_id,))
            inflight = [row["run_id"] for row in await cur.fetchall()]
            if touched is not None and await touched.fetchone() is None:
                raise ThreadNotFound()  # the transaction rolls back: no run, no notification
            if max_user_runs is not None:
                # Runs this one interrupts or rolls back end now, so they do not count against it.
                row = await (await conn.execute(INFLIGHT_OF_USER, (user_id,))).fetchone()
                if row is not None and row["n"] - len(inflight) >= max_user_runs:
                    raise _too_many(row["n"], max_user_runs)
            if inflight:
                await self._cancel(conn, inflight, params["strategy"])
            cur = await conn.execute(
                INSERT_RUN,
                (
                    params["run_id"],
                    thread_id,
                    user_id,
                    params["assistant_id"],
                    params["strategy"],
                    params["kwargs"],
                    params["metadata"],
                    params["temporary"],
                    params["after_seconds"],
                    params["watched"],
                    params["streamed"],
                ),
            )
            await notify(conn, "queue")
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
            cur = await conn.execute(LIST_RUNS, (thread_id, status, status, limit, offset))
            return [_record(row) for row in await cur.fetchall()]

    async def delete(self, thread_id: str, run_id: uuid.UUID) -> bool:
        async with self._pool.connection() as conn:
            return (await conn.execute(DELETE_RUN, (run_id, thread_id))).rowcount > 0

    async def delete_finished_of_thread(self, thread_id: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(DELETE_FINISHED_OF_THREAD, (thread_id,))

    async def thread_status(self, thread_id: str) -> tuple[bool, str | None]:
        """Whether the thread has a run in flight, and its latest run's status."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(THREAD_STATUS, (thread_id,))).fetchone()
        assert row is not None
        return bool(row["busy"]), row["last_status"]

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
            oldest = await (await conn.execute(OLDEST_PENDING)).fetchone()
        return counts, float(oldest["age"]) if oldest else 0.0
