"""Run workers: every replica claims pending runs from PostgreSQL, executes them, and renews their leases.

Also the sweeper: any replica ends runs whose lease expired (their replica died) and trims old events.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command
from opentelemetry.trace import StatusCode

from ...errors import Unavailable
from ..checkpointing.latest import Latest, LatestCheckpoints
from ..checkpointing.saver import PooledPostgresSaver
from ..core.database import DATABASE_OUTAGES
from ..core.logs import log_context
from ..core.metrics import Metrics
from ..core.tracing import Tracing
from ..graphs import Graph, Graphs
from ..memory import UserStore
from ..threads.registry import ThreadRegistry
from .event_log import EventLog, EventWriter, Notifier, wait_for
from .graph_events import EventBuilder, event
from .local import LEFT, LocalRun, LocalRuns
from .store import Claim, Claimed, RunRecord, RunStore
from .webhooks import WebhookSender

log = logging.getLogger(__name__)


LANGGRAPH_VERSION = importlib.metadata.version("langgraph")


def graph_config(run: RunRecord) -> RunnableConfig:
    """The config the graph runs with, stamped as the Agent Server stamps it (langgraph_api/stream.py and
    models/run.py): its metadata is the run's (the assistant's, the thread's and the request's) with the
    attempt and LangGraph's version, and configurable names the user, so that graphs written for the Agent
    Server find `user_id` and `langgraph_auth_user_id`. LangGraph copies every scalar of both into each
    checkpoint's metadata."""
    config = cast(RunnableConfig, run.kwargs["config"])
    metadata = {
        **run.metadata,
        **(config.get("metadata") or {}),
        "run_attempt": run.attempt,
        "langgraph_version": LANGGRAPH_VERSION,
        "langgraph_host": "self-hosted",
    }
    # The caller, never what a request says: the graph may scope what it reads or writes by it.
    configurable = {**(config.get("configurable") or {}), "user_id": run.user_id, "langgraph_auth_user_id": run.user_id}
    return {**config, "metadata": metadata, "configurable": configurable}


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    workers: int
    lease_seconds: float
    poll_seconds: float
    sweep_seconds: float
    on_lease_expiry: Literal["error", "retry"]
    max_attempts: int
    event_retention_seconds: float
    max_seconds: float | None = None


class _LeaseLost(Exception):
    """Another replica declared this run's lease expired: stop without writing its outcome."""


class _Slots:
    """The runs this replica may still start: taken by the claimer (waiting) or by run creation (never)."""

    def __init__(self, count: int) -> None:
        self.free = count
        self._freed = asyncio.Event()

    def try_take(self) -> bool:
        if self.free == 0:
            return False
        self.free -= 1
        return True

    async def take(self) -> None:
        while self.free == 0:
            self._freed.clear()
            await self._freed.wait()
        self.free -= 1

    def give(self) -> None:
        self.free += 1
        self._freed.set()


