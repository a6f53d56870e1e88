"""Liveness, readiness, server info and the Prometheus scrape endpoint."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import Unavailable
from ..platform.core.metrics import Metrics
from .deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/ok")
async def ok() -> dict[str, bool]:
    return {"ok": True}


@cache
def _versions() -> tuple[str, str]:
    """The service's and LangGraph's versions: fixed for the process, and costly to look up per request."""
    try:
        service_version = version(__name__.split(".")[0].replace("_", "-"))
    except PackageNotFoundError:  # run from a source checkout without installing it
        service_version = "unknown"
    return service_version, version("langgraph")


def service_version() -> str:
    """The service's own version, as /info reports it (and A2A's agent cards)."""
    return _versions()[0]


@router.get("/info")
async def info() -> dict[str, Any]:
    """What the Agent Server's /info reports; JS front ends call it on load to find the server."""
    service_version, langgraph_version = _versions()
    return {
        "version": service_version,
        "langgraph_py_version": langgraph_version,
        "flags": {"assistants": True, "crons": True, "langsmith": False, "langsmith_tracing_replicas": False},
        # As a self-hosted Agent Server reports it, with no LangSmith deployment behind it.
        "host": {
            "kind": "self-hosted",
            "project_id": None,
            "host_revision_id": None,
            "revision_id": None,
            "tenant_id": None,
        },
    }


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive; says nothing about its dependencies (that is /readyz)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> dict[str, str]:
    report = {"status": "ready"}
    for name, check in services.readiness.items():
        try:
            await check()
        except Exception as exc:
            raise Unavailable(f"{name} unavailable") from exc
        report[name] = "ok"
    return report


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
