"""Stream modes, subgraph namespaces and the thread stream, through langgraph-sdk as a client reads them."""

from __future__ import annotations

import asyncio
import signal
import time
from contextlib import aclosing
from typing import Any

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, MessagesState, StateGraph

from agent_service.settings import Settings

from .process import service_processes
from .support import auth_headers, query_rows, sdk_client, serve


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


async def joined(database_url: str, thread_id: str) -> None:
    """Until a reader of the thread's stream has marked the thread (it follows every run created after)."""
    deadline = time.monotonic() + 10
    while not query_rows(database_url, "SELECT 1 FROM service_thread_streams WHERE thread_id = %s", thread_id):
        assert time.monotonic() < deadline, "the thread stream never joined"
        await asyncio.sleep(0.02)


async def read_thread(client: Any, thread_id: str, runs: int, **options: Any) -> list[Any]:
    """The thread stream's parts until `runs` runs are done (the stream itself never ends)."""
    parts = []
    async with asyncio.timeout(30), aclosing(await client.threads.join_stream(thread_id, **options)) as stream:
        async for part in stream:
            parts.append(part)
            if sum(p.data.get("status") == "run_done" for p in parts if p.event == "metadata") == runs:
                return parts
    raise AssertionError("the thread stream ended")


def run_done(run_id: str) -> tuple[str, Any]:
    return "metadata", {"status": "run_done", "run_id": run_id}


async def test_thread_stream_follows_the_threads_runs_across_replicas(settings: Settings, database_url: str) -> None:
    """As langgraph_runtime_inmem joins a thread: each run's events in its own stream modes, then its
    'run_done'; 'lifecycle' only the runs' start and end. The reader and the runs on different replicas."""
    async with serve(settings) as url_a, serve(settings) as url_b:
        a, b = sdk_client(url_a, "alice"), sdk_client(url_b, "alice")
        thread_id = (await a.threads.create())["thread_id"]
        reader = asyncio.create_task(read_thread(b, thread_id, 2))
        await joined(database_url, thread_id)
        first: list[Any] = []
        await a.runs.wait(thread_id, "agent", input=say("one"), on_run_created=first.append)
        second: Any = await a.runs.create(thread_id, "agent", input=say("two"), stream_mode=["updates"])
        parts = [(p.event, p.data) for p in await reader]
        assert all(p.id is None for p in reader.result())  # neither run is resumable
        one, two = first[0]["run_id"], second["run_id"]
        split = parts.index(run_done(one)) + 1
        runs = [parts[:split], parts[split:]]
        assert runs[0][0] == ("metadata", {"run_id": one, "attempt": 1}) and runs[0][-1] == run_done(one)
        assert {name for name, _ in runs[0][1:-1]} == {"values"}
        assert runs[0][-2][1]["messages"][-1]["content"].strip() == "You said: one"
        assert runs[1][0] == ("metadata", {"run_id": two, "attempt": 1}) and runs[1][-1] == run_done(two)
        assert [name for name, _ in runs[1][1:-1]] == ["updates"]
        assert runs[1][1][1]["chat"]["messages"][0]["content"].strip() == "You said: two"

        other = (await b.threads.create())["thread_id"]
        reader = asyncio.create_task(read_thread(a, other, 1, stream_mode="lifecycle"))
        await joined(database_url, other)
        third: list[Any] = []
        await b.runs.wait(other, "agent", input=say("three"), on_run_created=third.append)
        lifecycle = [(p.event, p.data) for p in await reader]
        assert lifecycle == [("metadata", {"run_id": third[0]["run_id"], "attempt": 1}), run_done(third[0]["run_id"])]


async def test_thread_stream_joins_a_run_in_flight_live_on_its_replica_and_elsewhere(
    settings: Settings, database_url: str
) -> None:
    """A run already running when the reader joins is followed from that moment on, as join_stream is:
    in memory on the replica that executes it, through its event rows from any other."""
    slow = settings.model_copy(update={"fake_llm_token_delay_seconds": 0.05})
    async with serve(slow) as url_a, serve(slow) as url_b:
        a, b = sdk_client(url_a, "alice"), sdk_client(url_b, "alice")
        thread_id = (await a.threads.create())["thread_id"]
        words = " ".join(f"w{n}" for n in range(24))
        run: Any = await a.runs.create(thread_id, "agent", input=say(words), stream_mode=["messages-tuple"])
        assert run["status"] == "running"  # started at once by replica A
        readers = [asyncio.create_task(read_thread(client, thread_id, 1)) for client in (a, b)]
        for parts in await asyncio.gather(*readers):
            names = [p.event for p in parts]
            assert names[-1] == "metadata" and parts[-1].data == {"status": "run_done", "run_id": run["run_id"]}
            assert "messages" in names and set(names[:-1]) == {"messages"}  # joined after the run's start
            tokens = "".join(p.data[0]["content"] for p in parts if p.event == "messages").split()
            assert tokens and tokens[-1] == "w23"
        assert (await a.runs.get(thread_id, run["run_id"]))["status"] == "success"