def _lease_owner() -> str:
    """This replica's name on the leases it holds: unique across hosts, processes and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(eq=False)
class RunWorkers:
    """The workers and the sweeper of one replica, started and stopped by the lifespan."""

    store: RunStore
    events: EventLog
    notifier: Notifier
    graphs: Graphs
    checkpointer: BaseCheckpointSaver[str]
    registry: ThreadRegistry
    settings: WorkerSettings
    metrics: Metrics
    tracing: Tracing
    webhooks: WebhookSender | None = None
    # The saver's in-memory latest checkpoints, valid while this replica holds a thread's lease.
    latest: LatestCheckpoints | None = field(init=False)
    owner: str = field(init=False, default_factory=_lease_owner)
    # What waiters and stream readers on this replica read in memory.
    local: LocalRuns = field(init=False, default_factory=LocalRuns)
    tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)
    _slots: _Slots = field(init=False)
    _claiming: bool = field(init=False, default=True)
    _executing: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        checkpointer = self.checkpointer
        self.latest = checkpointer.latest if isinstance(checkpointer, PooledPostgresSaver) else None
        self._slots = _Slots(self.settings.workers)

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._claimer(), name="run-claimer"),
            asyncio.create_task(self._sweeper(), name="run-sweeper"),
        ]

    async def stop(self, grace_seconds: float) -> None:
        """Drain: stop claiming, let running runs finish within the grace period, hand the rest back."""
        self._claiming = False
        self.tasks[0].cancel()
        if self._executing:
            await asyncio.wait(self._executing, timeout=grace_seconds)
        for task in [*self._executing, *self.tasks]:
            task.cancel()
        await asyncio.gather(*self._executing, *self.tasks, return_exceptions=True)

    # Claiming

    async def _claimer(self) -> None:
        """Claims runs while fewer than `workers` execute here.

        One claiming loop per replica, not one per worker: a NOTIFY then costs one claim query, not a
        herd of them competing with running graphs for pooled connections; each claim takes as many runs
        as there are free slots.
        """
        # Nothing more to claim, as far as the last claim saw: wait for a notification (or the poll interval).
        idle = False
        with self.notifier.subscribe("queue") as wake:
            while self._claiming:
                if idle:
                    await wait_for(wake, self.settings.poll_seconds)
                await self._slots.take()
                free = 1
                while self._slots.try_take():
                    free += 1
                # Cleared before the claim: a run enqueued after the claim's snapshot sets it again.
                wake.clear()
                try:
                    claimed = await self.store.claim(self.owner, self.settings.lease_seconds, free)
                except Exception as exc:  # a database outage: keep claiming after the poll interval
                    log.warning("claiming a run failed: %s", exc)
                    claimed = []
                # Claim again at once only when this claim filled every slot or saw more waiting.
                idle = len(claimed) < free and not any(c.more_pending for c in claimed)
                for _ in range(free - len(claimed)):
                    self._slots.give()
                for run in claimed:
                    self._launch(run, self.local.start(run.run))

    # Claimed on creation

    def offer(self) -> Claim | None:
        """A lease for a new run to be inserted already claimed, when a slot is free here; `decline` it
        or `execute` the run."""
        if not self._claiming or not self._slots.try_take():
            return None
        return Claim(self.owner, self.settings.lease_seconds)

    def decline(self) -> None:
        self._slots.give()

    def execute(self, claimed: Claimed, expect_reader: bool) -> LocalRun:
        """Execute a run that creation inserted under this replica's lease (its slot taken by `offer`)."""
        local = self.local.start(claimed.run, expect_reader)
        self._launch(claimed, local)
        return local

    def _launch(self, claimed: Claimed, local: LocalRun) -> None:
        task = asyncio.create_task(self._execute(claimed, local), name=f"run-{claimed.run.run_id}")
        self._executing.add(task)
        task.add_done_callback(self._executing.discard)
        task.add_done_callback(lambda _: self._slots.give())

    # Executing

    async def _execute(self, claimed: Claimed, local: LocalRun) -> None:
        try:
            await self._traced(claimed, local)
        finally:
            # Whatever happened, nobody here waits on this run from memory any more.
            local.end(LEFT)
            self.local.stop(local)

    async def _traced(self, claimed: Claimed, local: LocalRun) -> None:
        run = claimed.run
        carrier = run.kwargs.get("trace_context") or {}
        # The graph task starts inside both: its log records and its SQL spans belong to this run.
        with (
            log_context(thread_id=run.thread_id, run_id=str(run.run_id)),
            self.tracing.run_span(run.run_id, run.thread_id, run.attempt, carrier) as span,
        ):
            status = await self._execute_run(claimed, local)
            span.set_attribute("run.status", status)
            if status == "error":
                span.set_status(StatusCode.ERROR)

    async def _execute_run(self, claimed: Claimed, local: LocalRun) -> str:
        run = claimed.run
        self.metrics.run_queue_wait.observe(claimed.queue_seconds)
        started = time.perf_counter()
        self.metrics.runs_started.inc()
        builder = EventBuilder(_stream_modes(run.kwargs))
        # Rows only for a resumable stream or a reader on another replica; the rest is memory.
        writer = EventWriter(self.events, run.run_id, local, bool(run.kwargs.get("stream_resumable")) or run.streamed)
        graph_task = asyncio.create_task(self._run_graph(run, builder, writer, claimed.latest_checkpoint))
        try:
            cancel_reason = await self._supervise(run, graph_task, writer)
        except _LeaseLost:
            log.warning("run %s lost its lease; another replica ended it", run.run_id)
            return "lease_lost"
        finally:
            if not graph_task.done():
                graph_task.cancel()
                await asyncio.gather(graph_task, return_exceptions=True)
        status, output, error = await self._outcome(run, graph_task, builder, cancel_reason)
        self.metrics.run_duration.labels(status).observe(time.perf_counter() - started)
        # The outcome must reach the database even across a short outage, or waiters wait out the lease.
        try:
            await _retrying(self._record_outcome, run, status, output, error)
        except BaseException as exc:
            local.fail(exc)
            raise
        # Committed: waiters here may answer now.
        if status == "rollback":
            local.end(None)
        elif status != "handed_back":
            ended = replace(run, status=cast(Any, status), output=output, error=error)
            local.end(ended)
            if self.webhooks is not None and (url := run.kwargs.get("webhook")):
                self._send_webhook(url, ended)
        return status

    def _send_webhook(self, url: str, run: RunRecord) -> None:
        assert self.webhooks is not None
        # As langgraph-api's worker sends it: the run, when it started and ended, its final values, its error.
        body = {
            **run.body(),
            "run_started_at": run.started_at.isoformat() if run.started_at else None,
            "run_ended_at": datetime.now(UTC).isoformat(),
        }
        values = {k: v for k, v in run.output.items() if k != "__interrupt__"} if isinstance(run.output, dict) else None
        self.webhooks.submit(url, self.webhooks.policy.payload(body, values, run.error))

    async def _record_outcome(self, run: RunRecord, status: str, output: Any, error: dict[str, Any] | None) -> None:
        if status == "rollback":
            # Rollback: the run and every checkpoint it wrote disappear, as if it never ran.
            await self.checkpointer.adelete_for_runs([str(run.run_id)])
            await self.store.remove(run)
            return
        if status == "handed_back":
            await self.store.requeue(run, self.owner)
            return
        await self.store.finish(run, self.owner, cast(Any, status), output, error)
        if run.temporary:
            # A stateless run's thread (on_completion=delete) goes; its result stays in the run row.
            await self.checkpointer.adelete_thread(run.thread_id)
            await self.registry.delete(run.thread_id, run.user_id)

    async def _supervise(self, run: RunRecord, graph_task: asyncio.Task[None], writer: EventWriter) -> str | None:
        """Renew the lease until the graph ends; a cancel request (from any replica) stops it early."""
        try:
            return await self._renew_until_done(run, graph_task, writer)
        except asyncio.CancelledError:
            # Shutdown past the drain period: the run goes back to the queue for another replica.
            return "handed_back"

    async def _renew_until_done(
        self, run: RunRecord, graph_task: asyncio.Task[None], writer: EventWriter
    ) -> str | None:
        heartbeat = self.settings.lease_seconds / 3
        deadline = time.monotonic() + (self.settings.max_seconds or math.inf)
        run_id = run.run_id
        # A cancel request, or a reader on another replica: either way the renewal says which.
        with self.notifier.subscribe(f"cancel:{run_id}", f"stream:{run_id}") as asked:
            while not graph_task.done():
                waker = asyncio.create_task(asked.wait())
                wait = min(heartbeat, max(deadline - time.monotonic(), 0))
                try:
                    await asyncio.wait({graph_task, waker}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                asked.clear()
                if graph_task.done():
                    break
                if time.monotonic() >= deadline:
                    # Checkpoints of the steps that finished stay: the next run on the thread goes on from them.
                    self.metrics.run_timeouts.inc()
                    return "timeout"
                try:
                    renewal = await self.store.renew(run_id, self.owner, self.settings.lease_seconds)
                except DATABASE_OUTAGES as exc:  # an outage shorter than the lease costs nothing
                    log.warning("renewing the lease of run %s failed: %s", run_id, exc)
                    continue
                if not renewal.ours:
                    raise _LeaseLost()
                # Someone on another replica reads the stream: the events from now on become rows.
                writer.persist = writer.persist or renewal.streamed
                if renewal.cancel_reason is not None:
                    self.metrics.run_cancellations.labels(renewal.cancel_reason).inc()
                    return renewal.cancel_reason
        return None

    async def _outcome(
        self, run: RunRecord, graph_task: asyncio.Task[None], builder: EventBuilder, cancel_reason: str | None
    ) -> tuple[str, Any, dict[str, Any] | None]:
        if cancel_reason == "handed_back":
            return "handed_back", None, None
        if cancel_reason == "rollback":
            return "rollback", None, None
        if cancel_reason == "timeout":
            error = {
                "error": "TimeoutError",
                "message": f"run exceeded RUN_MAX_SECONDS ({self.settings.max_seconds:g} s)",
                "unavailable": False,
            }
            await self._append_error(run, error)
            return "timeout", builder.output(), error
        if cancel_reason is not None:
            return "interrupted", builder.output(), None
        exc = graph_task.exception()
        if exc is None:
            return "success", builder.output(), None
        log.warning("run %s failed: %r", run.run_id, exc)
        # An outage is the caller's to retry (a 503 when the wait has not answered yet), a bug is not.
        unavailable = isinstance(exc, (*DATABASE_OUTAGES, Unavailable))
        error = {"error": type(exc).__name__, "message": str(exc), "unavailable": unavailable}
        await self._append_error(run, error)
        return "error", None, error

    async def _append_error(self, run: RunRecord, error: dict[str, Any]) -> None:
        try:
            await self.events.append(run.run_id, [event("error", error)])
        except DATABASE_OUTAGES as append_failed:
            log.warning("run %s: its error event was lost: %s", run.run_id, append_failed)

    async def _run_graph(self, run: RunRecord, builder: EventBuilder, writer: EventWriter, latest: Latest) -> None:
        if self.latest is None:
            await self._stream_graph(run, builder, writer)
            return
        # Runs in the graph's own task: the scope covers the graph's reads and nothing else.
        with self.latest.holding(run.thread_id, latest):
            await self._stream_graph(run, builder, writer)

    async def _stream_graph(self, run: RunRecord, builder: EventBuilder, writer: EventWriter) -> None:
        kwargs = run.kwargs
        config = graph_config(run)
        if run.attempt == 1:
            # As the Agent Server: the graph's root run is the run (the 'events' stream names it).
            config = {**config, "run_id": run.run_id}
        if callbacks := self.tracing.callbacks(run.run_id, run.thread_id):
            config = {**config, "callbacks": callbacks}
        graph_input: Any = kwargs.get("input")
        if kwargs.get("command") is not None:
            graph_input = Command(**kwargs["command"])
        if run.attempt > 1 and await self._wrote_checkpoints(run):
            # A re-run after a crash continues from the run's last checkpoint instead of repeating its input.
            graph_input = None
        if writer.wanted:
            writer.add([event("metadata", {"run_id": str(run.run_id), "attempt": run.attempt})])
        # The run sees only its user's memory: a copy of the graph whose store is scoped to run.user_id.
        # The graph of the run's assistant, as admission put it in the config; a graph langgraph.json no longer
        # names fails the run (404's message) rather than running another graph.
        graph_id = config.get("configurable", {}).get("graph_id")
        graph = self.graphs.get_graph(graph_id) if isinstance(graph_id, str) else self.graphs.default
        if graph.store is not None:
            graph = graph.copy({"store": UserStore(graph.store, run.user_id)})
        options: dict[str, Any] = {
            # The assistant's context under the run's: what graphs with a context_schema read.
            "context": kwargs.get("context") or None,
            "stream_mode": builder.graph_modes,
            "interrupt_before": kwargs.get("interrupt_before"),
            "interrupt_after": kwargs.get("interrupt_after"),
            "durability": kwargs.get("durability", "async"),
            "subgraphs": True,
        }
        try:
            async for namespace, mode, chunk in _graph_parts(graph, graph_input, config, options, builder, writer):
                if kwargs.get("stream_subgraphs") or not namespace:
                    # Events nobody can read are not built: a wait with no stream reader only needs the output.
                    writer.add(builder.part(namespace, mode, chunk, writer.wanted))
            if kwargs.get("durability") == "exit":
                await self._drop_exit_stub(run)
            writer.add(builder.complete() if writer.wanted else [])
        except BaseException:
            await writer.abandon()
            raise
        # Every event is committed before the run's status says it ended (stream readers rely on it).
        await writer.close()

    async def _drop_exit_stub(self, run: RunRecord) -> None:
        """A thread's first run with durability="exit" leaves one checkpoint, as the Agent Server's do.
        LangGraph writes an empty stub (step -2) before the final checkpoint when a delta channel's writes
        have no earlier checkpoint to be stored on; sealing the final one (keep_latest) makes it whole."""
        config: RunnableConfig = {"configurable": {"thread_id": run.thread_id, "checkpoint_ns": ""}}
        written = [c async for c in self.checkpointer.alist(config, filter={"run_id": str(run.run_id)}, limit=3)]
        stub = written[-1].metadata if len(written) == 2 else {}
        if stub.get("step") == -2 and "source" not in stub and written[-1].parent_config is None:
            # A subgraph's delta channels cannot be sealed (saver.py): then the stub stays, the state whole.
            with contextlib.suppress(NotImplementedError):
                await self.checkpointer.aprune([run.thread_id], strategy="keep_latest")

    async def _wrote_checkpoints(self, run: RunRecord) -> bool:
        config: RunnableConfig = {"configurable": {"thread_id": run.thread_id, "checkpoint_ns": ""}}
        async for _ in self.checkpointer.alist(config, filter={"run_id": str(run.run_id)}, limit=1):
            return True
        return False

    # Sweeping

    async def _sweeper(self) -> None:
        while True:
            try:
                expired = await self.store.expire_leases(
                    self.settings.on_lease_expiry == "retry", self.settings.max_attempts
                )
                for row in expired:
                    log.warning("run %s lost its lease: now %s", row["run_id"], row["status"])
                    self.metrics.run_lease_expiries.inc()
                await self.events.trim(self.settings.event_retention_seconds)
                # A stateless run's thread is normally deleted when it ends; this also catches runs
                # cancelled before they started, which no worker saw.
                for thread_id, user_id in await self.store.delete_finished_temporary(
                    self.settings.event_retention_seconds
                ):
                    await self.checkpointer.adelete_thread(thread_id)
                    await self.registry.delete(thread_id, user_id)
                counts, oldest = await self.store.counts()
                self.metrics.runs_pending.set(counts.get("pending", 0))
                self.metrics.runs_running.set(counts.get("running", 0))
                self.metrics.runs_oldest_pending_age.set(oldest)
            except Exception as exc:  # the sweeper outlives database outages
                log.warning("run sweep failed: %s", exc)
            await asyncio.sleep(self.settings.sweep_seconds)


async def _retrying(call: Callable[..., Awaitable[None]], *args: Any, attempts: int = 20) -> None:
    for attempt in range(attempts):
        try:
            await call(*args)
            return
        except DATABASE_OUTAGES as exc:
            if attempt == attempts - 1:
                raise
            log.warning("recording a run's outcome failed, retrying: %s", exc)
            await asyncio.sleep(min(0.1 * 2**attempt, 1.0))


async def _graph_parts(
    graph: Graph,
    graph_input: Any,
    config: RunnableConfig,
    options: dict[str, Any],
    builder: EventBuilder,
    writer: EventWriter,
) -> AsyncIterator[tuple[tuple[str, ...], str, Any]]:
    """The graph's (namespace, mode, chunk) parts; with the 'events' mode asked for, from astream_events v2,
    whose other events go to the writer as they come (the root's on_chain_stream events are the parts)."""
    if not builder.astream_events:
        async for part in graph.astream(graph_input, config, **options):
            yield cast(tuple[tuple[str, ...], str, Any], part)
        return
    async for item in graph.astream_events(graph_input, config, version="v2", **options):
        if item["event"] == "on_chain_stream" and not item["parent_ids"]:
            yield cast(tuple[tuple[str, ...], str, Any], item["data"]["chunk"])
        else:
            writer.add(builder.graph_event(cast(dict[str, Any], item), writer.wanted))


def _stream_modes(kwargs: dict[str, Any]) -> list[str]:
    modes = kwargs.get("stream_mode") or ["values"]
    return [modes] if isinstance(modes, str) else list(modes)
