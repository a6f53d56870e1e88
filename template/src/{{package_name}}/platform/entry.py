"""The service's graph as langgraph.json names it, for LangGraph's own tools (`langgraph dev`).

The service itself never imports this module: it recognises this entry in langgraph.json and builds the graph
from graph.py through create_app (platform/graphs.py). Importing it builds the chat model from the settings.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import StateGraph

from ..graph import build_graph
from ..settings import Settings
from .checkpointing.delta import apply_snapshot_frequency
from .core.llm import build_chat_model

_settings = Settings()
graph: StateGraph[Any] = build_graph(build_chat_model(_settings))
apply_snapshot_frequency(graph, _settings.messages_snapshot_frequency)
