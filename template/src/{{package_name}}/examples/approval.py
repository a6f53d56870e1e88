"""A human-in-the-loop example: the model drafts a reply, a person approves, edits or rejects it.

The pause is LangGraph's `interrupt()` with the request in the Agent Inbox's format (`HumanInterrupt`), which
agent-chat-ui shows as an approval card; the run ends with the thread `interrupted`, and a run with
`command={"resume": [{"type": "accept"}]}` (or "edit" with new args, or "response" with a reason) goes on.
Any JSON is a valid resume value for `interrupt()`; this format is what chat front ends send.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import interrupt

from ..platform.core.llm import build_chat_model
from ..settings import Settings


def approval_request(draft: str) -> dict[str, Any]:
    """The interrupt's value: one HumanInterrupt, as agent-chat-ui and the Agent Inbox read it."""
    return {
        "action_request": {"action": "send_reply", "args": {"reply": draft}},
        "config": {"allow_accept": True, "allow_edit": True, "allow_respond": True, "allow_ignore": False},
        "description": "Send this reply?",
    }


def graph() -> StateGraph[Any]:
    """The example as langgraph.json names it (`approval`), with the chat model the settings name.

    The model is made at its first draft, not here: a service whose provider key is not set (a test, a
    deployment that never runs this example) still starts, and the first run says what is missing."""
    return _drafting_graph(cache(lambda: build_chat_model(Settings())))


def build_graph(model: BaseChatModel) -> StateGraph[Any]:
    """The example with a given model, for tests and for services that pass their own."""
    return _drafting_graph(lambda: model)


def _drafting_graph(chat_model: Callable[[], BaseChatModel]) -> StateGraph[Any]:
    async def draft(state: MessagesState) -> dict[str, Any]:
        reply = await chat_model().ainvoke(state["messages"])
        return {"messages": [AIMessage(content=reply.text, id=reply.id, name="draft")]}

    def approve(state: MessagesState) -> dict[str, Any]:
        proposed = state["messages"][-1].text
        answer = interrupt([approval_request(proposed)])
        # A front end answers with a list of HumanResponse; a script may answer with the bare response.
        response = answer[0] if isinstance(answer, list) and answer else answer
        kind = response.get("type") if isinstance(response, dict) else "accept"
        if kind == "accept":
            return {"messages": [AIMessage(content=proposed)]}
        if kind == "edit":
            args = (response.get("args") or {}).get("args") or {}
            return {"messages": [AIMessage(content=str(args.get("reply", proposed)))]}
        reason = response.get("args") if isinstance(response, dict) else None
        return {"messages": [AIMessage(content=f"Not sent: {reason or 'rejected'}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("draft", draft)
    builder.add_node("approve", approve)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "approve")
    builder.add_edge("approve", END)
    return builder
