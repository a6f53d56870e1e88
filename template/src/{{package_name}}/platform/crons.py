"""Crons: scheduled runs, as rows in PostgreSQL, fired by one scheduler across all replicas.

The scheduler is a LeasedLoop (platform/core/leases.py): one replica at a time looks for due crons. Each due
cron is first moved to its next time with a compare-and-set on `next_run_date` that also records the tick as
pending, with the ID its run will have; then the run is created under that ID, and the tick is cleared. A
scheduler that dies in between leaves the tick pending, and the next tick (on any replica) creates its run, or
finds it made: the run's ID is its primary key, so even two schedulers (a lease handed over mid-tick) make one
run per tick, and none is lost. The next time is counted from now, not from the missed time: ticks missed
while every replica was down run once, not once each.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from croniter import croniter
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from ..errors import InvalidInput, NotFound, Unavailable
from .core.database import DATABASE_OUTAGES, Pool
from .core.metrics import Metrics
from .core.migrations import apply_migrations
from .runs.admission import Admission, RunCreate

log = logging.getLogger(__name__)

MIGRATIONS = (
    # A thread's crons go with it: the foreign key deletes them, whatever deletes the thread.
    """
    CREATE TABLE IF NOT EXISTS service_crons (
        cron_id UUID PRIMARY KEY,
        user_id TEXT NOT NULL,
        thread_id TEXT REFERENCES service_threads (thread_id) ON DELETE CASCADE,
        assistant_id TEXT NOT NULL,
        schedule TEXT NOT NULL,
        timezone TEXT,
        end_time TIMESTAMPTZ,
        enabled BOOLEAN NOT NULL DEFAULT true,
        on_run_completed TEXT,
        payload JSONB NOT NULL,
        metadata JSONB NOT NULL DEFAULT '{}',
        next_run_date TIMESTAMPTZ NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    # The scheduler's DUE_CRONS, its whole condition: crons past their end_time are never read again.
    "CREATE INDEX IF NOT EXISTS service_crons_due_idx ON service_crons (next_run_date)"
    " WHERE enabled AND (end_time IS NULL OR next_run_date <= end_time)",
    "CREATE INDEX IF NOT EXISTS service_crons_user_idx ON service_crons (user_id, created_at)",
    "CREATE INDEX IF NOT EXISTS service_crons_thread_idx ON service_crons (thread_id)",
    # The tick being fired: set with the move to the next time, cleared once its run exists.
    "ALTER TABLE service_crons ADD COLUMN IF NOT EXISTS pending_run_id UUID",
    "ALTER TABLE service_crons ADD COLUMN IF NOT EXISTS pending_tick TIMESTAMPTZ",
    "CREATE INDEX IF NOT EXISTS service_crons_pending_idx ON service_crons (pending_tick)"
    " WHERE pending_run_id IS NOT NULL",
)

COLUMNS = """cron_id, user_id, thread_id, assistant_id, schedule, timezone, end_time, enabled, on_run_completed,
    payload, metadata, next_run_date, created_at, updated_at, pending_run_id, pending_tick"""
INSERT_CRON = f"""
    INSERT INTO service_crons (cron_id, user_id, thread_id, assistant_id, schedule, timezone, end_time, enabled,
        on_run_completed, payload, metadata, next_run_date)
    VALUES (%(cron_id)s, %(user_id)s, %(thread_id)s, %(assistant_id)s, %(schedule)s, %(timezone)s, %(end_time)s,
        %(enabled)s, %(on_run_completed)s, %(payload)s, %(metadata)s, %(next_run_date)s)
    RETURNING {COLUMNS}
"""
SELECT_CRON = f"SELECT {COLUMNS} FROM service_crons WHERE cron_id = %s AND user_id = %s"
UPDATE_CRON = f"""
    UPDATE service_crons SET schedule = %(schedule)s, timezone = %(timezone)s, end_time = %(end_time)s,
        enabled = %(enabled)s, on_run_completed = %(on_run_completed)s, payload = %(payload)s,
        metadata = %(metadata)s, next_run_date = %(next_run_date)s, updated_at = now()
    WHERE cron_id = %(cron_id)s AND user_id = %(user_id)s
    RETURNING {COLUMNS}
"""
DELETE_CRON = "DELETE FROM service_crons WHERE cron_id = %s AND user_id = %s"
# Filters shared by search and count; NULL parameters match everything.
FILTERS = """
    WHERE user_id = %(user_id)s
      AND (%(assistant_id)s::text IS NULL OR assistant_id = %(assistant_id)s)
      AND (%(thread_id)s::text IS NULL OR thread_id = %(thread_id)s)
      AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s)
      AND (%(metadata)s::jsonb IS NULL OR metadata @> %(metadata)s)
"""
CronSortBy = Literal["cron_id", "assistant_id", "thread_id", "created_at", "updated_at", "next_run_date", "end_time"]
SORTABLE = get_args(CronSortBy)
COUNT_CRONS = f"SELECT count(*) AS n FROM service_crons {FILTERS}"
DUE_CRONS = f"""
    SELECT {COLUMNS} FROM service_crons
    WHERE enabled AND next_run_date <= %(now)s AND (end_time IS NULL OR next_run_date <= end_time)
    ORDER BY next_run_date LIMIT %(limit)s
"""
# Compare-and-set: only the scheduler that still sees the old time fires this tick. A cron whose last tick is
# still pending is not moved on: that tick is retried first (PENDING_CRONS).
ADVANCE_CRON = """
    UPDATE service_crons SET next_run_date = %s, pending_run_id = %s, pending_tick = next_run_date
    WHERE cron_id = %s AND next_run_date = %s AND enabled AND pending_run_id IS NULL
"""
PENDING_CRONS = f"""
    SELECT {COLUMNS} FROM service_crons WHERE pending_run_id IS NOT NULL ORDER BY pending_tick LIMIT %s
"""
CLEAR_PENDING_CRON = """
    UPDATE service_crons SET pending_run_id = NULL, pending_tick = NULL WHERE cron_id = %s AND pending_run_id = %s
"""


