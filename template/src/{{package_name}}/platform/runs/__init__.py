"""Runs as durable, coordinated records (docs/operations.md), executed by any replica.

Where each part of a run's life happens:
- admission.py: a request (a route's, the cron scheduler's) checked and turned into a run;
- store.py and sql.py: the run as a row in service_runs, under the thread's lock;
- workers.py: claiming and executing runs under a lease, and their outcome;
- graph_events.py: LangGraph's stream parts as the Agent Server's events;
- event_log.py: those events as rows, and the notifications between replicas;
- local.py: a run followed in memory by the replica executing it;
- service.py: RunService, the one service the routes call to wait for, stream, read and cancel runs.
"""

from __future__ import annotations

from .event_log import EventLog, Notifier, RunEvent
from .service import RunService, running
from .store import CancelAction, MultitaskStrategy, RunRecord, RunStatus, RunStore
from .workers import RunWorkers, WorkerSettings

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
