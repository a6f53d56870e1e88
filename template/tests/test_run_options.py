"""Run and thread options as the Agent Server takes them: context, update_state's special nodes,
durability="exit", a thread created with supersteps, through langgraph-sdk against real PostgreSQL."""

from __future__ import annotations

from typing import Any

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