@dataclass(frozen=True, slots=True)
class CronRecord:
    cron_id: uuid.UUID
    user_id: str
    thread_id: str | None
    assistant_id: str
    schedule: str
    timezone: str | None
    end_time: datetime | None
    enabled: bool
    on_run_completed: str | None
    payload: dict[str, Any]
    metadata: dict[str, Any]
    next_run_date: datetime
    created_at: datetime
    updated_at: datetime
    pending_run_id: uuid.UUID | None = None
    pending_tick: datetime | None = None

    def body(self) -> dict[str, Any]:
        """The cron as the Agent Server returns it."""
        return {
            "cron_id": str(self.cron_id),
            "assistant_id": self.assistant_id,
            "thread_id": self.thread_id,
            "user_id": self.user_id,
            "on_run_completed": self.on_run_completed,
            "end_time": self.end_time.isoformat() if self.end_time else None,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "enabled": self.enabled,
            "payload": self.payload,
            "metadata": self.metadata,
            "next_run_date": self.next_run_date.isoformat(),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _record(row: DictRow) -> CronRecord:
    return CronRecord(**row)


def next_run(schedule: str, timezone: str | None, after: datetime) -> datetime:
    """The first time strictly after `after` that `schedule` names, read in `timezone` (UTC when None).

    croniter parses the schedule: five fields, or six with seconds last ("* * * * * */10").
    """
    try:
        zone = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"unknown timezone {timezone!r}") from exc
    if not croniter.is_valid(schedule):
        raise InvalidInput(f"invalid cron schedule {schedule!r}")
    try:
        return croniter(schedule, after.astimezone(zone)).get_next(datetime).astimezone(UTC)
    except (ValueError, KeyError) as exc:  # croniter's own errors for schedules that never match
        raise InvalidInput(f"cron schedule {schedule!r} has no next time: {exc}") from exc


class CronStore:
    """Every read and write of service_crons; always within one user's crons, except the scheduler's."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def setup(self) -> None:
        """Run under platform.core.migrations.migration_lock, after the thread registry's (the foreign key)."""
        await apply_migrations(self._pool, MIGRATIONS)

    async def create(self, fields: dict[str, Any]) -> CronRecord:
        params = {**fields, "payload": Jsonb(fields["payload"]), "metadata": Jsonb(fields["metadata"])}
        async with self._pool.connection() as conn:
            row = await (await conn.execute(INSERT_CRON, params)).fetchone()
        assert row is not None
        return _record(row)

    async def get(self, cron_id: uuid.UUID, user_id: str) -> CronRecord:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(SELECT_CRON, (cron_id, user_id))).fetchone()
        if row is None:
            raise NotFound("Cron not found")
        return _record(row)

    async def update(self, fields: dict[str, Any]) -> CronRecord:
        params = {**fields, "payload": Jsonb(fields["payload"]), "metadata": Jsonb(fields["metadata"])}
        async with self._pool.connection() as conn:
            row = await (await conn.execute(UPDATE_CRON, params)).fetchone()
        if row is None:
            raise NotFound("Cron not found")
        return _record(row)

    async def delete(self, cron_id: uuid.UUID, user_id: str) -> None:
        async with self._pool.connection() as conn:
            if (await conn.execute(DELETE_CRON, (cron_id, user_id))).rowcount == 0:
                raise NotFound("Cron not found")

    async def search(
        self, filters: dict[str, Any], sort_by: str, descending: bool, limit: int, offset: int
    ) -> list[CronRecord]:
        assert sort_by in SORTABLE  # the router's Literal already allows only these
        order = f"{sort_by} {'DESC' if descending else 'ASC'}, cron_id"
        query = f"SELECT {COLUMNS} FROM service_crons {FILTERS} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s"
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, {**_filter_params(filters), "limit": limit, "offset": offset})
            return [_record(row) for row in await cur.fetchall()]

    async def count(self, filters: dict[str, Any]) -> int:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(COUNT_CRONS, _filter_params(filters))).fetchone()
        return int(row["n"]) if row else 0

    async def due(self, now: datetime, limit: int) -> list[CronRecord]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(DUE_CRONS, {"now": now, "limit": limit})
            return [_record(row) for row in await cur.fetchall()]

    async def advance(self, cron: CronRecord, to: datetime, run_id: uuid.UUID) -> bool:
        """Move `cron` on to `to`, its current tick pending as the run `run_id`; False if another did."""
        params = (to, run_id, cron.cron_id, cron.next_run_date)
        async with self._pool.connection() as conn:
            return (await conn.execute(ADVANCE_CRON, params)).rowcount == 1

    async def pending(self, limit: int) -> list[CronRecord]:
        """Crons whose last tick was moved past but not cleared: its scheduler died or its run failed on an outage."""
        async with self._pool.connection() as conn:
            return [_record(row) for row in await (await conn.execute(PENDING_CRONS, (limit,))).fetchall()]

    async def clear_pending(self, cron_id: uuid.UUID, run_id: uuid.UUID) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(CLEAR_PENDING_CRON, (cron_id, run_id))


