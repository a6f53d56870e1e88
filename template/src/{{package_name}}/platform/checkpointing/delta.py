"""Conversations whose messages live in LangGraph's DeltaChannel (beta in LangGraph 1.2): opt-in.

A checkpoint then stores only the messages its step added, plus the whole list every
`snapshot_frequency` updates (MESSAGES_SNAPSHOT_FREQUENCY), so a turn's latency and storage stop
growing with the thread (`make bench-growth`, docs/checkpointing.md). The service's savers read such
threads as LangGraph's stock saver does (`aget_delta_channel_history`).

Not the default graph's state, because LangGraph's `keep_latest` prune refuses delta threads: thread
TTL with `keep_latest` and `POST /threads/prune` would fail on them. To use it, build graph.py's graph
on `delta_messages_state(settings.messages_snapshot_frequency)` instead of `MessagesState`; threads
stored before read as before, and switching back rebuilds them.
"""

# No `from __future__ import annotations`: the state class's annotation must name the channel object
# itself, not a string LangGraph would resolve later without this function's locals.
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.channels import DeltaChannel
from langgraph.graph.message import _messages_delta_reducer
from typing_extensions import TypedDict


def delta_messages_state(snapshot_frequency: int = 100) -> Any:
    """A `MessagesState` whose `messages` is a delta channel. The reducer is LangGraph's batching-invariant
    add_messages (it takes a step's writes at once); a class per call, since the frequency is a setting."""
    reducer: Any = _messages_delta_reducer
    channel: DeltaChannel[list[AnyMessage]] = DeltaChannel(reducer, snapshot_frequency=snapshot_frequency)

    class DeltaMessagesState(TypedDict):
        messages: Annotated[list[AnyMessage], channel]

    return DeltaMessagesState
