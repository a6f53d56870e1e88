"""A2A at /a2a/{assistant_id} (JSON-RPC, through the official `a2a-sdk`), as LangGraph's Agent Server serves it:
every assistant is an agent with its own card; a context is a thread of the caller's, a task is a run on it
(ID "{context_id}:{run_id}", as the Agent Server makes it), admitted and executed as the HTTP API's runs are
(the same auth, per-user scoping, limits and run records).

The SDK's dispatcher parses the protocol (v1.0 method names, and v0.3's `message/send`, `message/stream`,
`tasks/get`, `tasks/cancel` that older clients send) and answers malformed messages with JSON-RPC errors; `_Tasks`
maps each method onto threads and runs. A limit or an outage met before a response has begun is the HTTP 429 or
503 the API answers, so that a client retries as it would anywhere else.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from a2a.helpers import get_data_parts, new_data_part, new_text_part
from a2a.server.context import ServerCallContext
from a2a.server.events import Event
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types.a2a_pb2 import (
    AgentCard,
    Artifact,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.constants import PROTOCOL_VERSION_1_0, VERSION_HEADER
from a2a.utils.errors import (
    ContentTypeNotSupportedError,
    ExtendedAgentCardNotConfiguredError,
    InternalError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import NotFound, ServiceError, TooManyRequests, Unavailable
from ..platform.assistants import Assistant
from ..platform.core.database import DATABASE_OUTAGES
from ..platform.runs.admission import Follow, RunCreate
from ..platform.runs.store import RunRecord
from ..platform.services import Services
from .assistants import graph_schemas
from .auth import SECURITY_SCHEME
from .deps import authenticated
from .health import service_version

T = TypeVar("T")

# The run's metadata key naming the task a run continues (a resumed interrupt keeps its task's ID).
TASK_KEY = "a2a_task_id"
# What tasks/get and tasks/list read of a context: its latest runs.
RUNS_READ = 100
STATES = {
    "pending": TaskState.TASK_STATE_SUBMITTED,
    "running": TaskState.TASK_STATE_WORKING,
    "success": TaskState.TASK_STATE_COMPLETED,
    # A run cancelled from outside; a graph's own interrupt() ends its run with success (input required).
    "interrupted": TaskState.TASK_STATE_CANCELED,
    "error": TaskState.TASK_STATE_FAILED,
    "timeout": TaskState.TASK_STATE_FAILED,
}
SPEAKERS = {"human": Role.ROLE_USER, "ai": Role.ROLE_AGENT}


class A2AEndpoint:
    """The routes at /a2a/{assistant_id}: the caller authenticated and counted as on every route, then the SDK's
    JSON-RPC dispatcher (POST) or the assistant's card (GET)."""

    def __init__(self) -> None:
        self._dispatcher = JsonRpcDispatcher(_Tasks(), context_builder=_Caller(), enable_v0_3_compat=True)

    async def rpc(self, request: Request) -> Response:
        request.state.services, request.state.user = await authenticated(request)
        if VERSION_HEADER not in request.headers:
            # As the Agent Server: a method's name says its protocol version when no header does (the SDK
            # takes a missing header for v0.3, and would refuse 1.0's names sent without one).
            try:
                body = await request.json()  # kept by the request: the dispatcher reads it again for free
            except ValueError:
                body = None  # the dispatcher answers it: a parse error
            if isinstance(body, dict) and body.get("method") in JsonRpcDispatcher.METHOD_TO_MODEL:
                request.state.version = PROTOCOL_VERSION_1_0
        response = await self._dispatcher.handle_requests(request)
        if (refusal := getattr(request.state, "refusal", None)) is not None:
            raise refusal  # the app's handlers answer it: 429 or 503, with Retry-After
        return response

    async def card(self, request: Request) -> Response:
        services, user = await authenticated(request)
        # At the domain's root, ?assistant_id= names the agent; without it, the default graph's.
        assistant_id = (
            request.path_params.get("assistant_id")
            or request.query_params.get("assistant_id")
            or services.graphs.default_id
        )
        try:
            assistant = await services.assistants.get(assistant_id, user)
        except NotFound:
            return _card_error(f"Assistant {assistant_id} not found")
        return JSONResponse(agent_card(services, assistant, _base_url(request, assistant_id)))

    async def unsupported(self, request: Request) -> Response:
        # As the Agent Server: no GET stream and no session to end on an agent's URL.
        return Response(status_code=405)


