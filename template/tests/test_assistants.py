"""Assistants and thread retention through langgraph-sdk: the built-in assistant, a user's own (create,
update, versions, latest, delete, search, count), the graph's drawing and schemas, runs on an assistant;
thread TTL, PATCH /threads/{id} and POST /threads/prune; and who may see what. One shared service: fast tier.
The sweeper itself is tested in test_retention.py (heavy)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import httpx
import pytest
from langgraph_sdk.errors import ConflictError, NotFoundError

from .support import auth_headers, sdk_client

BUILTIN_ID = str(uuid.uuid5(uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8"), "agent"))


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def human_turns(values: dict[str, Any]) -> list[str]:
    return [m["content"] for m in values["messages"] if m["type"] == "human"]


async def test_search_sorts_pages_and_selects_with_the_built_in_assistant_in_its_place(shared_service: str) -> None:
    client = sdk_client(shared_service, "carol")  # only this test acts as carol: her assistants are its own
    for name in ("b", "a", "c"):
        await client.assistants.create("agent", name=name)
    names = ["a", "agent", "approval", "b", "c"]  # built-in assistants are named after their graphs
    orders: list[tuple[Literal["asc", "desc"], list[str]]] = [("asc", names), ("desc", names[::-1])]
    for order, expected in orders:
        pages, offset = [], 0
        while True:  # pages of 3, by X-Pagination-Next: every assistant once, in order
            page: Any = await client.assistants.search(
                sort_by="name", sort_order=order, limit=3, offset=offset, response_format="object"
            )
            pages += [a["name"] for a in page["assistants"]]
            if page["next"] is None:
                break
            offset = int(page["next"])
        assert pages == expected, order
    chosen: Any = await client.assistants.search(sort_by="created_at", sort_order="asc", select=["name", "version"])
    assert chosen[-1] == {"name": "c", "version": 1} and all(set(a) == {"name", "version"} for a in chosen)
    async with httpx.AsyncClient(base_url=shared_service, headers=auth_headers("alice")) as http:
        refused = await http.post("/assistants/search", json={"sort_by": "config"})
        assert refused.status_code == 422


async def test_the_built_in_assistant_answers_to_its_graph_name_and_uuid(shared_service: str) -> None:
    client = sdk_client(shared_service, "alice")
    by_name, by_id = await client.assistants.get("agent"), await client.assistants.get(BUILTIN_ID)
    assert by_name == by_id and by_name["assistant_id"] == BUILTIN_ID and by_name["graph_id"] == "agent"

    drawing: Any = await client.assistants.get_graph("agent", xray=True)
    assert {node["id"] for node in drawing["nodes"]} == {"__start__", "chat", "__end__"}
    assert {"source": "chat", "target": "__end__"} in drawing["edges"]
    schemas: Any = await client.assistants.get_schemas(BUILTIN_ID)
    assert schemas["graph_id"] == "agent"
    assert "messages" in schemas["input_schema"]["properties"]
    assert "messages" in schemas["state_schema"]["properties"]
    assert set(schemas) >= {"output_schema", "config_schema", "context_schema"}
    assert await client.assistants.get_subgraphs("agent") == {}
    assert [v["version"] for v in await client.assistants.get_versions("agent")] == [1]

    with pytest.raises(ConflictError):
        await client.assistants.update("agent", name="mine now")
    with pytest.raises(ConflictError):
        await client.assistants.delete(BUILTIN_ID)


async def test_create_update_versions_latest_search_count_delete(shared_service: str) -> None:
    client = sdk_client(shared_service, "bob")
    tag = uuid.uuid4().hex  # this test's assistants, whatever other tests of the module made
    created: Any = await client.assistants.create(
        "agent",
        config={"configurable": {"tone": "dry"}},
        context={"lang": "en"},
        metadata={"tag": tag, "team": "a"},
        name="dry",
    )
    assistant_id = created["assistant_id"]
    assert (created["version"], created["name"], created["context"]) == (1, "dry", {"lang": "en"})
    again: Any = await client.assistants.create("agent", assistant_id=assistant_id, if_exists="do_nothing")
    assert again["name"] == "dry"
    with pytest.raises(ConflictError):
        await client.assistants.create("agent", assistant_id=assistant_id)

    updated: Any = await client.assistants.update(assistant_id, metadata={"stage": "beta"}, name="drier")
    assert (updated["version"], updated["name"]) == (2, "drier")
    assert updated["metadata"] == {"tag": tag, "team": "a", "stage": "beta"}, "metadata merges"
    assert updated["config"] == {"configurable": {"tone": "dry"}}, "fields not sent stay"
    versions: Any = await client.assistants.get_versions(assistant_id)
    assert [v["version"] for v in versions] == [2, 1]
    rolled_back: Any = await client.assistants.set_latest(assistant_id, 1)
    assert (rolled_back["version"], rolled_back["name"]) == (1, "dry")
    with pytest.raises(NotFoundError):
        await client.assistants.set_latest(assistant_id, 7)

    second: Any = await client.assistants.create("agent", metadata={"tag": tag, "team": "b"})
    assert second["name"] == "Untitled"
    everyone = await client.assistants.count()
    assert everyone >= 3, "the built-in assistant and the user's own"
    assert await client.assistants.count(metadata={"tag": tag}) == 2
    assert await client.assistants.count(metadata={"tag": tag, "team": "a"}) == 1
    page: Any = await client.assistants.search(metadata={"tag": tag}, limit=1, response_format="object")
    assert [a["assistant_id"] for a in page["assistants"]] == [second["assistant_id"]], "newest first"
    assert page["next"] == "1"
    last: Any = await client.assistants.search(metadata={"tag": tag}, limit=1, offset=1, response_format="object")
    assert [a["assistant_id"] for a in last["assistants"]] == [assistant_id] and last["next"] is None
    first_page: Any = await client.assistants.search(limit=1, response_format="object")
    assert [a["assistant_id"] for a in first_page["assistants"]] == [BUILTIN_ID] and first_page["next"] == "1"
    for call in (client.assistants.search, client.assistants.count):  # a graph the service does not serve
        with pytest.raises(NotFoundError):
            await call(graph_id="other")

    await client.assistants.delete(assistant_id)
    with pytest.raises(NotFoundError):
        await client.assistants.get(assistant_id)
    assert await client.assistants.count() == everyone - 1


async def test_a_run_on_an_assistant_uses_its_config_and_context(shared_service: str) -> None:
    client = sdk_client(shared_service, "alice")
    assistant: Any = await client.assistants.create(
        "agent", config={"configurable": {"tone": "dry", "style": "short"}}, context={"lang": "en"}
    )
    thread: Any = await client.threads.create()
    run: Any = await client.runs.create(
        thread["thread_id"], assistant["assistant_id"], input=say("hello"), config={"configurable": {"style": "long"}}
    )
    assert run["assistant_id"] == assistant["assistant_id"]
    configurable = run["kwargs"]["config"]["configurable"]
    assert (configurable["tone"], configurable["style"]) == ("dry", "long"), "the run's config wins, key by key"
    assert configurable["assistant_id"] == assistant["assistant_id"] and configurable["graph_id"] == "agent"
    assert run["kwargs"]["context"] == {"lang": "en"}
    result: Any = await client.runs.join(thread["thread_id"], run["run_id"])
    assert result["messages"][-1]["content"] == "You said: hello"


async def test_a_users_assistants_are_invisible_to_everyone_else(shared_service: str) -> None:
    alice, bob = sdk_client(shared_service, "alice"), sdk_client(shared_service, "mallory")
    mine: Any = await alice.assistants.create("agent", name="alice's", metadata={"owner": "alice"})
    assistant_id = mine["assistant_id"]
    for call in (
        bob.assistants.get(assistant_id),
        bob.assistants.get_graph(assistant_id),
        bob.assistants.get_schemas(assistant_id),
        bob.assistants.get_versions(assistant_id),
        bob.assistants.update(assistant_id, name="bob's"),
        bob.assistants.set_latest(assistant_id, 1),
        bob.assistants.delete(assistant_id),
    ):
        with pytest.raises(NotFoundError):
            await call
    assert await bob.assistants.search(metadata={"owner": "alice"}) == []
    assert await bob.assistants.count(metadata={"owner": "alice"}) == 0
    with pytest.raises(ConflictError):
        await bob.assistants.create("agent", assistant_id=assistant_id, if_exists="do_nothing")
    bob_thread: Any = await bob.threads.create()
    with pytest.raises(NotFoundError):
        await bob.runs.create(bob_thread["thread_id"], assistant_id, input=say("hello"))
    assert (await alice.assistants.get(assistant_id))["name"] == "alice's", "untouched by bob's attempts"


async def test_bad_assistant_requests_get_4xx(shared_service: str) -> None:
    async with httpx.AsyncClient(base_url=shared_service, headers=auth_headers("bob")) as http:
        assert (await http.post("/assistants", json={"graph_id": "other"})).status_code == 404
        assert (await http.post("/assistants", json={"graph_id": "agent", "assistant_id": "x"})).status_code == 422
        assert (await http.get("/assistants/not-a-uuid")).status_code == 404
        assert (await http.get("/assistants/agent/graph", params={"xray": "-1"})).status_code == 422
        assert (await http.post("/assistants/agent/latest", json={"version": 0})).status_code == 422


# Thread TTL and prune


async def test_ttl_and_metadata_through_create_update_and_get(shared_service: str) -> None:
    client = sdk_client(shared_service, "alice")
    thread: Any = await client.threads.create(metadata={"topic": "billing"}, ttl=60)
    thread_id = thread["thread_id"]
    fetched: Any = await client.threads.get(thread_id, include=["ttl"])
    info = fetched["ttl"]
    assert (info["strategy"], info["ttl_minutes"]) == ("delete", 60)

    updated: Any = await client.threads.update(
        thread_id, metadata={"stage": "open", "user_id": "forged"}, ttl={"ttl": 5, "strategy": "keep_latest"}
    )
    assert updated["metadata"]["topic"] == "billing" and updated["metadata"]["stage"] == "open", "metadata merges"
    assert updated["metadata"]["user_id"] == thread["metadata"]["user_id"], "the owner is not the caller's to set"
    fetched = await client.threads.get(thread_id, include=["ttl"])
    info = fetched["ttl"]
    assert (info["strategy"], info["ttl_minutes"]) == ("keep_latest", 5)
    fetched = await client.threads.get(thread_id)
    assert fetched["metadata"]["stage"] == "open"

    no_ttl: Any = await client.threads.create()
    fetched = await client.threads.get(no_ttl["thread_id"], include=["ttl"])
    assert fetched["ttl"] is None


async def test_prune_keep_latest_then_delete_and_only_the_callers_threads(shared_service: str) -> None:
    alice, bob = sdk_client(shared_service, "alice"), sdk_client(shared_service, "mallory")
    thread_id = (await alice.threads.create())["thread_id"]
    await alice.runs.wait(thread_id, "agent", input=say("turn 0"))
    assert len(await alice.threads.get_history(thread_id, limit=100)) > 1
    assert await bob.threads.prune([thread_id, "not-a-thread-id"]) == {"pruned_count": 0}
    with pytest.raises(NotFoundError):
        await bob.threads.update(thread_id, metadata={"taken": True})
    assert len(await alice.threads.get_history(thread_id, limit=100)) > 1, "untouched by bob"

    assert await alice.threads.prune([thread_id], strategy="keep_latest") == {"pruned_count": 1}
    assert len(await alice.threads.get_history(thread_id, limit=100)) == 1
    state: Any = await alice.threads.get_state(thread_id)
    assert human_turns(state["values"]) == ["turn 0"]
    result: Any = await alice.runs.wait(thread_id, "agent", input=say("turn 1"))
    assert human_turns(result) == ["turn 0", "turn 1"]

    assert await alice.threads.prune([thread_id]) == {"pruned_count": 1}
    with pytest.raises(NotFoundError):
        await alice.threads.get(thread_id)
    async with httpx.AsyncClient(base_url=shared_service, headers=auth_headers("alice")) as http:
        bad = await http.post("/threads/prune", json={"thread_ids": [thread_id], "strategy": "forget"})
        assert bad.status_code == 422
        nul = await http.post("/threads/prune", json={"thread_ids": ["\x00"]})
        assert nul.status_code == 422 and "NUL" in str(nul.json()["detail"])
        created = await http.post("/threads", json={"ttl": {"ttl": -1}})
        assert created.status_code == 422
