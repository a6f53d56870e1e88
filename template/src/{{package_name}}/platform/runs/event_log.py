"""The event bus between replicas: run events as ordered rows, LISTEN/NOTIFY to wake whoever waits.

A stream reader (on any replica) reads a run's events after the last ID it sent, then sleeps until
a notification names the run. Events are rows, so a reader that reconnects with Last-Event-ID
resumes exactly where it stopped, and a notification lost in a reconnect costs a poll, not an event.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from psycopg import AsyncConnection, OperationalError

from ..core.database import Pool
from ..core.migrations import apply_migrations
from .local import LocalRun
from .sql import CHANNEL

log = logging.getLogger(__name__)

MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS service_run_events (
        id BIGSERIAL PRIMARY KEY,
        run_id UUID NOT NULL,
        event TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX IF NOT EXISTS service_run_events_run_idx ON service_run_events (run_id, id)",
)

# One round trip: the events in order, and the notification that wakes their readers.
INSERT_EVENTS = """
    WITH inserted AS (
        INSERT INTO service_run_events (run_id, event, data)
        SELECT %(run_id)s, e.event, e.data FROM unnest(%(events)s::text[], %(data)s::text[]) WITH ORDINALITY
            AS e(event, data, n) ORDER BY e.n
        RETURNING 1
    )
    SELECT pg_notify(%(channel)s, %(key)s) FROM (SELECT count(*) FROM inserted) AS done
"""
SELECT_EVENTS = """
    SELECT id, event, data FROM service_run_events WHERE run_id = %s AND id > %s ORDER BY id LIMIT 1000
"""
# A thread's own events (state_update) while a reader follows the thread, in the same log under the thread's
# key (no run has it: they go a retention after they were written).
INSERT_THREAD_EVENT = """
    WITH inserted AS (
        INSERT INTO service_run_events (run_id, event, data)
        SELECT %(key)s, %(event)s, %(data)s WHERE EXISTS (
            SELECT 1 FROM service_thread_streams WHERE thread_id = %(thread_id)s AND until > now())
        RETURNING 1
    )
    SELECT pg_notify(%(channel)s, 'events:' || %(key)s::text) FROM inserted
"""
SELECT_THREAD_JOINED = "SELECT 1 FROM service_thread_streams WHERE thread_id = %s AND until > now()"
SELECT_LAST_EVENT_ID = "SELECT coalesce(max(id), 0) AS id FROM service_run_events"
# A thread stream resumed from an event ID: the events after it of the thread's resumable runs (but those
# `followed` live), in order.
SELECT_THREAD_EVENTS = """
    SELECT e.id, e.event, e.data, e.run_id FROM service_runs r
    JOIN service_run_events e ON e.run_id = r.run_id AND e.id > %(after)s
    WHERE r.thread_id = %(thread_id)s AND (r.kwargs ->> 'stream_resumable')::boolean IS TRUE
      AND r.run_id <> ALL(%(followed)s)
    ORDER BY e.id LIMIT 1000
"""
# Events of runs that ended more than the retention ago go, and those of runs since deleted (rolled back).
TRIM_EVENTS = """
    DELETE FROM service_run_events e WHERE e.created_at < now() - make_interval(secs => %(retention)s)
      AND NOT EXISTS (
          SELECT 1 FROM service_runs r WHERE r.run_id = e.run_id
            AND (r.ended_at IS NULL OR r.ended_at >= now() - make_interval(secs => %(retention)s))
      )
