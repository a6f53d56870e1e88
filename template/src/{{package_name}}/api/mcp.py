"""MCP at /mcp (streamable HTTP, through the official `mcp` SDK), as LangGraph's Agent Server serves it: every
assistant the caller can see is a tool, and a tool call is a stateless run of that assistant, admitted and
executed exactly as `POST /runs/wait`'s (the same auth, per-user scoping, limits and run records).

Stateless transport: no MCP session lives in a replica's memory, so any replica answers any request.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import mcp_types as types
import orjson
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from ..errors import ServiceError, TooManyRequests, Unavailable
from ..platform.assistants import Assistant, AssistantFilter
from ..platform.runs.admission import RunCreate
from ..platform.services import Services
from .assistants import graph_schemas
from .deps import authenticated

log = logging.getLogger(__name__)
# The SDK logs every stateless request's end at INFO ("Terminating session: None"): the access log has it.
logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
T = TypeVar("T")

PAGE_SIZE = 100
# For tools/call: every assistant a name may be among (the Agent Server's bound too).
MAX_ASSISTANTS = 1000
# MCP's tool names: ^[a-zA-Z0-9_\-.]{1,128}$.
NOT_IN_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_\-.]")
# Implementation-defined JSON-RPC server errors: a limit or an outage, each worth a retry later.
RETRY_LATER = -32000
LANGCHAIN_MESSAGES = {
    f"{kind}{chunk}"
    for kind in ("AI", "Human", "Chat", "System", "Function", "Tool")
    for chunk in ("Message", "MessageChunk")
}
LANGCHAIN_PARTS = {
    "ToolCall",
    "ToolCallChunk",
    "InvalidToolCall",
    "UsageMetadata",
    "InputTokenDetails",
    "OutputTokenDetails",
}


def tool_name(assistant_name: str) -> str:
    """An assistant's name as a tool's: whitespace runs become one underscore, other characters MCP does not
    allow go, at most 128 characters (as the Agent Server names them)."""
    return NOT_IN_TOOL_NAME.sub("", re.sub(r"\s+", "_", assistant_name.strip()))[:128]


# A tool's schema per compiled graph, made once, as graph_schemas makes the graph's own.
_TOOL_SCHEMAS: dict[Any, tuple[dict[str, Any], list[str]]] = {}


def tool_schema(graph: Any) -> tuple[dict[str, Any], list[str]]:
    """input_schema of the graph's input schema, once per graph (its schemas never change)."""
    if (known := _TOOL_SCHEMAS.get(graph)) is None:
        known = _TOOL_SCHEMAS[graph] = input_schema(graph_schemas(graph)["input_schema"])
    return known


