"""Run admission: what turns a request into a run, whoever asks (the run routes, the cron scheduler).

The Agent Server's run-create fields, the checks made before a run exists (nodes, input, command, the
recursion cap: a stream's 200 cannot be taken back), the merge of the assistant's config and context
under the run's, and the thread the run goes on. RunService then admits it under the thread's lock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from langchain_core.messages import convert_to_messages
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, ConfigDict, Field

from ...errors import BadRequest, InvalidInput, ThreadNotFound, TooManyRequests
from ..assistants import Assistant, AssistantStore
from ..core import tracing
from ..core.fields import JsonObject, StorableText
from ..core.logs import bind, current
from ..core.metrics import Metrics
from ..graphs import Graph, Graphs
from ..threads.ids import ThreadManager
from ..threads.registry import ThreadRegistry
from .service import RunService
from .store import MultitaskStrategy, RunRecord
from .webhooks import WebhookPolicy

# The Agent Server's modes (langgraph_api/schema.py) but 'tools' and 'lifecycle', which it refuses (422)
# outside its v2 event streaming.
StreamMode = Literal[
    "values", "updates", "messages", "messages-tuple", "custom", "debug", "events", "tasks", "checkpoints"
]
Follow = Literal["wait", "stream"]


class RunCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resume: Any = None
    update: JsonObject | None = None
    goto: str | list[str] | None = None


class CheckpointSelector(BaseModel):
    model_config = ConfigDict(extra="ignore")
    checkpoint_id: StorableText | None = Field(default=None, max_length=256)
    checkpoint_ns: StorableText = Field(default="", max_length=1024)


class RunCreate(BaseModel):
    # langgraph-sdk sends options this service does not implement (feedback keys...): ignore them.
    model_config = ConfigDict(extra="ignore")
    assistant_id: StorableText = Field(max_length=256)
    input: dict[str, Any] | None = None
    command: RunCommand | None = None
    config: JsonObject | None = None
    context: JsonObject | None = None
    metadata: JsonObject | None = None
    stream_mode: StreamMode | list[StreamMode] = "values"
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: list[StorableText] | Literal["*"] | None = None
    interrupt_after: list[StorableText] | Literal["*"] | None = None
    # As the Agent Server: a step's checkpoint is written while the next step runs, and every one is
    # committed before the run ends (and so before its waiters hear of it).
    durability: Literal["sync", "async", "exit"] = "async"
    checkpoint: CheckpointSelector | None = None
    checkpoint_id: StorableText | None = Field(default=None, max_length=256)
    multitask_strategy: MultitaskStrategy = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_disconnect: Literal["cancel", "continue"] = "continue"
    on_completion: Literal["delete", "keep"] = "delete"
    after_seconds: float = Field(default=0, ge=0, le=86_400 * 7)
    # POSTed the run when it ends (webhooks.py); checked against the policy now, a 422 if refused.
    webhook: StorableText | None = Field(default=None, max_length=65_536)


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    max_recursion_limit: int = 100
    max_user_runs: int | None = None


def check_nodes(graph: Graph, field: str, nodes: list[str] | str | None) -> None:
    known = set(graph.nodes)
    names = [] if nodes in (None, "*") else ([nodes] if isinstance(nodes, str) else nodes)
    if unknown := [n for n in names if n not in known]:
        raise InvalidInput(f"{field} names unknown nodes {unknown}; the graph has {sorted(known)}")


def check_input(graph: Graph, graph_input: dict[str, Any]) -> None:
    channels = {name for name in graph.channels if not name.startswith("__")}
    if unknown := sorted(set(graph_input) - channels):
        raise InvalidInput(f"input has unknown keys {unknown}; the state has {sorted(channels)}")
    if "messages" in graph_input:
        try:
            messages = graph_input["messages"]
            if not isinstance(messages, list):
                raise ValueError("input.messages must be a list")
            convert_to_messages(messages)
        except Exception as exc:  # langchain raises several types for malformed messages
            raise InvalidInput(f"input.messages is not a list of chat messages: {exc}") from exc


# The Agent Server's words (langgraph_api/models/run.py), which clients may match on.
CONFIGURABLE_AND_CONTEXT = (
    "Cannot specify both configurable and context. Prefer setting context alone. Context was introduced in "
    "LangGraph 0.6.0 and is the long term planned replacement for configurable."
)


def run_context(body: RunCreate, assistant: Assistant) -> JsonObject:
    if (body.config or {}).get("configurable") and body.context:
        raise BadRequest(CONFIGURABLE_AND_CONTEXT)
    return {**assistant.context, **(body.context or {})}


def run_config(
    thread_id: str,
    run_id: uuid.UUID,
    body: RunCreate,
    assistant: Assistant,
    max_recursion_limit: int,
    context: JsonObject | None = None,
) -> RunnableConfig:
    # The run's config over its assistant's, key by key within configurable.
    client = {**assistant.config, **(body.config or {})}
    # The context is mirrored into configurable as the Agent Server does, so that its scalar values land in
    # every checkpoint's metadata (langgraph's get_checkpoint_metadata copies them from configurable).
    # The thread, run and checkpoint are the server's to set; the rest of configurable is the graph's.
    mirrored = {
        **(assistant.config.get("configurable") or {}),
        **(client.get("configurable") or {}),
        **(context or {}),
    }
    configurable = {k: v for k, v in mirrored.items() if not k.startswith(("thread_id", "checkpoint", "run_id", "__"))}
    configurable.update(assistant_id=assistant.assistant_id, graph_id=assistant.graph_id)
    configurable["thread_id"] = thread_id
    # In every checkpoint's metadata: a rollback deletes the checkpoints of its run by this ID.
    configurable["run_id"] = str(run_id)
    checkpoint_id = body.checkpoint_id or (body.checkpoint.checkpoint_id if body.checkpoint else None)
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    # As the Agent Server: the request that made the run, in its checkpoints' metadata (a cron's run has none).
    if (request_id := current("request_id")) is not None:
        configurable.setdefault("langgraph_request_id", request_id)
    # The cap (RUN_MAX_RECURSION_LIMIT) bounds the steps, and so the model calls, one run may make.
    recursion_limit = client.get("recursion_limit", min(25, max_recursion_limit))
    if type(recursion_limit) is not int or not 1 <= recursion_limit <= max_recursion_limit:
        raise InvalidInput(f"config.recursion_limit must be an integer between 1 and {max_recursion_limit}")
    return {"configurable": configurable, "recursion_limit": recursion_limit, "metadata": body.metadata or {}}


def run_metadata(body: RunCreate, assistant: Assistant) -> dict[str, Any]:
    """A run's own metadata, merged as the Agent Server merges it: the assistant's, then the config's, then the
    request's, naming the assistant the run resolved to. (The thread's goes under it as the run is stored.)"""
    from_config = (body.config or {}).get("metadata")
    return {
        **assistant.metadata,
        **(from_config if isinstance(from_config, dict) else {}),
        **(body.metadata or {}),
        "assistant_id": assistant.assistant_id,
    }


def new_thread_config(assistant_config: dict[str, Any], request_config: dict[str, Any]) -> dict[str, Any]:
    """The config a run leaves on the thread it creates, as the Agent Server's: the assistant's and the
    request's, with the assistant's configurable alone. (On an existing idle thread, service_admit_run
    merges the thread's own between them.)"""
    return {**assistant_config, **request_config, "configurable": dict(assistant_config.get("configurable") or {})}


@dataclass(frozen=True, slots=True)
class Admission:
    """Validates run requests and admits them as runs, on a caller's thread or a new stateless one."""

    graphs: Graphs
    assistants: AssistantStore
    registry: ThreadRegistry
    thread_ids: ThreadManager
    runs: RunService
    metrics: Metrics
    settings: AdmissionSettings
    webhooks: WebhookPolicy = field(default_factory=WebhookPolicy)

    async def kwargs(self, body: RunCreate, thread_id: str, run_id: uuid.UUID, assistant: Assistant) -> dict[str, Any]:
        """What the worker runs, validated before the run is queued."""
        # The assistant's graph: an assistant saved for a graph langgraph.json no longer names is a 404.
        graph = self.graphs.get_graph(assistant.graph_id)
        if body.webhook is not None:
            await self.webhooks.check(body.webhook)
        check_nodes(graph, "interrupt_before", body.interrupt_before)
        check_nodes(graph, "interrupt_after", body.interrupt_after)
        context = run_context(body, assistant)
        config = run_config(thread_id, run_id, body, assistant, self.settings.max_recursion_limit, context)
        command: dict[str, Any] | None = None

        async def busy() -> bool:
            # The thread's state decides what can run only when no earlier run is queued to change it first.
            return (await self.runs.thread_status(thread_id)).busy

        if body.command is not None:
            given = body.command.model_fields_set
            if not given:
                raise InvalidInput("command needs at least one of resume, update, goto")
            if body.command.goto is not None:
                check_nodes(graph, "command.goto", body.command.goto)
            if body.command.update is not None:
                check_input(graph, body.command.update)
            if "resume" in given and not await busy() and not (await graph.aget_state(config)).interrupts:
                raise InvalidInput("the thread has no interrupt to resume")
            command = {name: getattr(body.command, name) for name in given}
        elif body.input is None:
            if not await busy() and not (await graph.aget_state(config)).next:
                raise InvalidInput("nothing to run: send input, or a command to resume an interrupt")
        elif not body.input:
            raise InvalidInput("input is empty")
        else:
            check_input(graph, body.input)
        return {
            # A command wins over an input sent beside it, as on the Agent Server: agent-chat-ui resumes an
            # interrupt with `input: {}` and the command.
            "input": None if command is not None else body.input,
            "command": command,
            "config": config,
            "context": context,
            "stream_mode": body.stream_mode if isinstance(body.stream_mode, list) else [body.stream_mode],
            "stream_subgraphs": body.stream_subgraphs,
            "stream_resumable": body.stream_resumable,
            "interrupt_before": body.interrupt_before,
            "interrupt_after": body.interrupt_after,
            "durability": body.durability,
            "webhook": body.webhook,
            # The request's trace context: the worker that executes the run continues this trace.
            "trace_context": tracing.carrier(),
        }

    async def validate(self, user: str, body: RunCreate, thread_id: str | None) -> None:
        """Check `body` as the run it would make on `thread_id` (None: a stateless one), making none."""
        probe = thread_id or self.thread_ids.generate_thread_id(user, "stateless")
        assistant = await self.assistants.get(body.assistant_id, user)
        await self.kwargs(body, probe, uuid.uuid4(), assistant)

    async def on_thread(
        self,
        user: str,
        thread_id: str,
        body: RunCreate,
        follow: Follow | None = None,
        run_id: uuid.UUID | None = None,
    ) -> RunRecord:
        """A run on the caller's thread; with if_not_exists=create, an ID this server issued to them, or a UUID
        of their choosing, may be new. A run with input only has the ID's signature checked here: its own
        transaction finds the thread (or 404s). `follow`: the caller will wait for its end or read its stream
        from the start. `run_id`: the run's ID chosen beforehand (a cron's tick), new otherwise."""
        thread_id = self.thread_ids.stored_id(user, thread_id)
        if not self.thread_ids.is_owner(thread_id, user):
            raise ThreadNotFound()  # forged, foreign and unknown IDs all look the same
        # No input: the run's validation reads the thread's state, which must be the caller's existing thread.
        if body.if_not_exists == "create" or body.input is None:
            if await self.registry.get(thread_id, user) is None:
                if body.if_not_exists != "create":
                    raise ThreadNotFound()
                metadata = {"session_type": "default", "user_id": user}
                await self.registry.create(thread_id, user, "default", metadata)
        return await self._admit(user, thread_id, body, False, False, follow, run_id)

    async def stateless(
        self, user: str, body: RunCreate, follow: Follow | None = None, run_id: uuid.UUID | None = None
    ) -> RunRecord:
        """A run on a new thread of the caller's, deleted when the run ends unless on_completion=keep."""
        thread_id = self.thread_ids.generate_thread_id(user, "stateless")
        temporary = body.on_completion == "delete"
        return await self._admit(user, thread_id, body, temporary, True, follow, run_id)

    async def _admit(
        self,
        user: str,
        thread_id: str,
        body: RunCreate,
        temporary: bool,
        new_thread: bool,
        follow: Follow | None,
        run_id: uuid.UUID | None,
    ) -> RunRecord:
        run_id = run_id or uuid.uuid4()
        bind(thread_id=thread_id, run_id=str(run_id))
        assistant = await self.assistants.get(body.assistant_id, user)
        kwargs = await self.kwargs(body, thread_id, run_id, assistant)
        # As the Agent Server does: a search by graph or assistant finds the threads it ran on.
        stamp: dict[str, Any] = {"graph_id": assistant.graph_id, "assistant_id": assistant.assistant_id}
        if new_thread:
            # Registered only once the body is valid: a refused stateless run leaves no thread behind.
            metadata = {"session_type": "stateless", "user_id": user, **stamp}
            config = new_thread_config(assistant.config, body.config or {})
            await self.registry.create(thread_id, user, "stateless", metadata, config)
        else:
            # Merged into the thread's config by the run's admission, when the thread is idle.
            stamp["config"] = {"assistant": assistant.config, "run": body.config or {}}
        try:
            return await self.runs.create(
                waited=follow is not None,
                streamed=follow == "stream",
                run_id=run_id,
                thread_id=thread_id,
                user_id=user,
                assistant_id=assistant.assistant_id,
                strategy=body.multitask_strategy,
                kwargs=kwargs,
                metadata=run_metadata(body, assistant),
                temporary=temporary,
                after_seconds=body.after_seconds,
                max_user_runs=self.settings.max_user_runs,
                # The thread is touched (and must exist) in the run's transaction; a new one is fresh already.
                stamp=None if new_thread else stamp,
            )
        except TooManyRequests:
            self.metrics.user_limit_rejections.labels("active_runs").inc()
            if new_thread:
                # The refused run's thread was registered for it alone: it holds nothing yet.
                await self.registry.delete(thread_id, user)
            raise
        except psycopg.errors.UniqueViolation:
            # The run's chosen ID exists already (a cron's tick retried after its run was made).
            if new_thread:
                await self.registry.delete(thread_id, user)
            raise
