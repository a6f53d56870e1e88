"""Runs as durable, coordinated records (docs/operations.md): the one service the run routes call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from ..metrics import Metrics
from .bus import EventLog, Notifier, RunEvent, wait_for
from .records import CancelAction, MultitaskStrategy, RunRecord, RunStatus, RunStore
from .workers import RunWorkers, WorkerSettings

ReadinessCheck = Callable[[], Awaitable[None]]

__all__ = [
    "CancelAction",
    "EventLog",
    "MultitaskStrategy",
    "Notifier",
    "RunEvent",
    "RunRecord",
    "RunService",
    "RunStatus",
    "RunStore",
    "RunWorkers",
    "WorkerSettings",
    "running",
]


class RunService:
    """Create, read, wait for, stream and cancel runs; any replica can serve any run."""

    def __init__(self, store: RunStore, events: EventLog, notifier: Notifier, poll_seconds: float) -> None:
        self.store = store
        self.events = events
        self.notifier = notifier
        # Notifications are the fast path; re-reading this often covers one lost in a reconnect.
        self._poll_seconds = poll_seconds

    async def wait(self, run: RunRecord) -> RunRecord | None:
        """The run once it ended; None when it disappeared (rolled back or deleted).

        `run` was just read or created, so the first read is skipped: an end notified before the
        subscription below is found by the next poll.
        """
        with self.notifier.subscribe(str(run.run_id)) as changed:
            latest: RunRecord | None = run
            while latest is not None and not latest.done:
                await wait_for(changed, self._poll_seconds)
                changed.clear()
                latest = await self.store.get(run.thread_id, run.run_id)
            return latest

    async def stream(
        self, thread_id: str, run_id: uuid.UUID, after: int, heartbeat_seconds: float
    ) -> AsyncIterator[RunEvent | None]:
        """The run's events after ID `after`, until it ends; None whenever heartbeat_seconds pass in silence."""
        with self.notifier.subscribe(str(run_id), f"events:{run_id}") as changed:
            idle_since = asyncio.get_running_loop().time()
            while True:
                changed.clear()
                # Status before events: every event is committed before the status that ends the run.
                run = await self.store.get(thread_id, run_id)
                events = await self.events.read(run_id, after)
                for item in events:
                    after = item.id
                    yield item
                if events:
                    idle_since = asyncio.get_running_loop().time()
                    continue
                if run is None or run.done:
                    return
                await wait_for(changed, self._poll_seconds)
                if asyncio.get_running_loop().time() - idle_since >= heartbeat_seconds:
                    idle_since = asyncio.get_running_loop().time()
                    yield None

    async def cancel(self, run_ids: list[uuid.UUID], action: CancelAction) -> list[uuid.UUID]:
        return await self.store.cancel(run_ids, action)

    async def forget_thread(self, user_id: str, thread_id: str) -> None:
        """Before a thread is deleted: its runs in flight are rolled back, its finished runs deleted."""
        inflight = await self.store.cancellable(user_id, ["pending", "running"], thread_id, None)
        await self.store.cancel(inflight, "rollback")
        await self.store.delete_finished_of_thread(thread_id)


@asynccontextmanager
async def running(
    workers: RunWorkers, notifier: Notifier, metrics: Metrics, drain_seconds: float, connect_timeout: float
) -> AsyncIterator[ReadinessCheck]:
    """The run subsystem's background loops as named tasks of the lifespan; yields their readiness check.

    On exit the workers drain first (stop claiming, finish or hand back), while the notifier still runs.
    """
    listener = asyncio.create_task(notifier.run(), name="run-notifier")
    try:
        # Not ready without notifications: start-up fails loudly rather than waiting forever.
        async with asyncio.timeout(connect_timeout):
            await notifier.connected.wait()
    except TimeoutError:
        listener.cancel()
        raise RuntimeError(f"run notifications could not connect: {notifier.last_error}") from None
    workers.start()
    tasks = [listener, *workers.tasks]
    for task in tasks:
        metrics.background_task_up.labels(task.get_name()).set(1)
        task.add_done_callback(lambda done: metrics.background_task_up.labels(done.get_name()).set(0))

    async def check() -> None:
        if stopped := [task.get_name() for task in tasks if task.done()]:
            raise RuntimeError(f"background tasks stopped: {stopped}")
        if not notifier.connected.is_set():
            raise RuntimeError("run notifications are not connected")

    try:
        yield check
    finally:
        await workers.stop(drain_seconds)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
