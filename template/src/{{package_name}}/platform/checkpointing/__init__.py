"""Durable checkpointing on the pooled PostgreSQL connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langgraph.checkpoint.base import BaseCheckpointSaver

from ...settings import Settings
from ..database import Pool
from ..metrics import Metrics
from .saver import InstrumentedPostgresSaver


@asynccontextmanager
async def open_checkpointer(
    pool: Pool, settings: Settings, metrics: Metrics
) -> AsyncIterator[BaseCheckpointSaver[str]]:
    saver = InstrumentedPostgresSaver(pool)  # type: ignore[arg-type]
    saver.metrics = metrics
    await saver.setup()
    yield saver