def input_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A graph's input schema for a model to fill in, and the properties it turned from a list of LangChain
    messages into one string (the user's message), as the Agent Server simplifies them."""
    schema = orjson.loads(orjson.dumps(schema))  # a copy: the graph's schemas are cached
    defs = schema.get("$defs") or {}
    messages: list[str] = []
    if set(defs) & LANGCHAIN_MESSAGES:
        for name in LANGCHAIN_MESSAGES | LANGCHAIN_PARTS:
            defs.pop(name, None)
        if not defs:
            schema.pop("$defs")
        for key, prop in (schema.get("properties") or {}).items():
            items = prop.get("items") or {}
            refs = [c.get("$ref", "") for c in items.get("oneOf") or items.get("anyOf") or []]
            if prop.get("type") == "array" and any(ref.removeprefix("#/$defs/") in LANGCHAIN_MESSAGES for ref in refs):
                schema["properties"][key] = {
                    "type": "string",
                    "title": prop.get("title", key),
                    "description": "The user message to send to the agent.",
                }
                messages.append(key)
    schema.setdefault("type", "object")  # MCP requires an object schema
    return schema, messages


class McpEndpoint:
    """The ASGI app at /mcp: the caller authenticated and counted as on every route, then the SDK's transport.
    `running()` is entered by the app's lifespan."""

    def __init__(self, name: str) -> None:
        server: Server[Any] = Server(name, on_list_tools=self._list_tools, on_call_tool=self._call_tool)
        self.sessions = StreamableHTTPSessionManager(app=server, stateless=True, json_response=True)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The SDK's session manager, run in a task of its own: its anyio task group must be left by the task
        that entered it, and a lifespan may be entered and left by different tasks (as tests drive it)."""
        started, stop = asyncio.Event(), asyncio.Event()

        async def run() -> None:
            async with self.sessions.run():
                started.set()
                await stop.wait()

        task = asyncio.create_task(run(), name="mcp-sessions")
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # it failed to start: say why
        try:
            yield
        finally:
            stop.set()
            await task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        _, request.state.user = await authenticated(request)
        await self.sessions.handle_request(scope, receive, send)

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        services, user = _caller(ctx)
        offset = _offset(params.cursor if params else None)
        page, next_offset = await _translated(services.assistants.search(user, AssistantFilter(), PAGE_SIZE, offset))
        tools: dict[str, types.Tool] = {}
        for assistant in page:
            name = tool_name(assistant.name)
            if name in tools or not name:
                log.warning("mcp: assistant %s's tool name %r is taken or empty", assistant.assistant_id, name)
                continue
            if (tool := _tool(services, assistant, name)) is not None:
                tools[name] = tool
        cursor = None if next_offset is None else str(next_offset)
        return types.ListToolsResult(tools=list(tools.values()), next_cursor=cursor)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        services, user = _caller(ctx)
        found, _ = await _translated(services.assistants.search(user, AssistantFilter(), MAX_ASSISTANTS, 0))
        matching = [assistant for assistant in found if tool_name(assistant.name) == params.name]
        if not matching:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        if len(matching) > 1:
            raise MCPError(types.INVALID_PARAMS, "Multiple tools found with the same name.")
        assistant = matching[0]
        graph_input = dict(params.arguments or {})
        _, messages = tool_schema(services.graphs.get_graph(assistant.graph_id))
        for key in messages:
            if isinstance(graph_input.get(key), str):
                graph_input[key] = [{"role": "user", "content": graph_input[key]}]
        try:
            body = RunCreate.model_validate({"assistant_id": assistant.assistant_id, "input": graph_input})
        except ValidationError as exc:
            raise MCPError(types.INVALID_PARAMS, f"invalid arguments: {exc.errors()[0]['msg']}") from None
        run = await _translated(services.admission.stateless(user, body, follow="wait"))
        ended = await _translated(services.runs.wait(run))
        if ended is None or ended.status == "error":
            error = (ended.error if ended is not None else None) or {
                "error": "RunDeleted",
                "message": "the run was rolled back",
            }
            message = f"{error.get('error', 'Error')}: {error.get('message', '')}"
            return types.CallToolResult(is_error=True, content=[types.TextContent(type="text", text=message)])
        text = orjson.dumps(ended.output).decode()
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


def _tool(services: Services, assistant: Assistant, name: str) -> types.Tool | None:
    try:
        schema, _ = tool_schema(services.graphs.get_graph(assistant.graph_id))
    except Exception:  # a graph whose state has no JSON schema is left out, as the Agent Server leaves it
        log.warning(
            "mcp: no input schema for assistant %s; not listed as a tool", assistant.assistant_id, exc_info=True
        )
        return None
    return types.Tool(
        name=name,
        title=assistant.name,
        description=assistant.description or f"Tool based on the {assistant.name} assistant",
        input_schema=schema,
        annotations=types.ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
        ),
    )


def _caller(ctx: ServerRequestContext[Any]) -> tuple[Services, str]:
    request = ctx.request
    assert isinstance(request, Request)  # the streamable HTTP transport's, authenticated by McpEndpoint
    return request.app.state.services, request.state.user


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 9:
        raise MCPError(types.INVALID_PARAMS, "invalid cursor")
    return int(cursor)


async def _translated(work: Awaitable[T]) -> T:
    """`await work`, the service's refusals as MCP errors: the caller's own as invalid params, a limit or an
    outage as a retry-later error carrying the HTTP status the API would have answered."""
    try:
        return await work
    except (TooManyRequests, Unavailable) as exc:
        raise MCPError(RETRY_LATER, exc.detail, {"status": exc.status_code}) from None
    except ServiceError as exc:
        code = types.INVALID_PARAMS if 400 <= exc.status_code < 500 else types.INTERNAL_ERROR
        raise MCPError(code, exc.detail, {"status": exc.status_code}) from None
