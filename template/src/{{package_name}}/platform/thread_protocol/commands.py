"""The protocol's commands on a thread: run.start and input.respond become runs admitted as every run is
(admission.py: the caller's own thread, created on the first run.start by the same path as
threads.create(if_not_exists=...)); every other command gets the protocol's error envelope.

Answers: {"type": "success", "id", "result"} or {"type": "error", "id", "error": <ErrorCode>, "message"}."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ...errors import ServiceError, TooManyRequests, Unavailable
from ..assistants import AssistantStore
from ..graphs import Graphs
from ..runs.admission import Admission, RunCreate
from ..threads.ids import ThreadManager
from ..threads.registry import ThreadRegistry

Answer = dict[str, Any]
# A run of the protocol streams every mode its channels need, from subgraphs too, and logs its events as rows,
# so that any replica's event stream replays it from its beginning.
STREAM_MODES = ["values", "updates", "messages-tuple", "custom", "tasks", "checkpoints"]
MULTITASK = ("reject", "enqueue", "interrupt", "rollback")
# Protocol commands this service does not serve: over HTTP a stream's filter is its request body, with no
# session to subscribe on; the state commands are the REST routes' (the Agent Server has neither).
NOT_SUPPORTED = {
    "subscription.subscribe": "over HTTP a stream's filter is its request body (POST .../stream/events)",
    "subscription.unsubscribe": "over HTTP closing the event stream unsubscribes",
    "subscription.reconnect": "reopen the event stream with `since`",
    "agent.getTree": "read GET /assistants/{assistant_id}/graph",
    "input.inject": "start a run with the message as input",
    "state.get": "read GET /threads/{thread_id}/state",
    "state.listCheckpoints": "read POST /threads/{thread_id}/history",
    "state.fork": "run.start with config.configurable.checkpoint_id",
}


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error(command_id: int | None, code: str, message: str) -> Answer:
    return {"type": "error", "id": command_id, "error": code, "message": message}


def _object(params: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = params.get(name)
    if value is not None and not isinstance(value, dict):
        raise CommandError("invalid_argument", f"{name} must be an object")
    return value


@dataclass(frozen=True, slots=True)
class ThreadCommands:
    admission: Admission
    registry: ThreadRegistry
    thread_ids: ThreadManager
    assistants: AssistantStore
    graphs: Graphs

    async def handle(self, user: str, thread_id: str, command_id: int, method: str, params: Any) -> Answer:
        if not isinstance(params, dict):
            return error(command_id, "invalid_argument", "params must be an object")
        try:
            if method == "run.start":
                result = await self._run_start(user, thread_id, params)
            elif method == "input.respond":
                result = await self._input_respond(user, thread_id, params)
            elif method in NOT_SUPPORTED:
                raise CommandError("not_supported", f"{method} is not served: {NOT_SUPPORTED[method]}")
            else:
                raise CommandError("unknown_command", f"Unknown protocol command: {method}")
        except CommandError as exc:
            return error(command_id, exc.code, exc.message)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return error(command_id, "invalid_argument", problems)
        except (TooManyRequests, Unavailable):
            raise  # the HTTP answer (429, 503) says when to retry
        except ServiceError as exc:
            return error(command_id, "invalid_argument", exc.detail)
        return {"type": "success", "id": command_id, "result": result}

    def _run(self, assistant_id: Any, params: dict[str, Any], **fields: Any) -> RunCreate:
        config = _object(params, "config")
        strategy = params.get("multitaskStrategy")
        # A fork's target: the checkpoint the SDK puts in config.configurable (admission takes it as checkpoint_id).
        checkpoint_id = ((config or {}).get("configurable") or {}).get("checkpoint_id")
        return RunCreate.model_validate(
            {
                "assistant_id": assistant_id,
                "config": config,
                "metadata": _object(params, "metadata"),
                "checkpoint_id": checkpoint_id,
                "stream_mode": STREAM_MODES,
                "stream_subgraphs": True,
                "stream_resumable": True,
                "if_not_exists": "create",
                "multitask_strategy": strategy if strategy in MULTITASK else "enqueue",
                **fields,
            }
        )

    async def _run_start(self, user: str, thread_id: str, params: dict[str, Any]) -> dict[str, Any]:
        assistant_id = params.get("assistant_id")
        if not isinstance(assistant_id, str) or not assistant_id:
            raise CommandError("invalid_argument", "run.start requires an assistant_id")
        body = self._run(assistant_id, params, input=params.get("input"))
        run = await self.admission.on_thread(user, thread_id, body)
        return {"run_id": str(run.run_id)}

    async def _input_respond(self, user: str, thread_id: str, params: dict[str, Any]) -> dict[str, Any]:
        entries = params.get("responses")
        if entries is None:
            entries = [params]
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise CommandError("invalid_argument", "input.respond needs an interrupt_id, or responses")
        resume: dict[str, Any] = {}
        for entry in entries:
            if not isinstance(entry.get("interrupt_id"), str):
                raise CommandError("invalid_argument", "input.respond requires an interrupt_id")
            resume[entry["interrupt_id"]] = entry.get("response")
        stored = self.thread_ids.stored_id(user, thread_id)
        record = await self.registry.get(stored, user) if self.thread_ids.is_owner(stored, user) else None
        assistant_id = (record.metadata if record else {}).get("assistant_id")
        if not isinstance(assistant_id, str):
            raise CommandError("no_such_run", "no run on this thread to respond to")
        assistant = await self.assistants.get(assistant_id, user)
        graph = self.graphs.get_graph(assistant.graph_id)
        state = await graph.aget_state({"configurable": {"thread_id": stored}})
        if unknown := set(resume) - {interrupt.id for interrupt in state.interrupts}:
            raise CommandError("no_such_interrupt", f"Unknown or already-consumed interrupt: {sorted(unknown)[0]}")
        command: dict[str, Any] = {"resume": resume}
        for name in ("update", "goto"):
            if params.get(name) is not None:
                command[name] = params[name]
        await self.admission.on_thread(user, thread_id, self._run(assistant_id, params, command=command))
        return {}
