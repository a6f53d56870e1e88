"""The resources the lifespan opened, handed to request handlers through dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore

from ..settings import Settings
from .assistants import AssistantStore
from .core.database import Pool
from .core.leases import Leases
from .core.metrics import Metrics
from .crons import CronStore
from .graphs import Graphs
from .quotas import UserRateLimit
from .runs import RunService
from .runs.admission import Admission
from .threads.ids import ThreadManager
from .threads.registry import ThreadRegistry
from .threads.retention import Retention

ReadinessCheck = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    pool: Pool
    checkpointer: BaseCheckpointSaver[str]
    graphs: Graphs
    registry: ThreadRegistry
    thread_ids: ThreadManager
    metrics: Metrics
    leases: Leases
    runs: RunService
    admission: Admission
    assistants: AssistantStore
    retention: Retention
    # Long-term memory (unscoped: reach it through memory.UserStore) and scheduled runs.
    store: BaseStore
    crons: CronStore
    rate_limit: UserRateLimit
    # What /readyz checks, by name: the database, and the object store when there is one.
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
