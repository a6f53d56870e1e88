"""Every graph of langgraph.json, served (platform/graphs.py): a compiled graph, a StateGraph and an async
factory taking a config beside the service's own, each with its built-in assistant, its runs, its threads'
state and its schemas, through langgraph-sdk; and the start-up errors of bad entries. Fast tier."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from langgraph_sdk.errors import NotFoundError

from agent_service.app import create_app
from agent_service.platform.graphs import GraphConfigError, load_graphs

from .support import make_settings, sdk_client, serve

NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")  # langgraph-api's
EXTRA = ("compiled", "builder", "factory")

GRAPHS_MODULE = """
from typing import TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    text: str
    by: str


def make(by: str) -> StateGraph:
    def answer(state: State) -> State:
        return {"text": state.get("text", "").upper(), "by": by}

    builder = StateGraph(State)
    builder.add_node(f"{by}_node", answer)
    builder.add_edge(START, f"{by}_node")
    builder.add_edge(f"{by}_node", END)
    return builder


# Compiled with a checkpointer of its own, which the service replaces with its durable one.
compiled = make("compiled").compile(checkpointer=InMemorySaver())
builder = make("builder")


async def make_graph(config):
    return make(config["configurable"]["graph_id"])
"""


def builtin_id(graph_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE_GRAPH, graph_id))


def write_project(root: Path, graphs: dict[str, Any]) -> Path:
    (root / "extra_graphs.py").write_text(GRAPHS_MODULE)
    config = root / "langgraph.json"
    config.write_text(json.dumps({"dependencies": ["."], "graphs": graphs}))
    return config


@pytest.fixture
async def many_graphs(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    config = write_project(
        tmp_path,
        {
            "agent": "./src/agent_service/platform/entry.py:graph",  # the shipped entry: graph.py's graph
            "compiled": "./extra_graphs.py:compiled",
            "builder": {"path": "./extra_graphs.py:builder", "description": "A StateGraph."},
            "factory": "./extra_graphs.py:make_graph",
        },
    )
    settings = make_settings(database_url).model_copy(update={"langgraph_config": config})
    async with serve(settings) as base_url:
        yield base_url


async def test_each_graph_has_its_built_in_assistant_runs_and_schemas(many_graphs: str) -> None:
    client = sdk_client(many_graphs, "alice")
    found: Any = await client.assistants.search(limit=10)
    assert [(a["graph_id"], a["assistant_id"], a["name"]) for a in found] == [
        (g, builtin_id(g), g) for g in ("agent", *EXTRA)
    ]
    assert await client.assistants.count() == 4
    assert (await client.assistants.get("builder"))["description"] == "A StateGraph."
    for graph_id in EXTRA:
        output: Any = await client.runs.wait(None, builtin_id(graph_id), input={"text": "hi"})
        assert output == {"text": "HI", "by": graph_id}
        schemas: Any = await client.assistants.get_schemas(graph_id)
        assert schemas["graph_id"] == graph_id and set(schemas["state_schema"]["properties"]) == {"text", "by"}
        drawing: Any = await client.assistants.get_graph(builtin_id(graph_id))
        assert f"{graph_id}_node" in {node["id"] for node in drawing["nodes"]}
    hello: Any = {"messages": [{"role": "user", "content": "hello"}]}
    agent: Any = await client.runs.wait(None, "agent", input=hello)
    assert agent["messages"][-1]["content"] == "You said: hello"


async def test_a_threads_state_reads_through_the_graph_its_runs_ran(many_graphs: str) -> None:
    client = sdk_client(many_graphs, "bob")
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], "compiled", input={"text": "one"})
    state: Any = await client.threads.get_state(thread["thread_id"])
    assert state["values"] == {"text": "ONE", "by": "compiled"} and state["next"] == []
    # The default graph has no `by` channel: this update is checked against (and written by) the thread's graph.
    await client.threads.update_state(thread["thread_id"], {"by": "hand"}, as_node="compiled_node")
    history: Any = await client.threads.get_history(thread["thread_id"], limit=10)
    assert history[0]["values"] == {"text": "ONE", "by": "hand"}
    stamped: Any = await client.threads.get(thread["thread_id"])
    assert stamped["metadata"]["graph_id"] == "compiled"


async def test_assistants_of_any_served_graph_and_unknown_graphs(many_graphs: str) -> None:
    client = sdk_client(many_graphs, "carol")
    mine = await client.assistants.create("factory", name="mine")
    assert await client.assistants.count(graph_id="factory") == 2
    output: Any = await client.runs.wait(None, mine["assistant_id"], input={"text": "x"})
    assert output == {"text": "X", "by": "factory"}
    expected = "Graph 'nope' not found. Expected one of: ['agent', 'builder', 'compiled', 'factory']"
    for call in (client.assistants.create("nope"), client.assistants.search(graph_id="nope")):
        with pytest.raises(NotFoundError, match=expected.replace("[", r"\[").replace("]", r"\]")):
            await call


async def load(config: Path) -> None:
    await load_graphs(
        config, "agent", lambda: pytest.fail("not the service graph"), None, InMemorySaver(), InMemoryStore()
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("./missing.py:graph", "no file"),
        ("./extra_graphs.py", "names no variable"),
        ("./extra_graphs.py:grpah", "has no attribute 'grpah'; its graphs: compiled, builder"),
        (
            "./extra_graphs.py:State",
            "expected a compiled graph, a StateGraph or a factory returning one; found the class State",
        ),
        ("./extra_graphs.ts:graph", "is not a Python file"),
        ("no_such_module:graph", "importing it failed"),
        (42, 'expected "./file.py:attr"'),
    ],
)
async def test_a_bad_entry_fails_start_up_saying_what_to_fix(tmp_path: Path, entry: Any, message: str) -> None:
    config = write_project(tmp_path, {"agent": entry})
    with pytest.raises(GraphConfigError, match='graph "agent"') as raised:
        await load(config)
    assert message in str(raised.value)


async def test_the_default_graph_must_be_served_and_a_bad_entry_stops_the_service(
    database_url: str, tmp_path: Path
) -> None:
    config = write_project(tmp_path, {"other": "./extra_graphs.py:builder"})
    with pytest.raises(GraphConfigError, match="ASSISTANT_ID 'agent' is none of its graphs"):
        await load(config)
    write_project(tmp_path, {"agent": "./extra_graphs.py:nothing"})
    settings = make_settings(database_url).model_copy(update={"langgraph_config": config})
    # The app's own lifespan, as uvicorn enters it (uvicorn then exits the process, which a test cannot).
    app = create_app(settings)
    with pytest.raises(GraphConfigError, match="has no attribute 'nothing'"):
        async with app.router.lifespan_context(app):
            pass
