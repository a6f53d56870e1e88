"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import Unavailable
from ..platform.metrics import Metrics
from .deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/ok")
async def ok() -> dict[str, bool]:
    return {"ok": True}


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