def agent_card(services: Services, assistant: Assistant, base_url: str) -> dict[str, Any]:
    """The assistant's card as the Agent Server builds it, with the service's auth as its security scheme."""
    schema = graph_schemas(services.graphs.get_graph(assistant.graph_id))
    inputs = schema.get("input_schema") or schema.get("state_schema") or {}
    properties = inputs.get("properties") or {}
    description = assistant.description or f"{assistant.name} assistant"
    url = f"{base_url}/a2a/{assistant.assistant_id}"
    modes = ["application/json", "text/plain"]
    card: dict[str, Any] = {
        "name": assistant.name,
        "description": description,
        "url": url,
        "supportedInterfaces": [{"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "capabilities": {"streaming": True, "pushNotifications": False, "stateTransitionHistory": False},
        "defaultInputModes": modes,
        "defaultOutputModes": modes,
        "skills": [
            {
                "id": f"{assistant.assistant_id}-main",
                "name": f"{assistant.name} Capabilities",
                "description": description,
                "tags": ["assistant", "langgraph"],
                "examples": [],
                "inputModes": modes,
                "outputModes": modes,
                "metadata": {
                    "inputSchema": {
                        "required": inputs.get("required") or [],
                        "properties": sorted(properties),
                        "supportsA2A": "messages" in properties,
                    }
                },
            }
        ],
        "version": service_version(),
    }
    if SECURITY_SCHEME is not None:
        card["securitySchemes"] = {"service": SECURITY_SCHEME}
        card["securityRequirements"] = [{"schemes": {"service": {"list": []}}}]
    return card


def _base_url(request: Request, assistant_id: str) -> str:
    """The service's URL as the caller reached it (behind a proxy, its X-Forwarded-Proto)."""
    scheme = request.headers.get("x-forwarded-proto") or request.url.scheme
    host = request.headers.get("host") or request.url.netloc
    path = request.url.path
    for suffix in ("/.well-known/agent-card.json", "/.well-known/agent.json", f"/a2a/{assistant_id}"):
        path = path.removesuffix(suffix)
    return f"{scheme}://{host}{path.rstrip('/')}"


def _card_error(message: str) -> Response:
    # As the Agent Server answers it: a 400 with JSON-RPC's invalid-params code.
    return JSONResponse({"error": {"code": -32602, "message": message}}, status_code=400)


class _Caller(DefaultServerCallContextBuilder):
    """The call's context carries the request: its services, caller and assistant."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state["request"] = request
        if (version := getattr(request.state, "version", None)) is not None:
            context.state["headers"][VERSION_HEADER] = version
        return context


class _Turn:
    """One call's view: the caller, their services, the assistant of the URL."""

    def __init__(self, context: ServerCallContext) -> None:
        self.request: Request = context.state["request"]
        self.services: Services = self.request.state.services
        self.user: str = self.request.state.user
        self.assistant_id: str = self.request.path_params["assistant_id"]
        self._assistant: Assistant | None = None

    async def translated(self, work: Awaitable[T]) -> T:
        """`await work`, the service's refusals as A2A errors; a limit or an outage is kept for the HTTP answer."""
        try:
            return await work
        except (TooManyRequests, Unavailable) as exc:
            self.request.state.refusal = exc
            raise InternalError(exc.detail, {"status": exc.status_code}) from None
        except DATABASE_OUTAGES as exc:
            self.request.state.refusal = exc
            raise InternalError("database unavailable", {"status": 503}) from None
        except NotFound as exc:
            raise InvalidParamsError(exc.detail) from None
        except ServiceError as exc:
            if exc.status_code >= 500:
                raise InternalError(exc.detail) from None
            raise InvalidParamsError(exc.detail, {"status": exc.status_code}) from None

    def stored(self, context_id: str) -> str:
        """The stored ID of the caller's thread named `context_id`; TaskNotFound for anyone else's."""
        stored = self.services.thread_ids.stored_id(self.user, context_id)
        if not self.services.thread_ids.is_owner(stored, self.user):
            raise TaskNotFoundError()
        return stored

    async def assistant(self) -> Assistant:
        if self._assistant is None:  # a call may need it twice (a resumed task is looked up first)
            self._assistant = await self.translated(self.services.assistants.get(self.assistant_id, self.user))
        return self._assistant

    async def find_task(self, task_id: str) -> tuple[str, RunRecord]:
        """The task's context and its latest run; TaskNotFound for anything that is not a task of the caller's on
        this agent."""
        context_id, _, run_text = task_id.rpartition(":")
        try:
            run_id = uuid.UUID(run_text)
        except ValueError:
            raise TaskNotFoundError(f"Task not found: {task_id}") from None
        if not context_id:
            raise TaskNotFoundError(f"Task not found: {task_id}")
        stored = self.stored(context_id)
        first = await self.translated(self.services.runs.get(stored, run_id))
        assistant = await self.assistant()
        if first is None or first.user_id != self.user or first.assistant_id != assistant.assistant_id:
            raise TaskNotFoundError(f"Task not found: {task_id}")
        runs = await self.translated(self.services.runs.list_for_thread(stored, None, RUNS_READ, 0))
        latest = next((run for run in runs if run.run_id == run_id or run.metadata.get(TASK_KEY) == task_id), first)
        return context_id, latest


class _Tasks(RequestHandler):
    """The A2A methods on threads and runs."""

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        turn = _Turn(context)
        # returnImmediately: the task as it is now (submitted), for the client to poll with tasks/get.
        now = params.configuration.return_immediately
        task_id, context_id, run = await self._start(turn, params, follow=None if now else "wait")
        if now:
            return _task(task_id, context_id, run, _history_length(params))
        ended = await turn.translated(turn.services.runs.wait(run))
        return _task(task_id, context_id, ended or run, _history_length(params))

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        turn = _Turn(context)
        task_id, context_id, run = await self._start(turn, params, follow="stream")
        history = [_stamped(params.message, task_id, context_id)]
        yield Task(id=task_id, context_id=context_id, status=_status(TaskState.TASK_STATE_SUBMITTED), history=history)
        yield TaskStatusUpdateEvent(
            task_id=task_id, context_id=context_id, status=_status(TaskState.TASK_STATE_WORKING)
        )
        said: set[str] = set()
        heartbeat = turn.services.settings.stream_heartbeat_seconds
        try:
            async for item in turn.services.runs.stream(run, 0, heartbeat, from_start=True):
                if item is None or item.event != "values":
                    continue
                # Each new reply of the agent's, as the run makes it: a working status carrying it.
                for message in _replies(orjson.loads(item.data)):
                    key = str(message.get("id") or len(said))
                    if key not in said and (parts := _parts(message.get("content"))):
                        said.add(key)
                        status = _status(TaskState.TASK_STATE_WORKING, _message(parts, task_id, context_id))
                        yield TaskStatusUpdateEvent(task_id=task_id, context_id=context_id, status=status)
        except DATABASE_OUTAGES:
            # The stream has begun: an error event; the run goes on, and tasks/get reads its end.
            raise InternalError("database unavailable", {"status": 503}) from None
        ended = await turn.translated(turn.services.runs.wait(run))
        final = _task(task_id, context_id, ended or run, 0)
        for artifact in final.artifacts:
            yield TaskArtifactUpdateEvent(task_id=task_id, context_id=context_id, artifact=artifact, last_chunk=True)
        yield TaskStatusUpdateEvent(task_id=task_id, context_id=context_id, status=final.status)

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        turn = _Turn(context)
        context_id, latest = await turn.find_task(params.id)
        length = params.history_length if params.HasField("history_length") else None
        return _task(params.id, context_id, latest, length)

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        turn = _Turn(context)
        context_id, latest = await turn.find_task(params.id)
        if latest.done:
            raise TaskNotCancelableError(f"Task {params.id} has ended: {TaskState.Name(_state(latest))}")
        await turn.translated(turn.services.runs.cancel([latest.run_id], "interrupt"))
        ended = await turn.translated(turn.services.runs.wait(latest))
        return _task(params.id, context_id, ended or latest, None)

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        turn = _Turn(context)
        if not params.context_id:
            raise InvalidParamsError("tasks/list needs a contextId: the tasks of one context are listed")
        try:
            stored = turn.stored(params.context_id)
        except TaskNotFoundError:
            return ListTasksResponse(tasks=[], page_size=0, total_size=0)
        assistant = await turn.assistant()
        runs = await turn.translated(turn.services.runs.list_for_thread(stored, None, RUNS_READ, 0))
        tasks: dict[str, Task] = {}
        for run in runs:  # newest first: a task's first entry is its latest run
            if run.user_id != turn.user or run.assistant_id != assistant.assistant_id:
                continue
            task_id = str(run.metadata.get(TASK_KEY) or f"{params.context_id}:{run.run_id}")
            if task_id not in tasks:
                length = params.history_length if params.HasField("history_length") else None
                task = _task(task_id, params.context_id, run, length)
                if not params.status or task.status.state == params.status:
                    tasks[task_id] = task
        page = list(tasks.values())[: params.page_size or 50]
        return ListTasksResponse(tasks=page, page_size=len(page), total_size=len(tasks))

    async def _start(
        self, turn: _Turn, params: SendMessageRequest, follow: Follow | None
    ) -> tuple[str, str, RunRecord]:
        """The run a message starts: a new task on its context (a new context when it names none), or the
        resumption of its task's interrupt when it names an input-required task."""
        message = params.message
        if not message.message_id:
            raise InvalidParamsError("Missing required 'messageId' in message")
        if not message.parts:
            raise InvalidParamsError("Message must contain at least one part")
        if any(part.HasField("raw") or part.HasField("url") for part in message.parts):
            raise ContentTypeNotSupportedError("file parts are not served: send text or data parts")
        assistant = await turn.assistant()
        fields: dict[str, Any] = {"assistant_id": assistant.assistant_id, "if_not_exists": "create"}
        if message.task_id:
            context_id, latest = await turn.find_task(message.task_id)
            if message.context_id and message.context_id != context_id:
                raise InvalidParamsError("the message's contextId is not its task's")
            if _state(latest) != TaskState.TASK_STATE_INPUT_REQUIRED:
                raise UnsupportedOperationError(f"Task {message.task_id} does not wait for input")
            task_id: str | None = message.task_id
            data, text = get_data_parts(message.parts), _text(message.parts)
            fields["command"] = {"resume": data[0] if data else text}
            fields["metadata"] = {TASK_KEY: message.task_id}
        else:
            context_id = message.context_id or str(uuid.uuid4())
            task_id = None
            fields["input"] = _graph_input(message, assistant, turn.services)
        if params.metadata:
            fields["metadata"] = {**fields.get("metadata", {}), "a2a": dict(params.metadata)}
        try:
            body = RunCreate.model_validate(fields)
        except ValidationError as exc:
            raise InvalidParamsError(f"invalid message: {exc.errors()[0]['msg']}") from None
        stored = turn.stored(context_id)
        if follow == "stream":
            body = body.model_copy(update={"stream_mode": ["values"]})
        run = await turn.translated(turn.services.admission.on_thread(turn.user, stored, body, follow=follow))
        return task_id or f"{context_id}:{run.run_id}", context_id, run

    # Push notifications, resubscription and the extended card are not served (the card says so).

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        raise UnsupportedOperationError("resubscribing to a task is not served: poll tasks/get")
        yield  # an async generator, as the interface declares

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError()

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError()

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        raise PushNotificationNotSupportedError()

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise PushNotificationNotSupportedError()

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise ExtendedAgentCardNotConfiguredError()


def _graph_input(message: Message, assistant: Assistant, services: Services) -> dict[str, Any]:
    """A message's parts as the graph's input: its text as one chat message, its data parts' objects merged in."""
    graph_input: dict[str, Any] = {}
    for data in get_data_parts(message.parts):
        if not isinstance(data, dict):
            raise InvalidParamsError("a data part must hold an object: its keys are the graph's input")
        graph_input.update(data)
    if text := _text(message.parts):
        properties = graph_schemas(services.graphs.get_graph(assistant.graph_id)).get("input_schema") or {}
        if "messages" not in (properties.get("properties") or {}):
            raise InvalidParamsError(f"assistant {assistant.assistant_id} takes no messages: send a data part")
        role = "assistant" if message.role == Role.ROLE_AGENT else "user"
        graph_input.setdefault("messages", []).append({"role": role, "content": text, "id": message.message_id})
    return graph_input


def _text(parts: Any) -> str:
    return "\n".join(part.text for part in parts if part.HasField("text"))


def _history_length(params: SendMessageRequest) -> int | None:
    configuration = params.configuration
    return configuration.history_length if configuration.HasField("history_length") else None


def _status(state: TaskState, message: Message | None = None) -> TaskStatus:
    status = TaskStatus(state=state, message=message)
    status.timestamp.FromDatetime(datetime.now(UTC))
    return status


def _message(parts: list[Part], task_id: str, context_id: str, message_id: str | None = None) -> Message:
    return Message(
        message_id=message_id or str(uuid.uuid4()),
        role=Role.ROLE_AGENT,
        parts=parts,
        task_id=task_id,
        context_id=context_id,
    )


def _stamped(message: Message, task_id: str, context_id: str) -> Message:
    copy = Message()
    copy.CopyFrom(message)
    copy.task_id, copy.context_id = task_id, context_id
    return copy


def _parts(content: Any) -> list[Part]:
    """A LangChain message's content (a string, or a list of blocks) as A2A parts."""
    if isinstance(content, str):
        return [new_text_part(content)] if content else []
    parts: list[Part] = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, str):
            parts.append(new_text_part(block))
        elif isinstance(block, dict) and block.get("type") == "text" and block.get("text"):
            parts.append(new_text_part(str(block["text"])))
        elif isinstance(block, dict):
            parts.append(new_data_part(block))
    return parts


def _replies(values: Any) -> list[dict[str, Any]]:
    messages = values.get("messages") if isinstance(values, dict) else None
    if not isinstance(messages, list):
        return []
    # The current turn: what follows the last message of the user's.
    humans = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("type") == "human"]
    last_human = humans[-1] if humans else -1
    return [m for m in messages[last_human + 1 :] if isinstance(m, dict) and m.get("type") == "ai"]


