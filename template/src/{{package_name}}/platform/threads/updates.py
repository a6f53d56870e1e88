"""State updates as the Agent Server takes them: update_state's special `as_node` values, and the
supersteps a thread can be created with (how langgraph-sdk copies a thread between deployments)."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.errors import InvalidUpdateError
from langgraph.types import Command, StateUpdate
from pydantic import BaseModel, ConfigDict, Field

from ...errors import InvalidInput
from ..core.fields import JsonObject, StorableText
from ..graphs import Graph
from ..runs.admission import RunCommand, check_input, check_nodes

# The names langgraph's update_state gives a meaning beyond a node's: write as the graph's input, fork the
# checkpoint (values: a list of [values, as_node] updates to apply to the copy), or (with no values) clear
# the tasks still to run.
AS_INPUT = "__input__"
AS_COPY = "__copy__"
AS_END = "__end__"
SPECIAL_NODES = frozenset({AS_INPUT, AS_COPY, AS_END})


class SuperstepUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    values: JsonObject | list[Any] | None = None
    command: RunCommand | None = None
    as_node: StorableText | None = Field(default=None, max_length=256)


class Superstep(BaseModel):
    model_config = ConfigDict(extra="ignore")
    updates: list[SuperstepUpdate] = Field(min_length=1, max_length=100)


def check_update(graph: Graph, values: Any, as_node: str | None) -> None:
    """Refuse, before anything is written, an update langgraph would refuse half-way or fail on."""
    if as_node is not None and as_node not in SPECIAL_NODES:
        check_nodes(graph, "as_node", as_node)
    if isinstance(values, list):
        if as_node != AS_COPY:
            raise InvalidInput(f"values may be a list of updates only with as_node {AS_COPY}")
        for item in values:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], str)):
                raise InvalidInput(f"with as_node {AS_COPY}, values holds [values, as_node] pairs")
            check_update(graph, item[0], item[1])
    elif values:
        check_input(graph, values)


def _update(item: SuperstepUpdate) -> StateUpdate:
    # LangGraph's update_state takes a Command, or a list under "__copy__", though StateUpdate names a dict.
    values: Any = item.values
    if item.command is not None:
        values = Command(**{name: getattr(item.command, name) for name in item.command.model_fields_set})
    return StateUpdate(values, item.as_node)


def check_supersteps(graph: Graph, supersteps: list[Superstep]) -> None:
    for step in supersteps:
        for item in step.updates:
            check_update(graph, item.values, item.as_node)
            if item.command is not None:
                if item.command.goto is not None:
                    check_nodes(graph, "command.goto", item.command.goto)
                if item.command.update is not None:
                    check_input(graph, item.command.update)


async def apply_supersteps(
    graph: Graph,
    config: RunnableConfig,
    supersteps: list[Superstep],
) -> RunnableConfig:
    """Each superstep's updates applied together, as if their nodes had run in one step."""
    try:
        return await graph.abulk_update_state(config, [[_update(item) for item in step.updates] for step in supersteps])
    except InvalidUpdateError as exc:
        raise InvalidInput(f"cannot apply these supersteps: {exc}") from exc
