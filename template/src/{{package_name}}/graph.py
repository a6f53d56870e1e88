"""Your graph. This file is yours: `copier update` never overwrites it.

The platform calls build_graph(model, snapshot_frequency=...) once at start-up and compiles the
result with the service's durable checkpointer; keep the signature, change everything else.

`messages` lives in LangGraph's `DeltaChannel` (beta in LangGraph 1.2): a checkpoint stores only
the messages its step added, plus the whole list every `snapshot_frequency` updates
(MESSAGES_SNAPSHOT_FREQUENCY), so a turn costs the same at message 1000 as at message 10.
Threads stored with a plain list read as before. Beta means LangGraph may still change how these
checkpoints are stored; to switch back, build the graph on `MessagesState` instead (threads written
meanwhile stay readable, LangGraph rebuilds them). See docs/checkpointing.md.
"""

from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage
from langgraph.channels import DeltaChannel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import _messages_delta_reducer
from typing_extensions import TypedDict

from .prompts import SYSTEM_PROMPT


def build_graph(model: BaseChatModel, *, snapshot_frequency: int = 100) -> StateGraph[Any]:
    # A class per call: the channel's snapshot frequency comes from settings, not a constant. The
    # reducer is LangGraph's batching-invariant add_messages (it takes a list of writes at once).
    reducer: Any = _messages_delta_reducer
    channel: DeltaChannel[list[AnyMessage]] = DeltaChannel(reducer, snapshot_frequency=snapshot_frequency)

    class Conversation(TypedDict):
        messages: Annotated[list[AnyMessage], channel]

    async def chat(state: Conversation) -> dict[str, list[object]]:
        reply = await model.ainvoke([("system", SYSTEM_PROMPT), *state["messages"]])
        return {"messages": [reply]}

    builder = StateGraph(Conversation)
    builder.add_node("chat", chat)
    builder.add_edge(START, "chat")
    builder.add_edge("chat", END)
    return builder