def _filter_params(filters: dict[str, Any]) -> dict[str, Any]:
    metadata = filters.get("metadata")
    return {
        "user_id": filters["user_id"],
        "assistant_id": filters.get("assistant_id"),
        "thread_id": filters.get("thread_id"),
        "enabled": filters.get("enabled"),
        "metadata": Jsonb(metadata) if metadata else None,
    }


# A run that failed on these is not failed: its tick stays pending for the next tick.
OUTAGES: tuple[type[Exception], ...] = (Unavailable, *DATABASE_OUTAGES)


class CronScheduler:
    """One tick of the scheduler: each due cron's run is admitted as the run routes admit theirs."""

    BATCH = 100

    def __init__(self, store: CronStore, admission: Admission, metrics: Metrics) -> None:
        self.store = store
        self.admission = admission
        self.metrics = metrics

    async def fire(self, cron: CronRecord, tick: datetime, run_id: uuid.UUID) -> None:
        """Create the run of one tick, as `run_id`: a thread's cron on its thread, a stateless one on a new
        thread."""
        body = RunCreate.model_validate(cron.payload)
        # Which cron and which tick made the run, in the run's metadata.
        body.metadata = {**(body.metadata or {}), "cron_id": str(cron.cron_id), "cron_tick": tick.isoformat()}
        if cron.thread_id is None:
            body.on_completion = "keep" if cron.on_run_completed == "keep" else "delete"
            await self.admission.stateless(cron.user_id, body, run_id=run_id)
            return
        body.if_not_exists = "reject"  # the cron's thread, never a new one
        await self.admission.on_thread(cron.user_id, cron.thread_id, body, run_id=run_id)

    async def tick(self) -> None:
        # First the ticks an earlier scheduler moved past without making their runs.
        for cron in await self.store.pending(self.BATCH):
            assert cron.pending_run_id is not None and cron.pending_tick is not None
            if await self.admission.runs.get_for_user(cron.pending_run_id, cron.user_id) is not None:
                await self.store.clear_pending(cron.cron_id, cron.pending_run_id)
                continue
            log.warning("cron %s: creating the run of its tick at %s, left pending", cron.cron_id, cron.pending_tick)
            await self._fire(cron, cron.pending_tick, cron.pending_run_id)
        now = datetime.now(UTC)
        due = await self.store.due(now, self.BATCH)
        self.metrics.crons_due.set(len(due))
        for cron in due:
            run_id = uuid.uuid4()
            if not await self.store.advance(cron, next_run(cron.schedule, cron.timezone, now), run_id):
                continue  # another scheduler fired this tick, or its last tick is still pending
            self.metrics.cron_schedule_lag.observe((now - cron.next_run_date).total_seconds())
            await self._fire(cron, cron.next_run_date, run_id)

    async def _fire(self, cron: CronRecord, tick: datetime, run_id: uuid.UUID) -> None:
        try:
            await self.fire(cron, tick, run_id)
        except psycopg.errors.UniqueViolation:
            pass  # made meanwhile by another scheduler: the tick has its run
        except OUTAGES as exc:
            # Still pending: the next tick retries it once PostgreSQL answers (and raises, so the loop backs off).
            log.warning("cron %s: its run waits for the database: %s", cron.cron_id, exc)
            raise
        except Exception as exc:  # one cron's failure (its thread busy, its input stale) spares the rest
            log.warning("cron %s could not create its run: %s", cron.cron_id, exc)
            self.metrics.cron_run_failures.inc()
        else:
            self.metrics.cron_runs_created.inc()
        await self.store.clear_pending(cron.cron_id, run_id)
