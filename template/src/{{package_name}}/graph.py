"""Your graph. This file is yours: `copier update` never overwrites it.

The platform calls build_graph(model) once at start-up and compiles the result with
the service's durable checkpointer and long-term memory store; keep the signature, change everything else.

A node that takes `store` gets that memory, scoped to the run's user (docs/memory.md), e.g.:
    async def remember(state: MessagesState, *, store: BaseStore) -> dict[str, Any]:
        await store.aput(("memories",), "last", {"text": state["messages"][-1].text})
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph

from .platform.checkpointing.delta import delta_messages_state
from .prompts import SYSTEM_PROMPT

# LangGraph's MessagesState with `messages` in a DeltaChannel (beta in LangGraph): each checkpoint stores the
# turn's new messages, not the whole conversation again, so long threads cost what short ones do. To go back to
# the plain list, use `langgraph.graph.MessagesState` here (docs/checkpointing.md "Delta checkpoints").
State = delta_messages_state()


def build_graph(model: BaseChatModel) -> StateGraph[Any]:
    async def chat(state: Any) -> dict[str, list[object]]:
        reply = await model.ainvoke([("system", SYSTEM_PROMPT), *state["messages"]])
        return {"messages": [reply]}

    builder = StateGraph(State)
    builder.add_node("chat", chat)
    builder.add_edge(START, "chat")
    builder.add_edge("chat", END)
    return builder
