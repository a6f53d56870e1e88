"""Threads named by the client's own UUIDs, as on the Agent Server: per user, answered as given, never leaked."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from langgraph_sdk.errors import NotFoundError

from .support import auth_headers, sdk_client


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


async def test_two_users_who_pick_the_same_uuid_each_get_a_thread_of_their_own(service: str) -> None:
    alice, bob = sdk_client(service, "alice"), sdk_client(service, "bob")
    chosen = str(uuid.uuid4())

    created: Any = await alice.threads.create(thread_id=chosen, metadata={"owner": "alice"})
    assert created["thread_id"] == chosen
    # What bob sees of alice's UUID is what he sees of one nobody picked: the same 404, and then his own thread.
    unused = str(uuid.uuid4())
    for thread_id in (chosen, unused):
        with pytest.raises(NotFoundError):
            await bob.threads.get(thread_id)
        with pytest.raises(NotFoundError):
            await bob.threads.get_state(thread_id)
    theirs: Any = await bob.threads.create(thread_id=chosen)
    assert theirs["thread_id"] == chosen and theirs["metadata"].get("owner") is None

    said: Any = await alice.runs.wait(chosen, "agent", input=say("from alice"))
    heard: Any = await bob.runs.wait(chosen, "agent", input=say("from bob"))
    assert [m["content"] for m in said["messages"]] == ["from alice", "You said: from alice"]
    assert [m["content"] for m in heard["messages"]] == ["from bob", "You said: from bob"]
    state: Any = await alice.threads.get_state(chosen)
    assert state["checkpoint"]["thread_id"] == chosen and state["parent_checkpoint"]["thread_id"] == chosen
    assert [t["thread_id"] for t in await alice.threads.search(metadata={"owner": "alice"})] == [chosen]
    assert [t["thread_id"] for t in await bob.threads.search(ids=[chosen])] == [chosen]

    # The same UUID again: 409, or the existing thread with if_exists=do_nothing, as the Agent Server answers.
    with pytest.raises(httpx.HTTPStatusError) as conflict:
        await alice.threads.create(thread_id=chosen)
    assert conflict.value.response.status_code == 409
    again: Any = await alice.threads.create(thread_id=chosen, if_exists="do_nothing")
    assert again["metadata"]["owner"] == "alice"

    await bob.threads.delete(chosen)
    assert (await alice.threads.get(chosen))["thread_id"] == chosen
    kept: Any = await alice.threads.get_state(chosen)
    assert len(kept["values"]["messages"]) == 2


async def test_a_run_creates_the_clients_thread_and_no_answer_shows_the_stored_id(service: str) -> None:
    client = sdk_client(service, "alice")
    chosen = uuid.uuid4()
    # Any spelling uuid.UUID reads names the same thread; answers use the canonical one, as the Agent Server's do.
    run: Any = await client.runs.create(chosen.hex.upper(), "agent", input=say("hi"), if_not_exists="create")
    assert run["thread_id"] == str(chosen)
    await client.runs.join(str(chosen), run["run_id"])
    parts = [part async for part in client.runs.stream(str(chosen), "agent", input=say("again"), stream_mode="debug")]
    assert parts[0].event == "metadata" and parts[-1].event != "error"

    async with httpx.AsyncClient(base_url=service, headers=auth_headers("alice")) as http:
        created = await http.post(f"/threads/{chosen}/runs", json={"assistant_id": "agent", "input": say("more")})
        assert created.status_code == 200 and created.headers["Content-Location"].startswith(f"/threads/{chosen}/")
        await http.get(f"/threads/{chosen}/runs/{created.json()['run_id']}/join")
        answers = [
            created,
            await http.get(f"/threads/{chosen}"),
            await http.get(f"/threads/{chosen}/state"),
            await http.post(f"/threads/{chosen}/history", json={"limit": 20}),
            await http.get(f"/threads/{chosen}/runs"),
            await http.post("/threads/search", json={"limit": 100}),
        ]
        for answer in answers:
            assert answer.status_code == 200 and "c1." not in answer.text and str(chosen) in answer.text
        # A stream's bytes too.
        request = {"assistant_id": "agent", "input": say("s"), "stream_mode": "debug"}
        async with http.stream("POST", f"/threads/{chosen}/runs/stream", json=request) as streamed:
            text = "".join([chunk async for chunk in streamed.aiter_text()])
        assert "c1." not in text and str(chosen) in text
    assert any(t["thread_id"] == str(chosen) for t in await client.threads.search(limit=100))
    await client.runs.cancel_many(thread_id=str(chosen), status="pending")
    pruned: Any = await client.threads.prune([str(chosen)])
    assert pruned["pruned_count"] == 1
    with pytest.raises(NotFoundError):
        await client.threads.get(str(chosen))
