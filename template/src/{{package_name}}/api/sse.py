"""Server-sent events framing, as the Agent Server frames a run's stream (langgraph_api/sse.py): one
`event:`/`data:` block per event, an `id:` line only where a reconnect can resume from it, a comment line as
the heartbeat, every line ended by CRLF."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from ..platform.runs import RunEvent

HEARTBEAT = b": heartbeat\r\n\r\n"


async def sse_frames(
    events: AsyncIterator[RunEvent | None],
    with_ids: bool,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """`events` framed; None in it is a heartbeat, and an event of ID 0 has no `id:` line. `on_disconnect`
    runs when the client leaves early."""
    finished = False
    try:
        async for item in events:
            if item is None:
                yield HEARTBEAT
            elif with_ids and item.id:
                yield f"event: {item.event}\r\ndata: {item.data}\r\nid: {item.id}\r\n\r\n".encode()
            else:
                yield f"event: {item.event}\r\ndata: {item.data}\r\n\r\n".encode()
        finished = True
    finally:
        if not finished and on_disconnect is not None:
            await on_disconnect()
