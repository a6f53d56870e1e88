"""Request dependencies: the lifespan's services, the caller, and the caller's own thread."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from ..errors import ThreadNotFound, Unavailable
from ..platform.logs import bind
from ..platform.registry import ThreadRecord
from ..platform.services import Services
from ..platform.threads import MAX_THREAD_ID_CHARS, InvalidThreadId
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


def check_owner(services: Services, user: str, thread_id: str) -> None:
    """404 unless the signed ID names `user` as its owner: a forged or foreign ID looks like an unknown one."""
    try:
        owner = services.thread_ids.owner_of(thread_id)
    except InvalidThreadId as exc:
        raise ThreadNotFound() from exc
    if owner != user:
        raise ThreadNotFound()


async def owned_thread(
    services: ServicesDep, user: UserDep, thread_id: Annotated[str, Path(max_length=MAX_THREAD_ID_CHARS)]
) -> ThreadRecord:
    """The caller's thread; forged, tampered, foreign and unknown IDs all look the same: 404."""
    check_owner(services, user, thread_id)
    bind(thread_id=thread_id)
    record = await services.registry.get(thread_id, user)
    if record is None:
        raise ThreadNotFound()
    return record


ThreadDep = Annotated[ThreadRecord, Depends(owned_thread)]
