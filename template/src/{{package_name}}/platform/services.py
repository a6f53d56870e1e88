"""The resources the lifespan opened, handed to request handlers through dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from ..errors import Conflict
from ..settings import Settings
from .database import Pool
from .metrics import Metrics
from .registry import ThreadRegistry
from .threads import ThreadManager

ReadinessCheck = Callable[[], Awaitable[None]]


class ActiveRuns:
    """One run per thread at a time in this process (the Agent Server's 'reject' strategy)."""

    def __init__(self) -> None:
        self._threads: set[str] = set()

    def claim(self, thread_id: str) -> None:
        if thread_id in self._threads:
            raise Conflict("Thread is busy with another run; retry when it finishes")
        self._threads.add(thread_id)

    def release(self, thread_id: str) -> None:
        self._threads.discard(thread_id)


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    pool: Pool
    checkpointer: BaseCheckpointSaver[str]
    graph: CompiledStateGraph  # type: ignore[type-arg]
    registry: ThreadRegistry
    thread_ids: ThreadManager
    metrics: Metrics
    # What /readyz checks, by name: the database, and the object store when there is one.
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    active_runs: ActiveRuns = field(default_factory=lambda: ActiveRuns())
