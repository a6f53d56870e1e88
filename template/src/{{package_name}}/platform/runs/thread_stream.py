"""A thread's stream (GET /threads/{id}/stream), as langgraph_runtime_inmem joins one: the events of every run
on the thread from the moment of joining, each run's end as a `metadata` event {"status": "run_done"}, each
state update (POST /threads/{id}/state) as a `state_update` event, and with a Last-Event-ID the resumable
runs' events after it first.

Across replicas: while a reader follows the thread (service_thread_streams), the thread's new runs write their
events as rows from the first one and notify "thread:<ID>", so a reader anywhere follows them in full; a run
already in flight is followed as a joined run stream is, live from the moment of asking.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .event_log import RunEvent, thread_key, wait_for
from .store import RunRecord

if TYPE_CHECKING:
    from .service import RunService

# The reader renews its mark this often while it reads; a reader that died stops counting three later.
MARK_SECONDS = 10.0
# The Agent Server's thread stream modes (langgraph_api/schema.py ThreadStreamMode).
THREAD_STREAM_MODES = ("run_modes", "lifecycle", "state_update")


def wanted(modes: list[str], item: RunEvent) -> bool:
    """Whether `modes` take the event, as langgraph_runtime_inmem's should_filter_event decides."""
    if "run_modes" in modes and item.event != "state_update":
        return True
    if "state_update" in modes and item.event == "state_update":
        return True
    if "lifecycle" in modes and item.event == "metadata":
        data = json.loads(item.data)
        return isinstance(data, dict) and (data.get("status") == "run_done" or {"run_id", "attempt"} <= data.keys())
    return False


def run_done(run_id: uuid.UUID) -> RunEvent:
    return RunEvent(0, "metadata", json.dumps({"status": "run_done", "run_id": str(run_id)}))


class ThreadStream:
    """One reader of one thread: a follower task per run, merged in the order their events arrive."""

    def __init__(self, service: RunService, thread_id: str, modes: list[str]) -> None:
        self._service = service
        self._thread_id = thread_id
        self._modes = modes
        self._arrived: list[RunEvent] = []
        self._woken = asyncio.Event()
        self._followers: dict[uuid.UUID, asyncio.Task[None]] = {}
        # Every run followed so far: one listed in flight again after its end is not followed twice.
        self._seen: set[uuid.UUID] = set()

    async def follow(self, last_event_id: int | None, heartbeat_seconds: float) -> AsyncIterator[RunEvent | None]:
        """The thread's events until the reader leaves; None whenever heartbeat_seconds pass in silence."""
        service = self._service
        after = last_event_id if last_event_id is not None else await service.events.last_id()
        # The log's head when the reader joined: a run with events after it is followed even if it ended
        # before the reader heard of it.
        joined = after if last_event_id is None else await service.events.last_id()
        loop = asyncio.get_running_loop()
        with service.notifier.subscribe(f"thread:{self._thread_id}") as announced:
            try:
                runs = await service.store.join_thread(self._thread_id, 3 * MARK_SECONDS, joined)
                marked = idle_since = loop.time()
                if last_event_id is not None:
                    for item in await self._replay(after, [run.run_id for run in runs]):
                        if wanted(self._modes, item):
                            yield item
                own = asyncio.create_task(self._follow_thread(after), name=f"thread-stream-{self._thread_id}")
                self._followers[thread_key(self._thread_id)] = own
                while True:
                    for run in runs:
                        if run.run_id not in self._seen:
                            self._start(run, after)
                    self._woken.clear()
                    arrived, self._arrived = self._arrived, []
                    for item in arrived:
                        idle_since = loop.time()
                        if wanted(self._modes, item):
                            yield item
                    self._raise_failures()
                    if not arrived:
                        due = min(idle_since + heartbeat_seconds, marked + MARK_SECONDS / 2)
                        await _either(self._woken, announced, max(due - loop.time(), 0))
                        if loop.time() - idle_since >= heartbeat_seconds:
                            idle_since = loop.time()
                            yield None
                    # A new run was announced, or the mark is due: the runs again, with the mark renewed.
                    if announced.is_set() or loop.time() - marked >= MARK_SECONDS / 2:
                        announced.clear()
                        runs = await service.store.join_thread(self._thread_id, 3 * MARK_SECONDS, joined)
                        marked = loop.time()
            finally:
                for task in self._followers.values():
                    task.cancel()
                await asyncio.gather(*self._followers.values(), return_exceptions=True)

    def _start(self, run: RunRecord, after: int) -> None:
        task = asyncio.create_task(self._follow_run(run, after), name=f"thread-stream-{run.run_id}")
        self._followers[run.run_id] = task
        self._seen.add(run.run_id)

    async def _follow_run(self, run: RunRecord, after: int) -> None:
        resumable = bool(run.kwargs.get("stream_resumable"))
        service = self._service
        # Rows from its first event when it wrote them from the start (resumable, or the thread was joined).
        events = (
            service.rows(run, after, heartbeat_seconds=3600)
            if resumable or run.streamed
            else service.stream(run, 0, heartbeat_seconds=3600, from_start=False)
        )
        async for item in events:
            if item is not None:
                self._arrived.append(item if resumable else RunEvent(0, item.event, item.data))
                self._woken.set()
        self._arrived.append(run_done(run.run_id))
        self._woken.set()

    async def _follow_thread(self, after: int) -> None:
        """The thread's own events (state_update), as they are written, until the reader leaves."""
        key, log = thread_key(self._thread_id), self._service.events
        with self._service.notifier.subscribe(f"events:{key}") as written:
            while True:
                written.clear()
                for item in await log.read(key, after):
                    after = item.id
                    self._arrived.append(item)
                    self._woken.set()
                await wait_for(written, self._service.poll_seconds)

    def _raise_failures(self) -> None:
        """A follower's error (a database outage) ends the stream, as a run stream's would; ended ones go."""
        for key, task in list(self._followers.items()):
            if task.done():
                if (error := task.exception()) is not None:
                    raise error
                del self._followers[key]

    async def _replay(self, after: int, followed: list[uuid.UUID]) -> list[RunEvent]:
        """The events after `after` of the thread's resumable runs not in flight, each run's end after its last."""
        replayed: list[RunEvent] = []
        previous: uuid.UUID | None = None
        while rows := await self._service.events.read_thread(self._thread_id, after, followed):
            for run_id, item in rows:
                self._seen.add(run_id)
                if previous is not None and run_id != previous:
                    replayed.append(run_done(previous))
                replayed.append(item)
                previous, after = run_id, item.id
        if previous is not None:
            replayed.append(run_done(previous))
        return replayed


async def _either(first: asyncio.Event, second: asyncio.Event, seconds: float) -> None:
    waiters = {asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
