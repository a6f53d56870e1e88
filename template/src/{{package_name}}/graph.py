"""Your graph. This file is yours: `copier update` never overwrites it.

The platform calls build_graph(model) once at start-up and compiles the result with
the service's durable checkpointer and long-term memory store; keep the signature, change everything else.

A node that takes `store` gets that memory, scoped to the run's user (docs/memory.md), e.g.:
    async def remember(state: MessagesState, *, store: BaseStore) -> dict[str, Any]:
        await store.aput(("memories",), "last", {"text": state["messages"][-1].text})
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, MessagesState, StateGraph

from .prompts import SYSTEM_PROMPT


def build_graph(model: BaseChatModel) -> StateGraph[MessagesState]:
    async def chat(state: MessagesState) -> dict[str, list[object]]:
        reply = await model.ainvoke([("system", SYSTEM_PROMPT), *state["messages"]])
        return {"messages": [reply]}

    builder = StateGraph(MessagesState)
    builder.add_node("chat", chat)
    builder.add_edge(START, "chat")
    builder.add_edge("chat", END)
    return builder