"""
TRIM_THREAD_STREAMS = "DELETE FROM service_thread_streams WHERE until < now()"


# The key of a thread's own events in the log: no run's ID.
THREAD_EVENTS = uuid.UUID("7f0c6c3e-2b1a-4d52-9a51-5f2b9c1e0d7a")


def thread_key(thread_id: str) -> uuid.UUID:
    return uuid.uuid5(THREAD_EVENTS, thread_id)


@dataclass(frozen=True, slots=True)
class RunEvent:
    id: int  # 0 on a thread stream: an event no Last-Event-ID can resume from
    event: str
    data: str


class Notifier:
    """One LISTEN connection per process, of its own (a pool connection would be held forever).

    Waiters subscribe to keys ("<run ID>" when its status changes, "events:<run ID>", "cancel:<run ID>",
    "queue") and get an asyncio.Event
    that each matching notification sets. After a reconnect every waiter is woken, since
    notifications sent meanwhile are lost; waiters re-read the database whenever they wake.
    """

    def __init__(self, conninfo: str, reconnect_seconds: float = 1.0) -> None:
        self._conninfo = conninfo
        self._reconnect_seconds = reconnect_seconds
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.connected = asyncio.Event()
        self.last_error: Exception | None = None

    @contextmanager
    def subscribe(self, *keys: str) -> Iterator[asyncio.Event]:
        """One event, set by a notification naming any of `keys`."""
        event = asyncio.Event()
        for key in keys:
            self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[key]

    def _wake(self, key: str) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    async def run(self) -> None:
        """The listener loop: a named task of the lifespan, reconnecting until cancelled."""
        while True:
            try:
                async with await AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    self._wake_all()
                    async for notification in conn.notifies():
                        self._wake(notification.payload)
            except OperationalError as exc:
                self.last_error = exc
                log.warning("run notifications lost their connection, reconnecting: %s", exc)
            self.connected.clear()
            await asyncio.sleep(self._reconnect_seconds)


async def wait_for(event: asyncio.Event, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
        return True
    except TimeoutError:
        return False


class EventLog:
    """Run events in PostgreSQL: written by the executing worker, read by any replica's streams."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def setup(self) -> None:
        await apply_migrations(self._pool, MIGRATIONS)

    async def append(self, run_id: uuid.UUID, events: list[tuple[str, str]]) -> None:
        params = {
            "run_id": run_id,
            "events": [name for name, _ in events],
            "data": [data for _, data in events],
            "channel": CHANNEL,
            "key": f"events:{run_id}",
        }
        async with self._pool.connection() as conn:
            await conn.execute(INSERT_EVENTS, params)

    async def read(self, run_id: uuid.UUID, after: int) -> list[RunEvent]:
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(SELECT_EVENTS, (run_id, after))).fetchall()
        return [RunEvent(row["id"], row["event"], row["data"]) for row in rows]

    async def thread_joined(self, thread_id: str) -> bool:
        """Whether a reader follows the thread's stream (its own events are written only then)."""
        async with self._pool.connection() as conn:
            return await (await conn.execute(SELECT_THREAD_JOINED, (thread_id,))).fetchone() is not None

    async def append_thread(self, thread_id: str, name: str, data: str) -> None:
        """A thread's own event, if a reader still follows the thread."""
        params = {"key": thread_key(thread_id), "event": name, "data": data, "thread_id": thread_id, "channel": CHANNEL}
        async with self._pool.connection() as conn:
            await conn.execute(INSERT_THREAD_EVENT, params)

    async def last_id(self) -> int:
        """The newest event's ID: a thread stream joined now sends only the events after it."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(SELECT_LAST_EVENT_ID)).fetchone()
        return int(row["id"]) if row else 0

    async def read_thread(
        self, thread_id: str, after: int, followed: list[uuid.UUID]
    ) -> list[tuple[uuid.UUID, RunEvent]]:
        async with self._pool.connection() as conn:
            params = {"thread_id": thread_id, "after": after, "followed": followed}
            rows = await (await conn.execute(SELECT_THREAD_EVENTS, params)).fetchall()
        return [(row["run_id"], RunEvent(row["id"], row["event"], row["data"])) for row in rows]

    async def trim(self, retention_seconds: float) -> int:
        async with self._pool.connection() as conn:
            await conn.execute(TRIM_THREAD_STREAMS)
            return (await conn.execute(TRIM_EVENTS, {"retention": retention_seconds})).rowcount


class EventWriter:
    """One run's events, in order, from one task: to its readers on this replica in memory, and as rows
    once `persist` is set (a resumable stream, or a reader on another replica). Rows that arrive while a
    write is in flight go together in the next one: one round trip per event when idle, batches under load."""

    def __init__(self, log: EventLog, run_id: uuid.UUID, local: LocalRun | None, persist: bool) -> None:
        self._log = log
        self._run_id = run_id
        self._local = local
        self.persist = persist
        self._buffer: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def wanted(self) -> bool:
        """Whether anyone may read the events: when not, the run need not build them."""
        return self.persist or (self._local is not None and self._local.wanted)

    def add(self, events: list[tuple[str, str]]) -> None:
        if self._local is not None:
            self._local.add(events)
        if not self.persist or not events:
            return
        self._buffer.extend(events)
        if self._task is None:
            self._task = asyncio.create_task(self._write(), name=f"run-events-{self._run_id}")
        self._wake.set()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._buffer:
                batch, self._buffer = self._buffer, []
                await self._log.append(self._run_id, batch)
            if self._closed:
                return

    async def close(self) -> None:
        """Wait until every added event is written; raises what a write raised."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def abandon(self) -> None:
        """Write what can be written, but never raise: the run is already failing or cancelled."""
        try:
            await self.close()
        except Exception as exc:
            log.warning("run %s: stream events lost: %s", self._run_id, exc)
