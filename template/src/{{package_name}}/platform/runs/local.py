"""Runs executing in this process, as their waiters and stream readers on this replica see them.

A run's end and its events reach a reader on the executing replica in memory, with no query and no
notification; PostgreSQL carries them only to readers elsewhere (see records.WATCH_RUN) and for resumable
streams. A run that leaves this process before it ends (handed back at shutdown, its lease lost) sends
its local readers to the database path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from .graph_events import Event
from .store import RunRecord


class LocalRun:
    """One run executing here: its outcome once recorded, and the events built while anyone reads them."""

    def __init__(self, run: RunRecord, expect_reader: bool) -> None:
        self.run = run
        # The creating stream request reads from the first event, before it has had a chance to subscribe.
        self.expect_reader = expect_reader
        self.events: list[Event] = []
        self._readers: set[asyncio.Event] = set()
        # The run's record once its end is committed; None when it was rolled back. Set to `LEFT` when
        # the run goes on elsewhere.
        self.outcome: asyncio.Future[RunRecord | None | object] = asyncio.get_running_loop().create_future()

    @property
    def wanted(self) -> bool:
        """Whether anyone here may read the run's events (otherwise they need not be built)."""
        return self.expect_reader or bool(self._readers)

    def add(self, events: list[Event]) -> None:
        if not events or not self.wanted:
            return
        self.events.extend(events)
        for reader in self._readers:
            reader.set()

    @contextmanager
    def reading(self, from_start: bool) -> Iterator[asyncio.Event]:
        """An event set whenever events arrive or the run ends; `from_start`: the reader it expected."""
        reader = asyncio.Event()
        self._readers.add(reader)
        if from_start:
            self.expect_reader = False
        try:
            yield reader
        finally:
            self._readers.discard(reader)

    def end(self, record: RunRecord | None | object) -> None:
        if not self.outcome.done():
            self.outcome.set_result(record)
        for reader in self._readers:
            reader.set()

    def fail(self, exc: BaseException) -> None:
        """Recording the outcome failed (a long outage): waiters get the error, as a query would give it."""
        if not self.outcome.done():
            self.outcome.set_exception(exc)
            # Retrieved or not, the waiter answers for it; no "never retrieved" warning when nobody waits.
            self.outcome.exception()
        for reader in self._readers:
            reader.set()


# The outcome of a run that goes on in another replica (or later): ask the database.
LEFT = object()


class LocalRuns:
    """The runs this replica executes, by ID."""

    def __init__(self) -> None:
        self._runs: dict[object, LocalRun] = {}

    def start(self, run: RunRecord, expect_reader: bool = False) -> LocalRun:
        local = LocalRun(run, expect_reader)
        self._runs[run.run_id] = local
        return local

    def get(self, run: RunRecord) -> LocalRun | None:
        return self._runs.get(run.run_id)

    def stop(self, local: LocalRun) -> None:
        if self._runs.get(local.run.run_id) is local:
            del self._runs[local.run.run_id]
