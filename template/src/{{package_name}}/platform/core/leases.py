"""Named leases in PostgreSQL: one replica at a time runs a singleton loop (the TTL sweeper, the cron scheduler).

A lease is a row with a holder and an expiry. The holder renews it on every tick; when a replica dies its
lease runs out and another replica takes over, so no loop depends on any one process staying up.
A row rather than an advisory lock: a session lock would pin a pooled connection for the life of the
process and vanish silently with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .database import Pool
from .metrics import Metrics
from .migrations import apply_migrations

log = logging.getLogger(__name__)

MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS service_leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    )
    """,
)
# Take the lease if it is free, expired or already ours; the row lock makes concurrent takers agree.
ACQUIRE = """
    INSERT INTO service_leases (name, holder, expires_at)
    VALUES (%(name)s, %(holder)s, now() + make_interval(secs => %(seconds)s))
    ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
    WHERE service_leases.holder = EXCLUDED.holder OR service_leases.expires_at < now()
    RETURNING holder
"""
RELEASE = "DELETE FROM service_leases WHERE name = %s AND holder = %s"


def process_identity() -> str:
    """Who holds a lease: host, pid and a random part, so a restarted process is a new holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leases:
    def __init__(self, pool: Pool, holder: str | None = None) -> None:
        self.pool = pool
        self.holder = holder or process_identity()

    async def setup(self) -> None:
        await apply_migrations(self.pool, MIGRATIONS)

    async def acquire(self, name: str, seconds: float) -> bool:
        """Take or renew the lease for `seconds`; False while another live holder has it."""
        async with self.pool.connection() as conn:
            params = {"name": name, "holder": self.holder, "seconds": seconds}
            row = await (await conn.execute(ACQUIRE, params)).fetchone()
        return row is not None

    async def release(self, name: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(RELEASE, (name, self.holder))


@dataclass(eq=False)
class LeasedLoop:
    """Run `tick` every `interval` seconds on whichever replica holds the lease `name`.

    The lease lasts three intervals, so one slow tick does not hand it over; a tick that fails (a database
    outage) is logged and retried on the next interval, and the loop never dies of it.
    """

    leases: Leases
    name: str
    interval: float
    tick: Callable[[], Awaitable[None]]
    metrics: Metrics
    holding: bool = field(init=False, default=False)
    last_tick: float | None = field(init=False, default=None)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.holding = await self.leases.acquire(self.name, self.interval * 3)
                self.metrics.lease_held.labels(self.name).set(1 if self.holding else 0)
                if self.holding:
                    await self.tick()
                    self.last_tick = time.monotonic()
            except Exception as exc:  # the loop outlives database outages
                log.warning("%s failed: %s", self.name, exc)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def stop(self) -> None:
        if self.holding:
            try:
                await self.leases.release(self.name)
            except Exception as exc:
                log.warning("releasing lease %s failed: %s", self.name, exc)
            self.holding = False


@asynccontextmanager
async def leased_loop(loop: LeasedLoop) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The loop as a named task of the lifespan; yields its readiness check. Releases the lease on exit,
    so another replica takes over at once instead of after the lease runs out."""
    task = asyncio.create_task(loop.run(), name=loop.name)
    loop.metrics.background_task_up.labels(loop.name).set(1)
    task.add_done_callback(lambda done: loop.metrics.background_task_up.labels(done.get_name()).set(0))

    async def check() -> None:
        if task.done():
            raise RuntimeError(f"background task stopped: {loop.name}")

    try:
        yield check
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await loop.stop()
