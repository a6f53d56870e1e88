"""Stream modes, subgraph namespaces and the thread stream, through langgraph-sdk as a client reads them."""

from __future__ import annotations

from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, MessagesState, StateGraph

from agent_service.settings import Settings

from .support import auth_headers, sdk_client, serve


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


async def test_events_tasks_and_checkpoints_stream_modes(shared_service: str) -> None:
    """As langgraph_api/stream.py: 'events' is astream_events v2 (but the graph's own stream parts),
    'tasks' and 'checkpoints' LangGraph's modes, and debug checkpoints name their checkpoint."""
    client = sdk_client(shared_service, "alice")
    thread_id = (await client.threads.create())["thread_id"]
    modes: Any = ["events", "tasks", "checkpoints", "debug", "values"]
    created: list[Any] = []
    parts = [
        (p.event, p.data)
        async for p in client.runs.stream(
            thread_id, "agent", input=say("hi"), stream_mode=modes, on_run_created=created.append
        )
    ]
    run_id = created[0]["run_id"]
    assert parts[0] == ("metadata", {"run_id": run_id, "attempt": 1})
    events = [data for name, data in parts if name == "events"]
    assert events[0]["event"] == "on_chain_start" and events[0]["run_id"] == run_id
    assert events[-1]["event"] == "on_chain_end" and events[-1]["run_id"] == run_id
    tokens = "".join(e["data"]["chunk"]["content"] for e in events if e["event"] == "on_chat_model_stream")
    assert tokens.strip() == "You said: hi"
    # The root's stream parts are the other modes' events, not 'events'.
    assert not [e for e in events if e["event"] == "on_chain_stream" and e["run_id"] == run_id]
    assert [data["messages"][-1]["content"].strip() for name, data in parts if name == "values"][-1] == "You said: hi"

    tasks = [data for name, data in parts if name == "tasks"]
    assert [t["name"] for t in tasks] == ["chat", "chat"]
    assert tasks[0]["input"]["messages"][-1]["content"] == "hi"
    assert tasks[1]["error"] is None and tasks[1]["result"]["messages"][0]["content"].strip() == "You said: hi"

    checkpoints = [data for name, data in parts if name == "checkpoints"]
    assert [c["metadata"]["step"] for c in checkpoints] == [-1, 0, 1]
    assert checkpoints[-1]["next"] == [] and checkpoints[-1]["config"]["configurable"]["thread_id"] == thread_id
    state: Any = await client.threads.get_state(thread_id)
    last = checkpoints[-1]["config"]["configurable"]["checkpoint_id"]
    assert last == state["checkpoint"]["checkpoint_id"]

    debug = [data["payload"] for name, data in parts if name == "debug" and data["type"] == "checkpoint"]
    assert debug[-1]["checkpoint"] == {"checkpoint_id": last, "thread_id": thread_id, "checkpoint_ns": ""}
    assert debug[0]["parent_checkpoint"] is None and debug[-1]["parent_checkpoint"]["thread_id"] == thread_id


async def test_stream_modes_the_agent_server_refuses_are_422(shared_service: str) -> None:
    """'tools' and 'lifecycle' are its v2 event streaming's only; anything else is no mode at all."""
    thread_id = (await sdk_client(shared_service, "alice").threads.create())["thread_id"]
    async with httpx.AsyncClient(base_url=shared_service, headers=auth_headers("alice")) as http:
        for mode in ("tools", "lifecycle", "bogus", ["values", "nope"]):
            body = {"assistant_id": "agent", "input": say("x"), "stream_mode": mode}
            response = await http.post(f"/threads/{thread_id}/runs/stream", json=body)
            assert response.status_code == 422, (mode, response.text)


def graph_with_a_subgraph(model: BaseChatModel) -> StateGraph[MessagesState]:
    """A parent whose node 'inner' is a compiled graph whose node 'reply' calls the model."""

    async def reply(state: MessagesState) -> dict[str, list[object]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    inner = StateGraph(MessagesState)
    inner.add_node("reply", reply)
    inner.add_edge(START, "reply")
    inner.add_edge("reply", END)
    builder = StateGraph(MessagesState)
    builder.add_node("inner", inner.compile())
    builder.add_edge(START, "inner")
    builder.add_edge("inner", END)
    return builder


async def test_subgraph_events_are_namespaced_only_with_stream_subgraphs(settings: Settings) -> None:
    """As langgraph_api/stream.py names them: '<mode>|<namespace>', the namespace LangGraph's
    ('inner:<task id>'); without stream_subgraphs only the parent's events."""
    async with serve(settings, graph_builder=graph_with_a_subgraph) as base_url:
        client = sdk_client(base_url, "alice")
        thread_id = (await client.threads.create())["thread_id"]
        modes: Any = ["values", "updates", "messages-tuple"]
        parts = [
            (p.event, p.data)
            async for p in client.runs.stream(
                thread_id, "agent", input=say("deep"), stream_mode=modes, stream_subgraphs=True
            )
        ]
        names = [name for name, _ in parts]
        namespaced = sorted({name.split("|", 1)[1] for name in names if "|" in name})
        assert len(namespaced) == 1 and namespaced[0].startswith("inner:")
        ns = namespaced[0]
        assert {f"values|{ns}", f"updates|{ns}", f"messages|{ns}"} <= set(names)
        inner_update = next(data for name, data in parts if name == f"updates|{ns}")
        assert inner_update["reply"]["messages"][0]["content"].strip() == "You said: deep"
        parent_update = next(data for name, data in parts if name == "updates")
        assert parent_update["inner"]["messages"][-1]["content"].strip() == "You said: deep"
        tokens = [data for name, data in parts if name == f"messages|{ns}"]
        assert "".join(m["content"] for m, _ in tokens).strip() == "You said: deep"
        assert tokens[0][1]["langgraph_node"] == "reply"
        assert "messages" not in names  # the model runs inside the subgraph only

        flat = [p.event async for p in client.runs.stream(thread_id, "agent", input=say("flat"), stream_mode=modes)]
        assert "|" not in "".join(flat) and {"metadata", "values", "updates"} <= set(flat)