async def test_thread_stream_sends_state_updates_in_the_state_update_mode_only(
    settings: Settings, database_url: str
) -> None:
    """As the Agent Server publishes them: {"state": the thread's new state, "thread_id"}, to readers on
    any replica; the default mode (run_modes) leaves them out."""
    async with serve(settings) as url_a, serve(settings) as url_b:
        a, b = sdk_client(url_a, "alice"), sdk_client(url_b, "alice")
        thread_id = (await a.threads.create())["thread_id"]
        await a.runs.wait(thread_id, "agent", input=say("hi"))
        modes: Any = ["state_update", "lifecycle"]
        reader = asyncio.create_task(read_thread(b, thread_id, 1, stream_mode=modes))
        await joined(database_url, thread_id)
        updated: Any = await a.threads.update_state(thread_id, say("edited"), as_node="chat")
        await a.runs.wait(thread_id, "agent", input=say("after"))
        parts = [(p.event, p.data) for p in await reader]
        assert [name for name, _ in parts] == ["state_update", "metadata", "metadata"]
        update = parts[0][1]
        assert update["thread_id"] == thread_id
        assert update["state"]["checkpoint"]["checkpoint_id"] == updated["checkpoint"]["checkpoint_id"]
        assert update["state"]["values"]["messages"][-1]["content"] == "edited"


@pytest.mark.heavy
async def test_a_thread_stream_sends_a_run_that_ended_before_its_replica_heard_of_it(
    settings: Settings, database_url: str
) -> None:
    """The reader's replica is stalled (SIGSTOP: a pause, a starved loop) while a run on the other replica
    starts and ends: once it wakes, the run's events and end still reach the reader, from their rows. It
    followed only the runs still in flight, and waited for this one forever (a CI flake under load)."""
    with service_processes(settings, 2) as [(url_a, _), (url_b, replica_b)]:
        a, b = sdk_client(url_a, "alice"), sdk_client(url_b, "alice")
        thread_id = (await a.threads.create())["thread_id"]
        reader = asyncio.create_task(read_thread(b, thread_id, 1))
        await joined(database_url, thread_id)
        created: list[Any] = []
        replica_b.send_signal(signal.SIGSTOP)
        try:
            await a.runs.wait(thread_id, "agent", input=say("while b slept"), on_run_created=created.append)
        finally:
            replica_b.send_signal(signal.SIGCONT)
        parts = [(p.event, p.data) for p in await reader]
        run_id = created[0]["run_id"]
        assert parts[0] == ("metadata", {"run_id": run_id, "attempt": 1}) and parts[-1] == run_done(run_id)
        assert parts[-2][1]["messages"][-1]["content"].strip() == "You said: while b slept"


async def test_thread_stream_resumes_after_last_event_id(shared_service: str) -> None:
    """With Last-Event-ID, the events after it of the thread's resumable runs first, with their IDs
    (a run that was not resumable left none to replay), each run's end after its events."""
    client = sdk_client(shared_service, "alice")
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "agent", input=say("not resumable"))
    created: list[Any] = []
    parts = [
        p
        async for p in client.runs.stream(
            thread_id, "agent", input=say("again"), stream_resumable=True, on_run_created=created.append
        )
    ]
    run_id = created[0]["run_id"]
    assert all(p.id for p in parts)
    replayed = await read_thread(client, thread_id, 1, last_event_id="0")
    # The end has no ID of its own (the SDK repeats the last one it read, as SSE clients do).
    assert [(p.event, p.data, p.id) for p in replayed[:-1]] == [(p.event, p.data, p.id) for p in parts]
    assert (replayed[-1].event, replayed[-1].data) == run_done(run_id)
    resumed = await read_thread(client, thread_id, 1, last_event_id=parts[1].id)
    assert [p.id for p in resumed[:-1]] == [p.id for p in parts[2:]]
    assert (resumed[-1].event, resumed[-1].data) == run_done(run_id)


async def test_thread_stream_of_a_foreign_thread_is_404_and_bad_options_are_422(shared_service: str) -> None:
    alice = sdk_client(shared_service, "alice")
    thread_id = (await alice.threads.create())["thread_id"]
    gone = (await alice.threads.create())["thread_id"]
    await alice.threads.delete(gone)
    async with httpx.AsyncClient(base_url=shared_service, headers=auth_headers("mallory")) as http:
        response = await http.get(f"/threads/{thread_id}/stream")
        assert response.status_code == 404 and "detail" in response.json()
    async with httpx.AsyncClient(base_url=shared_service, headers=auth_headers("alice")) as http:
        response = await http.get(f"/threads/{gone}/stream")
        assert response.status_code == 404 and "detail" in response.json()
        for params, headers in [
            ({"stream_mode": "values"}, {}),
            ({"stream_modes": "run_modes,bogus"}, {}),
            ({}, {"Last-Event-ID": "1-0"}),
        ]:
            response = await http.get(f"/threads/{thread_id}/stream", params=params, headers=headers)
            assert response.status_code == 422, (params, headers, response.text)
            assert "detail" in response.json()
