"""Request dependencies: the lifespan's services, the caller, and the caller's own thread."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from ..errors import ThreadNotFound, Unavailable
from ..platform.core.logs import bind
from ..platform.services import Services
from ..platform.threads.ids import MAX_THREAD_ID_CHARS
from ..platform.threads.registry import ThreadRecord
from .auth import current_user


# async: a plain def dependency would cost every request a hop to the threadpool.
async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise Unavailable("service is starting")
    return services


async def logged_user(user: Annotated[str, Depends(current_user)]) -> str:
    """The caller, also named on the request's log records and span."""
    bind(user=user)
    return user


ServicesDep = Annotated[Services, Depends(get_services)]


async def limited_user(services: ServicesDep, user: Annotated[str, Depends(logged_user)]) -> str:
    """The caller, counted against their request rate limit (429 over it)."""
    await services.rate_limit.hit(user)
    return user


UserDep = Annotated[str, Depends(limited_user)]


async def authenticated(request: Request) -> tuple[Services, str]:
    """The services and the caller, counted against their rate limit, for an endpoint that is not a FastAPI
    route (MCP's and A2A's SDK-driven ones): refusals (401, 429, 503) raise before the SDK reads the body, and
    the app's handlers answer them."""
    services = await get_services(request)
    return services, await limited_user(services, await logged_user(await current_user(request)))


async def owned_thread_id(
    services: ServicesDep, user: UserDep, thread_id: Annotated[str, Path(max_length=MAX_THREAD_ID_CHARS)]
) -> str:
    """The stored ID of the caller's thread in the path, its signature checked, not its existence: a UUID names
    the caller's own thread of that name (platform/threads/ids.py); forged, tampered and foreign IDs are 404."""
    thread_id = services.thread_ids.stored_id(user, thread_id)
    if not services.thread_ids.is_owner(thread_id, user):
        raise ThreadNotFound()
    bind(thread_id=thread_id)
    return thread_id


# The thread of a run's own routes (get, join, join's stream): a stateless run's thread (on_completion=delete)
# is deleted when the run ends, while the run and its result are kept a retention longer for its joiners.
RunThreadDep = Annotated[str, Depends(owned_thread_id)]


async def owned_thread(services: ServicesDep, user: UserDep, thread_id: RunThreadDep) -> ThreadRecord:
    """The caller's thread; forged, tampered, foreign and unknown IDs all look the same: 404."""
    record = await services.registry.get(thread_id, user)
    if record is None:
        raise ThreadNotFound()
    return record


ThreadDep = Annotated[ThreadRecord, Depends(owned_thread)]
