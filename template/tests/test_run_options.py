"""Run and thread options as the Agent Server takes them: context, the metadata a run stamps, update_state's
special nodes, durability="exit", a thread created with supersteps, through langgraph-sdk against real
PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, cast

import httpx
import pytest

from .support import auth_headers, sdk_client

HELLO: Any = {"messages": [{"role": "user", "content": "hello there"}]}


def texts(values: dict[str, Any]) -> list[str]:
    return [str(m["content"]).strip() for m in values["messages"]]


async def test_context_lands_in_checkpoint_metadata_and_excludes_configurable(shared_service: str) -> None:
    client = sdk_client(shared_service, "alice")
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "agent", input=HELLO, context={"tenant": "acme", "tier": 2, "nested": {"a": 1}})
    state: Any = await client.threads.get_state(thread_id)
    # As langgraph copies configurable's scalars: the nested value stays out of the metadata.
    assert state["metadata"]["tenant"] == "acme" and state["metadata"]["tier"] == 2
    assert "nested" not in state["metadata"]
    with pytest.raises(httpx.HTTPStatusError) as both:
        await client.runs.wait(
            thread_id, "agent", input=HELLO, context={"tenant": "acme"}, config={"configurable": {"tenant": "x"}}
        )
    assert both.value.response.status_code == 400
    assert both.value.response.json()["detail"].startswith("Cannot specify both configurable and context.")


async def test_a_run_stamps_its_checkpoints_and_its_metadata_as_the_agent_server_does(shared_service: str) -> None:
    client = sdk_client(shared_service, "carol")
    thread_id = (await client.threads.create(metadata={"team": "a"}))["thread_id"]
    built_in: Any = await client.assistants.get("agent")
    async with httpx.AsyncClient(base_url=shared_service, headers=auth_headers("carol")) as http:
        answer = await http.post(
            f"/threads/{thread_id}/runs/wait",
            json={"assistant_id": "agent", "input": HELLO, "metadata": {"ticket": 7}},
            headers={"X-Request-Id": "req-stamped-1"},
        )
    assert answer.status_code == 200
    [run] = cast(list[dict[str, Any]], await client.runs.list(thread_id))
    # The assistant's metadata, the thread's and the request's; the assistant the name resolved to.
    assert run["metadata"]["created_by"] == "system" and run["metadata"]["team"] == "a"
    assert run["metadata"]["ticket"] == 7 and run["metadata"]["assistant_id"] == built_in["assistant_id"]
    state: Any = await client.threads.get_state(thread_id)
    stamped = state["metadata"]
    assert stamped["team"] == "a" and stamped["ticket"] == 7 and stamped["created_by"] == "system"
    assert stamped["run_attempt"] == 1 and stamped["langgraph_version"] and stamped["langgraph_host"] == "self-hosted"
    assert stamped["user_id"] == "carol" and stamped["langgraph_auth_user_id"] == "carol"
    assert stamped["langgraph_request_id"] == "req-stamped-1" and stamped["run_id"] == run["run_id"]
    # A request cannot name another user to the graph.
    await client.runs.wait(thread_id, "agent", input=HELLO, config={"configurable": {"user_id": "mallory"}})
    again: Any = await client.threads.get_state(thread_id)
    assert again["metadata"]["user_id"] == "carol"


async def test_update_state_as_input_copy_and_end(shared_service: str) -> None:
    client = sdk_client(shared_service, "bob")
    thread_id = (await client.threads.create())["thread_id"]
    # As the graph's input: the input checkpoint a run would write, with its __start__ task still to run.
    await client.threads.update_state(thread_id, HELLO, as_node="__input__")
    state: Any = await client.threads.get_state(thread_id)
    assert state["metadata"]["source"] == "input" and state["next"] == ["__start__"]
    # Cleared: nothing is left to run, so a run without input is refused.
    await client.threads.update_state(thread_id, None, as_node="__end__")
    assert (await client.threads.get_state(thread_id))["next"] == []
    with pytest.raises(httpx.HTTPStatusError) as idle:
        await client.runs.wait(thread_id, "agent", input=None)
    assert idle.value.response.status_code == 422
    # Written as input again, the thread runs from it.
    await client.threads.update_state(thread_id, HELLO, as_node="__input__")
    answered: Any = await client.runs.wait(thread_id, "agent", input=None)
    assert texts(answered) == ["hello there", "You said: hello there"]
    # A fork of the latest checkpoint with the same values, then one with an update applied to the copy.
    await client.threads.update_state(thread_id, None, as_node="__copy__")
    copied: Any = await client.threads.get_state(thread_id)
    assert copied["metadata"]["source"] == "fork" and texts(copied["values"]) == texts(answered)
    reply: Any = [{"messages": [{"role": "assistant", "content": "edited"}]}, "chat"]
    await client.threads.update_state(thread_id, [reply], as_node="__copy__")
    edited: Any = await client.threads.get_state(thread_id)
    assert texts(edited["values"]) == [*texts(answered), "edited"]
    async with httpx.AsyncClient(base_url=shared_service, headers=auth_headers("bob")) as http:
        base = f"/threads/{thread_id}/state"
        assert (await http.post(base, json={"values": [reply], "as_node": "chat"})).status_code == 422
        assert (await http.post(base, json={"values": [["x"]], "as_node": "__copy__"})).status_code == 422
        empty = (await client.threads.create())["thread_id"]
        nothing = await http.post(f"/threads/{empty}/state", json={"as_node": "__copy__"})
        assert nothing.status_code == 422


async def test_durability_exit_keeps_one_checkpoint_per_turn(shared_service: str) -> None:
    client = sdk_client(shared_service, "carol")
    thread_id = (await client.threads.create())["thread_id"]
    for text in ("one", "two"):
        turn: Any = {"messages": [{"role": "user", "content": text}]}
        await client.runs.wait(thread_id, "agent", input=turn, durability="exit")
    history: Any = await client.threads.get_history(thread_id, limit=100)
    assert len(history) == 2
    assert texts(history[0]["values"]) == ["one", "You said: one", "two", "You said: two"]
    assert texts(history[1]["values"]) == ["one", "You said: one"]
    assert history[1]["parent_checkpoint"] is None
    assert history[0]["parent_checkpoint"]["checkpoint_id"] == history[1]["checkpoint"]["checkpoint_id"]


async def test_thread_created_with_supersteps(shared_service: str) -> None:
    client = sdk_client(shared_service, "alice")
    supersteps: Any = [
        {"updates": [{"values": HELLO, "as_node": "__input__"}]},
        {"updates": [{"values": HELLO, "as_node": "__start__"}]},
        {"updates": [{"values": {"messages": [{"role": "assistant", "content": "copied"}]}, "as_node": "chat"}]},
    ]
    thread: Any = await client.threads.create(supersteps=supersteps)
    assert texts(thread["values"]) == ["hello there", "copied"] and thread["status"] == "idle"
    history: Any = await client.threads.get_history(thread["thread_id"], limit=10)
    assert [h["metadata"]["source"] for h in history] == ["update", "update", "input"]
    # The thread goes on from the state it was created with.
    more: Any = {"messages": [{"role": "user", "content": "more"}]}
    result: Any = await client.runs.wait(thread["thread_id"], "agent", input=more)
    assert texts(result)[-1] == "You said: more"
    before = len(await client.threads.search(limit=100))
    with pytest.raises(httpx.HTTPStatusError) as refused:
        # langgraph refuses the second superstep after the first was written: neither is kept.
        await client.threads.create(supersteps=[supersteps[0], {"updates": supersteps[0]["updates"] * 2}])
    assert refused.value.response.status_code == 422
    assert len(await client.threads.search(limit=100)) == before


async def config_of(thread: Awaitable[Any]) -> Any:
    """A thread's config (the SDK's Thread type leaves it out)."""
    return (await thread)["config"]


async def test_a_thread_keeps_the_config_its_runs_leave_as_the_agent_server_does(shared_service: str) -> None:
    client = sdk_client(shared_service, "carol")
    assistant: Any = await client.assistants.create("agent", config={"tags": ["a"], "configurable": {"model": "m1"}})
    thread_id = (await client.threads.create())["thread_id"]
    assert await config_of(client.threads.get(thread_id)) == {}
    first = {"tags": ["b"], "recursion_limit": 10, "configurable": {"x": 1}}
    await client.runs.wait(thread_id, assistant["assistant_id"], input=HELLO, config=cast(Any, first))
    # The assistant's, then the request's; the configurable is the assistant's alone (the request's is the run's).
    left = {"tags": ["b"], "recursion_limit": 10, "configurable": {"model": "m1"}}
    assert await config_of(client.threads.get(thread_id)) == left
    # Another assistant's run: the thread's own config goes between that assistant's and the request's.
    await client.runs.wait(thread_id, "agent", input=HELLO, config={"tags": ["c"]})
    left = {"tags": ["c"], "recursion_limit": 10, "configurable": {"model": "m1"}}
    assert await config_of(client.threads.get(thread_id)) == left
    found: Any = await client.threads.search(ids=[thread_id])
    assert [thread["config"] for thread in found] == [left]
    assert await config_of(cast(Any, client.threads.copy(thread_id))) == left
    # A stateless run's new thread: the assistant's config and the request's.
    await client.runs.wait(None, assistant["assistant_id"], input=HELLO, config={"tags": ["d"]}, on_completion="keep")
    stateless: Any = await client.threads.search(metadata={"assistant_id": assistant["assistant_id"]}, limit=1)
    assert stateless[0]["config"] == {"tags": ["d"], "configurable": {"model": "m1"}}
