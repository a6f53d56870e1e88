"""Conversations whose messages live in LangGraph's DeltaChannel (beta in LangGraph 1.2): the default graph's state.

A checkpoint then stores only the messages its step added, plus the whole list every
`snapshot_frequency` updates (MESSAGES_SNAPSHOT_FREQUENCY), so a turn's latency and storage stop
growing with the thread (`make bench-growth`, docs/checkpointing.md). The service's savers read such
threads as LangGraph's stock saver does (`aget_delta_channel_history`), and prune them to their latest
checkpoint after sealing it (saver.py), which LangGraph's own `keep_latest` refuses to do.

Beta means LangGraph may change the stored form; it promises that threads written today stay readable.
Switching either way keeps threads: a plain list reads under the delta channel, and LangGraph rebuilds a
delta thread's list when its state is `MessagesState` again (tests/test_checkpointing.py).
"""

# No `from __future__ import annotations`: the state class's annotation must name the channel object
# itself, not a string LangGraph would resolve later without this function's locals.
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.channels import DeltaChannel
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from typing_extensions import TypedDict

from .langgraph_private import messages_delta_reducer

DEFAULT_SNAPSHOT_FREQUENCY = 100
# Set on a state class whose delta channels take MESSAGES_SNAPSHOT_FREQUENCY when the platform compiles.
_FREQUENCY_FROM_SETTINGS = "__snapshot_frequency_from_settings__"


def delta_messages_state(snapshot_frequency: int | None = None) -> Any:
    """A `MessagesState` whose `messages` is a delta channel. The reducer is LangGraph's batching-invariant
    add_messages (it takes a step's writes at once). Without a frequency, the platform sets the
    MESSAGES_SNAPSHOT_FREQUENCY setting's when it compiles the graph (`apply_snapshot_frequency`)."""
    reducer: Any = messages_delta_reducer
    frequency = snapshot_frequency or DEFAULT_SNAPSHOT_FREQUENCY
    channel: DeltaChannel[list[AnyMessage]] = DeltaChannel(reducer, snapshot_frequency=frequency)

    class DeltaMessagesState(TypedDict):
        messages: Annotated[list[AnyMessage], channel]

    setattr(DeltaMessagesState, _FREQUENCY_FROM_SETTINGS, snapshot_frequency is None)
    return DeltaMessagesState


def apply_snapshot_frequency(builder: StateGraph[Any], frequency: int) -> None:
    """Give the delta channels of states made by `delta_messages_state()` without a frequency this one."""
    for schema, channels in builder.schemas.items():
        if getattr(schema, _FREQUENCY_FROM_SETTINGS, False):
            for name in channels:
                if isinstance(channel := builder.channels.get(name), DeltaChannel):
                    channel.snapshot_frequency = frequency


def delta_channels(graph: Pregel[Any, Any, Any, Any]) -> dict[str, DeltaChannel[Any]]:
    """The compiled graph's delta channels by name: what the saver seals a thread's latest checkpoint with."""
    return {name: channel for name, channel in graph.channels.items() if isinstance(channel, DeltaChannel)}
