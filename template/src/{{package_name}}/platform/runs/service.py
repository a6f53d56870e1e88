"""RunService: the one service the run routes call to create, read, wait for, stream and cancel runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from ..core.metrics import Metrics
from .event_log import EventLog, Notifier, RunEvent, wait_for
from .graph_events import event
from .local import LEFT, LocalRun
from .store import CancelAction, RunRecord, RunStatus, RunStore, ThreadActivity
from .thread_stream import ThreadStream
from .workers import RunWorkers

ReadinessCheck = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class RunService:
    """Create, read, wait for, stream and cancel runs; any replica can serve any run.

    A run that can start at once is executed by the replica that created it, and its waiters and
    stream readers there follow it in memory (local.py); everyone else follows it through PostgreSQL.
    """

    store: RunStore
    events: EventLog
    notifier: Notifier
    workers: RunWorkers
    # Notifications are the fast path; re-reading this often covers one lost in a reconnect.
    poll_seconds: float

    async def create(self, *, waited: bool = False, streamed: bool = False, **fields: Any) -> RunRecord:
        """RunStore.create, offering this replica's lease: `waited` / `streamed` say the caller will wait
        for the run / read its stream from the start. Shielded: a run admitted under this replica's lease
        starts here even if the request is cancelled meanwhile."""
        return await asyncio.shield(asyncio.ensure_future(self._admit(waited, streamed, fields)))

    async def _admit(self, waited: bool, streamed: bool, fields: dict[str, Any]) -> RunRecord:
        claim = self.workers.offer()
        try:
            admitted = await self.store.create(**fields, claim=claim, watched=waited, streamed=streamed)
        except BaseException:
            if claim is not None:
                self.workers.decline()
            raise
        if admitted.claimed is not None:
            self.workers.execute(admitted.claimed, expect_reader=streamed)
        elif claim is not None:
            self.workers.decline()
        return admitted.run

    async def wait(self, run: RunRecord) -> RunRecord | None:
        """The run once it ended; None when it disappeared (rolled back or deleted)."""
        local = self.workers.local.get(run)
        if local is not None:
            ended = await asyncio.shield(local.outcome)
            if ended is not LEFT:
                return cast(RunRecord | None, ended)
        with self.notifier.subscribe(str(run.run_id)) as changed:
            # A run created as waited for was just read; any other is marked so its end notifies.
            latest = run if run.watched and local is None else await self.store.watch(run, stream=False)
            while latest is not None and not latest.done:
                await wait_for(changed, self.poll_seconds)
                changed.clear()
                latest = await self.store.get(run.thread_id, run.run_id)
            return latest

    async def stream(
        self, run: RunRecord, after: int, heartbeat_seconds: float, from_start: bool
    ) -> AsyncIterator[RunEvent | None]:
        """The run's events until it ends; None whenever heartbeat_seconds pass in silence.

        A resumable run's events are rows: after ID `after`, from any replica. Any other run's are live
        from the moment of asking (`from_start`: its creator's stream, from the first event), as the Agent
        Server streams them; a finished run that was not resumable has none left to send.
        """
        resumable = bool(run.kwargs.get("stream_resumable"))
        local = self.workers.local.get(run)
        if local is not None and not resumable:
            async for item in _live(local, from_start, heartbeat_seconds):
                yield item
            if not _left(local):
                return
            after = 0  # the run goes on elsewhere: its events from there are rows (REQUEUE_RUN)
        # Marked (unless its creator asked for both): the run's end notifies, and its events become rows.
        mark = not (run.watched and run.streamed and local is None)
        async for item in self.rows(run, after, heartbeat_seconds, mark):
            yield item

    async def rows(
        self, run: RunRecord, after: int, heartbeat_seconds: float, mark: bool = True
    ) -> AsyncIterator[RunEvent | None]:
        """The run's events stored as rows, after ID `after`, until it ends; `mark`: first mark it, so that
        its end notifies and its events (from now, if it is not resumable) become rows."""
        if mark and await self.store.watch(run, stream=not run.kwargs.get("stream_resumable")) is None:
            return
        with self.notifier.subscribe(str(run.run_id), f"events:{run.run_id}") as changed:
            idle_since = asyncio.get_running_loop().time()
            while True:
                changed.clear()
                # Status before events: every event is committed before the status that ends the run.
                current = await self.store.get(run.thread_id, run.run_id)
                events = await self.events.read(run.run_id, after)
                for item in events:
                    after = item.id
                    yield item
                if events:
                    idle_since = asyncio.get_running_loop().time()
                    continue
                if current is None or current.done:
                    return
                await wait_for(changed, self.poll_seconds)
                if asyncio.get_running_loop().time() - idle_since >= heartbeat_seconds:
                    idle_since = asyncio.get_running_loop().time()
                    yield None

    def join_thread(
        self, thread_id: str, last_event_id: int | None, modes: list[str], heartbeat_seconds: float
    ) -> AsyncIterator[RunEvent | None]:
        """The thread's stream (GET /threads/{id}/stream); see thread_stream.py."""
        return ThreadStream(self, thread_id, modes).follow(last_event_id, heartbeat_seconds)

    async def thread_joined(self, thread_id: str) -> bool:
        return await self.events.thread_joined(thread_id)

    async def publish_state_update(self, thread_id: str, state: dict[str, Any]) -> None:
        """The thread's new state to its stream's readers, as the Agent Server publishes it."""
        data = event("state_update", {"state": state, "thread_id": thread_id})[1]
        await self.events.append_thread(thread_id, "state_update", data)

    async def get(self, thread_id: str, run_id: uuid.UUID) -> RunRecord | None:
        return await self.store.get(thread_id, run_id)

    async def get_for_user(self, run_id: uuid.UUID, user_id: str) -> RunRecord | None:
        """A run of `user_id`'s by its ID alone, on whatever thread (the cron scheduler's retry looks it up)."""
        return await self.store.get_for_user(run_id, user_id)

    async def list_for_thread(
        self, thread_id: str, status: RunStatus | None, limit: int, offset: int
    ) -> list[RunRecord]:
        return await self.store.list_for_thread(thread_id, status, limit, offset)

    async def delete(self, thread_id: str, run_id: uuid.UUID) -> bool:
        """A finished run's record goes (a pending or running one stays: cancel it first)."""
        return await self.store.delete(thread_id, run_id)

    async def thread_status(self, thread_id: str) -> ThreadActivity:
        """Whether a run is pending or running on the thread, and how its latest run ended."""
        return await self.store.thread_status(thread_id)

    async def cancellable(
        self, user_id: str, statuses: list[RunStatus], thread_id: str | None, run_ids: list[uuid.UUID] | None
    ) -> list[uuid.UUID]:
        """The user's runs in `statuses`, on `thread_id` or among `run_ids` when given."""
        return await self.store.cancellable(user_id, statuses, thread_id, run_ids)

    async def cancel(self, run_ids: list[uuid.UUID], action: CancelAction) -> list[uuid.UUID]:
        return await self.store.cancel(run_ids, action)

    @asynccontextmanager
    async def forgetting_thread(self, user_id: str, thread_id: str) -> AsyncIterator[AsyncConnection[DictRow]]:
        """Before a thread is deleted: under its run lock, its runs in flight are rolled back and its finished
        runs deleted; the caller deletes the thread in the yielded transaction. No run is admitted on the
        thread meanwhile, and one that waited for the lock finds the thread gone (404), so none can run on
        a deleted thread and write its checkpoints again."""
        async with self.store.thread_locked(thread_id) as conn:
            await self.store.forget_thread(conn, user_id, thread_id)
            yield conn


async def _live(local: LocalRun, from_start: bool, heartbeat_seconds: float) -> AsyncIterator[RunEvent | None]:
    """A run's events in memory, as this replica executes it, until it ends or leaves."""
    index = 0 if from_start else len(local.events)
    with local.reading(from_start) as changed:
        while True:
            changed.clear()
            while index < len(local.events):
                name, data = local.events[index]
                index += 1
                yield RunEvent(index, name, data)
            if local.outcome.done():
                return
            if not await wait_for(changed, heartbeat_seconds):
                yield None


def _left(local: LocalRun) -> bool:
    outcome = local.outcome
    return outcome.done() and outcome.exception() is None and outcome.result() is LEFT


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