def _history(values: Any, task_id: str, context_id: str, length: int | None) -> list[Message]:
    messages = values.get("messages") if isinstance(values, dict) else None
    history: list[Message] = []
    for item in messages if isinstance(messages, list) else []:
        role = SPEAKERS.get(str(item.get("type"))) if isinstance(item, dict) else None
        if role is None or not (parts := _parts(item.get("content"))):
            continue  # tool calls and results, system prompts: the agent's own workings
        message = _message(parts, task_id, context_id, str(item.get("id") or uuid.uuid4()))
        message.role = role
        history.append(message)
    if length is None:
        return history
    return history[-length:] if length else []


def _state(run: RunRecord) -> TaskState:
    """The task state of a run, as the Agent Server maps it: a success that paused in interrupt() needs input."""
    if run.status == "success" and isinstance(run.output, dict) and run.output.get("__interrupt__"):
        return TaskState.TASK_STATE_INPUT_REQUIRED
    return STATES.get(run.status, TaskState.TASK_STATE_SUBMITTED)


def _task(task_id: str, context_id: str, run: RunRecord, history_length: int | None) -> Task:
    """The task a run is, as the Agent Server reports it: the agent's reply as an artifact, an interrupt as an
    input-required task with the interrupt's values, an error as a failed task saying what failed."""
    values = run.output if isinstance(run.output, dict) else {}
    task = Task(id=task_id, context_id=context_id, history=_history(values, task_id, context_id, history_length))
    state = _state(run)
    message: Message | None = None
    if state == TaskState.TASK_STATE_INPUT_REQUIRED:
        parts = [
            new_data_part({"id": pending.get("id"), "value": pending.get("value")})
            for pending in values["__interrupt__"]
            if isinstance(pending, dict)
        ]
        description = "Agent requires input to continue"
        task.artifacts.append(_artifact("Interrupt", description, parts))
    elif state == TaskState.TASK_STATE_COMPLETED:
        replies = _replies(values)
        parts = _parts(replies[-1].get("content")) if replies else [new_data_part(values)]
        description = f"Response from assistant {run.assistant_id}"
        task.artifacts.append(_artifact("Assistant Response", description, parts))
    elif state == TaskState.TASK_STATE_FAILED:
        error = run.error or {}
        text = f"Error executing assistant: {error.get('error', 'Error')}: {error.get('message', '')}"
        message = _message([new_text_part(text)], task_id, context_id)
    task.status.CopyFrom(_status(state, message))
    return task


def _artifact(name: str, description: str, parts: list[Part]) -> Artifact:
    return Artifact(artifact_id=str(uuid.uuid4()), name=name, description=description, parts=parts)
