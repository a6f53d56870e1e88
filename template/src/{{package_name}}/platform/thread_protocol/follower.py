"""A thread's runs one after another, as the protocol's event stream replays and follows them: the events
still in the log of its finished resumable runs first (from the beginning, as the Agent Server replays a
thread), then each run in flight or admitted later, with its record at its start and end.

Runs on one thread execute one at a time (the thread's lock and claim order), so following them in turn keeps
each run's events together; the protocol's events carry no run ID and need that."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..runs import RunEvent, RunRecord, RunService
from ..runs.event_log import wait_for
from ..runs.thread_stream import MARK_SECONDS


@dataclass(frozen=True, slots=True)
class RunBegan:
    run: RunRecord


@dataclass(frozen=True, slots=True)
class RunLogged:
    run_id: uuid.UUID
    event: RunEvent


@dataclass(frozen=True, slots=True)
class RunEnded:
    run_id: uuid.UUID
    run: RunRecord | None  # None: rolled back (its record deleted)


Followed = RunBegan | RunLogged | RunEnded


class ThreadFollower:
    def __init__(self, runs: RunService, thread_id: str, heartbeat_seconds: float) -> None:
        self._runs = runs
        self._thread_id = thread_id
        self._heartbeat = heartbeat_seconds
        self._done: set[uuid.UUID] = set()
        self._after = 0

    async def follow(self) -> AsyncIterator[Followed | None]:
        """Until the reader leaves; None whenever a heartbeat passes in silence."""
        runs = self._runs
        with runs.notifier.subscribe(f"thread:{self._thread_id}") as announced:
            while True:
                announced.clear()
                # Marks the thread as followed: its new runs announce themselves and log from their first event.
                in_flight = await runs.store.join_thread(self._thread_id, 3 * MARK_SECONDS)
                async for item in self._logged([run.run_id for run in in_flight]):
                    yield item
                for run in in_flight:
                    if run.run_id not in self._done:
                        async for item in self._run(run, 0):
                            yield item
                if not await wait_for(announced, min(self._heartbeat, MARK_SECONDS / 2)):
                    yield None

    async def _logged(self, in_flight: list[uuid.UUID]) -> AsyncIterator[Followed | None]:
        """Runs not in flight with events after the last one sent: the history, then any run that began and
        ended between two looks. One still running (admitted after the look) is followed to its end."""
        current: RunRecord | None = None
        skipped: uuid.UUID | None = None
        while rows := await self._runs.events.read_thread(self._thread_id, self._after, in_flight):
            for run_id, event in rows:
                self._after = event.id
                if run_id in self._done or run_id == skipped:
                    continue
                if current is None or current.run_id != run_id:
                    if current is not None:
                        async for item in self._close(current):
                            yield item
                    current = await self._runs.get(self._thread_id, run_id)
                    if current is None:  # rolled back: its events are going too
                        skipped = run_id
                        continue
                    yield RunBegan(current)
                yield RunLogged(run_id, event)
        if current is not None:
            async for item in self._close(current):
                yield item

    async def _close(self, run: RunRecord) -> AsyncIterator[Followed | None]:
        latest = await self._runs.get(self._thread_id, run.run_id)
        if latest is not None and not latest.done:
            async for item in self._run(latest, self._after, began=True):
                yield item
            return
        self._done.add(run.run_id)
        yield RunEnded(run.run_id, latest)

    async def _run(self, run: RunRecord, after: int, began: bool = False) -> AsyncIterator[Followed | None]:
        if not began:
            yield RunBegan(run)
        async for event in self._runs.rows(run, after, self._heartbeat):
            if event is None:
                yield None
                continue
            self._after = max(self._after, event.id)
            yield RunLogged(run.run_id, event)
        self._done.add(run.run_id)
        yield RunEnded(run.run_id, await self._runs.get(self._thread_id, run.run_id))
