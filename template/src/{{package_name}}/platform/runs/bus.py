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
from typing import cast

from psycopg import AsyncConnection, OperationalError

from ..database import Pool
from .records import CHANNEL

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

INSERT_EVENTS = "INSERT INTO service_run_events (run_id, event, data) VALUES (%s, %s, %s)"
SELECT_EVENTS = """
    SELECT id, event, data FROM service_run_events WHERE run_id = %s AND id > %s ORDER BY id LIMIT 1000
"""
# Events of runs that ended more than the retention ago (and of runs deleted since) go.
TRIM_EVENTS = """
    DELETE FROM service_run_events e WHERE e.created_at < now() - make_interval(secs => %s)
      AND NOT EXISTS (SELECT 1 FROM service_runs r WHERE r.run_id = e.run_id AND r.status IN ('pending', 'running'))
"""


@dataclass(frozen=True, slots=True)
class RunEvent:
    id: int
    event: str
    data: str


class Notifier:
    """One LISTEN connection per process, of its own (a pool connection would be held forever).

    Waiters subscribe to a key (a run ID, "cancel:<run ID>", or "queue") and get an asyncio.Event
    that each matching notification sets. After a reconnect every waiter is woken, since
    notifications sent meanwhile are lost; waiters re-read the database whenever they wake.
    """

    def __init__(self, pool: Pool, reconnect_seconds: float = 1.0) -> None:
        self._conninfo = cast(str, pool.conninfo)  # open_pool always passes a URL
        self._reconnect_seconds = reconnect_seconds
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.connected = asyncio.Event()

    @contextmanager
    def subscribe(self, key: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
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
        async with self._pool.connection() as conn, conn.transaction():
            for statement in MIGRATIONS:
                await conn.execute(statement)

    async def append(self, run_id: uuid.UUID, events: list[tuple[str, str]]) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            async with conn.cursor() as cur:
                await cur.executemany(INSERT_EVENTS, [(run_id, event, data) for event, data in events])
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(run_id)))

    async def read(self, run_id: uuid.UUID, after: int) -> list[RunEvent]:
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(SELECT_EVENTS, (run_id, after))).fetchall()
        return [RunEvent(row["id"], row["event"], row["data"]) for row in rows]

    async def trim(self, retention_seconds: float) -> int:
        async with self._pool.connection() as conn:
            return (await conn.execute(TRIM_EVENTS, (retention_seconds,))).rowcount
